//! `GET /metrics`: the store's figures in Prometheus' text format (version 0.0.4), written by
//! hand. Labels carry handler names and states only: never a task id or data.

use std::fmt::Write;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::Shared;
use crate::error::ApiError;

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
