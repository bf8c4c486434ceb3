//! The lab harness itself, exercised in real network namespaces (root only).
//!
//! The central check reproduces the management-network failure the agent
//! exists to fix: an instance with a second ENI cannot be reached on it until
//! source-based policy routing sends replies back out of that ENI.

use std::collections::HashSet;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use eniroute::values::Mac;
use eniroute_lab::{
    cleanup_stale, connect, route_get, Client, Eni, EniSpec, Instance, Netns, TcpServer, Vpc,
    IMDS_ADDR,
};

const ADMIN: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 5);
const ETH0_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 10);
const ETH1_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 20);
const ETH1_SECONDARY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 21);
const SSH: u16 = 22;
const OK: Duration = Duration::from_secs(5);
/// Long enough for a SYN and its answer inside one host; a dropped packet
/// shows up as this timeout.
const BLOCKED: Duration = Duration::from_millis(1500);

fn is_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    // Straight to stderr: the test harness hides what eprintln! prints
    // in a passing test, and a skip must be seen.
    let _ = writeln!(std::io::stderr(), "skipped: needs root");
    false
}

fn mac(last: u8) -> Mac {
    Mac::new([0x02, 0x00, 0x00, 0x00, 0x00, last])
}

fn ip(a: Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

fn sock(a: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(ip(a), port)
}

/// The management-network topology: eth0 10.0.1.10/24 configured by DHCP,
/// eth1 10.0.2.20 (+ 10.0.2.21) attached but unconfigured, an admin host.
struct Lab {
    vpc: Vpc,
    instance: Instance,
    eth0: Eni,
    eth1: Eni,
    admin: Client,
}

fn management_lab(instance_name: &str) -> Lab {
    let vpc = Vpc::new().unwrap();
    let instance = vpc.instance(instance_name).unwrap();
    let eth0 = vpc
        .attach_eni(
            &instance,
            EniSpec {
                name: "eth0".into(),
                mac: mac(0x10),
                subnet: "10.0.1.0/24".parse().unwrap(),
                addresses: vec![ETH0_ADDR],
            },
        )
        .unwrap();
    vpc.dhcp_configure(&eth0).unwrap();
    let eth1 = vpc
        .attach_eni(
            &instance,
            EniSpec {
                name: "eth1".into(),
                mac: mac(0x20),
                subnet: "10.0.2.0/24".parse().unwrap(),
                addresses: vec![ETH1_ADDR, ETH1_SECONDARY],
            },
        )
        .unwrap();
    let admin = vpc.client("admin", "10.9.0.5/24".parse().unwrap()).unwrap();
    Lab {
        vpc,
        instance,
        eth0,
        eth1,
        admin,
    }
}

/// What an operator (or DHCP on a secondary ENI) would leave on eth1:
/// addresses, but no policy routing.
fn address_eth1_by_hand(ns: &Netns) {
    ns.ip(["addr", "add", "10.0.2.20/24", "dev", "eth1"])
        .unwrap();
    ns.ip(["addr", "add", "10.0.2.21/32", "dev", "eth1"])
        .unwrap();
}

/// The policy routing eniroute programs for eth1 (table 10001).
fn policy_route_eth1_by_hand(ns: &Netns) {
    ns.ip([
        "rule",
        "add",
        "from",
        "10.0.2.20",
        "lookup",
        "10001",
        "priority",
        "10001",
    ])
    .unwrap();
    ns.ip([
        "route", "add", "default", "via", "10.0.2.1", "dev", "eth1", "table", "10001",
    ])
    .unwrap();
    ns.ip([
        "route",
        "add",
        "10.0.2.0/24",
        "dev",
        "eth1",
        "table",
        "10001",
        "scope",
        "link",
        "src",
        "10.0.2.20",
    ])
    .unwrap();
}

fn assert_peer_is(answer: &str, who: Ipv4Addr) {
    let peer: SocketAddr = answer
        .trim_end()
        .parse()
        .unwrap_or_else(|e| panic!("server answered {answer:?}: {e}"));
    assert_eq!(peer.ip(), ip(who), "server saw {peer}");
}

fn assert_blocked(result: std::io::Result<String>) {
    match result {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}"),
        Ok(answer) => panic!("connection went through (server saw {answer:?})"),
    }
}

fn netns_list() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

