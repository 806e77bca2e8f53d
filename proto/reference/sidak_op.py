#!/usr/bin/env python3
"""Reference implementation of Sidak's canonical JSON and canonical op encoding.

Written from proto/sync-v1.md (section 3) and independent of the Rust code, with no
dependencies beyond the Python 3 standard library. It is the second implementation
that the golden vectors in proto/golden/op-hash-vectors.json are checked against.

    python3 proto/reference/sidak_op.py            regenerate proto/golden/op-hash-vectors.json
    python3 proto/reference/sidak_op.py --check    verify the golden vectors and every op in
                                                   proto/examples/ (hash, form, prev chain)

Exit status: 0 when everything holds, 1 when a check fails.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import sys
from pathlib import Path

PROTO = Path(__file__).resolve().parent.parent
GOLDEN = PROTO / "golden" / "op-hash-vectors.json"
EXAMPLES = PROTO / "examples"

MAGIC = b"sidak-op-v1"
ZERO_HASH = "0" * 64

# Limits of an op (sync-v1.md, "Op limits").
FIELD_BYTES = 128
VALUE_BYTES = 64 * 1024
VALUE_DEPTH = 8

I64_MIN = -(2**63)
U64_MAX = 2**64 - 1

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
FIELD_RE = re.compile(r"^[a-z0-9_.\-]{1,128}$")

ENTITY_KINDS = (
    "device",
    "institution",
    "unit",
    "product",
    "assignment",
    "visit",
    "respondent",
    "note",
    "evidence",
    "correction",
    "deduction",
)


class OpError(ValueError):
    """An op (or a value inside it) that cannot be encoded or is malformed."""


class NonInteger:
    """A JSON number that a Sidak server reads as a non-integer.

    serde_json reads `1.5`, `1e3`, `-0` and integers outside [-2^63, 2^64-1] as
    floating point; ops holding any of them are refused (malformed, float in value).
    """

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"NonInteger({self.text})"


def _parse_int(text: str):
    n = int(text)
    if text == "-0" or not (I64_MIN <= n <= U64_MAX):
        return NonInteger(text)
    return n


def _parse_constant(text: str):
    raise OpError(f"{text} is not JSON")


def loads(text: str):
    """Parses JSON the way a Sidak server sees numbers (see NonInteger)."""
    return json.loads(text, parse_int=_parse_int, parse_float=NonInteger, parse_constant=_parse_constant)


# --- canonical JSON (sync-v1.md, "Canonical JSON") ---------------------------------

_SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


def _string(s: str) -> str:
    out = ['"']
    for ch in s:
        cp = ord(ch)
        if 0xD800 <= cp <= 0xDFFF:
            raise OpError("strings must be Unicode scalar values (a lone surrogate was found)")
        if ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif cp < 0x20:
            out.append("\\u%04x" % cp)
        else:
            out.append(ch)  # everything else literal, including U+007F and U+2028/U+2029
    out.append('"')
    return "".join(out)


def canonical_json(value) -> str:
    """One text per JSON value: keys sorted by UTF-8 bytes, no whitespace, shortest escapes."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, NonInteger) or isinstance(value, float):
        raise OpError(f"non-integer number {value!r}: write decimals as strings")
    if isinstance(value, int):
        if not (I64_MIN <= value <= U64_MAX):
            raise OpError(f"integer {value} is outside -2^63 .. 2^64-1")
        return str(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list):
        return "[" + ",".join(canonical_json(v) for v in value) + "]"
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise OpError(f"object key {key!r} is not a string")
        keys = sorted(value, key=lambda k: k.encode("utf-8", "surrogatepass"))
        return "{" + ",".join(_string(k) + ":" + canonical_json(value[k]) for k in keys) + "}"
    raise OpError(f"{type(value).__name__} is not a JSON value")


# --- canonical op encoding (sync-v1.md, "Canonical op encoding") -------------------


def _uuid_bytes(text: str, what: str) -> bytes:
    if not isinstance(text, str) or not UUID_RE.match(text):
        raise OpError(f"{what} must be a lowercase hyphenated UUID, found {text!r}")
    return bytes.fromhex(text.replace("-", ""))


