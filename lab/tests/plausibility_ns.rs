//! Metadata that would strip an ENI bare, in a simulated instance: one read
//! of an absent `ipv6s` leaves an IPv6 ENI's addresses and rules in place
//! (the admin host keeps reaching it) with one warning naming the ENI and
//! the key; two reads that agree remove them.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use eniroute_lab::agent::{wait_for, Daemon};
use eniroute_lab::sim::Fault;
use eniroute_lab::world;
use eniroute_lab::Netns;

const ETH1_MAC: &str = "0a:e6:00:00:00:01";
const WARNING: &str = "key ipv6s: reads empty while eth1 is up with addresses";

fn config(test: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("eniroute-pl-{}-{test}.toml", std::process::id()));
    std::fs::write(&p, "[metadata]\nvolatile_refresh_secs = 1\n").unwrap();
    p
}

fn eth1_has(ns: &Netns, addr: &str) -> bool {
    ns.ip(["-6", "-o", "addr", "show", "dev", "eth1"])
        .unwrap()
        .contains(&format!(" {addr}/128"))
}

fn rule_for(ns: &Netns, addr: &str) -> bool {
    ns.ip(["-6", "rule"])
        .unwrap()
        .contains(&format!("from {addr} lookup 10001"))
}

#[test]
fn one_absent_ipv6s_read_removes_nothing_two_do() {
    if !need_root("one_absent_ipv6s_read_removes_nothing_two_do") {
        return;
    }
    let lab = world::ipv6_only().unwrap();
    let cfg = config("ipv6s");
    let _ssh = eniroute_lab::TcpServer::start(&lab.ns, "[::]:22".parse().unwrap()).unwrap();
    let d = Daemon::start_finding_metadata(bin(), &lab.ns, &cfg).unwrap();
    let up = wait_for(Duration::from_secs(10), || {
        reaches(&lab.admin, "2001:db8:2::21", 22, SHORT).is_ok()
    });
    assert!(
        up.is_some(),
        "never configured\n{}\n{}",
        d.log(),
        dumps(&lab.ns)
    );

    // One poll answers 404 for eth1's ipv6s.
    let key = format!("network/interfaces/macs/{ETH1_MAC}/ipv6s");
    lab.sim.set_fault(Some(&key), Some(Fault::Status(404)));
    let seen = wait_for(Duration::from_secs(10), || d.log().contains(WARNING));
    lab.sim.set_fault(Some(&key), None);
    assert!(seen.is_some(), "no warning\n{}", d.log());
    let log = d.log();
    let line = log.lines().find(|l| l.contains(WARNING)).unwrap();
    assert!(line.contains("eni-060001lab"), "{line}");
    for addr in ["2001:db8:2::20", "2001:db8:2::21"] {
        assert!(
            eth1_has(&lab.ns, addr),
            "{addr} removed\n{}",
            dumps(&lab.ns)
        );
        assert!(
            rule_for(&lab.ns, addr),
            "rule for {addr} removed\n{}",
            dumps(&lab.ns)
        );
    }
    // Good reads again: nothing was ever removed, and the admin host still
    // reaches eth1 through eth1.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(eth1_has(&lab.ns, "2001:db8:2::21"), "{}", dumps(&lab.ns));
    let seen = reaches(&lab.admin, "2001:db8:2::21", 22, LONG).unwrap();
    assert!(seen.starts_with("[2001:db8:9::5]:"), "server saw {seen}");
    let warned = d
        .log()
        .lines()
        .filter(|l| l.contains(" WARN ") && l.contains(WARNING))
        .count();
    assert_eq!(warned, 1, "{}", d.log());
    assert!(!d.log().contains("- address 2001:db8:2::2"), "{}", d.log());

    // A genuine removal: every read from now on lists no IPv6 address for
    // eth1. The second read confirms it, and eniroute's addresses go.
    lab.sim.update(|t| {
        t["network"]["interfaces"]["macs"][ETH1_MAC]["ipv6s"] = serde_json::json!([]);
    });
    let gone = wait_for(Duration::from_secs(10), || {
        !eth1_has(&lab.ns, "2001:db8:2::21") && !rule_for(&lab.ns, "2001:db8:2::21")
    });
    assert!(
        gone.is_some(),
        "never removed\n{}\n{}",
        d.log(),
        dumps(&lab.ns)
    );
    let _ = std::fs::remove_file(cfg);
}
