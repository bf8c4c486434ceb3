//! The daemon's view of the kernel: every link with its addresses and
//! names, and the rules and routes of its concern, kept up to date from the
//! kernel's notifications instead of read again for every reconcile.
//!
//! On a router or a Kubernetes node the kernel may hold a hundred thousand
//! routes that are none of the agent's business, some of them changing
//! every few milliseconds. Reading them all again for every notification
//! costs a core; following the notifications costs next to nothing, and a
//! notification about something outside the agent's concern is dropped
//! before it is parsed (see [`crate::netlink::events`]) and schedules no
//! reconcile. The whole kernel is read only at start, after the kernel
//! dropped notifications (an overrun), when routes may have vanished
//! without a notification, and on a slow safety timer.
//!
//! [`View`] is the pure part (notifications in, state out); [`Viewed`] puts
//! it in front of a [`Kernel`], so the reconciler reads the view through the
//! same trait and the pure core does not know the difference.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use crate::netlink::events::{Change, Event};
use crate::netlink::{Kernel, LinkChange, LinkNames, NetlinkError};
use crate::sysctl::{Sysctl, SysctlError};
use crate::values::{
    default_metric, Address, KernelRoute, KernelRule, Link, LinkAddress, Route, Rule, MAIN_TABLE,
};

/// How often the daemon reads the whole kernel even though notifications
/// said nothing of concern changed: a safety net for what the kernel
/// changes without telling (it does not announce every route it flushes),
/// cheap enough at this pace even with a full routing table.
pub const SAFETY_RESYNC: Duration = Duration::from_secs(300);

/// What the agent looks at: its own rules and routes (its protocol, in any
/// table), everything in its table range, the rules that come before its
/// tables' priorities (they can take its traffic), and the main table
/// (where its cross-VPC and configured routes live, beside others that may
/// hold their place).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Concern {
    pub protocol: u8,
    /// The agent's table numbers; its rules' priorities are the same.
    pub tables: Range<u32>,
}

impl Concern {
    /// Every route and rule: for a caller that filters nothing.
    pub fn all(protocol: u8) -> Concern {
        Concern {
            protocol,
            tables: 0..u32::MAX,
        }
    }

    pub fn route(&self, table: u32, protocol: u8) -> bool {
        protocol == self.protocol || table == MAIN_TABLE || self.tables.contains(&table)
    }

    pub fn rule(&self, rule: &KernelRule) -> bool {
        rule.protocol == self.protocol
            || self.tables.contains(&rule.rule.table)
            || rule.rule.priority < self.tables.end
    }
}

/// Routes that the kernel can only hold once: same table, destination and
/// metric, and the same next hop (routes added with `ip route append`
/// differ only there).
type RouteSlot = (u32, IpNet, u32);

fn slot(r: &KernelRoute) -> RouteSlot {
    (r.route.table, r.route.dst, r.metric)
}

fn same_next_hop(a: &KernelRoute, b: &KernelRoute) -> bool {
    a.route.oif == b.route.oif && a.route.gateway == b.route.gateway
}

/// The kernel as far as the agent is concerned. Route `dev` names are
/// filled in from the links when read, so a rename needs no route update.
#[derive(Debug, Clone)]
pub struct View {
    concern: Concern,
    links: BTreeMap<u32, Link>,
    names: BTreeMap<u32, LinkNames>,
    rules: Vec<KernelRule>,
    routes: HashMap<RouteSlot, Vec<KernelRoute>>,
    /// Why the whole kernel must be read before the view can be trusted;
    /// `None` while it follows the kernel.
    stale: Option<&'static str>,
}

impl View {
    /// An empty view, to be loaded before it is read.
    pub fn new(concern: Concern) -> View {
        View {
            concern,
            links: BTreeMap::new(),
            names: BTreeMap::new(),
            rules: Vec::new(),
            routes: HashMap::new(),
            stale: Some("start"),
        }
    }

