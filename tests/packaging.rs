//! The .deb and .rpm as packaging/build.sh makes them from the real agent
//! binary: what they depend on, which architecture they claim, what they
//! carry and where, what their maintainer scripts do, what lintian says, and
//! the unit as systemd's own tools judge it.
//!
//! The packages are built once (from the test build of the agent) and
//! shared by the tests of this file.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const AGENT: &str = env!("CARGO_BIN_EXE_eniroute");

fn skip(why: &str) {
    // Straight to stderr: the test harness hides what eprintln! prints in a
    // passing test, and a skip must be seen.
    let _ = writeln!(std::io::stderr(), "skipped: {why}");
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn run(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(o.status.success(), "{cmd:?} failed:\n{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

struct Built {
    dir: PathBuf,
    deb: PathBuf,
    rpm: Option<PathBuf>,
}

/// Builds both packages once; `None` (after saying why) where the tools
/// are missing.
fn built() -> Option<&'static Built> {
    static BUILT: OnceLock<Option<Built>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            for tool in ["dpkg-deb", "dpkg-shlibdeps", "strip", "readelf"] {
                if !have(tool) {
                    skip(&format!(
                        "{tool} not installed (apt-get install dpkg-dev binutils)"
                    ));
                    return None;
                }
            }
            // Under target/, replaced on each run, so nothing piles up in /tmp.
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("packages");
            let _ = std::fs::remove_dir_all(&dir);
            let log = run(Command::new("bash")
                .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/build.sh"))
                .args(["--bin", AGENT, "--out"])
                .arg(&dir));
            let find = |ext: &str| {
                std::fs::read_dir(&dir)
                    .ok()?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .find(|p| p.extension().is_some_and(|e| e == ext))
            };
            let deb = find("deb").unwrap_or_else(|| panic!("no .deb built:\n{log}"));
            let rpm = find("rpm");
            if rpm.is_none() {
                skip(&format!("no .rpm (rpmbuild not installed):\n{log}"));
            }
            Some(Built { dir, deb, rpm })
        })
        .as_ref()
}

/// The architecture names (Debian, rpm) of the machine the agent binary
/// was built for, read from its ELF header.
fn agent_arch() -> (&'static str, &'static str) {
    let bytes = std::fs::read(AGENT).unwrap();
    match u16::from_le_bytes([bytes[18], bytes[19]]) {
        62 => ("amd64", "x86_64"),
        183 => ("arm64", "aarch64"),
        m => panic!("unexpected ELF machine {m}"),
    }
}

/// The newest GLIBC_2.N symbol version the agent binary needs, as (2, N).
fn newest_glibc(binary: &Path) -> (u32, u32) {
    let out = run(Command::new("readelf").arg("-V").arg(binary));
    out.split_whitespace()
        .filter_map(|w| w.strip_prefix("GLIBC_2."))
        .filter_map(|v| v.split('.').next()?.parse::<u32>().ok())
        .map(|n| (2, n))
        .max()
        .expect("the agent needs some GLIBC_2.x symbol version")
}

fn extracted() -> Option<PathBuf> {
    let b = built()?;
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    Some(
        ROOT.get_or_init(|| {
            let root = b.dir.join("extracted");
            let _ = std::fs::remove_dir_all(&root);
            run(Command::new("dpkg-deb").arg("-x").arg(&b.deb).arg(&root));
            root
        })
        .clone(),
    )
}

fn deb_field(deb: &Path, field: &str) -> String {
    run(Command::new("dpkg-deb").arg("-f").arg(deb).arg(field))
        .trim()
        .to_string()
}

const DEB_FILES: &[&str] = &[
    "/usr/bin/eniroute",
    "/lib/systemd/system/eniroute.service",
    "/etc/eniroute/config.toml",
    "/usr/lib/systemd/networkd.conf.d/10-eniroute.conf",
    "/etc/iproute2/rt_protos.d/eniroute.conf",
    "/usr/share/man/man8/eniroute.8.gz",
    "/usr/share/bash-completion/completions/eniroute",
    "/usr/share/zsh/vendor-completions/_eniroute",
    "/usr/share/fish/vendor_completions.d/eniroute.fish",
    "/usr/share/doc/eniroute/copyright",
    "/usr/share/doc/eniroute/changelog.Debian.gz",
    "/usr/share/doc/eniroute/README.md",
    "/usr/share/doc/eniroute/CONFIG.md",
];

