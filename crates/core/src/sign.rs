//! Signed chain heads: every device and every server origin holds an Ed25519 key pair;
//! what it pushes carries its chain head signed, so any tier can prove which origin
//! wrote every op up to that head and that none was altered on the way (each op
//! hashes the one before it, so a head vouches for the whole chain below it).
//!
//! The signed message is the fixed byte string `sidak-head-v1`, a zero byte, the
//! origin's 16 UUID bytes, the seq as 8 big-endian bytes and the 32 bytes of the
//! head's hash (proto/sync-v1.md §3.6; golden vectors in proto/golden/).
//! No randomness here: a key pair is made from 32 seed bytes the caller draws.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signer, Verifier};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::chain::ChainHead;
use crate::hash::Sha256Digest;
use crate::ids::OriginId;

/// The domain separator of a signed chain head.
pub const HEAD_DOMAIN: &[u8] = b"sidak-head-v1";

/// The bytes an origin signs for its chain head.
pub fn head_message(origin: OriginId, head: ChainHead) -> Vec<u8> {
    let mut m = Vec::with_capacity(HEAD_DOMAIN.len() + 1 + 16 + 8 + 32);
    m.extend_from_slice(HEAD_DOMAIN);
    m.push(0);
    m.extend_from_slice(origin.0.as_bytes());
    m.extend_from_slice(&head.seq.to_be_bytes());
    m.extend_from_slice(&head.hash.0);
    m
}

/// An origin's public key (32 bytes, lowercase hex on the wire).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey(pub [u8; 32]);

/// A signature (64 bytes, lowercase hex on the wire).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

/// A key pair. The secret never leaves the origin's store.
pub struct KeyPair {
    key: ed25519_dalek::SigningKey,
}

impl KeyPair {
    /// The key pair of 32 seed bytes (draw them from a secure random source).
    pub fn from_seed(seed: &[u8; 32]) -> KeyPair {
        KeyPair { key: ed25519_dalek::SigningKey::from_bytes(seed) }
    }

    /// The seed, for storing.
    pub fn seed(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.key.verifying_key().to_bytes())
    }

    /// Signs an origin's chain head.
    pub fn sign_head(&self, origin: OriginId, head: ChainHead) -> Signature {
        Signature(self.key.sign(&head_message(origin, head)).to_bytes())
    }
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyPair({:?})", self.public())
    }
}

/// Why a signature was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The public key is not a valid Ed25519 point.
    #[error("the public key is not a valid Ed25519 key")]
    BadKey,
    /// The signature does not verify for this head and key.
    #[error("the signature does not verify for this chain head and key")]
    Invalid,
}

impl PublicKey {
    /// Verifies a signed chain head (strictly: no malleable signatures).
    pub fn verify_head(&self, origin: OriginId, head: ChainHead, signature: &Signature) -> Result<(), SignatureError> {
        let key = ed25519_dalek::VerifyingKey::from_bytes(&self.0).map_err(|_| SignatureError::BadKey)?;
        let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
        key.verify_strict(&head_message(origin, head), &sig).map_err(|_| SignatureError::Invalid)?;
        // `verify` and `verify_strict` agree for honest signatures; keep both honest.
        key.verify(&head_message(origin, head), &sig).map_err(|_| SignatureError::Invalid)
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        crate::hash::lower_hex(&self.0)
    }
}

impl Signature {
    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        crate::hash::lower_hex(&self.0)
    }
}

fn parse_hex<const N: usize>(s: &str, what: &str) -> Result<[u8; N], String> {
    if s.len() != 2 * N || !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(format!("{what} must be {} lowercase hex digits", 2 * N));
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).map_err(|e| format!("{what}: {e}"))?;
    Ok(out)
}

impl FromStr for PublicKey {
    type Err = String;
    fn from_str(s: &str) -> Result<PublicKey, String> {
        parse_hex::<32>(s, "a public key").map(PublicKey)
    }
}

impl FromStr for Signature {
    type Err = String;
    fn from_str(s: &str) -> Result<Signature, String> {
        parse_hex::<64>(s, "a signature").map(Signature)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", self.to_hex())
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<PublicKey, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Signature, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// A signed chain head, as a push carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedHead {
    /// The origin.
    pub origin: OriginId,
    /// The head's seq.
    pub seq: u64,
    /// The hash of the op at `seq`.
    pub hash: Sha256Digest,
    /// The origin's signature of [`head_message`].
    pub signature: Signature,
}

impl SignedHead {
    /// Signs a head.
    pub fn sign(keys: &KeyPair, origin: OriginId, head: ChainHead) -> SignedHead {
        SignedHead { origin, seq: head.seq, hash: head.hash, signature: keys.sign_head(origin, head) }
    }

    /// The head it vouches for.
    pub fn head(&self) -> ChainHead {
        ChainHead { seq: self.seq, hash: self.hash }
    }

    /// Verifies it with the origin's public key.
    pub fn verify(&self, key: &PublicKey) -> Result<(), SignatureError> {
        key.verify_head(self.origin, self.head(), &self.signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> OriginId {
        OriginId(uuid::Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001))
    }

    #[test]
    fn a_signed_head_verifies_and_nothing_else_does() {
        let keys = KeyPair::from_seed(&[7u8; 32]);
        let head = ChainHead { seq: 41, hash: Sha256Digest([9u8; 32]) };
        let signed = SignedHead::sign(&keys, origin(), head);
        assert_eq!(signed.verify(&keys.public()), Ok(()));
        // Another key, another seq, another hash, another origin, a flipped bit.
        let other = KeyPair::from_seed(&[8u8; 32]);
        assert_eq!(signed.verify(&other.public()), Err(SignatureError::Invalid));
        for tampered in [
            SignedHead { seq: 42, ..signed.clone() },
            SignedHead { hash: Sha256Digest([1u8; 32]), ..signed.clone() },
            SignedHead { origin: OriginId(uuid::Uuid::from_u128(5)), ..signed },
        ] {
            assert_eq!(tampered.verify(&keys.public()), Err(SignatureError::Invalid), "{tampered:?}");
        }
        for bit in 0..512 {
            let mut s = signed.clone();
            s.signature.0[bit / 8] ^= 1 << (bit % 8);
            assert!(s.verify(&keys.public()).is_err(), "bit {bit}");
        }
        // Round trip through JSON.
        let json = serde_json::to_string(&signed).unwrap();
        assert_eq!(serde_json::from_str::<SignedHead>(&json).unwrap(), signed);
        assert!(serde_json::from_str::<SignedHead>(&json.replace("\"seq\":41", "\"seq\":41,\"x\":1")).is_err());
        assert!("AB".repeat(32).parse::<PublicKey>().is_err(), "uppercase hex is refused");
    }
}
