//! The heartbeat: renews the leases of the tasks this worker holds, records the worker as live
//! until its own lease ends, and stops attempts whose lease was lost. Beside it, the
//! cancellation check passes a person's cancel of a running task to its attempt.

use std::sync::Arc;
use std::time::Duration;

use super::Inner;
use crate::model::WorkerInfo;
use crate::policy;
use crate::store::HeartbeatParams;
use crate::task::CancelStage;
use crate::{TaskError, TaskId};

impl Inner {
    /// This worker's row, live from `now` until its own lease ends.
    fn info(&self, now: jiff::Timestamp) -> WorkerInfo {
        WorkerInfo {
            id: self.id.clone(),
            handlers: self.handlers.clone(),
            queues: self.config.queues.clone(),
            last_seen: now,
            live_until: now + self.config.lease,
        }
    }

    /// Record the starting worker as live, refusing to start beside a live worker with the
    /// same id: the two would share one row (one's stop removing the other's liveness), one
    /// leadership of the maintenance services (both running them at once, and one's stop
    /// resigning the other's) and one name in the run history.
    pub(super) async fn register(&self) -> Result<(), TaskError> {
        let now = self.clock.now();
        match self.store.worker_register(&self.info(now), now).await? {
            None => Ok(()),
            Some(live_until) => Err(TaskError::invalid(format!(
                "another worker with the id {} is running (live until {}, renewed while it \
                 runs): give each worker its own id (WorkerConfig::id), or leave the id out \
                 for a generated one; a worker that was killed gives its id up when its \
                 liveness ends",
                crate::validate::quote(&self.id),
                crate::clock::format_time(live_until),
            ))),
        }
    }

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
        let info = self.info(now);
        let lease_until = info.live_until;
        let beat = self
            .store
            .task_heartbeat(HeartbeatParams {
                worker: &info,
                tasks: &held,
                lease_until,
                now,
            })
            .await?;
        let mut lost_claims = Vec::new();
        let mut books = self.held.lock().unwrap();
        for (id, fence) in held {
            if beat.lost.contains(&id) {
                lost_claims.push((id, fence));
            } else if beat.unrenewed.contains(&id) {
                // Still held, but its lease stands as last renewed: the attempt stops when
                // that ends unless a later heartbeat renews it.
            } else if let Some(h) = books.get_mut(&id).filter(|h| h.fence == fence) {
                h.lease_until = h.lease_until.max(lease_until);
            }
        }
        Ok(lost_claims)
    }

    /// Give up the attempts whose lease ended with no renewal this worker heard of (the store
    /// unreachable, or slower than the lease): the task may be rescued and run elsewhere now,
    /// so ours must stop. A result already on its way is left to its write, which is fenced.
    fn give_up_expired(&self) {
        let now = self.clock.now();
        let expired: Vec<(TaskId, super::Held)> = {
            let mut held = self.held.lock().unwrap();
            let ids: Vec<TaskId> = held
                .iter()
                .filter(|(_, h)| !h.finishing && h.lease_until <= now)
                .map(|(id, _)| *id)
                .collect();
            ids.into_iter()
                .filter_map(|id| held.remove(&id).map(|h| (id, h)))
                .collect()
        };
        for (id, h) in expired {
            tracing::warn!(worker = %self.id, task = %id, "lease ended without a renewal (the store did not answer in time); stopping our attempt");
            if let Some(abort) = h.abort {
                abort.abort();
            }
        }
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

/// Look for cancellation requests of the held tasks every [`policy::CANCEL_CHECK`]: each one
/// found is passed to its attempt's context at once, and enforced (the attempt dropped) after
/// the worker's grace period.
pub(super) async fn cancellations(inner: Arc<Inner>) {
    let mut ticker = tokio::time::interval(policy::CANCEL_CHECK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let running: Vec<(TaskId, i64)> = inner
            .held
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, h)| !h.finishing && h.cancel.stage() == CancelStage::None)
            .map(|(id, h)| (*id, h.fence))
            .collect();
        if running.is_empty() {
            continue;
        }
        let requested = match inner.store.task_cancel_requested(&running).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(worker = %inner.id, error = %e, "looking for cancelled tasks failed; retrying");
                continue;
            }
        };
        for (id, fence) in running.into_iter().filter(|(id, _)| requested.contains(id)) {
            let cancel = inner.cancel_of(id, fence);
            cancel.advance(CancelStage::Requested);
            let grace = inner.config.shutdown_grace;
            tracing::info!(worker = %inner.id, task = %id, ?grace, "cancelled while running: the handler is told, and stopped after the grace period");
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                cancel.advance(CancelStage::Enforced);
            });
        }
    }
}

/// Every tenth of the lease, give up the attempts whose lease ended unrenewed
/// ([`Inner::give_up_expired`]); apart from the heartbeat, so a heartbeat that hangs cannot
/// hold it back.
pub(super) async fn give_up(inner: Arc<Inner>) {
    let every = (inner.config.lease / 10).max(Duration::from_millis(10));
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        inner.give_up_expired();
    }
}

/// Renew leases every third of the lease, for as long as the worker runs: until `stop` says
/// so, between beats.
pub(super) async fn heartbeat(inner: Arc<Inner>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let every = (inner.config.lease / 3).max(Duration::from_millis(10));
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    loop {
        // Stopped between beats only: a beat once sent is seen through.
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
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
