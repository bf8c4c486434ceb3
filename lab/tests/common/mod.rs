//! Shared helpers for the whole-agent tests in network namespaces.
#![allow(dead_code)]

use std::io::Write as _;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use eniroute_lab::{self as lab, Netns, TcpServer};

/// Root tests say so when they cannot run, rather than passing silently.
pub fn need_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    // Straight to stderr: the test harness hides what eprintln! prints
    // in a passing test, and a skip must be seen.
    let _ = writeln!(
        std::io::stderr(),
        "skipped: {test} needs root (network namespaces)"
    );
    false
}

/// The agent under test: the `eniroute` binary the workspace built beside
/// these tests (`cargo test` at the root builds it), or `$ENIROUTE_BIN`.
pub fn bin() -> &'static Path {
    static BIN: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        lab::agent::binary()
            .unwrap_or_else(|e| panic!("{e}; run `cargo test` from the workspace root"))
    })
}

/// Runs `eniroute ARGS` in `ns` against `endpoint`.
pub fn eniroute(ns: &Netns, endpoint: &str, args: &[&str]) -> Output {
    lab::agent::run(bin(), ns, endpoint, args).expect("spawn eniroute")
}

pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Applies once and asserts success.
pub fn apply(ns: &Netns, endpoint: &str) -> String {
    let o = eniroute(ns, endpoint, &["-v", "apply"]);
    assert!(o.status.success(), "apply failed: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub const SHORT: Duration = Duration::from_millis(800);
pub const LONG: Duration = Duration::from_secs(3);

/// Whether `from_ns` gets an answer from `dst:port`.
pub fn reaches(from_ns: &Netns, dst: &str, port: u16, timeout: Duration) -> Result<String, String> {
    let ip: IpAddr = dst.parse().map_err(|e| format!("{dst}: {e}"))?;
    lab::connect(from_ns, SocketAddr::new(ip, port), None, timeout).map_err(|e| e.to_string())
}

pub fn server(ns: &Netns, port: u16) -> TcpServer {
    TcpServer::start(ns, SocketAddr::from(([0, 0, 0, 0], port))).expect("start server")
}

pub fn dev_for(ns: &Netns, dst: &str, from: Option<&str>) -> String {
    let dst: IpAddr = dst.parse().unwrap();
    let from: Option<IpAddr> = from.map(|f| f.parse().unwrap());
    lab::route_get(ns, dst, from).expect("ip route get").dev
}

/// Runs one `ip` command in `ns`, written as on the command line
/// (`"rule del from 10.0.2.20 lookup 10001 priority 10001"`); a failure
/// names the command.
pub fn ip(ns: &Netns, line: &str) -> String {
    ns.ip(line.split_whitespace())
        .unwrap_or_else(|e| panic!("ip {line}: {e}"))
}

/// Every rule and every route of the namespace, as `ip` prints them.
pub fn dumps(ns: &Netns) -> String {
    let mut out = String::new();
    for args in [
        &["rule"][..],
        &["-6", "rule"][..],
        &["route", "show", "table", "all"][..],
        &["-6", "route", "show", "table", "all"][..],
        &["addr"][..],
    ] {
        out += &ns.ip(args).expect("ip dump");
    }
    // IPv6 link-local addresses come and finish DAD on the kernel's own
    // schedule; they are not the agent's and only make dumps flap.
    out.lines()
        .filter(|l| !l.contains("fe80::") && !l.contains("valid_lft"))
        .map(|l| format!("{}\n", l.replace(" tentative", "")))
        .collect()
}
