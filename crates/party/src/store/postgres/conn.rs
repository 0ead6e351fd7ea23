//! Connections and the pool: opening a connection, a small pool of connections that each
//! prepared every statement once, and the `postgres://` URL with party's own parameters.

use std::sync::Mutex;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::{Client, Config, NoTls};

use super::error::{db_err, describe};
use super::sql::{Names, Statements};
use crate::TaskError;

pub(super) async fn connect(config: &Config) -> Result<Client, TaskError> {
    let (client, connection) = config.connect(NoTls).await.map_err(|e| {
        TaskError::store(format!(
            "cannot connect to PostgreSQL: {}; check that the server runs and the URL is right",
            describe(&e)
        ))
    })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %describe(&e), "a PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// An open connection with its prepared statements.
pub(super) struct Conn {
    pub(super) client: Client,
    pub(super) st: Statements,
}

/// A small pool: up to `size` connections, opened on demand, each preparing every statement
/// once. A connection found closed is dropped and replaced on the next checkout.
pub(super) struct Pool {
    pub(super) config: Config,
    pub(super) names: Names,
    pub(super) idle: Mutex<Vec<Conn>>,
    pub(super) slots: Semaphore,
}

/// A connection checked out of the pool; it goes back when dropped, unless it was closed.
pub(super) struct Pooled<'a> {
    pub(super) conn: Option<Conn>,
    pub(super) pool: &'a Pool,
    pub(super) _slot: SemaphorePermit<'a>,
}

impl std::ops::Deref for Pooled<'_> {
    type Target = Conn;

    fn deref(&self) -> &Conn {
        self.conn.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("present until dropped")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            if !conn.client.is_closed() {
                self.pool.idle.lock().unwrap().push(conn);
            }
        }
    }
}

impl Pooled<'_> {
    /// Close the connection instead of returning it to the pool.
    pub(super) fn discard(mut self) {
        self.conn = None;
    }
}

impl Pool {
    pub(super) async fn get(&self) -> Result<Pooled<'_>, TaskError> {
        let slot = self
            .slots
            .acquire()
            .await
            .expect("the pool is never closed");
        let reused = {
            let mut idle = self.idle.lock().unwrap();
            let mut found = None;
            while let Some(c) = idle.pop() {
                if !c.client.is_closed() {
                    found = Some(c);
                    break;
                }
            }
            found
        };
        let conn = match reused {
            Some(c) => c,
            None => {
                let client = connect(&self.config).await?;
                let st = Statements::prepare(&client, &self.names.quoted)
                    .await
                    .map_err(db_err)?;
                Conn { client, st }
            }
        };
        Ok(Pooled {
            conn: Some(conn),
            pool: self,
            _slot: slot,
        })
    }
}

/// Split a `postgres://` URL into the connection configuration and the `schema` parameter,
/// which is party's own and is removed before tokio-postgres reads the URL.
pub(super) fn parse_url(url: &str) -> Result<(Config, Option<String>), TaskError> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut schema = None;
    let mut kept = Vec::new();
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        match pair.split_once('=') {
            Some(("schema", v)) => schema = Some(percent_decode(v)?),
            _ if pair.is_empty() => {}
            _ => kept.push(pair),
        }
    }
    let clean = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let config: Config = clean.parse().map_err(|e: tokio_postgres::Error| {
        TaskError::invalid(format!(
            "bad PostgreSQL URL: {}; write it like \
             postgres://user:password@host:5432/database?schema=party",
            describe(&e)
        ))
    })?;
    Ok((config, schema))
}

pub(super) fn percent_decode(s: &str) -> Result<String, TaskError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        TaskError::invalid(format!("bad percent escape in the URL value '{s}'"))
                    })?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
        .map_err(|_| TaskError::invalid(format!("the URL value '{s}' is not UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn schema_parameter_is_taken_out_of_the_url() {
        let (config, schema) =
            parse_url("postgres://u@localhost:5433/db?schema=app_party&application_name=x")
                .unwrap();
        assert_eq!(schema.as_deref(), Some("app_party"));
        assert_eq!(config.get_dbname(), Some("db"));
        assert_eq!(config.get_application_name(), Some("x"));
        let (_, schema) = parse_url("postgresql://u@localhost/db").unwrap();
        assert_eq!(schema, None);
        let (_, schema) = parse_url("postgres://u@h/db?schema=a%5Fb").unwrap();
        assert_eq!(schema.as_deref(), Some("a_b"));
    }
}
