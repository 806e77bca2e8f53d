//! Properties of merge and chains: order, duplication and partitions never change the
//! state; chain verification catches any change to any op.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use serde_json::json;
use uuid::Uuid;

use crate::chain::{verify_chains, ChainFault};
use crate::hash::Sha256Digest;
use crate::hlc::{Hlc, HlcClock};
use crate::ids::{EntityId, OriginId};
use crate::merge::{materialise, State};
use crate::op::{precedence, Op, OpRef};
use crate::records::{write_once, EntityKind, EntityRef};

/// A replica that writes ops under its own origin and merges what it receives.
#[derive(Clone)]
struct Replica {
    origin: OriginId,
    clock: HlcClock,
    seq: u64,
    prev: Sha256Digest,
    ops: BTreeMap<OpRef, Op>,
}

impl Replica {
    fn new(n: u8) -> Replica {
        Replica {
            origin: OriginId(Uuid::from_bytes([n; 16])),
            clock: HlcClock::new(Hlc::default()),
            seq: 0,
            prev: Sha256Digest::ZERO,
            ops: BTreeMap::new(),
        }
    }

    /// Writes `value` to `field` of entity `e`, with the version it currently sees as parent.
    fn write(&mut self, now: u64, e: u8, field: &str, value: i64) {
        let entity = entity(e);
        let state = materialise(self.ops.values());
        let parent = state.get(&entity, field).map(|f| f.version);
        self.seq += 1;
        let op = Op::new(
            self.origin,
            self.seq,
            self.clock.tick(now),
            now as i64,
            entity,
            field,
            json!(value),
            parent,
            self.prev,
        );
        self.prev = op.hash;
        self.ops.insert(op.op_ref(), op);
    }

    fn receive(&mut self, from: &Replica, now: u64) {
        for op in from.ops.values() {
            let _ = self.clock.observe(op.hlc, now);
            self.ops.entry(op.op_ref()).or_insert_with(|| op.clone());
        }
    }
}

fn entity(e: u8) -> EntityRef {
    EntityRef { kind: EntityKind::Visit, id: EntityId(Uuid::from_bytes([0xe0 | e; 16])) }
}

#[derive(Clone, Debug)]
enum Step {
    Write { replica: usize, entity: u8, field: u8, value: i64 },
    Sync { from: usize, to: usize },
    Tick(u64),
}

fn arb_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0usize..3, 0u8..3, 0u8..3, -5i64..5).prop_map(|(replica, entity, field, value)| Step::Write { replica, entity, field, value }),
        2 => (0usize..3, 0usize..3).prop_map(|(from, to)| Step::Sync { from, to }),
        1 => (0u64..5_000).prop_map(Step::Tick),
    ]
}

