//! The op log on a server: origins and their chains, storing ops with their scope
//! tags, applying them to the materialised fields (the same rule as
//! `sidak_core::merge`), keeping each record's scope, and writing the server's own ops.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use std::sync::Arc;

use rusqlite::{params, OptionalExtension, Transaction};
use serde_json::{json, Value};
use sidak_core::canonical::canonical_json;
use sidak_core::chain::ChainHead;
use sidak_core::hash::Sha256Digest;
use sidak_core::hlc::{Hlc, HlcClock};
use sidak_core::ids::{EntityId, OriginId};
use sidak_core::instrument::{Instrument, InstrumentRef};
use sidak_core::op::{Op, OpRef};
use sidak_core::records::{check_op, write_once, Author, EntityKind, EntityRef, RecordView, RejectCode, Rejection};

use crate::db::{meta, set_meta};
use crate::error::ApiError;

/// The instruments a tier holds, shared read-only.
pub type Instruments = Arc<BTreeMap<InstrumentRef, Instrument>>;

/// An origin as this tier knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    /// The origin.
    pub origin: OriginId,
    /// `device` or `server`.
    pub role: String,
    /// The assessor (devices).
    pub assessor: Option<String>,
    /// The region (all but the centre).
    pub region: Option<String>,
    /// Verified head.
    pub head_seq: u64,
    /// Its hash.
    pub head_hash: Sha256Digest,
    /// Ops in quarantine.
    pub quarantined: u64,
}

impl Binding {
    /// The record model's author kind.
    pub fn author(&self) -> Author {
        if self.role == "device" {
            Author::Device
        } else {
            Author::Server
        }
    }
}

fn digest(text: &str) -> Result<Sha256Digest, ApiError> {
    text.parse().map_err(|_| ApiError::internal(format!("stored digest `{text}` is malformed")))
}

