//! Asking the kernel which route a packet would take (`ip route get`), and
//! the rules with every selector, so that `eniroute trace` can tell which
//! rule led there. The kernel's answer names the table but never the rule:
//! that is deduced from the rule list (see `crate::trace`).

use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteType, RouteVia,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleFlags, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use serde::Serialize;

use crate::netlink::request::{self, dump};
use crate::netlink::{msg, NetlinkError, RtNetlink};
use crate::values::{table_name, Family};

/// One packet to ask about, as a locally sent packet: `ip route get DST
/// [from SRC] [ipproto P] [dport N]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteQuery {
    pub dst: IpAddr,
    /// Unset: the kernel chooses the source, and rules see none.
    pub src: Option<IpAddr>,
    /// IP protocol number (6 TCP, 17 UDP), for `ipproto` rule selectors.
    pub ipproto: Option<u8>,
    pub dport: Option<u16>,
}

impl std::fmt::Display for RouteQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "route get {}", self.dst)?;
        if let Some(src) = self.src {
            write!(f, " from {src}")?;
        }
        if let Some(p) = self.ipproto {
            write!(f, " ipproto {p}")?;
        }
        if let Some(d) = self.dport {
            write!(f, " dport {d}")?;
        }
        Ok(())
    }
}

/// What kind of route answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteKind {
    Unicast,
    /// The destination is an address of this host.
    Local,
    Other,
}

/// The kernel's answer to a [`RouteQuery`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteAnswer {
    pub kind: RouteKind,
    pub table: u32,
    pub oif: Option<u32>,
    pub gateway: Option<IpAddr>,
    /// The source the packet would carry (the one asked about, or the one
    /// the kernel chose).
    pub src: Option<IpAddr>,
    /// The route that matched, as it sits in its table (`RTM_F_FIB_MATCH`):
    /// its destination prefix decides `suppress_prefixlength`. `None` where
    /// the kernel does not support the flag.
    pub matched: Option<IpNet>,
}

/// What a rule does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "action", content = "target")]
pub enum RuleVerb {
    Lookup(u32),
    Goto(u32),
    Nop,
    Blackhole,
    Unreachable,
    Prohibit,
    Other,
}

/// A rule with every selector the kernel matches on, in the order the
/// kernel evaluates them (the dump's order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleEntry {
    pub family: Option<Family>,
    pub priority: u32,
    pub protocol: u8,
    pub verb: Option<RuleVerb>,
    pub from: Option<IpNet>,
    pub to: Option<IpNet>,
    pub iif: Option<String>,
    pub oif: Option<String>,
    /// (mark, mask)
    pub fwmark: Option<(u32, u32)>,
    pub ipproto: Option<u8>,
    pub sport: Option<(u16, u16)>,
    pub dport: Option<(u16, u16)>,
    /// A port given as value/mask (Linux 6.15+): the range's start is the
    /// value.
    pub sport_mask: Option<u16>,
    pub dport_mask: Option<u16>,
    pub uid: Option<(u32, u32)>,
    pub tos: u8,
    pub invert: bool,
    /// Matches on something else (tunnel id, l3mdev, an unknown attribute):
    /// never matches a plain locally sent packet.
    pub other: bool,
    pub suppress_ifgroup: Option<u32>,
    pub suppress_prefixlen: Option<u32>,
}

impl RuleEntry {
    pub fn table(&self) -> Option<u32> {
        match self.verb {
            Some(RuleVerb::Lookup(t)) => Some(t),
            _ => None,
        }
    }
}

