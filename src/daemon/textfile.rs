//! When the metrics file is written: after a change to what it reports, at
//! most once per [`MIN_INTERVAL`], by a blocking-pool thread, so that a
//! slow or hung file system never holds up the event loop.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

/// Reconciles can come every few milliseconds during a hot-plug; a scrape
/// every 15 s or more needs no fresher file than this.
pub(super) const MIN_INTERVAL: Duration = Duration::from_secs(1);

pub(super) struct Textfile {
    path: Option<PathBuf>,
    /// Something the file reports changed since it was last written.
    pending: bool,
    last: Option<Instant>,
    writing: Option<JoinHandle<()>>,
    /// The last write's failure, so a failing path is warned about once
    /// and its recovery said once.
    failure: Arc<Mutex<Option<String>>>,
}

impl Textfile {
    pub(super) fn new(path: Option<PathBuf>) -> Textfile {
        if let Some(p) = &path {
            tracing::info!("metrics: writing {} for node_exporter", p.display());
        }
        Textfile {
            path,
            pending: false,
            last: None,
            writing: None,
            failure: Arc::default(),
        }
    }

    /// A reload named another file (or none): the old one goes, so that
    /// node_exporter does not go on serving numbers that no longer change.
    pub(super) fn set_path(&mut self, path: Option<PathBuf>) {
        if path == self.path {
            return;
        }
        if let Some(old) = &self.path {
            match std::fs::remove_file(old) {
                Ok(()) => tracing::info!("metrics: removed {}", old.display()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!("metrics: cannot remove {}: {e}", old.display()),
            }
        }
        match &path {
            Some(p) => tracing::info!("metrics: writing {} for node_exporter", p.display()),
            None => tracing::info!("metrics: off"),
        }
        self.path = path;
        self.pending = true;
        self.last = None;
        *lock(&self.failure) = None;
    }

    /// What the file reports changed.
    pub(super) fn changed(&mut self) {
        self.pending = true;
    }

    /// When the next write is due, if one is.
    pub(super) fn due(&self, now: Instant) -> Option<Instant> {
        if !self.pending || self.path.is_none() {
            return None;
        }
        Some(self.last.map_or(now, |l| (l + MIN_INTERVAL).max(now)))
    }

    /// Writes the text `render` gives, if a write is due at `now`.
    pub(super) fn flush(&mut self, now: Instant, render: impl FnOnce() -> String) {
        let (Some(due), Some(path)) = (self.due(now), &self.path) else {
            return;
        };
        if due > now {
            return;
        }
        // One write at a time: a file system that hangs holds one thread,
        // not one per reconcile. The next try comes after the interval.
        self.last = Some(now);
        if self.writing.as_ref().is_some_and(|w| !w.is_finished()) {
            tracing::debug!(
                "metrics: the previous write of {} has not finished",
                path.display()
            );
            return;
        }
        self.pending = false;
        let path = path.clone();
        let text = render();
        let failure = Arc::clone(&self.failure);
        self.writing = Some(tokio::task::spawn_blocking(move || {
            write(&path, &text, &failure)
        }));
    }
}

fn write(path: &Path, text: &str, failure: &Mutex<Option<String>>) {
    let result = crate::metrics::write_textfile(path, text);
    let mut last = lock(failure);
    match result {
        Ok(()) => {
            if last.take().is_some() {
                tracing::info!("metrics: {} written again", path.display());
            }
        }
        Err(e) => {
            let message = e.to_string();
            if last.as_deref() != Some(message.as_str()) {
                let hint = match e.kind() {
                    std::io::ErrorKind::NotFound => "; its directory must exist",
                    std::io::ErrorKind::PermissionDenied
                    | std::io::ErrorKind::ReadOnlyFilesystem => {
                        "; under the systemd unit only /run/eniroute is writable unless a drop-in \
                         adds ReadWritePaths= (docs/CONFIG.md, metrics.textfile)"
                    }
                    _ => "",
                };
                tracing::warn!(
                    "metrics: cannot write {}: {message}{hint}; the agent goes on without it",
                    path.display()
                );
            }
            *last = Some(message);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A writer thread that panicked leaves nothing half-done here.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_due_after_a_change_and_at_most_once_a_second() {
        let t0 = Instant::now();
        let mut t = Textfile::new(Some("/run/eniroute/eniroute.prom".into()));
        assert_eq!(t.due(t0), None);
        t.changed();
        assert_eq!(t.due(t0), Some(t0));
        // As flush records it, without writing anything here.
        t.last = Some(t0);
        t.pending = false;
        t.changed();
        let soon = t0 + Duration::from_millis(300);
        assert_eq!(t.due(soon), Some(t0 + MIN_INTERVAL));
        let late = t0 + Duration::from_secs(7);
        assert_eq!(t.due(late), Some(late));
        // Off: never due.
        let mut off = Textfile::new(None);
        off.changed();
        assert_eq!(off.due(t0), None);
    }
}
