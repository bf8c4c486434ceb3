//! Credentials and region, found the way AWS tools find them on an
//! instance: the standard environment variables when set, otherwise the
//! instance profile's role credentials and the instance's region from
//! metadata (IMDSv2, through the agent's own client).
//!
//! Secrets never reach a log or a message: `Debug` prints the key id only,
//! and errors name the metadata path, never a value read from it.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::imds::client::{ImdsClient, ImdsError};

const ROLE_LIST: &str = "iam/security-credentials/";
const REGION_PATH: &str = "placement/region";

/// Credentials that expire within this are treated as expired: a request
/// signed with them may arrive after they lapsed.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(60);

/// Signing credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    pub expiration: Option<SystemTime>,
    /// Where they came from, for messages: `environment` or
    /// `instance profile role NAME`.
    pub source: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .field("expiration", &self.expiration)
            .field("source", &self.source)
            .finish()
    }
}

/// Why no usable credentials or region could be found.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read the instance profile's credentials: {0}")]
    Metadata(#[from] ImdsError),
    #[error(
        "no credentials: AWS_ACCESS_KEY_ID is not set and metadata has no instance profile \
         (latest/meta-data/{ROLE_LIST} is absent); attach an instance profile with a role to \
         this instance"
    )]
    NoProfile,
    #[error("{0}")]
    Malformed(String),
    #[error(
        "the credentials of {from} expired at {at} (UTC); refusing to sign with them (is the \
         instance's clock right? does the credentials source renew them?)"
    )]
    Expired { from: String, at: String },
    #[error("no region: AWS_REGION is not set and metadata has no latest/meta-data/{REGION_PATH}")]
    NoRegion,
}

/// What the environment says, read once so tests can pass their own.
#[derive(Debug, Default, Clone)]
pub struct Env {
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    pub region: Option<String>,
}

impl Env {
    pub fn from_process() -> Env {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Env {
            access_key_id: var("AWS_ACCESS_KEY_ID"),
            secret_access_key: var("AWS_SECRET_ACCESS_KEY"),
            session_token: var("AWS_SESSION_TOKEN"),
            region: var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION")),
        }
    }
}

/// The environment's credentials when both key variables are set, else the
/// instance profile's.
pub async fn resolve(env: &Env, imds: &ImdsClient) -> Result<Credentials, CredentialsError> {
    let creds = match (&env.access_key_id, &env.secret_access_key) {
        (Some(id), Some(secret)) => Credentials {
            access_key_id: id.clone(),
            secret_access_key: secret.clone(),
            session_token: env.session_token.clone(),
            expiration: None,
            source: "the environment (AWS_ACCESS_KEY_ID)".into(),
        },
        (Some(_), None) => {
            return Err(CredentialsError::Malformed(
                "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not".into(),
            ))
        }
        _ => from_instance_profile(imds).await?,
    };
    check_fresh(&creds, SystemTime::now())?;
    Ok(creds)
}

/// The region: `AWS_REGION` (or `AWS_DEFAULT_REGION`), else the instance's.
pub async fn region(env: &Env, imds: &ImdsClient) -> Result<String, CredentialsError> {
    if let Some(r) = &env.region {
        return Ok(r.clone());
    }
    let region = imds
        .get(REGION_PATH)
        .await?
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
        .ok_or(CredentialsError::NoRegion)?;
    if !region
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(CredentialsError::Malformed(format!(
            "metadata's {REGION_PATH} is not a region name: {region:?}"
        )));
    }
    Ok(region)
}

