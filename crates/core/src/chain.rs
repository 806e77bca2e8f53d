//! Hash chains per origin: admitting the next op, and verifying a whole set of ops
//! with a report that names every gap, fork, altered op and broken link.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::hash::Sha256Digest;
use crate::ids::OriginId;
use crate::op::{Op, OpFormError};

/// The verified end of an origin's chain on some tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    /// The highest seq held with all of 1..=seq present and linked.
    pub seq: u64,
    /// The hash of that op (zero when seq is 0).
    pub hash: Sha256Digest,
}

impl ChainHead {
    /// An origin of which nothing is held.
    pub const EMPTY: ChainHead = ChainHead { seq: 0, hash: Sha256Digest::ZERO };
}

/// What to do with an incoming op, given what the tier already holds of its origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// The next op of the chain: store it.
    Append,
    /// Already held, byte for byte: acknowledge, change nothing.
    Duplicate,
    /// Same (origin, seq) as a held op but different content: refuse and report.
    Altered {
        /// The hash held.
        held: Sha256Digest,
    },
    /// Beyond the end of the chain: the ops in between must come first.
    Gap {
        /// The seq the tier needs next.
        expected: u64,
    },
    /// `prev` is not the hash of the op before it.
    BrokenLink {
        /// What `prev` should be.
        expected: Sha256Digest,
    },
    /// The op is malformed (see the form error).
    Malformed(OpFormError),
}

/// Decides about `op` given the origin's head and, when `op.seq <= head.seq`, the hash
/// held at that seq.
pub fn admit(head: ChainHead, held_at_seq: Option<Sha256Digest>, op: &Op) -> Admission {
    if let Err(e) = op.check_form() {
        return Admission::Malformed(e);
    }
    if op.seq <= head.seq {
        return match held_at_seq {
            Some(h) if h == op.hash => Admission::Duplicate,
            Some(h) => Admission::Altered { held: h },
            // The caller could not find a held op below its own head: treat as altered
            // rather than overwrite anything.
            None => Admission::Altered { held: Sha256Digest::ZERO },
        };
    }
    if op.seq > head.seq + 1 {
        return Admission::Gap { expected: head.seq + 1 };
    }
    if op.prev != head.hash {
        return Admission::BrokenLink { expected: head.hash };
    }
    Admission::Append
}

/// A fault found by [`verify_chains`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "snake_case")]
pub enum ChainFault {
    /// Ops `from..=to` are missing.
    Gap {
        /// Origin.
        origin: OriginId,
        /// First missing seq.
        from: u64,
        /// Last missing seq.
        to: u64,
    },
    /// Two different ops claim the same (origin, seq).
    Fork {
        /// Origin.
        origin: OriginId,
        /// The seq.
        seq: u64,
    },
    /// The op's content does not hash to its `hash`.
    Altered {
        /// Origin.
        origin: OriginId,
        /// The seq.
        seq: u64,
    },
    /// The op's `prev` is not the hash of the op before it.
    BrokenLink {
        /// Origin.
        origin: OriginId,
        /// The seq.
        seq: u64,
    },
}

/// The outcome of verifying a set of ops.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainReport {
    /// Per origin: the verified head (contiguous from 1, every link and hash checked).
    pub heads: BTreeMap<OriginId, ChainHead>,
    /// Every fault, ordered by origin and seq.
    pub faults: Vec<ChainFault>,
}

impl ChainReport {
    /// True when no fault was found.
    pub fn is_clean(&self) -> bool {
        self.faults.is_empty()
    }
}

/// Verifies every origin's chain in a set of ops (any order, duplicates allowed).
pub fn verify_chains<'a>(ops: impl IntoIterator<Item = &'a Op>) -> ChainReport {
    let mut by_origin: BTreeMap<OriginId, BTreeMap<u64, Vec<&Op>>> = BTreeMap::new();
    for op in ops {
        let slot = by_origin.entry(op.origin).or_default().entry(op.seq).or_default();
        if !slot.contains(&op) {
            slot.push(op);
        }
    }
    let mut report = ChainReport::default();
    for (origin, chain) in by_origin {
        let mut head = ChainHead::EMPTY;
        let mut contiguous = true;
        let mut expected_seq = 1u64;
        let mut prev_hash = Some(Sha256Digest::ZERO);
        for (&seq, versions) in &chain {
            if seq == 0 {
                report.faults.push(ChainFault::Altered { origin, seq });
                contiguous = false;
                continue;
            }
            if seq > expected_seq {
                report.faults.push(ChainFault::Gap { origin, from: expected_seq, to: seq - 1 });
                contiguous = false;
                prev_hash = None;
            }
            expected_seq = seq + 1;
            if versions.len() > 1 {
                report.faults.push(ChainFault::Fork { origin, seq });
                contiguous = false;
                prev_hash = None;
                continue;
            }
            let op = versions[0];
            let content_ok = op.compute_hash() == op.hash;
            if !content_ok {
                report.faults.push(ChainFault::Altered { origin, seq });
            }
            let link_ok = prev_hash.is_none_or(|p| p == op.prev);
            if !link_ok {
                report.faults.push(ChainFault::BrokenLink { origin, seq });
            }
            if !(content_ok && link_ok) {
                contiguous = false;
            }
            if contiguous {
                head = ChainHead { seq, hash: op.hash };
            }
            prev_hash = Some(op.hash);
        }
        report.heads.insert(origin, head);
    }
    report
}
