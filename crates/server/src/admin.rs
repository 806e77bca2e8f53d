//! Administration: instruments, the registry, assignments, recompute, conflicts and
//! quarantine. Each function runs inside a transaction, so the CLI and the HTTP API
//! share them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use rusqlite::{params, OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sidak_core::ids::EntityId;
use sidak_core::instrument::{load_instrument, Instrument, InstrumentErrors, InstrumentRef};
use sidak_core::records::{is_code, EntityKind, EntityRef, INSTITUTION_TYPES};

use crate::error::ApiError;
use crate::ledger;

/// Why an instrument file could not be validated.
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The document has faults.
    #[error("{path}: {faults}")]
    Invalid {
        /// The file.
        path: String,
        /// Every fault.
        faults: InstrumentErrors,
    },
}

/// `sidak-server instrument validate <file>`: loads the file and reports every fault.
pub fn validate_instrument_file(path: &Path) -> Result<Instrument, ValidateError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ValidateError::Read { path: shown.clone(), source })?;
    load_instrument(&text).map_err(|faults| ValidateError::Invalid { path: shown, faults })
}

/// Every published instrument.
pub fn load_instruments(tx: &Transaction<'_>) -> Result<BTreeMap<InstrumentRef, Instrument>, ApiError> {
    let mut stmt = tx.prepare("SELECT document FROM instruments")?;
    let docs: Vec<String> = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    docs.iter()
        .map(|d| {
            load_instrument(d)
                .map(|i| (i.reference.clone(), i))
                .map_err(|e| ApiError::internal(format!("a published instrument no longer loads: {e}")))
        })
        .collect()
}

/// Publishes a validated instrument. Publishing the same document again is a no-op;
/// a different document under a published id and version is refused.
pub fn publish_instrument(tx: &Transaction<'_>, instrument: &Instrument, now_ms: i64) -> Result<bool, ApiError> {
    let r = &instrument.reference;
    let held: Option<String> = tx
        .query_row("SELECT digest FROM instruments WHERE id = ?1 AND version = ?2", params![r.id, r.version], |row| {
            row.get(0)
        })
        .optional()?;
    match held {
        Some(d) if d == instrument.digest => Ok(false),
        Some(_) => Err(ApiError::invalid_body(format!(
            "{r} is already published with other content; a published version never changes: publish version {}",
            r.version + 1
        ))),
        None => {
            tx.execute(
                "INSERT INTO instruments (id, version, digest, document, published_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![r.id, r.version, instrument.digest, instrument.document.to_string(), now_ms],
            )?;
            Ok(true)
        }
    }
}

/// One row of a registry CSV.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryRow {
    /// Institution code.
    pub institution_code: String,
    /// Institution name.
    pub institution_name: String,
    /// kementerian, lembaga, provinsi, kota or kabupaten.
    pub institution_type: String,
    /// Region code.
    pub region: String,
    /// Unit code (unique in its institution).
    pub unit_code: String,
    /// Unit name.
    pub unit_name: String,
    /// Unit type (disdukcapil, dpmptsp, dinkes, puskesmas, …).
    pub unit_type: String,
    /// Product code (unique in its unit).
    pub product_code: String,
    /// Product name.
    pub product_name: String,
}

/// The header a registry CSV must have.
pub const REGISTRY_HEADER: &str =
    "institution_code,institution_name,institution_type,region,unit_code,unit_name,unit_type,product_code,product_name";

/// What an import changed.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ImportReport {
    /// Institutions added.
    pub institutions_added: usize,
    /// Units added.
    pub units_added: usize,
    /// Products added.
    pub products_added: usize,
    /// Fields changed on existing records.
    pub fields_changed: usize,
    /// Rows read.
    pub rows: usize,
}

