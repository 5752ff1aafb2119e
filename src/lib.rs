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
pub mod gui;
pub mod imaging;
pub mod ingest;
pub mod kernels;
pub mod model;
pub mod predict;
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
