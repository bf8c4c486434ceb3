//! The fault matrix: every fault an adversary tried on the agent, as one
//! table. Each case builds the management-network instance, runs the real
//! `eniroute daemon` against the IMDS simulator, keeps a real TCP probe
//! going from the admin host to eth1's secondary address and to eth0's
//! address (a new connection every few milliseconds, through each ENI's own
//! link), injects its fault, and asserts:
//!
//! - no probe failed, or, for a fault that breaks a link by nature (the link
//!   deleted, set down, its address deleted), that every failure began
//!   before the fault ended plus the bound stated in the case;
//! - the kernel's state (addresses, link groups and altnames, rules, routes
//!   in the ENI tables and eniroute's own, as `ip -j` shows them) after the
//!   fault equals the state before it, within [`REPAIR`];
//! - the daemon still runs, listens on no TCP or UDP socket, and never
//!   logged a metadata token.
//!
//! Cases run side by side (each in its own VPC, so namespaces never meet):
//! `FAULT_MATRIX_JOBS` (default 4) at a time; `FAULT_CASE=name` runs one.

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use eniroute_lab::agent::wait_for;
use eniroute_lab::sim::{Fault, Simulator};
use eniroute_lab::world::{self, ManagementLab};
use eniroute_lab::{Client, Netns};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// The state must be back to what it was this long after a fault ended:
/// the daemon's repair bound (a rule within a second, a metadata change
/// within a poll) with room for a busy machine.
const REPAIR: Duration = Duration::from_secs(10);
/// A connection that takes longer than this lost a packet: TCP's first
/// retransmission comes after a second. A probe that slow is a failure.
const PROBE_TIMEOUT: Duration = Duration::from_millis(900);
/// Pause between two probe connections.
const PROBE_GAP: Duration = Duration::from_millis(5);
/// Metadata polled every second, so that a fault held for a few seconds
/// is read several times.
const CONFIG: &str = "[metadata]\nvolatile_refresh_secs = 1\n";
/// eth1's MAC in the management-network instance.
const ETH1_MAC: &str = "0a:e0:00:01:00:01";
const ETH0_MAC: &str = "0a:e0:00:01:00:00";
/// Long enough for at least two metadata polls.
const TWO_POLLS: Duration = Duration::from_millis(2600);

struct Case {
    name: &'static str,
    /// What is done, for the printed matrix.
    fault: &'static str,
    /// `None`: no probe may fail. `Some(bound)`: the fault breaks
    /// connectivity by nature; every failed probe must have started within
    /// `bound` of the moment the fault ended ([`Ctx::ended`]).
    recover: Option<Duration>,
    run: fn(&mut Ctx),
}

