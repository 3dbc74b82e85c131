//! Errors as the API answers them: a status, a stable `code`, a message that names the field
//! at fault (never its value: it may be personal data), and the request's id. Handlers return
//! [`ApiError`]; the request-id layer writes the body, so every error carries the id the
//! response's `x-request-id` header has.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// The body of every error response.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable, machine-readable: `unauthorized`, `forbidden`, `not_found`, `invalid`,
    /// `conflict`, `replayed`, `too_many_requests`, `too_large`, `unavailable`, `internal`.
    pub code: String,
    pub message: String,
    /// The field at fault, as a path into the request (`contacts[1].address`), when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub request_id: String,
}

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            field: Some(field.into()),
            ..ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
        }
    }

    pub fn not_found(what: impl std::fmt::Display) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// A role that the permission matrix does not allow `permission`.
    pub fn not_allowed(role: crate::auth::Role, permission: crate::auth::Permission) -> Self {
        ApiError::forbidden(format!("the {} role may not {}", role.as_str(), permission.describe()))
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn internal() -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "an internal error; the server log has the details under this request id",
        )
    }
}

impl From<reachline_store::StoreError> for ApiError {
    fn from(e: reachline_store::StoreError) -> Self {
        use reachline_store::StoreError;
        match e {
            StoreError::NotFound { what, id } => ApiError::not_found(format!("{what} {id}")),
            StoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            StoreError::Crypto(reachline_store::CryptoError::Shredded) => ApiError::new(
                StatusCode::GONE,
                "erased",
                "the borrower's personal data was erased; only the record of the erasure remains",
            ),
            e => {
                // Store errors never hold personal data (the store seals it before SQL).
                tracing::error!(error = %e, "store error");
                ApiError::internal()
            }
        }
    }
}

impl From<crate::privacy::EraseError> for ApiError {
    fn from(e: crate::privacy::EraseError) -> Self {
        use crate::privacy::EraseError;
        match e {
            EraseError::Store(e) => e.into(),
            e @ (EraseError::Unpaid(_) | EraseError::TooEarly { .. }) => {
                ApiError::new(StatusCode::CONFLICT, "not_erasable", e.to_string())
            }
            e => {
                tracing::error!(error = %e, "erasure incomplete");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "erasure_incomplete", e.to_string())
            }
        }
    }
}

impl From<reachline_engine::EngineError> for ApiError {
    fn from(e: reachline_engine::EngineError) -> Self {
        tracing::error!(error = %e, "engine error");
        ApiError::internal()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        let mut r = status.into_response();
        // The request-id layer turns this into the JSON body.
        r.extensions_mut().insert(self);
        r
    }
}

/// Axum's own refusals (a body that is not JSON, a path segment that is not a number) in the
/// same shape.
impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(e: axum::extract::rejection::JsonRejection) -> Self {
        let status = e.status();
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            _ => "invalid",
        };
        let mut err = ApiError::new(status, code, e.body_text());
        err.field = json_error_field(&e.body_text());
        err
    }
}

/// serde_json names the path of a field it could not read (`contacts[1].address: …`); keep it
/// as the error's field.
fn json_error_field(text: &str) -> Option<String> {
    let rest = text.split_once(": ")?.1;
    let (path, _) = rest.split_once(": ")?;
    (!path.contains(' ') && !path.is_empty()).then(|| path.to_string())
}

impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(e: axum::extract::rejection::BytesRejection) -> Self {
        let status = e.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "too_large"
        } else {
            "invalid"
        };
        ApiError::new(status, code, e.body_text())
    }
}

impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(e: axum::extract::rejection::PathRejection) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid", e.body_text())
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(e: axum::extract::rejection::QueryRejection) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid", e.body_text())
    }
}

/// `Json<T>` whose refusals are [`ApiError`]s.
#[derive(axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `Path<T>` whose refusals are [`ApiError`]s.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// `Query<T>` whose refusals are [`ApiError`]s.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);
