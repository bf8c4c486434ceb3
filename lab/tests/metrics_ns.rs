//! The daemon's Prometheus textfile as node_exporter would read it: a real
//! `eniroute daemon` in a simulated instance, a known scenario (boot with
//! two ENIs, a rule someone deletes, a hot-plugged ENI, a foreign route in
//! the table range, a metadata outage), and the numbers in the file
//! compared with what the kernel and the simulator say. `promtool check
//! metrics` (Debian's `prometheus` package) validates the file where it is
//! installed; CI installs it.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use common::*;
use eniroute_lab::agent::{wait_for, Daemon};
use eniroute_lab::sim::Fault;
use eniroute_lab::world::{self, EniPlan};
use eniroute_lab::Netns;

const CONVERGE: Duration = Duration::from_secs(20);

/// A directory of this test's own for the configuration and the textfile.
fn test_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("eniroute-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create test directory");
    dir
}

/// The samples of a textfile: `name{labels}` → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn read(path: &Path) -> BTreeMap<String, f64> {
    samples(&std::fs::read_to_string(path).unwrap_or_default())
}

fn value(m: &BTreeMap<String, f64>, name: &str) -> f64 {
    *m.get(name)
        .unwrap_or_else(|| panic!("no sample {name} in {m:#?}"))
}

