//! An IMDSv2 simulator: serves a metadata tree over HTTP/1.1 with the rules
//! of the real service (token PUT, 401 without a token, 404 for missing
//! paths) plus faults and propagation lag that tests switch on at will.
//!
//! It runs on a thread of its own with a current-thread runtime, so that
//! synchronous tests can use it, and so that the lab can bind the listener
//! inside an instance's network namespace and serve it from any thread: a
//! socket stays in the namespace it was created in.
//!
//! The HTTP server is deliberately tiny: GET and PUT, headers,
//! Content-Length bodies, keep-alive. It is a test double, not a web server.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use eniroute::imds::client::{MAX_BODY, MAX_TOKEN_TTL_SECS};
use eniroute::imds::tree;
use eniroute::values::Mac;

const META_PREFIX: &str = "latest/meta-data";
const TOKEN_PATH: &str = "latest/api/token";
const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";

/// A keep-alive connection idle this long is closed, as real servers do; the
/// client must cope with pooled connections going away.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_HEADER_LINE: u64 = 8 * 1024;
const MAX_HEADERS: usize = 64;

/// A misbehaviour to inject for requests under a path prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status and a short body.
    Status(u16),
    /// Wait this long, then answer normally.
    Delay(Duration),
    /// 200 with a body that is not metadata.
    Garbage,
    /// 200 with a body larger than any client should accept, sent chunked so
    /// the client only finds out by counting.
    Oversized,
    /// Close the connection without answering.
    Drop,
    /// 200 with this body, e.g. an empty one.
    Body(String),
    /// 301 to this location, which a metadata client must not follow.
    Redirect(String),
}

/// The body [`Fault::Garbage`] serves.
pub const GARBAGE_BODY: &str = "\u{1}\u{2}<html>garbage</html>\n";

/// Size of the body [`Fault::Oversized`] serves.
pub const OVERSIZED_LEN: usize = MAX_BODY + 32 * 1024;

/// A running simulator. Clones share it; it stops on [`Simulator::shutdown`]
/// or when the last clone is dropped.
#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("addr", &self.inner.addr)
            .finish_non_exhaustive()
    }
}

