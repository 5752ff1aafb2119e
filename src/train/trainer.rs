//! The training loop: builds the model for the method, runs epochs, evaluates, checkpoints
//! (atomically, every epoch) and resumes from the last completed epoch with identical state:
//! weights, batch-norm statistics, momentum buffers, scheduler and random streams (every epoch,
//! batch and image draws from a seed derived from the run's seed, not from a stateful generator).
use super::batch_log::BatchLog;
use super::data::{self, Example, Transform};
use super::epoch;
use super::evaluate;
use super::run_status::{guarded, lock_run, run_dir};
use super::schedule::{PlateauMode, Scheduler, SchedulerConfig};
use super::sgd::Sgd;
use super::split::{Part, stratified_split};
use super::{Control, Method, Pretrained, TrainConfig, TrainError, TrainEvent, features, mix_seed};
use crate::catalog::{ArtworkQuery, EpochMetrics, RunStatus};
use crate::model::checkpoint::{self, CheckpointMeta, FORMAT_VERSION};
use crate::model::{CultureNet, weights};
use crate::workspace::Workspace;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// What must survive a restart besides the weights and momentum buffers.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct TrainState {
    epochs_done: u32,
    scheduler: Scheduler,
    best_val_acc: f64,
    seconds: f64,
}

const STATE_KEY: &str = "train_state";
const MOMENTUM_PREFIX: &str = "optimizer.momentum.";

fn new_run_id(cfg: &TrainConfig) -> String {
    let t = crate::catalog::now_rfc3339();
    let stamp: String = t.chars().filter(|c| c.is_ascii_digit()).take(14).collect();
    let salt = mix_seed(&[std::process::id() as u64, Instant::now().elapsed().as_nanos() as u64, cfg.seed]) % 0xffff;
    format!("{stamp}-{}-{}-{salt:04x}", cfg.arch, cfg.method.as_str())
}

fn is_buffer(name: &str) -> bool {
    name.ends_with("running_mean") || name.ends_with("running_var")
}

/// Starts a new run; returns its id once it ends (finished, or an error).
pub fn start(
    ws_path: &Path,
    cfg: TrainConfig,
    device: &Device,
    events: &mut dyn FnMut(TrainEvent),
    control: &Control,
) -> Result<String, TrainError> {
    cfg.validate()?;
    let mut ws = Workspace::open(ws_path)?;
    // A new split is made only when asked (or when there is none yet): runs of one workspace
    // are compared on the same test works. Works flagged since are left out.
    let q = ArtworkQuery { grouped_only: true, flagged: Some(false), with_image_only: true, ..Default::default() };
    let eligible: Vec<(i64, String)> =
        ws.catalog.artworks(&q)?.into_iter().filter_map(|a| a.culture.map(|c| (a.id, c))).collect();
    let reuse = match &cfg.split_from {
        Some(other) => Some(other.clone()),
        None if !cfg.new_split => ws.catalog.runs()?.last().map(|r| r.id.clone()),
        None => None,
    };
    let split: Vec<(i64, Part)> = match reuse {
        Some(other) => {
            let ok: std::collections::HashSet<i64> = eligible.iter().map(|(id, _)| *id).collect();
            ws.catalog
                .run_split(&other)?
                .into_iter()
                .filter(|(id, _)| ok.contains(id))
                .filter_map(|(id, p)| Part::parse(&p).map(|p| (id, p)))
                .collect()
        }
        None => stratified_split(&eligible, cfg.seed),
    };
    let mut classes: Vec<String> = split
        .iter()
        .map(|(id, _)| ws.catalog.artwork(*id).map(|a| a.culture.unwrap_or_default()))
        .collect::<Result<_, _>>()?;
    classes.sort();
    classes.dedup();
    if classes.len() < 2 {
        return Err(TrainError::Data(format!(
            "training needs works of at least two cultures with images; this workspace has {} ({})",
            classes.len(),
            classes.join(", ")
        )));
    }
    let run = new_run_id(&cfg);
    let config = serde_json::to_string(&cfg).map_err(|e| TrainError::Data(e.to_string()))?;
    let parts: Vec<(i64, &str)> = split.iter().map(|(id, p)| (*id, p.as_str())).collect();
    ws.catalog.create_run(&run, cfg.arch.as_str(), cfg.method.as_str(), cfg.scheduler.name(), &config, &parts)?;
    let dir = run_dir(&ws, &run);
    let write = |p: PathBuf, b: &[u8]| {
        crate::fsutil::write_bytes_atomic(&p, b).map_err(|e| TrainError::Io { path: p.clone(), detail: e.to_string() })
    };
    guarded(ws_path, &run, || {
        let _lock = lock_run(&ws, &run)?;
        write(dir.join("config.json"), config.as_bytes())?;
        write(dir.join("classes.json"), serde_json::to_string(&classes).unwrap_or_default().as_bytes())?;
        run_loop(&mut ws, &run, &cfg, &classes, None, device, events, control)
    })?;
    Ok(run)
}

