//! Results: building the scoring input of an institution from the materialised state,
//! recomputing it (incrementally, per institution an op touched), and reading results.
//!
//! Every visit is scored against the instrument version it was recorded with: an
//! institution has one result per instrument version its visits and assignments use.
//! Only submitted visits count. Where several visits answer the same thing, the later
//! one (by finished time, then id) wins. A supervisor's correction replaces the field
//! value it corrects, and the result shows the field value beside it; evidence counts
//! once its file is complete on this tier.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{params, OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sidak_core::canonical::parse_stored;
use sidak_core::instrument::{Instrument, InstrumentRef, Level, Location, RespondentKind};
use sidak_core::num::{Exact, Published};
use sidak_core::records::ANSWER_PREFIX;
use sidak_core::scoring::{
    institution_document, score_institution, unit_document, AnswerInput, DeductionInput, InstitutionInput, NodeResult,
    ProductInput, RespondentInput, Status, UnitInput, UnitResult,
};

use crate::db::{meta, set_meta};
use crate::error::ApiError;

/// All fields of a record.
pub fn fields_of(tx: &Transaction<'_>, entity: &str) -> Result<BTreeMap<String, Value>, ApiError> {
    let mut stmt = tx.prepare_cached("SELECT field, value FROM fields WHERE entity = ?1")?;
    let rows = stmt.query_map([entity], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = BTreeMap::new();
    for row in rows {
        let (f, v) = row?;
        out.insert(f, parse_stored(&v));
    }
    Ok(out)
}

/// The lookup [`children`] makes, through the value index (which holds no answers).
pub const CHILDREN_SQL: &str =
    "SELECT entity FROM fields WHERE kind = ?1 AND field = ?2 AND value = json_quote(?3) AND field NOT GLOB 'answer.*' ORDER BY entity";

/// Every record of `kind`, by id, through the value index.
pub fn ids_of_kind(tx: &Transaction<'_>, kind: &str) -> Result<Vec<String>, ApiError> {
    let mut stmt = tx.prepare_cached(
        "SELECT DISTINCT entity FROM fields WHERE kind = ?1 AND field NOT GLOB 'answer.*' ORDER BY entity",
    )?;
    let rows = stmt.query_map([kind], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Records of `kind` whose `field` refers to `target`. `field` is a reference, never an
/// answer: answers are not in the value index this looks up.
pub fn children(tx: &Transaction<'_>, kind: &str, field: &str, target: &str) -> Result<Vec<String>, ApiError> {
    if field.starts_with(sidak_core::records::ANSWER_PREFIX) {
        return Err(ApiError::internal(format!("answers are not looked up by value (`{field}`)")));
    }
    let mut stmt = tx.prepare_cached(CHILDREN_SQL)?;
    let rows = stmt.query_map(params![kind, field, target], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A record's fields, kept sorted by name: each name and stored JSON text copied into
/// one buffer as the store hands them over, and each value parsed the first time it is
/// read. A recompute reads every field of the institution (a hot path), on the thread
/// that holds the store; parsing the values there, and allocating a name and a value for
/// each, made that thread the slower of the two in a full recompute. Copied bytes are
/// cheap, and the values are parsed where they are scored (see [`recompute_all`]).
/// The store hands fields over in key order, so they are appended, not inserted.
#[derive(Default)]
struct Fields {
    /// Every name and stored value, one after another (a replaced value stays, unused).
    text: String,
    entries: Vec<Field>,
}

/// Where one field's name and stored value lie in [`Fields::text`], and its value once
/// parsed.
struct Field {
    name: (usize, usize),
    stored: (usize, usize),
    value: std::cell::OnceCell<Value>,
}

impl Fields {
    fn name(&self, field: &Field) -> &str {
        &self.text[field.name.0..field.name.1]
    }

    /// Where `name` is among the fields (or would go). Names are compared as bytes, which
    /// orders them as strings do, without checking the slices' character boundaries.
    fn find(&self, name: &str) -> Result<usize, usize> {
        let text = self.text.as_bytes();
        self.entries.binary_search_by(|f| text[f.name.0..f.name.1].cmp(name.as_bytes()))
    }

    fn value<'f>(&'f self, field: &'f Field) -> &'f Value {
        field.value.get_or_init(|| parse_stored(&self.text[field.stored.0..field.stored.1]))
    }

    fn get(&self, name: &str) -> Option<&Value> {
        let at = self.find(name).ok()?;
        Some(self.value(&self.entries[at]))
    }

    /// Copies `text` into the buffer; returns where it lies.
    fn push_text(&mut self, text: &str) -> (usize, usize) {
        if self.text.capacity() == 0 {
            // About a record's worth (ten fields of 30 bytes), so that few grow it.
            self.text.reserve(320);
        }
        let start = self.text.len();
        self.text.push_str(text);
        (start, self.text.len())
    }

    /// Sets a field to a stored JSON text (read when the value is first asked for),
    /// replacing a value it held.
    fn insert(&mut self, name: &str, stored: &str) {
        let at = match self.entries.last() {
            Some(last) if self.name(last) >= name => self.find(name),
            _ => Err(self.entries.len()),
        };
        let stored = self.push_text(stored);
        match at {
            Ok(i) => self.entries[i] = Field { name: self.entries[i].name, stored, value: Default::default() },
            Err(i) => {
                let name = self.push_text(name);
                self.entries.insert(i, Field { name, stored, value: Default::default() });
            }
        }
    }

    /// The fields, by name.
    fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|f| (self.name(f), self.value(f)))
    }
}

fn text(f: &Fields, key: &str) -> Option<String> {
    str_of(f, key).map(str::to_owned)
}

fn str_of<'f>(f: &'f Fields, key: &str) -> Option<&'f str> {
    f.get(key).and_then(Value::as_str)
}

fn instrument_of(f: &Fields) -> Option<InstrumentRef> {
    // Deserialised from the value in place (as `from_value` would, without a copy).
    f.get("instrument").and_then(|v| InstrumentRef::deserialize(v).ok())
}

/// Answers as a scoring input is built from them: borrowed from the records (or from a
/// correction), sorted by indicator id.
type Answers<'r> = Vec<(&'r str, &'r Value)>;

/// The answers among a record's fields (they are sorted by name, so these are too).
fn answers_of(fields: &Fields) -> Answers<'_> {
    fields.iter().filter_map(|(k, v)| k.strip_prefix(ANSWER_PREFIX).map(|i| (i, v))).collect()
}

/// One submitted visit, with corrections applied.
struct Visit<'r> {
    id: &'r str,
    unit: &'r str,
    product: &'r str,
    location: Location,
    order: (i64, &'r str),
    answers: Answers<'r>,
    /// Each answer's level in the instrument, in `answers`' order (`None`: not in it).
    /// Looked up once: the input is built per product, unit and institution.
    levels: Vec<Option<Level>>,
    /// The field values that corrections replaced (`null`: the field had none).
    field_values: BTreeMap<&'r str, &'r Value>,
    evidence: BTreeMap<String, Vec<String>>,
}

