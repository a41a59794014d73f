//! One file per verb, plus what they share: turning failures into one stderr line and an exit
//! code, logging, and resolving a resource's plan and backend.

use std::ffi::OsString;
use std::io::Write;
use std::sync::Arc;

use clap::Parser;

use crate::backend::{self, Backend};
use crate::cli::{Cli, Global, Verb, WaitArgs};
use crate::config::{self, Config, Flags, Plan};
use crate::exit::Exit;
use crate::lease::{InvalidInput, Resource};
use crate::wait::{Order, Wait};

mod acquire;
mod current;
mod doctor;
mod events;
mod init;
mod is_held;
mod list;
mod release;
mod renew;
mod run;
mod status;

/// Why a verb did not succeed: the exit code and the one line that explains it.
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
    /// Outcomes (busy, not held) are silenced by `-q`; errors never are.
    pub outcome: bool,
}

impl Failure {
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Failure {
            exit,
            message: message.into(),
            outcome: false,
        }
    }

    /// A non-zero outcome that is not an error (busy, not held).
    pub fn outcome(exit: Exit, message: impl Into<String>) -> Self {
        Failure {
            exit,
            message: message.into(),
            outcome: true,
        }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Failure::new(Exit::Usage, message)
    }
}

impl From<backend::Error> for Failure {
    fn from(e: backend::Error) -> Self {
        Failure::new(e.exit(), e.to_string())
    }
}

/// The failure of a `renew` or `release` whose request may have reached the store and been
/// applied there, its answer lost or late (not on the local file backend, whose failed step
/// was not applied, nor when nothing was sent): the line says so, and how to look.
pub(super) fn unsettled(
    e: backend::Error,
    backend: &dyn backend::Backend,
    done: &str,
    resource: &crate::lease::Resource,
) -> Failure {
    let unavailable = matches!(e, backend::Error::Unavailable(_));
    let local = backend.capabilities().local;
    let mut f = Failure::from(e);
    if unavailable && !local {
        f.message += &format!(
            "; it may have been {done} or not: lockrun current {} (with this command's backend options) shows the holder",
            crate::wait::resource_word(resource)
        );
    } else if unavailable {
        // A local store's step that failed changed nothing (a full disk, a stalled step).
        f.message += &format!("; it was not {done}");
    }
    f
}

impl From<config::Error> for Failure {
    fn from(e: config::Error) -> Self {
        Failure::new(e.exit(), e.to_string())
    }
}

impl From<crate::Error> for Failure {
    fn from(e: crate::Error) -> Self {
        match e {
            crate::Error::Busy(_) => Failure::outcome(e.exit(), e.to_string()),
            _ => Failure::new(e.exit(), e.to_string()),
        }
    }
}

impl From<InvalidInput> for Failure {
    fn from(e: InvalidInput) -> Self {
        Failure::usage(e.0)
    }
}

/// Writes `text` and a newline to stdout, at once. A reader that has gone away (`| head`) is
/// not lockrun's failure and is passed over; any other write error is one (`> /dev/full`).
pub(crate) fn out(text: impl std::fmt::Display) -> Result<(), Failure> {
    match write_out(format_args!("{text}\n")) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Failure::new(
            Exit::Internal,
            format!("cannot write to stdout: {e}"),
        )),
        _ => Ok(()),
    }
}

/// Whether stdout was closed when lockrun started (Rust's runtime then put /dev/null there).
pub(crate) fn stdout_was_closed() -> bool {
    was_closed(libc::STDOUT_FILENO)
}

/// Whether standard descriptor `fd` (0, 1 or 2) was closed when lockrun started.
pub(crate) fn was_closed(fd: std::os::fd::RawFd) -> bool {
    (0..3).contains(&fd) && STD_CLOSED.load(std::sync::atomic::Ordering::Relaxed) & (1 << fd) != 0
}

pub(crate) fn write_out(text: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    if stdout_was_closed() {
        return Err(std::io::Error::other("it was closed when lockrun started"));
    }
    let mut stdout = std::io::stdout().lock();
    stdout.write_fmt(text)?;
    stdout.flush()
}

