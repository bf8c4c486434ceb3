//! The reconciler: compares the plan with what the kernel has, and applies
//! the difference in an order that never blackholes traffic.
//!
//! Order: links up (a gateway route on a down link is refused), sysctls,
//! addresses, routes, rules are added first; only then are stale rules,
//! routes and addresses removed. A rule therefore never points at a table
//! that is still empty, and a route never points at an address that is not
//! there yet.

use std::collections::BTreeSet;

use ipnet::IpNet;
use serde::Serialize;

use crate::config::Config;
use crate::imds::model::Instance;
use crate::netlink::{Kernel, NetlinkError};
use crate::plan::{EniStatus, Plan};
use crate::state::AddressRecords;
use crate::values::Mac;
use crate::values::{Address, ForeignRule, KernelRule, Link, Route, Rule, Warning};

pub use crate::change::{apply, Applied, Op};
use crate::snapshot::wanted_sysctls;
pub use crate::snapshot::{Current, Owned};

/// Parameters of ownership.
#[derive(Debug, Clone, Copy)]
pub struct Ownership {
    pub protocol: u8,
    pub ifgroup: u32,
}

impl From<&crate::config::Config> for Ownership {
    fn from(cfg: &crate::config::Config) -> Ownership {
        Ownership {
            protocol: cfg.numbering.protocol,
            ifgroup: cfg.numbering.ifgroup,
        }
    }
}

