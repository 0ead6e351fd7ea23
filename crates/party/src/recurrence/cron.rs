//! Cron expressions: parsing into bit sets, and finding the next matching wall-clock time.
//!
//! The matcher works on civil (wall-clock) date-times only; turning wall times into instants
//! in a time zone is the job of the calendar engine.

use jiff::civil::DateTime;

use super::wall::{Wall, days_in_month, weekday};

/// The accepted forms, repeated in messages about the overall shape.
const FORM: &str = "use 5 fields (minute hour day-of-month month day-of-week), or 6 with \
                    seconds first, like \"0 9 * * MON-FRI\" or \"*/30 * * * * *\", or one of \
                    @hourly @daily @weekly @monthly @yearly";

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const MONTH_NAMES: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// One field of the expression: its name, its value range, and the names it accepts.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    /// Names map to `min + index` (months start at 1, days of the week at 0).
    names: &'static [&'static str],
    /// The largest value `*` stands for (day-of-week `*` is 0-6: 7 would repeat Sunday).
    star_max: u32,
    /// `?` is accepted as a synonym of `*` (day fields only).
    question_mark: bool,
    /// Day-of-week: Sunday at the end of a range (`FRI-SUN`) counts as 7.
    sunday_wraps: bool,
}

const SECOND: Field = Field {
    name: "second",
    min: 0,
    max: 59,
    names: &[],
    star_max: 59,
    question_mark: false,
    sunday_wraps: false,
};
const MINUTE: Field = Field {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
    star_max: 59,
    question_mark: false,
    sunday_wraps: false,
};
const HOUR: Field = Field {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
    star_max: 23,
    question_mark: false,
    sunday_wraps: false,
};
const DOM: Field = Field {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
    star_max: 31,
    question_mark: true,
    sunday_wraps: false,
};
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &MONTHS,
    star_max: 12,
    question_mark: false,
    sunday_wraps: false,
};
/// Day of week: 0 and 7 are both Sunday; 7 is folded into 0 after parsing.
const DOW: Field = Field {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &DAYS,
    star_max: 6,
    question_mark: true,
    sunday_wraps: true,
};

/// A parsed cron expression: one bit per allowed value of each field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CronSpec {
    seconds: u64,
    minutes: u64,
    hours: u64,
    /// Bits 1..=31.
    dom: u64,
    /// Bits 1..=12.
    months: u64,
    /// Bits 0..=6, Sunday = 0.
    dow: u64,
    /// The day-of-month field starts with `*` (or is `?`).
    dom_star: bool,
    /// The day-of-week field starts with `*` (or is `?`).
    dow_star: bool,
}

impl CronSpec {
    /// Parses a cron expression; see the module docs of `recurrence` for the syntax.
    pub(crate) fn parse(expr: &str) -> Result<CronSpec, String> {
        let fail = |what: String| format!("invalid cron expression {expr:?}: {what}");
        let text = expr.trim();
        if text.is_empty() {
            return Err(fail(format!("it is empty; {FORM}")));
        }
        let expanded = if let Some(name) = text.strip_prefix('@') {
            match name.to_ascii_lowercase().as_str() {
                "yearly" | "annually" => "0 0 0 1 1 *",
                "monthly" => "0 0 0 1 * *",
                "weekly" => "0 0 0 * * 0",
                "daily" | "midnight" => "0 0 0 * * *",
                "hourly" => "0 0 * * * *",
                "reboot" => {
                    return Err(fail(
                        "@reboot is not a schedule; add a one-off task instead".to_string(),
                    ));
                }
                _ => return Err(fail(format!("unknown macro @{name}; {FORM}"))),
            }
        } else {
            text
        };
        let parts: Vec<&str> = expanded.split_whitespace().collect();
        let (sec, rest) = match parts.len() {
            5 => ("0", &parts[..]),
            6 => (parts[0], &parts[1..]),
            n => return Err(fail(format!("it has {n} fields; {FORM}"))),
        };
        let field = |f: &Field, t: &str| parse_field(f, t).map_err(fail);
        let (seconds, _) = field(&SECOND, sec)?;
        let (minutes, _) = field(&MINUTE, rest[0])?;
        let (hours, _) = field(&HOUR, rest[1])?;
        let (dom, dom_star) = field(&DOM, rest[2])?;
        let (months, _) = field(&MONTH, rest[3])?;
        let (mut dow, dow_star) = field(&DOW, rest[4])?;
        if dow & (1 << 7) != 0 {
            dow = (dow & !(1 << 7)) | 1;
        }
        let spec = CronSpec {
            seconds,
            minutes,
            hours,
            dom,
            months,
            dow,
            dom_star,
            dow_star,
        };
        spec.check_possible().map_err(fail)?;
        Ok(spec)
    }

