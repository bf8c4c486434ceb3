//! `eniroute-lab bench`: how fast the agent is, measured from outside on
//! simulated instances, with the shell way of doing the same work measured
//! in the same run, and every figure set against its budget.
//!
//! Each figure group lives in a file of its own and adds rows to one
//! [`Table`]: [`hotplug`] (hotplug with metadata present and late, a
//! deleted rule restored), [`address`] (a secondary IPv4 added in
//! metadata), [`scale`] (one-shot `apply` and the daemon's reconcile at 15
//! ENIs, and the shell baseline), [`idle`] (the daemon doing nothing, and
//! under someone else's route churn).
//! Wall times are measured by this process; what the agent did (netlink
//! messages, writes, its own reconcile time) comes from its `-v` output and
//! debug log; metadata requests are counted by the simulator.

use std::fmt::Write as _;
use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::netns::Netns;

pub mod address;
pub mod hotplug;
pub mod idle;
pub mod scale;

/// Far longer than any outcome measured; only guards against a hang.
pub const GIVE_UP: Duration = Duration::from_secs(20);
/// How often the prober starts a new connection attempt. A SYN that finds
/// nothing is not retransmitted for a second, so the first attempt that
/// can succeed is at most this late.
const PROBE_EVERY: Duration = Duration::from_millis(1);
/// How long one attempt may wait for its answer.
const ATTEMPT: Duration = Duration::from_millis(200);

/// What a run is given.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `eniroute` program to measure.
    pub agent: PathBuf,
    /// Fewer repetitions and a shorter idle window, for CI.
    pub quick: bool,
    /// Only these figure groups (all when empty).
    pub only: Vec<String>,
}

impl Options {
    /// `quick` repetitions with `--quick`, else `full`.
    pub fn n(&self, quick: usize, full: usize) -> usize {
        if self.quick {
            quick
        } else {
            full
        }
    }
}

/// Which statistic a budget is held against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stat {
    P50,
    P99,
    Max,
}

/// A limit on one statistic of a row: at most (`at_most`) or at least.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub stat: Stat,
    pub limit: f64,
    pub at_most: bool,
}

impl Budget {
    pub fn at_most(stat: Stat, limit: f64) -> Budget {
        Budget {
            stat,
            limit,
            at_most: true,
        }
    }

    pub fn at_least(stat: Stat, limit: f64) -> Budget {
        Budget {
            stat,
            limit,
            at_most: false,
        }
    }

    fn met(&self, value: f64) -> bool {
        if self.at_most {
            value <= self.limit
        } else {
            value >= self.limit
        }
    }
}

/// One measured figure: its samples and what they are held to.
#[derive(Debug, Clone)]
pub struct Row {
    pub group: &'static str,
    pub figure: String,
    /// `ms`, `requests`, `MiB`…
    pub unit: &'static str,
    pub samples: Vec<f64>,
    pub budgets: Vec<Budget>,
    /// Set when the figure could not be measured.
    pub failed: Option<String>,
}

impl Row {
    pub fn new(group: &'static str, figure: impl Into<String>, unit: &'static str) -> Row {
        Row {
            group,
            figure: figure.into(),
            unit,
            samples: Vec::new(),
            budgets: Vec::new(),
            failed: None,
        }
    }

    pub fn budget(mut self, b: Budget) -> Row {
        self.budgets.push(b);
        self
    }

    pub fn samples(mut self, samples: Vec<f64>) -> Row {
        self.samples = samples;
        self
    }

    /// The statistic over the samples; `None` without samples.
    pub fn stat(&self, stat: Stat) -> Option<f64> {
        let q = match stat {
            Stat::P50 => 0.50,
            Stat::P99 => 0.99,
            Stat::Max => 1.0,
        };
        percentile(&self.samples, q)
    }

    pub fn min(&self) -> Option<f64> {
        self.samples.iter().copied().reduce(f64::min)
    }

    /// Whether every budget holds; `None` without budgets.
    pub fn met(&self) -> Option<bool> {
        if self.budgets.is_empty() {
            return None;
        }
        if self.failed.is_some() {
            return Some(false);
        }
        Some(
            self.budgets
                .iter()
                .all(|b| self.stat(b.stat).is_some_and(|v| b.met(v))),
        )
    }
}

