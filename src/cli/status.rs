//! `eniroute status`: each ENI as the kernel has it now: its rules and
//! routes present or missing, drift, and foreign rules that send one of its
//! addresses elsewhere. A health check: the exit code says in sync (0),
//! drift (3), conflicts (4), metadata unreadable (5) or an ENI held on
//! metadata that is not applied (6); docs/STATUS.md.
//! Without metadata it still shows what the kernel holds for the links the
//! agent manages, marked unverified.

use std::collections::BTreeSet;

use ipnet::IpNet;
use serde::Serialize;

use super::{imds_client, kernel, load_config, print_json, runtime, Cli, Failure};
use crate::config::Config;
use crate::imds::model::Instance;
use crate::plan::EniStatus;
use crate::reconcile::{foreign_rules_ahead, Assessment, Current, Op, Ownership};
use crate::state;
use crate::values::{ForeignRule, KernelRule, Link, Mac, Rule, Warning};

/// The version of the `--json` document; raised when a field changes
/// meaning or goes away (adding a field does not raise it).
pub const SCHEMA_VERSION: u32 = 1;

/// Exit codes beyond the CLI's 1 (runtime failure) and 2 (bad input).
/// When several apply, the highest wins: an ENI held on implausible
/// metadata is a fault in what EC2 says, which nothing on the host repairs
/// (and it needs metadata, so it never meets 5); without metadata neither
/// drift nor the ENIs' addresses can be known; and a conflict is something
/// `apply` cannot repair while drift is.
pub const EXIT_DRIFT: u8 = 3;
pub const EXIT_CONFLICT: u8 = 4;
pub const EXIT_METADATA: u8 = 5;
pub const EXIT_HELD: u8 = 6;

/// Up to this many ENIs listed but not read are named by MAC.
const NAMED_NOT_READ: usize = 8;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// One JSON document (docs/STATUS.md lists every field)
    #[arg(long)]
    pub json: bool,
}

/// An address as the kernel has it on the link.
#[derive(Debug, Serialize)]
struct AddressReport {
    /// With the kernel's prefix length, e.g. `10.0.2.20/24`.
    address: IpNet,
    /// `eniroute` when the agent added it, `other` otherwise (DHCP, a user).
    owner: &'static str,
}

#[derive(Debug, Serialize)]
struct EniReport {
    /// The link's MAC (null for a link without one).
    mac: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    interface_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dev: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ifindex: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    card: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    table: Option<u32>,
    status: String,
    /// Checked against metadata; false when metadata could not be read.
    verified: bool,
    /// What the kernel holds on the link.
    addresses: Vec<AddressReport>,
    /// The link's alternative names (`ip link show` lists them as altname).
    altnames: Vec<String>,
    rules_present: Vec<String>,
    rules_missing: Vec<String>,
    /// The agent's routes in the ENI's table, as the kernel has them.
    routes: Vec<String>,
    /// Pending changes for this ENI: what `apply` would do.
    drift: Vec<String>,
    /// Rules of others that route one of this ENI's addresses elsewhere.
    conflicts: Vec<ForeignRule>,
    /// cloud-init's own policy routing for this ENI's addresses.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    cloud_init: Vec<String>,
    /// The link was set down after it was up (by an administrator): the
    /// agent leaves it down.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    down_by_administrator: bool,
    /// What metadata says of this ENI is not applied (implausible or
    /// inconsistent, or an unconfirmed removal): its link keeps what it has.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    held: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    schema_version: u32,
    /// `in-sync`, `drift`, `conflict`, `metadata-unavailable` or `held`.
    state: &'static str,
    /// The exit code of this run.
    exit_code: u8,
    /// The metadata endpoint that answered, and how it was chosen.
    metadata: MetadataReport,
    enis: Vec<EniReport>,
    warnings: Vec<Warning>,
    /// Routes and rules of others in eniroute's table range, left as they
    /// are (what amazon-ec2-net-utils left and `apply` takes over is drift
    /// instead). Reported; they do not change the exit code.
    foreign: Vec<Warning>,
    /// amazon-ec2-net-utils on this host: installed, or the runtime
    /// drop-ins it left.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ec2_net_utils: Vec<String>,
    /// Agents that hand the primary ENI's secondary addresses to pods or
    /// tasks (the Kubernetes VPC CNI, ECS awsvpc), with what gave each away.
    pod_agents: Vec<crate::pods::Detected>,
    /// What becomes of the primary ENI's secondary IPv4 addresses here:
    /// `assign` (on the host) or `leave` (left to the agent above).
    primary_secondary_ips: crate::config::SecondaryIps,
    /// ENIs metadata lists whose link is not on this host: not read beyond
    /// the listing, and not in `enis`.
    listed_not_read: usize,
    /// Their MACs, when there are few (an ENI attached whose link never
    /// appeared is worth naming; thousands are not).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    listed_not_read_macs: Vec<String>,
    /// Pending changes in all (what `apply` would do).
    drift: usize,
    /// Foreign rules that take an ENI's traffic first, in all, plus one
    /// when amazon-ec2-net-utils keeps the daemon standing by.
    conflicts: usize,
    /// ENIs held on metadata that is not applied.
    held: usize,
}

