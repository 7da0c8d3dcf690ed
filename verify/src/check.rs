//! The checker: reads a [`history`](crate::history) and counts every anomaly class a
//! Jepsen-style queue checker looks for in a Kafka-like system, holding each send to its own
//! delivery contract ([`Mode`]).
//!
//! Everything is kept per partition (topic, partition). One pass indexes the history (which
//! send produced each value, where each value was read, what each log slot was seen holding,
//! the final read of each partition); one function per anomaly family then walks that index or
//! the history in file order. Nothing scans the whole history per event, so a history of a
//! few million events checks in seconds.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::{self, Write as _};
use std::hash::Hash;

use serde::ser::{Serialize, SerializeStruct, Serializer};

use crate::history::{Event, Millis, Mode, Phase, ReaderKind, SendOutcome, Writer};

/// A partition, the unit every check works in.
type Tp<'a> = (&'a str, i32);
/// One slot of a partition's log.
type Loc<'a> = (Tp<'a>, i64);

/// `allowed` key: an `acks=1` write acknowledged and then never read (its leader died before a
/// follower copied it).
pub const ACKS1_LOST: &str = "acks=1 writes lost";
/// `allowed` key: a value of a non-idempotent producer (`All`, `One`) read at two offsets
/// (a retried send that had in fact succeeded).
pub const DUPLICATES_WITHOUT_IDEMPOTENCE: &str = "duplicates without idempotence";
/// `allowed` key: an `acks=1` acknowledgement whose offset was later read holding another
/// value (the acked write was truncated and the offset reused).
pub const ACKS1_REUSED: &str = "acks=1 offsets reused";

/// One class of anomaly; see each variant for what counts as one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Anomaly {
    /// An acknowledged durable write (`IdempotentAll`, `All`, `Transactional`) read nowhere,
    /// although the final read (or, without one, a later poll) covers its offset.
    LostWrite,
    /// An acknowledged durable write read nowhere and not covered by any read: it may be lost
    /// or the reads stopped short of it.
    Unseen,
    /// A value of an idempotent or transactional producer read at two or more offsets.
    Duplicate,
    /// One log slot seen holding two values, or a durable write acked at one offset and read
    /// only at others.
    InconsistentOffsets,
    /// An idempotent or transactional producer's acked offsets out of its send order.
    NonmonotonicSend,
    /// A reader read an offset at or below the one it read before on that partition.
    NonmonotonicPoll,
    /// A reader jumped over an offset known to hold a record.
    PollSkip,
    /// A polled record missing from the final read that should contain it.
    ReadVanished,
    /// A high watermark lower than one reported (or implied by a read) earlier.
    HwBackwards,
    /// A log start lower than one reported earlier.
    LogStartBackwards,
    /// Replicas of one partition that disagree with each other or with the final read.
    ReplicaDivergence,
    /// One generation of a group giving a partition to two members.
    GroupTwoOwners,
    /// A consumer's generation not increasing, or one member assigned twice in a generation.
    GenerationReused,
    /// A member started a partition below an offset the group committed before its
    /// generation began.
    CommittedOffsetBackwards,
    /// A commit from an old generation accepted after a newer generation began.
    FencedCommitAccepted,
    /// A value of an aborted transaction was read.
    AbortedRead,
    /// A value read that no send produced.
    Phantom,
}

impl Anomaly {
    /// Every class, in the order reports list them.
    pub const ALL: [Anomaly; 17] = [
        Anomaly::LostWrite,
        Anomaly::Unseen,
        Anomaly::Duplicate,
        Anomaly::InconsistentOffsets,
        Anomaly::NonmonotonicSend,
        Anomaly::NonmonotonicPoll,
        Anomaly::PollSkip,
        Anomaly::ReadVanished,
        Anomaly::HwBackwards,
        Anomaly::LogStartBackwards,
        Anomaly::ReplicaDivergence,
        Anomaly::GroupTwoOwners,
        Anomaly::GenerationReused,
        Anomaly::CommittedOffsetBackwards,
        Anomaly::FencedCommitAccepted,
        Anomaly::AbortedRead,
        Anomaly::Phantom,
    ];

    /// The class's kebab-case name, as reports and JSON spell it.
    pub fn name(&self) -> &'static str {
        match self {
            Anomaly::LostWrite => "lost-write",
            Anomaly::Unseen => "unseen",
            Anomaly::Duplicate => "duplicate",
            Anomaly::InconsistentOffsets => "inconsistent-offsets",
            Anomaly::NonmonotonicSend => "nonmonotonic-send",
            Anomaly::NonmonotonicPoll => "nonmonotonic-poll",
            Anomaly::PollSkip => "poll-skip",
            Anomaly::ReadVanished => "read-vanished",
            Anomaly::HwBackwards => "hw-backwards",
            Anomaly::LogStartBackwards => "log-start-backwards",
            Anomaly::ReplicaDivergence => "replica-divergence",
            Anomaly::GroupTwoOwners => "group-two-owners",
            Anomaly::GenerationReused => "generation-reused",
            Anomaly::CommittedOffsetBackwards => "committed-offset-backwards",
            Anomaly::FencedCommitAccepted => "fenced-commit-accepted",
            Anomaly::AbortedRead => "aborted-read",
            Anomaly::Phantom => "phantom",
        }
    }
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Serialised as its name, so maps keyed by class become JSON objects with string keys.
impl Serialize for Anomaly {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// What the history holds, for context next to the anomaly counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Events in the history.
    pub events: usize,
    /// Sends by mode, then by outcome (`"idempotent_all" -> "ok" -> n`).
    pub sends: BTreeMap<&'static str, BTreeMap<&'static str, usize>>,
    /// Records delivered by polls, re-reads included.
    pub records_read: usize,
    /// Distinct values delivered by polls.
    pub distinct_values_read: usize,
    /// Records in the final reads.
    pub final_records: usize,
    /// Replica events checked.
    pub replicas_checked: usize,
    /// Fault windows opened (nemesis `Start` events), by fault name.
    pub faults: BTreeMap<String, usize>,
    /// From the earliest to the latest time the history mentions.
    pub duration_ms: Millis,
}

/// The checker's verdict: a count and a first example per anomaly class, plus context.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Anomalies per class; [`check`] lists every class, zeros included.
    pub counts: BTreeMap<Anomaly, usize>,
    /// The first anomaly found of each class, naming values, offsets, partitions and times.
    pub examples: BTreeMap<Anomaly, String>,
    /// What the history held.
    pub stats: Stats,
    /// Things legal under a weaker contract than the strongest (acks=1 losses, duplicates
    /// without idempotence), counted for information.
    pub allowed: BTreeMap<&'static str, usize>,
}

impl Report {
    /// No anomaly of any class.
    pub fn ok(&self) -> bool {
        self.counts.values().all(|&n| n == 0)
    }

    /// The count of one class (0 when absent).
    pub fn count(&self, a: Anomaly) -> usize {
        self.counts.get(&a).copied().unwrap_or(0)
    }

    /// A summary table: every class with its count and first example, then stats and the
    /// allowed counts.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let verdict = if self.ok() { "OK" } else { "ANOMALIES FOUND" };
        let _ = writeln!(out, "verdict: {verdict}");
        let _ = writeln!(out, "{:<26} {:>8}  first example", "anomaly", "count");
        for a in Anomaly::ALL {
            let example = self.examples.get(&a).map_or("-", String::as_str);
            let _ = writeln!(out, "{:<26} {:>8}  {example}", a.name(), self.count(a));
        }
        let s = &self.stats;
        let sends: Vec<String> = s
            .sends
            .iter()
            .map(|(mode, by)| {
                let outcomes: Vec<String> = by.iter().map(|(o, n)| format!("{o}={n}")).collect();
                format!("{mode} {}", outcomes.join(" "))
            })
            .collect();
        let _ = writeln!(out, "sends: {}", none_if_empty(&sends.join("; ")));
        let _ = writeln!(
            out,
            "reads: {} records polled, {} distinct values; final reads: {} records; replicas checked: {}",
            s.records_read, s.distinct_values_read, s.final_records, s.replicas_checked
        );
        let faults: Vec<String> = s.faults.iter().map(|(f, n)| format!("{f}={n}")).collect();
        let _ = writeln!(out, "faults: {}", none_if_empty(&faults.join(", ")));
        let _ = writeln!(
            out,
            "duration: {} ms over {} events",
            s.duration_ms, s.events
        );
        let allowed: Vec<String> = self
            .allowed
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        let _ = writeln!(out, "allowed: {}", none_if_empty(&allowed.join(", ")));
        out
    }

    /// Counts one anomaly; the example is built only for the first of its class.
    fn hit(&mut self, a: Anomaly, example: impl FnOnce() -> String) {
        *self.counts.entry(a).or_default() += 1;
        self.examples.entry(a).or_insert_with(example);
    }

    /// Counts one thing legal under a weaker contract.
    fn allow(&mut self, what: &'static str) {
        *self.allowed.entry(what).or_default() += 1;
    }
}

fn none_if_empty(s: &str) -> &str {
    if s.is_empty() {
        "none"
    } else {
        s
    }
}

/// JSON: `{"ok", "counts", "examples", "stats", "allowed"}`, classes keyed by name.
impl Serialize for Report {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Report", 5)?;
        st.serialize_field("ok", &self.ok())?;
        st.serialize_field("counts", &self.counts)?;
        st.serialize_field("examples", &self.examples)?;
        st.serialize_field("stats", &self.stats)?;
        st.serialize_field("allowed", &self.allowed)?;
        st.end()
    }
}

/// Checks a whole history.
pub fn check(events: &[Event]) -> Report {
    let ix = Index::build(events);
    let mut r = Report {
        counts: Anomaly::ALL.iter().map(|&a| (a, 0)).collect(),
        allowed: [ACKS1_LOST, DUPLICATES_WITHOUT_IDEMPOTENCE, ACKS1_REUSED]
            .into_iter()
            .map(|k| (k, 0))
            .collect(),
        stats: stats(events, &ix),
        ..Report::default()
    };
    acked_writes(&ix, &mut r);
    read_values(&ix, &mut r);
    slot_conflicts(&ix, &mut r);
    send_order(&ix, &mut r);
    poll_order(&ix, &mut r);
    vanished_reads(&ix, &mut r);
    watermarks(&ix, &mut r);
    replicas(&ix, &mut r);
    assignments(events, &mut r);
    committed_offsets(events, &mut r);
    fenced_commits(events, &mut r);
    r
}

// ---------------------------------------------------------------------------------------------
// The index

/// A send, as the one operation that produced its value.
struct Send<'a> {
    ev: usize,
    producer: &'a str,
    mode: Mode,
    outcome: SendOutcome,
    tp: Tp<'a>,
    offset: Option<i64>,
    invoked_ms: Millis,
    t_ms: Millis,
}

/// Where one value was read: its distinct locations, each with the first event that saw it
/// there. Nearly every value is read at one location, so the rest lives in a rarely
/// allocated vector.
struct Seen<'a> {
    first: (Loc<'a>, usize),
    more: Vec<(Loc<'a>, usize)>,
    /// A poll (not only the final read or a replica) delivered it.
    polled: bool,
}

impl<'a> Seen<'a> {
    fn locs(&self) -> impl Iterator<Item = &(Loc<'a>, usize)> {
        std::iter::once(&self.first).chain(self.more.iter())
    }

    fn holds(&self, loc: Loc<'a>) -> bool {
        self.locs().any(|(l, _)| *l == loc)
    }
}

/// What one log slot was first seen holding, by a read or a durable ack.
struct Slot<'a> {
    value: &'a str,
    ev: usize,
    /// Already counted as holding two values (count each slot once).
    conflicted: bool,
    /// Already in `Index::known` (a read saw a non-aborted record here).
    known: bool,
}