    /// Refuses expressions whose days can never occur, such as the 30th of February.
    ///
    /// When both day fields are restricted a day matches either of them, and every day of the
    /// week occurs in every month, so such expressions always fire. Otherwise a day must match
    /// both, and a (month, day-of-month) pair that exists on some date also falls on every day
    /// of the week within the 400-year Gregorian cycle: only the pairs need checking.
    fn check_possible(&self) -> Result<(), String> {
        if !(self.dom_star || self.dow_star) {
            return Ok(());
        }
        let months: Vec<u32> = (1..=12).filter(|m| self.months & (1 << m) != 0).collect();
        let possible = months.iter().any(|&m| {
            // February has 29 days in leap years.
            let last = if m == 2 { 29 } else { days_in_month(2001, m) };
            (1..=last).any(|d| self.dom & (1 << d) != 0)
        });
        if possible {
            return Ok(());
        }
        let days: Vec<String> = (1..=31)
            .filter(|d| self.dom & (1 << d) != 0)
            .map(|d| d.to_string())
            .collect();
        let names: Vec<&str> = months
            .iter()
            .map(|&m| MONTH_NAMES[m as usize - 1])
            .collect();
        let (list, only) = match names.len() {
            1 => (names[0].to_string(), "the only month allowed"),
            _ => (
                format!(
                    "{} or {}",
                    names[..names.len() - 1].join(", "),
                    names[names.len() - 1]
                ),
                "the only months allowed",
            ),
        };
        Err(format!(
            "day-of-month {} never occurs in {list} ({only}); pick a day that exists in {} or \
             allow more months",
            days.join(","),
            if names.len() == 1 {
                "that month"
            } else {
                "those months"
            },
        ))
    }

    /// Whether a calendar day matches the day-of-month, month and day-of-week fields.
    ///
    /// Like Vixie cron: when either day field starts with `*`, a day must match both; when
    /// both are restricted, a day matching either one is enough.
    fn day_matches(&self, y: i32, m: u32, d: u32) -> bool {
        if self.months & (1 << m) == 0 {
            return false;
        }
        let dom_ok = self.dom & (1 << d) != 0;
        let dow_ok = self.dow & (1 << weekday(y, m, d)) != 0;
        if self.dom_star || self.dow_star {
            dom_ok && dow_ok
        } else {
            dom_ok || dow_ok
        }
    }

    /// The first matching wall time at or after `from` and strictly before `limit`.
    ///
    /// Jumps field by field (month, day, hour, minute, second), so the cost depends on the
    /// number of skipped days, not seconds; `limit` bounds the search.
    pub(crate) fn first_at_or_after(&self, from: DateTime, limit: DateTime) -> Option<DateTime> {
        let mut c = Wall::ceil(from)?;
        let end = Wall::floor(limit);
        loop {
            if c > end {
                return None;
            }
            if self.months & (1 << c.mo) == 0 {
                c.next_month();
                continue;
            }
            if !self.day_matches(c.y, c.mo, c.d) {
                c.next_day();
                continue;
            }
            match next_bit(self.hours, c.h) {
                None => {
                    c.next_day();
                    continue;
                }
                Some(h) if h != c.h => (c.h, c.mi, c.s) = (h, 0, 0),
                Some(_) => {}
            }
            match next_bit(self.minutes, c.mi) {
                None => {
                    c.next_hour();
                    continue;
                }
                Some(mi) if mi != c.mi => (c.mi, c.s) = (mi, 0),
                Some(_) => {}
            }
            match next_bit(self.seconds, c.s) {
                None => {
                    c.next_minute();
                    continue;
                }
                Some(s) => c.s = s,
            }
            let dt = c.to_datetime()?;
            return (dt < limit).then_some(dt);
        }
    }
}

