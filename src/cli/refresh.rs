//! `eniroute refresh`: tells the daemon of this network namespace to re-read
//! metadata now (SIGUSR1), for failover scripts that just moved an ENI or IP.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{Cli, Failure};
use crate::state;

pub fn run(_cli: &Cli) -> Result<(), Failure> {
    let dir = state::run_dir().map_err(Failure::runtime)?;
    let pid = state::daemon_pid(&dir).ok_or_else(|| {
        Failure::runtime("no eniroute daemon is running in this network namespace")
    })?;
    kill(Pid::from_raw(pid), Signal::SIGUSR1)
        .map_err(|e| Failure::runtime(format!("cannot signal the daemon (pid {pid}): {e}")))?;
    println!("asked eniroute daemon (pid {pid}) to refresh metadata");
    Ok(())
}
