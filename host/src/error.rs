//! The one error type of the inference core. The WIT bindings (`api`) and the HTTP
//! endpoints the host serves itself (`server`) each map it exactly once.

use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidArgument,
    NotFound,
    ContextLengthExceeded,
    Unsupported,
    ResourceExhausted,
    Busy,
    Backend,
    Internal,
}

#[derive(Debug, Clone, Error)]
#[error("{message}")]
pub struct InferenceError {
    pub code: ErrorCode,
    pub message: String,
    pub param: Option<String>,
}

impl InferenceError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            param: None,
        }
    }

    pub fn with_param(mut self, param: &str) -> Self {
        self.param = Some(param.to_string());
        self
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }

    pub fn model_not_found(model: &str) -> Self {
        Self::new(
            ErrorCode::NotFound,
            format!("The model '{model}' does not exist"),
        )
        .with_param("model")
    }

    pub fn backend(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Backend, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
}

impl From<crate::providers::ProviderError> for InferenceError {
    fn from(e: crate::providers::ProviderError) -> Self {
        match e {
            crate::providers::ProviderError::InvalidInput(m) => Self::invalid(m),
            crate::providers::ProviderError::Backend(m) => Self::backend(m),
        }
    }
}
