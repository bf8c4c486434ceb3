//! [`Kernel`] over rtnetlink.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::address::AddressMessage;
use netlink_packet_route::link::LinkMessage;
use netlink_packet_route::route::{RouteAttribute, RouteMessage};
use netlink_packet_route::rule::RuleMessage;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::AsyncSocket;
use rtnetlink::Handle;

use crate::netlink::altname;
use crate::netlink::msg::{self, RouteOp};
use crate::netlink::request::{self, ack, dump};
use crate::netlink::{Concern, EventSocket, Kernel, LinkChange, LinkNames, NetlinkError};
use crate::sysctl::{Sysctl, SysctlError};
use crate::values::{Address, KernelRoute, KernelRule, Link, Route, Rule};

/// The kernel's routing state, read and written over one rtnetlink socket.
///
/// Every route and rule it creates carries `protocol`, and every address it
/// adds carries it as `IFA_PROTO`: that is how eniroute recognises its own
/// objects after a restart.
#[derive(Debug, Clone)]
pub struct RtNetlink {
    handle: Handle,
    protocol: u8,
    /// The routes its event socket reports.
    concern: Concern,
    /// Requests sent (dumps and changes), for `-v` and the daemon's
    /// debug log: what a reconcile costs the kernel.
    sent: Arc<AtomicU64>,
}

impl RtNetlink {
    /// Opens the socket and runs its connection as a task on the current
    /// tokio runtime (an error outside one). The connection ends when the
    /// last clone of this value is dropped.
    pub fn connect(protocol: u8) -> Result<RtNetlink, NetlinkError> {
        const CALL: &str = "socket";
        const OBJECT: &str = "NETLINK_ROUTE";
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| request::error(CALL, OBJECT, e.to_string()))?;
        let (mut connection, handle, _) =
            rtnetlink::new_connection().map_err(|e| request::io_error(CALL, OBJECT, &e))?;
        // Acks and end-of-dump markers are passed through so that a request
        // which ends without one is known to have failed rather than
        // succeeded silently.
        connection.set_forward_ack(true);
        connection.set_forward_done(true);
        let socket = connection.socket_mut().socket_mut();
        // The kernel's reason text ("Nexthop device is not up") goes into
        // our errors; without echoing the request back.
        socket
            .set_ext_ack(true)
            .map_err(|e| request::io_error(CALL, OBJECT, &e))?;
        socket
            .set_cap_ack(true)
            .map_err(|e| request::io_error(CALL, OBJECT, &e))?;
        runtime.spawn(connection);
        Ok(RtNetlink {
            handle,
            protocol,
            concern: Concern::all(protocol),
            sent: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The same connection, with event sockets that report only the routes
    /// `concern` names.
    pub fn with_concern(mut self, concern: Concern) -> RtNetlink {
        self.concern = concern;
        self
    }

    /// The handle for one request, counted.
    fn request(&self) -> &Handle {
        self.sent.fetch_add(1, Ordering::Relaxed);
        &self.handle
    }

    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }

    /// The protocol number this connection marks its objects with.
    pub fn protocol(&self) -> u8 {
        self.protocol
    }

    /// One RTM_GETLINK dump: the links' messages, for the parsers below.
    async fn dump_links(&self) -> Result<Vec<LinkMessage>, NetlinkError> {
        let msgs = dump(
            self.request(),
            "RTM_GETLINK",
            "links",
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
        )
        .await?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(l),
                _ => None,
            })
            .collect())
    }

    /// The links in `msgs` with their addresses.
    async fn with_addresses(&self, msgs: &[LinkMessage]) -> Result<Vec<Link>, NetlinkError> {
        let mut links: Vec<Link> = msgs.iter().filter_map(msg::parse_link).collect();
        // AF_UNSPEC dumps the addresses of both families at once.
        let addresses = dump(
            self.request(),
            "RTM_GETADDR",
            "addresses",
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        )
        .await?;
        let position: HashMap<u32, usize> = links
            .iter()
            .enumerate()
            .map(|(i, l)| (l.index, i))
            .collect();
        for m in &addresses {
            let RouteNetlinkMessage::NewAddress(a) = m else {
                continue;
            };
            if let Some((index, address)) = msg::parse_address(a, self.protocol) {
                // An address of a link that appeared after the link dump
                // is picked up by the next read.
                if let Some(&i) = position.get(&index) {
                    links[i].addresses.push(address);
                }
            }
        }
        Ok(links)
    }
}

impl Kernel for RtNetlink {
    async fn links(&self) -> Result<Vec<Link>, NetlinkError> {
        self.with_addresses(&self.dump_links().await?).await
    }

    // One link dump serves both: a reconcile reads them together.
    async fn links_and_names(&self) -> Result<(Vec<Link>, Vec<LinkNames>), NetlinkError> {
        let msgs = self.dump_links().await?;
        let names = msgs.iter().filter_map(altname::parse_names).collect();
        Ok((self.with_addresses(&msgs).await?, names))
    }

