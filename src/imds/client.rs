//! The IMDSv2 HTTP client.
//!
//! Three rules shape everything here:
//!
//! * **IMDSv2 only.** Every GET carries a session token obtained with a PUT.
//!   IMDSv1 (tokenless GETs) is never attempted, so the agent works on
//!   instances that require v2 and never teaches anyone that v1 is needed.
//! * **404 is "absent", everything else is "unknown".** A key that does not
//!   exist (an ENI without IPv6) is `Ok(None)`. Any other failure, after
//!   retries, is an `Err`: the caller must then keep what it has, because an
//!   outage read as "no ENIs" would make the reconciler delete everything.
//! * **Bounded.** The endpoint is link-local and answers in about a
//!   millisecond; when it does not, the agent must learn so quickly. Connect
//!   and request timeouts are tight, bodies are capped, and the retries of one
//!   call share one time budget, so a dead endpoint fails in a few seconds.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use tokio::sync::Mutex;

use super::endpoint::{self, EndpointError};

/// Largest body accepted. Real metadata values are a few hundred bytes; a
/// larger answer is a broken or hostile endpoint, not data.
pub const MAX_BODY: usize = 64 * 1024;

/// Longest token lifetime IMDS grants (6 hours).
pub const MAX_TOKEN_TTL_SECS: u32 = 21_600;

const TOKEN_PATH: &str = "latest/api/token";
const META_PREFIX: &str = "latest/meta-data/";
const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";

/// Every attempt gets at least this long, even when the call's budget is
/// nearly spent: a shorter attempt could not succeed anyway.
const MIN_ATTEMPT: Duration = Duration::from_millis(200);

/// A single backoff step never exceeds this.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// EC2's metadata endpoint over IPv4, used unless configured otherwise.
pub const IPV4_ENDPOINT: &str = "http://169.254.169.254";
/// The same service over IPv6, the one an IPv6-only instance can reach.
pub const IPV6_ENDPOINT: &str = "http://[fd00:ec2::254]";

/// How the client talks to the endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImdsOptions {
    /// Base URL, `http://169.254.169.254` on EC2 (plain HTTP: the endpoint
    /// is link-local and has no TLS).
    pub endpoint: String,
    /// Where to ask instead when `endpoint` is unreachable (no route,
    /// connection refused, timeout): the IPv6 endpoint when none was
    /// configured, as amazon-ec2-net-utils does. `None`: `endpoint` only.
    pub fallback: Option<String>,
    /// Lifetime requested for session tokens, 1..=[`MAX_TOKEN_TTL_SECS`].
    pub token_ttl_secs: u32,
    /// Upper bound on one attempt: connect, send, and read the whole body.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// Attempts per request (1 = no retries).
    pub max_attempts: u32,
    /// First backoff step; it doubles per retry and carries jitter.
    pub backoff_base: Duration,
    /// All attempts of one `get`, including the token PUT, share this much
    /// time; no new attempt starts once it is spent.
    pub retry_budget: Duration,
}

impl Default for ImdsOptions {
    fn default() -> Self {
        ImdsOptions {
            endpoint: IPV4_ENDPOINT.into(),
            fallback: None,
            token_ttl_secs: MAX_TOKEN_TTL_SECS,
            request_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            max_attempts: 4,
            backoff_base: Duration::from_millis(100),
            retry_budget: Duration::from_secs(5),
        }
    }
}

/// Why a metadata request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The options cannot work (TTL out of range, zero timeouts).
    #[error("{0}")]
    Config(String),
    /// The endpoint URL breaks the rules of [`endpoint::parse`].
    #[error("invalid endpoint: it {0}")]
    Endpoint(EndpointError),
    /// The endpoint answered with a status that is neither success nor 404.
    #[error("HTTP {0}")]
    Status(u16),
    #[error("timed out")]
    Timeout,
    #[error("connect: {0}")]
    Connect(String),
    /// The connection failed after it was established (reset, closed early).
    #[error("connection: {0}")]
    Transport(String),
    #[error("body exceeds {limit} bytes")]
    BodyTooLarge { limit: usize },
    /// The body is not UTF-8 text, which every metadata value is.
    #[error("body is not UTF-8 text")]
    NotText,
    /// A 200 whose body cannot be what the path holds.
    #[error("unexpected body: {0}")]
    Malformed(String),
    /// No session token could be obtained, so the GET was never sent. The
    /// cause is part of the message, as every other kind's detail is.
    #[error("no session token (PUT {TOKEN_PATH}: {cause}{})", after_attempts(*attempts))]
    Token {
        cause: Box<ErrorKind>,
        attempts: u32,
    },
}

