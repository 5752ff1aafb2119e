//! ResNet-50 as torchvision builds it (v1.5: stride on the 3x3 convolution), with parameter
//! names equal to torchvision's `state_dict` keys (`conv1.weight`, `bn1.*`,
//! `layer1.0.conv1.weight`, `layer1.0.downsample.0.weight`, ..., `fc.weight`).
use super::batch_norm::BatchNorm2d;
use super::conv::{Conv2d, conv2d};
use super::linear::Linear;
use super::linear::{kaiming_fan_out, linear};
use super::pool::{global_avg_pool, max_pool2d};
use super::resnet_blocked::BlockedResNet;
use crate::kernels;
use candle_core::{DType, Module, ModuleT, Result, Tensor};
use candle_nn::VarBuilder;
use std::sync::{Arc, OnceLock};

#[derive(Debug, Clone)]
struct Bottleneck {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    conv2: Conv2d,
    bn2: BatchNorm2d,
    conv3: Conv2d,
    bn3: BatchNorm2d,
    downsample: Option<(Conv2d, BatchNorm2d)>,
}

impl Bottleneck {
    fn new(in_c: usize, planes: usize, stride: usize, vb: VarBuilder) -> Result<Self> {
        let out_c = planes * 4;
        let downsample = if stride != 1 || in_c != out_c {
            let d = vb.pp("downsample");
            Some((
                conv2d(in_c, out_c, 1, stride, 0, None, kaiming_fan_out(out_c, 1), d.pp("0"))?,
                BatchNorm2d::new(out_c, d.pp("1"))?,
            ))
        } else {
            None
        };
        Ok(Self {
            conv1: conv2d(in_c, planes, 1, 1, 0, None, kaiming_fan_out(planes, 1), vb.pp("conv1"))?,
            bn1: BatchNorm2d::new(planes, vb.pp("bn1"))?,
            conv2: conv2d(planes, planes, 3, stride, 1, None, kaiming_fan_out(planes, 3), vb.pp("conv2"))?,
            bn2: BatchNorm2d::new(planes, vb.pp("bn2"))?,
            conv3: conv2d(planes, out_c, 1, 1, 0, None, kaiming_fan_out(out_c, 1), vb.pp("conv3"))?,
            bn3: BatchNorm2d::new(out_c, vb.pp("bn3"))?,
            downsample,
        })
    }
}

impl ModuleT for Bottleneck {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        // The shortcut first: in evaluation its buffer then takes the place the stem's or the
        // previous stage's freed output left, and conv1's output is dropped once conv2 has read
        // it (training keeps both in the graph anyway). Peak memory of a batch-16 evaluation:
        // 346 MiB -> 296 MiB.
        let identity = match &self.downsample {
            Some((conv, bn)) => conv.forward_bn(x, bn, train, None, false)?,
            None => x.clone(),
        };
        let y = self.conv2.forward_bn(
            &self.conv1.forward_bn(x, &self.bn1, train, None, true)?,
            &self.bn2,
            train,
            None,
            true,
        )?;
        self.conv3.forward_bn(&y, &self.bn3, train, Some(&identity), true)
    }
}

#[derive(Debug, Clone)]
pub struct ResNet {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    layers: Vec<Vec<Bottleneck>>,
    fc: Option<Linear>,
    /// The weights folded and packed for f32 evaluation on the blocked layout, made on first
    /// use by a model whose weights cannot change (a loaded one); `None` inside where they can.
    /// About 105 MB for ResNet-50 (the 3x3 stride-1 layers of up to 256 channels in Winograd's
    /// domain).
    blocked: Arc<OnceLock<Option<Arc<BlockedResNet>>>>,
}

/// Blocks per stage of ResNet-50.
pub const RESNET50_BLOCKS: [usize; 4] = [3, 4, 6, 3];
pub const RESNET50_EMBED_DIM: usize = 2048;

