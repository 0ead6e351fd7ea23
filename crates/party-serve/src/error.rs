//! Errors as HTTP answers: a status and `{"error": "..."}` (with `existing_id` for a duplicate
//! recurring task). The status follows the CLI's exit codes: bad input 400 (exit 2), duplicate
//! 409 (exit 3), not found 404 (exit 4), a state conflict 409.

use axum::Json;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use party::TaskError;
use serde_json::json;

use crate::auth::Denied;

/// An error answer of the JSON API.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
    pub(crate) existing_id: Option<String>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            existing_id: None,
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

/// The status a library error answers with.
pub(crate) fn status_of(e: &TaskError) -> StatusCode {
    match e {
        TaskError::Invalid(_) => StatusCode::BAD_REQUEST,
        TaskError::NotFound(_) => StatusCode::NOT_FOUND,
        TaskError::Duplicate { .. } | TaskError::Conflict(_) => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<TaskError> for ApiError {
    fn from(e: TaskError) -> ApiError {
        let existing_id = match &e {
            TaskError::Duplicate { existing, .. } => Some(existing.to_string()),
            _ => None,
        };
        if status_of(&e) == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %e, "request failed");
        }
        ApiError {
            status: status_of(&e),
            message: e.to_string(),
            existing_id,
        }
    }
}

impl From<Denied> for ApiError {
    fn from(d: Denied) -> ApiError {
        ApiError::new(d.status(), d.message())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> ApiError {
        let status = r.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::new(
                status,
                "the request body is too large: send at most the server's body limit (1 MiB by \
                 default), or split a bulk add",
            );
        }
        ApiError::new(
            status,
            format!("cannot read the request body: {}", r.body_text()),
        )
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> ApiError {
        ApiError::bad_request(format!("bad query string: {}", r.body_text()))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message });
        if let Some(id) = self.existing_id {
            body["existing_id"] = json!(id);
        }
        let mut resp = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}
