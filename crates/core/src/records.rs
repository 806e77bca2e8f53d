//! The record model of fieldwork: which entities exist, which fields they have, and
//! what values those fields take. Every change to a record is an op on one field.
//!
//! Ownership (one writer per kind per tier): devices write visits, respondents, notes
//! and evidence; servers write the registry, assignments, corrections and deductions.
//! A device announces itself in its own first op (`device/<origin>` `assessor` and
//! `region`), which binds its origin to its assessor in the tamper-evident chain.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::EntityId;
use crate::instrument::{Instrument, InstrumentRef, Level, Location, RespondentKind};
use crate::scoring::parse_answer;

/// The kinds of record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    /// A device or server origin (its id is the origin id).
    Device,
    /// A ministry, agency, province, city or regency.
    Institution,
    /// A service unit of an institution.
    Unit,
    /// A service product of a unit.
    Product,
    /// Work given to an assessor: a unit to visit with an instrument.
    Assignment,
    /// One visit to a unit about a product.
    Visit,
    /// One respondent's questionnaire, taken during a visit.
    Respondent,
    /// A free note on a visit.
    Note,
    /// A photo or scan cited by a visit, stored by its SHA-256.
    Evidence,
    /// A supervisor's correction of a field value, kept apart from it.
    Correction,
    /// A deduction on a unit's or institution's score.
    Deduction,
}

impl EntityKind {
    /// All kinds.
    pub const ALL: [EntityKind; 11] = [
        EntityKind::Device,
        EntityKind::Institution,
        EntityKind::Unit,
        EntityKind::Product,
        EntityKind::Assignment,
        EntityKind::Visit,
        EntityKind::Respondent,
        EntityKind::Note,
        EntityKind::Evidence,
        EntityKind::Correction,
        EntityKind::Deduction,
    ];

    /// The name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            EntityKind::Device => "device",
            EntityKind::Institution => "institution",
            EntityKind::Unit => "unit",
            EntityKind::Product => "product",
            EntityKind::Assignment => "assignment",
            EntityKind::Visit => "visit",
            EntityKind::Respondent => "respondent",
            EntityKind::Note => "note",
            EntityKind::Evidence => "evidence",
            EntityKind::Correction => "correction",
            EntityKind::Deduction => "deduction",
        }
    }

    /// True for the kinds a field device may write.
    pub fn device_writable(self) -> bool {
        matches!(
            self,
            EntityKind::Device | EntityKind::Visit | EntityKind::Respondent | EntityKind::Note | EntityKind::Evidence
        )
    }
}

impl fmt::Display for EntityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for EntityKind {
    type Err = String;
    fn from_str(s: &str) -> Result<EntityKind, String> {
        EntityKind::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| format!("unknown entity kind `{s}`"))
    }
}

/// A record: its kind and id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntityRef {
    /// Kind.
    pub kind: EntityKind,
    /// Id.
    pub id: EntityId,
}

impl fmt::Display for EntityRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.id)
    }
}

/// Institution types.
pub const INSTITUTION_TYPES: [&str; 5] = ["kementerian", "lembaga", "provinsi", "kota", "kabupaten"];

/// Visit modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VisitMode {
    /// Unannounced, as an ordinary client (mystery shopping).
    Covert,
    /// Scheduled, with interviews and document checks.
    Announced,
}

/// What the record model reads of current state to check an op. Implemented by the
/// field store and the server over their own tables, and by [`crate::merge::State`].
pub trait RecordView {
    /// The current value of a field of a record, if the record and field exist.
    fn field(&self, entity: &EntityRef, field: &str) -> Option<Value>;
    /// The kind this tier holds a record id as, if it has applied any op to that id:
    /// the kind of the first one, since [`check_op`] refuses an op of another kind.
    fn held_kind(&self, id: &EntityId) -> Option<EntityKind>;
    /// An instrument by reference, if this tier holds it.
    fn instrument(&self, reference: &InstrumentRef) -> Option<&Instrument>;
}

