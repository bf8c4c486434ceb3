//! The daemon on a host full of routes that are not its own (a BGP, VPN or
//! Kubernetes host), one of them changing every 50 ms: it keeps repairing
//! its rules, stays up, and does not re-read the whole kernel for every
//! change it has no business with. The figures (CPU share, memory, repair
//! time) are printed, not asserted: this machine is shared.

mod common;

use common::*;
use eniroute_lab::churn::measure_foreign_churn;

#[test]
fn foreign_route_churn_costs_no_full_reads_and_rules_are_still_repaired() {
    if !need_root("foreign_route_churn_costs_no_full_reads_and_rules_are_still_repaired") {
        return;
    }
    let m = measure_foreign_churn(bin(), true).expect("measure");
    eprintln!("foreign churn: {}", m.summary());
    assert!(m.survived, "the daemon died: {m:?}");
    assert_eq!(m.repairs.len(), 3, "{m:?}");
    assert!(m.changes > 10, "{m:?}");
    // Changes in another table are no reason to read the kernel again, nor
    // to reconcile: only the deleted rules are.
    assert_eq!(m.full_reads, 0, "{m:?}");
    assert!(
        m.reconciles <= 2 * m.repairs.len(),
        "{} reconciles for {} foreign changes and {} repairs",
        m.reconciles,
        m.changes,
        m.repairs.len()
    );
}

/// The full measurement (100,000 foreign routes, 10 s of churn), for the
/// figures only: `cargo test --release --test churn_ns -- --ignored
/// --nocapture` (`ENIROUTE_BIN` names another agent to measure).
#[test]
#[ignore = "a measurement, not a test: about a minute"]
fn foreign_route_churn_figures() {
    if !need_root("foreign_route_churn_figures") {
        return;
    }
    let m = measure_foreign_churn(bin(), false).expect("measure");
    eprintln!("foreign churn: {}", m.summary());
    assert!(m.survived, "the daemon died: {m:?}");
}
