//! A real Debian 12 system, booted with systemd as PID 1 by systemd-nspawn
//! inside a lab instance namespace: what the real-system test installs the
//! packages in. Its root filesystem comes from Debian's packages
//! (mmdebstrap) and is cached under the workspace's target directory; each
//! boot runs on a copy of its own, so runs never see each other's changes.
//!
//! Everything here is started as a child process and ended by its pid; the
//! guest's network is only ever the namespace it is given.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::netns::Netns;

/// What the guest is built from. The cache is keyed by all of it, so a
/// change here builds a new root filesystem.
pub const SUITE: &str = "bookworm";
pub const VARIANT: &str = "minbase";
/// systemd-networkd is part of `systemd`; procps gives `ps` for diagnostics.
pub const PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "iproute2",
    "dbus",
    "udev",
    "procps",
];

/// The commands the real-system test needs on the host.
pub const HOST_TOOLS: &[&str] = &[
    "systemd-nspawn",
    "mmdebstrap",
    "dnsmasq",
    "nsenter",
    "dpkg-deb",
    "strip",
];

/// Timers of a stock Debian image that would start downloads or disk scans
/// during a test; masked in every guest.
const QUIET_UNITS: &[&str] = &[
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
];

/// The guest's PATH: the guest's own binaries, never the host's.
const GUEST_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Whether `tool` is on the PATH.
pub fn have(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            fs::metadata(dir.join(tool)).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
        })
    })
}

/// Why a root filesystem could not be had.
#[derive(Debug)]
pub enum RootfsError {
    /// Debian's mirrors could not be reached and nothing is cached: the
    /// test cannot run here.
    Offline(String),
    Failed(io::Error),
}

impl From<io::Error> for RootfsError {
    fn from(e: io::Error) -> Self {
        RootfsError::Failed(e)
    }
}

/// The cache directory's name for the current recipe. No ',' or ':' in
/// it: the path goes into overlayfs mount options.
pub fn cache_key() -> String {
    format!("rootfs-{SUITE}-{VARIANT}-{}", PACKAGES.join("_"))
}

/// The cached root filesystem under `cache`, built first if it is missing.
///
/// It is built into a directory of its own and renamed into place once
/// complete, so an interrupted build is never used and two concurrent
/// builds cannot mix: the second rename fails and its copy is dropped.
pub fn rootfs(cache: &Path) -> Result<PathBuf, RootfsError> {
    rootfs_in(cache, None)
}

/// As [`rootfs`], building inside `netns` if given (a namespace without a
/// route to Debian's mirrors shows what happens offline).
pub fn rootfs_in(cache: &Path, netns: Option<&Netns>) -> Result<PathBuf, RootfsError> {
    let done = cache.join(cache_key());
    if done.join("usr/lib/systemd/systemd").is_file() {
        return Ok(done);
    }
    fs::create_dir_all(cache)?;
    remove_stale(cache);
    let tmp = cache.join(format!(".build-{}-{}", std::process::id(), next()));
    let log = tmp.with_extension("log");
    let _cleanup = RemoveOnDrop(vec![tmp.clone(), log.clone()]);
    let logfile = fs::File::create(&log)?;
    let mut cmd = match netns {
        Some(ns) => ns.command("mmdebstrap"),
        None => Command::new("mmdebstrap"),
    };
    let status = cmd
        .arg(format!("--variant={VARIANT}"))
        .arg(format!("--include={}", PACKAGES.join(",")))
        .arg(SUITE)
        .arg(&tmp)
        .stdin(Stdio::null())
        .stdout(logfile.try_clone()?)
        .stderr(logfile)
        .status()
        .map_err(|e| io::Error::new(e.kind(), format!("mmdebstrap: {e}")))?;
    if !status.success() {
        let text = fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        let tail = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
        if offline(&text) {
            return Err(RootfsError::Offline(format!(
                "mmdebstrap could not reach Debian's mirrors and no root filesystem is cached in {}:\n{tail}",
                cache.display()
            )));
        }
        return Err(RootfsError::Failed(io::Error::other(format!(
            "mmdebstrap {SUITE} failed ({status}):\n{tail}"
        ))));
    }
    match fs::rename(&tmp, &done) {
        Ok(()) => {}
        // Another run finished the same build first; its copy is as good.
        Err(_) if done.join("usr/lib/systemd/systemd").is_file() => {}
        Err(e) => {
            return Err(RootfsError::Failed(io::Error::new(
                e.kind(),
                format!("rename {} to {}: {e}", tmp.display(), done.display()),
            )))
        }
    }
    Ok(done)
}

