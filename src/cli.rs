//! The command line, as clap parses it. What the user typed, nothing more: turning it into a
//! plan is [`crate::config`]'s job.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::duration::clap_parser as duration;

const EXIT_CODES: &str = "\
Exit codes:
  N / 128+S  run: the command exited with N / was killed by signal S
             (INT, QUIT: lockrun dies of it too, so a script around it stops)
  0          the verb succeeded
  1          is-held: not held; current: nothing held;
             renew/release: this lease id does not hold the resource;
             doctor: it printed a warning
  2          usage error
  65         a stored lease record is corrupt
  69         backend unreachable or timed out; run: the lease could no longer
             be trusted when the command was to start (it was not started)
  70         internal error, or stdout cannot be written
  75         busy: not acquired (-n, or -w ran out); -E N changes it
  78         bad configuration (config file, unknown backend, bad URL)
  124        run: the lease was lost while the command ran; lockrun stopped it
  126 / 127  run: the command is not executable / not found
  The command's own status passes through, so a 75 or 124 may be its own:
  lockrun's come with a 'lockrun:' line (busy: unless -q); -E N sets busy apart.

Environment:
  LOCKRUN_CONFIG     config file (like -c)
  LOCKRUN_BACKEND    backend URL or name (like -b)
  LOCKRUN_PRINCIPAL  principal (like -p)
  LOCKRUN_LOG        log filter, e.g. debug or lockrun=trace (like -v)
  LOCKRUN_REDIS_PASSWORD, LOCKRUN_ETCD_PASSWORD, LOCKRUN_POSTGRES_PASSWORD
  (or PGPASSWORD)    the server's password when neither the URL nor the
                     backend's password_file gives one (PostgreSQL: then
                     PGPASSFILE or ~/.pgpass)
  XDG_STATE_HOME     the default lock directory is $XDG_STATE_HOME/lockrun
                     (an absolute path; else ~/.local/state/lockrun, and
                     /tmp/lockrun-UID with no HOME)
  XDG_CONFIG_HOME    the config file is looked for at -c, $LOCKRUN_CONFIG,
                     $XDG_CONFIG_HOME/lockrun/config.toml (~/.config/...),
                     then /etc/lockrun/config.toml
  The command gets LOCKRUN_RESOURCE, LOCKRUN_LEASE_ID, LOCKRUN_FENCING_TOKEN,
  LOCKRUN_PRINCIPAL and LOCKRUN_BACKEND (and LOCKRUN_CONFIG when a config file
  was read, LOCKRUN_CONFIGURED_BACKEND and LOCKRUN_CONFIGURED_PRINCIPAL when
  the config chose them: a lockrun inside then follows the config for other
  resources).

Backends (-b URL, or the name of a [backend.NAME] section of the config file):
  file:///DIR (the default), or an absolute path
  redis://[user:pass@]host:6379/0, rediss://... (TLS), redis+unix:///PATH
  postgres://user@host:5432/db?sslmode=require, postgresql://...
  etcd://host:2379[,host:2379...], etcd+https://... (TLS)
  dynamodb://TABLE?region=R&endpoint=URL
  memcached://host:11211[,host:11211...]
  kubernetes://NAMESPACE, k8s://NAMESPACE
  memcached may evict a lock under memory pressure: use memcached:// only
  where a duplicate run is harmless.

Configuration file (TOML, or a stormlock INI file; every key optional):
  [default]                 backend, principal, ttl, run_ttl, wait, fair
  [resource.\"NAME\"]         the same keys, for one resource
  [backend.NAME]            url, and the backend's own settings (README)
  Precedence: flag > environment > [resource] > [default] > built-in.";

/// Run a command while holding a lease on a named resource.
///
/// lockrun acquires a lease on RESOURCE, runs the command, renews the lease while it runs,
/// forwards signals to it, stops it before the lease could be granted to anyone else if renewal
/// fails, and releases the lease when it exits, passing on its exit status.
///
/// `lockrun RESOURCE -- COMMAND...` is short for `lockrun run RESOURCE -- COMMAND...`.
#[derive(Debug, Parser)]
#[command(
    name = "lockrun",
    // Usage lines say `lockrun` whatever the executable's file is called.
    bin_name = "lockrun",
    version,
    propagate_version = true,
    after_help = EXIT_CODES,
    override_usage = "lockrun [OPTIONS] <RESOURCE> -- <COMMAND>...\n       lockrun [OPTIONS] <VERB> [ARGS]...",
    subcommand_value_name = "VERB",
    subcommand_help_heading = "Verbs"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub verb: Verb,
}

