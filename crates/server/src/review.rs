//! Supervisor review: submitted visits, edits made after submission, and corrections
//! — made, withdrawn, or resolving a conflict — each inside the reviewer's region.
//! Every function runs inside the caller's transaction, so the HTTP API and the CLI
//! share them; a refusal returns before anything is written.
//!
//! A correction is a `correction` record written by the server's own origin
//! (`ledger::author`, one op per field), kept apart from the field it corrects.
//! Results use the latest active correction of a field instead of its value
//! (`results`), and show the field value beside it.

use std::collections::BTreeMap;
use std::fmt;

use rusqlite::{params, OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sidak_core::hash::Sha256Digest;
use sidak_core::hlc::Hlc;
use sidak_core::ids::{EntityId, OriginId};
use sidak_core::instrument::{Instrument, InstrumentRef};
use sidak_core::op::{Op, OpRef};
use sidak_core::records::{check_op, is_code, Author, EntityKind, EntityRef, ANSWER_PREFIX};

use crate::admin::{self, ConflictView};
use crate::auth::{Principal, Role};
use crate::error::ApiError;
use crate::ledger::{self, ServerView};
use crate::results::{self, fields_of};

/// The longest reason a correction may give (the record model's `text(2000)`).
pub const MAX_REASON_BYTES: usize = 2_000;

/// Who reviews, and where: the `by` written into corrections and the region the
/// reviewer may act in (`None`: anywhere, for admins).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reviewer {
    /// Who, as a code: `<role>.<token id>` for a token, `admin.<name>` on the CLI.
    pub by: String,
    /// The only region this reviewer may see and correct (`None`: every region).
    pub region: Option<String>,
}

impl Reviewer {
    /// A token's reviewer: supervisors in their region, admins anywhere. Any other
    /// role gets 403 `role_forbidden`.
    pub fn for_principal(who: &Principal) -> Result<Reviewer, ApiError> {
        who.require(&[Role::Supervisor, Role::Admin])?;
        let region = match who.role {
            Role::Admin => None,
            _ => Some(who.region.clone().ok_or_else(|| ApiError::internal("a supervisor token has no region"))?),
        };
        Ok(Reviewer { by: format!("{}.{}", who.role, who.token_id), region })
    }

    /// The operator of the local store (`sidak-server review … --by NAME`): an admin.
    pub fn local_admin(name: &str) -> Result<Reviewer, ApiError> {
        let by = format!("admin.{name}");
        if !is_code(&by) {
            return Err(ApiError::invalid_body(format!(
                "--by `{name}`: give a name of lowercase letters, digits, `-`, `_` or `.`, at most 58 long"
            )));
        }
        Ok(Reviewer { by, region: None })
    }

    /// The region a listing covers: a supervisor's own (naming another is 403
    /// `scope_forbidden`), or for an admin the one asked for (`None`: all).
    pub fn listing_region(&self, asked: Option<&str>) -> Result<Option<String>, ApiError> {
        match (&self.region, asked) {
            (None, asked) => Ok(asked.map(str::to_owned)),
            (Some(mine), Some(r)) if r != mine => {
                Err(ApiError::scope_forbidden(format!("region `{r}` is outside this reviewer's region `{mine}`")))
            }
            (Some(mine), _) => Ok(Some(mine.clone())),
        }
    }

    /// Refuses with 403 `scope_forbidden` a record outside the reviewer's region.
    fn may_act_on(&self, what: &dyn fmt::Display, region: Option<&str>) -> Result<(), ApiError> {
        match &self.region {
            Some(mine) if region != Some(mine.as_str()) => Err(ApiError::scope_forbidden(format!(
                "{what} is in region `{}`, outside this reviewer's region `{mine}`",
                region.unwrap_or("-")
            ))),
            _ => Ok(()),
        }
    }
}

/// Which visits a listing shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VisitStatus {
    /// Submitted visits (the ones results count).
    #[default]
    Submitted,
    /// Visits not submitted (yet).
    Draft,
}

