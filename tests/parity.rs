//! PyTorch parity of the three backbones (fixtures made by `scripts/make_parity_fixtures.py`
//! from torchvision's models with deterministic weights that both sides generate).
//!
//! - evaluation mode, f32: logits and last conv map within 1e-4 relative error;
//! - training mode, f32: logits and batch-norm running statistics after one step, 1e-4;
//! - training mode, f64: the gradient of a loss with respect to every parameter, 1e-10.
#[path = "parity/bf16.rs"]
mod bf16;
#[path = "parity/clip.rs"]
mod clip;
#[path = "parity/clip_workflow.rs"]
mod clip_workflow;
mod common;

use artculture::model::{Arch, Backbone, BackboneConfig};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use common::*;
use serde_json::Value;

fn fixture(arch: Arch) -> Value {
    let path = format!("{}/tests/fixtures/parity/{}.json", env!("CARGO_MANIFEST_DIR"), arch.as_str());
    serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))).unwrap()
}

fn build(arch: Arch, dtype: DType) -> (VarMap, Backbone) {
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, dtype, &Device::Cpu);
    let model = Backbone::new(arch, BackboneConfig { own_classes: Some(1000), dropout: 0.0 }, vb).unwrap();
    fill_deterministic(&map, dtype);
    (map, model)
}

fn to_f64(t: &Tensor) -> Vec<f64> {
    t.flatten_all().unwrap().to_dtype(DType::F64).unwrap().to_vec1().unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

/// Max absolute difference relative to the reference's largest magnitude.
fn rel_err(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f64, |m, x| m.max(x.abs()));
    let diff = got.iter().zip(want).fold(0f64, |m, (a, b)| m.max((a - b).abs()));
    // An all-zero reference (e.g. gradients of weights fed only by dead ReLUs) must be matched exactly.
    if scale == 0.0 { diff } else { diff / scale }
}

/// Checks a tensor against a fixture summary: `tol` bounds the relative error of the whole
/// vector, so the sum and projection may differ by at most tol * |v| * |p| (Cauchy-Schwarz).
/// `floor`: the smallest norm used as a scale, so that a gradient that is zero in exact
/// arithmetic (a convolution bias before training-mode batch norm) is compared against the
/// rounding noise of the whole model's gradients rather than against itself.
fn check_summary(what: &str, t: &Tensor, want: &Value, proj_name: &str, tol: f64, floor: f64) {
    let v = to_f64(t);
    let dims: Vec<usize> = want["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
    assert_eq!(t.dims(), dims.as_slice(), "{what}: shape");
    let p = det_values(proj_name, v.len());
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let (want_sum, want_proj) = (want["sum"].as_f64().unwrap(), want["proj"].as_f64().unwrap());
    let want_norm = want["norm"].as_f64().unwrap();
    let scale = want_norm.max(floor);
    let p_norm = p.iter().map(|x| x * x).sum::<f64>().sqrt();
    let sum: f64 = v.iter().sum();
    let proj: f64 = v.iter().zip(&p).map(|(a, b)| a * b).sum();
    assert!((norm - want_norm).abs() <= tol * scale, "{what}: norm {norm} vs {want_norm}");
    assert!((sum - want_sum).abs() <= tol * scale * (v.len() as f64).sqrt(), "{what}: sum {sum} vs {want_sum}");
    assert!((proj - want_proj).abs() <= tol * scale * p_norm, "{what}: projection {proj} vs {want_proj}");
    let head = floats(&want["head"]);
    let head_err = if want_norm < floor { 0.0 } else { rel_err(&v[..head.len()], &head) };
    assert!(head_err <= tol * 10.0, "{what}: first values {:?} vs {head:?} (error {head_err:e})", &v[..head.len()]);
}

/// The model as a loaded one is: the same weights as plain tensors rather than variables (with
/// the blocked path on, on CPUs with AVX-512, ResNet-50 then evaluates channels-last with batch
/// norm folded into the weights, `kernels::blocked`).
fn build_loaded(arch: Arch) -> Backbone {
    let (map, _) = build(arch, DType::F32);
    let tensors: std::collections::HashMap<String, Tensor> =
        map.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.as_tensor().detach())).collect();
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    Backbone::new(arch, BackboneConfig { own_classes: Some(1000), dropout: 0.0 }, vb).unwrap()
}

fn eval_parity(arch: Arch) {
    eval_parity_of(arch, build(arch, DType::F32).1);
}