/// Why an op was refused by the record model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Rejection {
    /// Stable machine code (listed in proto/sync-v1.md).
    pub code: RejectCode,
    /// Plain explanation.
    pub message: String,
}

/// Stable rejection codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectCode {
    /// The field does not exist on this kind of record.
    UnknownField,
    /// The value has the wrong type or form.
    BadValue,
    /// A field that is written once was written again.
    Immutable,
    /// The op refers to a record this tier does not hold (yet): retried when it arrives.
    MissingDependency,
    /// The visit cites an instrument this tier does not hold.
    UnknownInstrument,
    /// The answer does not fit its indicator.
    BadAnswer,
    /// This kind of origin may not write this kind of record.
    NotPermitted,
    /// The origin signs its chain, and this op's push carried no head signed with its
    /// key (a stolen token, a replay, a damaged client).
    BadSignature,
    /// (Regional servers) the centre holds the op in quarantine: released here when the
    /// centre releases it.
    HeldUpstream,
    /// A code this version does not know (sent by a newer server).
    #[serde(other)]
    Unknown,
}

impl fmt::Display for RejectCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        f.write_str(&s)
    }
}

fn reject(code: RejectCode, message: impl Into<String>) -> Rejection {
    Rejection { code, message: message.into() }
}

/// The prefix of answer fields on visits and respondents: `answer.<indicator id>`.
pub const ANSWER_PREFIX: &str = "answer.";

/// True for a short code: lowercase letters, digits, `-`, `_`, `.`, 1–64 long.
pub fn is_code(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'))
}

/// True for fields that are written once, when the record is made (a visit's
/// institution, unit, product and instrument; what a record belongs to; a file's
/// digest; a device's assessor). For them the *first* write wins — the least
/// `(hlc, origin, seq)` — so a later write cannot move a record, whatever order ops
/// arrive in; every other field is last-writer-wins.
pub fn write_once(kind: EntityKind, field: &str) -> bool {
    use EntityKind as K;
    matches!(
        (kind, field),
        (K::Device, "assessor" | "region" | "role" | "public_key")
            | (K::Institution, "code")
            | (K::Unit, "institution" | "code")
            | (K::Product, "unit" | "code")
            | (K::Assignment, "institution" | "unit")
            | (K::Visit, "assignment" | "institution" | "unit" | "product" | "instrument")
            | (K::Respondent, "visit" | "kind")
            | (K::Note, "visit")
            | (K::Evidence, "visit" | "sha256" | "size")
            | (K::Correction, "target" | "field")
            | (K::Deduction, "target")
    )
}

