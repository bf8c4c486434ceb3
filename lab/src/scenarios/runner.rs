//! Running one scenario: what it built, the routing the agent produced, each
//! check with its timing, a summary, and the teardown.
//!
//! A [`Session`] prints as it goes when run for a person and only collects
//! when run by a test; either way the [`Report`] holds every check, so the
//! binary and the tests judge a run by the same data.

use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::agent::{self, Daemon};
use crate::world::{table_of, LabInstance};
use crate::{connect, route_get, Client, Netns, Vpc};

/// Set by the lab's SIGINT/SIGTERM handler: scenarios stop at the next step
/// and tear down what they built. A plain atomic store is all a signal
/// handler may do.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// How long a connection check may take. Inside one host an answer takes
/// well under a millisecond; a dropped packet shows up as this timeout.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the agent may take to configure an instance after it starts.
const CONFIGURE_TIMEOUT: Duration = Duration::from_secs(10);
/// Agent log lines shown when a scenario fails.
const LOG_TAIL: usize = 25;

static SESSIONS: AtomicU32 = AtomicU32::new(0);

/// How to run scenarios.
#[derive(Debug, Clone)]
pub struct Options {
    /// The program run as `eniroute` inside instance namespaces.
    pub agent: PathBuf,
    /// Print as the scenario goes (the binary) rather than only collect (tests).
    pub print: bool,
    /// Leave the namespaces in place at the end.
    pub keep: bool,
}

/// One check: what was verified, whether it held, what was seen, how long it
/// took.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
    pub took: Duration,
}

/// A number a scenario measured (the failover outages).
#[derive(Debug, Clone)]
pub struct Measurement {
    pub name: String,
    pub value: Duration,
}

/// Everything a scenario run produced.
#[derive(Debug, Default)]
pub struct Report {
    pub scenario: &'static str,
    pub checks: Vec<Check>,
    pub measurements: Vec<Measurement>,
    /// Building the scenario failed; the checks after that never ran.
    pub error: Option<String>,
    pub interrupted: bool,
    pub elapsed: Duration,
    /// Namespaces left in place by `--keep`.
    pub kept: Vec<String>,
    /// Everything that was (or would have been) printed.
    pub transcript: String,
}

impl Report {
    /// True when the scenario ran to the end and every check held.
    pub fn passed(&self) -> bool {
        self.error.is_none()
            && !self.interrupted
            && !self.checks.is_empty()
            && self.checks.iter().all(|c| c.ok)
    }

    pub fn failed_checks(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.ok)
    }

    /// `ha-failover: PASS, 12 of 12 checks in 4.2 s`.
    pub fn summary(&self) -> String {
        let passed = self.checks.iter().filter(|c| c.ok).count();
        let total = self.checks.len();
        let verdict = if self.interrupted {
            "INTERRUPTED"
        } else if self.passed() {
            "PASS"
        } else {
            "FAIL"
        };
        let mut s = format!(
            "{}: {verdict}, {passed} of {total} checks passed in {}",
            self.scenario,
            human(self.elapsed)
        );
        if let (false, Some(e)) = (self.interrupted, &self.error) {
            let _ = write!(s, " (stopped: {e})");
        }
        s
    }
}

/// The agent program, for one-shot commands (`status`, `refresh`).
#[derive(Debug, Clone)]
pub struct Agent(PathBuf);

impl Agent {
    /// Runs `eniroute ARGS` in `inst` against its metadata endpoint.
    pub fn run(&self, inst: &LabInstance, args: &[&str]) -> io::Result<Output> {
        agent::run(&self.0, &inst.ns, &inst.endpoint, args).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "{} {} in netns {}: {e}",
                    self.0.display(),
                    args.join(" "),
                    inst.ns.name()
                ),
            )
        })
    }
}

impl Agent {
    /// Runs `eniroute ARGS` in `ns` against the metadata at `endpoint`.
    pub fn run_at(&self, ns: &Netns, endpoint: &str, args: &[&str]) -> io::Result<Output> {
        agent::run(&self.0, ns, endpoint, args)
    }
}

