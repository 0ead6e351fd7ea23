//! `party serve`: an HTTP server over a [`party::Party`] with a JSON API under `/api/v1`, a
//! server-rendered dashboard, and Prometheus metrics.
//!
//! ```no_run
//! # async fn run(party: party::Party) -> Result<(), party::TaskError> {
//! let config = party_serve::ServeConfig::new("a long random token");
//! let app = party_serve::router(party, config)?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! party_serve::serve(app, listener, std::future::pending()).await
//! # }
//! ```
//!
//! Every request but `GET /healthz` needs a token: `Authorization: Bearer TOKEN`, or (for the
//! dashboard) the session cookie the login page gives for it. A read-only token sees
//! everything and changes nothing. Inputs go through [`party::validate`] and
//! [`party::spec::TaskSpec`], as the command line's do.
//!
//! Code map: `auth` checks tokens and sessions (and the dashboard's protection against
//! cross-site requests); `api` is the JSON API and `openapi` its description; `error` turns a
//! [`party::TaskError`] into a status and a JSON body; `redact` hides data fields; `pages` is
//! the dashboard; `metrics` writes Prometheus text.

// The OpenAPI document is one `json!` literal, deeper than the default limit allows.
#![recursion_limit = "256"]

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use party::{Party, TaskError};

mod api;
mod auth;
mod error;
mod metrics;
mod openapi;
mod pages;
mod redact;

pub use auth::Access;
pub use openapi::document as openapi_document;

/// The largest request body the server reads by default: 1 MiB (task data is at most
/// [`party::validate::MAX_DATA_BYTES`]); larger bodies get 413.
pub const DEFAULT_BODY_LIMIT: usize = 1 << 20;

/// How the server is set up.
#[derive(Clone)]
pub struct ServeConfig {
    /// The token that may read and change everything.
    pub token: String,
    /// A token that may only read, if any.
    pub read_token: Option<String>,
    /// Data fields hidden from every answer and page, as `data.FIELD` or `data.FIELD.INNER`,
    /// besides those each registered handler declares ([`party::Task::REDACT`]).
    pub redact: Vec<String>,
    /// Serve `/metrics` without a token.
    pub metrics_public: bool,
    /// The largest request body read, in bytes.
    pub body_limit: usize,
}

impl ServeConfig {
    /// A server that answers to `token`, with the defaults for everything else.
    pub fn new(token: impl Into<String>) -> ServeConfig {
        ServeConfig {
            token: token.into(),
            read_token: None,
            redact: Vec::new(),
            metrics_public: false,
            body_limit: DEFAULT_BODY_LIMIT,
        }
    }
}

impl std::fmt::Debug for ServeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the tokens.
        f.debug_struct("ServeConfig")
            .field("redact", &self.redact)
            .field("metrics_public", &self.metrics_public)
            .field("body_limit", &self.body_limit)
            .finish_non_exhaustive()
    }
}

/// The stylesheet of the login page.
pub(crate) const LOGIN_CSS: &str = "body{font:16px system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}\
.login main{max-width:22rem;margin:12vh auto;padding:2rem;background:#fff;border-radius:8px;box-shadow:0 1px 4px #0002}\
label{display:block;margin:.5rem 0 .25rem}input{width:100%;padding:.5rem;box-sizing:border-box}\
button{margin-top:1rem;padding:.5rem 1rem}.error{color:#b00020}.hint{color:#555;font-size:.85rem}";

/// What every request handler shares.
pub(crate) struct AppState {
    pub(crate) party: Party,
    pub(crate) auth: auth::Auth,
    pub(crate) redact: redact::Redaction,
    pub(crate) metrics_public: bool,
}

pub(crate) type Shared = Arc<AppState>;

/// The server's routes over `party`.
///
/// # Errors
/// [`TaskError::Invalid`] for an empty token, a bad `--redact` path, or a handler's
/// [`party::Task::REDACT`] field that is not a field path.
pub fn router(party: Party, config: ServeConfig) -> Result<Router, TaskError> {
    let redact = redact::Redaction::new(&config.redact, &party.registry().redactions())?;
    let state = Arc::new(AppState {
        party,
        auth: auth::Auth::new(&config.token, config.read_token.as_deref())?,
        redact,
        metrics_public: config.metrics_public,
    });
    Ok(Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics::metrics))
        .merge(auth::routes())
        .merge(pages::routes())
        .nest("/api/v1", api::routes())
        // The API's own root, which the nested routes do not cover: its JSON 404 too.
        .route("/api/v1/", axum::routing::any(api::not_found))
        .layer(DefaultBodyLimit::max(config.body_limit))
        .with_state(state))
}

/// A router with only `GET /metrics` (a worker's own figures, from
/// [`party::metrics::WorkerMetrics::render`]) and `GET /healthz`, open to any scraper: it shows
/// counts per handler and queue, never task data. `party worker --metrics ADDR` serves it.
pub fn worker_metrics_router(metrics: Arc<party::metrics::WorkerMetrics>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        m.render(),
                    )
                }
            }),
        )
}

/// Serve `app` (from [`router`]) on `listener` until `shutdown` completes, then finish the
/// requests in flight.
///
/// # Errors
/// [`TaskError::Failed`] when the listener fails.
pub async fn serve(
    app: Router,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), TaskError> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| TaskError::failed(format!("the HTTP server stopped: {e}")))
}

/// A new random token: 32 bytes from the operating system's generator, as 64 hex characters.
///
/// # Errors
/// [`TaskError::Failed`] when the system has no random source.
pub fn random_token() -> Result<String, TaskError> {
    auth::random_hex(32)
}
