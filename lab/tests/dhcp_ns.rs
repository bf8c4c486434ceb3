//! Never claim what is not ours, with the daemon in a simulated instance:
//! an address a DHCP client left on an ENI (a finite lifetime) that goes
//! away for a moment, as `networkctl reconfigure` makes it, is not added
//! back by eniroute; the ENI's rules, its secondary address and its table
//! stay, and the admin host keeps reaching the secondary. The same holds for
//! a network manager's permanent address marked with a protocol of its own
//! (IFA_PROTO). A hot-plugged ENI that nothing serves still gets its primary
//! from eniroute.

mod common;

use std::time::Duration;

use common::*;
use eniroute_lab::agent::{wait_for, Daemon};
use eniroute_lab::world::{self, EniPlan};
use eniroute_lab::Netns;

const CONVERGE: Duration = Duration::from_secs(20);

fn diag(ns: &Netns, d: &Daemon) -> String {
    format!("{}\n--- daemon log ---\n{}", dumps(ns), d.log())
}

fn addrs(ns: &Netns, dev: &str) -> String {
    ns.ip(["-4", "-o", "addr", "show", "dev", dev]).unwrap()
}

#[test]
fn a_dhcp_address_that_goes_away_for_a_moment_is_not_added_back() {
    if !need_root("a_dhcp_address_that_goes_away_for_a_moment_is_not_added_back") {
        return;
    }
    let mut lab = world::management_network().unwrap();
    let ns = &lab.inst.ns;
    // What a DHCP client leaves on eth1: the primary with a lease lifetime.
    let lease = [
        "10.0.2.20/24",
        "dev",
        "eth1",
        "valid_lft",
        "60",
        "preferred_lft",
        "60",
    ];
    ns.ip([&["addr", "add"][..], &lease[..]].concat()).unwrap();
    let _ssh = server(ns, 22);
    let d = Daemon::start(bin(), ns, &lab.inst.endpoint, None).unwrap();
    let ok = wait_for(CONVERGE, || {
        reaches(&lab.admin, "10.0.2.21", 22, SHORT).is_ok()
    });
    assert!(ok.is_some(), "never configured\n{}", diag(ns, &d));
    assert!(
        !addrs(ns, "eth1").contains("10.0.2.20/24 brd 10.0.2.255 scope global proto 233"),
        "{}",
        addrs(ns, "eth1")
    );

    // The DHCP client drops its address for a moment.
    ns.ip(["addr", "del", "10.0.2.20/24", "dev", "eth1"])
        .unwrap();
    // The daemon hears of it at once; give it ample time to do the wrong
    // thing (it used to re-add the address within milliseconds).
    std::thread::sleep(Duration::from_millis(1500));
    let a = addrs(ns, "eth1");
    assert!(
        !a.contains("10.0.2.20/"),
        "eniroute added the DHCP address back\n{}",
        diag(ns, &d)
    );
    assert!(a.contains("10.0.2.21/32"), "{}", diag(ns, &d));
    let rules = ns.ip(["rule"]).unwrap();
    for ip in ["10.0.2.20", "10.0.2.21"] {
        assert!(
            rules.contains(&format!("from {ip} lookup 10001")),
            "rule for {ip} gone\n{}",
            diag(ns, &d)
        );
    }
    let table = ns.ip(["route", "show", "table", "10001"]).unwrap();
    assert!(
        table.contains("default via 10.0.2.1 dev eth1") && table.contains("10.0.2.0/24 dev eth1"),
        "{}",
        diag(ns, &d)
    );
    let seen = reaches(&lab.admin, "10.0.2.21", 22, LONG)
        .unwrap_or_else(|e| panic!("{e}\n{}", diag(ns, &d)));
    assert!(seen.starts_with("10.9.0.5:"), "server saw {seen}");
    assert!(!d.log().contains("+ address 10.0.2.20/24"), "{}", d.log());

    // The client takes its address again: the table's subnet route gets
    // its source back and the primary answers through eth1.
    ns.ip([&["addr", "add"][..], &lease[..]].concat()).unwrap();
    let back = wait_for(CONVERGE, || {
        ns.ip(["route", "show", "table", "10001"])
            .unwrap()
            .contains("10.0.2.0/24 dev eth1 proto 233 scope link src 10.0.2.20")
    });
    assert!(back.is_some(), "{}", diag(ns, &d));
    reaches(&lab.admin, "10.0.2.20", 22, LONG).unwrap_or_else(|e| panic!("{e}\n{}", diag(ns, &d)));

    // A hot-plugged ENI nothing serves: eniroute gives it its primary.
    let plan = EniPlan::new("eth2", 2, "10.0.3.0/24", &["10.0.3.30"]).unwrap();
    lab.inst.attach(&lab.vpc, &plan, true).unwrap();
    let ns = &lab.inst.ns;
    let got = wait_for(CONVERGE, || addrs(ns, "eth2").contains("10.0.3.30/24"));
    assert!(got.is_some(), "{}", diag(ns, &d));
}

