//! Checks that need more than a value's type: ranges, relations between keys,
//! and numbers the kernel or EC2 reserve. Each problem names the key path it
//! is about, so the caller can point at the line.

use std::net::IpAddr;

use ipnet::IpNet;

use super::spans::{display_path, Seg};
use super::{
    is_glob, Config, EniMatch, LogConfig, MetadataConfig, MetricsConfig, Numbering, UserRoute,
};
use crate::imds::client::MAX_TOKEN_TTL_SECS;
use crate::imds::endpoint;
use crate::values::EniKey;

/// One thing wrong with a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: Vec<Seg<'static>>,
    pub message: String,
}

/// Lowest usable `table_base`: tables 0..=255 hold the kernel's own (253
/// default, 254 main, 255 local) and the numbers hand-written
/// `/etc/iproute2/rt_tables` entries use.
pub const MIN_TABLE_BASE: u32 = 256;

/// Priority of the kernel's `lookup main` rule. The per-ENI rules use their
/// table number as priority and must come before it, or main answers first
/// and the ENI tables are never consulted.
pub const MAIN_RULE_PRIORITY: u32 = 32766;

/// Tables (and rule priorities) above `table_base` that ENIs can occupy:
/// card 0..=63, device 0..=99.
pub const TABLE_SPAN: u32 = 100 * (EniKey::MAX_CARD + 1);

/// Highest `table_base` whose last ENI table still sorts before main's rule.
pub const MAX_TABLE_BASE: u32 = MAIN_RULE_PRIORITY - 1 - (TABLE_SPAN - 100 + EniKey::MAX_DEVICE);

pub const LOG_LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace"];
pub const LOG_FORMATS: &[&str] = &["auto", "text", "journal"];

pub const MTU_MIN: u32 = 576;
pub const MTU_MAX: u32 = 9216;
pub const TIMEOUT_MS_MIN: u64 = 100;
pub const TIMEOUT_MS_MAX: u64 = 10000;

/// Route protocol numbers with a meaning to the kernel (0 unspec, 1 redirect,
/// 2 kernel, 3 boot, 4 static) or registered to another routing daemon in
/// the kernel's rtnetlink.h. The agent deletes routes and rules carrying its
/// protocol, so sharing one would delete someone else's.
pub const RESERVED_PROTOCOLS: &[(u8, &str)] = &[
    (0, "unspec"),
    (1, "redirect"),
    (2, "kernel"),
    (3, "boot"),
    (4, "static"),
    (8, "gated"),
    (9, "ra"),
    (10, "mrt"),
    (11, "zebra"),
    (12, "bird"),
    (13, "dnrouted"),
    (14, "xorp"),
    (15, "ntk"),
    (16, "dhcp"),
    (17, "mrouted"),
    (18, "keepalived"),
    (42, "babel"),
    (99, "openr"),
    (186, "bgp"),
    (187, "isis"),
    (188, "ospf"),
    (189, "rip"),
    (192, "eigrp"),
    (255, "reserved"),
];

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
const IFNAME_MAX: usize = 15;

struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    fn report(&mut self, path: Vec<Seg<'static>>, message: String) {
        self.problems.push(Problem { path, message });
    }
}

fn key(section: &'static str, k: &'static str) -> Vec<Seg<'static>> {
    vec![Seg::Key(section), Seg::Key(k)]
}

fn with(path: &[Seg<'static>], more: &[Seg<'static>]) -> Vec<Seg<'static>> {
    let mut p = path.to_vec();
    p.extend_from_slice(more);
    p
}

/// Every problem in `config`, in file order of the sections.
pub fn validate(config: &Config) -> Vec<Problem> {
    let mut c = Checker {
        problems: Vec::new(),
    };
    metadata(&mut c, &config.metadata);
    numbering(&mut c, &config.numbering);
    for (i, m) in config.selection.exclude.iter().enumerate() {
        let path = vec![Seg::Key("selection"), Seg::Key("exclude"), Seg::Index(i)];
        if m == &EniMatch::default() {
            c.report(
                path.clone(),
                format!(
                    "{} is empty and would exclude every ENI; give at least one of name, mac, \
                     eni_id, device, card, subnet_id",
                    display_path(&path)
                ),
            );
        }
        matcher(&mut c, m, &path);
    }
    enis(&mut c, config);
    log(&mut c, &config.log);
    metrics(&mut c, &config.metrics);
    c.problems
}

