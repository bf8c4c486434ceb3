//! Issue 11 J, the pure half: a managed link someone set down after it was
//! up stays down, and nothing is routed through it; a link never seen up (a
//! hot-plugged ENI) is brought up.

use std::path::PathBuf;

use eniroute::config::Config;
use eniroute::imds::{parse, tree};
use eniroute::plan::plan;
use eniroute::reconcile::{diff, Current, Op, Ownership};
use eniroute::state::AddressRecords;
use eniroute::values::{Link, LinkAddress};

fn links(eth1_up: bool) -> Vec<Link> {
    let link = |index, name: &str, mac: &str, up, addr: &str| Link {
        index,
        name: name.into(),
        mac: Some(mac.parse().unwrap()),
        up,
        group: 10000,
        mtu: 9001,
        addresses: vec![LinkAddress {
            addr: addr.parse().unwrap(),
            owned: false,
            valid_lft: None,
            proto: None,
        }],
    };
    vec![
        link(2, "eth0", "0a:00:00:00:00:01", true, "10.0.1.10/24"),
        link(3, "eth1", "0a:00:00:00:00:02", eth1_up, "10.0.2.20/24"),
    ]
}

fn ops_on_eth1(current: &Current) -> Vec<Op> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/imds/management-network.json");
    let t: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let instance = parse::instance_from(|p| tree::lookup(&t, p)).unwrap();
    let cfg = Config::default();
    let p = plan(&instance, &current.links, &cfg);
    diff(&p, current, Ownership::from(&cfg))
        .into_iter()
        .filter(|op| match op {
            Op::SetLink { index, .. } => *index == 3,
            Op::AddRoute(r) | Op::ReplaceRoute(r) | Op::DelRoute(r) => r.oif == 3,
            _ => false,
        })
        .collect()
}

#[test]
fn a_link_never_seen_up_is_brought_up_one_set_down_after_is_left_down() {
    let dir = std::env::temp_dir().join(format!("eniroute-linkadmin-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut records = AddressRecords::load(&dir);

    // A hot-plugged ENI: its link arrives down and is brought up.
    let fresh = Current {
        held_down: records.held_down(&links(false)),
        links: links(false),
        ..Current::default()
    };
    let ops = ops_on_eth1(&fresh);
    assert!(
        ops.iter()
            .any(|op| matches!(op, Op::SetLink { up: true, .. })),
        "{ops:?}"
    );

    // Seen up, then set down by someone: left down, nothing routed through it.
    records.note_links(&links(true)).unwrap();
    let held = Current {
        held_down: records.held_down(&links(false)),
        links: links(false),
        ..Current::default()
    };
    assert_eq!(held.held_down.iter().copied().collect::<Vec<_>>(), [3]);
    assert_eq!(ops_on_eth1(&held), []);

    // Remembered across a restart (the records are reloaded).
    let reloaded = AddressRecords::load(&dir);
    assert_eq!(reloaded.held_down(&links(false)).len(), 1);

    // Gone and back (a re-attach): a new link, brought up again.
    records.note_links(&links(true)[..1]).unwrap();
    assert!(records.held_down(&links(false)).is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}