    /// Why the view must be loaded again, if it must.
    pub fn stale(&self) -> Option<&'static str> {
        self.stale
    }

    pub fn invalidate(&mut self, why: &'static str) {
        self.stale.get_or_insert(why);
    }

    /// Replaces everything with what a full read found; rules and routes
    /// outside the concern are left out.
    pub fn load(
        &mut self,
        links: Vec<Link>,
        names: Vec<LinkNames>,
        rules: Vec<KernelRule>,
        routes: Vec<KernelRoute>,
    ) {
        self.links = links.into_iter().map(|l| (l.index, l)).collect();
        self.names = names.into_iter().map(|n| (n.index, n)).collect();
        self.rules = rules.into_iter().filter(|r| self.concern.rule(r)).collect();
        self.routes.clear();
        for mut r in routes {
            if self.concern.route(r.route.table, r.protocol) {
                r.route.dev.clear();
                self.routes.entry(slot(&r)).or_default().push(r);
            }
        }
        self.stale = None;
    }

    /// Follows one notification (or one of the agent's own writes, told the
    /// same way); returns whether the view changed.
    pub fn apply(&mut self, change: &Change) -> bool {
        match change {
            Change::Link {
                index,
                removed: true,
                ..
            } => self.link_removed(*index),
            Change::Link {
                index, link, names, ..
            } => {
                let mut changed = false;
                if let Some(new) = link {
                    changed |= self.link_changed(*index, new);
                }
                if let Some(n) = names {
                    if self.names.get(index) != Some(n) {
                        self.names.insert(*index, n.clone());
                        changed = true;
                    }
                }
                changed
            }
            Change::Address {
                index,
                address,
                removed,
            } => self.address(*index, address, *removed),
            Change::Route {
                route,
                removed,
                replace,
            } => self.route(route, *removed, *replace),
            Change::Rule { rule, removed } => self.rule(rule, *removed),
            Change::Overrun => {
                self.invalidate("notifications were lost (overrun)");
                true
            }
        }
    }

    fn link_removed(&mut self, index: u32) -> bool {
        let had = self.links.remove(&index).is_some() | self.names.remove(&index).is_some();
        // The kernel drops the link's routes with it, and does not announce
        // the IPv4 ones.
        let before = self.route_count();
        for routes in self.routes.values_mut() {
            routes.retain(|r| r.route.oif != index);
        }
        self.routes.retain(|_, v| !v.is_empty());
        had || self.route_count() != before
    }

    fn link_changed(&mut self, index: u32, new: &Link) -> bool {
        match self.links.get_mut(&index) {
            Some(old) => {
                let went_down = old.up && !new.up;
                let changed = old.name != new.name
                    || old.mac != new.mac
                    || old.up != new.up
                    || old.group != new.group
                    || old.mtu != new.mtu;
                old.name.clone_from(&new.name);
                old.mac = new.mac;
                old.up = new.up;
                old.group = new.group;
                old.mtu = new.mtu;
                // Setting a link down flushes the routes through it without
                // a notification for each.
                if went_down && self.routes_through(|r| r.route.oif == index) {
                    self.invalidate("a link with routes of concern went down");
                }
                changed
            }
            None => {
                let mut link = new.clone();
                link.addresses.clear();
                self.links.insert(index, link);
                true
            }
        }
    }

    fn address(&mut self, index: u32, address: &LinkAddress, removed: bool) -> bool {
        let Some(link) = self.links.get_mut(&index) else {
            // An address of a link not seen yet: the link's own
            // notification comes first, so this one is stale or the view
            // missed something.
            if !removed {
                self.invalidate("an address of an unknown link");
            }
            return !removed;
        };
        let at = link.addresses.iter().position(|a| a.addr == address.addr);
        match (at, removed) {
            (Some(i), true) => {
                link.addresses.remove(i);
                // Routes that prefer the removed address as their source go
                // with it, unannounced; so do all IPv4 routes through a
                // link that has just lost its last IPv4 address.
                let gone = address.addr.addr();
                let last_v4 =
                    gone.is_ipv4() && !link.addresses.iter().any(|a| a.addr.addr().is_ipv4());
                if self.routes_through(|r| {
                    r.route.src == Some(gone)
                        || (last_v4 && r.route.oif == index && r.route.dst.addr().is_ipv4())
                }) {
                    self.invalidate("an address that routes of concern use went away");
                }
                true
            }
            (None, true) => false,
            (Some(i), false) => {
                // A notification says what the kernel has; a write of ours
                // (owned) is not undone by its own echo from a kernel that
                // does not keep IFA_PROTO.
                let owned = link.addresses[i].owned || address.owned;
                let changed =
                    link.addresses[i].owned != owned || link.addresses[i].proto != address.proto;
                link.addresses[i].owned = owned;
                link.addresses[i].proto = address.proto;
                // A DHCP renew moves the lifetime; kept current for the
                // lease memory, and no reason to reconcile by itself.
                link.addresses[i].valid_lft = address.valid_lft;
                changed
            }
            (None, false) => {
                link.addresses.push(address.clone());
                true
            }
        }
    }

    fn route(&mut self, route: &KernelRoute, removed: bool, replace: bool) -> bool {
        if !self.concern.route(route.route.table, route.protocol) {
            return false;
        }
        let mut route = route.clone();
        route.route.dev.clear();
        let key = slot(&route);
        if removed {
            let Some(routes) = self.routes.get_mut(&key) else {
                return false;
            };
            let before = routes.len();
            routes.retain(|r| !same_next_hop(r, &route));
            let changed = routes.len() != before;
            if routes.is_empty() {
                self.routes.remove(&key);
            }
            return changed;
        }
        let routes = self.routes.entry(key).or_default();
        if replace {
            let changed = routes.as_slice() != std::slice::from_ref(&route);
            *routes = vec![route];
            return changed;
        }
        match routes.iter_mut().find(|r| same_next_hop(r, &route)) {
            Some(r) if *r == route => false,
            Some(r) => {
                *r = route;
                true
            }
            None => {
                routes.push(route);
                true
            }
        }
    }

    fn rule(&mut self, rule: &KernelRule, removed: bool) -> bool {
        if !self.concern.rule(rule) {
            return false;
        }
        let at = self.rules.iter().position(|r| r == rule);
        match (at, removed) {
            (Some(i), true) => {
                self.rules.remove(i);
                true
            }
            (None, false) => {
                self.rules.push(rule.clone());
                true
            }
            _ => false,
        }
    }

    fn routes_through(&self, f: impl Fn(&KernelRoute) -> bool) -> bool {
        self.routes.values().flatten().any(f)
    }

    fn route_count(&self) -> usize {
        self.routes.values().map(Vec::len).sum()
    }

    pub fn links(&self) -> Vec<Link> {
        self.links.values().cloned().collect()
    }

    pub fn names(&self) -> Vec<LinkNames> {
        self.names.values().cloned().collect()
    }

    pub fn rules(&self) -> Vec<KernelRule> {
        self.rules.clone()
    }

    /// The routes of concern, each named by its link's current name.
    pub fn routes(&self) -> Vec<KernelRoute> {
        let mut out: Vec<KernelRoute> = self.routes.values().flatten().cloned().collect();
        for r in &mut out {
            r.route.dev = match self.links.get(&r.route.oif) {
                Some(l) => l.name.clone(),
                None => format!("if{}", r.route.oif),
            };
        }
        // In a stable order, as a dump would give them.
        out.sort_by(|a, b| {
            (a.route.table, a.route.dst, a.metric, a.route.oif).cmp(&(
                b.route.table,
                b.route.dst,
                b.metric,
                b.route.oif,
            ))
        });
        out
    }

    /// Whether two views hold the same kernel state (in any order).
    pub fn same_as(&self, other: &View) -> bool {
        let rules = |v: &View| {
            let mut r: Vec<String> = v.rules.iter().map(|k| format!("{k:?}")).collect();
            r.sort();
            r
        };
        // Addresses in any order, and without the ownership mark or the
        // lifetime left: a write
        // of ours stays marked in the view where a kernel without
        // IFA_PROTO forgets it (the state file remembers it instead).
        let links = |v: &View| {
            let mut links = v.links();
            for l in &mut links {
                l.addresses.sort_by_key(|a| a.addr);
                // Remaining lifetimes count down between notifications.
                l.addresses.iter_mut().for_each(|a| {
                    a.owned = false;
                    a.valid_lft = a.valid_lft.map(|_| 0);
                });
            }
            links
        };
        links(self) == links(other)
            && self.names == other.names
            && rules(self) == rules(other)
            && self.routes() == other.routes()
    }
}