/// Owned by the `Simulator` handles only; the serving thread holds `Shared`,
/// so dropping the last handle reaches `Inner::drop` and stops the thread.
struct Inner {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Inner {
    fn stop(&self) {
        // send_replace: succeeds whether or not the thread still listens.
        self.stop.send_replace(true);
        if let Some(handle) = lock(&self.thread).take() {
            // A panic in the server thread already failed whoever saw it;
            // nothing more to report here.
            let _ = handle.join();
        }
    }
}

/// State the handles and the server thread share.
struct Shared {
    state: Mutex<State>,
    requests: AtomicU64,
    token_requests: AtomicU64,
}

struct State {
    tree: Value,
    /// Path prefix → fault, and how many more requests it answers (`None`:
    /// until cleared); "" is the global fault. The longest matching prefix
    /// wins.
    faults: BTreeMap<String, (Fault, Option<u32>)>,
    /// MAC → when it becomes visible.
    lags: HashMap<Mac, Instant>,
    /// Token → expiry.
    tokens: HashMap<String, Instant>,
    ttl_cap: Option<u32>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not wedge the server for the others.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Simulator {
    /// Serves `tree` on an already bound listener, on a thread of its own
    /// with its own current-thread runtime. The listener may have been bound
    /// in another network namespace by the caller.
    pub fn serve(listener: std::net::TcpListener, tree: Value) -> io::Result<Simulator> {
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let listener = {
            let _guard = runtime.enter();
            TcpListener::from_std(listener)?
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                tree,
                faults: BTreeMap::new(),
                lags: HashMap::new(),
                tokens: HashMap::new(),
                ttl_cap: None,
            }),
            requests: AtomicU64::new(0),
            token_requests: AtomicU64::new(0),
        });
        let (stop, stopped) = watch::channel(false);
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("imds-sim {addr}"))
            .spawn(move || runtime.block_on(accept_loop(listener, thread_shared, stopped)))?;
        Ok(Simulator {
            inner: Arc::new(Inner {
                addr,
                shared,
                stop,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// Binds `addr` (use `127.0.0.1:0` in tests) and serves `tree` on it.
    pub fn bind(addr: SocketAddr, tree: Value) -> io::Result<Simulator> {
        Simulator::serve(std::net::TcpListener::bind(addr)?, tree)
    }

    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// `http://ADDR:PORT`, ready for `ImdsOptions::endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// The tree served now.
    pub fn tree(&self) -> Value {
        self.state().tree.clone()
    }

    pub fn set_tree(&self, tree: Value) {
        self.state().tree = tree;
    }

    /// Edits the tree in place (attach an ENI, move an address).
    pub fn update(&self, f: impl FnOnce(&mut Value)) {
        f(&mut self.state().tree);
    }

    /// Injects `fault` for requests whose path starts with `path_prefix`
    /// (relative to `latest/meta-data/`, or from the root such as
    /// `latest/api/token`); `None` prefix for every request. `None` fault
    /// clears it.
    pub fn set_fault(&self, path_prefix: Option<&str>, fault: Option<Fault>) {
        let prefix = fault_prefix(path_prefix);
        let mut state = self.state();
        match fault {
            Some(f) => {
                state.faults.insert(prefix, (f, None));
            }
            None => {
                state.faults.remove(&prefix);
            }
        }
    }

    /// [`Self::set_fault`] for the next `requests` matching requests only:
    /// one poll's worth of a fault, say. [`Self::fault`] tells when it has
    /// been served.
    pub fn set_fault_times(&self, path_prefix: Option<&str>, fault: Fault, requests: u32) {
        let prefix = fault_prefix(path_prefix);
        self.state().faults.insert(prefix, (fault, Some(requests)));
    }

    /// The fault set for exactly this prefix, while it lasts.
    pub fn fault(&self, path_prefix: Option<&str>) -> Option<Fault> {
        let prefix = fault_prefix(path_prefix);
        self.state().faults.get(&prefix).map(|(f, _)| f.clone())
    }

    /// Hides `mac` (absent from the listing, its keys 404) until `lag` has
    /// elapsed from now, as metadata does while a new attachment propagates.
    pub fn set_lag(&self, mac: Mac, lag: Duration) {
        self.state().lags.insert(mac, Instant::now() + lag);
    }

    /// Grants tokens no longer than `secs` whatever the client asks for, to
    /// test expiry without waiting hours.
    pub fn set_token_ttl_cap(&self, secs: Option<u32>) {
        self.state().ttl_cap = secs;
    }

    /// Invalidates every token issued so far: the next GET with one gets a
    /// 401, as after an IMDS restart.
    pub fn revoke_tokens(&self) {
        self.state().tokens.clear();
    }

    /// Requests served (or deliberately not answered), tokens included.
    pub fn requests(&self) -> u64 {
        self.inner.shared.requests.load(Ordering::SeqCst)
    }

    /// Token PUTs received, whatever their outcome.
    pub fn token_requests(&self) -> u64 {
        self.inner.shared.token_requests.load(Ordering::SeqCst)
    }

    /// Stops serving and waits for the server thread. Open connections are
    /// closed.
    pub fn shutdown(&self) {
        self.inner.stop();
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.inner.shared.state)
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stopped.wait_for(|s| *s) => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(serve_connection(Arc::clone(&shared), stream));
                }
                // Out of descriptors or similar: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
        }
    }
    // Returning ends block_on; dropping the runtime then cancels every
    // connection task and closes its socket.
}

/// One parsed request. Header names are lowercased.
#[derive(Debug)]
struct Request {
    method: String,
    /// Path without the leading `/` and without a query.
    path: String,
    http10: bool,
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn keep_alive(&self) -> bool {
        let conn = self.header("connection").map(str::to_ascii_lowercase);
        if self.http10 {
            conn.as_deref() == Some("keep-alive")
        } else {
            conn.as_deref() != Some("close")
        }
    }
}

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

impl Response {
    fn new(status: u16, body: impl Into<String>) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    fn error(status: u16) -> Self {
        Response::new(status, format!("{status} - {}\n", reason(status)))
    }
}

enum Action {
    Reply(Response),
    Oversized,
    Drop,
}

