//! Connectivity probes that run inside a namespace: a TCP server that tells
//! each client the address it saw, a client that reports what it was told,
//! and `ip route get`.
//!
//! The server answering with the peer address lets a check prove not only
//! that a connection worked but which source address survived the path
//! (e.g. that no NAT or wrong source selection happened).

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sys::socket::{shutdown, Shutdown};
use tokio::io::AsyncReadExt;
use tokio::net::TcpSocket;

use super::netns::Netns;

/// A TCP server listening inside a namespace; each connection is answered with
/// the peer's address as `"<ip>:<port>\n"` and closed. Stops on drop.
#[derive(Debug)]
pub struct TcpServer {
    addr: SocketAddr,
    /// A duplicate of the listening socket, kept to wake the accept loop.
    waker: TcpListener,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpServer {
    /// Binds `bind` inside `ns` (port 0 picks a free port, see [`Self::local_addr`]).
    pub fn start(ns: &Netns, bind: SocketAddr) -> io::Result<TcpServer> {
        let listener = ns.run_in(|| TcpListener::bind(bind))?.map_err(|e| {
            io::Error::new(e.kind(), format!("bind {bind} in netns {}: {e}", ns.name()))
        })?;
        let addr = listener.local_addr()?;
        let waker = listener.try_clone()?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name(format!("tcp-server-{addr}"))
                .spawn(move || serve(listener, &stop))?
        };
        Ok(TcpServer {
            addr,
            waker,
            stop,
            thread: Some(thread),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

fn serve(listener: TcpListener, stop: &AtomicBool) {
    loop {
        match listener.accept() {
            Ok((mut stream, peer)) => {
                // One thread per connection so a client that never reads
                // cannot stall the others.
                let spawned = std::thread::Builder::new()
                    .name(format!("tcp-conn-{peer}"))
                    .spawn(move || {
                        let _ = writeln!(stream, "{peer}");
                    });
                if let Err(e) = spawned {
                    tracing::warn!(%peer, error = %e, "could not spawn connection thread");
                }
            }
            Err(_) if stop.load(Ordering::Acquire) => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed; server stops");
                return;
            }
        }
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // On Linux, shutting down a listening socket makes a blocked accept()
        // return EINVAL, which ends the loop without a wake-up connection.
        if let Err(e) = shutdown(self.waker.as_raw_fd(), Shutdown::Read) {
            tracing::warn!(addr = %self.addr, error = %e, "could not stop TCP server");
            return;
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Connects from inside `ns` to `dst`, from `src` (any port) if given, and
/// returns what the server wrote. `timeout` bounds the whole exchange.
pub fn connect(
    ns: &Netns,
    dst: SocketAddr,
    src: Option<IpAddr>,
    timeout: Duration,
) -> io::Result<String> {
    let context = |e: io::Error| {
        let from = src.map(|s| format!(" from {s}")).unwrap_or_default();
        io::Error::new(
            e.kind(),
            format!("connect to {dst}{from} in netns {}: {e}", ns.name()),
        )
    };
    ns.run_in(|| {
        // A current-thread runtime on this thread creates its socket here, in
        // the namespace, and gives a clean timeout over connect and read.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        rt.block_on(async {
            match tokio::time::timeout(timeout, exchange(dst, src)).await {
                Ok(result) => result,
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer within {timeout:?}"),
                )),
            }
        })
    })?
    .map_err(context)
}

async fn exchange(dst: SocketAddr, src: Option<IpAddr>) -> io::Result<String> {
    let socket = match dst {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(src) = src {
        socket.bind(SocketAddr::new(src, 0))?;
    }
    let mut stream = socket.connect(dst).await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    Ok(answer)
}

/// The kernel's routing decision for one destination, from `ip route get`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteGet {
    /// The output interface.
    pub dev: String,
    /// The full answer, for printing.
    pub raw: String,
}

/// Asks the kernel of `ns` how it would route to `dst`, as a packet from
/// `from` if given. `from` must be an address local to `ns`: that is the
/// question for locally generated traffic (forwarded traffic needs `iif`).
pub fn route_get(ns: &Netns, dst: IpAddr, from: Option<IpAddr>) -> io::Result<RouteGet> {
    let dst = dst.to_string();
    let from = from.map(|f| f.to_string());
    let mut args = vec!["route", "get", dst.as_str()];
    if let Some(from) = &from {
        args.extend(["from", from.as_str()]);
    }
    let raw = ns.ip(&args)?;
    let dev = parse_dev(&raw).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "ip -n {} {}: no device in {raw:?}",
                ns.name(),
                args.join(" ")
            ),
        )
    })?;
    Ok(RouteGet {
        dev,
        raw: raw.trim_end().to_string(),
    })
}

fn parse_dev(raw: &str) -> Option<String> {
    let mut words = raw.split_whitespace();
    while let Some(word) = words.next() {
        if word == "dev" {
            return words.next().map(str::to_owned);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_dev_reads_the_output_interface() {
        let raw = "10.9.0.5 from 10.0.2.20 via 10.0.2.1 dev eth1 table 10001 uid 0 \n    cache \n";
        assert_eq!(parse_dev(raw).as_deref(), Some("eth1"));
        assert_eq!(
            parse_dev("local 10.0.1.10 dev lo table local src 10.0.1.10"),
            Some("lo".into())
        );
        assert_eq!(parse_dev("unreachable"), None);
    }
}
