//! An Amazon Linux 2023 instance as amazon-ec2-net-utils (v2) leaves it,
//! recreated in a lab instance, and the probes that watch a takeover.
//!
//! What its scripts (`lib/lib.sh`, `bin/setup-policy-routes.sh`) make
//! systemd-networkd do, per ENI on network card `c` with device number `d`
//! (T = 10000 + 100·c + d, metric M = 512 + 100·c + d):
//! - DHCP (`80-ec2.network`, `DHCP=yes`, `RouteMetric=M`): the primary
//!   address with the subnet prefix and a lease lifetime, its prefix route
//!   in main with metric M, and in main `default via <router>` and the
//!   router's host route, both protocol `dhcp`, metric M, with `src`;
//! - `eni.conf`: in table T `default via <router>` (`Gateway=_dhcp4`:
//!   protocol `dhcp`, metric M, no `src`) and the subnet route
//!   (`Destination=`: protocol `static`, scope link, metric 0); for the
//!   primary ENI too;
//! - `ec2net_policy_4.conf`, for every ENI but the primary one: a rule
//!   `from <addr> lookup T priority T` per private IPv4, protocol `static`;
//! - `ec2net_alias.conf`: every secondary IPv4 as /32 `noprefixroute`;
//! - altnames: the ENI id, and `device-number-<d>.<c>`.
//!
//! The files it writes go under a temporary root that the agent is pointed
//! at (`ENIROUTE_HOST_ROOT`): the `/run/systemd/network/70-<if>.network`
//! links and drop-ins, and, while the package counts as installed, the
//! files that give it away (`/usr/bin/setup-policy-routes` …).

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::imds_tree::EniMeta;
use crate::netns::Netns;
use crate::vpc::Eni;
use crate::world::LabInstance;

const RULE_BASE: u32 = 10000;
const METRIC_BASE: u32 = 512;

/// Files of an installed amazon-ec2-net-utils package.
pub const PACKAGE_FILES: &[&str] = &[
    "usr/bin/setup-policy-routes",
    "usr/lib/systemd/system/policy-routes@.service",
    "usr/lib/systemd/system/refresh-policy-routes@.service",
    "usr/lib/systemd/system/refresh-policy-routes@.timer",
    "usr/lib/udev/rules.d/99-vpc-policy-routes.rules",
    "usr/share/amazon-ec2-net-utils/lib.sh",
];

/// The temporary root holding the files amazon-ec2-net-utils wrote;
/// removed on drop.
#[derive(Debug)]
pub struct HostRoot {
    pub path: PathBuf,
}

impl HostRoot {
    /// Removes the package's files, as `dnf` does when the eniroute rpm
    /// obsoletes it. Its runtime drop-ins stay, as they do on a real host
    /// (its `stop` action is a no-op).
    pub fn uninstall(&self) -> io::Result<()> {
        for f in PACKAGE_FILES {
            std::fs::remove_file(self.path.join(f))?;
        }
        Ok(())
    }

    /// The runtime directory systemd-networkd reads the drop-ins from.
    pub fn networkd_runtime(&self) -> PathBuf {
        self.path.join("run/systemd/network")
    }
}

impl Drop for HostRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn table(meta: &EniMeta) -> u32 {
    RULE_BASE + 100 * meta.card + meta.device
}

fn metric(meta: &EniMeta) -> u32 {
    METRIC_BASE + 100 * meta.card + meta.device
}

