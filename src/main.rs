//! The `convbill` command: parses the command line, runs the library, maps errors to the
//! documented exit codes (see `convbill::exit`).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use convbill::{exit, generate, nightly, RunConfig, RunReport};
use tracing_subscriber::EnvFilter;

// Large columns are allocated and freed all through a run: mimalloc keeps freed pages for the
// next ones instead of returning them to the system and faulting them in again (see
// `keep_freed_memory`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its place in `mi_option_t`, the same in mimalloc 2 and 3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Tells mimalloc never to return freed memory to the system during the run (unless the
/// environment sets `MIMALLOC_PURGE_DELAY`). By default it returns memory unused for a second,
/// and a large run frees and allocates columns of hundreds of megabytes all the time: the
/// system then zeroes every page again when it is touched. On the benchmark's 100M-message month
/// mimalloc returned 34.5 GiB over 53,500 purges; what is kept instead is reused by the next
/// columns.
fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's documented options to a documented value (-1: never
        // purge); mimalloc reads it whenever it considers a purge.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

/// Whether mimalloc keeps freed memory ([`keep_freed_memory`]).
fn freed_memory_kept() -> bool {
    // SAFETY: reads one of mimalloc's documented options.
    unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) < 0 }
}

/// Turns transparent huge pages off for the process (unless the environment sets
/// `MIMALLOC_ALLOW_THP`, mimalloc's own switch). mimalloc asks for huge pages for its arenas;
/// the kernel must then find 2 MiB of contiguous memory at each first touch, compacting memory
/// when it is fragmented (the system's default for such requests). On a 2-core VM whose memory
/// is mostly page cache, the 10M-message benchmark month spent 23 to 28 s of system time doing
/// so, against 2 s with 4 KiB pages: 22 s against 7 s in all.
fn no_huge_pages() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: PR_SET_THP_DISABLE takes an integer flag and no pointers; its only effect is
        // the kernel's choice of page size for this process's memory from now on.
        unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    }
}

/// Whether huge pages are off for this process ([`no_huge_pages`]), as the kernel reports it.
fn huge_pages_off() -> bool {
    // SAFETY: PR_GET_THP_DISABLE takes no arguments and returns the flag.
    unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) == 1 }
}

/// Bills business messaging: derives Meta's 24-hour conversation sessions (WhatsApp,
/// Messenger, Instagram) from Parquet message logs and writes per-account invoices, priced by
/// a rate card (`--rates`).
///
/// With no subcommand, `convbill` runs `convbill run` with its defaults: the bundled
/// `sample-data/` in, `./out` out.
///
/// Exit codes:
///
/// 0 success. 1 internal error, or the output could not be written.
///
/// 2 usage error: a bad flag or rate card, an `--out` that is a file, a night that does not fit
/// the history or has not ended, an `explain` that names no messages or too many conversations,
/// `--shard-from-env` without the scheduler's variable, a merge `--out` that is or holds a
/// shard, or (merging histories) holds something else than an earlier merge.
///
/// 3 input data refused, nothing written: bad files or values, a night without messages, late
/// input with `--strict-late-input`, shard folders that do not make one run (or one history)
/// for `merge`.
///
/// 4 nothing done: another run holds the output folder. 5 `reconcile --fail-on-difference`
/// found differences. 6 `fetch-meta-analytics`: Meta's Graph API refused a request or kept
/// failing. 130 interrupted.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// More log output on stderr (-v: per-stage, -vv: debug). `RUST_LOG` overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    /// Only errors on stderr, no summary.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Derive sessions and write invoices for a message log.
    Run(RunArgs),
    /// Write a deterministic, realistic message log for tests and benchmarks.
    Generate(GenerateArgs),
    /// Explain a conversation: what each of its messages did (opened or joined a session, was
    /// a violation, was ignored or dropped) and why, and the invoice line of each session.
    ///
    /// Name the conversation by `--account` (and `--user`, `--channel`, `--business` where the
    /// account has several), by `--message-id` or by `--session-id`. The conversations are
    /// derived again from the log, whole, through the same rules as a run. Only the rows of the
    /// selection are read and checked: `convbill run` checks every row. Exits with 2 when
    /// nothing matches, when a message or session id is used in several conversations or more
    /// than 20 conversations match (listing them), 3 on bad input.
    Explain(ExplainArgs),
    /// Compare a run's Meta units with Meta's own analytics for the WABAs (saved
    /// `conversation_analytics` and `pricing_analytics` responses), cell by cell at the finest
    /// grain both have, and write `DIR/reconciliation/reconciliation.parquet` and `.csv`.
    ///
    /// Differences are a result, not an error (Meta calls its analytics approximate), unless
    /// `--fail-on-difference` is given: then they exit with 5. Exits with 3 when a response is
    /// not analytics (not JSON, an error body, an unknown value) or covers nothing of the run,
    /// 2 when the folder holds no Meta units or the card is not the run's.
    Reconcile(ReconcileArgs),
    /// Fetch a WhatsApp Business Account's analytics from Meta's Graph API and save the raw
    /// response pages for `convbill reconcile`: `conversation_analytics` for the days before
    /// 2025-07-01, `pricing_analytics` from then on, following `paging.next` to the last page.
    ///
    /// The access token comes from the environment variable `META_ACCESS_TOKEN`; it is sent in
    /// the `Authorization` header only, never printed, and replaced by `REDACTED` in the saved
    /// pages. Rate limits, server errors and failed connections are tried again with a wait
    /// that doubles each time. Nothing is written unless every page arrived. Exits with 6 when
    /// Meta refuses a request (an expired token: code 190) or keeps failing, 2 without a token
    /// or with a bad WABA id or period.
    #[command(name = "fetch-meta-analytics")]
    FetchMetaAnalytics(FetchArgs),
    /// Put the output folders of a run's shards (`convbill run --shard I/N`) together into one
    /// folder, the same bytes as a run over the whole log (its manifest aside, which lists the
    /// shards); or nightly shards' histories (`--date D --shard I/N`) into one history, the
    /// same bytes as an unsharded history of the same nights (its month-to-date manifest
    /// aside).
    ///
    /// The shards must belong together: the same count with every shard once, the same input
    /// files (each the same bytes), rate card, rule set and convbill version, and the same
    /// options; histories must have run the same nights. Anything else is refused with exit
    /// code 3, naming the missing or mismatched shard; nothing is written then. Exit code 4
    /// when another run holds `--out`.
    Merge(MergeArgs),
}

