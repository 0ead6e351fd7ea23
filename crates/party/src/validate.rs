//! Every limit and check on what a user supplies, in one place: names, task data, numbers,
//! times, durations and database URLs. The library's [`crate::Party::add`], the command line
//! (its value parsers and `add --from`) and any other front end call these same functions, so
//! one input gets one answer everywhere.
//!
//! Each check returns [`TaskError::Invalid`] with a message that says what was wrong and what
//! to write instead. A message quotes at most [`QUOTE_CHARS`] characters of the input (see
//! [`quote`]), with control characters escaped, so a 100 KB argument is never echoed back.
//!
//! The limits:
//!
//! | what | limit |
//! |---|---|
//! | handler and queue names | 1 to [`MAX_NAME_BYTES`] bytes, no control or bidirectional-format characters |
//! | task data | a JSON object, at most [`MAX_DATA_BYTES`] bytes as stored, nested at most [`MAX_DATA_DEPTH`] deep; integers within 64 bits |
//! | max attempts | 1 to [`MAX_ATTEMPTS`] on every backend |
//! | priority | [`i32::MIN`] to [`i32::MAX`] |
//! | list limit | 1 to [`MAX_LIST_LIMIT`]; a page of the HTTP API or dashboard 1 to [`MAX_PAGE_LIMIT`], and at most [`crate::policy::PAGE_BYTES`] of tasks |
//! | API tokens | [`MIN_TOKEN_BYTES`] to [`MAX_TOKEN_BYTES`] bytes of visible ASCII |
//! | redacted data fields | `data.FIELD[.FIELD...]`, each field a name of at most [`MAX_NAME_BYTES`] bytes |
//! | data filter (`data.FIELD=VALUE`) | a field of 1 to [`MAX_NAME_BYTES`] bytes of letters, digits, `_` and `-`; a value of at most [`MAX_TEXT_BYTES`] bytes without control characters |
//! | list cursor | as written by [`crate::ListCursor`]'s `Display` |
//! | a page of a task's runs | 1 to [`crate::policy::RUNS_PAGE_MAX`] runs; its cursor as written by [`crate::RunCursor`]'s `Display` |
//! | worker concurrency, prefetch | 1 to [`MAX_CONCURRENCY`], 0 to [`MAX_PREFETCH`] |
//! | shutdown grace | 0s to [`MAX_GRACE`] |
//! | a worker's lease (library) | [`MIN_WORKER_LEASE`] to [`MAX_WORKER_LEASE`] (`party worker --lease`: 1s to 1h) |
//! | a worker's poll interval, claim and finish batches, flush delay (library) | up to [`MAX_POLL_INTERVAL`], 1 to [`MAX_WORKER_BATCH`], up to [`MAX_FLUSH_DELAY`] |
//! | a worker's id | as a queue name: 1 to [`MAX_NAME_BYTES`] printable bytes |
//! | unique key | 1 to [`MAX_NAME_BYTES`] bytes, no control or bidirectional-format characters |
//! | unique window (`unique_for`) | 1s to [`MAX_UNIQUE_FOR`] |
//! | short texts (durations, cron, zones, times) | [`MAX_TEXT_BYTES`] bytes |
//! | times | RFC 3339 only (`YYYY-MM-DDTHH:MM:SS`, a fraction of 1 to 9 digits, `Z` or `±HH:MM` within ±23:59); no leap second; see [`time`] |
//! | PostgreSQL URL parameters | `pool_max` 1 to [`MAX_POOL`], `pool_timeout` 1 to [`MAX_POOL_TIMEOUT_SECS`] seconds, `sslmode` and `pooler` from their lists |

use std::borrow::Cow;

use jiff::{SignedDuration, Timestamp};
use serde_json::{Map, Number, Value};

use crate::TaskError;

/// The longest handler or queue name, in bytes.
pub const MAX_NAME_BYTES: usize = 128;

/// The largest task data, in bytes of its stored (canonical JSON) form: 1 MiB.
pub const MAX_DATA_BYTES: usize = 1 << 20;

/// How deeply task data may nest objects and arrays (the data object itself is depth 1).
pub const MAX_DATA_DEPTH: usize = 64;

/// The most attempts an occurrence may be allowed: the largest value PostgreSQL's `integer`
/// holds, so every backend stores the same number.
pub const MAX_ATTEMPTS: u32 = i32::MAX as u32;

/// The most tasks one listing returns.
pub const MAX_LIST_LIMIT: u32 = 1_000_000;

/// The most tasks one page of the HTTP API or the dashboard holds: a page is built in memory,
/// and a task's data may take up to [`MAX_DATA_BYTES`]. More come a page at a time, after
/// each page's cursor; a page of large tasks holds fewer, at most
/// [`crate::policy::PAGE_BYTES`] of them.
pub const MAX_PAGE_LIMIT: u32 = 1_000;

/// The most rows a copy reads and writes at once.
pub const MAX_COPY_BATCH: u32 = 100_000;

/// The most tasks one worker runs at once.
pub const MAX_CONCURRENCY: usize = 10_000;

/// The most tasks one worker claims ahead of free executors.
pub const MAX_PREFETCH: usize = 10_000;

/// The longest shutdown grace a worker may be given.
pub const MAX_GRACE: SignedDuration = SignedDuration::from_hours(24);

/// The shortest lease a worker takes in the library (tests of rescues use short ones); a
/// lease of nothing would give up every attempt as soon as it starts.
pub const MIN_WORKER_LEASE: std::time::Duration = std::time::Duration::from_millis(100);

/// The longest lease a worker takes in the library: a day.
pub const MAX_WORKER_LEASE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The longest a worker sleeps between looks for due tasks: a day.
pub const MAX_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The most tasks a worker claims, or results it writes, in one statement.
pub const MAX_WORKER_BATCH: usize = 10_000;

/// The longest a result waits for others to share its write.
pub const MAX_FLUSH_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// The longest window after a task finishes in which its unique key still refuses another.
pub const MAX_UNIQUE_FOR: SignedDuration = SignedDuration::from_hours(366 * 24);

/// The longest short text (a duration, a cron expression, a time zone, a time), in bytes.
pub const MAX_TEXT_BYTES: usize = 256;

/// The most future occurrences one request lists.
pub const MAX_OCCURRENCES: usize = 1000;

/// The shortest token `party serve` accepts.
pub const MIN_TOKEN_BYTES: usize = 16;

/// The longest token `party serve` accepts.
pub const MAX_TOKEN_BYTES: usize = 1024;

/// How many characters of an input an error message quotes.
pub const QUOTE_CHARS: usize = 60;

// ---------------------------------------------------------------------------------------------
// Echoing input back

/// `s` safe to print to a terminal: control characters (C0, DEL, C1) and bidirectional-format
/// characters are written as `\u{..}` escapes (`\n`, `\r` and `\t` as themselves escaped), so
/// an ESC byte in stored data cannot drive the terminal. Other text is unchanged.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(unsafe_to_print) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if unsafe_to_print(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn unsafe_to_print(c: char) -> bool {
    c.is_control() || is_bidi_format(c)
}

