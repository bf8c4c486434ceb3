//! `eniroute status`: each ENI as the kernel has it now: its rules and
//! routes present or missing, drift, and foreign rules that send one of its
//! addresses elsewhere.

use std::collections::BTreeSet;

use ipnet::IpNet;
use serde::Serialize;

use super::{imds_client, load_config, observe, print_json, runtime, Cli, Failure};
use crate::plan::EniStatus;
use crate::reconcile::{foreign_rules_ahead, Assessment, Current, Op, Ownership};
use crate::values::{KernelRule, Rule};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct EniReport {
    mac: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    interface_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dev: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    card: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    table: Option<u32>,
    status: String,
    addresses: Vec<IpNet>,
    /// The link's alternative names (`ip link show` lists them as altname).
    altnames: Vec<String>,
    rules_present: Vec<String>,
    rules_missing: Vec<String>,
    /// Pending changes for this ENI: what `apply` would do.
    drift: Vec<String>,
    /// Rules of others that route one of this ENI's addresses elsewhere.
    conflicts: Vec<String>,
    /// cloud-init's own policy routing for this ENI's addresses.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    cloud_init: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Report {
    /// The metadata endpoint that answered, and how it was chosen.
    metadata: MetadataReport,
    enis: Vec<EniReport>,
    warnings: Vec<String>,
    /// Routes and rules of others in eniroute's table range, left as they
    /// are (what amazon-ec2-net-utils left and `apply` takes over is drift
    /// instead).
    foreign: Vec<String>,
    /// amazon-ec2-net-utils on this host: installed, or the runtime
    /// drop-ins it left.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ec2_net_utils: Vec<String>,
    drift: usize,
}

#[derive(Debug, Serialize)]
struct MetadataReport {
    endpoint: String,
    /// No endpoint was configured: the IPv4 one, else the IPv6 one.
    automatic: bool,
    /// The same, in words.
    how: String,
}

/// What amazon-ec2-net-utils is doing on this host, as lines for `status`.
fn ec2_net_utils(cfg: &crate::config::Config) -> Vec<String> {
    let root = crate::coexist::host_root();
    let mut out = Vec::new();
    if let Some(marker) = crate::coexist::ec2_net_utils(&root) {
        out.push(if cfg.selection.coexist_with_ec2_net_utils {
            format!(
                "amazon-ec2-net-utils is installed ({}); eniroute runs beside it \
                 (selection.coexist_with_ec2_net_utils) and takes over the rules it has \
                 systemd-networkd add",
                marker.display()
            )
        } else {
            format!(
                "amazon-ec2-net-utils is installed ({}); the daemon stands by and `apply` \
                 refuses until it is removed",
                marker.display()
            )
        });
    }
    for dir in crate::coexist::leftover_dropins(&root) {
        let network = dir.with_extension("");
        out.push(format!(
            "amazon-ec2-net-utils left {}: systemd-networkd applies it again when it restarts; \
             once eniroute has taken over, remove it: rm -r {} {}",
            dir.display(),
            dir.display(),
            network.display()
        ));
    }
    out
}

fn op_touches(op: &Op, dev: &str, table: Option<u32>) -> bool {
    match op {
        Op::SetLink { dev: d, .. } => d == dev,
        Op::SetSysctl { key, .. } => key.to_string().contains(&format!(".{dev}.")),
        Op::AddAddress(a) | Op::AdoptAddress(a) | Op::DelAddress(a) => a.dev == dev,
        Op::AddRoute(r) | Op::ReplaceRoute(r) | Op::DelRoute(r) => r.dev == dev,
        Op::DelForeignRoute { route, .. } => route.dev == dev,
        Op::AddRule(r) | Op::DelRule(r) => Some(r.table) == table,
        Op::DelForeignRule { rule, .. } => Some(rule.table) == table,
        Op::AddAltname { dev: d, .. } | Op::DelAltname { dev: d, .. } => d == dev,
    }
}

