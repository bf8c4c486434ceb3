//! Configuration that changes what the agent does, seen in a simulated
//! instance: exclusion, extra main-table routes, appliance sysctls.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use eniroute_lab::world;

fn config(name: &str, body: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("eniroute-cfgns-{}-{name}.toml", std::process::id()));
    std::fs::write(&p, body).unwrap();
    p
}

fn apply_with(ns: &eniroute_lab::Netns, endpoint: &str, cfg: &Path) -> String {
    let o = eniroute(
        ns,
        endpoint,
        &["-v", "--config", cfg.to_str().unwrap(), "apply"],
    );
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn an_excluded_eni_keeps_exactly_what_it_had() {
    if !need_root("an_excluded_eni_keeps_exactly_what_it_had") {
        return;
    }
    let lab = world::management_network().unwrap();
    let inst = &lab.inst;
    // What an operator (or another agent, like a CNI) put there.
    inst.ns
        .ip(["addr", "add", "10.0.2.20/24", "dev", "eth1"])
        .unwrap();
    inst.ns.ip(["link", "set", "eth1", "mtu", "1400"]).unwrap();
    let show = || inst.ns.ip(["-d", "addr", "show", "dev", "eth1"]).unwrap();
    let before = show();
    let cfg = config("exclude", "[selection]\nexclude = [{ name = \"eth1\" }]\n");
    let out = apply_with(&inst.ns, &inst.endpoint, &cfg);
    assert!(!out.contains("eth1"), "eth1 touched:\n{out}");
    let after = show();
    let strip = |s: &str| -> String {
        s.lines()
            .filter(|l| !l.contains("fe80") && !l.contains("valid_lft"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(strip(&after), strip(&before));
    let rules = inst.ns.ip(["rule"]).unwrap();
    assert!(
        rules.contains("lookup 10000") && !rules.contains("10001"),
        "{rules}"
    );
    let status = eniroute(
        &inst.ns,
        &inst.endpoint,
        &["--config", cfg.to_str().unwrap(), "status"],
    );
    let s = String::from_utf8_lossy(&status.stdout);
    assert!(s.contains("excluded by configuration"), "{s}");
    let _ = std::fs::remove_file(cfg);
}

#[test]
fn a_declared_main_route_sends_own_traffic_through_the_management_eni() {
    if !need_root("a_declared_main_route_sends_own_traffic_through_the_management_eni") {
        return;
    }
    let lab = world::management_network().unwrap();
    let inst = &lab.inst;
    let _admin_srv = server(&lab.admin, 9000);
    let cfg = config(
        "mainroute",
        "[[eni]]\nmatch = { name = \"eth1\" }\nmain_routes = [{ dst = \"10.9.0.0/24\" }]\n",
    );
    assert_eq!(dev_for(&inst.ns, "10.9.0.5", None), "eth0");
    let out = apply_with(&inst.ns, &inst.endpoint, &cfg);
    assert!(
        out.contains("+ route 10.9.0.0/24 via 10.0.2.1 dev eth1 src 10.0.2.20 table main"),
        "{out}"
    );
    assert_eq!(dev_for(&inst.ns, "10.9.0.5", None), "eth1");
    // An unbound socket picks eth1's address and gets through the VPC.
    let seen = reaches(&inst.ns, "10.9.0.5", 9000, LONG).unwrap();
    assert!(seen.starts_with("10.0.2.20:"), "admin saw {seen}");
    // Other destinations still leave through eth0.
    assert_eq!(dev_for(&inst.ns, "198.51.100.10", None), "eth0");
    let _ = std::fs::remove_file(cfg);
}

#[test]
fn appliance_eni_gets_forwarding_and_loose_rp_filter() {
    if !need_root("appliance_eni_gets_forwarding_and_loose_rp_filter") {
        return;
    }
    let lab = world::management_network().unwrap();
    let inst = &lab.inst;
    let cfg = config(
        "appliance",
        "[[eni]]\nmatch = { device = 1 }\nforwarding = true\nrp_filter = \"loose\"\n",
    );
    let sysctl = |k: &str| {
        let o = inst
            .ns
            .exec(["cat", &format!("/proc/sys/net/ipv4/conf/{k}")])
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert_eq!(sysctl("eth1/forwarding"), "0");
    let out = apply_with(&inst.ns, &inst.endpoint, &cfg);
    assert!(
        out.contains("~ sysctl net.ipv4.conf.eth1.forwarding=1"),
        "{out}"
    );
    assert_eq!(sysctl("eth1/forwarding"), "1");
    assert_eq!(sysctl("eth1/rp_filter"), "2");
    // eth0 is not an appliance ENI: left as it was.
    assert_eq!(sysctl("eth0/forwarding"), "0");
    let again = apply_with(&inst.ns, &inst.endpoint, &cfg);
    assert!(again.contains("netlink writes: 0 "), "{again}");
    let _ = std::fs::remove_file(cfg);
}
