//! Raw metadata values to the typed model. Pure: the client fetches the keys,
//! this decides what they mean.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::model::{Eni, EniState};
use crate::values::{EniKey, EniKeyError, Mac, ParseMacError};

/// A metadata value that cannot be what its key holds. The ENI it belongs
/// to is left alone; the others are not.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("key {key}: {value:?} is not a number")]
    NotANumber { key: String, value: String },
    #[error("key {key}: {value:?} is not valid")]
    Invalid { key: String, value: String },
    #[error("key subnet-ipv4-cidr-block: {0:?} is not a CIDR")]
    SubnetNotCidr(String),
    #[error("key local-ipv4s: primary address {ip} is outside subnet {net}")]
    PrimaryOutsideSubnet { ip: Ipv4Addr, net: Ipv4Net },
    /// Well-formed, but no EC2 subnet or ENI can have it: applying it would
    /// break the host (169.254.169.254 on a link cuts off metadata itself).
    #[error("key {key}: {value} {why}")]
    Implausible {
        key: &'static str,
        value: String,
        why: String,
    },
    /// A card or device number out of range, with the key it came from.
    #[error("key {key}")]
    Key {
        key: &'static str,
        source: EniKeyError,
    },
}

/// Every per-MAC key the agent may read under
/// `network/interfaces/macs/<mac>/`; which of them it does read for one ENI
/// is decided in stages ([`FIRST_KEYS`], then [`rest_keys`]).
pub const ENI_KEYS: &[&str] = &[
    "device-number",
    "network-card",
    "network-card-index",
    "interface-id",
    "local-ipv4s",
    "ipv4-prefix",
    "ipv6s",
    "ipv6-prefix",
    "subnet-ipv4-cidr-block",
    "subnet-ipv6-cidr-blocks",
    "vpc-id",
    "vpc-ipv4-cidr-blocks",
    "vpc-ipv6-cidr-blocks",
    "subnet-id",
];

/// Read first for every ENI: whether it is ready at all (a new
/// attachment's device number lags), and what decides which of the rest
/// are needed.
pub const FIRST_KEYS: &[&str] = &["device-number", "network-card", "local-ipv4s", "vpc-id"];

/// The rest of what the plan uses of a ready ENI.
pub const REST_KEYS: &[&str] = &[
    "interface-id",
    "subnet-ipv4-cidr-block",
    "ipv4-prefix",
    "ipv6s",
    "ipv6-prefix",
    "subnet-ipv6-cidr-blocks",
    "subnet-id",
];

/// The VPC's CIDR blocks: used for the primary ENI's VPC and for an ENI in
/// another VPC (the cross-VPC routes), nowhere else.
pub const VPC_CIDR_KEYS: &[&str] = &["vpc-ipv4-cidr-blocks", "vpc-ipv6-cidr-blocks"];

/// Whether the [`FIRST_KEYS`] already say the ENI is not ready (its
/// device number not in metadata yet, or reading 0 on a secondary ENI):
/// nothing else of it would be used.
pub fn settled_early(primary: bool, first: &EniKeys) -> bool {
    // Without `network-card` the card comes from `network-card-index`,
    // which is not read yet: a device 0 may be on another card.
    let Some(device) = value(first, "device-number") else {
        return true;
    };
    let Some(card) = value(first, "network-card") else {
        return false;
    };
    // The same test as [`eni`]'s.
    !primary && device.parse::<u32>() == Ok(0) && card.parse::<u32>() == Ok(0)
}

/// Whether the keys still to read depend on the primary ENI's `vpc-id`:
/// for a secondary ENI that names a VPC.
pub fn needs_primary_vpc(primary: bool, first: &EniKeys) -> bool {
    !primary && value(first, "vpc-id").is_some_and(|v| !v.is_empty())
}

