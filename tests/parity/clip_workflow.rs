//! CLIP in the product, end to end through the CLI, with a tiny seeded CLIP placed in the
//! workspace's Hugging Face cache as `weights fetch clip` leaves it (no network).
use super::common::*;
use serde_json::Value;
use std::path::Path;

/// The tiny CLIP of [`tiny_clip_files`], written where the hub client looks for
/// `openai/clip-vit-base-patch32` at its weights revision.
pub fn install_tiny_clip(cache: &Path) {
    let repo = cache.join("models--openai--clip-vit-base-patch32");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let refs = repo.join("refs/refs/pr");
    std::fs::create_dir_all(&refs).unwrap();
    std::fs::write(refs.join("15"), commit).unwrap();
    let snap = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snap).unwrap();
    for (name, bytes) in tiny_clip_files() {
        std::fs::write(snap.join(name), bytes).unwrap();
    }
}

fn json(ws: &Path, args: &[&str]) -> Value {
    serde_json::from_str(&ok(ws, args)).unwrap()
}

#[test]
fn clip_ranks_before_any_run_and_answers_more_like_this_and_search_by_words() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    ok(&ws, &["import", "sample"]);
    // Without CLIP: image statistics, and the ranking says so.
    let r = json(&ws, &["rank", "--json", "--limit", "100"]);
    assert_eq!(r["ranked_by"], "image_statistics");
    install_tiny_clip(&dir.path().join("hf-cache"));
    let r = json(&ws, &["rank", "--json", "--limit", "100"]);
    assert_eq!(r["ranked_by"], "clip", "{r}");
    let works = r["works"].as_array().unwrap();
    assert_eq!(works.len(), 32, "every sample work ranked");
    let scores: Vec<f64> = works.iter().map(|w| w["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]) && scores.iter().all(|s| (0.0..=1.0).contains(s)));
    // A suggestion comes with every work CLIP finds likelier not a painting, and only then.
    for w in works {
        assert_eq!(w["suggested"].is_null(), w["score"].as_f64().unwrap() < 0.5, "{w}");
    }
    // `embed` finds every embedding cached by the ranking: nothing left to compute.
    let (code, _, err) = run(&ws, &["embed"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("32 works have CLIP embeddings") && !err.contains("embedded ("), "{err}");
    // The embeddings were cached: a second pass computes nothing.
    let cache_files = std::fs::read_dir(ws.join("features")).unwrap().count();
    assert_eq!(cache_files, 1);

    // More like this: the nearest works, most similar first, the query work left out.
    let first = works[0]["id"].as_str().unwrap().to_string();
    let s = json(&ws, &["similar", &first, "--limit", "5", "--json"]);
    let hits = s["works"].as_array().unwrap();
    assert_eq!(hits.len(), 5);
    assert!(hits.iter().all(|h| h["id"] != first.as_str()), "the query work is left out");
    let sims: Vec<f64> = hits.iter().map(|h| h["similarity"].as_f64().unwrap()).collect();
    assert!(sims.windows(2).all(|w| w[0] >= w[1]));

    let q = json(&ws, &["search", "a snuff box", "--limit", "7", "--json"]);
    assert_eq!(q["works"].as_array().unwrap().len(), 7);
    let (code, _, err) = run(&ws, &["similar", "no-such-work"]);
    assert_ne!(code, 0);
    assert!(err.contains("no-such-work"), "{err}");
}

#[test]
fn a_clip_transfer_run_trains_predicts_with_a_rollout_map_and_maps_cultures() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    ok(&ws, &["import", "sample"]);
    install_tiny_clip(&dir.path().join("hf-cache"));
    // Fine-tuning a ViT is refused with the reason; so is a size its positions do not fit.
    let (code, _, err) = run(&ws, &["train", "--arch", "clip-vit-b32", "--method", "finetune", "--epochs", "1"]);
    assert_ne!(code, 0);
    assert!(err.contains("--method transfer only"), "{err}");
    let (code, _, err) =
        run(&ws, &["train", "--arch", "clip-vit-b32", "--method", "transfer", "--epochs", "1", "--image-size", "64"]);
    assert_ne!(code, 0);
    assert!(err.contains("--image-size 32"), "{err}");
    let args = [
        "train",
        "--arch",
        "clip-vit-b32",
        "--method",
        "transfer",
        "--epochs",
        "2",
        "--image-size",
        "32",
        "--batch",
        "8",
    ];
    let out = ok(&ws, &args);
    let run_id = out.lines().next().unwrap().trim().to_string();
    let runs = json(&ws, &["runs", "--json"]);
    let listed = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == run_id.as_str())
        .unwrap_or_else(|| panic!("{runs}"));
    assert_eq!(
        (&listed["arch"], &listed["status"]),
        (&Value::from("clip_vit_b32"), &Value::from("finished")),
        "{listed}"
    );
    assert!(listed["top1"].as_f64().is_some(), "{listed}");
    // Prediction shows the attention rollout: a 4 x 4 map for 32 px and 8 px patches.
    let painting = walk_images(&ws.join("sample"))[0].clone();
    let overlay = dir.path().join("overlay.png");
    let p = json(&ws, &["predict", painting.to_str().unwrap(), "--json", "--overlay", overlay.to_str().unwrap()]);
    let first = &p.as_array().map(|a| a[0].clone()).unwrap_or(p.clone());
    assert!(first["top"].as_array().is_some_and(|t| !t.is_empty()), "{p}");
    assert!(image::open(&overlay).is_ok());
    let (code, _, err) = run(&ws, &["predict", painting.to_str().unwrap(), "--cam", "gradcam"]);
    assert_ne!(code, 0);
    assert!(err.contains("attention rollout"), "{err}");
    // With a run and CLIP cached, both rank: every work keeps the model's signals and CLIP's.
    let r = json(&ws, &["rank", "--json", "--limit", "100"]);
    assert_eq!(r["ranked_by"], "model_and_clip", "{r}");
    assert_eq!(r["works"].as_array().unwrap().len(), 32);
    // Label issues: every unflagged grouped work is judged out of sample, issues carry a
    // suggested culture, and the run's split is checked for near-duplicates across it.
    let li = json(&ws, &["label-issues", "--json", "--folds", "3"]);
    assert_eq!(li["works"], 32, "{li}");
    for i in li["label_issues"].as_array().unwrap() {
        assert_ne!(i["suggested"], i["culture"], "{i}");
    }
    assert!(li["cross_split_duplicates"].is_array(), "{li}");
    // The culture map works from the run's CLIP embeddings.
    let m = json(&ws, &["map", "--json"]);
    assert!(m["cultures"].as_array().is_some_and(|c| c.len() >= 2), "{m}");
}

fn walk_images(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk_images(&p));
        } else if p.extension().is_some_and(|x| x == "jpg" || x == "png") {
            out.push(p);
        }
    }
    out.sort();
    out
}
