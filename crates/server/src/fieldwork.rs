//! What was recorded in the field for one institution, as people read it: its visits
//! with their codes, assessor, answers (recorded value and active correction), evidence,
//! notes and respondents. The report card, the dashboard's drill-down and the answers
//! export read it; scoring does not (that is `results`).

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{OptionalExtension, Transaction};
use serde::Serialize;
use serde_json::Value;
use sidak_core::instrument::InstrumentRef;
use sidak_core::records::ANSWER_PREFIX;

use crate::error::ApiError;
use crate::ledger;
use crate::results::{active_corrections, children, fields_of};

/// One evidence record of a visit.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct EvidenceItem {
    /// The file's SHA-256.
    pub sha256: String,
    /// Its media type (as recorded, or as announced at upload).
    pub media_type: Option<String>,
    /// Its size in bytes.
    pub size: Option<u64>,
    /// When it was captured (ms since 1970).
    pub captured_at: Option<i64>,
    /// The indicator it supports, if it names one.
    pub indicator: Option<String>,
    /// The visit that cites it.
    pub visit: String,
    /// Whether the whole file is held here (only then can it be downloaded).
    pub complete: bool,
    /// Where the API serves it: `/v1/evidence/{sha256}`.
    pub href: String,
}

impl EvidenceItem {
    /// True for photos and other images, which pages show as thumbnails.
    pub fn is_image(&self) -> bool {
        self.media_type.as_deref().is_some_and(|m| m.starts_with("image/"))
    }
}

/// One note of a visit.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct NoteItem {
    /// The text.
    pub text: String,
    /// The indicator it is about, if any.
    pub indicator: Option<String>,
    /// When it was written (ms since 1970).
    pub created_at: Option<i64>,
    /// Its visit.
    pub visit: String,
}

/// One respondent questionnaire of a visit.
#[derive(Clone, Debug, PartialEq)]
pub struct RespondentFacts {
    /// Record id.
    pub id: String,
    /// `official`, `complaint_officer` or `service_user`.
    pub kind: String,
    /// Answers as recorded, by indicator.
    pub answers: BTreeMap<String, Value>,
    /// Active corrections, by indicator.
    pub corrected: BTreeMap<String, Value>,
}

/// One visit.
#[derive(Clone, Debug, PartialEq)]
pub struct VisitFacts {
    /// Record id.
    pub id: String,
    /// The unit's code.
    pub unit: String,
    /// The product's code.
    pub product: String,
    /// The assessor whose device recorded it.
    pub assessor: Option<String>,
    /// `covert` or `announced`.
    pub mode: Option<String>,
    /// Where the service was observed.
    pub location: Option<String>,
    /// The instrument it is recorded with.
    pub instrument: Option<InstrumentRef>,
    /// When it finished (ms since 1970).
    pub finished_at: Option<i64>,
    /// Whether it is submitted (only submitted visits count in results).
    pub submitted: bool,
    /// Answers as recorded, by indicator.
    pub answers: BTreeMap<String, Value>,
    /// Active corrections, by indicator.
    pub corrected: BTreeMap<String, Value>,
    /// Its evidence.
    pub evidence: Vec<EvidenceItem>,
    /// Its notes.
    pub notes: Vec<NoteItem>,
    /// Its questionnaires.
    pub respondents: Vec<RespondentFacts>,
}

/// The fieldwork of one institution.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Fieldwork {
    /// Its visits, by finished time then id (the order in which later answers win).
    pub visits: Vec<VisitFacts>,
}

