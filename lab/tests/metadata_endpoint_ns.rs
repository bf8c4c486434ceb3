//! The metadata endpoint with nothing configured, in simulated instances: an
//! IPv6-only instance (no IPv4 anywhere, metadata only at fd00:ec2::254) is
//! configured by `apply` and by the daemon, and answers the admin host over
//! IPv6 through the right ENI; where both endpoints answer, the IPv4 one is
//! used.

mod common;

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use common::*;
use eniroute_lab::agent::{wait_for, Daemon};
use eniroute_lab::world;
use eniroute_lab::Netns;

/// An empty configuration file: every default, no endpoint.
fn empty_config(test: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("eniroute-ep-{}-{test}.toml", std::process::id()));
    std::fs::write(&p, "").unwrap();
    p
}

/// `eniroute --config EMPTY ARGS` in `ns`, naming no metadata endpoint.
fn run(ns: &Netns, config: &PathBuf, args: &[&str]) -> Output {
    ns.command(bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("spawn eniroute")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The instance has no IPv4 address but loopback's.
fn assert_no_ipv4(ns: &Netns) {
    let v4 = ns.ip(["-4", "-o", "addr"]).unwrap();
    assert!(
        v4.lines().all(|l| l.contains(" lo ")),
        "IPv4 on the instance:\n{v4}"
    );
}

#[test]
fn apply_configures_an_ipv6_only_instance_with_no_configuration() {
    if !need_root("apply_configures_an_ipv6_only_instance_with_no_configuration") {
        return;
    }
    let lab = world::ipv6_only().unwrap();
    let cfg = empty_config("apply6");
    assert_no_ipv4(&lab.ns);
    let _ssh = eniroute_lab::TcpServer::start(&lab.ns, "[::]:22".parse().unwrap()).unwrap();
    // eth0 works as DHCPv6 left it; eth1 has no address yet.
    assert!(reaches(&lab.admin, "2001:db8:1::10", 22, LONG).is_ok());
    assert!(reaches(&lab.admin, "2001:db8:2::21", 22, SHORT).is_err());

    let o = run(&lab.ns, &cfg, &["apply"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = stdout(&o);
    assert!(
        out.contains("+ address 2001:db8:2::21/128 dev eth1"),
        "{out}"
    );
    assert!(
        out.contains("+ rule -6 from 2001:db8:2::21 lookup 10001 priority 10001"),
        "{out}"
    );
    assert_no_ipv4(&lab.ns);
    for ip in ["2001:db8:2::20", "2001:db8:2::21", "2001:db8:1::10"] {
        let seen = reaches(&lab.admin, ip, 22, LONG)
            .unwrap_or_else(|e| panic!("admin -> [{ip}]: {e}\n{}", dumps(&lab.ns)));
        assert!(seen.starts_with("[2001:db8:9::5]:"), "server saw {seen}");
    }
    assert_eq!(
        dev_for(&lab.ns, "2001:db8:9::5", Some("2001:db8:2::21")),
        "eth1"
    );
    assert_eq!(
        dev_for(&lab.ns, "2001:db8:9::5", Some("2001:db8:1::10")),
        "eth0"
    );
    // The VPC drops what leaves the wrong ENI: without its rule, eth1's
    // address would answer through eth0's default route, and fail.
    lab.ns
        .ip([
            "-6",
            "rule",
            "del",
            "from",
            "2001:db8:2::21",
            "lookup",
            "10001",
        ])
        .unwrap();
    assert!(reaches(&lab.admin, "2001:db8:2::21", 22, SHORT).is_err());

    // The deleted rule is drift: exit 3.
    let o = run(&lab.ns, &cfg, &["status"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let status = stdout(&o);
    assert!(
        status.starts_with(
            "metadata: http://[fd00:ec2::254] (chosen automatically: http://169.254.169.254 did not answer)"
        ),
        "{status}"
    );
    assert!(lab.sim.requests() > 0);
    let _ = std::fs::remove_file(cfg);
}

#[test]
fn the_daemon_configures_an_ipv6_only_instance_with_an_empty_configuration() {
    if !need_root("the_daemon_configures_an_ipv6_only_instance_with_an_empty_configuration") {
        return;
    }
    let lab = world::ipv6_only().unwrap();
    let cfg = empty_config("daemon6");
    let _ssh = eniroute_lab::TcpServer::start(&lab.ns, "[::]:22".parse().unwrap()).unwrap();
    let d = Daemon::start_finding_metadata(bin(), &lab.ns, &cfg).unwrap();
    let took = wait_for(Duration::from_secs(10), || {
        reaches(&lab.admin, "2001:db8:2::21", 22, SHORT).is_ok()
    });
    assert!(
        took.is_some(),
        "admin never reached [2001:db8:2::21]\n{}\n{}",
        d.log(),
        dumps(&lab.ns)
    );
    let seen = reaches(&lab.admin, "2001:db8:2::20", 22, LONG).unwrap();
    assert!(seen.starts_with("[2001:db8:9::5]:"), "server saw {seen}");
    assert_no_ipv4(&lab.ns);
    let log = d.log();
    assert!(
        log.contains("metadata http://169.254.169.254, or http://[fd00:ec2::254]"),
        "{log}"
    );
    assert!(
        log.contains("metadata endpoint: http://[fd00:ec2::254] (chosen automatically"),
        "{log}"
    );
    let _ = std::fs::remove_file(cfg);
}

#[test]
fn where_both_endpoints_answer_the_ipv4_one_is_used() {
    if !need_root("where_both_endpoints_answer_the_ipv4_one_is_used") {
        return;
    }
    let lab = world::management_network().unwrap();
    let inst = &lab.inst;
    let cfg = empty_config("both");
    let v6 =
        world::serve_metadata_over_ipv6(&lab.vpc, inst, "2001:db8:1::10".parse().unwrap()).unwrap();
    // The IPv6 endpoint does answer this instance when asked by name.
    let o = eniroute(&inst.ns, "http://[fd00:ec2::254]", &["plan"]);
    assert!(o.status.success(), "{}", text(&o));
    let asked_by_name = v6.requests();
    assert!(asked_by_name > 0);

    let before = inst.sim.requests();
    let o = run(&inst.ns, &cfg, &["apply"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&inst.ns, &cfg, &["status"]);
    let status = stdout(&o);
    assert!(
        status.starts_with("metadata: http://169.254.169.254 (chosen automatically"),
        "{status}"
    );
    assert!(inst.sim.requests() > before);
    assert_eq!(v6.requests(), asked_by_name, "the IPv6 endpoint was asked");
    let _ = std::fs::remove_file(cfg);
}