/// Runs a schedule over three replicas (device, region, centre), each with its own
/// clock skew, returning them.
fn run(steps: &[Step], skews: [u64; 3]) -> [Replica; 3] {
    let mut replicas = [Replica::new(1), Replica::new(2), Replica::new(3)];
    let mut now = 1_000_000u64;
    for step in steps {
        match *step {
            Step::Write { replica, entity, field, value } => {
                replicas[replica].write(now + skews[replica], entity, &format!("answer.f{field}"), value)
            }
            Step::Sync { from, to } if from != to => {
                let source = replicas[from].clone();
                replicas[to].receive(&source, now + skews[to]);
            }
            Step::Sync { .. } => {}
            Step::Tick(ms) => now += ms,
        }
    }
    replicas
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn state_ignores_order_and_duplication(steps in proptest::collection::vec(arb_step(), 1..60), seed in any::<u64>(), dups in proptest::collection::vec(any::<prop::sample::Index>(), 0..20)) {
        let replicas = run(&steps, [0, 0, 0]);
        let all: Vec<Op> = replicas.iter().flat_map(|r| r.ops.values().cloned()).collect();
        let reference = materialise(&all);
        let mut shuffled = all.clone();
        for d in &dups {
            if !all.is_empty() {
                shuffled.push(d.get(&all).clone());
            }
        }
        let mut s = seed | 1;
        for i in (1..shuffled.len()).rev() {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            shuffled.swap(i, (s % (i as u64 + 1)) as usize);
        }
        prop_assert_eq!(&materialise(&shuffled), &reference);
    }

    #[test]
    fn partitions_and_merges_converge_without_loss(steps in proptest::collection::vec(arb_step(), 1..80), skews in [0u64..3_000, 0u64..3_000, 0u64..3_000]) {
        let mut replicas = run(&steps, skews);
        let written: BTreeSet<OpRef> = replicas.iter().flat_map(|r| r.ops.values().filter(|o| o.origin == r.origin).map(Op::op_ref)).collect();
        // Heal the partitions: device ↔ region ↔ centre, both ways, twice.
        for _ in 0..2 {
            for (a, b) in [(0, 1), (1, 2), (2, 1), (1, 0)] {
                let source = replicas[a].clone();
                replicas[b].receive(&source, u64::MAX / 4);
            }
        }
        let union: Vec<Op> = replicas.iter().flat_map(|r| r.ops.values().cloned()).collect();
        let expected = materialise(&union);
        for r in &replicas {
            prop_assert_eq!(&materialise(r.ops.values()), &expected);
            let held: BTreeSet<OpRef> = r.ops.keys().copied().collect();
            prop_assert!(written.is_subset(&held), "an op was lost");
            prop_assert!(verify_chains(r.ops.values()).is_clean());
        }
        check_against_the_ops(&union, &expected)?;
    }

    #[test]
    fn chain_verification_catches_every_single_byte_change(
        writes in proptest::collection::vec((0u8..3, 0u8..3, -50i64..50), 1..12),
        pick in any::<prop::sample::Index>(),
        part in 0usize..PARTS.len(),
        at in any::<prop::sample::Index>(),
        mask in 1u8..=255,
    ) {
        let mut replica = Replica::new(7);
        for (i, (e, f, v)) in writes.iter().enumerate() {
            replica.write(1_000 + i as u64, *e, &format!("answer.f{f}"), *v);
        }
        let ops: Vec<Op> = replica.ops.values().cloned().collect();
        prop_assert!(verify_chains(&ops).is_clean());
        let victim = pick.index(ops.len());
        // Every case changes the op: no case is skipped.
        let changed = flip_byte(&ops[victim], PARTS[part], at, mask);
        prop_assert_ne!(&changed, &ops[victim]);
        let mut tampered = ops;
        tampered[victim] = changed.clone();
        let report = verify_chains(&tampered);
        prop_assert!(!report.is_clean(), "a change to {} went unnoticed: {:?}", PARTS[part], changed);
        // And the changed op is never inside a verified head.
        let head = report.heads.get(&changed.origin).map_or(0, |h| h.seq);
        let covered = head >= changed.seq && changed.seq > 0;
        prop_assert!(!covered, "{} changed, yet head {} covers {:?}", PARTS[part], head, changed);
    }
}

/// The parts of an op, in the order of its canonical encoding, plus its hash.
const PARTS: [&str; 12] = [
    "origin",
    "seq",
    "hlc.ms",
    "hlc.c",
    "wall",
    "entity.kind",
    "entity.id",
    "field",
    "value",
    "parent",
    "prev",
    "hash",
];