/// One respondent of a submitted visit, with corrections applied.
struct Respondent<'r> {
    id: &'r str,
    visit: &'r str,
    kind: RespondentKind,
    answers: Answers<'r>,
    /// The field values that corrections replaced (`null`: the field had none).
    field_values: BTreeMap<&'r str, &'r Value>,
}

/// What a corrected answer had no field value for.
static NULL: Value = Value::Null;

/// Replaces `indicator`'s answer with a correction, keeping the field value.
fn correct<'r>(
    answers: &mut Answers<'r>,
    field_values: &mut BTreeMap<&'r str, &'r Value>,
    indicator: &'r str,
    value: &'r Value,
) {
    let recorded = match answers.binary_search_by(|(id, _)| (*id).cmp(indicator)) {
        Ok(at) => std::mem::replace(&mut answers[at].1, value),
        Err(at) => {
            answers.insert(at, (indicator, value));
            &NULL
        }
    };
    field_values.entry(indicator).or_insert(recorded);
}

/// An answer as scoring reads it: noting the field value where a correction replaced it.
fn answer_input(value: &Value, evidence: Vec<String>, field_value: Option<&Value>) -> AnswerInput {
    let answer = AnswerInput::with_evidence(value.clone(), evidence);
    match field_value {
        Some(recorded) => answer.correcting(recorded.clone()),
        None => answer,
    }
}

/// A field's clock stamp: HLC milliseconds, counter, and the origin that wrote it.
type Stamp = (i64, i64, String);

/// One record's kind and fields, and the clock stamp of its `value` field (what orders
/// corrections).
#[derive(Default)]
struct Record {
    kind: String,
    fields: Fields,
    value_stamp: Stamp,
}

/// The columns a [`Record`] is read from, in this order. The clock stamp that orders
/// corrections is read apart, for corrections only ([`Records::stamp_corrections`]):
/// carried on every row, its three columns cost every row of a recompute's read.
const RECORD_COLUMNS: &str = "f.entity, f.kind, f.field, f.value";

impl Record {
    /// Takes one field of the record from a row selected with [`RECORD_COLUMNS`].
    fn take(&mut self, r: &rusqlite::Row<'_>) -> Result<(), ApiError> {
        if self.kind.is_empty() {
            self.kind = r.get(1)?;
        }
        let field = r.get_ref(2)?.as_str().map_err(rusqlite::Error::from)?;
        let value = r.get_ref(3)?.as_str().map_err(rusqlite::Error::from)?;
        self.fields.insert(field, value);
        Ok(())
    }
}

/// The query that reads nearly every row an institution's results are made from (`?1`:
/// the institution's record id): the fields of every record placed in the institution,
/// and of the corrections and deductions not placed yet. It selects each record's
/// `entities` rowid in place of its id, then `kind, field, value`: an integer read on
/// every row is cheaper than a 36-byte id, and [`institution_entities_sql`] gives each
/// rowid's id once. [`Records`] reads through both; the benchmark times them alone, as
/// the floor under one institution's recompute.
pub fn institution_records_sql() -> String {
    format!(
        "SELECT e.rowid, {PLACED_COLUMNS} FROM entities e JOIN fields f ON f.entity = e.entity WHERE e.institution = ?1
         UNION ALL
         SELECT e.rowid, {PLACED_COLUMNS} FROM entities e INDEXED BY entities_unplaced JOIN fields f ON f.entity = e.entity
         WHERE {UNPLACED}"
    )
}

/// The records [`institution_records_sql`] reads (`?1`: the institution's record id):
/// each one's `entities` rowid and id.
pub fn institution_entities_sql() -> String {
    format!(
        "SELECT e.rowid, e.entity FROM entities e WHERE e.institution = ?1
         UNION ALL
         SELECT e.rowid, e.entity FROM entities e INDEXED BY entities_unplaced WHERE {UNPLACED}"
    )
}

/// The columns after the rowid in [`institution_records_sql`]: [`RECORD_COLUMNS`]'
/// own, but for the id.
const PLACED_COLUMNS: &str = "f.kind, f.field, f.value";

/// The records an institution's results read that are placed in no institution yet.
const UNPLACED: &str = "e.institution IS NULL AND e.kind IN ('correction', 'deduction')";

/// How the rows a [`Records`] is filled from name their record: by its id, or by its
/// `entities` rowid, whose id the map holds.
#[derive(Clone, Copy)]
enum RowKey<'m> {
    Id,
    Rowid(&'m std::collections::HashMap<i64, String>),
}

/// Every record an institution's results read, by id: loaded in one query through each
/// record's stored institution (`entities.institution`), with the records that query
/// cannot place yet (corrections and deductions of records not here yet, records that
/// arrived before the record they belong to) looked up by their fields as before.
struct Records {
    institution: String,
    by_id: BTreeMap<String, Record>,
    /// The evidence files (sha256) among the records' that are complete here.
    complete: BTreeSet<String>,
}

impl Records {
    /// No records yet, read for `institution`.
    fn new(institution: &str) -> Records {
        Records { institution: institution.to_owned(), by_id: BTreeMap::new(), complete: BTreeSet::new() }
    }

