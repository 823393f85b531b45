# Bridle's sandbox agent: the main process of a sandbox, running the tool service's commands
# without a `docker exec` each (see agent/mod.rs, which passes this file to `python3 -c`).
#
# It runs as the sandbox's unprivileged user, under the container's hardening, so it can do
# nothing a tool could not do itself. It connects once to the socket the tool service listens
# on (/run/bridle-agent, read-only; the service unlinks the socket once connected), then, one
# request at a time: forks the command in a session and process group of its own, with its
# own pipes, the container's environment plus the call's, and the container's limits;
# streams stdout and stderr back (up to what the service keeps, counting the rest); at the
# timeout kills every process the call started, whatever group or session it moved to; and
# reports the exit status and how many processes the call left behind.
#
# The agent makes itself non-dumpable first, so the tools (same user) can neither trace it
# nor read its memory or descriptors: a later call cannot see an earlier call's request.
#
# Frames, both ways: one type byte, a big-endian u32 length, the payload.
#   agent -> service: H hello (JSON), O stdout bytes, E stderr bytes, X exit (JSON)
#   service -> agent: R request (JSON), I stdin bytes (when the request says stdin)

import json
import os
import select
import signal
import socket
import struct
import subprocess
import time

SOCKET = "/run/bridle-agent/agent.sock"
HEADER = struct.Struct(">cI")
CHUNK = 65536
MAX_FRAME = 1 << 30
# What a shell adds to the environment the agent was started with (docker exec adds none).
SHELL_VARS = ("PWD", "OLDPWD", "SHLVL", "_")


def non_dumpable():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(4, 0, 0, 0, 0) != 0:  # PR_SET_DUMPABLE
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


def send(sock, kind, payload):
    sock.sendall(HEADER.pack(kind, len(payload)) + payload)


def recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        got = sock.recv(min(n - len(buf), 1 << 20))
        if not got:
            return None
        buf += got
    return bytes(buf)


def recv_frame(sock):
    head = recv_exact(sock, HEADER.size)
    if head is None:
        return None, None
    kind, n = HEADER.unpack(head)
    if n > MAX_FRAME:
        return None, None
    body = recv_exact(sock, n)
    if body is None:
        return None, None
    return kind, body


def live_pids(me):
    """Processes of the sandbox that still run (zombies hold nothing), but init and us."""
    out = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        if pid in (1, me):
            continue
        try:
            with open("/proc/%d/stat" % pid, "rb") as f:
                stat = f.read()
        except OSError:
            continue
        end = stat.rfind(b")")
        if stat[end + 2 : end + 3] in (b"Z", b"X"):
            continue
        out.add(pid)
    return out


def kill_all(baseline, me):
    """Kills every process that was not there before the call, until none is left: a fork
    racing the kill shows up in the next round, and a killed process cannot fork again."""
    for _ in range(200):
        extra = live_pids(me) - baseline
        if not extra:
            return
        for pid in extra:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.001)


def more_killable():
    # The memory limit is the container's: when it is hit, the kernel should take the tool,
    # not the agent that reports what happened.
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("500")
    except OSError:
        pass


class HostGone(Exception):
    pass


def run(sock, req, data, base_env, default_cwd, me):
    env = dict(base_env)
    env.update({k: v for k, v in req["env"]})
    keep = int(req["keep"])
    deadline = time.monotonic() + req["timeout_ms"] / 1000.0
    argv = req["argv"]
    baseline = live_pids(me)
    try:
        child = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=req.get("cwd") or default_cwd,
            env=env,
            close_fds=True,
            restore_signals=True,
            start_new_session=True,
            preexec_fn=more_killable,
        )
    except Exception as e:
        # Reported as docker exec reports a command it cannot start.
        reason = getattr(e, "strerror", None) or str(e)
        msg = ('exec: "%s": %s\n' % (argv[0] if argv else "", reason)).encode()
        send(sock, b"E", msg[:keep])
        status = {"code": 126, "timed_out": False, "out": 0, "err": len(msg), "leftover": 0}
        send(sock, b"X", json.dumps(status).encode())
        return
    try:
        status = supervise(sock, child, data, keep, deadline, baseline, me)
    except BaseException:
        # The service went away (or the agent broke): nothing the call started may outlive it.
        kill_all(baseline, me)
        raise
    status["leftover"] = len(live_pids(me) - baseline)
    send(sock, b"X", json.dumps(status).encode())