#[test]
fn deb_depends_on_the_glibc_the_binary_needs_and_claims_its_architecture() {
    let Some(b) = built() else { return };
    let (deb_arch, _) = agent_arch();
    assert_eq!(deb_field(&b.deb, "Architecture"), deb_arch);

    let root = extracted().unwrap();
    let packaged = root.join("usr/bin/eniroute");
    let (major, minor) = newest_glibc(&packaged);
    let depends = deb_field(&b.deb, "Depends");
    let libc = depends
        .split(',')
        .map(str::trim)
        .find(|d| d.starts_with("libc6 "))
        .unwrap_or_else(|| panic!("no versioned libc6 in Depends: {depends}"));
    let stated: Vec<u32> = libc
        .trim_start_matches("libc6 (>= ")
        .trim_end_matches(')')
        .split('.')
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(
        stated >= vec![major, minor],
        "Depends says {libc}, the binary needs GLIBC_{major}.{minor}"
    );
    assert!(depends.contains("init-system-helpers"), "{depends}");
}

#[test]
fn packaged_binary_is_stripped_and_still_the_agent() {
    let Some(_) = built() else { return };
    let packaged = extracted().unwrap().join("usr/bin/eniroute");
    let sections = run(Command::new("readelf").args(["-S", "-W"]).arg(&packaged));
    assert!(!sections.contains(".symtab"), "symbol table left in");
    assert!(!sections.contains(".debug_info"), "debug info left in");
    let before = std::fs::metadata(AGENT).unwrap().len();
    let after = std::fs::metadata(&packaged).unwrap().len();
    assert!(after < before, "{after} bytes packaged, {before} built");
    let version = run(Command::new(&packaged).arg("--version"));
    assert_eq!(
        version.trim(),
        format!("eniroute {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn deb_carries_every_file_at_its_system_path_and_its_conffiles() {
    let Some(b) = built() else { return };
    let list = run(Command::new("dpkg-deb").arg("-c").arg(&b.deb));
    for f in DEB_FILES {
        assert!(
            list.contains(&format!(".{f}\n")),
            "{f} missing from the .deb:\n{list}"
        );
    }
    let conffiles = run(Command::new("dpkg-deb")
        .arg("-I")
        .arg(&b.deb)
        .arg("conffiles"));
    let conffiles: BTreeSet<&str> = conffiles.lines().collect();
    assert_eq!(
        conffiles,
        BTreeSet::from([
            "/etc/eniroute/config.toml",
            "/etc/iproute2/rt_protos.d/eniroute.conf"
        ])
    );

    let root = extracted().unwrap();
    // The man page is the one generated from the CLI: every subcommand is
    // in it, and man renders it.
    let page = run(Command::new("zcat").arg(root.join("usr/share/man/man8/eniroute.8.gz")));
    assert!(page.contains(".TH eniroute 8"), "{page}");
    for sub in [
        "plan",
        "apply",
        "status",
        "cleanup",
        "daemon",
        "refresh",
        "check-config",
    ] {
        // roff writes a hyphen as \-.
        let sub = sub.replace('-', "\\-");
        assert!(
            page.contains(&format!("eniroute {sub}")),
            "no {sub} in the man page"
        );
    }
    let copyright = std::fs::read_to_string(root.join("usr/share/doc/eniroute/copyright")).unwrap();
    assert!(copyright.contains("License: Apache-2.0"), "{copyright}");
    let changelog =
        run(Command::new("zcat").arg(root.join("usr/share/doc/eniroute/changelog.Debian.gz")));
    assert!(
        changelog.starts_with(&format!("eniroute ({}-", env!("CARGO_PKG_VERSION"))),
        "{changelog}"
    );
    let bash = std::fs::read_to_string(root.join("usr/share/bash-completion/completions/eniroute"))
        .unwrap();
    assert!(
        bash.contains("check-config"),
        "bash completion lacks subcommands"
    );
    assert!(Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("LICENSE")
        .is_file());
}

#[test]
fn lintian_reports_no_errors_and_no_warnings() {
    let Some(b) = built() else { return };
    if !have("lintian") {
        skip("lintian not installed (apt-get install lintian)");
        return;
    }
    let o = Command::new("lintian")
        .args(["--fail-on", "error,warning"])
        .arg(&b.deb)
        .output()
        .unwrap();
    let out = text(&o);
    let complaints: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("E:") || l.starts_with("W:"))
        .collect();
    assert!(o.status.success() && complaints.is_empty(), "{out}");
}

#[test]
fn rpm_requires_the_glibc_the_binary_needs_and_claims_its_architecture() {
    let Some(Built { rpm: Some(rpm), .. }) = built() else {
        return;
    };
    let (_, rpm_arch) = agent_arch();
    let arch = run(Command::new("rpm")
        .args(["-qp", "--qf", "%{ARCH}"])
        .arg(rpm));
    assert_eq!(arch, rpm_arch);
    let (major, minor) = newest_glibc(&extracted().unwrap().join("usr/bin/eniroute"));
    let requires = run(Command::new("rpm").args(["-qp", "--requires"]).arg(rpm));
    let want = format!("libc.so.6(GLIBC_{major}.{minor})");
    assert!(requires.contains(&want), "no {want} in:\n{requires}");

    let files = run(Command::new("rpm").args(["-qlp"]).arg(rpm));
    for f in [
        "/usr/bin/eniroute",
        "/usr/lib/systemd/system/eniroute.service",
        "/usr/lib/systemd/system-preset/50-eniroute.preset",
        "/usr/share/man/man8/eniroute.8.gz",
        "/usr/share/bash-completion/completions/eniroute",
        "/usr/share/zsh/site-functions/_eniroute",
        "/usr/share/fish/vendor_completions.d/eniroute.fish",
        "/usr/share/licenses/eniroute/LICENSE",
        "/etc/eniroute/config.toml",
    ] {
        assert!(
            files.lines().any(|l| l == f),
            "{f} missing from the .rpm:\n{files}"
        );
    }
    let config = run(Command::new("rpm").args(["-qp", "--configfiles"]).arg(rpm));
    assert!(
        config.lines().any(|l| l == "/etc/eniroute/config.toml"),
        "{config}"
    );
    let changelog = run(Command::new("rpm").args(["-qp", "--changelog"]).arg(rpm));
    assert!(
        changelog.starts_with("* ")
            && changelog.contains(&format!("- {}-", env!("CARGO_PKG_VERSION"))),
        "{changelog}"
    );
}

// --- maintainer scripts ------------------------------------------------------
//
// Each script runs as the package manager runs it, in a private mount
// namespace whose /run says "systemd is running", with systemctl,
// deb-systemd-helper and deb-systemd-invoke replaced by stand-ins that log
// their arguments (and answer is-enabled / was-enabled as told). What the
// real helpers then do is theirs; which helper is asked for what, on which
// transition, is the package's.

struct Script<'a> {
    body: &'a str,
    args: &'a [&'a str],
    /// The answer of `is-enabled` / `was-enabled`.
    enabled: bool,
    /// DPKG_ROOT, for purge (so that it removes a scratch tree).
    dpkg_root: Option<&'a Path>,
}

