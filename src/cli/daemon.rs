//! `eniroute daemon`: the long-running agent the systemd unit starts.

use super::{load_config, may_change_kernel, Cli, Failure};

pub fn run(cli: &Cli) -> Result<(), Failure> {
    let cfg = load_config(cli)?;
    may_change_kernel(cli, &cfg)?;
    Ok(crate::daemon::run(
        cfg,
        cli.config.clone(),
        cli.imds_endpoint.clone(),
    )?)
}