    /// The records an institution's results read (see [`Records`]).
    fn load(tx: &Transaction<'_>, institution: &str) -> Result<Records, ApiError> {
        let mut records = Records::new(institution);
        let ids = tx
            .prepare_cached(&institution_entities_sql())?
            .query_map([institution], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        records.add_rows(tx, &institution_records_sql(), [institution], RowKey::Rowid(&ids))?;
        // Visits, units and assignments name their institution (or unit) in a field.
        let mut tops = children(tx, "visit", "institution", institution)?;
        let units = children(tx, "unit", "institution", institution)?;
        for u in &units {
            tops.extend(children(tx, "assignment", "unit", u)?);
        }
        tops.extend(units);
        for id in tops {
            if !records.by_id.contains_key(&id) {
                records.fetch(tx, &id)?;
                // Its questionnaires and evidence were not placed either.
                for kind in ["respondent", "evidence"] {
                    for child in children(tx, kind, "visit", &id)? {
                        if !records.by_id.contains_key(&child) {
                            records.fetch(tx, &child)?;
                        }
                    }
                }
            }
        }
        // The products the institution's assignments and visits name, where the query
        // above did not place them, and whether each evidence file is complete here:
        // once read, the records are all the scoring input needs (see `input_of`).
        let named: BTreeSet<String> = records
            .by_id
            .values()
            .flat_map(|r| match r.kind.as_str() {
                "assignment" => r
                    .fields
                    .get("products")
                    .and_then(Value::as_array)
                    .map(|p| p.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                    .unwrap_or_default(),
                "visit" => text(&r.fields, "product").into_iter().collect(),
                _ => Vec::new(),
            })
            .filter(|p| !records.by_id.contains_key(p))
            .collect();
        for p in named {
            records.fetch(tx, &p)?;
        }
        let mut complete = tx.prepare_cached("SELECT complete FROM blobs WHERE sha256 = ?1")?;
        for r in records.by_id.values().filter(|r| r.kind == "evidence") {
            let Some(sha) = r.fields.get("sha256").and_then(Value::as_str) else { continue };
            if complete.query_row([sha], |r| r.get::<_, i64>(0)).optional()? == Some(1) {
                records.complete.insert(sha.to_owned());
            }
        }
        drop(complete);
        records.stamp_corrections(tx)?;
        Ok(records)
    }

    /// The records the rows of `sql` (selecting [`RECORD_COLUMNS`]) hold, as read for
    /// `institution` (empty where no institution's results are made from them), their
    /// corrections not stamped yet.
    fn read(
        tx: &Transaction<'_>,
        institution: &str,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Records, ApiError> {
        let mut records = Records::new(institution);
        records.add(tx, sql, params)?;
        Ok(records)
    }

    /// Reads the clock stamp of each correction's `value` field, which orders
    /// corrections of the same field ([`Records::corrections`]).
    fn stamp_corrections(&mut self, tx: &Transaction<'_>) -> Result<(), ApiError> {
        let mut stamp =
            tx.prepare_cached("SELECT hlc_ms, hlc_c, v_origin FROM fields WHERE entity = ?1 AND field = 'value'")?;
        for (id, record) in self.by_id.iter_mut().filter(|(_, r)| r.kind == "correction") {
            if let Some(s) = stamp.query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).optional()? {
                record.value_stamp = s;
            }
        }
        Ok(())
    }

    /// Adds the records the rows of `sql` (selecting [`RECORD_COLUMNS`]) hold.
    fn add(&mut self, tx: &Transaction<'_>, sql: &str, params: impl rusqlite::Params) -> Result<(), ApiError> {
        self.add_rows(tx, sql, params, RowKey::Id)
    }

    /// Adds the records the rows of `sql` hold: each row selects its record (as `key`
    /// says), then `kind, field, value`.
    fn add_rows(
        &mut self,
        tx: &Transaction<'_>,
        sql: &str,
        params: impl rusqlite::Params,
        key: RowKey<'_>,
    ) -> Result<(), ApiError> {
        let mut stmt = tx.prepare_cached(sql)?;
        let mut rows = stmt.query(params)?;
        // The rows come grouped by record (each query reads a record's fields through the
        // `fields` key), so the record being filled is held aside and the map is searched
        // only when the record changes, not for every field. Any order stays correct.
        // Held: the record's rowid (where rows name it), id and fields.
        let mut filling: Option<(Option<i64>, String, Record)> = None;
        while let Some(r) = rows.next()? {
            let same = match (&filling, key) {
                (None, _) => false,
                (Some((_, id, _)), RowKey::Id) => r.get_ref(0)?.as_str().map_err(rusqlite::Error::from)? == id,
                (Some((rowid, _, _)), RowKey::Rowid(_)) => Some(r.get::<_, i64>(0)?) == *rowid,
            };
            if !same {
                if let Some((_, id, record)) = filling.take() {
                    self.by_id.insert(id, record);
                }
                let (rowid, id) = match key {
                    RowKey::Id => (None, r.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?.to_owned()),
                    RowKey::Rowid(ids) => {
                        let rowid = r.get::<_, i64>(0)?;
                        let id = ids
                            .get(&rowid)
                            .cloned()
                            .ok_or_else(|| ApiError::internal(format!("record {rowid} was read without its id")))?;
                        (Some(rowid), id)
                    }
                };
                let record = self.by_id.remove(&id).unwrap_or_default();
                filling = Some((rowid, id, record));
            }
            if let Some((_, _, record)) = &mut filling {
                record.take(r)?;
            }
        }
        if let Some((_, id, record)) = filling {
            self.by_id.insert(id, record);
        }
        Ok(())
    }

    /// Reads one record into the set by its id.
    fn fetch(&mut self, tx: &Transaction<'_>, id: &str) -> Result<(), ApiError> {
        self.add(tx, &format!("SELECT {RECORD_COLUMNS} FROM fields f WHERE f.entity = ?1"), [id])
    }

    /// Records of `kind` whose `field` names `target`, by id.
    fn children<'r>(
        &'r self,
        kind: &'r str,
        field: &'r str,
        target: &'r str,
    ) -> impl Iterator<Item = (&'r String, &'r Record)> + 'r {
        self.by_id
            .iter()
            .filter(move |(_, r)| r.kind == kind && r.fields.get(field).and_then(Value::as_str) == Some(target))
    }

    /// Records of `kind` whose `target` field names `target`.
    fn targeting<'r>(&'r self, kind: &'r str, target: &'r str) -> impl Iterator<Item = (&'r String, &'r Record)> + 'r {
        self.by_id.iter().filter(move |(_, r)| {
            r.kind == kind && r.fields.get("target").and_then(|t| t.get("id")).and_then(Value::as_str) == Some(target)
        })
    }

    fn fields(&self, id: &str) -> Option<&Fields> {
        self.by_id.get(id).map(|r| &r.fields)
    }

    /// The instrument versions the institution's visits and assignments use.
    fn instruments_used(&self) -> BTreeSet<InstrumentRef> {
        self.by_id
            .values()
            .filter(|r| {
                matches!(r.kind.as_str(), "visit" | "assignment")
                    && r.fields.get("institution").and_then(Value::as_str) == Some(self.institution.as_str())
            })
            .filter_map(|r| instrument_of(&r.fields))
            .collect()
    }

    /// Active corrections of `targets` by (target record, field): the latest by its
    /// `value` op's clock stamp wins.
    fn corrections(&self, wanted: impl Fn(&str) -> bool) -> BTreeMap<(String, String), Value> {
        let mut out: BTreeMap<(String, String), (Stamp, Value)> = BTreeMap::new();
        for (id, r) in &self.by_id {
            if r.kind != "correction" || text(&r.fields, "status").as_deref() == Some("withdrawn") {
                continue;
            }
            let Some(target) = r.fields.get("target").and_then(|t| t.get("id")).and_then(Value::as_str) else {
                continue;
            };
            if !wanted(target) {
                continue;
            }
            let (Some(field), Some(value)) = (text(&r.fields, "field"), r.fields.get("value")) else { continue };
            let stamp = (r.value_stamp.0, r.value_stamp.1, format!("{}{id}", r.value_stamp.2));
            let key = (target.to_owned(), field);
            if out.get(&key).is_none_or(|(held, _)| *held < stamp) {
                out.insert(key, (stamp, value.clone()));
            }
        }
        out.into_iter().map(|(k, (_, v))| (k, v)).collect()
    }
}

/// The scoring input of an institution for one instrument, from current state.
pub fn institution_input(
    tx: &Transaction<'_>,
    institution: &str,
    instrument: &Instrument,
) -> Result<Option<InstitutionInput>, ApiError> {
    let records = Records::load(tx, institution)?;
    Ok(input_of(&records, instrument).map(|(input, _)| input))
}

