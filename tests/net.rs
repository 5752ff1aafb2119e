//! Network code against servers on 127.0.0.1: The Met's Collection API that fails, stalls and
//! rate-limits on purpose, and an hf-hub-compatible server for pretrained weights.
mod common;

use common::http::{Response, serve};
use common::*;
use serde_json::Value;
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

fn png_bytes(class: usize) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    class_image(class, 1, 24, 18).write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// A fake Collection API: object records point at images on the same server. Object 2 answers
/// 500 twice, 3 answers 429 once, 4's image is an HTML error page, 5 stalls past the client's
/// timeout once, 6 has no image, 8's image is cut off at a third the first time (a dropped
/// connection); 1 is well behaved. (The Met's search, blocks and withdrawn works: tests/met.rs.)
fn met_server() -> (common::http::Server, Arc<Mutex<HashMap<String, usize>>>) {
    let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let h = hits.clone();
    let base = Arc::new(Mutex::new(String::new()));
    let b2 = base.clone();
    let server = serve(move |req| {
        let n = {
            let mut m = h.lock().unwrap();
            let c = m.entry(req.path.clone()).or_insert(0);
            *c += 1;
            *c
        };
        let base = b2.lock().unwrap().clone();
        if let Some(id) = req.path.strip_prefix("/public/collection/v1/objects/") {
            let id: u64 = id.parse().unwrap();
            match (id, n) {
                (2, 1..=2) => return Response::status(500),
                (3, 1) => return Response::status(429).header("Retry-After", "1"),
                (5, 1) => return Response { stall: Some(std::time::Duration::from_secs(3)), ..Response::ok("{}") },
                _ => {}
            }
            let img = if id == 6 { String::new() } else { format!("{base}/img/{id}.png") };
            let class = if id == 7 { "Prints" } else { "Paintings" };
            return Response::ok(serde_json::json!({"objectID": id, "primaryImage": img, "primaryImageSmall": img, "isPublicDomain": true, "classification": class, "culture": "France", "title": format!("Object {id}")}).to_string());
        }
        if let Some(id) = req.path.strip_prefix("/img/") {
            return if id.starts_with("4.") {
                Response::ok("<!DOCTYPE html><html>Service unavailable</html>")
            } else if id.starts_with("8.") && n == 1 {
                let whole = png_bytes(id.len());
                Response::ok(whole[..whole.len() / 3].to_vec())
            } else {
                Response::ok(png_bytes(id.len()))
            };
        }
        Response::status(404)
    });
    *base.lock().unwrap() = server.url.clone();
    (server, hits)
}

fn csv_with(dir: &std::path::Path, ids: &[u64]) -> std::path::PathBuf {
    let p = dir.join("MetObjects.csv");
    let mut f = std::fs::File::create(&p).unwrap();
    f.write_all(MET_HEADER.trim_end().as_bytes()).unwrap();
    f.write_all(b"\r\n").unwrap();
    for id in ids {
        f.write_all(painting(*id, "", "France", "").as_bytes()).unwrap();
    }
    p
}