/// A slot seen holding two values: the first observation and the first that disagreed.
struct Conflict<'a> {
    loc: Loc<'a>,
    first: (&'a str, usize),
    other: (&'a str, usize),
}

/// A partition's final read.
struct FinalRead<'a> {
    t_ms: Millis,
    log_start: i64,
    high_watermark: i64,
    records: HashMap<i64, &'a str>,
}

impl FinalRead<'_> {
    fn covers(&self, o: i64) -> bool {
        self.log_start <= o && o < self.high_watermark
    }
}

struct Index<'a> {
    events: &'a [Event],
    /// Value -> the send that produced it.
    sends: HashMap<&'a str, Send<'a>>,
    /// Sent values in history order, so anomalies are reported deterministically.
    send_order: Vec<&'a str>,
    /// Value -> where reads (polls, final reads, replicas) saw it.
    seen: HashMap<&'a str, Seen<'a>>,
    /// Read values in order of first reading.
    seen_order: Vec<&'a str>,
    /// Slot -> its first observation (reads, and acks of modes other than `One`).
    slots: HashMap<Loc<'a>, Slot<'a>>,
    conflicts: Vec<Conflict<'a>>,
    /// Partition -> its last final read.
    finals: HashMap<Tp<'a>, FinalRead<'a>>,
    /// Partition -> the highest offset any poll read.
    poll_max: HashMap<Tp<'a>, i64>,
    /// Partition -> offsets known to hold a (non-aborted) record, sorted, for skip queries.
    known: HashMap<Tp<'a>, Vec<i64>>,
    /// Partition -> the batch producers a replica's files name (the first replica with any).
    writers: HashMap<Tp<'a>, &'a [Writer]>,
}

/// Calls `f` for every record an event read: polls, final reads and replicas.
fn for_each_read<'a>(e: &'a Event, mut f: impl FnMut(Loc<'a>, &'a str)) {
    match e {
        Event::Poll { topic, records, .. } => {
            for r in records {
                f(((topic.as_str(), r.partition), r.offset), r.value.as_str());
            }
        }
        Event::Final {
            topic,
            partition,
            records,
            ..
        }
        | Event::Replica {
            topic,
            partition,
            records,
            ..
        } => {
            for (o, v) in records {
                f(((topic.as_str(), *partition), *o), v.as_str());
            }
        }
        _ => {}
    }
}

impl<'a> Index<'a> {
    fn build(events: &'a [Event]) -> Self {
        let mut ix = Index {
            events,
            sends: HashMap::new(),
            send_order: Vec::new(),
            seen: HashMap::new(),
            seen_order: Vec::new(),
            slots: HashMap::new(),
            conflicts: Vec::new(),
            finals: HashMap::new(),
            poll_max: HashMap::new(),
            known: HashMap::new(),
            writers: HashMap::new(),
        };
        // Sends first: observing reads needs to know which values were aborted.
        for (ev, e) in events.iter().enumerate() {
            if let Event::Send {
                invoked_ms,
                t_ms,
                producer,
                mode,
                topic,
                partition,
                value,
                outcome,
                offset,
                ..
            } = e
            {
                let s = Send {
                    ev,
                    producer,
                    mode: *mode,
                    outcome: *outcome,
                    tp: (topic, *partition),
                    offset: *offset,
                    invoked_ms: *invoked_ms,
                    t_ms: *t_ms,
                };
                // Values are unique; should a send be recorded twice, its acknowledgement wins.
                match ix.sends.entry(value) {
                    Entry::Vacant(v) => {
                        ix.send_order.push(value);
                        v.insert(s);
                    }
                    Entry::Occupied(mut o) => {
                        if o.get().outcome != SendOutcome::Ok && s.outcome == SendOutcome::Ok {
                            o.insert(s);
                        }
                    }
                }
            }
        }
        for e in events {
            if let Event::Replica {
                topic,
                partition,
                writers,
                ..
            } = e
            {
                if !writers.is_empty() {
                    ix.writers.entry((topic, *partition)).or_insert(writers);
                }
            }
        }
        for (ev, e) in events.iter().enumerate() {
            match e {
                Event::Send {
                    mode,
                    topic,
                    partition,
                    value,
                    outcome: SendOutcome::Ok,
                    offset: Some(o),
                    ..
                } if *mode != Mode::One => {
                    // A durable ack is an observation of its slot; an acks=1 ack is not (its
                    // offset may legally be truncated and reused).
                    ix.observe(((topic, *partition), *o), value, ev, false);
                }
                Event::Final {
                    t_ms,
                    topic,
                    partition,
                    log_start,
                    high_watermark,
                    records,
                } => {
                    let f = FinalRead {
                        t_ms: *t_ms,
                        log_start: *log_start,
                        high_watermark: *high_watermark,
                        records: records.iter().map(|(o, v)| (*o, v.as_str())).collect(),
                    };
                    ix.finals.insert((topic, *partition), f);
                }
                _ => {}
            }
            let polled = matches!(e, Event::Poll { .. });
            for_each_read(e, |loc, value| {
                ix.observe(loc, value, ev, true);
                ix.note_read(loc, value, ev, polled);
                if polled {
                    let m = ix.poll_max.entry(loc.0).or_insert(loc.1);
                    *m = (*m).max(loc.1);
                }
            });
        }
        for offsets in ix.known.values_mut() {
            offsets.sort_unstable();
        }
        ix
    }

    /// Records one observation of a slot; a second, different value is a conflict.
    fn observe(&mut self, loc: Loc<'a>, value: &'a str, ev: usize, read: bool) {
        let aborted = self.aborted(value);
        let slot = self.slots.entry(loc).or_insert(Slot {
            value,
            ev,
            conflicted: false,
            known: false,
        });
        if slot.value != value && !slot.conflicted {
            slot.conflicted = true;
            self.conflicts.push(Conflict {
                loc,
                first: (slot.value, slot.ev),
                other: (value, ev),
            });
        }
        // Aborted records are skipped legitimately by read_committed readers, so they do not
        // make a jump over their offset a skip.
        if read && !slot.known && !aborted {
            slot.known = true;
            self.known.entry(loc.0).or_default().push(loc.1);
        }
    }

    /// Records where a value was read.
    fn note_read(&mut self, loc: Loc<'a>, value: &'a str, ev: usize, polled: bool) {
        match self.seen.entry(value) {
            Entry::Vacant(v) => {
                self.seen_order.push(value);
                v.insert(Seen {
                    first: (loc, ev),
                    more: Vec::new(),
                    polled,
                });
            }
            Entry::Occupied(mut o) => {
                let s = o.get_mut();
                s.polled |= polled;
                if !s.holds(loc) {
                    s.more.push((loc, ev));
                }
            }
        }
    }

    fn aborted(&self, value: &str) -> bool {
        self.sends
            .get(value)
            .is_some_and(|s| s.outcome == SendOutcome::Aborted)
    }

    /// Some known record at an offset in `[from, to)`, if any.
    fn known_in(&self, tp: Tp<'a>, from: i64, to: i64) -> Option<i64> {
        let offsets = self.known.get(&tp)?;
        let i = offsets.partition_point(|&o| o < from);
        offsets.get(i).copied().filter(|&o| o < to)
    }

    /// Says who saw something, for examples.
    fn source(&self, ev: usize) -> String {
        match self.events.get(ev) {
            Some(Event::Poll { consumer, t_ms, .. }) => format!("poll by {consumer} at {t_ms}ms"),
            Some(Event::Final { t_ms, .. }) => format!("final read at {t_ms}ms"),
            Some(Event::Replica { node, t_ms, .. }) => {
                format!("replica on node {node} at {t_ms}ms")
            }
            Some(Event::Send { producer, t_ms, .. }) => format!("ack to {producer} at {t_ms}ms"),
            Some(e) => format!("event {ev} at {}ms", e.t_ms()),
            None => format!("event {ev}"),
        }
    }
}

impl Index<'_> {
    /// "producer P epoch E seq S" for the stored batch holding `loc`, when the files say.
    fn writer(&self, (tp, o): Loc<'_>) -> Option<(i64, i16, i64)> {
        let ws = self.writers.get(&tp)?;
        let i = ws.partition_point(|w| w.last_offset < o);
        let w = ws.get(i).filter(|w| w.base_offset <= o)?;
        Some((w.producer_id, w.producer_epoch, w.sequence_at(o)))
    }
}

fn place(tp: Tp<'_>, o: i64) -> String {
    format!("{}/{} offset {o}", tp.0, tp.1)
}

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::IdempotentAll => "idempotent_all",
        Mode::All => "all",
        Mode::One => "one",
        Mode::Transactional => "transactional",
    }
}

fn outcome_name(o: SendOutcome) -> &'static str {
    match o {
        SendOutcome::Ok => "ok",
        SendOutcome::Fail => "fail",
        SendOutcome::Unknown => "unknown",
        SendOutcome::Aborted => "aborted",
    }
}

/// Groups values by key, keeping keys in order of first appearance so reports are
/// deterministic.
struct Groups<K, V> {
    index: HashMap<K, usize>,
    groups: Vec<(K, Vec<V>)>,
}

impl<K: Hash + Eq + Clone, V> Groups<K, V> {
    fn new() -> Self {
        Groups {
            index: HashMap::new(),
            groups: Vec::new(),
        }
    }

    fn push(&mut self, key: K, v: V) {
        let i = *self.index.entry(key.clone()).or_insert_with(|| {
            self.groups.push((key, Vec::new()));
            self.groups.len() - 1
        });
        if let Some((_, g)) = self.groups.get_mut(i) {
            g.push(v);
        }
    }
}

fn stats(events: &[Event], ix: &Index<'_>) -> Stats {
    let mut s = Stats {
        events: events.len(),
        distinct_values_read: ix.seen.values().filter(|v| v.polled).count(),
        ..Stats::default()
    };
    let (mut first, mut last) = (Millis::MAX, 0);
    for e in events {
        let t = e.t_ms();
        first = first.min(t);
        last = last.max(t);
        match e {
            Event::Send {
                mode,
                outcome,
                invoked_ms,
                ..
            } => {
                first = first.min(*invoked_ms);
                let by_outcome = s.sends.entry(mode_name(*mode)).or_default();
                *by_outcome.entry(outcome_name(*outcome)).or_default() += 1;
            }
            Event::Commit { invoked_ms, .. } => first = first.min(*invoked_ms),
            Event::Poll { records, .. } => s.records_read += records.len(),
            Event::Final { records, .. } => s.final_records += records.len(),
            Event::Replica { .. } => s.replicas_checked += 1,
            Event::Nemesis {
                fault,
                phase: Phase::Start,
                ..
            } => *s.faults.entry(fault.clone()).or_default() += 1,
            _ => {}
        }
    }
    s.duration_ms = last.saturating_sub(first);
    s
}

// ---------------------------------------------------------------------------------------------
// Acknowledged writes: lost-write, unseen, inconsistent-offsets (acked here, read there)