/// The keys to read after the [`FIRST_KEYS`]: the [`REST_KEYS`],
/// `network-card-index` where `network-card` is absent (older metadata
/// names the card so), and the [`VPC_CIDR_KEYS`] for the primary ENI and
/// for an ENI in another VPC than the primary's (`primary_vpc`).
pub fn rest_keys(primary: bool, first: &EniKeys, primary_vpc: Option<&str>) -> Vec<&'static str> {
    let mut keys = REST_KEYS.to_vec();
    if value(first, "network-card").is_none() {
        keys.push("network-card-index");
    }
    let vpc = value(first, "vpc-id").filter(|v| !v.is_empty());
    if primary || (vpc.is_some() && vpc != primary_vpc.map(str::trim)) {
        keys.extend(VPC_CIDR_KEYS);
    }
    keys
}

/// Keys that change while an instance runs (addresses move, prefixes are
/// delegated); the rest are fixed for the life of an attachment.
pub const VOLATILE_KEYS: &[&str] = &["local-ipv4s", "ipv4-prefix", "ipv6s", "ipv6-prefix"];

/// Key → value for one MAC; `None` is a 404 ("absent", which is not the same
/// as "unknown": an unknown value never reaches this function).
pub type EniKeys = BTreeMap<String, Option<String>>;

/// Parses the MAC listing (`0a:…:01/` per line).
pub fn mac_listing(body: &str) -> Result<Vec<Mac>, ParseMacError> {
    let mut macs = body
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| l.trim_end_matches('/').parse::<Mac>())
        .collect::<Result<Vec<_>, _>>()?;
    macs.sort();
    macs.dedup();
    Ok(macs)
}

/// Parses a directory listing (one key per line, sub-directories ending in
/// `/`) into the names it lists.
pub fn key_listing(body: &str) -> Vec<String> {
    body.lines()
        .map(|l| l.trim().trim_end_matches('/'))
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Builds one ENI from its keys. `primary` is whether this MAC is the
/// instance's top-level `mac`.
pub fn eni(mac: Mac, primary: bool, keys: &EniKeys) -> EniState {
    match parse_eni(mac, primary, keys) {
        Ok(Parsed::Ready(eni)) => EniState::Ready(eni),
        Ok(Parsed::NotReady(reason)) => EniState::NotReady { mac, reason },
        Err(error) => {
            let label = match value(keys, "interface-id").filter(|v| !v.is_empty()) {
                Some(id) => format!("{id} ({mac})"),
                None => mac.to_string(),
            };
            EniState::Invalid {
                mac,
                error: format!(
                    "ENI {label}: {}; not applied, its link stays as it is",
                    crate::error_chain(&error)
                ),
            }
        }
    }
}

#[allow(clippy::large_enum_variant)]
enum Parsed {
    Ready(Eni),
    NotReady(String),
}

fn value<'a>(keys: &'a EniKeys, key: &str) -> Option<&'a str> {
    keys.get(key).and_then(|v| v.as_deref()).map(str::trim)
}

fn number(keys: &EniKeys, key: &str) -> Result<Option<u32>, ValueError> {
    value(keys, key)
        .map(|v| {
            v.parse::<u32>().map_err(|_| ValueError::NotANumber {
                key: key.to_string(),
                value: v.to_string(),
            })
        })
        .transpose()
}

fn list<T: FromStr>(keys: &EniKeys, key: &str) -> Result<Vec<T>, ValueError> {
    value(keys, key)
        .unwrap_or("")
        .split_whitespace()
        .map(|v| {
            v.parse::<T>().map_err(|_| ValueError::Invalid {
                key: key.to_string(),
                value: v.to_string(),
            })
        })
        .collect()
}

