//! Changes to the kernel, and carrying them out. The diff (and the
//! altname and takeover steps inside it) produce [`Op`]s; [`apply`] performs
//! them through the host trait.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use ipnet::IpNet;
use serde::Serialize;

use crate::netlink::{Kernel, LinkChange, NetlinkError};
use crate::sysctl::{Sysctl, SysctlError};
use crate::values::{Address, Family, KernelRoute, Route, Rule, MAIN_TABLE};

/// One change to the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "op")]
pub enum Op {
    SetLink {
        index: u32,
        dev: String,
        up: bool,
        group: Option<u32>,
        mtu: Option<u32>,
    },
    SetSysctl {
        key: Sysctl,
        value: String,
    },
    AddAddress(Address),
    AddRoute(Route),
    ReplaceRoute(Route),
    AddRule(Rule),
    /// Records an address someone else added as the agent's from now on
    /// (a secondary address of an ENI taken over from amazon-ec2-net-utils).
    /// Changes nothing in the kernel.
    AdoptAddress(Address),
    DelRule(Rule),
    /// Deletes a rule of amazon-ec2-net-utils' that an identical rule of
    /// the agent's replaced (see [`crate::coexist`]).
    DelForeignRule {
        rule: Rule,
        protocol: u8,
    },
    DelRoute(Route),
    /// The route counterpart of `DelForeignRule`.
    DelForeignRoute {
        route: Route,
        protocol: u8,
        metric: u32,
    },
    DelAddress(Address),
    /// An alternative name on a managed ENI's link (see [`crate::altname`]).
    AddAltname {
        index: u32,
        dev: String,
        name: String,
    },
    DelAltname {
        index: u32,
        dev: String,
        name: String,
    },
}

impl Op {
    /// Its name, as `--json` spells it (`add-rule`, `del-address`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Op::SetLink { .. } => "set-link",
            Op::SetSysctl { .. } => "set-sysctl",
            Op::AddAddress(_) => "add-address",
            Op::AddRoute(_) => "add-route",
            Op::ReplaceRoute(_) => "replace-route",
            Op::AddRule(_) => "add-rule",
            Op::AdoptAddress(_) => "adopt-address",
            Op::DelRule(_) => "del-rule",
            Op::DelForeignRule { .. } => "del-foreign-rule",
            Op::DelRoute(_) => "del-route",
            Op::DelForeignRoute { .. } => "del-foreign-route",
            Op::DelAddress(_) => "del-address",
            Op::AddAltname { .. } => "add-altname",
            Op::DelAltname { .. } => "del-altname",
        }
    }

    /// The link and the table it changes, where it has them.
    pub fn subject(&self) -> (Option<&str>, Option<u32>) {
        match self {
            Op::SetLink { dev, .. } | Op::AddAltname { dev, .. } | Op::DelAltname { dev, .. } => {
                (Some(dev), None)
            }
            Op::SetSysctl { key, .. } => (key.dev(), None),
            Op::AddAddress(a) | Op::AdoptAddress(a) | Op::DelAddress(a) => (Some(&a.dev), None),
            Op::AddRoute(r) | Op::ReplaceRoute(r) | Op::DelRoute(r) => {
                (Some(&r.dev), Some(r.table))
            }
            Op::DelForeignRoute { route, .. } => (Some(&route.dev), Some(route.table)),
            Op::AddRule(r) | Op::DelRule(r) => (None, Some(r.table)),
            Op::DelForeignRule { rule, .. } => (None, Some(rule.table)),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::SetLink {
                dev,
                up,
                group,
                mtu,
                ..
            } => {
                write!(f, "~ link {dev}")?;
                if *up {
                    write!(f, " up")?;
                }
                if let Some(g) = group {
                    write!(f, " group {g}")?;
                }
                if let Some(m) = mtu {
                    write!(f, " mtu {m}")?;
                }
                Ok(())
            }
            Op::SetSysctl { key, value } => write!(f, "~ sysctl {key}={value}"),
            Op::AddAddress(a) => write!(f, "+ {a}"),
            Op::AddRoute(r) => write!(f, "+ {r}"),
            Op::ReplaceRoute(r) => write!(f, "~ {r}"),
            Op::AddRule(r) => write!(f, "+ {r}"),
            Op::AdoptAddress(a) => write!(f, "~ {a} (taken over from amazon-ec2-net-utils)"),
            Op::DelRule(r) => write!(f, "- {r}"),
            Op::DelForeignRule { rule, protocol } => write!(
                f,
                "- {rule} proto {protocol} (amazon-ec2-net-utils', replaced by eniroute's)"
            ),
            Op::DelRoute(r) => write!(f, "- {r}"),
            Op::DelForeignRoute {
                route,
                protocol,
                metric,
            } => write!(
                f,
                "- {route} proto {protocol} metric {metric} (amazon-ec2-net-utils', replaced by eniroute's)"
            ),
            Op::DelAddress(a) => write!(f, "- {a}"),
            Op::AddAltname { dev, name, .. } => write!(f, "+ altname {name} dev {dev}"),
            Op::DelAltname { dev, name, .. } => write!(f, "- altname {name} dev {dev}"),
        }
    }
}

