//! The office dashboard under `/dashboard`: server-rendered HTML with no scripts and no
//! external assets. National and regional tables with zone colours and completeness,
//! rankings within each institution type, the drill-down institution → unit → product
//! → indicator → evidence, report cards, and sync health per region and device.
//!
//! Access needs a supervisor or admin token, scoped as the results API is. A browser
//! logs in at `/dashboard/login` (the token goes into an `HttpOnly`, `SameSite=Strict`
//! cookie limited to `/dashboard`); `Authorization: Bearer` works too; and `?token=` on
//! any page sets the cookie and redirects to the same address without it (for
//! scripted browsers and links that cannot carry a header). Every page is sent with a
//! content security policy that allows no script at all.

use std::collections::BTreeMap;

use axum::extract::{FromRequestParts, Path, RawQuery, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rusqlite::{OptionalExtension, Transaction};
use serde_json::Value;
use sidak_core::instrument::{Instrument, InstrumentRef, Level};
use sidak_core::num::Exact;
use sidak_core::records::INSTITUTION_TYPES;

use crate::api::{authenticate, check_source, raw_body, source_of, Routes};
use crate::auth::{Principal, Role};
use crate::error::ApiError;
use crate::fieldwork::{EvidenceItem, Fieldwork};
use crate::html::{esc, form_pairs, page, score_text, seg, time, zone_cell, zone_name};
use crate::lockout::Source;
use crate::rapor::{self, doc, Links, Season};
use crate::results::{self, ResultRow};
use crate::state::AppState;
use crate::synchealth;

/// The cookie that holds a browser's token.
pub const COOKIE: &str = "sidak_token";

/// The policy every dashboard page is sent with: no scripts, no outside resources.
pub const CSP: &str =
    "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Registers the dashboard routes.
pub fn routes(r: Routes) -> Routes {
    r.add(Method::GET, "/dashboard", get(overview))
        .add(Method::GET, "/dashboard/login", get(login_form))
        .add(Method::POST, "/dashboard/login", post(login))
        .add(Method::POST, "/dashboard/logout", post(logout))
        .add(Method::GET, "/dashboard/rankings", get(rankings))
        .add(Method::GET, "/dashboard/sync", get(sync))
        .add(Method::GET, "/dashboard/regions/{region}", get(region_page))
        .add(Method::GET, "/dashboard/institutions/{id}", get(institution_page))
        .add(Method::GET, "/dashboard/institutions/{id}/rapor", get(rapor_page))
        .add(Method::GET, "/dashboard/institutions/{id}/units/{unit}", get(unit_page))
        .add(Method::GET, "/dashboard/institutions/{id}/units/{unit}/indicators/{indicator}", get(unit_indicator_page))
        .add(Method::GET, "/dashboard/institutions/{id}/units/{unit}/products/{product}", get(product_page))
        .add(
            Method::GET,
            "/dashboard/institutions/{id}/units/{unit}/products/{product}/indicators/{indicator}",
            get(product_indicator_page),
        )
        .add(Method::GET, "/dashboard/evidence/{sha256}", get(evidence_page))
        .add(Method::GET, "/dashboard/evidence/{sha256}/file", get(evidence_file))
}

// ---------------------------------------------------------------------------------
// Responses

fn with_page_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Pages may have been reached with `?token=`: never pass the address on.
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

fn html(status: StatusCode, body: String) -> Response {
    let response = (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response();
    with_page_headers(response)
}

fn see_other(location: &str, cookie: Option<String>) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().insert(header::SET_COOKIE, c);
    }
    with_page_headers(response)
}

fn set_cookie(token: &str) -> String {
    format!("{COOKIE}={token}; Path=/dashboard; HttpOnly; SameSite=Strict")
}

fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// An error shown as a page: the status of the API error, its code in
/// `<p class="error" data-code="…">`.
pub struct PageError(pub ApiError);

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> PageError {
        PageError(e)
    }
}

impl From<serde_json::Error> for PageError {
    fn from(e: serde_json::Error) -> PageError {
        PageError(ApiError::internal(e))
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let e = self.0;
        let body = format!(
            r#"<h1>{}</h1><p class="error" data-code="{}">{}</p><p><a href="/dashboard">Back to the dashboard</a></p>"#,
            esc(e.status.canonical_reason().unwrap_or("Error")),
            esc(e.code),
            esc(&e.message)
        );
        let mut response = html(e.status, page("Sidak — error", None, &body));
        if let Some(seconds) = e.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

type PageResult = Result<Response, PageError>;

// ---------------------------------------------------------------------------------
// Who is looking

/// The signed-in reader of a page: a supervisor (its region) or an admin (all).
pub struct Viewer {
    /// The token's principal.
    pub who: Principal,
}

impl Viewer {
    /// The region the viewer is limited to (`None`: every region).
    pub fn region(&self) -> Option<&str> {
        match self.who.role {
            Role::Admin => None,
            _ => self.who.region.as_deref(),
        }
    }

    /// Refuses a record of another region with 403 `scope_forbidden`.
    pub fn check(&self, region: Option<&str>, what: &str) -> Result<(), ApiError> {
        match self.region() {
            Some(mine) if region != Some(mine) => Err(ApiError::scope_forbidden(format!(
                "{what} is in region `{}`, outside this token's region `{mine}`",
                region.unwrap_or("-")
            ))),
            _ => Ok(()),
        }
    }

    /// The region a listing covers: a supervisor's own (another is 403
    /// `scope_forbidden`), or for an admin the one asked for.
    pub fn listing(&self, asked: Option<&str>) -> Result<Option<String>, ApiError> {
        match (self.region(), asked) {
            (None, asked) => Ok(asked.map(str::to_owned)),
            (Some(mine), Some(r)) if r != mine => {
                Err(ApiError::scope_forbidden(format!("region `{r}` is outside this token's region `{mine}`")))
            }
            (Some(mine), _) => Ok(Some(mine.to_owned())),
        }
    }

    fn top_bar(&self) -> String {
        let who = match &self.who.region {
            Some(r) => format!("{} · {}", self.who.role, r),
            None => self.who.role.to_string(),
        };
        format!(
            r#"<header class="top"><a class="brand" href="/dashboard">Sidak</a><nav class="main"><a href="/dashboard">Results</a> <a href="/dashboard/rankings">Rankings</a> <a href="/dashboard/sync">Sync health</a></nav><span class="who">{}</span><form method="post" action="/dashboard/logout"><button type="submit">Log out</button></form></header>"#,
            esc(&who)
        )
    }
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let text = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    text.strip_prefix("Bearer ").map(|t| t.trim().to_owned()).filter(|t| !t.is_empty() && t.len() < 200)
}

fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim().to_owned())
        .filter(|t| !t.is_empty() && t.len() < 200)
}

/// The query string without its `token` parameter.
fn without_token(raw: Option<&str>) -> String {
    let kept: Vec<&str> =
        raw.unwrap_or("").split('&').filter(|p| !p.is_empty() && p.split('=').next() != Some("token")).collect();
    kept.join("&")
}

