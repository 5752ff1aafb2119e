//! Weights: safetensors files checked tensor by tensor, and pretrained ImageNet weights fetched
//! through hf-hub into the standard Hugging Face cache.
use super::Arch;
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{VarBuilder, VarMap};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("cannot read weights {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a safetensors file: {detail}")]
    NotSafetensors { path: PathBuf, detail: String },
    #[error("{0}")]
    Tensor(String),
    #[error(
        "no published safetensors weights for {arch}; convert torchvision's with `scripts/convert_torchvision.py {arch}` and pass the file with --pretrained PATH"
    )]
    NoHubSource { arch: Arch },
    #[error(
        "pretrained {arch} weights are not in the Hugging Face cache and this run is offline; run `artculture weights fetch {}` while online",
        if arch.is_clip() { "clip" } else { arch.as_str() }
    )]
    NotCached { arch: Arch },
    #[error("downloading {arch} weights from {repo}: {detail}")]
    Download { arch: Arch, repo: String, detail: String },
}

impl From<candle_core::Error> for WeightsError {
    fn from(e: candle_core::Error) -> Self {
        Self::Tensor(e.to_string())
    }
}

/// Tensor name -> (dtype, shape), and the `__metadata__` entries.
pub type Header = (HashMap<String, (String, Vec<usize>)>, HashMap<String, String>);

/// Reads a safetensors file's header: tensor names with dtype and shape, and its metadata.
pub fn read_header(path: &Path) -> Result<Header, WeightsError> {
    let io = |source| WeightsError::Io { path: path.to_path_buf(), source };
    let bad = |detail: String| WeightsError::NotSafetensors { path: path.to_path_buf(), detail };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let file_len = f.metadata().map_err(io)?.len();
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(|_| bad(format!("only {file_len} bytes long")))?;
    let n = u64::from_le_bytes(len);
    if n == 0 || n > 100_000_000 || n + 8 > file_len {
        return Err(bad(format!("header length {n} does not fit a {file_len}-byte file")));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(io)?;
    let json: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| bad(format!("header is not JSON: {e}")))?;
    let obj = json.as_object().ok_or_else(|| bad("header is not a JSON object".into()))?;
    let mut tensors = HashMap::new();
    let mut meta = HashMap::new();
    for (k, v) in obj {
        if k == "__metadata__" {
            for (mk, mv) in v.as_object().into_iter().flatten() {
                meta.insert(mk.clone(), mv.as_str().unwrap_or_default().to_string());
            }
            continue;
        }
        let dtype = v["dtype"].as_str().ok_or_else(|| bad(format!("tensor {k} has no dtype")))?;
        let shape = v["shape"]
            .as_array()
            .ok_or_else(|| bad(format!("tensor {k} has no shape")))?
            .iter()
            .map(|d| d.as_u64().map(|d| d as usize))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad(format!("tensor {k} has a bad shape")))?;
        tensors.insert(k.clone(), (dtype.to_string(), shape));
    }
    Ok((tensors, meta))
}

/// Other names a tensor is published under (timm's VGG turns the classifier into
/// convolutions), tried when the torchvision name is absent.
fn aliases(name: &str) -> Vec<String> {
    [("classifier.0.", "pre_logits.fc1."), ("classifier.3.", "pre_logits.fc2."), ("classifier.6.", "head.fc.")]
        .iter()
        .filter_map(|(tv, timm)| name.strip_prefix(tv).map(|rest| format!("{timm}{rest}")))
        .collect()
}

/// A safetensors file as a VarBuilder backend that says which tensor is wrong and how.
pub struct CheckedSafetensors {
    path: PathBuf,
    st: MmapedSafetensors,
}

impl CheckedSafetensors {
    pub fn open(path: &Path) -> Result<Self, WeightsError> {
        read_header(path)?;
        // SAFETY: the file is mapped read-only; like every safetensors reader we rely on it
        // not being truncated by another process while mapped.
        let st = unsafe { MmapedSafetensors::new(path) }
            .map_err(|e| WeightsError::NotSafetensors { path: path.to_path_buf(), detail: e.to_string() })?;
        Ok(Self { path: path.to_path_buf(), st })
    }