#[derive(Args, Debug)]
struct MergeArgs {
    /// The merged output folder. Replaced as a whole, and only when the merge succeeds.
    #[arg(long, env = "CONVBILL_OUT", default_value = "out")]
    out: PathBuf,
    /// The rate card the shards were rated by (default: the one their manifests name, which
    /// must be unchanged).
    #[arg(long, value_name = "FILE")]
    rates: Option<PathBuf>,
    /// The shards' output folders (or nightly histories), in any order.
    #[arg(value_name = "SHARD_DIR", required = true, num_args = 1..)]
    shards: Vec<PathBuf>,
}

#[derive(Args, Debug)]
struct FetchArgs {
    /// The WhatsApp Business Account's id.
    #[arg(long)]
    waba: String,
    /// The first day, in the WABA's time zone.
    #[arg(long, value_name = "DAY")]
    from: chrono::NaiveDate,
    /// The last day (included).
    #[arg(long, value_name = "DAY")]
    to: chrono::NaiveDate,
    /// The WABA's time zone, as its Business Manager settings give it (IANA name, such as
    /// `Asia/Jakarta`): its days start at its midnight.
    #[arg(long, value_name = "ZONE", value_parser = parse_zone)]
    time_zone: chrono_tz::Tz,
    /// `DAILY` or `MONTHLY` buckets.
    #[arg(long, default_value = "DAILY", value_parser = ["DAILY", "MONTHLY", "daily", "monthly"])]
    granularity: String,
    /// A folder (one file per page, replaced whole) or a `.json` file (the page, or a list of
    /// the pages).
    #[arg(long, value_name = "FILE_OR_DIR")]
    out: PathBuf,
    /// The Graph API's address (plain http only for this machine).
    #[arg(long, value_name = "URL", default_value = convbill::meta::fetch::GRAPH_URL)]
    graph_url: String,
    /// The Graph API version.
    #[arg(long, value_name = "VERSION", default_value = convbill::meta::fetch::API_VERSION)]
    api_version: String,
    /// Attempts per page, the first included.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..))]
    attempts: u32,
    /// Seconds to wait before the second attempt; the wait doubles for each one after (and is
    /// at least what a `Retry-After` header asks).
    #[arg(long, value_name = "SECONDS", default_value_t = 2.0)]
    retry_wait: f64,
    /// Seconds a request may take.
    #[arg(long, value_name = "SECONDS", default_value_t = 120.0)]
    timeout: f64,
}

fn granularity_of(text: &str) -> convbill::meta::reconcile::Granularity {
    match text.to_ascii_uppercase().as_str() {
        "MONTHLY" => convbill::meta::reconcile::Granularity::Monthly,
        _ => convbill::meta::reconcile::Granularity::Daily,
    }
}

fn parse_zone(text: &str) -> Result<chrono_tz::Tz, String> {
    text.parse::<chrono_tz::Tz>()
        .map_err(|_| format!("`{text}` is not an IANA time zone (such as `Asia/Jakarta`)"))
}

#[derive(Args, Debug)]
struct ReconcileArgs {
    /// The output folder of a run (whole or nightly) priced with a card that has `[meta]`.
    #[arg(long, env = "CONVBILL_OUT", default_value = "out")]
    out: PathBuf,
    /// Saved analytics responses: JSON files, or folders of them (`*.json`), one page each.
    #[arg(long = "meta-analytics", value_name = "PATH", required = true, num_args = 1..)]
    meta_analytics: Vec<PathBuf>,
    /// The rate card the run used (default: the one its manifest names, if unchanged).
    #[arg(long, value_name = "FILE")]
    rates: Option<PathBuf>,
    /// Exit with 5 when any cell differs beyond the tolerance.
    #[arg(long)]
    fail_on_difference: bool,
    /// Differences up to this much (units, or cost in the card's currency) count as a match.
    #[arg(
        long,
        value_name = "AMOUNT",
        default_value = "0",
        allow_negative_numbers = true
    )]
    tolerance: rust_decimal::Decimal,
    /// Differences up to this share of Meta's figure (0.02: 2%) count as a match.
    #[arg(
        long,
        value_name = "SHARE",
        default_value = "0",
        allow_negative_numbers = true
    )]
    tolerance_relative: rust_decimal::Decimal,
    /// Print what lies behind a row of the reconciliation (its number in
    /// `reconciliation.csv`, 1 for the first after the header; the summary names the rows of
    /// the largest differences): Meta's data points with their files, and convbill's units
    /// with the messages that opened them.
    #[arg(long, value_name = "ROW")]
    explain: Option<usize>,
}

