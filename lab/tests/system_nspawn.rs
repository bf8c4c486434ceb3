//! The packaged agent on a real system: a Debian 12 root filesystem built
//! from Debian's packages, booted with systemd as PID 1 (systemd-nspawn) in
//! an instance namespace of a simulated VPC, the freshly built .deb
//! installed with dpkg. The VPC router serves metadata and DHCP (dnsmasq),
//! and systemd-networkd in the guest runs DHCP on every ENI with Amazon
//! Linux 2023's network file (packaging/networkd/80-ec2.network). Every check is what a user sees: TCP
//! from the admin host, `ip route get … from …` in the guest, what systemd
//! reports, what dpkg leaves on disk.
//!
//! One boot runs all the checks in sequence, as an administrator's session
//! would: install, networkd restart, DHCP renew, hotplug, an IP move, stop,
//! a networkd reconfigure, upgrade, remove, purge.

mod common;

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;
use eniroute::values::Mac;
use eniroute_lab::agent::wait_for;
use eniroute_lab::dhcp::DhcpServer;
use eniroute_lab::guest::{self, Guest, RootfsError, RunDir};
use eniroute_lab::imds_tree::instance_tree;
use eniroute_lab::world::{self, EniPlan, LabInstance};
use eniroute_lab::{Client, Netns, TcpServer, Vpc};

/// Amazon Linux 2023's DHCP-on-every-ENI network file, as the rpm ships it
/// in amazon-ec2-net-utils' place, made to match the lab's veth ENIs
/// instead of the ena/ixgbevf/vif drivers, at the lab's MTU (the router's
/// ports are not jumbo).
fn ec2_network() -> String {
    let shipped = include_str!("../../packaging/networkd/80-ec2.network");
    let matched = shipped.replace("Driver=ena ixgbevf vif", "Driver=veth");
    assert_ne!(
        matched, shipped,
        "80-ec2.network no longer matches by driver"
    );
    matched
        .lines()
        .filter(|l| !l.starts_with("MTUBytes="))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// An administrator's edit of the packaged configuration: kept by every
/// upgrade, and it makes the daemon notice a moved IP within a second.
const ADMIN_EDIT: &str = "\n# administrator: fast polling on this HA pair, and metrics\n[metadata]\nvolatile_refresh_secs = 1\n[metrics]\ntextfile = \"/run/eniroute/eniroute.prom\"\n";

/// Convergence is not timed here; it only must not hang.
const CONVERGE: Duration = Duration::from_secs(30);
const PROBE: Duration = Duration::from_millis(500);
const PORT: u16 = 22;

/// Says on stderr why the test cannot run here and returns; in CI, where it
/// must run, fails instead.
fn cannot_run(why: &str) {
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false") {
        panic!("the real-system test must run in CI, but {why}");
    }
    // Straight to stderr: the test harness hides what eprintln! prints in a
    // passing test, and a skip must be seen.
    let _ = writeln!(std::io::stderr(), "skipped: real-system test: {why}");
}

fn note(what: &str) {
    let _ = writeln!(std::io::stderr(), "system_nspawn: {what}");
}

fn workspace() -> PathBuf {
    let lab = Path::new(env!("CARGO_MANIFEST_DIR"));
    lab.parent().unwrap_or(lab).to_path_buf()
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace().join(dir),
        None => workspace().join("target"),
    }
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A .deb built by packaging/build.sh from the `eniroute` binary this
/// `cargo test` built, and its version.
struct Deb {
    path: PathBuf,
    version: String,
}

/// Where the guest sees the run's `pkgs` directory (bound read-only).
const PKGS_IN_GUEST: &str = "/root/pkgs";

impl Deb {
    /// Where the guest sees it: `pkgs/<dir>/<file>` of the run directory.
    fn in_guest(&self) -> String {
        let mut parts = self.path.iter().rev();
        let file = parts.next().unwrap_or_default().to_string_lossy();
        let dir = parts.next().unwrap_or_default().to_string_lossy();
        format!("{PKGS_IN_GUEST}/{dir}/{file}")
    }
}

