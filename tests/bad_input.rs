//! Bad input never reaches a panic: the CLI driven with a table of wrong options and files, and
//! property tests that mutate valid MetObjects.csv lines, image files and safetensors headers at
//! random. Every case must end in a named error (or, for a harmless mutation, success).
mod common;

use common::*;
use proptest::prelude::*;
use std::path::Path;

/// Writes the files the table below passes to the CLI.
fn bad_files(dir: &Path) {
    let mut jpeg = std::io::Cursor::new(Vec::new());
    class_image(1, 0, 90, 60).write_to(&mut jpeg, image::ImageFormat::Jpeg).unwrap();
    let jpeg = jpeg.into_inner();
    std::fs::write(dir.join("cut.jpg"), &jpeg[..jpeg.len() / 3]).unwrap();
    std::fs::write(dir.join("page.jpg"), b"<!DOCTYPE html><html>Not found</html>").unwrap();
    std::fs::write(dir.join("empty.safetensors"), b"").unwrap();
    std::fs::write(dir.join("text.safetensors"), b"this is not a weights file at all, just text").unwrap();
    // A safetensors file whose `fc.weight` is a scalar.
    let scalar = candle_core::Tensor::new(1f32, &candle_core::Device::Cpu).unwrap();
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("fc.weight", scalar)]),
        dir.join("scalar.safetensors"),
    )
    .unwrap();
    let input = candle_core::Tensor::zeros((1, 3, 32, 32), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
    candle_core::safetensors::save(&std::collections::HashMap::from([("input", input)]), dir.join("x.safetensors"))
        .unwrap();
    std::fs::write(dir.join("binary.csv"), [0u8, 159, 146, 150, 255, 0, 1, 2]).unwrap();
}

