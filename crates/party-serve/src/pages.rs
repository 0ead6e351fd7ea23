//! The dashboard: server-rendered pages (maud templates, compiled into the binary and escaping
//! every value), refreshed every few seconds by the browser without losing the page's filters
//! (they live in the address). Actions are POST forms carrying the session's CSRF token.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use jiff::{SignedDuration, Timestamp};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use party::recurrence::{Recurrence, format_duration};
use party::{State as TaskState, TaskError, TaskId, TaskInfo, format_time, policy};
use serde::Deserialize;

use crate::Shared;
use crate::api::ListQuery;
use crate::auth::{Caller, Denied};

mod queues;

/// How often pages reload themselves, in seconds.
const REFRESH_SECS: u32 = 5;

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/", get(overview))
        .route("/tasks", get(tasks))
        .route("/tasks/{id}", get(detail))
        .route("/recurring", get(recurring))
        .route("/tasks/{id}/cancel", post(cancel))
        .route("/tasks/{id}/retry", post(retry))
        .route(
            "/tasks/retry-matching",
            get(confirm_retry_matching).post(retry_matching),
        )
        .route(
            "/tasks/cancel-matching",
            get(confirm_cancel_matching).post(cancel_matching),
        )
        .route("/add", get(add_form).post(add))
        .merge(queues::routes())
}

/// A page's failure, shown as a page.
struct PageError(StatusCode, String);

impl From<TaskError> for PageError {
    fn from(e: TaskError) -> PageError {
        PageError(crate::error::status_of(&e), e.to_string())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let body = layout(
            "error",
            None,
            false,
            html! { h1 { "Something went wrong" } p.error role="alert" { (self.1) } p { a href="/" { "Back to the overview" } } },
        );
        (self.0, Html(body.into_string())).into_response()
    }
}

/// Who is asking; `None` sends the browser to the login page.
fn caller(app: &Shared, headers: &HeaderMap) -> Option<Caller> {
    app.auth.page(headers).ok()
}

fn to_login() -> Response {
    Redirect::to("/login").into_response()
}

fn denied(d: Denied) -> Response {
    PageError(d.status(), d.message().to_string()).into_response()
}

pub(crate) const CSS: &str = "\
body{font:14px/1.45 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}\
header{background:#1d2330;color:#fff;padding:.6rem 1.2rem;display:flex;gap:1.2rem;align-items:center}\
header a{color:#cfd8ff;text-decoration:none}header strong{margin-right:1rem}header form{margin-left:auto}\
main{padding:1rem 1.2rem;max-width:1200px}h1{font-size:1.3rem}h2{font-size:1.05rem;margin-top:1.6rem}\
table{border-collapse:collapse;background:#fff;width:100%}th,td{text-align:left;padding:.35rem .6rem;border-bottom:1px solid #e3e6ea;vertical-align:top}\
th{background:#eef0f3;font-weight:600}td.num{font-variant-numeric:tabular-nums}\
.cards{display:flex;flex-wrap:wrap;gap:.8rem}.card{background:#fff;border-radius:6px;padding:.6rem 1rem;min-width:7rem;box-shadow:0 1px 2px #0001}\
.card b{display:block;font-size:1.5rem}.card a{color:inherit;text-decoration:none}\
.error,.alert{color:#b00020}.alert{background:#fdecee;padding:.5rem .8rem;border-radius:4px}\
pre{background:#fff;padding:.8rem;overflow:auto;border:1px solid #e3e6ea;white-space:pre-wrap;word-break:break-all}\
form.inline{display:inline}button{padding:.3rem .8rem;cursor:pointer}.muted{color:#667}\
.state{padding:.05rem .4rem;border-radius:3px;background:#eef0f3}.state-dead{background:#fdecee;color:#b00020}\
.state-done{background:#e6f4ea;color:#1e6b34}.state-running{background:#e8f0fe;color:#1a4fb0}\
.filters{display:flex;gap:.6rem;align-items:end;flex-wrap:wrap;margin-bottom:.8rem}.filters label{display:flex;flex-direction:column;font-size:.85rem}\
.bar{display:inline-block;background:#5b7bd5;height:.7rem;vertical-align:middle}\
a.button{display:inline-block;padding:.3rem .8rem;border:1px solid #8a93a3;border-radius:3px;background:#fff;color:inherit;text-decoration:none}";

