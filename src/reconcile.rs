//! The reconciler: compares the plan with what the kernel has, and applies
//! the difference in an order that never blackholes traffic.
//!
//! Order: links up (a gateway route on a down link is refused), sysctls,
//! addresses, routes, rules are added first; only then are stale rules,
//! routes and addresses removed. A rule therefore never points at a table
//! that is still empty, and a route never points at an address that is not
//! there yet.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use ipnet::IpNet;
use serde::Serialize;

use crate::netlink::{Kernel, LinkChange, NetlinkError};
use crate::plan::Plan;
use crate::routing::{Address, KernelRoute, KernelRule, Link, LinkSettings, Route, Rule};
use crate::sysctl::{self, Sysctl};

/// What the kernel has now, as far as the reconciler cares.
#[derive(Debug, Clone, Default)]
pub struct Current {
    pub links: Vec<Link>,
    pub rules: Vec<KernelRule>,
    pub routes: Vec<KernelRoute>,
    /// Current values of the sysctls the plan sets.
    pub sysctls: BTreeMap<Sysctl, String>,
}

impl Current {
    /// Reads the kernel. `recorded` are addresses the state file says the
    /// agent added (for kernels that do not keep `IFA_PROTO`).
    pub async fn read(
        kernel: &impl Kernel,
        recorded: &BTreeSet<(u32, IpNet)>,
    ) -> Result<Current, NetlinkError> {
        let mut links = kernel.links().await?;
        for link in &mut links {
            for a in &mut link.addresses {
                a.owned |= recorded.contains(&(link.index, a.addr));
            }
        }
        Ok(Current {
            links,
            rules: kernel.rules().await?,
            routes: kernel.routes().await?,
            sysctls: BTreeMap::new(),
        })
    }

    /// Reads the sysctls the plan wants to set, so they can be compared.
    pub fn read_sysctls(&mut self, plan: &Plan) {
        for s in wanted_sysctls(&plan.links) {
            if let Ok(v) = sysctl::read(&s.0) {
                self.sysctls.insert(s.0, v);
            }
        }
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
}

/// One change to the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "op")]
pub enum Op {
    SetLink {
        index: u32,
        dev: String,
        up: bool,
        group: Option<u32>,
        mtu: Option<u32>,
    },
    SetSysctl {
        key: String,
        value: String,
    },
    AddAddress(Address),
    AddRoute(Route),
    ReplaceRoute(Route),
    AddRule(Rule),
    DelRule(Rule),
    DelRoute(Route),
    DelAddress(Address),
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::SetLink {
                dev,
                up,
                group,
                mtu,
                ..
            } => {
                write!(f, "~ link {dev}")?;
                if *up {
                    write!(f, " up")?;
                }
                if let Some(g) = group {
                    write!(f, " group {g}")?;
                }
                if let Some(m) = mtu {
                    write!(f, " mtu {m}")?;
                }
                Ok(())
            }
            Op::SetSysctl { key, value } => write!(f, "~ sysctl {key}={value}"),
            Op::AddAddress(a) => write!(f, "+ {a}"),
            Op::AddRoute(r) => write!(f, "+ {r}"),
            Op::ReplaceRoute(r) => write!(f, "~ {r}"),
            Op::AddRule(r) => write!(f, "+ {r}"),
            Op::DelRule(r) => write!(f, "- {r}"),
            Op::DelRoute(r) => write!(f, "- {r}"),
            Op::DelAddress(a) => write!(f, "- {a}"),
        }
    }
}

/// What the reconciler may remove. Removal needs complete knowledge: while
/// metadata for some ENI is unknown or still settling, nothing is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletes {
    Allowed,
    Withheld,
}

/// Parameters of ownership.
#[derive(Debug, Clone, Copy)]
pub struct Ownership {
    pub protocol: u8,
    pub ifgroup: u32,
}

