//! What the trained network tells: activation maps, and the map of cultures.
pub mod activation;
pub mod clip_works;
pub mod culture_map;
pub mod embed;
pub mod forceatlas2;
pub mod label_issues;
pub mod palette;
pub mod pca;
pub mod rank;
pub mod render;
pub mod suspicion;
pub mod zero_shot;
