//! Config file + environment + flags → one validated [`Plan`] for one resource.
//!
//! ```toml
//! [default]
//! backend = "shared"      # a URL, the name of a [backend.<name>] section, or "file"
//! principal = "ci@build"  # who holds the lease, shown to waiters (default: user@host)
//! ttl = "1h"              # acquire default
//! run_ttl = "30s"         # run default
//! wait = "forever"        # or a duration: wait at most this long; 0 = try once
//! fair = false            # true: waiters are served first come, first served (etcd only)
//!
//! [resource."deploy-prod"]
//! wait = "10m"
//!
//! [backend.shared]
//! url = "redis://redis.internal:6379/0"
//! # any other key is backend-specific, passed through as backend::Settings
//! ```
//!
//! The file is the first of: `-c FILE`, `$LOCKRUN_CONFIG`, `$XDG_CONFIG_HOME/lockrun/config.toml`
//! (or `~/.config/lockrun/config.toml`), [`SYSTEM_CONFIG`]. Finding none is fine; a file named
//! explicitly that cannot be read is an error.
//!
//! A stormlock INI file (`*.cfg`, `*.ini`, or INI text that is not TOML) is read into the same
//! tables by the `stormlock` module (`src/config/stormlock.rs`), so that everything after parsing
//! is shared.
//!
//! Precedence, highest first: flag, environment (`LOCKRUN_BACKEND`, `LOCKRUN_PRINCIPAL`),
//! `[resource."<name>"]`, `[default]`, built-in. The whole file is validated when it is loaded,
//! so a typo is reported even in a section that does not apply to this resource. Every error is
//! one line naming the file, the line and the key.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};

use crate::backend::{BackendUrl, Settings};
use crate::exit::Exit;
use crate::lease::{self, Resource};

/// The system-wide config file, read when no other is found.
pub const SYSTEM_CONFIG: &str = "/etc/lockrun/config.toml";
/// The built-in TTL for `acquire`.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60 * 60);
/// The built-in TTL for `run` (renewed while the command runs).
pub const DEFAULT_RUN_TTL: Duration = Duration::from_secs(30);
/// Longest principal, in bytes.
pub const MAX_PRINCIPAL_LEN: usize = 255;

/// The keys of `[default]` and `[resource."<name>"]`.
const SECTION_KEYS: &[&str] = &["backend", "principal", "ttl", "run_ttl", "wait", "fair"];
/// The `backend` value that means the built-in file backend.
const FILE_BACKEND: &str = "file";

/// The command-line flags that take part in configuration.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    /// `-c FILE`.
    pub config: Option<PathBuf>,
    /// `--backend`: a URL, a `[backend.<name>]` name, or `file`.
    pub backend: Option<String>,
    /// `--principal`.
    pub principal: Option<String>,
}

/// Reads the real process environment; pass it where an environment lookup is wanted.
pub fn process_env(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

pub use crate::wait::Wait;

/// Everything needed to work on one resource, validated.
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct Plan {
    pub backend: BackendUrl,
    /// The `[backend.<name>]` section the backend came from, if any.
    pub backend_name: Option<String>,
    /// Backend-specific keys (empty unless the backend came from a `[backend.<name>]` section).
    pub settings: Settings,
    pub principal: String,
    /// Whether the backend and the principal came from the configuration (the file or the
    /// built-in defaults) rather than a flag or the environment: a `lockrun run` tells its
    /// command so (`LOCKRUN_CONFIGURED_BACKEND`, `LOCKRUN_CONFIGURED_PRINCIPAL`), and a lockrun
    /// inside the command then takes them from the configuration for other resources.
    pub backend_configured: bool,
    pub principal_configured: bool,
    /// The acquire default.
    pub ttl: Duration,
    /// The run default.
    pub run_ttl: Duration,
    pub wait: Wait,
    /// Serve waiters first come, first served (`fair = true`, `--fair`).
    pub fair: bool,
}

/// Settings may hold secrets: show only where they came from.
impl fmt::Debug for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plan")
            .field("backend", &self.backend)
            .field("backend_name", &self.backend_name)
            .field("settings", &self.settings.origin)
            .field("principal", &self.principal)
            .field("ttl", &self.ttl)
            .field("run_ttl", &self.run_ttl)
            .field("wait", &self.wait)
            .field("fair", &self.fair)
            .finish()
    }
}

