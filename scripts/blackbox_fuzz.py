"""Black-box fuzzing of a running harness (`bridle dev`, the real binary), from outside.

Random and mutated manifests through `Manifests.Apply` (dry run) and `bridle apply --dry-run`,
requests to both gateway fronts (JSON bodies, headers, and broken HTTP framing on raw
sockets), the web inbox, and gRPC calls with odd and oversized fields (StartRun, ListRuns,
WatchRun, Execute, Evaluate, List, Watch, Resolve, Complete, ListManifests, History, Spend, the MCP
authorization RPCs and the broker's OAuth grants).

A failure is: an HTTP 5xx; a gRPC INTERNAL, UNKNOWN, DATA_LOSS, or a CANCELLED the client did
not ask for (a handler that panicked); an error too big for the client to read; no answer
within the deadline; a panic line in the harness's log; a dead service (the process gone or a
refused connection), and a failed health check at the end. When the harness dies it is
restarted, so one run reports every kind of failure it meets. Requests are sent only to this
machine's loopback, and the run stops after `--seconds`.

Run through scripts/blackbox-fuzz.sh, which installs grpcio and generates the stubs.
"""

import argparse
import http.client
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc

sys.path.insert(0, os.environ["BRIDLE_FUZZ_STUBS"])
from bridle.v1 import (  # noqa: E402  (generated into BRIDLE_FUZZ_STUBS)
    approvals_pb2,
    approvals_pb2_grpc,
    common_pb2,
    manifests_pb2,
    manifests_pb2_grpc,
    orchestrator_pb2,
    orchestrator_pb2_grpc,
    router_pb2,
    router_pb2_grpc,
    secrets_pb2,
    secrets_pb2_grpc,
    tools_pb2,
    tools_pb2_grpc,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1
MIB = 1 << 20
# What a gRPC status message may be for a standard client to read it (grpc-message is a header).
PANIC_RE = re.compile(r"panicked at|overflowed its stack|fatal runtime error|RUST_BACKTRACE")

BASE_MANIFESTS = """\
apiVersion: bridle.dev/v1
kind: ModelRoute
metadata:
  name: fuzz-route
spec:
  targets:
    - name: offline
      provider: scripted
      script:
        - text: "done"
---
apiVersion: bridle.dev/v1
kind: Tool
metadata:
  name: fuzz-http
spec:
  description: An HTTP tool whose server is not there.
  risk: read_only
  parameters:
    type: object
    properties:
      id: {type: string}
  http:
    url: http://127.0.0.1:9/items/{{id}}
---
apiVersion: bridle.dev/v1
kind: Agent
metadata:
  name: fuzz-agent
spec:
  route: fuzz-route
  tools: [fuzz-http]
  budget:
    maxSteps: 2
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Failures:
    """Distinct failures: one example and a count per (service, call, outcome). The example's
    whole input is kept in `dir` (a serialized protobuf message for gRPC, the body for HTTP,
    the file for the CLI), so it can be replayed."""

    def __init__(self, dir):
        self.seen = {}
        self.lock = threading.Lock()
        self.dir = Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)

    def add(self, service, call, outcome, request, response, payload=None):
        key = (service, call, outcome)
        with self.lock:
            if key in self.seen:
                self.seen[key]["count"] += 1
                return
            entry = {"count": 1, "request": request, "response": response}
            if payload is not None:
                path = self.dir / f"{len(self.seen) + 1:03d}-{re.sub(r'[^A-Za-z0-9]+', '-', call)[:40]}"
                path.write_bytes(payload if isinstance(payload, bytes) else str(payload).encode("utf-8", "replace"))
                entry["input"] = str(path)
            self.seen[key] = entry
        print(f"  FAIL {service} {call}: {outcome}\n       request: {request}\n       response: {response}",
              flush=True)

    def report(self):
        out = []
        for (service, call, outcome), v in sorted(self.seen.items()):
            out.append({"service": service, "call": call, "outcome": outcome, **v})
        return out


def short(v, n=160):
    """A printable, bounded description of a value."""
    if isinstance(v, bytes):
        s = repr(v[:n])
        return s + (f"... ({len(v)} bytes)" if len(v) > n else "")
    s = v if isinstance(v, str) else repr(v)
    return (s[:n] + f"... ({len(s)} chars)") if len(s) > n else s


def describe_msg(m):
    """A protobuf message described with its big fields cut."""
    parts = []
    for f, val in m.ListFields():
        repeated = f.is_repeated if hasattr(f, "is_repeated") else f.label == f.LABEL_REPEATED
        if repeated:
            if f.message_type is not None and f.message_type.GetOptions().map_entry:
                parts.append(f"{f.name}={{{len(val)} entries}}")
            else:
                parts.append(f"{f.name}=[{len(val)} items]")
        elif f.message_type is not None:
            parts.append(f"{f.name}={{{describe_msg(val)}}}")
        else:
            parts.append(f"{f.name}={short(val, 60)}")
    return ", ".join(parts)


# ---------------------------------------------------------------- mutation

class Mutator:
    def __init__(self, rng, tokens):
        self.rng = rng
        self.tokens = tokens

    def huge(self):
        r = self.rng
        return r.choice(["x", "(", "[", "{", "é", "\u202e", "a\n", "-", "9", "\\"]) * r.choice(
            [1000, 5000, 20000, 100000])

    def number(self):
        return self.rng.choice(["0", "-1", str(U32_MAX), str(U32_MAX + 1), str(U64_MAX), str(U64_MAX + 1),
                                "340282366920938463463374607431768211456", "1e999", "-1e999", "1.5", "NaN",
                                ".inf", "0x7fffffff", "-9223372036854775809"])

    def text(self, s, rounds=None):
        r = self.rng
        for _ in range(rounds or r.randint(1, 4)):
            if not s:
                s = r.choice(self.tokens)
            i = r.randrange(len(s) + 1)
            j = min(len(s), i + r.randint(0, 40))
            op = r.randrange(11)
            if op == 0:
                s = s[:i] + s[j:]
            elif op == 1:
                s = s[:i] + s[i:j] * r.randint(2, 50) + s[j:]
            elif op == 2:
                s = s[:i] + r.choice(self.tokens) + s[i:]
            elif op == 3:
                s = s[:i] + self.huge() + s[i:]
            elif op == 4:
                s = re.sub(r"\d+", lambda _: self.number(), s, count=r.randint(1, 3))
            elif op == 5:
                s = s[:i] + chr(r.choice([0, 1, 8, 0x1b, 0x7f, 0xfeff, 0x202e, 0xfffd, 0x10ffff])) + s[i:]
            elif op == 6:
                s = s[:i]
            elif op == 7:
                n = r.choice([10, 200, 1000, 10000])
                a, b = r.choice([("[", "]"), ("{a: ", "}"), ("(", ")"), ("- ", ""), ('{"a":', "}")])
                s = s[:i] + a * n + "1" + b * n + s[j:]
            elif op == 8:
                lines = s.split("\n")
                k = r.randrange(len(lines))
                lines.insert(r.randrange(len(lines) + 1), lines[k])
                s = "\n".join(lines)
            elif op == 9:
                s = s[:i] + r.choice(["\t", "  ", "\r\n", "\n---\n", "\n...\n", ": ", "&a ", "*a", "!!binary ",
                                      "<<: *a\n", "? ", "|\n", ">-\n", "'", '"']) + s[i:]
            else:
                s = s[:i] + s[i:j].upper() + s[j:]
        return s

    def odd_string(self):
        r = self.rng
        return r.choice([
            "", " ", "x" * MIB, "é" * 300000, "\x00", "a\x00b", "../../etc/passwd", "secret://x", "bridle:run:{x}",
            "*", "%s%n", "\ud7ff\ue000", "\u202e\u0000", "a" * 300, "tenant/../x", " leading", "UPPER", "a.b.c",
            "{{id}}", "'; DROP", "\n", "run_" + "0" * 26, "apr_01", "-" * 70, r.choice(self.tokens),
            self.huge(),
        ])

    def odd_u32(self):
        return self.rng.choice([0, 1, 2, 1000, U32_MAX, U32_MAX - 1, 2**31])

    def odd_u64(self):
        return self.rng.choice([0, 1, U64_MAX, 2**63, 2**53 + 1, U32_MAX + 1])

    def odd_i64(self):
        return self.rng.choice([0, -1, 2**63 - 1, -(2**63), 10**18])

    def odd_enum(self):
        return self.rng.choice([0, 1, 2, 3, 4, 5, 99, -1, 2**31 - 1])

    def odd_json(self):
        r = self.rng
        return r.choice([
            "", "{}", "[]", "null", "not json", '{"id":"1"}', '{"id":' + "[" * 10000 + "]" * 10000 + "}",
            "[" * 100000, '{"a":' * 5000 + "1" + "}" * 5000, '{"id":"' + "x" * MIB + '"}',
            '{"id": 1e999}', '{"id": "\\ud800"}', '{"a":1,"a":2}', "1" * 5000, '"' + "\\u0000" * 1000 + '"',
            json.dumps({"id": "x", **{f"k{i}": i for i in range(5000)}}),
        ])


# ---------------------------------------------------------------- the harness

class Harness:
    """`bridle dev` on free ports, in a process group of its own (so that its Redis and OpenBao
    children go with it even when it dies abnormally)."""

    def __init__(self, bridle, workdir, log_path):
        self.bridle = bridle
        self.workdir = Path(workdir)
        self.log_path = Path(log_path)
        self.proc = None
        self.endpoints = {}
        self.starts = 0
        self.log_offset = 0

    def start(self):
        self.starts += 1
        data = self.workdir / f"dev-{self.starts}"
        data.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update({
            "BRIDLE_DEV_DATA_DIR": str(data),
            "BRIDLE_DEV_REDIS_PORT": str(free_port()),
            "BRIDLE_DEV_BAO_PORT": str(free_port()),
            "BRIDLE_ORCHESTRATOR_LISTEN": "127.0.0.1:0",
            "BRIDLE_ROUTER_LISTEN": "127.0.0.1:0",
            "BRIDLE_TOOLS_LISTEN": "127.0.0.1:0",
            "BRIDLE_APPROVALS_LISTEN": "127.0.0.1:0",
            "BRIDLE_SECRETS_LISTEN": "127.0.0.1:0",
            "BRIDLE_ROUTER_HTTP_LISTEN": "127.0.0.1:0",
            "BRIDLE_APPROVALS_INBOX__LISTEN": "127.0.0.1:0",
            "BRIDLE_ORCHESTRATOR_MCP__LISTEN": "127.0.0.1:0",
            # The fuzz-http tool's URL: nothing listens there, and the platform must allow
            # it (tenants cannot name a loopback address by themselves).
            "BRIDLE_TOOLS_EGRESS_PRIVATE_ALLOW": '["127.0.0.1:9"]',
            "BRIDLE_LOG_FORMAT": "text",
            "RUST_BACKTRACE": "1",
        })
        env.pop("BRIDLE_REDIS_URL", None)
        env.pop("BRIDLE_SECRETS_VAULT_ADDR", None)
        log = open(self.log_path, "ab")
        log.write(f"\n===== bridle dev, start {self.starts} =====\n".encode())
        log.flush()
        self.log_offset = self.log_path.stat().st_size
        self.proc = subprocess.Popen([self.bridle, "dev"], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                     env=env, start_new_session=True)
        state = data / "dev.json"
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bridle dev exited with {self.proc.returncode} while starting; see {self.log_path}")
            if state.exists():
                try:
                    self.endpoints = json.loads(state.read_text())
                    break
                except json.JSONDecodeError:
                    pass
            time.sleep(0.2)
        else:
            raise RuntimeError(f"bridle dev did not become ready within 120 s; see {self.log_path}")
        self.grpc = {k: self.endpoints[k].removeprefix("http://") for k in
                     ["orchestrator", "router", "tools", "approvals", "secrets"]}
        self.gateway = self.endpoints["gateway"].removeprefix("http://").removesuffix("/v1")
        self.inbox = self.endpoints.get("inbox", "").removeprefix("http://")
        self.mcp = self.endpoints.get("mcp", "").removeprefix("http://").removesuffix("/mcp/")
        print(f"bridle dev ready (start {self.starts}): {json.dumps(self.endpoints)}", flush=True)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=25)
        except subprocess.TimeoutExpired:
            pass
        # Whatever is left of the group (its Redis and OpenBao when it died abnormally).
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def new_log_lines(self):
        with open(self.log_path, "rb") as f:
            f.seek(self.log_offset)
            data = f.read()
        self.log_offset += len(data)
        return data.decode("utf-8", "replace").splitlines()


# ---------------------------------------------------------------- the fuzzer

class Fuzzer:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.failures = Failures(Path(args.workdir) / "failures")
        self.counts = {}
        self.harness = Harness(args.bridle, args.workdir, args.log)
        self.seeds = self.load_seeds(Path(args.seeds))
        tokens = ["apiVersion: bridle.dev/v1", "kind: Policy", "kind: Tool", "kind: Agent", "kind: ModelRoute",
                  "kind: SecretBinding", "metadata:", "spec:", "name: x", "tenant: t", "cedar: |", "secret://k",
                  "permit(principal, action, resource)", "when {", "}", "@id(\"a\")", "context.arguments",
                  '"model"', '"messages"', '"role"', '"content"', '"tool_calls"', '"tools"', '"stream": true',
                  "null", "true", "[]", "{}", "-0", "1e309", "\\ud800"]
        self.mut = Mutator(self.rng, tokens)
        self.slow = []
        self.channels = {}
        self.last = "(none yet)"

    @staticmethod
    def load_seeds(root):
        seeds = {}
        for target, prefix in [("manifest", 4), ("cedar_policy", 4), ("gateway_openai", 0),
                               ("gateway_anthropic", 0), ("canonical_args", 0)]:
            d = root / target
            seeds[target] = [p.read_bytes()[prefix:].decode("utf-8", "replace") for p in sorted(d.iterdir())] \
                if d.is_dir() else []
        return seeds

    # --- plumbing

    def channel(self, service):
        addr = self.harness.grpc[service]
        if addr not in self.channels:
            self.channels[addr] = grpc.insecure_channel(addr, options=[
                ("grpc.max_send_message_length", 16 * MIB),
                ("grpc.max_receive_message_length", 16 * MIB),
            ])
        return self.channels[addr]

    def count(self, area):
        self.counts[area] = self.counts.get(area, 0) + 1

    def grpc_call(self, service, name, fn, req, stream=False, deadline=15.0):
        self.count(f"grpc {name}")
        desc = describe_msg(req)
        self.last = f"{service} {name}: {desc}"
        try:
            if stream:
                it = fn(req, timeout=deadline)
                for _ in range(20):
                    next(it)
                it.cancel()
            else:
                fn(req, timeout=deadline)
        except StopIteration:
            pass
        except grpc.RpcError as e:
            self.judge_grpc(service, name, desc, e, stream, req)

    def harness_died(self):
        """True when the harness is dead or dies within a second (a refused or reset call is
        then a consequence, recorded once as the death)."""
        for _ in range(10):
            if not self.harness.alive():
                return True
            time.sleep(0.1)
        return False

    def judge_grpc(self, service, name, desc, e, stream, req):
        code, details = e.code(), e.details() or ""
        bad = None
        if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS):
            bad = code.name
        elif code == grpc.StatusCode.CANCELLED and "Locally cancelled" not in details:
            bad = "CANCELLED (the server dropped the call)"
        elif code == grpc.StatusCode.RESOURCE_EXHAUSTED and re.search(r"metadata|header|Received message larger",
                                                                         details, re.I):
            bad = "RESOURCE_EXHAUSTED: the answer is too big for the client"
        elif code == grpc.StatusCode.DEADLINE_EXCEEDED and not stream:
            bad = "no answer before the client's deadline"
        elif code == grpc.StatusCode.UNAVAILABLE and re.search(r"connect|reset|Socket closed", details):
            bad = "UNAVAILABLE: the connection was refused or broken"
        if len(details) > 16384:
            bad = bad or f"{code.name} with a {len(details)}-byte message"
        if bad and bad.startswith(("CANCELLED", "UNAVAILABLE")) and self.harness_died():
            return
        if bad:
            self.failures.add(service, name, bad, desc, f"{code.name}: {short(details, 300)}",
                              req.SerializeToString())

    def http(self, front, method, path, body=b"", headers=None, timeout=15.0):
        addr = {"gateway": self.harness.gateway, "mcp": self.harness.mcp}.get(front, self.harness.inbox)
        host, port = addr.rsplit(":", 1)
        self.count(f"http {front}")
        self.last = f"{front} {method} {path[:60]}: {short(body, 200)}"
        conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
        h = {"content-type": "application/json"}
        h.update(headers or {})
        try:
            conn.request(method, path, body=body, headers=h)
            resp = conn.getresponse()
            data = resp.read()
            if resp.status >= 500:
                self.failures.add(front, f"{method} {path.split('?')[0][:60]}", f"HTTP {resp.status}",
                                  f"headers={short(h, 200)} body={short(body, 300)}",
                                  f"{resp.status} {short(data, 300)}", body)
        except (socket.timeout, TimeoutError):
            self.failures.add(front, f"{method} {path[:60]}", f"no answer within {timeout:.0f} s",
                              f"body={short(body, 200)}", "timeout", body)
        except (ConnectionError, http.client.HTTPException, OSError) as e:
            if self.harness_died():
                return
            self.failures.add(front, f"{method} {path[:60]}", f"connection broken: {type(e).__name__}",
                              f"headers={short(h, 200)} body={short(body, 300)}", short(str(e), 200), body)
        finally:
            conn.close()

    # --- manifests

    def manifest_text(self):
        r = self.rng
        pick = r.random()
        if pick < 0.05:
            # The shapes the issue found: deep Cedar nesting, deep YAML, a huge integer.
            n = r.choice([1000, 10000, 50000])
            return r.choice([
                "apiVersion: bridle.dev/v1\nkind: Policy\nmetadata: {name: deep}\nspec:\n  cedar: |\n    "
                "permit(principal, action, resource) when { " + "(" * n + "true" + ")" * n + " };\n",
                "apiVersion: bridle.dev/v1\nkind: Agent\nmetadata: {name: deep}\nspec:\n  route: " + "[" * n
                + "]" * n + "\n",
                "apiVersion: bridle.dev/v1\nkind: Agent\nmetadata: {name: big}\nspec:\n  route: r\n  budget:\n"
                "    maxSteps: 340282366920938463463374607431768211456\n",
                "# only a comment\n",
            ])
        if pick < 0.2 and self.seeds["cedar_policy"]:
            cedar = self.mut.text(r.choice(self.seeds["cedar_policy"]))
            return ("apiVersion: bridle.dev/v1\nkind: Policy\nmetadata: {name: p}\nspec:\n  cedar: |\n"
                    + "".join("    " + line + "\n" for line in cedar.split("\n")))
        base = r.choice(self.seeds["manifest"] or [BASE_MANIFESTS])
        return self.mut.text(base)

    def fuzz_apply(self):
        r = self.rng
        text = self.manifest_text()
        docs = [manifests_pb2.ManifestDocument(source=r.choice(["f.yaml", "", self.mut.odd_string()[:300]]),
                                               yaml=d, first_line=r.choice([1] * 12 + [0, 7, 100000, U32_MAX, U32_MAX - 3]))
                for d in text.split("\n---\n")]
        if r.random() < 0.05:
            docs = docs * r.choice([100, 1000])
        service = r.choice(["orchestrator", "orchestrator", "orchestrator", "approvals", "router", "tools",
                            "secrets"])
        req = manifests_pb2.ApplyRequest(documents=docs, dry_run=True,
                                         tenant=r.choice(["", "", "acme", self.mut.odd_string()]))
        stub = manifests_pb2_grpc.ManifestsStub(self.channel(service))
        self.grpc_call(service, "Manifests.Apply", stub.Apply, req)

    def fuzz_cli_apply(self):
        text = self.manifest_text()
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", dir=self.args.workdir, delete=False) as f:
            f.write(text)
            path = f.name
        self.count("cli apply --dry-run")
        self.last = f"cli apply --dry-run: {short(text, 200)}"
        try:
            p = subprocess.run([self.args.bridle, "apply", "--dry-run", "-f", path],
                               env={**os.environ, "BRIDLE_SERVER": self.harness.endpoints["orchestrator"],
                                    "BRIDLE_APPROVALS_SERVER": self.harness.endpoints["approvals"]},
                               capture_output=True, timeout=20)
            out = (p.stdout + p.stderr).decode("utf-8", "replace")
            if p.returncode < 0 or p.returncode >= 100 or PANIC_RE.search(out) or re.search(
                    r"\b(Internal|Unknown|internal error)\b", out):
                self.failures.add("cli", "bridle apply --dry-run", f"exit {p.returncode}", short(text, 300),
                                  short(out, 400), text)
        except subprocess.TimeoutExpired:
            self.failures.add("cli", "bridle apply --dry-run", "no exit within 20 s", short(text, 300), "", text)
        finally:
            os.unlink(path)

    # --- gateway

    def gateway_body(self, front):
        r = self.rng
        # The OpenAI seeds hold bodies of both OpenAI fronts.
        seeds = self.seeds["gateway_anthropic" if front == "anthropic" else "gateway_openai"]
        base = r.choice(seeds) if seeds else '{"model":"fuzz-route","messages":[{"role":"user","content":"hi"}]}'
        base = base.replace('"quick"', '"fuzz-route"')
        if r.random() < 0.15:
            try:
                v = json.loads(base)
                if isinstance(v, dict):
                    key = "input" if "input" in v else "messages"
                    items = v.get(key) if isinstance(v.get(key), list) else None
                    v[key] = (items or [{"role": "user", "content": "x"}]) * r.choice([3, 50, 2000])
                    if r.random() < 0.5:
                        v["stream"] = True
                    return json.dumps(v).encode()
            except ValueError:
                pass
        if r.random() < 0.1:
            return self.mut.odd_json().encode()
        return self.mut.text(base).encode("utf-8", "surrogatepass")

    def fuzz_gateway(self):
        r = self.rng
        front = r.choice(["openai", "responses", "anthropic"])
        path = {"openai": "/v1/chat/completions", "responses": "/v1/responses", "anthropic": "/v1/messages"}[front]
        headers = {}
        if r.random() < 0.3:
            headers[r.choice(["authorization", "x-api-key", "x-bridle-agent", "content-type", "accept"])] = \
                r.choice(["Bearer ", "Bearer bk_" + "x" * 5000, "bk_abc", "", "x" * 8000, "text/plain",
                          "Bearer \u00e9".encode().decode("latin-1"), "multipart/form-data", "a/b"])
        if r.random() < 0.05:
            self.http("gateway", r.choice(["GET", "PUT", "DELETE", "OPTIONS", "POST"]),
                      r.choice(["/v1/models", "/", "/v1/" + "a" * 5000, "/v1/chat/completions?x=" + "%" * 50,
                                "/%00", "/v1/messages/../models", "/v1/models/fuzz-route", "/v1/models/" + "%ff" * 300]),
                      b"", headers)
            return
        self.http("gateway", "POST", path, self.gateway_body(front), headers)

    def fuzz_inbox(self):
        r = self.rng
        if not self.harness.inbox:
            return
        path = r.choice(["/", "/login", "/approvals", "/approvals/apr_x", "/approvals/" + "a" * 3000,
                         "/approvals/apr_x/approve", "/logout", "/static/x", "/%ff", "/?" + "a=b&" * 500])
        method = r.choice(["GET", "POST", "POST", "PUT"])
        body = r.choice([b"", b"key=bk_x", b"csrf=&reason=" + b"x" * 100000, b"\x00\xff" * 100,
                         b"approve=1&arguments_sha256=" + b"0" * 64])
        headers = {"content-type": r.choice(["application/x-www-form-urlencoded", "text/plain", "x/y"])}
        if r.random() < 0.3:
            headers["cookie"] = r.choice(["bridle_session=" + "x" * 5000, "bridle_session=", "a=b; c"])
        self.http("inbox", method, path, body, headers)

    def fuzz_mcp(self):
        """JSON-RPC at the orchestrator's MCP endpoint: odd methods, tool names and arguments."""
        r = self.rng
        if not self.harness.mcp:
            return
        path = r.choice(["/mcp/fuzz-agent"] * 6 + ["/mcp/nobody", "/mcp/" + "a" * 3000, "/mcp/", "/mcp/%ff",
                                                   "/mcp/fuzz-agent?tenant=" + "x" * 300, "/other"])
        method = r.choice(["initialize", "tools/list", "tools/call", "tools/call", "tools/call", "ping",
                           "resources/list", "notifications/initialized", "x" * 500])
        name = r.choice(["fuzz-http", "bridle_result", "nope", "", "x" * 5000, "fuzz-http\u0000"])
        args = r.choice([{}, {"id": "1"}, {"run_id": "run_x"}, {"run_id": "run_01JZZZZZZZZZZZZZZZZZZZZZZZ",
                         "wait_seconds": r.choice([0, -1, 2 ** 70, "1", 1.5])}, {"id": self.mut.odd_string()},
                        self.mut.odd_json()])
        params = {"protocolVersion": r.choice(["2025-06-18", "2025-03-26", "1999-01-01", ""]),
                  "capabilities": {}, "clientInfo": {"name": "fuzz", "version": "0"}}
        if method == "tools/call":
            params = {"name": name, "arguments": args}
        msg = {"jsonrpc": "2.0", "id": r.choice([1, "a", None, 2 ** 70]), "method": method, "params": params}
        body = json.dumps(msg, default=str).encode()
        if r.random() < 0.2:
            body = self.mut.text(body.decode()).encode("utf-8", "surrogatepass")
        elif r.random() < 0.05:
            body = json.dumps([msg, msg]).encode()
        headers = {"accept": r.choice(["application/json, text/event-stream", "text/event-stream", "*/*", ""]),
                   "mcp-protocol-version": r.choice(["2025-06-18", "2025-03-26", "bogus"])}
        if r.random() < 0.2:
            headers["authorization"] = r.choice(["Bearer bk_" + "x" * 40, "Bearer ", "Basic x"])
        # A call waits for its run (up to the endpoint's call_wait): short deadlines are no failure
        # of the server, so only tools/list and odd methods are held to 15 s.
        self.http("mcp", r.choice(["POST"] * 8 + ["GET", "DELETE"]), path, body, headers,
                  timeout=75.0 if method == "tools/call" else 15.0)

    def framing_probes(self):
        """Broken HTTP framing on raw sockets. Each probe waits up to 30 s for an answer, on a thread
        of its own, so a gateway without a body-read timeout does not stall the run."""
        host, port = self.harness.gateway.rsplit(":", 1)
        body = b'{"model":"fuzz-route","messages":[{"role":"user","content":"hi"}]}'
        probes = {
            "Content-Length larger than the body sent":
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 1000\r\n\r\n" + body,
            "malformed chunked body":
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"zz\r\n" + body + b"\r\n0\r\n\r\n",
            "Content-Length with Transfer-Encoding":
                b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n0\r\n\r\n",
            "headers never finished":
                b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n",
            "a 64 KiB header":
                b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 65536 + b"\r\n\r\n",
        }

        def probe(name, raw):
            self.count("http gateway framing")
            try:
                s = socket.create_connection((host, int(port)), timeout=30)
            except OSError as e:
                self.failures.add("gateway", "raw HTTP", f"{name}: cannot connect", short(raw, 200), str(e))
                return
            try:
                s.sendall(raw)
                first = s.recv(4096)
                status = first.split(b"\r\n", 1)[0].decode("latin-1")
                if not first:
                    return
                code = int(status.split()[1]) if len(status.split()) > 1 and status.split()[1].isdigit() else 0
                if code >= 500:
                    self.failures.add("gateway", "raw HTTP", f"{name}: HTTP {code}", short(raw, 200),
                                      short(first, 300))
            except (socket.timeout, TimeoutError):
                self.failures.add("gateway", "raw HTTP", f"{name}: no answer within 30 s", short(raw, 200),
                                  "the connection stayed open without a response")
            except OSError:
                pass
            finally:
                s.close()

        for name, raw in probes.items():
            t = threading.Thread(target=probe, args=(name, raw), daemon=True)
            t.start()
            self.slow.append(t)

    # --- gRPC

    def scope(self):
        m = self.mut
        r = self.rng
        return common_pb2.Scope(tenant=r.choice(["", "default", m.odd_string()]),
                                agent=r.choice(["fuzz-agent", m.odd_string()]),
                                run_id=r.choice(["", "run_x", m.odd_string()]),
                                tool=r.choice(["", "fuzz-http", m.odd_string()]),
                                provider=r.choice(["", m.odd_string()]))

    def fuzz_grpc(self):
        r = self.rng
        m = self.mut
        which = r.randrange(13)
        if which == 0:
            budget = common_pb2.Budget(max_steps=m.odd_u32(), max_tokens=m.odd_u64(), max_cost_nano_usd=m.odd_i64())
            budget.max_wall_time.seconds = r.choice([0, 1, 2**40, -1])
            req = orchestrator_pb2.StartRunRequest(
                agent=r.choice(["fuzz-agent", "fuzz-agent", m.odd_string()]), input=m.odd_string(),
                idempotency_key=r.choice(["", m.odd_string()]), tenant=r.choice(["", m.odd_string()]),
                labels={m.odd_string()[:1000]: m.odd_string()[:1000] for _ in range(r.choice([0, 1, 3]))})
            if r.random() < 0.7:
                req.budget.CopyFrom(budget)
            stub = orchestrator_pb2_grpc.OrchestratorStub(self.channel("orchestrator"))
            self.grpc_call("orchestrator", "StartRun", stub.StartRun, req)
        elif which == 1:
            stub = orchestrator_pb2_grpc.OrchestratorStub(self.channel("orchestrator"))
            req = orchestrator_pb2.ListRunsRequest(tenant=r.choice(["", m.odd_string()]),
                                                   agent=r.choice(["", m.odd_string()]),
                                                   status=m.odd_enum(), page_size=m.odd_u32(),
                                                   page_token=r.choice(["", m.odd_string(), "0", "-1"]))
            self.grpc_call("orchestrator", "ListRuns", stub.ListRuns, req)
        elif which == 2:
            stub = orchestrator_pb2_grpc.OrchestratorStub(self.channel("orchestrator"))
            req = orchestrator_pb2.WatchRunRequest(run_id=m.odd_string(), from_offset=m.odd_u64(),
                                                   follow=r.random() < 0.3)
            self.grpc_call("orchestrator", "WatchRun", stub.WatchRun, req, stream=True, deadline=2.0)
        elif which == 3:
            stub = orchestrator_pb2_grpc.OrchestratorStub(self.channel("orchestrator"))
            name = r.choice(["GetRun", "CancelRun"])
            if name == "GetRun":
                self.grpc_call("orchestrator", name, stub.GetRun, orchestrator_pb2.GetRunRequest(run_id=m.odd_string()))
            else:
                self.grpc_call("orchestrator", name, stub.CancelRun,
                               orchestrator_pb2.CancelRunRequest(run_id=m.odd_string(), reason=m.odd_string()))
        elif which == 4:
            stub = tools_pb2_grpc.ToolsStub(self.channel("tools"))
            req = tools_pb2.ExecuteRequest(scope=self.scope(), tool=r.choice(["fuzz-http", m.odd_string()]),
                                           arguments_json=m.odd_json(), idempotency_key=r.choice(["", m.odd_string()]),
                                           call_id=m.odd_string(), step=m.odd_u32())
            req.timeout.seconds = r.choice([0, 1, 2**40, -5])
            self.grpc_call("tools", "Execute", stub.Execute, req, deadline=30.0)
        elif which == 5:
            stub = approvals_pb2_grpc.ApprovalsStub(self.channel("approvals"))
            tool = common_pb2.ToolSpec(name=r.choice(["fuzz-http", m.odd_string()]), description=m.odd_string()[:1000],
                                       parameters_json_schema=m.odd_json(), risk=m.odd_enum(),
                                       tags=[m.odd_string()[:100] for _ in range(r.choice([0, 2]))],
                                       kind=r.choice([common_pb2.TOOL_KIND_HTTP, 0, m.odd_enum()]))
            req = approvals_pb2.EvaluateRequest(
                scope=self.scope(), step=m.odd_u32(), call_id=m.odd_string(), tool=tool,
                arguments_json=m.odd_json() if r.random() < 0.6 else m.text(r.choice(self.seeds["canonical_args"]
                                                                                    or ["{}"])),
                granted_tools=r.choice([[], ["fuzz-http"], [tool.name], [m.odd_string()] * 3]),
                approval_required_tools=r.choice([[], [tool.name]]))
            req.facts.step = m.odd_u32()
            req.facts.tokens_so_far = m.odd_u64()
            req.facts.cost_so_far.nano_usd = m.odd_i64()
            req.approval_ttl.seconds = r.choice([0, 1, 2**40, -1])
            self.grpc_call("approvals", "Evaluate", stub.Evaluate, req)
        elif which == 6:
            stub = approvals_pb2_grpc.ApprovalsStub(self.channel("approvals"))
            req = approvals_pb2.ListApprovalsRequest(tenant=r.choice(["", m.odd_string()]), state=m.odd_enum(),
                                                     run_id=r.choice(["", m.odd_string()]), page_size=m.odd_u32())
            self.grpc_call("approvals", "List", stub.List, req)
        elif which == 7:
            stub = approvals_pb2_grpc.ApprovalsStub(self.channel("approvals"))
            req = approvals_pb2.WatchApprovalsRequest(from_offset=m.odd_u64(), tenant=r.choice(["", m.odd_string()]))
            self.grpc_call("approvals", "Watch", stub.Watch, req, stream=True, deadline=2.0)
        elif which == 8:
            stub = approvals_pb2_grpc.ApprovalsStub(self.channel("approvals"))
            if r.random() < 0.5:
                self.grpc_call("approvals", "Get", stub.Get, approvals_pb2.GetApprovalRequest(id=m.odd_string()))
            else:
                req = approvals_pb2.DecideRequest(id=m.odd_string(), approve=r.random() < 0.5, reason=m.odd_string(),
                                                  arguments_sha256=m.odd_string(), approver=m.odd_string())
                self.grpc_call("approvals", "Decide", stub.Decide, req)
        elif which == 9:
            stub = secrets_pb2_grpc.SecretsStub(self.channel("secrets"))
            req = secrets_pb2.ResolveRequest(scope=self.scope(),
                                             names=[m.odd_string() for _ in range(r.choice([0, 1, 3, 200]))],
                                             refresh=r.random() < 0.5)
            self.grpc_call("secrets", "Resolve", stub.Resolve, req)
        elif which == 10:
            # A remote MCP server's authorization: tools that are not there or not OAuth ones,
            # odd redirect URIs, states and codes.
            stub = orchestrator_pb2_grpc.OrchestratorStub(self.channel("orchestrator"))
            tool = r.choice(["fuzz-http", "", m.odd_string()])
            name = r.choice(["Begin", "Complete", "Revoke"])
            if name == "Begin":
                req = orchestrator_pb2.BeginToolAuthorizationRequest(
                    tenant=r.choice(["", m.odd_string()]), tool=tool,
                    redirect_uri=r.choice(["http://127.0.0.1:1/cb", "https://x.example/cb", m.odd_string()]))
                self.grpc_call("orchestrator", "BeginToolAuthorization", stub.BeginToolAuthorization, req)
            elif name == "Complete":
                req = orchestrator_pb2.CompleteToolAuthorizationRequest(
                    tenant=r.choice(["", m.odd_string()]), state=m.odd_string(), code=m.odd_string(),
                    issuer=r.choice(["", m.odd_string()]))
                self.grpc_call("orchestrator", "CompleteToolAuthorization", stub.CompleteToolAuthorization, req)
            else:
                req = orchestrator_pb2.RevokeToolAuthorizationRequest(tenant=r.choice(["", m.odd_string()]), tool=tool)
                self.grpc_call("orchestrator", "RevokeToolAuthorization", stub.RevokeToolAuthorization, req)
        elif which == 11:
            stub = secrets_pb2_grpc.SecretsStub(self.channel("secrets"))
            tenant, tool = r.choice(["", m.odd_string()]), r.choice(["fuzz-http", m.odd_string()])
            name = r.choice(["GetGrant", "PutGrant", "DeleteGrant"])
            if name == "PutGrant":
                req = secrets_pb2.PutGrantRequest(key=secrets_pb2.GrantKey(tenant=tenant, tool=tool),
                                                  value=r.choice(["", m.odd_string(), "x" * 70000]))
                self.grpc_call("secrets", name, stub.PutGrant, req)
            else:
                req = getattr(secrets_pb2, f"{name}Request")(tenant=tenant, tool=tool)
                self.grpc_call("secrets", name, getattr(stub, name), req)
        else:
            stub = router_pb2_grpc.RouterStub(self.channel("router"))
            msgs = [common_pb2.Message(role=m.odd_enum(), text=m.odd_string(), tool_call_id=m.odd_string()[:100],
                                       tool_calls=[common_pb2.ToolCall(id=m.odd_string()[:50], name=m.odd_string()[:50],
                                                                       arguments_json=m.odd_json())]
                                       if r.random() < 0.3 else [])
                    for _ in range(r.choice([0, 1, 2, 500]))]
            req = router_pb2.CompleteRequest(scope=self.scope(), route=r.choice(["fuzz-route", m.odd_string()]),
                                             messages=msgs, metadata={m.odd_string()[:100]: m.odd_string()[:100]})
            if r.random() < 0.3:
                req.temperature = r.choice([float("nan"), float("inf"), -1.0, 1e30])
            if r.random() < 0.3:
                req.max_output_tokens = m.odd_u32()
            if r.random() < 0.5:
                self.grpc_call("router", "Complete", stub.Complete, req)
            else:
                self.grpc_call("router", "CompleteStream", stub.CompleteStream, req, stream=True, deadline=15.0)

    def fuzz_list_manifests(self):
        r = self.rng
        service = r.choice(["orchestrator", "approvals", "router", "tools", "secrets"])
        stub = manifests_pb2_grpc.ManifestsStub(self.channel(service))
        roll = r.random()
        if roll < 0.5:
            req = manifests_pb2.ListManifestsRequest(tenant=r.choice(["", self.mut.odd_string()]),
                                                     kind=r.choice([0, manifests_pb2.MANIFEST_KIND_AGENT,
                                                                    manifests_pb2.MANIFEST_KIND_POLICY,
                                                                    self.mut.odd_enum()]))
            self.grpc_call(service, "Manifests.ListManifests", stub.ListManifests, req)
        elif roll < 0.65:
            req = manifests_pb2.HistoryRequest(tenant=r.choice(["", self.mut.odd_string()]),
                                               kind=r.choice([manifests_pb2.MANIFEST_KIND_AGENT,
                                                              manifests_pb2.MANIFEST_KIND_MODEL_ROUTE,
                                                              manifests_pb2.MANIFEST_KIND_BUDGET, self.mut.odd_enum()]),
                                               name=r.choice(["fuzz-route", self.mut.odd_string()]),
                                               limit=self.mut.odd_u32())
            self.grpc_call(service, "Manifests.History", stub.History, req)
        elif roll < 0.8:
            # The spend ledger, through the orchestrator or the router itself.
            by = [r.choice(["user", "end_user", "api_key", "agent", "model", self.mut.odd_string()])
                  for _ in range(r.choice([0, 1, 2, 6]))]
            since = r.choice([None, 0, 1, 3600, 86400 * 7, 86400 * 500, 2**40, -5])
            to_orchestrator = r.random() < 0.5
            make = orchestrator_pb2.GetSpendRequest if to_orchestrator else router_pb2.SpendRequest
            req = make(tenant=r.choice(["", self.mut.odd_string()]), by=by)
            if since is not None:
                req.since.seconds = since
                req.since.nanos = r.choice([0, 1, 999_999_999])
            if to_orchestrator:
                o = orchestrator_pb2_grpc.OrchestratorStub(self.channel("orchestrator"))
                self.grpc_call("orchestrator", "GetSpend", o.GetSpend, req)
            else:
                rs = router_pb2_grpc.RouterStub(self.channel("router"))
                self.grpc_call("router", "Spend", rs.Spend, req)
        else:
            req = manifests_pb2.DeleteManifestRequest(tenant=self.mut.odd_string(),
                                                      kind=r.choice([manifests_pb2.MANIFEST_KIND_AGENT,
                                                                     manifests_pb2.MANIFEST_KIND_TOOL,
                                                                     self.mut.odd_enum()]),
                                                      name=self.mut.odd_string())
            self.grpc_call(service, "Manifests.DeleteManifest", stub.DeleteManifest, req)

    # --- checks

    def check_logs(self):
        lines = self.harness.new_log_lines()
        for i, line in enumerate(lines):
            if PANIC_RE.search(line) and "RUST_BACKTRACE" not in line:
                context = " | ".join(x.strip() for x in lines[i:i + 3])
                where = re.search(r"panicked at ([^\s:]+:\d+)", line)
                key = where.group(1) if where else short(re.sub(r"\d", "N", line), 100)
                self.failures.add("harness log", "panic", key, "(see the request logged before it)",
                                  short(context, 400))

    def check_alive(self):
        if self.harness.alive():
            return True
        self.check_logs()
        self.failures.add("harness", "bridle dev", f"died (exit {self.harness.proc.returncode})",
                          f"the last request sent: {self.last}", f"log: {self.args.log}")
        return False

    def health(self):
        ok = True
        for service, addr in self.harness.grpc.items():
            try:
                stub = health_pb2_grpc.HealthStub(self.channel(service))
                r = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
                if r.status != health_pb2.HealthCheckResponse.SERVING:
                    raise RuntimeError(f"status {r.status}")
            except Exception as e:  # noqa: BLE001 -- any failure of the check is the finding
                ok = False
                self.failures.add(service, "grpc.health.v1.Health/Check", "not serving at the end", addr,
                                  short(str(e), 200))
        try:
            host, port = self.harness.gateway.rsplit(":", 1)
            c = http.client.HTTPConnection(host, int(port), timeout=5)
            c.request("GET", "/v1/models")
            status = c.getresponse().status
            if status != 200:
                raise RuntimeError(f"HTTP {status}")
        except Exception as e:  # noqa: BLE001
            ok = False
            self.failures.add("gateway", "GET /v1/models", "not answering at the end", self.harness.gateway,
                              short(str(e), 200))
        return ok

    def setup(self):
        self.harness.start()
        self.channels = {}
        stub = manifests_pb2_grpc.ManifestsStub(self.channel("orchestrator"))
        docs = [manifests_pb2.ManifestDocument(source="base.yaml", yaml=d, first_line=1)
                for d in BASE_MANIFESTS.split("---\n")]
        stub.Apply(manifests_pb2.ApplyRequest(documents=docs), timeout=30)
        self.framing_probes()

    def run(self):
        end = time.time() + self.args.seconds
        self.setup()
        areas = [(self.fuzz_apply, 30), (self.fuzz_cli_apply, 3), (self.fuzz_gateway, 30), (self.fuzz_grpc, 30),
                 (self.fuzz_list_manifests, 4), (self.fuzz_inbox, 6), (self.fuzz_mcp, 8)]
        fns, weights = zip(*areas)
        n = 0
        try:
            while time.time() < end:
                fn = self.rng.choices(fns, weights)[0]
                try:
                    fn()
                except grpc.RpcError:
                    pass
                n += 1
                if n % 25 == 0:
                    self.check_logs()
                if not self.check_alive():
                    if self.harness.starts > self.args.max_restarts:
                        print("the harness died too often; stopping", flush=True)
                        break
                    self.harness.stop()
                    self.setup()
            for t in self.slow:
                t.join(timeout=max(0.0, 35 - (time.time() - end)))
            self.check_logs()
            if self.check_alive():
                self.health()
        finally:
            self.harness.stop()
            self.check_logs()
        return n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bridle", required=True)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--seeds", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--report", required=True)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--max-restarts", type=int, default=10)
    args = ap.parse_args()
    print(f"black-box fuzz: {args.seconds:.0f} s, random seed {args.seed} (BLACKBOX_SEED to repeat)", flush=True)
    f = Fuzzer(args)
    n = f.run()
    failures = f.failures.report()
    Path(args.report).write_text(json.dumps({"seed": args.seed, "requests": f.counts, "failures": failures},
                                            indent=2, default=str))
    print(f"\n{n} requests; by kind: {json.dumps(f.counts, sort_keys=True)}")
    if failures:
        print(f"\n{len(failures)} distinct failure(s) (report: {args.report}, harness log: {args.log}):")
        for x in failures:
            print(f"- [{x['service']}] {x['call']}: {x['outcome']} (x{x['count']})\n"
                  f"    request:  {x['request']}\n    response: {x['response']}")
        sys.exit(1)
    print("no failure")


if __name__ == "__main__":
    main()
