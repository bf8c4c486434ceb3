//! Taking over from amazon-ec2-net-utils.
//!
//! amazon-ec2-net-utils (Amazon Linux 2023's default) programs the same
//! per-ENI tables and rules as eniroute: the numbering is shared on purpose,
//! so runbooks still read. Version 2 does it through systemd-networkd: for
//! each ENI, udev starts `policy-routes@<if>`, which writes drop-ins under
//! `/run/systemd/network/70-<if>.network.d/` and reloads networkd, which then
//! installs
//! - rules `from <addr> lookup T priority T`, protocol `static`, for every
//!   address of every ENI but the primary one (T = 10000 + 100·card + device);
//! - in table T, `default via <router>` (protocol `dhcp`, metric
//!   512 + 100·card + device: a `Gateway=_dhcp4` route takes the DHCP route
//!   metric) and the subnet route (protocol `static`, metric 0), for the
//!   primary ENI too;
//! - secondary IPv4 addresses as /32 `noprefixroute`.
//!
//! Its udev rule and a one-minute refresh timer rewrite those drop-ins for as
//! long as it is installed, so two agents writing one table would take turns
//! forever. eniroute therefore replaces it (the rpm obsoletes the package and
//! ships the DHCP-on-every-ENI network file it took away) and takes over, once,
//! what it left in the kernel; while the package is still installed the daemon
//! stands by (see [`standing_by`]) unless `selection.coexist_with_ec2_net_utils`
//! says to run beside it.
//!
//! The takeover is recognised in the kernel, not in files: only objects in an
//! ENI's own table whose content eniroute's plan for that ENI also has (same
//! source and table for a rule; same destination, next hop and link for a
//! route) and that carry a protocol systemd-networkd writes. eniroute first
//! writes its own (a route that holds the same kernel slot is replaced in
//! place) and only then deletes theirs, so every lookup finds the same answer
//! at every moment. Anything else in its range stays as it is and is reported.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use crate::plan::{EniStatus, Plan};
use crate::snapshot::Current;
use crate::values::{default_metric, Address, KernelRoute, KernelRule, Route, Warning};

/// Route and rule protocols systemd-networkd writes: `static` for
/// `[Route]` and `[RoutingPolicyRule]` sections, `ra` for routes through a
/// router learned from an advertisement (`Gateway=_ipv6ra`), `dhcp` for
/// `Gateway=_dhcp4`.
pub const RTPROT_STATIC: u8 = 4;
pub const RTPROT_RA: u8 = 9;
pub const RTPROT_DHCP: u8 = 16;

/// Files that only an amazon-ec2-net-utils installation has: the v2
/// (udev + networkd) units, helper and udev rule, and v1's network-scripts
/// functions.
const MARKERS: &[&str] = &[
    "usr/lib/systemd/system/policy-routes@.service",
    "lib/systemd/system/policy-routes@.service",
    "usr/bin/setup-policy-routes",
    "usr/sbin/setup-policy-routes",
    "usr/lib/udev/rules.d/99-vpc-policy-routes.rules",
    "etc/sysconfig/network-scripts/ec2net-functions",
];

/// Where its runtime drop-ins live, relative to the root.
const NETWORKD_RUNTIME: &str = "run/systemd/network";

