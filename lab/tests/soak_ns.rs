//! Soak: the daemon's memory stays flat over 10,000 reconciles and 1,000
//! metadata refreshes. In a simulated instance a rule of eth1 is deleted
//! 10,000 times, each time waiting for the daemon to put it back (one
//! reconcile each), and every tenth time the daemon is told to re-read
//! metadata (`SIGUSR1`, all keys, nothing cached), which every hundredth
//! time lists one more or one fewer secondary address. The daemon's RSS
//! (`/proc/PID/status`) is sampled throughout; after a warm-up of 1,000
//! reconciles it may grow by at most [`TOLERANCE`].
//!
//! Two to five minutes (a debug build, on two shared cores); `#[ignore]`d, so `cargo test` skips it and
//! `.ci/run` runs it on its own:
//! `cargo test -p eniroute-lab --test soak_ns -- --ignored --nocapture`.
//! `SOAK_RECONCILES=N` shortens it.

mod common;

use std::time::{Duration, Instant};

use common::*;
use eniroute::netlink::{Kernel, RtNetlink};
use eniroute::values::{Family, Rule};
use eniroute_lab::agent::{wait_for, Daemon};
use eniroute_lab::world;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const RECONCILES: u32 = 10_000;
const WARM_UP: u32 = 1_000;
/// Growth allowed after the warm-up: allocator slack, not a leak (a leak
/// of even 200 bytes per reconcile would be 1.8 MB here).
const TOLERANCE_KIB: u64 = 2 * 1024;
const TOLERANCE: &str = "2 MiB";
const ETH1_MAC: &str = "0a:e0:00:01:00:01";

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
#[ignore = "a soak of a few minutes; .ci/run runs it"]
fn memory_is_flat_over_10000_reconciles_and_1000_refreshes() {
    if !need_root("memory_is_flat_over_10000_reconciles_and_1000_refreshes") {
        return;
    }
    let reconciles: u32 = std::env::var("SOAK_RECONCILES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(RECONCILES);
    let lab = world::management_network().unwrap();
    let ns = lab.inst.ns.clone();
    let _ssh = server(&ns, 22);
    let mut d = Daemon::start(bin(), &ns, &lab.inst.endpoint, None).unwrap();
    wait_for(Duration::from_secs(20), || d.log().contains("ready: "))
        .unwrap_or_else(|| panic!("daemon never ready\n{}", d.log()));
    let pid = d.pid().expect("daemon running");
    let sim = lab.inst.sim.clone();
    let rule = Rule {
        family: Family::Ipv4,
        priority: 10001,
        from: Some("10.0.2.20/32".parse().unwrap()),
        table: 10001,
        suppress_ifgroup: None,
    };

    let t0 = Instant::now();
    let (samples, refreshes) = ns
        .run_in(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let k = RtNetlink::connect(233).expect("netlink");
                let mut samples = vec![(0, rss_kib(pid))];
                let mut refreshes = 0u32;
                let mut extra = false;
                for i in 1..=reconciles {
                    k.del_rule(&rule).await.expect("delete the rule");
                    let deadline = Instant::now() + Duration::from_secs(10);
                    loop {
                        let rules = k.rules().await.expect("dump rules");
                        if rules.iter().any(|r| r.rule == rule) {
                            break;
                        }
                        assert!(
                            Instant::now() < deadline,
                            "reconcile {i}: rule not restored"
                        );
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    if i % 10 == 0 {
                        if i % 100 == 0 {
                            extra = !extra;
                            let ips: Vec<&str> = if extra {
                                vec!["10.0.2.20", "10.0.2.21", "10.0.2.22"]
                            } else {
                                vec!["10.0.2.20", "10.0.2.21"]
                            };
                            sim.update(|t| {
                                t["network"]["interfaces"]["macs"][ETH1_MAC]["local-ipv4s"] =
                                    serde_json::json!(ips);
                            });
                        }
                        let before = sim.requests();
                        kill(Pid::from_raw(pid as i32), Signal::SIGUSR1).expect("SIGUSR1");
                        // A whole read: the token, the listing and each
                        // ENI's keys.
                        let deadline = Instant::now() + Duration::from_secs(10);
                        while sim.requests() < before + 10 {
                            assert!(Instant::now() < deadline, "refresh {refreshes}: no read");
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        refreshes += 1;
                    }
                    if i % 500 == 0 || i == WARM_UP {
                        samples.push((i, rss_kib(pid)));
                    }
                }
                (samples, refreshes)
            })
        })
        .expect("soak in the instance namespace");
    let took = t0.elapsed();
    assert!(d.running(), "the daemon died\n{}", d.log());
    // The last address change went in too.
    assert!(reaches(&lab.admin, "10.0.2.21", 22, LONG).is_ok());

    let warm = samples
        .iter()
        .find(|(i, _)| *i == WARM_UP.min(reconciles))
        .map_or(samples[0].1, |s| s.1);
    let last = samples.last().map_or(0, |s| s.1);
    let peak = samples.iter().map(|s| s.1).max().unwrap_or(0);
    let curve: Vec<String> = samples
        .iter()
        .map(|(i, kib)| format!("{i}:{kib}"))
        .collect();
    eprintln!(
        "soak: {reconciles} reconciles and {refreshes} metadata refreshes in {took:.1?}; \
         daemon RSS {} KiB at start, {warm} KiB after {} reconciles, {last} KiB at the end \
         (peak {peak} KiB; growth after warm-up {} KiB, allowed {TOLERANCE})\n\
         soak: RSS samples (reconciles:KiB) {}",
        samples[0].1,
        WARM_UP.min(reconciles),
        last as i64 - warm as i64,
        curve.join(" ")
    );
    assert!(warm > 0 && last > 0, "RSS not readable");
    assert!(
        last <= warm + TOLERANCE_KIB,
        "RSS grew from {warm} KiB to {last} KiB: {curve:?}"
    );
    assert_eq!(d.stop().unwrap(), Some(0));
}