impl ResNet {
    /// Builds ResNet-50. `classes`: the size of torchvision's own `fc` layer (1000 for ImageNet
    /// weights), or `None` for a backbone without it (our culture models).
    pub fn resnet50(classes: Option<usize>, vb: VarBuilder) -> Result<Self> {
        let conv1 = conv2d(3, 64, 7, 2, 3, None, kaiming_fan_out(64, 7), vb.pp("conv1"))?;
        let bn1 = BatchNorm2d::new(64, vb.pp("bn1"))?;
        let mut in_c = 64;
        let mut layers = Vec::new();
        for (i, (&blocks, planes)) in RESNET50_BLOCKS.iter().zip([64, 128, 256, 512]).enumerate() {
            let stride = if i == 0 { 1 } else { 2 };
            let lvb = vb.pp(format!("layer{}", i + 1));
            let mut layer = Vec::new();
            for b in 0..blocks {
                layer.push(Bottleneck::new(in_c, planes, if b == 0 { stride } else { 1 }, lvb.pp(b.to_string()))?);
                in_c = planes * 4;
            }
            layers.push(layer);
        }
        let fc = classes.map(|k| linear(RESNET50_EMBED_DIM, k, vb.pp("fc"))).transpose()?;
        Ok(Self { conv1, bn1, layers, fc, blocked: Arc::default() })
    }

    /// The last convolutional map (N x 2048 x H/32 x W/32; 7 x 7 for 224 x 224 input).
    pub fn features_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if !train
            && x.dtype() == DType::F32
            && kernels::applies(x)
            && !super::autocast::bf16()
            && kernels::blocked::enabled()
            && let Some(blocked) = self.blocked()?
        {
            return blocked.features(x);
        }
        // Not a shadowed `let`: a shadowed binding lives to the end of the scope, and the stem's
        // output (51 MB at batch 16) would stay allocated through the whole evaluation.
        let mut x = max_pool2d(&self.conv1.forward_bn(x, &self.bn1, train, None, true)?, 3, 2, 1)?;
        for layer in &self.layers {
            for block in layer {
                x = block.forward_t(&x, train)?;
            }
        }
        Ok(x)
    }

    /// The blocked form of this network's weights (see [`Self::blocked`]'s field), made now if
    /// this is the first call.
    fn blocked(&self) -> Result<Option<Arc<BlockedResNet>>> {
        if let Some(b) = self.blocked.get() {
            return Ok(b.clone());
        }
        let made = self.make_blocked()?.map(Arc::new);
        Ok(self.blocked.get_or_init(|| made).clone())
    }

    /// The features by the blocked path whether or not it is turned on (for the tests, which
    /// must not turn it on for the whole process while other tests run); an error for a model
    /// whose weights have no blocked form.
    #[cfg(test)]
    pub(crate) fn blocked_features(&self, x: &Tensor) -> Result<Tensor> {
        match self.blocked()? {
            Some(b) => b.features(x),
            None => candle_core::bail!("resnet: no blocked form (trainable weights)"),
        }
    }

    fn make_blocked(&self) -> Result<Option<BlockedResNet>> {
        let Some(stem) = self.conv1.blocked(&self.bn1)? else { return Ok(None) };
        let mut blocks = Vec::new();
        for b in self.layers.iter().flatten() {
            let downsample = match &b.downsample {
                Some((conv, bn)) => match conv.blocked(bn)? {
                    Some(c) => Some(c),
                    None => return Ok(None),
                },
                None => None,
            };
            let (Some(c1), Some(c2), Some(c3)) =
                (b.conv1.blocked(&b.bn1)?, b.conv2.blocked(&b.bn2)?, b.conv3.blocked(&b.bn3)?)
            else {
                return Ok(None);
            };
            blocks.push((c1, c2, c3, downsample));
        }
        Ok(Some(BlockedResNet::new(stem, blocks)))
    }

    /// The pooled vector the classifier sees (N x 2048).
    pub fn embed_from_features(&self, features: &Tensor) -> Result<Tensor> {
        global_avg_pool(features)
    }

    /// torchvision's own classifier, if the model was built with one.
    pub fn classifier(&self, embedding: &Tensor) -> Option<Result<Tensor>> {
        self.fc.as_ref().map(|fc| fc.forward(embedding))
    }
}
