//! Building rtnetlink messages from our values and reading our values back
//! out of the kernel's messages. Pure functions: everything here is tested
//! without root.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressProtocol,
    AddressScope,
};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType, RouteVia,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleFlags, RuleMessage};
use netlink_packet_route::AddressFamily;

use crate::netlink::LinkChange;
use crate::values::{
    Address, Family, KernelRoute, KernelRule, Link, LinkAddress, Mac, Route, Rule,
};

/// `FRA_PAD` from `<linux/fib_rules.h>`: alignment padding in rule dumps, not
/// a selector. netlink-packet-route leaves it out of `RuleAttribute`, and
/// libc does not define it.
const FRA_PAD: u16 = 18;

fn address_family(family: Family) -> AddressFamily {
    match family {
        Family::Ipv4 => AddressFamily::Inet,
        Family::Ipv6 => AddressFamily::Inet6,
    }
}

fn family_of(family: AddressFamily) -> Option<Family> {
    match family {
        AddressFamily::Inet => Some(Family::Ipv4),
        AddressFamily::Inet6 => Some(Family::Ipv6),
        _ => None,
    }
}

fn ip_family(addr: IpAddr) -> AddressFamily {
    match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// The table byte of a rule or route header. Table ids above 255 do not fit
/// in it: the kernel reads them from the `FRA_TABLE`/`RTA_TABLE` attribute,
/// which we therefore always send, and the header says "unspecified".
fn header_table(table: u32) -> u8 {
    u8::try_from(table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC)
}

// ---------------------------------------------------------------- rules

/// `ip rule add|del [from <prefix>] lookup <table> [suppress_ifgroup <g>]
/// priority <p> proto <protocol>`.
pub(crate) fn rule_message(rule: &Rule, protocol: u8) -> RuleMessage {
    let mut msg = RuleMessage::default();
    msg.header.family = address_family(rule.family);
    msg.header.table = header_table(rule.table);
    // The trap: a rule built without an action is FR_ACT_UNSPEC. The kernel
    // accepts it, and every lookup that reaches it then fails with EINVAL,
    // so all traffic from that source breaks. A lookup rule must say so.
    msg.header.action = RuleAction::ToTable;
    msg.attributes.push(RuleAttribute::Table(rule.table));
    msg.attributes.push(RuleAttribute::Priority(rule.priority));
    if let Some(from) = rule.from {
        msg.header.src_len = from.prefix_len();
        msg.attributes.push(RuleAttribute::Source(from.addr()));
    }
    if let Some(group) = rule.suppress_ifgroup {
        msg.attributes.push(RuleAttribute::SuppressIfGroup(group));
    }
    // Ownership mark: `ip rule` shows it, and a delete carrying it only
    // matches a rule with the same protocol.
    msg.attributes
        .push(RuleAttribute::Protocol(RouteProtocol::from(protocol)));
    msg
}

/// Reads a rule dump entry; `None` for families other than IPv4/IPv6
/// (multicast routing rules share the dump).
pub(crate) fn parse_rule(msg: &RuleMessage) -> Option<KernelRule> {
    let family = family_of(msg.header.family)?;
    let header = &msg.header;
    let mut table = u32::from(header.table);
    let mut priority = 0;
    let mut source = None;
    let mut suppress_ifgroup = None;
    let mut protocol = 0;
    // Selectors eniroute does not model make a rule "not a plain source
    // rule": it is never ours and never a conflict we can reason about.
    let mut other =
        header.dst_len != 0 || header.tos != 0 || header.flags.contains(RuleFlags::Invert);
    for attr in &msg.attributes {
        match attr {
            // Tables above 255 only exist here; the header holds a
            // placeholder (RT_TABLE_COMPAT) for them.
            RuleAttribute::Table(t) => table = *t,
            RuleAttribute::Priority(p) => priority = *p,
            RuleAttribute::Source(addr) => source = Some(*addr),
            // The kernel reports "unset" as -1.
            RuleAttribute::SuppressIfGroup(g) if *g != u32::MAX => suppress_ifgroup = Some(*g),
            RuleAttribute::SuppressIfGroup(_) => {}
            RuleAttribute::SuppressPrefixLen(l) => other |= *l != u32::MAX,
            RuleAttribute::Protocol(p) => protocol = u8::from(*p),
            RuleAttribute::FwMark(v) | RuleAttribute::FwMask(v) => other |= *v != 0,
            RuleAttribute::TunId(v) => other |= *v != 0,
            RuleAttribute::L3MDev(v) => other |= *v,
            // The goto target belongs to the action, which not_lookup covers.
            RuleAttribute::Goto(_) => {}
            // The dump carries optional attributes only when they are set,
            // so anything else present is a selector we do not know.
            RuleAttribute::Other(nla) if nla_kind(nla) == FRA_PAD => {}
            _ => other = true,
        }
    }
    let from = match source {
        Some(addr) if header.src_len != 0 => match IpNet::new(addr, header.src_len) {
            Ok(net) => Some(net),
            // A prefix we cannot represent: keep the rule visible as foreign.
            Err(_) => {
                other = true;
                None
            }
        },
        _ => None,
    };
    Some(KernelRule {
        rule: Rule {
            family,
            priority,
            from,
            table,
            suppress_ifgroup,
        },
        protocol,
        has_other_selectors: other,
        not_lookup: header.action != RuleAction::ToTable,
    })
}

/// Alignment padding in a rule dump, not a selector.
pub(crate) fn is_rule_padding(nla: &netlink_packet_core::DefaultNla) -> bool {
    nla_kind(nla) == FRA_PAD
}

pub(crate) fn nla_kind(nla: &netlink_packet_core::DefaultNla) -> u16 {
    use netlink_packet_core::Nla;
    nla.kind()
}

// ---------------------------------------------------------------- routes

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RouteOp {
    /// RTM_NEWROUTE (add or replace).
    New,
    /// RTM_DELROUTE: scope "nowhere" is the kernel's wildcard for deletes.
    Del,
}

/// `ip route add|replace|del <dst> [via <gw>] dev <oif> [src <src>]
/// table <table> proto <protocol>`.
pub(crate) fn route_message(route: &Route, protocol: u8, op: RouteOp) -> RouteMessage {
    let mut msg = RouteMessage::default();
    let family = ip_family(route.dst.addr());
    msg.header.address_family = family;
    msg.header.destination_prefix_length = route.dst.prefix_len();
    msg.header.table = header_table(route.table);
    // The protocol is also sent on delete: the kernel then removes only a
    // route carrying our mark, never a foreign one with the same key.
    msg.header.protocol = RouteProtocol::from(protocol);
    msg.header.kind = RouteType::Unicast;
    msg.header.scope = match op {
        RouteOp::Del => RouteScope::NoWhere,
        // An IPv4 route without a gateway is on-link; IPv6 has no scopes
        // for routes and wants universe.
        RouteOp::New if route.gateway.is_none() && family == AddressFamily::Inet => {
            RouteScope::Link
        }
        RouteOp::New => RouteScope::Universe,
    };
    msg.attributes.push(RouteAttribute::Table(route.table));
    if route.dst.prefix_len() != 0 {
        msg.attributes
            .push(RouteAttribute::Destination(route.dst.addr().into()));
    }
    if let Some(gw) = route.gateway {
        if ip_family(gw) == family {
            msg.attributes.push(RouteAttribute::Gateway(gw.into()));
        } else {
            // An IPv4 route through an IPv6 next hop (RFC 5549).
            msg.attributes.push(RouteAttribute::Via(match gw {
                IpAddr::V4(a) => RouteVia::Inet(a),
                IpAddr::V6(a) => RouteVia::Inet6(a),
            }));
        }
    }
    msg.attributes.push(RouteAttribute::Oif(route.oif));
    if let Some(src) = route.src {
        msg.attributes.push(RouteAttribute::PrefSource(src.into()));
    }
    msg
}

fn route_ip(addr: &RouteAddress) -> Option<IpAddr> {
    match addr {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

/// The table a route message is about (the header byte cannot hold ids
/// above 255; RTA_TABLE always can).
pub(crate) fn route_table(msg: &RouteMessage) -> u32 {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(msg.header.table))
}

/// Reads a route dump entry. `None` for what eniroute does not model:
/// non-unicast routes (local, broadcast, blackhole, multicast...), cache
/// clones, other families, and routes without a single output device
/// (multipath, nexthop objects); the reconciler only ever writes
/// single-device routes, so those are never ours.
pub(crate) fn parse_route(msg: &RouteMessage, names: &HashMap<u32, String>) -> Option<KernelRoute> {
    let header = &msg.header;
    let family = family_of(header.address_family)?;
    if header.kind != RouteType::Unicast || header.flags.contains(RouteFlags::Cloned) {
        return None;
    }
    let mut dst = None;
    let mut gateway = None;
    let mut oif = None;
    let mut src = None;
    let mut metric = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Priority(p) => metric = Some(*p),
            RouteAttribute::Destination(a) => dst = route_ip(a),
            RouteAttribute::Gateway(a) => gateway = route_ip(a),
            RouteAttribute::Via(RouteVia::Inet(a)) => gateway = Some(IpAddr::V4(*a)),
            RouteAttribute::Via(RouteVia::Inet6(a)) => gateway = Some(IpAddr::V6(*a)),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::PrefSource(a) => src = route_ip(a),
            _ => {}
        }
    }
    let oif = oif?;
    let dst_addr = dst.unwrap_or(match family {
        Family::Ipv4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        Family::Ipv6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    });
    let dst = IpNet::new(dst_addr, header.destination_prefix_length).ok()?;
    let metric = metric.unwrap_or(crate::values::default_metric(&dst));
    let dev = names
        .get(&oif)
        .cloned()
        // The link went away between the two dumps; the index still
        // identifies the route.
        .unwrap_or_else(|| format!("if{oif}"));
    Some(KernelRoute {
        route: Route {
            table: route_table(msg),
            dst,
            gateway,
            dev,
            oif,
            src,
        },
        protocol: u8::from(header.protocol),
        metric,
    })
}

