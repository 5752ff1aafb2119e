//! Every kernel path this CPU can run gives the same bits: ResNet-50's evaluation forward (its
//! fused epilogues and Winograd transforms), training forward, every gradient and two SGD steps (momentum, weight decay) under AVX-512, AVX2 and baseline code in
//! turn (those the CPU has), compared with the first. The parity tests check the path the CPU
//! picks against PyTorch; together they cover each path. `gemm` picks its own kernels by CPU and
//! is the same in every round here.
mod common;

use artculture::kernels::isa::{self, Isa};
use artculture::model::{Arch, Backbone, BackboneConfig};
use artculture::train::sgd::{Sgd, SgdConfig};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use common::*;

/// Named tensors as the bits of their f32 values.
type Bits = Vec<(String, Vec<u32>)>;

/// Bits of the logits, of every gradient, and of every parameter and batch-norm statistic after
/// two SGD steps.
fn one_round() -> Bits {
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
    let model = Backbone::new(Arch::Resnet50, BackboneConfig { own_classes: Some(11), dropout: 0.0 }, vb).unwrap();
    fill_deterministic(&map, DType::F32);
    let params: Vec<_> = {
        let vars = map.data().lock().unwrap();
        let mut v: Vec<_> = vars
            .iter()
            .filter(|(n, _)| !n.ends_with("running_mean") && !n.ends_with("running_var"))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let cfg = SgdConfig { lr: 0.01, momentum: 0.9, dampening: 0.0, weight_decay: 1e-4, nesterov: false };
    let mut sgd = Sgd::new(params.clone(), cfg).unwrap();
    let bits = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect();
    let mut out = Vec::new();
    let x = det_input(&[2, 3, 64, 64], DType::F32);
    let (_, eval_logits) = model.forward_t(&x, false).unwrap();
    out.push(("evaluation logits".to_string(), bits(&eval_logits.unwrap())));
    for step in 0..2 {
        let (_, logits) = model.forward_t(&x, true).unwrap();
        let logits = logits.unwrap();
        out.push((format!("logits {step}"), bits(&logits)));
        let r = Tensor::from_vec(det_values("loss", logits.elem_count()), logits.dims(), &Device::Cpu).unwrap();
        let loss = (logits * r.to_dtype(DType::F32).unwrap()).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        for (name, var) in &params {
            out.push((format!("grad {name} {step}"), bits(grads.get(var.as_tensor()).unwrap())));
        }
        sgd.step(&grads).unwrap();
    }
    let vars = map.data().lock().unwrap();
    let mut names: Vec<_> = vars.keys().cloned().collect();
    names.sort();
    out.extend(names.into_iter().map(|n| (format!("after {n}"), bits(vars[&n].as_tensor()))));
    out
}

#[test]
fn every_kernel_path_the_cpu_runs_gives_the_same_bits() {
    let levels: Vec<Isa> =
        [Isa::Avx512, Isa::Avx2, Isa::Baseline].into_iter().filter(|&l| l <= isa::detected()).collect();
    eprintln!("CPU {}: comparing {:?} (gemm: {})", isa::cpu_model(), levels, isa::gemm_kernels());
    let mut first: Option<(Isa, Bits)> = None;
    for level in levels {
        assert_eq!(isa::set_max(level), level);
        let got = one_round();
        match &first {
            None => first = Some((level, got)),
            Some((l0, want)) => {
                assert_eq!(got.len(), want.len());
                for ((name, g), (_, w)) in got.iter().zip(want) {
                    let differ = g.iter().zip(w).filter(|(a, b)| a != b).count();
                    assert_eq!(differ, 0, "{name}: {differ} of {} values differ between {l0:?} and {level:?}", g.len());
                }
            }
        }
    }
}