#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("what").required(true).multiple(true).args(["account", "message_id", "session_id"]))]
struct ExplainArgs {
    /// The message log: a Parquet file or a folder, as for `convbill run`.
    #[arg(long, env = "CONVBILL_INPUT", default_value = convbill::error::DEFAULT_INPUT)]
    input: PathBuf,
    /// The account whose conversations to explain.
    #[arg(long)]
    account: Option<String>,
    /// The customer (`user_id`).
    #[arg(long)]
    user: Option<String>,
    /// `whatsapp`, `messenger` or `instagram`.
    #[arg(long)]
    channel: Option<String>,
    /// The business (`business_id`: the WhatsApp number, page or Instagram account).
    #[arg(long)]
    business: Option<String>,
    /// The conversation of this message (with `--account` if the id is used by several).
    #[arg(long)]
    message_id: Option<String>,
    /// The conversation of this session (`session_id` of `sessions.parquet`, or its first 8
    /// or more characters, such as the 12 the text shows).
    #[arg(long)]
    session_id: Option<String>,
    /// Show the messages from this UTC day on (the conversation is still derived whole).
    #[arg(long, value_name = "YYYY-MM-DD")]
    from: Option<chrono::NaiveDate>,
    /// Show the messages up to this UTC day, included.
    #[arg(long, value_name = "YYYY-MM-DD")]
    to: Option<chrono::NaiveDate>,
    /// The rate card the run used, for periods, price versions, invoices and local times.
    #[arg(long, env = "CONVBILL_RATES", value_name = "FILE")]
    rates: Option<PathBuf>,
    /// `text` (for people), `json` (for tools) or `csv` (one row per message).
    #[arg(long, value_enum, default_value_t = ExplainFormat::Text)]
    format: ExplainFormat,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum ExplainFormat {
    Text,
    Json,
    Csv,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// A Parquet file, or a folder read recursively (hive-style `key=value/` folders allowed).
    #[arg(long, env = "CONVBILL_INPUT", default_value = convbill::error::DEFAULT_INPUT)]
    input: PathBuf,

    /// Output folder. Replaced as a whole, and only when the run succeeds.
    #[arg(long, env = "CONVBILL_OUT", default_value = "out")]
    out: PathBuf,

    /// Nightly mode: process the events of this UTC day, carrying what is still open at
    /// midnight to the next night in a state kept under `--out`.
    #[arg(long, value_name = "YYYY-MM-DD")]
    date: Option<chrono::NaiveDate>,

    /// With `--date` on a night that already has later nights: rerun it and every later night,
    /// all put in place at once.
    #[arg(long, requires = "date")]
    recompute_later: bool,

    /// With `--date`: start a new history in `--out` with this night (the folder must be new
    /// or empty). Without it, a nightly run only continues a history.
    #[arg(long, requires = "date")]
    init: bool,

    /// With `--date`: run the night even if the input holds no messages on its day (without
    /// it, such a night is refused with exit code 3: its logs have probably not landed yet).
    #[arg(long, requires = "date")]
    allow_empty: bool,

    /// With `--date`: refuse to run (exit code 3) while input files hold messages of nights
    /// already billed that those nights did not read, instead of warning.
    #[arg(long, requires = "date")]
    strict_late_input: bool,

    /// With `--date`: first run every night missing between the history's last night and
    /// this one, in order, each put in place on its own (a schedule that missed nights).
    #[arg(long, requires = "date")]
    catch_up: bool,

    /// With `--recompute-later`: drop from the history the messages the recomputed nights
    /// billed that the input no longer holds (say so), instead of refusing.
    #[arg(long, requires = "recompute_later")]
    accept_removed: bool,

    /// Set rows that fail a check aside in `rejects.parquet` (with their values, file, row and
    /// reason) and go on, instead of stopping at the first; with `--date`, each night's in
    /// `rejects/date=D/part-0.parquet`. Problems with a whole file still stop the run.
    #[arg(long)]
    rejects: bool,

    /// Rate card (TOML): plans, allowances, prices, and each account's plan and billing time
    /// zone. Checked before any data is read. Without it, sessions are rated by the article:
    /// quota only, months in UTC. See `sample-data/rates.toml`.
    #[arg(long, env = "CONVBILL_RATES", value_name = "FILE")]
    rates: Option<PathBuf>,

    /// Derive at most this many rows at a time, in groups of whole accounts (a larger
    /// account is a group of its own). Lower it to use less memory; the outputs are the same
    /// bytes whatever its value.
    #[arg(
        long,
        env = "CONVBILL_PARTITION_ROWS",
        default_value_t = convbill::partition::DEFAULT_MAX_ROWS,
        value_parser = clap::value_parser!(u64).range(1..),
        value_name = "ROWS"
    )]
    partition_rows: u64,
    /// Keep only the accounts of bucket I of N, where an account's bucket is Spark SQL's
    /// `pmod(xxhash64(account_id), N)`, and write a shard's folder for `convbill merge`. Input
    /// files in a `convbill_bucket=J/` folder of another bucket are not read. With `--date`,
    /// `--out` holds this shard's own history.
    #[arg(long, value_name = "I/N", conflicts_with = "shard_from_env")]
    shard: Option<convbill::shard::Shard>,
    /// `--shard` with the index from the scheduler's environment (Kubernetes Indexed Jobs'
    /// `JOB_COMPLETION_INDEX`, a Slurm array's `SLURM_ARRAY_TASK_ID`, an AWS Batch array's
    /// `AWS_BATCH_JOB_ARRAY_INDEX`) and N given here.
    #[arg(long, value_name = "N")]
    shard_from_env: Option<u32>,
    /// A log of more rows than this is spilled to disk, group by group, in a hidden folder
    /// beside `--out` (removed when the run ends); a smaller one stays in memory (about 120
    /// bytes a row). 0 spills whenever there is more than one group.
    #[arg(
        long,
        env = "CONVBILL_MEMORY_ROWS",
        default_value_t = convbill::partition::IN_MEMORY_ROWS,
        value_name = "ROWS"
    )]
    memory_rows: u64,
}

