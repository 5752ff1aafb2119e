//! SGD and the learning-rate schedules against sequences PyTorch produced
//! (`scripts/make_schedule_fixtures.py` -> tests/fixtures/schedules.json).
use artculture::train::schedule::{PlateauMode, Scheduler, SchedulerConfig, ThresholdMode};
use artculture::train::sgd::{Sgd, SgdConfig};
use candle_core::{Device, Var};
use serde_json::Value;

fn fixtures() -> Value {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/schedules.json");
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or_else(|| panic!("{k}"))
}

#[test]
fn schedulers_match_pytorch() {
    let fx = fixtures();
    for case in fx["schedulers"].as_array().unwrap() {
        let cfg = if case["kind"] == "step" {
            SchedulerConfig::Step { step_size: case["step_size"].as_u64().unwrap() as u32, gamma: f(case, "gamma") }
        } else {
            SchedulerConfig::Plateau {
                mode: if case["mode"] == "min" { PlateauMode::Min } else { PlateauMode::Max },
                factor: f(case, "factor"),
                patience: case["patience"].as_u64().unwrap() as u32,
                threshold: f(case, "threshold"),
                threshold_mode: if case["threshold_mode"] == "rel" { ThresholdMode::Rel } else { ThresholdMode::Abs },
                cooldown: case["cooldown"].as_u64().unwrap() as u32,
                min_lr: f(case, "min_lr"),
                eps: f(case, "eps"),
            }
        };
        let metrics = case["metrics"].as_array().unwrap();
        let want = case["lrs"].as_array().unwrap();
        // Half the epochs, a save and a restore (as `train --resume` does), then the rest: every
        // learning rate is PyTorch's, before and after the restore.
        let half = metrics.len() / 2;
        let mut s = Scheduler::new(cfg, f(case, "base_lr"));
        for (i, (m, w)) in metrics.iter().zip(want).enumerate() {
            if i == half {
                s = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
            }
            let got = s.step(m.as_f64().unwrap());
            let w = w.as_f64().unwrap();
            assert!((got - w).abs() <= 1e-15 * w.abs(), "{cfg:?} epoch {}: lr {got} vs PyTorch {w}", i + 1);
        }
    }
}

#[test]
fn sgd_matches_pytorch() {
    let fx = fixtures();
    for case in fx["sgd"].as_array().unwrap() {
        let cfg = SgdConfig {
            lr: f(case, "lr"),
            momentum: f(case, "momentum"),
            dampening: f(case, "dampening"),
            weight_decay: f(case, "weight_decay"),
            nesterov: case["nesterov"].as_bool().unwrap(),
        };
        let start: Vec<f64> = case["start"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        let w = Var::from_vec(start, 4, &Device::Cpu).unwrap();
        let mut opt = Sgd::new(vec![("w".into(), w.clone())], cfg).unwrap();
        let trajectory = case["trajectory"].as_array().unwrap();
        let half = trajectory.len() / 2;
        for (step, want) in trajectory.iter().enumerate() {
            if step == half {
                // Save the momentum buffer as a checkpoint does (safetensors bytes) and go on with
                // a new optimiser that only has what was saved: PyTorch's later steps need it.
                let bufs = opt.buffers();
                assert_eq!(bufs.len(), if cfg.momentum > 0.0 { 1 } else { 0 }, "{cfg:?}");
                let bytes = safetensors::serialize(bufs.iter().map(|(n, t)| (n.as_str(), t)), None).unwrap();
                let saved = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).unwrap();
                opt = Sgd::new(vec![("w".into(), w.clone())], cfg).unwrap();
                opt.set_buffers(|n| saved.get(n).cloned());
            }
            let t = w.as_tensor();
            let loss =
                (t.powf(4.0).unwrap().sum_all().unwrap() + (t.get(0).unwrap() * t.get(1).unwrap()).unwrap()).unwrap();
            opt.step(&loss.backward().unwrap()).unwrap();
            let got = w.as_tensor().to_vec1::<f64>().unwrap();
            for (g, e) in got.iter().zip(want.as_array().unwrap()) {
                let e = e.as_f64().unwrap();
                assert!((g - e).abs() <= 1e-12 * e.abs().max(1.0), "{cfg:?} step {}: {got:?} vs {want:?}", step + 1);
            }
        }
    }
}

/// Validation loss as PyTorch's `F.cross_entropy` on the logits reports it, saturated models
/// included (`scripts/make_loss_fixtures.py` -> tests/fixtures/val_loss.json): this is the
/// number ReduceLROnPlateau decides on.
#[test]
fn validation_loss_matches_pytorch_cross_entropy() {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/val_loss.json");
    let fx: Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
    for case in fx["cases"].as_array().unwrap() {
        let rows: Vec<Vec<f32>> = serde_json::from_value(case["logits"].clone()).unwrap();
        let labels: Vec<usize> = serde_json::from_value(case["labels"].clone()).unwrap();
        let classes: Vec<String> = (0..rows[0].len()).map(|i| format!("c{i}")).collect();
        let mut acc = artculture::train::metrics::Accumulator::new(&classes);
        for (r, &l) in rows.iter().zip(&labels) {
            acc.add(r, l);
        }
        let e = acc.finish();
        let (want, name) = (f(case, "loss"), case["name"].as_str().unwrap());
        assert!((e.loss - want).abs() <= 1e-6 * want.abs().max(1.0), "{name}: {} vs PyTorch {want}", e.loss);
        assert!((e.top1 - f(case, "top1")).abs() < 1e-6, "{name}");
    }
}