/// The calls the script made, one a line, and what it printed.
fn run_script(s: Script) -> (Vec<String>, String) {
    let dir = tempdir("script");
    let log = dir.join("calls");
    let stubs = dir.join("bin");
    std::fs::create_dir_all(&stubs).unwrap();
    for tool in [
        "systemctl",
        "deb-systemd-helper",
        "deb-systemd-invoke",
        "eniroute",
    ] {
        let path = stubs.join(tool);
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\necho \"{tool} $*\" >> {log}\ncase \"$*\" in *is-enabled*|*was-enabled*) exit {code};; esac\nexit 0\n",
                log = log.display(),
                code = if s.enabled { 0 } else { 1 },
            ),
        )
        .unwrap();
        run(Command::new("chmod").arg("755").arg(&path));
    }
    let script = dir.join("script");
    std::fs::write(&script, s.body).unwrap();
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "sh", "-c"])
        .arg(
            "mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system && script=$1 && shift && exec sh \"$script\" \"$@\"",
        )
        .arg("sh")
        .arg(&script)
        .args(s.args)
        .env(
            "PATH",
            format!("{}:{}", stubs.display(), std::env::var("PATH").unwrap_or_default()),
        );
    match s.dpkg_root {
        Some(r) => cmd.env("DPKG_ROOT", r),
        None => cmd.env_remove("DPKG_ROOT"),
    };
    let out = run(&mut cmd);
    let calls = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    (calls, out)
}

