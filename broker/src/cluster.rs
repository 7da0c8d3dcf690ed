//! How a broker takes part in the cluster: it registers with the controller and heartbeats,
//! reconciles its replicas with every metadata image (leading, following, loading the groups
//! of the offsets partitions it leads), keeps the ISR of the partitions it leads honest, and
//! moves leadership away before it stops.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use strom_raft::{Command, Endpoint, Heartbeat, Outcome};

use crate::broker::Broker;
use crate::catalog::{Partition, Transition};
use crate::error::ApiError;
use crate::group;

/// How long a partition waits before proposing another ISR change after one was refused.
const ALTER_RETRY_BACKOFF: Duration = Duration::from_millis(200);

impl Broker {
    pub(crate) fn start_cluster_tasks(self: &Arc<Self>) {
        tokio::spawn(self.clone().reconcile_loop());
        match crate::broker::control_runtime() {
            Ok(control) => control.spawn(self.clone().heartbeat_loop()),
            // Start-up already created it; should it fail here, heartbeats share the workers.
            Err(_) => tokio::spawn(self.clone().heartbeat_loop()),
        };
    }

    async fn reconcile_loop(self: Arc<Self>) {
        let mut rx = self.quorum.subscribe();
        loop {
            let image = rx.borrow_and_update().clone();
            self.catalog.set_cluster_id(&image.cluster_id);
            let this = self.clone();
            let img = image.clone();
            let changes =
                match strom_storage::io::blocking(move || this.catalog.reconcile(&img)).await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(error = %e, "metadata reconcile task failed");
                        Vec::new()
                    }
                };
            for (p, t) in changes {
                self.on_transition(&p, t).await;
            }
            // Replicas that are gone (deleted topics, reassigned away) stop being fetched.
            for (topic, index, _) in self.fetchers.followed() {
                let hosted = self.catalog.get(&topic).and_then(|t| t.partition(index));
                if !hosted.is_some_and(|p| !p.is_leader() && p.state().leader >= 0) {
                    self.fetchers.unfollow_key(&topic, index);
                }
            }
            self.reconciled.send_replace(image.offset);
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    async fn on_transition(self: &Arc<Self>, p: &Arc<Partition>, t: Transition) {
        let offsets = p.topic == group::store::TOPIC;
        match t {
            Transition::BecameLeader => {
                self.fetchers.unfollow(p);
                if offsets {
                    self.load_groups(p).await;
                }
            }
            Transition::BecameFollower { leader, epoch } => {
                tracing::info!(topic = %p.topic, partition = p.index, leader, epoch, "following");
                self.fetchers.follow(self, p.clone(), leader, epoch);
                if offsets {
                    self.unload_groups(p.index);
                }
            }
            Transition::Leaderless => {
                if self.shutting_down.load(Ordering::Acquire) {
                    tracing::debug!(topic = %p.topic, partition = p.index, "partition has no leader");
                } else if p.state().isr.is_empty() {
                    tracing::error!(topic = %p.topic, partition = p.index, replicas = ?p.state().replicas, "partition offline: its last in-sync replica came back with an empty data directory, so no replica is known to hold every acknowledged write; it stays offline until that data is restored or an operator accepts the loss with an unclean election (ElectLeaders UNCLEAN)");
                } else {
                    tracing::warn!(topic = %p.topic, partition = p.index, "partition has no leader: waiting for an in-sync replica to return");
                }
                self.fetchers.unfollow(p);
                if offsets {
                    self.unload_groups(p.index);
                }
            }
            Transition::Updated | Transition::Unchanged => {}
        }
    }

    /// Becoming leader of an offsets partition: read its groups back and coordinate them.
    async fn load_groups(&self, p: &Arc<Partition>) {
        let count = self.offsets_topic().map_or(0, |t| t.partition_count());
        let log = p.log.clone();
        let loaded = strom_storage::io::blocking(move || group::store::load_partition(&log))
            .await
            .unwrap_or_default();
        self.groups
            .unload(|g| group::store::partition_for(g, count) == p.index);
        self.groups.load(loaded);
        self.coordinating.write().insert(p.index);
        tracing::info!(
            partition = p.index,
            "coordinating the groups of offsets partition"
        );
    }

    fn unload_groups(&self, index: i32) {
        if self.coordinating.write().remove(&index) {
            let count = self.offsets_topic().map_or(0, |t| t.partition_count());
            self.groups
                .unload(|g| group::store::partition_for(g, count) == index);
            tracing::info!(
                partition = index,
                "no longer coordinating offsets partition"
            );
        }
    }