impl ErrorKind {
    /// Worth another attempt: the endpoint may be restarting, throttling, or
    /// briefly unreachable. A 4xx or a bad body will not improve.
    /// The endpoint could not be reached at all (no route, refused, no
    /// answer in time): another endpoint may do better.
    fn unreachable(&self) -> bool {
        matches!(self, ErrorKind::Timeout | ErrorKind::Connect(_))
    }

    fn retryable(&self) -> bool {
        match self {
            ErrorKind::Status(code) => *code == 429 || (500..600).contains(code),
            ErrorKind::Timeout | ErrorKind::Connect(_) | ErrorKind::Transport(_) => true,
            _ => false,
        }
    }
}

impl ErrorKind {
    /// The class of a failed request, as the daemon's metrics count it:
    /// one of [`REQUEST_ERROR_KINDS`]. `None` for what is no request's
    /// failure (options, endpoint, a token that was never asked for).
    fn request_class(&self) -> Option<&'static str> {
        Some(match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connect(_) => "connect",
            ErrorKind::Transport(_) => "transport",
            ErrorKind::Status(c) if (400..500).contains(c) => "http_4xx",
            ErrorKind::Status(c) if (500..600).contains(c) => "http_5xx",
            ErrorKind::Status(_) => "http_other",
            ErrorKind::BodyTooLarge { .. } | ErrorKind::NotText => "body",
            ErrorKind::Malformed(_) => "malformed",
            ErrorKind::Config(_) | ErrorKind::Endpoint(_) | ErrorKind::Token { .. } => return None,
        })
    }
}

/// The classes of failed requests [`RequestCounts`] keeps apart.
pub const REQUEST_ERROR_KINDS: &[&str] = &[
    "timeout",
    "connect",
    "transport",
    "http_4xx",
    "http_5xx",
    "http_other",
    "body",
    "malformed",
];

/// HTTP requests a client sent (every attempt, token requests included)
/// and those that failed, by class; a 404 is an answer, not a failure. A
/// handle: clones count together, so the client a reload makes adds to
/// the counts of the one it replaces.
#[derive(Debug, Clone, Default)]
pub struct RequestCounts(Arc<Counts>);

#[derive(Debug, Default)]
struct Counts {
    requests: AtomicU64,
    errors: [AtomicU64; REQUEST_ERROR_KINDS.len()],
}

impl RequestCounts {
    fn request(&self) {
        self.0.requests.fetch_add(1, Ordering::Relaxed);
    }

    fn failed(&self, kind: &ErrorKind) {
        let i = kind
            .request_class()
            .and_then(|c| REQUEST_ERROR_KINDS.iter().position(|k| *k == c));
        if let Some(counter) = i.and_then(|i| self.0.errors.get(i)) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn requests(&self) -> u64 {
        self.0.requests.load(Ordering::Relaxed)
    }

    /// Failed requests by class, in the order of [`REQUEST_ERROR_KINDS`].
    pub fn errors(&self) -> Vec<(&'static str, u64)> {
        REQUEST_ERROR_KINDS
            .iter()
            .zip(&self.0.errors)
            .map(|(k, c)| (*k, c.load(Ordering::Relaxed)))
            .collect()
    }
}

/// ` after N attempts` when there was more than one.
fn after_attempts(attempts: u32) -> String {
    match attempts {
        0 | 1 => String::new(),
        n => format!(" after {n} attempts"),
    }
}

/// ` GET latest/meta-data/mac`, or nothing for an error before any request.
fn request(method: &str, path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!(" {method} {path}")
    }
}

/// A metadata request that did not produce a value or a definite "absent".
/// Displays as one line naming the endpoint, the request and why; the why is
/// an [`ErrorKind`], not a separate error, so there is no `source()`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "metadata {endpoint}{}: {kind}{}",
    request(method, path),
    after_attempts(*attempts)
)]
pub struct ImdsError {
    endpoint: String,
    method: &'static str,
    /// Path from the root, e.g. `latest/meta-data/mac`.
    path: String,
    kind: ErrorKind,
    attempts: u32,
}