/// The binding of an origin, if known.
pub fn binding(tx: &Transaction<'_>, origin: OriginId) -> Result<Option<Binding>, ApiError> {
    type Row = (String, Option<String>, Option<String>, i64, String, i64);
    let row: Option<Row> = tx
        .prepare_cached(
            "SELECT role, assessor, region, head_seq, head_hash, quarantined FROM origins WHERE origin = ?1",
        )?
        .query_row([origin.to_string()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
        .optional()?;
    row.map(|(role, assessor, region, head_seq, head_hash, quarantined)| {
        Ok(Binding {
            origin,
            role,
            assessor,
            region,
            head_seq: head_seq as u64,
            head_hash: digest(&head_hash)?,
            quarantined: quarantined as u64,
        })
    })
    .transpose()
}

/// Registers a new origin.
pub fn bind(
    tx: &Transaction<'_>,
    origin: OriginId,
    role: &str,
    assessor: Option<&str>,
    region: Option<&str>,
) -> Result<(), ApiError> {
    tx.prepare_cached("INSERT INTO origins (origin, role, assessor, region, head_seq, head_hash) VALUES (?1, ?2, ?3, ?4, 0, ?5) ON CONFLICT DO NOTHING")?.execute(params![origin.to_string(), role, assessor, region, Sha256Digest::ZERO.to_hex()],
    )?;
    Ok(())
}

/// The hash of the held op at (origin, seq).
pub fn hash_at(tx: &Transaction<'_>, origin: OriginId, seq: u64) -> Result<Option<Sha256Digest>, ApiError> {
    let h: Option<String> = tx
        .prepare_cached("SELECT hash FROM ops WHERE origin = ?1 AND seq = ?2")?
        .query_row(params![origin.to_string(), seq as i64], |r| r.get(0))
        .optional()?;
    h.map(|h| digest(&h)).transpose()
}

/// The server's clock.
pub fn clock(tx: &Transaction<'_>) -> Result<HlcClock, ApiError> {
    let ms = meta(tx, "hlc_ms")?.and_then(|v| v.parse().ok()).unwrap_or(0);
    let c = meta(tx, "hlc_c")?.and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok(HlcClock::new(Hlc { ms, c }))
}

/// Stores the server's clock.
pub fn save_clock(tx: &Transaction<'_>, clock: &HlcClock) -> Result<(), ApiError> {
    set_meta(tx, "hlc_ms", &clock.last().ms.to_string())?;
    set_meta(tx, "hlc_c", &clock.last().c.to_string())?;
    Ok(())
}

/// A [`RecordView`] over the server's fields and instruments.
pub struct ServerView<'a, 't> {
    /// The transaction.
    pub tx: &'a Transaction<'t>,
    /// The instruments.
    pub instruments: &'a BTreeMap<InstrumentRef, Instrument>,
}

impl RecordView for ServerView<'_, '_> {
    fn field(&self, entity: &EntityRef, field: &str) -> Option<Value> {
        let (kind, value) = field_row(self.tx, &entity.id.to_string(), field).ok()??;
        (kind == entity.kind.name()).then_some(value)?
    }

    fn held_kind(&self, id: &EntityId) -> Option<EntityKind> {
        held(self.tx, &id.to_string()).ok()??.kind.parse().ok()
    }

    fn instrument(&self, reference: &InstrumentRef) -> Option<&Instrument> {
        self.instruments.get(reference)
    }
}

/// Checks an op before this tier applies it: the record model's checks
/// ([`check_op`]), then that a device writes only its own assessor's fieldwork in its
/// own region. A token lets a device push its own origin's ops, which may name any
/// record id: a visit held here as another assessor's, a questionnaire, note or
/// evidence record of one, a `visit` field naming one, or a visit's `institution` in
/// another region, is refused as `not_permitted`. (A record this tier does not hold yet
/// has no assessor or region to compare.) `Err` is a store error; `Ok(Err)` a refusal.
pub fn check(
    tx: &Transaction<'_>,
    instruments: &BTreeMap<InstrumentRef, Instrument>,
    op: &Op,
    author: &Binding,
) -> Result<Result<(), Rejection>, ApiError> {
    if let Err(r) = check_op(op, author.author(), &ServerView { tx, instruments }) {
        return Ok(Err(r));
    }
    let refuse = |message: String| Ok(Err(Rejection { code: RejectCode::NotPermitted, message }));
    let Some(mine) = author.assessor.as_deref().filter(|_| author.author() == Author::Device) else {
        return Ok(Ok(()));
    };
    if !matches!(op.entity.kind, EntityKind::Visit | EntityKind::Respondent | EntityKind::Note | EntityKind::Evidence) {
        return Ok(Ok(()));
    }
    if let (EntityKind::Visit, "institution", Some(region)) = (op.entity.kind, op.field.as_str(), &author.region) {
        // A regional office assesses its own region's institutions (the centre's
        // assessors, region `pusat`, the ministries and agencies).
        let institution = op.value.as_str().unwrap_or_default();
        let row = held(tx, institution)?;
        if let Some(theirs) = row.as_ref().and_then(|h| h.scope.region.as_ref()).filter(|theirs| *theirs != region) {
            return refuse(format!(
                "institution {institution} is in region {theirs}; a device of region {region} may not record visits there"
            ));
        }
    }
    let named = (op.entity.kind != EntityKind::Visit && op.field == "visit").then(|| op.value.as_str()).flatten();
    let id = op.entity.id.to_string();
    for (record, what) in [(Some(id.as_str()), op.entity.kind.name()), (named, "visit")] {
        let Some(record) = record else { continue };
        let row = held(tx, record)?;
        if let Some(owner) = row.as_ref().and_then(|h| h.scope.assessor.as_deref()).filter(|owner| *owner != mine) {
            return refuse(format!(
                "{what} {record} is the fieldwork of assessor {owner}; a device of assessor {mine} may not write it"
            ));
        }
    }
    Ok(Ok(()))
}

/// A field's current value.
pub fn field(tx: &Transaction<'_>, entity: &str, field: &str) -> Result<Option<Value>, ApiError> {
    Ok(field_row(tx, entity, field)?.and_then(|(_, value)| value))
}

/// A stored field: its record's kind and its value (`None`: the stored text is not JSON).
type FieldRow = (String, Option<Value>);

/// A field's row, if stored, remembered while a push runs.
fn field_row(tx: &Transaction<'_>, entity: &str, field: &str) -> Result<Option<FieldRow>, ApiError> {
    if let Some(known) = memo(|m| m.fields.get(entity).and_then(|f| f.get(field)).cloned()).flatten() {
        // Test builds hold every remembered read to the store's.
        debug_assert_eq!(known, read_field_row(tx, entity, field)?, "remembered {entity}.{field} went stale");
        return Ok(known);
    }
    let row = read_field_row(tx, entity, field)?;
    memo(|m| m.fields.entry(entity.to_owned()).or_default().insert(field.to_owned(), row.clone()));
    Ok(row)
}

fn read_field_row(tx: &Transaction<'_>, entity: &str, field: &str) -> Result<Option<FieldRow>, ApiError> {
    let row: Option<(String, String)> = tx
        .prepare_cached("SELECT kind, value FROM fields WHERE entity = ?1 AND field = ?2")?
        .query_row(params![entity, field], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(row.map(|(kind, text)| (kind, serde_json::from_str(&text).ok())))
}

/// What a push reads again and again: an answer's visit, the visit's institution, their
/// scopes. Remembered on the thread that runs the push, for the length of the push
/// ([`remember_reads`]), and kept in step with every write to `fields` and `entities`,
/// all of which [`apply`] makes.
#[derive(Default)]
struct Memo {
    /// entity → field → its row: kind and value, or `None` for no row.
    fields: HashMap<String, HashMap<String, Option<FieldRow>>>,
    /// entity → its `entities` row (kind and scope), or `None` for no row.
    scopes: HashMap<String, Option<Rc<Held>>>,
}

thread_local! {
    static MEMO: RefCell<Option<Memo>> = const { RefCell::new(None) };
}

/// Runs `f` on the memo, if one is in use on this thread.
fn memo<T>(f: impl FnOnce(&mut Memo) -> T) -> Option<T> {
    MEMO.with(|m| m.borrow_mut().as_mut().map(f))
}

/// Remembers the reads of [`field`], record checks and scopes on this thread until the
/// guard is dropped. For one transaction's work on one thread: nothing else may write
/// the store meanwhile, which a write transaction guarantees.
#[must_use = "the reads are remembered only while the guard lives"]
pub fn remember_reads() -> MemoGuard {
    MEMO.with(|m| *m.borrow_mut() = Some(Memo::default()));
    MemoGuard(())
}

/// Forgets the remembered reads when dropped (see [`remember_reads`]).
pub struct MemoGuard(());

impl Drop for MemoGuard {
    fn drop(&mut self) {
        MEMO.with(|m| *m.borrow_mut() = None);
    }
}

fn field_str(tx: &Transaction<'_>, entity: &str, name: &str) -> Result<Option<String>, ApiError> {
    Ok(field(tx, entity, name)?.and_then(|v| v.as_str().map(str::to_owned)))
}

/// A record's scope: its region, its assessor and its institution.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// Region.
    pub region: Option<String>,
    /// Assessor (assignments, and records written by devices).
    pub assessor: Option<String>,
    /// Institution record id.
    pub institution: Option<String>,
}

/// A record's stored scope.
pub fn entity_scope(tx: &Transaction<'_>, entity: &str) -> Result<Scope, ApiError> {
    Ok(stored_scope(tx, entity)?.unwrap_or_default())
}

/// A record's stored scope, `None` when the store has no row for it yet.
fn stored_scope(tx: &Transaction<'_>, entity: &str) -> Result<Option<Scope>, ApiError> {
    Ok(held(tx, entity)?.map(|h| h.scope.clone()))
}

/// A record as the `entities` table holds it: the kind it was first applied as, and its
/// scope.
#[derive(Debug, PartialEq, Eq)]
struct Held {
    kind: String,
    scope: Scope,
}

/// A record's `entities` row, `None` when the store has none for it yet. Shared, not
/// copied: a push reads it for each op three times (its kind, its owner, its scope).
fn held(tx: &Transaction<'_>, entity: &str) -> Result<Option<Rc<Held>>, ApiError> {
    if let Some(known) = memo(|m| m.scopes.get(entity).cloned()).flatten() {
        debug_assert_eq!(
            known.as_deref(),
            read_held(tx, entity)?.as_ref(),
            "the remembered row of {entity} went stale"
        );
        return Ok(known);
    }
    let row = read_held(tx, entity)?.map(Rc::new);
    memo(|m| m.scopes.insert(entity.to_owned(), row.clone()));
    Ok(row)
}

fn read_held(tx: &Transaction<'_>, entity: &str) -> Result<Option<Held>, ApiError> {
    Ok(tx
        .prepare_cached("SELECT kind, region, assessor, institution FROM entities WHERE entity = ?1")?
        .query_row([entity], |r| {
            Ok(Held {
                kind: r.get(0)?,
                scope: Scope { region: r.get(1)?, assessor: r.get(2)?, institution: r.get(3)? },
            })
        })
        .optional()?)
}

/// Re-derives a record's scope from its fields and the records it belongs to.
fn derive_scope(tx: &Transaction<'_>, entity: &EntityRef, author: &Binding) -> Result<Scope, ApiError> {
    use EntityKind as K;
    let id = entity.id.to_string();
    let parent = |name: &str| -> Result<Scope, ApiError> {
        match field_str(tx, &id, name)? {
            Some(p) => entity_scope(tx, &p),
            None => Ok(Scope::default()),
        }
    };
    let target = || -> Result<Scope, ApiError> {
        let t = field(tx, &id, "target")?.and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_owned));
        match t {
            Some(t) => entity_scope(tx, &t),
            None => Ok(Scope::default()),
        }
    };
    Ok(match entity.kind {
        K::Institution => {
            Scope { region: field_str(tx, &id, "region")?, assessor: None, institution: Some(id.clone()) }
        }
        K::Unit => Scope { assessor: None, ..parent("institution")? },
        K::Product => Scope { assessor: None, ..parent("unit")? },
        K::Assignment => Scope { assessor: field_str(tx, &id, "assessor")?, ..parent("institution")? },
        K::Visit => {
            let inst = parent("institution")?;
            Scope {
                region: inst.region.or_else(|| author.region.clone()),
                assessor: author.assessor.clone(),
                institution: inst.institution,
            }
        }
        K::Respondent | K::Note | K::Evidence => {
            let visit = parent("visit")?;
            Scope {
                assessor: visit.assessor.or_else(|| author.assessor.clone()),
                region: visit.region.or_else(|| author.region.clone()),
                institution: visit.institution,
            }
        }
        K::Correction | K::Deduction => Scope { assessor: None, ..target()? },
        K::Device => Scope { region: author.region.clone(), assessor: author.assessor.clone(), institution: None },
    })
}