/// The outcome of applying a diff.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Applied {
    /// Changes made, in order.
    pub ops: Vec<Op>,
    /// Netlink and sysctl writes performed (a no-op reconcile makes none).
    pub writes: usize,
    /// Changes that failed for reasons other than a race; the rest went on.
    pub errors: Vec<String>,
    /// The changes that failed (not those held back because their
    /// replacement failed).
    #[serde(skip)]
    pub failed: Vec<Op>,
    /// Addresses added and removed, for the state file.
    #[serde(skip)]
    pub added_addresses: Vec<(u32, IpNet)>,
    #[serde(skip)]
    pub removed_addresses: Vec<(u32, IpNet)>,
}

impl Op {
    /// Whether this deletion removes what the addition `add` was put in to
    /// replace: the same rule selector, a route of the same table or link
    /// to an overlapping destination, or a link's address with a subnet (the
    /// primary, whose prefix route the link's traffic needs) for another
    /// one. When `add` failed, this deletion waits: nothing goes that has no
    /// working replacement.
    pub fn replaced_by(&self, add: &Op) -> bool {
        match (self, add) {
            (Op::DelRule(old) | Op::DelForeignRule { rule: old, .. }, Op::AddRule(new)) => {
                old.family == new.family
                    && old.from == new.from
                    && old.suppress_ifgroup == new.suppress_ifgroup
            }
            (
                Op::DelRoute(old) | Op::DelForeignRoute { route: old, .. },
                Op::AddRoute(new) | Op::ReplaceRoute(new),
            ) => {
                (old.table == new.table || old.oif == new.oif)
                    && (old.dst.contains(&new.dst) || new.dst.contains(&old.dst))
            }
            (Op::DelAddress(old), Op::AddAddress(new)) => {
                let subnet = |a: &Address| a.address.prefix_len() < a.address.max_prefix_len();
                old.index == new.index
                    && (old.address.addr() == new.address.addr()
                        || (subnet(old)
                            && subnet(new)
                            && matches!(
                                (old.address, new.address),
                                (IpNet::V4(_), IpNet::V4(_)) | (IpNet::V6(_), IpNet::V6(_))
                            )))
            }
            _ => false,
        }
    }

    /// Whether this rule sends traffic into a table that `route` fills:
    /// an ENI's source rule and a route of its table, of one family. The
    /// main table's rule (`suppress_ifgroup`) is not one: main is never the
    /// agent's alone.
    fn leads_to(&self, route: &Op) -> bool {
        match (self, route) {
            (Op::AddRule(rule), Op::AddRoute(r) | Op::ReplaceRoute(r)) => {
                rule.suppress_ifgroup.is_none()
                    && rule.table != MAIN_TABLE
                    && rule.table == r.table
                    && rule.family == Family::of(&r.dst)
            }
            _ => false,
        }
    }
}

/// Why one change failed.
enum OpError {
    Netlink(NetlinkError),
    Sysctl(SysctlError),
}

/// How many changes may be on their way to the kernel before the first of
/// them has been answered. The kernel handles a socket's requests in the
/// order they were sent, so sending the next one without waiting for the
/// last one's acknowledgement changes nothing but the time it takes; the
/// bound keeps the acknowledgements waiting to be read far below a netlink
/// socket's receive buffer.
const IN_FLIGHT: usize = 64;

/// One change sent (or done), with its outcome still to be collected.
enum Slot<'k> {
    Done(Result<(), OpError>),
    Waiting(Pin<Box<dyn Future<Output = Result<(), OpError>> + 'k>>),
}