#[test]
fn wrong_options_and_files_get_named_errors_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    bad_files(d);
    let ws = d.join("ws");
    let p = |name: &str| d.join(name).to_string_lossy().into_owned();
    let forward = |arch: &str, weights: &str, input: &str| -> Vec<String> {
        let (w, x, y) = (p(weights), p(input), p("y.safetensors"));
        ["model", "forward", "--arch", arch, "--weights", &w, "--input", &x, "--output", &y].map(String::from).to_vec()
    };
    let mut table: Vec<(Vec<String>, &str)> = vec![
        (vec!["train", "--dropout", "1.5"], "--dropout 1.5 is outside [0, 1)"),
        (vec!["train", "--arch", "vgg16_bn", "--dropout", "nan"], "--dropout NaN is outside [0, 1)"),
        (vec!["train", "--arch", "alexnet", "--dropout", "-0.1"], "--dropout -0.1 is outside [0, 1)"),
        (vec!["train", "--lr", "-1"], "--lr -1 is outside"),
        (vec!["train", "--lr", "inf"], "--lr inf is outside"),
        (vec!["train", "--momentum", "1.5"], "--momentum 1.5 is outside [0, 1)"),
        (vec!["train", "--weight-decay", "nan"], "--weight-decay NaN is outside [0, inf)"),
        (vec!["train", "--gamma", "0"], "--gamma 0 is outside (0, 1]"),
        (vec!["train", "--step-size", "0"], "--step-size 0 is outside [1, inf)"),
        (vec!["train", "--scheduler", "plateau", "--gamma", "1"], "--gamma 1 is outside (0, 1)"),
        (vec!["train", "--scheduler", "plateau", "--threshold", "-1"], "--threshold -1 is outside [0, inf)"),
        (vec!["train", "--scheduler", "plateau", "--min-lr", "nan"], "--min-lr NaN is outside [0, inf)"),
        (vec!["train", "--epochs", "0"], "--epochs 0 is outside [1, 10000]"),
        (vec!["train", "--batch", "1"], "--batch 1 is outside [2, 1024]"),
        (vec!["train", "--batch", "100000000"], "--batch 100000000 is outside [2, 1024]"),
        (vec!["train", "--image-size", "8"], "--image-size 8 is outside [32, 1024] for resnet50"),
        (vec!["train", "--image-size", "99999"], "--image-size 99999 is outside [32, 1024]"),
        (vec!["train", "--hidden", "0", "64"], "--hidden 0 is outside [1, 65536]"),
        (vec!["train", "--momentum", "0", "--nesterov"], "--nesterov needs --momentum above 0"),
        (vec!["train", "--epochs", "-3"], "--epochs"),
        (vec!["train", "--resume", "no-such-run"], "no-such-run"),
        (vec!["eval", "no-such-run"], "no-such-run"),
        (vec!["predict", "--checkpoint", &p("text.safetensors"), &p("cut.jpg")], "text.safetensors"),
        (vec!["predict", "--checkpoint", &p("empty.safetensors"), &p("cut.jpg")], "empty.safetensors"),
        (vec!["predict", &p("cut.jpg")], "no trained run yet"),
        (vec!["predict", "--top", "0", &p("cut.jpg")], "--top 0 is outside"),
        (vec!["predict", "--opacity", "3", &p("cut.jpg")], "--opacity 3 is outside [0, 1]"),
        (vec!["import", "folder", &p("no-such-folder")], "no-such-folder"),
        (vec!["import", "met", "--csv", &p("no-such.csv")], "no-such.csv"),
        (vec!["import", "met", "--csv", &p("binary.csv")], "binary.csv"),
        (vec!["flag", "123456789", "--reason", "book"], "123456789"),
        (vec!["flag", "1", "--reason", "no-such-reason"], "no-such-reason"),
    ]
    .into_iter()
    .map(|(args, want)| (args.into_iter().map(String::from).collect(), want))
    .collect();
    table.extend([
        (
            forward("resnet50", "scalar.safetensors", "x.safetensors"),
            "tensor `fc.weight` has shape [], expected classes x features",
        ),
        (forward("alexnet", "text.safetensors", "x.safetensors"), "text.safetensors is not a safetensors file"),
        (forward("resnet50", "scalar.safetensors", "cut.jpg"), "cut.jpg"),
    ]);
    assert_eq!(table.len(), 35);
    for (args, want) in &table {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out, err) = run(&ws, &args);
        assert_ne!(code, 0, "artculture {args:?} succeeded:\n{out}");
        assert!(!err.contains("panicked"), "artculture {args:?} panicked:\n{err}");
        assert!(err.contains(want), "artculture {args:?}: stderr should name {want:?}:\n{err}");
    }
}

/// A valid MetObjects.csv body: the real header and a few paintings.
fn csv_lines() -> Vec<String> {
    let mut lines = vec![MET_HEADER.trim_end().to_string()];
    for id in 1..=6u64 {
        lines.push(painting(id, "", ["France", "Japan", "India"][id as usize % 3], "").trim_end().to_string());
    }
    lines
}

/// One random edit of a byte string: cut, delete a range, insert bytes, overwrite bytes.
fn mutate(bytes: &[u8], op: u8, at: usize, len: usize, fill: &[u8]) -> Vec<u8> {
    let n = bytes.len().max(1);
    let (at, len) = (at % n, len % 64);
    let mut out = bytes.to_vec();
    match op % 4 {
        0 => out.truncate(at),
        1 => {
            let end = (at + len).min(out.len());
            out.drain(at.min(out.len())..end);
        }
        2 => {
            let at = at.min(out.len());
            out.splice(at..at, fill.iter().copied());
        }
        _ => {
            for (i, b) in fill.iter().enumerate() {
                if let Some(x) = out.get_mut(at + i) {
                    *x = *b;
                }
            }
        }
    }
    out
}

/// Bytes that break CSV and text in interesting ways, as well as random ones.
fn fill_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 1..16),
        Just(b"\"".to_vec()),
        Just(b",,,".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(vec![0xEF, 0xBB, 0xBF]),
        Just(vec![0xFF, 0xFE, 0x00]),
    ]
}