/// apt's words for a mirror it cannot reach.
fn offline(log: &str) -> bool {
    [
        "Temporary failure resolving",
        "Could not resolve",
        "Could not connect",
        "Network is unreachable",
        "Connection timed out",
        "Failed to fetch",
    ]
    .iter()
    .any(|m| log.contains(m))
}

/// Removes builds and copies left by runs that died without cleaning up,
/// and root filesystems of older recipes. A directory whose process is
/// alive is never touched.
fn remove_stale(cache: &Path) {
    let Ok(entries) = fs::read_dir(cache) else {
        return;
    };
    let current = cache_key();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let stale = if let Some(rest) = name
            .strip_prefix(".build-")
            .or_else(|| name.strip_prefix("run-"))
        {
            let pid = rest.split(['-', '.']).next().unwrap_or("");
            !pid.is_empty() && !Path::new("/proc").join(pid).exists()
        } else {
            name.starts_with("rootfs-") && name != current
        };
        if stale {
            let path = entry.path();
            end_recorded(&path);
            let _ = fs::remove_dir_all(&path).or_else(|_| fs::remove_file(&path));
        }
    }
}

/// Records that the run owning `dir` started process `pid` (`NAME.pid`), so
/// that the next run can end it if this one dies without unwinding.
pub fn record_pid(dir: &Path, name: &str, pid: u32) -> io::Result<()> {
    fs::write(dir.join(format!("{name}.pid")), pid.to_string())
}

/// Ends the processes a dead run recorded under `dir` (see [`record_pid`]),
/// each only if its command line still names a file under `dir`: that is
/// the process the run started, not an unrelated one that reused the pid.
fn end_recorded(dir: &Path) {
    let mut files = Vec::new();
    for d in [dir.to_path_buf()].into_iter().chain(
        fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir()),
    ) {
        files.extend(
            fs::read_dir(&d)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "pid")),
        );
    }
    let needle = dir.to_string_lossy().into_owned();
    for file in files {
        let Some(pid) = fs::read_to_string(&file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        else {
            continue;
        };
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if !String::from_utf8_lossy(&cmdline).contains(&needle) {
            continue;
        }
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn next() -> u32 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// Paths deleted (recursively) when dropped, also during a panic unwind.
pub struct RemoveOnDrop(pub Vec<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = fs::remove_dir_all(p).or_else(|_| fs::remove_file(p));
        }
    }
}

/// A directory of one test run under the cache, `run-<pid>-<n>`, removed
/// when dropped (and by the next run if this process dies first).
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    pub fn create(cache: &Path) -> io::Result<RunDir> {
        fs::create_dir_all(cache)?;
        remove_stale(cache);
        let path = cache.join(format!("run-{}-{}", std::process::id(), next()));
        fs::create_dir(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("mkdir {}: {e}", path.display())))?;
        Ok(RunDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// What to boot: the cached root filesystem as the read-only lower layer of
/// an overlay whose upper layer is a tmpfs (`--volatile=overlay`), so no
/// run changes the cache or sees another run's changes, and nothing is
/// copied. The guest the test describes is made with bind mounts and
/// systemd's command line: `network` (a systemd-networkd `.network` file)
/// as `/etc/systemd/network/80-ec2.network`, systemd-networkd started,
/// the quiet units masked, a hostname, no DNS.
pub struct Boot<'a> {
    pub image: &'a Path,
    pub ns: &'a Netns,
    /// Unique among running guests (systemd-nspawn keeps state by it).
    pub machine: &'a str,
    /// This run's directory: the console log and the bound files go here.
    /// No ',' or ':' in it (bind mount syntax).
    pub dir: &'a Path,
    pub network: &'a str,
    /// More host directories, bound read-only at the guest paths given.
    pub binds: &'a [(&'a Path, &'a str)],
}

