//! `secmon bench` end to end, with correctness (not speed) asserted: every event
//! published is stored exactly once, every ping comes back, and 1,000 simulated
//! agents keep correct statuses through the real manager. Figures belong in
//! BENCHMARKS.md; these runs are small so the suite stays fast.

use std::process::Command;

use serde_json::Value;

fn bench(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_secmon"))
        .arg("--json")
        .arg("bench")
        .args(args)
        .output()
        .expect("run secmon bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "secmon bench {args:?}: {}\n{stdout}\n{stderr}", out.status);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}\n{stderr}"))
}

#[test]
fn bench_ingest_stores_every_event_exactly_once() {
    let r = bench(&["ingest", "--agents", "8", "--events", "4000", "--batch", "100"]);
    assert_eq!(r["stored"], 4000, "{r:#}");
    assert_eq!((r["lost"].as_u64(), r["extra"].as_u64(), r["ok"].as_bool()), (Some(0), Some(0), Some(true)));
    assert!(r["ingest_events_per_sec"].as_f64().unwrap() > 0.0, "{r:#}");
}

#[test]
fn bench_signed_ingest_through_a_secure_manager_stores_every_event_and_rejects_none() {
    let r = bench(&["ingest", "--agents", "8", "--events", "4000", "--batch", "100", "--signed"]);
    assert_eq!(r["signed"], true, "{r:#}");
    assert_eq!(r["stored"], 4000, "{r:#}");
    assert_eq!(r["rejected"], 0, "a genuine signed event was rejected: {r:#}");
    assert_eq!((r["lost"].as_u64(), r["extra"].as_u64(), r["ok"].as_bool()), (Some(0), Some(0), Some(true)));
}

#[test]
fn bench_command_round_trips_all_come_back() {
    let r = bench(&["command", "--agents", "3", "--count", "60", "--concurrency", "4"]);
    assert_eq!(r["sequential"]["count"], 60, "{r:#}");
    assert_eq!(r["concurrent"]["count"], 60, "{r:#}");
    let (p50, max) =
        (r["sequential"]["p50_ms"].as_f64().unwrap(), r["sequential"]["max_ms"].as_f64().unwrap());
    assert!(0.0 < p50 && p50 <= max, "{r:#}");
}

#[test]
fn bench_fleet_of_1000_agents_keeps_correct_statuses() {
    let r = bench(&[
        "fleet",
        "--agents",
        "1000",
        "--stop",
        "100",
        "--heartbeat-interval",
        "500ms",
        "--heartbeat-timeout",
        "2s",
    ]);
    assert_eq!(r["exact"], true, "disconnected agents are not exactly the silent ones: {r:#}");
    assert_eq!(r["stable"], true, "statuses flapped: {r:#}");
    assert!(
        r["all_disconnected_secs"].as_f64().unwrap() <= r["limit_secs"].as_f64().unwrap(),
        "silent agents not disconnected within timeout + one interval: {r:#}"
    );
    assert_eq!(r["ok"], true, "{r:#}");
}
