//! `party serve`: the HTTP API, the dashboard and metrics over the database, until SIGINT or
//! SIGTERM.

use party::{Party, Registry, TaskError, builtin};
use party_serve::ServeConfig;

use crate::args::ServeArgs;
use crate::signals::Signals;

/// The environment variable holding the full token.
pub(crate) const TOKEN_ENV: &str = "PARTY_API_TOKEN";

/// The environment variable holding the read-only token.
pub(crate) const READ_TOKEN_ENV: &str = "PARTY_API_READ_TOKEN";

/// Serve until stopped.
pub(crate) async fn run(db: &str, registry: Registry, args: ServeArgs) -> Result<(), TaskError> {
    let (token, made) = token(&args)?;
    let read_token = std::env::var(READ_TOKEN_ENV)
        .ok()
        .filter(|t| !t.trim().is_empty())
        .map(|t| t.trim().to_string());
    let config = ServeConfig {
        read_token,
        redact: args.redact.clone(),
        metrics_public: args.metrics_public,
        ..ServeConfig::new(token.clone())
    };
    // Every handler is known, as for `add`, so the API adds any registered kind of task.
    let party = Party::connect(db, builtin::registry(true).merge(registry)).await?;
    // Check the configuration before binding, so a bad one leaves no port open.
    let app = party_serve::router(party.clone(), config)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| {
            TaskError::invalid(format!(
                "cannot listen on {}: {e}; give another address with --listen",
                args.listen
            ))
        })?;
    let addr = listener
        .local_addr()
        .map_err(|e| TaskError::failed(format!("cannot read the listening address: {e}")))?;
    if made {
        // The one place a token is shown: one the operator has no other way to learn.
        crate::output::print(&format!(
            "dashboard: http://{addr}/login?token={token}\n(a new random token; set \
             {TOKEN_ENV} or --token-file to choose one)\n"
        ))?;
    } else {
        crate::output::print(&format!("dashboard: http://{addr}/\n"))?;
    }
    tracing::info!(%addr, backend = party.store().backend(), "serving the API and dashboard");
    let mut signals = Signals::install()?;
    party_serve::serve(app, listener, async move {
        signals.recv().await;
        tracing::info!("stopping: finishing the requests in flight");
    })
    .await
}

/// The token: `--token-file`, else `$PARTY_API_TOKEN`, else a new random one (`true`).
fn token(args: &ServeArgs) -> Result<(String, bool), TaskError> {
    if let Some(path) = &args.token_file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            TaskError::invalid(format!(
                "cannot read the token file {}: {e}; give a file whose first line is the token",
                path.display()
            ))
        })?;
        let token = text.lines().next().unwrap_or("").trim().to_string();
        party::validate::api_token(&token, "the token in --token-file")?;
        return Ok((token, false));
    }
    if let Some(token) = std::env::var(TOKEN_ENV)
        .ok()
        .filter(|t| !t.trim().is_empty())
    {
        let token = token.trim().to_string();
        party::validate::api_token(&token, &format!("${TOKEN_ENV}"))?;
        return Ok((token, false));
    }
    Ok((party_serve::random_token()?, true))
}
