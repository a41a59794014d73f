use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use super::super::{Config, Error, Flags, Plan, Wait};
use super::backend::conninfo_url;
use super::*;
use crate::backend::BackendUrl;
use crate::exit::Exit;
use crate::lease::Resource;

const PATH: &str = "/etc/stormlock.cfg";

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

fn cfg(text: &str) -> Config {
    Config::parse(text, Path::new(PATH)).unwrap_or_else(|e| panic!("{e}"))
}

/// Parses text that must be rejected; returns the one-line message.
fn bad(text: &str) -> String {
    bad_at(text, PATH)
}

fn bad_at(text: &str, path: &str) -> String {
    let e = Config::parse(text, Path::new(path)).unwrap_err();
    one_liner(&e)
}

fn one_liner(e: &Error) -> String {
    assert_eq!(e.exit(), Exit::Config);
    let msg = e.to_string();
    assert!(!msg.contains(['\n', '\r']), "not one line: {msg:?}");
    msg
}

fn plan(config: &Config, resource: &str) -> Plan {
    plan_with(config, resource, &Flags::default(), &[])
}

fn plan_with(config: &Config, resource: &str, flags: &Flags, pairs: &[(&str, &str)]) -> Plan {
    let mut all = vec![("HOME", "/home/u")];
    all.extend_from_slice(pairs);
    config
        .plan(&Resource::new(resource).unwrap(), flags, &env(&all))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The URL with its secrets, for checking what the backend will be given.
fn secret(p: &Plan) -> String {
    p.backend.secret_url().to_string()
}

/// Percent-decoding, to check that encoded URL parts come back unchanged.
fn decode(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// A stormlock configuration using all four backends, one per resource.
const FULL: &str = "\
# stormlock configuration
[default]
principal = ops@example.com
backend = redis
ttl = 1 day

[backend.redis]
url = redis://:hunter2@cache.internal:6380/2

[backend.etcd]
host = etcd.internal
port = 2380
prefix = /locks/
ca_cert = /etc/ssl/etcd-ca.pem
cert_cert = /etc/ssl/client.pem
cert_key = /etc/ssl/client.key
timeout = 7
user = locker
password = s3cr%%t:pw

[backend.dynamodb]
table = ops-locks
region = eu-west-1
endpoint = http://localhost:8000
profile = ops

[backend.postgresql]
connection = host=pg.internal port=5433 dbname=locks user=alice password='p@ss w:rd/\\'%%'
table = leases

[deploy-etcd]
backend = etcd

[deploy-dynamo]
backend = dynamodb
ttl = 30 m

[deploy-pg]
backend = postgresql
principal = dba
";

#[test]
fn all_four_backends() {
    let c = cfg(FULL);
    assert_eq!(c.path(), Some(Path::new(PATH)));

    let p = plan(&c, "anything");
    assert_eq!(secret(&p), "redis://:hunter2@cache.internal:6380/2");
    assert_eq!(p.backend.to_string(), "redis://:***@cache.internal:6380/2");
    assert_eq!(p.backend_name.as_deref(), Some("redis"));
    assert!(p.settings.expect_only(&[]).is_ok());
    assert_eq!(p.principal, "ops@example.com");
    assert_eq!(p.ttl, Duration::from_secs(86_400));

    let p = plan(&c, "deploy-etcd");
    assert_eq!(secret(&p), "etcd+https://:s3cr%25t%3Apw@etcd.internal:2380");
    assert_eq!(p.backend_name.as_deref(), Some("etcd"));
    assert_eq!(p.settings.origin, "/etc/stormlock.cfg [backend.etcd]");
    let s = |k: &str| p.settings.string(k).unwrap();
    assert_eq!(s("prefix").as_deref(), Some("/locks/"));
    assert_eq!(s("ca_file").as_deref(), Some("/etc/ssl/etcd-ca.pem"));
    assert_eq!(s("cert_file").as_deref(), Some("/etc/ssl/client.pem"));
    assert_eq!(s("key_file").as_deref(), Some("/etc/ssl/client.key"));
    assert_eq!(s("username").as_deref(), Some("locker"));
    assert_eq!(
        p.settings.duration("command_timeout").unwrap(),
        Some(Duration::from_secs(7))
    );
    assert!(p
        .settings
        .expect_only(&[
            "prefix",
            "ca_file",
            "cert_file",
            "key_file",
            "username",
            "command_timeout"
        ])
        .is_ok());
    assert_eq!(
        decode(p.backend.secret_url().password().unwrap()),
        "s3cr%t:pw"
    );
    assert!(!p.backend.to_string().contains("s3cr"));

    let p = plan(&c, "deploy-dynamo");
    assert_eq!(
        secret(&p),
        "dynamodb://lockrun?region=eu-west-1&endpoint=http%3A%2F%2Flocalhost%3A8000"
    );
    let q: Vec<(String, String)> = p.backend.secret_url().query_pairs().into_owned().collect();
    assert_eq!(
        q,
        [
            ("region".into(), "eu-west-1".into()),
            ("endpoint".into(), "http://localhost:8000".into())
        ]
    );
    assert_eq!(
        p.settings.string("profile").unwrap().as_deref(),
        Some("ops")
    );
    assert!(p.settings.expect_only(&["profile"]).is_ok());
    assert_eq!(p.ttl, Duration::from_secs(1800));

    let p = plan(&c, "deploy-pg");
    assert_eq!(
        secret(&p),
        "postgres://alice:p%40ss%20w%3Ard%2F%27%25@pg.internal:5433/locks"
    );
    assert_eq!(
        decode(p.backend.secret_url().password().unwrap()),
        "p@ss w:rd/'%"
    );
    // lockrun keeps its own table (stormlock's has another layout).
    assert_eq!(p.settings.string("table").unwrap(), None);
    assert_eq!(p.principal, "dba");
    assert!(!format!("{p:?} {c:?}").contains("p%40ss"));
}

#[test]
fn backend_defaults_without_a_section() {
    let c = cfg("[default]\nbackend = redis\n[a]\nbackend = etcd\n[b]\nbackend = dynamodb\n");
    let p = plan(&c, "x");
    assert_eq!(secret(&p), "redis://localhost:6379");
    let p = plan(&c, "a");
    assert_eq!(secret(&p), "etcd://localhost:2379");
    // stormlock's prefix default is "/", kept so keys line up.
    assert_eq!(p.settings.string("prefix").unwrap().as_deref(), Some("/"));
    assert!(p.settings.expect_only(&["prefix"]).is_ok());
    let p = plan(&c, "b");
    assert_eq!(secret(&p), "dynamodb://lockrun");
    assert!(p.settings.expect_only(&[]).is_ok());

    // stormlock's table names are read but not used: lockrun keeps its own tables.
    let c = cfg("[default]\nbackend = dynamodb\n[backend.dynamodb]\ntable = Ops.Locks_2\n");
    assert_eq!(secret(&plan(&c, "x")), "dynamodb://lockrun");
    let c = cfg(
        "[default]\nbackend = postgresql\n[backend.postgresql]\nconnection = postgresql://u@h/db\n",
    );
    let p = plan(&c, "x");
    assert_eq!(secret(&p), "postgresql://u@h/db");
    assert_eq!(p.settings.string("table").unwrap(), None);

    // redis-py's unix:// is lockrun's redis+unix://.
    let c = cfg("[default]\nbackend = redis\n[backend.redis]\nurl = unix:///run/redis.sock?db=3\n");
    assert_eq!(secret(&plan(&c, "x")), "redis+unix:///run/redis.sock?db=3");
}

#[test]
fn etcd_variants() {
    let c = cfg("[default]\nbackend = etcd\n[backend.etcd]\nprefix =\n");
    assert_eq!(
        plan(&c, "x").settings.string("prefix").unwrap().as_deref(),
        Some("")
    );
    let msg = bad("[default]\nbackend = etcd\n[backend.etcd]\nhost =\n");
    assert!(
        msg.contains(":4: key 'host' in [backend.etcd]: is empty"),
        "{msg}"
    );
    let c = cfg("[default]\nbackend = etcd\n[backend.etcd]\nhost = ::1\n");
    assert_eq!(secret(&plan(&c, "x")), "etcd://[::1]:2379");
    let c = cfg(
        "[default]\nbackend = etcd\n[backend.etcd]\nhost = [fe80::1]\nca_cert = /ca\nuser = u\n",
    );
    let p = plan(&c, "x");
    assert_eq!(secret(&p), "etcd+https://[fe80::1]:2379");
    assert_eq!(p.settings.string("username").unwrap().as_deref(), Some("u"));
}

#[test]
fn resource_section_overrides_default() {
    let c = cfg("\
[default]
principal = from-default
backend = file
ttl = 2 hours
wait = 5 m

[db]
principal = from-resource
ttl = 3 h
run_ttl = 45 s
wait = forever
");
    let p = plan(&c, "db");
    assert_eq!(p.principal, "from-resource");
    assert_eq!(p.ttl, Duration::from_secs(3 * 3600));
    assert_eq!(p.run_ttl, Duration::from_secs(45));
    assert_eq!(p.wait, Wait::Forever);
    assert_eq!(
        p.backend.to_string(),
        "file:///home/u/.local/state/lockrun/"
    );
    let p = plan(&c, "other");
    assert_eq!(p.principal, "from-default");
    assert_eq!(p.ttl, Duration::from_secs(7200));
    assert_eq!(p.run_ttl, Duration::from_secs(30));
    assert_eq!(p.wait, Wait::AtMost(Duration::from_secs(300)));
    // Section names are exact and case-sensitive, as in stormlock.
    assert_eq!(plan(&c, "DB").principal, "from-default");
    // Flags and the environment still come first.
    let flags = Flags {
        principal: Some("from-flag".into()),
        ..Flags::default()
    };
    assert_eq!(plan_with(&c, "db", &flags, &[]).principal, "from-flag");
    let p = plan_with(
        &c,
        "db",
        &Flags::default(),
        &[("LOCKRUN_PRINCIPAL", "from-env")],
    );
    assert_eq!(p.principal, "from-env");
}

#[test]
fn backend_names_from_flags_and_environment() {
    let c = cfg(FULL);
    let flags = Flags {
        backend: Some("dynamodb".into()),
        ..Flags::default()
    };
    let p = plan_with(&c, "deploy-pg", &flags, &[]);
    assert_eq!(
        secret(&p),
        "dynamodb://lockrun?region=eu-west-1&endpoint=http%3A%2F%2Flocalhost%3A8000"
    );
    let p = plan_with(&c, "x", &Flags::default(), &[("LOCKRUN_BACKEND", "etcd")]);
    assert_eq!(p.backend.scheme(), "etcd+https");
    let e = c
        .plan(
            &Resource::new("x").unwrap(),
            &Flags {
                backend: Some("mysql".into()),
                ..Flags::default()
            },
            &env(&[]),
        )
        .unwrap_err();
    assert!(one_liner(&e)
        .contains("unknown backend 'mysql': no [backend.mysql] section in /etc/stormlock.cfg"));
}

#[test]
fn missing_principal_is_user_at_host() {
    let c = cfg("[default]\nbackend = file\nttl = 1 h\n");
    assert_eq!(plan(&c, "x").principal, lease::default_principal());
    // An empty value is unset, as in stormlock: the [default] value applies.
    let c = cfg("[default]\nprincipal = d\n[x]\nprincipal =\n");
    assert_eq!(plan(&c, "x").principal, "d");
}

#[test]
fn unit_prefix_durations() {
    let cases: &[(&str, u64)] = &[
        ("1 days", 86_400),
        ("2 d", 172_800),
        ("2 da", 172_800),
        ("3d", 259_200),
        ("1 h", 3_600),
        ("1 hou", 3_600),
        ("5 m", 300),
        ("5 mi", 300),
        ("5 min", 300),
        ("5 minu", 300),
        ("5 minutes", 300),
        ("5m", 300),
        ("5    m", 300),
        ("7 s", 7),
        ("7 se", 7),
        ("7 seconds", 7),
        // lockrun's own forms too
        ("90", 90),
        ("1h 30m", 5_400),
        ("1.5h", 5_400),
        ("2 hours 3 minutes", 7_380),
    ];
    for (text, secs) in cases {
        let c = cfg(&format!(
            "[default]\nttl = {text}\nrun_ttl = {text}\nwait = {text}\n"
        ));
        let p = plan(&c, "x");
        assert_eq!(p.ttl, Duration::from_secs(*secs), "{text}");
        assert_eq!(p.run_ttl, Duration::from_secs(*secs), "{text}");
        assert_eq!(p.wait, Wait::AtMost(Duration::from_secs(*secs)), "{text}");
    }
    assert_eq!(unit_duration("250ms"), None);
    let c = cfg("[default]\nttl = 250ms\nwait = 0 seconds\n");
    assert_eq!(plan(&c, "x").ttl, Duration::from_millis(250));
    assert_eq!(plan(&c, "x").wait, Wait::AtMost(Duration::ZERO));

    let msg = bad("[default]\nttl = 1 h\n\n[db]\n# why\nttl = 5 x\n");
    assert!(
        msg.starts_with("/etc/stormlock.cfg:6: key 'ttl' in [db]: invalid duration '5 x'"),
        "{msg}"
    );
    let msg = bad("[default]\nttl = 1 H\n");
    assert!(
        msg.starts_with("/etc/stormlock.cfg:2: key 'ttl' in [default]: invalid duration"),
        "{msg}"
    );
    let msg = bad("[default]\nttl = 0 seconds\n");
    assert_eq!(
        msg,
        "/etc/stormlock.cfg:2: key 'ttl' in [default]: must be longer than zero"
    );
    let msg = bad("[default]\nrun_ttl = 99999999999999999999 days\n");
    assert!(
        msg.starts_with("/etc/stormlock.cfg:2: key 'run_ttl' in [default]: "),
        "{msg}"
    );
}

#[test]
fn grammar_continuations_comments_and_case() {
    let text = "\
; a comment
# another
[default]
  # an indented comment
PRINCIPAL: deploy bot
Backend=file
ttl = 2
  h
[multi]
principal = first
  second

  after a blank line
  # a comment inside does not end it
  third
ttl: 1 h ; not a comment in configparser
";
    let c = cfg(&text[..text.find("[multi]").unwrap()]);
    let p = plan(&c, "x");
    assert_eq!(p.principal, "deploy bot");
    assert_eq!(p.ttl, Duration::from_secs(7200), "'2\\nh' is 2 hours");
    let sections = read(text).unwrap();
    let multi = sections.iter().find(|s| s.name == "multi").unwrap();
    assert_eq!(
        multi.get("principal").unwrap().value,
        "first\nsecond\n\nafter a blank line\nthird"
    );
    assert_eq!(
        multi.get("ttl").unwrap().value,
        "1 h ; not a comment in configparser"
    );
    // A control character (the newline) is not allowed in a principal.
    let msg = bad_at(text, PATH);
    assert!(
        msg.starts_with(
            "/etc/stormlock.cfg:10: key 'principal' in [multi]: principal 'first\\nsecond"
        ),
        "{msg}"
    );

    // Header: from the first '[' to the last ']'; anything after is ignored.
    let sections = read("[a]b] trailing\nk = v\n[ spaced ]\n").unwrap();
    let names: Vec<&str> = sections.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a]b", " spaced "]);
    // Values are never unquoted; a value may be empty.
    let sections = read("[x]\nk = 'q'\ne =\nc = a = b : c\n").unwrap();
    let v = |k: &str| sections[0].get(k).unwrap().value.clone();
    assert_eq!(v("k"), "'q'");
    assert_eq!(v("e"), "");
    assert_eq!(v("c"), "a = b : c");
}

#[test]
fn default_section_and_interpolation() {
    let c = cfg("\
[DEFAULT]
principal = %(team)s@example
team = ops
ttl = 1 h

[default]
ttl = 2 h

[res]
team = dev
");
    // configparser: [res] inherits [DEFAULT]'s ttl, which beats [default]'s.
    let p = plan(&c, "res");
    assert_eq!(p.principal, "dev@example");
    assert_eq!(p.ttl, Duration::from_secs(3600));
    let p = plan(&c, "other");
    assert_eq!(p.principal, "ops@example");
    assert_eq!(p.ttl, Duration::from_secs(7200));

    // Without a [default] section, [DEFAULT] is the default of resources without a section: a
    // shared backend there never leaves another resource on the local file backend.
    let c = cfg("\
[DEFAULT]
backend = redis
ttl = 5 m
principal = ops@bastion
team = ops
[backend.redis]
url = redis://h/7
[deploy-prod]
ttl = 2 hours
");
    let p = plan(&c, "other");
    assert_eq!(secret(&p), "redis://h/7");
    assert_eq!(p.ttl, Duration::from_secs(300));
    assert_eq!(p.principal, "ops@bastion");
    let p = plan(&c, "deploy-prod");
    assert_eq!(secret(&p), "redis://h/7");
    assert_eq!(p.ttl, Duration::from_secs(7200));
    // A file of [DEFAULT] alone too.
    let c = cfg("[DEFAULT]\nprincipal = ops@bastion\nttl = 5 m\n");
    let p = plan(&c, "any");
    assert_eq!(p.principal, "ops@bastion");
    assert_eq!(p.ttl, Duration::from_secs(300));

    let c = cfg("[default]\nbackend = redis\n[backend.redis]\nurl = redis://:a%%b@h/0\n");
    assert_eq!(secret(&plan(&c, "x")), "redis://:a%b@h/0");
    let msg = bad("[default]\n\nprincipal = 100%\n");
    assert!(
        msg.starts_with("/etc/stormlock.cfg:3: key 'principal' in [default]: a '%' not followed"),
        "{msg}"
    );
    let msg = bad("[default]\nprincipal = %(nope)s\n");
    assert!(
        msg.contains(":2: key 'principal' in [default]: %(nope)s refers to a key that is not set"),
        "{msg}"
    );
    let msg = bad("[default]\na = %(b)s\nb = %(a)s\nprincipal = %(a)s\n");
    assert!(
        msg.contains(":4: key 'principal' in [default]: more than 10 nested"),
        "{msg}"
    );
    // Each level repeating the one below 30 times: a file of 1.4 KB that would build a value of
    // gigabytes stops at 64 KiB.
    let msg = bad(&laughs(&"x".repeat(120), 7));
    assert!(
        msg.contains(":10: key 'principal' in [default]: the value grows past 64 KiB"),
        "{msg}"
    );
    // The same with nothing at the bottom builds no text, but would expand 30^8 references.
    let msg = bad(&laughs("", 8));
    assert!(
        msg.contains(":11: key 'principal' in [default]: more than 10000 %(key)s references"),
        "{msg}"
    );
}

/// A `[default]` section whose key `k0` is `bottom` and each of `levels` keys above refers 30
/// times to the one below, and whose principal is the top one.
fn laughs(bottom: &str, levels: usize) -> String {
    let mut text = format!("[default]\nk0 = {bottom}\n");
    for i in 1..=levels {
        text += &format!("k{i} = {}\n", format!("%(k{})s", i - 1).repeat(30));
    }
    text + &format!("principal = %(k{levels})s\n")
}

#[test]
fn conninfo_strings() {
    let url = |s: &str| conninfo_url(s).unwrap();
    assert_eq!(url("host=db dbname=locks"), "postgres://db/locks");
    assert_eq!(
        url("  host = db   port = 5432 user=me "),
        "postgres://me@db:5432"
    );
    assert_eq!(
        url(r"host=::1 user='J. O\'Brien' password=a\ b\\c dbname=my/db sslmode=require"),
        "postgres://J.%20O%27Brien:a%20b%5Cc@[::1]/my%2Fdb?sslmode=require"
    );
    // A socket directory goes into the parameters, as libpq allows.
    assert_eq!(
        url("host=/var/run/postgresql dbname=locks user=me password=pw"),
        "postgres:///locks?host=%2Fvar%2Frun%2Fpostgresql&user=me&password=pw"
    );
    assert_eq!(
        url("host=/tmp port=5433"),
        "postgres://?host=%2Ftmp&port=5433"
    );
    assert_eq!(url("host=a host=b"), "postgres://b", "the last one wins");
    assert_eq!(
        url("dbname=x application_name='my app'"),
        "postgres:///x?application_name=my%20app"
    );
    for text in [
        "postgres:///locks?host=%2Fvar%2Frun%2Fpostgresql&user=me",
        "postgres://?host=%2Ftmp&port=5433",
    ] {
        assert!(BackendUrl::parse(text).is_ok(), "{text}");
    }
    let u = BackendUrl::parse(&url("host=h user=u password='%41 b@'")).unwrap();
    assert_eq!(decode(u.secret_url().password().unwrap()), "%41 b@");
    assert!(!u.to_string().contains("41"), "{u}");

    for (text, why) in [
        ("host", "a word without '='"),
        ("password=a b", "a word without '='"),
        (
            "host=h password='open",
            "unterminated quoted value of 'password'",
        ),
        ("   ", "empty"),
        ("host=a,b", "lists of hosts or ports are not supported"),
        ("host=a port=1,2", "lists of hosts or ports"),
    ] {
        let e = conninfo_url(text).unwrap_err();
        assert!(e.contains(why), "{text}: {e}");
    }
    let msg = bad("[default]\nbackend = postgresql\n[backend.postgresql]\nconnection = host=h password='hunter2\n");
    assert!(
        msg.starts_with(
            "/etc/stormlock.cfg:4: key 'connection' in [backend.postgresql]: unterminated"
        ),
        "{msg}"
    );
    assert!(!msg.contains("hunter2"), "{msg}");
}

#[test]
fn mysql_and_other_unsupported_backends() {
    let msg =
        bad("[default]\nbackend = redis\n\n[jobs]\nbackend = mysql\n[backend.mysql]\nuser = x\n");
    assert_eq!(
        msg,
        "/etc/stormlock.cfg:5: key 'backend' in [jobs]: lockrun has no MySQL backend \
         (it has the stormlock types redis, etcd, dynamodb and postgresql, and its own file, \
         memcached:// and kubernetes:// URLs)"
    );
    // An unused [backend.mysql] (or a plugin's section) is left alone.
    let c = cfg("[default]\nbackend = redis\n[backend.mysql]\nuser = x\n[backend.plugin]\nx = y\n");
    assert_eq!(plan(&c, "x").backend_name.as_deref(), Some("redis"));
    let msg = bad("[default]\nbackend = plugin\n");
    assert!(msg.starts_with("/etc/stormlock.cfg:2: key 'backend' in [default]: unknown backend 'plugin' (a stormlock type"), "{msg}");
    // lockrun's own values work too.
    let c = cfg("[default]\nbackend = redis://h:1/0\n[a]\nbackend = /var/lock/x\n");
    assert_eq!(plan(&c, "x").backend.to_string(), "redis://h:1/0");
    assert_eq!(plan(&c, "a").backend.to_string(), "file:///var/lock/x/");
}

#[test]
fn backend_section_errors() {
    let cases: &[(&str, &str)] = &[
        (
            "[backend.redis]\nurl = redis://h\nurll = x\n",
            ":3: unknown key 'urll' in [backend.redis] (stormlock's keys: url)",
        ),
        (
            "[backend.redis]\nurl = http://h\n",
            ":2: key 'url' in [backend.redis]: must start with redis://, rediss:// or unix://",
        ),
        (
            "[backend.redis]\nurl = redis://[::1\n",
            ":2: key 'url' in [backend.redis]: bad backend URL",
        ),
        (
            "[backend.etcd]\nport = 99999\n",
            ":2: key 'port' in [backend.etcd]: '99999' is not a port number",
        ),
        (
            "[backend.etcd]\nhost = a b\n",
            ":2: key 'host' in [backend.etcd]: 'a b' is not a host name or address",
        ),
        (
            "[backend.etcd]\nuser = u\n",
            ":2: key 'user' in [backend.etcd]: needs TLS",
        ),
        (
            "[backend.etcd]\ncert_cert = /c\n",
            ":2: key 'cert_cert' in [backend.etcd]: needs TLS",
        ),
        (
            "[backend.etcd]\ntimeout = 1.5\n",
            ":2: key 'timeout' in [backend.etcd]: '1.5' is not a number of seconds",
        ),
        (
            "[backend.dynamodb]\naccess_key_id = AKIA\n",
            ":2: key 'access_key_id' in [backend.dynamodb]: lockrun takes AWS credentials only",
        ),
        (
            "[backend.dynamodb]\nendpoint = localhost\n",
            ":2: key 'endpoint' in [backend.dynamodb]: 'localhost' is not a URL",
        ),
        (
            "[backend.postgresql]\ntable = t\n",
            ":1: [backend.postgresql] has no 'connection' key",
        ),
        (
            "[backend.postgresql]\nconnection = postgres://h/db\ntable = t\nuser = x\n",
            ":4: unknown key 'user' in [backend.postgresql]",
        ),
    ];
    for (text, want) in cases {
        let msg = bad(text);
        assert!(msg.starts_with(&format!("{PATH}{want}")), "{text:?}: {msg}");
    }
    // A secret value never shows in a message.
    let msg = bad("[backend.dynamodb]\nsecret_access_key = wJalrXUtnFEMI\n");
    assert!(!msg.contains("wJalr"), "{msg}");
    // A missing section is reported where the backend is named.
    let msg = bad("[default]\nttl = 1 h\n\n[db]\nbackend = postgresql\n");
    assert!(
        msg.starts_with("/etc/stormlock.cfg:5: [backend.postgresql] has no 'connection' key"),
        "{msg}"
    );
    // [DEFAULT] keys that a backend does not know are not its typos.
    let c =
        cfg("[DEFAULT]\nttl = 1 h\n[default]\nbackend = redis\n[backend.redis]\nurl = redis://h\n");
    assert_eq!(plan(&c, "x").ttl, Duration::from_secs(3600));
}

#[test]
fn lock_section_errors() {
    let msg = bad("[default]\nttl = 1 h\ntimeout = 5\n");
    assert_eq!(
        msg,
        "/etc/stormlock.cfg:3: unknown key 'timeout' in [default] (known: backend, principal, ttl, run_ttl, wait, fair)"
    );
    let msg = bad("[db]\nttl = 1 h\nTTL = 2 h\n");
    assert_eq!(msg, "/etc/stormlock.cfg:3: key 'ttl' appears twice in [db]");
    let msg = bad("[db]\nttl = 1 h\n\n[db]\n");
    assert_eq!(
        msg,
        "/etc/stormlock.cfg:4: section [db] appears twice (first on line 1)"
    );
    let msg = bad("ttl = 1 h\n[default]\n");
    assert_eq!(
        msg,
        "/etc/stormlock.cfg:1: a line before the first [section] header"
    );
    let msg = bad("[default]\n\njust words\n");
    assert_eq!(
        msg,
        "/etc/stormlock.cfg:3: a line that is neither a [section] header nor 'key = value'"
    );
    let msg = bad("[default]\n= value\n");
    assert_eq!(
        msg,
        "/etc/stormlock.cfg:2: a line with no key before its '=' or ':'"
    );
    let msg = bad("[default]\nbackend = file\n[]\n");
    assert!(
        msg.starts_with("/etc/stormlock.cfg:3: a line that is neither"),
        "{msg}"
    );
    let msg = bad("[default]\nprincipal = a\u{1b}b\n");
    assert!(
        msg.contains(":2: key 'principal' in [default]: principal 'a"),
        "{msg}"
    );
    assert!(msg.ends_with("contains a control character"), "{msg}");
    assert!(!msg.contains('\u{1b}'));
}

#[test]
fn detection() {
    let ini = "[default]\nprincipal = ops\nttl = 5 min\n";
    // By name: *.cfg and *.ini, any case.
    for name in [
        "/x/stormlock.cfg",
        "/x/.stormlock.cfg",
        "/x/a.INI",
        "/x/b.Cfg",
    ] {
        assert!(by_name(Path::new(name)), "{name}");
        let c = Config::parse(ini, Path::new(name)).unwrap();
        assert_eq!(plan(&c, "r").principal, "ops");
    }
    for name in ["/x/config.toml", "/x/cfg", "/x/a.cfg.toml", "/x/ini"] {
        assert!(!by_name(Path::new(name)), "{name}");
    }
    // Not TOML, but INI with a section: INI, whatever the name.
    for name in ["/x/config.toml", "/x/stormlock.conf", "/x/noext"] {
        let c = Config::parse(ini, Path::new(name)).unwrap();
        assert_eq!(plan(&c, "r").ttl, Duration::from_secs(300), "{name}");
    }
    let c = Config::parse(
        "[backend.redis]\nurl = redis://h\n[x]\nbackend = redis\n",
        Path::new("/x/c"),
    )
    .unwrap();
    assert_eq!(plan(&c, "x").backend_name.as_deref(), Some("redis"));
    // Valid TOML is TOML unless the name says otherwise.
    let toml = "[default]\nprincipal = \"ops\"\nttl = 90\n";
    let c = Config::parse(toml, Path::new("/x/config.toml")).unwrap();
    assert_eq!(plan(&c, "r").principal, "ops");
    let c = Config::parse(toml, Path::new("/x/config.cfg")).unwrap();
    assert_eq!(
        plan(&c, "r").principal,
        "\"ops\"",
        "configparser keeps quotes"
    );
    let msg = bad_at(
        "[default]\nbackend = \"shared\"\n[backend.shared]\nurl = \"redis://h\"\n",
        "/x/lockrun.cfg",
    );
    assert!(
        msg.starts_with(
            "/x/lockrun.cfg:2: key 'backend' in [default]: unknown backend '\"shared\"'"
        ),
        "{msg}"
    );
    assert!(
        msg.ends_with(
            "(read as stormlock INI because of its name; name lockrun's TOML files *.toml)"
        ),
        "{msg}"
    );
    // No hint for a genuine stormlock file that happens to be TOML too.
    let msg = bad_at("[default]\nttl = 0\n", "/x/s.cfg");
    assert_eq!(
        msg,
        "/x/s.cfg:2: key 'ttl' in [default]: must be longer than zero"
    );

    // Neither: the TOML error.
    for (text, line) in [
        ("ttl = 5 min\n", 1),                              // no section
        ("[DEFAULT]\nttl = 5 min\n", 2),                   // only [DEFAULT]
        ("[default]\nprincipal = \"ops\"\nttl = 5m\n", 3), // quoted value: meant as TOML
        ("[resource.\"db\"]\nttl = 5m\n", 2),              // lockrun's resource header
        ("[default]\nttl = \"1h\"\nnot ini\n", 3),         // not INI either
    ] {
        let msg = bad_at(text, "/x/config.toml");
        assert!(
            msg.starts_with(&format!("/x/config.toml:{line}: invalid TOML: ")),
            "{text:?}: {msg}"
        );
    }
    // An error in a file read as INI because it is not TOML says so, with the TOML error.
    let msg = bad_at("[default]\nttl = 5 x\n", "/x/config.toml");
    assert!(
        msg.starts_with("/x/config.toml:2: key 'ttl' in [default]: invalid duration '5 x'"),
        "{msg}"
    );
    assert!(
        msg.contains(" (read as stormlock INI because it is not TOML, line 2: invalid TOML: "),
        "{msg}"
    );
}

#[test]
fn found_by_search_too() {
    // The search path reads whatever it finds the same way.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lockrun/config.toml");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, "[default]\nprincipal = found\n").unwrap();
    let xdg = dir.path().to_str().unwrap();
    let c = Config::load(&Flags::default(), &env(&[("XDG_CONFIG_HOME", xdg)])).unwrap();
    assert_eq!(plan(&c, "x").principal, "found");
}
