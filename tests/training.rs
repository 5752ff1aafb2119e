//! Training, evaluation, prediction and the culture map end to end, on generated workspaces
//! whose cultures differ visibly (colour and texture).
mod common;

use artculture::workspace::Workspace;
use common::*;
use serde_json::Value;
use std::path::Path;

fn workspace(dir: &Path, per_class: usize, size: u32) -> std::path::PathBuf {
    let (src, ws) = (dir.join("src"), dir.join("ws"));
    synth_folder(&src, &["Dutch", "French", "Japanese"], per_class, size);
    ok(&ws, &["import", "folder", src.to_str().unwrap()]);
    ws
}

#[test]
fn transfer_learns_distinct_cultures_then_predicts_evaluates_and_maps() {
    let dir = tempfile::tempdir().unwrap();
    let ws = workspace(dir.path(), 40, 72);
    // A frozen, randomly initialised ResNet-50 (no download in tests) still separates colours.
    let out = ok(
        &ws,
        &[
            "train",
            "--arch",
            "resnet50",
            "--method",
            "transfer",
            "--pretrained",
            "none",
            "--epochs",
            "30",
            "--lr",
            "1e-4",
            "--batch",
            "16",
            "--image-size",
            "64",
            "--seed",
            "1",
        ],
    );
    let run = out.lines().next().unwrap().trim().to_string();
    let runs: Value = serde_json::from_str(&ok(&ws, &["runs", "--json"])).unwrap();
    let r = &runs["runs"][0];
    assert_eq!(
        (
            r["id"].as_str().unwrap(),
            r["arch"].as_str().unwrap(),
            r["method"].as_str().unwrap(),
            r["scheduler"].as_str().unwrap()
        ),
        (run.as_str(), "resnet50", "transfer", "StepLR")
    );
    let val = r["val_acc"].as_f64().unwrap();
    assert!(val >= 0.9, "validation accuracy {val}");
    assert_eq!(r["epochs"], 30);
    assert_eq!(r["status"], "finished");
    for k in ["top1", "top3", "seconds"] {
        let v = r[k].as_f64().unwrap();
        assert!((0.0..=if k == "seconds" { 1e9 } else { 1.0 }).contains(&v), "{k} = {v}");
    }

    let e: Value = serde_json::from_str(&ok(&ws, &["eval", &run, "--json"])).unwrap();
    assert_eq!(e["classes"].as_array().unwrap().len(), 3);
    let n: u64 = e["confusion"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_u64().unwrap()))
        .sum();
    assert_eq!(n, e["count"].as_u64().unwrap());
    assert!(e["top3"].as_f64().unwrap() >= e["top1"].as_f64().unwrap());

    // Predict: one good image, one broken; the good one still answers.
    let img = dir.path().join("src/Japanese/3.png");
    let broken = dir.path().join("broken.jpg");
    std::fs::write(&broken, b"not an image").unwrap();
    let overlay = dir.path().join("overlay.png");
    let (code, out, err) = run_cli(
        &ws,
        &["predict", img.to_str().unwrap(), "--json", "--top", "3", "--overlay", overlay.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    let p: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let total: f64 = p["top"].as_array().unwrap().iter().map(|t| t["p"].as_f64().unwrap()).sum();
    assert!((total - 1.0).abs() < 1e-5, "three classes' probabilities sum to 1: {total}");
    assert_eq!(p["top"][0]["culture"], "Japanese");
    let act = p["activation"].as_array().unwrap();
    assert_eq!((act.len(), act[0].as_array().unwrap().len()), (2, 2), "64 px input -> 2 x 2 map");
    let flat: Vec<f64> = act.iter().flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap())).collect();
    assert!(flat.iter().all(|v| (0.0..=1.0).contains(v)) && flat.contains(&1.0), "{flat:?}");
    let (w, h) = image::image_dimensions(&img).unwrap();
    assert_eq!(image::image_dimensions(&overlay).unwrap(), (w, h), "overlay at the image's own size");
    let (code, out, err) = run_cli(&ws, &["predict", broken.to_str().unwrap(), img.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("broken.jpg"), "{err}");
    assert!(out.contains("3.png: Japanese"), "the rest go on: {out}");

    // The map of a transfer run reuses the embeddings its training computed (same frozen
    // backbone, same transform): no new cache file, the training's one untouched.
    let features = |ws: &Path| -> Vec<(std::path::PathBuf, std::time::SystemTime)> {
        let mut v: Vec<_> = std::fs::read_dir(ws.join("features"))
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| (e.path(), e.metadata().unwrap().modified().unwrap()))
            .collect();
        v.sort();
        v
    };
    let trained = features(&ws);
    assert_eq!(trained.len(), 1, "{trained:?}");

    // The culture map's JSON contract.
    let png = dir.path().join("map.png");
    let m: Value = serde_json::from_str(&ok(&ws, &["map", "--json", "--png", png.to_str().unwrap()])).unwrap();
    let k = m["cultures"].as_array().unwrap().len();
    assert_eq!(k, 3);
    assert_eq!(m["counts"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).sum::<u64>(), 120);
    for key in ["distance", "similarity"] {
        let rows = m[key].as_array().unwrap();
        assert_eq!(rows.len(), k);
        assert!(rows.iter().all(|r| r.as_array().unwrap().len() == k));
    }
    for (i, row) in m["similarity"].as_array().unwrap().iter().enumerate() {
        let s: f64 =
            row.as_array().unwrap().iter().enumerate().filter(|(j, _)| *j != i).map(|(_, v)| v.as_f64().unwrap()).sum();
        assert!((s - 1.0).abs() < 1e-9, "row {i} sums to {s}");
    }
    assert!(m["positions"].as_array().unwrap().iter().all(|p| p.as_array().unwrap().len() == 2));
    assert!(!m["chords"].as_array().unwrap().is_empty());
    assert!(image::image_dimensions(&png).is_ok());
    assert_eq!(features(&ws), trained, "the map embedded nothing again");
    ok(&ws, &["map", "--json"]);
    assert_eq!(features(&ws), trained);
}