/// A [`Kernel`] whose links, addresses, rules and routes are read from a
/// [`View`] that follows the kernel's notifications (see
/// [`Viewed::observe`]); writes go to the kernel and into the view, so a
/// reconcile that reads again sees its own writes, and their echoes change
/// nothing.
pub struct Viewed<K> {
    inner: K,
    view: RefCell<View>,
    /// The (table, destination) of every route the last plan wanted: a
    /// route of someone else's in the main table matters only there.
    planned: RefCell<BTreeSet<(u32, IpNet)>>,
    /// When the kernel last told the lifetime left of each address that
    /// has one: the kernel counts it down without a notification, so the
    /// view's copy is aged by the time since when it is read.
    told: RefCell<HashMap<(u32, IpNet), Instant>>,
    /// How many times the whole kernel was read into the view.
    full_reads: Cell<u64>,
}

impl<K: Kernel> Viewed<K> {
    pub fn new(inner: K, concern: Concern) -> Viewed<K> {
        Viewed {
            inner,
            view: RefCell::new(View::new(concern)),
            planned: RefCell::new(BTreeSet::new()),
            told: RefCell::new(HashMap::new()),
            full_reads: Cell::new(0),
        }
    }

    /// How many times the whole kernel was read into the view so far.
    pub fn full_reads(&self) -> u64 {
        self.full_reads.get()
    }

