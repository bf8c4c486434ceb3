//! The host as the reconciler sees it: links, addresses, rules, routes,
//! the sysctls the plan sets and the names the agent owns, read through the
//! one host trait. Below the diff, so every part of the core can read it.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;

use crate::change::Op;
use crate::netlink::{Kernel, LinkNames, NetlinkError};
use crate::plan::Plan;
use crate::state::AddressRecords;
use crate::sysctl::Sysctl;
use crate::values::{KernelRoute, KernelRule, Link, LinkSettings, Route, Rule};

/// What the host has now, as far as the reconciler cares.
#[derive(Debug, Clone, Default)]
pub struct Current {
    pub links: Vec<Link>,
    pub rules: Vec<KernelRule>,
    pub routes: Vec<KernelRoute>,
    /// Current values of the sysctls the plan sets.
    pub sysctls: BTreeMap<Sysctl, String>,
    /// Links udev has not initialised yet (and may still rename).
    pub udev_pending: Vec<u32>,
    /// Every link's names, alternative names included.
    pub names: Vec<LinkNames>,
    /// The alternative names the agent owns, by ifindex.
    pub owned_altnames: BTreeSet<(u32, String)>,
    /// Managed links someone set down after they were up: left down.
    pub held_down: BTreeSet<u32>,
    /// (ifindex, address): a DHCP client's addresses that vanished before
    /// their lifetime ran out (see [`AddressRecords::leases_gone`]).
    pub leases_gone: BTreeSet<(u32, ipnet::IpNet)>,
    /// Agents that hand the primary ENI's secondary addresses to pods or
    /// tasks, found on this host (see [`crate::pods`]).
    pub pod_agents: Vec<crate::pods::Detected>,
}

impl Current {
    /// Looks for the agents that hand the primary ENI's secondary addresses
    /// to pods or tasks: from the links, the rules of other protocols than
    /// `protocol` and the host's files, never from metadata.
    pub fn detect_pod_agents(&mut self, protocol: u8) {
        self.pod_agents = crate::pods::detect(
            &self.links,
            &self.rules,
            protocol,
            &crate::pods::host_files(&crate::coexist::host_root()),
        );
    }

    /// Reads the host. Addresses the state file records as added by the
    /// agent count as owned too (for kernels that do not keep `IFA_PROTO`).
    pub async fn read(
        kernel: &impl Kernel,
        records: &AddressRecords,
    ) -> Result<Current, NetlinkError> {
        let (mut links, names) = kernel.links_and_names().await?;
        let recorded = records.owned(&links);
        for link in &mut links {
            for a in &mut link.addresses {
                // eniroute adds only permanent addresses without another
                // protocol: one with a lifetime is a DHCP client's, one with
                // a protocol of its own a network manager's, whatever a
                // state file says.
                a.owned |= recorded.contains(&(link.index, a.addr)) && !a.managed_elsewhere();
            }
        }
        let udev_pending = links
            .iter()
            .map(|l| l.index)
            .filter(|i| !kernel.udev_initialised(*i))
            .collect();
        let owned_altnames = crate::altname::owned(records.dir(), &names);
        let held_down = records.held_down(&links);
        let leases_gone = records.leases_gone(&links);
        Ok(Current {
            held_down,
            leases_gone,
            pod_agents: Vec::new(),
            links,
            rules: kernel.rules().await?,
            routes: kernel.routes().await?,
            sysctls: BTreeMap::new(),
            udev_pending,
            names,
            owned_altnames,
        })
    }

    /// Reads the sysctls the plan wants to set, so they can be compared.
    pub fn read_sysctls(&mut self, kernel: &impl Kernel, plan: &Plan) {
        for (key, _) in wanted_sysctls(&plan.links) {
            if let Ok(v) = kernel.read_sysctl(&key) {
                self.sysctls.insert(key, v);
            }
        }
    }

    /// The links the plan may use: a link udev has not finished with (and
    /// may still rename) is not planned for yet; it has nothing of ours, so
    /// nothing is lost.
    ///
    /// A DHCP client's address that vanished a moment ago is shown to the
    /// plan as still there with no lifetime left (`valid_lft` 0): the plan
    /// leaves it to that client rather than adding it.
    pub fn ready_links(&self) -> Vec<Link> {
        let mut links: Vec<Link> = self
            .links
            .iter()
            .filter(|l| !self.udev_pending.contains(&l.index))
            .cloned()
            .collect();
        for (index, addr) in &self.leases_gone {
            if let Some(l) = links.iter_mut().find(|l| l.index == *index) {
                l.addresses.push(crate::values::LinkAddress {
                    addr: *addr,
                    owned: false,
                    valid_lft: Some(0),
                    proto: None,
                });
            }
        }
        links
    }

    pub fn owned_rules(&self, protocol: u8) -> impl Iterator<Item = &Rule> {
        self.rules
            .iter()
            .filter(move |r| r.protocol == protocol && !r.has_other_selectors && !r.not_lookup)
            .map(|r| &r.rule)
    }

    pub fn owned_routes(&self, protocol: u8) -> impl Iterator<Item = &Route> {
        self.routes
            .iter()
            .filter(move |r| r.protocol == protocol)
            .map(|r| &r.route)
    }

    pub fn link(&self, index: u32) -> Option<&Link> {
        self.links.iter().find(|l| l.index == index)
    }

