//! The daemon's metrics, for node_exporter's textfile collector: what it
//! manages and owns, what it did (reconciles, kernel writes, repairs,
//! metadata requests), the foreign state in its way, and how long a new
//! link waited to be configured.
//!
//! [`Metrics`] is fed the facts the daemon already has (kernel events,
//! metadata reads, reconcile outcomes) with the time passed in, and
//! [`Metrics::render`] writes them in Prometheus' text exposition format;
//! neither reads a clock or a file, so both are tested without root.
//! [`write_textfile`] puts the text in place atomically. There is no
//! listening socket: node_exporter serves the file.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use crate::change::Op;
use crate::imds::client::RequestCounts;
use crate::netlink::{Event, NetlinkError};
use crate::plan::{EniStatus, Plan};
use crate::reconcile::{Outcome, Owned};
use crate::snapshot::wanted_sysctls;
use crate::sysctl::Sysctl;
use crate::values::{Address, LinkSettings, Route, Rule, Warning};

/// Upper bounds (seconds) of the link-to-configured histogram: a hot-plug
/// whose metadata is there takes tens of milliseconds; one whose metadata
/// lags takes seconds; the daemon's fast retries end at 120 s.
pub const CONFIGURED_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// A link not configured this long after it appeared is no ENI (a bridge,
/// a container's veth) or lies beyond the last bucket anyway: forgotten,
/// so that a host churning container links keeps the map small.
const APPEARED_MAX_AGE: Duration = Duration::from_secs(600);

/// What becomes of an ENI of the metadata, as the `state` label says it.
const ENI_STATES: &[&str] = &["managed", "excluded", "no_link", "not_ready", "invalid"];

fn eni_state(s: &EniStatus) -> &'static str {
    match s {
        EniStatus::Managed => "managed",
        EniStatus::Excluded => "excluded",
        EniStatus::NoLink => "no_link",
        EniStatus::NotReady(_) => "not_ready",
        EniStatus::Invalid(_) => "invalid",
    }
}

/// Warnings of the plan: metadata or configuration the agent cannot honour.
const WARNING_KINDS: &[&str] = &[
    "invalid_metadata",
    "unconfirmed_removal",
    "table_taken",
    "gateway_off_subnet",
    "vpc_overlap",
    "altname_taken",
];

/// Conflicts: state of others in the agent's way, reported and left alone.
const CONFLICT_KINDS: &[&str] = &[
    "rule_ahead",
    "foreign_route_in_range",
    "foreign_rule_in_range",
];

fn warning_kind(w: &Warning) -> &'static str {
    match w {
        Warning::InvalidMetadata(_) => "invalid_metadata",
        Warning::UnconfirmedRemoval { .. } => "unconfirmed_removal",
        Warning::TableTaken { .. } => "table_taken",
        Warning::GatewayOffSubnet { .. } => "gateway_off_subnet",
        Warning::VpcOverlap { .. } => "vpc_overlap",
        Warning::AltnameTaken { .. } => "altname_taken",
        Warning::RuleAhead { .. } => "rule_ahead",
        Warning::ForeignRouteInRange { .. } => "foreign_route_in_range",
        Warning::ForeignRuleInRange { .. } => "foreign_rule_in_range",
    }
}

const RECONCILE_RESULTS: &[&str] = &["clean", "partial", "failed"];
const REPAIR_OBJECTS: &[&str] = &["rule", "route", "address", "link"];

/// What the last reconcile left, as gauges.
#[derive(Debug, Clone, Default)]
struct Gauges {
    enis: BTreeMap<&'static str, u64>,
    /// Links waiting for their ENI's metadata, as `STATUS=` counts them.
    waiting: u64,
    /// Managed ENIs with a change that failed.
    failing: u64,
    /// ENIs held on metadata that is not applied (see [`Plan::held`]).
    held: u64,
    changes_failing: u64,
    owned: Owned,
    warnings: BTreeMap<&'static str, u64>,
    conflicts: BTreeMap<&'static str, u64>,
}

/// What a clean reconcile left in the kernel: adding one of these again
/// later means someone (or the kernel, for a link that went down) removed
/// or changed it in between.
#[derive(Debug, Clone, Default)]
struct InPlace {
    rules: BTreeSet<Rule>,
    routes: BTreeSet<Route>,
    addresses: BTreeSet<Address>,
    links: BTreeSet<u32>,
    sysctls: BTreeSet<Sysctl>,
}

