//! Wake-ups across processes: the signal connection LISTENs for other processes' changes and
//! sends NOTIFY for ours.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tokio_postgres::{AsyncMessage, Client};

use super::conn::{Pool, Target, open};
use super::error::{db_err, describe};
use super::sql::{Names, quote_ident};
use crate::TaskError;

/// Longest wait between attempts to re-establish the listener connection.
pub(super) const LISTENER_MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The signal connection: its client, and a receiver that completes when the connection ends.
pub(super) struct Signal {
    pub(super) client: Client,
    pub(super) closed: oneshot::Receiver<String>,
}

/// Open the signal connection and LISTEN on the channel; returns once the server confirmed
/// it. Notifications wake `wakeups`. The connection commits its own NOTIFYs asynchronously:
/// a notification needs no durability, so it never waits for a disk flush.
pub(super) async fn listen(
    target: &Target,
    names: &Names,
    wakeups: &Arc<Notify>,
) -> Result<Signal, TaskError> {
    let (client, mut connection) = open(target).await?;
    let (closed_tx, closed) = oneshot::channel();
    let wake = wakeups.clone();
    tokio::spawn(async move {
        let why = loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(_))) => wake.notify_waiters(),
                Some(Ok(_)) => {}
                Some(Err(e)) => break describe(&e),
                None => break "the connection closed".to_string(),
            }
        };
        let _ = closed_tx.send(why);
    });
    client
        .batch_execute(&format!(
            "SET synchronous_commit TO off; LISTEN {}",
            quote_ident(&names.channel)
        ))
        .await
        .map_err(db_err)?;
    Ok(Signal { client, closed })
}

/// The signal loop: send one NOTIFY per request (requests made while one is in flight share
/// the next), and re-establish the connection with backoff when it drops. Once back, it wakes
/// this process's workers and notifies the others, so everyone looks again and nothing that
/// happened meanwhile is missed.
pub(super) async fn signal_loop(
    target: Target,
    names: Names,
    wakeups: Arc<Notify>,
    requests: Arc<Notify>,
    mut signal: Signal,
) {
    let notify_sql = format!("NOTIFY {}", quote_ident(&names.channel));
    loop {
        let why = loop {
            tokio::select! {
                why = &mut signal.closed => break why.unwrap_or_default(),
                _ = requests.notified() => {
                    if let Err(e) = signal.client.batch_execute(&notify_sql).await {
                        break describe(&e);
                    }
                }
            }
        };
        tracing::warn!(error = %why, "the PostgreSQL signal connection was lost; reconnecting");
        let mut delay = Duration::from_millis(100);
        signal = loop {
            tokio::time::sleep(delay).await;
            match listen(&target, &names, &wakeups).await {
                Ok(s) => break s,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?delay, "cannot re-establish the PostgreSQL signal connection");
                    delay = (delay * 2).min(LISTENER_MAX_BACKOFF);
                }
            }
        };
        tracing::info!(channel = %names.channel, "the PostgreSQL signal connection is back");
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