/// Who may pull an op: `registry` (everyone in its region), `assignment` and `origin`
/// (the assessor named, and the region's supervisors), `review` (the region).
fn class_of(entity: &EntityRef, author: &Binding) -> &'static str {
    use EntityKind as K;
    match entity.kind {
        K::Institution | K::Unit | K::Product => "registry",
        K::Device if author.role == "server" => "registry",
        K::Assignment => "assignment",
        K::Correction | K::Deduction => "review",
        K::Device | K::Visit | K::Respondent | K::Note | K::Evidence => "origin",
    }
}

/// Stores an op held in quarantine (stored, not applied) with its scope tags as the new
/// head of its origin's chain (the caller admitted it). A valid op goes through
/// [`store_applied`] instead.
pub fn store_quarantined(tx: &Transaction<'_>, op: &Op, author: &Binding, received_at: i64) -> Result<(), ApiError> {
    store_quarantined_row(tx, op, author, received_at)?;
    move_head(tx, op, received_at)
}

/// [`store_quarantined`] without moving the origin's head: a push stores a run of one
/// origin's ops and then moves the head once ([`set_head`]).
pub fn store_quarantined_row(
    tx: &Transaction<'_>,
    op: &Op,
    author: &Binding,
    received_at: i64,
) -> Result<(), ApiError> {
    let scope = derive_scope(tx, &op.entity, author)?;
    store_row(tx, op, author, received_at, true, &scope)
}

/// Applies an admitted, valid op and stores it as the new head of its origin's chain,
/// deriving its record's scope once: after applying, so that the op's own row is
/// tagged as [`apply`] would re-tag it. Returns the institution whose results it may
/// change.
pub fn store_applied(
    tx: &Transaction<'_>,
    op: &Op,
    author: &Binding,
    received_at: i64,
) -> Result<Option<String>, ApiError> {
    let scope = apply_and_store_row(tx, op, author, received_at)?;
    move_head(tx, op, received_at)?;
    Ok(scope.institution)
}

/// [`store_applied`] without moving the origin's head (see [`store_quarantined_row`]).
pub fn store_applied_row(
    tx: &Transaction<'_>,
    op: &Op,
    author: &Binding,
    received_at: i64,
) -> Result<Option<String>, ApiError> {
    Ok(apply_and_store_row(tx, op, author, received_at)?.institution)
}

/// Applies a valid op and stores its row tagged with its record's scope as applying
/// left it (derived once), without moving its origin's head; returns that scope.
fn apply_and_store_row(tx: &Transaction<'_>, op: &Op, author: &Binding, received_at: i64) -> Result<Scope, ApiError> {
    let scope = apply_scoped(tx, op, author)?;
    store_row(tx, op, author, received_at, false, &scope)?;
    Ok(scope)
}

fn move_head(tx: &Transaction<'_>, op: &Op, received_at: i64) -> Result<(), ApiError> {
    set_head(tx, op.origin, ChainHead { seq: op.seq, hash: op.hash }, received_at)
}

/// Moves an origin's verified head to `head`, an op of its chain stored here.
pub fn set_head(tx: &Transaction<'_>, origin: OriginId, head: ChainHead, received_at: i64) -> Result<(), ApiError> {
    tx.prepare_cached("UPDATE origins SET head_seq = ?2, head_hash = ?3, last_push_at = ?4 WHERE origin = ?1")?
        .execute(params![origin.to_string(), head.seq as i64, head.hash.to_hex(), received_at])?;
    Ok(())
}

