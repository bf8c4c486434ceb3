//! Full and no-op reconciles at scale: an instance with 15 ENIs, each with
//! 50 private IPv4 addresses and 4 delegated /28 prefixes (and, in a second
//! round, 50 IPv6 addresses too), metadata from the simulator on loopback.
//!
//! - one-shot `eniroute apply` end to end (process start to exit), from
//!   empty and with nothing to change: wall time, netlink messages (its
//!   `-v` count), metadata requests (the simulator's count);
//! - the daemon's own reconcile from empty (its debug log: wall time,
//!   messages; metadata requests until it is ready), and with nothing to
//!   change (SIGHUP makes it reconcile once; writes must be 0);
//! - the shell way on the same state: a script that reads metadata with
//!   curl and runs one `ip` process per address, route and rule, as
//!   generated scripts do, from empty and again with everything in place;
//!   and the ratios.
//!
//! The links are veth pairs into a sink namespace: nothing here needs a
//! packet to get through, only the kernel's state.

use std::io;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use serde_json::{json, Value};

use super::{
    command_in, ms, reconcile_lines, timed, Budget, Options, Row, Stat, StateGuard, Table, GIVE_UP,
};
use crate::agent::{wait_for, Daemon};
use crate::imds_tree::{instance_tree, EniMeta};
use crate::netns::{veth, Netns};
use crate::sim::Simulator;
use eniroute::values::Mac;

const GROUP: &str = "scale";
pub const ENIS: usize = 15;
pub const IPV4S: usize = 50;
pub const PREFIXES: usize = 4;
pub const IPV6S: usize = 50;

/// An instance namespace with `enis` bare ENI links and its metadata.
pub struct ScaleWorld {
    pub ns: Netns,
    _sink: Netns,
    pub sim: Simulator,
    pub endpoint: String,
    pub devs: Vec<String>,
}

impl ScaleWorld {
    pub fn build(enis: usize) -> io::Result<ScaleWorld> {
        let ns = Netns::create("scale")?;
        let sink = Netns::create("sink")?;
        let mut devs = Vec::new();
        for i in 0..enis {
            let dev = format!("eth{i}");
            veth(&ns, &dev, Some(mac(i)), &sink, &format!("p{i}"))?;
            devs.push(dev);
        }
        let listener = ns.run_in(|| TcpListener::bind("127.0.0.1:0"))??;
        // Nagle would hold every answer for the client's delayed ACK.
        nix::sys::socket::setsockopt(&listener, nix::sys::socket::sockopt::TcpNoDelay, &true)
            .map_err(|e| io::Error::other(format!("TCP_NODELAY on the metadata listener: {e}")))?;
        let sim = Simulator::serve(listener, json!({}))?;
        let endpoint = sim.endpoint();
        Ok(ScaleWorld {
            ns,
            _sink: sink,
            sim,
            endpoint,
            devs,
        })
    }

    /// Removes everything an agent or the shell script put there: the
    /// agent's own cleanup, then any address and any rule or route of
    /// protocol 233 left by the script.
    pub fn reset(&self, opts: &Options) -> io::Result<()> {
        let mut cmd = command_in(&self.ns, &opts.agent)?;
        cmd.args(["--imds-endpoint", &self.endpoint, "cleanup"]);
        timed(cmd, "eniroute cleanup")?;
        for dev in &self.devs {
            self.ns.ip(["addr", "flush", "dev", dev.as_str()])?;
            self.ns
                .ip(["link", "set", "dev", dev.as_str(), "group", "0"])?;
        }
        for family in ["-4", "-6"] {
            self.ns.ip([family, "rule", "flush", "protocol", "233"])?;
            self.ns
                .ip([family, "route", "flush", "table", "all", "protocol", "233"])?;
        }
        Ok(())
    }

    /// One `eniroute -v apply`: wall time, netlink messages, writes,
    /// metadata requests.
    pub fn apply(&self, opts: &Options) -> io::Result<Apply> {
        let mut cmd = command_in(&self.ns, &opts.agent)?;
        cmd.args(["--imds-endpoint", &self.endpoint, "-v", "apply"]);
        let before = self.sim.requests();
        let (took, out) = timed(cmd, "eniroute apply")?;
        let requests = self.sim.requests() - before;
        let (writes, messages) = verbose_counts(&out).ok_or_else(|| {
            io::Error::other(format!("no netlink counts in `eniroute -v apply`:\n{out}"))
        })?;
        Ok(Apply {
            ms: ms(took),
            writes,
            messages,
            requests,
        })
    }
}