const CASES: &[Case] = &[
    // Metadata: the service misbehaves. Unknown never deletes anything.
    Case {
        name: "imds_http_500",
        fault: "every metadata request answers 500 for two polls",
        recover: None,
        run: |c| c.metadata_fault(None, Fault::Status(500)),
    },
    Case {
        name: "imds_http_503_macs",
        fault: "the MAC listing answers 503 for two polls",
        recover: None,
        run: |c| c.metadata_fault(Some("network/interfaces/macs/"), Fault::Status(503)),
    },
    Case {
        name: "imds_token_403",
        fault: "the token PUT answers 403 (IMDSv1 only) for two polls",
        recover: None,
        run: |c| c.metadata_fault(Some("latest/api/token"), Fault::Status(403)),
    },
    Case {
        name: "imds_tokens_revoked",
        fault: "every token revoked (401 on the next read), twice",
        recover: None,
        run: |c| {
            for _ in 0..2 {
                c.lab.inst.sim.revoke_tokens();
                std::thread::sleep(Duration::from_millis(1300));
            }
        },
    },
    Case {
        name: "imds_slow",
        fault: "every answer delayed 3 s (past the request timeout)",
        recover: None,
        run: |c| c.metadata_fault(None, Fault::Delay(Duration::from_secs(3))),
    },
    Case {
        name: "imds_garbage",
        fault: "every answer is 200 with a binary/HTML body",
        recover: None,
        run: |c| c.metadata_fault(None, Fault::Garbage),
    },
    Case {
        name: "imds_huge",
        fault: "every answer is a chunked body past the size limit",
        recover: None,
        run: |c| c.metadata_fault(None, Fault::Oversized),
    },
    Case {
        name: "imds_dropped",
        fault: "every connection closed without an answer",
        recover: None,
        run: |c| c.metadata_fault(None, Fault::Drop),
    },
    Case {
        name: "imds_redirect",
        fault: "every answer a 301 elsewhere (never followed)",
        recover: None,
        run: |c| {
            let to = "http://169.254.169.254:1/latest/meta-data/".to_string();
            c.metadata_fault(None, Fault::Redirect(to));
        },
    },
    Case {
        name: "imds_garbage_values",
        fault: "eth1's local-ipv4s garbage for two polls; then its device-number and subnet garbage at a start",
        recover: None,
        run: |c| {
            c.set_eth1("local-ipv4s", Value::from("10.0.2.20\n\u{1}\u{2}"));
            std::thread::sleep(TWO_POLLS);
            c.restore_tree();
            // Static keys are read when an ENI is first seen.
            c.stop_daemon();
            c.set_eth1("device-number", Value::from("x1"));
            c.set_eth1("subnet-ipv4-cidr-block", Value::from("ten/24"));
            c.start_daemon(&[], false);
            c.until_warned(&["device-number", "x1"]);
            c.poke("10.0.1.10", "10000");
            c.restore_tree();
            c.stop_daemon();
            c.start_daemon(&[], false);
        },
    },
    Case {
        name: "a_local_ipv4s_404_once",
        fault: "eth1's local-ipv4s answers 404 for one read",
        recover: None,
        run: |c| c.one_read(Fault::Status(404)),
    },
    Case {
        name: "a_local_ipv4s_empty_once",
        fault: "eth1's local-ipv4s answers an empty 200 for one read",
        recover: None,
        run: |c| c.one_read(Fault::Body(String::new())),
    },
    Case {
        name: "b_metadata_address_as_secondary",
        fault: "169.254.169.254 listed as a secondary IP of eth1",
        recover: None,
        run: |c| {
            c.set_eth1(
                "local-ipv4s",
                Value::from(vec!["10.0.2.20", "10.0.2.21", "169.254.169.254"]),
            );
            c.until_warned(&["local-ipv4s", "169.254.169.254"]);
            std::thread::sleep(TWO_POLLS);
            c.restore_tree();
        },
    },
    Case {
        name: "c_subnet_host_bits_32_0",
        fault: "eth1's subnet read as 10.0.2.20/24, then /32, then /0 (each at a daemon start)",
        recover: None,
        run: |c| {
            // The subnet is a static key, read when an ENI is first seen:
            // a start is when a wrong one would do harm.
            for subnet in ["10.0.2.20/24", "10.0.2.20/32", "0.0.0.0/0"] {
                c.stop_daemon();
                c.set_eth1("subnet-ipv4-cidr-block", Value::from(subnet));
                c.start_daemon(&[], false);
                c.until_warned(&["subnet-ipv4-cidr-block", subnet]);
                // eth1 is held as the kernel has it; the loop goes on.
                c.poke("10.0.1.10", "10000");
            }
            c.restore_tree();
            c.stop_daemon();
            c.start_daemon(&[], false);
        },
    },
    Case {
        name: "k_address_on_two_enis",
        fault: "eth1's secondary 10.0.2.21 also listed on eth0",
        recover: None,
        run: |c| {
            c.lab.inst.sim.update(|t| {
                t["network"]["interfaces"]["macs"][ETH0_MAC]["local-ipv4s"] =
                    Value::from(vec!["10.0.1.10", "10.0.2.21"]);
            });
            c.until_warned(&["local-ipv4s", "10.0.2.21 is also listed"]);
            std::thread::sleep(TWO_POLLS);
            c.restore_tree();
        },
    },
    Case {
        name: "k_prefix_of_everything",
        fault: "eth1 delegated the IPv4 prefix 0.0.0.0/0",
        recover: None,
        run: |c| {
            c.set_eth1("ipv4-prefix", Value::from("0.0.0.0/0"));
            c.until_warned(&["ipv4-prefix", "0.0.0.0/0"]);
            std::thread::sleep(TWO_POLLS);
            c.restore_tree();
        },
    },
    // The host: others change the kernel under the agent.
    Case {
        name: "rule_flush",
        fault: "`ip rule flush`, then main and default put back (a network manager restart)",
        recover: Some(Duration::from_secs(2)),
        run: |c| {
            c.ip(&["rule", "flush"]);
            c.ip(&["rule", "add", "priority", "32766", "lookup", "main"]);
            c.ip(&["rule", "add", "priority", "32767", "lookup", "default"]);
            c.end();
        },
    },
    Case {
        name: "route_flush_eni_table",
        fault: "`ip route flush table 10001`",
        recover: Some(Duration::from_secs(2)),
        run: |c| {
            c.ip(&["route", "flush", "table", "10001"]);
            c.end();
        },
    },
    Case {
        name: "secondary_address_deleted",
        fault: "`ip addr del 10.0.2.21/32 dev eth1`",
        recover: Some(Duration::from_secs(2)),
        run: |c| {
            c.ip(&["addr", "del", "10.0.2.21/32", "dev", "eth1"]);
            c.end();
        },
    },
    Case {
        name: "link_flap",
        fault: "eth1 down and up again at once, five times",
        recover: Some(Duration::from_secs(2)),
        run: |c| {
            for _ in 0..5 {
                c.ip(&["link", "set", "eth1", "down"]);
                c.ip(&["link", "set", "eth1", "up"]);
                std::thread::sleep(Duration::from_millis(50));
            }
            c.end();
        },
    },
    Case {
        name: "j_link_set_down_by_admin",
        fault: "`ip link set eth1 down` held 1.5 s (must stay down), then up",
        recover: Some(Duration::from_secs(2)),
        run: |c| {
            c.ip(&["link", "set", "eth1", "down"]);
            std::thread::sleep(Duration::from_millis(1500));
            let shown = c.ip(&["-j", "link", "show", "eth1"]);
            assert!(
                !shown.contains("\"UP\""),
                "eth1 brought back up against the administrator:\n{shown}"
            );
            c.ip(&["link", "set", "eth1", "up"]);
            c.end();
        },
    },
    Case {
        name: "link_renamed",
        fault: "eth1 renamed mgmt0 (down, rename, up), then back to eth1",
        recover: Some(Duration::from_secs(2)),
        run: |c| {
            for (from, to) in [("eth1", "mgmt0"), ("mgmt0", "eth1")] {
                c.ip(&["link", "set", from, "down"]);
                c.ip(&["link", "set", from, "name", to]);
                c.ip(&["link", "set", to, "up"]);
                c.end();
                c.until_reached("10.0.2.21", "eth1's secondary reached after a rename");
            }
        },
    },
    Case {
        name: "link_deleted_and_readded",
        fault: "eth1's link deleted, then a new link with its MAC and name added",
        recover: Some(Duration::from_secs(3)),
        run: |c| {
            let eni = c.lab.inst.eni("eth1").expect("eth1").clone();
            c.lab.vpc.detach_eni(&eni).expect("delete eth1");
            std::thread::sleep(Duration::from_millis(300));
            let spec = eniroute_lab::EniSpec {
                name: "eth1".into(),
                mac: eni.mac(),
                subnet: eni.subnet(),
                addresses: vec![
                    "10.0.2.20".parse().expect("address"),
                    "10.0.2.21".parse().expect("address"),
                ],
            };
            c.lab
                .vpc
                .attach_eni(&c.lab.inst.ns, spec)
                .expect("re-add eth1");
            c.end();
        },
    },
    Case {
        name: "f_foreign_route_churn",
        fault: "500 routes added to a foreign table one by one, then deleted one by one",
        recover: None,
        run: |c| {
            let mark = c.daemon.log().len();
            let mut batch = String::new();
            for verb in ["add", "del"] {
                for i in 0..500u32 {
                    batch += &format!(
                        "route {verb} 192.168.{}.{}/32 dev eth0 table 500\n",
                        i / 250,
                        i % 250 + 1
                    );
                }
            }
            let mut ip = c
                .ns()
                .command("ip")
                .args(["-batch", "-"])
                .stdin(Stdio::piped())
                .spawn()
                .expect("ip -batch");
            if let Some(mut stdin) = ip.stdin.take() {
                use std::io::Write as _;
                stdin.write_all(batch.as_bytes()).expect("write the batch");
            }
            assert!(ip.wait().is_ok_and(|s| s.success()), "ip -batch failed");
            std::thread::sleep(Duration::from_millis(500));
            c.poke_rule();
            let log = c.daemon.log();
            let during = log.get(mark..).unwrap_or_default();
            // Changes outside its tables are no reason to read the whole
            // kernel again, nor to reconcile: only the deleted rule is.
            let reads = during.matches("re-read the kernel").count();
            let reconciles = during.matches("reconcile done").count();
            assert!(
                reads == 0 && reconciles <= 3,
                "{reads} full reads and {reconciles} reconciles for 1,000 foreign changes:\n{during}"
            );
            c.note(format!(
                "{reconciles} reconciles and {reads} full reads for 1,000 foreign changes"
            ));
        },
    },
    Case {
        name: "i_dhcp_address_dropped",
        fault: "eth1's primary held by a DHCP client (a lease lifetime) dropped for 1.5 s, then leased again",
        recover: None,
        run: |c| {
            let lease = [
                "10.0.2.20/24",
                "dev",
                "eth1",
                "valid_lft",
                "60",
                "preferred_lft",
                "60",
            ];
            // eth1's primary becomes a DHCP client's.
            c.stop_daemon();
            c.ip(&["addr", "del", "10.0.2.20/24", "dev", "eth1"]);
            c.ip(&[&["addr", "add"][..], &lease[..]].concat());
            c.start_daemon(&[], false);
            c.until_logged("ready with the lease", "ready: ");
            // The client drops it for a moment (networkctl reconfigure):
            // the secondary keeps answering, and the address is not
            // eniroute's to add back.
            c.ip(&["addr", "del", "10.0.2.20/24", "dev", "eth1"]);
            std::thread::sleep(Duration::from_millis(1500));
            let a = c.ip(&["-4", "-o", "addr", "show", "dev", "eth1"]);
            assert!(
                !a.contains("10.0.2.20/"),
                "the DHCP address was added back:\n{a}\n{}",
                c.diag()
            );
            c.ip(&[&["addr", "add"][..], &lease[..]].concat());
            c.poke_rule();
            // Back to eniroute's own primary, for the last comparison.
            c.stop_daemon();
            c.ip(&["addr", "del", "10.0.2.20/24", "dev", "eth1"]);
            let _ = std::fs::remove_dir_all(&c.root);
            c.start_daemon(&[], false);
        },
    },
    Case {
        name: "h_vpc_cni_secondaries",
        fault: "the VPC CNI's rule for a pod, and metadata listing the pods' secondary IPs on eth0",
        recover: None,
        run: |c| {
            // What aws-node leaves for a pod at 10.0.1.11: its rule at
            // priority 512 (the pod's veth and namespace do not matter here).
            let cni = ["to", "10.0.1.11", "lookup", "main", "priority", "512"];
            c.ip(&[&["rule", "add"][..], &cni[..]].concat());
            c.lab.inst.sim.update(|t| {
                t["network"]["interfaces"]["macs"][ETH0_MAC]["local-ipv4s"] =
                    Value::from(vec!["10.0.1.10", "10.0.1.11", "10.0.1.12"]);
            });
            std::thread::sleep(TWO_POLLS);
            c.poke_rule();
            let a = c.ip(&["-4", "-o", "addr", "show", "dev", "eth0"]);
            assert!(
                !a.contains("10.0.1.11/") && !a.contains("10.0.1.12/"),
                "the pods' addresses were put on the host:\n{a}\n{}",
                c.diag()
            );
            c.restore_tree();
            c.ip(&[&["rule", "del"][..], &cni[..]].concat());
        },
    },
    // The agent itself: killed, doubled, starved of its state directory.
    Case {
        name: "sigkill_mid_reconcile",
        fault: "SIGKILL at the first of 100 new secondary IPs going in, restart, then metadata drops them",
        recover: None,
        run: |c| {
            let mut ips = vec!["10.0.2.20".to_string(), "10.0.2.21".to_string()];
            ips.extend((100..200).map(|i| format!("10.0.2.{i}")));
            // The kernel's own notification of the first new address
            // triggers the kill: the reconcile is then surely under way
            // (addresses go in before routes and rules).
            let mut monitor = c
                .ns()
                .command("ip")
                .args(["monitor", "address"])
                .stdout(Stdio::piped())
                .spawn()
                .expect("ip monitor");
            let stdout = monitor.stdout.take().expect("monitor stdout");
            let pid = Pid::from_raw(c.daemon.pid());
            let killer = std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(stdout).lines() {
                    let Ok(line) = line else { return false };
                    if line.contains("inet 10.0.2.1") {
                        return kill(pid, Signal::SIGKILL).is_ok();
                    }
                }
                false
            });
            std::thread::sleep(Duration::from_millis(200));
            c.set_eth1("local-ipv4s", Value::from(ips.clone()));
            c.until("the daemon killed", || c.daemon.child_exited());
            let _ = monitor.kill();
            let _ = monitor.wait();
            assert!(killer.join().unwrap_or(false), "no kill sent");
            let count = |out: String| {
                ips[2..]
                    .iter()
                    .filter(|ip| out.contains(&format!(" {ip}")))
                    .count()
            };
            let addrs = count(c.ip(&["-o", "addr", "show", "dev", "eth1"]));
            let rules = count(c.ip(&["rule"]));
            c.note(format!(
                "killed with {addrs} of 100 addresses and {rules} of 100 rules in"
            ));
            c.start_daemon(&[], false);
            c.until("all 100 configured after the restart", || {
                let rules = c.ns().ip(["rule"]).unwrap_or_default();
                ips.iter().all(|ip| rules.contains(&format!("from {ip} ")))
            });
            c.restore_tree();
        },
    },
    Case {
        name: "second_daemon",
        fault: "a second daemon in the same namespace",
        recover: None,
        run: |c| c.second_daemon_refused(),
    },
    Case {
        name: "g_second_daemon_state_dir_removed",
        fault: "the state directory removed, then a second daemon",
        recover: None,
        run: |c| {
            std::fs::remove_dir_all(&c.root).expect("remove the state directory");
            c.second_daemon_refused();
            c.poke_rule();
        },
    },
    Case {
        name: "read_only_run",
        fault: "the daemon restarted with its state directory on a read-only mount",
        recover: None,
        run: |c| {
            c.stop_daemon();
            let mut ro = c.agent(&[], true);
            let exited = wait_for(REPAIR, || ro.exited().is_some());
            let log = ro.log();
            assert!(exited.is_some(), "kept running on a read-only /run:\n{log}");
            // Refused, naming the path and why, and routing left as it was.
            assert_eq!(ro.exited(), Some(1), "{log}");
            assert!(
                log.contains("Read-only file system") && log.contains("/lock"),
                "{log}"
            );
            c.note("refused to start: exit 1 naming the lock path".into());
            c.start_daemon(&[], false);
            c.poke_rule();
        },
    },
    Case {
        name: "d_config_fifo_sighup",
        fault: "the config file replaced by a FIFO, SIGHUP, then by /dev/zero, SIGHUP",
        recover: None,
        run: |c| {
            std::fs::remove_file(&c.cfg).expect("remove config");
            nix::unistd::mkfifo(&c.cfg, nix::sys::stat::Mode::from_bits_truncate(0o600))
                .expect("mkfifo");
            c.signal(Signal::SIGHUP);
            c.until_logged("FIFO refused", "FIFO");
            c.poke_rule();
            std::fs::remove_file(&c.cfg).expect("remove FIFO");
            std::os::unix::fs::symlink("/dev/zero", &c.cfg).expect("symlink /dev/zero");
            c.signal(Signal::SIGHUP);
            c.until_logged("/dev/zero refused", "device");
            c.poke_rule();
            std::fs::remove_file(&c.cfg).expect("remove symlink");
            std::fs::write(&c.cfg, CONFIG).expect("config");
        },
    },
    Case {
        name: "e_foreign_routes_in_range_restart",
        fault: "foreign routes in table 10001 and 10050, then the daemon restarted",
        recover: None,
        run: |c| {
            let foreign = [
                ["10.77.0.0/16", "dev", "eth0", "table", "10001"],
                ["10.50.0.0/16", "dev", "eth1", "table", "10050"],
            ];
            for route in &foreign {
                c.ip(&[&["route", "add"][..], &route[..]].concat());
            }
            c.stop_daemon();
            c.start_daemon(&[], false);
            c.until_logged("restart with foreign routes", "ready: ");
            c.poke_rule();
            for route in &foreign {
                c.ip(&[&["route", "del"][..], &route[..]].concat());
            }
        },
    },
    Case {
        name: "proxy_in_environment",
        fault: "the daemon restarted with http_proxy and HTTPS_PROXY set; a new IP then appears",
        recover: None,
        run: |c| {
            c.stop_daemon();
            let proxy = "http://10.9.0.5:3128";
            c.start_daemon(
                &[
                    ("http_proxy", proxy),
                    ("HTTP_PROXY", proxy),
                    ("HTTPS_PROXY", proxy),
                ],
                false,
            );
            c.set_eth1(
                "local-ipv4s",
                Value::from(vec!["10.0.2.20", "10.0.2.21", "10.0.2.22"]),
            );
            c.until("10.0.2.22 routed despite the proxy", || {
                c.ns()
                    .ip(["rule"])
                    .is_ok_and(|r| r.contains("from 10.0.2.22 "))
            });
            c.restore_tree();
            c.stop_daemon();
            c.start_daemon(&[], false);
        },
    },
];

