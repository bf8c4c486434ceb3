//! The simulated EC2 instance: network namespaces for a VPC router, instances
//! and client hosts, joined by veth pairs, plus probes that check what
//! actually gets through. Used by the root integration tests and by
//! `eniroute-lab`. Needs root and iproute2.

pub mod agent;
pub mod imds_tree;
pub mod netns;
pub mod probe;
pub mod scenarios;
pub mod vpc;
pub mod world;

pub use netns::{cleanup_stale, veth, Netns};
pub use probe::{connect, route_get, RouteGet, TcpServer};
pub use vpc::{Client, Eni, EniSpec, Instance, Vpc, IMDS_ADDR};