/// What one `apply` cost.
#[derive(Debug, Clone, Copy)]
pub struct Apply {
    pub ms: f64,
    pub writes: u64,
    pub messages: u64,
    pub requests: u64,
}

/// `netlink writes: W in P passes, M netlink messages; …` → (W, M).
fn verbose_counts(out: &str) -> Option<(u64, u64)> {
    let line = out.lines().find(|l| l.starts_with("netlink writes: "))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let writes = words.get(2)?.parse().ok()?;
    let at = words.iter().position(|w| w.starts_with("messages"))?;
    let messages = words.get(at.checked_sub(2)?)?.parse().ok()?;
    Some((writes, messages))
}

pub fn mac(i: usize) -> Mac {
    Mac::new([0x0a, 0x5c, 0, 0, (i >> 8) as u8, i as u8])
}

/// The metadata of `enis` ENIs: ENI i in 10.(i / 200).(i % 200 + 1).0/24
/// with `ipv4s` addresses from .10 up, `prefixes` /28s from .128 up, and
/// `ipv6s` addresses in 2001:db8:i+1::/64.
pub fn tree(enis: usize, ipv4s: usize, prefixes: usize, ipv6s: usize) -> io::Result<Value> {
    let bad = |e: ipnet::PrefixLenError| io::Error::other(e.to_string());
    let mut metas = Vec::new();
    let mut extra = Vec::new();
    for i in 0..enis {
        let (hi, lo) = ((i / 200) as u8, (i % 200 + 1) as u8);
        let subnet = Ipv4Net::new([10, hi, lo, 0].into(), 24).map_err(bad)?;
        let addrs = (0..ipv4s)
            .map(|k| std::net::Ipv4Addr::new(10, hi, lo, 10 + k as u8))
            .collect();
        metas.push(EniMeta {
            mac: mac(i),
            eni_id: format!("eni-0{i:04x}scale"),
            card: 0,
            device: i as u32,
            subnet,
            subnet_id: format!("subnet-{i}"),
            vpc_id: "vpc-0scale".into(),
            vpc_cidrs: vec![Ipv4Net::new([10, 0, 0, 0].into(), 8).map_err(bad)?],
            ipv4s: addrs,
        });
        let prefixes: Vec<String> = (0..prefixes)
            .map(|k| format!("10.{hi}.{lo}.{}/28", 128 + 16 * k))
            .collect();
        let v6: Vec<String> = (0..ipv6s)
            .map(|k| format!("2001:db8:{:x}::{:x}", i + 1, 0x10 + k))
            .collect();
        extra.push((mac(i), prefixes, v6, format!("2001:db8:{:x}::/64", i + 1)));
    }
    let mut t = instance_tree("i-0scale", mac(0), &metas);
    for (mac, prefixes, v6, subnet6) in extra {
        let Some(m) = t
            .pointer_mut(&format!("/network/interfaces/macs/{mac}"))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        if !prefixes.is_empty() {
            m.insert("ipv4-prefix".into(), json!(prefixes));
        }
        if !v6.is_empty() {
            m.insert("ipv6s".into(), json!(v6));
            m.insert("subnet-ipv6-cidr-blocks".into(), json!(subnet6));
            m.insert("vpc-ipv6-cidr-blocks".into(), json!("2001:db8::/48"));
        }
    }
    Ok(t)
}

/// Cold and no-op one-shot applies of the tree being served.
struct Applies {
    cold: Vec<Apply>,
    noop: Vec<Apply>,
}

fn applies(w: &ScaleWorld, opts: &Options, n: usize) -> io::Result<Applies> {
    let mut out = Applies {
        cold: Vec::new(),
        noop: Vec::new(),
    };
    for _ in 0..n {
        w.reset(opts)?;
        out.cold.push(w.apply(opts)?);
        out.noop.push(w.apply(opts)?);
    }
    Ok(out)
}

