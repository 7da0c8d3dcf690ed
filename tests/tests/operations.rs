//! Operating Strom: the admin HTTP listener (`/metrics` with Kafka's metric names, `/healthz`,
//! `/readyz`, `POST /shutdown`) and the `strom topics|groups|produce|consume|cluster` tools,
//! against real brokers. The cluster test kills a node and watches under-replicated partitions
//! rise and return to zero, and checks consumer lag against produced minus committed.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde_json::Value;
use strom_tests::cluster::{wait_until, Cluster, NODES};
use strom_tests::{strom_bin, Strom};

/// One HTTP/1.0 request; returns (status, body).
fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("admin connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "{method} {path} HTTP/1.0\r\nContent-Length: 0\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {out:?}"));
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    (status, body)
}

/// Samples of `/metrics`: (name, labels as "k=v,k=v" sorted) -> value.
fn scrape(addr: SocketAddr) -> BTreeMap<(String, String), f64> {
    let (status, body) = http(addr, "GET", "/metrics");
    assert_eq!(status, 200, "{body}");
    let mut out = BTreeMap::new();
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => {
                let mut parts: Vec<String> = l
                    .trim_end_matches('}')
                    .split(',')
                    .map(|kv| kv.replace('"', ""))
                    .collect();
                parts.sort();
                (n.to_owned(), parts.join(","))
            }
            None => (series.to_owned(), String::new()),
        };
        out.insert((name, labels), value.parse().expect("sample value"));
    }
    out
}

fn metric(samples: &BTreeMap<(String, String), f64>, name: &str, labels: &str) -> Option<f64> {
    samples.get(&(name.to_owned(), labels.to_owned())).copied()
}

/// Runs `strom <args>` with `--bootstrap-server`; returns its output.
fn strom(bootstrap: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(strom_bin());
    cmd.args(args)
        .arg("--bootstrap-server")
        .arg(bootstrap)
        .env("STROM_LOG", "warn")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn strom cli");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    child.wait_with_output().expect("strom cli")
}