impl InPlace {
    fn from_plan(plan: &Plan) -> InPlace {
        InPlace {
            rules: plan.rules.iter().cloned().collect(),
            routes: plan.routes.iter().cloned().collect(),
            addresses: plan.addresses.iter().cloned().collect(),
            links: plan.links.iter().map(|l| l.index).collect(),
            sysctls: wanted_sysctls(&plan.links)
                .into_iter()
                .map(|(k, _)| k)
                .collect(),
        }
    }

    /// The object a change repairs, if it puts back something of this.
    fn repairs(&self, op: &Op) -> Option<&'static str> {
        match op {
            Op::AddRule(r) if self.rules.contains(r) => Some("rule"),
            Op::AddRoute(r) | Op::ReplaceRoute(r) if self.routes.contains(r) => Some("route"),
            Op::AddAddress(a) if self.addresses.contains(a) => Some("address"),
            Op::SetLink { index, .. } if self.links.contains(index) => Some("link"),
            Op::SetSysctl { key, .. } if self.sysctls.contains(key) => Some("link"),
            _ => None,
        }
    }
}

/// A histogram with [`CONFIGURED_BUCKETS`].
#[derive(Debug, Clone)]
struct Histogram {
    /// Observations per bucket, not cumulative; the last is `+Inf`'s own.
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            buckets: vec![0; CONFIGURED_BUCKETS.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = CONFIGURED_BUCKETS
            .iter()
            .position(|le| secs <= *le)
            .unwrap_or(CONFIGURED_BUCKETS.len());
        if let Some(b) = self.buckets.get_mut(i) {
            *b += 1;
        }
        self.sum += secs;
        self.count += 1;
    }
}

/// The daemon's counters and the gauges of its last reconcile.
#[derive(Debug, Clone)]
pub struct Metrics {
    reconciles: BTreeMap<&'static str, u64>,
    changes: u64,
    netlink_writes: u64,
    sysctl_writes: u64,
    repairs: BTreeMap<&'static str, u64>,
    reads: BTreeMap<&'static str, u64>,
    requests: RequestCounts,
    gauges: Gauges,
    last_clean: Option<SystemTime>,
    standing_by: bool,
    /// ENIs the last metadata read found listed but did not read: no link
    /// with their MAC on the host.
    not_read: u64,
    configured: Histogram,
    /// Links that appeared while the daemon ran and are not configured yet.
    appeared: BTreeMap<u32, Instant>,
    in_place: Option<InPlace>,
}

impl Metrics {
    /// Metrics that report the metadata requests `requests` counts.
    pub fn new(requests: RequestCounts) -> Metrics {
        Metrics {
            reconciles: BTreeMap::new(),
            changes: 0,
            netlink_writes: 0,
            sysctl_writes: 0,
            repairs: BTreeMap::new(),
            reads: BTreeMap::new(),
            requests,
            gauges: Gauges::default(),
            last_clean: None,
            standing_by: false,
            not_read: 0,
            configured: Histogram::new(),
            appeared: BTreeMap::new(),
            in_place: None,
        }
    }

    /// The metadata request counts reported, for a new client to add to.
    pub fn requests(&self) -> RequestCounts {
        self.requests.clone()
    }

    /// A kernel event: a link that appears starts its clock.
    pub fn event(&mut self, now: Instant, ev: &Event) {
        match ev {
            Event::Link {
                index,
                removed: true,
                ..
            } => {
                self.appeared.remove(index);
            }
            Event::Link {
                index, added: true, ..
            } => {
                self.appeared.entry(*index).or_insert(now);
            }
            _ => {}
        }
    }

    pub fn metadata_read(&mut self, ok: bool) {
        *self
            .reads
            .entry(if ok { "ok" } else { "failed" })
            .or_default() += 1;
    }

    /// The last metadata read listed `n` ENIs it did not read (no link
    /// with their MAC here).
    pub fn listed_not_read(&mut self, n: usize) {
        self.not_read = n as u64;
    }

    /// The agent changed nothing for now (amazon-ec2-net-utils is installed).
    pub fn standing_by(&mut self) {
        self.standing_by = true;
    }

