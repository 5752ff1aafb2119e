//! VGG-16 with batch norm (`torchvision.models.vgg16_bn`), parameter names as torchvision's:
//! `features.{i}.*` for the convolutions and batch norms in `nn.Sequential` order,
//! `classifier.{0,3,6}.*` for the linear layers.
use super::batch_norm::BatchNorm2d;
use super::conv::{Conv2d, conv2d};
use super::linear::Linear;
use super::linear::{kaiming_fan_out, linear_with_init};
use super::pool::{adaptive_avg_pool2d, max_pool2d};
use candle_core::{Module, Result, Tensor};
use candle_nn::{Init, VarBuilder};

/// torchvision's configuration "D": channels, or 0 for a 2x2 max pool.
const CFG_D: [usize; 18] = [64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0];
pub const VGG_EMBED_DIM: usize = 4096;

#[derive(Debug, Clone)]
enum Layer {
    ConvBnRelu(Conv2d, BatchNorm2d),
    MaxPool,
}

#[derive(Debug, Clone)]
pub struct Vgg {
    features: Vec<Layer>,
    fc1: Linear,
    fc2: Linear,
    fc3: Option<Linear>,
    pub(crate) dropout: super::dropout::Dropout,
}

fn linear_init() -> (Init, Init) {
    (Init::Randn { mean: 0.0, stdev: 0.01 }, Init::Const(0.0))
}

impl Vgg {
    /// `classes`: the size of torchvision's last layer (`classifier.6`), `None` to leave it out.
    pub fn vgg16_bn(classes: Option<usize>, dropout: f32, vb: VarBuilder) -> Result<Self> {
        let fvb = vb.pp("features");
        let mut features = Vec::new();
        let (mut index, mut in_c) = (0, 3);
        for &c in &CFG_D {
            if c == 0 {
                features.push(Layer::MaxPool);
                index += 1;
            } else {
                let conv =
                    conv2d(in_c, c, 3, 1, 1, Some(Init::Const(0.0)), kaiming_fan_out(c, 3), fvb.pp(index.to_string()))?;
                let bn = BatchNorm2d::new(c, fvb.pp((index + 1).to_string()))?;
                features.push(Layer::ConvBnRelu(conv, bn));
                index += 3;
                in_c = c;
            }
        }
        let cvb = vb.pp("classifier");
        let (w, b) = linear_init();
        let fc1 = linear_with_init(512 * 7 * 7, VGG_EMBED_DIM, w, b, cvb.pp("0"))?;
        let fc2 = linear_with_init(VGG_EMBED_DIM, VGG_EMBED_DIM, w, b, cvb.pp("3"))?;
        let fc3 = classes.map(|k| linear_with_init(VGG_EMBED_DIM, k, w, b, cvb.pp("6"))).transpose()?;
        Ok(Self { features, fc1, fc2, fc3, dropout: super::dropout::Dropout::new(dropout)? })
    }

    /// The last convolutional map (N x 512 x H/32 x W/32), before adaptive pooling.
    pub fn features_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = x.clone();
        for layer in &self.features {
            x = match layer {
                Layer::ConvBnRelu(conv, bn) => conv.forward_bn(&x, bn, train, None, true)?,
                Layer::MaxPool => max_pool2d(&x, 2, 2, 0)?,
            };
        }
        Ok(x)
    }

    /// The 4096-vector the last layer sees (output of `classifier.4`).
    pub fn embed_from_features_t(&self, features: &Tensor, train: bool) -> Result<Tensor> {
        let x = adaptive_avg_pool2d(features, 7, 7)?.flatten_from(1)?;
        let x = self.dropout.forward_t(&self.fc1.forward(&x)?.relu()?, train)?;
        self.dropout.forward_t(&self.fc2.forward(&x)?.relu()?, train)
    }

    pub fn classifier(&self, embedding: &Tensor) -> Option<Result<Tensor>> {
        self.fc3.as_ref().map(|fc| fc.forward(embedding))
    }
}