#[derive(Debug, Serialize)]
struct MetadataReport {
    endpoint: String,
    /// No endpoint was configured: the IPv4 one, else the IPv6 one.
    automatic: bool,
    /// The same, in words.
    how: String,
    /// Why metadata could not be read, with the likely cause; null when it
    /// was read.
    error: Option<String>,
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

fn addresses_of(link: Option<&Link>) -> Vec<AddressReport> {
    link.map(|l| {
        l.addresses
            .iter()
            .map(|a| AddressReport {
                address: a.addr,
                owner: if a.owned { "eniroute" } else { "other" },
            })
            .collect()
    })
    .unwrap_or_default()
}

fn altnames_of(current: &Current, index: Option<u32>) -> Vec<String> {
    current
        .names
        .iter()
        .find(|l| Some(l.index) == index)
        .map(|l| l.altnames.clone())
        .unwrap_or_default()
}

fn routes_in(current: &Current, table: Option<u32>, protocol: u8) -> Vec<String> {
    current
        .owned_routes(protocol)
        .filter(|r| Some(r.table) == table)
        .map(|r| r.to_string())
        .collect()
}

fn report(
    instance: &Instance,
    assessment: &Assessment,
    current: &Current,
    cfg: &Config,
    metadata: MetadataReport,
) -> Report {
    let own = Ownership::from(cfg);
    let netplan = std::fs::read_to_string("/etc/netplan/50-cloud-init.yaml").ok();
    let plan = &assessment.plan;
    let changes = &assessment.changes;
    let held: BTreeSet<Mac> = plan.held().map(|e| e.mac).collect();
    let not_read: Vec<&Mac> = instance
        .unread
        .iter()
        .filter(|m| !plan.enis.iter().any(|e| e.mac == **m))
        .collect();
    let owned: BTreeSet<&Rule> = current.owned_rules(own.protocol).collect();
    let enis: Vec<EniReport> = plan
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
                mac: Some(e.mac.to_string()),
                interface_id: e.interface_id.clone(),
                dev: e.dev.clone(),
                ifindex: e.index,
                card: e.key.map(|k| k.card),
                device: e.key.map(|k| k.device),
                table: e.table,
                status: e.status.to_string(),
                verified: true,
                addresses: addresses_of(e.index.and_then(|i| current.link(i))),
                altnames: altnames_of(current, e.index),
                rules_present: present.iter().map(|r| r.to_string()).collect(),
                rules_missing: missing.iter().map(|r| r.to_string()).collect(),
                routes: routes_in(current, e.table, own.protocol),
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
                down_by_administrator: e.index.is_some_and(|i| current.held_down.contains(&i)),
                held: held.contains(&e.mac),
                cloud_init: e
                    .table
                    .map(|t| cloud_init_rules(&e.addresses, t, &current.rules, netplan.as_deref()))
                    .unwrap_or_default(),
            }
        })
        .collect();
    let takeover = crate::coexist::takeover(plan, current, own.protocol);
    // Another agent programs the same tables: the daemon stands by.
    let standing_by = usize::from(
        !cfg.selection.coexist_with_ec2_net_utils
            && crate::coexist::ec2_net_utils(&crate::coexist::host_root()).is_some(),
    );
    let conflicts = enis.iter().map(|e| e.conflicts.len()).sum::<usize>() + standing_by;
    let drift = changes.len();
    let (state, exit_code) = if !held.is_empty() {
        ("held", EXIT_HELD)
    } else if conflicts > 0 {
        ("conflict", EXIT_CONFLICT)
    } else if drift > 0 {
        ("drift", EXIT_DRIFT)
    } else {
        ("in-sync", 0)
    };
    Report {
        schema_version: SCHEMA_VERSION,
        state,
        exit_code,
        metadata,
        enis,
        warnings: plan.warnings.clone(),
        foreign: crate::coexist::foreign_in_range(plan, current, cfg, &takeover),
        ec2_net_utils: ec2_net_utils(cfg),
        pod_agents: current.pod_agents.clone(),
        primary_secondary_ips: crate::pods::resolve(
            cfg.selection.primary_secondary_ips,
            &current.pod_agents,
        ),
        listed_not_read: not_read.len(),
        listed_not_read_macs: if not_read.len() <= NAMED_NOT_READ {
            not_read.iter().map(|m| m.to_string()).collect()
        } else {
            Vec::new()
        },
        drift,
        conflicts,
        held: held.len(),
    }
}