/// The scoring input of the institution `records` hold, for one instrument, and the
/// record id of each of its units (in the input's order). Pure: the records hold all
/// it reads, so that a full recompute builds it off the store's thread.
fn input_of(records: &Records, instrument: &Instrument) -> Option<(InstitutionInput, Vec<String>)> {
    let institution = records.institution.as_str();
    let inst = records.fields(institution)?;
    let code = text(inst, "code")?;
    let reference = &instrument.reference;
    let unit_fields: BTreeMap<&str, &Fields> =
        records.children("unit", "institution", institution).map(|(id, r)| (id.as_str(), &r.fields)).collect();

    // The corrections of these records' fields (those of other records' go unused).
    let corrections = records.corrections(|_| true);

    // Visits recorded with this instrument and submitted.
    let mut visits = Vec::new();
    for (v, r) in records.children("visit", "institution", institution) {
        let f = &r.fields;
        if instrument_of(f).as_ref() != Some(reference) || str_of(f, "status") != Some("submitted") {
            continue;
        }
        let (Some(unit), Some(product)) = (str_of(f, "unit"), str_of(f, "product")) else { continue };
        let location = str_of(f, "location").and_then(Location::from_name).unwrap_or(Location::OwnOffice);
        let order = (f.get("finished_at").and_then(Value::as_i64).unwrap_or(0), v.as_str());
        visits.push(Visit {
            id: v,
            unit,
            product,
            location,
            order,
            answers: answers_of(f),
            levels: Vec::new(),
            field_values: BTreeMap::new(),
            evidence: BTreeMap::new(),
        });
    }
    visits.sort_by(|a, b| a.order.cmp(&b.order));
    let visit_index: BTreeMap<&str, usize> = visits.iter().enumerate().map(|(i, v)| (v.id, i)).collect();

    // Respondents of those visits, in visit order.
    let mut of_visit: BTreeMap<usize, Vec<Respondent<'_>>> = BTreeMap::new();
    let mut evidence: Vec<(usize, &Fields)> = Vec::new();
    for (id, r) in &records.by_id {
        // Most records are visits and products: their kind is cheaper to read than a field.
        if !matches!(r.kind.as_str(), "respondent" | "evidence") {
            continue;
        }
        let Some(at) = r.fields.get("visit").and_then(Value::as_str).and_then(|v| visit_index.get(v)) else { continue };
        match r.kind.as_str() {
            "respondent" => {
                let Some(kind) = str_of(&r.fields, "kind").and_then(RespondentKind::from_name) else { continue };
                of_visit.entry(*at).or_default().push(Respondent {
                    id,
                    visit: visits[*at].id,
                    kind,
                    answers: answers_of(&r.fields),
                    field_values: BTreeMap::new(),
                });
            }
            "evidence" => evidence.push((*at, &r.fields)),
            _ => {}
        }
    }
    let mut respondents: Vec<Respondent<'_>> = of_visit.into_values().flatten().collect();

    // Corrections replace the values they correct.
    let respondent_index: BTreeMap<&str, usize> = respondents.iter().enumerate().map(|(i, r)| (r.id, i)).collect();
    for ((target, field), value) in &corrections {
        let Some(indicator) = field.strip_prefix(ANSWER_PREFIX) else { continue };
        if let Some(v) = visit_index.get(target.as_str()).map(|&i| &mut visits[i]) {
            correct(&mut v.answers, &mut v.field_values, indicator, value);
        }
        if let Some(r) = respondent_index.get(target.as_str()).map(|&i| &mut respondents[i]) {
            correct(&mut r.answers, &mut r.field_values, indicator, value);
        }
    }

    // The answers are final now (corrections applied): their levels, once.
    for v in &mut visits {
        v.levels = v.answers.iter().map(|(id, _)| instrument.indicator(id).map(|i| i.level)).collect();
    }

    // Evidence, once its file is complete here.
    for (at, f) in evidence {
        let (Some(sha), Some(indicator)) = (text(f, "sha256"), text(f, "indicator")) else { continue };
        if records.complete.contains(&sha) {
            visits[at].evidence.entry(indicator).or_default().push(sha);
        }
    }

    // Units and products in play: assigned with this instrument, or visited with it.
    let mut in_play: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for unit in unit_fields.keys() {
        for (_, a) in records.children("assignment", "unit", unit) {
            let f = &a.fields;
            if instrument_of(f).as_ref() != Some(reference) || text(f, "status").as_deref() == Some("cancelled") {
                continue;
            }
            let products = f
                .get("products")
                .and_then(Value::as_array)
                .map(|p| p.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
                .unwrap_or_default();
            in_play.entry((*unit).to_owned()).or_default().extend::<BTreeSet<String>>(products);
        }
    }
    for v in &visits {
        in_play.entry(v.unit.to_owned()).or_default().insert(v.product.to_owned());
    }
    if in_play.is_empty() {
        return None;
    }

    let answers_at = |level: Level, visits: &[&Visit<'_>]| -> BTreeMap<String, AnswerInput> {
        let mut out = BTreeMap::new();
        for v in visits {
            debug_assert_eq!(v.levels.len(), v.answers.len(), "levels are looked up after the last correction");
            for ((id, value), at) in v.answers.iter().zip(&v.levels) {
                if *at == Some(level) {
                    out.insert(
                        (*id).to_owned(),
                        answer_input(
                            value,
                            v.evidence.get(*id).cloned().unwrap_or_default(),
                            v.field_values.get(*id).copied(),
                        ),
                    );
                }
            }
        }
        out
    };
    let respondents_at = |level: Level, of_visits: &BTreeSet<&str>| -> Vec<RespondentInput> {
        respondents
            .iter()
            .filter(|r| {
                of_visits.contains(r.visit)
                    && instrument.respondent_rule(r.kind).is_some_and(|rule| rule.level == level)
            })
            .map(|r| RespondentInput {
                id: r.id.to_owned(),
                kind: r.kind,
                answers: r
                    .answers
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), answer_input(v, Vec::new(), r.field_values.get(*k).copied())))
                    .collect(),
            })
            .collect()
    };
    let deductions = |target: &str| -> Vec<DeductionInput> {
        let mut out = Vec::new();
        for (_, d) in records.targeting("deduction", target) {
            let f = &d.fields;
            if text(f, "status").as_deref() == Some("withdrawn") {
                continue;
            }
            let (Some(id), Some(points), Some(reason)) =
                (text(f, "rule"), text(f, "points").and_then(|p| p.parse().ok()), text(f, "reason"))
            else {
                continue;
            };
            if instrument.deduction(&id).is_some() {
                out.push(DeductionInput { id, points, reason });
            }
        }
        out
    };

    let all: Vec<&Visit<'_>> = visits.iter().collect();
    let all_ids: BTreeSet<&str> = visits.iter().map(|v| v.id).collect();
    let mut unit_inputs = Vec::new();
    let mut unit_ids = Vec::new();
    for (unit, products) in &in_play {
        let Some(uf) = unit_fields.get(unit.as_str()) else { continue };
        let of_unit: Vec<&Visit<'_>> = visits.iter().filter(|v| v.unit == unit.as_str()).collect();
        let visit_ids: BTreeSet<&str> = of_unit.iter().map(|v| v.id).collect();
        let mut product_inputs = Vec::new();
        let none = Fields::default();
        for p in products {
            // (Read by `Records::load`; none: a product no op has described.)
            let pf = records.fields(p).unwrap_or(&none);
            let of_product: Vec<&Visit<'_>> = of_unit.iter().copied().filter(|v| v.product == p.as_str()).collect();
            let location = of_product.last().map(|v| v.location).unwrap_or(Location::OwnOffice);
            product_inputs.push(ProductInput {
                id: text(pf, "code").unwrap_or_else(|| p.clone()),
                name: text(pf, "name").unwrap_or_default(),
                location,
                answers: answers_at(Level::Product, &of_product),
            });
        }
        unit_inputs.push(UnitInput {
            id: text(uf, "code").unwrap_or_else(|| unit.clone()),
            name: text(uf, "name").unwrap_or_default(),
            unit_type: text(uf, "type").unwrap_or_default(),
            answers: answers_at(Level::Unit, &of_unit),
            respondents: respondents_at(Level::Unit, &visit_ids),
            deductions: deductions(unit),
            products: product_inputs,
        });
        unit_ids.push(unit.clone());
    }
    let input = InstitutionInput {
        id: code,
        name: text(inst, "name").unwrap_or_default(),
        kind: text(inst, "type").unwrap_or_default(),
        region: text(inst, "region"),
        answers: answers_at(Level::Institution, &all),
        respondents: respondents_at(Level::Institution, &all_ids),
        deductions: deductions(institution),
        units: unit_inputs,
    };
    Some((input, unit_ids))
}