impl Boot<'_> {
    fn args(&self) -> io::Result<Vec<String>> {
        let etc = self.dir.join("etc");
        let network = etc.join("network");
        fs::create_dir_all(&network)?;
        fs::write(network.join("80-ec2.network"), self.network)?;
        fs::write(etc.join("hostname"), "eniroute-guest\n")?;
        // The build leaves the host's resolver in; the guest has no DNS.
        fs::write(etc.join("resolv.conf"), "")?;
        let mut binds = vec![
            (network, "/etc/systemd/network"),
            (etc.join("hostname"), "/etc/hostname"),
            (etc.join("resolv.conf"), "/etc/resolv.conf"),
        ];
        binds.extend(self.binds.iter().map(|(h, g)| (h.to_path_buf(), *g)));
        let mut args = vec!["--volatile=overlay".to_string()];
        for (host, guest) in binds {
            args.push(format!("--bind-ro={}:{guest}", host.display()));
        }
        args.push("-D".into());
        args.push(self.image.display().to_string());
        // Arguments after the directory go to the guest's systemd, which
        // reads them as its kernel command line.
        args.push("--".into());
        args.push("systemd.wants=systemd-networkd.service".into());
        args.extend(QUIET_UNITS.iter().map(|u| format!("systemd.mask={u}")));
        Ok(args)
    }
}

/// Makes the kernel send SIGTERM to the child when the thread that started
/// it dies, so a test killed without unwinding (SIGKILL, a CI timeout)
/// still ends what it started: systemd-nspawn halts its guest on SIGTERM.
pub fn stop_with_parent(cmd: &mut Command) {
    // SAFETY: prctl(2) is async-signal-safe and touches no memory of the
    // parent; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(io::Error::from));
    }
}

/// A booted guest: `systemd-nspawn --boot` in a network namespace. Shut down
/// (and, failing that, killed by pid) when dropped.
pub struct Guest {
    nspawn: Option<Child>,
    /// The guest's PID 1, as the host sees it.
    init: u32,
    log: PathBuf,
}

