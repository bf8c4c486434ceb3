//! `eniroute cleanup`: removes everything the agent owns and nothing else.

use super::{kernel, load_config, read_kernel, runtime, Cli, Failure};
use crate::reconcile::{apply, teardown, Ownership};
use crate::state;

pub fn run(cli: &Cli) -> Result<(), Failure> {
    let cfg = load_config(cli)?;
    let dir = state::run_dir().map_err(Failure::runtime)?;
    let _lock = state::Lock::acquire(&dir).map_err(Failure::runtime)?;
    runtime()?.block_on(async {
        let kernel = kernel(&cfg)?;
        let current = read_kernel(&kernel).await?;
        let own = Ownership::from(&cfg);
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
