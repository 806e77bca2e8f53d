//! The device's view of current state for the record model: materialised fields for
//! the records it writes, the registry and assignments it was given, its instruments.

use std::collections::BTreeMap;

use rusqlite::{params, OptionalExtension, Transaction};
use serde_json::Value;
use sidak_core::ids::EntityId;
use sidak_core::instrument::{Instrument, InstrumentRef};
use sidak_core::records::{EntityKind, EntityRef, RecordView};

/// A [`RecordView`] over an open transaction.
pub struct TxView<'a, 't> {
    /// The transaction.
    pub tx: &'a Transaction<'t>,
    /// The instruments held.
    pub instruments: &'a BTreeMap<InstrumentRef, Instrument>,
}

impl RecordView for TxView<'_, '_> {
    fn field(&self, entity: &EntityRef, field: &str) -> Option<Value> {
        let id = entity.id.to_string();
        if matches!(entity.kind, EntityKind::Institution | EntityKind::Unit | EntityKind::Product) {
            let column = match field {
                "code" => "code",
                "name" => "name",
                "type" => "type",
                "region" => "region",
                _ => return None,
            };
            let sql = format!("SELECT {column} FROM registry WHERE id = ?1 AND kind = ?2");
            let v: Option<Option<String>> =
                self.tx.query_row(&sql, params![id, entity.kind.name()], |r| r.get(0)).optional().ok()?;
            if let Some(Some(v)) = v {
                return Some(Value::String(v));
            }
        }
        if entity.kind == EntityKind::Assignment && field == "unit" {
            let held: Option<String> =
                self.tx.query_row("SELECT id FROM assignments WHERE id = ?1", [&id], |r| r.get(0)).optional().ok()?;
            if held.is_some() {
                return Some(Value::String(id));
            }
        }
        let text: Option<String> = self
            .tx
            .query_row(
                "SELECT value FROM fields WHERE entity = ?1 AND field = ?2 AND kind = ?3",
                params![id, field, entity.kind.name()],
                |r| r.get(0),
            )
            .optional()
            .ok()?;
        text.and_then(|t| serde_json::from_str(&t).ok())
    }

    fn held_kind(&self, id: &EntityId) -> Option<EntityKind> {
        let id = id.to_string();
        let kind: Option<String> = self
            .tx
            .query_row(
                "SELECT kind FROM fields WHERE entity = ?1
                 UNION ALL SELECT kind FROM registry WHERE id = ?1
                 UNION ALL SELECT 'assignment' FROM assignments WHERE id = ?1
                 LIMIT 1",
                [&id],
                |r| r.get(0),
            )
            .optional()
            .ok()?;
        kind?.parse().ok()
    }

    fn instrument(&self, reference: &InstrumentRef) -> Option<&Instrument> {
        self.instruments.get(reference)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::DbKey;
    use crate::store::Store;
    use serde_json::json;
    use sidak_core::hash::Sha256Digest;
    use sidak_core::hlc::Hlc;
    use sidak_core::ids::OriginId;
    use sidak_core::op::Op;

    /// The device holds records in three tables: its own and pulled records' fields, the
    /// registry it was given, and its assignments. Each names the kind an id is held as.
    #[test]
    fn a_record_is_held_as_the_kind_its_table_names() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), &DbKey::for_tests()).unwrap();
        let id = |n: u8| EntityId(uuid::Uuid::from_bytes([n; 16]));
        store
            .write(|tx, instruments| {
                tx.execute(
                    "INSERT INTO registry (id, kind, code, name) VALUES (?1, 'unit', 'dinkes', 'Dinas Kesehatan')",
                    [id(1).to_string()],
                )
                .unwrap();
                tx.execute("INSERT INTO assignments (id, document) VALUES (?1, '{}')", [id(2).to_string()]).unwrap();
                // A note pulled from another tier, as the sync client stores it.
                let note = EntityRef { kind: EntityKind::Note, id: id(3) };
                let origin = OriginId(uuid::Uuid::from_bytes([9; 16]));
                let op =
                    Op::new(origin, 1, Hlc { ms: 1, c: 0 }, 1, note, "text", json!("antre"), None, Sha256Digest::ZERO);
                crate::log::insert(tx, &op)?;
                crate::log::apply(tx, &op)?;
                let view = TxView { tx, instruments };
                assert_eq!(view.held_kind(&id(1)), Some(EntityKind::Unit));
                assert_eq!(view.held_kind(&id(2)), Some(EntityKind::Assignment));
                assert_eq!(view.held_kind(&id(3)), Some(EntityKind::Note));
                assert_eq!(view.held_kind(&id(4)), None);
                Ok(())
            })
            .unwrap();
    }
}
