//! `eniroute apply`: one reconcile, then exit.

use super::{
    fetch, imds_client, kernel, load_config, may_change_kernel, print_json, runtime, Cli, Failure,
};
use crate::agent::Namespace;
use crate::netlink::Kernel;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the outcome as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(cli: &Cli, args: &Args) -> Result<(), Failure> {
    let cfg = load_config(cli)?;
    may_change_kernel(cli, &cfg)?;
    let client = imds_client(&cfg)?;
    let mut ns = Namespace::claim()?;
    runtime()?.block_on(async {
        // Metadata first: if it cannot be read, nothing is touched.
        let unchanged = |f: Failure| Failure {
            message: format!("{}; nothing was changed", f.message),
            ..f
        };
        let kernel = kernel(&cfg)?;
        let t0 = std::time::Instant::now();
        let instance = fetch(&client, &kernel, &cfg).await.map_err(unchanged)?;
        let read = t0.elapsed();
        let t1 = std::time::Instant::now();
        let mut outcome = crate::reconcile::reconcile(&kernel, &instance, &cfg, &mut ns.records)
            .await
            .map_err(Failure::runtime)?;
        // An ENI whose addresses of one family read empty while its link
        // holds them was left as it is: applied only when a second read
        // agrees.
        let held = |o: &crate::reconcile::Outcome| {
            o.plan
                .warnings
                .iter()
                .any(|w| matches!(w, crate::values::Warning::UnconfirmedRemoval { .. }))
        };
        if held(&outcome) {
            let mut again = fetch(&client, &kernel, &cfg).await?;
            again.confirm_bare(Some(&instance));
            let second = crate::reconcile::reconcile(&kernel, &again, &cfg, &mut ns.records)
                .await
                .map_err(Failure::runtime)?;
            outcome = outcome.then(second);
        }
        let reconciled = t1.elapsed();
        if args.json {
            print_json(&outcome)?;
        } else {
            for w in outcome.plan.warnings.iter().chain(&outcome.conflicts) {
                println!("warning: {w}");
            }
            for op in &outcome.applied.ops {
                println!("{op}");
            }
            let managed = outcome
                .plan
                .enis
                .iter()
                .filter(|e| e.status == crate::plan::EniStatus::Managed)
                .count();
            if outcome.applied.ops.is_empty() {
                println!("{managed} ENIs managed, nothing to change");
            } else {
                println!(
                    "{managed} ENIs managed, {} changes applied",
                    outcome.applied.ops.len()
                );
            }
            if cli.verbose {
                println!(
                    "netlink writes: {} in {} passes, {} netlink messages; metadata read in {read:?}, reconcile in {reconciled:?}",
                    outcome.applied.writes,
                    outcome.passes,
                    kernel.messages_sent()
                );
            }
        }
        if !args.json {
            // Each on a line of its own, naming the ENI and the object: a
            // batch with many failures must not hide all but the first.
            for e in &outcome.applied.errors {
                eprintln!("error: {e}");
            }
        }
        if let Some(first) = outcome.applied.errors.first() {
            return Err(Failure::runtime(format!(
                "{} changes failed; first: {first}",
                outcome.applied.errors.len()
            )));
        }
        Ok(())
    })
}
