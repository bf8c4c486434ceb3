//! The real agent as a child process inside an instance namespace. `setns`
//! moves only the calling thread, which a multi-threaded runtime makes
//! unreliable, so the agent runs as `ip netns exec NS eniroute …`.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::netns::Netns;

/// Where the `eniroute` binary is: `$ENIROUTE_BIN`, else beside the running
/// executable (cargo puts all of a package's binaries in one directory).
pub fn binary() -> io::Result<PathBuf> {
    if let Some(p) = std::env::var_os("ENIROUTE_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let mut dirs = Vec::new();
    if let Some(dir) = exe.parent() {
        dirs.push(dir.to_path_buf());
        // Test executables live one level down, in target/<profile>/deps.
        if let Some(up) = dir.parent() {
            dirs.push(up.to_path_buf());
        }
    }
    dirs.into_iter()
        .map(|d| d.join("eniroute"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "eniroute binary not found beside {} (build it, or set ENIROUTE_BIN)",
                    exe.display()
                ),
            )
        })
}

/// Runs one `eniroute` command to completion inside `ns`.
pub fn run(bin: &Path, ns: &Netns, endpoint: &str, args: &[&str]) -> io::Result<Output> {
    ns.command(bin)
        .arg("--imds-endpoint")
        .arg(endpoint)
        .args(args)
        .stdin(Stdio::null())
        .output()
}

/// A running `eniroute daemon`; stopped (SIGTERM) when dropped.
pub struct Daemon {
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    pub fn start(
        bin: &Path,
        ns: &Netns,
        endpoint: &str,
        config: Option<&Path>,
    ) -> io::Result<Daemon> {
        Daemon::spawn(bin, ns, Some(endpoint), config, &[])
    }

    /// [`Daemon::start`] with extra environment variables.
    pub fn start_with_env(
        bin: &Path,
        ns: &Netns,
        endpoint: &str,
        config: Option<&Path>,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> io::Result<Daemon> {
        Daemon::spawn(bin, ns, Some(endpoint), config, env)
    }

    /// Starts the daemon without naming a metadata endpoint, so it picks
    /// one itself, as on an instance with no configuration.
    pub fn start_finding_metadata(bin: &Path, ns: &Netns, config: &Path) -> io::Result<Daemon> {
        Daemon::spawn(bin, ns, None, Some(config), &[])
    }

    fn spawn(
        bin: &Path,
        ns: &Netns,
        endpoint: Option<&str>,
        config: Option<&Path>,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> io::Result<Daemon> {
        let log = std::env::temp_dir().join(format!("{}-daemon.log", ns.name()));
        let file = std::fs::File::create(&log)?;
        let mut cmd = ns.command(bin);
        if let Some(endpoint) = endpoint {
            cmd.arg("--imds-endpoint").arg(endpoint);
        }
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        cmd.envs(env.iter().copied());
        cmd.arg("daemon")
            .env("RUST_LOG", "eniroute=debug")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        let child = cmd.spawn()?;
        Ok(Daemon {
            child: Some(child),
            log,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// What the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Stops with SIGTERM (the agent exits 0 and leaves routing in place)
    /// and returns the exit code.
    pub fn stop(&mut self) -> io::Result<Option<i32>> {
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        // `ip netns exec` execs the agent, so the child's pid is the agent.
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status.code());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Ok(child.wait()?.code());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills without a chance to clean up, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.stop();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Polls `check` every 5 ms until it holds or `timeout` passes; returns how
/// long it took.
pub fn wait_for(timeout: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if check() {
            return Some(start.elapsed());
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