/// Every acknowledged send is held to its mode's contract: durable acks must be read, and at
/// the offset they were acked at; acks=1 losses are only counted.
fn acked_writes(ix: &Index<'_>, r: &mut Report) {
    for value in &ix.send_order {
        let Some(s) = ix.sends.get(value) else {
            continue;
        };
        if s.outcome != SendOutcome::Ok {
            continue;
        }
        let seen = ix.seen.get(value);
        if s.mode == Mode::One {
            if seen.is_none() {
                r.allow(ACKS1_LOST);
            }
            // Its slot later held another value: truncated and reused, legal for acks=1.
            let reused = s.offset.and_then(|o| ix.slots.get(&(s.tp, o)));
            if reused.is_some_and(|slot| slot.value != *value) {
                r.allow(ACKS1_REUSED);
            }
            continue;
        }
        let Some(seen) = seen else {
            match coverage(ix, s) {
                Some((o, why)) => r.hit(Anomaly::LostWrite, || {
                    format!(
                        "{value} ({}) acked to {} at {}ms at {} was never read, though {why}",
                        mode_name(s.mode),
                        s.producer,
                        s.t_ms,
                        place(s.tp, o),
                    )
                }),
                None => r.hit(Anomaly::Unseen, || {
                    let at = s.offset.map_or_else(|| "no offset".into(), |o| place(s.tp, o));
                    format!(
                        "{value} ({}) acked to {} at {}ms at {at} was never read, and no read covers it",
                        mode_name(s.mode),
                        s.producer,
                        s.t_ms,
                    )
                }),
            }
            continue;
        };
        if let Some(o) = s.offset {
            if !seen.holds((s.tp, o)) {
                r.hit(Anomaly::InconsistentOffsets, || {
                    let ((tp, at), ev) = seen.first;
                    format!(
                        "{value} acked to {} at {}ms at {} but read only elsewhere, e.g. {} ({})",
                        s.producer,
                        s.t_ms,
                        place(s.tp, o),
                        place(tp, at),
                        ix.source(ev),
                    )
                });
            }
        }
    }
}

/// Why an unread ack's offset should have been read: the final read covers it, or (with no
/// final read of its partition) a poll read past it; with the offset. `None` when nothing
/// covers it.
fn coverage(ix: &Index<'_>, s: &Send<'_>) -> Option<(i64, String)> {
    let o = s.offset?;
    let why = match ix.finals.get(&s.tp) {
        Some(f) if f.covers(o) => Some(format!(
            "the final read at {}ms covers [{}, {})",
            f.t_ms, f.log_start, f.high_watermark
        )),
        Some(_) => None,
        None => ix
            .poll_max
            .get(&s.tp)
            .filter(|&&m| m > o)
            .map(|m| format!("polls read up to offset {m}")),
    }?;
    Some((o, why))
}

// ---------------------------------------------------------------------------------------------
// Read values: duplicate, aborted-read, phantom