/// Nearest-rank percentile: the smallest sample with at least `q` of the
/// samples at or below it (so p99 of fewer than 100 samples is the maximum).
pub fn percentile(samples: &[f64], q: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Every row of a run, in the order measured.
#[derive(Debug, Default)]
pub struct Table {
    pub rows: Vec<Row>,
}

impl Table {
    pub fn push(&mut self, row: Row) {
        self.rows.push(row);
    }

    /// A row that could not be measured, with the reason.
    pub fn failed(&mut self, group: &'static str, figure: &str, why: String) {
        let mut row = Row::new(group, figure, "");
        row.failed = Some(why);
        self.rows.push(row);
    }

    pub fn row(&self, figure: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.figure == figure)
    }

    /// The table in markdown: figure, n, min, p50, p99, budget, met.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        out.push_str("| group | figure | n | min | p50 | p99 | budget | |\n");
        out.push_str("| --- | --- | ---: | ---: | ---: | ---: | --- | --- |\n");
        for r in &self.rows {
            if let Some(why) = &r.failed {
                let _ = writeln!(
                    out,
                    "| {} | {} | 0 | | | | {} | ✗ not measured: {} |",
                    r.group,
                    r.figure,
                    budgets_text(r),
                    why.replace('|', "/").replace('\n', " ")
                );
                continue;
            }
            let cell = |v: Option<f64>| v.map(|v| number(v, r.unit)).unwrap_or_default();
            let mark = match r.met() {
                None => "",
                Some(true) => "✓",
                Some(false) => "✗",
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                r.group,
                r.figure,
                r.samples.len(),
                cell(r.min()),
                cell(r.stat(Stat::P50)),
                cell(r.stat(Stat::P99)),
                budgets_text(r),
                mark
            );
        }
        out
    }

    /// Budgets met, budgets in all.
    pub fn score(&self) -> (usize, usize) {
        let judged: Vec<bool> = self.rows.iter().filter_map(Row::met).collect();
        (judged.iter().filter(|m| **m).count(), judged.len())
    }
}

fn budgets_text(r: &Row) -> String {
    r.budgets
        .iter()
        .map(|b| {
            let stat = match b.stat {
                Stat::P50 => "p50",
                Stat::P99 => "p99",
                Stat::Max => "max",
            };
            let op = if b.at_most { "≤" } else { "≥" };
            format!("{stat} {op} {}", number(b.limit, r.unit))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A value with its unit, at a precision that reads well.
fn number(v: f64, unit: &str) -> String {
    let digits = if v == v.trunc() && v.abs() < 1e6 {
        0
    } else if v.abs() < 10.0 {
        if unit == "s" {
            3
        } else {
            1
        }
    } else {
        0
    };
    let text = format!("{v:.digits$}");
    match unit {
        "" => text,
        "×" => format!("{text}×"),
        u => format!("{text} {u}"),
    }
}

/// Runs every figure group, each on a world of its own; a group that fails
/// leaves a row saying so and the others still run.
pub fn run(opts: &Options, progress: &mut dyn FnMut(&str)) -> Table {
    let mut table = Table::default();
    type Group = fn(&Options, &mut Table, &mut dyn FnMut(&str)) -> io::Result<()>;
    let groups: [(&'static str, Group); 5] = [
        ("hotplug", hotplug::run),
        ("address", address::run),
        ("scale", scale::run),
        ("idle", idle::run),
        ("churn", idle::churn),
    ];
    for (name, group) in groups {
        if !opts.only.is_empty() && !opts.only.iter().any(|o| o == name) {
            continue;
        }
        if crate::scenarios::INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        let started = Instant::now();
        progress(&format!("{name}: running"));
        if let Err(e) = group(opts, &mut table, progress) {
            table.failed(name, &format!("{name} group"), e.to_string());
            progress(&format!("{name}: failed: {e}"));
        }
        progress(&format!(
            "{name}: done in {:.1} s",
            started.elapsed().as_secs_f64()
        ));
    }
    table
}

/// The machine and build a run was made on, for the document.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| format!("{:.1} GiB", kb as f64 / (1024.0 * 1024.0)))
        .unwrap_or_default();
    let build = if cfg!(debug_assertions) {
        "debug build"
    } else {
        "release build"
    };
    format!("{cores} cores ({cpu}), {memory} RAM, Linux {kernel}, {build}")
}

/// A command that runs `program` inside `ns`, joined with `setns` in the
/// child just before it executes: no `ip netns exec` process in between,
/// so a one-shot command's wall time is its own.
pub fn command_in(ns: &Netns, program: impl AsRef<std::ffi::OsStr>) -> io::Result<Command> {
    let fd = File::open(ns.path())
        .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", ns.path().display())))?;
    let mut cmd = Command::new(program);
    let raw = fd.as_raw_fd();
    // SAFETY: between fork and exec the child only makes the setns(2)
    // system call on a descriptor the parent keeps open (moved into the
    // closure); no allocation, no locks.
    unsafe {
        cmd.pre_exec(move || {
            let _keep = &fd;
            if nix::libc::setns(raw, nix::libc::CLONE_NEWNET) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(cmd)
}

/// Runs `cmd` to completion; its wall time and output, or an error naming
/// it and carrying its stderr when it fails.
pub fn timed(mut cmd: Command, what: &str) -> io::Result<(Duration, String)> {
    cmd.stdin(std::process::Stdio::null());
    let t0 = Instant::now();
    let out = cmd
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("{what}: {e}")))?;
    let took = t0.elapsed();
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok((took, String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// Starts connection attempts from `from` to `dst` every millisecond, each
/// on a new socket, and returns when the first one is answered. Runs on a
/// thread of its own inside `from`, so the caller changes the world
/// meanwhile (from another thread).
pub fn first_answer(from: &Netns, dst: SocketAddr, give_up: Duration) -> io::Result<Instant> {
    from.run_in(move || -> io::Result<Instant> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let end = Instant::now() + give_up;
            let mut tick = tokio::time::interval(PROBE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    Some(at) = rx.recv() => return Ok(at),
                    _ = tick.tick() => {
                        if Instant::now() > end {
                            return Err(io::Error::new(
                                io::ErrorKind::TimedOut,
                                format!("no connection to {dst} answered within {give_up:?}"),
                            ));
                        }
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            let attempt = tokio::net::TcpStream::connect(dst);
                            if let Ok(Ok(_)) = tokio::time::timeout(ATTEMPT, attempt).await {
                                let _ = tx.send(Instant::now());
                            }
                        });
                    }
                }
            }
        })
    })?
}

/// Where the agent keeps its state for `ns` (the rule of
/// `state::run_dir`, from outside), to remove after a run: the kernel
/// reuses namespace inode numbers.
pub fn state_dir(ns: &Netns) -> io::Result<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(ns.path())?.ino();
    let root = std::env::var_os("ENIROUTE_RUN_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/eniroute"));
    Ok(root.join(format!("net-{ino}")))
}