/// A started agent, to stop it later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentId(usize);

struct AgentSlot {
    who: String,
    daemon: Option<Daemon>,
    /// The log, captured when the daemon stops (its file goes with it).
    log: String,
}

/// One scenario run in progress.
pub struct Session<'o> {
    opts: &'o Options,
    report: Report,
    /// Configuration files for the agents; removed at the end.
    dir: PathBuf,
    agents: Vec<AgentSlot>,
    /// Every namespace built, for `--keep`.
    namespaces: Vec<(String, String)>,
    /// The agents' state directories (one per instance namespace).
    state_dirs: Vec<PathBuf>,
    section: Option<String>,
    /// `done` ran: the world was torn down (or kept) in order.
    finished_world: bool,
}

impl<'o> Session<'o> {
    pub(super) fn new(scenario: &'static str, opts: &'o Options) -> Session<'o> {
        let n = SESSIONS.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("eniroute-lab-{}-{n}", std::process::id()));
        let mut s = Session {
            opts,
            report: Report {
                scenario,
                ..Report::default()
            },
            dir,
            agents: Vec::new(),
            namespaces: Vec::new(),
            state_dirs: Vec::new(),
            section: None,
            finished_world: false,
        };
        s.say(&format!("━━ {scenario} ━━"));
        s
    }

    /// Prints (when printing) and records one line.
    pub fn say(&mut self, line: &str) {
        if self.opts.print {
            println!("{line}");
        }
        self.report.transcript.push_str(line);
        self.report.transcript.push('\n');
    }

    /// Starts a titled part of the output, once.
    pub fn section(&mut self, title: &str) {
        if self.section.as_deref() == Some(title) {
            return;
        }
        self.section = Some(title.to_string());
        self.say("");
        self.say(title);
    }

    /// Fails when the user asked the lab to stop (Ctrl-C): the caller's `?`
    /// unwinds the scenario, dropping every namespace guard on the way.
    pub fn proceed(&self) -> io::Result<()> {
        if INTERRUPTED.load(Ordering::Relaxed) {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "interrupted"));
        }
        Ok(())
    }

    // ----- what was built -------------------------------------------------

    pub fn vpc(&mut self, vpc: &Vpc, label: &str) {
        self.section("What the lab built");
        let name = vpc.router().name().to_string();
        self.say(&format!(
            "  {label}: its router, like EC2's, drops a packet that leaves an ENI with a \
             source address that is not that ENI's  [netns {name}]"
        ));
        self.namespaces.push((format!("router of {label}"), name));
    }

    pub fn instance(&mut self, role: &str, inst: &LabInstance) {
        self.section("What the lab built");
        let name = inst.ns.name().to_string();
        self.say(&format!(
            "  {role}: instance i-0lab{:02}, metadata at {}  [netns {name}]",
            inst.id, inst.endpoint
        ));
        for (eni, meta) in inst.eni_meta() {
            self.say(&format!("    {}", eni_line(eni.name(), meta)));
        }
        self.instance_ns(role, &inst.ns);
    }

    /// Registers an instance namespace built some other way (the EC2 API
    /// lab): for `--keep`, and its agent state directory for cleanup.
    pub fn instance_ns(&mut self, role: &str, ns: &Netns) {
        let name = ns.name().to_string();
        self.namespaces.push((role.to_string(), name));
        match state_dir(ns.path().as_path()) {
            Ok(dir) => {
                // The namespace is brand new, so anything stored under its
                // inode number belongs to a dead namespace that had the same
                // number; an agent must not inherit that.
                let _ = std::fs::remove_dir_all(&dir);
                self.state_dirs.push(dir);
            }
            Err(e) => self.say(&format!(
                "    (cannot locate its agent state directory: {e})"
            )),
        }
    }

    pub fn client(&mut self, role: &str, client: &Client) {
        self.section("What the lab built");
        let name = client.name().to_string();
        self.say(&format!(
            "  {role}: {}/{}, behind the VPC router  [netns {name}]",
            client.addr(),
            client.net().prefix_len()
        ));
        self.namespaces.push((role.to_string(), name));
    }

    /// A free-form line about the setup.
    pub fn note(&mut self, line: &str) {
        self.section("What the lab built");
        self.say(&format!("  {line}"));
    }

    // ----- the agent ------------------------------------------------------

    /// Starts `eniroute daemon` in `inst`, with `config` (TOML) if given.
    pub fn start_agent(
        &mut self,
        role: &str,
        inst: &LabInstance,
        config: Option<&str>,
    ) -> io::Result<AgentId> {
        self.start_agent_at(role, &inst.ns, &inst.endpoint, config)
    }

    /// Starts `eniroute daemon` in `ns` against the metadata at `endpoint`.
    pub fn start_agent_at(
        &mut self,
        role: &str,
        ns: &Netns,
        endpoint: &str,
        config: Option<&str>,
    ) -> io::Result<AgentId> {
        self.proceed()?;
        let path = match config {
            Some(text) => Some(self.write_config(role, text)?),
            None => None,
        };
        let daemon =
            Daemon::start(&self.opts.agent, ns, endpoint, path.as_deref()).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "start {} daemon in netns {}: {e}",
                        self.opts.agent.display(),
                        ns.name()
                    ),
                )
            })?;
        self.agents.push(AgentSlot {
            who: role.to_string(),
            daemon: Some(daemon),
            log: String::new(),
        });
        Ok(AgentId(self.agents.len() - 1))
    }

    /// Stops an agent (SIGTERM: it exits and leaves routing in place).
    pub fn stop_agent(&mut self, id: AgentId) {
        if let Some(slot) = self.agents.get_mut(id.0) {
            if let Some(mut d) = slot.daemon.take() {
                let _ = d.stop();
                slot.log.push_str(&d.log());
            }
        }
    }

    fn write_config(&mut self, role: &str, text: &str) -> io::Result<PathBuf> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| io::Error::new(e.kind(), format!("create {}: {e}", self.dir.display())))?;
        let file: String = role
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let path = self.dir.join(format!("{file}.toml"));
        std::fs::write(&path, text)
            .map_err(|e| io::Error::new(e.kind(), format!("write {}: {e}", path.display())))?;
        self.say(&format!(
            "  {role}: agent configuration ({})",
            path.display()
        ));
        for line in text.lines() {
            self.say(&format!("    | {line}"));
        }
        Ok(path)
    }

    /// The agent program, for one-shot commands inside a check.
    pub fn agent(&self) -> Agent {
        Agent(self.opts.agent.clone())
    }

    /// Waits until the agent has given every ENI of `inst` its addresses,
    /// its table and a rule per address. The result is a check for
    /// [`Self::add`], to be printed after the routing it produced.
    pub fn wait_configured(&self, role: &str, inst: &LabInstance, since: Instant) -> Check {
        let mut missing = Vec::new();
        let done = agent::wait_for(CONFIGURE_TIMEOUT, || {
            if INTERRUPTED.load(Ordering::Relaxed) {
                return true;
            }
            missing = unconfigured(inst);
            missing.is_empty()
        });
        let names: Vec<&str> = inst.eni_meta().map(|(e, _)| e.name()).collect();
        let ok = done.is_some() && missing.is_empty() && self.proceed().is_ok();
        let detail = if ok {
            "addresses, tables and rules in place (time since the agent started)".to_string()
        } else if missing.is_empty() {
            "interrupted".to_string()
        } else {
            format!("still missing: {}", missing.join("; "))
        };
        Check {
            name: format!("agent in {role} configured {}", names.join(", ")),
            ok,
            detail,
            took: since.elapsed(),
        }
    }

    /// Prints the instance's addresses, `ip rule`, each ENI's table and the
    /// main table, as the agent left them.
    pub fn routing(&mut self, role: &str, inst: &LabInstance) {
        self.section(&format!("Routing in {role}, as the agent left it"));
        let mut commands: Vec<Vec<String>> = vec![
            vec!["-4".into(), "-br".into(), "addr".into()],
            // The managed ENIs (their interface group) with the alternative
            // names the agent gave them.
            vec!["link".into(), "show".into(), "group".into(), "10000".into()],
            vec!["rule".into()],
        ];
        let mut tables: Vec<u32> = inst.eni_meta().map(|(_, m)| table_of(m)).collect();
        tables.sort_unstable();
        tables.dedup();
        for t in tables {
            commands.push(vec![
                "route".into(),
                "show".into(),
                "table".into(),
                t.to_string(),
            ]);
        }
        commands.push(vec![
            "route".into(),
            "show".into(),
            "table".into(),
            "main".into(),
        ]);
        for args in commands {
            self.say(&format!("  $ ip {}", args.join(" ")));
            match inst.ns.ip(&args) {
                Ok(out) if out.trim().is_empty() => self.say("    (empty)"),
                Ok(out) => {
                    for line in out.lines() {
                        // `ip -br addr` pads with spaces; tabs come from `ip rule`.
                        self.say(&format!("    {}", line.trim_end().replace('\t', " ")));
                    }
                }
                Err(e) => self.say(&format!("    (failed: {e})")),
            }
        }
    }

    // ----- checks ---------------------------------------------------------

    /// Runs one check and records it: `Ok(detail)` passes, `Err(why)` fails.
    pub fn check(&mut self, name: &str, f: impl FnOnce() -> Result<String, String>) -> bool {
        if INTERRUPTED.load(Ordering::Relaxed) {
            return false;
        }
        let start = Instant::now();
        let result = f();
        let took = start.elapsed();
        match result {
            Ok(detail) => self.record(name, true, detail, took),
            Err(detail) => self.record(name, false, detail, took),
        }
    }

    /// Records a check made earlier (see [`Self::wait_configured`]).
    pub fn add(&mut self, c: Check) -> bool {
        self.record(&c.name, c.ok, c.detail, c.took)
    }

    /// Records a check whose work was done elsewhere.
    pub fn record(&mut self, name: &str, ok: bool, detail: String, took: Duration) -> bool {
        if !ok && INTERRUPTED.load(Ordering::Relaxed) {
            // Cut short by the user, not a finding.
            return false;
        }
        self.section("Checks");
        let mark = if ok { "✓" } else { "✗" };
        let mut line = format!("  {mark} {:>8}  {name}", human(took));
        if !detail.is_empty() {
            let _ = write!(line, ": {detail}");
        }
        self.say(&line);
        self.report.checks.push(Check {
            name: name.to_string(),
            ok,
            detail,
            took,
        });
        ok
    }

    pub fn measure(&mut self, name: &str, value: Duration) {
        self.report.measurements.push(Measurement {
            name: name.to_string(),
            value,
        });
    }

    // ----- the end --------------------------------------------------------

    /// Tears the scenario's world down in order (agents, their state, then
    /// the namespaces), or with `--keep` leaves the namespaces as they are.
    pub fn done<W>(&mut self, world: W) {
        self.stop_all_agents();
        if self.opts.keep {
            // Forgetting the guards keeps the namespaces (their Drop would
            // delete them). The agents are stopped all the same: left running
            // they would outlive the lab inside namespaces nobody tracks, and
            // the metadata simulator and test servers end with this process.
            std::mem::forget(world);
        } else {
            // The state directories are keyed by namespace inode numbers,
            // which the kernel reuses: remove them while ours still exist.
            for dir in &self.state_dirs {
                let _ = std::fs::remove_dir_all(dir);
            }
            drop(world);
        }
        self.finished_world = true;
    }

    fn stop_all_agents(&mut self) {
        for i in 0..self.agents.len() {
            self.stop_agent(AgentId(i));
        }
    }

    pub(super) fn finish(mut self, result: io::Result<()>, started: Instant) -> Report {
        // If the scenario ended early its world is already gone; stop the
        // agents that were running in it.
        self.stop_all_agents();
        let interrupted = INTERRUPTED.load(Ordering::Relaxed);
        match result {
            Ok(()) => {}
            // A Ctrl-C from a terminal reaches the `ip` commands too; what
            // fails then is a consequence, not a finding.
            Err(_) if interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => self.report.interrupted = true,
            Err(e) => {
                self.section("Checks");
                self.say(&format!("  ✗ setup failed: {e}"));
                self.report.error = Some(e.to_string());
            }
        }
        if interrupted {
            self.report.interrupted = true;
        }
        if !self.report.passed() && !self.report.interrupted {
            self.show_agent_logs();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        self.report.elapsed = started.elapsed();
        if !self.report.measurements.is_empty() {
            self.section("Measured");
            let lines: Vec<String> = self
                .report
                .measurements
                .iter()
                .map(|m| format!("  {:>8}  {}", human(m.value), m.name))
                .collect();
            for line in lines {
                self.say(&line);
            }
        }
        self.say("");
        let summary = self.report.summary();
        self.say(&summary);
        if self.opts.keep && self.finished_world {
            self.say("");
            self.say(
                "Kept the namespaces (agents stopped, routing left as they made it). Enter one with \
                 `ip netns exec NAME bash`:",
            );
            let lines: Vec<String> = self
                .namespaces
                .iter()
                .map(|(role, name)| format!("  ip netns exec {name} bash    # {role}"))
                .collect();
            for line in lines {
                self.say(&line);
            }
            self.say(
                "They are removed by the next `eniroute-lab run` or by `eniroute-lab cleanup`.",
            );
            self.report.kept = self.namespaces.iter().map(|(_, n)| n.clone()).collect();
        }
        self.say("");
        self.report
    }

    fn show_agent_logs(&mut self) {
        let logs: Vec<(String, String)> = self
            .agents
            .iter()
            .map(|a| (a.who.clone(), a.log.clone()))
            .collect();
        for (who, log) in logs {
            self.section("Agent logs (last lines), to see why");
            self.say(&format!("  {who}:"));
            let lines: Vec<&str> = log.lines().collect();
            for line in &lines[lines.len().saturating_sub(LOG_TAIL)..] {
                self.say(&format!("    {line}"));
            }
        }
    }
}

