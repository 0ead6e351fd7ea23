//! Time that tests can drive: every part of party asks a [`Clock`] for "now" and for sleeps.
//!
//! [`SystemClock`] is the real one. [`ManualClock`] stands still until a test moves it, so
//! "every 30 days" is tested in milliseconds.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use tokio::sync::watch;

/// A boxed, sendable future, as returned by [`Clock::sleep_until`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A source of the current time and of sleeps until a given time.
pub trait Clock: Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> Timestamp;
    /// A future that completes once [`Clock::now`] is at or after `t`.
    fn sleep_until(&self, t: Timestamp) -> BoxFuture<'static, ()>;
    /// Whether this clock follows real time, so that a worker can compare it with the
    /// database server's before it starts ([`crate::policy::judge_clock_skew`]); `false` for
    /// [`ManualClock`], which tests set to any instant.
    fn is_real(&self) -> bool {
        true
    }
}

/// The system's wall clock, with tokio timers for sleeps.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn sleep_until(&self, t: Timestamp) -> BoxFuture<'static, ()> {
        let wait = t.duration_since(Timestamp::now());
        Box::pin(async move {
            if wait.is_positive() {
                tokio::time::sleep(wait.unsigned_abs()).await;
            }
        })
    }
}

/// A clock that moves only when told to: [`ManualClock::advance`] and [`ManualClock::set`]
/// wake every sleeper whose time has come. Cloning shares the same time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<watch::Sender<Timestamp>>,
}

impl ManualClock {
    /// A manual clock standing at `start`.
    pub fn new(start: Timestamp) -> ManualClock {
        ManualClock {
            now: Arc::new(watch::Sender::new(start)),
        }
    }

    /// Move the clock forward by `by` (a negative duration is refused with a panic: time in a
    /// test only moves forward).
    pub fn advance(&self, by: SignedDuration) {
        assert!(!by.is_negative(), "a manual clock only moves forward");
        self.now
            .send_modify(|t| *t = t.checked_add(by).expect("time in range"));
    }

    /// Set the clock to `t`, which must not be earlier than now.
    pub fn set(&self, t: Timestamp) {
        self.now.send_modify(|now| {
            assert!(t >= *now, "a manual clock only moves forward");
            *now = t;
        });
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.now.borrow()
    }

    fn is_real(&self) -> bool {
        false
    }

    fn sleep_until(&self, t: Timestamp) -> BoxFuture<'static, ()> {
        let mut rx = self.now.subscribe();
        Box::pin(async move {
            // The sender lives as long as any clone of the clock; if all are gone, never wake.
            if rx.wait_for(|now| *now >= t).await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }
}

/// Microseconds since the Unix epoch: how both backends store instants.
pub(crate) fn to_micros(t: Timestamp) -> i64 {
    t.as_microsecond()
}

/// The instant `micros` microseconds after the Unix epoch.
pub(crate) fn from_micros(micros: i64) -> Timestamp {
    Timestamp::from_microsecond(micros).unwrap_or(Timestamp::MAX)
}

/// RFC 3339 in UTC with exactly six fractional digits: `2026-11-29T04:03:11.123456Z`.
pub fn format_time(t: Timestamp) -> String {
    let micros = t.as_microsecond();
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let whole = Timestamp::from_second(secs).unwrap_or(t);
    format!("{}.{frac:06}Z", whole.strftime("%Y-%m-%dT%H:%M:%S"))
}

/// Serde helpers that write instants as [`format_time`] does.
pub mod serde_time {
    use jiff::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialize a timestamp as RFC 3339 UTC with microseconds.
    pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_time(*t))
    }

    /// Deserialize an RFC 3339 timestamp.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }

    /// The same for `Option<Timestamp>` (null when absent).
    pub mod option {
        use jiff::Timestamp;
        use serde::{Deserialize, Deserializer, Serializer};

        /// Serialize an optional timestamp.
        pub fn serialize<S: Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.serialize_str(&super::super::format_time(*t)),
                None => s.serialize_none(),
            }
        }

        /// Deserialize an optional timestamp.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
            let s = Option::<String>::deserialize(d)?;
            s.map(|s| s.parse().map_err(serde::de::Error::custom))
                .transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_has_six_fraction_digits() {
        let t: Timestamp = "2026-11-29T04:03:11.123456Z".parse().unwrap();
        assert_eq!(format_time(t), "2026-11-29T04:03:11.123456Z");
        let t: Timestamp = "2026-11-29T04:03:11Z".parse().unwrap();
        assert_eq!(format_time(t), "2026-11-29T04:03:11.000000Z");
        assert_eq!(from_micros(to_micros(t)), t);
    }

    #[tokio::test]
    async fn manual_clock_wakes_sleepers_only_when_advanced_far_enough() {
        let start: Timestamp = "2027-01-01T00:00:00Z".parse().unwrap();
        let clock = ManualClock::new(start);
        let target = start + SignedDuration::from_mins(30);
        let sleeper = tokio::spawn(clock.sleep_until(target));
        clock.advance(SignedDuration::from_mins(29));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance(SignedDuration::from_mins(1));
        sleeper.await.unwrap();
        assert_eq!(clock.now(), target);
    }
}