impl std::str::FromStr for VisitStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<VisitStatus, String> {
        match s {
            "submitted" => Ok(VisitStatus::Submitted),
            "draft" => Ok(VisitStatus::Draft),
            other => Err(format!("status must be `submitted` or `draft`, got `{other}`")),
        }
    }
}

/// One visit, for a reviewer.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct VisitView {
    /// The visit's record id.
    pub id: String,
    /// Its region.
    pub region: Option<String>,
    /// The institution's code.
    pub institution: Option<String>,
    /// The unit's code.
    pub unit: Option<String>,
    /// The product's code.
    pub product: Option<String>,
    /// The assessor whose device recorded it.
    pub assessor: Option<String>,
    /// `covert` or `announced`.
    pub mode: Option<String>,
    /// Where the service was observed.
    pub location: Option<String>,
    /// When the visit started (ms since 1970).
    pub started_at: Option<i64>,
    /// When it finished (ms since 1970).
    pub finished_at: Option<i64>,
    /// The instrument it is recorded and scored with.
    pub instrument: Option<InstrumentRef>,
    /// `submitted` or `draft`.
    pub status: VisitStatus,
    /// The op that submitted it (`origin#seq`), for submitted visits.
    pub submitted_by: Option<String>,
    /// How many ops were written on it, its respondents, notes or evidence after it
    /// was submitted.
    pub edits: usize,
    /// How many active corrections it and its respondents have.
    pub corrections: usize,
}

impl VisitView {
    /// One line for people.
    pub fn line(&self) -> String {
        let or_dash = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
        format!(
            "{}  {}/{}/{}  assessor {}  {} at {}  {}  finished {}  edits {}  corrections {}",
            self.id,
            or_dash(&self.institution),
            or_dash(&self.unit),
            or_dash(&self.product),
            or_dash(&self.assessor),
            or_dash(&self.mode),
            or_dash(&self.location),
            match self.status {
                VisitStatus::Submitted => "submitted",
                VisitStatus::Draft => "draft",
            },
            self.finished_at.map(time).unwrap_or_else(|| "-".into()),
            self.edits,
            self.corrections
        )
    }
}

/// A time for people: RFC 3339 in UTC.
fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