fn eni_line(name: &str, meta: &crate::imds_tree::EniMeta) -> String {
    let addrs: Vec<String> = meta.ipv4s.iter().map(|a| a.to_string()).collect();
    let (primary, secondary) = addrs
        .split_first()
        .map_or((String::new(), &[][..]), |(p, s)| (p.clone(), s));
    let mut line = format!(
        "{name:<5} {}  {}  device {}  table {}  subnet {:<15}  {primary}",
        meta.eni_id,
        meta.mac,
        meta.device,
        table_of(meta),
        meta.subnet.to_string(),
    );
    if !secondary.is_empty() {
        let _ = write!(line, " (+ secondary {})", secondary.join(", "));
    }
    if meta.vpc_id != "vpc-0lab1" {
        let cidrs: Vec<String> = meta.vpc_cidrs.iter().map(|c| c.to_string()).collect();
        let _ = write!(line, "  from {} ({})", meta.vpc_id, cidrs.join(", "));
    }
    line
}

/// What the agent has not configured yet on `inst`, as readable items.
fn unconfigured(inst: &LabInstance) -> Vec<String> {
    let ns = &inst.ns;
    let (rules, addrs) = match (ns.ip(["-4", "rule"]), ns.ip(["-4", "-o", "addr"])) {
        (Ok(r), Ok(a)) => (r, a),
        (Err(e), _) | (_, Err(e)) => return vec![e.to_string()],
    };
    let mut missing = Vec::new();
    for (eni, meta) in inst.eni_meta() {
        let table = table_of(meta);
        for ip in &meta.ipv4s {
            if !addrs.contains(&format!("inet {ip}/")) {
                missing.push(format!("address {ip} on {}", eni.name()));
            }
            if !rules.contains(&format!("from {ip} lookup {table}")) {
                missing.push(format!("rule from {ip} lookup {table}"));
            }
        }
        match ns.ip(["route", "show", "table", &table.to_string()]) {
            Ok(routes) if routes.contains("default via") => {}
            _ => missing.push(format!("default route in table {table}")),
        }
    }
    missing
}