    /// Follows one notification. Returns what it means to the daemon when
    /// the daemon must hear of it: every link notification (the daemon
    /// reads metadata for links it does not know), an overrun, and
    /// anything else that changed the view, except someone else's route in
    /// the main table where the plan has none. A notification of a change
    /// the view already holds (the echo of the agent's own write) or
    /// outside its concern returns `None`.
    pub fn observe(&self, change: &Change) -> Option<Event> {
        let (changed, protocol) = {
            let mut view = self.view.borrow_mut();
            (view.apply(change), view.concern.protocol)
        };
        if let Change::Address {
            index,
            address,
            removed: false,
        } = change
        {
            if address.valid_lft.is_some() {
                self.told
                    .borrow_mut()
                    .insert((*index, address.addr), Instant::now());
            }
        }
        match change {
            Change::Link { .. } | Change::Overrun => Some(change.event()),
            Change::Route { route, .. }
                if route.route.table == MAIN_TABLE
                    && route.protocol != protocol
                    && !self.planned.borrow().contains(&route.route.key()) =>
            {
                None
            }
            _ if changed => Some(change.event()),
            _ => None,
        }
    }

    /// The routes the last plan wanted (see [`Viewed::observe`]).
    pub fn planned(&self, routes: &[Route]) {
        *self.planned.borrow_mut() = routes.iter().map(Route::key).collect();
    }

    /// The kernel behind the view.
    pub fn inner(&self) -> &K {
        &self.inner
    }

    /// The view can no longer be trusted: it is read again before its next
    /// use.
    pub fn invalidate(&self, why: &'static str) {
        self.view.borrow_mut().invalidate(why);
    }

    /// Reads the whole kernel into the view now; returns whether that
    /// changed anything (the view had drifted).
    pub async fn resync(&self, why: &'static str) -> Result<bool, NetlinkError> {
        let before = self.view.borrow().clone();
        self.view.borrow_mut().invalidate(why);
        self.fresh().await?;
        Ok(!self.view.borrow().same_as(&before))
    }

    /// Loads the view when it is stale.
    async fn fresh(&self) -> Result<(), NetlinkError> {
        let Some(why) = self.view.borrow().stale() else {
            return Ok(());
        };
        let t0 = Instant::now();
        let concern = self.view.borrow().concern.clone();
        let (links, names) = self.inner.links_and_names().await?;
        let rules = self.inner.rules().await?;
        let routes = self.inner.routes_of_concern(&concern).await?;
        let now = Instant::now();
        *self.told.borrow_mut() = links
            .iter()
            .flat_map(|l| l.addresses.iter().map(move |a| (l.index, a)))
            .filter(|(_, a)| a.valid_lft.is_some())
            .map(|(i, a)| ((i, a.addr), now))
            .collect();
        self.full_reads.set(self.full_reads.get() + 1);
        let mut view = self.view.borrow_mut();
        view.load(links, names, rules, routes);
        tracing::debug!(
            "re-read the kernel ({why}): {} links, {} rules and {} routes of concern in {:?}",
            view.links.len(),
            view.rules.len(),
            view.route_count(),
            t0.elapsed()
        );
        Ok(())
    }

    /// `links` with each address's lifetime left as of now.
    fn aged(&self, mut links: Vec<Link>) -> Vec<Link> {
        let told = self.told.borrow();
        let now = Instant::now();
        for l in &mut links {
            for a in &mut l.addresses {
                if let (Some(left), Some(at)) = (a.valid_lft, told.get(&(l.index, a.addr))) {
                    let gone = u32::try_from(now.duration_since(*at).as_secs()).unwrap_or(u32::MAX);
                    a.valid_lft = Some(left.saturating_sub(gone));
                }
            }
        }
        links
    }

