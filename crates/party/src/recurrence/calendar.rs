//! Calendar rules in a time zone: which wall-clock times match, and which instants they become.
//!
//! Architecture invariant: this is the only place that turns wall-clock times into instants.
//!
//! # How wall times become instants
//!
//! Between two transitions of a time zone the UTC offset is fixed, so the zone's timeline is a
//! sequence of segments, each mapping wall times to instants one to one. A matching wall time
//! becomes an instant as follows:
//!
//! - it falls in exactly one segment: that instant;
//! - it falls in two (the clock went back, a *fold*): the earlier segment's instant under
//!   [`Repeated::First`], the later one's under [`Repeated::Second`] — never both;
//! - it falls in none (the clock went forward, a *gap*): under [`Nonexistent::Shift`] it is read
//!   with the offset from before the gap, which lands as far past the gap's end as the wall time
//!   was past its start (02:30 in a 02:00→03:00 gap runs at 03:30); under
//!   [`Nonexistent::Skip`] it does not occur.
//!
//! [`Calendar::next_after`] walks segment by segment, so it never scans second by second, and
//! gives up after [`HORIZON_YEARS`] years.

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::{Offset, TimeZone};
use jiff::{SignedDuration, Timestamp};

use super::cron::CronSpec;
use super::wall::days_in_month;
use super::{Nonexistent, Repeated};

/// How far ahead a search looks before it concludes there is no next occurrence. Every valid
/// rule repeats within the 400-year Gregorian cycle, so a rule that finds nothing within it never
/// will (for example a cron that only names a wall time skipped by a DST gap, under
/// [`Nonexistent::Skip`]).
pub(crate) const HORIZON_YEARS: i16 = 401;

const ONE_NS: SignedDuration = SignedDuration::from_nanos(1);

/// Which wall-clock times a calendar rule matches.
#[derive(Clone, Debug)]
pub(crate) enum Matcher {
    /// A cron expression.
    Cron(CronSpec),
    /// A day of every month at a wall time; a day past the month's end is its last day.
    Monthly {
        /// 1..=31.
        day: u8,
        /// Wall time on that day.
        at: Time,
    },
}

impl Matcher {
    /// The first matching wall time at or after `from` and strictly before `limit`.
    fn first_at_or_after(&self, from: DateTime, limit: DateTime) -> Option<DateTime> {
        match self {
            Matcher::Cron(spec) => spec.first_at_or_after(from, limit),
            Matcher::Monthly { day, at } => {
                let (mut y, mut m) = (from.year(), from.month());
                // The candidate in `from`'s month may be earlier than `from`; the next
                // month's candidate never is.
                for _ in 0..2 {
                    let last = days_in_month(i32::from(y), m as u32) as i8;
                    let date = Date::new(y, m, (*day as i8).min(last)).ok()?;
                    let candidate = date.to_datetime(*at);
                    if candidate >= from {
                        return (candidate < limit).then_some(candidate);
                    }
                    (y, m) = if m == 12 {
                        (y.checked_add(1)?, 1)
                    } else {
                        (y, m + 1)
                    };
                }
                None
            }
        }
    }
}

/// A calendar rule bound to a time zone and the DST policies.
#[derive(Clone, Debug)]
pub(crate) struct Calendar {
    pub(crate) matcher: Matcher,
    pub(crate) tz: TimeZone,
    pub(crate) nonexistent: Nonexistent,
    pub(crate) repeated: Repeated,
}

impl Calendar {
    /// The first occurrence strictly after `t`, or `None` if there is none within
    /// [`HORIZON_YEARS`] years (or before the end of the representable range).
    pub(crate) fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let horizon = horizon_after(Offset::UTC.to_datetime(t));
        let mut probe = t;
        loop {
            let o = self.tz.to_offset(probe);
            // The segment holding `probe`: [start, end), with the offsets around it.
            let start = probe
                .checked_add(ONE_NS)
                .ok()
                .and_then(|p| self.tz.preceding(p).next())
                .map(|tr| tr.timestamp());
            let before = start
                .and_then(|s| s.checked_sub(ONE_NS).ok())
                .map(|s| self.tz.to_offset(s));
            let end = self
                .tz
                .following(probe)
                .next()
                .map(|tr| (tr.timestamp(), tr.offset()));

            // Wall times of this segment's own offset. A fold at either end belongs to one side.
            let mut lo = o.to_datetime(t).checked_add(ONE_NS).ok()?;
            if let (Some(s), Some(b)) = (start, before) {
                let own_lo = if b > o && self.repeated == Repeated::First {
                    b.to_datetime(s)
                } else {
                    o.to_datetime(s)
                };
                lo = lo.max(own_lo);
            }
            let mut hi = horizon;
            if let Some((e, after)) = end {
                let own_hi = if after < o && self.repeated == Repeated::Second {
                    after.to_datetime(e)
                } else {
                    o.to_datetime(e)
                };
                hi = hi.min(own_hi);
            }
            let regular = if lo < hi {
                self.matcher
                    .first_at_or_after(lo, hi)
                    .and_then(|w| o.to_timestamp(w).ok())
            } else {
                None
            };

            // Wall times skipped by a gap at the start of this segment, shifted into it.
            let shifted = match (start, before) {
                (Some(s), Some(b)) if b < o && self.nonexistent == Nonexistent::Shift => {
                    let g_lo = b
                        .to_datetime(s)
                        .max(b.to_datetime(t).checked_add(ONE_NS).ok()?);
                    let g_hi = o.to_datetime(s).min(horizon);
                    if g_lo < g_hi {
                        self.matcher
                            .first_at_or_after(g_lo, g_hi)
                            .and_then(|w| b.to_timestamp(w).ok())
                    } else {
                        None
                    }
                }
                _ => None,
            };

            match (regular, shifted) {
                (Some(a), Some(b)) => return Some(a.min(b)),
                (Some(a), None) | (None, Some(a)) => return Some(a),
                (None, None) => {}
            }
            let (e, _) = end?;
            if Offset::UTC.to_datetime(e) > horizon {
                return None;
            }
            probe = e;
        }
    }
}

/// [`HORIZON_YEARS`] after `dt`, capped at the last representable wall time.
fn horizon_after(dt: DateTime) -> DateTime {
    dt.year()
        .checked_add(HORIZON_YEARS)
        .filter(|y| *y <= 9999)
        .and_then(|y| Date::new(y, 1, 1).ok())
        .map_or(DateTime::MAX, |d| d.to_datetime(Time::midnight()))
}