fn column(v: &[Apply], f: impl Fn(&Apply) -> f64) -> Vec<f64> {
    v.iter().map(f).collect()
}

pub fn run(opts: &Options, table: &mut Table, progress: &mut dyn FnMut(&str)) -> io::Result<()> {
    let w = ScaleWorld::build(ENIS)?;
    let _state = StateGuard::new(&w.ns);
    let shape = format!("{ENIS} ENIs × {IPV4S} IPv4 + {PREFIXES} prefixes");

    // IPv4.
    w.sim.set_tree(tree(ENIS, IPV4S, PREFIXES, 0)?);
    let v4 = applies(&w, opts, opts.n(3, 10))?;
    progress(&format!("scale: {} one-shot applies, IPv4", v4.cold.len()));
    push_applies(table, &shape, &v4, true);

    // The daemon, IPv4.
    let (full, noop) = daemon(&w, opts)?;
    progress("scale: the daemon's reconciles");
    table.push(
        Row::new(
            GROUP,
            format!("daemon reconcile from empty, {shape}: wall time (its log)"),
            "ms",
        )
        .samples(column(&full, |a| a.ms)),
    );
    table.push(
        Row::new(
            GROUP,
            format!("daemon reconcile from empty, {shape}: netlink messages"),
            "messages",
        )
        .samples(column(&full, |a| a.messages as f64)),
    );
    table.push(
        Row::new(
            GROUP,
            format!("daemon start to ready from empty, {shape}: metadata requests"),
            "requests",
        )
        .samples(column(&full, |a| a.requests as f64)),
    );
    table.push(
        Row::new(
            GROUP,
            format!("daemon no-op reconcile, {shape}: wall time (its log)"),
            "ms",
        )
        .samples(column(&noop, |a| a.ms))
        .budget(Budget::at_most(Stat::P50, 5.0)),
    );
    table.push(
        Row::new(
            GROUP,
            format!("daemon no-op reconcile, {shape}: writes"),
            "writes",
        )
        .samples(column(&noop, |a| a.writes as f64))
        .budget(Budget::at_most(Stat::Max, 0.0)),
    );
    table.push(
        Row::new(
            GROUP,
            format!("daemon no-op reconcile, {shape}: netlink messages"),
            "messages",
        )
        .samples(column(&noop, |a| a.messages as f64)),
    );

    // The shell way, same state.
    let runs = opts.n(1, 3);
    let mut cold = Vec::new();
    let mut again = Vec::new();
    let script = std::env::temp_dir().join(format!("eniroute-bench-{}.sh", std::process::id()));
    super::write_file(&script, SHELL)?;
    let shell = (|| -> io::Result<()> {
        for _ in 0..runs {
            w.reset(opts)?;
            cold.push(shell_apply(&w, &script)?);
            again.push(shell_apply(&w, &script)?);
        }
        Ok(())
    })();
    let _ = std::fs::remove_file(&script);
    shell?;
    progress(&format!("scale: {runs} shell runs"));
    let p50 = |v: &[f64]| super::percentile(v, 0.5).unwrap_or(f64::NAN);
    let apply_cold = p50(&column(&v4.cold, |a| a.ms));
    let apply_noop = p50(&column(&v4.noop, |a| a.ms));
    table.push(
        Row::new(
            GROUP,
            format!("shell baseline (curl + one `ip` per object) from empty, {shape}"),
            "ms",
        )
        .samples(cold.clone()),
    );
    table.push(
        Row::new(
            GROUP,
            format!("shell baseline, nothing to change, {shape}"),
            "ms",
        )
        .samples(again.clone()),
    );
    table.push(
        Row::new(GROUP, "shell ÷ one-shot apply from empty (p50 ÷ p50)", "×")
            .samples(vec![(p50(&cold) / apply_cold).round()])
            .budget(Budget::at_least(Stat::P50, 50.0)),
    );
    table.push(
        Row::new(
            GROUP,
            "shell ÷ one-shot apply, nothing to change (p50 ÷ p50)",
            "×",
        )
        .samples(vec![(p50(&again) / apply_noop).round()])
        .budget(Budget::at_least(Stat::P50, 50.0)),
    );

    // IPv6 on top.
    let shape6 = format!("{shape} + {IPV6S} IPv6");
    w.sim.set_tree(tree(ENIS, IPV4S, PREFIXES, IPV6S)?);
    let v6 = applies(&w, opts, opts.n(2, 5))?;
    progress(&format!(
        "scale: {} one-shot applies, IPv4 + IPv6",
        v6.cold.len()
    ));
    push_applies(table, &shape6, &v6, false);
    w.reset(opts)?;
    Ok(())
}