/// Recreates on `inst` what amazon-ec2-net-utils and systemd-networkd leave:
/// kernel state and files (under a fresh temporary root, with the package's
/// own files when `installed`). The instance's first ENI is the primary one;
/// the lab's stand-in for its DHCP configuration is replaced by networkd's.
pub fn leave_state(inst: &LabInstance, installed: bool) -> io::Result<HostRoot> {
    let root = HostRoot {
        path: std::env::temp_dir().join(format!("eniroute-al2023-{}", inst.ns.name())),
    };
    let _ = std::fs::remove_dir_all(&root.path);
    std::fs::create_dir_all(root.networkd_runtime())?;
    let ns: &Netns = &inst.ns;
    for (i, (eni, meta)) in inst.eni_meta().enumerate() {
        let primary_eni = i == 0;
        let dev = eni.name();
        let (t, m) = (table(meta), metric(meta));
        let (t, m) = (t.to_string(), m.to_string());
        let router = eni.router().to_string();
        let primary = eni.primary().to_string();
        let with_prefix = format!("{}/{}", eni.primary(), eni.subnet().prefix_len());
        if primary_eni {
            // Undo the lab's plain DHCP stand-in: networkd's carries metrics,
            // protocols and a lease lifetime.
            let _ = ns.ip(["route", "del", "default", "dev", dev]);
            ns.ip(["addr", "del", &with_prefix, "dev", dev])?;
        }
        ns.ip([
            "addr",
            "add",
            &with_prefix,
            "dev",
            dev,
            "metric",
            &m,
            "valid_lft",
            "3600",
            "preferred_lft",
            "3600",
        ])?;
        for args in [
            vec![
                "route", "add", "default", "via", &router, "dev", dev, "proto", "dhcp", "src",
                &primary, "metric", &m,
            ],
            vec![
                "route", "add", &router, "dev", dev, "proto", "dhcp", "scope", "link", "src",
                &primary, "metric", &m,
            ],
            vec![
                "route", "add", "default", "via", &router, "dev", dev, "proto", "dhcp", "metric",
                &m, "table", &t,
            ],
        ] {
            ns.ip(args)?;
        }
        let subnet = eni.subnet().to_string();
        ns.ip([
            "route", "add", &subnet, "dev", dev, "proto", "static", "scope", "link", "table", &t,
        ])?;
        for secondary in meta.ipv4s.iter().skip(1) {
            ns.ip([
                "addr",
                "add",
                &format!("{secondary}/32"),
                "dev",
                dev,
                "noprefixroute",
            ])?;
        }
        if !primary_eni {
            for a in &meta.ipv4s {
                ns.ip([
                    "rule",
                    "add",
                    "from",
                    &a.to_string(),
                    "lookup",
                    &t,
                    "priority",
                    &t,
                    "proto",
                    "static",
                ])?;
            }
        }
        ns.ip([
            "link",
            "property",
            "add",
            "dev",
            dev,
            "altname",
            &meta.eni_id,
        ])?;
        ns.ip([
            "link",
            "property",
            "add",
            "dev",
            dev,
            "altname",
            &format!("device-number-{}.{}", meta.device, meta.card),
        ])?;
        write_dropins(&root, eni, meta, primary_eni)?;
    }
    let lib = root.path.join("usr/lib/systemd/network");
    std::fs::create_dir_all(&lib)?;
    std::fs::write(lib.join("80-ec2.network"), NETWORK_FILE)?;
    if installed {
        for f in PACKAGE_FILES {
            let p = root.path.join(f);
            if let Some(dir) = p.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(p, "")?;
        }
    }
    Ok(root)
}

/// amazon-ec2-net-utils' `80-ec2.network`, DHCP on every ENI.
const NETWORK_FILE: &str = "[Match]\nDriver=ena ixgbevf vif\n\n[Link]\nMTUBytes=9001\n\n\
[Network]\nDHCP=yes\nIPv6DuplicateAddressDetection=0\nLLMNR=no\nDNSDefaultRoute=yes\n";

