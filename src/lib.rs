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
pub mod exit;
pub mod heartbeat;
pub mod lease;
pub mod lock;
pub mod supervise;
