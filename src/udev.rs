//! Where udev runs, a new NIC is renamed (eth1 → ens6) right after it
//! appears, and a rename fails once the link is up. So a new link is only
//! acted on once udev has initialised it; where udev does not run
//! (containers, the lab), at once.

use std::path::Path;

pub fn running() -> bool {
    Path::new("/run/udev/control").exists()
}

/// Whether udev is done with link `index` (or not running at all).
pub fn initialised(index: u32) -> bool {
    !running() || Path::new(&format!("/run/udev/data/n{index}")).exists()
}