impl ImdsError {
    pub(crate) fn new(endpoint: &str, method: &'static str, path: &str, kind: ErrorKind) -> Self {
        ImdsError {
            endpoint: endpoint.to_string(),
            method,
            path: path.to_string(),
            kind,
            attempts: 1,
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn method(&self) -> &str {
        self.method
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// Attempts made before giving up (0 when none could be made).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
}

/// A session token and the moment to stop using it.
struct Token {
    value: String,
    renew_at: Instant,
    /// Index of the endpoint that issued it, which its GETs go to.
    endpoint: usize,
}

/// What one exchange (with its retries) produced: a final status and body.
struct Reply {
    status: StatusCode,
    body: String,
    ttl: Option<u32>,
    attempts: u32,
    /// Index of the endpoint that answered.
    endpoint: usize,
}

/// A failed exchange, before it is given its endpoint and path.
struct Failure {
    kind: ErrorKind,
    attempts: u32,
}

/// Which metadata endpoint a client uses. A handle that stays current after
/// the client has moved to another task, for whoever reports it.
#[derive(Debug, Clone)]
pub struct EndpointInUse {
    /// Endpoints without a trailing slash: the first, then its fallback.
    endpoints: Arc<[String]>,
    /// The one that answered last (the first until one did).
    active: Arc<AtomicUsize>,
    answered: Arc<AtomicBool>,
}

impl EndpointInUse {
    /// The endpoint requests go to now.
    pub fn current(&self) -> &str {
        let i = self.active.load(Ordering::Relaxed);
        self.endpoints.get(i).map_or("", String::as_str)
    }

    /// Chosen by the client (no endpoint was configured) rather than given.
    pub fn automatic(&self) -> bool {
        self.endpoints.len() > 1
    }

    /// Whether an endpoint has answered yet.
    pub fn answered(&self) -> bool {
        self.answered.load(Ordering::Relaxed)
    }

    fn set(&self, i: usize) {
        self.active.store(i, Ordering::Relaxed);
        self.answered.store(true, Ordering::Relaxed);
    }

    /// All candidates, for an error that none of them answered.
    fn all(&self) -> String {
        self.endpoints.join(" or ")
    }
}

/// `http://169.254.169.254 (configured)`, or which one answered and why.
impl fmt::Display for EndpointInUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first = self.endpoints.first().map_or("", String::as_str);
        let others = self.endpoints.get(1..).unwrap_or_default().join(", ");
        match (self.automatic(), self.answered()) {
            (false, _) => write!(f, "{first} (configured)"),
            (true, false) => write!(f, "{first}, or {others} where that does not answer"),
            (true, true) if self.current() == first => write!(
                f,
                "{first} (chosen automatically; {others} where that stops answering)"
            ),
            (true, true) => write!(
                f,
                "{} (chosen automatically: {first} did not answer)",
                self.current()
            ),
        }
    }
}

/// An IMDSv2 client. Cheap to share by reference; concurrent `get`s share one
/// token and one connection pool.
pub struct ImdsClient {
    http: reqwest::Client,
    endpoints: EndpointInUse,
    opts: ImdsOptions,
    /// Held across the token PUT so that concurrent callers wait for one
    /// token instead of each fetching their own.
    token: Mutex<Option<Token>>,
    counts: RequestCounts,
}

impl fmt::Debug for ImdsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImdsClient")
            .field("endpoint", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl ImdsClient {
    pub fn new(opts: ImdsOptions) -> Result<ImdsClient, ImdsError> {
        let endpoint = opts.endpoint.trim_end_matches('/').to_string();
        let config_err = |m: String| ImdsError::new(&endpoint, "", "", ErrorKind::Config(m));
        let mut endpoints = vec![endpoint.clone()];
        endpoints.extend(
            opts.fallback
                .as_deref()
                .map(|f| f.trim_end_matches('/').to_string())
                .filter(|f| *f != endpoint),
        );
        for url in &endpoints {
            if let Err(e) = endpoint::parse(url) {
                return Err(ImdsError::new(url, "", "", ErrorKind::Endpoint(e)));
            }
        }
        if !(1..=MAX_TOKEN_TTL_SECS).contains(&opts.token_ttl_secs) {
            return Err(config_err(format!(
                "token TTL {} is outside 1..={MAX_TOKEN_TTL_SECS} seconds",
                opts.token_ttl_secs
            )));
        }
        if opts.max_attempts == 0 {
            return Err(config_err("max_attempts must be at least 1".into()));
        }
        if opts.request_timeout.is_zero() || opts.connect_timeout.is_zero() {
            return Err(config_err("timeouts must be greater than zero".into()));
        }
        let http = reqwest::Client::builder()
            // IMDS is link-local: a proxy from the environment (http_proxy in
            // a service unit, a corporate default) could only misroute the
            // requests or leak the token.
            .no_proxy()
            // IMDS never redirects; following one would send the token to
            // wherever the redirect points.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(opts.connect_timeout)
            .timeout(opts.request_timeout)
            .user_agent(concat!("eniroute/", env!("CARGO_PKG_VERSION")))
            // IMDS is plain HTTP (the endpoint check refuses https): the
            // system's trust store, which reqwest would otherwise read and
            // parse here, would only sit in the daemon's memory unused.
            .tls_built_in_root_certs(false)
            .build()
            .map_err(|e| config_err(format!("HTTP client: {}", root_cause(&e))))?;
        Ok(ImdsClient {
            http,
            endpoints: EndpointInUse {
                endpoints: endpoints.into(),
                active: Arc::new(AtomicUsize::new(0)),
                answered: Arc::new(AtomicBool::new(false)),
            },
            opts,
            token: Mutex::new(None),
            counts: RequestCounts::default(),
        })
    }

    /// Counts this client's requests into `counts` (shared with whoever
    /// reports them) from now on.
    pub fn with_counts(mut self, counts: RequestCounts) -> ImdsClient {
        self.counts = counts;
        self
    }

    /// The endpoint requests go to now: the configured one, or the one that
    /// answered last.
    pub fn endpoint(&self) -> &str {
        self.endpoints.current()
    }

    /// A handle on [`Self::endpoint`] that outlives a move of the client.
    pub fn endpoint_in_use(&self) -> EndpointInUse {
        self.endpoints.clone()
    }

    pub fn options(&self) -> &ImdsOptions {
        &self.opts
    }

    /// GETs `path`, relative to `latest/meta-data/`. `Ok(None)` means the
    /// endpoint said 404: the key does not exist. Any other failure is an
    /// error after retries, never `None`.
    pub async fn get(&self, path: &str) -> Result<Option<String>, ImdsError> {
        let full = format!("{META_PREFIX}{}", path.trim_start_matches('/'));
        let deadline = Instant::now() + self.opts.retry_budget;
        let err = |endpoint: &str, kind, attempts| ImdsError {
            attempts,
            ..ImdsError::new(endpoint, "GET", &full, kind)
        };
        let mut renewed = false;
        loop {
            let (token, at) = self.token(deadline).await.map_err(|f| {
                let tried = if self.endpoints.automatic() {
                    self.endpoints.all()
                } else {
                    self.endpoint().to_string()
                };
                err(
                    &tried,
                    ErrorKind::Token {
                        cause: Box::new(f.kind),
                        attempts: f.attempts,
                    },
                    0,
                )
            })?;
            let endpoint = self.endpoints.endpoints[at].as_str();
            let reply = match self
                .exchange(Method::GET, &full, Some(&token), deadline, at, false)
                .await
            {
                Ok(r) => r,
                Err(f) => {
                    // The endpoint that issued the token went away: the next
                    // call looks for one that answers, with a fresh token.
                    if self.endpoints.automatic() && f.kind.unreachable() {
                        self.forget_token(&token).await;
                    }
                    return Err(err(endpoint, f.kind, f.attempts));
                }
            };
            match reply.status {
                s if s.is_success() => return Ok(Some(reply.body)),
                StatusCode::NOT_FOUND => return Ok(None),
                // The token expired early (IMDS restarted, the clock jumped)
                // or was revoked: renew once and retry. A second 401 with a
                // fresh token is a real refusal.
                StatusCode::UNAUTHORIZED if !renewed => {
                    renewed = true;
                    self.forget_token(&token).await;
                }
                s => return Err(err(endpoint, ErrorKind::Status(s.as_u16()), reply.attempts)),
            }
        }
    }

    /// A valid token, fetching a new one when there is none or the current
    /// one has reached 80% of its lifetime. Renewing early leaves a margin
    /// for clock drift and for requests in flight when the token expires,
    /// instead of learning about expiry through a 401 and a second round trip.
    async fn token(&self, deadline: Instant) -> Result<(String, usize), Failure> {
        let mut slot = self.token.lock().await;
        if let Some(t) = slot.as_ref() {
            if Instant::now() < t.renew_at {
                return Ok((t.value.clone(), t.endpoint));
            }
        }
        let fetched_at = Instant::now();
        // Whichever endpoint issues the token serves the GETs that use it;
        // the search starts where the last one answered.
        let start = self.endpoints.active.load(Ordering::Relaxed);
        let reply = self
            .exchange(Method::PUT, TOKEN_PATH, None, deadline, start, true)
            .await?;
        if reply.endpoint != start {
            tracing::info!(
                "metadata: {} does not answer; using {}",
                self.endpoints.endpoints[start],
                self.endpoints.endpoints[reply.endpoint]
            );
        }
        self.endpoints.set(reply.endpoint);
        if !reply.status.is_success() {
            // 403 here usually means the request was forwarded (a proxy or a
            // container whose hop limit IMDS refuses); 400 a bad TTL.
            return Err(Failure {
                kind: ErrorKind::Status(reply.status.as_u16()),
                attempts: reply.attempts,
            });
        }
        let value = reply.body.trim().to_string();
        if value.is_empty() || value.contains(|c: char| c.is_control() || c == ' ') {
            let kind = ErrorKind::Malformed("token is empty or not a header value".into());
            self.counts.failed(&kind);
            return Err(Failure { kind, attempts: 1 });
        }
        // IMDS echoes the lifetime it granted, which may be shorter than the
        // one asked for; plan renewal on the shorter of the two.
        let ttl = reply.ttl.map_or(self.opts.token_ttl_secs, |t| {
            t.min(self.opts.token_ttl_secs)
        });
        let lifetime = Duration::from_secs(u64::from(ttl)).mul_f64(0.8);
        *slot = Some(Token {
            value: value.clone(),
            renew_at: fetched_at + lifetime,
            endpoint: reply.endpoint,
        });
        Ok((value, reply.endpoint))
    }

    /// Drops `stale` unless another caller has already replaced it.
    async fn forget_token(&self, stale: &str) {
        let mut slot = self.token.lock().await;
        if slot.as_ref().is_some_and(|t| t.value == stale) {
            *slot = None;
        }
    }

    /// One request with retries, to endpoint number `at`. Returns the first
    /// reply whose status is not worth retrying; fails on errors that are
    /// not, or when attempts or the time budget run out. With `search`, an
    /// attempt that cannot reach its endpoint is followed at once by one to
    /// the next endpoint; the reply says which one answered.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        deadline: Instant,
        mut at: usize,
        search: bool,
    ) -> Result<Reply, Failure> {
        let endpoints = &self.endpoints.endpoints;
        let first = at;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let url = format!("{}/{path}", endpoints[at]);
            let remaining = deadline.saturating_duration_since(Instant::now());
            let limit = self.opts.request_timeout.min(remaining.max(MIN_ATTEMPT));
            self.counts.request();
            let kind = match tokio::time::timeout(limit, self.attempt(&method, &url, token)).await {
                Ok(Ok(reply)) => {
                    let kind = ErrorKind::Status(reply.status.as_u16());
                    if !reply.status.is_success() && reply.status != StatusCode::NOT_FOUND {
                        self.counts.failed(&kind);
                    }
                    if !kind.retryable() {
                        return Ok(Reply {
                            attempts: attempt,
                            endpoint: at,
                            ..reply
                        });
                    }
                    kind
                }
                Ok(Err(kind)) => {
                    self.counts.failed(&kind);
                    kind
                }
                Err(_) => {
                    self.counts.failed(&ErrorKind::Timeout);
                    ErrorKind::Timeout
                }
            };
            let tried = endpoints[at].as_str();
            let next = if search && kind.unreachable() {
                (at + 1) % endpoints.len()
            } else {
                at
            };
            // Trying the next endpoint waits for nothing; coming back round
            // to the first one backs off as a retry does.
            let pause = if next != at && next != first {
                Duration::ZERO
            } else {
                backoff(self.opts.backoff_base, attempt)
            };
            let out_of_time = Instant::now() + pause + MIN_ATTEMPT > deadline;
            if !kind.retryable() || attempt >= self.opts.max_attempts || out_of_time {
                return Err(Failure {
                    kind,
                    attempts: attempt,
                });
            }
            at = next;
            tracing::debug!(
                "metadata {tried} {method} {path}: {kind}; retrying at {} in {pause:?}",
                endpoints[at]
            );
            tokio::time::sleep(pause).await;
        }
    }

