//! amazon-ec2-net-utils programs the same per-ENI tables and rules as
//! eniroute (by design: the numbering is shared so runbooks still read).
//! Two agents writing one table fight forever, so eniroute changes nothing
//! where it finds the other installed, unless the configuration says to.

use std::path::{Path, PathBuf};

/// Files that only an amazon-ec2-net-utils installation has: the v2
/// (udev + networkd) units and helper, and v1's network-scripts functions.
const MARKERS: &[&str] = &[
    "usr/lib/systemd/system/policy-routes@.service",
    "lib/systemd/system/policy-routes@.service",
    "usr/bin/setup-policy-routes",
    "usr/sbin/setup-policy-routes",
    "etc/sysconfig/network-scripts/ec2net-functions",
];

/// The first marker present under `root`, if any.
pub fn ec2_net_utils(root: &Path) -> Option<PathBuf> {
    MARKERS.iter().map(|m| root.join(m)).find(|p| p.exists())
}

/// The refusal message, or `None` when the agent may change the kernel.
pub fn refusal(root: &Path, allowed: bool) -> Option<String> {
    if allowed {
        return None;
    }
    ec2_net_utils(root).map(|found| {
        format!(
            "amazon-ec2-net-utils is installed ({} exists) and programs the same tables and rules; \
             remove it, or set selection.coexist_with_ec2_net_utils = true to run beside it",
            found.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_only_where_a_marker_exists_and_not_when_allowed() {
        let root = std::env::temp_dir().join(format!("eniroute-coexist-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        assert_eq!(refusal(&root, false), None);
        std::fs::write(root.join("usr/bin/setup-policy-routes"), "").unwrap();
        let msg = refusal(&root, false).unwrap();
        assert!(msg.contains("usr/bin/setup-policy-routes"), "{msg}");
        assert!(msg.contains("coexist_with_ec2_net_utils"), "{msg}");
        assert_eq!(refusal(&root, true), None);
        let _ = std::fs::remove_dir_all(&root);
    }
}
