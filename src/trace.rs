//! Which way one packet goes, and whether that is right: the kernel's
//! answer to `ip route get DST from SRC` (table and link), the rule that
//! led there (deduced from the rule list: the kernel does not say), and
//! the ENIs, turned into one verdict a person can act on. Pure apart from
//! [`trace`], which asks the kernel through [`RouteLookup`].

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use crate::netlink::route_get::{RouteAnswer, RouteKind, RuleEntry, RuleVerb};
use crate::netlink::{NetlinkError, RouteLookup, RouteQuery};
use crate::values::{table_name, Family, Link, Rule};

/// An ENI as `trace` needs it: from metadata (verified) or from what the
/// kernel and the state directory say the agent manages (unverified).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TraceEni {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface_id: Option<String>,
    pub mac: Option<String>,
    pub dev: Option<String>,
    pub ifindex: Option<u32>,
    pub table: Option<u32>,
    /// Its addresses (as /32 or /128) and delegated prefixes.
    #[serde(skip)]
    pub owns: Vec<IpNet>,
    /// The rules eniroute wants for it (empty where it wants none or
    /// metadata could not be read).
    #[serde(skip)]
    pub rules: Vec<Rule>,
    /// eniroute routes this ENI (not excluded, metadata consistent).
    pub managed: bool,
    /// `rules` is the plan's (metadata was read); otherwise every address
    /// is taken to have the rule the numbering gives it.
    #[serde(skip)]
    pub rules_known: bool,
    /// `managed`, `excluded`, a reason it waits, or `unverified`.
    pub status: String,
}

impl TraceEni {
    fn name(&self) -> String {
        let dev = self.dev.as_deref().unwrap_or("no link");
        match &self.interface_id {
            Some(id) => format!("{dev} (ENI {id})"),
            None => dev.to_string(),
        }
    }
}

/// The verdict, worst-first in [`Verdict::is_ok`] terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Leaves through the ENI the source address belongs to.
    Correct,
    /// The destination is this host's own address.
    Local,
    /// Leaves through a link that is not an ENI (a bridge, a tunnel).
    NotViaEni,
    /// eniroute's rule for the source is missing: `eniroute apply`.
    RuleMissing,
    /// The source belongs to an ENI whose link lacks it: `eniroute apply`.
    AddressMissing,
    /// Another program's rule takes the packet before eniroute's.
    ForeignRuleFirst,
    /// Leaves through another ENI for another reason.
    WrongLink,
    /// The source is not an address of any ENI (or of this host).
    NotEniSource,
    /// The kernel has no route (or a rule rejects the packet).
    NoRoute,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Correct => "correct",
            Verdict::Local => "local",
            Verdict::NotViaEni => "not-via-eni",
            Verdict::RuleMissing => "rule-missing",
            Verdict::AddressMissing => "address-missing",
            Verdict::ForeignRuleFirst => "foreign-rule-first",
            Verdict::WrongLink => "wrong-link",
            Verdict::NotEniSource => "not-eni-source",
            Verdict::NoRoute => "no-route",
        }
    }

    /// The packet goes where the VPC accepts it.
    pub fn is_ok(self) -> bool {
        matches!(self, Verdict::Correct | Verdict::Local | Verdict::NotViaEni)
    }
}

/// The rule the kernel went by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsedRule {
    pub priority: u32,
    /// As `ip rule` prints it, with the protocol number.
    pub text: String,
    pub protocol: u8,
    /// Carries eniroute's protocol.
    pub eniroute: bool,
}

/// Where the packet goes, as the kernel answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Path {
    pub dev: Option<String>,
    pub ifindex: Option<u32>,
    pub table: u32,
    pub gateway: Option<IpAddr>,
    /// The route that matched, as it sits in its table.
    pub route: Option<String>,
    pub kind: RouteKind,
}

/// One traced packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Trace {
    pub verdict: Verdict,
    /// The verdict as one line.
    pub message: String,
    pub query: RouteQuery,
    /// The source the packet carries.
    pub src: Option<IpAddr>,
    /// No source was given: the kernel chose it.
    pub src_chosen_by_kernel: bool,
    /// The ENI the source address belongs to.
    pub src_eni: Option<TraceEni>,
    /// The link that holds the source address.
    pub src_dev: Option<String>,
    pub path: Option<Path>,
    /// The ENI the packet leaves through.
    pub out_eni: Option<TraceEni>,
    pub rule: Option<UsedRule>,
    /// eniroute's rule for the source, when it is missing.
    pub expected_rule: Option<String>,
    /// The kernel's refusal, for `no-route` and a non-local source.
    pub error: Option<String>,
}