/// Which of descriptors 0, 1 and 2 (bits 0, 1, 2) were closed when the process started (see
/// [`note_std_fds`]).
static STD_CLOSED: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Notes which standard descriptors are closed. The binary calls it from a constructor
/// (`.init_array`), before Rust's runtime reopens closed standard descriptors on /dev/null:
/// then `acquire >&-` would print its lease id nowhere and succeed, and nobody could release
/// that lease; `--events 2 2>&-` would write to /dev/null. Allocates nothing, so it is safe to
/// call before `main`.
pub fn note_std_fds() {
    let mut closed = 0;
    for fd in 0..3 {
        // SAFETY: fcntl on an integer descriptor has no memory-safety preconditions.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            closed |= 1 << fd;
        }
    }
    STD_CLOSED.store(closed, std::sync::atomic::Ordering::Relaxed);
    // Rust's runtime ignores SIGPIPE before `main`; note whether the caller had already.
    // SAFETY: sigaction with a null new action only reads the current one into `old`.
    let ignored = unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == libc::SIG_IGN
    };
    SIGPIPE_IGNORED.store(ignored, std::sync::atomic::Ordering::Relaxed);
}

static SIGPIPE_IGNORED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// What the command must get as lockrun got it (see [`note_std_fds`]).
pub(crate) fn started_with() -> crate::supervise::StartedWith {
    crate::supervise::StartedWith {
        closed_std: STD_CLOSED.load(std::sync::atomic::Ordering::Relaxed),
        sigpipe_ignored: SIGPIPE_IGNORED.load(std::sync::atomic::Ordering::Relaxed),
    }
}

/// What every verb needs: the global options and the loaded config.
pub struct Ctx {
    pub global: Global,
    pub flags: Flags,
    pub config: Config,
}

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

impl Ctx {
    /// Validates the resource name and resolves its plan.
    pub fn plan(&self, resource: &str) -> Result<(Resource, Plan), Failure> {
        let resource = Resource::new(resource)?;
        let plan = self.config.plan(&resource, &self.flags, &env)?;
        Ok((resource, plan))
    }

    /// Opens the plan's backend.
    pub async fn open(&self, plan: &Plan) -> Result<Arc<dyn Backend>, Failure> {
        Ok(backend::open(&plan.backend, &plan.settings).await?)
    }

    /// Whether progress lines and warnings may be printed.
    pub fn chatty(&self) -> bool {
        !self.global.quiet
    }
}

/// The wait policy from `-w`/`-n`, falling back to the plan's.
pub fn wait_policy(args: &WaitArgs, plan: &Plan) -> Wait {
    if args.no_wait {
        Wait::AtMost(std::time::Duration::ZERO)
    } else if let Some(w) = args.wait {
        w
    } else {
        plan.wait
    }
}

/// The order waiters are served in, from `--fair`, falling back to the plan's.
pub fn order_policy(args: &WaitArgs, plan: &Plan) -> Order {
    if args.fair || plan.fair {
        Order::Fair
    } else {
        Order::Race
    }
}

/// What the binary must do before it opens any descriptor: note which descriptors the caller
/// handed it for `--events`.
pub fn before_start(args: &[OsString]) {
    events::note_inherited(args);
}

/// Parses the command line, runs the verb, prints the one line a failure gets, and returns the
/// exit status.
pub async fn main(args: Vec<OsString>) -> Exit {
    // `lockrun init -- ./job.sh`: a resource named like a verb, taken for the verb.
    let verb_dashes = crate::cli::verb_before_dashes(&args);
    if let Some((verb, after)) = &verb_dashes {
        if crate::cli::verb_taken_for_resource(verb, after.as_deref()) {
            say!(
                "lockrun: '{verb}' is a verb, and it takes no command after --; {} (for the \
                 resource '{}', leave out the --)",
                run_named_like(verb),
                after.as_deref().unwrap_or_default()
            );
            return Exit::Usage;
        }
    }
    if let Some(word) = crate::cli::word_without_dashes(&args) {
        return not_a_verb(&word);
    }
    let args = crate::cli::split_attached_values(crate::cli::with_implied_run(args));
    let mut cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            let hints = Hints {
                verb_dashes: verb_dashes.map(|(verb, _)| verb),
                verb: crate::cli::verb_of(&args),
                asks_help: crate::cli::asks_help(&args),
                resource: crate::cli::resource_before_dashes(&args),
                args: Some(args.clone()),
            };
            return clap_exit(e, hints);
        }
    };
    if let Verb::Run(run) = &mut cli.verb {
        if let Some(option) = crate::cli::option_taken_for_command(&args, &run.command) {
            let meant = crate::cli::meant_run_option(&option)
                .map(|o| format!("did you mean '{o}'? "))
                .unwrap_or_default();
            say!(
                "lockrun: unexpected argument '{}' before the command ({meant}see 'lockrun run \
                 --help'); a command whose name starts with '-' goes after --",
                crate::lease::escape(&option)
            );
            return Exit::Usage;
        }
        if !crate::cli::resource_before_dashes(&args) {
            if let Err(message) = resource_after_dashes(run) {
                say!("lockrun: {message}");
                return Exit::Usage;
            }
        }
    }
    init_logging(&cli.global);
    crate::later::start_deferring();
    let quiet = cli.global.quiet;
    let result = dispatch(cli).await;
    crate::later::run();
    events::finish();
    let _ = std::io::stdout().flush();
    match result {
        Ok(exit) => exit,
        Err(f) => {
            // `run -E 0` skips the command quietly when the resource is busy, as `flock -E 0`
            // does: an outcome that exits 0 prints nothing.
            if !(f.outcome && (quiet || f.exit.code() == 0)) {
                say!(
                    "lockrun: {}",
                    crate::error::without_os_error(&one_line(&f.message))
                );
            }
            f.exit
        }
    }
}