#[derive(Args, Debug)]
struct GenerateArgs {
    /// The Parquet file to write.
    #[arg(long)]
    out: PathBuf,
    /// Number of message rows to write (duplicates included).
    #[arg(long, default_value_t = 100_000)]
    messages: u64,
    /// Random seed: the same seed and options give the same file.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// First day of the log (UTC).
    #[arg(long, default_value = "2026-10-01")]
    start: chrono::NaiveDate,
    /// Number of days the log covers.
    #[arg(long, default_value_t = 31)]
    days: u32,
    /// Number of accounts (default: grows with --messages).
    #[arg(long)]
    accounts: Option<u32>,
    /// WhatsApp users from more of Meta's markets (Indonesia, India, Brazil, Mexico, the US,
    /// the Dominican Republic, and countries Meta prices as Other), for Meta pricing
    #[arg(long)]
    markets: bool,
    /// Also write the analytics Meta would report for the log into this folder, one folder of
    /// pages per WABA, for `convbill reconcile` (needs `--rates`: a card with `[meta]`).
    #[arg(long, value_name = "DIR", requires = "rates")]
    meta_analytics: Option<PathBuf>,
    /// The rate card the analytics are priced by.
    #[arg(long, value_name = "FILE", requires = "meta_analytics")]
    rates: Option<PathBuf>,
    /// The analytics' buckets: `DAILY` or `MONTHLY`.
    #[arg(long, default_value = "DAILY", value_parser = ["DAILY", "MONTHLY", "daily", "monthly"], requires = "meta_analytics")]
    granularity: String,
    /// Plant four differences in the analytics, as real ones look (a count, a cost, a cell
    /// Meta leaves out, a marketing lite message only Meta has), and list them.
    #[arg(long, requires = "meta_analytics")]
    plant_differences: bool,
}

fn main() -> ExitCode {
    keep_freed_memory();
    no_huge_pages();
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.quiet);
    tracing::debug!(
        "freed memory: {}; transparent huge pages: {}",
        if freed_memory_kept() {
            "kept"
        } else {
            "handed back"
        },
        if huge_pages_off() { "off" } else { "on" }
    );
    if !cli.quiet && cli.verbose == 0 && std::io::stderr().is_terminal() {
        convbill::progress::show_with(Box::new(Bar::new()));
    }
    convbill::load::quiet_reader_panics();
    // Ctrl-C or SIGTERM: stop at the next step and clean up; a second one stops at once. A
    // signal within a second of the first is the same one delivered twice (`timeout` signals
    // the process and its group), not an impatient second Ctrl-C.
    let _ = ctrlc::set_handler(|| {
        static FIRST: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let first = *FIRST.get_or_init(std::time::Instant::now);
        if first.elapsed() >= std::time::Duration::from_secs(1) {
            eprintln!(
                "convbill: interrupted again: stopping at once; the output folder is the old one or the new one, whole, and the next run removes what this one left beside it"
            );
            std::process::exit(exit::INTERRUPTED);
        }
        convbill::interrupt();
    });
    // What a failed run leaves: every run is put in place whole or not at all.
    let mut out = None;
    let result = match cli
        .command
        .unwrap_or(Command::Run(RunArgs::default_from_env()))
    {
        Command::Run(args) => {
            out = Some((args.out.clone(), args.date.is_some()));
            run(args, cli.quiet)
        }
        Command::Generate(args) => generate_log(args, cli.quiet),
        Command::Explain(args) => explain(args),
        Command::Reconcile(args) => reconcile(args, cli.quiet),
        Command::FetchMetaAnalytics(args) => fetch_meta_analytics(args, cli.quiet),
        Command::Merge(args) => {
            out = Some((args.out.clone(), false));
            merge(args, cli.quiet)
        }
    };
    match result {
        Ok(()) => ExitCode::from(exit::SUCCESS as u8),
        Err(error) => {
            eprintln!("error: {error:#}");
            let code = match error.downcast_ref::<convbill::Error>() {
                Some(e) => {
                    if let Some(hint) = e.hint() {
                        eprintln!("hint: {hint}");
                    }
                    e.exit_code()
                }
                None => exit::INTERNAL,
            };
            match error.downcast_ref::<convbill::Error>() {
                Some(convbill::Error::CatchUpStopped { last, failed, .. }) => eprintln!(
                    "note: the history ends with night {last}; the nights from {failed} on have not run"
                ),
                _ => {
                    let failed = [exit::INTERNAL, exit::USAGE, exit::DATA].contains(&code);
                    if let (true, Some((out, nightly))) = (failed, &out) {
                        eprintln!("note: {}", unchanged(out, *nightly));
                    }
                }
            }
            ExitCode::from(code as u8)
        }
    }
}

/// What a run that failed left of `out`: every run is put in place whole or not at all.
fn unchanged(out: &std::path::Path, nightly: bool) -> String {
    let shown = out.display();
    if nightly && out.join(convbill::write::STATE_DIR).is_dir() {
        format!("the history in `{shown}` is as it was before this run")
    } else if out.is_dir() {
        format!("the output folder `{shown}` is as it was before this run")
    } else {
        format!("nothing was written to `{shown}`")
    }
}

impl RunArgs {
    /// The defaults of `convbill run` (environment variables included), for a bare `convbill`.
    fn default_from_env() -> Self {
        match Cli::parse_from(["convbill", "run"]).command {
            Some(Command::Run(args)) => args,
            _ => unreachable!("`convbill run` parses as the run command"),
        }
    }
}

/// Progress on a terminal: the stage, its units done (rows, groups, nights) and the time
/// since the run started. Never drawn when stderr is not a terminal (cron, CI logs), with
/// `-q`, or with `-v` (which logs each stage as a line instead).
struct Bar;

/// The one bar of the process, drawn by [`Bar`].
static BAR: std::sync::OnceLock<indicatif::ProgressBar> = std::sync::OnceLock::new();

impl Bar {
    fn new() -> Bar {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        let _ = BAR.set(bar);
        Bar
    }

    /// Takes the bar off the terminal before the summary is printed.
    fn clear() {
        if let Some(bar) = BAR.get() {
            bar.finish_and_clear();
        }
    }
}

impl convbill::progress::Show for Bar {
    fn stage(&self, what: &str, units: Option<u64>) {
        let Some(bar) = BAR.get() else { return };
        let template = match units {
            Some(_) => "{spinner} [{elapsed}] {msg}: {bar:20} {human_pos}/{human_len}",
            None => "{spinner} [{elapsed}] {msg}",
        };
        let style = indicatif::ProgressStyle::with_template(template)
            .map(|style| style.progress_chars("=> "))
            .ok();
        // The bar is drawn from another thread: counts change only while no count is shown.
        if units.is_none() {
            if let Some(style) = style.clone() {
                bar.set_style(style);
            }
        }
        bar.set_length(units.unwrap_or(0));
        bar.set_position(0);
        if let (Some(_), Some(style)) = (units, style) {
            bar.set_style(style);
        }
        // Last: a new message draws the stage at once.
        bar.set_message(what.to_string());
    }

