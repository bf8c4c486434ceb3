//! `eniroute status` as a health check in a simulated instance: its exit
//! code for in sync (0), drift (3), a foreign rule that takes an ENI's
//! traffic first (4), unreadable metadata (5, with the kernel's state
//! still shown and marked unverified, and the pod agents found on the
//! host) and an ENI held on implausible metadata (6); addresses as the
//! kernel has them.

mod common;

use common::*;
use eniroute_lab::sim::Fault;
use eniroute_lab::world;

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(o)))
}

fn eni<'a>(v: &'a serde_json::Value, dev: &str) -> &'a serde_json::Value {
    v["enis"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["dev"] == dev)
        .unwrap_or_else(|| panic!("no {dev} in {v}"))
}

#[test]
fn status_exits_0_in_sync_and_shows_the_kernels_addresses() {
    if !need_root("status_exits_0_in_sync_and_shows_the_kernels_addresses") {
        return;
    }
    let lab = world::management_network().unwrap();
    let inst = &lab.inst;
    apply(&inst.ns, &inst.endpoint);
    let o = eniroute(&inst.ns, &inst.endpoint, &["status"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = stdout(&o);
    let header = out.lines().nth(1).unwrap_or_default();
    for col in [
        "ENI",
        "DEVICE",
        "LINK",
        "TABLE",
        "ADDRESSES",
        "RULES",
        "DRIFT",
        "CONFLICTS",
    ] {
        assert!(header.contains(col), "{out}");
    }
    let row = out
        .lines()
        .find(|l| l.starts_with("eni-0010001lab"))
        .unwrap_or_else(|| panic!("no row for eth1:\n{out}"));
    // As the kernel has them: the primary with its subnet's /24, the
    // secondary as /32, eth0's from DHCP as someone else's.
    assert!(row.contains("10.0.2.20/24(eniroute)"), "{row}");
    assert!(row.contains("10.0.2.21/32(eniroute)"), "{row}");
    let eth0 = out
        .lines()
        .find(|l| l.contains(" eth0 "))
        .unwrap_or_else(|| panic!("no row for eth0:\n{out}"));
    assert!(eth0.contains("10.0.1.10/24(other)"), "{eth0}");
    assert!(
        row.contains("eth1") && row.contains("10001") && row.contains("0/1"),
        "{row}"
    );
    assert!(row.contains("2 ok, 0 missing"), "{row}");
    assert!(out.trim_end().ends_with("in sync"), "{out}");

    let o = eniroute(&inst.ns, &inst.endpoint, &["status", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v = json(&o);
    assert_eq!(v["schema_version"], 1);
    assert_eq!(v["state"], "in-sync");
    assert_eq!(v["exit_code"], 0);
    assert!(v["metadata"]["error"].is_null(), "{v}");
    let eth1 = eni(&v, "eth1");
    assert_eq!(eth1["verified"], true);
    let addrs = eth1["addresses"].as_array().unwrap();
    assert!(addrs
        .iter()
        .any(|a| a["address"] == "10.0.2.20/24" && a["owner"] == "eniroute"));
    assert!(addrs
        .iter()
        .any(|a| a["address"] == "10.0.2.21/32" && a["owner"] == "eniroute"));
    assert!(!eth1["routes"].as_array().unwrap().is_empty(), "{eth1}");
}

#[test]
fn a_deleted_rule_is_drift_exit_3() {
    if !need_root("a_deleted_rule_is_drift_exit_3") {
        return;
    }
    let lab = world::management_network().unwrap();
    let inst = &lab.inst;
    apply(&inst.ns, &inst.endpoint);
    ip(
        &inst.ns,
        "rule del from 10.0.2.20 lookup 10001 priority 10001",
    );
    let o = eniroute(&inst.ns, &inst.endpoint, &["status"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let out = stdout(&o);
    assert!(
        out.contains("missing rule from 10.0.2.20 lookup 10001"),
        "{out}"
    );
    assert!(out.contains("1 ok, 1 missing"), "{out}");
    assert!(!out.contains("in sync"), "{out}");
    assert!(stderr(&o).contains("pending changes"), "{}", text(&o));
    let v = json(&eniroute(&inst.ns, &inst.endpoint, &["status", "--json"]));
    assert_eq!(
        (v["state"].as_str(), v["exit_code"].as_u64()),
        (Some("drift"), Some(3))
    );

    apply(&inst.ns, &inst.endpoint);
    let o = eniroute(&inst.ns, &inst.endpoint, &["status"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

#[test]
fn a_foreign_rule_ahead_of_an_eni_is_a_conflict_exit_4_and_outranks_drift() {
    if !need_root("a_foreign_rule_ahead_of_an_eni_is_a_conflict_exit_4_and_outranks_drift") {
        return;
    }
    let lab = world::management_network().unwrap();
    let inst = &lab.inst;
    apply(&inst.ns, &inst.endpoint);
    ip(&inst.ns, "rule add from 10.0.2.21 lookup main priority 100");
    // The foreign rule does take the address's traffic.
    assert_eq!(dev_for(&inst.ns, "10.9.0.5", Some("10.0.2.21")), "eth0");
    let o = eniroute(&inst.ns, &inst.endpoint, &["status"]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let out = stdout(&o);
    assert!(
        out.contains("conflict: foreign rule from 10.0.2.21 lookup main priority 100"),
        "{out}"
    );
    assert!(!out.contains("in sync"), "{out}");
    let v = json(&eniroute(&inst.ns, &inst.endpoint, &["status", "--json"]));
    assert_eq!(
        (v["state"].as_str(), v["conflicts"].as_u64()),
        (Some("conflict"), Some(1))
    );

    // Drift as well: the conflict decides the exit code.
    ip(
        &inst.ns,
        "rule del from 10.0.2.20 lookup 10001 priority 10001",
    );
    let o = eniroute(&inst.ns, &inst.endpoint, &["status"]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(stdout(&o).contains("pending changes"), "{}", text(&o));
}

#[test]
fn metadata_down_exits_5_and_still_shows_the_kernels_state_unverified() {
    if !need_root("metadata_down_exits_5_and_still_shows_the_kernels_state_unverified") {
        return;
    }
    let lab = world::management_network().unwrap();
    let inst = &lab.inst;
    apply(&inst.ns, &inst.endpoint);
    inst.sim.set_fault(None, Some(Fault::Status(500)));
    let o = eniroute(&inst.ns, &inst.endpoint, &["status"]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    let out = stdout(&o);
    assert!(
        out.contains("metadata unavailable:") && out.contains("500"),
        "{out}"
    );
    assert!(out.contains("UNVERIFIED"), "{out}");
    let row = out
        .lines()
        .find(|l| l.contains(" eth1 "))
        .unwrap_or_else(|| panic!("eth1 not shown:\n{out}"));
    assert!(
        row.contains("10001") && row.contains("10.0.2.21/32(eniroute)"),
        "{row}"
    );
    assert!(
        row.contains("2 present") && row.contains("unverified"),
        "{row}"
    );
    assert!(
        out.contains("ok      rule from 10.0.2.21 lookup 10001"),
        "{out}"
    );
    assert!(!out.contains("in sync"), "{out}");
    let all = text(&o);
    assert!(!all.contains("nothing was changed"), "{all}");

    let o = eniroute(&inst.ns, &inst.endpoint, &["status", "--json"]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    let v = json(&o);
    assert_eq!(v["state"], "metadata-unavailable");
    assert!(
        v["metadata"]["error"].as_str().unwrap().contains("500"),
        "{v}"
    );
    let eth1 = eni(&v, "eth1");
    assert_eq!(eth1["verified"], false);
    assert_eq!(eth1["table"], 10001);
    assert_eq!(eth1["rules_present"].as_array().unwrap().len(), 2, "{eth1}");
    let eth0 = eni(&v, "eth0");
    assert_eq!(eth0["table"], 10000);
}

#[test]
fn metadata_failures_name_their_likely_cause() {
    if !need_root("metadata_failures_name_their_likely_cause") {
        return;
    }
    let lab = world::management_network().unwrap();
    let inst = &lab.inst;
    // Nothing listens on this port: not on EC2, or the endpoint disabled.
    let o = eniroute(&inst.ns, "http://127.0.0.1:9", &["status"]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    let out = stdout(&o);
    assert!(
        out.contains("nothing answers at http://127.0.0.1:9"),
        "{out}"
    );
    assert!(out.contains("--http-endpoint enabled"), "{out}");
    let o = eniroute(&inst.ns, "http://127.0.0.1:9", &["apply"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = stderr(&o);
    assert!(
        err.contains("not an EC2 instance") && err.contains("nothing was changed"),
        "{err}"
    );
    let o = eniroute(&inst.ns, "http://127.0.0.1:9", &["plan"]);
    let err = stderr(&o);
    assert!(
        err.contains("not an EC2 instance") && !err.contains("nothing was changed"),
        "{err}"
    );

    // A token PUT that gets no answer in time: the hop limit of 1 that
    // stops the reply short of a container (the request timeout is 2 s).
    inst.sim.set_fault(
        Some("latest/api/token"),
        Some(Fault::Delay(std::time::Duration::from_secs(3))),
    );
    let o = eniroute(&inst.ns, &inst.endpoint, &["status"]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    let out = stdout(&o);
    assert!(out.contains("hop limit of 1"), "{out}");
    assert!(out.contains("--http-put-response-hop-limit 2"), "{out}");

    // An endpoint that refuses the token PUT answers IMDSv1 only.
    inst.sim
        .set_fault(Some("latest/api/token"), Some(Fault::Status(405)));
    let o = eniroute(&inst.ns, &inst.endpoint, &["plan"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(stderr(&o).contains("IMDSv1 only"), "{}", text(&o));

    // A proxy in the environment is named, and said not to be used.
    let o = inst
        .ns
        .command(bin())
        .args(["--imds-endpoint", &inst.endpoint, "plan"])
        .env("HTTPS_PROXY", "http://proxy.invalid:3128")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = stderr(&o);
    assert!(
        err.contains("HTTPS_PROXY=http://proxy.invalid:3128 is set"),
        "{err}"
    );
    assert!(
        err.contains("never sends metadata requests through a proxy"),
        "{err}"
    );
}

const ETH1_MAC: &str = "0a:e0:00:01:00:01";

#[test]
fn an_eni_held_on_implausible_metadata_exits_6_until_metadata_is_consistent() {
    if !need_root("an_eni_held_on_implausible_metadata_exits_6_until_metadata_is_consistent") {
        return;
    }
    let lab = world::management_network().unwrap();
    let inst = &lab.inst;
    apply(&inst.ns, &inst.endpoint);
    let _ssh = server(&inst.ns, 22);
    let subnet = format!("/network/interfaces/macs/{ETH1_MAC}/subnet-ipv4-cidr-block");
    // A subnet with host bits: nothing may be changed from it.
    inst.sim.update(|t| {
        *t.pointer_mut(&subnet).unwrap() = serde_json::json!("10.0.2.5/24");
    });
    let o = eniroute(&inst.ns, &inst.endpoint, &["status"]);
    assert_eq!(o.status.code(), Some(6), "{}", text(&o));
    let out = stdout(&o);
    assert!(
        out.contains("invalid metadata: ENI eni-0010001lab"),
        "{out}"
    );
    assert!(out.contains("warning: "), "{out}");
    assert!(
        out.trim_end()
            .ends_with("1 ENI(s) held: metadata for them is not applied (see the warnings); their links keep what they have"),
        "{out}"
    );
    assert!(stderr(&o).contains("status: 1 ENI(s) held"), "{}", text(&o));
    let o = eniroute(&inst.ns, &inst.endpoint, &["status", "--json"]);
    assert_eq!(o.status.code(), Some(6), "{}", text(&o));
    let v = json(&o);
    assert_eq!(
        (
            v["state"].as_str(),
            v["exit_code"].as_u64(),
            v["held"].as_u64()
        ),
        (Some("held"), Some(6), Some(1)),
        "{v}"
    );
    assert_eq!(eni(&v, "eth1")["held"], true, "{v}");
    assert!(eni(&v, "eth0").get("held").is_none(), "{v}");
    // Nothing was changed: eth1 still answers through eth1.
    assert_eq!(dev_for(&inst.ns, "10.9.0.5", Some("10.0.2.21")), "eth1");
    let seen = reaches(&lab.admin, "10.0.2.21", 22, LONG).unwrap();
    assert!(seen.starts_with("10.9.0.5:"), "server saw {seen}");

    // Consistent again: in sync, exit 0.
    inst.sim.update(|t| {
        *t.pointer_mut(&subnet).unwrap() = serde_json::json!("10.0.2.0/24");
    });
    let o = eniroute(&inst.ns, &inst.endpoint, &["status", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v = json(&o);
    assert_eq!(
        (v["state"].as_str(), v["held"].as_u64()),
        (Some("in-sync"), Some(0))
    );
}

#[test]
fn without_metadata_status_still_names_the_pod_agents_it_finds() {
    if !need_root("without_metadata_status_still_names_the_pod_agents_it_finds") {
        return;
    }
    let lab = world::management_network().unwrap();
    let inst = &lab.inst;
    apply(&inst.ns, &inst.endpoint);
    // The VPC CNI's rule for the way to a pod.
    ip(&inst.ns, "rule add to 10.0.1.11 lookup main priority 512");
    inst.sim.set_fault(None, Some(Fault::Status(500)));
    let o = eniroute(&inst.ns, &inst.endpoint, &["status"]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    let out = stdout(&o);
    assert!(
        out.contains("pods: Kubernetes VPC CNI (rule at priority 512 of protocol "),
        "{out}"
    );
    let o = eniroute(&inst.ns, &inst.endpoint, &["status", "--json"]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    let v = json(&o);
    assert_eq!(v["state"], "metadata-unavailable");
    assert_eq!(v["pod_agents"][0]["agent"], "vpc-cni", "{v}");
    assert_eq!(v["primary_secondary_ips"], "leave", "{v}");
}