fn run_cli(ws: &Path, args: &[&str]) -> (i32, String, String) {
    run(ws, args)
}

fn epochs(ws: &Path, run: &str) -> Vec<artculture::catalog::EpochMetrics> {
    Workspace::open(ws).unwrap().catalog.epoch_metrics(run).unwrap()
}

#[test]
fn a_killed_run_resumes_to_the_same_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let ws = workspace(dir.path(), 10, 40);
    let args = [
        "train",
        "--arch",
        "resnet50",
        "--method",
        "scratch",
        "--epochs",
        "3",
        "--lr",
        "0.01",
        "--batch",
        "8",
        "--image-size",
        "32",
        "--seed",
        "5",
    ];
    let straight = ok(&ws, &args).lines().next().unwrap().trim().to_string();

    let mut child = std::process::Command::new(bin())
        .arg("--workspace")
        .arg(&ws)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.as_mut().unwrap()), &mut line).unwrap();
    let killed = line.trim().to_string();
    // Kill it once it has finished its first epoch (mid-way through the second).
    let start = std::time::Instant::now();
    while epochs(&ws, &killed).is_empty() {
        assert!(start.elapsed().as_secs() < 300, "no epoch finished");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // While it runs, nobody else may train it.
    let (code, _, err) = run(&ws, &["train", "--resume", &killed]);
    assert_ne!(code, 0);
    assert!(err.contains("being trained by another process"), "{err}");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(epochs(&ws, &killed).len() < 3, "killed before the end");
    let runs: Value = serde_json::from_str(&ok(&ws, &["runs", "--json"])).unwrap();
    let status =
        runs["runs"].as_array().unwrap().iter().find(|r| r["id"] == killed.as_str()).unwrap()["status"].clone();
    assert_eq!(status, "interrupted", "a killed run is neither running nor lost");
    ok(&ws, &["train", "--resume", &killed]);
    let (a, b) = (epochs(&ws, &straight), epochs(&ws, &killed));
    assert_eq!(a.len(), 3);
    assert_eq!(b.len(), 3);
    for (x, y) in a.iter().zip(&b) {
        for (what, p, q) in [
            ("train loss", x.train_loss, y.train_loss),
            ("val loss", x.val_loss, y.val_loss),
            ("val acc", x.val_acc, y.val_acc),
            ("lr", x.lr, y.lr),
        ] {
            assert_eq!(p.to_bits(), q.to_bits(), "epoch {}: {what} {p} vs {q}: resume is bit-identical", x.epoch);
        }
    }
    // Every batch is recorded once: the killed run's re-trained epochs replaced what it had
    // written of them, so the app plots the same curve for both runs.
    let batches = |run: &str| Workspace::open(&ws).unwrap().catalog.batch_metrics(run).unwrap();
    let (a, b) = (batches(&straight), batches(&killed));
    let per_epoch = a[0].batches as usize;
    assert_eq!(a.len(), 3 * per_epoch, "{a:?}");
    assert_eq!(b.len(), a.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((x.epoch, x.batch), (y.epoch, y.batch));
        assert_eq!(x.loss.to_bits(), y.loss.to_bits(), "{x:?} vs {y:?}");
        assert!(y.elapsed_s > 0.0 && y.images_per_s > 0.0);
    }
}