/// Options accepted before or after the verb.
#[derive(Debug, Args)]
pub struct Global {
    /// Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then
    /// /etc/lockrun/config.toml]
    #[arg(short = 'c', long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a
    /// [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]
    #[arg(short = 'b', long, value_name = "URL|NAME", global = true)]
    pub backend: Option<String>,
    #[arg(
        short = 'p',
        long,
        value_name = "TEXT",
        global = true,
        help = "Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]"
    )]
    pub principal: Option<String>,
    /// More log output on stderr (-v info, -vv debug, -vvv trace)
    #[arg(short = 'v', long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// No progress, warnings or busy/not-held lines on stderr: only errors
    #[arg(short = 'q', long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Verb {
    /// Acquire a lease, run a command, renew while it runs, release when it exits
    #[command(override_usage = "lockrun [GLOBAL] run [OPTIONS] <RESOURCE> -- <COMMAND> [ARGS]...")]
    Run(RunArgs),
    /// Acquire a lease and print its id, for holding it across several commands
    Acquire(AcquireArgs),
    /// Extend a lease acquired earlier, keeping its id
    Renew(RenewArgs),
    /// Release a lease (never someone else's)
    Release(LeaseArgs),
    /// Show who holds a resource
    Current(CurrentArgs),
    /// Exit 0 if this lease id holds the resource, 1 if not
    IsHeld(LeaseArgs),
    /// Create what the backend needs (e.g. the PostgreSQL table); safe to run again
    Init(InitArgs),
    /// Check the configured backend end to end and warn about unsafe settings
    Doctor(DoctorArgs),
    /// List every live lease on the configured backend
    List(ListArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Output format
    #[arg(short = 'f', long, value_enum, default_value_t = ListFormat::Rows)]
    pub format: ListFormat,
    #[arg(
        value_name = "RESOURCE",
        help = "List the backend configured for this resource [default: the [default] section]"
    )]
    pub resource: Option<String>,
}

/// Output formats of `list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListFormat {
    /// A header, then one tab-separated row per lease (nothing when no lease is held)
    Rows,
    /// One JSON array of lease objects
    Json,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The run TTL to check [default: the configured run_ttl, 30s]
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub ttl: Option<Duration>,
    /// The heartbeat to check [default: TTL/3]
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub heartbeat: Option<Duration>,
    /// The kill-after grace to check [default: min(TTL/6, 10s)]
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub kill_after: Option<Duration>,
    #[arg(
        value_name = "RESOURCE",
        help = "Check the backend and settings configured for this resource [default: the [default] section]"
    )]
    pub resource: Option<String>,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Resource whose configured backend to set up (its [resource."NAME"] section decides)
    #[arg(value_name = "RESOURCE")]
    pub resource: Option<String>,
}

/// How long to wait for a busy resource.
#[derive(Debug, Args, Clone)]
pub struct WaitArgs {
    /// Wait at most this long for the lease (e.g. 30s, 10m; 0 tries once; forever) [default:
    /// wait forever]
    #[arg(short = 'w', long, value_name = "DURATION", value_parser = crate::wait::Wait::parse, conflicts_with = "no_wait")]
    pub wait: Option<crate::wait::Wait>,
    /// Try once; do not wait if the resource is busy
    #[arg(short = 'n', long)]
    pub no_wait: bool,
    /// Exit code when the lease was not acquired (run: 0 skips quietly; acquire: not 0)
    #[arg(short = 'E', long, value_name = "N", default_value_t = crate::exit::BUSY_DEFAULT)]
    pub conflict_exit_code: u8,
    /// Serve waiters first come, first served: each waits in the backend's line for the one
    /// before it (etcd only; others exit 78)
    #[arg(long)]
    pub fair: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Lease TTL; renewed every TTL/3 while the command runs [default: 30s]
    #[arg(short = 't', long, value_name = "DURATION", value_parser = duration)]
    pub ttl: Option<Duration>,
    #[command(flatten)]
    pub wait: WaitArgs,
    /// Renew this often [default: TTL/3]
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub heartbeat: Option<Duration>,
    /// Grace between TERM and KILL when lockrun stops the command [default: min(TTL/6, 10s)]
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub kill_after: Option<Duration>,
    /// Write one JSON object per line for each state change (waiting, acquired, renewed,
    /// renewal_failed, lost, child_exited, released, busy) to file descriptor FD, or to stderr with -
    #[arg(long, value_name = "FD|-")]
    pub events: Option<String>,
    /// The resource to lock (one that starts with '-' goes between two --: run -- -RES -- CMD)
    #[arg(value_name = "RESOURCE")]
    pub resource: String,
    /// The command and its arguments (executed directly, not through a shell)
    #[arg(value_name = "COMMAND", value_hint = clap::ValueHint::CommandWithArguments, required = true, num_args = 1.., trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<OsString>,
}

