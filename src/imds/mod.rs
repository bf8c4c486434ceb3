//! Instance metadata: the typed model, its parser, the IMDSv2 client and the
//! in-repo simulator that tests and the lab point the client at.

pub mod client;
pub mod fetch;
pub mod model;
pub mod parse;
pub mod sim;
pub mod tree;
