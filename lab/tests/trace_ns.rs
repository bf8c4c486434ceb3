//! `eniroute trace` in simulated instances: its verdict and exit code for a
//! reply that leaves the right ENI (0), one whose rule was deleted (3), one
//! a foreign rule takes first (4), one refused by a rule (8) and a source
//! that is no address of the host (7), each agreeing with `ip route get …
//! from …`; without metadata the same answer, unverified; IPv6 too.

mod common;

use common::*;
use eniroute_lab::sim::Fault;
use eniroute_lab::{world, Netns};

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(o: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(o)))
}

/// The verdict line, the first of the output.
fn verdict(o: &std::process::Output) -> String {
    stdout(o).lines().next().unwrap_or_default().to_string()
}

/// `ip route get DST from SRC [ipproto tcp dport N]` as `ip` prints it.
fn ip_route_get(ns: &Netns, dst: &str, from: &str, dport: Option<&str>) -> String {
    let mut args = vec!["route", "get", dst, "from", from];
    if let Some(p) = dport {
        args.extend(["ipproto", "tcp", "dport", p]);
    }
    ns.ip(&args).unwrap()
}

#[test]
fn trace_gives_the_kernels_path_and_a_verdict_for_each_fault() {
    if !need_root("trace_gives_the_kernels_path_and_a_verdict_for_each_fault") {
        return;
    }
    let lab = world::management_network().unwrap();
    let inst = &lab.inst;
    let (ns, ep) = (&inst.ns, inst.endpoint.as_str());
    apply(ns, ep);

    // In place: the reply leaves eth1, as `ip route get` says.
    let o = eniroute(ns, ep, &["trace", "10.9.0.5", "--from", "10.0.2.21"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        verdict(&o),
        "reply from 10.0.2.21 to 10.9.0.5 leaves eth1 (ENI eni-0010001lab, table 10001, rule 10001): correct"
    );
    let ip = ip_route_get(ns, "10.9.0.5", "10.0.2.21", None);
    assert!(
        ip.contains("dev eth1") && ip.contains("table 10001"),
        "{ip}"
    );
    let out = stdout(&o);
    assert!(
        out.contains("route:    default via 10.0.2.1 dev eth1 table 10001"),
        "{out}"
    );
    assert!(
        out.contains("rule:     10001: from 10.0.2.21 lookup 10001 proto 233 (eniroute's)"),
        "{out}"
    );

    let v = json(&eniroute(
        ns,
        ep,
        &["trace", "10.9.0.5", "--from", "10.0.2.21", "--json"],
    ));
    assert_eq!(v["schema_version"], 1);
    assert_eq!(v["verdict"], "correct");
    assert_eq!(v["exit_code"], 0);
    assert_eq!(v["verified"], true);
    assert_eq!(v["path"]["dev"], "eth1");
    assert_eq!(v["path"]["table"], 10001);
    assert_eq!(v["path"]["gateway"], "10.0.2.1");
    assert_eq!(v["rule"]["priority"], 10001);
    assert_eq!(v["rule"]["eniroute"], true);
    assert_eq!(v["src_eni"]["interface_id"], "eni-0010001lab");

    // Without a source the kernel picks eth0's primary through main, and
    // that is eth0's own ENI.
    let o = eniroute(ns, ep, &["trace", "198.51.100.10"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        verdict(&o).starts_with(
            "traffic to 198.51.100.10 (source 10.0.1.10, chosen by the kernel) leaves eth0 (ENI eni-0010000lab, table main, rule 32766)"
        ),
        "{}",
        text(&o)
    );
    assert_eq!(dev_for(ns, "198.51.100.10", None), "eth0");

    // The rule deleted: eth0's default route takes the reply.
    ns.ip(["rule", "del", "from", "10.0.2.21", "lookup", "10001"])
        .unwrap();
    assert!(ip_route_get(ns, "10.9.0.5", "10.0.2.21", None).contains("dev eth0"));
    let o = eniroute(ns, ep, &["trace", "10.9.0.5", "--from", "10.0.2.21"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert_eq!(
        verdict(&o),
        "reply from 10.0.2.21 to 10.9.0.5 would leave eth0 (ENI eni-0010000lab, table main, rule 32766) \
         although 10.0.2.21 belongs to eth1 (ENI eni-0010001lab): the VPC drops it; rule missing \
         (rule from 10.0.2.21 lookup 10001 priority 10001) — run `eniroute apply`"
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("trace: rule-missing"),
        "{}",
        text(&o)
    );
    let v = json(&eniroute(
        ns,
        ep,
        &["trace", "10.9.0.5", "--from", "10.0.2.21", "--json"],
    ));
    assert_eq!(
        (v["verdict"].as_str(), v["exit_code"].as_u64()),
        (Some("rule-missing"), Some(3))
    );
    assert_eq!(v["path"]["dev"], "eth0");
    apply(ns, ep);

    // A foreign rule ahead of eniroute's sends the address to main.
    ns.ip([
        "rule",
        "add",
        "from",
        "10.0.2.21",
        "lookup",
        "main",
        "priority",
        "100",
    ])
    .unwrap();
    assert!(ip_route_get(ns, "10.9.0.5", "10.0.2.21", None).contains("dev eth0"));
    let o = eniroute(ns, ep, &["trace", "10.9.0.5", "--from", "10.0.2.21"]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let line = verdict(&o);
    assert!(
        line.starts_with("reply from 10.0.2.21 to 10.9.0.5 would leave eth0 (ENI eni-0010000lab, table main, rule 100) although 10.0.2.21 belongs to eth1"),
        "{line}"
    );
    assert!(
        line.contains(
            "foreign rule first: priority 100 (100: from 10.0.2.21 lookup main proto unspec)"
        ),
        "{line}"
    );
    ns.ip(["rule", "del", "priority", "100"]).unwrap();

    // A foreign rule for SSH replies only: the port decides.
    ns.ip([
        "rule",
        "add",
        "from",
        "10.0.2.21",
        "ipproto",
        "tcp",
        "dport",
        "22",
        "lookup",
        "main",
        "priority",
        "50",
    ])
    .unwrap();
    assert!(ip_route_get(ns, "10.9.0.5", "10.0.2.21", Some("22")).contains("dev eth0"));
    assert!(ip_route_get(ns, "10.9.0.5", "10.0.2.21", Some("80")).contains("dev eth1"));
    let o = eniroute(
        ns,
        ep,
        &["trace", "10.9.0.5", "--from", "10.0.2.21", "--dport", "22"],
    );
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(verdict(&o).contains("priority 50"), "{}", text(&o));
    let o = eniroute(
        ns,
        ep,
        &["trace", "10.9.0.5", "--from", "10.0.2.21", "--dport", "80"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    ns.ip(["rule", "del", "priority", "50"]).unwrap();

    // A rule that refuses the source: no route.
    ns.ip([
        "rule",
        "add",
        "from",
        "10.0.2.20",
        "unreachable",
        "priority",
        "5",
    ])
    .unwrap();
    let o = eniroute(ns, ep, &["trace", "10.9.0.5", "--from", "10.0.2.20"]);
    assert_eq!(o.status.code(), Some(8), "{}", text(&o));
    assert!(
        verdict(&o).contains("no route: Network is unreachable")
            && verdict(&o).contains("rule 5 rejects it"),
        "{}",
        text(&o)
    );
    ns.ip(["rule", "del", "priority", "5"]).unwrap();

    // An address that is nobody's; and bad input.
    let o = eniroute(ns, ep, &["trace", "10.9.0.5", "--from", "10.0.2.99"]);
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    assert!(
        verdict(&o).contains("not an address of this host"),
        "{}",
        text(&o)
    );
    let o = eniroute(ns, ep, &["trace", "10.9.0.5", "--from", "2001:db8::1"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = eniroute(ns, ep, &["trace", "nowhere"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));

    // Metadata down: the same answer from the kernel and the state
    // directory, marked unverified; the ENI id from the link's altname.
    inst.sim.set_fault(None, Some(Fault::Status(500)));
    let o = eniroute(ns, ep, &["trace", "10.9.0.5", "--from", "10.0.2.21"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        verdict(&o),
        "reply from 10.0.2.21 to 10.9.0.5 leaves eth1 (ENI eni-0010001lab, table 10001, rule 10001): correct"
    );
    assert!(stdout(&o).contains("UNVERIFIED"), "{}", text(&o));
    ns.ip(["rule", "del", "from", "10.0.2.21", "lookup", "10001"])
        .unwrap();
    let o = eniroute(
        ns,
        ep,
        &["trace", "10.9.0.5", "--from", "10.0.2.21", "--json"],
    );
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let v = json(&o);
    assert_eq!(v["verified"], false);
    assert_eq!(v["verdict"], "rule-missing");
    assert!(
        v["metadata"]["error"].as_str().unwrap().contains("500"),
        "{v}"
    );
}

#[test]
fn trace_follows_ipv6_replies() {
    if !need_root("trace_follows_ipv6_replies") {
        return;
    }
    let lab = world::ipv6_only().unwrap();
    let ep = "http://[fd00:ec2::254]";
    apply(&lab.ns, ep);
    let o = eniroute(
        &lab.ns,
        ep,
        &["trace", "2001:db8:9::5", "--from", "2001:db8:2::21"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let line = verdict(&o);
    assert!(
        line.starts_with("reply from 2001:db8:2::21 to 2001:db8:9::5 leaves eth1 (ENI eni-")
            && line.ends_with(", table 10001, rule 10001): correct"),
        "{line}"
    );
    assert_eq!(
        dev_for(&lab.ns, "2001:db8:9::5", Some("2001:db8:2::21")),
        "eth1"
    );

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
    assert_eq!(
        dev_for(&lab.ns, "2001:db8:9::5", Some("2001:db8:2::21")),
        "eth0"
    );
    let o = eniroute(
        &lab.ns,
        ep,
        &["trace", "2001:db8:9::5", "--from", "2001:db8:2::21"],
    );
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let line = verdict(&o);
    assert!(
        line.contains("would leave eth0")
            && line
                .contains("rule missing (rule -6 from 2001:db8:2::21 lookup 10001 priority 10001)"),
        "{line}"
    );
}