/// Recomputes one institution's results; returns how many result rows changed.
pub fn recompute(
    tx: &Transaction<'_>,
    instruments: &BTreeMap<InstrumentRef, Instrument>,
    institution: &str,
) -> Result<usize, ApiError> {
    let mut keep: BTreeSet<(String, String, String)> = BTreeSet::new();
    let mut cursor = Cursor::read(tx)?;
    let mut changed = 0;
    for scored in score(&Records::load(tx, institution)?, instruments) {
        changed += scored?.write(tx, &mut cursor, &mut keep)?;
    }
    cursor.save(tx)?;
    // Drop rows for instruments or units no longer in play.
    changed += delete_unless_kept(
        tx,
        "SELECT kind, entity, instrument FROM results WHERE institution = ?1",
        [institution],
        &keep,
    )?;
    Ok(changed)
}

/// Scores an institution's records: one result per instrument version its visits and
/// assignments use (and this tier holds). Pure: it reads no store.
fn score(records: &Records, instruments: &BTreeMap<InstrumentRef, Instrument>) -> Vec<Result<Scored, ApiError>> {
    let institution = records.institution.as_str();
    let mut out = Vec::new();
    for reference in records.instruments_used() {
        let Some(instrument) = instruments.get(&reference) else {
            tracing::warn!(%institution, instrument = %reference, "results wait for an instrument this tier does not hold");
            continue;
        };
        let Some((input, unit_ids)) = input_of(records, instrument) else { continue };
        let job = Job { institution: institution.to_owned(), input, unit_ids };
        out.extend(job.score(instrument));
    }
    out
}

/// An institution's scoring input for one instrument, with its units' record ids.
struct Job {
    institution: String,
    input: InstitutionInput,
    unit_ids: Vec<String>,
}

impl Job {
    /// Scores the input and writes its result documents. Pure (no store). `None`: the
    /// stored answers do not score (logged).
    fn score(self, instrument: &Instrument) -> Option<Result<Scored, ApiError>> {
        let reference = &instrument.reference;
        let mut result = match score_institution(instrument, &self.input) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(institution = %self.institution, instrument = %reference, error = %e, "stored answers do not score");
                return None;
            }
        };
        // The result orders its units by code; the input knows each one's record.
        let ids: BTreeMap<&str, &str> =
            self.input.units.iter().zip(&self.unit_ids).map(|(u, id)| (u.id.as_str(), id.as_str())).collect();
        let entities: Vec<String> = result
            .units
            .iter()
            .map(|u| ids.get(u.id.as_str()).map_or_else(|| u.id.clone(), |e| (*e).to_owned()))
            .collect();
        Some((|| {
            let units = std::mem::take(&mut result.units);
            let mut counts = Counts::default();
            let mut unit_rows = Vec::with_capacity(units.len());
            for (unit, entity) in units.iter().zip(&entities) {
                let c = Counts::of_unit(unit);
                counts.required += c.required;
                counts.answered += c.answered;
                unit_rows.push(Row {
                    kind: "unit",
                    entity: entity.clone(),
                    code: unit.id.clone(),
                    name: unit.name.clone(),
                    typ: unit.unit_type.clone(),
                    outcome: unit.outcome.clone(),
                    counts: c,
                    document: unit_document(unit),
                    units: None,
                });
            }
            counts.missing = result.missing.len() as u32;
            let own = institution_document(&result);
            // `units` is the document's last member, written empty here.
            let (document, listed) = if own.ends_with(r#""units":[]}"#) {
                (own, Some(serde_json::to_string(&entities)?))
            } else {
                result.units = units;
                (institution_document(&result), None)
            };
            let own = Row {
                kind: "institution",
                entity: self.institution.clone(),
                code: result.id.clone(),
                name: result.name.clone(),
                typ: result.kind.clone(),
                outcome: result.outcome.clone(),
                counts,
                document,
                units: listed,
            };
            Ok(Scored {
                institution: self.institution,
                instrument: reference.to_string(),
                region: self.input.region,
                units: unit_rows,
                own,
            })
        })())
    }
}

/// An institution's result for one instrument, as the rows to store.
struct Scored {
    institution: String,
    instrument: String,
    region: Option<String>,
    units: Vec<Row>,
    own: Row,
}

/// One result row to store.
struct Row {
    kind: &'static str,
    entity: String,
    code: String,
    name: String,
    typ: String,
    outcome: sidak_core::scoring::Outcome,
    counts: Counts,
    document: String,
    /// For an institution: its units' record ids, whose documents complete its own.
    units: Option<String>,
}

impl Scored {
    /// Stores the unit rows and the institution's (each unit document once: the
    /// institution's row lists its units and [`stored_document`] splices them in).
    /// Returns how many rows changed; the institution's row changes with any unit's.
    fn write(
        self,
        tx: &Transaction<'_>,
        cursor: &mut Cursor,
        keep: &mut BTreeSet<(String, String, String)>,
    ) -> Result<usize, ApiError> {
        let mut changed = 0;
        for row in &self.units {
            changed += self.upsert(tx, row, false, cursor, keep)?;
        }
        changed += self.upsert(tx, &self.own, changed > 0, cursor, keep)?;
        Ok(changed)
    }

