//! The queues page over HTTP against a live server, on SQLite and PostgreSQL: it lists every
//! queue with its counts, pause state and limits as the library reads them, its forms pause,
//! resume and limit a queue, bad limits are refused with the library's message, and
//! `/metrics` shows each queue's tasks, due tasks and pause.

mod support;

use party::NewTask;
use support::{Backend, Server, TOKEN, on_every_backend};

const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

async fn the_queues_page_lists_pauses_and_limits_queues(b: Backend) {
    let Some(s) = Server::start(b).await else {
        return;
    };
    s.party
        .add(NewTask::new("noop").queue("mail<b>"))
        .await
        .unwrap();
    let bearer = format!("Bearer {TOKEN}");
    let auth = ("Authorization", bearer.as_str());
    let page = s.raw("GET", "/queues", &[auth], None).await;
    assert_eq!(page.status, 200);
    // The name is text, and every form carries the session's CSRF field.
    assert!(page.body.contains("mail&lt;b&gt;"), "{}", page.body);
    assert!(!page.body.contains("mail<b>"));
    assert!(page.body.contains(r#"action="/queues/mail%3Cb%3E/pause""#));
    assert_eq!(
        page.body.matches("<form").count(),
        page.body.matches(r#"name="csrf""#).count()
    );
    let r = s
        .raw("POST", "/queues/mail%3Cb%3E/pause", &[auth, FORM], Some(""))
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let r = s
        .raw(
            "POST",
            "/queues/mail%3Cb%3E/limits",
            &[auth, FORM],
            Some("concurrency=2&rate=10%2F1s&per=data.customer"),
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let q = &s.party.queues().await.unwrap()[0];
    assert!(q.paused);
    assert_eq!(q.limits.concurrency, Some(2));
    assert_eq!(q.limits.rate.unwrap().to_string(), "10/1s");
    assert_eq!(q.limits.per.as_deref(), Some("customer"));
    let metrics = s.raw("GET", "/metrics", &[auth], None).await.body;
    for line in [
        "party_queue_paused{queue=\"mail<b>\"} 1\n",
        "party_queue_tasks{queue=\"mail<b>\",state=\"scheduled\"} 1\n",
        "party_queue_due_tasks{queue=\"mail<b>\"} 1\n",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    let page = s.raw("GET", "/queues", &[auth], None).await;
    assert!(page.body.contains("paused"));
    assert!(
        page.body
            .contains("concurrency 2, rate 10/1s, per data.customer")
    );
    assert!(page.body.contains(r#"action="/queues/mail%3Cb%3E/resume""#));
    // A bad limit is refused, saying why, and changes nothing.
    let r = s
        .raw(
            "POST",
            "/queues/mail%3Cb%3E/limits",
            &[auth, FORM],
            Some("rate=lots"),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("is not a rate"), "{}", r.body);
    assert_eq!(
        s.party.queues().await.unwrap()[0].limits.concurrency,
        Some(2)
    );
    // Empty fields remove the limits; resume ends the control.
    let r = s
        .raw(
            "POST",
            "/queues/mail%3Cb%3E/limits",
            &[auth, FORM],
            Some("concurrency=&rate=&per="),
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let r = s
        .raw(
            "POST",
            "/queues/mail%3Cb%3E/resume",
            &[auth, FORM],
            Some(""),
        )
        .await;
    assert_eq!(r.status, 303);
    assert!(
        s.party
            .store()
            .queue_controls(&[])
            .await
            .unwrap()
            .is_empty()
    );
    // Without a token: the login page, and no change.
    let r = s
        .raw("POST", "/queues/mail%3Cb%3E/pause", &[FORM], Some(""))
        .await;
    assert!(r.status == 401 || r.status == 303, "{}", r.status);
    assert!(!s.party.queues().await.unwrap()[0].paused);
}

/// `.` and `..` are dot segments in a path: a browser (and any client following RFC 3986 or
/// the WHATWG URL rules, which also read `%2E%2E` as `..`) turns `/queues/../pause` into
/// `/pause`, so such a queue could never be paused from its page or the API. Such names are
/// refused where every queue name is checked, over the API too.
async fn a_queue_named_dot_or_dot_dot_is_refused(b: Backend) {
    let Some(s) = Server::start(b).await else {
        return;
    };
    for name in ["..", "."] {
        let err = s
            .party
            .add(NewTask::new("noop").queue(name))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, party::TaskError::Invalid(m) if m.contains("cannot be used")),
            "{name:?}: {err:?}"
        );
        let body = format!(r#"{{"handler":"noop","queue":"{name}"}}"#);
        let r = s.api("POST", "/api/v1/tasks", Some(&body)).await;
        assert_eq!(r.status, 400, "{name:?}: {}", r.body);
    }
    assert!(s.party.queues().await.unwrap().is_empty());
}

on_every_backend!(
    the_queues_page_lists_pauses_and_limits_queues,
    a_queue_named_dot_or_dot_dot_is_refused
);