/// The ordered list of changes that turns `current` into `plan`.
pub fn diff(plan: &Plan, current: &Current, own: Ownership) -> Vec<Op> {
    let mut ops = Vec::new();

    // Links: up, in our group, with the configured MTU.
    for want in &plan.links {
        let Some(link) = current.link(want.index) else {
            continue;
        };
        let group = (link.group != want.group).then_some(want.group);
        let mtu = want.mtu.filter(|m| *m != link.mtu);
        // A link an administrator set down (for maintenance) stays down;
        // one never seen up (a hot-plugged ENI) is brought up.
        let up = !current.held_down.contains(&link.index);
        if (up && !link.up) || group.is_some() || mtu.is_some() {
            ops.push(Op::SetLink {
                index: link.index,
                dev: link.name.clone(),
                up: up || link.up,
                group,
                mtu,
            });
        }
    }
    for (key, value) in wanted_sysctls(&plan.links) {
        if current.sysctls.get(&key) != Some(&value) {
            ops.push(Op::SetSysctl { key, value });
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

    // What amazon-ec2-net-utils left that the plan replaces one for one:
    // ours go in first (a held slot by replace), theirs go last.
    let takeover = crate::coexist::takeover(plan, current, own.protocol);
    let owned_routes: Vec<&Route> = current.owned_routes(own.protocol).collect();
    let foreign_keys: BTreeSet<(u32, IpNet)> = current
        .routes
        .iter()
        .filter(|r| r.protocol != own.protocol)
        .map(|r| r.route.key())
        .collect();
    for r in &plan.routes {
        // The kernel refuses routes through a link that is down; one held
        // down by an administrator gets them back when it comes up.
        if current.held_down.contains(&r.oif) {
            continue;
        }
        match owned_routes.iter().find(|o| o.key() == r.key()) {
            Some(o) if o.same_as(r) => {}
            Some(_) => ops.push(Op::ReplaceRoute(r.clone())),
            None if takeover.replace.contains(&r.key()) => ops.push(Op::ReplaceRoute(r.clone())),
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

    for a in &takeover.addresses {
        ops.push(Op::AdoptAddress(a.clone()));
    }
    for k in &takeover.rules {
        ops.push(Op::DelForeignRule {
            rule: k.rule.clone(),
            protocol: k.protocol,
        });
    }
    for k in &takeover.routes {
        ops.push(Op::DelForeignRoute {
            route: k.route.clone(),
            protocol: k.protocol,
            metric: k.metric,
        });
    }

    // Removal. Objects of links whose ENI is uncertain or excluded stay:
    // unknown never deletes. A rule belongs to such a link when its table
    // routes through it.
    let keep_links: BTreeSet<u32> = plan
        .uncertain_links()
        .union(&plan.excluded_links())
        .chain(&current.held_down)
        .copied()
        .collect();
    let keep_tables: BTreeSet<u32> = current
        .routes
        .iter()
        .filter(|r| keep_links.contains(&r.route.oif) && r.route.table != crate::values::MAIN_TABLE)
        .map(|r| r.route.table)
        .collect();
    let wanted_rules: BTreeSet<&Rule> = plan.rules.iter().collect();
    // A rule the kernel holds twice (left by a run that died between write
    // and re-read) is removed down to one copy.
    let mut seen = BTreeSet::new();
    for r in current.owned_rules(own.protocol) {
        let first = seen.insert(r);
        if wanted_rules.contains(r) && first {
            continue;
        }
        if first && keep_tables.contains(&r.table) {
            continue;
        }
        ops.push(Op::DelRule(r.clone()));
    }
    let wanted_routes: BTreeSet<(u32, IpNet)> = plan.routes.iter().map(Route::key).collect();
    for r in owned_routes {
        if !wanted_routes.contains(&r.key()) && !keep_links.contains(&r.oif) {
            ops.push(Op::DelRoute(r.clone()));
        }
    }
    let wanted_addrs: BTreeSet<(u32, IpNet)> = plan
        .addresses
        .iter()
        .map(|a| (a.index, a.address))
        .collect();
    for link in current
        .links
        .iter()
        .filter(|l| !keep_links.contains(&l.index))
    {
        for a in link.addresses.iter().filter(|a| a.owned) {
            if !wanted_addrs.contains(&(link.index, a.addr)) {
                ops.push(del_address(link, a.addr));
            }
        }
    }
    // A link that left management (its ENI gone from metadata while the
    // link stays) leaves our group, so main decides for it again.
    let managed: BTreeSet<u32> = plan.links.iter().map(|l| l.index).collect();
    for link in &current.links {
        if link.group == own.ifgroup
            && !managed.contains(&link.index)
            && !keep_links.contains(&link.index)
        {
            ops.push(leave_group(link));
        }
    }
    ops
}

/// Removes an address the agent added.
fn del_address(link: &Link, address: IpNet) -> Op {
    Op::DelAddress(Address {
        index: link.index,
        dev: link.name.clone(),
        address,
        noprefixroute: false,
    })
}

/// Takes a link out of the managed group (back to the kernel's default, 0),
/// leaving its admin state as it is.
fn leave_group(link: &Link) -> Op {
    Op::SetLink {
        index: link.index,
        dev: link.name.clone(),
        up: link.up,
        group: Some(0),
        mtu: None,
    }
}

/// Removes everything the agent owns: its rules, its routes, the addresses
/// it added, and its interface group. Nothing else.
pub fn teardown(current: &Current, own: Ownership) -> Vec<Op> {
    let mut ops: Vec<Op> = current
        .owned_rules(own.protocol)
        .map(|r| Op::DelRule(r.clone()))
        .collect();
    ops.extend(
        current
            .owned_routes(own.protocol)
            .map(|r| Op::DelRoute(r.clone())),
    );
    for link in &current.links {
        for a in link.addresses.iter().filter(|a| a.owned) {
            ops.push(del_address(link, a.addr));
        }
        if link.group == own.ifgroup {
            ops.push(leave_group(link));
        }
    }
    ops
}

/// Rules of others, consulted before an ENI's own (priority at most its
/// table's), that send one of its source addresses to another table or
/// nowhere: the agent's rules are right but never reached. Reported, never
/// changed.
pub fn foreign_rules_ahead(
    sources: &[IpNet],
    table: u32,
    rules: &[KernelRule],
    protocol: u8,
) -> Vec<ForeignRule> {
    // At the same priority the kernel consults rules in the order they
    // were added, which is the order it lists them in: a foreign rule added
    // after the agent's own is never reached for that source.
    let ours_at = |s: &IpNet| {
        rules.iter().position(|k| {
            k.protocol == protocol
                && k.rule.table == table
                && k.rule.priority == table
                && k.rule.from.is_some_and(|f| f.contains(&s.addr()))
        })
    };
    rules
        .iter()
        .enumerate()
        .filter(|(_, k)| k.protocol != protocol)
        .filter(|(_, k)| k.rule.table != table && k.rule.priority <= table)
        .filter(|(i, k)| match k.rule.from {
            Some(from) => sources.iter().any(|s| {
                from.contains(&s.addr())
                    && (k.rule.priority < table || ours_at(s).is_none_or(|j| *i < j))
            }),
            None => false,
        })
        .map(|(_, k)| ForeignRule {
            rule: k.rule.clone(),
            protocol: k.protocol,
        })
        .collect()
}

/// What the host needs, for one instance's metadata and configuration:
/// the one answer `plan`, `status`, `apply` and the daemon all work from.
#[derive(Debug, Clone, Default)]
pub struct Assessment {
    pub plan: Plan,
    /// The ordered changes that bring the host to the plan.
    pub changes: Vec<Op>,
    /// Foreign rules that take a managed ENI's traffic before its own rules
    /// (see [`foreign_rules_ahead`]), and routes and rules of others in the
    /// agent's table range (see [`crate::coexist::foreign_in_range`]), one
    /// message each.
    pub conflicts: Vec<Warning>,
    /// MACs of links that metadata does not list (yet): a hot-plugged ENI
    /// shows up in the kernel before it shows up in metadata.
    pub unknown_macs: Vec<Mac>,
    /// Links left out because udev has not initialised them yet. udev
    /// finishing sends no netlink event unless it renames the link, so a
    /// caller that wants them configured must look again by itself.
    pub udev_pending: Vec<u32>,
}

/// The pure core: metadata, a host snapshot and the configuration in; the
/// plan, the changes, the conflicts and the links still waiting out.
pub fn assess(instance: &Instance, current: &Current, config: &Config) -> Assessment {
    let own = Ownership::from(config);
    let ready = current.ready_links();
    let config = &effective(config, current);
    let mut plan = crate::plan::plan(instance, &ready, config);
    let mut changes = diff(&plan, current, own);
    // Names last: no traffic depends on them.
    let (altnames, warnings) = crate::altname::diff(&plan, &current.names, &current.owned_altnames);
    changes.extend(altnames);
    plan.warnings.extend(warnings);
    let unknown_macs = ready
        .iter()
        .filter_map(|l| l.mac)
        .filter(|m| {
            m.octets() != [0; 6] && instance.get(*m).is_none() && !instance.unread.contains(m)
        })
        .collect();
    let mut conflicts: Vec<Warning> = plan
        .enis
        .iter()
        .filter(|e| e.status == EniStatus::Managed)
        .filter_map(|e| Some((e, e.table?)))
        .flat_map(|(e, table)| {
            foreign_rules_ahead(&e.addresses, table, &current.rules, own.protocol)
                .into_iter()
                .map(move |rule| Warning::RuleAhead {
                    eni: e.interface_id.clone().unwrap_or_else(|| "?".into()),
                    dev: e.dev.clone().unwrap_or_else(|| "?".into()),
                    rule,
                    table,
                })
        })
        .collect();
    let takeover = crate::coexist::takeover(&plan, current, own.protocol);
    conflicts.extend(crate::coexist::foreign_in_range(
        &plan, current, config, &takeover,
    ));
    Assessment {
        plan,
        changes,
        conflicts,
        unknown_macs,
        udev_pending: current.udev_pending.clone(),
    }
}

/// The configuration as it applies on this host: `auto` for the primary
/// ENI's secondary addresses becomes `leave` where an agent that gives them
/// to pods or tasks was found, `assign` elsewhere.
fn effective(config: &Config, current: &Current) -> Config {
    let mut config = config.clone();
    config.selection.primary_secondary_ips =
        crate::pods::resolve(config.selection.primary_secondary_ips, &current.pod_agents);
    config
}

/// Reads the host as far as [`assess`] needs it for this instance: links,
/// rules, routes, udev's progress, and the sysctls the plan sets.
pub async fn observe(
    kernel: &impl Kernel,
    records: &AddressRecords,
    instance: &Instance,
    config: &Config,
) -> Result<Current, NetlinkError> {
    let mut current = Current::read(kernel, records).await?;
    current.detect_pod_agents(config.numbering.protocol);
    let plan = crate::plan::plan(instance, &current.ready_links(), config);
    current.read_sysctls(kernel, &plan);
    Ok(current)
}

/// The result of one reconcile.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Outcome {
    pub plan: Plan,
    pub applied: Applied,
    /// Read → diff → apply rounds; more than one means something raced.
    pub passes: usize,
    /// See [`Assessment::unknown_macs`].
    #[serde(skip)]
    pub unknown_macs: Vec<Mac>,
    /// See [`Assessment::conflicts`].
    pub conflicts: Vec<Warning>,
    /// See [`Assessment::udev_pending`].
    #[serde(skip)]
    pub udev_pending: Vec<u32>,
    /// What the agent owns in the kernel afterwards.
    #[serde(skip)]
    pub owned: Owned,
}

impl Outcome {
    /// This reconcile followed by `next`: `next`'s view of the host, the
    /// changes of both.
    pub fn then(self, next: Outcome) -> Outcome {
        let mut applied = self.applied;
        applied.writes += next.applied.writes;
        applied.ops.extend(next.applied.ops);
        applied.errors.extend(next.applied.errors);
        applied.added_addresses.extend(next.applied.added_addresses);
        applied
            .removed_addresses
            .extend(next.applied.removed_addresses);
        Outcome {
            applied,
            passes: self.passes + next.passes,
            ..next
        }
    }
}

/// A failed change's message with the ENI it concerns in front, found by
/// the link (`dev eth1`) or the table (`lookup 10001`, `table 10001`) that
/// the object it names has.
fn with_eni(error: String, plan: &Plan) -> String {
    let eni = plan.enis.iter().find(|e| {
        e.dev
            .as_deref()
            .is_some_and(|d| names(&error, &format!("dev {d}")))
            || e.table.is_some_and(|t| {
                names(&error, &format!("lookup {t}")) || names(&error, &format!("table {t}"))
            })
    });
    match eni {
        Some(e) => {
            let id = e.interface_id.clone().unwrap_or_else(|| e.mac.to_string());
            match &e.dev {
                Some(dev) => format!("ENI {id} ({dev}): {error}"),
                None => format!("ENI {id}: {error}"),
            }
        }
        None => error,
    }
}

/// Whether `text` holds `word` as a whole (`dev eth1` is not in `dev eth10`).
fn names(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(i, _)| {
        text[i + word.len()..]
            .chars()
            .next()
            .is_none_or(|c| c.is_whitespace() || matches!(c, ':' | ')' | ',' | ';'))
    })
}

/// Brings the host to the plan for `instance`: observe, assess, apply, and
/// again while races leave something undone (bounded). A pass that finds
/// nothing to change writes nothing.
pub async fn reconcile(
    kernel: &impl Kernel,
    instance: &Instance,
    config: &Config,
    records: &mut AddressRecords,
) -> Result<Outcome, NetlinkError> {
    let mut out = Outcome::default();
    const MAX_PASSES: usize = 4;
    while out.passes < MAX_PASSES {
        out.passes += 1;
        let current = observe(kernel, records, instance, config).await?;
        if let Err(e) = records.note_links(&current.links) {
            out.applied.errors.push(e.to_string());
        }
        if let Err(e) = records.note_leases(&current.links) {
            out.applied.errors.push(e.to_string());
        }
        let a = assess(instance, &current, config);
        out.unknown_macs = a.unknown_macs;
        out.conflicts = a.conflicts;
        out.udev_pending = a.udev_pending;
        out.plan = a.plan;
        if a.changes.is_empty() {
            out.owned = current.owned_after(config.numbering.protocol, &[]);
            break;
        }
        let wanted = a.changes.len();
        let applied = apply(kernel, a.changes).await;
        let done = applied.ops.len() + applied.errors.len();
        if let Err(e) = records.update(
            &current.links,
            &applied.added_addresses,
            &applied.removed_addresses,
        ) {
            out.applied.errors.push(e.to_string());
        }
        if let Err(e) = crate::altname::record(records.dir(), &current.names, &out.plan, &applied) {
            out.applied.errors.push(e.to_string());
        }
        out.owned = current.owned_after(config.numbering.protocol, &applied.ops);
        out.applied.writes += applied.writes;
        out.applied.ops.extend(applied.ops);
        out.applied.failed.extend(applied.failed);
        out.applied
            .errors
            .extend(applied.errors.into_iter().map(|e| with_eni(e, &out.plan)));
        // Every change went in or failed for good: the kernel now matches
        // the plan, and one more read would only prove it.
        if done == wanted {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::Config;
    use crate::imds::{parse, tree};
    use crate::netlink::LinkChange;
    use crate::sysctl::{Sysctl, SysctlError};
    use crate::values::{KernelRoute, LinkAddress};

    mod prop;

    /// An in-memory host: enough to test the diff's ordering, idempotence
    /// and ownership without root, and without reading this machine's udev
    /// database or sysctls.
    #[derive(Default)]
    struct FakeKernel {
        links: RefCell<Vec<Link>>,
        rules: RefCell<Vec<KernelRule>>,
        routes: RefCell<Vec<KernelRoute>>,
        altnames: RefCell<BTreeMap<u32, Vec<String>>>,
        /// Links udev has not initialised.
        udev_pending: RefCell<BTreeSet<u32>>,
        sysctls: RefCell<BTreeMap<Sysctl, String>>,
        /// /proc/sys refuses writes (read-only, as in some containers).
        sysctls_read_only: std::cell::Cell<bool>,
        log: RefCell<Vec<String>>,
        /// Additions whose line (as `log` writes it) starts with one of
        /// these fail with EPERM, a failure that is not a race.
        refuse: RefCell<Vec<String>>,
    }

    impl FakeKernel {
        fn refuses(&self, call: &'static str, line: String) -> Result<(), NetlinkError> {
            if self.refuse.borrow().iter().any(|r| line.starts_with(r)) {
                return Err(NetlinkError {
                    call,
                    object: line[2..].to_string(),
                    errno: Some(nix::errno::Errno::EPERM),
                    message: "Operation not permitted".into(),
                });
            }
            Ok(())
        }
    }

    /// A host that never announces a change.
    struct NoEvents;

    impl crate::netlink::EventSource for NoEvents {
        async fn next(&mut self) -> Result<crate::netlink::Change, NetlinkError> {
            std::future::pending().await
        }
    }

    const PROTO: u8 = 233;

    fn exists(call: &'static str, object: String) -> NetlinkError {
        NetlinkError {
            call,
            object,
            errno: Some(nix::errno::Errno::EEXIST),
            message: "exists".into(),
        }
    }

    impl Kernel for FakeKernel {
        async fn links(&self) -> Result<Vec<Link>, NetlinkError> {
            Ok(self.links.borrow().clone())
        }
        async fn rules(&self) -> Result<Vec<KernelRule>, NetlinkError> {
            Ok(self.rules.borrow().clone())
        }
        async fn routes(&self) -> Result<Vec<KernelRoute>, NetlinkError> {
            Ok(self.routes.borrow().clone())
        }
        async fn add_address(&self, a: &Address) -> Result<(), NetlinkError> {
            self.refuses("RTM_NEWADDR", format!("+ {a}"))?;
            self.log.borrow_mut().push(format!("+ {a}"));
            let mut links = self.links.borrow_mut();
            let link = links.iter_mut().find(|l| l.index == a.index).unwrap();
            link.addresses.push(LinkAddress {
                addr: a.address,
                owned: true,
                valid_lft: None,
                proto: None,
            });
            Ok(())
        }
        async fn del_address(&self, index: u32, addr: IpNet) -> Result<(), NetlinkError> {
            self.log.borrow_mut().push(format!("- address {addr}"));
            let mut links = self.links.borrow_mut();
            let link = links.iter_mut().find(|l| l.index == index).unwrap();
            link.addresses.retain(|a| a.addr != addr);
            Ok(())
        }
        async fn add_route(&self, r: &Route) -> Result<(), NetlinkError> {
            if self.routes.borrow().iter().any(|k| {
                k.route.key() == r.key() && k.metric == crate::values::default_metric(&r.dst)
            }) {
                return Err(exists("RTM_NEWROUTE", r.to_string()));
            }
            self.refuses("RTM_NEWROUTE", format!("+ {r}"))?;
            self.log.borrow_mut().push(format!("+ {r}"));
            self.routes.borrow_mut().push(KernelRoute {
                route: r.clone(),
                protocol: PROTO,
                metric: crate::values::default_metric(&r.dst),
            });
            Ok(())
        }
        async fn replace_route(&self, r: &Route) -> Result<(), NetlinkError> {
            self.log.borrow_mut().push(format!("~ {r}"));
            let mut routes = self.routes.borrow_mut();
            let metric = crate::values::default_metric(&r.dst);
            routes.retain(|k| !(k.route.key() == r.key() && k.metric == metric));
            routes.push(KernelRoute {
                route: r.clone(),
                protocol: PROTO,
                metric,
            });
            Ok(())
        }
        async fn del_route(&self, r: &Route) -> Result<(), NetlinkError> {
            self.log.borrow_mut().push(format!("- {r}"));
            self.routes
                .borrow_mut()
                .retain(|k| !(k.route.key() == r.key() && k.protocol == PROTO));
            Ok(())
        }
        async fn add_rule(&self, r: &Rule) -> Result<(), NetlinkError> {
            self.refuses("RTM_NEWRULE", format!("+ {r}"))?;
            self.log.borrow_mut().push(format!("+ {r}"));
            self.rules.borrow_mut().push(KernelRule {
                rule: r.clone(),
                protocol: PROTO,
                has_other_selectors: false,
                not_lookup: false,
            });
            Ok(())
        }
        async fn del_rule(&self, r: &Rule) -> Result<(), NetlinkError> {
            self.log.borrow_mut().push(format!("- {r}"));
            let mut rules = self.rules.borrow_mut();
            if let Some(i) = rules
                .iter()
                .position(|k| &k.rule == r && k.protocol == PROTO)
            {
                rules.remove(i);
            }
            Ok(())
        }
        async fn link_names(&self) -> Result<Vec<crate::netlink::LinkNames>, NetlinkError> {
            let altnames = self.altnames.borrow();
            Ok(self
                .links
                .borrow()
                .iter()
                .map(|l| crate::netlink::LinkNames {
                    index: l.index,
                    name: l.name.clone(),
                    mac: l.mac,
                    altnames: altnames.get(&l.index).cloned().unwrap_or_default(),
                })
                .collect())
        }
        async fn set_altname(&self, index: u32, name: &str, add: bool) -> Result<(), NetlinkError> {
            let sign = if add { '+' } else { '-' };
            self.log
                .borrow_mut()
                .push(format!("{sign} altname {name} on {index}"));
            let mut all = self.altnames.borrow_mut();
            if add {
                // As the kernel: one name, once per namespace.
                let taken = all.values().flatten().any(|a| a == name)
                    || self.links.borrow().iter().any(|l| l.name == name);
                if taken {
                    return Err(exists("RTM_NEWLINKPROP", name.to_string()));
                }
                all.entry(index).or_default().push(name.to_string());
            } else {
                all.entry(index).or_default().retain(|a| a != name);
            }
            Ok(())
        }
        async fn del_foreign_rule(&self, r: &Rule, protocol: u8) -> Result<(), NetlinkError> {
            self.log
                .borrow_mut()
                .push(format!("- {r} proto {protocol}"));
            let mut rules = self.rules.borrow_mut();
            if let Some(i) = rules
                .iter()
                .position(|k| &k.rule == r && k.protocol == protocol)
            {
                rules.remove(i);
            }
            Ok(())
        }
        async fn del_foreign_route(&self, r: &KernelRoute) -> Result<(), NetlinkError> {
            self.log
                .borrow_mut()
                .push(format!("- {} proto {}", r.route, r.protocol));
            self.routes.borrow_mut().retain(|k| k != r);
            Ok(())
        }
        async fn set_link(&self, index: u32, c: &LinkChange) -> Result<(), NetlinkError> {
            self.log.borrow_mut().push(format!("~ link {index}"));
            let mut links = self.links.borrow_mut();
            let link = links.iter_mut().find(|l| l.index == index).unwrap();
            link.up = c.up;
            if let Some(g) = c.group {
                link.group = g;
            }
            Ok(())
        }
        fn udev_initialised(&self, index: u32) -> bool {
            !self.udev_pending.borrow().contains(&index)
        }
        fn read_sysctl(&self, key: &Sysctl) -> Result<String, SysctlError> {
            // Every interface sysctl reads 0 until written, like a new link's.
            Ok(self
                .sysctls
                .borrow()
                .get(key)
                .cloned()
                .unwrap_or_else(|| "0".into()))
        }
        fn write_sysctl(&self, key: &Sysctl, value: &str) -> Result<(), SysctlError> {
            if self.sysctls_read_only.get() {
                return Err(SysctlError::Write {
                    key: key.clone(),
                    value: value.into(),
                    source: std::io::Error::from_raw_os_error(30),
                });
            }
            self.log
                .borrow_mut()
                .push(format!("~ sysctl {key}={value}"));
            self.sysctls
                .borrow_mut()
                .insert(key.clone(), value.to_string());
            Ok(())
        }
        type Events = NoEvents;
        fn events(&self) -> Result<NoEvents, NetlinkError> {
            Ok(NoEvents)
        }
    }

    fn fixture(name: &str) -> crate::imds::model::Instance {
        let path = format!(
            "{}/tests/fixtures/imds/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let tree: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        parse::instance_from(|p| tree::lookup(&tree, p)).unwrap()
    }

    fn kernel_with_links() -> FakeKernel {
        let k = FakeKernel::default();
        *k.links.borrow_mut() = vec![
            Link {
                index: 2,
                name: "eth0".into(),
                mac: Some("0a:00:00:00:00:01".parse().unwrap()),
                up: true,
                group: 0,
                mtu: 9001,
                addresses: vec![LinkAddress {
                    addr: "10.0.1.10/24".parse().unwrap(),
                    owned: false,
                    valid_lft: None,
                    proto: None,
                }],
            },
            Link {
                index: 3,
                name: "eth1".into(),
                mac: Some("0a:00:00:00:00:02".parse().unwrap()),
                up: false,
                group: 0,
                mtu: 9001,
                addresses: vec![],
            },
        ];
        // A rule someone else owns, which must survive everything.
        k.rules.borrow_mut().push(KernelRule {
            rule: Rule {
                family: crate::values::Family::Ipv4,
                priority: 100,
                from: Some("192.168.7.0/24".parse().unwrap()),
                table: 7,
                suppress_ifgroup: None,
            },
            protocol: 4,
            has_other_selectors: false,
            not_lookup: false,
        });
        k
    }

    fn records() -> crate::state::AddressRecords {
        let dir = std::env::temp_dir().join(format!(
            "eniroute-rec-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        crate::state::AddressRecords::load(&dir)
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    /// The fake kernel after a first, clean reconcile of the
    /// management-network fixture, with the configuration and records used.
    fn reconciled() -> (FakeKernel, Config, crate::state::AddressRecords) {
        let k = kernel_with_links();
        let cfg = Config::default();
        let mut rec = records();
        let first = block_on(reconcile(
            &k,
            &fixture("management-network"),
            &cfg,
            &mut rec,
        ))
        .unwrap();
        assert!(first.applied.writes > 0);
        assert!(
            first.applied.errors.is_empty(),
            "{:?}",
            first.applied.errors
        );
        (k, cfg, rec)
    }

    #[test]
    fn second_reconcile_writes_nothing() {
        let (k, cfg, mut rec) = reconciled();
        let inst = fixture("management-network");
        let second = block_on(reconcile(&k, &inst, &cfg, &mut rec)).unwrap();
        assert_eq!(second.applied.writes, 0, "{:?}", second.applied.ops);
    }

    #[test]
    fn adds_come_before_deletes_and_foreign_rules_stay() {
        let (k, cfg, mut rec) = reconciled();
        // eth1 loses its secondary address and gains another.
        let mut inst = fixture("management-network");
        if let crate::imds::model::EniState::Ready(e) = &mut inst.enis[1] {
            e.ipv4s = vec!["10.0.2.20".parse().unwrap(), "10.0.2.22".parse().unwrap()];
        }
        k.log.borrow_mut().clear();
        block_on(reconcile(&k, &inst, &cfg, &mut rec)).unwrap();
        let log = k.log.borrow().clone();
        let first_delete = log.iter().position(|l| l.starts_with('-')).unwrap();
        let last_add = log.iter().rposition(|l| l.starts_with('+')).unwrap();
        assert!(last_add < first_delete, "{log:#?}");
        assert!(log.contains(&"+ rule from 10.0.2.22 lookup 10001 priority 10001".to_string()));
        assert!(log.contains(&"- rule from 10.0.2.21 lookup 10001 priority 10001".to_string()));
        assert!(log.contains(&"- address 10.0.2.21/32".to_string()));
        assert!(
            k.rules.borrow().iter().any(|r| r.protocol == 4),
            "foreign rule removed"
        );
    }

    /// A replacement that cannot be added leaves what it replaces in place,
    /// and the error names the ENI, the object and the call.
    #[test]
    fn what_a_failed_addition_replaces_stays() {
        let (k, cfg, mut rec) = reconciled();
        // Device number 1 → 2: eth1's rules and routes move to table 10002.
        let mut inst = fixture("management-network");
        set_device(&mut inst, 1, 2);
        let rules = |k: &FakeKernel| -> Vec<String> {
            k.rules
                .borrow()
                .iter()
                .map(|r| r.rule.to_string())
                .collect()
        };
        let routes = |k: &FakeKernel| -> Vec<String> {
            k.routes
                .borrow()
                .iter()
                .map(|r| r.route.to_string())
                .collect()
        };

        // The new table's default route is refused: no rule moves to a
        // table without it, and the old table stays whole.
        k.refuse
            .borrow_mut()
            .push("+ route default via 10.0.2.1 dev eth1 table 10002".to_string());
        let out = block_on(reconcile(&k, &inst, &cfg, &mut rec)).unwrap();
        let (now, errors) = (rules(&k), &out.applied.errors);
        for ip in ["10.0.2.20", "10.0.2.21"] {
            let old = format!("rule from {ip} lookup 10001 priority 10001");
            assert!(now.contains(&old), "{now:#?}");
            assert!(!now.iter().any(|r| r.contains("lookup 10002")), "{now:#?}");
            assert!(
                errors.iter().any(|e| e.starts_with(&format!(
                    "ENI eni-0010aa (eth1): + rule from {ip} lookup 10002 priority 10002: not done: a route of its table failed"
                ))),
                "{errors:#?}"
            );
            assert!(
                errors.iter().any(|e| e.contains(&format!(
                    "- {old}: not done, kept in place: its replacement"
                ))),
                "{errors:#?}"
            );
        }
        assert!(
            routes(&k).contains(&"route default via 10.0.2.1 dev eth1 table 10001".to_string()),
            "{:#?}",
            routes(&k)
        );
        assert!(
            errors.iter().any(|e| e.starts_with("ENI eni-0010aa (eth1): RTM_NEWROUTE for route default via 10.0.2.1 dev eth1 table 10002")
                && e.contains("Operation not permitted")),
            "{errors:#?}"
        );

        // One rule refused on its own: that one stays, the other moves.
        k.refuse.borrow_mut().clear();
        k.refuse
            .borrow_mut()
            .push("+ rule from 10.0.2.21 lookup 10002".to_string());
        let out = block_on(reconcile(&k, &inst, &cfg, &mut rec)).unwrap();
        let now = rules(&k);
        assert!(
            now.contains(&"rule from 10.0.2.21 lookup 10001 priority 10001".to_string()),
            "{now:#?}"
        );
        assert!(
            now.contains(&"rule from 10.0.2.20 lookup 10002 priority 10002".to_string())
                && !now.contains(&"rule from 10.0.2.20 lookup 10001 priority 10001".to_string()),
            "{now:#?}"
        );
        let errors = &out.applied.errors;
        assert!(
            errors.iter().any(|e| e.starts_with(
                "ENI eni-0010aa (eth1): RTM_NEWRULE for rule from 10.0.2.21 lookup 10002"
            ) && e.contains("Operation not permitted")),
            "{errors:#?}"
        );
        assert!(
            errors.iter().any(|e| e.contains(
                "- rule from 10.0.2.21 lookup 10001 priority 10001: not done, kept in place"
            )),
            "{errors:#?}"
        );

        // Once the kernel takes it, the old one goes.
        k.refuse.borrow_mut().clear();
        let out = block_on(reconcile(&k, &inst, &cfg, &mut rec)).unwrap();
        assert!(out.applied.errors.is_empty(), "{:?}", out.applied.errors);
        let rules: Vec<String> = k
            .rules
            .borrow()
            .iter()
            .map(|r| r.rule.to_string())
            .collect();
        assert!(
            rules.iter().all(|r| !r.contains("lookup 10001")),
            "{rules:#?}"
        );
    }

    /// A new primary address that cannot be added leaves the old one (and
    /// with it the link's subnet route) in place.
    #[test]
    fn a_primary_address_stays_until_its_successor_is_in() {
        let (k, cfg, mut rec) = reconciled();
        let mut inst = fixture("management-network");
        if let crate::imds::model::EniState::Ready(e) = &mut inst.enis[1] {
            e.ipv4s = vec!["10.0.2.30".parse().unwrap(), "10.0.2.21".parse().unwrap()];
        }
        k.refuse
            .borrow_mut()
            .push("+ address 10.0.2.30/24".to_string());
        let out = block_on(reconcile(&k, &inst, &cfg, &mut rec)).unwrap();
        let has = |a: &str| {
            k.links.borrow()[1]
                .addresses
                .iter()
                .any(|x| x.addr.to_string() == a)
        };
        assert!(has("10.0.2.20/24"), "{:?}", out.applied);
        assert!(
            out.applied.errors.iter().any(|e| e.starts_with(
                "ENI eni-0010aa (eth1): RTM_NEWADDR for address 10.0.2.30/24 dev eth1"
            )),
            "{:?}",
            out.applied.errors
        );
        k.refuse.borrow_mut().clear();
        block_on(reconcile(&k, &inst, &cfg, &mut rec)).unwrap();
        assert!(has("10.0.2.30/24") && !has("10.0.2.20/24"));
    }

    struct NoFiles;

    impl crate::pods::Footprints for NoFiles {
        fn exists(&self, _: &str) -> bool {
            false
        }
    }

    /// On a VPC CNI node (found by a pod's `eni…` link) the primary ENI's
    /// secondary IPs are the pods': `auto` neither adds nor rules them,
    /// `assign` does, and without the CNI `auto` does too.
    #[test]
    fn the_primary_enis_secondary_ips_are_left_to_a_pod_agent() {
        use crate::config::SecondaryIps;
        let k = kernel_with_links();
        let mut inst = fixture("management-network");
        if let crate::imds::model::EniState::Ready(e) = &mut inst.enis[0] {
            e.ipv4s.push("10.0.1.11".parse().unwrap());
        }
        let rec = records();
        let changes = |cni: bool, setting: SecondaryIps| -> Vec<String> {
            if cni {
                k.links.borrow_mut().push(Link {
                    index: 9,
                    name: "eni1a2b3c4d5e6".into(),
                    mac: Some("aa:bb:cc:00:00:09".parse().unwrap()),
                    up: true,
                    group: 0,
                    mtu: 9001,
                    addresses: vec![],
                });
            }
            let mut current = block_on(Current::read(&k, &rec)).unwrap();
            current.pod_agents =
                crate::pods::detect(&current.links, &current.rules, PROTO, &NoFiles);
            k.links.borrow_mut().retain(|l| l.index != 9);
            let mut cfg = Config::default();
            cfg.selection.primary_secondary_ips = setting;
            assess(&inst, &current, &cfg)
                .changes
                .iter()
                .map(|c| c.to_string())
                .collect()
        };
        let pod_ip = |c: &Vec<String>| c.iter().any(|l| l.contains("10.0.1.11"));
        let left = changes(true, SecondaryIps::Auto);
        assert!(!pod_ip(&left), "{left:#?}");
        assert!(
            left.contains(&"+ rule from 10.0.1.10 lookup 10000 priority 10000".to_string()),
            "{left:#?}"
        );
        assert!(pod_ip(&changes(true, SecondaryIps::Assign)));
        let plain = changes(false, SecondaryIps::Auto);
        assert!(
            plain.contains(&"+ address 10.0.1.11/32 dev eth0".to_string()),
            "{plain:#?}"
        );
        assert!(!pod_ip(&changes(false, SecondaryIps::Leave)));
    }

    /// At one priority the kernel consults rules in the order they were
    /// added (the order of its listing): a foreign rule added after the
    /// agent's own is never reached and is no conflict.
    #[test]
    fn a_foreign_rule_added_after_ours_at_the_same_priority_is_not_ahead() {
        let src: IpNet = "10.0.2.21/32".parse().unwrap();
        let rule = |priority, table, protocol| KernelRule {
            rule: Rule {
                family: crate::values::Family::Ipv4,
                priority,
                from: Some(src),
                table,
                suppress_ifgroup: None,
            },
            protocol,
            has_other_selectors: false,
            not_lookup: false,
        };
        let ours = rule(10001, 10001, PROTO);
        let theirs = rule(10001, 7, 4);
        let ahead = |rules: &[KernelRule]| foreign_rules_ahead(&[src], 10001, rules, PROTO).len();
        assert_eq!(ahead(&[ours.clone(), theirs.clone()]), 0);
        assert_eq!(ahead(&[theirs.clone(), ours.clone()]), 1);
        assert_eq!(ahead(std::slice::from_ref(&theirs)), 1, "ours missing");
        assert_eq!(ahead(&[ours, rule(100, 7, 4)]), 1, "a lower priority");
    }

    #[test]
    fn uncertain_eni_keeps_its_configuration() {
        let (k, cfg, mut rec) = reconciled();
        let mut inst = fixture("management-network");
        let mac = inst.enis[1].mac();
        inst.enis[1] = crate::imds::model::EniState::Invalid {
            mac,
            error: "garbage".into(),
        };
        let out = block_on(reconcile(&k, &inst, &cfg, &mut rec)).unwrap();
        assert_eq!(out.applied.writes, 0, "{:?}", out.applied.ops);
    }

    #[test]
    fn teardown_removes_only_what_is_owned() {
        let (k, cfg, rec) = reconciled();
        let cur = block_on(Current::read(&k, &rec)).unwrap();
        block_on(apply(&k, teardown(&cur, Ownership::from(&cfg))));
        assert_eq!(k.rules.borrow().len(), 1);
        assert!(k.routes.borrow().is_empty());
        let links = k.links.borrow();
        assert_eq!(links[0].addresses.len(), 1, "DHCP address must stay");
        assert!(links[1].addresses.is_empty());
        assert!(links.iter().all(|l| l.group == 0));
    }

    fn altnames_of(k: &FakeKernel, index: u32) -> Vec<String> {
        let mut v = k.altnames.borrow().get(&index).cloned().unwrap_or_default();
        v.sort();
        v
    }

    fn set_device(inst: &mut crate::imds::model::Instance, i: usize, device: u32) {
        if let crate::imds::model::EniState::Ready(e) = &mut inst.enis[i] {
            e.key = crate::values::EniKey::new(0, device).unwrap();
        }
    }

    #[test]
    fn managed_links_get_the_eni_id_and_device_number_as_altnames() {
        let (k, cfg, mut rec) = reconciled();
        assert_eq!(altnames_of(&k, 2), ["device-number-0", "eni-0000aa"]);
        assert_eq!(altnames_of(&k, 3), ["device-number-1", "eni-0010aa"]);
        let again = block_on(reconcile(
            &k,
            &fixture("management-network"),
            &cfg,
            &mut rec,
        ))
        .unwrap();
        assert_eq!(again.applied.writes, 0, "{:?}", again.applied.ops);
    }

    #[test]
    fn a_corrected_device_number_moves_the_altname_and_foreign_names_stay() {
        let k = kernel_with_links();
        k.altnames.borrow_mut().insert(3, vec!["mgmt".into()]);
        let cfg = Config::default();
        let mut rec = records();
        let mut inst = fixture("management-network");
        set_device(&mut inst, 1, 3);
        block_on(reconcile(&k, &inst, &cfg, &mut rec)).unwrap();
        assert_eq!(
            altnames_of(&k, 3),
            ["device-number-3", "eni-0010aa", "mgmt"]
        );
        set_device(&mut inst, 1, 1);
        let out = block_on(reconcile(&k, &inst, &cfg, &mut rec)).unwrap();
        assert_eq!(
            altnames_of(&k, 3),
            ["device-number-1", "eni-0010aa", "mgmt"]
        );
        let ops: Vec<String> = out.applied.ops.iter().map(|o| o.to_string()).collect();
        assert!(
            ops.contains(&"- altname device-number-3 dev eth1".to_string()),
            "{ops:?}"
        );
        assert!(
            ops.contains(&"+ altname device-number-1 dev eth1".to_string()),
            "{ops:?}"
        );
        // The ENI leaves metadata while its link stays: ours go, the rest stays.
        inst.enis.remove(1);
        block_on(reconcile(&k, &inst, &cfg, &mut rec)).unwrap();
        assert_eq!(altnames_of(&k, 3), ["mgmt"]);
    }

    #[test]
    fn altnames_already_in_place_are_taken_over_not_duplicated() {
        let k = kernel_with_links();
        // As amazon-ec2-net-utils leaves eth1, plus a second spelling of
        // the position (someone else's, since eniroute's is there).
        k.altnames.borrow_mut().insert(
            3,
            vec![
                "eni-0010aa".into(),
                "device-number-1".into(),
                "device-number-1.0".into(),
            ],
        );
        let cfg = Config::default();
        let mut rec = records();
        let mut inst = fixture("management-network");
        let out = block_on(reconcile(&k, &inst, &cfg, &mut rec)).unwrap();
        assert!(out.applied.errors.is_empty(), "{:?}", out.applied.errors);
        assert!(
            !k.log
                .borrow()
                .iter()
                .any(|l| l.contains("altname") && l.ends_with("on 3")),
            "{:?}",
            k.log.borrow()
        );
        inst.enis.remove(1);
        block_on(reconcile(&k, &inst, &cfg, &mut rec)).unwrap();
        assert_eq!(altnames_of(&k, 3), ["device-number-1.0"]);
    }

    #[test]
    fn the_card_suffixed_spelling_of_ec2_net_utils_is_taken_over_too() {
        let k = kernel_with_links();
        // amazon-ec2-net-utils writes device-number-N.0 where metadata has
        // a network-card key: kept, not doubled with device-number-N.
        k.altnames
            .borrow_mut()
            .insert(3, vec!["eni-0010aa".into(), "device-number-1.0".into()]);
        let cfg = Config::default();
        let mut rec = records();
        let mut inst = fixture("management-network");
        block_on(reconcile(&k, &inst, &cfg, &mut rec)).unwrap();
        assert_eq!(altnames_of(&k, 3), ["device-number-1.0", "eni-0010aa"]);
        // Taken over: a new device number replaces it like any name of ours.
        set_device(&mut inst, 1, 3);
        block_on(reconcile(&k, &inst, &cfg, &mut rec)).unwrap();
        assert_eq!(altnames_of(&k, 3), ["device-number-3", "eni-0010aa"]);
    }

    #[test]
    fn excluded_and_uncertain_enis_get_no_altnames_and_keep_theirs() {
        let k = kernel_with_links();
        let mut cfg = Config::default();
        cfg.selection.exclude.push(crate::config::EniMatch {
            name: Some("eth1".into()),
            ..Default::default()
        });
        let mut rec = records();
        let inst = fixture("management-network");
        block_on(reconcile(&k, &inst, &cfg, &mut rec)).unwrap();
        assert!(altnames_of(&k, 3).is_empty());
        assert_eq!(altnames_of(&k, 2), ["device-number-0", "eni-0000aa"]);

        let (k, cfg, mut rec) = reconciled();
        let mut inst = fixture("management-network");
        let mac = inst.enis[1].mac();
        inst.enis[1] = crate::imds::model::EniState::NotReady {
            mac,
            reason: "lagging".into(),
        };
        let out = block_on(reconcile(&k, &inst, &cfg, &mut rec)).unwrap();
        assert_eq!(out.applied.writes, 0, "{:?}", out.applied.ops);
        assert_eq!(altnames_of(&k, 3), ["device-number-1", "eni-0010aa"]);
    }

    #[test]
    fn a_name_held_by_a_link_eniroute_does_not_own_is_left_there() {
        let k = kernel_with_links();
        k.links.borrow_mut().push(Link {
            index: 9,
            name: "tun0".into(),
            mac: None,
            up: true,
            group: 0,
            mtu: 1500,
            addresses: vec![],
        });
        k.altnames
            .borrow_mut()
            .insert(9, vec!["device-number-1".into()]);
        let cfg = Config::default();
        let mut rec = records();
        let out = block_on(reconcile(
            &k,
            &fixture("management-network"),
            &cfg,
            &mut rec,
        ))
        .unwrap();
        assert_eq!(altnames_of(&k, 3), ["eni-0010aa"]);
        assert_eq!(altnames_of(&k, 9), ["device-number-1"]);
        assert!(
            out.plan.warnings.iter().any(
                |w| w.to_string().contains("device-number-1") && w.to_string().contains("tun0")
            ),
            "{:?}",
            out.plan.warnings
        );
    }

    #[test]
    fn teardown_removes_only_owned_altnames() {
        let (k, _cfg, rec) = reconciled();
        k.altnames
            .borrow_mut()
            .entry(3)
            .or_default()
            .push("mgmt".into());
        block_on(crate::altname::teardown(&k, rec.dir()));
        assert!(altnames_of(&k, 2).is_empty());
        assert_eq!(altnames_of(&k, 3), ["mgmt"]);
    }
    /// What `plan` and `status` show (observe, then assess, changing
    /// nothing) for the host as it is now.
    fn planned(k: &FakeKernel, inst: &Instance, cfg: &Config, rec: &AddressRecords) -> Assessment {
        let current = block_on(observe(k, rec, inst, cfg)).unwrap();
        assess(inst, &current, cfg)
    }

    #[test]
    fn plan_shows_exactly_what_apply_does_while_udev_holds_a_link() {
        let k = kernel_with_links();
        // eth1 (ifindex 3) has just appeared; udev may still rename it.
        k.udev_pending.borrow_mut().insert(3);
        let cfg = crate::config::parse(
            "[[eni]]\nmatch = { device = 1 }\nforwarding = true\n",
            std::path::Path::new("test.toml"),
        )
        .unwrap();
        let inst = fixture("management-network");
        let mut rec = records();

        let shown = planned(&k, &inst, &cfg, &rec);
        assert_eq!(shown.udev_pending, [3]);
        assert!(!shown.changes.is_empty());
        assert!(
            shown
                .changes
                .iter()
                .all(|op| !op.to_string().contains("eth1")),
            "{:#?}",
            shown.changes
        );
        let applied = block_on(reconcile(&k, &inst, &cfg, &mut rec)).unwrap();
        assert_eq!(applied.applied.ops, shown.changes);
        assert_eq!(applied.plan, shown.plan);

        // udev is done: now eth1 is planned for, sysctl included, and apply
        // again does exactly what plan said.
        k.udev_pending.borrow_mut().clear();
        let shown = planned(&k, &inst, &cfg, &rec);
        assert!(shown.udev_pending.is_empty());
        let sysctl = "~ sysctl net.ipv4.conf.eth1.forwarding=1".to_string();
        assert!(
            shown.changes.iter().any(|op| op.to_string() == sysctl),
            "{:#?}",
            shown.changes
        );
        let applied = block_on(reconcile(&k, &inst, &cfg, &mut rec)).unwrap();
        assert_eq!(applied.applied.ops, shown.changes);
        assert!(k.log.borrow().contains(&sysctl));
        assert!(planned(&k, &inst, &cfg, &rec).changes.is_empty());
        assert_eq!(
            block_on(reconcile(&k, &inst, &cfg, &mut rec))
                .unwrap()
                .applied
                .writes,
            0
        );
    }

    #[test]
    fn a_sysctl_that_cannot_be_set_is_reported_and_the_rest_goes_in() {
        let k = kernel_with_links();
        k.sysctls_read_only.set(true);
        let cfg = crate::config::parse(
            "[[eni]]\nmatch = { device = 1 }\nforwarding = true\n",
            std::path::Path::new("test.toml"),
        )
        .unwrap();
        let mut rec = records();
        let out = block_on(reconcile(
            &k,
            &fixture("management-network"),
            &cfg,
            &mut rec,
        ))
        .unwrap();
        assert_eq!(
            out.applied.errors,
            ["cannot set sysctl net.ipv4.conf.eth1.forwarding to 1: Read-only file system (os error 30)"]
        );
        assert!(k
            .rules
            .borrow()
            .iter()
            .any(|r| r.rule.to_string() == "rule from 10.0.2.20 lookup 10001 priority 10001"));
    }

    #[test]
    fn through_a_view_only_reported_changes_of_concern_are_heard_and_repaired() {
        use crate::netlink::{Change, Concern, Event, Viewed};
        let v = Viewed::new(
            kernel_with_links(),
            Concern {
                protocol: PROTO,
                tables: 10000..16400,
            },
        );
        let (cfg, mut rec) = (Config::default(), records());
        let inst = fixture("management-network");
        let first = block_on(reconcile(&v, &inst, &cfg, &mut rec)).unwrap();
        assert!(first.applied.writes > 0 && first.applied.errors.is_empty());
        // The view holds the writes: the next reconcile finds nothing to do.
        let again = block_on(reconcile(&v, &inst, &cfg, &mut rec)).unwrap();
        assert_eq!(again.applied.writes, 0, "{:?}", again.applied.ops);
        v.planned(&again.plan.routes);

        let ours = v
            .inner()
            .rules
            .borrow()
            .iter()
            .find(|r| r.protocol == PROTO && r.rule.from.is_some())
            .cloned()
            .unwrap();
        let told = |rule: &KernelRule, removed| {
            v.observe(&Change::Rule {
                rule: rule.clone(),
                removed,
            })
        };
        assert_eq!(told(&ours, false), None, "the echo of its own write");
        // Someone else's routes in another table, and in main where the
        // plan has none: nothing to hear.
        let foreign = |table, dst: &str| KernelRoute {
            route: Route {
                table,
                dst: dst.parse().unwrap(),
                gateway: None,
                dev: "eth0".into(),
                oif: 2,
                src: None,
            },
            protocol: 4,
            metric: 0,
        };
        for r in [foreign(500, "172.16.0.0/24"), foreign(254, "192.0.2.0/24")] {
            let change = Change::Route {
                route: r,
                removed: false,
                replace: false,
            };
            assert_eq!(v.observe(&change), None, "{change:?}");
        }

        // A rule deleted without a notification is not seen: the
        // reconcile reads the view, not the kernel.
        v.inner().rules.borrow_mut().retain(|r| *r != ours);
        let unseen = block_on(reconcile(&v, &inst, &cfg, &mut rec)).unwrap();
        assert_eq!(unseen.applied.writes, 0, "{:?}", unseen.applied.ops);
        // The notification of it is heard, and the rule put back.
        assert_eq!(told(&ours, true), Some(Event::Rule { protocol: PROTO }));
        let repaired = block_on(reconcile(&v, &inst, &cfg, &mut rec)).unwrap();
        assert_eq!(repaired.applied.ops, [Op::AddRule(ours.rule.clone())]);

        // What a safety re-read finds without a notification is repaired.
        v.inner().rules.borrow_mut().retain(|r| *r != ours);
        assert!(block_on(v.resync("test")).unwrap());
        let reread = block_on(reconcile(&v, &inst, &cfg, &mut rec)).unwrap();
        assert_eq!(reread.applied.ops, [Op::AddRule(ours.rule)]);
        assert!(!block_on(v.resync("test")).unwrap());
    }

    #[test]
    fn through_a_view_an_address_lifetime_counts_down_between_notifications() {
        use crate::netlink::{Change, Concern, Viewed};
        let k = kernel_with_links();
        k.links.borrow_mut()[0].addresses[0].valid_lft = Some(3600);
        let v = Viewed::new(
            k,
            Concern {
                protocol: PROTO,
                tables: 10000..16400,
            },
        );
        let left = || {
            block_on(v.links()).unwrap()[0].addresses[0]
                .valid_lft
                .unwrap()
        };
        assert!(left() <= 3600);
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert!(left() < 3600, "a second passed");
        // A renewal says how much is left now.
        let renewed = Change::Address {
            index: 2,
            address: LinkAddress {
                addr: "10.0.1.10/24".parse().unwrap(),
                owned: false,
                valid_lft: Some(7200),
                proto: None,
            },
            removed: false,
        };
        assert_eq!(v.observe(&renewed), None, "no reason to reconcile");
        assert!(left() > 3600);
    }
}
