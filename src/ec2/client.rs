//! The EC2 Query API over HTTPS: form-encoded POSTs signed with Signature
//! Version 4 (the `aws-sigv4` crate), XML answers, throttling and server
//! errors retried with the agent's one backoff policy.
//!
//! Only what a takeover needs: no pagination, no waiters. A mutating call
//! is retried only when EC2 said it did not act (throttled, unavailable,
//! 5xx) or the connection was never made; a timeout after sending is
//! reported, not retried, since the call may have gone through.

use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use reqwest::Url;

use super::credentials::Credentials;
use crate::backoff;

/// The API version every EC2 Query request names.
pub const API_VERSION: &str = "2016-11-15";

/// Largest answer accepted; a DescribeNetworkInterfaces of one ENI is a few
/// kilobytes.
const MAX_BODY: usize = 1024 * 1024;

const FORM: &str = "application/x-www-form-urlencoded; charset=utf-8";

/// How the client talks to EC2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ec2Options {
    /// `https://ec2.REGION.amazonaws.com` unless given (a VPC endpoint, or
    /// an emulator in tests).
    pub endpoint: Option<String>,
    pub region: String,
    pub connect_timeout: Duration,
    /// One attempt, sending and reading the answer.
    pub request_timeout: Duration,
    /// Attempts per call (1 = no retries).
    pub max_attempts: u32,
    /// First backoff step, doubling per retry, with jitter.
    pub backoff_base: Duration,
}

impl Ec2Options {
    pub fn new(region: &str) -> Ec2Options {
        Ec2Options {
            endpoint: None,
            region: region.to_string(),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            max_attempts: 5,
            backoff_base: Duration::from_millis(100),
        }
    }
}

/// The regional endpoint, as the SDKs build it.
pub fn regional_endpoint(region: &str) -> String {
    if region.starts_with("cn-") {
        format!("https://ec2.{region}.amazonaws.com.cn")
    } else {
        format!("https://ec2.{region}.amazonaws.com")
    }
}

/// The endpoint from the standard environment variables, when set
/// (`AWS_ENDPOINT_URL_EC2`, then `AWS_ENDPOINT_URL`), as the SDKs and the
/// AWS CLI read them.
pub fn endpoint_from_env() -> Option<String> {
    ["AWS_ENDPOINT_URL_EC2", "AWS_ENDPOINT_URL"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
}

/// How EC2's refusal is to be read by whoever runs the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The role lacks an IAM permission, or the credentials were refused.
    PermissionDenied,
    /// Throttled after every retry.
    Throttled,
    /// The address or the ENI is held elsewhere and may not be taken.
    InUse,
    /// The ENI, subnet or instance does not exist (for this account).
    NotFound,
    /// EC2 refused the request's values.
    BadRequest,
    /// EC2 was unreachable, timed out or failed on its side.
    Unavailable,
}

/// Why one call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// EC2 answered with an error document.
    Api {
        status: u16,
        code: String,
        message: String,
    },
    Timeout,
    Connect(String),
    Transport(String),
    /// An answer that is not what the action returns.
    Malformed(String),
    /// The endpoint or signing settings cannot work.
    Config(String),
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Api {
                status,
                code,
                message,
            } if message.is_empty() => write!(f, "{code} (HTTP {status})"),
            ErrorKind::Api {
                status,
                code,
                message,
            } => write!(f, "{code} (HTTP {status}): {message}"),
            ErrorKind::Timeout => f.write_str("timed out"),
            ErrorKind::Connect(m) => write!(f, "connect: {m}"),
            ErrorKind::Transport(m) => write!(f, "connection: {m}"),
            ErrorKind::Malformed(m) => write!(f, "unexpected answer: {m}"),
            ErrorKind::Config(m) => f.write_str(m),
        }
    }
}

/// A failed EC2 call, on one line: the action, the endpoint, why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("EC2 {action} at {endpoint}: {kind}{}", after(*attempts))]
pub struct Ec2Error {
    pub action: &'static str,
    pub endpoint: String,
    pub kind: ErrorKind,
    pub attempts: u32,
}

fn after(attempts: u32) -> String {
    match attempts {
        0 | 1 => String::new(),
        n => format!(" (after {n} attempts)"),
    }
}

