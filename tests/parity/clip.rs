//! CLIP against Hugging Face `transformers` (fixtures by `scripts/make_clip_fixtures.py`): a
//! tiny seeded `CLIPModel`'s image features, text features and logits within 1e-4, and the
//! tokenizer's ids equal to `CLIPTokenizerFast`'s.
use artculture::model::clip::{ClipModel, Tokenizer, tokenizer::CONTEXT_LENGTH};
use candle_core::{DType, Device, Tensor};
use std::path::PathBuf;

fn dir(sub: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip").join(sub)
}

fn max_rel(got: &Tensor, want: &Tensor) -> f32 {
    assert_eq!(got.dims(), want.dims());
    let scale = want.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    diff / scale
}

#[test]
fn clip_features_and_logits_match_transformers() {
    let d = dir("model");
    let model = ClipModel::load(&d.join("config.json"), &d.join("model.safetensors"), &Device::Cpu).unwrap();
    let want = candle_core::safetensors::load(d.join("expected.safetensors"), &Device::Cpu).unwrap();
    let pixels = &want["pixel_values"];
    let ids = want["input_ids"].to_dtype(DType::U32).unwrap();
    let (_, _, _) = model.vision_model.forward(pixels, false).unwrap();
    let image = model.image_features(pixels).unwrap();
    let text = model.text_features(&ids, 999).unwrap();
    let logits = model.logits_per_image(&image, &text).unwrap();
    let (last, _, _) = model.vision_model.forward(pixels, false).unwrap();
    for (what, got, key) in [
        ("vision last hidden state", &last, "vision_last_hidden"),
        ("image features", &image, "image_features"),
        ("text features", &text, "text_features"),
        ("logits per image", &logits, "logits_per_image"),
    ] {
        let e = max_rel(got, &want[key]);
        assert!(e < 1e-4, "{what}: relative error {e}");
    }
    // Padding after the end token changes nothing (the causal mask keeps it out).
    let short = ids.narrow(1, 0, 8).unwrap();
    let e =
        max_rel(&model.text_features(&short.narrow(0, 0, 1).unwrap(), 999).unwrap(), &text.narrow(0, 0, 1).unwrap());
    assert!(e < 1e-5, "padding changed the text features: {e}");
}

#[test]
fn clip_tokenizer_matches_clip_tokenizer_fast() {
    let d = dir("tokenizer");
    let tok = Tokenizer::from_files(&d.join("vocab.json"), &d.join("merges.txt")).unwrap();
    let fixture: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("expected.json")).unwrap()).unwrap();
    let cases = fixture["cases"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(tok.encode(text, CONTEXT_LENGTH), want, "{text:?}");
    }
    // The long case was cut: 77 tokens, ending with the end token.
    let long = tok.encode(cases.last().unwrap()["text"].as_str().unwrap(), CONTEXT_LENGTH);
    assert_eq!((long.len(), long.last().copied()), (CONTEXT_LENGTH, Some(tok.end)));
}