fn write_dropins(root: &HostRoot, eni: &Eni, meta: &EniMeta, primary_eni: bool) -> io::Result<()> {
    let dev = eni.name();
    let net = root.networkd_runtime();
    std::os::unix::fs::symlink(
        "/usr/lib/systemd/network/80-ec2.network",
        net.join(format!("70-{dev}.network")),
    )?;
    let dir = net.join(format!("70-{dev}.network.d"));
    std::fs::create_dir_all(&dir)?;
    let (t, m) = (table(meta), metric(meta));
    std::fs::write(
        dir.join("eni.conf"),
        format!(
            "# Configuration for {dev} generated by policy-routes@{dev}.service\n\
             [Match]\nMACAddress={}\n[Network]\nDHCP=yes\n\n\
             [DHCPv4]\nRouteMetric={m}\nUseRoutes=true\nUseGateway=true\n\n\
             [IPv6AcceptRA]\nRouteMetric={m}\nUseGateway=true\n\n\
             [Route]\nTable={t}\nGateway=_ipv6ra\n\n\
             [Route]\nGateway=_dhcp4\nTable={t}\n\
             [Route]\nTable={t}\nDestination={}\n",
            meta.mac,
            eni.subnet()
        ),
    )?;
    if !primary_eni {
        let rules: String = meta
            .ipv4s
            .iter()
            .map(|a| format!("[RoutingPolicyRule]\nFrom={a}\nPriority={t}\nTable={t}\n"))
            .collect();
        std::fs::write(dir.join("ec2net_policy_4.conf"), rules)?;
    }
    let aliases: String = meta
        .ipv4s
        .iter()
        .skip(1)
        .map(|a| format!("[Address]\nAddress={a}/32\nAddPrefixRoute=false\n"))
        .collect();
    if !aliases.is_empty() {
        std::fs::write(dir.join("ec2net_alias.conf"), aliases)?;
    }
    Ok(())
}

