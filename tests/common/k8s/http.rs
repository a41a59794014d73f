//! A small HTTP/1.1 server: one thread per connection, keep-alive until the client closes or
//! sends `Connection: close`, bodies by `Content-Length` or chunked.
//!
//! For the fault tests a [`Control`] can do to it what signals do to a real API server process:
//!
//! - [`Control::pause`] / [`Control::resume`]: SIGSTOP and SIGCONT. While paused, connections are
//!   still accepted and requests still arrive (the kernel does that for a stopped process), but
//!   nothing is answered: a request read before or during the pause waits, unanswered, until the
//!   resume; a request being handled when the pause begins completes its write to the store, but
//!   its answer is held back too. No error is ever answered because of a pause.
//! - [`Control::restart`]: a crash and restart of the API server over a storage that survives it
//!   (kube-apiserver over etcd): the listener and every open connection are closed, nothing
//!   listens on the port for a moment (connections are refused), then a new listener on the same
//!   port serves the same store.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One request as the handler sees it.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// The path, without the query.
    pub path: String,
    pub query: String,
    /// Header names in lowercase.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A handler: a request in, a status code and a JSON body out.
pub type Handler = Arc<dyn Fn(&Request) -> (u16, serde_json::Value) + Send + Sync>;

/// A served port, and what the fault tests can do to it (see the module docs).
pub struct Control {
    port: u16,
    handler: Handler,
    paused: Mutex<bool>,
    resumed: Condvar,
    /// Bumped by every crash: connections of an older generation are dead.
    generation: AtomicU64,
    /// The open connections (a clone of each stream), by number, to be cut by a crash.
    conns: Mutex<HashMap<u64, TcpStream>>,
    next_conn: AtomicU64,
    /// The accepting thread and its listener's descriptor.
    acceptor: Mutex<Option<(i32, JoinHandle<()>)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Accepts connections on `listener` in a background thread, until the process exits or the
/// returned [`Control`] crashes the server.
pub fn serve(listener: TcpListener, handler: Handler) -> Arc<Control> {
    let ctl = Arc::new(Control {
        port: listener.local_addr().expect("local address").port(),
        handler,
        paused: Mutex::new(false),
        resumed: Condvar::new(),
        generation: AtomicU64::new(0),
        conns: Mutex::new(HashMap::new()),
        next_conn: AtomicU64::new(0),
        acceptor: Mutex::new(None),
    });
    ctl.listen(listener);
    ctl
}

impl Control {
    fn listen(self: &Arc<Self>, listener: TcpListener) {
        let fd = listener.as_raw_fd();
        let generation = self.generation.load(Ordering::SeqCst);
        let ctl = Arc::clone(self);
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if ctl.generation.load(Ordering::SeqCst) != generation {
                    return; // crashed: the listener closes with this thread
                }
                let Ok(stream) = stream else { continue };
                let id = ctl.next_conn.fetch_add(1, Ordering::SeqCst);
                if let Ok(clone) = stream.try_clone() {
                    lock(&ctl.conns).insert(id, clone);
                }
                let ctl = Arc::clone(&ctl);
                std::thread::spawn(move || {
                    let result = connection(stream, &ctl, generation);
                    lock(&ctl.conns).remove(&id);
                    match result {
                        Err(e)
                            if e.kind() != io::ErrorKind::UnexpectedEof
                                && ctl.generation.load(Ordering::SeqCst) == generation =>
                        {
                            eprintln!("k8s stand-in: connection error: {e}");
                        }
                        _ => {}
                    }
                });
            }
        });
        *lock(&self.acceptor) = Some((fd, thread));
    }

    /// Stops answering, as a SIGSTOPped server does (see the module docs).
    pub fn pause(&self) {
        *lock(&self.paused) = true;
    }

    /// Answers again, the held-back answers first.
    pub fn resume(&self) {
        *lock(&self.paused) = false;
        self.resumed.notify_all();
    }

    /// Blocks while the server is paused.
    fn wait_unpaused(&self) {
        let mut paused = lock(&self.paused);
        while *paused {
            paused = self.resumed.wait(paused).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Crashes the server (listener and connections closed; the store survives), leaves the port
    /// closed for `down`, and serves the same store on the same port again. Returns how long
    /// the port was closed.
    pub fn restart(self: &Arc<Self>, down: Duration) -> Duration {
        let t = Instant::now();
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Some((fd, thread)) = lock(&self.acceptor).take() {
            // SAFETY: shutdown on the listener's descriptor, still open (its thread owns it and
            // exits only after this wakes its accept()); it closes nothing.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
            thread.join().expect("the accepting thread");
        }
        for (_, c) in lock(&self.conns).drain() {
            let _ = c.shutdown(Shutdown::Both);
        }
        std::thread::sleep(down);
        let end = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(l) => break l,
                Err(e) if Instant::now() < end => {
                    eprintln!("k8s stand-in: rebinding port {}: {e}", self.port);
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("k8s stand-in: cannot listen on {} again: {e}", self.port),
            }
        };
        let took = t.elapsed();
        self.listen(listener);
        took
    }
}

