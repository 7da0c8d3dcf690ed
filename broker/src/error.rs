//! The one place where failures become Kafka error codes.

use kafka_protocol::error::ResponseError;
use strom_storage::{SequenceError, StorageError};

/// A request-level or per-resource failure with Kafka's code and an optional message for
/// the response's `error_message` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ResponseError,
    pub message: Option<String>,
}

impl ApiError {
    pub fn new(code: ResponseError, message: impl Into<String>) -> Self {
        Self {
            code,
            message: Some(message.into()),
        }
    }

    pub fn code(&self) -> i16 {
        self.code.code()
    }
}

impl From<ResponseError> for ApiError {
    fn from(code: ResponseError) -> Self {
        Self {
            code,
            message: None,
        }
    }
}

impl From<&StorageError> for ApiError {
    fn from(e: &StorageError) -> Self {
        let code = match e {
            StorageError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
            StorageError::InvalidBatch(_) => ResponseError::CorruptMessage,
            StorageError::Sequence(SequenceError::InvalidEpoch { .. }) => {
                ResponseError::InvalidProducerEpoch
            }
            StorageError::Sequence(SequenceError::OutOfOrder { .. }) => {
                ResponseError::OutOfOrderSequenceNumber
            }
            StorageError::Sequence(SequenceError::UnknownProducer { .. }) => {
                ResponseError::UnknownProducerId
            }
            // A gap left by our own failed write is a storage error for the client too.
            StorageError::Sequence(SequenceError::AfterFailedAppend { .. })
            | StorageError::Io { .. }
            | StorageError::Offline(_)
            | StorageError::Corrupt { .. } => ResponseError::KafkaStorageError,
        };
        Self::new(code, e.to_string())
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        Self::from(&e)
    }
}
