//! `eniroute plan`: the desired state and what would change. Changes nothing.

use serde_json::json;

use super::{imds_client, load_config, observe, print_json, runtime, Cli, Failure};

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
        let (a, current) = observe(&cfg, &client).await?;
        // Links udev still holds are left out of the plan, as `apply`
        // leaves them out; they are named so the omission is no mystery.
        let waiting: Vec<String> = a
            .udev_pending
            .iter()
            .map(|i| match current.link(*i) {
                Some(l) => l.name.clone(),
                None => format!("ifindex {i}"),
            })
            .collect();
        if args.json {
            let mut v = serde_json::to_value(&a.plan)
                .map_err(|e| Failure::runtime(format!("cannot render JSON: {e}")))?;
            v["changes"] = json!(a.changes.iter().map(|c| c.to_string()).collect::<Vec<_>>());
            if !waiting.is_empty() {
                v["waiting_for_udev"] = json!(waiting);
            }
            return print_json(&v);
        }
        print!("{}", a.plan);
        for name in &waiting {
            println!("link {name}: waiting for udev to initialise it");
        }
        if a.changes.is_empty() {
            println!("no changes");
        } else {
            println!("changes:");
            for c in &a.changes {
                println!("{c}");
            }
        }
        Ok(())
    })
}
