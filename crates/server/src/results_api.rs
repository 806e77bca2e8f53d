//! Results endpoints: units, institutions and regions as JSON, what changed since a
//! cursor, and a CSV export. Supervisors and peers see their region, admins all.

use std::collections::BTreeMap;

use axum::extract::{Path, RawQuery, State};
use axum::http::Method;
use axum::response::Response;
use axum::routing::get;
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};
use sidak_core::instrument::InstrumentRef;
use sidak_core::num::{Exact, Published};

use crate::api::{bytes_response, Caller, Routes};
use crate::auth::{Principal, Role};
use crate::error::ApiError;
use crate::results::{self, ResultRow};
use crate::state::AppState;

/// Registers the results routes.
pub fn routes(r: Routes) -> Routes {
    r.add(Method::GET, "/v1/results/institutions", get(institutions))
        .add(Method::GET, "/v1/results/institutions.csv", get(institutions_csv))
        .add(Method::GET, "/v1/results/institutions/{id}", get(institution))
        .add(Method::GET, "/v1/results/units", get(units))
        .add(Method::GET, "/v1/results/units/{id}", get(unit))
        .add(Method::GET, "/v1/results/regions", get(regions))
}

/// The region a results caller is limited to (None: all), after the role check.
fn results_scope(who: &Principal, asked: Option<&String>) -> Result<Option<String>, ApiError> {
    who.require(&[Role::Supervisor, Role::Admin, Role::Peer])?;
    match (who.role, asked) {
        (Role::Admin, asked) => Ok(asked.cloned()),
        (_, Some(r)) if Some(r) != who.region.as_ref() => {
            Err(ApiError::scope_forbidden(format!("region `{r}` is outside this token's scope")))
        }
        _ => Ok(who.region.clone()),
    }
}

fn query(raw: Option<String>, allowed: &[&str]) -> Result<BTreeMap<String, String>, ApiError> {
    crate::sync_api::parse_query(raw, allowed)
}

/// A listing with the cursor to ask again from.
#[derive(Serialize)]
struct Listing {
    cursor: i64,
    results: Vec<ResultRow>,
}

async fn listing(
    state: &AppState,
    who: Principal,
    raw: Option<String>,
    kind: &'static str,
) -> Result<Listing, ApiError> {
    let q = query(raw, &["since", "region", "institution"])?;
    let region = results_scope(&who, q.get("region"))?;
    let since: i64 = match q.get("since") {
        None => 0,
        Some(s) => s
            .parse()
            .map_err(|_| ApiError::bad_query(format!("since must be a results cursor (a number), got `{s}`")))?,
    };
    let institution = q.get("institution").cloned();
    state
        .db()
        .read(move |tx| {
            let cursor = results::cursor(tx)?;
            let rows = results::rows(tx, kind, region.as_deref(), since, institution.as_deref())?;
            Ok(Listing { cursor, results: rows })
        })
        .await
}

async fn institutions(
    State(state): State<AppState>,
    Caller(who): Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(serde_json::to_value(listing(&state, who, raw, "institution").await?)?))
}

async fn units(
    State(state): State<AppState>,
    Caller(who): Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(serde_json::to_value(listing(&state, who, raw, "unit").await?)?))
}

async fn document(state: &AppState, who: Principal, kind: &'static str, key: String) -> Result<Json<Value>, ApiError> {
    let region = results_scope(&who, None)?;
    let found = state.db().read(move |tx| results::document(tx, kind, &key)).await?;
    let Some((row, doc)) = found else {
        return Err(ApiError::not_found(format!("no {kind} result for that id or code")));
    };
    if region.is_some() && row.region != region {
        return Err(ApiError::scope_forbidden(format!("that {kind} is outside this token's region")));
    }
    Ok(Json(json!({"row": row, "result": doc})))
}

async fn institution(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    document(&state, who, "institution", id).await
}

async fn unit(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    document(&state, who, "unit", id).await
}

/// Quotes a CSV field when it needs it.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

async fn institutions_csv(
    State(state): State<AppState>,
    Caller(who): Caller,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let listing = listing(&state, who, raw, "institution").await?;
    let mut out = String::from("code,name,type,region,instrument,status,score,provisional,grade,zone,completeness\n");
    for r in &listing.results {
        let completeness = r.completeness.map(|c| c.to_string()).unwrap_or_default();
        let cells = [
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
        ];
        out.push_str(&cells.iter().map(|c| csv_field(c)).collect::<Vec<_>>().join(","));
        out.push('\n');
    }
    Ok(bytes_response("text/csv; charset=utf-8", out.into_bytes()))
}

/// A region's figures for one instrument.
#[derive(Serialize, PartialEq, Eq, Debug)]
pub struct RegionResult {
    /// Region code.
    pub region: String,
    /// Instrument.
    pub instrument: String,
    /// Institutions with a result.
    pub institutions: usize,
    /// Of which complete.
    pub complete: usize,
    /// Complete results ÷ all, two decimals.
    pub completeness: Published,
    /// The mean of the complete institutions' published scores (half-up, two decimals).
    pub score: Option<Published>,
    /// The band of that mean.
    pub grade: Option<String>,
    /// Its zone.
    pub zone: Option<String>,
    /// Institutions per zone.
    pub zones: BTreeMap<String, usize>,
}

/// Region figures from institution rows.
pub fn region_results(
    rows: &[ResultRow],
    instruments: &BTreeMap<InstrumentRef, sidak_core::instrument::Instrument>,
) -> Vec<RegionResult> {
    let mut groups: BTreeMap<(String, String), Vec<&ResultRow>> = BTreeMap::new();
    for r in rows {
        groups.entry((r.region.clone().unwrap_or_default(), r.instrument.clone())).or_default().push(r);
    }
    groups
        .into_iter()
        .map(|((region, instrument), rows)| {
            let scores: Vec<Published> =
                rows.iter().filter(|r| r.status == "complete").filter_map(|r| r.score.as_ref()?.parse().ok()).collect();
            let mean = (!scores.is_empty()).then(|| {
                let sum: Exact = scores.iter().map(|s| s.to_exact()).sum();
                sum.checked_div(&Exact::from_int(scores.len() as i64)).expect("non-empty").publish()
            });
            let band = instrument
                .split_once('@')
                .and_then(|(id, v)| instruments.get(&InstrumentRef { id: id.to_owned(), version: v.parse().ok()? }))
                .zip(mean)
                .and_then(|(i, m)| i.band_for(m).cloned());
            let mut zones = BTreeMap::new();
            for r in &rows {
                if let Some(z) = &r.zone {
                    *zones.entry(z.clone()).or_default() += 1;
                }
            }
            RegionResult {
                completeness: Exact::ratio(scores.len() as i64, rows.len() as i64).publish(),
                institutions: rows.len(),
                complete: scores.len(),
                score: mean,
                grade: band.as_ref().map(|b| b.grade.clone()),
                zone: band.and_then(|b| b.zone).map(|z| z.name().to_owned()),
                zones,
                region,
                instrument,
            }
        })
        .collect()
}

async fn regions(
    State(state): State<AppState>,
    Caller(who): Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q = query(raw, &["region"])?;
    let region = results_scope(&who, q.get("region"))?;
    let rows = state.db().read(move |tx| results::rows(tx, "institution", region.as_deref(), -1, None)).await?;
    Ok(Json(json!({"regions": region_results(&rows, &state.instruments())})))
}
