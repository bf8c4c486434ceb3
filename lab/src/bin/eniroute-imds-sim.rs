//! Serves a metadata tree (JSON rooted at `latest/meta-data/`) with the
//! IMDSv2 rules, for trying the agent or `curl` by hand. SIGHUP reloads the
//! file; SIGINT or SIGTERM stops.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use eniroute_lab::sim::Simulator;
use tokio::signal::unix::{signal, SignalKind};

#[derive(Debug, Parser)]
#[command(about = "IMDSv2 simulator serving a metadata tree from a JSON file")]
struct Args {
    /// Address to listen on, e.g. 127.0.0.1:8080 or 169.254.169.254:80.
    #[arg(long)]
    listen: SocketAddr,
    /// JSON tree rooted at latest/meta-data/.
    #[arg(long)]
    tree: PathBuf,
}

fn load(path: &Path) -> Result<serde_json::Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let tree: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if !tree.is_object() {
        return Err(format!(
            "{}: the tree must be a JSON object",
            path.display()
        ));
    }
    Ok(tree)
}

async fn run(args: Args) -> Result<(), String> {
    let tree = load(&args.tree)?;
    let sim = Simulator::bind(args.listen, tree)
        .map_err(|e| format!("listen on {}: {e}", args.listen))?;
    let sig = |kind| signal(kind).map_err(|e| format!("signal handler: {e}"));
    let (mut hup, mut int, mut term) = (
        sig(SignalKind::hangup())?,
        sig(SignalKind::interrupt())?,
        sig(SignalKind::terminate())?,
    );
    println!("{}", sim.endpoint());
    loop {
        tokio::select! {
            _ = hup.recv() => match load(&args.tree) {
                Ok(tree) => {
                    sim.set_tree(tree);
                    eprintln!("reloaded {}", args.tree.display());
                }
                Err(e) => eprintln!("reload failed, still serving the previous tree: {e}"),
            },
            _ = int.recv() => break,
            _ = term.recv() => break,
        }
    }
    sim.shutdown();
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("eniroute-imds-sim: {e}");
            ExitCode::FAILURE
        }
    }
}