async fn from_instance_profile(imds: &ImdsClient) -> Result<Credentials, CredentialsError> {
    let roles = imds
        .get(ROLE_LIST)
        .await?
        .ok_or(CredentialsError::NoProfile)?;
    let role = roles
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .ok_or(CredentialsError::NoProfile)?
        .trim_end_matches('/')
        .to_string();
    let path = format!("{ROLE_LIST}{role}");
    let body = imds.get(&path).await?.ok_or_else(|| {
        CredentialsError::Malformed(format!(
            "metadata lists the role {role} but latest/meta-data/{path} is absent"
        ))
    })?;
    parse_role_document(&role, &body)
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RoleDocument {
    code: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    token: Option<String>,
    expiration: Option<String>,
}

/// The JSON document metadata serves for a role. Its values never appear
/// in an error: only which field is missing.
pub fn parse_role_document(role: &str, body: &str) -> Result<Credentials, CredentialsError> {
    let bad = |what: &str| {
        CredentialsError::Malformed(format!(
            "the instance profile role {role}'s credentials document (latest/meta-data/\
             {ROLE_LIST}{role}) {what}"
        ))
    };
    let doc: RoleDocument =
        serde_json::from_str(body).map_err(|_| bad("is not a JSON credentials document"))?;
    if let Some(code) = doc.code.as_deref().filter(|c| *c != "Success") {
        return Err(bad(&format!("says Code {code:?} instead of Success")));
    }
    let access_key_id = doc.access_key_id.ok_or_else(|| bad("has no AccessKeyId"))?;
    let secret_access_key = doc
        .secret_access_key
        .ok_or_else(|| bad("has no SecretAccessKey"))?;
    let expiration = match doc.expiration.as_deref() {
        Some(text) => Some(
            parse_utc(text).ok_or_else(|| bad("has an Expiration that is not a UTC timestamp"))?,
        ),
        None => None,
    };
    Ok(Credentials {
        access_key_id,
        secret_access_key,
        session_token: doc.token,
        expiration,
        source: format!("instance profile role {role}"),
    })
}

/// Credentials that have expired (or will within [`EXPIRY_MARGIN`]) are
/// refused before any request is signed with them.
pub fn check_fresh(creds: &Credentials, now: SystemTime) -> Result<(), CredentialsError> {
    match creds.expiration {
        Some(at) if at <= now + EXPIRY_MARGIN => Err(CredentialsError::Expired {
            from: creds.source.clone(),
            at: format_utc(at),
        }),
        _ => Ok(()),
    }
}

/// `2026-11-30T16:00:00Z` (fractional seconds allowed) as a time.
pub fn parse_utc(text: &str) -> Option<SystemTime> {
    let text = text.trim().strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let time = time.split('.').next()?;
    let mut t = time.splitn(3, ':').map(|p| p.parse::<u64>().ok());
    let (h, min, s) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || min > 59 || s > 60 {
        return None;
    }
    let days = days_from_civil(y, m, day);
    let secs = u64::try_from(days).ok()? * 86_400 + h * 3600 + min * 60 + s;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

/// The same format, for messages.
pub fn format_utc(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

// Howard Hinnant's days-from-civil algorithm (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"{"Code":"Success","LastUpdated":"2026-11-30T10:00:00Z","Type":"AWS-HMAC",
        "AccessKeyId":"ASIAEXAMPLE","SecretAccessKey":"s3cr3t/KEY","Token":"tok3n==",
        "Expiration":"2026-11-30T16:00:00Z"}"#;

    #[test]
    fn role_document_parses_and_debug_hides_secrets() {
        let c = parse_role_document("ha-role", DOC).unwrap();
        assert_eq!(c.access_key_id, "ASIAEXAMPLE");
        assert_eq!(c.session_token.as_deref(), Some("tok3n=="));
        assert_eq!(format_utc(c.expiration.unwrap()), "2026-11-30T16:00:00Z");
        let shown = format!("{c:?}");
        assert!(shown.contains("ASIAEXAMPLE"), "{shown}");
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("tok3n"),
            "{shown}"
        );
    }

    #[test]
    fn bad_documents_name_the_problem_not_the_values() {
        let e = parse_role_document("r", r#"{"Code":"AssumeRoleUnauthorizedAccess"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("AssumeRoleUnauthorizedAccess") && e.contains("role r"),
            "{e}"
        );
        let e = parse_role_document("r", r#"{"Code":"Success","SecretAccessKey":"s3cr3t"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no AccessKeyId") && !e.contains("s3cr3t"), "{e}");
        assert!(parse_role_document("r", "<html>").is_err());
    }

    #[test]
    fn expired_credentials_are_refused_with_the_time() {
        let c = parse_role_document("ha-role", DOC).unwrap();
        let before = parse_utc("2026-11-30T15:00:00Z").unwrap();
        assert!(check_fresh(&c, before).is_ok());
        let after = parse_utc("2026-11-30T15:59:30Z").unwrap();
        let e = check_fresh(&c, after).unwrap_err().to_string();
        assert!(
            e.contains("expired at 2026-11-30T16:00:00Z") && e.contains("ha-role"),
            "{e}"
        );
    }

    #[test]
    fn timestamps_round_trip() {
        for t in [
            "1970-01-01T00:00:00Z",
            "2000-02-29T12:34:56Z",
            "2026-11-30T16:00:00Z",
        ] {
            assert_eq!(format_utc(parse_utc(t).unwrap()), t);
        }
        assert_eq!(
            parse_utc("2026-11-30T16:00:00.123Z"),
            parse_utc("2026-11-30T16:00:00Z")
        );
        for bad in ["2026-11-30 16:00:00", "2026-13-01T00:00:00Z", "x"] {
            assert!(parse_utc(bad).is_none(), "{bad}");
        }
    }
}
