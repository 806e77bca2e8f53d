//! Sync planning as pure, sans-IO functions. The field client and the servers only
//! carry these plans out: what to push next, what a push answer means, what to apply
//! from a pulled page, which evidence chunk to send, how long to wait before a retry.

use crate::chain::ChainHead;
use crate::hash::Sha256Digest;
use crate::ids::OriginId;
use crate::op::{Op, OpRef};
use crate::wire::{ChainRejectCode, Cursor, OriginPushResult, PullResponse};

/// Which of an origin's ops to send next: `from..=to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PushPlan {
    /// First seq to send.
    pub from: u64,
    /// Last seq to send.
    pub to: u64,
}

/// The next batch of an origin's ops: everything after what the server acknowledged,
/// at most `max_ops`; `None` when the server holds everything.
pub fn plan_push(local_head: u64, acked: u64, max_ops: usize) -> Option<PushPlan> {
    if acked >= local_head || max_ops == 0 {
        return None;
    }
    let from = acked + 1;
    let to = local_head.min(acked.saturating_add(max_ops as u64));
    Some(PushPlan { from, to })
}

/// What the client must do after a push answer for one of its origins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushOutcome {
    /// Record `acked` as the server's head; push again if anything is left.
    Acked {
        /// The new acknowledged seq.
        acked: u64,
        /// True when the server holds less than it acknowledged before (a restored
        /// backup): the client resends from `acked + 1`.
        rewound: bool,
    },
    /// The server holds a different op than ours at some seq, or more ops than we
    /// wrote: the device's log and the server's disagree. Stop and report; never
    /// overwrite either side.
    Diverged {
        /// In words.
        reason: String,
    },
}

/// Interprets the server's answer for one origin, given the local chain.
///
/// `local_hash_at(seq)` returns the hash of our own op at `seq`.
pub fn apply_push_result(
    local_head: u64,
    previous_acked: u64,
    result: &OriginPushResult,
    local_hash_at: impl Fn(u64) -> Option<Sha256Digest>,
) -> PushOutcome {
    // A rejected op that resending cannot fix stops the sync: resending it would loop.
    if let Some(bad) =
        result.rejected.iter().find(|r| !matches!(r.code, ChainRejectCode::Gap | ChainRejectCode::Blocked))
    {
        return PushOutcome::Diverged {
            reason: format!("the server refused op #{} ({:?}): {}", bad.seq, bad.code, bad.message),
        };
    }
    let held = result.held;
    if held.seq > local_head {
        return PushOutcome::Diverged {
            reason: format!("the server holds {} ops of this device but the device wrote only {local_head}", held.seq),
        };
    }
    if held.seq > 0 && local_hash_at(held.seq) != Some(held.hash) {
        return PushOutcome::Diverged {
            reason: format!("the server's op #{} of this device differs from the device's own", held.seq),
        };
    }
    PushOutcome::Acked { acked: held.seq, rewound: held.seq < previous_acked }
}

/// What the client holds of an op it pulled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Held {
    /// Not held: store it.
    No,
    /// Held with the same hash: do not store it again.
    Same,
    /// Held with a different hash: the logs disagree.
    Different(Sha256Digest),
}

/// What to do with one pulled page.
#[derive(Clone, Debug, PartialEq)]
pub struct PullPlan {
    /// Ops not held yet, to store, in the server's order.
    pub store: Vec<Op>,
    /// Ops to apply to the materialised state, in the server's order: every op of the
    /// page that the server applied, whether held already or not (applying is
    /// idempotent; an op the server released from quarantine comes back unflagged).
    /// An op the server holds in quarantine is stored, not applied, as there.
    pub apply: Vec<Op>,
    /// Ops already held.
    pub duplicates: usize,
    /// The cursor to store once `store` and `apply` are durable.
    pub cursor: Cursor,
    /// Whether to pull again.
    pub more: bool,
}

/// Why a pulled page cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PullError {
    /// The page belongs to another store than the cursor: start again from zero.
    #[error("the server's store changed (was {expected}, now {found}): pull again from the start")]
    StoreChanged {
        /// The cursor's store.
        expected: String,
        /// The page's store.
        found: String,
    },
    /// The page is not in order or goes backwards.
    #[error("the server sent a page out of order (server_seq {seq} after {after})")]
    OutOfOrder {
        /// The offending seq.
        seq: u64,
        /// The previous one.
        after: u64,
    },
    /// An op failed its own checks.
    #[error("the server sent a malformed op {op}: {reason}")]
    Malformed {
        /// The op.
        op: OpRef,
        /// Why.
        reason: String,
    },
    /// The server holds a different op under an (origin, seq) we hold.
    #[error("the server's op {op} differs from the one held here")]
    Diverged {
        /// The op.
        op: OpRef,
    },
}

