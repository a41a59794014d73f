//! tokio-postgres errors → [`Error`]: what retrying can fix (Unavailable, or Unreached for a
//! statement the server refused, which was not applied) and what it cannot (Config, Corrupt). Messages name the server as `host:port/db`, never the password.

use std::error::Error as _;

use tokio_postgres::error::DbError;

use crate::backend::Error;

/// SQLSTATEs that mean "the table is not there yet": undefined_table, invalid_schema_name.
pub const MISSING_TABLE: &[&str] = &["42P01", "3F000"];
/// SQLSTATEs that mean "this table does not have lockrun's shape".
pub const WRONG_SHAPE: &[&str] = &[
    "42703", // undefined_column
    "42804", // datatype_mismatch
    "42P10", // invalid_column_reference: no unique constraint for ON CONFLICT
    "42809", // wrong_object_type: a view or sequence
    "42883", // undefined_function: an operator on a column of the wrong type
    "42846", // cannot_coerce
    "428C9", // generated_always
];
/// SQLSTATEs of a concurrent `CREATE ... IF NOT EXISTS` that lost the race (the object exists).
pub const ALREADY_EXISTS: &[&str] = &["23505", "42P07", "42710"];

/// The SQLSTATE of a server error, if it is one.
pub fn sqlstate(e: &tokio_postgres::Error) -> Option<&str> {
    e.code().map(|c| c.code())
}

/// Whether the connection cannot be used any more.
pub fn is_connection_lost(e: &tokio_postgres::Error) -> bool {
    e.is_closed()
        || has_io_cause(e)
        || sqlstate(e).is_some_and(|c| c.starts_with("08") || c.starts_with("57P"))
}

fn has_io_cause(e: &tokio_postgres::Error) -> bool {
    let mut cause = e.source();
    while let Some(c) = cause {
        if c.is::<std::io::Error>() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// Maps an error from the server at `endpoint`.
/// Whether `e` is a failed or impossible authentication (wrong or missing password).
pub fn is_auth(e: &tokio_postgres::Error) -> bool {
    if let Some(db) = e.as_db_error() {
        return db.code().code().starts_with("28");
    }
    let cause = e.source().map(|c| c.to_string());
    e.to_string().starts_with("authentication error")
        || cause.as_deref() == Some("password missing")
}

pub fn classify(e: &tokio_postgres::Error, endpoint: &str) -> Error {
    if let Some(db) = e.as_db_error() {
        return from_db(db, endpoint);
    }
    let top = e.to_string();
    let cause = e.source().map(|c| c.to_string());
    let what = match &cause {
        Some(c) => format!("{top}: {c}"),
        None => top.clone(),
    };
    let at = format!("PostgreSQL at {endpoint}");
    if top.starts_with("error performing TLS handshake") {
        return Error::Config(match cause.as_deref() {
            Some("server does not support TLS") => {
                format!("{at} does not offer TLS, but sslmode requires it")
            }
            Some(c) if c.contains("not valid for name") => format!(
                "{at}: {what} (sslmode=verify-full needs a certificate for the host in the URL; \
                 verify-ca does not check the name)"
            ),
            Some(c) if c.starts_with("invalid peer certificate") => format!(
                "{at}: {what} (sslrootcert must name the CA that signed the server's certificate)"
            ),
            _ => format!("{at}: {what}"),
        });
    }
    if is_auth(e) {
        return Error::Config(format!(
            "{at}: {what} (give the password in the URL, password_file, \
             LOCKRUN_POSTGRES_PASSWORD, PGPASSWORD or ~/.pgpass)"
        ));
    }
    if top.starts_with("invalid configuration") || top.starts_with("invalid connection string") {
        return Error::Config(format!("{at}: {what}"));
    }
    if e.is_closed()
        || has_io_cause(e)
        || top.starts_with("error connecting")
        || top.starts_with("error communicating")
        || top.starts_with("timeout")
    {
        return Error::Unavailable(format!("{at}: {what}"));
    }
    Error::Other(format!("{at}: {what}"))
}

fn from_db(db: &DbError, endpoint: &str) -> Error {
    let code = db.code().code();
    let mut msg = format!("PostgreSQL at {endpoint}: {}", db.message());
    if code == "25006" {
        // Unavailable, not a configuration error: during a failover the address may reach the
        // old primary, read-only for a moment. A server that stays so needs the hint.
        msg += " (the server is read-only: a standby, or default_transaction_read_only; \
                 point lockrun at the primary)";
    }
    let class = &code[..2.min(code.len())];
    match (class, code) {
        // Authentication, unknown database, privileges, missing or misshapen objects.
        ("28", _) | (_, "3D000" | "42501") => Error::Config(msg),
        (_, c) if MISSING_TABLE.contains(&c) || WRONG_SHAPE.contains(&c) => Error::Config(msg),
        // A setting the URL's `options=-c name=value` gives at the session's start: unknown
        // (undefined_object), or a value the server refuses (invalid_parameter_value).
        (_, "42704") => Error::Config(msg),
        (_, "22023") if db.message().contains("parameter") => Error::Config(msg),
        // Refused, and rolled back: conflicts a retry resolves, a read-only standby during
        // failover, overload, a cancelled statement. The statement was not applied and never
        // will be, so nothing it could have granted is left to give back.
        ("53", _) | (_, "40001" | "40P01" | "55P03" | "25006" | "57014") => Error::Unreached(msg),
        // Connection trouble and shutdowns: a statement cut off by them may have committed.
        ("08" | "57" | "58", _) => Error::Unavailable(msg),
        // A value in the table that cannot be computed with (a foreign row).
        ("22", _) => Error::Corrupt(msg),
        _ => Error::Other(msg),
    }
}
