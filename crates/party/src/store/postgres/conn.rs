//! Connections and the pool: the `postgres://` URL with party's own parameters, opening a
//! connection (with TLS as the URL says), and the pool of connections that each prepared every
//! statement once.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult, TimeoutType, Timeouts};
use futures_util::TryStreamExt;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{
    Client, Config, Connection, Error, GenericClient, Row, Socket, Statement, Transaction,
};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::error::describe;
use super::sql::{Names, Statements};
use super::tls::Tls;
use crate::TaskError;
use crate::validate::{self, Pooler, SslMode};

/// A connection's background half, which drives its socket.
pub(super) type PgConnection =
    Connection<Socket, <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream>;

/// One server to connect to: address, credentials and TLS.
#[derive(Clone)]
pub(super) struct Target {
    pub(super) config: Config,
    pub(super) tls: Tls,
}

impl Target {
    /// `host:port` of the first host, for messages.
    fn place(&self) -> String {
        use tokio_postgres::config::Host;
        let host = match self.config.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            Some(Host::Unix(p)) => p.display().to_string(),
            None => "localhost".to_string(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        format!("{host}:{port}")
    }

    fn host(&self) -> String {
        use tokio_postgres::config::Host;
        match self.config.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            _ => "localhost".to_string(),
        }
    }
}

/// Open a connection; the caller drives (spawns) its background half. The whole opening
/// (TCP, TLS, start-up, authentication) is bounded by the connect timeout: the client bounds
/// only the TCP connect, and a server that accepts and never answers (frozen, or a hung
/// pooler in front of it) would hold the caller forever.
pub(super) async fn open(target: &Target) -> Result<(Client, PgConnection), TaskError> {
    let opening = target.config.connect(target.tls.connector.clone());
    let opened = match target.config.get_connect_timeout() {
        Some(limit) => tokio::time::timeout(*limit, opening).await.map_err(|_| {
            TaskError::store(format!(
                "cannot connect to PostgreSQL at {}: no answer within the connect timeout \
                 ({} s); check that the server runs and answers, and the URL is right",
                target.place(),
                limit.as_secs_f64()
            ))
        })?,
        None => opening.await,
    };
    opened.map_err(|e| {
        let why = target
            .tls
            .explain(&e, &target.host())
            .unwrap_or_else(|| describe(&e));
        TaskError::store(format!(
            "cannot connect to PostgreSQL at {}: {why}; check that the server runs and the \
                 URL is right",
            target.place()
        ))
    })
}

/// Open a connection whose background half runs on its own task.
pub(super) async fn connect(target: &Target) -> Result<Client, TaskError> {
    let (client, connection) = open(target).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %describe(&e), "a PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// An open connection with its prepared statements.
pub(super) struct Conn {
    pub(super) client: PgClient,
    pub(super) st: Statements,
}

/// Opens connections for the pool and checks returned ones.
pub(super) struct Manager {
    target: Target,
    names: Names,
    sending: Sending,
    /// A connection opened before the pool (the one that ran the migrations), used first.
    spare: Mutex<Option<Conn>>,
}

impl managed::Manager for Manager {
    type Type = Conn;
    type Error = TaskError;

    async fn create(&self) -> Result<Conn, TaskError> {
        if let Some(conn) = self.spare.lock().unwrap().take() {
            if !conn.client.is_closed() {
                return Ok(conn);
            }
        }
        let client = connect(&self.target).await?;
        Ok(Conn {
            client: PgClient::new(client, self.sending.clone()),
            st: Statements::new(&self.names.quoted),
        })
    }

    async fn recycle(&self, conn: &mut Conn, _: &Metrics) -> RecycleResult<TaskError> {
        // A connection whose socket broke is closed by tokio-postgres; it is dropped here and
        // the pool opens a new one in its place.
        if conn.client.is_closed() {
            return Err(RecycleError::message("the connection was closed"));
        }
        Ok(())
    }
}

/// The pool: up to `max` connections per store, opened on demand (deadpool). A statement
/// waits at most `wait` for a free one, then fails saying so.
pub(super) struct Pool {
    pub(super) names: Names,
    inner: managed::Pool<Manager>,
    max: usize,
    wait: Duration,
}

/// A connection checked out of the pool; it goes back when dropped.
pub(super) struct Pooled {
    conn: managed::Object<Manager>,
}

impl std::ops::Deref for Pooled {
    type Target = Conn;

    fn deref(&self) -> &Conn {
        &self.conn
    }
}

impl std::ops::DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut Conn {
        &mut self.conn
    }
}

