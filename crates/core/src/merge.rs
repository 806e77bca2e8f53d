//! Merge: the state of every record as a pure function of a set of ops.
//!
//! Per field, the op with the greatest `(hlc, origin, seq)` wins (for the few
//! write-once fields, [`crate::records::write_once`], the least). Any order of
//! delivery, any duplication and any split across paths gives the same state.
//!
//! Two writes of a field from different origins *conflict* when neither author had
//! seen the other's: an op has seen its `parent`, everything its parent had seen, and
//! every earlier write of the field by its own origin. Every write caught up in such
//! a pair is listed with the winner, never dropped; the conflict is *open* while more
//! than one write has not been seen by any later one, and resolved by the one later
//! write that saw them all.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use crate::hlc::Hlc;
use crate::ids::EntityId;
use crate::instrument::{Instrument, InstrumentRef};
use crate::op::{precedence, Op, OpRef};
use crate::records::{write_once, EntityKind, EntityRef, RecordView};

/// The winning value of a field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldValue {
    /// The value.
    pub value: Value,
    /// The op that wrote it: the field's version.
    pub version: OpRef,
    /// Its clock stamp.
    pub hlc: Hlc,
}

/// One version in a conflict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConflictVersion {
    /// The op.
    pub op: OpRef,
    /// Its clock stamp.
    pub hlc: Hlc,
    /// The value it wrote.
    pub value: Value,
}

/// Concurrent writes of one field from different origins: writes whose authors had
/// not seen each other's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Conflict {
    /// The record.
    pub entity: EntityRef,
    /// The field.
    pub field: String,
    /// The version every side had seen, when they had all seen the same one.
    pub parent: Option<OpRef>,
    /// Every write concurrent with another from a different origin, lowest precedence
    /// first.
    pub versions: Vec<ConflictVersion>,
    /// The writes no later write has seen: more than one while the conflict is open.
    pub open: Vec<OpRef>,
    /// The one later write that saw every version, once there is one.
    pub resolved_by: Option<OpRef>,
}

/// The conflict among the writes of one field, if any (any order, no duplicates).
pub fn field_conflict(entity: EntityRef, field: &str, writes: &[&Op]) -> Option<Conflict> {
    let index: BTreeMap<OpRef, usize> = writes.iter().enumerate().map(|(i, o)| (o.op_ref(), i)).collect();
    let n = writes.len();
    // seen[i]: the writes op i had seen, as a closure over parent links and each
    // origin's own earlier writes.
    let direct: Vec<Vec<usize>> = writes
        .iter()
        .map(|o| {
            let mut d: Vec<usize> = writes
                .iter()
                .enumerate()
                .filter(|(_, e)| e.origin == o.origin && e.seq < o.seq)
                .map(|(j, _)| j)
                .collect();
            if let Some(j) = o.parent.and_then(|p| index.get(&p)) {
                d.push(*j);
            }
            d
        })
        .collect();
    let mut seen: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); n];
    for (i, slot) in seen.iter_mut().enumerate() {
        let mut stack = direct[i].clone();
        while let Some(j) = stack.pop() {
            if slot.insert(j) {
                stack.extend(direct[j].iter().copied());
            }
        }
    }
    let concurrent =
        |i: usize, j: usize| writes[i].origin != writes[j].origin && !seen[i].contains(&j) && !seen[j].contains(&i);
    let mut involved: Vec<usize> = (0..n).filter(|&i| (0..n).any(|j| concurrent(i, j))).collect();
    if involved.is_empty() {
        return None;
    }
    involved.sort_by_key(|&i| precedence(writes[i]));
    let heads: Vec<usize> = (0..n).filter(|&i| !(0..n).any(|j| seen[j].contains(&i))).collect();
    let resolved_by = match heads.as_slice() {
        [h] if involved.iter().all(|v| seen[*h].contains(v)) => Some(writes[*h].op_ref()),
        _ => None,
    };
    let parents: BTreeSet<Option<OpRef>> = involved.iter().map(|&i| writes[i].parent).collect();
    let mut open: Vec<OpRef> =
        if resolved_by.is_some() { Vec::new() } else { heads.iter().map(|&i| writes[i].op_ref()).collect() };
    open.sort();
    Some(Conflict {
        entity,
        field: field.to_owned(),
        parent: if parents.len() == 1 { parents.into_iter().next().flatten() } else { None },
        versions: involved
            .iter()
            .map(|&i| ConflictVersion { op: writes[i].op_ref(), hlc: writes[i].hlc, value: writes[i].value.clone() })
            .collect(),
        open,
        resolved_by,
    })
}

