//! AlexNet as torchvision builds it, parameter names as torchvision's: `features.{0,3,6,8,10}`
//! for the convolutions, `classifier.{1,4,6}` for the linear layers.
use super::conv::{Conv2d, conv2d};
use super::linear::Linear;
use super::linear::{default_uniform, linear};
use super::pool::{adaptive_avg_pool2d, max_pool2d};
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

pub const ALEXNET_EMBED_DIM: usize = 4096;

#[derive(Debug, Clone)]
pub struct AlexNet {
    convs: [Conv2d; 5],
    fc1: Linear,
    fc2: Linear,
    fc3: Option<Linear>,
    pub(crate) dropout: super::dropout::Dropout,
}

impl AlexNet {
    pub fn new(classes: Option<usize>, dropout: f32, vb: VarBuilder) -> Result<Self> {
        let f = vb.pp("features");
        // (index in `features`, in, out, kernel, stride, padding)
        let spec = [
            (0, 3, 64, 11, 4, 2),
            (3, 64, 192, 5, 1, 2),
            (6, 192, 384, 3, 1, 1),
            (8, 384, 256, 3, 1, 1),
            (10, 256, 256, 3, 1, 1),
        ];
        let conv = |&(i, cin, cout, k, s, p): &(usize, usize, usize, usize, usize, usize)| {
            let init = default_uniform(cin * k * k);
            conv2d(cin, cout, k, s, p, Some(init), init, f.pp(i.to_string()))
        };
        let convs = [conv(&spec[0])?, conv(&spec[1])?, conv(&spec[2])?, conv(&spec[3])?, conv(&spec[4])?];
        let c = vb.pp("classifier");
        let fc1 = linear(256 * 6 * 6, ALEXNET_EMBED_DIM, c.pp("1"))?;
        let fc2 = linear(ALEXNET_EMBED_DIM, ALEXNET_EMBED_DIM, c.pp("4"))?;
        let fc3 = classes.map(|k| linear(ALEXNET_EMBED_DIM, k, c.pp("6"))).transpose()?;
        Ok(Self { convs, fc1, fc2, fc3, dropout: super::dropout::Dropout::new(dropout)? })
    }

    /// The last convolutional map (256 x 6 x 6 for 224 x 224 input), after the last pool.
    pub fn features_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let [c1, c2, c3, c4, c5] = &self.convs;
        let x = max_pool2d(&c1.forward_relu_t(x, train)?, 3, 2, 0)?;
        let x = max_pool2d(&c2.forward_relu_t(&x, train)?, 3, 2, 0)?;
        let x = c3.forward_relu_t(&x, train)?;
        let x = c4.forward_relu_t(&x, train)?;
        max_pool2d(&c5.forward_relu_t(&x, train)?, 3, 2, 0)
    }

    /// The 4096-vector the last layer sees (output of `classifier.5`).
    pub fn embed_from_features_t(&self, features: &Tensor, train: bool) -> Result<Tensor> {
        let x = adaptive_avg_pool2d(features, 6, 6)?.flatten_from(1)?;
        let x = self.fc1.forward(&self.dropout.forward_t(&x, train)?)?.relu()?;
        self.fc2.forward(&self.dropout.forward_t(&x, train)?)?.relu()
    }

    pub fn classifier(&self, embedding: &Tensor) -> Option<Result<Tensor>> {
        self.fc3.as_ref().map(|fc| fc.forward(embedding))
    }
}