impl Ec2Error {
    /// EC2's error code, when it answered with one.
    pub fn code(&self) -> Option<&str> {
        match &self.kind {
            ErrorKind::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    pub fn class(&self) -> Class {
        match &self.kind {
            ErrorKind::Api { code, status, .. } => classify(code, *status),
            ErrorKind::Config(_) => Class::BadRequest,
            _ => Class::Unavailable,
        }
    }
}

/// EC2's error codes by what the caller can do about them.
fn classify(code: &str, status: u16) -> Class {
    match code {
        "UnauthorizedOperation"
        | "AuthFailure"
        | "AccessDenied"
        | "Blocked"
        | "OptInRequired"
        | "PendingVerification"
        | "SignatureDoesNotMatch"
        | "InvalidClientTokenId"
        | "ExpiredToken"
        | "RequestExpired" => Class::PermissionDenied,
        "RequestLimitExceeded" | "Throttling" | "ThrottlingException" | "RequestThrottled" => {
            Class::Throttled
        }
        "PrivateIpAddressInUse" | "InvalidIPAddress.InUse" | "InvalidNetworkInterface.InUse" => {
            Class::InUse
        }
        c if c.ends_with(".NotFound") => Class::NotFound,
        _ if status >= 500 => Class::Unavailable,
        _ => Class::BadRequest,
    }
}

/// Worth another attempt: EC2 did not act on the request.
fn retryable(kind: &ErrorKind) -> bool {
    match kind {
        ErrorKind::Api { code, status, .. } => {
            classify(code, *status) == Class::Throttled
                || matches!(
                    code.as_str(),
                    "Unavailable" | "ServiceUnavailable" | "InternalError" | "InternalFailure"
                )
                || *status >= 500
        }
        ErrorKind::Connect(_) => true,
        _ => false,
    }
}

/// An EC2 client bound to one region, endpoint and set of credentials.
pub struct Ec2Client {
    http: reqwest::Client,
    endpoint: Url,
    opts: Ec2Options,
    creds: Credentials,
}

impl fmt::Debug for Ec2Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ec2Client")
            .field("endpoint", &self.endpoint.as_str())
            .field("region", &self.opts.region)
            .field("credentials", &self.creds)
            .finish_non_exhaustive()
    }
}