    /// What the agent owns in the kernel once `ops`, carried out after this
    /// snapshot was read, are in: counted from the snapshot rather than
    /// from another full read, which the reconcile skips when every change
    /// went in.
    pub fn owned_after(&self, protocol: u8, ops: &[Op]) -> Owned {
        let mut rules: BTreeSet<&Rule> = self.owned_rules(protocol).collect();
        // A replace fills a slot, whoever held it before.
        let mut routes: BTreeSet<(u32, IpNet)> =
            self.owned_routes(protocol).map(Route::key).collect();
        let mut addresses: BTreeSet<(u32, IpNet)> = self
            .links
            .iter()
            .flat_map(|l| {
                l.addresses
                    .iter()
                    .filter(|a| a.owned)
                    .map(move |a| (l.index, a.addr))
            })
            .collect();
        for op in ops {
            match op {
                Op::AddRule(r) => {
                    rules.insert(r);
                }
                Op::DelRule(r) => {
                    rules.remove(r);
                }
                Op::AddRoute(r) | Op::ReplaceRoute(r) => {
                    routes.insert(r.key());
                }
                Op::DelRoute(r) => {
                    routes.remove(&r.key());
                }
                Op::AddAddress(a) | Op::AdoptAddress(a) => {
                    addresses.insert((a.index, a.address));
                }
                Op::DelAddress(a) => {
                    addresses.remove(&(a.index, a.address));
                }
                _ => {}
            }
        }
        Owned {
            rules: rules.len(),
            routes: routes.len(),
            addresses: addresses.len(),
        }
    }
}

/// How many rules, routes and addresses of the agent's the kernel holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Owned {
    pub rules: usize,
    pub routes: usize,
    pub addresses: usize,
}

/// The sysctls the plan sets on its links, with the values it wants.
pub fn wanted_sysctls(links: &[LinkSettings]) -> Vec<(Sysctl, String)> {
    let mut out = Vec::new();
    for l in links {
        if let Some(fwd) = l.forwarding {
            out.push((
                Sysctl::ipv4_conf(&l.dev, "forwarding"),
                if fwd { "1" } else { "0" }.to_string(),
            ));
        }
        if let Some(rp) = l.rp_filter {
            out.push((
                Sysctl::ipv4_conf(&l.dev, "rp_filter"),
                rp.sysctl_value().to_string(),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::{Address, Family, LinkAddress};

    const PROTO: u8 = 233;

    fn rule(from: &str, table: u32) -> Rule {
        Rule {
            family: Family::Ipv4,
            priority: table,
            from: Some(from.parse().unwrap()),
            table,
            suppress_ifgroup: None,
        }
    }

    fn route(dst: &str, table: u32, gateway: &str) -> Route {
        Route {
            table,
            dst: dst.parse().unwrap(),
            gateway: Some(gateway.parse().unwrap()),
            dev: "eth1".into(),
            oif: 3,
            src: None,
        }
    }

    fn address(addr: &str) -> Address {
        Address {
            index: 3,
            dev: "eth1".into(),
            address: addr.parse().unwrap(),
            noprefixroute: true,
        }
    }

    #[test]
    fn owned_counts_follow_the_changes_made_after_the_read() {
        let current = Current {
            links: vec![Link {
                index: 3,
                name: "eth1".into(),
                mac: None,
                up: true,
                group: 10000,
                mtu: 1500,
                addresses: vec![
                    // DHCP's, not ours.
                    LinkAddress {
                        addr: "10.0.2.20/24".parse().unwrap(),
                        owned: false,
                        valid_lft: Some(3600),
                        proto: None,
                    },
                    LinkAddress {
                        addr: "10.0.2.21/32".parse().unwrap(),
                        owned: true,
                        valid_lft: None,
                        proto: None,
                    },
                ],
            }],
            rules: vec![
                KernelRule {
                    rule: rule("10.0.2.20/32", 10001),
                    protocol: PROTO,
                    has_other_selectors: false,
                    not_lookup: false,
                },
                // networkd's.
                KernelRule {
                    rule: rule("10.0.2.21/32", 10001),
                    protocol: 4,
                    has_other_selectors: false,
                    not_lookup: false,
                },
            ],
            routes: vec![KernelRoute {
                route: route("0.0.0.0/0", 10001, "10.0.2.1"),
                protocol: 16,
                metric: 512,
            }],
            ..Current::default()
        };
        assert_eq!(
            current.owned_after(PROTO, &[]),
            Owned {
                rules: 1,
                routes: 0,
                addresses: 1
            }
        );
        let ops = [
            Op::AddRule(rule("10.0.2.21/32", 10001)),
            // Fills the slot DHCP's default route held.
            Op::ReplaceRoute(route("0.0.0.0/0", 10001, "10.0.2.1")),
            Op::AddRoute(route("10.0.2.0/24", 10001, "10.0.2.1")),
            Op::AdoptAddress(address("10.0.2.22/32")),
            Op::DelAddress(address("10.0.2.21/32")),
            Op::DelRule(rule("10.0.2.20/32", 10001)),
        ];
        assert_eq!(
            current.owned_after(PROTO, &ops),
            Owned {
                rules: 1,
                routes: 2,
                addresses: 1
            }
        );
    }
}
