//! Ingest end to end through the CLI: MetObjects.csv (good and malformed), image folders with
//! good and bad images, Table 1, re-import keeping flags.
mod common;

use common::*;
use serde_json::Value;
use std::io::Write;

fn write_csv(path: &std::path::Path, rows: &[String]) {
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(MET_HEADER.trim_end().as_bytes()).unwrap();
    f.write_all(b"\r\n").unwrap();
    for r in rows {
        f.write_all(r.as_bytes()).unwrap();
    }
}

fn stats(ws: &std::path::Path) -> Value {
    serde_json::from_str(&ok(ws, &["stats", "--json"])).unwrap()
}

fn counts(s: &Value) -> Vec<(String, u64, u64)> {
    s["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (g["culture"].as_str().unwrap().to_string(), g["initial"].as_u64().unwrap(), g["final"].as_u64().unwrap())
        })
        .collect()
}

#[test]
fn met_csv_gives_table1_with_threshold_union_and_bad_lines_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (ws, csv) = (dir.path().join("ws"), dir.path().join("MetObjects.csv"));
    let mut rows = Vec::new();
    let mut id = 1;
    let mut add = |n: usize, c: &str, country: &str, nat: &str, rows: &mut Vec<String>| {
        for _ in 0..n {
            rows.push(painting(id, c, country, nat));
            id += 1;
        }
    };
    add(4, "", "", "French", &mut rows);
    add(2, "India (Gujarat)", "", "", &mut rows);
    add(1, "", "India", "", &mut rows);
    add(1, "India (Rajasthan, Mewar)", "", "", &mut rows);
    add(2, "", "England", "", &mut rows);
    add(1, "", "United Kingdom", "American", &mut rows);
    add(1, "Korea", "", "", &mut rows);
    add(2, "Atlantis", "", "", &mut rows);
    // Not paintings, or not public domain: skipped silently.
    rows.push(met_row(&[
        ("Object ID", "900"),
        ("Is Public Domain", "True"),
        ("Classification", "Sculpture"),
        ("Culture", "French"),
    ]));
    rows.push(met_row(&[
        ("Object ID", "901"),
        ("Is Public Domain", "False"),
        ("Classification", "Paintings"),
        ("Culture", "French"),
    ]));
    // Malformed: too few fields; then a truncated last line with an open quote.
    rows.push("1,2,3\r\n".to_string());
    rows.push(painting(902, "", "", "Dutch"));
    rows.push("7.1,False,False,True,903,,\"unterminated".to_string());
    write_csv(&csv, &rows);
    let out = ok(&ws, &["import", "met", "--csv", csv.to_str().unwrap(), "--min-per-group", "2", "--json"]);
    let report: Value = serde_json::from_str(&out).unwrap();
    let skipped: Vec<u64> =
        report["csv"]["scan"]["skipped"].as_array().unwrap().iter().map(|s| s["line"].as_u64().unwrap()).collect();
    assert!(skipped.contains(&18), "the short line (18) is reported: {skipped:?}");
    assert!(skipped.iter().any(|&l| l >= 20), "the truncated last line is reported: {skipped:?}");
    let s = stats(&ws);
    // Groups with more than 2 works: French 4, Indian 4 (union of Gujarat, India, Rajasthan),
    // British 3 (England + United Kingdom, Culture before Nationality).
    assert_eq!(counts(&s), vec![("French".into(), 4, 4), ("Indian".into(), 4, 4), ("British".into(), 3, 3)]);
    let dropped: Vec<(String, u64)> = s["dropped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["tag"].as_str().unwrap().into(), d["count"].as_u64().unwrap()))
        .collect();
    assert!(
        dropped.contains(&("Atlantis".into(), 2))
            && dropped.contains(&("Korean".into(), 1))
            && dropped.contains(&("Dutch".into(), 1)),
        "{dropped:?}"
    );
    assert_eq!(s["total_initial"], 11);

    // Flag one, re-import a newer file: the flag stays, titles update in place.
    ok(&ws, &["flag", "1", "--reason", "snuff box", "--note", "a box"]);
    rows[0] = rows[0].replace("Painting 1,", "Painting 1 (renamed),");
    write_csv(&csv, &rows);
    ok(&ws, &["import", "met", "--csv", csv.to_str().unwrap(), "--min-per-group", "2"]);
    let s = stats(&ws);
    assert_eq!(counts(&s)[0], ("French".into(), 4, 3));
    let (code, out, _) = run(&ws, &["export-curation"]);
    assert_eq!(code, 0);
    assert!(out.lines().any(|l| l.starts_with("1,met,French,true,snuff-box,a box,Painting 1 (renamed)")), "{out}");
}