fn wanted_sysctls(links: &[LinkSettings]) -> Vec<(Sysctl, String)> {
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

/// The ordered list of changes that turns `current` into `plan`.
pub fn diff(plan: &Plan, current: &Current, own: Ownership, deletes: Deletes) -> Vec<Op> {
    let mut ops = Vec::new();

    // Links: up, in our group, with the configured MTU.
    for want in &plan.links {
        let Some(link) = current.link(want.index) else {
            continue;
        };
        let group = (link.group != want.group).then_some(want.group);
        let mtu = want.mtu.filter(|m| *m != link.mtu);
        if !link.up || group.is_some() || mtu.is_some() {
            ops.push(Op::SetLink {
                index: link.index,
                dev: link.name.clone(),
                up: true,
                group,
                mtu,
            });
        }
    }
    for (key, value) in wanted_sysctls(&plan.links) {
        if current.sysctls.get(&key) != Some(&value) {
            ops.push(Op::SetSysctl {
                key: key.to_string(),
                value,
            });
        }
    }

    // Addresses present on the link with the same IP and prefix count as
    // there, whoever added them.
    let present: BTreeSet<(u32, IpNet)> = current
        .links
        .iter()
        .flat_map(|l| l.addresses.iter().map(|a| (l.index, a.addr)))
        .collect();
    for a in &plan.addresses {
        if !present.contains(&(a.index, a.address)) && current.link(a.index).is_some() {
            ops.push(Op::AddAddress(a.clone()));
        }
    }

    let owned_routes: Vec<&Route> = current.owned_routes(own.protocol).collect();
    let foreign_keys: BTreeSet<(u32, IpNet)> = current
        .routes
        .iter()
        .filter(|r| r.protocol != own.protocol)
        .map(|r| r.route.key())
        .collect();
    for r in &plan.routes {
        match owned_routes.iter().find(|o| o.key() == r.key()) {
            Some(o) if o.same_as(r) => {}
            Some(_) => ops.push(Op::ReplaceRoute(r.clone())),
            // Someone else's route already fills this slot: it is theirs,
            // and `status` reports the conflict.
            None if foreign_keys.contains(&r.key()) => {}
            None => ops.push(Op::AddRoute(r.clone())),
        }
    }

    let owned_rules: BTreeSet<&Rule> = current.owned_rules(own.protocol).collect();
    for r in &plan.rules {
        if !owned_rules.contains(r) {
            ops.push(Op::AddRule(r.clone()));
        }
    }

    if deletes == Deletes::Withheld {
        return ops;
    }
    let wanted_rules: BTreeSet<&Rule> = plan.rules.iter().collect();
    // A rule the kernel holds twice (added by an older run that crashed
    // between write and record) is removed down to one copy.
    let mut seen = BTreeSet::new();
    for r in current.owned_rules(own.protocol) {
        if !wanted_rules.contains(r) || !seen.insert(r) {
            ops.push(Op::DelRule(r.clone()));
        }
    }
    let wanted_routes: BTreeSet<(u32, IpNet)> = plan.routes.iter().map(Route::key).collect();
    for r in owned_routes {
        if !wanted_routes.contains(&r.key()) {
            ops.push(Op::DelRoute(r.clone()));
        }
    }
    let wanted_addrs: BTreeSet<(u32, IpNet)> =
        plan.addresses.iter().map(|a| (a.index, a.address)).collect();
    let excluded: BTreeSet<u32> = plan
        .enis
        .iter()
        .filter(|e| e.status == crate::plan::EniStatus::Excluded)
        .filter_map(|e| e.index)
        .collect();
    for link in &current.links {
        if excluded.contains(&link.index) {
            continue;
        }
        for a in link.addresses.iter().filter(|a| a.owned) {
            if !wanted_addrs.contains(&(link.index, a.addr)) {
                ops.push(Op::DelAddress(Address {
                    index: link.index,
                    dev: link.name.clone(),
                    address: a.addr,
                    noprefixroute: false,
                }));
            }
        }
    }
    // A link that left management (its ENI excluded or gone from metadata
    // while the link stays) leaves our group, so main decides for it again.
    let managed: BTreeSet<u32> = plan.links.iter().map(|l| l.index).collect();
    for link in &current.links {
        if link.group == own.ifgroup && !managed.contains(&link.index) {
            ops.push(Op::SetLink {
                index: link.index,
                dev: link.name.clone(),
                up: link.up,
                group: Some(0),
                mtu: None,
            });
        }
    }
    ops
}

/// The outcome of applying a diff.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Applied {
    /// Changes made, in order.
    pub ops: Vec<Op>,
    /// Netlink and sysctl writes performed (a no-op reconcile makes none).
    pub writes: usize,
    /// Changes that failed for reasons other than a race; the rest went on.
    pub errors: Vec<String>,
    /// Addresses added and removed, for the state file.
    #[serde(skip)]
    pub added_addresses: Vec<(u32, IpNet)>,
    #[serde(skip)]
    pub removed_addresses: Vec<(u32, IpNet)>,
}

