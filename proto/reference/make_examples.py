#!/usr/bin/env python3
"""Generates the golden examples in proto/examples/ from one consistent story.

One regional server (Jawa Barat) registers an institution, a unit, a product and an
assignment; a device registers itself, records a covert visit with answers, evidence,
a note and a service user's questionnaire, and later revises an answer and submits;
a second device's ops reach the centre through the region, two of them quarantined.

Every op is built with sidak_op.make_op, so hashes and prev links are right by
construction; `sidak_op.py --check` verifies them independently of this script.

    python3 proto/reference/make_examples.py

proto/examples/ is generated: this script deletes every *.json there and writes the
story afresh, so change the story here, not the files. The instrument-list example
carries the real digests of crates/core/instruments/*.json; rerun after editing one.
"""

from __future__ import annotations

import hashlib
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sidak_op  # noqa: E402

PROTO = Path(__file__).resolve().parent.parent
EXAMPLES = PROTO / "examples"
INSTRUMENTS = PROTO.parent / "crates" / "core" / "instruments"

ZERO = sidak_op.ZERO_HASH
INSTRUMENT = {"id": "penilaian-2023", "version": 1}


def ms(text: str) -> int:
    """Milliseconds since 1970 of an ISO time."""
    return round(datetime.fromisoformat(text).astimezone(timezone.utc).timestamp() * 1000)


def uuid7(at_ms: int, label: str) -> str:
    """A UUID v7 for time `at_ms` with deterministic 'random' bits taken from `label`."""
    rand = bytearray(hashlib.sha256(label.encode()).digest()[:10])
    rand[0] = 0x70 | (rand[0] & 0x0F)
    rand[2] = 0x80 | (rand[2] & 0x3F)
    raw = at_ms.to_bytes(6, "big") + bytes(rand)
    h = raw.hex()
    return f"{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def store_id(label: str) -> str:
    return uuid7(ms("2024-05-20T03:00:00+00:00"), label)


# --- identities ------------------------------------------------------------------------

T_SR = ms("2024-06-01T08:00:00+07:00")
T_REG = ms("2024-06-03T09:00:00+07:00")
T_ASSIGN = ms("2024-06-10T10:00:00+07:00")
T_D1 = ms("2024-06-14T08:30:00+07:00")
T_VISIT = ms("2024-06-18T09:05:00+07:00")
T_EDIT = ms("2024-06-18T16:40:00+07:00")
T_D2 = ms("2024-06-15T07:45:00+07:00")
T_VISIT2 = ms("2024-06-19T10:15:00+07:00")

STORE_R = store_id("store jawa-barat")
STORE_C = store_id("store pusat")
SR = uuid7(T_SR, "origin regional server jawa-barat")
SC = uuid7(ms("2024-05-20T09:00:00+07:00"), "origin central server")
D1 = uuid7(T_D1, "origin device ast-jabar-017")
D2 = uuid7(T_D2, "origin device ast-jabar-022")

I1 = uuid7(T_REG, "institution kota-bandung")
U1 = uuid7(T_REG + 60_000, "unit dpmptsp kota bandung")
P1 = uuid7(T_REG + 120_000, "product pbg")
U2 = uuid7(ms("2024-06-19T08:00:00+07:00"), "unit disdukcapil kota bandung")
A1 = uuid7(T_ASSIGN, "assignment a1")
V1 = uuid7(T_VISIT, "visit v1")
E1 = uuid7(T_VISIT + 300_000, "evidence e1")
N1 = uuid7(T_VISIT + 420_000, "note n1")
R1 = uuid7(T_VISIT + 1_500_000, "respondent r1")
V2 = uuid7(T_VISIT2, "visit v2")

# The evidence file: a stand-in for a JPEG, fully determined so its digest is real.
EVIDENCE_SIZE = 2_483_117


