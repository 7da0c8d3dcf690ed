//! How long this broker may act as a leader (of partitions, of groups) without word from the
//! controller.
//!
//! A broker cut off from the controller quorum is fenced once its session times out, and its
//! partitions get new leaders that accept writes and advance their high watermarks. The old
//! leader does not know: without a lease it would go on answering fetches and ListOffsets
//! from a stale state (a high watermark that went backwards, a group's old offsets). So each
//! heartbeat the controller accepts grants a lease that starts when the heartbeat was *sent*
//! and ends well before the controller may fence the broker (which it measures from when the
//! heartbeat *arrived*): the old leader has stopped before any new one can start.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct LeaderLease {
    origin: Instant,
    /// Milliseconds after `origin` when the lease ends; 0: none granted.
    until_ms: AtomicU64,
    length: Duration,
}

impl LeaderLease {
    /// A lease of three quarters of the controller's session timeout, not yet granted.
    pub fn new(session_timeout: Duration) -> Self {
        Self {
            origin: Instant::now(),
            until_ms: AtomicU64::new(0),
            length: session_timeout * 3 / 4,
        }
    }

    /// The controller accepted a heartbeat sent at `sent`.
    pub fn grant(&self, sent: Instant) {
        let until = sent.saturating_duration_since(self.origin) + self.length;
        self.until_ms
            .fetch_max(until.as_millis() as u64, Ordering::AcqRel);
    }

    /// The controller fenced this broker or forgot it: lead nothing until it says otherwise.
    pub fn revoke(&self) {
        self.until_ms.store(0, Ordering::Release);
    }

    pub fn valid(&self) -> bool {
        (self.origin.elapsed().as_millis() as u64) < self.until_ms.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_runs_from_the_heartbeats_sending_and_can_be_revoked() {
        let lease = LeaderLease::new(Duration::from_millis(400));
        assert!(
            !lease.valid(),
            "no lease before the first accepted heartbeat"
        );
        lease.grant(Instant::now());
        assert!(lease.valid());
        // A late answer to an older heartbeat does not shorten a newer grant.
        lease.grant(Instant::now() - Duration::from_millis(250));
        assert!(lease.valid());
        std::thread::sleep(Duration::from_millis(320));
        assert!(
            !lease.valid(),
            "300 ms = 3/4 of the session timeout has passed"
        );
        lease.grant(Instant::now());
        lease.revoke();
        assert!(!lease.valid());
    }
}
