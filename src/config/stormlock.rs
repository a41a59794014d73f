//! stormlock's INI configuration, read into the same tables as lockrun's TOML, so that a stormlock
//! user switches by pointing `-c` (or `LOCKRUN_CONFIG`) at the file they already have.
//!
//! # Which files are read as stormlock INI
//!
//! 1. A file whose name ends in `.cfg` or `.ini` (in any case) is always read as stormlock INI.
//! 2. Any other file is read as TOML. Only when that fails is it read as INI instead, and then
//!    only if all of these hold:
//!    - it follows the INI grammar below;
//!    - it has a section other than configparser's `[DEFAULT]` (a `[default]`, a
//!      `[backend.TYPE]` or a resource section);
//!    - nothing in it looks like lockrun's TOML: no section name contains `"` (as
//!      `[resource."db"]` does) and no value starts with `"` or `'`.
//!
//!    An error in a file read this way ends with the TOML error, in case TOML was meant.
//! 3. Otherwise the TOML error is reported (one line, `FILE:LINE: invalid TOML: ...`).
//!
//! So a valid TOML file is TOML unless it is named `*.cfg` or `*.ini`. (An error in such a file
//! that is valid TOML with quoted values says that it was read as INI because of its name.)
//!
//! # Grammar: Python `configparser` with its defaults, as stormlock reads it
//!
//! `[section]` headers (the name is everything between the first `[` and the last `]`, case
//! kept); `key = value` or `key: value`, split at the first `=` or `:`; keys lowercased; keys and
//! values trimmed and never unquoted; `#` and `;` start comments only at the start of a line;
//! a line indented deeper than its key continues the value (joined with a newline, blank lines
//! kept inside); `%%` is `%` and `%(key)s` is another key of the section (basic interpolation);
//! `[DEFAULT]` keys are inherited by every section. A duplicate section or key, a line before
//! the first section, and a line that is neither a header nor `key = value` are errors.
//!
//! # Mapping
//!
//! - `[default]` → `[default]`; any other section not starting with `backend.` → the resource
//!   section of that exact name. Without a `[default]` section, the `[DEFAULT]` keys are
//!   lockrun's `[default]` too (a resource without a section of its own gets them as in every
//!   other section; stormlock fails there). Keys `principal`, `backend`, `ttl`, and lockrun's `run_ttl` and
//!   `wait`. An empty value counts as unset, as in stormlock. A missing principal means
//!   lockrun's default `user@host`, where stormlock fails with an assertion.
//! - Durations: stormlock's `N unit`, the unit being any prefix of `days`, `hours`, `minutes`,
//!   `seconds` (tried in that order: `m` and `min` are minutes, `d` is days), and everything
//!   lockrun's own durations accept (`90`, `1h 30m`, `250ms`).
//! - `backend = redis | etcd | dynamodb | postgresql` names `[backend.TYPE]` (its keys, or their
//!   defaults when the section is absent), turned into a lockrun URL and settings as listed
//!   below (`stormlock/backend.rs`). `mysql` is an error (lockrun has no MySQL backend). lockrun's own values
//!   (`file`, a URL, an absolute path) are accepted too.
//! - A `[backend.TYPE]` section for one of the four types is checked even when nothing uses it
//!   (unknown keys are errors); `[backend.mysql]` and other types are ignored unless used.
//!
//! The backend keys (stormlock's defaults in parentheses):
//!
//! - redis: `url` (`redis://localhost:6379`) → the URL as is; redis-py's `unix://` →
//!   `redis+unix://`.
//! - etcd: `host` (`localhost`), `port` (2379) → `etcd://host:port`, `etcd+https://` when
//!   `ca_cert` is set; `password` → the URL's userinfo; settings `prefix` (`/`, kept so keys line
//!   up with stormlock's), `ca_cert` → `ca_file`, `cert_cert` → `cert_file`, `cert_key` →
//!   `key_file`, `user` → `username`, `timeout` → `command_timeout`. A client certificate, user
//!   or password without `ca_cert` is an error (stormlock refuses credentials without TLS too).
//! - dynamodb: `table` (`stormlock`), `region`, `endpoint` →
//!   `dynamodb://table?region=..&endpoint=..`; setting `profile`. `access_key_id` and
//!   `secret_access_key` are errors: lockrun keeps secrets out of URLs and its config, and takes
//!   AWS credentials from the standard chain (environment, profiles, instance roles), from which
//!   `profile` selects.
//! - postgresql: `connection` (required) → the URL as is, or a libpq `key=value` string turned
//!   into a `postgres://` URL (every part percent-encoded; a socket directory and other keywords
//!   as URL parameters; one host only); setting `table` (`stormlock`).
//!
//! Messages never show a password or AWS key.

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::path::Path;

