//! The op log on the device: appending the device's own ops (with their place in the
//! hash chain and a clock stamp) and applying any op to the materialised fields.

use std::collections::BTreeMap;

use rusqlite::{params, OptionalExtension, Transaction};
use serde_json::Value;
use sidak_core::canonical::canonical_json;
use sidak_core::hash::Sha256Digest;
use sidak_core::hlc::{Hlc, HlcClock};
use sidak_core::ids::{EntityId, OriginId};
use sidak_core::instrument::{Instrument, InstrumentRef};
use sidak_core::op::{Op, OpRef};
use sidak_core::records::{check_op, write_once, Author, EntityKind, EntityRef};

use crate::error::{db, FieldError};
use crate::store::{meta, set_meta};
use crate::view::TxView;

/// Who this device is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The device's origin.
    pub origin: OriginId,
    /// The assessor it belongs to.
    pub assessor: String,
    /// The assessor's region.
    pub region: String,
}

/// Reads the device identity, if `init` has run.
pub fn identity(tx: &Transaction<'_>) -> Result<Option<Identity>, FieldError> {
    let origin = meta(tx, "origin").map_err(db)?;
    let Some(origin) = origin else { return Ok(None) };
    let origin = origin.parse().map_err(|_| FieldError::Corrupt(format!("origin `{origin}` is not a UUID")))?;
    let assessor = meta(tx, "assessor").map_err(db)?.ok_or_else(|| FieldError::Corrupt("no assessor".into()))?;
    let region = meta(tx, "region").map_err(db)?.ok_or_else(|| FieldError::Corrupt("no region".into()))?;
    Ok(Some(Identity { origin, assessor, region }))
}

/// Like [`identity`], but an error when the device is not set up.
pub fn require_identity(tx: &Transaction<'_>) -> Result<Identity, FieldError> {
    identity(tx)?.ok_or(FieldError::NotInitialised)
}

/// The device's clock, as last stored.
fn clock(tx: &Transaction<'_>) -> Result<HlcClock, FieldError> {
    let ms = meta(tx, "hlc_ms").map_err(db)?.and_then(|v| v.parse().ok()).unwrap_or(0);
    let c = meta(tx, "hlc_c").map_err(db)?.and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok(HlcClock::new(Hlc { ms, c }))
}

fn save_clock(tx: &Transaction<'_>, clock: &HlcClock) -> Result<(), FieldError> {
    set_meta(tx, "hlc_ms", &clock.last().ms.to_string()).map_err(db)?;
    set_meta(tx, "hlc_c", &clock.last().c.to_string()).map_err(db)?;
    Ok(())
}

/// Takes in a remote clock stamp; a stamp far ahead of local time is not adopted.
pub fn observe_clock(tx: &Transaction<'_>, remote: Hlc, now_ms: u64) -> Result<bool, FieldError> {
    let mut c = clock(tx)?;
    let adopted = c.observe(remote, now_ms).is_ok();
    save_clock(tx, &c)?;
    Ok(adopted)
}

/// The head of an origin's chain held here: (seq, hash).
pub fn head(tx: &Transaction<'_>, origin: OriginId) -> Result<(u64, Sha256Digest), FieldError> {
    let row: Option<(i64, String)> = tx
        .prepare_cached("SELECT seq, hash FROM ops WHERE origin = ?1 ORDER BY seq DESC LIMIT 1")
        .and_then(|mut stmt| stmt.query_row([origin.to_string()], |r| Ok((r.get(0)?, r.get(1)?))))
        .optional()
        .map_err(db)?;
    match row {
        None => Ok((0, Sha256Digest::ZERO)),
        Some((seq, hash)) => Ok((seq as u64, parse_digest(&hash)?)),
    }
}

fn parse_digest(text: &str) -> Result<Sha256Digest, FieldError> {
    text.parse().map_err(|_| FieldError::Corrupt(format!("`{text}` is not a digest")))
}

