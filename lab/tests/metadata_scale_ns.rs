//! An instance whose metadata lists thousands of MACs, a few of them with a
//! link on the host: a full read costs requests for the ENIs the agent can
//! configure, not for every MAC listed; those ENIs are routed right; and an
//! ENI listed all along whose link appears later is read and routed at once.
//! Request counts are what the metadata simulator served.

mod common;

use std::time::Duration;

use common::*;
use eniroute::values::Mac;
use eniroute_lab::agent::{wait_for, Daemon};
use eniroute_lab::imds_tree::{put_eni, EniMeta};
use eniroute_lab::world::{self, EniPlan};

/// MACs listed beside the instance's own ENIs, none with a link here.
const LISTED: u32 = 3000;

/// Token, `mac`, the listing; the primary ENI's 13 keys (its VPC's two
/// CIDR keys included) and the secondary's 11 (same VPC: not those two).
/// What the same read cost before, every key of every listed MAC, was
/// 3 + 14 × 3002 = 42,031 requests.
const FULL_READ: u64 = 3 + 13 + 11;

fn filler(i: u32) -> EniMeta {
    let b = i.to_be_bytes();
    EniMeta {
        mac: Mac::new([0x0a, 0xf0, 0, b[1], b[2], b[3]]),
        eni_id: format!("eni-0f{i:06}"),
        card: 0,
        device: 2 + i % 13,
        subnet: "10.0.200.0/24".parse().unwrap(),
        subnet_id: "subnet-0f".into(),
        vpc_id: "vpc-0lab1".into(),
        vpc_cidrs: vec!["10.0.0.0/16".parse().unwrap()],
        ipv4s: vec![format!("10.0.200.{}", 10 + i % 200).parse().unwrap()],
    }
}

#[test]
fn thousands_of_listed_macs_cost_requests_only_for_the_linked_enis() {
    if !need_root("thousands_of_listed_macs_cost_requests_only_for_the_linked_enis") {
        return;
    }
    let mut lab = world::management_network().unwrap();
    let inst = &lab.inst;
    inst.sim.update(|t| {
        for i in 0..LISTED {
            put_eni(t, &filler(i));
        }
    });
    let _ssh = server(&inst.ns, 22);

    // One-shot: `status` reads metadata once, in full.
    let before = inst.sim.requests();
    let o = eniroute(&inst.ns, &inst.endpoint, &["status", "--json"]);
    let read = inst.sim.requests() - before;
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert_eq!(read, FULL_READ, "{}", text(&o));
    assert_eq!(v["listed_not_read"], LISTED, "{}", text(&o));
    assert_eq!(v["enis"].as_array().map(Vec::len), Some(2), "{}", text(&o));
    let o = eniroute(&inst.ns, &inst.endpoint, &["status"]);
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .contains("metadata lists 3000 more ENIs with no link on this host: not read"),
        "{}",
        text(&o)
    );

    // `apply` costs the same read, and routes both ENIs.
    let before = inst.sim.requests();
    apply(&inst.ns, &inst.endpoint);
    assert_eq!(inst.sim.requests() - before, FULL_READ);
    assert_eq!(dev_for(&inst.ns, "10.9.0.5", Some("10.0.2.21")), "eth1");
    assert_eq!(dev_for(&inst.ns, "10.9.0.5", Some("10.0.1.10")), "eth0");
    let seen = reaches(&lab.admin, "10.0.2.21", 22, LONG).unwrap();
    assert!(seen.starts_with("10.9.0.5:"), "server saw {seen}");

    // The daemon: its first read is the same full read; the ENIs stay
    // routed.
    let cfg = std::env::temp_dir().join(format!("eniroute-scale-{}.toml", std::process::id()));
    let prom = std::env::temp_dir().join(format!("eniroute-scale-{}.prom", std::process::id()));
    std::fs::write(
        &cfg,
        format!(
            "[metadata]\nvolatile_refresh_secs = 1\n[metrics]\ntextfile = \"{}\"\n",
            prom.display()
        ),
    )
    .unwrap();
    let before = inst.sim.requests();
    let d = Daemon::start(bin(), &inst.ns, &inst.endpoint, Some(&cfg)).unwrap();
    let ready = wait_for(Duration::from_secs(20), || d.log().contains("ready: "));
    assert!(ready.is_some(), "{}", d.log());
    // The first read, and any poll of the volatile keys (9 requests) since.
    let started = inst.sim.requests() - before;
    assert!(
        (FULL_READ..200).contains(&started),
        "{started} requests to start\n{}",
        d.log()
    );
    assert!(reaches(&lab.admin, "10.0.2.21", 22, LONG).is_ok());
    // The metric says how many were not read.
    let counted = wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(&prom)
            .is_ok_and(|t| t.lines().any(|l| l == "eniroute_enis_not_read 3000"))
    });
    assert!(
        counted.is_some(),
        "{:?}\n{}",
        std::fs::read_to_string(&prom),
        d.log()
    );

    // An ENI listed all along (a filler's neighbour in the listing) gets its
    // link: it is read then, and routed as soon as it is.
    let plan = EniPlan::new("eth2", 2, "10.0.3.0/24", &["10.0.3.30"]).unwrap();
    let mac = Mac::new([0x0a, 0xe0, 0, inst.id, 0, 2]);
    let meta = EniMeta {
        mac,
        eni_id: format!("eni-0{:02x}0002lab", inst.id),
        card: 0,
        device: 2,
        subnet: plan.subnet,
        subnet_id: "subnet-10030".into(),
        vpc_id: plan.vpc_id.clone(),
        vpc_cidrs: plan.vpc_cidrs.clone(),
        ipv4s: plan.ipv4s.clone(),
    };
    inst.sim.update(|t| put_eni(t, &meta));
    // A poll sees it listed, and leaves it unread.
    std::thread::sleep(Duration::from_millis(1500));
    let before = lab.inst.sim.requests();
    lab.inst.attach(&lab.vpc, &plan, false).unwrap();
    let routed = wait_for(Duration::from_secs(10), || {
        reaches(&lab.admin, "10.0.3.30", 22, Duration::from_millis(300)).is_ok()
    });
    assert!(
        routed.is_some(),
        "eth2 never answered\n{}\n{}",
        dumps(&lab.inst.ns),
        d.log()
    );
    assert_eq!(dev_for(&lab.inst.ns, "10.9.0.5", Some("10.0.3.30")), "eth2");
    // Its read is the listing and its own keys; polls meanwhile add the
    // listing and the volatile keys of the linked ENIs. Nothing of the
    // 3000 others.
    let hotplug = lab.inst.sim.requests() - before;
    assert!(hotplug < 200, "{hotplug} requests\n{}", d.log());
    eprintln!(
        "{LISTED} listed MACs: a full read {FULL_READ} requests; the daemon's start {started}; \
         a hot-plugged listed ENI {hotplug} (its read and any poll meanwhile); routed {:?} \
         after its link appeared",
        routed.unwrap_or_default()
    );
    let _ = std::fs::remove_file(cfg);
    let _ = std::fs::remove_file(prom);
}