/// Waits until the file's samples satisfy `check`; panics with the file
/// and the daemon's log otherwise.
fn until_file(
    what: &str,
    path: &Path,
    d: &Daemon,
    mut check: impl FnMut(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let mut last = BTreeMap::new();
    let ok = wait_for(CONVERGE, || {
        last = read(path);
        !last.is_empty() && check(&last)
    });
    if ok.is_none() {
        panic!(
            "{what}: timed out\n--- {} ---\n{}\n--- daemon log ---\n{}",
            path.display(),
            std::fs::read_to_string(path).unwrap_or_default(),
            d.log()
        );
    }
    last
}

/// Lines `ip` prints for the objects carrying eniroute's protocol.
fn kernel_count(ns: &Netns, args: &[&str]) -> usize {
    let mut n = 0;
    for family in ["-4", "-6"] {
        let mut full = vec![family];
        full.extend_from_slice(args);
        let out = ns.ip(full).expect("ip");
        n += out
            .lines()
            .filter(|l| l.contains("proto 233") || l.contains("proto eniroute"))
            .count();
    }
    n
}

/// `promtool check metrics` on the file, or a note on stderr that it was
/// skipped where promtool is not installed.
fn promtool_check(path: &Path) {
    let Ok(file) = std::fs::File::open(path) else {
        panic!("cannot open {}", path.display());
    };
    let out = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::from(file))
        .output()
    {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "skipped: promtool check metrics (promtool is not installed; Debian's prometheus package has it)"
            );
            return;
        }
        Err(e) => panic!("promtool: {e}"),
    };
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics {}: {}\n{}{}",
        path.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_textfile_reports_what_the_daemon_manages_and_did() {
    if !need_root("the_textfile_reports_what_the_daemon_manages_and_did") {
        return;
    }
    let mut lab = world::management_network().unwrap();
    let ns = lab.inst.ns.clone();
    let dir = test_dir("metrics");
    let prom = dir.join("eniroute.prom");
    let cfg = dir.join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[metadata]\nvolatile_refresh_secs = 1\n\n[metrics]\ntextfile = \"{}\"\n",
            prom.display()
        ),
    )
    .unwrap();
    let d = Daemon::start(bin(), &ns, &lab.inst.endpoint, Some(&cfg)).expect("start daemon");

    // Boot: eth0 (10.0.1.10) and eth1 (10.0.2.20, 10.0.2.21) managed; what
    // the file says it owns is what the kernel holds with protocol 233.
    let m = until_file("two ENIs managed, a clean reconcile", &prom, &d, |m| {
        m.get("eniroute_enis{state=\"managed\"}") == Some(&2.0)
            && m.get("eniroute_reconciles_total{result=\"clean\"}")
                .is_some_and(|n| *n >= 1.0)
    });
    let rules = kernel_count(&ns, &["rule"]);
    let routes = kernel_count(&ns, &["route", "show", "table", "all"]);
    // Three source rules and the suppress_ifgroup rule at least; two
    // tables with a subnet and a default route each.
    assert!(rules >= 4 && routes >= 4, "rules {rules}, routes {routes}");
    assert_eq!(value(&m, "eniroute_owned_rules"), rules as f64);
    assert_eq!(value(&m, "eniroute_owned_routes"), routes as f64);
    // The lab gives eth0 its address as DHCP would; eth1's two are the
    // agent's. (iproute2 6.1 does not show an address's protocol.)
    assert_eq!(value(&m, "eniroute_owned_addresses"), 2.0);
    for (name, want) in [
        ("eniroute_enis_waiting", 0.0),
        ("eniroute_enis_failing", 0.0),
        ("eniroute_changes_failing", 0.0),
        ("eniroute_reconciles_total{result=\"partial\"}", 0.0),
        ("eniroute_reconciles_total{result=\"failed\"}", 0.0),
        ("eniroute_conflicts{kind=\"foreign_route_in_range\"}", 0.0),
        ("eniroute_metadata_reads_total{result=\"failed\"}", 0.0),
        ("eniroute_metadata_errors_total{kind=\"http_5xx\"}", 0.0),
        ("eniroute_standing_by", 0.0),
    ] {
        assert_eq!(value(&m, name), want, "{name}");
    }
    // Every change of the boot is a netlink write (no sysctl here), and
    // nothing was repaired yet.
    assert!(value(&m, "eniroute_changes_total") >= (rules + routes + 2) as f64);
    assert!(value(&m, "eniroute_netlink_writes_total") >= value(&m, "eniroute_changes_total"));
    assert_eq!(value(&m, "eniroute_repairs_total{object=\"rule\"}"), 0.0);
    let requests = value(&m, "eniroute_metadata_requests_total");
    assert!(
        requests >= 1.0 && requests <= lab.inst.sim.requests() as f64,
        "{requests} requests reported, the simulator saw {}",
        lab.inst.sim.requests()
    );
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let last = value(&m, "eniroute_last_clean_reconcile_timestamp_seconds");
    assert!(
        (now - last).abs() < 60.0,
        "last clean reconcile {last}, now {now}"
    );
    // Links present at start are not hot-plugs.
    assert_eq!(value(&m, "eniroute_link_configured_seconds_count"), 0.0);

    // Someone deletes a rule: the daemon puts it back and counts a repair.
    ns.ip([
        "rule",
        "del",
        "priority",
        "10001",
        "from",
        "10.0.2.21",
        "lookup",
        "10001",
    ])
    .unwrap();
    until_file("the deleted rule counted as a repair", &prom, &d, |m| {
        m.get("eniroute_repairs_total{object=\"rule\"}") == Some(&1.0)
    });

    // A hot-plugged ENI, metadata there at once: one observation in the
    // link-to-configured histogram, three ENIs managed.
    let plan = EniPlan::new("eth2", 2, "10.0.3.0/24", &["10.0.3.30"]).unwrap();
    lab.inst.attach(&lab.vpc, &plan, true).unwrap();
    let m = until_file("the hot-plugged ENI timed", &prom, &d, |m| {
        m.get("eniroute_link_configured_seconds_count") == Some(&1.0)
            && m.get("eniroute_enis{state=\"managed\"}") == Some(&3.0)
    });
    assert_eq!(
        value(&m, "eniroute_link_configured_seconds_bucket{le=\"+Inf\"}"),
        1.0
    );
    let took = value(&m, "eniroute_link_configured_seconds_sum");
    assert!(took > 0.0 && took < 20.0, "{took} s");
    eprintln!("hot-plug: link to configured in {:.1} ms", took * 1000.0);
    // A new ENI is no repair; its address is the agent's.
    assert_eq!(value(&m, "eniroute_repairs_total{object=\"rule\"}"), 1.0);
    assert_eq!(value(&m, "eniroute_owned_addresses"), 3.0);
    assert_eq!(
        value(&m, "eniroute_owned_rules"),
        kernel_count(&ns, &["rule"]) as f64
    );

    // A route of someone else's in the agent's table range: reported as a
    // conflict while it is there.
    ns.ip([
        "route",
        "add",
        "10.77.0.0/16",
        "dev",
        "eth1",
        "table",
        "10005",
    ])
    .unwrap();
    until_file("the foreign route counted", &prom, &d, |m| {
        m.get("eniroute_conflicts{kind=\"foreign_route_in_range\"}") == Some(&1.0)
    });
    ns.ip([
        "route",
        "del",
        "10.77.0.0/16",
        "dev",
        "eth1",
        "table",
        "10005",
    ])
    .unwrap();
    until_file("the foreign route gone", &prom, &d, |m| {
        m.get("eniroute_conflicts{kind=\"foreign_route_in_range\"}") == Some(&0.0)
    });

    // Metadata answers 503 for a while: failed reads and 5xx requests.
    lab.inst.sim.set_fault(None, Some(Fault::Status(503)));
    until_file("metadata failures counted", &prom, &d, |m| {
        m.get("eniroute_metadata_reads_total{result=\"failed\"}")
            .is_some_and(|n| *n >= 1.0)
            && m.get("eniroute_metadata_errors_total{kind=\"http_5xx\"}")
                .is_some_and(|n| *n >= 1.0)
    });
    lab.inst.sim.set_fault(None, None);

    // The file as node_exporter finds it: valid, readable by another user,
    // and alone in its directory (the temporary file renamed over it).
    promtool_check(&prom);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&prom).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o644, "mode {mode:o}");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["config.toml", "eniroute.prom"]);
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unwritable_textfile_is_a_warning_naming_it_and_routing_goes_on() {
    if !need_root("an_unwritable_textfile_is_a_warning_naming_it_and_routing_goes_on") {
        return;
    }
    let lab = world::management_network().unwrap();
    let ns = &lab.inst.ns;
    let _ssh = server(ns, 22);
    let dir = test_dir("metrics-missing");
    let prom = dir.join("no-such-directory/eniroute.prom");
    let cfg = dir.join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[metadata]\nvolatile_refresh_secs = 1\n\n[metrics]\ntextfile = \"{}\"\n",
            prom.display()
        ),
    )
    .unwrap();
    let mut d = Daemon::start(bin(), ns, &lab.inst.endpoint, Some(&cfg)).expect("start daemon");
    let warning = format!("metrics: cannot write {}", prom.display());
    wait_for(CONVERGE, || d.log().contains(&warning))
        .unwrap_or_else(|| panic!("no warning naming {}\n{}", prom.display(), d.log()));
    assert!(
        wait_for(CONVERGE, || reaches(&lab.admin, "10.0.2.21", 22, SHORT)
            .is_ok())
        .is_some(),
        "{}",
        d.log()
    );
    // Warned once, not on every write.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(d.log().matches(&warning).count(), 1, "{}", d.log());
    assert!(d.running());

    // The directory appears: the next write goes in, and says so.
    std::fs::create_dir_all(prom.parent().unwrap()).unwrap();
    wait_for(CONVERGE, || prom.exists())
        .unwrap_or_else(|| panic!("{} never written\n{}", prom.display(), d.log()));
    assert!(
        wait_for(CONVERGE, || d.log().contains("written again")).is_some(),
        "{}",
        d.log()
    );
    assert_eq!(d.stop().unwrap(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}