fn netns_exists(name: &str) -> bool {
    netns_list()
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

/// `TcpExtIPReversePathFilter` of a namespace: packets dropped by rp_filter.
fn rp_filter_drops(ns: &Netns) -> u64 {
    // /proc/thread-self/net shows the namespace of the reading thread
    // (/proc/net follows the process's main thread instead).
    let netstat = ns
        .run_in(|| std::fs::read_to_string("/proc/thread-self/net/netstat"))
        .unwrap()
        .unwrap();
    let mut lines = netstat.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        if !names.starts_with("TcpExt:") {
            continue;
        }
        for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
            if name == "IPReversePathFilter" {
                return value.parse().unwrap();
            }
        }
    }
    panic!("no IPReversePathFilter counter in netstat");
}

#[test]
fn management_eni_works_only_with_policy_routing() {
    if !is_root() {
        return;
    }
    let lab = management_lab("mgmt");
    let server = TcpServer::start(&lab.instance, sock(Ipv4Addr::UNSPECIFIED, SSH)).unwrap();
    assert_eq!(server.local_addr().port(), SSH);

    // eth0 works out of the box: DHCP's default route points back at it.
    let answer = connect(&lab.admin, sock(ETH0_ADDR, SSH), None, OK).unwrap();
    assert_peer_is(&answer, ADMIN);
    assert_eq!(
        route_get(&lab.instance, ip(ADMIN), None).unwrap().dev,
        "eth0"
    );

    // eth1 addressed but without policy routing: the reply to the admin would
    // leave via eth0's default route, so the SYN is dropped.
    address_eth1_by_hand(&lab.instance);
    assert_blocked(connect(&lab.admin, sock(ETH1_ADDR, SSH), None, BLOCKED));
    let wrong = route_get(&lab.instance, ip(ADMIN), Some(ip(ETH1_ADDR))).unwrap();
    assert_eq!(wrong.dev, "eth0", "{}", wrong.raw);

    policy_route_eth1_by_hand(&lab.instance);
    let answer = connect(&lab.admin, sock(ETH1_ADDR, SSH), None, OK).unwrap();
    assert_peer_is(&answer, ADMIN);
    let right = route_get(&lab.instance, ip(ADMIN), Some(ip(ETH1_ADDR))).unwrap();
    assert_eq!(right.dev, "eth1", "{}", right.raw);
    // Traffic not sourced from eth1's address keeps using main.
    assert_eq!(
        route_get(&lab.instance, ip(ADMIN), None).unwrap().dev,
        "eth0"
    );

    // The secondary address has no rule yet, so it is still unreachable.
    assert_blocked(connect(
        &lab.admin,
        sock(ETH1_SECONDARY, SSH),
        None,
        BLOCKED,
    ));
}

#[test]
fn router_drops_packets_leaving_the_wrong_eni() {
    if !is_root() {
        return;
    }
    let lab = management_lab("srcdst");
    let _server = TcpServer::start(&lab.instance, sock(Ipv4Addr::UNSPECIFIED, SSH)).unwrap();
    address_eth1_by_hand(&lab.instance);
    // Let the instance accept the SYN on eth1 (loose host): now only the VPC
    // can stop the reply, which leaves via eth0 with eth1's source address.
    lab.instance
        .sysctl("net.ipv4.conf.all.rp_filter", "0")
        .unwrap();
    lab.instance
        .sysctl("net.ipv4.conf.eth1.rp_filter", "0")
        .unwrap();
    // Resolve the router on eth0 with a proper source first: an ARP request
    // sent with eth1's address would itself fail the router's rp_filter, and
    // the reply would die in the instance's neighbour queue, not at the router.
    connect(&lab.admin, sock(ETH0_ADDR, SSH), None, OK).unwrap();

    let before = rp_filter_drops(lab.vpc.router());
    assert_blocked(connect(&lab.admin, sock(ETH1_ADDR, SSH), None, BLOCKED));
    let after = rp_filter_drops(lab.vpc.router());
    assert!(
        after > before,
        "router rp_filter drops: {before} -> {after}"
    );

    // With the check off on eth0's port (an appliance), the reply passes.
    lab.vpc.set_source_dest_check(&lab.eth0, false).unwrap();
    let answer = connect(&lab.admin, sock(ETH1_ADDR, SSH), None, OK).unwrap();
    assert_peer_is(&answer, ADMIN);
}