fn metrics(c: &mut Checker, m: &MetricsConfig) {
    let Some(path) = &m.textfile else { return };
    let text = path.display();
    let file = path.file_name().map(|f| f.to_string_lossy());
    let problem = if !path.is_absolute() {
        "is not an absolute path; the daemon's working directory is /"
    } else if path.as_os_str().to_string_lossy().ends_with('/') || file.is_none() {
        "names a directory; name the file, e.g. /run/eniroute/eniroute.prom"
    } else if !file
        .as_deref()
        .is_some_and(|f| f.len() > 5 && f.ends_with(".prom"))
    {
        "does not end in .prom, the only files node_exporter's textfile collector reads"
    } else {
        return;
    };
    c.report(
        key("metrics", "textfile"),
        format!("metrics.textfile = {text:?} {problem}"),
    );
}

fn metadata(c: &mut Checker, m: &MetadataConfig) {
    for (k, url) in [
        ("endpoint", m.endpoint.as_ref()),
        ("ipv6_endpoint", Some(&m.ipv6_endpoint)),
    ]
    .into_iter()
    .filter_map(|(k, url)| Some((k, url?)))
    {
        if let Err(why) = endpoint::parse(url) {
            c.report(key("metadata", k), format!("metadata.{k} = {url:?} {why}"));
        }
    }
    if !(1..=MAX_TOKEN_TTL_SECS).contains(&m.token_ttl_secs) {
        c.report(
            key("metadata", "token_ttl_secs"),
            format!(
                "metadata.token_ttl_secs = {} is out of range; use 1 to {MAX_TOKEN_TTL_SECS} seconds \
                 (IMDS issues tokens for at most 6 hours)",
                m.token_ttl_secs
            ),
        );
    }
    if !(TIMEOUT_MS_MIN..=TIMEOUT_MS_MAX).contains(&m.request_timeout_ms) {
        c.report(
            key("metadata", "request_timeout_ms"),
            format!(
                "metadata.request_timeout_ms = {} is out of range; use {TIMEOUT_MS_MIN} to \
                 {TIMEOUT_MS_MAX} (IMDS answers within milliseconds; longer only delays retries)",
                m.request_timeout_ms
            ),
        );
    }
    for (k, v) in [
        ("volatile_refresh_secs", m.volatile_refresh_secs),
        ("static_refresh_secs", m.static_refresh_secs),
    ] {
        if v == 0 {
            c.report(
                key("metadata", k),
                format!("metadata.{k} = 0 would poll without pause; use a number of seconds of 1 or more"),
            );
        }
    }
}

fn numbering(c: &mut Checker, n: &Numbering) {
    let last =
        u64::from(n.table_base) + u64::from(TABLE_SPAN) - 100 + u64::from(EniKey::MAX_DEVICE);
    if n.table_base < MIN_TABLE_BASE {
        c.report(
            key("numbering", "table_base"),
            format!(
                "numbering.table_base = {} collides with the kernel's tables (253 default, \
                 254 main, 255 local) and the rt_tables range 0-255; use {MIN_TABLE_BASE} to \
                 {MAX_TABLE_BASE} (default 10000)",
                n.table_base
            ),
        );
    } else if n.table_base > MAX_TABLE_BASE {
        c.report(
            key("numbering", "table_base"),
            format!(
                "numbering.table_base = {} puts the last ENI's table and rule priority at {last}, \
                 after the main table's rule ({MAIN_RULE_PRIORITY}), so per-ENI rules would never \
                 be consulted; use {MIN_TABLE_BASE} to {MAX_TABLE_BASE} (default 10000)",
                n.table_base
            ),
        );
    }
    if n.ifgroup == 0 {
        c.report(
            key("numbering", "ifgroup"),
            "numbering.ifgroup = 0 is the group every link starts in, so the agent could not \
             tell its ENIs apart; use any other number (default 10000)"
                .into(),
        );
    }
    if let Some((_, owner)) = RESERVED_PROTOCOLS.iter().find(|(p, _)| *p == n.protocol) {
        c.report(
            key("numbering", "protocol"),
            format!(
                "numbering.protocol = {} is reserved for {owner:?} routes; the agent deletes \
                 routes and rules carrying its protocol, so it would remove theirs; choose an \
                 unused number such as the default 233",
                n.protocol
            ),
        );
    }
}