use super::{line_of, Config, Error, Format, Parser, Spans, FILE_BACKEND, SECTION_KEYS};
use crate::lease;

/// The stormlock backend types lockrun can stand in for.
const TYPES: &[&str] = &["redis", "etcd", "dynamodb", "postgresql"];
/// configparser's section of keys inherited by every section.
const DEFAULT_SECTION: &str = "DEFAULT";
/// configparser's limit on nested `%(key)s` references.
const MAX_DEPTH: usize = 10;
/// The longest value that `%(key)s` references may build: ten levels of nesting are enough for
/// a file of a kilobyte to ask for gigabytes (each level repeating the one below).
const MAX_VALUE: usize = 64 * 1024;
/// The most `%(key)s` references one value may expand (empty values build nothing, so the
/// length alone does not bound the work).
const MAX_REFERENCES: usize = 10_000;

/// Whether the file name says stormlock INI: `*.cfg` or `*.ini`.
pub(super) fn by_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("cfg") || e.eq_ignore_ascii_case("ini"))
}

/// Whether text that is not TOML should be read as stormlock INI (rule 2 of the module docs).
pub(super) fn sniff(text: &str) -> bool {
    let Ok(sections) = read(text) else {
        return false;
    };
    sections.iter().any(|s| !s.made) && !toml_like(&sections)
}

/// Reads and validates stormlock INI text. `toml_error` is set when the file was read as INI
/// only because it is not TOML (its line and message), and is then added to any error.
pub(super) fn parse(
    text: &str,
    path: &Path,
    toml_error: Option<(Option<usize>, &str)>,
) -> Result<Config, Error> {
    let sections = read(text);
    // Why the file was read as INI, added to errors where that may surprise.
    let why = match (toml_error, &sections) {
        (Some((line, message)), _) => format!(
            " (read as stormlock INI because it is not TOML{}: {message})",
            line.map(|l| format!(", line {l}")).unwrap_or_default()
        ),
        (None, Ok(s)) if !toml_like(s) => String::new(),
        (None, _) if toml::from_str::<toml::Table>(text).is_ok() => {
            " (read as stormlock INI because of its name; name lockrun's TOML files *.toml)".into()
        }
        (None, _) => String::new(),
    };
    let note = |mut e: Error| {
        if let Error::File { message, .. } = &mut e {
            message.push_str(&why);
        }
        e
    };
    let fail = |f: Fail| {
        note(Error::File {
            path: path.to_owned(),
            line: Some(line_of(text, f.at)),
            message: lease::escape(&f.message),
        })
    };
    let sections = sections.map_err(fail)?;
    let (table, spans) = convert(&sections).map_err(fail)?;
    Parser {
        path,
        text,
        format: Format::Stormlock,
    }
    .config(&table, &spans)
    .map_err(note)
}

/// Whether sections read as INI look like lockrun's TOML: a `"` in a section name (as in
/// `[resource."db"]`) or a value in quotes.
fn toml_like(sections: &[Section]) -> bool {
    sections
        .iter()
        .any(|s| s.name.contains('"') || s.entries.iter().any(|e| e.value.starts_with(['"', '\''])))
}

/// An error at byte offset `at` of the text.
#[derive(Debug)]
struct Fail {
    at: usize,
    message: String,
}

fn fail<T>(at: usize, message: impl Into<String>) -> Result<T, Fail> {
    Err(Fail {
        at,
        message: message.into(),
    })
}

/// One `key = value`, with its continuation lines.
#[derive(Debug, Clone)]
struct Entry {
    /// Lowercased.
    key: String,
    /// Trimmed; continuation lines joined with `\n`; not yet interpolated.
    value: String,
    /// Byte offset of the key.
    at: usize,
    /// Inherited from `[DEFAULT]`.
    inherited: bool,
}

/// A section other than `[DEFAULT]`, with the `[DEFAULT]` keys it does not set itself.
#[derive(Debug)]
struct Section {
    name: String,
    /// Byte offset of the `[`.
    at: usize,
    entries: Vec<Entry>,
    /// Not in the file: the `[default]` made of `[DEFAULT]` (see [`read`]).
    made: bool,
}

