//! Decoding with limits, thumbnails, and image-to-tensor conversion.
pub mod integrity;
pub mod tensor;

use image::{DynamicImage, ImageDecoder, ImageReader, Limits, RgbImage};
use sha2::{Digest, Sha256};
use std::io::Cursor;
use std::path::{Path, PathBuf};

/// Largest side accepted, in pixels (larger images are refused before decoding).
pub const MAX_SIDE: u32 = 20_000;
/// Largest decoding allocation.
pub const MAX_ALLOC: u64 = 1 << 30;
/// Shorter side of the cached copies used for training and the thumbnail grid.
pub const CACHE_SHORT_SIDE: u32 = 256;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: cannot read: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: empty file (0 bytes)")]
    Empty { path: PathBuf },
    #[error("{path}: not an image ({what})")]
    NotAnImage { path: PathBuf, what: String },
    #[error("{path}: {width} x {height} pixels is larger than the {MAX_SIDE}-pixel limit")]
    TooLarge { path: PathBuf, width: u32, height: u32 },
    /// Cut off before its end (an interrupted download or copy): refused, never padded.
    #[error("{path}: image file is truncated: {detail}")]
    Truncated { path: PathBuf, detail: String },
    #[error("{path}: cannot decode: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("{path}: cannot write: {detail}")]
    Write { path: PathBuf, detail: String },
}

/// A decoded image in 8-bit RGB, with what the conversion did.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub rgb: RgbImage,
    /// The source's original colour type, e.g. "Rgb16" or "L8": kept, converted to RGB8.
    pub source_color: String,
}

/// What the first bytes of a file say it is, for error messages.
fn sniff(bytes: &[u8]) -> String {
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(64)]).to_lowercase();
    if head.trim_start().starts_with("<!doctype html") || head.trim_start().starts_with("<html") {
        "an HTML page".into()
    } else if head.trim_start().starts_with('{') {
        "JSON text".into()
    } else {
        format!("unknown format, first bytes {:02x?}", &bytes[..bytes.len().min(8)])
    }
}

/// Decodes bytes with size limits, applies EXIF orientation, converts to RGB8.
pub fn decode_bytes(bytes: &[u8], path: &Path) -> Result<Decoded, ImageError> {
    let path = path.to_path_buf();
    if bytes.is_empty() {
        return Err(ImageError::Empty { path });
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|source| ImageError::Io { path: path.clone(), source })?;
    if reader.format().is_none() {
        return Err(ImageError::NotAnImage { path, what: sniff(bytes) });
    }
    integrity::check_complete(bytes)
        .map_err(|t| ImageError::Truncated { path: path.clone(), detail: t.to_string() })?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    reader.limits(limits);
    let corrupt = |e: image::ImageError, path: &PathBuf| match e {
        image::ImageError::Limits(_) => {
            let (width, height) = ImageReader::new(Cursor::new(bytes))
                .with_guessed_format()
                .ok()
                .and_then(|r| r.into_dimensions().ok())
                .unwrap_or((0, 0));
            ImageError::TooLarge { path: path.clone(), width, height }
        }
        // Decoders report a file that ends early as an I/O "unexpected end of file".
        image::ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            ImageError::Truncated { path: path.clone(), detail: io.to_string() }
        }
        other => ImageError::Corrupt { path: path.clone(), detail: other.to_string() },
    };
    let mut decoder = reader.into_decoder().map_err(|e| corrupt(e, &path))?;
    let (w, h) = decoder.dimensions();
    if w > MAX_SIDE || h > MAX_SIDE {
        return Err(ImageError::TooLarge { path, width: w, height: h });
    }
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| corrupt(e, &path))?;
    img.apply_orientation(orientation);
    let source_color = format!("{:?}", img.color());
    Ok(Decoded { rgb: img.into_rgb8(), source_color })
}

/// Decodes for display and prediction, where a few thousand pixels suffice: JPEGs larger than
/// needed are decoded at 1/2, 1/4 or 1/8 scale in the DCT (the `image` crate's JPEG decoder
/// cannot), so that the long side is still at least `min_long_side`. Anything else, or any
/// JPEG the scaled decoder refuses, goes through [`decode_bytes`].
pub fn decode_reduced(bytes: &[u8], path: &Path, min_long_side: u32) -> Result<Decoded, ImageError> {
    if bytes.starts_with(&[0xFF, 0xD8])
        && integrity::check_complete(bytes).is_ok()
        && let Some(d) = decode_jpeg_scaled(bytes, min_long_side)
    {
        return Ok(d);
    }
    decode_bytes(bytes, path)
}

fn decode_jpeg_scaled(bytes: &[u8], min_long_side: u32) -> Option<Decoded> {
    let mut dec = jpeg_decoder::Decoder::new(Cursor::new(bytes));
    dec.read_info().ok()?;
    let info = dec.info()?;
    let (w, h) = (info.width as u32, info.height as u32);
    if w > MAX_SIDE || h > MAX_SIDE || w.max(h) <= 2 * min_long_side {
        return None;
    }
    // The scale keeps the requested size in at least one axis: ask for the long side.
    let target = |side: u32| ((side as u64 * min_long_side as u64) / w.max(h) as u64).max(1) as u16;
    let (sw, sh) = dec.scale(target(w), target(h)).ok()?;
    let pixels = dec.decode().ok()?;
    let info = dec.info()?;
    let rgb = match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 => RgbImage::from_raw(sw as u32, sh as u32, pixels)?,
        jpeg_decoder::PixelFormat::L8 => {
            DynamicImage::ImageLuma8(image::GrayImage::from_raw(sw as u32, sh as u32, pixels)?).into_rgb8()
        }
        _ => return None,
    };
    // EXIF orientation, read from the header only.
    let orientation = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .ok()
        .and_then(|r| r.into_decoder().ok())
        .and_then(|mut d| d.orientation().ok())
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::ImageRgb8(rgb);
    img.apply_orientation(orientation);
    Some(Decoded { rgb: img.into_rgb8(), source_color: format!("{:?}", info.pixel_format) })
}