    /// A reconcile finished at `now` (`wall` on the calendar); `waiting` is
    /// the daemon's count of links waiting for metadata.
    pub fn reconciled(
        &mut self,
        now: Instant,
        wall: SystemTime,
        result: Result<&Outcome, &NetlinkError>,
        waiting: usize,
    ) {
        self.standing_by = false;
        let o = match result {
            Ok(o) => o,
            Err(_) => {
                *self.reconciles.entry("failed").or_default() += 1;
                return;
            }
        };
        let applied = &o.applied;
        let clean = applied.errors.is_empty();
        *self
            .reconciles
            .entry(if clean { "clean" } else { "partial" })
            .or_default() += 1;
        self.changes += applied.ops.len() as u64;
        let sysctls = applied
            .ops
            .iter()
            .chain(&applied.failed)
            .filter(|op| matches!(op, Op::SetSysctl { .. }))
            .count();
        self.sysctl_writes += sysctls as u64;
        self.netlink_writes += applied.writes.saturating_sub(sysctls) as u64;
        if let Some(before) = &self.in_place {
            for object in applied.ops.iter().filter_map(|op| before.repairs(op)) {
                *self.repairs.entry(object).or_default() += 1;
            }
        }

        let failing = failing_links(&o.plan, &applied.failed);
        let mut g = Gauges {
            waiting: waiting as u64,
            failing: failing.len() as u64,
            held: o.plan.held().count() as u64,
            changes_failing: applied.errors.len() as u64,
            owned: o.owned,
            ..Gauges::default()
        };
        for e in &o.plan.enis {
            *g.enis.entry(eni_state(&e.status)).or_default() += 1;
        }
        for w in &o.plan.warnings {
            *g.warnings.entry(warning_kind(w)).or_default() += 1;
        }
        for w in &o.conflicts {
            *g.conflicts.entry(warning_kind(w)).or_default() += 1;
        }
        self.gauges = g;

        for e in o
            .plan
            .enis
            .iter()
            .filter(|e| e.status == EniStatus::Managed)
        {
            let Some(index) = e.index else { continue };
            if failing.contains(&index) || o.udev_pending.contains(&index) {
                continue;
            }
            if let Some(t) = self.appeared.remove(&index) {
                self.configured.observe(now.saturating_duration_since(t));
            }
        }
        self.appeared
            .retain(|_, t| now.saturating_duration_since(*t) < APPEARED_MAX_AGE);
        if clean {
            self.last_clean = Some(wall);
            self.in_place = Some(InPlace::from_plan(&o.plan));
        }
    }

    /// The metrics in Prometheus' text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = Text::default();
        out.family(
            "eniroute_info",
            "gauge",
            "The running agent; its version as a label.",
        );
        out.sample(
            "eniroute_info",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1,
        );

        let g = &self.gauges;
        out.family(
            "eniroute_enis",
            "gauge",
            "ENIs in metadata by what the last reconcile made of them.",
        );
        for s in ENI_STATES {
            out.sample("eniroute_enis", &[("state", s)], count(&g.enis, s));
        }
        out.single(
            "eniroute_enis_waiting",
            "gauge",
            "Links waiting for their ENI's metadata (an ENI not whole yet, or a new link that may be a hot-plugged ENI).",
            g.waiting,
        );
        out.single(
            "eniroute_enis_failing",
            "gauge",
            "Managed ENIs with a change that failed in the last reconcile.",
            g.failing,
        );
        out.single(
            "eniroute_enis_held",
            "gauge",
            "ENIs whose link keeps what it has because metadata for them is not applied (implausible, inconsistent, or a removal not confirmed yet).",
            g.held,
        );
        out.single(
            "eniroute_changes_failing",
            "gauge",
            "Changes that failed in the last reconcile (retried; the log names each).",
            g.changes_failing,
        );
        out.single(
            "eniroute_owned_rules",
            "gauge",
            "Rules of the agent's in the kernel.",
            g.owned.rules as u64,
        );
        out.single(
            "eniroute_owned_routes",
            "gauge",
            "Routes of the agent's in the kernel.",
            g.owned.routes as u64,
        );
        out.single(
            "eniroute_owned_addresses",
            "gauge",
            "Addresses the agent added (or took over) on ENI links.",
            g.owned.addresses as u64,
        );
        out.family(
            "eniroute_conflicts",
            "gauge",
            "State of others in the agent's way, left alone: foreign rules ahead of an ENI's table, foreign routes and rules in its table range.",
        );
        for k in labels(CONFLICT_KINDS, &g.conflicts) {
            out.sample("eniroute_conflicts", &[("kind", k)], count(&g.conflicts, k));
        }
        out.family(
            "eniroute_warnings",
            "gauge",
            "Metadata or configuration the last reconcile could not honour, by kind.",
        );
        for k in labels(WARNING_KINDS, &g.warnings) {
            out.sample("eniroute_warnings", &[("kind", k)], count(&g.warnings, k));
        }
        out.single(
            "eniroute_enis_not_read",
            "gauge",
            "ENIs metadata lists with no link on this host, not read beyond the listing.",
            self.not_read,
        );
        out.single(
            "eniroute_standing_by",
            "gauge",
            "1 while amazon-ec2-net-utils is installed and the agent changes nothing.",
            u64::from(self.standing_by),
        );