/// Builds the packages into `dir`, with package revision `revision` if
/// given (a newer package of the same agent, for the upgrade).
fn build_deb(dir: &Path, revision: Option<u32>) -> Deb {
    let bin = eniroute_lab::agent::binary().expect("the eniroute binary");
    let mut cmd = Command::new("bash");
    cmd.arg(workspace().join("packaging/build.sh"))
        .arg("--bin")
        .arg(&bin)
        .arg("--out")
        .arg(dir)
        // The test needs the package's contents, not the best compression
        // (xz at its default level takes half a minute here).
        .env("DPKG_DEB_COMPRESSOR_LEVEL", "1");
    // The man page generator `cargo test` built beside the agent, rather
    // than a cargo build from inside the test.
    let gen = bin.with_file_name("eniroute-gen");
    if gen.is_file() {
        cmd.arg("--gen").arg(gen);
    }
    if let Some(r) = revision {
        cmd.arg("--revision").arg(r.to_string());
    }
    let o = cmd.output().expect("run packaging/build.sh");
    assert!(o.status.success(), "packaging/build.sh: {}", text(&o));
    let path = std::fs::read_dir(dir)
        .expect("read packages dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .unwrap_or_else(|| panic!("build.sh made no .deb: {}", text(&o)));
    let o = Command::new("dpkg-deb")
        .arg("-f")
        .arg(&path)
        .arg("Version")
        .output()
        .expect("dpkg-deb -f");
    let version = String::from_utf8_lossy(&o.stdout).trim().to_string();
    Deb { path, version }
}

/// The simulated VPC and the booted guest. Fields drop in order: the guest
/// is shut down before the DHCP server, the metadata service and the
/// namespaces go.
struct System {
    guest: Guest,
    _ssh: TcpServer,
    dhcp: DhcpServer,
    inst: LabInstance,
    admin: Client,
    vpc: Vpc,
}

impl System {
    /// Runs a shell script in the guest; panics with its output and the
    /// system's state when it fails.
    fn sh(&self, script: &str) -> String {
        let o = self
            .guest
            .sh(script)
            .unwrap_or_else(|e| self.fail(&format!("{script}: {e}")));
        if !o.status.success() {
            self.fail(&format!("{script}: {}", text(&o)));
        }
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// A script's stdout whatever its exit status.
    fn sh_any(&self, script: &str) -> String {
        self.guest
            .sh(script)
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// `systemctl show` of the unit, as KEY=VALUE lines.
    fn unit(&self) -> String {
        self.sh_any(
            "systemctl show -p LoadState,ActiveState,SubState,StatusText,UnitFileState,MainPID eniroute.service",
        )
    }

    fn unit_prop(&self, key: &str) -> String {
        self.unit()
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_owned))
            .unwrap_or_default()
    }

    /// Everything that explains a failure: the unit, the guest's routing,
    /// the journals of eniroute and networkd, the DHCP server's log.
    fn diag(&self) -> String {
        let guest = self.sh_any(
            "systemctl --no-pager status eniroute.service 2>&1 | head -n 5; \
             ip rule; ip -br addr; ip route show table all | grep -v -e '^local' -e '^broadcast' -e '^multicast' -e fe80 -e ff00; \
             journalctl --no-pager -n 60 -u eniroute.service; journalctl --no-pager -n 30 -u systemd-networkd.service",
        );
        let dhcp = self.dhcp.log();
        let dhcp: Vec<&str> = dhcp.lines().rev().take(15).collect();
        format!(
            "--- guest ---\n{guest}\n--- dnsmasq (last lines) ---\n{}",
            dhcp.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }

    fn fail(&self, what: &str) -> ! {
        panic!("{what}\n{}", self.diag())
    }

    /// The admin host connects to `ip`: the answer must come back, and the
    /// server must have seen the admin's own address (nothing rewrote it).
    fn reaches(&self, ip: &str) -> Result<String, String> {
        let seen = reaches(&self.admin, ip, PORT, PROBE)?;
        if seen.starts_with(&format!("{}:", self.admin.addr())) {
            Ok(seen)
        } else {
            Err(format!("{ip} answered, but saw {seen:?}"))
        }
    }

    fn until_reached(&self, ip: &str, why: &str) -> Duration {
        wait_for(CONVERGE, || self.reaches(ip).is_ok()).unwrap_or_else(|| {
            let last = self.reaches(ip).err().unwrap_or_default();
            self.fail(&format!(
                "{why}: the admin host never reached {ip}:{PORT} ({last})"
            ))
        })
    }

    fn assert_reached(&self, ips: &[&str], why: &str) {
        for ip in ips {
            if let Err(e) = self.reaches(ip) {
                self.fail(&format!(
                    "{why}: the admin host cannot reach {ip}:{PORT}: {e}"
                ));
            }
        }
    }

    /// The interface the guest's kernel sends a reply from `from` to the
    /// admin host through (`ip route get ADMIN from FROM` in the guest).
    fn reply_dev(&self, from: &str) -> String {
        let out = self.sh(&format!("ip route get {} from {from}", self.admin.addr()));
        let mut words = out.split_whitespace();
        while let Some(w) = words.next() {
            if w == "dev" {
                return words.next().unwrap_or_default().to_string();
            }
        }
        self.fail(&format!("no device in `ip route get`: {out}"))
    }

    fn assert_replies_leave(&self, from: &str, dev: &str, why: &str) {
        let got = self.reply_dev(from);
        if got != dev {
            self.fail(&format!(
                "{why}: replies from {from} leave through {got}, not {dev}"
            ));
        }
    }

    fn rules(&self) -> String {
        self.sh("ip rule")
    }

    fn has_rule_from(&self, ip: &str) -> bool {
        self.rules()
            .lines()
            .any(|l| l.contains(&format!("from {ip} lookup")))
    }

    fn addr_on(&self, dev: &str, ip: &str) -> bool {
        self.sh_any(&format!("ip -4 -o addr show dev {dev}"))
            .contains(&format!("inet {ip}/"))
    }

    fn until(&self, what: &str, mut check: impl FnMut() -> bool) -> Duration {
        wait_for(CONVERGE, &mut check).unwrap_or_else(|| self.fail(&format!("{what}: timed out")))
    }

    fn until_active(&self, why: &str) {
        self.until(&format!("{why}: eniroute.service active"), || {
            self.unit_prop("ActiveState") == "active"
        });
    }

    /// Waits for one more DHCPACK of `addr` than `before`.
    fn until_acked(&self, addr: Ipv4Addr, before: usize, why: &str) {
        self.until(&format!("{why}: DHCPACK for {addr}"), || {
            self.dhcp.acks(addr) > before
        });
    }

    /// The management ENI's routing as it was after install: rules, the
    /// secondary address, replies leaving eth1, TCP from the admin host.
    fn assert_eth1_intact(&self, why: &str) {
        for ip in ["10.0.2.20", "10.0.2.21"] {
            if !self.has_rule_from(ip) {
                self.fail(&format!("{why}: the rule from {ip} is gone"));
            }
            self.assert_replies_leave(ip, "eth1", why);
        }
        if !self.addr_on("eth1", "10.0.2.21") {
            self.fail(&format!("{why}: the secondary address 10.0.2.21 left eth1"));
        }
        self.assert_reached(&["10.0.2.20", "10.0.2.21", "10.0.1.10"], why);
    }

    fn config(&self) -> String {
        self.sh_any("cat /etc/eniroute/config.toml")
    }
}

/// An operator's long-lived session (think SSH) from the admin host to an
/// address of the guest: one TCP connection, kept open across the package's
/// upgrades and removal, that must keep carrying data both ways.
struct Session {
    client: TcpStream,
    server: TcpStream,
    peer: String,
}

impl Session {
    fn open(sys: &System, ip: Ipv4Addr) -> Session {
        let port = 2222;
        let listener = sys
            .inst
            .ns
            .run_in(|| TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)))
            .and_then(|r| r)
            .unwrap_or_else(|e| sys.fail(&format!("listen on :{port} in the guest: {e}")));
        let to = SocketAddr::from((ip, port));
        let client = sys
            .admin
            .run_in(|| TcpStream::connect_timeout(&to, Duration::from_secs(5)))
            .and_then(|r| r)
            .unwrap_or_else(|e| sys.fail(&format!("admin host: connect to {to}: {e}")));
        let (server, _) = listener
            .accept()
            .unwrap_or_else(|e| sys.fail(&format!("accept on {to}: {e}")));
        for s in [&client, &server] {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        }
        Session {
            client,
            server,
            peer: to.to_string(),
        }
    }

    /// One line each way; `Err` says which way failed.
    fn exchange(&self, line: &str) -> Result<(), String> {
        let mut buf = [0u8; 256];
        for (from, to, way) in [
            (&self.client, &self.server, "to the guest"),
            (&self.server, &self.client, "back to the admin host"),
        ] {
            let (mut from, mut to) = (from, to);
            from.write_all(format!("{line}\n").as_bytes())
                .map_err(|e| format!("{way}: write: {e}"))?;
            let n = to.read(&mut buf).map_err(|e| format!("{way}: {e}"))?;
            if !String::from_utf8_lossy(&buf[..n]).contains(line) {
                return Err(format!(
                    "{way}: got {:?}",
                    String::from_utf8_lossy(&buf[..n])
                ));
            }
        }
        Ok(())
    }

    fn assert_alive(&self, sys: &System, why: &str) {
        if let Err(e) = self.exchange(why) {
            sys.fail(&format!("{why}: the session to {} broke: {e}", self.peer));
        }
    }
}