/// Reads and checks a registry CSV; every fault with its line, nothing partial.
pub fn parse_registry(csv_text: &str) -> Result<Vec<RegistryRow>, ApiError> {
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(csv_text.as_bytes());
    let header = reader
        .headers()
        .map_err(|e| ApiError::invalid_body(format!("registry CSV: {e}")))?
        .iter()
        .collect::<Vec<_>>()
        .join(",");
    if header != REGISTRY_HEADER {
        return Err(ApiError::invalid_body(format!(
            "registry CSV: the header must be `{REGISTRY_HEADER}`, found `{header}`"
        )));
    }
    let mut rows = Vec::new();
    let mut faults = Vec::new();
    let mut seen: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    let mut inst: BTreeMap<String, (String, String, String)> = BTreeMap::new();
    for (i, record) in reader.deserialize::<RegistryRow>().enumerate() {
        let line = i as u64 + 2;
        match record {
            Err(e) => faults.push(format!("line {line}: {e}")),
            Ok(row) => {
                for (what, code) in [
                    ("institution_code", &row.institution_code),
                    ("region", &row.region),
                    ("unit_code", &row.unit_code),
                    ("unit_type", &row.unit_type),
                    ("product_code", &row.product_code),
                ] {
                    if !is_code(code) {
                        faults.push(format!(
                            "line {line}: {what} `{code}` is not a code (lowercase letters, digits, `-`, `_`, `.`)"
                        ));
                    }
                }
                if !INSTITUTION_TYPES.contains(&row.institution_type.as_str()) {
                    faults.push(format!(
                        "line {line}: institution_type `{}` is not one of {}",
                        row.institution_type,
                        INSTITUTION_TYPES.join(", ")
                    ));
                }
                for (what, name) in [
                    ("institution_name", &row.institution_name),
                    ("unit_name", &row.unit_name),
                    ("product_name", &row.product_name),
                ] {
                    if name.is_empty() || name.len() > 300 {
                        faults.push(format!("line {line}: {what} must be 1–300 characters"));
                    }
                }
                let key = (row.institution_code.clone(), row.unit_code.clone(), row.product_code.clone());
                if let Some(first) = seen.insert(key, line) {
                    faults.push(format!("line {line}: the same institution, unit and product as line {first}"));
                }
                let facts = (row.institution_name.clone(), row.institution_type.clone(), row.region.clone());
                match inst.get(&row.institution_code) {
                    Some(f) if f != &facts => faults.push(format!(
                        "line {line}: institution `{}` is given another name, type or region than before",
                        row.institution_code
                    )),
                    _ => {
                        inst.insert(row.institution_code.clone(), facts);
                    }
                }
                rows.push(row);
            }
        }
    }
    if !faults.is_empty() {
        return Err(ApiError::invalid_body(format!(
            "registry CSV has {} fault(s):\n  {}",
            faults.len(),
            faults.join("\n  ")
        )));
    }
    Ok(rows)
}

/// A registry record's id by its parent and code.
fn find_by_code(
    tx: &Transaction<'_>,
    kind: &str,
    parent_field: Option<(&str, &str)>,
    code: &str,
) -> Result<Option<String>, ApiError> {
    let found = match parent_field {
        None => tx
            .prepare_cached("SELECT entity FROM fields WHERE kind = ?1 AND field = 'code' AND value = json_quote(?2) AND field NOT GLOB 'answer.*'")?
            .query_row(params![kind, code], |r| r.get(0))
            .optional()?,
        // From the parent's children to their codes, not the other way round: a code
        // like `dpmptsp` or `layanan-1` repeats in every institution, so starting from it
        // read every namesake in the country for each row, and a national registry's
        // import took minutes (quadratic). CROSS JOIN fixes SQLite's join order.
        Some((field, parent)) => tx
            .prepare_cached(
                "SELECT p.entity FROM fields p CROSS JOIN fields c ON c.entity = p.entity AND c.field = 'code'
                 WHERE p.kind = ?1 AND p.field = ?3 AND p.value = json_quote(?4) AND p.field NOT GLOB 'answer.*'
                   AND c.value = json_quote(?2)",
            )?
            .query_row(params![kind, code, field, parent], |r| r.get(0))
            .optional()?,
    };
    Ok(found)
}

