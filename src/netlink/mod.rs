//! The kernel edge: reads links, addresses, routes and rules, and writes
//! them, in the values of [`crate::values`]. Nothing above this module sees
//! a netlink message. [`Kernel`] is the whole host as the agent sees it.

use ipnet::IpNet;
use nix::errno::Errno;

use crate::sysctl::{Sysctl, SysctlError};
use crate::values::{Address, KernelRoute, KernelRule, Link, Route, Rule};

pub mod altname;
pub mod events;
mod msg;
mod request;
mod route_dump;
pub mod route_get;
pub mod rt;
pub mod view;

pub use altname::LinkNames;
pub use events::{Change, Event, EventSocket};
pub use route_get::{RouteLookup, RouteQuery};
pub use rt::RtNetlink;
pub use view::{Concern, Viewed};

/// A change to a link's own settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkChange {
    pub up: bool,
    pub group: Option<u32>,
    pub mtu: Option<u32>,
}

/// The machine, as the reconciler and the daemon see it: links, addresses,
/// routes and rules (read and written), kernel events, whether udev has
/// finished with a link, and per-interface sysctls. Everything they learn
/// about the host comes through here, so a test can hand them an in-memory
/// host and never read the machine's `/run/udev` or `/proc/sys`.
/// [`RtNetlink`] is the real one.
#[allow(async_fn_in_trait)]
pub trait Kernel {
    /// Every link with its addresses; `LinkAddress::owned` set where the
    /// kernel's `IFA_PROTO` carries our protocol number.
    async fn links(&self) -> Result<Vec<Link>, NetlinkError>;
    /// Every rule of both families.
    async fn rules(&self) -> Result<Vec<KernelRule>, NetlinkError>;
    /// Every unicast route of both families in every table.
    async fn routes(&self) -> Result<Vec<KernelRoute>, NetlinkError>;
    /// The routes `concern` names. A real host leaves the others unparsed
    /// (there may be a hundred thousand of them), and their `dev` may be
    /// left as `if<index>`.
    async fn routes_of_concern(&self, concern: &Concern) -> Result<Vec<KernelRoute>, NetlinkError> {
        let mut routes = self.routes().await?;
        routes.retain(|r| concern.route(r.route.table, r.protocol));
        Ok(routes)
    }
    async fn add_address(&self, address: &Address) -> Result<(), NetlinkError>;
    async fn del_address(&self, index: u32, address: IpNet) -> Result<(), NetlinkError>;
    async fn add_route(&self, route: &Route) -> Result<(), NetlinkError>;
    async fn replace_route(&self, route: &Route) -> Result<(), NetlinkError>;
    async fn del_route(&self, route: &Route) -> Result<(), NetlinkError>;
    async fn add_rule(&self, rule: &Rule) -> Result<(), NetlinkError>;
    async fn del_rule(&self, rule: &Rule) -> Result<(), NetlinkError>;
    /// Deletes a rule that carries `protocol` rather than ours: only for
    /// taking over what amazon-ec2-net-utils left (see `crate::coexist`),
    /// once an identical rule of ours is in place.
    async fn del_foreign_rule(&self, rule: &Rule, protocol: u8) -> Result<(), NetlinkError>;
    /// Deletes exactly `route` (its protocol and metric), the route
    /// counterpart of [`Kernel::del_foreign_rule`].
    async fn del_foreign_route(&self, route: &KernelRoute) -> Result<(), NetlinkError>;
    async fn set_link(&self, index: u32, change: &LinkChange) -> Result<(), NetlinkError>;
    /// Every link's kernel name, MAC and alternative names.
    async fn link_names(&self) -> Result<Vec<LinkNames>, NetlinkError>;
    /// [`Kernel::links`] and [`Kernel::link_names`] together, as a
    /// reconcile reads them; a real host answers both from one dump.
    async fn links_and_names(&self) -> Result<(Vec<Link>, Vec<LinkNames>), NetlinkError> {
        Ok((self.links().await?, self.link_names().await?))
    }
    /// `ip link property add|del dev <index> altname <name>`.
    async fn set_altname(&self, index: u32, name: &str, add: bool) -> Result<(), NetlinkError>;

    /// Netlink requests sent so far (dumps and changes), for reporting what
    /// a reconcile cost; 0 where nothing is counted.
    fn messages_sent(&self) -> u64 {
        0
    }

    /// Whether udev is done with link `index` (it may still rename a link
    /// it has not initialised), or does not manage this namespace's links.
    fn udev_initialised(&self, index: u32) -> bool;
    fn read_sysctl(&self, key: &Sysctl) -> Result<String, SysctlError>;
    fn write_sysctl(&self, key: &Sysctl, value: &str) -> Result<(), SysctlError>;

    /// Notifications of changes to links, addresses, routes and rules.
    type Events: EventSource;
    fn events(&self) -> Result<Self::Events, NetlinkError>;
}

/// A stream of kernel change notifications.
#[allow(async_fn_in_trait)]
pub trait EventSource {
    /// The next notification; cancel-safe.
    async fn next(&mut self) -> Result<Change, NetlinkError>;
}

impl EventSource for EventSocket {
    async fn next(&mut self) -> Result<Change, NetlinkError> {
        EventSocket::next(self).await
    }
}

/// A failed netlink call: which call, on what, and the kernel's answer. The
/// kernel's answer is the whole cause, so this error has no `source()`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{call} for {object}: {message}")]
pub struct NetlinkError {
    /// e.g. `RTM_NEWRULE`
    pub call: &'static str,
    /// What the call was about, e.g. `rule from 10.0.2.20 lookup 10001 priority 10001`.
    pub object: String,
    /// The kernel's errno, when it sent one.
    pub errno: Option<Errno>,
    pub message: String,
}

impl NetlinkError {
    /// Another actor changed the same object between our read and our write
    /// (it already exists, or is already gone, or its link vanished). The
    /// right response is to re-read, not to fail.
    pub fn is_race(&self) -> bool {
        matches!(
            self.errno,
            Some(
                Errno::EEXIST | Errno::ESRCH | Errno::ENODEV | Errno::ENOENT | Errno::EADDRNOTAVAIL
            )
        )
    }
}
