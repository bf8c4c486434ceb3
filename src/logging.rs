//! Log output: plain text on a terminal; under systemd, records in the
//! journal's native protocol with structured fields (`ENI_ID`, `MAC`,
//! `LINK`, `TABLE`, `OPERATION`), so `journalctl -u eniroute
//! ENI_ID=eni-…` finds one ENI's history; journald's priority prefixes
//! when systemd captured stderr but its socket cannot be reached.
//!
//! The native protocol is written here rather than with `tracing-journald`:
//! it is a few lines (`KEY=value` lines in one datagram, a length-prefixed
//! form for values with a newline; systemd's "Native Journal Protocol"),
//! the crate would render MESSAGE differently from the text output, and a
//! test must be able to point the logger at a socket of its own
//! ([`SOCKET_ENV`]), which the crate does not allow.

use std::fmt;
use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::OnceLock;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The journal's socket (sd_journal_print(3)).
const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";
/// Overrides [`JOURNAL_SOCKET`], for tests.
pub const SOCKET_ENV: &str = "ENIROUTE_JOURNAL_SOCKET";

/// Tracing field names that become journal fields only: the text output
/// leaves them out, so it reads as it always did.
const JOURNAL_ONLY: &[(&str, &str)] = &[
    ("eni_id", "ENI_ID"),
    ("mac", "MAC"),
    ("link", "LINK"),
    ("table", "TABLE"),
    ("operation", "OPERATION"),
];

/// Which ENI, link, table and operation a log record is about: attached to
/// the daemon's records as journal fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFields {
    pub eni_id: Option<String>,
    pub mac: Option<String>,
    pub link: Option<String>,
    pub table: Option<u32>,
    pub operation: Option<String>,
}

/// Emits one record at `level` with `fields` attached.
pub fn event(level: Level, message: &str, f: &LogFields) {
    macro_rules! at {
        ($level:expr) => {
            tracing::event!(
                $level,
                eni_id = f.eni_id.as_deref(),
                mac = f.mac.as_deref(),
                link = f.link.as_deref(),
                table = f.table,
                operation = f.operation.as_deref(),
                "{message}"
            )
        };
    }
    match level {
        Level::ERROR => at!(Level::ERROR),
        Level::WARN => at!(Level::WARN),
        Level::INFO => at!(Level::INFO),
        Level::DEBUG => at!(Level::DEBUG),
        Level::TRACE => at!(Level::TRACE),
    }
}

/// sd-daemon(3) priorities: err 3, warning 4, info 6, debug 7.
fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// The fields as text: the message, then `name=value` for the others (as
/// tracing-subscriber's default does), without the journal-only ones.
#[derive(Default)]
struct TextFields;

struct TextVisitor<'a> {
    out: &'a mut dyn fmt::Write,
    first: bool,
    result: fmt::Result,
}

impl Visit for TextVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"))
        } else {
            self.record_debug(field, &value)
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let name = field.name();
        if self.result.is_err()
            || name.starts_with("log.")
            || JOURNAL_ONLY.iter().any(|(n, _)| *n == name)
        {
            return;
        }
        let pad = if self.first { "" } else { " " };
        self.first = false;
        self.result = match name {
            "message" => write!(self.out, "{pad}{value:?}"),
            name => write!(self.out, "{pad}{name}={value:?}"),
        };
    }
}

impl<'writer> FormatFields<'writer> for TextFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut v = TextVisitor {
            out: &mut writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut v);
        v.result
    }
}

/// `<prio>message`: journald's stream protocol, for when its socket is out
/// of reach.
struct Prefixed;

impl<S, N> FormatEvent<S, N> for Prefixed
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", priority(event.metadata().level()))?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Collects the journal fields of one event.
#[derive(Default)]
struct JournalVisitor {
    fields: Vec<(String, String)>,
}

impl Visit for JournalVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.add(field, value.to_string());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.add(field, value.to_string());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.add(field, value.to_string());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.add(field, value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.add(field, format!("{value:?}"));
    }
}

impl JournalVisitor {
    fn add(&mut self, field: &Field, value: String) {
        let name = field.name();
        if name == "message" {
            return;
        }
        if let Some(key) = journal_key(name) {
            self.fields.push((key, value));
        }
    }
}

/// The journal's name for a tracing field: ours as listed, others upper
/// case; `None` for what the journal would refuse (it accepts A-Z, 0-9
/// and `_`, not first a digit or `_`, at most 64 bytes).
fn journal_key(name: &str) -> Option<String> {
    if let Some((_, key)) = JOURNAL_ONLY.iter().find(|(n, _)| *n == name) {
        return Some((*key).to_string());
    }
    let key: String = name
        .chars()
        .map(|c| match c {
            'a'..='z' => c.to_ascii_uppercase(),
            'A'..='Z' | '0'..='9' => c,
            _ => '_',
        })
        .collect();
    let ok = key.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && key.len() <= 64
        && !matches!(
            key.as_str(),
            "MESSAGE" | "PRIORITY" | "SYSLOG_IDENTIFIER" | "CODE_MODULE"
        );
    ok.then_some(key)
}