/// `ip rule` style: `10001: from 10.0.2.21 lookup 10001 proto 233`.
impl std::fmt::Display for RuleEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:", self.priority)?;
        if self.invert {
            write!(f, " not")?;
        }
        match self.from {
            Some(n) if n.prefix_len() == n.max_prefix_len() => write!(f, " from {}", n.addr())?,
            Some(n) => write!(f, " from {n}")?,
            None => write!(f, " from all")?,
        }
        if let Some(n) = self.to {
            write!(f, " to {n}")?;
        }
        if self.tos != 0 {
            write!(f, " tos {:#x}", self.tos)?;
        }
        if let Some((m, mask)) = self.fwmark {
            write!(f, " fwmark {m:#x}/{mask:#x}")?;
        }
        if let Some(i) = &self.iif {
            write!(f, " iif {i}")?;
        }
        if let Some(o) = &self.oif {
            write!(f, " oif {o}")?;
        }
        if let Some((a, b)) = self.uid {
            write!(f, " uidrange {a}-{b}")?;
        }
        if let Some(p) = self.ipproto {
            write!(f, " ipproto {p}")?;
        }
        for (name, range, mask) in [
            ("sport", self.sport, self.sport_mask),
            ("dport", self.dport, self.dport_mask),
        ] {
            match (range, mask) {
                (Some((a, _)), Some(m)) => write!(f, " {name} {a:#x}/{m:#x}")?,
                (Some((a, b)), None) if a == b => write!(f, " {name} {a}")?,
                (Some((a, b)), None) => write!(f, " {name} {a}-{b}")?,
                (None, _) => {}
            }
        }
        match self.verb {
            Some(RuleVerb::Lookup(t)) => write!(f, " lookup {}", table_name(t))?,
            Some(RuleVerb::Goto(p)) => write!(f, " goto {p}")?,
            Some(RuleVerb::Nop) => write!(f, " nop")?,
            Some(RuleVerb::Blackhole) => write!(f, " blackhole")?,
            Some(RuleVerb::Unreachable) => write!(f, " unreachable")?,
            Some(RuleVerb::Prohibit) => write!(f, " prohibit")?,
            Some(RuleVerb::Other) | None => write!(f, " action unknown")?,
        }
        if let Some(l) = self.suppress_prefixlen {
            write!(f, " suppress_prefixlength {l}")?;
        }
        if let Some(g) = self.suppress_ifgroup {
            write!(f, " suppress_ifgroup {g}")?;
        }
        // As `ip rule` names the common ones (rt_protos).
        match self.protocol {
            0 => write!(f, " proto unspec"),
            2 => write!(f, " proto kernel"),
            3 => write!(f, " proto boot"),
            4 => write!(f, " proto static"),
            16 => write!(f, " proto dhcp"),
            p => write!(f, " proto {p}"),
        }
    }
}

/// `FRA_SPORT_MASK` and `FRA_DPORT_MASK` from `<linux/fib_rules.h>`.
const FRA_SPORT_MASK: u16 = 28;
const FRA_DPORT_MASK: u16 = 29;

fn nla_value(nla: &netlink_packet_core::DefaultNla) -> Vec<u8> {
    use netlink_packet_core::Nla;
    let mut v = vec![0; nla.value_len()];
    nla.emit_value(&mut v);
    v
}