/// The lowest set bit at position `from` or above.
fn next_bit(mask: u64, from: u32) -> Option<u32> {
    if from >= 64 {
        return None;
    }
    let rest = mask >> from;
    (rest != 0).then(|| from + rest.trailing_zeros())
}

/// Parses one field into a bit set; the flag says whether it starts with `*` (or is `?`).
fn parse_field(f: &Field, text: &str) -> Result<(u64, bool), String> {
    let name = f.name;
    let accepted = || {
        let mut s = format!(
            "{name} accepts *, a value {}-{}, a range a-b, a step */n or a-b/n, and lists of those \
             separated by commas",
            f.min, f.max
        );
        if !f.names.is_empty() {
            s.push_str(&format!(
                " (names {}-{} work too)",
                f.names[0],
                f.names[f.names.len() - 1]
            ));
        }
        s
    };
    let fail = |what: String| format!("{name} field {text:?}: {what}; {}", accepted());
    if text == "?" {
        if f.question_mark {
            return Ok((range_bits(f.min, f.star_max, 1), true));
        }
        return Err(fail(
            "? is only allowed in the day-of-month and day-of-week fields".into(),
        ));
    }
    let star = text.starts_with('*');
    let mut bits = 0u64;
    for part in text.split(',') {
        if part.is_empty() {
            return Err(fail("a list has an empty item".into()));
        }
        let (base, step) = match part.split_once('/') {
            Some((b, s)) => {
                let Some(step) = digits(s) else {
                    return Err(fail(format!("the step {s:?} is not a number")));
                };
                if step == 0 || step > f.max {
                    return Err(fail(format!("the step {step} is out of range 1-{}", f.max)));
                }
                (b, Some(step))
            }
            None => (part, None),
        };
        let (lo, hi) = if base == "*" {
            (f.min, f.star_max)
        } else if let Some((a, b)) = base.split_once('-') {
            let lo = value(f, a).map_err(fail)?;
            let mut hi = value(f, b).map_err(fail)?;
            // `FRI-SUN`: Sunday at the end of a range is day 7.
            if f.sunday_wraps && hi == 0 && lo > 0 {
                hi = 7;
            }
            if lo > hi {
                return Err(fail(format!(
                    "the range {base} runs backwards; write it from low to high, or as two \
                     ranges in a list"
                )));
            }
            (lo, hi)
        } else {
            let v = value(f, base).map_err(fail)?;
            // `a/n` means from a to the end of the field, every n.
            (v, if step.is_some() { f.max } else { v })
        };
        bits |= range_bits(lo, hi, step.unwrap_or(1));
    }
    Ok((bits, star))
}

/// One value: a number in range or a name (case-insensitive).
fn value(f: &Field, text: &str) -> Result<u32, String> {
    if let Some(i) = f.names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
        return Ok(f.min + i as u32);
    }
    if text.is_empty() {
        return Err("a value is missing".into());
    }
    match digits(text) {
        Some(v) if (f.min..=f.max).contains(&v) => Ok(v),
        Some(v) => Err(format!("{v} is out of range {}-{}", f.min, f.max)),
        None if is_quartz_extension(text) => Err(format!(
            "{text:?} uses L, W or #, which party does not support"
        )),
        None => Err(format!("cannot read {text:?}")),
    }
}

/// A number written in decimal digits only (no sign: no cron dialect takes one).
fn digits(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// `L`, `LW`, `15W`, `5L`, `MON#2`: day extensions of other cron dialects.
fn is_quartz_extension(text: &str) -> bool {
    let upper = text.to_ascii_uppercase();
    let head = upper.trim_end_matches(['L', 'W']);
    upper.contains('#') || (head.len() < upper.len() && head.chars().all(|c| c.is_ascii_digit()))
}

/// Bits `lo, lo+step, ...` up to `hi`.
fn range_bits(lo: u32, hi: u32, step: u32) -> u64 {
    (lo..=hi)
        .step_by(step as usize)
        .fold(0, |bits, v| bits | (1 << v))
}
