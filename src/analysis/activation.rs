//! Where the network looked: the study's activation map (the last conv map summed over
//! channels, normalised to [0, 1]) and Grad-CAM (the class logit's gradient with respect to
//! that map, averaged per channel, as weights of a channel sum, then ReLU), and their overlay as
//! a perceptually uniform colour map on the painting.
use crate::model::CultureNet;
use candle_core::{D, Result, Tensor, Var};
use image::RgbImage;

/// A coarse map (e.g. 7 x 7) in [0, 1], row-major.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Heatmap {
    pub height: usize,
    pub width: usize,
    pub values: Vec<f32>,
}

impl Heatmap {
    pub fn rows(&self) -> Vec<Vec<f32>> {
        self.values.chunks(self.width).map(<[f32]>::to_vec).collect()
    }

    /// Min-max normalisation to [0, 1]; a constant map becomes all zeros.
    fn normalised(height: usize, width: usize, raw: Vec<f32>) -> Self {
        let (lo, hi) = raw.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        let span = hi - lo;
        let values = raw.iter().map(|&v| if span > 0.0 { (v - lo) / span } else { 0.0 }).collect();
        Self { height, width, values }
    }

    /// Bilinear value at a point in map coordinates (pixel centres at i + 0.5), clamped at the
    /// edges like `align_corners=False` upsampling.
    pub fn sample(&self, x: f32, y: f32) -> f32 {
        let fx = (x - 0.5).clamp(0.0, (self.width - 1) as f32);
        let fy = (y - 0.5).clamp(0.0, (self.height - 1) as f32);
        let (x0, y0) = (fx.floor() as usize, fy.floor() as usize);
        let (x1, y1) = ((x0 + 1).min(self.width - 1), (y0 + 1).min(self.height - 1));
        let (tx, ty) = (fx - x0 as f32, fy - y0 as f32);
        let v = |xx: usize, yy: usize| self.values[yy * self.width + xx];
        let top = v(x0, y0) * (1.0 - tx) + v(x1, y0) * tx;
        let bottom = v(x0, y1) * (1.0 - tx) + v(x1, y1) * tx;
        top * (1.0 - ty) + bottom * ty
    }
}

/// The study's map: features (1 x C x H x W) summed over channels, normalised.
pub fn channel_sum(features: &Tensor) -> Result<Heatmap> {
    let (_, _, h, w) = features.dims4()?;
    let raw = features.sum(1)?.flatten_all()?.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?;
    Ok(Heatmap::normalised(h, w, raw))
}

/// Grad-CAM of class `class` from a feature map (1 x C x H x W).
pub fn grad_cam(net: &CultureNet, features: &Tensor, class: usize) -> Result<Heatmap> {
    let (_, _, h, w) = features.dims4()?;
    let var = Var::from_tensor(&features.detach())?;
    let logits = net.logits_from_features(var.as_tensor())?;
    let score = logits.get(0)?.get(class)?;
    let grads = score.backward()?;
    let g = grads.get(var.as_tensor()).ok_or_else(|| candle_core::Error::msg("no gradient reached the feature map"))?;
    let weights = g.mean_keepdim(D::Minus1)?.mean_keepdim(D::Minus2)?; // 1 x C x 1 x 1
    let cam = features.broadcast_mul(&weights)?.sum(1)?.relu()?;
    let raw = cam.flatten_all()?.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?;
    Ok(Heatmap::normalised(h, w, raw))
}

/// Inferno (matplotlib), 9 stops, interpolated: perceptually uniform and readable in grey.
const INFERNO: [[u8; 3]; 9] = [
    [0, 0, 4],
    [31, 12, 72],
    [85, 15, 109],
    [136, 34, 106],
    [186, 54, 85],
    [227, 89, 51],
    [249, 140, 10],
    [249, 201, 50],
    [252, 255, 164],
];

