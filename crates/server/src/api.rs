//! The HTTP API: the router, the extractors that turn bad requests into the spec's
//! error codes, and the middleware (protocol version, compression, tracing).
//! Every route is registered through [`Routes::add`], so the list the OpenAPI test
//! compares against is the router itself.

use std::future::Future;

use axum::body::Body;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, Extensions, HeaderMap, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use axum::Router;
use serde::de::DeserializeOwned;
use sidak_core::wire::{limits, PROTOCOL_HEADER, PROTOCOL_VERSION};
use tower_http::compression::CompressionLayer;
use tower_http::decompression::RequestDecompressionLayer;
use tower_http::trace::TraceLayer;

use crate::auth::{check_token, touch_token, Principal, TokenCheck};
use crate::error::ApiError;
use crate::lockout::Source;
use crate::state::AppState;
use crate::{admin_api, dashboard, reports_api, results_api, review_api, sync_api};

/// The router being built, and every (method, path) added to it.
pub struct Routes {
    router: Router<AppState>,
    list: Vec<(Method, &'static str)>,
}

impl Routes {
    fn new() -> Routes {
        Routes { router: Router::new(), list: Vec::new() }
    }

    /// Adds one method on one path.
    pub fn add(mut self, method: Method, path: &'static str, handler: MethodRouter<AppState>) -> Routes {
        self.list.push((method, path));
        self.router = self.router.route(path, handler);
        self
    }
}

/// Builds the application: the router with its layers, and its route list.
pub fn app(state: AppState) -> (Router, Vec<(Method, &'static str)>) {
    let routes = sync_api::routes(Routes::new());
    let routes = results_api::routes(routes);
    let routes = admin_api::routes(routes);
    let routes = review_api::routes(routes);
    let routes = reports_api::routes(routes);
    let routes = dashboard::routes(routes);
    let list = routes.list;
    let router = routes
        .router
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(RequestDecompressionLayer::new().gzip(true).pass_through_unaccepted(true))
        .layer(CompressionLayer::new().gzip(true).quality(tower_http::CompressionLevel::Fastest))
        .layer(middleware::from_fn(protocol))
        .layer(TraceLayer::new_for_http())
        .with_state(state);
    (router, list)
}

async fn no_route(request: Request) -> ApiError {
    ApiError::not_found(format!("no endpoint {} {}", request.method(), request.uri().path()))
}

async fn wrong_method(request: Request) -> ApiError {
    ApiError::method_not_allowed(format!("{} is not allowed on {}", request.method(), request.uri().path()))
}

/// Refuses other protocol versions: a `Sidak-Protocol` header other than 1, or a path
/// under another version prefix.
async fn protocol(request: Request, next: Next) -> Response {
    if let Some(v) = request.headers().get(PROTOCOL_HEADER) {
        if v.to_str().ok().map(str::trim) != Some(&PROTOCOL_VERSION.to_string()) {
            return ApiError::unsupported_protocol(format!(
                "this server speaks protocol {PROTOCOL_VERSION}; the request asked for {}",
                String::from_utf8_lossy(v.as_bytes())
            ))
            .into_response();
        }
    }
    let path = request.uri().path();
    if let Some(version) = path.strip_prefix("/v").and_then(|rest| rest.split('/').next()) {
        if version.parse::<u32>().is_ok_and(|n| n != PROTOCOL_VERSION) {
            return ApiError::unsupported_protocol(format!(
                "this server speaks /v{PROTOCOL_VERSION}; /v{version} is not supported"
            ))
            .into_response();
        }
    }
    next.run(request).await
}

/// The authenticated caller.
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> impl Future<Output = Result<Caller, ApiError>> + Send {
        let secret = bearer(&parts.headers);
        let source = source_of(&parts.extensions);
        let state = state.clone();
        async move {
            check_source(&state, source)?;
            authenticate(&state, source, secret?).await.map(Caller)
        }
    }
}

/// Where a request came from: the connection's peer address, or `None` without a
/// connection (the router called directly, as in tests): one shared "unknown" source.
pub fn source_of(extensions: &Extensions) -> Source {
    extensions.get::<ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip())
}

/// Refuses with `429 too_many_failures` (and `Retry-After`) a source locked out for
/// presenting too many unknown tokens ([`crate::lockout`]).
pub fn check_source(state: &AppState, source: Source) -> Result<(), ApiError> {
    state.lockout().check(source, state.now()).map_err(|seconds| {
        ApiError::too_many_failures(
            format!(
                "too many unknown tokens came from this address; every request from it that needs a token is refused for {seconds} s"
            ),
            seconds,
        )
    })
}

/// Authenticates `secret` presented from `source`: a token in force is the caller
/// (its use recorded at most once a minute); a revoked, expired or unknown one is
/// `401 unauthorized` saying which. Only unknown secrets count against the source —
/// they are what guessing produces; a revoked device retrying must not lock its
/// office's address out.
pub async fn authenticate(state: &AppState, source: Source, secret: String) -> Result<Principal, ApiError> {
    check_source(state, source)?;
    let now = state.now();
    let check = state.db().read(move |tx| check_token(tx, &secret, now).map_err(ApiError::from)).await?;
    settle(state, source, check, now).await
}

/// What a token check means for the request: a token in force is the caller (its use
/// recorded at most once a minute); anything else is `401 unauthorized`, an unknown
/// secret counting against its source.
async fn settle(state: &AppState, source: Source, check: TokenCheck, now: i64) -> Result<Principal, ApiError> {
    match check {
        TokenCheck::Valid { principal, last_used_at } => {
            if state.claim_touch(&principal.token_id, last_used_at, now) {
                let id = principal.token_id.clone();
                let touched = state.db().write(move |tx| touch_token(tx, &id, now).map_err(ApiError::from)).await;
                if let Err(e) = touched {
                    tracing::warn!(error = %e, "could not record when a token was last used");
                }
            }
            Ok(principal)
        }
        refused => {
            if refused == TokenCheck::Unknown {
                state.lockout().fail(source, now);
            }
            Err(ApiError::unauthorized(refused.refusal().unwrap_or_default()))
        }
    }
}