async fn serve_connection(shared: Arc<Shared>, stream: TcpStream) {
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    loop {
        let req = match tokio::time::timeout(IDLE_TIMEOUT, read_request(&mut rd)).await {
            Ok(Ok(Some(req))) => req,
            Ok(Err(_)) => {
                let _ = write_response(&mut wr, &Response::error(400), false).await;
                return;
            }
            Ok(Ok(None)) | Err(_) => return,
        };
        let keep_alive = req.keep_alive();
        let written = match shared.respond(&req).await {
            Action::Reply(resp) => write_response(&mut wr, &resp, keep_alive).await,
            Action::Oversized => write_oversized(&mut wr).await,
            Action::Drop => return,
        };
        if written.is_err() || !keep_alive {
            return;
        }
    }
}

/// Reads one request; `None` on a clean end of stream between requests.
async fn read_request<R: AsyncRead + Unpin>(rd: &mut BufReader<R>) -> io::Result<Option<Request>> {
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
    let Some(line) = read_line(rd).await? else {
        return Ok(None);
    };
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("malformed request line"));
    };
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return Err(bad("unsupported HTTP version")),
    };
    let path = target
        .split(['?', '#'])
        .next()
        .unwrap_or("")
        .trim_start_matches('/')
        .to_string();
    let mut headers = Vec::new();
    loop {
        let line = read_line(rd)
            .await?
            .ok_or_else(|| bad("truncated headers"))?;
        if line.is_empty() {
            break;
        }
        if headers.len() == MAX_HEADERS {
            return Err(bad("too many headers"));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| bad("malformed header"))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let req = Request {
        method: method.to_string(),
        path,
        http10,
        headers,
    };
    if req.header("transfer-encoding").is_some() {
        return Err(bad("request bodies must use Content-Length"));
    }
    let length = match req.header("content-length") {
        Some(v) => v.parse::<u64>().map_err(|_| bad("bad Content-Length"))?,
        None => 0,
    };
    if length > MAX_BODY as u64 {
        return Err(bad("request body too large"));
    }
    // Nothing here takes a body; read it only to keep the stream in step.
    let copied = tokio::io::copy(&mut (&mut *rd).take(length), &mut tokio::io::sink()).await?;
    if copied != length {
        return Err(bad("truncated body"));
    }
    Ok(Some(req))
}

/// One CRLF- (or LF-) terminated line, bounded in length.
async fn read_line<R: AsyncRead + Unpin>(rd: &mut BufReader<R>) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = (&mut *rd)
        .take(MAX_HEADER_LINE)
        .read_until(b'\n', &mut buf)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "line too long or truncated",
        ));
    }
    let line = String::from_utf8(buf)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "header is not UTF-8"))?;
    Ok(Some(line.trim_end_matches(['\r', '\n']).to_string()))
}

async fn write_response<W: AsyncWriteExt + Unpin>(
    wr: &mut W,
    resp: &Response,
    keep_alive: bool,
) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nServer: EC2ws\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: {}\r\n",
        resp.status,
        reason(resp.status),
        resp.body.len(),
        if keep_alive { "keep-alive" } else { "close" },
    );
    for (name, value) in &resp.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    // One write, as real servers send a small response: head and body in
    // two writes meet Nagle's algorithm and the client's delayed ACK, and
    // every answer would take 40 ms instead of well under one.
    head.push_str(&resp.body);
    wr.write_all(head.as_bytes()).await?;
    wr.flush().await
}

