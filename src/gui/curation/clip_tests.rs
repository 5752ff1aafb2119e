//! The Curation view's CLIP features, headlessly: accepting suggested reasons, "more like this"
//! and search by words.
use super::tests::{app_with, flag_of, settle};
use crate::gui::app::tests::run_until;
use egui::{Key, Modifiers};
use egui_kittest::kittest::Queryable;

#[test]
fn a_key_accepts_each_works_suggested_reason_as_one_undoable_change() {
    use crate::analysis::suspicion::Suspicion;
    use crate::catalog::FlagReason;
    let (_d, mut h) = app_with(6);
    let id = |h: &egui_kittest::Harness<'static, crate::gui::ArtApp>, s: &str| {
        h.state().shared.ws.as_ref().unwrap().catalog.resolve_id(s).unwrap()
    };
    // What a CLIP ranking leaves: suggestions on two works, none on a third.
    let suggest = [("1000", Some(FlagReason::Sculpture)), ("1001", Some(FlagReason::SnuffBox)), ("1002", None)];
    for (sid, r) in suggest {
        let aid = id(&h, sid);
        let s = Suspicion { artwork_id: aid, score: 0.9, reasons: vec![], duplicate_of: None, suggested: r };
        h.state_mut().curation.state.suspicion.insert(aid, s);
    }
    h.state_mut().curation.state.ranked_by = Some(crate::analysis::rank::RankedBy::Clip);
    // The work under the cursor: A flags it with its suggestion and moves on.
    h.key_press(Key::A);
    settle(&mut h);
    assert_eq!(flag_of(&h, "1000").as_deref(), Some("sculpture"));
    assert_eq!(h.state().curation.state.cursor, 1);
    h.get_by_label("suggested: snuff-box (press A to accept)");
    // A selection: each work gets its own reason; one without a suggestion is left alone.
    let (a, b) = (id(&h, "1001"), id(&h, "1002"));
    h.state_mut().curation.state.selection.extend([a, b]);
    h.key_press(Key::A);
    settle(&mut h);
    assert_eq!((flag_of(&h, "1001").as_deref(), flag_of(&h, "1002")), (Some("snuff-box"), None));
    // One undo takes back the whole acceptance.
    h.key_press_modifiers(Modifiers::COMMAND, Key::Z);
    settle(&mut h);
    assert_eq!(flag_of(&h, "1001"), None);
    assert_eq!(flag_of(&h, "1000").as_deref(), Some("sculpture"));
}

/// A tiny seeded CLIP with the tokenizer fixture's vocabulary, and an index whose vectors put
/// work 1003 next to 1001 and the rest far away.
fn clip_session(h: &egui_kittest::Harness<'static, crate::gui::ArtApp>) -> super::jobs::ClipSession {
    use crate::model::clip::{ClipConfig, ClipModel, Tokenizer};
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip/tokenizer");
    let tok = Tokenizer::from_files(&fixtures.join("vocab.json"), &fixtures.join("merges.txt")).unwrap();
    let cfg = ClipConfig::from_json(
        r#"{"projection_dim": 4, "text_config": {"vocab_size": 4514, "hidden_size": 8, "intermediate_size": 16,
        "num_hidden_layers": 1, "num_attention_heads": 2}, "vision_config": {"hidden_size": 8,
        "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 16, "patch_size": 8}}"#,
    )
    .unwrap();
    let map = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&map, candle_core::DType::F32, &candle_core::Device::Cpu);
    let model = ClipModel::new(&cfg, vb).unwrap();
    let shared = &h.state().shared;
    let ws = shared.ws.as_ref().unwrap();
    let ids: Vec<i64> = (1000..1006).map(|i| ws.catalog.resolve_id(&i.to_string()).unwrap()).collect();
    let rows = vec![
        vec![1.0, 0.0, 0.0, 0.0],
        vec![0.0, 1.0, 0.0, 0.0],
        vec![0.0, 0.0, 1.0, 0.0],
        vec![0.0, 0.9, 0.1, 0.0],
        vec![0.0, 0.0, 0.0, 1.0],
        vec![0.5, 0.0, 0.0, 0.5],
    ];
    let index = crate::analysis::clip_works::WorkIndex::new(ids, vec![None; 6], vec![false; 6], rows);
    super::jobs::ClipSession {
        ws_path: shared.ws_path.clone(),
        weights: Default::default(),
        model,
        tok,
        generation: shared.generation,
        index: std::sync::Arc::new(index),
    }
}

#[test]
fn more_like_this_and_search_by_words_sort_the_grid_by_clip_similarity() {
    let (_d, mut h) = app_with(6);
    let session = clip_session(&h);
    *h.state_mut().curation.clip_session.lock().unwrap() = Some(session);
    // More like this on work 1001: itself first, then 1003 (its near neighbour).
    h.key_press(Key::ArrowRight);
    h.run_steps(1);
    h.get_by_label("More like this").click();
    h.run_steps(1);
    run_until(&mut h, |app| app.curation.clip_job.is_none() && app.curation.idle());
    let order: Vec<String> = h.state().curation.state.items.iter().map(|a| a.display_id()).collect();
    assert_eq!(&order[..2], ["1001", "1003"], "{order:?}");
    assert_eq!(h.state().curation.state.filters.sort, super::Sort::Similar);
    assert_eq!(h.state().curation.state.current().map(|a| a.display_id()).as_deref(), Some("1001"));
    // Search by words: the grid follows the text's similarities, most similar first.
    h.state_mut().curation.clip_text = "a snuff box".into();
    let q = super::jobs::ClipQuery::Text("a snuff box".into());
    let job = super::jobs::spawn_clip_query(&h.state().shared, &h.state().curation.clip_session, q);
    h.state_mut().curation.clip_job = Some(job);
    run_until(&mut h, |app| app.curation.clip_job.is_none() && app.curation.idle());
    let sims = h.state().curation.similarity.clone();
    let shown: Vec<f64> = h.state().curation.state.items.iter().map(|a| sims[&a.id]).collect();
    assert!(shown.windows(2).all(|w| w[0] >= w[1]), "{shown:?}");
    assert_eq!(shown.len(), 6);
}