/// Reads a rule dump entry with all its selectors; `None` for families
/// other than IPv4 and IPv6.
pub(crate) fn parse_rule_entry(m: &RuleMessage) -> Option<RuleEntry> {
    let family = match m.header.family {
        AddressFamily::Inet => Family::Ipv4,
        AddressFamily::Inet6 => Family::Ipv6,
        _ => return None,
    };
    let h = &m.header;
    let mut e = RuleEntry {
        family: Some(family),
        tos: h.tos,
        invert: h.flags.contains(RuleFlags::Invert),
        ..RuleEntry::default()
    };
    let mut table = u32::from(h.table);
    let mut src = None;
    let mut dst = None;
    let mut goto = 0;
    let mut mark = None;
    let mut mask = None;
    for attr in &m.attributes {
        match attr {
            RuleAttribute::Table(t) => table = *t,
            RuleAttribute::Priority(p) => e.priority = *p,
            RuleAttribute::Source(a) => src = Some(*a),
            RuleAttribute::Destination(a) => dst = Some(*a),
            RuleAttribute::Iifname(n) => e.iif = Some(n.clone()),
            RuleAttribute::Oifname(n) => e.oif = Some(n.clone()),
            RuleAttribute::FwMark(v) => mark = Some(*v),
            RuleAttribute::FwMask(v) => mask = Some(*v),
            RuleAttribute::Goto(p) => goto = *p,
            RuleAttribute::Protocol(p) => e.protocol = u8::from(*p),
            RuleAttribute::IpProtocol(p) => e.ipproto = Some(u8::from(*p)),
            RuleAttribute::SourcePortRange(r) => e.sport = Some((r.start, r.end)),
            RuleAttribute::DestinationPortRange(r) => e.dport = Some((r.start, r.end)),
            // The kernel dumps the uid range only when one is set.
            RuleAttribute::UidRange(r) => e.uid = Some((r.start, r.end)),
            // The kernel reports "unset" as -1.
            RuleAttribute::SuppressIfGroup(g) if *g != u32::MAX => e.suppress_ifgroup = Some(*g),
            RuleAttribute::SuppressPrefixLen(l) if *l != u32::MAX => {
                e.suppress_prefixlen = Some(*l)
            }
            RuleAttribute::SuppressIfGroup(_) | RuleAttribute::SuppressPrefixLen(_) => {}
            RuleAttribute::TunId(v) => e.other |= *v != 0,
            RuleAttribute::L3MDev(v) => e.other |= *v,
            RuleAttribute::Realm(_) => {}
            RuleAttribute::Other(nla) if msg::is_rule_padding(nla) => {}
            // Linux 6.15 dumps a port selector's mask too (0xffff for a
            // range); netlink-packet-route does not know the attribute yet.
            RuleAttribute::Other(nla)
                if matches!(msg::nla_kind(nla), FRA_SPORT_MASK | FRA_DPORT_MASK) =>
            {
                let value = nla_value(nla);
                let Some(mask) = value.get(..2).map(|b| u16::from_ne_bytes([b[0], b[1]])) else {
                    e.other = true;
                    continue;
                };
                let mask = (mask != u16::MAX).then_some(mask);
                if msg::nla_kind(nla) == FRA_SPORT_MASK {
                    e.sport_mask = mask;
                } else {
                    e.dport_mask = mask;
                }
            }
            _ => e.other = true,
        }
    }
    // A mark without a mask matches all of its bits.
    e.fwmark = match (mark, mask) {
        (None, None) | (Some(0), None) => None,
        (m, k) => Some((m.unwrap_or(0), k.unwrap_or(u32::MAX))),
    };
    let net = |addr: Option<IpAddr>, len: u8| match addr {
        Some(a) if len != 0 => IpNet::new(a, len).ok(),
        _ => None,
    };
    e.from = net(src, h.src_len);
    e.to = net(dst, h.dst_len);
    e.verb = Some(match h.action {
        RuleAction::ToTable => RuleVerb::Lookup(table),
        RuleAction::Goto => RuleVerb::Goto(goto),
        RuleAction::Nop => RuleVerb::Nop,
        RuleAction::Blackhole => RuleVerb::Blackhole,
        RuleAction::Unreachable => RuleVerb::Unreachable,
        RuleAction::Prohibit => RuleVerb::Prohibit,
        _ => RuleVerb::Other,
    });
    Some(e)
}

/// `RTM_GETROUTE` for one packet; `fib_match` asks for the route as it
/// sits in its table rather than the resolved destination.
pub(crate) fn query_message(q: &RouteQuery, fib_match: bool) -> RouteMessage {
    let mut m = RouteMessage::default();
    let (family, bits) = match q.dst {
        IpAddr::V4(_) => (AddressFamily::Inet, 32),
        IpAddr::V6(_) => (AddressFamily::Inet6, 128),
    };
    m.header.address_family = family;
    m.header.destination_prefix_length = bits;
    m.attributes
        .push(RouteAttribute::Destination(RouteAddress::from(q.dst)));
    if let Some(src) = q.src {
        m.header.source_prefix_length = bits;
        m.attributes
            .push(RouteAttribute::Source(RouteAddress::from(src)));
    }
    if let Some(p) = q.ipproto {
        m.attributes.push(RouteAttribute::IpProto(p));
    }
    if let Some(d) = q.dport {
        m.attributes.push(RouteAttribute::Dport(d));
    }
    // Without LOOKUP_TABLE the kernel reports every answer as table main,
    // whichever table it came from (iproute2 sets it too).
    m.header.flags = RouteFlags::LookupTable;
    if fib_match {
        m.header.flags |= RouteFlags::FibMatch;
    }
    m
}