fn plan(name: &str, device: u32, subnet: &str, ips: &[&str]) -> EniPlan {
    EniPlan::new(name, device, subnet, ips).expect("ENI plan")
}

/// Builds the VPC, boots the guest in its instance and starts the admin
/// host's view: eth0 (10.0.1.10) and eth1 (10.0.2.20, secondary 10.0.2.21)
/// attached before boot; DHCP knows their primaries.
fn boot(image: &Path, run: &Path) -> System {
    let vpc = Vpc::new().expect("router namespace");
    let ns = vpc.instance("guest").expect("instance namespace");
    let (sim, endpoint) = world::metadata_endpoint(&vpc, 80).expect("metadata endpoint");
    let id = 1;
    let primary = Mac::new([0x0a, 0xe0, 0, id, 0, 0]);
    sim.set_tree(instance_tree("i-0guest01", primary, &[]));
    let mut inst = LabInstance {
        ns,
        enis: Vec::new(),
        sim,
        endpoint,
        id,
    };
    let dhcp = DhcpServer::start(
        vpc.router(),
        &run.join("dhcp"),
        &[
            "10.0.1.0/24".parse().unwrap(),
            "10.0.2.0/24".parse().unwrap(),
        ],
    )
    .expect("start dnsmasq");
    for p in [
        plan("eth0", 0, "10.0.1.0/24", &["10.0.1.10"]),
        plan("eth1", 1, "10.0.2.0/24", &["10.0.2.20", "10.0.2.21"]),
    ] {
        let eni = inst.attach(&vpc, &p, true).expect("attach ENI");
        dhcp.add_host(eni.mac(), eni.primary()).expect("DHCP host");
    }
    assert_eq!(inst.eni("eth0").map(|e| e.mac()).ok(), Some(primary));
    let admin = vpc
        .client("admin", "10.9.0.5/24".parse().unwrap())
        .expect("admin host");
    let ssh = server(&inst.ns, PORT);
    let pkgs = run.join("pkgs");
    let guest = Guest::boot(
        &guest::Boot {
            image,
            ns: &inst.ns,
            machine: &format!("er{}-guest", std::process::id()),
            dir: run,
            network: &ec2_network(),
            binds: &[(&pkgs, PKGS_IN_GUEST)],
        },
        Duration::from_secs(120),
    )
    .expect("boot the guest");
    System {
        guest,
        _ssh: ssh,
        dhcp,
        inst,
        admin,
        vpc,
    }
}