#[test]
fn instance_reaches_metadata_through_primary_eni() {
    if !is_root() {
        return;
    }
    let lab = management_lab("imds");
    let listener = lab.vpc.imds_listener().unwrap();
    let server = std::thread::spawn(move || {
        use std::io::Write;
        let (mut stream, peer) = listener.accept().unwrap();
        writeln!(stream, "{peer}").unwrap();
    });
    let answer = connect(&lab.instance, sock(IMDS_ADDR, 80), None, OK).unwrap();
    assert_peer_is(&answer, ETH0_ADDR);
    server.join().unwrap();
    assert_eq!(
        route_get(&lab.instance, ip(IMDS_ADDR), None).unwrap().dev,
        "eth0"
    );
}

#[test]
fn secondary_address_and_eni_move_to_standby() {
    if !is_root() {
        return;
    }
    let lab = management_lab("active");
    let standby = lab.vpc.instance("standby").unwrap();
    let s_eth1 = lab
        .vpc
        .attach_eni(
            &standby,
            EniSpec {
                name: "eth1".into(),
                mac: mac(0x30),
                subnet: "10.0.2.0/24".parse().unwrap(),
                addresses: vec![Ipv4Addr::new(10, 0, 2, 30)],
            },
        )
        .unwrap();
    standby
        .ip(["addr", "add", "10.0.2.30/24", "dev", "eth1"])
        .unwrap();
    standby
        .ip(["route", "add", "default", "via", "10.0.2.1", "dev", "eth1"])
        .unwrap();
    let _standby_server = TcpServer::start(&standby, sock(Ipv4Addr::UNSPECIFIED, SSH)).unwrap();

    // The secondary address is routed to the active instance: the standby,
    // holding it too, never sees the connection.
    standby
        .ip(["addr", "add", "10.0.2.21/32", "dev", "eth1"])
        .unwrap();
    assert_blocked(connect(
        &lab.admin,
        sock(ETH1_SECONDARY, SSH),
        None,
        BLOCKED,
    ));

    lab.vpc
        .move_address(&lab.eth1, &s_eth1, ETH1_SECONDARY)
        .unwrap();
    let answer = connect(&lab.admin, sock(ETH1_SECONDARY, SSH), None, OK).unwrap();
    assert_peer_is(&answer, ADMIN);
    assert!(lab
        .vpc
        .move_address(&lab.eth1, &s_eth1, ETH1_SECONDARY)
        .is_err());
    assert!(lab
        .vpc
        .move_address(&s_eth1, &lab.eth1, Ipv4Addr::new(10, 0, 2, 30))
        .is_err());

    // The whole ENI moves, MAC and name kept, arriving up and unconfigured.
    lab.vpc.move_eni(&lab.eth0, &standby).unwrap();
    let link = standby.ip(["-br", "link", "show", "dev", "eth0"]).unwrap();
    assert!(link.contains(&mac(0x10).to_string()), "{link}");
    assert!(lab.instance.ip(["link", "show", "dev", "eth0"]).is_err());
    assert!(standby
        .ip(["-br", "-4", "addr", "show", "dev", "eth0"])
        .unwrap()
        .trim()
        .is_empty());
    standby
        .ip(["addr", "add", "10.0.1.10/24", "dev", "eth0"])
        .unwrap();
    // The standby's default route points at eth1; the admin range goes via eth0.
    standby
        .ip([
            "route",
            "add",
            "10.9.0.0/24",
            "via",
            "10.0.1.1",
            "dev",
            "eth0",
        ])
        .unwrap();
    let answer = connect(&lab.admin, sock(ETH0_ADDR, SSH), None, OK).unwrap();
    assert_peer_is(&answer, ADMIN);

    lab.vpc.detach_eni(&s_eth1).unwrap();
    assert!(standby.ip(["link", "show", "dev", "eth1"]).is_err());
    assert!(lab.vpc.dhcp_configure(&s_eth1).is_err());
}