/// Applies `ops` in order. A race (the object already exists, or is already
/// gone) is not an error: it means someone else got there first, and the
/// caller's next read will see it. Other failures are collected and the
/// remaining changes still go in, so one bad object never stops the rest.
pub async fn apply(kernel: &impl Kernel, ops: Vec<Op>) -> Applied {
    let mut out = Applied::default();
    for op in ops {
        out.writes += 1;
        let result = match &op {
            Op::SetLink {
                index,
                up,
                group,
                mtu,
                ..
            } => {
                kernel
                    .set_link(
                        *index,
                        &LinkChange {
                            up: *up,
                            group: *group,
                            mtu: *mtu,
                        },
                    )
                    .await
            }
            Op::SetSysctl { key, value } => sysctl::write(key, value).map_err(|e| NetlinkError {
                call: "sysctl",
                object: key.clone(),
                errno: e.raw_os_error(),
                message: e.to_string(),
            }),
            Op::AddAddress(a) => kernel.add_address(a).await,
            Op::AddRoute(r) => kernel.add_route(r).await,
            Op::ReplaceRoute(r) => kernel.replace_route(r).await,
            Op::AddRule(r) => kernel.add_rule(r).await,
            Op::DelRule(r) => kernel.del_rule(r).await,
            Op::DelRoute(r) => kernel.del_route(r).await,
            Op::DelAddress(a) => kernel.del_address(a.index, a.address).await,
        };
        match result {
            Ok(()) => {
                match &op {
                    Op::AddAddress(a) => out.added_addresses.push((a.index, a.address)),
                    Op::DelAddress(a) => out.removed_addresses.push((a.index, a.address)),
                    _ => {}
                }
                out.ops.push(op);
            }
            Err(e) if e.is_race() => {
                tracing::debug!("{op}: {e} (raced with another change; re-reading)");
            }
            Err(e) => out.errors.push(e.to_string()),
        }
    }
    out
}

/// Removes everything the agent owns: its rules, its routes, the addresses
/// it added, and its interface group. Nothing else.
pub fn teardown(current: &Current, own: Ownership) -> Vec<Op> {
    let mut ops: Vec<Op> = current
        .owned_rules(own.protocol)
        .map(|r| Op::DelRule(r.clone()))
        .collect();
    ops.extend(current.owned_routes(own.protocol).map(|r| Op::DelRoute(r.clone())));
    for link in &current.links {
        for a in link.addresses.iter().filter(|a| a.owned) {
            ops.push(Op::DelAddress(Address {
                index: link.index,
                dev: link.name.clone(),
                address: a.addr,
                noprefixroute: false,
            }));
        }
        if link.group == own.ifgroup {
            ops.push(Op::SetLink {
                index: link.index,
                dev: link.name.clone(),
                up: link.up,
                group: Some(0),
                mtu: None,
            });
        }
    }
    ops
}