/// The file system root the checks look at: `/`, or `$ENIROUTE_HOST_ROOT`
/// (set only by tests, which recreate an amazon-ec2-net-utils host in a
/// temporary directory).
pub fn host_root() -> PathBuf {
    std::env::var_os("ENIROUTE_HOST_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// The first marker present under `root`, if any.
pub fn ec2_net_utils(root: &Path) -> Option<PathBuf> {
    MARKERS.iter().map(|m| root.join(m)).find(|p| p.exists())
}

/// Why the agent must not change the kernel now, or `None` when it may:
/// amazon-ec2-net-utils is installed and the configuration does not say to
/// run beside it.
pub fn refusal(root: &Path, allowed: bool) -> Option<String> {
    if allowed {
        return None;
    }
    ec2_net_utils(root).map(|found| {
        format!(
            "amazon-ec2-net-utils is installed ({} exists) and programs the same tables and rules; \
             remove it (the eniroute rpm replaces it), or set selection.coexist_with_ec2_net_utils = true \
             to run beside it",
            found.display()
        )
    })
}

/// The daemon's counterpart of [`refusal`]: while this is `Some`, it
/// changes nothing, says why (log, `STATUS=`), and looks again; it takes
/// over as soon as the package is gone. An rpm transaction that installs
/// eniroute starts it before the obsoleted package is erased, so refusing
/// (and exiting) here would leave the host without an agent.
pub fn standing_by(config: &crate::config::Config) -> Option<String> {
    refusal(&host_root(), config.selection.coexist_with_ec2_net_utils)
        .map(|why| format!("standing by: {why}"))
}

/// Runtime drop-in directories amazon-ec2-net-utils wrote
/// (`/run/systemd/network/70-<if>.network.d` holding its `eni.conf`). They
/// outlive the package until reboot, and systemd-networkd applies them
/// again whenever it restarts or reloads: with stale addresses, once the
/// ENI's addresses have changed. The rpm removes them after the takeover;
/// `status` names any that are left.
pub fn leftover_dropins(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root.join(NETWORKD_RUNTIME)) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name.starts_with("70-") && name.ends_with(".network.d") && written_by_it(p)
        })
        .collect();
    found.sort();
    found
}

/// Whether a drop-in directory is amazon-ec2-net-utils': its `eni.conf`
/// opens with the comment `setup-policy-routes` writes. Read with a bound:
/// the first line is all that is needed.
fn written_by_it(dir: &Path) -> bool {
    use std::io::Read as _;
    let Ok(file) = std::fs::File::open(dir.join("eni.conf")) else {
        return false;
    };
    let mut head = String::new();
    if file.take(512).read_to_string(&mut head).is_err() {
        return false;
    }
    head.lines()
        .next()
        .is_some_and(|l| l.contains("generated by policy-routes@"))
}

/// What the reconciler does with amazon-ec2-net-utils' objects this round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Takeover {
    /// Keys of planned routes whose kernel slot one of their routes holds:
    /// written with replace, so the slot is never empty.
    pub replace: BTreeSet<(u32, IpNet)>,
    /// Their rules, deleted once eniroute's identical ones are in.
    pub rules: Vec<KernelRule>,
    /// Their routes that a replace does not overwrite (another metric),
    /// deleted once eniroute's are in.
    pub routes: Vec<KernelRoute>,
    /// Secondary addresses of ENIs taken over, recorded as eniroute's from
    /// now on: nothing else will remove them when EC2 unassigns them.
    pub addresses: Vec<Address>,
}

impl Takeover {
    pub fn is_empty(&self) -> bool {
        self.replace.is_empty()
            && self.rules.is_empty()
            && self.routes.is_empty()
            && self.addresses.is_empty()
    }

    fn claims_route(&self, r: &KernelRoute) -> bool {
        self.routes.contains(r)
            || (self.replace.contains(&r.route.key()) && r.metric == default_metric(&r.route.dst))
    }

    fn claims_rule(&self, r: &KernelRule) -> bool {
        self.rules.contains(r)
    }
}

/// Whether their route leaves through the next hop eniroute's goes to. An
/// IPv6 default that networkd learned from a router advertisement
/// (`Gateway=_ipv6ra`) names the subnet router by its own link-local
/// address; eniroute names it `fe80:ec2::1`: on the ENI's own link both
/// are the VPC's router.
fn same_next_hop(planned: &Route, theirs: &KernelRoute) -> bool {
    let link_local = |g: Option<std::net::IpAddr>| matches!(g, Some(std::net::IpAddr::V6(a)) if a.segments()[0] & 0xffc0 == 0xfe80);
    planned.gateway == theirs.route.gateway
        || (theirs.protocol == RTPROT_RA
            && planned.dst.prefix_len() == 0
            && link_local(planned.gateway)
            && link_local(theirs.route.gateway))
}

fn networkd_wrote(protocol: u8) -> bool {
    matches!(protocol, RTPROT_STATIC | RTPROT_RA | RTPROT_DHCP)
}

