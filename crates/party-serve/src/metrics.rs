//! `GET /metrics`: the store's figures in Prometheus' text format (version 0.0.4), written by
//! hand. Labels carry handler names and states only: never a task id or data.

use std::collections::BTreeMap;
use std::fmt::Write;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::Shared;
use crate::error::ApiError;

use jiff::Timestamp;
use party::metrics::label;

pub(crate) async fn metrics(State(app): State<Shared>, headers: HeaderMap) -> Response {
    if !app.metrics_public {
        if let Err(d) = app.auth.page(&headers) {
            return ApiError::from(d).into_response();
        }
    }
    let (stats, queues) = match tokio::try_join!(app.party.stats(), app.party.queues()) {
        Ok(both) => both,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let now = app.party.clock().now();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP party_tasks Tasks by state.\n# TYPE party_tasks gauge"
    );
    for (state, n) in &stats.by_state {
        let _ = writeln!(out, "party_tasks{{state=\"{}\"}} {n}", state.as_str());
    }
    let _ = writeln!(
        out,
        "# HELP party_handler_tasks Tasks by handler and state.\n# TYPE party_handler_tasks gauge"
    );
    for c in &stats.by_handler {
        let _ = writeln!(
            out,
            "party_handler_tasks{{handler=\"{}\",state=\"{}\"}} {}",
            label(&c.handler),
            c.state.as_str(),
            c.count
        );
    }
    let _ = writeln!(
        out,
        "# HELP party_queue_tasks Tasks by queue and state.\n# TYPE party_queue_tasks gauge"
    );
    for q in &queues {
        for (state, n) in &q.counts {
            let _ = writeln!(
                out,
                "party_queue_tasks{{queue=\"{}\",state=\"{}\"}} {n}",
                label(&q.name),
                state.as_str()
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP party_queue_due_tasks Scheduled or retrying tasks due now, by queue.\n# TYPE party_queue_due_tasks gauge"
    );
    for q in &queues {
        let _ = writeln!(
            out,
            "party_queue_due_tasks{{queue=\"{}\"}} {}",
            label(&q.name),
            q.due
        );
    }
    let _ = writeln!(
        out,
        "# HELP party_queue_paused Whether a queue is paused (1) or not (0).\n# TYPE party_queue_paused gauge"
    );
    for q in &queues {
        let _ = writeln!(
            out,
            "party_queue_paused{{queue=\"{}\"}} {}",
            label(&q.name),
            u8::from(q.paused)
        );
    }
    let _ = writeln!(
        out,
        "# HELP party_oldest_due_age_seconds How long the longest-waiting due task has waited (0 when none waits).\n# TYPE party_oldest_due_age_seconds gauge"
    );
    let age = stats
        .oldest_due
        .map(|t| now.duration_since(t).as_secs_f64().max(0.0))
        .unwrap_or(0.0);
    let _ = writeln!(out, "party_oldest_due_age_seconds {age}");
    let _ = writeln!(
        out,
        "# HELP party_unhandled_due_tasks Due tasks whose handler no live worker has.\n# TYPE party_unhandled_due_tasks gauge"
    );
    for u in &stats.unhandled {
        let _ = writeln!(
            out,
            "party_unhandled_due_tasks{{handler=\"{}\",state=\"{}\"}} {}",
            label(&u.handler),
            u.state.as_str(),
            u.count
        );
    }
    let _ = writeln!(
        out,
        "# HELP party_live_workers Workers within their lease of a heartbeat.\n# TYPE party_live_workers gauge\nparty_live_workers {}",
        stats.workers.len()
    );
    let _ = writeln!(
        out,
        "# HELP party_finished_last_minute Attempts finished in the last minute.\n# TYPE party_finished_last_minute gauge\nparty_finished_last_minute {}",
        stats.finished_last_minute
    );
    let _ = writeln!(
        out,
        "# HELP party_stuck_tasks Running tasks whose lease ended without a rescue.\n# TYPE party_stuck_tasks gauge\nparty_stuck_tasks {}",
        stats.stuck_count
    );
    if let Err(e) = schedules(&app, &mut out).await {
        return ApiError::from(e).into_response();
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

/// One handler's live recurring tasks, folded.
#[derive(Default)]
struct Schedules {
    count: u64,
    never_succeeded: u64,
    stalest_success: Option<Timestamp>,
    missed: u64,
}

/// Per recurring schedule, folded by handler: a label names the handler only, never the data
/// that tells two schedules of one handler apart (it may hold anything, and every value would
/// be a time series of its own). So a handler's gauges are its live recurring tasks' count,
/// the oldest of their latest successes (the stalest schedule: one stuck schedule among many
/// still shows), how many never succeeded, and the sum of their missed occurrences within the
/// trailing [`party::policy::MISSED_WINDOW`] ([`party::Party::schedule_health`]; schedules
/// whose handler decides each next run have no rule to compare and count none). Reads at most
/// [`party::policy::RECURRING_LISTED`] tasks per live state (fewer when they pass
/// [`party::policy::PAGE_BYTES`]), and of each a bounded part of its
/// runs, however long its history.
async fn schedules(app: &crate::Shared, out: &mut String) -> Result<(), party::TaskError> {
    let (tasks, _) = crate::pages::live_recurring(app).await?;
    let health = app.party.schedule_health(&tasks).await?;
    let mut per: BTreeMap<String, Schedules> = BTreeMap::new();
    for (task, h) in tasks.iter().zip(health) {
        let s = per.entry(task.handler.clone()).or_default();
        s.count += 1;
        match h.last_success {
            Some(at) => s.stalest_success = Some(s.stalest_success.map_or(at, |o| o.min(at))),
            None => s.never_succeeded += 1,
        }
        s.missed += h.missing.len() as u64;
    }
    let _ = writeln!(
        out,
        "# HELP party_recurring_schedules Live recurring tasks per handler.\n# TYPE party_recurring_schedules gauge"
    );
    for (h, s) in &per {
        let _ = writeln!(
            out,
            "party_recurring_schedules{{handler=\"{}\"}} {}",
            label(h),
            s.count
        );
    }
    let _ = writeln!(
        out,
        "# HELP party_schedule_last_success_timestamp_seconds Per handler, the oldest of its live recurring tasks' latest successful runs (Unix time); schedules that never succeeded are counted in party_schedules_never_succeeded.\n# TYPE party_schedule_last_success_timestamp_seconds gauge"
    );
    for (h, s) in &per {
        if let Some(at) = s.stalest_success {
            let _ = writeln!(
                out,
                "party_schedule_last_success_timestamp_seconds{{handler=\"{}\"}} {}",
                label(h),
                at.as_microsecond() as f64 / 1e6
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP party_schedules_never_succeeded Live recurring tasks per handler with no successful run in their history.\n# TYPE party_schedules_never_succeeded gauge"
    );
    for (h, s) in &per {
        let _ = writeln!(
            out,
            "party_schedules_never_succeeded{{handler=\"{}\"}} {}",
            label(h),
            s.never_succeeded
        );
    }
    let _ = writeln!(
        out,
        "# HELP party_schedule_missed_occurrences Per handler, the occurrences its live recurring tasks' rules expected within the last {} hours (at most {} per task, the latest before its pending one, none before its first successful run) that have no successful run; party gaps compares a task's whole history.\n# TYPE party_schedule_missed_occurrences gauge",
        party::policy::MISSED_WINDOW.as_hours(),
        party::policy::MISSED_COMPARED_MAX
    );
    for (h, s) in &per {
        let _ = writeln!(
            out,
            "party_schedule_missed_occurrences{{handler=\"{}\"}} {}",
            label(h),
            s.missed
        );
    }
    Ok(())
}
