//! The .deb and .rpm carry the agent, its unit, the default configuration,
//! the networkd drop-in and the rt_protos name, at the paths the system
//! reads them from. The layout is what is tested: a small stand-in takes the
//! binary's place so the test stays fast.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

const FILES: &[&str] = &[
    "/usr/bin/eniroute",
    "/usr/lib/systemd/system/eniroute.service",
    "/etc/eniroute/config.toml",
    "/usr/lib/systemd/networkd.conf.d/10-eniroute.conf",
    "/etc/iproute2/rt_protos.d/eniroute.conf",
    "/usr/share/doc/eniroute/README.md",
    "/usr/share/doc/eniroute/CONFIG.md",
];

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn build(out: &Path) -> String {
    let standin = out.join("standin");
    std::fs::create_dir_all(out).unwrap();
    std::fs::write(&standin, "#!/bin/sh\n").unwrap();
    let o = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/build.sh"))
        .args([
            "--bin",
            standin.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{text}");
    text
}

fn find(out: &Path, ext: &str) -> PathBuf {
    std::fs::read_dir(out)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == ext))
        .unwrap_or_else(|| panic!("no .{ext} in {}", out.display()))
}

#[test]
fn packages_carry_every_file_at_its_system_path() {
    if !have("dpkg-deb") {
        // Straight to stderr: the test harness hides what eprintln! prints
        // in a passing test, and a skip must be seen.
        let _ = writeln!(std::io::stderr(), "skipped: dpkg-deb not installed");
        return;
    }
    let out = std::env::temp_dir().join(format!("eniroute-pkg-{}", std::process::id()));
    let log = build(&out);

    let deb = find(&out, "deb");
    let list = Command::new("dpkg-deb")
        .arg("-c")
        .arg(&deb)
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    for f in FILES {
        assert!(
            list.contains(&format!(".{f}")),
            "{f} missing from the .deb:\n{list}"
        );
    }
    let conf = Command::new("dpkg-deb")
        .args(["-I"])
        .arg(&deb)
        .arg("conffiles")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&conf.stdout).contains("/etc/eniroute/config.toml"));

    if have("rpmbuild") {
        let rpm = find(&out, "rpm");
        let list = Command::new("rpm").arg("-qlp").arg(&rpm).output().unwrap();
        let list = String::from_utf8_lossy(&list.stdout);
        for f in FILES {
            assert!(
                list.lines().any(|l| l == *f),
                "{f} missing from the .rpm:\n{list}"
            );
        }
    } else {
        // Straight to stderr: the test harness hides what eprintln! prints
        // in a passing test, and a skip must be seen.
        let _ = writeln!(
            std::io::stderr(),
            "skipped the .rpm half: rpmbuild not installed\n{log}"
        );
    }
    let _ = std::fs::remove_dir_all(&out);
}