/// A TCP echo server inside a namespace: every connection gets back what it
/// sends, for as long as it stays open. Stops accepting on drop.
pub struct EchoServer {
    waker: TcpListener,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    pub fn start(ns: &Netns, bind: SocketAddr) -> io::Result<EchoServer> {
        let listener = ns.run_in(|| TcpListener::bind(bind))??;
        let waker = listener.try_clone()?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || loop {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        std::thread::spawn(move || {
                            let _ = s.set_nodelay(true);
                            let mut buf = [0u8; 64];
                            loop {
                                match s.read(&mut buf) {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => {
                                        if s.write_all(&buf[..n]).is_err() {
                                            return;
                                        }
                                    }
                                }
                            }
                        });
                    }
                    Err(_) if stop.load(Ordering::Acquire) => return,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return,
                }
            })
        };
        Ok(EchoServer {
            waker,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        self.stop.store(true, Ordering::Release);
        let _ =
            nix::sys::socket::shutdown(self.waker.as_raw_fd(), nix::sys::socket::Shutdown::Read);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a [`Stream`] saw.
#[derive(Debug, Clone, Default)]
pub struct StreamReport {
    /// Round trips completed.
    pub echoed: u64,
    /// The longest wait for one echo.
    pub max_wait: Duration,
    /// Why the connection ended early (reset, timeout, wrong echo).
    pub error: Option<String>,
}

/// One long-lived TCP connection that exchanges a numbered message every
/// `interval` and checks each echo, until stopped: a connection an operator
/// keeps open (an SSH session) while routing changes under it.
pub struct Stream {
    echoed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    report: Arc<Mutex<StreamReport>>,
    thread: Option<JoinHandle<()>>,
}

impl Stream {
    /// Connects from inside `from` to `dst` (an [`EchoServer`]).
    pub fn open(from: &Netns, dst: SocketAddr, interval: Duration) -> io::Result<Stream> {
        let mut sock = from
            .run_in(|| TcpStream::connect_timeout(&dst, Duration::from_secs(3)))?
            .map_err(|e| io::Error::new(e.kind(), format!("connect to {dst}: {e}")))?;
        sock.set_nodelay(true)?;
        // Longer than any retransmit a lost packet would cost, so a loss
        // shows as a long wait rather than as an error.
        sock.set_read_timeout(Some(Duration::from_secs(10)))?;
        let echoed = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(Mutex::new(StreamReport::default()));
        let thread = {
            let (echoed, stop, report) =
                (Arc::clone(&echoed), Arc::clone(&stop), Arc::clone(&report));
            std::thread::spawn(move || {
                let mut n: u64 = 0;
                let fail = |why: String| {
                    if let Ok(mut r) = report.lock() {
                        r.error = Some(why);
                    }
                };
                while !stop.load(Ordering::Acquire) {
                    n += 1;
                    let t0 = Instant::now();
                    if let Err(e) = sock.write_all(&n.to_be_bytes()) {
                        return fail(format!("send #{n}: {e}"));
                    }
                    let mut buf = [0u8; 8];
                    if let Err(e) = sock.read_exact(&mut buf) {
                        return fail(format!("echo #{n}: {e}"));
                    }
                    if u64::from_be_bytes(buf) != n {
                        return fail(format!("echo #{n}: got {}", u64::from_be_bytes(buf)));
                    }
                    let waited = t0.elapsed();
                    if let Ok(mut r) = report.lock() {
                        r.echoed = n;
                        r.max_wait = r.max_wait.max(waited);
                    }
                    echoed.store(n, Ordering::Release);
                    std::thread::sleep(interval);
                }
            })
        };
        Ok(Stream {
            echoed,
            stop,
            report,
            thread: Some(thread),
        })
    }

    /// Round trips completed so far.
    pub fn echoed(&self) -> u64 {
        self.echoed.load(Ordering::Acquire)
    }

    /// The report so far, without stopping.
    pub fn report(&self) -> StreamReport {
        self.report.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Stops exchanging and returns what was seen.
    pub fn finish(mut self) -> StreamReport {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.report()
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One counter of a namespace's `/proc/net/netstat` or `/proc/net/snmp`
/// (e.g. `TcpExt` `IPReversePathFilter`: packets a strict reverse-path
/// check dropped, which is how the lab's VPC router drops a packet that
/// left the wrong ENI).
pub fn counter(ns: &Netns, file: &str, group: &str, name: &str) -> io::Result<u64> {
    // /proc/thread-self/net is the calling thread's namespace.
    let path = format!("/proc/thread-self/net/{file}");
    let text = ns.run_in(|| std::fs::read_to_string(&path))??;
    let prefix = format!("{group}:");
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with(&prefix)).collect();
    for pair in lines.chunks(2) {
        let [names, values] = pair else { continue };
        let names = names.split_whitespace().skip(1);
        let values = values.split_whitespace().skip(1);
        for (n, v) in names.zip(values) {
            if n == name {
                return v.parse().map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidData, format!("{group} {name}: {v:?}"))
                });
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("{group} {name} not in {path} of netns {}", ns.name()),
    ))
}

/// Asks `ip route get DST from SRC` for each source in a loop until
/// stopped, and records every answer whose output device is not the
/// expected one: the kernel's routing decision, sampled during a change.
pub struct RouteSampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<(u64, Vec<String>)>>,
}

impl RouteSampler {
    /// `checks`: (destination, source, expected device).
    pub fn start(ns: &Netns, checks: Vec<(IpAddr, IpAddr, String)>) -> RouteSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let name = ns.name().to_string();
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut samples = 0;
                let mut wrong = Vec::new();
                while !stop.load(Ordering::Acquire) {
                    for (dst, src, want) in &checks {
                        let out = std::process::Command::new("ip")
                            .args(["-n", &name, "route", "get"])
                            .arg(dst.to_string())
                            .arg("from")
                            .arg(src.to_string())
                            .output();
                        samples += 1;
                        let text = match out {
                            Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
                            Err(e) => format!("ip route get: {e}"),
                        };
                        let dev = text
                            .split_whitespace()
                            .skip_while(|w| *w != "dev")
                            .nth(1)
                            .unwrap_or("");
                        if dev != want {
                            wrong.push(format!("{dst} from {src}: {}", text.trim()));
                        }
                    }
                }
                (samples, wrong)
            })
        };
        RouteSampler {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling: how many answers were read, and the wrong ones.
    pub fn finish(mut self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Release);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or((0, vec!["sampler thread panicked".into()]))
    }
}

impl Drop for RouteSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whether `path` exists (for drop-in assertions).
pub fn exists(path: &Path) -> bool {
    path.exists() || path.symlink_metadata().is_ok()
}