fn parse_eni(mac: Mac, primary: bool, keys: &EniKeys) -> Result<Parsed, ValueError> {
    let Some(device) = number(keys, "device-number")? else {
        return Ok(Parsed::NotReady("device-number not yet in metadata".into()));
    };
    // A freshly attached ENI reads device-number 0 for a moment while its
    // metadata propagates; only the primary ENI really is device 0 on card 0,
    // so a secondary claiming it would steal the primary's table.
    let (card, card_key) = match number(keys, "network-card")? {
        Some(c) => (c, "network-card"),
        None => (
            number(keys, "network-card-index")?.unwrap_or(0),
            "network-card-index",
        ),
    };
    if device == 0 && card == 0 && !primary {
        return Ok(Parsed::NotReady(
            "device-number reads 0 on a secondary ENI (metadata still propagating)".into(),
        ));
    }
    let key = EniKey::new(card, device).map_err(|source| ValueError::Key {
        key: match source {
            EniKeyError::Card(_) => card_key,
            EniKeyError::Device(_) => "device-number",
        },
        source,
    })?;
    let ipv4s: Vec<Ipv4Addr> = list(keys, "local-ipv4s")?;
    let ipv6s: Vec<Ipv6Addr> = list(keys, "ipv6s")?;
    let subnet_v4 = value(keys, "subnet-ipv4-cidr-block")
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse::<Ipv4Net>()
                .map_err(|_| ValueError::SubnetNotCidr(v.to_string()))
        })
        .transpose()?;
    if let Some(net) = subnet_v4 {
        plausible_subnet_v4(net)?;
    }
    for ip in &ipv4s {
        plausible_v4("local-ipv4s", *ip, subnet_v4)?;
    }
    if let (Some(net), Some(ip)) = (subnet_v4, ipv4s.first()) {
        if !net.contains(ip) {
            return Err(ValueError::PrimaryOutsideSubnet { ip: *ip, net });
        }
    }
    let ipv4_prefixes: Vec<Ipv4Net> = list(keys, "ipv4-prefix")?;
    for p in &ipv4_prefixes {
        plausible_prefix(
            "ipv4-prefix",
            IpNet::V4(*p),
            p.trunc() != *p,
            p.hosts().count() == 0,
        )?;
        plausible_v4("ipv4-prefix", p.network(), subnet_v4)?;
    }
    let subnet_v6: Vec<Ipv6Net> = list(keys, "subnet-ipv6-cidr-blocks")?;
    for net in &subnet_v6 {
        plausible_subnet_v6(*net)?;
    }
    for ip in &ipv6s {
        plausible_v6("ipv6s", *ip)?;
        in_subnet_v6("ipv6s", IpNet::from(std::net::IpAddr::V6(*ip)), &subnet_v6)?;
    }
    let ipv6_prefixes: Vec<Ipv6Net> = list(keys, "ipv6-prefix")?;
    for p in &ipv6_prefixes {
        plausible_prefix("ipv6-prefix", IpNet::V6(*p), p.trunc() != *p, false)?;
        if let Some(why) = unusable_v6(p.network()) {
            return Err(implausible("ipv6-prefix", p, why));
        }
        in_subnet_v6("ipv6-prefix", IpNet::V6(*p), &subnet_v6)?;
    }
    if !ipv4s.is_empty() && subnet_v4.is_none() {
        return Ok(Parsed::NotReady(
            "local-ipv4s present but subnet-ipv4-cidr-block missing".into(),
        ));
    }
    let text = |k: &str| value(keys, k).filter(|v| !v.is_empty()).map(str::to_string);
    Ok(Parsed::Ready(Eni {
        mac,
        key,
        interface_id: text("interface-id"),
        subnet_id: text("subnet-id"),
        vpc_id: text("vpc-id"),
        ipv4s,
        ipv4_prefixes,
        ipv6s,
        ipv6_prefixes,
        subnet_v4,
        subnet_v6,
        vpc_v4: list(keys, "vpc-ipv4-cidr-blocks")?,
        vpc_v6: list(keys, "vpc-ipv6-cidr-blocks")?,
    }))
}

fn implausible(key: &'static str, value: impl ToString, why: impl Into<String>) -> ValueError {
    ValueError::Implausible {
        key,
        value: value.to_string(),
        why: why.into(),
    }
}

