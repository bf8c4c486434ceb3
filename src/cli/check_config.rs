//! `eniroute check-config`: exit 0 when the file is valid, 2 otherwise, with
//! every problem on its own `path:line: …` line.

use std::path::{Path, PathBuf};

use super::{kernel, runtime, Cli, Failure};
use crate::config::{self, Config};
use crate::netlink::Kernel;

pub fn run(cli: &Cli) -> Result<(), Failure> {
    let path = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH));
    if cli.config.is_none() && !path.exists() {
        println!("{}: no file; eniroute runs with defaults", path.display());
        return Ok(());
    }
    let cfg = match config::load_checked(Some(&path)) {
        Ok(cfg) => cfg,
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            return Err(Failure::usage(format!(
                "{}: {} problem{} found",
                path.display(),
                errors.len(),
                if errors.len() == 1 { "" } else { "s" }
            )));
        }
    };
    let collisions = table_collisions(&cfg, &path);
    if !collisions.is_empty() {
        for c in &collisions {
            eprintln!("{c}");
        }
        return Err(Failure::usage(format!(
            "{}: the table range collides with tables in use",
            path.display()
        )));
    }
    println!("{}: ok", path.display());
    Ok(())
}

/// Tables in the configured range that hold someone else's routes, each as
/// `path:line: message` (the line of `table_base` when the file sets it).
/// Without access to the kernel (not root) the check is skipped, and says so.
fn table_collisions(cfg: &Config, path: &Path) -> Vec<String> {
    let in_use = runtime().ok().and_then(|rt| {
        rt.block_on(async {
            let k = kernel(cfg).ok()?;
            let routes = k.routes().await.ok()?;
            Some(
                routes
                    .into_iter()
                    .filter(|r| r.protocol != cfg.numbering.protocol)
                    .map(|r| r.route.table)
                    .collect::<Vec<u32>>(),
            )
        })
    });
    let Some(in_use) = in_use else {
        eprintln!("note: could not read the kernel's routes; table collisions not checked");
        return Vec::new();
    };
    let line = std::fs::read_to_string(path).ok().and_then(|text| {
        text.lines()
            .position(|l| l.trim_start().starts_with("table_base"))
            .map(|i| i + 1)
    });
    config::table_collisions(cfg, &in_use)
        .into_iter()
        .map(|m| match line {
            Some(l) => format!("{}:{l}: {m}", path.display()),
            None => format!("{}: {m}", path.display()),
        })
        .collect()
}
