//! `vecsync demo` as a newcomer runs it, shortened: three regions replicate
//! to each other, converge, and answer the same query the same way.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn the_demo_converges_and_answers_alike_everywhere() {
    let out = Command::new(env!("CARGO_BIN_EXE_vecsync"))
        .args([
            "demo",
            "--duration",
            "4",
            "--dimension",
            "32",
            "--rate",
            "150",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let converged = stdout
        .lines()
        .find(|l| l.starts_with("converged: 3 regions hold the same state"))
        .unwrap_or_else(|| panic!("no convergence line:\n{stdout}"));
    assert!(converged.contains("points, "), "{converged}");
    assert!(
        stdout.contains("same nearest neighbours in every region"),
        "{stdout}"
    );
    let answers: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nearest 5 in "))
        .map(|l| l.split_once(' ').unwrap().1.trim())
        .collect();
    assert_eq!(answers.len(), 3, "{stdout}");
    assert!(answers.iter().all(|a| *a == answers[0] && !a.is_empty()));
    // Every region pair shows applied events in the last table.
    let last_table: Vec<&str> = stdout
        .rsplit_once("origin → region")
        .unwrap()
        .1
        .lines()
        .filter(|l| l.contains(" → "))
        .collect();
    assert_eq!(last_table.len(), 6, "{stdout}");
    for row in last_table {
        let applied: u64 = row.split_whitespace().nth(3).unwrap().parse().unwrap();
        assert!(applied > 0, "{row}");
    }
    assert!(stdout.contains("% saved"), "{stdout}");
}
