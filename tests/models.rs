//! Weights files and `model forward`: tensors checked by name, shape and dtype; the command
//! computes what the library computes.
mod common;

use artculture::model::weights::{self, WeightsError};
use artculture::model::{Arch, Backbone, BackboneConfig};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use std::collections::HashMap;

/// A ResNet-50 with torchvision's names and ImageNet's 1000 classes, as a safetensors file.
fn resnet_file(dir: &std::path::Path) -> (std::path::PathBuf, HashMap<String, Tensor>) {
    let map = VarMap::new();
    let vb = artculture::model::init::seeded_var_builder(&map, 3, DType::F32, &Device::Cpu);
    Backbone::new(Arch::Resnet50, BackboneConfig { own_classes: Some(1000), dropout: 0.0 }, vb).unwrap();
    let tensors: HashMap<String, Tensor> =
        map.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect();
    let path = dir.join("resnet50.safetensors");
    candle_core::safetensors::save(&tensors, &path).unwrap();
    (path, tensors)
}

fn load(path: &std::path::Path) -> Result<Backbone, String> {
    let vb = weights::var_builder(path, DType::F32, &Device::Cpu).map_err(|e| e.to_string())?;
    Backbone::new(Arch::Resnet50, BackboneConfig { own_classes: Some(1000), dropout: 0.0 }, vb)
        .map_err(|e| e.to_string())
}

#[test]
fn model_forward_matches_the_library_and_bad_weights_name_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let (path, tensors) = resnet_file(dir.path());
    let x = Tensor::randn(0f32, 1.0, (2, 3, 64, 64), &Device::Cpu).unwrap();
    let input = dir.path().join("x.safetensors");
    candle_core::safetensors::save(&HashMap::from([("input".to_string(), x.clone())]), &input).unwrap();
    let output = dir.path().join("y.safetensors");
    let st = std::process::Command::new(common::bin())
        .args(["model", "forward", "--arch", "resnet50", "--weights"])
        .arg(&path)
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .status()
        .unwrap();
    assert!(st.success());
    let y = candle_core::safetensors::load(&output, &Device::Cpu).unwrap();
    assert_eq!(y["logits"].dims(), &[2, 1000]);
    assert_eq!(y["features"].dims(), &[2, 2048, 2, 2]);
    let (features, logits) = load(&path).unwrap().forward_t(&x, false).unwrap();
    let diff = (logits.unwrap() - &y["logits"]).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert_eq!(diff, 0.0);
    assert_eq!(features.dims(), y["features"].dims());

    // A missing tensor, a wrong shape and an integer dtype are each named, with the shape expected.
    let mut missing = tensors.clone();
    missing.remove("layer3.2.bn2.running_var");
    let p = dir.path().join("missing.safetensors");
    candle_core::safetensors::save(&missing, &p).unwrap();
    let e = load(&p).unwrap_err();
    assert!(
        e.contains("missing.safetensors") && e.contains("`layer3.2.bn2.running_var` is missing") && e.contains("[256]"),
        "{e}"
    );

    let mut wrong = tensors.clone();
    wrong.insert("fc.weight".into(), Tensor::zeros((10, 2048), DType::F32, &Device::Cpu).unwrap());
    let p = dir.path().join("wrong.safetensors");
    candle_core::safetensors::save(&wrong, &p).unwrap();
    let e = load(&p).unwrap_err();
    assert!(e.contains("`fc.weight` has shape [10, 2048], expected [1000, 2048]"), "{e}");

    let mut ints = tensors;
    ints.insert("conv1.weight".into(), Tensor::zeros((64, 3, 7, 7), DType::I64, &Device::Cpu).unwrap());
    let p = dir.path().join("ints.safetensors");
    candle_core::safetensors::save(&ints, &p).unwrap();
    let e = load(&p).unwrap_err();
    assert!(e.contains("`conv1.weight` has dtype I64, expected a float type"), "{e}");

    let p = dir.path().join("junk.safetensors");
    std::fs::write(&p, b"PK\x03\x04 this is a zip").unwrap();
    let e = weights::var_builder(&p, DType::F32, &Device::Cpu).err().unwrap();
    assert!(matches!(e, WeightsError::NotSafetensors { .. }), "{e}");
    assert!(e.to_string().contains("junk.safetensors"));
}

#[test]
fn timm_vgg_names_map_to_torchvision() {
    // timm's VGG stores the classifier as convolutions under other names.
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
    Backbone::new(Arch::Vgg16Bn, BackboneConfig { own_classes: Some(1000), dropout: 0.0 }, vb).unwrap();
    let mut tensors: HashMap<String, Tensor> =
        map.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect();
    let fc1 = tensors.remove("classifier.0.weight").unwrap();
    tensors.insert("pre_logits.fc1.weight".into(), fc1.reshape((4096, 512, 7, 7)).unwrap());
    tensors.insert("pre_logits.fc1.bias".into(), tensors["classifier.0.bias"].clone());
    tensors.remove("classifier.0.bias");
    let fc3 = tensors.remove("classifier.6.weight").unwrap();
    tensors.insert("head.fc.weight".into(), fc3.clone());
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("timm.safetensors");
    candle_core::safetensors::save(&tensors, &p).unwrap();
    let vb = weights::var_builder(&p, DType::F32, &Device::Cpu).unwrap();
    let m = Backbone::new(Arch::Vgg16Bn, BackboneConfig { own_classes: Some(1000), dropout: 0.0 }, vb).unwrap();
    let x = Tensor::randn(0f32, 1.0, (1, 3, 32, 32), &Device::Cpu).unwrap();
    assert_eq!(m.forward_t(&x, false).unwrap().1.unwrap().dims(), &[1, 1000]);
}
