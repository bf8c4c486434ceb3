//! The command line: one module per subcommand, each with its own `run`.

use std::fmt;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::agent::SetupError;
use crate::config::{self, Config};
use crate::imds::client::ImdsClient;
use crate::imds::fetch::Scope;
use crate::imds::model::Instance;
use crate::netlink::rt::RtNetlink;
use crate::netlink::Kernel;
use crate::reconcile::{Assessment, Current};
use crate::state;

pub mod apply;
pub mod check_config;
pub mod cleanup;
pub mod config_show;
pub mod daemon;
pub mod plan;
pub mod refresh;
pub mod status;
pub mod takeover;
pub mod trace;

#[derive(Debug, Parser)]
#[command(
    name = "eniroute",
    version,
    about = "Makes every network interface of a multi-homed EC2 instance route its own traffic"
)]
pub struct Cli {
    /// Configuration file [default: /etc/eniroute/config.toml, optional]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Metadata endpoint, overriding the configuration (e.g. http://127.0.0.1:8080)
    #[arg(long, global = true, value_name = "URL")]
    pub imds_endpoint: Option<String>,
    /// More detail: counts of netlink writes, debug logs
    #[arg(short, long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the desired state and what would change, without changing anything
    Plan(plan::Args),
    /// Reconcile once: metadata → kernel, then exit
    Apply(apply::Args),
    /// Show each ENI's state in the kernel, drift and conflicting rules
    Status(status::Args),
    /// Which rule, table and ENI a packet would use, and whether that is right
    Trace(trace::Args),
    /// Remove every rule, route and address eniroute owns, nothing else
    Cleanup,
    /// Run the agent: reconcile on every change until stopped
    Daemon,
    /// Ask the running daemon to re-read metadata now (for failover scripts)
    Refresh,
    /// Move a secondary IP or an ENI to this instance through the EC2 API and route it here at once
    Takeover(takeover::Args),
    /// Validate the configuration file
    CheckConfig,
    /// Configuration helpers
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration, defaults filled in
    Show,
}

/// A failure to report: a one-line message and the exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    /// Something outside went wrong (metadata, kernel): exit 1.
    pub fn runtime(message: impl fmt::Display) -> Failure {
        Failure {
            code: 1,
            message: message.to_string(),
        }
    }

    /// The user's input is wrong (configuration, arguments): exit 2.
    pub fn usage(message: impl fmt::Display) -> Failure {
        Failure {
            code: 2,
            message: message.to_string(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Exit codes are decided here, at the edge: metadata settings that make no
/// usable client are bad input; everything else failed at run time.
impl From<SetupError> for Failure {
    fn from(e: SetupError) -> Failure {
        let message = crate::error_chain(&e);
        match e {
            SetupError::Metadata(_) => Failure::usage(message),
            SetupError::State(_) | SetupError::Netlink(_) => Failure::runtime(message),
        }
    }
}

impl From<crate::daemon::Error> for Failure {
    fn from(e: crate::daemon::Error) -> Failure {
        match e {
            crate::daemon::Error::Setup(e) => e.into(),
            other => Failure::runtime(crate::error_chain(&other)),
        }
    }
}

/// Runs the command line and turns the outcome into the process's exit
/// code (0, 1 runtime failure, 2 bad input), printing the failure on one
/// line. The `eniroute` binary and the lab's built-in agent both end here.
pub fn main(cli: Cli) -> std::process::ExitCode {
    // The daemon sets up logging from its configuration; one-shot commands
    // log warnings only, so their stdout stays what the user asked for.
    if !matches!(cli.command, Command::Daemon) {
        crate::logging::init(if cli.verbose { "debug" } else { "warn" }, "text");
    }
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("eniroute: {failure}");
            std::process::ExitCode::from(failure.code)
        }
    }
}

pub fn run(cli: Cli) -> Result<(), Failure> {
    match &cli.command {
        Command::Plan(args) => plan::run(&cli, args),
        Command::Apply(args) => apply::run(&cli, args),
        Command::Status(args) => status::run(&cli, args),
        Command::Trace(args) => trace::run(&cli, args),
        Command::Cleanup => cleanup::run(&cli),
        Command::Daemon => daemon::run(&cli),
        Command::Refresh => refresh::run(&cli),
        Command::Takeover(args) => takeover::run(&cli, args),
        Command::CheckConfig => check_config::run(&cli),
        Command::Config(ConfigCommand::Show) => config_show::run(&cli),
    }
}

/// The configuration with command-line overrides applied.
pub fn load_config(cli: &Cli) -> Result<Config, Failure> {
    let mut cfg = config::load(cli.config.as_deref()).map_err(Failure::usage)?;
    crate::agent::override_endpoint(&mut cfg, cli.imds_endpoint.as_deref());
    Ok(cfg)
}

/// `apply` calls this first: it stops where amazon-ec2-net-utils is
/// installed (unless told otherwise), since both would program the same
/// tables. The daemon stands by instead (see [`crate::coexist::standing_by`]).
/// Foreign routes in the table range never stop anything: the reconcile
/// reports them.
pub fn may_change_kernel(_cli: &Cli, cfg: &Config) -> Result<(), Failure> {
    match crate::coexist::refusal(
        &crate::coexist::host_root(),
        cfg.selection.coexist_with_ec2_net_utils,
    ) {
        Some(why) => Err(Failure::usage(why)),
        None => Ok(()),
    }
}

/// Tables in the configured range that hold someone else's routes, each as
/// `path:line: message` (the line of `table_base` when the file sets it);
/// `None` when the kernel's routes cannot be read.
pub fn table_collisions(cfg: &Config, path: &std::path::Path) -> Option<Vec<String>> {
    let in_use = runtime().ok()?.block_on(async {
        let k = kernel(cfg).ok()?;
        let routes = k.routes().await.ok()?;
        Some(
            routes
                .into_iter()
                .filter(|r| r.protocol != cfg.numbering.protocol)
                .map(|r| r.route.table)
                .collect::<Vec<u32>>(),
        )
    })?;
    let line = std::fs::read_to_string(path).ok().and_then(|text| {
        text.lines()
            .position(|l| l.trim_start().starts_with("table_base"))
            .map(|i| i + 1)
    });
    Some(
        config::table_collisions(cfg, &in_use)
            .into_iter()
            .map(|m| match line {
                Some(l) => format!("{}:{l}: {m}", path.display()),
                None => format!("{}: {m}", path.display()),
            })
            .collect(),
    )
}

/// A single-threaded runtime: a one-shot command does one thing at a time,
/// and a thread pool would only cost memory.
pub fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(format!("cannot start the async runtime: {e}")))
}

