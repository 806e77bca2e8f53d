//! Merge: the state of every record as a pure function of a set of ops.
//!
//! Per field, the op with the greatest `(hlc, origin, seq)` wins (for the few
//! write-once fields, [`crate::records::write_once`], the least). Any order of
//! delivery, any duplication and any split across paths gives the same state. Two
//! ops on the same field with the same `parent` from different origins are a
//! *conflict*: the winner is shown and every version is listed, never dropped.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use crate::hlc::Hlc;
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

/// Concurrent writes of one field from different origins that saw the same version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Conflict {
    /// The record.
    pub entity: EntityRef,
    /// The field.
    pub field: String,
    /// The version every side had seen.
    pub parent: Option<OpRef>,
    /// Every version, lowest precedence first; the last one wins among them.
    pub versions: Vec<ConflictVersion>,
    /// A later op on the field written by someone who had seen one of these versions.
    pub resolved_by: Option<OpRef>,
}

/// Materialised state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct State {
    /// Every record's fields.
    pub entities: BTreeMap<EntityRef, BTreeMap<String, FieldValue>>,
    /// Every conflict, ordered by record, field and parent.
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
    let mut groups: BTreeMap<(EntityRef, &str, Option<OpRef>), Vec<&Op>> = BTreeMap::new();
    let mut parents_seen: BTreeMap<(EntityRef, &str), BTreeMap<OpRef, OpRef>> = BTreeMap::new();
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
        groups.entry((op.entity, op.field.as_str(), op.parent)).or_default().push(op);
        if let Some(parent) = op.parent {
            // Remember, per field, one op that named each parent (the least, for determinism).
            let seen = parents_seen.entry((op.entity, op.field.as_str())).or_default();
            let slot = seen.entry(parent).or_insert(op.op_ref());
            if op.op_ref() < *slot {
                *slot = op.op_ref();
            }
        }
    }
    for ((entity, field, parent), mut ops) in groups {
        let origins: BTreeSet<_> = ops.iter().map(|o| o.origin).collect();
        if origins.len() < 2 {
            continue;
        }
        ops.sort_by_key(|o| precedence(o));
        let resolved_by = parents_seen
            .get(&(entity, field))
            .and_then(|seen| ops.iter().filter_map(|o| seen.get(&o.op_ref())).min().copied());
        state.conflicts.push(Conflict {
            entity,
            field: field.to_owned(),
            parent,
            versions: ops
                .iter()
                .map(|o| ConflictVersion { op: o.op_ref(), hlc: o.hlc, value: o.value.clone() })
                .collect(),
            resolved_by,
        });
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

    fn instrument(&self, reference: &InstrumentRef) -> Option<&Instrument> {
        self.instruments.get(reference)
    }
}