/// The characters that reorder text on screen (U+202A..U+202E, U+2066..U+2069, U+200E, U+200F,
/// U+061C): harmless in data, misleading in a name or a table.
fn is_bidi_format(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

/// `s` quoted for an error message: `'text'`, or its first [`QUOTE_CHARS`] characters and
/// `...` with the full length when it is longer, control characters escaped (see
/// [`printable`]).
pub fn quote(s: &str) -> String {
    if s.chars().count() <= QUOTE_CHARS {
        return format!("'{}'", printable(s));
    }
    let head: String = s.chars().take(QUOTE_CHARS).collect();
    format!("'{}...' ({} bytes)", printable(&head), s.len())
}

// ---------------------------------------------------------------------------------------------
// Names

/// A handler name: 1 to [`MAX_NAME_BYTES`] bytes without control or bidirectional-format
/// characters.
///
/// # Errors
/// [`TaskError::Invalid`] saying which rule the name breaks.
pub fn handler_name(name: &str) -> Result<(), TaskError> {
    check_name(name, "handler name", "a registered handler such as 'noop'")
}

/// A queue name: 1 to [`MAX_NAME_BYTES`] bytes without control or bidirectional-format
/// characters, and neither `.` nor `..`. The same rule holds for the queues a worker takes
/// from.
///
/// # Errors
/// [`TaskError::Invalid`] saying which rule the name breaks.
pub fn queue_name(name: &str) -> Result<(), TaskError> {
    let example = "a name like 'default' or 'emails'";
    check_name(name, "queue name", example)?;
    // A queue's name is a segment of its addresses (`/queues/{name}`, `/api/v1/queues/{name}`),
    // where `.` and `..` mean this place and the one above it.
    if name == "." || name == ".." {
        return Err(TaskError::invalid(format!(
            "the queue name {} cannot be used: '.' and '..' are read as parts of an address; \
             give {example}",
            quote(name)
        )));
    }
    Ok(())
}

/// A worker's id (it is written into every run row it records): as a queue name, 1 to
/// [`MAX_NAME_BYTES`] bytes without control or bidirectional-format characters.
///
/// # Errors
/// [`TaskError::Invalid`] saying which rule the id breaks.
pub fn worker_id(id: &str) -> Result<(), TaskError> {
    check_name(
        id,
        "worker id",
        "an id like 'web-1' or leave it out for one of its own",
    )
}

/// A one-off task's unique key: 1 to [`MAX_NAME_BYTES`] bytes without control or
/// bidirectional-format characters.
///
/// # Errors
/// [`TaskError::Invalid`] saying which rule the key breaks.
pub fn unique_key(key: &str) -> Result<(), TaskError> {
    check_name(
        key,
        "unique key",
        "a key such as 'invoice-2027-01' or 'customer:42'",
    )
}

/// A queue's concurrency limit (`party queue limit Q --concurrency N`): 1 to
/// [`MAX_CONCURRENCY`].
///
/// # Errors
/// [`TaskError::Invalid`].
pub fn queue_concurrency(n: i64) -> Result<u32, TaskError> {
    in_range(
        i128::from(n),
        "the queue's concurrency",
        1,
        MAX_CONCURRENCY as i64,
        "5 (at most 5 of the queue's tasks run at once)",
    )
    .map(|n| n as u32)
}

const RATE_EXAMPLE: &str = "give starts per window like 10/1s, 100/1m or 1000/1h";

/// A rate limit's parts: 1 to [`crate::queues::MAX_RATE_COUNT`] starts per window of whole
/// milliseconds from 1ms to [`crate::queues::MAX_RATE_PERIOD`].
///
/// # Errors
/// [`TaskError::Invalid`].
pub fn rate_parts(count: i64, period: SignedDuration) -> Result<(), TaskError> {
    use crate::queues::{MAX_RATE_COUNT, MAX_RATE_PERIOD};
    if count < 1 || count > i64::from(MAX_RATE_COUNT) {
        return Err(TaskError::invalid(format!(
            "a rate allows 1 to {MAX_RATE_COUNT} starts per window, not {count}: {RATE_EXAMPLE}"
        )));
    }
    if period < SignedDuration::from_millis(1)
        || period > MAX_RATE_PERIOD
        || period.subsec_nanos() % 1_000_000 != 0
    {
        return Err(TaskError::invalid(format!(
            "a rate's window is whole milliseconds from 1ms to 24h: {RATE_EXAMPLE}"
        )));
    }
    Ok(())
}

/// A rate limit as `COUNT/PERIOD` (`10/1s`, `100/1m`, `5/1h`; a bare unit means one of it).
///
/// # Errors
/// [`TaskError::Invalid`] saying what is wrong.
pub fn rate(s: &str) -> Result<crate::queues::Rate, TaskError> {
    short_text(s, "the rate")?;
    let bad = || TaskError::invalid(format!("{} is not a rate: {RATE_EXAMPLE}", quote(s)));
    let (count, period) = s.trim().split_once('/').ok_or_else(bad)?;
    let count: i64 = count.trim().parse().map_err(|_| bad())?;
    let period = period.trim();
    let period = if period.starts_with(|c: char| c.is_ascii_digit()) {
        period.to_string()
    } else {
        format!("1{period}")
    };
    let period = rate_period(&period).ok_or_else(bad)?;
    rate_parts(count, period)?;
    Ok(crate::queues::Rate {
        count: count as u32,
        period,
    })
}

/// A rate's window: parts like `1h`, `30m`, `1s`, `250ms`, largest first (`1m30s`), each
/// unit once.
fn rate_period(s: &str) -> Option<SignedDuration> {
    let mut total: i64 = 0;
    let mut rest = s;
    // The unit of the last part: each must be smaller than the one before.
    let mut last = i64::MAX;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        let n: i64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (1, 2)
        } else if rest.starts_with('s') {
            (1000, 1)
        } else if rest.starts_with('m') {
            (60_000, 1)
        } else if rest.starts_with('h') {
            (3_600_000, 1)
        } else {
            return None;
        };
        rest = &rest[len..];
        if unit >= last {
            return None;
        }
        last = unit;
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    Some(SignedDuration::from_millis(total))
}

/// The data field a per-key limit applies per value of, as the store holds it: a top-level
/// field name of 1 to 64 ASCII letters, digits, `_` or `-`.
///
/// # Errors
/// [`TaskError::Invalid`].
pub fn per_key_field(field: &str) -> Result<(), TaskError> {
    let ok = !field.is_empty()
        && field.len() <= 64
        && field
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !ok {
        return Err(TaskError::invalid(format!(
            "{} is not a top-level data field to limit per: use data.FIELD with a name of 1 to 64 \
             letters, digits, '_' or '-', e.g. data.customer",
            quote(field)
        )));
    }
    Ok(())
}

/// `--per data.FIELD`: the field's name.
///
/// # Errors
/// [`TaskError::Invalid`].
pub fn per_key(s: &str) -> Result<String, TaskError> {
    let field = s.trim().strip_prefix("data.").ok_or_else(|| {
        TaskError::invalid(format!(
            "{} is not a data field: write it as data.FIELD, e.g. data.customer",
            quote(s)
        ))
    })?;
    per_key_field(field)?;
    Ok(field.to_string())
}

/// How long after a task finishes its unique key still refuses another: whole seconds from
/// 1s to [`MAX_UNIQUE_FOR`].
///
/// # Errors
/// [`TaskError::Invalid`].
pub fn unique_for(d: SignedDuration) -> Result<(), TaskError> {
    if d < SignedDuration::from_secs(1) || d > MAX_UNIQUE_FOR || d.subsec_nanos() != 0 {
        return Err(TaskError::invalid(format!(
            "the unique window {} is out of range: give whole seconds from 1s to 366d, e.g. 24h",
            crate::recurrence::format_duration(d)
        )));
    }
    Ok(())
}

