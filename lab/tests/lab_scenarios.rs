//! Every `eniroute-lab` scenario as an integration test: the same scenario
//! code the binary runs, with the real agent in network namespaces, and
//! every check must hold. Needs root; without it each test says it skipped.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, PoisonError};

use eniroute_lab::scenarios::{self, Options, Report, SCENARIOS};

/// The scenarios run one at a time: they would not disturb each other (each
/// has its own namespaces), but ha-failover measures latencies that a
/// neighbour's CPU load would blur.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

fn lab_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_eniroute-lab"))
}

fn run_with(name: &str, agent: PathBuf) -> Report {
    let scenario = scenarios::find(name).unwrap_or_else(|| panic!("no scenario {name}"));
    let _one_at_a_time = serial();
    let report = scenario.run(&Options {
        agent,
        print: false,
        keep: false,
    });
    // Shown by `cargo test -- --nocapture`, and with any failure.
    println!("{}", report.transcript);
    assert!(
        report.passed(),
        "{name} failed:\n{}\nfailed checks: {:#?}",
        report.transcript,
        report.failed_checks().collect::<Vec<_>>()
    );
    report
}

fn run(name: &str) -> Report {
    run_with(name, common::bin().to_path_buf())
}

#[test]
fn management_network() {
    if common::need_root("management_network") {
        run("management-network");
    }
}

#[test]
fn appliance() {
    if common::need_root("appliance") {
        run("appliance");
    }
}

#[test]
fn dual_homed() {
    if common::need_root("dual_homed") {
        run("dual-homed");
    }
}

#[test]
fn cross_vpc() {
    if common::need_root("cross_vpc") {
        run("cross-vpc");
    }
}

#[test]
fn ha_failover() {
    if !common::need_root("ha_failover") {
        return;
    }
    let report = run("ha-failover");
    let names: Vec<&str> = report
        .measurements
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    let mut expected = vec![
        "ENI move: client-observed outage",
        "ENI move: link on the standby -> first answer",
        "secondary IP move: client-observed outage",
        "secondary IP move: IP in metadata -> first answer",
    ];
    // The API-driven variants run where moto's EC2 server is installed
    // (.ci/run installs it), and say that they skipped elsewhere.
    if eniroute_lab::ec2_api::moto_server().is_some() {
        expected.extend([
            "secondary IP move by `eniroute takeover`: client-observed outage",
            "secondary IP move by `eniroute takeover`: EC2's answer -> first answer",
        ]);
        if eniroute_lab::ec2_api::aws_cli().is_some() {
            expected.push(
                "secondary IP move with the AWS CLI + metadata + refresh: client-observed outage",
            );
        }
        expected.extend([
            "ENI move by `eniroute takeover`: client-observed outage",
            "ENI move by `eniroute takeover`: EC2's answer -> first answer",
        ]);
        if eniroute_lab::ec2_api::aws_cli().is_some() {
            expected.push("ENI move with the AWS CLI + metadata + refresh: client-observed outage");
        }
    } else {
        assert!(
            report.transcript.contains("skipped: moto_server not found"),
            "{}",
            report.transcript
        );
    }
    assert_eq!(names, expected, "{}", report.transcript);
}

/// `cargo run --bin eniroute-lab` builds no `eniroute` binary; the lab then
/// runs its own copy of the agent through a link named `eniroute`.
#[test]
fn management_network_with_the_labs_own_copy_of_the_agent() {
    if !common::need_root("management_network_with_the_labs_own_copy_of_the_agent") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("lab-agent-link-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("eniroute");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(lab_bin(), &link).unwrap();
    run_with("management-network", link);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn list_names_every_scenario() {
    let out = Command::new(lab_bin()).arg("list").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let names: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        [
            "management-network",
            "appliance",
            "dual-homed",
            "cross-vpc",
            "ha-failover"
        ]
    );
    for name in names {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
}

#[test]
fn unknown_scenario_is_a_usage_error() {
    let out = Command::new(lab_bin())
        .args(["run", "no-such-scenario"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no scenario \"no-such-scenario\""));
}

#[test]
fn without_root_run_says_so_and_exits_2() {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(lab_bin());
    cmd.args(["run", "all"]);
    if nix::unistd::geteuid().is_root() {
        // As root, try it as nobody.
        cmd.uid(65534).gid(65534);
    }
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs root"), "{err}");
}

#[test]
fn the_lab_runs_the_agent_under_either_name() {
    let out = Command::new(lab_bin())
        .args(["agent", "--version"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("eniroute "));

    let dir = std::env::temp_dir().join(format!("lab-agent-name-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("eniroute");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(lab_bin(), &link).unwrap();
    let out = Command::new(&link).arg("--help").output().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("daemon") && help.contains("refresh"),
        "{help}"
    );
}
