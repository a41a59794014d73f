//! The Lua scripts (one atomic round trip per operation) and the decoding of their replies.
//!
//! Every script starts with the same prelude: `now_ms()` reads the server clock (`TIME`), and
//! `read(key)` checks that a key is a lockrun lease (a hash with `lockrun = 1`, the fields `id`,
//! `principal`, `token`, `acquired_ms`, `ttl_ms` with numbers where numbers belong, and an expiry)
//! before anything trusts or changes it. A key that fails the check is reported, never written.
//!
//! Replies are arrays whose first element says what happened:
//!
//! | reply                                                   | scripts                 |
//! |---------------------------------------------------------|-------------------------|
//! | `acquired`/`busy`/`renewed`/`held`, then the [`Record`] | acquire, renew, current |
//! | `lost`, `none`, `not-held`, `released`, `kept`          | renew, current, release |
//! | `corrupt`, key, reason                                  | all                     |

use std::time::{Duration, UNIX_EPOCH};

use ::redis::{Script, Value};

use crate::backend::Error;
use crate::lease::{escape, Lease, LeaseId, Resource};

const PRELUDE: &str = r#"
-- Redis 3.2 to 4 need this before a write that follows TIME; later versions ignore it.
if redis.replicate_commands then redis.replicate_commands() end
local function now_ms()
  local t = redis.call('TIME')
  return t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
end
-- nil: no key; {reason}: not a lockrun lease; else the fields and the PTTL.
local function read(key)
  local kind = redis.call('TYPE', key)['ok']
  if kind == 'none' then return nil end
  if kind ~= 'hash' then return {'a ' .. kind .. ', not a hash'} end
  local f = redis.call('HMGET', key, 'lockrun', 'id', 'principal', 'token', 'acquired_ms', 'ttl_ms')
  if f[1] ~= '1' then return {'no lockrun marker field'} end
  local names = {'', 'id', 'principal', 'token', 'acquired_ms', 'ttl_ms'}
  for i = 2, 6 do
    if not f[i] then return {'field ' .. names[i] .. ' is missing'} end
  end
  for i = 4, 6 do
    if not string.match(f[i], '^%d+$') then return {'field ' .. names[i] .. ' is not a number'} end
    -- Beyond what lockrun writes (a token, milliseconds since 1970, a TTL up to 10 years), and
    -- what a 64-bit integer or a Lua number holds exactly.
    if #f[i] > 15 then return {'field ' .. names[i] .. ' is too large'} end
  end
  local pttl = redis.call('PTTL', key)
  if pttl < 0 then return {'it has no expiry'} end
  return {f[2], f[3], f[4], f[5], f[6], pttl}
end
"#;

/// KEYS: lease, counter. ARGV: id, principal, ttl_ms.
const ACQUIRE: &str = r#"
local f = read(KEYS[1])
if f and #f == 1 then return {'corrupt', KEYS[1], f[1]} end
local now = now_ms()
if f then
  if f[1] ~= ARGV[1] then return {'busy', f[1], f[2], f[3], f[4], f[5], f[6], now} end
  -- This very request again (its answer was lost): grant it again, from now.
  redis.call('HSET', KEYS[1], 'ttl_ms', ARGV[3], 'renewed_ms', now)
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {'acquired', f[1], f[2], f[3], f[4], ARGV[3], ARGV[3], now}
end
local c = redis.call('TYPE', KEYS[2])['ok']
if c ~= 'none' then
  if c ~= 'string' then return {'corrupt', KEYS[2], 'a ' .. c .. ', not a counter'} end
  local n = redis.call('GET', KEYS[2])
  if not string.match(n, '^%d+$') then return {'corrupt', KEYS[2], 'not a number'} end
  if #n > 15 then return {'corrupt', KEYS[2], 'too large'} end
end
redis.call('INCR', KEYS[2])
local token = redis.call('GET', KEYS[2])
redis.call('HSET', KEYS[1], 'lockrun', '1', 'id', ARGV[1], 'principal', ARGV[2], 'token', token,
  'acquired_ms', now, 'ttl_ms', ARGV[3], 'renewed_ms', now)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {'acquired', ARGV[1], ARGV[2], token, now, ARGV[3], ARGV[3], now}
"#;

/// KEYS: lease. ARGV: id, ttl_ms.
const RENEW: &str = r#"
local f = read(KEYS[1])
if f and #f == 1 then return {'corrupt', KEYS[1], f[1]} end
if not f or f[1] ~= ARGV[1] then return {'lost'} end
local now = now_ms()
redis.call('HSET', KEYS[1], 'ttl_ms', ARGV[2], 'renewed_ms', now)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {'renewed', f[1], f[2], f[3], f[4], ARGV[2], ARGV[2], now}
"#;