def evidence_bytes() -> bytes:
    block = b"".join(hashlib.sha256(b"sidak example photo E1 %d" % i).digest() for i in range(2048))
    return (block * (EVIDENCE_SIZE // len(block) + 1))[:EVIDENCE_SIZE]


EVIDENCE_SHA = hashlib.sha256(evidence_bytes()).hexdigest()


# --- the op logs ----------------------------------------------------------------------


class Log:
    """One origin's chain, with its hybrid logical clock."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.ops: list[dict] = []
        self.hlc = (0, 0)

    def add(self, wall: int, kind: str, eid: str, field: str, value, parent=None) -> dict:
        self.hlc = (wall, 0) if wall > self.hlc[0] else (self.hlc[0], self.hlc[1] + 1)
        prev = self.ops[-1]["hash"] if self.ops else ZERO
        op = sidak_op.make_op(self.origin, len(self.ops) + 1, self.hlc, wall, kind, eid, field, value, parent, prev)
        self.ops.append(op)
        return op

    def seq(self, n: int) -> dict:
        return self.ops[n - 1]

    def head(self, n: int) -> dict:
        return {"seq": n, "hash": self.ops[n - 1]["hash"] if n else ZERO}


def regional_log() -> Log:
    log = Log(SR)
    t = T_SR
    log.add(t, "device", SR, "role", "server")
    log.add(t, "device", SR, "region", "jawa-barat")
    log.add(t + 1, "device", SR, "label", "Sidak Perwakilan Jawa Barat")
    t = T_REG
    log.add(t, "institution", I1, "code", "kota-bandung")
    log.add(t, "institution", I1, "name", "Pemerintah Kota Bandung")
    log.add(t, "institution", I1, "type", "kota")
    log.add(t, "institution", I1, "region", "jawa-barat")
    t += 60_000
    log.add(t, "unit", U1, "institution", I1)
    log.add(t, "unit", U1, "code", "dpmptsp-kota-bandung")
    log.add(t, "unit", U1, "name", "Dinas Penanaman Modal dan Pelayanan Terpadu Satu Pintu Kota Bandung")
    log.add(t, "unit", U1, "type", "dpmptsp")
    t += 60_000
    log.add(t, "product", P1, "unit", U1)
    log.add(t, "product", P1, "code", "pbg")
    log.add(t, "product", P1, "name", "Persetujuan Bangunan Gedung (PBG)")
    t = T_ASSIGN
    log.add(t, "assignment", A1, "assessor", "ast-jabar-017")
    log.add(t, "assignment", A1, "institution", I1)
    log.add(t, "assignment", A1, "unit", U1)
    log.add(t, "assignment", A1, "products", [P1])
    log.add(t, "assignment", A1, "instrument", INSTRUMENT)
    log.add(t, "assignment", A1, "mode", "covert")
    log.add(t, "assignment", A1, "due", ms("2024-06-28T23:59:59.999+07:00"))
    log.add(t, "assignment", A1, "status", "active")
    return log


def device_log() -> Log:
    log = Log(D1)
    t = T_D1
    log.add(t, "device", D1, "assessor", "ast-jabar-017")  # 1
    log.add(t, "device", D1, "region", "jawa-barat")  # 2
    log.add(t, "device", D1, "role", "device")  # 3, as the field client writes it
    t = T_VISIT
    log.add(t, "visit", V1, "assignment", A1)  # 4
    log.add(t, "visit", V1, "institution", I1)  # 5
    log.add(t, "visit", V1, "unit", U1)  # 6
    log.add(t, "visit", V1, "product", P1)  # 7
    log.add(t, "visit", V1, "instrument", INSTRUMENT)  # 8
    log.add(t, "visit", V1, "mode", "covert")  # 9
    log.add(t, "visit", V1, "location", "own_office")  # 10
    log.add(t, "visit", V1, "started_at", T_VISIT)  # 11
    log.add(t, "visit", V1, "status", "draft")  # 12
    log.add(t + 240_000, "visit", V1, "answer.proses.persyaratan", 2)  # 13
    log.add(t + 252_000, "visit", V1, "answer.proses.prosedur", 3)  # 14
    log.add(t + 261_500, "visit", V1, "answer.proses.jangka-waktu", 2)  # 15
    te = T_VISIT + 300_000
    log.add(te, "evidence", E1, "visit", V1)  # 16
    log.add(te, "evidence", E1, "indicator", "proses.persyaratan")  # 17
    log.add(te, "evidence", E1, "sha256", EVIDENCE_SHA)  # 18
    log.add(te, "evidence", E1, "media_type", "image/jpeg")  # 19
    log.add(te, "evidence", E1, "size", EVIDENCE_SIZE)  # 20
    log.add(te, "evidence", E1, "captured_at", T_VISIT + 287_000)  # 21
    tn = T_VISIT + 420_000
    log.add(tn, "note", N1, "visit", V1)  # 22
    log.add(tn, "note", N1, "indicator", "proses.persyaratan")  # 23
    log.add(
        tn + 35_000,
        "note",
        N1,
        "text",
        "Daftar persyaratan PBG ditempel di loket 3, tetapi tidak ada di situs web "
        "dinas. Petugas: \"cek saja di papan\".",
    )  # 24
    log.add(tn + 35_000, "note", N1, "created_at", tn)  # 25
    tr = T_VISIT + 1_500_000
    log.add(tr, "respondent", R1, "visit", V1)  # 26
    log.add(tr, "respondent", R1, "kind", "service_user")  # 27
    log.add(tr, "respondent", R1, "role", "Pemohon PBG")  # 28
    log.add(tr + 60_000, "respondent", R1, "answer.output.penundaan-berlarut", 3)  # 29
    log.add(tr + 75_000, "respondent", R1, "answer.output.permintaan-imbalan", 3)  # 30
    t = T_EDIT
    # The assessor checks the website again and revises the answer it had written (seq 13).
    log.add(t, "visit", V1, "answer.proses.persyaratan", 3, parent=(D1, 13))  # 31
    log.add(t + 15_000, "visit", V1, "finished_at", T_VISIT + 2_700_000)  # 32
    log.add(t + 16_000, "visit", V1, "status", "submitted", parent=(D1, 12))  # 33
    return log


def second_device_log() -> Log:
    log = Log(D2)
    t = T_D2
    log.add(t, "device", D2, "assessor", "ast-jabar-022")  # 1
    log.add(t, "device", D2, "region", "jawa-barat")  # 2
    t = T_VISIT2
    log.add(t, "visit", V2, "institution", I1)  # 3
    log.add(t, "visit", V2, "unit", U2)  # 4: a unit the centre does not hold yet
    log.add(t, "visit", V2, "instrument", INSTRUMENT)  # 5
    log.add(t, "visit", V2, "mode", "announced")  # 6
    log.add(t, "visit", V2, "location", "mpp")  # 7
    log.add(t, "visit", V2, "started_at", T_VISIT2)  # 8
    log.add(t + 300_000, "visit", V2, "answer.proses.persyaratan", 5)  # 9: out of range 0..3
    log.add(t + 330_000, "visit", V2, "answer.proses.prosedur", 1)  # 10
    return log


SRL = regional_log()
D1L = device_log()
D2L = second_device_log()


# --- messages -------------------------------------------------------------------------


def pulled(server_seq: int, received_at: int, op: dict) -> dict:
    return {"server_seq": server_seq, "received_at": received_at, "op": op}


def examples() -> dict[str, object]:
    ex: dict[str, object] = {}

    # Ops on their own.
    ex["op.device-register"] = D1L.seq(1)
    ex["op.answer-revised"] = D1L.seq(31)
    ex["op.evidence-digest"] = D1L.seq(18)

    # Pushes.
    ex["push-request.device-register"] = {"ops": D1L.ops[0:3]}
    ex["push-request.device-visit"] = {"ops": D1L.ops[3:30]}
    ex["push-request.device-edits"] = {"ops": D1L.ops[30:33]}
    ex["push-request.peer-forward"] = {"ops": D2L.ops + D1L.ops[30:33]}

    push_now = ms("2024-06-18T19:02:11+07:00")
    ex["push-response.accepted"] = {
        "origins": [{"origin": D1, "held": D1L.head(30), "stored": 27, "duplicates": 0}],
        "server_hlc": {"ms": push_now, "c": 0},
    }
    ex["push-response.retried"] = {
        "origins": [{"origin": D1, "held": D1L.head(30), "stored": 0, "duplicates": 27}],
        "server_hlc": {"ms": push_now + 41_377, "c": 0},
    }
    ex["push-response.rejected"] = {
        "origins": [
            {
                "origin": D1,
                "held": D1L.head(10),
                "stored": 0,
                "duplicates": 0,
                "rejected": [
                    {"seq": 31, "code": "gap", "message": "this server holds ops 1..10 of this origin; send from seq 11"},
                    {
                        "seq": 32,
                        "code": "blocked",
                        "message": "not processed: an earlier op of this origin in the push was refused",
                    },
                    {
                        "seq": 33,
                        "code": "blocked",
                        "message": "not processed: an earlier op of this origin in the push was refused",
                    },
                ],
            }
        ],
        "server_hlc": {"ms": ms("2024-06-18T19:30:05+07:00"), "c": 0},
    }
    forward_now = ms("2024-06-19T21:00:03+07:00")
    ex["push-response.quarantined"] = {
        "origins": sorted(
            [
                {
                    "origin": D2,
                    "held": D2L.head(10),
                    "stored": 10,
                    "duplicates": 0,
                    "quarantined": [
                        {
                            "seq": 4,
                            "code": "missing_dependency",
                            "message": f"`unit` refers to unit/{U2}, which this tier does not hold (yet)",
                        },
                        {
                            "seq": 9,
                            "code": "bad_answer",
                            "message": "indicator `proses.persyaratan` takes a whole number from 0 to 3, found 5",
                        },
                    ],
                },
                {"origin": D1, "held": D1L.head(33), "stored": 3, "duplicates": 0},
            ],
            key=lambda o: o["origin"],
        ),
        "server_hlc": {"ms": forward_now, "c": 2},
    }

    # Pulls: an assessor's first pull from the region, two pages of limit 14.
    reg_recv = [T_SR + 40, T_SR + 41, T_SR + 43] + [T_REG + 1_000 + i * 37 for i in range(11)]
    page1 = [pulled(i + 1, reg_recv[i], SRL.seq(i + 1)) for i in range(14)]
    ex["pull-response.first-page"] = {
        "ops": page1,
        "cursor": f"{STORE_R.replace('-', '')}.14",
        "more": True,
        "server_hlc": {"ms": ms("2024-06-14T08:31:02+07:00"), "c": 0},
    }
    # server_seq 23..40 hold other assessors' ops (not in this caller's scope); the
    # cursor moves past them.
    page2 = [pulled(15 + i, T_ASSIGN + 900 + i * 11, SRL.seq(15 + i)) for i in range(8)]
    page2 += [pulled(41 + i, T_D1 + 1_750, D1L.seq(1 + i)) for i in range(3)]
    ex["pull-response.last-page"] = {
        "ops": page2,
        "cursor": f"{STORE_R.replace('-', '')}.45",
        "more": False,
        "server_hlc": {"ms": ms("2024-06-14T08:31:03+07:00"), "c": 0},
    }
    ex["pull-response.up-to-date"] = {
        "ops": [],
        "cursor": f"{STORE_R.replace('-', '')}.45",
        "more": False,
        "server_hlc": {"ms": ms("2024-06-14T08:31:04+07:00"), "c": 0},
    }

    # Acknowledgements.
    ex["status-request.device"] = {"origins": [D1]}
    ex["status-request.peer"] = {"origins": sorted([D1, D2])}
    ex["status-response.regional"] = {
        "origins": [{"origin": D1, "held": D1L.head(33), "quarantined": 0, "upstream": D1L.head(30)}]
    }
    ex["status-response.central"] = {
        "origins": sorted(
            [
                {"origin": D1, "held": D1L.head(33), "quarantined": 0},
                {"origin": D2, "held": D2L.head(10), "quarantined": 2},
            ],
            key=lambda o: o["origin"],
        )
    }
    ex["status-response.unknown-origin"] = {
        "origins": [{"origin": D2, "held": {"seq": 0, "hash": ZERO}, "quarantined": 0}]
    }

    # The regional manifest a supervisor reads at the end of 18 June (the second device
    # has only registered so far).
    ex["manifest.regional"] = {
        "store": STORE_R,
        "origins": sorted(
            [
                {"origin": SR, "seq": 22, "head_hash": SRL.head(22)["hash"], "ops": 22, "quarantined": 0,
                 "visits": 0, "evidence": 0},
                {"origin": D1, "seq": 33, "head_hash": D1L.head(33)["hash"], "ops": 33, "quarantined": 0,
                 "visits": 1, "evidence": 1},
                {"origin": D2, "seq": 2, "head_hash": D2L.head(2)["hash"], "ops": 2, "quarantined": 0,
                 "visits": 0, "evidence": 0},
            ],
            key=lambda o: o["origin"],
        ),
    }

    # Evidence.
    ex["evidence-begin.photo"] = {"size": EVIDENCE_SIZE, "media_type": "image/jpeg"}
    ex["evidence-status.new"] = {"sha256": EVIDENCE_SHA, "size": EVIDENCE_SIZE, "received": 0, "complete": False}
    ex["evidence-status.partial"] = {
        "sha256": EVIDENCE_SHA, "size": EVIDENCE_SIZE, "received": 2 * 1024 * 1024, "complete": False,
    }
    ex["evidence-status.complete"] = {
        "sha256": EVIDENCE_SHA, "size": EVIDENCE_SIZE, "received": EVIDENCE_SIZE, "complete": True,
    }

    # Instruments, identity, assignments.
    ex["instrument-list.builtin"] = {"instruments": instrument_summaries()}
    ex["whoami.assessor"] = {
        "role": "assessor", "region": "jawa-barat", "assessor": "ast-jabar-017",
        "store": STORE_R, "server_origin": SR, "protocol": 1,
    }
    ex["whoami.supervisor"] = {
        "role": "supervisor", "region": "jawa-barat", "store": STORE_R, "server_origin": SR, "protocol": 1,
    }
    ex["whoami.peer"] = {"role": "peer", "region": "jawa-barat", "store": STORE_C, "server_origin": SC, "protocol": 1}
    ex["whoami.admin"] = {"role": "admin", "store": STORE_C, "server_origin": SC, "protocol": 1}
    ex["assignment-list.assessor"] = {
        "assignments": [
            {
                "id": A1,
                "assessor": "ast-jabar-017",
                "institution": {"id": I1, "code": "kota-bandung", "name": "Pemerintah Kota Bandung",
                                "type": "kota", "region": "jawa-barat"},
                "unit": {"id": U1, "code": "dpmptsp-kota-bandung",
                         "name": "Dinas Penanaman Modal dan Pelayanan Terpadu Satu Pintu Kota Bandung",
                         "type": "dpmptsp"},
                "products": [{"id": P1, "code": "pbg", "name": "Persetujuan Bangunan Gedung (PBG)"}],
                "instrument": INSTRUMENT,
                "mode": "covert",
                "due": ms("2024-06-28T23:59:59.999+07:00"),
                "status": "active",
            }
        ]
    }
    ex["assignment-list.empty"] = {"assignments": []}

    # Errors.
    ex["error.reset-required"] = {
        "code": "reset_required",
        "message": "this server does not know cursor position 4812 (it was restored from a backup); "
        "discard the cursor and pull again from the start",
    }
    ex["error.origin-forbidden"] = {
        "code": "origin_forbidden",
        "message": f"origin {D2} registers assessor `ast-jabar-022`, but this token is bound to `ast-jabar-017`",
    }
    ex["error.too-many-ops"] = {"code": "too_many_ops", "message": "a push holds at most 1000 ops; this one holds 1200"}
    ex["error.internal"] = {"code": "internal", "message": "internal error"}
    return ex


def instrument_summaries() -> list[dict]:
    out = []
    for path in sorted(INSTRUMENTS.glob("*.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        digest = hashlib.sha256(sidak_op.canonical_json(document).encode("utf-8")).hexdigest()
        out.append({"id": document["id"], "version": document["version"], "title": document["title"],
                    "digest": digest})
    return sorted(out, key=lambda s: (s["id"], s["version"]))


def main() -> int:
    EXAMPLES.mkdir(parents=True, exist_ok=True)
    for old in EXAMPLES.glob("*.json"):
        old.unlink()
    for name, doc in examples().items():
        path = EXAMPLES / f"{name}.json"
        path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(examples())} examples to {EXAMPLES.relative_to(PROTO.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
