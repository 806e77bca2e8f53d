//! Admin endpoints: publish an instrument, import the registry, create assignments,
//! list conflicts and quarantined ops, recompute from scratch. Admins everywhere;
//! supervisors may list their region's conflicts and quarantine. Every change is
//! written to the audit log; tokens and the log itself are in `access_api`.

use axum::extract::{Path, Request, State};
use axum::http::Method;
use axum::routing::{get, post};
use axum::Json;
use serde_json::{json, Value};
use sidak_core::instrument::Instrument;

use crate::admin::{self, NewAssignment};
use crate::api::{json_body, parse_json, raw_body, Caller, Routes};
use crate::audit::{self, Action, Actor, Kind};
use crate::auth::Role;
use crate::error::ApiError;
use crate::results;
use crate::state::AppState;

/// Registers the admin routes.
pub fn routes(r: Routes) -> Routes {
    let r = r
        .add(Method::POST, "/v1/admin/instruments", post(publish))
        .add(Method::POST, "/v1/admin/registry", post(registry))
        .add(Method::POST, "/v1/admin/assignments", post(assignment))
        .add(Method::GET, "/v1/admin/conflicts", get(conflicts))
        .add(Method::GET, "/v1/admin/quarantine", get(quarantine))
        .add(Method::POST, "/v1/admin/recompute", post(recompute))
        .add(Method::GET, "/v1/openapi.json", get(openapi))
        .add(Method::GET, "/v1/schemas/{file}", get(schema));
    crate::access_api::routes(r)
}

/// The JSON Schemas the OpenAPI description refers to (`schemas/<name>.schema.json`).
const SCHEMAS: &[(&str, &str)] = &[
    ("op.schema.json", include_str!("../../../proto/schemas/op.schema.json")),
    ("push-request.schema.json", include_str!("../../../proto/schemas/push-request.schema.json")),
    ("push-response.schema.json", include_str!("../../../proto/schemas/push-response.schema.json")),
    ("pull-response.schema.json", include_str!("../../../proto/schemas/pull-response.schema.json")),
    ("status-request.schema.json", include_str!("../../../proto/schemas/status-request.schema.json")),
    ("status-response.schema.json", include_str!("../../../proto/schemas/status-response.schema.json")),
    ("manifest.schema.json", include_str!("../../../proto/schemas/manifest.schema.json")),
    ("evidence-begin.schema.json", include_str!("../../../proto/schemas/evidence-begin.schema.json")),
    ("evidence-status.schema.json", include_str!("../../../proto/schemas/evidence-status.schema.json")),
    ("instrument-list.schema.json", include_str!("../../../proto/schemas/instrument-list.schema.json")),
    ("whoami.schema.json", include_str!("../../../proto/schemas/whoami.schema.json")),
    ("error.schema.json", include_str!("../../../proto/schemas/error.schema.json")),
    ("assignment-list.schema.json", include_str!("../../../proto/schemas/assignment-list.schema.json")),
    ("instrument.schema.json", include_str!("../../../proto/schemas/instrument.schema.json")),
];

async fn schema(Path(file): Path<String>) -> Result<Json<Value>, ApiError> {
    let (_, text) = SCHEMAS
        .iter()
        .find(|(name, _)| *name == file)
        .ok_or_else(|| ApiError::not_found(format!("no schema `{file}`")))?;
    Ok(Json(serde_json::from_str(text)?))
}

/// The OpenAPI description of this API (also `proto/openapi.json`).
pub const OPENAPI: &str = include_str!("../../../proto/openapi.json");

async fn openapi() -> Result<Json<Value>, ApiError> {
    Ok(Json(serde_json::from_str(OPENAPI)?))
}

