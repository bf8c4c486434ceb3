//! eniroute: makes every network interface of a multi-homed EC2 instance
//! route its own traffic.

pub mod agent;
pub mod altname;
pub mod backoff;
pub mod change;
pub mod claim;
pub mod cli;
pub mod coexist;
pub mod config;
pub mod daemon;
pub mod ec2;
pub mod imds;
pub mod logging;
pub mod metrics;
pub mod netlink;
pub mod notify;
pub mod plan;
pub mod pods;
pub mod reconcile;
pub mod snapshot;
pub mod state;
pub mod sysctl;
pub mod trace;
pub mod udev;
pub mod values;

/// An error and its causes on one line, outermost first, as `main` prints
/// it and the daemon logs it.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
