//! `eniroute config show`: the effective configuration as TOML.

use super::{load_config, Cli, Failure};

pub fn run(cli: &Cli) -> Result<(), Failure> {
    let cfg = load_config(cli)?;
    print!("{}", crate::config::render_effective(&cfg));
    Ok(())
}
