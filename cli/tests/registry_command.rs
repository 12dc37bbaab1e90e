//! `vecsync registry` as a user runs it: serves the API, keeps ids in its
//! data file across a restart, and stops cleanly on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(port: u16, data: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_vecsync"))
        .args([
            "registry",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data",
        ])
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

async fn wait_ready(base: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if reqwest::get(format!("{base}/subjects")).await.is_ok() {
            return;
        }
        // Poll interval of a wait that ends as soon as the server answers.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("registry at {base} did not come up");
}

fn terminate(child: Child) -> String {
    let status = Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "exit status {:?}", out.status);
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn register(base: &str, subject: &str, schema: &str) -> Value {
    let resp = reqwest::Client::new()
        .post(format!("{base}/subjects/{subject}/versions"))
        .header("content-type", "application/vnd.schemaregistry.v1+json")
        .body(json!({"schema": schema}).to_string())
        .send()
        .await
        .unwrap();
    serde_json::from_str(&resp.text().await.unwrap()).unwrap()
}

#[tokio::test]
async fn registry_command_keeps_ids_across_restarts_and_stops_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("vecsync-cli-registry-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("registry.json");
    let _ = std::fs::remove_file(&data);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");

    let child = start(port, &data);
    wait_ready(&base).await;
    assert_eq!(
        register(&base, "a-value", r#""string""#).await,
        json!({"id": 1})
    );
    assert_eq!(
        register(&base, "b-value", r#""long""#).await,
        json!({"id": 2})
    );
    let log = terminate(child);
    assert!(log.contains("not for production"), "{log}");

    let child = start(port, &data);
    wait_ready(&base).await;
    assert_eq!(
        register(&base, "b-value", r#""long""#).await,
        json!({"id": 2})
    );
    let by_id: Value = serde_json::from_str(
        &reqwest::get(format!("{base}/schemas/ids/1"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(by_id["schema"], r#""string""#);
    terminate(child);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn help_says_it_is_for_development() {
    let out = Command::new(env!("CARGO_BIN_EXE_vecsync"))
        .args(["registry", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("DEVELOPMENT"), "{help}");
    assert!(
        help.contains("Confluent Schema Registry, Karapace, Apicurio or Redpanda"),
        "{help}"
    );
}
