//! The service on the real PostgreSQL (`PARTY_TEST_DATABASE_URL`), in fresh schemas: a signup
//! is welcomed by the worker in the same process; a refused signup leaves no task behind.

use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use party::serde_json::{Value, json};
use party::store::postgres::tokio_postgres::{self, NoTls};
use party::{ListFilter, WorkerConfig};
use party_example_axum_service::{Config, start};
use tower::ServiceExt;

fn database_url() -> Option<String> {
    match std::env::var("PARTY_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI=true needs PARTY_TEST_DATABASE_URL for the axum service's tests")
        }
        _ => {
            eprintln!("skipped: set PARTY_TEST_DATABASE_URL to run the axum service's tests");
            None
        }
    }
}

async fn call(router: &Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, party::serde_json::from_slice(&body).unwrap())
}

fn post_signup(email: &str) -> Request<Body> {
    Request::post("/signups")
        .header("content-type", "application/json")
        .body(Body::from(json!({ "email": email }).to_string()))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signup_is_welcomed_and_a_refused_one_leaves_no_task() {
    let Some(url) = database_url() else { return };
    let suffix = format!(
        "{:016x}",
        RandomState::new().hash_one(std::time::SystemTime::now())
    );
    let config = Config {
        database_url: url.clone(),
        app_schema: format!("axum_example_{suffix}"),
        party_schema: format!("axum_example_party_{suffix}"),
    };
    let (router, party) = start(&config).await.unwrap();
    let worker = party.worker(WorkerConfig::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(async move {
        worker
            .run(async {
                let _ = stopped.await;
            })
            .await
    });

    // Accepted: the signup and its task, committed together; the worker welcomes it.
    let (status, body) = call(&router, post_signup("ada@example.com")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_i64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = call(
            &router,
            Request::get(format!("/signups/{id}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body["welcomed"] == json!(true) {
            break;
        }
        assert!(Instant::now() < deadline, "never welcomed: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Refused after the task was added: the rollback takes the task away too.
    let (status, body) = call(&router, post_signup("ada@example.com")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    // Refused by the handler's check: nothing written.
    let (status, body) = call(&router, post_signup("not-an-address")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"].as_str().unwrap().contains("email"), "{body}");

    let tasks = party
        .list(&ListFilter {
            handler: Some("send_welcome".to_string()),
            ..ListFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        tasks.len(),
        1,
        "one task, for the one signup that committed"
    );
    let (status, _) = call(
        &router,
        Request::get("/signups/999999").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    stop.send(()).unwrap();
    worker.await.unwrap().unwrap();
    drop(party);
    let (client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "DROP SCHEMA {} CASCADE; DROP SCHEMA {} CASCADE",
            config.app_schema, config.party_schema
        ))
        .await
        .unwrap();
}