/// KEYS: lease. ARGV: id, channel, and optionally a fencing token: the lease is then released
/// only if it holds another token than that one (see `Redis::undo_late_grants`).
const RELEASE: &str = r#"
local f = read(KEYS[1])
if f and #f == 1 then return {'corrupt', KEYS[1], f[1]} end
if not f or f[1] ~= ARGV[1] then return {'not-held'} end
if ARGV[3] and f[3] == ARGV[3] then return {'kept'} end
redis.call('DEL', KEYS[1])
-- A user the server does not let publish on the channel (ACL, Redis 7's resetchannels default)
-- has released all the same; its waiters then notice at their poll.
redis.pcall('PUBLISH', ARGV[2], 'released')
return {'released'}
"#;

/// KEYS: lease.
const CURRENT: &str = r#"
local f = read(KEYS[1])
if f and #f == 1 then return {'corrupt', KEYS[1], f[1]} end
if not f then return {'none'} end
return {'held', f[1], f[2], f[3], f[4], f[5], f[6], now_ms()}
"#;

/// The release script's source, for an `EVAL` that must not depend on the script cache (see
/// `Redis::release`).
pub(super) fn release_source() -> String {
    format!("{PRELUDE}{RELEASE}")
}

/// The four scripts, hashed once.
pub(super) struct Scripts {
    pub acquire: Script,
    pub renew: Script,
    pub release: Script,
    pub current: Script,
}

impl Scripts {
    pub fn new() -> Scripts {
        let s = |body: &str| Script::new(&format!("{PRELUDE}{body}"));
        Scripts {
            acquire: s(ACQUIRE),
            renew: s(RENEW),
            release: s(RELEASE),
            current: s(CURRENT),
        }
    }
}

/// A lease as a script returns it, all times from the server clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Record {
    pub id: String,
    pub principal: String,
    pub token: u64,
    pub acquired_ms: u64,
    pub ttl_ms: u64,
    /// What is left of the lease, in milliseconds.
    pub pttl_ms: u64,
    /// The server's clock when the script ran.
    pub now_ms: u64,
}

/// A decoded script reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Reply {
    /// `acquired`, `busy`, `renewed` or `held`, with the lease.
    Lease(String, Record),
    /// `lost`, `none`, `not-held` or `released`.
    Plain(String),
    Corrupt {
        key: String,
        reason: String,
    },
}

impl Reply {
    /// Decodes a script's reply; an unexpected shape is a protocol error.
    pub fn decode(value: Value) -> Result<Reply, Error> {
        let bad = || Error::Other(format!("unexpected reply from a lockrun script: {value:?}"));
        let Value::Array(items) = &value else {
            return Err(bad());
        };
        let texts: Vec<String> = items
            .iter()
            .map(text)
            .collect::<Option<_>>()
            .ok_or_else(bad)?;
        match texts.as_slice() {
            [status, key, reason] if status == "corrupt" => Ok(Reply::Corrupt {
                key: key.clone(),
                reason: reason.clone(),
            }),
            [status] => Ok(Reply::Plain(status.clone())),
            [status, id, principal, token, acquired, ttl, pttl, now] => {
                let num = |s: &str| s.parse::<u64>().map_err(|_| bad());
                Ok(Reply::Lease(
                    status.clone(),
                    Record {
                        id: id.clone(),
                        principal: principal.clone(),
                        token: num(token)?,
                        acquired_ms: num(acquired)?,
                        ttl_ms: num(ttl)?,
                        pttl_ms: num(pttl)?,
                        now_ms: num(now)?,
                    },
                ))
            }
            _ => Err(bad()),
        }
    }
}

/// A reply element as text (scripts return strings and integers).
fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

impl Record {
    /// The lease this record describes, on `resource` (stored in `key`).
    pub fn lease(&self, resource: &Resource, key: &str) -> Result<Lease, Error> {
        let id = LeaseId::parse(&self.id)
            .map_err(|_| corrupt(key, "field id is not a lockrun lease id", false))?;
        let ms = Duration::from_millis;
        Ok(Lease {
            resource: resource.clone(),
            id,
            principal: self.principal.clone(),
            fencing_token: Some(self.token),
            acquired_at: UNIX_EPOCH + ms(self.acquired_ms),
            expires_at: UNIX_EPOCH + ms(self.now_ms.saturating_add(self.pttl_ms)),
            ttl: ms(self.ttl_ms),
        })
    }