/// Xors `mask` (never 0) into one byte of one part of `op`, picked by `at`, as a
/// change to its canonical bytes would. The kind is a name from a fixed list, so it
/// moves to another kind; `field` stays ASCII; an absent parent becomes present.
fn flip_byte(op: &Op, part: &str, at: prop::sample::Index, mask: u8) -> Op {
    fn flip<const N: usize>(mut bytes: [u8; N], at: prop::sample::Index, mask: u8) -> [u8; N] {
        bytes[at.index(N)] ^= mask;
        bytes
    }
    let uuid = |u: Uuid| Uuid::from_bytes(flip(*u.as_bytes(), at, mask));
    let mut op = op.clone();
    match part {
        "origin" => op.origin = OriginId(uuid(op.origin.0)),
        "seq" => op.seq = u64::from_be_bytes(flip(op.seq.to_be_bytes(), at, mask)),
        "hlc.ms" => op.hlc.ms = u64::from_be_bytes(flip(op.hlc.ms.to_be_bytes(), at, mask)),
        "hlc.c" => op.hlc.c = u32::from_be_bytes(flip(op.hlc.c.to_be_bytes(), at, mask)),
        "wall" => op.wall = i64::from_be_bytes(flip(op.wall.to_be_bytes(), at, mask)),
        "entity.kind" => {
            let kinds = EntityKind::ALL;
            let now = kinds.iter().position(|k| *k == op.entity.kind).unwrap();
            op.entity.kind = kinds[(now + 1 + mask as usize % (kinds.len() - 1)) % kinds.len()];
        }
        "entity.id" => op.entity.id = EntityId(uuid(op.entity.id.0)),
        "field" => {
            let mut bytes = op.field.clone().into_bytes();
            let i = at.index(bytes.len());
            bytes[i] ^= (mask & 0x7f).max(1);
            op.field = String::from_utf8(bytes).unwrap();
        }
        "value" => {
            let n = op.value.as_i64().unwrap();
            op.value = json!(i64::from_be_bytes(flip(n.to_be_bytes(), at, mask)));
        }
        "parent" => {
            op.parent = Some(match op.parent {
                None => OpRef { origin: op.origin, seq: u64::from(mask) },
                Some(p) => {
                    let mut bytes = [0u8; 24];
                    bytes[..16].copy_from_slice(p.origin.0.as_bytes());
                    bytes[16..].copy_from_slice(&p.seq.to_be_bytes());
                    let bytes = flip(bytes, at, mask);
                    let origin = Uuid::from_bytes(bytes[..16].try_into().unwrap());
                    OpRef { origin: OriginId(origin), seq: u64::from_be_bytes(bytes[16..].try_into().unwrap()) }
                }
            })
        }
        "prev" => op.prev = Sha256Digest(flip(op.prev.0, at, mask)),
        "hash" => op.hash = Sha256Digest(flip(op.hash.0, at, mask)),
        other => unreachable!("no part {other}"),
    }
    op
}

