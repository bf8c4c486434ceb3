//! Network namespaces as RAII guards, built with iproute2.
//!
//! Namespaces are named `er<pid>-<n>-<role>`: the pid keeps concurrently
//! running test binaries and lab runs apart, the process-wide counter keeps
//! threads of one process apart, and the role makes `ip netns list` readable.
//! The pid also lets [`cleanup_stale`] recognise namespaces whose creator died
//! without running its destructors (SIGKILL, abort).

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sched::{setns, CloneFlags};

use eniroute::values::Mac;

/// Where `ip netns add` bind-mounts namespaces.
const NETNS_DIR: &str = "/run/netns";
/// Prefix of every namespace the lab creates.
const PREFIX: &str = "er";
/// Roles are cut to this length so names stay short in `ip netns list`.
const MAX_ROLE: usize = 12;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A named network namespace that is deleted when the guard is dropped,
/// including during a panic unwind.
///
/// Deleting the name does not tear down links or sockets still held by
/// running threads or processes: the kernel frees the namespace once its last
/// reference is gone. Veth pairs with one end inside vanish with it.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a fresh namespace for `role` (e.g. `router`, `admin`) with `lo` up.
    pub fn create(role: &str) -> io::Result<Netns> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let role: String = role
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
            .take(MAX_ROLE)
            .collect();
        let name = format!("{PREFIX}{}-{n}-{role}", std::process::id());
        run_ip(["netns", "add", name.as_str()])?;
        // From here on the guard owns the name, so a failure below still deletes it.
        let ns = Netns { name };
        ns.ip(["link", "set", "dev", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind mount that pins the namespace; opening it yields a namespace fd.
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    /// A command that runs `program` inside the namespace
    /// (`ip netns exec NAME program`), to be given arguments and spawned, e.g.
    /// the agent under test. A child process is used rather than `setns` in
    /// this process because `setns` moves only the calling thread.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.name.as_str()]).arg(program);
        cmd
    }

    /// Runs a program with its arguments inside the namespace and returns its
    /// output whatever its exit status; only a failure to start it is an error.
    pub fn exec<I, S>(&self, args: I) -> io::Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut args = args.into_iter();
        let Some(program) = args.next() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("exec in netns {}: no program given", self.name),
            ));
        };
        let mut cmd = self.command(program);
        cmd.args(args);
        cmd.output()
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", describe(&cmd))))
    }

    /// Runs `ip -n NAME ARGS…` and returns its stdout; a non-zero exit is an
    /// error naming the command and carrying its stderr.
    pub fn ip<I, S>(&self, args: I) -> io::Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new("ip");
        cmd.args(["-n", self.name.as_str()]).args(args);
        run(cmd)
    }

    /// Sets a sysctl of this namespace, e.g. `net.ipv4.conf.eth1.rp_filter`.
    ///
    /// Dots separate components, so interface names containing a dot cannot be
    /// addressed this way (the lab never makes such names).
    pub fn sysctl(&self, key: &str, value: &str) -> io::Result<()> {
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        // /proc/sys/net resolves to the network namespace of the thread that
        // opens the file, so writing from a thread inside the namespace sets
        // the namespace's value without spawning a process.
        self.run_in(|| std::fs::write(&path, value))?.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("sysctl {key}={value} in netns {}: {e}", self.name),
            )
        })
    }

    /// Runs `f` on a new thread that has joined this namespace and returns its
    /// result. A panic in `f` is propagated.
    ///
    /// `setns` changes the namespace of the calling thread only, which is why
    /// a dedicated thread is used: the caller's thread, and any runtime's
    /// worker threads, stay where they are. Sockets created by `f` belong to
    /// this namespace for their whole life, whichever thread uses them later.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        let path = self.path();
        let name = self.name.as_str();
        std::thread::scope(|s| {
            let handle = s.spawn(move || -> io::Result<T> {
                let fd = File::open(&path).map_err(|e| {
                    io::Error::new(e.kind(), format!("open {}: {e}", path.display()))
                })?;
                setns(&fd, CloneFlags::CLONE_NEWNET).map_err(|errno| {
                    let e = io::Error::from(errno);
                    io::Error::new(e.kind(), format!("setns into netns {name}: {e}"))
                })?;
                drop(fd);
                Ok(f())
            });
            match handle.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // The agent keeps per-namespace state (address records, DHCP
        // leases, claims) in a directory named by the namespace's inode,
        // and the kernel hands a freed inode to the next namespace: a later
        // test's instance must not inherit this one's state.
        if let Ok(meta) = std::fs::metadata(self.path()) {
            use std::os::unix::fs::MetadataExt;
            let root = std::env::var_os("ENIROUTE_RUN_ROOT")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(eniroute::state::RUN_ROOT));
            let _ = std::fs::remove_dir_all(root.join(format!("net-{}", meta.ino())));
        }
        if let Err(e) = run_ip(["netns", "del", self.name.as_str()]) {
            tracing::warn!(netns = %self.name, error = %e, "could not delete network namespace");
        }
    }
}

