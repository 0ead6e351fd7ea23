//! Databases for tests that run `party` processes: a SQLite file, and a fresh PostgreSQL
//! schema when `PARTY_TEST_DATABASE_URL` is set (required when `CI=true`).

#![allow(dead_code, unreachable_pub)]

use std::process::Command;

/// The `party` binary under test.
pub const PARTY: &str = env!("CARGO_BIN_EXE_party");

/// One database a test runs against; cleaned up when dropped.
pub struct Db {
    /// `sqlite` or `postgres`.
    pub name: &'static str,
    /// What `--db` gets.
    pub url: String,
    file: Option<std::path::PathBuf>,
    schema: Option<(String, String)>,
}

fn unique() -> String {
    use std::hash::{BuildHasher, RandomState};
    format!(
        "{:016x}",
        RandomState::new().hash_one(std::time::SystemTime::now())
    )
}

impl Db {
    /// A fresh SQLite file.
    pub fn sqlite(tag: &str) -> Db {
        let file = std::env::temp_dir().join(format!(
            "party-{tag}-{}-{}.db",
            std::process::id(),
            unique()
        ));
        Db {
            name: "sqlite",
            url: file.display().to_string(),
            file: Some(file),
            schema: None,
        }
    }

    /// A fresh PostgreSQL schema, or `None` (with a printed line) when no server is configured.
    pub fn postgres(tag: &str) -> Option<Db> {
        let Some(base) = std::env::var("PARTY_TEST_DATABASE_URL")
            .ok()
            .filter(|u| !u.trim().is_empty())
        else {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!(
                    "CI=true but PARTY_TEST_DATABASE_URL is not set: the PostgreSQL process tests must run in CI"
                );
            }
            println!(
                "skipped on PostgreSQL: set PARTY_TEST_DATABASE_URL=postgres://... to run these tests there too"
            );
            return None;
        };
        let base = base.trim().to_string();
        let schema = format!("party_{tag}_{}", unique()).replace('-', "_");
        let sep = if base.contains('?') { '&' } else { '?' };
        Some(Db {
            name: "postgres",
            url: format!("{base}{sep}schema={schema}"),
            file: None,
            schema: Some((base, schema)),
        })
    }

    /// Every backend available here.
    pub fn all(tag: &str) -> Vec<Db> {
        let mut dbs = vec![Db::sqlite(tag)];
        dbs.extend(Db::postgres(tag));
        dbs
    }

    /// `PRAGMA integrity_check` on SQLite; "ok" on PostgreSQL, which has no such check.
    pub fn integrity_check(&self, rt: &tokio::runtime::Runtime) -> String {
        match &self.file {
            Some(path) => rt.block_on(async {
                let store = party::store::sqlite::SqliteStore::open(path).await.unwrap();
                store.integrity_check().await.unwrap()
            }),
            None => "ok".to_string(),
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Some(file) = &self.file {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
            }
        }
        if let Some((base, schema)) = self.schema.clone() {
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    use party::store::postgres::tokio_postgres;
                    if let Ok((client, conn)) =
                        tokio_postgres::connect(&base, tokio_postgres::NoTls).await
                    {
                        tokio::spawn(conn);
                        let _ = client
                            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                            .await;
                    }
                });
            })
            .join();
        }
    }
}

/// `party --db URL` with quiet logs.
pub fn party_cmd(url: &str) -> Command {
    let mut cmd = Command::new(PARTY);
    cmd.arg("--db")
        .arg(url)
        .env_remove("PARTY_DATABASE_URL")
        .env("PARTY_LOG", "warn");
    cmd
}

/// A PostgreSQL server of a test's own: a fresh cluster in a temporary directory on a free
/// port, so a test may stop and start it without touching the machine's server (which other
/// tests use at the same time). Needs root (it runs the server as the `postgres` user) and
/// Debian's PostgreSQL binaries; [`Cluster::start`] says why not and returns `None` otherwise.
/// Dropping it stops the server and removes its directory, also when the test fails.
pub struct Cluster {
    bin: std::path::PathBuf,
    /// The cluster's directory: `data/`, `log`, and the TLS files when it has them.
    pub dir: std::path::PathBuf,
    /// The port it listens on, at 127.0.0.1.
    pub port: u16,
    setup: Setup,
}

