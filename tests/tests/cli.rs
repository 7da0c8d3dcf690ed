//! The `strom` binary's configuration surface: server.properties, STROM_* variables, flags, and
//! clear errors for unknown or invalid keys.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::process::Command;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use strom_tests::{free_port, strom_bin};

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run_expecting_failure(args: &[&str], envs: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let out = Command::new(strom_bin())
        .arg("serve")
        .args(["--listeners", &format!("PLAINTEXT://127.0.0.1:{port}")])
        .args(["--log-dirs", &dir.path().display().to_string()])
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .expect("run strom");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn unknown_and_invalid_keys_stop_startup_naming_the_key() {
    let (code, err) = run_expecting_failure(&["--override", "log.retention.bogus=5"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("log.retention.bogus"), "{err}");

    let (code, err) = run_expecting_failure(&["--override", "num.partitions=lots"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("num.partitions") && err.contains("lots"),
        "{err}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let props = dir.path().join("server.properties");
    std::fs::write(&props, "node.id=1\nzookeeper.connect=localhost:2181\n").expect("write");
    let (code, err) = run_expecting_failure(&["--config", &props.display().to_string()], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("zookeeper.connect"), "{err}");
}

#[test]
fn properties_file_env_and_flags_are_layered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let props = dir.path().join("server.properties");
    // The file asks for 2 partitions, the environment for 3, and a flag wins with 4.
    std::fs::write(
        &props,
        format!(
            "# a Kafka-style file\nbroker.id=7\nlisteners=PLAINTEXT://127.0.0.1:{port}\nadvertised.listeners=PLAINTEXT://127.0.0.1:{port}\nlog.dirs={}\nnum.partitions=2\nnum.network.threads=3\n",
            dir.path().join("data").display()
        ),
    )
    .expect("write");
    let child = Command::new(strom_bin())
        .args([
            "--config",
            &props.display().to_string(),
            "--override",
            "num.partitions=4",
            // Any free port: the default 9644 may be taken by another broker on the machine.
            "--override",
            "admin.listener=127.0.0.1:0",
        ])
        .env("STROM_NUM_PARTITIONS", "3")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let _guard = KillOnDrop(child);
    let bs = format!("127.0.0.1:{port}");
    // Consumers do not auto-create topics unless asked to.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bs)
        .set("allow.auto.create.topics", "true")
        .create()
        .expect("client");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let md = loop {
        match consumer.fetch_metadata(Some("layered"), Duration::from_secs(2)) {
            Ok(md) if !md.topics().is_empty() && !md.topics()[0].partitions().is_empty() => {
                break md
            }
            _ => assert!(
                std::time::Instant::now() < deadline,
                "broker did not come up"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        md.brokers().iter().map(|b| b.id()).collect::<Vec<_>>(),
        vec![7]
    );
    assert_eq!(md.topics()[0].partitions().len(), 4);
}