/// Materialised state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct State {
    /// Every record's fields.
    pub entities: BTreeMap<EntityRef, BTreeMap<String, FieldValue>>,
    /// Every conflict, ordered by record and field.
    pub conflicts: Vec<Conflict>,
}

/// Builds the state from a set of ops. When two different ops claim the same
/// (origin, seq) — a fork, which chain verification reports — the one with the
/// smaller hash is used, so the result is still the same everywhere.
pub fn materialise<'a>(ops: impl IntoIterator<Item = &'a Op>) -> State {
    let mut unique: BTreeMap<OpRef, &Op> = BTreeMap::new();
    for op in ops {
        unique
            .entry(op.op_ref())
            .and_modify(|held| {
                if op.hash < held.hash {
                    *held = op;
                }
            })
            .or_insert(op);
    }
    let mut state = State::default();
    let mut writes: BTreeMap<(EntityRef, &str), Vec<&Op>> = BTreeMap::new();
    for op in unique.values() {
        let fields = state.entities.entry(op.entity).or_default();
        let replace = match fields.get(&op.field) {
            None => true,
            Some(current) => {
                let held = (current.hlc, current.version.origin, current.version.seq);
                if write_once(op.entity.kind, &op.field) {
                    precedence(op) < held
                } else {
                    precedence(op) > held
                }
            }
        };
        if replace {
            fields.insert(op.field.clone(), FieldValue { value: op.value.clone(), version: op.op_ref(), hlc: op.hlc });
        }
        writes.entry((op.entity, op.field.as_str())).or_default().push(op);
    }
    for ((entity, field), ops) in writes {
        let origins: BTreeSet<_> = ops.iter().map(|o| o.origin).collect();
        if origins.len() < 2 {
            continue;
        }
        if let Some(c) = field_conflict(entity, field, &ops) {
            state.conflicts.push(c);
        }
    }
    state
}

impl State {
    /// A field's winning value.
    pub fn get(&self, entity: &EntityRef, field: &str) -> Option<&FieldValue> {
        self.entities.get(entity)?.get(field)
    }

    /// Every record of a kind.
    pub fn of_kind(&self, kind: EntityKind) -> impl Iterator<Item = (&EntityRef, &BTreeMap<String, FieldValue>)> {
        self.entities.iter().filter(move |(e, _)| e.kind == kind)
    }
}

/// A [`RecordView`] over a materialised state and a set of instruments.
pub struct StateView<'a> {
    /// The state.
    pub state: &'a State,
    /// The instruments this tier holds.
    pub instruments: &'a BTreeMap<InstrumentRef, Instrument>,
}

impl RecordView for StateView<'_> {
    fn field(&self, entity: &EntityRef, field: &str) -> Option<Value> {
        self.state.get(entity, field).map(|f| f.value.clone())
    }

    fn held_kind(&self, id: &EntityId) -> Option<EntityKind> {
        // A state materialised from unchecked ops may hold an id as several kinds: the
        // first of them in `EntityKind::ALL`'s order.
        EntityKind::ALL.into_iter().find(|kind| self.state.entities.contains_key(&EntityRef { kind: *kind, id: *id }))
    }

    fn instrument(&self, reference: &InstrumentRef) -> Option<&Instrument> {
        self.instruments.get(reference)
    }
}