/// Where the agent keeps its state for the namespace pinned at `pinned`:
/// the same rule as `state::run_dir`, computed from outside.
fn state_dir(pinned: &Path) -> io::Result<PathBuf> {
    let ino = std::fs::metadata(pinned)?.ino();
    let root = std::env::var_os("ENIROUTE_RUN_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/eniroute"));
    Ok(root.join(format!("net-{ino}")))
}

/// `2.4 ms`, `38 ms`, `4.2 s`.
pub fn human(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else if ms < 10_000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.1} s", ms / 1000.0)
    }
}

// ----- check helpers shared by the scenarios --------------------------------

/// Connects from `from` to `dst` (from `src` if given) and expects the server
/// to have seen the connection come from `seen`.
pub(super) fn expect_seen(
    from: &Netns,
    dst: SocketAddr,
    src: Option<IpAddr>,
    seen: Ipv4Addr,
) -> Result<String, String> {
    let answer = connect(from, dst, src, CONNECT_TIMEOUT).map_err(|e| e.to_string())?;
    let peer: SocketAddr = answer
        .trim_end()
        .parse()
        .map_err(|_| format!("server answered {answer:?}, not an address"))?;
    if peer.ip() != IpAddr::V4(seen) {
        return Err(format!(
            "answered, but the server saw {} instead of {seen}",
            peer.ip()
        ));
    }
    Ok(format!("answered; server saw {}", peer.ip()))
}

