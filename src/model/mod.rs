//! The networks: ResNet-50, VGG-16-BN and AlexNet as torchvision defines them, and the culture
//! head that replaces their last layer.
pub mod alexnet;
pub mod autocast;
pub mod batch_norm;
pub mod checkpoint;
pub mod clip;
pub mod conv;
pub mod device;
pub mod dropout;
pub mod head;
pub mod init;
pub mod linear;
pub mod pool;
pub mod resnet;
pub mod resnet_blocked;
pub mod tensor_file;
pub mod vgg;
pub mod weights;

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

pub use head::CultureHead;

/// The architectures the study compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    #[serde(rename = "resnet50")]
    Resnet50,
    #[serde(rename = "vgg16_bn")]
    Vgg16Bn,
    Alexnet,
    /// OpenAI's CLIP ViT-B/32 image tower (the transfer method only).
    #[serde(rename = "clip_vit_b32")]
    ClipVitB32,
}

impl Arch {
    pub const ALL: [Arch; 4] = [Arch::Resnet50, Arch::Vgg16Bn, Arch::Alexnet, Arch::ClipVitB32];

    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Resnet50 => "resnet50",
            Arch::Vgg16Bn => "vgg16_bn",
            Arch::Alexnet => "alexnet",
            Arch::ClipVitB32 => "clip_vit_b32",
        }
    }

    /// The size of the vector the replaced last layer sees (CLIP: ViT-B/32's projection).
    pub fn embed_dim(self) -> usize {
        match self {
            Arch::Resnet50 => resnet::RESNET50_EMBED_DIM,
            Arch::Vgg16Bn => vgg::VGG_EMBED_DIM,
            Arch::Alexnet => alexnet::ALEXNET_EMBED_DIM,
            Arch::ClipVitB32 => clip::ClipConfig::vit_b32().projection_dim,
        }
    }

    /// The smallest square input the architecture accepts.
    pub fn min_input(self) -> usize {
        match self {
            Arch::Resnet50 | Arch::Vgg16Bn => 32,
            Arch::Alexnet => 63,
            Arch::ClipVitB32 => 32,
        }
    }

    /// The normalisation the architecture's pretrained weights expect.
    pub fn mean_std(self) -> ([f32; 3], [f32; 3]) {
        match self {
            Arch::ClipVitB32 => (clip::CLIP_MEAN, clip::CLIP_STD),
            _ => (checkpoint::IMAGENET_MEAN, checkpoint::IMAGENET_STD),
        }
    }

    pub fn is_clip(self) -> bool {
        self == Arch::ClipVitB32
    }
}

impl std::str::FromStr for Arch {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Arch::ALL
            .into_iter()
            .find(|a| a.as_str() == s.trim().to_lowercase().replace('-', "_"))
            .ok_or_else(|| format!("unknown architecture {s:?}; expected resnet50, vgg16_bn, alexnet or clip-vit-b32"))
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A torchvision backbone, optionally with its own last layer (`fc` / `classifier.6`).
#[derive(Debug, Clone)]
pub enum Backbone {
    Resnet(resnet::ResNet),
    Vgg(vgg::Vgg),
    Alexnet(alexnet::AlexNet),
    Clip(clip::backbone::ClipBackbone),
}

/// Options that change how a backbone is built.
#[derive(Debug, Clone, Copy)]
pub struct BackboneConfig {
    /// Size of the backbone's own last layer (ImageNet: 1000), or `None` to leave it out.
    pub own_classes: Option<usize>,
    /// Dropout of VGG's and AlexNet's classifier layers in training mode.
    pub dropout: f32,
}

impl Default for BackboneConfig {
    fn default() -> Self {
        Self { own_classes: None, dropout: 0.5 }
    }
}

impl Backbone {
    pub fn new(arch: Arch, cfg: BackboneConfig, vb: VarBuilder) -> Result<Self> {
        Ok(match arch {
            Arch::Resnet50 => Self::Resnet(resnet::ResNet::resnet50(cfg.own_classes, vb)?),
            Arch::Vgg16Bn => Self::Vgg(vgg::Vgg::vgg16_bn(cfg.own_classes, cfg.dropout, vb)?),
            Arch::Alexnet => Self::Alexnet(alexnet::AlexNet::new(cfg.own_classes, cfg.dropout, vb)?),
            Arch::ClipVitB32 => Self::Clip(clip::backbone::ClipBackbone::new(&clip::ClipConfig::vit_b32(), vb)?),
        })
    }

    /// The size of the vector the head sees.
    pub fn embed_dim(&self) -> usize {
        match self {
            Self::Clip(m) => m.embed_dim,
            other => other.arch().embed_dim(),
        }
    }

    pub fn arch(&self) -> Arch {
        match self {
            Self::Resnet(_) => Arch::Resnet50,
            Self::Vgg(_) => Arch::Vgg16Bn,
            Self::Alexnet(_) => Arch::Alexnet,
            Self::Clip(_) => Arch::ClipVitB32,
        }
    }

    /// Reseeds the dropout masks (VGG and AlexNet), so that a resumed run repeats them.
    pub fn reseed_dropout(&self, seed: u64) {
        match self {
            Self::Resnet(_) | Self::Clip(_) => {}
            Self::Vgg(m) => m.dropout.reseed(seed),
            Self::Alexnet(m) => m.dropout.reseed(seed),
        }
    }