/// The protocol a network manager marks its addresses with here (any but
/// eniroute's 233 and the kernel's 0 to 3).
const MANAGER_PROTO: u8 = 4;

/// Adds `address` to `dev` in `ns` with IFA_PROTO `MANAGER_PROTO`, as a
/// network manager that marks its addresses does. Over netlink: iproute2
/// 6.1, the one here, cannot set an address's protocol (`ip addr add …
/// proto N` is "garbage" to it).
fn manager_adds(ns: &Netns, dev: &str, address: &str) {
    use eniroute::netlink::{Kernel, RtNetlink};
    let address: ipnet::IpNet = address.parse().unwrap();
    let dev = dev.to_string();
    ns.run_in(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let k = RtNetlink::connect(MANAGER_PROTO).unwrap();
            let links = k.links().await.unwrap();
            let link = links.iter().find(|l| l.name == dev).unwrap();
            k.add_address(&eniroute::values::Address {
                index: link.index,
                dev: dev.clone(),
                address,
                noprefixroute: false,
            })
            .await
            .unwrap();
        })
    })
    .unwrap();
}

/// Whether eth1 holds 10.0.2.20/24 marked with the manager's protocol, as
/// the kernel reports it over netlink (iproute2 6.1 does not show an
/// address's protocol either).
fn managers_primary(ns: &Netns) -> bool {
    use eniroute::netlink::{Kernel, RtNetlink};
    ns.run_in(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let k = RtNetlink::connect(233).unwrap();
            k.links().await.unwrap().iter().any(|l| {
                l.name == "eth1"
                    && l.addresses.iter().any(|a| {
                        a.addr.to_string() == "10.0.2.20/24" && a.proto == Some(MANAGER_PROTO)
                    })
            })
        })
    })
    .unwrap()
}

#[test]
fn a_network_managers_address_that_goes_away_for_a_moment_is_not_added_back() {
    if !need_root("a_network_managers_address_that_goes_away_for_a_moment_is_not_added_back") {
        return;
    }
    let lab = world::management_network().unwrap();
    let ns = &lab.inst.ns;
    // A network manager's permanent primary on eth1, marked as its own.
    manager_adds(ns, "eth1", "10.0.2.20/24");
    if !managers_primary(ns) {
        eprintln!(
            "skipped: this kernel does not keep an address's protocol (IFA_PROTO): {}",
            addrs(ns, "eth1")
        );
        return;
    }
    let _ssh = server(ns, 22);
    let d = Daemon::start(bin(), ns, &lab.inst.endpoint, None).unwrap();
    let ok = wait_for(CONVERGE, || {
        reaches(&lab.admin, "10.0.2.21", 22, SHORT).is_ok()
    });
    assert!(ok.is_some(), "never configured\n{}", diag(ns, &d));

    // The manager drops its address for a moment: eniroute does not add it.
    ns.ip(["addr", "del", "10.0.2.20/24", "dev", "eth1"])
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let a = addrs(ns, "eth1");
    assert!(
        !a.contains("10.0.2.20/"),
        "eniroute added the manager's address\n{}",
        diag(ns, &d)
    );
    assert!(a.contains("10.0.2.21/32"), "{}", diag(ns, &d));
    let rules = ns.ip(["rule"]).unwrap();
    for ip in ["10.0.2.20", "10.0.2.21"] {
        assert!(
            rules.contains(&format!("from {ip} lookup 10001")),
            "rule for {ip} gone\n{}",
            diag(ns, &d)
        );
    }
    let seen = reaches(&lab.admin, "10.0.2.21", 22, LONG)
        .unwrap_or_else(|e| panic!("{e}\n{}", diag(ns, &d)));
    assert!(seen.starts_with("10.9.0.5:"), "server saw {seen}");
    assert!(!d.log().contains("+ address 10.0.2.20/24"), "{}", d.log());

    // The manager puts it back: still the manager's, and the primary
    // answers through eth1.
    manager_adds(ns, "eth1", "10.0.2.20/24");
    let back = wait_for(CONVERGE, || {
        ns.ip(["route", "show", "table", "10001"])
            .unwrap()
            .contains("10.0.2.0/24 dev eth1 proto 233 scope link src 10.0.2.20")
    });
    assert!(back.is_some(), "{}", diag(ns, &d));
    assert!(managers_primary(ns), "{}", diag(ns, &d));
    reaches(&lab.admin, "10.0.2.20", 22, LONG).unwrap_or_else(|e| panic!("{e}\n{}", diag(ns, &d)));
}