/// Without metadata: the links the agent manages as the kernel has them,
/// unverified. A link is the agent's when it is in the agent's interface
/// group, holds an address the agent added, or carries one of its routes;
/// its table is the one its routes are in.
fn unverified_report(current: &Current, cfg: &Config, metadata: MetadataReport) -> Report {
    let own = Ownership::from(cfg);
    let owned_rules: Vec<&Rule> = current.owned_rules(own.protocol).collect();
    let enis: Vec<EniReport> = current
        .links
        .iter()
        .filter(|l| {
            l.group == cfg.numbering.ifgroup
                || l.addresses.iter().any(|a| a.owned)
                || current.owned_routes(own.protocol).any(|r| r.oif == l.index)
        })
        .map(|l| {
            let table = current
                .owned_routes(own.protocol)
                .find(|r| r.oif == l.index)
                .map(|r| r.table);
            let sources: Vec<IpNet> = l.addresses.iter().map(|a| a.addr).collect();
            EniReport {
                mac: l.mac.map(|m| m.to_string()),
                interface_id: None,
                dev: Some(l.name.clone()),
                ifindex: Some(l.index),
                card: None,
                device: None,
                table,
                status: "unverified".into(),
                verified: false,
                addresses: addresses_of(Some(l)),
                altnames: altnames_of(current, Some(l.index)),
                rules_present: owned_rules
                    .iter()
                    .filter(|r| Some(r.table) == table && r.suppress_ifgroup.is_none())
                    .map(|r| r.to_string())
                    .collect(),
                rules_missing: Vec::new(),
                routes: routes_in(current, table, own.protocol),
                drift: Vec::new(),
                conflicts: table
                    .map(|t| foreign_rules_ahead(&sources, t, &current.rules, own.protocol))
                    .unwrap_or_default(),
                cloud_init: Vec::new(),
                down_by_administrator: current.held_down.contains(&l.index),
                held: false,
            }
        })
        .collect();
    let conflicts = enis.iter().map(|e| e.conflicts.len()).sum();
    Report {
        schema_version: SCHEMA_VERSION,
        state: "metadata-unavailable",
        exit_code: EXIT_METADATA,
        metadata,
        enis,
        warnings: Vec::new(),
        foreign: Vec::new(),
        ec2_net_utils: ec2_net_utils(cfg),
        pod_agents: current.pod_agents.clone(),
        primary_secondary_ips: crate::pods::resolve(
            cfg.selection.primary_secondary_ips,
            &current.pod_agents,
        ),
        listed_not_read: 0,
        listed_not_read_macs: Vec::new(),
        drift: 0,
        conflicts,
        held: 0,
    }
}

pub fn run(cli: &Cli, args: &Args) -> Result<(), Failure> {
    let cfg = load_config(cli)?;
    let client = imds_client(&cfg)?;
    runtime()?.block_on(async {
        let kernel = kernel(&cfg)?;
        let dir = state::run_dir().map_err(Failure::runtime)?;
        let records = state::AddressRecords::load(&dir);
        let scope = super::scope(&kernel, &cfg).await;
        let fetched = crate::imds::fetch::fetch_instance(&client, &scope).await;
        let endpoint = client.endpoint_in_use();
        let mut metadata = MetadataReport {
            endpoint: endpoint.current().to_string(),
            automatic: endpoint.automatic(),
            how: endpoint.to_string(),
            error: None,
        };
        let r = match fetched {
            Ok(instance) => {
                let current = crate::reconcile::observe(&kernel, &records, &instance, &cfg)
                    .await
                    .map_err(Failure::runtime)?;
                let assessment = crate::reconcile::assess(&instance, &current, &cfg);
                report(&instance, &assessment, &current, &cfg, metadata)
            }
            Err(e) => {
                metadata.error = Some(super::metadata_message(&e));
                let mut current = Current::read(&kernel, &records)
                    .await
                    .map_err(Failure::runtime)?;
                // Found from the host alone: named whether or not metadata
                // answers.
                current.detect_pod_agents(cfg.numbering.protocol);
                unverified_report(&current, &cfg, metadata)
            }
        };
        if args.json {
            print_json(&r)?;
        } else {
            print_human(&r);
        }
        match r.exit_code {
            0 => Ok(()),
            code => Err(Failure {
                code,
                message: format!("status: {}", verdict(&r)),
            }),
        }
    })
}

