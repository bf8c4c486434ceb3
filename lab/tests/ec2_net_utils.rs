//! The Amazon Linux 2023 path: eniroute takes over from amazon-ec2-net-utils
//! on an instance as that package and systemd-networkd leave it, while an
//! operator's TCP connection to eth1's secondary address keeps exchanging
//! data; and foreign routes in eniroute's table range are reported, never a
//! reason to refuse a start.

mod common;

use std::ffi::OsStr;
use std::net::{IpAddr, SocketAddr};
use std::process::Output;
use std::time::Duration;

use common::*;
use eniroute_lab::agent::{wait_for, Daemon};
use eniroute_lab::ec2_net_utils::{
    counter, leave_state, EchoServer, HostRoot, RouteSampler, Stream,
};
use eniroute_lab::world::{self, ManagementLab};
use eniroute_lab::Netns;

const ADMIN: &str = "10.9.0.5";
const ECHO_PORT: u16 = 7000;
/// Back to back: a round trip every few tens of microseconds, so that even
/// a window of a millisecond in which a reply would leave the wrong ENI
/// catches packets (a deliberately wrong order, deleting theirs before
/// adding ours, is caught this way).
const EVERY: Duration = Duration::ZERO;

/// Where the agent keeps its state on the recreated host: a directory of
/// the test's own, since state directories are keyed by the namespace's
/// inode, which the kernel reuses once an earlier test's namespace is gone.
fn run_root(root: &HostRoot) -> std::path::PathBuf {
    root.path.join("run/eniroute")
}

