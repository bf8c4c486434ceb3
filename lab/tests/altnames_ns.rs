//! Alternative link names in simulated instances: `ip link show eni-…` and
//! `ip link show device-number-N` name the ENI's link after `apply`, follow
//! metadata, go away with the ENI, and leave everyone else's names alone.

mod common;

use std::path::PathBuf;

use common::*;
use eniroute_lab::world::{self, EniPlan};
use eniroute_lab::{Netns, Vpc};

/// The link `name` resolves to, as `ip link show NAME` prints it; `None`
/// when no link has that name or altname.
fn resolves(ns: &Netns, name: &str) -> Option<String> {
    let out = ns.ip(["-o", "link", "show", name]).ok()?;
    // "3: eth1@if7: <...": the kernel name, without the peer.
    let dev = out.split(": ").nth(1)?;
    Some(dev.split('@').next()?.to_string())
}

/// The alternative names of `dev`, as `ip link show` lists them.
fn altnames(ns: &Netns, dev: &str) -> Vec<String> {
    let out = ns.ip(["-o", "link", "show", "dev", dev]).unwrap();
    let words: Vec<&str> = out.split_whitespace().collect();
    let mut names: Vec<String> = words
        .windows(2)
        .filter(|w| w[0] == "altname")
        .map(|w| w[1].trim_end_matches('\\').to_string())
        .collect();
    names.sort();
    names
}

fn set_device(inst: &world::LabInstance, dev: &str, device: u32) {
    let mac = inst.eni(dev).unwrap().mac().to_string();
    inst.sim.update(|t| {
        t["network"]["interfaces"]["macs"][&mac]["device-number"] =
            serde_json::json!(device.to_string());
    });
}

fn config(name: &str, body: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("eniroute-alt-{}-{name}.toml", std::process::id()));
    std::fs::write(&p, body).unwrap();
    p
}

#[test]
fn enis_are_reachable_by_their_id_and_device_number_after_apply() {
    if !need_root("enis_are_reachable_by_their_id_and_device_number_after_apply") {
        return;
    }
    let lab = world::management_network().unwrap();
    let inst = &lab.inst;
    assert_eq!(resolves(&inst.ns, "device-number-1"), None);
    let out = apply(&inst.ns, &inst.endpoint);
    assert!(out.contains("+ altname eni-0010001lab dev eth1"), "{out}");
    assert!(out.contains("+ altname device-number-1 dev eth1"), "{out}");
    assert_eq!(
        resolves(&inst.ns, "eni-0010001lab").as_deref(),
        Some("eth1")
    );
    assert_eq!(
        resolves(&inst.ns, "device-number-1").as_deref(),
        Some("eth1")
    );
    assert_eq!(
        resolves(&inst.ns, "eni-0010000lab").as_deref(),
        Some("eth0")
    );
    assert_eq!(
        resolves(&inst.ns, "device-number-0").as_deref(),
        Some("eth0")
    );
    // The names work wherever a link name does.
    let addrs = inst
        .ns
        .ip(["addr", "show", "dev", "device-number-1"])
        .unwrap();
    assert!(addrs.contains("10.0.2.21/32"), "{addrs}");

    let o = eniroute(&inst.ns, &inst.endpoint, &["status"]);
    let status = String::from_utf8_lossy(&o.stdout);
    assert!(
        status.contains("altnames: device-number-1 eni-0010001lab")
            || status.contains("altnames: eni-0010001lab device-number-1"),
        "{status}"
    );
    assert!(status.contains("in sync"), "{status}");
    let again = apply(&inst.ns, &inst.endpoint);
    assert!(!again.contains("altname"), "{again}");
}