fn query_value(raw: Option<&str>, key: &str) -> Option<String> {
    form_pairs(raw.unwrap_or("")).into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// The token's principal; `Ok(Err(message))` for a secret that is not in force (401),
/// `Err` for the rest (a locked-out source, a store fault).
async fn principal(state: &AppState, source: Source, secret: String) -> Result<Result<Principal, String>, ApiError> {
    match authenticate(state, source, secret).await {
        Ok(who) => Ok(Ok(who)),
        Err(e) if e.status == StatusCode::UNAUTHORIZED => Ok(Err(e.message)),
        Err(e) => Err(e),
    }
}

fn login_location(parts: &Parts) -> String {
    let here = match parts.uri.query() {
        Some(q) => format!("{}?{q}", parts.uri.path()),
        None => parts.uri.path().to_owned(),
    };
    format!("/dashboard/login?next={}", seg(&here))
}

/// The page refusing a token that is not a supervisor's or an admin's.
fn refused_role(who: &Principal) -> Option<Response> {
    who.require(&[Role::Supervisor, Role::Admin]).err().map(|e| PageError(e).into_response())
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Viewer, Response> {
        let query = parts.uri.query().map(str::to_owned);
        let source = source_of(&parts.extensions);
        // `?token=`: log in, then show the same address without the token.
        if let Some(secret) = query_value(query.as_deref(), "token") {
            let found = principal(state, source, secret.clone()).await.map_err(|e| PageError(e).into_response())?;
            let who = match found {
                Ok(who) => who,
                Err(message) => return Err(login_page(StatusCode::UNAUTHORIZED, "/dashboard", Some(&message))),
            };
            if let Some(refused) = refused_role(&who) {
                return Err(refused);
            }
            let rest = without_token(query.as_deref());
            let target =
                if rest.is_empty() { parts.uri.path().to_owned() } else { format!("{}?{rest}", parts.uri.path()) };
            return Err(see_other(&target, Some(set_cookie(&secret))));
        }
        if let Some(secret) = bearer(&parts.headers) {
            let found = principal(state, source, secret).await.map_err(|e| PageError(e).into_response())?;
            let who = found.map_err(|message| PageError(ApiError::unauthorized(message)).into_response())?;
            if let Some(refused) = refused_role(&who) {
                return Err(refused);
            }
            return Ok(Viewer { who });
        }
        if let Some(secret) = cookie(&parts.headers) {
            let found = principal(state, source, secret).await.map_err(|e| PageError(e).into_response())?;
            return match found {
                Ok(who) => {
                    if let Some(refused) = refused_role(&who) {
                        return Err(refused);
                    }
                    Ok(Viewer { who })
                }
                // A revoked, expired or unknown token: forget it and ask again.
                Err(_) => Err(see_other(&login_location(parts), Some(clear_cookie()))),
            };
        }
        Err(see_other(&login_location(parts), None))
    }
}

// ---------------------------------------------------------------------------------
// Login

/// Only addresses of the dashboard itself are followed after logging in.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if (n == "/dashboard" || n.starts_with("/dashboard/") || n.starts_with("/dashboard?"))
                && !n.contains("//")
                && !n.contains('\\') =>
        {
            n.to_owned()
        }
        _ => "/dashboard".to_owned(),
    }
}

