//! `strom verify`: a live run against a real broker finds nothing and records a complete
//! history; `--check` re-checks a history, naming the anomaly it holds, and refuses a
//! malformed one with its line number.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use strom_tests::{strom_bin, Strom};
use strom_verify::history::{self, Event, Mode, SendOutcome};

/// Exit code, stdout and stderr of `strom <args>`, killed after `limit`.
fn strom(args: &[&str], limit: Duration) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = Command::new(strom_bin())
        .args(args)
        .env("STROM_LOG", "info")
        .stdout(Stdio::from(
            std::fs::File::create(&out_path).expect("stdout file"),
        ))
        .stderr(Stdio::from(
            std::fs::File::create(&err_path).expect("stderr file"),
        ))
        .spawn()
        .expect("run strom");
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "strom {args:?} still running after {limit:?}; stderr:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (
        status.code().unwrap_or(-1),
        std::fs::read_to_string(&out_path).expect("stdout"),
        std::fs::read_to_string(&err_path).expect("stderr"),
    )
}

/// The anomaly rows of a table: (class, count).
fn counts(table: &str) -> Vec<(String, u64)> {
    table
        .lines()
        .skip_while(|l| !l.starts_with("anomaly"))
        .skip(1)
        .take_while(|l| !l.starts_with("sends:"))
        .map(|l| {
            let mut cells = l.split_whitespace();
            let class = cells.next().expect("class").to_owned();
            let n = cells.next().expect("count").parse().expect("a count");
            (class, n)
        })
        .collect()
}

/// `N` in `<mode> ok=N` on the table's `sends:` line.
fn acked(table: &str, mode: &str) -> u64 {
    let line = table
        .lines()
        .find(|l| l.starts_with("sends:"))
        .expect("a sends line");
    line.trim_start_matches("sends:")
        .split(';')
        .map(str::trim)
        .find_map(|part| {
            let rest = part.strip_prefix(mode)?.strip_prefix(' ')?;
            rest.split_whitespace()
                .find_map(|kv| kv.strip_prefix("ok="))
                .map(|n| n.parse().expect("a count"))
        })
        .unwrap_or(0)
}

#[test]
fn a_live_run_against_a_healthy_broker_finds_nothing() {
    let broker = Strom::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let history_path = dir.path().join("history.jsonl");
    let history_arg = history_path.display().to_string();
    let bootstrap = broker.bootstrap();
    let (code, out, err) = strom(
        &[
            "verify",
            "-b",
            &bootstrap,
            "--seconds",
            "5",
            "--replication-factor",
            "1",
            "--history",
            &history_arg,
        ],
        Duration::from_secs(180),
    );
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("verdict: OK"), "{out}");
    let rows = counts(&out);
    assert_eq!(rows.len(), strom_verify::Anomaly::ALL.len(), "{out}");
    assert!(rows.iter().all(|(_, n)| *n == 0), "{out}");
    for mode in ["idempotent_all", "all", "one"] {
        assert!(
            acked(&out, mode) > 0,
            "no acknowledged {mode} sends:\n{out}"
        );
    }
    let polled: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("reads: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("a reads line");
    assert!(polled > 0, "{out}");
    assert!(out.contains(&history_arg), "{out}");

    let text = std::fs::read_to_string(&history_path).expect("history");
    let events = history::parse(&text).expect("the history parses");
    let has = |f: fn(&Event) -> bool| events.iter().any(f);
    assert!(has(|e| matches!(
        e,
        Event::Send {
            outcome: SendOutcome::Ok,
            ..
        }
    )));
    assert!(has(
        |e| matches!(e, Event::Poll { records, .. } if !records.is_empty())
    ));
    assert!(has(|e| matches!(e, Event::Watermarks { .. })));
    let finals = events
        .iter()
        .filter(|e| matches!(e, Event::Final { .. }))
        .count();
    assert_eq!(finals, 6, "one final read per partition");
    assert!(strom_verify::check(&events).ok());

    // The same history, re-checked offline, as JSON.
    let (code, out, err) = strom(
        &["verify", "--check", &history_arg, "-o", "json"],
        Duration::from_secs(60),
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["ok"], true, "{out}");
    assert_eq!(v["counts"]["lost-write"], 0, "{out}");
}

fn write_history(path: &Path, events: &[Event]) {
    let lines: Vec<String> = events.iter().map(history::line).collect();
    std::fs::write(path, lines.join("\n") + "\n").expect("write history");
}

#[test]
fn check_names_a_lost_acknowledged_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("lost.jsonl");
    let send = |n: u32, t: u64| Event::Send {
        invoked_ms: t,
        t_ms: t + 1,
        producer: "p".into(),
        mode: Mode::IdempotentAll,
        topic: "t".into(),
        partition: 0,
        value: format!("p-{n}"),
        outcome: SendOutcome::Ok,
        offset: Some(i64::from(n)),
        error: None,
    };
    // p-0 was acknowledged at offset 0, yet the final read of [0, 2) holds only p-1.
    write_history(
        &path,
        &[
            send(0, 0),
            send(1, 10),
            Event::Final {
                t_ms: 100,
                topic: "t".into(),
                partition: 0,
                log_start: 0,
                high_watermark: 2,
                records: vec![(1, "p-1".into())],
            },
        ],
    );
    let (code, out, err) = strom(
        &["verify", "--check", &path.display().to_string()],
        Duration::from_secs(60),
    );
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("ANOMALIES FOUND"), "{out}");
    let lost = counts(&out)
        .into_iter()
        .find(|(class, _)| class == "lost-write")
        .map(|(_, n)| n);
    assert_eq!(lost, Some(1), "{out}");
    assert!(out.contains("p-0"), "the example names the value:\n{out}");
}

#[test]
fn check_refuses_a_malformed_history_naming_the_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.jsonl");
    let good = history::line(&Event::Info {
        t_ms: 0,
        message: "start".into(),
    });
    std::fs::write(&path, format!("{good}\n{{\"type\": \"send\", \"t_ms\": \n")).expect("write");
    let (code, out, err) = strom(
        &["verify", "--check", &path.display().to_string()],
        Duration::from_secs(60),
    );
    assert_eq!(code, 2, "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("line 2"), "{err}");

    let (code, _, err) = strom(
        &[
            "verify",
            "--check",
            &dir.path().join("absent.jsonl").display().to_string(),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(code, 2, "{err}");
}