/// One case's surroundings.
struct Ctx {
    lab: ManagementLab,
    daemon: Agent,
    /// Daemons this case replaced, kept for their logs.
    old: Vec<Agent>,
    cfg: PathBuf,
    /// The case's own state directory root (`ENIROUTE_RUN_ROOT`).
    root: PathBuf,
    tree: Value,
    /// When the injected fault ended, for cases that break connectivity.
    ended: Option<Instant>,
    notes: Vec<String>,
    name: &'static str,
}

impl Ctx {
    fn ns(&self) -> &Netns {
        &self.lab.inst.ns
    }

    fn sim(&self) -> &Simulator {
        &self.lab.inst.sim
    }

    fn ip(&self, args: &[&str]) -> String {
        self.ns()
            .ip(args)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.diag()))
    }

    fn end(&mut self) {
        self.ended = Some(Instant::now());
    }

    fn note(&mut self, s: String) {
        self.notes.push(s);
    }

    fn diag(&self) -> String {
        let mut s = dumps(self.ns());
        for (i, d) in self.old.iter().chain([&self.daemon]).enumerate() {
            s += &format!("--- daemon {i} log ---\n{}", d.log());
        }
        s
    }

    fn until(&self, what: &str, check: impl FnMut() -> bool) -> Duration {
        wait_for(REPAIR, check)
            .unwrap_or_else(|| panic!("{}: {what}: timed out\n{}", self.name, self.diag()))
    }

    fn until_logged(&self, what: &str, needle: &str) {
        self.until(what, || self.daemon.log().contains(needle));
    }

    /// Waits for one log line holding every needle.
    fn until_warned(&self, needles: &[&str]) {
        let what = format!("a log line with {needles:?}");
        self.until(&what, || {
            self.daemon
                .log()
                .lines()
                .any(|l| needles.iter().all(|n| l.contains(n)))
        });
    }

    fn until_reached(&self, ip: &str, what: &str) {
        self.until(what, || {
            reaches(&self.lab.admin, ip, 22, Duration::from_millis(300)).is_ok()
        });
    }

    /// Holds `fault` on `prefix` for two polls, then clears it.
    fn metadata_fault(&mut self, prefix: Option<&str>, fault: Fault) {
        let seen = self.sim().requests();
        self.sim().set_fault(prefix, Some(fault));
        std::thread::sleep(TWO_POLLS);
        self.sim().set_fault(prefix, None);
        assert!(
            self.sim().requests() > seen,
            "the daemon never asked during the fault"
        );
        // A rule deleted while metadata is still failing or just back is
        // restored all the same: repair never waits for metadata.
        self.poke_rule();
    }

    /// Serves `fault` for eth1's `local-ipv4s` on exactly one read.
    fn one_read(&mut self, fault: Fault) {
        let path = format!("network/interfaces/macs/{ETH1_MAC}/local-ipv4s");
        self.sim().set_fault_times(Some(&path), fault, 1);
        self.until("the faulty read served", || {
            self.sim().fault(Some(&path)).is_none()
        });
        self.until_warned(&["local-ipv4s", "until a second read confirms it"]);
        // Several more polls: only one read was wrong.
        std::thread::sleep(TWO_POLLS);
    }

    fn set_eth1(&self, key: &str, value: Value) {
        self.sim()
            .update(|t| t["network"]["interfaces"]["macs"][ETH1_MAC][key] = value);
    }

    fn restore_tree(&self) {
        self.sim().set_tree(self.tree.clone());
    }

    /// Deletes the rule of eth1's primary (which no probe uses) and waits
    /// for the daemon to put it back: proof that its event loop is alive
    /// and repairing.
    fn poke_rule(&self) {
        self.poke("10.0.2.20", "10001");
    }

    /// Deletes the rule `from ip lookup table` and waits for it to be back.
    fn poke(&self, ip: &str, table: &str) {
        self.ip(&[
            "rule", "del", "priority", table, "from", ip, "lookup", table,
        ]);
        let rule = format!("from {ip} lookup {table}");
        self.until(&format!("deleted rule {rule} restored"), || {
            self.ns().ip(["rule"]).is_ok_and(|r| r.contains(&rule))
        });
    }

    fn signal(&self, sig: Signal) {
        let _ = kill(Pid::from_raw(self.daemon.pid()), sig);
    }

    fn agent(&self, env: &[(&str, &str)], read_only_run: bool) -> Agent {
        Agent::start(
            &self.lab.inst.ns,
            &self.lab.inst.endpoint,
            &self.cfg,
            &self.root,
            self.name,
            env,
            read_only_run,
        )
    }

    fn start_daemon(&mut self, env: &[(&str, &str)], read_only_run: bool) {
        let new = self.agent(env, read_only_run);
        let old = std::mem::replace(&mut self.daemon, new);
        self.old.push(old);
    }

    fn stop_daemon(&mut self) {
        let code = self.daemon.term();
        assert_eq!(code, Some(0), "SIGTERM: exit {code:?}\n{}", self.diag());
    }

    fn second_daemon_refused(&mut self) {
        let mut second = self.agent(&[], false);
        let exited = wait_for(REPAIR, || second.exited().is_some());
        assert!(
            exited.is_some(),
            "a second daemon kept running beside the first\n{}",
            second.log()
        );
        let log = second.log();
        assert_eq!(second.exited(), Some(1), "{log}");
        assert!(
            log.contains("already managing") && log.contains(&format!("pid {}", self.daemon.pid())),
            "{log}"
        );
    }
}

