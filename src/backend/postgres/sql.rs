//! The SQL text, built once per table, and decoding of the rows it returns.
//!
//! Every verb is one statement. The lease statements return rows of one shape, `done, lease_id,
//! principal, token, acquired_at, expires_at, ttl_ms, released, live, left_ms`: whether the write
//! happened, the row's columns, whether it is live and how many milliseconds it has left, the last
//! two by the server's `clock_timestamp()`. `renew` returns the row as it stands when the write did
//! not happen. `acquire` and `release` return no row then: they are kept plain, because every
//! lockrun process runs them on a fresh server session, where parsing and planning a statement
//! costs more than running it; the caller then reads the row with `current`, to report a busy
//! holder or a damaged row.

use std::time::{Duration, SystemTime};

use tokio_postgres::Row;

use super::options::{quote, Table};
use crate::lease::{escape, Lease, LeaseId, Resource};

/// The statements for one table.
#[derive(Debug, Clone)]
pub struct Sql {
    pub acquire: String,
    pub renew: String,
    pub release: String,
    /// `release`, but a lease holding fencing token `$4` is kept (see the `behind` module).
    pub release_unless: String,
    pub current: String,
    /// The resources of live rows (server clock; uses the expiry index).
    pub live: String,
    /// `CREATE TABLE IF NOT EXISTS` + index, for the simple-query protocol (one transaction).
    pub create: String,
    /// Whether the table exists, whether it has the expiry index (`$1`: the quoted name).
    pub inspect: String,
    /// The table's columns and their types (`$1`: the quoted name).
    pub columns: String,
}

/// The columns lockrun needs, with their types as `format_type` spells them.
pub const EXPECTED: &[(&str, &str)] = &[
    ("resource", "text"),
    ("lease_id", "text"),
    ("principal", "text"),
    ("token", "bigint"),
    ("acquired_at", "timestamp with time zone"),
    ("expires_at", "timestamp with time zone"),
    ("ttl_ms", "bigint"),
    ("released", "boolean"),
];

/// The stored columns of alias `a`.
fn cols(a: &str) -> String {
    format!(
        "{a}.lease_id, {a}.principal, {a}.token, {a}.acquired_at, {a}.expires_at, {a}.ttl_ms, \
         {a}.released"
    )
}

/// Liveness and time left of alias `a`, by the server's clock (time left is NULL for the
/// infinite timestamps of a foreign row, which cannot be subtracted).
fn clock(a: &str) -> String {
    format!(
        "(NOT {a}.released AND {a}.expires_at > clock_timestamp()) AS live, \
         CASE WHEN isfinite({a}.acquired_at) AND isfinite({a}.expires_at) \
           THEN (extract(epoch FROM {a}.expires_at - clock_timestamp()) * 1000)::float8 \
         END AS left_ms"
    )
}

/// The characters of a lease id (see [`LeaseId::parse`]).
const ID_CHARS: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-";

/// A row lockrun wrote itself. Rows that fail this are never taken over, renewed or released.
///
/// The lease id's shape (1 to 128 of [`ID_CHARS`]) is checked with `length` and `ltrim`, not
/// with a regular expression: a server process compiles a regular expression the first time it
/// evaluates one, and `^[A-Za-z0-9._:-]{1,128}$` took 0.2-0.3 ms to compile, paid by every
/// takeover (each `lockrun` is a fresh server session), on the handoff from one holder to the
/// next.
fn valid(a: &str) -> String {
    format!(
        "(length({a}.lease_id) BETWEEN 1 AND {max} AND ltrim({a}.lease_id, '{ID_CHARS}') = '' \
         AND {rest})",
        max = crate::lease::MAX_LEASE_ID_LEN,
        rest = valid_but_id(a)
    )
}

/// [`valid`] without the lease id's shape, for statements that compare the lease id with one
/// lockrun checked (renew, release): the shape then holds already, and leaving it out spares
/// a fresh session the planning of three more expressions.
fn valid_but_id(a: &str) -> String {
    format!(
        "({a}.token >= 1 AND {a}.principal IS NOT NULL AND {a}.ttl_ms >= 1 \
         AND {a}.released IS NOT NULL AND isfinite({a}.acquired_at) AND isfinite({a}.expires_at))"
    )
}

