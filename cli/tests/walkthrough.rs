//! The README's walkthrough, run as written: the `sh` blocks between its
//! `<!-- walkthrough -->` markers, in order, by bash, in a directory holding
//! a copy of `examples/local/`, with this build's `vecsync` on the PATH
//! and Kafka's jars in `VECSYNC_KAFKA_LIBS`. Both regions end up fresh with each other's writes and holding
//! the same points, and so does a copy of one restored from its snapshot.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vecsync_devkit::broker::{skip_without, which};
use vecsync_devkit::kafka::kafka_libs;

/// The walkthrough's shell commands.
fn script(readme: &str) -> String {
    let (_, rest) = readme
        .split_once("<!-- walkthrough -->")
        .expect("start marker");
    let (body, _) = rest
        .split_once("<!-- /walkthrough -->")
        .expect("end marker");
    let mut script = String::new();
    let mut blocks = body.split("```");
    blocks.next();
    while let (Some(code), _) = (blocks.next(), blocks.next()) {
        let code = code.strip_prefix("sh\n").expect("every block is sh");
        script.push_str(code);
    }
    script
}

#[test]
fn the_readme_walkthrough_works_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let script = script(&readme);
    assert!(script.contains("vecsync consume"), "{script}");
    let (Some(libs), Some(_), Some(_)) = (kafka_libs(), which("java"), which("curl")) else {
        skip_without("the walkthrough needs Kafka's jars, java and curl");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let examples = dir.path().join("examples/local");
    std::fs::create_dir_all(&examples).unwrap();
    for region in ["us-east", "eu-west"] {
        for name in [format!("{region}.toml"), format!("{region}.properties")] {
            std::fs::copy(
                root.join("examples/local").join(&name),
                examples.join(&name),
            )
            .unwrap();
        }
    }
    let vecsync = Path::new(env!("CARGO_BIN_EXE_vecsync"));
    let path = std::env::join_paths(
        std::iter::once(vecsync.parent().unwrap().to_path_buf()).chain(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        )),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
    let mut shell = Command::new("bash")
        .args(["-euo", "pipefail", "-c"])
        .arg(format!(
            "{script}\nkill $(jobs -p) 2> /dev/null || true\nwait\n"
        ))
        .current_dir(dir.path())
        .env("PATH", path)
        .env("VECSYNC_KAFKA_LIBS", libs)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(log)
        .process_group(0)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = shell.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // Whatever happened, nothing the script started outlives the test.
    let _ = Command::new("kill")
        .args(["-9", "--", &format!("-{}", shell.id())])
        .status();
    let out = shell.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
    let status = status.unwrap_or_else(|| panic!("timed out:\n{stdout}\n{stderr}"));
    assert!(status.success(), "{status}:\n{stdout}\n{stderr}");

    assert_eq!(stdout.matches("\"fresh\":true").count(), 2, "{stdout}");
    // Both regions, then the copy of us-east restored from its snapshot.
    let digests: Vec<&str> = stdout.lines().filter(|l| l.contains(" points, ")).collect();
    assert_eq!(digests.len(), 3, "{stdout}");
    assert_eq!(digests[0], digests[1], "the regions differ:\n{stdout}");
    assert_eq!(
        digests[0], digests[2],
        "the restored copy differs:\n{stdout}"
    );
    assert!(stdout.contains("restored "), "{stdout}");
    assert!(digests[0].starts_with("2 points, "), "{stdout}");
    assert_eq!(
        stdout.matches("\"de\"").count(),
        2,
        "point 2 in both regions:\n{stdout}"
    );
    assert!(stdout.contains("vecsync_consumer_lag_records{"), "{stdout}");
    assert!(
        stdout.contains("vecsync_replication_lag_seconds_count{"),
        "{stdout}"
    );
}

/// The README's two commands: the test command is the one `.ci/run` runs,
/// and the demo command runs this crate's `demo` (which `demo_command.rs`
/// runs, shortened).
#[test]
fn the_readme_commands_are_the_ones_ci_and_the_demo_test_run() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let ci = std::fs::read_to_string(root.join(".ci/run")).unwrap();
    let test = "cargo nextest run --workspace";
    assert!(
        readme.contains(&format!("\n{test}\n")),
        "README lacks {test}"
    );
    assert!(
        ci.lines().any(|l| l.trim().starts_with(test)),
        ".ci/run does not run {test}"
    );
    let demo = format!("cargo run --release -p {} -- demo", env!("CARGO_PKG_NAME"));
    assert!(
        readme.contains(&format!("\n{demo}\n")),
        "README lacks {demo}"
    );
}