fn matcher(c: &mut Checker, m: &EniMatch, path: &[Seg<'static>]) {
    let at = |k: &'static str| with(path, &[Seg::Key(k)]);
    let label = |k: &str| format!("{}.{k}", display_path(path));
    if let Some(name) = &m.name {
        if name.is_empty() {
            c.report(
                at("name"),
                format!(
                    "{} is empty and matches no interface; give a name or a glob such as \"eth*\"",
                    label("name")
                ),
            );
        } else if !is_glob(name) && name.len() > IFNAME_MAX {
            c.report(
                at("name"),
                format!(
                    "{} = {name:?} is longer than the {IFNAME_MAX} characters an interface name \
                     can have, so it never matches; shorten it or use a glob",
                    label("name")
                ),
            );
        }
    }
    if let Some(id) = &m.eni_id {
        if !has_id_shape(id, "eni-") {
            c.report(
                at("eni_id"),
                format!(
                    "{} = {id:?} is not an ENI id; ENI ids look like \"eni-0123456789abcdef0\"",
                    label("eni_id")
                ),
            );
        }
    }
    if let Some(id) = &m.subnet_id {
        if !has_id_shape(id, "subnet-") {
            c.report(
                at("subnet_id"),
                format!(
                    "{} = {id:?} is not a subnet id; subnet ids look like \
                     \"subnet-0123456789abcdef0\"",
                    label("subnet_id")
                ),
            );
        }
    }
    if let Some(d) = m.device {
        if d > EniKey::MAX_DEVICE {
            c.report(
                at("device"),
                format!(
                    "{} = {d} never matches: EC2 device numbers run from 0 to {}",
                    label("device"),
                    EniKey::MAX_DEVICE
                ),
            );
        }
    }
    if let Some(card) = m.card {
        if card > EniKey::MAX_CARD {
            c.report(
                at("card"),
                format!(
                    "{} = {card} never matches: EC2 network cards run from 0 to {}",
                    label("card"),
                    EniKey::MAX_CARD
                ),
            );
        }
    }
}

fn has_id_shape(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix)
        .is_some_and(|rest| !rest.is_empty() && rest.chars().all(|ch| ch.is_ascii_alphanumeric()))
}

/// Whether a matcher selects at most one ENI on an instance: a main-table
/// route can leave through one ENI only.
fn selects_one(m: &EniMatch) -> bool {
    m.mac.is_some()
        || m.eni_id.is_some()
        || m.device.is_some()
        || m.name.as_deref().is_some_and(|n| !is_glob(n))
}

/// A user route seen from every [[eni]] entry, for the overlap checks.
struct Seen<'a> {
    entry: usize,
    index: usize,
    route: &'a UserRoute,
}