// ---------------------------------------------------------------- addresses

/// `ip addr add <addr> dev <index> proto <protocol> [noprefixroute]
/// [nodad]`.
pub(crate) fn address_message(address: &Address, protocol: u8) -> AddressMessage {
    let mut msg = address_base(address.index, address.address);
    let mut flags = AddressFlags::empty();
    if address.noprefixroute {
        flags |= AddressFlags::Noprefixroute;
    }
    if address.address.addr().is_ipv6() {
        // VPC addresses are unique by construction; duplicate address
        // detection would only keep the address tentative (unusable as a
        // source) for about a second after every assignment.
        flags |= AddressFlags::Nodad;
        msg.header.flags |= AddressHeaderFlags::Nodad;
    }
    // IFA_FLAGS carries the 32-bit flags (noprefixroute does not fit in the
    // header byte).
    msg.attributes.push(AddressAttribute::Flags(flags));
    // IFA_PROTO marks the address as ours in the kernel itself, so a
    // restarted agent can tell it from a DHCP-assigned one.
    msg.attributes
        .push(AddressAttribute::Protocol(AddressProtocol::from(protocol)));
    msg
}

/// `ip addr del <addr> dev <index>`.
pub(crate) fn address_del_message(index: u32, address: IpNet) -> AddressMessage {
    address_base(index, address)
}