/// Imports registry rows as ops of the server: new records are added, changed names,
/// types and regions are updated, nothing else is touched. Returns what changed and
/// the institutions whose results may change.
pub fn import_registry(
    tx: &Transaction<'_>,
    instruments: &BTreeMap<InstrumentRef, Instrument>,
    rows: &[RegistryRow],
    now_ms: i64,
) -> Result<(ImportReport, BTreeSet<String>), ApiError> {
    let mut report = ImportReport { rows: rows.len(), ..ImportReport::default() };
    let mut dirty = BTreeSet::new();
    let write = |changes: Vec<(EntityRef, &str, Value)>, dirty: &mut BTreeSet<String>| -> Result<(), ApiError> {
        if !changes.is_empty() {
            let (_, d) = ledger::author(tx, instruments, now_ms, &changes)?;
            dirty.extend(d);
        }
        Ok(())
    };
    let changed = |entity: &str, field: &str, value: &str| -> Result<bool, ApiError> {
        Ok(ledger::field(tx, entity, field)?.as_ref().and_then(Value::as_str) != Some(value))
    };
    for row in rows {
        let (inst, new_inst) = match find_by_code(tx, "institution", None, &row.institution_code)? {
            Some(id) => (id, false),
            None => {
                report.institutions_added += 1;
                let e = EntityRef { kind: EntityKind::Institution, id: EntityId(uuid::Uuid::now_v7()) };
                write(vec![(e, "code", json!(row.institution_code))], &mut dirty)?;
                (e.id.to_string(), true)
            }
        };
        let ie = EntityRef { kind: EntityKind::Institution, id: inst.parse().map_err(ApiError::internal)? };
        let mut changes = Vec::new();
        for (f, v) in [("name", &row.institution_name), ("type", &row.institution_type), ("region", &row.region)] {
            if changed(&inst, f, v)? {
                changes.push((ie, f, json!(v)));
            }
        }
        if !new_inst {
            report.fields_changed += changes.len();
        }
        write(changes, &mut dirty)?;

        let (unit, new_unit) = match find_by_code(tx, "unit", Some(("institution", &inst)), &row.unit_code)? {
            Some(id) => (id, false),
            None => {
                report.units_added += 1;
                let e = EntityRef { kind: EntityKind::Unit, id: EntityId(uuid::Uuid::now_v7()) };
                write(vec![(e, "institution", json!(inst)), (e, "code", json!(row.unit_code))], &mut dirty)?;
                (e.id.to_string(), true)
            }
        };
        let ue = EntityRef { kind: EntityKind::Unit, id: unit.parse().map_err(ApiError::internal)? };
        let mut changes = Vec::new();
        for (f, v) in [("name", &row.unit_name), ("type", &row.unit_type)] {
            if changed(&unit, f, v)? {
                changes.push((ue, f, json!(v)));
            }
        }
        if !new_unit {
            report.fields_changed += changes.len();
        }
        write(changes, &mut dirty)?;

        let (product, new_product) = match find_by_code(tx, "product", Some(("unit", &unit)), &row.product_code)? {
            Some(id) => (id, false),
            None => {
                report.products_added += 1;
                let e = EntityRef { kind: EntityKind::Product, id: EntityId(uuid::Uuid::now_v7()) };
                write(vec![(e, "unit", json!(unit)), (e, "code", json!(row.product_code))], &mut dirty)?;
                (e.id.to_string(), true)
            }
        };
        if changed(&product, "name", &row.product_name)? {
            if !new_product {
                report.fields_changed += 1;
            }
            let pe = EntityRef { kind: EntityKind::Product, id: product.parse().map_err(ApiError::internal)? };
            write(vec![(pe, "name", json!(row.product_name))], &mut dirty)?;
        }
    }
    Ok((report, dirty))
}

/// `POST /v1/admin/assignments` and `sidak-server assignment create`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NewAssignment {
    /// The assessor's code.
    pub assessor: String,
    /// The institution's code.
    pub institution: String,
    /// The unit's code.
    pub unit: String,
    /// Product codes; empty means every product of the unit.
    #[serde(default)]
    pub products: Vec<String>,
    /// The instrument, `id@version`.
    pub instrument: String,
    /// `covert` or `announced`.
    pub mode: String,
    /// Due date, ms since 1970.
    #[serde(default)]
    pub due: Option<i64>,
}

