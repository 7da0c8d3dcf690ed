//! Describing configuration entries, shared by DescribeConfigs and CreateTopics: the effective
//! value of each key, where it came from, and its synonyms in precedence order.

use std::collections::BTreeMap;

use crate::catalog::Catalog;
use crate::config::{self, Kind, TOPIC_KEYS};

/// Kafka's ConfigSource numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    DynamicTopic = 1,
    DynamicBroker = 2,
    StaticBroker = 4,
    Default = 5,
}

/// One described entry.
pub struct Entry {
    pub name: String,
    pub value: String,
    pub source: Source,
    pub kind: Kind,
    pub read_only: bool,
    pub doc: &'static str,
    /// (name, value, source), highest precedence first, the entry's own value included.
    pub synonyms: Vec<(String, String, Source)>,
}

/// Every topic-level key with its effective value for a topic with `overrides`.
pub fn topic_entries(catalog: &Catalog, overrides: &BTreeMap<String, String>) -> Vec<Entry> {
    let dynamic = catalog.dynamic_configs();
    let broker = catalog.broker_config();
    TOPIC_KEYS
        .iter()
        .map(|k| {
            let mut synonyms = Vec::new();
            if let Some(v) = overrides.get(k.name) {
                synonyms.push((k.name.to_owned(), v.clone(), Source::DynamicTopic));
            }
            if let Some(v) = dynamic.get(k.broker_key) {
                synonyms.push((k.broker_key.to_owned(), v.clone(), Source::DynamicBroker));
            }
            if let Some(v) = broker.static_props.get(k.broker_key) {
                synonyms.push((k.broker_key.to_owned(), v.clone(), Source::StaticBroker));
            }
            synonyms.push((k.name.to_owned(), k.default.to_owned(), Source::Default));
            let (value, source) = synonyms
                .first()
                .map(|(_, v, s)| (v.clone(), *s))
                .unwrap_or_else(|| (k.default.to_owned(), Source::Default));
            Entry {
                name: k.name.to_owned(),
                value,
                source,
                kind: k.kind,
                read_only: false,
                doc: k.doc,
                synonyms,
            }
        })
        .collect()
}

/// Every broker key with its effective value on this node.
pub fn broker_entries(catalog: &Catalog) -> Vec<Entry> {
    let dynamic = catalog.dynamic_configs();
    let broker = catalog.broker_config();
    let names = config::BROKER_KEYS
        .iter()
        .map(|(n, ..)| *n)
        .chain(TOPIC_KEYS.iter().map(|k| k.broker_key));
    let mut entries: Vec<Entry> = names
        .filter_map(|name| {
            let (kind, default, doc) = config::broker_key_def(name)?;
            let dynamic_ok = TOPIC_KEYS.iter().any(|k| k.broker_key == name);
            let mut synonyms = Vec::new();
            if let Some(v) = dynamic.get(name) {
                synonyms.push((name.to_owned(), v.clone(), Source::DynamicBroker));
            }
            if let Some(v) = broker.static_props.get(name) {
                synonyms.push((name.to_owned(), v.clone(), Source::StaticBroker));
            }
            synonyms.push((name.to_owned(), default.to_owned(), Source::Default));
            let (value, source) = synonyms
                .first()
                .map(|(_, v, s)| (v.clone(), *s))
                .unwrap_or_else(|| (default.to_owned(), Source::Default));
            Some(Entry {
                name: name.to_owned(),
                value,
                source,
                kind,
                read_only: !dynamic_ok,
                doc,
                synonyms,
            })
        })
        .collect();
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    entries.dedup_by(|a, b| a.name == b.name);
    entries
}
