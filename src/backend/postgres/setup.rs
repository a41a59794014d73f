//! Creating and checking the lease table: `lockrun init`, and first use by a role that may.

use tokio_postgres::types::Type;

use super::errors::{self, sqlstate};
use super::{sql, Failed, Postgres};
use crate::backend::Error;

impl Postgres {
    /// `lockrun init`: checks an existing table, or creates what is missing.
    pub(super) async fn set_up(&self) -> Result<String, Error> {
        let name = self.opts.table.sql();
        let rows = self
            .query(&self.sql.inspect, &[(&name, Type::TEXT)])
            .await
            .map_err(|f| self.map_failed(f))?;
        let (exists, indexed) = match rows.first() {
            Some(r) => (
                r.try_get::<_, bool>(0).map_err(|e| self.map(&e))?,
                r.try_get::<_, bool>(1).map_err(|e| self.map(&e))?,
            ),
            None => (false, false),
        };
        if exists {
            self.check_columns(&name).await?;
            if indexed {
                return Ok(format!(
                    "table {} is already set up; nothing to do",
                    self.table()
                ));
            }
        }
        self.create().await.map_err(|f| match f {
            Failed::Pg(e) if sqlstate(&e) == Some("42501") => Error::Config(format!(
                "role '{}' may not create table {} in PostgreSQL at {}: {}; \
                     run 'lockrun init' as a role with CREATE rights on the schema",
                self.opts.user,
                self.table(),
                self.opts.endpoint,
                e.as_db_error()
                    .map(|d| d.message())
                    .unwrap_or("permission denied")
            )),
            other => self.map_failed(other),
        })
    }

    /// Creates the schema (when configured and missing), the table and the index, in one
    /// transaction. When another session creates them at the same moment, the loser's
    /// transaction fails with a duplicate; it then looks again, and finds them there.
    pub(super) async fn create(&self) -> Result<String, Failed> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.create_once().await {
                Err(Failed::Pg(e))
                    if sqlstate(&e).is_some_and(|c| errors::ALREADY_EXISTS.contains(&c))
                        && attempt < 3 => {}
                Err(f) => return Err(f),
                Ok(()) => {
                    return Ok(format!(
                        "created table {} and its expires_at index",
                        self.table()
                    ))
                }
            }
        }
    }

    async fn create_once(&self) -> Result<(), Failed> {
        let client = self.client().await.map_err(Failed::Mapped)?;
        let mut ddl = String::new();
        if let Some(schema) = &self.opts.table.schema {
            let exists = self
                .query(
                    "SELECT 1 FROM pg_namespace WHERE nspname = $1",
                    &[(schema, Type::TEXT)],
                )
                .await?;
            if exists.is_empty() {
                ddl.push_str(&sql::create_schema(schema));
                ddl.push_str(";\n");
            }
        }
        ddl.push_str(&self.sql.create);
        let run = client.batch_execute(&ddl);
        match tokio::time::timeout(self.opts.statement_timeout, run).await {
            Ok(result) => result.map_err(Failed::Pg),
            Err(_) => {
                self.discard(&client).await;
                Err(Failed::Mapped(Error::Unavailable(format!(
                    "PostgreSQL at {}: creating table {} took longer than {}",
                    self.opts.endpoint,
                    self.table(),
                    crate::duration::format(self.opts.statement_timeout)
                ))))
            }
        }
    }

    /// Checks an existing table's columns against [`sql::EXPECTED`].
    async fn check_columns(&self, name: &str) -> Result<(), Error> {
        let rows = self
            .query(&self.sql.columns, &[(&name, Type::TEXT)])
            .await
            .map_err(|f| self.map_failed(f))?;
        let mut have = Vec::new();
        for r in &rows {
            let col: String = r.try_get(0).map_err(|e| self.map(&e))?;
            let ty: String = r.try_get(1).map_err(|e| self.map(&e))?;
            have.push((col, ty));
        }
        for (col, ty) in sql::EXPECTED {
            match have.iter().find(|(c, _)| c == col) {
                Some((_, t)) if t == ty => {}
                Some((_, t)) => {
                    return Err(self.shape_error(&format!("column {col} is {t}, not {ty}")))
                }
                None => return Err(self.shape_error(&format!("it has no column {col}"))),
            }
        }
        Ok(())
    }

    pub(super) fn shape_error(&self, why: &str) -> Error {
        Error::Config(format!(
            "table {} in PostgreSQL at {} is not a lockrun lease table ({why}); \
             configure another 'table' and run 'lockrun init'",
            self.table(),
            self.opts.endpoint
        ))
    }
}