fn tempdir(what: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("eniroute-{what}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn can_run_scripts() -> bool {
    if !root() || !have("unshare") {
        skip("maintainer scripts run in a private mount namespace: needs root and unshare");
        return false;
    }
    true
}

fn deb_script(name: &str) -> String {
    let b = built().unwrap();
    let dir = b.dir.join(format!("control-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    run(Command::new("dpkg-deb").arg("-e").arg(&b.deb).arg(&dir));
    std::fs::read_to_string(dir.join(name)).unwrap()
}

fn has(calls: &[String], call: &str) -> bool {
    calls.iter().any(|c| c == call)
}

#[test]
fn deb_scripts_enable_and_start_on_install_and_keep_a_disable_across_upgrades() {
    if built().is_none() || !can_run_scripts() {
        return;
    }
    let postinst = deb_script("postinst");
    // First install: was-enabled answers yes for a unit it has never seen.
    let (calls, _) = run_script(Script {
        body: &postinst,
        args: &["configure"],
        enabled: true,
        dpkg_root: None,
    });
    assert!(
        has(&calls, "deb-systemd-helper enable eniroute.service"),
        "{calls:#?}"
    );
    assert!(
        has(&calls, "deb-systemd-invoke start eniroute.service"),
        "{calls:#?}"
    );

    // Upgrade of a unit the administrator disabled: not enabled again, and
    // restarted only if running (try-restart leaves a stopped unit alone).
    let (calls, _) = run_script(Script {
        body: &postinst,
        args: &["configure", "0.0.9-1"],
        enabled: false,
        dpkg_root: None,
    });
    assert!(!calls.iter().any(|c| c.contains(" enable ")), "{calls:#?}");
    assert!(
        has(&calls, "deb-systemd-helper update-state eniroute.service"),
        "{calls:#?}"
    );
    assert!(
        has(&calls, "deb-systemd-invoke try-restart eniroute.service"),
        "{calls:#?}"
    );
    assert!(
        !calls
            .iter()
            .any(|c| c.ends_with(" start eniroute.service")
                || c.ends_with(" restart eniroute.service")),
        "{calls:#?}"
    );

    // Upgrade of an enabled unit: enablement refreshed, running one restarted.
    let (calls, _) = run_script(Script {
        body: &postinst,
        args: &["configure", "0.0.9-1"],
        enabled: true,
        dpkg_root: None,
    });
    assert!(
        has(&calls, "deb-systemd-helper enable eniroute.service"),
        "{calls:#?}"
    );
    assert!(
        has(&calls, "deb-systemd-invoke try-restart eniroute.service"),
        "{calls:#?}"
    );
}

#[test]
fn deb_remove_stops_the_daemon_keeps_routing_and_says_how_to_clear_it() {
    if built().is_none() || !can_run_scripts() {
        return;
    }
    let prerm = deb_script("prerm");
    let (calls, out) = run_script(Script {
        body: &prerm,
        args: &["remove"],
        enabled: true,
        dpkg_root: None,
    });
    assert!(
        has(&calls, "deb-systemd-invoke stop eniroute.service"),
        "{calls:#?}"
    );
    // Stopping is all: nothing that removes a rule or route runs.
    assert!(!calls.iter().any(|c| c.contains("cleanup")), "{calls:#?}");
    assert!(out.contains("routing it set up stays"), "{out}");
    assert!(out.contains("ip -4 rule flush protocol 233"), "{out}");
    assert!(
        out.contains("ip -4 route flush table all protocol 233"),
        "{out}"
    );

    // An upgrade stops nothing.
    let (calls, _) = run_script(Script {
        body: &prerm,
        args: &["upgrade", "0.2.0-1"],
        enabled: true,
        dpkg_root: None,
    });
    assert!(calls.iter().all(|c| !c.contains("stop")), "{calls:#?}");

    let postrm = deb_script("postrm");
    let (calls, _) = run_script(Script {
        body: &postrm,
        args: &["remove"],
        enabled: true,
        dpkg_root: None,
    });
    assert!(
        has(&calls, "deb-systemd-helper mask eniroute.service"),
        "{calls:#?}"
    );
}

#[test]
fn deb_purge_removes_the_configuration_and_the_state() {
    if built().is_none() || !can_run_scripts() {
        return;
    }
    let postrm = deb_script("postrm");
    let target = tempdir("purge");
    for d in ["etc/eniroute", "run/eniroute/net-1", "etc/iproute2"] {
        std::fs::create_dir_all(target.join(d)).unwrap();
    }
    std::fs::write(target.join("etc/eniroute/config.toml"), "").unwrap();
    std::fs::write(target.join("run/eniroute/net-1/addresses.json"), "[]").unwrap();
    let (calls, _) = run_script(Script {
        body: &postrm,
        args: &["purge"],
        enabled: false,
        dpkg_root: Some(&target),
    });
    assert!(
        has(&calls, "deb-systemd-helper purge eniroute.service"),
        "{calls:#?}"
    );
    assert!(!target.join("etc/eniroute").exists());
    assert!(!target.join("run/eniroute").exists());
    assert!(
        target.join("etc/iproute2").exists(),
        "purge went beyond its own"
    );
    let _ = std::fs::remove_dir_all(&target);
}

/// The rpm's scriptlets by name (post, preun, postun), from `rpm -qp --scripts`.
fn rpm_scripts(rpm: &Path) -> Vec<(String, String)> {
    let all = run(Command::new("rpm").args(["-qp", "--scripts"]).arg(rpm));
    let mut out: Vec<(String, String)> = Vec::new();
    for line in all.lines() {
        if let Some(head) = line.strip_suffix(" scriptlet (using /bin/sh):") {
            let name = match head {
                "postinstall" => "post",
                "preuninstall" => "preun",
                "postuninstall" => "postun",
                other => other,
            };
            out.push((name.to_string(), String::new()));
        } else if let Some((_, body)) = out.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

#[test]
fn rpm_scriptlets_follow_presets_restart_only_a_running_daemon_and_stop_on_erase() {
    let Some(Built { rpm: Some(rpm), .. }) = built() else {
        return;
    };
    if !can_run_scripts() {
        return;
    }
    let scripts = rpm_scripts(rpm);
    let get = |n: &str| {
        scripts
            .iter()
            .find(|(name, _)| name == n)
            .map(|(_, b)| b.clone())
            .unwrap_or_else(|| panic!("no %{n} in {scripts:#?}"))
    };
    let (post, preun, postun) = (get("post"), get("preun"), get("postun"));
    let script = |body: &str, arg: &'static str, enabled: bool| {
        run_script(Script {
            body,
            args: &[arg],
            enabled,
            dpkg_root: None,
        })
    };

    // First install: the presets decide; started only if that enabled it.
    let (calls, _) = script(&post, "1", true);
    assert!(
        has(&calls, "systemctl --no-reload preset eniroute.service"),
        "{calls:#?}"
    );
    assert!(
        has(&calls, "systemctl start eniroute.service"),
        "{calls:#?}"
    );
    let (calls, _) = script(&post, "1", false);
    assert!(
        has(&calls, "systemctl --no-reload preset eniroute.service"),
        "{calls:#?}"
    );
    assert!(!calls.iter().any(|c| c.contains("start")), "{calls:#?}");
    // Upgrade: enablement untouched (an administrator's disable stays).
    let (calls, _) = script(&post, "2", false);
    assert!(
        !calls
            .iter()
            .any(|c| c.contains("preset") || c.contains("enable")),
        "{calls:#?}"
    );

    // After an upgrade: a running daemon is restarted, a stopped one not.
    let (calls, _) = script(&postun, "1", true);
    assert!(
        has(&calls, "systemctl try-restart eniroute.service"),
        "{calls:#?}"
    );
    let (calls, _) = script(&preun, "1", true);
    assert!(
        calls
            .iter()
            .all(|c| !c.contains("stop") && !c.contains("disable")),
        "{calls:#?}"
    );

    // Erase: disabled and stopped, routing kept and the way to clear it said.
    let (calls, out) = script(&preun, "0", true);
    assert!(
        has(
            &calls,
            "systemctl --no-reload disable --now eniroute.service"
        ),
        "{calls:#?}"
    );
    assert!(out.contains("ip -4 rule flush protocol 233"), "{out}");
    let (calls, _) = script(&postun, "0", true);
    assert!(!calls.iter().any(|c| c.contains("restart")), "{calls:#?}");
}

// --- the unit ----------------------------------------------------------------

fn unit() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/eniroute.service"))
        .unwrap()
}

#[test]
fn unit_runs_unprivileged_with_only_cap_net_admin_and_does_not_restart_on_exit_2() {
    let unit = unit();
    let values = |key: &str| -> Vec<String> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(values("RestartPreventExitStatus"), ["2"]);
    assert_eq!(values("CapabilityBoundingSet"), ["CAP_NET_ADMIN"]);
    assert_eq!(values("AmbientCapabilities"), ["CAP_NET_ADMIN"]);
    assert!(!unit.contains("CAP_KILL"));
    assert!(
        values("DynamicUser") == ["yes"] || values("User").iter().any(|u| u != "root"),
        "the unit runs as root"
    );
    assert_eq!(values("RuntimeDirectory"), ["eniroute"]);
    let before = values("Before").join(" ");
    assert!(
        before.split(' ').any(|u| u == "network-online.target"),
        "{before}"
    );
    let after = values("After").join(" ");
    for u in ["systemd-networkd.service", "NetworkManager.service"] {
        assert!(after.split(' ').any(|a| a == u), "not after {u}: {after}");
    }
    assert_eq!(values("Type"), ["notify"]);
}

#[test]
fn unit_is_rated_2_0_or_lower_by_systemd_analyze_security() {
    if !have("systemd-analyze") {
        skip("systemd-analyze not installed (apt-get install systemd)");
        return;
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/eniroute.service");
    let o = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(&path)
        .output()
        .unwrap();
    let out = text(&o);
    let level: f64 = out
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for eniroute.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{out}"));
    assert!(level <= 2.0, "exposure {level}:\n{out}");
}

#[test]
fn packaged_unit_passes_systemd_analyze_verify_with_its_binary_and_man_page() {
    let Some(_) = built() else { return };
    if !have("systemd-analyze") || !have("man") || !can_run_scripts() {
        skip("systemd-analyze verify needs systemd, man-db, root and unshare");
        return;
    }
    let root = extracted().unwrap();
    // The package's /usr laid over the host's in a private mount namespace:
    // verify finds /usr/bin/eniroute and man finds eniroute(8) where the
    // package puts them, and the host is left as it was.
    let o = Command::new("unshare")
        .args(["-m", "sh", "-c"])
        .arg(format!(
            "mount -t overlay overlay -o lowerdir={root}/usr:/usr /usr && exec systemd-analyze verify {root}/lib/systemd/system/eniroute.service",
            root = root.display()
        ))
        .output()
        .unwrap();
    let out = text(&o);
    assert!(o.status.success() && out.trim().is_empty(), "{out}");
}

// --- cloud-init --------------------------------------------------------------

#[test]
fn cloud_init_user_data_writes_a_configuration_the_agent_accepts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/cloud-init");
    let user_data = std::fs::read_to_string(dir.join("user-data.yaml")).unwrap();
    assert!(user_data.starts_with("#cloud-config\n"));
    // The `content: |` block of the write_files entry for config.toml: the
    // lines indented deeper than `content:` itself.
    let mut lines = user_data.lines();
    lines
        .by_ref()
        .find(|l| l.trim() == "- path: /etc/eniroute/config.toml")
        .expect("user-data writes /etc/eniroute/config.toml");
    let content = lines
        .by_ref()
        .find(|l| l.trim() == "content: |")
        .expect("a content block");
    let indent = content.len() - content.trim_start().len() + 2;
    let config: String = lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() >= indent)
        .map(|l| format!("{}\n", l.get(indent..).unwrap_or("")))
        .collect();
    assert!(config.contains("[[eni]]"), "{config}");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cloud-init-config.toml");
    std::fs::write(&path, &config).unwrap();
    let o = Command::new(AGENT)
        .arg("--config")
        .arg(&path)
        .arg("check-config")
        .output()
        .unwrap();
    assert!(o.status.success(), "{config}\n{}", text(&o));
    for step in [
        "systemctl enable --now eniroute.service",
        "apt-get install",
        "dnf install",
    ] {
        assert!(user_data.contains(step), "user-data lacks {step}");
    }
    let bake = std::fs::read_to_string(dir.join("ami-bake.sh")).unwrap();
    assert!(bake.contains("apply_full_imds_network_config: false"));
}

// --- another architecture ------------------------------------------------------

/// An aarch64 program (static, as a musl build is) packaged on this host:
/// the packages say arm64 / aarch64, read from the binary, whatever the
/// build host is.
#[test]
fn an_aarch64_binary_is_packaged_as_arm64_and_aarch64() {
    let Some(_) = built() else { return };
    if !have("aarch64-linux-gnu-as") || !have("aarch64-linux-gnu-ld") {
        skip("no aarch64 assembler (apt-get install binutils-aarch64-linux-gnu)");
        return;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("packages-aarch64");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // exit(0) through the aarch64 syscall ABI.
    std::fs::write(
        dir.join("prog.s"),
        ".global _start\n_start:\n    mov x0, #0\n    mov x8, #93\n    svc #0\n",
    )
    .unwrap();
    run(Command::new("aarch64-linux-gnu-as")
        .arg("-o")
        .arg(dir.join("prog.o"))
        .arg(dir.join("prog.s")));
    run(Command::new("aarch64-linux-gnu-ld")
        .arg("-o")
        .arg(dir.join("eniroute"))
        .arg(dir.join("prog.o")));
    let out = dir.join("out");
    run(Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/build.sh"))
        .arg("--bin")
        .arg(dir.join("eniroute"))
        .arg("--out")
        .arg(&out));
    let deb = out.join("eniroute_0.1.0-1_arm64.deb".replace("0.1.0", env!("CARGO_PKG_VERSION")));
    assert_eq!(deb_field(&deb, "Architecture"), "arm64");
    // Static: no library to depend on.
    assert!(!deb_field(&deb, "Depends").contains("libc6"));
    if have("rpmbuild") {
        let rpm = out.join(format!(
            "eniroute-{}-1.aarch64.rpm",
            env!("CARGO_PKG_VERSION")
        ));
        let arch = run(Command::new("rpm")
            .args(["-qp", "--qf", "%{ARCH}"])
            .arg(&rpm));
        assert_eq!(arch, "aarch64");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn rpm_replaces_amazon_ec2_net_utils_and_keeps_dhcp_on_every_eni() {
    let Some(Built { rpm: Some(rpm), .. }) = built() else {
        return;
    };
    let obsoletes = run(Command::new("rpm").args(["-qp", "--obsoletes"]).arg(rpm));
    assert!(
        obsoletes.lines().any(|l| l == "amazon-ec2-net-utils < 3"),
        "{obsoletes}"
    );
    let conflicts = run(Command::new("rpm").args(["-qp", "--conflicts"]).arg(rpm));
    assert!(
        conflicts.lines().any(|l| l == "amazon-ec2-net-utils"),
        "{conflicts}"
    );
    // The network file it took away: DHCP on every ENI, at the same path.
    let files = run(Command::new("rpm").args(["-qlp"]).arg(rpm));
    assert!(
        files
            .lines()
            .any(|l| l == "/usr/lib/systemd/network/80-ec2.network"),
        "{files}"
    );
    let posttrans = rpm_scripts(rpm)
        .into_iter()
        .find(|(name, _)| name == "posttrans")
        .map(|(_, body)| body)
        .unwrap_or_default();
    assert!(
        posttrans.contains("/run/systemd/network/70-*.network.d")
            && posttrans.contains("generated by policy-routes@")
            && !posttrans.contains("networkctl"),
        "{posttrans}"
    );
}
