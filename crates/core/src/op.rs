//! Ops: every change anywhere is one op on one field of one record, appended to its
//! origin's hash chain.
//!
//! The hash of an op is SHA-256 over its canonical encoding (`proto/sync-v1.md`,
//! "Canonical op encoding"), which covers every field but `hash` itself:
//!
//! ```text
//! "sidak-op-v1"                          11 bytes, ASCII
//! origin                                 16 bytes (UUID)
//! seq                                    u64 big-endian
//! hlc.ms, hlc.c                          u64, u32 big-endian
//! wall                                   i64 big-endian (device wall time, ms)
//! entity.kind                            u8 length + UTF-8
//! entity.id                              16 bytes
//! field                                  u16 length + UTF-8
//! value                                  u32 length + canonical JSON, UTF-8
//! parent                                 0x00, or 0x01 + origin (16) + seq (u64)
//! prev                                   32 bytes (all zero for seq 1)
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::canonical::canonical_json;
use crate::hash::Sha256Digest;
use crate::hlc::Hlc;
use crate::ids::OriginId;
use crate::records::EntityRef;

/// Identifies an op everywhere: its origin and that origin's sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpRef {
    /// The origin.
    pub origin: OriginId,
    /// Its sequence number (1, 2, 3, … without gaps).
    pub seq: u64,
}

impl fmt::Display for OpRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.origin, self.seq)
    }
}

/// One change to one field of one record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Op {
    /// The device or server that made it.
    pub origin: OriginId,
    /// The origin's own counter: 1, 2, 3, … with no gaps.
    pub seq: u64,
    /// Hybrid logical clock stamp.
    pub hlc: Hlc,
    /// The author's wall clock when it was written (ms since 1970).
    pub wall: i64,
    /// The record it changes.
    pub entity: EntityRef,
    /// The field it sets.
    pub field: String,
    /// The new value.
    pub value: Value,
    /// The version of this field the author had seen (`None`: none).
    pub parent: Option<OpRef>,
    /// Hash of the origin's previous op (zero for seq 1).
    pub prev: Sha256Digest,
    /// Hash of this op's canonical encoding.
    pub hash: Sha256Digest,
}

/// Limits every op must keep (also in proto/sync-v1.md).
pub mod limits {
    /// Longest field name, bytes.
    pub const FIELD_BYTES: usize = 128;
    /// Largest value, bytes of canonical JSON.
    pub const VALUE_BYTES: usize = 64 * 1024;
    /// Deepest nesting of a value.
    pub const VALUE_DEPTH: usize = 8;
}

/// An op that is malformed regardless of any state.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpFormError {
    /// seq must start at 1.
    #[error("seq must be 1 or more")]
    ZeroSeq,
    /// Field name empty, too long or with odd characters.
    #[error("field name `{0}` is not allowed (1–128 bytes of lowercase letters, digits, `_`, `-`, `.`)")]
    BadField(String),
    /// Value too large or too deep.
    #[error(
        "value is too large or too deeply nested (at most {} bytes, depth {})",
        limits::VALUE_BYTES,
        limits::VALUE_DEPTH
    )]
    ValueTooLarge,
    /// Non-integer numbers are not allowed in values (write decimals as strings).
    #[error("value holds a non-integer number; write decimals as strings (\"2.5\")")]
    FloatInValue,
    /// The parent of an op must be an earlier op of the same origin or another origin.
    #[error("parent {0} is the op itself")]
    SelfParent(OpRef),
    /// `hash` is not the hash of the op.
    #[error("hash does not match the op's content (expected {expected}, found {found})")]
    HashMismatch {
        /// What the content hashes to.
        expected: Sha256Digest,
        /// What the op carries.
        found: Sha256Digest,
    },
}

impl Op {
    /// This op's identity.
    pub fn op_ref(&self) -> OpRef {
        OpRef { origin: self.origin, seq: self.seq }
    }

