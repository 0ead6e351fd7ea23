//! The service with its worker in one process. `DATABASE_URL` names the PostgreSQL database
//! (default `postgres://postgres@127.0.0.1:5432/postgres`); `LISTEN` the address (default
//! `127.0.0.1:3000`). SIGTERM or Ctrl-C stops both: the server finishes open requests, the
//! worker gives running tasks its grace period.

use std::process::ExitCode;

use party::WorkerConfig;
use party_example_axum_service::{Config, StartError, start};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), StartError> {
    let stop = stop_signal()?;
    let config = Config {
        database_url: std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string()),
        app_schema: "shop".to_string(),
        party_schema: "party".to_string(),
    };
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".to_string());
    let (router, party) = start(&config).await?;
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    tracing::info!("listening on http://{listen}");

    let worker = party.worker(WorkerConfig::default());
    let server = axum::serve(listener, router).with_graceful_shutdown(stopped(stop.clone()));
    let (served, worked) = tokio::join!(server, worker.run(stopped(stop)));
    served?;
    worked?;
    Ok(())
}

/// Flips to `true` on the first SIGTERM or SIGINT.
fn stop_signal() -> Result<watch::Receiver<bool>, StartError> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        tx.send_replace(true);
        // Keep the sender, so the receivers see `true` rather than a closed channel.
        std::future::pending::<()>().await;
    });
    Ok(rx)
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    if stop.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}
