//! Other agents that hand addresses of the primary ENI to pods or tasks:
//! the Kubernetes VPC CNI (aws-node) and ECS in awsvpc mode. Where one runs,
//! the primary ENI's secondary IPv4 addresses are the pods', not the host's:
//! an address on the host would make the host answer in a pod's place. What
//! is found here is a pure function of the links, the rules and which of a
//! few well-known files exist.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::SecondaryIps;
use crate::values::{KernelRule, Link, MAIN_TABLE};

/// An agent that gives the primary ENI's secondary addresses away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PodAgent {
    /// Kubernetes' Amazon VPC CNI (aws-node).
    VpcCni,
    /// The ECS agent, whose awsvpc tasks get addresses of their own.
    EcsAwsvpc,
}

impl fmt::Display for PodAgent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PodAgent::VpcCni => "Kubernetes VPC CNI",
            PodAgent::EcsAwsvpc => "ECS awsvpc",
        })
    }
}

/// One agent found, with what gave it away.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Detected {
    pub agent: PodAgent,
    /// The first footprint found: a file, a link or a rule.
    pub evidence: String,
}

impl fmt::Display for Detected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.agent, self.evidence)
    }
}

/// Which files exist on the host: the one thing detection asks of it
/// beyond the kernel's links and rules.
pub trait Footprints {
    fn exists(&self, path: &str) -> bool;
}

/// The host's files, under a root (`/`, or `ENIROUTE_HOST_ROOT`).
pub struct HostFiles(pub PathBuf);

impl Footprints for HostFiles {
    fn exists(&self, path: &str) -> bool {
        // Existence only (no read): a metadata lookup never blocks on a
        // FIFO or reads without limit.
        self.0
            .join(path.trim_start_matches('/'))
            .symlink_metadata()
            .is_ok()
    }
}

/// The VPC CNI's configuration and its IPAM daemon's state.
const VPC_CNI_FILES: &[&str] = &[
    "/etc/cni/net.d/10-aws.conflist",
    "/var/run/aws-node",
    "/run/aws-node",
];

/// The ECS agent's configuration and data.
const ECS_FILES: &[&str] = &["/etc/ecs/ecs.config", "/var/lib/ecs/data"];

/// The VPC CNI's rule for traffic to a pod (`512: from all to <pod> lookup
/// main`) and from a pod on a secondary ENI (`1536: from <pod> lookup N`).
const VPC_CNI_TO_POD: u32 = 512;
const VPC_CNI_FROM_POD: u32 = 1536;

/// Length of the hex suffix of the VPC CNI's host-side pod veths
/// (`eni` + the first 11 hex digits of a SHA-1 of namespace and pod name).
const VETH_HEX: usize = 11;

/// The agents whose footprints are on this host, each once, in order.
pub fn detect(
    links: &[Link],
    rules: &[KernelRule],
    protocol: u8,
    files: &impl Footprints,
) -> Vec<Detected> {
    let mut out: Vec<Detected> = Vec::new();
    let mut found = |agent: PodAgent, evidence: String| {
        if !out.iter().any(|d| d.agent == agent) {
            out.push(Detected { agent, evidence });
        }
    };
    for path in VPC_CNI_FILES {
        if files.exists(path) {
            found(PodAgent::VpcCni, (*path).to_string());
        }
    }
    for l in links {
        if is_cni_veth(&l.name) {
            found(PodAgent::VpcCni, format!("pod link {}", l.name));
        } else if l.name.starts_with("vlan.eth.") {
            found(PodAgent::VpcCni, format!("branch ENI link {}", l.name));
        }
    }
    for k in rules.iter().filter(|k| k.protocol != protocol) {
        let to_pod = k.rule.priority == VPC_CNI_TO_POD
            && k.rule.table == MAIN_TABLE
            && k.rule.from.is_none()
            && k.has_other_selectors;
        let from_pod = k.rule.priority == VPC_CNI_FROM_POD && k.rule.from.is_some();
        if to_pod || from_pod {
            found(
                PodAgent::VpcCni,
                format!(
                    "rule at priority {} of protocol {}",
                    k.rule.priority, k.protocol
                ),
            );
        }
    }
    for path in ECS_FILES {
        if files.exists(path) {
            found(PodAgent::EcsAwsvpc, (*path).to_string());
        }
    }
    for l in links {
        if l.name == "ecs-bridge" || l.name.starts_with("ecs-eni") {
            found(PodAgent::EcsAwsvpc, format!("link {}", l.name));
        }
    }
    out.sort();
    out
}