impl Drop for Ctx {
    /// Also when the case failed: its files go with it.
    fn drop(&mut self) {
        self.daemon.kill();
        let _ = std::fs::remove_file(&self.cfg);
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A daemon of this case: `ip netns exec NS eniroute … daemon`, optionally
/// inside a mount namespace where its state directory root is read-only.
struct Agent {
    child: Child,
    log: PathBuf,
    code: Option<i32>,
}

static AGENTS: AtomicUsize = AtomicUsize::new(0);

impl Agent {
    fn start(
        ns: &Netns,
        endpoint: &str,
        cfg: &Path,
        root: &Path,
        name: &str,
        env: &[(&str, &str)],
        read_only_run: bool,
    ) -> Agent {
        let n = AGENTS.fetch_add(1, Ordering::Relaxed);
        let log = std::env::temp_dir()
            .join(format!("eniroute-fm-{}-{n}-{name}.log", std::process::id(),));
        let file = std::fs::File::create(&log).expect("daemon log");
        let agent = [
            bin().to_str().expect("utf-8 binary path"),
            "--imds-endpoint",
            endpoint,
            "--config",
            cfg.to_str().expect("utf-8 config path"),
            "daemon",
        ];
        let mut cmd = if read_only_run {
            // `ip netns exec` keeps the mount namespace it is started in, so
            // the agent sees the read-only bind mount made here.
            std::fs::create_dir_all(root).expect("run root");
            let root = root.to_str().expect("utf-8 root");
            let mut cmd = Command::new("unshare");
            cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
                .arg(format!(
                    "mount --bind -o ro {root} {root} && exec ip netns exec {} \"$@\"",
                    ns.name()
                ))
                .arg("sh")
                .args(agent);
            cmd
        } else {
            let mut cmd = ns.command(agent[0]);
            cmd.args(&agent[1..]);
            cmd
        };
        cmd.env("ENIROUTE_RUN_ROOT", root)
            .env("RUST_LOG", "eniroute=debug")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("http_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("https_proxy")
            .env_remove("HTTPS_PROXY")
            .env_remove("no_proxy")
            .env_remove("NO_PROXY")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file);
        let child = cmd.spawn().expect("spawn eniroute daemon");
        Agent {
            child,
            log,
            code: None,
        }
    }

    /// `unshare` and `ip netns exec` exec the agent: this is its pid.
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process is gone, without reaping it (a `&self` check).
    fn child_exited(&self) -> bool {
        !Path::new(&format!("/proc/{}/cmdline", self.pid())).exists()
            || std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
                .is_ok_and(|s| s.contains(") Z "))
    }

    fn exited(&mut self) -> Option<i32> {
        if self.code.is_none() {
            if let Ok(Some(s)) = self.child.try_wait() {
                self.code = Some(s.code().unwrap_or(-1));
            }
        }
        self.code
    }

    fn term(&mut self) -> Option<i32> {
        // A daemon started a moment ago may not have its handlers yet: a
        // SIGTERM then ends it as the default action does (exit -1), which
        // says nothing about the agent. It logs `starting` once they are in.
        wait_for(Duration::from_secs(5), || {
            self.log().contains(" starting (pid ") || self.child_exited()
        });
        if self.exited().is_none() {
            let _ = kill(Pid::from_raw(self.pid()), Signal::SIGTERM);
            wait_for(Duration::from_secs(5), || self.exited().is_some());
        }
        self.exited()
    }

    fn kill(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            if let Ok(s) = self.child.wait() {
                self.code = Some(s.code().unwrap_or(-1));
            }
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// One probe connection.
struct Sample {
    target: SocketAddr,
    at: Instant,
    took: Duration,
    error: Option<String>,
}

/// Connections from the admin host, one every [`PROBE_GAP`], to each
/// target in turn, until stopped.
struct Probe {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Probe {
    fn start(from: &Client, targets: Vec<SocketAddr>) -> Probe {
        let stop = Arc::new(AtomicBool::new(false));
        let from = from.clone();
        let flag = Arc::clone(&stop);
        let samples = Arc::new(Mutex::new(Vec::new()));
        let out = Arc::clone(&samples);
        let thread = std::thread::spawn(move || {
            from.run_in(|| {
                let mut i = 0;
                while !flag.load(Ordering::Acquire) {
                    let target = targets[i % targets.len()];
                    i += 1;
                    let at = Instant::now();
                    let error = probe_once(target).err();
                    out.lock().unwrap_or_else(|e| e.into_inner()).push(Sample {
                        target,
                        at,
                        took: at.elapsed(),
                        error,
                    });
                    std::thread::sleep(PROBE_GAP);
                }
            })
            .expect("probe thread in the admin namespace")
        });
        Probe {
            stop,
            samples,
            thread: Some(thread),
        }
    }

    /// Whether every target answered a connection begun after `t`.
    fn answered_since(&self, t: Instant, targets: &[SocketAddr]) -> bool {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        targets.iter().all(|target| {
            samples
                .iter()
                .any(|s| s.target == *target && s.at > t && s.error.is_none())
        })
    }

    fn finish(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        std::mem::take(&mut *self.samples.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A connection that answers with the admin host's own address (no NAT,
/// no wrong source) within [`PROBE_TIMEOUT`].
fn probe_once(target: SocketAddr) -> Result<(), String> {
    let start = Instant::now();
    let mut s = TcpStream::connect_timeout(&target, PROBE_TIMEOUT).map_err(|e| e.to_string())?;
    let left = PROBE_TIMEOUT.saturating_sub(start.elapsed());
    s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).map_err(|e| e.to_string())?;
    if start.elapsed() > PROBE_TIMEOUT {
        return Err(format!("took {:?}", start.elapsed()));
    }
    if !answer.starts_with("10.9.0.5:") {
        return Err(format!("server saw {answer:?}"));
    }
    Ok(())
}

/// The kernel state the agent is responsible for, one sorted line per
/// object, from `ip -j`: addresses (not the kernel's IPv6 link-local
/// ones), the managed links' group and altnames, every rule, and the
/// routes in the ENI tables (10000-10099) or of eniroute's protocol.
fn kernel_state(ns: &Netns) -> Vec<String> {
    let json = |args: &[&str]| -> Vec<Value> {
        let out = ns.ip(args).unwrap_or_default();
        serde_json::from_str(&out).unwrap_or_default()
    };
    let mut lines = Vec::new();
    for link in json(&["-j", "-d", "addr"]) {
        let name = link["ifname"].as_str().unwrap_or("?").to_string();
        if name == "lo" {
            continue;
        }
        lines.push(format!(
            "link {name} group {} altnames {}",
            link["group"], link["altnames"]
        ));
        for a in link["addr_info"].as_array().into_iter().flatten() {
            if a["scope"] == "link" {
                continue;
            }
            lines.push(format!(
                "addr {name} {}/{} {}",
                a["local"].as_str().unwrap_or("?"),
                a["prefixlen"],
                a.get("protocol").map(|p| p.to_string()).unwrap_or_default()
            ));
        }
    }
    for family in ["-4", "-6"] {
        for rule in json(&[family, "-j", "rule"]) {
            lines.push(format!("rule {rule}"));
        }
        for route in json(&[family, "-j", "route", "show", "table", "all"]) {
            let table = route["table"].as_str().and_then(|t| t.parse::<u32>().ok());
            let ours = route["protocol"] == "233" || route["protocol"] == "eniroute";
            if ours || table.is_some_and(|t| (10000..10100).contains(&t)) {
                let mut r = route.clone();
                if let Some(o) = r.as_object_mut() {
                    o.remove("expires");
                    o.remove("flags");
                }
                lines.push(format!("route {r}"));
            }
        }
    }
    lines.sort();
    lines
}

fn state_diff(before: &[String], after: &[String]) -> String {
    let mut s = String::new();
    for l in before.iter().filter(|l| !after.contains(l)) {
        s += &format!("  - {l}\n");
    }
    for l in after.iter().filter(|l| !before.contains(l)) {
        s += &format!("  + {l}\n");
    }
    s
}

/// A metadata token (the simulator's are 48 hex digits) in `log`.
fn has_token(log: &str) -> bool {
    let mut run = 0;
    for b in log.bytes() {
        run = if b.is_ascii_hexdigit() { run + 1 } else { 0 };
        if run >= 48 {
            return true;
        }
    }
    false
}

/// What one case measured.
struct Report {
    name: &'static str,
    probes: usize,
    failed: usize,
    /// The longest a target went without a successful connection.
    longest_gap: Duration,
    repaired: Duration,
    notes: Vec<String>,
}

fn run_case(case: &Case) -> Report {
    let lab = world::management_network().expect("build the instance");
    let tag = format!("{}-{}", std::process::id(), case.name);
    let cfg = std::env::temp_dir().join(format!("eniroute-fm-{tag}.toml"));
    std::fs::write(&cfg, CONFIG).expect("write config");
    let root = std::env::temp_dir().join(format!("eniroute-fm-{tag}-run"));
    let _ssh = server(&lab.inst.ns, 22);
    let tree = lab.inst.sim.tree();
    let daemon = Agent::start(
        &lab.inst.ns,
        &lab.inst.endpoint,
        &cfg,
        &root,
        case.name,
        &[],
        false,
    );
    let mut ctx = Ctx {
        daemon,
        lab,
        old: Vec::new(),
        cfg,
        root,
        tree,
        ended: None,
        notes: Vec::new(),
        name: case.name,
    };
    for ip in ["10.0.2.21", "10.0.2.20", "10.0.1.10"] {
        ctx.until_reached(ip, "converged before the fault");
    }
    ctx.until_logged("ready before the fault", "ready: ");
    // Events the first reconcile caused (DAD, altnames) settle first.
    std::thread::sleep(Duration::from_millis(300));
    let before = kernel_state(ctx.ns());

    let targets: Vec<SocketAddr> = ["10.0.2.21:22", "10.0.1.10:22"]
        .iter()
        .map(|s| s.parse().expect("address"))
        .collect();
    let probe = Probe::start(&ctx.lab.admin, targets.clone());
    let started = Instant::now();
    // A baseline: the probe works before anything is done.
    std::thread::sleep(Duration::from_millis(300));
    (case.run)(&mut ctx);
    let ended = ctx.ended.unwrap_or_else(Instant::now);
    let repaired = wait_for(REPAIR, || kernel_state(ctx.ns()) == before);
    // Probes go on until each target answered a connection begun after the
    // state was back: what the repair left must carry traffic too.
    let back = Instant::now();
    let answered = wait_for(REPAIR, || probe.answered_since(back, &targets));
    let samples = probe.finish();
    let after = kernel_state(ctx.ns());
    assert!(
        repaired.is_some(),
        "{}: state not back to what it was {REPAIR:?} after the fault:\n{}\n{}",
        case.name,
        state_diff(&before, &after),
        ctx.diag()
    );

    let failures: Vec<&Sample> = samples.iter().filter(|s| s.error.is_some()).collect();
    let describe = |s: &&Sample| {
        format!(
            "  {} at +{:?} ({:?}): {}",
            s.target,
            s.at - started,
            s.took,
            s.error.as_deref().unwrap_or("")
        )
    };
    match case.recover {
        None => assert!(
            failures.is_empty(),
            "{}: {} of {} probes failed:\n{}\n{}",
            case.name,
            failures.len(),
            samples.len(),
            failures.iter().map(describe).collect::<Vec<_>>().join("\n"),
            ctx.diag()
        ),
        Some(bound) => {
            let late: Vec<&&Sample> = failures.iter().filter(|s| s.at > ended + bound).collect();
            assert!(
                late.is_empty(),
                "{}: probes failed more than {bound:?} after the fault ended:\n{}\n{}",
                case.name,
                late.iter()
                    .map(|s| describe(s))
                    .collect::<Vec<_>>()
                    .join("\n"),
                ctx.diag()
            );
        }
    }
    let after_repair: Vec<&Sample> = failures.iter().copied().filter(|s| s.at > back).collect();
    assert!(
        answered.is_some() && after_repair.is_empty(),
        "{}: connections fail with the state back:\n{}\n{}",
        case.name,
        after_repair
            .iter()
            .map(describe)
            .collect::<Vec<_>>()
            .join("\n"),
        ctx.diag()
    );

    assert!(
        ctx.daemon.exited().is_none(),
        "{}: the daemon exited\n{}",
        case.name,
        ctx.diag()
    );
    let sockets = ctx
        .ns()
        .exec(["ss", "-H", "-ltunp"])
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let pid = format!("pid={},", ctx.daemon.pid());
    assert!(
        !sockets.lines().any(|l| l.contains(&pid)),
        "{}: the daemon listens:\n{sockets}",
        case.name
    );
    for d in ctx.old.iter().chain([&ctx.daemon]) {
        assert!(
            !has_token(&d.log()),
            "{}: a token in the log:\n{}",
            case.name,
            d.log()
        );
    }

    let longest_gap = targets
        .iter()
        .map(|t| {
            let mut last_ok = started;
            let mut gap = Duration::ZERO;
            for s in samples.iter().filter(|s| s.target == *t) {
                match s.error {
                    None => last_ok = s.at + s.took,
                    Some(_) => gap = gap.max(s.at + s.took - last_ok),
                }
            }
            gap
        })
        .max()
        .unwrap_or_default();
    let report = Report {
        name: case.name,
        probes: samples.len(),
        failed: failures.len(),
        longest_gap,
        repaired: repaired.unwrap_or_default(),
        notes: std::mem::take(&mut ctx.notes),
    };
    assert_eq!(ctx.daemon.term(), Some(0), "{}", ctx.diag());
    report
}

#[test]
fn fault_matrix() {
    if !need_root("fault_matrix") {
        return;
    }
    let only = std::env::var("FAULT_CASE").ok();
    let cases: Vec<&Case> = CASES
        .iter()
        .filter(|c| only.as_deref().is_none_or(|o| c.name == o))
        .collect();
    assert!(!cases.is_empty(), "no case named {only:?}");
    let jobs = std::env::var("FAULT_MATRIX_JOBS")
        .ok()
        .and_then(|j| j.parse().ok())
        .unwrap_or(4usize)
        .clamp(1, cases.len());
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Result<Report, String>)>> = Mutex::new(Vec::new());
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(case) = cases.get(i) else { return };
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_case(case)))
                    .map_err(|p| {
                        p.downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_else(|| "panicked".into())
                    });
                results
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((i, r));
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    results.sort_by_key(|(i, _)| *i);
    let mut table = format!(
        "fault matrix: {} cases in {:?} ({jobs} at a time)\n{:<36} {:>6} {:>6} {:>10} {:>10}  fault\n",
        cases.len(),
        t0.elapsed(),
        "case",
        "probes",
        "failed",
        "max gap",
        "repaired"
    );
    let mut failed = Vec::new();
    for (i, r) in &results {
        let case = cases[*i];
        match r {
            Ok(r) => {
                table += &format!(
                    "✓ {:<34} {:>6} {:>6} {:>8}ms {:>8}ms  {}{}\n",
                    r.name,
                    r.probes,
                    r.failed,
                    r.longest_gap.as_millis(),
                    r.repaired.as_millis(),
                    case.fault,
                    r.notes.iter().map(|n| format!("; {n}")).collect::<String>()
                );
            }
            Err(e) => {
                table += &format!("✗ {:<34} {}\n", case.name, case.fault);
                failed.push(format!("━━ {} ━━\n{e}", case.name));
            }
        }
    }
    // Straight to stderr, as need_root does: the matrix is the point.
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{table}");
    assert!(failed.is_empty(), "{}\n{table}", failed.join("\n"));
}
