//! The dashboard in a real browser: Debian's Chromium, headless, driven over WebDriver by
//! chromedriver. Logs in with the token, checks the overview's counts against `stats`, retries
//! a dead task and sees it run and turn done, shows XSS payloads as text without running them,
//! and sees a cross-site form post refused. Saves screenshots of the overview and a task page
//! under `$CARGO_TARGET_DIR/screenshots` (or the temp dir).
//!
//! Without chromedriver the test says so and passes, except under `CI=true` (`.ci/run`
//! installs `chromium` and `chromium-driver`).

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use party::{NewTask, State};
use serde_json::{Value, json};
use support::{Backend, Server, TOKEN, request};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver on a free port, and one browser session; both end when dropped.
struct Browser {
    driver: Child,
    addr: std::net::SocketAddr,
    session: String,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    async fn start() -> Option<Browser> {
        let (driver, chromium) = ("/usr/bin/chromedriver", "/usr/bin/chromium");
        if !std::path::Path::new(driver).exists() || !std::path::Path::new(chromium).exists() {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!(
                    "CI=true but chromium or chromedriver is missing: apt-get install chromium chromium-driver"
                );
            }
            println!("skipped: install chromium and chromium-driver to run the browser tests");
            return None;
        }
        let port = free_port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut b = Browser {
            driver: child,
            addr,
            session: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync", "--no-first-run",
                         "--disable-dev-shm-usage", "--window-size=1280,900"]
            }
        }}});
        let r = b.call("POST", "/session", Some(caps)).await;
        b.session = r["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {r}"))
            .to_string();
        Some(b)
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string());
        let r = request(self.addr, method, path, &[], body.as_deref()).await;
        let v: Value = serde_json::from_str(&r.body)
            .unwrap_or_else(|e| panic!("chromedriver answered {} ({e}): {}", r.status, r.body));
        v["value"].clone()
    }

    async fn cmd(&self, method: &str, what: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{what}", self.session);
        self.call(method, &path, body).await
    }

    async fn go(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url }))).await;
    }

    async fn find(&self, css: &str) -> String {
        let v = self
            .cmd(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    async fn text(&self, css: &str) -> String {
        let e = self.find(css).await;
        self.cmd("GET", &format!("/element/{e}/text"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.cmd("POST", &format!("/element/{e}/click"), Some(json!({})))
            .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.cmd(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// The page's path once it is `want`: a click that submits a form returns once the form
    /// is sent, before the browser has followed the answer (up to 10 s).
    async fn path_becomes(&self, want: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let path = self.script("return location.pathname").await;
            if path == json!(want) || Instant::now() >= deadline {
                return path;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn script(&self, js: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": js, "args": []})),
        )
        .await
    }

    async fn screenshot(&self, name: &str) {
        let v = self.cmd("GET", "/screenshot", None).await;
        let png = base64(v.as_str().expect("a screenshot"));
        let dir = std::env::var("CARGO_TARGET_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|_| std::env::temp_dir())
            .join("screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), png).unwrap();
    }
}

fn base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let clean: Vec<u8> = text
        .bytes()
        .filter(|c| *c != b'=' && !c.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, c)| n | (u32::from(value(*c)) << (18 - 6 * i)));
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..chunk.len().saturating_sub(1)]);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_logs_in_retries_a_dead_task_and_sees_data_as_text() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let Some(s) = Server::start(Backend::Sqlite).await else {
        return;
    };
    let base = format!("http://{}", s.addr);
    // A task that fails its only attempt, then succeeds when retried (its marker file exists).
    let marker = std::env::temp_dir().join(format!("party-browser-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let cmd = format!(
        "test -f {0} || {{ touch {0}; echo card declined >&2; exit 1; }}",
        marker.display()
    );
    let flaky = s
        .party
        .add(
            NewTask::new("shell")
                .data(json!({ "cmd": cmd }))
                .max_attempts(1),
        )
        .await
        .unwrap();
    let xss = s
        .party
        .add(
            NewTask::new("noop")
                .at(party::jiff::Timestamp::now() + party::jiff::SignedDuration::from_hours(1))
                .data(json!({
                    "script": "<script>window.__xss = 1</script>",
                    "attr": "\"><img src=x onerror=\"window.__xss = 2\">",
                })),
        )
        .await
        .unwrap();
    for i in 0..3 {
        s.party
            .add(
                NewTask::new("log")
                    .data(json!({ "invoice": i }))
                    .queue("billing")
                    .at(party::jiff::Timestamp::now() + party::jiff::SignedDuration::from_hours(2)),
            )
            .await
            .unwrap();
    }
    s.party
        .worker(Default::default())
        .run_until_idle()
        .await
        .unwrap();
    assert_eq!(s.party.get(flaky).await.unwrap().state, State::Dead);

    // Log in with the token.
    browser.go(&format!("{base}/")).await;
    assert!(browser.script("return location.pathname").await == json!("/login"));
    browser.type_into("#token", TOKEN).await;
    browser.click("button[type=submit]").await;
    assert_eq!(browser.path_becomes("/").await, json!("/"));
    // The overview's counts are the store's.
    let stats = s.party.stats().await.unwrap();
    for (state, n) in &stats.by_state {
        let shown = browser
            .text(&format!("[data-state={}]", state.as_str()))
            .await;
        assert_eq!(shown, n.to_string(), "{state}");
    }
    browser.screenshot("overview.png").await;

    // The dead task: open it from the dead list, retry, run, done.
    browser.go(&format!("{base}/tasks?state=dead")).await;
    browser.click("#tasks a").await;
    let task_path = format!("/tasks/{flaky}");
    assert_eq!(browser.path_becomes(&task_path).await, json!(task_path));
    assert!(browser.text("#fields").await.contains("card declined"));
    browser.click("#retry").await;
    // The click returns once the form is sent; wait for the server to have done it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.party.get(flaky).await.unwrap().state != State::Scheduled {
        assert!(
            Instant::now() < deadline,
            "the retry never reached the server"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.party
        .worker(Default::default())
        .run_until_idle()
        .await
        .unwrap();
    browser.go(&format!("{base}/tasks/{flaky}")).await;
    assert!(browser.text("#fields").await.contains("done"));
    assert_eq!(s.party.get(flaky).await.unwrap().state, State::Done);
    let _ = std::fs::remove_file(&marker);

    // XSS payloads are text, and nothing ran.
    browser.go(&format!("{base}/tasks/{xss}")).await;
    let data = browser.text("#data").await;
    assert!(data.contains("<script>window.__xss = 1</script>"), "{data}");
    assert!(data.contains("onerror"), "{data}");
    assert_eq!(
        browser.script("return typeof window.__xss").await,
        json!("undefined")
    );
    assert_eq!(
        browser
            .script("return document.querySelectorAll('#data img, #data script').length")
            .await,
        json!(0)
    );
    browser.go(&format!("{base}/tasks")).await;
    assert_eq!(
        browser.script("return typeof window.__xss").await,
        json!("undefined")
    );
    browser.go(&format!("{base}/tasks/{flaky}")).await;
    browser.screenshot("task.png").await;

    // A page on another site posts a form to cancel a task: refused, the task stays.
    let victim = s
        .party
        .add(
            NewTask::new("noop")
                .at(party::jiff::Timestamp::now() + party::jiff::SignedDuration::from_hours(1)),
        )
        .await
        .unwrap();
    let evil_html = format!(
        "<form id=f method=post action=\"{base}/tasks/{victim}/cancel\"><input name=x value=1></form>\
         <script>document.getElementById('f').submit()</script>"
    );
    let evil = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let evil_port = evil.local_addr().unwrap().port();
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let html = evil_html.clone();
            async move { axum::response::Html(html) }
        }),
    );
    tokio::spawn(async move { axum::serve(evil, app).await });
    // `localhost` is another site than `127.0.0.1`.
    browser.go(&format!("http://localhost:{evil_port}/")).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let here = browser.script("return location.href").await;
        if here.as_str().is_some_and(|h| h.starts_with(&base)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the forged form was never posted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The browser does not send the SameSite=Strict cookie with another site's post, so the
    // server sees no session (and without it, no CSRF token either).
    let body = browser.script("return document.body.innerText").await;
    let body = body.as_str().unwrap();
    assert!(
        body.contains("token is required") || body.contains("refused"),
        "{body}"
    );
    assert_eq!(s.party.get(victim).await.unwrap().state, State::Scheduled);
    browser.cmd("DELETE", "", None).await;
}