fn text(f: &BTreeMap<String, Value>, key: &str) -> Option<String> {
    f.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// The code of a registry record, by id (cached).
fn code_of(
    tx: &Transaction<'_>,
    cache: &mut BTreeMap<String, Option<String>>,
    id: Option<String>,
) -> Result<Option<String>, ApiError> {
    let Some(id) = id else { return Ok(None) };
    if let Some(code) = cache.get(&id) {
        return Ok(code.clone());
    }
    let code = ledger::field(tx, &id, "code")?.and_then(|v| v.as_str().map(str::to_owned));
    cache.insert(id, code.clone());
    Ok(code)
}

/// The op that submitted a visit: the applied op of least precedence that set its
/// `status` to `submitted`.
fn submission(tx: &Transaction<'_>, visit: &str) -> Result<Option<(String, i64, i64, i64)>, ApiError> {
    Ok(tx
        .query_row(
            "SELECT origin, seq, hlc_ms, hlc_c FROM ops WHERE entity = ?1 AND field = 'status' AND value = '\"submitted\"'
             AND quarantined = 0 ORDER BY hlc_ms, hlc_c, origin, seq LIMIT 1",
            [visit],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?)
}

/// One op written on a visit (or its respondents, notes or evidence) after the visit
/// was submitted (proto/sync-v1.md §2.6).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct EditView {
    /// The visit.
    pub visit: String,
    /// The record the op changed: the visit, or one of its respondents, notes or
    /// evidence.
    pub entity: String,
    /// That record's kind.
    pub kind: String,
    /// The field.
    pub field: String,
    /// The value it set.
    pub value: Value,
    /// The op, `origin#seq`.
    pub op: String,
    /// Its clock stamp.
    pub hlc: Hlc,
    /// Its author's wall clock (ms since 1970).
    pub wall: i64,
    /// The op that submitted the visit, `origin#seq`.
    pub submitted_by: String,
}

impl EditView {
    /// One line for people.
    pub fn line(&self) -> String {
        format!(
            "visit {}  {}/{} {} = {}  (op {}, hlc {}.{}, after {})",
            self.visit,
            self.kind,
            self.entity,
            self.field,
            self.value,
            self.op,
            self.hlc.ms,
            self.hlc.c,
            self.submitted_by
        )
    }
}

/// The edits after submission of one visit, in precedence order.
fn edits_of(tx: &Transaction<'_>, visit: &str) -> Result<Vec<EditView>, ApiError> {
    let Some((origin, seq, ms, c)) = submission(tx, visit)? else { return Ok(Vec::new()) };
    let submitted_by = format!("{origin}#{seq}");
    let mut stmt = tx.prepare_cached(
        "SELECT origin, seq, hlc_ms, hlc_c, wall, kind, entity, field, value FROM ops
         WHERE quarantined = 0
           AND (entity = ?1 OR entity IN (SELECT entity FROM fields WHERE field = 'visit' AND value = json_quote(?1)
                                           AND kind IN ('respondent', 'note', 'evidence') AND field NOT GLOB 'answer.*'))
           AND (hlc_ms, hlc_c, origin, seq) > (?2, ?3, ?4, ?5)
         ORDER BY hlc_ms, hlc_c, origin, seq",
    )?;
    let rows = stmt.query_map(params![visit, ms, c, origin, seq], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, i64>(4)?,
            r.get::<_, String>(5)?,
            r.get::<_, String>(6)?,
            r.get::<_, String>(7)?,
            r.get::<_, String>(8)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (o, s, ms, c, wall, kind, entity, field, value) = row?;
        out.push(EditView {
            visit: visit.to_owned(),
            entity,
            kind,
            field,
            value: serde_json::from_str(&value).unwrap_or(Value::Null),
            op: format!("{o}#{s}"),
            hlc: Hlc { ms: ms as u64, c: c as u32 },
            wall,
            submitted_by: submitted_by.clone(),
        });
    }
    Ok(out)
}

/// Visits held here (those with an instrument), in `region` (None: all), by id.
fn visit_ids(tx: &Transaction<'_>, region: Option<&str>) -> Result<Vec<(String, Option<String>)>, ApiError> {
    let mut stmt = tx.prepare_cached(
        "SELECT f.entity, e.region FROM fields f LEFT JOIN entities e ON e.entity = f.entity
         WHERE f.kind = 'visit' AND f.field = 'instrument' AND f.field NOT GLOB 'answer.*' AND (?1 IS NULL OR e.region = ?1)
         ORDER BY f.entity",
    )?;
    let rows = stmt.query_map([region], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// How many active corrections a visit and its respondents have.
fn active_corrections(tx: &Transaction<'_>, visit: &str) -> Result<usize, ApiError> {
    let n: i64 = tx.query_row(
        "SELECT COUNT(*) FROM fields t LEFT JOIN fields s ON s.entity = t.entity AND s.field = 'status'
         WHERE t.kind = 'correction' AND t.field = 'target' AND t.field NOT GLOB 'answer.*'
           AND (s.value IS NULL OR s.value = '\"active\"')
           AND json_extract(t.value, '$.id') IN
               (SELECT ?1 UNION SELECT entity FROM fields WHERE kind = 'respondent' AND field = 'visit' AND value = json_quote(?1)
                                 AND field NOT GLOB 'answer.*')",
        [visit],
        |r| r.get(0),
    )?;
    Ok(n as usize)
}

/// Visits in `region` (None: all) with `status`, of the institution with code
/// `institution` if given, ordered by institution, unit, product and id.
pub fn visits(
    tx: &Transaction<'_>,
    region: Option<&str>,
    status: VisitStatus,
    institution: Option<&str>,
) -> Result<Vec<VisitView>, ApiError> {
    let mut codes = BTreeMap::new();
    let mut out = Vec::new();
    for (id, visit_region) in visit_ids(tx, region)? {
        let f = fields_of(tx, &id)?;
        let this_status = if text(&f, "status").as_deref() == Some("submitted") {
            VisitStatus::Submitted
        } else {
            VisitStatus::Draft
        };
        if this_status != status {
            continue;
        }
        let institution_code = code_of(tx, &mut codes, text(&f, "institution"))?;
        if institution.is_some() && institution_code.as_deref() != institution {
            continue;
        }
        let submitted_by = submission(tx, &id)?.map(|(o, s, ..)| format!("{o}#{s}"));
        out.push(VisitView {
            region: visit_region,
            institution: institution_code,
            unit: code_of(tx, &mut codes, text(&f, "unit"))?,
            product: code_of(tx, &mut codes, text(&f, "product"))?,
            assessor: ledger::entity_scope(tx, &id)?.assessor,
            mode: text(&f, "mode"),
            location: text(&f, "location"),
            started_at: f.get("started_at").and_then(Value::as_i64),
            finished_at: f.get("finished_at").and_then(Value::as_i64),
            instrument: f.get("instrument").and_then(|v| serde_json::from_value(v.clone()).ok()),
            status: this_status,
            submitted_by,
            edits: edits_of(tx, &id)?.len(),
            corrections: active_corrections(tx, &id)?,
            id,
        });
    }
    out.sort_by(|a, b| (&a.institution, &a.unit, &a.product, &a.id).cmp(&(&b.institution, &b.unit, &b.product, &b.id)));
    Ok(out)
}

/// Edits after submission on visits in `region` (None: all), or on one visit.
pub fn edits(tx: &Transaction<'_>, region: Option<&str>, visit: Option<&str>) -> Result<Vec<EditView>, ApiError> {
    let mut out = Vec::new();
    for (id, _) in visit_ids(tx, region)? {
        if visit.is_none_or(|v| v == id) {
            out.extend(edits_of(tx, &id)?);
        }
    }
    Ok(out)
}

/// A correction as it stands.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CorrectionView {
    /// The correction's record id.
    pub id: String,
    /// The record corrected: a visit or a respondent.
    pub target: EntityRef,
    /// The visit (the target, or the respondent's visit).
    pub visit: Option<String>,
    /// The field corrected (`answer.<indicator>`).
    pub field: String,
    /// The corrected value, the one results use while the correction is active.
    pub value: Value,
    /// The value the field holds, as recorded (`null` if it has none).
    pub field_value: Value,
    /// Why: the reason given when it was made, or when it was withdrawn.
    pub reason: String,
    /// Who made or withdrew it.
    pub by: String,
    /// When (ms since 1970).
    pub at: i64,
    /// `active` or `withdrawn`.
    pub status: String,
    /// Its region (the target's).
    pub region: Option<String>,
}

impl CorrectionView {
    /// One line for people.
    pub fn line(&self) -> String {
        format!(
            "correction {} ({})  {} {}: {} → {}  by {} at {}: {}",
            self.id,
            self.status,
            self.target,
            self.field,
            self.field_value,
            self.value,
            self.by,
            time(self.at),
            self.reason
        )
    }
}

/// A correction written by one request, with the ops that wrote it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Written {
    /// The correction as it now stands.
    #[serde(flatten)]
    pub correction: CorrectionView,
    /// The ops written, `origin#seq` (empty when nothing needed writing).
    pub ops: Vec<String>,
}

/// Reads a correction record, if held (it is once it has its `target`).
fn correction(tx: &Transaction<'_>, id: &str) -> Result<Option<CorrectionView>, ApiError> {
    if kind_of(tx, id)? != Some(EntityKind::Correction) {
        return Ok(None);
    }
    let f = fields_of(tx, id)?;
    let Some(target) = f.get("target").and_then(|t| serde_json::from_value::<EntityRef>(t.clone()).ok()) else {
        return Ok(None);
    };
    let target_id = target.id.to_string();
    let field = text(&f, "field").unwrap_or_default();
    let visit = match target.kind {
        EntityKind::Respondent => ledger::field(tx, &target_id, "visit")?.and_then(|v| v.as_str().map(str::to_owned)),
        _ => Some(target_id.clone()),
    };
    Ok(Some(CorrectionView {
        id: id.to_owned(),
        visit,
        field_value: ledger::field(tx, &target_id, &field)?.unwrap_or(Value::Null),
        field,
        value: f.get("value").cloned().unwrap_or(Value::Null),
        reason: text(&f, "reason").unwrap_or_default(),
        by: text(&f, "by").unwrap_or_default(),
        at: f.get("at").and_then(Value::as_i64).unwrap_or(0),
        status: text(&f, "status").unwrap_or_else(|| "active".into()),
        region: ledger::entity_scope(tx, id)?.region,
        target,
    }))
}

/// Corrections in `region` (None: all), or of one visit and its respondents, by id.
pub fn corrections(
    tx: &Transaction<'_>,
    region: Option<&str>,
    visit: Option<&str>,
) -> Result<Vec<CorrectionView>, ApiError> {
    let ids: Vec<String> = tx
        .prepare_cached(
            "SELECT f.entity FROM fields f LEFT JOIN entities e ON e.entity = f.entity
             WHERE f.kind = 'correction' AND f.field = 'target' AND f.field NOT GLOB 'answer.*' AND (?1 IS NULL OR e.region = ?1)
             ORDER BY f.entity",
        )?
        .query_map([region], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for id in ids {
        if let Some(c) = correction(tx, &id)? {
            if visit.is_none_or(|v| c.visit.as_deref() == Some(v)) {
                out.push(c);
            }
        }
    }
    Ok(out)
}

/// `POST /v1/review/corrections` and `sidak-server review correct`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NewCorrection {
    /// The record corrected: `{"kind": "visit" | "respondent", "id": …}`.
    pub target: EntityRef,
    /// The field: `answer.<indicator id>`.
    pub field: String,
    /// The corrected value: an answer that fits the indicator (proto/sync-v1.md §2.4).
    pub value: Value,
    /// Why (1–2000 bytes).
    pub reason: String,
}

/// `POST /v1/review/corrections/{id}/withdraw` and `sidak-server review withdraw`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Withdrawal {
    /// Why (1–2000 bytes).
    pub reason: String,
}

