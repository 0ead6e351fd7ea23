//! The JSON API under `/api/v1`: the same fields, checks and library calls as the command
//! line's `add`, `list --json`, `show --json`, `cancel`, `retry`, `next`, `gaps` and `stats
//! --json`. Described by [`crate::openapi::document`].

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post, put};
use party::spec::TaskSpec;
use party::{
    DataMatch, ListFilter, State as TaskState, SteerFilter, TaskError, TaskId, TaskInfo,
    format_time, validate,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Shared;
use crate::auth::{Access, Caller};
use crate::error::ApiError;
use crate::redact::Redaction;

/// The most tasks one bulk add takes.
pub(crate) const MAX_BULK: usize = 10_000;

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/tasks", get(list).post(add))
        .route("/tasks/bulk", post(add_bulk))
        .route("/tasks/{id}", get(show))
        .route("/tasks/{id}/cancel", post(cancel))
        .route("/tasks/{id}/retry", post(retry))
        .route("/tasks/{id}/next", get(next))
        .route("/tasks/{id}/gaps", get(gaps))
        .route("/tasks/{id}/runs", get(runs))
        .route("/stats", get(stats))
        .route("/queues", get(queues))
        .route("/queues/{name}/pause", post(pause_queue))
        .route("/queues/{name}/resume", post(resume_queue))
        .route("/queues/{name}/limits", put(limit_queue))
        .route("/openapi.json", get(openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

/// A path segment as text. One that does not decode (not UTF-8) is refused like any bad
/// input, with the API's JSON error, not the framework's plain text.
struct PathText(String);

impl<S: Send + Sync> FromRequestParts<S> for PathText {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(text)) => Ok(PathText(text)),
            Err(e) => Err(ApiError::bad_request(format!(
                "bad path: {}; ids are 24 hexadecimal characters and queue names UTF-8 text",
                e.body_text()
            ))),
        }
    }
}

type ApiResult = Result<Response, ApiError>;

fn reader(app: &Shared, headers: &HeaderMap) -> Result<Caller, ApiError> {
    Ok(app.auth.api(headers)?)
}

fn writer(app: &Shared, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let caller = app.auth.api(headers)?;
    app.auth.check_change(&caller, headers, None)?;
    debug_assert_eq!(caller.access, Access::Write);
    Ok(caller)
}

fn task_id(text: &str) -> Result<TaskId, ApiError> {
    Ok(text.parse::<TaskId>()?)
}

/// A task as `party cancel` and `party retry` answer it, redacted.
fn task_json(app: &Shared, task: &TaskInfo) -> Value {
    let mut v = serde_json::to_value(task).unwrap_or(Value::Null);
    app.redact.task(&mut v);
    v
}

/// A task with its latest runs as `party show --json` writes it ([`party::RecentTask::to_json`]),
/// redacted.
fn recent_json(app: &Shared, task: &party::RecentTask) -> Value {
    let mut v = task.to_json();
    app.redact.task(&mut v);
    v
}

fn body_text(body: &Bytes) -> Result<&str, ApiError> {
    std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("the request body is not UTF-8 text"))
}

async fn add(
    State(app): State<Shared>,
    headers: HeaderMap,
    uri: Uri,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    writer(&app, &headers)?;
    no_query(&uri)?;
    let body = body?;
    let spec = TaskSpec::from_json(body_text(&body)?)?;
    let task = spec.new_task(app.party.clock().now())?;
    let id = app.party.add(task).await?;
    let task = app.party.get(id).await?;
    Ok((StatusCode::CREATED, Json(task_json(&app, &task))).into_response())
}

