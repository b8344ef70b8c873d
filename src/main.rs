//! `ferry`: the one command users type.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