/// `POST /v1/review/conflicts/resolve` and `sidak-server review resolve`: one of
/// `choose` or `value`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Resolution {
    /// The record whose field is in conflict (a visit or a respondent).
    pub entity: EntityId,
    /// The field in conflict (`answer.<indicator id>`).
    pub field: String,
    /// The version to keep: one of the conflict's versions, `origin#seq`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choose: Option<String>,
    /// Or a value entered by the reviewer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    /// Why (1–2000 bytes).
    pub reason: String,
}

/// A conflict resolved by a correction.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Resolved {
    /// The correction written.
    pub correction: Written,
    /// The conflicts on that field now, each naming the correction in `resolved_by`.
    pub conflicts: Vec<ConflictView>,
}

fn check_reason(reason: &str) -> Result<(), ApiError> {
    if reason.trim().is_empty() {
        return Err(ApiError::invalid_body("`reason` must say why (it is empty)"));
    }
    if reason.len() > MAX_REASON_BYTES {
        return Err(ApiError::invalid_body(format!("`reason` is longer than {MAX_REASON_BYTES} bytes")));
    }
    Ok(())
}

/// The kind of a record held here, if any.
fn kind_of(tx: &Transaction<'_>, entity: &str) -> Result<Option<EntityKind>, ApiError> {
    let kind: Option<String> =
        tx.query_row("SELECT kind FROM fields WHERE entity = ?1 LIMIT 1", [entity], |r| r.get(0)).optional()?;
    Ok(kind.and_then(|k| k.parse().ok()))
}

