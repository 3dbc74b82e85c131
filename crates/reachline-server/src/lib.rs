//! The server: the REST API under `/v1` (its OpenAPI document generated from the handlers at
//! `/v1/openapi.json`, Swagger UI at `/docs`), provider webhooks, API tokens and the role
//! matrix, `/metrics`, `/healthz` and `/readyz`.
//!
//! Every `/v1` route asks [`Server::authorize`] for the permission the matrix in [`auth`] names
//! for it before it touches anything; the route-by-role test walks the OpenAPI document, so a
//! route cannot be added without being probed with every role. Webhooks authenticate by
//! per-provider HMAC instead, and a signature is accepted once.
//!
//! Errors are JSON ([`error::ErrorBody`]) with a stable code, the field at fault and the
//! request id; nothing personal is logged: requests are logged by route template, never by
//! path (a path may hold an external id), and bodies are never logged.

pub mod api;
pub mod auth;
pub mod borrower;
pub mod change;
pub mod charts;
pub mod dashboard;
pub mod error;
pub mod export;
pub mod fineract;
pub mod identity;
pub mod metrics;
pub mod privacy;
pub mod queue;
pub mod review;
pub mod tls;
pub mod webhooks;

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use chrono::{DateTime, Utc};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use reachline_engine::Engine;
use reachline_store::ledger::LedgerStore;
use reachline_store::Stores;
use serde::{Deserialize, Serialize};

use crate::auth::{allows, Permission, Principal, TokenVerifier};
use crate::error::{ApiError, ErrorBody};

pub use webhooks::{WebhookConfig, WebhookKind};

/// A clock: the real one in production, a test's own in tests.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// `[server]` in the configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address and port `reachline serve` listens on.
    pub listen: String,
    /// Largest request body accepted, in bytes (a larger one is refused with 413).
    pub max_body_bytes: usize,
    /// Requests per second one token may make (bursts up to twice this).
    pub token_rate_per_second: u32,
    /// Requests per second one client address may make, authenticated or not.
    pub ip_rate_per_second: u32,
    /// How long a token that verified is trusted before the store is asked again.
    pub token_cache_seconds: u64,
    /// Mark cookies `Secure` behind a TLS proxy (they always are when `tls_cert` is set).
    pub secure_cookies: bool,
    /// Serve HTTPS with this certificate chain (PEM) and `tls_key` (PEM).
    pub tls_cert: Option<std::path::PathBuf>,
    pub tls_key: Option<std::path::PathBuf>,
    /// When set, `/metrics` answers only a scraper that sends `Authorization: Bearer <this>`
    /// (401 otherwise); unset, it is open, for a listener only the monitoring network reaches.
    pub metrics_token: Option<String>,
    /// Inbound webhooks, one per provider.
    pub webhooks: Vec<WebhookConfig>,
    /// The borrower's pages and the number-change flow.
    pub self_service: SelfServiceConfig,
}

/// `[server.self_service]`: the number-change rules and the one-time code limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SelfServiceConfig {
    pub change: reachline_policy::change::ChangeRules,
    pub codes: reachline_policy::codes::CodeRules,
    /// The identity-check provider that may authorise a number change: `none`, or `sandbox`
    /// (the built-in stand-in, for trials only: it confirms every number).
    pub identity: String,
}