/// Continues a run from its last completed epoch.
pub fn resume(
    ws_path: &Path,
    run: &str,
    device: &Device,
    events: &mut dyn FnMut(TrainEvent),
    control: &Control,
) -> Result<String, TrainError> {
    let mut ws = Workspace::open(ws_path)?;
    ws.catalog.run(run)?;
    guarded(ws_path, run, || resume_inner(&mut ws, run, device, events, control))?;
    Ok(run.to_string())
}

fn resume_inner(
    ws: &mut Workspace,
    run: &str,
    device: &Device,
    events: &mut dyn FnMut(TrainEvent),
    control: &Control,
) -> Result<(), TrainError> {
    let rec = ws.catalog.run(run)?;
    let cfg: TrainConfig = serde_json::from_str(&rec.config)
        .map_err(|e| TrainError::Data(format!("run {run}: unreadable configuration: {e}")))?;
    cfg.validate()?;
    let dir = run_dir(ws, run);
    let classes: Vec<String> = std::fs::read(dir.join("classes.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| TrainError::Data(format!("run {run}: {} is missing", dir.join("classes.json").display())))?;
    let last = dir.join("last.safetensors");
    let state = if last.exists() {
        let raw = checkpoint::read_extra(&last, STATE_KEY)?
            .ok_or_else(|| TrainError::Data(format!("{}: no training state", last.display())))?;
        Some(
            serde_json::from_str::<TrainState>(&raw)
                .map_err(|e| TrainError::Data(format!("{}: {e}", last.display())))?,
        )
    } else {
        None
    };
    // Take the lock before saying "running": another process may be training it right now.
    let _lock = lock_run(ws, run)?;
    ws.catalog.set_run_status(run, RunStatus::Running, None)?;
    run_loop(ws, run, &cfg, &classes, state, device, events, control)
}

struct Model {
    map: VarMap,
    net: CultureNet,
    /// A CLIP-backed run's CLIP configuration (written into its checkpoints).
    clip: Option<crate::model::clip::ClipConfig>,
    /// Transfer mode: the backbone on plain tensors, so no graph is recorded while embedding.
    frozen: Option<crate::model::Backbone>,
}

fn build_model(
    cfg: &TrainConfig,
    classes: usize,
    resume_from: Option<&Path>,
    device: &Device,
) -> Result<Model, TrainError> {
    let map = VarMap::new();
    let vb = crate::model::init::seeded_var_builder(&map, cfg.seed, DType::F32, device);
    let pretrained = match (&cfg.pretrained, resume_from) {
        (_, Some(_)) => None,
        _ if cfg.method == Method::Scratch => None,
        (Pretrained::None, _) => None,
        // A CLIP checkpoint folder (config.json, model.safetensors) or a weights file.
        (Pretrained::Path(p), _) if p.is_dir() => Some(p.join("model.safetensors")),
        (Pretrained::Path(p), _) => Some(p.clone()),
        (Pretrained::Hub, _) => Some(weights::fetch(cfg.arch, &weights::HubOptions::from_env(), |_, _| {})?),
    };
    // CLIP's shapes come from its config: the resumed checkpoint's, else the one beside the
    // pretrained weights.
    let clip = match (cfg.arch.is_clip(), resume_from, &pretrained) {
        (false, ..) => None,
        (true, Some(last), _) => checkpoint::read_meta(last).ok().and_then(|m| m.clip),
        (true, None, Some(p)) => {
            Some(crate::model::clip::config_beside(p).map_err(|e| TrainError::Data(e.to_string()))?)
        }
        (true, None, None) => Some(crate::model::clip::ClipConfig::vit_b32()),
    };
    if let Some(c) = &clip
        && c.vision_config.image_size != cfg.image_size
    {
        return Err(TrainError::Data(format!(
            "CLIP takes {0} x {0} images (its position embeddings are learned for that size): use --image-size {0}",
            c.vision_config.image_size
        )));
    }
    let net = match &clip {
        Some(c) => CultureNet::new_clip(c, cfg.hidden, classes, vb)?,
        None => CultureNet::new(cfg.arch, cfg.dropout, cfg.hidden, classes, vb)?,
    };
    if let Some(last) = resume_from {
        weights::load_into_varmap(&map, last, &[])?;
    } else if let Some(p) = pretrained {
        weights::load_into_varmap(&map, &p, &[crate::model::HEAD_PREFIX])?;
    }
    let frozen = if cfg.method == Method::Transfer {
        let tensors: HashMap<String, Tensor> = map
            .data()
            .lock()
            .map_err(|_| TrainError::Data("poisoned".into()))?
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
            .collect();
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        Some(match &clip {
            Some(c) => crate::model::Backbone::Clip(crate::model::clip::backbone::ClipBackbone::new(c, vb)?),
            None => crate::model::Backbone::new(
                cfg.arch,
                crate::model::BackboneConfig { own_classes: None, dropout: cfg.dropout },
                vb,
            )?,
        })
    } else {
        None
    };
    Ok(Model { map, net, clip, frozen })
}

fn trainable(map: &VarMap, method: Method) -> Vec<(String, Var)> {
    let data = map.data().lock().unwrap_or_else(|p| p.into_inner());
    let mut v: Vec<(String, Var)> = data
        .iter()
        .filter(|(n, _)| !is_buffer(n))
        .filter(|(n, _)| method != Method::Transfer || n.starts_with(&format!("{}.", crate::model::HEAD_PREFIX)))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn meta(
    cfg: &TrainConfig,
    classes: &[String],
    run: &str,
    clip: Option<crate::model::clip::ClipConfig>,
) -> CheckpointMeta {
    let (mean, std) = cfg.arch.mean_std();
    CheckpointMeta {
        format: FORMAT_VERSION,
        arch: cfg.arch,
        classes: classes.to_vec(),
        image_size: cfg.image_size,
        mean,
        std,
        clip,
        hidden: cfg.hidden,
        dropout: cfg.dropout,
        run_id: Some(run.to_string()),
        train_config: serde_json::to_value(cfg).unwrap_or_default(),
    }
}

/// The run itself: its split, the model, every epoch from `state` on, then the test accuracy of
/// the best checkpoint. The caller holds the run's lock ([`lock_run`]).
#[allow(clippy::too_many_arguments)]
fn run_loop(
    ws: &mut Workspace,
    run: &str,
    cfg: &TrainConfig,
    classes: &[String],
    state: Option<TrainState>,
    device: &Device,
    events: &mut dyn FnMut(TrainEvent),
    control: &Control,
) -> Result<(), TrainError> {
    // Every forward and backward pass of the run happens on this thread, inside this scope.
    let _autocast = crate::model::autocast::Autocast::new(cfg.precision);
    let dir = run_dir(ws, run);
    let last_path = dir.join("last.safetensors");
    let best_path = dir.join("best.safetensors");
    let (train, val, test) = load_split(ws, run, classes)?;
    let first_epoch = state.as_ref().map(|s| s.epochs_done + 1).unwrap_or(1);
    events(TrainEvent::Started {
        run_id: run.into(),
        classes: classes.to_vec(),
        train: train.len(),
        val: val.len(),
        test: test.len(),
        epochs: cfg.epochs,
        first_epoch,
    });

    let model = build_model(cfg, classes.len(), state.as_ref().map(|_| last_path.as_path()), device)?;
    let mut sgd = Sgd::new(trainable(&model.map, cfg.method), cfg.sgd)?;
    let mut sched = Scheduler::new(cfg.scheduler, cfg.sgd.lr);
    let (mut best_val_acc, mut seconds) = (f64::NEG_INFINITY, 0.0);
    if let Some(s) = &state {
        sched = s.scheduler.clone();
        best_val_acc = s.best_val_acc;
        seconds = s.seconds;
        let st = candle_core::safetensors::load(&last_path, device)?;
        sgd.set_buffers(|n| st.get(&format!("{MOMENTUM_PREFIX}{n}")).cloned());
    }
    let class_weights = if cfg.balanced { Some(class_weights(&train, classes.len(), device)?) } else { None };
    let (mean, std) = cfg.arch.mean_std();
    let eval_t = Transform { size: cfg.image_size, train: false, flip: false, mean, std };
    // Transfer mode: every split's embeddings once (cached across runs in features/).
    let embedded = match &model.frozen {
        Some(backbone) => {
            let cache = features::cache_file(&ws.features_dir(), &features::transfer_key(cfg, run));
            let mut emb = |exs: &[Example], what: &str| {
                let mut report =
                    |d: usize, n: usize| events(TrainEvent::Message(format!("embedding {what} images: {d} / {n}")));
                let save_every = features::SAVE_EVERY;
                features::embeddings(
                    &features::backbone_encoder(backbone, &eval_t, device),
                    exs,
                    cfg.batch,
                    &cache,
                    device,
                    control,
                    &mut report,
                    save_every,
                )
            };
            Some([emb(&train, "training")?, emb(&val, "validation")?, emb(&test, "test")?])
        }
        None => None,
    };

    // A resumed run trains these epochs again; their old batches would be plotted twice.
    ws.catalog.drop_batches_from(run, first_epoch)?;
    let mut batch_log = BatchLog::new();
    for epoch in first_epoch..=cfg.epochs {
        let started = Instant::now();
        sgd.set_lr(sched.lr);
        let step = epoch::Step { run, cfg, device, control, class_weights: class_weights.as_ref(), lr: sched.lr };
        let batches = match &embedded {
            Some([train_emb, ..]) => {
                epoch::Batches::Embedded { head: &model.net.head, embeddings: train_emb, examples: &train }
            }
            None => epoch::Batches::Images { net: &model.net, examples: &train },
        };
        let (loss_sum, seen) =
            epoch::train_epoch(ws, &step, epoch, batches, &mut sgd, &mut batch_log, started, events)?;
        let val_eval = match &embedded {
            Some([_, val_emb, _]) => evaluate::on_embeddings(&model.net.head, val_emb, &labels(&val), classes)?,
            None => evaluate::on_images(&model.net, &val, &eval_t, cfg.batch, classes, device)?,
        };
        let lr_used = sched.lr;
        // Weights that overflowed give infinite logits and a NaN loss: nothing to record.
        if !val_eval.loss.is_finite() {
            return Err(TrainError::DivergedValidation { epoch, loss: val_eval.loss, lr: lr_used });
        }
        let watched = match cfg.scheduler {
            SchedulerConfig::Plateau { mode: PlateauMode::Max, .. } => val_eval.top1,
            _ => val_eval.loss,
        };
        sched.step(watched);
        let epoch_s = started.elapsed().as_secs_f64();
        seconds += epoch_s;
        let m = EpochMetrics {
            epoch,
            train_loss: loss_sum / seen.max(1) as f64,
            val_loss: val_eval.loss,
            val_acc: val_eval.top1,
            val_top3: val_eval.top3,
            lr: lr_used,
            images_per_s: seen as f64 / epoch_s.max(1e-9),
            seconds: epoch_s,
        };
        let improved = val_eval.top1 > best_val_acc;
        best_val_acc = best_val_acc.max(val_eval.top1);
        let st = TrainState { epochs_done: epoch, scheduler: sched.clone(), best_val_acc, seconds };
        save_checkpoints(
            &model.map,
            &sgd,
            &meta(cfg, classes, run, model.clip.clone()),
            &st,
            &last_path,
            improved.then_some(&best_path),
        )?;
        ws.catalog.record_epoch(run, &m, best_val_acc, seconds)?;
        events(TrainEvent::Epoch(m));
    }

    // Test accuracy of the best checkpoint.
    let best = checkpoint::load(&best_path, device)?;
    let test_eval = if test.is_empty() {
        None
    } else {
        Some(match (&embedded, cfg.method) {
            (Some([_, _, test_emb]), Method::Transfer) => {
                evaluate::on_embeddings(&best.net.head, test_emb, &labels(&test), classes)?
            }
            _ => evaluate::on_images(&best.net, &test, &eval_t, cfg.batch, classes, device)?,
        })
    };
    let (top1, top3) = test_eval.map(|e| (e.top1, e.top3)).unwrap_or((f64::NAN, f64::NAN));
    if top1.is_finite() {
        ws.catalog.set_run_test_accuracy(run, top1, top3)?;
    }
    ws.catalog.set_run_status(run, RunStatus::Finished, None)?;
    events(TrainEvent::Finished { run_id: run.into(), best_val_acc, top1, top3 });
    Ok(())
}

/// Training (shared with the loader threads), validation and test examples.
type Split = (Arc<Vec<Example>>, Vec<Example>, Vec<Example>);

/// The run's examples, from its stored split.
fn load_split(ws: &Workspace, run: &str, classes: &[String]) -> Result<Split, TrainError> {
    let mut parts: HashMap<Part, Vec<(i64, String)>> = HashMap::new();
    for (id, p) in ws.catalog.run_split(run)? {
        let culture = ws.catalog.artwork(id)?.culture.unwrap_or_default();
        parts.entry(Part::parse(&p).unwrap_or(Part::Train)).or_default().push((id, culture));
    }
    let exs = |p: Part| data::examples(ws, parts.get(&p).map(Vec::as_slice).unwrap_or_default(), classes);
    let (train, val, test) = (exs(Part::Train)?, exs(Part::Val)?, exs(Part::Test)?);
    if train.is_empty() || val.is_empty() {
        return Err(TrainError::Data(format!(
            "the split has {} training and {} validation works: import more works",
            train.len(),
            val.len()
        )));
    }
    Ok((Arc::new(train), val, test))
}

/// `--balanced`: each class weighted by n / (classes x its count), as scikit-learn's "balanced".
fn class_weights(train: &[Example], classes: usize, device: &Device) -> Result<Tensor, TrainError> {
    let mut counts = vec![0f32; classes];
    train.iter().for_each(|e| counts[e.label] += 1.0);
    let n = train.len() as f32;
    let w: Vec<f32> = counts.iter().map(|&c| if c > 0.0 { n / (classes as f32 * c) } else { 0.0 }).collect();
    Ok(Tensor::from_vec(w, classes, device)?)
}

fn labels(examples: &[Example]) -> Vec<usize> {
    examples.iter().map(|e| e.label).collect()
}

/// The epoch's checkpoints, each written atomically: `last` (weights, momentum buffers and the
/// state a resume needs) always, `best` (weights only) when validation accuracy improved.
fn save_checkpoints(
    map: &VarMap,
    sgd: &Sgd,
    meta: &CheckpointMeta,
    state: &TrainState,
    last_path: &Path,
    best_path: Option<&PathBuf>,
) -> Result<(), TrainError> {
    let tensors: HashMap<String, Tensor> = {
        let data = map.data().lock().unwrap_or_else(|p| p.into_inner());
        data.iter().map(|(k, v)| (k.clone(), v.as_tensor().detach())).collect()
    };
    if let Some(best) = best_path {
        checkpoint::save(best, &tensors, meta, &[])?;
    }
    let mut with_momentum = tensors;
    with_momentum.extend(sgd.buffers().into_iter().map(|(n, b)| (format!("{MOMENTUM_PREFIX}{n}"), b)));
    let state = serde_json::to_string(state).unwrap_or_default();
    checkpoint::save(last_path, &with_momentum, meta, &[(STATE_KEY, state)])?;
    Ok(())
}