/// The inferno colour of a value in [0, 1], as RGB.
pub fn inferno(v: f32) -> [u8; 3] {
    let t = v.clamp(0.0, 1.0) * (INFERNO.len() - 1) as f32;
    let i = (t.floor() as usize).min(INFERNO.len() - 2);
    let f = t - i as f32;
    let (a, b) = (INFERNO[i], INFERNO[i + 1]);
    [0, 1, 2].map(|c| (a[c] as f32 + (b[c] as f32 - a[c] as f32) * f).round() as u8)
}

/// Blends the map over the image region `frame` (the network's crop, in image pixels) at
/// `opacity`; pixels outside the frame are left as they are. Rows are blended in parallel with
/// a 256-entry colour table: a 12-megapixel painting takes tens of milliseconds.
pub fn overlay(img: &RgbImage, map: &Heatmap, frame: crate::imaging::tensor::CropFrame, opacity: f32) -> RgbImage {
    use rayon::prelude::*;
    let mut out = img.clone();
    let a = opacity.clamp(0.0, 1.0);
    let lut: Vec<[u8; 3]> = (0..256).map(|i| inferno(i as f32 / 255.0)).collect();
    let width = img.width() as usize;
    out.par_chunks_mut(width * 3).enumerate().for_each(|(y, row)| {
        let fy = (y as f32 + 0.5 - frame.y) / frame.side;
        if !(0.0..1.0).contains(&fy) {
            return;
        }
        for x in 0..width {
            let fx = (x as f32 + 0.5 - frame.x) / frame.side;
            if !(0.0..1.0).contains(&fx) {
                continue;
            }
            let v = map.sample(fx * map.width as f32, fy * map.height as f32);
            let c = lut[(v.clamp(0.0, 1.0) * 255.0).round() as usize];
            let p = &mut row[x * 3..x * 3 + 3];
            for i in 0..3 {
                p[i] = (p[i] as f32 * (1.0 - a) + c[i] as f32 * a).round() as u8;
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn channel_sum_by_hand() {
        // 2 channels of 2 x 2: sums 1+5, 2+6, 3+7, 4+8 = 6, 8, 10, 12 -> 0, 1/3, 2/3, 1.
        let f = Tensor::from_vec(vec![1f32, 2., 3., 4., 5., 6., 7., 8.], (1, 2, 2, 2), &Device::Cpu).unwrap();
        let m = channel_sum(&f).unwrap();
        let want = [0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0];
        assert!(m.values.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6), "{:?}", m.values);
    }

    #[test]
    fn bilinear_sampling_hits_cell_centres_and_clamps() {
        let m = Heatmap { height: 2, width: 2, values: vec![0.0, 1.0, 0.5, 0.25] };
        assert_eq!(m.sample(0.5, 0.5), 0.0);
        assert_eq!(m.sample(1.5, 0.5), 1.0);
        assert_eq!(m.sample(1.0, 0.5), 0.5);
        assert_eq!(m.sample(-3.0, 9.0), 0.5);
    }

    #[test]
    fn colour_map_is_monotonic_in_lightness() {
        let l = |c: [u8; 3]| 0.2126 * c[0] as f32 + 0.7152 * c[1] as f32 + 0.0722 * c[2] as f32;
        let ls: Vec<f32> = (0..=20).map(|i| l(inferno(i as f32 / 20.0))).collect();
        assert!(ls.windows(2).all(|w| w[1] >= w[0]), "{ls:?}");
        assert_eq!(inferno(0.0), [0, 0, 4]);
        assert_eq!(inferno(1.0), [252, 255, 164]);
    }

    #[test]
    fn overlay_keeps_size_and_leaves_outside_the_frame_alone() {
        use image::Rgb;
        let img = RgbImage::from_pixel(40, 20, Rgb([10, 200, 30]));
        let map = Heatmap { height: 1, width: 1, values: vec![1.0] };
        let frame = crate::imaging::tensor::CropFrame { x: 10.0, y: 0.0, side: 20.0 };
        let out = overlay(&img, &map, frame, 1.0);
        assert_eq!(out.dimensions(), (40, 20));
        assert_eq!(out.get_pixel(5, 10), &Rgb([10, 200, 30]));
        assert_eq!(out.get_pixel(20, 10), &Rgb([252, 255, 164]));
    }
}
