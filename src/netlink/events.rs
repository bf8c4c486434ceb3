//! Kernel change notifications for the daemon: links, addresses, routes and
//! rules of both families, each as the object that changed ([`Change`]),
//! so that the daemon's view of the kernel ([`crate::netlink::view`]) can
//! follow them without reading the kernel again. Route notifications
//! outside the agent's concern (another table, another protocol) are
//! dropped on a look at their header, before they are parsed: on a router
//! with a full table they are nearly all of them.
//!
//! This is a plain netlink socket rather than an rtnetlink connection: when
//! the daemon falls behind and the kernel drops notifications, `recv` fails
//! with ENOBUFS, and that must reach the caller as [`Event::Overrun`] (the
//! only safe answer is to re-read everything), not vanish inside a library.

use std::collections::{HashMap, VecDeque};
use std::io;

use netlink_packet_core::{NetlinkBuffer, NetlinkMessage, NetlinkPayload, NLM_F_REPLACE};
use netlink_packet_route::address::AddressMessage;
use netlink_packet_route::link::{LinkFlags, LinkMessage};
use netlink_packet_route::route::RouteMessage;
use netlink_packet_route::rule::RuleMessage;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{AsyncSocket, AsyncSocketExt, SocketAddr, TokioSocket};
use nix::errno::Errno;
use nix::libc::{RTA_TABLE, RTM_DELROUTE, RTM_NEWROUTE, RTN_UNICAST};
use nix::sys::socket::{setsockopt, sockopt};
use rtnetlink::MulticastGroup;

use crate::netlink::altname::{self, LinkNames};
use crate::netlink::msg;
use crate::netlink::request::io_error;
use crate::netlink::view::Concern;
use crate::netlink::NetlinkError;
use crate::values::{KernelRoute, KernelRule, Link, LinkAddress, Mac};

const GROUPS: [MulticastGroup; 7] = [
    MulticastGroup::Link,
    MulticastGroup::Ipv4Ifaddr,
    MulticastGroup::Ipv6Ifaddr,
    MulticastGroup::Ipv4Route,
    MulticastGroup::Ipv6Route,
    MulticastGroup::Ipv4Rule,
    MulticastGroup::Ipv6Rule,
];

/// Room for bursts (an ENI attach or a networkd restart produces hundreds of
/// notifications at once), so that overruns stay rare.
pub const DEFAULT_RECEIVE_BUFFER: usize = 4 << 20;

const CALL: &str = "recvmsg";
const OBJECT: &str = "rtnetlink notifications";

/// What a change the kernel announced means to the daemon's decisions
/// (see [`Change::event`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A link appeared, changed (state, name, group, MTU...) or vanished.
    Link {
        index: u32,
        /// A newly registered link (created, or moved into this namespace).
        added: bool,
        /// RTM_DELLINK: the link is gone.
        removed: bool,
        name: Option<String>,
        mac: Option<Mac>,
    },
    /// An address was added, removed or changed, on any link.
    Address,
    /// A route was added, removed or changed.
    Route { protocol: u8, table: u32 },
    /// A rule was added or removed.
    Rule { protocol: u8 },
    /// The kernel dropped notifications because the socket's buffer was
    /// full. Anything may have changed: re-read everything.
    Overrun,
}

/// A change the kernel announced, with the object it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// RTM_NEWLINK or RTM_DELLINK; `link` and `names` as far as the
    /// message carries them (without addresses).
    Link {
        index: u32,
        /// A newly registered link (created, or moved into this namespace).
        added: bool,
        /// RTM_DELLINK: the link is gone.
        removed: bool,
        link: Option<Link>,
        names: Option<LinkNames>,
    },
    /// RTM_NEWADDR or RTM_DELADDR.
    Address {
        index: u32,
        address: LinkAddress,
        removed: bool,
    },
    /// RTM_NEWROUTE or RTM_DELROUTE of a route of concern; the route's
    /// `dev` is not known here (`if<index>`).
    Route {
        route: KernelRoute,
        removed: bool,
        /// The new route took the place of another with the same
        /// destination and metric (NLM_F_REPLACE).
        replace: bool,
    },
    /// RTM_NEWRULE or RTM_DELRULE.
    Rule { rule: KernelRule, removed: bool },
    /// See [`Event::Overrun`].
    Overrun,
}