fn eval_parity_of(arch: Arch, model: Backbone) {
    let f = fixture(arch);
    let shape: Vec<usize> = f["input_shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
    let (features, logits) = model.forward_t(&det_input(&shape, DType::F32), false).unwrap();
    let err = rel_err(&to_f64(&logits.unwrap()), &floats(&f["eval_logits"]));
    assert!(err < 1e-4, "{arch} eval logits: relative error {err:e}");
    check_summary(&format!("{arch} eval features"), &features, &f["eval_features"], "proj.features", 1e-4, 0.0);
}

fn train_parity(arch: Arch) {
    let f = fixture(arch);
    let shape: Vec<usize> = f["input_shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
    let (map, model) = build(arch, DType::F32);
    let (_, logits) = model.forward_t(&det_input(&shape, DType::F32), true).unwrap();
    let err = rel_err(&to_f64(&logits.unwrap()), &floats(&f["train_logits"]));
    assert!(err < 1e-4, "{arch} train logits: relative error {err:e}");
    let vars = map.data().lock().unwrap();
    let stats = f["running_stats"].as_object().unwrap();
    for (name, want) in stats {
        let var = vars.get(name).unwrap_or_else(|| panic!("{arch}: no variable {name}"));
        check_summary(name, var.as_tensor(), want, &format!("proj.{name}"), 1e-4, 0.0);
    }
    // Every batch norm of the model was checked.
    let ours = vars.keys().filter(|k| k.ends_with("running_mean") || k.ends_with("running_var")).count();
    assert_eq!(ours, stats.len(), "{arch}: batch-norm buffers");
}

fn grad_parity(arch: Arch) {
    let f = fixture(arch);
    let shape: Vec<usize> = f["input_shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
    let (map, model) = build(arch, DType::F64);
    let (_, logits) = model.forward_t(&det_input(&shape, DType::F64), true).unwrap();
    let logits = logits.unwrap();
    let r = Tensor::from_vec(det_values("loss", logits.elem_count()), logits.dims(), &Device::Cpu).unwrap();
    let loss = (logits * r).unwrap().sum_all().unwrap();
    let want_loss = f["loss64"].as_f64().unwrap();
    let got_loss = loss.to_scalar::<f64>().unwrap();
    assert!((got_loss - want_loss).abs() <= 1e-10 * want_loss.abs(), "{arch} loss {got_loss} vs {want_loss}");
    let grads = loss.backward().unwrap();
    let vars = map.data().lock().unwrap();
    let want = f["grads64"].as_object().unwrap();
    let largest = want.values().map(|w| w["norm"].as_f64().unwrap()).fold(0f64, f64::max);
    for (name, w) in want {
        let var = vars.get(name).unwrap_or_else(|| panic!("{arch}: no parameter {name}"));
        let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{arch}: no gradient for {name}"));
        check_summary(&format!("{arch} grad {name}"), g, w, &format!("proj.{name}"), 1e-10, 1e-3 * largest);
    }
    let params = vars.keys().filter(|k| !k.ends_with("running_mean") && !k.ends_with("running_var")).count();
    assert_eq!(params, want.len(), "{arch}: every parameter has a gradient fixture");
}

#[test]
fn resnet50_eval() {
    eval_parity(Arch::Resnet50);
}
#[test]
fn resnet50_eval_loaded() {
    // Only loaded ResNet-50s take the blocked path, and no other test here builds one.
    artculture::kernels::blocked::set_enabled(true);
    eval_parity_of(Arch::Resnet50, build_loaded(Arch::Resnet50));
}

#[test]
fn resnet50_train() {
    train_parity(Arch::Resnet50);
}
#[test]
fn resnet50_grad_f64() {
    grad_parity(Arch::Resnet50);
}
#[test]
fn vgg16_bn_eval() {
    eval_parity(Arch::Vgg16Bn);
}
#[test]
fn vgg16_bn_train() {
    train_parity(Arch::Vgg16Bn);
}
#[test]
fn vgg16_bn_grad_f64() {
    grad_parity(Arch::Vgg16Bn);
}
#[test]
fn alexnet_eval() {
    eval_parity(Arch::Alexnet);
}
#[test]
fn alexnet_train() {
    train_parity(Arch::Alexnet);
}
#[test]
fn alexnet_grad_f64() {
    grad_parity(Arch::Alexnet);
}

/// Grad-CAM and the study's channel-sum map against PyTorch (fixture from
/// `scripts/make_parity_fixtures.py --gradcam`), in f64 on a ResNet-50 with a small head.
#[test]
fn gradcam_and_channel_sum_match_pytorch() {
    use artculture::analysis::activation::{channel_sum, grad_cam};
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/parity/gradcam.json");
    let f: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F64, &Device::Cpu);
    let net = artculture::model::CultureNet::new(Arch::Resnet50, 0.0, [16, 8], 3, vb).unwrap();
    fill_deterministic(&map, DType::F64);
    let (logits, features) = net.forward_with_features(&det_input(&[1, 3, 64, 64], DType::F64)).unwrap();
    let err = rel_err(&to_f64(&logits), &floats(&f["logits"]));
    assert!(err < 1e-10, "logits: {err:e}");
    let close = |got: &[f32], want: &[f64], what: &str| {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-5, "{what}: {got:?} vs {want:?}");
        }
    };
    close(&channel_sum(&features).unwrap().values, &floats(&f["sum"]), "channel sum");
    for g in f["gradcam"].as_array().unwrap() {
        let c = g["class"].as_u64().unwrap() as usize;
        let cam = grad_cam(&net, &features, c).unwrap();
        close(&cam.values, &floats(&g["normalised"]), &format!("Grad-CAM class {c}"));
    }
}
