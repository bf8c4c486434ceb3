//! One-shot `eniroute apply` in a simulated instance: real TCP connections
//! through a VPC router that drops packets leaving the wrong ENI, and what
//! `ip route get … from …` decides.

mod common;

use common::*;
use eniroute_lab::world::{self, EniPlan};
use eniroute_lab::{self as lab, Netns, Vpc};

#[test]
fn admin_reaches_both_management_addresses_only_after_apply() {
    if !need_root("admin_reaches_both_management_addresses_only_after_apply") {
        return;
    }
    let lab = world::management_network().unwrap();
    let inst = &lab.inst;
    let _ssh = server(&inst.ns, 22);
    // eth0 works as DHCP left it; eth1 has no address at all yet.
    assert!(reaches(&lab.admin, "10.0.1.10", 22, LONG).is_ok());
    assert!(reaches(&lab.admin, "10.0.2.20", 22, SHORT).is_err());

    let out = apply(&inst.ns, &inst.endpoint);
    assert!(
        out.contains("+ rule from 10.0.2.21 lookup 10001 priority 10001"),
        "{out}"
    );

    for ip in ["10.0.2.20", "10.0.2.21", "10.0.1.10"] {
        let seen = reaches(&lab.admin, ip, 22, LONG)
            .unwrap_or_else(|e| panic!("admin -> {ip}: {e}\n{}", dumps(&inst.ns)));
        assert!(seen.starts_with("10.9.0.5:"), "server saw {seen}");
    }
    assert_eq!(dev_for(&inst.ns, "10.9.0.5", Some("10.0.2.20")), "eth1");
    assert_eq!(dev_for(&inst.ns, "10.9.0.5", Some("10.0.2.21")), "eth1");
    assert_eq!(dev_for(&inst.ns, "10.9.0.5", Some("10.0.1.10")), "eth0");
    assert_eq!(dev_for(&inst.ns, "198.51.100.10", None), "eth0");
    // The internet client still reaches the public ENI.
    assert!(reaches(&lab.internet, "10.0.1.10", 22, LONG).is_ok());
}

