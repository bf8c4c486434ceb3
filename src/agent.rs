//! What `apply`, `cleanup` and the daemon each set up before they touch
//! the kernel, built one way for all three: the metadata client, the
//! netlink handle, and this network namespace's state directory held under
//! its lock (with the address records kept there).

use std::path::PathBuf;

use crate::config::Config;
use crate::imds::client::{ImdsClient, ImdsError, ImdsOptions};
use crate::imds::fetch::Scope;
use crate::netlink::{NetlinkError, RtNetlink};
use crate::state::{self, AddressRecords, Lock, StateError};

/// Why the agent could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The metadata settings do not make a usable client (a bad endpoint
    /// URL, a zero timeout): the configuration is at fault.
    #[error(transparent)]
    Metadata(ImdsError),
    /// The state directory cannot be found or created, or another agent
    /// holds this namespace's lock.
    #[error(transparent)]
    State(StateError),
    /// No netlink socket.
    #[error("cannot open a netlink socket")]
    Netlink(#[source] NetlinkError),
}

/// Applies a metadata endpoint given on the command line, which wins over
/// the file (also on every reload): it names one address, so the IPv6
/// fallback no longer applies.
pub fn override_endpoint(cfg: &mut Config, endpoint: Option<&str>) {
    if let Some(url) = endpoint {
        cfg.metadata.endpoint = Some(url.to_string());
        cfg.metadata.use_ipv6 = false;
    }
}

/// The metadata client the configuration describes.
pub fn metadata_client(cfg: &Config) -> Result<ImdsClient, SetupError> {
    ImdsClient::new(ImdsOptions::from(&cfg.metadata)).map_err(SetupError::Metadata)
}

/// The netlink handle, marking what it creates with the configured
/// protocol. Its connection runs as a task of the current tokio runtime, so
/// this is called from within one.
pub fn kernel(cfg: &Config) -> Result<RtNetlink, SetupError> {
    RtNetlink::connect(cfg.numbering.protocol).map_err(SetupError::Netlink)
}

/// Which MACs a metadata read reads beyond the listing: those of the links
/// on the host (a VLAN's or a bridge's included: harmless, and cheaper to
/// read than to tell apart), and `others` (those the takeover claims in
/// this namespace and the configuration name). Without the links (the
/// kernel could not be read) every listed MAC is read, as nothing else
/// would be safe.
pub fn metadata_scope<M>(links: Option<&[crate::values::Link]>, others: M) -> Scope
where
    M: IntoIterator<Item = crate::values::Mac>,
{
    let Some(links) = links else {
        return Scope::All;
    };
    let mut macs: std::collections::BTreeSet<_> = links.iter().filter_map(|l| l.mac).collect();
    macs.extend(others);
    Scope::Only(macs)
}

/// The MACs live takeover claims in this namespace's state directory name.
pub fn claimed_macs() -> Vec<crate::values::Mac> {
    crate::claim::Pending::new(state::run_dir().ok()).macs()
}

/// This network namespace's state, held for as long as the value lives:
/// two agents in one namespace would fight over the same rules.
#[derive(Debug)]
pub struct Namespace {
    pub dir: PathBuf,
    /// The addresses earlier runs added.
    pub records: AddressRecords,
    _lock: Lock,
}

impl Namespace {
    pub fn claim() -> Result<Namespace, SetupError> {
        let dir = state::run_dir().map_err(SetupError::State)?;
        let lock = Lock::acquire(&dir).map_err(SetupError::State)?;
        let records = AddressRecords::load(&dir);
        Ok(Namespace {
            dir,
            records,
            _lock: lock,
        })
    }
}