/// `eni` and 11 lowercase hex digits: the CNI's name for a pod's host-side
/// veth. eniroute's own altnames (`eni-0abc…`) carry a dash.
fn is_cni_veth(name: &str) -> bool {
    name.strip_prefix("eni").is_some_and(|hex| {
        hex.len() == VETH_HEX
            && hex
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    })
}

/// `selection.primary_secondary_ips` as it applies on a host where
/// `detected` was found: `auto` leaves the addresses to an agent found, and
/// puts them on the host where none is.
pub fn resolve(setting: SecondaryIps, detected: &[Detected]) -> SecondaryIps {
    match setting {
        SecondaryIps::Auto if detected.is_empty() => SecondaryIps::Assign,
        SecondaryIps::Auto => SecondaryIps::Leave,
        s => s,
    }
}

/// The root under which [`HostFiles`] looks.
pub fn host_files(root: &Path) -> HostFiles {
    HostFiles(root.to_path_buf())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::values::{Family, Rule};

    struct Files(BTreeSet<&'static str>);

    impl Footprints for Files {
        fn exists(&self, path: &str) -> bool {
            self.0.contains(path)
        }
    }

    fn none() -> Files {
        Files(BTreeSet::new())
    }

    fn link(name: &str) -> Link {
        Link {
            index: 9,
            name: name.into(),
            mac: None,
            up: true,
            group: 0,
            mtu: 9001,
            addresses: vec![],
        }
    }

    fn rule(priority: u32, from: Option<&str>, table: u32, other: bool) -> KernelRule {
        KernelRule {
            rule: Rule {
                family: Family::Ipv4,
                priority,
                from: from.map(|f| f.parse().unwrap()),
                table,
                suppress_ifgroup: None,
            },
            protocol: 3,
            has_other_selectors: other,
            not_lookup: false,
        }
    }

    #[test]
    fn a_plain_host_has_no_pod_agent() {
        let links = [
            link("eth0"),
            link("eth1"),
            link("docker0"),
            link("veth1a2b3c4"),
        ];
        let rules = [rule(100, Some("192.168.7.0/24"), 7, false)];
        assert_eq!(detect(&links, &rules, 233, &none()), []);
        // eniroute's own altname spelling is not a pod veth.
        assert!(!is_cni_veth("eni-0123456789a"));
        assert!(!is_cni_veth("eni0123456789"));
        assert!(!is_cni_veth("eni0123456789AB"));
    }

    #[test]
    fn the_vpc_cni_is_found_by_its_files_links_or_rules() {
        let by_file = Files(BTreeSet::from(["/etc/cni/net.d/10-aws.conflist"]));
        let d = detect(&[link("eth0")], &[], 233, &by_file);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].agent, PodAgent::VpcCni);
        assert_eq!(
            d[0].to_string(),
            "Kubernetes VPC CNI (/etc/cni/net.d/10-aws.conflist)"
        );

        let d = detect(&[link("eth0"), link("eni1a2b3c4d5e6")], &[], 233, &none());
        assert_eq!(d[0].evidence, "pod link eni1a2b3c4d5e6");

        let d = detect(&[], &[rule(512, None, MAIN_TABLE, true)], 233, &none());
        assert_eq!(d[0].agent, PodAgent::VpcCni, "{d:?}");
        let d = detect(
            &[],
            &[rule(1536, Some("10.0.1.11/32"), 2, true)],
            233,
            &none(),
        );
        assert_eq!(d[0].agent, PodAgent::VpcCni, "{d:?}");
        // A rule of eniroute's own protocol at that priority is no evidence.
        assert_eq!(
            detect(&[], &[rule(512, None, MAIN_TABLE, true)], 3, &none()),
            []
        );
    }

    #[test]
    fn ecs_is_found_by_its_files_or_bridge_and_each_agent_is_named_once() {
        let files = Files(BTreeSet::from([
            "/var/lib/ecs/data",
            "/etc/cni/net.d/10-aws.conflist",
            "/run/aws-node",
        ]));
        let d = detect(&[link("ecs-bridge")], &[], 233, &files);
        let agents: Vec<PodAgent> = d.iter().map(|d| d.agent).collect();
        assert_eq!(agents, [PodAgent::VpcCni, PodAgent::EcsAwsvpc]);
        let d = detect(&[link("ecs-bridge")], &[], 233, &none());
        assert_eq!(d[0].to_string(), "ECS awsvpc (link ecs-bridge)");
    }
}