/// Removes the agent's state for `ns` when dropped (before the namespace
/// goes: declare it after the namespace's owner).
pub struct StateGuard(Option<PathBuf>);

impl StateGuard {
    pub fn new(ns: &Netns) -> StateGuard {
        StateGuard(state_dir(ns).ok())
    }
}

impl Drop for StateGuard {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The daemon's `reconcile: C changes, W writes, M netlink messages in T`
/// debug lines, in order: (changes, writes, messages, milliseconds).
pub fn reconcile_lines(log: &str) -> Vec<(u64, u64, u64, f64)> {
    log.lines()
        .filter_map(|l| {
            let rest = &l[l.find("reconcile: ")? + "reconcile: ".len()..];
            let words: Vec<&str> = rest.split_whitespace().collect();
            // C changes, W writes, M netlink messages in T
            if words.len() < 9 || words[1] != "changes," || words[3] != "writes," {
                return None;
            }
            let n = |w: &str| w.trim_end_matches(',').parse::<u64>().ok();
            Some((
                n(words[0])?,
                n(words[2])?,
                n(words[4])?,
                duration_ms(words[8])?,
            ))
        })
        .collect()
}

/// A `Debug`-printed `Duration` (`1.234567ms`, `850µs`, `2.5s`) in ms.
pub fn duration_ms(text: &str) -> Option<f64> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = text.split_at(split);
    let v: f64 = num.parse().ok()?;
    Some(match unit {
        "s" => v * 1000.0,
        "ms" => v,
        "µs" | "us" => v / 1000.0,
        "ns" => v / 1e6,
        _ => return None,
    })
}

/// Writes `text` to `path`, naming it on failure.
pub fn write_file(path: &Path, text: &str) -> io::Result<()> {
    std::fs::write(path, text)
        .map_err(|e| io::Error::new(e.kind(), format!("write {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(5.0));
        assert_eq!(percentile(&v, 0.99), Some(10.0));
        assert_eq!(percentile(&v, 1.0), Some(10.0));
        assert_eq!(percentile(&[3.0], 0.5), Some(3.0));
        assert_eq!(percentile(&[], 0.5), None);
        let hundred: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(percentile(&hundred, 0.99), Some(198.0));
    }

    #[test]
    fn reconcile_lines_are_read_from_the_daemon_log() {
        let log = "2026 DEBUG eniroute::daemon: metadata read in 1.2ms\n\
                   2026 DEBUG eniroute::daemon: reconcile: 812 changes, 812 writes, 830 netlink messages in 41.5ms\n\
                   2026 DEBUG eniroute::daemon: reconcile: 0 changes, 0 writes, 5 netlink messages in 850µs\n";
        assert_eq!(
            reconcile_lines(log),
            vec![(812, 812, 830, 41.5), (0, 0, 5, 0.85)]
        );
    }

    #[test]
    fn budgets_judge_their_statistic() {
        let row = Row::new("g", "f", "ms")
            .samples(vec![10.0, 12.0, 40.0])
            .budget(Budget::at_most(Stat::P50, 15.0));
        assert_eq!(row.met(), Some(true));
        let row = row.budget(Budget::at_most(Stat::P99, 30.0));
        assert_eq!(row.met(), Some(false));
        let ratio = Row::new("g", "r", "×")
            .samples(vec![60.0])
            .budget(Budget::at_least(Stat::P50, 50.0));
        assert_eq!(ratio.met(), Some(true));
        assert_eq!(Row::new("g", "x", "ms").met(), None);
    }

    #[test]
    fn durations_parse_in_every_unit() {
        assert_eq!(duration_ms("1.5s"), Some(1500.0));
        assert_eq!(duration_ms("2ms"), Some(2.0));
        assert_eq!(duration_ms("500µs"), Some(0.5));
        assert_eq!(duration_ms("x"), None);
    }
}