impl Change {
    /// What the change means to the daemon's decisions.
    pub fn event(&self) -> Event {
        match self {
            Change::Link {
                index,
                added,
                removed,
                link,
                names,
            } => Event::Link {
                index: *index,
                added: *added,
                removed: *removed,
                name: link
                    .as_ref()
                    .map(|l| l.name.clone())
                    .or_else(|| names.as_ref().map(|n| n.name.clone())),
                mac: link.as_ref().and_then(|l| l.mac),
            },
            Change::Address { .. } => Event::Address,
            Change::Route { route, .. } => Event::Route {
                protocol: route.protocol,
                table: route.route.table,
            },
            Change::Rule { rule, .. } => Event::Rule {
                protocol: rule.protocol,
            },
            Change::Overrun => Event::Overrun,
        }
    }
}

/// A socket subscribed to link, address, route and rule notifications.
pub struct EventSocket {
    socket: TokioSocket,
    pending: VecDeque<Change>,
    concern: Concern,
}

impl EventSocket {
    /// Opens the socket with a [`DEFAULT_RECEIVE_BUFFER`] receive buffer,
    /// reporting the routes `concern` names (and every link, address and
    /// rule). Must be called within a tokio runtime.
    pub fn open(concern: Concern) -> Result<EventSocket, NetlinkError> {
        Self::open_with_receive_buffer(concern, DEFAULT_RECEIVE_BUFFER)
    }

    /// Opens the socket with a receive buffer of about `bytes`. With
    /// CAP_NET_ADMIN the size may exceed `net.core.rmem_max`; without, the
    /// kernel caps it there.
    pub fn open_with_receive_buffer(
        concern: Concern,
        bytes: usize,
    ) -> Result<EventSocket, NetlinkError> {
        let err = |call: &'static str| move |e: io::Error| io_error(call, OBJECT, &e);
        let mut socket = TokioSocket::new(NETLINK_ROUTE).map_err(err("socket"))?;
        let raw = socket.socket_mut();
        if setsockopt(&*raw, sockopt::RcvBufForce, &bytes).is_err() {
            setsockopt(&*raw, sockopt::RcvBuf, &bytes)
                .map_err(|e| io_error("setsockopt", OBJECT, &io::Error::from(e)))?;
        }
        raw.bind(&SocketAddr::new(0, 0)).map_err(err("bind"))?;
        for group in GROUPS {
            // NETLINK_ADD_MEMBERSHIP takes the group number itself.
            raw.add_membership(group as u32)
                .map_err(err("setsockopt"))?;
        }
        Ok(EventSocket {
            socket,
            pending: VecDeque::new(),
            concern,
        })
    }

    /// The next notification. Cancel-safe: a notification already received
    /// is kept for the next call.
    pub async fn next(&mut self) -> Result<Change, NetlinkError> {
        loop {
            if let Some(change) = self.pending.pop_front() {
                return Ok(change);
            }
            match self.socket.recv_from_full().await {
                Ok((data, from)) => {
                    // Only the kernel (port 0) speaks for the kernel.
                    if from.port_number() == 0 {
                        parse_datagram(&data, &self.concern, &mut self.pending);
                    }
                }
                Err(e) if e.raw_os_error() == Some(Errno::ENOBUFS as i32) => {
                    self.drain();
                    return Ok(Change::Overrun);
                }
                Err(e) => return Err(io_error(CALL, OBJECT, &e)),
            }
        }
    }
}

impl EventSocket {
    /// Empties the socket's queue after an overrun. The kernel reports an
    /// overrun once, then silently drops every notification until the
    /// queue has been read empty; draining it now, before the caller
    /// re-reads the kernel's state, makes every change after that re-read
    /// visible again. What is dropped here predates the re-read.
    fn drain(&mut self) {
        self.pending.clear();
        let socket = self.socket.socket_ref();
        let mut buf = Vec::with_capacity(DRAIN_CHUNK);
        for _ in 0..DRAIN_LIMIT {
            buf.clear();
            match socket.recv(&mut buf, 0) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(Errno::ENOBUFS as i32) => {}
                // EAGAIN: empty (the socket is non-blocking).
                Err(_) => break,
            }
        }
    }
}