async fn publish(
    State(state): State<AppState>,
    Caller(who): Caller,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    who.require(&[Role::Admin])?;
    let bytes = raw_body(request, sidak_core::wire::limits::MAX_BODY_BYTES, "application/json").await?;
    let document: Value = parse_json(&bytes)?;
    let instrument = Instrument::from_document(document).map_err(|e| ApiError::invalid_body(e.to_string()))?;
    let now = state.now();
    let reference = instrument.reference.clone();
    let digest = instrument.digest.clone();
    // The instruments are re-read in the same store task, off the async threads: the
    // write transaction sees what it just published.
    let action =
        Action::new(Kind::InstrumentPublish, "POST /v1/admin/instruments", format!("publish {reference} ({digest})"));
    let (added, fresh) = audit::audited(&state, Actor::token(&who), action, move |tx| {
        let added = admin::publish_instrument(tx, &instrument, now)?;
        let done = audit::published(&instrument.reference, &instrument.digest, added);
        Ok(((added, admin::load_instruments(tx)?), done))
    })
    .await?;
    state.adopt_instruments(fresh);
    Ok(Json(json!({"instrument": reference, "digest": digest, "added": added})))
}

async fn registry(
    State(state): State<AppState>,
    Caller(who): Caller,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    who.require(&[Role::Admin])?;
    let bytes = raw_body(request, sidak_core::wire::limits::MAX_BODY_BYTES, "text/csv").await?;
    let text =
        String::from_utf8(bytes.to_vec()).map_err(|_| ApiError::invalid_body("the registry CSV is not UTF-8"))?;
    let rows = admin::parse_registry(&text)?;
    let instruments = state.instruments();
    let now = state.now();
    let action = Action::new(Kind::RegistryImport, "POST /v1/admin/registry", format!("import {} row(s)", rows.len()));
    let report = audit::audited(&state, Actor::token(&who), action, move |tx| {
        let (report, dirty) = admin::import_registry(tx, &instruments, &rows, now)?;
        for i in &dirty {
            results::recompute(tx, &instruments, i)?;
        }
        let done = audit::imported(&report);
        Ok((report, done))
    })
    .await?;
    Ok(Json(serde_json::to_value(report)?))
}

async fn assignment(
    State(state): State<AppState>,
    Caller(who): Caller,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    who.require(&[Role::Admin])?;
    let new: NewAssignment = json_body(request).await?;
    let instruments = state.instruments();
    let now = state.now();
    let action = Action::new(Kind::AssignmentCreate, "POST /v1/admin/assignments", audit::assignment_asked(&new));
    let id = audit::audited(&state, Actor::token(&who), action, move |tx| {
        let (id, dirty) = admin::create_assignment(tx, &instruments, &new, now)?;
        for i in &dirty {
            results::recompute(tx, &instruments, i)?;
        }
        let done = audit::assigned(tx, &new, &id)?;
        Ok((id, done))
    })
    .await?;
    Ok(Json(json!({"assignment": id})))
}

fn review_region(who: &crate::auth::Principal) -> Result<Option<String>, ApiError> {
    who.require(&[Role::Supervisor, Role::Admin])?;
    Ok(if who.role == Role::Admin { None } else { who.region.clone() })
}

async fn conflicts(State(state): State<AppState>, Caller(who): Caller) -> Result<Json<Value>, ApiError> {
    let region = review_region(&who)?;
    let list = state.db().read(move |tx| admin::conflicts(tx, region.as_deref())).await?;
    Ok(Json(json!({"conflicts": list})))
}

async fn quarantine(State(state): State<AppState>, Caller(who): Caller) -> Result<Json<Value>, ApiError> {
    let region = review_region(&who)?;
    let list = state.db().read(move |tx| admin::quarantined(tx, region.as_deref())).await?;
    Ok(Json(json!({"quarantine": list})))
}

async fn recompute(State(state): State<AppState>, Caller(who): Caller) -> Result<Json<Value>, ApiError> {
    who.require(&[Role::Admin])?;
    let instruments = state.instruments();
    let action = Action::new(Kind::Recompute, "POST /v1/admin/recompute", "recompute every result");
    let n = audit::audited(&state, Actor::token(&who), action, move |tx| {
        let n = results::recompute_all(tx, &instruments)?;
        Ok((n, audit::recomputed(n)))
    })
    .await?;
    Ok(Json(json!({"institutions": n})))
}