    /// Inserts or updates one row unless it holds this document already (and `force`
    /// is false); returns 1 if it changed.
    fn upsert(
        &self,
        tx: &Transaction<'_>,
        row: &Row,
        force: bool,
        cursor: &mut Cursor,
        keep: &mut BTreeSet<(String, String, String)>,
    ) -> Result<usize, ApiError> {
        keep.insert((row.kind.to_owned(), row.entity.clone(), self.instrument.clone()));
        // Compared where SQLite holds the stored row (read in place, not copied out), and
        // without handing it the new document (tens of kB, which a bound parameter copies).
        // Every other column follows from the document, except the institution and the
        // region (a unit's document names neither), so those are compared too.
        let same: Option<bool> = tx
            .prepare_cached(
                "SELECT document, units, institution, region FROM results WHERE kind = ?1 AND entity = ?2 AND instrument = ?3",
            )?
            .query_row(params![row.kind, row.entity, self.instrument], |r| {
                Ok(r.get_ref(0)?.as_bytes()? == row.document.as_bytes()
                    && r.get_ref(1)?.as_str_or_null()? == row.units.as_deref()
                    && r.get_ref(2)?.as_str()? == self.institution
                    && r.get_ref(3)?.as_str_or_null()? == self.region.as_deref())
            })
            .optional()?;
        if !force && same == Some(true) {
            return Ok(0);
        }
        let next = cursor.bump();
        let outcome = &row.outcome;
        tx.prepare_cached(
            "INSERT INTO results (kind, entity, instrument, institution, code, name, type, region, status, score, provisional, grade, zone, document, changed, required, answered, missing, units)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)
             ON CONFLICT (kind, entity, instrument) DO UPDATE SET code = excluded.code, name = excluded.name, type = excluded.type, region = excluded.region,
                 status = excluded.status, score = excluded.score, provisional = excluded.provisional, grade = excluded.grade, zone = excluded.zone,
                 document = excluded.document, changed = excluded.changed, required = excluded.required, answered = excluded.answered,
                 missing = excluded.missing, units = excluded.units",
        )?
        .execute(params![
            row.kind,
            row.entity,
            self.instrument,
            self.institution,
            row.code,
            row.name,
            row.typ,
            self.region,
            status_name(outcome.status),
            outcome.score.map(|s| s.to_string()),
            outcome.provisional.map(|s| s.to_string()),
            outcome.grading.as_ref().map(|g| g.grade.clone()),
            outcome.grading.as_ref().and_then(|g| g.zone).map(|z| z.name().to_owned()),
            row.document,
            next,
            row.counts.required,
            row.counts.answered,
            row.counts.missing,
            row.units
        ])?;
        Ok(1)
    }
}

/// The results cursor (`results_seq`): read once per recompute, moved in memory for
/// each changed row, written back once.
struct Cursor {
    read: i64,
    next: i64,
}

impl Cursor {
    fn read(tx: &Transaction<'_>) -> Result<Cursor, ApiError> {
        let read = meta(tx, "results_seq")?.and_then(|v| v.parse().ok()).unwrap_or(0);
        Ok(Cursor { read, next: read })
    }

    fn bump(&mut self) -> i64 {
        self.next += 1;
        self.next
    }

    fn save(&self, tx: &Transaction<'_>) -> Result<(), ApiError> {
        if self.next != self.read {
            set_meta(tx, "results_seq", &self.next.to_string())?;
        }
        Ok(())
    }
}

/// A status as documents name it.
fn status_name(status: Status) -> &'static str {
    match status {
        Status::Complete => "complete",
        Status::Incomplete => "incomplete",
        Status::NotApplicable => "not_applicable",
    }
}

/// A stored result document, whole: an institution's row keeps its own document with
/// an empty `units` list and the record ids of its units, whose documents (stored once,
/// in their own rows) are spliced in here in that order.
pub fn stored_document(
    tx: &Transaction<'_>,
    kind: &str,
    entity: &str,
    instrument: &str,
) -> Result<Option<String>, ApiError> {
    let row: Option<(String, Option<String>)> = tx
        .prepare_cached("SELECT document, units FROM results WHERE kind = ?1 AND entity = ?2 AND instrument = ?3")?
        .query_row(params![kind, entity, instrument], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((document, units)) = row else { return Ok(None) };
    let Some(units) = units else { return Ok(Some(document)) };
    let ids: Vec<String> = serde_json::from_str(&units)?;
    let Some(head) = document.strip_suffix("]}") else {
        return Err(ApiError::internal(format!("the stored result of {entity} does not end with its units")));
    };
    let mut out = String::with_capacity(document.len() + ids.len() * 16_384);
    out.push_str(head);
    let mut unit =
        tx.prepare_cached("SELECT document FROM results WHERE kind = 'unit' AND entity = ?1 AND instrument = ?2")?;
    for (i, id) in ids.iter().enumerate() {
        let doc: Option<String> = unit.query_row(params![id, instrument], |r| r.get(0)).optional()?;
        let Some(doc) = doc else {
            return Err(ApiError::internal(format!("the result of {entity} lists unit {id}, which has none")));
        };
        if i > 0 {
            out.push(',');
        }
        out.push_str(&doc);
    }
    out.push_str("]}");
    Ok(Some(out))
}

impl From<serde_json::Error> for ApiError {
    fn from(e: serde_json::Error) -> ApiError {
        ApiError::internal(e)
    }
}

/// Recomputes every institution from scratch (results table emptied first). The store
/// is read and written on this thread; scoring (building each input and scoring it)
/// is pure, and as dear as the reads, so a second thread scores beside it. The two
/// share the scoring as they are free: an institution read while the second thread
/// has enough waiting is scored here. Rows are written in the order the institutions
/// are read, as one by one would.
pub fn recompute_all(
    tx: &Transaction<'_>,
    instruments: &BTreeMap<InstrumentRef, Instrument>,
) -> Result<usize, ApiError> {
    // Rows are compared and rewritten only where they differ (as `recompute` does), and
    // rows nothing produced any more are deleted at the end: the outcome is the same as
    // deleting everything first, but an unchanged row keeps its `changed` cursor and is
    // not written again (a season's documents are a few hundred MB).
    let institutions = ids_of_kind(tx, "institution")?;
    let mut cursor = Cursor::read(tx)?;
    let mut keep = BTreeSet::new();
    std::thread::scope(|s| -> Result<(), ApiError> {
        let stopped = || ApiError::internal("the scoring thread stopped");
        // Two institutions waiting keep the second thread busy while this one reads.
        let (to_score, scoring) = std::sync::mpsc::sync_channel::<(usize, Records)>(2);
        let (to_write, scored) = std::sync::mpsc::channel::<(usize, Vec<Result<Scored, ApiError>>)>();
        s.spawn(move || {
            for (at, records) in scoring {
                if to_write.send((at, score(&records, instruments))).is_err() {
                    return;
                }
            }
        });
        let mut in_order = InOrder::new();
        let mut write = |done: Vec<Result<Scored, ApiError>>| -> Result<(), ApiError> {
            for scored in done {
                scored?.write(tx, &mut cursor, &mut keep)?;
            }
            Ok(())
        };
        for (at, i) in institutions.iter().enumerate() {
            let records = Records::load(tx, i)?;
            match to_score.try_send((at, records)) {
                Ok(()) => {}
                Err(std::sync::mpsc::TrySendError::Full((_, records))) => {
                    in_order.put(at, score(&records, instruments))
                }
                Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return Err(stopped()),
            }
            while let Ok((at, done)) = scored.try_recv() {
                in_order.put(at, done);
            }
            in_order.drain(&mut write)?;
        }
        drop(to_score);
        while in_order.held() < institutions.len() {
            let (at, done) = scored.recv().map_err(|_| stopped())?;
            in_order.put(at, done);
        }
        in_order.drain(&mut write)?;
        if in_order.next != institutions.len() {
            return Err(ApiError::internal("an institution's results were never scored"));
        }
        Ok(())
    })?;
    cursor.save(tx)?;
    delete_unless_kept(tx, "SELECT kind, entity, instrument FROM results", [], &keep)?;
    Ok(institutions.len())
}

/// Scored institutions, by the place they were read in, handed on in that order
/// whichever thread scored them first.
struct InOrder<T> {
    /// The place of the next institution to hand on.
    next: usize,
    waiting: BTreeMap<usize, T>,
}

impl<T> InOrder<T> {
    fn new() -> InOrder<T> {
        InOrder { next: 0, waiting: BTreeMap::new() }
    }

    fn put(&mut self, at: usize, scored: T) {
        self.waiting.insert(at, scored);
    }

    /// How many institutions were handed on or wait to be.
    fn held(&self) -> usize {
        self.next + self.waiting.len()
    }

    /// Hands on the institutions whose turn it is, in order.
    fn drain(&mut self, mut each: impl FnMut(T) -> Result<(), ApiError>) -> Result<(), ApiError> {
        while let Some(done) = self.waiting.remove(&self.next) {
            each(done)?;
            self.next += 1;
        }
        Ok(())
    }
}

/// Deletes the result rows `sql` selects (kind, entity, instrument) that are not in
/// `keep`; returns how many.
fn delete_unless_kept(
    tx: &Transaction<'_>,
    sql: &str,
    params: impl rusqlite::Params,
    keep: &BTreeSet<(String, String, String)>,
) -> Result<usize, ApiError> {
    let mut stmt = tx.prepare_cached(sql)?;
    let stale: Vec<(String, String, String)> = stmt
        .query_map(params, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|k| !keep.contains(k))
        .collect();
    drop(stmt);
    for (kind, entity, instrument) in &stale {
        tx.prepare_cached("DELETE FROM results WHERE kind = ?1 AND entity = ?2 AND instrument = ?3")?
            .execute(params![kind, entity, instrument])?;
    }
    Ok(stale.len())
}

/// One row of a results listing.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ResultRow {
    /// Institution or unit record id.
    pub id: String,
    /// The institution it belongs to.
    pub institution: String,
    /// Code.
    pub code: String,
    /// Name.
    pub name: String,
    /// Institution or unit type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Region.
    pub region: Option<String>,
    /// Instrument.
    pub instrument: String,
    /// complete, incomplete or not_applicable.
    pub status: String,
    /// Published score (complete results).
    pub score: Option<String>,
    /// Provisional figure (incomplete results).
    pub provisional: Option<String>,
    /// Grade.
    pub grade: Option<String>,
    /// Zone.
    pub zone: Option<String>,
    /// The results cursor at which it last changed.
    pub changed: i64,
    /// Indicator answers the result needs (not-applicable ones left out); an
    /// institution counts those of all its units.
    pub required: u32,
    /// Of which present (with the evidence and questionnaires they need).
    pub answered: u32,
    /// `answered ÷ required`, two decimals, as a region's `completeness` (`1.00` for a
    /// complete result; `0.00` for an incomplete one with nothing to count yet; `null`
    /// when nothing applies).
    pub completeness: Option<Published>,
    /// How many entries the result document's `missing` list has (what they are:
    /// `GET /v1/results/units/{id}` or `/institutions/{id}`).
    pub missing: u32,
}

