//! What the active controller does besides replicating the log: it tracks broker heartbeats,
//! fences brokers whose session expired, unfences brokers that caught up, and moves
//! leadership back to preferred replicas.

use std::collections::HashMap;
use std::time::Instant;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::image::{BrokerId, MetadataImage};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    pub broker: BrokerId,
    pub incarnation: Uuid,
    /// The metadata offset the broker has applied.
    pub applied: u64,
    /// Controlled shutdown: move leadership away, then let the broker go.
    pub shutting_down: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatReply {
    /// False when the controller does not know this incarnation: register (again).
    pub registered: bool,
    pub fenced: bool,
}

/// Heartbeat times, kept only in the active controller's memory (as in Kafka).
#[derive(Default)]
pub(crate) struct Sessions {
    last_seen: Mutex<HashMap<BrokerId, (Instant, Uuid)>>,
}

impl Sessions {
    pub(crate) fn seen(&self, broker: BrokerId, incarnation: Uuid) {
        self.last_seen
            .lock()
            .insert(broker, (Instant::now(), incarnation));
    }

    /// A new controller gives every broker a full session before fencing it.
    pub(crate) fn reset(&self, image: &MetadataImage) {
        let now = Instant::now();
        let mut seen = self.last_seen.lock();
        seen.clear();
        for b in image.brokers.values() {
            seen.insert(b.id, (now, b.incarnation));
        }
    }

    /// Unfenced brokers whose last heartbeat is older than the session timeout.
    pub(crate) fn expired(&self, image: &MetadataImage, timeout_ms: u64) -> Vec<BrokerId> {
        let seen = self.last_seen.lock();
        image
            .live_brokers()
            .filter(|b| {
                seen.get(&b.id)
                    .is_none_or(|(at, _)| at.elapsed().as_millis() as u64 > timeout_ms)
            })
            .map(|b| b.id)
            .collect()
    }

    /// Another process is heartbeating as this broker id with a different disk.
    pub(crate) fn live_with_other_incarnation(
        &self,
        broker: BrokerId,
        incarnation: Uuid,
        timeout_ms: u64,
    ) -> bool {
        self.last_seen.lock().get(&broker).is_some_and(|(at, inc)| {
            *inc != incarnation && (at.elapsed().as_millis() as u64) < timeout_ms
        })
    }
}

/// Partitions whose preferred (first) replica is in the ISR, alive and not leading.
pub(crate) fn imbalanced(image: &MetadataImage) -> Vec<(String, i32)> {
    let mut out = Vec::new();
    for t in image.topics.values() {
        for (i, p) in t.partitions.iter().enumerate() {
            if let Some(&preferred) = p.replicas.first() {
                if p.leader != preferred && p.isr.contains(&preferred) && image.is_live(preferred) {
                    out.push((t.name.clone(), i as i32));
                }
            }
        }
    }
    out
}

/// Ongoing reassignments whose target replicas are all in the ISR.
pub(crate) fn reassignments_done(image: &MetadataImage) -> Vec<(String, i32)> {
    let mut out = Vec::new();
    for t in image.topics.values() {
        for (i, p) in t.partitions.iter().enumerate() {
            if (p.adding.is_empty() && p.removing.is_empty())
                || !p
                    .replicas
                    .iter()
                    .filter(|b| !p.removing.contains(b))
                    .all(|b| p.isr.contains(b))
            {
                continue;
            }
            out.push((t.name.clone(), i as i32));
        }
    }
    out
}