    fn advance(&self, done: u64) {
        if let Some(bar) = BAR.get() {
            bar.inc(done);
        }
    }
}

fn explain(args: ExplainArgs) -> anyhow::Result<()> {
    use convbill::explain::{self, Format, Selection};
    let selection = Selection {
        account: args.account,
        user: args.user,
        channel: args.channel,
        business: args.business,
        message_id: args.message_id,
        session_id: args.session_id,
        from: args.from,
        to: args.to,
    };
    let explanation = explain::explain(&args.input, &selection, args.rates.as_deref())?;
    let format = match args.format {
        ExplainFormat::Text => Format::Text,
        ExplainFormat::Json => Format::Json,
        ExplainFormat::Csv => Format::Csv,
    };
    print!("{}", explain::render(&explanation, format)?);
    Ok(())
}

fn reconcile(args: ReconcileArgs, quiet: bool) -> anyhow::Result<()> {
    use convbill::reconcile::{self, ReconcileConfig};
    let config = ReconcileConfig {
        out: args.out,
        analytics: args.meta_analytics,
        rates: args.rates,
        tolerance: convbill::meta::reconcile::Tolerance {
            relative: args.tolerance_relative,
            absolute: args.tolerance,
        },
        explain: args.explain,
    };
    let report = reconcile::reconcile(&config)?;
    if let Some(explained) = &report.explained {
        print!("{}", explanation(explained));
    }
    let differences = report.differences();
    if !quiet {
        let by_status = report.by_status();
        let kinds: Vec<String> = by_status
            .iter()
            .filter(|(status, _)| **status != convbill::meta::reconcile::Status::Match)
            .map(|(status, n)| format!("{n} {}", status.name()))
            .collect();
        eprintln!(
            "reconciled {} cells: {} match, {differences} differ{}",
            report.rows.len(),
            report.rows.len() - differences,
            match kinds.is_empty() {
                true => String::new(),
                false => format!(" ({})", kinds.join(", ")),
            }
        );
        let largest = report.largest(5);
        if !largest.is_empty() {
            eprintln!("largest differences:");
        }
        for (number, row) in largest {
            let r = &row.row;
            eprintln!(
                "  row {number}: {}: Meta {}, convbill {} ({})",
                cell_text(row),
                side(r.meta),
                side(r.convbill),
                r.status.name()
            );
        }
        const NAMED: usize = 5;
        for (api, waba, units, from, to) in report.outside.iter().take(NAMED) {
            let utc = reconcile::utc_minute;
            eprintln!(
                "not compared: {units} of convbill's units for {} of WABA {waba} start outside the buckets compared ({} to {})",
                api.name(),
                utc(*from),
                utc(*to)
            );
        }
        if report.outside.len() > NAMED {
            let rest = &report.outside[NAMED..];
            eprintln!(
                "not compared: {} more of convbill's units, of {} more WABAs' analytics, start outside the buckets compared",
                rest.iter().map(|o| o.2).sum::<usize>(),
                rest.len()
            );
        }
        for (api, waba, points, coverage) in report.meta_outside.iter().take(NAMED) {
            eprintln!(
                "not compared: {points} of Meta's data points for {} of WABA {waba} are of days the run does not cover whole ({})",
                api.name(),
                coverage.text()
            );
        }
        if report.meta_outside.len() > NAMED {
            let rest = &report.meta_outside[NAMED..];
            eprintln!(
                "not compared: {} more of Meta's data points, of {} more WABAs' analytics, are of days the run does not cover whole",
                rest.iter().map(|o| o.2).sum::<usize>(),
                rest.len()
            );
        }
        if !report.costs_compared {
            eprintln!("costs not compared: Meta's analytics give no cost (a WABA billed through a partner); counts only");
        }
        eprintln!("wrote {}", report.written.display());
    }
    if args.fail_on_difference && differences > 0 {
        std::process::exit(exit::DIFFERENCES);
    }
    Ok(())
}

/// A side's sum: `12 for 0.4920`, `12` without a cost, `none`.
fn side(sum: Option<convbill::meta::reconcile::Sum>) -> String {
    match sum {
        None => "none".to_string(),
        Some(s) => match s.cost {
            Some(cost) => format!("{} for {cost}", s.count),
            None => s.count.to_string(),
        },
    }
}

/// A reconciliation cell: analytics, WABA, bucket start and the compared values.
fn cell_text(row: &convbill::reconcile::WabaRow) -> String {
    let cell = &row.row.cell;
    let values: Vec<String> = [
        cell.values.phone_number.clone(),
        cell.values.country.clone(),
        cell.values.category.map(|c| c.name().to_string()),
        cell.values.pricing_type.map(|p| p.name().to_string()),
        cell.values.tier.clone(),
    ]
    .into_iter()
    .flatten()
    .collect();
    format!(
        "{} WABA {} {} {}",
        cell.api.name(),
        row.waba,
        convbill::reconcile::utc_minute(cell.start),
        values.join(" ")
    )
}