pub fn imds_client(cfg: &Config) -> Result<ImdsClient, Failure> {
    Ok(crate::agent::metadata_client(cfg)?)
}

/// Reads the instance's metadata: the ENIs whose links are on the host
/// (and those takeover claims name) in depth, the others only as listed
/// ([`crate::agent::metadata_scope`]). A failure says what failed and its
/// likely cause. Read-only commands use it as it is; `apply` adds that it
/// changed nothing.
pub async fn fetch(
    client: &ImdsClient,
    kernel: &impl Kernel,
    cfg: &Config,
) -> Result<Instance, Failure> {
    let scope = scope(kernel, cfg).await;
    fetch_in(client, &scope).await
}

/// The MACs [`fetch`] reads in depth.
pub async fn scope(kernel: &impl Kernel, cfg: &Config) -> Scope {
    let links = kernel.links().await.ok();
    let others = crate::agent::claimed_macs()
        .into_iter()
        .chain(cfg.named_macs());
    crate::agent::metadata_scope(links.as_deref(), others)
}

/// Reads the instance's metadata, the MACs in `scope` in depth.
pub async fn fetch_in(client: &ImdsClient, scope: &Scope) -> Result<Instance, Failure> {
    crate::imds::fetch::fetch_instance(client, scope)
        .await
        .map_err(|e| Failure::runtime(metadata_message(&e)))
}

/// A metadata failure as the user reads it: the error, then the likely
/// cause and what to check.
pub fn metadata_message(e: &crate::imds::client::ImdsError) -> String {
    crate::imds::hint::explain(e)
}

pub fn kernel(cfg: &Config) -> Result<RtNetlink, Failure> {
    Ok(crate::agent::kernel(cfg)?)
}

/// Metadata and host side by side, read as `apply` reads them and assessed
/// by the same function, so `plan` and `status` show what `apply` would do.
pub async fn observe(cfg: &Config, client: &ImdsClient) -> Result<(Assessment, Current), Failure> {
    let kernel = kernel(cfg)?;
    let instance = fetch(client, &kernel, cfg).await?;
    let dir = state::run_dir().map_err(Failure::runtime)?;
    let records = state::AddressRecords::load(&dir);
    let current = crate::reconcile::observe(&kernel, &records, &instance, cfg)
        .await
        .map_err(Failure::runtime)?;
    Ok((crate::reconcile::assess(&instance, &current, cfg), current))
}

pub fn print_json(value: &impl serde::Serialize) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Failure::runtime(format!("cannot render JSON: {e}")))?;
    println!("{text}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_failures_exit_2_for_bad_settings_and_1_otherwise() {
        let opts = crate::imds::client::ImdsOptions {
            endpoint: "ftp://169.254.169.254".into(),
            ..Default::default()
        };
        let bad = crate::imds::client::ImdsClient::new(opts).unwrap_err();
        let f = Failure::from(SetupError::Metadata(bad));
        assert_eq!(f.code, 2, "{f}");
        assert!(f.message.contains("ftp://169.254.169.254"), "{f}");
        let netlink = crate::netlink::NetlinkError {
            call: "socket",
            object: "NETLINK_ROUTE".into(),
            errno: None,
            message: "Permission denied".into(),
        };
        let f = Failure::from(crate::daemon::Error::Setup(SetupError::Netlink(netlink)));
        assert_eq!(f.code, 1);
        assert_eq!(
            f.message,
            "cannot open a netlink socket: socket for NETLINK_ROUTE: Permission denied"
        );
        let f = Failure::from(crate::daemon::Error::Signal {
            name: "SIGHUP",
            source: std::io::Error::from_raw_os_error(22),
        });
        assert_eq!(
            (f.code, f.message.as_str()),
            (1, "cannot handle SIGHUP: Invalid argument (os error 22)")
        );
    }
}
