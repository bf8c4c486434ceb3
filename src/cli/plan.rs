//! `eniroute plan`: the desired state and what would change. Changes nothing.

use serde_json::json;

use super::{fetch, imds_client, kernel, load_config, print_json, runtime, Cli, Failure};
use crate::reconcile::{diff, Current, Ownership};
use crate::state;

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
        let instance = fetch(&client).await?;
        let kernel = kernel(&cfg)?;
        let dir = state::run_dir().map_err(Failure::runtime)?;
        let records = state::AddressRecords::load(&dir);
        let links = crate::netlink::Kernel::links(&kernel)
            .await
            .map_err(Failure::runtime)?;
        let mut current = Current::read(&kernel, &records.owned(&links))
            .await
            .map_err(Failure::runtime)?;
        let plan = crate::plan::plan(&instance, &current.links, &cfg);
        current.read_sysctls(&plan);
        let own = Ownership {
            protocol: cfg.numbering.protocol,
            ifgroup: cfg.numbering.ifgroup,
        };
        let changes = diff(&plan, &current, own);
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
