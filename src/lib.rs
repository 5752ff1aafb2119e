//! artculture: tells where a painting comes from.
//!
//! The library holds everything; the CLI (`src/main.rs`) and the GUI ([`gui`]) are thin front
//! ends over the same calls. Data flows one way: ingest -> catalog -> curation -> split ->
//! training -> checkpoints -> prediction, activation maps and the culture map.
pub mod alloc;
pub mod analysis;
pub mod catalog;
pub mod culture;
pub mod fsutil;
#[cfg(feature = "gui")]
pub mod gui;
pub mod imaging;
pub mod ingest;
pub mod kernels;
pub mod model;
pub mod predict;
pub mod seed;
pub mod shard;
pub mod train;
pub mod workspace;

/// Build metadata recorded by `build.rs`.
pub mod build_info {
    pub const VERSION: &str = env!("CARGO_PKG_VERSION");
    pub const GIT_HASH: &str = env!("ARTCULTURE_GIT_HASH");
    pub const DEVICE_FEATURES: &str = env!("ARTCULTURE_DEVICE_FEATURES");

    /// One line: version, git hash and device features.
    pub fn long_version() -> String {
        format!("{VERSION} (git {GIT_HASH}; devices: {DEVICE_FEATURES})")
    }
}

/// The layers of the README's *Architecture* section hold: nothing imports a layer above it.
#[cfg(test)]
mod layering {
    /// (layer, what it must not import)
    const RULES: &[(&str, &[&str])] = &[
        ("kernels", &["model", "train", "analysis", "predict", "gui", "catalog", "ingest", "workspace"]),
        ("model", &["train", "analysis", "predict", "gui", "catalog", "ingest", "workspace"]),
        ("train", &["analysis", "predict", "gui"]),
        ("catalog", &["model", "train", "analysis", "predict", "gui", "ingest", "workspace"]),
        ("imaging", &["model", "train", "analysis", "predict", "gui", "catalog", "ingest", "workspace"]),
        ("ingest", &["model", "train", "analysis", "predict", "gui"]),
        ("analysis", &["gui"]),
    ];

    fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()) {
            if e.is_dir() {
                rust_files(&e, out);
            } else if e.extension().is_some_and(|x| x == "rs") {
                out.push(e);
            }
        }
    }

    #[test]
    fn no_layer_imports_one_above_it() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut broken = Vec::new();
        for (layer, above) in RULES {
            let mut files = Vec::new();
            let dir = src.join(layer);
            if dir.is_dir() {
                rust_files(&dir, &mut files);
            }
            files.push(src.join(format!("{layer}.rs")));
            for f in files.iter().filter(|f| f.exists()) {
                let text = std::fs::read_to_string(f).unwrap();
                for (n, line) in text.lines().enumerate() {
                    let code = line.split("//").next().unwrap_or("");
                    for a in *above {
                        if code.contains(&format!("crate::{a}::")) || code.contains(&format!("crate::{a};")) {
                            broken.push(format!("{}:{}: {layer} imports {a}", f.display(), n + 1));
                        }
                    }
                }
            }
        }
        assert!(broken.is_empty(), "imports against the layering:\n{}", broken.join("\n"));
    }
}