fn images() -> Vec<(&'static str, Vec<u8>)> {
    use image::ImageFormat::*;
    [("jpg", Jpeg), ("png", Png), ("gif", Gif), ("webp", WebP), ("tif", Tiff)]
        .into_iter()
        .map(|(ext, f)| {
            let mut out = std::io::Cursor::new(Vec::new());
            class_image(2, 3, 40, 30).write_to(&mut out, f).unwrap();
            (ext, out.into_inner())
        })
        .collect()
}

fn safetensors_file() -> Vec<u8> {
    let dev = candle_core::Device::Cpu;
    let w = candle_core::Tensor::ones((4, 3), candle_core::DType::F32, &dev).unwrap();
    let b = candle_core::Tensor::zeros(4, candle_core::DType::F32, &dev).unwrap();
    let items = [("lin.bias", b), ("lin.weight", w)];
    safetensors::serialize(items.iter().map(|(k, v)| (*k, v)), None).unwrap()
}

// Cases per property: 192 CSV files, 192 images (all five formats), 192 weight files.
proptest! {
    #![proptest_config(ProptestConfig { cases: 192, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_met_csv_lines_are_skipped_or_named(line in 0usize..7, op in any::<u8>(), at in any::<usize>(),
                                                   len in any::<usize>(), fill in fill_bytes()) {
        let mut lines: Vec<Vec<u8>> = csv_lines().into_iter().map(String::into_bytes).collect();
        lines[line] = mutate(&lines[line], op, at, len, &fill);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("MetObjects.csv");
        let bytes = lines.join(&b"\r\n"[..]);
        // The fill may break lines itself: LF, CRLF or a lone CR each end one.
        let breaks = bytes.iter().enumerate().filter(|&(i, &b)| b == b'\n' || (b == b'\r' && bytes.get(i + 1) != Some(&b'\n'))).count();
        let physical = breaks as u64 + 1;
        std::fs::write(&path, &bytes).unwrap();
        let mapping = artculture::culture::CultureMapping::study_default();
        match artculture::ingest::met_csv::scan(&path, &mapping, None, |_| {}, |_, _| {}) {
            Ok(scan) => {
                for s in &scan.skipped {
                    prop_assert!(s.line >= 2 && s.line <= physical, "skipped line number {} of a {physical}-line file", s.line);
                    prop_assert!(!s.reason.is_empty());
                }
            }
            Err(e) => prop_assert!(e.to_string().contains("MetObjects.csv"), "unnamed: {e}"),
        }
    }

    #[test]
    fn mutated_images_decode_or_are_refused_by_name(which in 0usize..5, op in any::<u8>(), at in any::<usize>(),
                                                     len in any::<usize>(), fill in fill_bytes()) {
        let (ext, bytes) = &images()[which];
        let bad = mutate(bytes, op, at, len, &fill);
        let path = Path::new("mutated").with_extension(ext);
        for result in [artculture::imaging::decode_bytes(&bad, &path), artculture::imaging::decode_reduced(&bad, &path, 16)] {
            if let Err(e) = result {
                prop_assert!(e.to_string().starts_with(&format!("{}: ", path.display())), "unnamed: {e}");
            }
        }
    }

    #[test]
    fn mutated_safetensors_load_or_are_refused_by_name(op in any::<u8>(), at in 0usize..200, len in any::<usize>(),
                                                        fill in fill_bytes()) {
        // Mutations land in the length prefix and the JSON header (the first ~150 bytes).
        let bad = mutate(&safetensors_file(), op, at, len, &fill);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        std::fs::write(&path, &bad).unwrap();
        let map = candle_nn::VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(&map, candle_core::DType::F32, &candle_core::Device::Cpu);
        candle_nn::linear(3, 4, vb.pp("lin")).unwrap();
        if let Err(e) = artculture::model::weights::load_into_varmap(&map, &path, &[]) {
            prop_assert!(e.to_string().contains("w.safetensors"), "unnamed: {e}");
        }
    }
}
