//! The memcached text protocol: the few commands lockrun needs, over any byte stream.
//!
//! `version`, `add`, `cas`, `gets` and `incr`, one request and one reply at a time. Replies are
//! read with bounded buffers: a reply line longer than [`MAX_LINE`] is a protocol violation, and a
//! value longer than [`MAX_VALUE`] is read to its end (so the connection stays in step) but only
//! its first bytes are kept.

use std::fmt;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufStream};

/// memcached's limit on key length.
pub(super) const MAX_KEY: usize = 250;
/// The longest reply line accepted.
const MAX_LINE: u64 = 4096;
/// The most bytes of a value kept; lockrun's records are far smaller.
pub(super) const MAX_VALUE: usize = 64 * 1024;

/// A failed exchange.
#[derive(Debug)]
pub(super) enum ProtoError {
    /// The connection failed or closed.
    Io(std::io::Error),
    /// `ERROR`: the server does not know the command.
    UnknownCommand(&'static str),
    /// `CLIENT_ERROR <message>`: the server refused the request.
    Client(String),
    /// `SERVER_ERROR <message>`, e.g. `out of memory storing object`.
    Server(String),
    /// A reply that does not follow the protocol.
    Unexpected(String),
    /// A key memcached cannot take (a bug in the caller: nothing was sent).
    BadKey(String),
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtoError::Io(e) => write!(f, "{e}"),
            ProtoError::UnknownCommand(cmd) => write!(f, "the server does not know '{cmd}'"),
            ProtoError::Client(m) => write!(f, "CLIENT_ERROR {m}"),
            ProtoError::Server(m) => write!(f, "SERVER_ERROR {m}"),
            ProtoError::Unexpected(m) => write!(f, "unexpected reply: {m}"),
            ProtoError::BadKey(k) => write!(f, "'{k}' is not a valid memcached key"),
        }
    }
}

impl From<std::io::Error> for ProtoError {
    fn from(e: std::io::Error) -> Self {
        ProtoError::Io(e)
    }
}

type Result<T> = std::result::Result<T, ProtoError>;

/// The reply to `cas`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cas {
    Stored,
    /// Someone wrote the item since it was read.
    Exists,
    NotFound,
}

/// An item read with `gets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Item {
    pub flags: u32,
    /// The item's CAS unique: changes with every write.
    pub cas: u64,
    /// The value, or its first [`MAX_VALUE`] bytes.
    pub data: Vec<u8>,
    /// The value's whole length.
    pub len: usize,
}

/// One connection to a memcached server.
#[derive(Debug)]
pub(super) struct Conn<S> {
    io: BufStream<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    pub fn new(stream: S) -> Self {
        Conn {
            io: BufStream::new(stream),
        }
    }

    /// `version`: the server's version string.
    pub async fn version(&mut self) -> Result<String> {
        self.send(b"version\r\n").await?;
        let line = self.line("version").await?;
        line.strip_prefix("VERSION ")
            .map(str::to_owned)
            .ok_or_else(|| unexpected("version", &line))
    }

    /// `add`: stores only if the key is absent. True when stored.
    pub async fn add(&mut self, key: &str, flags: u32, exptime: u32, data: &[u8]) -> Result<bool> {
        match self.store("add", key, flags, exptime, data, None).await? {
            Reply::Stored => Ok(true),
            Reply::NotStored => Ok(false),
            other => Err(unexpected("add", &format!("{other:?}"))),
        }
    }

    /// `cas`: stores only if the item is unchanged since `gets` returned `cas`.
    pub async fn cas(
        &mut self,
        key: &str,
        flags: u32,
        exptime: u32,
        data: &[u8],
        cas: u64,
    ) -> Result<Cas> {
        match self
            .store("cas", key, flags, exptime, data, Some(cas))
            .await?
        {
            Reply::Stored => Ok(Cas::Stored),
            Reply::Exists => Ok(Cas::Exists),
            Reply::NotFound => Ok(Cas::NotFound),
            Reply::NotStored => Err(unexpected("cas", "NOT_STORED")),
        }
    }