    /// Tells the view about a write of ours that the kernel accepted (or
    /// refused because it was already so).
    fn wrote(&self, change: Change) {
        self.view.borrow_mut().apply(&change);
    }

    fn own_route(&self, route: &Route) -> KernelRoute {
        KernelRoute {
            route: route.clone(),
            protocol: self.view.borrow().concern.protocol,
            metric: default_metric(&route.dst),
        }
    }

    fn own_rule(rule: &Rule, protocol: u8) -> KernelRule {
        KernelRule {
            rule: rule.clone(),
            protocol,
            has_other_selectors: false,
            not_lookup: false,
        }
    }

    fn protocol(&self) -> u8 {
        self.view.borrow().concern.protocol
    }
}

/// Whether a delete that failed still leaves the object gone (someone
/// else deleted it first).
fn gone_anyway(e: &NetlinkError) -> bool {
    e.is_race()
}

impl<K: Kernel> Kernel for Viewed<K> {
    async fn links(&self) -> Result<Vec<Link>, NetlinkError> {
        self.fresh().await?;
        Ok(self.aged(self.view.borrow().links()))
    }

    async fn rules(&self) -> Result<Vec<KernelRule>, NetlinkError> {
        self.fresh().await?;
        Ok(self.view.borrow().rules())
    }

    async fn routes(&self) -> Result<Vec<KernelRoute>, NetlinkError> {
        self.fresh().await?;
        Ok(self.view.borrow().routes())
    }

    async fn link_names(&self) -> Result<Vec<LinkNames>, NetlinkError> {
        self.fresh().await?;
        Ok(self.view.borrow().names())
    }

    async fn links_and_names(&self) -> Result<(Vec<Link>, Vec<LinkNames>), NetlinkError> {
        self.fresh().await?;
        let view = self.view.borrow();
        Ok((self.aged(view.links()), view.names()))
    }

    async fn add_address(&self, address: &Address) -> Result<(), NetlinkError> {
        self.inner.add_address(address).await?;
        self.wrote(Change::Address {
            index: address.index,
            address: LinkAddress {
                addr: address.address,
                owned: true,
                valid_lft: None,
                proto: None,
            },
            removed: false,
        });
        Ok(())
    }

    async fn del_address(&self, index: u32, address: IpNet) -> Result<(), NetlinkError> {
        let result = self.inner.del_address(index, address).await;
        if result.as_ref().is_ok() || result.as_ref().is_err_and(gone_anyway) {
            self.wrote(Change::Address {
                index,
                address: LinkAddress {
                    addr: address,
                    owned: true,
                    valid_lft: None,
                    proto: None,
                },
                removed: true,
            });
        }
        result
    }

    async fn add_route(&self, route: &Route) -> Result<(), NetlinkError> {
        self.inner.add_route(route).await?;
        self.wrote(Change::Route {
            route: self.own_route(route),
            removed: false,
            replace: false,
        });
        Ok(())
    }

    async fn replace_route(&self, route: &Route) -> Result<(), NetlinkError> {
        self.inner.replace_route(route).await?;
        self.wrote(Change::Route {
            route: self.own_route(route),
            removed: false,
            replace: true,
        });
        Ok(())
    }

    async fn del_route(&self, route: &Route) -> Result<(), NetlinkError> {
        let result = self.inner.del_route(route).await;
        if result.as_ref().is_ok() || result.as_ref().is_err_and(gone_anyway) {
            self.wrote(Change::Route {
                route: self.own_route(route),
                removed: true,
                replace: false,
            });
        }
        result
    }

    async fn add_rule(&self, rule: &Rule) -> Result<(), NetlinkError> {
        let result = self.inner.add_rule(rule).await;
        // EEXIST: the very same rule is there already.
        if result.is_ok() || result.as_ref().is_err_and(|e| e.is_race()) {
            self.wrote(Change::Rule {
                rule: Self::own_rule(rule, self.protocol()),
                removed: false,
            });
        }
        result
    }

    async fn del_rule(&self, rule: &Rule) -> Result<(), NetlinkError> {
        let result = self.inner.del_rule(rule).await;
        if result.as_ref().is_ok() || result.as_ref().is_err_and(gone_anyway) {
            self.wrote(Change::Rule {
                rule: Self::own_rule(rule, self.protocol()),
                removed: true,
            });
        }
        result
    }