impl Pooled {
    /// Close the connection instead of returning it to the pool.
    pub(super) fn discard(self) {
        drop(managed::Object::take(self.conn));
    }
}

impl Pool {
    /// A pool for `target` holding up to `max` connections; `first` (already open, its
    /// statements prepared) is the first one handed out.
    pub(super) fn new(
        target: Target,
        names: Names,
        first: Conn,
        max: usize,
        wait: Duration,
    ) -> Pool {
        let manager = Manager {
            target,
            names: names.clone(),
            sending: first.client.sending.clone(),
            spare: Mutex::new(Some(first)),
        };
        let inner = managed::Pool::builder(manager)
            .max_size(max)
            .wait_timeout(Some(wait))
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .expect("a runtime and a size are given");
        Pool {
            names,
            inner,
            max,
            wait,
        }
    }

    /// A free connection, opening one if fewer than `max` are open.
    ///
    /// # Errors
    /// [`TaskError::Store`] when none became free within the pool's wait, or a new one could
    /// not be opened.
    pub(super) async fn get(&self) -> Result<Pooled, TaskError> {
        let timeouts = Timeouts {
            wait: Some(self.wait),
            create: None,
            recycle: None,
        };
        match self.inner.timeout_get(&timeouts).await {
            Ok(conn) => Ok(Pooled { conn }),
            Err(managed::PoolError::Backend(e)) => Err(e),
            Err(managed::PoolError::Timeout(TimeoutType::Wait)) => Err(TaskError::store(format!(
                "no PostgreSQL connection became free within {} s: all {} of this process's \
                 connections are busy; raise pool_max in the URL (the server's max_connections \
                 bounds all processes together), lower the workers' concurrency, or raise \
                 pool_timeout",
                self.wait.as_secs(),
                self.max
            ))),
            Err(e) => Err(TaskError::store(format!(
                "cannot get a PostgreSQL connection from the pool: {e}"
            ))),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sending statements: prepared once per connection, or unnamed behind a transaction pooler

/// How statements reach the server. On a direct connection each statement of the fixed set is
/// prepared once per connection, when it first runs there, and SQL text is prepared as
/// tokio-postgres does. Behind a pooler in transaction mode consecutive transactions may land
/// on different server sessions, so no named prepared statement may outlive its transaction:
/// every statement goes as an unnamed one, parsed, bound and run in one round trip, with its
/// parameter types learnt once per store, inside a transaction: the fixed set's when the store
/// opens, SQL text's on first use.
#[derive(Clone, Default)]
pub(super) struct Sending {
    unnamed: bool,
    /// Parameter types of each statement sent unnamed, learnt once each.
    learnt: Arc<Mutex<HashMap<String, Arc<[Type]>>>>,
}

impl Sending {
    /// Statements for a connection behind `pooler`.
    pub(super) fn for_pooler(pooler: Pooler) -> Sending {
        Sending {
            unnamed: pooler == Pooler::Transaction,
            learnt: Arc::default(),
        }
    }

    /// Behind a transaction pooler, learn the parameter types of the fixed set `sqls` now, in
    /// one transaction of its own: they then run between a `BEGIN` and a `COMMIT` given as
    /// text with nothing left to learn there, where a failed learning would abort the
    /// caller's transaction. Nothing to do on a direct connection, which prepares each
    /// statement when it first runs it.
    pub(super) async fn learn_all(&self, c: &Client, sqls: &[String]) -> Result<(), Error> {
        if !self.unnamed {
            return Ok(());
        }
        let texts: Vec<&str> = sqls.iter().map(String::as_str).collect();
        let learnt = learn_types(c, &texts).await;
        let mut known = self.learnt.lock().unwrap();
        for (sql, types) in sqls.iter().zip(learnt?) {
            known.insert(sql.clone(), types);
        }
        Ok(())
    }

    /// The parameter types of `s`, learnt once per store (inside the caller's transaction,
    /// if any).
    async fn types<C, S>(&self, c: &C, s: &S) -> Result<Arc<[Type]>, Error>
    where
        C: GenericClient + Sync,
        S: Sql + ?Sized,
    {
        let known = self.learnt.lock().unwrap().get(s.text()).cloned();
        if let Some(types) = known {
            return Ok(types);
        }
        let types = learn_types(c, &[s.text()])
            .await?
            .pop()
            .expect("one statement, one list of types");
        self.learnt
            .lock()
            .unwrap()
            .insert(s.text().to_string(), types.clone());
        Ok(types)
    }

    /// Make `s` sendable without a round trip of its own: prepared on a direct connection,
    /// its parameter types learnt behind a pooler.
    async fn ready(&self, c: &Client, s: &Stmt) -> Result<(), Error> {
        if self.unnamed {
            self.types(c, s).await.map(drop)
        } else {
            s.prepared(c).await.map(drop)
        }
    }

    async fn rows<C, S>(
        &self,
        c: &C,
        s: &S,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Error>
    where
        C: GenericClient + Sync,
        S: Sql + ?Sized,
    {
        if !self.unnamed {
            return match s.stmt() {
                Some(st) => c.query(st.prepared(c).await?, params).await,
                None => c.query(s.text(), params).await,
            };
        }
        let types = self.types(c, s).await?;
        c.query_typed(s.text(), &typed(params, &types)).await
    }

    async fn row_opt<C, S>(
        &self,
        c: &C,
        s: &S,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, Error>
    where
        C: GenericClient + Sync,
        S: Sql + ?Sized,
    {
        if !self.unnamed {
            return match s.stmt() {
                Some(st) => c.query_opt(st.prepared(c).await?, params).await,
                None => c.query_opt(s.text(), params).await,
            };
        }
        let types = self.types(c, s).await?;
        c.query_typed_opt(s.text(), &typed(params, &types)).await
    }

    async fn row<C, S>(&self, c: &C, s: &S, params: &[&(dyn ToSql + Sync)]) -> Result<Row, Error>
    where
        C: GenericClient + Sync,
        S: Sql + ?Sized,
    {
        if !self.unnamed {
            return match s.stmt() {
                Some(st) => c.query_one(st.prepared(c).await?, params).await,
                None => c.query_one(s.text(), params).await,
            };
        }
        let types = self.types(c, s).await?;
        c.query_typed_one(s.text(), &typed(params, &types)).await
    }

    async fn count<C, S>(&self, c: &C, s: &S, params: &[&(dyn ToSql + Sync)]) -> Result<u64, Error>
    where
        C: GenericClient + Sync,
        S: Sql + ?Sized,
    {
        if !self.unnamed {
            return match s.stmt() {
                Some(st) => c.execute(st.prepared(c).await?, params).await,
                None => c.execute(s.text(), params).await,
            };
        }
        let types = self.types(c, s).await?;
        let stream = c.query_typed_raw(s.text(), typed(params, &types)).await?;
        let mut stream = std::pin::pin!(stream);
        while stream.try_next().await?.is_some() {}
        Ok(stream.rows_affected().unwrap_or(0))
    }
}

/// The parameter types of each statement, asked of the server without a protocol-level
/// prepared statement (whose name another client of a pooled server session may hold): SQL
/// `PREPARE` under names of this call's own, read back from `pg_prepared_statements`, and
/// `DEALLOCATE`d at once, all in one message, so in one server session: inside the caller's
/// transaction, or as one transaction of its own outside one. Sent whole, it leaves the
/// connection outside any transaction even when its caller gives up waiting for the answer
/// (sent a round trip at a time between a `BEGIN` and a `COMMIT`, a caller that gave up in
/// between handed the connection back to the pool inside the transaction, and the next
/// caller's writes went into it, never committed).
async fn learn_types<C: GenericClient + Sync>(
    c: &C,
    sqls: &[&str],
) -> Result<Vec<Arc<[Type]>>, Error> {
    use std::fmt::Write as _;
    let tag = format!("party_types_{:016x}", fastrand::u64(..));
    let mut batch = String::new();
    for (i, sql) in sqls.iter().enumerate() {
        let _ = write!(batch, "PREPARE {tag}_{i} AS {sql};");
    }
    let _ = write!(
        batch,
        "SELECT name, parameter_types::oid[]::text FROM pg_prepared_statements \
         WHERE name LIKE '{tag}%';"
    );
    for i in 0..sqls.len() {
        let _ = write!(batch, "DEALLOCATE {tag}_{i};");
    }
    let mut types: Vec<Option<Arc<[Type]>>> = vec![None; sqls.len()];
    for message in c.simple_query(&batch).await? {
        let tokio_postgres::SimpleQueryMessage::Row(row) = message else {
            continue;
        };
        let (Some(name), Some(oids)) = (row.get(0), row.get(1)) else {
            continue;
        };
        let Some(slot) = name
            .rsplit('_')
            .next()
            .and_then(|i| i.parse::<usize>().ok())
            .and_then(|i| types.get_mut(i))
        else {
            continue;
        };
        *slot = Some(
            oids.trim_matches(|c| c == '{' || c == '}')
                .split(',')
                .filter(|oid| !oid.is_empty())
                .map(|oid| {
                    oid.parse::<u32>()
                        .ok()
                        .and_then(Type::from_oid)
                        .unwrap_or(Type::UNKNOWN)
                })
                .collect(),
        );
    }
    Ok(types
        .into_iter()
        .map(|t| t.expect("every statement was prepared"))
        .collect())
}

fn typed<'a>(
    params: &[&'a (dyn ToSql + Sync)],
    types: &[Type],
) -> Vec<(&'a (dyn ToSql + Sync), Type)> {
    params.iter().copied().zip(types.iter().cloned()).collect()
}

/// A statement of the fixed set: its text, and on a direct connection the statement prepared
/// on that connection the first time it runs there. A connection prepares only what it runs:
/// a worker's claim connection a handful of statements, a command line's one or two, instead
/// of every statement of the set when it opens (about 20 ms of the server's time each).
/// Behind a transaction pooler nothing stays prepared: the statement goes unnamed, with the
/// parameter types the store learnt when it opened.
pub(super) struct Stmt {
    sql: Arc<str>,
    prepared: std::sync::OnceLock<Statement>,
}

impl Stmt {
    /// One not yet prepared.
    pub(super) fn new(sql: &str) -> Stmt {
        Stmt {
            sql: Arc::from(sql),
            prepared: std::sync::OnceLock::new(),
        }
    }

    /// The statement prepared on `c`'s connection, preparing it on first use. A connection
    /// runs one call at a time, so it is prepared once.
    async fn prepared<C: GenericClient + Sync>(&self, c: &C) -> Result<&Statement, Error> {
        if let Some(prepared) = self.prepared.get() {
            return Ok(prepared);
        }
        let prepared = c.prepare(&self.sql).await?;
        Ok(self.prepared.get_or_init(|| prepared))
    }
}

/// What may be sent: one of the fixed set, or SQL text.
pub(super) trait Sql: Sync {
    /// The statement of the set, if it is one.
    fn stmt(&self) -> Option<&Stmt>;
    /// Its SQL.
    fn text(&self) -> &str;
}

impl Sql for Stmt {
    fn stmt(&self) -> Option<&Stmt> {
        Some(self)
    }
    fn text(&self) -> &str {
        &self.sql
    }
}

impl Sql for str {
    fn stmt(&self) -> Option<&Stmt> {
        None
    }
    fn text(&self) -> &str {
        self
    }
}

impl Sql for String {
    fn stmt(&self) -> Option<&Stmt> {
        None
    }
    fn text(&self) -> &str {
        self
    }
}

/// Running statements, the same way on a connection and in a transaction.
pub(super) trait Queries: Sync {
    /// The rows `s` returns.
    fn query<S: Sql + ?Sized>(
        &self,
        s: &S,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Vec<Row>, Error>> + Send;
    /// The one row `s` returns (an error for none or more).
    fn query_one<S: Sql + ?Sized>(
        &self,
        s: &S,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Row, Error>> + Send;
    /// The row `s` returns, if any (an error for more than one).
    fn query_opt<S: Sql + ?Sized>(
        &self,
        s: &S,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Option<Row>, Error>> + Send;
    /// How many rows `s` changed.
    fn execute<S: Sql + ?Sized>(
        &self,
        s: &S,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<u64, Error>> + Send;
}

/// A connection and how it sends statements. SQL text sent outside a transaction must not be
/// sent between a `BEGIN` and a `COMMIT` given as text (learning its types opens a transaction
/// of its own behind a pooler); use [`PgClient::transaction`] for that.
pub(super) struct PgClient {
    pub(super) inner: Client,
    sending: Sending,
}

impl PgClient {
    pub(super) fn new(inner: Client, sending: Sending) -> PgClient {
        PgClient { inner, sending }
    }

    /// Run statements given as text, with the simple protocol (nothing prepared).
    pub(super) async fn batch_execute(&self, sql: &str) -> Result<(), Error> {
        self.inner.batch_execute(sql).await
    }

    /// Make each of `stmts` sendable at once, before a block that pipelines them between a
    /// `BEGIN` and a `COMMIT` given as text. A statement still to be prepared waits for that
    /// round trip before it is sent, so in such a block it would go after the `COMMIT`: outside
    /// the transaction, and in whatever order the preparations finish.
    pub(super) async fn ready(&self, stmts: &[&Stmt]) -> Result<(), Error> {
        for s in stmts {
            self.sending.ready(&self.inner, s).await?;
        }
        Ok(())
    }

    pub(super) async fn transaction(&mut self) -> Result<PgTransaction<'_>, Error> {
        let sending = self.sending.clone();
        Ok(PgTransaction {
            inner: self.inner.transaction().await?,
            sending,
        })
    }

    pub(super) fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }
}

impl Queries for PgClient {
    async fn query<S: Sql + ?Sized>(
        &self,
        s: &S,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Error> {
        self.sending.rows(&self.inner, s, params).await
    }
    async fn query_one<S: Sql + ?Sized>(
        &self,
        s: &S,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, Error> {
        self.sending.row(&self.inner, s, params).await
    }
    async fn query_opt<S: Sql + ?Sized>(
        &self,
        s: &S,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, Error> {
        self.sending.row_opt(&self.inner, s, params).await
    }
    async fn execute<S: Sql + ?Sized>(
        &self,
        s: &S,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, Error> {
        self.sending.count(&self.inner, s, params).await
    }
}

/// A transaction on a [`PgClient`]; rolled back if dropped unfinished.
pub(super) struct PgTransaction<'a> {
    inner: Transaction<'a>,
    sending: Sending,
}

impl PgTransaction<'_> {
    pub(super) async fn batch_execute(&self, sql: &str) -> Result<(), Error> {
        self.inner.batch_execute(sql).await
    }

    pub(super) async fn commit(self) -> Result<(), Error> {
        self.inner.commit().await
    }

    pub(super) async fn rollback(self) -> Result<(), Error> {
        self.inner.rollback().await
    }
}

impl Queries for PgTransaction<'_> {
    async fn query<S: Sql + ?Sized>(
        &self,
        s: &S,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Error> {
        self.sending.rows(&self.inner, s, params).await
    }
    async fn query_one<S: Sql + ?Sized>(
        &self,
        s: &S,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, Error> {
        self.sending.row(&self.inner, s, params).await
    }
    async fn query_opt<S: Sql + ?Sized>(
        &self,
        s: &S,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, Error> {
        self.sending.row_opt(&self.inner, s, params).await
    }
    async fn execute<S: Sql + ?Sized>(
        &self,
        s: &S,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, Error> {
        self.sending.count(&self.inner, s, params).await
    }
}

/// The default of `pool_max`: connections per store.
pub(super) const DEFAULT_POOL_MAX: usize = 8;

/// The default of `pool_timeout`.
pub(super) const DEFAULT_POOL_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a connection may go without traffic before the kernel starts sending it TCP
/// keepalive probes, unless the URL's `keepalives_idle` says otherwise.
pub(super) const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);

/// The time between TCP keepalive probes, unless the URL's `keepalives_interval` says
/// otherwise.
pub(super) const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// How many TCP keepalive probes may go unanswered before the kernel drops the connection,
/// unless the URL's `keepalives_retries` says otherwise. With the two above, an idle
/// connection whose peer vanished without a word (a firewall or a NAT dropped the flow, the
/// host is gone) is closed within 90 s, and a pooled one replaced at its next checkout,
/// instead of after the system's default of two hours. Keepalives cannot help while a
/// statement waits for its answer; the signal connection also probes itself, sooner (see
/// `wakeup.rs`).
pub(super) const KEEPALIVE_RETRIES: u32 = 3;

/// A `postgres://` URL read: the connection, and party's own parameters, which are taken out
/// before tokio-postgres reads the rest.
pub(super) struct PgUrl {
    pub(super) target: Target,
    /// `schema=NAME`.
    pub(super) schema: Option<String>,
    /// `pool_max=N`.
    pub(super) pool_max: Option<usize>,
    /// `pool_timeout=SECONDS`.
    pub(super) pool_timeout: Option<Duration>,
    /// `pooler=transaction|none`.
    pub(super) pooler: Pooler,
    /// `listen_url=URL` (percent-encoded): a direct connection for wake-ups.
    pub(super) listen: Option<Target>,
}

/// Read a `postgres://` URL: party's parameters (`schema`, `pool_max`, `pool_timeout`,
/// `pooler`, `listen_url`), the TLS ones tokio-postgres does not read as libpq does
/// (`sslmode`, `sslrootcert`), and the rest as tokio-postgres reads it.
pub(super) fn parse_url(url: &str) -> Result<PgUrl, TaskError> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut schema = None;
    let mut pool_max = None;
    let mut pool_timeout = None;
    let mut pooler = Pooler::None;
    let mut listen_url = None;
    let mut ssl_mode = SslMode::Prefer;
    let mut root_cert = None;
    let mut kept = Vec::new();
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        let Some((key, raw)) = pair.split_once('=') else {
            if !pair.is_empty() {
                kept.push(pair);
            }
            continue;
        };
        match key {
            "schema" => schema = Some(percent_decode(key, raw)?),
            "pool_max" => pool_max = Some(validate::pool_max(&percent_decode(key, raw)?)?),
            "pool_timeout" => {
                pool_timeout = Some(validate::pool_timeout(&percent_decode(key, raw)?)?)
            }
            "pooler" => pooler = validate::pooler(&percent_decode(key, raw)?)?,
            "listen_url" => listen_url = Some(percent_decode(key, raw)?),
            "sslmode" => ssl_mode = validate::ssl_mode(&percent_decode(key, raw)?)?,
            "sslrootcert" => root_cert = Some(percent_decode(key, raw)?),
            _ => kept.push(pair),
        }
    }
    let clean = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let mut config: Config = clean.parse().map_err(|e: tokio_postgres::Error| {
        TaskError::invalid(format!(
            "bad PostgreSQL URL: {}; write it like \
             postgres://user:password@host:5432/database?schema=party",
            describe(&e)
        ))
    })?;
    let said = |name: &str| {
        kept.iter()
            .any(|pair| pair.split_once('=').is_some_and(|(key, _)| key == name))
    };
    if !said("keepalives_idle") {
        config.keepalives_idle(KEEPALIVE_IDLE);
    }
    if config.get_keepalives_interval().is_none() {
        config.keepalives_interval(KEEPALIVE_INTERVAL);
    }
    if config.get_keepalives_retries().is_none() {
        config.keepalives_retries(KEEPALIVE_RETRIES);
    }
    let tls = Tls::new(ssl_mode, root_cert.as_deref())?;
    config.ssl_mode(tls.negotiation());
    let listen = match listen_url {
        None => None,
        Some(u) => {
            if validate::database_url(&u)? != validate::DatabaseKind::Postgres {
                return Err(TaskError::invalid(
                    "listen_url must be a postgres:// URL (percent-encoded inside the main URL) \
                     of a direct connection to the same database",
                ));
            }
            let inner = parse_url(&u)?;
            if inner.pooler == Pooler::Transaction || inner.listen.is_some() {
                return Err(TaskError::invalid(
                    "listen_url must name a direct connection to the database (LISTEN needs a \
                     session of its own): it may not carry pooler=transaction or listen_url",
                ));
            }
            Some(inner.target)
        }
    };
    Ok(PgUrl {
        target: Target { config, tls },
        schema,
        pool_max,
        pool_timeout,
        pooler,
        listen,
    })
}

/// A URL parameter's value with its `%XX` escapes (and `+`) decoded. The message names the
/// parameter but never repeats its value, which may hold a password.
pub(super) fn percent_decode(key: &str, s: &str) -> Result<String, TaskError> {
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
                        TaskError::invalid(format!(
                            "the URL parameter {key} has a bad percent escape: write each \
                             escaped byte as % and two hex digits"
                        ))
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
    String::from_utf8(out).map_err(|_| {
        TaskError::invalid(format!(
            "the URL parameter {key} is not UTF-8 once its percent escapes are decoded"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn schema_parameter_is_taken_out_of_the_url() {
        let url = parse_url("postgres://u@localhost:5433/db?schema=app_party&application_name=x")
            .unwrap();
        assert_eq!(url.schema.as_deref(), Some("app_party"));
        assert_eq!(url.target.config.get_dbname(), Some("db"));
        assert_eq!(url.target.config.get_application_name(), Some("x"));
        assert_eq!(
            parse_url("postgresql://u@localhost/db").unwrap().schema,
            None
        );
        let url = parse_url("postgres://u@h/db?schema=a%5Fb").unwrap();
        assert_eq!(url.schema.as_deref(), Some("a_b"));
    }

    #[test]
    fn pool_and_tls_parameters_are_read_and_checked() {
        let url = parse_url(
            "postgres://u:pw@h/db?pool_max=3&pool_timeout=7&sslmode=disable&pooler=transaction\
             &listen_url=postgres%3A%2F%2Fu%3Apw%40direct%3A5433%2Fdb",
        )
        .unwrap();
        assert_eq!(url.pool_max, Some(3));
        assert_eq!(url.pool_timeout, Some(Duration::from_secs(7)));
        assert_eq!(url.pooler, Pooler::Transaction);
        assert_eq!(url.target.tls.mode, SslMode::Disable);
        let listen = url.listen.expect("listen_url");
        assert_eq!(listen.place(), "direct:5433");
        assert_eq!(url.target.place(), "h:5432");

        let refused = |u: &str| match parse_url(u) {
            Err(TaskError::Invalid(m)) => m,
            Err(e) => panic!("{u}: {e:?}"),
            Ok(_) => panic!("{u} was accepted"),
        };
        assert!(refused("postgres://h/db?pool_max=0").contains("pool_max='0'"));
        assert!(refused("postgres://h/db?pool_max=1001").contains("1 to 1000"));
        assert!(refused("postgres://h/db?pool_timeout=x").contains("pool_timeout='x'"));
        assert!(refused("postgres://h/db?sslmode=allow").contains("sslmode='allow'"));
        assert!(refused("postgres://h/db?pooler=statement").contains("pooler='statement'"));
        assert!(
            refused("postgres://h/db?listen_url=postgres%3A%2F%2Fh%2Fdb%3Fpooler%3Dtransaction")
                .contains("direct connection")
        );
        let bad_escape = refused("postgres://h/db?listen_url=postgres%3A%2F%2Fu%3Asecret%zz");
        assert!(bad_escape.contains("listen_url") && !bad_escape.contains("secret"));
    }

    #[test]
    fn keepalives_default_to_minutes_unless_the_url_sets_them() {
        let config = parse_url("postgres://u@h/db").unwrap().target.config;
        assert!(config.get_keepalives());
        assert_eq!(config.get_keepalives_idle(), KEEPALIVE_IDLE);
        assert_eq!(config.get_keepalives_interval(), Some(KEEPALIVE_INTERVAL));
        assert_eq!(config.get_keepalives_retries(), Some(KEEPALIVE_RETRIES));
        let listen = parse_url("postgres://u@h/db?listen_url=postgres%3A%2F%2Fu%40direct%2Fdb")
            .unwrap()
            .listen
            .expect("listen_url");
        assert_eq!(listen.config.get_keepalives_idle(), KEEPALIVE_IDLE);

        let config = parse_url(
            "postgres://u@h/db?keepalives_idle=7200&keepalives_interval=30&keepalives_retries=9",
        )
        .unwrap()
        .target
        .config;
        assert_eq!(config.get_keepalives_idle(), Duration::from_secs(7200));
        assert_eq!(
            config.get_keepalives_interval(),
            Some(Duration::from_secs(30))
        );
        assert_eq!(config.get_keepalives_retries(), Some(9));
        let off = parse_url("postgres://u@h/db?keepalives=0")
            .unwrap()
            .target
            .config;
        assert!(!off.get_keepalives());
    }
}
