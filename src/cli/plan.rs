//! `eniroute plan`: the desired state and what would change. Changes nothing.

use serde_json::json;

use super::{
    altname_changes, imds_client, load_config, observe, print_json, runtime, Cli, Failure,
};
use crate::reconcile::{diff, Ownership};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// One JSON object: rules, routes, addresses, links, enis, warnings, changes
    #[arg(long)]
    pub json: bool,
}

pub fn run(cli: &Cli, args: &Args) -> Result<(), Failure> {
    let cfg = load_config(cli)?;
    let client = imds_client(&cfg)?;
    runtime()?.block_on(async {
        let (plan, current) = observe(&cfg, &client).await?;
        let mut changes = diff(&plan, &current, Ownership::from(&cfg));
        changes.extend(altname_changes(&cfg, &plan).await?.0);
        if args.json {
            let mut v = serde_json::to_value(&plan)
                .map_err(|e| Failure::runtime(format!("cannot render JSON: {e}")))?;
            v["changes"] = json!(changes.iter().map(|c| c.to_string()).collect::<Vec<_>>());
            return print_json(&v);
        }
        print!("{plan}");
        if changes.is_empty() {
            println!("no changes");
        } else {
            println!("changes:");
            for c in &changes {
                println!("{c}");
            }
        }
        Ok(())
    })
}
