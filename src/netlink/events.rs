//! Kernel change notifications for the daemon: links, addresses, routes and
//! rules of both families. Each event only says *what kind* of thing
//! changed; the daemon re-reads and reconciles.
//!
//! This is a plain netlink socket rather than an rtnetlink connection: when
//! the daemon falls behind and the kernel drops notifications, `recv` fails
//! with ENOBUFS, and that must reach the caller as [`Event::Overrun`] (the
//! only safe answer is to re-read everything), not vanish inside a library.

use std::collections::VecDeque;
use std::io;

use netlink_packet_core::{NetlinkBuffer, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{AsyncSocket, AsyncSocketExt, SocketAddr, TokioSocket};
use nix::errno::Errno;
use nix::sys::socket::{setsockopt, sockopt};
use rtnetlink::MulticastGroup;

use crate::netlink::msg;
use crate::netlink::request::io_error;
use crate::netlink::NetlinkError;
use crate::values::Mac;

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

/// A change the kernel announced.
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

/// A socket subscribed to link, address, route and rule notifications.
pub struct EventSocket {
    socket: TokioSocket,
    pending: VecDeque<Event>,
}

impl EventSocket {
    /// Opens the socket with a [`DEFAULT_RECEIVE_BUFFER`] receive buffer.
    /// Must be called within a tokio runtime.
    pub fn open() -> Result<EventSocket, NetlinkError> {
        Self::open_with_receive_buffer(DEFAULT_RECEIVE_BUFFER)
    }

    /// Opens the socket with a receive buffer of about `bytes`. With
    /// CAP_NET_ADMIN the size may exceed `net.core.rmem_max`; without, the
    /// kernel caps it there.
    pub fn open_with_receive_buffer(bytes: usize) -> Result<EventSocket, NetlinkError> {
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
        })
    }

    /// The next notification. Cancel-safe: a notification already received
    /// is kept for the next call.
    pub async fn next(&mut self) -> Result<Event, NetlinkError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            match self.socket.recv_from_full().await {
                Ok((data, from)) => {
                    // Only the kernel (port 0) speaks for the kernel.
                    if from.port_number() == 0 {
                        parse_datagram(&data, &mut self.pending);
                    }
                }
                Err(e) if e.raw_os_error() == Some(Errno::ENOBUFS as i32) => {
                    self.drain();
                    return Ok(Event::Overrun);
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

/// Turns one datagram into events. A message that does not parse is
/// skipped: one odd notification must not stop the daemon from hearing the
/// next.
fn parse_datagram(data: &[u8], out: &mut VecDeque<Event>) {
    let mut offset = 0;
    while let Some(rest) = data.get(offset..) {
        let Ok(buffer) = NetlinkBuffer::new_checked(rest) else {
            break;
        };
        let len = buffer.length() as usize;
        let Some(bytes) = rest.get(..len) else {
            break;
        };
        match NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes) {
            Ok(message) => {
                if let NetlinkPayload::InnerMessage(inner) = message.payload {
                    if let Some(event) = event(inner) {
                        out.push_back(event);
                    }
                }
            }
            Err(e) => tracing::debug!("skipping a notification that does not parse: {e}"),
        }
        // Messages in a datagram are 4-byte aligned; len is at least a
        // header long, so this always advances.
        offset += (len + 3) & !3;
    }
}

fn event(message: RouteNetlinkMessage) -> Option<Event> {
    Some(match message {
        RouteNetlinkMessage::NewLink(link) => link_event(&link, false),
        RouteNetlinkMessage::DelLink(link) => link_event(&link, true),
        RouteNetlinkMessage::NewAddress(_) | RouteNetlinkMessage::DelAddress(_) => Event::Address,
        RouteNetlinkMessage::NewRoute(route) | RouteNetlinkMessage::DelRoute(route) => {
            Event::Route {
                protocol: u8::from(route.header.protocol),
                table: msg::route_table(&route),
            }
        }
        RouteNetlinkMessage::NewRule(rule) | RouteNetlinkMessage::DelRule(rule) => Event::Rule {
            protocol: msg::rule_protocol(&rule),
        },
        _ => return None,
    })
}

fn link_event(link: &LinkMessage, deleted: bool) -> Event {
    // Bridges announce port membership changes as AF_BRIDGE NEWLINK and
    // DELLINK on the same group; a port leaving a bridge is not a link
    // going away.
    let bridge = link.header.interface_family == AddressFamily::Bridge;
    let mut name = None;
    let mut mac = None;
    for attr in &link.attributes {
        match attr {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::Address(bytes) => mac = Mac::from_bytes(bytes),
            _ => {}
        }
    }
    Event::Link {
        index: link.header.index,
        // The kernel announces a newly registered device with every flag
        // marked as changed; later changes mark only what changed.
        added: !deleted && !bridge && link.header.change_mask == LinkFlags::all(),
        removed: deleted && !bridge,
        name,
        mac,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::NetlinkHeader;
    use netlink_packet_route::route::{RouteAttribute, RouteMessage, RouteProtocol};
    use netlink_packet_route::rule::{RuleAttribute, RuleMessage};

    fn bytes(inner: RouteNetlinkMessage) -> Vec<u8> {
        let mut m = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::InnerMessage(inner),
        );
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

    #[test]
    fn several_messages_in_one_datagram_and_garbage_between() {
        let mut route = RouteMessage::default();
        route.header.protocol = RouteProtocol::Other(233);
        route.attributes.push(RouteAttribute::Table(10001));
        let mut rule = RuleMessage::default();
        rule.attributes
            .push(RuleAttribute::Protocol(RouteProtocol::Other(233)));

        let mut data = bytes(new_link(5, LinkFlags::all()));
        // A well-framed message of an unknown type: skipped.
        let mut junk = vec![0u8; 20];
        junk[0] = 20;
        junk[4] = 0xee;
        junk[5] = 0x0e;
        data.extend(junk);
        data.extend(bytes(RouteNetlinkMessage::NewRoute(route)));
        data.extend(bytes(RouteNetlinkMessage::DelRule(rule)));
        // A truncated tail: ignored.
        data.extend([1, 2, 3]);

        let mut out = VecDeque::new();
        parse_datagram(&data, &mut out);
        assert_eq!(
            Vec::from(out),
            vec![
                Event::Link {
                    index: 5,
                    added: true,
                    removed: false,
                    name: Some("eth1".into()),
                    mac: Some(Mac::new([2, 0, 0, 0, 0, 9])),
                },
                Event::Route {
                    protocol: 233,
                    table: 10001
                },
                Event::Rule { protocol: 233 },
            ]
        );
    }

    #[test]
    fn link_changes_and_bridge_port_removals_are_not_additions_or_removals() {
        let Some(Event::Link { added, removed, .. }) = event(new_link(5, LinkFlags::Up)) else {
            panic!()
        };
        assert!(!added && !removed);
        let RouteNetlinkMessage::NewLink(mut l) = new_link(5, LinkFlags::empty()) else {
            unreachable!()
        };
        l.header.interface_family = AddressFamily::Bridge;
        let Some(Event::Link { added, removed, .. }) =
            event(RouteNetlinkMessage::DelLink(l.clone()))
        else {
            panic!()
        };
        assert!(!added && !removed);
        l.header.interface_family = AddressFamily::Unspec;
        let Some(Event::Link { removed, .. }) = event(RouteNetlinkMessage::DelLink(l)) else {
            panic!()
        };
        assert!(removed);
    }
}