/// Every value read is traced back to its send: it must exist, not be aborted, and (for
/// idempotent and transactional producers) sit at one offset only.
fn read_values(ix: &Index<'_>, r: &mut Report) {
    for value in &ix.seen_order {
        let Some(seen) = ix.seen.get(value) else {
            continue;
        };
        let ((tp, o), ev) = seen.first;
        let Some(s) = ix.sends.get(value) else {
            r.hit(Anomaly::Phantom, || {
                format!(
                    "{value} read at {} ({}) was never sent",
                    place(tp, o),
                    ix.source(ev)
                )
            });
            continue;
        };
        if s.outcome == SendOutcome::Aborted {
            r.hit(Anomaly::AbortedRead, || {
                format!(
                    "{value}, aborted by {} at {}ms, read at {} ({})",
                    s.producer,
                    s.t_ms,
                    place(tp, o),
                    ix.source(ev)
                )
            });
        }
        if seen.more.is_empty() {
            continue;
        }
        match s.mode {
            Mode::IdempotentAll | Mode::Transactional => r.hit(Anomaly::Duplicate, || {
                let at: Vec<String> = seen
                    .locs()
                    .map(|((tp, o), ev)| format!("{} ({})", place(*tp, *o), ix.source(*ev)))
                    .collect();
                let mut example = format!(
                    "{value} ({}) read at {} offsets: {}",
                    mode_name(s.mode),
                    at.len(),
                    at.join(", ")
                );
                // Where the stored batches say who wrote each copy: one producer epoch means
                // the broker failed to drop a retry; two mean the client sent it again after
                // bumping its epoch (which no broker can recognise).
                let mut writers: Vec<(i64, i16, i64)> =
                    seen.locs().filter_map(|(loc, _)| ix.writer(*loc)).collect();
                writers.dedup();
                if !writers.is_empty() {
                    let named: Vec<String> = writers
                        .iter()
                        .map(|(p, e, q)| format!("producer {p} epoch {e} seq {q}"))
                        .collect();
                    let epochs: BTreeSet<(i64, i16)> =
                        writers.iter().map(|&(p, e, _)| (p, e)).collect();
                    let verdict = if epochs.len() > 1 {
                        "re-sent by the client under a new producer epoch"
                    } else {
                        "one producer epoch: a retry the broker did not drop"
                    };
                    let _ = write!(example, "; stored as {} ({verdict})", named.join(", "));
                }
                example
            }),
            Mode::All | Mode::One => r.allow(DUPLICATES_WITHOUT_IDEMPOTENCE),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Slot conflicts: inconsistent-offsets (one slot, two values)

/// A log slot is written once: every read and every durable ack of it must agree.
fn slot_conflicts(ix: &Index<'_>, r: &mut Report) {
    for c in &ix.conflicts {
        r.hit(Anomaly::InconsistentOffsets, || {
            let (tp, o) = c.loc;
            format!(
                "{} held {} ({}) and {} ({})",
                place(tp, o),
                c.first.0,
                ix.source(c.first.1),
                c.other.0,
                ix.source(c.other.1)
            )
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Send order: nonmonotonic-send

/// The sequence number in `<producer>-<n>`.
fn sequence(value: &str) -> Option<u64> {
    value.rsplit_once('-')?.1.parse().ok()
}

/// An idempotent (or transactional) producer's writes land in each partition in send order.
fn send_order(ix: &Index<'_>, r: &mut Report) {
    let mut by_producer: Groups<(&str, Tp<'_>), (u64, usize, i64, &str)> = Groups::new();
    for value in &ix.send_order {
        let Some(s) = ix.sends.get(value) else {
            continue;
        };
        let (Some(o), SendOutcome::Ok, Mode::IdempotentAll | Mode::Transactional) =
            (s.offset, s.outcome, s.mode)
        else {
            continue;
        };
        let seq = sequence(value).unwrap_or(s.invoked_ms);
        by_producer.push((s.producer, s.tp), (seq, s.ev, o, *value));
    }
    for ((producer, tp), mut sends) in by_producer.groups {
        sends.sort_unstable();
        for pair in sends.windows(2) {
            let [(_, _, o1, v1), (_, _, o2, v2)] = pair else {
                continue;
            };
            if o2 <= o1 {
                r.hit(Anomaly::NonmonotonicSend, || {
                    format!(
                        "{producer} on {}/{}: {v1} acked at offset {o1} but the later {v2} at offset {o2}",
                        tp.0, tp.1
                    )
                });
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Poll order: nonmonotonic-poll, poll-skip

/// One reader's position on one partition.
#[derive(Default)]
struct Cursor<'a> {
    /// The offset it read last, and the poll that read it; `None` after a reset.
    prev: Option<(i64, usize)>,
    /// Where a seek put it, until the next read.
    seek: Option<i64>,
    /// Group readers: the (member, generation) of its last poll; a change resets `prev`.
    context: Option<(Option<&'a str>, Option<i32>)>,
}

/// Each reader reads each partition forward, one record after the other: never at or below
/// its previous offset, never over a record known to exist. Seeks, new positions and new
/// group generations start over.
fn poll_order(ix: &Index<'_>, r: &mut Report) {
    let mut cursors: HashMap<(&str, Tp<'_>), Cursor<'_>> = HashMap::new();
    for (ev, e) in ix.events.iter().enumerate() {
        match e {
            Event::Seek {
                consumer,
                topic,
                partition,
                offset,
                ..
            } => {
                let c = cursors.entry((consumer, (topic, *partition))).or_default();
                c.prev = None;
                c.seek = Some(*offset);
            }
            Event::Position {
                consumer,
                topic,
                partition,
                ..
            } => {
                let c = cursors.entry((consumer, (topic, *partition))).or_default();
                c.prev = None;
                c.seek = None;
            }
            Event::Poll {
                consumer,
                kind,
                topic,
                member,
                generation,
                records,
                t_ms,
            } => {
                let context =
                    (*kind == ReaderKind::Group).then_some((member.as_deref(), *generation));
                for rec in records {
                    let tp = (topic.as_str(), rec.partition);
                    let c = cursors.entry((consumer, tp)).or_default();
                    if context.is_some() && c.context != context {
                        // A new generation may start anywhere.
                        if c.context.is_some() {
                            c.prev = None;
                            c.seek = None;
                        }
                        c.context = context;
                    }
                    let o = rec.offset;
                    let v = &rec.value;
                    match (c.prev, c.seek) {
                        (Some((p, pev)), _) if o <= p => r.hit(Anomaly::NonmonotonicPoll, || {
                            format!(
                                "{consumer} read {v} at {} at {t_ms}ms after reading offset {p} ({})",
                                place(tp, o),
                                ix.source(pev)
                            )
                        }),
                        (Some((p, pev)), _) => {
                            if let Some(k) = ix.known_in(tp, p + 1, o) {
                                r.hit(Anomaly::PollSkip, || {
                                    format!(
                                        "{consumer} read {} ({}) then {v} at offset {o} at {t_ms}ms, skipping the record known at offset {k}",
                                        place(tp, p),
                                        ix.source(pev)
                                    )
                                });
                            }
                        }
                        (None, Some(x)) => {
                            if let Some(k) = ix.known_in(tp, x, o) {
                                r.hit(Anomaly::PollSkip, || {
                                    format!(
                                        "{consumer} seeked to {} then read {v} at offset {o} at {t_ms}ms, skipping the record known at offset {k}",
                                        place(tp, x),
                                    )
                                });
                            }
                        }
                        (None, None) => {}
                    }
                    c.prev = Some((o, ev));
                    c.seek = None;
                }
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Vanished reads: read-vanished

/// A record a poll delivered was committed; the final read must still hold it (unless
/// retention removed it: offsets below the final log start).
fn vanished_reads(ix: &Index<'_>, r: &mut Report) {
    let mut counted: HashSet<(Loc<'_>, &str)> = HashSet::new();
    for (ev, e) in ix.events.iter().enumerate() {
        let Event::Poll { .. } = e else {
            continue;
        };
        for_each_read(e, |(tp, o), v| {
            let Some(f) = ix.finals.get(&tp) else {
                return;
            };
            let why = if o >= f.high_watermark {
                format!("the final high watermark is {}", f.high_watermark)
            } else if o >= f.log_start && !f.records.contains_key(&o) {
                format!(
                    "the final read covers [{}, {}) yet holds nothing there",
                    f.log_start, f.high_watermark
                )
            } else {
                // Retained and still there, removed by retention, or replaced by another
                // value (that is inconsistent-offsets).
                return;
            };
            if counted.insert(((tp, o), v)) {
                r.hit(Anomaly::ReadVanished, || {
                    format!(
                        "{v} read at {} ({}) is gone from the final read at {}ms: {why}",
                        place(tp, o),
                        ix.source(ev),
                        ix.finals.get(&tp).map_or(0, |f| f.t_ms)
                    )
                });
            }
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Watermarks: hw-backwards, log-start-backwards

/// What one point of a partition's timeline says about its watermarks.
enum Mark {
    Reported {
        node: i32,
        log_start: i64,
        high_watermark: i64,
    },
    Final {
        log_start: i64,
        high_watermark: i64,
    },
    /// The highest offset one poll read: the high watermark was above it.
    Read(i64),
}

/// Per partition, in time order, the high watermark and the log start only move forward, and
/// a watermark reported after a read is above the offset read.
fn watermarks(ix: &Index<'_>, r: &mut Report) {
    let mut timeline: Groups<Tp<'_>, (Millis, usize, Mark)> = Groups::new();
    for (ev, e) in ix.events.iter().enumerate() {
        match e {
            Event::Watermarks {
                t_ms,
                topic,
                partition,
                node,
                log_start,
                high_watermark,
            } => timeline.push(
                (topic, *partition),
                (
                    *t_ms,
                    ev,
                    Mark::Reported {
                        node: *node,
                        log_start: *log_start,
                        high_watermark: *high_watermark,
                    },
                ),
            ),
            Event::Final {
                t_ms,
                topic,
                partition,
                log_start,
                high_watermark,
                ..
            } => timeline.push(
                (topic, *partition),
                (
                    *t_ms,
                    ev,
                    Mark::Final {
                        log_start: *log_start,
                        high_watermark: *high_watermark,
                    },
                ),
            ),
            Event::Poll {
                t_ms,
                topic,
                records,
                ..
            } => {
                // One point per partition the poll read: its highest offset there.
                let mut highest: Vec<(i32, i64)> = Vec::new();
                for rec in records {
                    match highest.iter_mut().find(|(p, _)| *p == rec.partition) {
                        Some((_, o)) => *o = (*o).max(rec.offset),
                        None => highest.push((rec.partition, rec.offset)),
                    }
                }
                for (p, o) in highest {
                    timeline.push((topic, p), (*t_ms, ev, Mark::Read(o)));
                }
            }
            _ => {}
        }
    }
    for (tp, mut points) in timeline.groups {
        // Time order, history order within one millisecond.
        points.sort_by_key(|(t, ev, _)| (*t, *ev));
        // Highest so far: (value, event that reported it).
        let mut hw: Option<(i64, usize)> = None;
        let mut ls: Option<(i64, usize)> = None;
        // Highest offset read strictly before the current millisecond, and within it.
        let mut read: Option<(i64, usize)> = None;
        let mut read_now: Option<(i64, usize)> = None;
        let mut now: Option<Millis> = None;
        for (t, ev, mark) in points {
            if now != Some(t) {
                read = read.max(read_now.take());
                now = Some(t);
            }
            let (log_start, high_watermark, what) = match mark {
                Mark::Read(o) => {
                    read_now = read_now.max(Some((o, ev)));
                    continue;
                }
                Mark::Reported {
                    node,
                    log_start,
                    high_watermark,
                } => (log_start, high_watermark, format!("node {node} at {t}ms")),
                Mark::Final {
                    log_start,
                    high_watermark,
                } => (
                    log_start,
                    high_watermark,
                    format!("the final read at {t}ms"),
                ),
            };
            let fresh = matches!(ix.events.get(ev), Some(Event::Watermarks { .. }));
            if let Some((m, mev)) = hw.filter(|&(m, _)| high_watermark < m) {
                r.hit(Anomaly::HwBackwards, || {
                    format!(
                        "{}/{}: high watermark {high_watermark} from {what} after {m} ({})",
                        tp.0,
                        tp.1,
                        watermark_source(ix, mev)
                    )
                });
            } else if let Some((o, oev)) = read.filter(|&(o, _)| fresh && high_watermark <= o) {
                // Only reported watermarks: a final read below a polled offset is a
                // vanished read, counted there.
                r.hit(Anomaly::HwBackwards, || {
                    format!(
                        "{}/{}: high watermark {high_watermark} from {what} after offset {o} was read ({})",
                        tp.0,
                        tp.1,
                        ix.source(oev)
                    )
                });
            }
            if let Some((m, mev)) = ls.filter(|&(m, _)| log_start < m) {
                r.hit(Anomaly::LogStartBackwards, || {
                    format!(
                        "{}/{}: log start {log_start} from {what} after {m} ({})",
                        tp.0,
                        tp.1,
                        watermark_source(ix, mev)
                    )
                });
            }
            hw = hw.max(Some((high_watermark, ev)));
            ls = ls.max(Some((log_start, ev)));
        }
    }
}

fn watermark_source(ix: &Index<'_>, ev: usize) -> String {
    match ix.events.get(ev) {
        Some(Event::Watermarks { node, t_ms, .. }) => format!("node {node} at {t_ms}ms"),
        _ => ix.source(ev),
    }
}

// ---------------------------------------------------------------------------------------------
// Replicas: replica-divergence

/// One replica's files.
struct ReplicaView<'a> {
    ev: usize,
    node: i32,
    log_end: i64,
    digest: &'a str,
    digest_from: i64,
    epochs: &'a [(i32, i64)],
    records: &'a [(i64, String)],
}

impl ReplicaView<'_> {
    /// Everything replicas of one partition must agree on once caught up.
    fn signature(&self) -> (i64, &str, i64, &[(i32, i64)]) {
        (self.log_end, self.digest, self.digest_from, self.epochs)
    }
}

/// Once healed and caught up, all replicas of a partition hold the same log, which is the one
/// the final read saw. Each replica that differs (from the majority, or from the final read)
/// counts once.
fn replicas(ix: &Index<'_>, r: &mut Report) {
    let mut by_tp: Groups<Tp<'_>, ReplicaView<'_>> = Groups::new();
    for (ev, e) in ix.events.iter().enumerate() {
        if let Event::Replica {
            node,
            topic,
            partition,
            log_end,
            digest,
            digest_from,
            epochs,
            records,
            ..
        } = e
        {
            // A leader's epoch that begins at its log end (elected, nothing appended yet) is
            // not on its followers and is no difference in data.
            let kept = epochs
                .iter()
                .take_while(|(_, start)| start < log_end)
                .count();
            let view = ReplicaView {
                ev,
                node: *node,
                log_end: *log_end,
                digest,
                digest_from: *digest_from,
                epochs: &epochs[..kept],
                records,
            };
            by_tp.push((topic, *partition), view);
        }
    }
    for (tp, reps) in by_tp.groups {
        // The majority's files (the first replica's on a tie) are the reference.
        let votes = |rep: &ReplicaView<'_>| {
            reps.iter()
                .filter(|o| o.signature() == rep.signature())
                .count()
        };
        let mut reference = reps.first();
        let mut best = reference.map_or(0, votes);
        for rep in &reps {
            let n = votes(rep);
            if n > best {
                best = n;
                reference = Some(rep);
            }
        }
        let fin = ix.finals.get(&tp);
        for rep in &reps {
            let why = replica_fault(rep, reference, fin);
            if let Some(why) = why {
                r.hit(Anomaly::ReplicaDivergence, || {
                    format!(
                        "{}/{} on node {} ({}): {why}",
                        tp.0,
                        tp.1,
                        rep.node,
                        ix.source(rep.ev)
                    )
                });
            }
        }
    }
}

/// How one replica diverges, if it does.
fn replica_fault(
    rep: &ReplicaView<'_>,
    reference: Option<&ReplicaView<'_>>,
    fin: Option<&FinalRead<'_>>,
) -> Option<String> {
    if let Some(m) = reference.filter(|m| m.signature() != rep.signature()) {
        return Some(format!(
            "log_end {} digest {} from {} epochs {:?}, but node {} has log_end {} digest {} from {} epochs {:?}",
            rep.log_end,
            rep.digest,
            rep.digest_from,
            rep.epochs,
            m.node,
            m.log_end,
            m.digest,
            m.digest_from,
            m.epochs
        ));
    }
    let f = fin?;
    if let Some((o, v, fv)) = rep
        .records
        .iter()
        .find_map(|(o, v)| f.records.get(o).filter(|fv| **fv != v).map(|fv| (o, v, fv)))
    {
        return Some(format!(
            "holds {v} at offset {o} where the final read holds {fv}"
        ));
    }
    (rep.log_end < f.high_watermark).then(|| {
        format!(
            "log_end {} is below the final high watermark {}",
            rep.log_end, f.high_watermark
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Group membership: group-two-owners, generation-reused

/// A generation gives each partition to one member, each member receives one assignment per
/// generation (per topic), and a consumer's generations only grow.
fn assignments(events: &[Event], r: &mut Report) {
    // (group, generation, topic, partition) -> the member that owns it.
    let mut owner: HashMap<(&str, i32, &str, i32), &str> = HashMap::new();
    let mut two_owners: HashSet<(&str, i32, &str, i32)> = HashSet::new();
    // (consumer, group, topic) -> its last generation and when it was assigned.
    let mut last: HashMap<(&str, &str, &str), (i32, Millis)> = HashMap::new();
    // (group, generation, member, topic) -> when it was assigned.
    let mut given: HashMap<(&str, i32, &str, &str), Millis> = HashMap::new();
    for e in events {
        let Event::Assignment {
            t_ms,
            consumer,
            group,
            member,
            generation,
            topic,
            partitions,
        } = e
        else {
            continue;
        };
        let g = *generation;
        for &p in partitions {
            let key = (group.as_str(), g, topic.as_str(), p);
            let first = *owner.entry(key).or_insert(member);
            if first != member && two_owners.insert(key) {
                r.hit(Anomaly::GroupTwoOwners, || {
                    format!(
                        "group {group} generation {g} gave {topic}/{p} to {first} and to {member} (at {t_ms}ms)"
                    )
                });
            }
        }
        let before = last.insert((consumer, group, topic), (g, *t_ms));
        let again = given.insert((group, g, member, topic), *t_ms);
        if let Some((pg, pt)) = before.filter(|&(pg, _)| g <= pg) {
            r.hit(Anomaly::GenerationReused, || {
                format!(
                    "{consumer} in group {group} got generation {g} at {t_ms}ms after generation {pg} at {pt}ms"
                )
            });
        } else if let Some(pt) = again {
            r.hit(Anomaly::GenerationReused, || {
                format!(
                    "member {member} of group {group} assigned {topic} twice in generation {g}, at {pt}ms and {t_ms}ms"
                )
            });
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Commits: committed-offset-backwards, fenced-commit-accepted

/// A group's partition.
type GroupTp<'a> = (&'a str, Tp<'a>);
/// An accepted commit of one partition: (completed at, offset, event).
type Accepted = (Millis, i64, usize);
/// (completed at, the highest offset accepted up to then and the event that committed it).
type HighestSoFar = (Millis, (i64, usize));

/// A member starting a partition resumes at or above every offset the group committed
/// before the member's generation began.
fn committed_offsets(events: &[Event], r: &mut Report) {
    // (group, partition) -> accepted commits as (completed, offset, event), by completion
    // time, with the running maximum of the offset.
    let mut commits: HashMap<GroupTp<'_>, Vec<Accepted>> = HashMap::new();
    for (ev, e) in events.iter().enumerate() {
        if let Event::Commit {
            t_ms,
            group,
            topic,
            offsets,
            ok: true,
            ..
        } = e
        {
            for &(p, c) in offsets {
                commits
                    .entry((group, (topic, p)))
                    .or_default()
                    .push((*t_ms, c, ev));
            }
        }
    }
    let mut highest: HashMap<GroupTp<'_>, Vec<HighestSoFar>> = HashMap::new();
    for (key, mut list) in commits {
        list.sort_unstable();
        let mut max: Option<(i64, usize)> = None;
        let running = list
            .into_iter()
            .filter_map(|(t, c, ev)| {
                max = max.max(Some((c, ev)));
                max.map(|m| (t, m))
            })
            .collect();
        highest.insert(key, running);
    }
    // (consumer, group, generation) -> when its latest assignment arrived.
    let mut started: HashMap<(&str, &str, i32), Millis> = HashMap::new();
    for e in events {
        match e {
            Event::Assignment {
                t_ms,
                consumer,
                group,
                generation,
                ..
            } => {
                started.insert((consumer, group, *generation), *t_ms);
            }
            Event::Position {
                t_ms,
                consumer,
                group,
                member,
                generation,
                topic,
                partition,
                offset,
            } => {
                let assigned = started.get(&(consumer.as_str(), group.as_str(), *generation));
                // Without a recorded assignment, the position itself bounds the generation.
                let (since, what) = match assigned {
                    Some(&t) => (t, "its generation began"),
                    None => (*t_ms, "the position"),
                };
                let Some(list) = highest.get(&(group.as_str(), (topic.as_str(), *partition)))
                else {
                    continue;
                };
                let i = list.partition_point(|(t, _)| *t < since);
                let Some((_, (c, cev))) = i.checked_sub(1).and_then(|i| list.get(i)) else {
                    continue;
                };
                if c > offset {
                    r.hit(Anomaly::CommittedOffsetBackwards, || {
                        let by = match events.get(*cev) {
                            Some(Event::Commit {
                                member,
                                generation,
                                t_ms,
                                ..
                            }) => format!(" by {member} (generation {generation}) at {t_ms}ms"),
                            _ => String::new(),
                        };
                        format!(
                            "{member} (generation {generation}) started {topic}/{partition} of group {group} at offset {offset} at {t_ms}ms, but offset {c} was committed{by}, before {what} at {since}ms"
                        )
                    });
                }
            }
            _ => {}
        }
    }
}

/// (when, which): the earliest start of a generation at least this new.
type FirstNewer = (Millis, i32);

/// Once a newer generation has begun, the coordinator must reject commits of older ones.
fn fenced_commits(events: &[Event], r: &mut Report) {
    // group -> generation -> the earliest assignment of it.
    let mut began: HashMap<&str, BTreeMap<i32, Millis>> = HashMap::new();
    for e in events {
        if let Event::Assignment {
            t_ms,
            group,
            generation,
            ..
        } = e
        {
            let t = began
                .entry(group)
                .or_default()
                .entry(*generation)
                .or_insert(*t_ms);
            *t = (*t).min(*t_ms);
        }
    }
    // group -> (generation, earliest start of it or any later generation), by generation.
    let newer: HashMap<&str, Vec<(i32, FirstNewer)>> = began
        .into_iter()
        .map(|(group, gens)| {
            let mut min: Option<(Millis, i32)> = None;
            let mut v: Vec<(i32, FirstNewer)> = gens
                .into_iter()
                .rev()
                .map(|(g, t)| {
                    let m = match min {
                        Some(m) if m <= (t, g) => m,
                        _ => (t, g),
                    };
                    min = Some(m);
                    (g, m)
                })
                .collect();
            v.reverse();
            (group, v)
        })
        .collect();
    for e in events {
        let Event::Commit {
            invoked_ms,
            t_ms,
            member,
            group,
            generation,
            topic,
            offsets,
            ok: true,
            ..
        } = e
        else {
            continue;
        };
        let Some(gens) = newer.get(group.as_str()) else {
            continue;
        };
        let i = gens.partition_point(|(g, _)| g <= generation);
        let Some((_, (began_ms, g))) = gens.get(i) else {
            continue;
        };
        if invoked_ms > began_ms {
            r.hit(Anomaly::FencedCommitAccepted, || {
                format!(
                    "{member} committed {topic} {offsets:?} for group {group} generation {generation} (invoked {invoked_ms}ms, accepted {t_ms}ms) after generation {g} began at {began_ms}ms"
                )
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Read;

    const TOPIC: &str = "t";

    fn value(producer: &str, n: u32) -> String {
        format!("{producer}-{n}")
    }

    fn send(
        t: Millis,
        producer: &str,
        n: u32,
        mode: Mode,
        partition: i32,
        outcome: SendOutcome,
        offset: Option<i64>,
    ) -> Event {
        Event::Send {
            invoked_ms: t.saturating_sub(1),
            t_ms: t,
            producer: producer.into(),
            mode,
            topic: TOPIC.into(),
            partition,
            value: value(producer, n),
            outcome,
            offset,
            error: None,
        }
    }

    /// An acknowledged send of `<producer>-<n>` at `offset`.
    fn ack(t: Millis, producer: &str, n: u32, mode: Mode, partition: i32, offset: i64) -> Event {
        send(
            t,
            producer,
            n,
            mode,
            partition,
            SendOutcome::Ok,
            Some(offset),
        )
    }

    fn reads(records: &[(i32, i64, &str)]) -> Vec<Read> {
        records
            .iter()
            .map(|&(partition, offset, v)| Read {
                partition,
                offset,
                value: v.into(),
            })
            .collect()
    }

    fn poll(t: Millis, consumer: &str, records: &[(i32, i64, &str)]) -> Event {
        Event::Poll {
            t_ms: t,
            consumer: consumer.into(),
            kind: ReaderKind::Assign,
            topic: TOPIC.into(),
            member: None,
            generation: None,
            records: reads(records),
        }
    }

    fn gpoll(
        t: Millis,
        consumer: &str,
        member: &str,
        generation: i32,
        records: &[(i32, i64, &str)],
    ) -> Event {
        Event::Poll {
            t_ms: t,
            consumer: consumer.into(),
            kind: ReaderKind::Group,
            topic: TOPIC.into(),
            member: Some(member.into()),
            generation: Some(generation),
            records: reads(records),
        }
    }

    fn seek(t: Millis, consumer: &str, partition: i32, offset: i64) -> Event {
        Event::Seek {
            t_ms: t,
            consumer: consumer.into(),
            topic: TOPIC.into(),
            partition,
            offset,
        }
    }

    fn fin(t: Millis, partition: i32, log_start: i64, hw: i64, records: &[(i64, &str)]) -> Event {
        Event::Final {
            t_ms: t,
            topic: TOPIC.into(),
            partition,
            log_start,
            high_watermark: hw,
            records: records.iter().map(|&(o, v)| (o, v.into())).collect(),
        }
    }

    fn replica(
        t: Millis,
        node: i32,
        partition: i32,
        log_end: i64,
        digest: &str,
        records: &[(i64, &str)],
    ) -> Event {
        Event::Replica {
            t_ms: t,
            node,
            topic: TOPIC.into(),
            partition,
            log_start: 0,
            log_end,
            digest: digest.into(),
            digest_from: 0,
            epochs: vec![(1, 0)],
            records: records.iter().map(|&(o, v)| (o, v.into())).collect(),
            writers: Vec::new(),
        }
    }

    fn wm(t: Millis, node: i32, partition: i32, log_start: i64, hw: i64) -> Event {
        Event::Watermarks {
            t_ms: t,
            topic: TOPIC.into(),
            partition,
            node,
            log_start,
            high_watermark: hw,
        }
    }

    fn assign(t: Millis, consumer: &str, member: &str, generation: i32, parts: &[i32]) -> Event {
        Event::Assignment {
            t_ms: t,
            consumer: consumer.into(),
            group: "g".into(),
            member: member.into(),
            generation,
            topic: TOPIC.into(),
            partitions: parts.to_vec(),
        }
    }

    fn commit(
        invoked: Millis,
        t: Millis,
        consumer: &str,
        member: &str,
        generation: i32,
        offsets: &[(i32, i64)],
        ok: bool,
    ) -> Event {
        Event::Commit {
            invoked_ms: invoked,
            t_ms: t,
            consumer: consumer.into(),
            group: "g".into(),
            member: member.into(),
            generation,
            topic: TOPIC.into(),
            offsets: offsets.to_vec(),
            ok,
            error: None,
        }
    }

    fn position(
        t: Millis,
        consumer: &str,
        member: &str,
        generation: i32,
        partition: i32,
        offset: i64,
    ) -> Event {
        Event::Position {
            t_ms: t,
            consumer: consumer.into(),
            group: "g".into(),
            member: member.into(),
            generation,
            topic: TOPIC.into(),
            partition,
            offset,
        }
    }

    fn nemesis(t: Millis, fault: &str, phase: Phase) -> Event {
        Event::Nemesis {
            t_ms: t,
            fault: fault.into(),
            target: "n2".into(),
            phase,
            detail: None,
        }
    }

    /// `n` acked IdempotentAll sends of `a-0..a-n` at offsets 0..n of partition 0, and the
    /// final read holding them all.
    fn written(n: u32) -> Vec<Event> {
        let mut h: Vec<Event> = (0..n)
            .map(|i| {
                ack(
                    u64::from(i) + 1,
                    "a",
                    i,
                    Mode::IdempotentAll,
                    0,
                    i64::from(i),
                )
            })
            .collect();
        let records: Vec<(i64, String)> = (0..n).map(|i| (i64::from(i), value("a", i))).collect();
        let refs: Vec<(i64, &str)> = records.iter().map(|(o, v)| (*o, v.as_str())).collect();
        h.push(fin(1000, 0, 0, i64::from(n), &refs));
        h
    }

    /// Checks, asserting exactly `n` anomalies of class `a` and none of any other.
    fn only(events: &[Event], a: Anomaly, n: usize) -> Report {
        let r = check(events);
        for b in Anomaly::ALL {
            let want = if b == a { n } else { 0 };
            assert_eq!(r.count(b), want, "{b}\n{}", r.table());
        }
        assert!(r.examples.contains_key(&a), "{}", r.table());
        assert!(!r.ok());
        r
    }

    /// Checks, asserting no anomaly.
    fn clean(events: &[Event]) -> Report {
        let r = check(events);
        assert!(r.ok(), "{}", r.table());
        assert!(r.examples.is_empty());
        r
    }

    // lost-write

    #[test]
    fn lost_write_inside_the_final_read() {
        let h = vec![
            ack(1, "a", 0, Mode::IdempotentAll, 0, 0),
            ack(2, "a", 1, Mode::IdempotentAll, 0, 1),
            fin(10, 0, 0, 2, &[(0, "a-0")]),
        ];
        let r = only(&h, Anomaly::LostWrite, 1);
        let ex = &r.examples[&Anomaly::LostWrite];
        assert!(ex.contains("a-1") && ex.contains("t/0 offset 1"), "{ex}");
    }

    #[test]
    fn lost_write_without_final_when_a_poll_read_past_it() {
        let h = vec![
            ack(1, "a", 0, Mode::All, 0, 0),
            ack(2, "a", 1, Mode::All, 0, 1),
            poll(3, "c1", &[(0, 1, "a-1")]),
        ];
        only(&h, Anomaly::LostWrite, 1);
    }

    #[test]
    fn acks1_loss_is_allowed() {
        let h = vec![
            ack(1, "a", 0, Mode::One, 0, 0),
            ack(2, "a", 1, Mode::One, 0, 1),
            fin(10, 0, 0, 2, &[(0, "a-0")]),
        ];
        let r = clean(&h);
        assert_eq!(r.allowed[ACKS1_LOST], 1);
    }

    // unseen

    #[test]
    fn unseen_beyond_the_final_high_watermark() {
        let h = vec![
            ack(1, "a", 0, Mode::Transactional, 0, 0),
            ack(2, "a", 1, Mode::Transactional, 0, 1),
            fin(10, 0, 0, 1, &[(0, "a-0")]),
        ];
        only(&h, Anomaly::Unseen, 1);
    }

    #[test]
    fn unseen_when_nothing_was_read() {
        let h = vec![ack(1, "a", 0, Mode::IdempotentAll, 0, 0)];
        only(&h, Anomaly::Unseen, 1);
    }

    #[test]
    fn indeterminate_sends_need_not_be_read_and_may_be() {
        let h = vec![
            send(1, "a", 0, Mode::IdempotentAll, 0, SendOutcome::Fail, None),
            send(
                2,
                "a",
                1,
                Mode::IdempotentAll,
                0,
                SendOutcome::Unknown,
                None,
            ),
            send(3, "a", 2, Mode::IdempotentAll, 0, SendOutcome::Fail, None),
            poll(4, "c1", &[(0, 0, "a-2")]),
            fin(10, 0, 0, 1, &[(0, "a-2")]),
        ];
        clean(&h);
    }

    // duplicate

    #[test]
    fn duplicate_under_idempotence() {
        let h = vec![
            ack(1, "a", 0, Mode::IdempotentAll, 0, 0),
            fin(10, 0, 0, 2, &[(0, "a-0"), (1, "a-0")]),
        ];
        only(&h, Anomaly::Duplicate, 1);
    }

    #[test]
    fn a_duplicate_names_the_producer_epochs_that_stored_it() {
        let writer = |base_offset, producer_epoch| Writer {
            base_offset,
            last_offset: base_offset,
            producer_id: 7,
            producer_epoch,
            base_sequence: 0,
        };
        let stored = |epochs: [i16; 2]| {
            let mut r = replica(10, 1, 0, 2, "d", &[(0, "a-0"), (1, "a-0")]);
            if let Event::Replica { writers, .. } = &mut r {
                *writers = vec![writer(0, epochs[0]), writer(1, epochs[1])];
            }
            vec![ack(1, "a", 0, Mode::IdempotentAll, 0, 0), r]
        };
        let resent = check(&stored([3, 4]));
        assert_eq!(resent.count(Anomaly::Duplicate), 1);
        let example = &resent.examples[&Anomaly::Duplicate];
        assert!(
            example.contains("producer 7 epoch 3 seq 0, producer 7 epoch 4 seq 0")
                && example.contains("under a new producer epoch"),
            "{example}"
        );
        let kept = check(&stored([3, 3]));
        let example = &kept.examples[&Anomaly::Duplicate];
        assert!(
            example.contains("a retry the broker did not drop"),
            "{example}"
        );
    }

    #[test]
    fn duplicate_without_idempotence_is_allowed() {
        let h = vec![
            ack(1, "a", 0, Mode::All, 0, 0),
            fin(10, 0, 0, 2, &[(0, "a-0"), (1, "a-0")]),
        ];
        let r = clean(&h);
        assert_eq!(r.allowed[DUPLICATES_WITHOUT_IDEMPOTENCE], 1);
    }

    // inconsistent-offsets

    #[test]
    fn inconsistent_offsets_one_slot_two_values() {
        let h = vec![
            ack(1, "a", 0, Mode::IdempotentAll, 0, 0),
            send(2, "b", 0, Mode::IdempotentAll, 0, SendOutcome::Fail, None),
            poll(3, "c1", &[(0, 0, "a-0")]),
            fin(10, 0, 0, 1, &[(0, "b-0")]),
        ];
        let r = only(&h, Anomaly::InconsistentOffsets, 1);
        let ex = &r.examples[&Anomaly::InconsistentOffsets];
        assert!(ex.contains("a-0") && ex.contains("b-0"), "{ex}");
    }

    #[test]
    fn inconsistent_offsets_acked_at_one_offset_read_at_another() {
        let h = vec![
            ack(1, "a", 0, Mode::All, 0, 1),
            fin(10, 0, 0, 1, &[(0, "a-0")]),
        ];
        only(&h, Anomaly::InconsistentOffsets, 1);
    }

    #[test]
    fn acks1_offset_reuse_is_allowed() {
        let h = vec![
            ack(1, "a", 0, Mode::One, 0, 0),
            ack(2, "b", 0, Mode::All, 0, 0),
            fin(10, 0, 0, 1, &[(0, "b-0")]),
        ];
        let r = clean(&h);
        assert_eq!(r.allowed[ACKS1_REUSED], 1);
        assert_eq!(r.allowed[ACKS1_LOST], 1);
    }

    #[test]
    fn a_read_acks1_value_is_an_observation_like_any_other() {
        let h = vec![
            ack(1, "a", 0, Mode::One, 0, 0),
            poll(2, "c1", &[(0, 0, "a-0")]),
            ack(3, "b", 0, Mode::All, 0, 0),
            fin(10, 0, 0, 1, &[(0, "b-0")]),
        ];
        only(&h, Anomaly::InconsistentOffsets, 1);
    }

    // nonmonotonic-send

    #[test]
    fn nonmonotonic_send_under_idempotence() {
        let h = vec![
            ack(1, "p", 0, Mode::IdempotentAll, 0, 5),
            ack(2, "p", 1, Mode::IdempotentAll, 0, 3),
            fin(10, 0, 3, 6, &[(3, "p-1"), (5, "p-0")]),
        ];
        only(&h, Anomaly::NonmonotonicSend, 1);
    }

    #[test]
    fn reordered_sends_without_idempotence_are_legal() {
        let h = vec![
            ack(1, "p", 0, Mode::All, 0, 5),
            ack(2, "p", 1, Mode::All, 0, 3),
            fin(10, 0, 3, 6, &[(3, "p-1"), (5, "p-0")]),
        ];
        clean(&h);
    }

    #[test]
    fn send_order_is_by_sequence_number_not_history_order() {
        // Completions recorded out of order; sequence numbers say p-1 came first.
        let h = vec![
            ack(2, "p", 2, Mode::IdempotentAll, 0, 1),
            ack(1, "p", 1, Mode::IdempotentAll, 0, 0),
            // p-10 sorts after p-2 numerically, not as text.
            ack(3, "p", 10, Mode::IdempotentAll, 0, 2),
            fin(10, 0, 0, 3, &[(0, "p-1"), (1, "p-2"), (2, "p-10")]),
        ];
        clean(&h);
    }

    // nonmonotonic-poll

    #[test]
    fn nonmonotonic_poll_rereading_an_offset() {
        let mut h = written(3);
        h.push(poll(5, "c1", &[(0, 0, "a-0"), (0, 1, "a-1")]));
        h.push(poll(6, "c1", &[(0, 1, "a-1"), (0, 2, "a-2")]));
        only(&h, Anomaly::NonmonotonicPoll, 1);
    }

    #[test]
    fn nonmonotonic_poll_within_one_generation() {
        let mut h = written(3);
        h.push(gpoll(5, "c1", "m1", 1, &[(0, 0, "a-0"), (0, 1, "a-1")]));
        h.push(gpoll(6, "c1", "m1", 1, &[(0, 0, "a-0")]));
        only(&h, Anomaly::NonmonotonicPoll, 1);
    }

    #[test]
    fn rereading_after_a_seek_is_legal() {
        let mut h = written(3);
        h.push(poll(5, "c1", &[(0, 0, "a-0"), (0, 1, "a-1")]));
        h.push(seek(6, "c1", 0, 0));
        h.push(poll(
            7,
            "c1",
            &[(0, 0, "a-0"), (0, 1, "a-1"), (0, 2, "a-2")],
        ));
        clean(&h);
    }

    #[test]
    fn rereading_across_generations_or_positions_is_legal() {
        let mut h = written(3);
        h.push(gpoll(
            5,
            "c1",
            "m1",
            1,
            &[(0, 0, "a-0"), (0, 1, "a-1"), (0, 2, "a-2")],
        ));
        h.push(gpoll(6, "c1", "m1", 2, &[(0, 1, "a-1")]));
        h.push(position(7, "c1", "m1", 2, 0, 0));
        h.push(gpoll(8, "c1", "m1", 2, &[(0, 0, "a-0")]));
        // Different readers do not share positions.
        h.push(poll(9, "c2", &[(0, 0, "a-0")]));
        clean(&h);
    }

    // poll-skip

    #[test]
    fn poll_skip_over_a_known_record() {
        let mut h = written(3);
        h.push(poll(5, "c1", &[(0, 0, "a-0"), (0, 2, "a-2")]));
        let r = only(&h, Anomaly::PollSkip, 1);
        let ex = &r.examples[&Anomaly::PollSkip];
        assert!(ex.contains("offset 1"), "{ex}");
    }

    #[test]
    fn poll_skip_after_a_seek() {
        let mut h = written(3);
        h.push(seek(5, "c1", 0, 0));
        h.push(poll(6, "c1", &[(0, 2, "a-2")]));
        only(&h, Anomaly::PollSkip, 1);
    }

    #[test]
    fn poll_skip_within_one_generation() {
        let mut h = written(3);
        h.push(gpoll(5, "c1", "m1", 1, &[(0, 0, "a-0")]));
        h.push(gpoll(6, "c1", "m1", 1, &[(0, 2, "a-2")]));
        only(&h, Anomaly::PollSkip, 1);
    }

    #[test]
    fn a_jump_after_a_seek_to_its_target_is_legal() {
        let mut h = written(3);
        h.push(poll(5, "c1", &[(0, 0, "a-0")]));
        h.push(seek(6, "c1", 0, 2));
        h.push(poll(7, "c1", &[(0, 2, "a-2")]));
        clean(&h);
    }

    #[test]
    fn a_jump_across_generations_is_legal() {
        let mut h = written(3);
        h.push(gpoll(5, "c1", "m1", 1, &[(0, 0, "a-0")]));
        h.push(gpoll(6, "c1", "m1", 2, &[(0, 2, "a-2")]));
        clean(&h);
    }

    #[test]
    fn a_jump_over_an_unknown_offset_is_legal() {
        // Offset 1 holds nothing anyone saw (a transaction marker, say).
        let h = vec![
            ack(1, "a", 0, Mode::IdempotentAll, 0, 0),
            ack(2, "a", 1, Mode::IdempotentAll, 0, 2),
            poll(5, "c1", &[(0, 0, "a-0"), (0, 2, "a-1")]),
            fin(10, 0, 0, 3, &[(0, "a-0"), (2, "a-1")]),
        ];
        clean(&h);
    }

    #[test]
    fn a_jump_over_an_aborted_record_is_not_a_skip() {
        // Only the replica's files show the aborted record; reading it there is an
        // aborted-read, but a read_committed poll jumping over it is right.
        let h = vec![
            ack(1, "x", 0, Mode::Transactional, 0, 0),
            send(
                2,
                "x",
                1,
                Mode::Transactional,
                0,
                SendOutcome::Aborted,
                None,
            ),
            ack(3, "x", 2, Mode::Transactional, 0, 2),
            poll(5, "c1", &[(0, 0, "x-0"), (0, 2, "x-2")]),
            fin(10, 0, 0, 3, &[(0, "x-0"), (2, "x-2")]),
            replica(11, 1, 0, 3, "d", &[(0, "x-0"), (1, "x-1"), (2, "x-2")]),
        ];
        only(&h, Anomaly::AbortedRead, 1);
    }

    // read-vanished

    #[test]
    fn read_vanished_above_the_final_high_watermark() {
        let h = vec![
            ack(1, "a", 0, Mode::IdempotentAll, 0, 0),
            ack(2, "a", 1, Mode::IdempotentAll, 0, 1),
            poll(3, "c1", &[(0, 0, "a-0"), (0, 1, "a-1")]),
            poll(4, "c2", &[(0, 0, "a-0"), (0, 1, "a-1")]),
            fin(10, 0, 0, 1, &[(0, "a-0")]),
        ];
        // Two readers saw it; it vanished once.
        only(&h, Anomaly::ReadVanished, 1);
    }

    #[test]
    fn read_vanished_from_inside_the_final_read() {
        let h = vec![
            ack(1, "a", 0, Mode::IdempotentAll, 0, 0),
            ack(2, "a", 1, Mode::IdempotentAll, 0, 1),
            poll(3, "c1", &[(0, 0, "a-0"), (0, 1, "a-1")]),
            fin(10, 0, 0, 2, &[(0, "a-0")]),
        ];
        only(&h, Anomaly::ReadVanished, 1);
    }

    #[test]
    fn read_vanished_applies_to_acks1() {
        let h = vec![
            ack(1, "a", 0, Mode::One, 0, 0),
            ack(2, "a", 1, Mode::One, 0, 1),
            poll(3, "c1", &[(0, 0, "a-0"), (0, 1, "a-1")]),
            fin(10, 0, 0, 1, &[(0, "a-0")]),
        ];
        only(&h, Anomaly::ReadVanished, 1);
    }

    #[test]
    fn records_below_the_final_log_start_were_retention() {
        let h = vec![
            ack(1, "a", 0, Mode::IdempotentAll, 0, 0),
            ack(2, "a", 1, Mode::IdempotentAll, 0, 1),
            poll(3, "c1", &[(0, 0, "a-0"), (0, 1, "a-1")]),
            fin(10, 0, 2, 2, &[]),
        ];
        clean(&h);
    }

    // hw-backwards

    #[test]
    fn hw_backwards_between_reports() {
        let h = vec![wm(1, 1, 0, 0, 5), wm(2, 2, 0, 0, 3), wm(3, 1, 0, 0, 4)];
        // 3 after 5, and 4 after 5.
        only(&h, Anomaly::HwBackwards, 2);
    }

    #[test]
    fn hw_backwards_below_an_offset_read() {
        let mut h = written(5);
        h.push(poll(20, "c1", &[(0, 4, "a-4")]));
        h.push(wm(21, 1, 0, 0, 4));
        // The poll starts at 4 after nothing: not a skip.
        let r = only(&h, Anomaly::HwBackwards, 1);
        let ex = &r.examples[&Anomaly::HwBackwards];
        assert!(ex.contains("offset 4"), "{ex}");
    }

    #[test]
    fn hw_backwards_in_the_final_read() {
        let h = vec![wm(1, 1, 0, 0, 5), fin(10, 0, 0, 3, &[])];
        only(&h, Anomaly::HwBackwards, 1);
    }

    #[test]
    fn watermarks_moving_forward_are_legal() {
        let mut h = written(5);
        h.push(wm(1, 1, 0, 0, 3));
        h.push(poll(20, "c1", &[(0, 4, "a-4")]));
        // Same millisecond as the poll: not known to come after it.
        h.push(wm(20, 1, 0, 0, 4));
        h.push(wm(21, 2, 0, 0, 5));
        h.push(wm(22, 1, 0, 0, 5));
        clean(&h);
    }

    // log-start-backwards

    #[test]
    fn log_start_backwards() {
        let h = vec![wm(1, 1, 0, 2, 5), wm(2, 2, 0, 1, 5), fin(10, 0, 0, 5, &[])];
        only(&h, Anomaly::LogStartBackwards, 2);
    }

    #[test]
    fn log_start_moving_forward_is_legal() {
        let h = vec![wm(1, 1, 0, 0, 5), wm(2, 2, 0, 2, 5), fin(10, 0, 3, 5, &[])];
        clean(&h);
    }

    // replica-divergence

    fn replicated(log_end: [i64; 3], digest: [&str; 3], second: [&str; 3]) -> Vec<Event> {
        let mut h = written(2);
        for i in 0..3 {
            h.push(replica(
                20,
                i32::try_from(i).unwrap_or(0) + 1,
                0,
                log_end[i],
                digest[i],
                &[(0, "a-0"), (1, second[i])],
            ));
        }
        h
    }

    #[test]
    fn replica_divergence_in_digest() {
        let h = replicated([2; 3], ["d", "d", "x"], ["a-1"; 3]);
        let r = only(&h, Anomaly::ReplicaDivergence, 1);
        let ex = &r.examples[&Anomaly::ReplicaDivergence];
        assert!(ex.contains("node 3"), "{ex}");
    }

    #[test]
    fn replica_divergence_from_the_final_read() {
        let h = replicated([2; 3], ["d"; 3], ["a-1", "a-1", "a-9"]);
        // a-9 is also a phantom and a conflicting slot; check the replica count alone.
        let r = check(&h);
        assert_eq!(r.count(Anomaly::ReplicaDivergence), 1, "{}", r.table());
    }

    #[test]
    fn replica_divergence_below_the_final_high_watermark() {
        let h = replicated([1; 3], ["d"; 3], ["a-1"; 3]);
        only(&h, Anomaly::ReplicaDivergence, 3);
    }

    #[test]
    fn identical_replicas_are_legal() {
        clean(&replicated([2; 3], ["d"; 3], ["a-1"; 3]));
    }

    fn with_epochs(mut h: Vec<Event>, node: i32, new: &[(i32, i64)]) -> Vec<Event> {
        for e in &mut h {
            if let Event::Replica {
                node: n, epochs, ..
            } = e
            {
                if *n == node {
                    *epochs = new.to_vec();
                }
            }
        }
        h
    }

    #[test]
    fn an_epoch_begun_at_the_leaders_log_end_is_legal() {
        let h = replicated([2; 3], ["d"; 3], ["a-1"; 3]);
        clean(&with_epochs(h, 1, &[(1, 0), (2, 2)]));
    }

    #[test]
    fn replica_divergence_in_leader_epochs() {
        let h = replicated([2; 3], ["d"; 3], ["a-1"; 3]);
        only(
            &with_epochs(h, 2, &[(1, 0), (2, 1)]),
            Anomaly::ReplicaDivergence,
            1,
        );
    }

    // group-two-owners

    #[test]
    fn group_two_owners() {
        let h = vec![
            assign(1, "c1", "m1", 1, &[0, 1]),
            assign(2, "c2", "m2", 1, &[1]),
        ];
        let r = only(&h, Anomaly::GroupTwoOwners, 1);
        let ex = &r.examples[&Anomaly::GroupTwoOwners];
        assert!(
            ex.contains("t/1") && ex.contains("m1") && ex.contains("m2"),
            "{ex}"
        );
    }

    #[test]
    fn moving_a_partition_in_a_new_generation_is_legal() {
        let h = vec![
            assign(1, "c1", "m1", 1, &[0, 1]),
            assign(2, "c1", "m1", 2, &[0]),
            assign(2, "c2", "m2", 2, &[1]),
        ];
        clean(&h);
    }

    // generation-reused

    #[test]
    fn generation_going_back() {
        let h = vec![
            assign(1, "c1", "m1", 2, &[0]),
            assign(2, "c1", "m1", 1, &[0]),
        ];
        only(&h, Anomaly::GenerationReused, 1);
    }

    #[test]
    fn one_member_assigned_twice_in_a_generation() {
        let h = vec![
            assign(1, "c1", "m1", 1, &[0]),
            assign(2, "c2", "m1", 1, &[1]),
        ];
        only(&h, Anomaly::GenerationReused, 1);
    }

    #[test]
    fn growing_generations_are_legal() {
        let h = vec![
            assign(1, "c1", "m1", 1, &[0]),
            assign(2, "c1", "m1", 3, &[0]),
            assign(2, "c2", "m2", 3, &[1]),
        ];
        clean(&h);
    }

    // committed-offset-backwards

    #[test]
    fn committed_offset_backwards() {
        let h = vec![
            assign(1, "c1", "m1", 1, &[0]),
            commit(5, 10, "c1", "m1", 1, &[(0, 5)], true),
            assign(20, "c2", "m2", 2, &[0]),
            position(21, "c2", "m2", 2, 0, 3),
        ];
        let r = only(&h, Anomaly::CommittedOffsetBackwards, 1);
        let ex = &r.examples[&Anomaly::CommittedOffsetBackwards];
        assert!(ex.contains("offset 3") && ex.contains("offset 5"), "{ex}");
        assert!(ex.contains("by m1 (generation 1) at 10ms"), "{ex}");
        assert!(ex.contains("before its generation began at 20ms"), "{ex}");
    }

    #[test]
    fn committed_offset_backwards_counts_the_highest_earlier_commit() {
        // A later, lower commit does not hide the higher one before it.
        let h = vec![
            assign(1, "c1", "m1", 1, &[0]),
            commit(5, 6, "c1", "m1", 1, &[(0, 8)], true),
            commit(9, 10, "c1", "m1", 1, &[(0, 4)], true),
            assign(20, "c2", "m2", 2, &[0]),
            position(21, "c2", "m2", 2, 0, 6),
            // No assignment of generation 3 recorded: the position's own time bounds it.
            position(30, "c3", "m3", 3, 0, 7),
        ];
        let r = only(&h, Anomaly::CommittedOffsetBackwards, 2);
        let ex = &r.examples[&Anomaly::CommittedOffsetBackwards];
        assert!(
            ex.contains("offset 8 was committed by m1 (generation 1) at 6ms"),
            "{ex}"
        );
    }

    #[test]
    fn commits_after_the_generation_began_or_rejected_do_not_bind() {
        let h = vec![
            assign(1, "c1", "m1", 1, &[0]),
            commit(5, 10, "c1", "m1", 1, &[(0, 7)], false),
            commit(15, 25, "c1", "m1", 1, &[(0, 5)], true),
            assign(20, "c2", "m2", 2, &[0]),
            position(26, "c2", "m2", 2, 0, 3),
            // At the committed offset exactly: fine.
            commit(30, 31, "c2", "m2", 2, &[(0, 6)], true),
            assign(40, "c2", "m2", 3, &[0]),
            position(41, "c2", "m2", 3, 0, 6),
        ];
        clean(&h);
    }

    // fenced-commit-accepted

    #[test]
    fn fenced_commit_accepted() {
        let h = vec![
            assign(1, "c1", "m1", 1, &[0]),
            assign(20, "c2", "m2", 2, &[0]),
            assign(30, "c2", "m2", 3, &[0]),
            commit(25, 26, "c1", "m1", 1, &[(0, 5)], true),
        ];
        let r = only(&h, Anomaly::FencedCommitAccepted, 1);
        let ex = &r.examples[&Anomaly::FencedCommitAccepted];
        assert!(ex.contains("generation 2 began at 20ms"), "{ex}");
    }

    #[test]
    fn fenced_commits_rejected_or_in_time_are_legal() {
        let h = vec![
            assign(1, "c1", "m1", 1, &[0]),
            assign(20, "c2", "m2", 2, &[0]),
            commit(15, 26, "c1", "m1", 1, &[(0, 5)], true),
            commit(25, 26, "c1", "m1", 1, &[(0, 6)], false),
            commit(27, 28, "c2", "m2", 2, &[(0, 7)], true),
        ];
        clean(&h);
    }

    // aborted-read, phantom

    #[test]
    fn aborted_read() {
        let h = vec![
            send(
                1,
                "x",
                0,
                Mode::Transactional,
                0,
                SendOutcome::Aborted,
                None,
            ),
            poll(2, "c1", &[(0, 0, "x-0")]),
        ];
        only(&h, Anomaly::AbortedRead, 1);
    }

    #[test]
    fn aborted_writes_unread_are_legal() {
        let h = vec![
            send(
                1,
                "x",
                0,
                Mode::Transactional,
                0,
                SendOutcome::Aborted,
                None,
            ),
            ack(2, "x", 1, Mode::Transactional, 0, 1),
            poll(3, "c1", &[(0, 1, "x-1")]),
            fin(10, 0, 0, 2, &[(1, "x-1")]),
        ];
        clean(&h);
    }

    #[test]
    fn phantom() {
        let h = vec![poll(2, "c1", &[(0, 0, "ghost-1")])];
        let r = only(&h, Anomaly::Phantom, 1);
        assert!(r.examples[&Anomaly::Phantom].contains("ghost-1"));
    }

    // whole histories and the report

    /// Two partitions written by an idempotent producer, a plain acks=all producer and an
    /// acks=1 producer (one of whose acks is lost and its offset reused), read by an assign
    /// reader and a two-generation group, with watermarks, a fault, final reads and replicas.
    fn healthy() -> Vec<Event> {
        let mut h = vec![
            Event::Info {
                t_ms: 0,
                message: "seed 1".into(),
            },
            nemesis(5, "partition", Phase::Start),
        ];
        let mut logs: Vec<Vec<(i64, String)>> = vec![Vec::new(), Vec::new()];
        let mut seq: HashMap<&str, u32> = HashMap::new();
        let mut t = 10;
        for o in 0..12i64 {
            for (p, log) in (0i32..).zip(logs.iter_mut()) {
                let (producer, mode) = match (o % 3, p) {
                    (0, _) => ("p", Mode::IdempotentAll),
                    (1, _) => ("q", Mode::All),
                    (_, 0) => ("p", Mode::IdempotentAll),
                    _ => ("r", Mode::One),
                };
                let n = seq.entry(producer).or_default();
                t += 1;
                h.push(ack(t, producer, *n, mode, p, o));
                log.push((o, value(producer, *n)));
                *n += 1;
            }
            if o == 5 {
                // An acks=1 write acked at offset 12 of partition 1, lost in the fault.
                h.push(ack(t, "r", 99, Mode::One, 1, 12));
                // A failed send that did land: reading it is fine.
                t += 1;
                h.push(send(t, "q", 98, Mode::All, 1, SendOutcome::Fail, None));
            }
        }
        h.push(nemesis(t, "partition", Phase::End));
        // The failed send landed at offset 12 of partition 1, replacing the lost acks=1 write.
        logs[1].push((12, value("q", 98)));
        let rec = |p: usize, range: std::ops::Range<usize>| -> Vec<(i32, i64, String)> {
            logs[p][range]
                .iter()
                .map(|(o, v)| (i32::try_from(p).unwrap_or(0), *o, v.clone()))
                .collect()
        };
        let as_reads = |rs: &[(i32, i64, String)]| -> Vec<Read> {
            rs.iter()
                .map(|(p, o, v)| Read {
                    partition: *p,
                    offset: *o,
                    value: v.clone(),
                })
                .collect()
        };
        let mk_poll =
            |t, consumer: &str, group: Option<(&str, i32)>, rs: Vec<(i32, i64, String)>| {
                Event::Poll {
                    t_ms: t,
                    consumer: consumer.into(),
                    kind: if group.is_some() {
                        ReaderKind::Group
                    } else {
                        ReaderKind::Assign
                    },
                    topic: TOPIC.into(),
                    member: group.map(|(m, _)| m.to_string()),
                    generation: group.map(|(_, g)| g),
                    records: as_reads(&rs),
                }
            };
        h.push(wm(100, 1, 0, 0, 12));
        h.push(wm(100, 1, 1, 0, 13));
        // The assign reader: both partitions, interleaved, in several polls.
        let mut first = rec(0, 0..6);
        first.extend(rec(1, 0..4));
        h.push(mk_poll(110, "c1", None, first));
        h.push(mk_poll(111, "c1", None, rec(1, 4..13)));
        h.push(mk_poll(112, "c1", None, rec(0, 6..12)));
        // The group: one member, then two.
        h.push(assign(120, "c2", "m2", 1, &[0, 1]));
        h.push(position(121, "c2", "m2", 1, 0, 0));
        h.push(position(121, "c2", "m2", 1, 1, 0));
        h.push(mk_poll(122, "c2", Some(("m2", 1)), rec(0, 0..5)));
        h.push(mk_poll(123, "c2", Some(("m2", 1)), rec(1, 0..3)));
        h.push(commit(124, 125, "c2", "m2", 1, &[(0, 5), (1, 3)], true));
        h.push(mk_poll(126, "c2", Some(("m2", 1)), rec(0, 5..7)));
        h.push(assign(130, "c2", "m2", 2, &[0]));
        h.push(assign(130, "c3", "m3", 2, &[1]));
        h.push(position(131, "c2", "m2", 2, 0, 5));
        h.push(position(131, "c3", "m3", 2, 1, 3));
        // The group re-reads 5 and 6 after the rebalance: legal.
        h.push(mk_poll(132, "c2", Some(("m2", 2)), rec(0, 5..12)));
        h.push(mk_poll(133, "c3", Some(("m3", 2)), rec(1, 3..13)));
        h.push(commit(134, 135, "c2", "m2", 2, &[(0, 12)], true));
        h.push(commit(134, 135, "c3", "m3", 2, &[(1, 13)], true));
        h.push(wm(140, 2, 0, 0, 12));
        h.push(wm(140, 2, 1, 0, 13));
        for (p, log) in (0i32..).zip(&logs) {
            let records: Vec<(i64, &str)> = log.iter().map(|(o, v)| (*o, v.as_str())).collect();
            let end = i64::try_from(log.len()).unwrap_or(0);
            h.push(fin(200, p, 0, end, &records));
            for node in 1..=3 {
                h.push(replica(210, node, p, end, "digest", &records));
            }
        }
        h
    }

    #[test]
    fn a_healthy_history_is_ok() {
        let h = healthy();
        let r = clean(&h);
        assert_eq!(r.allowed[ACKS1_LOST], 1);
        assert_eq!(r.allowed[ACKS1_REUSED], 1);
        assert_eq!(r.allowed[DUPLICATES_WITHOUT_IDEMPOTENCE], 0);
        let s = &r.stats;
        assert_eq!(s.events, h.len());
        assert_eq!(s.sends["idempotent_all"]["ok"], 12);
        assert_eq!(s.sends["all"]["ok"], 8);
        assert_eq!(s.sends["all"]["fail"], 1);
        assert_eq!(s.sends["one"]["ok"], 5);
        // The assign reader reads 25; the group 10 in generation 1 and 17 in generation 2.
        assert_eq!(s.records_read, 25 + 10 + 17);
        assert_eq!(s.distinct_values_read, 25);
        assert_eq!(s.final_records, 25);
        assert_eq!(s.replicas_checked, 6);
        assert_eq!(s.faults["partition"], 1);
        assert_eq!(s.duration_ms, 210);
    }

    #[test]
    fn the_table_names_every_class_and_the_context() {
        let mut h = healthy();
        h.push(poll(300, "c9", &[(0, 0, "ghost-1")]));
        let t = check(&h).table();
        for a in Anomaly::ALL {
            assert!(t.contains(a.name()), "{a} missing from\n{t}");
        }
        assert!(t.contains("ANOMALIES FOUND"), "{t}");
        assert!(t.contains("ghost-1"), "{t}");
        assert!(t.contains("partition=1"), "{t}");
        assert!(t.contains(ACKS1_LOST), "{t}");
        assert!(t.contains("idempotent_all ok=12"), "{t}");
    }

    #[test]
    fn the_report_serialises_with_class_names_as_keys() {
        let r = only(&[poll(2, "c1", &[(0, 0, "ghost-1")])], Anomaly::Phantom, 1);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["ok"], false);
        assert_eq!(json["counts"]["phantom"], 1);
        assert_eq!(json["counts"]["lost-write"], 0);
        assert!(json["examples"]["phantom"]
            .as_str()
            .unwrap()
            .contains("ghost-1"));
        assert_eq!(json["allowed"][ACKS1_LOST], 0);
        assert_eq!(json["stats"]["records_read"], 1);
    }

    #[test]
    fn every_class_has_a_distinct_kebab_case_name() {
        let names: HashSet<&str> = Anomaly::ALL.iter().map(|a| a.name()).collect();
        assert_eq!(names.len(), Anomaly::ALL.len());
        for n in names {
            assert!(n.chars().all(|c| c.is_ascii_lowercase() || c == '-'), "{n}");
        }
    }

    #[test]
    fn an_empty_history_is_ok() {
        let r = clean(&[]);
        assert_eq!(r.counts.len(), Anomaly::ALL.len());
        assert_eq!(r.stats.duration_ms, 0);
    }

    #[test]
    fn a_large_history_checks_in_linear_time() {
        // 200k sends over 4 partitions, each read twice and finally: a quadratic scan would
        // not finish.
        let n = 200_000u32;
        let mut h = Vec::new();
        let mut polled: Vec<Vec<(i32, i64, String)>> = vec![Vec::new(); 4];
        let mut finals: Vec<Vec<(i64, String)>> = vec![Vec::new(); 4];
        for i in 0..n {
            let p = i32::try_from(i % 4).unwrap_or(0);
            let o = i64::from(i / 4);
            h.push(ack(u64::from(i), "p", i, Mode::IdempotentAll, p, o));
            polled[(i % 4) as usize].push((p, o, value("p", i)));
            finals[(i % 4) as usize].push((o, value("p", i)));
        }
        for consumer in ["c1", "c2"] {
            for rs in &polled {
                for chunk in rs.chunks(500) {
                    let refs: Vec<(i32, i64, &str)> =
                        chunk.iter().map(|(p, o, v)| (*p, *o, v.as_str())).collect();
                    h.push(poll(u64::from(n), consumer, &refs));
                }
            }
        }
        for (p, records) in (0i32..).zip(&finals) {
            let refs: Vec<(i64, &str)> = records.iter().map(|(o, v)| (*o, v.as_str())).collect();
            h.push(fin(u64::from(n) + 1, p, 0, i64::from(n / 4), &refs));
        }
        let started = std::time::Instant::now();
        let r = clean(&h);
        assert_eq!(r.stats.records_read, 2 * n as usize);
        assert!(started.elapsed().as_secs() < 30, "{:?}", started.elapsed());
    }
}
