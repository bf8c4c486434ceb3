//! The daemon doing nothing: an instance with 4 ENIs (2 IPv4 each), the
//! daemon at default settings, configured and then left alone for 60 s
//! (15 s with `--quick`, scaled to a minute). CPU time from
//! `/proc/PID/stat`, resident memory from `/proc/PID/status` (all of it,
//! and the anonymous part: the rest is the binary's code and data, mapped
//! from the page cache), metadata requests counted by the simulator.

use std::io;
use std::time::{Duration, Instant};

use super::scale::{tree, ScaleWorld};
use super::{Budget, Options, Row, Stat, StateGuard, Table};
use crate::agent::Daemon;

const GROUP: &str = "idle";
const ENIS: usize = 4;

pub fn run(opts: &Options, table: &mut Table, progress: &mut dyn FnMut(&str)) -> io::Result<()> {
    let w = ScaleWorld::build(ENIS)?;
    let _state = StateGuard::new(&w.ns);
    w.sim.set_tree(tree(ENIS, 2, 0, 0)?);
    let d = Daemon::start(&opts.agent, &w.ns, &w.endpoint, None)?;
    super::hotplug::wait_ready(&d)?;
    let pid = d
        .pid()
        .ok_or_else(|| io::Error::other("the daemon has no pid"))?;
    // Start-up is not idling.
    std::thread::sleep(Duration::from_secs(1));
    let window = Duration::from_secs(if opts.quick { 15 } else { 60 });
    progress(&format!(
        "idle: watching the daemon (pid {pid}) for {window:?}"
    ));
    let cpu0 = cpu_seconds(pid)?;
    let req0 = w.sim.requests();
    let t0 = Instant::now();
    std::thread::sleep(window);
    let minutes = t0.elapsed().as_secs_f64() / 60.0;
    let cpu = (cpu_seconds(pid)? - cpu0) / minutes;
    let requests = (w.sim.requests() - req0) as f64 / minutes;
    let (rss, peak, anon) = memory_mib(pid)?;
    let span = if opts.quick { " (15 s, scaled)" } else { "" };
    table.push(
        Row::new(
            GROUP,
            format!("idle daemon, {ENIS} ENIs: CPU per minute{span}"),
            "s",
        )
        .samples(vec![cpu])
        .budget(Budget::at_most(Stat::Max, 0.1)),
    );
    table.push(
        Row::new(
            GROUP,
            format!("idle daemon, {ENIS} ENIs: resident memory"),
            "MiB",
        )
        .samples(vec![rss])
        .budget(Budget::at_most(Stat::Max, 10.0)),
    );
    table.push(
        Row::new(
            GROUP,
            format!("idle daemon, {ENIS} ENIs: of which anonymous (heap, stacks; the rest is mapped code)"),
            "MiB",
        )
        .samples(vec![anon]),
    );
    table.push(
        Row::new(
            GROUP,
            format!("idle daemon, {ENIS} ENIs: peak resident memory since start"),
            "MiB",
        )
        .samples(vec![peak]),
    );
    table.push(
        Row::new(
            GROUP,
            format!("idle daemon, {ENIS} ENIs: metadata requests per minute{span}"),
            "requests",
        )
        .samples(vec![requests.round()]),
    );
    drop(d);
    Ok(())
}

/// User and system CPU time of `pid` so far, in seconds.
fn cpu_seconds(pid: u32) -> io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces; the fields after its
    // closing parenthesis are fixed: utime and stime are the 12th and 13th.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| io::Error::other(format!("/proc/{pid}/stat: {stat:?}")))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> io::Result<f64> {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| io::Error::other(format!("/proc/{pid}/stat: field {i} in {stat:?}")))
    };
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    Ok((ticks(11)? + ticks(12)?) / hz)
}

/// VmRSS, VmHWM and RssAnon of `pid`, in MiB.
fn memory_mib(pid: u32) -> io::Result<(f64, f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = |key: &str| -> io::Result<f64> {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| io::Error::other(format!("/proc/{pid}/status: no {key}")))
    };
    Ok((
        kb("VmRSS:")? / 1024.0,
        kb("VmHWM:")? / 1024.0,
        kb("RssAnon:")? / 1024.0,
    ))
}

/// The daemon while someone else's routes churn: the lab's foreign-route
/// measurement ([`crate::churn`]), 100,000 routes in a table of their own
/// (20,000 with `--quick`), one changing every 50 ms, and a rule of the
/// agent's deleted now and then.
pub fn churn(opts: &Options, table: &mut Table, progress: &mut dyn FnMut(&str)) -> io::Result<()> {
    let m = crate::churn::measure_foreign_churn(&opts.agent, opts.quick)?;
    progress(&format!("churn: {}", m.summary()));
    let shape = format!(
        "{} foreign routes, one changing every 50 ms",
        m.foreign_routes
    );
    table.push(
        Row::new(
            "churn",
            format!("daemon under foreign route churn ({shape}): CPU, % of a core"),
            "%",
        )
        .samples(vec![m.cpu_share() * 100.0]),
    );
    table.push(
        Row::new(
            "churn",
            format!("deleted rule restored under churn ({shape})"),
            "ms",
        )
        .samples(m.repairs.iter().map(|d| super::ms(*d)).collect()),
    );
    Ok(())
}
