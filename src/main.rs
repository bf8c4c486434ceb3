use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = eniroute::cli::Cli::parse();
    let level = if cli.verbose { "debug" } else { "info" };
    // The daemon sets up logging from its configuration; one-shot commands
    // log warnings only, so their stdout stays what the user asked for.
    if !matches!(cli.command, eniroute::cli::Command::Daemon) {
        eniroute::logging::init(if cli.verbose { level } else { "warn" }, "text");
    }
    match eniroute::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("eniroute: {failure}");
            ExitCode::from(failure.code)
        }
    }
}