#[test]
fn debian_guest_runs_the_package_under_systemd() {
    if !need_root("debian_guest_runs_the_package_under_systemd") {
        return;
    }
    let missing: Vec<&str> = guest::HOST_TOOLS
        .iter()
        .copied()
        .filter(|t| !guest::have(t))
        .collect();
    if !missing.is_empty() {
        return cannot_run(&format!("{} not installed", missing.join(", ")));
    }
    let started = Instant::now();
    // Namespaces of runs killed before they could clean up (their guest and
    // DHCP server are ended by RunDir::create, below).
    let _ = eniroute_lab::cleanup_stale();
    let cache = target_dir().join("nspawn");
    let cached = match guest::rootfs(&cache) {
        Ok(p) => p,
        Err(RootfsError::Offline(why)) => return cannot_run(&why),
        Err(RootfsError::Failed(e)) => panic!("Debian root filesystem: {e}"),
    };
    let t_rootfs = started.elapsed();
    let run = RunDir::create(&cache).expect("run directory");

    let t = Instant::now();
    let first = build_deb(&run.path().join("pkgs/first"), None);
    let revision: u32 = first
        .version
        .rsplit_once('-')
        .and_then(|(_, r)| r.parse().ok())
        .unwrap_or_else(|| panic!("no package revision in version {:?}", first.version));
    let newer = build_deb(&run.path().join("pkgs/newer"), Some(revision + 1));
    let t_packages = t.elapsed();

    let deb = first.in_guest();

    let t = Instant::now();
    let mut sys = boot(&cached, run.path());
    let t_boot = t.elapsed();
    let t = Instant::now();

    // Before the package: DHCP gave both ENIs their primaries, and each a
    // default route in main, as on Amazon Linux 2023.
    sys.until("DHCP on eth0 and eth1", || {
        sys.addr_on("eth0", "10.0.1.10") && sys.addr_on("eth1", "10.0.2.20")
    });
    let main = sys.sh("ip route show default");
    assert!(
        main.contains("dev eth0 proto dhcp") && main.contains("dev eth1 proto dhcp"),
        "networkd's DHCP should give every ENI a default route:\n{main}"
    );

    // Install: enabled, started, and ready after its first reconcile.
    let out = sys.sh(&format!("dpkg -i {deb} 2>&1"));
    sys.until_active("after dpkg -i");
    let unit = sys.unit();
    for want in [
        "ActiveState=active",
        "SubState=running",
        "UnitFileState=enabled",
    ] {
        if !unit.contains(want) {
            sys.fail(&format!("after install, want {want}:\n{unit}\n{out}"));
        }
    }
    if !sys.unit_prop("StatusText").contains("2 ENIs managed") {
        sys.fail(&format!(
            "StatusText should report the first reconcile:\n{unit}"
        ));
    }
    // The hardened unit: a user of its own, holding CAP_NET_ADMIN only.
    let pid = sys.unit_prop("MainPID");
    let status = sys.sh(&format!("cat /proc/{pid}/status"));
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let uids = field("Uid:");
    if uids.is_empty() || uids.iter().any(|u| u == "0") {
        sys.fail(&format!(
            "the daemon (pid {pid}) runs as root: Uid {uids:?}"
        ));
    }
    // Bit 12 alone: CAP_NET_ADMIN.
    if field("CapEff:") != ["0000000000001000"] {
        sys.fail(&format!(
            "the daemon should hold CAP_NET_ADMIN only:\n{status}"
        ));
    }

    // Replies from eth1's primary and secondary leave eth1; the admin host
    // reaches every address.
    sys.until_reached("10.0.2.21", "after install");
    sys.assert_eth1_intact("after install");
    sys.assert_replies_leave("10.0.1.10", "eth0", "after install");

    // The administrator edits the configuration and reloads.
    sys.sh(&format!(
        "printf '{}' >> /etc/eniroute/config.toml",
        ADMIN_EDIT.replace('\n', "\\n")
    ));
    sys.sh("eniroute check-config && systemctl reload eniroute.service");
    sys.until_active("after reload");
    // The metrics file where the unit's sandbox lets its dynamic user
    // write, readable by node_exporter's user.
    sys.until("metrics written under the unit", || {
        sys.sh_any("cat /run/eniroute/eniroute.prom 2>/dev/null")
            .contains("eniroute_enis{state=\"managed\"} 2")
    });
    let mode = sys.sh_any("stat -c %a /run/eniroute/eniroute.prom");
    if mode.trim() != "644" {
        sys.fail(&format!("the metrics file has mode {mode}, not 644"));
    }

    // systemd-networkd restarts (and redoes DHCP): routing and the
    // secondary address stay.
    let acks = sys.dhcp.acks(Ipv4Addr::new(10, 0, 2, 20));
    sys.sh("systemctl restart systemd-networkd.service");
    sys.until_acked(Ipv4Addr::new(10, 0, 2, 20), acks, "networkd restart");
    sys.assert_eth1_intact("after systemctl restart systemd-networkd");

    // A DHCP renew on eth1 changes nothing either.
    let acks = sys.dhcp.acks(Ipv4Addr::new(10, 0, 2, 20));
    sys.sh("networkctl renew eth1");
    sys.until_acked(Ipv4Addr::new(10, 0, 2, 20), acks, "networkctl renew eth1");
    sys.assert_eth1_intact("after a DHCP renew");

    // A third ENI, hot-plugged after boot into eth1's subnet: networkd
    // gives it its primary by DHCP, eniroute its secondary and its rules.
    let eth2_mac = Mac::new([0x0a, 0xe0, 0, 1, 0, 2]);
    sys.dhcp
        .add_host(eth2_mac, Ipv4Addr::new(10, 0, 2, 30))
        .expect("DHCP host for eth2");
    let eth2 = sys
        .inst
        .attach(
            &sys.vpc,
            &plan("eth2", 2, "10.0.2.0/24", &["10.0.2.30", "10.0.2.31"]),
            true,
        )
        .expect("hot-plug eth2");
    assert_eq!(eth2.mac(), eth2_mac, "the lab's MAC scheme changed");
    sys.until_reached("10.0.2.31", "hot-plugged eth2");
    sys.until_reached("10.0.2.30", "hot-plugged eth2's DHCP primary");
    sys.assert_replies_leave("10.0.2.30", "eth2", "hot-plugged eth2");
    sys.assert_replies_leave("10.0.2.31", "eth2", "hot-plugged eth2");
    sys.until("StatusText names three ENIs", || {
        sys.unit_prop("StatusText").contains("3 ENIs managed")
    });

    // An IP move: EC2 reassigns eth1's secondary 10.0.2.21 to eth2.
    let eth1 = sys.inst.eni("eth1").expect("eth1").clone();
    sys.vpc
        .move_address(&eth1, &eth2, Ipv4Addr::new(10, 0, 2, 21))
        .expect("move 10.0.2.21 in the VPC");
    sys.inst
        .set_ipv4s("eth1", vec![Ipv4Addr::new(10, 0, 2, 20)])
        .expect("metadata eth1");
    sys.inst
        .set_ipv4s(
            "eth2",
            ["10.0.2.30", "10.0.2.31", "10.0.2.21"]
                .iter()
                .map(|a| a.parse().unwrap())
                .collect(),
        )
        .expect("metadata eth2");
    sys.until_reached("10.0.2.21", "10.0.2.21 moved to eth2");
    sys.until("10.0.2.21 leaves eth1 for eth2", || {
        sys.addr_on("eth2", "10.0.2.21") && !sys.addr_on("eth1", "10.0.2.21")
    });
    sys.assert_replies_leave("10.0.2.21", "eth2", "after the IP move");

    // The journal keeps each ENI's history under its id: the moved address
    // leaves eth1's and joins eth2's, with the ENI's MAC, link and table.
    let eni_id = |dev: &str| {
        sys.inst
            .eni_meta()
            .find(|(e, _)| e.name() == dev)
            .map(|(_, m)| m.eni_id.clone())
            .unwrap_or_else(|| sys.fail(&format!("no ENI {dev}")))
    };
    let (eth1_id, eth2_id) = (eni_id("eth1"), eni_id("eth2"));
    let history = |id: &str| {
        sys.sh_any(&format!(
            "journalctl --no-pager -o cat -u eniroute.service ENI_ID={id}"
        ))
    };
    sys.until(
        "journalctl ENI_ID= shows the move in both histories",
        || {
            history(&eth1_id).contains("- address 10.0.2.21/32 dev eth1")
                && history(&eth2_id).contains("+ address 10.0.2.21/32 dev eth2")
        },
    );
    let eth2_history = history(&eth2_id);
    for want in [
        "+ address 10.0.2.31/32 dev eth2",
        "+ rule from 10.0.2.31 lookup 10002 priority 10002",
        "+ rule from 10.0.2.21 lookup 10002 priority 10002",
    ] {
        if !eth2_history.contains(want) {
            sys.fail(&format!(
                "journalctl ENI_ID={eth2_id} lacks {want}:\n{eth2_history}"
            ));
        }
    }
    if eth2_history.contains("eth1") || history(&eth1_id).contains("eth2") {
        sys.fail(&format!(
            "one ENI's history holds another's records:\n{eth2_history}"
        ));
    }
    let fields = sys.sh(&format!(
        "journalctl --no-pager -o verbose -n 1 -u eniroute.service ENI_ID={eth2_id} OPERATION=add-rule"
    ));
    for want in [
        "MAC=0a:e0:00:01:00:02",
        "LINK=eth2",
        "TABLE=10002",
        "PRIORITY=6",
        "SYSLOG_IDENTIFIER=eniroute",
    ] {
        if !fields.contains(want) {
            sys.fail(&format!("the journal record lacks {want}:\n{fields}"));
        }
    }
    let all = [
        "10.0.1.10",
        "10.0.2.20",
        "10.0.2.21",
        "10.0.2.30",
        "10.0.2.31",
    ];

    // Stopping the unit leaves routing in place.
    sys.sh("systemctl stop eniroute.service");
    if sys.unit_prop("ActiveState") != "inactive" {
        sys.fail("systemctl stop: the unit is still active");
    }
    sys.assert_reached(&all, "after systemctl stop eniroute");
    sys.assert_replies_leave("10.0.2.20", "eth1", "after systemctl stop eniroute");

    // The networkd drop-in: with the agent stopped, networkd reconfiguring
    // eth2 (its DHCP address removed and acquired again) leaves eniroute's
    // rules alone; without the drop-in it removes every one of them.
    let acks = sys.dhcp.acks(Ipv4Addr::new(10, 0, 2, 30));
    sys.sh("networkctl reconfigure eth2");
    sys.until_acked(
        Ipv4Addr::new(10, 0, 2, 30),
        acks,
        "networkctl reconfigure eth2",
    );
    sys.until("eth2 has its DHCP address again", || {
        sys.addr_on("eth2", "10.0.2.30")
    });
    let rules = sys.rules();
    for want in [
        "suppress_ifgroup",
        "from 10.0.2.20 lookup",
        "from 10.0.2.30 lookup",
        "from 10.0.2.21 lookup",
    ] {
        if !rules.contains(want) {
            sys.fail(&format!(
                "networkd reconfigure removed eniroute's rule {want:?} (is the drop-in installed?):\n{rules}"
            ));
        }
    }
    // The drop-in does not cover addresses: networkd removed eth2's
    // secondaries, and the kernel the table's routes with the DHCP address.
    // The agent puts them back when started.
    sys.sh("systemctl start eniroute.service");
    sys.until_active("systemctl start");
    for ip in ["10.0.2.30", "10.0.2.31", "10.0.2.21"] {
        sys.until_reached(ip, "after systemctl start");
        sys.assert_replies_leave(ip, "eth2", "after systemctl start");
    }

    // An operator's session over eth1, open from here to the end.
    let session = Session::open(&sys, Ipv4Addr::new(10, 0, 2, 20));
    session.assert_alive(&sys, "session opened");

    // The administrator disables the unit; upgrades keep that, keep the
    // edited configuration, and restart a running daemon on the new binary.
    sys.sh("systemctl disable eniroute.service");
    for (what, deb) in [("reinstalling the package", &first), ("upgrading", &newer)] {
        let pid = sys.unit_prop("MainPID");
        sys.sh(&format!("dpkg -i {} 2>&1", deb.in_guest()));
        sys.until_active(what);
        let installed = sys.sh("dpkg-query -W -f '${Version}' eniroute");
        if installed != deb.version {
            sys.fail(&format!(
                "{what}: dpkg reports {installed}, not {}",
                deb.version
            ));
        }
        if sys.unit_prop("UnitFileState") != "disabled" {
            sys.fail(&format!(
                "{what} undid the administrator's disable:\n{}",
                sys.unit()
            ));
        }
        if sys.unit_prop("MainPID") == pid {
            sys.fail(&format!(
                "{what} did not restart the running daemon (pid {pid})"
            ));
        }
        if !sys.config().contains(ADMIN_EDIT.trim()) {
            sys.fail(&format!(
                "{what} lost the edited configuration:\n{}",
                sys.config()
            ));
        }
        sys.assert_reached(&all, what);
        session.assert_alive(&sys, what);
    }
    // A stopped daemon stays stopped across an upgrade.
    sys.sh("systemctl stop eniroute.service");
    sys.sh(&format!("dpkg -i {} 2>&1", newer.in_guest()));
    if sys.unit_prop("ActiveState") != "inactive" {
        sys.fail(&format!(
            "reinstalling started a stopped daemon:\n{}",
            sys.unit()
        ));
    }
    sys.sh("systemctl start eniroute.service");
    sys.until_active("systemctl start after the upgrade");

    // Remove: the daemon stops, routing and the configuration stay.
    let out = sys.sh("apt-get remove -y eniroute 2>&1");
    if sys.unit_prop("ActiveState") == "active" {
        sys.fail(&format!("apt-get remove left the daemon running:\n{out}"));
    }
    if !out.contains("rule flush protocol 233") {
        sys.fail(&format!(
            "apt-get remove should say how to clear the routing it leaves:\n{out}"
        ));
    }
    if sys
        .sh_any("test -x /usr/bin/eniroute && echo present")
        .contains("present")
    {
        sys.fail("apt-get remove left /usr/bin/eniroute");
    }
    sys.assert_reached(&all, "after apt-get remove eniroute");
    session.assert_alive(&sys, "after apt-get remove eniroute");
    sys.assert_replies_leave("10.0.2.20", "eth1", "after apt-get remove eniroute");
    if !sys.config().contains(ADMIN_EDIT.trim()) {
        sys.fail("apt-get remove should keep /etc/eniroute/config.toml");
    }

    // Purge: the configuration and the state go.
    sys.sh("dpkg --purge eniroute 2>&1");
    let left = sys.sh_any("ls -d /etc/eniroute /run/eniroute 2>/dev/null");
    if !left.trim().is_empty() {
        sys.fail(&format!("dpkg --purge left {left}"));
    }
    sys.assert_reached(&all, "after dpkg --purge eniroute");
    session.assert_alive(&sys, "after dpkg --purge eniroute");
    drop(session);
    let t_checks = t.elapsed();

    let t = Instant::now();
    sys.guest.shutdown().expect("shut the guest down");
    let t_shutdown = t.elapsed();
    let t = Instant::now();
    drop(sys);
    let t_vpc = t.elapsed();
    drop(run);
    let t_cleanup = t.elapsed();
    note(&format!(
        "{} and {}: root filesystem {:.1} s, packages {:.1} s, boot {:.1} s, checks {:.1} s, \
         shutdown {:.1} s, cleanup {:.1} s ({:.1} s of it the VPC), total {:.1} s",
        first.path.file_name().unwrap_or_default().to_string_lossy(),
        newer.version,
        t_rootfs.as_secs_f64(),
        t_packages.as_secs_f64(),
        t_boot.as_secs_f64(),
        t_checks.as_secs_f64(),
        t_shutdown.as_secs_f64(),
        t_cleanup.as_secs_f64(),
        t_vpc.as_secs_f64(),
        started.elapsed().as_secs_f64(),
    ));
}