fn check_name(name: &str, what: &str, example: &str) -> Result<(), TaskError> {
    if name.is_empty() {
        return Err(TaskError::invalid(format!(
            "the {what} is empty: give {example}"
        )));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(TaskError::invalid(format!(
            "the {what} {} is too long: at most {MAX_NAME_BYTES} bytes; give {example}",
            quote(name)
        )));
    }
    if let Some(c) = name.chars().find(|&c| unsafe_to_print(c)) {
        return Err(TaskError::invalid(format!(
            "the {what} {} contains the control character U+{:04X}: names are printable text; \
             give {example}",
            quote(name),
            c as u32
        )));
    }
    if name.trim() != name {
        return Err(TaskError::invalid(format!(
            "the {what} {} starts or ends with white space, which no one sees when it is \
             shown: give {example}",
            quote(name)
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Task data

/// Check task data and bring it to its canonical form, the form that is stored and that the
/// singleton rule compares: a JSON object, nested at most [`MAX_DATA_DEPTH`] deep, at most
/// [`MAX_DATA_BYTES`] bytes stored, keys sorted, and every number with an integral value
/// written as an integer (`1.0` and `1e0` become `1`, `-0.0` becomes `0`), so equal numbers
/// are equal data. Numbers with a fraction stay floats.
///
/// Returns the canonical value and its stored JSON text.
///
/// # Errors
/// [`TaskError::Invalid`] naming the rule the data breaks.
pub fn canonical_data(data: Value) -> Result<(Value, String), TaskError> {
    check_data(&data)?;
    depth(&data)?;
    no_nul(&data)?;
    let data = canonical_numbers(data);
    let text = serde_json::to_string(&data)
        .map_err(|e| TaskError::invalid(format!("task data cannot be written as JSON: {e}")))?;
    if text.len() > MAX_DATA_BYTES {
        return Err(TaskError::invalid(format!(
            "task data is too large: {} bytes as JSON, at most {MAX_DATA_BYTES}; keep large \
             payloads elsewhere (a file, a table) and put their key in the data",
            text.len()
        )));
    }
    Ok((data, text))
}

/// Read task data from JSON text, as the command line and `add --from` take it: valid JSON,
/// within [`MAX_DATA_BYTES`], integers within 64 bits (larger ones would silently lose
/// digits), and then everything [`canonical_data`] checks. `example` is how to write it in the
/// caller's syntax, for the message.
///
/// # Errors
/// [`TaskError::Invalid`] naming the rule the text breaks.
pub fn data_text(text: &str, example: &str) -> Result<Value, TaskError> {
    if text.len() > MAX_DATA_BYTES {
        return Err(TaskError::invalid(format!(
            "task data is too large: {} bytes, at most {MAX_DATA_BYTES}; keep large payloads \
             elsewhere (a file, a table) and put their key in the data",
            text.len()
        )));
    }
    let value: Value = serde_json::from_str(text).map_err(|e| {
        TaskError::invalid(format!(
            "not valid JSON ({e}); give a JSON object, e.g. {example}"
        ))
    })?;
    integers_fit(text)?;
    Ok(canonical_data(value)?.0)
}

/// Refuse integer literals in JSON `text` that do not fit in 64 bits: parsed, they would
/// become floats and lose digits.
///
/// # Errors
/// [`TaskError::Invalid`] quoting the first such number.
pub fn integers_fit(text: &str) -> Result<(), TaskError> {
    let bytes = text.as_bytes();
    let (mut i, mut in_string) = (0, false);
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match b {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        if b == b'"' {
            in_string = true;
            i += 1;
            continue;
        }
        if b == b'-' || b.is_ascii_digit() {
            let start = i;
            while i < bytes.len()
                && matches!(bytes[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
            {
                i += 1;
            }
            let literal = &text[start..i];
            let integral = !literal.contains(['.', 'e', 'E']);
            if integral && literal.parse::<i64>().is_err() && literal.parse::<u64>().is_err() {
                return Err(TaskError::invalid(format!(
                    "the number {} in the data is too large: integers must lie between {} and \
                     {}; write a larger one as a string, e.g. \"{}\"",
                    quote(literal),
                    i64::MIN,
                    u64::MAX,
                    quote(literal).trim_matches('\'')
                )));
            }
            continue;
        }
        i += 1;
    }
    Ok(())
}

/// Check that task data is a JSON object, as every task's data must be.
///
/// # Errors
/// [`TaskError::Invalid`] naming what the value is instead.
pub fn check_data(data: &Value) -> Result<(), TaskError> {
    if data.is_object() {
        return Ok(());
    }
    let kind = match data {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    Err(TaskError::invalid(format!(
        "task data must be a JSON object like {{\"arg1\": \"hello\"}}, not {kind}"
    )))
}

/// Checked without recursion, so even a value nested far too deep is refused, not a crash.
fn depth(data: &Value) -> Result<(), TaskError> {
    let mut stack: Vec<(&Value, usize)> = vec![(data, 1)];
    while let Some((v, d)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Object(m) => Box::new(m.values()),
            Value::Array(a) => Box::new(a.iter()),
            _ => continue,
        };
        if d > MAX_DATA_DEPTH {
            return Err(TaskError::invalid(format!(
                "task data nests objects and arrays more than {MAX_DATA_DEPTH} deep; flatten it"
            )));
        }
        stack.extend(children.map(|c| (c, d + 1)));
    }
    Ok(())
}

/// Refuse the NUL character (U+0000) in any key or string: PostgreSQL's JSON cannot hold it,
/// so a task carrying it would be stored as text but break every read of its data there (data
/// filters, per-key limits). Refused on both backends, so a store can move between them.
fn no_nul(data: &Value) -> Result<(), TaskError> {
    let refuse = |what: &str| {
        TaskError::invalid(format!(
            "task data contains the NUL character (U+0000) in {what}, which cannot be stored; \
             remove it, or encode the value (e.g. as base64)"
        ))
    };
    let mut stack: Vec<&Value> = vec![data];
    while let Some(v) = stack.pop() {
        match v {
            Value::String(text) if text.contains('\0') => {
                return Err(refuse(&format!("the string {}", quote(text))));
            }
            Value::Object(m) => {
                if let Some(key) = m.keys().find(|k| k.contains('\0')) {
                    return Err(refuse(&format!("the key {}", quote(key))));
                }
                stack.extend(m.values());
            }
            Value::Array(a) => stack.extend(a.iter()),
            _ => {}
        }
    }
    Ok(())
}

fn canonical_numbers(v: Value) -> Value {
    match v {
        Value::Number(n) => Value::Number(canonical_number(n)),
        Value::Array(a) => Value::Array(a.into_iter().map(canonical_numbers).collect()),
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (k, canonical_numbers(v)))
                .collect::<Map<_, _>>(),
        ),
        v => v,
    }
}

/// A float with an integral value that fits in 64 bits becomes that integer.
fn canonical_number(n: Number) -> Number {
    let Some(f) = n.as_f64().filter(|_| n.is_f64()) else {
        return n;
    };
    if f.fract() != 0.0 || !f.is_finite() {
        return n;
    }
    // i64::MIN is -2^63 exactly; 2^64 is the first value past u64::MAX.
    if (-9_223_372_036_854_775_808.0..0.0).contains(&f) {
        Number::from(f as i64)
    } else if (0.0..18_446_744_073_709_551_616.0).contains(&f) {
        Number::from(f as u64)
    } else {
        n
    }
}

// ---------------------------------------------------------------------------------------------
// Numbers

/// A whole number written in `s`, between `min` and `max`. The message for a number out of
/// range says "too large" or "too small" with the limit; for text that is no number it says so.
/// `what` names the value ("max attempts"), `example` shows a good one.
///
/// # Errors
/// [`TaskError::Invalid`].
pub fn whole_number(
    s: &str,
    what: &str,
    min: i64,
    max: i64,
    example: &str,
) -> Result<i64, TaskError> {
    let t = s.trim();
    let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TaskError::invalid(format!(
            "{} is not a whole number: {what} is a whole number from {min} to {max}, e.g. {example}",
            quote(s)
        )));
    }
    let negative = t.starts_with('-');
    // Anything too long for i128 is out of range anyway.
    let n = t
        .parse::<i128>()
        .unwrap_or(if negative { i128::MIN } else { i128::MAX });
    in_range(n, what, min, max, example).map(|n| n as i64)
}

pub(crate) fn in_range(
    n: i128,
    what: &str,
    min: i64,
    max: i64,
    example: &str,
) -> Result<i128, TaskError> {
    if n > i128::from(max) {
        return Err(TaskError::invalid(format!(
            "{what} is too large: the maximum is {max}, e.g. {example}"
        )));
    }
    if n < i128::from(min) {
        return Err(TaskError::invalid(format!(
            "{what} is too small: it must be at least {min}, e.g. {example}"
        )));
    }
    Ok(n)
}

/// A token for `party serve`: [`MIN_TOKEN_BYTES`] to [`MAX_TOKEN_BYTES`] bytes of visible
/// ASCII (no spaces). The message never quotes the token: it is a secret.
pub fn api_token(token: &str, what: &str) -> Result<(), TaskError> {
    if token.len() < MIN_TOKEN_BYTES || token.len() > MAX_TOKEN_BYTES {
        return Err(TaskError::invalid(format!(
            "{what} is {} bytes long: give {MIN_TOKEN_BYTES} to {MAX_TOKEN_BYTES} (e.g. 32 random \
             bytes as hex: `openssl rand -hex 32`)",
            token.len()
        )));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(TaskError::invalid(format!(
            "{what} has a character that is not visible ASCII (a space, a control character or \
             non-ASCII): use letters, digits and punctuation only"
        )));
    }
    Ok(())
}

/// A data field to hide (`serve --redact`): `data.FIELD`, or `data.FIELD.INNER` for a field of
/// a nested object. Returns the field names below `data`.
pub fn redact_path(path: &str) -> Result<Vec<String>, TaskError> {
    let bad = |why: &str| {
        TaskError::invalid(format!(
            "{} is not a data field to redact: {why}; write it like data.card or data.payment.token",
            quote(path)
        ))
    };
    let rest = path
        .trim()
        .strip_prefix("data.")
        .ok_or_else(|| bad("it must start with data."))?;
    let fields: Vec<String> = rest.split('.').map(str::to_string).collect();
    if fields.len() > MAX_DATA_DEPTH {
        return Err(bad("it nests deeper than task data may"));
    }
    for f in &fields {
        if f.is_empty() || f.len() > MAX_NAME_BYTES || f.chars().any(unsafe_to_print) {
            return Err(bad("each field name is 1 to 128 printable bytes"));
        }
    }
    Ok(fields)
}

/// A filter on a data field written `FIELD=VALUE` (`party list --data customer=acme`; a
/// leading `data.` is allowed, as the HTTP API writes it): checked by [`data_filter`].
///
/// # Errors
/// [`TaskError::Invalid`] when there is no `=` or either part breaks its rule.
pub fn data_match(s: &str) -> Result<crate::DataMatch, TaskError> {
    let Some((field, value)) = s.split_once('=') else {
        return Err(TaskError::invalid(format!(
            "{} is not a data filter: write FIELD=VALUE, e.g. customer=acme",
            quote(s)
        )));
    };
    let field = field.trim();
    data_filter(field.strip_prefix("data.").unwrap_or(field), value)
}

/// A filter on a top-level data field (see [`crate::DataMatch`]): the field 1 to
/// [`MAX_NAME_BYTES`] bytes of ASCII letters, digits, `_` and `-`; the value at most
/// [`MAX_TEXT_BYTES`] bytes without control characters (it may be empty: it then matches an
/// empty string).
///
/// # Errors
/// [`TaskError::Invalid`] saying which part is wrong and how to write it.
pub fn data_filter(field: &str, value: &str) -> Result<crate::DataMatch, TaskError> {
    if field.is_empty()
        || field.len() > MAX_NAME_BYTES
        || !field
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(TaskError::invalid(format!(
            "the data field {} cannot be filtered on: a filter names one top-level field of 1 to \
             {MAX_NAME_BYTES} letters, digits, _ or -, e.g. customer=acme",
            quote(field)
        )));
    }
    if value.len() > MAX_TEXT_BYTES {
        return Err(TaskError::invalid(format!(
            "the value of data.{field} {} is too long to filter on: at most {MAX_TEXT_BYTES} bytes",
            quote(value)
        )));
    }
    if value.chars().any(unsafe_to_print) {
        return Err(TaskError::invalid(format!(
            "the value of data.{field} {} contains a control character: filter on printable text",
            quote(value)
        )));
    }
    Ok(crate::DataMatch {
        field: field.to_string(),
        value: value.to_string(),
    })
}

/// How many future occurrences to show (`party next --count`, the API's `count`): 1 to
/// [`MAX_OCCURRENCES`].
pub fn occurrence_count(s: &str, example: &str) -> Result<usize, TaskError> {
    whole_number(s, "the count", 1, MAX_OCCURRENCES as i64, example).map(|n| n as usize)
}

/// A listing's limit given as text: 1 to [`MAX_LIST_LIMIT`].
pub fn list_limit(s: &str, example: &str) -> Result<u32, TaskError> {
    whole_number(s, "the limit", 1, MAX_LIST_LIMIT.into(), example).map(|n| n as u32)
}

/// A page's limit given as text (the HTTP API, the dashboard): 1 to [`MAX_PAGE_LIMIT`].
pub fn page_limit(s: &str, example: &str) -> Result<u32, TaskError> {
    whole_number(s, "the limit", 1, MAX_PAGE_LIMIT.into(), example).map(|n| n as u32)
}

/// Rows a copy reads and writes at once (`party copy --batch`): 1 to [`MAX_COPY_BATCH`].
pub fn copy_batch(s: &str, example: &str) -> Result<u32, TaskError> {
    whole_number(s, "the batch size", 1, MAX_COPY_BATCH.into(), example).map(|n| n as u32)
}

/// A listing's cursor, as written by [`crate::ListCursor`] (`due-microseconds_id`).
pub fn list_cursor(s: &str) -> Result<crate::ListCursor, TaskError> {
    let bad = || {
        TaskError::invalid(format!(
            "{} is not a list cursor: pass the next_cursor of the previous page as it was given",
            quote(s)
        ))
    };
    let (micros, id) = s.split_once('_').ok_or_else(bad)?;
    let micros: i64 = micros.parse().map_err(|_| bad())?;
    let due_at = Timestamp::from_microsecond(micros).map_err(|_| bad())?;
    let id = id.parse().map_err(|_| bad())?;
    Ok(crate::ListCursor { due_at, id })
}

/// A page of a task's runs given as text (`GET /api/v1/tasks/{id}/runs?limit=`): 1 to
/// [`crate::policy::RUNS_PAGE_MAX`].
pub fn runs_limit(s: &str, example: &str) -> Result<u32, TaskError> {
    whole_number(
        s,
        "the limit",
        1,
        crate::policy::RUNS_PAGE_MAX.into(),
        example,
    )
    .map(|n| n as u32)
}

/// A cursor into a task's runs, as written by [`crate::RunCursor`] (a whole number).
pub fn run_cursor(s: &str) -> Result<crate::RunCursor, TaskError> {
    match s.parse::<i64>() {
        Ok(position) if position > 0 && !s.starts_with('+') => Ok(crate::RunCursor { position }),
        _ => Err(TaskError::invalid(format!(
            "{} is not a runs cursor: pass the runs_next_cursor or next_cursor of the previous \
             page as it was given",
            quote(s)
        ))),
    }
}

/// Max attempts per occurrence: 1 (no retries) to [`MAX_ATTEMPTS`], the same on every backend.
///
/// # Errors
/// [`TaskError::Invalid`] for 0 or more than [`MAX_ATTEMPTS`].
pub fn max_attempts(n: i64) -> Result<u32, TaskError> {
    in_range(
        i128::from(n),
        "max attempts",
        1,
        i64::from(MAX_ATTEMPTS),
        "3 (1 means no retries)",
    )
    .map(|n| n as u32)
}

/// A priority: any `i32` (lower runs first).
///
/// # Errors
/// [`TaskError::Invalid`] beyond the `i32` range.
pub fn priority(n: i64) -> Result<i32, TaskError> {
    in_range(
        i128::from(n),
        "the priority",
        i64::from(i32::MIN),
        i64::from(i32::MAX),
        "-10 (lower runs first; 0 is the default)",
    )
    .map(|n| n as i32)
}

// ---------------------------------------------------------------------------------------------
// Texts, times and durations

/// A short text (a duration, a cron expression, a time zone name, a time): at most
/// [`MAX_TEXT_BYTES`] bytes. `what` names it.
///
/// # Errors
/// [`TaskError::Invalid`] for longer text.
pub fn short_text(s: &str, what: &str) -> Result<(), TaskError> {
    if s.len() > MAX_TEXT_BYTES {
        return Err(TaskError::invalid(format!(
            "{what} {} is too long: at most {MAX_TEXT_BYTES} bytes",
            quote(s)
        )));
    }
    Ok(())
}

/// A duration as [`crate::recurrence::parse_duration`] reads it (`90s`, `1h30m`; spaces
/// between parts are allowed, `1h 30m`), after the length check.
///
/// # Errors
/// [`TaskError::Invalid`].
pub fn duration(s: &str) -> Result<SignedDuration, TaskError> {
    short_text(s, "the duration")?;
    crate::recurrence::parse_duration(s).map_err(TaskError::invalid)
}

/// A worker's shutdown grace: a [`duration`] of at most [`MAX_GRACE`].
///
/// # Errors
/// [`TaskError::Invalid`].
pub fn grace(s: &str) -> Result<SignedDuration, TaskError> {
    let d = duration(s)?;
    if d > MAX_GRACE {
        return Err(TaskError::invalid(format!(
            "the grace {} is too long: at most 24h (default 30s)",
            quote(s)
        )));
    }
    Ok(d)
}

/// How a time is written, for messages: RFC 3339 and an example of it.
pub const TIME_FORM: &str = "write RFC 3339 with Z or an offset, the time to the second, \
                             e.g. 2027-01-31T09:00:00Z or 2027-01-31T10:00:00+01:00";

/// An instant in RFC 3339, the one form of a time that every front end takes (`add --at`,
/// `"at"` in `add --from` and the HTTP API, the dashboard's form):
/// `YYYY-MM-DDTHH:MM:SS`, an optional fraction of a second of 1 to 9 digits after a `.`, and
/// `Z` or a numeric offset `+HH:MM` / `-HH:MM` within ±23:59, e.g. `2027-01-31T09:00:00Z`. As
/// RFC 3339 allows, `t` and `z` may be lower case and a space may stand for the `T`; white
/// space around the time is ignored. The other forms of ISO 8601 (no seconds, no
/// separators, `+0100` or `+01` offsets, six-digit years, a `,` before the fraction) and time
/// zone annotations (`[Europe/Berlin]`) are refused, and so is a leap second (`:60`), rather
/// than read as `:59`.
///
/// # Errors
/// [`TaskError::Invalid`] saying what is wrong and showing the form ([`TIME_FORM`]).
pub fn time(s: &str) -> Result<Timestamp, TaskError> {
    short_text(s, "the time")?;
    let t = s.trim();
    let bad = |why: &str| TaskError::invalid(format!("{} {why}; {TIME_FORM}", quote(s)));
    if t.contains('[') {
        return Err(bad("has a time zone annotation"));
    }
    let b = t.as_bytes();
    let digits = |from: usize, to: usize| {
        b.get(from..to)
            .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
    };
    let at = |i: usize, allowed: &[u8]| b.get(i).is_some_and(|c| allowed.contains(c));
    let date_time = digits(0, 4)
        && at(4, b"-")
        && digits(5, 7)
        && at(7, b"-")
        && digits(8, 10)
        && at(10, b"Tt ")
        && digits(11, 13)
        && at(13, b":")
        && digits(14, 16)
        && at(16, b":")
        && digits(17, 19);
    if !date_time {
        return Err(bad("is not a time"));
    }
    let mut rest = &b[19..];
    if let Some(fraction) = rest.strip_prefix(b".") {
        let n = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=9).contains(&n) {
            return Err(bad(
                "has a fraction of a second that is not 1 to 9 digits after the '.'",
            ));
        }
        rest = &fraction[n..];
    }
    match rest {
        [] => return Err(bad("has no offset")),
        [b'Z' | b'z'] => {}
        [b'+' | b'-', h1, h2, b':', m1, m2]
            if [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()) =>
        {
            let number = |a: u8, b: u8| (a - b'0') * 10 + (b - b'0');
            if number(*h1, *h2) > 23 || number(*m1, *m2) > 59 {
                let offset = String::from_utf8_lossy(rest);
                return Err(bad(&format!("has the offset {offset}, beyond ±23:59")));
            }
        }
        _ => return Err(bad("has an offset that is not Z or ±HH:MM")),
    }
    if leap_second(t) {
        return Err(TaskError::invalid(format!(
            "{} is a leap second (:60), which party does not store; give :59 or the next \
             minute's :00",
            quote(s)
        )));
    }
    t.parse::<Timestamp>()
        .map_err(|e| bad(&format!("is not a time ({e})")))
}

/// Whether the time of day in an RFC 3339 text (its shape checked) has the second 60.
fn leap_second(t: &str) -> bool {
    t.get(17..19) == Some("60")
}

/// The earliest time a task may be given: the first instant of the year 1 (PostgreSQL's
/// `timestamptz` reaches back to 4713 BC, SQLite's integers further; one bound for both).
pub const MIN_TIME: Timestamp = Timestamp::constant(-62_135_596_800, 0);

/// A task's explicit time, as every backend stores it: from the year 1 ([`MIN_TIME`]) to the
/// end of the year 9999 (the latest a [`Timestamp`] holds).
///
/// # Errors
/// [`TaskError::Invalid`] for a time before the year 1.
pub fn task_time(at: Timestamp) -> Result<(), TaskError> {
    if at < MIN_TIME {
        return Err(TaskError::invalid(format!(
            "the time {} is before the year 1, the earliest a task may be given; give a later \
             time",
            crate::format_time(at)
        )));
    }
    Ok(())
}

/// The rule the command line and other front ends apply to an explicit first time: not in the
/// past. (The library's [`crate::NewTask::at`] allows a past time; see its documentation.)
/// `what` names where the time came from (`--at`, `"at"`).
///
/// # Errors
/// [`TaskError::Invalid`] for a time before `now`.
pub fn not_past(at: Timestamp, now: Timestamp, what: &str) -> Result<(), TaskError> {
    if at < now {
        return Err(TaskError::invalid(format!(
            "{what} {} is in the past (now is {}); give a future time, or leave it out to run now",
            crate::format_time(at),
            crate::format_time(now)
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL URL parameters

/// The most connections one process's PostgreSQL pool may open (`?pool_max=`).
pub const MAX_POOL: usize = 1000;

/// The longest a statement may wait for a free pooled connection, in seconds
/// (`?pool_timeout=`).
pub const MAX_POOL_TIMEOUT_SECS: u64 = 3600;

/// How a PostgreSQL connection uses TLS: the `sslmode` values as libpq reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, unverified; plain otherwise (libpq's default).
    Prefer,
    /// Always TLS; the certificate is checked against `sslrootcert` only when a root
    /// certificate file is there (as libpq does), otherwise not at all.
    Require,
    /// Always TLS, the server's certificate signed by a CA in `sslrootcert`.
    VerifyCa,
    /// As `VerifyCa`, and the certificate names the host connected to.
    VerifyFull,
}

impl SslMode {
    /// The name as written in a URL.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Read an `sslmode` value.
///
/// # Errors
/// [`TaskError::Invalid`] naming the accepted values.
pub fn ssl_mode(value: &str) -> Result<SslMode, TaskError> {
    Ok(match value {
        "disable" => SslMode::Disable,
        "prefer" => SslMode::Prefer,
        "require" => SslMode::Require,
        "verify-ca" => SslMode::VerifyCa,
        "verify-full" => SslMode::VerifyFull,
        // libpq's `allow` (plain first, TLS only if the server insists) is refused too.
        _ => {
            return Err(TaskError::invalid(format!(
                "sslmode={} is not a mode party knows: write sslmode=disable, prefer, require, \
                 verify-ca or verify-full",
                quote(value)
            )));
        }
    })
}

/// What sits between party and PostgreSQL (`?pooler=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooler {
    /// A direct connection, or a pooler in session mode: a connection is one server session.
    None,
    /// A pooler in transaction mode (PgBouncer's `pool_mode = transaction`): consecutive
    /// transactions may run on different server sessions, so nothing may rely on session
    /// state (named prepared statements, `LISTEN`).
    Transaction,
}

/// Read a `pooler` value: `none` (also `session`) or `transaction`.
///
/// # Errors
/// [`TaskError::Invalid`] naming the accepted values.
pub fn pooler(value: &str) -> Result<Pooler, TaskError> {
    match value {
        "none" | "session" => Ok(Pooler::None),
        "transaction" => Ok(Pooler::Transaction),
        _ => Err(TaskError::invalid(format!(
            "pooler={} is not a pooler mode party knows: write pooler=transaction when the URL \
             points at PgBouncer (or another pooler) in transaction mode, pooler=none otherwise",
            quote(value)
        ))),
    }
}

/// Read a `pool_max` value: connections per process, 1 to [`MAX_POOL`].
///
/// # Errors
/// [`TaskError::Invalid`] for anything else.
pub fn pool_max(value: &str) -> Result<usize, TaskError> {
    match value.parse::<usize>() {
        Ok(n) if (1..=MAX_POOL).contains(&n) => Ok(n),
        _ => Err(TaskError::invalid(format!(
            "pool_max={} is not a connection count: write a whole number from 1 to {MAX_POOL} \
             (the connections one process may open; the server's max_connections bounds all \
             processes together)",
            quote(value)
        ))),
    }
}

/// Read a `pool_timeout` value: whole seconds from 1 to [`MAX_POOL_TIMEOUT_SECS`].
///
/// # Errors
/// [`TaskError::Invalid`] for anything else.
pub fn pool_timeout(value: &str) -> Result<std::time::Duration, TaskError> {
    match value.parse::<u64>() {
        Ok(n) if (1..=MAX_POOL_TIMEOUT_SECS).contains(&n) => Ok(std::time::Duration::from_secs(n)),
        _ => Err(TaskError::invalid(format!(
            "pool_timeout={} is not a wait in seconds: write a whole number from 1 to \
             {MAX_POOL_TIMEOUT_SECS} (how long a statement waits for a free connection)",
            quote(value)
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// Database URLs

/// How a database URL is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseKind {
    /// A `postgres://` or `postgresql://` URL.
    Postgres,
    /// A SQLite file path, bare or after `sqlite:` / `sqlite://`.
    Sqlite,
}

/// The file a SQLite database URL names: the text after `sqlite://` or `sqlite:`, or the
/// whole text when it has neither.
pub fn sqlite_path(url: &str) -> &str {
    let url = url.trim();
    url.strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url)
}

/// Decide what a database URL names, refusing what only looks like a path: anything with
/// `://`, or starting with a scheme-like `word:` (`postgress:`, `mysql:`), that is not a
/// supported URL. Such a text is far more likely a misspelt URL than a file name; to use a
/// file whose name starts like that, write `./` before it or `sqlite:`. The message never
/// shows a password.
///
/// # Errors
/// [`TaskError::Invalid`] for an empty or unsupported URL.
pub fn database_url(url: &str) -> Result<DatabaseKind, TaskError> {
    let url = url.trim();
    if url.is_empty() {
        return Err(TaskError::invalid(
            "the database URL is empty: give a SQLite file path or a postgres:// URL",
        ));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(DatabaseKind::Postgres);
    }
    if url.starts_with("sqlite:") {
        let path = sqlite_path(url);
        if path.is_empty() {
            return Err(TaskError::invalid(format!(
                "the database URL {} names no file: give one after it, like sqlite://party.db \
                 (with nothing, SQLite would open a temporary database that is gone when it \
                 closes)",
                quote(url)
            )));
        }
        if path.contains('?') {
            return Err(TaskError::invalid(format!(
                "the database URL {} has options after '?', which a SQLite store does not \
                 take (they would become part of the file's name): give the file alone, like \
                 sqlite://party.db",
                quote(url)
            )));
        }
        return Ok(DatabaseKind::Sqlite);
    }
    let scheme = scheme(url);
    if let Some(s) = scheme
        .filter(|s| s.eq_ignore_ascii_case("postgres") || s.eq_ignore_ascii_case("postgresql"))
    {
        let fix = if url[s.len()..].starts_with("://") {
            "write the scheme in lowercase"
        } else {
            "write '://' after the scheme"
        };
        return Err(TaskError::invalid(format!(
            "the database URL {} is not a PostgreSQL URL party can read: {fix}, like \
             postgres://user:password@host:5432/database",
            quote(&redact_url(url))
        )));
    }
    if scheme.is_some() || url.contains("://") {
        let named = scheme
            .map(|s| format!("the scheme '{}'", printable(s)))
            .unwrap_or_else(|| "no scheme".to_string());
        return Err(TaskError::invalid(format!(
            "the database URL {} has {named}, which party does not support: use \
             postgres://user:password@host:5432/database for PostgreSQL, or a SQLite file path \
             (write ./ or sqlite: before a file name that contains ':')",
            quote(&redact_url(url))
        )));
    }
    Ok(DatabaseKind::Sqlite)
}

/// The scheme of a text that starts like a URL: a letter, then letters, digits, `+`, `-` or
/// `.`, then `:`; at least two characters, so a Windows drive (`C:\`) is not one.
fn scheme(s: &str) -> Option<&str> {
    let (head, _) = s.split_once(':')?;
    let mut chars = head.chars();
    let first = chars.next()?;
    (head.len() >= 2
        && first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
    .then_some(head)
}

/// `url` with its password replaced by `***`: the password of the user information
/// (`scheme://user:secret@host`, also without `//`) and any `password=` parameter. Text that
/// does not start like a URL is returned unchanged. Use it in every message that shows a URL.
pub fn redact_url(url: &str) -> String {
    let Some(scheme) = scheme(url) else {
        // No scheme: still hide what looks like `user:password@`.
        return match userinfo_without_scheme(url) {
            Some((start, colon, at)) => format!("{}:***{}", &url[..start + colon], &url[at..]),
            None => url.to_string(),
        };
    };
    let after = &url[scheme.len() + 1..];
    let slashes = if after.starts_with("//") { "//" } else { "" };
    let (userinfo, rest) = split_userinfo(&after[slashes.len()..]);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (host, tail) = rest.split_at(end);
    let authority = match userinfo {
        Some(userinfo) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => host.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    // Another URL inside (PostgreSQL's listen_url), shown decoded and redacted;
                    // `password=` is masked below, wherever it stands.
                    Some(("listen_url", v)) => format!(
                        "listen_url={}",
                        redact_url(&percent_decoded(v).unwrap_or_else(|| v.to_string()))
                    ),
                    _ => pair.to_string(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_string(),
    };
    mask_password_params(&format!("{scheme}:{slashes}{authority}{tail}"))
}

/// `s` with the value of every `password=` parameter (any case, after `?` or `&`, up to the
/// next `&`) replaced by `***`, wherever it stands: a user information read up to the first
/// `@` can swallow the query's `?`, and the parameter after it is still a password.
fn mask_password_params(s: &str) -> String {
    let lower = s.to_ascii_lowercase();
    let mut out = String::with_capacity(s.len());
    let mut at = 0;
    while let Some(found) = lower[at..].find("password=") {
        let start = at + found;
        let value = start + "password=".len();
        let end = s[value..].find('&').map_or(s.len(), |i| value + i);
        let named = start == 0 || matches!(s.as_bytes()[start - 1], b'?' | b'&');
        out.push_str(&s[at..value]);
        out.push_str(if named { "***" } else { &s[value..end] });
        at = end;
    }
    out.push_str(&s[at..]);
    out
}

/// The user information at the start of what follows a URL's scheme (and its `//`), and the
/// rest. By the URL standard it ends at the last `@` before the first `/`, `?` or `#`; the
/// PostgreSQL client reads it up to the first `@` wherever that is, so that a password holding
/// an unencoded `/`, `?` or `#` is still one. The later of the two ends is taken, so that no
/// reading of the URL leaves a password shown.
fn split_userinfo(rest: &str) -> (Option<&str>, &str) {
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@').or_else(|| rest.find('@')) {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    }
}

/// In a text without a scheme, the `user:password` before its last `@`: the segment's start,
/// the offset of its `:` within it, and the `@`'s index.
fn userinfo_without_scheme(url: &str) -> Option<(usize, usize, usize)> {
    let at = url.rfind('@')?;
    let before = &url[..at];
    let start = before.rfind('/').map_or(0, |i| i + 1);
    let colon = before[start..].find(':')?;
    Some((start, colon, at))
}

/// The passwords a URL carries (user information and `password=` parameters, raw and
/// percent-decoded), to scrub from messages that might repeat them.
fn passwords(url: &str) -> Vec<String> {
    let mut found = Vec::new();
    let Some(scheme) = scheme(url) else {
        if let Some((start, colon, at)) = userinfo_without_scheme(url) {
            found.push(url[start + colon + 1..at].to_string());
        }
        return found;
    };
    let (userinfo, _) = split_userinfo(url[scheme.len() + 1..].trim_start_matches('/'));
    if let Some((_, password)) = userinfo.and_then(|u| u.split_once(':')) {
        found.push(password.to_string());
    }
    if let Some((_, query)) = url.split_once('?') {
        for pair in query.split('&') {
            if let Some((k, v)) = pair.split_once('=') {
                if k.eq_ignore_ascii_case("password") {
                    found.push(v.to_string());
                }
                // A PostgreSQL URL may carry another URL (percent-encoded) with its own password.
                if k == "listen_url" {
                    if let Some(inner) = percent_decoded(v) {
                        found.extend(passwords(&inner));
                    }
                }
            }
        }
    }
    let decoded: Vec<String> = found.iter().filter_map(|p| percent_decoded(p)).collect();
    found.extend(decoded);
    found.retain(|p| !p.is_empty());
    found
}

fn percent_decoded(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next()?, bytes.next()?];
            out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok().filter(|d| d != s)
}

/// `error` with every password `url` carries replaced by `***`, and the URL itself shown
/// redacted: for errors from code that saw the URL.
pub fn scrub_error(error: TaskError, url: &str) -> TaskError {
    let secrets = passwords(url);
    if secrets.is_empty() {
        return error;
    }
    let scrub = |m: String| {
        let mut m = m.replace(url, &redact_url(url));
        for s in &secrets {
            m = m.replace(s.as_str(), "***");
        }
        m
    };
    match error {
        TaskError::Store(m) => TaskError::Store(scrub(m)),
        TaskError::Unusable(m) => TaskError::Unusable(scrub(m)),
        TaskError::Invalid(m) => TaskError::Invalid(scrub(m)),
        TaskError::Failed(m) => TaskError::Failed(scrub(m)),
        TaskError::Conflict(m) => TaskError::Conflict(scrub(m)),
        e => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msg(e: TaskError) -> String {
        e.to_string()
    }

    #[test]
    fn quotes_are_bounded_and_escaped() {
        assert_eq!(quote("abc"), "'abc'");
        let long = "x".repeat(100_000);
        let q = quote(&long);
        assert!(q.len() < 100, "{q}");
        assert!(q.ends_with("...' (100000 bytes)"), "{q}");
        assert_eq!(quote("a\u{1b}[31mb"), "'a\\u{1b}[31mb'");
        assert_eq!(printable("ok"), "ok");
        assert_eq!(printable("a\nb\u{9b}c\u{202e}"), "a\\nb\\u{9b}c\\u{202e}");
    }

    #[test]
    fn data_filters_name_one_plain_field_and_a_bounded_value() {
        let m = data_match("customer=acme").unwrap();
        assert_eq!((m.field.as_str(), m.value.as_str()), ("customer", "acme"));
        let m = data_match("data.n=a=b").unwrap();
        assert_eq!((m.field.as_str(), m.value.as_str()), ("n", "a=b"));
        assert_eq!(data_match("flag=").unwrap().value, "");
        assert!(msg(data_match("customer").unwrap_err()).contains("FIELD=VALUE"));
        for bad in [
            "=x",
            "a.b=x",
            "a\"b=x",
            "a b=x",
            &format!("{}=x", "f".repeat(129)),
        ] {
            let e = msg(data_match(bad).unwrap_err());
            assert!(e.contains("letters, digits"), "{bad}: {e}");
        }
        let e = msg(data_filter("c", &"v".repeat(MAX_TEXT_BYTES + 1)).unwrap_err());
        assert!(e.contains("too long") && e.len() < 300, "{e}");
        assert!(msg(data_filter("c", "a\nb").unwrap_err()).contains("control character"));
    }

    #[test]
    fn names_are_bounded_printable_and_not_empty() {
        assert!(queue_name("default").is_ok());
        assert!(queue_name(&"q".repeat(MAX_NAME_BYTES)).is_ok());
        let long = msg(queue_name(&"q".repeat(65_536)).unwrap_err());
        assert!(long.contains("too long: at most 128 bytes"), "{long}");
        assert!(long.len() < 300, "{long}");
        assert!(msg(queue_name("").unwrap_err()).contains("empty"));
        let nul = msg(queue_name("a\0b").unwrap_err());
        assert!(nul.contains("U+0000"), "{nul}");
        assert!(!nul.contains('\0'));
        let esc = msg(handler_name("a\u{1b}[2Jb").unwrap_err());
        assert!(esc.contains("U+001B") && !esc.contains('\u{1b}'), "{esc}");
        assert!(handler_name("rtl\u{202e}txt").is_err());
        assert!(handler_name("sénd_ëmail").is_ok());
        assert!(handler_name("send email").is_ok());
        for blank in [" ", " mail", "mail\u{a0}", "\u{3000}"] {
            let e = msg(queue_name(blank).unwrap_err());
            assert!(e.contains("white space"), "{blank:?}: {e}");
        }
    }

    #[test]
    fn equal_numbers_are_equal_data() {
        let (a, ta) = canonical_data(json!({"n": 1})).unwrap();
        let (b, tb) = canonical_data(json!({"n": 1.0})).unwrap();
        assert_eq!(a, b);
        assert_eq!(ta, tb);
        assert_eq!(ta, r#"{"n":1}"#);
        let (c, _) =
            canonical_data(json!({"a": [-0.0, 1e3, 2.5, -3.0], "b": {"c": 1e19}})).unwrap();
        assert_eq!(
            c,
            json!({"a": [0, 1000, 2.5, -3], "b": {"c": 10_000_000_000_000_000_000u64}})
        );
        // Beyond 64 bits a float stays a float.
        let (d, _) = canonical_data(json!({"x": 1e30})).unwrap();
        assert!(d["x"].is_f64());
    }

    #[test]
    fn data_must_be_an_object_within_bounds() {
        assert!(msg(canonical_data(json!([1])).unwrap_err()).contains("not an array"));
        assert!(msg(canonical_data(json!(null)).unwrap_err()).contains("not null"));
        let mut deep = json!({});
        for _ in 0..MAX_DATA_DEPTH {
            deep = json!({ "a": deep });
        }
        assert!(msg(canonical_data(deep).unwrap_err()).contains("64 deep"));
        let mut ok = json!(1);
        for _ in 0..MAX_DATA_DEPTH {
            ok = json!({ "a": ok });
        }
        assert!(canonical_data(ok).is_ok());
        let big = json!({"s": "x".repeat(MAX_DATA_BYTES)});
        assert!(msg(canonical_data(big).unwrap_err()).contains("too large"));
    }

    /// PostgreSQL's JSON cannot hold U+0000: a task carrying it in its data broke every data
    /// filter and per-key limit there, so it is refused wherever data comes in.
    #[test]
    fn the_nul_character_is_refused_in_keys_and_strings() {
        for data in [
            json!({"note": "a\u{0}b"}),
            json!({"a": {"b": ["ok", "x\u{0}"]}}),
            json!({"k\u{0}": 1}),
        ] {
            let e = msg(canonical_data(data.clone()).unwrap_err());
            assert!(e.contains("NUL character (U+0000)"), "{data}: {e}");
        }
        let e = msg(data_text(r#"{"note": "a\u0000b"}"#, "{}").unwrap_err());
        assert!(e.contains("U+0000"), "{e}");
        // The six characters of an escape, written as text, are ordinary data.
        assert!(canonical_data(json!({"note": "a\\u0000b"})).is_ok());
    }

    #[test]
    fn integers_beyond_64_bits_are_refused() {
        let e = msg(data_text(r#"{"n": 123456789012345678901234567890}"#, "{}").unwrap_err());
        assert!(e.contains("too large"), "{e}");
        assert!(
            data_text(
                r#"{"n": 18446744073709551615, "m": -9223372036854775808}"#,
                ""
            )
            .is_ok()
        );
        assert!(data_text(r#"{"n": -9223372036854775809}"#, "").is_err());
        // Floats and digits inside strings are not integers.
        assert!(
            data_text(
                r#"{"n": 1.5e300, "s": "123456789012345678901234567890"}"#,
                ""
            )
            .is_ok()
        );
        assert!(data_text(r#"{"s": "a\"123456789012345678901234567890"}"#, "").is_ok());
        assert_eq!(data_text(r#"{"n": 2.0}"#, "").unwrap(), json!({"n": 2}));
        let e = msg(data_text("{", "--data '{}'").unwrap_err());
        assert!(
            e.contains("not valid JSON") && e.contains("--data '{}'"),
            "{e}"
        );
    }

    #[test]
    fn numbers_say_too_large_with_the_maximum() {
        let e = msg(whole_number("4294967296", "max attempts", 1, 10, "3").unwrap_err());
        assert!(e.contains("too large: the maximum is 10"), "{e}");
        let e = msg(whole_number(&"9".repeat(200), "the limit", 1, 10, "3").unwrap_err());
        assert!(e.contains("too large"), "{e}");
        let e = msg(whole_number("-5", "the limit", 1, 10, "3").unwrap_err());
        assert!(e.contains("too small: it must be at least 1"), "{e}");
        let e = msg(whole_number("x1", "the limit", 1, 10, "3").unwrap_err());
        assert!(e.contains("is not a whole number"), "{e}");
        assert_eq!(whole_number(" 7 ", "n", 1, 10, "3").unwrap(), 7);
        assert_eq!(max_attempts(i64::from(i32::MAX)).unwrap(), MAX_ATTEMPTS);
        assert!(max_attempts(4_294_967_295).is_err());
        assert!(max_attempts(0).is_err());
        assert!(priority(i64::from(i32::MAX) + 1).is_err());
    }

    #[test]
    fn times_refuse_leap_seconds_and_wild_offsets() {
        assert_eq!(
            time("2027-01-31T10:00:00+01:00").unwrap(),
            time("2027-01-31T09:00:00Z").unwrap()
        );
        let leap = msg(time("2016-12-31T23:59:60Z").unwrap_err());
        assert!(leap.contains("leap second"), "{leap}");
        let off = msg(time("2027-01-31T09:00:00+25:00").unwrap_err());
        assert!(off.contains("beyond"), "{off}");
        assert!(time("2027-01-31T09:00:00+24:00").is_err());
        assert!(time("2027-01-31T09:00:00-23:59").is_ok());
        assert!(msg(time("2027-01-31T09:00:00").unwrap_err()).contains("no offset"));
        assert!(time("2027-01-31T09:00:00Z[Europe/Berlin]").is_err());
        assert!(msg(time(&"9".repeat(100_000)).unwrap_err()).len() < 300);
        assert!(time("2027-01-31T09:59:59.5Z").is_ok());
    }

    #[test]
    fn times_are_rfc_3339_and_nothing_else() {
        let utc = time("2027-01-31T09:00:00Z").unwrap();
        for same in [
            "2027-01-31T10:00:00+01:00",
            "2027-01-31t09:00:00z",
            "2027-01-31 09:00:00Z",
            "2027-01-31T09:00:00-00:00",
            "2027-01-31T09:00:00.000000000Z",
            " 2027-01-31T09:00:00Z\n",
        ] {
            assert_eq!(time(same).unwrap(), utc, "{same}");
        }
        for other in [
            "2027-01-31T09:00Z",
            "2027-01-31T09Z",
            "20270131T090000Z",
            "2027-01-31T090000Z",
            "2027-01-31T09:00:00+0100",
            "2027-01-31T09:00:00+01",
            "2027-01-31T09:00:00+01:00:00",
            "+002027-01-31T09:00:00Z",
            "2027-01-31T09:00:00,5Z",
            "2027-01-31T09:00:00.Z",
            "2027-01-31T09:00:00.1234567890Z",
            "2027-01-31",
            "2027-01-31Z",
            "2027-1-31T09:00:00Z",
            "2027-01-31T09:00:00 Z",
            "2027-01-31T09:00:00ZZ",
            "2027-02-30T09:00:00Z",
            "2027-01-31T24:00:00Z",
            "2027-01-31T09:00:00+23:60",
        ] {
            let e = msg(time(other).unwrap_err());
            assert!(e.contains("e.g. 2027-01-31T09:00:00Z"), "{other}: {e}");
        }
    }

    #[test]
    fn tokens_and_redacted_fields_are_checked() {
        assert!(api_token(&"a".repeat(16), "the token").is_ok());
        let e = msg(api_token("secret-short", "the token").unwrap_err());
        assert!(!e.contains("secret"), "{e}");
        assert!(api_token("short", "the token").is_err());
        assert!(api_token(&format!("{}  ", "a".repeat(20)), "the token").is_err());
        assert_eq!(redact_path("data.card").unwrap(), vec!["card"]);
        assert_eq!(redact_path("data.pay.token").unwrap(), vec!["pay", "token"]);
        for bad in ["card", "data.", "data..x", "meta.card"] {
            assert!(
                msg(redact_path(bad).unwrap_err()).contains("data.card"),
                "{bad}"
            );
        }
    }

    #[test]
    fn list_cursors_are_read_back_or_refused() {
        let id = crate::TaskId::generate(Timestamp::UNIX_EPOCH);
        let c = list_cursor(&format!("1700000000000000_{id}")).unwrap();
        assert_eq!(c.id, id);
        assert_eq!(c.due_at.as_microsecond(), 1_700_000_000_000_000);
        for bad in [
            "",
            "12",
            "x_y",
            &format!("1_{id}x"),
            &format!("{}_{id}", i64::MAX),
        ] {
            let e = msg(list_cursor(bad).unwrap_err());
            assert!(e.contains("is not a list cursor"), "{e}");
        }
    }

    #[test]
    fn durations_allow_spaces_and_are_bounded() {
        assert_eq!(duration("1h 30m").unwrap(), SignedDuration::from_mins(90));
        assert!(msg(duration(&"1".repeat(10_000)).unwrap_err()).len() < 300);
        assert!(grace("25h").is_err());
        assert!(grace("0s").is_ok());
    }

    #[test]
    fn past_times_are_refused_at_the_boundary() {
        let now: Timestamp = "2027-01-01T00:00:00Z".parse().unwrap();
        assert!(not_past(now, now, "--at").is_ok());
        let e = msg(not_past(now - SignedDuration::from_secs(1), now, "\"at\"").unwrap_err());
        assert!(e.contains("\"at\"") && e.contains("in the past"), "{e}");
    }

    #[test]
    fn urls_that_are_not_supported_are_refused_without_the_password() {
        use DatabaseKind::*;
        assert_eq!(database_url("postgres://u:p@h/db").unwrap(), Postgres);
        assert_eq!(database_url("postgresql://h/db").unwrap(), Postgres);
        assert_eq!(database_url("party.db").unwrap(), Sqlite);
        assert_eq!(database_url("/tmp/x/party.db").unwrap(), Sqlite);
        assert_eq!(database_url("sqlite:party.db").unwrap(), Sqlite);
        assert_eq!(database_url("sqlite://party.db").unwrap(), Sqlite);
        assert_eq!(database_url("./a:b.db").unwrap(), Sqlite);
        assert_eq!(database_url("C:\\party.db").unwrap(), Sqlite);
        for bad in [
            "postgres:app:S3cretPw@db/app",
            "postgress://app:S3cretPw@db/app",
            "mysql://app:S3cretPw@db/app",
            "mysql:app:S3cretPw@db",
            "POSTGRES://app:S3cretPw@db/app",
            "//app:S3cretPw@db/app://",
        ] {
            let e = msg(database_url(bad).unwrap_err());
            assert!(!e.contains("S3cretPw"), "{e}");
            assert!(
                e.contains("does not support") || e.contains("not a PostgreSQL URL"),
                "{e}"
            );
        }
        assert!(msg(database_url(" ").unwrap_err()).contains("empty"));
    }

    #[test]
    fn redaction_hides_every_password() {
        assert_eq!(
            redact_url("postgres://app:S3cret@db:5432/app?sslmode=require"),
            "postgres://app:***@db:5432/app?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres:app:S3cret@db/app"),
            "postgres:app:***@db/app"
        );
        assert_eq!(
            redact_url("postgres://db/app?user=a&password=S3cret"),
            "postgres://db/app?user=a&password=***"
        );
        assert_eq!(redact_url("postgres://app@db/app"), "postgres://app@db/app");
        // The PostgreSQL client reads a password up to the first '@', '/', '?' and '#' and
        // all: none of it is shown, in a URL or in a message that repeats it.
        for (url, password, shown) in [
            (
                "postgres://app:S3cr#t@db:5432/app",
                "S3cr#t",
                "postgres://app:***@db:5432/app",
            ),
            (
                "postgres://app:S3c/ret@db/app?x=1",
                "S3c/ret",
                "postgres://app:***@db/app?x=1",
            ),
            (
                "postgres://app:S3c?ret@db/app",
                "S3c?ret",
                "postgres://app:***@db/app",
            ),
            (
                "postgres://app:p@ss@db/app",
                "p@ss",
                "postgres://app:***@db/app",
            ),
            (
                "postgres://db:5432/app?user=app@host&password=S3cret",
                "S3cret",
                "postgres://db:***@host&password=***",
            ),
        ] {
            assert_eq!(redact_url(url), shown);
            let e = msg(scrub_error(
                TaskError::store(format!("password {password} for {url}")),
                url,
            ));
            assert!(!e.contains(password), "{e}");
        }
        assert_eq!(redact_url("party.db"), "party.db");
        let url = "postgres://app:p%40ss@db/app";
        let e = scrub_error(
            TaskError::store(format!("failed for {url}: password p@ss and p%40ss wrong")),
            url,
        );
        let e = msg(e);
        assert!(!e.contains("p@ss") && !e.contains("p%40ss"), "{e}");
        let url = "postgres://a:one@pooler/app?listen_url=postgres%3A%2F%2Fa%3Atwo%40db%2Fapp";
        assert_eq!(
            redact_url(url),
            "postgres://a:***@pooler/app?listen_url=postgres://a:***@db/app"
        );
        let e = msg(scrub_error(
            TaskError::store("passwords one and two".to_string()),
            url,
        ));
        assert!(!e.contains("one") && !e.contains("two"), "{e}");
    }
}