    fn find(&self, name: &str) -> Option<String> {
        std::iter::once(name.to_string()).chain(aliases(name)).find(|n| self.st.get(n).is_ok())
    }

    fn load_checked(&self, name: &str, shape: &Shape, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let file = self.path.display();
        let Some(found) = self.find(name) else {
            candle_core::bail!("{file}: tensor `{name}` is missing (expected shape {:?})", shape.dims());
        };
        let view = self.st.get(&found)?;
        use safetensors::Dtype as S;
        if !matches!(view.dtype(), S::F16 | S::BF16 | S::F32 | S::F64) {
            candle_core::bail!(
                "{file}: tensor `{found}` has dtype {:?}, expected a float type (F32, F64, F16 or BF16)",
                view.dtype()
            );
        }
        let t = super::device::upload(&self.st.load(&found, &Device::Cpu)?, dtype, dev, &found)?;
        if t.shape() == shape {
            return Ok(t);
        }
        // timm's convolutional classifier holds the same numbers as torchvision's linear one.
        if found != name && t.elem_count() == shape.elem_count() {
            return t.reshape(shape);
        }
        candle_core::bail!("{file}: tensor `{found}` has shape {:?}, expected {:?}", t.dims(), shape.dims())
    }
}

impl SimpleBackend for CheckedSafetensors {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.load_checked(name, &s, dtype, dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let found = self
            .find(name)
            .ok_or_else(|| candle_core::Error::msg(format!("{}: tensor `{name}` is missing", self.path.display())))?;
        super::device::upload(&self.st.load(&found, &Device::Cpu)?, dtype, dev, &found)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.find(name).is_some()
    }
}

/// A VarBuilder over a checked file: plain tensors, for inference.
pub fn var_builder(path: &Path, dtype: DType, device: &Device) -> Result<VarBuilder<'static>, WeightsError> {
    let backend: Box<dyn SimpleBackend> = Box::new(CheckedSafetensors::open(path)?);
    Ok(VarBuilder::from_backend(backend, dtype, device.clone()))
}

/// Copies a file's tensors into the variables of `varmap` (for training from pretrained
/// weights, or resuming). Variables whose name starts with one of `skip` keep their values.
pub fn load_into_varmap(varmap: &VarMap, path: &Path, skip: &[&str]) -> Result<usize, WeightsError> {
    let file = CheckedSafetensors::open(path)?;
    let vars = varmap.data().lock().map_err(|_| WeightsError::Tensor("variable map poisoned".into()))?;
    let mut names: Vec<_> = vars.keys().cloned().collect();
    names.sort();
    let mut n = 0;
    for name in names.iter().filter(|n| !skip.iter().any(|s| n.starts_with(s))) {
        let var = &vars[name];
        let t = file.load_checked(name, var.shape(), var.dtype(), var.device())?;
        var.set(&t)?;
        n += 1;
    }
    Ok(n)
}

/// Where an architecture's ImageNet weights are published.
#[derive(Debug, Clone, Copy)]
pub struct HubSource {
    pub owner: &'static str,
    pub name: &'static str,
    pub file: &'static str,
}

pub fn hub_source(arch: Arch) -> Option<HubSource> {
    match arch {
        Arch::Resnet50 => Some(HubSource { owner: "timm", name: "resnet50.tv_in1k", file: "model.safetensors" }),
        Arch::Vgg16Bn => Some(HubSource { owner: "timm", name: "vgg16_bn.tv_in1k", file: "model.safetensors" }),
        Arch::Alexnet | Arch::ClipVitB32 => None,
    }
}

/// How to reach the hub: defaults come from `HF_ENDPOINT`, `HF_HUB_CACHE` / `HF_HOME` and
/// `HF_HUB_OFFLINE`, as the Python client reads them.
#[derive(Debug, Clone, Default)]
pub struct HubOptions {
    pub endpoint: Option<String>,
    pub cache_dir: Option<PathBuf>,
    pub offline: bool,
}

impl HubOptions {
    pub fn from_env() -> Self {
        let offline = std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
        Self { endpoint: None, cache_dir: None, offline }
    }
}

