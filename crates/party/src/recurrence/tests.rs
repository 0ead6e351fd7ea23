//! Tests for recurrence. Pure: every time is an argument, nothing reads the clock or sleeps.

use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, Offset, TimeZone};
use jiff::{SignedDuration, Timestamp};

use super::*;

fn ts(s: &str) -> Timestamp {
    s.parse()
        .unwrap_or_else(|e| panic!("bad test timestamp {s}: {e}"))
}

fn tss(list: &[&str]) -> Vec<Timestamp> {
    list.iter().map(|s| ts(s)).collect()
}

fn secs(n: i64) -> SignedDuration {
    SignedDuration::from_secs(n)
}

fn cron(expr: &str, tz: &str) -> Recurrence {
    Recurrence::cron(expr, Some(tz)).unwrap_or_else(|e| panic!("{e}"))
}

/// The wall-clock time of `t` in `zone`, as "YYYY-MM-DDTHH:MM:SS".
fn local(t: Timestamp, zone: &str) -> String {
    TimeZone::get(zone).unwrap().to_datetime(t).to_string()
}

// ---------------------------------------------------------------------------------------------
// Durations

#[test]
fn durations_accept_the_documented_forms() {
    let cases = [
        ("90s", 90),
        ("30m", 1_800),
        ("2h", 7_200),
        ("7d", 604_800),
        ("1w", 604_800),
        ("1h30m", 5_400),
        ("1d 12h", 129_600),
        ("  45s ", 45),
        ("1w2d3h4m5s", 604_800 + 2 * 86_400 + 3 * 3_600 + 4 * 60 + 5),
        ("2H", 7_200),
        ("0s", 0),
    ];
    for (text, want) in cases {
        assert_eq!(parse_duration(text), Ok(secs(want)), "{text}");
    }
}

#[test]
fn durations_refuse_bad_forms_saying_what_is_accepted() {
    let cases = [
        ("", "it is empty"),
        ("90", "90 has no unit"),
        ("1.5h", "only whole numbers"),
        ("-5m", "no sign"),
        ("30x", "unknown unit \"x\""),
        ("30min", "unknown unit \"min\""),
        ("1h1h", "the unit h appears twice"),
        ("30m1h", "hours come after minutes; put larger units first"),
        ("h", "expected a number"),
        ("99999999999999999999s", "too large"),
        ("200000w", "too large"),
    ];
    for (text, why) in cases {
        let err = parse_duration(text).unwrap_err();
        assert!(
            err.starts_with(&format!("invalid duration {text:?}: ")),
            "{err}"
        );
        assert!(err.contains(why), "{text}: {err}");
        assert!(
            err.contains("like 90s, 30m, 2h, 7d or 1w") && err.contains("1h30m"),
            "{err}"
        );
    }
}

#[test]
fn durations_format_the_way_they_parse() {
    assert_eq!(format_duration(secs(90)), "1m30s");
    assert_eq!(format_duration(secs(5_400)), "1h30m");
    assert_eq!(format_duration(secs(604_800)), "7d");
    assert_eq!(format_duration(secs(0)), "0s");
    assert_eq!(
        format_duration(SignedDuration::from_millis(1_500)),
        "1s500ms"
    );
    // Fractions of a second are written in the largest unit that shows them whole.
    assert_eq!(
        format_duration(SignedDuration::from_micros(1_500)),
        "1500us"
    );
    assert_eq!(format_duration(SignedDuration::from_micros(-250)), "-250us");
    assert_eq!(format_duration(SignedDuration::from_nanos(1_500)), "1500ns");
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..500 {
        let d = secs(rng.i64(0..=10 * 365 * 86_400));
        assert_eq!(parse_duration(&format_duration(d)), Ok(d));
    }
}

// ---------------------------------------------------------------------------------------------
// Building and validating rules

#[test]
fn constructors_refuse_bad_input_saying_what_to_do() {
    let err = Recurrence::monthly_on(0, "09:00", None).unwrap_err();
    assert!(err.contains("invalid day of month 0: use 1 to 31"), "{err}");
    let err = Recurrence::monthly_on(32, "09:00", None).unwrap_err();
    assert!(
        err.contains("invalid day of month 32: use 1 to 31") && err.contains("last day"),
        "{err}"
    );
    let err = Recurrence::monthly_on(1, "25:00", None).unwrap_err();
    assert_eq!(
        err,
        "invalid time \"25:00\": hour 25 is out of range 0-23; use HH:MM in 24-hour form, like \
         09:00 or 17:30"
    );
    for bad in [
        "9am", "09", "09:60", "09:00:61", "", "1:2:3:4", "-1:00", "09:", ":30", "009:00", "09:005",
    ] {
        let err = Recurrence::monthly_on(1, bad, None).unwrap_err();
        assert!(
            err.starts_with("invalid time") && err.contains("use HH:MM"),
            "{bad}: {err}"
        );
    }
    // One-digit hours and minutes are read too.
    assert_eq!(
        Recurrence::monthly_on(1, "9:05", None).unwrap().rule,
        Rule::MonthlyOn {
            day: 1,
            at: jiff::civil::time(9, 5, 0, 0)
        }
    );
    let err = Recurrence::cron("0 9 * * *", Some("Mars/Olympus")).unwrap_err();
    assert!(
        err.starts_with(
            "unknown time zone \"Mars/Olympus\": use an IANA zone name like Europe/Berlin"
        ),
        "{err}"
    );
    let err = Recurrence::monthly_on(1, "09:00", Some("Mars/Olympus")).unwrap_err();
    assert!(err.contains("unknown time zone"), "{err}");
    for d in [
        secs(0),
        secs(-60),
        SignedDuration::from_millis(1_500),
        secs(101 * 366 * 86_400),
    ] {
        let err = Recurrence::every(d).unwrap_err();
        assert!(
            err.contains("at least 1s and at most 100 years, in whole seconds"),
            "{err}"
        );
    }
    let utc = Recurrence::cron("0 9 * * *", Some("utc")).unwrap();
    assert_eq!(utc.tz.as_deref(), Some("UTC"));
    // Zone names are stored in their canonical spelling.
    let rec = Recurrence::cron("0  9 * *   *", Some("europe/berlin")).unwrap();
    assert_eq!(rec.tz.as_deref(), Some("Europe/Berlin"));
    assert_eq!(
        rec.rule,
        Rule::Cron {
            expr: "0 9 * * *".into()
        }
    );
}

#[test]
fn an_interval_may_be_anything_from_one_second_to_a_hundred_years() {
    let longest = secs(duration::MAX_SECONDS);
    assert_eq!(longest, secs(100 * 366 * 86_400));
    assert!(Recurrence::every(secs(1)).is_ok());
    assert!(Recurrence::every(longest).is_ok());
    assert!(Recurrence::every(longest + secs(1)).is_err());
    assert_eq!(parse_duration("36600d"), Ok(longest));
    assert!(parse_duration("36600d1s").is_err());
}

#[test]
fn cron_accepts_fields_lists_ranges_steps_names_and_macros() {
    let from = ts("2027-01-01T00:00:00Z"); // a Friday
    let cases = [
        ("* * * * *", "2027-01-01T00:01:00Z"),
        ("0 9 * * MON-FRI", "2027-01-01T09:00:00Z"),
        ("0 9 * * mon", "2027-01-04T09:00:00Z"),
        ("*/15 9-17 * JAN,jul 1-5", "2027-01-01T09:00:00Z"),
        ("0 0 1 * *", "2027-02-01T00:00:00Z"),
        ("30 */2 * * * *", "2027-01-01T00:00:30Z"),
        ("0 0 ? * SUN", "2027-01-03T00:00:00Z"),
        ("0 0 * * 7", "2027-01-03T00:00:00Z"),
        ("0 0 * * FRI-SUN", "2027-01-02T00:00:00Z"),
        ("5/20 * * * *", "2027-01-01T00:05:00Z"),
        ("0 12 * FEB-MAR/1 *", "2027-02-01T12:00:00Z"),
        ("0 0 29 2 *", "2028-02-29T00:00:00Z"),
        ("0 0 13 * FRI", "2027-01-08T00:00:00Z"), // either the 13th or a Friday
        ("0 0 */2 * FRI", "2027-01-15T00:00:00Z"), // odd days that are Fridays (Vixie: `*` field)
        ("@hourly", "2027-01-01T01:00:00Z"),
        ("@daily", "2027-01-02T00:00:00Z"),
        ("@midnight", "2027-01-02T00:00:00Z"),
        ("@weekly", "2027-01-03T00:00:00Z"),
        ("@monthly", "2027-02-01T00:00:00Z"),
        ("@yearly", "2028-01-01T00:00:00Z"),
        ("@ANNUALLY", "2028-01-01T00:00:00Z"),
    ];
    for (expr, want) in cases {
        let rec = Recurrence::cron(expr, None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rec.next_after(from), Some(ts(want)), "{expr}");
    }
}