/// Inserts an op's row into `ops` (the table and its four indexes) with the scope tags
/// given. Public so that `sidak-bench` writes the very rows by themselves, as the floor
/// under ingest.
pub fn insert_op_row(
    tx: &Transaction<'_>,
    op: &Op,
    received_at: i64,
    quarantined: bool,
    region: Option<&str>,
    assessor: Option<&str>,
    class: &str,
) -> Result<(), ApiError> {
    tx.prepare_cached("INSERT INTO ops (origin, seq, hlc_ms, hlc_c, wall, kind, entity, field, value, parent_origin, parent_seq, prev, hash, received_at, quarantined, region, assessor, class)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)")?.execute(params![
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
        received_at,
        quarantined as i64,
        region,
        assessor,
        class,
    ])?;
    Ok(())
}

/// Stores an op's row with its record's scope tags, without moving its origin's head.
fn store_row(
    tx: &Transaction<'_>,
    op: &Op,
    author: &Binding,
    received_at: i64,
    quarantined: bool,
    scope: &Scope,
) -> Result<(), ApiError> {
    let class = class_of(&op.entity, author);
    let assessor = match class {
        "registry" | "review" => None,
        "origin" => author.assessor.as_deref().or(scope.assessor.as_deref()),
        _ => scope.assessor.as_deref(),
    };
    let region =
        if class == "origin" { author.region.as_deref().or(scope.region.as_deref()) } else { scope.region.as_deref() };
    insert_op_row(tx, op, received_at, quarantined, region, assessor, class)?;
    if quarantined {
        tx.prepare_cached("UPDATE origins SET quarantined = quarantined + 1 WHERE origin = ?1")?
            .execute([op.origin.to_string()])?;
    }
    Ok(())
}

/// Moves an origin's verified head forward over ops already held beyond it (ops that
/// arrived out of order through another tier), as far as each links to the one before.
pub fn advance_head(tx: &Transaction<'_>, origin: OriginId) -> Result<ChainHead, ApiError> {
    let Some(b) = binding(tx, origin)? else { return Ok(ChainHead::EMPTY) };
    let mut head = ChainHead { seq: b.head_seq, hash: b.head_hash };
    loop {
        let next: Option<(String, String)> = tx
            .prepare_cached("SELECT prev, hash FROM ops WHERE origin = ?1 AND seq = ?2")?
            .query_row(params![origin.to_string(), head.seq as i64 + 1], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        match next {
            Some((prev, hash)) if digest(&prev)? == head.hash => {
                head = ChainHead { seq: head.seq + 1, hash: digest(&hash)? };
            }
            _ => break,
        }
    }
    if head.seq != b.head_seq {
        tx.prepare_cached("UPDATE origins SET head_seq = ?2, head_hash = ?3 WHERE origin = ?1")?.execute(params![
            origin.to_string(),
            head.seq as i64,
            head.hash.to_hex()
        ])?;
    }
    Ok(head)
}

/// An op held here only because the upstream held it in quarantine comes again
/// unflagged once the upstream released it: check it here and apply it, or keep it in
/// quarantine with this tier's own reason.
fn release_if_released_upstream(
    tx: &Transaction<'_>,
    instruments: &Instruments,
    op: &Op,
    held_upstream: bool,
    now_ms: i64,
    dirty: &mut BTreeSet<String>,
) -> Result<(), ApiError> {
    if held_upstream {
        return Ok(());
    }
    let code: Option<String> = tx
        .prepare_cached("SELECT code FROM quarantine WHERE origin = ?1 AND seq = ?2")?
        .query_row(params![op.origin.to_string(), op.seq as i64], |r| r.get(0))
        .optional()?;
    if code.as_deref() != Some("held_upstream") {
        return Ok(());
    }
    let author = binding(tx, op.origin)?.ok_or_else(|| ApiError::internal("a held op of an unbound origin"))?;
    match check(tx, instruments, op, &author)? {
        Ok(()) => {
            tx.prepare_cached("DELETE FROM quarantine WHERE origin = ?1 AND seq = ?2")?
                .execute(params![op.origin.to_string(), op.seq as i64])?;
            tx.prepare_cached("UPDATE origins SET quarantined = quarantined - 1 WHERE origin = ?1")?
                .execute([op.origin.to_string()])?;
            release(tx, op)?;
            if let Some(inst) = apply(tx, op, &author)? {
                dirty.insert(inst);
            }
        }
        Err(r) => quarantine(tx, op, &r.code.to_string(), &r.message, now_ms)?,
    }
    Ok(())
}

/// What became of an op pulled from the upstream tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Absorbed {
    /// Stored (applied, or quarantined as the upstream or this tier's own check says).
    Stored,
    /// Already held, the same op.
    Duplicate,
    /// Held with another hash: a fork between the tiers, recorded, nothing overwritten.
    Fork,
    /// Fails its own form or hash check: recorded, not stored.
    Malformed,
}