/// Creates an assignment; returns its id and the institution whose results it touches.
pub fn create_assignment(
    tx: &Transaction<'_>,
    instruments: &BTreeMap<InstrumentRef, Instrument>,
    new: &NewAssignment,
    now_ms: i64,
) -> Result<(String, BTreeSet<String>), ApiError> {
    let reference: InstrumentRef = match new.instrument.split_once('@') {
        Some((id, v)) => InstrumentRef {
            id: id.to_owned(),
            version: v.parse().map_err(|_| {
                ApiError::invalid_body(format!("instrument `{}`: the version must be a number", new.instrument))
            })?,
        },
        None => {
            return Err(ApiError::invalid_body(format!(
                "instrument `{}`: write id@version, e.g. penilaian-2023@1",
                new.instrument
            )))
        }
    };
    if !instruments.contains_key(&reference) {
        return Err(ApiError::invalid_body(format!("instrument {reference} is not published here")));
    }
    let inst = find_by_code(tx, "institution", None, &new.institution)?
        .ok_or_else(|| ApiError::invalid_body(format!("no institution with code `{}`", new.institution)))?;
    let unit = find_by_code(tx, "unit", Some(("institution", &inst)), &new.unit)?.ok_or_else(|| {
        ApiError::invalid_body(format!("institution `{}` has no unit `{}`", new.institution, new.unit))
    })?;
    let all_products = crate::results::children(tx, "product", "unit", &unit)?;
    let products: Vec<String> = if new.products.is_empty() {
        all_products
    } else {
        new.products
            .iter()
            .map(|code| {
                find_by_code(tx, "product", Some(("unit", &unit)), code)?
                    .ok_or_else(|| ApiError::invalid_body(format!("unit `{}` has no product `{code}`", new.unit)))
            })
            .collect::<Result<_, _>>()?
    };
    if products.is_empty() {
        return Err(ApiError::invalid_body(format!("unit `{}` has no products to assign", new.unit)));
    }
    let e = EntityRef { kind: EntityKind::Assignment, id: EntityId(uuid::Uuid::now_v7()) };
    let mut changes = vec![
        (e, "institution", json!(inst)),
        (e, "unit", json!(unit)),
        (e, "products", json!(products)),
        (e, "instrument", serde_json::to_value(&reference)?),
        (e, "mode", json!(new.mode)),
        (e, "assessor", json!(new.assessor)),
        (e, "status", json!("active")),
    ];
    if let Some(due) = new.due {
        changes.push((e, "due", json!(due)));
    }
    let (_, dirty) = ledger::author(tx, instruments, now_ms, &changes)?;
    Ok((e.id.to_string(), dirty))
}

/// One conflict, for a supervisor.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ConflictView {
    /// The record.
    pub entity: String,
    /// Its kind.
    pub kind: String,
    /// The field.
    pub field: String,
    /// The version every side had seen (`origin#seq`), when it is the same for all.
    pub parent: Option<String>,
    /// Every write concurrent with another from a different origin (origin#seq, clock,
    /// value), lowest precedence first.
    pub versions: Vec<Value>,
    /// The value shown now.
    pub current: Value,
    /// The writes no later write has seen (`origin#seq`): more than one while the
    /// conflict is open; empty once resolved.
    pub open: Vec<String>,
    /// What resolved the conflict, if anything did: `correction/<id>`, an active
    /// supervisor's correction of the field written after every version (the latest
    /// one), or else `origin#seq`, the one later write that saw every version.
    pub resolved_by: Option<String>,
}

/// Conflicts in `region` (None: all).
pub fn conflicts(tx: &Transaction<'_>, region: Option<&str>) -> Result<Vec<ConflictView>, ApiError> {
    conflict_views(tx, region, None)
}

/// The conflicts on one field of one record (several when the sides had seen
/// different versions).
pub fn conflicts_on(tx: &Transaction<'_>, entity: &str, field: &str) -> Result<Vec<ConflictView>, ApiError> {
    conflict_views(tx, None, Some((entity, field)))
}

/// The latest active correction of `entity`'s `field` written after the clock stamp
/// `after` (ms, c), as `correction/<id>`.
fn resolving_correction(
    tx: &Transaction<'_>,
    entity: &str,
    field: &str,
    after: (i64, i64),
) -> Result<Option<String>, ApiError> {
    let found: Option<String> = tx
        .query_row(
            "SELECT t.entity FROM fields t
             JOIN fields f ON f.entity = t.entity AND f.field = 'field' AND f.value = json_quote(?2)
             JOIN fields v ON v.entity = t.entity AND v.field = 'value'
             LEFT JOIN fields s ON s.entity = t.entity AND s.field = 'status'
             WHERE t.kind = 'correction' AND t.field = 'target' AND t.field NOT GLOB 'answer.*' AND json_extract(t.value, '$.id') = ?1
               AND (s.value IS NULL OR s.value = '\"active\"') AND (v.hlc_ms, v.hlc_c) > (?3, ?4)
             ORDER BY v.hlc_ms DESC, v.hlc_c DESC, v.v_origin DESC, t.entity DESC LIMIT 1",
            params![entity, field, after.0, after.1],
            |r| r.get(0),
        )
        .optional()?;
    Ok(found.map(|id| format!("correction/{id}")))
}