impl Section {
    fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }

    fn header(&self) -> String {
        format!("[{}]", self.name)
    }

    /// The value of `entry`, interpolated as configparser does.
    fn value(&self, entry: &Entry) -> Result<String, Fail> {
        let mut out = String::new();
        self.interpolate(&entry.value, 1, &mut out, &mut 0)
            .or_else(|why| {
                fail(
                    entry.at,
                    format!("key '{}' in {}: {why}", entry.key, self.header()),
                )
            })?;
        Ok(out)
    }

    fn interpolate(
        &self,
        mut rest: &str,
        depth: usize,
        out: &mut String,
        references: &mut usize,
    ) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "more than {MAX_DEPTH} nested %(key)s references (a loop?)"
            ));
        }
        let too_long = || {
            format!(
                "the value grows past {} KiB through %(key)s references",
                MAX_VALUE / 1024
            )
        };
        while let Some(p) = rest.find('%') {
            out.push_str(&rest[..p]);
            if out.len() > MAX_VALUE {
                return Err(too_long());
            }
            rest = &rest[p..];
            if let Some(r) = rest.strip_prefix("%%") {
                out.push('%');
                rest = r;
            } else if let Some(r) = rest.strip_prefix("%(") {
                let Some((name, r)) = r.split_once(")s").filter(|(n, _)| !n.contains(')')) else {
                    return Err("a '%(' without ')s' (write '%%' for a literal '%')".into());
                };
                *references += 1;
                if *references > MAX_REFERENCES {
                    return Err(format!(
                        "more than {MAX_REFERENCES} %(key)s references to expand"
                    ));
                }
                let name = name.to_lowercase();
                let Some(entry) = self.get(&name) else {
                    return Err(format!("%({name})s refers to a key that is not set"));
                };
                self.interpolate(&entry.value, depth + 1, out, references)?;
                rest = r;
            } else {
                return Err(
                    "a '%' not followed by '%' or '(' (write '%%' for a literal '%')".into(),
                );
            }
        }
        out.push_str(rest);
        if out.len() > MAX_VALUE {
            return Err(too_long());
        }
        Ok(())
    }
}

/// The `[DEFAULT]` section or an index into the sections.
#[derive(Clone, Copy, PartialEq)]
enum Current {
    Defaults,
    Section(usize),
}