impl Default for SelfServiceConfig {
    fn default() -> Self {
        SelfServiceConfig {
            change: Default::default(),
            codes: Default::default(),
            identity: "none".into(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 1 << 20,
            token_rate_per_second: 200,
            ip_rate_per_second: 2000,
            token_cache_seconds: 60,
            secure_cookies: false,
            tls_cert: None,
            tls_key: None,
            metrics_token: None,
            webhooks: Vec::new(),
            self_service: SelfServiceConfig::default(),
        }
    }
}

/// The id of one request, from the caller's `x-request-id` when it is a sane token, else made
/// here; every response and every error body carries it.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Everything a request may need.
pub struct Server {
    pub stores: Stores,
    pub engine: Arc<Engine>,
    pub ledger: Option<Arc<dyn LedgerStore>>,
    pub config: ServerConfig,
    pub clock: Clock,
    pub book_defaults: reachline_book::parse::BookDefaults,
    pub phones: reachline_domain::PhoneParser,
    pub metrics: metrics::Metrics,
    pub(crate) verifier: TokenVerifier,
    token_limiter: DefaultKeyedRateLimiter<String>,
    ip_limiter: DefaultKeyedRateLimiter<IpAddr>,
    pub(crate) receipts: webhooks::ReceiptBatcher,
    pub(crate) replies: reachline_policy::reply::ReplyClassifier,
    /// The ledger's public key, for the dashboard's "verify a notice".
    pub(crate) ledger_key: std::sync::OnceLock<reachline_ledger::note::VerifierKey>,
    /// SIM-swap and port checks of a new number (none: not checked).
    pub intel: std::sync::OnceLock<Arc<dyn reachline_intel::NumberIntel>>,
    /// Identity checks that may authorise a number change (none: not offered).
    pub identity: std::sync::OnceLock<Arc<dyn identity::IdentityCheck>>,
    /// Starts of the borrower's flows per client address (codes cost money and invite abuse).
    pub(crate) borrower_ip_limiter: DefaultKeyedRateLimiter<IpAddr>,
    /// Retention rules and the backup directory, for erasure (defaults: the legal floors, no
    /// backups).
    pub privacy: std::sync::OnceLock<privacy::PrivacySettings>,
}

pub type AppState = Arc<Server>;

fn quota(per_second: u32) -> Quota {
    let rate = NonZeroU32::new(per_second.max(1)).expect("at least 1");
    Quota::per_second(rate).allow_burst(rate.saturating_mul(NonZeroU32::new(2).expect("2")))
}

impl Server {
    /// A server over opened stores and an engine (whose receipt intake records webhook
    /// receipts and writes their ledger leaves).
    pub fn new(
        stores: Stores,
        engine: Arc<Engine>,
        ledger: Option<Arc<dyn LedgerStore>>,
        config: ServerConfig,
        clock: Clock,
        book_defaults: reachline_book::parse::BookDefaults,
        phones: reachline_domain::PhoneParser,
    ) -> Arc<Server> {
        let metrics = metrics::Metrics::default();
        let _ = engine.counters.observer.set(Arc::new(metrics.clone()));
        let receipts = webhooks::ReceiptBatcher::start(engine.clone(), clock.clone());
        Arc::new(Server {
            verifier: TokenVerifier::new(Duration::from_secs(config.token_cache_seconds)),
            token_limiter: RateLimiter::keyed(quota(config.token_rate_per_second)),
            ip_limiter: RateLimiter::keyed(quota(config.ip_rate_per_second)),
            replies: reachline_policy::reply::ReplyClassifier::new(phones.clone()),
            stores,
            engine,
            ledger,
            config,
            clock,
            book_defaults,
            phones,
            metrics,
            receipts,
            ledger_key: std::sync::OnceLock::new(),
            intel: std::sync::OnceLock::new(),
            identity: std::sync::OnceLock::new(),
            borrower_ip_limiter: RateLimiter::keyed(Quota::per_minute(NonZeroU32::new(10).expect("10"))),
            privacy: std::sync::OnceLock::new(),
        })
    }

    /// The ledger's public key, which "verify a notice" checks bundles with.
    pub fn set_ledger_key(&self, key: reachline_ledger::note::VerifierKey) {
        let _ = self.ledger_key.set(key);
    }