/// The variables that choose the store.
const STORE_VARIABLES: &[(&str, &str)] =
    &[("LOCKRUN_BACKEND", "-b URL"), ("LOCKRUN_CONFIG", "-c FILE")];

/// Whether lockrun reads the environment variable `key` (besides its backends' own, such as
/// `PGPASSWORD`): `LOCKRUN_*`, and the directories that place its config file and lock directory.
fn ours(key: &str) -> bool {
    key.starts_with("LOCKRUN_") || ["HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME"].contains(&key)
}

async fn dispatch(cli: Cli) -> Result<Exit, Failure> {
    // One of ours that is set but not UTF-8 would read as unset, and lockrun would quietly use
    // another store, lock directory, principal or password: refuse it instead.
    for (key, value) in std::env::vars_os() {
        if let (Some(key), None) = (key.to_str(), value.to_str()) {
            if ours(key) {
                return Err(Failure::new(
                    Exit::Config,
                    format!("the environment variable {key} is not valid UTF-8"),
                ));
            }
        }
    }
    // Set to nothing (a CI secret that is missing), a variable would read as unset too: refuse
    // it, unless its flag overrides it.
    let given = [cli.global.backend.is_some(), cli.global.config.is_some()];
    for (&(key, flag), given) in STORE_VARIABLES.iter().zip(given) {
        if !given && std::env::var_os(key).is_some_and(|v| v.is_empty()) {
            return Err(Failure::new(
                Exit::Config,
                format!(
                    "the environment variable {key} is set but empty; unset it, or give {flag}"
                ),
            ));
        }
    }
    let flags = Flags {
        config: cli.global.config.clone(),
        backend: cli.global.backend.clone(),
        principal: cli.global.principal.clone(),
    };
    let config = Config::load(&flags, &env)?;
    let ctx = Ctx {
        global: cli.global,
        flags,
        config,
    };
    match cli.verb {
        Verb::Run(a) => run::run(&ctx, a).await,
        Verb::Acquire(a) => acquire::acquire(&ctx, a).await,
        Verb::Renew(a) => renew::renew(&ctx, a).await,
        Verb::Release(a) => release::release(&ctx, a).await,
        Verb::Current(a) => current::current(&ctx, a).await,
        Verb::IsHeld(a) => is_held::is_held(&ctx, a).await,
        Verb::Init(a) => init::init(&ctx, a).await,
        Verb::Doctor(a) => doctor::doctor(&ctx, a).await,
        Verb::List(a) => list::list(&ctx, a).await,
    }
}

/// How to run a command under a lease on a resource named like `verb`.
fn run_named_like(verb: &str) -> String {
    format!(
        "to run a command under a lease on a resource named '{verb}', write: lockrun run \
         {verb} -- COMMAND..."
    )
}