    /// The canonical encoding that the hash covers.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        encode(
            self.origin,
            self.seq,
            self.hlc,
            self.wall,
            &self.entity,
            &self.field,
            &self.value,
            self.parent,
            self.prev,
        )
    }

    /// The hash this op should carry.
    pub fn compute_hash(&self) -> Sha256Digest {
        Sha256Digest::of(&self.canonical_bytes())
    }

    /// Builds an op and computes its hash.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        origin: OriginId,
        seq: u64,
        hlc: Hlc,
        wall: i64,
        entity: EntityRef,
        field: impl Into<String>,
        value: Value,
        parent: Option<OpRef>,
        prev: Sha256Digest,
    ) -> Op {
        let field = field.into();
        let hash = Sha256Digest::of(&encode(origin, seq, hlc, wall, &entity, &field, &value, parent, prev));
        Op { origin, seq, hlc, wall, entity, field, value, parent, prev, hash }
    }

    /// Checks what can be checked of the op alone: form, limits and its own hash.
    pub fn check_form(&self) -> Result<(), OpFormError> {
        if self.seq == 0 {
            return Err(OpFormError::ZeroSeq);
        }
        let field_ok = !self.field.is_empty()
            && self.field.len() <= limits::FIELD_BYTES
            && self
                .field
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.'));
        if !field_ok {
            return Err(OpFormError::BadField(self.field.chars().take(80).collect()));
        }
        check_value(&self.value, 0)?;
        if canonical_json(&self.value).len() > limits::VALUE_BYTES {
            return Err(OpFormError::ValueTooLarge);
        }
        if self.parent == Some(self.op_ref()) {
            return Err(OpFormError::SelfParent(self.op_ref()));
        }
        let expected = self.compute_hash();
        if expected != self.hash {
            return Err(OpFormError::HashMismatch { expected, found: self.hash });
        }
        Ok(())
    }
}

fn check_value(value: &Value, depth: usize) -> Result<(), OpFormError> {
    if depth > limits::VALUE_DEPTH {
        return Err(OpFormError::ValueTooLarge);
    }
    match value {
        Value::Number(n) if !(n.is_i64() || n.is_u64()) => Err(OpFormError::FloatInValue),
        Value::Array(items) => items.iter().try_for_each(|v| check_value(v, depth + 1)),
        Value::Object(map) => map.values().try_for_each(|v| check_value(v, depth + 1)),
        _ => Ok(()),
    }
}

#[allow(clippy::too_many_arguments)]
fn encode(
    origin: OriginId,
    seq: u64,
    hlc: Hlc,
    wall: i64,
    entity: &EntityRef,
    field: &str,
    value: &Value,
    parent: Option<OpRef>,
    prev: Sha256Digest,
) -> Vec<u8> {
    let value = canonical_json(value);
    let kind = entity.kind.name();
    let mut out = Vec::with_capacity(128 + field.len() + value.len());
    out.extend_from_slice(b"sidak-op-v1");
    out.extend_from_slice(origin.0.as_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&hlc.ms.to_be_bytes());
    out.extend_from_slice(&hlc.c.to_be_bytes());
    out.extend_from_slice(&wall.to_be_bytes());
    out.push(kind.len() as u8);
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(entity.id.0.as_bytes());
    out.extend_from_slice(&(field.len() as u16).to_be_bytes());
    out.extend_from_slice(field.as_bytes());
    out.extend_from_slice(&(value.len() as u32).to_be_bytes());
    out.extend_from_slice(value.as_bytes());
    match parent {
        None => out.push(0),
        Some(p) => {
            out.push(1);
            out.extend_from_slice(p.origin.0.as_bytes());
            out.extend_from_slice(&p.seq.to_be_bytes());
        }
    }
    out.extend_from_slice(&prev.0);
    out
}

/// The order in which ops on the same field win: greatest (hlc, origin, seq) last.
pub fn precedence(op: &Op) -> (Hlc, OriginId, u64) {
    (op.hlc, op.origin, op.seq)
}