/// Checks a merged state against the ops themselves rather than merge's own
/// bookkeeping: each field holds the value of its winning op; "had seen" is computed
/// here by brute force (parent links, each origin's own earlier writes, to a fixed
/// point); any two writes of a field from different origins that had not seen each
/// other are listed together in its conflict, and every listed version is such a
/// write; and no value is lost unseen: every write but the winner was either seen by
/// the winner's author or is listed.
fn check_against_the_ops(ops: &[Op], state: &State) -> Result<(), TestCaseError> {
    let unique: BTreeMap<OpRef, &Op> = ops.iter().map(|o| (o.op_ref(), o)).collect();
    let mut by_field: BTreeMap<(EntityRef, &str), Vec<&Op>> = BTreeMap::new();
    for op in unique.values() {
        by_field.entry((op.entity, op.field.as_str())).or_default().push(op);
    }
    for ((entity, field), ops) in &by_field {
        let winner = if write_once(entity.kind, field) {
            ops.iter().min_by_key(|o| precedence(o))
        } else {
            ops.iter().max_by_key(|o| precedence(o))
        };
        let winner = *winner.unwrap();
        let held = state.get(entity, field).map(|f| (&f.value, f.version, f.hlc));
        prop_assert_eq!(held, Some((&winner.value, winner.op_ref(), winner.hlc)), "{}", field);

        // saw[(y, x)]: y's author had seen x.
        let mut saw: BTreeSet<(OpRef, OpRef)> = BTreeSet::new();
        for y in ops {
            for x in ops {
                if y.parent == Some(x.op_ref()) || (y.origin == x.origin && y.seq > x.seq) {
                    saw.insert((y.op_ref(), x.op_ref()));
                }
            }
        }
        loop {
            let more: Vec<(OpRef, OpRef)> = saw
                .iter()
                .flat_map(|(y, z)| saw.iter().filter(move |(z2, _)| z2 == z).map(move |(_, x)| (*y, *x)))
                .filter(|p| !saw.contains(p))
                .collect();
            if more.is_empty() {
                break;
            }
            saw.extend(more);
        }
        let conflict = state.conflicts.iter().find(|c| c.entity == *entity && c.field == *field);
        let listed = |o: &Op| {
            conflict
                .is_some_and(|c| c.versions.iter().any(|v| v.op == o.op_ref() && v.value == o.value && v.hlc == o.hlc))
        };
        let concurrent = |a: &Op, b: &Op| {
            a.origin != b.origin && !saw.contains(&(a.op_ref(), b.op_ref())) && !saw.contains(&(b.op_ref(), a.op_ref()))
        };
        for a in ops {
            let in_a_pair = ops.iter().any(|b| concurrent(a, b));
            prop_assert_eq!(listed(a), in_a_pair, "{} in a conflict of {}: {:?}", a.op_ref(), field, conflict);
            if a.op_ref() != winner.op_ref() {
                prop_assert!(
                    saw.contains(&(winner.op_ref(), a.op_ref())) || listed(a),
                    "{} lost unseen and unlisted on {}",
                    a.op_ref(),
                    field
                );
            }
        }
        if let Some(c) = conflict {
            let heads: Vec<OpRef> = ops
                .iter()
                .map(|o| o.op_ref())
                .filter(|o| !ops.iter().any(|y| saw.contains(&(y.op_ref(), *o))))
                .collect();
            match heads.as_slice() {
                [h] if c.versions.iter().all(|v| saw.contains(&(*h, v.op))) => {
                    prop_assert_eq!(c.resolved_by, Some(*h));
                    prop_assert!(c.open.is_empty());
                }
                _ => {
                    prop_assert_eq!(c.resolved_by, None);
                    let mut open = c.open.clone();
                    open.sort();
                    let mut heads = heads.clone();
                    heads.sort();
                    prop_assert_eq!(open, heads);
                }
            }
        }
    }
    prop_assert_eq!(
        state.entities.values().map(|f| f.len()).sum::<usize>(),
        by_field.len(),
        "a field came from nowhere"
    );
    for c in &state.conflicts {
        let mut origins = BTreeSet::new();
        for v in &c.versions {
            let op =
                unique.get(&v.op).ok_or_else(|| TestCaseError::fail(format!("{} listed but never written", v.op)))?;
            prop_assert_eq!((op.entity, op.field.as_str()), (c.entity, c.field.as_str()));
            prop_assert_eq!((&op.value, op.hlc), (&v.value, v.hlc));
            origins.insert(op.origin);
        }
        prop_assert!(origins.len() >= 2, "a conflict of one origin: {:?}", c);
        let order: Vec<_> = c.versions.iter().map(|v| precedence(unique[&v.op])).collect();
        prop_assert!(order.windows(2).all(|w| w[0] < w[1]), "versions not lowest precedence first: {:?}", c);
    }
    Ok(())
}

#[test]
fn conflicts_keep_every_value_and_resolution_is_recognised() {
    let (mut a, mut b) = (Replica::new(1), Replica::new(2));
    a.write(1_000, 0, "answer.x", 1);
    b.receive(&a, 1_000);
    a.write(2_000, 0, "answer.x", 2);
    b.write(2_000, 0, "answer.x", 3);
    a.receive(&b, 3_000);
    let state = materialise(a.ops.values());
    assert_eq!(state.conflicts.len(), 1);
    let conflict = &state.conflicts[0];
    let values: Vec<_> = conflict.versions.iter().map(|v| v.value.clone()).collect();
    assert_eq!(values, vec![json!(2), json!(3)], "both values kept, the winner last");
    assert_eq!(state.get(&entity(0), "answer.x").unwrap().value, json!(3));
    assert_eq!(conflict.resolved_by, None);
    // A later write that saw the winner resolves it.
    a.write(4_000, 0, "answer.x", 2);
    let state = materialise(a.ops.values());
    assert!(state.conflicts[0].resolved_by.is_some());
    assert!(state.conflicts[0].open.is_empty());
    assert_eq!(state.get(&entity(0), "answer.x").unwrap().value, json!(2));
}