/// Appends one field in the native protocol: `KEY=value\n`, or, for a
/// value with a newline, `KEY\n`, its length as 64-bit little endian, the
/// value and `\n`.
pub fn encode_field(buf: &mut Vec<u8>, key: &str, value: &[u8]) {
    buf.extend_from_slice(key.as_bytes());
    if value.contains(&b'\n') {
        buf.push(b'\n');
        buf.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        buf.push(b'=');
    }
    buf.extend_from_slice(value);
    buf.push(b'\n');
}

/// One record in the native protocol: MESSAGE as the text output would
/// print it, PRIORITY, SYSLOG_IDENTIFIER, the module, then the fields.
fn encode_event(event: &Event<'_>) -> Vec<u8> {
    let mut message = String::new();
    let mut text = TextVisitor {
        out: &mut message,
        first: true,
        result: Ok(()),
    };
    event.record(&mut text);
    let mut fields = JournalVisitor::default();
    event.record(&mut fields);
    let meta = event.metadata();
    let mut buf = Vec::with_capacity(256);
    encode_field(&mut buf, "MESSAGE", message.as_bytes());
    encode_field(
        &mut buf,
        "PRIORITY",
        priority(meta.level()).to_string().as_bytes(),
    );
    encode_field(&mut buf, "SYSLOG_IDENTIFIER", b"eniroute");
    encode_field(&mut buf, "CODE_MODULE", meta.target().as_bytes());
    for (key, value) in &fields.fields {
        encode_field(&mut buf, key, value.as_bytes());
    }
    buf
}

/// Sends each record to the journal's socket; one that cannot be sent
/// (the journal restarting, a record too large for a datagram) goes to
/// stderr with its priority prefix, which journald also reads.
struct JournalLayer {
    socket: UnixDatagram,
}

impl<S: Subscriber> Layer<S> for JournalLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let record = encode_event(event);
        if self.socket.send(&record).is_err() {
            let mut line = String::new();
            let mut v = TextVisitor {
                out: &mut line,
                first: true,
                result: Ok(()),
            };
            event.record(&mut v);
            eprintln!("<{}>{line}", priority(event.metadata().level()));
        }
    }
}

/// systemd connected our stderr to the journal: `JOURNAL_STREAM` holds
/// that stream's device and inode (systemd.exec(5)); a process whose
/// stderr was redirected elsewhere inherits the variable but not the
/// stream.
fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    use std::os::unix::fs::MetadataExt;
    let stderr = std::io::stderr().as_fd().try_clone_to_owned();
    match stderr.map(std::fs::File::from).and_then(|f| f.metadata()) {
        Ok(m) => m.dev() == dev && m.ino() == ino,
        Err(_) => false,
    }
}

/// A socket connected to the journal, if it is there.
fn journal_socket() -> Option<UnixDatagram> {
    let path = std::env::var_os(SOCKET_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(JOURNAL_SOCKET));
    let socket = UnixDatagram::unbound().ok()?;
    socket.connect(&path).ok()?;
    Some(socket)
}

/// Changes the level after [`init`]; set by `init` when the level may change
/// (not when `RUST_LOG` decides).
static SET_LEVEL: OnceLock<SetLevel> = OnceLock::new();

type SetLevel = Box<dyn Fn(&str) + Send + Sync>;

fn filter_for(level: &str) -> EnvFilter {
    EnvFilter::new(format!("eniroute={level},warn"))
}

/// Installs the global subscriber. `level` is error/warn/info/debug/trace;
/// `RUST_LOG` overrides it. `format` is auto, text or journal: auto writes
/// to the journal's socket when systemd connected stderr to the journal,
/// priority-prefixed lines when `JOURNAL_STREAM` is set otherwise (or the
/// socket is out of reach), and text elsewhere; journal does the same
/// without looking at `JOURNAL_STREAM`.
pub fn init(level: &str, format: &str) {
    let from_env = EnvFilter::try_from_default_env().ok();
    let env_decides = from_env.is_some();
    let filter = from_env.unwrap_or_else(|| filter_for(level));
    let (journal, native) = match format {
        "journal" => (true, journal_socket()),
        "text" => (false, None),
        _ => (
            std::env::var_os("JOURNAL_STREAM").is_some(),
            if stderr_is_journal() {
                journal_socket()
            } else {
                None
            },
        ),
    };
    // A second init (tests, the lab) keeps the first subscriber.
    let set: Option<SetLevel> = if let Some(socket) = native {
        let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
        tracing_subscriber::registry()
            .with(filter)
            .with(JournalLayer { socket })
            .try_init()
            .ok()
            .map(|()| Box::new(move |level: &str| reload(|f| handle.reload(f), level)) as Box<_>)
    } else {
        // Colour codes only where a person reads them: a log file or a pipe
        // to a collector gets plain text.
        let ansi = std::io::stderr().is_terminal();
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(ansi)
            .fmt_fields(TextFields)
            .with_writer(std::io::stderr);
        if journal {
            let b = builder.event_format(Prefixed).with_filter_reloading();
            let handle = b.reload_handle();
            b.try_init().ok().map(|()| {
                Box::new(move |level: &str| reload(|f| handle.reload(f), level)) as Box<_>
            })
        } else {
            let b = builder.with_target(false).with_filter_reloading();
            let handle = b.reload_handle();
            b.try_init().ok().map(|()| {
                Box::new(move |level: &str| reload(|f| handle.reload(f), level)) as Box<_>
            })
        }
    };
    if let (Some(set), false) = (set, env_decides) {
        let _ = SET_LEVEL.set(set);
    }
}