fn push_applies(table: &mut Table, shape: &str, a: &Applies, budgets: bool) {
    let mut cold = Row::new(
        GROUP,
        format!("one-shot apply from empty, {shape}: wall time"),
        "ms",
    )
    .samples(column(&a.cold, |a| a.ms));
    let mut noop = Row::new(
        GROUP,
        format!("one-shot apply, nothing to change, {shape}: wall time"),
        "ms",
    )
    .samples(column(&a.noop, |a| a.ms));
    if budgets {
        cold = cold.budget(Budget::at_most(Stat::P50, 60.0));
        noop = noop.budget(Budget::at_most(Stat::P50, 40.0));
    }
    table.push(cold);
    table.push(
        Row::new(
            GROUP,
            format!("one-shot apply from empty, {shape}: netlink messages"),
            "messages",
        )
        .samples(column(&a.cold, |a| a.messages as f64)),
    );
    table.push(
        Row::new(
            GROUP,
            format!("one-shot apply from empty, {shape}: metadata requests"),
            "requests",
        )
        .samples(column(&a.cold, |a| a.requests as f64)),
    );
    table.push(noop);
    table.push(
        Row::new(
            GROUP,
            format!("one-shot apply, nothing to change, {shape}: writes"),
            "writes",
        )
        .samples(column(&a.noop, |a| a.writes as f64))
        .budget(Budget::at_most(Stat::Max, 0.0)),
    );
    table.push(
        Row::new(
            GROUP,
            format!("one-shot apply, nothing to change, {shape}: metadata requests"),
            "requests",
        )
        .samples(column(&a.noop, |a| a.requests as f64)),
    );
}

/// The daemon from empty (its first reconcile), then no-op reconciles
/// (one per SIGHUP).
fn daemon(w: &ScaleWorld, opts: &Options) -> io::Result<(Vec<Apply>, Vec<Apply>)> {
    let mut full = Vec::new();
    let mut noop = Vec::new();
    for round in 0..opts.n(2, 5) {
        w.reset(opts)?;
        let before = w.sim.requests();
        let d = Daemon::start(&opts.agent, &w.ns, &w.endpoint, None)?;
        super::hotplug::wait_ready(&d)?;
        let requests = w.sim.requests() - before;
        let first = reconcile_lines(&d.log())
            .into_iter()
            .next()
            .ok_or_else(|| io::Error::other(format!("no reconcile in the log:\n{}", d.log())))?;
        full.push(Apply {
            ms: first.3,
            writes: first.1,
            messages: first.2,
            requests,
        });
        if round > 0 {
            continue;
        }
        // Its own writes echo back as events and cause one more (empty)
        // reconcile; let that pass.
        std::thread::sleep(Duration::from_millis(300));
        let pid = d
            .pid()
            .ok_or_else(|| io::Error::other("the daemon has no pid"))?;
        for _ in 0..opts.n(5, 20) {
            let seen = reconcile_lines(&d.log()).len();
            let before = w.sim.requests();
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGHUP,
            )
            .map_err(io::Error::other)?;
            wait_for(GIVE_UP, || reconcile_lines(&d.log()).len() > seen)
                .ok_or_else(|| io::Error::other("no reconcile after SIGHUP"))?;
            // The metadata read SIGHUP also asks for is not the
            // reconcile's; let it finish before the next round.
            std::thread::sleep(Duration::from_millis(100));
            let lines = reconcile_lines(&d.log());
            let Some(last) = lines.get(seen) else {
                continue;
            };
            noop.push(Apply {
                ms: last.3,
                writes: last.1,
                messages: last.2,
                requests: w.sim.requests() - before,
            });
        }
    }
    Ok((full, noop))
}