        out.family(
            "eniroute_reconciles_total",
            "counter",
            "Reconciles: clean, partial (some change failed), failed (the kernel could not be read).",
        );
        for r in RECONCILE_RESULTS {
            out.sample(
                "eniroute_reconciles_total",
                &[("result", r)],
                count(&self.reconciles, r),
            );
        }
        out.single(
            "eniroute_changes_total",
            "counter",
            "Changes made to the kernel (rules, routes, addresses, link settings, names).",
            self.changes,
        );
        out.single(
            "eniroute_netlink_writes_total",
            "counter",
            "Netlink requests that change the kernel.",
            self.netlink_writes,
        );
        out.single(
            "eniroute_sysctl_writes_total",
            "counter",
            "Sysctl writes (forwarding, rp_filter of appliance ENIs).",
            self.sysctl_writes,
        );
        out.family(
            "eniroute_repairs_total",
            "counter",
            "Objects put back after something outside the agent removed or changed them.",
        );
        for o in REPAIR_OBJECTS {
            out.sample(
                "eniroute_repairs_total",
                &[("object", o)],
                count(&self.repairs, o),
            );
        }
        out.family(
            "eniroute_metadata_reads_total",
            "counter",
            "Metadata reads (the ENI list and each ENI's keys), by result.",
        );
        for r in ["ok", "failed"] {
            out.sample(
                "eniroute_metadata_reads_total",
                &[("result", r)],
                count(&self.reads, r),
            );
        }
        out.single(
            "eniroute_metadata_requests_total",
            "counter",
            "HTTP requests to the metadata service, token requests and retries included.",
            self.requests.requests(),
        );
        out.family(
            "eniroute_metadata_errors_total",
            "counter",
            "Metadata requests that failed, by kind (a 404 is an answer, not a failure).",
        );
        for (k, n) in self.requests.errors() {
            out.sample("eniroute_metadata_errors_total", &[("kind", k)], n);
        }
        out.family(
            "eniroute_last_clean_reconcile_timestamp_seconds",
            "gauge",
            "When the last reconcile that left nothing undone finished (Unix time; 0: none yet).",
        );
        let when = self
            .last_clean
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0.0, |d| d.as_secs_f64());
        out.line(format_args!(
            "eniroute_last_clean_reconcile_timestamp_seconds {when:.3}"
        ));

        let h = &self.configured;
        let name = "eniroute_link_configured_seconds";
        out.family(
            name,
            "histogram",
            "Time from a link appearing while the agent runs to its ENI being configured.",
        );
        let mut cumulative = 0;
        for (i, n) in h.buckets.iter().enumerate() {
            cumulative += n;
            let le = CONFIGURED_BUCKETS
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |b| b.to_string());
            out.line(format_args!("{name}_bucket{{le=\"{le}\"}} {cumulative}"));
        }
        out.line(format_args!("{name}_sum {}", h.sum));
        out.line(format_args!("{name}_count {}", h.count));
        out.0
    }
}