/// Checks, in this order, that `target` is a visit or respondent held here (404)
/// inside the reviewer's region (403), that `reason` says why, and that `value` is an
/// answer its instrument accepts for `field` (422) — the record model's check of an
/// op setting that field, as a push runs it.
fn check_correction(
    tx: &Transaction<'_>,
    instruments: &BTreeMap<InstrumentRef, Instrument>,
    who: &Reviewer,
    new: &NewCorrection,
    now_ms: i64,
) -> Result<(), ApiError> {
    let NewCorrection { target, field, value, reason } = new;
    let id = target.id.to_string();
    let field = field.as_str();
    let probe = match target.kind {
        EntityKind::Visit => "instrument",
        EntityKind::Respondent => "kind",
        other => {
            return Err(ApiError::invalid_correction(format!(
                "only answers of visits and respondents can be corrected, not of a {other}"
            )))
        }
    };
    if kind_of(tx, &id)? != Some(target.kind) || ledger::field(tx, &id, probe)?.is_none() {
        return Err(ApiError::not_found(format!("no {target} here")));
    }
    who.may_act_on(target, ledger::entity_scope(tx, &id)?.region.as_deref())?;
    check_reason(reason)?;
    if !field.starts_with(ANSWER_PREFIX) {
        return Err(ApiError::invalid_correction(format!(
            "`{field}` is not an answer: only `answer.<indicator>` fields can be corrected"
        )));
    }
    let origin: OriginId = ledger::server_binding(tx)?.origin;
    let op = Op::new(
        origin,
        1,
        Hlc { ms: now_ms.max(0) as u64, c: 0 },
        now_ms,
        *target,
        field,
        value.clone(),
        None,
        Sha256Digest::ZERO,
    );
    op.check_form().map_err(|e| ApiError::invalid_correction(format!("{target} `{field}`: {e}")))?;
    check_op(&op, Author::Server, &ServerView { tx, instruments })
        .map_err(|r| ApiError::invalid_correction(format!("{target} `{field}`: {} ({})", r.message, r.code)))
}