fn address_base(index: u32, address: IpNet) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = ip_family(address.addr());
    msg.header.prefix_len = address.prefix_len();
    msg.header.index = index;
    msg.header.scope = AddressScope::Universe;
    // As iproute2 does: local and peer are the same address.
    msg.attributes.push(AddressAttribute::Local(address.addr()));
    msg.attributes
        .push(AddressAttribute::Address(address.addr()));
    msg
}

/// Reads an address dump entry: the link index and the address. The local
/// address (IFA_LOCAL) is the one assigned; IFA_ADDRESS is the peer on
/// point-to-point links and is used only when IFA_LOCAL is absent (IPv6).
pub(crate) fn parse_address(msg: &AddressMessage, protocol: u8) -> Option<(u32, LinkAddress)> {
    family_of(msg.header.family)?;
    let mut local = None;
    let mut address = None;
    let mut owned = false;
    let mut valid_lft = None;
    let mut proto = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(a) => local = Some(*a),
            AddressAttribute::Address(a) => address = Some(*a),
            AddressAttribute::Protocol(p) => {
                owned = u8::from(*p) == protocol;
                // The kernel's own protocols (loopback, router
                // advertisement, link-local) and 0 (unset) name no manager.
                proto = match p {
                    AddressProtocol::Other(n) if *n != protocol && *n != 0 => Some(*n),
                    _ => None,
                };
            }
            // INFINITY_LIFE_TIME (all ones) is a permanent address.
            AddressAttribute::CacheInfo(c) if c.ifa_valid != u32::MAX => {
                valid_lft = Some(c.ifa_valid)
            }
            _ => {}
        }
    }
    let addr = IpNet::new(local.or(address)?, msg.header.prefix_len).ok()?;
    Some((
        msg.header.index,
        LinkAddress {
            addr,
            owned,
            valid_lft,
            proto,
        },
    ))
}