fn login_page(status: StatusCode, next: &str, error: Option<&str>) -> Response {
    let error =
        error.map(|e| format!(r#"<p class="error" data-code="unauthorized">{}</p>"#, esc(e))).unwrap_or_default();
    let body = format!(
        r#"<h1>Sidak dashboard</h1>{error}<form class="login" id="login" method="post" action="/dashboard/login"><p><label for="token">Token (supervisor or admin)</label><br><input type="password" id="token" name="token" autocomplete="off" required></p><input type="hidden" name="next" value="{}"><p><button type="submit">Log in</button></p></form><p class="muted">The token is kept in a cookie of this browser for this site's dashboard only, until the browser closes or you log out.</p>"#,
        esc(next)
    );
    html(status, page("Sidak — log in", None, &body))
}

async fn login_form(RawQuery(raw): RawQuery) -> Response {
    let next = safe_next(query_value(raw.as_deref(), "next").as_deref());
    login_page(StatusCode::OK, &next, None)
}

async fn login(State(state): State<AppState>, request: Request) -> PageResult {
    let source = source_of(request.extensions());
    check_source(&state, source)?;
    let bytes = raw_body(request, 16 * 1024, "application/x-www-form-urlencoded").await?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let pairs: BTreeMap<String, String> = form_pairs(&text).into_iter().collect();
    let next = safe_next(pairs.get("next").map(String::as_str));
    let Some(secret) = pairs.get("token").map(|t| t.trim().to_owned()).filter(|t| !t.is_empty() && t.len() < 200)
    else {
        return Ok(login_page(StatusCode::UNAUTHORIZED, &next, Some("give a token")));
    };
    match principal(&state, source, secret.clone()).await? {
        Err(message) => Ok(login_page(StatusCode::UNAUTHORIZED, &next, Some(&message))),
        Ok(who) => {
            who.require(&[Role::Supervisor, Role::Admin])?;
            Ok(see_other(&next, Some(set_cookie(&secret))))
        }
    }
}

async fn logout() -> Response {
    see_other("/dashboard/login", Some(clear_cookie()))
}

// ---------------------------------------------------------------------------------
// Shared pieces

fn a(href: &str, text: &str) -> String {
    format!(r#"<a href="{}">{}</a>"#, esc(href), esc(text))
}

/// `?instrument=…` for links that keep the season.
fn season_q(instrument: &InstrumentRef) -> String {
    format!("?instrument={}", seg(&instrument.to_string()))
}

fn institution_href(code: &str, instrument: &InstrumentRef) -> String {
    format!("/dashboard/institutions/{}{}", seg(code), season_q(instrument))
}

fn unit_href(inst: &str, unit: &str, instrument: &InstrumentRef) -> String {
    format!("/dashboard/institutions/{}/units/{}{}", seg(inst), seg(unit), season_q(instrument))
}

fn product_href(inst: &str, unit: &str, product: &str, instrument: &InstrumentRef) -> String {
    format!(
        "/dashboard/institutions/{}/units/{}/products/{}{}",
        seg(inst),
        seg(unit),
        seg(product),
        season_q(instrument)
    )
}

fn indicator_href(
    inst: &str,
    unit: &str,
    product: Option<&str>,
    indicator: &str,
    instrument: &InstrumentRef,
) -> String {
    match product {
        Some(p) => format!(
            "/dashboard/institutions/{}/units/{}/products/{}/indicators/{}{}",
            seg(inst),
            seg(unit),
            seg(p),
            seg(indicator),
            season_q(instrument)
        ),
        None => format!(
            "/dashboard/institutions/{}/units/{}/indicators/{}{}",
            seg(inst),
            seg(unit),
            seg(indicator),
            season_q(instrument)
        ),
    }
}

/// A row's completeness as a percentage: its `completeness` figure (answered ÷
/// required) when the row carries one, else what its status says.
pub fn completeness(row: &ResultRow) -> String {
    let figure = serde_json::to_value(row)
        .ok()
        .and_then(|v| v.get("completeness").cloned())
        .and_then(|c| c.as_str().map(str::to_owned))
        .and_then(|c| c.parse::<Exact>().ok());
    match figure {
        Some(f) => format!("{}%", (&f * &Exact::from_int(100)).publish()),
        None if row.status == "complete" => "100.00%".to_owned(),
        None => row.status.replace('_', " "),
    }
}

fn instrument_title(instruments: &BTreeMap<InstrumentRef, Instrument>, r: &InstrumentRef) -> String {
    let year = rapor::year_of(instruments, r).map(|y| format!(", season {y}")).unwrap_or_default();
    match instruments.get(r) {
        Some(i) => format!("{} ({r}{year})", i.title),
        None => r.to_string(),
    }
}

/// The season shown: the one asked for, or the latest year's among `rows`.
fn chosen_season(
    instruments: &BTreeMap<InstrumentRef, Instrument>,
    rows: &[ResultRow],
    asked: Option<&str>,
) -> Result<Option<InstrumentRef>, ApiError> {
    if let Some(a) = asked {
        return rapor::parse_instrument(a)
            .map(Some)
            .ok_or_else(|| ApiError::bad_query(format!("instrument must be `id@version`, got `{a}`")));
    }
    Ok(seasons_of(instruments, rows).pop())
}

fn seasons_of(instruments: &BTreeMap<InstrumentRef, Instrument>, rows: &[ResultRow]) -> Vec<InstrumentRef> {
    let mut all: Vec<InstrumentRef> = rows.iter().filter_map(|r| rapor::parse_instrument(&r.instrument)).collect();
    all.sort_by(|a, b| (rapor::year_of(instruments, a), a).cmp(&(rapor::year_of(instruments, b), b)));
    all.dedup();
    all
}

fn season_nav(
    instruments: &BTreeMap<InstrumentRef, Instrument>,
    all: &[InstrumentRef],
    current: &InstrumentRef,
    base: &str,
) -> String {
    if all.len() < 2 {
        return String::new();
    }
    let links: Vec<String> = all
        .iter()
        .map(|r| {
            if r == current {
                format!("<strong>{}</strong>", esc(&instrument_title(instruments, r)))
            } else {
                a(&format!("{base}{}", season_q(r)), &instrument_title(instruments, r))
            }
        })
        .collect();
    format!(r#"<nav class="seasons">Season: {}</nav>"#, links.join(" "))
}

fn institution_table(id: &str, rows: &[&ResultRow], instrument: &InstrumentRef) -> String {
    let mut out = format!(
        r#"<table id="{}" class="institutions"><thead><tr><th>Institution</th><th>Type</th><th>Region</th><th class="num">Score</th><th>Grade</th><th>Zone</th><th class="num">Completeness</th><th>Status</th></tr></thead><tbody>"#,
        esc(id)
    );
    for r in rows {
        let region = r.region.as_deref().unwrap_or("");
        out.push_str(&format!(
            r#"<tr data-institution="{code}" data-region="{region}" data-type="{kind}"><td class="name">{link}</td><td class="type">{kind}</td><td class="region">{region_link}</td><td class="score">{score}</td><td class="grade">{grade}</td>{zone}<td class="completeness num">{complete}</td><td class="status">{status}</td></tr>"#,
            code = esc(&r.code),
            region = esc(region),
            kind = esc(&r.kind),
            link = a(&institution_href(&r.code, instrument), &r.name),
            region_link = if region.is_empty() {
                String::new()
            } else {
                a(&format!("/dashboard/regions/{}{}", seg(region), season_q(instrument)), region)
            },
            score = esc(&score_text(r.score.as_deref(), r.provisional.as_deref())),
            grade = esc(r.grade.as_deref().unwrap_or("")),
            zone = zone_cell(r.zone.as_deref()),
            complete = esc(&completeness(r)),
            status = esc(&r.status.replace('_', " ")),
        ));
    }
    if rows.is_empty() {
        out.push_str(r#"<tr><td colspan="8" class="muted">No results yet.</td></tr>"#);
    }
    out.push_str("</tbody></table>");
    out
}

async fn institution_rows(state: &AppState, region: Option<String>) -> Result<Vec<ResultRow>, ApiError> {
    state.db().read(move |tx| results::rows(tx, "institution", region.as_deref(), -1, None)).await
}

// ---------------------------------------------------------------------------------
// Results tables

async fn overview(State(state): State<AppState>, viewer: Viewer, RawQuery(raw): RawQuery) -> PageResult {
    let instruments = state.instruments();
    let region = viewer.listing(query_value(raw.as_deref(), "region").as_deref())?;
    let rows = institution_rows(&state, region.clone()).await?;
    let Some(current) = chosen_season(&instruments, &rows, query_value(raw.as_deref(), "instrument").as_deref())?
    else {
        let body = r#"<h1>Results</h1><p id="no-results">No results yet: they appear once visits are submitted and synced.</p>"#;
        return Ok(html(StatusCode::OK, page("Sidak — results", Some(&viewer.top_bar()), body)));
    };
    let name = current.to_string();
    let season: Vec<&ResultRow> = rows.iter().filter(|r| r.instrument == name).collect();
    let mut b = format!(
        r#"<h1>Results — {}</h1>{}"#,
        esc(&instrument_title(&instruments, &current)),
        season_nav(&instruments, &seasons_of(&instruments, &rows), &current, "/dashboard")
    );
    b.push_str(&format!(
        r#"<p class="noprint">{} · {}</p>"#,
        a(&format!("/dashboard/rankings{}", season_q(&current)), "Rankings within each type"),
        a("/dashboard/sync", "Sync health")
    ));
    b.push_str(r#"<h2>Regions</h2><table id="regions"><thead><tr><th>Region</th><th class="num">Institutions</th><th class="num">Complete</th><th class="num">Completeness</th><th class="num">Mean score</th><th>Grade</th><th>Zone</th><th>Zones of institutions</th></tr></thead><tbody>"#);
    let owned: Vec<ResultRow> = season.iter().map(|r| (*r).clone()).collect();
    for g in crate::results_api::region_results(&owned, &instruments) {
        let zones: Vec<String> = g.zones.iter().map(|(z, n)| format!("{} {n}", zone_name(z))).collect();
        b.push_str(&format!(
            r#"<tr data-region="{0}"><td>{1}</td><td class="num">{2}</td><td class="num">{3}</td><td class="num">{4}%</td><td class="score">{5}</td><td class="grade">{6}</td>{7}<td>{8}</td></tr>"#,
            esc(&g.region),
            a(&format!("/dashboard/regions/{}{}", seg(&g.region), season_q(&current)), &g.region),
            g.institutions,
            g.complete,
            esc(&(&g.completeness.to_exact() * &Exact::from_int(100)).publish().to_string()),
            esc(&g.score.map(|s| s.to_string()).unwrap_or_else(|| "—".into())),
            esc(g.grade.as_deref().unwrap_or("")),
            zone_cell(g.zone.as_deref()),
            esc(&zones.join(", "))
        ));
    }
    b.push_str("</tbody></table>");
    let heading = if viewer.region().is_some() { "Institutions of the region" } else { "National table" };
    b.push_str(&format!("<h2>{heading}</h2>"));
    b.push_str(&institution_table("national", &season, &current));
    Ok(html(StatusCode::OK, page("Sidak — results", Some(&viewer.top_bar()), &b)))
}

async fn region_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(region): Path<String>,
    RawQuery(raw): RawQuery,
) -> PageResult {
    let region = viewer.listing(Some(&region))?.unwrap_or_default();
    let instruments = state.instruments();
    let rows = institution_rows(&state, Some(region.clone())).await?;
    let current = chosen_season(&instruments, &rows, query_value(raw.as_deref(), "instrument").as_deref())?;
    let mut b = format!(r#"<h1>Region <span id="region">{}</span></h1>"#, esc(&region));
    b.push_str(&format!(
        r#"<p class="noprint">{}</p>"#,
        a(&format!("/dashboard/sync?region={}", seg(&region)), "Sync health of this region")
    ));
    match current {
        None => b.push_str(r#"<p id="no-results">No results yet.</p>"#),
        Some(current) => {
            let name = current.to_string();
            let season: Vec<&ResultRow> = rows.iter().filter(|r| r.instrument == name).collect();
            b.push_str(&format!("<p class=\"meta\">{}</p>", esc(&instrument_title(&instruments, &current))));
            b.push_str(&season_nav(
                &instruments,
                &seasons_of(&instruments, &rows),
                &current,
                &format!("/dashboard/regions/{}", seg(&region)),
            ));
            b.push_str(&institution_table("region-table", &season, &current));
        }
    }
    Ok(html(StatusCode::OK, page(&format!("Sidak — region {region}"), Some(&viewer.top_bar()), &b)))
}

/// Ranks by figure, highest first; equal figures share a rank (1, 1, 3), ties listed
/// by code. Items without a figure (incomplete results) follow, unranked.
pub fn ranking<'a, T>(
    rows: &[&'a T],
    figure: impl Fn(&T) -> Option<sidak_core::num::Published>,
    code: impl Fn(&T) -> &str,
) -> Vec<(Option<usize>, &'a T)> {
    let mut ranked: Vec<&T> = rows.iter().copied().filter(|r| figure(r).is_some()).collect();
    ranked.sort_by(|a, b| figure(b).cmp(&figure(a)).then_with(|| code(a).cmp(code(b))));
    let mut out = Vec::new();
    let mut rank = 0;
    for (i, r) in ranked.iter().enumerate() {
        if i == 0 || figure(r) != figure(ranked[i - 1]) {
            rank = i + 1;
        }
        out.push((Some(rank), *r));
    }
    let mut rest: Vec<&T> = rows.iter().copied().filter(|r| figure(r).is_none()).collect();
    rest.sort_by(|a, b| code(a).cmp(code(b)));
    out.extend(rest.into_iter().map(|r| (None, r)));
    out
}

/// A complete result's published score (what rankings compare).
fn ranked_figure(r: &ResultRow) -> Option<sidak_core::num::Published> {
    r.score.as_deref().filter(|_| r.status == "complete").and_then(|s| s.parse().ok())
}

async fn rankings(State(state): State<AppState>, viewer: Viewer, RawQuery(raw): RawQuery) -> PageResult {
    let instruments = state.instruments();
    let region = viewer.listing(query_value(raw.as_deref(), "region").as_deref())?;
    let rows = institution_rows(&state, region.clone()).await?;
    let Some(current) = chosen_season(&instruments, &rows, query_value(raw.as_deref(), "instrument").as_deref())?
    else {
        let body = r#"<h1>Rankings</h1><p id="no-results">No results yet.</p>"#;
        return Ok(html(StatusCode::OK, page("Sidak — rankings", Some(&viewer.top_bar()), body)));
    };
    let name = current.to_string();
    let scope = region.as_deref().map(|r| format!(" in region {r}")).unwrap_or_else(|| " nationally".into());
    let mut b = format!(
        r#"<h1>Rankings within each institution type{}</h1><p class="meta">{} — complete results by score, highest first; equal scores share a rank; incomplete results are listed unranked.</p>{}"#,
        esc(&scope),
        esc(&instrument_title(&instruments, &current)),
        season_nav(&instruments, &seasons_of(&instruments, &rows), &current, "/dashboard/rankings")
    );
    for kind in INSTITUTION_TYPES {
        let of_kind: Vec<&ResultRow> = rows.iter().filter(|r| r.instrument == name && r.kind == kind).collect();
        b.push_str(&format!(r#"<section class="ranking" data-type="{0}"><h2>{0}</h2>"#, esc(kind)));
        if of_kind.is_empty() {
            b.push_str(r#"<p class="muted">No institutions of this type.</p></section>"#);
            continue;
        }
        b.push_str(&format!(
            r#"<table class="ranking" data-type="{}"><thead><tr><th class="num">Rank</th><th>Institution</th><th>Region</th><th class="num">Score</th><th>Grade</th><th>Zone</th><th class="num">Completeness</th></tr></thead><tbody>"#,
            esc(kind)
        ));
        for (rank, r) in ranking(&of_kind, ranked_figure, |r| r.code.as_str()) {
            b.push_str(&format!(
                r#"<tr data-institution="{}"><td class="rank">{}</td><td>{}</td><td>{}</td><td class="score">{}</td><td class="grade">{}</td>{}<td class="completeness num">{}</td></tr>"#,
                esc(&r.code),
                rank.map(|n| n.to_string()).unwrap_or_else(|| "—".into()),
                a(&institution_href(&r.code, &current), &r.name),
                esc(r.region.as_deref().unwrap_or("")),
                esc(&score_text(r.score.as_deref(), r.provisional.as_deref())),
                esc(r.grade.as_deref().unwrap_or("")),
                zone_cell(r.zone.as_deref()),
                esc(&completeness(r))
            ));
        }
        b.push_str("</tbody></table></section>");
    }
    Ok(html(StatusCode::OK, page("Sidak — rankings", Some(&viewer.top_bar()), &b)))
}

// ---------------------------------------------------------------------------------
// Drill-down

/// An institution's result for one season, loaded for a viewer.
struct Loaded {
    season: Season,
    seasons: Vec<Season>,
    doc: doc::Institution,
    work: Fieldwork,
    instrument: Instrument,
}

async fn load(state: &AppState, viewer: &Viewer, key: String, raw: Option<&str>) -> Result<Loaded, ApiError> {
    let asked = crate::reports_api::instrument_param(query_value(raw, "instrument").as_ref())?;
    let instruments = state.instruments();
    let found = state
        .db()
        .read(move |tx| {
            let Some(record) = rapor::institution_record(tx, &key)? else { return Ok(None) };
            let seasons = rapor::seasons(tx, &instruments, &record)?;
            let Some(season) = rapor::pick(&seasons, asked.as_ref()).cloned() else { return Ok(None) };
            let Some(doc) = rapor::institution_document(tx, &record, &season.instrument)? else { return Ok(None) };
            let instrument = instruments
                .get(&season.instrument)
                .cloned()
                .ok_or_else(|| ApiError::internal(format!("a result cites {} which is not held", season.instrument)))?;
            let work = Fieldwork::load(tx, &record, Some(&season.instrument), true)?;
            Ok::<_, ApiError>(Some(Loaded { season, seasons, doc, work, instrument }))
        })
        .await?;
    let loaded = found.ok_or_else(|| ApiError::not_found("no institution result for that code (and season)"))?;
    viewer.check(loaded.doc.region.as_deref(), &format!("institution `{}`", loaded.doc.id))?;
    Ok(loaded)
}

fn crumbs(l: &Loaded, unit: Option<&doc::Unit>, product: Option<&doc::Product>, last: Option<&str>) -> String {
    let r = &l.season.instrument;
    let mut parts = vec![a(&format!("/dashboard{}", season_q(r)), "Results")];
    parts.push(a(&institution_href(&l.doc.id, r), &l.doc.name));
    if let Some(u) = unit {
        parts.push(a(&unit_href(&l.doc.id, &u.id, r), &u.name));
        if let Some(p) = product {
            parts.push(a(&product_href(&l.doc.id, &u.id, &p.id, r), &p.name));
        }
    }
    if let Some(last) = last {
        parts.push(esc(last));
    }
    format!(r#"<nav class="crumbs">{}</nav>"#, parts.join(" › "))
}

fn outcome_line(
    status: &str,
    score: &Option<String>,
    provisional: &Option<String>,
    grade: &Option<String>,
    zone: &Option<String>,
) -> String {
    if status == "complete" {
        format!(
            r#"<div class="headline"><div>Score<div class="figure" id="score">{}</div></div><div>Grade<div class="grade badge zone-{}" id="grade">{}</div></div><div>Zone<div id="zone" class="badge zone-{1}" data-zone="{1}">{}</div></div></div>"#,
            esc(score.as_deref().unwrap_or("—")),
            esc(zone.as_deref().unwrap_or("")),
            esc(grade.as_deref().unwrap_or("—")),
            esc(zone.as_deref().map(zone_name).unwrap_or("—"))
        )
    } else {
        format!(
            r#"<div class="headline"><div class="status-incomplete" id="status">{} — no grade</div><div>Provisional<div class="figure" id="provisional">({})</div></div></div>"#,
            esc(&status.replace('_', " ")),
            esc(provisional.as_deref().unwrap_or("—"))
        )
    }
}

fn missing_list(missing: &[String]) -> String {
    if missing.is_empty() {
        return String::new();
    }
    let items: Vec<String> = missing.iter().map(|m| format!("<li>{}</li>", esc(m))).collect();
    format!(r#"<h2>What is missing ({})</h2><ul class="missing" id="missing">{}</ul>"#, missing.len(), items.join(""))
}

async fn institution_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> PageResult {
    let l = load(&state, &viewer, id, raw.as_deref()).await?;
    let instruments = state.instruments();
    let r = &l.season.instrument;
    let d = &l.doc;
    let all: Vec<InstrumentRef> = l.seasons.iter().map(|s| s.instrument.clone()).collect();
    let mut b = crumbs(&l, None, None, None);
    b.push_str(&format!(
        r#"<h1 data-institution="{}">{}</h1><p class="meta">{} · region {} · {}</p>{}"#,
        esc(&d.id),
        esc(&d.name),
        esc(&d.kind),
        esc(d.region.as_deref().unwrap_or("—")),
        esc(&instrument_title(&instruments, r)),
        season_nav(&instruments, &all, r, &format!("/dashboard/institutions/{}", seg(&d.id)))
    ));
    b.push_str(&outcome_line(&d.status, &d.score, &d.provisional, &d.grade, &d.zone));
    b.push_str(&format!(
        r#"<p>{}</p>"#,
        a(&format!("/dashboard/institutions/{}/rapor{}", seg(&d.id), season_q(r)), "Report card (rapor), printable")
    ));
    b.push_str(&missing_list(&d.missing));
    b.push_str("<h2>Units</h2>");
    b.push_str(r#"<table id="units"><thead><tr><th>Unit</th><th>Type</th><th class="num">Score</th><th>Grade</th><th>Zone</th><th>Status</th><th class="num">Products</th></tr></thead><tbody>"#);
    for u in &d.units {
        b.push_str(&format!(
            r#"<tr data-unit="{}"><td>{}</td><td>{}</td><td class="score">{}</td><td class="grade">{}</td>{}<td class="status">{}</td><td class="num">{}</td></tr>"#,
            esc(&u.id),
            a(&unit_href(&d.id, &u.id, r), &u.name),
            esc(&u.unit_type),
            esc(&score_text(u.score.as_deref(), u.provisional.as_deref())),
            esc(u.grade.as_deref().unwrap_or("")),
            zone_cell(u.zone.as_deref()),
            esc(&u.status.replace('_', " ")),
            u.products.len()
        ));
    }
    b.push_str("</tbody></table><h2>By dimension</h2>");
    b.push_str(&tree_table(&l, None, None, &d.dimensions, false));
    Ok(html(StatusCode::OK, page(&format!("Sidak — {}", d.name), Some(&viewer.top_bar()), &b)))
}

async fn rapor_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> PageResult {
    let asked = crate::reports_api::instrument_param(query_value(raw.as_deref(), "instrument").as_ref())?;
    let region = viewer.region().map(str::to_owned);
    let card = crate::reports_api::load_rapor(&state, region, id, asked).await?;
    let bar = viewer.top_bar();
    let body = rapor::html_body(&card, Links::Dashboard);
    Ok(html(StatusCode::OK, page(&format!("Rapor — {}", card.institution.name), Some(&bar), &body)))
}

/// Titles of dimensions, variables and indicators by id.
fn titles(instrument: &Instrument) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for d in &instrument.dimensions {
        out.insert(d.id.clone(), d.title.clone());
        for v in &d.variables {
            out.insert(v.id.clone(), v.title.clone());
            for i in &v.indicators {
                out.insert(i.id.clone(), i.title.clone());
            }
        }
    }
    out
}

/// A result tree as a table: dimension, variable and indicator rows; indicators link
/// to their page when `unit` is given (per product when `product` is).
fn tree_table(l: &Loaded, unit: Option<&str>, product: Option<&str>, nodes: &[doc::Node], answers: bool) -> String {
    let names = titles(&l.instrument);
    let mut out = String::from(
        r#"<table class="tree"><thead><tr><th>Dimension / variable / indicator</th><th class="num">Weight</th><th class="num">Score</th><th>Answer</th><th>Status</th></tr></thead><tbody>"#,
    );
    struct Tree<'a> {
        l: &'a Loaded,
        names: BTreeMap<String, String>,
        unit: Option<&'a str>,
        product: Option<&'a str>,
        answers: bool,
    }
    fn walk(t: &Tree<'_>, node: &doc::Node, depth: usize, out: &mut String) {
        let Tree { l, names, unit, product, answers } = t;
        let (l, unit, product, answers) = (*l, *unit, *product, *answers);
        let title = names.get(&node.id).cloned().unwrap_or_else(|| node.id.clone());
        let indicator = l.instrument.indicator(&node.id);
        let label = match (indicator, unit) {
            (Some(ind), Some(u)) => {
                // Product-level indicators of a unit are a mean over products: their
                // pages are per product.
                let on_product = ind.level == Level::Product;
                if on_product && product.is_none() {
                    esc(&title)
                } else {
                    a(
                        &indicator_href(&l.doc.id, u, product.filter(|_| on_product), &node.id, &l.season.instrument),
                        &title,
                    )
                }
            }
            _ => esc(&title),
        };
        let kind = if indicator.is_some() {
            "indicator"
        } else if depth == 0 {
            "dimension"
        } else {
            "variable"
        };
        let verdict = match (indicator, &node.score) {
            (Some(_), Some(s)) if node.status == "complete" => rapor::verdict(&l.instrument, s),
            _ => None,
        };
        let answer = if answers && indicator.is_some() {
            rapor::answer_cell(node.answer.as_ref(), node.field_value.as_ref(), node.respondents)
        } else {
            String::new()
        };
        out.push_str(&format!(
            r#"<tr class="{kind}" data-node="{id}"{verdict_attr}><td style="padding-left:{pad}px">{label} <span class="muted">{id}</span>{verdict}</td><td class="num">{weight}</td><td class="score">{score}</td><td class="answer">{answer}</td><td class="status">{status}</td></tr>"#,
            id = esc(&node.id),
            verdict_attr = verdict.map(|v| format!(r#" data-verdict="{v}""#)).unwrap_or_default(),
            pad = 8 + depth * 18,
            verdict = verdict.map(|v| format!(r#" <span class="verdict-{v}">{v}</span>"#)).unwrap_or_default(),
            weight = esc(&rapor::percent(&node.weight)),
            score = esc(&score_text(node.score.as_deref(), node.provisional.as_deref())),
            status = esc(&node.status.replace('_', " ")),
        ));
        for c in &node.children {
            walk(t, c, depth + 1, out);
        }
    }
    let tree = Tree { l, names, unit, product, answers };
    for n in nodes {
        walk(&tree, n, 0, &mut out);
    }
    out.push_str("</tbody></table>");
    out
}

fn find_unit<'a>(l: &'a Loaded, unit: &str) -> Result<&'a doc::Unit, ApiError> {
    l.doc
        .units
        .iter()
        .find(|u| u.id == unit)
        .ok_or_else(|| ApiError::not_found(format!("no unit `{unit}` in this result")))
}

fn find_product<'a>(u: &'a doc::Unit, product: &str) -> Result<&'a doc::Product, ApiError> {
    u.products
        .iter()
        .find(|p| p.id == product)
        .ok_or_else(|| ApiError::not_found(format!("no product `{product}` in this unit")))
}

fn visits_table(l: &Loaded, unit: &str, product: Option<&str>) -> String {
    let mut out = String::from(
        r#"<table id="visits"><thead><tr><th>Visit</th><th>Product</th><th>Assessor</th><th>Mode</th><th>Observed at</th><th>Finished</th><th class="num">Evidence</th></tr></thead><tbody>"#,
    );
    for v in l.work.of(Some(unit), product) {
        out.push_str(&format!(
            r#"<tr data-visit="{0}"><td><code>{0}</code></td><td>{1}</td><td>{2}</td><td>{3}</td><td>{4}</td><td>{5}</td><td class="num">{6}</td></tr>"#,
            esc(&v.id),
            esc(&v.product),
            esc(v.assessor.as_deref().unwrap_or("—")),
            esc(v.mode.as_deref().unwrap_or("—")),
            esc(v.location.as_deref().unwrap_or("—")),
            esc(&v.finished_at.map(time).unwrap_or_else(|| "—".into())),
            v.evidence.len()
        ));
    }
    out.push_str("</tbody></table>");
    out
}

async fn unit_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((id, unit)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> PageResult {
    let l = load(&state, &viewer, id, raw.as_deref()).await?;
    let u = find_unit(&l, &unit)?;
    let r = &l.season.instrument;
    let mut b = crumbs(&l, Some(u), None, None);
    b.push_str(&format!(
        r#"<h1 data-unit="{}">{}</h1><p class="meta">{} · unit type {} · roll-up weight {}</p>"#,
        esc(&u.id),
        esc(&u.name),
        esc(&l.doc.name),
        esc(&u.unit_type),
        esc(&u.weight)
    ));
    b.push_str(&outcome_line(&u.status, &u.score, &u.provisional, &u.grade, &u.zone));
    b.push_str(&missing_list(&u.missing));
    b.push_str(r#"<h2>Products</h2><table id="products"><thead><tr><th>Product</th><th>Observed at</th><th class="num">Score</th><th>Status</th></tr></thead><tbody>"#);
    for p in &u.products {
        b.push_str(&format!(
            r#"<tr data-product="{}"><td>{}</td><td>{}</td><td class="score">{}</td><td class="status">{}</td></tr>"#,
            esc(&p.id),
            a(&product_href(&l.doc.id, &u.id, &p.id, r), &p.name),
            esc(&p.location),
            esc(&score_text(p.score.as_deref(), p.provisional.as_deref())),
            esc(&p.status.replace('_', " "))
        ));
    }
    b.push_str("</tbody></table><h2>Indicators</h2>");
    b.push_str(r#"<p class="meta">Unit and institution indicators link to their page here; product indicators are a mean over the products — open a product for each one's answers.</p>"#);
    b.push_str(&tree_table(&l, Some(&u.id), None, &u.dimensions, true));
    b.push_str("<h2>Visits</h2>");
    b.push_str(&visits_table(&l, &u.id, None));
    Ok(html(StatusCode::OK, page(&format!("Sidak — {}", u.name), Some(&viewer.top_bar()), &b)))
}

async fn product_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((id, unit, product)): Path<(String, String, String)>,
    RawQuery(raw): RawQuery,
) -> PageResult {
    let l = load(&state, &viewer, id, raw.as_deref()).await?;
    let u = find_unit(&l, &unit)?;
    let p = find_product(u, &product)?;
    let mut b = crumbs(&l, Some(u), Some(p), None);
    b.push_str(&format!(
        r#"<h1 data-product="{}">{}</h1><p class="meta">{} · {} · observed at {}</p>"#,
        esc(&p.id),
        esc(&p.name),
        esc(&l.doc.name),
        esc(&u.name),
        esc(&p.location)
    ));
    b.push_str(&format!(
        r#"<p>Score <strong id="score">{}</strong> <span class="muted">(products are not graded)</span> · status <span class="status">{}</span></p>"#,
        esc(&score_text(p.score.as_deref(), p.provisional.as_deref())),
        esc(&p.status.replace('_', " "))
    ));
    b.push_str(&missing_list(&p.missing));
    b.push_str("<h2>Indicators</h2>");
    b.push_str(&tree_table(&l, Some(&u.id), Some(&p.id), &p.dimensions, true));
    b.push_str("<h2>Visits</h2>");
    b.push_str(&visits_table(&l, &u.id, Some(&p.id)));
    Ok(html(StatusCode::OK, page(&format!("Sidak — {}", p.name), Some(&viewer.top_bar()), &b)))
}

async fn unit_indicator_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((id, unit, indicator)): Path<(String, String, String)>,
    RawQuery(raw): RawQuery,
) -> PageResult {
    let l = load(&state, &viewer, id, raw.as_deref()).await?;
    indicator_page(&viewer, &l, &unit, None, &indicator)
}

async fn product_indicator_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((id, unit, product, indicator)): Path<(String, String, String, String)>,
    RawQuery(raw): RawQuery,
) -> PageResult {
    let l = load(&state, &viewer, id, raw.as_deref()).await?;
    indicator_page(&viewer, &l, &unit, Some(&product), &indicator)
}

fn indicator_page(viewer: &Viewer, l: &Loaded, unit: &str, product: Option<&str>, indicator: &str) -> PageResult {
    let u = find_unit(l, unit)?;
    let p = product.map(|p| find_product(u, p)).transpose()?;
    let ind = l
        .instrument
        .indicator(indicator)
        .ok_or_else(|| ApiError::not_found(format!("no indicator `{indicator}` in {}", l.season.instrument)))?;
    let nodes = match p {
        Some(p) => &p.dimensions,
        None => &u.dimensions,
    };
    let node = nodes
        .iter()
        .find_map(|n| n.find(indicator))
        .ok_or_else(|| ApiError::not_found(format!("indicator `{indicator}` has no figure here")))?;
    // Whose answers count: the product's visits for product indicators, the unit's for
    // unit ones, the institution's for institution ones.
    let (scope_unit, scope_product) = match ind.level {
        Level::Product => (Some(unit), product),
        Level::Unit => (Some(unit), None),
        Level::Institution => (None, None),
    };
    let mut b = crumbs(l, Some(u), p, Some(&ind.title));
    b.push_str(&format!(
        r#"<h1 data-indicator="{}">{}</h1><p class="meta"><code>{}</code> · level {} · source {} · dimension {}{}</p>"#,
        esc(&ind.id),
        esc(&ind.title),
        esc(&ind.id),
        esc(ind.level.name()),
        esc(ind.source.name()),
        esc(&rapor::dimension_of(&l.instrument, &ind.id).unwrap_or_default()),
        if ind.evidence_required { " · evidence required" } else { "" }
    ));
    let verdict =
        node.score.as_deref().filter(|_| node.status == "complete").and_then(|s| rapor::verdict(&l.instrument, s));
    b.push_str(&format!(
        r#"<p>Score <strong id="score">{}</strong> of {} · status <span class="status">{}</span>{} · answer {}</p>"#,
        esc(&score_text(node.score.as_deref(), node.provisional.as_deref())),
        esc(&l.instrument.scale.max.publish().to_string()),
        esc(&node.status.replace('_', " ")),
        verdict.map(|v| format!(r#" · <span id="verdict" class="verdict-{v}">{v}</span>"#)).unwrap_or_default(),
        rapor::answer_cell(node.answer.as_ref(), node.field_value.as_ref(), node.respondents)
    ));
    b.push_str(r#"<h2>Answers recorded</h2><table id="answers"><thead><tr><th>Visit</th><th>Product</th><th>Respondent</th><th>Recorded</th><th>Corrected (scored)</th><th>Finished</th></tr></thead><tbody>"#);
    for v in l.work.of(scope_unit, scope_product) {
        let mut line = |who: &str, recorded: Option<&Value>, corrected: Option<&Value>| {
            if recorded.is_none() && corrected.is_none() {
                return;
            }
            b.push_str(&format!(
                r#"<tr data-visit="{}"><td><code>{}</code></td><td>{}</td><td>{}</td><td class="field-value">{}</td><td class="corrected">{}</td><td>{}</td></tr>"#,
                esc(&v.id),
                esc(&v.id[..v.id.len().min(13)]),
                esc(&v.product),
                esc(who),
                esc(&recorded.map(rapor::answer_text).unwrap_or_else(|| "—".into())),
                esc(&corrected.map(rapor::answer_text).unwrap_or_default()),
                esc(&v.finished_at.map(time).unwrap_or_default())
            ));
        };
        line("", v.answers.get(indicator), v.corrected.get(indicator));
        for r in &v.respondents {
            line(&r.kind, r.answers.get(indicator), r.corrected.get(indicator));
        }
    }
    b.push_str("</tbody></table><h2>Evidence</h2>");
    let evidence: Vec<EvidenceItem> = l.work.evidence_for(scope_unit, scope_product, indicator);
    b.push_str(&format!(r#"<div id="evidence">{}</div>"#, rapor::evidence_list(&evidence, Links::Dashboard)));
    let notes = l.work.notes_for(scope_unit, scope_product, indicator);
    if !notes.is_empty() {
        b.push_str(r#"<h2>Notes</h2><ul class="notes" id="notes">"#);
        for n in notes {
            b.push_str(&format!(
                r#"<li class="note">{} <span class="muted">{}</span></li>"#,
                esc(&n.text),
                esc(&n.created_at.map(time).unwrap_or_default())
            ));
        }
        b.push_str("</ul>");
    }
    Ok(html(StatusCode::OK, page(&format!("Sidak — {}", ind.title), Some(&viewer.top_bar()), &b)))
}

// ---------------------------------------------------------------------------------
// Evidence

/// One record citing a file, with where it sits.
struct Citation {
    region: Option<String>,
    visit: Option<String>,
    indicator: Option<String>,
    media_type: Option<String>,
    size: Option<u64>,
    captured_at: Option<i64>,
    institution: Option<String>,
    unit: Option<String>,
    product: Option<String>,
}

fn citations(tx: &Transaction<'_>, sha: &str) -> Result<Vec<Citation>, ApiError> {
    let mut stmt = tx.prepare_cached(
        "SELECT f.entity, e.region FROM fields f LEFT JOIN entities e ON e.entity = f.entity
         WHERE f.kind = 'evidence' AND f.field = 'sha256' AND f.value = json_quote(?1) AND f.field NOT GLOB 'answer.*'
         ORDER BY f.entity",
    )?;
    let ids: Vec<(String, Option<String>)> =
        stmt.query_map([sha], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
    drop(stmt);
    let code = |tx: &Transaction<'_>, id: Option<&str>| -> Result<Option<String>, ApiError> {
        Ok(match id {
            Some(id) => crate::ledger::field(tx, id, "code")?.and_then(|v| v.as_str().map(str::to_owned)),
            None => None,
        })
    };
    let mut out = Vec::new();
    for (id, region) in ids {
        let f = results::fields_of(tx, &id)?;
        let s = |k: &str| f.get(k).and_then(Value::as_str).map(str::to_owned);
        let visit = s("visit");
        let vf = match &visit {
            Some(v) => results::fields_of(tx, v)?,
            None => BTreeMap::new(),
        };
        let vs = |k: &str| vf.get(k).and_then(Value::as_str).map(str::to_owned);
        out.push(Citation {
            region,
            indicator: s("indicator"),
            media_type: s("media_type"),
            size: f.get("size").and_then(Value::as_u64),
            captured_at: f.get("captured_at").and_then(Value::as_i64),
            institution: code(tx, vs("institution").as_deref())?,
            unit: code(tx, vs("unit").as_deref())?,
            product: code(tx, vs("product").as_deref())?,
            visit,
        });
    }
    Ok(out)
}

/// The file's media type and whether it is complete, if known.
fn blob(tx: &Transaction<'_>, sha: &str) -> Result<Option<(String, bool)>, ApiError> {
    Ok(tx
        .query_row("SELECT media_type, complete FROM blobs WHERE sha256 = ?1", [sha], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? == 1))
        })
        .optional()?)
}

fn sha_param(sha: &str) -> Result<String, ApiError> {
    sha.parse::<sidak_core::hash::Sha256Digest>()
        .ok()
        .filter(|d| d.to_hex() == sha)
        .map(|d| d.to_hex())
        .ok_or_else(|| ApiError::not_found("an evidence address is 64 lowercase hex digits"))
}

/// Citations of `sha` in the viewer's scope: 404 when none exists here, 403 when none
/// is in scope.
async fn cited(
    state: &AppState,
    viewer: &Viewer,
    sha: String,
) -> Result<(Vec<Citation>, Option<(String, bool)>), ApiError> {
    let (all, file) = state.db().read(move |tx| Ok::<_, ApiError>((citations(tx, &sha)?, blob(tx, &sha)?))).await?;
    if all.is_empty() {
        return Err(ApiError::not_found("no evidence record here cites that file"));
    }
    let mine: Vec<Citation> = all.into_iter().filter(|c| viewer.check(c.region.as_deref(), "").is_ok()).collect();
    if mine.is_empty() {
        return Err(ApiError::scope_forbidden("no record in this token's scope cites that file"));
    }
    Ok((mine, file))
}

async fn evidence_page(State(state): State<AppState>, viewer: Viewer, Path(sha): Path<String>) -> PageResult {
    let sha = sha_param(&sha)?;
    let (cites, file) = cited(&state, &viewer, sha.clone()).await?;
    let media = file.as_ref().map(|f| f.0.clone()).or_else(|| cites.iter().find_map(|c| c.media_type.clone()));
    let complete = file.as_ref().is_some_and(|f| f.1);
    let file_href = format!("/dashboard/evidence/{}/file", seg(&sha));
    let mut b = format!(
        r#"<nav class="crumbs">{}</nav><h1>Evidence</h1><p class="meta"><code id="sha256">{}</code></p>"#,
        a("/dashboard", "Results"),
        esc(&sha)
    );
    b.push_str(&format!(
        r#"<p>Media type <span id="media-type">{}</span> · {}</p>"#,
        esc(media.as_deref().unwrap_or("unknown")),
        if complete {
            format!(r#"<a id="file" href="{}">open the file</a>"#, esc(&file_href))
        } else {
            r#"<span id="file" class="muted">the file has not been received here in full yet</span>"#.to_owned()
        }
    ));
    if complete && media.as_deref().is_some_and(|m| m.starts_with("image/")) {
        b.push_str(&format!(
            r#"<p><img class="full" src="{}" alt="evidence {}"></p>"#,
            esc(&file_href),
            esc(&sha[..12])
        ));
    }
    b.push_str(r#"<h2>Cited by</h2><table id="citations"><thead><tr><th>Institution</th><th>Unit</th><th>Product</th><th>Indicator</th><th>Visit</th><th class="num">Size</th><th>Captured</th></tr></thead><tbody>"#);
    for c in &cites {
        let inst = c.institution.clone().unwrap_or_default();
        let unit = c.unit.clone().unwrap_or_default();
        let product = c.product.clone().unwrap_or_default();
        let link = |href: String, text: &str| if text.is_empty() { "—".to_owned() } else { a(&href, text) };
        b.push_str(&format!(
            r#"<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td class="num">{}</td><td>{}</td></tr>"#,
            link(format!("/dashboard/institutions/{}", seg(&inst)), &inst),
            link(format!("/dashboard/institutions/{}/units/{}", seg(&inst), seg(&unit)), &unit),
            link(format!("/dashboard/institutions/{}/units/{}/products/{}", seg(&inst), seg(&unit), seg(&product)), &product),
            esc(c.indicator.as_deref().unwrap_or("—")),
            esc(c.visit.as_deref().unwrap_or("—")),
            c.size.map(|s| s.to_string()).unwrap_or_default(),
            esc(&c.captured_at.map(time).unwrap_or_default())
        ));
    }
    b.push_str("</tbody></table>");
    Ok(html(StatusCode::OK, page("Sidak — evidence", Some(&viewer.top_bar()), &b)))
}

async fn evidence_file(State(state): State<AppState>, viewer: Viewer, Path(sha): Path<String>) -> PageResult {
    let sha = sha_param(&sha)?;
    let (_, file) = cited(&state, &viewer, sha.clone()).await?;
    let Some((media, true)) = file else {
        return Err(ApiError::not_found("the file has not been received here in full").into());
    };
    let bytes = tokio::fs::read(state.blob_path(&sha)).await.map_err(ApiError::internal)?;
    let image = media.starts_with("image/");
    let mut response = (StatusCode::OK, bytes).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&media).unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    // A file a device uploaded is shown, never run: no scripts in it, and anything but
    // an image is downloaded rather than opened.
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox; default-src 'none'; img-src 'self'"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=3600"));
    if !image {
        h.insert(header::CONTENT_DISPOSITION, HeaderValue::from_static("attachment"));
    }
    Ok(response)
}

// ---------------------------------------------------------------------------------
// Sync health

async fn sync(State(state): State<AppState>, viewer: Viewer, RawQuery(raw): RawQuery) -> PageResult {
    let region = viewer.listing(query_value(raw.as_deref(), "region").as_deref())?;
    let shown = region.clone();
    let health = state.db().read(move |tx| synchealth::sync_health(tx, shown.as_deref())).await?;
    let when = |t: Option<i64>| t.map(time).unwrap_or_else(|| "never".into());
    let mut b = format!(
        r#"<h1>Sync health{}</h1><p class="meta">Last sync is the device's last push to this server. "Unsent reported" is what the device said it still had to send when it last reported (at the start and end of each sync); a sync that broke off leaves its backlog here. Now: {}.</p>"#,
        esc(&region.as_deref().map(|r| format!(" — region {r}")).unwrap_or_default()),
        esc(&time(state.now()))
    );
    b.push_str(r#"<h2>Regions</h2><table id="sync-regions"><thead><tr><th>Region</th><th class="num">Devices</th><th>Last sync</th><th class="num">Devices with unsent</th><th class="num">Unsent ops</th><th class="num">Unsent files</th><th class="num">Quarantined</th><th class="num">Open conflicts</th><th class="num">Clocks flagged</th></tr></thead><tbody>"#);
    for r in &health.regions {
        b.push_str(&format!(
            r#"<tr data-region="{0}"><td>{1}</td><td class="num devices">{2}</td><td class="last-sync">{3}</td><td class="num unsent-devices">{4}</td><td class="num">{5}</td><td class="num">{6}</td><td class="num quarantined">{7}</td><td class="num conflicts">{8}</td><td class="num clocks">{9}</td></tr>"#,
            esc(&r.region),
            a(&format!("/dashboard/sync?region={}", seg(&r.region)), &r.region),
            r.devices,
            esc(&when(r.last_push_at)),
            r.devices_with_unsent,
            r.pending_ops,
            r.pending_files,
            r.quarantined,
            r.conflicts,
            r.clocks_flagged
        ));
    }
    b.push_str("</tbody></table>");
    b.push_str(r#"<h2>Devices</h2><table id="sync-devices"><thead><tr><th>Assessor</th><th>Device</th><th>Region</th><th>Last sync</th><th class="num">Ops held</th><th>Unsent reported</th><th class="num">Quarantined</th><th class="num">Conflicts</th><th>Clock</th></tr></thead><tbody>"#);
    for d in &health.devices {
        let unsent = match (d.pending_ops, d.pending_files) {
            (None, None) => "not reported".to_owned(),
            (o, f) => format!(
                "{} ops, {} files (reported {})",
                o.unwrap_or(0),
                f.unwrap_or(0),
                d.pending_at.map(time).unwrap_or_else(|| "—".into())
            ),
        };
        b.push_str(&format!(
            r#"<tr data-origin="{0}" data-assessor="{1}"{2}><td>{1}</td><td>{3} <code>{4}</code></td><td>{5}</td><td class="last-sync">{6}</td><td class="num">{7}</td><td class="unsent">{8}</td><td class="num quarantined">{9}</td><td class="num conflicts">{10}</td><td class="clock">{11}</td></tr>"#,
            esc(&d.origin),
            esc(d.assessor.as_deref().unwrap_or("")),
            if d.has_unsent() { r#" data-unsent="true""# } else { "" },
            esc(d.label.as_deref().unwrap_or("")),
            esc(&d.origin[..d.origin.len().min(8)]),
            esc(d.region.as_deref().unwrap_or("")),
            esc(&when(d.last_push_at)),
            d.held_seq,
            esc(&unsent),
            d.quarantined,
            d.conflicts,
            if d.clock_flagged { r#"<span class="verdict-failed">flagged: fix the date and time</span>"# } else { "ok" }
        ));
    }
    if health.devices.is_empty() {
        b.push_str(r#"<tr><td colspan="9" class="muted">No device has synced here yet.</td></tr>"#);
    }
    b.push_str("</tbody></table>");
    Ok(html(StatusCode::OK, page("Sidak — sync health", Some(&viewer.top_bar()), &b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dashboard_addresses_are_followed_after_login() {
        for (next, expected) in [
            (Some("/dashboard/rankings?instrument=x%401"), "/dashboard/rankings?instrument=x%401"),
            (Some("/dashboard"), "/dashboard"),
            (Some("https://evil.example/"), "/dashboard"),
            (Some("//evil.example/dashboard"), "/dashboard"),
            (Some("/dashboard//evil.example"), "/dashboard"),
            (Some("/dashboardx"), "/dashboard"),
            (Some("/v1/whoami"), "/dashboard"),
            (None, "/dashboard"),
        ] {
            assert_eq!(safe_next(next), expected, "{next:?}");
        }
    }

    #[test]
    fn the_token_is_dropped_from_the_query() {
        assert_eq!(without_token(Some("token=abc&instrument=x%401")), "instrument=x%401");
        assert_eq!(without_token(Some("a=1&token=abc")), "a=1");
        assert_eq!(without_token(None), "");
    }

    #[test]
    fn rankings_share_ranks_on_equal_scores_and_leave_incomplete_results_unranked() {
        let rows: Vec<(&str, Option<&str>)> =
            vec![("a", Some("80.00")), ("b", None), ("c", Some("91.50")), ("d", Some("80.00")), ("e", Some("79.99"))];
        let refs: Vec<&(&str, Option<&str>)> = rows.iter().collect();
        let got: Vec<(Option<usize>, &str)> =
            ranking(&refs, |r| r.1.and_then(|s| s.parse().ok()), |r| r.0).into_iter().map(|(n, r)| (n, r.0)).collect();
        assert_eq!(got, vec![(Some(1), "c"), (Some(2), "a"), (Some(2), "d"), (Some(4), "e"), (None, "b")]);
    }
}
