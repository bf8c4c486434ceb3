//! Instance metadata: the typed model, its parser and the IMDSv2 client.

pub mod client;
pub mod endpoint;
pub mod fetch;
pub mod hint;
pub mod model;
pub mod parse;
pub mod tree;
