//! The agent's EC2 API client, for `eniroute takeover`: credentials and
//! region as AWS tools find them on an instance, SigV4-signed Query API
//! calls over HTTPS, typed answers and errors.

pub mod api;
pub mod client;
pub mod credentials;

pub use client::{Class, Ec2Client, Ec2Error, Ec2Options};
pub use credentials::{Credentials, CredentialsError};