/// `ip route get DST [from SRC]` in `ns` must leave through `dev`.
pub(super) fn expect_route(
    ns: &Netns,
    dst: Ipv4Addr,
    from: Option<Ipv4Addr>,
    dev: &str,
) -> Result<String, String> {
    let got = route_get(ns, IpAddr::V4(dst), from.map(IpAddr::V4)).map_err(|e| e.to_string())?;
    let first = first_line(&got.raw);
    if got.dev != dev {
        return Err(format!(
            "leaves through {} instead of {dev}: {first}",
            got.dev
        ));
    }
    Ok(first)
}

/// `ip link show NAME` finds `dev` by each of `names` (its alternative
/// names). They are set in the same reconcile as the rules, just after
/// them, so a moment is allowed for them to appear.
pub(super) fn expect_altnames(ns: &Netns, dev: &str, names: &[&str]) -> Result<String, String> {
    let finds = |name: &str| {
        ns.ip(["-o", "link", "show", name])
            .ok()
            .and_then(|out| {
                let link = out.split(": ").nth(1)?;
                Some(link.split('@').next()? == dev)
            })
            .unwrap_or(false)
    };
    let all = || names.iter().all(|n| finds(n));
    if crate::agent::wait_for(std::time::Duration::from_secs(2), all).is_none() {
        let missing: Vec<&str> = names.iter().copied().filter(|n| !finds(n)).collect();
        return Err(format!(
            "`ip link show` does not find {dev} as {}",
            missing.join(", ")
        ));
    }
    Ok(format!("{} name {dev}", names.join(" and ")))
}