/// The completeness figures of one result document.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Indicator answers needed.
    pub required: u32,
    /// Of which present.
    pub answered: u32,
    /// Entries in `missing`.
    pub missing: u32,
}

impl Counts {
    /// Counts a unit's result: its indicators (the leaves of
    /// each unit's dimensions → variables → indicators tree) that are complete or
    /// incomplete, and its `missing` list.
    pub fn of_unit(unit: &UnitResult) -> Counts {
        fn leaves(node: &NodeResult, out: &mut Counts) {
            if node.children.is_empty() {
                match node.outcome.status {
                    Status::Complete => {
                        out.required += 1;
                        out.answered += 1;
                    }
                    Status::Incomplete => out.required += 1,
                    Status::NotApplicable => {}
                }
            } else {
                node.children.iter().for_each(|c| leaves(c, out));
            }
        }
        let mut out = Counts::default();
        unit.dimensions.iter().for_each(|d| leaves(d, &mut out));
        out.missing = unit.missing.len() as u32;
        out
    }

    /// The same counts from a stored document (rows stored before they were kept).
    pub fn of(document: &Value) -> Counts {
        fn leaves(node: &Value, out: &mut Counts) {
            match node.get("children").and_then(Value::as_array) {
                Some(children) => children.iter().for_each(|c| leaves(c, out)),
                None => match node.get("status").and_then(Value::as_str) {
                    Some("complete") => {
                        out.required += 1;
                        out.answered += 1;
                    }
                    Some("incomplete") => out.required += 1,
                    _ => {}
                },
            }
        }
        let mut out = Counts::default();
        // An institution's own tree stops at variables: its units hold the indicators.
        let units = match document.get("units").and_then(Value::as_array) {
            Some(units) => units.iter().collect(),
            None => vec![document],
        };
        for unit in units {
            for d in unit.get("dimensions").and_then(Value::as_array).into_iter().flatten() {
                leaves(d, &mut out);
            }
        }
        out.missing = document.get("missing").and_then(Value::as_array).map_or(0, |m| m.len() as u32);
        out
    }

    /// `answered ÷ required` for a result of `status`.
    fn completeness(self, status: &str) -> Option<Published> {
        match (status, self.required) {
            ("not_applicable", _) => None,
            (_, 0) => Some(Exact::zero().publish()),
            (_, n) => Some(Exact::ratio(i64::from(self.answered), i64::from(n)).publish()),
        }
    }
}

/// Fills in the completeness of rows stored before it was kept (migration 4).
pub fn backfill_counts(tx: &Transaction<'_>) -> Result<usize, ApiError> {
    let mut stmt = tx.prepare(
        "SELECT kind, entity, instrument FROM results
         WHERE required IS NULL OR answered IS NULL OR missing IS NULL",
    )?;
    let rows: Vec<(String, String, String)> =
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<Result<_, _>>()?;
    drop(stmt);
    for (kind, entity, instrument) in &rows {
        let Some(document) = stored_document(tx, kind, entity, instrument)? else { continue };
        let counts = Counts::of(&serde_json::from_str(&document)?);
        tx.execute(
            "UPDATE results SET required = ?4, answered = ?5, missing = ?6 WHERE kind = ?1 AND entity = ?2 AND instrument = ?3",
            params![kind, entity, instrument, counts.required, counts.answered, counts.missing],
        )?;
    }
    Ok(rows.len())
}

