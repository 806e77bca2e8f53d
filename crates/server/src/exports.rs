//! CSV exports for analysts: unit results (one row per unit and instrument) and raw
//! answers (one row per answer of a submitted visit or of one of its questionnaires).
//! UTF-8, a header row, RFC 4180 quoting (the `csv` crate), `\n` line ends like
//! `institutions.csv`.

use std::collections::BTreeMap;

use rusqlite::Transaction;
use serde_json::Value;

use crate::error::ApiError;
use crate::fieldwork::Fieldwork;
use crate::rapor::parse_instrument;
use crate::results::{self, ResultRow};

/// The header of `GET /v1/results/units.csv`.
pub const UNITS_HEADER: &[&str] = &[
    "institution",
    "code",
    "name",
    "type",
    "region",
    "instrument",
    "status",
    "score",
    "provisional",
    "grade",
    "zone",
    "completeness",
];

/// The header of `GET /v1/exports/answers.csv`.
pub const ANSWERS_HEADER: &[&str] = &[
    "region",
    "institution",
    "unit",
    "product",
    "visit",
    "assessor",
    "mode",
    "location",
    "instrument",
    "indicator",
    "respondent_kind",
    "respondent",
    "value",
    "corrected_value",
    "finished_at",
];

fn writer() -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new().terminator(csv::Terminator::Any(b'\n')).from_writer(Vec::new())
}

fn finish(w: csv::Writer<Vec<u8>>) -> Result<Vec<u8>, ApiError> {
    w.into_inner().map_err(|e| ApiError::internal(e.to_string()))
}

fn csv_err(e: csv::Error) -> ApiError {
    ApiError::internal(e)
}

/// An answer value as one CSV cell: strings as they are, `{"na": true}` as `na`,
/// anything else as JSON (`2`, `true`).
pub fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Object(o) if o.len() == 1 && o.get("na") == Some(&Value::Bool(true)) => "na".into(),
        other => other.to_string(),
    }
}

/// Unit results visible to `region` (None: all), of the institution with code
/// `institution` if given.
pub fn units_csv(tx: &Transaction<'_>, region: Option<&str>, institution: Option<&str>) -> Result<Vec<u8>, ApiError> {
    let institutions: BTreeMap<String, ResultRow> =
        results::rows(tx, "institution", region, -1, None)?.into_iter().map(|r| (r.institution.clone(), r)).collect();
    let mut w = writer();
    w.write_record(UNITS_HEADER).map_err(csv_err)?;
    for r in results::rows(tx, "unit", region, -1, None)? {
        let code = institutions.get(&r.institution).map(|i| i.code.as_str()).unwrap_or("");
        // Answered ÷ required, as the row carries it (empty where it has none).
        let completeness =
            serde_json::to_value(&r)?.get("completeness").and_then(Value::as_str).unwrap_or("").to_owned();
        if institution.is_some_and(|want| want != code) {
            continue;
        }
        w.write_record([
            code,
            &r.code,
            &r.name,
            &r.kind,
            r.region.as_deref().unwrap_or(""),
            &r.instrument,
            &r.status,
            r.score.as_deref().unwrap_or(""),
            r.provisional.as_deref().unwrap_or(""),
            r.grade.as_deref().unwrap_or(""),
            r.zone.as_deref().unwrap_or(""),
            &completeness,
        ])
        .map_err(csv_err)?;
    }
    finish(w)
}

/// Institution records in `region` (None: all) with their codes and regions, by code.
fn institutions(tx: &Transaction<'_>, region: Option<&str>) -> Result<Vec<(String, String, String)>, ApiError> {
    let mut stmt = tx.prepare_cached(
        "SELECT e.entity, json_extract(c.value, '$'), COALESCE(e.region, '') FROM entities e
         JOIN fields c ON c.entity = e.entity AND c.field = 'code'
         WHERE e.kind = 'institution' AND (?1 IS NULL OR e.region = ?1) ORDER BY 2",
    )?;
    let rows = stmt.query_map([region], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn time(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

/// Raw answers of submitted visits in `region` (None: all), optionally of one
/// institution (code) and one instrument (`id@version`): one row per visit answer and
/// per questionnaire answer, with the corrected value where a correction is in force.
pub fn answers_csv(
    tx: &Transaction<'_>,
    region: Option<&str>,
    institution: Option<&str>,
    instrument: Option<&str>,
) -> Result<Vec<u8>, ApiError> {
    let instrument = match instrument {
        None => None,
        Some(text) => Some(parse_instrument(text).ok_or_else(|| {
            ApiError::bad_query(format!("instrument must be `id@version` (e.g. penilaian-2023@1), got `{text}`"))
        })?),
    };
    let mut w = writer();
    w.write_record(ANSWERS_HEADER).map_err(csv_err)?;
    for (id, code, inst_region) in institutions(tx, region)? {
        if institution.is_some_and(|want| want != code) {
            continue;
        }
        let work = Fieldwork::load(tx, &id, instrument.as_ref(), true)?;
        for v in &work.visits {
            let used = v.instrument.as_ref().map(ToString::to_string).unwrap_or_default();
            let finished = time(v.finished_at);
            let row = |w: &mut csv::Writer<Vec<u8>>,
                       indicator: &str,
                       kind: &str,
                       respondent: &str,
                       value: &Value,
                       corrected: Option<&Value>|
             -> Result<(), ApiError> {
                w.write_record([
                    inst_region.as_str(),
                    &code,
                    &v.unit,
                    &v.product,
                    &v.id,
                    v.assessor.as_deref().unwrap_or(""),
                    v.mode.as_deref().unwrap_or(""),
                    v.location.as_deref().unwrap_or(""),
                    &used,
                    indicator,
                    kind,
                    respondent,
                    &cell(value),
                    &corrected.map(cell).unwrap_or_default(),
                    &finished,
                ])
                .map_err(csv_err)
            };
            let null = Value::Null;
            let mut indicators: Vec<&String> = v.answers.keys().chain(v.corrected.keys()).collect();
            indicators.sort();
            indicators.dedup();
            for ind in indicators {
                row(&mut w, ind, "", "", v.answers.get(ind).unwrap_or(&null), v.corrected.get(ind))?;
            }
            for r in &v.respondents {
                let mut indicators: Vec<&String> = r.answers.keys().chain(r.corrected.keys()).collect();
                indicators.sort();
                indicators.dedup();
                for ind in indicators {
                    row(&mut w, ind, &r.kind, &r.id, r.answers.get(ind).unwrap_or(&null), r.corrected.get(ind))?;
                }
            }
        }
    }
    finish(w)
}