fn conflict_views(
    tx: &Transaction<'_>,
    region: Option<&str>,
    on: Option<(&str, &str)>,
) -> Result<Vec<ConflictView>, ApiError> {
    let (on_entity, on_field) = on.unzip();
    // Fields written by more than one origin; whether their writes conflict is the
    // same pure rule a device or any tier applies (sidak_core::merge::field_conflict).
    let mut stmt = tx.prepare(
        "SELECT entity, kind, field FROM ops WHERE quarantined = 0 AND (?1 IS NULL OR region = ?1)
         AND (?2 IS NULL OR entity = ?2) AND (?3 IS NULL OR field = ?3)
         GROUP BY entity, field HAVING COUNT(DISTINCT origin) > 1 ORDER BY entity, field",
    )?;
    let fields: Vec<(String, String, String)> = stmt
        .query_map(params![region, on_entity, on_field], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let sql = format!("SELECT {} FROM ops WHERE entity = ?1 AND field = ?2 AND quarantined = 0", ledger::OP_COLUMNS);
    let mut out = Vec::new();
    for (entity, kind, field) in fields {
        let mut wstmt = tx.prepare_cached(&sql)?;
        let mut writes = Vec::new();
        for row in wstmt.query_map(params![entity, field], |r| ledger::row_op(r, 0))? {
            writes.push(row??);
        }
        let Some(first) = writes.first() else { continue };
        let refs: Vec<&sidak_core::op::Op> = writes.iter().collect();
        let Some(c) = sidak_core::merge::field_conflict(first.entity, &field, &refs) else { continue };
        let latest = c.versions.last().map(|v| (v.hlc.ms as i64, v.hlc.c as i64)).unwrap_or_default();
        let resolved_by = match resolving_correction(tx, &entity, &field, latest)? {
            Some(correction) => Some(correction),
            None => c.resolved_by.map(|r| r.to_string()),
        };
        out.push(ConflictView {
            current: ledger::field(tx, &entity, &field)?.unwrap_or(Value::Null),
            entity,
            kind,
            field,
            parent: c.parent.map(|p| p.to_string()),
            versions: c
                .versions
                .iter()
                .map(|v| json!({"op": v.op.to_string(), "hlc": {"ms": v.hlc.ms, "c": v.hlc.c}, "value": v.value}))
                .collect(),
            open: if resolved_by.is_some() { Vec::new() } else { c.open.iter().map(|o| o.to_string()).collect() },
            resolved_by,
        });
    }
    Ok(out)
}

/// One quarantined op, for a supervisor.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct QuarantineView {
    /// `origin#seq`.
    pub op: String,
    /// The record.
    pub entity: String,
    /// Its kind.
    pub kind: String,
    /// The field.
    pub field: String,
    /// The value it would have set.
    pub value: Value,
    /// Why it is held back.
    pub code: String,
    /// In words.
    pub message: String,
    /// When (ms since 1970).
    pub at: i64,
}

/// Quarantined ops in `region` (None: all).
pub fn quarantined(tx: &Transaction<'_>, region: Option<&str>) -> Result<Vec<QuarantineView>, ApiError> {
    let mut stmt = tx.prepare(
        "SELECT o.origin, o.seq, o.entity, o.kind, o.field, o.value, q.code, q.message, q.at FROM quarantine q JOIN ops o ON o.origin = q.origin AND o.seq = q.seq
         WHERE (?1 IS NULL OR o.region = ?1) ORDER BY o.server_seq",
    )?;
    let rows = stmt.query_map([region], |r| {
        Ok(QuarantineView {
            op: format!("{}#{}", r.get::<_, String>(0)?, r.get::<_, i64>(1)?),
            entity: r.get(2)?,
            kind: r.get(3)?,
            field: r.get(4)?,
            value: serde_json::from_str(&r.get::<_, String>(5)?).unwrap_or(Value::Null),
            code: r.get(6)?,
            message: r.get(7)?,
            at: r.get(8)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