/// Writes `changes` as the server's ops, recomputes the institutions they touch, and
/// returns the ops' references.
fn write(
    tx: &Transaction<'_>,
    instruments: &BTreeMap<InstrumentRef, Instrument>,
    now_ms: i64,
    changes: &[(EntityRef, &str, Value)],
) -> Result<Vec<String>, ApiError> {
    let (ops, dirty) = ledger::author(tx, instruments, now_ms, changes)?;
    for institution in &dirty {
        results::recompute(tx, instruments, institution)?;
    }
    Ok(ops.iter().map(|o| o.op_ref().to_string()).collect())
}

fn read_back(tx: &Transaction<'_>, id: &str, ops: Vec<String>) -> Result<Written, ApiError> {
    let correction = correction(tx, id)?
        .ok_or_else(|| ApiError::internal(format!("correction {id} is not readable after writing")))?;
    Ok(Written { correction, ops })
}

/// The record a correction on the command line names: the visit, or a respondent of
/// it (`--visit V --respondent R`).
pub fn cli_target(tx: &Transaction<'_>, visit: EntityId, respondent: Option<EntityId>) -> Result<EntityRef, ApiError> {
    let Some(respondent) = respondent else { return Ok(EntityRef { kind: EntityKind::Visit, id: visit }) };
    let of = ledger::field(tx, &respondent.to_string(), "visit")?;
    match of.as_ref().and_then(Value::as_str) {
        None => Err(ApiError::not_found(format!("no respondent/{respondent} here"))),
        Some(v) if v != visit.to_string() => {
            Err(ApiError::invalid_body(format!("respondent/{respondent} is of visit/{v}, not of visit/{visit}")))
        }
        Some(_) => Ok(EntityRef { kind: EntityKind::Respondent, id: respondent }),
    }
}

/// Writes a correction of `target`'s `field` after every check, and recomputes the
/// results it changes.
pub fn correct(
    tx: &Transaction<'_>,
    instruments: &BTreeMap<InstrumentRef, Instrument>,
    who: &Reviewer,
    new: &NewCorrection,
    now_ms: i64,
) -> Result<Written, ApiError> {
    check_correction(tx, instruments, who, new, now_ms)?;
    let e = EntityRef { kind: EntityKind::Correction, id: EntityId(uuid::Uuid::now_v7()) };
    let changes = vec![
        (e, "target", serde_json::to_value(new.target)?),
        (e, "field", json!(new.field)),
        (e, "value", new.value.clone()),
        (e, "reason", json!(new.reason)),
        (e, "by", json!(who.by)),
        (e, "at", json!(now_ms)),
        (e, "status", json!("active")),
    ];
    let ops = write(tx, instruments, now_ms, &changes)?;
    read_back(tx, &e.id.to_string(), ops)
}