/// Appends one op of this device, checked against the record model first. The
/// caller's transaction makes it atomic with the rest of the action.
pub fn append(
    tx: &Transaction<'_>,
    me: &Identity,
    instruments: &BTreeMap<InstrumentRef, Instrument>,
    now_ms: u64,
    entity: EntityRef,
    field: &str,
    value: Value,
) -> Result<Op, FieldError> {
    let (seq, prev) = head(tx, me.origin)?;
    let parent = current_version(tx, &entity, field)?;
    let mut clock = clock(tx)?;
    let hlc = clock.tick(now_ms);
    let op = Op::new(me.origin, seq + 1, hlc, now_ms as i64, entity, field, value, parent, prev);
    op.check_form().map_err(|e| FieldError::Invalid(e.to_string()))?;
    check_op(&op, Author::Device, &TxView { tx, instruments }).map_err(FieldError::Rejected)?;
    insert(tx, &op)?;
    apply(tx, &op)?;
    save_clock(tx, &clock)?;
    Ok(op)
}

/// The version of a field this device currently sees.
fn current_version(tx: &Transaction<'_>, entity: &EntityRef, field: &str) -> Result<Option<OpRef>, FieldError> {
    let row: Option<(String, i64)> = tx
        .prepare_cached("SELECT v_origin, v_seq FROM fields WHERE entity = ?1 AND field = ?2")
        .and_then(|mut stmt| stmt.query_row(params![entity.id.to_string(), field], |r| Ok((r.get(0)?, r.get(1)?))))
        .optional()
        .map_err(db)?;
    row.map(|(origin, seq)| {
        let origin = origin.parse().map_err(|_| FieldError::Corrupt(format!("bad origin {origin}")))?;
        Ok(OpRef { origin, seq: seq as u64 })
    })
    .transpose()
}

/// Stores an op (own or pulled). Returns false if it was already held.
pub fn insert(tx: &Transaction<'_>, op: &Op) -> Result<bool, FieldError> {
    let n = tx
        .prepare_cached(
            "INSERT INTO ops (origin, seq, hlc_ms, hlc_c, wall, kind, entity, field, value, parent_origin, parent_seq, prev, hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) ON CONFLICT DO NOTHING",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                op.origin.to_string(),
                op.seq as i64,
                op.hlc.ms as i64,
                op.hlc.c as i64,
                op.wall,
                op.entity.kind.name(),
                op.entity.id.to_string(),
                op.field,
                canonical_json(&op.value),
                op.parent.map(|p| p.origin.to_string()),
                op.parent.map(|p| p.seq as i64),
                op.prev.to_hex(),
                op.hash.to_hex(),
            ])
        })
        .map_err(db)?;
    Ok(n == 1)
}

/// Applies an op to the materialised fields exactly as `sidak_core::merge` decides:
/// the greatest (hlc, origin, seq) wins, or the least for write-once fields.
pub fn apply(tx: &Transaction<'_>, op: &Op) -> Result<(), FieldError> {
    let sql = if write_once(op.entity.kind, &op.field) { APPLY_FIRST_WINS } else { APPLY_LAST_WINS };
    tx.prepare_cached(sql)
        .and_then(|mut stmt| {
            stmt.execute(params![
                op.entity.id.to_string(),
                op.field,
                op.entity.kind.name(),
                canonical_json(&op.value),
                op.origin.to_string(),
                op.seq as i64,
                op.hlc.ms as i64,
                op.hlc.c as i64,
            ])
        })
        .map_err(db)?;
    Ok(())
}

const APPLY_LAST_WINS: &str = "INSERT INTO fields (entity, field, kind, value, v_origin, v_seq, hlc_ms, hlc_c) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
     ON CONFLICT (entity, field) DO UPDATE SET value = excluded.value, v_origin = excluded.v_origin, v_seq = excluded.v_seq,
         hlc_ms = excluded.hlc_ms, hlc_c = excluded.hlc_c
     WHERE (excluded.hlc_ms, excluded.hlc_c, excluded.v_origin, excluded.v_seq) > (fields.hlc_ms, fields.hlc_c, fields.v_origin, fields.v_seq)";

