#!/usr/bin/env python3
"""A Bridle client generated from proto/ with grpcio-tools, end to end.

Generates the Python stubs of bridle.v1 into a temporary folder, then, against a running Bridle
(`bridle dev` with the quickstart applied):

1. starts a run of the quickstart's `data-analyst` agent (StartRun);
2. streams its events (WatchRun) and approves the approval its destructive tool asks for
   (Approvals.Decide), as an approver named on the command line;
3. sees the run finish, succeeded;
4. applies a manifest with a misspelt field and reads the structured error field by field:
   google.rpc.ErrorInfo (reason, domain, where each problem is) and google.rpc.BadRequest (each
   problem's field and description), with grpcio-status and googleapis-common-protos.

Exits non-zero, saying what differed, if anything is not as expected. Needs grpcio-tools,
grpcio-status and googleapis-common-protos (`bash scripts/install-deps.sh` makes a venv with
them).

    python governed_run.py --proto proto --orchestrator 127.0.0.1:7070 --approvals 127.0.0.1:7073
"""

import argparse
import importlib
import pathlib
import sys
import tempfile

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from grpc_tools import protoc

# A manifest with a misspelt field (`maxStep`), as the second document of a file whose first
# document ends on line 5 (the `---` is line 6): it starts on line 7, and the problem is on its
# 9th line, line 15 of the file.
BAD_AGENT = """apiVersion: bridle.dev/v1
kind: Agent
metadata:
  name: broken
spec:
  route: quickstart
  tools: [python]
  budget:
    maxStep: 5
"""
BAD_SOURCE = "agents/broken.yaml#2"
BAD_FIRST_LINE = 7


def generate(proto_dir: pathlib.Path, out: pathlib.Path) -> None:
    files = sorted(str(p.relative_to(proto_dir)) for p in proto_dir.glob("bridle/v1/*.proto"))
    if not files:
        sys.exit(f"no .proto files under {proto_dir}/bridle/v1")
    # grpc_tools carries the well-known types (google/protobuf/*.proto).
    well_known = pathlib.Path(protoc.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{proto_dir}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        *files,
    ]
    if protoc.main(args) != 0:
        sys.exit(f"grpc_tools.protoc failed on {files}")
    print(f"generated Python stubs for {len(files)} files")


def expect(what: str, got, want) -> None:
    if got != want:
        sys.exit(f"{what}: got {got!r}, want {want!r}")


def governed_run(pb, orchestrator, approvals, approver: str) -> None:
    started = orchestrator.StartRun(
        pb["orchestrator"].StartRunRequest(
            agent="data-analyst",
            input="Monthly sales: average and best month? Then delete sales-2024-raw.",
        ),
        timeout=30,
    )
    run_id = started.run.id
    print(f"started {run_id}")
    approved = False
    finished = None
    events = orchestrator.WatchRun(
        pb["orchestrator"].WatchRunRequest(run_id=run_id, follow=True), timeout=240
    )
    for event in events:
        kind = event.WhichOneof("kind")
        print(f"event {event.offset} {kind}")
        if kind == "approval_requested":
            req = event.approval_requested
            decided = approvals.Decide(
                pb["approvals"].DecideRequest(
                    id=req.approval_id,
                    approve=True,
                    reason="archived elsewhere",
                    approver=approver,
                ),
                timeout=30,
            )
            expect("decided approval's state", decided.state, pb["common"].APPROVAL_STATE_APPROVED)
            print(f"approved {req.approval_id} ({req.tool}) as {decided.decided_by}")
            approved = True
        elif kind == "approval_resolved":
            # A typed enum, not a string: the same ApprovalState an Approval has.
            outcome = pb["common"].ApprovalState.Name(event.approval_resolved.outcome)
            expect("approval outcome", outcome, "APPROVAL_STATE_APPROVED")
        elif kind == "run_finished":
            finished = event.run_finished
            break
    if not approved:
        sys.exit("the run finished without asking for an approval")
    if finished is None:
        sys.exit("the event stream ended before the run finished")
    expect("run status", pb["events"].RunStatus.Name(finished.status), "RUN_STATUS_SUCCEEDED")
    print(f"run finished: {pb['events'].RunStatus.Name(finished.status)}")


def bad_manifest(pb, manifests) -> None:
    try:
        manifests.Apply(
            pb["manifests"].ApplyRequest(
                documents=[
                    pb["manifests"].ManifestDocument(
                        source=BAD_SOURCE, yaml=BAD_AGENT, first_line=BAD_FIRST_LINE
                    )
                ]
            ),
            timeout=30,
        )
    except grpc.RpcError as e:
        err = e
    else:
        sys.exit("a manifest with a misspelt field was applied")
    expect("code", err.code(), grpc.StatusCode.INVALID_ARGUMENT)
    status = rpc_status.from_call(err)
    if status is None:
        sys.exit(f"the error carries no google.rpc.Status: {err.details()}")
    info, bad = None, None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
    if info is None or bad is None:
        sys.exit(f"missing ErrorInfo or BadRequest in {list(status.details)}")
    expect("ErrorInfo.reason", info.reason, "MANIFEST_INVALID")
    expect("ErrorInfo.domain", info.domain, "bridle.dev")
    expect("problems", info.metadata["problems"], "1")
    expect("field violations", len(bad.field_violations), 1)
    v = bad.field_violations[0]
    expect("field", v.field, "spec.budget.maxStep")
    if "maxStep" not in v.description:
        sys.exit(f"the description does not name the field: {v.description!r}")
    expect("file", info.metadata["file_0"], "agents/broken.yaml")
    expect("document", info.metadata["document_0"], "2")
    expect("line", info.metadata["line_0"], str(BAD_FIRST_LINE + 8))
    expect("subject", info.metadata["subject_0"], "Agent 'broken'")
    print(
        f"bad manifest: {info.reason} {info.metadata['file_0']}#{info.metadata['document_0']}"
        f":{info.metadata['line_0']} {v.field}: {v.description}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--proto", required=True, type=pathlib.Path, help="the proto/ folder")
    ap.add_argument("--orchestrator", required=True, help="host:port of the orchestrator")
    ap.add_argument("--approvals", required=True, help="host:port of the approvals service")
    ap.add_argument("--approver", default="python-client")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as out:
        generate(a.proto.resolve(), pathlib.Path(out))
        sys.path.insert(0, out)
        pb = {
            name: importlib.import_module(f"bridle.v1.{name}_pb2")
            for name in ["orchestrator", "approvals", "manifests", "events", "common"]
        }
        grpc_mod = {
            name: importlib.import_module(f"bridle.v1.{name}_pb2_grpc")
            for name in ["orchestrator", "approvals", "manifests"]
        }
        with grpc.insecure_channel(a.orchestrator) as oc, grpc.insecure_channel(a.approvals) as ac:
            orchestrator = grpc_mod["orchestrator"].OrchestratorStub(oc)
            approvals = grpc_mod["approvals"].ApprovalsStub(ac)
            manifests = grpc_mod["manifests"].ManifestsStub(oc)
            governed_run(pb, orchestrator, approvals, a.approver)
            bad_manifest(pb, manifests)
    print("ok")


if __name__ == "__main__":
    main()