#[test]
fn sunday_is_day_0_of_the_week_however_it_is_written() {
    let sunday = CronSpec::parse("0 0 * * 0").unwrap();
    assert_eq!(CronSpec::parse("0 0 * * 7"), Ok(sunday.clone()));
    assert_eq!(CronSpec::parse("0 0 * * SUN"), Ok(sunday));
    assert_eq!(
        CronSpec::parse("0 0 * * FRI-SUN"),
        CronSpec::parse("0 0 * * 0,5,6")
    );
}

#[test]
fn a_cron_search_ends_strictly_before_its_limit_to_the_nanosecond() {
    let every_second = CronSpec::parse("* * * * * *").unwrap();
    let nine: DateTime = "2027-01-01T09:00:00".parse().unwrap();
    let half = SignedDuration::from_millis(500);
    assert_eq!(
        every_second.first_at_or_after(nine, nine + half),
        Some(nine)
    );
    assert_eq!(
        every_second.first_at_or_after(nine - half, nine + half),
        Some(nine)
    );
    assert_eq!(every_second.first_at_or_after(nine, nine), None);
    assert_eq!(every_second.first_at_or_after(nine - half, nine), None);
}

#[test]
fn cron_refuses_malformed_expressions_clearly() {
    let cases = [
        ("", "it is empty; use 5 fields"),
        (
            "* * * *",
            "it has 4 fields; use 5 fields (minute hour day-of-month month day-of-week)",
        ),
        ("* * * * * * *", "it has 7 fields"),
        ("60 * * * *", "minute field \"60\": 60 is out of range 0-59"),
        ("* 24 * * *", "hour field \"24\": 24 is out of range 0-23"),
        (
            "* * 0 * *",
            "day-of-month field \"0\": 0 is out of range 1-31",
        ),
        ("* * * 13 *", "month field \"13\": 13 is out of range 1-12"),
        (
            "* * * * 8",
            "day-of-week field \"8\": 8 is out of range 0-7",
        ),
        ("*/0 * * * *", "the step 0 is out of range 1-59"),
        ("*/x * * * *", "the step \"x\" is not a number"),
        ("5-1 * * * *", "the range 5-1 runs backwards"),
        (
            "* * L * *",
            "\"L\" uses L, W or #, which party does not support",
        ),
        ("* * * * MON#2", "uses L, W or #"),
        ("1,,2 * * * *", "a list has an empty item"),
        (
            "? * * * *",
            "? is only allowed in the day-of-month and day-of-week fields",
        ),
        ("a * * * *", "cannot read \"a\""),
        ("* * * FOO *", "cannot read \"FOO\""),
        ("@reboot", "@reboot is not a schedule"),
        ("@sometimes", "unknown macro @sometimes"),
    ];
    for (expr, why) in cases {
        let err = Recurrence::cron(expr, None).unwrap_err();
        assert!(
            err.starts_with(&format!("invalid cron expression {:?}: ", expr.trim())),
            "{err}"
        );
        assert!(err.contains(why), "{expr}: {err}");
    }
    let err = Recurrence::cron("61 * * * *", None).unwrap_err();
    assert!(
        err.contains("minute accepts *, a value 0-59, a range a-b, a step */n"),
        "{err}"
    );
    let err = Recurrence::cron("* * * 13 *", None).unwrap_err();
    assert!(err.contains("(names JAN-DEC work too)"), "{err}");
}

/// A sign is no part of any cron syntax, yet `value` and the step read numbers with
/// `str::parse::<u32>`, which takes a leading `+`: "+5 * * * *" is accepted as minute 5 and
/// "*/+15" as a step of 15, garbage a crontab would refuse.
#[test]
fn cron_refuses_signed_values_and_steps() {
    for expr in ["+5 * * * *", "0 +9 * * *", "*/+15 * * * *", "0 0 +1-+5 * *"] {
        assert!(
            Recurrence::cron(expr, None).is_err(),
            "{expr:?} was accepted: {:?}",
            Recurrence::cron(expr, None).map(|r| r.upcoming(ts("2027-01-01T00:00:00Z"), 2))
        );
    }
}

#[test]
fn only_day_extensions_of_other_cron_dialects_are_called_so() {
    for (expr, why) in [
        (
            "0 0 L * *",
            "\"L\" uses L, W or #, which party does not support",
        ),
        ("0 0 15W * *", "\"15W\" uses L, W or #"),
        ("0 0 * * 5L", "\"5L\" uses L, W or #"),
        ("0 0 * * MON#2", "\"MON#2\" uses L, W or #"),
        ("0 0 XL * *", "cannot read \"XL\""),
        ("0 0 99999999999 * *", "cannot read \"99999999999\""),
    ] {
        let err = Recurrence::cron(expr, None).unwrap_err();
        assert!(err.contains(why), "{expr}: {err}");
    }
}

#[test]
fn cron_refuses_days_that_never_occur() {
    assert_eq!(
        Recurrence::cron("0 0 30 2 *", None).unwrap_err(),
        "invalid cron expression \"0 0 30 2 *\": day-of-month 30 never occurs in February (the \
         only month allowed); pick a day that exists in that month or allow more months"
    );
    let err = Recurrence::cron("0 0 31 APR,6,9,NOV *", None).unwrap_err();
    assert!(
        err.contains(
            "day-of-month 31 never occurs in April, June, September or November (the only months \
             allowed); pick a day that exists in those months"
        ),
        "{err}"
    );
    let err = Recurrence::cron("0 0 30,31 2 */2", None).unwrap_err();
    assert!(
        err.contains("day-of-month 30,31 never occurs in February"),
        "{err}"
    );
    // With both day fields restricted, either may match: this runs on Mondays in February.
    let rec = Recurrence::cron("0 0 30 2 MON", None).unwrap();
    assert_eq!(
        rec.next_after(ts("2027-01-01T00:00:00Z")),
        Some(ts("2027-02-01T00:00:00Z"))
    );
}

#[test]
fn searches_are_bounded_and_never_panic() {
    // The second Sunday of March at 02:30 never exists in New York (clocks jump 02:00 → 03:00).
    let expr = "30 2 8-14 3 */7";
    let shift = cron(expr, "America/New_York");
    assert_eq!(
        shift.next_after(ts("2027-01-01T00:00:00Z")),
        Some(ts("2027-03-14T07:30:00Z"))
    );
    assert_eq!(
        local(ts("2027-03-14T07:30:00Z"), "America/New_York"),
        "2027-03-14T03:30:00"
    );
    let skip = shift.clone().with_nonexistent(Nonexistent::Skip);
    assert_eq!(skip.next_after(ts("2027-01-01T00:00:00Z")), None);
    assert_eq!(skip.upcoming(ts("2027-01-01T00:00:00Z"), 5), vec![]);
    // The ends of the representable range.
    let hourly = Recurrence::every(secs(3_600)).unwrap();
    assert_eq!(hourly.next_after(Timestamp::MAX), None);
    assert_eq!(
        cron("0 9 * * *", "Europe/Berlin").next_after(Timestamp::MAX),
        None
    );
    assert!(
        Recurrence::monthly_on(31, "23:59", None)
            .unwrap()
            .next_after(Timestamp::MAX)
            .is_none()
    );
    assert!(
        cron("0 9 * * *", "Europe/Berlin")
            .next_after(Timestamp::MIN)
            .is_some()
    );
    // An invalid rule read from storage answers nothing rather than panicking.
    let broken = Recurrence {
        rule: Rule::Cron {
            expr: "nope".into(),
        },
        ..hourly.clone()
    };
    assert!(broken.validate().is_err());
    assert_eq!(broken.next_after(Timestamp::UNIX_EPOCH), None);
    assert_eq!(broken.upcoming(Timestamp::UNIX_EPOCH, 3), vec![]);
    let t = Timestamp::UNIX_EPOCH;
    assert_eq!(
        broken.catch_up(t, t + secs(99)),
        CatchUp::Run {
            timestamp: t,
            missed: vec![]
        }
    );
}