/// How a [`Cluster`] is set up beyond the defaults (trust authentication, no TLS).
#[derive(Clone, Default)]
pub struct Setup {
    /// Serve TLS with a certificate for `localhost` and `127.0.0.1`, signed by a CA the test
    /// makes (`ca.crt` in [`Cluster::dir`]); a second, unrelated CA is `other-ca.crt`.
    pub tls: bool,
    /// Require this password (SCRAM) for TCP connections instead of trusting them.
    pub password: Option<String>,
    /// Log every connection (with its TLS protocol) to the server's log.
    pub log_connections: bool,
    /// Listen on these addresses (comma-separated) instead of 127.0.0.1 alone.
    pub listen_addresses: Option<String>,
    /// Trust TCP connections from this network (CIDR) too.
    pub trust_network: Option<String>,
    /// More server settings, as `-c name=value` options.
    pub options: Option<String>,
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> Option<u16> {
    Some(
        std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port(),
    )
}

/// Whether this process runs as root; prints why not when it does not.
pub fn is_root(what: &str) -> bool {
    let uid = Command::new("id").arg("-u").output();
    let root = uid.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        println!("{what}: skipped, the test does not run as root");
    }
    root
}

impl Cluster {
    /// Create and start a cluster, or say why one cannot be made here.
    pub fn start() -> Option<Cluster> {
        Cluster::start_with(Setup::default())
    }

