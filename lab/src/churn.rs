//! What the daemon costs on a busy router: a simulated instance whose
//! kernel holds many routes that are not the agent's (a BGP, VPN or
//! Kubernetes host) in a table of their own, one of them changing every
//! 50 ms, while the daemon manages the instance's ENIs. Measured from
//! outside the daemon: its CPU time and memory from `/proc`, and how long it
//! takes to put back a rule someone deletes meanwhile.

use std::io::{self, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::agent::{wait_for, Daemon};
use crate::world;
use crate::Netns;

/// The table the foreign routes live in: outside the agent's range.
const FOREIGN_TABLE: u32 = 500;
/// One foreign route changes this often.
const CHURN_EVERY: Duration = Duration::from_millis(50);
/// The rule deleted to time a repair: the management ENI's address.
const REPAIRED_FROM: &str = "10.0.2.20";
const REPAIRED_TABLE: &str = "10001";
/// How long to wait for anything the daemon should do before giving up.
const PATIENCE: Duration = Duration::from_secs(30);

/// What one measurement found.
#[derive(Debug, Clone)]
pub struct ForeignChurn {
    /// Foreign routes in the kernel.
    pub foreign_routes: usize,
    /// Foreign route changes made while measuring.
    pub changes: usize,
    /// How long the churn was measured.
    pub wall: Duration,
    /// The daemon's CPU time (user + system) over that time.
    pub cpu: Duration,
    /// Its resident memory at the end, and at its highest, in KiB.
    pub rss_kib: u64,
    pub peak_rss_kib: u64,
    /// For each deleted rule, how long until it was back.
    pub repairs: Vec<Duration>,
    /// Times the daemon re-read the whole kernel while measuring (its debug
    /// log says so each time), and how many reconciles it ran.
    pub full_reads: usize,
    pub reconciles: usize,
    /// The daemon was still running at the end.
    pub survived: bool,
    /// What the daemon logged about its first full read of the kernel
    /// (what it kept, and how long it took), if it says.
    pub first_read: Option<String>,
}

impl ForeignChurn {
    /// CPU seconds per wall-clock second: 1.0 is one core.
    pub fn cpu_share(&self) -> f64 {
        self.cpu.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
    }

    pub fn median_repair(&self) -> Option<Duration> {
        let mut r = self.repairs.clone();
        r.sort();
        r.get(r.len() / 2).copied()
    }

    pub fn max_repair(&self) -> Option<Duration> {
        self.repairs.iter().max().copied()
    }

    /// One line for people.
    pub fn summary(&self) -> String {
        let ms = |d: Option<Duration>| {
            d.map(|d| format!("{:.1} ms", d.as_secs_f64() * 1e3))
                .unwrap_or_else(|| "-".into())
        };
        format!(
            "{} foreign routes, {} changes in {:.1} s: daemon CPU {:.1}% of a core ({:.2} s), RSS {} KiB (peak {} KiB), rule repair median {} max {} over {} deletions, {} full kernel reads, {} reconciles; first read: {}",
            self.foreign_routes,
            self.changes,
            self.wall.as_secs_f64(),
            self.cpu_share() * 100.0,
            self.cpu.as_secs_f64(),
            self.rss_kib,
            self.peak_rss_kib,
            ms(self.median_repair()),
            ms(self.max_repair()),
            self.repairs.len(),
            self.full_reads,
            self.reconciles,
            self.first_read.as_deref().unwrap_or("-"),
        )
    }
}

/// Builds the management-network instance, fills a table of its own with
/// foreign routes (100,000; 20,000 when `quick`), starts the daemon, and
/// then, while one foreign route changes every 50 ms for 10 s (3 s when
/// `quick`), measures the daemon and deletes one of its rules a few times.
/// Needs root.
pub fn measure_foreign_churn(bin: &Path, quick: bool) -> io::Result<ForeignChurn> {
    let (routes, seconds, deletions) = if quick {
        (20_000, 3, 3)
    } else {
        (100_000, 10, 8)
    };
    let lab = world::management_network()?;
    let ns: &Netns = &lab.inst.ns;
    install_foreign_routes(ns, routes)?;

    let mut daemon = Daemon::start(bin, ns, &lab.inst.endpoint, None)?;
    let pid = daemon
        .pid()
        .ok_or_else(|| io::Error::other("the daemon did not start"))?;
    if wait_for(PATIENCE, || daemon.log().contains("ready: ")).is_none() {
        return Err(io::Error::other(format!(
            "the daemon never became ready; its log:\n{}",
            daemon.log()
        )));
    }
    // Settled: the start-up reads and the first reconciles are not what is
    // measured.
    std::thread::sleep(Duration::from_millis(500));
    let log_before = daemon.log();

    let churn = Churn::start(ns)?;
    let start = Instant::now();
    let cpu0 = cpu_time(pid)?;
    let mut peak = 0;
    let mut repairs = Vec::new();
    let wall = Duration::from_secs(seconds);
    let gap = wall / (deletions + 1);
    let mut next_deletion = start + gap;
    while start.elapsed() < wall {
        peak = peak.max(rss_kib(pid).0);
        if Instant::now() >= next_deletion && repairs.len() < deletions as usize {
            repairs.push(time_repair(ns)?);
            next_deletion += gap;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let wall = start.elapsed();
    let cpu = cpu_time(pid)?.saturating_sub(cpu0);
    let (rss, hwm) = rss_kib(pid);
    let changes = churn.stop();
    let survived = daemon.running();
    let log = daemon.log();
    let during = log.get(log_before.len()..).unwrap_or_default();
    Ok(ForeignChurn {
        foreign_routes: routes,
        changes,
        wall,
        cpu,
        rss_kib: rss,
        peak_rss_kib: hwm.max(peak),
        repairs,
        full_reads: during.matches("re-read the kernel").count(),
        reconciles: during.matches("reconcile done").count(),
        survived,
        first_read: log
            .lines()
            .find_map(|l| l.split_once("re-read the kernel (start): "))
            .map(|(_, what)| what.to_string()),
    })
}

/// 172.16.0.0/12 as /32s through the primary ENI's router, as a routing
/// daemon would install them, in one `ip -batch`.
fn install_foreign_routes(ns: &Netns, count: usize) -> io::Result<()> {
    let path = std::env::temp_dir().join(format!("{}-foreign-routes", ns.name()));
    let mut text = String::with_capacity(count * 64);
    for i in 0..count {
        let host = 16 << 16 | i;
        text.push_str(&format!(
            "route add 172.{}.{}.{}/32 via 10.0.1.1 dev eth0 table {FOREIGN_TABLE} proto static\n",
            host >> 16,
            (host >> 8) & 0xff,
            host & 0xff
        ));
    }
    std::fs::write(&path, text)?;
    let out = Command::new("ip")
        .args(["-n", ns.name(), "-batch"])
        .arg(&path)
        .output();
    let _ = std::fs::remove_file(&path);
    let out = out?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "ip -batch of {count} routes in {}: {}",
            ns.name(),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

/// An `ip -batch` reading commands from a pipe, fed by a thread of its own:
/// one foreign route added and deleted in turn every [`CHURN_EVERY`],
/// without starting a process for each change.
struct Churn {
    child: Child,
    stop: Arc<AtomicBool>,
    feeder: Option<JoinHandle<usize>>,
}

impl Churn {
    fn start(ns: &Netns) -> io::Result<Churn> {
        let mut child = Command::new("ip")
            .args(["-n", ns.name(), "-force", "-batch", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| io::Error::other("ip -batch: no stdin"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let feeder = std::thread::spawn(move || {
            let mut changes = 0;
            let mut next = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                let verb = if changes % 2 == 0 { "add" } else { "del" };
                let line = format!(
                    "route {verb} 172.31.255.1/32 via 10.0.1.1 dev eth0 table {FOREIGN_TABLE} proto static\n"
                );
                if stdin
                    .write_all(line.as_bytes())
                    .and_then(|_| stdin.flush())
                    .is_err()
                {
                    break;
                }
                changes += 1;
                next += CHURN_EVERY;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            // Dropping stdin ends `ip -batch`.
            changes
        });
        Ok(Churn {
            child,
            stop,
            feeder: Some(feeder),
        })
    }

    /// Stops feeding (`ip` exits at the end of its input) and returns the
    /// changes made.
    fn stop(mut self) -> usize {
        self.finish()
    }

    fn finish(&mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        let changes = self.feeder.take().and_then(|f| f.join().ok()).unwrap_or(0);
        let _ = self.child.wait();
        changes
    }
}

impl Drop for Churn {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Deletes the daemon's rule for the management address and waits until it
/// is back, polling the kernel's rules directly (a rule dump is cheap).
fn time_repair(ns: &Netns) -> io::Result<Duration> {
    ns.ip([
        "rule",
        "del",
        "from",
        REPAIRED_FROM,
        "lookup",
        REPAIRED_TABLE,
    ])?;
    let t0 = Instant::now();
    let want = format!("from {REPAIRED_FROM} lookup {REPAIRED_TABLE}");
    loop {
        let rules = ns.ip(["rule"])?;
        if rules.contains(&want) {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > PATIENCE {
            return Err(io::Error::other(format!(
                "the rule {want} was not restored within {PATIENCE:?}"
            )));
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// User plus system CPU time of a process so far.
fn cpu_time(pid: u32) -> io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may contain spaces; the fields after it do not.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| io::Error::other(format!("/proc/{pid}/stat: unexpected format")))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); `rest` starts at 3.
    let ticks = |i: usize| -> io::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| io::Error::other(format!("/proc/{pid}/stat: no field {}", i + 3)))
    };
    let total = ticks(11)? + ticks(12)?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100)
        .max(1) as u64;
    Ok(Duration::from_secs_f64(total as f64 / hz as f64))
}

/// The resident set now and at its highest (VmRSS, VmHWM), in KiB; zero
/// where unreadable.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}
