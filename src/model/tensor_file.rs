//! safetensors files written straight from the tensors' memory.
//!
//! `safetensors::serialize` (0.8) builds the whole file in one buffer, from a copy of each
//! tensor that candle's `View` makes: for a training checkpoint (~200 MB with the momentum
//! buffers, written every epoch) two copies into fresh memory before a single byte reaches the
//! file, and the crate's streaming `serialize_to_file` writes where it chooses without flushing
//! the file to disk, where our writes are atomic and durable ([`crate::fsutil::write_atomic`]).
//! So the header is built with the crate's own types (the same bytes) and each CPU tensor's data
//! is written from where it lies.
use crate::fsutil::write_chunked;
use candle_core::{CpuStorage, Storage, Tensor};
use safetensors::tensor::{Metadata, TensorInfo};
use std::collections::HashMap;
use std::io::Write;

/// The file's first part (the header's length, the header padded to 8 bytes) and the tensors in
/// the order their data follows it: what `safetensors::serialize` writes, in its order
/// (descending dtype alignment, then name).
pub struct Prepared<'a> {
    header: Vec<u8>,
    tensors: Vec<&'a Tensor>,
}

/// The header of a file of `tensors` with metadata `info`; an error says what the crate
/// refused.
pub fn prepare(tensors: &HashMap<String, Tensor>, info: HashMap<String, String>) -> Result<Prepared<'_>, String> {
    let dtype = |t: &Tensor| safetensors::Dtype::from(t.dtype());
    let mut items: Vec<(&String, &Tensor)> = tensors.iter().collect();
    items.sort_by(|(ln, l), (rn, r)| dtype(r).cmp(&dtype(l)).then(ln.cmp(rn)));
    let mut offset = 0;
    let infos = items
        .iter()
        .map(|(name, t)| {
            let n = t.elem_count() * t.dtype().size_in_bytes();
            let info = TensorInfo { dtype: dtype(t), shape: t.dims().to_vec(), data_offsets: (offset, offset + n) };
            offset += n;
            (name.to_string(), info)
        })
        .collect();
    let metadata = Metadata::new(Some(info), infos).map_err(|e| e.to_string())?;
    let mut json = serde_json::to_string(&metadata).map_err(|e| e.to_string())?.into_bytes();
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut header = (json.len() as u64).to_le_bytes().to_vec();
    header.extend(json);
    Ok(Prepared { header, tensors: items.into_iter().map(|(_, t)| t).collect() })
}

impl Prepared<'_> {
    /// Writes the file into `out`.
    pub fn write(&self, out: &mut impl Write) -> std::io::Result<()> {
        out.write_all(&self.header)?;
        self.tensors.iter().try_for_each(|t| with_bytes(t, |b| write_chunked(out, b)))
    }
}

/// `f` of `t`'s data as safetensors stores it (little-endian): in place for a contiguous CPU
/// tensor of a plain numeric type, else through candle's copy.
fn with_bytes<R>(t: &Tensor, f: impl FnOnce(&[u8]) -> R) -> R {
    #[cfg(target_endian = "little")]
    {
        let (storage, layout) = t.storage_and_layout();
        if let (Storage::Cpu(cpu), Some((a, b))) = (&*storage, layout.contiguous_offsets()) {
            let bytes: Option<&[u8]> = match cpu {
                CpuStorage::F32(v) => Some(bytemuck::cast_slice(&v[a..b])),
                CpuStorage::F64(v) => Some(bytemuck::cast_slice(&v[a..b])),
                CpuStorage::U32(v) => Some(bytemuck::cast_slice(&v[a..b])),
                CpuStorage::I64(v) => Some(bytemuck::cast_slice(&v[a..b])),
                CpuStorage::U8(v) => Some(&v[a..b]),
                _ => None,
            };
            if let Some(bytes) = bytes {
                return f(bytes);
            }
        }
    }
    f(&safetensors::View::data(&t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// The file is the crate's serialisation byte for byte, for tensors read in place
    /// (contiguous f32, u32, f64, a narrowed view with an offset) and through candle's copy
    /// (bf16, a transposed view).
    #[test]
    fn the_file_is_what_safetensors_serialises() {
        let dev = Device::Cpu;
        let base = Tensor::arange(0f32, 60.0, &dev).unwrap().reshape((6, 10)).unwrap();
        let tensors = HashMap::from([
            ("b.weight".to_string(), base.clone()),
            ("a.ids".to_string(), Tensor::new(&[3u32, 1, 4, 1, 5], &dev).unwrap()),
            ("c.f64".to_string(), Tensor::new(&[0.5f64, -2.0], &dev).unwrap()),
            ("d.narrow".to_string(), base.narrow(0, 2, 3).unwrap()),
            ("e.half".to_string(), base.to_dtype(DType::BF16).unwrap()),
            ("f.turned".to_string(), base.t().unwrap()),
        ]);
        let info = HashMap::from([("artculture".to_string(), "{\"format\":1}".to_string())]);
        let mut got = Vec::new();
        prepare(&tensors, info.clone()).unwrap().write(&mut got).unwrap();
        let want = safetensors::serialize(tensors.iter().collect::<Vec<_>>(), Some(info)).unwrap();
        assert_eq!(got.len(), want.len());
        assert!(got == want, "the bytes differ from safetensors::serialize's");
        let back = candle_core::safetensors::load_buffer(&got, &dev).unwrap();
        assert_eq!(back["f.turned"].to_vec2::<f32>().unwrap(), base.t().unwrap().to_vec2::<f32>().unwrap());
    }
}
