//! The desired state: a pure function of metadata, the links present and the
//! configuration. Nothing here talks to the kernel or the network.
//!
//! Routing scheme (numbering shared with amazon-ec2-net-utils):
//! - ENI (card c, device d) gets table T = base + 100*c + d; its rules use
//!   priority T.
//! - Table T: the subnet route (`scope link src <primary>`) and a default
//!   route via the subnet router; the IPv6 equivalents.
//! - Rules `from <addr> lookup T` for every address and delegated prefix of
//!   every managed ENI, the primary ENI included.
//! - Managed ENI links join one interface group, and one rule per family
//!   `lookup main suppress_ifgroup G` at priority base-1 comes first: main's
//!   answer stands whenever it leaves through a link that is not an ENI (a
//!   docker bridge, a tunnel), so return traffic to containers keeps working
//!   even though the primary address has a rule; anything that would leave
//!   through an ENI falls through to the per-ENI rules, which is what keeps
//!   two ENIs in one subnet apart.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::Serialize;

use crate::config::{Config, EniOptions, UserRoute};
use crate::imds::model::{Eni, EniState, Instance};
use crate::values::{
    Address, EniKey, Family, Link, LinkSettings, Mac, Route, Rule, Warning, MAIN_TABLE,
};

/// The IPv6 router of every Nitro subnet.
pub const IPV6_ROUTER: Ipv6Addr = Ipv6Addr::new(0xfe80, 0xec2, 0, 0, 0, 0, 0, 1);

/// What became of one ENI of the metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EniSummary {
    pub mac: Mac,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<EniKey>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
    #[serde(skip)]
    pub index: Option<u32>,
    pub status: EniStatus,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<IpNet>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "state", content = "reason")]
pub enum EniStatus {
    Managed,
    /// Excluded by configuration: never touched.
    Excluded,
    /// In metadata, but no link with its MAC is present (yet).
    NoLink,
    NotReady(String),
    Invalid(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub enis: Vec<EniSummary>,
    pub links: Vec<LinkSettings>,
    pub addresses: Vec<Address>,
    pub routes: Vec<Route>,
    pub rules: Vec<Rule>,
    /// Things a user should know: overlapping CIDRs, invalid metadata,
    /// user routes that cannot be honoured.
    pub warnings: Vec<Warning>,
}

impl Plan {
    /// Links whose ENI the agent knows too little about right now (metadata
    /// still settling, or a value that failed validation): whatever is
    /// configured for them stays as it is until metadata is whole again.
    pub fn uncertain_links(&self) -> std::collections::BTreeSet<u32> {
        self.enis
            .iter()
            .filter(|e| matches!(e.status, EniStatus::NotReady(_) | EniStatus::Invalid(_)))
            .filter_map(|e| e.index)
            .collect()
    }

    /// ENIs held: their link is on the host, and what metadata says of them
    /// is not applied (a value no ENI can have, an address listed on two
    /// ENIs, a table another ENI has, or a removal a second read has not
    /// confirmed yet). Their links keep what they have until metadata is
    /// consistent again.
    pub fn held(&self) -> impl Iterator<Item = &EniSummary> {
        self.enis.iter().filter(|e| {
            e.index.is_some()
                && match &e.status {
                    EniStatus::Invalid(_) => true,
                    EniStatus::NotReady(_) => self.warnings.iter().any(|w| {
                        matches!(w, Warning::UnconfirmedRemoval { dev, .. }
                            if e.dev.as_ref() == Some(dev))
                    }),
                    _ => false,
                }
        })
    }

