//! `eniroute trace DST [--from SRC] [--dport N]`: which rule and table the
//! kernel would use for one packet, which ENI it leaves through, and
//! whether the VPC accepts that. The exit code is the verdict
//! (docs/TRACE.md). Without metadata the ENIs are what the kernel and the
//! state directory say the agent manages, marked unverified, as in
//! `status`.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use super::{imds_client, kernel, load_config, print_json, runtime, Cli, Failure};
use crate::config::Config;
use crate::netlink::RouteQuery;
use crate::plan::EniStatus;
use crate::reconcile::{Assessment, Current};
use crate::state;
use crate::trace::{Trace, TraceEni, Verdict};

/// The version of the `--json` document; raised when a field changes
/// meaning or goes away (adding a field does not raise it).
pub const SCHEMA_VERSION: u32 = 1;

/// Exit codes, one per kind of wrong path; 1 and 2 are the CLI's (runtime
/// failure, bad input). 3 and 4 mean what they mean for `status` (drift
/// `apply` repairs; another's rule first); 5 stays `status`'s (metadata).
pub const EXIT_DRIFT: u8 = 3;
pub const EXIT_FOREIGN_RULE: u8 = 4;
pub const EXIT_WRONG_LINK: u8 = 6;
pub const EXIT_NOT_ENI_SOURCE: u8 = 7;
pub const EXIT_NO_ROUTE: u8 = 8;