    async fn del_foreign_rule(&self, rule: &Rule, protocol: u8) -> Result<(), NetlinkError> {
        let result = self.inner.del_foreign_rule(rule, protocol).await;
        if result.as_ref().is_ok() || result.as_ref().is_err_and(gone_anyway) {
            self.wrote(Change::Rule {
                rule: Self::own_rule(rule, protocol),
                removed: true,
            });
        }
        result
    }

    async fn del_foreign_route(&self, route: &KernelRoute) -> Result<(), NetlinkError> {
        let result = self.inner.del_foreign_route(route).await;
        if result.as_ref().is_ok() || result.as_ref().is_err_and(gone_anyway) {
            self.wrote(Change::Route {
                route: route.clone(),
                removed: true,
                replace: false,
            });
        }
        result
    }

    async fn set_link(&self, index: u32, change: &LinkChange) -> Result<(), NetlinkError> {
        self.inner.set_link(index, change).await?;
        let link = self.view.borrow().links.get(&index).cloned();
        if let Some(mut link) = link {
            link.up |= change.up;
            link.group = change.group.unwrap_or(link.group);
            link.mtu = change.mtu.unwrap_or(link.mtu);
            self.wrote(Change::Link {
                index,
                added: false,
                removed: false,
                link: Some(link),
                names: None,
            });
        }
        Ok(())
    }

    async fn set_altname(&self, index: u32, name: &str, add: bool) -> Result<(), NetlinkError> {
        self.inner.set_altname(index, name, add).await?;
        let names = self.view.borrow().names.get(&index).cloned();
        if let Some(mut names) = names {
            names.altnames.retain(|a| a != name);
            if add {
                names.altnames.push(name.to_string());
            }
            self.wrote(Change::Link {
                index,
                added: false,
                removed: false,
                link: None,
                names: Some(names),
            });
        }
        Ok(())
    }

    fn messages_sent(&self) -> u64 {
        self.inner.messages_sent()
    }

    fn udev_initialised(&self, index: u32) -> bool {
        self.inner.udev_initialised(index)
    }

    fn read_sysctl(&self, key: &Sysctl) -> Result<String, SysctlError> {
        self.inner.read_sysctl(key)
    }

    fn write_sysctl(&self, key: &Sysctl, value: &str) -> Result<(), SysctlError> {
        self.inner.write_sysctl(key, value)
    }

    type Events = K::Events;