    /// Links of ENIs that configuration excludes: never touched.
    pub fn excluded_links(&self) -> std::collections::BTreeSet<u32> {
        self.enis
            .iter()
            .filter(|e| e.status == EniStatus::Excluded)
            .filter_map(|e| e.index)
            .collect()
    }
}

/// Computes the desired state.
pub fn plan(instance: &Instance, links: &[Link], config: &Config) -> Plan {
    let mut plan = Plan::default();
    let base = config.numbering.table_base;
    // A VLAN or macvlan on top of an ENI shares its MAC; the ENI itself is
    // the link created first, so the lowest ifindex wins.
    let mut by_mac: BTreeMap<Mac, &Link> = BTreeMap::new();
    for l in links {
        if let Some(m) = l.mac {
            by_mac
                .entry(m)
                .and_modify(|cur| {
                    if l.index < cur.index {
                        *cur = l
                    }
                })
                .or_insert(l);
        }
    }
    let primary_vpc_v4: Vec<Ipv4Net> = instance
        .ready()
        .find(|e| e.mac == instance.primary_mac)
        .map(|e| e.vpc_v4.clone())
        .unwrap_or_default();
    let primary_vpc_v6: Vec<Ipv6Net> = instance
        .ready()
        .find(|e| e.mac == instance.primary_mac)
        .map(|e| e.vpc_v6.clone())
        .unwrap_or_default();
    let primary_vpc_id = instance
        .ready()
        .find(|e| e.mac == instance.primary_mac)
        .and_then(|e| e.vpc_id.clone());

    let mut enis: Vec<&EniState> = instance.enis.iter().collect();
    enis.sort_by_key(|e| match e {
        EniState::Ready(eni) => (0, Some(eni.key), e.mac()),
        _ => (1, None, e.mac()),
    });
    let mut tables_seen: BTreeMap<u32, Mac> = BTreeMap::new();
    for state in enis {
        let eni = match state {
            EniState::Ready(eni) => eni,
            EniState::NotReady { mac, reason } => {
                let s = summary(*mac, None, EniStatus::NotReady(reason.clone()));
                plan.enis.push(with_link(s, by_mac.get(mac)));
                continue;
            }
            EniState::Invalid { mac, error } => {
                plan.warnings.push(Warning::InvalidMetadata(error.clone()));
                let s = summary(*mac, None, EniStatus::Invalid(error.clone()));
                plan.enis.push(with_link(s, by_mac.get(mac)));
                continue;
            }
        };
        let mut s = summary(eni.mac, Some(eni), EniStatus::NoLink);
        let Some(link) = by_mac.get(&eni.mac) else {
            plan.enis.push(s);
            continue;
        };
        s.dev = Some(link.name.clone());
        s.index = Some(link.index);
        if config.excluded(&eni.facts(&link.name)) {
            s.status = EniStatus::Excluded;
            plan.enis.push(s);
            continue;
        }
        if let Some(warning) = unconfirmed_bare(eni, link, instance) {
            s.status = EniStatus::NotReady(warning.to_string());
            plan.warnings.push(warning);
            plan.enis.push(s);
            continue;
        }
        let table = eni.key.table(base);
        if let Some(other) = tables_seen.insert(table, eni.mac) {
            let warning = Warning::TableTaken {
                eni: eni.label(),
                table,
                holder: other,
                key: eni.key,
            };
            s.status = EniStatus::Invalid(warning.to_string());
            plan.warnings.push(warning);
            plan.enis.push(s);
            continue;
        }
        s.table = Some(table);
        let opts = config.options_for(&eni.facts(&link.name));
        let is_primary = eni.mac == instance.primary_mac;
        // Where another agent hands the primary ENI's secondary addresses
        // to pods or tasks, they are theirs: neither on the host nor ruled.
        let leave = is_primary
            && config.selection.primary_secondary_ips == crate::config::SecondaryIps::Leave;
        let mut b = EniPlanner {
            eni,
            link,
            table,
            opts: &opts,
            plan: &mut plan,
            leave_secondaries: leave,
        };
        b.link_settings(config.numbering.ifgroup);
        b.addresses();
        b.table_routes();
        if !is_primary || config.selection.primary_rules {
            b.rules();
        }
        b.user_main_routes();
        let other_vpc = eni.vpc_id.is_some() && eni.vpc_id != primary_vpc_id;
        if !is_primary && other_vpc && opts.cross_vpc {
            b.cross_vpc_routes(&primary_vpc_v4, &primary_vpc_v6);
        }
        s.status = EniStatus::Managed;
        plan.enis.push(s);
    }

    // Listed but not read, since no link had the MAC when metadata was
    // read: a link that appeared since waits for its read, like a new ENI.
    for mac in &instance.unread {
        if let Some(link) = by_mac.get(mac) {
            let reason = "listed in metadata, not read yet (its link appeared after the read)";
            let s = summary(*mac, None, EniStatus::NotReady(reason.into()));
            plan.enis.push(with_link(s, Some(link)));
        }
    }

    for family in [Family::Ipv4, Family::Ipv6] {
        if plan.rules.iter().any(|r| r.family == family) {
            plan.rules.push(Rule {
                family,
                priority: base.saturating_sub(1),
                from: None,
                table: MAIN_TABLE,
                suppress_ifgroup: Some(config.numbering.ifgroup),
            });
        }
    }
    plan.addresses.sort();
    plan.addresses.dedup();
    plan.routes.sort();
    plan.routes.dedup_by(|a, b| a.key() == b.key());
    plan.rules.sort();
    plan.rules.dedup();
    plan
}

/// One read that would strip an up link of every IPv4 address is more
/// likely a metadata hiccup (an empty 200 or a 404 for one poll) than the
/// operator removing the ENI's primary address, which EC2 does not allow:
/// it is applied only once a second read says the same. The same holds for
/// `ipv6s` on a link that carries an IPv6 address of the ENI's subnets (or
/// one eniroute added): its addresses, rules and routes would all go.
fn unconfirmed_bare(eni: &Eni, link: &Link, instance: &Instance) -> Option<Warning> {
    if !link.up {
        return None;
    }
    let has_v4 = link
        .addresses
        .iter()
        .any(|a| matches!(a.addr, IpNet::V4(_)));
    let key = if eni.ipv4s.is_empty() && has_v4 && !instance.confirmed_bare.contains(&eni.mac) {
        "local-ipv4s"
    } else if eni.ipv6s.is_empty()
        && has_eni_v6(eni, link)
        && !instance.confirmed_bare_v6.contains(&eni.mac)
    {
        "ipv6s"
    } else {
        return None;
    };
    Some(Warning::UnconfirmedRemoval {
        eni: eni.label(),
        dev: link.name.clone(),
        key,
    })
}

/// Whether the link carries an IPv6 address that belongs to the ENI: one of
/// its subnets', or one eniroute put there. Link-local addresses every link
/// has; they say nothing.
fn has_eni_v6(eni: &Eni, link: &Link) -> bool {
    link.addresses.iter().any(|a| match a.addr {
        IpNet::V6(n) => {
            let ip = n.addr();
            ip.segments()[0] & 0xffc0 != 0xfe80
                && (a.owned || eni.subnet_v6.iter().any(|s| s.contains(&ip)))
        }
        IpNet::V4(_) => false,
    })
}

fn with_link(mut s: EniSummary, link: Option<&&Link>) -> EniSummary {
    if let Some(l) = link {
        s.dev = Some(l.name.clone());
        s.index = Some(l.index);
    }
    s
}

fn summary(mac: Mac, eni: Option<&Eni>, status: EniStatus) -> EniSummary {
    EniSummary {
        mac,
        interface_id: eni.and_then(|e| e.interface_id.clone()),
        key: eni.map(|e| e.key),
        table: None,
        dev: None,
        index: None,
        status,
        addresses: eni.map(eni_addresses).unwrap_or_default(),
    }
}

fn eni_addresses(eni: &Eni) -> Vec<IpNet> {
    eni.ipv4s
        .iter()
        .map(|a| IpNet::from(IpAddr::V4(*a)))
        .chain(eni.ipv4_prefixes.iter().map(|p| IpNet::V4(*p)))
        .chain(eni.ipv6s.iter().map(|a| IpNet::from(IpAddr::V6(*a))))
        .chain(eni.ipv6_prefixes.iter().map(|p| IpNet::V6(*p)))
        .collect()
}

struct EniPlanner<'a> {
    eni: &'a Eni,
    link: &'a Link,
    table: u32,
    opts: &'a EniOptions,
    plan: &'a mut Plan,
    /// The ENI's secondary IPv4 addresses and IPv4 prefixes are another
    /// agent's (pods, tasks).
    leave_secondaries: bool,
}

