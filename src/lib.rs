//! lockrun: mutual exclusion across processes and machines.
//!
//! `lockrun <resource> -- <cmd>...` acquires a lease on a named resource from a backend, runs the
//! command while renewing the lease, stops the command before the lease could be granted to
//! anyone else if renewal fails, and releases the lease when the command exits.
//!
//! # Module map
//!
//! | module | what it holds |
//! |---|---|
//! | [`lease`] | the model: [`lease::Resource`], [`lease::LeaseId`], [`lease::Lease`] |
//! | [`backend`] | the [`backend::Backend`] trait, capabilities, errors, open-by-URL |
//! | [`backend::file`] | the embedded default: a local lock directory |
//! | [`lock`] | the waiting policy (event wake-ups, backoff with jitter, deadlines), written once |
//! | [`heartbeat`] | the renewal loop and the local safety deadline |
//! | [`supervise`] | spawning the command, forwarding signals, stopping and reaping it |
//! | [`config`] | config file + environment + flags → one validated plan |
//! | [`cli`] / [`cmd`] | the command line and one file per verb |
//! | [`exit`] | the exit-code contract |
//! | [`duration`] | human duration strings |

pub mod backend;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod duration;
mod error;
pub mod exit;
pub mod heartbeat;
pub mod lease;
pub mod lock;
pub mod supervise;
pub mod wait;

pub use error::Error;
pub use lease::{Lease, LeaseId, Resource};
pub use lock::{Guard, Lock};
pub use wait::Wait;

/// Opens a backend from its URL (`file:///var/lock/lockrun`, `redis://host:6379/0`, ...), with
/// no extra settings.
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn backend::Backend>, Error> {
    let url = backend::BackendUrl::parse(url)?;
    Ok(backend::open(&url, &backend::Settings::default()).await?)
}

/// Opens the backend the lockrun configuration (the same files, environment variables and
/// precedence as the CLI) chooses for `resource`.
pub async fn open_configured(
    resource: &str,
) -> Result<
    (std::sync::Arc<dyn backend::Backend>, config::Plan),
    Box<dyn std::error::Error + Send + Sync>,
> {
    let flags = config::Flags::default();
    let cfg = config::Config::load(&flags, &config::process_env)?;
    let plan = cfg.plan(&Resource::new(resource)?, &flags, &config::process_env)?;
    let backend = backend::open(&plan.backend, &plan.settings).await?;
    Ok((backend, plan))
}