def supervise(sock, child, data, keep, deadline, baseline, me):
    """Passes the child's output on until it exits, or kills the call at the deadline."""
    sent = {}
    total = {}
    out_fd, err_fd = child.stdout.fileno(), child.stderr.fileno()
    kinds = {out_fd: b"O", err_fd: b"E"}

    def forward(fd):
        """Passes on what the pipe holds: False at its end (or, once the pipe is made
        non-blocking, when it is empty)."""
        try:
            chunk = os.read(fd, CHUNK)
        except OSError:
            chunk = b""
        if not chunk:
            return False
        total[fd] = total.get(fd, 0) + len(chunk)
        room = keep - sent.get(fd, 0)
        if room > 0:
            part = chunk[:room]
            sent[fd] = sent.get(fd, 0) + len(part)
            send(sock, kinds[fd], part)
        return True

    poller = select.poll()
    open_fds = set(kinds)
    for fd in open_fds:
        poller.register(fd, select.POLLIN)
    poller.register(sock.fileno(), select.POLLIN)
    pidfd = None
    try:
        pidfd = os.pidfd_open(child.pid)
        poller.register(pidfd, select.POLLIN)
    except (AttributeError, OSError):
        pass
    stdin_fd, pending = None, b""
    if data:
        stdin_fd, pending = child.stdin.fileno(), memoryview(data)
        os.set_blocking(stdin_fd, False)
        poller.register(stdin_fd, select.POLLOUT)
    elif child.stdin is not None:
        child.stdin.close()
    exited = False
    timed_out = False
    try:
        # As with docker exec, the call ends when its process exits, even if processes it
        # started still hold its stdout or stderr (they count as left behind).
        while not exited:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            wait = left if pidfd is not None else min(left, 0.01)
            for fd, _ in poller.poll(wait * 1000.0):
                if fd == sock.fileno():
                    # The service never writes during a call: it went away.
                    raise HostGone()
                if fd in open_fds:
                    if not forward(fd):
                        poller.unregister(fd)
                        open_fds.discard(fd)
                elif fd == stdin_fd:
                    try:
                        pending = pending[os.write(fd, pending[:CHUNK]) :]
                        done = not pending
                    except BlockingIOError:
                        done = False
                    except OSError:
                        # The tool exited without reading its stdin: not an error.
                        done = True
                    if done:
                        poller.unregister(fd)
                        child.stdin.close()
                        stdin_fd = None
                elif fd == pidfd:
                    exited = True
            if pidfd is None and child.poll() is not None:
                exited = True
        if timed_out:
            kill_all(baseline, me)
        # What the pipes hold now: everything the process wrote before it ended. (Bounded:
        # something it left behind may still be writing.)
        for fd in open_fds:
            os.set_blocking(fd, False)
            for _ in range(64):
                if not forward(fd):
                    break
    finally:
        if stdin_fd is not None:
            child.stdin.close()
        if pidfd is not None:
            os.close(pidfd)
    rc = child.wait()
    child.stdout.close()
    child.stderr.close()
    return {
        "code": rc if rc >= 0 else 128 - rc,
        "timed_out": timed_out,
        "out": total.get(out_fd, 0),
        "err": total.get(err_fd, 0),
    }


def main():
    non_dumpable()
    base_env = dict(os.environ)
    for k in SHELL_VARS:
        base_env.pop(k, None)
    default_cwd = os.getcwd()
    me = os.getpid()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    for _ in range(100):
        try:
            sock.connect(SOCKET)
            break
        except OSError:
            time.sleep(0.05)
    else:
        return
    send(sock, b"H", json.dumps({"agent": "bridle", "version": 1, "pid": me}).encode())
    try:
        while True:
            kind, body = recv_frame(sock)
            if kind != b"R":
                break
            req = json.loads(body)
            data = None
            if req.get("stdin"):
                kind, data = recv_frame(sock)
                if kind != b"I":
                    break
            run(sock, req, data, base_env, default_cwd, me)
    except (HostGone, OSError):
        pass
    # The tool service let go of this sandbox (it died, or spoke out of turn): nobody can use
    # it any more. End the container instead of idling forever; a stopped sandbox is removed
    # by the service's own cleanup, or by another instance's orphan sweep when it died.
    os._exit(0)


main()