/// `reconcile --explain ROW`: the cell, Meta's data points and convbill's units.
fn explanation(explained: &convbill::reconcile::Explanation) -> String {
    use std::fmt::Write;
    let row = &explained.row.row;
    let mut text = format!(
        "row {}: {} ({})\n",
        explained.number,
        cell_text(&explained.row),
        row.status.name()
    );
    let _ = writeln!(text, "Meta: {}", side(row.meta));
    for (path, point) in &explained.points {
        let _ = writeln!(
            text,
            "  {} in {}{}",
            point.count,
            path.display(),
            match point.cost {
                Some(cost) => format!(" (cost {cost})"),
                None => String::new(),
            }
        );
    }
    let _ = writeln!(
        text,
        "convbill: {}, from {} unit{}{}",
        side(row.convbill),
        explained.units.len(),
        if explained.units.len() == 1 { "" } else { "s" },
        if explained.units.is_empty() { "" } else { ":" }
    );
    for unit in &explained.units {
        let _ = writeln!(
            text,
            "  {} {} account {} business {} user {} message {} {} {}{} cost {}",
            unit.unit_id,
            unit.started_at,
            unit.account_id,
            unit.business_id,
            unit.user_id,
            unit.message_id,
            unit.category,
            unit.pricing_type,
            match unit.tier.is_empty() {
                true => String::new(),
                false => format!(" tier {}", unit.tier),
            },
            unit.cost
        );
    }
    if let Some(unit) = explained.units.first() {
        let _ = writeln!(
            text,
            "the messages of a unit's conversation: convbill explain --input {}{} --account {} --message-id {}",
            explained.input.as_deref().unwrap_or("LOG"),
            match &explained.rates {
                Some(card) => format!(" --rates {card}"),
                None => String::new(),
            },
            unit.account_id,
            unit.message_id
        );
    }
    text
}

fn fetch_meta_analytics(args: FetchArgs, quiet: bool) -> anyhow::Result<()> {
    use convbill::meta::fetch::{self, FetchConfig};
    let seconds = |name: &str, value: f64, least: f64| {
        std::time::Duration::try_from_secs_f64(value)
            .ok()
            .filter(|_| value >= least && value.is_finite())
            .ok_or_else(|| convbill::Error::MetaApiSetup {
                problem: format!(
                    "`--{name} {value}` is not a number of seconds{}",
                    if least > 0.0 { " above 0" } else { "" }
                ),
            })
    };
    let config = FetchConfig {
        waba: args.waba,
        from: args.from,
        to: args.to,
        granularity: granularity_of(&args.granularity),
        time_zone: args.time_zone,
        out: args.out,
        graph_url: args.graph_url,
        api_version: args.api_version,
        token: std::env::var(fetch::TOKEN_VARIABLE).unwrap_or_default(),
        attempts: args.attempts,
        retry_wait: seconds("retry-wait", args.retry_wait, 0.0)?,
        timeout: seconds("timeout", args.timeout, 0.001)?,
    };
    let report = fetch::fetch(&config)?;
    if !quiet {
        for (request, pages, points) in &report.requests {
            eprintln!(
                "fetched {} of WABA {} from {} to {}: {pages} page{}, {points} data points",
                request.api.name(),
                config.waba,
                request.from,
                request.to,
                if *pages == 1 { "" } else { "s" }
            );
        }
        if report.retries > 0 {
            eprintln!(
                "tried again {} time{} after rate limits, server errors or failed connections",
                report.retries,
                if report.retries == 1 { "" } else { "s" }
            );
        }
        match report.written.as_slice() {
            [one] => eprintln!("wrote {}", one.display()),
            files => eprintln!("wrote {} ({} files)", config.out.display(), files.len()),
        }
    }
    Ok(())
}

fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

fn run(args: RunArgs, quiet: bool) -> anyhow::Result<()> {
    let shard = match args.shard_from_env {
        Some(count) => Some(
            convbill::shard::Shard::from_env(count)
                .map_err(|problem| convbill::Error::Usage { problem })?,
        ),
        None => args.shard,
    };
    if let Some(date) = args.date {
        return run_night(
            nightly::NightConfig {
                input: args.input,
                out: args.out,
                date,
                recompute_later: args.recompute_later,
                rates: args.rates,
                init: args.init,
                allow_empty: args.allow_empty,
                strict_late_input: args.strict_late_input,
                catch_up: args.catch_up,
                accept_removed: args.accept_removed,
                rejects: args.rejects,
                partition_rows: args.partition_rows,
                memory_rows: args.memory_rows,
                shard,
            },
            quiet,
        );
    }
    let config = RunConfig {
        input: args.input,
        out: args.out,
        partition_rows: args.partition_rows,
        memory_rows: args.memory_rows,
        rejects: args.rejects,
        rates: args.rates,
        shard,
    };
    let report = convbill::run(&config);
    Bar::clear();
    let report = report?;
    if !quiet {
        eprint!("{}", summary(&config, &report));
    }
    Ok(())
}

fn merge(args: MergeArgs, quiet: bool) -> anyhow::Result<()> {
    let config = convbill::merge::MergeConfig {
        out: args.out,
        shards: args.shards,
        rates: args.rates,
    };
    let report = convbill::merge::merge(&config);
    Bar::clear();
    if quiet {
        return report.map(|_| ()).map_err(Into::into);
    }
    match report? {
        convbill::merge::Merged::Run(report) => {
            eprintln!("convbill: merged {} shard folder(s)", config.shards.len());
            let run = RunConfig::new("", &config.out);
            eprint!("{}", summary(&run, &report));
        }
        convbill::merge::Merged::History(report) => {
            eprint!("{}", history_merge_summary(&report, &config.out));
        }
    }
    Ok(())
}

/// What a merge of nightly histories says on stderr: late files, reissued invoices, and one
/// line of what it merged.
fn history_merge_summary(report: &convbill::nightly::merge::HistoryReport, out: &Path) -> String {
    let mut text = late_warnings(&report.late, " on every shard");
    for change in &report.changes {
        text.push_str(&format!("convbill: {}\n", change.describe()));
    }
    let (first, last) = report.nights;
    let kept = match report.kept {
        0 => String::new(),
        kept => format!(" ({kept} kept from the earlier merge)"),
    };
    let by_status: Vec<String> = report
        .invoices
        .iter()
        .map(|(status, n)| format!("{n} {status}"))
        .collect();
    let invoices = match by_status.is_empty() {
        true => String::new(),
        false => format!(" ({})", by_status.join(", ")),
    };
    let closed = match report.closed.is_empty() {
        true => String::new(),
        false => format!(", closed period(s) {}", report.closed.join(", ")),
    };
    text.push_str(&format!(
        "convbill: merged the histories of {} shards, nights {first} to {last}{kept}: {} month-to-date invoice(s){invoices}{closed} in {}\n",
        report.shards,
        report.invoices.values().sum::<usize>(),
        out.display()
    ));
    text
}

