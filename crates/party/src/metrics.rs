//! A worker's own counters and histograms, written as Prometheus text (version 0.0.4). Give a
//! [`WorkerMetrics`] to [`crate::WorkerConfig::metrics`] and serve [`WorkerMetrics::render`]
//! (`party worker --metrics ADDR` does). Labels are handler, queue and outcome only: never a
//! task id or data, so the number of series stays bounded by the registered handlers and the
//! queues a worker takes from.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `party_runs_total` | counter | handler, queue, outcome |
//! | `party_run_duration_seconds` | histogram | handler, queue |
//! | `party_queue_wait_seconds` (start − when it became due) | histogram | handler, queue |
//! | `party_schedule_lag_seconds` (start − its `timestamp`) | histogram | handler, queue |
//! | `party_claims_total`, `party_claimed_tasks_total` | counter | |
//! | `party_lease_rescues_total` | counter | |
//! | `party_fence_refusals_total` (results refused: the claim was stale) | counter | |

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use crate::Outcome;

/// Bucket upper bounds, in seconds, of every histogram.
pub const BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 300.0,
];

#[derive(Debug, Clone, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        let secs = secs.max(0.0);
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += secs;
    }
}

type Labels = (String, String);

#[derive(Debug, Default)]
struct Figures {
    runs: BTreeMap<(String, String, &'static str), u64>,
    duration: BTreeMap<Labels, Histogram>,
    wait: BTreeMap<Labels, Histogram>,
    lag: BTreeMap<Labels, Histogram>,
    claims: u64,
    claimed: u64,
    rescues: u64,
    fence_refusals: u64,
}

/// A worker's counters and histograms; share one between the worker and whatever serves them.
#[derive(Debug, Default)]
pub struct WorkerMetrics {
    figures: Mutex<Figures>,
}

impl WorkerMetrics {
    /// Empty figures.
    pub fn new() -> WorkerMetrics {
        WorkerMetrics::default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut Figures) -> R) -> R {
        f(&mut self.figures.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// A claim returned `n` tasks.
    pub(crate) fn claimed(&self, n: usize) {
        self.with(|f| {
            f.claims += 1;
            f.claimed += n as u64;
        });
    }

    /// An attempt started `wait` seconds after it became due and `lag` seconds after its
    /// occurrence's timestamp.
    pub(crate) fn started(&self, handler: &str, queue: &str, wait: f64, lag: f64) {
        let key = (handler.to_string(), queue.to_string());
        self.with(|f| {
            f.wait.entry(key.clone()).or_default().observe(wait);
            f.lag.entry(key).or_default().observe(lag);
        });
    }

    /// An attempt ended with `outcome` after `secs` seconds.
    pub(crate) fn ran(&self, handler: &str, queue: &str, outcome: Outcome, secs: f64) {
        self.with(|f| {
            *f.runs
                .entry((handler.to_string(), queue.to_string(), outcome.as_str()))
                .or_default() += 1;
            f.duration
                .entry((handler.to_string(), queue.to_string()))
                .or_default()
                .observe(secs);
        });
    }

    /// Tasks released by this worker's rescue passes.
    pub(crate) fn rescued(&self, n: u64) {
        self.with(|f| f.rescues += n);
    }

    /// A result the store refused because its claim was stale.
    pub(crate) fn fence_refused(&self) {
        self.with(|f| f.fence_refusals += 1);
    }

    /// How many attempts ended with `outcome` for this handler and queue.
    pub fn runs(&self, handler: &str, queue: &str, outcome: Outcome) -> u64 {
        self.with(|f| {
            f.runs
                .get(&(handler.to_string(), queue.to_string(), outcome.as_str()))
                .copied()
                .unwrap_or(0)
        })
    }

    /// Every figure in Prometheus' text format.
    pub fn render(&self) -> String {
        let f = self.with(|f| {
            (
                f.runs.clone(),
                f.duration.clone(),
                f.wait.clone(),
                f.lag.clone(),
                [f.claims, f.claimed, f.rescues, f.fence_refusals],
            )
        });
        let (runs, duration, wait, lag, [claims, claimed, rescues, refusals]) = f;
        let mut out = String::new();
        head(
            &mut out,
            "party_runs_total",
            "counter",
            "Attempts run, by how they ended.",
        );
        for ((h, q, o), n) in &runs {
            let _ = writeln!(
                out,
                "party_runs_total{{handler=\"{}\",queue=\"{}\",outcome=\"{o}\"}} {n}",
                label(h),
                label(q)
            );
        }
        histogram(
            &mut out,
            "party_run_duration_seconds",
            "How long attempts ran.",
            &duration,
        );
        histogram(
            &mut out,
            "party_queue_wait_seconds",
            "From when a task became due to when its attempt started.",
            &wait,
        );
        histogram(
            &mut out,
            "party_schedule_lag_seconds",
            "From a task's scheduled timestamp to when its attempt started.",
            &lag,
        );
        for (name, help, v) in [
            ("party_claims_total", "Claims made.", claims),
            ("party_claimed_tasks_total", "Tasks claimed.", claimed),
            (
                "party_lease_rescues_total",
                "Tasks released by this worker's rescue passes after their lease ended.",
                rescues,
            ),
            (
                "party_fence_refusals_total",
                "Results the store refused because the claim was stale.",
                refusals,
            ),
        ] {
            head(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {v}");
        }
        out
    }
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn histogram(out: &mut String, name: &str, help: &str, series: &BTreeMap<Labels, Histogram>) {
    head(out, name, "histogram", help);
    for ((h, q), hist) in series {
        let labels = format!("handler=\"{}\",queue=\"{}\"", label(h), label(q));
        for (le, n) in BUCKETS.iter().zip(hist.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", hist.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", hist.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", hist.count);
    }
}

/// A label value escaped as the text format asks (backslash, quote, newline).
pub fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_render_as_prometheus_text() {
        let m = WorkerMetrics::new();
        m.claimed(3);
        m.started("send", "mail", 0.002, 1.5);
        m.ran("send", "mail", Outcome::Succeeded, 0.02);
        m.ran("send", "mail", Outcome::Failed, 7.0);
        m.fence_refused();
        m.rescued(2);
        let text = m.render();
        assert!(text.contains(
            "party_runs_total{handler=\"send\",queue=\"mail\",outcome=\"succeeded\"} 1\n"
        ));
        assert!(
            text.contains(
                "party_runs_total{handler=\"send\",queue=\"mail\",outcome=\"failed\"} 1\n"
            )
        );
        assert!(text.contains(
            "party_run_duration_seconds_bucket{handler=\"send\",queue=\"mail\",le=\"0.025\"} 1\n"
        ));
        assert!(text.contains(
            "party_run_duration_seconds_bucket{handler=\"send\",queue=\"mail\",le=\"10\"} 2\n"
        ));
        assert!(
            text.contains("party_run_duration_seconds_count{handler=\"send\",queue=\"mail\"} 2\n")
        );
        assert!(text.contains(
            "party_schedule_lag_seconds_bucket{handler=\"send\",queue=\"mail\",le=\"1\"} 0\n"
        ));
        assert!(text.contains(
            "party_schedule_lag_seconds_bucket{handler=\"send\",queue=\"mail\",le=\"2.5\"} 1\n"
        ));
        assert!(text.contains("party_claims_total 1\n"));
        assert!(text.contains("party_claimed_tasks_total 3\n"));
        assert!(text.contains("party_lease_rescues_total 2\n"));
        assert!(text.contains("party_fence_refusals_total 1\n"));
        assert_eq!(m.runs("send", "mail", Outcome::Failed), 1);
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
