//! The route dump behind the daemon's full reads of the kernel. On a router
//! or a Kubernetes node it returns a hundred thousand routes that are none
//! of the agent's business; here each one is judged by its table and
//! protocol in the bytes the kernel sent, and only routes of concern are
//! parsed. Through the shared rtnetlink connection every message would be
//! parsed first, and a whole dump could sit parsed in its queue: tens of
//! megabytes the process keeps for good.
//!
//! The kernel cannot filter this dump itself: strict dump filtering
//! (`NETLINK_GET_STRICT_CHK`) takes one table or one protocol, and the
//! agent's concern is a range of tables, the main table and its protocol.

use std::collections::HashMap;
use std::io;

use netlink_packet_core::{
    NetlinkBuffer, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use netlink_packet_route::route::RouteMessage;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{AsyncSocket, AsyncSocketExt, SocketAddr, TokioSocket};
use nix::libc::RTM_NEWROUTE;

use crate::netlink::events::{frames, route_of_concern};
use crate::netlink::request::{error, io_error, kernel_error, DUMP_ATTEMPTS};
use crate::netlink::view::Concern;
use crate::netlink::{msg, NetlinkError};
use crate::values::KernelRoute;

const CALL: &str = "RTM_GETROUTE";
const OBJECT: &str = "routes";

/// Every unicast route `concern` names, of both families, in every table;
/// each route's `dev` is `if<index>`.
pub(crate) async fn routes_of_concern(concern: &Concern) -> Result<Vec<KernelRoute>, NetlinkError> {
    let err = |call: &'static str| move |e: io::Error| io_error(call, OBJECT, &e);
    let mut socket = TokioSocket::new(NETLINK_ROUTE).map_err(err("socket"))?;
    socket
        .socket_mut()
        .bind(&SocketAddr::new(0, 0))
        .map_err(err("bind"))?;
    for _ in 0..DUMP_ATTEMPTS {
        // AF_UNSPEC with table 0 dumps every table of every family.
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetRoute(RouteMessage::default()));
        req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        req.finalize();
        let mut bytes = vec![0; req.buffer_len()];
        req.serialize(&mut bytes);
        socket.send(&bytes).await.map_err(err("sendmsg"))?;
        if let Some(routes) = receive(&mut socket, concern).await? {
            return Ok(routes);
        }
    }
    Err(error(
        CALL,
        OBJECT,
        "dump interrupted by concurrent changes, repeatedly",
    ))
}

/// Reads one dump to its end; `None` when the kernel marked it
/// inconsistent (the routes changed while it was being dumped).
async fn receive(
    socket: &mut TokioSocket,
    concern: &Concern,
) -> Result<Option<Vec<KernelRoute>>, NetlinkError> {
    let names = HashMap::new();
    let mut out = Vec::new();
    let mut interrupted = false;
    loop {
        let (data, from) = socket
            .recv_from_full()
            .await
            .map_err(|e| io_error("recvmsg", OBJECT, &e))?;
        if from.port_number() != 0 {
            continue;
        }
        for bytes in frames(&data) {
            let buffer = NetlinkBuffer::new(bytes);
            interrupted |= buffer.flags() & NLM_F_DUMP_INTR != 0;
            if buffer.message_type() == RTM_NEWROUTE && !route_of_concern(buffer.payload(), concern)
            {
                continue;
            }
            let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes)
                .map_err(|e| error(CALL, OBJECT, format!("unreadable answer: {e}")))?;
            match message.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(r)) => {
                    out.extend(msg::parse_route(&r, &names));
                }
                NetlinkPayload::Done(_) => return Ok((!interrupted).then_some(out)),
                NetlinkPayload::Error(e) => {
                    return match e.code {
                        Some(code) => Err(kernel_error(
                            CALL,
                            OBJECT.to_string(),
                            code,
                            message.header.flags,
                            &e.header,
                        )),
                        None => Ok((!interrupted).then_some(out)),
                    };
                }
                NetlinkPayload::Overrun(_) => {
                    return Err(error(CALL, OBJECT, "the kernel reported an overrun"))
                }
                _ => {}
            }
        }
    }
}
