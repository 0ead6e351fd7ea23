//! Who may do what: tokens (compared in constant time), the dashboard's login sessions, and the
//! protection of every state-changing dashboard request against cross-site forgery.
//!
//! The API takes `Authorization: Bearer TOKEN`. The dashboard's login page exchanges a token
//! for a session cookie (`HttpOnly`, `SameSite=Strict`); dashboard pages also take the bearer
//! header, for scripts. A POST made with the cookie must carry the session's CSRF token (a
//! hidden form field) and, when the browser sends one, an `Origin` of this very server.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use party::TaskError;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::Shared;

/// The session cookie's name.
pub(crate) const COOKIE: &str = "party_session";

/// How long a dashboard session lasts after login.
const SESSION_LIFE: Duration = Duration::from_secs(12 * 3600);

/// The most sessions kept at once; the oldest go first when more log in.
const MAX_SESSIONS: usize = 10_000;

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read everything, change nothing (`PARTY_API_READ_TOKEN`).
    Read,
    /// Read and change everything.
    Write,
}

/// How a request proved who it is.
#[derive(Debug, Clone)]
pub(crate) enum Via {
    /// An `Authorization: Bearer` header: no cookie involved, so no forgery to fear.
    Bearer,
    /// The dashboard's session cookie; POSTs must echo this CSRF token.
    Session { csrf: String },
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) access: Access,
    pub(crate) via: Via,
}

impl Caller {
    /// The CSRF token the dashboard's forms carry (empty for bearer callers, who need none).
    pub(crate) fn csrf(&self) -> &str {
        match &self.via {
            Via::Bearer => "",
            Via::Session { csrf } => csrf,
        }
    }
}

struct Session {
    access: Access,
    csrf: String,
    until: Instant,
}

/// The tokens and the live sessions.
pub(crate) struct Auth {
    token: Vec<u8>,
    read_token: Option<Vec<u8>>,
    sessions: Mutex<HashMap<String, Session>>,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Denied {
    /// No token, or a wrong one: 401.
    Unauthenticated,
    /// A read-only token asked to change something: 403.
    ReadOnly,
    /// A cookie-authenticated POST without the session's CSRF token, or from another origin.
    Forged,
}

impl Denied {
    pub(crate) fn status(self) -> StatusCode {
        match self {
            Denied::Unauthenticated => StatusCode::UNAUTHORIZED,
            Denied::ReadOnly | Denied::Forged => StatusCode::FORBIDDEN,
        }
    }

    pub(crate) fn message(self) -> &'static str {
        match self {
            Denied::Unauthenticated => {
                "a token is required: send `Authorization: Bearer TOKEN` with the token given to \
                 `party serve` (PARTY_API_TOKEN or --token-file)"
            }
            Denied::ReadOnly => {
                "this token is read-only: use the full token (PARTY_API_TOKEN) to change tasks"
            }
            Denied::Forged => {
                "refused: this request did not come from the dashboard's own form (missing or \
                 wrong CSRF token, or another origin); reload the page and try again"
            }
        }
    }
}

impl Auth {
    pub(crate) fn new(token: &str, read_token: Option<&str>) -> Result<Auth, TaskError> {
        party::validate::api_token(token, "the API token")?;
        if let Some(t) = read_token {
            party::validate::api_token(t, "the read-only API token")?;
            if t == token {
                return Err(TaskError::invalid(
                    "the read-only token equals the full token: give it a value of its own",
                ));
            }
        }
        Ok(Auth {
            token: token.as_bytes().to_vec(),
            read_token: read_token.map(|t| t.as_bytes().to_vec()),
            sessions: Mutex::new(HashMap::new()),
        })
    }

    /// The access a presented token grants, compared in constant time against each token.
    pub(crate) fn token_access(&self, presented: &str) -> Option<Access> {
        let p = presented.as_bytes();
        let full: bool = p.ct_eq(&self.token).into();
        let read: bool = self
            .read_token
            .as_ref()
            .map(|t| p.ct_eq(t).into())
            .unwrap_or(false);
        if full {
            Some(Access::Write)
        } else if read {
            Some(Access::Read)
        } else {
            None
        }
    }

    /// The caller behind a bearer header, if the request has one.
    pub(crate) fn bearer(&self, headers: &HeaderMap) -> Option<Result<Caller, Denied>> {
        let value = headers.get(header::AUTHORIZATION)?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                // The scheme's name is case-insensitive (RFC 9110 §11.1).
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then_some(token)
            })
            .map(str::trim);
        Some(
            token
                .and_then(|t| self.token_access(t))
                .map(|access| Caller {
                    access,
                    via: Via::Bearer,
                })
                .ok_or(Denied::Unauthenticated),
        )
    }

    /// The caller behind a session cookie.
    pub(crate) fn session(&self, headers: &HeaderMap) -> Option<Caller> {
        let id = cookie(headers, COOKIE)?;
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let s = sessions.get(id)?;
        if s.until < Instant::now() {
            sessions.remove(id);
            return None;
        }
        Some(Caller {
            access: s.access,
            via: Via::Session {
                csrf: s.csrf.clone(),
            },
        })
    }

    /// The caller of an API request: the bearer header only.
    pub(crate) fn api(&self, headers: &HeaderMap) -> Result<Caller, Denied> {
        self.bearer(headers).unwrap_or(Err(Denied::Unauthenticated))
    }

    /// The caller of a dashboard request: the bearer header, else the session cookie.
    pub(crate) fn page(&self, headers: &HeaderMap) -> Result<Caller, Denied> {
        match self.bearer(headers) {
            Some(r) => r,
            None => self.session(headers).ok_or(Denied::Unauthenticated),
        }
    }

    /// May `caller` make this state-changing request? Needs write access; with a cookie, the
    /// session's CSRF token in the form and no foreign `Origin`.
    pub(crate) fn check_change(
        &self,
        caller: &Caller,
        headers: &HeaderMap,
        form_csrf: Option<&str>,
    ) -> Result<(), Denied> {
        if let Via::Session { csrf } = &caller.via {
            let given = form_csrf.unwrap_or("").as_bytes();
            let ok: bool = given.ct_eq(csrf.as_bytes()).into();
            if !ok || !same_origin(headers) {
                return Err(Denied::Forged);
            }
        }
        if caller.access != Access::Write {
            return Err(Denied::ReadOnly);
        }
        Ok(())
    }

    fn login(&self, access: Access) -> Result<String, TaskError> {
        let id = random_hex(32)?;
        let csrf = random_hex(32)?;
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        sessions.retain(|_, s| s.until > now);
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.until)
                .map(|(k, _)| k.clone())
            {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(
            id.clone(),
            Session {
                access,
                csrf,
                until: now + SESSION_LIFE,
            },
        );
        Ok(id)
    }

    fn logout(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers, COOKIE) {
            let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            sessions.remove(id);
        }
    }
}

