//! Compute devices: CPU always; CUDA and Metal when this build has them and the machine too.
use candle_core::{DType, Device, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    #[default]
    Cpu,
    Cuda,
    Metal,
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("this build of artculture has no {0} support; rebuild with `cargo build --release --features {0}`")]
    NotCompiled(&'static str),
    #[error("no usable {kind} device: {detail}")]
    Unavailable { kind: &'static str, detail: String },
}

impl DeviceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
            Self::Metal => "metal",
        }
    }

    pub fn compiled(self) -> bool {
        match self {
            Self::Cpu => true,
            Self::Cuda => cfg!(feature = "cuda"),
            Self::Metal => cfg!(feature = "metal"),
        }
    }

    pub fn open(self) -> Result<Device, DeviceError> {
        if !self.compiled() {
            return Err(DeviceError::NotCompiled(self.as_str()));
        }
        let unavailable =
            |e: candle_core::Error| DeviceError::Unavailable { kind: self.as_str(), detail: e.to_string() };
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda => Device::new_cuda(0).map_err(unavailable),
            Self::Metal => Device::new_metal(0).map_err(unavailable),
        }
    }
}

// The device rule, kept in this one place. A GPU backend implements fewer ops than the CPU:
// candle's Metal backend has no f64 at all (no f64 const-set, no f64<->f32 casts), and a host
// round trip per step stalls CUDA. So:
// 1. Tensors enter a device only through [`upload`] (weights, initial values, images, labels,
//    masks): it builds and casts on the host, then copies, and refuses f64 for a device other
//    than the CPU. f64 is a CPU-only parity tool.
// 2. Nothing calls `to_dtype(F64)` on a device tensor: read f32 back and widen on the host.
// 3. Values are read back once per logged interval (the trainer's batch losses) or per
//    evaluation batch (logits), never per op.
// `ARTCULTURE_CPU_AS_DEVICE=1` makes the CPU follow the same path as a GPU (our CPU kernels
// off, the rule enforced for the CPU too), so the CPU tests run the device path
// (`tests/device_path.rs`).

pub use crate::kernels::cpu_as_device;

/// Whether `device` follows the device rule: every GPU, and the CPU when it stands in for one.
pub fn is_accelerator(device: &Device) -> bool {
    !device.is_cpu() || cpu_as_device()
}

/// Refuses an f64 tensor on an accelerator, naming it.
pub fn check_dtype(t: &Tensor, what: &str) -> candle_core::Result<()> {
    if t.dtype() == DType::F64 && is_accelerator(t.device()) {
        candle_core::bail!(
            "{what}: f64 tensor on {:?}; GPU backends (Metal above all) have no f64, keep f64 to CPU parity runs",
            t.device().location()
        );
    }
    Ok(())
}

/// A host tensor on `device` as `dtype`: cast on the host, then copied (rule 1).
pub fn upload(host: &Tensor, dtype: DType, device: &Device, what: &str) -> candle_core::Result<Tensor> {
    let t = host.to_device(&Device::Cpu)?.to_dtype(dtype)?;
    let t = if device.is_cpu() { t } else { t.to_device(device)? };
    check_dtype(&t, what)?;
    Ok(t)
}

/// The devices this build can use on this machine (for the GUI's device menu).
pub fn available() -> Vec<DeviceKind> {
    [DeviceKind::Cpu, DeviceKind::Cuda, DeviceKind::Metal].into_iter().filter(|k| k.open().is_ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_always_there_and_missing_backends_say_how_to_get_them() {
        assert!(available().contains(&DeviceKind::Cpu));
        if !cfg!(feature = "cuda") {
            let e = DeviceKind::Cuda.open().unwrap_err().to_string();
            assert!(e.contains("--features cuda"), "{e}");
        }
    }
}
