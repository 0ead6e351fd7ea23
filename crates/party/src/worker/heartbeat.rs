//! The heartbeat: renews the leases of the tasks this worker holds, records the worker as live
//! until its own lease ends, and stops attempts whose lease was lost.

use std::sync::Arc;
use std::time::Duration;

use super::Inner;
use crate::model::WorkerInfo;
use crate::store::HeartbeatParams;
use crate::{TaskError, TaskId};

impl Inner {
    /// Renew the leases of the held tasks; returns the ones lost, with the fence presented.
    pub(super) async fn beat(&self) -> Result<Vec<(TaskId, i64)>, TaskError> {
        let held: Vec<(TaskId, i64)> = self
            .held
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (*k, v.fence))
            .collect();
        let now = self.clock.now();
        let lease_until = now + self.config.lease;
        let info = WorkerInfo {
            id: self.id.clone(),
            handlers: self.handlers.clone(),
            queues: self.config.queues.clone(),
            last_seen: now,
            live_until: lease_until,
        };
        let lost = self
            .store
            .task_heartbeat(HeartbeatParams {
                worker: &info,
                tasks: &held,
                lease_until,
                now,
            })
            .await?;
        Ok(held
            .into_iter()
            .filter(|(id, _)| lost.contains(id))
            .collect())
    }

    /// Forget a task the heartbeat reported lost, unless its result is already on its way to
    /// the store (then the write itself tells whether the claim still held) or it was claimed
    /// again meanwhile. Returns whether it was forgotten, stopping its attempt.
    pub(super) fn forget_lost(&self, id: TaskId, fence: i64) -> bool {
        let held = {
            let mut held = self.held.lock().unwrap();
            match held.get(&id) {
                Some(h) if h.fence == fence && !h.finishing => held.remove(&id),
                _ => return false,
            }
        };
        // Another worker owns the task now: stop our attempt; its result would be refused.
        if let Some(abort) = held.and_then(|h| h.abort) {
            abort.abort();
        }
        true
    }
}

/// Renew leases every third of the lease, for as long as the worker runs.
pub(super) async fn heartbeat(inner: Arc<Inner>) {
    let every = (inner.config.lease / 3).max(Duration::from_millis(10));
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        match inner.beat().await {
            Ok(lost) => {
                for (id, fence) in lost {
                    if inner.forget_lost(id, fence) {
                        tracing::warn!(worker = %inner.id, task = %id, "lease lost: the task was rescued by another worker; stopping our attempt");
                    }
                }
            }
            Err(e) => tracing::warn!(worker = %inner.id, error = %e, "heartbeat failed; retrying"),
        }
    }
}
