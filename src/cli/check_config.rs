//! `eniroute check-config`: exit 0 when the file is valid, 2 otherwise.

use super::{Cli, Failure};
use crate::config;

pub fn run(cli: &Cli) -> Result<(), Failure> {
    let path = cli
        .config
        .clone()
        .unwrap_or_else(|| config::DEFAULT_PATH.into());
    config::load(Some(&path)).map_err(Failure::usage)?;
    println!("{}: ok", path.display());
    Ok(())
}
