//! Is the whole file there? A structural walk of JPEG, PNG, GIF and WebP files up to their end
//! marker, done before decoding.
//!
//! Written by hand because the decoders we use are lenient: `image`'s JPEG decoder fills the
//! rows of a file cut off mid-scan with grey and returns success, and a PNG or GIF cut after its
//! pixel data decodes without its end chunk. An interrupted download would then be imported,
//! shown and trained on as if it were whole. PIL refuses such files by default ("image file is
//! truncated"); so do we. The walk reads segment headers only (no pixel data), so it costs
//! microseconds next to the decode. TIFF needs no walk: its decoder reads every strip at the
//! offset the header gives and fails when the file ends first (the tests cut TIFFs to prove it).

/// Why a file is incomplete: the format and where it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncated {
    pub format: &'static str,
    pub detail: String,
}

impl std::fmt::Display for Truncated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.format, self.detail)
    }
}

fn cut(format: &'static str, detail: impl Into<String>) -> Truncated {
    Truncated { format, detail: detail.into() }
}

/// Checks that a file of a known format is complete; other formats pass through unchecked.
pub fn check_complete(bytes: &[u8]) -> Result<(), Truncated> {
    if bytes.starts_with(&[0xFF, 0xD8]) {
        jpeg(bytes)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        png(bytes)
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        gif(bytes)
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        webp(bytes)
    } else {
        Ok(())
    }
}

fn be16(b: &[u8], i: usize) -> Option<usize> {
    Some(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]) as usize)
}

/// Segments from SOI to EOI; entropy-coded data after each SOS is scanned for the next marker.
fn jpeg(b: &[u8]) -> Result<(), Truncated> {
    const F: &str = "JPEG";
    let mut i = 2;
    loop {
        // Bytes between segments are tolerated (libjpeg warns and skips them), as are fill bytes.
        while i < b.len() && b[i] != 0xFF {
            i += 1;
        }
        while i < b.len() && b[i] == 0xFF {
            i += 1;
        }
        let Some(&marker) = b.get(i) else {
            return Err(cut(F, format!("ends at byte {} before its end-of-image marker", b.len())));
        };
        i += 1;
        match marker {
            0xD9 => return Ok(()),
            0x01 | 0xD0..=0xD7 => continue,
            _ => {
                let len =
                    be16(b, i).ok_or_else(|| cut(F, format!("ends inside the header of segment {marker:#04x}")))?;
                if len < 2 || i + len > b.len() {
                    return Err(cut(
                        F,
                        format!("segment {marker:#04x} at byte {i} needs {len} bytes, {} remain", b.len() - i),
                    ));
                }
                i += len;
                if marker == 0xDA {
                    // Scan data: 0xFF is followed by 0x00 (stuffing) or a restart marker inside it.
                    loop {
                        match b.get(i..i + 2) {
                            None => return Err(cut(F, format!("ends inside its image data at byte {}", b.len()))),
                            Some([0xFF, n]) if *n != 0 && !(0xD0..=0xD7).contains(n) => break,
                            _ => i += 1,
                        }
                    }
                }
            }
        }
    }
}

/// Chunks from the signature to IEND (the png crate checks each chunk's CRC when decoding).
fn png(b: &[u8]) -> Result<(), Truncated> {
    const F: &str = "PNG";
    let mut i = 8;
    loop {
        if i + 8 > b.len() {
            return Err(cut(F, format!("ends at byte {} before its IEND chunk", b.len())));
        }
        let len = u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]) as usize;
        let kind = &b[i + 4..i + 8];
        let end = i.saturating_add(12).saturating_add(len);
        if end > b.len() {
            let name = String::from_utf8_lossy(kind).into_owned();
            return Err(cut(F, format!("chunk {name} at byte {i} needs {len} bytes, {} remain", b.len() - i - 8)));
        }
        if kind == b"IEND" {
            return Ok(());
        }
        i = end;
    }
}