/// Transfer training's fused head step (one CPU kernel for forward, loss and gradients) moves
/// the head exactly as candle's autograd does: same losses and same weights after several SGD
/// steps with momentum and weight decay, plain and class-weighted, at the study's head size.
#[test]
fn fused_head_step_matches_autograd() {
    use artculture::model::CultureHead;
    use candle_core::{D, DType, Module, Tensor};
    let dev = Device::Cpu;
    for weighted in [false, true] {
        let heads: Vec<(CultureHead, candle_nn::VarMap)> = (0..2)
            .map(|_| {
                let map = candle_nn::VarMap::new();
                let vb = artculture::model::init::seeded_var_builder(&map, 7, DType::F32, &dev);
                (CultureHead::new(2048, [1024, 256], 11, vb.pp("head")).unwrap(), map)
            })
            .collect();
        let params = |map: &candle_nn::VarMap| {
            let mut v: Vec<(String, Var)> =
                map.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        let cfg = SgdConfig { lr: 0.05, momentum: 0.9, dampening: 0.0, weight_decay: 1e-3, nesterov: false };
        let mut fused_sgd = Sgd::new(params(&heads[0].1), cfg).unwrap();
        let mut graph_sgd = Sgd::new(params(&heads[1].1), cfg).unwrap();
        let cw = Tensor::from_vec((0..11).map(|c| 0.5 + c as f32 / 10.0).collect::<Vec<_>>(), 11, &dev).unwrap();
        let cw = weighted.then_some(&cw);
        for step in 0..4u32 {
            let x = Tensor::randn(0f32, 1.0, (16, 2048), &dev).unwrap();
            let labels: Vec<u32> = (0..16).map(|i| (i * 7 + step) % 11).collect();
            let fused = artculture::train::transfer_step(&heads[0].0, &x, &labels, cw, &mut fused_sgd, (1, 1, 0.05))
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            // The reference: the loss built from candle ops and differentiated by autograd.
            let y = Tensor::from_vec(labels.clone(), 16, &dev).unwrap();
            let log_p = candle_nn::ops::log_softmax(&heads[1].0.forward(&x).unwrap(), D::Minus1).unwrap();
            let picked = log_p.gather(&y.unsqueeze(1).unwrap(), 1).unwrap().squeeze(1).unwrap();
            let loss = match cw {
                None => picked.mean_all().unwrap().neg().unwrap(),
                Some(w) => {
                    let w = w.index_select(&y, 0).unwrap();
                    (picked * &w)
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .neg()
                        .unwrap()
                        .broadcast_div(&w.sum_all().unwrap())
                        .unwrap()
                }
            };
            graph_sgd.step(&loss.backward().unwrap()).unwrap();
            let reference = loss.to_scalar::<f32>().unwrap();
            assert!((fused - reference).abs() < 1e-5, "step {step}: loss {fused} vs {reference}");
        }
        let init = candle_nn::VarMap::new();
        let vb = artculture::model::init::seeded_var_builder(&init, 7, DType::F32, &dev);
        CultureHead::new(2048, [1024, 256], 11, vb.pp("head")).unwrap();
        let max_diff = |a: &Var, b: &Var| {
            (a.as_tensor() - b.as_tensor()).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
        };
        for (((name, a), (_, b)), (_, start)) in
            params(&heads[0].1).iter().zip(&params(&heads[1].1)).zip(&params(&init))
        {
            let diff = max_diff(a, b);
            assert!(diff < 1e-5, "{name} (weighted: {weighted}) differs by {diff} after 4 steps");
            assert!(max_diff(a, start) > 1e-6, "{name} did not move");
        }
    }
}

/// A non-finite loss in the fused head step stops the run with `Diverged` (naming epoch, batch
/// and learning rate) before any weight changes, as the autograd path does.
#[test]
fn fused_head_step_refuses_a_non_finite_loss() {
    use artculture::model::CultureHead;
    use artculture::train::TrainError;
    use candle_core::{DType, Tensor};
    let map = candle_nn::VarMap::new();
    let vb = artculture::model::init::seeded_var_builder(&map, 3, DType::F32, &Device::Cpu);
    let head = CultureHead::new(8, [6, 4], 3, vb.pp("head")).unwrap();
    let params: Vec<(String, Var)> = map.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let before: Vec<Vec<f32>> =
        params.iter().map(|(_, v)| v.as_tensor().flatten_all().unwrap().to_vec1().unwrap()).collect();
    let mut sgd = Sgd::new(params.clone(), SgdConfig::default()).unwrap();
    let mut x = vec![0.5f32; 2 * 8];
    x[3] = f32::NAN;
    let x = Tensor::from_vec(x, (2, 8), &Device::Cpu).unwrap();
    let err = artculture::train::transfer_step(&head, &x, &[0, 2], None, &mut sgd, (4, 7, 0.01)).unwrap_err();
    assert!(matches!(err, TrainError::Diverged { epoch: 4, batch: 7, .. }), "{err}");
    let after: Vec<Vec<f32>> =
        params.iter().map(|(_, v)| v.as_tensor().flatten_all().unwrap().to_vec1().unwrap()).collect();
    assert_eq!(before, after, "weights changed on a diverged step");
}