/// Rules that look like cloud-init's policy routing for secondary NICs: its
/// EC2 datasource writes netplan `routing-policy: [{from: <ip>, table: 100 +
/// NIC index}]`, which systemd-networkd installs with protocol static. Named
/// as cloud-init's when its netplan file says so (`netplan`: the text of
/// /etc/netplan/50-cloud-init.yaml, if any).
fn cloud_init_rules(
    sources: &[IpNet],
    table: u32,
    rules: &[KernelRule],
    netplan: Option<&str>,
) -> Vec<String> {
    const RTPROT_STATIC: u8 = 4;
    let whose = match netplan {
        Some(text) if text.contains("routing-policy") => "cloud-init's netplan routing-policy",
        _ => "policy routing like cloud-init's",
    };
    rules
        .iter()
        .filter(|k| k.protocol == RTPROT_STATIC && !k.has_other_selectors && !k.not_lookup)
        .filter(|k| k.rule.table != table && (100..356).contains(&k.rule.table))
        .filter(|k| {
            k.rule.from.is_some_and(|from| {
                from.prefix_len() == from.max_prefix_len()
                    && sources.iter().any(|s| s.addr() == from.addr())
            })
        })
        .map(|k| format!("{} ({whose})", k.rule))
        .collect()
}

fn report(
    assessment: &Assessment,
    current: &Current,
    cfg: &crate::config::Config,
    metadata: MetadataReport,
) -> Report {
    let own = Ownership::from(cfg);
    let netplan = std::fs::read_to_string("/etc/netplan/50-cloud-init.yaml").ok();
    let plan = &assessment.plan;
    let changes = &assessment.changes;
    let owned: BTreeSet<&Rule> = current.owned_rules(own.protocol).collect();
    let enis = plan
        .enis
        .iter()
        .map(|e| {
            let wanted: Vec<&Rule> = plan
                .rules
                .iter()
                .filter(|r| Some(r.table) == e.table && r.suppress_ifgroup.is_none())
                .collect();
            let (present, missing): (Vec<&Rule>, Vec<&Rule>) =
                wanted.into_iter().partition(|r| owned.contains(r));
            let dev = e.dev.clone().unwrap_or_default();
            EniReport {
                mac: e.mac.to_string(),
                interface_id: e.interface_id.clone(),
                dev: e.dev.clone(),
                card: e.key.map(|k| k.card),
                device: e.key.map(|k| k.device),
                table: e.table,
                status: e.status.to_string(),
                addresses: e.addresses.clone(),
                altnames: current
                    .names
                    .iter()
                    .find(|l| Some(l.index) == e.index)
                    .map(|l| l.altnames.clone())
                    .unwrap_or_default(),
                rules_present: present.iter().map(|r| r.to_string()).collect(),
                rules_missing: missing.iter().map(|r| r.to_string()).collect(),
                drift: if e.status == EniStatus::Managed {
                    changes
                        .iter()
                        .filter(|op| op_touches(op, &dev, e.table))
                        .map(|op| op.to_string())
                        .collect()
                } else {
                    Vec::new()
                },
                conflicts: e
                    .table
                    .map(|t| foreign_rules_ahead(&e.addresses, t, &current.rules, own.protocol))
                    .unwrap_or_default(),
                cloud_init: e
                    .table
                    .map(|t| cloud_init_rules(&e.addresses, t, &current.rules, netplan.as_deref()))
                    .unwrap_or_default(),
            }
        })
        .collect();
    let takeover = crate::coexist::takeover(plan, current, own.protocol);
    Report {
        metadata,
        enis,
        warnings: plan.warnings.clone(),
        foreign: crate::coexist::foreign_in_range(plan, current, cfg, &takeover),
        ec2_net_utils: ec2_net_utils(cfg),
        drift: changes.len(),
    }
}

