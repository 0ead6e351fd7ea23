//! One module per group of commands; [`dispatch`] opens the database with the right handlers
//! and hands each command its arguments.

use party::{Party, Registry, TaskError, builtin};

use crate::args::{Cli, Command};
use crate::demo;

mod add;
mod bench;
mod copy;
mod inspect;
mod occurrences;
mod prune;
mod queue;
#[cfg(feature = "serve")]
mod serve;
mod stats;
mod steer;
mod worker;

/// Run the parsed command line with the user's handlers.
pub(crate) async fn dispatch(cli: Cli, registry: Registry) -> Result<(), TaskError> {
    match cli.command {
        Command::Demo(args) => demo::run(cli.db, args).await,
        Command::Bench(args) => bench::run(&database(cli.db), args).await,
        Command::Worker(args) => worker::run(&database(cli.db), registry, args).await,
        Command::Prune(args) => prune::run(&database(cli.db), args).await,
        Command::Copy(args) => copy::run(&database(cli.db), args).await,
        #[cfg(feature = "serve")]
        Command::Serve(args) => serve::run(&database(cli.db), registry, args).await,
        command => {
            // Every handler is known for adding and inspecting, `shell` included, so a shell
            // task can be added for a worker started with --allow-shell.
            let party =
                Party::connect(&database(cli.db), builtin::registry(true).merge(registry)).await?;
            match command {
                Command::Add(args) => add::run(&party, args).await,
                Command::List(args) => inspect::list(&party, args).await,
                Command::Show(args) => inspect::show(&party, args).await,
                Command::Cancel(args) => steer::cancel(&party, args).await,
                Command::Retry(args) => steer::retry(&party, args).await,
                Command::Stats(args) => stats::run(&party, args).await,
                Command::Next(args) => occurrences::next(&party, args).await,
                Command::Gaps(args) => occurrences::gaps(&party, args).await,
                Command::Queue(args) => queue::run(&party, args).await,
                #[cfg(feature = "serve")]
                Command::Serve(_) => unreachable!("handled above"),
                Command::Demo(_)
                | Command::Worker(_)
                | Command::Bench(_)
                | Command::Prune(_)
                | Command::Copy(_) => {
                    unreachable!("handled above")
                }
            }
        }
    }
}

/// The database to use: `--db`, else `$PARTY_DATABASE_URL`, else `./party.db`.
pub(crate) fn database(flag: Option<String>) -> String {
    flag.or_else(|| {
        std::env::var(crate::DATABASE_ENV)
            .ok()
            .filter(|v| !v.trim().is_empty())
    })
    .unwrap_or_else(|| party::DEFAULT_DATABASE.to_string())
}
