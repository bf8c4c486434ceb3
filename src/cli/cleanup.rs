//! `eniroute cleanup`: removes everything the agent owns and nothing else.

use super::{kernel, load_config, runtime, Cli, Failure};
use crate::agent::Namespace;
use crate::reconcile::{apply, teardown, Current, Ownership};
use crate::state;

pub fn run(cli: &Cli) -> Result<(), Failure> {
    let cfg = load_config(cli)?;
    let ns = Namespace::claim()?;
    runtime()?.block_on(async {
        let kernel = kernel(&cfg)?;
        let current = Current::read(&kernel, &ns.records)
            .await
            .map_err(Failure::runtime)?;
        let own = Ownership::from(&cfg);
        let mut applied = apply(&kernel, teardown(&current, own)).await;
        let altnames = crate::altname::teardown(&kernel, &ns.dir).await;
        applied.ops.extend(altnames.ops);
        applied.errors.extend(altnames.errors);
        for op in &applied.ops {
            println!("{op}");
        }
        println!("removed {} objects owned by eniroute", applied.ops.len());
        if let Some(first) = applied.errors.first() {
            return Err(Failure::runtime(format!(
                "{} removals failed; first: {first}",
                applied.errors.len()
            )));
        }
        state::remove_records(&ns.dir)
            .and_then(|()| crate::altname::remove_records(&ns.dir))
            .map_err(|e| Failure::runtime(format!("{}: {e}", ns.dir.display())))
    })
}