    async fn attempt(
        &self,
        method: &Method,
        url: &str,
        token: Option<&str>,
    ) -> Result<Reply, ErrorKind> {
        let mut req = self.http.request(method.clone(), url);
        req = match token {
            Some(t) => req.header(TOKEN_HEADER, t),
            None => req.header(TTL_HEADER, self.opts.token_ttl_secs.to_string()),
        };
        let resp = req.send().await.map_err(|e| classify(&e))?;
        let status = resp.status();
        let ttl = resp
            .headers()
            .get(TTL_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let body = read_capped(resp).await;
        let body = if status.is_success() {
            body?
        } else {
            // The body of an error is not used, but reading it (when small)
            // lets the connection be reused: absent keys are common.
            body.unwrap_or_default()
        };
        Ok(Reply {
            status,
            body,
            ttl,
            attempts: 1,
            endpoint: 0,
        })
    }
}

/// Reads the body in chunks and stops as soon as it exceeds [`MAX_BODY`], so
/// a runaway endpoint cannot make the agent buffer without bound.
async fn read_capped(mut resp: reqwest::Response) -> Result<String, ErrorKind> {
    let too_large = ErrorKind::BodyTooLarge { limit: MAX_BODY };
    if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large);
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| classify(&e))? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(too_large);
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| ErrorKind::NotText)
}