// ---------------------------------------------------------------------------------------------
// Time zones and DST
//
// 2027 changes: Europe/Berlin 03-28 02:00 CET → 03:00 CEST and 10-31 03:00 CEST → 02:00 CET;
// America/New_York 03-14 02:00 EST → 03:00 EDT and 11-07 02:00 EDT → 01:00 EST.

#[test]
fn daily_nine_stays_at_nine_local_across_dst() {
    let cases = [
        (
            "Europe/Berlin",
            "2027-03-26T12:00:00Z",
            [
                "2027-03-27T08:00:00Z",
                "2027-03-28T07:00:00Z",
                "2027-03-29T07:00:00Z",
            ],
        ),
        (
            "Europe/Berlin",
            "2027-10-29T12:00:00Z",
            [
                "2027-10-30T07:00:00Z",
                "2027-10-31T08:00:00Z",
                "2027-11-01T08:00:00Z",
            ],
        ),
        (
            "America/New_York",
            "2027-03-12T20:00:00Z",
            [
                "2027-03-13T14:00:00Z",
                "2027-03-14T13:00:00Z",
                "2027-03-15T13:00:00Z",
            ],
        ),
        (
            "America/New_York",
            "2027-11-05T20:00:00Z",
            [
                "2027-11-06T13:00:00Z",
                "2027-11-07T14:00:00Z",
                "2027-11-08T14:00:00Z",
            ],
        ),
    ];
    for (zone, from, want) in cases {
        let got = cron("0 9 * * *", zone).upcoming(ts(from), 3);
        assert_eq!(got, tss(&want), "{zone} from {from}");
        for t in got {
            assert!(
                local(t, zone).ends_with("T09:00:00"),
                "{zone}: {t} is {}",
                local(t, zone)
            );
        }
    }
}

#[test]
fn spring_forward_runs_a_missing_wall_time_shifted_or_skips_it() {
    for (zone, from, shifted, next_day, prev_day) in [
        (
            "America/New_York",
            "2027-03-13T12:00:00Z",
            "2027-03-14T07:30:00Z",
            "2027-03-15T06:30:00Z",
            "2027-03-13T07:30:00Z",
        ),
        (
            "Europe/Berlin",
            "2027-03-27T12:00:00Z",
            "2027-03-28T01:30:00Z",
            "2027-03-29T00:30:00Z",
            "2027-03-27T01:30:00Z",
        ),
    ] {
        let shift = cron("30 2 * * *", zone);
        assert_eq!(shift.nonexistent, Nonexistent::Shift, "the default");
        assert_eq!(
            shift.upcoming(ts(from), 2),
            tss(&[shifted, next_day]),
            "{zone}"
        );
        assert_eq!(
            local(ts(shifted), zone),
            format!("{}T03:30:00", &shifted[..10])
        );
        let skip = shift.with_nonexistent(Nonexistent::Skip);
        assert_eq!(skip.upcoming(ts(from), 1), tss(&[next_day]), "{zone}");
        assert_eq!(skip.next_after(ts(prev_day)), Some(ts(next_day)), "{zone}");
    }
    // The same for a monthly rule that lands on the change.
    let bill = Recurrence::monthly_on(14, "02:30", Some("America/New_York")).unwrap();
    assert_eq!(
        bill.next_after(ts("2027-03-01T00:00:00Z")),
        Some(ts("2027-03-14T07:30:00Z"))
    );
    let bill = bill.with_nonexistent(Nonexistent::Skip);
    assert_eq!(
        bill.next_after(ts("2027-03-01T00:00:00Z")),
        Some(ts("2027-04-14T06:30:00Z"))
    );
}

#[test]
fn a_monthly_rule_at_the_end_of_the_fall_back_hour_runs_once_at_its_own_wall_time() {
    // 2027-11-07 in New York: 02:00 EDT becomes 01:00 EST, so 01:00-01:59 happen twice and
    // 02:00 once, as 02:00 EST (07:00 UTC), right after the repeated hour.
    for repeated in [Repeated::First, Repeated::Second] {
        let bill = Recurrence::monthly_on(7, "02:00", Some("America/New_York"))
            .unwrap()
            .with_repeated(repeated);
        let want = tss(&[
            "2027-10-07T06:00:00Z",
            "2027-11-07T07:00:00Z",
            "2027-12-07T07:00:00Z",
        ]);
        assert_eq!(
            bill.upcoming(ts("2027-10-01T00:00:00Z"), 3),
            want,
            "{repeated:?}"
        );
        for from in [
            "2027-11-07T05:00:00Z", // 01:00 EDT, the first 01:00
            "2027-11-07T05:59:59Z",
            "2027-11-07T06:00:00Z", // 01:00 EST, the second 01:00
            "2027-11-07T06:59:59.999999Z",
        ] {
            assert_eq!(
                bill.next_after(ts(from)),
                Some(ts("2027-11-07T07:00:00Z")),
                "{repeated:?} from {from}"
            );
        }
        assert_eq!(
            bill.first_at_or_after(ts("2027-11-07T07:00:00Z")),
            Some(ts("2027-11-07T07:00:00Z")),
            "{repeated:?}"
        );
        assert_eq!(
            bill.next_after(ts("2027-11-07T07:00:00Z")),
            Some(ts("2027-12-07T07:00:00Z")),
            "{repeated:?}"
        );
        assert_eq!(
            local(ts("2027-11-07T07:00:00Z"), "America/New_York"),
            "2027-11-07T02:00:00"
        );
    }
    // Inside the repeated hour the policy picks one of the two.
    let fold = Recurrence::monthly_on(7, "01:30", Some("America/New_York")).unwrap();
    assert_eq!(
        fold.next_after(ts("2027-11-01T00:00:00Z")),
        Some(ts("2027-11-07T05:30:00Z"))
    );
    assert_eq!(
        fold.with_repeated(Repeated::Second)
            .next_after(ts("2027-11-01T00:00:00Z")),
        Some(ts("2027-11-07T06:30:00Z"))
    );
}

#[test]
fn half_hourly_across_spring_forward_has_no_duplicates() {
    // 02:00 and 02:30 do not exist; shifted they coincide with 03:00 and 03:30 and run once.
    let rec = cron("*/30 * * * *", "America/New_York");
    let got = rec.upcoming(ts("2027-03-14T06:00:00Z"), 4);
    assert_eq!(
        got,
        tss(&[
            "2027-03-14T06:30:00Z",
            "2027-03-14T07:00:00Z",
            "2027-03-14T07:30:00Z",
            "2027-03-14T08:00:00Z"
        ])
    );
}

#[test]
fn fall_back_runs_a_repeated_wall_time_once() {
    for (zone, expr, from, first, second, next_day) in [
        (
            "America/New_York",
            "30 1 * * *",
            "2027-11-06T12:00:00Z",
            "2027-11-07T05:30:00Z",
            "2027-11-07T06:30:00Z",
            "2027-11-08T06:30:00Z",
        ),
        (
            "Europe/Berlin",
            "30 2 * * *",
            "2027-10-30T12:00:00Z",
            "2027-10-31T00:30:00Z",
            "2027-10-31T01:30:00Z",
            "2027-11-01T01:30:00Z",
        ),
    ] {
        let rec = cron(expr, zone);
        assert_eq!(rec.repeated, Repeated::First, "the default");
        assert_eq!(rec.upcoming(ts(from), 2), tss(&[first, next_day]), "{zone}");
        // Asking again right after the first run does not produce the second instant.
        assert_eq!(rec.next_after(ts(first)), Some(ts(next_day)), "{zone}");
        let rec = rec.with_repeated(Repeated::Second);
        assert_eq!(
            rec.upcoming(ts(from), 2),
            tss(&[second, next_day]),
            "{zone}"
        );
        // Both instants read the same on the wall clock.
        assert_eq!(local(ts(first), zone), local(ts(second), zone));
    }
}

