//! A loopback TCP proxy that can freeze connections, for faults a paused server cannot show: one
//! connection that stops answering while new connections to the same server work.
//!
//! Each accepted connection gets a connection of its own to the upstream port and two threads
//! that copy bytes, one per direction. A frozen connection holds what it reads (in both
//! directions) and forwards nothing until [`Proxy::thaw`]; then it forwards what it held, in
//! order, and goes on as before. Connections accepted later are not frozen, unless the whole
//! proxy is ([`Proxy::freeze_all_on`]): then nothing answers, as with a paused server.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A running proxy on 127.0.0.1:`port` in front of 127.0.0.1:`upstream`.
pub struct Proxy {
    pub port: u16,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    /// The frozen flag of every connection accepted so far.
    conns: Mutex<Vec<Arc<AtomicBool>>>,
    /// A byte string that, seen from a client, freezes the connection it came on (before those
    /// bytes are forwarded). Used once.
    freeze_on: Mutex<Option<Vec<u8>>>,
    /// How many connections froze on [`Proxy::freeze_on`]'s pattern.
    froze_on_pattern: AtomicUsize,
    /// Whether the pattern freezes every connection, later ones included.
    pattern_freezes_all: AtomicBool,
    /// Every connection is frozen, later ones included.
    all: AtomicBool,
    /// A byte string that, seen from a client, is forwarded, but the server's answer on that
    /// connection is dropped and the connection closed: a request applied whose answer was
    /// lost. Used once.
    cut_on: Mutex<Option<Vec<u8>>>,
    /// How many answers were cut so far.
    cuts: AtomicUsize,
}

impl Proxy {
    /// Starts forwarding connections to 127.0.0.1:`upstream`.
    pub fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let shared = Arc::new(Shared::default());
        let accepting = Arc::clone(&shared);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let frozen = Arc::new(AtomicBool::new(false));
                let cut = Arc::new(AtomicBool::new(false));
                accepting.conns.lock().unwrap().push(Arc::clone(&frozen));
                let (c2, s2) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                let (f2, sh, sh2) = (
                    Arc::clone(&frozen),
                    Arc::clone(&accepting),
                    Arc::clone(&accepting),
                );
                let cut2 = Arc::clone(&cut);
                std::thread::spawn(move || pump(client, server, &frozen, &cut, &sh, true));
                std::thread::spawn(move || pump(s2, c2, &f2, &cut2, &sh2, false));
            }
        });
        Proxy { port, shared }
    }

    /// Freezes every connection open now; later ones are forwarded as usual.
    pub fn freeze_existing(&self) {
        for f in self.shared.conns.lock().unwrap().iter() {
            f.store(true, Ordering::SeqCst);
        }
    }

    /// Freezes every connection, open now or accepted later: nothing answers any more, as with
    /// a paused server (or a network that drops everything), until [`Proxy::thaw`].
    pub fn freeze_all(&self) {
        self.shared.all.store(true, Ordering::SeqCst);
        self.freeze_existing();
    }

    /// Freezes the next connection on which a client sends `pattern`, before it is forwarded.
    pub fn freeze_on(&self, pattern: &[u8]) {
        *self.shared.freeze_on.lock().unwrap() = Some(pattern.to_vec());
    }

    /// Freezes every connection, open now or accepted later, once a client sends `pattern`
    /// (before it is forwarded).
    pub fn freeze_all_on(&self, pattern: &[u8]) {
        self.shared
            .pattern_freezes_all
            .store(true, Ordering::SeqCst);
        self.freeze_on(pattern);
    }

    /// How many connections froze on a [`Proxy::freeze_on`] pattern so far.
    pub fn frozen_on_pattern(&self) -> usize {
        self.shared.froze_on_pattern.load(Ordering::SeqCst)
    }

    /// Lets every frozen connection forward what it held, and go on.
    pub fn thaw(&self) {
        self.shared.all.store(false, Ordering::SeqCst);
        for f in self.shared.conns.lock().unwrap().iter() {
            f.store(false, Ordering::SeqCst);
        }
    }

    /// Forwards the next request that contains `pattern`, and drops its answer and the
    /// connection.
    pub fn cut_answer_on(&self, pattern: &[u8]) {
        *self.shared.cut_on.lock().unwrap() = Some(pattern.to_vec());
    }

    /// How many answers [`Proxy::cut_answer_on`] dropped so far.
    pub fn cuts(&self) -> usize {
        self.shared.cuts.load(Ordering::SeqCst)
    }

    /// How many connections were accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.conns.lock().unwrap().len()
    }
}