/// What the command line says beyond clap's error, for the hint a usage error gets.
struct Hints {
    /// The verb of a command line with a `--` after it (see [`crate::cli::verb_before_dashes`]).
    verb_dashes: Option<String>,
    /// The verb named, if any (see [`crate::cli::verb_of`]).
    verb: Option<String>,
    /// The first operand is `help`.
    asks_help: bool,
    /// Something before the first `--` names the resource (see
    /// [`crate::cli::resource_before_dashes`]).
    resource: bool,
    /// The command line clap refused.
    args: Option<Vec<OsString>>,
}

/// A word where a verb or a resource followed by `--` belongs.
fn not_a_verb(word: &str) -> Exit {
    let meant = crate::cli::meant_verb(word)
        .map(|v| format!(" (did you mean '{v}'?)"))
        .unwrap_or_default();
    say!(
        "lockrun: '{}' is not a verb{meant}; to run a command under a lease on a resource of \
         that name, put -- before the command, as in: lockrun RESOURCE -- sh -c 'a && b'",
        crate::lease::escape(word)
    );
    Exit::Usage
}

/// Help and version go to stdout with status 0; usage errors become one line and status 2.
fn clap_exit(e: clap::Error, hints: Hints) -> Exit {
    use clap::error::ErrorKind;
    match e.kind() {
        // Help, and the version of the binary, also when asked after a verb (where clap would
        // name the verb: `lockrun-acquire 0.1.0`).
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let written = if e.kind() == ErrorKind::DisplayVersion {
                write_out(format_args!("lockrun {}\n", env!("CARGO_PKG_VERSION")))
            } else {
                write_out(format_args!("{e}"))
            };
            match written {
                Err(w) if w.kind() != std::io::ErrorKind::BrokenPipe => {
                    say!(
                        "lockrun: cannot write to stdout: {}",
                        crate::error::without_os_error(&w.to_string())
                    );
                    Exit::Internal
                }
                _ => Exit::Success,
            }
        }
        ErrorKind::InvalidSubcommand => {
            let word = e
                .get(clap::error::ContextKind::InvalidSubcommand)
                .map(|v| v.to_string())
                .unwrap_or_default();
            if hints.asks_help {
                // `lockrun help -- true`, `lockrun help foo`: help takes a verb.
                let none = if word == "--" {
                    String::new()
                } else {
                    let word = crate::lease::escape(&word);
                    match crate::cli::meant_verb(&word) {
                        Some(v) => format!("'{word}' is none: did you mean '{v}'? "),
                        None => format!("'{word}' is none; "),
                    }
                };
                say!(
                    "lockrun: help takes a verb ({none}see 'lockrun --help'); to run a command \
                     under a lease on a resource named 'help', write: lockrun run help -- \
                     COMMAND..."
                );
                return Exit::Usage;
            }
            not_a_verb(&word)
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            say!(
                "lockrun: nothing to do: give a resource and a command (lockrun RESOURCE -- COMMAND...) or a verb (see 'lockrun --help')"
            );
            Exit::Usage
        }
        _ => {
            let text = e.render().to_string();
            // The message, plus its continuation lines (e.g. the missing arguments), up to the
            // first blank line; the usage and tips that follow are dropped.
            let first = text
                .lines()
                .skip_while(|l| l.trim().is_empty())
                .take_while(|l| !l.trim().is_empty())
                .map(|l| l.trim().trim_start_matches("error: "))
                .filter(|l| !l.starts_with("tip:"))
                .collect::<Vec<_>>()
                .join(" ");
            let first = if first.is_empty() {
                "invalid usage".to_owned()
            } else {
                first
            };
            // `lockrun -- cmd` (or `lockrun run -- cmd`): clap took the command for the resource.
            let no_resource = e.kind() == ErrorKind::MissingRequiredArgument
                && first.contains("<COMMAND>")
                && !hints.resource;
            if no_resource {
                say!(
                    "lockrun: no resource before --: name the resource to lock, as in: lockrun \
                     RESOURCE -- COMMAND..."
                );
                return Exit::Usage;
            }
            // clap's "a similar argument exists" tip, for a mistyped option.
            let meant = match e.get(clap::error::ContextKind::SuggestedArg) {
                Some(clap::error::ContextValue::String(arg)) => {
                    format!("did you mean '{arg}'? ")
                }
                _ => String::new(),
            };
            // flock(1) takes `-c 'shell command'`; here -c is the config file.
            let unexpected = match e.get(clap::error::ContextKind::InvalidArg) {
                Some(clap::error::ContextValue::String(arg)) => Some(arg.clone()),
                _ => None,
            };
            // (Not for a verb with a `--` after it: that names a resource, see `verb_dashes`.)
            let before_verb = match (&hints.verb, &unexpected) {
                (Some(verb), Some(arg))
                    if e.kind() == ErrorKind::UnknownArgument && hints.verb_dashes.is_none() =>
                {
                    hints
                        .args
                        .as_deref()
                        .is_some_and(|args| crate::cli::verb_option_before_verb(args, verb, arg))
                        .then(|| (verb.clone(), arg.clone()))
                }
                _ => None,
            };
            let hint = if let Some((verb, arg)) = before_verb {
                format!("{arg} is an option of {verb}: put it after the verb, as in: lockrun {verb} {arg} ...")
            } else if e.kind() == ErrorKind::MissingRequiredArgument && first.contains("<COMMAND>")
            {
                "the command goes after --, as in: lockrun RESOURCE -- sh -c 'a && b'".into()
            } else if let Some(verb) = hints.verb_dashes {
                format!("see 'lockrun {verb} --help'; or, {}", run_named_like(&verb))
            } else if let Some(verb) = hints.verb {
                format!("see 'lockrun {verb} --help'")
            } else {
                "see 'lockrun --help'".into()
            };
            say!("lockrun: {} ({meant}{hint})", first.trim());
            Exit::Usage
        }
    }
}

