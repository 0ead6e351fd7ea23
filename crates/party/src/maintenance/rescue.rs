//! The rescuer: finds tasks whose lease ended without a heartbeat (their worker crashed, was
//! killed, froze or lost the network) and releases them, recording a `lost` run.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use jiff::SignedDuration;

use super::Service;
use crate::clock::{Clock, format_time};
use crate::policy::{self, Attempt, Ending};
use crate::store::{ExpiredParams, ExpiredTask, Finish, FinishResult, Store};
use crate::{TaskError, TaskId};

/// How the rescuer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RescueConfig {
    /// Time between passes (default 1 s).
    pub interval: Duration,
    /// Expired leases handled per pass (default [`policy::RESCUE_BATCH`]).
    pub batch: u32,
}

impl Default for RescueConfig {
    fn default() -> RescueConfig {
        RescueConfig {
            interval: Duration::from_secs(1),
            batch: policy::RESCUE_BATCH,
        }
    }
}

impl RescueConfig {
    /// The defaults, passing at least every third of `lease`, so a task of a worker with the
    /// same lease is rescued soon after its lease ends.
    pub fn for_lease(lease: Duration) -> RescueConfig {
        let d = RescueConfig::default();
        RescueConfig {
            interval: d.interval.min(lease / 3).max(Duration::from_millis(10)),
            ..d
        }
    }
}

/// What one rescue pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RescueReport {
    /// Tasks released: made due again, or dead when their attempts were used up.
    pub rescued: u64,
    /// Of those, the ones now dead.
    pub dead: Vec<TaskId>,
}

/// Releases tasks whose lease expired. Each is written as the lost attempt's result, fenced by
/// the claim it rescues and only while that lease is still over: a worker that renewed it or
/// finished meanwhile wins, and a rescue racing another rescue applies once.
#[derive(Clone)]
pub struct Rescuer {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    config: RescueConfig,
    metrics: Option<Arc<crate::metrics::WorkerMetrics>>,
}

impl std::fmt::Debug for Rescuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rescuer")
            .field("config", &self.config)
            .finish()
    }
}

impl Rescuer {
    /// A rescuer over `store`, reading time from `clock`.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, config: RescueConfig) -> Rescuer {
        Rescuer {
            store,
            clock,
            config,
            metrics: None,
        }
    }

    /// Count the tasks each pass releases in a worker's metrics.
    pub fn with_metrics(mut self, metrics: Option<Arc<crate::metrics::WorkerMetrics>>) -> Rescuer {
        self.metrics = metrics;
        self
    }

    /// One pass: release up to `batch` tasks whose lease ended before now.
    ///
    /// # Errors
    /// [`TaskError::Store`] when the store fails; nothing is half-written (the releases are
    /// one batch of fenced writes).
    pub async fn run_once(&self) -> Result<RescueReport, TaskError> {
        let now = self.clock.now();
        let expired = self
            .store
            .task_expired(ExpiredParams {
                now,
                limit: self.config.batch,
            })
            .await?;
        if expired.is_empty() {
            return Ok(RescueReport::default());
        }
        let finishes: Vec<Finish> = expired.iter().map(|t| lost(t, now)).collect();
        let results = self.store.task_finish(finishes.clone()).await?;
        let mut report = RescueReport::default();
        for (f, r) in finishes.iter().zip(results) {
            if r == FinishResult::Applied {
                report.rescued += 1;
                if f.next == crate::store::Next::Dead {
                    report.dead.push(f.id);
                }
            }
        }
        if report.rescued > 0 {
            if let Some(m) = &self.metrics {
                m.rescued(report.rescued);
            }
            tracing::warn!(
                count = report.rescued,
                "rescued tasks whose workers stopped renewing their leases"
            );
        }
        Ok(report)
    }
}

/// The lost attempt's result for a task whose lease ended, decided by the policy.
fn lost(t: &ExpiredTask, now: jiff::Timestamp) -> Finish {
    let finished_at = now.max(t.started_at);
    // A task a person cancelled while it ran is cancelled, not run again.
    let ending = if t.cancel_requested {
        Ending::Cancelled
    } else {
        Ending::Lost
    };
    let decision = policy::decide(
        ending,
        Attempt {
            attempts: t.attempts,
            max_attempts: t.max_attempts,
            started_at: t.started_at,
            finished_at,
        },
        |_| SignedDuration::ZERO,
    );
    Finish {
        id: t.id,
        fence: t.fence,
        attempt: t.attempts,
        timestamp: t.timestamp,
        started_at: t.started_at,
        finished_at,
        worker: t.worker.clone(),
        outcome: decision.outcome.unwrap_or(crate::Outcome::Lost),
        error: Some(format!(
            "worker {} lost its lease (it expired at {} without a heartbeat); the task was {}",
            t.worker,
            format_time(t.lease_until),
            if t.cancel_requested {
                "cancelled, as a person asked while it ran"
            } else {
                "rescued"
            }
        )),
        next: decision.next,
        follow_ups: Vec::new(),
        ran: true,
        expired_before: Some(now),
    }
}

impl Service for Rescuer {
    fn name(&self) -> &'static str {
        "rescue"
    }

    fn interval(&self) -> Duration {
        self.config.interval
    }

    fn pass(&self) -> Pin<Box<dyn Future<Output = Result<u64, TaskError>> + Send + '_>> {
        Box::pin(async move { Ok(self.run_once().await?.rescued) })
    }
}
