//! `eniroute daemon`: the long-running agent the systemd unit starts.

use super::{load_config, Cli, Failure};

/// Where amazon-ec2-net-utils is still installed the daemon starts anyway
/// and stands by until it is gone (see [`crate::coexist::standing_by`]):
/// exiting would leave the host without an agent once it is.
pub fn run(cli: &Cli) -> Result<(), Failure> {
    let cfg = load_config(cli)?;
    Ok(crate::daemon::run(
        cfg,
        cli.config.clone(),
        cli.imds_endpoint.clone(),
    )?)
}