    async fn rules(&self) -> Result<Vec<KernelRule>, NetlinkError> {
        // AF_UNSPEC dumps every family's rules; parse_rule keeps IPv4/IPv6.
        let msgs = dump(
            self.request(),
            "RTM_GETRULE",
            "rules",
            RouteNetlinkMessage::GetRule(RuleMessage::default()),
        )
        .await?;
        Ok(msgs
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRule(r) => msg::parse_rule(r),
                _ => None,
            })
            .collect())
    }

    async fn routes(&self) -> Result<Vec<KernelRoute>, NetlinkError> {
        let names: HashMap<u32, String> = self
            .dump_links()
            .await?
            .iter()
            .filter_map(msg::parse_link)
            .map(|l| (l.index, l.name))
            .collect();
        // AF_UNSPEC with table 0 (RT_TABLE_UNSPEC) dumps every table of
        // every family; it also works where IPv6 is disabled.
        let msgs = dump(
            self.request(),
            "RTM_GETROUTE",
            "routes",
            RouteNetlinkMessage::GetRoute(RouteMessage::default()),
        )
        .await?;
        Ok(msgs
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => msg::parse_route(r, &names),
                _ => None,
            })
            .collect())
    }

    async fn routes_of_concern(&self, concern: &Concern) -> Result<Vec<KernelRoute>, NetlinkError> {
        crate::netlink::route_dump::routes_of_concern(concern).await
    }

    async fn add_address(&self, address: &Address) -> Result<(), NetlinkError> {
        ack(
            self.request(),
            "RTM_NEWADDR",
            || address.to_string(),
            RouteNetlinkMessage::NewAddress(msg::address_message(address, self.protocol)),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .await
    }

    async fn del_address(&self, index: u32, address: IpNet) -> Result<(), NetlinkError> {
        ack(
            self.request(),
            "RTM_DELADDR",
            || format!("address {address} on link {index}"),
            RouteNetlinkMessage::DelAddress(msg::address_del_message(index, address)),
            0,
        )
        .await
    }

    async fn add_route(&self, route: &Route) -> Result<(), NetlinkError> {
        ack(
            self.request(),
            "RTM_NEWROUTE",
            || route.to_string(),
            RouteNetlinkMessage::NewRoute(msg::route_message(route, self.protocol, RouteOp::New)),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .await
    }

    async fn replace_route(&self, route: &Route) -> Result<(), NetlinkError> {
        ack(
            self.request(),
            "RTM_NEWROUTE",
            || route.to_string(),
            RouteNetlinkMessage::NewRoute(msg::route_message(route, self.protocol, RouteOp::New)),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .await
    }

    async fn del_route(&self, route: &Route) -> Result<(), NetlinkError> {
        ack(
            self.request(),
            "RTM_DELROUTE",
            || route.to_string(),
            RouteNetlinkMessage::DelRoute(msg::route_message(route, self.protocol, RouteOp::Del)),
            0,
        )
        .await
    }

    async fn add_rule(&self, rule: &Rule) -> Result<(), NetlinkError> {
        ack(
            self.request(),
            "RTM_NEWRULE",
            || rule.to_string(),
            RouteNetlinkMessage::NewRule(msg::rule_message(rule, self.protocol)),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .await
    }

    async fn del_rule(&self, rule: &Rule) -> Result<(), NetlinkError> {
        // The same message as for add: the kernel deletes the first rule
        // matching priority, family, source, table, suppress_ifgroup and
        // our protocol, so a foreign rule is never removed.
        ack(
            self.request(),
            "RTM_DELRULE",
            || rule.to_string(),
            RouteNetlinkMessage::DelRule(msg::rule_message(rule, self.protocol)),
            0,
        )
        .await
    }

    async fn del_foreign_rule(&self, rule: &Rule, protocol: u8) -> Result<(), NetlinkError> {
        ack(
            self.request(),
            "RTM_DELRULE",
            || format!("{rule} proto {protocol}"),
            RouteNetlinkMessage::DelRule(msg::rule_message(rule, protocol)),
            0,
        )
        .await
    }

    async fn del_foreign_route(&self, route: &KernelRoute) -> Result<(), NetlinkError> {
        let mut m = msg::route_message(&route.route, route.protocol, RouteOp::Del);
        // With the metric the kernel deletes this one route and no other
        // alias of the same destination (ours among them).
        m.attributes.push(RouteAttribute::Priority(route.metric));
        ack(
            self.request(),
            "RTM_DELROUTE",
            || {
                format!(
                    "{} proto {} metric {}",
                    route.route, route.protocol, route.metric
                )
            },
            RouteNetlinkMessage::DelRoute(m),
            0,
        )
        .await
    }

    async fn set_link(&self, index: u32, change: &LinkChange) -> Result<(), NetlinkError> {
        ack(
            self.request(),
            "RTM_SETLINK",
            || msg::describe_link_change(index, change),
            RouteNetlinkMessage::SetLink(msg::link_change_message(index, change)),
            0,
        )
        .await
    }

    async fn link_names(&self) -> Result<Vec<LinkNames>, NetlinkError> {
        let msgs = self.dump_links().await?;
        Ok(msgs.iter().filter_map(altname::parse_names).collect())
    }

    async fn set_altname(&self, index: u32, name: &str, add: bool) -> Result<(), NetlinkError> {
        let msg = altname::prop_message(index, name);
        let (call, message, flags) = if add {
            (
                "RTM_NEWLINKPROP",
                RouteNetlinkMessage::NewLinkProp(msg),
                NLM_F_CREATE | NLM_F_EXCL,
            )
        } else {
            ("RTM_DELLINKPROP", RouteNetlinkMessage::DelLinkProp(msg), 0)
        };
        ack(
            self.request(),
            call,
            || format!("altname {name} on link {index}"),
            message,
            flags,
        )
        .await
    }

    fn messages_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    fn udev_initialised(&self, index: u32) -> bool {
        crate::udev::initialised(index)
    }

    fn read_sysctl(&self, key: &Sysctl) -> Result<String, SysctlError> {
        crate::sysctl::read(key)
    }

    fn write_sysctl(&self, key: &Sysctl, value: &str) -> Result<(), SysctlError> {
        crate::sysctl::write(key, value)
    }

    type Events = EventSocket;

    fn events(&self) -> Result<EventSocket, NetlinkError> {
        EventSocket::open(self.concern.clone())
    }
}