fn ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

/// Reads the kernel's answer to [`query_message`].
pub(crate) fn parse_answer(m: &RouteMessage) -> RouteAnswer {
    let mut a = RouteAnswer {
        kind: match m.header.kind {
            RouteType::Unicast => RouteKind::Unicast,
            RouteType::Local => RouteKind::Local,
            _ => RouteKind::Other,
        },
        table: msg::route_table(m),
        oif: None,
        gateway: None,
        src: None,
        matched: None,
    };
    let mut dst = None;
    for attr in &m.attributes {
        match attr {
            RouteAttribute::Oif(i) => a.oif = Some(*i),
            RouteAttribute::Gateway(g) => a.gateway = ip(g),
            RouteAttribute::Via(RouteVia::Inet(g)) => a.gateway = Some(IpAddr::V4(*g)),
            RouteAttribute::Via(RouteVia::Inet6(g)) => a.gateway = Some(IpAddr::V6(*g)),
            RouteAttribute::PrefSource(s) => a.src = ip(s),
            // The asked-for source comes back as RTA_SRC; the chosen one
            // as RTA_PREFSRC.
            RouteAttribute::Source(s) if a.src.is_none() => a.src = ip(s),
            RouteAttribute::Destination(d) => dst = ip(d),
            _ => {}
        }
    }
    let unspecified = match m.header.address_family {
        AddressFamily::Inet6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        _ => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
    };
    a.matched = IpNet::new(
        dst.unwrap_or(unspecified),
        m.header.destination_prefix_length,
    )
    .ok();
    a
}

/// What `eniroute trace` asks of the kernel; [`RtNetlink`] is the real one,
/// a test hands in answers.
#[allow(async_fn_in_trait)]
pub trait RouteLookup {
    /// The route the kernel picks for `q`; an error is the kernel's answer
    /// (ENETUNREACH: no route; EINVAL: a source that is not local).
    async fn route_get(&self, q: &RouteQuery) -> Result<RouteAnswer, NetlinkError>;
    /// Every rule of both families with all its selectors.
    async fn rule_entries(&self) -> Result<Vec<RuleEntry>, NetlinkError>;
}

impl RtNetlink {
    async fn get_route(
        &self,
        q: &RouteQuery,
        fib_match: bool,
    ) -> Result<RouteAnswer, NetlinkError> {
        const CALL: &str = "RTM_GETROUTE";
        let object = || q.to_string();
        let mut req =
            NetlinkMessage::from(RouteNetlinkMessage::GetRoute(query_message(q, fib_match)));
        req.header.flags = NLM_F_REQUEST;
        let mut handle = self.handle().clone();
        let mut responses = handle
            .request(req)
            .map_err(|e| request::error(CALL, object(), e.to_string()))?;
        use futures::StreamExt;
        while let Some(r) = responses.next().await {
            match r.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(m)) => {
                    return Ok(parse_answer(&m))
                }
                NetlinkPayload::Error(e) => {
                    if let Some(code) = e.code {
                        return Err(request::kernel_error(
                            CALL,
                            object(),
                            code,
                            r.header.flags,
                            &e.header,
                        ));
                    }
                }
                _ => {}
            }
        }
        Err(request::error(
            CALL,
            object(),
            "netlink connection closed before the kernel answered",
        ))
    }
}

impl RouteLookup for RtNetlink {
    async fn route_get(&self, q: &RouteQuery) -> Result<RouteAnswer, NetlinkError> {
        let mut answer = self.get_route(q, false).await?;
        // The resolved answer carries the source the packet would have;
        // the FIB match adds the route's own prefix. Kernels before 4.13
        // reject the flag: the answer then stands without it.
        if let Ok(fib) = self.get_route(q, true).await {
            if fib.table == answer.table {
                answer.matched = fib.matched;
            }
        } else {
            answer.matched = None;
        }
        Ok(answer)
    }

