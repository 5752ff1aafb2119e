//! Scaling out: `predict --manifest LIST --shard I/N --out FILE.jsonl` on three shards, one
//! killed (SIGKILL) part way and another left with a torn last line (as a kill mid-write leaves
//! it), both run again, merged with `artculture merge`, equals one unsharded run line for line.
mod common;

use common::*;
use std::path::Path;

fn predict_shard(ws: &Path, run: &str, manifest: &Path, shard: &str, out: &Path) -> String {
    let (code, _, err) = common::run(
        ws,
        &[
            "predict",
            "--run",
            run,
            "--manifest",
            manifest.to_str().unwrap(),
            "--shard",
            shard,
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    err
}

#[test]
fn three_shards_one_interrupted_merge_to_the_unsharded_run() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    ok(&ws, &["import", "sample"]);
    let run = ok(&ws, &["train", "--preset", "demo", "--epochs", "1", "--image-size", "32"])
        .lines()
        .next()
        .unwrap()
        .trim()
        .to_string();
    // The sample's 32 paintings, a file that is not an image and one that does not exist.
    let mut entries: Vec<String> = walk(&ws.join("sample"));
    let broken = dir.path().join("broken.jpg");
    std::fs::write(&broken, b"<html>not an image</html>").unwrap();
    entries.push(broken.display().to_string());
    entries.push(dir.path().join("missing.jpg").display().to_string());
    entries.push(format!("file://{}", entries[0]));
    // The same paintings spelt with "./" segments: distinct entries, so a shard has enough work
    // to be killed in the middle of it.
    let spelt: Vec<String> = (1..=2)
        .flat_map(|k| {
            entries[..32].iter().map(move |e| {
                let (d, f) = e.rsplit_once('/').unwrap();
                format!("{d}/{}{f}", "./".repeat(k))
            })
        })
        .collect();
    entries.extend(spelt);
    let n = entries.len();
    let manifest = dir.path().join("manifest.txt");
    std::fs::write(&manifest, format!("# the sample\n{}\n", entries.join("\n"))).unwrap();

    let whole = dir.path().join("whole.jsonl");
    let err = predict_shard(&ws, &run, &manifest, "0/1", &whole);
    assert!(
        err.contains(&format!("{n} entries, 0 already in"))
            && err.contains(&format!("{n} predicted (2 could not be read)")),
        "{err}"
    );

    let shard = |i: usize| dir.path().join(format!("shard-{i}.jsonl"));
    for i in 0..3 {
        predict_shard(&ws, &run, &manifest, &format!("{i}/3"), &shard(i));
    }
    let sizes: Vec<usize> = (0..3).map(|i| std::fs::read_to_string(shard(i)).unwrap().lines().count()).collect();
    assert_eq!(sizes.iter().sum::<usize>(), n, "{sizes:?}");
    assert!(sizes.iter().all(|n| *n >= 3), "each shard holds some: {sizes:?}");
    // Shard 1 as a kill -9 leaves it: two whole lines and half of the third.
    let text = std::fs::read_to_string(shard(1)).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(shard(1), format!("{}\n{}\n{}", lines[0], lines[1], &lines[2][..lines[2].len() / 2])).unwrap();
    let err = predict_shard(&ws, &run, &manifest, "1/3", &shard(1));
    assert!(err.contains(&format!("{} entries, 2 already in", sizes[1])), "{err}");
    assert!(err.contains(&format!("{} predicted", sizes[1] - 2)), "{err}");
    // Shard 0 killed for real (SIGKILL) once it has written a few lines, then run again.
    std::fs::remove_file(shard(0)).unwrap();
    let mut child = std::process::Command::new(bin())
        .arg("--workspace")
        .arg(&ws)
        .args(["predict", "--run", &run, "--manifest", manifest.to_str().unwrap(), "--shard", "0/3", "--out"])
        .arg(shard(0))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lines = || std::fs::read_to_string(shard(0)).map(|t| t.matches('\n').count()).unwrap_or(0);
    let start = std::time::Instant::now();
    while lines() < 3 && child.try_wait().unwrap().is_none() {
        assert!(start.elapsed().as_secs() < 60, "shard 0 wrote nothing");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let written = lines();
    assert!(written < sizes[0], "killed before its end ({written} of {} lines)", sizes[0]);
    let err = predict_shard(&ws, &run, &manifest, "0/3", &shard(0));
    assert!(err.contains(&format!("{} entries, {written} already in", sizes[0])), "{err}");
    // Merging before every shard is there names what is missing.
    let merged = dir.path().join("merged.jsonl");
    let (code, _, err) = common::run(
        &ws,
        &[
            "merge",
            "--manifest",
            manifest.to_str().unwrap(),
            "--out",
            merged.to_str().unwrap(),
            shard(0).to_str().unwrap(),
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("are in no shard output"), "{err}");
    let shards: Vec<String> = (0..3).map(|i| shard(i).display().to_string()).collect();
    let mut args = vec!["merge", "--manifest", manifest.to_str().unwrap(), "--out", merged.to_str().unwrap()];
    args.extend(shards.iter().map(String::as_str));
    ok(&ws, &args);
    let (merged, whole) = (std::fs::read_to_string(&merged).unwrap(), std::fs::read_to_string(&whole).unwrap());
    assert_eq!(merged.lines().count(), n);
    for (i, (m, w)) in merged.lines().zip(whole.lines()).enumerate() {
        assert_eq!(m, w, "line {}", i + 1);
    }
    assert!(whole.lines().nth(33).unwrap().contains("\"error\":"), "the missing file says why");
    // A shard run again predicts nothing new.
    let err = predict_shard(&ws, &run, &manifest, "2/3", &shard(2));
    assert!(err.contains(" 0 predicted"), "{err}");
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "jpg") {
                out.push(p.display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn the_readmes_scheduler_examples_are_the_deploy_files_whole_and_use_real_options() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(repo.join("README.md")).unwrap();
    let help = std::process::Command::new(bin()).args(["predict", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    for f in ["deploy/slurm-predict.sbatch", "deploy/k8s-predict-job.yaml"] {
        let text = std::fs::read_to_string(repo.join(f)).unwrap();
        assert!(readme.contains(text.trim_end()), "README does not show {f} whole");
        for opt in ["--checkpoint", "--manifest", "--shard", "--out"] {
            assert!(text.contains(opt) && help.contains(opt), "{f}: {opt}");
        }
        assert!(text.contains("artculture merge --manifest"), "{f} says how to join the shards");
    }
    let sbatch = std::process::Command::new("bash").args(["-n"]).arg(repo.join("deploy/slurm-predict.sbatch")).status();
    assert!(sbatch.is_ok_and(|s| s.success()), "the Slurm script parses");
}
