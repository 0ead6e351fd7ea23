//! An application with its own task handlers: they live in the `tasks` module, one file per
//! handler, and `main` hands their registry to the party command line. The `billing` binary
//! then has every `party` command, with these handlers next to the built-in ones:
//!
//! ```text
//! cargo run -p party-example-billing -- add sample_task --data '{"arg1": "hello"}'
//! cargo run -p party-example-billing -- add recurring_task2 --data '{"customer": "acme"}'
//! cargo run -p party-example-billing -- worker
//! ```

mod tasks;

fn main() {
    party_cli::main_with(tasks::registry())
}