    /// NOT_COORDINATOR unless this node leads the group's offsets partition and has loaded it.
    pub fn check_coordinator(&self, group: &str) -> Result<(), ApiError> {
        let topic = self
            .offsets_topic()
            .map_err(|_| ApiError::from(ResponseError::CoordinatorNotAvailable))?;
        let index = group::store::partition_for(group, topic.partition_count());
        if !self.catalog.lease.valid() {
            // Cut off from the controller: another node may coordinate this group by now.
            return Err(ResponseError::NotCoordinator.into());
        }
        if self.coordinating.read().contains(&index) {
            return Ok(());
        }
        match topic.partition(index) {
            Some(p) if p.is_leader() => Err(ResponseError::CoordinatorLoadInProgress.into()),
            _ => Err(ResponseError::NotCoordinator.into()),
        }
    }

    async fn heartbeat_loop(self: Arc<Self>) {
        let c = &self.config.cluster;
        let interval = Duration::from_millis(c.heartbeat_interval_ms);
        let mut registered = false;
        let mut warned_at: Option<tokio::time::Instant> = None;
        loop {
            if !registered {
                let adv = &self.config.advertised;
                let cmd = Command::RegisterBroker {
                    id: self.node_id(),
                    incarnation: self.catalog.incarnation,
                    endpoint: Endpoint {
                        host: adv.host.clone(),
                        port: adv.port,
                    },
                    rack: self.config.rack.clone(),
                    cluster_id: self.catalog.cluster_id(),
                };
                match self.quorum.propose(cmd).await {
                    Ok((offset, _)) => {
                        registered = true;
                        self.registered_at.send_replace(offset);
                        // Heartbeat once the registration is applied here, so the controller
                        // can unfence at the first try.
                        self.wait_reconciled(offset, Duration::from_secs(1)).await;
                        tracing::info!(node = self.node_id(), "registered with the controller");
                    }
                    Err(e) => {
                        if warned_at.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                            tracing::warn!(error = %e, voters = ?c.voters, "cannot register with the controller quorum yet; check that a majority of controller.quorum.voters is running and reachable");
                            warned_at = Some(tokio::time::Instant::now());
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                }
            }
            let hb = Heartbeat {
                broker: self.node_id(),
                incarnation: self.catalog.incarnation,
                applied: *self.reconciled.borrow(),
                shutting_down: self.shutting_down.load(Ordering::Acquire),
            };
            let sent = std::time::Instant::now();
            match self.quorum.heartbeat(hb).await {
                Ok(r) if !r.registered => {
                    self.catalog.lease.revoke();
                    registered = false;
                }
                Ok(r) => {
                    if r.fenced {
                        self.catalog.lease.revoke();
                    } else {
                        self.catalog.lease.grant(sent);
                    }
                    let was = *self.fenced.borrow();
                    if was != r.fenced {
                        tracing::info!(fenced = r.fenced, "controller changed this broker's state");
                    }
                    self.fenced.send_replace(r.fenced);
                }
                Err(e) => tracing::debug!(error = %e, "heartbeat failed"),
            }
            // Fenced brokers check in often so they start (or come back) quickly.
            let pause = if *self.fenced.borrow() {
                interval.min(Duration::from_millis(100))
            } else {
                interval
            };
            tokio::time::sleep(pause).await;
        }
    }

    /// Waits until the controller has unfenced this broker and its replicas reflect the
    /// metadata that did it: the moment to start serving clients.
    pub async fn wait_ready(&self) {
        let mut fenced = self.fenced.subscribe();
        let mut reconciled = self.reconciled.subscribe();
        let mut registered = self.registered_at.subscribe();
        let mut warned = tokio::time::Instant::now();
        let mut unfenced_at: Option<u64> = None;
        loop {
            let image = self.quorum.image();
            // Only this process's own registration counts: the image on disk may still show
            // the previous process (same id and disk) unfenced, leading partitions it no
            // longer leads; serving from it is how a restarted node would act on stale
            // metadata while the controller is unreachable.
            let registered_at = *self.registered_at.borrow();
            let me = image.brokers.get(&self.node_id());
            let unfenced = registered_at > 0
                && me.is_some_and(|b| {
                    !b.fenced
                        && b.epoch == registered_at
                        && b.incarnation == self.catalog.incarnation
                });
            // The replicas must reflect the image that unfenced us, not whatever came later:
            // under a steady stream of metadata the latest image is always a step ahead.
            if unfenced {
                let at = *unfenced_at.get_or_insert(image.offset);
                if *self.reconciled.borrow() >= at {
                    return;
                }
            } else {
                unfenced_at = None;
            }
            if warned.elapsed() > Duration::from_secs(10) {
                tracing::info!(leader = ?self.quorum.leader(), "waiting to join the cluster (controller quorum and registration)");
                warned = tokio::time::Instant::now();
            }
            // Woken by either change (the unfencing usually lands before the catalog has
            // reconciled it); the timeout only re-checks the registration now and then.
            let _ = tokio::time::timeout(Duration::from_millis(50), async {
                tokio::select! {
                    _ = fenced.changed() => {}
                    _ = reconciled.changed() => {}
                    _ = registered.changed() => {}
                }
            })
            .await;
        }
    }

    /// Controlled shutdown: ask the controller to fence this broker (moving leadership away)
    /// and wait until the metadata shows it, so clients fail over without waiting for a
    /// session timeout.
    pub async fn controlled_shutdown(&self) {
        let others = self
            .quorum
            .image()
            .live_brokers()
            .any(|b| b.id != self.node_id());
        if !self.config.cluster.controlled_shutdown || !others {
            // Alone, there is nobody to hand leadership to.
            return;
        }
        self.shutting_down.store(true, Ordering::Release);
        // Bounded: when the whole cluster stops at once the quorum goes away mid-way, and a
        // stop must not hang on it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let mut failures = 0;
        while tokio::time::Instant::now() < deadline && failures < 3 {
            let hb = Heartbeat {
                broker: self.node_id(),
                incarnation: self.catalog.incarnation,
                applied: *self.reconciled.borrow(),
                shutting_down: true,
            };
            let sent =
                tokio::time::timeout(Duration::from_secs(2), self.quorum.heartbeat(hb)).await;
            match sent {
                Ok(Ok(r)) if r.fenced => break,
                Ok(Ok(_)) => {}
                _ => failures += 1,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Wait until no partition this node leads has an in-sync successor left to take over.
        let me = self.node_id();
        let leads = |b: &Self| {
            let image = b.quorum.image();
            b.catalog.partitions().iter().any(|p| {
                let st = p.state();
                st.leader == me && st.isr.iter().any(|r| *r != me && image.is_live(*r))
            })
        };
        while leads(self) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::info!("controlled shutdown complete");
    }

    /// ISR shrink (Kafka's `maybeShrinkIsr`): followers that have not caught up within
    /// `replica.lag.time.max.ms` leave the ISR of the partitions this node leads.
    pub(crate) fn shrink_lagging_isrs(self: &Arc<Self>) {
        for p in self.catalog.partitions() {
            if let Some(isr) = p.lagging() {
                self.alter_isr(&p, isr);
            }
        }
    }

    /// Proposes a new ISR for a partition this node leads (AlterPartition), one at a time.
    pub(crate) fn alter_isr(self: &Arc<Self>, p: &Arc<Partition>, isr: Vec<i32>) {
        let st = p.state();
        // KIP-841: only a registered, unfenced broker may join. The controller refuses the
        // others anyway, but a fenced follower that keeps fetching would otherwise turn every
        // fetch into a refused proposal in the metadata log (thousands a second).
        let image = self.quorum.image();
        if let Some(b) = isr
            .iter()
            .find(|b| !st.isr.contains(b) && image.brokers.get(b).is_none_or(|r| r.fenced))
        {
            tracing::debug!(topic = %p.topic, partition = p.index, broker = b, "not adding a fenced broker to the ISR");
            return;
        }
        drop(image);
        if !p.try_begin_alter() {
            return;
        }
        if isr.len() < st.isr.len() {
            tracing::warn!(topic = %p.topic, partition = p.index, from = ?st.isr, to = ?isr, "shrinking ISR: followers fell behind");
        } else {
            tracing::info!(topic = %p.topic, partition = p.index, from = ?st.isr, to = ?isr, "follower caught up: expanding ISR");
        }
        p.alter_started(&isr);
        let cmd = Command::AlterPartition {
            topic: p.topic.clone(),
            partition: p.index,
            leader: self.node_id(),
            leader_epoch: st.leader_epoch,
            partition_epoch: st.partition_epoch,
            isr: isr.clone(),
        };
        let (this, p) = (self.clone(), p.clone());
        tokio::spawn(async move {
            match this.quorum.propose(cmd).await {
                Ok((offset, Outcome::Partition(new))) => {
                    tracing::info!(topic = %p.topic, partition = p.index, from = ?st.isr, to = ?new.isr, "ISR changed");
                    crate::observe::isr_changed(st.isr.len(), new.isr.len());
                    this.wait_reconciled(offset, Duration::from_secs(5)).await;
                }
                Ok((_, other)) => {
                    tracing::debug!(topic = %p.topic, partition = p.index, outcome = ?other, "ISR change refused");
                    p.alter_refused(ALTER_RETRY_BACKOFF).await;
                }
                Err(e) => {
                    tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "ISR change failed");
                    p.alter_refused(ALTER_RETRY_BACKOFF).await;
                }
            }
            p.alter_done();
        });
    }
}
