//! The `party` binary: the command line with the built-in handlers (`noop`, `log`, `sleep`, `shell`).

fn main() {
    party_cli::main_with(party::Registry::new())
}