/// Stores an op pulled from the upstream tier. Upstream pulls carry the ops of this
/// tier's scope in the upstream's order, so a chain may arrive out of order or (for
/// an origin that writes for several regions, like the centre's own) only in part:
/// the op is stored where it belongs and the origin's head moves only over what is
/// contiguous. It is applied unless the upstream holds it in quarantine or this tier's
/// own check refuses it (a `missing_dependency` is retried as its record arrives).
pub fn absorb(
    tx: &Transaction<'_>,
    instruments: &Instruments,
    op: &Op,
    held_upstream: bool,
    region: Option<&str>,
    now_ms: i64,
    dirty: &mut BTreeSet<String>,
) -> Result<Absorbed, ApiError> {
    let refuse = |code: &str, message: String| -> Result<(), ApiError> {
        tx.prepare_cached("INSERT INTO rejections (origin, seq, code, message, hash, token, at) VALUES (?1, ?2, ?3, ?4, ?5, 'upstream', ?6)")?.execute(params![op.origin.to_string(), op.seq as i64, code, message, op.hash.to_hex(), now_ms],
        )?;
        Ok(())
    };
    if let Err(e) = op.check_form() {
        refuse("malformed", format!("pulled from upstream: {e}"))?;
        return Ok(Absorbed::Malformed);
    }
    if let Some(held) = hash_at(tx, op.origin, op.seq)? {
        if held == op.hash {
            release_if_released_upstream(tx, instruments, op, held_upstream, now_ms, dirty)?;
            return Ok(Absorbed::Duplicate);
        }
        refuse("fork", format!("pulled from upstream with hash {}, this tier holds {held}", op.hash))?;
        return Ok(Absorbed::Fork);
    }
    let author = match binding(tx, op.origin)? {
        Some(b) => b,
        None => {
            let own = op.entity.kind == EntityKind::Device && op.entity.id.0 == op.origin.0;
            match (own, op.field.as_str(), op.value.as_str()) {
                (true, "assessor", Some(a)) if op.seq == 1 => bind(tx, op.origin, "device", Some(a), region)?,
                _ => {
                    // An origin whose registration is outside this tier's scope (the
                    // centre's own): this tier holds only the part of its chain that
                    // concerns it.
                    bind(tx, op.origin, "server", None, None)?;
                    tx.prepare_cached("INSERT INTO partial_origins (origin) VALUES (?1) ON CONFLICT DO NOTHING")?
                        .execute([op.origin.to_string()])?;
                }
            }
            binding(tx, op.origin)?.ok_or_else(|| ApiError::internal("an origin vanished after binding"))?
        }
    };
    let verdict = if held_upstream {
        Err(sidak_core::records::Rejection {
            code: sidak_core::records::RejectCode::Unknown,
            message: "held in quarantine by the upstream tier".into(),
        })
    } else {
        check(tx, instruments, op, &author)?
    };
    match verdict {
        Ok(()) => {
            if let Some(inst) = apply_and_store_row(tx, op, &author, now_ms)?.institution {
                dirty.insert(inst);
            }
        }
        Err(r) => {
            store_row(tx, op, &author, now_ms, true, &derive_scope(tx, &op.entity, &author)?)?;
            let code = if held_upstream { "held_upstream".to_owned() } else { r.code.to_string() };
            quarantine(tx, op, &code, &r.message, now_ms)?;
        }
    }
    advance_head(tx, op.origin)?;
    Ok(Absorbed::Stored)
}

const APPLY_LAST_WINS: &str = "INSERT INTO fields (entity, field, kind, value, v_origin, v_seq, hlc_ms, hlc_c) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
     ON CONFLICT (entity, field) DO UPDATE SET value = excluded.value, v_origin = excluded.v_origin, v_seq = excluded.v_seq,
         hlc_ms = excluded.hlc_ms, hlc_c = excluded.hlc_c
     WHERE (excluded.hlc_ms, excluded.hlc_c, excluded.v_origin, excluded.v_seq) > (fields.hlc_ms, fields.hlc_c, fields.v_origin, fields.v_seq)";

const APPLY_FIRST_WINS: &str = "INSERT INTO fields (entity, field, kind, value, v_origin, v_seq, hlc_ms, hlc_c) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
     ON CONFLICT (entity, field) DO UPDATE SET value = excluded.value, v_origin = excluded.v_origin, v_seq = excluded.v_seq,
         hlc_ms = excluded.hlc_ms, hlc_c = excluded.hlc_c
     WHERE (excluded.hlc_ms, excluded.hlc_c, excluded.v_origin, excluded.v_seq) < (fields.hlc_ms, fields.hlc_c, fields.v_origin, fields.v_seq)";

/// Writes an op's value into its field's row (`fields` and its value index) when it wins
/// there: the first writer of a write-once field, the last of any other. `entity` is
/// the op's record id, as text. Public so that `sidak-bench` writes the very rows by
/// themselves, as the floor under ingest.
pub fn upsert_field(tx: &Transaction<'_>, op: &Op, entity: &str) -> Result<(), ApiError> {
    let sql = if write_once(op.entity.kind, &op.field) { APPLY_FIRST_WINS } else { APPLY_LAST_WINS };
    tx.prepare_cached(sql)?.execute(params![
        entity,
        op.field,
        op.entity.kind.name(),
        canonical_json(&op.value),
        op.origin.to_string(),
        op.seq as i64,
        op.hlc.ms as i64,
        op.hlc.c as i64
    ])?;
    Ok(())
}

/// Applies an op to the fields (as `sidak_core::merge` would), updates its record's
/// scope, and returns the institution whose results it may change.
pub fn apply(tx: &Transaction<'_>, op: &Op, author: &Binding) -> Result<Option<String>, ApiError> {
    Ok(apply_scoped(tx, op, author)?.institution)
}

/// [`apply`], returning the record's scope as it is now.
fn apply_scoped(tx: &Transaction<'_>, op: &Op, author: &Binding) -> Result<Scope, ApiError> {
    let id = op.entity.id.to_string();
    memo(|m| m.fields.get_mut(&id).map(|f| f.remove(&op.field)));
    upsert_field(tx, op, &id)?;
    let scope = derive_scope(tx, &op.entity, author)?;
    let row = held(tx, &id)?;
    // Most ops (a visit's answers) leave their record's scope as it was: nothing to write.
    if row.as_ref().map(|h| &h.scope) != Some(&scope) {
        // The row keeps the kind it was inserted with (`check_op` refuses another).
        let kind = row.as_ref().map_or_else(|| op.entity.kind.name().to_owned(), |h| h.kind.clone());
        tx.prepare_cached("INSERT INTO entities (entity, kind, region, assessor, institution) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (entity) DO UPDATE SET region = excluded.region, assessor = excluded.assessor, institution = excluded.institution")?.execute(params![id, op.entity.kind.name(), scope.region, scope.assessor, scope.institution],
        )?;
        memo(|m| m.scopes.insert(id.clone(), Some(Rc::new(Held { kind, scope: scope.clone() }))));
    }
    let none = Scope::default();
    let before = row.as_ref().map_or(&none, |h| &h.scope);
    if op.entity.kind == EntityKind::Institution && before.region != scope.region {
        // Records under an institution take its region.
        memo(|m| m.scopes.clear());
        tx.prepare_cached("UPDATE entities SET region = ?2 WHERE institution = ?1")?
            .execute(params![id, scope.region])?;
        tx.prepare_cached("UPDATE ops SET region = ?2 WHERE region IS NULL AND entity IN (SELECT entity FROM entities WHERE institution = ?1)")?.execute(params![id, scope.region])?;
    }
    if op.entity.kind == EntityKind::Assignment && before.assessor != scope.assessor {
        // Whoever the assignment is for pulls all of it.
        tx.prepare_cached("UPDATE ops SET assessor = ?2 WHERE entity = ?1 AND class = 'assignment'")?
            .execute(params![id, scope.assessor])?;
    }
    if before.region.is_none() && scope.region.is_some() {
        tx.prepare_cached("UPDATE ops SET region = ?2 WHERE entity = ?1 AND region IS NULL")?
            .execute(params![id, scope.region])?;
    }
    if op.entity.kind == EntityKind::Visit && before.institution != scope.institution {
        // A visit learnt where it belongs after its questionnaires, notes or evidence
        // arrived (out of order through another tier): they belong there too.
        memo(|m| m.scopes.clear());
        tx.prepare_cached("UPDATE entities SET institution = ?2, region = COALESCE(region, ?3) WHERE entity IN
               (SELECT entity FROM fields WHERE field = 'visit' AND value = json_quote(?1) AND kind IN ('respondent', 'note', 'evidence') AND field NOT GLOB 'answer.*')")?.execute(params![id, scope.institution, scope.region],
        )?;
    }
    Ok(scope)
}