/// The indexes of managed ENI links with a failed change.
fn failing_links(plan: &Plan, failed: &[Op]) -> BTreeSet<u32> {
    let mut links = BTreeSet::new();
    let mut tables = BTreeSet::new();
    let sysctl_link = |key: &Sysctl, l: &LinkSettings| {
        wanted_sysctls(std::slice::from_ref(l))
            .iter()
            .any(|(k, _)| k == key)
    };
    for op in failed {
        match op {
            Op::SetLink { index, .. }
            | Op::AddAltname { index, .. }
            | Op::DelAltname { index, .. } => {
                links.insert(*index);
            }
            Op::AddAddress(a) | Op::AdoptAddress(a) | Op::DelAddress(a) => {
                links.insert(a.index);
            }
            Op::AddRoute(r)
            | Op::ReplaceRoute(r)
            | Op::DelRoute(r)
            | Op::DelForeignRoute { route: r, .. } => {
                links.insert(r.oif);
                tables.insert(r.table);
            }
            Op::AddRule(r) | Op::DelRule(r) | Op::DelForeignRule { rule: r, .. } => {
                tables.insert(r.table);
            }
            Op::SetSysctl { key, .. } => {
                links.extend(
                    plan.links
                        .iter()
                        .filter(|l| sysctl_link(key, l))
                        .map(|l| l.index),
                );
            }
        }
    }
    plan.enis
        .iter()
        .filter(|e| e.status == EniStatus::Managed)
        .filter(|e| {
            e.index.is_some_and(|i| links.contains(&i))
                || e.table.is_some_and(|t| tables.contains(&t))
        })
        .filter_map(|e| e.index)
        .collect()
}

fn count(map: &BTreeMap<&'static str, u64>, key: &str) -> u64 {
    map.get(key).copied().unwrap_or(0)
}