/// The decision line of `ip route get`, without the `uid 0` it always ends
/// with for a root caller.
fn first_line(raw: &str) -> String {
    let line = raw.lines().next().unwrap_or_default().trim();
    match line.rsplit_once(" uid ") {
        Some((decision, uid)) if uid.bytes().all(|b| b.is_ascii_digit()) => decision.to_string(),
        _ => line.to_string(),
    }
}

/// `ip route get DST from SRC iif IIF` in `ns` (a forwarded packet) must
/// leave through `dev`.
pub(super) fn expect_forward_route(
    ns: &Netns,
    dst: Ipv4Addr,
    from: Ipv4Addr,
    iif: &str,
    dev: &str,
) -> Result<String, String> {
    let raw = ns
        .ip([
            "route",
            "get",
            &dst.to_string(),
            "from",
            &from.to_string(),
            "iif",
            iif,
        ])
        .map_err(|e| e.to_string())?;
    let first = first_line(&raw);
    let mut words = first.split_whitespace();
    let out = words
        .by_ref()
        .skip_while(|w| *w != "dev")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    if out != dev {
        return Err(format!(
            "forwarded through {out:?} instead of {dev}: {first}"
        ));
    }
    Ok(first)
}

/// A sysctl of `ns`, e.g. `net.ipv4.conf.eth1.forwarding`.
pub(super) fn read_sysctl(ns: &Netns, key: &str) -> io::Result<String> {
    let path = Path::new("/proc/sys").join(key.replace('.', "/"));
    // /proc/sys/net shows the namespace of the thread that opens the file.
    ns.run_in(|| std::fs::read_to_string(&path))?
        .map(|v| v.trim().to_string())
        .map_err(|e| io::Error::new(e.kind(), format!("read {key} in netns {}: {e}", ns.name())))
}

