//! ResNet-50's f32 evaluation on the blocked layout ([`crate::kernels::blocked`]): every
//! convolution with its batch norm folded in, each image carried through the whole network in
//! maps of its own, the residual added where the block's output is written.
//!
//! With at least as many images as threads each thread takes whole images through each block,
//! its maps reused from image to image; with fewer, the threads form a team
//! ([`crate::kernels::team`]) and share each layer, its pixels or its output channels.
use crate::kernels::blocked::{BlockedConv, Map};
use crate::kernels::team::{self, Team};
use candle_core::{DType, Result, Tensor};
use rayon::prelude::*;
use std::cell::RefCell;

#[derive(Debug)]
struct Block {
    conv1: BlockedConv,
    conv2: BlockedConv,
    conv3: BlockedConv,
    downsample: Option<BlockedConv>,
}

/// A loaded ResNet-50's weights folded and packed for the blocked layout.
#[derive(Debug)]
pub struct BlockedResNet {
    stem: BlockedConv,
    blocks: Vec<Block>,
}

/// One thread's working maps, kept between images and calls: allocating them per image costs
/// their page faults every time (~10 MB an image at 224 x 224). An image's own map between
/// blocks is `x` where the thread carries it through the network, a map of its own otherwise.
#[derive(Default)]
struct Scratch {
    image: Map,
    stem: Map,
    t1: Map,
    t2: Map,
    shortcut: Map,
    x: Map,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs `f` with this thread's scratch maps.
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    crate::kernels::with_local(&SCRATCH, f)
}

/// One bottleneck's convolutions (batch norms folded in): `conv1`, `conv2`, `conv3` and the
/// shortcut's, if it has one.
pub(super) type BlockConvs = (BlockedConv, BlockedConv, BlockedConv, Option<BlockedConv>);

impl BlockedResNet {
    pub(super) fn new(stem: BlockedConv, blocks: Vec<BlockConvs>) -> Self {
        let blocks = blocks
            .into_iter()
            .map(|(conv1, conv2, conv3, downsample)| Block { conv1, conv2, conv3, downsample })
            .collect();
        Self { stem, blocks }
    }

    /// The last convolutional map of `x` (`N x 3 x H x W`, f32 on the CPU): `N x 2048 x H/32 x
    /// W/32`.
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        if c != 3 || h == 0 || w == 0 {
            candle_core::bail!("resnet: expected a batch of 3-channel images, got input {:?}", x.shape());
        }
        let x = x.to_dtype(DType::F32)?.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let (fh, fw) = self.out_size(h, w);
        let per_image = 2048 * fh * fw;
        let mut out = vec![0.0f32; n * per_image];
        let image_len = c * h * w;
        if n >= rayon::current_num_threads() {
            // Layer by layer, every image through one block before the next block: each thread
            // then reads a block's weights once for all its images. Image by image (each thread
            // carrying an image through the whole network) read all 160 MB of them per image,
            // 100 ms of a 16-image batch's ~520 ms spent waiting on memory.
            // Only each image's map between blocks is its own (3.2 MB at most); the rest is each
            // thread's scratch.
            let mut maps: Vec<Map> = (0..n).map(|_| Map::default()).collect();
            maps.par_iter_mut()
                .zip(x.par_chunks(image_len))
                .for_each(|(m, img)| with_scratch(|s| self.stem(s, m, img, h, w, Team::solo())));
            for b in &self.blocks {
                maps.par_iter_mut().for_each(|m| with_scratch(|s| b.forward(m, s, Team::solo())));
            }
            out.par_chunks_mut(per_image).zip(&maps).for_each(|(o, m)| m.store_chw(o));
        } else {
            team::with_team(|team| {
                for (o, img) in out.chunks_mut(per_image).zip(x.chunks(image_len)) {
                    self.image(img, h, w, o, team);
                }
            });
        }
        Tensor::from_vec(out, (n, 2048, fh, fw), &candle_core::Device::Cpu)
    }

    fn out_size(&self, h: usize, w: usize) -> (usize, usize) {
        let (mut h, mut w) = self.stem.out_size(h, w);
        (h, w) = ((h - 1) / 2 + 1, (w - 1) / 2 + 1);
        for b in &self.blocks {
            (h, w) = b.conv2.out_size(h, w);
        }
        (h, w)
    }

    /// One image (`3 x h x w`) through the network into `out` (`2048 x h/32 x w/32`).
    fn image(&self, img: &[f32], h: usize, w: usize, out: &mut [f32], team: &Team) {
        with_scratch(|s| {
            let mut x = std::mem::take(&mut s.x);
            self.stem(s, &mut x, img, h, w, team);
            for b in &self.blocks {
                b.forward(&mut x, s, team);
            }
            x.store_chw(out);
            s.x = x;
        })
    }

    /// The stem (convolution, batch norm, ReLU, max pooling) of one image (`3 x h x w`) into
    /// `x`.
    fn stem(&self, s: &mut Scratch, x: &mut Map, img: &[f32], h: usize, w: usize, team: &Team) {
        s.image.load_chw(img, 3, h, w, self.stem.pad);
        let (sh, sw) = self.stem.out_size(h, w);
        // Bordered for the max pooling that reads it.
        s.stem.reshape(self.stem.c_out, sh, sw, 1);
        self.stem.forward(&s.image, &mut s.stem, false, true, team);
        x.max_pool_3x3s2_from(&s.stem);
    }
}

