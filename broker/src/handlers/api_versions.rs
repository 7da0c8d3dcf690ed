//! ApiVersions (key 18): the table of supported versions. A request for a version Strom does
//! not know is answered in the v0 layout with UNSUPPORTED_VERSION, so clients can retry lower.

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};

use super::{encode_response, Ctx, HandlerError, SUPPORTED};

fn table() -> Vec<ApiVersion> {
    SUPPORTED
        .iter()
        .map(|(key, min, max)| {
            ApiVersion::default()
                .with_api_key(*key as i16)
                .with_min_version(*min)
                .with_max_version(*max)
        })
        .collect()
}

pub fn handle(_ctx: &Ctx<'_>, _req: ApiVersionsRequest) -> ApiVersionsResponse {
    // No feature fields: old librdkafka (kcat 1.7) fails on several trailing tagged fields.
    ApiVersionsResponse::default().with_api_keys(table())
}

/// The v0-layout answer to an ApiVersions request of an unknown version.
pub fn unsupported_version_response(correlation_id: i32) -> Result<Bytes, HandlerError> {
    let body = ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(table());
    encode_response(ApiKey::ApiVersions, 0, correlation_id, &body)
}
