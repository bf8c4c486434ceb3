//! The simulated EC2 instance: network namespaces for a VPC router, instances
//! and client hosts, joined by veth pairs, plus probes that check what
//! actually gets through, and the IMDSv2 simulator the instances read.
//! Used by the namespace tests, the benchmarks and `eniroute-lab`; never
//! shipped. Needs root and iproute2.

pub mod agent;
pub mod bench;
pub mod churn;
pub mod dhcp;
pub mod ec2_api;
pub mod ec2_net_utils;
pub mod guest;
pub mod imds_tree;
pub mod netns;
pub mod probe;
pub mod scenarios;
pub mod sim;
pub mod vpc;
pub mod world;

pub use netns::{cleanup_stale, veth, Netns};
pub use probe::{connect, route_get, RouteGet, TcpServer};
pub use vpc::{Client, Eni, EniSpec, Instance, Ipv6Eni, Vpc, IMDS_ADDR, IMDS_ADDR_V6};