/// [`decode_reduced`] of a file.
pub fn decode_file_reduced(path: &Path, min_long_side: u32) -> Result<Decoded, ImageError> {
    let bytes = std::fs::read(path).map_err(|source| ImageError::Io { path: path.to_path_buf(), source })?;
    decode_reduced(&bytes, path, min_long_side)
}

pub fn decode_file(path: &Path) -> Result<Decoded, ImageError> {
    let bytes = std::fs::read(path).map_err(|source| ImageError::Io { path: path.to_path_buf(), source })?;
    decode_bytes(&bytes, path)
}

/// Hex SHA-256 of a file's bytes: the identity of an image in caches.
pub fn content_hash(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Resizes so that the shorter side is `short` (never enlarges).
pub fn resize_short_side(img: &RgbImage, short: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let s = w.min(h);
    if s <= short {
        return img.clone();
    }
    let (nw, nh) = if w <= h {
        (short, ((h as u64 * short as u64 + s as u64 / 2) / s as u64) as u32)
    } else {
        (((w as u64 * short as u64 + s as u64 / 2) / s as u64) as u32, short)
    };
    image::imageops::resize(img, nw.max(1), nh.max(1), image::imageops::FilterType::Triangle)
}

/// Where the pre-resized copy of an image with this hash lives.
pub fn cache_path(thumbs_dir: &Path, hash: &str) -> PathBuf {
    thumbs_dir.join(format!("{hash}_{CACHE_SHORT_SIDE}.jpg"))
}

/// Writes the pre-resized copy atomically (JPEG, quality 90), unless it exists.
pub fn write_cache(img: &RgbImage, thumbs_dir: &Path, hash: &str) -> Result<PathBuf, ImageError> {
    let path = cache_path(thumbs_dir, hash);
    if path.exists() {
        return Ok(path);
    }
    let small = resize_short_side(img, CACHE_SHORT_SIDE);
    crate::fsutil::write_atomic(&path, |f| {
        let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(std::io::BufWriter::new(f), 90);
        enc.encode_image(&small).map_err(std::io::Error::other)
    })
    .map_err(|e| ImageError::Write { path: path.clone(), detail: e.to_string() })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_bytes(img: DynamicImage) -> Vec<u8> {
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
        out
    }

    #[test]
    fn bad_inputs_are_named_and_classified() {
        let p = Path::new("x.jpg");
        assert!(matches!(decode_bytes(b"", p), Err(ImageError::Empty { .. })));
        let html = b"<!DOCTYPE html><html><body>Rate limited</body></html>";
        let e = decode_bytes(html, p).unwrap_err();
        assert!(e.to_string().contains("HTML page") && e.to_string().contains("x.jpg"), "{e}");
        let good = png_bytes(DynamicImage::new_rgb8(40, 30));
        let e = decode_bytes(&good[..good.len() / 2], p).unwrap_err();
        assert!(matches!(e, ImageError::Truncated { .. }), "{e}");
    }

    #[test]
    fn sixteen_bit_and_gray_are_converted() {
        let d = decode_bytes(&png_bytes(DynamicImage::new_rgb16(8, 6)), Path::new("a.png")).unwrap();
        assert_eq!((d.rgb.dimensions(), d.source_color.as_str()), ((8, 6), "Rgb16"));
        let d = decode_bytes(&png_bytes(DynamicImage::new_luma8(5, 7)), Path::new("g.png")).unwrap();
        assert_eq!(d.rgb.dimensions(), (5, 7));
    }

    #[test]
    fn huge_dimensions_are_refused_without_allocating() {
        // A valid PNG header claiming 30000 x 10 pixels.
        let img = DynamicImage::new_luma8(30_000, 1);
        let e = decode_bytes(&png_bytes(img), Path::new("big.png")).unwrap_err();
        assert!(matches!(e, ImageError::TooLarge { width: 30_000, .. }), "{e}");
    }

    #[test]
    fn large_jpegs_decode_at_reduced_size() {
        let img = RgbImage::from_fn(1600, 1200, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 90]));
        let mut bytes = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90).encode_image(&img).unwrap();
        let d = decode_reduced(&bytes, Path::new("big.jpg"), 400).unwrap();
        assert_eq!(d.rgb.dimensions(), (400, 300), "1/4 scale keeps the long side at 400");
        // Small enough already: full decode.
        assert_eq!(decode_reduced(&bytes, Path::new("big.jpg"), 1000).unwrap().rgb.dimensions(), (1600, 1200));
        // Colours survive the scaled decode.
        let p = d.rgb.get_pixel(200, 150);
        assert!((p[2] as i32 - 90).abs() < 12, "{p:?}");
    }

    #[test]
    fn resize_keeps_aspect() {
        let img = RgbImage::new(1000, 500);
        assert_eq!(resize_short_side(&img, 256).dimensions(), (512, 256));
        assert_eq!(resize_short_side(&RgbImage::new(100, 80), 256).dimensions(), (100, 80));
    }
}
