//! The bottom floor: plain values every layer shares (an ENI's MAC and key,
//! address families, rp_filter modes, links, addresses, routes and rules,
//! and the warnings a plan carries). This module imports nothing else of
//! the crate.

mod eni;
mod routing;
mod warning;

pub use eni::{EniFacts, EniKey, EniKeyError, Mac, ParseMacError};
pub use routing::{
    default_metric, table_name, Address, Family, KernelRoute, KernelRule, Link, LinkAddress,
    LinkSettings, Route, RpFilter, Rule, MAIN_TABLE,
};
pub use warning::{ForeignRule, Warning};