/// Checks one field value of one record against the model and, for answers, the
/// instrument the visit cites. `has_parent` is whether the author saw an earlier value.
pub fn check_field(
    entity: &EntityRef,
    field: &str,
    value: &Value,
    has_parent: bool,
    view: &dyn RecordView,
) -> Result<(), Rejection> {
    use EntityKind as K;
    // Write-once fields: a change the author knowingly makes is refused with a clear
    // reason; a blind second write (no parent) loses to the first in merge.
    let once = |r: Result<(), Rejection>| -> Result<(), Rejection> {
        r?;
        debug_assert!(write_once(entity.kind, field), "{}.{field} is checked as write-once", entity.kind);
        let changed = view.field(entity, field).is_some_and(|held| &held != value);
        if has_parent && changed {
            Err(reject(RejectCode::Immutable, format!("`{field}` of a {} is set once and cannot change", entity.kind)))
        } else {
            Ok(())
        }
    };
    match (entity.kind, field) {
        (K::Device, "assessor" | "region") => once(code(value, field)),
        (K::Device, "role") => once(one_of(value, field, &["device", "server"])),
        (K::Device, "label") => text(value, field, 200),
        (K::Device, "public_key") => once(public_key(value, field)),

        (K::Institution, "code") => once(code(value, field)),
        (K::Institution, "name") => text(value, field, 300),
        (K::Institution, "type") => one_of(value, field, &INSTITUTION_TYPES),
        (K::Institution, "region") => code(value, field),

        (K::Unit, "institution") => once(reference(value, field, K::Institution, view)),
        (K::Unit, "code") => once(code(value, field)),
        (K::Unit, "name") => text(value, field, 300),
        (K::Unit, "type") => code(value, field),

        (K::Product, "unit") => once(reference(value, field, K::Unit, view)),
        (K::Product, "code") => once(code(value, field)),
        (K::Product, "name") => text(value, field, 300),

        (K::Assignment, "assessor") => code(value, field),
        (K::Assignment, "institution") => once(reference(value, field, K::Institution, view)),
        (K::Assignment, "unit") => once(reference(value, field, K::Unit, view)),
        (K::Assignment, "products") => references(value, field, K::Product, view),
        (K::Assignment, "instrument") => instrument(value, field, view),
        (K::Assignment, "mode") => one_of(value, field, &["covert", "announced"]),
        (K::Assignment, "due") => millis(value, field),
        (K::Assignment, "status") => one_of(value, field, &["active", "cancelled"]),

        (K::Visit, "assignment") => once(reference(value, field, K::Assignment, view)),
        (K::Visit, "institution") => once(reference(value, field, K::Institution, view)),
        (K::Visit, "unit") => once(reference(value, field, K::Unit, view)),
        (K::Visit, "product") => once(reference(value, field, K::Product, view)),
        (K::Visit, "instrument") => once(instrument(value, field, view)),
        (K::Visit, "mode") => one_of(value, field, &["covert", "announced"]),
        (K::Visit, "location") => one_of(value, field, &Location::ALL.map(Location::name)),
        (K::Visit, "started_at" | "finished_at") => millis(value, field),
        (K::Visit, "status") => one_of(value, field, &["draft", "submitted"]),
        (K::Visit, f) if f.starts_with(ANSWER_PREFIX) => visit_answer(entity, &f[ANSWER_PREFIX.len()..], value, view),

        (K::Respondent, "visit") => once(reference(value, field, K::Visit, view)),
        (K::Respondent, "kind") => once(one_of(value, field, &RespondentKind::ALL.map(RespondentKind::name))),
        (K::Respondent, "role") => text(value, field, 200),
        (K::Respondent, f) if f.starts_with(ANSWER_PREFIX) => {
            respondent_answer(entity, &f[ANSWER_PREFIX.len()..], value, view)
        }

        (K::Note, "visit") => once(reference(value, field, K::Visit, view)),
        (K::Note, "indicator") => code(value, field),
        (K::Note, "text") => text(value, field, 20_000),
        (K::Note, "created_at") => millis(value, field),

        (K::Evidence, "visit") => once(reference(value, field, K::Visit, view)),
        (K::Evidence, "indicator") => code(value, field),
        (K::Evidence, "sha256") => once(digest(value, field)),
        (K::Evidence, "media_type") => media_type(value, field),
        (K::Evidence, "size") => once(non_negative(value, field)),
        (K::Evidence, "captured_at") => millis(value, field),

        (K::Correction, "target") => once(target(value, field, &[K::Visit, K::Respondent], view)),
        (K::Correction, "field") => once(correction_field(value, field)),
        (K::Correction, "value") => Ok(()),
        (K::Correction, "reason") => text(value, field, 2_000),
        (K::Correction, "by") => code(value, field),
        (K::Correction, "at") => millis(value, field),
        (K::Correction, "status") => one_of(value, field, &["active", "withdrawn"]),

        (K::Deduction, "target") => once(target(value, field, &[K::Unit, K::Institution], view)),
        (K::Deduction, "rule") => code(value, field),
        (K::Deduction, "points") => decimal(value, field),
        (K::Deduction, "reason") => text(value, field, 2_000),
        (K::Deduction, "by") => code(value, field),
        (K::Deduction, "status") => one_of(value, field, &["active", "withdrawn"]),

        (kind, f) => Err(reject(RejectCode::UnknownField, format!("a {kind} has no field `{f}`"))),
    }
}