impl Block {
    /// `x <- relu(conv3(conv2(conv1(x))) + shortcut(x))`.
    fn forward(&self, x: &mut Map, s: &mut Scratch, team: &Team) {
        let (h, w) = (x.h, x.w);
        // conv1's output carries the border conv2 reads.
        s.t1.reshape(self.conv1.c_out, h, w, self.conv2.pad);
        self.conv1.forward(x, &mut s.t1, false, true, team);
        let (oh, ow) = self.conv2.out_size(h, w);
        s.t2.reshape(self.conv2.c_out, oh, ow, 0);
        self.conv2.forward(&s.t1, &mut s.t2, false, true, team);
        match &self.downsample {
            Some(ds) => {
                s.shortcut.reshape(ds.c_out, oh, ow, 0);
                ds.forward(x, &mut s.shortcut, false, false, team);
                self.conv3.forward(&s.t2, &mut s.shortcut, true, true, team);
                // The block's input map becomes the next block's shortcut scratch.
                std::mem::swap(x, &mut s.shortcut);
            }
            None => self.conv3.forward(&s.t2, x, true, true, team),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::kernels::blocked;
    use crate::model::resnet::ResNet;
    use candle_core::{DType, Device, Tensor};
    use candle_nn::{VarBuilder, VarMap};
    use std::collections::HashMap;

    fn x1() -> Tensor {
        Tensor::zeros((1, 3, 64, 64), DType::F32, &Device::Cpu).unwrap()
    }

    fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
        let d = (a - b).unwrap().sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        let n = b.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        (d / n).sqrt()
    }

    /// A loaded ResNet-50 (plain tensors: the blocked path) gives the features the trainable
    /// one (variables: the matrix-product path) gives, for one image (layers shared between
    /// threads) and for three (images spread), at a size whose maps end in partial tiles.
    #[test]
    fn a_loaded_resnet_evaluates_on_the_blocked_layout_as_the_matrix_product_path_does() {
        if !blocked::available() {
            eprintln!("skipped: the blocked layout needs AVX-512");
            return;
        }
        let map = VarMap::new();
        let trainable = ResNet::resnet50(None, VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu)).unwrap();
        // Batch norms with statistics and affine parameters of their own, so that folding them
        // into the weights is exercised.
        for (name, var) in map.data().lock().unwrap().iter() {
            let n = var.elem_count();
            let fill = |lo: f32, hi: f32| Tensor::rand(lo, hi, n, &Device::Cpu).unwrap().reshape(var.shape()).unwrap();
            match name.rsplit('.').next() {
                Some("running_var") => var.set(&fill(0.5, 2.0)).unwrap(),
                Some("running_mean" | "bias") => var.set(&fill(-0.2, 0.2)).unwrap(),
                Some("weight") if var.rank() == 1 => var.set(&fill(0.5, 1.5)).unwrap(),
                _ => {}
            }
        }
        let plain: HashMap<String, Tensor> =
            map.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.as_tensor().copy().unwrap())).collect();
        let loaded = ResNet::resnet50(None, VarBuilder::from_tensors(plain, DType::F32, &Device::Cpu)).unwrap();
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        for n in [1, 3] {
            let x = Tensor::randn(0f32, 1.0, (n, 3, 72, 80), &Device::Cpu).unwrap();
            let (want, got) =
                pool.install(|| (trainable.features_t(&x, false).unwrap(), loaded.blocked_features(&x).unwrap()));
            assert_eq!(got.dims(), want.dims());
            let err = rel_err(&got, &want);
            assert!(err < 1e-5, "batch {n}: relative error {err:e}");
        }
        assert!(trainable.blocked_features(&x1()).is_err(), "trainable weights were folded");
        let empty = Tensor::zeros((1, 3, 0, 5), DType::F32, &Device::Cpu).unwrap();
        let err = loaded.blocked_features(&empty).unwrap_err().to_string();
        assert!(err.contains("[1, 3, 0, 5]"), "{err}");
    }
}