/// An EC2 subnet is between /16 and /28: a /0 is everything, and a /31 or
/// /32 leaves no room for the router at its first host address (a /32 made
/// the ENI's own secondary address its gateway).
fn plausible_subnet_v4(net: Ipv4Net) -> Result<(), ValueError> {
    const KEY: &str = "subnet-ipv4-cidr-block";
    if net.trunc() != net {
        return Err(implausible(
            KEY,
            net,
            format!("has host bits set (the subnet would be {})", net.trunc()),
        ));
    }
    match net.prefix_len() {
        0 => Err(implausible(KEY, net, "is /0, not a subnet")),
        31 | 32 => Err(implausible(KEY, net, "leaves no room for a subnet router")),
        _ => Ok(()),
    }
}

fn plausible_prefix(
    key: &'static str,
    net: IpNet,
    host_bits: bool,
    empty: bool,
) -> Result<(), ValueError> {
    if net.prefix_len() == 0 {
        return Err(implausible(key, net, "is /0, every address there is"));
    }
    if host_bits {
        return Err(implausible(key, net, "has host bits set"));
    }
    if empty {
        return Err(implausible(key, net, "holds no address"));
    }
    Ok(())
}

/// Addresses no ENI can have. The subnet's own network, broadcast and router
/// addresses are the VPC's, never an ENI's.
fn plausible_v4(
    key: &'static str,
    ip: Ipv4Addr,
    subnet: Option<Ipv4Net>,
) -> Result<(), ValueError> {
    let why = if ip.is_unspecified() {
        "is the unspecified address"
    } else if ip.is_loopback() {
        "is a loopback address"
    } else if ip.is_link_local() {
        "is link-local (169.254.0.0/16 holds the metadata service itself)"
    } else if ip.is_multicast() {
        "is a multicast address"
    } else if ip.is_broadcast() {
        "is the broadcast address"
    } else if subnet.is_some_and(|n| n.prefix_len() < 31 && ip == n.network()) {
        "is the subnet's network address"
    } else if subnet.is_some_and(|n| n.prefix_len() < 31 && ip == n.broadcast()) {
        "is the subnet's broadcast address"
    } else if subnet.is_some_and(|n| {
        n.prefix_len() < 31 && u32::from(n.network()).checked_add(1) == Some(u32::from(ip))
    }) {
        "is the subnet router, the ENI's own gateway"
    } else {
        return Ok(());
    };
    Err(implausible(key, ip, why))
}

/// The EC2 services every Nitro instance reaches at fixed IPv6 addresses:
/// metadata, DNS and time. On a link they would cut the host off from them,
/// as 169.254.169.254 would for IPv4.
const EC2_SERVICES_V6: [Ipv6Addr; 3] = [
    Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254),
    Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x253),
    Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x123),
];

fn plausible_v6(key: &'static str, ip: Ipv6Addr) -> Result<(), ValueError> {
    match unusable_v6(ip) {
        Some(why) => Err(implausible(key, ip, why)),
        None => Ok(()),
    }
}

/// Why no ENI can have `ip`, if so.
fn unusable_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let why = if ip.is_unspecified() {
        "is the unspecified address"
    } else if ip.is_loopback() {
        "is the loopback address"
    } else if ip.is_multicast() {
        "is a multicast address"
    } else if ip.segments()[0] & 0xffc0 == 0xfe80 {
        "is link-local (fe80::/10; the subnet router fe80:ec2::1 lives there)"
    } else if ip.to_ipv4_mapped().is_some() {
        "is an IPv4-mapped address"
    } else if EC2_SERVICES_V6.contains(&ip) {
        "is an EC2 service address (metadata, DNS or time)"
    } else {
        return None;
    };
    Some(why)
}

