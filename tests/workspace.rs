//! The workspace on disk: crash safety, and the CLI and the app sharing one workspace.
mod common;

use artculture::workspace::Workspace;
use common::*;
use serde_json::Value;
use std::io::Write;

fn big_csv(path: &std::path::Path, n: u64) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    f.write_all(MET_HEADER.trim_end().as_bytes()).unwrap();
    f.write_all(b"\r\n").unwrap();
    let cultures = ["France", "Japan", "China", "Netherlands"];
    for id in 1..=n {
        f.write_all(painting(id, "", cultures[id as usize % 4], "").as_bytes()).unwrap();
    }
}

#[test]
fn kill_9_during_an_import_leaves_a_workspace_that_opens() {
    let dir = tempfile::tempdir().unwrap();
    let (ws, csv) = (dir.path().join("ws"), dir.path().join("big.csv"));
    big_csv(&csv, 60_000);
    // Read-only, so watching never takes the importer's lock.
    let count = || -> usize {
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
        let c = rusqlite::Connection::open_with_flags(ws.join("catalog.sqlite"), flags).unwrap();
        c.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
        c.query_row("SELECT COUNT(*) FROM artworks", [], |r| r.get::<_, i64>(0)).unwrap_or(0) as usize
    };
    // Three kills, each after the import has committed at least one more batch of 1,000 and
    // before it ends, so each lands mid-import.
    for _ in 0..3 {
        let before = if ws.join("catalog.sqlite").exists() { count() } else { 0 };
        let mut child = std::process::Command::new(bin())
            .arg("--workspace")
            .arg(&ws)
            .args(["import", "met", "--csv", csv.to_str().unwrap()])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        while !ws.join("catalog.sqlite").exists() || count() <= before {
            assert!(child.try_wait().unwrap().is_none(), "the import ended before it could be killed");
            assert!(start.elapsed().as_secs() < 120, "no batch committed");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert_eq!(status.code(), None, "killed by the signal, not finished");
        let w = Workspace::open(&ws).expect("the workspace opens after kill -9");
        w.catalog.check_integrity().unwrap();
        let n = count();
        assert!(n > before && n < 60_000, "killed mid-import: {before} -> {n} works");
        assert_eq!(n % 1000, 0, "whole batches only (each batch is one transaction): {n}");
        let s: Value = serde_json::from_str(&ok(&ws, &["stats", "--json"])).unwrap();
        assert!(s["total_initial"].as_u64().is_some());
    }
    // Finishing the import afterwards gives the full table.
    ok(&ws, &["import", "met", "--csv", csv.to_str().unwrap()]);
    let s: Value = serde_json::from_str(&ok(&ws, &["stats", "--json"])).unwrap();
    assert_eq!(s["total_initial"], 60_000);
}

#[test]
fn every_acknowledged_flag_survives_a_killed_flagger() {
    let dir = tempfile::tempdir().unwrap();
    let (ws, csv) = (dir.path().join("ws"), dir.path().join("m.csv"));
    big_csv(&csv, 40);
    ok(&ws, &["import", "met", "--csv", csv.to_str().unwrap(), "--min-per-group", "0"]);
    let mut acknowledged = Vec::new();
    for id in 1..=20u64 {
        ok(&ws, &["flag", &id.to_string(), "--reason", "sculpture"]);
        acknowledged.push(id);
        if id % 5 == 0 {
            // One flagger killed at a random moment of its write.
            let mut child = std::process::Command::new(bin())
                .arg("--workspace")
                .arg(&ws)
                .args(["flag", &(100 + id).to_string(), "--reason", "book"])
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(std::time::Duration::from_millis(id));
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    let w = Workspace::open(&ws).unwrap();
    w.catalog.check_integrity().unwrap();
    for id in acknowledged {
        let aid = w.catalog.resolve_id(&id.to_string()).unwrap();
        assert_eq!(w.catalog.flag_state(aid).unwrap().reason.as_deref(), Some("sculpture"), "flag {id}");
    }
}

#[test]
fn a_workspace_made_by_the_cli_opens_in_the_library_the_app_uses_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    synth_folder(&src, &["Flemish", "Spanish"], 2, 30);
    let ws = dir.path().join("ws");
    ok(&ws, &["import", "folder", src.to_str().unwrap()]);
    {
        // What the app does on a flag.
        let mut w = Workspace::open(&ws).unwrap();
        let works = w.catalog.artworks(&Default::default()).unwrap();
        w.catalog
            .apply_flags(
                &[artculture::catalog::FlagChange {
                    artwork_id: works[0].id,
                    reason: Some(artculture::catalog::FlagReason::Other),
                    note: None,
                }],
                "gui",
            )
            .unwrap();
    }
    let s: Value = serde_json::from_str(&ok(&ws, &["stats", "--json"])).unwrap();
    assert_eq!((s["total_initial"].as_u64(), s["total_final"].as_u64()), (Some(4), Some(3)));
    let (code, _, err) = run(&ws.join("catalog.sqlite"), &["stats"]);
    assert_ne!(code, 0);
    assert!(err.contains("is a file, not a workspace folder"), "{err}");
}