/// Parses INI text into sections, `[DEFAULT]` merged into each.
fn read(text: &str) -> Result<Vec<Section>, Fail> {
    let mut sections: Vec<Section> = Vec::new();
    let mut defaults: Vec<Entry> = Vec::new();
    let mut current: Option<Current> = None;
    // The key that continuation lines extend, and its lines so far.
    let mut open: Option<(Current, usize)> = None;
    let mut lines: BTreeMap<(usize, usize), Vec<String>> = BTreeMap::new();
    let mut indent_level = 0;
    let mut seen_sections: BTreeMap<String, usize> = BTreeMap::new();
    let mut seen_keys: HashSet<(String, String)> = HashSet::new();
    // Where the first `[DEFAULT]` header is.
    let mut defaults_at: Option<usize> = None;
    let slot = |c: Current| match c {
        Current::Defaults => usize::MAX,
        Current::Section(i) => i,
    };

    let mut offset = 0;
    for raw in text.split_inclusive('\n') {
        let start = offset;
        offset += raw.len();
        let line = raw.strip_suffix('\n').unwrap_or(raw);
        let line = line.strip_suffix('\r').unwrap_or(line);
        let value = line.trim();
        if value.starts_with(['#', ';']) {
            continue;
        }
        if value.is_empty() {
            if let Some((c, i)) = open {
                lines.entry((slot(c), i)).or_default().push(String::new());
            }
            continue;
        }
        let indent = line.chars().take_while(|c| c.is_whitespace()).count();
        if let Some((c, i)) = open.filter(|_| indent > indent_level) {
            lines
                .entry((slot(c), i))
                .or_default()
                .push(value.to_owned());
            continue;
        }
        indent_level = indent;
        let at = start + (line.len() - line.trim_start().len());

        if let Some(name) = header(value) {
            open = None;
            if name == DEFAULT_SECTION {
                current = Some(Current::Defaults);
                defaults_at.get_or_insert(at);
                continue;
            }
            if let Some(first) = seen_sections.get(name) {
                return fail(
                    at,
                    format!(
                        "section [{name}] appears twice (first on line {})",
                        line_of(text, *first)
                    ),
                );
            }
            seen_sections.insert(name.to_owned(), at);
            sections.push(Section {
                name: name.to_owned(),
                at,
                entries: Vec::new(),
                made: false,
            });
            current = Some(Current::Section(sections.len() - 1));
            continue;
        }
        let Some(cur) = current else {
            return fail(at, "a line before the first [section] header");
        };
        let Some(split) = value.find(['=', ':']) else {
            return fail(
                at,
                "a line that is neither a [section] header nor 'key = value'",
            );
        };
        let key = value[..split].trim_end().to_lowercase();
        if key.is_empty() {
            return fail(at, "a line with no key before its '=' or ':'");
        }
        let section_name = match cur {
            Current::Defaults => DEFAULT_SECTION.to_owned(),
            Current::Section(i) => sections[i].name.clone(),
        };
        if !seen_keys.insert((section_name.clone(), key.clone())) {
            return fail(at, format!("key '{key}' appears twice in [{section_name}]"));
        }
        let entry = Entry {
            key,
            value: value[split + 1..].trim().to_owned(),
            at,
            inherited: false,
        };
        let list = match cur {
            Current::Defaults => &mut defaults,
            Current::Section(i) => &mut sections[i].entries,
        };
        list.push(entry);
        open = Some((cur, list.len() - 1));
    }

    // Join continuation lines as configparser does: with newlines, trailing blanks dropped.
    for ((s, i), more) in lines {
        let entry = if s == usize::MAX {
            &mut defaults[i]
        } else {
            &mut sections[s].entries[i]
        };
        for l in more {
            entry.value.push('\n');
            entry.value.push_str(&l);
        }
        entry.value.truncate(entry.value.trim_end().len());
    }
    // `[DEFAULT]` keys apply to every section; with no `[default]` section they are also the
    // defaults of the resources that have no section (stormlock would fail there instead), so
    // that `backend = redis` under `[DEFAULT]` never leaves another resource on the local file
    // backend.
    if let Some(at) = defaults_at {
        if !sections.iter().any(|s| s.name == "default") {
            sections.push(Section {
                name: "default".to_owned(),
                at,
                entries: Vec::new(),
                made: true,
            });
        }
    }
    for section in &mut sections {
        for d in &defaults {
            if section.get(&d.key).is_none() {
                section.entries.push(Entry {
                    inherited: true,
                    ..d.clone()
                });
            }
        }
    }
    Ok(sections)
}

/// The name in a `[name]` header line: from the first `[` to the last `]`, not empty.
fn header(line: &str) -> Option<&str> {
    let inner = line.strip_prefix('[')?;
    let end = inner.rfind(']')?;
    (end > 0).then(|| &inner[..end])
}

/// A TOML table plus the spans of its keys, as the TOML reader would produce them.
#[derive(Default)]
struct Out {
    table: toml::Table,
    spans: BTreeMap<String, (Range<usize>, Spans)>,
}

impl Out {
    fn insert(&mut self, key: &str, at: usize, value: toml::Value, spans: Spans) {
        self.table.insert(key.to_owned(), value);
        self.spans.insert(key.to_owned(), (at..at + 1, spans));
    }

    fn set(&mut self, key: &str, at: usize, value: impl Into<toml::Value>) {
        self.insert(key, at, value.into(), Spans::default());
    }

    fn nest(&mut self, key: &str, at: usize, inner: Out) {
        self.insert(key, at, toml::Value::Table(inner.table), Spans(inner.spans));
    }
}

/// The keys that some `%(key)s` refers to: helpers for interpolation, not typos.
fn referenced(sections: &[Section]) -> HashSet<String> {
    let mut names = HashSet::new();
    for e in sections.iter().flat_map(|s| &s.entries) {
        let mut rest = e.value.as_str();
        while let Some(p) = rest.find("%(") {
            rest = &rest[p + 2..];
            if let Some((name, r)) = rest.split_once(")s") {
                names.insert(name.to_lowercase());
                rest = r;
            }
        }
    }
    names
}

