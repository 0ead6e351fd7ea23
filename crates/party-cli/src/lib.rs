//! The `party` command line, as a library: hand it your [`Registry`] and your binary gets every
//! command (`add`, `list`, `show`, `cancel`, `retry`, `stats`, `worker`, `demo`) with your own
//! handlers next to the built-in ones.
//!
//! ```no_run
//! use party::Registry;
//!
//! // The allocator the `party` binary uses (feature `mimalloc`, on by default).
//! #[global_allocator]
//! static ALLOCATOR: party_cli::MiMalloc = party_cli::MiMalloc;
//!
//! fn main() {
//!     let registry = Registry::new(); // .register(YourTask) ...
//!     party_cli::main_with(registry)
//! }
//! ```
//!
//! Code map: `args` is the command line's shape (clap derive) and `parse` the value parsers it
//! uses, so bad input is refused before any database is opened; `commands/` has one module per
//! group of commands (a new command is a variant in `args::Command` plus a module here; a new
//! `add` option for recurrence goes in `args::Recurrence` and `commands::add::recurrence`);
//! `demo/` is `party demo` with the seed's handlers; `output` writes tables and JSON;
//! `signals` turns SIGINT and SIGTERM into a graceful stop.
//!
//! Architecture invariant: only this crate knows clap and the process (arguments, exit codes,
//! signals, standard streams); everything it does goes through the `party` library's public API.
//!
//! Exit codes: 0 success, 2 bad usage or bad input, 3 duplicate recurring task or unique key,
//! 4 not found, 1 anything else.

use std::ffi::OsString;
use std::io::IsTerminal;

use clap::Parser;
use party::{Registry, TaskError};

mod args;
pub mod bench;
pub mod bulk;
mod commands;
mod demo;
mod output;
mod parse;
mod signals;

use args::{Cli, Command};

/// The allocator the `party` binary uses, for a binary of your own to use too:
/// `#[global_allocator] static ALLOCATOR: party_cli::MiMalloc = party_cli::MiMalloc;`.
/// With the C library's malloc, the SQLite writer thread and the runtime's threads wait on
/// each other's arena locks whenever one frees memory the other allocated; with mimalloc a
/// SQLite worker drains 40% more tasks a second at concurrency 32 and above (docs/BENCHMARKS.md,
/// "The allocator"). Feature `mimalloc`, on by default.
#[cfg(feature = "mimalloc")]
pub use mimalloc::MiMalloc;

/// The environment variable that names the database when `--db` is not given.
pub const DATABASE_ENV: &str = "PARTY_DATABASE_URL";

/// The environment variable that sets the log level (`off`, `error`, `warn`, `info`, `debug`,
/// `trace`); the default is `info`.
pub const LOG_ENV: &str = "PARTY_LOG";

/// Run the command line given in the process's arguments with `registry`'s handlers, and return
/// the exit code. The built-in `noop`, `log`, `sleep` and `shell` are added (a handler of the
/// same name in `registry` wins); `shell` tasks run only in a worker started with
/// `--allow-shell`.
pub async fn run(registry: Registry) -> i32 {
    run_from(registry, std::env::args_os()).await
}

/// Run the command line `args` (the first item is the program name) with `registry`'s handlers,
/// and return the exit code. Errors are printed to standard error.
pub async fn run_from<I, T>(registry: Registry, args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with code 0; usage errors to stderr with code 2.
            match bounded_usage_error(&e) {
                Some(text) => eprint!("{text}"),
                None => {
                    let _ = e.print();
                }
            }
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let default_level = match cli.command {
        Command::Demo(_) | Command::Bench(_) => tracing::Level::WARN,
        _ => tracing::Level::INFO,
    };
    if let Err(e) = init_logging(default_level, cli.log_format == "json") {
        eprintln!("error: {e}");
        return e.exit_code();
    }
    match commands::dispatch(cli, registry).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

/// Run the command line with `registry`'s handlers on a new tokio runtime and exit the process
/// with the command's exit code: the whole `main` of a binary with its own handlers.
pub fn main_with(registry: Registry) -> ! {
    let code = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => {
            let code = runtime.block_on(run(registry));
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            code
        }
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            1
        }
    };
    output::flush();
    std::process::exit(code)
}

/// clap's message for a usage error quotes the offending argument whole and raw. When that
/// argument is long or holds control characters, the message is rewritten with the argument
/// cut and escaped ([`party::validate::quote`]); `None` keeps clap's own message.
fn bounded_usage_error(e: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !e.use_stderr() {
        return None;
    }
    if e.kind() == ErrorKind::ValueValidation {
        if let (Some(ContextValue::String(arg)), Some(ContextValue::String(value))) = (
            e.get(ContextKind::InvalidArg),
            e.get(ContextKind::InvalidValue),
        ) {
            let quoted = party::validate::quote(value);
            if quoted == format!("'{value}'") {
                return None;
            }
            let reason = std::error::Error::source(e)
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            return Some(format!(
                "error: invalid value {quoted} for '{arg}'{reason}\n\nFor more information, try \
                 '--help'.\n"
            ));
        }
    }
    let text = e.render().to_string();
    let bounded: Vec<String> = text
        .lines()
        .map(|line| {
            let shown = party::validate::printable(line);
            if shown.chars().count() > 300 {
                let head: String = shown.chars().take(300).collect();
                format!("{head}... ({} bytes)", line.len())
            } else {
                shown.into_owned()
            }
        })
        .collect();
    let bounded = bounded.join("\n") + "\n";
    (bounded.trim_end() != text.trim_end()).then_some(bounded)
}

fn init_logging(default: tracing::Level, json: bool) -> Result<(), TaskError> {
    let level = match std::env::var(LOG_ENV) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse::<tracing_subscriber::filter::LevelFilter>()
            .map_err(|_| {
                TaskError::invalid(format!(
                    "{LOG_ENV}={} is not a log level: use one of off, error, warn, info, \
                         debug, trace",
                    party::validate::quote(&v)
                ))
            })?,
        _ => default.into(),
    };
    // A second initialization (several runs in one process) keeps the first subscriber.
    let fmt = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_max_level(level);
    if json {
        // One JSON object a line, with the span an event happened in (a task's attempt).
        let _ = fmt
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init();
    } else {
        let _ = fmt.with_ansi(std::io::stderr().is_terminal()).try_init();
    }
    Ok(())
}

/// The README's Rust examples, compiled by `cargo test` so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeExamples;