#[derive(Debug, Args)]
pub struct AcquireArgs {
    /// Lease TTL [default: 1h]
    #[arg(short = 't', long, value_name = "DURATION", value_parser = duration)]
    pub ttl: Option<Duration>,
    #[command(flatten)]
    pub wait: WaitArgs,
    /// Print the lease as a JSON object instead of its id
    #[arg(long)]
    pub json: bool,
    /// The resource to lock
    #[arg(value_name = "RESOURCE")]
    pub resource: String,
}

#[derive(Debug, Args)]
pub struct RenewArgs {
    /// New TTL, counted from now [default: the lease's own TTL]
    #[arg(short = 't', long, value_name = "DURATION", value_parser = duration)]
    pub ttl: Option<Duration>,
    /// Print the renewed lease as a JSON object
    #[arg(long)]
    pub json: bool,
    /// The resource the lease is on
    #[arg(value_name = "RESOURCE")]
    pub resource: String,
    /// The id printed by `lockrun acquire`
    #[arg(value_name = "LEASE_ID")]
    pub lease_id: String,
}

#[derive(Debug, Args)]
pub struct LeaseArgs {
    /// The resource the lease is on
    #[arg(value_name = "RESOURCE")]
    pub resource: String,
    /// The id printed by `lockrun acquire`
    #[arg(value_name = "LEASE_ID")]
    pub lease_id: String,
}

#[derive(Debug, Args)]
pub struct CurrentArgs {
    /// Print only the lease id (same as -f id; of the two, the last one given counts, as in
    /// stormlock)
    #[arg(long, overrides_with = "format")]
    pub id_only: bool,
    /// Output format
    #[arg(short = 'f', long, value_enum, default_value_t = Format::Rows, overrides_with = "id_only")]
    pub format: Format,
    /// The resource to look at
    #[arg(value_name = "RESOURCE")]
    pub resource: String,
}

/// Output formats of `current`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Only the lease id
    Id,
    /// One JSON object
    Json,
    /// `key: value` rows
    Rows,
    /// One tab-separated line: resource, principal, lease id, token, acquired, expires
    Oneline,
    /// The values of the rows, one per line, without their names
    Lines,
    /// A header line and a line of values, in aligned columns
    Cols,
}

/// Global options that take a value.
const GLOBAL_WITH_VALUE: &[&str] = &["-c", "--config", "-b", "--backend", "-p", "--principal"];
/// Global options without a value (and help/version).
const GLOBAL_FLAGS: &[&str] = &[
    "-q",
    "--quiet",
    "--verbose",
    "-h",
    "--help",
    "-V",
    "--version",
];

/// `run`'s options that take a value (the next argument, unless attached: `--ttl=5m`, `-w5s`).
const RUN_WITH_VALUE: &[&str] = &[
    "-t",
    "--ttl",
    "-w",
    "--wait",
    "-E",
    "--conflict-exit-code",
    "--heartbeat",
    "--kill-after",
    "--events",
];

/// `run`'s options without a value.
const RUN_FLAGS: &[&str] = &["-n", "--no-wait", "--fair"];

/// How many arguments the option `a` spans at `args[j]` in a short-form run's command line
/// (itself and its value, if it takes one). An option lockrun does not know may take a value:
/// it spans the next word too, unless that word is `--` or another option, so that a
/// mistyped option before the `--` (`lockrun res --tll 5m -- cmd`) still reaches `run`'s
/// parser, which names it, rather than making the resource a mistyped verb.
fn option_span(args: &[OsString], j: usize) -> usize {
    let a = args[j].to_string_lossy();
    let takes_value =
        |name: &str| RUN_WITH_VALUE.contains(&name) || GLOBAL_WITH_VALUE.contains(&name);
    let is_flag = |name: &str| RUN_FLAGS.contains(&name) || GLOBAL_FLAGS.contains(&name);
    let may_take_next = || {
        args.get(j + 1)
            .map(|n| n.to_string_lossy())
            .is_some_and(|n| n != "--" && !(n.starts_with('-') && n.len() > 1))
    };
    if a.contains('=') || is_flag(&a) || is_verbose_cluster(&a) {
        return 1;
    }
    if takes_value(&a) {
        return 2;
    }
    if !a.starts_with("--") {
        // A cluster of short options: a value-taking one takes the rest of the cluster, or
        // the next word when it ends the cluster.
        let shorts: Vec<String> = a.chars().skip(1).map(|c| format!("-{c}")).collect();
        if let Some(k) = shorts.iter().position(|c| takes_value(c)) {
            return if k + 1 == shorts.len() { 2 } else { 1 };
        }
        if shorts.iter().all(|c| is_flag(c) || c == "-v") {
            return 1;
        }
    }
    if may_take_next() {
        2
    } else {
        1
    }
}