/// Read size when draining; longer messages are truncated, which is fine
/// for messages being discarded.
const DRAIN_CHUNK: usize = 64 << 10;
/// Bounds draining under a storm of notifications; the caller re-reads
/// anyway.
const DRAIN_LIMIT: usize = 1 << 16;

/// Turns one datagram into changes. A message that does not parse is
/// skipped: one odd notification must not stop the daemon from hearing the
/// next.
fn parse_datagram(data: &[u8], concern: &Concern, out: &mut VecDeque<Change>) {
    for bytes in frames(data) {
        let buffer = NetlinkBuffer::new(bytes);
        let kind = buffer.message_type();
        if (kind == RTM_NEWROUTE || kind == RTM_DELROUTE)
            && !route_of_concern(buffer.payload(), concern)
        {
            continue;
        }
        match NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes) {
            Ok(message) => {
                let replace = message.header.flags & NLM_F_REPLACE != 0;
                if let NetlinkPayload::InnerMessage(inner) = message.payload {
                    if let Some(change) = change(inner, replace, concern.protocol) {
                        out.push_back(change);
                    }
                }
            }
            Err(e) => tracing::debug!("skipping a notification that does not parse: {e}"),
        }
    }
}

/// The messages of one netlink datagram (an event or a dump answer), each
/// exactly its own bytes. A message whose header does not fit ends the walk:
/// nothing after it can be framed.
pub(crate) fn frames(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut offset = 0;
    std::iter::from_fn(move || {
        let rest = data.get(offset..)?;
        let len = NetlinkBuffer::new_checked(rest).ok()?.length() as usize;
        let bytes = rest.get(..len)?;
        // Messages in a datagram are 4-byte aligned; len is at least a
        // header long, so this always advances.
        offset += (len + 3) & !3;
        Some(bytes)
    })
}

/// `struct rtmsg` from `<linux/rtnetlink.h>`: family, dst_len, src_len,
/// tos, table, protocol, scope, type, then 32 bits of flags.
const RTMSG_LEN: usize = 12;
const RTMSG_TABLE: usize = 4;
const RTMSG_PROTOCOL: usize = 5;
const RTMSG_TYPE: usize = 7;

/// Whether a route message's bytes are about a unicast route the agent is
/// concerned with, read from its header and its RTA_TABLE attribute alone
/// (a table above 255 only fits there). Anything that cannot be read this
/// way is left to the full parser.
pub(crate) fn route_of_concern(payload: &[u8], concern: &Concern) -> bool {
    let (Some(header), Some(mut attrs)) = (payload.get(..RTMSG_LEN), payload.get(RTMSG_LEN..))
    else {
        return true;
    };
    if header[RTMSG_TYPE] != RTN_UNICAST {
        return false;
    }
    let mut table = u32::from(header[RTMSG_TABLE]);
    while let Some(head) = attrs.get(..4) {
        let len = usize::from(u16::from_ne_bytes([head[0], head[1]]));
        let kind = u16::from_ne_bytes([head[2], head[3]]);
        if len < 4 {
            break;
        }
        if kind == RTA_TABLE {
            if let Some(v) = attrs.get(4..8) {
                table = u32::from_ne_bytes([v[0], v[1], v[2], v[3]]);
            }
            break;
        }
        let Some(next) = attrs.get(((len + 3) & !3)..) else {
            break;
        };
        attrs = next;
    }
    concern.route(table, header[RTMSG_PROTOCOL])
}