    pub fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    /// The caller's bearer token, checked, rate-limited, and allowed `permission` — or the
    /// refusal: 401 without a valid token, 429 over the token's rate, 403 when the role may not.
    pub async fn authorize(&self, headers: &HeaderMap, permission: Permission) -> Result<Principal, ApiError> {
        let token = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or_else(|| ApiError::unauthorized(auth::AuthError::Missing.to_string()))?;
        let principal = self
            .verifier
            .verify(self.stores.server.as_ref(), token)
            .await
            .map_err(|e| match e {
                auth::AuthError::Store(e) => ApiError::from(e),
                e => ApiError::unauthorized(e.to_string()),
            })?;
        if self.token_limiter.check_key(&principal.actor).is_err() {
            return Err(too_many());
        }
        if !allows(principal.role, permission) {
            return Err(ApiError::not_allowed(principal.role, permission));
        }
        Ok(principal)
    }
}

fn too_many() -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_requests",
        "too many requests; slow down and retry",
    )
}

/// The whole application: `/v1` (API and webhooks), `/v1/openapi.json`, `/docs`, `/metrics`,
/// `/healthz`, `/readyz`.
pub fn router(state: AppState) -> Router {
    let (api, doc) = api::routes().split_for_parts();
    let body_limit = state.config.max_body_bytes;
    let api = api.route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        api::check_permission,
    ));
    Router::new()
        .merge(api)
        .merge(webhooks::routes())
        .merge(dashboard::routes())
        .merge(queue::routes())
        .merge(borrower::routes())
        // Swagger UI (vendored: no CDN) at /docs, reading the document it serves at /v1/openapi.json.
        .merge(utoipa_swagger_ui::SwaggerUi::new("/docs").url("/v1/openapi.json", doc))
        .route("/metrics", axum::routing::get(metrics::render))
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route("/readyz", axum::routing::get(readyz))
        .fallback(|| async { ApiError::not_found("route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), around))
        .with_state(state)
}

/// The OpenAPI document, as served at `/v1/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api::routes().split_for_parts().1
}

/// Ready when the database answers.
async fn readyz(State(s): State<AppState>) -> Response {
    match s.stores.store.counts().await {
        Ok(_) => (StatusCode::OK, "ready").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready: the database does not answer");
            (StatusCode::SERVICE_UNAVAILABLE, "the database does not answer").into_response()
        }
    }
}

/// This process's request ids: a random prefix drawn once, then a counter (a syscall for
/// entropy on every request would cost more than the id is worth).
fn next_request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static PREFIX: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        use rand::RngCore;
        rand::rngs::OsRng.next_u32()
    });
    format!("{prefix:08x}{:08x}", COUNTER.fetch_add(1, Ordering::Relaxed) as u32)
}

fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| (1..=64).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)))
        .map(str::to_string)
        .unwrap_or_else(next_request_id)
}

/// Around every request: its id, the per-address rate limit, metrics and a log line by route
/// template, and error bodies written with the id.
async fn around(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let id = request_id(req.headers());
    req.extensions_mut().insert(RequestId(id.clone()));
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().clone();
    let ip = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let started = Instant::now();
    let mut resp = match ip {
        Some(ip) if s.ip_limiter.check_key(&ip).is_err() => too_many().into_response(),
        _ => next.run(req).await,
    };
    if let Some(err) = resp.extensions_mut().remove::<ApiError>() {
        let body = ErrorBody {
            code: err.code.to_string(),
            message: err.message,
            field: err.field,
            request_id: id.clone(),
        };
        let status = resp.status();
        resp = (status, axum::Json(body)).into_response();
    }
    let status = resp.status().as_u16();
    let elapsed = started.elapsed();
    s.metrics.request(&route, status, elapsed);
    if status >= 500 {
        tracing::error!(request_id = %id, %method, route, status, ms = elapsed.as_millis() as u64, "request failed");
    } else {
        tracing::debug!(request_id = %id, %method, route, status, us = elapsed.as_micros() as u64, "request");
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// Serves `app` on `listener` until the process ends, with each connection's address known to
/// the per-address rate limit.
pub async fn serve(listener: tokio::net::TcpListener, app: Router) -> std::io::Result<()> {
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await
}

/// As [`serve`], over TLS.
pub async fn serve_tls(listener: tls::TlsListener, app: Router) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    axum::serve(
        listener.tap_io(|_| ()),
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}