/// The first argument from `from` on that is neither an option nor an option's value.
fn first_operand(args: &[OsString], from: usize) -> Option<String> {
    first_operand_at(args, from).map(|i| args[i].to_string_lossy().into_owned())
}

/// Where [`first_operand`] is.
fn first_operand_at(args: &[OsString], from: usize) -> Option<usize> {
    let mut i = from;
    while i < args.len() {
        let a = args[i].to_string_lossy();
        if a == "--" {
            return None;
        }
        if !(a.starts_with('-') && a.len() > 1) {
            return Some(i);
        }
        let takes_value = GLOBAL_WITH_VALUE.contains(&&*a) || RUN_WITH_VALUE.contains(&&*a);
        i += if takes_value { 2 } else { 1 };
    }
    None
}

/// Whether a `run` command line names its resource before its first `--`: some argument there
/// other than the verb is neither an option nor an option's value (`-w 5m`, `-w5m`, `-nw 5m`,
/// `--wait=5m`). Without one, clap took the first word after `--` for the resource.
pub fn resource_before_dashes(args: &[OsString]) -> bool {
    let Some(end) = args.iter().position(|a| a == "--") else {
        return true;
    };
    let takes_value =
        |name: &str| GLOBAL_WITH_VALUE.contains(&name) || RUN_WITH_VALUE.contains(&name);
    let mut operands = 0;
    let mut i = 1;
    while i < end {
        let a = args[i].to_string_lossy();
        i += 1;
        if a.starts_with("--") {
            if !a.contains('=') && takes_value(&a) {
                i += 1;
            }
        } else if a.starts_with('-') && a.len() > 1 {
            // A cluster of short options: the first that takes a value takes the rest of the
            // cluster, or the next argument when it ends the cluster.
            let shorts: Vec<char> = a.chars().skip(1).collect();
            if let Some(k) = shorts.iter().position(|c| takes_value(&format!("-{c}"))) {
                if k + 1 == shorts.len() {
                    i += 1;
                }
            }
        } else {
            operands += 1;
        }
    }
    // The verb, typed or implied, is the first operand.
    operands > 1
}

/// The verb of a command line that has one (other than `run`) and a `--` after it, as in
/// `lockrun init -- ./job.sh`: most likely a `lockrun RESOURCE -- COMMAND` whose resource is
/// named like a verb. Returns the verb and the word after `--`, if any.
pub fn verb_before_dashes(args: &[OsString]) -> Option<(String, Option<String>)> {
    let verb = first_operand(args, 1).filter(|w| is_verb(w) && w != "run" && w != "help")?;
    let dashes = args.iter().skip(1).position(|a| a == "--")? + 1;
    let after = args
        .get(dashes + 1)
        .map(|a| a.to_string_lossy().into_owned());
    Some((verb, after))
}

/// The verb the command line names, if any (for the help its errors point to).
pub fn verb_of(args: &[OsString]) -> Option<String> {
    first_operand(args, 1).filter(|w| is_verb(w) && w != "help")
}

/// Whether the command line's first operand is the verb `help`.
pub fn asks_help(args: &[OsString]) -> bool {
    first_operand(args, 1).is_some_and(|w| w == "help")
}

/// Whether `lockrun VERB -- WORD` is a command meant to run under a lease on a resource named
/// like the verb: `init`, `doctor` and `list` take at most a resource, and WORD is the path of
/// an executable file (`./job.sh`, `/usr/bin/backup`). Any other word is taken for the
/// resource, as a script's precautionary `-- "$RES"` means it (`/srv/data` included); more
/// words are refused by clap, with the hint.
pub fn verb_taken_for_resource(verb: &str, after: Option<&str>) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let program = |w: &str| {
        ["/", "./", "../"].iter().any(|p| w.starts_with(p))
            && std::fs::metadata(w)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    ["init", "doctor", "list"].contains(&verb) && after.is_some_and(program)
}

