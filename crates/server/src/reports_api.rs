//! Report endpoints: an institution's report card (*rapor*) as JSON and as printable
//! HTML, and the CSV exports of unit results and of raw answers. Supervisors see their
//! region, admins every region (and may filter by `region`); assessors and peers get
//! 403 `role_forbidden`.

use axum::extract::{Path, RawQuery, State};
use axum::http::Method;
use axum::response::Response;
use axum::routing::get;
use axum::Json;
use serde_json::Value;
use sidak_core::instrument::InstrumentRef;

use crate::api::{bytes_response, Caller, Routes};
use crate::auth::{Principal, Role};
use crate::error::ApiError;
use crate::rapor::{self, Links, Rapor};
use crate::state::AppState;
use crate::sync_api::parse_query;
use crate::{exports, html};

/// Registers the report routes.
pub fn routes(r: Routes) -> Routes {
    r.add(Method::GET, "/v1/results/institutions/{id}/rapor", get(rapor_json))
        .add(Method::GET, "/v1/results/institutions/{id}/rapor.html", get(rapor_html))
        .add(Method::GET, "/v1/results/units.csv", get(units_csv))
        .add(Method::GET, "/v1/exports/answers.csv", get(answers_csv))
}

/// The region a report reader is limited to (`None`: every region), after the role
/// check: a supervisor its own (another region asked for is 403 `scope_forbidden`),
/// an admin the one asked for.
pub fn report_region(who: &Principal, asked: Option<&str>) -> Result<Option<String>, ApiError> {
    who.require(&[Role::Supervisor, Role::Admin])?;
    match (who.role, asked) {
        (Role::Admin, asked) => Ok(asked.map(str::to_owned)),
        (_, Some(r)) if Some(r) != who.region.as_deref() => {
            Err(ApiError::scope_forbidden(format!("region `{r}` is outside this token's scope")))
        }
        _ => Ok(who.region.clone()),
    }
}

/// Reads an `instrument=id@version` query value.
pub fn instrument_param(text: Option<&String>) -> Result<Option<InstrumentRef>, ApiError> {
    match text {
        None => Ok(None),
        Some(t) => rapor::parse_instrument(t).map(Some).ok_or_else(|| {
            ApiError::bad_query(format!("instrument must be `id@version` (e.g. penilaian-2023@1), got `{t}`"))
        }),
    }
}

/// The report card of institution `key` for `asked` (or its latest season), refused
/// outside `region`.
pub async fn load_rapor(
    state: &AppState,
    region: Option<String>,
    key: String,
    asked: Option<InstrumentRef>,
) -> Result<Rapor, ApiError> {
    let instruments = state.instruments();
    let card = state.db().read(move |tx| rapor::build(tx, &instruments, &key, asked.as_ref())).await?;
    let card = card.ok_or_else(|| ApiError::not_found("no institution result for that id or code (and season)"))?;
    if region.is_some() && card.institution.region != region {
        return Err(ApiError::scope_forbidden("that institution is outside this token's region"));
    }
    Ok(card)
}

async fn card(state: &AppState, who: &Principal, id: String, raw: Option<String>) -> Result<Rapor, ApiError> {
    let region = report_region(who, None)?;
    let q = parse_query(raw, &["instrument"])?;
    let asked = instrument_param(q.get("instrument"))?;
    load_rapor(state, region, id, asked).await
}

async fn rapor_json(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(serde_json::to_value(card(&state, &who, id, raw).await?)?))
}

async fn rapor_html(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let card = card(&state, &who, id, raw).await?;
    let page = html::page(&format!("Rapor — {}", card.institution.name), None, &rapor::html_body(&card, Links::Api));
    Ok(bytes_response("text/html; charset=utf-8", page.into_bytes()))
}

async fn units_csv(
    State(state): State<AppState>,
    Caller(who): Caller,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    who.require(&[Role::Supervisor, Role::Admin])?;
    let q = parse_query(raw, &["region", "institution"])?;
    let region = report_region(&who, q.get("region").map(String::as_str))?;
    let institution = q.get("institution").cloned();
    let bytes = state.db().read(move |tx| exports::units_csv(tx, region.as_deref(), institution.as_deref())).await?;
    Ok(bytes_response("text/csv; charset=utf-8", bytes))
}

async fn answers_csv(
    State(state): State<AppState>,
    Caller(who): Caller,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    who.require(&[Role::Supervisor, Role::Admin])?;
    let q = parse_query(raw, &["region", "institution", "instrument"])?;
    let region = report_region(&who, q.get("region").map(String::as_str))?;
    let institution = q.get("institution").cloned();
    let instrument = q.get("instrument").cloned();
    let bytes = state
        .db()
        .read(move |tx| exports::answers_csv(tx, region.as_deref(), institution.as_deref(), instrument.as_deref()))
        .await?;
    Ok(bytes_response("text/csv; charset=utf-8", bytes))
}