fn text(f: &BTreeMap<String, Value>, key: &str) -> Option<String> {
    f.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn answers_of(f: &BTreeMap<String, Value>) -> BTreeMap<String, Value> {
    f.iter().filter_map(|(k, v)| k.strip_prefix(ANSWER_PREFIX).map(|i| (i.to_owned(), v.clone()))).collect()
}

impl Fieldwork {
    /// The visits of the institution record `institution`, recorded with `instrument`
    /// (any, when `None`), submitted ones only when `submitted_only`.
    pub fn load(
        tx: &Transaction<'_>,
        institution: &str,
        instrument: Option<&InstrumentRef>,
        submitted_only: bool,
    ) -> Result<Fieldwork, ApiError> {
        let mut codes: BTreeMap<String, String> = BTreeMap::new();
        let mut code_of = |tx: &Transaction<'_>, id: &str| -> Result<String, ApiError> {
            if let Some(c) = codes.get(id) {
                return Ok(c.clone());
            }
            let code = ledger::field(tx, id, "code")?.and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
            codes.insert(id.to_owned(), code.clone());
            Ok(code)
        };
        let mut visits = Vec::new();
        for id in children(tx, "visit", "institution", institution)? {
            let f = fields_of(tx, &id)?;
            let reference: Option<InstrumentRef> =
                f.get("instrument").and_then(|v| serde_json::from_value(v.clone()).ok());
            if instrument.is_some() && reference.as_ref() != instrument {
                continue;
            }
            let submitted = text(&f, "status").as_deref() == Some("submitted");
            if submitted_only && !submitted {
                continue;
            }
            let unit = match text(&f, "unit") {
                Some(u) => code_of(tx, &u)?,
                None => String::new(),
            };
            let product = match text(&f, "product") {
                Some(p) => code_of(tx, &p)?,
                None => String::new(),
            };
            let mut evidence = Vec::new();
            for e in children(tx, "evidence", "visit", &id)? {
                let ef = fields_of(tx, &e)?;
                let Some(sha) = text(&ef, "sha256") else { continue };
                let blob: Option<(String, i64)> = tx
                    .query_row("SELECT media_type, complete FROM blobs WHERE sha256 = ?1", [&sha], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .optional()?;
                evidence.push(EvidenceItem {
                    media_type: text(&ef, "media_type").or_else(|| blob.as_ref().map(|b| b.0.clone())),
                    size: ef.get("size").and_then(Value::as_u64),
                    captured_at: ef.get("captured_at").and_then(Value::as_i64),
                    indicator: text(&ef, "indicator"),
                    visit: id.clone(),
                    complete: blob.is_some_and(|b| b.1 == 1),
                    href: format!("/v1/evidence/{sha}"),
                    sha256: sha,
                });
            }
            let mut notes = Vec::new();
            for n in children(tx, "note", "visit", &id)? {
                let nf = fields_of(tx, &n)?;
                notes.push(NoteItem {
                    text: text(&nf, "text").unwrap_or_default(),
                    indicator: text(&nf, "indicator"),
                    created_at: nf.get("created_at").and_then(Value::as_i64),
                    visit: id.clone(),
                });
            }
            notes.sort_by_key(|n| n.created_at);
            let mut respondents = Vec::new();
            for r in children(tx, "respondent", "visit", &id)? {
                let rf = fields_of(tx, &r)?;
                let Some(kind) = text(&rf, "kind") else { continue };
                respondents.push(RespondentFacts { id: r, kind, answers: answers_of(&rf), corrected: BTreeMap::new() });
            }
            visits.push(VisitFacts {
                assessor: ledger::entity_scope(tx, &id)?.assessor,
                mode: text(&f, "mode"),
                location: text(&f, "location"),
                instrument: reference,
                finished_at: f.get("finished_at").and_then(Value::as_i64),
                submitted,
                answers: answers_of(&f),
                corrected: BTreeMap::new(),
                evidence,
                notes,
                respondents,
                unit,
                product,
                id,
            });
        }
        let targets: BTreeSet<String> = visits
            .iter()
            .flat_map(|v| std::iter::once(v.id.clone()).chain(v.respondents.iter().map(|r| r.id.clone())))
            .collect();
        for ((target, field), value) in active_corrections(tx, &targets)? {
            let Some(indicator) = field.strip_prefix(ANSWER_PREFIX) else { continue };
            for v in &mut visits {
                if v.id == target {
                    v.corrected.insert(indicator.to_owned(), value.clone());
                }
                for r in &mut v.respondents {
                    if r.id == target {
                        r.corrected.insert(indicator.to_owned(), value.clone());
                    }
                }
            }
        }
        visits.sort_by(|a, b| (a.finished_at.unwrap_or(0), &a.id).cmp(&(b.finished_at.unwrap_or(0), &b.id)));
        Ok(Fieldwork { visits })
    }

    /// The visits of a unit (and of one of its products, when given), or all visits
    /// when `unit` is `None`.
    pub fn of<'a>(&'a self, unit: Option<&'a str>, product: Option<&'a str>) -> impl Iterator<Item = &'a VisitFacts> {
        self.visits.iter().filter(move |v| unit.is_none_or(|u| v.unit == u) && product.is_none_or(|p| v.product == p))
    }

    /// Evidence citing `indicator` on the visits of a unit (and product).
    pub fn evidence_for(&self, unit: Option<&str>, product: Option<&str>, indicator: &str) -> Vec<EvidenceItem> {
        self.of(unit, product)
            .flat_map(|v| &v.evidence)
            .filter(|e| e.indicator.as_deref() == Some(indicator))
            .cloned()
            .collect()
    }

    /// Notes about `indicator` on the visits of a unit (and product).
    pub fn notes_for(&self, unit: Option<&str>, product: Option<&str>, indicator: &str) -> Vec<NoteItem> {
        self.of(unit, product)
            .flat_map(|v| &v.notes)
            .filter(|n| n.indicator.as_deref() == Some(indicator))
            .cloned()
            .collect()
    }
}
