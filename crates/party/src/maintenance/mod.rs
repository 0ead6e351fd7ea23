//! Maintenance services: background work every store needs, written once above the storage
//! seam. Each service has the same shape: a config with defaults, an interval, and a
//! `run_once` that does one pass (tests call it directly, with a [`crate::ManualClock`]).
//!
//! [`Maintenance`] runs a set of services in a worker. Across every process sharing a store,
//! only one runs each service at a time: the one holding that service's leadership, a row in
//! the store that its holder renews each interval and that others take over once it has
//! lapsed (for three intervals). A pass by a non-leader is still safe (every write is fenced);
//! leadership only avoids doing the same work many times. On SQLite the same code elects one of
//! the processes sharing the file.
//!
//! Services: [`Rescuer`] (tasks whose worker stopped renewing their lease) and [`Pruner`]
//! (finished tasks and run rows past their retention). Every
//! `Worker` runs them; `Worker::run_until_idle` also runs a rescue pass before it calls a store
//! idle, so a task stuck under an expired lease is never waited past.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::TaskError;
use crate::clock::Clock;
use crate::store::{LeaderParams, Store};

mod prune;
mod rescue;

pub use prune::{PruneConfig, PruneReport, Pruner};
pub use rescue::{RescueConfig, RescueReport, Rescuer};

/// A maintenance service: one pass at a time, every `interval`.
pub trait Service: Send + Sync + 'static {
    /// The service's name: its leadership row in the store.
    fn name(&self) -> &'static str;
    /// Time between passes.
    fn interval(&self) -> Duration;
    /// One pass; returns how many things it changed (for the log).
    fn pass(&self) -> Pin<Box<dyn Future<Output = Result<u64, TaskError>> + Send + '_>>;
}

/// Runs services on their intervals, each only while this process leads it.
pub struct Maintenance {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    holder: String,
    services: Vec<Box<dyn Service>>,
}

impl std::fmt::Debug for Maintenance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maintenance")
            .field("holder", &self.holder)
            .field(
                "services",
                &self.services.iter().map(|s| s.name()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Maintenance {
    /// Services run on behalf of `holder` (a worker id).
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, holder: String) -> Maintenance {
        Maintenance {
            store,
            clock,
            holder,
            services: Vec::new(),
        }
    }

    /// Add a service.
    pub fn with(mut self, service: impl Service) -> Maintenance {
        self.services.push(Box::new(service));
        self
    }

    /// Try to lead `service` for three of its intervals from now. Returns whether this holder
    /// leads it.
    ///
    /// # Errors
    /// [`TaskError::Store`] when the store fails.
    pub async fn elect(&self, service: &dyn Service) -> Result<bool, TaskError> {
        let now = self.clock.now();
        let term = jiff::SignedDuration::try_from(service.interval() * 3)
            .unwrap_or(jiff::SignedDuration::from_secs(60));
        self.store
            .leader_elect(LeaderParams {
                name: service.name(),
                holder: &self.holder,
                now,
                until: now.saturating_add(term).unwrap_or(now),
            })
            .await
    }

    /// Run every service on its interval until the future is dropped. Leadership lapses by
    /// itself three intervals after the last renewal; [`Maintenance::resign`] ends it at once.
    pub async fn run(self) {
        self.run_until(std::future::pending()).await;
    }

    /// As [`Maintenance::run`], until `stop` completes; then return once every service's loop
    /// has ended, so that a [`Maintenance::resign`] after it is the last word: an election in
    /// flight is waited for (it could otherwise land after the resignation and hold the
    /// service for three intervals), a pass in progress is dropped. While a pass runs, its
    /// leader renews its term every interval, so a pass longer than the term keeps one leader;
    /// one that loses the leadership meanwhile stops its pass.
    pub async fn run_until(self, stop: impl Future<Output = ()> + Send) {
        let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
        let this = Arc::new(self);
        let mut loops = tokio::task::JoinSet::new();
        for i in 0..this.services.len() {
            let this = this.clone();
            let mut stopping = stopping.clone();
            loops.spawn(async move {
                let service = &*this.services[i];
                let mut ticker = tokio::time::interval(service.interval());
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = ticker.tick() => {}
                        _ = stopping.wait_for(|s| *s) => return,
                    }
                    // Not cut short by a stop: see above.
                    let led = this.elect(service).await;
                    if *stopping.borrow() {
                        return;
                    }
                    match led {
                        Ok(true) => {
                            let renewing = renew_while_passing(&this, service, &mut stopping);
                            tokio::select! {
                                r = service.pass() => match r {
                                    Ok(0) => {}
                                    Ok(n) => tracing::info!(service = service.name(), changed = n, "maintenance pass"),
                                    Err(e) => tracing::warn!(service = service.name(), error = %e, "maintenance pass failed; retrying"),
                                },
                                why = renewing => match why {
                                    Renewal::Stop => return,
                                    Renewal::Lost => tracing::warn!(service = service.name(), "leadership lost during a pass; the pass stops"),
                                },
                            }
                        }
                        Ok(false) => {}
                        Err(e) => tracing::warn!(service = service.name(), error = %e, "leader election failed; retrying"),
                    }
                }
            });
        }
        tokio::select! {
            () = stop => {}
            // Every loop ended by itself (a panic): nothing to stop.
            _ = async { while loops.join_next().await.is_some() {} } => return,
        }
        let _ = stopping_tx.send(true);
        while loops.join_next().await.is_some() {}
    }

    /// Give up every leadership this holder has, so another process takes over at once.
    ///
    /// # Errors
    /// [`TaskError::Store`] when the store fails.
    pub async fn resign(store: &dyn Store, holder: &str) -> Result<(), TaskError> {
        store.leader_resign(holder).await
    }
}

/// Why a pass's renewals ended.
enum Renewal {
    /// The maintenance is stopping.
    Stop,
    /// Another holder leads the service now.
    Lost,
}

/// Renew `service`'s leadership every interval while its pass runs; ends when the maintenance
/// stops or the leadership is lost. A renewal in flight is not cut short by a stop.
async fn renew_while_passing(
    this: &Maintenance,
    service: &dyn Service,
    stopping: &mut tokio::sync::watch::Receiver<bool>,
) -> Renewal {
    loop {
        tokio::select! {
            () = tokio::time::sleep(service.interval()) => {}
            _ = stopping.wait_for(|s| *s) => return Renewal::Stop,
        }
        match this.elect(service).await {
            Ok(true) => {}
            Ok(false) => return Renewal::Lost,
            Err(e) => {
                tracing::warn!(service = service.name(), error = %e, "renewing the leadership during a pass failed; retrying")
            }
        }
        if *stopping.borrow() {
            return Renewal::Stop;
        }
    }
}
