use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    eniroute::cli::main(eniroute::cli::Cli::parse())
}