/// Inserts the implied `run` verb: `lockrun [GLOBAL] RESOURCE -- CMD` (the `--` is needed: a
/// mistyped or unknown verb is not run as a resource with a command) and also
/// `lockrun [GLOBAL] -n RESOURCE -- CMD` (a run option before the resource). A verb after
/// such an option (`lockrun -n release res ID`) is left to clap, which rejects the option,
/// rather than taken for a resource and the rest for a command to run.
pub fn with_implied_run(args: Vec<OsString>) -> Vec<OsString> {
    let mut i = 1;
    while i < args.len() {
        let a = args[i].to_string_lossy();
        if a == "--" {
            break;
        }
        if a.starts_with('-') && a.len() > 1 {
            let name = a.split('=').next().unwrap_or(&a);
            if GLOBAL_WITH_VALUE.contains(&name) {
                i += if a.contains('=') { 1 } else { 2 };
                continue;
            }
            // -cFILE, -bURL, -pTEXT
            if ["-c", "-b", "-p"].iter().any(|p| a.starts_with(p)) && !a.starts_with("--") {
                i += 1;
                continue;
            }
            if GLOBAL_FLAGS.contains(&name) || is_verbose_cluster(&a) {
                i += 1;
                continue;
            }
            if first_operand(&args, i).is_some_and(|w| is_verb(&w)) {
                return args;
            }
            return insert_run(args, i); // a run option before the resource
        }
        if is_verb(&a) || !dashes_follow(&args, i + 1) {
            // A verb; or a word with no `--` to say that a command follows (a mistyped verb,
            // `lockrun unlock deploy abc`, or a verb lockrun does not have): left to clap, which
            // rejects it, rather than run what follows as a command.
            return args;
        }
        return insert_run(args, i);
    }
    if i < args.len() {
        // `lockrun -- cmd`: a run without a resource; let clap say so.
        return insert_run(args, i);
    }
    args
}

/// Whether the `--` that ends a short-form `lockrun RESOURCE [OPTIONS] -- COMMAND` comes next
/// in `args` from `from`, after options only (a `--` that comes after another word belongs to
/// the command: `lockrun res echo -- x` has none). `-h` counts too, so that `lockrun res -h`
/// shows `run`'s help.
fn dashes_follow(args: &[OsString], from: usize) -> bool {
    let mut j = from;
    while let Some(word) = args.get(j) {
        let a = word.to_string_lossy();
        if a == "--" || a == "-h" || a == "--help" {
            return true;
        }
        if !a.starts_with('-') || a.len() == 1 {
            return false;
        }
        j += option_span(args, j);
    }
    false
}

/// The word that a short-form command line with a run option before it (`lockrun -n WORD
/// ...`) would take for its resource, when no `--` follows that word: a mistyped verb (`lockrun
/// -n relase res ID`) or a command without its `--`, which is refused, as it is without the
/// option, rather than run.
pub fn word_without_dashes(args: &[OsString]) -> Option<String> {
    let mut i = 1;
    let mut run_option = false;
    while i < args.len() {
        let a = args[i].to_string_lossy();
        if a == "--" {
            return None;
        }
        if !(a.starts_with('-') && a.len() > 1) {
            let refused = run_option && !is_verb(&a) && !dashes_follow(args, i + 1);
            return refused.then(|| a.into_owned());
        }
        let name = a.split('=').next().unwrap_or(&a);
        let global = GLOBAL_WITH_VALUE.contains(&name)
            || GLOBAL_FLAGS.contains(&name)
            || is_verbose_cluster(&a)
            || (["-c", "-b", "-p"].iter().any(|p| a.starts_with(p)) && !a.starts_with("--"));
        run_option |= !global;
        i += if global {
            if GLOBAL_WITH_VALUE.contains(&&*a) {
                2
            } else {
                1
            }
        } else {
            option_span(args, i)
        };
    }
    None
}