impl Sql {
    pub fn new(table: &Table) -> Sql {
        let t = table.sql();
        let (valid_t, cols_t, cols_h, clock_h) = (valid("t"), cols("t"), cols("h"), clock("h"));
        let ours_t = valid_but_id("t");
        let holder = format!(
            "SELECT false AS done, {cols_h}, {clock_h} FROM {t} AS h WHERE h.resource = $1"
        );
        // $1 resource, $2 lease id, $3 principal, $4 ttl in ms, $5 the same as float8 (so that
        // `$5 * interval` is an operator of exactly those types: resolving int8 * interval
        // searches every `*`, a cost every fresh session pays). A plain INSERT, so that it is
        // cheap to parse and plan (every lockrun process runs it on a fresh server session):
        // no row back means busy, and the caller reads the holder with `current`.
        let acquire = format!(
            "INSERT INTO {t} AS t \
               (resource, lease_id, principal, token, acquired_at, expires_at, ttl_ms, released) \
             VALUES ($1, $2, $3, 1, clock_timestamp(), \
                     clock_timestamp() + $5 * interval '1 millisecond', $4, false) \
             ON CONFLICT (resource) DO UPDATE SET \
               lease_id = excluded.lease_id, principal = excluded.principal, \
               token = t.token + 1, acquired_at = clock_timestamp(), \
               expires_at = clock_timestamp() + $5 * interval '1 millisecond', \
               ttl_ms = excluded.ttl_ms, released = false \
             WHERE (t.released OR t.expires_at <= clock_timestamp()) AND {valid_t} \
             RETURNING true AS done, {cols_t}, {clock_t}",
            clock_t = clock("t"),
        );
        // $1 resource, $2 lease id, $3 ttl in ms, $4 the same as float8.
        let renew = format!(
            "WITH renewed AS (\
               UPDATE {t} AS t SET \
                 expires_at = clock_timestamp() + $4 * interval '1 millisecond', ttl_ms = $3 \
               WHERE t.resource = $1 AND t.lease_id = $2 AND NOT t.released \
                 AND t.expires_at > clock_timestamp() AND {ours_t} \
               RETURNING {cols_t}) \
             SELECT true AS done, {cols_r}, {clock_r} FROM renewed AS r \
             UNION ALL {holder} AND NOT EXISTS (SELECT 1 FROM renewed)",
            cols_r = cols("r"),
            clock_r = clock("r"),
        );
        // $1 resource, $2 lease id, $3 channel. One row when released (the notification goes
        // out at commit), none otherwise: the caller then reads the row with `current`.
        //
        // A release commits without waiting for its WAL to reach disk (`synchronous_commit`
        // off for this transaction alone): it is on the handoff's path, and a release that a
        // server crash forgets only leaves the lease to expire, as a crashed holder's would.
        // The next grant's commit is synchronous and comes later in the WAL, so no grant can
        // survive a crash that forgot the release before it. Acquire and renew stay durable:
        // forgetting either could let two holders overlap, or repeat a fencing token.
        let release = format!(
            "UPDATE {t} AS t SET released = true, expires_at = clock_timestamp() \
             WHERE t.resource = $1 AND t.lease_id = $2 AND NOT t.released \
               AND t.expires_at > clock_timestamp() AND {ours_t} \
             RETURNING pg_notify($3, t.resource) IS NULL AS notified, \
               set_config('synchronous_commit', 'off', true) AS sync"
        );
        // $4 a fencing token: the lease holding it is not released.
        let release_unless = format!(
            "UPDATE {t} AS t SET released = true, expires_at = clock_timestamp() \
             WHERE t.resource = $1 AND t.lease_id = $2 AND NOT t.released \
               AND t.expires_at > clock_timestamp() AND {ours_t} AND t.token <> $4 \
             RETURNING pg_notify($3, t.resource) IS NULL AS notified"
        );
        let create = format!(
            "CREATE TABLE IF NOT EXISTS {t} (\n\
             \x20   resource    text PRIMARY KEY,\n\
             \x20   lease_id    text NOT NULL,\n\
             \x20   principal   text NOT NULL,\n\
             \x20   token       bigint NOT NULL,\n\
             \x20   acquired_at timestamptz NOT NULL,\n\
             \x20   expires_at  timestamptz NOT NULL,\n\
             \x20   ttl_ms      bigint NOT NULL,\n\
             \x20   released    boolean NOT NULL DEFAULT false\n\
             );\n\
             CREATE INDEX IF NOT EXISTS {idx} ON {t} (expires_at);",
            idx = table.index_sql(),
        );
        let inspect = "SELECT c.oid IS NOT NULL AS exists, \
               EXISTS (SELECT 1 FROM pg_index i \
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
                 WHERE i.indrelid = c.oid AND a.attname = 'expires_at') AS indexed \
             FROM (SELECT to_regclass($1)::oid AS oid) AS c"
            .to_owned();
        let columns = "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) \
             FROM pg_attribute a \
             WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped"
            .to_owned();
        let live = format!(
            "SELECT resource FROM {t} WHERE NOT released AND expires_at > clock_timestamp() \
             ORDER BY resource"
        );
        Sql {
            acquire,
            renew,
            release,
            release_unless,
            current: holder,
            live,
            create,
            inspect,
            columns,
        }
    }
}

