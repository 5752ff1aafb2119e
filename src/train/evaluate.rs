//! Evaluation of a model on a split: top-1, top-3, loss, per-class precision and recall, and
//! the confusion matrix.
use super::data::{Example, Transform, assemble};
use super::metrics::{Accumulator, Evaluation};
use super::split::Part;
use super::{TrainError, data};
use crate::model::checkpoint;
use crate::model::{CultureHead, CultureNet};
use crate::workspace::Workspace;
use candle_core::{DType, Device, Module, Tensor};

fn add_logits(acc: &mut Accumulator, logits: &Tensor, labels: &[usize]) -> Result<(), TrainError> {
    let logits = logits.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    for (row, &l) in logits.iter().zip(labels) {
        acc.add(row, l);
    }
    Ok(())
}

/// Evaluates a full model on images (evaluation transform).
pub fn on_images(
    net: &CultureNet,
    exs: &[Example],
    t: &Transform,
    batch: usize,
    classes: &[String],
    device: &Device,
) -> Result<Evaluation, TrainError> {
    let mut acc = Accumulator::new(classes);
    let refs: Vec<&Example> = exs.iter().collect();
    for (i, chunk) in refs.chunks(batch.max(1)).enumerate() {
        let b = assemble(chunk, t, &vec![0; chunk.len()], device, i)?;
        let logits = net.forward_t(&b.images, false)?;
        add_logits(&mut acc, &logits, &b.label_vec)?;
    }
    Ok(acc.finish())
}

/// Evaluates a head on precomputed embeddings.
pub fn on_embeddings(
    head: &CultureHead,
    emb: &Tensor,
    labels: &[usize],
    classes: &[String],
) -> Result<Evaluation, TrainError> {
    let mut acc = Accumulator::new(classes);
    let logits = head.forward(emb)?;
    add_logits(&mut acc, &logits, labels)?;
    Ok(acc.finish())
}

/// The best checkpoint of a run.
pub fn best_checkpoint(ws: &Workspace, run: &str) -> std::path::PathBuf {
    ws.runs_dir().join(run).join("best.safetensors")
}

/// `artculture eval RUN`: the run's best checkpoint on its test split.
pub fn eval_run(ws: &Workspace, run: &str, device: &Device) -> Result<Evaluation, TrainError> {
    let rec = ws.catalog.run(run)?;
    let path = best_checkpoint(ws, run);
    if !path.exists() {
        let why = match (super::run_status::live_status(ws, &rec), &rec.message) {
            (crate::catalog::RunStatus::Failed, Some(m)) => format!("it failed before its first epoch: {m}"),
            (s, _) => format!("it has not finished an epoch (status: {})", s.as_str()),
        };
        return Err(TrainError::Data(format!("run {run} has no checkpoint ({} is missing): {why}", path.display())));
    }
    let model = checkpoint::load(&path, device)?;
    let test: Vec<(i64, String)> = ws
        .catalog
        .run_split(run)?
        .into_iter()
        .filter(|(_, p)| Part::parse(p) == Some(Part::Test))
        .map(|(id, _)| ws.catalog.artwork(id).map(|a| (id, a.culture.unwrap_or_default())))
        .collect::<Result<_, _>>()?;
    let exs = data::examples(ws, &test, &model.meta.classes)?;
    let t = Transform::eval_for(&model.meta);
    on_images(&model.net, &exs, &t, 16, &model.meta.classes, device)
}