fn connection(stream: TcpStream, ctl: &Control, generation: u64) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let alive = || ctl.generation.load(Ordering::SeqCst) == generation;
    loop {
        let Some(req) = read_request(&mut reader)? else {
            return Ok(());
        };
        // A paused server reads nothing and answers nothing; a crashed one is gone.
        ctl.wait_unpaused();
        if !alive() {
            return Ok(());
        }
        let close = req
            .header("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close"));
        let (code, body) = (ctl.handler)(&req);
        let body = serde_json::to_vec(&body).map_err(io::Error::other)?;
        let mut head = format!(
            "HTTP/1.1 {code} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            reason(code),
            body.len()
        );
        if close {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        // One write per answer: a head and body sent apart would meet Nagle's algorithm and the
        // client's delayed ACK (40 ms per request).
        let mut answer = head.into_bytes();
        answer.extend_from_slice(&body);
        // Paused while the request was handled: the answer waits too.
        ctl.wait_unpaused();
        if !alive() {
            return Ok(());
        }
        writer.write_all(&answer)?;
        writer.flush()?;
        if close {
            return Ok(());
        }
    }
}

/// Reads one request; `None` when the client closed the connection between requests.
fn read_request(reader: &mut BufReader<TcpStream>) -> io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(bad(&format!("bad request line {line:?}")));
    };
    if version != "HTTP/1.1" {
        return Err(bad(&format!("unsupported HTTP version {version}")));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let h = h.trim_end_matches(['\r', '\n']);
        if h.is_empty() {
            break;
        }
        let (k, v) = h
            .split_once(':')
            .ok_or_else(|| bad(&format!("bad header {h:?}")))?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    let mut req = Request {
        method: method.to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        headers,
        body: Vec::new(),
    };
    if req
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        req.body = read_chunked(reader)?;
    } else if let Some(n) = req.header("content-length") {
        let n: usize = n.parse().map_err(|_| bad("bad Content-Length"))?;
        req.body = vec![0; n];
        reader.read_exact(&mut req.body)?;
    }
    Ok(Some(req))
}

fn read_chunked(reader: &mut BufReader<TcpStream>) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size)?;
        let size = size.trim().split(';').next().unwrap_or_default();
        let n = usize::from_str_radix(size, 16).map_err(|_| bad("bad chunk size"))?;
        let mut chunk = vec![0; n + 2];
        reader.read_exact(&mut chunk)?;
        if n == 0 {
            // The CRLF after the last chunk (no trailers are sent by kube).
            return Ok(body);
        }
        body.extend_from_slice(&chunk[..n]);
    }
}

fn bad(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_owned())
}

pub fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        422 => "Unprocessable Entity",
        500 => "Internal Server Error",
        _ => "Unknown",
    }
}

/// A one-shot client request (`Connection: close`), for tests that play another client.
pub fn request(
    port: u16,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the stand-in");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("write");
    stream.write_all(body.as_bytes()).expect("write");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("read");
    let text = String::from_utf8(answer).expect("utf-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete answer");
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    (code, serde_json::from_str(body).expect("a JSON body"))
}