/// Runs the shell script inside the instance; its wall time in ms.
fn shell_apply(w: &ScaleWorld, script: &std::path::Path) -> io::Result<f64> {
    let mut cmd = command_in(&w.ns, "bash")?;
    cmd.arg(script).arg(&w.endpoint);
    let started = Instant::now();
    timed(cmd, "shell baseline")?;
    Ok(ms(started.elapsed()))
}

/// What a generated script does for the same state: IMDSv2 with curl, one
/// request per key, and one `ip` process per address, route and rule. `ip
/// addr replace` and `ip route replace` are idempotent; `ip rule add` of a
/// rule that exists fails (EEXIST), which the script ignores, so running it
/// again changes nothing.
const SHELL: &str = r#"#!/bin/bash
set -u
imds=$1
token=$(curl -sf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 21600' "$imds/latest/api/token") || exit 1
get() { curl -sf -H "X-aws-ec2-metadata-token: $token" "$imds/latest/meta-data/$1"; }
declare -A dev_of
while read -r line; do
  name=${line#*: }; name=${name%%[@:]*}
  mac=${line#*link/ether }; mac=${mac%% *}
  dev_of[$mac]=$name
done < <(ip -o link show)
ip rule add pref 9999 lookup main suppress_ifgroup 10000 proto 233 2>/dev/null || true
for entry in $(get network/interfaces/macs/); do
  mac=${entry%/}
  dev=${dev_of[$mac]:-}
  [ -n "$dev" ] || continue
  base=network/interfaces/macs/$mac
  device=$(get "$base/device-number")
  table=$((10000 + device))
  subnet=$(get "$base/subnet-ipv4-cidr-block")
  ips=$(get "$base/local-ipv4s")
  prefixes=$(get "$base/ipv4-prefix" || true)
  ipv6s=$(get "$base/ipv6s" || true)
  subnet6=$(get "$base/subnet-ipv6-cidr-blocks" || true)
  len=${subnet#*/}
  IFS=. read -r a b c d <<< "${subnet%/*}"
  gw="$a.$b.$c.$((d + 1))"
  ip link set dev "$dev" up group 10000
  primary=
  for ip in $ips; do
    if [ -z "$primary" ]; then
      primary=$ip
      ip addr replace "$ip/$len" dev "$dev"
    else
      ip addr replace "$ip/32" dev "$dev" noprefixroute
    fi
  done
  ip route replace "$subnet" dev "$dev" scope link src "$primary" table $table proto 233
  ip route replace default via "$gw" dev "$dev" table $table proto 233
  for ip in $ips $prefixes; do
    ip rule add from "$ip" lookup $table pref $table proto 233 2>/dev/null || true
  done
  for ip in $ipv6s; do
    ip -6 addr replace "$ip/128" dev "$dev" nodad
    ip -6 rule add from "$ip" lookup $table pref $table proto 233 2>/dev/null || true
  done
  if [ -n "$subnet6" ]; then
    ip -6 route replace "$subnet6" dev "$dev" table $table proto 233
    ip -6 route replace default via fe80:ec2::1 dev "$dev" table $table proto 233
  fi
done
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbose_counts_are_read_from_apply() {
        let out = "15 ENIs managed, 812 changes applied\n\
                   netlink writes: 812 in 1 passes, 830 netlink messages; metadata read in 40ms, reconcile in 30ms\n";
        assert_eq!(verbose_counts(out), Some((812, 830)));
        assert_eq!(verbose_counts("nothing"), None);
    }

    #[test]
    fn the_scale_tree_parses_to_every_eni_with_its_addresses() {
        let t = tree(ENIS, IPV4S, PREFIXES, IPV6S).unwrap();
        let inst =
            eniroute::imds::parse::instance_from(|p| eniroute::imds::tree::lookup(&t, p)).unwrap();
        let ready: Vec<_> = inst.ready().collect();
        assert_eq!(ready.len(), ENIS);
        assert!(ready.iter().all(|e| e.ipv4s.len() == IPV4S));
        assert!(ready.iter().all(|e| e.ipv4_prefixes.len() == PREFIXES));
        assert!(ready.iter().all(|e| e.ipv6s.len() == IPV6S));
    }
}
