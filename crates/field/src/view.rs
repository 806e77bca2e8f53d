//! The device's view of current state for the record model: materialised fields for
//! the records it writes, the registry and assignments it was given, its instruments.

use std::collections::BTreeMap;

use rusqlite::{params, OptionalExtension, Transaction};
use serde_json::Value;
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

    fn instrument(&self, reference: &InstrumentRef) -> Option<&Instrument> {
        self.instruments.get(reference)
    }
}