/// `CREATE SCHEMA IF NOT EXISTS` for a schema that is missing.
pub fn create_schema(schema: &str) -> String {
    format!("CREATE SCHEMA IF NOT EXISTS {}", quote(schema))
}

/// One row of a lease statement, every value optional so that NULLs in a foreign row are reported
/// rather than failing the decoding.
#[derive(Debug, Clone)]
pub struct Stored {
    pub done: bool,
    lease_id: Option<String>,
    principal: Option<String>,
    token: Option<i64>,
    acquired_at: Option<SystemTime>,
    expires_at: Option<SystemTime>,
    ttl_ms: Option<i64>,
    released: Option<bool>,
    pub live: bool,
    left_ms: Option<f64>,
}

impl Stored {
    /// Decodes a row; fails, naming the column, when a column has a type lockrun does not use.
    pub fn decode(row: &Row) -> Result<Stored, String> {
        fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
            row: &'a Row,
            i: usize,
        ) -> Result<T, String> {
            row.try_get(i).map_err(|_| match row.columns().get(i) {
                Some(c) => format!("column {} is of type {}", c.name(), c.type_()),
                None => format!("the statement returned {} columns", row.len()),
            })
        }
        Ok(Stored {
            done: get::<Option<bool>>(row, 0)?.unwrap_or(false),
            lease_id: get(row, 1)?,
            principal: get(row, 2)?,
            token: get(row, 3)?,
            acquired_at: get(row, 4)?,
            expires_at: get(row, 5)?,
            ttl_ms: get(row, 6)?,
            released: get(row, 7)?,
            live: get::<Option<bool>>(row, 8)?.unwrap_or(false),
            left_ms: get(row, 9)?,
        })
    }

    /// How long until the lease runs out, by the server's clock (zero when it has).
    pub fn expires_in(&self) -> Option<Duration> {
        let ms = self.left_ms?;
        Duration::try_from_secs_f64(ms.max(0.0) / 1000.0).ok()
    }

    /// The lease this row describes, or why it is not a lockrun lease.
    pub fn lease(&self, resource: &Resource) -> Result<Lease, String> {
        let id = match self.lease_id.as_deref() {
            None => return Err("lease_id is NULL".into()),
            Some(text) => LeaseId::parse(text).map_err(|_| {
                format!(
                    "lease_id '{}' is empty or malformed",
                    escape(&text.chars().take(40).collect::<String>())
                )
            })?,
        };
        let principal = self.principal.clone().ok_or("principal is NULL")?;
        let token = match self.token {
            Some(t) if t >= 1 => t as u64,
            Some(t) => return Err(format!("token {t} is not positive")),
            None => return Err("token is NULL".into()),
        };
        let ttl = match self.ttl_ms {
            Some(ms) if ms >= 1 => Duration::from_millis(ms as u64),
            Some(ms) => return Err(format!("ttl_ms {ms} is not positive")),
            None => return Err("ttl_ms is NULL".into()),
        };
        let acquired_at = self.acquired_at.ok_or("acquired_at is NULL")?;
        let expires_at = self.expires_at.ok_or("expires_at is NULL")?;
        if self.left_ms.is_none() {
            return Err("acquired_at or expires_at is not a finite time".into());
        }
        if self.released.is_none() {
            return Err("released is NULL".into());
        }
        Ok(Lease {
            resource: resource.clone(),
            id,
            principal,
            fencing_token: Some(token),
            acquired_at,
            expires_at,
            ttl,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored() -> Stored {
        Stored {
            done: false,
            lease_id: Some("0123456789abcdef0123456789abcdef".into()),
            principal: Some("me@host".into()),
            token: Some(7),
            acquired_at: Some(SystemTime::UNIX_EPOCH),
            expires_at: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(30)),
            ttl_ms: Some(30_000),
            released: Some(false),
            live: true,
            left_ms: Some(1500.0),
        }
    }

    #[test]
    fn the_id_characters_are_the_lease_ids() {
        let all: String = (0u8..128).map(char::from).collect();
        let allowed: String = all.chars().filter(|c| ID_CHARS.contains(*c)).collect();
        assert_eq!(allowed.len(), ID_CHARS.len());
        for c in all.chars() {
            let id = format!("a{c}b");
            assert_eq!(
                LeaseId::parse(&id).is_ok(),
                ID_CHARS.contains(c),
                "{c:?} in a lease id"
            );
        }
        assert!(!ID_CHARS.contains('\''), "the set is quoted in SQL as is");
    }

    #[test]
    fn decodes_valid_rows() {
        let r = Resource::new("r").unwrap();
        let l = stored().lease(&r).unwrap();
        assert_eq!(l.fencing_token, Some(7));
        assert_eq!(l.ttl, Duration::from_secs(30));
        assert_eq!(stored().expires_in(), Some(Duration::from_millis(1500)));
        let s = Stored {
            left_ms: Some(-20.0),
            ..stored()
        };
        assert_eq!(s.expires_in(), Some(Duration::ZERO));
        let s = Stored {
            left_ms: Some(f64::NAN),
            ..stored()
        };
        assert_eq!(s.expires_in(), Some(Duration::ZERO));
    }

    #[test]
    fn rejects_foreign_rows() {
        let r = Resource::new("r").unwrap();
        let cases = [
            (
                Stored {
                    token: Some(-5),
                    ..stored()
                },
                "token -5",
            ),
            (
                Stored {
                    token: None,
                    ..stored()
                },
                "token is NULL",
            ),
            (
                Stored {
                    lease_id: Some(String::new()),
                    ..stored()
                },
                "lease_id",
            ),
            (
                Stored {
                    lease_id: Some("has space".into()),
                    ..stored()
                },
                "malformed",
            ),
            (
                Stored {
                    ttl_ms: Some(0),
                    ..stored()
                },
                "ttl_ms 0",
            ),
            (
                Stored {
                    released: None,
                    ..stored()
                },
                "released",
            ),
            (
                Stored {
                    left_ms: None,
                    ..stored()
                },
                "not a finite time",
            ),
        ];
        for (s, needle) in cases {
            let e = s.lease(&r).unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn statements_quote_the_table() {
        let sql = Sql::new(&Table {
            schema: Some("ops".into()),
            name: "leases".into(),
        });
        for s in [
            &sql.acquire,
            &sql.renew,
            &sql.release,
            &sql.current,
            &sql.create,
        ] {
            assert!(s.contains("\"ops\".\"leases\""), "{s}");
        }
        assert!(sql.acquire.contains("ON CONFLICT (resource) DO UPDATE"));
        assert!(sql.release.contains("pg_notify($3"));
        assert!(
            !sql.acquire.contains("now()"),
            "server clock is clock_timestamp()"
        );
        // No regular expression (compiled by each fresh server session on first use).
        for s in [&sql.acquire, &sql.renew, &sql.release, &sql.current] {
            assert!(!s.contains(" ~ "), "{s}");
        }
        assert!(sql
            .acquire
            .contains(&format!("ltrim(t.lease_id, '{ID_CHARS}') = ''")));
        assert!(sql
            .create
            .contains("INDEX IF NOT EXISTS \"leases_expires_at_idx\" ON \"ops\".\"leases\""));
    }
}
