#!/usr/bin/env python3
"""Validates every golden example in proto/examples/ against its JSON Schema.

An example named `<schema>.<case>.json` is checked against `schemas/<schema>.schema.json`
(draft 2020-12); schemas refer to each other by relative name (`op.schema.json`), which
resolves against their `$id`s through a local registry, never the network. The op of
every golden vector is checked against op.schema.json too, and a few deliberately
wrong messages must fail (so a schema that accepts everything cannot pass).

Needs `jsonschema` (>= 4.18, which brings `referencing`):  pip install jsonschema

    python3 proto/reference/validate_examples.py
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

PROTO = Path(__file__).resolve().parent.parent
SCHEMAS = PROTO / "schemas"
EXAMPLES = PROTO / "examples"
GOLDEN = PROTO / "golden" / "op-hash-vectors.json"


def load(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def main() -> int:
    schemas = {p.name.removesuffix(".schema.json"): load(p) for p in sorted(SCHEMAS.glob("*.schema.json"))}
    registry = Registry().with_resources(
        (s["$id"], Resource.from_contents(s, default_specification=DRAFT202012)) for s in schemas.values()
    )
    validators = {}
    for name, schema in schemas.items():
        Draft202012Validator.check_schema(schema)
        validators[name] = Draft202012Validator(schema, registry=registry)

    faults: list[str] = []
    seen: set[str] = set()
    examples = sorted(EXAMPLES.glob("*.json"))
    for path in examples:
        schema_name = path.name.split(".", 1)[0]
        if schema_name not in validators:
            faults.append(f"{path.name}: no schema named {schema_name}.schema.json")
            continue
        seen.add(schema_name)
        for error in validators[schema_name].iter_errors(load(path)):
            faults.append(f"{path.name}: {'/'.join(map(str, error.absolute_path)) or '$'}: {error.message}")

    for name in sorted(set(validators) - seen - {"instrument"}):
        faults.append(f"schema {name} has no example")

    vectors = load(GOLDEN)
    for v in vectors:
        for error in validators["op"].iter_errors(v["op"]):
            faults.append(f"golden {v['name']}: {error.message}")

    # Messages that must be refused.
    op = load(EXAMPLES / "op.device-register.json")
    must_fail = []
    extra = copy.deepcopy(op)
    extra["signature"] = "x"
    must_fail.append(("op with an unknown member", "op", extra))
    nested = copy.deepcopy(op)
    nested["hlc"]["x"] = 1
    must_fail.append(("op with an unknown member in hlc", "op", nested))
    no_parent = copy.deepcopy(op)
    del no_parent["parent"]
    must_fail.append(("op without parent", "op", no_parent))
    upper = copy.deepcopy(op)
    upper["origin"] = upper["origin"].upper()
    must_fail.append(("op with an uppercase UUID", "op", upper))
    seq0 = copy.deepcopy(op)
    seq0["seq"] = 0
    must_fail.append(("op with seq 0", "op", seq0))
    bad_field = copy.deepcopy(op)
    bad_field["field"] = "Answer.X"
    must_fail.append(("op with an uppercase field name", "op", bad_field))
    must_fail.append(("push with an unknown member", "push-request", {"ops": [], "dry_run": True}))
    must_fail.append(("push of 1001 ops", "push-request", {"ops": [op] * 1001}))
    must_fail.append(("status request with an unknown member", "status-request", {"origins": [], "all": True}))
    must_fail.append(("evidence begin over 64 MiB", "evidence-begin", {"size": 67108865, "media_type": "image/jpeg"}))
    must_fail.append(("evidence begin with parameters", "evidence-begin", {"size": 1, "media_type": "text/plain; charset=utf-8"}))
    pull = load(EXAMPLES / "pull-response.first-page.json")
    hyphenated = copy.deepcopy(pull)
    hyphenated["cursor"] = "018f93f1-0f80-717c-abda-114548e3ff2f.14"
    must_fail.append(("pull response with a hyphenated cursor", "pull-response", hyphenated))
    push = load(EXAMPLES / "push-response.quarantined.json")
    empty_list = copy.deepcopy(push)
    empty_list["origins"][0]["rejected"] = []
    must_fail.append(("push response with an empty rejected list (it must be omitted)", "push-response", empty_list))
    for what, schema_name, doc in must_fail:
        if validators[schema_name].is_valid(doc):
            faults.append(f"{schema_name} accepted {what}")

    # Responses accept members they do not know.
    future = load(EXAMPLES / "push-response.accepted.json")
    future["origins"][0]["checkpoint"] = {"seq": 1}
    future["next_push_after_ms"] = 500
    if not validators["push-response"].is_valid(future):
        faults.append("push-response refused unknown members (responses must allow them)")

    for fault in faults:
        print(f"FAIL {fault}")
    if faults:
        return 1
    print(
        f"ok: {len(examples)} examples valid against {len(seen)} schemas; {len(vectors)} golden ops valid; "
        f"{len(must_fail)} wrong messages refused"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