/// Makes an instance start out as an EC2 instance does: no IP forwarding
/// (new namespaces copy the host's IPv4 settings, and a host that runs
/// containers forwards).
pub(super) fn like_ec2(inst: &LabInstance) -> io::Result<()> {
    inst.ns.sysctl("net.ipv4.conf.all.forwarding", "0")?;
    inst.ns.sysctl("net.ipv4.conf.default.forwarding", "0")
}

/// `IP ForwDatagrams` of `ns`: packets it routed through itself.
pub(super) fn forwarded_packets(ns: &Netns) -> io::Result<u64> {
    // /proc/thread-self/net shows the namespace of the reading thread
    // (/proc/net follows the process's main thread instead).
    let snmp = ns.run_in(|| std::fs::read_to_string("/proc/thread-self/net/snmp"))??;
    let mut lines = snmp.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        if !names.starts_with("Ip:") {
            continue;
        }
        for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
            if name == "ForwDatagrams" {
                return value.parse().map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("ForwDatagrams {value:?}"),
                    )
                });
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        format!("no Ip ForwDatagrams counter in netns {}", ns.name()),
    ))
}

pub(super) fn sock(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), port)
}

pub(super) fn ip4(s: &str) -> io::Result<Ipv4Addr> {
    s.parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("bad IPv4 {s:?}")))
}

pub(super) fn net4(s: &str) -> io::Result<ipnet::Ipv4Net> {
    s.parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad IPv4 network {s:?}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_get_lines_lose_the_uid() {
        assert_eq!(
            first_line("10.9.0.5 via 10.0.2.1 dev eth1 src 10.0.2.20 uid 0 \n    cache \n"),
            "10.9.0.5 via 10.0.2.1 dev eth1 src 10.0.2.20"
        );
        let forwarded = "10.0.4.5 from 198.51.100.10 via 10.0.3.1 dev eth1";
        assert_eq!(first_line(forwarded), forwarded);
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human(Duration::from_micros(2400)), "2.4 ms");
        assert_eq!(human(Duration::from_millis(38)), "38 ms");
        assert_eq!(human(Duration::from_millis(12_340)), "12.3 s");
    }

    #[test]
    fn a_report_passes_only_with_checks_all_held_and_no_error() {
        let check = |ok| Check {
            name: "c".into(),
            ok,
            detail: String::new(),
            took: Duration::ZERO,
        };
        let mut r = Report::default();
        assert!(!r.passed(), "no checks is not a pass");
        r.checks = vec![check(true), check(true)];
        assert!(r.passed());
        r.checks.push(check(false));
        assert!(!r.passed());
        r.checks.pop();
        r.error = Some("setup".into());
        assert!(!r.passed());
    }
}