/// Blocks from the logical screen to the trailer (0x3B), every frame's sub-blocks included.
fn gif(b: &[u8]) -> Result<(), Truncated> {
    const F: &str = "GIF";
    let short =
        |at: usize| cut(F, format!("ends at byte {} before its trailer (reading the block at byte {at})", b.len()));
    let table = |packed: u8| if packed & 0x80 != 0 { 3usize << ((packed & 7) + 1) } else { 0 };
    let sub_blocks = |mut i: usize| -> Result<usize, Truncated> {
        let start = i;
        loop {
            let n = *b.get(i).ok_or_else(|| short(start))? as usize;
            i += 1 + n;
            if n == 0 {
                return Ok(i);
            }
        }
    };
    let packed = *b.get(10).ok_or_else(|| short(6))?;
    let mut i = 13 + table(packed);
    loop {
        match b.get(i) {
            None => return Err(short(i)),
            Some(0x3B) => return Ok(()),
            Some(0x21) => i = sub_blocks(i + 2)?,
            Some(0x2C) => {
                let packed = *b.get(i + 9).ok_or_else(|| short(i))?;
                // Descriptor (10 bytes), local colour table, LZW code size, then the data.
                i = sub_blocks(i + 10 + table(packed) + 1)?;
            }
            Some(other) => {
                return Err(cut(F, format!("has an unknown block {other:#04x} at byte {i} (cut off or damaged)")));
            }
        }
    }
}

/// The RIFF header states the file's size.
fn webp(b: &[u8]) -> Result<(), Truncated> {
    let size = u32::from_le_bytes([b[4], b[5], b[6], b[7]]) as usize;
    if b.len() < size.saturating_add(8) {
        return Err(cut("WebP", format!("is {} bytes, its header says {}", b.len(), size + 8)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_formats_pass_through() {
        assert_eq!(check_complete(b"BM not checked here"), Ok(()));
    }

    #[test]
    fn jpeg_stuffing_and_restart_markers_are_not_ends() {
        // SOI, SOS with 2-byte header, data containing FF00 and FFD0, then EOI.
        let whole = [0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x02, 0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56, 0xFF, 0xD9];
        assert_eq!(check_complete(&whole), Ok(()));
        for n in 2..whole.len() {
            assert!(check_complete(&whole[..n]).is_err(), "cut at {n}");
        }
    }

    fn encoded(format: image::ImageFormat) -> Vec<u8> {
        // Noise-like content, so every format's pixel data spans most of the file.
        let img = image::RgbImage::from_fn(96, 64, |x, y| {
            let v = (x * 7919 + y * 104_729) as u8;
            image::Rgb([v, v.wrapping_mul(3), (x * y) as u8])
        });
        let mut out = Vec::new();
        image::DynamicImage::ImageRgb8(img).write_to(&mut std::io::Cursor::new(&mut out), format).unwrap();
        out
    }

    #[test]
    fn every_format_cut_anywhere_is_refused_by_name() {
        use image::ImageFormat::*;
        let path = std::path::Path::new("downloads/cut.img");
        for format in [Jpeg, Png, Gif, WebP, Tiff] {
            let whole = encoded(format);
            assert!(crate::imaging::decode_bytes(&whole, path).is_ok(), "{format:?} whole");
            let n = whole.len();
            let cuts = [n / 5, n / 3, n / 2, 2 * n / 3, n * 9 / 10, n - 2, n - 1];
            for at in cuts {
                let e = crate::imaging::decode_bytes(&whole[..at], path)
                    .err()
                    .unwrap_or_else(|| panic!("{format:?} cut at {at} of {n} bytes was accepted"));
                let msg = e.to_string();
                assert!(msg.starts_with("downloads/cut.img: "), "{format:?} at {at}: {msg}");
                assert!(
                    matches!(
                        e,
                        crate::imaging::ImageError::Truncated { .. } | crate::imaging::ImageError::Corrupt { .. }
                    ),
                    "{format:?} at {at}: {msg}"
                );
            }
            // The reduced-size path (prediction, display) refuses them too.
            assert!(crate::imaging::decode_reduced(&whole[..n / 2], path, 16).is_err(), "{format:?} reduced");
        }
    }

    #[test]
    fn a_jpeg_cut_mid_scan_says_truncated() {
        let whole = encoded(image::ImageFormat::Jpeg);
        let e = crate::imaging::decode_bytes(&whole[..whole.len() / 3], std::path::Path::new("a.jpg")).unwrap_err();
        assert!(e.to_string().contains("a.jpg: image file is truncated: JPEG ends inside its image data"), "{e}");
    }
}