/// An EC2 subnet's IPv6 block is a /44 to /64 of global unicast space.
fn plausible_subnet_v6(net: Ipv6Net) -> Result<(), ValueError> {
    const KEY: &str = "subnet-ipv6-cidr-blocks";
    if net.trunc() != net {
        return Err(implausible(
            KEY,
            net,
            format!("has host bits set (the subnet would be {})", net.trunc()),
        ));
    }
    if net.prefix_len() == 0 {
        return Err(implausible(KEY, net, "is /0, not a subnet"));
    }
    if net.prefix_len() > 64 {
        return Err(implausible(
            KEY,
            net,
            "is smaller than a /64, which every EC2 IPv6 subnet is at least",
        ));
    }
    match unusable_v6(net.network()) {
        Some(why) => Err(implausible(KEY, net, why)),
        None => Ok(()),
    }
}

/// An ENI's IPv6 addresses and prefixes come from its subnet's blocks.
fn in_subnet_v6(key: &'static str, net: IpNet, subnets: &[Ipv6Net]) -> Result<(), ValueError> {
    if subnets.is_empty() || subnets.iter().any(|s| IpNet::V6(*s).contains(&net)) {
        return Ok(());
    }
    let blocks: Vec<String> = subnets.iter().map(Ipv6Net::to_string).collect();
    Err(implausible(
        key,
        shown_net(&net),
        format!(
            "is outside the subnet's blocks in subnet-ipv6-cidr-blocks ({})",
            blocks.join(", ")
        ),
    ))
}