def _digest_bytes(text: str, what: str) -> bytes:
    if not isinstance(text, str) or not SHA256_RE.match(text):
        raise OpError(f"{what} must be 64 lowercase hex digits, found {text!r}")
    return bytes.fromhex(text)


def _uint(value, bits: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not (0 <= value < 2**bits):
        raise OpError(f"{what} must be an integer 0 .. 2^{bits}-1, found {value!r}")
    return value


def encode_op(op: dict) -> bytes:
    """The bytes that an op's hash covers: every field but `hash`."""
    out = bytearray(MAGIC)
    out += _uuid_bytes(op["origin"], "origin")
    out += struct.pack(">Q", _uint(op["seq"], 64, "seq"))
    hlc = op["hlc"]
    out += struct.pack(">Q", _uint(hlc["ms"], 64, "hlc.ms"))
    out += struct.pack(">I", _uint(hlc["c"], 32, "hlc.c"))
    wall = op["wall"]
    if isinstance(wall, bool) or not isinstance(wall, int) or not (I64_MIN <= wall < 2**63):
        raise OpError(f"wall must be an integer -2^63 .. 2^63-1, found {wall!r}")
    out += struct.pack(">q", wall)
    kind = op["entity"]["kind"]
    if kind not in ENTITY_KINDS:
        raise OpError(f"unknown entity kind {kind!r}")
    kind_bytes = kind.encode("ascii")
    out += struct.pack(">B", len(kind_bytes)) + kind_bytes
    out += _uuid_bytes(op["entity"]["id"], "entity.id")
    field = op["field"].encode("utf-8")
    if len(field) > 0xFFFF:
        raise OpError("field too long to encode")
    out += struct.pack(">H", len(field)) + field
    value = canonical_json(op["value"]).encode("utf-8")
    out += struct.pack(">I", len(value)) + value
    parent = op["parent"]
    if parent is None:
        out += b"\x00"
    else:
        out += b"\x01" + _uuid_bytes(parent["origin"], "parent.origin")
        out += struct.pack(">Q", _uint(parent["seq"], 64, "parent.seq"))
    out += _digest_bytes(op["prev"], "prev")
    return bytes(out)


def op_hash(op: dict) -> str:
    """SHA-256 of the canonical encoding, as 64 lowercase hex digits."""
    return hashlib.sha256(encode_op(op)).hexdigest()


def make_op(origin, seq, hlc, wall, kind, entity_id, field, value, parent, prev) -> dict:
    """Builds an op as it travels on the wire (every key present) and sets its hash."""
    op = {
        "origin": origin,
        "seq": seq,
        "hlc": {"ms": hlc[0], "c": hlc[1]},
        "wall": wall,
        "entity": {"kind": kind, "id": entity_id},
        "field": field,
        "value": value,
        "parent": None if parent is None else {"origin": parent[0], "seq": parent[1]},
        "prev": prev,
    }
    op["hash"] = op_hash(op)
    return op


OP_KEYS = {"origin", "seq", "hlc", "wall", "entity", "field", "value", "parent", "prev", "hash"}


def _depth_ok(value, depth: int) -> bool:
    if depth > VALUE_DEPTH:
        return False
    if isinstance(value, list):
        return all(_depth_ok(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(_depth_ok(v, depth + 1) for v in value.values())
    return True


def _has_non_integer(value) -> bool:
    if isinstance(value, (NonInteger, float)):
        return True
    if isinstance(value, list):
        return any(_has_non_integer(v) for v in value)
    if isinstance(value, dict):
        return any(_has_non_integer(v) for v in value.values())
    return False


def check_form(op: dict) -> None:
    """What a server checks of an op alone (chain rejection `malformed`), in its order."""
    if set(op) != OP_KEYS:
        raise OpError(f"op keys must be exactly {sorted(OP_KEYS)}, found {sorted(op)}")
    if op["seq"] == 0:
        raise OpError("seq must be 1 or more")
    if not isinstance(op["field"], str) or not FIELD_RE.match(op["field"]):
        raise OpError(f"field name {op['field']!r} is not allowed")
    if not _depth_ok(op["value"], 0):
        raise OpError("value is too deeply nested")
    if _has_non_integer(op["value"]):
        raise OpError("value holds a non-integer number")
    if len(canonical_json(op["value"]).encode("utf-8")) > VALUE_BYTES:
        raise OpError("value is too large")
    parent = op["parent"]
    if parent is not None and parent.get("origin") == op["origin"] and parent.get("seq") == op["seq"]:
        raise OpError("parent is the op itself")
    expected = op_hash(op)
    if expected != op["hash"]:
        raise OpError(f"hash does not match the op's content (expected {expected}, found {op['hash']})")


# --- golden vectors ------------------------------------------------------------------

# Origins and records used by the vectors (UUID v7 shaped).
V_DEVICE = "01902f6a-3c10-7a41-9b52-6c0d1e2f3a01"
V_REGION = "01902f60-0000-7d11-8a22-0b3c4d5e6f02"
V_OTHER = "01902f7b-8e20-7c33-a044-5d6e7f809103"
V_VISIT = "01902f6b-1a2b-7c3d-8e4f-5a6b7c8d9e10"
V_NOTE = "01902f6c-2b3c-7d4e-9f50-6b7c8d9e0f21"
V_CORR = "01902f80-4c5d-7e6f-a071-8c9d0e1f2a32"
V_EXTRA_PREV = hashlib.sha256(b"sidak golden vectors: an arbitrary earlier op").hexdigest()


def golden_vectors() -> list[dict]:
    vectors = []
    prev = ZERO_HASH

    def chained(name, description, seq, hlc, wall, kind, eid, field, value, parent=None):
        nonlocal prev
        op = make_op(V_DEVICE, seq, hlc, wall, kind, eid, field, value, parent, prev)
        prev = op["hash"]
        vectors.append(_vector(name, description, op))

    t0 = 1718690400000  # 2024-06-18T06:00:00Z
    chained(
        "seq-1-zero-prev",
        "An origin's first op: registers device/<origin> with its assessor; prev is 32 zero bytes.",
        1, (t0, 0), t0, "device", V_DEVICE, "assessor", "ast-jabar-017",
    )
    chained(
        "chained-seq-2",
        "The next op of the same origin: prev is the hash of the vector before.",
        2, (t0, 1), t0, "device", V_DEVICE, "region", "jawa-barat",
    )
    chained(
        "parent-absent-integer-answer",
        "An answer written for the first time (parent absent: byte 0x00).",
        3, (t0 + 120000, 0), t0 + 120000, "visit", V_VISIT, "answer.proses.persyaratan", 2,
    )
    chained(
        "parent-present-other-origin",
        "An answer revised after seeing another origin's version (parent present: 0x01, origin, seq).",
        4, (t0 + 125000, 3), t0 + 124990, "visit", V_VISIT, "answer.proses.persyaratan", 3,
        parent=(V_OTHER, 41),
    )
    chained(
        "object-keys-sorted-by-utf8-bytes",
        "Nested objects whose keys sort differently by UTF-8 bytes than by case-insensitive, "
        "locale or UTF-16 code-unit order: 'A' < 'Z' < '_' < 'a' < 'z' < 'é' < U+FF61 < U+1F600, "
        "and '' first.",
        5, (t0 + 130000, 0), t0 + 130000, "correction", V_CORR, "value",
        {
            "z": 1,
            "é": {"b": True, "B": False, "ä": None, "a": []},
            "a": "lower",
            "A": "upper",
            "Z": {"zz": {}, "z": {"y": 0, "x": -1}},
            "_": 0,
            "\uff61": "halfwidth full stop (BMP, above the surrogates)",
            "😀": "astral: before U+FF61 in UTF-16 order, after it in UTF-8 order",
            "": "empty key",
            "aa": 2,
            "a\u0000": "key with a NUL",
        },
    )
    chained(
        "string-escapes",
        "Control characters (short escapes and \\u00XX in lowercase hex), quotes, backslashes, "
        "slash, U+007F, U+2028, U+2029, non-ASCII and emoji (all literal UTF-8).",
        6, (t0 + 140000, 0), t0 + 140000, "note", V_NOTE, "text",
        "quote \" backslash \\ slash / tab\t nl\n cr\r bs\b ff\f nul\u0000 us\u001f esc\u001b "
        "del\u007f ls\u2028 ps\u2029 é ñ 漢字 🚀 👩🏽‍💻",
    )
    chained(
        "empty-string",
        "An empty string value (canonical JSON `\"\"`, 2 bytes).",
        7, (t0 + 150000, 0), t0 + 150000, "device", V_DEVICE, "label", "",
    )
    chained(
        "array-of-mixed-types",
        "An array holding every JSON type, nested empties and integers of both signs.",
        8, (t0 + 160000, 0), t0 + 160000, "correction", V_CORR, "value",
        [1, "dua", True, False, None, {"b": [], "a": {}}, [], -7, [0, ["nested", -9223372036854775808]]],
    )
    chained(
        "null-value",
        "A null value.",
        9, (t0 + 170000, 0), t0 + 170000, "correction", V_CORR, "value", None,
    )
    chained(
        "long-value-length-prefix",
        "A value longer than 255 and 256 bytes, so that the u32 length prefix has two non-zero bytes.",
        10, (t0 + 180000, 0), t0 + 180000, "note", V_NOTE, "text",
        "Loket tutup pukul 12.00; antrean panjang. " * 8,
    )
    chained(
        "deepest-allowed-nesting",
        "A value nested to depth 8 (the top-level value is depth 0), the deepest allowed.",
        11, (t0 + 190000, 0), t0 + 190000, "correction", V_CORR, "value",
        {"a": [[[[[[["depth 8"]]]]]]]},
    )
    # Standalone vectors: a different origin and an arbitrary prev (they test encoding, not chains).
    vectors.append(
        _vector(
            "integer-extremes",
            "i64 min and max, u64 max inside the value; seq 2^53+1 (not exact in an IEEE double); "
            "hlc.ms 2^53+1, hlc.c u32 max and a negative wall time.",
            make_op(
                V_REGION, 2**53 + 1, (2**53 + 1, 2**32 - 1), -1, "correction", V_CORR, "value",
                {"i64_min": I64_MIN, "i64_max": 2**63 - 1, "u64_max": U64_MAX, "zero": 0, "neg": -42},
                (V_DEVICE, 2**53 + 1), V_EXTRA_PREV,
            ),
        )
    )
    vectors.append(
        _vector(
            "wall-i64-min-max-lengths",
            "wall = i64 min (two's complement), the longest kind name and a 128-byte field name.",
            make_op(
                V_REGION, 7, (0, 0), I64_MIN, "institution", V_REGION, "n" * 121 + ".name-x", {"k": "v"},
                None, V_EXTRA_PREV,
            ),
        )
    )
    return vectors


def _vector(name: str, description: str, op: dict) -> dict:
    check_form(op)
    encoding = encode_op(op)
    return {
        "name": name,
        "description": description,
        "op": op,
        "canonical_value": canonical_json(op["value"]),
        "canonical_hex": encoding.hex(),
        "hash": hashlib.sha256(encoding).hexdigest(),
    }


def write_golden() -> None:
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(golden_vectors(), indent=2, ensure_ascii=False) + "\n"
    GOLDEN.write_text(text, encoding="utf-8")
    print(f"wrote {GOLDEN.relative_to(PROTO.parent)}")


# --- checks ----------------------------------------------------------------------------


def check_golden(faults: list[str]) -> int:
    vectors = loads(GOLDEN.read_text(encoding="utf-8"))
    for v in vectors:
        try:
            op = v["op"]
            encoding = encode_op(op)
            if encoding.hex() != v["canonical_hex"]:
                faults.append(f"golden {v['name']}: canonical_hex differs from this implementation")
            if hashlib.sha256(encoding).hexdigest() != v["hash"] or v["hash"] != op["hash"]:
                faults.append(f"golden {v['name']}: hash differs")
            if canonical_json(op["value"]) != v["canonical_value"]:
                faults.append(f"golden {v['name']}: canonical_value differs")
            check_form(op)
        except (OpError, KeyError, TypeError) as e:
            faults.append(f"golden {v.get('name')}: {e}")
    regenerated = golden_vectors()
    if json.loads(json.dumps(regenerated)) != json.loads(GOLDEN.read_text(encoding="utf-8")):
        faults.append("golden: the file differs from what this script generates (run it without --check)")
    return len(vectors)


def _ops_in(name: str, doc) -> list[dict]:
    """The ops an example carries, by message type."""
    schema = name.split(".", 1)[0]
    if schema == "op":
        return [doc]
    if schema == "push-request":
        return list(doc["ops"])
    if schema == "pull-response":
        return [p["op"] for p in doc["ops"]]
    return []


def _heads_in(name: str, doc) -> list[tuple[str, int, str, str]]:
    """(origin, seq, hash, where) for every chain head an example states."""
    schema = name.split(".", 1)[0]
    heads = []
    if schema == "push-response":
        for o in doc["origins"]:
            heads.append((o["origin"], o["held"]["seq"], o["held"]["hash"], "held"))
    elif schema == "status-response":
        for o in doc["origins"]:
            heads.append((o["origin"], o["held"]["seq"], o["held"]["hash"], "held"))
            if "upstream" in o:
                heads.append((o["origin"], o["upstream"]["seq"], o["upstream"]["hash"], "upstream"))
    elif schema == "manifest":
        for o in doc["origins"]:
            heads.append((o["origin"], o["seq"], o["head_hash"], "head_hash"))
    return heads


def check_examples(faults: list[str]) -> int:
    """Every op in the examples: form, hash, prev link; the same (origin, seq) never
    carries two hashes; every stated chain head names an op the examples hold."""
    known: dict[tuple[str, int], tuple[str, str]] = {}
    ops: list[tuple[str, dict]] = []
    files = sorted(EXAMPLES.glob("*.json"))
    docs = {}
    for path in files:
        try:
            docs[path.name] = loads(path.read_text(encoding="utf-8"))
        except (ValueError, OpError) as e:
            faults.append(f"{path.name}: not JSON ({e})")
    for name, doc in docs.items():
        for op in _ops_in(name, doc):
            try:
                check_form(op)
            except (OpError, KeyError, TypeError) as e:
                faults.append(f"{name}: op {op.get('origin')}#{op.get('seq')}: {e}")
                continue
            key = (op["origin"], op["seq"])
            if key in known and known[key][0] != op["hash"]:
                faults.append(f"{name}: op {key[0]}#{key[1]} differs from the one in {known[key][1]}")
            known.setdefault(key, (op["hash"], name))
            ops.append((name, op))
    for name, op in ops:
        origin, seq = op["origin"], op["seq"]
        if seq == 1:
            if op["prev"] != ZERO_HASH:
                faults.append(f"{name}: op {origin}#1 has a non-zero prev")
        elif (origin, seq - 1) in known:
            if op["prev"] != known[(origin, seq - 1)][0]:
                faults.append(f"{name}: op {origin}#{seq} prev is not the hash of #{seq - 1}")
        else:
            faults.append(f"{name}: op {origin}#{seq}: #{seq - 1} is in no example, so prev cannot be checked")
    for name, doc in docs.items():
        for origin, seq, digest, where in _heads_in(name, doc):
            if seq == 0:
                if digest != ZERO_HASH:
                    faults.append(f"{name}: {where} of {origin} is seq 0 with a non-zero hash")
            elif (origin, seq) not in known:
                faults.append(f"{name}: {where} {origin}#{seq} names an op that is in no example")
            elif known[(origin, seq)][0] != digest:
                faults.append(f"{name}: {where} {origin}#{seq} hash is not the hash of that op")
    return len(ops)


def main(argv: list[str]) -> int:
    if argv[1:] == ["--check"]:
        faults: list[str] = []
        n_vectors = check_golden(faults)
        n_ops = check_examples(faults)
        for fault in faults:
            print(f"FAIL {fault}")
        if faults:
            return 1
        print(f"ok: {n_vectors} golden vectors, {n_ops} ops in {EXAMPLES.relative_to(PROTO.parent)}")
        return 0
    if argv[1:]:
        print(__doc__)
        return 2
    write_golden()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
