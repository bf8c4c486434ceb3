//! `RtNetlink` and `EventSocket` against a real kernel. Each test runs in a
//! fresh network namespace of its own thread: `unshare(CLONE_NEWNET)` moves
//! only that thread, `ip` commands forked from it run in the same namespace,
//! and the namespace disappears with the thread, even when a test panics.
//! Without root every test prints that it skipped.

use std::collections::BTreeSet;
use std::future::Future;
use std::io::Write as _;
use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

use eniroute::netlink::{
    Change, Concern, Event, EventSocket, Kernel, LinkChange, RtNetlink, Viewed,
};
use eniroute::values::{Address, Family, KernelRoute, Link, Route, Rule, MAIN_TABLE};
use ipnet::IpNet;
use nix::errno::Errno;
use nix::sched::{unshare, CloneFlags};

const PROTO: u8 = 233;
const TABLE: u32 = 10001;

/// Runs `test` on a new thread inside a private network namespace, on a
/// current-thread runtime of that thread.
fn in_netns<F, Fut>(test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    if !nix::unistd::geteuid().is_root() {
        // Straight to stderr: the test harness hides what eprintln! prints
        // in a passing test, and a skip must be seen.
        let _ = writeln!(std::io::stderr(), "skipped: needs root");
        return;
    }
    let thread = std::thread::spawn(move || {
        unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        // Commands spawned from this thread must see the new namespace,
        // which has nothing but a loopback device.
        let links = ip(&["-o", "link", "show"]);
        assert_eq!(
            links.lines().count(),
            1,
            "not in a fresh namespace: {links}"
        );
        assert!(links.contains("lo:"), "{links}");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(test());
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

fn ip_output(args: &[&str]) -> std::process::Output {
    Command::new("ip").args(args).output().expect("run ip")
}

/// Runs `ip` and returns its stdout; panics on failure.
fn ip(args: &[&str]) -> String {
    let out = ip_output(args);
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Creates a veth pair, both ends up, and returns the first end's index.
async fn veth(k: &RtNetlink, name: &str, peer: &str) -> u32 {
    ip(&[
        "link", "add", "name", name, "type", "veth", "peer", "name", peer,
    ]);
    ip(&["link", "set", name, "up"]);
    ip(&["link", "set", peer, "up"]);
    link(k, name).await.index
}

async fn link(k: &RtNetlink, name: &str) -> Link {
    k.links()
        .await
        .expect("links")
        .into_iter()
        .find(|l| l.name == name)
        .unwrap_or_else(|| panic!("no link {name}"))
}

fn net(s: &str) -> IpNet {
    s.parse().expect("prefix")
}

fn addr(s: &str) -> IpAddr {
    s.parse().expect("address")
}

fn address(index: u32, dev: &str, a: &str, noprefixroute: bool) -> Address {
    Address {
        index,
        dev: dev.into(),
        address: net(a),
        noprefixroute,
    }
}

fn route(table: u32, dst: &str, gw: Option<&str>, dev: &str, oif: u32, src: Option<&str>) -> Route {
    Route {
        table,
        dst: net(dst),
        gateway: gw.map(addr),
        dev: dev.into(),
        oif,
        src: src.map(addr),
    }
}

fn source_rule(from: &str, table: u32, priority: u32) -> Rule {
    let from = net(from);
    Rule {
        family: Family::of(&from),
        priority,
        from: Some(from),
        table,
        suppress_ifgroup: None,
    }
}

async fn routes_in(k: &RtNetlink, table: u32) -> Vec<KernelRoute> {
    k.routes()
        .await
        .expect("routes")
        .into_iter()
        .filter(|r| r.route.table == table)
        .collect()
}

/// Waits (generously: this is not a timing test) for an event `wanted`
/// accepts, skipping others.
async fn wait_for(events: &mut EventSocket, what: &str, wanted: impl Fn(&Event) -> bool) -> Event {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let event = events.next().await.expect("event socket").event();
            if wanted(&event) {
                return event;
            }
            seen.push(event);
        }
    })
    .await;
    match found {
        Ok(event) => event,
        Err(_) => panic!("no {what} event within 5 s; saw {seen:?}"),
    }
}

#[test]
fn rules_with_large_tables_read_back_as_written_and_show_in_ip_rule() {
    in_netns(|| async {
        let k = RtNetlink::connect(PROTO).expect("connect");
        let rules = vec![
            source_rule("10.0.2.20/32", TABLE, 10001),
            source_rule("10.0.8.0/28", 10102, 10102),
            source_rule("2001:db8::20/128", TABLE, 10001),
            Rule {
                family: Family::Ipv4,
                priority: 9999,
                from: None,
                table: MAIN_TABLE,
                suppress_ifgroup: Some(7),
            },
        ];
        for rule in &rules {
            k.add_rule(rule).await.expect("add_rule");
        }

        let shown = ip(&["-N", "-4", "rule", "show"]);
        assert!(
            shown.contains("10001:\tfrom 10.0.2.20 lookup 10001 proto 233"),
            "{shown}"
        );
        assert!(
            shown.contains("10102:\tfrom 10.0.8.0/28 lookup 10102 proto 233"),
            "{shown}"
        );
        assert!(
            shown.contains("9999:\tfrom all lookup 254 suppress_ifgroup 7 proto 233"),
            "{shown}"
        );
        let shown6 = ip(&["-N", "-6", "rule", "show"]);
        assert!(
            shown6.contains("10001:\tfrom 2001:db8::20 lookup 10001 proto 233"),
            "{shown6}"
        );

        let read = k.rules().await.expect("rules");
        let ours: BTreeSet<Rule> = read
            .iter()
            .filter(|r| r.protocol == PROTO)
            .map(|r| {
                assert!(!r.has_other_selectors, "{r:?}");
                assert!(!r.not_lookup, "{r:?}");
                r.rule.clone()
            })
            .collect();
        assert_eq!(ours, rules.iter().cloned().collect());
        // The kernel's own rules are there, and are not ours.
        let main = read
            .iter()
            .find(|r| r.rule.priority == 32766 && r.rule.family == Family::Ipv4)
            .expect("main rule");
        assert_eq!(main.rule.table, MAIN_TABLE);
        assert_eq!(main.rule.from, None);
        assert_ne!(main.protocol, PROTO);
        assert!(read
            .iter()
            .any(|r| r.rule.family == Family::Ipv6 && r.rule.priority == 32766));
    });
}

#[test]
fn foreign_selectors_and_actions_are_reported() {
    in_netns(|| async {
        let k = RtNetlink::connect(PROTO).expect("connect");
        ip(&[
            "rule",
            "add",
            "from",
            "10.0.2.20",
            "iif",
            "lo",
            "lookup",
            "10001",
            "priority",
            "100",
        ]);
        ip(&[
            "rule",
            "add",
            "from",
            "10.0.2.21",
            "fwmark",
            "0x1",
            "lookup",
            "10001",
            "priority",
            "101",
        ]);
        ip(&[
            "rule",
            "add",
            "from",
            "10.0.2.22",
            "blackhole",
            "priority",
            "102",
        ]);
        ip(&[
            "rule",
            "add",
            "not",
            "from",
            "10.0.2.23",
            "lookup",
            "10001",
            "priority",
            "103",
        ]);
        ip(&[
            "rule",
            "add",
            "from",
            "10.0.2.24",
            "lookup",
            "10001",
            "priority",
            "104",
        ]);
        let read = k.rules().await.expect("rules");
        let by_priority = |p: u32| {
            read.iter()
                .find(|r| r.rule.priority == p)
                .unwrap_or_else(|| panic!("no rule {p}"))
        };
        assert!(by_priority(100).has_other_selectors);
        assert!(by_priority(101).has_other_selectors);
        assert!(by_priority(102).not_lookup);
        assert!(by_priority(103).has_other_selectors);
        let plain = by_priority(104);
        assert!(!plain.has_other_selectors && !plain.not_lookup);
        assert_eq!(plain.rule, source_rule("10.0.2.24/32", TABLE, 104));
        assert_ne!(plain.protocol, PROTO);
    });
}

#[test]
fn routes_in_large_tables_read_back_as_written() {
    in_netns(|| async {
        let k = RtNetlink::connect(PROTO).expect("connect");
        let ea = veth(&k, "ea", "eb").await;
        k.add_address(&address(ea, "ea", "10.0.2.20/24", true))
            .await
            .expect("add_address");
        let routes = vec![
            route(TABLE, "10.0.2.0/24", None, "ea", ea, Some("10.0.2.20")),
            route(TABLE, "0.0.0.0/0", Some("10.0.2.1"), "ea", ea, None),
            route(TABLE, "2001:db8:1::/64", None, "ea", ea, None),
            route(TABLE, "::/0", Some("fe80:ec2::1"), "ea", ea, None),
        ];
        for r in &routes {
            k.add_route(r).await.expect("add_route");
        }
        let shown = ip(&["-N", "-4", "route", "show", "table", "10001"]);
        assert!(
            shown.contains("default via 10.0.2.1 dev ea proto 233"),
            "{shown}"
        );
        assert!(
            shown.contains("10.0.2.0/24 dev ea proto 233 scope 253 src 10.0.2.20"),
            "{shown}"
        );
        let shown6 = ip(&["-N", "-6", "route", "show", "table", "10001"]);
        assert!(
            shown6.contains("default via fe80:ec2::1 dev ea proto 233"),
            "{shown6}"
        );

        let read = routes_in(&k, TABLE).await;
        for r in &read {
            assert_eq!(r.protocol, PROTO, "{:?}", r.route);
        }
        let read: BTreeSet<Route> = read.into_iter().map(|r| r.route).collect();
        assert_eq!(read, routes.iter().cloned().collect());

        for r in &routes {
            k.del_route(r).await.expect("del_route");
        }
        assert!(routes_in(&k, TABLE).await.is_empty());
    });
}

#[test]
fn a_rule_with_the_to_table_action_routes_its_source_and_one_without_breaks_it() {
    in_netns(|| async {
        let k = RtNetlink::connect(PROTO).expect("connect");
        let ea = veth(&k, "ea", "eb").await;
        for a in ["10.0.2.20/24", "10.0.2.30/32"] {
            k.add_address(&address(ea, "ea", a, true))
                .await
                .expect("add_address");
        }
        k.add_route(&route(
            TABLE,
            "10.0.2.0/24",
            None,
            "ea",
            ea,
            Some("10.0.2.20"),
        ))
        .await
        .expect("subnet route");
        k.add_route(&route(TABLE, "0.0.0.0/0", Some("10.0.2.1"), "ea", ea, None))
            .await
            .expect("default route");

        // Main has no default route here: without the rule there is no way out.
        let before = ip_output(&["-4", "route", "get", "198.51.100.1", "from", "10.0.2.20"]);
        assert!(!before.status.success());

        k.add_rule(&source_rule("10.0.2.20/32", TABLE, 10001))
            .await
            .expect("add_rule");
        let got = ip(&["-4", "route", "get", "198.51.100.1", "from", "10.0.2.20"]);
        assert!(got.contains("via 10.0.2.1 dev ea table 10001"), "{got}");

        // The trap, for contrast: a rule built without an action is
        // accepted, and every lookup from its source then fails.
        let (connection, handle, _) = rtnetlink::new_connection().expect("rtnetlink");
        tokio::spawn(connection);
        let added = handle
            .rule()
            .add()
            .v4()
            .source_prefix("10.0.2.30".parse().expect("ip"), 32)
            .table_id(TABLE)
            .priority(100)
            .execute()
            .await;
        if let Err(e) = &added {
            eprintln!("this kernel refuses a rule without an action ({e}): no trap to show");
        } else {
            let broken = ip_output(&["-4", "route", "get", "198.51.100.1", "from", "10.0.2.30"]);
            assert!(
                !broken.status.success(),
                "a rule without an action unexpectedly routed: {}",
                String::from_utf8_lossy(&broken.stdout)
            );
            let read = k.rules().await.expect("rules");
            let trap = read
                .iter()
                .find(|r| r.rule.priority == 100)
                .expect("rule 100");
            assert!(
                trap.not_lookup,
                "the broken rule must not look like a lookup"
            );
        }
    });
}

#[test]
fn added_addresses_are_owned_foreign_ones_are_not_and_ipv6_skips_dad() {
    in_netns(|| async {
        let k = RtNetlink::connect(PROTO).expect("connect");
        let ea = veth(&k, "ea", "eb").await;
        k.add_address(&address(ea, "ea", "10.0.2.20/24", false))
            .await
            .expect("add v4");
        k.add_address(&address(ea, "ea", "2001:db8::20/128", true))
            .await
            .expect("add v6");
        ip(&["addr", "add", "10.0.2.30/24", "dev", "ea"]);
        ip(&["-6", "addr", "add", "2001:db8::30/128", "dev", "ea"]);

        let l = link(&k, "ea").await;
        let owned = |a: &str| {
            l.addresses
                .iter()
                .find(|x| x.addr == net(a))
                .unwrap_or_else(|| panic!("no {a} in {:?}", l.addresses))
                .owned
        };
        assert!(owned("10.0.2.20/24"));
        assert!(owned("2001:db8::20/128"));
        assert!(!owned("10.0.2.30/24"));
        assert!(!owned("2001:db8::30/128"));
        // The kernel's link-local address is listed too, not as ours.
        assert!(l.addresses.iter().any(
            |a| matches!(a.addr, IpNet::V6(n) if n.addr().segments()[0] == 0xfe80) && !a.owned
        ));

        let shown = ip(&["-6", "addr", "show", "dev", "ea"]);
        let line = |a: &str| {
            shown
                .lines()
                .find(|x| x.contains(a))
                .unwrap_or_else(|| panic!("{a} not in {shown}"))
                .to_string()
        };
        assert!(!line("2001:db8::20/128").contains("tentative"), "{shown}");
        // Control: the same kind of address added without NODAD waits for
        // duplicate address detection.
        assert!(line("2001:db8::30/128").contains("tentative"), "{shown}");

        k.del_address(ea, net("2001:db8::20/128"))
            .await
            .expect("del v6");
        k.del_address(ea, net("10.0.2.20/24"))
            .await
            .expect("del v4");
        let l = link(&k, "ea").await;
        assert!(!l.addresses.iter().any(|a| a.owned), "{:?}", l.addresses);
    });
}

#[test]
fn noprefixroute_leaves_the_main_table_alone() {
    in_netns(|| async {
        let k = RtNetlink::connect(PROTO).expect("connect");
        let ea = veth(&k, "ea", "eb").await;
        k.add_address(&address(ea, "ea", "10.0.3.21/24", true))
            .await
            .expect("add");
        k.add_address(&address(ea, "ea", "2001:db8:3::21/64", true))
            .await
            .expect("add");
        // Control: without the flag the kernel adds the prefix route.
        k.add_address(&address(ea, "ea", "10.0.4.21/24", false))
            .await
            .expect("add");
        let main = routes_in(&k, MAIN_TABLE).await;
        let has = |dst: &str| main.iter().any(|r| r.route.dst == net(dst));
        assert!(!has("10.0.3.0/24"), "{main:?}");
        assert!(!has("2001:db8:3::/64"), "{main:?}");
        assert!(has("10.0.4.0/24"), "{main:?}");
        let prefix = main
            .iter()
            .find(|r| r.route.dst == net("10.0.4.0/24"))
            .expect("prefix route");
        assert_eq!(prefix.route.dev, "ea");
        assert_eq!(prefix.route.oif, ea);
        assert_eq!(prefix.route.src, Some(addr("10.0.4.21")));
        assert_ne!(prefix.protocol, PROTO);
    });
}

#[test]
fn replace_route_changes_the_gateway_in_place() {
    in_netns(|| async {
        let k = RtNetlink::connect(PROTO).expect("connect");
        let ea = veth(&k, "ea", "eb").await;
        k.add_route(&route(TABLE, "10.0.2.0/24", None, "ea", ea, None))
            .await
            .expect("subnet");
        let via1 = route(TABLE, "0.0.0.0/0", Some("10.0.2.1"), "ea", ea, None);
        let via2 = route(TABLE, "0.0.0.0/0", Some("10.0.2.2"), "ea", ea, None);
        k.add_route(&via1).await.expect("add");
        k.replace_route(&via2).await.expect("replace");
        let defaults: Vec<Route> = routes_in(&k, TABLE)
            .await
            .into_iter()
            .map(|r| r.route)
            .filter(|r| r.dst.prefix_len() == 0)
            .collect();
        assert_eq!(defaults, vec![via2]);

        // Replace also creates what is missing.
        let v6 = route(TABLE, "::/0", Some("fe80:ec2::1"), "ea", ea, None);
        k.replace_route(&v6).await.expect("replace creates");
        let v6b = route(TABLE, "::/0", Some("fe80:ec2::2"), "ea", ea, None);
        k.replace_route(&v6b).await.expect("replace v6");
        let v6_defaults: Vec<Route> = routes_in(&k, TABLE)
            .await
            .into_iter()
            .map(|r| r.route)
            .filter(|r| r.dst == net("::/0"))
            .collect();
        assert_eq!(v6_defaults, vec![v6b]);
    });
}

#[test]
fn races_are_reported_as_races_and_deletes_spare_foreign_objects() {
    in_netns(|| async {
        let k = RtNetlink::connect(PROTO).expect("connect");
        let ea = veth(&k, "ea", "eb").await;

        let rule = source_rule("10.0.2.20/32", TABLE, 10001);
        let e = k.del_rule(&rule).await.expect_err("missing rule");
        assert!(e.is_race(), "{e}");
        assert_eq!(e.call, "RTM_DELRULE");
        assert_eq!(e.object, "rule from 10.0.2.20 lookup 10001 priority 10001");
        assert_eq!(e.errno, Some(Errno::ENOENT));

        k.add_rule(&rule).await.expect("add rule");
        let e = k.add_rule(&rule).await.expect_err("duplicate rule");
        assert_eq!(e.errno, Some(Errno::EEXIST), "{e}");
        k.del_rule(&rule).await.expect("del rule");

        let subnet = route(TABLE, "10.0.2.0/24", None, "ea", ea, None);
        k.add_route(&subnet).await.expect("add route");
        let e = k.add_route(&subnet).await.expect_err("duplicate route");
        assert!(e.is_race(), "{e}");
        assert_eq!(e.errno, Some(Errno::EEXIST));
        assert_eq!(e.call, "RTM_NEWROUTE");
        assert_eq!(e.object, subnet.to_string());

        let missing = route(TABLE, "10.0.9.0/24", None, "ea", ea, None);
        let e = k.del_route(&missing).await.expect_err("missing route");
        assert!(e.is_race(), "{e}");
        assert_eq!(e.errno, Some(Errno::ESRCH));

        let gone = route(TABLE, "10.0.9.0/24", None, "gone", 9999, None);
        let e = k.add_route(&gone).await.expect_err("missing link");
        assert!(e.is_race(), "{e}");
        assert_eq!(e.errno, Some(Errno::ENODEV));

        let a = address(ea, "ea", "10.0.2.20/24", false);
        k.add_address(&a).await.expect("add address");
        let e = k.add_address(&a).await.expect_err("duplicate address");
        assert!(e.is_race(), "{e}");
        assert_eq!(e.errno, Some(Errno::EEXIST));
        let e = k
            .del_address(ea, net("10.0.2.99/24"))
            .await
            .expect_err("missing address");
        assert!(e.is_race(), "{e}");
        assert_eq!(e.errno, Some(Errno::EADDRNOTAVAIL));

        // A real mistake is not a race, and says why.
        let bad = route(TABLE, "10.0.2.1/24", None, "ea", ea, None);
        let e = k.add_route(&bad).await.expect_err("host bits");
        assert!(!e.is_race(), "{e}");
        assert_eq!(e.errno, Some(Errno::EINVAL));
        assert!(
            e.to_string()
                .starts_with("RTM_NEWROUTE for route 10.0.2.1/24 dev ea"),
            "{e}"
        );

        // Deletes carry our protocol: the kernel spares foreign look-alikes.
        ip(&[
            "rule",
            "add",
            "from",
            "10.0.2.50",
            "lookup",
            "10001",
            "priority",
            "10050",
        ]);
        let e = k
            .del_rule(&source_rule("10.0.2.50/32", TABLE, 10050))
            .await
            .expect_err("foreign rule");
        assert!(e.is_race(), "{e}");
        assert!(ip(&["rule", "show"]).contains("from 10.0.2.50 lookup 10001"));
        ip(&["route", "add", "10.0.7.0/24", "dev", "ea", "table", "10001"]);
        let e = k
            .del_route(&route(TABLE, "10.0.7.0/24", None, "ea", ea, None))
            .await
            .expect_err("foreign route");
        assert!(e.is_race(), "{e}");
        assert!(ip(&["route", "show", "table", "10001"]).contains("10.0.7.0/24 dev ea"));
    });
}

#[test]
fn set_link_changes_group_state_and_mtu() {
    in_netns(|| async {
        let k = RtNetlink::connect(PROTO).expect("connect");
        ip(&[
            "link", "add", "name", "ea", "type", "veth", "peer", "name", "eb",
        ]);
        let before = link(&k, "ea").await;
        assert!(!before.up);
        assert_eq!(before.group, 0);
        let shown = ip(&["link", "show", "ea"]);
        let mac = before.mac.expect("veth has a MAC").to_string();
        assert!(shown.contains(&mac), "{mac} not in {shown}");

        k.set_link(
            before.index,
            &LinkChange {
                up: true,
                group: Some(7),
                mtu: Some(1400),
            },
        )
        .await
        .expect("set_link");
        let after = link(&k, "ea").await;
        assert!(after.up);
        assert_eq!((after.group, after.mtu), (7, 1400));

        // `up: false` leaves the state alone; unset fields are untouched.
        k.set_link(
            before.index,
            &LinkChange {
                up: false,
                group: Some(8),
                mtu: None,
            },
        )
        .await
        .expect("set_link");
        let again = link(&k, "ea").await;
        assert!(again.up);
        assert_eq!((again.group, again.mtu), (8, 1400));

        let e = k
            .set_link(9999, &LinkChange::default())
            .await
            .expect_err("missing link");
        assert!(e.is_race(), "{e}");
        assert_eq!(e.call, "RTM_SETLINK");
    });
}

#[test]
fn event_socket_sees_links_rules_routes_and_addresses() {
    in_netns(|| async {
        let k = RtNetlink::connect(PROTO).expect("connect");
        let mut events = EventSocket::open(Concern::all(PROTO)).expect("open");

        ip(&[
            "link", "add", "name", "ea", "type", "veth", "peer", "name", "eb",
        ]);
        let added = wait_for(
            &mut events,
            "link added",
            |e| matches!(e, Event::Link { name: Some(n), added: true, .. } if n == "ea"),
        )
        .await;
        let ea = link(&k, "ea").await;
        let Event::Link { index, mac, .. } = added else {
            unreachable!()
        };
        assert_eq!(index, ea.index);
        assert_eq!(mac, ea.mac);
        ip(&["link", "set", "ea", "up"]);
        ip(&["link", "set", "eb", "up"]);

        k.add_rule(&source_rule("10.0.2.20/32", TABLE, 10001))
            .await
            .expect("add_rule");
        wait_for(&mut events, "rule", |e| {
            *e == Event::Rule { protocol: PROTO }
        })
        .await;

        k.add_address(&address(ea.index, "ea", "10.0.2.20/24", true))
            .await
            .expect("add_address");
        wait_for(&mut events, "address", |e| *e == Event::Address).await;

        k.add_route(&route(TABLE, "10.0.2.0/24", None, "ea", ea.index, None))
            .await
            .expect("add_route");
        wait_for(&mut events, "route", |e| {
            *e == Event::Route {
                protocol: PROTO,
                table: TABLE,
            }
        })
        .await;

        ip(&[
            "-6",
            "rule",
            "add",
            "from",
            "2001:db8::1",
            "lookup",
            "10001",
            "proto",
            "77",
        ]);
        wait_for(&mut events, "ipv6 rule", |e| {
            *e == Event::Rule { protocol: 77 }
        })
        .await;

        ip(&["link", "del", "ea"]);
        wait_for(
            &mut events,
            "link removed",
            |e| matches!(e, Event::Link { index, removed: true, .. } if *index == ea.index),
        )
        .await;
    });
}

#[test]
fn event_socket_reports_overrun_and_keeps_working() {
    in_netns(|| async {
        let k = RtNetlink::connect(PROTO).expect("connect");
        let ea = veth(&k, "ea", "eb").await;
        // The smallest buffer the kernel allows fills after a few events.
        let mut events =
            EventSocket::open_with_receive_buffer(Concern::all(PROTO), 0).expect("open");
        for i in 0..200u32 {
            let dst = format!("10.{}.{}.0/24", 100 + i / 256, i % 256);
            k.add_route(&route(TABLE, &dst, None, "ea", ea, None))
                .await
                .expect("add_route");
        }
        wait_for(&mut events, "overrun", |e| *e == Event::Overrun).await;

        k.add_rule(&source_rule("10.0.2.20/32", TABLE, 10001))
            .await
            .expect("add_rule");
        wait_for(&mut events, "rule after overrun", |e| {
            *e == Event::Rule { protocol: PROTO }
        })
        .await;
    });
}

#[test]
fn altnames_are_added_read_back_resolved_by_ip_and_removed() {
    in_netns(|| async {
        let k = RtNetlink::connect(PROTO).expect("netlink");
        let index = veth(&k, "eth1", "peer1").await;
        let other = link(&k, "peer1").await.index;
        k.set_altname(index, "eni-0123456789abcdef0", true)
            .await
            .expect("add altname");
        k.set_altname(index, "device-number-1", true)
            .await
            .expect("add altname");
        let names = k.link_names().await.expect("link names");
        let eth1 = names.iter().find(|l| l.index == index).expect("eth1");
        assert_eq!(
            eth1.altnames,
            ["eni-0123456789abcdef0", "device-number-1"],
            "{names:?}"
        );
        // iproute2 resolves the link by either name.
        assert!(ip(&["link", "show", "eni-0123456789abcdef0"]).contains("eth1"));
        assert!(ip(&["link", "show", "device-number-1"]).contains("eth1"));

        // A name exists once per namespace: a second link cannot have it,
        // and the kernel's answer is a race, not a failure.
        let e = k
            .set_altname(other, "device-number-1", true)
            .await
            .expect_err("duplicate altname");
        assert_eq!(e.errno, Some(Errno::EEXIST), "{e}");
        assert!(e.is_race());
        assert!(e.to_string().contains("altname device-number-1"), "{e}");

        k.set_altname(index, "device-number-1", false)
            .await
            .expect("del altname");
        assert!(!ip_output(&["link", "show", "device-number-1"])
            .status
            .success());
        let names = k.link_names().await.expect("link names");
        let eth1 = names.iter().find(|l| l.index == index).expect("eth1");
        assert_eq!(eth1.altnames, ["eni-0123456789abcdef0"]);
    });
}

#[test]
fn a_view_follows_the_kernel_and_hears_nothing_of_other_tables() {
    in_netns(|| async {
        let concern = Concern {
            protocol: PROTO,
            tables: 10000..16400,
        };
        let k = RtNetlink::connect(PROTO)
            .expect("connect")
            .with_concern(concern.clone());
        let ea = veth(&k, "ea", "eb").await;
        let batch: String = (0..2000)
            .map(|i| {
                format!(
                    "route add 172.16.{}.{}/32 dev ea table 500\n",
                    i / 256,
                    i % 256
                )
            })
            .collect();
        let path = std::env::temp_dir().join(format!("eniroute-view-{}", std::process::id()));
        std::fs::write(&path, batch).expect("write batch");
        ip(&["-batch", path.to_str().expect("path")]);
        let _ = std::fs::remove_file(&path);

        let view = Viewed::new(k.clone(), concern.clone());
        let mut events = view.events().expect("events");
        let first = view.routes().await.expect("routes");
        assert!(first.iter().all(|r| r.route.table != 500), "{first:?}");
        assert_eq!(
            first,
            view_of(&k.routes().await.expect("routes"), &concern),
            "a load reads what the kernel has"
        );

        let ours = route(TABLE, "10.0.2.0/24", None, "ea", ea, None);
        view.add_route(&ours).await.expect("add_route");
        let rule = source_rule("10.0.2.20/32", TABLE, 10001);
        view.add_rule(&rule).await.expect("add_rule");
        assert!(view
            .rules()
            .await
            .expect("rules")
            .iter()
            .any(|r| r.rule == rule));
        ip(&["route", "add", "172.31.0.1/32", "dev", "ea", "table", "500"]);
        ip(&["route", "del", "172.16.0.1/32", "table", "500"]);
        ip(&["rule", "del", "from", "10.0.2.20", "lookup", "10001"]);

        // The echoes of our own writes and the changes in table 500 are
        // nothing to the daemon; the deleted rule is.
        let heard = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let change = events.next().await.expect("event socket");
                if let Change::Route { route, .. } = &change {
                    assert_ne!(route.route.table, 500, "{change:?}");
                }
                if let Some(ev) = view.observe(&change) {
                    if !matches!(ev, Event::Link { .. }) {
                        return (change, ev);
                    }
                }
            }
        })
        .await
        .expect("the rule's deletion was heard");
        assert_eq!(heard.1, Event::Rule { protocol: PROTO }, "{heard:?}");
        assert!(matches!(heard.0, Change::Rule { removed: true, .. }));
        assert!(view
            .rules()
            .await
            .expect("rules")
            .iter()
            .all(|r| r.rule != rule));
        assert_eq!(
            view.routes().await.expect("routes"),
            view_of(&k.routes().await.expect("routes"), &concern),
        );
        // A full read finds the view as it was.
        assert!(!view.resync("test").await.expect("resync"));
    });
}

/// The kernel's routes as the view holds them: of concern, in its order.
fn view_of(routes: &[KernelRoute], concern: &Concern) -> Vec<KernelRoute> {
    let mut v: Vec<KernelRoute> = routes
        .iter()
        .filter(|r| concern.route(r.route.table, r.protocol))
        .cloned()
        .collect();
    v.sort_by(|a, b| {
        (a.route.table, a.route.dst, a.metric, a.route.oif).cmp(&(
            b.route.table,
            b.route.dst,
            b.metric,
            b.route.oif,
        ))
    });
    v
}
