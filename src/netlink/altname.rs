//! Alternative link names (`ip link property add dev ens6 altname eni-…`):
//! RTM_NEWLINKPROP / RTM_DELLINKPROP with one `IFLA_ALT_IFNAME` inside
//! `IFLA_PROP_LIST`, and reading them back from the link dump, which carries
//! the same list on every link that has one (Linux 5.5 and later).

use netlink_packet_route::link::{LinkAttribute, LinkMessage, Prop};

use crate::values::Mac;

/// The kernel's bound on an alternative name: `ALTIFNAMSIZ` (128) with its
/// terminating NUL.
pub const MAX_ALTNAME: usize = 127;

/// A link's names as the kernel reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkNames {
    pub index: u32,
    /// The kernel name (`eth1`, `ens6`).
    pub name: String,
    pub mac: Option<Mac>,
    /// Alternative names, in the order the kernel lists them.
    pub altnames: Vec<String>,
}

/// Whether the kernel accepts `name` as an alternative name: what
/// `dev_valid_name` checks, with the longer altname bound. Metadata is
/// outside input; a value the kernel would refuse is never sent.
pub fn valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_ALTNAME
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
}

/// The message for `ip link property add|del dev <index> altname <name>`;
/// the call (add or delete) is the message type around it.
pub(crate) fn prop_message(index: u32, name: &str) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.attributes
        .push(LinkAttribute::PropList(vec![Prop::AltIfName(
            name.to_string(),
        )]));
    msg
}

/// Reads one link dump entry's names.
pub(crate) fn parse_names(msg: &LinkMessage) -> Option<LinkNames> {
    let mut name = None;
    let mut mac = None;
    let mut altnames = Vec::new();
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::Address(bytes) => mac = Mac::from_bytes(bytes),
            LinkAttribute::PropList(props) => {
                altnames.extend(props.iter().filter_map(|p| match p {
                    Prop::AltIfName(a) => Some(a.clone()),
                    _ => None,
                }))
            }
            _ => {}
        }
    }
    Some(LinkNames {
        index: msg.header.index,
        name: name?,
        mac,
        altnames,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{Emitable, Parseable};

    #[test]
    fn prop_message_round_trips_through_parse() {
        let mut msg = prop_message(7, "eni-0123456789abcdef0");
        msg.attributes.push(LinkAttribute::IfName("eth1".into()));
        msg.attributes
            .push(LinkAttribute::Address(vec![0x0a, 0, 0, 0, 0, 2]));
        let mut buf = vec![0; msg.buffer_len()];
        msg.emit(&mut buf);
        let back = LinkMessage::parse(&buf[..]).unwrap();
        assert_eq!(
            parse_names(&back),
            Some(LinkNames {
                index: 7,
                name: "eth1".into(),
                mac: Some(Mac::new([0x0a, 0, 0, 0, 0, 2])),
                altnames: vec!["eni-0123456789abcdef0".into()],
            })
        );
    }

    #[test]
    fn names_the_kernel_refuses_are_not_valid() {
        for ok in [
            "eni-0123456789abcdef0",
            "device-number-1",
            "device-number-2.1",
        ] {
            assert!(valid(ok), "{ok}");
        }
        let long = "x".repeat(MAX_ALTNAME + 1);
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "a\nb", long.as_str()] {
            assert!(!valid(bad), "{bad:?}");
        }
        assert!(valid(&"x".repeat(MAX_ALTNAME)));
    }
}