impl EniPlanner<'_> {
    fn link_settings(&mut self, group: u32) {
        self.plan.links.push(LinkSettings {
            index: self.link.index,
            dev: self.link.name.clone(),
            group,
            mtu: self.opts.mtu,
            forwarding: self.opts.forwarding,
            rp_filter: self.opts.rp_filter,
        });
    }

    /// Whether the link carries `ip` already, put there by someone else
    /// (DHCP, an operator): then it is theirs and stays as it is.
    fn foreign_has(&self, ip: IpAddr) -> bool {
        self.link
            .addresses
            .iter()
            .any(|a| !a.owned && a.addr.addr() == ip)
    }

    fn address(&mut self, address: IpNet, noprefixroute: bool) {
        if self.foreign_has(address.addr()) {
            return;
        }
        self.plan.addresses.push(Address {
            index: self.link.index,
            dev: self.link.name.clone(),
            address,
            noprefixroute,
        });
    }

    fn addresses(&mut self) {
        if !self.opts.assign_addresses {
            return;
        }
        let eni = self.eni;
        if let (Some(primary), Some(subnet)) = (eni.primary_ipv4(), eni.subnet_v4) {
            // Hot-plugged ENIs often get no DHCP lease: give the link its
            // primary address with the subnet prefix, unless someone else
            // already put an address from that subnet there, or a DHCP
            // client or a network manager serves the link (an IPv4 address
            // with a lifetime or a protocol of its own, now or a moment
            // ago): the primary is theirs to add, also while it is briefly
            // gone (`networkctl reconfigure`).
            let foreign_in_subnet =
                self.link.addresses.iter().any(|a| {
                    !a.owned && matches!(a.addr, IpNet::V4(n) if subnet.contains(&n.addr()))
                });
            let dhcp = self
                .link
                .addresses
                .iter()
                .any(|a| a.managed_elsewhere() && matches!(a.addr, IpNet::V4(_)));
            if !foreign_in_subnet && !dhcp {
                let net = Ipv4Net::new(primary, subnet.prefix_len()).unwrap_or(subnet);
                self.address(IpNet::V4(net), false);
            }
        }
        if !self.leave_secondaries {
            for ip in eni.ipv4s.iter().skip(1) {
                self.address(IpNet::from(IpAddr::V4(*ip)), true);
            }
        }
        for ip in &eni.ipv6s {
            self.address(IpNet::from(IpAddr::V6(*ip)), true);
        }
        if self.opts.assign_prefix_addresses {
            let v4 = if self.leave_secondaries {
                &[][..]
            } else {
                &eni.ipv4_prefixes[..]
            };
            for prefix in v4 {
                for ip in prefix.hosts().chain([prefix.network(), prefix.broadcast()]) {
                    self.address(IpNet::from(IpAddr::V4(ip)), true);
                }
            }
            // An IPv6 prefix is far too large to enumerate: its first address
            // is assigned so the host can use the prefix at all.
            for prefix in &eni.ipv6_prefixes {
                let first = u128::from(prefix.network()).saturating_add(1);
                self.address(IpNet::from(IpAddr::V6(Ipv6Addr::from(first))), true);
            }
        }
    }

    fn route(&mut self, table: u32, dst: IpNet, gateway: Option<IpAddr>, src: Option<IpAddr>) {
        self.plan.routes.push(Route {
            table,
            dst,
            gateway,
            dev: self.link.name.clone(),
            oif: self.link.index,
            src,
        });
    }

    /// The primary address as a route's preferred source, when the link
    /// will have it: the kernel refuses a source the host does not hold,
    /// as while a DHCP client has dropped the primary for a moment.
    fn primary_src(&self) -> Option<IpAddr> {
        let primary = IpAddr::V4(self.eni.primary_ipv4()?);
        let held = self
            .link
            .addresses
            .iter()
            .any(|a| a.addr.addr() == primary && a.valid_lft != Some(0));
        let added = self
            .plan
            .addresses
            .iter()
            .any(|a| a.index == self.link.index && a.address.addr() == primary);
        (held || added).then_some(primary)
    }

    fn table_routes(&mut self) {
        let eni = self.eni;
        let t = self.table;
        if let (Some(subnet), Some(router)) = (eni.subnet_v4, eni.router_v4()) {
            let src = self.primary_src();
            self.route(t, IpNet::V4(subnet), None, src);
            self.route(
                t,
                IpNet::V4(Ipv4Net::default()),
                Some(IpAddr::V4(router)),
                None,
            );
        }
        if !eni.ipv6s.is_empty() || !eni.ipv6_prefixes.is_empty() {
            for subnet in &eni.subnet_v6 {
                self.route(t, IpNet::V6(*subnet), None, None);
            }
            self.route(
                t,
                IpNet::V6(Ipv6Net::default()),
                Some(IpAddr::V6(IPV6_ROUTER)),
                None,
            );
        }
        for r in self.opts.table_routes.clone() {
            if let Some(gw) = self.user_gateway(&r) {
                self.route(t, r.dst, Some(gw), None);
            }
        }
    }

    fn rules(&mut self) {
        let mut from: Vec<IpNet> = eni_addresses(self.eni);
        if self.leave_secondaries {
            let primary = self.eni.primary_ipv4().map(|p| IpNet::from(IpAddr::V4(p)));
            from.retain(|n| matches!(n, IpNet::V6(_)) || Some(*n) == primary);
        }
        for net in from {
            self.plan.rules.push(Rule {
                family: Family::of(&net),
                priority: self.table,
                from: Some(net),
                table: self.table,
                suppress_ifgroup: None,
            });
        }
    }

    /// The gateway for a user route: the one given (which must be on the
    /// ENI's subnet), or the subnet router of the route's family.
    fn user_gateway(&mut self, r: &UserRoute) -> Option<IpAddr> {
        let eni = self.eni;
        let gw = match (r.via, r.dst) {
            (Some(gw), _) => gw,
            (None, IpNet::V4(_)) => IpAddr::V4(eni.router_v4()?),
            (None, IpNet::V6(_)) => IpAddr::V6(IPV6_ROUTER),
        };
        let on_subnet = match gw {
            IpAddr::V4(g) => eni.subnet_v4.is_some_and(|s| s.contains(&g)),
            IpAddr::V6(g) => {
                g.segments()[0] == 0xfe80 || eni.subnet_v6.iter().any(|s| s.contains(&g))
            }
        };
        if !on_subnet || Family::of(&r.dst) != family_of_ip(gw) {
            self.plan.warnings.push(Warning::GatewayOffSubnet {
                eni: eni.label(),
                dev: self.link.name.clone(),
                dst: r.dst,
                gateway: gw,
            });
            return None;
        }
        Some(gw)
    }

    fn user_main_routes(&mut self) {
        let src4 = self.primary_src();
        for r in self.opts.main_routes.clone() {
            if let Some(gw) = self.user_gateway(&r) {
                let src = if matches!(r.dst, IpNet::V4(_)) {
                    src4
                } else {
                    None
                };
                self.route(MAIN_TABLE, r.dst, Some(gw), src);
            }
        }
    }

    /// A secondary ENI from another VPC: that VPC's CIDRs are reachable
    /// through it without binding a source, except where they overlap the
    /// primary VPC, which must keep winning for its own addresses.
    fn cross_vpc_routes(&mut self, primary_v4: &[Ipv4Net], primary_v6: &[Ipv6Net]) {
        let eni = self.eni;
        let src = self.primary_src();
        if let Some(router) = eni.router_v4() {
            for cidr in &eni.vpc_v4 {
                if let Some(p) = primary_v4
                    .iter()
                    .find(|p| p.contains(cidr) || cidr.contains(*p))
                {
                    self.plan.warnings.push(Warning::VpcOverlap {
                        eni: eni.label(),
                        dev: self.link.name.clone(),
                        cidr: IpNet::V4(*cidr),
                        primary: IpNet::V4(*p),
                    });
                    continue;
                }
                self.route(MAIN_TABLE, IpNet::V4(*cidr), Some(IpAddr::V4(router)), src);
            }
        }
        if !eni.ipv6s.is_empty() {
            for cidr in &eni.vpc_v6 {
                if let Some(p) = primary_v6
                    .iter()
                    .find(|p| p.contains(cidr) || cidr.contains(*p))
                {
                    self.plan.warnings.push(Warning::VpcOverlap {
                        eni: eni.label(),
                        dev: self.link.name.clone(),
                        cidr: IpNet::V6(*cidr),
                        primary: IpNet::V6(*p),
                    });
                    continue;
                }
                self.route(
                    MAIN_TABLE,
                    IpNet::V6(*cidr),
                    Some(IpAddr::V6(IPV6_ROUTER)),
                    None,
                );
            }
        }
    }
}