/// `eniroute ARGS` in the instance, with the checks for amazon-ec2-net-utils
/// looking at `root` instead of `/`.
fn eniroute_at(lab: &ManagementLab, root: &HostRoot, args: &[&str]) -> Output {
    lab.inst
        .ns
        .command(bin())
        .env("ENIROUTE_HOST_ROOT", &root.path)
        .env("ENIROUTE_RUN_ROOT", run_root(root))
        .arg("--imds-endpoint")
        .arg(&lab.inst.endpoint)
        .args(args)
        .output()
        .expect("spawn eniroute")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// `ip route get` for the admin host from each of the instance's addresses,
/// reduced to what decides the path: gateway, device, source.
fn decisions(ns: &Netns) -> Vec<String> {
    ["10.0.2.21", "10.0.2.20", "10.0.1.10"]
        .iter()
        .map(|src| {
            let raw = eniroute_lab::route_get(ns, ip(ADMIN), Some(ip(src)))
                .unwrap()
                .raw;
            let words: Vec<&str> = raw.split_whitespace().collect();
            let after = |key: &str| {
                words
                    .iter()
                    .position(|w| *w == key)
                    .and_then(|i| words.get(i + 1))
                    .copied()
                    .unwrap_or("-")
            };
            format!("from {src} via {} dev {}", after("via"), after("dev"))
        })
        .collect()
}

/// The sampler's checks: each address's replies to the admin host leave
/// through its own ENI.
fn sampled(ns: &Netns) -> RouteSampler {
    RouteSampler::start(
        ns,
        vec![
            (ip(ADMIN), ip("10.0.2.21"), "eth1".into()),
            (ip(ADMIN), ip("10.0.2.20"), "eth1".into()),
            (ip(ADMIN), ip("10.0.1.10"), "eth0".into()),
        ],
    )
}

/// Packets the VPC router dropped because they left an ENI that does not
/// hold their source address, and TCP segments the instance sent again. A
/// reply that leaves the wrong ENI shows in one or the other: dropped by
/// the router, or (when the instance has to ask for the router's address
/// first, from the wrong source) never answered and sent again later.
fn losses(lab: &ManagementLab) -> (u64, u64) {
    (
        counter(lab.vpc.router(), "netstat", "TcpExt", "IPReversePathFilter").unwrap(),
        counter(&lab.inst.ns, "snmp", "Tcp", "RetransSegs").unwrap(),
    )
}

/// Waits until the stream has completed `more` further round trips.
fn flows(stream: &Stream, more: u64) {
    let target = stream.echoed() + more;
    assert!(
        wait_for(Duration::from_secs(10), || stream.echoed() >= target).is_some(),
        "the connection stopped carrying data: {:?}",
        stream.report()
    );
}

/// The instance's rules and per-ENI routes with numeric protocols.
fn ours_only(ns: &Netns) {
    let rules = ns.ip(["-N", "rule"]).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for line in rules.lines() {
        assert!(seen.insert(line), "duplicate rule {line:?}:\n{rules}");
        if line.starts_with("10000:") || line.starts_with("10001:") || line.starts_with("9999:") {
            assert!(
                line.ends_with("proto 233"),
                "not eniroute's: {line:?}\n{rules}"
            );
        }
    }
    for from in ["10.0.2.20", "10.0.2.21", "10.0.1.10"] {
        assert_eq!(
            rules.matches(&format!("from {from} lookup")).count(),
            1,
            "{rules}"
        );
    }
    for table in ["10000", "10001"] {
        let routes = ns.ip(["-N", "route", "show", "table", table]).unwrap();
        assert!(!routes.trim().is_empty(), "table {table} is empty");
        for line in routes.lines() {
            assert!(
                line.contains("proto 233"),
                "table {table}: {line:?}\n{routes}"
            );
        }
    }
}

/// What amazon-ec2-net-utils set up works before eniroute runs: the admin
/// host's connection to eth1's secondary address carries data.
fn ec2_net_utils_host(installed: bool) -> (ManagementLab, HostRoot, EchoServer, Stream) {
    let lab = world::management_network().unwrap();
    let root = leave_state(&lab.inst, installed).unwrap();
    let echo =
        EchoServer::start(&lab.inst.ns, SocketAddr::from(([0, 0, 0, 0], ECHO_PORT))).unwrap();
    let stream = Stream::open(
        &lab.admin,
        SocketAddr::new(ip("10.0.2.21"), ECHO_PORT),
        EVERY,
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", dumps(&lab.inst.ns)));
    flows(&stream, 20);
    (lab, root, echo, stream)
}

#[test]
fn apply_takes_over_what_ec2_net_utils_left_while_a_connection_stays_up() {
    if !need_root("apply_takes_over_what_ec2_net_utils_left_while_a_connection_stays_up") {
        return;
    }
    let (lab, root, _echo, stream) = ec2_net_utils_host(false);
    let ns = &lab.inst.ns;
    let before = decisions(ns);
    let (dropped, resent) = losses(&lab);
    let sampler = sampled(ns);
    flows(&stream, 5);

    let during = stream.echoed();
    let t0 = std::time::Instant::now();
    let o = eniroute_at(&lab, &root, &["apply"]);
    let took = t0.elapsed();
    let during = stream.echoed() - during;
    flows(&stream, 50);
    let (samples, wrong) = sampler.finish();
    let report = stream.finish();
    eprintln!(
        "takeover by apply: {took:?}, {during} round trips meanwhile; connection: {} round trips, \
         longest wait {:?}; {samples} route decisions sampled",
        report.echoed, report.max_wait
    );

    assert!(o.status.success(), "{}", text(&o));
    assert!(during > 0, "no data crossed the connection while apply ran");
    // The connection never missed a beat, no packet left the wrong ENI at
    // any moment (the VPC router would have dropped it), and the kernel's
    // decision for every address was right in every sample.
    assert_eq!(report.error, None, "{report:?}");
    let (dropped_after, resent_after) = losses(&lab);
    assert_eq!(dropped_after, dropped, "packets left through the wrong ENI");
    assert_eq!(resent_after, resent, "TCP had to retransmit: {report:?}");
    assert!(samples > 0, "no route decision sampled");
    assert!(
        wrong.is_empty(),
        "wrong path in {} of {samples} samples: {wrong:#?}",
        wrong.len()
    );
    assert_eq!(decisions(ns), before);

    let out = stdout(&o);
    for op in [
        "- rule from 10.0.2.21 lookup 10001 priority 10001 proto 4 (amazon-ec2-net-utils'",
        "- rule from 10.0.2.20 lookup 10001 priority 10001 proto 4 (amazon-ec2-net-utils'",
        "+ rule from 10.0.2.21 lookup 10001 priority 10001",
        "~ route default via 10.0.2.1 dev eth1 table 10001",
        "- route default via 10.0.2.1 dev eth1 table 10001 proto 16 metric 513",
        "~ route 10.0.2.0/24 dev eth1 scope link src 10.0.2.20 table 10001",
        "~ address 10.0.2.21/32 dev eth1 (taken over from amazon-ec2-net-utils)",
    ] {
        assert!(out.contains(op), "{op:?} missing:\n{out}");
    }
    // Every rule and route of ours went in before the first of theirs went.
    let lines: Vec<&str> = out.lines().collect();
    let at = |prefixes: &[&str]| -> Vec<usize> {
        (0..lines.len())
            .filter(|i| prefixes.iter().any(|p| lines[*i].starts_with(p)))
            .collect()
    };
    let additions = at(&["+ rule", "+ route", "~ route"]);
    let removals = at(&["- rule", "- route"]);
    assert!(additions.iter().max() < removals.iter().min(), "{out}");

    // Everything in the ENI tables and rules is eniroute's now, once each.
    ours_only(ns);
    // The ENI ids and device numbers stay as link altnames.
    let link = ns.ip(["link", "show", "dev", "eth1"]).unwrap();
    assert!(
        link.contains("altname eni-0") && link.contains("altname device-number-1.0"),
        "{link}"
    );
    let again = eniroute_at(&lab, &root, &["apply"]);
    assert!(
        stdout(&again).contains("nothing to change"),
        "{}",
        text(&again)
    );
    let status = eniroute_at(&lab, &root, &["status"]);
    let s = stdout(&status);
    assert!(s.contains("\nin sync\n"), "{s}");
    assert!(!s.contains("foreign:"), "{s}");
    assert!(s.contains("amazon-ec2-net-utils left"), "{s}");
    assert!(s.contains("70-eth1.network.d"), "{s}");

    // The rpm's %posttrans removes exactly those drop-ins, and status is
    // quiet about them afterwards.
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../packaging/rpm/ec2-net-utils-posttrans.sh"
    );
    let o = std::process::Command::new("sh")
        .arg(script)
        .arg("1")
        .env("ENIROUTE_HOST_ROOT", &root.path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let left: Vec<_> = std::fs::read_dir(root.networkd_runtime())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(root
        .path
        .join("usr/lib/systemd/network/80-ec2.network")
        .exists());
    let s = stdout(&eniroute_at(&lab, &root, &["status"]));
    assert!(!s.contains("amazon-ec2-net-utils"), "{s}");

    // The secondary address is eniroute's now: when EC2 unassigns it, it goes.
    let mut inst = lab.inst;
    inst.set_ipv4s("eth1", vec!["10.0.2.20".parse().unwrap()])
        .unwrap();
    let o = inst
        .ns
        .command(bin())
        .env("ENIROUTE_HOST_ROOT", &root.path)
        .env("ENIROUTE_RUN_ROOT", run_root(&root))
        .args(["--imds-endpoint", &inst.endpoint, "apply"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let addrs = inst.ns.ip(["addr", "show", "dev", "eth1"]).unwrap();
    assert!(!addrs.contains("10.0.2.21"), "{addrs}");
    assert!(
        addrs.contains("10.0.2.20/24"),
        "DHCP's address stays: {addrs}"
    );
}

#[test]
fn daemon_stands_by_while_ec2_net_utils_is_installed_then_takes_over() {
    if !need_root("daemon_stands_by_while_ec2_net_utils_is_installed_then_takes_over") {
        return;
    }
    let (lab, root, _echo, stream) = ec2_net_utils_host(true);
    let ns = &lab.inst.ns;
    let untouched = dumps(ns);
    let before = decisions(ns);

    // One-shot apply refuses and changes nothing.
    let o = eniroute_at(&lab, &root, &["apply"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("amazon-ec2-net-utils is installed") && err.contains("policy-routes@.service"),
        "{err}"
    );

    // The daemon starts (no exit 2 for systemd to loop on) and stands by.
    let state = run_root(&root);
    let env: [(&str, &OsStr); 2] = [
        ("ENIROUTE_HOST_ROOT", root.path.as_os_str()),
        ("ENIROUTE_RUN_ROOT", state.as_os_str()),
    ];
    let mut daemon = Daemon::start_with_env(bin(), ns, &lab.inst.endpoint, None, &env).unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || daemon
            .log()
            .contains("standing by"))
        .is_some(),
        "{}",
        daemon.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(daemon.running(), "{}", daemon.log());
    assert_eq!(dumps(ns), untouched, "changed while standing by");
    // Another agent programs the same tables: a conflict for the health check.
    let o = eniroute_at(&lab, &root, &["status"]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let status = stdout(&o);
    assert!(status.contains("the daemon stands by"), "{status}");

    // The rpm transaction erases the obsoleted package; its runtime
    // drop-ins and what networkd made of them stay.
    let (dropped, resent) = losses(&lab);
    let sampler = sampled(ns);
    flows(&stream, 5);
    root.uninstall().unwrap();
    let took = wait_for(Duration::from_secs(15), || {
        let rules = ns.ip(["-N", "rule"]).unwrap_or_default();
        rules.contains("from 10.0.1.10 lookup 10000 proto 233") && !rules.contains("proto 4")
    });
    assert!(
        took.is_some(),
        "no takeover:\n{}\n{}",
        daemon.log(),
        dumps(ns)
    );
    // Let the deletions of theirs that follow the additions land too.
    assert!(
        wait_for(Duration::from_secs(5), || {
            ns.ip(["-N", "route", "show", "table", "10001"])
                .is_ok_and(|r| !r.contains("proto 16"))
        })
        .is_some(),
        "{}",
        dumps(ns)
    );
    flows(&stream, 50);
    let (samples, wrong) = sampler.finish();
    let report = stream.finish();
    eprintln!(
        "takeover by the daemon {:?} after the package went; connection: {} round trips, \
         longest wait {:?}; {samples} route decisions sampled",
        took.unwrap_or_default(),
        report.echoed,
        report.max_wait
    );

    assert!(daemon.running(), "{}", daemon.log());
    assert!(
        daemon.log().contains("amazon-ec2-net-utils is gone"),
        "{}",
        daemon.log()
    );
    assert_eq!(report.error, None, "{report:?}");
    let (dropped_after, resent_after) = losses(&lab);
    assert_eq!(dropped_after, dropped, "packets left through the wrong ENI");
    assert_eq!(resent_after, resent, "TCP had to retransmit: {report:?}");
    assert!(samples > 0, "no route decision sampled");
    assert!(
        wrong.is_empty(),
        "wrong path in {} of {samples} samples: {wrong:#?}",
        wrong.len()
    );
    assert_eq!(decisions(ns), before);
    ours_only(ns);
    assert_eq!(daemon.stop().unwrap(), Some(0));
}

#[test]
fn foreign_routes_in_the_table_range_are_reported_and_never_stop_a_start() {
    if !need_root("foreign_routes_in_the_table_range_are_reported_and_never_stop_a_start") {
        return;
    }
    let lab = world::management_network().unwrap();
    let inst = &lab.inst;
    let ns = &inst.ns;
    let _ssh = server(ns, 22);
    apply(ns, &inst.endpoint);
    // While troubleshooting, an operator replaces eth1's default route
    // (same gateway, now theirs), and other tools keep routes in an ENI's
    // table and in a table of the range no ENI uses.
    ns.ip([
        "route", "replace", "default", "via", "10.0.2.1", "dev", "eth1", "table", "10001",
    ])
    .unwrap();
    ns.ip([
        "route",
        "add",
        "10.77.0.0/16",
        "dev",
        "eth0",
        "table",
        "10001",
    ])
    .unwrap();
    ns.ip([
        "route",
        "add",
        "10.50.0.0/16",
        "via",
        "10.0.2.1",
        "dev",
        "eth1",
        "table",
        "10050",
    ])
    .unwrap();
    let foreign = ns.ip(["route", "show", "table", "all"]).unwrap();

    let status = eniroute(ns, &inst.endpoint, &["status"]);
    let s = stdout(&status);
    assert!(status.status.success(), "{}", text(&status));
    for table in ["table 10001 of ENI", "table 10050 lies in eniroute's range"] {
        assert!(s.contains(table), "{table:?}:\n{s}");
    }
    assert!(
        s.contains("route default via 10.0.2.1 dev eth1 table 10001 (protocol boot"),
        "{s}"
    );
    assert!(!s.contains("\nin sync\n"), "{s}");
    assert!(
        s.contains("3 foreign objects in eniroute's tables left as they are"),
        "{s}"
    );

    // apply runs, says so, and leaves them.
    let o = eniroute(ns, &inst.endpoint, &["apply"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        stdout(&o).contains("warning: table 10050 lies in eniroute's range"),
        "{}",
        text(&o)
    );

    // A restart (upgrade, reboot of the agent) is no reason to refuse.
    let mut daemon = Daemon::start(bin(), ns, &inst.endpoint, None).unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || daemon
            .log()
            .contains("table 10050"))
        .is_some(),
        "{}",
        daemon.log()
    );
    assert!(daemon.running(), "{}", daemon.log());
    let seen = reaches(&lab.admin, "10.0.2.21", 22, LONG)
        .unwrap_or_else(|e| panic!("admin -> 10.0.2.21: {e}\n{}", dumps(ns)));
    assert!(seen.starts_with("10.9.0.5:"), "{seen}");
    assert_eq!(daemon.stop().unwrap(), Some(0));
    // What the others put there is still there.
    for line in foreign.lines().filter(|l| l.contains("table 100")) {
        assert!(
            ns.ip(["route", "show", "table", "all"])
                .unwrap()
                .contains(line),
            "{line:?} was removed"
        );
    }

    // check-config: the file is fine; the range holds others' routes.
    let cfg = std::env::temp_dir().join(format!("eniroute-range-{}.toml", std::process::id()));
    std::fs::write(&cfg, "[numbering]\ntable_base = 10000\n").unwrap();
    let o = eniroute(
        ns,
        &inst.endpoint,
        &["check-config", "--config", cfg.to_str().unwrap()],
    );
    let _ = std::fs::remove_file(&cfg);
    assert!(o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("warning: {}:2: table 10001", cfg.display())),
        "{err}"
    );
}