/// What the host holds, besides the kernel's answer.
#[derive(Debug, Clone, Copy)]
pub struct Host<'a> {
    pub links: &'a [Link],
    pub rules: &'a [RuleEntry],
    pub enis: &'a [TraceEni],
    /// eniroute's protocol number.
    pub protocol: u8,
    /// The uid the kernel matched `uidrange` rules with (the caller's).
    pub uid: u32,
}

/// The packet as the rules see it: a locally sent one (input interface
/// `lo`, no mark), with no source when none was given.
fn rule_matches(r: &RuleEntry, family: Family, q: &RouteQuery, uid: u32) -> bool {
    if r.family != Some(family) {
        return false;
    }
    let unspecified = match family {
        Family::Ipv4 => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        Family::Ipv6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    };
    let src = q.src.unwrap_or(unspecified);
    let in_range = |range: Option<(u16, u16)>, mask: Option<u16>, port: u16| match (range, mask) {
        (Some((value, _)), Some(mask)) => port & mask == value & mask,
        (range, _) => range.is_none_or(|(a, b)| (a..=b).contains(&port)),
    };
    let m = r.iif.as_deref().is_none_or(|i| i == "lo")
        && r.oif.is_none()
        && r.fwmark.is_none_or(|(mark, mask)| mark & mask == 0)
        && !r.other
        && r.uid.is_none_or(|(a, b)| (a..=b).contains(&uid))
        && r.from.is_none_or(|n| n.contains(&src))
        && r.to.is_none_or(|n| n.contains(&q.dst))
        && r.tos == 0
        && r.ipproto.is_none_or(|p| Some(p) == q.ipproto)
        && in_range(r.sport, r.sport_mask, 0)
        && in_range(r.dport, r.dport_mask, q.dport.unwrap_or(0));
    m != r.invert
}

/// The rule that produced `answer` (or, for a refusal, the rule that
/// refused): the first, in the kernel's order, whose selectors match the
/// packet and whose table holds the answer without its suppressors
/// discarding it. Earlier matching rules whose tables had no route are
/// passed over, as the kernel passes over them.
pub fn rule_used<'r>(
    rules: &'r [RuleEntry],
    q: &RouteQuery,
    answer: Result<&RouteAnswer, ()>,
    oif_group: Option<u32>,
    uid: u32,
) -> Option<&'r RuleEntry> {
    let family = match q.dst {
        IpAddr::V4(_) => Family::Ipv4,
        IpAddr::V6(_) => Family::Ipv6,
    };
    let mut i = 0;
    // A goto only jumps forward, so this ends.
    while let Some(r) = rules.get(i) {
        i += 1;
        if !rule_matches(r, family, q, uid) {
            continue;
        }
        match r.verb {
            Some(RuleVerb::Lookup(t)) => {
                let Ok(a) = answer else { continue };
                let suppressed = r
                    .suppress_prefixlen
                    .zip(a.matched)
                    .is_some_and(|(l, m)| u32::from(m.prefix_len()) <= l)
                    || (r.suppress_ifgroup.is_some() && r.suppress_ifgroup == oif_group);
                if t == a.table && !suppressed {
                    return Some(r);
                }
            }
            Some(RuleVerb::Goto(p)) => {
                match rules
                    .iter()
                    .position(|x| x.priority == p && x.family == r.family)
                {
                    Some(j) if j >= i => i = j,
                    _ => {}
                }
            }
            Some(RuleVerb::Blackhole | RuleVerb::Unreachable | RuleVerb::Prohibit) => {
                return answer.is_err().then_some(r)
            }
            _ => {}
        }
    }
    None
}

fn ours(r: &RuleEntry, protocol: u8, table: u32, src: IpAddr) -> bool {
    r.protocol == protocol
        && r.table() == Some(table)
        && r.from.is_some_and(|n| n.contains(&src))
        && r.iif.is_none()
        && r.oif.is_none()
        && r.fwmark.is_none()
        && r.ipproto.is_none()
        && r.dport.is_none()
        && r.sport.is_none()
        && r.uid.is_none()
        && !r.other
        && !r.invert
}

