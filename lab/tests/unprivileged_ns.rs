//! The agent as its systemd unit runs it: an unprivileged user (a uid from
//! systemd's DynamicUser= range, no groups) whose only capability is
//! CAP_NET_ADMIN, with no_new_privs, and a state directory that user owns
//! (what RuntimeDirectory= gives it). It programs addresses, rules, routes
//! and the appliance sysctls under /proc/sys/net; without CAP_NET_ADMIN the
//! same user changes nothing.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use eniroute_lab::agent::wait_for;
use eniroute_lab::{world, Netns};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// In systemd's DynamicUser= range (61184–65519), as the unit's user is.
const UID: u32 = 61234;

const APPLIANCE: &str =
    "[[eni]]\nmatch = { device = 1 }\nforwarding = true\nrp_filter = \"loose\"\n";

struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    /// A configuration file and a run directory owned by the unit's user.
    fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("eniroute-unpriv-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("run")).unwrap();
        std::fs::write(dir.join("config.toml"), APPLIANCE).unwrap();
        nix::unistd::chown(
            &dir.join("run"),
            Some(nix::unistd::Uid::from_raw(UID)),
            Some(nix::unistd::Gid::from_raw(UID)),
        )
        .unwrap();
        Scratch { dir }
    }

    fn run_root(&self) -> PathBuf {
        self.dir.join("run")
    }

    /// `eniroute ARGS` in `ns` as the unit's user, holding `caps` only.
    fn command(&self, ns: &Netns, endpoint: &str, caps: &str, args: &[&str]) -> Command {
        let mut cmd = ns.command("setpriv");
        cmd.args([
            &format!("--reuid={UID}"),
            &format!("--regid={UID}"),
            "--clear-groups",
            &format!("--inh-caps=-all{caps}"),
            &format!("--ambient-caps=-all{caps}"),
            &format!("--bounding-set=-all{caps}"),
            "--no-new-privs",
            "--",
        ])
        .arg(bin())
        .arg("--imds-endpoint")
        .arg(endpoint)
        .arg("--config")
        .arg(self.dir.join("config.toml"))
        .args(args)
        .env("ENIROUTE_RUN_ROOT", self.run_root())
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null());
        cmd
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn need_setpriv(test: &str) -> bool {
    if !need_root(test) {
        return false;
    }
    let ok = Command::new("setpriv")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "skipped: {test} needs setpriv (util-linux)"
        );
    }
    ok
}

fn sysctl(ns: &Netns, key: &str) -> String {
    let o = ns
        .exec(["cat", &format!("/proc/sys/net/ipv4/conf/{key}")])
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// The state files the agent wrote under the run root, with their owners.
fn state_files(root: &Path) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for ns_dir in std::fs::read_dir(root).unwrap().flatten() {
        for f in std::fs::read_dir(ns_dir.path()).unwrap().flatten() {
            let uid = f.metadata().unwrap().uid();
            out.push((f.file_name().to_string_lossy().into_owned(), uid));
        }
    }
    out.sort();
    out
}

#[test]
fn unit_user_with_only_cap_net_admin_programs_routing_and_sysctls() {
    if !need_setpriv("unit_user_with_only_cap_net_admin_programs_routing_and_sysctls") {
        return;
    }
    let lab = world::management_network().unwrap();
    let inst = &lab.inst;
    let _ssh = server(&inst.ns, 22);
    let scratch = Scratch::new("apply");

    let o = scratch
        .command(&inst.ns, &inst.endpoint, ",+net_admin", &["-v", "apply"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));

    // Routing: the secondary address answers the admin host through eth1.
    for ip in ["10.0.2.20", "10.0.2.21"] {
        let seen = reaches(&lab.admin, ip, 22, LONG)
            .unwrap_or_else(|e| panic!("admin -> {ip}: {e}\n{}", dumps(&inst.ns)));
        assert!(seen.starts_with("10.9.0.5:"), "server saw {seen}");
    }
    assert_eq!(dev_for(&inst.ns, "10.9.0.5", Some("10.0.2.21")), "eth1");
    // The namespace's /proc/sys/net, written with CAP_NET_ADMIN alone.
    assert_eq!(sysctl(&inst.ns, "eth1/forwarding"), "1");
    assert_eq!(sysctl(&inst.ns, "eth1/rp_filter"), "2");
    // Its state is where the unit's RuntimeDirectory is, owned by its user.
    let files = state_files(&scratch.run_root());
    assert!(
        files
            .iter()
            .any(|(name, uid)| name == "lock" && *uid == UID),
        "{files:?}"
    );
    assert!(
        files
            .iter()
            .any(|(name, uid)| name == "addresses.json" && *uid == UID),
        "{files:?}"
    );
}