/// Splits a short option and its attached value (`-w5s`, `-E3`) that come between a run's
/// resource and its `--` into two words: clap takes such a word there for the start of the
/// command (the command's argument allows leading hyphens), and would run `-w5s`. Only when
/// nothing but options stands between the resource and the `--`, so that a command's own
/// arguments (`run res echo -w5s`) are left alone.
pub fn split_attached_values(args: Vec<OsString>) -> Vec<OsString> {
    let Some(verb) = first_operand_at(&args, 1) else {
        return args;
    };
    if args[verb] != "run" {
        return args;
    }
    // The resource: the first word after the verb that is no option or option's value.
    let mut r = verb + 1;
    while r < args.len() {
        let a = args[r].to_string_lossy();
        if a == "--" || !(a.starts_with('-') && a.len() > 1) {
            break;
        }
        r += option_span(&args, r);
    }
    if r >= args.len() || args[r] == "--" || !dashes_follow(&args, r + 1) {
        return args;
    }
    let Some(end) = args[r..].iter().position(|a| a == "--").map(|k| r + k) else {
        return args;
    };
    let mut out = Vec::with_capacity(args.len() + 2);
    for (i, word) in args.into_iter().enumerate() {
        let a = word.to_string_lossy();
        let split = i > r
            && i < end
            && !a.starts_with("--")
            && a.len() > 2
            && a.is_char_boundary(2)
            && (RUN_WITH_VALUE.contains(&&a[..2]) || GLOBAL_WITH_VALUE.contains(&&a[..2]));
        if split {
            let (name, value) = a.split_at(2);
            out.push(OsString::from(name));
            out.push(OsString::from(value));
        } else {
            out.push(word);
        }
    }
    out
}

/// The first word of a run's command when it is an option that `run` does not have, given
/// before any `--` (`lockrun run res --tll 5m -- cmd`, where clap takes `--tll` for the
/// command): the option, for the error that names it. `command` is the parsed command, which
/// ends the command line.
pub fn option_taken_for_command(args: &[OsString], command: &[OsString]) -> Option<String> {
    let first = command.first()?.to_string_lossy();
    // `--` first: `run -- -RES -- CMD`, whose second `--` clap leaves in the command.
    if !(first.starts_with('-') && first.len() > 1) || first == "--" || command.len() >= args.len()
    {
        return None;
    }
    let start = args.len() - command.len();
    if args[start..] != *command || args[start - 1] == "--" {
        return None;
    }
    Some(first.into_owned())
}

/// The option of `run` (or a global one) that `word` is a typo of, if any.
pub fn meant_run_option(word: &str) -> Option<String> {
    use clap::CommandFactory;
    let name = word.split('=').next().unwrap_or(word);
    let mut cmd = Cli::command();
    cmd.build();
    let run = cmd.find_subcommand("run")?;
    let longs: Vec<String> = run
        .get_arguments()
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .collect();
    longs
        .into_iter()
        .map(|l| (edit_distance(name, &l), l))
        .filter(|(d, _)| *d > 0 && *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, l)| l)
}

/// Whether `option` (as clap names an unexpected argument: `-w`, `--wait`, `--wait=5s`), written
/// before `verb` on the command line, is one of that verb's own options: `lockrun -w 1s acquire
/// res` means `lockrun acquire -w 1s res`, and clap's message sends the user to a help that lists
/// the option.
pub fn verb_option_before_verb(args: &[OsString], verb: &str, option: &str) -> bool {
    use clap::CommandFactory;
    let Some(verb_at) = first_operand_at(args, 1) else {
        return false;
    };
    let name = option.split('=').next().unwrap_or(option);
    let before = args[1..verb_at].iter().any(|a| {
        let a = a.to_string_lossy();
        a == name || a.starts_with(&format!("{name}="))
    });
    if !before {
        return false;
    }
    let mut cmd = Cli::command();
    cmd.build();
    let Some(sub) = cmd.find_subcommand(verb) else {
        return false;
    };
    let known = sub.get_arguments().any(|a| {
        a.get_long().is_some_and(|l| name == format!("--{l}"))
            || a.get_short().is_some_and(|c| name == format!("-{c}"))
            || a.get_all_aliases()
                .is_some_and(|al| al.iter().any(|l| name == format!("--{l}")))
    });
    known
}

/// The verbs, as clap names them (`help` is clap's own). A list rather than a look at
/// `Cli::command()`, which builds every verb's arguments and costs a short run as much CPU as
/// parsing the command line does; test `verb_names_match_clap` keeps the two the same.
const VERBS: &[&str] = &[
    "run", "acquire", "renew", "release", "current", "is-held", "init", "doctor", "list", "help",
];

/// Whether `word` names a verb.
fn is_verb(word: &str) -> bool {
    VERBS.contains(&word)
}

/// The verb that `word` is a typo of, if it is one: one edit away from it (two from a verb of
/// more than four letters).
pub fn meant_verb(word: &str) -> Option<&'static str> {
    VERBS.iter().copied().find(|v| {
        let d = edit_distance(word, v);
        d > 0 && d <= if v.len() > 4 { 2 } else { 1 }
    })
}

/// Levenshtein distance, by characters.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (prev + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

fn is_verbose_cluster(a: &str) -> bool {
    a.len() > 1 && a.starts_with('-') && !a.starts_with("--") && a[1..].chars().all(|c| c == 'v')
}

