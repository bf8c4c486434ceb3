//! eniroute: makes every network interface of a multi-homed EC2 instance
//! route its own traffic.

pub mod cli;
pub mod coexist;
pub mod config;
pub mod daemon;
pub mod imds;
pub mod logging;
pub mod netlink;
pub mod notify;
pub mod plan;
pub mod reconcile;
pub mod routing;
pub mod state;
pub mod sysctl;
pub mod udev;
