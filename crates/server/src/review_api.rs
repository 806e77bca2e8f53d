//! Review endpoints under `/v1/review/…`: submitted visits, edits after submission,
//! corrections (list, make, withdraw) and conflict resolution. Supervisors act in
//! their region, admins anywhere; assessors and peers get 403 `role_forbidden`.
//! Conflicts and quarantined ops stay at `/v1/admin/conflicts` and
//! `/v1/admin/quarantine`. Corrections, withdrawals and resolutions are written to
//! the audit log.

use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{Method, StatusCode};
use axum::routing::{get, post};
use axum::Json;
use serde_json::{json, Value};

use crate::api::{json_body, Caller, Routes};
use crate::audit::{self, Action, Actor, Kind};
use crate::error::ApiError;
use crate::review::{self, NewCorrection, Resolution, Reviewer, VisitStatus, Withdrawal};
use crate::state::AppState;
use crate::sync_api::parse_query;

/// Registers the review routes.
pub fn routes(r: Routes) -> Routes {
    r.add(Method::GET, "/v1/review/visits", get(visits))
        .add(Method::GET, "/v1/review/edits", get(edits))
        .add(Method::GET, "/v1/review/corrections", get(corrections))
        .add(Method::POST, "/v1/review/corrections", post(correct))
        .add(Method::POST, "/v1/review/corrections/{id}/withdraw", post(withdraw))
        .add(Method::POST, "/v1/review/conflicts/resolve", post(resolve))
}

async fn visits(
    State(state): State<AppState>,
    Caller(who): Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let reviewer = Reviewer::for_principal(&who)?;
    let q = parse_query(raw, &["status", "institution", "region"])?;
    let region = reviewer.listing_region(q.get("region").map(String::as_str))?;
    let status: VisitStatus = match q.get("status") {
        None => VisitStatus::default(),
        Some(s) => s.parse().map_err(ApiError::bad_query)?,
    };
    let institution = q.get("institution").cloned();
    let list = state.db().read(move |tx| review::visits(tx, region.as_deref(), status, institution.as_deref())).await?;
    Ok(Json(json!({ "visits": list })))
}

async fn edits(
    State(state): State<AppState>,
    Caller(who): Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let reviewer = Reviewer::for_principal(&who)?;
    let q = parse_query(raw, &["region", "visit"])?;
    let region = reviewer.listing_region(q.get("region").map(String::as_str))?;
    let visit = q.get("visit").cloned();
    let list = state.db().read(move |tx| review::edits(tx, region.as_deref(), visit.as_deref())).await?;
    Ok(Json(json!({ "edits": list })))
}

async fn corrections(
    State(state): State<AppState>,
    Caller(who): Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let reviewer = Reviewer::for_principal(&who)?;
    let q = parse_query(raw, &["region", "visit"])?;
    let region = reviewer.listing_region(q.get("region").map(String::as_str))?;
    let visit = q.get("visit").cloned();
    let list = state.db().read(move |tx| review::corrections(tx, region.as_deref(), visit.as_deref())).await?;
    Ok(Json(json!({ "corrections": list })))
}

async fn correct(
    State(state): State<AppState>,
    Caller(who): Caller,
    request: Request,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let reviewer = Reviewer::for_principal(&who)?;
    let new: NewCorrection = json_body(request).await?;
    let instruments = state.instruments();
    let now = state.now();
    let action = Action::new(Kind::CorrectionCreate, "POST /v1/review/corrections", audit::correction_asked(&new));
    let written = audit::audited(&state, Actor::token(&who), action, move |tx| {
        let written = review::correct(tx, &instruments, &reviewer, &new, now)?;
        let done = audit::corrected(&written);
        Ok((written, done))
    })
    .await?;
    Ok((StatusCode::CREATED, Json(serde_json::to_value(written)?)))
}

async fn withdraw(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    let reviewer = Reviewer::for_principal(&who)?;
    let withdrawal: Withdrawal = json_body(request).await?;
    let instruments = state.instruments();
    let now = state.now();
    let action = Action::new(
        Kind::CorrectionWithdraw,
        "POST /v1/review/corrections/{id}/withdraw",
        audit::withdrawal_asked(&id, &withdrawal),
    );
    let written = audit::audited(&state, Actor::token(&who), action, move |tx| {
        let written = review::withdraw(tx, &instruments, &reviewer, &id, &withdrawal, now)?;
        let done = audit::withdrawn(&written);
        Ok((written, done))
    })
    .await?;
    Ok(Json(serde_json::to_value(written)?))
}

async fn resolve(
    State(state): State<AppState>,
    Caller(who): Caller,
    request: Request,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let reviewer = Reviewer::for_principal(&who)?;
    let resolution: Resolution = json_body(request).await?;
    let instruments = state.instruments();
    let now = state.now();
    let action =
        Action::new(Kind::ConflictResolve, "POST /v1/review/conflicts/resolve", audit::resolution_asked(&resolution));
    let resolved = audit::audited(&state, Actor::token(&who), action, move |tx| {
        let resolved = review::resolve(tx, &instruments, &reviewer, &resolution, now)?;
        let done = audit::resolved(&resolved);
        Ok((resolved, done))
    })
    .await?;
    Ok((StatusCode::CREATED, Json(serde_json::to_value(resolved)?)))
}