/// One line for the state as a whole.
fn verdict(r: &Report) -> String {
    match r.state {
        "metadata-unavailable" => {
            "metadata could not be read; the kernel's state is shown unverified".into()
        }
        "conflict" => format!(
            "{} conflict(s) with foreign rules or another agent",
            r.conflicts
        ),
        "drift" => format!("{} pending changes (run `eniroute apply`)", r.drift),
        "held" => format!(
            "{} ENI(s) held: metadata for them is not applied (see the warnings); their links keep what they have",
            r.held
        ),
        _ => "in sync".into(),
    }
}

fn table_row(e: &EniReport) -> [String; 9] {
    let or_dash = |s: Option<String>| s.unwrap_or_else(|| "-".into());
    let addresses: Vec<String> = e
        .addresses
        .iter()
        .map(|a| match a.owner {
            "eniroute" => format!("{}(eniroute)", a.address),
            _ => format!("{}(other)", a.address),
        })
        .collect();
    let rules = if e.verified {
        format!(
            "{} ok, {} missing",
            e.rules_present.len(),
            e.rules_missing.len()
        )
    } else {
        format!("{} present", e.rules_present.len())
    };
    [
        or_dash(e.interface_id.clone()),
        or_dash(e.card.zip(e.device).map(|(c, d)| format!("{c}/{d}"))),
        or_dash(e.dev.clone()),
        or_dash(e.table.map(|t| t.to_string())),
        if addresses.is_empty() {
            "-".into()
        } else {
            addresses.join(",")
        },
        rules,
        if e.verified {
            e.drift.len().to_string()
        } else {
            "?".into()
        },
        e.conflicts.len().to_string(),
        e.status.clone(),
    ]
}

fn print_human(r: &Report) {
    println!("metadata: {}", r.metadata.how);
    if let Some(err) = &r.metadata.error {
        println!("metadata unavailable: {err}");
        println!("UNVERIFIED: what the kernel holds for the links eniroute manages, not checked against metadata");
    }
    let header = [
        "ENI",
        "DEVICE",
        "LINK",
        "TABLE",
        "ADDRESSES",
        "RULES",
        "DRIFT",
        "CONFLICTS",
        "STATUS",
    ]
    .map(String::from);
    let rows: Vec<[String; 9]> = std::iter::once(header)
        .chain(r.enis.iter().map(table_row))
        .collect();
    let mut widths = [0usize; 9];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
    for e in &r.enis {
        print!(
            "{} {}",
            e.mac.as_deref().unwrap_or("-"),
            e.interface_id.as_deref().unwrap_or("-")
        );
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
        if e.down_by_administrator {
            println!(
                "  link down: set down by an administrator; eniroute leaves it down (`ip link set {} up` to resume)",
                e.dev.as_deref().unwrap_or("-")
            );
        }
        if !e.addresses.is_empty() {
            let a: Vec<String> = e
                .addresses
                .iter()
                .map(|a| format!("{} ({})", a.address, a.owner))
                .collect();
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
        for route in &e.routes {
            println!("  ok      {route}");
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
    if r.listed_not_read > 0 {
        let macs = if r.listed_not_read_macs.is_empty() {
            String::new()
        } else {
            format!(" ({})", r.listed_not_read_macs.join(", "))
        };
        println!(
            "metadata lists {} more ENI{} with no link on this host: not read{macs}",
            r.listed_not_read,
            if r.listed_not_read == 1 { "" } else { "s" }
        );
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
    for p in &r.pod_agents {
        let what = match r.primary_secondary_ips {
            crate::config::SecondaryIps::Leave => "left off the host",
            _ => "put on the host anyway (selection.primary_secondary_ips = \"assign\")",
        };
        println!(
            "pods: {p} gives the primary ENI's secondary IPs to pods or tasks; they are {what}"
        );
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
    if r.metadata.error.is_some() {
        println!("{}", verdict(r));
        return;
    }
    if r.conflicts > 0 {
        println!(
            "{} conflict(s) with foreign rules or another agent; apply does not resolve them",
            r.conflicts
        );
    }
    if r.drift > 0 {
        println!(
            "{} pending changes (run `eniroute apply`){foreign}",
            r.drift
        );
    }
    if r.held > 0 {
        println!("{}", verdict(r));
    }
    if r.conflicts == 0 && r.drift == 0 && r.held == 0 {
        println!("in sync{foreign}");
    }
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