/// A caller's bearer token, presented but not yet checked: for a handler that checks
/// it inside its own read transaction ([`Presented::check`]) rather than in one of its
/// own before the handler runs, as [`Caller`] does. The pull, which every device and
/// peer calls page after page, saves a store task and a transaction per request.
/// The outcome is the same as [`Caller`]'s, and so is its order: a locked-out source
/// is refused before anything is read, and the token's verdict comes before any
/// error of the handler's own ([`Presented::settle`] first).
#[derive(Clone)]
pub struct Presented {
    source: Source,
    secret: String,
    now: i64,
}

impl FromRequestParts<AppState> for Presented {
    type Rejection = ApiError;

    fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> impl Future<Output = Result<Presented, ApiError>> + Send {
        let source = source_of(&parts.extensions);
        let secret = bearer(&parts.headers);
        let now = state.now();
        let checked = check_source(state, source);
        async move {
            checked?;
            Ok(Presented { source, secret: secret?, now })
        }
    }
}

impl Presented {
    /// Checks the token in the handler's transaction.
    pub fn check(&self, tx: &rusqlite::Transaction<'_>) -> Result<TokenCheck, ApiError> {
        Ok(check_token(tx, &self.secret, self.now)?)
    }

    /// The caller, once [`Presented::check`] has found the token in force (or the
    /// refusal, recorded as [`authenticate`] records it).
    pub async fn settle(&self, state: &AppState, check: TokenCheck) -> Result<Principal, ApiError> {
        settle(state, self.source, check, self.now).await
    }
}

fn bearer(headers: &HeaderMap) -> Result<String, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("send `Authorization: Bearer <token>`"))?;
    let text = value.to_str().map_err(|_| ApiError::unauthorized("the Authorization header is not text"))?;
    match text.strip_prefix("Bearer ") {
        Some(t) if !t.trim().is_empty() && t.len() < 200 => Ok(t.trim().to_owned()),
        _ => Err(ApiError::unauthorized("send `Authorization: Bearer <token>`")),
    }
}

/// Reads a request body: checks its encoding and size (after decompression).
async fn body_bytes(request: Request, limit: usize, media: &str) -> Result<axum::body::Bytes, ApiError> {
    let headers = request.headers();
    if let Some(enc) = headers.get(header::CONTENT_ENCODING) {
        let enc = enc.to_str().unwrap_or("").trim().to_ascii_lowercase();
        if enc != "identity" && !enc.is_empty() {
            return Err(ApiError::unsupported_media_type(format!(
                "content encoding `{enc}` is not supported (gzip is)"
            )));
        }
    }
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if essence != media {
        return Err(ApiError::unsupported_media_type(format!("send Content-Type: {media} (got `{content_type}`)")));
    }
    axum::body::to_bytes(request.into_body(), limit).await.map_err(|e| {
        let text = e.to_string();
        if text.contains("length limit")
            || std::error::Error::source(&e).is_some_and(|s| s.to_string().contains("length limit"))
        {
            ApiError::body_too_large(format!("the body is larger than {limit} bytes"))
        } else {
            ApiError::malformed_json(format!("the body could not be read: {text}"))
        }
    })
}

/// A JSON body: 415 for another type or coding, 413 past the limit, 400 for text that
/// is not JSON, 422 for JSON of the wrong shape.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, _: &AppState) -> Result<JsonBody<T>, ApiError> {
        let bytes = body_bytes(request, limits::MAX_BODY_BYTES, "application/json").await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Reads a JSON body inside a handler (after its role check, as the spec orders).
pub async fn json_body<T: DeserializeOwned>(request: Request) -> Result<T, ApiError> {
    let bytes = body_bytes(request, limits::MAX_BODY_BYTES, "application/json").await?;
    parse_json(&bytes)
}

/// Parses JSON with the spec's distinction between malformed (400) and misshapen (422).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::invalid_body(e.to_string()),
        _ => ApiError::malformed_json(e.to_string()),
    })
}

/// A raw body of a given media type and limit (evidence chunks, CSV).
pub async fn raw_body(request: Request, limit: usize, media: &str) -> Result<axum::body::Bytes, ApiError> {
    body_bytes(request, limit, media).await
}

/// Runs the server on `listener` until `shutdown` completes; in-flight requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_on(listener, state, shutdown).await
}

/// [`serve`] on any listener (a TLS one: [`crate::tls::TlsListener`]).
pub async fn serve_on<L>(
    listener: L,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener<Addr = std::net::SocketAddr>,
{
    let (router, _) = app(state.clone());
    let on_shutdown = state.clone();
    // Each request carries its peer's address (`ConnectInfo`) for the failed-auth
    // brake; `tap_io` only makes that available on any listener, plain or TLS.
    let listener = axum::serve::ListenerExt::tap_io(listener, |_| {});
    axum::serve(listener, router.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(async move {
            shutdown.await;
            on_shutdown.begin_shutdown();
            tracing::info!("shutting down: finishing requests in flight");
        })
        .await
}

/// A helper for handlers: the state as an extractor.
pub type St = State<AppState>;

/// A body built from bytes with a content type.
pub fn bytes_response(media: &str, bytes: Vec<u8>) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, media)
        .body(Body::from(bytes))
        .unwrap_or_else(|e| ApiError::internal(e).into_response())
}
