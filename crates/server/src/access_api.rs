//! Access endpoints: tokens (list, create, revoke, rotate; admins only) and the audit
//! log (`GET /v1/admin/audit`: admins everything, supervisors their own region's
//! entries). Every change is written to the audit log with who made it.

use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::routing::{get, post};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::{json_body, Caller, Routes};
use crate::audit::{self, Action, Actor, Kind};
use crate::auth::{self, NewToken, Role};
use crate::error::ApiError;
use crate::review::Reviewer;
use crate::state::AppState;
use crate::sync_api::parse_query;

/// Registers the token and audit routes.
pub fn routes(r: Routes) -> Routes {
    r.add(Method::GET, "/v1/admin/tokens", get(list))
        .add(Method::POST, "/v1/admin/tokens", post(create))
        .add(Method::POST, "/v1/admin/tokens/{id}/revoke", post(revoke))
        .add(Method::POST, "/v1/admin/tokens/{id}/rotate", post(rotate))
        .add(Method::GET, "/v1/admin/audit", get(audit_log))
}

async fn list(State(state): State<AppState>, Caller(who): Caller) -> Result<Json<Value>, ApiError> {
    who.require(&[Role::Admin])?;
    let now = state.now();
    let tokens = state.db().read(move |tx| auth::list_tokens(tx, now).map_err(ApiError::from)).await?;
    Ok(Json(json!({ "tokens": tokens })))
}

/// `POST /v1/admin/tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    role: String,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    assessor: Option<String>,
    #[serde(default)]
    label: Option<String>,
    /// A lifetime such as `90d` or `12h`; none: until revoked.
    #[serde(default)]
    expires_in: Option<String>,
    /// The device keys (64 hex digits each) an assessor token is issued for.
    #[serde(default)]
    device_keys: Vec<String>,
}

/// Reads device public keys given as hex.
pub fn parse_device_keys(keys: &[String]) -> Result<Vec<sidak_core::sign::PublicKey>, String> {
    keys.iter().map(|k| k.trim().parse().map_err(|e| format!("device key `{k}`: {e}"))).collect()
}

/// What `token create` was asked, in words.
pub fn create_asked(new: &NewToken, expires_in: Option<&str>) -> String {
    let mut out = format!("create a {} token", new.role);
    for (name, value) in [("region", &new.region), ("assessor", &new.assessor)] {
        if let Some(v) = value {
            out.push_str(&format!(", {name} {v}"));
        }
    }
    if let Some(l) = &new.label {
        out.push_str(&format!(", label \"{l}\""));
    }
    if let Some(e) = expires_in {
        out.push_str(&format!(", expiring in {e}"));
    }
    for key in &new.device_keys {
        out.push_str(&format!(", for device key {key}"));
    }
    out
}

async fn create(
    State(state): State<AppState>,
    Caller(who): Caller,
    request: Request,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    who.require(&[Role::Admin])?;
    let body: CreateRequest = json_body(request).await?;
    let role: Role = body.role.parse().map_err(ApiError::invalid_body)?;
    let lifetime = body.expires_in.as_deref().map(auth::parse_lifetime).transpose().map_err(ApiError::invalid_body)?;
    let device_keys = parse_device_keys(&body.device_keys).map_err(ApiError::invalid_body)?;
    let new = NewToken { role, region: body.region, assessor: body.assessor, label: body.label, device_keys };
    let now = state.now();
    let action =
        Action::new(Kind::TokenCreate, "POST /v1/admin/tokens", create_asked(&new, body.expires_in.as_deref()));
    let (view, secret) = audit::audited(&state, Actor::token(&who), action, move |tx| {
        let (id, secret) = auth::create_token_until(tx, &new, lifetime.map(|ms| now + ms), now)?;
        let view = auth::token(tx, &id, now)?;
        let done = audit::token_created(&view);
        Ok(((view, secret), done))
    })
    .await?;
    Ok((StatusCode::CREATED, Json(json!({ "token": view, "secret": secret }))))
}

