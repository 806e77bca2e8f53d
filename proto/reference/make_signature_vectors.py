"""Golden vectors for signed chain heads (proto/sync-v1.md §3.6), made with an
implementation independent of Sidak's (the `cryptography` package's Ed25519).

    python3 proto/reference/make_signature_vectors.py > proto/golden/signature-vectors.json

Each vector: a 32-byte seed, the public key it gives, a head (origin, seq, hash), the
exact message bytes signed and the signature. Ed25519 is deterministic, so any correct
implementation reproduces every byte.
"""

import hashlib
import json
import uuid

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

DOMAIN = b"sidak-head-v1"


def message(origin: uuid.UUID, seq: int, head_hash: bytes) -> bytes:
    return DOMAIN + b"\x00" + origin.bytes + seq.to_bytes(8, "big") + head_hash


def vector(name: str, seed: bytes, origin: str, seq: int, head_hash: bytes) -> dict:
    key = Ed25519PrivateKey.from_private_bytes(seed)
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    o = uuid.UUID(origin)
    m = message(o, seq, head_hash)
    return {
        "name": name,
        "seed": seed.hex(),
        "public_key": public.hex(),
        "head": {"origin": str(o), "seq": seq, "hash": head_hash.hex()},
        "message": m.hex(),
        "signature": key.sign(m).hex(),
    }


def main() -> None:
    vectors = [
        vector("first op of a device", bytes(range(32)), "01900000-0000-7000-8000-000000000001", 1,
               hashlib.sha256(b"op 1").digest()),
        vector("a day's head", hashlib.sha256(b"device seed").digest(), "0192f3a1-7b2c-7d4e-9f00-00000000abcd", 4213,
               hashlib.sha256(b"op 4213").digest()),
        vector("a server origin, seq beyond 2^32", hashlib.sha256(b"server seed").digest(),
               "0192f3a1-0000-7000-8000-0000000000ff", 2**33 + 5, bytes(32)),
    ]
    print(json.dumps({"scheme": "ed25519, message = 'sidak-head-v1' 0x00 origin(16) seq(u64 BE) hash(32)",
                      "vectors": vectors}, indent=2))


if __name__ == "__main__":
    main()