/// Where Debian's mirrors cannot be reached and nothing is cached, the
/// real-system test cannot run: the build says so in apt's own words and
/// leaves nothing half-built behind. It runs in a namespace of its own with
/// no route anywhere, so nothing leaves the machine.
#[test]
fn an_offline_build_is_reported_as_offline_and_leaves_no_cache() {
    if !need_root("an_offline_build_is_reported_as_offline_and_leaves_no_cache") {
        return;
    }
    if !guest::have("mmdebstrap") {
        return cannot_run("mmdebstrap not installed");
    }
    let ns = Netns::create("offline").expect("namespace");
    let run = RunDir::create(&target_dir().join("nspawn")).expect("run directory");
    let cache = run.path().join("cache");
    match guest::rootfs_in(&cache, Some(&ns)) {
        Err(RootfsError::Offline(why)) => {
            assert!(
                why.contains("could not reach Debian's mirrors")
                    && why.contains("Temporary failure resolving"),
                "{why}"
            );
        }
        Ok(p) => panic!("built {} without a network", p.display()),
        Err(RootfsError::Failed(e)) => panic!("offline should be told apart: {e}"),
    }
    let left: Vec<_> = std::fs::read_dir(&cache)
        .expect("the cache directory")
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    assert!(left.is_empty(), "left in the cache: {left:?}");
}