/// Withdraws a correction (its `status` becomes `withdrawn`, with the reason, who and
/// when) and recomputes the results it changes. Withdrawing a withdrawn correction
/// writes nothing.
pub fn withdraw(
    tx: &Transaction<'_>,
    instruments: &BTreeMap<InstrumentRef, Instrument>,
    who: &Reviewer,
    id: &str,
    withdrawal: &Withdrawal,
    now_ms: i64,
) -> Result<Written, ApiError> {
    let missing = || ApiError::not_found(format!("no correction `{id}` here"));
    let entity: EntityId = id.parse().map_err(|_| missing())?;
    let id = entity.to_string();
    let held = correction(tx, &id)?.ok_or_else(missing)?;
    who.may_act_on(&format!("correction {id}"), held.region.as_deref())?;
    check_reason(&withdrawal.reason)?;
    if held.status == "withdrawn" {
        return Ok(Written { correction: held, ops: Vec::new() });
    }
    let e = EntityRef { kind: EntityKind::Correction, id: entity };
    let changes = vec![
        (e, "status", json!("withdrawn")),
        (e, "reason", json!(withdrawal.reason)),
        (e, "by", json!(who.by)),
        (e, "at", json!(now_ms)),
    ];
    let ops = write(tx, instruments, now_ms, &changes)?;
    read_back(tx, &id, ops)
}

fn parse_op_ref(text: &str) -> Result<OpRef, ApiError> {
    let bad = || ApiError::invalid_body(format!("`choose` takes an op as `origin#seq`, got `{text}`"));
    let (origin, seq) = text.split_once('#').ok_or_else(bad)?;
    Ok(OpRef { origin: origin.parse().map_err(|_| bad())?, seq: seq.parse().map_err(|_| bad())? })
}

/// Resolves a conflict on a field by writing a correction: the chosen version's value,
/// or a value entered. The conflict then names the correction in `resolved_by`.
pub fn resolve(
    tx: &Transaction<'_>,
    instruments: &BTreeMap<InstrumentRef, Instrument>,
    who: &Reviewer,
    resolution: &Resolution,
    now_ms: i64,
) -> Result<Resolved, ApiError> {
    let chosen = match (&resolution.choose, &resolution.value) {
        (Some(op), None) => Some(parse_op_ref(op)?),
        (None, Some(_)) => None,
        _ => return Err(ApiError::invalid_body("give either `choose` (a version, `origin#seq`) or `value`, not both")),
    };
    let id = resolution.entity.to_string();
    let kind = kind_of(tx, &id)?.ok_or_else(|| ApiError::not_found(format!("no record {id} here")))?;
    let target = EntityRef { kind, id: resolution.entity };
    who.may_act_on(&target, ledger::entity_scope(tx, &id)?.region.as_deref())?;
    check_reason(&resolution.reason)?;
    let open = admin::conflicts_on(tx, &id, &resolution.field)?;
    if open.is_empty() {
        return Err(ApiError::not_found(format!("no conflict on {target} `{}`", resolution.field)));
    }
    let value = match (chosen, &resolution.value) {
        (Some(op), _) => {
            let wanted = op.to_string();
            let versions: Vec<&Value> = open.iter().flat_map(|c| &c.versions).collect();
            let version = versions.iter().find(|v| v["op"] == wanted.as_str()).ok_or_else(|| {
                let names: Vec<String> = versions.iter().filter_map(|v| v["op"].as_str().map(str::to_owned)).collect();
                ApiError::invalid_correction(format!(
                    "{wanted} is not a version of the conflict on {target} `{}` (versions: {})",
                    resolution.field,
                    names.join(", ")
                ))
            })?;
            version["value"].clone()
        }
        (None, Some(v)) => v.clone(),
        (None, None) => return Err(ApiError::internal("a resolution without a value passed its check")),
    };
    let new = NewCorrection { target, field: resolution.field.clone(), value, reason: resolution.reason.clone() };
    let correction = correct(tx, instruments, who, &new, now_ms)?;
    Ok(Resolved { correction, conflicts: admin::conflicts_on(tx, &id, &resolution.field)? })
}