    /// How long until the lease runs out, by the server's count.
    pub fn expires_in(&self) -> Duration {
        Duration::from_millis(self.pttl_ms)
    }
}

/// The error for a key that is not what lockrun stores there (`counter`: the token counter).
pub(super) fn corrupt(key: &str, reason: &str, counter: bool) -> Error {
    let what = if counter {
        "a lockrun fencing counter"
    } else {
        "a lockrun lease"
    };
    Error::Corrupt(format!(
        "redis key '{}' holds a value that is not {what} ({reason}); inspect or delete it",
        escape(key)
    ))
}

/// A lease time in milliseconds for PEXPIRE: at least 1.
pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn lease_reply(status: &str, id: &str, token: &str) -> Value {
        Value::Array(vec![
            bulk(status),
            bulk(id),
            bulk("me@host"),
            bulk(token),
            bulk("1700000000000"),
            bulk("30000"),
            Value::Int(29_500),
            bulk("1700000000500"),
        ])
    }

    #[test]
    fn decodes_a_lease() {
        let id = "0123456789abcdef0123456789abcdef";
        let Reply::Lease(status, rec) = Reply::decode(lease_reply("busy", id, "42")).unwrap()
        else {
            panic!("not a lease")
        };
        assert_eq!(status, "busy");
        assert_eq!(rec.token, 42);
        assert_eq!(rec.expires_in(), Duration::from_millis(29_500));
        let r = Resource::new("db").unwrap();
        let lease = rec.lease(&r, "lockrun:lease:db").unwrap();
        assert_eq!(lease.id.as_str(), id);
        assert_eq!(lease.fencing_token, Some(42));
        assert_eq!(lease.principal, "me@host");
        assert_eq!(lease.ttl, Duration::from_secs(30));
        assert_eq!(
            lease.acquired_at,
            UNIX_EPOCH + Duration::from_millis(1_700_000_000_000)
        );
        assert_eq!(
            lease.expires_at,
            UNIX_EPOCH + Duration::from_millis(1_700_000_030_000)
        );
    }

    #[test]
    fn decodes_plain_and_corrupt() {
        assert_eq!(
            Reply::decode(Value::Array(vec![bulk("lost")])).unwrap(),
            Reply::Plain("lost".into())
        );
        assert_eq!(
            Reply::decode(Value::Array(vec![bulk("corrupt"), bulk("k"), bulk("why")])).unwrap(),
            Reply::Corrupt {
                key: "k".into(),
                reason: "why".into()
            }
        );
    }

    #[test]
    fn rejects_odd_replies() {
        assert!(matches!(Reply::decode(Value::Nil), Err(Error::Other(_))));
        assert!(matches!(
            Reply::decode(Value::Array(vec![bulk("a"), bulk("b")])),
            Err(Error::Other(_))
        ));
        assert!(matches!(
            Reply::decode(lease_reply("held", "abc", "not-a-number")),
            Err(Error::Other(_))
        ));
        assert!(matches!(
            Reply::decode(Value::Array(vec![Value::Nil])),
            Err(Error::Other(_))
        ));
    }

    #[test]
    fn a_bad_stored_id_is_corrupt() {
        let Reply::Lease(_, rec) = Reply::decode(lease_reply("held", "has space", "1")).unwrap()
        else {
            panic!()
        };
        let r = Resource::new("db").unwrap();
        match rec.lease(&r, "p:lease:db") {
            Err(Error::Corrupt(m)) => {
                assert!(
                    m.contains("redis key 'p:lease:db' holds a value that is not a lockrun lease"),
                    "{m}"
                );
                assert!(m.ends_with("inspect or delete it"), "{m}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn corrupt_messages_name_the_kind_of_key() {
        let Error::Corrupt(m) = corrupt("p:token:db", "not a number", true) else {
            panic!()
        };
        assert!(m.contains("not a lockrun fencing counter"), "{m}");
        let Error::Corrupt(m) = corrupt("p:lease:x\x1b", "a string, not a hash", false) else {
            panic!()
        };
        assert!(
            m.contains("not a lockrun lease (a string, not a hash)"),
            "{m}"
        );
        assert!(!m.contains('\x1b'));
    }

    #[test]
    fn millis_is_never_zero() {
        assert_eq!(millis(Duration::ZERO), 1);
        assert_eq!(millis(Duration::from_micros(1500)), 1);
        assert_eq!(millis(Duration::from_secs(2)), 2000);
    }
}