/// Fetches (or finds in the cache) an architecture's pretrained weights. `progress` gets
/// (bytes done, bytes total). Offline, only the cache is read: no request is made.
pub fn fetch(
    arch: Arch,
    opts: &HubOptions,
    progress: impl Fn(u64, u64) + Send + Sync + 'static,
) -> Result<PathBuf, WeightsError> {
    if arch.is_clip() {
        // CLIP's checkpoint is four files (config and tokenizer beside the weights).
        let progress = std::sync::Arc::new(progress);
        return super::clip::hub::fetch(opts, move |_, d, t| progress(d, t)).map(|f| f.weights).map_err(|e| match e {
            super::clip::ClipError::NotCached => WeightsError::NotCached { arch },
            other => {
                WeightsError::Download { arch, repo: "openai/clip-vit-base-patch32".into(), detail: other.to_string() }
            }
        });
    }
    let src = hub_source(arch).ok_or(WeightsError::NoHubSource { arch })?;
    let repo = format!("{}/{}", src.owner, src.name);
    match hub_file(src.owner, src.name, None, src.file, opts, Box::new(progress)) {
        Ok(p) => {
            // A proxy's error page or a truncated file must not pass for weights.
            read_header(&p)?;
            Ok(p)
        }
        Err(HubFileError::NotCached) => Err(WeightsError::NotCached { arch }),
        Err(HubFileError::Other(detail)) => Err(WeightsError::Download { arch, repo, detail }),
    }
}

/// Why a hub file could not be had.
#[derive(Debug)]
pub enum HubFileError {
    /// Offline, and not in the cache.
    NotCached,
    Other(String),
}

/// Progress of a download: (bytes done, bytes total).
pub type HubProgressFn = Box<dyn Fn(u64, u64) + Send + Sync>;

/// One file of a Hugging Face model repository, from the cache or downloaded into it (at
/// `revision`, default `main`).
pub fn hub_file(
    owner: &str,
    name: &str,
    revision: Option<&str>,
    file: &str,
    opts: &HubOptions,
    progress: HubProgressFn,
) -> Result<PathBuf, HubFileError> {
    let other = |e: String| HubFileError::Other(e);
    let mut builder = hf_hub::HFClient::builder();
    if let Some(e) = &opts.endpoint {
        builder = builder.endpoint(e.clone());
    }
    if let Some(c) = &opts.cache_dir {
        builder = builder.cache_dir(c.clone());
    }
    let client = builder.build().map_err(|e| other(e.to_string()))?;
    let client = hf_hub::HFClientSync::from_inner(client).map_err(|e| other(e.to_string()))?;
    let model = client.model(owner, name);
    let handler = HubProgress { f: progress, total: Default::default() };
    let req = model
        .download_file()
        .filename(file)
        .local_files_only(opts.offline)
        .progress(hf_hub::progress::Progress::new(handler));
    let res = match revision {
        Some(r) => req.revision(r).send(),
        None => req.send(),
    };
    match res {
        Ok(p) => Ok(p),
        Err(hf_hub::HFError::LocalEntryNotFound { .. }) => Err(HubFileError::NotCached),
        Err(e) => Err(other(format!("{file}: {e}"))),
    }
}

struct HubProgress {
    f: Box<dyn Fn(u64, u64) + Send + Sync>,
    total: std::sync::atomic::AtomicU64,
}

impl hf_hub::progress::ProgressHandler for HubProgress {
    fn on_progress(&self, event: &hf_hub::progress::ProgressEvent) {
        use hf_hub::progress::{DownloadEvent, ProgressEvent};
        use std::sync::atomic::Ordering;
        if let ProgressEvent::Download(e) = event {
            match e {
                DownloadEvent::Start { total_bytes, .. } => {
                    self.total.store(*total_bytes, Ordering::Relaxed);
                    (self.f)(0, *total_bytes);
                }
                DownloadEvent::Progress { files } => {
                    for f in files {
                        (self.f)(f.bytes_completed, f.total_bytes.max(self.total.load(Ordering::Relaxed)));
                    }
                }
                DownloadEvent::AggregateProgress { bytes_completed, total_bytes, .. } => {
                    (self.f)(*bytes_completed, *total_bytes)
                }
                DownloadEvent::Complete => {
                    let t = self.total.load(Ordering::Relaxed);
                    (self.f)(t, t)
                }
            }
        }
    }
}