/// Applies `ops` in order. A race (the object already exists, or is already
/// gone) is not an error: it means someone else got there first, and the
/// caller's next read will see it. Other failures are collected and the
/// remaining changes still go in, so one bad object never stops the rest.
///
/// The netlink changes are pipelined: each is sent as soon as the one
/// before it has been sent, and the answers are collected in order, each
/// against the change it answers. A deletion whose replacement is still
/// unanswered waits for that answer (a failed replacement keeps what it
/// was to replace), and a sysctl, which is not netlink, waits for every
/// change before it.
///
/// A source rule waits for the routes being added to its table, and is
/// held back when one of them failed: traffic moves to a table only once
/// the table is whole, and the rule it was to replace stays, so an ENI
/// whose routes cannot go into its new table keeps routing through its old
/// one rather than half through each.
pub async fn apply(kernel: &impl Kernel, ops: Vec<Op>) -> Applied {
    let mut out = Applied::default();
    let mut pending: VecDeque<(Op, Slot<'_>)> = VecDeque::new();
    // Rules held back because a route of their table failed.
    let mut held: Vec<Op> = Vec::new();
    for op in ops {
        let barrier = matches!(op, Op::SetSysctl { .. })
            || pending
                .iter()
                .any(|(sent, _)| op.replaced_by(sent) || op.leads_to(sent));
        if barrier {
            while let Some(next) = pending.pop_front() {
                settle(next, &mut out).await;
            }
        }
        if let Some(route) = out.failed.iter().find(|route| op.leads_to(route)) {
            out.errors.push(format!(
                "{op}: not done: a route of its table failed ({route})"
            ));
            held.push(op);
            continue;
        }
        // Additions that failed or were held back: what they were to
        // replace stays.
        if let Some(add) = out.failed.iter().find(|add| op.replaced_by(add)) {
            out.errors.push(format!(
                "{op}: not done, kept in place: its replacement ({add}) failed"
            ));
            continue;
        }
        if let Some(add) = held.iter().find(|add| op.replaced_by(add)) {
            out.errors.push(format!(
                "{op}: not done, kept in place: its replacement ({add}) was held back"
            ));
            continue;
        }
        if !matches!(op, Op::AdoptAddress(_)) {
            out.writes += 1;
        }
        let mut fut = Box::pin(perform(kernel, op.clone()));
        // Polled once here: a write sends its request before it first
        // waits, so the next change goes out right behind this one.
        let slot = match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(result) => Slot::Done(result),
            Poll::Pending => Slot::Waiting(fut),
        };
        pending.push_back((op, slot));
        if pending.len() >= IN_FLIGHT {
            if let Some(next) = pending.pop_front() {
                settle(next, &mut out).await;
            }
        }
    }
    while let Some(next) = pending.pop_front() {
        settle(next, &mut out).await;
    }
    out
}

/// Collects one change's outcome and records it against that change.
async fn settle((op, slot): (Op, Slot<'_>), out: &mut Applied) {
    let result = match slot {
        Slot::Done(result) => result,
        Slot::Waiting(fut) => fut.await,
    };
    match result {
        Ok(()) => {
            match &op {
                Op::AddAddress(a) | Op::AdoptAddress(a) => {
                    out.added_addresses.push((a.index, a.address))
                }
                Op::DelAddress(a) => out.removed_addresses.push((a.index, a.address)),
                _ => {}
            }
            out.ops.push(op);
        }
        Err(OpError::Netlink(e)) if e.is_race() => {
            tracing::debug!("{op}: {e} (raced with another change; re-reading)");
        }
        Err(OpError::Netlink(e)) => {
            out.errors.push(crate::error_chain(&e));
            out.failed.push(op);
        }
        Err(OpError::Sysctl(e)) => {
            out.errors.push(crate::error_chain(&e));
            out.failed.push(op);
        }
    }
}

/// Carries out one change.
async fn perform(kernel: &impl Kernel, op: Op) -> Result<(), OpError> {
    match op {
        Op::SetLink {
            index,
            up,
            group,
            mtu,
            ..
        } => kernel
            .set_link(index, &LinkChange { up, group, mtu })
            .await
            .map_err(OpError::Netlink),
        Op::SetSysctl { key, value } => kernel.write_sysctl(&key, &value).map_err(OpError::Sysctl),
        Op::AddAddress(a) => kernel.add_address(&a).await.map_err(OpError::Netlink),
        Op::AddRoute(r) => kernel.add_route(&r).await.map_err(OpError::Netlink),
        Op::ReplaceRoute(r) => kernel.replace_route(&r).await.map_err(OpError::Netlink),
        Op::AddRule(r) => kernel.add_rule(&r).await.map_err(OpError::Netlink),
        // Nothing to write: the state file records it.
        Op::AdoptAddress(_) => Ok(()),
        Op::DelRule(r) => kernel.del_rule(&r).await.map_err(OpError::Netlink),
        Op::DelForeignRule { rule, protocol } => kernel
            .del_foreign_rule(&rule, protocol)
            .await
            .map_err(OpError::Netlink),
        Op::DelRoute(r) => kernel.del_route(&r).await.map_err(OpError::Netlink),
        Op::DelForeignRoute {
            route,
            protocol,
            metric,
        } => kernel
            .del_foreign_route(&KernelRoute {
                route,
                protocol,
                metric,
            })
            .await
            .map_err(OpError::Netlink),
        Op::AddAltname { index, name, .. } => kernel
            .set_altname(index, &name, true)
            .await
            .map_err(OpError::Netlink),
        Op::DelAltname { index, name, .. } => kernel
            .set_altname(index, &name, false)
            .await
            .map_err(OpError::Netlink),
        Op::DelAddress(a) => kernel
            .del_address(a.index, a.address)
            .await
            .map_err(OpError::Netlink),
    }
}
