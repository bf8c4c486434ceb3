//! cloud-init's own policy routing for a secondary NIC (what its EC2
//! datasource writes into netplan and systemd-networkd installs: `from <ip>
//! lookup 101`, protocol static, a default route in table 101) beside
//! eniroute's: `eniroute status` names it and says how to switch it off.

mod common;

use common::*;
use eniroute_lab::world;

#[test]
fn status_names_cloud_init_policy_routing_for_an_enis_address() {
    if !need_root("status_names_cloud_init_policy_routing_for_an_enis_address") {
        return;
    }
    let lab = world::management_network().unwrap();
    let inst = &lab.inst;
    apply(&inst.ns, &inst.endpoint);
    let before = eniroute(&inst.ns, &inst.endpoint, &["status"]);
    assert!(before.status.success(), "{}", text(&before));
    assert!(!String::from_utf8_lossy(&before.stdout).contains("cloud-init"));

    for args in [
        &[
            "route",
            "add",
            "10.0.2.0/24",
            "dev",
            "eth1",
            "table",
            "101",
            "proto",
            "static",
        ][..],
        &[
            "route", "add", "default", "via", "10.0.2.1", "dev", "eth1", "table", "101", "proto",
            "static",
        ][..],
        &[
            "rule",
            "add",
            "from",
            "10.0.2.21",
            "table",
            "101",
            "priority",
            "32765",
            "proto",
            "static",
        ][..],
    ] {
        inst.ns.ip(args).unwrap();
    }
    let o = eniroute(&inst.ns, &inst.endpoint, &["status"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("cloud-init:"))
        .unwrap_or_else(|| panic!("status does not name cloud-init's rule:\n{out}"));
    assert!(line.contains("from 10.0.2.21 lookup 101"), "{line}");
    assert!(
        line.contains("apply_full_imds_network_config: false"),
        "{line}"
    );
    // Reported, never changed: the rule is still there.
    assert!(inst
        .ns
        .ip(["rule"])
        .unwrap()
        .contains("from 10.0.2.21 lookup 101"));

    let json = eniroute(&inst.ns, &inst.endpoint, &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let named: Vec<&serde_json::Value> = v["enis"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.get("cloud_init"))
        .collect();
    assert_eq!(named.len(), 1, "{v}");
}