    /// The last convolutional feature map (CLIP: the projected embedding itself, batch x dim;
    /// its map for a prediction comes from [`CultureNet::forward_with_features`]).
    pub fn features_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        // Evaluation on the CPU from a worker thread (see `autocast::on_worker`); a training
        // step runs on one as a whole (`train::image_step`). bf16 evaluation too since its
        // packing shares itself between the threads from inside the pool as well
        // (`--precision bf16 bench forward1`, six alternating rounds: 21.8 -> 19.8 ms;
        // forward16 level).
        if !train && x.device().is_cpu() {
            return autocast::on_worker(|| self.features_here(x, train));
        }
        self.features_here(x, train)
    }

    /// [`Self::features_t`] on the calling thread.
    fn features_here(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let features = match self {
            Self::Resnet(m) => m.features_t(x, train),
            Self::Vgg(m) => m.features_t(x, train),
            Self::Alexnet(m) => m.features_t(x, train),
            Self::Clip(m) => m.embed(x),
        }?;
        // bf16 evaluation hands its activations on in bf16 storage (`kernels::conv::eval_bf16`):
        // the map leaves the backbone as f32 holding the same values (exact), as every user of
        // it (pooling, the head, the activation maps) takes it.
        if !train && crate::kernels::stored_bf16(&features) {
            return features.to_dtype(candle_core::DType::F32);
        }
        Ok(features)
    }

    /// From the feature map to the vector the last layer sees.
    pub fn embed_from_features_t(&self, features: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            Self::Resnet(m) => m.embed_from_features(features),
            Self::Vgg(m) => m.embed_from_features_t(features, train),
            Self::Alexnet(m) => m.embed_from_features_t(features, train),
            Self::Clip(_) => Ok(features.clone()),
        }
    }

    pub fn embed_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.embed_from_features_t(&self.features_t(x, train)?, train)
    }

    /// The backbone's own last layer applied to an embedding, if it has one.
    pub fn own_classifier(&self, embedding: &Tensor) -> Option<Result<Tensor>> {
        match self {
            Self::Resnet(m) => m.classifier(embedding),
            Self::Vgg(m) => m.classifier(embedding),
            Self::Alexnet(m) => m.classifier(embedding),
            Self::Clip(_) => None,
        }
    }

    /// Features and the own classifier's logits in one pass (what `model forward` writes).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<(Tensor, Option<Tensor>)> {
        device::check_dtype(x, "backbone input")?;
        let features = self.features_t(x, train)?;
        let emb = self.embed_from_features_t(&features, train)?;
        let logits = self.own_classifier(&emb).transpose()?;
        Ok((features, logits))
    }
}

/// A culture classifier: a backbone whose last layer is replaced by the culture head.
#[derive(Debug, Clone)]
pub struct CultureNet {
    pub backbone: Backbone,
    pub head: CultureHead,
}

/// The prefix of the head's parameters in checkpoints.
pub const HEAD_PREFIX: &str = "head";

impl CultureNet {
    pub fn new(arch: Arch, dropout: f32, hidden: [usize; 2], classes: usize, vb: VarBuilder) -> Result<Self> {
        let backbone = Backbone::new(arch, BackboneConfig { own_classes: None, dropout }, vb.clone())?;
        let head = CultureHead::new(arch.embed_dim(), hidden, classes, vb.pp(HEAD_PREFIX))?;
        Ok(Self { backbone, head })
    }

    /// A CLIP-backed culture model of a given CLIP configuration (the published ViT-B/32's, or
    /// a test's tiny one).
    pub fn new_clip(cfg: &clip::ClipConfig, hidden: [usize; 2], classes: usize, vb: VarBuilder) -> Result<Self> {
        let backbone = Backbone::Clip(clip::backbone::ClipBackbone::new(cfg, vb.clone())?);
        let head = CultureHead::new(backbone.embed_dim(), hidden, classes, vb.pp(HEAD_PREFIX))?;
        Ok(Self { backbone, head })
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.head.forward(&self.backbone.embed_t(x, train)?)
    }

    /// Logits and the last conv map from one pass (prediction with an activation map).
    pub fn forward_with_features(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        device::check_dtype(x, "backbone input")?;
        if let Backbone::Clip(m) = &self.backbone {
            let (emb, map) = m.embed_with_map(x)?;
            return Ok((self.head.forward(&emb)?, map));
        }
        let features = self.backbone.features_t(x, false)?;
        let logits = self.head.forward(&self.backbone.embed_from_features_t(&features, false)?)?;
        Ok((logits, features))
    }

    /// Logits from a feature map (Grad-CAM differentiates this with respect to the map).
    pub fn logits_from_features(&self, features: &Tensor) -> Result<Tensor> {
        if matches!(self.backbone, Backbone::Clip(_)) {
            candle_core::bail!(
                "Grad-CAM needs a convolutional map; for a CLIP run the map is the attention rollout (--cam sum)"
            );
        }
        self.head.forward(&self.backbone.embed_from_features_t(features, false)?)
    }
}