fn shown_net(net: &IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

/// Reads a whole instance through `get` (a path relative to
/// `latest/meta-data/` → its value, `None` for 404), asking for the keys
/// the HTTP client asks for, in the same stages. Used on fixture trees;
/// the client does the same walk with its own error handling.
pub fn instance_from(
    get: impl Fn(&str) -> Option<String>,
) -> Result<super::model::Instance, String> {
    let primary_mac: Mac = get("mac")
        .ok_or("top-level mac missing")?
        .trim()
        .parse()
        .map_err(|e| format!("top-level mac: {e}"))?;
    let listing = get("network/interfaces/macs/").unwrap_or_default();
    let read = |mac: Mac, keys: &[&str]| -> EniKeys {
        keys.iter()
            .map(|k| {
                (
                    k.to_string(),
                    get(&format!("network/interfaces/macs/{mac}/{k}")),
                )
            })
            .collect()
    };
    let primary_vpc = read(primary_mac, &["vpc-id"]).remove("vpc-id").flatten();
    let enis = mac_listing(&listing)
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|mac| {
            let primary = mac == primary_mac;
            let mut keys = read(mac, FIRST_KEYS);
            if !settled_early(primary, &keys) {
                let rest = rest_keys(primary, &keys, primary_vpc.as_deref());
                keys.extend(read(mac, &rest));
            }
            eni(mac, primary, &keys)
        })
        .collect();
    Ok(super::model::Instance::new(primary_mac, enis))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(pairs: &[(&str, &str)]) -> EniKeys {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Some(v.to_string())))
            .collect()
    }

    const MAC: &str = "0a:00:00:00:00:02";

    /// What is read of an ENI beyond the first keys: nothing while its
    /// device number lags; `network-card-index` only without
    /// `network-card`; the VPC's blocks for the primary and for an ENI in
    /// another VPC only.
    #[test]
    fn the_keys_read_after_the_first_are_those_the_plan_uses() {
        let first = |pairs: &[(&str, &str)]| keys(pairs);
        assert!(settled_early(false, &first(&[])));
        assert!(settled_early(
            false,
            &first(&[("device-number", "0"), ("network-card", "0")])
        ));
        // Device 0 may be on another card: not settled before the index.
        assert!(!settled_early(false, &first(&[("device-number", "0")])));
        assert!(!settled_early(
            true,
            &first(&[("device-number", "0"), ("network-card", "0")])
        ));
        assert!(!settled_early(
            false,
            &first(&[("device-number", "x"), ("network-card", "0")])
        ));

        let same = first(&[
            ("device-number", "1"),
            ("network-card", "0"),
            ("vpc-id", "vpc-1"),
        ]);
        assert!(needs_primary_vpc(false, &same));
        assert!(!needs_primary_vpc(true, &same));
        assert_eq!(rest_keys(false, &same, Some("vpc-1")), REST_KEYS);
        let other = rest_keys(false, &same, Some("vpc-2"));
        assert!(VPC_CIDR_KEYS.iter().all(|k| other.contains(k)), "{other:?}");
        let primary = rest_keys(true, &same, None);
        assert!(
            VPC_CIDR_KEYS.iter().all(|k| primary.contains(k)),
            "{primary:?}"
        );
        let no_card = rest_keys(false, &first(&[("device-number", "1")]), Some("vpc-1"));
        assert!(no_card.contains(&"network-card-index"), "{no_card:?}");
        // Everything read is a key the agent knows.
        for k in FIRST_KEYS.iter().chain(&other).chain(&no_card) {
            assert!(ENI_KEYS.contains(k), "{k}");
        }
    }

    #[test]
    fn secondary_with_device_zero_is_not_ready() {
        let k = keys(&[
            ("device-number", "0"),
            ("local-ipv4s", "10.0.2.20"),
            ("subnet-ipv4-cidr-block", "10.0.2.0/24"),
        ]);
        assert!(matches!(
            eni(MAC.parse().unwrap(), false, &k),
            EniState::NotReady { .. }
        ));
        assert!(matches!(
            eni(MAC.parse().unwrap(), true, &k),
            EniState::Ready(_)
        ));
    }

    #[test]
    fn garbage_names_mac_key_and_value() {
        let k = keys(&[
            ("device-number", "1"),
            ("local-ipv4s", "10.0.2.300"),
            ("subnet-ipv4-cidr-block", "10.0.2.0/24"),
        ]);
        match eni(MAC.parse().unwrap(), false, &k) {
            EniState::Invalid { error, .. } => {
                assert!(
                    error.contains(MAC)
                        && error.contains("local-ipv4s")
                        && error.contains("10.0.2.300"),
                    "{error}"
                )
            }
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn card_index_fallback_and_range() {
        let k = keys(&[("device-number", "0"), ("network-card-index", "1")]);
        match eni(MAC.parse().unwrap(), false, &k) {
            EniState::Ready(e) => assert_eq!(e.key, EniKey { card: 1, device: 0 }),
            other => panic!("{other:?}"),
        }
        let k = keys(&[("device-number", "4000")]);
        assert!(matches!(
            eni(MAC.parse().unwrap(), false, &k),
            EniState::Invalid { .. }
        ));
    }

    /// An out-of-range number names the key it was read from.
    #[test]
    fn a_card_out_of_range_names_its_key() {
        for (key, value) in [("network-card", "70"), ("network-card-index", "70")] {
            let k = keys(&[("device-number", "1"), (key, value)]);
            match eni(MAC.parse().unwrap(), false, &k) {
                EniState::Invalid { error, .. } => assert!(
                    error.contains(&format!("key {key}: network card 70 is out of range")),
                    "{error}"
                ),
                other => panic!("{other:?}"),
            }
        }
        let k = keys(&[("device-number", "4000")]);
        match eni(MAC.parse().unwrap(), false, &k) {
            EniState::Invalid { error, .. } => {
                assert!(
                    error.contains("key device-number: device number 4000"),
                    "{error}"
                )
            }
            other => panic!("{other:?}"),
        }
        // A number too large for any counter names its key too.
        let k = keys(&[("device-number", "99999999999999999999")]);
        match eni(MAC.parse().unwrap(), false, &k) {
            EniState::Invalid { error, .. } => {
                assert!(error.contains("key device-number"), "{error}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn listing() {
        let macs = mac_listing("0a:00:00:00:00:02/\n0A:00:00:00:00:01/\n").unwrap();
        assert_eq!(macs.len(), 2);
        assert_eq!(macs[0].to_string(), "0a:00:00:00:00:01");
        assert!(mac_listing("nonsense/").is_err());
    }
}
