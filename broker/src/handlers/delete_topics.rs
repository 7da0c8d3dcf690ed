//! DeleteTopics (key 20), by name, or by name or topic id from v6.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use uuid::Uuid;

use strom_raft::Command;

use super::{s, Ctx};
use crate::error::ApiError;

pub fn handle(
    ctx: &Ctx<'_>,
    req: DeleteTopicsRequest,
) -> impl std::future::Future<Output = DeleteTopicsResponse> + Send + 'static {
    let broker = ctx.broker.clone();
    let version = ctx.version;
    let wanted: Vec<(Option<TopicName>, Uuid)> = if version >= 6 {
        req.topics
            .into_iter()
            .map(|t| (t.name, t.topic_id))
            .collect()
    } else {
        req.topic_names
            .into_iter()
            .map(|n| (Some(n), Uuid::nil()))
            .collect()
    };
    async move {
        let catalog = &broker.catalog;
        let mut responses = Vec::with_capacity(wanted.len());
        for (name, id) in wanted {
            let topic = match &name {
                Some(n) => catalog
                    .get(n.as_str())
                    .ok_or(ResponseError::UnknownTopicOrPartition),
                None => catalog.get_by_id(&id).ok_or(ResponseError::UnknownTopicId),
            };
            let result: Result<_, ApiError> = match topic {
                Err(e) => Err(e.into()),
                Ok(_) if !broker.config.delete_topic_enable => Err(ApiError::new(
                    ResponseError::TopicDeletionDisabled,
                    "delete.topic.enable is false",
                )),
                Ok(t) => broker
                    .change(Command::DeleteTopic {
                        name: t.name.clone(),
                    })
                    .await
                    .map(|_| t),
            };
            let mut out = DeletableTopicResult::default().with_name(name.clone());
            if version >= 6 {
                out.topic_id = id;
            }
            match result {
                Ok(t) => {
                    if version >= 6 {
                        out.topic_id = t.id;
                        out.name = Some(TopicName(s(t.name.clone())));
                    }
                }
                Err(e) => {
                    out.error_code = e.code();
                    if version >= 5 {
                        out.error_message = e.message.map(s);
                    }
                }
            }
            responses.push(out);
        }
        DeleteTopicsResponse::default().with_responses(responses)
    }
}