#[test]
fn a_corrected_device_number_moves_the_altname_and_detach_removes_only_ours() {
    if !need_root("a_corrected_device_number_moves_the_altname_and_detach_removes_only_ours") {
        return;
    }
    let lab = world::management_network().unwrap();
    let inst = &lab.inst;
    // An operator's own name for the link, which is not eniroute's.
    inst.ns
        .ip(["link", "property", "add", "dev", "eth1", "altname", "mgmt"])
        .unwrap();
    // Metadata first says device 3, then corrects itself to 1.
    set_device(inst, "eth1", 3);
    apply(&inst.ns, &inst.endpoint);
    assert_eq!(
        resolves(&inst.ns, "device-number-3").as_deref(),
        Some("eth1")
    );
    set_device(inst, "eth1", 1);
    let out = apply(&inst.ns, &inst.endpoint);
    assert!(out.contains("- altname device-number-3 dev eth1"), "{out}");
    assert_eq!(
        resolves(&inst.ns, "device-number-1").as_deref(),
        Some("eth1")
    );
    assert_eq!(resolves(&inst.ns, "device-number-3"), None);
    assert_eq!(
        altnames(&inst.ns, "eth1"),
        ["device-number-1", "eni-0010001lab", "mgmt"]
    );

    // Detached in metadata while the link is still there: ours go.
    let mac = inst.eni("eth1").unwrap().mac();
    inst.sim
        .update(|t| eniroute_lab::imds_tree::remove_eni(t, mac));
    let out = apply(&inst.ns, &inst.endpoint);
    assert!(out.contains("- altname eni-0010001lab dev eth1"), "{out}");
    assert_eq!(altnames(&inst.ns, "eth1"), ["mgmt"]);
    assert_eq!(resolves(&inst.ns, "eni-0010001lab"), None);
    assert_eq!(
        resolves(&inst.ns, "device-number-0").as_deref(),
        Some("eth0")
    );

    // cleanup removes what is left of ours, and nothing else.
    let o = eniroute(&inst.ns, &inst.endpoint, &["cleanup"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(altnames(&inst.ns, "eth0").is_empty());
    assert_eq!(altnames(&inst.ns, "eth1"), ["mgmt"]);
}

#[test]
fn an_eni_moved_to_another_instance_gets_that_instances_names() {
    if !need_root("an_eni_moved_to_another_instance_gets_that_instances_names") {
        return;
    }
    let vpc = Vpc::new().unwrap();
    let mut i1 = world::instance(
        &vpc,
        1,
        &[
            EniPlan::new("eth0", 0, "10.0.1.0/24", &["10.0.1.10"]).unwrap(),
            EniPlan::new("eth1", 1, "10.0.2.0/24", &["10.0.2.50"]).unwrap(),
        ],
    )
    .unwrap();
    let mut i2 = world::instance(
        &vpc,
        2,
        &[EniPlan::new("eth0", 0, "10.0.1.0/24", &["10.0.1.11"]).unwrap()],
    )
    .unwrap();
    apply(&i1.ns, &i1.endpoint);
    apply(&i2.ns, &i2.endpoint);
    assert_eq!(resolves(&i1.ns, "eni-0010001lab").as_deref(), Some("eth1"));

    let (eni, meta) = i1.release("eth1").unwrap();
    i2.adopt(&vpc, eni, meta, 2).unwrap();
    apply(&i1.ns, &i1.endpoint);
    let out = apply(&i2.ns, &i2.endpoint);
    assert!(out.contains("+ altname device-number-2 dev eth1"), "{out}");
    assert_eq!(resolves(&i1.ns, "eni-0010001lab"), None);
    assert_eq!(resolves(&i2.ns, "eni-0010001lab").as_deref(), Some("eth1"));
    assert_eq!(resolves(&i2.ns, "device-number-2").as_deref(), Some("eth1"));
    assert_eq!(
        altnames(&i2.ns, "eth1"),
        ["device-number-2", "eni-0010001lab"]
    );
}

#[test]
fn names_amazon_ec2_net_utils_left_are_taken_over_and_excluded_enis_get_none() {
    if !need_root("names_amazon_ec2_net_utils_left_are_taken_over_and_excluded_enis_get_none") {
        return;
    }
    let lab = world::management_network().unwrap();
    let inst = &lab.inst;
    // As amazon-ec2-net-utils leaves eth0 behind when eniroute takes over
    // (it spells the primary's position with the card: device-number-0.0).
    for name in ["eni-0010000lab", "device-number-0.0"] {
        inst.ns
            .ip(["link", "property", "add", "dev", "eth0", "altname", name])
            .unwrap();
    }
    let cfg = config("exclude", "[selection]\nexclude = [{ name = \"eth1\" }]\n");
    let cfg_arg = cfg.to_str().unwrap();
    let o = eniroute(&inst.ns, &inst.endpoint, &["--config", cfg_arg, "apply"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(!out.contains("altname"), "{out}");
    assert_eq!(
        altnames(&inst.ns, "eth0"),
        ["device-number-0.0", "eni-0010000lab"]
    );
    assert!(altnames(&inst.ns, "eth1").is_empty());

    // Taken over: they are eniroute's now, so `cleanup` removes them.
    let o = eniroute(&inst.ns, &inst.endpoint, &["--config", cfg_arg, "cleanup"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("- altname device-number-0.0 dev eth0"),
        "{out}"
    );
    assert!(altnames(&inst.ns, "eth0").is_empty());
    let _ = std::fs::remove_file(cfg);
}

#[test]
fn the_daemon_keeps_altnames_in_step_with_metadata() {
    if !need_root("the_daemon_keeps_altnames_in_step_with_metadata") {
        return;
    }
    use eniroute_lab::agent::{wait_for, Daemon};
    use std::time::Duration;
    let lab = world::management_network().unwrap();
    let inst = &lab.inst;
    inst.ns
        .ip(["link", "property", "add", "dev", "eth1", "altname", "mgmt"])
        .unwrap();
    let d = Daemon::start(bin(), &inst.ns, &inst.endpoint, None).unwrap();
    let named = |name: &str, dev: Option<&str>| {
        wait_for(Duration::from_secs(5), || {
            resolves(&inst.ns, name).as_deref() == dev
        })
        .is_some()
    };
    assert!(named("device-number-1", Some("eth1")), "{}", d.log());
    assert!(named("eni-0010001lab", Some("eth1")), "{}", d.log());

    // Metadata changes its mind about the device number; a refresh (as a
    // failover script sends) reads it at once.
    set_device(inst, "eth1", 3);
    let o = eniroute(&inst.ns, &inst.endpoint, &["refresh"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(named("device-number-3", Some("eth1")), "{}", d.log());
    assert!(named("device-number-1", None), "{}", d.log());
    set_device(inst, "eth1", 1);
    eniroute(&inst.ns, &inst.endpoint, &["refresh"]);
    assert!(named("device-number-1", Some("eth1")), "{}", d.log());
    assert!(named("device-number-3", None), "{}", d.log());

    // The ENI leaves metadata; its link stays: eniroute's names go, the
    // operator's stays.
    let mac = inst.eni("eth1").unwrap().mac();
    inst.sim
        .update(|t| eniroute_lab::imds_tree::remove_eni(t, mac));
    eniroute(&inst.ns, &inst.endpoint, &["refresh"]);
    assert!(named("eni-0010001lab", None), "{}", d.log());
    assert!(named("device-number-1", None), "{}", d.log());
    assert_eq!(altnames(&inst.ns, "eth1"), ["mgmt"]);
    assert_eq!(
        resolves(&inst.ns, "device-number-0").as_deref(),
        Some("eth0")
    );
}