    async fn rule_entries(&self) -> Result<Vec<RuleEntry>, NetlinkError> {
        let msgs = dump(
            self.handle(),
            "RTM_GETRULE",
            "rules",
            RouteNetlinkMessage::GetRule(RuleMessage::default()),
        )
        .await?;
        Ok(msgs
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRule(r) => parse_rule_entry(r),
                _ => None,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::route::RouteProtocol;
    use netlink_packet_route::rule::RulePortRange;

    #[test]
    fn a_query_carries_source_protocol_port_and_the_fib_match_flag() {
        let q = RouteQuery {
            dst: "10.9.0.5".parse().unwrap(),
            src: Some("10.0.2.21".parse().unwrap()),
            ipproto: Some(6),
            dport: Some(22),
        };
        let m = query_message(&q, true);
        assert_eq!(m.header.address_family, AddressFamily::Inet);
        assert_eq!(
            (
                m.header.destination_prefix_length,
                m.header.source_prefix_length
            ),
            (32, 32)
        );
        assert!(m.header.flags.contains(RouteFlags::FibMatch));
        assert!(m.attributes.contains(&RouteAttribute::Dport(22)));
        assert!(m.attributes.contains(&RouteAttribute::IpProto(6)));
        let plain = query_message(
            &RouteQuery {
                dst: "2001:db8::1".parse().unwrap(),
                src: None,
                ipproto: None,
                dport: None,
            },
            false,
        );
        assert_eq!(plain.header.destination_prefix_length, 128);
        assert_eq!(plain.header.source_prefix_length, 0);
        assert!(!plain.header.flags.contains(RouteFlags::FibMatch));
        assert!(plain.header.flags.contains(RouteFlags::LookupTable));
        assert_eq!(plain.attributes.len(), 1);
    }

    #[test]
    fn an_answer_gives_table_link_gateway_source_and_the_matched_prefix() {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.kind = RouteType::Unicast;
        m.header.destination_prefix_length = 0;
        m.attributes = vec![
            RouteAttribute::Table(10001),
            RouteAttribute::Oif(3),
            RouteAttribute::Gateway(RouteAddress::Inet("10.0.2.1".parse().unwrap())),
            RouteAttribute::PrefSource(RouteAddress::Inet("10.0.2.20".parse().unwrap())),
        ];
        let a = parse_answer(&m);
        assert_eq!(a.table, 10001);
        assert_eq!(a.oif, Some(3));
        assert_eq!(a.gateway, Some("10.0.2.1".parse().unwrap()));
        assert_eq!(a.src, Some("10.0.2.20".parse().unwrap()));
        assert_eq!(a.matched, Some("0.0.0.0/0".parse().unwrap()));
        assert_eq!(a.kind, RouteKind::Unicast);
    }

    #[test]
    fn a_rule_entry_keeps_every_selector() {
        let mut m = RuleMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.src_len = 32;
        m.header.action = RuleAction::ToTable;
        m.attributes = vec![
            RuleAttribute::Priority(100),
            RuleAttribute::Other(netlink_packet_core::DefaultNla::new(
                FRA_DPORT_MASK,
                u16::MAX.to_ne_bytes().to_vec(),
            )),
            RuleAttribute::Table(254),
            RuleAttribute::Source("10.0.2.21".parse().unwrap()),
            RuleAttribute::IpProtocol(6.into()),
            RuleAttribute::DestinationPortRange(RulePortRange { start: 22, end: 22 }),
            RuleAttribute::FwMark(1),
            RuleAttribute::Protocol(RouteProtocol::Boot),
            RuleAttribute::SuppressIfGroup(u32::MAX),
        ];
        let e = parse_rule_entry(&m).unwrap();
        assert_eq!(e.table(), Some(254));
        assert_eq!(e.fwmark, Some((1, u32::MAX)));
        assert_eq!(e.dport, Some((22, 22)));
        assert_eq!(e.suppress_ifgroup, None);
        assert_eq!(
            e.to_string(),
            "100: from 10.0.2.21 fwmark 0x1/0xffffffff ipproto 6 dport 22 lookup main proto boot"
        );
    }
}