/// Records a quarantined op's reason.
pub fn quarantine(tx: &Transaction<'_>, op: &Op, code: &str, message: &str, now_ms: i64) -> Result<(), ApiError> {
    tx.prepare_cached(
        "INSERT INTO quarantine (origin, seq, code, message, at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (origin, seq) DO UPDATE SET code = excluded.code, message = excluded.message",
    )?
    .execute(params![op.origin.to_string(), op.seq as i64, code, message, now_ms])?;
    Ok(())
}

/// Marks a quarantined op as applied and moves it to the end of the pull order (a new
/// `server_seq`), so that a tier which pulled it while it was held back sees it again,
/// unflagged, and applies it too.
pub fn release(tx: &Transaction<'_>, op: &Op) -> Result<(), ApiError> {
    tx.prepare_cached("UPDATE ops SET quarantined = 0, server_seq = (SELECT MAX(server_seq) + 1 FROM ops) WHERE origin = ?1 AND seq = ?2")?.execute(params![op.origin.to_string(), op.seq as i64],
    )?;
    // AUTOINCREMENT must never hand out that number again.
    tx.prepare_cached("UPDATE sqlite_sequence SET seq = (SELECT MAX(server_seq) FROM ops) WHERE name = 'ops'")?
        .execute([])?;
    Ok(())
}

/// One origin's ops `from..=to`, in seq order.
pub fn ops_of(tx: &Transaction<'_>, origin: OriginId, from: u64, to: u64) -> Result<Vec<Op>, ApiError> {
    let sql = format!("SELECT {OP_COLUMNS} FROM ops WHERE origin = ?1 AND seq BETWEEN ?2 AND ?3 ORDER BY seq");
    let mut stmt = tx.prepare_cached(&sql)?;
    let mut out = Vec::new();
    for row in stmt.query_map(params![origin.to_string(), from as i64, to as i64], |r| row_op(r, 0))? {
        out.push(row??);
    }
    Ok(out)
}

/// Reads ops from rows of `SELECT <OP_COLUMNS> FROM ops …`.
pub const OP_COLUMNS: &str =
    "origin, seq, hlc_ms, hlc_c, wall, kind, entity, field, value, parent_origin, parent_seq, prev, hash";

