//! The completer: writes finished attempts in batches (group commit), counts what was
//! recorded, and lets go of the tasks it wrote.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};

use super::{Executed, Inner};
use crate::TaskError;
use crate::model::Outcome;
use crate::policy;
use crate::store::{Finish, FinishResult};

impl Inner {
    /// Count a written result in the worker's report and its metrics: only what the store
    /// recorded (a result refused as stale is counted as that, not as its run).
    fn count(&self, f: &Finish, r: &FinishResult, (handler, queue): &(String, String)) {
        match r {
            FinishResult::Applied if f.ran => {
                if let Some(m) = &self.config.metrics {
                    let secs = f.finished_at.duration_since(f.started_at).as_secs_f64();
                    m.ran(handler, queue, f.outcome, secs);
                }
                self.attempts.fetch_add(1, Ordering::Relaxed);
                let counter = match f.outcome {
                    Outcome::Succeeded => &self.succeeded,
                    Outcome::Cancelled => &self.cancelled,
                    Outcome::Failed | Outcome::TimedOut | Outcome::Lost => &self.failed,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            FinishResult::Applied | FinishResult::Duplicate(_) => {}
            FinishResult::Stale => {
                self.stale.fetch_add(1, Ordering::Relaxed);
                if let Some(m) = &self.config.metrics {
                    m.fence_refused();
                }
            }
        }
    }
}

/// Collect results and write them in batches until every executor has hung up. A write the
/// store refuses for good ([`TaskError::is_permanent`]) ends it with that error: the results
/// not written are dropped, and their tasks, still running under their claims, are rescued
/// when their leases end.
pub(super) async fn completer(
    inner: Arc<Inner>,
    mut rx: mpsc::UnboundedReceiver<Executed>,
    unrecorded: Arc<Semaphore>,
) -> Result<(), TaskError> {
    let max = inner.config.finish_batch;
    let places = super::unrecorded_places(&inner.config);
    let mut batch: Vec<Executed> = Vec::with_capacity(max);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        let deadline = tokio::time::Instant::now() + inner.config.flush_delay;
        while batch.len() < max {
            match rx.try_recv() {
                Ok(e) => batch.push(e),
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    // Every task this worker holds is already in the batch: nothing else can
                    // join it, so waiting would only delay the write.
                    let held = places - unrecorded.available_permits();
                    if batch.len() >= held {
                        break;
                    }
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(e)) => batch.push(e),
                        _ => break,
                    }
                }
            }
        }
        flush(&inner, &mut batch).await.map_err(|e| {
            let cause = match e {
                TaskError::Unusable(m) | TaskError::Store(m) => m,
                e => e.to_string(),
            };
            TaskError::Unusable(format!(
                "recording results failed, and no retry can make it pass: {cause}; the worker \
                 stopped, and the tasks whose results were not written run again once their \
                 leases end"
            ))
        })?;
    }
    Ok(())
}

/// Write `finishes`, retrying with backoff while the store fails for a while (unreachable,
/// busy, restarting): the tasks stay held, their leases renewed by the heartbeat. An error
/// no retry can fix is returned.
async fn write(inner: &Inner, mut finishes: Vec<Finish>) -> Result<Vec<FinishResult>, TaskError> {
    for f in &mut finishes {
        if let Some(error) = &mut f.error {
            policy::storable_text(error);
        }
    }
    let mut delay = Duration::from_millis(50);
    loop {
        match inner.store.task_finish(finishes.clone()).await {
            Ok(r) => return Ok(r),
            Err(e) if e.is_permanent() => {
                tracing::error!(worker = %inner.id, error = %e, "recording results failed, and no retry can make it pass; stopping");
                return Err(e);
            }
            Err(e) => {
                tracing::warn!(error = %e, "recording results failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Write one batch, retrying while the store fails for a while.
async fn flush(inner: &Inner, batch: &mut Vec<Executed>) -> Result<(), TaskError> {
    let finishes: Vec<Finish> = batch.iter().map(|e| e.finish.clone()).collect();
    let results = write(inner, finishes.clone()).await?;
    let mut retry_without_follow_ups = Vec::new();
    let mut retried_labels = Vec::new();
    for ((f, r), executed) in finishes.into_iter().zip(results).zip(batch.iter()) {
        inner.count(&f, &r, &executed.labels);
        match r {
            FinishResult::Applied => {}
            FinishResult::Stale => tracing::warn!(
                task = %f.id, fence = f.fence,
                "result refused: the claim is stale (the task was rescued or changed meanwhile)"
            ),
            FinishResult::Duplicate(e) => {
                tracing::warn!(task = %f.id, error = %e, "a follow-up task was refused; recording the attempt without it");
                let mut f = f;
                f.follow_ups.clear();
                let msg = format!("on_complete follow-up refused: {e}");
                f.error = Some(f.error.map_or(msg.clone(), |old| format!("{old}; {msg}")));
                retry_without_follow_ups.push(f);
                retried_labels.push(executed.labels.clone());
            }
        }
    }
    if !retry_without_follow_ups.is_empty() {
        // Retried like the first write: were it given up, the task would be rescued as lost
        // and its work, which succeeded, run again.
        let again = retry_without_follow_ups.clone();
        let results = write(inner, retry_without_follow_ups).await?;
        for ((f, r), labels) in again.iter().zip(results).zip(&retried_labels) {
            inner.count(f, &r, labels);
        }
    }
    {
        let mut held = inner.held.lock().unwrap();
        for e in batch.iter() {
            if held.get(&e.finish.id).map(|h| h.fence) == Some(e.finish.fence) {
                held.remove(&e.finish.id);
            }
        }
    }
    batch.clear();
    Ok(())
}