/// A `run` whose resource came after the first `--`: `lockrun --ttl 5m -- make install` names
/// no resource, and clap took `make` for it and would run `install`. A resource that starts
/// with `-` is written after a first `--`, with the command after a second one
/// (`lockrun run -- -x -- cmd`).
fn resource_after_dashes(run: &mut crate::cli::RunArgs) -> Result<(), String> {
    if run.command.first().is_some_and(|c| c == "--") {
        if run.command.len() == 1 {
            return Err(format!(
                "no command after the resource '{}' and its --",
                crate::lease::escape(&run.resource)
            ));
        }
        run.command.remove(0);
        return Ok(());
    }
    Err(format!(
        "no resource before --: the command's first word '{}' was taken for it; name the \
         resource first: lockrun RESOURCE -- COMMAND... (one that starts with '-': lockrun run \
         -- -RESOURCE -- COMMAND...)",
        crate::lease::escape(&run.resource)
    ))
}

/// Keeps a message to one line, with any other control character (a NUL or an escape sequence
/// from a path or a server's text) escaped, so that the line cannot rewrite the terminal.
fn one_line(s: &str) -> String {
    let line = s
        .split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    crate::lease::escape(&line)
}

fn init_logging(g: &Global) {
    use tracing_subscriber::EnvFilter;
    let default = match (g.quiet, g.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = match std::env::var("LOCKRUN_LOG") {
        Ok(f) if !f.is_empty() && g.verbose == 0 && !g.quiet => EnvFilter::try_new(f),
        // The AWS SDK logs recoverable credential-chain failures (no instance metadata off EC2)
        // as multi-line warnings; the error lockrun reports says what matters. kube logs every
        // failed request as an error of its own before lockrun reports it.
        _ => EnvFilter::try_new(format!(
            "warn,aws=error,kube_client::client::builder=off,lockrun={default}"
        )),
    }
    .unwrap_or_else(|_| EnvFilter::new("warn"));
    // A warning that cannot be written (stderr on a full disk, or a pipe whose reader is gone)
    // is dropped: by default the formatter reports its own write failure with `eprintln!`,
    // which panics on that same stderr and would end the run with the lease held.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false)
        .event_format(LineFormat)
        .try_init();
}

/// `lockrun: warning: message` — one line per event, no timestamps (cron and CI add their own).
struct LineFormat;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for LineFormat
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut w: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let level = match *event.metadata().level() {
            tracing::Level::ERROR => "error",
            tracing::Level::WARN => "warning",
            tracing::Level::INFO => "info",
            tracing::Level::DEBUG => "debug",
            tracing::Level::TRACE => "trace",
        };
        write!(w, "lockrun: {level}: ")?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_stay_on_one_line() {
        assert_eq!(one_line("a\nb\r\n c "), "a; b; c");
        assert_eq!(
            one_line("dir /tmp/\0x\u{1b}[31m"),
            "dir /tmp/\\u{0}x\\u{1b}[31m"
        );
    }
}