// ---------------------------------------------------------------- links

/// Reads a link dump entry (without addresses).
pub(crate) fn parse_link(msg: &LinkMessage) -> Option<Link> {
    let mut name = None;
    let mut mac = None;
    let mut group = 0;
    let mut mtu = 0;
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::Address(bytes) => mac = Mac::from_bytes(bytes),
            LinkAttribute::Group(g) => group = *g,
            LinkAttribute::Mtu(m) => mtu = *m,
            _ => {}
        }
    }
    Some(Link {
        index: msg.header.index,
        name: name?,
        mac,
        up: msg.header.flags.contains(LinkFlags::Up),
        group,
        mtu,
        addresses: Vec::new(),
    })
}

/// `ip link set <index> [up] [group <g>] [mtu <m>]`. `up: false` leaves
/// the administrative state alone: eniroute brings links up, never down.
pub(crate) fn link_change_message(index: u32, change: &LinkChange) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    if change.up {
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
    }
    if let Some(group) = change.group {
        msg.attributes.push(LinkAttribute::Group(group));
    }
    if let Some(mtu) = change.mtu {
        msg.attributes.push(LinkAttribute::Mtu(mtu));
    }
    msg
}

/// What a link change says, for error messages.
pub(crate) fn describe_link_change(index: u32, change: &LinkChange) -> String {
    let mut s = format!("link {index}");
    if change.up {
        s.push_str(" up");
    }
    if let Some(g) = change.group {
        s.push_str(&format!(" group {g}"));
    }
    if let Some(m) = change.mtu {
        s.push_str(&format!(" mtu {m}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{DefaultNla, Emitable, Parseable};
    use netlink_packet_route::route::RouteHeader;

    fn v4rule(from: &str, table: u32, priority: u32) -> Rule {
        Rule {
            family: Family::Ipv4,
            priority,
            from: Some(from.parse().unwrap()),
            table,
            suppress_ifgroup: None,
        }
    }

    /// Emits and re-parses a message, as the kernel would see its bytes.
    fn roundtrip_rule(msg: &RuleMessage) -> RuleMessage {
        let mut buf = vec![0; msg.buffer_len()];
        msg.emit(&mut buf);
        RuleMessage::parse(&buf[..]).unwrap()
    }

    #[test]
    fn rule_message_sets_to_table_protocol_and_large_table_attribute() {
        let msg = rule_message(&v4rule("10.0.2.20/32", 10001, 10001), 233);
        assert_eq!(msg.header.action, RuleAction::ToTable);
        assert_eq!(msg.header.table, 0, "10001 does not fit in the header");
        assert_eq!(msg.header.src_len, 32);
        assert!(msg.attributes.contains(&RuleAttribute::Table(10001)));
        assert!(msg
            .attributes
            .contains(&RuleAttribute::Protocol(RouteProtocol::Other(233))));
        assert!(msg.attributes.contains(&RuleAttribute::Priority(10001)));
    }

    #[test]
    fn rule_message_round_trips_through_parse() {
        let rules = [
            v4rule("10.0.2.20/32", 10001, 10001),
            v4rule("10.0.8.0/28", 10102, 10102),
            Rule {
                family: Family::Ipv6,
                priority: 10001,
                from: Some("2001:db8::20/128".parse().unwrap()),
                table: 10001,
                suppress_ifgroup: None,
            },
            Rule {
                family: Family::Ipv4,
                priority: 9999,
                from: None,
                table: 254,
                suppress_ifgroup: Some(7),
            },
        ];
        for rule in rules {
            let parsed = parse_rule(&roundtrip_rule(&rule_message(&rule, 233))).unwrap();
            assert_eq!(parsed.rule, rule);
            assert_eq!(parsed.protocol, 233);
            assert!(!parsed.has_other_selectors, "{rule}");
            assert!(!parsed.not_lookup, "{rule}");
        }
    }

    #[test]
    fn small_tables_also_go_in_the_header() {
        let msg = rule_message(
            &Rule {
                family: Family::Ipv4,
                priority: 9999,
                from: None,
                table: 254,
                suppress_ifgroup: Some(7),
            },
            233,
        );
        assert_eq!(msg.header.table, 254);
        assert!(msg.attributes.contains(&RuleAttribute::SuppressIfGroup(7)));
    }

    fn kernel_rule(attrs: Vec<RuleAttribute>) -> RuleMessage {
        let mut msg = RuleMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.action = RuleAction::ToTable;
        // As the kernel reports a table above 255 in the header.
        msg.header.table = 252;
        msg.attributes = vec![
            RuleAttribute::Table(10001),
            // Always present in dumps; -1 is "unset".
            RuleAttribute::SuppressPrefixLen(u32::MAX),
            RuleAttribute::Protocol(RouteProtocol::Boot),
            RuleAttribute::Priority(10001),
        ];
        msg.attributes.extend(attrs);
        msg
    }

    #[test]
    fn plain_kernel_rule_has_no_other_selectors() {
        let r = parse_rule(&kernel_rule(vec![])).unwrap();
        assert_eq!(r.rule.table, 10001, "FRA_TABLE wins over the header");
        assert_eq!(r.rule.from, None);
        assert_eq!(r.protocol, 3);
        assert!(!r.has_other_selectors);
        assert!(!r.not_lookup);
    }

    #[test]
    fn other_selectors_are_noticed() {
        let cases = vec![
            RuleAttribute::Iifname("eth0".into()),
            RuleAttribute::Oifname("eth0".into()),
            RuleAttribute::FwMark(1),
            RuleAttribute::Destination("10.0.0.0".parse().unwrap()),
            RuleAttribute::SuppressPrefixLen(0),
            RuleAttribute::IpProtocol(netlink_packet_route::IpProtocol::Tcp),
            RuleAttribute::L3MDev(true),
            RuleAttribute::Other(DefaultNla::new(25, vec![8])),
        ];
        for attr in cases {
            let r = parse_rule(&kernel_rule(vec![attr.clone()])).unwrap();
            assert!(r.has_other_selectors, "{attr:?}");
        }
        let mut inverted = kernel_rule(vec![]);
        inverted.header.flags = RuleFlags::Invert;
        assert!(parse_rule(&inverted).unwrap().has_other_selectors);
        let mut tos = kernel_rule(vec![]);
        tos.header.tos = 0x10;
        assert!(parse_rule(&tos).unwrap().has_other_selectors);
    }

    #[test]
    fn non_lookup_actions_are_noticed() {
        for action in [
            RuleAction::Unspec,
            RuleAction::Blackhole,
            RuleAction::Goto,
            RuleAction::Prohibit,
        ] {
            let mut msg = kernel_rule(vec![]);
            msg.header.action = action;
            assert!(parse_rule(&msg).unwrap().not_lookup, "{action:?}");
        }
    }

    #[test]
    fn multicast_rules_are_skipped() {
        let mut msg = kernel_rule(vec![]);
        msg.header.family = AddressFamily::Other(128);
        assert!(parse_rule(&msg).is_none());
    }

    fn route(dst: &str, gw: Option<&str>, table: u32) -> Route {
        Route {
            table,
            dst: dst.parse().unwrap(),
            gateway: gw.map(|g| g.parse().unwrap()),
            dev: "eth1".into(),
            oif: 3,
            src: None,
        }
    }

    #[test]
    fn route_message_scope_table_and_protocol() {
        let mut subnet = route("10.0.2.0/24", None, 10001);
        subnet.src = Some("10.0.2.20".parse().unwrap());
        let msg = route_message(&subnet, 233, RouteOp::New);
        assert_eq!(msg.header.scope, RouteScope::Link);
        assert_eq!(msg.header.table, RouteHeader::RT_TABLE_UNSPEC);
        assert_eq!(msg.header.kind, RouteType::Unicast);
        assert_eq!(u8::from(msg.header.protocol), 233);
        assert!(msg.attributes.contains(&RouteAttribute::Table(10001)));
        assert!(msg
            .attributes
            .contains(&RouteAttribute::PrefSource(RouteAddress::Inet(
                "10.0.2.20".parse().unwrap()
            ))));

        let default = route("0.0.0.0/0", Some("10.0.2.1"), 10001);
        let msg = route_message(&default, 233, RouteOp::New);
        assert_eq!(msg.header.scope, RouteScope::Universe);
        assert!(!msg
            .attributes
            .iter()
            .any(|a| matches!(a, RouteAttribute::Destination(_))));

        let v6 = route("2001:db8::/64", None, 10001);
        assert_eq!(
            route_message(&v6, 233, RouteOp::New).header.scope,
            RouteScope::Universe
        );
        let del = route_message(&default, 233, RouteOp::Del);
        assert_eq!(del.header.scope, RouteScope::NoWhere);
        assert_eq!(u8::from(del.header.protocol), 233);
    }

    #[test]
    fn route_round_trips_through_parse() {
        let names = HashMap::from([(3, "eth1".to_string())]);
        let mut routes = vec![
            route("0.0.0.0/0", Some("10.0.2.1"), 10001),
            route("10.0.2.0/24", None, 10001),
            route("::/0", Some("fe80:ec2::1"), 10001),
            route("2001:db8::/64", None, 254),
        ];
        routes[1].src = Some("10.0.2.20".parse().unwrap());
        for r in routes {
            let msg = route_message(&r, 233, RouteOp::New);
            let mut buf = vec![0; msg.buffer_len()];
            msg.emit(&mut buf);
            let back = RouteMessage::parse(&buf[..]).unwrap();
            let parsed = parse_route(&back, &names).unwrap();
            assert_eq!(parsed.route, r);
            assert_eq!(parsed.protocol, 233);
        }
    }

    #[test]
    fn routes_we_do_not_model_are_skipped() {
        let names = HashMap::new();
        let mut local = route_message(&route("10.0.2.20/32", None, 255), 2, RouteOp::New);
        local.header.kind = RouteType::Local;
        assert!(parse_route(&local, &names).is_none());
        let mut no_oif = route_message(&route("10.0.9.0/24", None, 254), 2, RouteOp::New);
        no_oif
            .attributes
            .retain(|a| !matches!(a, RouteAttribute::Oif(_)));
        assert!(parse_route(&no_oif, &names).is_none());
        let vanished = route_message(&route("10.0.9.0/24", None, 254), 2, RouteOp::New);
        assert_eq!(parse_route(&vanished, &names).unwrap().route.dev, "if3");
    }

    #[test]
    fn address_message_flags_and_protocol() {
        let v4 = Address {
            index: 3,
            dev: "eth1".into(),
            address: "10.0.2.21/32".parse().unwrap(),
            noprefixroute: true,
        };
        let msg = address_message(&v4, 233);
        assert!(msg
            .attributes
            .contains(&AddressAttribute::Flags(AddressFlags::Noprefixroute)));
        assert!(msg
            .attributes
            .contains(&AddressAttribute::Protocol(AddressProtocol::Other(233))));
        assert_eq!(msg.header.prefix_len, 32);
        assert_eq!(msg.header.index, 3);

        let v6 = Address {
            address: "2001:db8::20/128".parse().unwrap(),
            noprefixroute: false,
            ..v4
        };
        let msg = address_message(&v6, 233);
        assert!(msg
            .attributes
            .contains(&AddressAttribute::Flags(AddressFlags::Nodad)));
    }

    #[test]
    fn address_parse_prefers_local_and_reads_ownership() {
        let mut msg = address_message(
            &Address {
                index: 3,
                dev: "eth1".into(),
                address: "10.0.2.21/24".parse().unwrap(),
                noprefixroute: false,
            },
            233,
        );
        assert_eq!(
            parse_address(&msg, 233),
            Some((
                3,
                LinkAddress {
                    addr: "10.0.2.21/24".parse().unwrap(),
                    owned: true,
                    valid_lft: None,
                    proto: None,
                }
            ))
        );
        assert!(!parse_address(&msg, 234).unwrap().1.owned);
        msg.attributes
            .retain(|a| !matches!(a, AddressAttribute::Protocol(_)));
        assert!(!parse_address(&msg, 233).unwrap().1.owned);
        // Point-to-point: IFA_ADDRESS is the peer.
        msg.attributes = vec![
            AddressAttribute::Address("10.9.9.9".parse().unwrap()),
            AddressAttribute::Local("10.0.2.21".parse().unwrap()),
        ];
        assert_eq!(
            parse_address(&msg, 233).unwrap().1.addr,
            "10.0.2.21/24".parse::<IpNet>().unwrap()
        );
    }

    #[test]
    fn link_change_only_touches_what_is_asked() {
        let msg = link_change_message(
            4,
            &LinkChange {
                up: false,
                group: Some(7),
                mtu: None,
            },
        );
        assert_eq!(msg.header.change_mask, LinkFlags::empty());
        assert_eq!(msg.attributes, vec![LinkAttribute::Group(7)]);
        let msg = link_change_message(
            4,
            &LinkChange {
                up: true,
                group: None,
                mtu: Some(9001),
            },
        );
        assert_eq!(msg.header.change_mask, LinkFlags::Up);
        assert_eq!(msg.header.flags, LinkFlags::Up);
        assert_eq!(msg.attributes, vec![LinkAttribute::Mtu(9001)]);
    }

    #[test]
    fn link_parse_reads_mac_only_for_ethernet() {
        let mut msg = LinkMessage::default();
        msg.header.index = 2;
        msg.header.flags = LinkFlags::Up | LinkFlags::Broadcast;
        msg.attributes = vec![
            LinkAttribute::IfName("eth0".into()),
            LinkAttribute::Address(vec![2, 0, 0, 0, 0, 1]),
            LinkAttribute::Group(7),
            LinkAttribute::Mtu(9001),
        ];
        let link = parse_link(&msg).unwrap();
        assert_eq!(link.mac, Some(Mac::new([2, 0, 0, 0, 0, 1])));
        assert!(link.up);
        assert_eq!((link.group, link.mtu), (7, 9001));
        msg.attributes[1] = LinkAttribute::Address(vec![0; 4]);
        assert_eq!(parse_link(&msg).unwrap().mac, None);
    }
}