/// Streams [`OVERSIZED_LEN`] bytes in chunks, then closes: the body has no
/// Content-Length, so only a client that counts what it reads stops early.
async fn write_oversized<W: AsyncWriteExt + Unpin>(wr: &mut W) -> io::Result<()> {
    const CHUNK: usize = 8 * 1024;
    wr.write_all(
        b"HTTP/1.1 200 OK\r\nServer: EC2ws\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    )
    .await?;
    let chunk = vec![b'x'; CHUNK];
    for _ in 0..OVERSIZED_LEN.div_ceil(CHUNK) {
        wr.write_all(format!("{CHUNK:x}\r\n").as_bytes()).await?;
        wr.write_all(&chunk).await?;
        wr.write_all(b"\r\n").await?;
    }
    wr.write_all(b"0\r\n\r\n").await?;
    wr.flush().await
}

fn fault_prefix(path_prefix: Option<&str>) -> String {
    path_prefix
        .unwrap_or("")
        .trim_start_matches('/')
        .to_string()
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    async fn respond(&self, req: &Request) -> Action {
        self.requests.fetch_add(1, Ordering::SeqCst);
        if req.method == "PUT" && req.path == TOKEN_PATH {
            self.token_requests.fetch_add(1, Ordering::SeqCst);
        }
        let fault = self.state().fault_for(&req.path);
        match fault {
            Some(Fault::Status(code)) => return Action::Reply(Response::error(code)),
            Some(Fault::Garbage) => return Action::Reply(Response::new(200, GARBAGE_BODY)),
            Some(Fault::Oversized) => return Action::Oversized,
            Some(Fault::Drop) => return Action::Drop,
            Some(Fault::Body(body)) => return Action::Reply(Response::new(200, body)),
            Some(Fault::Redirect(to)) => {
                let mut resp = Response::error(301);
                resp.headers.push(("Location", to));
                return Action::Reply(resp);
            }
            Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
            None => {}
        }
        Action::Reply(self.state().answer(req))
    }
}

impl State {
    /// The fault for `path`, counting it against a fault set for a number
    /// of requests.
    fn fault_for(&mut self, path: &str) -> Option<Fault> {
        let relative = meta_relative(path);
        let prefix = self
            .faults
            .keys()
            .filter(|prefix| {
                path.starts_with(prefix.as_str())
                    || relative.is_some_and(|r| r.starts_with(prefix.as_str()))
            })
            .max_by_key(|prefix| prefix.len())?
            .clone();
        let (fault, left) = self.faults.get_mut(&prefix)?;
        let fault = fault.clone();
        match left {
            Some(0 | 1) => {
                self.faults.remove(&prefix);
            }
            Some(n) => *n = n.saturating_sub(1),
            None => {}
        }
        Some(fault)
    }

    /// The IMDSv2 rules.
    fn answer(&mut self, req: &Request) -> Response {
        let now = Instant::now();
        self.tokens.retain(|_, expiry| *expiry > now);
        if req.path == TOKEN_PATH {
            return match req.method.as_str() {
                "PUT" => self.issue_token(req, now),
                _ => Response::error(405),
            };
        }
        let Some(relative) = meta_relative(&req.path) else {
            return Response::error(404);
        };
        if req.method != "GET" {
            return Response::error(405);
        }
        let authorised = req
            .header(TOKEN_HEADER)
            .is_some_and(|t| self.tokens.contains_key(t));
        if !authorised {
            return Response::error(401);
        }
        match tree::lookup(&self.visible_tree(now), relative) {
            Some(body) => Response::new(200, body),
            None => Response::error(404),
        }
    }

    fn issue_token(&mut self, req: &Request, now: Instant) -> Response {
        // IMDS refuses token requests that went through a proxy, so that a
        // misconfigured proxy on the instance cannot hand tokens out.
        if req.header("x-forwarded-for").is_some() {
            return Response::error(403);
        }
        let ttl = match req.header(TTL_HEADER).map(|v| v.trim().parse::<u32>()) {
            Some(Ok(ttl)) if (1..=MAX_TOKEN_TTL_SECS).contains(&ttl) => ttl,
            _ => return Response::error(400),
        };
        let ttl = self.ttl_cap.map_or(ttl, |cap| ttl.min(cap.max(1)));
        let token = new_token();
        self.tokens
            .insert(token.clone(), now + Duration::from_secs(u64::from(ttl)));
        let mut resp = Response::new(200, token);
        resp.headers.push((TTL_HEADER, ttl.to_string()));
        resp
    }

    /// The tree with lagging MACs removed.
    fn visible_tree(&mut self, now: Instant) -> Cow<'_, Value> {
        self.lags.retain(|_, until| *until > now);
        if self.lags.is_empty() {
            return Cow::Borrowed(&self.tree);
        }
        let mut tree = self.tree.clone();
        if let Some(macs) = tree
            .pointer_mut("/network/interfaces/macs")
            .and_then(Value::as_object_mut)
        {
            macs.retain(|key, _| {
                key.trim_end_matches('/')
                    .parse::<Mac>()
                    .map_or(true, |mac| !self.lags.contains_key(&mac))
            });
        }
        Cow::Owned(tree)
    }
}