fn change(message: RouteNetlinkMessage, replace: bool, protocol: u8) -> Option<Change> {
    let address = |a: &AddressMessage, removed: bool| {
        let (index, address) = msg::parse_address(a, protocol)?;
        Some(Change::Address {
            index,
            address,
            removed,
        })
    };
    // The route's link name is the view's to fill in.
    let route = |r: &RouteMessage, removed: bool| {
        Some(Change::Route {
            route: msg::parse_route(r, &HashMap::new())?,
            removed,
            replace,
        })
    };
    let rule = |r: &RuleMessage, removed: bool| {
        Some(Change::Rule {
            rule: msg::parse_rule(r)?,
            removed,
        })
    };
    match message {
        RouteNetlinkMessage::NewLink(l) => link_change(&l, false),
        RouteNetlinkMessage::DelLink(l) => link_change(&l, true),
        RouteNetlinkMessage::NewAddress(a) => address(&a, false),
        RouteNetlinkMessage::DelAddress(a) => address(&a, true),
        RouteNetlinkMessage::NewRoute(r) => route(&r, false),
        RouteNetlinkMessage::DelRoute(r) => route(&r, true),
        RouteNetlinkMessage::NewRule(r) => rule(&r, false),
        RouteNetlinkMessage::DelRule(r) => rule(&r, true),
        _ => None,
    }
}