/// Finds, for every managed ENI, the rules and routes that
/// amazon-ec2-net-utils (through systemd-networkd) left in its table and
/// that eniroute's plan replaces one for one.
pub fn takeover(plan: &Plan, current: &Current, protocol: u8) -> Takeover {
    let mut out = Takeover::default();
    for eni in plan.enis.iter().filter(|e| e.status == EniStatus::Managed) {
        let (Some(table), Some(index)) = (eni.table, eni.index) else {
            continue;
        };
        let planned_routes: Vec<&Route> = plan.routes.iter().filter(|r| r.table == table).collect();
        let their_rules: Vec<&KernelRule> = current
            .rules
            .iter()
            .filter(|k| k.protocol != protocol && k.protocol == RTPROT_STATIC)
            .filter(|k| !k.has_other_selectors && !k.not_lookup)
            .filter(|k| k.rule.table == table && k.rule.priority == table)
            .filter(|k| k.rule.suppress_ifgroup.is_none())
            .filter(|k| plan.rules.contains(&k.rule))
            .collect();
        let their_routes: Vec<&KernelRoute> = current
            .routes
            .iter()
            .filter(|k| k.protocol != protocol && networkd_wrote(k.protocol))
            .filter(|k| k.route.table == table && k.route.oif == index)
            .filter(|k| {
                planned_routes
                    .iter()
                    .any(|p| p.dst == k.route.dst && p.oif == k.route.oif && same_next_hop(p, k))
            })
            .collect();
        if their_rules.is_empty() && their_routes.is_empty() {
            continue;
        }
        for p in &planned_routes {
            // Replace only where every foreign route in the slot is theirs:
            // an operator's route beside them is left as it is.
            let mut in_slot = current
                .routes
                .iter()
                .filter(|k| k.protocol != protocol && k.route.key() == p.key())
                .peekable();
            if in_slot.peek().is_some() && in_slot.all(|k| their_routes.contains(&k)) {
                out.replace.insert(p.key());
            }
        }
        out.rules.extend(their_rules.into_iter().cloned());
        out.routes.extend(
            their_routes
                .into_iter()
                .filter(|k| {
                    // A route in eniroute's own slot is overwritten by the
                    // replace; deleting it afterwards would delete ours.
                    !(out.replace.contains(&k.route.key())
                        && k.metric == default_metric(&k.route.dst))
                })
                .cloned(),
        );
        out.addresses
            .extend(secondaries_to_adopt(eni, current, index));
    }
    out
}

/// The ENI's secondary private IPv4 addresses that are on its link as /32
/// and not recorded as eniroute's: what `ec2net_alias.conf` had networkd add.
fn secondaries_to_adopt(
    eni: &crate::plan::EniSummary,
    current: &Current,
    index: u32,
) -> Vec<Address> {
    let Some(link) = current.link(index) else {
        return Vec::new();
    };
    eni.addresses
        .iter()
        .filter(|a| matches!(a, IpNet::V4(n) if n.prefix_len() == 32))
        // Metadata lists the primary private IPv4 first; DHCP manages it.
        .skip(1)
        .filter(|a| link.addresses.iter().any(|la| la.addr == **a && !la.owned))
        .map(|a| Address {
            index,
            dev: link.name.clone(),
            address: *a,
            noprefixroute: true,
        })
        .collect()
}

fn protocol_name(p: u8) -> String {
    match p {
        2 => "kernel".into(),
        3 => "boot".into(),
        RTPROT_STATIC => "static".into(),
        RTPROT_RA => "ra".into(),
        RTPROT_DHCP => "dhcp".into(),
        p => p.to_string(),
    }
}

