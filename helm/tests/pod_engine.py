#!/usr/bin/env python3
"""Runs the Helm chart's rootless engine sidecar on this machine's Docker engine, with the
securityContext the chart renders for it translated to `docker run` settings, so the tests can
put sandboxes on it (the closest this machine comes to the tools pod under a kubelet).

    ~/.cache/bridle/venv/bin/python helm/tests/pod_engine.py start   # idempotent; prints JSON
    ~/.cache/bridle/venv/bin/python helm/tests/pod_engine.py stop

`start` renders the chart with its default values, takes the tools pod's `engine` container,
and runs it as the container `bridle-pod-engine` (image bridle/engine-rootless:local, built by
`deploy/images/build-bases.sh engine-rootless` when missing), with each emptyDir volume a folder
under /var/lib/bridle-pod owned as the kubelet makes them (root, the pod's fsGroup, setgid,
0777), except `workspaces`, which the engine sees at its host path so that a tools service
running on this machine can give it workspace folders. Then it copies the sandbox images from
this machine's engine into it and prints what a tools service needs, from the chart's tools
container: the engine's socket, the tools container's uid and gid, and its BRIDLE_TOOLS_*
settings that concern the engine.

Every securityContext field is translated or refused by name (a new field in the chart fails
here until it is translated):
  runAsUser/runAsGroup -> --user; the pod's fsGroup -> --group-add (the kubelet adds it);
  capabilities -> --cap-drop/--cap-add; allowPrivilegeEscalation: false -> no-new-privileges;
  readOnlyRootFilesystem -> --read-only; seccompProfile Localhost -> seccomp=<the chart's
  files/ profile of that name>; procMount: Unmasked -> systempaths=unconfined;
  privileged: true -> --privileged.
Not reproduced: the pod's own user namespace (hostUsers: false; Docker 20.10 has only a
daemon-wide remapping), so the engine runs in this machine's user namespace; AppArmor (off
on this machine's kernel; a profile in the values is refused here).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from check_chart import render

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "bridle"
NAME = os.environ.get("BRIDLE_POD_ENGINE_NAME", "bridle-pod-engine")
IMAGE = os.environ.get("BRIDLE_ENGINE_IMAGE", "bridle/engine-rootless:local")
STATE = Path(os.environ.get("BRIDLE_POD_STATE", "/var/lib/bridle-pod"))
WORKSPACES = STATE / "ws"
# The tools container's path of the engine's socket volume, and the engine's.
SOCKET_VOLUME = "engine-socket"


def die(msg: str) -> None:
    print(f"pod_engine: {msg}", file=sys.stderr)
    sys.exit(1)


def docker(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run(["docker", *args], capture_output=True, text=True, **kw)
    if check and p.returncode != 0:
        die(f"docker {' '.join(args[:3])}...: {p.stderr.strip()}")
    return p


def tools_pod() -> dict:
    for doc in render({}):
        if doc["kind"] == "Deployment" and doc["metadata"]["name"] == "bridle-tools":
            return doc["spec"]["template"]["spec"]
    die("the chart renders no bridle-tools Deployment")
    raise AssertionError


def container(pod: dict, name: str) -> dict:
    for c in pod.get("initContainers", []) + pod.get("containers", []):
        if c["name"] == name:
            return c
    die(f"the tools pod has no container '{name}' (is tools.docker.mode still rootless by default?)")
    raise AssertionError


def security_args(sc: dict, pod_sc: dict) -> list[str]:
    args: list[str] = []
    seen = set()

    def take(key: str):
        seen.add(key)
        return sc.get(key)

    uid, gid = take("runAsUser"), take("runAsGroup")
    if uid is None:
        die("the engine has no runAsUser")
    if take("runAsNonRoot") and uid == 0:
        die("runAsNonRoot with runAsUser 0")
    args += ["--user", f"{uid}:{gid if gid is not None else uid}"]
    if pod_sc.get("fsGroup") is not None:
        args += ["--group-add", str(pod_sc["fsGroup"])]
    caps = take("capabilities") or {}
    for c in caps.get("drop", []):
        args += ["--cap-drop", c]
    for c in caps.get("add", []):
        args += ["--cap-add", c]
    if set(caps) - {"drop", "add"}:
        die(f"capabilities: {sorted(set(caps) - {'drop', 'add'})} not translated")
    if take("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    if take("privileged"):
        args.append("--privileged")
    if take("readOnlyRootFilesystem"):
        args.append("--read-only")
    seccomp = take("seccompProfile") or pod_sc.get("seccompProfile") or {"type": "RuntimeDefault"}
    if seccomp["type"] == "Localhost":
        profile = CHART / "files" / Path(seccomp["localhostProfile"]).name
        if not profile.is_file():
            die(f"seccompProfile {seccomp['localhostProfile']}: the chart ships no {profile}")
        args += ["--security-opt", f"seccomp={profile}"]
    elif seccomp["type"] != "RuntimeDefault":
        die(f"seccompProfile type {seccomp['type']} not translated")
    proc = take("procMount")
    if proc == "Unmasked":
        args += ["--security-opt", "systempaths=unconfined"]
    elif proc not in (None, "Default"):
        die(f"procMount {proc} not translated")
    if take("appArmorProfile"):
        die("appArmorProfile: AppArmor is off on this machine; nothing here can load the profile")
    rest = set(sc) - seen
    if rest:
        die(f"securityContext fields not translated: {sorted(rest)}")
    return args


def make_volume_dir(path: Path, fs_group: int | None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if fs_group is not None:
        os.chown(path, 0, fs_group)
        os.chmod(path, 0o2777)
    else:
        os.chmod(path, 0o777)


def engine_args(pod: dict, engine: dict) -> tuple[list[str], list[Path]]:
    """`docker run` settings (and the image) of the pod's engine container, and the host
    folders of its volumes."""
    pod_sc = pod.get("securityContext", {})
    args = ["--network", "none"]
    folders = []
    args += security_args(engine.get("securityContext", {}), pod_sc)
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    for m in engine.get("volumeMounts", []):
        v = vols.get(m["name"], {})
        if "emptyDir" not in v:
            die(f"the engine mounts volume {m['name']}, not an emptyDir: not translated")
        if m["name"] == "workspaces":
            host, target = WORKSPACES, str(WORKSPACES)
        else:
            host, target = STATE / m["name"], m["mountPath"]
        folders.append(host)
        args += ["-v", f"{host}:{target}"]
    for e in engine.get("env", []):
        if "value" not in e:
            die(f"env {e['name']} is not a plain value: not translated")
        args += ["-e", f"{e['name']}={e['value']}"]
    return args + [IMAGE], folders


def tools_settings(pod: dict) -> dict:
    tools = container(pod, "tools")
    sc = tools.get("securityContext", {})
    env = {e["name"]: e.get("value") for e in tools.get("env", [])}
    mounts = {m["name"]: m["mountPath"] for m in tools.get("volumeMounts", [])}
    host = env["BRIDLE_TOOLS_DOCKER_HOST"]
    inside = mounts[SOCKET_VOLUME]
    if not host.startswith(f"unix://{inside}/"):
        die(f"the tools container's engine address {host} is not in its {SOCKET_VOLUME} volume ({inside})")
    socket = STATE / SOCKET_VOLUME / host.removeprefix(f"unix://{inside}/")
    keep = ("WORKSPACE_MODE", "SANDBOX_HOST_UID", "SANDBOX_LIMITS_UNENFORCED")
    return {
        "docker_host": f"unix://{socket}",
        "tools_uid": sc.get("runAsUser", pod.get("securityContext", {}).get("runAsUser")),
        "tools_gid": sc.get("runAsGroup", pod.get("securityContext", {}).get("runAsGroup")),
        "tools_env": {k.removeprefix("BRIDLE_TOOLS_").lower(): v for k, v in env.items()
                      if k.removeprefix("BRIDLE_TOOLS_") in keep},
        "workspace_parent": str(WORKSPACES),
        "engine": NAME,
    }


def answers(docker_host: str) -> bool:
    return docker("-H", docker_host, "version", "--format", "{{.Server.Version}}", check=False).returncode == 0


def copy_images(docker_host: str) -> None:
    have = set(docker("-H", docker_host, "images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split())
    want = [i for i in docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
            if i.startswith("bridle-sandbox:") and i not in have]
    for image in want:
        save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
        load = subprocess.run(["docker", "-H", docker_host, "load", "-q"], stdin=save.stdout, capture_output=True, text=True)
        save.wait()
        if save.returncode != 0 or load.returncode != 0:
            die(f"copying {image} into the pod engine failed: {load.stderr.strip()}")


def start() -> dict:
    pod = tools_pod()
    settings = tools_settings(pod)
    args, folders = engine_args(pod, container(pod, "engine"))
    image_id = docker("image", "inspect", "-f", "{{.Id}}", IMAGE, check=False).stdout.strip()
    # A running engine is reused only when made from the same settings and image.
    recipe = hashlib.sha256(json.dumps([args, image_id]).encode()).hexdigest()[:16]
    running = docker("inspect", "-f", '{{.State.Running}} {{index .Config.Labels "dev.bridle.recipe"}}', NAME, check=False)
    if running.returncode == 0 and running.stdout.split() == ["true", recipe] and answers(settings["docker_host"]):
        copy_images(settings["docker_host"])
        return settings
    docker("rm", "-f", NAME, check=False)
    if not image_id:
        die(f"no image {IMAGE}: build it with deploy/images/build-bases.sh engine-rootless "
            "(scripts/install-deps.sh does)")
    # The socket of an engine that is gone, and its state, would only confuse the new one.
    for d in ("engine-socket", "engine-run", "engine-tmp"):
        subprocess.run(["rm", "-rf", str(STATE / d)], check=False)
    STATE.mkdir(parents=True, exist_ok=True)
    os.chmod(STATE, 0o711)
    for f in folders:
        make_volume_dir(f, pod.get("securityContext", {}).get("fsGroup"))
    docker("run", "-d", "--name", NAME, "--label", f"dev.bridle.recipe={recipe}", *args)
    deadline = time.monotonic() + 60
    while not answers(settings["docker_host"]):
        if time.monotonic() > deadline or docker("inspect", "-f", "{{.State.Running}}", NAME).stdout.strip() != "true":
            logs = docker("logs", "--tail", "30", NAME, check=False)
            die(f"the pod engine did not answer within 60s:\n{logs.stdout}{logs.stderr}")
        time.sleep(0.5)
    copy_images(settings["docker_host"])
    return settings


def main() -> None:
    what = sys.argv[1] if len(sys.argv) > 1 else "start"
    STATE.mkdir(parents=True, exist_ok=True)
    # One at a time: tests start it in parallel.
    with open(STATE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if what == "start":
            print(json.dumps(start()))
        elif what == "stop":
            docker("rm", "-f", NAME, check=False)
        else:
            die(f"unknown command '{what}' (start|stop)")


if __name__ == "__main__":
    main()
