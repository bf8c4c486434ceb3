//! The daemon's log under systemd: with stderr connected to the journal
//! (`JOURNAL_STREAM` naming its device and inode), each record goes to the
//! journal's socket in its native protocol and carries the ENI it is about
//! (`ENI_ID`, `MAC`, `LINK`, `TABLE`, `OPERATION`), so that `journalctl
//! ENI_ID=eni-…` finds one ENI's history. A datagram socket of the test's
//! stands in for journald's.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use eniroute_lab::world;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

type Record = BTreeMap<String, String>;

/// Reads one datagram of the native protocol: `KEY=value` lines, or `KEY`,
/// a 64-bit little-endian length, the value and a newline.
fn parse(mut buf: &[u8]) -> Record {
    let mut r = Record::new();
    while !buf.is_empty() {
        let end = buf
            .iter()
            .position(|b| *b == b'\n')
            .expect("unterminated field");
        let line = &buf[..end];
        if let Some(eq) = line.iter().position(|b| *b == b'=') {
            r.insert(
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            );
            buf = &buf[end + 1..];
        } else {
            let key = String::from_utf8_lossy(line).into_owned();
            let rest = &buf[end + 1..];
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            r.insert(key, String::from_utf8_lossy(&rest[8..8 + len]).into_owned());
            assert_eq!(rest[8 + len], b'\n', "binary field not terminated");
            buf = &rest[9 + len..];
        }
    }
    r
}

fn receive_until(
    sock: &UnixDatagram,
    records: &mut Vec<Record>,
    timeout: Duration,
    mut done: impl FnMut(&Record) -> bool,
) -> bool {
    let start = Instant::now();
    let mut buf = vec![0u8; 65536];
    while start.elapsed() < timeout {
        if let Ok(n) = sock.recv(&mut buf) {
            let r = parse(&buf[..n]);
            let hit = done(&r);
            records.push(r);
            if hit {
                return true;
            }
        }
    }
    false
}

fn show(records: &[Record]) -> String {
    records
        .iter()
        .map(|r| format!("{r:?}\n"))
        .collect::<String>()
}

#[test]
fn under_systemd_each_record_names_its_eni_in_journal_fields() {
    if !need_root("under_systemd_each_record_names_its_eni_in_journal_fields") {
        return;
    }
    let lab = world::management_network().unwrap();
    let inst = &lab.inst;
    let dir = std::env::temp_dir().join(format!("eniroute-journal-ns-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("socket");
    let sock = UnixDatagram::bind(&socket).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let stream = dir.join("stderr");
    let file = std::fs::File::create(&stream).unwrap();
    let meta = file.metadata().unwrap();
    let mut child = inst
        .ns
        .command(bin())
        .args(["--imds-endpoint", &inst.endpoint, "daemon"])
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .env("ENIROUTE_JOURNAL_SOCKET", &socket)
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    let mut records = Vec::new();
    let ready = receive_until(&sock, &mut records, Duration::from_secs(10), |r| {
        r.get("MESSAGE").is_some_and(|m| m.starts_with("ready:"))
    });

    // A rule deleted by someone else: the repair is in eth1's history.
    let repaired = ready && {
        inst.ns
            .ip(["rule", "del", "from", "10.0.2.21", "lookup", "10001"])
            .unwrap();
        receive_until(&sock, &mut records, Duration::from_secs(5), |r| {
            r.get("MESSAGE")
                .is_some_and(|m| m == "+ rule from 10.0.2.21 lookup 10001 priority 10001")
        })
    };
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    let status = child.wait().unwrap();
    let stderr = std::fs::read_to_string(&stream).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(ready, "no ready record:\n{}{stderr}", show(&records));
    assert!(repaired, "no repair record:\n{}", show(&records));
    assert_eq!(status.code(), Some(0), "{stderr}");
    // Everything went to the journal's socket, nothing to the stream too.
    assert_eq!(stderr, "", "stderr should stay empty");

    let by = |key: &str, value: &str| -> Vec<&Record> {
        records
            .iter()
            .filter(|r| r.get(key).map(String::as_str) == Some(value))
            .collect()
    };
    for r in &records {
        assert_eq!(r["SYSLOG_IDENTIFIER"], "eniroute", "{r:?}");
        assert!(
            ["3", "4", "6", "7"].contains(&r["PRIORITY"].as_str()),
            "{r:?}"
        );
    }
    // `journalctl ENI_ID=eni-0010001lab`: eth1's addresses, routes and
    // rules, the repair twice over, and nothing of eth0's.
    let eth1 = by("ENI_ID", "eni-0010001lab");
    let messages: Vec<&str> = eth1.iter().map(|r| r["MESSAGE"].as_str()).collect();
    for want in [
        "+ address 10.0.2.21/32 dev eth1",
        "+ route default via 10.0.2.1 dev eth1 table 10001",
        "+ rule from 10.0.2.21 lookup 10001 priority 10001",
    ] {
        assert!(
            messages.contains(&want),
            "{want} not in eth1's history:\n{}",
            show(&records)
        );
    }
    assert_eq!(
        messages
            .iter()
            .filter(|m| **m == "+ rule from 10.0.2.21 lookup 10001 priority 10001")
            .count(),
        2,
        "{messages:#?}"
    );
    for r in &eth1 {
        assert_eq!(r["MAC"], "0a:e0:00:01:00:01", "{r:?}");
        assert_eq!(r["LINK"], "eth1", "{r:?}");
        assert_eq!(r["TABLE"], "10001", "{r:?}");
        assert_eq!(r["PRIORITY"], "6", "{r:?}");
        assert!(!r["MESSAGE"].contains("eth0"), "{r:?}");
    }
    let rule = eth1
        .iter()
        .find(|r| r["MESSAGE"].starts_with("+ rule from 10.0.2.21"))
        .unwrap();
    assert_eq!(rule["OPERATION"], "add-rule", "{rule:?}");
    let address = eth1
        .iter()
        .find(|r| r["MESSAGE"].starts_with("+ address"))
        .unwrap();
    assert_eq!(address["OPERATION"], "add-address", "{address:?}");
    assert!(
        by("ENI_ID", "eni-0010000lab")
            .iter()
            .all(|r| r["LINK"] == "eth0"),
        "{}",
        show(&records)
    );
    // Records about no ENI carry no ENI fields.
    let ready = records
        .iter()
        .find(|r| r["MESSAGE"].starts_with("ready:"))
        .unwrap();
    assert!(!ready.contains_key("ENI_ID"), "{ready:?}");
}