#[test]
fn without_cap_net_admin_the_unit_user_changes_nothing() {
    if !need_setpriv("without_cap_net_admin_the_unit_user_changes_nothing") {
        return;
    }
    let lab = world::management_network().unwrap();
    let inst = &lab.inst;
    let scratch = Scratch::new("nocap");
    let before = dumps(&inst.ns);
    let o = scratch
        .command(&inst.ns, &inst.endpoint, "", &["apply"])
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("not permitted") || err.contains("EPERM"),
        "{}",
        text(&o)
    );
    assert_eq!(dumps(&inst.ns), before);
    assert_eq!(sysctl(&inst.ns, "eth1/forwarding"), "0");
}

struct Running(Option<Child>);

impl Running {
    /// SIGTERM, as `systemctl stop` sends; the exit code.
    fn stop(&mut self) -> Option<i32> {
        let mut child = self.0.take()?;
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        if wait_for(Duration::from_secs(5), || {
            matches!(child.try_wait(), Ok(Some(_)))
        })
        .is_none()
        {
            let _ = child.kill();
        }
        child.wait().ok()?.code()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn unit_user_daemon_repairs_a_deleted_rule_and_stops_leaving_routing() {
    if !need_setpriv("unit_user_daemon_repairs_a_deleted_rule_and_stops_leaving_routing") {
        return;
    }
    let lab = world::management_network().unwrap();
    let inst = &lab.inst;
    let scratch = Scratch::new("daemon");
    let log = scratch.dir.join("daemon.log");
    let file = std::fs::File::create(&log).unwrap();
    // `ip netns exec` and setpriv both exec, so the child is the agent.
    let mut daemon = Running(Some(
        scratch
            .command(&inst.ns, &inst.endpoint, ",+net_admin", &["daemon"])
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap(),
    ));
    let rule = "from 10.0.2.21 lookup 10001";
    let has_rule = || inst.ns.ip(["rule"]).unwrap_or_default().contains(rule);
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait_for(Duration::from_secs(20), has_rule).is_some(),
        "no rule from the daemon:\n{}",
        logged()
    );
    assert_eq!(sysctl(&inst.ns, "eth1/forwarding"), "1");

    inst.ns
        .ip(["rule", "del", "from", "10.0.2.21", "lookup", "10001"])
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(10), has_rule).is_some(),
        "the daemon did not restore {rule}:\n{}",
        logged()
    );

    assert_eq!(daemon.stop(), Some(0), "{}", logged());
    assert!(has_rule(), "stopping removed routing:\n{}", dumps(&inst.ns));
}

/// The unit's RuntimeDirectory exists (a start that stopped early, say on a
/// configuration error), the administrator fixes things and tries
/// `eniroute apply` as root, then starts the service: the daemon, as the
/// unit's user, still takes the lock and keeps its records.
#[test]
fn root_apply_before_the_service_does_not_lock_the_unit_user_out() {
    if !need_setpriv("root_apply_before_the_service_does_not_lock_the_unit_user_out") {
        return;
    }
    let lab = world::management_network().unwrap();
    let inst = &lab.inst;
    let scratch = Scratch::new("rootfirst");
    let o = inst
        .ns
        .command(bin())
        .arg("--imds-endpoint")
        .arg(&inst.endpoint)
        .arg("--config")
        .arg(scratch.dir.join("config.toml"))
        .arg("apply")
        .env("ENIROUTE_RUN_ROOT", scratch.run_root())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));

    let log = scratch.dir.join("daemon.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut daemon = Running(Some(
        scratch
            .command(&inst.ns, &inst.endpoint, ",+net_admin", &["daemon"])
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap(),
    ));
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    let rule = "from 10.0.2.21 lookup 10001";
    let has_rule = || inst.ns.ip(["rule"]).unwrap_or_default().contains(rule);
    inst.ns
        .ip(["rule", "del", "from", "10.0.2.21", "lookup", "10001"])
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(20), has_rule).is_some(),
        "the unit user's daemon did not take over:\n{}",
        logged()
    );
    assert!(
        daemon
            .0
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None))),
        "{}",
        logged()
    );
    let files = state_files(&scratch.run_root());
    assert!(
        files
            .iter()
            .any(|(name, uid)| name == "lock" && *uid == UID),
        "{files:?}"
    );
    assert_eq!(daemon.stop(), Some(0), "{}", logged());
}