    /// Create and start a cluster set up so, or say why one cannot be made here.
    pub fn start_with(setup: Setup) -> Option<Cluster> {
        if !is_root("no private PostgreSQL cluster") {
            return None;
        }
        let mut bins: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|b| b.join("initdb").exists())
            .collect();
        bins.sort();
        let Some(bin) = bins.pop() else {
            println!("no private PostgreSQL cluster: no initdb under /usr/lib/postgresql");
            return None;
        };
        let dir =
            std::env::temp_dir().join(format!("party-pg-{}-{}", std::process::id(), unique()));
        std::fs::create_dir_all(&dir).ok()?;
        let port = free_port()?;
        let cluster = Cluster {
            bin,
            dir,
            port,
            setup,
        };
        if cluster.setup.tls && !cluster.make_certificates() {
            println!("no private PostgreSQL cluster: openssl could not make the test certificates");
            return None;
        }
        let owned = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&cluster.dir)
            .status()
            .ok()?
            .success();
        let mut initdb = cluster.as_postgres("initdb");
        initdb.args([
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
            "--auth-local=trust",
        ]);
        match &cluster.setup.password {
            Some(password) => {
                let file = cluster.dir.join("pwfile");
                std::fs::write(&file, password).ok()?;
                Command::new("chown")
                    .args(["postgres:postgres"])
                    .arg(&file)
                    .status()
                    .ok()?;
                initdb
                    .arg("--auth-host=scram-sha-256")
                    .arg("--pwfile")
                    .arg(&file);
            }
            None => {
                initdb.arg("--auth-host=trust");
            }
        }
        let made = owned
            && initdb
                .arg("-D")
                .arg(cluster.dir.join("data"))
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
        let _ = std::fs::remove_file(cluster.dir.join("pwfile"));
        if let Some(net) = &cluster.setup.trust_network {
            use std::io::Write as _;
            let hba = cluster.dir.join("data").join("pg_hba.conf");
            let added = std::fs::OpenOptions::new()
                .append(true)
                .open(&hba)
                .and_then(|mut f| writeln!(f, "host all all {net} trust"));
            if added.is_err() {
                println!(
                    "no private PostgreSQL cluster: cannot write {}",
                    hba.display()
                );
                return None;
            }
        }
        if !made || !cluster.ctl("start") {
            println!(
                "no private PostgreSQL cluster: initdb or pg_ctl failed in {}",
                cluster.dir.display()
            );
            return None;
        }
        Some(cluster)
    }

    /// A CA, a server certificate it signs (for `localhost` and `127.0.0.1`), and an
    /// unrelated CA, with openssl.
    fn make_certificates(&self) -> bool {
        let d = &self.dir;
        let ext = d.join("server.ext");
        if std::fs::write(&ext, "subjectAltName=DNS:localhost,IP:127.0.0.1\n").is_err() {
            return false;
        }
        let run = |args: &[&str]| {
            Command::new("openssl")
                .args(args)
                .current_dir(d)
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let ca = |name: &str, cn: &str| {
            let (key, crt, subj) = (
                format!("{name}.key"),
                format!("{name}.crt"),
                format!("/CN={cn}"),
            );
            let mut args = vec!["req", "-x509"];
            args.extend(ec);
            args.extend(["-keyout", &key, "-out", &crt, "-days", "2", "-subj", &subj]);
            run(&args)
        };
        let mut csr = vec!["req"];
        csr.extend(ec);
        csr.extend([
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        let made = ca("ca", "party test CA")
            && ca("other-ca", "another CA")
            && run(&csr)
            && run(&[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.crt",
                "-days",
                "2",
                "-extfile",
                "server.ext",
            ]);
        // PostgreSQL refuses a key that others may read.
        use std::os::unix::fs::PermissionsExt;
        made && std::fs::set_permissions(
            d.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .is_ok()
    }

    fn as_postgres(&self, tool: &str) -> Command {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(self.bin.join(tool));
        cmd
    }

    /// `pg_ctl start` or `stop` (fast), waiting until it is done; whether it worked.
    pub fn ctl(&self, action: &str) -> bool {
        let mut cmd = self.as_postgres("pg_ctl");
        cmd.arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("log"))
            .args(["-w", "-m", "fast", "-o"])
            .arg(self.server_options())
            .arg(action);
        cmd.output().map(|o| o.status.success()).unwrap_or(false)
    }

    fn server_options(&self) -> String {
        let mut o = format!(
            "-p {} -k {} -c listen_addresses={} -c fsync=off",
            self.port,
            self.dir.display(),
            self.setup
                .listen_addresses
                .as_deref()
                .unwrap_or("127.0.0.1")
        );
        if self.setup.tls {
            o.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={0}/server.crt -c ssl_key_file={0}/server.key",
                self.dir.display()
            ));
        }
        if self.setup.log_connections {
            o.push_str(" -c log_connections=on");
        }
        if let Some(options) = &self.setup.options {
            o.push(' ');
            o.push_str(options);
        }
        o
    }

    /// Crash the server (`pg_ctl stop -m immediate`: no shutdown checkpoint, the WAL not yet
    /// written out is lost, as in a crash of the server's processes) and start it again;
    /// whether both worked.
    pub fn crash_and_restart(&self) -> bool {
        let stopped = self
            .as_postgres("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-w", "-m", "immediate", "stop"])
            .output()
            .is_ok_and(|o| o.status.success());
        stopped && self.ctl("start")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// A fresh schema on it, as [`Db::postgres`] makes one on the shared server.
    pub fn db(&self, tag: &str) -> Db {
        let base = self.url();
        let schema = format!("party_{tag}_{}", unique()).replace('-', "_");
        Db {
            name: "postgres",
            url: format!("{base}?schema={schema}"),
            file: None,
            schema: Some((base, schema)),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self
            .as_postgres("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-w", "-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A PgBouncer of a test's own in front of a PostgreSQL server, on a free port, in the given
/// pool mode, with a few server connections so clients share them. Needs root (it runs as the
/// `postgres` user) and Debian's `pgbouncer`; [`Bouncer::start`] says why not and returns
/// `None` otherwise. Dropping it stops it and removes its directory.
pub struct Bouncer {
    dir: std::path::PathBuf,
    child: std::process::Child,
    /// The port it listens on, at 127.0.0.1.
    pub port: u16,
}

impl Bouncer {
    /// Start one in front of the server at 127.0.0.1:`upstream`, in `pool_mode`
    /// (`transaction` or `session`), with at most `server_connections` per database and user.
    pub fn start(upstream: u16, pool_mode: &str, server_connections: u32) -> Option<Bouncer> {
        if !is_root("no PgBouncer") {
            return None;
        }
        let Some(bin) = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
            .into_iter()
            .map(std::path::PathBuf::from)
            .find(|p| p.exists())
        else {
            let why = "no PgBouncer: not installed (apt-get install pgbouncer)";
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
            println!("{why}");
            return None;
        };
        let dir =
            std::env::temp_dir().join(format!("party-bouncer-{}-{}", std::process::id(), unique()));
        std::fs::create_dir_all(&dir).ok()?;
        let port = free_port()?;
        let ini = format!(
            "[databases]\n\
             * = host=127.0.0.1 port={upstream}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = trust\n\
             auth_file = {dir}/users.txt\n\
             pool_mode = {pool_mode}\n\
             default_pool_size = {server_connections}\n\
             max_client_conn = 200\n\
             ignore_startup_parameters = extra_float_digits,options\n\
             logfile = {dir}/pgbouncer.log\n\
             pidfile = {dir}/pgbouncer.pid\n",
            dir = dir.display()
        );
        std::fs::write(dir.join("pgbouncer.ini"), ini).ok()?;
        std::fs::write(dir.join("users.txt"), "\"postgres\" \"\"\n").ok()?;
        Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()
            .ok()?;
        let child = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin)
            .arg(dir.join("pgbouncer.ini"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let mut bouncer = Bouncer { dir, child, port };
        // Ready when it answers a startup packet (pg_isready), not merely accepts a socket.
        let ready = || {
            Command::new("pg_isready")
                .args([
                    "-q",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-U",
                    "postgres",
                ])
                .status()
                .is_ok_and(|s| s.success())
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut answered = 0;
        while answered < 2 {
            if bouncer.child.try_wait().ok().flatten().is_some()
                || std::time::Instant::now() > deadline
            {
                let why = format!(
                    "no PgBouncer: it did not start within 10 s: {}",
                    bouncer.log()
                );
                assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
                println!("{why}");
                return None;
            }
            answered = if ready() { answered + 1 } else { 0 };
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Some(bouncer)
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        // runuser passes the signal on; the pid file names pgbouncer itself in any case.
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("pgbouncer.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
