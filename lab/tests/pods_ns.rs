//! A Kubernetes node with the VPC CNI, emulated: a pod holds one of the
//! primary ENI's secondary IPs in a namespace of its own, reached through a
//! routed veth (`eni…` on the host, a host route and the CNI's rule at
//! priority 512), as aws-node sets it up. With eniroute's daemon running
//! (no configuration), the pod answers TCP at its own address: eniroute
//! found the CNI, says so in `status`, and left that address off the host.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use eniroute_lab::agent::{wait_for, Daemon};
use eniroute_lab::world::{self, EniPlan};
use eniroute_lab::{veth, Client, Netns, TcpServer};

const POD_IP: &str = "10.0.1.11";
const POD_VETH: &str = "eni1a2b3c4d5e6";

/// What aws-node does for one pod on the primary ENI: a veth with the pod's
/// address inside, a default route via the link-local gateway 169.254.1.1,
/// a host route to the pod and the rule `512: from all to <pod> lookup
/// main`.
fn pod(node: &Netns) -> Netns {
    let pod = Netns::create("pod").unwrap();
    veth(node, POD_VETH, None, &pod, "eth0").unwrap();
    pod.ip(["addr", "add", &format!("{POD_IP}/32"), "dev", "eth0"])
        .unwrap();
    pod.ip([
        "route",
        "add",
        "169.254.1.1",
        "dev",
        "eth0",
        "scope",
        "link",
    ])
    .unwrap();
    pod.ip([
        "route",
        "add",
        "default",
        "via",
        "169.254.1.1",
        "dev",
        "eth0",
    ])
    .unwrap();
    let mac = node
        .ip(["-o", "link", "show", "dev", POD_VETH])
        .unwrap()
        .split("link/ether ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .to_string();
    pod.ip([
        "neigh",
        "add",
        "169.254.1.1",
        "lladdr",
        &mac,
        "dev",
        "eth0",
        "nud",
        "permanent",
    ])
    .unwrap();
    node.ip([
        "route",
        "add",
        &format!("{POD_IP}/32"),
        "dev",
        POD_VETH,
        "scope",
        "link",
    ])
    .unwrap();
    node.ip([
        "rule", "add", "to", POD_IP, "lookup", "main", "priority", "512",
    ])
    .unwrap();
    node.sysctl("net.ipv4.ip_forward", "1").unwrap();
    pod
}

fn reached(client: &Client, ns: &Netns, d: &Daemon) -> String {
    let seen = wait_for(Duration::from_secs(10), || {
        reaches(client, POD_IP, 80, SHORT).is_ok()
    });
    assert!(
        seen.is_some(),
        "the pod never answered at {POD_IP}\n{}\n--- daemon log ---\n{}",
        dumps(ns),
        d.log()
    );
    reaches(client, POD_IP, 80, LONG).unwrap()
}

#[test]
fn a_pod_keeps_its_address_on_a_vpc_cni_node() {
    if !need_root("a_pod_keeps_its_address_on_a_vpc_cni_node") {
        return;
    }
    let vpc = eniroute_lab::Vpc::new().unwrap();
    let inst = world::instance(
        &vpc,
        1,
        &[
            EniPlan::new("eth0", 0, "10.0.1.0/24", &["10.0.1.10", POD_IP]).unwrap(),
            EniPlan::new("eth1", 1, "10.0.2.0/24", &["10.0.2.20"]).unwrap(),
        ],
    )
    .unwrap();
    let admin = vpc.client("admin", "10.9.0.5/24".parse().unwrap()).unwrap();
    let ns: &Netns = &inst.ns;
    let pod = pod(ns);
    let _web = TcpServer::start(&pod, SocketAddr::new(POD_IP.parse().unwrap(), 80)).unwrap();
    let _ssh = server(ns, 22);
    let d = Daemon::start(bin(), ns, &inst.endpoint, None).unwrap();
    let up = wait_for(Duration::from_secs(20), || {
        reaches(&admin, "10.0.2.20", 22, SHORT).is_ok()
    });
    assert!(up.is_some(), "never configured\n{}\n{}", dumps(ns), d.log());

    let seen = reached(&admin, ns, &d);
    assert!(seen.starts_with("10.9.0.5:"), "the pod saw {seen}");
    let eth0 = ns.ip(["-4", "-o", "addr", "show", "dev", "eth0"]).unwrap();
    assert!(
        !eth0.contains(POD_IP),
        "the pod's address is on the host:\n{eth0}"
    );
    // The node's own addresses are routed as ever.
    let rules = ns.ip(["rule"]).unwrap();
    assert!(rules.contains("from 10.0.1.10 lookup 10000"), "{rules}");
    assert!(!rules.contains(&format!("from {POD_IP} lookup")), "{rules}");

    let o = eniroute(ns, &inst.endpoint, &["status"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        out.contains(&format!("Kubernetes VPC CNI (pod link {POD_VETH})")),
        "{}",
        text(&o)
    );
    let o = eniroute(ns, &inst.endpoint, &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["pod_agents"][0]["agent"], "vpc-cni", "{v}");

    // A second look a poll later: still the pod's.
    std::thread::sleep(Duration::from_millis(1500));
    let seen = reached(&admin, ns, &d);
    assert!(seen.starts_with("10.9.0.5:"), "the pod saw {seen}");
    drop(d);

    // What the override does, and what happened before eniroute knew the
    // CNI: the address on the host takes the pod's traffic.
    let cfg = std::env::temp_dir().join(format!("eniroute-pods-{}.toml", std::process::id()));
    std::fs::write(&cfg, "[selection]\nprimary_secondary_ips = \"assign\"\n").unwrap();
    let o = lab_apply(ns, &inst.endpoint, &cfg);
    assert!(o.status.success(), "{}", text(&o));
    let eth0 = ns.ip(["-4", "-o", "addr", "show", "dev", "eth0"]).unwrap();
    assert!(eth0.contains(&format!("{POD_IP}/32")), "{eth0}");
    assert!(
        reaches(&admin, POD_IP, 80, SHORT).is_err(),
        "the host answered in the pod's place"
    );
    let _ = std::fs::remove_file(cfg);
}

fn lab_apply(ns: &Netns, endpoint: &str, cfg: &std::path::Path) -> std::process::Output {
    ns.command(bin())
        .arg("--imds-endpoint")
        .arg(endpoint)
        .arg("--config")
        .arg(cfg)
        .arg("apply")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}