    /// `gets`: the item with its CAS unique, or `None`.
    pub async fn gets(&mut self, key: &str) -> Result<Option<Item>> {
        check_key(key)?;
        self.send(format!("gets {key}\r\n").as_bytes()).await?;
        let line = self.line("gets").await?;
        if line == "END" {
            return Ok(None);
        }
        let header = parse_value_line(&line, key).ok_or_else(|| unexpected("gets", &line))?;
        let (flags, len, cas) = header;
        let keep = len.min(MAX_VALUE);
        let mut data = vec![0u8; keep];
        self.io.read_exact(&mut data).await?;
        let rest = (len - keep) as u64;
        if rest > 0 {
            let copied =
                tokio::io::copy(&mut (&mut self.io).take(rest), &mut tokio::io::sink()).await?;
            if copied < rest {
                return Err(ProtoError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
        let mut crlf = [0u8; 2];
        self.io.read_exact(&mut crlf).await?;
        if &crlf != b"\r\n" {
            return Err(unexpected("gets", "a value not followed by CRLF"));
        }
        let end = self.line("gets").await?;
        if end != "END" {
            return Err(unexpected("gets", &end));
        }
        Ok(Some(Item {
            flags,
            cas,
            data,
            len,
        }))
    }

    /// `incr`: the new value, or `None` when the key is absent.
    pub async fn incr(&mut self, key: &str, by: u64) -> Result<Option<u64>> {
        check_key(key)?;
        self.send(format!("incr {key} {by}\r\n").as_bytes()).await?;
        let line = self.line("incr").await?;
        if line == "NOT_FOUND" {
            return Ok(None);
        }
        line.trim_end()
            .parse()
            .map(Some)
            .map_err(|_| unexpected("incr", &line))
    }

    async fn store(
        &mut self,
        cmd: &'static str,
        key: &str,
        flags: u32,
        exptime: u32,
        data: &[u8],
        cas: Option<u64>,
    ) -> Result<Reply> {
        check_key(key)?;
        let mut req = format!("{cmd} {key} {flags} {exptime} {}", data.len()).into_bytes();
        if let Some(cas) = cas {
            req.extend_from_slice(format!(" {cas}").as_bytes());
        }
        req.extend_from_slice(b"\r\n");
        req.extend_from_slice(data);
        req.extend_from_slice(b"\r\n");
        self.send(&req).await?;
        let line = self.line(cmd).await?;
        match line.as_str() {
            "STORED" => Ok(Reply::Stored),
            "NOT_STORED" => Ok(Reply::NotStored),
            "EXISTS" => Ok(Reply::Exists),
            "NOT_FOUND" => Ok(Reply::NotFound),
            _ => Err(unexpected(cmd, &line)),
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.io.write_all(bytes).await?;
        self.io.flush().await?;
        Ok(())
    }

    /// One reply line without its CRLF; error replies become errors.
    async fn line(&mut self, cmd: &'static str) -> Result<String> {
        let mut buf = Vec::new();
        (&mut self.io)
            .take(MAX_LINE)
            .read_until(b'\n', &mut buf)
            .await?;
        if buf.is_empty() {
            return Err(ProtoError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            )));
        }
        if buf.pop() != Some(b'\n') {
            return Err(unexpected(cmd, "a reply line that is too long or cut off"));
        }
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        let line =
            String::from_utf8(buf).map_err(|_| unexpected(cmd, "a reply that is not text"))?;
        if line == "ERROR" {
            return Err(ProtoError::UnknownCommand(cmd));
        }
        if let Some(m) = line.strip_prefix("CLIENT_ERROR ") {
            return Err(ProtoError::Client(m.to_owned()));
        }
        if let Some(m) = line.strip_prefix("SERVER_ERROR ") {
            return Err(ProtoError::Server(m.to_owned()));
        }
        Ok(line)
    }
}

#[derive(Debug)]
enum Reply {
    Stored,
    NotStored,
    Exists,
    NotFound,
}

/// Whether memcached accepts `key`: 1..=250 bytes of printable ASCII, no spaces.
pub(super) fn check_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > MAX_KEY || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ProtoError::BadKey(key.escape_debug().to_string()));
    }
    Ok(())
}

/// `VALUE <key> <flags> <bytes> <cas>` → (flags, bytes, cas), for the expected key only.
fn parse_value_line(line: &str, key: &str) -> Option<(u32, usize, u64)> {
    let mut parts = line.split(' ');
    if parts.next()? != "VALUE" || parts.next()? != key {
        return None;
    }
    let flags = parts.next()?.parse().ok()?;
    let len = parts.next()?.parse().ok()?;
    let cas = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((flags, len, cas))
}

fn unexpected(cmd: &str, what: &str) -> ProtoError {
    let what: String = what.chars().take(80).collect();
    ProtoError::Unexpected(format!("to '{cmd}': {}", what.escape_debug()))
}

#[cfg(test)]
#[path = "proto_tests.rs"]
mod tests;