fn family_of_ip(ip: IpAddr) -> Family {
    match ip {
        IpAddr::V4(_) => Family::Ipv4,
        IpAddr::V6(_) => Family::Ipv6,
    }
}

impl std::fmt::Display for EniStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EniStatus::Managed => f.write_str("managed"),
            EniStatus::Excluded => f.write_str("excluded by configuration"),
            EniStatus::NoLink => f.write_str("no link with this MAC"),
            EniStatus::NotReady(r) => write!(f, "waiting for metadata: {r}"),
            EniStatus::Invalid(r) => write!(f, "invalid metadata: {r}"),
        }
    }
}

/// The desired state, one object per line, as `eniroute plan` prints it.
impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for e in &self.enis {
            write!(f, "eni {}", e.mac)?;
            if let Some(id) = &e.interface_id {
                write!(f, " {id}")?;
            }
            if let Some(k) = e.key {
                write!(f, " card {} device {}", k.card, k.device)?;
            }
            if let Some(dev) = &e.dev {
                write!(f, " dev {dev}")?;
            }
            if let Some(t) = e.table {
                write!(f, " table {t}")?;
            }
            writeln!(f, ": {}", e.status)?;
        }
        for l in &self.links {
            write!(f, "link {} up group {}", l.dev, l.group)?;
            if let Some(m) = l.mtu {
                write!(f, " mtu {m}")?;
            }
            if let Some(fw) = l.forwarding {
                write!(f, " forwarding {}", if fw { "on" } else { "off" })?;
            }
            if let Some(rp) = l.rp_filter {
                write!(f, " rp_filter {}", rp.sysctl_value())?;
            }
            writeln!(f)?;
        }
        for a in &self.addresses {
            writeln!(f, "{a}")?;
        }
        for r in &self.routes {
            writeln!(f, "{r}")?;
        }
        for r in &self.rules {
            writeln!(f, "{r}")?;
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imds::{parse, tree};

    fn management() -> Instance {
        let path = format!(
            "{}/tests/fixtures/imds/management-network.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let t: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        parse::instance_from(|p| tree::lookup(&t, p)).unwrap()
    }

    fn eth1(addresses: &[(&str, Option<u32>)]) -> Vec<Link> {
        vec![Link {
            index: 3,
            name: "eth1".into(),
            mac: Some("0a:00:00:00:00:02".parse().unwrap()),
            up: true,
            group: 0,
            mtu: 9001,
            addresses: addresses
                .iter()
                .map(|(a, valid_lft)| crate::values::LinkAddress {
                    addr: a.parse().unwrap(),
                    owned: false,
                    valid_lft: *valid_lft,
                    proto: None,
                })
                .collect(),
        }]
    }

    fn lines(p: &Plan) -> Vec<String> {
        p.to_string().lines().map(str::to_string).collect()
    }

    /// Where a DHCP client serves the link, its primary address is the
    /// client's: never added by the agent, also while it is gone for a
    /// moment (a lease remembered, `valid_lft` 0); secondaries, rules and
    /// routes are planned as ever, the subnet route without a source the
    /// host does not hold. A bare link gets its primary, as before.
    #[test]
    fn the_primary_is_left_to_a_dhcp_client() {
        let inst = management();
        let cfg = Config::default();
        let subnet_route =
            |src: &str| format!("route 10.0.2.0/24 dev eth1 scope link{src} table 10001");
        for (addresses, src) in [
            (vec![("10.0.2.20/24", Some(3600))], " src 10.0.2.20"),
            (vec![("10.0.2.20/24", Some(0))], ""),
        ] {
            let p = plan(&inst, &eth1(&addresses), &cfg);
            let l = lines(&p);
            assert!(
                !l.iter().any(|x| x.starts_with("address 10.0.2.20/24")),
                "{l:#?}"
            );
            assert!(
                l.contains(&"address 10.0.2.21/32 dev eth1".to_string()),
                "{l:#?}"
            );
            assert!(l.contains(&subnet_route(src)), "{l:#?}");
            for ip in ["10.0.2.20", "10.0.2.21"] {
                assert!(
                    l.contains(&format!("rule from {ip} lookup 10001 priority 10001")),
                    "{l:#?}"
                );
            }
        }
        // A DHCP client elsewhere on the link (another address with a
        // lifetime) counts too.
        let p = plan(&inst, &eth1(&[("192.168.0.5/24", Some(600))]), &cfg);
        assert!(!lines(&p)
            .iter()
            .any(|x| x.starts_with("address 10.0.2.20/24")));
        // A network manager's permanent address elsewhere on the link (a
        // protocol of its own in IFA_PROTO) counts too; the kernel's own
        // protocols are no manager, and neither is an address without one.
        let managed = |proto: Option<u8>| {
            let mut links = eth1(&[("192.168.0.5/24", None)]);
            links[0].addresses[0].proto = proto;
            lines(&plan(&inst, &links, &cfg))
                .iter()
                .any(|x| x.starts_with("address 10.0.2.20/24"))
        };
        assert!(!managed(Some(4)), "a manager's address");
        assert!(managed(None), "no manager named");
        // Nothing serves a bare link: the agent gives it its primary.
        let p = plan(&inst, &eth1(&[]), &cfg);
        let l = lines(&p);
        assert!(
            l.contains(&"address 10.0.2.20/24 dev eth1".to_string()),
            "{l:#?}"
        );
        assert!(l.contains(&subnet_route(" src 10.0.2.20")), "{l:#?}");
    }

    #[test]
    fn a_vlan_sharing_the_enis_mac_does_not_take_its_place() {
        let path = format!(
            "{}/tests/fixtures/imds/management-network.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let t: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let instance = parse::instance_from(|p| tree::lookup(&t, p)).unwrap();
        let link = |index, name: &str, mac: &str| Link {
            index,
            name: name.into(),
            mac: Some(mac.parse().unwrap()),
            up: true,
            group: 0,
            mtu: 9001,
            addresses: vec![],
        };
        // The VLAN is listed first, as a dump may order it.
        let links = vec![
            link(7, "eth1.100", "0a:00:00:00:00:02"),
            link(2, "eth0", "0a:00:00:00:00:01"),
            link(3, "eth1", "0a:00:00:00:00:02"),
        ];
        let p = plan(&instance, &links, &Config::default());
        assert!(p
            .routes
            .iter()
            .filter(|r| r.table == 10001)
            .all(|r| r.dev == "eth1"));
        assert!(p.links.iter().all(|l| l.dev != "eth1.100"));
    }
}
