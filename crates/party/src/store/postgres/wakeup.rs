//! Wake-ups across processes: the signal connection LISTENs for other processes' changes and
//! sends NOTIFY for ours, and probes itself when quiet, so a connection that died silently is
//! noticed and replaced, and the server session it leaves behind is ended.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Client};

use super::conn::{Pool, Target, open};
use super::error::{db_err, describe};
use super::sql::{Names, quote_ident};
use crate::TaskError;
use crate::policy::{WAKEUP_ANSWER, WAKEUP_PROBE_AFTER};

/// Longest wait between attempts to re-establish the listener connection.
pub(super) const LISTENER_MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The statement that probes a quiet signal connection: one round trip, nothing read.
const PROBE_SQL: &str = "SELECT 1";

/// Which server session a signal connection is: its process id and start time (together
/// they name one session, though the server reuses process ids). Asked before the `LISTEN`, on
/// its own: a server that hides `pg_stat_activity` costs only the clean-up below.
const SESSION_SQL: &str = "SELECT pg_backend_pid()::text, backend_start::text FROM pg_stat_activity \
     WHERE pid = pg_backend_pid()";

/// End the server session of a signal connection given up, if it is still there: a connection
/// that died silently (a firewall or NAT dropped the flow) leaves its session on the server,
/// holding a connection slot and the notification queue's tail, until the server's own TCP
/// keepalive finds it gone, two hours by default. Matched by process id and start time.
const END_SESSION_SQL: &str = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
     WHERE pid = $1::text::int AND backend_start = $2::text::timestamptz";

/// How the signal connection checks that it is still there: after `quiet` with nothing
/// received and nothing answered it sends a probe, and every statement on it (the probe, a
/// NOTIFY, the LISTEN of a (re)connect) must be answered within `answer`, or the connection is
/// taken as lost. [`WAKEUP_PROBE_AFTER`] and [`WAKEUP_ANSWER`] unless a test says otherwise.
#[derive(Debug, Clone, Copy)]
pub(super) struct Probe {
    pub(super) quiet: Duration,
    pub(super) answer: Duration,
}

impl Default for Probe {
    fn default() -> Probe {
        Probe {
            quiet: WAKEUP_PROBE_AFTER,
            answer: WAKEUP_ANSWER,
        }
    }
}

/// The signal connection: its client, a receiver that completes when the connection ends, a
/// signal for anything the server sent on its own, and the task driving the connection.
/// Dropping it stops that task, which closes the socket: a connection given up because it
/// stopped answering holds nothing afterwards.
pub(super) struct Signal {
    client: Client,
    closed: oneshot::Receiver<String>,
    /// Notified whenever a message (a notification, a notice) arrives.
    heard: Arc<Notify>,
    driver: JoinHandle<()>,
    /// The server session: process id and start time, as text (see [`SESSION_SQL`]); `None`
    /// when the server did not say.
    session: Option<(String, String)>,
}

impl Drop for Signal {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Run `sent`, a statement on the signal connection, allowing it `limit` for its answer;
/// the error says why it failed or that no answer came in time.
async fn answered(
    limit: Duration,
    sent: impl Future<Output = Result<(), tokio_postgres::Error>>,
) -> Result<(), String> {
    match tokio::time::timeout(limit, sent).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(describe(&e)),
        Err(_) => Err(format!(
            "no answer within {} s: the connection is taken as dead",
            limit.as_secs_f64()
        )),
    }
}

/// Open the signal connection (within the connect timeout) and LISTEN on the channel (within
/// `probe.answer`); returns once the server confirmed it. Notifications wake `wakeups`. The
/// connection commits its own NOTIFYs asynchronously: a notification needs no durability, so
/// it never waits for a disk flush.
pub(super) async fn listen(
    target: &Target,
    names: &Names,
    wakeups: &Arc<Notify>,
    probe: Probe,
) -> Result<Signal, TaskError> {
    let (client, mut connection) = open(target).await?;
    let (closed_tx, closed) = oneshot::channel();
    let wake = wakeups.clone();
    let heard = Arc::new(Notify::new());
    let heard_by_driver = heard.clone();
    let driver = tokio::spawn(async move {
        let why = loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(message)) => {
                    if let AsyncMessage::Notification(_) = message {
                        wake.notify_waiters();
                    }
                    heard_by_driver.notify_one();
                }
                Some(Err(e)) => break describe(&e),
                None => break "the connection closed".to_string(),
            }
        };
        let _ = closed_tx.send(why);
    });
    let mut signal = Signal {
        client,
        closed,
        heard,
        driver,
        session: None,
    };
    // A server that refuses the question leaves the session unknown; one that does not
    // answer in time is taken as gone, as for the `LISTEN` below.
    let session = match tokio::time::timeout(probe.answer, signal.client.simple_query(SESSION_SQL))
        .await
    {
        Ok(Ok(messages)) => messages.into_iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => match (row.get(0), row.get(1)) {
                (Some(pid), Some(start)) => Some((pid.to_string(), start.to_string())),
                _ => None,
            },
            _ => None,
        }),
        Ok(Err(e)) => {
            tracing::debug!(error = %describe(&e), "the signal connection's server session is not known");
            None
        }
        Err(_) => {
            return Err(TaskError::store(format!(
                "cannot listen for wake-ups on the PostgreSQL signal connection: no answer \
                 within {} s: the connection is taken as dead",
                probe.answer.as_secs_f64()
            )));
        }
    };
    let sql = format!(
        "SET synchronous_commit TO off; LISTEN {}",
        quote_ident(&names.channel)
    );
    answered(probe.answer, signal.client.batch_execute(&sql))
        .await
        .map_err(|why| {
            TaskError::store(format!(
                "cannot listen for wake-ups on the PostgreSQL signal connection: {why}"
            ))
        })?;
    signal.session = session;
    Ok(signal)
}

