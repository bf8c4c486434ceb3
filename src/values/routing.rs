//! Links, addresses, routes and rules as plain data. The plan produces them,
//! the netlink layer reads and writes them, the reconciler compares them;
//! none of them is a netlink message.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::Mac;

/// The main routing table.
pub const MAIN_TABLE: u32 = 254;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub fn of(net: &IpNet) -> Family {
        match net {
            IpNet::V4(_) => Family::Ipv4,
            IpNet::V6(_) => Family::Ipv6,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Ipv4 => "inet",
            Family::Ipv6 => "inet6",
        })
    }
}

/// An address on a link, as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkAddress {
    pub addr: IpNet,
    /// Added by eniroute (kernel `IFA_PROTO` or the state file says so).
    pub owned: bool,
    /// Seconds the address stays valid, `None` for forever. A finite
    /// lifetime is what a DHCP client (or router advertisements) leaves:
    /// the address is that client's, renewed or dropped by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_lft: Option<u32>,
    /// The kernel's `IFA_PROTO` when someone else added the address with a
    /// protocol of their own (a network manager marks its addresses so
    /// where the kernel keeps it); `None` for none, eniroute's own, and the
    /// kernel's (loopback, router advertisement, link-local).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<u8>,
}

impl LinkAddress {
    /// Someone else's and kept up by them: a DHCP client's (a finite
    /// lifetime) or a network manager's (a protocol of its own). Its owner
    /// puts it back if it goes; eniroute must not.
    pub fn managed_elsewhere(&self) -> bool {
        !self.owned && (self.valid_lft.is_some() || self.proto.is_some())
    }
}

/// A network interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<Mac>,
    pub up: bool,
    pub group: u32,
    pub mtu: u32,
    pub addresses: Vec<LinkAddress>,
}

/// An address eniroute wants on a link.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Address {
    #[serde(skip)]
    pub index: u32,
    pub dev: String,
    /// Address with prefix length, e.g. `10.0.2.21/32`.
    pub address: IpNet,
    /// Secondary addresses are /32 or /128 and must not add a prefix route.
    #[serde(skip)]
    pub noprefixroute: bool,
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "address {} dev {}", self.address, self.dev)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Route {
    pub table: u32,
    pub dst: IpNet,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    pub dev: String,
    #[serde(skip)]
    pub oif: u32,
    /// Preferred source, so unbound sockets pick this ENI's primary address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src: Option<IpAddr>,
}

impl Route {
    /// Two routes with the same key occupy the same slot in the kernel: a
    /// change of gateway, device or source is a replace, not add + delete.
    pub fn key(&self) -> (u32, IpNet) {
        (self.table, self.dst)
    }

    /// Equality as the kernel sees it (by ifindex; the name is for people).
    pub fn same_as(&self, other: &Route) -> bool {
        self.table == other.table
            && self.dst == other.dst
            && self.gateway == other.gateway
            && self.oif == other.oif
            && self.src == other.src
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dst = if self.dst.prefix_len() == 0 {
            "default".to_string()
        } else {
            self.dst.to_string()
        };
        write!(f, "route {dst}")?;
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        write!(f, " dev {}", self.dev)?;
        if self.gateway.is_none() && matches!(self.dst, IpNet::V4(_)) {
            write!(f, " scope link")?;
        }
        if let Some(src) = self.src {
            write!(f, " src {src}")?;
        }
        write!(f, " table {}", table_name(self.table))
    }
}

pub fn table_name(table: u32) -> String {
    match table {
        MAIN_TABLE => "main".into(),
        255 => "local".into(),
        253 => "default".into(),
        t => t.to_string(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Rule {
    pub family: Family,
    pub priority: u32,
    /// `None` is `from all`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<IpNet>,
    pub table: u32,
    /// `lookup main suppress_ifgroup G`: ignore main's answer when it would
    /// leave through a managed ENI.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suppress_ifgroup: Option<u32>,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rule")?;
        if self.family == Family::Ipv6 {
            write!(f, " -6")?;
        }
        match self.from {
            Some(net) if net.prefix_len() == net.max_prefix_len() => {
                write!(f, " from {}", net.addr())?
            }
            Some(net) => write!(f, " from {net}")?,
            None => write!(f, " from all")?,
        }
        write!(f, " lookup {}", table_name(self.table))?;
        if let Some(g) = self.suppress_ifgroup {
            write!(f, " suppress_ifgroup {g}")?;
        }
        write!(f, " priority {}", self.priority)
    }
}

/// A rule as read from the kernel, with what tells whose it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRule {
    pub rule: Rule,
    pub protocol: u8,
    /// The rule matches on something eniroute does not model (iif, fwmark,
    /// uid range, ...): never ours, and not a plain source rule.
    pub has_other_selectors: bool,
    /// The rule's action is not "lookup table" (blackhole, goto, ...).
    pub not_lookup: bool,
}

/// A route as read from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRoute {
    pub route: Route,
    pub protocol: u8,
    /// `RTA_PRIORITY`: two routes to one destination with different
    /// metrics are two kernel objects (systemd-networkd gives DHCP routes
    /// the link's RouteMetric, eniroute leaves the kernel's default).
    pub metric: u32,
}

/// The kernel's default metric for a route written without one: 0 for
/// IPv4, 1024 for IPv6 (`IP6_RT_PRIO_USER`). eniroute's routes carry it.
pub fn default_metric(dst: &IpNet) -> u32 {
    match dst {
        IpNet::V4(_) => 0,
        IpNet::V6(_) => 1024,
    }
}

/// Per-link settings for a managed ENI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkSettings {
    #[serde(skip)]
    pub index: u32,
    pub dev: String,
    pub group: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forwarding: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rp_filter: Option<RpFilter>,
}

/// Reverse-path filtering on a link (`net.ipv4.conf.<dev>.rp_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RpFilter {
    Off,
    Strict,
    Loose,
}

impl RpFilter {
    pub fn sysctl_value(self) -> &'static str {
        match self {
            RpFilter::Off => "0",
            RpFilter::Strict => "1",
            RpFilter::Loose => "2",
        }
    }
}