/// The labels a family always shows (0 included, so that a query never
/// finds nothing), then any other seen.
fn labels<'a>(fixed: &'a [&'static str], seen: &'a BTreeMap<&'static str, u64>) -> Vec<&'a str> {
    let mut out: Vec<&str> = fixed.to_vec();
    out.extend(seen.keys().filter(|k| !fixed.contains(k)).copied());
    out
}

/// Text in the exposition format.
#[derive(Default)]
struct Text(String);

impl Text {
    fn line(&mut self, args: std::fmt::Arguments<'_>) {
        // Writing to a String cannot fail.
        let _ = self.0.write_fmt(args);
        self.0.push('\n');
    }

    fn family(&mut self, name: &str, kind: &str, help: &str) {
        self.line(format_args!("# HELP {name} {}", escape_help(help)));
        self.line(format_args!("# TYPE {name} {kind}"));
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
            .collect();
        self.line(format_args!("{name}{{{}}} {value}", labels.join(",")));
    }

    fn single(&mut self, name: &str, kind: &str, help: &str, value: u64) {
        self.family(name, kind, help);
        self.line(format_args!("{name} {value}"));
    }
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Replaces the file at `path` with `text` in one step: written to a
/// temporary file in the same directory (a name node_exporter skips, as it
/// reads only `*.prom`), made readable by everyone (node_exporter runs as
/// another user), then renamed over the old one, so a scrape never sees
/// half a file.
pub fn write_textfile(path: &Path, text: &str) -> io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?;
    let tmp = path.with_file_name(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        // The mode given at creation is narrowed by the umask.
        f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::Applied;
    use crate::plan::EniSummary;
    use crate::values::{Family, ForeignRule, Mac};

    fn mac(n: u8) -> Mac {
        Mac::new([0x0a, 0, 0, 0, 0, n])
    }

    fn eni(n: u8, status: EniStatus) -> EniSummary {
        EniSummary {
            mac: mac(n),
            interface_id: Some(format!("eni-{n}")),
            key: None,
            table: Some(10000 + u32::from(n)),
            dev: Some(format!("eth{n}")),
            index: Some(u32::from(n) + 2),
            status,
            addresses: Vec::new(),
        }
    }

    fn rule(n: u8) -> Rule {
        Rule {
            family: Family::Ipv4,
            priority: 10000 + u32::from(n),
            from: Some(format!("10.0.{n}.10/32").parse().unwrap()),
            table: 10000 + u32::from(n),
            suppress_ifgroup: None,
        }
    }

    fn route(n: u8) -> Route {
        Route {
            table: 10000 + u32::from(n),
            dst: "0.0.0.0/0".parse().unwrap(),
            gateway: Some(format!("10.0.{n}.1").parse().unwrap()),
            dev: format!("eth{n}"),
            oif: u32::from(n) + 2,
            src: None,
        }
    }

    /// Two managed ENIs, one excluded, one waiting; each managed one with a
    /// rule and a default route.
    fn outcome() -> Outcome {
        Outcome {
            plan: Plan {
                enis: vec![
                    eni(0, EniStatus::Managed),
                    eni(1, EniStatus::Managed),
                    eni(2, EniStatus::Excluded),
                    eni(3, EniStatus::NotReady("device-number reads 0".into())),
                ],
                rules: vec![rule(0), rule(1)],
                routes: vec![route(0), route(1)],
                ..Plan::default()
            },
            owned: Owned {
                rules: 3,
                routes: 4,
                addresses: 1,
            },
            ..Outcome::default()
        }
    }

    fn sample(text: &str, line_start: &str) -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(line_start)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
            .to_string()
    }

    fn metrics() -> Metrics {
        Metrics::new(RequestCounts::default())
    }

    const EPOCH_PLUS: Duration = Duration::from_secs(1_764_500_000);

    #[test]
    fn a_reconcile_sets_the_gauges_and_counts() {
        let t0 = Instant::now();
        let mut m = metrics();
        let mut o = outcome();
        o.applied = Applied {
            ops: vec![Op::AddRule(rule(0)), Op::AddRoute(route(0))],
            writes: 3,
            errors: vec!["RTM_NEWRULE for rule x: Network is unreachable".into()],
            failed: vec![Op::AddRule(rule(1))],
            ..Applied::default()
        };
        o.conflicts = vec![Warning::ForeignRuleInRange {
            rule: rule(1),
            protocol: "static".into(),
        }];
        o.plan.warnings = vec![Warning::InvalidMetadata("ENI x: key y".into())];
        m.reconciled(t0, SystemTime::UNIX_EPOCH + EPOCH_PLUS, Ok(&o), 1);
        let text = m.render();
        for (name, want) in [
            ("eniroute_enis{state=\"managed\"}", "2"),
            ("eniroute_enis{state=\"excluded\"}", "1"),
            ("eniroute_enis{state=\"not_ready\"}", "1"),
            ("eniroute_enis{state=\"invalid\"}", "0"),
            ("eniroute_enis_waiting", "1"),
            ("eniroute_enis_held", "0"),
            ("eniroute_enis_failing", "1"),
            ("eniroute_changes_failing", "1"),
            ("eniroute_owned_rules", "3"),
            ("eniroute_owned_routes", "4"),
            ("eniroute_owned_addresses", "1"),
            ("eniroute_conflicts{kind=\"foreign_rule_in_range\"}", "1"),
            ("eniroute_conflicts{kind=\"rule_ahead\"}", "0"),
            ("eniroute_warnings{kind=\"invalid_metadata\"}", "1"),
            ("eniroute_reconciles_total{result=\"partial\"}", "1"),
            ("eniroute_reconciles_total{result=\"clean\"}", "0"),
            ("eniroute_changes_total", "2"),
            ("eniroute_netlink_writes_total", "3"),
            ("eniroute_sysctl_writes_total", "0"),
            // Not clean: no time yet, and nothing to compare repairs with.
            ("eniroute_last_clean_reconcile_timestamp_seconds", "0.000"),
            ("eniroute_repairs_total{object=\"rule\"}", "0"),
        ] {
            assert_eq!(sample(&text, name), want, "{name}\n{text}");
        }

        o.applied = Applied::default();
        o.conflicts.clear();
        m.reconciled(t0, SystemTime::UNIX_EPOCH + EPOCH_PLUS, Ok(&o), 0);
        let text = m.render();
        assert_eq!(
            sample(&text, "eniroute_last_clean_reconcile_timestamp_seconds"),
            "1764500000.000"
        );
        assert_eq!(sample(&text, "eniroute_enis_failing"), "0");
        // An ENI whose metadata is not applied, its link on the host: held.
        let mut held = o.clone();
        held.plan.enis[1].status = EniStatus::Invalid("ENI eni-1: key x".into());
        m.reconciled(t0, SystemTime::UNIX_EPOCH + EPOCH_PLUS, Ok(&held), 0);
        assert_eq!(sample(&m.render(), "eniroute_enis_held"), "1");
        m.reconciled(t0, SystemTime::UNIX_EPOCH + EPOCH_PLUS, Ok(&o), 0);
        assert_eq!(
            sample(&text, "eniroute_conflicts{kind=\"foreign_rule_in_range\"}"),
            "0"
        );
        assert_eq!(
            sample(&text, "eniroute_reconciles_total{result=\"clean\"}"),
            "1"
        );
        // A reconcile that could not read the kernel counts, and leaves the
        // gauges of the last one.
        let e = NetlinkError {
            call: "RTM_GETLINK",
            object: "links".into(),
            errno: None,
            message: "gone".into(),
        };
        m.reconciled(t0, SystemTime::UNIX_EPOCH, Err(&e), 0);
        let text = m.render();
        assert_eq!(
            sample(&text, "eniroute_reconciles_total{result=\"failed\"}"),
            "1"
        );
        assert_eq!(sample(&text, "eniroute_owned_rules"), "3");
    }

    #[test]
    fn putting_back_what_a_clean_reconcile_left_is_a_repair() {
        let t0 = Instant::now();
        let mut m = metrics();
        let o = outcome();
        m.reconciled(t0, SystemTime::UNIX_EPOCH, Ok(&o), 0);
        // Someone deleted eth1's rule and default route; metadata moved an
        // address meanwhile, whose new rule is no repair.
        let mut again = outcome();
        let moved = rule(7);
        again.plan.rules.push(moved.clone());
        again.applied.ops = vec![
            Op::AddRule(rule(1)),
            Op::AddRoute(route(1)),
            Op::AddRule(moved),
            Op::SetSysctl {
                key: Sysctl::ipv4_conf("eth1", "forwarding"),
                value: "1".into(),
            },
        ];
        again.applied.writes = 4;
        m.reconciled(t0, SystemTime::UNIX_EPOCH, Ok(&again), 0);
        let text = m.render();
        assert_eq!(
            sample(&text, "eniroute_repairs_total{object=\"rule\"}"),
            "1"
        );
        assert_eq!(
            sample(&text, "eniroute_repairs_total{object=\"route\"}"),
            "1"
        );
        // The sysctl was not in the plan before: set for the first time.
        assert_eq!(
            sample(&text, "eniroute_repairs_total{object=\"link\"}"),
            "0"
        );
        assert_eq!(sample(&text, "eniroute_netlink_writes_total"), "3");
        assert_eq!(sample(&text, "eniroute_sysctl_writes_total"), "1");
    }

    #[test]
    fn a_link_that_appears_is_timed_until_its_eni_is_configured() {
        let t0 = Instant::now();
        let mut m = metrics();
        let link = |index: u32, added: bool, removed: bool| Event::Link {
            index,
            added,
            removed,
            name: None,
            mac: None,
        };
        // eth1 (index 3) appears; metadata lags, so the first reconcile
        // leaves it not ready.
        m.event(t0, &link(3, true, false));
        // A veth that comes and goes is never observed.
        m.event(t0, &link(40, true, false));
        m.event(t0 + Duration::from_millis(5), &link(40, false, true));
        let mut o = outcome();
        o.plan.enis[1].status = EniStatus::NotReady("not in metadata yet".into());
        m.reconciled(t0 + Duration::from_millis(10), SystemTime::now(), Ok(&o), 1);
        // A change of eth1's that fails: not configured yet either.
        let mut failing = outcome();
        failing.applied.errors = vec!["x".into()];
        failing.applied.failed = vec![Op::AddRoute(route(1))];
        m.reconciled(
            t0 + Duration::from_millis(20),
            SystemTime::now(),
            Ok(&failing),
            0,
        );
        m.reconciled(
            t0 + Duration::from_millis(40),
            SystemTime::now(),
            Ok(&outcome()),
            0,
        );
        // Configured once: the next reconcile does not count it again.
        m.reconciled(
            t0 + Duration::from_millis(90),
            SystemTime::now(),
            Ok(&outcome()),
            0,
        );
        let text = m.render();
        let name = "eniroute_link_configured_seconds";
        assert_eq!(
            sample(&text, &format!("{name}_bucket{{le=\"0.025\"}}")),
            "0"
        );
        assert_eq!(sample(&text, &format!("{name}_bucket{{le=\"0.05\"}}")), "1");
        assert_eq!(sample(&text, &format!("{name}_bucket{{le=\"+Inf\"}}")), "1");
        assert_eq!(sample(&text, &format!("{name}_count")), "1");
        assert_eq!(sample(&text, &format!("{name}_sum")), "0.04");
        assert!(m.appeared.is_empty(), "{:?}", m.appeared);
    }

    #[test]
    fn a_link_never_configured_is_forgotten_after_ten_minutes() {
        let t0 = Instant::now();
        let mut m = metrics();
        m.event(
            t0,
            &Event::Link {
                index: 50,
                added: true,
                removed: false,
                name: None,
                mac: None,
            },
        );
        m.reconciled(
            t0 + Duration::from_secs(599),
            SystemTime::now(),
            Ok(&outcome()),
            0,
        );
        assert_eq!(m.appeared.len(), 1);
        m.reconciled(t0 + APPEARED_MAX_AGE, SystemTime::now(), Ok(&outcome()), 0);
        assert!(m.appeared.is_empty());
    }

    #[test]
    fn every_family_has_help_and_type_before_its_samples_and_names_follow_the_conventions() {
        let mut m = metrics();
        m.metadata_read(true);
        m.metadata_read(false);
        m.listed_not_read(3000);
        let mut o = outcome();
        o.conflicts = vec![Warning::RuleAhead {
            eni: "eni-1".into(),
            dev: "eth1".into(),
            rule: ForeignRule {
                rule: rule(1),
                protocol: 4,
            },
            table: 10001,
        }];
        m.reconciled(Instant::now(), SystemTime::now(), Ok(&o), 0);
        let text = m.render();
        assert_eq!(sample(&text, "eniroute_enis_not_read"), "3000");
        assert!(text.ends_with('\n'));
        let mut typed: BTreeMap<String, String> = BTreeMap::new();
        let mut helped = BTreeSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap();
                assert!(helped.insert(name.to_string()), "HELP twice: {name}");
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(helped.contains(name), "TYPE before HELP: {line}");
                assert!(typed.insert(name.into(), kind.into()).is_none(), "{line}");
                match kind {
                    "counter" => assert!(name.ends_with("_total"), "{name}"),
                    _ => assert!(!name.ends_with("_total"), "{name}"),
                }
                assert!(name.starts_with("eniroute_"), "{name}");
            } else {
                let name = line.split(['{', ' ']).next().unwrap();
                let family = typed
                    .iter()
                    .rev()
                    .find(|(f, _)| {
                        name == *f
                            || name
                                .strip_prefix(f.as_str())
                                .is_some_and(|s| ["_bucket", "_sum", "_count"].contains(&s))
                    })
                    .unwrap_or_else(|| panic!("sample without its family: {line}"));
                let value = line.rsplit(' ').next().unwrap();
                assert!(value.parse::<f64>().is_ok(), "{line}");
                assert!(name.starts_with(family.0.as_str()), "{line}");
            }
        }
        assert_eq!(
            sample(&text, "eniroute_metadata_reads_total{result=\"failed\"}"),
            "1"
        );
        assert_eq!(
            sample(&text, "eniroute_conflicts{kind=\"rule_ahead\"}"),
            "1"
        );
        assert_eq!(
            sample(&text, "eniroute_metadata_errors_total{kind=\"timeout\"}"),
            "0"
        );
        assert_eq!(typed["eniroute_link_configured_seconds"], "histogram");
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(escape_help("a\\b\nc"), "a\\\\b\\nc");
    }

    #[test]
    fn the_textfile_is_replaced_whole_and_readable_by_everyone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("eniroute-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("eniroute.prom");
        write_textfile(&path, "a 1\n").unwrap();
        write_textfile(&path, "a 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a 2\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        // Nothing else is left in the directory.
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["eniroute.prom"]);
        // A directory that does not exist: the error, and nothing created.
        let missing = dir.join("no/such/dir/eniroute.prom");
        let e = write_textfile(&missing, "a 1\n").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
