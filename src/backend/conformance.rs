//! The behavioural suite every backend must pass, as async functions over [`Backend`].
//!
//! A backend's integration test builds a [`Suite`] with a random per-test prefix (every property
//! uses its own resources under it) and a factory that opens a *fresh* backend instance, as another
//! process would, then runs [`Suite::run_all`] and calls [`Report::assert_passed`]:
//!
//! ```no_run
//! # async fn demo(dir: std::path::PathBuf) {
//! use std::sync::Arc;
//! use futures_util::FutureExt;
//! use lockrun::backend::{conformance::Suite, file::File, Backend};
//! let suite = Suite::new("t-1234", move || {
//!     let dir = dir.clone();
//!     async move { File::at(&dir).map(|f| Arc::new(f) as Arc<dyn Backend>) }.boxed()
//! });
//! suite.run_all().await.assert_passed();
//! # }
//! ```
//!
//! Damaged records need backend-specific tampering, supplied with [`Suite::corrupt_with`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{join_all, BoxFuture};

use super::{Backend, Error};
use crate::lease::Resource;

/// Opens a fresh backend instance.
pub type Open = Arc<dyn Fn() -> BoxFuture<'static, Result<Arc<dyn Backend>, Error>> + Send + Sync>;
/// Damages the stored record of a resource that holds a live lease.
pub type Corrupt = Arc<dyn Fn(Resource) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// Every property, in the order of the report.
pub const PROPERTIES: &[&str] = &[
    "exclusive_acquire",
    "renew_extends_and_keeps_id",
    "wrong_or_stale_id_changes_nothing",
    "release_frees_at_once",
    "expired_lease_can_be_taken",
    "renew_after_expiry_is_lost",
    "release_frees_an_expired_lease",
    "fencing_tokens_increase",
    "fresh_instance_can_renew_check_release",
    "race_one_winner_per_round",
    "resource_names",
    "watch_fires_on_release",
    "corrupt_record_is_reported",
];

/// The result of one property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    /// Not applicable to this backend, with the reason.
    Skipped(String),
    Failed(String),
}

/// The outcomes of a run.
#[derive(Debug, Clone)]
pub struct Report {
    pub results: Vec<(&'static str, Outcome)>,
}

impl Report {
    /// The failed properties with their messages.
    pub fn failures(&self) -> Vec<(&'static str, &str)> {
        self.results
            .iter()
            .filter_map(|(n, o)| match o {
                Outcome::Failed(m) => Some((*n, m.as_str())),
                _ => None,
            })
            .collect()
    }

    /// Prints the report to stderr and panics when a property failed.
    #[allow(clippy::print_stderr)] // a test's report, in the test's output
    pub fn assert_passed(&self) {
        eprintln!("{self}");
        let failures = self.failures();
        assert!(failures.is_empty(), "conformance failures:\n{self}");
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, outcome) in &self.results {
            match outcome {
                Outcome::Passed => writeln!(f, "ok   {name}")?,
                Outcome::Skipped(why) => writeln!(f, "skip {name}: {why}")?,
                Outcome::Failed(why) => writeln!(f, "FAIL {name}: {why}")?,
            }
        }
        Ok(())
    }
}

/// The suite, configured for one backend.
#[derive(Clone)]
pub struct Suite {
    open: Open,
    prefix: String,
    corrupt: Option<Corrupt>,
    short_ttl: Duration,
    takeover_within: Duration,
    contenders: usize,
    rounds: usize,
    time_limit: Duration,
}

type Check = Result<Outcome, String>;

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

fn fail(op: &str, e: Error) -> String {
    format!("{op}: unexpected error {e:?}")
}

const LONG: Duration = Duration::from_secs(60);
const SLACK: Duration = Duration::from_secs(2);

mod lifecycle;
mod ops;
mod robustness;

impl Suite {
    /// A suite whose resources all start with `prefix` (at most 64 bytes), opening backends with
    /// `open`.
    pub fn new<F>(prefix: impl Into<String>, open: F) -> Suite
    where
        F: Fn() -> BoxFuture<'static, Result<Arc<dyn Backend>, Error>> + Send + Sync + 'static,
    {
        Suite {
            open: Arc::new(open),
            prefix: prefix.into(),
            corrupt: None,
            short_ttl: Duration::from_secs(1),
            takeover_within: Duration::from_secs(1),
            contenders: 16,
            rounds: 50,
            time_limit: Duration::from_secs(120),
        }
    }

    /// Supplies the hook that damages a stored record, enabling `corrupt_record_is_reported`.
    pub fn corrupt_with<F>(mut self, corrupt: F) -> Suite
    where
        F: Fn(Resource) -> BoxFuture<'static, Result<(), String>> + Send + Sync + 'static,
    {
        self.corrupt = Some(Arc::new(corrupt));
        self
    }

    /// The TTL of the expiry properties (default 1 s), and how long after it a new owner must be
    /// able to acquire (default 1 s; clock-free backends need a full TTL more).
    pub fn expiry(mut self, short_ttl: Duration, takeover_within: Duration) -> Suite {
        self.short_ttl = short_ttl;
        self.takeover_within = takeover_within;
        self
    }

    /// Contenders and rounds of the race (default 16 and 50).
    pub fn race(mut self, contenders: usize, rounds: usize) -> Suite {
        self.contenders = contenders;
        self.rounds = rounds;
        self
    }

    /// Runs every property concurrently (each on its own resources).
    pub async fn run_all(&self) -> Report {
        let outcomes = join_all(PROPERTIES.iter().map(|name| self.run(name))).await;
        Report {
            results: PROPERTIES.iter().copied().zip(outcomes).collect(),
        }
    }

    /// Runs one property by name.
    pub async fn run(&self, property: &str) -> Outcome {
        let check = async {
            match property {
                "exclusive_acquire" => self.exclusive_acquire().await,
                "renew_extends_and_keeps_id" => self.renew_extends().await,
                "wrong_or_stale_id_changes_nothing" => self.wrong_or_stale_id().await,
                "release_frees_at_once" => self.release_frees().await,
                "expired_lease_can_be_taken" => self.expired_can_be_taken().await,
                "renew_after_expiry_is_lost" => self.renew_after_expiry().await,
                "release_frees_an_expired_lease" => self.release_frees_expired().await,
                "fencing_tokens_increase" => self.fencing_tokens().await,
                "fresh_instance_can_renew_check_release" => self.fresh_instance().await,
                "race_one_winner_per_round" => self.race_rounds().await,
                "resource_names" => self.resource_names().await,
                "watch_fires_on_release" => self.watch_fires().await,
                "corrupt_record_is_reported" => self.corrupt_record().await,
                other => Err(format!("no property named {other:?}")),
            }
        };
        match tokio::time::timeout(self.time_limit, check).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(why)) => Outcome::Failed(why),
            Err(_) => Outcome::Failed(format!("did not finish within {:?}", self.time_limit)),
        }
    }

    async fn backend(&self) -> Result<Arc<dyn Backend>, String> {
        (self.open)()
            .await
            .map_err(|e| fail("opening the backend", e))
    }

    fn resource(&self, name: &str) -> Result<Resource, String> {
        ensure!(self.prefix.len() <= 64, "prefix longer than 64 bytes");
        Resource::new(format!("{}/{name}", self.prefix)).map_err(|e| e.to_string())
    }
}
