#!/usr/bin/env python3
"""The chart README's values reference, generated from the chart itself: every key the values
schema (values.schema.json) knows, with its type, its default (values.yaml) and what it is for
(the schema's description, else the comment above the key in values.yaml).

    python3 helm/tests/values_doc.py           # prints the reference
    python3 helm/tests/values_doc.py --write   # writes it into helm/bridle/README.md

check_chart.py fails when the README's copy differs from what this generates. Only the standard
library and PyYAML are used.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

CHART = Path(__file__).resolve().parents[2] / "helm" / "bridle"
BEGIN, END = "<!-- values reference: begin (helm/tests/values_doc.py) -->", "<!-- values reference: end -->"


def comments(text: str) -> dict[str, str]:
    """The comment lines right above each key of values.yaml, by dotted path."""
    out: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
            continue
        m = re.match(r"^(\s*)([A-Za-z0-9_]+):", line)
        if not m:
            if not stripped:
                pending = []
            continue
        indent, key = len(m.group(1)), m.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        if pending:
            out[".".join(k for _, k in stack)] = " ".join(p for p in pending if p)
        pending = []
    return out


def type_of(s: dict) -> str:
    if "enum" in s:
        return " \\| ".join(f"`{v}`" for v in s["enum"])
    if "const" in s:
        return f"`{s['const']}`"
    if "oneOf" in s:
        return " or ".join(type_of(x) for x in s["oneOf"])
    t = s.get("type", "any")
    return " or ".join(t) if isinstance(t, list) else t


def default_at(values: dict, path: list[str]):
    v = values
    for k in path:
        if not isinstance(v, dict) or k not in v:
            return None
        v = v[k]
    return v


def show(v) -> str:
    if v is None:
        return ""
    text = json.dumps(v, separators=(", ", ": "))
    return f"`{text}`" if len(text) <= 60 else f"`{text[:57]}...`"


def rows(schema: dict, defs: dict, values: dict, notes: dict, path: list[str], shown: list[str]) -> list[str]:
    if "$ref" in schema:
        schema = defs[schema["$ref"].split("/")[-1]]
    props = schema.get("properties")
    if props and schema.get("type", "object") == "object":
        out = []
        for key in props:
            out += rows(props[key], defs, values, notes, path + [key], shown + [key])
        return out
    name = ".".join(shown)
    what = schema.get("description") or notes.get(".".join(path)) or ""
    if not what and path[0] not in ("tools", "defaults") and len(path) > 1:
        what = notes.get(".".join(["tools"] + path[1:]), "") or notes.get(".".join(["defaults"] + path[1:]), "")
    default = show(default_at(values, path))
    what = what.replace("|", "\\|")
    return [f"| `{name}` | {type_of(schema)} | {default} | {what} |"]


def generate() -> str:
    schema = json.loads((CHART / "values.schema.json").read_text())
    text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)
    notes = comments(text)
    defs = schema.get("definitions", {})
    # The services whose blocks share one definition: documented once.
    shared = [k for k, v in schema["properties"].items() if "$ref" in v]
    lines = [BEGIN, "", "| key | type | default | what |", "|---|---|---|---|"]
    for key, sub in schema["properties"].items():
        if key in shared:
            if key != shared[0]:
                continue
            # One block for the services that share a definition (defaults: the first's).
            label = "<" + "\\|".join(shared) + ">"
            lines += rows(sub, defs, values, notes, [key], [label])
        else:
            lines += rows(sub, defs, values, notes, [key], [key])
    lines += ["", END]
    return "\n".join(lines)


def readme_copy() -> str | None:
    text = (CHART / "README.md").read_text()
    if BEGIN not in text or END not in text:
        return None
    return text[text.index(BEGIN): text.index(END) + len(END)]


def write() -> None:
    path = CHART / "README.md"
    text = path.read_text()
    new = generate()
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + new + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n## Values reference\n\nGenerated from `values.schema.json` and `values.yaml` by `helm/tests/values_doc.py --write`; the chart's checks fail when it is out of date.\n\n" + new + "\n"
    path.write_text(text)


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        write()
    else:
        print(generate())