/// Routes and rules of others in eniroute's table range that it does not
/// take over, one message each. They are left as they are: a route that
/// fills the slot of one of eniroute's own keeps eniroute's out for as long
/// as it is there, and the agent goes on managing everything else.
pub fn foreign_in_range(
    plan: &Plan,
    current: &Current,
    config: &crate::config::Config,
    takeover: &Takeover,
) -> Vec<Warning> {
    let protocol = config.numbering.protocol;
    let base = config.numbering.table_base;
    let end = base.saturating_add(crate::config::TABLE_SPAN);
    let owner = |table: u32| {
        plan.enis
            .iter()
            .find(|e| e.table == Some(table) && e.status == EniStatus::Managed)
            .map(|e| {
                format!(
                    "ENI {} ({})",
                    e.interface_id.as_deref().unwrap_or("?"),
                    e.dev.as_deref().unwrap_or("?")
                )
            })
    };
    let mut out = Vec::new();
    for k in current
        .routes
        .iter()
        .filter(|k| k.protocol != protocol && (base..end).contains(&k.route.table))
        .filter(|k| !takeover.claims_route(k))
    {
        let owner = owner(k.route.table);
        let shadows = owner.is_some()
            && plan.routes.iter().any(|p| {
                p.key() == k.route.key()
                    && !current.owned_routes(protocol).any(|o| o.key() == p.key())
            });
        out.push(Warning::ForeignRouteInRange {
            route: k.route.clone(),
            protocol: protocol_name(k.protocol),
            metric: k.metric,
            owner,
            shadows,
            range: (base, end - 1),
        });
    }
    for k in current
        .rules
        .iter()
        .filter(|k| k.protocol != protocol && (base..end).contains(&k.rule.table))
        .filter(|k| !takeover.claims_rule(k))
    {
        out.push(Warning::ForeignRuleInRange {
            rule: k.rule.clone(),
            protocol: protocol_name(k.protocol),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::imds::{parse, tree};
    use crate::reconcile::{diff, Op, Ownership};
    use crate::values::{Family, Link, LinkAddress, Rule};

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn link(index: u32, name: &str, mac: &str, addrs: &[&str]) -> Link {
        Link {
            index,
            name: name.into(),
            mac: Some(mac.parse().unwrap()),
            up: true,
            group: 0,
            mtu: 9001,
            addresses: addrs
                .iter()
                .map(|a| LinkAddress {
                    addr: net(a),
                    owned: false,
                    valid_lft: None,
                    proto: None,
                })
                .collect(),
        }
    }

    fn route(table: u32, dst: &str, gw: Option<&str>, dev: &str, oif: u32) -> Route {
        Route {
            table,
            dst: net(dst),
            gateway: gw.map(|g| g.parse().unwrap()),
            dev: dev.into(),
            oif,
            src: None,
        }
    }

    fn theirs_rule(from: &str, table: u32) -> KernelRule {
        KernelRule {
            rule: Rule {
                family: Family::Ipv4,
                priority: table,
                from: Some(net(from)),
                table,
                suppress_ifgroup: None,
            },
            protocol: RTPROT_STATIC,
            has_other_selectors: false,
            not_lookup: false,
        }
    }

    /// The management-network fixture as amazon-ec2-net-utils leaves it:
    /// networkd's rules for eth1, its routes in tables 10000 and 10001.
    fn ec2_net_utils_host() -> (Plan, Current) {
        let path = format!(
            "{}/tests/fixtures/imds/management-network.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let tree: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let instance = parse::instance_from(|p| tree::lookup(&tree, p)).unwrap();
        let links = vec![
            link(2, "eth0", "0a:00:00:00:00:01", &["10.0.1.10/24"]),
            link(
                3,
                "eth1",
                "0a:00:00:00:00:02",
                &["10.0.2.20/24", "10.0.2.21/32"],
            ),
        ];
        let plan = crate::plan::plan(&instance, &links, &Config::default());
        let kr = |route: Route, protocol: u8, metric: u32| KernelRoute {
            route,
            protocol,
            metric,
        };
        let current = Current {
            links,
            rules: vec![
                theirs_rule("10.0.2.20/32", 10001),
                theirs_rule("10.0.2.21/32", 10001),
            ],
            routes: vec![
                kr(
                    route(10000, "0.0.0.0/0", Some("10.0.1.1"), "eth0", 2),
                    RTPROT_DHCP,
                    512,
                ),
                kr(
                    route(10000, "10.0.1.0/24", None, "eth0", 2),
                    RTPROT_STATIC,
                    0,
                ),
                kr(
                    route(10001, "0.0.0.0/0", Some("10.0.2.1"), "eth1", 3),
                    RTPROT_DHCP,
                    513,
                ),
                kr(
                    route(10001, "10.0.2.0/24", None, "eth1", 3),
                    RTPROT_STATIC,
                    0,
                ),
            ],
            ..Current::default()
        };
        (plan, current)
    }

    /// Applies the diff to a model of the kernel one change at a time and
    /// checks after each that every address of eth1 still has a rule into
    /// table 10001 and that both tables still route: no moment without a
    /// path. At the end only eniroute's objects remain, each once.
    #[test]
    fn takeover_never_leaves_a_moment_without_a_path() {
        let (plan, current) = ec2_net_utils_host();
        let own = Ownership::from(&Config::default());
        let ops = diff(&plan, &current, own);
        let mut rules: Vec<(Rule, u8)> = current
            .rules
            .iter()
            .map(|k| (k.rule.clone(), k.protocol))
            .collect();
        let mut routes: Vec<KernelRoute> = current.routes.clone();
        let ours = |r: &Route| KernelRoute {
            route: r.clone(),
            protocol: own.protocol,
            metric: default_metric(&r.dst),
        };
        let slot = |k: &KernelRoute| (k.route.key(), k.metric);
        for (i, op) in ops.iter().enumerate() {
            match op {
                Op::AddRule(r) => rules.push((r.clone(), own.protocol)),
                Op::DelRule(r) => rules.retain(|x| x != &(r.clone(), own.protocol)),
                Op::DelForeignRule { rule, protocol } => {
                    rules.retain(|x| x != &(rule.clone(), *protocol))
                }
                Op::AddRoute(r) => {
                    assert!(
                        !routes.iter().any(|k| slot(k) == slot(&ours(r))),
                        "{op}: EEXIST"
                    );
                    routes.push(ours(r));
                }
                Op::ReplaceRoute(r) => {
                    routes.retain(|k| slot(k) != slot(&ours(r)));
                    routes.push(ours(r));
                }
                Op::DelRoute(r) => routes.retain(|k| k != &ours(r)),
                Op::DelForeignRoute {
                    route,
                    protocol,
                    metric,
                } => routes.retain(|k| {
                    !(k.route == *route && k.protocol == *protocol && k.metric == *metric)
                }),
                _ => {}
            }
            let state = format!("after change {i} ({op}):\n{rules:#?}\n{routes:#?}");
            for src in ["10.0.2.20/32", "10.0.2.21/32"] {
                assert!(
                    rules
                        .iter()
                        .any(|(r, _)| r.from == Some(net(src)) && r.table == 10001),
                    "{src} has no rule {state}"
                );
            }
            for (table, gw, subnet) in [
                (10000, "10.0.1.1", "10.0.1.0/24"),
                (10001, "10.0.2.1", "10.0.2.0/24"),
            ] {
                let has = |dst: &str, via: Option<&str>| {
                    routes.iter().any(|k| {
                        k.route.table == table
                            && k.route.dst == net(dst)
                            && k.route.gateway == via.map(|g| g.parse().unwrap())
                    })
                };
                assert!(
                    has("0.0.0.0/0", Some(gw)),
                    "table {table} lost its default {state}"
                );
                assert!(
                    has(subnet, None),
                    "table {table} lost its subnet route {state}"
                );
            }
        }
        assert!(rules.iter().all(|(_, p)| *p == own.protocol), "{rules:#?}");
        assert!(
            routes.iter().all(|k| k.protocol == own.protocol),
            "{routes:#?}"
        );
        let mut seen = BTreeSet::new();
        assert!(
            rules.iter().all(|r| seen.insert(r.clone())),
            "duplicates: {rules:#?}"
        );
        assert!(ops
            .iter()
            .any(|op| matches!(op, Op::AdoptAddress(a) if a.address == net("10.0.2.21/32"))));
    }

    #[test]
    fn ipv6_rules_and_the_router_advertised_default_are_taken_over() {
        let path = format!(
            "{}/tests/fixtures/imds/ipv6-only.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let tree: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let instance = parse::instance_from(|p| tree::lookup(&tree, p)).unwrap();
        let links = vec![
            link(2, "eth0", "0a:00:00:00:00:01", &["10.0.1.10/24"]),
            link(
                3,
                "eth1",
                "0a:00:00:00:00:02",
                &["2600:1f18:aaaa:bb02::20/128"],
            ),
        ];
        let plan = crate::plan::plan(&instance, &links, &Config::default());
        let ra_default = KernelRoute {
            route: route(10001, "::/0", Some("fe80::4a:ff:fe00:1"), "eth1", 3),
            protocol: RTPROT_RA,
            metric: 513,
        };
        let subnet = KernelRoute {
            route: route(10001, "2600:1f18:aaaa:bb02::/64", None, "eth1", 3),
            protocol: RTPROT_STATIC,
            metric: 1024,
        };
        let mut rule = theirs_rule("2600:1f18:aaaa:bb02::20/128", 10001);
        rule.rule.family = Family::Ipv6;
        let current = Current {
            links,
            rules: vec![rule.clone()],
            routes: vec![ra_default.clone(), subnet],
            ..Current::default()
        };
        let t = takeover(&plan, &current, 233);
        assert_eq!(t.rules, vec![rule], "{t:?}");
        // Ours goes in beside the advertised default (another metric),
        // which goes last; the subnet route is replaced in place.
        assert_eq!(t.routes, vec![ra_default], "{t:?}");
        assert!(t.replace.contains(&(10001, net("::/0"))), "{t:?}");
        assert!(
            t.replace
                .contains(&(10001, net("2600:1f18:aaaa:bb02::/64"))),
            "{t:?}"
        );
        assert!(foreign_in_range(&plan, &current, &Config::default(), &t).is_empty());
    }

    #[test]
    fn an_operators_route_is_not_taken_over_but_reported() {
        let (plan, mut current) = ec2_net_utils_host();
        // `ip route replace default via 10.0.2.99 … table 10001`: protocol
        // boot, another gateway.
        current
            .routes
            .retain(|k| k.route.table != 10001 || k.route.dst.prefix_len() != 0);
        current.routes.push(KernelRoute {
            route: route(10001, "0.0.0.0/0", Some("10.0.2.99"), "eth1", 3),
            protocol: 3,
            metric: 0,
        });
        let cfg = Config::default();
        let t = takeover(&plan, &current, cfg.numbering.protocol);
        assert!(!t.replace.contains(&(10001, net("0.0.0.0/0"))), "{t:?}");
        let report: Vec<String> = foreign_in_range(&plan, &current, &cfg, &t)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(report.len(), 1, "{report:#?}");
        assert!(report[0].starts_with("table 10001 of ENI"), "{}", report[0]);
        assert!(report[0].contains("via 10.0.2.99"), "{}", report[0]);
        assert!(
            report[0].contains("stays out while it is there"),
            "{}",
            report[0]
        );
        let ops = diff(&plan, &current, Ownership::from(&cfg));
        assert!(
            !ops.iter().any(|op| matches!(op, Op::DelForeignRoute { route, .. } if route.gateway == Some("10.0.2.99".parse().unwrap()))),
            "{ops:#?}"
        );
    }

    #[test]
    fn refuses_only_where_a_marker_exists_and_not_when_allowed() {
        let root = std::env::temp_dir().join(format!("eniroute-coexist-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        assert_eq!(refusal(&root, false), None);
        std::fs::write(root.join("usr/bin/setup-policy-routes"), "").unwrap();
        let msg = refusal(&root, false).unwrap();
        assert!(msg.contains("usr/bin/setup-policy-routes"), "{msg}");
        assert!(msg.contains("coexist_with_ec2_net_utils"), "{msg}");
        assert_eq!(refusal(&root, true), None);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn leftover_dropins_are_only_those_it_wrote() {
        let root = std::env::temp_dir().join(format!("eniroute-dropins-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let net = root.join(NETWORKD_RUNTIME);
        assert!(leftover_dropins(&root).is_empty());
        for (dir, head) in [
            (
                "70-eth1.network.d",
                "# Configuration for eth1 generated by policy-routes@eth1.service\n[Match]\n",
            ),
            ("70-eth2.network.d", "[Match]\nName=eth2\n"),
            (
                "10-netplan-eth0.network.d",
                "# generated by policy-routes@x\n",
            ),
        ] {
            std::fs::create_dir_all(net.join(dir)).unwrap();
            std::fs::write(net.join(dir).join("eni.conf"), head).unwrap();
        }
        assert_eq!(leftover_dropins(&root), vec![net.join("70-eth1.network.d")]);
        let _ = std::fs::remove_dir_all(&root);
    }
}
