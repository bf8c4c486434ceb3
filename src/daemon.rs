//! The long-running agent.

use std::path::PathBuf;

use crate::cli::Failure;
use crate::config::Config;

pub fn run(_config: Config, _config_path: Option<PathBuf>) -> Result<(), Failure> {
    Err(Failure::runtime("daemon: not yet available"))
}