    fn events(&self) -> Result<K::Events, NetlinkError> {
        self.inner.events()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::{Family, Mac};

    const PROTO: u8 = 233;

    fn concern() -> Concern {
        Concern {
            protocol: PROTO,
            tables: 10000..16400,
        }
    }

    fn link(index: u32, name: &str, up: bool) -> Link {
        Link {
            index,
            name: name.into(),
            mac: Some(Mac::new([2, 0, 0, 0, 0, index as u8])),
            up,
            group: 0,
            mtu: 1500,
            addresses: Vec::new(),
        }
    }

    fn route(table: u32, dst: &str, oif: u32, protocol: u8) -> KernelRoute {
        let dst: IpNet = dst.parse().unwrap();
        KernelRoute {
            route: Route {
                table,
                dst,
                gateway: None,
                dev: format!("if{oif}"),
                oif,
                src: None,
            },
            protocol,
            metric: default_metric(&dst),
        }
    }

    fn rule(from: &str, table: u32, priority: u32, protocol: u8) -> KernelRule {
        KernelRule {
            rule: Rule {
                family: Family::Ipv4,
                priority,
                from: Some(from.parse().unwrap()),
                table,
                suppress_ifgroup: None,
            },
            protocol,
            has_other_selectors: false,
            not_lookup: false,
        }
    }

    fn new_route(r: &KernelRoute) -> Change {
        Change::Route {
            route: r.clone(),
            removed: false,
            replace: false,
        }
    }

    fn del_route(r: &KernelRoute) -> Change {
        Change::Route {
            route: r.clone(),
            removed: true,
            replace: false,
        }
    }

    fn link_change(l: &Link, removed: bool) -> Change {
        Change::Link {
            index: l.index,
            added: false,
            removed,
            link: Some(l.clone()),
            names: None,
        }
    }

    /// A view loaded with eth1 (index 3), one rule and one route of ours,
    /// the main table's route, and what is none of its business.
    fn loaded() -> View {
        let mut v = View::new(concern());
        v.load(
            vec![link(1, "lo", true), link(3, "eth1", true)],
            vec![],
            vec![
                rule("10.0.2.20/32", 10001, 10001, PROTO),
                rule("10.0.2.20/32", 101, 32765, 4),
                rule("10.9.0.0/16", 500, 100, 4),
            ],
            vec![
                route(10001, "10.0.2.0/24", 3, PROTO),
                route(254, "10.0.2.0/24", 3, 2),
                route(500, "172.16.0.1/32", 3, 4),
            ],
        );
        v
    }

    #[test]
    fn a_load_keeps_only_what_is_of_concern_and_names_route_links() {
        let v = loaded();
        assert_eq!(v.stale(), None);
        let tables: Vec<u32> = v.routes().iter().map(|r| r.route.table).collect();
        assert_eq!(
            tables,
            [254, 10001],
            "table 500's foreign route is left out"
        );
        assert!(v.routes().iter().all(|r| r.route.dev == "eth1"));
        let priorities: Vec<u32> = v.rules().iter().map(|r| r.rule.priority).collect();
        // The rule ahead of the agent's (priority 100) is kept: it can take
        // its traffic. cloud-init's at 32765 into table 101 cannot.
        assert_eq!(priorities, [10001, 100]);
    }

    #[test]
    fn changes_outside_the_concern_change_nothing() {
        let mut v = loaded();
        assert!(!v.apply(&new_route(&route(500, "172.16.0.2/32", 3, 4))));
        assert!(!v.apply(&del_route(&route(500, "172.16.0.1/32", 3, 4))));
        assert!(!v.apply(&Change::Rule {
            rule: rule("10.0.2.21/32", 101, 32765, 4),
            removed: false
        }));
        assert_eq!(v.routes().len(), 2);
    }

    #[test]
    fn a_deleted_rule_or_route_of_ours_is_a_change_and_its_echo_is_not() {
        let mut v = loaded();
        let ours = rule("10.0.2.20/32", 10001, 10001, PROTO);
        let deleted = Change::Rule {
            rule: ours.clone(),
            removed: true,
        };
        assert!(v.apply(&deleted));
        assert!(v.rules().iter().all(|r| *r != ours));
        assert!(!v.apply(&deleted), "a second notification of it");
        let added = Change::Rule {
            rule: ours.clone(),
            removed: false,
        };
        assert!(v.apply(&added));
        assert!(!v.apply(&added), "the echo of our own write");

        let r = route(10001, "10.0.2.0/24", 3, PROTO);
        assert!(v.apply(&del_route(&r)));
        assert!(!v.routes().iter().any(|k| k.route.table == 10001));
        assert!(v.apply(&new_route(&r)));
        assert!(!v.apply(&new_route(&r)));
    }

    #[test]
    fn routes_are_replaced_and_deleted_by_slot_and_next_hop() {
        let mut v = loaded();
        let mut a = route(10001, "0.0.0.0/0", 3, PROTO);
        a.route.gateway = Some("10.0.2.1".parse().unwrap());
        assert!(v.apply(&new_route(&a)));
        // A second next hop beside it (`ip route append`).
        let mut b = a.clone();
        b.route.gateway = Some("10.0.2.2".parse().unwrap());
        assert!(v.apply(&new_route(&b)));
        assert_eq!(v.routes().len(), 4);
        // The same route with another source: the same kernel object.
        let mut a2 = a.clone();
        a2.route.src = Some("10.0.2.20".parse().unwrap());
        assert!(v.apply(&new_route(&a2)));
        assert_eq!(v.routes().len(), 4);
        // A replace leaves one route in the slot.
        let mut c = a.clone();
        c.route.gateway = Some("10.0.2.3".parse().unwrap());
        assert!(v.apply(&Change::Route {
            route: c.clone(),
            removed: false,
            replace: true
        }));
        let defaults: Vec<_> = v
            .routes()
            .into_iter()
            .filter(|r| r.route.dst.prefix_len() == 0)
            .collect();
        assert_eq!(defaults.len(), 1);
        assert_eq!(defaults[0].route.gateway, c.route.gateway);
        // Another metric is another slot.
        let mut d = c.clone();
        d.metric = 512;
        d.protocol = 16;
        assert!(v.apply(&new_route(&d)));
        assert!(v.apply(&del_route(&c)));
        assert_eq!(
            v.routes()
                .iter()
                .filter(|r| r.route.dst.prefix_len() == 0)
                .map(|r| r.metric)
                .collect::<Vec<_>>(),
            [512]
        );
    }

    #[test]
    fn a_removed_link_takes_its_routes_and_a_rename_renames_them() {
        let mut v = loaded();
        let mut renamed = link(3, "ens6", true);
        renamed.addresses.push(LinkAddress {
            addr: "10.9.9.9/32".parse().unwrap(),
            owned: false,
            valid_lft: None,
            proto: None,
        });
        assert!(v.apply(&link_change(&renamed, false)));
        assert!(v.routes().iter().all(|r| r.route.dev == "ens6"));
        // A link notification carries no addresses: it does not clear them.
        let addr = Change::Address {
            index: 3,
            address: LinkAddress {
                addr: "10.0.2.20/24".parse().unwrap(),
                owned: false,
                valid_lft: None,
                proto: None,
            },
            removed: false,
        };
        assert!(v.apply(&addr));
        assert!(!v.apply(&link_change(&renamed, false)));
        assert_eq!(v.links()[1].addresses.len(), 1);

        assert!(v.apply(&link_change(&renamed, true)));
        assert!(v.routes().is_empty());
        assert_eq!(v.links().len(), 1);
        assert_eq!(v.stale(), None);
    }

    #[test]
    fn what_the_kernel_flushes_unannounced_makes_the_view_stale() {
        let mut v = loaded();
        // A link without routes of concern going down: nothing to re-read.
        let mut lo = link(1, "lo", false);
        assert!(v.apply(&link_change(&lo, false)));
        assert_eq!(v.stale(), None);
        lo.up = true;
        v.apply(&link_change(&lo, false));
        // eth1 going down flushes its routes.
        assert!(v.apply(&link_change(&link(3, "eth1", false), false)));
        assert!(v.stale().is_some());

        let mut v = loaded();
        let mut r = route(10001, "0.0.0.0/0", 3, PROTO);
        r.route.src = Some("10.0.2.20".parse().unwrap());
        v.apply(&new_route(&r));
        let address = |removed| Change::Address {
            index: 3,
            address: LinkAddress {
                addr: "10.0.2.20/24".parse().unwrap(),
                owned: false,
                valid_lft: None,
                proto: None,
            },
            removed,
        };
        assert!(v.apply(&address(false)));
        assert_eq!(v.stale(), None);
        assert!(v.apply(&address(true)));
        assert!(v.stale().is_some(), "routes with that source are gone");

        let mut v = loaded();
        assert!(v.apply(&Change::Overrun));
        assert!(v.stale().is_some());
    }

    #[test]
    fn addresses_follow_their_notifications_and_stay_ours() {
        let mut v = loaded();
        let change = |owned, removed| Change::Address {
            index: 3,
            address: LinkAddress {
                addr: "10.0.2.21/32".parse().unwrap(),
                owned,
                valid_lft: None,
                proto: None,
            },
            removed,
        };
        assert!(v.apply(&change(true, false)));
        // The echo from a kernel without IFA_PROTO does not disown it.
        assert!(!v.apply(&change(false, false)));
        assert!(v.links()[1].addresses[0].owned);
        assert!(v.apply(&change(false, true)));
        assert!(v.links()[1].addresses.is_empty());
        // An address of a link the view never saw: read again.
        let mut v = loaded();
        assert!(v.apply(&Change::Address {
            index: 9,
            address: LinkAddress {
                addr: "10.0.9.9/24".parse().unwrap(),
                owned: false,
                valid_lft: None,
                proto: None,
            },
            removed: false
        }));
        assert!(v.stale().is_some());
    }

    #[test]
    fn same_as_ignores_order() {
        let a = loaded();
        let mut b = View::new(concern());
        b.load(
            vec![link(3, "eth1", true), link(1, "lo", true)],
            vec![],
            vec![
                rule("10.9.0.0/16", 500, 100, 4),
                rule("10.0.2.20/32", 10001, 10001, PROTO),
            ],
            vec![
                route(254, "10.0.2.0/24", 3, 2),
                route(10001, "10.0.2.0/24", 3, PROTO),
            ],
        );
        assert!(a.same_as(&b));
        b.apply(&del_route(&route(254, "10.0.2.0/24", 3, 2)));
        assert!(!a.same_as(&b));
    }
}