/// The part of `path` under `latest/meta-data/`, if it is under it.
fn meta_relative(path: &str) -> Option<&str> {
    let rest = path.strip_prefix(META_PREFIX)?;
    if rest.is_empty() {
        Some(rest)
    } else {
        rest.strip_prefix('/')
    }
}

/// An opaque token, unguessable enough for a test double.
fn new_token() -> String {
    let state = std::collections::hash_map::RandomState::new();
    (0..3u8)
        .map(|i| format!("{:016x}", state.hash_one((i, Instant::now()))))
        .collect::<String>()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn state() -> State {
        State {
            tree: json!({"mac": "0a:00:00:00:00:01", "network": {"interfaces": {"macs": {
                "0a:00:00:00:00:01": {"device-number": "0"},
                "0a:00:00:00:00:02": {"device-number": "1"}}}}}),
            faults: BTreeMap::new(),
            lags: HashMap::new(),
            tokens: HashMap::new(),
            ttl_cap: None,
        }
    }

    async fn parse(raw: &str) -> io::Result<Option<Request>> {
        read_request(&mut BufReader::new(raw.as_bytes())).await
    }

    #[tokio::test]
    async fn parses_requests_and_keep_alive() {
        let req = parse("GET /latest/meta-data/mac?x=1 HTTP/1.1\r\nHost: a\r\nX-Aws-Ec2-Metadata-Token: t\r\n\r\n")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (req.method.as_str(), req.path.as_str()),
            ("GET", "latest/meta-data/mac")
        );
        assert_eq!(req.header(TOKEN_HEADER), Some("t"));
        assert!(req.keep_alive());
        let req = parse("PUT /x HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc")
            .await
            .unwrap()
            .unwrap();
        assert!(!req.keep_alive());
        assert!(parse("").await.unwrap().is_none());
        for bad in [
            "GET /\r\n\r\n",
            "GET / HTTP/2\r\n\r\n",
            "GET / HTTP/1.1\r\nnocolon\r\n\r\n",
            "PUT / HTTP/1.1\r\nContent-Length: 9\r\n\r\nab",
        ] {
            assert!(parse(bad).await.is_err(), "{bad:?}");
        }
    }

    #[test]
    fn longest_fault_prefix_wins() {
        let mut s = state();
        s.faults.insert(String::new(), (Fault::Status(500), None));
        s.faults
            .insert("network/".into(), (Fault::Status(503), None));
        s.faults.insert("latest/api/".into(), (Fault::Drop, None));
        assert_eq!(
            s.fault_for("latest/meta-data/mac"),
            Some(Fault::Status(500))
        );
        assert_eq!(
            s.fault_for("latest/meta-data/network/interfaces/macs/"),
            Some(Fault::Status(503))
        );
        assert_eq!(s.fault_for("latest/api/token"), Some(Fault::Drop));
    }

    #[test]
    fn a_counted_fault_clears_itself() {
        let mut s = state();
        s.faults
            .insert("mac".into(), (Fault::Body(String::new()), Some(2)));
        let path = "latest/meta-data/mac";
        assert_eq!(s.fault_for(path), Some(Fault::Body(String::new())));
        assert_eq!(s.fault_for(path), Some(Fault::Body(String::new())));
        assert_eq!(s.fault_for(path), None);
        assert!(s.faults.is_empty());
    }

    #[test]
    fn lag_hides_a_mac_until_it_elapses() {
        let mut s = state();
        let now = Instant::now();
        s.lags.insert(
            "0a:00:00:00:00:02".parse().unwrap(),
            now + Duration::from_secs(60),
        );
        let tree = s.visible_tree(now).into_owned();
        assert_eq!(
            tree::lookup(&tree, "network/interfaces/macs/").as_deref(),
            Some("0a:00:00:00:00:01/")
        );
        let later = now + Duration::from_secs(61);
        let tree = s.visible_tree(later).into_owned();
        assert!(tree::lookup(
            &tree,
            "network/interfaces/macs/0a:00:00:00:00:02/device-number"
        )
        .is_some());
    }

    #[test]
    fn tokens_differ() {
        let a = new_token();
        assert_eq!(a.len(), 48);
        assert_ne!(a, new_token());
    }
}