#[test]
fn missing_column_and_wrong_delimiter_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    let semi = dir.path().join("semi.csv");
    std::fs::write(&semi, MET_HEADER.replace(',', ";")).unwrap();
    let (code, _, err) = run(&ws, &["import", "met", "--csv", semi.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("semi.csv, line 1") && err.contains("';' as delimiter"), "{err}");
    let missing = dir.path().join("missing.csv");
    std::fs::write(&missing, MET_HEADER.replace("Classification,", "")).unwrap();
    let (code, _, err) = run(&ws, &["import", "met", "--csv", missing.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("\"Classification\""), "{err}");
    let (code, _, err) = run(&ws, &["import", "met", "--csv", dir.path().join("nope.csv").to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("nope.csv"), "{err}");
}

#[test]
fn folder_import_reports_every_bad_image_and_keeps_the_good() {
    let dir = tempfile::tempdir().unwrap();
    let (ws, src) = (dir.path().join("ws"), dir.path().join("src"));
    synth_folder(&src, &["French", "Japanese"], 3, 40);
    let f = src.join("French");
    std::fs::write(f.join("empty.jpg"), b"").unwrap();
    std::fs::write(f.join("error.jpg"), b"<!DOCTYPE html><html><body>429 Too Many Requests</body></html>").unwrap();
    let good = std::fs::read(f.join("0.png")).unwrap();
    std::fs::write(f.join("truncated.png"), &good[..good.len() / 2]).unwrap();
    // The first third of a JPEG, as an interrupted download leaves it: its decoder would
    // fill the missing rows with grey.
    let mut jpeg = std::io::Cursor::new(Vec::new());
    class_image(0, 1, 120, 90).write_to(&mut jpeg, image::ImageFormat::Jpeg).unwrap();
    let jpeg = jpeg.into_inner();
    std::fs::write(f.join("cut.jpg"), &jpeg[..jpeg.len() / 3]).unwrap();
    image::DynamicImage::new_luma8(30_000, 2).save(f.join("huge.png")).unwrap();
    image::DynamicImage::ImageRgb16(image::ImageBuffer::from_pixel(20, 10, image::Rgb([65535u16, 0, 300])))
        .save(f.join("deep.png"))
        .unwrap();
    image::DynamicImage::new_luma8(16, 16).save(src.join("Japanese").join("gray.png")).unwrap();
    // A CMYK image (print scans are often CMYK); the image crate cannot encode one, tiff can.
    let mut cmyk = std::io::Cursor::new(Vec::new());
    tiff::encoder::TiffEncoder::new(&mut cmyk)
        .unwrap()
        .write_image::<tiff::encoder::colortype::CMYK8>(8, 8, &[10u8, 200, 30, 40].repeat(64))
        .unwrap();
    std::fs::write(src.join("Japanese").join("cmyk.tif"), cmyk.into_inner()).unwrap();
    let (code, _, err) = run(&ws, &["import", "folder", src.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    for (file, why) in [
        ("empty.jpg", "empty file"),
        ("error.jpg", "HTML page"),
        ("truncated.png", "image file is truncated"),
        ("cut.jpg", "image file is truncated: JPEG ends inside its image data"),
        ("huge.png", "20000-pixel limit"),
    ] {
        assert!(err.lines().any(|l| l.contains(file) && l.contains(why)), "{file}: {why}\n{err}");
    }
    assert!(err.contains("deep.png: Rgb16 converted"), "{err}");
    let s = stats(&ws);
    assert_eq!(counts(&s), vec![("Japanese".into(), 5, 5), ("French".into(), 4, 4)], "gray and CMYK images are kept");
    // Importing again updates, adds nothing.
    let (_, _, err) = run(&ws, &["import", "folder", src.to_str().unwrap()]);
    assert!(err.contains("0 imported, 9 updated"), "{err}");
}

#[test]
fn real_paintings_decode_with_orientation_and_thumbnails() {
    let Some(dir) = shared("paintings/images") else { return };
    let n = std::fs::read_dir(&dir).unwrap().count();
    let tmp = tempfile::tempdir().unwrap();
    let culture = tmp.path().join("src/Various");
    std::fs::create_dir_all(&culture).unwrap();
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        std::os::unix::fs::symlink(e.path(), culture.join(e.file_name())).unwrap();
    }
    let ws = tmp.path().join("ws");
    ok(&ws, &["import", "folder", tmp.path().join("src").to_str().unwrap()]);
    assert_eq!(stats(&ws)["total_initial"].as_u64().unwrap() as usize, n);
    let thumbs = std::fs::read_dir(ws.join("thumbs")).unwrap().count();
    assert_eq!(thumbs, n, "one pre-resized copy per painting");
}

#[test]
fn flag_unflag_undo_through_the_cli_and_unknown_ids() {
    let dir = tempfile::tempdir().unwrap();
    let (ws, csv) = (dir.path().join("ws"), dir.path().join("m.csv"));
    write_csv(&csv, &(1..=3).map(|i| painting(i, "", "", "Italian")).collect::<Vec<_>>());
    ok(&ws, &["import", "met", "--csv", csv.to_str().unwrap(), "--min-per-group", "0"]);
    let (code, out, err) = run(&ws, &["flag", "2", "--reason", "book"]);
    assert_eq!((code, out.as_str()), (0, ""), "no stdout without --json: {err}");
    assert_eq!(stats(&ws)["total_final"], 2);
    ok(&ws, &["undo"]);
    assert_eq!(stats(&ws)["total_final"], 3);
    ok(&ws, &["redo"]);
    assert_eq!(stats(&ws)["total_final"], 2);
    ok(&ws, &["unflag", "2"]);
    assert_eq!(stats(&ws)["total_final"], 3);
    let (code, _, err) = run(&ws, &["flag", "77", "--reason", "book"]);
    assert_ne!(code, 0);
    assert!(err.contains("no artwork with id 77"), "{err}");
    let (code, _, err) = run(&ws, &["flag", "2", "--reason", "vase"]);
    assert_ne!(code, 0);
    assert!(err.contains("unknown reason"), "{err}");
}

#[test]
fn the_built_in_sample_loads_offline_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    let (code, _, err) = run(&ws, &["import", "sample"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("sample: 32 paintings (32 new)"), "{err}");
    let s = stats(&ws);
    assert_eq!(s["total_initial"], 32);
    assert_eq!(counts(&s).len(), 7, "British, Dutch, Flemish, French, German, Italian, Spanish");
    assert!(ws.join("sample/French").is_dir(), "the images live in the workspace");
    // Without a trained run, image statistics rank the works, most suspicious first.
    let r: Value = serde_json::from_str(&ok(&ws, &["rank", "--json", "--limit", "5"])).unwrap();
    assert_eq!(r["ranked_by"], "image_statistics");
    let works = r["works"].as_array().unwrap();
    assert_eq!(works.len(), 5);
    let scores: Vec<f64> = works.iter().map(|w| w["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|p| p[0] >= p[1]), "{scores:?}");
    assert!(!works[0]["reasons"].as_array().unwrap().is_empty(), "the top work says why");
    let (code, _, err) = run(&ws, &["rank", "--run", "no-such-run"]);
    assert_ne!(code, 0);
    assert!(err.contains("no run no-such-run"), "{err}");

    // What the sample makes is labelled: a demo-preset run (shrunk here to one quick epoch)
    // and any run on sample works.
    let origin = |args: &[&str]| {
        let run = ok(&ws, args).lines().next().unwrap().trim().to_string();
        let runs: Value = serde_json::from_str(&ok(&ws, &["runs", "--json"])).unwrap();
        let r = runs["runs"].as_array().unwrap().iter().find(|r| r["id"] == run.as_str()).unwrap().clone();
        (run, r["origin"].clone(), r["sample_works"].as_u64().unwrap())
    };
    let quick = ["--epochs", "1", "--image-size", "32"];
    let (demo, o, n) = origin(&[&["train", "--preset", "demo"][..], &quick[..]].concat());
    assert_eq!((o, n), (Value::from("demo"), 32));
    let (_, o, _) = origin(&[&["train", "--method", "scratch"][..], &quick[..]].concat());
    assert_eq!(o, "sample");
    assert!(ok(&ws, &["runs"]).contains(&format!("{demo} (demo)")));
    let img = ws.join("sample/French").read_dir().unwrap().next().unwrap().unwrap().path();
    let (code, _, err) = run(&ws, &["predict", "--run", &demo, img.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("used the demo preset (shows the job, not the study)"), "{err}");
}