#[test]
fn metadata_failure_changes_nothing_and_exits_1() {
    if !need_root("metadata_failure_changes_nothing_and_exits_1") {
        return;
    }
    let lab = world::management_network().unwrap();
    let inst = &lab.inst;
    let before = dumps(&inst.ns);
    inst.sim
        .set_fault(None, Some(eniroute_lab::sim::Fault::Status(500)));
    let o = eniroute(&inst.ns, &inst.endpoint, &["apply"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("169.254.169.254") && err.contains("500"),
        "{err}"
    );
    assert_eq!(dumps(&inst.ns), before);
}

#[test]
fn socket_bound_to_management_address_leaves_through_eth1() {
    if !need_root("socket_bound_to_management_address_leaves_through_eth1") {
        return;
    }
    let lab = world::management_network().unwrap();
    let inst = &lab.inst;
    let _admin_srv = server(&lab.admin, 9000);
    let dst = "10.9.0.5:9000".parse().unwrap();
    let src = Some("10.0.2.21".parse().unwrap());
    apply(&inst.ns, &inst.endpoint);
    let seen = lab::connect(&inst.ns, dst, src, LONG).unwrap();
    assert!(seen.starts_with("10.0.2.21:"), "admin saw {seen}");
}

#[test]
fn containers_on_a_bridge_still_reach_the_primary_address() {
    if !need_root("containers_on_a_bridge_still_reach_the_primary_address") {
        return;
    }
    let lab = world::management_network().unwrap();
    let inst = &lab.inst;
    // A docker0-style bridge with one container behind it.
    ip(&inst.ns, "link add br0 type bridge");
    ip(&inst.ns, "addr add 172.17.0.1/16 dev br0");
    ip(&inst.ns, "link set br0 up");
    let ctr = Netns::create("ctr").unwrap();
    lab::veth(&ctr, "eth0", None, &inst.ns, "vethc").unwrap();
    ip(&inst.ns, "link set vethc master br0");
    ip(&ctr, "addr add 172.17.0.2/16 dev eth0");
    ip(&ctr, "route add default via 172.17.0.1");
    let _srv = server(&inst.ns, 8080);
    apply(&inst.ns, &inst.endpoint);
    let seen = reaches(&ctr, "10.0.1.10", 8080, LONG)
        .unwrap_or_else(|e| panic!("container -> host primary: {e}\n{}", dumps(&inst.ns)));
    assert!(seen.starts_with("172.17.0.2:"), "{seen}");
    assert_eq!(dev_for(&inst.ns, "172.17.0.2", Some("10.0.1.10")), "br0");
    // The bridge was not touched: not in the ENI group, no rules for it.
    assert!(!inst
        .ns
        .ip(["-d", "link", "show", "br0"])
        .unwrap()
        .contains("group 10000"));
}

#[test]
fn two_enis_in_one_subnet_each_answer_from_their_own_link() {
    if !need_root("two_enis_in_one_subnet_each_answer_from_their_own_link") {
        return;
    }
    let vpc = Vpc::new().unwrap();
    let inst = world::instance(
        &vpc,
        1,
        &[
            EniPlan::new("eth0", 0, "10.0.1.0/24", &["10.0.1.10"]).unwrap(),
            EniPlan::new("eth1", 1, "10.0.1.0/24", &["10.0.1.20"]).unwrap(),
        ],
    )
    .unwrap();
    let admin = vpc.client("admin", "10.9.0.5/24".parse().unwrap()).unwrap();
    let _srv = server(&inst.ns, 22);
    assert!(reaches(&admin, "10.0.1.20", 22, SHORT).is_err());
    apply(&inst.ns, &inst.endpoint);
    for ip in ["10.0.1.10", "10.0.1.20"] {
        reaches(&admin, ip, 22, LONG).unwrap_or_else(|e| panic!("{ip}: {e}\n{}", dumps(&inst.ns)));
    }
    assert_eq!(dev_for(&inst.ns, "10.9.0.5", Some("10.0.1.20")), "eth1");
    assert_eq!(dev_for(&inst.ns, "10.0.1.99", Some("10.0.1.20")), "eth1");
    assert_eq!(dev_for(&inst.ns, "10.0.1.99", Some("10.0.1.10")), "eth0");
}

#[test]
fn second_apply_writes_nothing_and_changes_nothing() {
    if !need_root("second_apply_writes_nothing_and_changes_nothing") {
        return;
    }
    let lab = world::management_network().unwrap();
    let inst = &lab.inst;
    let first = apply(&inst.ns, &inst.endpoint);
    assert!(!first.contains("netlink writes: 0 "), "{first}");
    let before = dumps(&inst.ns);
    let second = apply(&inst.ns, &inst.endpoint);
    assert!(second.contains("netlink writes: 0 "), "{second}");
    assert!(second.contains("nothing to change"), "{second}");
    assert_eq!(dumps(&inst.ns), before);
    let rules = ip(&inst.ns, "rule");
    let mut lines: Vec<&str> = rules.lines().collect();
    let n = lines.len();
    lines.sort();
    lines.dedup();
    assert_eq!(lines.len(), n, "duplicate rules:\n{rules}");
}

#[test]
fn foreign_objects_survive_apply_and_cleanup_removes_only_ours() {
    if !need_root("foreign_objects_survive_apply_and_cleanup_removes_only_ours") {
        return;
    }
    let lab = world::management_network().unwrap();
    let inst = &lab.inst;
    let other = Netns::create("other").unwrap();
    lab::veth(&inst.ns, "vfor", None, &other, "vpeer").unwrap();
    ip(&inst.ns, "addr add 192.168.50.1/24 dev vfor");
    ip(
        &inst.ns,
        "rule add from 192.168.50.0/24 lookup 50 priority 500",
    );
    let foreign = |ns: &Netns| {
        (
            ns.ip(["rule", "show", "priority", "500"]).unwrap(),
            ns.ip(["-4", "-br", "addr", "show", "dev", "vfor"]).unwrap(),
            ns.ip(["-4", "-br", "addr", "show", "dev", "eth0"]).unwrap(),
        )
    };
    let before = foreign(&inst.ns);
    apply(&inst.ns, &inst.endpoint);
    assert_eq!(foreign(&inst.ns), before);
    assert!(inst.ns.ip(["rule"]).unwrap().contains("lookup 10001"));

    let o = eniroute(&inst.ns, &inst.endpoint, &["cleanup"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(foreign(&inst.ns), before, "cleanup touched foreign objects");
    let rules = ip(&inst.ns, "rule");
    assert!(
        !rules.contains("proto 233") && !rules.contains("1000"),
        "{rules}"
    );
    let routes = ip(&inst.ns, "route show table all");
    assert!(!routes.contains("proto 233"), "{routes}");
    let eth1 = ip(&inst.ns, "addr show dev eth1");
    assert!(
        !eth1.contains("10.0.2.2"),
        "added addresses left behind: {eth1}"
    );
    // DHCP's address and default route on eth0 are still there.
    assert!(before.2.contains("10.0.1.10/24"));
    assert_eq!(dev_for(&inst.ns, "198.51.100.10", None), "eth0");
}

#[test]
fn status_reports_rules_drift_and_conflicting_foreign_rules() {
    if !need_root("status_reports_rules_drift_and_conflicting_foreign_rules") {
        return;
    }
    let lab = world::management_network().unwrap();
    let inst = &lab.inst;
    apply(&inst.ns, &inst.endpoint);
    // Someone deletes one of our rules and adds one that captures eth1's
    // secondary address before ours is consulted.
    ip(
        &inst.ns,
        "rule del from 10.0.2.20 lookup 10001 priority 10001",
    );
    ip(&inst.ns, "rule add from 10.0.2.21 lookup 50 priority 100");
    let o = eniroute(&inst.ns, &inst.endpoint, &["status"]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("missing rule from 10.0.2.20 lookup 10001 priority 10001"),
        "{out}"
    );
    assert!(
        out.contains("ok      rule from 10.0.2.21 lookup 10001 priority 10001"),
        "{out}"
    );
    assert!(
        out.contains("conflict: foreign rule from 10.0.2.21 lookup 50 priority 100"),
        "{out}"
    );
    assert!(out.contains("pending changes"), "{out}");

    let j = eniroute(&inst.ns, &inst.endpoint, &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&j.stdout).unwrap();
    let eth1 = v["enis"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["dev"] == "eth1")
        .unwrap();
    assert_eq!(eth1["table"], 10001);
    assert_eq!(eth1["device"], 1);
    assert_eq!(eth1["rules_missing"].as_array().unwrap().len(), 1);
    assert_eq!(eth1["conflicts"].as_array().unwrap().len(), 1);

    // apply repairs the drift, warns about the foreign rule and leaves it.
    let out = apply(&inst.ns, &inst.endpoint);
    assert!(
        out.contains("warning: ENI eni-0010001lab (eth1): foreign rule from 10.0.2.21 lookup 50 priority 100"),
        "{out}"
    );
    // Nothing left for apply; the foreign rule is still a conflict.
    let o = eniroute(&inst.ns, &inst.endpoint, &["status"]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        !out.contains("pending changes") && !out.contains("  missing "),
        "{out}"
    );
    assert!(inst.ns.ip(["rule"]).unwrap().contains("lookup 50"));
}

#[test]
fn ipv6_address_answers_through_its_own_eni() {
    if !need_root("ipv6_address_answers_through_its_own_eni") {
        return;
    }
    let lab = world::management_network().unwrap();
    let inst = &lab.inst;
    let eth1 = inst.eni("eth1").unwrap().clone();
    let v6: std::net::Ipv6Addr = "2001:db8:2::20".parse().unwrap();
    lab.vpc.eni_ipv6(&eth1, &[v6]).unwrap();
    lab.vpc
        .client_ipv6(&lab.admin, "2001:db8:9::5/64".parse().unwrap())
        .unwrap();
    let mac = eth1.mac().to_string();
    inst.sim.update(|t| {
        let e = &mut t["network"]["interfaces"]["macs"][&mac];
        e["ipv6s"] = serde_json::json!(["2001:db8:2::20"]);
        e["subnet-ipv6-cidr-blocks"] = serde_json::json!(["2001:db8:2::/64"]);
    });
    let _srv = lab::TcpServer::start(&inst.ns, "[::]:2222".parse().unwrap()).unwrap();

    let out = apply(&inst.ns, &inst.endpoint);
    assert!(
        out.contains("+ address 2001:db8:2::20/128 dev eth1"),
        "{out}"
    );
    assert!(
        out.contains("+ rule -6 from 2001:db8:2::20 lookup 10001 priority 10001"),
        "{out}"
    );
    let seen = reaches(&lab.admin, "2001:db8:2::20", 2222, LONG)
        .unwrap_or_else(|e| panic!("admin -> [2001:db8:2::20]: {e}\n{}", dumps(&inst.ns)));
    assert!(seen.starts_with("[2001:db8:9::5]:"), "server saw {seen}");
    assert_eq!(
        dev_for(&inst.ns, "2001:db8:9::5", Some("2001:db8:2::20")),
        "eth1"
    );

    // The rule is what carries the reply: main has no IPv6 route to the
    // admin range on this instance.
    ip(&inst.ns, "-6 rule del from 2001:db8:2::20 lookup 10001");
    assert!(reaches(&lab.admin, "2001:db8:2::20", 2222, SHORT).is_err());
}