/// Copies `from` to `to` until EOF, holding bytes while `frozen` (or the whole proxy is). The
/// client-to-server direction (`upstream`) checks the freeze pattern.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    frozen: &AtomicBool,
    cut: &AtomicBool,
    shared: &Shared,
    upstream: bool,
) {
    let held = || frozen.load(Ordering::SeqCst) || shared.all.load(Ordering::SeqCst);
    let mut buf = vec![0u8; 65536];
    // The end of what was read before, so a pattern split across two reads is seen.
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if !upstream && cut.load(Ordering::SeqCst) {
            // The answer to the cut request: drop it, and the connection with it.
            shared.cuts.fetch_add(1, Ordering::SeqCst);
            let _ = to.shutdown(Shutdown::Both);
            let _ = from.shutdown(Shutdown::Both);
            return;
        }
        if upstream {
            let mut cut_on = shared.cut_on.lock().unwrap();
            if cut_on
                .as_ref()
                .is_some_and(|p| buf[..n].windows(p.len()).any(|w| w == p.as_slice()))
            {
                cut.store(true, Ordering::SeqCst);
                *cut_on = None;
            }
        }
        if upstream {
            let mut pattern = shared.freeze_on.lock().unwrap();
            if let Some(p) = pattern.as_ref() {
                let mut seen = std::mem::take(&mut tail);
                seen.extend_from_slice(&buf[..n]);
                if seen.windows(p.len()).any(|w| w == p.as_slice()) {
                    frozen.store(true, Ordering::SeqCst);
                    if shared.pattern_freezes_all.swap(false, Ordering::SeqCst) {
                        shared.all.store(true, Ordering::SeqCst);
                    }
                    shared.froze_on_pattern.fetch_add(1, Ordering::SeqCst);
                    *pattern = None;
                } else {
                    let keep = seen.len().min(p.len().saturating_sub(1));
                    tail = seen[seen.len() - keep..].to_vec();
                }
            }
        }
        while held() {
            std::thread::sleep(Duration::from_millis(5));
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    // Pass the end on (after anything held was forwarded), so the other side sees it in order.
    while held() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Runs `run` (a `lockrun ... run --ttl 6s --heartbeat 1s RES` command, to which the command
/// is added: a stalled renewal is given up after 1 s, leaving seconds to reconnect), and
/// once its command has started, freezes every connection the proxy has: the server answers
/// only new ones from then on. Returns lockrun's output and the proxy's connections before the
/// freeze.
pub fn run_through_a_freeze(
    proxy: &Proxy,
    mut run: std::process::Command,
    dir: &std::path::Path,
) -> (std::process::Output, usize) {
    let started = dir.join("started");
    let script = format!("touch {}; sleep 8", started.display());
    let child = run
        .args(["--", "sh", "-c", &script])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    assert!(
        super::eventually(Duration::from_secs(10), || started.exists()),
        "the command did not start"
    );
    std::thread::sleep(Duration::from_millis(300));
    let before = proxy.connections();
    proxy.freeze_existing();
    let frozen = std::time::Instant::now();
    let o = child.wait_with_output().unwrap();
    eprintln!(
        "lockrun exited {:?} after the freeze, connections {before} -> {}: {}",
        frozen.elapsed(),
        proxy.connections(),
        String::from_utf8_lossy(&o.stderr)
    );
    (o, before)
}

/// The lease id that the one-line message of an unanswered acquire of `res` names, checking the
/// message's form: `...; if the server applies the request late, lease ID may hold RES until
/// its TTL: lockrun release RES ID`.
pub fn lease_named_in(err: &str, res: &str) -> String {
    let command = err.split(": lockrun release ").nth(1).unwrap_or_default();
    let words: Vec<&str> = command.split_whitespace().collect();
    assert_eq!(words.len(), 6, "{err}");
    assert_eq!(words[0], res, "{err}");
    assert_eq!(words[2..].join(" "), "(with the same -b/-c)", "{err}");
    let id = words[1];
    assert!(
        err.contains(&format!("lease {id} may hold {res} until its TTL")),
        "{err}"
    );
    id.to_owned()
}

/// Runs `acquire`, an acquire whose request the proxy freezes (on a pattern): checks that one
/// connection froze and that lockrun gave up with exit 69 and `needle`, on one line, within
/// `command_timeout` (5 s) and the give-back (1 s), and returns its output.
pub fn acquire_frozen(
    proxy: &Proxy,
    acquire: impl FnOnce() -> std::process::Output,
    needle: &str,
) -> std::process::Output {
    let start = std::time::Instant::now();
    let o = acquire();
    let took = start.elapsed();
    eprintln!(
        "acquire exited after {took:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(proxy.frozen_on_pattern(), 1);
    super::assert_fails(&o, 69, needle);
    assert!(took < Duration::from_millis(6500), "{took:?}");
    o
}