const APPLY_FIRST_WINS: &str = "INSERT INTO fields (entity, field, kind, value, v_origin, v_seq, hlc_ms, hlc_c) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
     ON CONFLICT (entity, field) DO UPDATE SET value = excluded.value, v_origin = excluded.v_origin, v_seq = excluded.v_seq,
         hlc_ms = excluded.hlc_ms, hlc_c = excluded.hlc_c
     WHERE (excluded.hlc_ms, excluded.hlc_c, excluded.v_origin, excluded.v_seq) < (fields.hlc_ms, fields.hlc_c, fields.v_origin, fields.v_seq)";

/// Reads ops back: one origin's range, or everything when `origin` is None.
pub fn read_ops(
    tx: &Transaction<'_>,
    origin: Option<OriginId>,
    from_seq: u64,
    to_seq: u64,
) -> Result<Vec<Op>, FieldError> {
    let sql = "SELECT origin, seq, hlc_ms, hlc_c, wall, kind, entity, field, value, parent_origin, parent_seq, prev, hash FROM ops";
    let mut out = Vec::new();
    let mut push = |r: &rusqlite::Row<'_>| -> rusqlite::Result<()> {
        out.push(row_to_op(r));
        Ok(())
    };
    match origin {
        Some(o) => {
            let mut stmt = tx
                .prepare_cached(&format!("{sql} WHERE origin = ?1 AND seq BETWEEN ?2 AND ?3 ORDER BY seq"))
                .map_err(db)?;
            let mut rows =
                stmt.query(params![o.to_string(), from_seq as i64, to_seq.min(i64::MAX as u64) as i64]).map_err(db)?;
            while let Some(r) = rows.next().map_err(db)? {
                push(r).map_err(db)?;
            }
        }
        None => {
            let mut stmt = tx.prepare_cached(&format!("{sql} ORDER BY origin, seq")).map_err(db)?;
            let mut rows = stmt.query([]).map_err(db)?;
            while let Some(r) = rows.next().map_err(db)? {
                push(r).map_err(db)?;
            }
        }
    }
    out.into_iter().collect()
}

fn row_to_op(r: &rusqlite::Row<'_>) -> Result<Op, FieldError> {
    let get_s = |i: usize| -> Result<String, FieldError> { r.get::<_, String>(i).map_err(db) };
    let corrupt = |what: &str| FieldError::Corrupt(format!("an op has a bad {what}"));
    let origin: OriginId = get_s(0)?.parse().map_err(|_| corrupt("origin"))?;
    let kind: EntityKind = get_s(5)?.parse().map_err(|_| corrupt("kind"))?;
    let id: EntityId = get_s(6)?.parse().map_err(|_| corrupt("entity"))?;
    let value: Value = serde_json::from_str(&get_s(8)?).map_err(|_| corrupt("value"))?;
    let parent_origin: Option<String> = r.get(9).map_err(db)?;
    let parent_seq: Option<i64> = r.get(10).map_err(db)?;
    let parent = match (parent_origin, parent_seq) {
        (Some(o), Some(s)) => Some(OpRef { origin: o.parse().map_err(|_| corrupt("parent"))?, seq: s as u64 }),
        _ => None,
    };
    Ok(Op {
        origin,
        seq: r.get::<_, i64>(1).map_err(db)? as u64,
        hlc: Hlc { ms: r.get::<_, i64>(2).map_err(db)? as u64, c: r.get::<_, i64>(3).map_err(db)? as u32 },
        wall: r.get(4).map_err(db)?,
        entity: EntityRef { kind, id },
        field: get_s(7)?,
        value,
        parent,
        prev: parse_digest(&get_s(11)?)?,
        hash: parse_digest(&get_s(12)?)?,
    })
}

/// The held op at (origin, seq), by hash.
pub fn hash_at(tx: &Transaction<'_>, origin: OriginId, seq: u64) -> Result<Option<Sha256Digest>, FieldError> {
    let h: Option<String> = tx
        .prepare_cached("SELECT hash FROM ops WHERE origin = ?1 AND seq = ?2")
        .and_then(|mut stmt| stmt.query_row(params![origin.to_string(), seq as i64], |r| r.get(0)))
        .optional()
        .map_err(db)?;
    h.map(|h| parse_digest(&h)).transpose()
}