#[test]
fn a_few_enis_listed_without_a_link_are_named_and_one_the_configuration_names_is_read() {
    if !need_root(
        "a_few_enis_listed_without_a_link_are_named_and_one_the_configuration_names_is_read",
    ) {
        return;
    }
    let lab = world::management_network().unwrap();
    let inst = &lab.inst;
    let (a, b) = (filler(1), filler(2));
    inst.sim.update(|t| {
        put_eni(t, &a);
        put_eni(t, &b);
    });
    apply(&inst.ns, &inst.endpoint);
    let o = eniroute(&inst.ns, &inst.endpoint, &["status"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let want = format!(
        "metadata lists 2 more ENIs with no link on this host: not read ({}, {})",
        a.mac, b.mac
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&want),
        "{}",
        text(&o)
    );

    // A configuration entry naming one: that one is read (its 11 keys),
    // and shown without a link.
    let cfg = std::env::temp_dir().join(format!("eniroute-named-{}.toml", std::process::id()));
    std::fs::write(
        &cfg,
        format!(
            "[[eni]]\nmatch = {{ mac = \"{}\" }}\nforwarding = true\n",
            a.mac
        ),
    )
    .unwrap();
    let before = inst.sim.requests();
    let o = eniroute(
        &inst.ns,
        &inst.endpoint,
        &["--config", cfg.to_str().unwrap(), "status", "--json"],
    );
    let read = inst.sim.requests() - before;
    let _ = std::fs::remove_file(&cfg);
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert_eq!(read, FULL_READ + 11, "{}", text(&o));
    assert_eq!(v["listed_not_read"], 1, "{v}");
    assert_eq!(v["listed_not_read_macs"][0], b.mac.to_string(), "{v}");
    let named = v["enis"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["mac"] == a.mac.to_string())
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(named["status"], "no link with this MAC", "{v}");
    assert_eq!(named["interface_id"], a.eni_id, "{v}");
}