impl Guest {
    /// Boots `root` with systemd as PID 1 in `ns`, the console going to
    /// `log`, and waits until the guest has finished booting.
    pub fn boot(spec: &Boot, timeout: Duration) -> io::Result<Guest> {
        let log = spec.dir.join("console.log");
        let file = fs::File::create(&log)?;
        let mut cmd = Command::new("systemd-nspawn");
        stop_with_parent(&mut cmd);
        let nspawn = cmd
            .arg("--boot")
            .arg("--register=no")
            .arg("--keep-unit")
            // Not granted by default; systemd-networkd and eniroute need it,
            // and the namespace is the test's own.
            .arg("--capability=CAP_NET_ADMIN")
            .arg(format!(
                "--network-namespace-path={}",
                spec.ns.path().display()
            ))
            .arg(format!("--machine={}", spec.machine))
            // Leave the host's journal, resolver and clock settings alone.
            .arg("--link-journal=no")
            .arg("--resolv-conf=off")
            .arg("--timezone=off")
            .arg("--console=read-only")
            .args(spec.args()?)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("systemd-nspawn: {e}")))?;
        let nspawn_pid = nspawn.id();
        let mut guest = Guest {
            nspawn: Some(nspawn),
            init: 0,
            log,
        };
        record_pid(spec.dir, "nspawn", nspawn_pid)?;
        let deadline = Instant::now() + timeout;
        guest.init = loop {
            // Until it has exec'd systemd, its mounts are not the guest's yet.
            if let Some(pid) = child_in_other_pidns(nspawn_pid) {
                let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                if comm.trim() == "systemd" {
                    break pid;
                }
            }
            if guest.exited() || Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "systemd-nspawn started no guest:\n{}",
                    guest.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // Until PID 1 listens on its socket, systemctl fails; retry.
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let out = guest.run_timeout(&["systemctl", "is-system-running", "--wait"], left)?;
            let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if state == "running" || state == "degraded" {
                return Ok(guest);
            }
            if guest.exited() || Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "guest did not finish booting within {timeout:?} (state {state:?}):\n{}",
                    guest.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The guest's PID 1 as the host sees it (`nsenter -t`).
    pub fn pid(&self) -> u32 {
        self.init
    }

    /// The console and systemd-nspawn's own messages so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn exited(&mut self) -> bool {
        !matches!(self.nspawn.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    fn command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg("-t")
            .arg(self.init.to_string())
            .arg("-a")
            .arg("--")
            .args(args)
            .env_clear()
            .env("PATH", GUEST_PATH)
            .env("LANG", "C")
            .env("SYSTEMD_PAGER", "")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs a command inside the guest (all its namespaces, its root) and
    /// returns its output whatever its exit status.
    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> io::Result<Output> {
        self.run_timeout(args, Duration::from_secs(120))
    }

    /// As [`Self::run`], killing the command (by pid) after `timeout`.
    pub fn run_timeout<S: AsRef<OsStr>>(
        &self,
        args: &[S],
        timeout: Duration,
    ) -> io::Result<Output> {
        let mut cmd = self.command(args);
        let describe = || {
            args.iter()
                .map(|a| a.as_ref().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        };
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("nsenter {}: {e}", describe())))?;
        wait_output(child, timeout)
            .map_err(|e| io::Error::new(e.kind(), format!("in the guest: {}: {e}", describe())))
    }

    /// Runs a shell script inside the guest; its output whatever its status.
    pub fn sh(&self, script: &str) -> io::Result<Output> {
        self.run(&["sh", "-c", script])
    }

    /// Powers the guest off (SIGTERM to systemd-nspawn makes it halt the
    /// guest cleanly), then kills what is left by pid.
    pub fn shutdown(&mut self) -> io::Result<()> {
        let Some(mut nspawn) = self.nspawn.take() else {
            return Ok(());
        };
        let _ = kill(Pid::from_raw(nspawn.id() as i32), Signal::SIGTERM);
        if wait_exit(&mut nspawn, Duration::from_secs(20))? {
            return Ok(());
        }
        // Killing PID 1 of the guest's pid namespace ends every process in it.
        if self.init != 0 {
            let _ = kill(Pid::from_raw(self.init as i32), Signal::SIGKILL);
        }
        if wait_exit(&mut nspawn, Duration::from_secs(10))? {
            return Ok(());
        }
        let _ = nspawn.kill();
        nspawn.wait()?;
        Ok(())
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

fn wait_exit(child: &mut Child, timeout: Duration) -> io::Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait()?.is_some() {
            return Ok(true);
        }
        if Instant::now() > deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Collects a child's output, killing it after `timeout`.
fn wait_output(mut child: Child, timeout: Duration) -> io::Result<Output> {
    use std::io::Read as _;
    // Readers on threads, so a chatty command cannot block on a full pipe
    // while this thread waits for it.
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_end(&mut buf);
        }
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_end(&mut buf);
        }
        buf
    });
    let status = if wait_exit(&mut child, timeout)? {
        child.wait()?
    } else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("still running after {timeout:?}"),
        ));
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// The child of `parent` that lives in another pid namespace: the guest's
/// PID 1 (systemd-nspawn forks it through an intermediate process that exits).
fn child_in_other_pidns(parent: u32) -> Option<u32> {
    let own = fs::metadata("/proc/self/ns/pid").ok()?.ino();
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The command name may hold spaces and parentheses; fields resume
        // after the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let ppid = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if ppid != Some(parent) {
            continue;
        }
        let ns = fs::metadata(format!("/proc/{pid}/ns/pid")).map(|m| m.ino());
        if ns.is_ok_and(|ino| ino != own) {
            return Some(pid);
        }
    }
    None
}