/// Creates a veth pair with one end in each namespace and both ends up.
///
/// The pair is created from inside `a_ns` with the peer placed directly in
/// `b_ns`, so neither name ever exists in the caller's namespace, where it
/// could collide with a concurrently running lab.
pub fn veth(
    a_ns: &Netns,
    a_name: &str,
    a_mac: Option<Mac>,
    b_ns: &Netns,
    b_name: &str,
) -> io::Result<()> {
    let mac = a_mac.map(|m| m.to_string());
    let mut args = vec!["link", "add", "name", a_name];
    if let Some(mac) = &mac {
        args.extend(["address", mac.as_str()]);
    }
    args.extend(["type", "veth", "peer", "name", b_name, "netns", b_ns.name()]);
    a_ns.ip(&args)?;
    a_ns.ip(["link", "set", "dev", a_name, "up"])?;
    b_ns.ip(["link", "set", "dev", b_name, "up"])?;
    Ok(())
}

/// Deletes lab namespaces whose creating process no longer exists, and
/// returns their names.
///
/// A process killed without unwinding leaves its namespaces behind. This
/// assumes `/run/netns` is shared only by processes of one pid namespace, as
/// on a build machine or a host running the lab; a namespace of a live
/// process is never touched.
pub fn cleanup_stale() -> io::Result<Vec<String>> {
    let entries = match std::fs::read_dir(NETNS_DIR) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io::Error::new(e.kind(), format!("read {NETNS_DIR}: {e}"))),
    };
    let mut deleted = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let Some(pid) = creator_pid(&name) else {
            continue;
        };
        if Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        run_ip(["netns", "del", name.as_str()])?;
        deleted.push(name);
    }
    Ok(deleted)
}

/// The pid encoded in a lab namespace name, `None` for foreign names.
fn creator_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, rest) = rest.split_once('-')?;
    let (n, _role) = rest.split_once('-')?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Runs `ip ARGS…` in the caller's namespace.
fn run_ip<I, S>(args: I) -> io::Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new("ip");
    cmd.args(args);
    run(cmd)
}

/// Runs a command to completion; a non-zero exit becomes an error that names
/// the command and carries its stderr.
pub(crate) fn run(mut cmd: Command) -> io::Result<String> {
    let output = cmd
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", describe(&cmd))))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(io::Error::other(format!(
            "{} failed ({}): {}",
            describe(&cmd),
            output.status,
            stderr.trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creator_pid_reads_only_lab_names() {
        assert_eq!(creator_pid("er1234-0-router"), Some(1234));
        assert_eq!(creator_pid("er1234-17-"), Some(1234));
        assert_eq!(creator_pid("er12-3-ha-standby"), Some(12));
        assert_eq!(creator_pid("er-0-router"), None);
        assert_eq!(creator_pid("erx12-0-router"), None);
        assert_eq!(creator_pid("error-log"), None);
        assert_eq!(creator_pid("er12-router"), None);
        assert_eq!(creator_pid("cni-1234-0-x"), None);
    }
}