/// eniroute's rule for `src` on `eni`, as the plan has it (or as the
/// numbering makes it when metadata was not read).
fn expected_rule(eni: &TraceEni, src: IpAddr) -> Option<String> {
    if let Some(r) = eni
        .rules
        .iter()
        .find(|r| r.from.is_some_and(|n| n.contains(&src)))
    {
        return Some(r.to_string());
    }
    let t = eni.table?;
    let family = match src {
        IpAddr::V4(_) => Family::Ipv4,
        IpAddr::V6(_) => Family::Ipv6,
    };
    Some(
        Rule {
            family,
            priority: t,
            from: Some(IpNet::from(src)),
            table: t,
            suppress_ifgroup: None,
        }
        .to_string(),
    )
}

/// Asks the kernel about `q` and judges the answer.
pub async fn trace(
    kernel: &impl RouteLookup,
    q: &RouteQuery,
    links: &[Link],
    enis: &[TraceEni],
    protocol: u8,
    uid: u32,
) -> Result<Trace, NetlinkError> {
    let rules = kernel.rule_entries().await?;
    let answer = kernel.route_get(q).await;
    let host = Host {
        links,
        rules: &rules,
        enis,
        protocol,
        uid,
    };
    Ok(judge(q, &answer, &host))
}

/// The verdict on the kernel's `answer` to `q`.
pub fn judge(q: &RouteQuery, answer: &Result<RouteAnswer, NetlinkError>, host: &Host) -> Trace {
    let src = q.src.or(answer.as_ref().ok().and_then(|a| a.src));
    let src_link = src.and_then(|s| {
        host.links
            .iter()
            .find(|l| l.addresses.iter().any(|a| a.addr.addr() == s))
    });
    let src_eni = src.and_then(|s| {
        host.enis
            .iter()
            .find(|e| e.owns.iter().any(|n| n.contains(&s)))
    });
    let oif = answer.as_ref().ok().and_then(|a| a.oif);
    let out_link = oif.and_then(|i| host.links.iter().find(|l| l.index == i));
    let out_eni = oif.and_then(|i| host.enis.iter().find(|e| e.ifindex == Some(i)));
    let used = rule_used(
        host.rules,
        q,
        answer.as_ref().map_err(|_| ()),
        out_link.map(|l| l.group),
        host.uid,
    );
    let path = answer.as_ref().ok().map(|a| Path {
        dev: out_link.map(|l| l.name.clone()),
        ifindex: a.oif,
        table: a.table,
        gateway: a.gateway,
        route: a.matched.map(|m| {
            let dst = if m.prefix_len() == 0 {
                "default".to_string()
            } else {
                m.to_string()
            };
            let mut s = dst;
            if let Some(g) = a.gateway {
                s += &format!(" via {g}");
            }
            if let Some(l) = out_link {
                s += &format!(" dev {}", l.name);
            }
            s + &format!(" table {}", table_name(a.table))
        }),
        kind: a.kind,
    });
    let mut t = Trace {
        verdict: Verdict::NoRoute,
        message: String::new(),
        query: q.clone(),
        src,
        src_chosen_by_kernel: q.src.is_none(),
        src_eni: src_eni.cloned(),
        src_dev: src_link.map(|l| l.name.clone()),
        path,
        out_eni: out_eni.cloned(),
        rule: used.map(|r| UsedRule {
            priority: r.priority,
            text: r.to_string(),
            protocol: r.protocol,
            eniroute: r.protocol == host.protocol,
        }),
        expected_rule: None,
        error: answer.as_ref().err().map(|e| e.message.clone()),
    };
    let subject = subject(q, src);
    let Some(src) = src else {
        t.message = format!("{subject}: no route: {}", refusal(&t));
        return t;
    };
    if let (Some(e), None) = (src_eni, src_link) {
        t.verdict = Verdict::AddressMissing;
        t.message = format!(
            "{src} belongs to {} but is on no link of this host: nothing can be sent from it; \
             address missing — run `eniroute apply`",
            e.name()
        );
        return t;
    }
    let Some(src_link) = src_link else {
        t.verdict = Verdict::NotEniSource;
        t.message = format!(
            "{src} is not an address of this host, nor of any of its ENIs{}",
            t.error
                .as_ref()
                .map(|e| format!(" (the kernel: {e})"))
                .unwrap_or_default()
        );
        return t;
    };
    let a = match answer {
        Ok(a) => a,
        Err(_) => {
            t.message = format!("{subject}: no route: {}", refusal(&t));
            return t;
        }
    };
    let how = |eni: Option<&TraceEni>| {
        let mut parts = Vec::new();
        if let Some(id) = eni.and_then(|e| e.interface_id.as_ref()) {
            parts.push(format!("ENI {id}"));
        }
        parts.push(format!("table {}", table_name(a.table)));
        parts.push(match used {
            Some(r) => format!("rule {}", r.priority),
            None => "no rule found that leads there".into(),
        });
        parts.join(", ")
    };
    let dev = out_link
        .map(|l| l.name.clone())
        .or(a.oif.map(|i| format!("if{i}")))
        .unwrap_or_else(|| "nowhere".into());
    if a.kind == RouteKind::Local {
        t.verdict = Verdict::Local;
        t.message = format!(
            "{subject} stays on this host ({} is one of its addresses; {}): correct",
            q.dst,
            how(None)
        );
        return t;
    }
    let Some(out) = out_eni else {
        t.verdict = Verdict::NotViaEni;
        t.message = format!(
            "{subject} leaves {dev} ({}), which is not an ENI: the VPC does not see it",
            how(None)
        );
        return t;
    };
    let Some(e) = src_eni else {
        t.verdict = Verdict::NotEniSource;
        t.message = format!(
            "{subject} leaves {dev} ({}) with a source that belongs to {}, not to an ENI: \
             the VPC drops it unless it is translated (NAT) first",
            how(Some(out)),
            src_link.name
        );
        return t;
    };
    let rule_present = e.table.is_some_and(|table| {
        host.rules
            .iter()
            .any(|r| ours(r, host.protocol, table, src))
    });
    // An address the plan gives no rule (the primary ENI's secondary IPs
    // left to the VPC CNI's pods) lacks none.
    let wanted = !e.rules_known
        || e.rules
            .iter()
            .any(|r| r.from.is_some_and(|n| n.contains(&src)));
    let missing = e.managed && wanted && !rule_present;
    if missing {
        t.expected_rule = expected_rule(e, src);
    }
    let expected = t.expected_rule.clone().unwrap_or_default();
    if out.ifindex == e.ifindex {
        if missing {
            t.verdict = Verdict::RuleMissing;
            t.message = format!(
                "{subject} leaves {dev} ({}), {src}'s own ENI, but only because {} routes it \
                 there: rule missing ({expected}) — run `eniroute apply`",
                how(Some(out)),
                table_name(a.table)
            );
        } else {
            t.verdict = Verdict::Correct;
            t.message = format!("{subject} leaves {dev} ({}): correct", how(Some(out)));
        }
        return t;
    }
    let wrong = format!(
        "{subject} would leave {dev} ({}) although {src} belongs to {}: the VPC drops it",
        how(Some(out)),
        e.name()
    );
    let foreign_first = used
        .filter(|r| r.protocol != host.protocol && e.table.is_none_or(|table| r.priority <= table));
    if let Some(r) = foreign_first {
        t.verdict = Verdict::ForeignRuleFirst;
        let six = if matches!(src, IpAddr::V6(_)) {
            " -6"
        } else {
            ""
        };
        t.message = format!(
            "{wrong}; foreign rule first: priority {} ({r}) comes before eniroute's rules — \
             delete or re-prioritise it (`ip{six} rule del priority {} …`)",
            r.priority, r.priority
        );
    } else if missing {
        t.verdict = Verdict::RuleMissing;
        t.message = format!("{wrong}; rule missing ({expected}) — run `eniroute apply`");
    } else {
        t.verdict = Verdict::WrongLink;
        let why = if !e.managed {
            format!("eniroute does not route this ENI ({})", e.status)
        } else if !wanted && !rule_present {
            format!(
                "eniroute gives {src} no rule of its own (left to another agent; see `eniroute status`)"
            )
        } else {
            format!(
                "eniroute's rule is in place but table {} has no route for {} — see `eniroute status`",
                e.table.map(table_name).unwrap_or_else(|| "?".into()),
                q.dst
            )
        };
        t.message = format!("{wrong}; {why}");
    }
    t
}

