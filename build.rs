//! Records build metadata (version, git hash, enabled device features) for `--version` and the
//! GUI's About box.
use std::process::Command;

fn main() {
    let git_hash = Command::new("git")
        .args(["rev-parse", "--short=10", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_string());
    let mut features = vec!["cpu"];
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        features.push("cuda");
    }
    if std::env::var_os("CARGO_FEATURE_METAL").is_some() {
        features.push("metal");
    }
    println!("cargo:rustc-env=ARTCULTURE_GIT_HASH={git_hash}");
    println!("cargo:rustc-env=ARTCULTURE_DEVICE_FEATURES={}", features.join(","));
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    println!("cargo:rerun-if-changed=build.rs");
    gemm_build();
    embed_sample();
}

/// Whether `gemm` is built with its AVX-512 kernels (`x86-v4` on its line in Cargo.toml), so
/// that `kernels::isa::gemm_kernels` names the kernels the binary really has: gemm does not
/// expose its choice, and a build without the feature (to measure AVX2 code on an AVX-512
/// machine, as BENCHMARKS.md does) runs its FMA kernels even where the CPU has AVX-512.
fn gemm_build() {
    println!("cargo::rustc-check-cfg=cfg(gemm_x86_v4)");
    println!("cargo:rerun-if-changed=Cargo.toml");
    let manifest = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"));
    if manifest.is_ok_and(|m| m.lines().any(|l| l.starts_with("gemm =") && l.contains("x86-v4"))) {
        println!("cargo:rustc-cfg=gemm_x86_v4");
    }
}

/// Lists `assets/sample/<Culture>/*.jpg` as `include_bytes!` entries for `ingest::sample`, so
/// the binary carries the sample and a new file there needs no code change.
fn embed_sample() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/sample");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jpg"))
        .collect();
    files.sort();
    let mut code = String::from("pub const SAMPLE_FILES: &[(&str, &[u8])] = &[\n");
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
        let rel = f.strip_prefix(&root).expect("under assets/sample").to_string_lossy().replace('\\', "/");
        code.push_str(&format!("    ({rel:?}, include_bytes!({:?})),\n", f.display().to_string()));
    }
    code.push_str("];\n");
    let out = std::path::Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("sample_files.rs");
    std::fs::write(out, code).expect("writing sample_files.rs");
}