/// The sections as lockrun's `default` / `resource` / `backend` tables.
fn convert(sections: &[Section]) -> Result<(toml::Table, Spans), Fail> {
    let helpers = referenced(sections);
    let mut top = Out::default();
    let mut resources = Out::default();
    let mut used: BTreeMap<String, usize> = BTreeMap::new();
    let mut backend_sections: BTreeMap<&str, &Section> = BTreeMap::new();
    for s in sections {
        if let Some(kind) = s.name.strip_prefix("backend.") {
            backend_sections.insert(kind, s);
        } else if s.name == "default" {
            top.nest("default", s.at, lock_section(s, &helpers, &mut used)?);
        } else {
            resources.nest(&s.name, s.at, lock_section(s, &helpers, &mut used)?);
        }
    }
    if let Some(at) = sections.iter().map(|s| s.at).min() {
        if !resources.table.is_empty() {
            top.nest("resource", at, resources);
        }
    }

    let mut backends = Out::default();
    for kind in TYPES {
        let section = backend_sections.get(kind).copied();
        let at = match (section, used.get(*kind)) {
            (Some(s), _) => s.at,
            (None, Some(at)) => *at,
            (None, None) => continue,
        };
        let keys = backend::Keys {
            kind,
            section,
            at,
            helpers: &helpers,
        };
        backends.nest(kind, at, backend::convert(&keys)?);
    }
    if let Some(at) = backends.spans.values().map(|(r, _)| r.start).min() {
        top.nest("backend", at, backends);
    }
    Ok((top.table, Spans(top.spans)))
}

/// `[default]` or a resource section; records which backend types it uses in `used`.
fn lock_section(
    s: &Section,
    helpers: &HashSet<String>,
    used: &mut BTreeMap<String, usize>,
) -> Result<Out, Fail> {
    let mut out = Out::default();
    for e in &s.entries {
        let known = SECTION_KEYS.contains(&e.key.as_str());
        if !known && (e.inherited || helpers.contains(&e.key)) {
            continue; // a [DEFAULT] key meant for other sections, or an interpolation helper
        }
        let v = s.value(e)?;
        if v.is_empty() {
            continue; // stormlock treats an empty value as unset
        }
        let value = match e.key.as_str() {
            "ttl" | "run_ttl" | "wait" => match unit_duration(&v) {
                Some(secs) => toml::Value::Integer(secs),
                None => toml::Value::String(v),
            },
            "backend" => toml::Value::String(backend_value(s, e, v, used)?),
            // principal, and unknown keys, which the shared parser reports
            _ => toml::Value::String(v),
        };
        out.insert(&e.key, e.at, value, Spans::default());
    }
    Ok(out)
}

/// A `backend` value: a stormlock type, or one of lockrun's own values.
fn backend_value(
    s: &Section,
    e: &Entry,
    value: String,
    used: &mut BTreeMap<String, usize>,
) -> Result<String, Fail> {
    let t = value.trim();
    if TYPES.contains(&t) {
        used.entry(t.to_owned()).or_insert(e.at);
        return Ok(t.to_owned());
    }
    if t == FILE_BACKEND || t.contains(':') || t.starts_with('/') {
        return Ok(t.to_owned()); // lockrun's own; checked by the shared parser
    }
    let why = if t == "mysql" {
        "lockrun has no MySQL backend (it has the stormlock types redis, etcd, dynamodb and \
         postgresql, and its own file, memcached:// and kubernetes:// URLs)"
            .into()
    } else {
        format!(
            "unknown backend '{t}' (a stormlock type: redis, etcd, dynamodb, postgresql; or \
             lockrun's 'file', a URL or an absolute path)"
        )
    };
    fail(e.at, format!("key 'backend' in {}: {why}", s.header()))
}

/// stormlock's `^(\d+) *([a-z]+)$`, the unit any prefix of days, hours, minutes, seconds (tried
/// in that order), in seconds. `None` when the text is not of that form (or overflows).
fn unit_duration(text: &str) -> Option<i64> {
    let digits = text.find(|c: char| !c.is_ascii_digit())?;
    let n: i64 = text[..digits].parse().ok()?;
    let unit = text[digits..].trim_start_matches(' ');
    if unit.is_empty() || !unit.bytes().all(|b| b.is_ascii_lowercase()) {
        return None;
    }
    let (_, secs) = [
        ("days", 86_400),
        ("hours", 3_600),
        ("minutes", 60),
        ("seconds", 1),
    ]
    .into_iter()
    .find(|(name, _)| name.starts_with(unit))?;
    n.checked_mul(secs)
}

mod backend;

#[cfg(test)]
mod tests;