/// Result rows of one kind visible to `region` (None: all), changed after `since`.
pub fn rows(
    tx: &Transaction<'_>,
    kind: &str,
    region: Option<&str>,
    since: i64,
    institution: Option<&str>,
) -> Result<Vec<ResultRow>, ApiError> {
    let mut stmt = tx.prepare_cached(
        "SELECT entity, institution, code, name, type, region, instrument, status, score, provisional, grade, zone, changed,
                COALESCE(required, 0), COALESCE(answered, 0), COALESCE(missing, 0) FROM results
         WHERE kind = ?1 AND changed > ?2 AND (?3 IS NULL OR region = ?3) AND (?4 IS NULL OR institution = ?4) ORDER BY region, type, code, instrument",
    )?;
    let rows = stmt.query_map(params![kind, since, region, institution], |r| {
        let status: String = r.get(7)?;
        let counts = Counts { required: r.get(13)?, answered: r.get(14)?, missing: r.get(15)? };
        Ok(ResultRow {
            id: r.get(0)?,
            institution: r.get(1)?,
            code: r.get(2)?,
            name: r.get(3)?,
            kind: r.get(4)?,
            region: r.get(5)?,
            instrument: r.get(6)?,
            completeness: counts.completeness(&status),
            required: counts.required,
            answered: counts.answered,
            missing: counts.missing,
            status,
            score: r.get(8)?,
            provisional: r.get(9)?,
            grade: r.get(10)?,
            zone: r.get(11)?,
            changed: r.get(12)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The current results cursor.
pub fn cursor(tx: &Transaction<'_>) -> Result<i64, ApiError> {
    Ok(meta(tx, "results_seq")?.and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// A result document and its row, by record id or code.
pub fn document(tx: &Transaction<'_>, kind: &str, key: &str) -> Result<Option<(ResultRow, Value)>, ApiError> {
    // The newest instrument version wins (compared as id, then version number).
    let mut stmt =
        tx.prepare_cached("SELECT entity, instrument FROM results WHERE kind = ?1 AND (entity = ?2 OR code = ?2)")?;
    let mut found: Vec<(String, String)> =
        stmt.query_map(params![kind, key], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
    // A record id names one record; a code may be shared (unit codes repeat across
    // institutions), and then it names none: the caller asks by record id.
    if found.iter().any(|(entity, _)| entity == key) {
        found.retain(|(entity, _)| entity == key);
    } else if found.iter().any(|(entity, _)| *entity != found[0].0) {
        return Ok(None);
    }
    let version_key =
        |i: &str| i.split_once('@').map(|(id, v)| (id.to_owned(), v.parse::<u32>().unwrap_or(0))).unwrap_or_default();
    let Some((entity, instrument)) = found.into_iter().max_by_key(|(_, i)| version_key(i)) else { return Ok(None) };
    let row = rows(tx, kind, None, -1, None)?.into_iter().find(|r| r.id == entity && r.instrument == instrument);
    let doc = stored_document(tx, kind, &entity, &instrument)?.unwrap_or_default();
    Ok(row.map(|r| (r, serde_json::from_str(&doc).unwrap_or(Value::Null))))
}

/// The active corrections of these records' fields, by (record id, field): the values
/// results score instead of the fields' own (the latest by its `value` op's clock
/// stamp wins, as in a recompute). For the report card and the exports, which show both.
pub fn active_corrections(
    tx: &Transaction<'_>,
    targets: &BTreeSet<String>,
) -> Result<BTreeMap<(String, String), Value>, ApiError> {
    let mut corrections = Records::read(
        tx,
        "",
        &format!(
            "SELECT {RECORD_COLUMNS} FROM fields f
             WHERE f.entity IN (SELECT entity FROM fields WHERE kind = 'correction' AND field = 'target' AND field NOT GLOB 'answer.*')"
        ),
        [],
    )?;
    corrections.stamp_corrections(tx)?;
    Ok(corrections.corrections(|t| targets.contains(t)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The clock stamp orders two corrections of one field, not their ids: the later
    /// one here has the smaller id, and its stamp is read apart from its fields.
    #[test]
    fn the_later_correction_by_clock_wins_whatever_its_id() {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        crate::db::migrate(&mut conn).unwrap();
        let tx = conn.transaction().unwrap();
        let put = |id: &str, field: &str, value: &str, ms: i64| {
            tx.execute(
                "INSERT INTO fields (entity, field, kind, value, v_origin, v_seq, hlc_ms, hlc_c) VALUES (?1, ?2, 'correction', ?3, 'o', 1, ?4, 0)",
                params![id, field, value, ms],
            )
            .unwrap();
        };
        for (id, value, ms) in [("c-b", "1", 1_000), ("c-a", "3", 2_000), ("c-c", "0", 1_500)] {
            put(id, "target", r#"{"kind":"visit","id":"v1"}"#, 1);
            put(id, "field", r#""answer.x""#, 1);
            put(id, "value", value, ms);
        }
        let targets = BTreeSet::from(["v1".to_owned()]);
        let active = active_corrections(&tx, &targets).unwrap();
        assert_eq!(active.get(&("v1".to_owned(), "answer.x".to_owned())), Some(&Value::from(3)));
    }

    /// A correction replaces a recorded answer (keeping what was recorded beside it) or
    /// adds one the visit lacked (recorded: null), and the answers stay sorted.
    #[test]
    fn corrections_replace_or_add_answers_and_keep_what_was_recorded() {
        let (one, two, three, nine) = (Value::from(1), Value::from(2), Value::from(3), Value::from(9));
        let mut answers: Answers<'_> = vec![("a", &one), ("c", &two)];
        let mut recorded = BTreeMap::new();
        correct(&mut answers, &mut recorded, "c", &three);
        correct(&mut answers, &mut recorded, "b", &nine);
        correct(&mut answers, &mut recorded, "c", &nine);
        assert_eq!(answers, vec![("a", &one), ("b", &nine), ("c", &nine)]);
        assert_eq!(recorded, BTreeMap::from([("b", &Value::Null), ("c", &two)]));
    }

    /// Institutions scored out of order (the two threads finish when they finish) are
    /// handed on in the order they were read, each once.
    #[test]
    fn scored_institutions_are_written_in_the_order_they_were_read() {
        let mut in_order = InOrder::new();
        let mut written = Vec::new();
        for at in [2, 0, 4, 1, 3, 5] {
            in_order.put(at, at);
            in_order
                .drain(|at| {
                    written.push(at);
                    Ok(())
                })
                .unwrap();
            assert_eq!(written, (0..written.len()).collect::<Vec<_>>(), "after {at}");
        }
        assert_eq!((written.len(), in_order.held()), (6, 6));
        // What comes after a failure waits: nothing is skipped.
        in_order.put(7, 7);
        in_order.put(6, 6);
        assert!(in_order.drain(|at| if at == 6 { Err(ApiError::internal("no")) } else { Ok(()) }).is_err());
        assert_eq!((in_order.next, in_order.held()), (6, 7));
    }

    #[test]
    fn fields_stay_sorted_and_unique_whatever_order_they_come_in() {
        let mut f = Fields::default();
        for (name, v) in [("b", "1"), ("d", "2"), ("a", "3"), ("c", "4"), ("d", "5"), ("e", "6"), ("a", "7")] {
            f.insert(name, v);
        }
        let held: Vec<(&str, i64)> = f.iter().map(|(n, v)| (n, v.as_i64().unwrap())).collect();
        assert_eq!(held, [("a", 7), ("b", 1), ("c", 4), ("d", 5), ("e", 6)]);
        assert_eq!(f.get("c"), Some(&Value::from(4)));
        assert_eq!(f.get("x"), None);
    }
}
