//! convbill: derives Meta's 24-hour conversation sessions (WhatsApp, Messenger, Instagram)
//! from message logs and writes per-account quota invoices.
//!
//! The pipeline runs one way, each stage a module with a function from named inputs to named
//! outputs; I/O happens only at the two ends:
//!
//! [`load::load`] (Parquet → [`load::Messages`]) → [`sessions::derive`] ([`sessions::Sessions`])
//! → [`rating::rate`] ([`rating::Invoices`]) → [`write::write`] (the output folder).

pub mod error;
pub mod generate;
pub mod load;
pub mod nightly;
pub mod rating;
pub mod schema;
pub mod sessions;
pub mod write;

use std::path::PathBuf;

pub use error::{exit, Error, InputError, NightError, Result};

/// A validated `convbill run`.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// A Parquet file, or a folder searched recursively for `*.parquet`.
    pub input: PathBuf,
    /// The output folder; replaced as a whole when the run succeeds.
    pub out: PathBuf,
}

/// What a run did, for the summary line.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub files: usize,
    pub input: load::InputStats,
    pub sessions: sessions::SessionStats,
    /// (account, period, quota), in invoice order.
    pub quota: Vec<(String, String, i64)>,
    pub written: Vec<write::WrittenFile>,
}

/// Runs the whole pipeline: load, derive sessions, rate, write.
pub fn run(config: &RunConfig) -> Result<RunReport> {
    write::check_output_folder(&config.out)?;
    let messages = load::load(&config.input)?;
    tracing::info!(
        files = messages.files.len(),
        rows = messages.stats.rows_read,
        duplicates = messages.stats.duplicates_dropped,
        "loaded"
    );
    let mut derived = sessions::derive(&messages)?;
    tracing::info!(
        sessions = derived.stats.sessions,
        violations = derived.stats.violations,
        "derived sessions"
    );
    let mut invoices = rating::rate(&derived.sessions)?;
    let quota = invoices
        .invoices
        .iter()
        .map(|i| (i.account_id.clone(), i.period.clone(), i.totals.quota))
        .collect();
    let manifest = write::Manifest {
        program: write::Program::current(),
        rule_set: rating::RULE_SET,
        rate_card: rating::ARTICLE_RATE_CARD,
        input: write::InputSection {
            path: config.input.display().to_string(),
            files: messages.files.clone(),
            stats: messages.stats.clone(),
        },
        sessions: derived.stats.clone(),
        invoices: write::InvoiceSummary {
            invoices: invoices.invoices.len() as u64,
            lines: invoices.lines.height() as u64,
            quota: invoices.invoices.iter().map(|i| i.totals.quota).sum(),
        },
        outputs: Vec::new(),
    };
    let written = write::write(
        &config.out,
        write::Outputs {
            sessions: &mut derived.sessions,
            violations: &mut derived.violations,
            invoices: &mut invoices,
            manifest,
        },
    )?;
    Ok(RunReport {
        files: messages.files.len(),
        input: messages.stats,
        sessions: derived.stats,
        quota,
        written,
    })
}
