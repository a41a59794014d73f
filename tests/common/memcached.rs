//! Real memcached servers for the memcached backend tests, and a tiny blocking client to inspect
//! and tamper with them behind lockrun's back.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use super::server::{free_port, require, server_dir, spawn_managed, wait_for_port, Server};

/// The shared memcached server of this test binary.
pub fn memcached() -> &'static Server {
    static MC: OnceLock<Server> = OnceLock::new();
    MC.get_or_init(|| start_memcached(&[]))
}

/// A memcached server of its own (for tests that stop it or give it little memory); `extra` are
/// command-line arguments such as `["-m", "2"]`.
pub fn start_memcached(extra: &[&str]) -> Server {
    let bin = require("memcached", "memcached");
    let dir = server_dir("memcached");
    let port = free_port();
    let mut cmd = Command::new(bin);
    cmd.args(["-l", "127.0.0.1", "-p", &port.to_string(), "-U", "0"])
        .args(extra);
    // memcached refuses to run as root without -u.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        cmd.args(["-u", "nobody"]);
    }
    let pid = spawn_managed(cmd, &dir);
    wait_for_port(port, "memcached", &dir);
    Server { port, dir, pid }
}

/// `memcached://127.0.0.1:PORT`.
pub fn url(server: &Server) -> String {
    format!("memcached://127.0.0.1:{}", server.port)
}

/// A blocking text-protocol client.
pub struct Raw {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Raw {
    pub fn connect(port: u16) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to memcached");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        Raw {
            reader: BufReader::new(stream.try_clone().expect("clone")),
            writer: stream,
        }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("reply");
        line.trim_end().to_owned()
    }

    /// Sends a command line (and data) and returns the reply line.
    pub fn command(&mut self, line: &str, data: Option<&[u8]>) -> String {
        let mut req = format!("{line}\r\n").into_bytes();
        if let Some(d) = data {
            req.extend_from_slice(d);
            req.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&req).expect("send");
        self.line()
    }

    pub fn set(&mut self, key: &str, flags: u32, exptime: u32, data: &[u8]) {
        let reply = self.command(
            &format!("set {key} {flags} {exptime} {}", data.len()),
            Some(data),
        );
        assert_eq!(reply, "STORED", "set {key}");
    }

    /// The item's flags and value.
    pub fn get(&mut self, key: &str) -> Option<(u32, Vec<u8>)> {
        let header = self.command(&format!("get {key}"), None);
        if header == "END" {
            return None;
        }
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 4, "{header}");
        let flags = parts[2].parse().expect("flags");
        let len: usize = parts[3].parse().expect("length");
        let mut data = vec![0u8; len + 2];
        self.reader.read_exact(&mut data).expect("value");
        data.truncate(len);
        assert_eq!(self.line(), "END");
        Some((flags, data))
    }

    pub fn delete(&mut self, key: &str) -> bool {
        self.command(&format!("delete {key}"), None) == "DELETED"
    }

    /// The value as text, if the key exists.
    pub fn get_text(&mut self, key: &str) -> Option<String> {
        self.get(key)
            .map(|(_, d)| String::from_utf8_lossy(&d).into_owned())
    }
}
