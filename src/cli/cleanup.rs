//! `eniroute cleanup`: removes everything the agent owns and nothing else.

use super::{kernel, load_config, runtime, Cli, Failure};
use crate::reconcile::{apply, teardown, Current, Ownership};
use crate::state;

pub fn run(cli: &Cli) -> Result<(), Failure> {
    let cfg = load_config(cli)?;
    let dir = state::run_dir().map_err(Failure::runtime)?;
    let _lock = state::Lock::acquire(&dir).map_err(Failure::runtime)?;
    let records = state::AddressRecords::load(&dir);
    runtime()?.block_on(async {
        let kernel = kernel(&cfg)?;
        let links = crate::netlink::Kernel::links(&kernel)
            .await
            .map_err(Failure::runtime)?;
        let current = Current::read(&kernel, &records.owned(&links))
            .await
            .map_err(Failure::runtime)?;
        let own = Ownership {
            protocol: cfg.numbering.protocol,
            ifgroup: cfg.numbering.ifgroup,
        };
        let applied = apply(&kernel, teardown(&current, own)).await;
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
        state::remove_records(&dir).map_err(|e| Failure::runtime(format!("{}: {e}", dir.display())))
    })
}