impl Ec2Client {
    pub fn new(opts: Ec2Options, creds: Credentials) -> Result<Ec2Client, Ec2Error> {
        let text = opts
            .endpoint
            .clone()
            .unwrap_or_else(|| regional_endpoint(&opts.region));
        let config = |m: String| Ec2Error {
            action: "(setup)",
            endpoint: text.clone(),
            kind: ErrorKind::Config(m),
            attempts: 0,
        };
        let endpoint =
            Url::parse(&text).map_err(|e| config(format!("the endpoint is not a URL: {e}")))?;
        if !matches!(endpoint.scheme(), "https" | "http") || endpoint.host().is_none() {
            return Err(config(
                "the endpoint must be https://HOST[:PORT] (http:// only for an emulator)".into(),
            ));
        }
        if opts.max_attempts == 0 {
            return Err(config("max_attempts must be at least 1".into()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(opts.connect_timeout)
            .timeout(opts.request_timeout)
            // A redirect would carry the signed request somewhere else.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("eniroute/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| config(format!("HTTP client: {}", root_cause(&e))))?;
        Ok(Ec2Client {
            http,
            endpoint,
            opts,
            creds,
        })
    }

    pub fn endpoint(&self) -> &str {
        self.endpoint.as_str().trim_end_matches('/')
    }

    pub fn region(&self) -> &str {
        &self.opts.region
    }

    /// Calls `action` with `params` and returns the answer's XML, retrying
    /// throttling and server errors with backoff.
    pub async fn call(
        &self,
        action: &'static str,
        params: &[(String, String)],
    ) -> Result<String, Ec2Error> {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("Action", action);
        form.append_pair("Version", API_VERSION);
        for (k, v) in params {
            form.append_pair(k, v);
        }
        let body = form.finish();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let started = Instant::now();
            let kind = match self.attempt(&body).await {
                Ok(text) => return Ok(text),
                Err(kind) => kind,
            };
            tracing::debug!(action, attempt, took = ?started.elapsed(), error = %kind, "EC2 call failed");
            if attempt >= self.opts.max_attempts || !retryable(&kind) {
                return Err(Ec2Error {
                    action,
                    endpoint: self.endpoint().to_string(),
                    kind,
                    attempts: attempt,
                });
            }
            let pause = backoff::doubling(self.opts.backoff_base, attempt, Duration::from_secs(5));
            tokio::time::sleep(backoff::spread(pause, 0.5, 1.0, backoff::random_unit())).await;
        }
    }

    async fn attempt(&self, body: &str) -> Result<String, ErrorKind> {
        let headers = self.signed_headers(body)?;
        let mut req = self.http.post(self.endpoint.clone()).body(body.to_string());
        for (name, value) in &headers {
            req = req.header(name.as_str(), value.as_str());
        }
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let mut resp = resp;
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            if bytes.len() + chunk.len() > MAX_BODY {
                return Err(ErrorKind::Malformed(format!(
                    "answer larger than {MAX_BODY} bytes"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        let text = String::from_utf8(bytes)
            .map_err(|_| ErrorKind::Malformed("answer is not UTF-8".into()))?;
        if status.is_success() {
            return Ok(text);
        }
        let (code, message) = super::api::error_document(&text).unwrap_or_else(|| {
            (
                status
                    .canonical_reason()
                    .unwrap_or("HTTP error")
                    .replace(' ', ""),
                String::new(),
            )
        });
        Err(ErrorKind::Api {
            status: status.as_u16(),
            code,
            message,
        })
    }

    /// The headers of one signed POST of `body`: content type, date, the
    /// session token if any, and the authorization.
    fn signed_headers(&self, body: &str) -> Result<Vec<(String, String)>, ErrorKind> {
        let identity = aws_credential_types::Credentials::new(
            self.creds.access_key_id.clone(),
            self.creds.secret_access_key.clone(),
            self.creds.session_token.clone(),
            self.creds.expiration,
            "eniroute",
        )
        .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.opts.region)
            .name("ec2")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| ErrorKind::Config(format!("cannot sign: {e}")))?
            .into();
        let base = [("content-type", FORM)];
        let signable = SignableRequest::new(
            "POST",
            self.endpoint.as_str(),
            base.iter().copied(),
            SignableBody::Bytes(body.as_bytes()),
        )
        .map_err(|e| ErrorKind::Config(format!("cannot sign: {e}")))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| ErrorKind::Config(format!("cannot sign: {e}")))?
            .into_parts();
        let mut headers: Vec<(String, String)> = base
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        headers.extend(
            instructions
                .headers()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        Ok(headers)
    }
}

fn transport(e: reqwest::Error) -> ErrorKind {
    if e.is_timeout() {
        ErrorKind::Timeout
    } else if e.is_connect() {
        ErrorKind::Connect(root_cause(&e))
    } else {
        ErrorKind::Transport(root_cause(&e))
    }
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: &str, status: u16) -> Ec2Error {
        Ec2Error {
            action: "AssignPrivateIpAddresses",
            endpoint: "https://ec2.eu-west-1.amazonaws.com".into(),
            kind: ErrorKind::Api {
                status,
                code: code.into(),
                message: String::new(),
            },
            attempts: 1,
        }
    }

    #[test]
    fn error_codes_by_what_a_script_can_do() {
        assert_eq!(
            api("UnauthorizedOperation", 403).class(),
            Class::PermissionDenied
        );
        assert_eq!(api("AuthFailure", 401).class(), Class::PermissionDenied);
        assert_eq!(api("RequestLimitExceeded", 503).class(), Class::Throttled);
        assert_eq!(api("PrivateIpAddressInUse", 400).class(), Class::InUse);
        assert_eq!(
            api("InvalidNetworkInterface.InUse", 400).class(),
            Class::InUse
        );
        assert_eq!(
            api("InvalidNetworkInterfaceID.NotFound", 400).class(),
            Class::NotFound
        );
        assert_eq!(api("InvalidParameterValue", 400).class(), Class::BadRequest);
        assert_eq!(api("InternalError", 500).class(), Class::Unavailable);
        assert!(retryable(&api("RequestLimitExceeded", 503).kind));
        assert!(retryable(&api("InternalError", 500).kind));
        assert!(!retryable(&api("UnauthorizedOperation", 403).kind));
        assert!(!retryable(&ErrorKind::Timeout));
        assert_eq!(
            api("UnauthorizedOperation", 403).to_string(),
            "EC2 AssignPrivateIpAddresses at https://ec2.eu-west-1.amazonaws.com: \
             UnauthorizedOperation (HTTP 403)"
        );
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            regional_endpoint("eu-west-1"),
            "https://ec2.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            regional_endpoint("cn-north-1"),
            "https://ec2.cn-north-1.amazonaws.com.cn"
        );
        let creds = Credentials {
            access_key_id: "AKID".into(),
            secret_access_key: "s3cr3t".into(),
            session_token: Some("tok3n".into()),
            expiration: None,
            source: "test".into(),
        };
        let mut opts = Ec2Options::new("eu-west-1");
        opts.endpoint = Some("ftp://x".into());
        assert!(Ec2Client::new(opts, creds.clone()).is_err());
        let c = Ec2Client::new(Ec2Options::new("eu-west-1"), creds).unwrap();
        assert_eq!(c.endpoint(), "https://ec2.eu-west-1.amazonaws.com");
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("tok3n"),
            "{shown}"
        );
    }

    #[test]
    fn requests_are_signed_with_the_session_token() {
        let creds = Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "s3cr3t".into(),
            session_token: Some("tok3n".into()),
            expiration: None,
            source: "test".into(),
        };
        let c = Ec2Client::new(Ec2Options::new("eu-west-1"), creds).unwrap();
        let headers = c
            .signed_headers("Action=DescribeRegions&Version=2016-11-15")
            .unwrap();
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.as_str())
        };
        let auth = get("authorization").unwrap();
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
                && auth.contains("/eu-west-1/ec2/aws4_request"),
            "{auth}"
        );
        assert!(!auth.contains("s3cr3t"));
        assert_eq!(get("x-amz-security-token"), Some("tok3n"));
        assert!(get("x-amz-date").is_some());
    }
}
