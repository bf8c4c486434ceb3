//! Log output: plain text on a terminal, journald's priority prefixes when
//! systemd captured stdout (it sets `JOURNAL_STREAM`), so `journalctl -p`
//! filters by level without a journald client library.

use std::fmt;
use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

struct Journal;

impl<S, N> FormatEvent<S, N> for Journal
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
        // sd-daemon(3) priorities: err 3, warning 4, info 6, debug 7.
        let prio = match *event.metadata().level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            Level::DEBUG | Level::TRACE => 7,
        };
        write!(writer, "<{prio}>")?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Changes the level after [`init`]; set by `init` when the level may change
/// (not when `RUST_LOG` decides).
static SET_LEVEL: OnceLock<SetLevel> = OnceLock::new();

type SetLevel = Box<dyn Fn(&str) + Send + Sync>;

fn filter_for(level: &str) -> EnvFilter {
    EnvFilter::new(format!("eniroute={level},warn"))
}

/// Installs the global subscriber. `level` is error/warn/info/debug/trace;
/// `RUST_LOG` overrides it. `format` is auto, text or journal.
pub fn init(level: &str, format: &str) {
    let from_env = EnvFilter::try_from_default_env().ok();
    let env_decides = from_env.is_some();
    let filter = from_env.unwrap_or_else(|| filter_for(level));
    let journal = match format {
        "journal" => true,
        "text" => false,
        _ => std::env::var_os("JOURNAL_STREAM").is_some(),
    };
    // Colour codes only where a person reads them: a log file or a pipe
    // to a collector gets plain text.
    let ansi = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    // A second init (tests, the lab) keeps the first subscriber.
    let set: Option<SetLevel> = if journal {
        let b = builder.event_format(Journal).with_filter_reloading();
        let handle = b.reload_handle();
        b.try_init()
            .ok()
            .map(|()| Box::new(move |level: &str| reload(|f| handle.reload(f), level)) as Box<_>)
    } else {
        let b = builder.with_target(false).with_filter_reloading();
        let handle = b.reload_handle();
        b.try_init()
            .ok()
            .map(|()| Box::new(move |level: &str| reload(|f| handle.reload(f), level)) as Box<_>)
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