fn reload(apply: impl Fn(EnvFilter) -> Result<(), tracing_subscriber::reload::Error>, level: &str) {
    if let Err(e) = apply(filter_for(level)) {
        tracing::warn!("cannot change the log level: {e}");
    }
}

/// Applies a new `log.level` (configuration reload). Without effect when
/// `RUST_LOG` chose the filter: the environment wins, as at start.
pub fn set_level(level: &str) {
    match SET_LEVEL.get() {
        Some(set) => set(level),
        None => tracing::info!("log level stays as RUST_LOG sets it"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn fields_are_key_value_lines_and_newlines_get_a_length() {
        let mut buf = Vec::new();
        encode_field(&mut buf, "ENI_ID", b"eni-0123");
        encode_field(&mut buf, "MESSAGE", b"two\nlines");
        let mut want = b"ENI_ID=eni-0123\nMESSAGE\n".to_vec();
        want.extend_from_slice(&9u64.to_le_bytes());
        want.extend_from_slice(b"two\nlines\n");
        assert_eq!(buf, want);
    }

    #[test]
    fn journal_keys_are_what_journald_accepts() {
        assert_eq!(journal_key("eni_id").as_deref(), Some("ENI_ID"));
        assert_eq!(journal_key("operation").as_deref(), Some("OPERATION"));
        assert_eq!(journal_key("attempts").as_deref(), Some("ATTEMPTS"));
        assert_eq!(journal_key("log.target").as_deref(), Some("LOG_TARGET"));
        assert_eq!(journal_key("_private"), None);
        assert_eq!(journal_key("1st"), None);
        assert_eq!(journal_key("priority"), None);
    }

    /// Renders events through `layer` into captured records.
    struct Capture(Arc<Mutex<Vec<Vec<u8>>>>);

    impl<S: Subscriber> Layer<S> for Capture {
        fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
            self.0.lock().unwrap().push(encode_event(event));
        }
    }

    #[test]
    fn a_record_carries_the_text_message_and_the_enis_fields() {
        let records = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Capture(records.clone()));
        tracing::subscriber::with_default(subscriber, || {
            event(
                Level::INFO,
                "+ rule from 10.0.2.21 lookup 10001 priority 10001",
                &LogFields {
                    eni_id: Some("eni-0123".into()),
                    mac: Some("0a:e0:00:01:00:01".into()),
                    link: Some("eth1".into()),
                    table: Some(10001),
                    operation: Some("add-rule".into()),
                },
            );
            event(Level::WARN, "no ENI here", &LogFields::default());
        });
        let records = records.lock().unwrap();
        let first = String::from_utf8(records[0].clone()).unwrap();
        assert_eq!(
            first,
            "MESSAGE=+ rule from 10.0.2.21 lookup 10001 priority 10001\nPRIORITY=6\n\
             SYSLOG_IDENTIFIER=eniroute\nCODE_MODULE=eniroute::logging\nENI_ID=eni-0123\n\
             MAC=0a:e0:00:01:00:01\nLINK=eth1\nTABLE=10001\nOPERATION=add-rule\n"
        );
        let second = String::from_utf8(records[1].clone()).unwrap();
        assert_eq!(
            second,
            "MESSAGE=no ENI here\nPRIORITY=4\nSYSLOG_IDENTIFIER=eniroute\nCODE_MODULE=eniroute::logging\n"
        );
    }

    #[test]
    fn the_text_output_leaves_the_journal_fields_out() {
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(TextFields)
            .event_format(Prefixed)
            .with_writer(move || Sink(sink.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            event(
                Level::INFO,
                "+ rule from 10.0.2.21 lookup 10001 priority 10001",
                &LogFields {
                    eni_id: Some("eni-0123".into()),
                    table: Some(10001),
                    ..LogFields::default()
                },
            );
            tracing::info!(attempts = 3, "retried");
        });
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "<6>+ rule from 10.0.2.21 lookup 10001 priority 10001\n<6>retried attempts=3\n"
        );
    }

    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
