//! lockrun: mutual exclusion across processes and machines.
//!
//! `lockrun <resource> -- <cmd>...` acquires a lease on a named resource from a backend, runs the
//! command while renewing the lease, stops the command before the lease could be granted to
//! anyone else if renewal fails, and releases the lease when the command exits. This crate is
//! that tool's engine, and the CLI is built on the same API a Rust program uses:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), lockrun::Error> {
//! # let dir = tempfile::tempdir().unwrap();
//! use std::time::Duration;
//! use lockrun::{Lock, Wait};
//!
//! // Any backend URL works: file:///var/lib/lockrun, redis://..., postgres://..., etcd://...
//! // (or `lockrun::open_configured("nightly-report")` to use the CLI's config file).
//! let backend = lockrun::open(&format!("file://{}", dir.path().display())).await?;
//! let lock = Lock::new(backend, "nightly-report")?
//!     .ttl(Duration::from_secs(30))                  // renewed every 10s while held
//!     .wait(Wait::AtMost(Duration::from_secs(60)));  // acquire() gives up after a minute
//!
//! let guard = lock.acquire().await?;                 // Err(Error::Busy(holder)) after 60s
//! let token = guard.fencing_token();                 // hand it to what you protect
//! assert!(lock.try_acquire().await?.is_none());      // a second owner gets nothing
//! tokio::select! {
//!     _ = tokio::time::sleep(Duration::from_millis(10)) => {} // the work
//!     _ = guard.lost() => panic!("the lease is gone: stop writing"),
//! }
//! guard.release().await?;                            // dropping it releases too, best effort
//! # assert!(token.is_some());
//! # Ok(()) }
//! ```
//!
//! **The runtime**: the calls need a tokio runtime with its time and I/O drivers
//! (`enable_all()`, as `#[tokio::main]` has), and a guard renews on the runtime it was acquired
//! in, so that runtime must keep running tasks while the guard is held.
//!
//! **From synchronous code**: there is no blocking API. Build a multi-thread runtime
//! (`tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()`) and
//! `block_on` the calls: its worker renews the guard while your code does other things. A
//! current-thread runtime runs the renewal only inside `block_on`, so a guard held across
//! synchronous work longer than the TTL would be lost.
//!
//! **Cancelling `acquire`** (dropping its future, e.g. in `tokio::select!` or
//! `tokio::time::timeout`) while a grant is in flight can leave that lease held, unknown to you,
//! until its TTL runs out. Give the limit to the lock instead ([`Wait::AtMost`],
//! [`Lock::acquire_timeout`]), which ends waiting between attempts.
//!
//! # Module map
//!
//! | module | what it holds |
//! |---|---|
//! | [`lease`] | the model: [`lease::Resource`], [`lease::LeaseId`], [`lease::Lease`] |
//! | [`backend`] | the [`backend::Backend`] trait, capabilities, errors, open-by-URL |
//! | [`backend::file`] | the embedded default: a local lock directory |
//! | [`lock`] | the library API: [`Lock`] (builder) and [`Guard`] (a held, self-renewing lease) |
//! | [`wait`] | the waiting policy (event wake-ups, backoff with jitter, deadlines), written once |
//! | [`heartbeat`] | the renewal loop and the local safety deadline |
//! | [`config`] | config file + environment + flags → one validated plan |
//! | [`exit`] | the exit-code contract |
//! | [`duration`] | human duration strings |
//!
//! The binary's own modules, `cli` and `cmd` (the command line, one file per verb),
//! `supervise` (spawning the command, forwarding signals, stopping and reaping it) and `later`
//! (clean-up deferred until the command has started), are public for the binary only: they
//! change process-wide state (signal handlers, the child subreaper flag, logging) and are not
//! part of the library's API.

// Every line to stderr goes through `say!` (unit tests may print their notes).
#![cfg_attr(not(test), deny(clippy::print_stderr))]

/// `eprintln!` that ignores a failed write: with stderr a closed pipe, `eprintln!` panics,
/// and lockrun would end with SIGABRT instead of its documented status.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        // One write(2) per line: stderr is unbuffered, and `writeln!` would write each piece of
        // the format on its own, which concurrent lockruns sharing a log file interleave.
        let mut line = format!($($arg)*);
        line.push('\n');
        let _ = std::io::stderr().write_all(line.as_bytes());
    }};
}

pub mod backend;
#[doc(hidden)]
pub mod cli;
#[doc(hidden)]
pub mod cmd;
pub mod config;
pub mod duration;
mod error;
pub mod exit;
pub mod heartbeat;
#[doc(hidden)]
pub mod later;
pub mod lease;
pub mod lock;
mod small_file;
#[doc(hidden)]
pub mod supervise;
pub mod wait;

pub use error::Error;
pub use lease::{Lease, LeaseId, Resource};
pub use lock::{Guard, Lock};
pub use wait::{Order, Retry, Wait};

/// Opens a backend from its URL (`file:///var/lib/lockrun`, `redis://host:6379/0`, ...), with
/// no extra settings.
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn backend::Backend>, Error> {
    let url = backend::BackendUrl::parse(url)?;
    Ok(backend::open(&url, &backend::Settings::default()).await?)
}

/// Opens the backend the lockrun configuration (the same files, environment variables and
/// precedence as the CLI) chooses for `resource`, with the rest of its plan (principal, TTLs,
/// wait, order). [`Lock::configured`] applies the plan too.
pub async fn open_configured(
    resource: &str,
) -> Result<(std::sync::Arc<dyn backend::Backend>, config::Plan), Error> {
    let flags = config::Flags::default();
    let cfg = config::Config::load(&flags, &config::process_env)?;
    let plan = cfg.plan(&Resource::new(resource)?, &flags, &config::process_env)?;
    let backend = backend::open(&plan.backend, &plan.settings).await?;
    Ok((backend, plan))
}
