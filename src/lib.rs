//! eniroute: makes every network interface of a multi-homed EC2 instance
//! route its own traffic.

pub mod config;
pub mod imds;
pub mod lab;
pub mod netlink;
pub mod plan;
pub mod reconcile;
pub mod routing;
pub mod state;
pub mod sysctl;
pub mod cli;
pub mod daemon;
pub mod logging;
pub mod notify;
pub mod udev;
