//! An axum service that records a signup and adds the task that welcomes the new user in one
//! PostgreSQL transaction: both are committed, or neither. The worker that runs the task lives
//! in the same process (`main.rs`); more workers can run anywhere on the same database.
//!
//! - `POST /signups` with `{"email": "..."}`: 201 with the signup's id and the task's id; 409
//!   when the email has signed up before (and no task is left behind); 400 for a bad address.
//! - `GET /signups/{id}`: the signup and whether the welcome has been sent.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use party::serde_json::{Value, json};
use party::store::postgres::tokio_postgres::error::SqlState;
use party::store::postgres::tokio_postgres::{self, Client, NoTls};
use party::{NewTask, Party, Registry, Task, TaskContext, TaskError};
use serde::Deserialize;
use tokio::sync::Mutex;

/// Where the service keeps its data.
#[derive(Debug, Clone)]
pub struct Config {
    /// The PostgreSQL database, e.g. `postgres://app:secret@db.internal/app`.
    pub database_url: String,
    /// The schema of the service's own tables.
    pub app_schema: String,
    /// The schema of party's tables, beside them in the same database.
    pub party_schema: String,
}

/// Anything that stops the service from starting.
pub type StartError = Box<dyn std::error::Error + Send + Sync>;

/// The service's shared state: party and the connection requests write through.
#[derive(Clone)]
struct App {
    party: Party,
    // One connection, taken in turn, keeps the example short; a service under load uses a pool
    // (deadpool-postgres, bb8) of the same tokio_postgres clients.
    db: Arc<Mutex<Client>>,
}

/// Connects, creates the service's table when missing, and returns the routes and the party
/// handle (for the worker, or for tests).
///
/// # Errors
/// When the database cannot be reached, a schema name is not a plain identifier, or the schema
/// cannot be created.
pub async fn start(config: &Config) -> Result<(Router, Party), StartError> {
    for schema in [&config.app_schema, &config.party_schema] {
        let plain = !schema.is_empty()
            && schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !plain {
            return Err(format!(
                "the schema name {schema:?} must be lower-case letters, digits and '_'"
            )
            .into());
        }
    }
    let requests = connect(config).await?;
    requests
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS signups (
                id          bigserial PRIMARY KEY,
                email       text NOT NULL UNIQUE,
                created_at  timestamptz NOT NULL DEFAULT now(),
                welcomed_at timestamptz
            )",
        )
        .await?;
    // The handler gets a connection of its own, so running tasks never wait for requests.
    let registry = Registry::new().register(SendWelcome {
        db: Arc::new(connect(config).await?),
    });
    let sep = if config.database_url.contains('?') {
        '&'
    } else {
        '?'
    };
    let party_url = format!("{}{sep}schema={}", config.database_url, config.party_schema);
    let party = Party::connect(&party_url, registry).await?;
    let app = App {
        party: party.clone(),
        db: Arc::new(Mutex::new(requests)),
    };
    let router = Router::new()
        .route("/signups", post(sign_up))
        .route("/signups/{id}", get(signup))
        .with_state(app);
    Ok((router, party))
}

/// A connection whose tables are the service's own.
async fn connect(config: &Config) -> Result<Client, StartError> {
    let (client, connection) = tokio_postgres::connect(&config.database_url, NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::error!("database connection closed: {e}");
        }
    });
    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {0}; SET search_path TO {0}",
            config.app_schema
        ))
        .await?;
    Ok(client)
}

/// A JSON answer: status and body.
type Reply = (StatusCode, Json<Value>);

fn error(status: StatusCode, message: &str) -> Reply {
    (status, Json(json!({ "error": message })))
}

fn internal(e: impl std::fmt::Display) -> Reply {
    tracing::error!("{e}");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal error; see the service's log",
    )
}

/// The body of `POST /signups`.
#[derive(Deserialize)]
struct SignUp {
    email: String,
}

async fn sign_up(State(app): State<App>, Json(body): Json<SignUp>) -> Result<Reply, Reply> {
    let email = body.email.trim().to_lowercase();
    let welcome = NewTask::new(SendWelcome::NAME).data(json!({ "email": email }));
    let mut db = app.db.lock().await;
    let tx = db.transaction().await.map_err(internal)?;
    // The task is written in this transaction: no worker sees it until the commit below, and a
    // rollback takes it away with the signup.
    let task = match app.party.add_in_transaction(&tx, welcome).await {
        Ok(id) => id,
        Err(TaskError::Invalid(message)) => {
            return Err(error(StatusCode::BAD_REQUEST, &message));
        }
        Err(e) => return Err(internal(e)),
    };
    let row = match tx
        .query_one(
            "INSERT INTO signups (email) VALUES ($1) RETURNING id",
            &[&email],
        )
        .await
    {
        Ok(row) => row,
        // Dropping the transaction rolls it back, the welcome task with it.
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            return Err(error(
                StatusCode::CONFLICT,
                "this email has already signed up",
            ));
        }
        Err(e) => return Err(internal(e)),
    };
    tx.commit().await.map_err(internal)?;
    let id: i64 = row.get(0);
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": id, "task": task.to_string() })),
    ))
}

async fn signup(State(app): State<App>, Path(id): Path<i64>) -> Result<Reply, Reply> {
    let db = app.db.lock().await;
    let row = db
        .query_opt(
            "SELECT email, welcomed_at IS NOT NULL FROM signups WHERE id = $1",
            &[&id],
        )
        .await
        .map_err(internal)?
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "no signup has this id"))?;
    let (email, welcomed): (String, bool) = (row.get(0), row.get(1));
    Ok((
        StatusCode::OK,
        Json(json!({ "id": id, "email": email, "welcomed": welcomed })),
    ))
}

/// Sends the welcome email (here: logs it) and records that it went out.
struct SendWelcome {
    db: Arc<Client>,
}

impl Task for SendWelcome {
    const NAME: &'static str = "send_welcome";

    async fn run(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        let email = ctx.data()["email"].as_str().unwrap_or_default().to_string();
        tracing::info!(%email, attempt = ctx.attempts(), "sending the welcome email");
        // An attempt can run again after a crash: recording it twice changes nothing.
        self.db
            .execute(
                "UPDATE signups SET welcomed_at = now() WHERE email = $1 AND welcomed_at IS NULL",
                &[&email],
            )
            .await
            .map_err(TaskError::failed)?;
        Ok(())
    }

    fn check(&self, data: &Value) -> Result<(), String> {
        match data["email"].as_str() {
            Some(email)
                if email.len() <= 254
                    && email
                        .split_once('@')
                        .is_some_and(|(user, host)| !user.is_empty() && host.contains('.')) =>
            {
                Ok(())
            }
            _ => Err("the email must be an address such as ada@example.com".to_string()),
        }
    }
}