/// End `lost`, the server session of a signal connection given up, from `signal`, the one
/// that replaced it; a session already gone is left alone. A failure (a role that may not end
/// its own sessions, say) only costs the slot until the server notices by itself.
async fn end_lost_session(signal: &Signal, lost: Option<(String, String)>, answer: Duration) {
    let Some((pid, start)) = lost else {
        return;
    };
    let ended = answered(answer, async {
        signal
            .client
            .query(END_SESSION_SQL, &[&pid, &start])
            .await
            .map(|_| ())
    })
    .await;
    match ended {
        Ok(()) => tracing::debug!(pid, "ended the lost signal connection's server session"),
        Err(why) => {
            tracing::debug!(pid, error = %why, "cannot end the lost signal connection's server session")
        }
    }
}

/// The signal loop: send one NOTIFY per request (requests made while one is in flight share
/// the next), probe the connection once it has been quiet for `probe.quiet`, and
/// re-establish it with backoff when it drops or a statement goes unanswered for
/// `probe.answer`. Once back, it wakes this process's workers and notifies the others, so
/// everyone looks again and nothing that happened meanwhile is missed.
pub(super) async fn signal_loop(
    target: Target,
    names: Names,
    wakeups: Arc<Notify>,
    requests: Arc<Notify>,
    probe: Probe,
    mut signal: Signal,
) {
    let notify_sql = format!("NOTIFY {}", quote_ident(&names.channel));
    loop {
        let why = loop {
            // Starts over whenever something is heard or answered.
            let quiet = tokio::time::sleep(probe.quiet);
            tokio::select! {
                why = &mut signal.closed => break why.unwrap_or_default(),
                _ = signal.heard.notified() => {}
                _ = requests.notified() => {
                    let sent = signal.client.batch_execute(&notify_sql);
                    if let Err(why) = answered(probe.answer, sent).await {
                        break why;
                    }
                }
                _ = quiet => {
                    let sent = signal.client.batch_execute(PROBE_SQL);
                    if let Err(why) = answered(probe.answer, sent).await {
                        break why;
                    }
                }
            }
        };
        tracing::warn!(error = %why, "the PostgreSQL signal connection was lost; reconnecting");
        // Close it now: a connection that stopped answering may never end by itself.
        signal.driver.abort();
        let lost = signal.session.take();
        let mut delay = Duration::from_millis(100);
        signal = loop {
            tokio::time::sleep(delay).await;
            match listen(&target, &names, &wakeups, probe).await {
                Ok(s) => break s,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?delay, "cannot re-establish the PostgreSQL signal connection");
                    delay = (delay * 2).min(LISTENER_MAX_BACKOFF);
                }
            }
        };
        tracing::info!(channel = %names.channel, "the PostgreSQL signal connection is back");
        end_lost_session(&signal, lost, probe.answer).await;
        wakeups.notify_waiters();
        requests.notify_one();
    }
}

/// Behind a transaction pooler with no `listen_url` there is no signal connection: send each
/// requested NOTIFY on a pooled connection instead (requests made while one is in flight share
/// the next), so processes that do listen still hear of this one's tasks.
pub(super) async fn notify_loop(pool: Arc<Pool>, requests: Arc<Notify>) {
    let notify_sql = format!("NOTIFY {}", quote_ident(&pool.names.channel));
    loop {
        requests.notified().await;
        let sent = match pool.get().await {
            Ok(conn) => conn.client.batch_execute(&notify_sql).await.map_err(db_err),
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            tracing::debug!(error = %e, "a notification could not be sent");
        }
    }
}