/// Checks a pulled page against the current cursor and what is held.
pub fn plan_pull_page(
    current: Option<Cursor>,
    page: &PullResponse,
    held: impl Fn(&Op) -> Held,
) -> Result<PullPlan, PullError> {
    let mut after = 0;
    if let Some(c) = current {
        if c.store != page.cursor.store {
            return Err(PullError::StoreChanged {
                expected: c.store.to_string(),
                found: page.cursor.store.to_string(),
            });
        }
        after = c.seq;
    }
    let mut store = Vec::new();
    let mut apply = Vec::new();
    let mut duplicates = 0;
    for pulled in &page.ops {
        if pulled.server_seq <= after {
            return Err(PullError::OutOfOrder { seq: pulled.server_seq, after });
        }
        after = pulled.server_seq;
        pulled.op.check_form().map_err(|e| PullError::Malformed { op: pulled.op.op_ref(), reason: e.to_string() })?;
        match held(&pulled.op) {
            Held::No => store.push(pulled.op.clone()),
            Held::Same => duplicates += 1,
            Held::Different(_) => return Err(PullError::Diverged { op: pulled.op.op_ref() }),
        }
        if !pulled.quarantined {
            apply.push(pulled.op.clone());
        }
    }
    if page.cursor.seq < after {
        return Err(PullError::OutOfOrder { seq: page.cursor.seq, after });
    }
    Ok(PullPlan { store, apply, duplicates, cursor: page.cursor, more: page.more })
}

/// The next evidence chunk to send, `(offset, length)`, or `None` when done.
pub fn next_chunk(size: u64, received: u64, chunk_bytes: u64) -> Option<(u64, u64)> {
    (received < size && chunk_bytes > 0).then(|| (received, chunk_bytes.min(size - received)))
}

/// Retry delay: exponential from `base_ms`, capped at `max_ms`, with "full jitter"
/// drawn from `unit` (a random number in 0..1 supplied by the caller).
pub fn backoff_ms(attempt: u32, base_ms: u64, max_ms: u64, unit: f64) -> u64 {
    let ceiling = base_ms.saturating_mul(1u64 << attempt.min(20)).min(max_ms);
    let unit = unit.clamp(0.0, 1.0);
    // Never zero, so a retry never spins.
    ((ceiling as f64 * unit) as u64).max(base_ms.min(ceiling) / 2).max(1)
}

/// What a device knows of one origin for its status page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AckState {
    /// The origin.
    pub origin: OriginId,
    /// Ops written.
    pub head: u64,
    /// Held by the server synced with.
    pub server: ChainHead,
    /// Held by the tier above it, when known.
    pub upstream: Option<ChainHead>,
}

impl AckState {
    /// Ops not yet held by the server synced with.
    pub fn unsent(&self) -> u64 {
        self.head.saturating_sub(self.server.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_plans_batches_after_the_ack() {
        assert_eq!(plan_push(10, 0, 4), Some(PushPlan { from: 1, to: 4 }));
        assert_eq!(plan_push(10, 8, 4), Some(PushPlan { from: 9, to: 10 }));
        assert_eq!(plan_push(10, 10, 4), None);
        assert_eq!(plan_push(3, 7, 4), None);
    }

    #[test]
    fn chunks_cover_the_file_once() {
        let mut received = 0;
        let mut chunks = Vec::new();
        while let Some((offset, len)) = next_chunk(10, received, 4) {
            chunks.push((offset, len));
            received += len;
        }
        assert_eq!(chunks, vec![(0, 4), (4, 4), (8, 2)]);
        assert_eq!(next_chunk(0, 0, 4), None);
    }

    #[test]
    fn backoff_grows_caps_and_never_spins() {
        assert!(backoff_ms(0, 100, 10_000, 0.0) >= 1);
        assert_eq!(backoff_ms(30, 100, 10_000, 1.0), 10_000);
        assert!(backoff_ms(3, 100, 10_000, 1.0) <= 800);
        for attempt in 0..10 {
            let d = backoff_ms(attempt, 200, 5_000, 0.5);
            assert!((1..=5_000).contains(&d));
        }
    }
}
