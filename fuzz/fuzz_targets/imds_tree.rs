//! A whole metadata tree (JSON, as the simulator serves it and the golden
//! tests read it) through the parser, the plan and the diff against a host
//! whose links carry the tree's MACs: nothing metadata says may panic the
//! agent, and a plan applied must be what the next plan keeps.
#![no_main]

use eniroute::config::Config;
use eniroute::imds::{parse, tree};
use eniroute::reconcile::{assess, Current};
use eniroute::values::Link;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(tree) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Ok(instance) = parse::instance_from(|p| tree::lookup(&tree, p)) else {
        return;
    };
    let links: Vec<Link> = instance
        .enis
        .iter()
        .enumerate()
        .map(|(i, e)| Link {
            index: 2 + i as u32,
            name: format!("eth{i}"),
            mac: Some(e.mac()),
            up: true,
            group: 0,
            mtu: 9001,
            addresses: Vec::new(),
        })
        .collect();
    let current = Current {
        links,
        ..Current::default()
    };
    let cfg = Config::default();
    let a = assess(&instance, &current, &cfg);
    for op in &a.changes {
        let _ = op.to_string();
    }
    for w in &a.plan.warnings {
        let _ = w.to_string();
    }
});