#[test]
fn divergence_stops_with_a_message_and_bad_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ws = workspace(dir.path(), 6, 40);
    let (code, _, err) = run(
        &ws,
        &[
            "train",
            "--arch",
            "resnet50",
            "--method",
            "transfer",
            "--pretrained",
            "none",
            "--epochs",
            "2",
            "--lr",
            "1e30",
            "--image-size",
            "32",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("diverged") && err.contains("lower --lr"), "{err}");
    let runs: Value = serde_json::from_str(&ok(&ws, &["runs", "--json"])).unwrap();
    assert_eq!(runs["runs"][0]["status"], "failed");
    // The next run reuses that split, less the works flagged since; --new-split makes another.
    let first = runs["runs"][0]["id"].as_str().unwrap().to_string();
    let w = Workspace::open(&ws).unwrap();
    let split = w.catalog.run_split(&first).unwrap();
    let flagged = split[0].0;
    drop(w);
    ok(&ws, &["flag", &flagged.to_string(), "--reason", "other"]);
    // Runs that diverge at once: only their splits matter here.
    let diverging = |extra: &[&str]| {
        let base = [
            "train",
            "--method",
            "transfer",
            "--pretrained",
            "none",
            "--epochs",
            "1",
            "--lr",
            "1e30",
            "--image-size",
            "32",
        ];
        let _ = run(&ws, &[&base[..], extra].concat());
    };
    diverging(&[]);
    diverging(&["--new-split", "--seed", "9"]);
    let w = Workspace::open(&ws).unwrap();
    let runs = w.catalog.runs().unwrap();
    let (second, third) = (w.catalog.run_split(&runs[1].id).unwrap(), w.catalog.run_split(&runs[2].id).unwrap());
    let expected: Vec<_> = split.iter().filter(|(id, _)| *id != flagged).cloned().collect();
    assert_eq!(second, expected);
    assert_ne!(third, expected, "a new seeded split");
    assert!(third.iter().all(|(id, _)| *id != flagged));
    let (code, _, err) = run(&ws, &["train", "--arch", "alexnet", "--image-size", "32"]);
    assert_ne!(code, 0);
    assert!(err.contains("--image-size 32 is outside [63, 1024] for alexnet"), "{err}");
    let (code, _, err) = run(
        &ws,
        &[
            "train",
            "--pretrained",
            dir.path().join("missing.safetensors").to_str().unwrap(),
            "--image-size",
            "32",
            "--epochs",
            "1",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("missing.safetensors"), "{err}");
    // A run that fails before its first epoch says so, with its message, and is not resumable.
    let runs: Value = serde_json::from_str(&ok(&ws, &["runs", "--json"])).unwrap();
    let last = runs["runs"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["status"], "failed", "{last}");
    assert!(last["message"].as_str().unwrap().contains("missing.safetensors"), "{last}");
    let (code, _, err) = run(&ws, &["eval", last["id"].as_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("failed before its first epoch") && err.contains("missing.safetensors"), "{err}");
    // A run whose process died (stored as running, nobody holds its lock) reads as interrupted.
    let id = last["id"].as_str().unwrap();
    let mut w = Workspace::open(&ws).unwrap();
    w.catalog.set_run_status(id, artculture::catalog::RunStatus::Running, None).unwrap();
    drop(w);
    let (_, out, _) = run(&ws, &["runs"]);
    assert!(out.lines().any(|l| l.contains(id) && l.contains("interrupted (resume with")), "{out}");
}

/// The path a GPU takes, run on the CPU (`ARTCULTURE_CPU_AS_DEVICE=1`: candle's generic ops
/// instead of our CPU kernels, the f64 rule of `model::device` enforced): each architecture
/// trains, and predicts what the CPU kernels predict; transfer, Grad-CAM and the map run too.
#[test]
fn the_device_path_runs_on_the_cpu_with_the_device_rule_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let ws = workspace(dir.path(), 6, 64);
    let on_device = |args: &[&str]| -> String {
        let out = std::process::Command::new(bin())
            .arg("--workspace")
            .arg(&ws)
            .args(args)
            .env("HF_HUB_OFFLINE", "1")
            .env("ARTCULTURE_CPU_AS_DEVICE", "1")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "device path: artculture {args:?} failed:\n{err}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let img = dir.path().join("src/French/2.png");
    let img = img.to_str().unwrap();
    let probabilities = |json: &str| -> Vec<(String, f64)> {
        let p: Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
        p["top"].as_array().unwrap().iter().map(|t| (t["culture"].to_string(), t["p"].as_f64().unwrap())).collect()
    };
    for (arch, size) in [("resnet50", "32"), ("vgg16_bn", "32"), ("alexnet", "63")] {
        let args = ["train", "--arch", arch, "--method", "scratch", "--epochs", "1", "--batch", "4"];
        let out = on_device(&[&args[..], &["--image-size", size, "--seed", "3"]].concat());
        let run = out.lines().next().unwrap().trim().to_string();
        let e = epochs(&ws, &run);
        assert!(e.len() == 1 && e[0].train_loss.is_finite() && e[0].val_loss.is_finite(), "{arch}: {e:?}");
        let predict = ["predict", img, "--run", &run, "--json", "--top", "3"];
        let (device, kernels) = (probabilities(&on_device(&predict)), probabilities(&ok(&ws, &predict)));
        assert_eq!(device.len(), 3);
        for ((c1, p1), (c2, p2)) in device.iter().zip(&kernels) {
            assert_eq!(c1, c2, "{arch}: {device:?} vs {kernels:?}");
            assert!((p1 - p2).abs() < 1e-4, "{arch}: {device:?} vs {kernels:?}");
        }
    }
    let args = ["train", "--method", "transfer", "--pretrained", "none", "--epochs", "2", "--image-size", "32"];
    let run = on_device(&args).lines().next().unwrap().trim().to_string();
    on_device(&["predict", img, "--run", &run, "--cam", "gradcam", "--json"]);
    let m: Value = serde_json::from_str(&on_device(&["map", "--run", &run, "--json"])).unwrap();
    assert_eq!(m["cultures"].as_array().unwrap().len(), 3);
}

/// bf16 autocast in training: the transfer recipe above (a frozen random ResNet-50, 30 epochs)
/// clears the same validation bar in bf16 as the f32 test does; a from-scratch bf16 run keeps
/// f32 master weights in its checkpoint, and cancelled after its first epoch it resumes to the
/// same metrics as a straight run, bit for bit. (That bf16 rounds where autocast does is
/// `tests/parity/bf16.rs`'s to show.)
#[test]
fn a_bf16_run_learns_like_f32_keeps_f32_weights_and_resumes_bit_identically() {
    use artculture::model::autocast::Precision;
    use artculture::train::{Control, Method, Pretrained, TrainConfig, TrainEvent, trainer};
    use std::sync::atomic::Ordering;
    let device = candle_core::Device::Cpu;
    let dir = tempfile::tempdir().unwrap();
    let ws = workspace(dir.path(), 40, 72);
    let transfer = TrainConfig {
        method: Method::Transfer,
        pretrained: Pretrained::None,
        epochs: 30,
        batch: 16,
        image_size: 64,
        seed: 1,
        precision: Precision::Bf16,
        sgd: artculture::train::sgd::SgdConfig { lr: 1e-4, ..TrainConfig::default().sgd },
        ..Default::default()
    };
    let train = |ws: &Path, c: TrainConfig| trainer::start(ws, c, &device, &mut |_| {}, &Control::default()).unwrap();
    let bf16_run = train(&ws, transfer);
    let best = epochs(&ws, &bf16_run).iter().map(|m| m.val_acc).fold(0f64, f64::max);
    assert!(best >= 0.9, "bf16 validation accuracy {best} (f32 clears 0.9 on this recipe)");
    // The run tables say which run was bf16.
    let runs: Value = serde_json::from_str(&ok(&ws, &["runs", "--json"])).unwrap();
    assert_eq!(runs["runs"][0]["precision"], "bf16");
    assert!(ok(&ws, &["runs"]).contains("transfer (bf16)"));

    let small = workspace(&dir.path().join("small"), 6, 40);
    let scratch = TrainConfig {
        method: Method::Scratch,
        pretrained: Pretrained::None,
        epochs: 2,
        batch: 8,
        image_size: 32,
        seed: 5,
        precision: Precision::Bf16,
        sgd: artculture::train::sgd::SgdConfig { lr: 0.01, ..TrainConfig::default().sgd },
        ..Default::default()
    };
    let straight = train(&small, scratch.clone());
    // The checkpoint holds f32 master weights (not bf16 values), so it predicts in f32 too.
    let ckpt = small.join("runs").join(&straight).join("last.safetensors");
    let w = candle_core::safetensors::load(&ckpt, &device).unwrap()["conv1.weight"].clone();
    assert_eq!(w.dtype(), candle_core::DType::F32);
    let values = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(values.iter().any(|v| v.to_bits() & 0xffff != 0), "master weights were rounded to bf16");

    let control = Control::default();
    let mut cancel_after_one = |e: TrainEvent| {
        if let TrainEvent::Epoch(_) = e {
            control.cancel.store(true, Ordering::Relaxed);
        }
    };
    assert!(trainer::start(&small, scratch, &device, &mut cancel_after_one, &control).is_err());
    let runs = Workspace::open(&small).unwrap().catalog.runs().unwrap();
    let cancelled = runs.iter().map(|r| r.id.clone()).find(|id| *id != straight).unwrap();
    assert_eq!(epochs(&small, &cancelled).len(), 1);
    trainer::resume(&small, &cancelled, &device, &mut |_| {}, &Control::default()).unwrap();
    let (b, c) = (epochs(&small, &straight), epochs(&small, &cancelled));
    assert_eq!((b.len(), c.len()), (2, 2));
    for (x, y) in b.iter().zip(&c) {
        assert_eq!(
            (x.train_loss.to_bits(), x.val_loss.to_bits(), x.val_acc.to_bits()),
            (y.train_loss.to_bits(), y.val_loss.to_bits(), y.val_acc.to_bits()),
            "epoch {}: resumed bf16 run differs",
            x.epoch
        );
    }
}