/// A warning for each late input file, and a hint to bill them (`on` says where).
fn late_warnings(late: &[nightly::inputs::LateFile], on: &str) -> String {
    let mut text = String::new();
    for late in late {
        text.push_str(&format!("convbill: warning: {}\n", late.describe()));
    }
    if let Some(from) = nightly::inputs::recompute_from(late) {
        let removed = late.iter().any(|l| l.missing > 0);
        let unbilled = late.iter().any(|l| l.messages > 0 || l.altered > 0);
        text.push_str(&format!(
            "convbill: hint: rerun `--date {from} --recompute-later{}`{on} to {}\n",
            if removed { " --accept-removed" } else { "" },
            if unbilled {
                "bill them"
            } else {
                "bring the history in line with its input"
            }
        ));
    }
    text
}

/// The end-of-run summary printed on stderr.
fn summary(config: &RunConfig, report: &RunReport) -> String {
    let mut text = String::new();
    if let Some(shard) = config.shard {
        text.push_str(&format!(
            "convbill: shard {shard}: the accounts of bucket {} of {} (`convbill merge` puts the shards together)\n",
            shard.index, shard.count
        ));
    }
    text.push_str(&format!(
        "convbill: read {} messages from {} file(s), {} duplicate(s) dropped; {} sessions, {} violations, {} failed deliveries ignored\n",
        report.input.rows_read,
        report.files,
        report.input.duplicates_dropped,
        report.sessions.sessions,
        report.sessions.violations,
        report.sessions.failed_outbound,
    ));
    if config.rejects || report.input.rows_rejected > 0 {
        text.push_str(&format!(
            "convbill: {} row(s) set aside in rejects.parquet{}\n",
            report.input.rows_rejected,
            report
                .input
                .rejected_by_reason
                .iter()
                .map(|(reason, n)| format!(", {n} {reason}"))
                .collect::<String>()
        ));
    }
    for invoice in report.invoices.iter().take(SHOWN) {
        let totals = &invoice.totals;
        text.push_str(&format!(
            "  {} {}: quota {}",
            invoice.account_id, invoice.period, totals.quota
        ));
        // `XXX` is the built-in card's "no currency": quota only.
        if invoice.currency != "XXX" {
            text.push_str(&format!(
                " ({} in allowance, {} over), {} {}",
                totals.allowance_quota, totals.overage_quota, totals.amount, invoice.currency
            ));
        }
        if invoice.status == convbill::rating::PARTIAL {
            text.push_str(&format!(
                "; partial: covers {} to {}",
                invoice.coverage_start, invoice.coverage_end
            ));
            for hole in &invoice.uncovered {
                text.push_str(&format!(" but not {} to {}", hole.from, hole.to));
            }
        }
        text.push('\n');
    }
    if report.invoices.len() > SHOWN {
        text.push_str(&format!(
            "  ... and {} more invoice(s); see invoice_lines.csv\n",
            report.invoices.len() - SHOWN
        ));
    }
    let partial = report
        .invoices
        .iter()
        .filter(|i| i.status == convbill::rating::PARTIAL)
        .count();
    if partial > 0 {
        text.push_str(&format!(
            "convbill: note: {partial} invoice(s) are partial: the input does not cover every day of their period (it covers the UTC days it has messages on), or a session of it is still open and unanswered where the input ends\n"
        ));
    }
    if let Some(meta) = &report.meta {
        text.push_str(&meta_summary(meta, "", "meta_cost_lines.csv"));
    }
    for change in &report.reissued {
        text.push_str(&format!("convbill: {}\n", change.describe()));
    }
    if let Some(first) = report.card_accounts_without_invoices.first() {
        text.push_str(&format!(
            "convbill: note: the rate card names {} account(s) with no invoice in this run (first: `{first}`); if one is misspelt, its sessions were billed by the default plan\n",
            report.card_accounts_without_invoices.len()
        ));
    }
    text.push_str(&format!(
        "convbill: wrote {} files to {}\n",
        report.written.len() + 1,
        config.out.display()
    ));
    text
}

/// Invoices (and accounts) a summary names before it says how many more there are.
const SHOWN: usize = 20;

/// Sums per currency as the summary says them: `1.50 USD, 2.00 EUR`, or `nothing`.
fn per_currency<V: std::fmt::Display>(by: &BTreeMap<String, V>) -> String {
    let sums: Vec<String> = by.iter().map(|(c, v)| format!("{v} {c}")).collect();
    match sums.is_empty() {
        true => "nothing".to_string(),
        false => sums.join(", "),
    }
}

/// The summary's lines of what Meta charged; `scope` says of what (after the model), `lines`
/// names the cost lines file.
fn meta_summary(meta: &convbill::meta::cost::MetaSummary, scope: &str, lines: &str) -> String {
    let mut text = String::new();
    let sums = per_currency;
    text.push_str(&format!(
        "convbill: Meta ({}){scope}: {} unit(s), {}; margin {}; see {lines}\n",
        meta.model,
        meta.units,
        sums(&meta.cost),
        sums(&meta.margin)
    ));
    if !meta.without_invoice.is_empty() {
        let first: Vec<String> = meta
            .without_invoice
            .iter()
            .take(SHOWN)
            .map(|(at, cost)| format!("{at} ({})", sums(cost)))
            .collect();
        text.push_str(&format!(
            "convbill: note: Meta's cost of {} account period(s) without an invoice is in the margin but in no invoice: {}{}\n",
            meta.without_invoice.len(),
            first.join(", "),
            match meta.without_invoice.len() > SHOWN {
                true => " ... (manifest.json lists them)",
                false => "",
            }
        ));
    }
    let negative = &meta.negative_margins;
    if !negative.is_empty() {
        text.push_str(&format!(
            "convbill: warning: {} invoice(s) cost more at Meta than they bill: {}{}\n",
            negative.len(),
            negative[..negative.len().min(SHOWN)].join(", "),
            match negative.len() > SHOWN {
                true => format!(
                    " and {} more (manifest.json lists them)",
                    negative.len() - SHOWN
                ),
                false => String::new(),
            }
        ));
    }
    text
}