fn as_str<'v>(value: &'v Value, field: &str, what: &str) -> Result<&'v str, Rejection> {
    value
        .as_str()
        .ok_or_else(|| reject(RejectCode::BadValue, format!("`{field}` takes {what}, found {}", short(value))))
}

fn short(value: &Value) -> String {
    let s = value.to_string();
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s
    }
}

fn code(value: &Value, field: &str) -> Result<(), Rejection> {
    let s = as_str(value, field, "a code (lowercase letters, digits, `-`, `_`, `.`)")?;
    if is_code(s) {
        Ok(())
    } else {
        Err(reject(
            RejectCode::BadValue,
            format!(
                "`{field}` takes a code (lowercase letters, digits, `-`, `_`, `.`; at most 64), found {}",
                short(value)
            ),
        ))
    }
}

fn text(value: &Value, field: &str, max: usize) -> Result<(), Rejection> {
    let s = as_str(value, field, "text")?;
    if s.len() > max {
        return Err(reject(RejectCode::BadValue, format!("`{field}` is longer than {max} bytes")));
    }
    Ok(())
}

fn one_of(value: &Value, field: &str, options: &[&str]) -> Result<(), Rejection> {
    let s = as_str(value, field, &format!("one of {}", options.join(", ")))?;
    if options.contains(&s) {
        Ok(())
    } else {
        Err(reject(
            RejectCode::BadValue,
            format!("`{field}` takes one of {}, found {}", options.join(", "), short(value)),
        ))
    }
}

fn millis(value: &Value, field: &str) -> Result<(), Rejection> {
    match value.as_i64() {
        Some(n) if n >= 0 && !value.is_f64() => Ok(()),
        _ => Err(reject(
            RejectCode::BadValue,
            format!("`{field}` takes a time in milliseconds since 1970, found {}", short(value)),
        )),
    }
}

fn non_negative(value: &Value, field: &str) -> Result<(), Rejection> {
    match value.as_u64() {
        Some(_) if !value.is_f64() => Ok(()),
        _ => {
            Err(reject(RejectCode::BadValue, format!("`{field}` takes a whole number from 0, found {}", short(value))))
        }
    }
}

fn decimal(value: &Value, field: &str) -> Result<(), Rejection> {
    let s = as_str(value, field, "a decimal written as text (\"2.5\")")?;
    s.parse::<crate::num::Exact>().map(|_| ()).map_err(|e| reject(RejectCode::BadValue, format!("`{field}`: {e}")))
}

fn digest(value: &Value, field: &str) -> Result<(), Rejection> {
    let s = as_str(value, field, "a SHA-256 digest")?;
    s.parse::<crate::hash::Sha256Digest>()
        .map(|_| ())
        .map_err(|e| reject(RejectCode::BadValue, format!("`{field}`: {e}")))
}

fn public_key(value: &Value, field: &str) -> Result<(), Rejection> {
    let s = as_str(value, field, "an Ed25519 public key (64 lowercase hex digits)")?;
    s.parse::<crate::sign::PublicKey>().map(|_| ()).map_err(|e| reject(RejectCode::BadValue, format!("`{field}`: {e}")))
}

fn media_type(value: &Value, field: &str) -> Result<(), Rejection> {
    let s = as_str(value, field, "a media type")?;
    let ok = s.len() <= 100
        && s.split_once('/').is_some_and(|(a, b)| {
            let tok =
                |t: &str| !t.is_empty() && t.bytes().all(|c| c.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&c));
            tok(a) && tok(b)
        });
    if ok {
        Ok(())
    } else {
        Err(reject(
            RejectCode::BadValue,
            format!("`{field}` takes a media type such as image/jpeg, found {}", short(value)),
        ))
    }
}

