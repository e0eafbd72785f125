//! Store errors as HTTP answers, through `stayfast::http::HttpFailure`: a timeout is
//! 504, an open circuit 503 with `Retry-After`, shed work 503 with `Retry-After: 1`.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::json;
use stayfast::{ErrorChain, StoreError, http::HttpFailure};

/// A handler's failure: a status, the headers it needs, a JSON body naming the error.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    /// Where the status came from stayfast's outcome: its headers (`Retry-After`).
    failure: Option<HttpFailure>,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            failure: None,
            message: message.into(),
        }
    }

    /// The answer `failure` prescribes, with `error`'s whole chain as the message
    /// (store errors never echo secrets or user content).
    pub(crate) fn of(failure: HttpFailure, error: &(dyn std::error::Error + 'static)) -> Self {
        Self {
            status: failure.status(),
            failure: Some(failure),
            message: ErrorChain(error).to_string(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let failure = match &e {
            _ if e.is_bad_input() => return ApiError::new(StatusCode::BAD_REQUEST, e.to_string()),
            StoreError::Redis(inner) => HttpFailure::of(inner, bad_gateway),
            StoreError::File(inner) => HttpFailure::of(inner, bad_gateway),
            StoreError::ReadLog(inner) => HttpFailure::of(inner, bad_gateway),
            StoreError::RedisDisabled { .. } => {
                return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
            }
            _ => return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorChain(&e).to_string()),
        };
        ApiError::of(failure, &e)
    }
}

/// Redis's or the disk's own failure (not a timeout, not an open circuit): a failed
/// dependency.
fn bad_gateway<E>(_: &E) -> StatusCode {
    StatusCode::BAD_GATEWAY
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let headers = self.failure.map(|f| f.headers()).unwrap_or_default();
        let body = Json(json!({ "error": self.message }));
        (self.status, headers, body).into_response()
    }
}