fn insert_run(mut args: Vec<OsString>, at: usize) -> Vec<OsString> {
    args.insert(at, "run".into());
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn mistyped_verbs() {
        assert_eq!(edit_distance("curent", "current"), 1);
        assert_eq!(edit_distance("relase", "release"), 1);
        assert_eq!(edit_distance("", "run"), 3);
        assert_eq!(meant_verb("curent"), Some("current"));
        assert_eq!(meant_verb("aquire"), Some("acquire"));
        assert_eq!(meant_verb("is_held"), Some("is-held"));
        assert_eq!(meant_verb("rnu"), None, "two edits from a short verb");
        assert_eq!(meant_verb("current"), None);
        assert_eq!(meant_verb("deploy"), None);
        // Without `--`, a typo is left to clap; with it, it is a resource.
        assert_eq!(
            norm(&["lockrun", "curent", "echo"]),
            ["lockrun", "curent", "echo"]
        );
        assert_eq!(
            norm(&["lockrun", "curent", "--", "echo"]),
            ["lockrun", "run", "curent", "--", "echo"]
        );
    }

    fn norm(args: &[&str]) -> Vec<String> {
        with_implied_run(args.iter().map(OsString::from).collect())
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect()
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn verb_names_match_clap() {
        let mut clap: Vec<String> = Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_owned())
            .collect();
        clap.push("help".into());
        clap.sort();
        let mut ours: Vec<String> = VERBS.iter().map(|v| v.to_string()).collect();
        ours.sort();
        assert_eq!(ours, clap);
    }

    /// The options [`resource_before_dashes`] and [`with_implied_run`] know to take a value
    /// are exactly `run`'s and the global ones that do.
    #[test]
    fn options_with_values_match_clap() {
        let mut cmd = Cli::command();
        cmd.build();
        let run = cmd.find_subcommand("run").unwrap();
        let mut clap: Vec<String> = run
            .get_arguments()
            .filter(|a| !a.is_positional() && a.get_action().takes_values())
            .flat_map(|a| {
                let short = a.get_short().map(|c| format!("-{c}"));
                let long = a.get_long().map(|l| format!("--{l}"));
                short.into_iter().chain(long)
            })
            .collect();
        clap.sort();
        let mut ours: Vec<String> = GLOBAL_WITH_VALUE
            .iter()
            .chain(RUN_WITH_VALUE)
            .map(|s| s.to_string())
            .collect();
        ours.sort();
        assert_eq!(ours, clap);
    }

    #[test]
    fn resource_before_the_dashes() {
        let yes = |a: &[&str]| {
            let args: Vec<OsString> = a.iter().map(OsString::from).collect();
            resource_before_dashes(&args)
        };
        assert!(yes(&["lockrun", "run", "res", "--", "cmd"]));
        assert!(yes(&["lockrun", "run", "run", "--", "cmd"]));
        assert!(yes(&["lockrun", "-p", "make", "run", "res", "--", "make"]));
        assert!(yes(&["lockrun", "run", "-nw", "5m", "res", "--", "cmd"]));
        assert!(yes(&["lockrun", "run", "-w5m", "res", "--", "cmd"]));
        assert!(yes(&["lockrun", "run", "--wait=5m", "res", "--", "cmd"]));
        assert!(yes(&["lockrun", "-cFILE", "run", "res", "--", "cmd"]));
        assert!(!yes(&["lockrun", "-p", "make", "run", "--", "make", "x"]));
        assert!(!yes(&["lockrun", "run", "-E", "3", "--", "3", "x"]));
        assert!(!yes(&["lockrun", "-p", "run", "run", "--", "run", "x"]));
        assert!(!yes(&["lockrun", "run", "--ttl", "5m", "--", "5m", "x"]));
        assert!(!yes(&[
            "lockrun", "-b", "name", "run", "-nw", "5m", "--", "name", "x"
        ]));
        assert!(!yes(&["lockrun", "run", "--", "cmd", "x"]));
    }

    #[test]
    fn implied_run() {
        assert_eq!(norm(&["lockrun", "init"]), ["lockrun", "init"]);
        assert_eq!(
            norm(&["lockrun", "res", "--", "true"]),
            ["lockrun", "run", "res", "--", "true"]
        );
        assert_eq!(
            norm(&["lockrun", "-b", "file:///x", "res", "--", "true"]),
            ["lockrun", "-b", "file:///x", "run", "res", "--", "true"]
        );
        assert_eq!(
            norm(&["lockrun", "-vv", "-q", "res", "--", "true"]),
            ["lockrun", "-vv", "-q", "run", "res", "--", "true"]
        );
        assert_eq!(
            norm(&["lockrun", "--config=x", "res", "--", "true"]),
            ["lockrun", "--config=x", "run", "res", "--", "true"]
        );
        assert_eq!(
            norm(&["lockrun", "-cx", "res", "--", "true"]),
            ["lockrun", "-cx", "run", "res", "--", "true"]
        );
        // Without `--`, a word that is not a verb is not taken for a resource, and what follows
        // is not run: `lockrun unlock deploy abc` is a mistake, which clap then reports.
        for line in [
            &["lockrun", "-vv", "-q", "res", "true"][..],
            &["lockrun", "unlock", "deploy", "abc"],
            &["lockrun", "acqire", "res"],
            // A `--` after another word is the command's.
            &["lockrun", "res", "echo", "--", "hi"],
            &["lockrun", "relase", "res", "echo", "--", "x"],
        ] {
            assert_eq!(norm(line), line);
        }
        assert_eq!(
            norm(&["lockrun", "res", "--ttl", "5m", "-n", "--", "true"]),
            ["lockrun", "run", "res", "--ttl", "5m", "-n", "--", "true"]
        );
        assert_eq!(
            norm(&["lockrun", "res", "-h"]),
            ["lockrun", "run", "res", "-h"]
        );
        assert_eq!(
            norm(&["lockrun", "-n", "res", "--", "true"]),
            ["lockrun", "run", "-n", "res", "--", "true"]
        );
        assert_eq!(
            norm(&["lockrun", "acquire", "res"]),
            ["lockrun", "acquire", "res"]
        );
        assert_eq!(
            norm(&["lockrun", "run", "acquire", "--", "true"]),
            ["lockrun", "run", "acquire", "--", "true"]
        );
        assert_eq!(
            norm(&["lockrun", "-b", "pg", "init"]),
            ["lockrun", "-b", "pg", "init"]
        );
        // A run option before a verb: not a run of a resource named like the verb.
        for args in [
            &["lockrun", "-n", "current", "res"][..],
            &["lockrun", "--ttl", "5m", "release", "res", "ID"],
            &[
                "lockrun",
                "-w",
                "1s",
                "-b",
                "file:///x",
                "is-held",
                "res",
                "ID",
            ],
            &["lockrun", "--ttl=5m", "-q", "acquire", "res"],
        ] {
            assert_eq!(norm(args), args, "{args:?}");
            assert!(Cli::try_parse_from(norm(args)).is_err(), "{args:?}");
        }
        assert_eq!(
            norm(&["lockrun", "-w", "1s", "res", "--", "current"]),
            ["lockrun", "run", "-w", "1s", "res", "--", "current"]
        );
        assert_eq!(norm(&["lockrun", "--help"]), ["lockrun", "--help"]);
        assert_eq!(norm(&["lockrun"]), ["lockrun"]);
        assert_eq!(
            norm(&["lockrun", "--", "true"]),
            ["lockrun", "run", "--", "true"]
        );
    }

    #[test]
    fn parses_run() {
        let cli =
            Cli::try_parse_from(norm(&["lockrun", "res", "--", "sh", "-c", "exit 3"])).unwrap();
        let Verb::Run(r) = cli.verb else { panic!() };
        assert_eq!(r.resource, "res");
        assert_eq!(r.command, ["sh", "-c", "exit 3"]);
        let cli = Cli::try_parse_from(norm(&["lockrun", "run", "res", "ls", "-l"])).unwrap();
        let Verb::Run(r) = cli.verb else { panic!() };
        assert_eq!(r.command, ["ls", "-l"]);
        assert!(Cli::try_parse_from(norm(&["lockrun", "res", "ls", "-l"])).is_err());
    }

    #[test]
    fn globals_after_the_verb() {
        let cli = Cli::try_parse_from(["lockrun", "acquire", "res", "-b", "file:///x", "-p", "me"])
            .unwrap();
        assert_eq!(cli.global.backend.as_deref(), Some("file:///x"));
        assert_eq!(cli.global.principal.as_deref(), Some("me"));
    }

    #[test]
    fn wait_and_no_wait_conflict() {
        assert!(Cli::try_parse_from(["lockrun", "acquire", "-n", "-w", "5s", "res"]).is_err());
        assert!(Cli::try_parse_from(["lockrun", "acquire", "-w", "5x", "res"]).is_err());
        assert!(Cli::try_parse_from(["lockrun", "acquire", "-E", "256", "res"]).is_err());
    }
}
