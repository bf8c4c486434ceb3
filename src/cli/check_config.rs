//! `eniroute check-config`: exit 0 when the file is valid, 2 otherwise, with
//! every problem on its own `path:line: …` line.

use std::path::PathBuf;

use super::{table_collisions, Cli, Failure};
use crate::config;

pub fn run(cli: &Cli) -> Result<(), Failure> {
    let path = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH));
    if cli.config.is_none() && !path.exists() {
        println!("{}: no file; eniroute runs with defaults", path.display());
        return Ok(());
    }
    let cfg = match config::load_checked(Some(&path)) {
        Ok(cfg) => cfg,
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            return Err(Failure::usage(format!(
                "{}: {} problem{} found",
                path.display(),
                errors.len(),
                if errors.len() == 1 { "" } else { "s" }
            )));
        }
    };
    // Someone else's routes in the table range are no fault of the file:
    // the agent runs, leaves them alone and reports them.
    match table_collisions(&cfg, &path) {
        None => eprintln!("note: could not read the kernel's routes; table range not checked"),
        Some(collisions) => {
            for c in &collisions {
                eprintln!("warning: {c}");
            }
        }
    }
    println!("{}: ok", path.display());
    Ok(())
}
