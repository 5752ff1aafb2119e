//! Compute devices: CPU always; CUDA and Metal when this build has them and the machine too.
use candle_core::Device;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
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