async fn revoke(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    who.require(&[Role::Admin])?;
    let now = state.now();
    let action = Action::new(Kind::TokenRevoke, "POST /v1/admin/tokens/{id}/revoke", format!("revoke {id}"));
    let view = audit::audited(&state, Actor::token(&who), action, move |tx| {
        let view = auth::revoke_token(tx, &id, now)?;
        let done = audit::token_revoked(&view);
        Ok((view, done))
    })
    .await?;
    Ok(Json(json!({ "token": view })))
}

/// `POST /v1/admin/tokens/{id}/rotate` (the body is optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateRequest {
    /// Seconds the old secret keeps working.
    #[serde(default)]
    grace_seconds: u64,
    /// The new token's lifetime; none: as long as the old one's.
    #[serde(default)]
    expires_in: Option<String>,
}

/// What `token rotate` was asked, in words.
pub fn rotate_asked(id: &str, grace_seconds: u64, expires_in: Option<&str>) -> String {
    let expires = expires_in.map(|e| format!(", the new one expiring in {e}")).unwrap_or_default();
    format!("rotate {id} with {grace_seconds} s of grace{expires}")
}

async fn rotate(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(id): Path<String>,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    who.require(&[Role::Admin])?;
    let body: RotateRequest = optional_json(request).await?;
    let lifetime = body.expires_in.as_deref().map(auth::parse_lifetime).transpose().map_err(ApiError::invalid_body)?;
    let grace_ms = i64::try_from(body.grace_seconds).unwrap_or(i64::MAX / 1000).saturating_mul(1000);
    let now = state.now();
    let action = Action::new(
        Kind::TokenRotate,
        "POST /v1/admin/tokens/{id}/rotate",
        rotate_asked(&id, body.grace_seconds, body.expires_in.as_deref()),
    );
    let rotated = audit::audited(&state, Actor::token(&who), action, move |tx| {
        let rotated = auth::rotate_token(tx, &id, grace_ms, lifetime, now)?;
        let done = audit::token_rotated(&rotated);
        Ok((rotated, done))
    })
    .await?;
    Ok(Json(serde_json::to_value(rotated)?))
}

/// A JSON body that may be left out: no body and no `Content-Type` is the default.
async fn optional_json<T: serde::de::DeserializeOwned + Default>(request: Request) -> Result<T, ApiError> {
    if request.headers().contains_key(header::CONTENT_TYPE) {
        return json_body(request).await;
    }
    let bytes = axum::body::to_bytes(request.into_body(), 64 * 1024)
        .await
        .map_err(|_| ApiError::body_too_large("send no body, or a JSON one"))?;
    if bytes.is_empty() {
        Ok(T::default())
    } else {
        Err(ApiError::unsupported_media_type("a body needs Content-Type: application/json"))
    }
}

async fn audit_log(
    State(state): State<AppState>,
    Caller(who): Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let reviewer = Reviewer::for_principal(&who)?;
    let q = parse_query(raw, &["since", "limit", "region"])?;
    let region = reviewer.listing_region(q.get("region").map(String::as_str))?;
    let since: i64 = match q.get("since") {
        None => 0,
        Some(s) => s.parse().ok().filter(|n| *n >= 0).ok_or_else(|| {
            ApiError::bad_query(format!("`since` is the id of the last entry seen, a whole number ≥ 0 (got `{s}`)"))
        })?,
    };
    let limit: usize = match q.get("limit") {
        None => 100,
        Some(l) => l
            .parse()
            .ok()
            .filter(|n| (1..=audit::MAX_LIMIT).contains(n))
            .ok_or_else(|| ApiError::bad_query(format!("`limit` is 1 to {} (got `{l}`)", audit::MAX_LIMIT)))?,
    };
    let entries = state.db().read(move |tx| audit::list(tx, region.as_deref(), since, limit)).await?;
    let next = entries.last().map_or(since, |e| e.id);
    Ok(Json(json!({ "entries": entries, "next": next })))
}
