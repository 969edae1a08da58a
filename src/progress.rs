//! Progress of long work, for a person watching a terminal. The library says which stage it
//! is in and how far along; the binary decides how to show it (a bar on a terminal, nothing
//! otherwise: `-v` logs each stage as lines instead). Without a [`Show`] installed, nothing
//! is shown.

use std::sync::OnceLock;

/// Shows progress. Called from any thread.
pub trait Show: Send + Sync {
    /// A new stage begins: `what` it does, and how many units (rows, groups, nights) it has,
    /// if known.
    fn stage(&self, what: &str, units: Option<u64>);
    /// `done` more units of the current stage are done.
    fn advance(&self, done: u64);
}

static SHOW: OnceLock<Box<dyn Show>> = OnceLock::new();

/// Installs how progress is shown, once per process.
pub fn show_with(show: Box<dyn Show>) {
    let _ = SHOW.set(show);
}

pub(crate) fn stage(what: &str, units: Option<u64>) {
    if let Some(show) = SHOW.get() {
        show.stage(what, units);
    }
}

pub(crate) fn advance(done: u64) {
    if let Some(show) = SHOW.get() {
        show.advance(done);
    }
}
