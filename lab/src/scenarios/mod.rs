//! The scenarios eniroute exists for (see DESIGN.md), each as a simulated
//! instance with the real agent running in it and checks of what actually
//! gets through. `eniroute-lab` runs them for people; `tests/lab_scenarios.rs`
//! runs the very same code as integration tests.

use std::time::Instant;

mod appliance;
mod cross_vpc;
mod dual_homed;
mod ha_api;
mod ha_failover;
mod management;
pub mod runner;

pub use runner::{Check, Measurement, Options, Report, Session, INTERRUPTED};

/// One runnable scenario.
pub struct Scenario {
    pub name: &'static str,
    /// One line for `eniroute-lab list`.
    pub about: &'static str,
    body: fn(&mut Session) -> std::io::Result<()>,
}

/// Every scenario, in the order `run all` runs them.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "management-network",
        about:
            "eth0 public (80/443), eth1 management: SSH from an admin range answered through eth1; \
                a configured route sends the host's own admin traffic through eth1",
        body: management::run,
    },
    Scenario {
        name: "appliance",
        about: "NAT/proxy instance: forwarding set by config, a private subnet reaches the \
                internet through it, its own management access still works",
        body: appliance::run,
    },
    Scenario {
        name: "dual-homed",
        about: "web (front + mid ENI) -> app (mid + db ENI) -> database: each hop on its own ENI, \
                nothing routed through a host",
        body: dual_homed::run,
    },
    Scenario {
        name: "cross-vpc",
        about:
            "an ENI from a second VPC whose primary CIDR overlaps: its secondary CIDR is reached \
                without binding a source, the overlap is reported",
        body: cross_vpc::run,
    },
    Scenario {
        name: "ha-failover",
        about: "a service ENI, then a secondary IP, move from a failed instance to a hot standby \
                while a client measures the outage",
        body: ha_failover::run,
    },
];

/// The scenario called `name`.
pub fn find(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

impl Scenario {
    /// Builds the scenario, runs its checks and tears everything down (unless
    /// `opts.keep`). Never panics on a failure outside the process: a setup
    /// error ends up in [`Report::error`].
    pub fn run(&self, opts: &Options) -> Report {
        let started = Instant::now();
        let mut session = Session::new(self.name, opts);
        let result = (self.body)(&mut session);
        session.finish(result, started)
    }
}