/// Builds an op from a row selected with [`OP_COLUMNS`] (starting at column `at`).
pub fn row_op(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Result<Op, ApiError>> {
    let s = |i: usize| r.get::<_, String>(at + i);
    let origin = s(0)?;
    let kind = s(5)?;
    let entity = s(6)?;
    let value = s(8)?;
    let parent_origin: Option<String> = r.get(at + 9)?;
    let parent_seq: Option<i64> = r.get(at + 10)?;
    let prev = s(11)?;
    let hash = s(12)?;
    let (seq, ms, c, wall, field): (i64, i64, i64, i64, String) =
        (r.get(at + 1)?, r.get(at + 2)?, r.get(at + 3)?, r.get(at + 4)?, s(7)?);
    Ok((|| {
        let bad = |what: &str| ApiError::internal(format!("stored op has a bad {what}"));
        Ok(Op {
            origin: origin.parse().map_err(|_| bad("origin"))?,
            seq: seq as u64,
            hlc: Hlc { ms: ms as u64, c: c as u32 },
            wall,
            entity: EntityRef {
                kind: kind.parse().map_err(|_| bad("kind"))?,
                id: entity.parse().map_err(|_| bad("entity"))?,
            },
            field,
            value: serde_json::from_str(&value).map_err(|_| bad("value"))?,
            parent: match (parent_origin, parent_seq) {
                (Some(o), Some(s)) => Some(OpRef { origin: o.parse().map_err(|_| bad("parent"))?, seq: s as u64 }),
                _ => None,
            },
            prev: digest(&prev)?,
            hash: digest(&hash)?,
        })
    })())
}

/// Writes a pulled op's wire JSON (`PulledOp`) straight from a row of
/// `SELECT server_seq, received_at, quarantined, <OP_COLUMNS>`, without decoding the op
/// only to encode it again: the ids and digests are stored as their wire text and the
/// value as its canonical JSON. What a client decodes is the op `row_op` builds (a
/// test pulls every kind of value both ways).
pub fn write_pulled_op(r: &rusqlite::Row<'_>, out: &mut Vec<u8>) -> rusqlite::Result<()> {
    // The stored text is copied as bytes: it went in as Rust strings, so it is UTF-8.
    let text = |i: usize| -> rusqlite::Result<&[u8]> { r.get_ref(i)?.as_bytes().map_err(rusqlite::Error::from) };
    // A member: its key (with whatever punctuation precedes it), then column `i`.
    let int = |out: &mut Vec<u8>, key: &[u8], i: usize| -> rusqlite::Result<()> {
        out.extend_from_slice(key);
        out.extend_from_slice(itoa::Buffer::new().format(r.get::<_, i64>(i)?).as_bytes());
        Ok(())
    };
    let string = |out: &mut Vec<u8>, key: &[u8], i: usize| -> rusqlite::Result<()> {
        out.extend_from_slice(key);
        json_str(out, text(i)?)
    };
    int(out, br#"{"server_seq":"#, 0)?;
    int(out, br#","received_at":"#, 1)?;
    string(out, br#","op":{"origin":"#, 3)?;
    int(out, br#","seq":"#, 4)?;
    int(out, br#","hlc":{"ms":"#, 5)?;
    int(out, br#","c":"#, 6)?;
    int(out, br#"},"wall":"#, 7)?;
    string(out, br#","entity":{"kind":"#, 8)?;
    string(out, br#","id":"#, 9)?;
    string(out, br#"},"field":"#, 10)?;
    out.extend_from_slice(br#","value":"#);
    out.extend_from_slice(text(11)?);
    out.extend_from_slice(br#","parent":"#);
    match r.get_ref(12)?.as_bytes_or_null().map_err(rusqlite::Error::from)? {
        Some(origin) if r.get_ref(13)?.as_i64_or_null().map_err(rusqlite::Error::from)?.is_some() => {
            out.extend_from_slice(br#"{"origin":"#);
            json_str(out, origin)?;
            int(out, br#","seq":"#, 13)?;
            out.push(b'}');
        }
        _ => out.extend_from_slice(b"null"),
    }
    string(out, br#","prev":"#, 14)?;
    string(out, br#","hash":"#, 15)?;
    out.push(b'}');
    if r.get::<_, i64>(2)? == 1 {
        out.extend_from_slice(br#","quarantined":true"#);
    }
    out.push(b'}');
    Ok(())
}

/// Writes `s` as a JSON string: copied whole when, as for nearly every stored text
/// (ids, digests, kinds, field names), it needs no escape.
fn json_str(out: &mut Vec<u8>, s: &[u8]) -> rusqlite::Result<()> {
    if !sidak_core::canonical::needs_json_escape(s) {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s);
        out.push(b'"');
        Ok(())
    } else {
        let s = std::str::from_utf8(s).map_err(rusqlite::Error::Utf8Error)?;
        serde_json::to_writer(&mut *out, s).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
    }
}

/// The server's own identity: its origin.
pub fn server_binding(tx: &Transaction<'_>) -> Result<Binding, ApiError> {
    let origin: OriginId = meta(tx, "server_origin")?
        .ok_or_else(|| ApiError::internal("the store has no server origin"))?
        .parse()
        .map_err(|_| ApiError::internal("bad server origin"))?;
    binding(tx, origin)?.ok_or_else(|| ApiError::internal("the server origin is not bound"))
}

/// Writes ops under the server's own origin (registry, assignments, corrections,
/// deductions), each checked against the record model; returns the institutions
/// whose results they may change. A refusal is the caller's bad input.
pub fn author(
    tx: &Transaction<'_>,
    instruments: &BTreeMap<InstrumentRef, Instrument>,
    now_ms: i64,
    changes: &[(EntityRef, &str, Value)],
) -> Result<(Vec<Op>, BTreeSet<String>), ApiError> {
    let mut me = server_binding(tx)?;
    let mut clock = clock(tx)?;
    let mut dirty = BTreeSet::new();
    let mut ops = Vec::new();
    for (entity, name, value) in changes {
        let parent: Option<OpRef> = tx
            .prepare_cached("SELECT v_origin, v_seq FROM fields WHERE entity = ?1 AND field = ?2")?
            .query_row(params![entity.id.to_string(), name], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .optional()?
            .and_then(|(o, s)| o.parse().ok().map(|origin| OpRef { origin, seq: s as u64 }));
        let hlc = clock.tick(now_ms.max(0) as u64);
        let op = Op::new(me.origin, me.head_seq + 1, hlc, now_ms, *entity, *name, value.clone(), parent, me.head_hash);
        op.check_form().map_err(|e| ApiError::invalid_body(e.to_string()))?;
        check_op(&op, Author::Server, &ServerView { tx, instruments })
            .map_err(|r| ApiError::invalid_body(format!("{} {}: {}", entity, name, r.message)))?;
        if let Some(inst) = store_applied(tx, &op, &me, now_ms)? {
            dirty.insert(inst);
        }
        me.head_seq = op.seq;
        me.head_hash = op.hash;
        ops.push(op);
    }
    save_clock(tx, &clock)?;
    Ok((ops, dirty))
}

/// Makes the store's identity on first start: a store id (for cursors) and a server
/// origin registered in its own chain.
pub fn ensure_identity(tx: &Transaction<'_>, now_ms: i64) -> Result<(), ApiError> {
    if meta(tx, "store_id")?.is_none() {
        set_meta(tx, "store_id", &uuid::Uuid::now_v7().to_string())?;
    }
    if meta(tx, "server_origin")?.is_none() {
        let origin = OriginId(uuid::Uuid::now_v7());
        set_meta(tx, "server_origin", &origin.to_string())?;
        tx.prepare_cached("DELETE FROM meta WHERE key = 'signing_seed'")?.execute([])?;
        bind(tx, origin, "server", None, None)?;
        let device = EntityRef { kind: EntityKind::Device, id: EntityId(origin.0) };
        author(tx, &BTreeMap::new(), now_ms, &[(device, "role", json!("server"))])?;
    }
    // The server's signing key (also for stores made before servers signed).
    if meta(tx, "signing_seed")?.is_none() {
        let keys = sidak_core::sign::KeyPair::from_seed(&rand::random::<[u8; 32]>());
        set_meta(tx, "signing_seed", &hex::encode(keys.seed()))?;
        let origin: OriginId = meta(tx, "server_origin")?
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ApiError::internal("no server origin"))?;
        let device = EntityRef { kind: EntityKind::Device, id: EntityId(origin.0) };
        author(tx, &BTreeMap::new(), now_ms, &[(device, "public_key", json!(keys.public().to_hex()))])?;
    }
    // A new store starts with the built-in instruments published.
    let published: i64 = tx.prepare_cached("SELECT COUNT(*) FROM instruments")?.query_row([], |r| r.get(0))?;
    if published == 0 {
        for id in sidak_core::instrument::BUILTIN_IDS {
            let instrument = sidak_core::instrument::builtin(id).expect("built-in instruments load");
            crate::admin::publish_instrument(tx, &instrument, now_ms)?;
        }
    }
    Ok(())
}

/// Gives a copied store (a backup) an identity of its own: a new store id, so that
/// every pull cursor handed out by the original answers `reset_required` here, and a
/// new server origin, so that what the copy writes can never fork the chain of
/// what the original wrote after the copy was taken.
pub fn renew_identity(tx: &Transaction<'_>, now_ms: i64) -> Result<(), ApiError> {
    tx.prepare_cached("DELETE FROM meta WHERE key IN ('store_id', 'server_origin', 'signing_seed')")?.execute([])?;
    ensure_identity(tx, now_ms)
}

/// This server's signing keys.
pub fn signing_keys(tx: &Transaction<'_>) -> Result<sidak_core::sign::KeyPair, ApiError> {
    let seed = meta(tx, "signing_seed")?.ok_or_else(|| ApiError::internal("this server has no signing key"))?;
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(&seed, &mut bytes).map_err(|_| ApiError::internal("the signing key is damaged"))?;
    Ok(sidak_core::sign::KeyPair::from_seed(&bytes))
}

/// An origin's registered public key, if it registered one.
pub fn public_key(tx: &Transaction<'_>, origin: OriginId) -> Result<Option<sidak_core::sign::PublicKey>, ApiError> {
    Ok(field(tx, &origin.to_string(), "public_key")?.and_then(|v| v.as_str().and_then(|s| s.parse().ok())))
}

/// Keeps a verified signed head.
pub fn store_signed_head(tx: &Transaction<'_>, head: &sidak_core::sign::SignedHead) -> Result<(), ApiError> {
    tx.prepare_cached(
        "INSERT INTO signed_heads (origin, seq, hash, signature) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
    )?
    .execute(params![head.origin.to_string(), head.seq as i64, head.hash.to_hex(), head.signature.to_hex()])?;
    Ok(())
}

/// The signed heads held for an origin with `from <= seq <= to`, ascending.
pub fn signed_heads(
    tx: &Transaction<'_>,
    origin: OriginId,
    from: u64,
    to: u64,
) -> Result<Vec<sidak_core::sign::SignedHead>, ApiError> {
    let mut stmt = tx.prepare_cached(
        "SELECT seq, hash, signature FROM signed_heads WHERE origin = ?1 AND seq BETWEEN ?2 AND ?3 ORDER BY seq",
    )?;
    let rows = stmt.query_map(params![origin.to_string(), from as i64, to.min(i64::MAX as u64) as i64], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, hash, signature) = row?;
        out.push(sidak_core::sign::SignedHead {
            origin,
            seq: seq as u64,
            hash: digest(&hash)?,
            signature: signature.parse().map_err(ApiError::internal)?,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use sidak_core::hash::Sha256Digest;
    use sidak_core::hlc::Hlc;
    use sidak_core::ids::{EntityId, OriginId};
    use sidak_core::op::Op;
    use sidak_core::records::{EntityKind, EntityRef};

    use super::{apply, remember_reads, stored_scope, Binding};

    /// The scopes a push remembers follow the writes that move them: a questionnaire
    /// that arrived before its visit takes the visit's institution when the visit comes,
    /// and an institution's records take its new region. (Test builds also hold every
    /// remembered read to the store's, so a stale one fails here too.)
    #[test]
    fn remembered_scopes_follow_records_that_learn_where_they_belong() {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        crate::db::migrate(&mut conn).unwrap();
        let tx = conn.transaction().unwrap();
        let _memo = remember_reads();
        let binding = |role: &str, assessor: Option<&str>, region: Option<&str>| Binding {
            origin: OriginId(uuid::Uuid::now_v7()),
            role: role.into(),
            assessor: assessor.map(str::to_owned),
            region: region.map(str::to_owned),
            head_seq: 0,
            head_hash: Sha256Digest::ZERO,
            quarantined: 0,
        };
        let (device, server) = (binding("device", Some("a1"), Some("jateng")), binding("server", None, None));
        let mut seq = 0;
        let mut write = |author: &Binding, entity: EntityRef, field: &str, value: serde_json::Value| {
            seq += 1;
            let op =
                Op::new(author.origin, seq, Hlc { ms: seq, c: 0 }, 0, entity, field, value, None, Sha256Digest::ZERO);
            apply(&tx, &op, author).unwrap()
        };
        let record = |kind| EntityRef { kind, id: EntityId(uuid::Uuid::now_v7()) };
        let (institution, visit, respondent) =
            (record(EntityKind::Institution), record(EntityKind::Visit), record(EntityKind::Respondent));
        let (inst_id, visit_id, resp_id) =
            (institution.id.to_string(), visit.id.to_string(), respondent.id.to_string());

        write(&server, institution, "region", json!("jateng"));
        write(&device, respondent, "visit", json!(visit_id));
        assert_eq!(stored_scope(&tx, &resp_id).unwrap().unwrap().institution, None, "its visit is not here yet");
        write(&device, visit, "institution", json!(inst_id));
        assert_eq!(stored_scope(&tx, &resp_id).unwrap().unwrap().institution.as_deref(), Some(inst_id.as_str()));

        write(&server, institution, "region", json!("jatim"));
        for id in [&inst_id, &visit_id, &resp_id] {
            assert_eq!(stored_scope(&tx, id).unwrap().unwrap().region.as_deref(), Some("jatim"), "{id}");
        }
    }

    #[test]
    fn a_stored_text_is_written_as_serde_json_would() {
        for s in
            ["", "kota-sukamaju", "answer.U1.2", "0193a1b2-…-ü", "a\"b", "back\\slash", "tab\there", "\u{1f}", "\u{7f}"]
        {
            let mut out = Vec::new();
            super::json_str(&mut out, s.as_bytes()).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }
}
