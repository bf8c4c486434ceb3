//! Hotplug benchmarks for `eniroute daemon` in a simulated instance (root
//! only; `cargo bench --bench hotplug`).
//!
//! - hotplug-to-ready: from the moment the link appears in the instance
//!   namespace (just before the attach) to the first TCP connection the
//!   admin host gets accepted on the new ENI's address, metadata already
//!   describing the ENI. 20 attaches, each detached again before the next.
//! - moved-IP-routed: a secondary IPv4 moved to this instance (metadata and
//!   the VPC change together) until the admin host's first accepted
//!   connection to it, at default settings (metadata polled every 5 s).

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use eniroute_lab::agent::{wait_for, Daemon};
use eniroute_lab::world::{self, EniPlan};
use eniroute_lab::{Netns, TcpServer, Vpc};

const ATTACHES: usize = 20;
const MOVES: usize = 4;
/// Far longer than any outcome measured; only guards against a hang.
const GIVE_UP: Duration = Duration::from_secs(20);

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() {
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: hotplug benchmark needs root (network namespaces)");
        return;
    }
    // `cargo bench` passes --bench; anything else is a filter we ignore.
    if let Err(e) = run() {
        eprintln!("hotplug benchmark failed: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    // `cargo bench` builds the agent too when run from the workspace root.
    let bin = eniroute_lab::agent::binary()?;
    let bin = bin.as_path();
    hotplug_to_ready(bin)?;
    moved_ip_routed(bin)?;
    Ok(())
}

/// Polls TCP connections to `dst` from inside `from` every few ms until one
/// is accepted; returns when. Runs on a thread of its own inside `from`, so
/// the caller can change the world meanwhile.
fn first_accept(from: &Netns, dst: SocketAddr) -> Result<Instant> {
    let r = from.run_in(|| {
        let end = Instant::now() + GIVE_UP;
        while Instant::now() < end {
            if TcpStream::connect_timeout(&dst, Duration::from_millis(15)).is_ok() {
                return Some(Instant::now());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        None
    })?;
    r.ok_or_else(|| format!("no connection to {dst} accepted within {GIVE_UP:?}").into())
}

/// When `name` appears in `ns`, to within a fraction of a millisecond:
/// the moment the kernel registers the link, before anything (lab or
/// agent) configures it.
fn link_appears(ns: &Netns, name: &str) -> Result<Instant> {
    let r = ns.run_in(|| {
        let end = Instant::now() + GIVE_UP;
        while Instant::now() < end {
            if nix::net::if_::if_nametoindex(name).is_ok() {
                return Some(Instant::now());
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        None
    })?;
    r.ok_or_else(|| format!("link {name} never appeared").into())
}

fn stats(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let pick = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name}: n={} min {:.1} ms, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        v.len(),
        ms(v[0]),
        ms(pick(0.5)),
        ms(pick(0.99)),
        ms(v[v.len() - 1]),
    );
}

fn wait_ready(d: &Daemon) -> Result<()> {
    wait_for(GIVE_UP, || d.log().contains("ready: "))
        .map(|_| ())
        .ok_or_else(|| format!("daemon never ready:\n{}", d.log()).into())
}

fn hotplug_to_ready(bin: &Path) -> Result<()> {
    let mut lab = world::management_network()?;
    let _ssh = TcpServer::start(&lab.inst.ns, SocketAddr::from(([0, 0, 0, 0], 22)))?;
    let d = Daemon::start(bin, &lab.inst.ns, &lab.inst.endpoint, None)?;
    wait_ready(&d)?;
    let plan = EniPlan::new("eth2", 2, "10.0.3.0/24", &["10.0.3.30"])?;
    let dst: SocketAddr = "10.0.3.30:22".parse()?;
    let mut from_link = Vec::new();
    let mut from_attach = Vec::new();
    let mut attach_took = Vec::new();
    for _ in 0..ATTACHES {
        let (t0, appeared, accepted) = std::thread::scope(|s| {
            let admin = &lab.admin;
            // A second handle: the attach below needs the instance mutably.
            let inst_ns = lab.inst.ns.clone();
            let poll = s.spawn(move || first_accept(admin, dst).map_err(|e| e.to_string()));
            let link = s.spawn(move || link_appears(&inst_ns, "eth2").map_err(|e| e.to_string()));
            // The poller is running: its first attempts fail until the ENI
            // is configured, as an admin's retries would.
            std::thread::sleep(Duration::from_millis(20));
            let t0 = Instant::now();
            let attached = lab.inst.attach(&lab.vpc, &plan, true);
            let attach_end = Instant::now();
            let join =
                |h: std::thread::ScopedJoinHandle<'_, std::result::Result<Instant, String>>| {
                    h.join()
                        .map_err(|_| "thread panicked".to_string())
                        .and_then(|r| r)
                };
            let accepted = join(poll);
            let appeared = join(link);
            (
                (t0, attach_end),
                appeared,
                attached.map_err(|e| e.to_string()).and(accepted),
            )
        });
        let (t0, attach_end) = t0;
        attach_took.push(attach_end.duration_since(t0));
        let accepted = accepted?;
        from_link.push(accepted.duration_since(appeared?));
        from_attach.push(accepted.duration_since(t0));
        lab.inst.detach(&lab.vpc, "eth2")?;
        let ns = &lab.inst.ns;
        wait_for(GIVE_UP, || {
            ns.ip(["rule"])
                .map(|r| !r.contains("10.0.3.30"))
                .unwrap_or(false)
        })
        .ok_or("rules of the detached ENI never went away")?;
    }
    // The lab attaches in three steps (the link appears, the router port is
    // set up, then metadata is published), so the second figure includes
    // the simulated VPC's own work.
    stats(
        "hotplug-to-ready (metadata present), from link appearance",
        from_link,
    );
    stats(
        "hotplug-to-ready, from the start of the lab's attach",
        from_attach,
    );
    stats(
        "  of which the lab's attach itself (link, router, metadata)",
        attach_took,
    );
    // For profiling: ENIROUTE_BENCH_LOG=1 prints what the daemon did.
    if std::env::var_os("ENIROUTE_BENCH_LOG").is_some() {
        println!("{}", d.log());
    }
    Ok(())
}

fn moved_ip_routed(bin: &Path) -> Result<()> {
    let vpc = Vpc::new()?;
    let mut i1 = world::instance(
        &vpc,
        1,
        &[
            EniPlan::new("eth0", 0, "10.0.1.0/24", &["10.0.1.10"])?,
            EniPlan::new("eth1", 1, "10.0.2.0/24", &["10.0.2.20"])?,
        ],
    )?;
    let mut i2 = world::instance(
        &vpc,
        2,
        &[
            EniPlan::new("eth0", 0, "10.0.1.0/24", &["10.0.1.11"])?,
            EniPlan::new("eth1", 1, "10.0.2.0/24", &["10.0.2.40", "10.0.2.50"])?,
        ],
    )?;
    let admin = vpc.client("admin", "10.9.0.5/24".parse()?)?;
    let _srv = TcpServer::start(&i1.ns, SocketAddr::from(([0, 0, 0, 0], 22)))?;
    // Default configuration: the metadata poll every 5 s is what is measured.
    let d = Daemon::start(bin, &i1.ns, &i1.endpoint, None)?;
    wait_ready(&d)?;
    let dst: SocketAddr = "10.0.2.50:22".parse()?;
    let ip = "10.0.2.50".parse()?;
    let (e1, e2) = (i1.eni("eth1")?.clone(), i2.eni("eth1")?.clone());
    let mut times = Vec::new();
    for n in 0..MOVES {
        // Moves land at different points of the poll cycle.
        std::thread::sleep(Duration::from_millis(1300 * n as u64 % 5000));
        let (t0, accepted) = std::thread::scope(|s| {
            let poll = s.spawn(|| first_accept(&admin, dst).map_err(|e| e.to_string()));
            let t0 = Instant::now();
            let moved = (|| -> Result<()> {
                vpc.move_address(&e2, &e1, ip)?;
                i1.set_ipv4s("eth1", vec!["10.0.2.20".parse()?, ip])?;
                i2.set_ipv4s("eth1", vec!["10.0.2.40".parse()?])?;
                Ok(())
            })()
            .map_err(|e| e.to_string());
            let accepted = poll.join().map_err(|_| "poller panicked".to_string());
            (t0, moved.and(accepted.and_then(|a| a)))
        });
        times.push(accepted?.duration_since(t0));
        // And back, then wait until this instance let go of it.
        vpc.move_address(&e1, &e2, ip)?;
        i1.set_ipv4s("eth1", vec!["10.0.2.20".parse()?])?;
        i2.set_ipv4s("eth1", vec!["10.0.2.40".parse()?, ip])?;
        wait_for(GIVE_UP, || {
            i1.ns
                .ip(["rule"])
                .map(|r| !r.contains("10.0.2.50"))
                .unwrap_or(false)
        })
        .ok_or("the moved address was never let go")?;
    }
    stats("moved-IP-routed (default 5 s poll)", times);
    Ok(())
}
