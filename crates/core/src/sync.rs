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
    /// Stop syncing this origin and report; never overwrite either side. Either the
    /// device's log and the server's disagree (the server holds a different op than
    /// ours at some seq, or more ops than we wrote), or the server refused an op in a
    /// round that moved nothing, so resending would send the same ops again.
    Diverged {
        /// In words.
        reason: String,
    },
}

/// Interprets the server's answer for one origin, given the local chain
/// (proto/sync-v1.md §6.1).
///
/// `local_hash_at(seq)` returns the hash of our own op at `seq`. A round that moved the
/// server's head (forward, or back after a restore) is `Acked` even when it refused an
/// op, because the next round sends different ops: the ops before a `malformed` or
/// `broken_link` op are durable and the next round starts at the refused op. A round
/// that refused an op and moved nothing is `Diverged`, so that a client never resends
/// the same batch forever. `Acked` with `acked == previous_acked` and nothing refused
/// means the batch was empty.
pub fn apply_push_result(
    local_head: u64,
    previous_acked: u64,
    result: &OriginPushResult,
    local_hash_at: impl Fn(u64) -> Option<Sha256Digest>,
) -> PushOutcome {
    if let Some(altered) = result.rejected.iter().find(|r| r.code == ChainRejectCode::Altered) {
        return PushOutcome::Diverged {
            reason: format!(
                "the server holds another op #{} of this device than the device's own: {}",
                altered.seq, altered.message
            ),
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
    if held.seq == previous_acked {
        if let Some(refused) = result.rejected.first() {
            return PushOutcome::Diverged {
                reason: format!(
                    "the server refused op #{} ({:?}) and took nothing, so resending cannot help: {}",
                    refused.seq, refused.code, refused.message
                ),
            };
        }
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
    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::hlc::Hlc;
    use crate::ids::{EntityId, StoreId};
    use crate::records::{EntityKind, EntityRef};
    use crate::wire::{PulledOp, RejectedOp};

    const ORIGIN: OriginId = OriginId(Uuid::from_bytes([7; 16]));

    /// The hash of the device's own op at `seq` (the device wrote 1..=10).
    fn ours(seq: u64) -> Sha256Digest {
        Sha256Digest([seq as u8; 32])
    }

    /// A hash no op of the device has.
    const THEIRS: Sha256Digest = Sha256Digest([0xee; 32]);

    #[derive(Debug)]
    enum Push {
        Acked {
            acked: u64,
            rewound: bool,
        },
        /// Diverged, with words the reason must hold.
        Diverged(&'static str),
    }

    /// `previous_acked`, the server's `held`, and its rejections `(seq, code)`.
    fn check_push(previous_acked: u64, held: (u64, Sha256Digest), rejected: &[(u64, ChainRejectCode)], expected: Push) {
        let local_head = 10;
        let result = OriginPushResult {
            origin: ORIGIN,
            held: ChainHead { seq: held.0, hash: held.1 },
            stored: 0,
            duplicates: 0,
            quarantined: Vec::new(),
            rejected: rejected
                .iter()
                .map(|&(seq, code)| RejectedOp { seq, code, message: format!("op {seq} refused") })
                .collect(),
        };
        let local_hash_at = |seq: u64| (1..=local_head).contains(&seq).then(|| ours(seq));
        let outcome = apply_push_result(local_head, previous_acked, &result, local_hash_at);
        let case = format!("acked {previous_acked}, held {}, rejected {rejected:?}", held.0);
        match (&outcome, expected) {
            (PushOutcome::Acked { acked, rewound }, Push::Acked { acked: a, rewound: r }) => {
                assert_eq!((*acked, *rewound), (a, r), "{case}")
            }
            (PushOutcome::Diverged { reason }, Push::Diverged(words)) => {
                assert!(reason.contains(words), "{case}: {reason:?} should say {words:?}")
            }
            (outcome, expected) => panic!("{case}: {outcome:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn push_answers_continue_while_the_server_head_moves_and_stop_when_it_cannot() {
        use ChainRejectCode::*;
        let zero = (0, Sha256Digest::ZERO);
        // Acked: the server took ops.
        check_push(0, (10, ours(10)), &[], Push::Acked { acked: 10, rewound: false });
        check_push(0, (4, ours(4)), &[], Push::Acked { acked: 4, rewound: false });
        // Acked: nothing was sent, nothing refused.
        check_push(10, (10, ours(10)), &[], Push::Acked { acked: 10, rewound: false });
        // Acked, rewound: a server restored from a backup holds less than it acknowledged
        // and answers the stale batch with `gap`; the client resends from there.
        check_push(8, (3, ours(3)), &[(9, Gap), (10, Blocked)], Push::Acked { acked: 3, rewound: true });
        check_push(5, zero, &[(6, Gap)], Push::Acked { acked: 0, rewound: true });
        check_push(8, (3, ours(3)), &[(9, Malformed), (10, Blocked)], Push::Acked { acked: 3, rewound: true });
        // Acked: a round that advanced keeps what it stored, even if a later op was
        // refused; the next round starts at the refused op.
        check_push(0, (4, ours(4)), &[(5, Malformed), (6, Blocked)], Push::Acked { acked: 4, rewound: false });
        check_push(2, (4, ours(4)), &[(5, BrokenLink)], Push::Acked { acked: 4, rewound: false });
        check_push(2, (4, ours(4)), &[(5, Unknown)], Push::Acked { acked: 4, rewound: false });
        // Diverged: a refusal in a round that moved nothing is final.
        check_push(4, (4, ours(4)), &[(5, Malformed), (6, Blocked)], Push::Diverged("refused op #5 (Malformed)"));
        check_push(4, (4, ours(4)), &[(5, BrokenLink)], Push::Diverged("refused op #5 (BrokenLink)"));
        check_push(4, (4, ours(4)), &[(5, Gap), (6, Blocked)], Push::Diverged("took nothing"));
        check_push(0, zero, &[(1, Unknown)], Push::Diverged("refused op #1 (Unknown)"));
        // Diverged: the logs disagree, whatever else the answer says.
        check_push(0, (4, ours(4)), &[(5, Altered)], Push::Diverged("another op #5"));
        check_push(4, (4, ours(4)), &[(5, Altered)], Push::Diverged("another op #5"));
        check_push(0, (12, THEIRS), &[], Push::Diverged("holds 12 ops of this device but the device wrote only 10"));
        check_push(3, (5, THEIRS), &[], Push::Diverged("op #5 of this device differs"));
        check_push(5, (5, THEIRS), &[], Push::Diverged("op #5 of this device differs"));
    }

    /// A push round by round, as the field client runs it: a malformed op 6 among 1..=10
    /// (the server stores 1..=5 and refuses 6 every time).
    #[test]
    fn a_refused_op_stops_the_origin_after_the_ops_before_it_are_acknowledged() {
        let (local_head, mut acked, mut rounds) = (10, 0, 0);
        let outcome = loop {
            rounds += 1;
            assert!(rounds < 10, "the push never stops");
            let Some(plan) = plan_push(local_head, acked, 4) else { panic!("nothing left to send") };
            let held = plan.to.min(5);
            let mut rejected = Vec::new();
            if plan.to >= 6 {
                let message = "hash does not match".to_owned();
                rejected.push(RejectedOp { seq: 6, code: ChainRejectCode::Malformed, message });
                rejected.extend((7..=plan.to).map(|seq| RejectedOp {
                    seq,
                    code: ChainRejectCode::Blocked,
                    message: String::new(),
                }));
            }
            let result = OriginPushResult {
                origin: ORIGIN,
                held: ChainHead { seq: held, hash: ours(held) },
                stored: (held - acked) as u32,
                duplicates: 0,
                quarantined: Vec::new(),
                rejected,
            };
            match apply_push_result(local_head, acked, &result, |seq| Some(ours(seq))) {
                PushOutcome::Acked { acked: new, .. } => acked = new,
                diverged => break diverged,
            }
        };
        // Round 1 sends 1..=4; round 2 sends 5..=8 and stores 5; round 3 sends 6..=9 and stops.
        assert_eq!((acked, rounds), (5, 3));
        assert!(matches!(outcome, PushOutcome::Diverged { reason } if reason.contains("refused op #6")));
    }

    fn store(n: u8) -> StoreId {
        StoreId(Uuid::from_bytes([n; 16]))
    }

    /// The origin's ops 1..=4, chained.
    fn chain() -> Vec<Op> {
        let entity = EntityRef { kind: EntityKind::Visit, id: EntityId(Uuid::from_bytes([9; 16])) };
        let mut prev = Sha256Digest::ZERO;
        (1..=4)
            .map(|seq| {
                let hlc = Hlc { ms: 1_000 + seq, c: 0 };
                let op = Op::new(ORIGIN, seq, hlc, 1_000, entity, "answer.x", json!(seq), None, prev);
                prev = op.hash;
                op
            })
            .collect()
    }

    /// A page of `(server_seq, op seq, quarantined)` ending at `cursor` in store 1.
    fn page(ops: &[(u64, u64, bool)], cursor: u64, more: bool) -> PullResponse {
        let chain = chain();
        PullResponse {
            ops: ops
                .iter()
                .map(|&(server_seq, seq, quarantined)| PulledOp {
                    server_seq,
                    received_at: 0,
                    op: chain[seq as usize - 1].clone(),
                    quarantined,
                })
                .collect(),
            cursor: Cursor { store: store(1), seq: cursor },
            more,
            server_hlc: Hlc::default(),
        }
    }

    /// What a plan says, by op seq: (store, apply, duplicates, cursor seq, more).
    type Planned = (Vec<u64>, Vec<u64>, usize, u64, bool);

    /// `current`: the stored cursor (store, seq); `held`: the op seqs held here, each
    /// with its own hash (`true`) or another (`false`).
    fn check_pull(
        current: Option<(u8, u64)>,
        page: &PullResponse,
        held: &[(u64, bool)],
        expected: &Result<Planned, PullError>,
    ) {
        let current = current.map(|(s, seq)| Cursor { store: store(s), seq });
        let held = |op: &Op| match held.iter().find(|(seq, _)| *seq == op.seq) {
            None => Held::No,
            Some((_, true)) => Held::Same,
            Some((_, false)) => Held::Different(THEIRS),
        };
        let seqs = |ops: &[Op]| ops.iter().map(|o| o.seq).collect::<Vec<_>>();
        let planned = plan_pull_page(current, page, held)
            .map(|p| (seqs(&p.store), seqs(&p.apply), p.duplicates, p.cursor.seq, p.more));
        assert_eq!(&planned, expected, "from {current:?}: {page:?}");
    }

    #[test]
    fn pulled_pages_store_what_is_new_and_apply_what_the_server_applied() {
        // (store, apply, duplicates, cursor, more)
        let ok = |store: &[u64], apply: &[u64], dups: usize, cursor: u64, more: bool| -> Result<Planned, PullError> {
            Ok((store.to_vec(), apply.to_vec(), dups, cursor, more))
        };
        // First page: store everything; the quarantined op 2 is stored, not applied.
        let first = page(&[(1, 1, false), (2, 2, true), (3, 3, false)], 3, true);
        check_pull(None, &first, &[], &ok(&[1, 2, 3], &[1, 3], 0, 3, true));
        // Ops held already are not stored again, but are applied unless quarantined.
        check_pull(Some((1, 0)), &first, &[(1, true), (2, true)], &ok(&[3], &[1, 3], 2, 3, true));
        // Released from quarantine: served again unflagged under a new server_seq,
        // held already, so applied only.
        check_pull(Some((1, 5)), &page(&[(7, 2, false)], 7, false), &[(2, true)], &ok(&[], &[2], 1, 7, false));
        // Held and still quarantined: neither stored nor applied.
        check_pull(Some((1, 5)), &page(&[(6, 2, true)], 6, false), &[(2, true)], &ok(&[], &[], 1, 6, false));
        // The cursor may pass ops out of scope, and advance over an empty page.
        check_pull(Some((1, 5)), &page(&[(6, 4, false)], 10, false), &[], &ok(&[4], &[4], 0, 10, false));
        check_pull(Some((1, 5)), &page(&[], 9, false), &[], &ok(&[], &[], 0, 9, false));
        check_pull(Some((1, 5)), &page(&[], 5, false), &[], &ok(&[], &[], 0, 5, false));
        // Scope filtering: an op whose predecessor is missing is not refused.
        check_pull(None, &page(&[(4, 3, false)], 4, false), &[], &ok(&[3], &[3], 0, 4, false));
    }

    #[test]
    fn pulled_pages_that_cannot_be_used_say_why() {
        let op = |seq: u64| chain()[seq as usize - 1].op_ref();
        // StoreChanged: the cursor names another store.
        check_pull(
            Some((2, 3)),
            &page(&[(4, 1, false)], 4, false),
            &[],
            &Err(PullError::StoreChanged { expected: store(2).to_string(), found: store(1).to_string() }),
        );
        // OutOfOrder: server_seq does not rise…
        let out_of_order = |seq, after| Err(PullError::OutOfOrder { seq, after });
        check_pull(None, &page(&[(3, 1, false), (3, 2, false)], 3, false), &[], &out_of_order(3, 3));
        check_pull(None, &page(&[(4, 1, false), (2, 2, false)], 4, false), &[], &out_of_order(2, 4));
        // … starts at or below the cursor …
        check_pull(Some((1, 5)), &page(&[(5, 1, false)], 5, false), &[], &out_of_order(5, 5));
        check_pull(Some((1, 5)), &page(&[(4, 1, false)], 6, false), &[], &out_of_order(4, 5));
        // … or the new cursor is below the last op (or below the stored cursor).
        check_pull(Some((1, 5)), &page(&[(6, 1, false), (7, 2, false)], 6, false), &[], &out_of_order(6, 7));
        check_pull(Some((1, 5)), &page(&[], 4, false), &[], &out_of_order(4, 5));
        // Malformed: an op fails its own checks.
        let mut bad = page(&[(1, 1, false), (2, 2, false)], 2, false);
        bad.ops[1].op.value = json!(99);
        let reason = bad.ops[1].op.check_form().unwrap_err().to_string();
        check_pull(None, &bad, &[], &Err(PullError::Malformed { op: op(2), reason }));
        // Diverged: an op held here under the same (origin, seq) with another hash.
        check_pull(
            None,
            &page(&[(1, 1, false), (2, 2, false)], 2, false),
            &[(2, false)],
            &Err(PullError::Diverged { op: op(2) }),
        );
    }

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
