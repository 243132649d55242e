//! The one place errors become HTTP responses: `application/problem+json`
//! (RFC 9457) with a stable `code`. A 500 says nothing about why; the log
//! gets the cause (never personal data: store and crypto errors carry none).

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use dzl_store::StoreError;
use dzl_types::error::Problem;
use dzl_types::ErrorCode;

/// An error of the HTTP layer.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    detail: String,
    field: Option<String>,
    retry_after: Option<u64>,
    allow: Option<String>,
    deposit_id: Option<String>,
    close: bool,
}

impl ApiError {
    /// An error with `code` and its standard title as detail.
    pub fn new(code: ErrorCode) -> Self {
        ApiError {
            code,
            detail: code.title().to_owned(),
            field: None,
            retry_after: None,
            allow: None,
            deposit_id: None,
            close: false,
        }
    }

    /// Closes the connection after the answer: the body was not read to
    /// its end, so nothing after it on the connection can be trusted.
    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    /// A 405 naming the methods the resource has.
    pub fn method_not_allowed(allow: &str) -> Self {
        ApiError {
            allow: Some(allow.to_owned()),
            ..ApiError::new(ErrorCode::MethodNotAllowed)
        }
    }

    /// An error with a specific detail (never personal data).
    pub fn with_detail(code: ErrorCode, detail: impl Into<String>) -> Self {
        ApiError {
            detail: detail.into(),
            ..ApiError::new(code)
        }
    }

    /// `validation_failed` at a JSON pointer.
    pub fn invalid(field: &str, detail: impl Into<String>) -> Self {
        ApiError {
            field: Some(field.to_owned()),
            ..ApiError::with_detail(ErrorCode::ValidationFailed, detail)
        }
    }

    /// Sets the offending field.
    pub fn at(mut self, field: &str) -> Self {
        self.field = Some(field.to_owned());
        self
    }

    /// A refused rule of `dzl_types::rules`, at its pointer: for
    /// `validation_failed` the detail names the pointer, as every 422 of
    /// the parser does.
    pub fn violation(v: dzl_types::rules::Violation) -> Self {
        if v.code == ErrorCode::ValidationFailed {
            let detail = format!("{}: {}", v.pointer, v.message);
            return ApiError::invalid(&v.pointer, detail);
        }
        ApiError::with_detail(v.code, v.message).at(&v.pointer)
    }

    /// A 429 with `Retry-After`.
    pub fn rate_limited(retry_after: u64, detail: &str) -> Self {
        ApiError {
            retry_after: Some(retry_after.max(1)),
            ..ApiError::with_detail(ErrorCode::RateLimited, detail)
        }
    }

    /// An internal error: logged here, opaque to the caller.
    pub fn internal(context: &str, cause: impl std::fmt::Display) -> Self {
        log::error!("{context}: {cause}");
        ApiError::with_detail(
            ErrorCode::InternalError,
            "The vault could not complete the request; nothing was released.",
        )
    }

    /// The problem code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.detail)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Refused(code) => ApiError::new(code),
            StoreError::Throttled(secs) => ApiError::rate_limited(
                secs,
                "Too many redemptions of unknown codes; wait for the window to end",
            ),
            StoreError::Rule(v) => ApiError::violation(v),
            // The platform's own deposit, named so that a platform whose
            // first answer was lost can still issue codes for it or erase it.
            StoreError::DuplicateExternalRef(existing) => ApiError {
                deposit_id: Some(existing.to_string()),
                ..ApiError::new(ErrorCode::DuplicateExternalRef).at("/external_ref")
            },
            StoreError::Unavailable(why) | StoreError::Conflict(why) => {
                log::error!("store unavailable: {why}");
                ApiError::with_detail(
                    ErrorCode::StorageUnavailable,
                    "The store is unavailable; nothing was changed.",
                )
            }
            StoreError::Corrupt(why) => ApiError::internal("store integrity", why),
            StoreError::Invalid(why) => ApiError::internal("store refused an operation", why),
        }
    }
}

impl From<dzl_crypto::CryptoError> for ApiError {
    fn from(e: dzl_crypto::CryptoError) -> Self {
        ApiError::internal("cryptography", e)
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(e: actix_web::error::BlockingError) -> Self {
        ApiError::internal("blocking pool", e)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let mut problem = Problem::new(self.code, self.detail.clone());
        problem.field = self.field.clone();
        problem.deposit_id = self.deposit_id.clone();
        let mut resp = HttpResponse::build(self.status_code());
        resp.insert_header((header::CONTENT_TYPE, "application/problem+json"));
        resp.insert_header((header::CACHE_CONTROL, "no-store"));
        if let Some(allow) = &self.allow {
            resp.insert_header((header::ALLOW, allow.as_str()));
        }
        if self.close {
            resp.force_close();
        }
        if let Some(secs) = self.retry_after {
            resp.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        resp.body(body)
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;