/// `None` for a bridge's AF_BRIDGE NEWLINK and DELLINK, which announce port
/// membership on the same group: a port leaving a bridge is not a link
/// going away.
fn link_change(link: &LinkMessage, deleted: bool) -> Option<Change> {
    if link.header.interface_family == AddressFamily::Bridge {
        return None;
    }
    Some(Change::Link {
        index: link.header.index,
        // The kernel announces a newly registered device with every flag
        // marked as changed; later changes mark only what changed.
        added: !deleted && link.header.change_mask == LinkFlags::all(),
        removed: deleted,
        link: msg::parse_link(link),
        names: altname::parse_names(link),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::NetlinkHeader;
    use netlink_packet_route::link::LinkAttribute;
    use netlink_packet_route::route::{RouteAttribute, RouteProtocol, RouteType};
    use netlink_packet_route::rule::{RuleAction, RuleAttribute};

    const PROTO: u8 = 233;

    fn concern() -> Concern {
        Concern {
            protocol: PROTO,
            tables: 10000..16400,
        }
    }

    fn bytes(inner: RouteNetlinkMessage) -> Vec<u8> {
        bytes_with_flags(inner, 0)
    }

    fn bytes_with_flags(inner: RouteNetlinkMessage, flags: u16) -> Vec<u8> {
        let mut m = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::InnerMessage(inner),
        );
        m.header.flags = flags;
        m.finalize();
        let mut buf = vec![0; m.buffer_len()];
        m.serialize(&mut buf);
        buf
    }

    fn new_link(index: u32, change: LinkFlags) -> RouteNetlinkMessage {
        let mut l = LinkMessage::default();
        l.header.index = index;
        l.header.change_mask = change;
        l.attributes = vec![
            LinkAttribute::IfName("eth1".into()),
            LinkAttribute::Address(vec![2, 0, 0, 0, 0, 9]),
        ];
        RouteNetlinkMessage::NewLink(l)
    }

    fn route(table: u32, protocol: u8) -> RouteMessage {
        let mut route = RouteMessage::default();
        route.header.address_family = AddressFamily::Inet;
        route.header.destination_prefix_length = 24;
        route.header.protocol = RouteProtocol::from(protocol);
        route.header.kind = RouteType::Unicast;
        route.header.table = u8::try_from(table).unwrap_or(0);
        route.attributes = vec![
            RouteAttribute::Table(table),
            RouteAttribute::Destination(netlink_packet_route::route::RouteAddress::Inet(
                "10.0.2.0".parse().unwrap(),
            )),
            RouteAttribute::Oif(3),
        ];
        route
    }

    fn parse(data: &[u8]) -> Vec<Change> {
        let mut out = VecDeque::new();
        parse_datagram(data, &concern(), &mut out);
        Vec::from(out)
    }

    #[test]
    fn several_messages_in_one_datagram_and_garbage_between() {
        let mut rule = RuleMessage::default();
        rule.header.family = AddressFamily::Inet;
        rule.header.action = RuleAction::ToTable;
        rule.attributes = vec![
            RuleAttribute::Protocol(RouteProtocol::Other(PROTO)),
            RuleAttribute::Table(10001),
            RuleAttribute::Priority(10001),
        ];

        let mut data = bytes(new_link(5, LinkFlags::all()));
        // A well-framed message of an unknown type: skipped.
        let mut junk = vec![0u8; 20];
        junk[0] = 20;
        junk[4] = 0xee;
        junk[5] = 0x0e;
        data.extend(junk);
        data.extend(bytes(RouteNetlinkMessage::NewRoute(route(10001, PROTO))));
        data.extend(bytes(RouteNetlinkMessage::DelRule(rule)));
        // A truncated tail: ignored.
        data.extend([1, 2, 3]);

        let out = parse(&data);
        let events: Vec<Event> = out.iter().map(Change::event).collect();
        assert_eq!(
            events,
            vec![
                Event::Link {
                    index: 5,
                    added: true,
                    removed: false,
                    name: Some("eth1".into()),
                    mac: Some(Mac::new([2, 0, 0, 0, 0, 9])),
                },
                Event::Route {
                    protocol: PROTO,
                    table: 10001
                },
                Event::Rule { protocol: PROTO },
            ]
        );
        let Change::Route { route, removed, .. } = &out[1] else {
            panic!("{out:?}")
        };
        assert!(!removed);
        assert_eq!(route.route.dst.to_string(), "10.0.2.0/24");
        assert_eq!(route.route.oif, 3);
        assert!(matches!(out[2], Change::Rule { removed: true, .. }));
    }

    #[test]
    fn routes_outside_the_concern_are_dropped_before_parsing() {
        // Another table, another protocol: nothing.
        assert_eq!(
            parse(&bytes(RouteNetlinkMessage::NewRoute(route(500, 4)))),
            vec![]
        );
        assert_eq!(
            parse(&bytes(RouteNetlinkMessage::DelRoute(route(500, 4)))),
            vec![]
        );
        // A table number only in the attribute (the header says 252).
        let mut far = route(100_000, 4);
        far.header.table = 252;
        assert_eq!(parse(&bytes(RouteNetlinkMessage::NewRoute(far))), vec![]);
        // Not unicast (a local route): nothing either.
        let mut local = route(10001, 2);
        local.header.kind = RouteType::Local;
        assert_eq!(parse(&bytes(RouteNetlinkMessage::NewRoute(local))), vec![]);
        // Ours anywhere, the main table, the agent's range: kept.
        for (table, protocol) in [(500, PROTO), (254, 4), (10001, 4), (16399, 16)] {
            assert_eq!(
                parse(&bytes(RouteNetlinkMessage::NewRoute(route(
                    table, protocol
                ))))
                .len(),
                1,
                "table {table} protocol {protocol}"
            );
        }
        // What the byte check cannot read goes to the parser.
        assert!(route_of_concern(&[1, 2, 3], &concern()));
    }

    #[test]
    fn a_replace_is_marked_as_one() {
        let out = parse(&bytes_with_flags(
            RouteNetlinkMessage::NewRoute(route(10001, PROTO)),
            NLM_F_REPLACE,
        ));
        assert!(
            matches!(
                out.as_slice(),
                [Change::Route {
                    replace: true,
                    removed: false,
                    ..
                }]
            ),
            "{out:?}"
        );
    }

    #[test]
    fn link_changes_are_not_additions_and_bridge_port_messages_are_ignored() {
        let Some(Change::Link { added, removed, .. }) =
            change(new_link(5, LinkFlags::Up), false, 0)
        else {
            panic!()
        };
        assert!(!added && !removed);
        let RouteNetlinkMessage::NewLink(mut l) = new_link(5, LinkFlags::empty()) else {
            unreachable!()
        };
        l.header.interface_family = AddressFamily::Bridge;
        assert_eq!(
            change(RouteNetlinkMessage::DelLink(l.clone()), false, 0),
            None
        );
        l.header.interface_family = AddressFamily::Unspec;
        let Some(Change::Link { removed, .. }) = change(RouteNetlinkMessage::DelLink(l), false, 0)
        else {
            panic!()
        };
        assert!(removed);
    }
}