fn subject(q: &RouteQuery, src: Option<IpAddr>) -> String {
    let to = match q.dport {
        Some(p) => format!("{} port {p}", q.dst),
        None => q.dst.to_string(),
    };
    match (q.src, src) {
        (Some(s), _) => format!("reply from {s} to {to}"),
        (None, Some(s)) => format!("traffic to {to} (source {s}, chosen by the kernel)"),
        (None, None) => format!("traffic to {to}"),
    }
}

fn refusal(t: &Trace) -> String {
    let mut s = t.error.clone().unwrap_or_else(|| "no answer".into());
    if let Some(r) = &t.rule {
        s += &format!(" (rule {} rejects it: {})", r.priority, r.text);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::LinkAddress;
    use nix::errno::Errno;

    const OURS: u8 = 233;

    fn link(index: u32, name: &str, group: u32, addrs: &[&str]) -> Link {
        Link {
            index,
            name: name.into(),
            mac: None,
            up: true,
            group,
            mtu: 1500,
            addresses: addrs
                .iter()
                .map(|a| LinkAddress {
                    addr: a.parse().unwrap(),
                    owned: false,
                    valid_lft: None,
                    proto: None,
                })
                .collect(),
        }
    }

    fn eni(id: &str, dev: &str, index: u32, table: u32, owns: &[&str]) -> TraceEni {
        let owns: Vec<IpNet> = owns.iter().map(|a| a.parse().unwrap()).collect();
        TraceEni {
            interface_id: Some(id.into()),
            mac: None,
            dev: Some(dev.into()),
            ifindex: Some(index),
            table: Some(table),
            rules: owns
                .iter()
                .map(|n| Rule {
                    family: Family::of(n),
                    priority: table,
                    from: Some(*n),
                    table,
                    suppress_ifgroup: None,
                })
                .collect(),
            owns,
            managed: true,
            rules_known: true,
            status: "managed".into(),
        }
    }

    fn rule(priority: u32, from: Option<&str>, table: u32, protocol: u8) -> RuleEntry {
        let from: Option<IpNet> = from.map(|f| f.parse().unwrap());
        RuleEntry {
            family: Some(from.map(|n| Family::of(&n)).unwrap_or(Family::Ipv4)),
            priority,
            protocol,
            verb: Some(RuleVerb::Lookup(table)),
            from,
            ..RuleEntry::default()
        }
    }

    /// The management-network instance as eniroute leaves it.
    struct World {
        links: Vec<Link>,
        enis: Vec<TraceEni>,
        rules: Vec<RuleEntry>,
    }

    fn world() -> World {
        let mut suppress = rule(9999, None, 254, OURS);
        suppress.suppress_ifgroup = Some(10000);
        World {
            links: vec![
                link(1, "lo", 0, &["127.0.0.1/8"]),
                link(2, "eth0", 10000, &["10.0.1.10/24"]),
                link(3, "eth1", 10000, &["10.0.2.20/24", "10.0.2.21/32"]),
                link(4, "docker0", 0, &["172.17.0.1/16"]),
            ],
            enis: vec![
                eni("eni-0", "eth0", 2, 10000, &["10.0.1.10/32"]),
                eni("eni-1", "eth1", 3, 10001, &["10.0.2.20/32", "10.0.2.21/32"]),
            ],
            rules: vec![
                rule(0, None, 255, 2),
                suppress,
                rule(10000, Some("10.0.1.10/32"), 10000, OURS),
                rule(10001, Some("10.0.2.20/32"), 10001, OURS),
                rule(10001, Some("10.0.2.21/32"), 10001, OURS),
                rule(32766, None, 254, 2),
                rule(32767, None, 253, 2),
            ],
        }
    }

    fn q(dst: &str, src: Option<&str>) -> RouteQuery {
        RouteQuery {
            dst: dst.parse().unwrap(),
            src: src.map(|s| s.parse().unwrap()),
            ipproto: None,
            dport: None,
        }
    }

    fn via(table: u32, oif: u32, matched: &str, src: &str) -> Result<RouteAnswer, NetlinkError> {
        Ok(RouteAnswer {
            kind: RouteKind::Unicast,
            table,
            oif: Some(oif),
            gateway: None,
            src: Some(src.parse().unwrap()),
            matched: Some(matched.parse().unwrap()),
        })
    }

    fn judged(w: &World, q: &RouteQuery, a: Result<RouteAnswer, NetlinkError>) -> Trace {
        let host = Host {
            links: &w.links,
            rules: &w.rules,
            enis: &w.enis,
            protocol: OURS,
            uid: 0,
        };
        judge(q, &a, &host)
    }

    /// A fake kernel: fixed rules and one answer.
    struct Fake {
        rules: Vec<RuleEntry>,
        answer: Result<RouteAnswer, NetlinkError>,
    }

    impl RouteLookup for Fake {
        async fn route_get(&self, _: &RouteQuery) -> Result<RouteAnswer, NetlinkError> {
            self.answer.clone()
        }
        async fn rule_entries(&self) -> Result<Vec<RuleEntry>, NetlinkError> {
            Ok(self.rules.clone())
        }
    }

    #[test]
    fn the_enis_own_table_and_rule_is_correct() {
        let w = world();
        let fake = Fake {
            rules: w.rules.clone(),
            answer: via(10001, 3, "0.0.0.0/0", "10.0.2.21"),
        };
        let t = futures::executor::block_on(trace(
            &fake,
            &q("10.9.0.5", Some("10.0.2.21")),
            &w.links,
            &w.enis,
            OURS,
            0,
        ))
        .unwrap();
        assert_eq!(t.verdict, Verdict::Correct, "{}", t.message);
        assert_eq!(
            t.message,
            "reply from 10.0.2.21 to 10.9.0.5 leaves eth1 (ENI eni-1, table 10001, rule 10001): correct"
        );
        let r = t.rule.unwrap();
        assert_eq!((r.priority, r.eniroute), (10001, true));
        assert_eq!(r.text, "10001: from 10.0.2.21 lookup 10001 proto 233");
    }

    #[test]
    fn main_leaving_through_an_eni_is_suppressed_so_the_rule_is_mains_default() {
        let w = world();
        // No source given: rules see none, so main at 32766 answers, and
        // the suppress_ifgroup rule does not count (eth0 is in the group).
        let t = judged(
            &w,
            &q("198.51.100.10", None),
            via(254, 2, "0.0.0.0/0", "10.0.1.10"),
        );
        assert_eq!(t.rule.as_ref().unwrap().priority, 32766);
        // 10.0.1.10's rule exists, and eth0 is its ENI.
        assert_eq!(t.verdict, Verdict::Correct, "{}", t.message);
        assert!(t.message.starts_with(
            "traffic to 198.51.100.10 (source 10.0.1.10, chosen by the kernel) leaves eth0"
        ));
        // Through docker0 (not in the group) the suppress rule stands.
        let t = judged(
            &w,
            &q("172.17.0.2", None),
            via(254, 4, "172.17.0.0/16", "172.17.0.1"),
        );
        assert_eq!(t.rule.as_ref().unwrap().priority, 9999);
        assert_eq!(t.verdict, Verdict::NotViaEni, "{}", t.message);
    }

    #[test]
    fn a_missing_rule_sends_the_reply_out_the_wrong_eni() {
        let mut w = world();
        w.rules
            .retain(|r| r.from != Some("10.0.2.21/32".parse().unwrap()));
        let t = judged(
            &w,
            &q("10.9.0.5", Some("10.0.2.21")),
            via(254, 2, "0.0.0.0/0", "10.0.2.21"),
        );
        assert_eq!(t.verdict, Verdict::RuleMissing, "{}", t.message);
        assert_eq!(
            t.message,
            "reply from 10.0.2.21 to 10.9.0.5 would leave eth0 (ENI eni-0, table main, rule 32766) \
             although 10.0.2.21 belongs to eth1 (ENI eni-1): the VPC drops it; rule missing \
             (rule from 10.0.2.21 lookup 10001 priority 10001) — run `eniroute apply`"
        );
        // The same gap, but main happens to route to eth1 itself.
        let t = judged(
            &w,
            &q("10.0.2.5", Some("10.0.2.21")),
            via(254, 3, "10.0.2.0/24", "10.0.2.21"),
        );
        assert_eq!(t.verdict, Verdict::RuleMissing, "{}", t.message);
        assert!(
            t.message.contains("only because main routes it there"),
            "{}",
            t.message
        );
    }

    #[test]
    fn a_foreign_rule_ahead_is_named_by_its_priority() {
        let mut w = world();
        w.rules.insert(1, rule(100, Some("10.0.2.21/32"), 254, 3));
        let t = judged(
            &w,
            &q("10.9.0.5", Some("10.0.2.21")),
            via(254, 2, "0.0.0.0/0", "10.0.2.21"),
        );
        assert_eq!(t.verdict, Verdict::ForeignRuleFirst, "{}", t.message);
        assert!(
            t.message.contains(
                "foreign rule first: priority 100 (100: from 10.0.2.21 lookup main proto boot)"
            ),
            "{}",
            t.message
        );
        assert!(
            t.message.contains("`ip rule del priority 100 …`"),
            "{}",
            t.message
        );
        // A foreign rule ahead that still leads out the right ENI is fine.
        let t = judged(
            &w,
            &q("10.0.2.5", Some("10.0.2.21")),
            via(254, 3, "10.0.2.0/24", "10.0.2.21"),
        );
        assert_eq!(t.verdict, Verdict::Correct, "{}", t.message);
        assert_eq!(t.rule.unwrap().priority, 100);
    }

    #[test]
    fn selectors_decide_which_rule_matched() {
        let mut w = world();
        // Only for TCP to port 22: a query without the port passes it by.
        let mut ssh = rule(50, Some("10.0.2.21/32"), 254, 4);
        ssh.ipproto = Some(6);
        ssh.dport = Some((22, 22));
        w.rules.insert(1, ssh);
        let mut plain = q("10.9.0.5", Some("10.0.2.21"));
        let t = judged(&w, &plain, via(10001, 3, "0.0.0.0/0", "10.0.2.21"));
        assert_eq!(t.rule.as_ref().unwrap().priority, 10001);
        plain.ipproto = Some(6);
        plain.dport = Some(22);
        let t = judged(&w, &plain, via(254, 2, "0.0.0.0/0", "10.0.2.21"));
        assert_eq!(t.verdict, Verdict::ForeignRuleFirst, "{}", t.message);
        assert_eq!(t.rule.unwrap().priority, 50);
        assert!(t.message.contains("port 22"), "{}", t.message);
        // A mark the packet does not carry, an oif, a uid range that
        // excludes the caller, or an inverted match: never this packet.
        for f in [
            |r: &mut RuleEntry| r.fwmark = Some((1, u32::MAX)),
            |r: &mut RuleEntry| r.oif = Some("eth0".into()),
            |r: &mut RuleEntry| r.uid = Some((1000, 2000)),
            |r: &mut RuleEntry| r.invert = true,
            |r: &mut RuleEntry| r.iif = Some("eth1".into()),
        ] {
            let mut r = rule(60, Some("10.0.2.21/32"), 254, 4);
            f(&mut r);
            assert!(!rule_matches(&r, Family::Ipv4, &plain, 0), "{r}");
        }
        let mut lo = rule(60, None, 254, 4);
        lo.iif = Some("lo".into());
        assert!(rule_matches(&lo, Family::Ipv4, &plain, 0), "{lo}");
    }

    #[test]
    fn suppress_prefixlength_uses_the_matched_route() {
        let mut r = rule(100, None, 254, 4);
        r.suppress_prefixlen = Some(0);
        let mut w = world();
        w.rules.insert(1, r);
        // main's default route is suppressed by the rule, so 32766 it is.
        let t = judged(
            &w,
            &q("198.51.100.10", None),
            via(254, 2, "0.0.0.0/0", "10.0.1.10"),
        );
        assert_eq!(t.rule.unwrap().priority, 32766);
        let t = judged(
            &w,
            &q("172.17.0.2", None),
            via(254, 4, "172.17.0.0/16", "172.17.0.1"),
        );
        assert_eq!(t.rule.unwrap().priority, 100);
    }

    #[test]
    fn sources_that_are_not_an_enis() {
        let w = world();
        // docker0's address leaving eth0: the VPC drops it.
        let t = judged(
            &w,
            &q("10.9.0.5", Some("172.17.0.1")),
            via(254, 2, "0.0.0.0/0", "172.17.0.1"),
        );
        assert_eq!(t.verdict, Verdict::NotEniSource, "{}", t.message);
        assert!(
            t.message.contains("belongs to docker0, not to an ENI"),
            "{}",
            t.message
        );
        // Not on this host at all: the kernel refuses it.
        let refused = Err(NetlinkError {
            call: "RTM_GETROUTE",
            object: "route get 10.9.0.5 from 10.0.7.7".into(),
            errno: Some(Errno::EINVAL),
            message: "Invalid argument (os error 22)".into(),
        });
        let t = judged(&w, &q("10.9.0.5", Some("10.0.7.7")), refused);
        assert_eq!(t.verdict, Verdict::NotEniSource, "{}", t.message);
        assert!(
            t.message.contains("not an address of this host"),
            "{}",
            t.message
        );
    }

    #[test]
    fn an_enis_address_missing_from_its_link_and_no_route() {
        let mut w = world();
        w.links[2].addresses.pop();
        let refused = Err(NetlinkError {
            call: "RTM_GETROUTE",
            object: String::new(),
            errno: Some(Errno::EINVAL),
            message: "Invalid argument (os error 22)".into(),
        });
        let t = judged(&w, &q("10.9.0.5", Some("10.0.2.21")), refused);
        assert_eq!(t.verdict, Verdict::AddressMissing, "{}", t.message);
        assert!(t.message.contains("eth1 (ENI eni-1)"), "{}", t.message);

        let mut w = world();
        let mut deny = rule(5, Some("10.0.2.20/32"), 0, 0);
        deny.verb = Some(RuleVerb::Unreachable);
        w.rules.insert(1, deny);
        let unreachable = Err(NetlinkError {
            call: "RTM_GETROUTE",
            object: String::new(),
            errno: Some(Errno::ENETUNREACH),
            message: "Network is unreachable (os error 101)".into(),
        });
        let t = judged(&w, &q("10.9.0.5", Some("10.0.2.20")), unreachable);
        assert_eq!(t.verdict, Verdict::NoRoute, "{}", t.message);
        assert!(
            t.message.contains("Network is unreachable"),
            "{}",
            t.message
        );
        assert!(t.message.contains("rule 5 rejects it"), "{}", t.message);
    }

    #[test]
    fn an_address_the_plan_leaves_to_another_agent_is_not_a_missing_rule() {
        let mut w = world();
        w.enis[1]
            .rules
            .retain(|r| r.from != Some("10.0.2.21/32".parse().unwrap()));
        w.rules
            .retain(|r| r.from != Some("10.0.2.21/32".parse().unwrap()));
        let t = judged(
            &w,
            &q("10.9.0.5", Some("10.0.2.21")),
            via(254, 2, "0.0.0.0/0", "10.0.2.21"),
        );
        assert_eq!(t.verdict, Verdict::WrongLink, "{}", t.message);
        assert!(
            t.message.contains("gives 10.0.2.21 no rule of its own"),
            "{}",
            t.message
        );
        // Without metadata every address is taken to want its rule.
        w.enis[1].rules_known = false;
        let t = judged(
            &w,
            &q("10.9.0.5", Some("10.0.2.21")),
            via(254, 2, "0.0.0.0/0", "10.0.2.21"),
        );
        assert_eq!(t.verdict, Verdict::RuleMissing, "{}", t.message);
    }

    #[test]
    fn ipv6_and_an_excluded_eni() {
        let mut w = world();
        w.links[2].addresses.push(LinkAddress {
            addr: "2001:db8:2::21/128".parse().unwrap(),
            owned: true,
            valid_lft: None,
            proto: None,
        });
        w.enis[1].owns.push("2001:db8:2::21/128".parse().unwrap());
        w.enis[1].managed = false;
        w.enis[1].status = "excluded".into();
        let t = judged(
            &w,
            &q("2001:db8:9::5", Some("2001:db8:2::21")),
            via(254, 2, "::/0", "2001:db8:2::21"),
        );
        assert_eq!(t.verdict, Verdict::WrongLink, "{}", t.message);
        assert!(
            t.message
                .contains("eniroute does not route this ENI (excluded)"),
            "{}",
            t.message
        );
        let local = Ok(RouteAnswer {
            kind: RouteKind::Local,
            table: 255,
            oif: Some(1),
            gateway: None,
            src: Some("10.0.2.21".parse().unwrap()),
            matched: Some("10.0.2.21/32".parse().unwrap()),
        });
        let t = judged(&w, &q("10.0.2.21", None), local);
        assert_eq!(t.verdict, Verdict::Local, "{}", t.message);
        assert_eq!(t.rule.unwrap().priority, 0);
    }
}