#[test]
fn half_hourly_across_fall_back_strictly_increases_without_duplicates() {
    let rec = cron("*/30 * * * *", "Europe/Berlin");
    let from = ts("2027-10-30T23:00:00Z"); // 01:00 CEST
    // First: 02:00 and 02:30 run in summer time; their repetitions in winter time do not.
    let want = [
        "2027-10-30T23:30:00Z",
        "2027-10-31T00:00:00Z",
        "2027-10-31T00:30:00Z",
        "2027-10-31T02:00:00Z",
        "2027-10-31T02:30:00Z",
    ];
    assert_eq!(rec.upcoming(from, 5), tss(&want));
    let rec = rec.with_repeated(Repeated::Second);
    let want = [
        "2027-10-30T23:30:00Z",
        "2027-10-31T01:00:00Z",
        "2027-10-31T01:30:00Z",
        "2027-10-31T02:00:00Z",
        "2027-10-31T02:30:00Z",
    ];
    assert_eq!(rec.upcoming(from, 5), tss(&want));
    for repeated in [Repeated::First, Repeated::Second] {
        let got = rec.clone().with_repeated(repeated).upcoming(from, 200);
        assert!(got.windows(2).all(|w| w[0] < w[1]), "{repeated}: {got:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Month ends

#[test]
fn monthly_on_31_keeps_its_anchor_through_short_months_and_leap_years() {
    let rec = Recurrence::monthly_on(31, "00:00", None).unwrap();
    let want = [
        "2027-01-31",
        "2027-02-28",
        "2027-03-31",
        "2027-04-30",
        "2027-05-31",
        "2027-06-30",
        "2027-07-31",
        "2027-08-31",
        "2027-09-30",
        "2027-10-31",
        "2027-11-30",
        "2027-12-31",
        "2028-01-31",
        "2028-02-29",
        "2028-03-31",
        "2028-04-30",
    ];
    let got = rec.upcoming(ts("2027-01-01T00:00:00Z"), want.len());
    let got: Vec<String> = got
        .iter()
        .map(|t| t.to_string()[..10].to_string())
        .collect();
    assert_eq!(got, want);
    // No drift over 50 years: the day is always min(31, length of the month).
    let got = rec.upcoming(ts("2027-01-01T00:00:00Z"), 600);
    for t in got {
        let d = Offset::UTC.to_datetime(t).date();
        assert_eq!(d.day(), d.days_in_month().min(31), "{d}");
    }
    let rec = Recurrence::monthly_on(30, "12:00", None).unwrap();
    let got = rec.upcoming(ts("2028-01-01T00:00:00Z"), 3);
    assert_eq!(
        got,
        tss(&[
            "2028-01-30T12:00:00Z",
            "2028-02-29T12:00:00Z",
            "2028-03-30T12:00:00Z"
        ])
    );
    let rec = Recurrence::monthly_on(29, "12:00", None).unwrap();
    let got = rec.upcoming(ts("2100-01-30T00:00:00Z"), 2);
    assert_eq!(
        got,
        tss(&["2100-02-28T12:00:00Z", "2100-03-29T12:00:00Z"]),
        "2100 is not a leap year"
    );
}

#[test]
fn monthly_in_a_zone_runs_at_local_time() {
    let rec = Recurrence::monthly_on(31, "09:00", Some("Europe/Berlin")).unwrap();
    let got = rec.upcoming(ts("2027-01-01T00:00:00Z"), 12);
    let want = [
        "2027-01-31T08:00:00Z",
        "2027-02-28T08:00:00Z",
        "2027-03-31T07:00:00Z",
        "2027-04-30T07:00:00Z",
        "2027-05-31T07:00:00Z",
        "2027-06-30T07:00:00Z",
        "2027-07-31T07:00:00Z",
        "2027-08-31T07:00:00Z",
        "2027-09-30T07:00:00Z",
        "2027-10-31T08:00:00Z",
        "2027-11-30T08:00:00Z",
        "2027-12-31T08:00:00Z",
    ];
    assert_eq!(got, tss(&want));
    // The first run of a new task goes to the first occurrence at or after its creation.
    assert_eq!(
        rec.first_at_or_after(ts("2027-01-31T08:00:00Z")),
        Some(ts("2027-01-31T08:00:00Z"))
    );
    assert_eq!(
        rec.first_at_or_after(ts("2027-01-31T08:00:00.000001Z")),
        Some(ts("2027-02-28T08:00:00Z"))
    );
}

// ---------------------------------------------------------------------------------------------
// Missed occurrences

/// Plays the worker: claims the scheduled occurrence at `now`, runs what catch_up says, and
/// moves to `next_after` of what ran, until the next occurrence is in the future.
/// Returns (timestamps run, occurrences passed over, next scheduled).
fn downtime(
    rec: &Recurrence,
    first: Timestamp,
    now: Timestamp,
) -> (Vec<Timestamp>, Vec<Timestamp>, Option<Timestamp>) {
    let (mut ran, mut passed) = (vec![], vec![]);
    let mut scheduled = Some(first);
    while let Some(s) = scheduled.filter(|s| *s <= now) {
        match rec.catch_up(s, now) {
            CatchUp::Run { timestamp, missed } => {
                ran.push(timestamp);
                passed.extend(missed);
                scheduled = rec.next_after(timestamp);
            }
            CatchUp::Skip { next, missed } => {
                passed.extend(missed);
                scheduled = next;
            }
        }
        assert!(ran.len() < 100, "runaway");
    }
    (ran, passed, scheduled)
}

#[test]
fn downtime_across_five_occurrences_under_each_policy() {
    let hourly = Recurrence::every(secs(3_600)).unwrap();
    assert_eq!(hourly.missed, Missed::All, "the default");
    let first = ts("2027-01-01T00:00:00Z");
    let now = ts("2027-01-01T04:20:00Z");
    let due = tss(&[
        "2027-01-01T00:00:00Z",
        "2027-01-01T01:00:00Z",
        "2027-01-01T02:00:00Z",
        "2027-01-01T03:00:00Z",
        "2027-01-01T04:00:00Z",
    ]);
    let next = Some(ts("2027-01-01T05:00:00Z"));

    assert_eq!(downtime(&hourly, first, now), (due.clone(), vec![], next));
    let latest = hourly.clone().with_missed(Missed::Latest);
    assert_eq!(
        downtime(&latest, first, now),
        (vec![due[4]], due[..4].to_vec(), next)
    );
    assert_eq!(
        latest.catch_up(first, now),
        CatchUp::Run {
            timestamp: due[4],
            missed: due[..4].to_vec()
        }
    );
    let skip = hourly.clone().with_missed(Missed::Skip);
    assert_eq!(downtime(&skip, first, now), (vec![], due.clone(), next));
    assert_eq!(
        skip.catch_up(first, now),
        CatchUp::Skip {
            next,
            missed: due.clone()
        }
    );

    // A calendar rule in a zone, down across the spring-forward change.
    let daily = cron("0 9 * * *", "Europe/Berlin");
    let first = ts("2027-03-26T08:00:00Z");
    let now = ts("2027-03-30T12:00:00Z");
    let due = tss(&[
        "2027-03-26T08:00:00Z",
        "2027-03-27T08:00:00Z",
        "2027-03-28T07:00:00Z",
        "2027-03-29T07:00:00Z",
        "2027-03-30T07:00:00Z",
    ]);
    let next = Some(ts("2027-03-31T07:00:00Z"));
    assert_eq!(downtime(&daily, first, now), (due.clone(), vec![], next));
    let latest = daily.clone().with_missed(Missed::Latest);
    assert_eq!(
        downtime(&latest, first, now),
        (vec![due[4]], due[..4].to_vec(), next)
    );
    let skip = daily.with_missed(Missed::Skip);
    assert_eq!(downtime(&skip, first, now), (vec![], due, next));
}

#[test]
fn a_late_but_not_missed_occurrence_runs_under_every_policy() {
    let hourly = Recurrence::every(secs(3_600)).unwrap();
    let s = ts("2027-01-01T00:00:00Z");
    for missed in [Missed::All, Missed::Latest, Missed::Skip] {
        let rec = hourly.clone().with_missed(missed);
        for now in ["2027-01-01T00:59:59Z", "2026-12-31T23:00:00Z"] {
            assert_eq!(
                rec.catch_up(s, ts(now)),
                CatchUp::Run {
                    timestamp: s,
                    missed: vec![]
                },
                "{missed} {now}"
            );
        }
        // Exactly at the next occurrence, the first one counts as missed.
        let now = ts("2027-01-01T01:00:00Z");
        let want = match missed {
            Missed::All => CatchUp::Run {
                timestamp: s,
                missed: vec![],
            },
            Missed::Latest => CatchUp::Run {
                timestamp: now,
                missed: vec![s],
            },
            Missed::Skip => CatchUp::Skip {
                next: Some(ts("2027-01-01T02:00:00Z")),
                missed: vec![s, now],
            },
        };
        assert_eq!(rec.catch_up(s, now), want, "{missed}");
    }
}

#[test]
fn long_downtime_is_computed_quickly_and_listed_with_a_cap() {
    let s = ts("2027-01-01T00:00:00Z");
    let now = ts("2028-01-01T00:00:00.5Z");
    let every_second = Recurrence::every(secs(1))
        .unwrap()
        .with_missed(Missed::Latest);
    match every_second.catch_up(s, now) {
        CatchUp::Run { timestamp, missed } => {
            assert_eq!(timestamp, ts("2028-01-01T00:00:00Z"));
            assert_eq!(missed.len(), MISSED_LISTED_MAX);
            assert_eq!(missed[0], s);
        }
        other => panic!("{other:?}"),
    }
    let cron_second = cron("* * * * * *", "Europe/Berlin").with_missed(Missed::Latest);
    match cron_second.catch_up(s, now) {
        CatchUp::Run { timestamp, missed } => {
            assert_eq!(timestamp, ts("2028-01-01T00:00:00Z"));
            assert_eq!(missed.len(), MISSED_LISTED_MAX);
        }
        other => panic!("{other:?}"),
    }
    let skip = cron_second.with_missed(Missed::Skip);
    match skip.catch_up(s, now) {
        CatchUp::Skip { next, missed } => {
            assert_eq!(next, Some(ts("2028-01-01T00:00:01Z")));
            assert_eq!(missed.len(), MISSED_LISTED_MAX);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn after_a_long_downtime_the_latest_due_occurrence_is_found_however_far_before_now() {
    // More than MISSED_LISTED_MAX occurrences came due, and the latest is well before now.
    let hourly = cron("0 * * * *", "UTC").with_missed(Missed::Latest);
    let s = ts("2027-01-01T00:00:00Z");
    let now = ts("2027-03-01T10:30:00Z");
    let listed: Vec<Timestamp> = (0..MISSED_LISTED_MAX as i64)
        .map(|h| s + secs(h * 3_600))
        .collect();
    assert_eq!(
        hourly.catch_up(s, now),
        CatchUp::Run {
            timestamp: ts("2027-03-01T10:00:00Z"),
            missed: listed.clone()
        }
    );
    assert_eq!(
        hourly.with_missed(Missed::Skip).catch_up(s, now),
        CatchUp::Skip {
            next: Some(ts("2027-03-01T11:00:00Z")),
            missed: listed
        }
    );
    // Daily in a zone, three years down: the latest is yesterday's.
    let daily = cron("0 9 * * *", "Europe/Berlin").with_missed(Missed::Latest);
    let s = ts("2027-01-01T08:00:00Z");
    match daily.catch_up(s, ts("2030-01-02T07:00:00Z")) {
        CatchUp::Run { timestamp, missed } => {
            assert_eq!(timestamp, ts("2030-01-01T08:00:00Z"));
            assert_eq!(missed.len(), MISSED_LISTED_MAX);
            assert_eq!(missed[0], s);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_latest_occurrence_of_an_interval_in_a_window_is_on_its_grid() {
    let hourly = Recurrence::every(secs(3_600)).unwrap().engine().unwrap();
    let floor = ts("2027-01-01T00:00:00Z");
    assert_eq!(hourly.latest_at_or_before(floor, floor), Some(floor));
    assert_eq!(
        hourly.latest_at_or_before(floor, floor + secs(3_599)),
        Some(floor)
    );
    assert_eq!(
        hourly.latest_at_or_before(floor, floor + secs(7_300)),
        Some(floor + secs(7_200))
    );
    // A window that ends before it starts holds nothing, however little before.
    assert_eq!(hourly.latest_at_or_before(floor, floor - secs(7_200)), None);
    assert_eq!(hourly.latest_at_or_before(floor, floor - secs(1)), None);
    let cron = Recurrence::cron("0 * * * *", None)
        .unwrap()
        .engine()
        .unwrap();
    assert_eq!(cron.latest_at_or_before(floor, floor - secs(1)), None);
}

// ---------------------------------------------------------------------------------------------
// Keys, gaps, storage

#[test]
fn occurrence_keys_are_stable_and_distinct() {
    let id = "65a1f0c2e4b0a1b2c3d4e5f6";
    assert_eq!(
        occurrence_key(id, ts("2027-01-31T09:00:00+01:00")),
        "65a1f0c2e4b0a1b2c3d4e5f6@2027-01-31T08:00:00.000000Z"
    );
    assert_eq!(
        occurrence_key(id, ts("2027-01-31T08:00:00.123456Z")),
        "65a1f0c2e4b0a1b2c3d4e5f6@2027-01-31T08:00:00.123456Z"
    );
    let rec = cron("0 9 * * *", "Europe/Berlin");
    let keys: Vec<String> = rec
        .upcoming(ts("2027-01-01T00:00:00Z"), 400)
        .into_iter()
        .map(|t| occurrence_key(id, t))
        .collect();
    let mut unique = keys.clone();
    unique.dedup();
    assert_eq!(keys.len(), unique.len());
}

#[test]
fn gaps_report_missing_doubled_and_unexpected_runs_exactly() {
    let rec = Recurrence::every(secs(3_600)).unwrap();
    let first = ts("2027-01-01T00:00:00Z");
    let now = ts("2027-01-01T06:00:00Z");
    let ran = tss(&[
        "2027-01-01T00:00:00Z",
        "2027-01-01T01:00:00Z",
        "2027-01-01T01:00:00Z",
        "2027-01-01T03:00:00Z",
        "2027-01-01T04:00:00Z",
        "2027-01-01T02:30:00Z",
        "2027-01-01T05:00:00Z",
        "2027-01-01T06:00:00Z",
    ]);
    let report = gaps(&rec, first, now, &ran);
    assert_eq!(
        report,
        GapReport {
            expected: 7,
            missing: tss(&["2027-01-01T02:00:00Z"]),
            doubled: vec![(ts("2027-01-01T01:00:00Z"), 2)],
            unexpected: tss(&["2027-01-01T02:30:00Z"]),
            truncated: false,
        }
    );
    assert_eq!(
        serde_json::to_string(&report).unwrap(),
        r#"{"expected":7,"missing":["2027-01-01T02:00:00.000000Z"],"doubled":[{"timestamp":"2027-01-01T01:00:00.000000Z","runs":2}],"unexpected":["2027-01-01T02:30:00.000000Z"],"truncated":false}"#
    );
    // A clean history, and a calendar rule across DST.
    let daily = cron("0 9 * * *", "America/New_York");
    let first = ts("2027-03-10T14:00:00Z");
    let expected = daily.upcoming(first, 9);
    let mut all = vec![first];
    all.extend(&expected);
    let report = gaps(&daily, first, expected[8], &all);
    assert_eq!(
        report,
        GapReport {
            expected: 10,
            ..GapReport::default()
        }
    );
    let report = gaps(&daily, first, ts("2027-03-14T12:59:59Z"), &all[..4]);
    assert_eq!(report.expected, 4);
    assert_eq!(report.missing, vec![]);
    assert_eq!(
        gaps(&daily, first, ts("2027-03-01T00:00:00Z"), &[]),
        GapReport::default()
    );
}

#[test]
fn a_truncated_gap_report_leaves_out_runs_after_the_last_compared_occurrence() {
    let every_second = Recurrence::every(secs(1)).unwrap();
    let first = ts("2027-01-01T00:00:00Z");
    let now = first + secs(2 * GAPS_EXPECTED_MAX as i64);
    let last_compared = first + secs(GAPS_EXPECTED_MAX as i64 - 1);
    let ran_for = [
        first + secs(5),
        first + SignedDuration::from_millis(500),
        last_compared + SignedDuration::from_millis(500),
        first + secs(GAPS_EXPECTED_MAX as i64 + 10),
    ];
    let report = gaps(&every_second, first, now, &ran_for);
    assert!(report.truncated);
    assert_eq!(report.expected, GAPS_EXPECTED_MAX);
    assert_eq!(report.missing.len(), GAPS_EXPECTED_MAX - 1);
    assert_eq!(report.missing.last(), Some(&last_compared));
    // A run the rule did not expect is listed when it falls within the compared range; runs
    // past its last occurrence were not compared, so they are not called unexpected.
    assert_eq!(
        report.unexpected,
        vec![first + SignedDuration::from_millis(500)]
    );
}

#[test]
fn the_stored_json_is_readable_and_stable() {
    let every = Recurrence::every(secs(5_400)).unwrap();
    assert_eq!(
        every.to_json(),
        r#"{"rule":{"kind":"every","every":"1h30m"},"tz":null,"missed":"all","nonexistent":"shift","repeated":"first"}"#
    );
    let cron = Recurrence::cron("0 9 * * MON-FRI", Some("Europe/Berlin"))
        .unwrap()
        .with_missed(Missed::Latest);
    assert_eq!(
        cron.to_json(),
        r#"{"rule":{"kind":"cron","expr":"0 9 * * MON-FRI"},"tz":"Europe/Berlin","missed":"latest","nonexistent":"shift","repeated":"first"}"#
    );
    let monthly = Recurrence::monthly_on(31, "09:00", Some("America/New_York"))
        .unwrap()
        .with_nonexistent(Nonexistent::Skip)
        .with_repeated(Repeated::Second)
        .with_missed(Missed::Skip);
    assert_eq!(
        monthly.to_json(),
        r#"{"rule":{"kind":"monthly_on","day":31,"at":"09:00"},"tz":"America/New_York","missed":"skip","nonexistent":"skip","repeated":"second"}"#
    );
    for rec in [every.clone(), cron, monthly] {
        assert_eq!(Recurrence::from_json(&rec.to_json()), Ok(rec));
    }
    // Defaults fill in what is left out; a number of seconds is accepted for `every`.
    assert_eq!(
        Recurrence::from_json(r#"{"rule":{"kind":"every","every":5400}}"#),
        Ok(every)
    );
    let with_secs = Recurrence::monthly_on(1, "23:59:30", None).unwrap();
    assert!(with_secs.to_json().contains(r#""at":"23:59:30""#));
    assert_eq!(Recurrence::from_json(&with_secs.to_json()), Ok(with_secs));
    // Bad stored values are refused with the same messages as the constructors.
    for (json, why) in [
        (
            r#"{"rule":{"kind":"cron","expr":"0 0 30 2 *"}}"#,
            "never occurs in February",
        ),
        (
            r#"{"rule":{"kind":"cron","expr":"0 9 * * *"},"tz":"Mars/Olympus"}"#,
            "unknown time zone",
        ),
        (r#"{"rule":{"kind":"every","every":"0s"}}"#, "at least 1s"),
        (
            r#"{"rule":{"kind":"every","every":"soon"}}"#,
            "invalid duration",
        ),
        (
            r#"{"rule":{"kind":"monthly_on","day":32,"at":"09:00"}}"#,
            "use 1 to 31",
        ),
        (
            r#"{"rule":{"kind":"monthly_on","day":1,"at":"25:00"}}"#,
            "hour 25 is out of range",
        ),
        (
            r#"{"rule":{"kind":"every","every":-90}}"#,
            "invalid interval -1m30s",
        ),
        (
            r#"{"rule":{"kind":"every","every":true}}"#,
            "expected a duration like \"30m\" or a number of seconds",
        ),
        (r#"{"rule":{"kind":"weekly"}}"#, "unknown variant"),
        (
            r#"{"rule":{"kind":"every","every":"1h"},"missed":"sometimes"}"#,
            "unknown variant",
        ),
    ] {
        let err = Recurrence::from_json(json).unwrap_err();
        assert!(err.contains(why), "{json}: {err}");
    }
}

#[test]
fn policies_read_and_print_as_lowercase_words() {
    assert_eq!("latest".parse::<Missed>(), Ok(Missed::Latest));
    assert_eq!(" ALL ".parse::<Missed>(), Ok(Missed::All));
    assert_eq!("skip".parse::<Nonexistent>(), Ok(Nonexistent::Skip));
    assert_eq!("second".parse::<Repeated>(), Ok(Repeated::Second));
    assert_eq!(
        "never".parse::<Missed>(),
        Err("invalid missed policy \"never\": use one of all, latest, skip".into())
    );
    assert_eq!(Missed::Skip.to_string(), "skip");
    assert_eq!(
        Rule::MonthlyOn {
            day: 31,
            at: jiff::civil::time(9, 0, 0, 0)
        }
        .to_string(),
        "monthly on day 31 at 09:00"
    );
    assert_eq!(Rule::Every { every: secs(1_800) }.to_string(), "every 30m");
}

// ---------------------------------------------------------------------------------------------
// Property tests: seeded, so a failure reproduces.

const ZONES: [&str; 10] = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe", // 30-minute DST
    "Pacific/Apia",        // skipped 2011-12-30 entirely
    "America/Sao_Paulo",   // DST changes at midnight until 2019
    "Asia/Kolkata",
    "America/St_Johns",
    "Pacific/Chatham",
    "Europe/London",
];

/// A start time: often close to one of the zone's transitions, sometimes anywhere.
fn random_start(rng: &mut fastrand::Rng, zone: &str) -> Timestamp {
    let base = Timestamp::from_second(rng.i64(946_684_800..2_082_758_400)).unwrap(); // 2000..2036
    let tz = TimeZone::get(zone).unwrap();
    let anchor = match rng.u8(0..10) {
        0..=5 => tz.following(base).next().map_or(base, |tr| tr.timestamp()),
        6 if zone == "Pacific/Apia" => ts("2011-12-30T10:00:00Z"),
        _ => base,
    };
    let jitter = secs(rng.i64(-36 * 3_600..=36 * 3_600));
    let nanos = if rng.bool() {
        SignedDuration::ZERO
    } else {
        SignedDuration::from_nanos(rng.i64(0..1_000_000_000))
    };
    anchor + jitter + nanos
}

/// One item of a generated cron field, matched independently of the parser.
#[derive(Clone, Debug)]
enum Item {
    Star,
    StarStep(u32),
    Val(u32),
    Range(u32, u32),
    RangeStep(u32, u32, u32),
    ValStep(u32, u32),
}

#[derive(Clone, Debug)]
struct GenField {
    items: Vec<Item>,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

impl GenField {
    fn random(
        rng: &mut fastrand::Rng,
        min: u32,
        max: u32,
        names: &'static [&'static str],
        star_pct: u8,
    ) -> GenField {
        let mut items = vec![];
        if rng.u8(0..100) < star_pct {
            items.push(if rng.u8(0..4) == 0 {
                Item::StarStep(rng.u32(1..=max.min(15)))
            } else {
                Item::Star
            });
        } else {
            for _ in 0..rng.usize(1..=3) {
                let a = rng.u32(min..=max);
                let b = rng.u32(a..=max);
                items.push(match rng.u8(0..5) {
                    0 | 1 => Item::Val(a),
                    2 => Item::Range(a, b),
                    3 => Item::RangeStep(a, b, rng.u32(1..=max)),
                    _ => Item::ValStep(a, rng.u32(1..=max)),
                });
            }
        }
        GenField {
            items,
            min,
            max,
            names,
        }
    }

    fn value_text(&self, rng: &mut fastrand::Rng, v: u32) -> String {
        let i = v - self.min;
        if !self.names.is_empty() && (i as usize) < self.names.len() && rng.bool() {
            let name = self.names[i as usize];
            if rng.bool() {
                name.to_lowercase()
            } else {
                name.to_string()
            }
        } else {
            v.to_string()
        }
    }

    fn text(&self, rng: &mut fastrand::Rng) -> String {
        let parts: Vec<String> = self
            .items
            .iter()
            .map(|item| match *item {
                Item::Star => "*".to_string(),
                Item::StarStep(s) => format!("*/{s}"),
                Item::Val(a) => self.value_text(rng, a),
                Item::Range(a, b) => {
                    format!("{}-{}", self.value_text(rng, a), self.value_text(rng, b))
                }
                Item::RangeStep(a, b, s) => format!(
                    "{}-{}/{s}",
                    self.value_text(rng, a),
                    self.value_text(rng, b)
                ),
                Item::ValStep(a, s) => format!("{}/{s}", self.value_text(rng, a)),
            })
            .collect();
        parts.join(",")
    }

    /// Whether `v` matches, by the plain meaning of each item. `star_max` is what `*` covers.
    fn matches(&self, v: u32, star_max: u32) -> bool {
        self.items.iter().any(|item| match *item {
            Item::Star => v >= self.min && v <= star_max,
            Item::StarStep(s) => v >= self.min && v <= star_max && (v - self.min) % s == 0,
            Item::Val(a) => v == a,
            Item::Range(a, b) => a <= v && v <= b,
            Item::RangeStep(a, b, s) => a <= v && v <= b && (v - a) % s == 0,
            Item::ValStep(a, s) => a <= v && v <= self.max && (v - a) % s == 0,
        })
    }

    fn starts_with_star(&self) -> bool {
        matches!(self.items[0], Item::Star | Item::StarStep(_))
    }
}

const MONTH_NAMES: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

struct GenCron {
    sec: Option<GenField>,
    min: GenField,
    hour: GenField,
    dom: GenField,
    month: GenField,
    dow: GenField,
}

impl GenCron {
    fn random(rng: &mut fastrand::Rng) -> GenCron {
        GenCron {
            sec: (rng.u8(0..4) == 0).then(|| GenField::random(rng, 0, 59, &[], 30)),
            min: GenField::random(rng, 0, 59, &[], 40),
            hour: GenField::random(rng, 0, 23, &[], 50),
            dom: GenField::random(rng, 1, 31, &[], 60),
            month: GenField::random(rng, 1, 12, &MONTH_NAMES, 85),
            dow: GenField::random(rng, 0, 7, &DAY_NAMES, 60),
        }
    }

    fn text(&self, rng: &mut fastrand::Rng) -> String {
        let mut fields = vec![];
        if let Some(sec) = &self.sec {
            fields.push(sec.text(rng));
        }
        for f in [&self.min, &self.hour, &self.dom, &self.month, &self.dow] {
            fields.push(f.text(rng));
        }
        fields.join(" ")
    }

    /// Whether a wall time's fields match, straight from the definition.
    fn minute_matches(&self, dt: DateTime) -> bool {
        let date = dt.date();
        let dom = self.dom.matches(date.day() as u32, 31);
        let wd = date.weekday().to_sunday_zero_offset() as u32;
        let dow = self.dow.matches(wd, 6) || (wd == 0 && self.dow.matches(7, 6));
        let day = if self.dom.starts_with_star() || self.dow.starts_with_star() {
            dom && dow
        } else {
            dom || dow
        };
        day && self.month.matches(date.month() as u32, 12)
            && self.hour.matches(dt.hour() as u32, 23)
            && self.min.matches(dt.minute() as u32, 59)
    }

    fn second_matches(&self, s: u32) -> bool {
        self.sec.as_ref().map_or(s == 0, |f| f.matches(s, 59))
    }
}

/// The instant a matching wall time becomes under the policies, straight from jiff's reading of
/// the zone at that wall time (no segments).
fn instant_of(
    tz: &TimeZone,
    w: DateTime,
    nonexistent: Nonexistent,
    repeated: Repeated,
) -> Option<Timestamp> {
    let offset = match tz.to_ambiguous_timestamp(w).offset() {
        AmbiguousOffset::Unambiguous { offset } => offset,
        AmbiguousOffset::Gap { before, .. } => match nonexistent {
            Nonexistent::Shift => before,
            Nonexistent::Skip => return None,
        },
        AmbiguousOffset::Fold { before, after } => match repeated {
            Repeated::First => before,
            Repeated::Second => after,
        },
    };
    offset.to_timestamp(w).ok()
}

#[test]
fn property_cron_next_after_agrees_with_a_brute_force_scan() {
    let (found, near_change) = cron_against_brute_force(20_270_314, 400);
    assert!(
        found > 200,
        "too few rules fired within the window to be meaningful: {found}"
    );
    assert!(
        near_change > 40,
        "too few answers near a DST change to be meaningful: {near_change}"
    );
}

/// A longer run over many seeds: `cargo test -p party --lib recurrence -- --ignored`.
#[test]
#[ignore = "slow soak test; run by hand"]
fn soak_cron_against_brute_force() {
    for seed in 0..50 {
        cron_against_brute_force(seed, 400);
    }
}

/// Compares `next_after` of random cron rules with a brute-force scan; returns how many rules
/// fired within the window, and how many of those answers lay within a day of a change of
/// UTC offset.
fn cron_against_brute_force(seed: u64, rounds: usize) -> (usize, usize) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let (mut found, mut near_change) = (0, 0);
    for round in 0..rounds {
        let gen_cron = GenCron::random(&mut rng);
        let expr = gen_cron.text(&mut rng);
        let zone = ZONES[rng.usize(..ZONES.len())];
        let nonexistent = if rng.bool() {
            Nonexistent::Shift
        } else {
            Nonexistent::Skip
        };
        let repeated = if rng.bool() {
            Repeated::First
        } else {
            Repeated::Second
        };
        let rec = match Recurrence::cron(&expr, Some(zone)) {
            Ok(rec) => rec.with_nonexistent(nonexistent).with_repeated(repeated),
            Err(e) => {
                // Only impossible day/month pairs may be refused.
                assert!(e.contains("never occurs"), "round {round}: {expr}: {e}");
                continue;
            }
        };
        let t = random_start(&mut rng, zone);
        let tz = TimeZone::get(zone).unwrap();
        let got = rec.next_after(t);

        // Offsets in force around the search, sampled every 15 minutes.
        let window = secs(4 * 86_400);
        let (mut o_min, mut o_max) = (i64::MAX, i64::MIN);
        let mut probe = t - secs(2 * 86_400);
        while probe < t + window + secs(2 * 86_400) {
            let o = i64::from(tz.to_offset(probe).seconds());
            (o_min, o_max) = (o_min.min(o), o_max.max(o));
            probe += secs(900);
        }
        // A wall time w becomes an instant w - o, so instants after t come from walls after
        // t + o_min; scan minute by minute (and second by second within matching minutes).
        let start_wall = Offset::UTC
            .to_datetime(t + secs(o_min))
            .round(jiff::Unit::Minute)
            .unwrap()
            - secs(120);
        let end_wall = Offset::UTC.to_datetime(t + window + secs(o_max));
        let mut best: Option<Timestamp> = None;
        let mut w = start_wall;
        while w <= end_wall {
            if best.is_some_and(|b| w - secs(o_max) > Offset::UTC.to_datetime(b)) {
                break;
            }
            if gen_cron.minute_matches(w) {
                for s in (0..60).filter(|s| gen_cron.second_matches(*s)) {
                    let wall = w + secs(i64::from(s));
                    if let Some(x) = instant_of(&tz, wall, nonexistent, repeated).filter(|x| *x > t)
                    {
                        best = Some(best.map_or(x, |b| b.min(x)));
                    }
                }
            }
            w += secs(60);
        }
        match best {
            Some(b) if b <= t + window => {
                found += 1;
                let day = secs(86_400);
                if tz.to_offset(b - day) != tz.to_offset(b + day) {
                    near_change += 1;
                }
                assert_eq!(
                    got,
                    Some(b),
                    "seed {seed} round {round}: {expr:?} in {zone} after {t} ({nonexistent}, {repeated})"
                );
            }
            _ => assert!(
                got.is_none_or(|g| g > t + window),
                "seed {seed} round {round}: {expr:?} in {zone} after {t}: got {got:?}, brute force found none within the window"
            ),
        }
    }
    (found, near_change)
}

#[test]
fn property_monthly_agrees_with_a_day_by_day_scan() {
    let mut rng = fastrand::Rng::with_seed(2_028_229);
    for round in 0..300 {
        let zone = ZONES[rng.usize(..ZONES.len())];
        let day = if rng.bool() {
            rng.u8(28..=31)
        } else {
            rng.u8(1..=31)
        };
        // Times around midnight and 01:00-03:00 meet the DST changes most often.
        let hour = [0, 1, 2, 3, rng.u8(0..24)][rng.usize(..5)];
        let at = jiff::civil::time(
            hour as i8,
            [0, 30, rng.u8(0..60)][rng.usize(..3)] as i8,
            0,
            0,
        );
        let nonexistent = if rng.bool() {
            Nonexistent::Shift
        } else {
            Nonexistent::Skip
        };
        let repeated = if rng.bool() {
            Repeated::First
        } else {
            Repeated::Second
        };
        let rec = Recurrence::monthly_on(day, &at.to_string()[..5], Some(zone))
            .unwrap()
            .with_nonexistent(nonexistent)
            .with_repeated(repeated);
        let t = random_start(&mut rng, zone);
        let tz = TimeZone::get(zone).unwrap();
        // Every occurrence within 100 days after t, from walls starting two days before t.
        let mut want = vec![];
        let mut date = tz.to_datetime(t).date() - jiff::Span::new().days(2);
        while date <= tz.to_datetime(t + secs(100 * 86_400)).date() {
            if u32::from(date.day() as u8) == u32::from(day).min(date.days_in_month() as u32) {
                if let Some(x) = instant_of(&tz, date.to_datetime(at), nonexistent, repeated) {
                    if x > t && x <= t + secs(100 * 86_400) {
                        want.push(x);
                    }
                }
            }
            date = date.tomorrow().unwrap();
        }
        let got: Vec<Timestamp> = rec
            .upcoming(t, 10)
            .into_iter()
            .filter(|x| *x <= t + secs(100 * 86_400))
            .collect();
        assert_eq!(
            got, want,
            "round {round}: day {day} at {at} in {zone} after {t} ({nonexistent}, {repeated})"
        );
    }
}

/// A random rule of any kind with random zone and policies.
fn random_recurrence(rng: &mut fastrand::Rng) -> Recurrence {
    let zone = ZONES[rng.usize(..ZONES.len())];
    let rec = loop {
        let made = match rng.u8(0..3) {
            0 => Recurrence::every(secs(rng.i64(1..=40 * 86_400))),
            1 => Recurrence::cron(&GenCron::random(rng).text(rng), Some(zone)),
            _ => {
                let at = format!("{:02}:{:02}", rng.u8(0..24), rng.u8(0..60));
                Recurrence::monthly_on(rng.u8(1..=31), &at, Some(zone))
            }
        };
        if let Ok(rec) = made {
            break rec;
        }
    };
    let nonexistent = if rng.bool() {
        Nonexistent::Shift
    } else {
        Nonexistent::Skip
    };
    let repeated = if rng.bool() {
        Repeated::First
    } else {
        Repeated::Second
    };
    rec.with_nonexistent(nonexistent).with_repeated(repeated)
}

#[test]
fn property_occurrences_of_any_rule_strictly_increase() {
    let mut rng = fastrand::Rng::with_seed(31);
    for round in 0..300 {
        let rec = random_recurrence(&mut rng);
        let zone = rec.tz.clone().unwrap_or_else(|| "UTC".into());
        let t = random_start(&mut rng, &zone);
        let got = rec.upcoming(t, 40);
        assert!(!got.is_empty(), "round {round}: {rec:?} after {t}");
        assert!(
            got[0] > t,
            "round {round}: {rec:?}: {} not after {t}",
            got[0]
        );
        assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "round {round}: {rec:?}: {got:?}"
        );
        // For calendar rules first_at_or_after is next_after from just before: it includes an
        // occurrence at t itself. (For `Every`, any t is a valid first run.)
        assert_eq!(
            rec.first_at_or_after(got[0]),
            Some(got[0]),
            "round {round}: {rec:?}"
        );
        if !matches!(rec.rule, Rule::Every { .. }) {
            let just_after = got[0] + SignedDuration::from_nanos(1);
            assert_eq!(
                rec.first_at_or_after(just_after),
                Some(got[1]),
                "round {round}: {rec:?}"
            );
        }
    }
}

#[test]
fn property_every_is_exactly_t_plus_k_d() {
    let mut rng = fastrand::Rng::with_seed(5);
    for _ in 0..300 {
        let d = secs(rng.i64(1..=60 * 86_400));
        let rec = Recurrence::every(d).unwrap();
        let t = Timestamp::from_microsecond(rng.i64(0..4_000_000_000_000_000)).unwrap();
        let got = rec.upcoming(t, 50);
        for (k, x) in got.iter().enumerate() {
            assert_eq!(*x, t + d * (k as i32 + 1));
        }
        assert_eq!(rec.first_at_or_after(t), Some(t));
    }
}

#[test]
fn property_catch_up_agrees_with_stepping_through_occurrences() {
    let mut rng = fastrand::Rng::with_seed(11);
    for round in 0..150 {
        let rec = random_recurrence(&mut rng);
        let zone = rec.tz.clone().unwrap_or_else(|| "UTC".into());
        let Some(scheduled) = rec.first_at_or_after(random_start(&mut rng, &zone)) else {
            continue;
        };
        let occurrences = rec.upcoming(scheduled, 12);
        // `now` lies before the last listed occurrence, so `due` below is complete.
        let mut points = vec![scheduled];
        points.extend(&occurrences);
        let i = rng.usize(..points.len() - 1);
        let gap = points[i + 1]
            .duration_since(points[i])
            .as_nanos()
            .min(i128::from(i64::MAX)) as i64;
        let now = points[i] + SignedDuration::from_nanos(rng.i64(0..gap));
        let mut due = vec![scheduled];
        due.extend(occurrences.iter().filter(|x| **x <= now));
        let latest = due[due.len() - 1];
        let next = rec.next_after(latest);
        for missed in [Missed::All, Missed::Latest, Missed::Skip] {
            let got = rec.clone().with_missed(missed).catch_up(scheduled, now);
            let want = match missed {
                _ if due.len() == 1 => CatchUp::Run {
                    timestamp: scheduled,
                    missed: vec![],
                },
                Missed::All => CatchUp::Run {
                    timestamp: scheduled,
                    missed: vec![],
                },
                Missed::Latest => CatchUp::Run {
                    timestamp: latest,
                    missed: due[..due.len() - 1].to_vec(),
                },
                Missed::Skip => CatchUp::Skip {
                    next,
                    missed: due.clone(),
                },
            };
            assert_eq!(
                got, want,
                "round {round}: {rec:?} scheduled {scheduled} now {now}"
            );
        }
    }
}

/// `occurrences_before` gives the latest occurrences before the anchor, oldest first, from
/// `from` on and at most `count`: on an interval's grid through the anchor, and on a
/// calendar's own times.
#[test]
fn occurrences_before_are_the_latest_within_the_floor_and_count() {
    let every = Recurrence::every(SignedDuration::from_mins(15)).unwrap();
    let anchor = ts("2027-03-01T12:07:00Z");
    assert_eq!(
        every.occurrences_before(anchor, ts("2027-03-01T11:30:00Z"), 10),
        tss(&["2027-03-01T11:37:00Z", "2027-03-01T11:52:00Z"])
    );
    // An occurrence exactly at the floor counts; the count keeps the latest.
    assert_eq!(
        every.occurrences_before(anchor, ts("2027-03-01T11:37:00Z"), 1),
        tss(&["2027-03-01T11:52:00Z"])
    );
    assert_eq!(
        every
            .occurrences_before(anchor, ts("2027-03-01T11:37:00Z"), 5)
            .len(),
        2
    );
    // A weekday calendar in Berlin: Thursday, Friday and Monday before Tuesday's anchor, not the
    // weekend.
    let weekdays = cron("0 9 * * 1-5", "Europe/Berlin");
    assert_eq!(
        weekdays.occurrences_before(ts("2027-03-02T08:00:00Z"), ts("2027-02-25T00:00:00Z"), 10),
        tss(&[
            "2027-02-25T08:00:00Z",
            "2027-02-26T08:00:00Z",
            "2027-03-01T08:00:00Z",
        ])
    );
    assert!(every.occurrences_before(anchor, anchor, 10).is_empty());
}
