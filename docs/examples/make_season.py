#!/usr/bin/env python3
"""Regenerates docs/examples/season-2023.json, the sample season scored by the README.

Deterministic (fixed seed). The institutions are fictional; answers follow the shape
of penilaian-2023: 4 officials and 2 complaint officers per unit, 30 service users per
institution, 2 service products per unit observed with photo evidence.
"""
import json
import random
from pathlib import Path

root = Path(__file__).resolve().parents[2]
instrument = json.loads((root / "crates/core/instruments/penilaian-2023.json").read_text())
indicators = [i for d in instrument["dimensions"] for v in d["variables"] for i in v["indicators"]]
rng = random.Random(2023)
PHOTO = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

def value(quality):
    """A 0–3 answer around `quality` (0..1)."""
    return max(0, min(3, round(quality * 3 + rng.uniform(-0.9, 0.9))))

def answers(level, source_kinds, quality):
    out = {}
    for i in indicators:
        if i["level"] != level or i["source"] not in source_kinds:
            continue
        v = value(quality)
        out[i["id"]] = {"value": v, "evidence": [PHOTO]} if i.get("evidence_required") else v
    return out

def respondents(kind, source, n, quality, prefix):
    return [{"id": f"{prefix}-{kind}-{k + 1}", "kind": kind, "answers": answers_for(source, quality)} for k in range(n)]

def answers_for(source, quality):
    return {i["id"]: value(quality) for i in indicators if i["source"] == source}

UNITS = [("disdukcapil", "Dinas Kependudukan dan Pencatatan Sipil", [("ktp-el", "KTP elektronik", "mpp"), ("akta-lahir", "Akta kelahiran", "own_office")]),
         ("dpmptsp", "Dinas Penanaman Modal dan PTSP", [("pbg", "Persetujuan bangunan gedung", "mpp"), ("nib", "Nomor induk berusaha", "online")]),
         ("dinkes", "Dinas Kesehatan", [("sik", "Surat izin praktik", "own_office"), ("pirt", "Sertifikat PIRT", "own_office")])]

def institution(code, name, kind, region, quality, deduction=None, drop=None):
    units = []
    for ucode, uname, products in UNITS:
        uid = f"{code}.{ucode}"
        unit = {
            "id": uid, "name": uname, "type": ucode,
            "answers": answers("unit", {"observation", "document_check"}, quality),
            "respondents": respondents("official", "official_interview", 4, quality, uid)
                + respondents("complaint_officer", "complaint_officer_interview", 2, quality, uid),
            "products": [{"id": f"{uid}.{pcode}", "name": pname, "location": loc,
                          "answers": answers("product", {"observation", "document_check"}, quality)}
                         for pcode, pname, loc in products],
        }
        units.append(unit)
    inst = {"id": code, "name": name, "type": kind, "region": region,
            "respondents": respondents("service_user", "service_user_questionnaire", 30, quality, code),
            "units": units}
    if deduction:
        inst["deductions"] = [deduction]
    if drop:
        del units[drop[0]]["products"][drop[1]]["answers"][drop[2]]
    return inst

season = {
    "format": "sidak-season/1",
    "season": "2023",
    "instrument": "penilaian-2023",
    "institutions": [
        institution("kota-sukamaju", "Pemerintah Kota Sukamaju", "kota", "jawa-tengah", 0.93),
        institution("kab-tanjung-harapan", "Pemerintah Kabupaten Tanjung Harapan", "kabupaten", "sulawesi-barat", 0.62,
                    deduction={"id": "lahp-tidak-ditindaklanjuti", "points": "2.5",
                               "reason": "Tindakan korektif LAHP 2022 atas Disdukcapil belum dilaksanakan"}),
        institution("kab-lembah-hijau", "Pemerintah Kabupaten Lembah Hijau", "kabupaten", "jawa-tengah", 0.8,
                    drop=(1, 0, "proses.biaya-tarif")),
    ],
}
(root / "docs/examples/season-2023.json").write_text(json.dumps(season, indent=1, ensure_ascii=False) + "\n")