pub fn exit_code(v: Verdict) -> u8 {
    match v {
        Verdict::Correct | Verdict::Local | Verdict::NotViaEni => 0,
        Verdict::RuleMissing | Verdict::AddressMissing => EXIT_DRIFT,
        Verdict::ForeignRuleFirst => EXIT_FOREIGN_RULE,
        Verdict::WrongLink => EXIT_WRONG_LINK,
        Verdict::NotEniSource => EXIT_NOT_ENI_SOURCE,
        Verdict::NoRoute => EXIT_NO_ROUTE,
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Destination address (IPv4 or IPv6)
    #[arg(value_name = "DST")]
    pub dst: IpAddr,
    /// Source address, e.g. an ENI's address a connection arrived on
    /// [default: the one the kernel chooses]
    #[arg(long, value_name = "SRC")]
    pub from: Option<IpAddr>,
    /// Destination port, for rules with a dport selector
    #[arg(long, value_name = "N")]
    pub dport: Option<u16>,
    /// IP protocol: tcp, udp or a number [default: tcp with --dport]
    #[arg(long, value_name = "PROTO", value_parser = parse_proto)]
    pub proto: Option<u8>,
    /// One JSON document (docs/TRACE.md lists every field)
    #[arg(long)]
    pub json: bool,
}

fn parse_proto(s: &str) -> Result<u8, String> {
    match s.to_ascii_lowercase().as_str() {
        "tcp" => Ok(6),
        "udp" => Ok(17),
        "icmp" => Ok(1),
        "ipv6-icmp" | "icmpv6" => Ok(58),
        other => other
            .parse()
            .map_err(|_| format!("{s}: not tcp, udp, icmp or a protocol number")),
    }
}

#[derive(Debug, Serialize)]
struct Metadata {
    endpoint: String,
    /// Why metadata could not be read; null when it was.
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    schema_version: u32,
    exit_code: u8,
    /// The ENIs were checked against metadata.
    verified: bool,
    metadata: Metadata,
    #[serde(flatten)]
    trace: &'a Trace,
}

/// The ENIs as metadata and the plan describe them.
fn verified_enis(a: &Assessment) -> Vec<TraceEni> {
    a.plan
        .enis
        .iter()
        .map(|e| TraceEni {
            interface_id: e.interface_id.clone(),
            mac: Some(e.mac.to_string()),
            dev: e.dev.clone(),
            ifindex: e.index,
            table: e.table,
            owns: e.addresses.clone(),
            rules: a
                .plan
                .rules
                .iter()
                .filter(|r| Some(r.table) == e.table && r.suppress_ifgroup.is_none())
                .cloned()
                .collect(),
            managed: e.status == EniStatus::Managed,
            rules_known: true,
            status: e.status.to_string(),
        })
        .collect()
}

/// Without metadata: the links the agent manages, as `status` finds them
/// (its interface group, an address it added, one of its routes), their
/// table from its routes, their ENI id from the link's `eni-…` altname.
fn unverified_enis(current: &Current, cfg: &Config) -> Vec<TraceEni> {
    let protocol = cfg.numbering.protocol;
    current
        .links
        .iter()
        .filter(|l| {
            l.group == cfg.numbering.ifgroup
                || l.addresses.iter().any(|a| a.owned)
                || current.owned_routes(protocol).any(|r| r.oif == l.index)
        })
        .map(|l| TraceEni {
            interface_id: current
                .names
                .iter()
                .find(|n| n.index == l.index)
                .and_then(|n| n.altnames.iter().find(|a| a.starts_with("eni-")).cloned()),
            mac: l.mac.map(|m| m.to_string()),
            dev: Some(l.name.clone()),
            ifindex: Some(l.index),
            table: current
                .owned_routes(protocol)
                .find(|r| r.oif == l.index)
                .map(|r| r.table),
            owns: l
                .addresses
                .iter()
                .map(|a| IpNet::from(a.addr.addr()))
                .collect(),
            rules: Vec::new(),
            managed: true,
            rules_known: false,
            status: "unverified".into(),
        })
        .collect()
}

pub fn run(cli: &Cli, args: &Args) -> Result<(), Failure> {
    if let Some(src) = args.from {
        if src.is_ipv4() != args.dst.is_ipv4() {
            return Err(Failure::usage(format!(
                "trace: {} and {src} are not of one family",
                args.dst
            )));
        }
    }
    let query = RouteQuery {
        dst: args.dst,
        src: args.from,
        ipproto: args.proto.or(args.dport.map(|_| 6)),
        dport: args.dport,
    };
    let cfg = load_config(cli)?;
    let client = imds_client(&cfg)?;
    runtime()?.block_on(async {
        let kernel = kernel(&cfg)?;
        let dir = state::run_dir().map_err(Failure::runtime)?;
        let records = state::AddressRecords::load(&dir);
        let scope = super::scope(&kernel, &cfg).await;
        let fetched = crate::imds::fetch::fetch_instance(&client, &scope).await;
        let mut metadata = Metadata {
            endpoint: client.endpoint_in_use().current().to_string(),
            error: None,
        };
        let (current, enis) = match fetched {
            Ok(instance) => {
                let current = crate::reconcile::observe(&kernel, &records, &instance, &cfg)
                    .await
                    .map_err(Failure::runtime)?;
                let a = crate::reconcile::assess(&instance, &current, &cfg);
                let enis = verified_enis(&a);
                (current, enis)
            }
            Err(e) => {
                metadata.error = Some(super::metadata_message(&e));
                let current = Current::read(&kernel, &records)
                    .await
                    .map_err(Failure::runtime)?;
                let enis = unverified_enis(&current, &cfg);
                (current, enis)
            }
        };
        let uid = nix::unistd::getuid().as_raw();
        let t = crate::trace::trace(
            &kernel,
            &query,
            &current.links,
            &enis,
            cfg.numbering.protocol,
            uid,
        )
        .await
        .map_err(Failure::runtime)?;
        let code = exit_code(t.verdict);
        let verified = metadata.error.is_none();
        if args.json {
            print_json(&Report {
                schema_version: SCHEMA_VERSION,
                exit_code: code,
                verified,
                metadata,
                trace: &t,
            })?;
        } else {
            print_human(&t, &metadata);
        }
        match code {
            0 => Ok(()),
            code => Err(Failure {
                code,
                message: format!("trace: {}", t.verdict.name()),
            }),
        }
    })
}

fn eni_line(e: &TraceEni) -> String {
    let mut s = e.dev.clone().unwrap_or_else(|| "no link".into());
    if let Some(id) = &e.interface_id {
        s += &format!(", ENI {id}");
    }
    if let Some(mac) = &e.mac {
        s += &format!(" ({mac})");
    }
    if let Some(t) = e.table {
        s += &format!(", table {t}");
    }
    if e.status != "managed" {
        s += &format!(", {}", e.status);
    }
    s
}

fn print_human(t: &Trace, metadata: &Metadata) {
    println!("{}", t.message);
    if let Some(p) = &t.path {
        let mut k = format!(
            "{} {}",
            t.query,
            match &p.dev {
                Some(d) => format!("-> dev {d}"),
                None => "->".into(),
            }
        );
        if let Some(g) = p.gateway {
            k += &format!(" via {g}");
        }
        k += &format!(" table {}", crate::values::table_name(p.table));
        if let Some(s) = t.src {
            k += &format!(" src {s}");
        }
        println!("  kernel:   ip {k}");
        if let Some(r) = &p.route {
            println!("  route:    {r}");
        }
    }
    if let Some(e) = &t.error {
        println!("  kernel:   ip {}: {e}", t.query);
    }
    if let Some(r) = &t.rule {
        println!(
            "  rule:     {}{}",
            r.text,
            if r.eniroute { " (eniroute's)" } else { "" }
        );
    }
    if let Some(src) = t.src {
        match (&t.src_eni, &t.src_dev) {
            (Some(e), _) => println!("  source:   {src} belongs to {}", eni_line(e)),
            (None, Some(d)) => println!("  source:   {src} is on {d}, not an ENI"),
            (None, None) => println!("  source:   {src} is not an address of this host"),
        }
    }
    if let Some(e) = &t.out_eni {
        println!("  leaves:   {}", eni_line(e));
    }
    if let Some(r) = &t.expected_rule {
        println!("  missing:  {r}");
    }
    if let Some(err) = &metadata.error {
        println!("metadata unavailable: {err}");
        println!(
            "UNVERIFIED: ENIs as the kernel and eniroute's state directory have them, not checked against metadata"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wrong_path_has_its_own_exit_code() {
        let all = [
            Verdict::RuleMissing,
            Verdict::ForeignRuleFirst,
            Verdict::WrongLink,
            Verdict::NotEniSource,
            Verdict::NoRoute,
        ];
        let codes: std::collections::BTreeSet<u8> = all.iter().map(|v| exit_code(*v)).collect();
        assert_eq!(codes.len(), all.len());
        assert!(!codes.contains(&0) && !codes.contains(&1) && !codes.contains(&2));
        assert!(!codes.contains(&5), "5 is status's metadata failure");
        assert_eq!(exit_code(Verdict::Correct), 0);
        assert_eq!(exit_code(Verdict::AddressMissing), EXIT_DRIFT);
        assert_eq!(parse_proto("UDP"), Ok(17));
        assert!(parse_proto("sctpx").is_err());
    }
}
