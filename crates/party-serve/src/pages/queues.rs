//! The queues page: every queue with its tasks by state, whether it is paused, its limits, and
//! the forms that pause, resume and limit it (each a POST carrying the session's CSRF token).

use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Path, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::html;
use party::State as TaskState;
use party::queues::LimitsSpec;
use serde::Deserialize;

use super::{PageError, caller, change, denied, layout, to_login, urlencode};
use crate::Shared;

pub(super) fn routes() -> Router<Shared> {
    Router::new()
        .route("/queues", get(list))
        .route("/queues/{name}/pause", post(pause))
        .route("/queues/{name}/resume", post(resume))
        .route("/queues/{name}/limits", post(limit))
}

async fn list(State(app): State<Shared>, headers: HeaderMap) -> Response {
    let Some(c) = caller(&app, &headers) else {
        return to_login();
    };
    let queues = match app.party.queues().await {
        Ok(q) => q,
        Err(e) => return PageError::from(e).into_response(),
    };
    let body = html! {
        h1 { "Queues" }
        p.muted {
            "A paused queue's tasks wait until it is resumed; running ones finish. Limits hold \
             across every worker: at most N running at once, at most COUNT starts per PERIOD \
             (10/1s, 100/1m), each per value of a data field when one is given."
        }
        @if queues.is_empty() {
            p { "No queue holds a task or a control yet." }
        } @else {
            table id="queues" {
                thead { tr {
                    th { "Queue" } th { "Status" } th { "Limits" } th { "Due" }
                    @for s in TaskState::ALL { th { (s.as_str()) } }
                    th { "Actions" }
                } }
                tbody {
                    @for q in &queues {
                        tr data-queue=(q.name) {
                            td { a href={ "/tasks?queue=" (urlencode(&q.name)) } { (q.name) } }
                            td { @if q.paused { span.state.state-dead { "paused" } } @else { "active" } }
                            td { (q.limits) }
                            td.num { (q.due) }
                            @for s in TaskState::ALL {
                                td.num { (q.counts.iter().find(|(st, _)| *st == s).map_or(0, |(_, n)| *n)) }
                            }
                            td {
                                form.inline method="post" action={ "/queues/" (urlencode(&q.name)) (if q.paused { "/resume" } else { "/pause" }) } {
                                    input type="hidden" name="csrf" value=(c.csrf());
                                    button type="submit" { (if q.paused { "Resume" } else { "Pause" }) }
                                }
                                form.inline method="post" action={ "/queues/" (urlencode(&q.name)) "/limits" } {
                                    input type="hidden" name="csrf" value=(c.csrf());
                                    " "
                                    input name="concurrency" size="4" placeholder="N" aria-label="concurrency"
                                        value=[q.limits.concurrency];
                                    " "
                                    input name="rate" size="7" placeholder="10/1s" aria-label="rate"
                                        value=[q.limits.rate.map(|r| r.to_string())];
                                    " "
                                    input name="per" size="14" placeholder="data.customer" aria-label="per"
                                        value=[q.limits.per.as_ref().map(|f| format!("data.{f}"))];
                                    " "
                                    button type="submit" { "Set limits" }
                                }
                            }
                        }
                    }
                }
            }
            p.muted { "Empty limit fields remove the limits." }
        }
    };
    Html(layout("queues", Some(&c), true, body).into_string()).into_response()
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: Option<String>,
}

#[derive(Deserialize)]
struct LimitForm {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    concurrency: String,
    #[serde(default)]
    rate: String,
    #[serde(default)]
    per: String,
}

async fn pause(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(name): Path<String>,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    set_paused(app, headers, name, form, true).await
}

async fn resume(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(name): Path<String>,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    set_paused(app, headers, name, form, false).await
}

async fn set_paused(
    app: Shared,
    headers: HeaderMap,
    name: String,
    form: Result<Form<CsrfForm>, FormRejection>,
    paused: bool,
) -> Response {
    let csrf = form.ok().and_then(|Form(f)| f.csrf);
    if let Err(d) = change(&app, &headers, csrf.as_deref()) {
        return denied(d);
    }
    let done = if paused {
        app.party.pause_queue(&name).await
    } else {
        app.party.resume_queue(&name).await
    };
    match done {
        Ok(()) => Redirect::to("/queues").into_response(),
        Err(e) => PageError::from(e).into_response(),
    }
}

async fn limit(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(name): Path<String>,
    form: Result<Form<LimitForm>, FormRejection>,
) -> Response {
    let form = form.ok().map(|Form(f)| f);
    let csrf = form.as_ref().and_then(|f| f.csrf.clone());
    if let Err(d) = change(&app, &headers, csrf.as_deref()) {
        return denied(d);
    }
    let Some(f) = form else {
        return PageError::from(party::TaskError::invalid("the form was not sent whole"))
            .into_response();
    };
    let given = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
    let concurrency = match given(&f.concurrency).map(|n| {
        party::validate::whole_number(
            &n,
            "the queue's concurrency",
            1,
            party::validate::MAX_CONCURRENCY as i64,
            "5",
        )
    }) {
        Some(Err(e)) => return PageError::from(e).into_response(),
        Some(Ok(n)) => Some(n),
        None => None,
    };
    let spec = LimitsSpec {
        concurrency,
        rate: given(&f.rate),
        per: given(&f.per),
    };
    let done = match spec.limits() {
        Ok(limits) => app.party.limit_queue(&name, &limits).await,
        Err(e) => Err(e),
    };
    match done {
        Ok(()) => Redirect::to("/queues").into_response(),
        Err(e) => PageError::from(e).into_response(),
    }
}