async fn add_bulk(
    State(app): State<Shared>,
    headers: HeaderMap,
    uri: Uri,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    writer(&app, &headers)?;
    no_query(&uri)?;
    let body = body?;
    let text = body_text(&body)?;
    // Each task's own text goes through the one parser of a task (`TaskSpec::from_json`, as
    // `POST /tasks` and `add --from` use it): read as values first, a repeated field would
    // silently keep its last value.
    let items: Vec<Box<serde_json::value::RawValue>> = serde_json::from_str(text).map_err(|e| {
        ApiError::bad_request(format!(
            "{e}; the body is a JSON array of tasks like [{{\"handler\": \"noop\", \"data\": {{}}}}]"
        ))
    })?;
    if items.is_empty() || items.len() > MAX_BULK {
        return Err(ApiError::bad_request(format!(
            "give 1 to {MAX_BULK} tasks in one bulk add (got {})",
            items.len()
        )));
    }
    let now = app.party.clock().now();
    let tasks = items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            TaskSpec::from_json(item.get())
                .and_then(|spec| spec.new_task(now))
                .map_err(|e| TaskError::invalid(format!("task {}: {e}", i + 1)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let ids = app.party.add_many(tasks).await?;
    let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
    Ok((StatusCode::CREATED, Json(json!({ "ids": ids }))).into_response())
}

/// `GET /tasks`'s query (and the dashboard's task filters): every field optional, unknown
/// ones refused. A data filter is written `data.FIELD=VALUE`, or `data=FIELD=VALUE` as the
/// dashboard's form sends it.
#[derive(Debug, Default, Clone)]
pub(crate) struct ListQuery {
    pub(crate) state: Option<String>,
    pub(crate) handler: Option<String>,
    pub(crate) queue: Option<String>,
    /// `FIELD=VALUE`, as given.
    pub(crate) data: Option<String>,
    pub(crate) limit: Option<String>,
    pub(crate) cursor: Option<String>,
}

impl ListQuery {
    /// The query from its pairs, in any order; a parameter given twice, two data filters or
    /// an unknown name is refused.
    pub(crate) fn from_pairs(pairs: Vec<(String, String)>) -> Result<ListQuery, TaskError> {
        let mut q = ListQuery::default();
        for (name, value) in pairs {
            let (slot, value) = match name.as_str() {
                "state" => (&mut q.state, value),
                "handler" => (&mut q.handler, value),
                "queue" => (&mut q.queue, value),
                "limit" => (&mut q.limit, value),
                "cursor" => (&mut q.cursor, value),
                "data" => (&mut q.data, value),
                _ => match name.strip_prefix("data.") {
                    Some(field) => (&mut q.data, format!("{field}={value}")),
                    None => {
                        return Err(TaskError::invalid(format!(
                            "unknown query parameter {}: use state, handler, queue, \
                             data.FIELD, limit or cursor",
                            validate::quote(&name)
                        )));
                    }
                },
            };
            if slot.is_some() {
                return Err(TaskError::invalid(format!(
                    "{} is given twice (at most one data field): give each filter once",
                    validate::quote(&name)
                )));
            }
            *slot = Some(value);
        }
        Ok(q)
    }

    /// The library's filter, every value checked by [`party::validate`]; empty values are
    /// left out (as a form sends them).
    pub(crate) fn filter(&self, redact: &Redaction) -> Result<ListFilter, TaskError> {
        Ok(ListFilter {
            state: given(&self.state)
                .map(str::parse::<TaskState>)
                .transpose()?,
            handler: given(&self.handler)
                .map(|h| validate::handler_name(h).map(|()| h.to_string()))
                .transpose()?,
            queue: given(&self.queue)
                .map(|q| validate::queue_name(q).map(|()| q.to_string()))
                .transpose()?,
            data: self.data_match(redact)?,
            recurring: None,
            limit: Some(
                given(&self.limit)
                    .map(|l| validate::page_limit(l, "limit=100, then the next page's cursor"))
                    .transpose()?
                    .unwrap_or(party::policy::DEFAULT_LIST_LIMIT),
            ),
            cursor: given(&self.cursor).map(validate::list_cursor).transpose()?,
            until: None,
        })
    }

    /// The data filter, if one is given (an empty one counts as not given); never on a
    /// redacted field.
    pub(crate) fn data_match(&self, redact: &Redaction) -> Result<Option<DataMatch>, TaskError> {
        match self.data.as_deref() {
            Some(d) if !d.trim().is_empty() => {
                let m = validate::data_match(d)?;
                redact.check_filter(&m.field)?;
                Ok(Some(m))
            }
            _ => Ok(None),
        }
    }

    /// The filter of a bulk action on the tasks this query lists.
    pub(crate) fn steer_filter(&self, redact: &Redaction) -> Result<SteerFilter, TaskError> {
        let l = self.filter(redact)?;
        Ok(SteerFilter {
            state: l.state,
            handler: l.handler,
            queue: l.queue,
            data: l.data,
        })
    }
}

async fn list(
    State(app): State<Shared>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    reader(&app, &headers)?;
    let Query(pairs) = query?;
    let query = ListQuery::from_pairs(pairs)?;
    let page = app.party.list_page(&query.filter(&app.redact)?).await?;
    let next = page.next.map(|c| c.to_string());
    let tasks: Vec<Value> = page
        .tasks
        .iter()
        .map(|t| {
            let mut v = t.listing_json();
            app.redact.task(&mut v);
            v
        })
        .collect();
    Ok(Json(json!({ "tasks": tasks, "next_cursor": next })).into_response())
}

async fn show(
    State(app): State<Shared>,
    headers: HeaderMap,
    uri: Uri,
    PathText(id): PathText,
) -> ApiResult {
    reader(&app, &headers)?;
    no_query(&uri)?;
    let task = app
        .party
        .get_recent(task_id(&id)?, party::policy::RECENT_RUNS)
        .await?;
    Ok(Json(recent_json(&app, &task)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunsQuery {
    cursor: Option<String>,
    limit: Option<String>,
}

/// `GET /tasks/{id}/runs`: a page of the task's runs, newest first, after the cursor of the
/// page before (or of `GET /tasks/{id}`).
async fn runs(
    State(app): State<Shared>,
    headers: HeaderMap,
    PathText(id): PathText,
    query: Result<Query<RunsQuery>, QueryRejection>,
) -> ApiResult {
    reader(&app, &headers)?;
    let Query(query) = query?;
    let id = task_id(&id)?;
    let limit = match given(&query.limit) {
        Some(l) => validate::runs_limit(l, "limit=100, then the next page's cursor")?,
        None => party::policy::RECENT_RUNS,
    };
    let before = given(&query.cursor).map(validate::run_cursor).transpose()?;
    let page = app.party.runs_page(id, before, limit).await?;
    Ok(Json(json!({
        "runs": page.runs,
        "next_cursor": page.older.map(|c| c.to_string()),
        "runs_total": page.total.number(),
        "runs_total_exact": page.total.is_exact(),
    }))
    .into_response())
}

async fn cancel(
    State(app): State<Shared>,
    headers: HeaderMap,
    uri: Uri,
    PathText(id): PathText,
) -> ApiResult {
    writer(&app, &headers)?;
    no_query(&uri)?;
    let task = app.party.cancel(task_id(&id)?).await?;
    Ok(Json(task_json(&app, &task)).into_response())
}

async fn retry(
    State(app): State<Shared>,
    headers: HeaderMap,
    uri: Uri,
    PathText(id): PathText,
) -> ApiResult {
    writer(&app, &headers)?;
    no_query(&uri)?;
    let task = app.party.retry(task_id(&id)?).await?;
    Ok(Json(task_json(&app, &task)).into_response())
}

/// Refuse a query string on a route that takes none: a misspelt parameter must not be
/// dropped while the action runs.
fn no_query(uri: &Uri) -> Result<(), ApiError> {
    match uri.query().filter(|q| !q.is_empty()) {
        None => Ok(()),
        Some(q) => {
            let name = q.split(['&', '=']).next().unwrap_or(q);
            Err(ApiError::bad_request(format!(
                "unknown query parameter {}: this route takes none",
                validate::quote(name)
            )))
        }
    }
}

/// A query value as given; an empty one counts as not given (as a form sends it). Nothing
/// is trimmed: a value is judged exactly as the command line judges it.
fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NextQuery {
    count: Option<String>,
}

async fn next(
    State(app): State<Shared>,
    headers: HeaderMap,
    PathText(id): PathText,
    query: Result<Query<NextQuery>, QueryRejection>,
) -> ApiResult {
    reader(&app, &headers)?;
    let Query(query) = query?;
    let count = match query.count.as_deref() {
        Some(c) => validate::occurrence_count(c, "count=5")?,
        None => 5,
    };
    let times = app.party.next_occurrences(task_id(&id)?, count).await?;
    let times: Vec<String> = times.into_iter().map(format_time).collect();
    Ok(Json(times).into_response())
}

async fn gaps(
    State(app): State<Shared>,
    headers: HeaderMap,
    uri: Uri,
    PathText(id): PathText,
) -> ApiResult {
    reader(&app, &headers)?;
    no_query(&uri)?;
    let report = app.party.gaps(task_id(&id)?).await?;
    Ok(Json(report).into_response())
}

async fn stats(State(app): State<Shared>, headers: HeaderMap, uri: Uri) -> ApiResult {
    reader(&app, &headers)?;
    no_query(&uri)?;
    Ok(Json(app.party.stats().await?.to_json()).into_response())
}

async fn queues(State(app): State<Shared>, headers: HeaderMap, uri: Uri) -> ApiResult {
    reader(&app, &headers)?;
    no_query(&uri)?;
    Ok(Json(json!({ "queues": app.party.queues().await? })).into_response())
}

async fn pause_queue(
    State(app): State<Shared>,
    headers: HeaderMap,
    uri: Uri,
    PathText(name): PathText,
) -> ApiResult {
    writer(&app, &headers)?;
    no_query(&uri)?;
    app.party.pause_queue(&name).await?;
    Ok(Json(app.party.queue(&name).await?).into_response())
}

async fn resume_queue(
    State(app): State<Shared>,
    headers: HeaderMap,
    uri: Uri,
    PathText(name): PathText,
) -> ApiResult {
    writer(&app, &headers)?;
    no_query(&uri)?;
    app.party.resume_queue(&name).await?;
    Ok(Json(app.party.queue(&name).await?).into_response())
}

async fn limit_queue(
    State(app): State<Shared>,
    headers: HeaderMap,
    uri: Uri,
    PathText(name): PathText,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    writer(&app, &headers)?;
    no_query(&uri)?;
    let body = body?;
    let spec: party::queues::LimitsSpec = serde_json::from_str(body_text(&body)?).map_err(|e| {
        ApiError::bad_request(format!(
            "{e}; the body is an object like {{\"concurrency\": 2, \"rate\": \"10/1s\", \
             \"per\": \"data.customer\"}} ({{}} removes the limits)"
        ))
    })?;
    app.party.limit_queue(&name, &spec.limits()?).await?;
    Ok(Json(app.party.queue(&name).await?).into_response())
}

async fn openapi(State(app): State<Shared>, headers: HeaderMap, uri: Uri) -> ApiResult {
    reader(&app, &headers)?;
    no_query(&uri)?;
    Ok(Json(crate::openapi::document()).into_response())
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "this route does not take that method: GET /api/v1/openapi.json lists each route's",
    )
}

/// The answer to an address under `/api/v1/` that names no route.
pub(crate) async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such API route: GET /api/v1/openapi.json lists them",
    )
}
