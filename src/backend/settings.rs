//! Backend-specific settings from a `[backend.<name>]` config section.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::Error;

/// The keys of a `[backend.<name>]` section other than `url`, checked by the backend that uses
/// them. Unknown keys are configuration errors, so a typo never silently does nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings {
    /// Where the settings came from, for messages (e.g. `/etc/lockrun/config.toml [backend.ci]`).
    pub origin: String,
    table: toml::Table,
    /// Where each key stands, when the config file's lines are known (`config.toml:7:
    /// [backend.ci]`); messages about a key name it rather than [`Settings::origin`].
    located: BTreeMap<String, String>,
}

impl Settings {
    /// Settings from a config table.
    pub fn new(origin: impl Into<String>, table: toml::Table) -> Self {
        Settings {
            origin: origin.into(),
            table,
            located: BTreeMap::new(),
        }
    }

    /// The same settings, with the line of each key: `lines` maps a key to its line in `file`,
    /// and `header` names the section.
    pub fn with_lines(mut self, file: &str, header: &str, lines: BTreeMap<String, usize>) -> Self {
        self.located = lines
            .into_iter()
            .map(|(key, line)| (key, format!("{file}:{line}: {header}")))
            .collect();
        self
    }

    /// Where `key` stands: its file, line and section when known, else [`Settings::origin`].
    pub fn origin_of(&self, key: &str) -> &str {
        self.located.get(key).unwrap_or(&self.origin)
    }

    /// Fails on any key not in `known`.
    pub fn expect_only(&self, known: &[&str]) -> Result<(), Error> {
        for key in self.table.keys() {
            if !known.contains(&key.as_str()) {
                return Err(Error::Config(format!(
                    "{}: unknown key '{key}' for this backend (known: {})",
                    self.origin_of(key),
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                )));
            }
        }
        Ok(())
    }

    /// A string setting.
    pub fn string(&self, key: &str) -> Result<Option<String>, Error> {
        match self.table.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(self.wrong_type(key, "a string", other)),
        }
    }

    /// A path setting.
    pub fn path(&self, key: &str) -> Result<Option<PathBuf>, Error> {
        Ok(self.string(key)?.map(PathBuf::from))
    }

    /// The password in the file that the `password_file` setting names: its text without one
    /// trailing newline (`\n` or `\r\n`). The file is read with a bound on its size, so a
    /// FIFO or a device cannot hang lockrun.
    pub fn password_file(&self) -> Result<Option<String>, Error> {
        let Some(path) = self.path("password_file")? else {
            return Ok(None);
        };
        let (at, shown) = (self.origin_of("password_file"), shown(&path));
        let text = crate::small_file::read_text(&path)
            .map_err(|e| Error::Config(format!("{at}: cannot read password_file {shown}: {e}")))?;
        let pw = text
            .strip_suffix('\n')
            .map(|t| t.strip_suffix('\r').unwrap_or(t))
            .unwrap_or(&text);
        if pw.is_empty() {
            return Err(Error::Config(format!(
                "{at}: password_file {shown} is empty"
            )));
        }
        Ok(Some(pw.to_owned()))
    }

    /// The bytes of the file that the setting `key` names (a certificate, a key), read as
    /// `small_file` reads them (bounded, never blocking on a FIFO), with its path; a file that cannot be read is a configuration
    /// error naming the setting.
    pub fn file(&self, key: &str) -> Result<Option<(PathBuf, Vec<u8>)>, Error> {
        let Some(path) = self.path(key)? else {
            return Ok(None);
        };
        let bytes = crate::small_file::read(&path).map_err(|e| {
            Error::Config(format!(
                "{}: cannot read {key} {}: {e}",
                self.origin_of(key),
                shown(&path)
            ))
        })?;
        Ok(Some((path, bytes)))
    }

    /// A duration setting (humantime string or number of seconds).
    pub fn duration(&self, key: &str) -> Result<Option<std::time::Duration>, Error> {
        self.table
            .get(key)
            .map(|v| {
                crate::duration::from_toml(v).map_err(|e| {
                    Error::Config(format!("{}: key '{key}': {e}", self.origin_of(key)))
                })
            })
            .transpose()
    }

    /// A duration setting that must be longer than zero.
    pub fn positive_duration(&self, key: &str) -> Result<Option<std::time::Duration>, Error> {
        match self.duration(key)? {
            Some(d) if d.is_zero() => Err(Error::Config(format!(
                "{}: key '{key}' must be longer than zero",
                self.origin_of(key)
            ))),
            other => Ok(other),
        }
    }

    /// A boolean setting.
    pub fn boolean(&self, key: &str) -> Result<Option<bool>, Error> {
        match self.table.get(key) {
            None => Ok(None),
            Some(toml::Value::Boolean(b)) => Ok(Some(*b)),
            Some(other) => Err(self.wrong_type(key, "true or false", other)),
        }
    }

    fn wrong_type(&self, key: &str, want: &str, got: &toml::Value) -> Error {
        Error::Config(format!(
            "{}: key '{key}' must be {want}, not {}",
            self.origin_of(key),
            a_kind(got)
        ))
    }
}

/// A path for a message: control characters escaped.
pub(crate) fn shown(path: &std::path::Path) -> String {
    crate::lease::escape(&path.display().to_string())
}

/// The kind of a TOML value with its article: "a string", "an integer".
pub(crate) fn a_kind(value: &toml::Value) -> String {
    let t = value.type_str();
    let article = if t.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {t}")
}