/// The frame around every page. `refresh` makes the browser reload the same address (filters
/// included) every few seconds.
fn layout(title: &str, caller: Option<&Caller>, refresh: bool, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if refresh { meta http-equiv="refresh" content=(REFRESH_SECS); }
                title { "party · " (title) }
                style { (PreEscaped(CSS)) }
            }
            body {
                header {
                    strong { "party" }
                    a href="/" { "Overview" }
                    a href="/tasks" { "Tasks" }
                    a href="/tasks?state=dead" { "Dead" }
                    a href="/recurring" { "Recurring" }
                    a href="/queues" { "Queues" }
                    a href="/add" { "Add" }
                    @if let Some(c) = caller {
                        @if !c.csrf().is_empty() {
                            form.inline method="post" action="/logout" {
                                input type="hidden" name="csrf" value=(c.csrf());
                                button type="submit" { "Log out" }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

fn state_badge(s: TaskState) -> Markup {
    html! { span class={ "state state-" (s.as_str()) } { (s.as_str()) } }
}

/// `t` relative to `now`, for people: "in 5m", "3s ago".
fn relative(t: Timestamp, now: Timestamp) -> String {
    let d = t.duration_since(now);
    let whole = SignedDuration::from_secs(d.as_secs());
    if d.is_negative() {
        format!("{} ago", format_duration(-whole))
    } else if whole.is_zero() {
        "now".to_string()
    } else {
        format!("in {}", format_duration(whole))
    }
}

async fn overview(State(app): State<Shared>, headers: HeaderMap) -> Response {
    let Some(c) = caller(&app, &headers) else {
        return to_login();
    };
    let stats = match app.party.stats().await {
        Ok(s) => s,
        Err(e) => return PageError::from(e).into_response(),
    };
    let now = app.party.clock().now();
    let mut by_handler: BTreeMap<&str, BTreeMap<TaskState, u64>> = BTreeMap::new();
    for h in &stats.by_handler {
        *by_handler
            .entry(&h.handler)
            .or_default()
            .entry(h.state)
            .or_default() += h.count;
    }
    let body = html! {
        h1 { "Overview" }
        @if !stats.unhandled.is_empty() {
            div.alert role="alert" id="unhandled" {
                strong { "Due tasks no live worker can run: " }
                @for u in &stats.unhandled {
                    a href={ "/tasks?handler=" (urlencode(&u.handler)) } { (u.handler) } " (" (u.count) " " (u.state.as_str()) ") "
                }
            }
        }
        div.cards id="by-state" {
            @for (state, n) in &stats.by_state {
                div.card { a href={ "/tasks?state=" (state.as_str()) } { b data-state=(state.as_str()) { (n) } (state.as_str()) } }
            }
        }
        h2 { "Health" }
        table {
            tr { th { "Oldest due task" } td {
                @match stats.oldest_due {
                    Some(t) => { (format_time(t)) " (" (relative(t, now)) ")" }
                    None => span.muted { "nothing is waiting" },
                }
            } }
            tr { th { "Attempts finished in the last minute" } td id="throughput" { (stats.finished_last_minute) } }
            tr { th { "Running tasks whose lease ended" } td { (stats.stuck_count) } }
        }
        h2 { "Tasks by handler" }
        @if by_handler.is_empty() {
            p.muted { "No tasks yet. Add one with " code { "party add noop" } " or POST /api/v1/tasks." }
        } @else {
            table {
                tr { th { "Handler" } @for s in TaskState::ALL { th { (s.as_str()) } } }
                @for (h, counts) in &by_handler {
                    tr {
                        td { a href={ "/tasks?handler=" (urlencode(h)) } { (h) } }
                        @for s in TaskState::ALL {
                            td.num { @if let Some(n) = counts.get(&s) { a href={ "/tasks?handler=" (urlencode(h)) "&state=" (s.as_str()) } { (n) } } @else { span.muted { "0" } } }
                        }
                    }
                }
            }
        }
        h2 { "Live workers" }
        @if stats.workers.is_empty() {
            p.muted { "No live worker. Start one with " code { "party worker" } "." }
        } @else {
            table {
                tr { th { "Worker" } th { "Last heartbeat" } th { "Handlers" } th { "Queues" } }
                @for w in &stats.workers {
                    tr { td { (w.id) } td { (relative(w.last_seen, now)) } td { (w.handlers.join(", ")) } td { (w.queues.join(", ")) } }
                }
            }
        }
    };
    Html(layout("overview", Some(&c), true, body).into_string()).into_response()
}

/// A query value (or a path segment) made safe for an address.
fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn tasks(
    State(app): State<Shared>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let Some(c) = caller(&app, &headers) else {
        return to_login();
    };
    let query = match query {
        Ok(Query(pairs)) => match ListQuery::from_pairs(pairs) {
            Ok(q) => q,
            Err(e) => return PageError::from(e).into_response(),
        },
        Err(e) => return PageError(StatusCode::BAD_REQUEST, e.body_text()).into_response(),
    };
    let filter = match query.filter(&app.redact) {
        Ok(f) => f,
        Err(e) => return PageError::from(e).into_response(),
    };
    let page = match app.party.list_page(&filter).await {
        Ok(p) => p,
        Err(e) => return PageError::from(e).into_response(),
    };
    let (list, next) = (&page.tasks, page.next.map(|c| c.to_string()));
    let now = app.party.clock().now();
    let keep = |v: &Option<String>| v.clone().unwrap_or_default();
    let filters = format!(
        "state={}&handler={}&queue={}&data={}",
        urlencode(&keep(&query.state)),
        urlencode(&keep(&query.handler)),
        urlencode(&keep(&query.queue)),
        urlencode(&filter.data.as_ref().map(data_text).unwrap_or_default())
    );
    let steerable = filter.state.is_some()
        || filter.handler.is_some()
        || filter.queue.is_some()
        || filter.data.is_some();
    let body = html! {
        h1 { "Tasks" }
        form.filters method="get" action="/tasks" {
            label { "State" select name="state" {
                option value="" { "any" }
                @for s in TaskState::ALL { option value=(s.as_str()) selected[filter.state == Some(s)] { (s.as_str()) } }
            } }
            label { "Handler" input name="handler" value=(keep(&query.handler)); }
            label { "Queue" input name="queue" value=(keep(&query.queue)); }
            label { "Data field (FIELD=VALUE)" input name="data" placeholder="customer=acme" value=(filter.data.as_ref().map(data_text).unwrap_or_default()); }
            button type="submit" { "Filter" }
        }
        @if steerable {
            // Only the actions the state filter allows (none named: each its own states).
            p {
                @if filter.state.is_none_or(TaskState::can_retry) {
                    a.button id="retry-matching" href={ "/tasks/retry-matching?" (filters) } { "Retry every matching task…" }
                    " "
                }
                @if filter.state.is_none_or(TaskState::can_cancel_in_bulk) {
                    a.button id="cancel-matching" href={ "/tasks/cancel-matching?" (filters) } { "Cancel every matching task…" }
                }
            }
        }
        @if let Some(reach) = page.examined_to {
            p.muted id="examined" {
                "A data filter examines " (party::policy::DATA_FILTER_SCAN) " tasks a page: "
                @if list.is_empty() { "none of them matches" } @else { "these are the matches among them" }
                ", up to the task due " (relative(reach.due_at, now)) ". The next page searches on."
            }
        } @else if list.is_empty() {
            p.muted { "No task matches." }
        }
        @if !list.is_empty() {
            table id="tasks" {
                tr { th { "Id" } th { "Handler" } th { "State" } th { "Due" } th { "Attempts" } th { "Queue" } th { "Data" } th { "Last error" } }
                @for t in list {
                    tr {
                        td { a href={ "/tasks/" (t.id) } { code { (t.id) } } }
                        td { (t.handler) }
                        td { (state_badge(t.state)) }
                        td { (relative(t.due_at, now)) }
                        td.num { (t.attempts) "/" (t.max_attempts) }
                        td { (t.queue) }
                        td { code { (short(&redacted_data(&app, t), 60)) } }
                        td.error { (t.last_error.as_deref().map(|e| short(e, 80)).unwrap_or_default()) }
                    }
                }
            }
        }
        @if let Some(next) = next {
            p { a id="next-page" href={ "/tasks?" (filters) "&limit=" (filter.limit.unwrap_or(100)) "&cursor=" (urlencode(&next)) } { "Next page →" } }
        }
    };
    Html(layout("tasks", Some(&c), true, body).into_string()).into_response()
}

/// A data filter as the form's field holds it: `FIELD=VALUE`.
fn data_text(m: &party::DataMatch) -> String {
    format!("{}={}", m.field, m.value)
}

/// Every live recurring task (scheduled, running or retrying; in each state at most
/// [`party::policy::RECURRING_LISTED`] of them, and at most [`party::policy::PAGE_BYTES`] of
/// them as stored), by handler and next run; and whether a state had more.
pub(crate) async fn live_recurring(app: &Shared) -> Result<(Vec<TaskInfo>, bool), TaskError> {
    let mut tasks = Vec::new();
    let mut truncated = false;
    for state in [
        TaskState::Running,
        TaskState::Retrying,
        TaskState::Scheduled,
    ] {
        // A page of each: bounded by count and by bytes, and it says whether more follow.
        let page = app
            .party
            .list_page(&party::ListFilter {
                state: Some(state),
                recurring: Some(true),
                limit: Some(party::policy::RECURRING_LISTED),
                ..party::ListFilter::default()
            })
            .await?;
        truncated |= page.next.is_some();
        tasks.extend(page.tasks);
    }
    tasks.sort_by(|a, b| (&a.handler, a.timestamp, a.id).cmp(&(&b.handler, b.timestamp, b.id)));
    Ok((tasks, truncated))
}

async fn recurring(State(app): State<Shared>, headers: HeaderMap) -> Response {
    let Some(c) = caller(&app, &headers) else {
        return to_login();
    };
    let (tasks, truncated) = match live_recurring(&app).await {
        Ok(t) => t,
        Err(e) => return PageError::from(e).into_response(),
    };
    let now = app.party.clock().now();
    let body = html! {
        h1 { "Recurring tasks" }
        p.muted { "Every live recurring task: its rule, the time zone the rule is read in, its next occurrence and when it last ran. A task's page has its occurrence ledger (what ran for each expected occurrence) and a calendar of the coming ones." }
        @if truncated {
            p.alert role="alert" { "Only the first " (party::policy::RECURRING_LISTED) " tasks of each state, and no more than " (party::policy::PAGE_BYTES >> 20) " MiB of them, are shown." }
        }
        @if tasks.is_empty() {
            p.muted { "No recurring task. Add one with " code { "party add HANDLER --every 1h" } " or the " a href="/add" { "add form" } "." }
        } @else {
            table id="recurring" {
                tr { th { "Handler" } th { "Data" } th { "Rule" } th { "Time zone" } th { "Next run" } th { "Last run" } th { "State" } th { "Ledger, calendar" } }
                @for t in &tasks {
                    @let rule = t.rule.as_ref().and_then(|r| Recurrence::from_json(&r.to_string()).ok());
                    tr {
                        td { a href={ "/tasks/" (t.id) } { (t.handler) } }
                        td { code { (short(&redacted_data(&app, t), 60)) } }
                        td { @match &rule {
                            Some(r) => { (r.rule.to_string()) span.muted { " · missed: " (r.missed.to_string()) } },
                            None => span.muted { "decided by its handler on each run" },
                        } }
                        td { @match rule.as_ref().and_then(|r| r.tz.as_deref()) { Some(tz) => (tz), None => span.muted { "UTC" } } }
                        td { (format_time(t.timestamp)) " (" (relative(t.timestamp, now)) ")" }
                        td { @match t.last_run_on { Some(x) => { (format_time(x)) " (" (relative(x, now)) ")" }, None => span.muted { "never" } } }
                        td { (state_badge(t.state)) }
                        td { @if rule.is_some() {
                            a href={ "/tasks/" (t.id) "#occurrences" } { "ledger" } " · " a href={ "/tasks/" (t.id) "#coming" } { "calendar" }
                        } @else {
                            a href={ "/tasks/" (t.id) } { "runs" }
                        } }
                    }
                }
            }
        }
    };
    Html(layout("recurring", Some(&c), true, body).into_string()).into_response()
}

fn redacted_data(app: &Shared, t: &TaskInfo) -> String {
    let mut data = t.data.clone();
    app.redact.data(&t.handler, &mut data);
    data.to_string()
}

fn short(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let head: String = s.chars().take(max).collect();
    format!("{head}…")
}

async fn detail(State(app): State<Shared>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let Some(c) = caller(&app, &headers) else {
        return to_login();
    };
    // The latest runs only, read once: the runs table, the ledger and the coming occurrences
    // all come from this one bounded read, however long the task's history.
    let task = match id.parse::<TaskId>() {
        Ok(id) => app.party.get_recent(id, policy::RECENT_RUNS).await,
        Err(e) => Err(e),
    };
    let recent = match task {
        Ok(t) => t,
        Err(e) => return PageError::from(e).into_response(),
    };
    let t = &recent.task;
    let now = app.party.clock().now();
    let rule = t
        .rule
        .as_ref()
        .and_then(|r| Recurrence::from_json(&r.to_string()).ok());
    let upcoming = match &rule {
        Some(_) => app.party.next_occurrences_of(t, 12).unwrap_or_default(),
        None => Vec::new(),
    };
    let ledger = match &rule {
        Some(_) => app.party.recent_gaps(&recent).ok().map(|g| ledger(t, &g)),
        None => None,
    };
    let older = recent.older.map(|c| {
        format!(
            "Showing the latest {} of {} runs. Older runs: GET /api/v1/tasks/{}/runs?cursor={c}; \
             every occurrence compared with the schedule: party gaps {}",
            t.runs.len(),
            recent.total,
            t.id,
            t.id
        )
    });
    let calendar = rule.as_ref().map(|r| calendar(r, &upcoming));
    let mut data = t.data.clone();
    app.redact.data(&t.handler, &mut data);
    let pretty = serde_json::to_string_pretty(&data).unwrap_or_default();
    let body = html! {
        h1 { "Task " code { (t.id) } }
        table id="fields" {
            tr { th { "Handler" } td { (t.handler) } }
            tr { th { "State" } td { (state_badge(t.state)) } }
            tr { th { "timestamp" } td { (format_time(t.timestamp)) " (" (relative(t.timestamp, now)) ")" } }
            tr { th { "Due" } td { (format_time(t.due_at)) } }
            tr { th { "last_run_on" } td { @match t.last_run_on { Some(x) => (format_time(x)), None => span.muted { "never" } } } }
            tr { th { "Attempts" } td { (t.attempts) " of " (t.max_attempts) } }
            tr { th { "Queue, priority" } td { (t.queue) ", " (t.priority) } }
            @if let Some(r) = &rule {
                tr { th { "Rule" } td { (r.rule.to_string()) @if let Some(tz) = &r.tz { " in " (tz) } " · missed: " (r.missed.to_string()) } }
            }
            @if let Some(e) = &t.last_error { tr { th { "Last error" } td.error { pre { (e) } } } }
        }
        h2 { "Data" }
        pre id="data" { (pretty) }
        @if let Some(cal) = calendar {
            h2 id="coming" { "Coming occurrences" }
            table id="calendar" {
                tr { th { "When (UTC)" } th { "Local time" } th { "Note" } }
                @for (t, local, note) in &cal {
                    tr { td { (format_time(*t)) } td { (local) } td class=(if note.is_empty() { "" } else { "alert" }) { (note) } }
                }
            }
        }
        @if let Some((rows, truncated)) = ledger {
            h2 id="occurrences" { "Occurrence ledger" }
            p.muted {
                "Each expected occurrence beside what ran for it: missed, late, doubled or unexpected ones are flagged."
                @if !recent.is_complete() { " Only the occurrences since the oldest run shown are compared (its earlier attempts may be older)." }
                @if truncated { " Only the latest expected occurrences were compared." }
                @if !recent.is_complete() || truncated { " Older history: party gaps " (t.id) " or GET /api/v1/tasks/" (t.id) "/gaps, and GET /api/v1/tasks/" (t.id) "/runs." }
            }
            @if rows.is_empty() { p.muted { "No occurrence was due yet." } } @else {
                table id="ledger" {
                    tr { th { "Occurrence" } th { "Runs" } th { "Verdict" } }
                    @for row in &rows {
                        tr {
                            td { (format_time(row.0)) }
                            td { (row.1) }
                            td class=(if matches!(row.2, "ran" | "retrying") { "" } else { "alert" }) { (row.2) }
                        }
                    }
                }
            }
        }
        // Only the actions the task's state allows: a done task has none.
        @if t.state.can_retry() || t.state.can_cancel() {
            h2 { "Actions" }
            p {
                @if t.state.can_retry() {
                    form.inline method="post" action={ "/tasks/" (t.id) "/retry" } {
                        input type="hidden" name="csrf" value=(c.csrf());
                        button type="submit" id="retry" { @if matches!(t.state, TaskState::Scheduled) { "Run now" } @else { "Retry" } }
                    }
                    " "
                }
                @if t.state.can_cancel() {
                    form.inline method="post" action={ "/tasks/" (t.id) "/cancel" } {
                        input type="hidden" name="csrf" value=(c.csrf());
                        button type="submit" id="cancel" { "Cancel" }
                    }
                }
            }
        }
        h2 { "Runs" }
        @if let Some(older) = &older { p.muted id="runs-shown" { (older) } }
        @if t.runs.is_empty() {
            p.muted { "No attempt yet." }
        } @else {
            table id="runs" {
                tr { th { "Occurrence" } th { "Attempt" } th { "Started" } th { "Took" } th { "Outcome" } th { "Worker" } th { "Error" } }
                @for r in t.runs.iter().rev() {
                    tr {
                        td { (format_time(r.timestamp)) }
                        td.num { (r.attempt) }
                        td { (format_time(r.started_at)) }
                        td { (format!("{:.3}s", r.finished_at.duration_since(r.started_at).as_secs_f64())) }
                        td { (r.outcome.as_str()) }
                        td { (r.worker) }
                        td.error { (r.error.clone().unwrap_or_default()) }
                    }
                }
            }
        }
    };
    let refresh = !matches!(t.state, TaskState::Done | TaskState::Cancelled);
    Html(layout("task", Some(&c), refresh, body).into_string()).into_response()
}

#[derive(Deserialize)]
struct ActionForm {
    #[serde(default)]
    csrf: Option<String>,
}

#[derive(Deserialize)]
struct MatchingForm {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    handler: Option<String>,
    #[serde(default)]
    queue: Option<String>,
    #[serde(default)]
    data: Option<String>,
}

/// Check a dashboard POST: a caller with write access, and (with the cookie) the session's
/// CSRF token.
fn change(app: &Shared, headers: &HeaderMap, csrf: Option<&str>) -> Result<(), Denied> {
    let c = caller(app, headers).ok_or(Denied::Unauthenticated)?;
    app.auth.check_change(&c, headers, csrf)
}

async fn cancel(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Response {
    steer_one(app, headers, id, form, true).await
}

async fn retry(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Response {
    steer_one(app, headers, id, form, false).await
}

async fn steer_one(
    app: Shared,
    headers: HeaderMap,
    id: String,
    form: Result<Form<ActionForm>, FormRejection>,
    cancel: bool,
) -> Response {
    let csrf = form.ok().and_then(|Form(f)| f.csrf);
    if let Err(d) = change(&app, &headers, csrf.as_deref()) {
        return denied(d);
    }
    let result = match id.parse::<TaskId>() {
        Ok(id) if cancel => app.party.cancel(id).await,
        Ok(id) => app.party.retry(id).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(t) => Redirect::to(&format!("/tasks/{}", t.id)).into_response(),
        Err(e) => PageError::from(e).into_response(),
    }
}

async fn confirm_retry_matching(
    State(app): State<Shared>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    confirm_matching(app, headers, query, false).await
}

async fn confirm_cancel_matching(
    State(app): State<Shared>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    confirm_matching(app, headers, query, true).await
}

/// The task list with a bulk action's filter.
fn tasks_url(filter: &party::SteerFilter) -> String {
    format!(
        "/tasks?state={}&handler={}&queue={}&data={}",
        filter.state.map(|s| s.as_str()).unwrap_or_default(),
        urlencode(filter.handler.as_deref().unwrap_or_default()),
        urlencode(filter.queue.as_deref().unwrap_or_default()),
        urlencode(&filter.data.as_ref().map(data_text).unwrap_or_default())
    )
}

/// Before a bulk action: how many tasks the filter matches in the states the action applies
/// to (counted, nothing changed), and a form that does it.
async fn confirm_matching(
    app: Shared,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    cancel: bool,
) -> Response {
    let Some(c) = caller(&app, &headers) else {
        return to_login();
    };
    let query = match query {
        Ok(Query(pairs)) => match ListQuery::from_pairs(pairs) {
            Ok(q) => q,
            Err(e) => return PageError::from(e).into_response(),
        },
        Err(e) => return PageError(StatusCode::BAD_REQUEST, e.body_text()).into_response(),
    };
    let filter = match query.steer_filter(&app.redact) {
        Ok(f) => f,
        Err(e) => return PageError::from(e).into_response(),
    };
    let count = if cancel {
        app.party.count_cancellable(&filter).await
    } else {
        app.party.count_retryable(&filter).await
    };
    let n = match count {
        Ok(n) => n,
        Err(e) => return PageError::from(e).into_response(),
    };
    let (verb, action) = if cancel {
        ("Cancel", "/tasks/cancel-matching")
    } else {
        ("Retry", "/tasks/retry-matching")
    };
    let data = filter.data.as_ref().map(data_text).unwrap_or_default();
    let back = tasks_url(&filter);
    let tasks = if n.counted == 1 && !n.more {
        "task"
    } else {
        "tasks"
    };
    let body = html! {
        h1 { (verb) " every matching task" }
        table id="matching" {
            tr { th { "State" } td { @match filter.state { Some(s) => (s.as_str()), None => { "any the action applies to (" (if cancel { "scheduled, retrying, dead" } else { "dead, cancelled, retrying" }) ")" } } } }
            tr { th { "Handler" } td { (filter.handler.as_deref().unwrap_or("any")) } }
            tr { th { "Queue" } td { (filter.queue.as_deref().unwrap_or("any")) } }
            tr { th { "Data field" } td { @if data.is_empty() { "any" } @else { code { (data) } } } }
        }
        @if n.counted == 0 && !n.partial {
            p id="count" { "No task matches: there is nothing to " (verb.to_lowercase()) "." }
        } @else {
            @if n.counted == 0 {
                p id="count" { "No task matches among the first " (party::policy::BULK_EXAMINED) " examined; more may match among the rest." }
            } @else {
                p id="count" { strong { (n) } " " (tasks) " will be " (if cancel { "cancelled" } else { "made due now" }) "." }
            }
            @if n.partial {
                p.muted id="partial" { "The data field was checked on the first " (party::policy::BULK_EXAMINED) " tasks in these states, live and finished; the action checks every one, so it may touch more." }
            }
            @if !cancel {
                p.muted { "A recurring task whose schedule already has a live copy is left as it is, so a retry may touch fewer." }
            }
            form method="post" action=(action) {
                input type="hidden" name="csrf" value=(c.csrf());
                input type="hidden" name="state" value=(filter.state.map(|s| s.as_str()).unwrap_or_default());
                input type="hidden" name="handler" value=(filter.handler.as_deref().unwrap_or_default());
                input type="hidden" name="queue" value=(filter.queue.as_deref().unwrap_or_default());
                input type="hidden" name="data" value=(data);
                button type="submit" id="confirm" {
                    @if n.partial { (verb) " every match" } @else { (verb) " " (n) " " (tasks) }
                }
            }
        }
        p { a href=(back) { "Back to the tasks" } }
    };
    Html(layout("confirm", Some(&c), false, body).into_string()).into_response()
}

async fn retry_matching(
    State(app): State<Shared>,
    headers: HeaderMap,
    form: Result<Form<MatchingForm>, FormRejection>,
) -> Response {
    steer_matching(app, headers, form, false).await
}

async fn cancel_matching(
    State(app): State<Shared>,
    headers: HeaderMap,
    form: Result<Form<MatchingForm>, FormRejection>,
) -> Response {
    steer_matching(app, headers, form, true).await
}

async fn steer_matching(
    app: Shared,
    headers: HeaderMap,
    form: Result<Form<MatchingForm>, FormRejection>,
    cancel: bool,
) -> Response {
    let Ok(Form(f)) = form else {
        return denied(Denied::Forged);
    };
    if let Err(d) = change(&app, &headers, f.csrf.as_deref()) {
        return denied(d);
    }
    let q = ListQuery {
        state: f.state,
        handler: f.handler,
        queue: f.queue,
        data: f.data,
        ..ListQuery::default()
    };
    let filter = match q.steer_filter(&app.redact) {
        Ok(f) => f,
        Err(e) => return PageError::from(e).into_response(),
    };
    let result = if cancel {
        app.party.cancel_matching(&filter).await
    } else {
        app.party.retry_matching(&filter).await
    };
    match result {
        Ok(_) => Redirect::to(&tasks_url(&filter)).into_response(),
        Err(e) => PageError::from(e).into_response(),
    }
}

/// How late a run may start after its occurrence before the ledger calls it late.
const LATE_AFTER: SignedDuration = SignedDuration::from_secs(60);

/// The most ledger rows a page shows (the latest).
const LEDGER_ROWS: usize = 100;

/// The occurrence ledger: each expected occurrence (the latest first) with its runs and a
/// verdict: ran, late, missed, doubled, failed, retrying (the live task's own occurrence, whose
/// attempts so far failed), or unexpected (a run the rule does not produce).
fn ledger(
    t: &TaskInfo,
    g: &party::recurrence::GapReport,
) -> (Vec<(Timestamp, String, &'static str)>, bool) {
    let mut by_occurrence: BTreeMap<Timestamp, Vec<&party::Run>> = BTreeMap::new();
    for r in &t.runs {
        by_occurrence.entry(r.timestamp).or_default().push(r);
    }
    let mut rows: Vec<(Timestamp, String, &'static str)> = Vec::new();
    for (ts, runs) in &by_occurrence {
        let ok = runs
            .iter()
            .filter(|r| r.outcome == party::Outcome::Succeeded)
            .count();
        let first = runs.iter().map(|r| r.started_at).min().unwrap_or(*ts);
        // The task's own occurrence while it is live: its attempts so far failed, but more
        // may come (it is retrying, or running again).
        let pending = *ts == t.timestamp
            && matches!(
                t.state,
                TaskState::Scheduled | TaskState::Running | TaskState::Retrying
            );
        let verdict = if g.unexpected.contains(ts) {
            "unexpected"
        } else if ok > 1 {
            "doubled"
        } else if ok == 0 && pending {
            "retrying"
        } else if ok == 0 {
            "failed"
        } else if first.duration_since(*ts) > LATE_AFTER {
            "late"
        } else {
            "ran"
        };
        let text = runs
            .iter()
            .map(|r| {
                format!(
                    "{} ({}, started {})",
                    r.outcome.as_str(),
                    r.attempt,
                    format_time(r.started_at)
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        rows.push((*ts, text, verdict));
    }
    for m in &g.missing {
        if !by_occurrence.contains_key(m) {
            rows.push((*m, "none".to_string(), "missed"));
        }
    }
    rows.sort_by_key(|r| std::cmp::Reverse(r.0));
    rows.truncate(LEDGER_ROWS);
    (rows, g.truncated)
}

/// The coming occurrences in the rule's time zone, noting a change of UTC offset (a DST
/// switch moved the wall clock) and a monthly day that a short month does not have.
fn calendar(rule: &Recurrence, upcoming: &[Timestamp]) -> Vec<(Timestamp, String, String)> {
    let tz = rule
        .tz
        .as_deref()
        .and_then(|z| jiff::tz::TimeZone::get(z).ok())
        .unwrap_or(jiff::tz::TimeZone::UTC);
    let mut out = Vec::new();
    let mut previous: Option<jiff::tz::Offset> = None;
    for t in upcoming {
        let z = t.to_zoned(tz.clone());
        let offset = z.offset();
        let mut note = String::new();
        if let Some(p) = previous.filter(|p| *p != offset) {
            note = format!("clocks change before this one: UTC offset {p} → {offset}");
        }
        if let party::recurrence::Rule::MonthlyOn { day, .. } = rule.rule {
            // A month without the day: the occurrence is on its last day instead (an
            // off-schedule first occurrence, given by `--at`, is not such a case).
            if i16::from(day) > i16::from(z.days_in_month()) && z.day() == z.days_in_month() {
                let sep = if note.is_empty() { "" } else { "; " };
                note.push_str(&format!(
                    "{sep}this month has no day {day}: runs on its last day"
                ));
            }
        }
        previous = Some(offset);
        out.push((*t, z.strftime("%Y-%m-%d %H:%M %Z").to_string(), note));
    }
    out
}

/// The add form's fields: every one text, as a browser sends them.
#[derive(Debug, Default, Deserialize)]
struct AddForm {
    #[serde(default)]
    csrf: Option<String>,
    /// `preview` from the form's preview button: check and show, write nothing.
    #[serde(default)]
    intent: String,
    #[serde(default)]
    handler: String,
    #[serde(default)]
    data: String,
    #[serde(default)]
    at: String,
    #[serde(default, rename = "in")]
    in_: String,
    #[serde(default)]
    every: String,
    #[serde(default)]
    cron: String,
    #[serde(default)]
    tz: String,
    #[serde(default)]
    monthly_on: String,
    #[serde(default)]
    at_time: String,
    #[serde(default)]
    queue: String,
}

impl AddForm {
    /// The task the form describes, through the same [`party::spec::TaskSpec`] checks as the
    /// API's.
    fn task(&self, now: Timestamp) -> Result<party::NewTask, TaskError> {
        let opt = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
        let data = match opt(&self.data) {
            Some(text) => Some(party::validate::data_text(
                &text,
                "{\"customer\": \"acme\"}",
            )?),
            None => None,
        };
        let monthly_on = match opt(&self.monthly_on) {
            Some(d) => Some(party::validate::whole_number(
                &d,
                "the day of the month",
                1,
                31,
                "31",
            )?),
            None => None,
        };
        party::spec::TaskSpec {
            handler: self.handler.trim().to_string(),
            data,
            at: opt(&self.at),
            in_: opt(&self.in_),
            every: opt(&self.every),
            cron: opt(&self.cron),
            tz: opt(&self.tz),
            monthly_on,
            at_time: opt(&self.at_time),
            queue: opt(&self.queue),
            ..party::spec::TaskSpec::default()
        }
        .new_task(now)
    }
}

fn add_page(
    app: &Shared,
    c: &Caller,
    form: &AddForm,
    message: Option<String>,
    preview: Option<Vec<Timestamp>>,
) -> Markup {
    let names = app.party.registry().names();
    let body = html! {
        h1 { "Add a task" }
        @if let Some(m) = &message { p.alert role="alert" id="add-error" { (m) } }
        form method="post" action="/add" id="add" {
            input type="hidden" name="csrf" value=(c.csrf());
            div.filters {
                label { "Handler" select name="handler" {
                    @for n in &names { option value=(n) selected[*n == form.handler] { (n) } }
                } }
                label { "Queue" input name="queue" placeholder="default" value=(form.queue); }
            }
            label { "Data (a JSON object)" br; textarea name="data" rows="5" cols="70" placeholder="{}" { (form.data) } }
            h2 { "When" }
            div.filters {
                label { "In (e.g. 90s, 2h)" input name="in" value=(form.in_); }
                label { "At (RFC 3339)" input name="at" placeholder="2027-01-31T09:00:00Z" value=(form.at); }
            }
            h2 { "Recurring (optional)" }
            div.filters {
                label { "Every" input name="every" placeholder="1h" value=(form.every); }
                label { "Cron" input name="cron" placeholder="0 9 * * MON-FRI" value=(form.cron); }
                label { "Monthly on day" input name="monthly_on" size="3" value=(form.monthly_on); }
                label { "at (HH:MM)" input name="at_time" size="6" value=(form.at_time); }
                label { "Time zone" input name="tz" placeholder="Europe/Berlin" value=(form.tz); }
            }
            p {
                // Posted like the form itself, so that neither the data nor the session's
                // token ends up in an address (history, proxy logs, a Referer).
                button type="submit" name="intent" value="preview" id="preview" { "Preview the rule" }
                " "
                button type="submit" id="save" { "Add the task" }
            }
        }
        @if let Some(times) = preview {
            h2 { "The next occurrences" }
            @if times.is_empty() { p.muted { "A one-off task: it runs once." } }
            ol id="preview-times" { @for t in &times { li { (format_time(*t)) } } }
        }
    };
    layout("add", Some(c), false, body)
}

async fn add_form(
    State(app): State<Shared>,
    headers: HeaderMap,
    query: Result<Query<AddForm>, QueryRejection>,
) -> Response {
    let Some(c) = caller(&app, &headers) else {
        return to_login();
    };
    let form = query.map(|Query(f)| f).unwrap_or_default();
    if form.handler.is_empty() {
        return Html(add_page(&app, &c, &form, None, None).into_string()).into_response();
    }
    preview(&app, &c, &form)
}

/// A preview: check everything, show the rule's next occurrences, write nothing.
fn preview(app: &Shared, c: &Caller, form: &AddForm) -> Response {
    let now = app.party.clock().now();
    match form.task(now) {
        Ok(t) => {
            // The runs the saved task will have: its first (at `at`, or the rule's first from
            // now, as an add decides it), then the rule's next ones after that.
            let times = t
                .recurrence
                .as_ref()
                .and_then(|r| {
                    let first = t.at.or_else(|| r.first_at_or_after(now))?;
                    Some(std::iter::once(first).chain(r.upcoming(first, 4)).collect())
                })
                .unwrap_or_default();
            Html(add_page(app, c, form, None, Some(times)).into_string()).into_response()
        }
        Err(e) => (
            crate::error::status_of(&e),
            Html(add_page(app, c, form, Some(e.to_string()), None).into_string()),
        )
            .into_response(),
    }
}

async fn add(
    State(app): State<Shared>,
    headers: HeaderMap,
    form: Result<Form<AddForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return denied(Denied::Forged);
    };
    if let Err(d) = change(&app, &headers, form.csrf.as_deref()) {
        return denied(d);
    }
    let Some(c) = caller(&app, &headers) else {
        return to_login();
    };
    if form.intent == "preview" {
        return preview(&app, &c, &form);
    }
    let now = app.party.clock().now();
    let result = match form.task(now) {
        Ok(t) => app.party.add(t).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(id) => Redirect::to(&format!("/tasks/{id}")).into_response(),
        Err(e) => (
            crate::error::status_of(&e),
            Html(add_page(&app, &c, &form, Some(e.to_string()), None).into_string()),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_calendar_notes_a_dst_switch_and_a_short_month() {
        let t = |s: &str| s.parse::<Timestamp>().unwrap();
        let cron = Recurrence::cron("30 2 * * *", Some("Europe/Berlin")).unwrap();
        // 2027-03-28 is the spring switch in Berlin: 02:30 does not exist that day.
        let times = cron.upcoming(t("2027-03-26T00:00:00Z"), 3);
        let cal = calendar(&cron, &times);
        assert!(cal[0].2.is_empty(), "{cal:?}");
        assert!(cal.iter().any(|c| c.2.contains("clocks change")), "{cal:?}");
        let monthly = Recurrence::monthly_on(31, "09:00", None).unwrap();
        let times = monthly.upcoming(t("2027-01-01T00:00:00Z"), 3);
        let cal = calendar(&monthly, &times);
        assert!(cal[0].2.is_empty());
        assert!(cal[1].2.contains("no day 31"), "{cal:?}");
    }
}
