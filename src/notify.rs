//! systemd's readiness protocol (sd_notify(3)): one datagram per message to
//! `$NOTIFY_SOCKET`. Without that variable (not started by systemd, or a
//! test) every call is a no-op.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    pub fn from_env() -> Notifier {
        match std::env::var("NOTIFY_SOCKET") {
            Ok(path) => Notifier::to(&path),
            Err(_) => Notifier { target: None },
        }
    }

    /// Notifies the socket at `path`; a leading '@' names a socket in the
    /// abstract namespace. A path that cannot be a socket address (too
    /// long, or a transport such as vsock this agent does not speak) makes
    /// a notifier that does nothing: readiness is the supervisor's concern,
    /// routing is ours.
    pub fn to(path: &str) -> Notifier {
        let target = (|| {
            let addr = match path.strip_prefix('@') {
                Some(name) => SocketAddr::from_abstract_name(name.as_bytes()).ok()?,
                None if path.starts_with('/') => SocketAddr::from_pathname(path).ok()?,
                None => {
                    tracing::warn!(
                        "NOTIFY_SOCKET={path:?}: unsupported address; not notifying systemd"
                    );
                    return None;
                }
            };
            Some((UnixDatagram::unbound().ok()?, addr))
        })();
        Notifier { target }
    }

    /// Sends `state` (e.g. `READY=1\nSTATUS=…`); failures are logged, never
    /// fatal: routing matters more than the supervisor's view of it.
    pub fn send(&self, state: &str) {
        if let Some((sock, addr)) = &self.target {
            if let Err(e) = sock.send_to_addr(state.as_bytes(), addr) {
                tracing::debug!("sd_notify {state:?}: {e}");
            }
        }
    }

    /// How often to send WATCHDOG=1: half the interval systemd expects, when
    /// `WatchdogSec=` is set for this process.
    pub fn watchdog_interval() -> Option<Duration> {
        watchdog_interval(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        )
    }
}

fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    let usec: u64 = usec?.parse().ok()?;
    // The variables are inherited; a watchdog meant for a parent is not ours.
    if let Some(pid) = pid {
        if pid.parse::<u32>().ok() != Some(me) {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_socket_and_an_abstract_one() {
        let dir = std::env::temp_dir().join(format!("eniroute-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        Notifier::to(path.to_str().unwrap()).send("READY=1\nSTATUS=ok");
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=ok");

        let name = format!("eniroute-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        Notifier::to(&format!("@{name}")).send("WATCHDOG=1");
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_missing_or_odd_socket_is_harmless() {
        Notifier::to("/nonexistent/eniroute/notify").send("READY=1");
        Notifier::to("vsock:2:1234").send("READY=1");
        Notifier { target: None }.send("READY=1");
    }

    #[test]
    fn watchdog_is_half_the_interval_and_only_for_this_pid() {
        let half = Some(Duration::from_millis(1500));
        assert_eq!(watchdog_interval(Some("3000000"), None, 7), half);
        assert_eq!(watchdog_interval(Some("3000000"), Some("7"), 7), half);
        assert_eq!(watchdog_interval(Some("3000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("soon"), None, 7), None);
        assert_eq!(watchdog_interval(None, None, 7), None);
    }
}
