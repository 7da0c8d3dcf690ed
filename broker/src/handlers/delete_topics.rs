//! DeleteTopics (key 20), by name, or by name or topic id from v6.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use uuid::Uuid;

use super::{s, Ctx};

pub fn handle(ctx: &Ctx<'_>, req: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let catalog = &ctx.broker.catalog;
    let wanted: Vec<(Option<TopicName>, Uuid)> = if ctx.version >= 6 {
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
    let responses = wanted
        .into_iter()
        .map(|(name, id)| {
            let topic = match &name {
                Some(n) => catalog
                    .get(n.as_str())
                    .ok_or(ResponseError::UnknownTopicOrPartition),
                None => catalog.get_by_id(&id).ok_or(ResponseError::UnknownTopicId),
            };
            let result = topic
                .map_err(Into::into)
                .and_then(|t| catalog.delete(&t).map(|()| t));
            let mut out = DeletableTopicResult::default().with_name(name.clone());
            if ctx.version >= 6 {
                out.topic_id = id;
            }
            match result {
                Ok(t) => {
                    if ctx.version >= 6 {
                        out.topic_id = t.id;
                        out.name = Some(TopicName(s(t.name.clone())));
                    }
                }
                Err(e) => {
                    out.error_code = e.code();
                    if ctx.version >= 5 {
                        out.error_message = e.message.map(s);
                    }
                }
            }
            out
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}