/// Whether the request's `Origin` (when the browser sent one) is this server's own.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let origin = origin.to_str().unwrap_or("");
    origin == format!("http://{host}") || origin == format!("https://{host}")
}

/// A cookie's value from the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// `bytes` random bytes from the operating system, as hex.
pub(crate) fn random_hex(bytes: usize) -> Result<String, TaskError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf)
        .map_err(|e| TaskError::failed(format!("the system's random source failed: {e}")))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
}

#[derive(Deserialize)]
struct LoginQuery {
    token: Option<String>,
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

/// The login page; `/login?token=…` (the address `party serve` prints) logs in at once.
async fn login_page(
    State(app): State<Shared>,
    query: Result<Query<LoginQuery>, QueryRejection>,
) -> Response {
    if let Ok(Query(LoginQuery { token: Some(t) })) = query {
        return start_session(&app, &t);
    }
    Html(login_html(None)).into_response()
}

async fn login(
    State(app): State<Shared>,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let token = form.map(|Form(f)| f.token).unwrap_or_default();
    start_session(&app, token.trim())
}

fn start_session(app: &Shared, token: &str) -> Response {
    let Some(access) = app.auth.token_access(token) else {
        return (
            StatusCode::UNAUTHORIZED,
            Html(login_html(Some("That token is not right. Try again."))),
        )
            .into_response();
    };
    match app.auth.login(access) {
        Ok(id) => (
            [(
                header::SET_COOKIE,
                format!(
                    "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
                    SESSION_LIFE.as_secs()
                ),
            )],
            Redirect::to("/"),
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[derive(Deserialize)]
struct LogoutForm {
    #[serde(default)]
    csrf: Option<String>,
}

async fn logout(
    State(app): State<Shared>,
    headers: HeaderMap,
    form: Result<Form<LogoutForm>, FormRejection>,
) -> Response {
    // Logging out changes state too: only the dashboard's own form may do it.
    let csrf = form.ok().and_then(|Form(f)| f.csrf);
    if let Some(caller) = app.auth.session(&headers) {
        let given = csrf.unwrap_or_default();
        let ok: bool = given.as_bytes().ct_eq(caller.csrf().as_bytes()).into();
        if !ok || !same_origin(&headers) {
            return (StatusCode::FORBIDDEN, Denied::Forged.message()).into_response();
        }
    }
    app.auth.logout(&headers);
    (
        [(
            header::SET_COOKIE,
            format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
        )],
        Redirect::to("/login"),
    )
        .into_response()
}

/// The login page: static text only (the message is one of ours, never user input).
fn login_html(message: Option<&'static str>) -> String {
    let message = message
        .map(|m| format!("<p class=\"error\" role=\"alert\">{m}</p>"))
        .unwrap_or_default();
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>party · log in</title><style>{css}</style></head><body class=\"login\">\
         <main><h1>party</h1>{message}<form method=\"post\" action=\"/login\">\
         <label for=\"token\">Token</label>\
         <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" autofocus required>\
         <button type=\"submit\">Log in</button></form>\
         <p class=\"hint\">The token is <code>PARTY_API_TOKEN</code>, the file given to \
         <code>party serve --token-file</code>, or the one <code>party serve</code> printed \
         when it started.</p></main></body></html>",
        css = crate::LOGIN_CSS
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_grant_their_access_and_nothing_else() {
        let auth = Auth::new("full-token-0123456789", Some("read-token-0123456789")).unwrap();
        assert_eq!(
            auth.token_access("full-token-0123456789"),
            Some(Access::Write)
        );
        assert_eq!(
            auth.token_access("read-token-0123456789"),
            Some(Access::Read)
        );
        assert_eq!(auth.token_access("full-token-012345678"), None);
        assert_eq!(auth.token_access(""), None);
        assert!(Auth::new("short", None).is_err());
        assert!(Auth::new("same-token-0123456789", Some("same-token-0123456789")).is_err());
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; party_session=abc; b=2".parse().unwrap(),
        );
        assert_eq!(cookie(&h, COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
    }

    #[test]
    fn a_foreign_origin_is_not_the_same_origin() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, "http://127.0.0.1:8080".parse().unwrap());
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        assert!(!same_origin(&h));
    }
}