/// `strom <args> --output json`, which must succeed.
fn json(bootstrap: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--output", "json"]);
    let out = strom(bootstrap, &all, None);
    assert!(
        out.status.success(),
        "strom {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "strom {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn health_endpoints_and_metrics_on_one_node() {
    let s = Strom::start();
    let admin = SocketAddr::from(([127, 0, 0, 1], s.admin_port));
    assert_eq!(http(admin, "GET", "/healthz"), (200, "ok\n".to_owned()));
    assert_eq!(http(admin, "GET", "/readyz").0, 200);
    assert_eq!(http(admin, "GET", "/nope").0, 404);
    assert_eq!(http(admin, "PUT", "/metrics").0, 405);
    let b = s.bootstrap();
    ok(&strom(
        &b,
        &["topics", "create", "m", "--partitions", "2"],
        None,
    ));
    let lines: String = (0..250).map(|i| format!("k{i}:v{i}\n")).collect();
    let out = strom(
        &b,
        &["produce", "-t", "m", "--key-separator", ":"],
        Some(&lines),
    );
    ok(&out);
    let out = strom(
        &b,
        &[
            "consume",
            "-t",
            "m",
            "--from-beginning",
            "--max-messages",
            "250",
            "--timeout-ms",
            "5000",
        ],
        None,
    );
    assert_eq!(ok(&out).lines().count(), 250);
    let m = scrape(admin);
    assert_eq!(
        metric(
            &m,
            "kafka_server_brokertopicmetrics_messagesinpersec",
            "topic=m"
        ),
        Some(250.0)
    );
    let bytes_in = metric(
        &m,
        "kafka_server_brokertopicmetrics_bytesinpersec",
        "topic=m",
    )
    .unwrap();
    let bytes_out = metric(
        &m,
        "kafka_server_brokertopicmetrics_bytesoutpersec",
        "topic=m",
    )
    .unwrap();
    assert!(bytes_in > 250.0 * 4.0, "bytes in {bytes_in}");
    assert!(
        bytes_out >= bytes_in,
        "consumed everything: out {bytes_out} in {bytes_in}"
    );
    let size: f64 = (0..2)
        .map(|p| metric(&m, "kafka_log_log_size", &format!("partition={p},topic=m")).unwrap())
        .sum();
    assert_eq!(size, bytes_in, "the log holds the batches as received");
    let produced: f64 = (0..2)
        .map(|p| {
            metric(
                &m,
                "kafka_topic_partition_current_offset",
                &format!("partition={p},topic=m"),
            )
            .unwrap()
        })
        .sum();
    assert_eq!(produced, 250.0);
    assert_eq!(
        metric(&m, "kafka_server_replicamanager_leadercount", ""),
        metric(&m, "kafka_server_replicamanager_partitioncount", "")
    );
    assert_eq!(
        metric(
            &m,
            "kafka_controller_kafkacontroller_activecontrollercount",
            ""
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &m,
            "kafka_controller_kafkacontroller_offlinepartitionscount",
            ""
        ),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &m,
            "kafka_server_replicamanager_underreplicatedpartitions",
            ""
        ),
        Some(0.0)
    );
    assert_eq!(metric(&m, "kafka_brokers", ""), Some(1.0));
    assert!(
        metric(
            &m,
            "kafka_network_requestmetrics_requestspersec",
            "request=Produce"
        )
        .unwrap()
            >= 1.0
    );
    assert!(
        metric(
            &m,
            "kafka_network_requestmetrics_totaltimems_count",
            "request=Fetch"
        )
        .unwrap()
            >= 1.0
    );
    assert_eq!(
        metric(&m, "kafka_server_replicamanager_isrshrinkspersec", ""),
        Some(0.0)
    );
    let total = m
        .iter()
        .find(|((n, _), _)| n == "strom_log_dir_total_bytes")
        .map(|(_, v)| *v)
        .unwrap();
    let free = m
        .iter()
        .find(|((n, _), _)| n == "strom_log_dir_free_bytes")
        .map(|(_, v)| *v)
        .unwrap();
    assert!(total > 0.0 && free <= total);
}

#[test]
fn topics_tools_create_describe_alter_apply_delete() {
    let s = Strom::start();
    let b = s.bootstrap();
    let created = json(
        &b,
        &[
            "topics",
            "create",
            "t1",
            "--partitions",
            "2",
            "--config",
            "retention.ms=1000",
        ],
    );
    assert_eq!(created["result"], "created");
    // Creating again fails with Kafka's error, unless --if-not-exists.
    let again = strom(&b, &["topics", "create", "t1"], None);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("TopicAlreadyExists"));
    assert_eq!(
        json(&b, &["topics", "create", "t1", "--if-not-exists"])["result"],
        "exists"
    );
    let d = json(&b, &["topics", "describe", "t1"]);
    assert_eq!(d[0]["name"], "t1");
    assert_eq!(d[0]["partitions"].as_array().unwrap().len(), 2);
    assert_eq!(d[0]["partitions"][0]["leader"], 1);
    assert_eq!(d[0]["configs"]["retention.ms"], "1000");
    ok(&strom(
        &b,
        &[
            "topics",
            "alter",
            "t1",
            "--partitions",
            "4",
            "--delete-config",
            "retention.ms",
            "--config",
            "cleanup.policy=compact",
        ],
        None,
    ));
    let d = json(&b, &["topics", "describe", "t1"]);
    assert_eq!(d[0]["partitions"].as_array().unwrap().len(), 4);
    assert_eq!(d[0]["configs"].as_object().unwrap().len(), 1, "{d}");
    assert_eq!(d[0]["configs"]["cleanup.policy"], "compact");

    let file = s.dir.path().join("topics.yaml");
    std::fs::write(
        &file,
        "topics:\n  - name: todo.tasks.created\n    partitions: 3\n    replicationFactor: 1\n    configs:\n      retention.ms: \"604800000\"\n      compression.type: lz4\n  - name: t1\n    partitions: 4\n    configs:\n      cleanup.policy: compact\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let dry = json(&b, &["topics", "apply", "-f", f, "--dry-run"]);
    assert_eq!(dry["created"], serde_json::json!(["todo.tasks.created"]));
    assert!(
        json(&b, &["topics", "list"])
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["name"] != "todo.tasks.created"),
        "a dry run changes nothing"
    );
    let first = json(&b, &["topics", "apply", "-f", f]);
    assert_eq!(first["created"], serde_json::json!(["todo.tasks.created"]));
    assert_eq!(first["unchanged"], serde_json::json!(["t1"]));
    let second = json(&b, &["topics", "apply", "-f", f]);
    assert_eq!(second["created"], serde_json::json!([]));
    assert_eq!(second["configs_set"], serde_json::json!([]));
    assert_eq!(
        second["unchanged"],
        serde_json::json!(["todo.tasks.created", "t1"])
    );
    // Drift: the file asks for more partitions and another config; fewer partitions is drift.
    std::fs::write(
        &file,
        "topics:\n  - name: todo.tasks.created\n    partitions: 5\n    configs:\n      compression.type: snappy\n  - name: t1\n    partitions: 2\n",
    )
    .unwrap();
    let third = json(&b, &["topics", "apply", "-f", f]);
    assert_eq!(third["partitions_raised"][0]["to"], "5");
    assert_eq!(third["configs_set"][0]["from"], "lz4");
    assert_eq!(third["configs_set"][0]["to"], "snappy");
    assert_eq!(third["drift"][0]["topic"], "t1");
    assert_eq!(third["drift"][0]["key"], "partitions");
    let bad = s.dir.path().join("bad.yaml");
    std::fs::write(&bad, "topics:\n  - name: x\n    partitons: 3\n").unwrap();
    let out = strom(&b, &["topics", "apply", "-f", bad.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a valid topics file"));

    let listed = json(&b, &["topics", "list", "--exclude-internal"]);
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["t1", "todo.tasks.created"]);
    assert_eq!(json(&b, &["topics", "delete", "t1"])["result"], "deleted");
    let out = strom(&b, &["topics", "delete", "t1"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("UnknownTopicOrPartition"));
    // No broker there: a clear message and exit code 1.
    let out = strom("127.0.0.1:1", &["topics", "list"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect to 127.0.0.1:1"));
}

#[test]
fn groups_tools_lag_reset_delete() {
    let s = Strom::start_with(&[("group.initial.rebalance.delay.ms", "0")]);
    let b = s.bootstrap();
    ok(&strom(
        &b,
        &["topics", "create", "g", "--partitions", "3"],
        None,
    ));
    produce_keyed(&b, "g", 300);
    // A real group member reads 120 records and commits where it stopped.
    let committed = consume_and_commit(&b, "ops", "g", 120);
    let lag = json(&b, &["groups", "lag", "ops"]);
    let rows = lag.as_array().unwrap();
    assert_eq!(rows.len(), committed.len(), "{lag}");
    let m = scrape(SocketAddr::from(([127, 0, 0, 1], s.admin_port)));
    let mut ends = 0;
    for r in rows {
        let p = r["partition"].as_i64().unwrap() as i32;
        let end = r["log_end_offset"].as_i64().unwrap();
        ends += end;
        // Lag is produced minus committed, in the CLI and in the broker's own metric.
        assert_eq!(r["current_offset"].as_i64(), Some(committed[&p]), "{r}");
        assert_eq!(r["lag"].as_i64(), Some(end - committed[&p]), "{r}");
        let labels = format!("consumergroup=ops,partition={p},topic=g");
        assert_eq!(
            metric(&m, "kafka_consumergroup_lag", &labels),
            Some((end - committed[&p]) as f64)
        );
        assert_eq!(
            metric(&m, "kafka_consumergroup_current_offset", &labels),
            Some(committed[&p] as f64)
        );
    }
    if committed.len() == 3 {
        assert_eq!(ends, 300);
    }
    let listed = json(&b, &["groups", "list"]);
    assert_eq!(listed[0]["group"], "ops");
    assert_eq!(listed[0]["state"], "Empty");
    let d = json(&b, &["groups", "describe", "ops"]);
    assert_eq!(d["state"], "Empty");
    assert_eq!(d["partitions"].as_array().unwrap().len(), committed.len());

    let plan = json(
        &b,
        &[
            "groups",
            "reset-offsets",
            "ops",
            "--topic",
            "g",
            "--to-earliest",
        ],
    );
    assert_eq!(plan["executed"], false);
    assert!(plan["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["new_offset"] == 0));
    assert_eq!(
        json(&b, &["groups", "lag", "ops"]),
        lag,
        "a dry run commits nothing"
    );
    let done = json(
        &b,
        &[
            "groups",
            "reset-offsets",
            "ops",
            "--topic",
            "g",
            "--to-latest",
            "--execute",
        ],
    );
    assert_eq!(done["executed"], true);
    let after = json(&b, &["groups", "lag", "ops"]);
    assert!(
        after.as_array().unwrap().iter().all(|r| r["lag"] == 0),
        "{after}"
    );

    // The terminal consumer resumes from the group's offsets and commits what it printed.
    ok(&strom(
        &b,
        &[
            "groups",
            "reset-offsets",
            "ops",
            "--topic",
            "g",
            "--to-offset",
            "0",
            "--execute",
        ],
        None,
    ));
    let out = strom(
        &b,
        &[
            "consume",
            "-t",
            "g",
            "-g",
            "ops",
            "--max-messages",
            "300",
            "--timeout-ms",
            "5000",
        ],
        None,
    );
    let printed = ok(&out);
    let mut values: Vec<i64> = printed.lines().map(|l| l.parse().unwrap()).collect();
    values.sort();
    assert_eq!(values, (0..300).collect::<Vec<_>>());
    assert!(json(&b, &["groups", "lag", "ops"])
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["lag"] == 0));

    assert_eq!(
        json(&b, &["groups", "delete", "ops"]),
        serde_json::json!(["ops"])
    );
    let out = strom(&b, &["groups", "describe", "ops"], None);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Writes `count` records `key<i>` → `<i>` to `topic` with `strom produce`.
fn produce_keyed(bootstrap: &str, topic: &str, count: usize) {
    let lines: String = (0..count).map(|i| format!("key{i}:{i}\n")).collect();
    ok(&strom(
        bootstrap,
        &["produce", "-t", topic, "--key-separator", ":"],
        Some(&lines),
    ));
}

/// A librdkafka group member polls `count` records, commits its positions synchronously and
/// leaves; returns the committed offset per partition.
fn consume_and_commit(
    bootstrap: &str,
    group: &str,
    topic: &str,
    count: usize,
) -> BTreeMap<i32, i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    let mut positions: BTreeMap<i32, i64> = BTreeMap::new();
    let mut seen = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while seen < count {
        assert!(std::time::Instant::now() < deadline, "consumed only {seen}");
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            use rdkafka::Message;
            positions.insert(m.partition(), m.offset() + 1);
            seen += 1;
        }
    }
    let mut tpl = TopicPartitionList::new();
    for (p, o) in &positions {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*o))
            .unwrap();
    }
    c.commit(&tpl, CommitMode::Sync).unwrap();
    c.unsubscribe();
    drop(c);
    positions
}

/// Sum of a gauge over the running nodes.
fn cluster_sum(c: &Cluster, name: &str) -> f64 {
    c.running()
        .iter()
        .map(|&n| {
            let node = c.node(n);
            let m = scrape(SocketAddr::from((node.ip, node.admin_port)));
            metric(&m, name, "").unwrap_or_else(|| panic!("node {n} has no {name}"))
        })
        .sum()
}

#[test]
fn cluster_metrics_follow_a_node_kill_and_the_cli_sees_it() {
    let mut c = Cluster::start();
    let b = c.bootstrap();
    for n in 1..=NODES {
        let node = c.node(n);
        assert_eq!(
            http(
                SocketAddr::from((node.ip, node.admin_port)),
                "GET",
                "/readyz"
            )
            .0,
            200
        );
    }
    c.create_topic("ops", 3);
    assert_eq!(
        cluster_sum(&c, "kafka_controller_kafkacontroller_activecontrollercount"),
        1.0
    );
    assert_eq!(
        cluster_sum(&c, "kafka_server_replicamanager_underreplicatedpartitions"),
        0.0
    );
    let info = json(&b, &["cluster", "info"]);
    let partitions = info["partitions"].as_f64().unwrap();
    assert_eq!(
        cluster_sum(&c, "kafka_server_replicamanager_leadercount"),
        partitions
    );
    assert_eq!(
        cluster_sum(&c, "kafka_server_replicamanager_partitioncount"),
        3.0 * partitions
    );
    assert_eq!(info["brokers"].as_array().unwrap().len(), 3);
    assert_eq!(info["under_replicated"], serde_json::json!([]));

    // Lag where the group's coordinator holds no replica: an RF1 topic spread over the three
    // nodes, so the coordinator must ask the other partitions' leaders for their high watermark.
    ok(&strom(
        &b,
        &[
            "topics",
            "create",
            "solo",
            "--partitions",
            "3",
            "--replication-factor",
            "1",
        ],
        None,
    ));
    produce_keyed(&b, "solo", 300);
    // 250 of 300 records: more than any two partitions hold, so all three get a commit.
    let committed = consume_and_commit(&b, "solo-readers", "solo", 250);
    assert_eq!(committed.len(), 3, "{committed:?}");
    let ends: BTreeMap<i64, i64> = json(&b, &["groups", "lag", "solo-readers"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["partition"].as_i64().unwrap(),
                r["log_end_offset"].as_i64().unwrap(),
            )
        })
        .collect();
    let scrapes: Vec<_> = (1..=NODES)
        .map(|n| scrape(SocketAddr::from((c.node(n).ip, c.node(n).admin_port))))
        .collect();
    let coordinator = scrapes
        .iter()
        .find(|m| {
            let labels = "consumergroup=solo-readers,partition=0,topic=solo";
            metric(m, "kafka_consumergroup_current_offset", labels).is_some()
        })
        .expect("no node reports the group's committed offsets");
    let remote = committed
        .keys()
        .filter(|p| {
            metric(
                coordinator,
                "kafka_log_log_size",
                &format!("partition={p},topic=solo"),
            )
            .is_none()
        })
        .count();
    assert!(
        remote >= 1,
        "every solo partition has a replica on the coordinator"
    );
    for (p, offset) in &committed {
        let labels = format!("consumergroup=solo-readers,partition={p},topic=solo");
        assert_eq!(
            metric(coordinator, "kafka_consumergroup_lag", &labels),
            Some((ends[&i64::from(*p)] - offset) as f64),
            "lag of solo-{p}"
        );
    }

    let killed = std::time::Instant::now();
    c.kill9(3);
    wait_until(
        Duration::from_secs(30),
        || cluster_sum(&c, "kafka_server_replicamanager_underreplicatedpartitions") > 0.0,
        || "under-replicated partitions never rose after a kill".to_owned(),
    );
    eprintln!(
        "under-replicated partitions > 0 after {:?}",
        killed.elapsed()
    );
    let info = json(&b, &["cluster", "info"]);
    assert!(
        !info["under_replicated"].as_array().unwrap().is_empty(),
        "{info}"
    );
    assert_eq!(
        cluster_sum(&c, "kafka_controller_kafkacontroller_activecontrollercount"),
        1.0
    );

    let restarted = std::time::Instant::now();
    c.restart(3);
    wait_until(
        Duration::from_secs(60),
        || cluster_sum(&c, "kafka_server_replicamanager_underreplicatedpartitions") == 0.0,
        || "under-replicated partitions did not return to 0 after the node rejoined".to_owned(),
    );
    eprintln!(
        "under-replicated partitions back to 0 {:?} after the restart",
        restarted.elapsed()
    );
    let expands: f64 = c
        .running()
        .iter()
        .map(|&n| {
            let node = c.node(n);
            metric(
                &scrape(SocketAddr::from((node.ip, node.admin_port))),
                "kafka_server_replicamanager_isrexpandspersec",
                "",
            )
            .unwrap()
        })
        .sum();
    assert!(expands >= 1.0, "ISR expansions after the rejoin: {expands}");
    let info = json(&b, &["cluster", "info"]);
    assert_eq!(info["under_replicated"], serde_json::json!([]));

    // Controlled shutdown through the admin listener (the preStop hook): the node gives up
    // leadership and reports not ready.
    let node = c.node(2);
    let admin = SocketAddr::from((node.ip, node.admin_port));
    assert_eq!(http(admin, "POST", "/shutdown").0, 200);
    assert_eq!(http(admin, "GET", "/readyz").0, 503);
    let m = scrape(admin);
    assert_eq!(
        metric(&m, "kafka_server_replicamanager_leadercount", ""),
        Some(0.0)
    );
}