fn entity_id(value: &Value, field: &str) -> Result<EntityId, Rejection> {
    let s = as_str(value, field, "a record id (UUID)")?;
    s.parse::<EntityId>().map_err(|_| {
        reject(RejectCode::BadValue, format!("`{field}` takes a record id (UUID), found {}", short(value)))
    })
}

fn exists(view: &dyn RecordView, entity: &EntityRef) -> bool {
    let probe = match entity.kind {
        EntityKind::Institution | EntityKind::Unit | EntityKind::Product => "code",
        EntityKind::Visit => "instrument",
        EntityKind::Assignment => "unit",
        EntityKind::Respondent => "kind",
        _ => "visit",
    };
    view.field(entity, probe).is_some()
}

fn reference(value: &Value, field: &str, kind: EntityKind, view: &dyn RecordView) -> Result<(), Rejection> {
    let id = entity_id(value, field)?;
    let target = EntityRef { kind, id };
    if exists(view, &target) {
        Ok(())
    } else {
        Err(reject(
            RejectCode::MissingDependency,
            format!("`{field}` refers to {target}, which this tier does not hold (yet)"),
        ))
    }
}

fn references(value: &Value, field: &str, kind: EntityKind, view: &dyn RecordView) -> Result<(), Rejection> {
    let items = value
        .as_array()
        .ok_or_else(|| reject(RejectCode::BadValue, format!("`{field}` takes a list of record ids")))?;
    if items.len() > 200 {
        return Err(reject(RejectCode::BadValue, format!("`{field}` lists more than 200 records")));
    }
    items.iter().try_for_each(|v| reference(v, field, kind, view))
}

fn instrument(value: &Value, field: &str, view: &dyn RecordView) -> Result<(), Rejection> {
    let r: InstrumentRef = serde_json::from_value(value.clone()).map_err(|_| {
        reject(RejectCode::BadValue, format!("`{field}` takes {{\"id\": …, \"version\": …}}, found {}", short(value)))
    })?;
    if view.instrument(&r).is_some() {
        Ok(())
    } else {
        Err(reject(RejectCode::UnknownInstrument, format!("instrument {r} is not published on this tier")))
    }
}

fn target(value: &Value, field: &str, kinds: &[EntityKind], view: &dyn RecordView) -> Result<(), Rejection> {
    let r: EntityRef = serde_json::from_value(value.clone()).map_err(|_| {
        reject(RejectCode::BadValue, format!("`{field}` takes {{\"kind\": …, \"id\": …}}, found {}", short(value)))
    })?;
    if !kinds.contains(&r.kind) {
        let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
        return Err(reject(
            RejectCode::BadValue,
            format!("`{field}` must be a {}, not a {}", names.join(" or a "), r.kind),
        ));
    }
    if exists(view, &r) {
        Ok(())
    } else {
        Err(reject(
            RejectCode::MissingDependency,
            format!("`{field}` refers to {r}, which this tier does not hold (yet)"),
        ))
    }
}

fn correction_field(value: &Value, field: &str) -> Result<(), Rejection> {
    let s = as_str(value, field, "a field name")?;
    if s.is_empty() || s.len() > 128 {
        return Err(reject(RejectCode::BadValue, format!("`{field}` takes a field name")));
    }
    Ok(())
}

/// The instrument a visit cites, read from current state.
fn visit_instrument<'v>(visit: &EntityRef, view: &'v dyn RecordView) -> Result<&'v Instrument, Rejection> {
    let value = view
        .field(visit, "instrument")
        .ok_or_else(|| reject(RejectCode::MissingDependency, format!("{visit} is not held on this tier (yet)")))?;
    let r: InstrumentRef = serde_json::from_value(value)
        .map_err(|_| reject(RejectCode::BadValue, format!("{visit} cites no valid instrument")))?;
    view.instrument(&r)
        .ok_or_else(|| reject(RejectCode::UnknownInstrument, format!("instrument {r} is not published on this tier")))
}

