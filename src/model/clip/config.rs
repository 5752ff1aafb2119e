//! CLIP's configuration, read from a Hugging Face `config.json` (`CLIPConfig`: `text_config`,
//! `vision_config`, `projection_dim`). Absent fields take `transformers`' defaults, which are
//! ViT-B/32's, as the published `config.json` relies on.
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub layer_norm_eps: f64,
    pub hidden_act: String,
}

impl Default for TextConfig {
    fn default() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            layer_norm_eps: 1e-5,
            hidden_act: "quick_gelu".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_channels: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub layer_norm_eps: f64,
    pub hidden_act: String,
}

impl Default for VisionConfig {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 32,
            layer_norm_eps: 1e-5,
            hidden_act: "quick_gelu".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ClipConfig {
    #[serde(default)]
    pub text_config: TextConfig,
    #[serde(default)]
    pub vision_config: VisionConfig,
    #[serde(default = "default_projection")]
    pub projection_dim: usize,
}

fn default_projection() -> usize {
    512
}

/// The activations CLIP checkpoints name in `hidden_act`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    /// `x * sigmoid(1.702 x)`, OpenAI's approximation (all OpenAI CLIP checkpoints).
    QuickGelu,
    /// The exact (erf) GELU, as some retrained CLIPs use.
    Gelu,
}

impl Activation {
    pub fn parse(name: &str) -> Result<Self, String> {
        match name {
            "quick_gelu" => Ok(Self::QuickGelu),
            "gelu" => Ok(Self::Gelu),
            other => Err(format!("hidden_act {other:?} is not supported (quick_gelu or gelu)")),
        }
    }
}

impl ClipConfig {
    /// OpenAI's ViT-B/32 (`openai/clip-vit-base-patch32`).
    pub fn vit_b32() -> Self {
        Self { projection_dim: 512, ..Default::default() }
    }

    pub fn from_json(text: &str) -> Result<Self, String> {
        let cfg: Self = serde_json::from_str(text).map_err(|e| e.to_string())?;
        Activation::parse(&cfg.text_config.hidden_act)?;
        Activation::parse(&cfg.vision_config.hidden_act)?;
        for (what, hidden, heads) in [
            ("text", cfg.text_config.hidden_size, cfg.text_config.num_attention_heads),
            ("vision", cfg.vision_config.hidden_size, cfg.vision_config.num_attention_heads),
        ] {
            if heads == 0 || !hidden.is_multiple_of(heads) {
                return Err(format!("{what}_config: hidden_size {hidden} is not a multiple of {heads} heads"));
            }
        }
        let v = &cfg.vision_config;
        if v.patch_size == 0 || !v.image_size.is_multiple_of(v.patch_size) {
            return Err(format!(
                "vision_config: image_size {} is not a multiple of patch_size {}",
                v.image_size, v.patch_size
            ));
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_published_config_reads_as_vit_b32_and_bad_ones_are_named() {
        // The fields `openai/clip-vit-base-patch32`'s config.json sets (others are defaults).
        let published = r#"{"projection_dim": 512, "text_config": {"hidden_size": 512, "intermediate_size": 2048,
            "num_attention_heads": 8, "num_hidden_layers": 12, "vocab_size": 49408, "eos_token_id": 2},
            "vision_config": {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
            "num_hidden_layers": 12, "patch_size": 32}}"#;
        assert_eq!(ClipConfig::from_json(published).unwrap(), ClipConfig::vit_b32());
        let bad = r#"{"vision_config": {"hidden_size": 100, "num_attention_heads": 12}}"#;
        assert!(ClipConfig::from_json(bad).unwrap_err().contains("not a multiple of 12 heads"));
        let act = r#"{"text_config": {"hidden_act": "relu"}}"#;
        assert!(ClipConfig::from_json(act).unwrap_err().contains("relu"));
    }
}