fn run_night(config: nightly::NightConfig, quiet: bool) -> anyhow::Result<()> {
    let report = nightly::run(&config);
    Bar::clear();
    let report = report?;
    if !quiet {
        eprint!("{}", night_summary(&config, &report));
    }
    Ok(())
}

/// What a nightly run prints on stderr at the end.
fn night_summary(config: &nightly::NightConfig, report: &nightly::NightReport) -> String {
    let mut text = String::new();
    if let Some(recovered) = report.recovered {
        text.push_str(&format!("convbill: note: {recovered}\n"));
    }
    if report.new_history {
        text.push_str(&format!(
            "convbill: starting a new history in {} on {}\n",
            config.out.display(),
            config.date
        ));
    }
    text.push_str(&late_warnings(&report.late, ""));
    for (night, missing) in &report.dropped {
        text.push_str(&format!(
            "convbill: warning: dropped {missing} message(s) night {night} had billed, which the input no longer holds (`--accept-removed`)\n"
        ));
    }
    for change in &report.invoice_changes {
        text.push_str(&format!("convbill: {}\n", change.describe()));
    }
    let nights = &report.nights;
    let last = nights.last().expect("a night ran");
    let which = match nights.len() {
        1 => format!("night {}", last.date),
        n => format!("nights {} to {} ({n})", nights[0].date, last.date),
    };
    let sum = |f: fn(&nightly::NightStats) -> u64| nights.iter().map(f).sum::<u64>();
    let within = match nights.len() {
        1 => "within the night",
        _ => "each within its night",
    };
    text.push_str(&format!(
        "convbill: {which}: {} messages, {} duplicate(s) dropped ({} {within}, {} of earlier nights); {} sessions closed, {} open, {} violations; {} in {}\n",
        sum(|n| n.rows_read),
        sum(|n| n.duplicates()),
        sum(|n| n.duplicates_within_night),
        sum(|n| n.duplicates_of_earlier_nights),
        sum(|n| n.sessions_closed),
        last.sessions_open,
        sum(|n| n.violations),
        invoice_counts(&report.invoices),
        config.out.join(nightly::MONTH_TO_DATE_DIR).display(),
    ));
    if let Some(meta) = &report.meta {
        let lines =
            Path::new(nightly::MONTH_TO_DATE_DIR).join(convbill::write::META_LINES_CSV_FILE);
        let lines = lines.display().to_string();
        text.push_str(&meta_summary(meta, ", periods still open", &lines));
    }
    for closed in &report.closed {
        text.push_str(&format!(
            "convbill: night {} closed period {}: {} in {}\n",
            closed.night,
            closed.period,
            invoice_counts(&closed.by_status),
            config
                .out
                .join(nightly::month_to_date::closed_dir(&closed.period))
                .display(),
        ));
        if let Some((before, now)) = &closed.meta_cost_changed {
            let sums = per_currency;
            text.push_str(&format!(
                "convbill: warning: Meta's cost of closed period {} changed: {} before, {} now (its invoices' `meta_cost` and `margin` changed with it)\n",
                closed.period,
                sums(before),
                sums(now)
            ));
        }
    }
    if config.rejects {
        let mut by_reason = BTreeMap::new();
        for night in nights {
            for (reason, n) in &night.rejected_by_reason {
                *by_reason.entry(reason.as_str()).or_insert(0) += n;
            }
        }
        let files = match nights.len() {
            1 => format!("rejects/date={}/part-0.parquet", last.date),
            _ => format!(
                "rejects/date={}/ to date={}/ (part-0.parquet in each)",
                nights[0].date, last.date
            ),
        };
        text.push_str(&format!(
            "convbill: {} row(s) set aside in {files}{}\n",
            sum(|n| n.rows_rejected),
            by_reason
                .iter()
                .map(|(reason, n)| format!(", {n} {reason}"))
                .collect::<String>()
        ));
    }
    if let Some(partial) = report.invoices.get(convbill::rating::PARTIAL) {
        text.push_str(&format!(
            "convbill: note: {partial} invoice(s) are partial: the history starts on {}, after their period began, and they stay partial (see their coverage_start)\n",
            report.history.0
        ));
    }
    text
}

/// `6 invoices (4 final, 2 partial)`; `1 invoice (1 partial)`.
fn invoice_counts(by_status: &BTreeMap<&'static str, usize>) -> String {
    let statuses: Vec<String> = by_status
        .iter()
        .map(|(status, n)| format!("{n} {status}"))
        .collect();
    match by_status.values().sum::<usize>() {
        1 => format!("1 invoice ({})", statuses.join(", ")),
        n => format!("{n} invoices ({})", statuses.join(", ")),
    }
}

fn generate_log(args: GenerateArgs, quiet: bool) -> anyhow::Result<()> {
    let options = generate::Options {
        messages: args.messages,
        seed: args.seed,
        start: args.start,
        days: args.days,
        accounts: args.accounts,
        markets: args.markets,
    };
    let rows = generate::write(&args.out, &options)?;
    if !quiet {
        eprintln!("convbill: wrote {rows} messages to {}", args.out.display());
    }
    if let (Some(dir), Some(rates)) = (&args.meta_analytics, &args.rates) {
        let written = convbill::meta::simulated::of_log(
            &args.out,
            rates,
            dir,
            granularity_of(&args.granularity),
            args.plant_differences,
        )?;
        if !quiet {
            eprintln!(
                "convbill: wrote Meta's analytics of the log to {}: {} WABAs, {} pages, {} data points",
                dir.display(),
                written.folders,
                written.pages,
                written.points
            );
            for planted in &written.planted {
                eprintln!("planted {planted}");
            }
        }
    }
    Ok(())
}