fn enis(c: &mut Checker, config: &Config) {
    let mut main_seen: Vec<Seen<'_>> = Vec::new();
    for (i, ov) in config.enis.iter().enumerate() {
        let entry = vec![Seg::Key("eni"), Seg::Index(i)];
        let match_path = with(&entry, &[Seg::Key("match")]);
        if ov.matcher == EniMatch::default() {
            c.report(
                match_path.clone(),
                format!(
                    "eni[{}] has an empty `match`, which selects every ENI; add name, mac, eni_id, \
                     device, card or subnet_id, or write match = {{ name = \"*\" }} if every ENI \
                     is meant",
                    i + 1
                ),
            );
        }
        matcher(c, &ov.matcher, &match_path);
        if !ov.main_routes.is_empty()
            && ov.matcher != EniMatch::default()
            && !selects_one(&ov.matcher)
        {
            c.report(
                with(&entry, &[Seg::Key("main_routes")]),
                format!(
                    "eni[{}].main_routes is set but its match can select several ENIs, and a \
                     main-table route leaves through one; match the ENI by mac, eni_id, device \
                     or an exact name",
                    i + 1
                ),
            );
        }
        if let Some(mtu) = ov.mtu {
            if !(MTU_MIN..=MTU_MAX).contains(&mtu) {
                c.report(
                    with(&entry, &[Seg::Key("mtu")]),
                    format!(
                        "eni[{}].mtu = {mtu} is out of range; use {MTU_MIN} to {MTU_MAX} (EC2 \
                         uses 9001 inside a VPC and 1500 beyond it)",
                        i + 1
                    ),
                );
            }
        }
        let mut table_seen: Vec<Seen<'_>> = Vec::new();
        for (list, seen) in [
            ("main_routes", &mut main_seen),
            ("table_routes", &mut table_seen),
        ] {
            let routes = if list == "main_routes" {
                &ov.main_routes
            } else {
                &ov.table_routes
            };
            for (j, r) in routes.iter().enumerate() {
                let rpath = with(&entry, &[Seg::Key(list), Seg::Index(j)]);
                route(c, r, &rpath, list);
                for prev in seen.iter() {
                    if !overlaps(&prev.route.dst, &r.dst) {
                        continue;
                    }
                    let prev_path = [
                        Seg::Key("eni"),
                        Seg::Index(prev.entry),
                        Seg::Key(list),
                        Seg::Index(prev.index),
                    ];
                    let hint = if list == "main_routes" {
                        "the main table can send a destination through one ENI only; remove one \
                         or make them disjoint"
                    } else {
                        "remove one or make them disjoint"
                    };
                    c.report(
                        with(&rpath, &[Seg::Key("dst")]),
                        format!(
                            "{}.dst = {} overlaps {} from {}.dst; {hint}",
                            display_path(&rpath),
                            r.dst,
                            prev.route.dst,
                            display_path(&prev_path)
                        ),
                    );
                    break;
                }
                seen.push(Seen {
                    entry: i,
                    index: j,
                    route: r,
                });
            }
        }
    }
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

fn route(c: &mut Checker, r: &UserRoute, path: &[Seg<'static>], list: &str) {
    let here = display_path(path);
    let dst = r.dst;
    if dst.trunc() != dst {
        c.report(
            with(path, &[Seg::Key("dst")]),
            format!(
                "{here}.dst = {dst} has host bits set, which the kernel refuses for a route; \
                 write {}",
                dst.trunc()
            ),
        );
    }
    if list == "table_routes" && dst.prefix_len() == 0 {
        c.report(
            with(path, &[Seg::Key("dst")]),
            format!(
                "{here}.dst = {dst} is the ENI table's own default route (via the subnet \
                 router); remove it, or use a narrower destination"
            ),
        );
    }
    if let Some(via) = r.via {
        let same_family = matches!(
            (via, dst),
            (IpAddr::V4(_), IpNet::V4(_)) | (IpAddr::V6(_), IpNet::V6(_))
        );
        if !same_family {
            let (vf, df) = match via {
                IpAddr::V4(_) => ("IPv4", "IPv6"),
                IpAddr::V6(_) => ("IPv6", "IPv4"),
            };
            c.report(
                with(path, &[Seg::Key("via")]),
                format!(
                    "{here}.via = {via} is {vf} but dst {dst} is {df}; give a gateway of the \
                     same family, or leave via out to use the subnet router"
                ),
            );
        } else if via.is_unspecified() || via.is_multicast() {
            c.report(
                with(path, &[Seg::Key("via")]),
                format!(
                    "{here}.via = {via} cannot be a gateway; give the address of a router on the \
                     ENI's subnet, or leave via out to use the subnet router"
                ),
            );
        }
    }
}

fn log(c: &mut Checker, l: &LogConfig) {
    if !LOG_LEVELS.contains(&l.level.as_str()) {
        c.report(
            key("log", "level"),
            format!(
                "log.level = {:?} is not a level; use one of {}",
                l.level,
                LOG_LEVELS.join(", ")
            ),
        );
    }
    if !LOG_FORMATS.contains(&l.format.as_str()) {
        c.report(
            key("log", "format"),
            format!(
                "log.format = {:?} is not a format; use one of {}",
                l.format,
                LOG_FORMATS.join(", ")
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_consistent() {
        assert_eq!(TABLE_SPAN, 6400);
        assert_eq!(MAX_TABLE_BASE, 26366);
        assert_eq!(MAX_TABLE_BASE + 6399, MAIN_RULE_PRIORITY - 1);
    }

    #[test]
    fn ids() {
        assert!(has_id_shape("eni-0123abc", "eni-"));
        assert!(!has_id_shape("eni-", "eni-"));
        assert!(!has_id_shape("0123abc", "eni-"));
        assert!(!has_id_shape("subnet-12 3", "subnet-"));
    }

    #[test]
    fn default_config_is_valid() {
        assert_eq!(validate(&Config::default()), []);
    }
}