/// A configuration error (exit status 78). `Display` is always one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A config file that was named explicitly, or that exists, could not be read.
    #[error("{}: cannot read config file{}: {reason}", show(.path), by_whom(*.named_by))]
    Read {
        path: PathBuf,
        /// `-c` or `LOCKRUN_CONFIG` when the file was named explicitly.
        named_by: Option<&'static str>,
        reason: String,
    },
    /// The file is not TOML, or a key in it is unknown, of the wrong type or invalid.
    #[error("{}{}: {message}", show(.path), .line.map(|l| format!(":{l}")).unwrap_or_default())]
    File {
        path: PathBuf,
        /// 1-based.
        line: Option<usize>,
        message: String,
    },
    /// A `[backend.<name>]` section's backend-specific keys are wrong (the message names the
    /// file, line and section).
    #[error("{0}")]
    Backend(String),
    /// A value from a flag or the environment is invalid.
    #[error("{origin}: {message}")]
    Value {
        /// `--backend`, `LOCKRUN_PRINCIPAL`, ...
        origin: &'static str,
        message: String,
    },
}

impl Error {
    /// Configuration errors exit with `EX_CONFIG`, but for a malformed `--principal`, which is a
    /// usage error like any other bad flag value. (A bad `--backend` is a bad URL or an unknown
    /// backend name: configuration, whichever way it was given.)
    pub fn exit(&self) -> Exit {
        match self {
            Error::Value {
                origin: "--principal",
                ..
            } => Exit::Usage,
            _ => Exit::Config,
        }
    }
}

fn show(path: &Path) -> String {
    lease::escape(&path.display().to_string())
}

fn by_whom(by: Option<&'static str>) -> String {
    by.map(|b| format!(" (named by {b})")).unwrap_or_default()
}

fn value_error(origin: &'static str) -> impl Fn(String) -> Error {
    move |message| Error::Value {
        origin,
        message: lease::escape(&message),
    }
}

