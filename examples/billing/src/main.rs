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

/// The allocator the `party` binary uses: faster than the C library's when the SQLite writer
/// thread and the runtime free each other's memory.
#[global_allocator]
static ALLOCATOR: party_cli::MiMalloc = party_cli::MiMalloc;

fn main() {
    party_cli::main_with(tasks::registry())
}
