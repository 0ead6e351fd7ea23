//! The `party` binary: the command line with the built-in handlers (`noop`, `log`, `sleep`, `shell`).

/// mimalloc, not the C library's malloc (see [`party_cli::MiMalloc`]).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: party_cli::MiMalloc = party_cli::MiMalloc;

fn main() {
    party_cli::main_with(party::Registry::new())
}