#[test]
fn inconsistent_specs_are_rejected() {
    if !is_root() {
        return;
    }
    let vpc = Vpc::new().unwrap();
    let instance = vpc.instance("bad").unwrap();
    let spec = |addresses: Vec<Ipv4Addr>| EniSpec {
        name: "eth0".into(),
        mac: mac(0x40),
        subnet: "10.0.1.0/24".parse().unwrap(),
        addresses,
    };
    for addresses in [
        vec![],
        vec![Ipv4Addr::new(10, 0, 2, 10)],
        vec![Ipv4Addr::new(10, 0, 1, 1)],
        vec![Ipv4Addr::new(10, 0, 1, 0)],
    ] {
        let err = vpc
            .attach_eni(&instance, spec(addresses.clone()))
            .unwrap_err();
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::InvalidInput,
            "{addresses:?}: {err}"
        );
    }
    assert!(instance.ip(["link", "show", "dev", "eth0"]).is_err());
    // The router takes the first host; a client at the network address or at
    // the router's address is a mistake.
    assert!(vpc.client("c", "10.9.0.0/24".parse().unwrap()).is_err());
    assert!(vpc.client("c", "10.9.0.1/24".parse().unwrap()).is_err());
}

#[test]
fn namespace_dropped_during_panic_is_deleted() {
    if !is_root() {
        return;
    }
    let name = std::sync::Mutex::new(String::new());
    let result = std::panic::catch_unwind(|| {
        let ns = Netns::create("in-panic").unwrap();
        *name.lock().unwrap() = ns.name().to_string();
        assert!(netns_exists(ns.name()));
        panic!("unwinding with a live namespace");
    });
    assert!(result.is_err());
    let name = name.into_inner().unwrap();
    assert!(name.starts_with("er"), "{name}");
    assert!(!netns_exists(&name), "{name} still in:\n{}", netns_list());
}

#[test]
fn run_in_enters_the_namespace_only_on_its_thread() {
    if !is_root() {
        return;
    }
    let ns = Netns::create("runin").unwrap();
    let outside = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
    let inside = ns
        .run_in(|| std::fs::read_link("/proc/thread-self/ns/net"))
        .unwrap()
        .unwrap();
    assert_ne!(inside, outside);
    assert_eq!(
        std::fs::read_link("/proc/thread-self/ns/net").unwrap(),
        outside
    );

    let out = ns
        .command("cat")
        .arg("/proc/self/net/dev")
        .output()
        .unwrap();
    let dev = String::from_utf8_lossy(&out.stdout);
    assert!(dev.contains("lo:") && !dev.contains("eth0"), "{dev}");

    let out = ns.exec(["ip", "-br", "link", "show", "dev", "lo"]).unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("UP"));

    let err = ns
        .ip(["route", "add", "192.0.2.0/24", "dev", "nonexistent0"])
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("ip -n er") && msg.contains("nonexistent0"),
        "{msg}"
    );
}

#[test]
fn parallel_harnesses_get_distinct_names() {
    if !is_root() {
        return;
    }
    // Two identical labs at once: same addresses, same interface names, and
    // each must work on its own.
    let build = || {
        std::thread::spawn(|| {
            let lab = management_lab("twin");
            let _server = TcpServer::start(&lab.instance, sock(ETH0_ADDR, SSH)).unwrap();
            let answer = connect(&lab.admin, sock(ETH0_ADDR, SSH), None, OK).unwrap();
            assert_peer_is(&answer, ADMIN);
            let names = vec![
                lab.vpc.router().name().to_string(),
                lab.instance.name().to_string(),
                lab.admin.name().to_string(),
            ];
            (lab, names)
        })
    };
    let (a, b) = (build(), build());
    let (lab_a, names_a) = a.join().unwrap();
    let (lab_b, names_b) = b.join().unwrap();
    let all: HashSet<&String> = names_a.iter().chain(&names_b).collect();
    assert_eq!(all.len(), 6, "{names_a:?} {names_b:?}");
    for name in &all {
        assert!(netns_exists(name), "{name}");
    }
    drop((lab_a, lab_b));
    for name in &all {
        assert!(!netns_exists(name), "{name} left behind");
    }
}

#[test]
fn stale_namespaces_of_dead_processes_are_removed() {
    if !is_root() {
        return;
    }
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let stale = format!("er{dead}-0-stale");
    let status = Command::new("ip")
        .args(["netns", "add", &stale])
        .status()
        .unwrap();
    assert!(status.success());
    let ours = Netns::create("alive").unwrap();

    let deleted = cleanup_stale().unwrap();
    assert!(deleted.contains(&stale), "{deleted:?}");
    assert!(!netns_exists(&stale));
    assert!(
        netns_exists(ours.name()),
        "a live process's namespace was deleted"
    );
}