fn classify(e: &reqwest::Error) -> ErrorKind {
    if e.is_timeout() {
        ErrorKind::Timeout
    } else if e.is_connect() {
        ErrorKind::Connect(root_cause(e))
    } else {
        ErrorKind::Transport(root_cause(e))
    }
}

/// The innermost error's message: reqwest's outer layers repeat the URL,
/// which the error's own prefix already names.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// The pause after failed attempt `attempt` (1-based): the base doubled per
/// attempt, half of it fixed and half random, so that agents on many hosts
/// restarted together do not retry in lockstep.
fn backoff(base: Duration, attempt: u32) -> Duration {
    let step = crate::backoff::doubling(base, attempt, MAX_BACKOFF);
    crate::backoff::spread(step, 0.5, 1.0, crate::backoff::random_unit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_and_caps() {
        let base = Duration::from_millis(100);
        for attempt in 1..=4 {
            let step = base * (1 << (attempt - 1));
            for _ in 0..50 {
                let d = backoff(base, attempt);
                assert!(d >= step / 2 && d <= step, "attempt {attempt}: {d:?}");
            }
        }
        assert!(backoff(base, 40) <= MAX_BACKOFF);
    }

    #[test]
    fn error_is_one_line_with_endpoint_path_and_cause() {
        let e = ImdsError {
            attempts: 4,
            ..ImdsError::new(
                "http://169.254.169.254",
                "GET",
                "latest/meta-data/network/interfaces/macs/",
                ErrorKind::Status(500),
            )
        };
        assert_eq!(
            e.to_string(),
            "metadata http://169.254.169.254 GET latest/meta-data/network/interfaces/macs/: HTTP 500 after 4 attempts"
        );
        let e = ImdsError::new(
            "http://x",
            "GET",
            "latest/meta-data/mac",
            ErrorKind::Token {
                cause: Box::new(ErrorKind::Timeout),
                attempts: 3,
            },
        );
        assert_eq!(
            e.to_string(),
            "metadata http://x GET latest/meta-data/mac: no session token (PUT latest/api/token: timed out after 3 attempts)"
        );
    }

    #[test]
    fn rejects_unusable_options() {
        for endpoint in ["169.254.169.254", "https://169.254.169.254", "http://"] {
            let opts = ImdsOptions {
                endpoint: endpoint.into(),
                ..ImdsOptions::default()
            };
            assert!(ImdsClient::new(opts).is_err(), "{endpoint}");
        }
        let e = ImdsClient::new(ImdsOptions {
            request_timeout: Duration::ZERO,
            ..ImdsOptions::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("timeouts"), "{e}");
        for ttl in [0, MAX_TOKEN_TTL_SECS + 1] {
            let opts = ImdsOptions {
                token_ttl_secs: ttl,
                ..ImdsOptions::default()
            };
            let e = ImdsClient::new(opts).unwrap_err();
            assert!(e.to_string().contains("token TTL"), "{e}");
        }
        let c = ImdsClient::new(ImdsOptions {
            endpoint: "http://127.0.0.1:1/".into(),
            ..ImdsOptions::default()
        })
        .unwrap();
        assert_eq!(c.endpoint(), "http://127.0.0.1:1");
    }

    #[test]
    fn retry_classes() {
        for code in [429, 500, 503] {
            assert!(ErrorKind::Status(code).retryable(), "{code}");
        }
        for code in [400, 401, 403, 404] {
            assert!(!ErrorKind::Status(code).retryable(), "{code}");
        }
        assert!(!ErrorKind::BodyTooLarge { limit: MAX_BODY }.retryable());
    }
}
