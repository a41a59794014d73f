//! A local DynamoDB-compatible server (moto) for the DynamoDB tests, and helpers around it.
//!
//! moto's own `moto_server` serves requests on threads, and its conditional writes are not
//! atomic across threads (`update_item` checks the condition, then creates and updates the item
//! in separate steps), so two racers can both win, which real DynamoDB never allows. The harness
//! therefore runs moto's server entry point with threading turned off: requests are served one
//! at a time, and every conditional write is linearizable, as on DynamoDB.
//!
//! Tests never talk to real AWS: the endpoint is always this loopback server, and the lockrun
//! processes get dummy credentials with every other AWS variable removed.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;

use super::server::{self, Server};

pub const REGION: &str = "us-east-1";

/// The environment of every lockrun process in these tests: dummy credentials, a fixed region,
/// and no instance-metadata lookups.
pub const AWS_ENV: &[(&str, &str)] = &[
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    ("AWS_REGION", REGION),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

/// Runs moto's server `main` with werkzeug's threading off (see the module docs).
const LAUNCHER: &str = "import sys\n\
import moto.server as server\n\
run = server.run_simple\n\
server.run_simple = lambda *a, **k: run(*a, **dict(k, threaded=False))\n\
server.main(sys.argv[1:])\n";

const INSTALL_HINT: &str = "moto_server is not installed: run ./scripts/test (it installs the \
     test servers), or python3 -m pip install 'moto[server]'";

/// The shared moto server of this test binary.
pub fn moto() -> &'static Server {
    static MOTO: OnceLock<Server> = OnceLock::new();
    MOTO.get_or_init(|| start_moto(&[]))
}

/// A moto server of its own, with extra environment (e.g. `INITIAL_NO_AUTH_ACTION_COUNT`).
pub fn start_moto(env: &[(&str, &str)]) -> Server {
    start_moto_with(env, &[])
}

/// A moto server of its own that speaks only HTTPS, with `certs`' server certificate.
pub fn start_moto_tls(certs: &super::certs::Certs) -> Server {
    let (cert, key) = (certs.server_cert.display(), certs.server_key.display());
    start_moto_with(&[], &["-c", &cert.to_string(), "-k", &key.to_string()])
}

fn start_moto_with(env: &[(&str, &str)], args: &[&str]) -> Server {
    let bin = server::which("moto_server").unwrap_or_else(|| panic!("{INSTALL_HINT}"));
    let dir = server::server_dir("moto");
    let port = server::free_port();
    let mut cmd = Command::new(python_of(&bin));
    cmd.arg("-c")
        .arg(LAUNCHER)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .current_dir(&dir)
        .envs(env.iter().copied());
    let pid = server::spawn_managed(cmd, &dir);
    server::wait_for_port(port, "moto_server", &dir);
    Server { port, dir, pid }
}

/// The Python that runs `moto_server` (its shebang), or `python3` for wrappers such as pyenv
/// shims.
fn python_of(moto_server: &std::path::Path) -> PathBuf {
    let first = std::fs::read_to_string(moto_server)
        .ok()
        .and_then(|t| t.lines().next().map(str::to_owned))
        .unwrap_or_default();
    match first.strip_prefix("#!").map(str::trim) {
        Some(interp) if interp.contains("python") && !interp.contains(' ') => PathBuf::from(interp),
        _ => PathBuf::from("python3"),
    }
}

/// The endpoint URL of a server.
pub fn endpoint(server: &Server) -> String {
    format!("http://127.0.0.1:{}", server.port)
}

/// A fresh table name for one test.
pub fn table() -> String {
    format!("lockrun-{}", server::prefix())
}

/// The backend URL of `table` on `server`.
pub fn url(server: &Server, table: &str) -> String {
    format!(
        "dynamodb://{table}?endpoint={}&region={REGION}",
        endpoint(server)
    )
}

/// An SDK client for the tests themselves (setting up and tampering with items).
pub fn client(server: &Server) -> Client {
    let conf = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .http_client(lockrun::backend::dynamodb::http_client())
        .region(Region::new(REGION))
        .endpoint_url(endpoint(server))
        .credentials_provider(Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "lockrun-tests",
        ))
        .build();
    Client::from_conf(conf)
}

/// Removes every AWS variable inherited from the test's environment, then sets [`AWS_ENV`].
pub fn aws_env(cmd: &mut Command) -> &mut Command {
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(AWS_ENV.iter().copied())
}

/// An item attribute map from pairs.
pub fn item(pairs: &[(&str, AttributeValue)]) -> HashMap<String, AttributeValue> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

pub fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

pub fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// A well-formed lockrun item held by someone else.
pub fn lease_item(
    resource: &str,
    token: u64,
    version: &str,
    expires_ms: u64,
    ttl_ms: u64,
) -> HashMap<String, AttributeValue> {
    item(&[
        ("resource", s(resource)),
        ("lease_id", s("00000000000000000000000000000bad")),
        ("principal", s("someone-else@elsewhere")),
        ("token", n(token)),
        ("version", s(version)),
        ("acquired_ms", n(expires_ms.saturating_sub(ttl_ms))),
        ("expires_ms", n(expires_ms)),
        ("ttl_ms", n(ttl_ms)),
        ("released", AttributeValue::Bool(false)),
    ])
}

/// Writes an item unconditionally, as another client would.
pub async fn put(client: &Client, table: &str, item: HashMap<String, AttributeValue>) {
    client
        .put_item()
        .table_name(table)
        .set_item(Some(item))
        .send()
        .await
        .expect("put_item");
}

/// Reads an item (strongly consistent).
pub async fn get(
    client: &Client,
    table: &str,
    resource: &str,
) -> Option<HashMap<String, AttributeValue>> {
    client
        .get_item()
        .table_name(table)
        .key("resource", s(resource))
        .consistent_read(true)
        .send()
        .await
        .expect("get_item")
        .item
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// A fake DynamoDB endpoint that answers every request with one error (for errors moto cannot
/// produce, such as throttling). Returns its port and a count of the requests it received.
pub fn fake_error(status: u16, code: &str, message: &str) -> (u16, Arc<AtomicUsize>) {
    let body = format!(
        "{{\"__type\":\"com.amazonaws.dynamodb.v20120810#{code}\",\"message\":\"{message}\"}}"
    );
    let response = format!(
        "HTTP/1.1 {status} Error\r\nContent-Type: application/x-amz-json-1.0\r\n\
         x-amzn-RequestId: fake\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = answer(stream, response.as_bytes());
        }
    });
    (port, hits)
}

/// Reads one request (headers and Content-Length body) and writes `response`.
fn answer(mut stream: TcpStream, response: &[u8]) -> std::io::Result<()> {
    stream.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                break;
            }
        }
    }
    stream.write_all(response)?;
    stream.flush()
}

/// An endpoint that accepts connections and never answers (a hung server).
pub fn silent() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    port
}