#[test]
fn a_value_overwritten_by_its_own_author_before_syncing_is_still_listed() {
    // A writes 1 then 2, B writes 3 then 4, neither having seen the other: 2 and 4 are
    // concurrent though their parents differ; 2 must not disappear behind 4.
    let (mut a, mut b) = (Replica::new(1), Replica::new(2));
    a.write(1_000, 0, "answer.x", 1);
    a.write(2_000, 0, "answer.x", 2);
    b.write(1_500, 0, "answer.x", 3);
    b.write(2_500, 0, "answer.x", 4);
    a.receive(&b, 3_000);
    let state = materialise(a.ops.values());
    assert_eq!(state.get(&entity(0), "answer.x").unwrap().value, json!(4));
    assert_eq!(state.conflicts.len(), 1);
    let c = &state.conflicts[0];
    let values: Vec<_> = c.versions.iter().map(|v| v.value.clone()).collect();
    assert_eq!(values, vec![json!(1), json!(3), json!(2), json!(4)], "every concurrent write, by precedence");
    assert_eq!(c.open.len(), 2, "open: 2 and 4 were never seen by a later write");
    assert_eq!(c.resolved_by, None);
}

#[test]
fn write_once_fields_keep_the_first_write_whatever_the_order() {
    let (mut a, mut b) = (Replica::new(1), Replica::new(2));
    let visit = entity(0);
    let first =
        Op::new(a.origin, 1, Hlc { ms: 10, c: 0 }, 10, visit, "institution", json!("first"), None, Sha256Digest::ZERO);
    let later =
        Op::new(b.origin, 1, Hlc { ms: 20, c: 0 }, 20, visit, "institution", json!("later"), None, Sha256Digest::ZERO);
    let forward = materialise([&first, &later]);
    let backward = materialise([&later, &first]);
    assert_eq!(forward, backward);
    assert_eq!(forward.get(&visit, "institution").unwrap().value, json!("first"));
    // An ordinary field is last-writer-wins.
    a.write(10, 0, "mode", 1);
    b.write(20, 0, "mode", 2);
    b.receive(&a, 30);
    assert_eq!(materialise(b.ops.values()).get(&visit, "mode").unwrap().value, json!(2));
}

#[test]
fn verification_names_gaps_forks_alterations_and_broken_links() {
    let mut r = Replica::new(9);
    for i in 0..5 {
        r.write(1_000 + i, 0, "answer.x", i as i64);
    }
    let ops: Vec<Op> = r.ops.values().cloned().collect();
    let origin = r.origin;

    let mut gap = ops.clone();
    gap.remove(2);
    assert_eq!(verify_chains(&gap).faults, vec![ChainFault::Gap { origin, from: 3, to: 3 }]);
    assert_eq!(verify_chains(&gap).heads[&origin].seq, 2);

    let mut altered = ops.clone();
    altered[1].value = json!(99);
    assert_eq!(verify_chains(&altered).faults, vec![ChainFault::Altered { origin, seq: 2 }]);

    let mut forked = ops.clone();
    let mut twin = ops[3].clone();
    twin.value = json!(-1);
    twin.hash = twin.compute_hash();
    forked.push(twin);
    assert!(verify_chains(&forked).faults.contains(&ChainFault::Fork { origin, seq: 4 }));

    let mut relinked = ops;
    relinked[3].prev = Sha256Digest([1; 32]);
    relinked[3].hash = relinked[3].compute_hash();
    // Op 4 no longer links to op 3, and op 5 no longer links to the rewritten op 4.
    assert_eq!(
        verify_chains(&relinked).faults,
        vec![ChainFault::BrokenLink { origin, seq: 4 }, ChainFault::BrokenLink { origin, seq: 5 }]
    );
    assert_eq!(verify_chains(&relinked).heads[&origin].seq, 3);
}
