//! The JSON API over HTTP against a live server, on SQLite and PostgreSQL: authentication,
//! every route's answers beside the library's (the CLI's `--json` shapes), errors, keyset
//! pages, bulk adds, and the OpenAPI document checked against what the server does.

mod support;

use party::TaskId;
use serde_json::{Value, json};
use support::{Backend, READ_TOKEN, Server, TOKEN, on_every_backend};

async fn only_healthz_is_open_and_tokens_are_checked(b: Backend) {
    let Some(s) = Server::start(b).await else {
        return;
    };
    let health = s.raw("GET", "/healthz", &[], None).await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    for path in [
        "/api/v1/tasks",
        "/api/v1/stats",
        "/api/v1/openapi.json",
        "/metrics",
    ] {
        let r = s.raw("GET", path, &[], None).await;
        assert_eq!(r.status, 401, "{path}");
        assert!(
            r.json()["error"].as_str().unwrap().contains("Bearer"),
            "{path}"
        );
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        let wrong = s
            .raw(
                "GET",
                path,
                &[("Authorization", "Bearer test-token-0123456789abcdeX")],
                None,
            )
            .await;
        assert_eq!(wrong.status, 401, "{path}");
    }
    // The dashboard sends a stranger to the login page.
    let page = s.raw("GET", "/", &[], None).await;
    assert_eq!(page.status, 303);
    assert_eq!(page.header("location"), Some("/login"));
    // The read-only token reads and may not change anything.
    let read = format!("Bearer {READ_TOKEN}");
    let r = s
        .raw("GET", "/api/v1/tasks", &[("Authorization", &read)], None)
        .await;
    assert_eq!(r.status, 200);
    let r = s
        .raw(
            "POST",
            "/api/v1/tasks",
            &[("Authorization", &read)],
            Some(r#"{"handler":"noop"}"#),
        )
        .await;
    assert_eq!(r.status, 403);
    assert!(r.json()["error"].as_str().unwrap().contains("read-only"));
    assert!(
        s.party.list(&Default::default()).await.unwrap().is_empty(),
        "nothing written"
    );
}

async fn tasks_are_added_shown_and_steered_as_the_cli_does(b: Backend) {
    let Some(s) = Server::start(b).await else {
        return;
    };
    let r = s
        .api(
            "POST",
            "/api/v1/tasks",
            Some(r#"{"handler":"noop","data":{"customer":"acme"},"in":"1h","queue":"billing","priority":3,"max_attempts":2}"#),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let created = r.json();
    let id: TaskId = created["id"].as_str().unwrap().parse().unwrap();
    // The answer is the task as the library reads it back (the shape of `show --json`).
    let stored = s.party.get(id).await.unwrap();
    assert_eq!(created, serde_json::to_value(&stored).unwrap());
    assert_eq!(created["queue"], "billing");
    assert_eq!(created["priority"], 3);
    assert_eq!(created["max_attempts"], 2);
    assert_eq!(created["state"], "scheduled");
    let shown = s.api("GET", &format!("/api/v1/tasks/{id}"), None).await;
    assert_eq!(shown.status, 200);
    // The task with its latest runs, how many it has and where the older ones are.
    let recent = s
        .party
        .get_recent(id, party::policy::RECENT_RUNS)
        .await
        .unwrap();
    assert_eq!(recent.task, stored);
    assert_eq!(shown.json(), recent.to_json());
    assert_eq!(shown.json()["runs_total"], 0);
    assert_eq!(shown.json()["runs_next_cursor"], Value::Null);
    // The listing leaves out runs, as `list --json` does.
    let listed = s.api("GET", "/api/v1/tasks", None).await.json();
    assert_eq!(listed["tasks"], json!([stored.listing_json()]));
    assert_eq!(listed["next_cursor"], Value::Null);
    // Cancel, cancel again (a conflict), retry, unknown ids.
    let c = s
        .api("POST", &format!("/api/v1/tasks/{id}/cancel"), None)
        .await;
    assert_eq!(
        (c.status, c.json()["state"].clone()),
        (200, json!("cancelled"))
    );
    let again = s
        .api("POST", &format!("/api/v1/tasks/{id}/cancel"), None)
        .await;
    assert_eq!(again.status, 409);
    assert!(
        again.json()["error"]
            .as_str()
            .unwrap()
            .contains("cannot cancel")
    );
    let r = s
        .api("POST", &format!("/api/v1/tasks/{id}/retry"), None)
        .await;
    assert_eq!(
        (r.status, r.json()["state"].clone()),
        (200, json!("scheduled"))
    );
    let unknown = TaskId::generate(party::jiff::Timestamp::now());
    for (m, p) in [
        ("GET", format!("/api/v1/tasks/{unknown}")),
        ("POST", format!("/api/v1/tasks/{unknown}/cancel")),
        ("POST", format!("/api/v1/tasks/{unknown}/retry")),
        ("GET", format!("/api/v1/tasks/{unknown}/gaps")),
    ] {
        let r = s.api(m, &p, None).await;
        assert_eq!(r.status, 404, "{m} {p}");
        assert!(
            r.json()["error"]
                .as_str()
                .unwrap()
                .contains("no task with id")
        );
    }
    let bad = s.api("GET", "/api/v1/tasks/not-an-id", None).await;
    assert_eq!(bad.status, 400);
    // Stats are `party stats --json`.
    let stats = s.api("GET", "/api/v1/stats", None).await;
    assert_eq!(stats.status, 200);
    let mine = s.party.stats().await.unwrap().to_json();
    assert_eq!(stats.json()["by_state"], mine["by_state"]);
    assert_eq!(stats.json()["by_handler"], mine["by_handler"]);
}

async fn recurring_tasks_refuse_duplicates_and_show_their_future(b: Backend) {
    let Some(s) = Server::start(b).await else {
        return;
    };
    let body =
        r#"{"handler":"noop","data":{"report":"daily"},"cron":"0 9 * * *","tz":"Europe/Berlin"}"#;
    let first = s.api("POST", "/api/v1/tasks", Some(body)).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let id = first.json()["id"].as_str().unwrap().to_string();
    let dup = s.api("POST", "/api/v1/tasks", Some(body)).await;
    assert_eq!(dup.status, 409);
    assert_eq!(dup.json()["existing_id"], json!(id));
    assert!(dup.json()["error"].as_str().unwrap().contains(&id));
    let next = s
        .api("GET", &format!("/api/v1/tasks/{id}/next?count=3"), None)
        .await;
    assert_eq!(next.status, 200);
    let times = next.json();
    assert_eq!(times.as_array().unwrap().len(), 3);
    let expected: Vec<String> = s
        .party
        .next_occurrences(id.parse().unwrap(), 3)
        .await
        .unwrap()
        .into_iter()
        .map(party::format_time)
        .collect();
    assert_eq!(times, json!(expected));
    for bad in ["count=0", "count=1001", "count=x", "colour=red"] {
        let r = s
            .api("GET", &format!("/api/v1/tasks/{id}/next?{bad}"), None)
            .await;
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
    }
    let gaps = s
        .api("GET", &format!("/api/v1/tasks/{id}/gaps"), None)
        .await;
    assert_eq!(gaps.status, 200);
    assert_eq!(gaps.json()["expected"], 0);
}

async fn bad_input_is_refused_with_a_message_and_nothing_written(b: Backend) {
    let Some(s) = Server::start_with(b, |c| party_serve::ServeConfig {
        body_limit: 4096,
        ..c
    })
    .await
    else {
        return;
    };
    for (body, says) in [
        (
            r#"{"handler":"noop","colour":"red"}"#,
            "unknown field `colour`",
        ),
        (r#"{"handler":"nope"}"#, "unknown handler"),
        (r#"{"handler":"noop","data":[1]}"#, "must be a JSON object"),
        (r#"{"handler":"noop","at":"2001-01-01T00:00:00Z"}"#, "past"),
        (
            r#"{"handler":"noop","at":"2099-01-31T09:00Z"}"#,
            "e.g. 2027-01-31T09:00:00Z",
        ),
        (
            r#"{"handler":"noop","at":"20990131T090000+0100"}"#,
            "e.g. 2027-01-31T09:00:00Z",
        ),
        (r#"{"handler":"noop","every":"0s"}"#, "zero"),
        (r#"{"handler":"noop","max_attempts":0}"#, "attempts"),
        ("not json", "a task is one JSON object"),
    ] {
        let r = s.api("POST", "/api/v1/tasks", Some(body)).await;
        assert_eq!(r.status, 400, "{body}");
        let e = r.json()["error"].as_str().unwrap().to_string();
        assert!(e.contains(says), "{body}: {e}");
    }
    let big = format!(
        r#"{{"handler":"noop","data":{{"x":"{}"}}}}"#,
        "a".repeat(5000)
    );
    let r = s.api("POST", "/api/v1/tasks", Some(&big)).await;
    assert_eq!(r.status, 413);
    assert!(r.json()["error"].as_str().unwrap().contains("too large"));
    // Filter values are judged as the command line judges them: nothing is trimmed.
    for q in [
        "state=sleeping",
        "limit=1001",
        "state=%20dead%20",
        "handler=%20noop",
        "queue=mail%20",
        "limit=0",
        "cursor=nope",
        "colour=red",
    ] {
        let r = s.api("GET", &format!("/api/v1/tasks?{q}"), None).await;
        assert_eq!(r.status, 400, "{q}");
        assert!(r.json()["error"].is_string());
    }
    // A page holds at most 1,000 tasks; more come after its cursor.
    let r = s.api("GET", "/api/v1/tasks?limit=1000", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // A bulk add with one bad task adds none, and names the bad one.
    let r = s
        .api(
            "POST",
            "/api/v1/tasks/bulk",
            Some(r#"[{"handler":"noop"},{"handler":"noop","queue":""}]"#),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"].as_str().unwrap().starts_with("task 2:"),
        "{}",
        r.body
    );
    // A task of a bulk add is read as `POST /tasks` reads one: a field given twice is
    // refused, not settled by its last value.
    let r = s
        .api(
            "POST",
            "/api/v1/tasks/bulk",
            Some(r#"[{"handler":"noop"},{"handler":"noop","handler":"log"}]"#),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let error = r.json()["error"].as_str().unwrap().to_string();
    assert!(
        error.starts_with("task 2:") && error.contains("duplicate field `handler`"),
        "{error}"
    );
    let r = s.api("POST", "/api/v1/tasks/bulk", Some("[]")).await;
    assert_eq!(r.status, 400);
    assert!(s.party.list(&Default::default()).await.unwrap().is_empty());
    let missing = s.api("GET", "/api/v1/nothing-here", None).await;
    assert_eq!(missing.status, 404);
    assert!(missing.json()["error"].is_string());
    // A method a route does not take, and a path segment that is not text, answer with the
    // API's JSON error like everything else.
    let id = "0123456789abcdef01234567";
    for (method, path, status) in [
        ("DELETE", "/api/v1/tasks".to_string(), 405),
        ("GET", format!("/api/v1/tasks/{id}/cancel"), 405),
        ("PATCH", "/api/v1/queues/mail/limits".to_string(), 405),
        ("GET", "/api/v1/tasks/%FF".to_string(), 400),
        ("POST", "/api/v1/queues/%FF/pause".to_string(), 400),
    ] {
        let r = s.api(method, &path, None).await;
        assert_eq!(r.status, status, "{method} {path}: {}", r.body);
        let body: Value = serde_json::from_str(&r.body)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {}", r.body));
        assert!(body["error"].is_string(), "{method} {path}: {}", r.body);
    }
}

async fn pages_follow_the_cursor_through_every_task_once(b: Backend) {
    let Some(s) = Server::start(b).await else {
        return;
    };
    let tasks: Vec<Value> = (0..7)
        .map(|i| json!({"handler": "noop", "data": {"n": i}, "queue": if i % 3 == 0 { "mail" } else { "default" }}))
        .collect();
    let r = s
        .api(
            "POST",
            "/api/v1/tasks/bulk",
            Some(&Value::from(tasks).to_string()),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let ids: Vec<String> = serde_json::from_value(r.json()["ids"].clone()).unwrap();
    assert_eq!(ids.len(), 7);
    let mut seen = Vec::new();
    let mut path = "/api/v1/tasks?limit=3".to_string();
    loop {
        let page = s.api("GET", &path, None).await.json();
        for t in page["tasks"].as_array().unwrap() {
            seen.push(t["id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/api/v1/tasks?limit=3&cursor={c}"),
            None => break,
        }
    }
    let all: Vec<String> = s
        .party
        .list(&Default::default())
        .await
        .unwrap()
        .iter()
        .map(|t| t.id.to_string())
        .collect();
    assert_eq!(seen, all);
    let mut sorted = seen.clone();
    sorted.sort();
    let mut given = ids.clone();
    given.sort();
    assert_eq!(sorted, given, "every added task, once");
    let mail = s
        .api(
            "GET",
            "/api/v1/tasks?queue=mail&state=scheduled&handler=noop",
            None,
        )
        .await
        .json();
    assert_eq!(mail["tasks"].as_array().unwrap().len(), 3);
}

/// Pages of large tasks hold as many as fit in the page's bytes, fewer than their limit, and
/// their cursors lead through every task once.
async fn pages_of_large_tasks_stop_at_the_byte_budget_and_page_on(b: Backend) {
    let Some(s) = Server::start(b).await else {
        return;
    };
    let budget = party::policy::PAGE_BYTES as usize;
    let big = "x".repeat(party::validate::MAX_DATA_BYTES - 100);
    let count = budget / big.len() + 8;
    let when = |i: usize| party::jiff::Timestamp::from_second(1_900_000_000 + i as i64).unwrap();
    let tasks: Vec<party::NewTask> = (0..count)
        .map(|i| {
            party::NewTask::new("noop")
                .at(when(i))
                .data(json!({ "n": i, "pad": big }))
        })
        .collect();
    let ids: Vec<String> = s
        .party
        .add_many(tasks)
        .await
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    let mut seen = Vec::new();
    let mut pages = 0;
    let mut path = "/api/v1/tasks?limit=1000".to_string();
    loop {
        let r = s.api("GET", &path, None).await;
        assert_eq!(r.status, 200);
        assert!(
            r.body.len() <= budget,
            "a page of {} bytes, past the budget of {budget}",
            r.body.len()
        );
        let page = r.json();
        let tasks = page["tasks"].as_array().unwrap();
        assert!(!tasks.is_empty(), "a page holds one task at least");
        pages += 1;
        seen.extend(tasks.iter().map(|t| t["id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/api/v1/tasks?limit=1000&cursor={c}"),
            None => break,
        }
    }
    assert!(pages > 1, "{count} tasks of 1 MiB fit on one page");
    assert_eq!(seen, ids, "every task once, in order");
}

async fn redacted_fields_never_leave_the_server(b: Backend) {
    let Some(s) = Server::start_with(b, |c| party_serve::ServeConfig {
        redact: vec!["data.card".into(), "data.pay.token".into()],
        ..c
    })
    .await
    else {
        return;
    };
    let r = s
        .api("POST", "/api/v1/tasks", Some(r#"{"handler":"noop","data":{"card":"4242424242424242","pay":{"token":"tok_secret","amount":3}}}"#))
        .await;
    assert_eq!(r.status, 201);
    let id = r.json()["id"].as_str().unwrap().to_string();
    for path in [
        format!("/api/v1/tasks/{id}"),
        "/api/v1/tasks".to_string(),
        format!("/tasks/{id}"),
        "/tasks".to_string(),
    ] {
        let body = s.api("GET", &path, None).await.body;
        assert!(
            !body.contains("4242424242424242") && !body.contains("tok_secret"),
            "{path}: {body}"
        );
        assert!(body.contains("[redacted]"), "{path}");
    }
    // The store keeps the data for the handler.
    let stored = s.party.get(id.parse().unwrap()).await.unwrap();
    assert_eq!(stored.data["card"], "4242424242424242");
    // A handler's own fields (Task::REDACT), on its tasks only, besides --redact's.
    let r = s
        .api("POST", "/api/v1/tasks", Some(r#"{"handler":"pay","data":{"card":"5555444433332222","bank":{"iban":"DE89370400440532013000","name":"Bank"},"pay":{"token":"tok_pay"},"amount":12}}"#))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let pay = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(
        r.json()["data"]["bank"],
        json!({"iban": "[redacted]", "name": "Bank"})
    );
    assert_eq!(r.json()["data"]["amount"], 12);
    let unrelated = s
        .api(
            "POST",
            "/api/v1/tasks",
            Some(r#"{"handler":"noop","data":{"bank":{"iban":"visible-iban"}}}"#),
        )
        .await;
    assert_eq!(
        unrelated.json()["data"]["bank"]["iban"],
        "visible-iban",
        "another handler's field"
    );
    for path in [
        format!("/api/v1/tasks/{pay}"),
        "/api/v1/tasks?handler=pay".to_string(),
        format!("/tasks/{pay}"),
        "/tasks?handler=pay".to_string(),
        format!("/api/v1/tasks/{pay}/cancel"),
    ] {
        let method = if path.ends_with("/cancel") {
            "POST"
        } else {
            "GET"
        };
        let body = s.api(method, &path, None).await.body;
        for secret in ["5555444433332222", "DE89370400440532013000", "tok_pay"] {
            assert!(!body.contains(secret), "{path}: {body}");
        }
        assert!(body.contains("Bank"), "{path}: the other fields stay");
    }
    let stored = s.party.get(pay.parse().unwrap()).await.unwrap();
    assert_eq!(stored.data["bank"]["iban"], "DE89370400440532013000");
    // A filter on a hidden field would tell its value one guess at a time: refused, on the
    // API, the dashboard and its bulk actions, for --redact's fields and a handler's own.
    for path in [
        "/api/v1/tasks?data.card=4242424242424242",
        "/api/v1/tasks?data.pay=x",
        "/api/v1/tasks?data.bank=x",
        "/tasks?data=card%3D4242424242424242",
        "/tasks/cancel-matching?data=card%3D4242424242424242",
    ] {
        let r = s.api("GET", path, None).await;
        assert_eq!(r.status, 400, "{path}: {}", r.body);
        assert!(r.body.contains("is redacted"), "{path}: {}", r.body);
        assert!(!r.body.contains("\"id\""), "{path}: no task listed");
    }
    let r = s.api("GET", "/api/v1/tasks?data.amount=12", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["tasks"].as_array().unwrap().len(), 1);
}

async fn queues_are_paused_limited_and_listed_as_the_cli_does(b: Backend) {
    let Some(s) = Server::start(b).await else {
        return;
    };
    s.party
        .add(party::NewTask::new("noop").queue("mail"))
        .await
        .unwrap();
    let paused = s.api("POST", "/api/v1/queues/mail/pause", None).await;
    assert_eq!(paused.status, 200, "{}", paused.body);
    assert_eq!(paused.json()["paused"], true);
    assert_eq!(paused.json()["counts"]["scheduled"], 1);
    let limited = s
        .api(
            "PUT",
            "/api/v1/queues/mail/limits",
            Some(r#"{"concurrency":1,"rate":"10/1s","per":"data.customer"}"#),
        )
        .await;
    assert_eq!(limited.status, 200, "{}", limited.body);
    assert_eq!(
        limited.json()["limits"],
        json!({"concurrency": 1, "rate": "10/1s", "per": "data.customer"})
    );
    // The library sees what the API set; the listing is the library's.
    let queues = s.party.queues().await.unwrap();
    assert_eq!(queues.len(), 1);
    assert!(queues[0].paused);
    assert_eq!(queues[0].limits.per.as_deref(), Some("customer"));
    let listed = s.api("GET", "/api/v1/queues", None).await;
    assert_eq!(listed.json(), json!({ "queues": queues }));
    // Bad limits are refused with the CLI's messages, and nothing changes.
    for (body, says) in [
        (r#"{"concurrency":0}"#, "at least 1"),
        (r#"{"rate":"10"}"#, "is not a rate"),
        (r#"{"per":"customer","concurrency":1}"#, "data.FIELD"),
        (r#"{"per":"data.customer"}"#, "\"concurrency\": N or"),
        (r#"{"burst":3}"#, "unknown field"),
    ] {
        let r = s.api("PUT", "/api/v1/queues/mail/limits", Some(body)).await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(
            r.json()["error"].as_str().unwrap().contains(says),
            "{body}: {}",
            r.body
        );
    }
    let bad_name = s.api("POST", "/api/v1/queues/%20/pause", None).await;
    assert_eq!(bad_name.status, 400, "{}", bad_name.body);
    assert_eq!(s.party.queues().await.unwrap(), queues);
    // Resume and clear: the queue is back to no control.
    let resumed = s.api("POST", "/api/v1/queues/mail/resume", None).await;
    assert_eq!(resumed.json()["paused"], false);
    let cleared = s.api("PUT", "/api/v1/queues/mail/limits", Some("{}")).await;
    assert_eq!(cleared.json()["limits"], json!({}));
    assert!(
        s.party
            .store()
            .queue_controls(&[])
            .await
            .unwrap()
            .is_empty()
    );
    // A read-only token may list but not change.
    let read = format!("Bearer {}", support::READ_TOKEN);
    let r = s
        .raw(
            "POST",
            "/api/v1/queues/mail/pause",
            &[("Authorization", &read)],
            None,
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
}

async fn every_route_matches_the_openapi_document(b: Backend) {
    let Some(s) = Server::start(b).await else {
        return;
    };
    let doc = s.api("GET", "/api/v1/openapi.json", None).await.json();
    assert_eq!(doc, party_serve::openapi_document());
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    // A recurring task to call every operation on.
    let r = s
        .api(
            "POST",
            "/api/v1/tasks",
            Some(r#"{"handler":"noop","every":"1h"}"#),
        )
        .await;
    let id = r.json()["id"].as_str().unwrap().to_string();
    let bodies = |path: &str| match path {
        "/tasks" => Some(r#"{"handler":"noop","data":{"k":1}}"#),
        "/tasks/bulk" => Some(r#"[{"handler":"noop"}]"#),
        "/queues/{name}/limits" => Some(r#"{"concurrency":2}"#),
        _ => None,
    };
    let paths = doc["paths"].as_object().unwrap();
    let mut operations = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let url = format!(
                "/api/v1{}",
                path.replace("{id}", &id).replace("{name}", "mail")
            );
            let method = method.to_uppercase();
            for (who, auth) in [("token", Some(support::TOKEN)), ("nobody", None)] {
                let header = auth.map(|t| format!("Bearer {t}"));
                let headers: Vec<(&str, &str)> = header
                    .iter()
                    .map(|h| ("Authorization", h.as_str()))
                    .collect();
                let r = s.raw(&method, &url, &headers, bodies(path)).await;
                let documented = op["responses"].as_object().unwrap();
                assert!(
                    documented.contains_key(&r.status.to_string()),
                    "{method} {path} as {who} answered {} which the document does not list: {}",
                    r.status,
                    r.body
                );
                if who == "token" {
                    assert!(r.status < 300, "{method} {path}: {}", r.body);
                }
            }
            operations += 1;
        }
    }
    assert_eq!(operations, 15);
    // No route answers that the document leaves out.
    for (method, path) in [
        ("DELETE", format!("/api/v1/tasks/{id}")),
        ("PUT", "/api/v1/tasks".to_string()),
        ("GET", "/api/v1/tasks/bulk/x".to_string()),
        ("GET", "/api/v1/workers".to_string()),
    ] {
        let r = s.api(method, &path, None).await;
        assert!(
            r.status == 404 || r.status == 405,
            "{method} {path}: {}",
            r.status
        );
    }
}

/// A task with thousands of runs: `GET /tasks/{id}` holds its latest `RECENT_RUNS` (oldest
/// first), how many it has and a cursor; `GET /tasks/{id}/runs` pages back from there, newest
/// first, and reaches the oldest run with every run read exactly once. A bad cursor or limit
/// is a 400 that says what to pass.
async fn a_long_history_is_read_a_page_of_runs_at_a_time(b: Backend) {
    use party::jiff::{SignedDuration, Timestamp};
    use party::policy::RECENT_RUNS;
    let Some(s) = Server::start(b).await else {
        return;
    };
    let start: Timestamp = "2027-01-01T00:00:00Z".parse().unwrap();
    let every = SignedDuration::from_mins(1);
    let n: i64 = 2_500;
    let id = s
        .party
        .add(
            party::NewTask::new("noop")
                .recurrence(party::recurrence::Recurrence::every(every).unwrap())
                .at(start + every * (n as i32)),
        )
        .await
        .unwrap();
    support::write_runs(
        &s,
        id,
        start,
        every,
        (0..n).map(|k| (k, party::Outcome::Succeeded)),
    )
    .await;
    let at = |k: i64| start + every * (k as i32);
    let times = |runs: &Value| -> Vec<Timestamp> {
        runs.as_array()
            .unwrap()
            .iter()
            .map(|r| r["timestamp"].as_str().unwrap().parse().unwrap())
            .collect()
    };

    let r = s.api("GET", &format!("/api/v1/tasks/{id}"), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let task = r.json();
    let latest: Vec<Timestamp> = (n - i64::from(RECENT_RUNS)..n).map(at).collect();
    assert_eq!(
        times(&task["runs"]),
        latest,
        "the latest runs, oldest first"
    );
    assert_eq!(task["runs_total"], json!(n));
    assert_eq!(task["runs_total_exact"], json!(true));
    let mut cursor = task["runs_next_cursor"].as_str().unwrap().to_string();

    // Page back from there, newest first, to the oldest run.
    let mut seen: Vec<Timestamp> = latest.iter().rev().copied().collect();
    let mut pages = 0;
    loop {
        let r = s
            .api(
                "GET",
                &format!("/api/v1/tasks/{id}/runs?cursor={cursor}&limit=1000"),
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let page = r.json();
        pages += 1;
        assert_eq!(page["runs_total"], json!(n));
        seen.extend(times(&page["runs"]));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let every_run: Vec<Timestamp> = (0..n).rev().map(at).collect();
    assert_eq!(seen, every_run, "every run once, newest first");
    // Without a cursor: the latest, newest first, `RECENT_RUNS` unless told otherwise.
    let r = s
        .api("GET", &format!("/api/v1/tasks/{id}/runs"), None)
        .await;
    assert_eq!(times(&r.json()["runs"]), every_run[..RECENT_RUNS as usize]);
    let r = s
        .api("GET", &format!("/api/v1/tasks/{id}/runs?limit=3"), None)
        .await;
    assert_eq!(times(&r.json()["runs"]), every_run[..3]);

    for (query, says) in [
        ("limit=0", "at least 1"),
        ("limit=1001", "the maximum is 1000"),
        ("cursor=abc", "is not a runs cursor"),
        ("cursor=-5", "is not a runs cursor"),
        ("page=2", "page"),
    ] {
        let r = s
            .api("GET", &format!("/api/v1/tasks/{id}/runs?{query}"), None)
            .await;
        assert_eq!(r.status, 400, "{query}: {}", r.body);
        assert!(r.body.contains(says), "{query}: {}", r.body);
    }
    let unknown = TaskId::generate(start);
    let r = s
        .api("GET", &format!("/api/v1/tasks/{unknown}/runs"), None)
        .await;
    assert_eq!(r.status, 404, "{}", r.body);
}

/// `data.FIELD=VALUE` (or `data=FIELD=VALUE`) narrows the listing and pages keep it; a bad
/// field, a second data filter or an unknown parameter is a 400 that says what to write.
async fn tasks_are_filtered_on_a_data_field(b: Backend) {
    let Some(s) = Server::start(b).await else {
        return;
    };
    let tasks: Vec<Value> = (0..5)
        .map(|i| json!({"handler": "noop", "in": "1h", "data": {"customer": if i % 2 == 0 { "acme" } else { "globex" }, "n": i}}))
        .collect();
    let r = s
        .api(
            "POST",
            "/api/v1/tasks/bulk",
            Some(&Value::from(tasks).to_string()),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let customers = |v: &Value| -> Vec<(String, i64)> {
        v["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["data"]["customer"].as_str().unwrap().to_string(),
                    t["data"]["n"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    let acme = s.api("GET", "/api/v1/tasks?data.customer=acme", None).await;
    assert_eq!(acme.status, 200, "{}", acme.body);
    let mut got = customers(&acme.json());
    got.sort_by_key(|c| c.1);
    assert_eq!(
        got,
        [("acme".into(), 0), ("acme".into(), 2), ("acme".into(), 4)]
    );
    // The dashboard form's spelling, and a number.
    let n = s.api("GET", "/api/v1/tasks?data=n%3D3", None).await.json();
    assert_eq!(customers(&n), [("globex".into(), 3)]);
    // Pages keep the filter.
    let first = s
        .api("GET", "/api/v1/tasks?data.customer=acme&limit=2", None)
        .await
        .json();
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = s
        .api(
            "GET",
            &format!("/api/v1/tasks?data.customer=acme&limit=2&cursor={cursor}"),
            None,
        )
        .await
        .json();
    assert_eq!(customers(&first).len() + customers(&second).len(), 3);
    assert!(customers(&second).iter().all(|c| c.0 == "acme"));
    for (query, says) in [
        ("data.a.b=c", "one top-level field"),
        ("data.customer=acme&data.n=1", "given twice"),
        ("colour=red", "unknown query parameter 'colour'"),
        ("data=customer", "write FIELD=VALUE"),
    ] {
        let r = s.api("GET", &format!("/api/v1/tasks?{query}"), None).await;
        assert_eq!(r.status, 400, "{query}: {}", r.body);
        let message = r.json()["error"].as_str().unwrap().to_string();
        assert!(message.contains(says), "{query}: {message}");
    }
}

/// A data filter over more tasks than a page examines: the API's pages and the dashboard's
/// stop at the bound, say so, and paging on finds every match once.
async fn data_filter_pages_stop_at_the_scan_bound_and_page_on(b: Backend) {
    let Some(s) = Server::start(b).await else {
        return;
    };
    let scan = party::policy::DATA_FILTER_SCAN as usize;
    let when = |i: usize| party::jiff::Timestamp::from_second(1_900_000_000 + i as i64).unwrap();
    let tasks: Vec<party::NewTask> = (0..scan + 2)
        .map(|i| {
            let who = if i == 1 || i == scan + 1 {
                "acme"
            } else {
                "other"
            };
            party::NewTask::new("noop")
                .at(when(i))
                .data(serde_json::json!({ "customer": who }))
        })
        .collect();
    let ids = s.party.add_many(tasks).await.unwrap();
    let first = s
        .api("GET", "/api/v1/tasks?data.customer=acme&limit=10", None)
        .await
        .json();
    let got: Vec<&str> = first["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, vec![ids[1].to_string()]);
    let cursor = first["next_cursor"].as_str().expect("the search goes on");
    let second = s
        .api(
            "GET",
            &format!("/api/v1/tasks?data.customer=acme&limit=10&cursor={cursor}"),
            None,
        )
        .await
        .json();
    let got: Vec<&str> = second["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, vec![ids[scan + 1].to_string()]);
    assert_eq!(second["next_cursor"], Value::Null);
    // The dashboard says where its search stopped and links to the rest.
    let bearer = format!("Bearer {TOKEN}");
    let page = s
        .raw(
            "GET",
            "/tasks?data=customer%3Dacme&limit=10",
            &[("Authorization", bearer.as_str())],
            None,
        )
        .await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains(r#"id="examined""#), "{}", page.body);
    assert!(page.body.contains(&format!("examines {scan} tasks")));
    assert!(page.body.contains(&ids[1].to_string()));
    assert!(page.body.contains(&format!("cursor={cursor}")));
    assert!(page.body.contains(r#"id="next-page""#));
}

/// RFC 7235 (and RFC 6750 for Bearer): the authentication scheme is case-insensitive, so
/// `authorization: bearer TOKEN` (as some clients and proxies send it) is the same token.
async fn the_bearer_scheme_is_case_insensitive(b: Backend) {
    let Some(s) = Server::start(b).await else {
        return;
    };
    for scheme in ["bearer", "BEARER"] {
        let auth = format!("{scheme} {TOKEN}");
        let r = s
            .raw("GET", "/api/v1/stats", &[("Authorization", &auth)], None)
            .await;
        assert_eq!(r.status, 200, "{scheme}: {}", r.body);
    }
}

/// A task id is 24 hexadecimal characters (the OpenAPI pattern `^[0-9a-f]{24}$`); `+` is no
/// hex digit, so `+0+0…` is a bad id (400), not the id 000…0 looked up (404).
async fn an_id_with_sign_characters_is_not_an_id(b: Backend) {
    let Some(s) = Server::start(b).await else {
        return;
    };
    let r = s
        .api("POST", "/api/v1/tasks", Some(r#"{"handler":"noop"}"#))
        .await;
    let id = r.json()["id"].as_str().unwrap().to_string();
    let plus = "+0".repeat(12);
    for path in [
        format!("/api/v1/tasks/{plus}"),
        format!("/api/v1/tasks?cursor=0_{plus}"),
    ] {
        let r = s.api("GET", &path, None).await;
        assert_eq!(r.status, 400, "{path}: {}", r.body);
    }
    // The same task under two spellings: a `+` in place of a leading 0 digit.
    let mut spelled = id.clone().into_bytes();
    spelled[0] = b'0';
    let zero = String::from_utf8(spelled.clone()).unwrap();
    spelled[0] = b'+';
    let plus = String::from_utf8(spelled).unwrap();
    let r = s.api("GET", &format!("/api/v1/tasks/{plus}"), None).await;
    assert_eq!(
        r.status, 400,
        "{plus} was read as the id {zero}: {}",
        r.body
    );
}

/// Every API error is `{"error": ...}` (README, OpenAPI): an address under `/api/v1/` that
/// names no route too, trailing slash included.
async fn every_unknown_api_address_answers_a_json_error(b: Backend) {
    let Some(s) = Server::start(b).await else {
        return;
    };
    for path in ["/api/v1/", "/api/v1/tasks/", "/api/v1/nothing"] {
        let r = s.api("GET", path, None).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(
            r.header("content-type"),
            Some("application/json"),
            "{path}: {:?}",
            r.body
        );
        assert!(r.json()["error"].is_string(), "{path}");
    }
}

/// README: "unknown fields and query parameters are refused (400)". Every route, not only the
/// task list and `next`: a misspelt parameter on an action must not act as if it were absent.
async fn unknown_query_parameters_are_refused_on_every_route(b: Backend) {
    let Some(s) = Server::start(b).await else {
        return;
    };
    let id = s
        .party
        .add(
            party::NewTask::new("noop")
                .at(party::jiff::Timestamp::from_second(1_900_000_000).unwrap()),
        )
        .await
        .unwrap();
    for (method, path) in [
        ("GET", "/api/v1/stats?colour=red".to_string()),
        ("GET", format!("/api/v1/tasks/{id}?colour=red")),
        ("GET", "/api/v1/queues?colour=red".to_string()),
        ("POST", "/api/v1/queues/mail/pause?colour=red".to_string()),
        ("POST", format!("/api/v1/tasks/{id}/cancel?colour=red")),
    ] {
        let r = s.api(method, &path, None).await;
        assert_eq!(r.status, 400, "{method} {path}: {}", r.body);
    }
    let task = s.party.get(id).await.unwrap();
    assert_eq!(
        task.state,
        party::State::Scheduled,
        "the refused cancel changed nothing"
    );
}

on_every_backend!(
    unknown_query_parameters_are_refused_on_every_route,
    the_bearer_scheme_is_case_insensitive,
    an_id_with_sign_characters_is_not_an_id,
    every_unknown_api_address_answers_a_json_error,
    data_filter_pages_stop_at_the_scan_bound_and_page_on,
    tasks_are_filtered_on_a_data_field,
    only_healthz_is_open_and_tokens_are_checked,
    tasks_are_added_shown_and_steered_as_the_cli_does,
    recurring_tasks_refuse_duplicates_and_show_their_future,
    bad_input_is_refused_with_a_message_and_nothing_written,
    pages_follow_the_cursor_through_every_task_once,
    pages_of_large_tasks_stop_at_the_byte_budget_and_page_on,
    redacted_fields_never_leave_the_server,
    every_route_matches_the_openapi_document,
    a_long_history_is_read_a_page_of_runs_at_a_time,
    queues_are_paused_limited_and_listed_as_the_cli_does,
);
