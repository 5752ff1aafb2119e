//! Images to normalised CHW float data, the torchvision way: evaluation resizes the shorter
//! side to size * 256 / 224 and centre-crops `size`; training takes a random resized crop
//! (scale 0.08-1, aspect 3/4-4/3) and a random horizontal flip.
use image::RgbImage;
use image::imageops::{FilterType, crop_imm, flip_horizontal, resize};
use rand::Rng;

/// Where the network's square input lies in an image: the centre crop of evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CropFrame {
    /// In the image's own pixels.
    pub x: f32,
    pub y: f32,
    pub side: f32,
}

/// The centre crop evaluation uses, in the original image's coordinates.
pub fn centre_crop_frame(width: u32, height: u32, size: usize) -> CropFrame {
    let short = width.min(height) as f32;
    let resized_short = (size * 256 / 224) as f32;
    let side = short * size as f32 / resized_short;
    CropFrame { x: (width as f32 - side) / 2.0, y: (height as f32 - side) / 2.0, side }
}

/// Evaluation transform: resize shorter side to size*256/224, centre crop.
pub fn eval_crop(img: &RgbImage, size: usize) -> RgbImage {
    let target_short = (size * 256 / 224) as u32;
    let (w, h) = img.dimensions();
    let s = w.min(h).max(1);
    let (nw, nh) = (
        ((w as u64 * target_short as u64) / s as u64).max(size as u64) as u32,
        ((h as u64 * target_short as u64) / s as u64).max(size as u64) as u32,
    );
    // A large painting is first averaged down (fast, integer) to twice the target, then
    // filtered: resizing 12 megapixels with a triangle filter alone costs ~100 ms.
    let resized = if w.min(h) > 4 * target_short {
        let coarse = image::imageops::thumbnail(img, nw * 2, nh * 2);
        resize(&coarse, nw, nh, FilterType::Triangle)
    } else {
        resize(img, nw, nh, FilterType::Triangle)
    };
    let (x, y) = ((nw - size as u32) / 2, (nh - size as u32) / 2);
    crop_imm(&resized, x, y, size as u32, size as u32).to_image()
}

/// CLIP's preprocessing: the shorter side resized to `size` (bicubic, as OpenAI's), centre crop.
pub fn clip_crop(img: &RgbImage, size: usize) -> RgbImage {
    let (w, h) = img.dimensions();
    let s = w.min(h).max(1) as u64;
    let (nw, nh) = (
        ((w as u64 * size as u64) / s).max(size as u64) as u32,
        ((h as u64 * size as u64) / s).max(size as u64) as u32,
    );
    let src = if w.min(h) as usize > 4 * size { image::imageops::thumbnail(img, nw * 2, nh * 2) } else { img.clone() };
    let resized = resize(&src, nw, nh, FilterType::CatmullRom);
    let (x, y) = ((nw - size as u32) / 2, (nh - size as u32) / 2);
    crop_imm(&resized, x, y, size as u32, size as u32).to_image()
}

/// Training transform: random resized crop and optional horizontal flip.
pub fn train_crop(img: &RgbImage, size: usize, flip: bool, rng: &mut impl Rng) -> RgbImage {
    let (w, h) = img.dimensions();
    let area = (w * h) as f64;
    let mut crop = None;
    for _ in 0..10 {
        let target = area * rng.random_range(0.08..=1.0);
        let log_ratio = rng.random_range((3.0f64 / 4.0).ln()..=(4.0f64 / 3.0).ln());
        let ratio = log_ratio.exp();
        let cw = (target * ratio).sqrt().round() as u32;
        let ch = (target / ratio).sqrt().round() as u32;
        if cw > 0 && ch > 0 && cw <= w && ch <= h {
            crop = Some((rng.random_range(0..=w - cw), rng.random_range(0..=h - ch), cw, ch));
            break;
        }
    }
    // Fallback as torchvision: the centre crop of the whole image at a clamped ratio.
    let (x, y, cw, ch) = crop.unwrap_or_else(|| {
        let s = w.min(h);
        ((w - s) / 2, (h - s) / 2, s, s)
    });
    let out = resize(&crop_imm(img, x, y, cw, ch).to_image(), size as u32, size as u32, FilterType::Triangle);
    if flip && rng.random_bool(0.5) { flip_horizontal(&out) } else { out }
}

/// HWC u8 to CHW f32, normalised with `mean` and `std`.
pub fn to_chw(img: &RgbImage, mean: [f32; 3], std: [f32; 3]) -> Vec<f32> {
    let (w, h) = img.dimensions();
    let plane = (w * h) as usize;
    let mut out = vec![0f32; 3 * plane];
    for (i, p) in img.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = (p[c] as f32 / 255.0 - mean[c]) / std[c];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn eval_crop_is_square_and_frame_is_centred() {
        let img = RgbImage::new(400, 300);
        assert_eq!(eval_crop(&img, 224).dimensions(), (224, 224));
        let f = centre_crop_frame(400, 300, 224);
        assert!((f.side - 262.5).abs() < 1e-3 && (f.x - 68.75).abs() < 1e-3 && (f.y - 18.75).abs() < 1e-3, "{f:?}");
    }

    #[test]
    fn train_crop_is_seeded() {
        let img = RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8, y as u8, 0]));
        let a = train_crop(&img, 32, true, &mut rand::rngs::StdRng::seed_from_u64(1));
        let b = train_crop(&img, 32, true, &mut rand::rngs::StdRng::seed_from_u64(1));
        assert_eq!(a, b);
        assert_eq!(a.dimensions(), (32, 32));
    }

    #[test]
    fn normalisation_matches_definition() {
        let img = RgbImage::from_pixel(1, 1, image::Rgb([255, 0, 128]));
        let v = to_chw(&img, [0.5; 3], [0.5; 3]);
        assert_eq!(v[0], 1.0);
        assert_eq!(v[1], -1.0);
        assert!((v[2] - (128.0 / 255.0 - 0.5) / 0.5).abs() < 1e-6);
    }
}
