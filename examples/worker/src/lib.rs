//! The handlers of the standalone worker, in a library so the code that adds tasks (a web
//! service, a script, the tests) registers the same ones and its tasks pass the same checks.

use std::time::Duration;

use party::{Registry, Task, TaskContext, TaskError};
use serde::Deserialize;

/// What a `send_welcome_email` task carries.
#[derive(Debug, Deserialize)]
pub struct Welcome {
    /// Where the email goes.
    pub email: String,
    /// How long the mail provider takes to answer, in milliseconds (a stand-in for real work).
    #[serde(default)]
    pub ms: u64,
}

/// Sends a welcome email to a new user (here: waits `ms` and logs it).
pub struct SendWelcomeEmail;

impl Task for SendWelcomeEmail {
    const NAME: &'static str = "send_welcome_email";

    async fn run(&self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        let welcome: Welcome = ctx.data_as()?;
        tokio::time::sleep(Duration::from_millis(welcome.ms)).await;
        tracing::info!(email = %welcome.email, attempt = ctx.attempts(), "welcome email sent");
        Ok(())
    }

    fn check(&self, data: &party::serde_json::Value) -> Result<(), String> {
        match data.get("email").and_then(|e| e.as_str()) {
            Some(email) if email.contains('@') => Ok(()),
            _ => Err("send_welcome_email needs data.email, an email address".to_string()),
        }
    }
}

/// Every handler this worker runs.
pub fn registry() -> Registry {
    Registry::new().register(SendWelcomeEmail)
}
