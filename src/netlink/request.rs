//! One rtnetlink request and its answer: an acknowledged change or a dump.
//! Every failure becomes a [`NetlinkError`] naming the call and the object.

use std::io;
use std::num::NonZeroI32;

use futures::StreamExt;
use netlink_packet_core::{
    NetlinkMessage, NetlinkPayload, NlasIterator, NLMSG_ALIGNTO, NLM_F_ACK, NLM_F_ACK_TLVS,
    NLM_F_CAPPED, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use nix::errno::Errno;
use nix::libc::nlmsghdr;
use rtnetlink::Handle;

use crate::netlink::NetlinkError;

/// `NLMSGERR_ATTR_MSG` from `<linux/netlink.h>`: the kernel's
/// human-readable reason in an extended ack. Neither the netlink crates nor
/// libc export the extended-ack attribute numbers.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// The header the kernel echoes in front of a capped error.
const NLMSG_HDRLEN: usize = std::mem::size_of::<nlmsghdr>();
/// A dump that the kernel marks inconsistent (the table changed while it
/// was being dumped) is retried this many times in all.
pub(crate) const DUMP_ATTEMPTS: usize = 3;

pub(crate) fn error(
    call: &'static str,
    object: impl Into<String>,
    message: impl Into<String>,
) -> NetlinkError {
    NetlinkError {
        call,
        object: object.into(),
        errno: None,
        message: message.into(),
    }
}

pub(crate) fn io_error(
    call: &'static str,
    object: impl Into<String>,
    err: &io::Error,
) -> NetlinkError {
    NetlinkError {
        call,
        object: object.into(),
        errno: err.raw_os_error().map(Errno::from_raw),
        message: err.to_string(),
    }
}

/// The kernel answers with a negative errno; ours are positive.
pub(crate) fn kernel_error(
    call: &'static str,
    object: String,
    code: NonZeroI32,
    flags: u16,
    payload: &[u8],
) -> NetlinkError {
    let errno = code.get().saturating_abs();
    let mut message = io::Error::from_raw_os_error(errno).to_string();
    if let Some(reason) = ext_ack_message(flags, payload) {
        message = format!("{message}: {reason}");
    }
    NetlinkError {
        call,
        object,
        errno: Some(Errno::from_raw(errno)),
        message,
    }
}

/// The kernel's extended-ack text, if it sent one. `payload` is what
/// follows the error code: the request's header (and, unless capped, the
/// request itself), then attributes.
fn ext_ack_message(flags: u16, payload: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let echoed = if flags & NLM_F_CAPPED != 0 {
        NLMSG_HDRLEN
    } else {
        let len = payload.get(0..4)?;
        u32::from_ne_bytes(len.try_into().ok()?) as usize
    };
    let attributes = payload.get(align(echoed)..)?;
    for nla in NlasIterator::new(attributes) {
        let nla = nla.ok()?;
        if nla.kind() == NLMSGERR_ATTR_MSG {
            let text = nla.value().split(|b| *b == 0).next().unwrap_or_default();
            return Some(String::from_utf8_lossy(text).into_owned());
        }
    }
    None
}

fn align(len: usize) -> usize {
    len.next_multiple_of(usize::from(NLMSG_ALIGNTO))
}

fn closed(call: &'static str, object: String) -> NetlinkError {
    error(
        call,
        object,
        "netlink connection closed before the kernel answered",
    )
}

/// Sends a change and waits for the kernel's acknowledgement.
pub(crate) async fn ack(
    handle: &Handle,
    call: &'static str,
    object: impl FnOnce() -> String,
    message: RouteNetlinkMessage,
    flags: u16,
) -> Result<(), NetlinkError> {
    let mut req = NetlinkMessage::from(message);
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    let mut handle = handle.clone();
    let mut responses = match handle.request(req) {
        Ok(r) => r,
        Err(_) => return Err(closed(call, object())),
    };
    while let Some(response) = responses.next().await {
        if let NetlinkPayload::Error(err) = response.payload {
            return match err.code {
                None => Ok(()),
                Some(code) => Err(kernel_error(
                    call,
                    object(),
                    code,
                    response.header.flags,
                    &err.header,
                )),
            };
        }
    }
    // The connection is set up to forward acks, so running out of answers
    // without one means it went away.
    Err(closed(call, object()))
}

/// Dumps every object of one kind.
pub(crate) async fn dump(
    handle: &Handle,
    call: &'static str,
    object: &str,
    message: RouteNetlinkMessage,
) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
    dump_filtered(handle, call, object, message, Some).await
}