#[test]
fn download_retries_reports_and_resumes() {
    let (server, hits) = met_server();
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    let csv = csv_with(dir.path(), &[1, 2, 3, 4, 5, 6, 8]);
    let args = [
        "import",
        "met",
        "--csv",
        csv.to_str().unwrap(),
        "--min-per-group",
        "0",
        "--download",
        "--api",
        &server.url,
        "--timeout",
        "0.5",
        "--retries",
        "3",
        "--rate",
        "200",
        "--workers",
        "3",
        "--json",
    ];
    let (code, out, err) = run(&ws, &args);
    assert_eq!(code, 0, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let d = &report["download"];
    assert_eq!((d["downloaded"].as_u64(), d["no_image"].as_u64()), (Some(5), Some(1)), "{d}");
    let failed = d["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0][0], "4");
    assert!(failed[0][1].as_str().unwrap().contains("HTML page"), "{}", failed[0][1]);
    for id in [1, 2, 3, 5, 8] {
        assert!(ws.join(format!("images/{id}.jpg")).is_file(), "image {id}");
    }
    assert!(!ws.join("images/4.jpg").exists(), "a bad image is never kept");
    let leftovers: Vec<_> = std::fs::read_dir(ws.join("images"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "no half-written files");
    {
        let h = hits.lock().unwrap();
        assert_eq!(h["/public/collection/v1/objects/2"], 3, "two 500s, then success");
        assert_eq!(h["/public/collection/v1/objects/3"], 2, "one 429, then success");
        assert_eq!(h["/public/collection/v1/objects/5"], 2, "one time-out, then success");
        assert_eq!(h["/img/8.png"], 2, "a truncated image is fetched again, never kept");
    }
    // Again: what is done stays done; only the failed one is tried.
    let (code, out, err) = run(&ws, &args);
    assert_eq!(code, 0, "{err}");
    let d: Value = serde_json::from_str::<Value>(&out).unwrap()["download"].clone();
    assert_eq!((d["downloaded"].as_u64(), d["already_there"].as_u64()), (Some(0), Some(5)), "{d}");
    assert_eq!(hits.lock().unwrap()["/img/1.png"], 1);
}

#[test]
fn an_image_left_by_an_interrupted_run_is_kept_without_downloading() {
    let (server, hits) = met_server();
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    let csv = csv_with(dir.path(), &[1]);
    ok(&ws, &["import", "met", "--csv", csv.to_str().unwrap(), "--min-per-group", "0"]);
    // A run killed after writing the image but before recording it.
    std::fs::write(ws.join("images/1.jpg"), png_bytes(3)).unwrap();
    ok(
        &ws,
        &["import", "met", "--csv", csv.to_str().unwrap(), "--min-per-group", "0", "--download", "--api", &server.url],
    );
    assert!(hits.lock().unwrap().is_empty(), "nothing fetched: {:?}", server.log.lock().unwrap());
    let s: Value = serde_json::from_str(&ok(&ws, &["stats", "--json"])).unwrap();
    assert_eq!(s["total_initial"], 1);
}

/// A safetensors file of a few tensors.
fn tiny_weights() -> Vec<u8> {
    let t = candle_core::Tensor::arange(0f32, 6.0, &candle_core::Device::Cpu).unwrap().reshape((2, 3)).unwrap();
    safetensors::serialize([("fc.weight", &t)], None).unwrap()
}

fn hub_server(body: Vec<u8>) -> common::http::Server {
    serve(move |req| {
        if req.path == "/timm/resnet50.tv_in1k/resolve/main/model.safetensors" {
            Response::ok(body.clone())
                .header("ETag", "\"0123456789abcdef\"")
                .header("X-Repo-Commit", "0123456789012345678901234567890123456789")
        } else {
            Response::status(404)
        }
    })
}

fn fetch(cache: &std::path::Path, endpoint: &str, offline: bool) -> (i32, String, String) {
    hub_cmd(cache, endpoint, offline, &["weights", "fetch", "resnet50"])
}

#[test]
fn weights_download_into_the_cache_and_offline_reads_only_the_cache() {
    let body = tiny_weights();
    let server = hub_server(body.clone());
    let cache = tempfile::tempdir().unwrap();
    // Offline with an empty cache: a clear error and no request.
    let (code, _, err) = fetch(cache.path(), &server.url, true);
    assert_ne!(code, 0);
    assert!(err.contains("not in the Hugging Face cache") && err.contains("offline"), "{err}");
    assert!(server.log.lock().unwrap().is_empty());
    // Online: downloaded into the cache.
    let (code, out, err) = fetch(cache.path(), &server.url, false);
    assert_eq!(code, 0, "{err}");
    let path = std::path::PathBuf::from(out.trim());
    assert!(path.starts_with(cache.path()), "{path:?}");
    assert_eq!(std::fs::read(&path).unwrap(), body);
    // Offline again: served from the cache, no request reaches the server.
    let requests = server.log.lock().unwrap().len();
    drop(server);
    let (code, out, err) = fetch(cache.path(), "http://127.0.0.1:9", true);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), path.to_str().unwrap());
    assert!(requests >= 1);
}

#[test]
fn a_download_that_is_not_safetensors_is_refused() {
    let server = hub_server(b"<html>not weights</html>".to_vec());
    let cache = tempfile::tempdir().unwrap();
    let (code, _, err) = fetch(cache.path(), &server.url, false);
    assert_ne!(code, 0);
    assert!(err.contains("not a safetensors file"), "{err}");
}

fn clip_server(files: Vec<(&'static str, Vec<u8>)>) -> common::http::Server {
    serve(move |req| {
        let prefix = "/openai/clip-vit-base-patch32/resolve/refs%2Fpr%2F15/";
        match req.path.strip_prefix(prefix).and_then(|f| files.iter().find(|(n, _)| *n == f)) {
            Some((name, body)) => Response::ok(body.clone())
                .header("ETag", &format!("\"etag-{name}\""))
                .header("X-Repo-Commit", "0123456789012345678901234567890123456789"),
            None => Response::status(404),
        }
    })
}

/// Runs the CLI against a hub at `endpoint` with its own cache (offline: the cache only).
fn hub_cmd(cache: &std::path::Path, endpoint: &str, offline: bool, args: &[&str]) -> (i32, String, String) {
    let mut cmd = std::process::Command::new(bin());
    cmd.args(args).env("HF_HUB_CACHE", cache).env("HF_ENDPOINT", endpoint).env_remove("HF_TOKEN");
    if offline {
        cmd.env("HF_HUB_OFFLINE", "1");
    } else {
        cmd.env_remove("HF_HUB_OFFLINE");
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn clip_fetches_its_four_files_once_then_every_clip_command_runs_offline() {
    let files = common::tiny_clip_files();
    let server = clip_server(files.clone());
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (code, _, err) = hub_cmd(&cache, &server.url, true, &["weights", "fetch", "clip"]);
    assert_ne!(code, 0);
    assert!(err.contains("weights fetch clip") && err.contains("offline"), "{err}");
    let (code, out, err) = hub_cmd(&cache, &server.url, false, &["weights", "fetch", "clip"]);
    assert_eq!(code, 0, "{err}");
    let weights = std::path::PathBuf::from(out.trim());
    assert!(weights.starts_with(&cache));
    for (name, body) in &files {
        assert_eq!(&std::fs::read(weights.with_file_name(name)).unwrap(), body, "{name}");
    }
    // From here on nothing is asked of the network.
    drop(server);
    let ws = dir.path().join("ws");
    let ws_arg = ws.to_str().unwrap();
    assert_eq!(hub_cmd(&cache, "http://127.0.0.1:9", true, &["--workspace", ws_arg, "import", "sample"]).0, 0);
    let (code, out, err) =
        hub_cmd(&cache, "http://127.0.0.1:9", true, &["--workspace", ws_arg, "search", "harbour at sunset", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["works"].as_array().unwrap().len(), 20);
}

#[test]
fn a_clip_checkpoint_missing_a_file_names_it() {
    let files: Vec<_> = common::tiny_clip_files().into_iter().filter(|(n, _)| *n != "merges.txt").collect();
    let server = clip_server(files);
    let cache = tempfile::tempdir().unwrap();
    let (code, _, err) = hub_cmd(cache.path(), &server.url, false, &["weights", "fetch", "clip"]);
    assert_ne!(code, 0);
    assert!(err.contains("merges.txt"), "{err}");
}