fn visit_answer(visit: &EntityRef, indicator_id: &str, value: &Value, view: &dyn RecordView) -> Result<(), Rejection> {
    let instrument = visit_instrument(visit, view)?;
    let indicator = instrument.indicator(indicator_id).ok_or_else(|| {
        reject(RejectCode::BadAnswer, format!("{} has no indicator `{indicator_id}`", instrument.reference))
    })?;
    if let Some(kind) = indicator.source.respondent_kind() {
        return Err(reject(
            RejectCode::BadAnswer,
            format!("indicator `{indicator_id}` is answered in `{}` questionnaires, not on the visit", kind.name()),
        ));
    }
    parse_answer(indicator, value).map(|_| ()).map_err(|e| reject(RejectCode::BadAnswer, e.to_string()))
}

fn respondent_answer(
    respondent: &EntityRef,
    indicator_id: &str,
    value: &Value,
    view: &dyn RecordView,
) -> Result<(), Rejection> {
    let missing = || reject(RejectCode::MissingDependency, format!("{respondent} is not held on this tier (yet)"));
    let visit_id = view.field(respondent, "visit").ok_or_else(missing)?;
    let kind = view.field(respondent, "kind").ok_or_else(missing)?;
    let kind = kind.as_str().and_then(RespondentKind::from_name).ok_or_else(missing)?;
    let visit = EntityRef { kind: EntityKind::Visit, id: entity_id(&visit_id, "visit")? };
    let instrument = visit_instrument(&visit, view)?;
    let indicator = instrument.indicator(indicator_id).ok_or_else(|| {
        reject(RejectCode::BadAnswer, format!("{} has no indicator `{indicator_id}`", instrument.reference))
    })?;
    if indicator.source.respondent_kind() != Some(kind) {
        return Err(reject(
            RejectCode::BadAnswer,
            format!("indicator `{indicator_id}` is not part of the `{}` questionnaire", kind.name()),
        ));
    }
    parse_answer(indicator, value).map(|_| ()).map_err(|e| reject(RejectCode::BadAnswer, e.to_string()))
}

/// The level at which a questionnaire of `kind` counts, for the instrument.
pub fn respondent_level(instrument: &Instrument, kind: RespondentKind) -> Option<Level> {
    instrument.respondent_rule(kind).map(|r| r.level)
}

/// Who wrote an op, as far as the record model cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Author {
    /// A field device.
    Device,
    /// A server (registry, assignments, corrections, deductions).
    Server,
}

/// Checks an op against the record model and, for answers, the instrument its visit
/// cites: the kind of record must be writable by its author, a record id held here
/// must keep its kind, the field must exist and the value must fit. Chain checks (hash,
/// prev, seq) are [`crate::chain::admit`]'s.
pub fn check_op(op: &crate::op::Op, author: Author, view: &dyn RecordView) -> Result<(), Rejection> {
    if author == Author::Device && !op.entity.kind.device_writable() {
        return Err(reject(RejectCode::NotPermitted, format!("a field device may not write a {}", op.entity.kind)));
    }
    if op.entity.kind == EntityKind::Device && op.entity.id.0 != op.origin.0 {
        return Err(reject(
            RejectCode::NotPermitted,
            "an origin may describe only itself (device/<its own origin id>)",
        ));
    }
    // Stores key a record's fields by its id alone: an op naming a held id as another
    // kind would write that record's fields past the checks of its own kind (a
    // respondent's `visit` over a note's, say), and give it two kinds to be read as.
    if let Some(held) = view.held_kind(&op.entity.id).filter(|held| *held != op.entity.kind) {
        return Err(reject(
            RejectCode::NotPermitted,
            format!(
                "record {} is held here as kind `{held}`; an op may not write it as `{}`",
                op.entity.id, op.entity.kind
            ),
        ));
    }
    check_field(&op.entity, &op.field, &op.value, op.parent.is_some(), view)
}