/// A parsed, validated config file (or the built-in defaults when there is none).
#[derive(Clone, Default)]
pub struct Config {
    path: Option<PathBuf>,
    default: Section,
    resources: BTreeMap<String, Section>,
    backends: BTreeMap<String, Backend>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("path", &self.path)
            .field("resources", &self.resources.keys().collect::<Vec<_>>())
            .field("backends", &self.backends.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// `[default]` or `[resource."<name>"]`.
#[derive(Debug, Clone, Default)]
struct Section {
    backend: Option<Choice>,
    principal: Option<String>,
    ttl: Option<Duration>,
    run_ttl: Option<Duration>,
    wait: Option<Wait>,
    fair: Option<bool>,
}

/// A resolved `backend` value.
#[derive(Debug, Clone)]
enum Choice {
    File,
    Url(BackendUrl),
    Named(String),
}

/// A `[backend.<name>]` section.
#[derive(Clone)]
struct Backend {
    url: BackendUrl,
    settings: Settings,
}

impl Config {
    /// Finds, reads and validates the config file (see the module docs for the search order).
    pub fn load(flags: &Flags, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, Error> {
        Self::search(flags, env, Path::new(SYSTEM_CONFIG))
    }

    fn search(
        flags: &Flags,
        env: &dyn Fn(&str) -> Option<String>,
        system: &Path,
    ) -> Result<Config, Error> {
        if let Some(path) = &flags.config {
            return Self::read(path, Some("-c"));
        }
        if let Some(path) = non_empty(env("LOCKRUN_CONFIG")) {
            return Self::read(Path::new(&path), Some("LOCKRUN_CONFIG"));
        }
        for path in user_config_path(env).into_iter().chain([system.to_owned()]) {
            match crate::small_file::read_text(&path) {
                Ok(text) => return Config::parse(&text, &path),
                // A link to a missing file is somebody's configuration gone astray (a config
                // tool's link to a file not deployed on this host): left unread, every host
                // would lock on its own disk instead of the shared store, and all succeed.
                Err(e) if is_absent(&e) && !is_dangling_link(&path) => continue,
                Err(e) => return Err(read_error(&path, None, &e)),
            }
        }
        Ok(Config::default())
    }

    fn read(path: &Path, named_by: Option<&'static str>) -> Result<Config, Error> {
        let text =
            crate::small_file::read_text(path).map_err(|e| read_error(path, named_by, &e))?;
        Config::parse(&text, path)
    }

    /// Parses and validates config text; `path` is used in messages and by [`Config::path`].
    ///
    /// The text is lockrun's TOML, or a stormlock INI file: `src/config/stormlock.rs` says which.
    pub fn parse(text: &str, path: &Path) -> Result<Config, Error> {
        if stormlock::by_name(path) {
            return stormlock::parse(text, path, None);
        }
        let table: toml::Table = match toml::from_str(text) {
            Ok(table) => table,
            Err(e) => {
                let line = e.span().map(|s| line_of(text, s.start));
                let message = format!("invalid TOML: {}", one_line(e.message()));
                if stormlock::sniff(text) {
                    return stormlock::parse(text, path, Some((line, &message)));
                }
                return Err(Error::File {
                    path: path.to_owned(),
                    line,
                    message,
                });
            }
        };
        let spans = Spans::read(text, &table);
        Parser {
            path,
            text,
            format: Format::Toml,
        }
        .config(&table, &spans)
    }

    /// The file this configuration came from; `None` for the built-in defaults.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Combines flags, environment, this file and the built-in defaults for `resource`.
    pub fn plan(
        &self,
        resource: &Resource,
        flags: &Flags,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Plan, Error> {
        let specific = self.resources.get(resource.as_str());
        let layers = [specific, Some(&self.default)];
        // Inside an outer `lockrun run`'s command, LOCKRUN_BACKEND and LOCKRUN_PRINCIPAL are what
        // the outer lockrun used for its own lease. When it took them from its configuration
        // (it says so, with the same value, in LOCKRUN_CONFIGURED_*), they hold for that
        // resource only: another resource gets what the configuration gives it, as it would
        // outside, so that one resource never maps to two stores. A value the command set
        // itself (not the one the outer lockrun configured) is honoured as usual.
        let outer = |var: &str| {
            let marker = var.replacen("LOCKRUN_", "LOCKRUN_CONFIGURED_", 1);
            let value = non_empty(env(var));
            value.is_some() && value == non_empty(env(&marker))
        };
        let for_outer_lease =
            non_empty(env("LOCKRUN_RESOURCE")).as_deref() == Some(resource.as_str());
        let env = |key: &str| match key {
            "LOCKRUN_BACKEND" | "LOCKRUN_PRINCIPAL" if !for_outer_lease && outer(key) => None,
            _ => env(key),
        };
        let configured = |flag: &Option<String>, var: &str| {
            flag.is_none() && (non_empty(env(var)).is_none() || outer(var))
        };
        let backend_configured = configured(&flags.backend, "LOCKRUN_BACKEND");
        let principal_configured = configured(&flags.principal, "LOCKRUN_PRINCIPAL");
        let (backend, backend_name, settings) = self.backend(&layers, flags, &env)?;
        let principal = principal(&layers, flags, &env)?;
        Ok(Plan {
            backend,
            backend_name,
            backend_configured,
            principal_configured,
            settings,
            principal,
            ttl: pick(&layers, |s| s.ttl.as_ref())
                .copied()
                .unwrap_or(DEFAULT_TTL),
            run_ttl: pick(&layers, |s| s.run_ttl.as_ref())
                .copied()
                .unwrap_or(DEFAULT_RUN_TTL),
            wait: pick(&layers, |s| s.wait.as_ref())
                .copied()
                .unwrap_or(Wait::Forever),
            fair: pick(&layers, |s| s.fair.as_ref()).copied().unwrap_or(false),
        })
    }

    /// The backend URL, its section name and its settings.
    fn backend(
        &self,
        layers: &[Option<&Section>],
        flags: &Flags,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(BackendUrl, Option<String>, Settings), Error> {
        // `lockrun run` hides a URL's password from its command (`***`): a lockrun inside it,
        // given that URL (`LOCKRUN_BACKEND`, or `-b "$LOCKRUN_BACKEND"`), takes the password
        // from the backend's other sources.
        let unhidden = |c: Choice| match c {
            Choice::Url(url) => Choice::Url(url.without_hidden_secrets().0),
            other => other,
        };
        let choice = if let Some(b) = &flags.backend {
            unhidden(self.resolve(b).map_err(value_error("--backend"))?)
        } else if let Some(b) = non_empty(env("LOCKRUN_BACKEND")) {
            unhidden(self.resolve(&b).map_err(value_error("LOCKRUN_BACKEND"))?)
        } else {
            pick(layers, |s| s.backend.as_ref())
                .cloned()
                .unwrap_or(Choice::File)
        };
        let no_settings = |origin: &str| Settings::new(origin, toml::Table::new());
        match choice {
            Choice::File => {
                let dir = default_file_dir(env);
                let url = dir
                    .to_str()
                    .ok_or_else(|| "the state directory is not UTF-8".to_owned())
                    .and_then(|d| BackendUrl::parse(d).map_err(|e| e.to_string()))
                    .map_err(value_error("built-in file backend"))?;
                Ok((url, None, no_settings("built-in file backend")))
            }
            Choice::Url(url) => Ok((url, None, no_settings("backend URL"))),
            Choice::Named(name) => {
                // Names are checked when they are resolved; this is only a safety net.
                let b = self
                    .backends
                    .get(&name)
                    .ok_or_else(|| value_error("backend")(format!("unknown backend '{name}'")))?;
                Ok((b.url.clone(), Some(name), b.settings.clone()))
            }
        }
    }

    /// Resolves a `--backend` or `LOCKRUN_BACKEND` value against this file.
    fn resolve(&self, text: &str) -> Result<Choice, String> {
        resolve(text, &self.backends).map_err(|e| match (&self.path, e) {
            (Some(path), Unresolved::Name(name)) => {
                unknown_backend(&name, &format!("in {}", path.display()))
            }
            (None, Unresolved::Name(name)) => {
                unknown_backend(&name, "because no config file was found")
            }
            (_, Unresolved::Other(msg)) => msg,
        })
    }
}

/// The principal: flag, environment, file, then `user@host`.
fn principal(
    layers: &[Option<&Section>],
    flags: &Flags,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Error> {
    if let Some(p) = &flags.principal {
        check_principal(p).map_err(value_error("--principal"))
    } else if let Some(p) = non_empty(env("LOCKRUN_PRINCIPAL")) {
        check_principal(&p).map_err(value_error("LOCKRUN_PRINCIPAL"))
    } else if let Some(p) = pick(layers, |s| s.principal.as_ref()) {
        Ok(p.clone())
    } else {
        check_principal(&lease::default_principal()).map_err(|e| {
            value_error("default principal")(format!("{e}; set --principal or LOCKRUN_PRINCIPAL"))
        })
    }
}

/// The first layer (resource section, then `[default]`) that sets a value.
fn pick<'a, T>(
    layers: &[Option<&'a Section>],
    get: impl Fn(&'a Section) -> Option<&'a T>,
) -> Option<&'a T> {
    layers.iter().flatten().find_map(|s| get(s))
}

/// The per-user config file: `$XDG_CONFIG_HOME/lockrun/config.toml` when that is absolute,
/// else `$HOME/.config/lockrun/config.toml`; `None` when neither is usable.
pub fn user_config_path(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(xdg) = absolute(env("XDG_CONFIG_HOME")) {
        return Some(xdg.join("lockrun/config.toml"));
    }
    absolute(env("HOME")).map(|home| home.join(".config/lockrun/config.toml"))
}

/// The lock directory of the built-in file backend: `$XDG_STATE_HOME/lockrun` (when absolute),
/// else `$HOME/.local/state/lockrun`, else `/tmp/lockrun-<uid>`.
pub fn default_file_dir(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    state_dir(env)
        .unwrap_or_else(|| PathBuf::from(format!("/tmp/lockrun-{}", nix::unistd::getuid())))
}

/// The user's lockrun state directory: `$XDG_STATE_HOME/lockrun` (when absolute), else
/// `$HOME/.local/state/lockrun`; `None` without either.
pub fn state_dir(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(state) = absolute(env("XDG_STATE_HOME")) {
        return Some(state.join("lockrun"));
    }
    absolute(env("HOME")).map(|home| home.join(".local/state/lockrun"))
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

fn absolute(value: Option<String>) -> Option<PathBuf> {
    non_empty(value)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

/// A file that is simply not there (or under something that is not a directory).
fn is_absent(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}

/// Whether `path` is a symbolic link whose target does not exist.
fn is_dangling_link(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

fn read_error(path: &Path, named_by: Option<&'static str>, e: &io::Error) -> Error {
    let mut reason = lease::escape(&crate::error::without_os_error(&e.to_string()));
    if is_absent(e) && is_dangling_link(path) {
        let target = std::fs::read_link(path)
            .map(|t| lease::escape(&t.to_string_lossy()))
            .unwrap_or_default();
        reason = format!("it is a symbolic link to {target}, which does not exist");
    }
    if path.starts_with("~") {
        // A crontab's `VAR=~/...`, or a quoted path: no shell expanded it.
        reason += " (~ is not expanded here: give the full path)";
    }
    Error::Read {
        path: path.to_owned(),
        named_by,
        reason,
    }
}

/// Checks a principal: 1..=255 bytes, no control characters.
fn check_principal(p: &str) -> Result<String, String> {
    if p.is_empty() {
        Err("principal is empty".into())
    } else if p.len() > MAX_PRINCIPAL_LEN {
        Err(format!(
            "principal is {} bytes long; the limit is {MAX_PRINCIPAL_LEN}",
            p.len()
        ))
    } else if p.chars().any(char::is_control) {
        Err(format!(
            "principal '{}' contains a control character",
            lease::escape(p)
        ))
    } else {
        Ok(p.to_owned())
    }
}

/// Why a `backend` value could not be resolved.
enum Unresolved {
    /// Not a known name (the caller says where it looked).
    Name(String),
    Other(String),
}

/// `file`, the name of a `[backend.<name>]` section, or a URL (or absolute path).
fn resolve(text: &str, backends: &BTreeMap<String, Backend>) -> Result<Choice, Unresolved> {
    let t = text.trim();
    if t.is_empty() {
        return Err(Unresolved::Other("backend is empty".into()));
    }
    if t == FILE_BACKEND {
        return Ok(Choice::File);
    }
    if backends.contains_key(t) {
        return Ok(Choice::Named(t.to_owned()));
    }
    if t.contains(':') || t.starts_with('/') {
        return BackendUrl::parse(t)
            .map(Choice::Url)
            .map_err(|e| Unresolved::Other(e.to_string()));
    }
    Err(Unresolved::Name(t.to_owned()))
}

fn unknown_backend(name: &str, looked: &str) -> String {
    // A relative path or one with `~`: a lock directory meant, given as a path.
    let what = if name.contains('/') || name.starts_with('~') || name.starts_with('.') {
        "a lock directory is given as an absolute path or file:///some/dir, with no ~"
    } else {
        "a backend is 'file', a URL such as redis://host:6379/0, or the name of a \
         [backend.<name>] section"
    };
    format!(
        "unknown backend '{name}': no [backend.{}] section {looked} ({what})",
        backend_key(name)
    )
}

/// Turns a possibly multi-line message into one line.
fn one_line(message: &str) -> String {
    let joined = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    lease::escape(&joined)
}

/// The 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// A TOML key as written in a header: bare when it can be, quoted otherwise.
fn backend_key(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        name.to_owned()
    } else {
        quoted(name)
    }
}

fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

/// "a string", "an integer", ...
use crate::backend::a_kind as kind;

fn string(value: &toml::Value) -> Result<&str, String> {
    value
        .as_str()
        .ok_or_else(|| format!("must be a string, not {}", kind(value)))
}

fn boolean(value: &toml::Value) -> Result<bool, String> {
    value
        .as_bool()
        .ok_or_else(|| format!("must be true or false, not {}", kind(value)))
}

/// A duration: a humantime string, or a number of seconds.
fn duration(value: &toml::Value) -> Result<Duration, String> {
    crate::duration::from_toml(value)
}

/// A lease TTL: a duration within [`lease::check_ttl`]'s bounds.
fn ttl(value: &toml::Value) -> Result<Duration, String> {
    let d = duration(value)?;
    if d.is_zero() {
        return Err("must be longer than zero".into());
    }
    lease::check_ttl(d).map_err(|e| e.0)?;
    Ok(d)
}

fn wait(value: &toml::Value) -> Result<Wait, String> {
    match value {
        toml::Value::String(s) => Wait::parse(s),
        other => duration(other).map(Wait::AtMost),
    }
}

/// The syntax a file was written in, which decides how sections are named in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// lockrun's own: `[resource."NAME"]`.
    Toml,
    /// stormlock's INI: `[NAME]`.
    Stormlock,
}

/// Validates one file, with its path and text for messages.
struct Parser<'a> {
    path: &'a Path,
    text: &'a str,
    format: Format,
}

impl Parser<'_> {
    fn error(&self, span: Option<Range<usize>>, message: impl AsRef<str>) -> Error {
        Error::File {
            path: self.path.to_owned(),
            line: span.map(|s| line_of(self.text, s.start)),
            message: lease::escape(message.as_ref()),
        }
    }

    fn config(&self, table: &toml::Table, spans: &Spans) -> Result<Config, Error> {
        for (key, value, span, _) in ordered(table, spans) {
            match key {
                "default" | "resource" | "backend" if !value.is_table() => {
                    return Err(self.error(
                        span,
                        format!("key '{key}' must be a [{key}] section, not {}", kind(value)),
                    ))
                }
                "default" | "resource" | "backend" => {}
                _ if value.is_table() => {
                    return Err(self.error(
                        span,
                        format!(
                            "unknown section [{}] (known: [default], [resource.\"<name>\"], \
                             [backend.<name>])",
                            backend_key(key)
                        ),
                    ))
                }
                _ => {
                    return Err(self.error(
                        span,
                        format!(
                            "unknown key '{key}' at top level (put it in [default] or in a \
                             [resource.\"<name>\"] section)"
                        ),
                    ))
                }
            }
        }
        let empty = toml::Table::new();
        let sub = |key: &str| {
            let table = table.get(key).and_then(toml::Value::as_table);
            (table.unwrap_or(&empty), spans.get(key).1)
        };

        let (t, s) = sub("backend");
        let backends = self.backends(t, s)?;
        let (t, s) = sub("default");
        let default = self.section(t, s, "[default]", &backends)?;
        let (t, s) = sub("resource");
        let resources = self.resources(t, s, &backends)?;
        Ok(Config {
            path: Some(self.path.to_owned()),
            default,
            resources,
            backends,
        })
    }

    fn resources(
        &self,
        table: &toml::Table,
        spans: &Spans,
        backends: &BTreeMap<String, Backend>,
    ) -> Result<BTreeMap<String, Section>, Error> {
        let mut resources = BTreeMap::new();
        for (name, value, span, spans) in ordered(table, spans) {
            let header = match self.format {
                Format::Toml => format!("[resource.{}]", quoted(name)),
                Format::Stormlock => format!("[{name}]"),
            };
            let Some(table) = value.as_table() else {
                return Err(self.error(
                    span,
                    format!(
                        "key '{name}' in [resource] must be a {header} section, not {}",
                        kind(value)
                    ),
                ));
            };
            if let Err(e) = Resource::new(name) {
                return Err(self.error(span, format!("{header}: invalid resource name: {e}")));
            }
            let section = self.section(table, spans, &header, backends)?;
            resources.insert(name.to_owned(), section);
        }
        Ok(resources)
    }

    fn backends(
        &self,
        table: &toml::Table,
        spans: &Spans,
    ) -> Result<BTreeMap<String, Backend>, Error> {
        let mut backends = BTreeMap::new();
        for (name, value, span, spans) in ordered(table, spans) {
            let header = format!("[backend.{}]", backend_key(name));
            let Some(table) = value.as_table() else {
                return Err(self.error(
                    span,
                    format!(
                        "key '{name}' in [backend] must be a {header} section, not {}",
                        kind(value)
                    ),
                ));
            };
            if name == FILE_BACKEND {
                return Err(self.error(
                    span,
                    format!("{header}: the name 'file' is reserved for the built-in file backend"),
                ));
            }
            let url = match table.get("url") {
                None => {
                    // A mistyped `url` (`urll`, `URL`) is named, at its line.
                    let typo = table
                        .keys()
                        .find(|k| crate::cli::edit_distance(&k.to_ascii_lowercase(), "url") <= 1);
                    return Err(match typo {
                        Some(key) => self.error(
                            spans.get(key).0,
                            format!("{header} has no 'url' key (unknown key '{key}': did you mean 'url'?)"),
                        ),
                        None => self.error(span, format!("{header} has no 'url' key")),
                    });
                }
                Some(value) => string(value)
                    .and_then(|u| BackendUrl::parse(u).map_err(|e| e.to_string()))
                    .map_err(|e| {
                        self.error(spans.get("url").0, format!("key 'url' in {header}: {e}"))
                    })?,
            };
            let mut rest = table.clone();
            rest.remove("url");
            let lines = rest
                .keys()
                .filter_map(|key| {
                    let span = spans.get(key).0?;
                    Some((key.clone(), line_of(self.text, span.start)))
                })
                .collect();
            let file = self.path.display().to_string();
            let settings =
                Settings::new(format!("{file} {header}"), rest).with_lines(&file, &header, lines);
            crate::backend::check_settings(&url, &settings)
                .map_err(|e| Error::Backend(e.to_string()))?;
            backends.insert(name.to_owned(), Backend { url, settings });
        }
        Ok(backends)
    }

    fn section(
        &self,
        table: &toml::Table,
        spans: &Spans,
        header: &str,
        backends: &BTreeMap<String, Backend>,
    ) -> Result<Section, Error> {
        let mut section = Section::default();
        for (key, value, span, _) in ordered(table, spans) {
            let fail =
                |msg: String| self.error(span.clone(), format!("key '{key}' in {header}: {msg}"));
            match key {
                "backend" => {
                    let text = string(value).map_err(fail)?;
                    let choice = resolve(text, backends).map_err(|e| match e {
                        Unresolved::Name(name) => fail(unknown_backend(&name, "in this file")),
                        Unresolved::Other(msg) => fail(msg),
                    })?;
                    section.backend = Some(choice);
                }
                "principal" => {
                    let p = string(value).and_then(check_principal).map_err(fail)?;
                    section.principal = Some(p);
                }
                "ttl" => section.ttl = Some(ttl(value).map_err(fail)?),
                "run_ttl" => {
                    let d = ttl(value).map_err(&fail)?;
                    if d < crate::heartbeat::MIN_TTL {
                        return Err(fail(format!(
                            "too short for a supervised command (at least {})",
                            crate::duration::format(crate::heartbeat::MIN_TTL)
                        )));
                    }
                    section.run_ttl = Some(d);
                }
                "wait" => section.wait = Some(wait(value).map_err(fail)?),
                "fair" => section.fair = Some(boolean(value).map_err(fail)?),
                _ => {
                    return Err(self.error(
                        span,
                        format!(
                            "unknown key '{key}' in {header} (known: {})",
                            SECTION_KEYS.join(", ")
                        ),
                    ))
                }
            }
        }
        Ok(section)
    }
}

/// The entries of `table` in the order they appear in the file, with their key spans.
fn ordered<'a>(
    table: &'a toml::Table,
    spans: &'a Spans,
) -> Vec<(&'a str, &'a toml::Value, Option<Range<usize>>, &'a Spans)> {
    let mut entries: Vec<_> = table
        .iter()
        .map(|(k, v)| {
            let (span, sub) = spans.get(k);
            (k.as_str(), v, span, sub)
        })
        .collect();
    entries.sort_by_key(|(_, _, span, _)| span.as_ref().map_or(usize::MAX, |s| s.start));
    entries
}

/// Where each key of a TOML document is, mirroring its tables.
#[derive(Debug, Default)]
struct Spans(BTreeMap<String, (Range<usize>, Spans)>);

const NO_SPANS: &Spans = &Spans(BTreeMap::new());

impl Spans {
    /// Reads key spans from `text`, already parsed into `table`. Spans only improve messages,
    /// so if they cannot be read the messages simply go without line numbers.
    fn read(text: &str, table: &toml::Table) -> Spans {
        TableSeed(table)
            .deserialize(toml::Deserializer::new(text))
            .unwrap_or_default()
    }

    fn get(&self, key: &str) -> (Option<Range<usize>>, &Spans) {
        match self.0.get(key) {
            Some((span, sub)) => (Some(span.clone()), sub),
            None => (None, NO_SPANS),
        }
    }
}

/// Deserializes the spans of a table's keys, descending only where the parsed value is a table
/// (so that datetimes and arrays are skipped rather than misread).
struct TableSeed<'a>(&'a toml::Table);

impl<'de> DeserializeSeed<'de> for TableSeed<'_> {
    type Value = Spans;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Spans, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TableSeed<'_> {
    type Value = Spans;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a table")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Spans, A::Error> {
        let mut spans = BTreeMap::new();
        while let Some(key) = map.next_key::<toml::Spanned<String>>()? {
            let span = key.span();
            let key = key.into_inner();
            let sub = match self.0.get(&key) {
                Some(toml::Value::Table(t)) => map.next_value_seed(TableSeed(t))?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    Spans::default()
                }
            };
            spans.insert(key, (span, sub));
        }
        Ok(Spans(spans))
    }
}

mod stormlock;

#[cfg(test)]
mod tests;
