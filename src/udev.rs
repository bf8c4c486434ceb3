//! Where udev runs, a new NIC is renamed (eth1 → ens6) right after it
//! appears, and a rename fails once the link is up. So a new link is only
//! acted on once udev has initialised it; where udev does not run
//! (containers, the lab), at once.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::OnceLock;

/// Whether udev manages this network namespace's links: it runs, and we are
/// in the namespace it sees (pid 1's). In any other namespace (a container,
/// `ip netns exec`) the host's udev never initialises our links, and
/// waiting for it would configure nothing, ever.
pub fn running() -> bool {
    static RUNNING: OnceLock<bool> = OnceLock::new();
    *RUNNING.get_or_init(|| {
        let ino = |p: &str| std::fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
        let same_netns = match (ino("/proc/self/ns/net"), ino("/proc/1/ns/net")) {
            (Some(a), Some(b)) => a == b,
            // pid 1's namespace is not visible (another pid namespace): a
            // container, where udev does not manage links.
            _ => false,
        };
        same_netns && Path::new("/run/udev/control").exists()
    })
}

/// Whether udev is done with link `index` (or does not manage links here).
pub fn initialised(index: u32) -> bool {
    !running() || Path::new(&format!("/run/udev/data/n{index}")).exists()
}
