//! `eniroute config show`: the effective configuration as TOML.

use super::{load_config, Cli, Failure};

pub fn run(cli: &Cli) -> Result<(), Failure> {
    let cfg = load_config(cli)?;
    let text = toml::to_string_pretty(&cfg)
        .map_err(|e| Failure::runtime(format!("cannot render the configuration: {e}")))?;
    print!("{text}");
    Ok(())
}