/// Dumps every object of one kind and keeps what `keep` makes of each, as
/// it arrives: a dump of a full routing table is never held whole.
pub(crate) async fn dump_filtered<T>(
    handle: &Handle,
    call: &'static str,
    object: &str,
    message: RouteNetlinkMessage,
    mut keep: impl FnMut(RouteNetlinkMessage) -> Option<T>,
) -> Result<Vec<T>, NetlinkError> {
    for _ in 0..DUMP_ATTEMPTS {
        let mut req = NetlinkMessage::from(message.clone());
        req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        let mut handle = handle.clone();
        let mut responses = match handle.request(req) {
            Ok(r) => r,
            Err(_) => return Err(closed(call, object.to_string())),
        };
        let mut out = Vec::new();
        let mut interrupted = false;
        let mut done = false;
        while let Some(response) = responses.next().await {
            interrupted |= response.header.flags & NLM_F_DUMP_INTR != 0;
            match response.payload {
                NetlinkPayload::InnerMessage(m) => out.extend(keep(m)),
                NetlinkPayload::Done(_) => {
                    done = true;
                    break;
                }
                NetlinkPayload::Error(err) => match err.code {
                    Some(code) => {
                        return Err(kernel_error(
                            call,
                            object.to_string(),
                            code,
                            response.header.flags,
                            &err.header,
                        ))
                    }
                    None => {
                        done = true;
                        break;
                    }
                },
                NetlinkPayload::Overrun(_) => {
                    return Err(error(call, object, "the kernel reported an overrun"))
                }
                _ => {}
            }
        }
        if !done {
            return Err(closed(call, object.to_string()));
        }
        if !interrupted {
            return Ok(out);
        }
    }
    Err(error(
        call,
        object,
        "dump interrupted by concurrent changes, repeatedly",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
        let len = 4 + value.len();
        let mut v = Vec::new();
        v.extend_from_slice(&(len as u16).to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(value);
        v.resize(align(len), 0);
        v
    }

    #[test]
    fn ext_ack_text_is_found_after_a_capped_header() {
        let mut payload = vec![0u8; NLMSG_HDRLEN];
        payload.extend(nla(4, &[0, 0, 0, 0]));
        payload.extend(nla(
            NLMSGERR_ATTR_MSG,
            b"Invalid prefix for given prefix length\0",
        ));
        assert_eq!(
            ext_ack_message(NLM_F_CAPPED | NLM_F_ACK_TLVS, &payload).as_deref(),
            Some("Invalid prefix for given prefix length")
        );
    }

    #[test]
    fn ext_ack_text_is_found_after_an_echoed_request() {
        let mut payload = vec![0u8; 28];
        payload[0..4].copy_from_slice(&28u32.to_ne_bytes());
        payload.extend(nla(NLMSGERR_ATTR_MSG, b"Nexthop device is not up\0"));
        assert_eq!(
            ext_ack_message(NLM_F_ACK_TLVS, &payload).as_deref(),
            Some("Nexthop device is not up")
        );
    }

    #[test]
    fn no_ext_ack_without_the_flag_or_with_garbage() {
        assert_eq!(ext_ack_message(0, &[1, 2, 3]), None);
        assert_eq!(ext_ack_message(NLM_F_ACK_TLVS, &[1, 2, 3]), None);
        assert_eq!(
            ext_ack_message(NLM_F_ACK_TLVS | NLM_F_CAPPED, &[0; 19]),
            None
        );
        let mut bad = vec![0u8; NLMSG_HDRLEN];
        bad.extend_from_slice(&[200, 0, 1, 0, b'x']);
        assert_eq!(ext_ack_message(NLM_F_ACK_TLVS | NLM_F_CAPPED, &bad), None);
    }

    #[test]
    fn kernel_errno_is_positive_and_races_are_recognised() {
        let e = kernel_error(
            "RTM_NEWROUTE",
            "route".into(),
            NonZeroI32::new(-17).unwrap(),
            0,
            &[],
        );
        assert_eq!(e.errno, Some(Errno::EEXIST));
        assert!(e.is_race());
        assert!(e.message.contains("File exists"), "{}", e.message);
    }
}
