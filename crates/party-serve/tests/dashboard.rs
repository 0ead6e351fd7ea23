//! The dashboard and metrics over HTTP against a live server, on SQLite and PostgreSQL: the
//! login page's cookie, every page escaping task data, actions that need the session's CSRF
//! token, and Prometheus text.

mod support;

use party::{NewTask, State, TaskId};
use serde_json::json;
use support::{Backend, Server, TOKEN, on_every_backend, write_runs};

/// Log in through the form; returns the `Cookie` header to send.
async fn login(s: &Server) -> String {
    let r = s
        .raw(
            "POST",
            "/login",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            Some(&format!("token={TOKEN}")),
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let cookie = r
        .header("set-cookie")
        .expect("a session cookie")
        .to_string();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    cookie.split(';').next().unwrap().to_string()
}

/// The CSRF token in a page's forms.
fn csrf(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token");
    let rest = &page[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

async fn login_gives_a_strict_http_only_cookie_and_wrong_tokens_none(b: Backend) {
    let Some(s) = Server::start(b).await else {
        return;
    };
    let page = s.raw("GET", "/login", &[], None).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("type=\"password\""));
    let wrong = s
        .raw(
            "POST",
            "/login",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            Some("token=not-the-token-at-all"),
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.header("set-cookie").is_none());
    let cookie = login(&s).await;
    let overview = s.raw("GET", "/", &[("Cookie", &cookie)], None).await;
    assert_eq!(overview.status, 200);
    assert!(overview.body.contains("Overview"));
    // Pages take the bearer header too, for scripts.
    let bearer = format!("Bearer {TOKEN}");
    assert_eq!(
        s.raw("GET", "/tasks", &[("Authorization", &bearer)], None)
            .await
            .status,
        200
    );
    // Logging out ends the session.
    let token = csrf(&overview.body);
    let out = s
        .raw(
            "POST",
            "/logout",
            &[
                ("Cookie", &cookie),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            Some(&format!("csrf={token}")),
        )
        .await;
    assert_eq!(out.status, 303);
    assert_eq!(
        s.raw("GET", "/", &[("Cookie", &cookie)], None).await.status,
        303
    );
}

async fn overview_counts_equal_stats(b: Backend) {
    let Some(s) = Server::start(b).await else {
        return;
    };
    for i in 0..3 {
        s.party
            .add(NewTask::new("noop").data(json!({ "i": i })))
            .await
            .unwrap();
    }
    let id = s.party.add(NewTask::new("log")).await.unwrap();
    s.party.cancel(id).await.unwrap();
    let cookie = login(&s).await;
    let page = s.raw("GET", "/", &[("Cookie", &cookie)], None).await.body;
    let stats = s.party.stats().await.unwrap();
    for (state, n) in &stats.by_state {
        let cell = format!("data-state=\"{}\">{n}<", state.as_str());
        assert!(page.contains(&cell), "{cell} in {page}");
    }
    // No worker is live, so the due tasks are called out.
    assert!(page.contains("id=\"unhandled\""));
    assert!(
        page.contains("http-equiv=\"refresh\""),
        "the page refreshes itself"
    );
}

async fn task_data_is_shown_as_text_everywhere(b: Backend) {
    let Some(s) = Server::start(b).await else {
        return;
    };
    let payloads = json!({
        "script": "<script>alert(1)</script>",
        "attr": "\"><img src=x onerror=alert(2)>",
    });
    let id = s
        .party
        .add(NewTask::new("noop").data(payloads).queue("<b>q</b>"))
        .await
        .unwrap();
    let cookie = login(&s).await;
    for path in [
        format!("/tasks/{id}"),
        "/tasks".to_string(),
        "/tasks?handler=%3Cscript%3E".to_string(),
        "/".to_string(),
    ] {
        let body = s.raw("GET", &path, &[("Cookie", &cookie)], None).await.body;
        assert!(!body.contains("<script>alert"), "{path}");
        assert!(!body.contains("<img src=x"), "{path}");
        assert!(!body.contains("<b>q</b>"), "{path}");
    }
    let detail = s
        .raw("GET", &format!("/tasks/{id}"), &[("Cookie", &cookie)], None)
        .await
        .body;
    assert!(
        detail.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{detail}"
    );
    assert!(detail.contains("&lt;b&gt;q&lt;/b&gt;"));
}

async fn actions_need_the_sessions_csrf_token(b: Backend) {
    let Some(s) = Server::start(b).await else {
        return;
    };
    let id = s.party.add(NewTask::new("noop")).await.unwrap();
    let cookie = login(&s).await;
    let page = s
        .raw("GET", &format!("/tasks/{id}"), &[("Cookie", &cookie)], None)
        .await
        .body;
    let token = csrf(&page);
    let form = [
        ("Cookie", cookie.as_str()),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ];
    let state = |id: TaskId| {
        let party = s.party.clone();
        async move { party.get(id).await.unwrap().state }
    };
    // A cross-site form post: the cookie rides along, the CSRF token does not.
    let forged = s
        .raw("POST", &format!("/tasks/{id}/cancel"), &form, Some(""))
        .await;
    assert_eq!(forged.status, 403);
    let wrong = s
        .raw(
            "POST",
            &format!("/tasks/{id}/cancel"),
            &form,
            Some("csrf=0000"),
        )
        .await;
    assert_eq!(wrong.status, 403);
    // The right token from another origin.
    let mut foreign = form.to_vec();
    foreign.push(("Origin", "http://evil.example"));
    let r = s
        .raw(
            "POST",
            &format!("/tasks/{id}/cancel"),
            &foreign,
            Some(&format!("csrf={token}")),
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(state(id).await, State::Scheduled, "nothing changed");
    // The dashboard's own form.
    let r = s
        .raw(
            "POST",
            &format!("/tasks/{id}/cancel"),
            &form,
            Some(&format!("csrf={token}")),
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(state(id).await, State::Cancelled);
    let r = s
        .raw(
            "POST",
            &format!("/tasks/{id}/retry"),
            &form,
            Some(&format!("csrf={token}")),
        )
        .await;
    assert_eq!(r.status, 303);
    assert_eq!(state(id).await, State::Scheduled);
    // Bulk actions on a filter, with and without the token.
    let r = s
        .raw(
            "POST",
            "/tasks/cancel-matching",
            &form,
            Some("handler=noop"),
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(state(id).await, State::Scheduled);
    let r = s
        .raw(
            "POST",
            "/tasks/cancel-matching",
            &form,
            Some(&format!("csrf={token}&handler=noop&state=&queue=")),
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(state(id).await, State::Cancelled);
    // A read-only login sees pages and changes nothing.
    let r = s
        .raw(
            "POST",
            "/login",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            Some(&format!("token={}", support::READ_TOKEN)),
        )
        .await;
    let read_cookie = r
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let page = s
        .raw(
            "GET",
            &format!("/tasks/{id}"),
            &[("Cookie", &read_cookie)],
            None,
        )
        .await
        .body;
    let read_csrf = csrf(&page);
    let r = s
        .raw(
            "POST",
            &format!("/tasks/{id}/retry"),
            &[
                ("Cookie", &read_cookie),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            Some(&format!("csrf={read_csrf}")),
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(state(id).await, State::Cancelled);
}

async fn metrics_are_prometheus_text_behind_the_token(b: Backend) {
    let Some(s) = Server::start(b).await else {
        return;
    };
    s.party.add(NewTask::new("noop")).await.unwrap();
    s.party.add(NewTask::new("noop\"x")).await.ok();
    assert_eq!(s.raw("GET", "/metrics", &[], None).await.status, 401);
    let r = s.api("GET", "/metrics", None).await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    assert!(r.body.contains("# TYPE party_tasks gauge"));
    assert!(
        r.body.contains("party_tasks{state=\"scheduled\"} 1\n"),
        "{}",
        r.body
    );
    assert!(
        r.body
            .contains("party_handler_tasks{handler=\"noop\",state=\"scheduled\"} 1\n")
    );
    assert!(r.body.contains("party_live_workers 0\n"));
    let public = Server::start_with(b, |c| party_serve::ServeConfig {
        metrics_public: true,
        ..c
    })
    .await
    .unwrap();
    assert_eq!(public.raw("GET", "/metrics", &[], None).await.status, 200);
    assert_eq!(
        public.raw("GET", "/api/v1/stats", &[], None).await.status,
        401,
        "only metrics open"
    );
}

async fn the_add_form_previews_a_rule_then_adds_with_the_apis_checks(b: Backend) {
    let Some(s) = Server::start(b).await else {
        return;
    };
    let cookie = login(&s).await;
    let form = s.raw("GET", "/add", &[("Cookie", &cookie)], None).await;
    assert_eq!(form.status, 200);
    let token = csrf(&form.body);
    // The preview is posted, so the data and the token stay out of the address.
    assert!(!form.body.contains("formmethod"), "{}", form.body);
    assert!(form.body.contains(r#"name="intent" value="preview""#));
    let headers = [
        ("Cookie", cookie.as_str()),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ];
    // Preview: the rule's next occurrences, nothing written.
    let preview = s
        .raw(
            "POST",
            "/add",
            &headers,
            Some(&format!(
                "csrf={token}&intent=preview&handler=noop&monthly_on=31&at_time=09%3A00\
                 &tz=Europe%2FBerlin&data=%7B%22secret%22%3A1%7D"
            )),
        )
        .await;
    assert_eq!(preview.status, 200);
    assert!(
        preview.body.contains("id=\"preview-times\""),
        "{}",
        preview.body
    );
    assert_eq!(preview.body.matches("<li>").count(), 5);
    assert!(s.party.list(&Default::default()).await.unwrap().is_empty());
    // A preview without the session's token is refused like an add.
    let forged = s
        .raw(
            "POST",
            "/add",
            &headers,
            Some("intent=preview&handler=noop"),
        )
        .await;
    assert_eq!(forged.status, 403);
    // A bad rule: the API's message, nothing written.
    let bad = s
        .raw(
            "POST",
            "/add",
            &headers,
            Some(&format!("csrf={token}&handler=noop&every=0s")),
        )
        .await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("id=\"add-error\""));
    assert!(bad.body.contains("zero"));
    // Without the session's token: refused.
    let forged = s.raw("POST", "/add", &headers, Some("handler=noop")).await;
    assert_eq!(forged.status, 403);
    assert!(s.party.list(&Default::default()).await.unwrap().is_empty());
    let ok = s
        .raw(
            "POST",
            "/add",
            &headers,
            Some(&format!(
                "csrf={token}&handler=noop&data=%7B%22customer%22%3A%22acme%22%7D&every=1h&queue="
            )),
        )
        .await;
    assert_eq!(ok.status, 303, "{}", ok.body);
    let tasks = s.party.list(&Default::default()).await.unwrap();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].data, json!({"customer": "acme"}));
    assert!(tasks[0].is_recurring);
    assert_eq!(
        ok.header("location"),
        Some(format!("/tasks/{}", tasks[0].id).as_str())
    );
}

async fn a_recurring_tasks_page_shows_its_ledger_and_coming_occurrences(b: Backend) {
    let Some(s) = Server::start(b).await else {
        return;
    };
    let now = party::jiff::Timestamp::now();
    // Every hour from three hours ago: the worker catches up on each missed occurrence, late.
    let id = s
        .party
        .add(
            NewTask::new("noop")
                .every(party::jiff::SignedDuration::from_hours(1))
                .at(now - party::jiff::SignedDuration::from_secs(3 * 3600 - 30)),
        )
        .await
        .unwrap();
    s.party
        .worker(Default::default())
        .run_until_idle()
        .await
        .unwrap();
    let monthly = s
        .party
        .add(NewTask::new("log").recurrence(
            party::recurrence::Recurrence::monthly_on(31, "09:00", Some("Europe/Berlin")).unwrap(),
        ))
        .await
        .unwrap();
    let cookie = login(&s).await;
    let page = s
        .raw("GET", &format!("/tasks/{id}"), &[("Cookie", &cookie)], None)
        .await
        .body;
    assert!(page.contains("id=\"ledger\""), "{page}");
    let ledger = &page[page.find("id=\"ledger\"").unwrap()..];
    assert_eq!(
        ledger.matches(">late<").count(),
        3,
        "every occurrence ran long after its time: {ledger}"
    );
    assert!(page.contains("id=\"calendar\""));
    assert!(page.contains("every 1h"));
    let page = s
        .raw(
            "GET",
            &format!("/tasks/{monthly}"),
            &[("Cookie", &cookie)],
            None,
        )
        .await
        .body;
    assert!(
        page.contains("this month has no day 31: runs on its last day"),
        "{page}"
    );
    assert!(page.contains("in Europe/Berlin"));
}

/// The task filter form takes a data field; the listing, the form and the next page keep it,
/// and the bulk actions act on it alone.
async fn the_tasks_page_filters_on_a_data_field_and_counts_before_a_bulk_action(b: Backend) {
    let Some(s) = Server::start(b).await else {
        return;
    };
    let mut acme = Vec::new();
    for i in 0..3 {
        let customer = if i == 1 { "globex" } else { "acme" };
        let id = s
            .party
            .add(NewTask::new("noop").data(json!({"customer": customer, "i": i})))
            .await
            .unwrap();
        if customer == "acme" {
            acme.push(id);
        }
    }
    let cookie = login(&s).await;
    let page = s
        .raw(
            "GET",
            "/tasks?state=&handler=&queue=&data=customer%3Dacme&limit=1",
            &[("Cookie", &cookie)],
            None,
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body
            .contains("name=\"data\" placeholder=\"customer=acme\" value=\"customer=acme\""),
        "{}",
        page.body
    );
    assert!(page.body.contains(&acme[0].to_string()));
    assert!(!page.body.contains("globex"));
    assert!(
        page.body
            .contains("&amp;data=customer%3Dacme&amp;limit=1&amp;cursor="),
        "the next page keeps the filter"
    );
    let bad = s
        .raw("GET", "/tasks?data=a.b%3Dc", &[("Cookie", &cookie)], None)
        .await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("one top-level field"), "{}", bad.body);
    assert!(page.body.contains("href=\"/tasks/cancel-matching?state=&amp;handler=&amp;queue=&amp;data=customer%3Dacme\""), "{}", page.body);
    // The bulk action first shows how many tasks it will touch, and changes nothing.
    let confirm = s
        .raw(
            "GET",
            "/tasks/cancel-matching?state=&handler=&queue=&data=customer%3Dacme",
            &[("Cookie", &cookie)],
            None,
        )
        .await;
    assert_eq!(confirm.status, 200, "{}", confirm.body);
    assert!(
        confirm
            .body
            .contains("<strong>2</strong> tasks will be cancelled"),
        "{}",
        confirm.body
    );
    assert!(confirm.body.contains("Cancel 2 tasks"));
    for t in s.party.list(&Default::default()).await.unwrap() {
        assert_eq!(t.state, State::Scheduled, "a count changes nothing");
    }
    let none = s
        .raw(
            "GET",
            "/tasks/retry-matching?data=customer%3Dacme",
            &[("Cookie", &cookie)],
            None,
        )
        .await;
    assert!(none.body.contains("No task matches"), "{}", none.body);
    assert!(!none.body.contains("id=\"confirm\""));
    let everything = s
        .raw(
            "GET",
            "/tasks/cancel-matching?state=",
            &[("Cookie", &cookie)],
            None,
        )
        .await;
    assert_eq!(everything.status, 400);
    assert!(
        everything.body.contains("refusing to cancel every task"),
        "{}",
        everything.body
    );
    let token = csrf(&confirm.body);
    let r = s
        .raw(
            "POST",
            "/tasks/cancel-matching",
            &[
                ("Cookie", &cookie),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            Some(&format!(
                "csrf={token}&state=&handler=&queue=&data=customer%3Dacme"
            )),
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(
        r.header("location"),
        Some("/tasks?state=&handler=&queue=&data=customer%3Dacme")
    );
    for t in s.party.list(&Default::default()).await.unwrap() {
        let expected = if acme.contains(&t.id) {
            State::Cancelled
        } else {
            State::Scheduled
        };
        assert_eq!(t.state, expected, "{}", t.data);
    }
}

/// `/recurring` lists every live recurring task (not one-off ones, not finished ones) with
/// its rule, time zone, next and last run, and links to its ledger and calendar.
async fn the_recurring_page_lists_every_live_schedule(b: Backend) {
    let Some(s) = Server::start(b).await else {
        return;
    };
    let hourly = s
        .party
        .add(
            NewTask::new("noop")
                .data(json!({"customer": "<b>acme</b>"}))
                .every(party::jiff::SignedDuration::from_hours(1)),
        )
        .await
        .unwrap();
    s.party
        .worker(Default::default())
        .run_until_idle()
        .await
        .unwrap();
    let ran = s.party.get(hourly).await.unwrap();
    let berlin = s
        .party
        .add(NewTask::new("log").recurrence(
            party::recurrence::Recurrence::cron("0 9 * * MON-FRI", Some("Europe/Berlin")).unwrap(),
        ))
        .await
        .unwrap();
    let gone = s
        .party
        .add(
            NewTask::new("log")
                .data(json!({"n": 2}))
                .every(party::jiff::SignedDuration::from_hours(2)),
        )
        .await
        .unwrap();
    s.party.cancel(gone).await.unwrap();
    let once = s.party.add(NewTask::new("noop")).await.unwrap();
    let cookie = login(&s).await;
    let page = s
        .raw("GET", "/recurring", &[("Cookie", &cookie)], None)
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    let table = &page.body[page.body.find("id=\"recurring\"").expect("a table")..];
    assert_eq!(
        table.matches("<tr>").count(),
        3,
        "a header and two live schedules: {table}"
    );
    assert!(!table.contains(&gone.to_string()) && !table.contains(&once.to_string()));
    assert!(
        table.contains("every 1h") && table.contains("cron &quot;0 9 * * MON-FRI&quot;"),
        "{table}"
    );
    assert!(table.contains("Europe/Berlin"));
    assert!(
        table.contains(&party::format_time(ran.timestamp)),
        "the next run"
    );
    assert!(
        table.contains(&party::format_time(ran.last_run_on.unwrap())),
        "the last run"
    );
    assert!(table.contains("never"), "the Berlin task has not run");
    assert!(
        table.contains("&lt;b&gt;acme&lt;/b&gt;") && !table.contains("<b>acme"),
        "data as text"
    );
    for id in [hourly, berlin] {
        assert!(
            table.contains(&format!("href=\"/tasks/{id}#occurrences\"")),
            "{table}"
        );
        assert!(table.contains(&format!("href=\"/tasks/{id}#coming\"")));
        let detail = s
            .raw("GET", &format!("/tasks/{id}"), &[("Cookie", &cookie)], None)
            .await
            .body;
        assert!(
            detail.contains("id=\"coming\"") && detail.contains("id=\"occurrences\""),
            "the links' targets"
        );
    }
    assert!(
        page.body.contains("href=\"/recurring\""),
        "in the navigation"
    );
}

/// Per recurring schedule, folded by handler: the stalest latest success, schedules that never
/// succeeded, and missed occurrences as `gaps` counts them; no data in any label.
async fn metrics_tell_each_handlers_schedules_last_success_and_missed_occurrences(b: Backend) {
    use party::jiff::{SignedDuration, Timestamp};
    use party::recurrence::{Missed, Recurrence};
    let start: Timestamp = "2027-03-01T10:00:00Z".parse().unwrap();
    let clock = std::sync::Arc::new(party::ManualClock::new(start));
    let Some(s) = Server::start_clocked(b, clock.clone()).await else {
        return;
    };
    let hourly = |missed: Missed| {
        let mut r = Recurrence::every(SignedDuration::from_hours(1)).unwrap();
        r.missed = missed;
        r
    };
    // Two schedules of one handler, told apart by their data: one skips what it missed.
    s.party
        .add(
            NewTask::new("noop")
                .data(json!({"customer": "secret-acme"}))
                .recurrence(hourly(Missed::Skip)),
        )
        .await
        .unwrap();
    s.party
        .add(
            NewTask::new("noop")
                .data(json!({"customer": "secret-globex"}))
                .recurrence(hourly(Missed::All)),
        )
        .await
        .unwrap();
    s.party
        .add(
            NewTask::new("log")
                .recurrence(hourly(Missed::All))
                .at(start + SignedDuration::from_hours(10)),
        )
        .await
        .unwrap();
    s.party
        .worker(Default::default())
        .run_until_idle()
        .await
        .unwrap();
    // Three and a half hours without a worker: one schedule catches up, the other skips three.
    clock.advance(SignedDuration::from_mins(210));
    s.party
        .worker(Default::default())
        .run_until_idle()
        .await
        .unwrap();
    let r = s.api("GET", "/metrics", None).await;
    assert_eq!(r.status, 200);
    let body = r.body;
    for line in [
        "party_recurring_schedules{handler=\"noop\"} 2\n",
        "party_recurring_schedules{handler=\"log\"} 1\n",
        &format!(
            "party_schedule_last_success_timestamp_seconds{{handler=\"noop\"}} {}\n",
            start.as_second()
        ),
        "party_schedules_never_succeeded{handler=\"noop\"} 0\n",
        "party_schedules_never_succeeded{handler=\"log\"} 1\n",
        "party_schedule_missed_occurrences{handler=\"noop\"} 3\n",
        "party_schedule_missed_occurrences{handler=\"log\"} 0\n",
        "# TYPE party_schedule_missed_occurrences gauge\n",
    ] {
        assert!(body.contains(line), "{line} in {body}");
    }
    assert!(
        !body.contains("party_schedule_last_success_timestamp_seconds{handler=\"log\"}"),
        "a schedule that never succeeded has no last success"
    );
    assert!(!body.contains("secret"), "no data in a label");
}

/// A server on a manual clock at `start`, for a schedule every 15 minutes with 40 days of
/// occurrences (`n` of them) before its pending one: the setup of the long-history tests.
struct LongSchedule {
    s: Server,
    clock: std::sync::Arc<party::ManualClock>,
    start: party::jiff::Timestamp,
    every: party::jiff::SignedDuration,
    n: i64,
    pending: party::jiff::Timestamp,
}

impl LongSchedule {
    async fn start(b: Backend) -> Option<LongSchedule> {
        let start: party::jiff::Timestamp = "2027-01-01T00:00:00Z".parse().unwrap();
        let every = party::jiff::SignedDuration::from_mins(15);
        let n: i64 = 40 * 96;
        let clock = std::sync::Arc::new(party::ManualClock::new(start));
        let s = Server::start_clocked(b, clock.clone()).await?;
        Some(LongSchedule {
            s,
            clock,
            start,
            every,
            n,
            pending: start + every * (n as i32),
        })
    }
}

/// A schedule every 15 minutes with 40 days of runs (thousands of rows): its page shows the
/// latest `RECENT_RUNS` only, newest first, says how many it has and where the older ones and
/// the whole comparison are; its ledger, from those runs, flags a miss and a failure among
/// them and nothing older.
async fn a_long_schedules_page_shows_its_latest_runs_and_their_ledger(b: Backend) {
    use party::Outcome;
    use party::jiff::SignedDuration;
    use party::policy::RECENT_RUNS;
    use party::recurrence::Recurrence;
    let Some(LongSchedule {
        s,
        clock,
        start,
        every,
        n,
        pending,
    }) = LongSchedule::start(b).await
    else {
        return;
    };
    let id = s
        .party
        .add(
            NewTask::new("noop")
                .recurrence(Recurrence::every(every).unwrap())
                .at(pending),
        )
        .await
        .unwrap();
    // Missed long ago and among the latest runs; one of the latest failed.
    let (missed_old, missed, failed) = (100, n - 10, n - 5);
    write_runs(
        &s,
        id,
        start,
        every,
        (0..n)
            .filter(|k| ![missed_old, missed].contains(k))
            .map(|k| {
                let outcome = if k == failed {
                    Outcome::Failed
                } else {
                    Outcome::Succeeded
                };
                (k, outcome)
            }),
    )
    .await;
    clock.set(pending - SignedDuration::from_mins(1));
    let at = |k: i64| party::format_time(start + every * (k as i32));
    let shown: Vec<i64> = (0..n)
        .rev()
        .filter(|k| ![missed_old, missed].contains(k))
        .take(RECENT_RUNS as usize)
        .collect();

    let cookie = login(&s).await;
    let page = s
        .raw("GET", &format!("/tasks/{id}"), &[("Cookie", &cookie)], None)
        .await
        .body;
    assert!(
        page.contains(&format!(
            "Showing the latest {RECENT_RUNS} of {} runs",
            n - 2
        )),
        "{page}"
    );
    assert!(
        page.contains(&format!("/api/v1/tasks/{id}/runs?cursor=")),
        "{page}"
    );
    assert!(page.contains(&format!("party gaps {id}")), "{page}");
    let runs = &page[page.find("id=\"runs\"").expect("a runs table")..];
    let runs = &runs[..runs.find("</table>").unwrap()];
    assert_eq!(runs.matches("<tr>").count(), 1 + RECENT_RUNS as usize);
    assert!(
        runs.find(&at(shown[0])) < runs.find(&at(shown[1])),
        "newest first"
    );
    assert!(runs.contains(&at(*shown.last().unwrap())));
    // The run before the oldest shown is nowhere on the page.
    let next_older = shown.last().unwrap() - 1;
    assert!(!page.contains(&at(next_older)), "{}", at(next_older));
    let ledger = &page[page.find("id=\"ledger\"").expect("a ledger")..];
    let ledger = &ledger[..ledger.find("</table>").unwrap()];
    assert_eq!(ledger.matches(">missed<").count(), 1, "{ledger}");
    assert!(ledger.contains(&at(missed)));
    assert_eq!(ledger.matches(">failed<").count(), 1, "{ledger}");
    assert!(!ledger.contains(&at(missed_old)));
    assert!(page.contains("Only the occurrences since the oldest run shown"));
}

/// A schedule every 15 minutes with 40 days of runs: the metrics count the occurrences missed
/// within `MISSED_WINDOW` only (one just inside counts, one just outside and older ones do
/// not), take its latest success from the runs' index, and a schedule whose thousands of
/// runs all failed never succeeded. The store reads no more successful runs than asked.
async fn metrics_of_a_long_schedule_count_misses_within_the_window_only(b: Backend) {
    use party::Outcome;
    use party::jiff::{SignedDuration, Timestamp};
    use party::policy::MISSED_WINDOW;
    use party::recurrence::Recurrence;
    let Some(LongSchedule {
        s,
        clock,
        start,
        every,
        n,
        pending,
    }) = LongSchedule::start(b).await
    else {
        return;
    };
    let rule = Recurrence::every(every).unwrap();
    let noop = s
        .party
        .add(NewTask::new("noop").recurrence(rule.clone()).at(pending))
        .await
        .unwrap();
    let log = s
        .party
        .add(NewTask::new("log").recurrence(rule).at(pending))
        .await
        .unwrap();
    // The window's first occurrence is 672 intervals (7 days) before the pending one.
    let in_window = MISSED_WINDOW.as_secs() / every.as_secs();
    assert_eq!(in_window, 672);
    let first_in = n - in_window;
    // Missed long ago, and just before the window: outside it.
    let missed_outside: Vec<i64> = (100..110).chain([first_in - 1]).collect();
    // Missed within it: its first occurrence, five in a row, and three whose one run failed
    // (the last of them just before the pending occurrence).
    let failed = [n - 21, n - 20, n - 1];
    let missed_inside: Vec<i64> = [first_in]
        .into_iter()
        .chain(n - 50..n - 45)
        .chain(failed)
        .collect();
    write_runs(
        &s,
        noop,
        start,
        every,
        (0..n)
            .filter(|k| !missed_outside.contains(k) && !missed_inside.contains(k))
            .map(|k| (k, Outcome::Succeeded))
            .chain(failed.into_iter().map(|k| (k, Outcome::Failed))),
    )
    .await;
    write_runs(&s, log, start, every, (0..n).map(|k| (k, Outcome::Failed))).await;
    clock.set(pending - SignedDuration::from_mins(1));

    // The whole history holds every miss; the metrics, those of the window.
    let full = s.party.gaps(noop).await.unwrap();
    assert_eq!(
        full.missing.len(),
        missed_outside.len() + missed_inside.len(),
        "{full:?}"
    );
    let r = s.api("GET", "/metrics", None).await;
    assert_eq!(r.status, 200);
    let last_success = start + every * ((n - 2) as i32) + SignedDuration::from_secs(30);
    for line in [
        &format!(
            "party_schedule_missed_occurrences{{handler=\"noop\"}} {}\n",
            missed_inside.len()
        ),
        "party_schedule_missed_occurrences{handler=\"log\"} 0\n",
        &format!(
            "party_schedule_last_success_timestamp_seconds{{handler=\"noop\"}} {}\n",
            last_success.as_second()
        ),
        "party_schedules_never_succeeded{handler=\"noop\"} 0\n",
        "party_schedules_never_succeeded{handler=\"log\"} 1\n",
        "within the last 168 hours",
    ] {
        assert!(r.body.contains(line), "{line} in {}", r.body);
    }

    // The store reads the latest successes only, as many as asked, and says whether an earlier
    // one exists.
    let since = start + every * 3000;
    let read = s
        .party
        .store()
        .task_successes(party::store::SuccessParams {
            tasks: &[(noop, since), (log, since)],
            limit: 10,
        })
        .await
        .unwrap();
    let latest: Vec<Timestamp> = (n - 12..=n - 2)
        .rev()
        .filter(|k| *k != n - 1)
        .map(|k| start + every * (k as i32))
        .take(10)
        .collect();
    assert_eq!(
        read,
        vec![
            party::store::Successes {
                last_finished_at: Some(last_success),
                since: latest,
                before: true,
            },
            party::store::Successes::default(),
        ]
    );
}

/// A count before a bulk action stops at `BULK_COUNTED` and says "more than"; the action
/// itself still touches every match.
async fn a_bulk_count_stops_at_its_limit_and_the_action_touches_every_match(b: Backend) {
    let Some(s) = Server::start(b).await else {
        return;
    };
    let many = party::policy::BULK_COUNTED as usize + 5;
    s.party
        .add_many(
            (0..many)
                .map(|_| NewTask::new("noop").queue("bulk"))
                .collect(),
        )
        .await
        .unwrap();
    s.party.add(NewTask::new("noop")).await.unwrap();
    let bearer = format!("Bearer {TOKEN}");
    let auth = ("Authorization", bearer.as_str());
    let confirm = s
        .raw("GET", "/tasks/cancel-matching?queue=bulk", &[auth], None)
        .await;
    assert_eq!(confirm.status, 200, "{}", confirm.body);
    let cap = party::policy::BULK_COUNTED;
    assert!(
        confirm.body.contains(&format!(
            "<strong>more than {cap}</strong> tasks will be cancelled"
        )),
        "{}",
        confirm.body
    );
    assert!(
        confirm
            .body
            .contains(&format!("Cancel more than {cap} tasks"))
    );
    let r = s
        .raw(
            "POST",
            "/tasks/cancel-matching",
            &[auth, ("Content-Type", "application/x-www-form-urlencoded")],
            Some("state=&handler=&queue=bulk&data="),
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let listed = s
        .party
        .list(&party::ListFilter {
            limit: Some(10_000),
            ..Default::default()
        })
        .await
        .unwrap();
    let cancelled = listed
        .iter()
        .filter(|t| t.state == State::Cancelled)
        .count();
    assert_eq!(cancelled, many, "every match, not the count shown");
    assert_eq!(listed.len(), many + 1);
}

/// A data-filtered count looks at no more than `BULK_EXAMINED` tasks and says so; the action
/// still finds the match past them.
async fn a_data_filtered_bulk_count_is_a_bound_past_the_tasks_it_examines(b: Backend) {
    let Some(s) = Server::start(b).await else {
        return;
    };
    let examined = party::policy::BULK_EXAMINED as usize;
    let mut tasks: Vec<NewTask> = (0..examined + 1)
        .map(|_| NewTask::new("noop").data(json!({ "c": "x" })))
        .collect();
    tasks.push(NewTask::new("noop").data(json!({ "c": "y" })));
    let ids = s.party.add_many(tasks).await.unwrap();
    let last = *ids.last().unwrap();
    let bearer = format!("Bearer {TOKEN}");
    let auth = ("Authorization", bearer.as_str());
    let confirm = s
        .raw("GET", "/tasks/cancel-matching?data=c%3Dy", &[auth], None)
        .await;
    assert_eq!(confirm.status, 200, "{}", confirm.body);
    assert!(confirm.body.contains(r#"id="partial""#), "{}", confirm.body);
    assert!(
        confirm.body.contains(&format!(
            "No task matches among the first {examined} examined"
        )),
        "{}",
        confirm.body
    );
    assert!(confirm.body.contains("Cancel every match"));
    let r = s
        .raw(
            "POST",
            "/tasks/cancel-matching",
            &[auth, ("Content-Type", "application/x-www-form-urlencoded")],
            Some("state=&handler=&queue=&data=c%3Dy"),
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(s.party.get(last).await.unwrap().state, State::Cancelled);
    assert_eq!(s.party.get(ids[0]).await.unwrap().state, State::Scheduled);
    // A filter that matches within the tasks examined counts them, still as a bound.
    let x = s
        .raw("GET", "/tasks/cancel-matching?data=c%3Dx", &[auth], None)
        .await;
    assert!(
        x.body.contains(&format!(
            "<strong>more than {}</strong> tasks will be cancelled",
            party::policy::BULK_COUNTED
        )),
        "{}",
        x.body
    );
}

/// A scheduled task's page offers "Run now" (README: "retry (or run now)"); pressing it must
/// make the task due now, not answer 409 because only dead, cancelled or retrying tasks can be
/// retried.
async fn the_run_now_button_makes_a_scheduled_task_due_now(b: Backend) {
    let Some(s) = Server::start(b).await else {
        return;
    };
    let later = s.party.clock().now() + jiff::SignedDuration::from_hours(1);
    let id = s.party.add(NewTask::new("noop").at(later)).await.unwrap();
    let bearer = format!("Bearer {TOKEN}");
    let page = s
        .raw(
            "GET",
            &format!("/tasks/{id}"),
            &[("Authorization", &bearer)],
            None,
        )
        .await;
    assert!(page.body.contains(">Run now</button>"), "{}", page.body);
    let r = s
        .raw(
            "POST",
            &format!("/tasks/{id}/retry"),
            &[
                ("Authorization", &bearer),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            Some(""),
        )
        .await;
    assert_eq!(r.status, 303, "Run now answered {}", r.body);
    let t = s.party.get(id).await.unwrap();
    assert!(
        t.due_at <= s.party.clock().now(),
        "still due at {}",
        t.due_at
    );
}

/// A recurring occurrence whose attempt failed and that is waiting for its retry is not a
/// failed occurrence yet: the ledger must not flag it "failed" while the task is retrying it.
async fn the_ledger_does_not_call_a_retrying_occurrence_failed(b: Backend) {
    use party::jiff::{SignedDuration, Timestamp};
    let start: Timestamp = "2027-03-01T10:00:00Z".parse().unwrap();
    let clock = std::sync::Arc::new(party::ManualClock::new(start));
    let Some(s) = Server::start_clocked(b, clock.clone()).await else {
        return;
    };
    let id = s
        .party
        .add(
            NewTask::new("shell")
                .data(json!({"cmd": "exit 1"}))
                .every(SignedDuration::from_hours(1))
                .max_attempts(3),
        )
        .await
        .unwrap();
    s.party
        .worker(Default::default())
        .run_until_idle()
        .await
        .unwrap();
    let t = s.party.get(id).await.unwrap();
    assert_eq!(t.state, State::Retrying, "one failed attempt, two to go");
    assert_eq!(t.runs.len(), 1);
    let cookie = login(&s).await;
    let page = s
        .raw("GET", &format!("/tasks/{id}"), &[("Cookie", &cookie)], None)
        .await
        .body;
    let ledger = &page[page.find("id=\"ledger\"").expect("a ledger")..];
    let ledger = &ledger[..ledger.find("</table>").unwrap()];
    assert!(
        !ledger.contains(">failed<"),
        "the occurrence is still being retried, not failed: {ledger}"
    );
}

/// The add form's preview lists the task's next occurrences; they must be the ones the saved
/// task then has (`GET /api/v1/tasks/{id}/next`), its first run included.
async fn the_add_forms_preview_shows_the_runs_the_saved_task_has(b: Backend) {
    use party::jiff::Timestamp;
    let start: Timestamp = "2027-03-01T10:00:00Z".parse().unwrap();
    let clock = std::sync::Arc::new(party::ManualClock::new(start));
    let Some(s) = Server::start_clocked(b, clock.clone()).await else {
        return;
    };
    let cookie = login(&s).await;
    let token = csrf(
        &s.raw("GET", "/add", &[("Cookie", &cookie)], None)
            .await
            .body,
    );
    let headers = [
        ("Cookie", cookie.as_str()),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ];
    let fields = "handler=noop&every=1h";
    let preview = s
        .raw(
            "POST",
            "/add",
            &headers,
            Some(&format!("csrf={token}&intent=preview&{fields}")),
        )
        .await;
    assert_eq!(preview.status, 200, "{}", preview.body);
    let shown: Vec<String> = preview
        .body
        .split("<li>")
        .skip(1)
        .map(|li| li[..li.find("</li>").unwrap()].to_string())
        .collect();
    let ok = s
        .raw(
            "POST",
            "/add",
            &headers,
            Some(&format!("csrf={token}&{fields}")),
        )
        .await;
    assert_eq!(ok.status, 303, "{}", ok.body);
    let id: TaskId = ok.header("location").unwrap()["/tasks/".len()..]
        .parse()
        .unwrap();
    let next: Vec<String> = s
        .party
        .next_occurrences(id, 5)
        .await
        .unwrap()
        .into_iter()
        .map(party::format_time)
        .collect();
    assert_eq!(
        shown, next,
        "the preview against the saved task's next runs"
    );
}

/// A monthly rule on day 31 whose first run was given off its grid (the 15th): the calendar
/// must not say that January "has no day 31" for that first run.
async fn the_calendar_notes_no_short_month_for_an_off_schedule_first_run(b: Backend) {
    use party::jiff::Timestamp;
    let start: Timestamp = "2027-01-01T00:00:00Z".parse().unwrap();
    let clock = std::sync::Arc::new(party::ManualClock::new(start));
    let Some(s) = Server::start_clocked(b, clock.clone()).await else {
        return;
    };
    let first: Timestamp = "2027-01-15T09:00:00Z".parse().unwrap();
    let id = s
        .party
        .add(
            NewTask::new("log")
                .recurrence(party::recurrence::Recurrence::monthly_on(31, "09:00", None).unwrap())
                .at(first),
        )
        .await
        .unwrap();
    let cookie = login(&s).await;
    let page = s
        .raw("GET", &format!("/tasks/{id}"), &[("Cookie", &cookie)], None)
        .await
        .body;
    let cal = &page[page.find("id=\"calendar\"").expect("a calendar")..];
    let cal = &cal[..cal.find("</table>").unwrap()];
    let row = cal
        .split("<tr>")
        .find(|r| r.contains(&party::format_time(first)))
        .expect("the first run in the calendar");
    assert!(
        !row.contains("no day 31"),
        "January has 31 days; the first run is simply off the grid: {row}"
    );
}

/// A finished task's page offers only actions that apply: "Retry" and "Cancel" on a done task
/// are buttons that always end on a 409 error page.
async fn a_done_tasks_page_offers_no_action_that_cannot_apply(b: Backend) {
    let Some(s) = Server::start(b).await else {
        return;
    };
    let id = s.party.add(NewTask::new("noop")).await.unwrap();
    s.party
        .worker(Default::default())
        .run_until_idle()
        .await
        .unwrap();
    assert_eq!(s.party.get(id).await.unwrap().state, State::Done);
    let bearer = format!("Bearer {TOKEN}");
    let page = s
        .raw(
            "GET",
            &format!("/tasks/{id}"),
            &[("Authorization", &bearer)],
            None,
        )
        .await
        .body;
    let mut refused = Vec::new();
    for action in ["retry", "cancel"] {
        let path = format!("/tasks/{id}/{action}");
        if !page.contains(&format!("action=\"{path}\"")) {
            continue;
        }
        let r = s
            .raw(
                "POST",
                &path,
                &[
                    ("Authorization", &bearer),
                    ("Content-Type", "application/x-www-form-urlencoded"),
                ],
                Some(""),
            )
            .await;
        if r.status != 303 {
            refused.push(format!("{action}: {}", r.status));
        }
    }
    assert!(
        refused.is_empty(),
        "the page offers buttons that are refused: {refused:?}"
    );
}

/// The overview's "done" card links to `/tasks?state=done`; that list must not offer bulk
/// actions that only lead to an error page.
async fn the_task_list_offers_no_bulk_action_its_state_refuses(b: Backend) {
    let Some(s) = Server::start(b).await else {
        return;
    };
    s.party.add(NewTask::new("noop")).await.unwrap();
    s.party
        .worker(Default::default())
        .run_until_idle()
        .await
        .unwrap();
    let bearer = format!("Bearer {TOKEN}");
    let auth = [("Authorization", bearer.as_str())];
    let page = s.raw("GET", "/tasks?state=done", &auth, None).await.body;
    let mut broken = Vec::new();
    for link in ["/tasks/retry-matching?", "/tasks/cancel-matching?"] {
        let Some(at) = page.find(&format!("href=\"{link}")) else {
            continue;
        };
        let rest = &page[at + "href=\"".len()..];
        let href = rest[..rest.find('"').unwrap()].replace("&amp;", "&");
        let r = s.raw("GET", &href, &auth, None).await;
        if r.status != 200 {
            broken.push(format!("{href}: {}", r.status));
        }
    }
    assert!(broken.is_empty(), "links to error pages: {broken:?}");
}

/// Exactly `RECURRING_LISTED` live schedules in one state are all shown: the page must not
/// warn that some were left out.
async fn the_recurring_page_warns_of_a_cut_only_when_it_cut(b: Backend) {
    let Some(s) = Server::start(b).await else {
        return;
    };
    let n = party::policy::RECURRING_LISTED as usize;
    s.party
        .add_many(
            (0..n)
                .map(|i| {
                    NewTask::new("noop")
                        .data(json!({ "i": i }))
                        .every(party::jiff::SignedDuration::from_hours(1))
                })
                .collect(),
        )
        .await
        .unwrap();
    let bearer = format!("Bearer {TOKEN}");
    let page = s
        .raw("GET", "/recurring", &[("Authorization", &bearer)], None)
        .await
        .body;
    let table = &page[page.find("id=\"recurring\"").expect("a table")..];
    assert_eq!(
        table.matches("<tr>").count(),
        n + 1,
        "every schedule is shown"
    );
    assert!(
        !page.contains("Only the first"),
        "all {n} are shown, yet the page says some were left out"
    );
}

/// Schedules whose data is large are read a page of bytes at a time: the recurring page (and
/// the scrape that shares its read) holds no more than [`party::policy::PAGE_BYTES`] of them
/// and says that some were left out.
async fn the_recurring_page_reads_large_schedules_within_the_byte_budget(b: Backend) {
    let Some(s) = Server::start(b).await else {
        return;
    };
    let budget = party::policy::PAGE_BYTES as usize;
    let pad = "x".repeat(party::validate::MAX_DATA_BYTES - 100);
    let n = budget / pad.len() + 4;
    s.party
        .add_many(
            (0..n)
                .map(|i| {
                    NewTask::new("noop")
                        .data(json!({ "i": i, "pad": pad }))
                        .every(party::jiff::SignedDuration::from_hours(1))
                })
                .collect(),
        )
        .await
        .unwrap();
    let bearer = format!("Bearer {TOKEN}");
    let r = s
        .raw("GET", "/recurring", &[("Authorization", &bearer)], None)
        .await;
    assert_eq!(r.status, 200);
    let page = r.body;
    let table = &page[page.find("id=\"recurring\"").expect("a table")..];
    let shown = table.matches("<tr>").count() - 1;
    assert!(
        shown > 0 && shown < n,
        "{shown} of {n} schedules of 1 MiB shown: the page must stop at {budget} bytes"
    );
    assert!(
        page.contains("Only the first"),
        "{shown} of {n} shown, yet the page does not say some were left out"
    );
}

on_every_backend!(
    the_recurring_page_reads_large_schedules_within_the_byte_budget,
    a_done_tasks_page_offers_no_action_that_cannot_apply,
    the_task_list_offers_no_bulk_action_its_state_refuses,
    the_recurring_page_warns_of_a_cut_only_when_it_cut,
    the_ledger_does_not_call_a_retrying_occurrence_failed,
    the_add_forms_preview_shows_the_runs_the_saved_task_has,
    the_calendar_notes_no_short_month_for_an_off_schedule_first_run,
    the_run_now_button_makes_a_scheduled_task_due_now,
    a_data_filtered_bulk_count_is_a_bound_past_the_tasks_it_examines,
    a_bulk_count_stops_at_its_limit_and_the_action_touches_every_match,
    metrics_tell_each_handlers_schedules_last_success_and_missed_occurrences,
    metrics_of_a_long_schedule_count_misses_within_the_window_only,
    a_long_schedules_page_shows_its_latest_runs_and_their_ledger,
    the_recurring_page_lists_every_live_schedule,
    the_tasks_page_filters_on_a_data_field_and_counts_before_a_bulk_action,
    the_add_form_previews_a_rule_then_adds_with_the_apis_checks,
    a_recurring_tasks_page_shows_its_ledger_and_coming_occurrences,
    login_gives_a_strict_http_only_cookie_and_wrong_tokens_none,
    overview_counts_equal_stats,
    task_data_is_shown_as_text_everywhere,
    actions_need_the_sessions_csrf_token,
    metrics_are_prometheus_text_behind_the_token,
);