pub fn run(cli: &Cli, args: &Args) -> Result<(), Failure> {
    let cfg = load_config(cli)?;
    let client = imds_client(&cfg)?;
    runtime()?.block_on(async {
        let (assessment, current) = observe(&cfg, &client).await?;
        let endpoint = client.endpoint_in_use();
        let metadata = MetadataReport {
            endpoint: endpoint.current().to_string(),
            automatic: endpoint.automatic(),
            how: endpoint.to_string(),
        };
        let r = report(&assessment, &current, &cfg, metadata);
        if args.json {
            return print_json(&r);
        }
        println!("metadata: {}", r.metadata.how);
        for e in &r.enis {
            print!("{} {}", e.mac, e.interface_id.as_deref().unwrap_or("-"));
            if let Some(dev) = &e.dev {
                print!(" dev {dev}");
            }
            if let (Some(c), Some(d)) = (e.card, e.device) {
                print!(" card {c} device {d}");
            }
            if let Some(t) = e.table {
                print!(" table {t}");
            }
            println!(": {}", e.status);
            if !e.addresses.is_empty() {
                let a: Vec<String> = e.addresses.iter().map(|a| a.to_string()).collect();
                println!("  addresses: {}", a.join(" "));
            }
            if !e.altnames.is_empty() {
                println!("  altnames: {}", e.altnames.join(" "));
            }
            for rule in &e.rules_present {
                println!("  ok      {rule}");
            }
            for rule in &e.rules_missing {
                println!("  missing {rule}");
            }
            for d in &e.drift {
                println!("  drift   {d}");
            }
            for c in &e.conflicts {
                println!("  conflict: foreign {c} takes this ENI's traffic first");
            }
            for c in &e.cloud_init {
                println!("  cloud-init: {c} also routes this ENI's address; switch it off with datasource.Ec2.apply_full_imds_network_config: false (README: cloud-init and AMIs)");
            }
        }
        for w in &r.warnings {
            println!("warning: {w}");
        }
        for f in &r.foreign {
            println!("foreign: {f}");
        }
        for e in &r.ec2_net_utils {
            println!("{e}");
        }
        let foreign = if r.foreign.is_empty() {
            String::new()
        } else {
            format!(
                "; {} foreign object{} in eniroute's tables left as they are",
                r.foreign.len(),
                if r.foreign.len() == 1 { "" } else { "s" }
            )
        };
        if r.drift == 0 {
            println!("in sync{foreign}");
        } else {
            println!(
                "{} pending changes (run `eniroute apply`){foreign}",
                r.drift
            );
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::Family;

    fn rule(from: &str, table: u32, protocol: u8) -> KernelRule {
        KernelRule {
            rule: Rule {
                family: Family::Ipv4,
                priority: 32765,
                from: Some(from.parse().unwrap()),
                table,
                suppress_ifgroup: None,
            },
            protocol,
            has_other_selectors: false,
            not_lookup: false,
        }
    }

    #[test]
    fn cloud_init_rules_are_static_source_rules_into_its_tables() {
        let sources: Vec<IpNet> = vec![
            "10.0.2.20/24".parse().unwrap(),
            "10.0.2.21/32".parse().unwrap(),
        ];
        let rules = [
            rule("10.0.2.20/32", 101, 4),
            rule("10.0.2.21/32", 101, 4),
            // Not cloud-init's: another protocol, another address, the
            // ENI's own table, a table outside 100..356, a subnet source.
            rule("10.0.2.20/32", 101, 3),
            rule("10.0.2.99/32", 101, 4),
            rule("10.0.2.20/32", 10001, 4),
            rule("10.0.2.20/32", 20, 4),
            rule("10.0.2.0/24", 101, 4),
        ];
        let found = cloud_init_rules(
            &sources,
            10001,
            &rules,
            Some("network:\n  routing-policy:\n"),
        );
        assert_eq!(
            found,
            [
                "rule from 10.0.2.20 lookup 101 priority 32765 (cloud-init's netplan routing-policy)",
                "rule from 10.0.2.21 lookup 101 priority 32765 (cloud-init's netplan routing-policy)",
            ]
        );
        let unnamed = cloud_init_rules(&sources, 10001, &rules[..1], None);
        assert_eq!(
            unnamed,
            ["rule from 10.0.2.20 lookup 101 priority 32765 (policy routing like cloud-init's)"]
        );
    }
}
