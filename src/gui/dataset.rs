//! The Dataset view: import The Met's paintings or a folder, watch the import, and read the
//! study's Table 1 for this workspace as a table and a bar chart, with what was dropped.
use super::shared::{PickKind, Shared};
use crate::catalog::DatasetStats;
use crate::workspace::Workspace;
use egui_plot::{Bar, BarChart, Legend, Plot};

pub struct DatasetView {
    stats: Option<DatasetStats>,
    /// (all works, works from the built-in sample).
    sample: (usize, usize),
    loaded_generation: Option<u64>,
    /// Groups with more works than this are kept (the study: 100).
    pub(crate) min_per_group: usize,
}

impl Default for DatasetView {
    fn default() -> Self {
        Self {
            stats: None,
            sample: (0, 0),
            loaded_generation: None,
            min_per_group: crate::ingest::DEFAULT_MIN_PER_GROUP,
        }
    }
}

/// Starts an import of a folder chosen by the user.
pub fn start_folder_import(shared: &mut Shared) {
    let (picker, ws_path) = (shared.picker.clone(), shared.ws_path.clone());
    shared.spawn("Import folder", move |rep| {
        let Some(dir) = picker(PickKind::Folder).into_iter().next() else { return Ok("cancelled".into()) };
        let mut ws = Workspace::open(&ws_path).map_err(|e| e.to_string())?;
        let r = crate::ingest::folder::import_folder(&mut ws, &dir, |done, total| {
            rep.progress(done as f32 / total.max(1) as f32, format!("{done} / {total} images"))
        })
        .map_err(|e| e.to_string())?;
        let mut msg = format!("{} new, {} updated, {} skipped", r.imported, r.updated, r.skipped.len());
        for (file, why) in r.skipped.iter().take(20) {
            msg.push_str(&format!("\n  skipped {file}: {why}"));
        }
        Ok(msg)
    });
}

/// Loads the embedded sample (32 public-domain paintings), offline.
pub fn start_sample_import(shared: &mut Shared) {
    if shared.busy("Load the sample") {
        return;
    }
    let ws_path = shared.ws_path.clone();
    shared.spawn("Load the sample", move |rep| {
        let mut ws = Workspace::open(&ws_path).map_err(|e| e.to_string())?;
        let r = crate::ingest::sample::import_sample(&mut ws, |done, total| {
            rep.progress(done as f32 / total.max(1) as f32, format!("{done} / {total} paintings"))
        })
        .map_err(|e| e.to_string())?;
        Ok(format!(
            "{} sample paintings loaded ({} new); next: the Training view's Demo preset",
            r.imported + r.updated,
            r.imported
        ))
    });
}

fn start_csv_import(shared: &mut Shared, min_per_group: usize) {
    let (picker, ws_path) = (shared.picker.clone(), shared.ws_path.clone());
    shared.spawn("Import MetObjects.csv", move |rep| {
        let Some(csv) = picker(PickKind::CsvFile).into_iter().next() else { return Ok("cancelled".into()) };
        let mut ws = Workspace::open(&ws_path).map_err(|e| e.to_string())?;
        let mapping = ws.culture_mapping().map_err(|e| e.to_string())?;
        let r = crate::ingest::import_met_csv(&mut ws, &csv, &mapping, min_per_group, None, |done, total| {
            rep.progress(
                done as f32 / total.max(1) as f32,
                format!("{:.0} / {:.0} MB", done as f64 / 1e6, total as f64 / 1e6),
            )
        })
        .map_err(|e| e.to_string())?;
        let mut msg = format!(
            "{} paintings ({} new), {} lines skipped, {} groups kept",
            r.scan.paintings,
            r.inserted,
            r.scan.skipped.len() as u64 + r.scan.skipped_unlisted,
            r.kept_groups.len()
        );
        for l in r.scan.skipped.iter().take(20) {
            msg.push_str(&format!("\n  {}, line {}: {}", csv.display(), l.line, l.reason));
        }
        Ok(msg)
    });
}

impl DatasetView {
    fn reload(&mut self, shared: &Shared) {
        if self.loaded_generation != Some(shared.generation) || self.stats.is_none() {
            self.stats = shared.ws.as_ref().and_then(|ws| ws.catalog.stats().ok());
            self.sample = shared
                .ws
                .as_ref()
                .and_then(|ws| ws.catalog.count_with_source(crate::catalog::SAMPLE_SOURCE).ok())
                .unwrap_or_default();
            self.loaded_generation = Some(shared.generation);
        }
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, shared: &mut Shared) {
        self.reload(shared);
        let stats = self.stats.clone().unwrap_or_default();
        ui.horizontal(|ui| {
            if ui.button("Import MetObjects.csv…").clicked() && !shared.busy("Import MetObjects.csv") {
                start_csv_import(shared, self.min_per_group);
            }
            if ui
                .button("Open a folder of images…")
                .on_hover_text("One sub-folder per culture: DIR/French/*.jpg")
                .clicked()
            {
                start_folder_import(shared);
            }
            let label = super::met_job::button_label(shared);
            if ui
                .add_enabled(!shared.busy(super::met_job::JOB_NAME), egui::Button::new(label))
                .on_hover_text(
                    "Paced for The Met's CDN (about a request a second): a work a second at best. \
                     Cancel any time; it resumes where it stopped.",
                )
                .clicked()
            {
                super::met_job::start_met_download(shared, self.min_per_group);
            }
            if ui.button("Load the sample").on_hover_text("32 public-domain paintings built into artculture").clicked()
            {
                start_sample_import(shared);
            }
            ui.add(
                egui::DragValue::new(&mut self.min_per_group).range(0..=10_000).prefix("keep groups with more than "),
            );
        });
        ui.separator();
        if stats.total_initial == 0 {
            welcome(ui, shared, self.min_per_group);
            return;
        }
        let (all, sample) = self.sample;
        ui.columns(2, |cols| {
            table1(&mut cols[0], &stats);
            if sample > 0 {
                cols[0].label(format!(
                    "{sample} of {all} works are the built-in sample (Art Institute of Chicago, CC0): \
                     enough to try every view, far too few to learn cultures. Runs on them are labelled."
                ));
            }
            recent_imports(&mut cols[0], shared);
            bar_chart(&mut cols[1], &stats);
        });
    }
}

fn welcome(ui: &mut egui::Ui, shared: &mut Shared, min_per_group: usize) {
    ui.add_space(24.0);
    ui.vertical_centered(|ui| {
        ui.heading("This workspace is empty");
        ui.add_space(8.0);
        ui.label("Ways to begin:");
        ui.add_space(8.0);
        if ui.button("Load the sample: 32 public-domain paintings, 7 cultures (offline, seconds)").clicked() {
            start_sample_import(shared);
        }
        if ui.button("Import The Met's paintings (downloads the records and images)").clicked() {
            super::met_job::start_met_download(shared, min_per_group);
        }
        if ui.button("Open a folder of images, one sub-folder per culture").clicked() {
            start_folder_import(shared);
        }
        if ui.button("Fetch pretrained ResNet-50 weights").clicked() {
            shared.spawn("Fetch weights", |rep| {
                let path = crate::model::weights::fetch(
                    crate::model::Arch::Resnet50,
                    &crate::model::weights::HubOptions::from_env(),
                    {
                        let rep = rep.clone();
                        move |done, total| {
                            rep.progress(
                                done as f32 / total.max(1) as f32,
                                format!("{:.0} / {:.0} MB", done as f64 / 1e6, total as f64 / 1e6),
                            )
                        }
                    },
                )
                .map_err(|e| e.to_string())?;
                Ok(path.display().to_string())
            });
        }
        ui.add_space(8.0);
        ui.label("Already have MetObjects.csv? Use “Import MetObjects.csv…” above.");
    });
}

/// What the last imports did, with what they skipped and why.
fn recent_imports(ui: &mut egui::Ui, shared: &Shared) {
    let imports: Vec<&String> = shared
        .messages
        .iter()
        .filter(|m| ["Import", "Download", "Load the sample"].iter().any(|p| m.starts_with(p)))
        .collect();
    if imports.is_empty() {
        return;
    }
    ui.add_space(8.0);
    egui::CollapsingHeader::new("Recent imports").default_open(true).show(ui, |ui| {
        for m in imports.iter().rev().take(5) {
            ui.label(m.as_str());
        }
    });
}

fn table1(ui: &mut egui::Ui, stats: &DatasetStats) {
    ui.heading("Table 1: works per culture");
    super::widgets::table1_grid(ui, "table1", stats);
    if !stats.dropped.is_empty() {
        ui.add_space(8.0);
        egui::CollapsingHeader::new(format!("Dropped at import ({} tags)", stats.dropped.len())).show(ui, |ui| {
            egui::ScrollArea::vertical().max_height(200.0).show(ui, |ui| {
                for d in &stats.dropped {
                    ui.label(format!("{} — {} works ({})", d.tag, d.count, d.why));
                }
            });
        });
    }
}

/// Table 1's bars: each culture in its palette colour, the initial count lighter than the final.
fn table1_bars(stats: &DatasetStats) -> (Vec<Bar>, Vec<Bar>) {
    let bar = |i: usize, g: &crate::catalog::GroupCount, initial: bool| {
        let c = super::widgets::culture_color32(&g.culture);
        let (x, v, fill) =
            if initial { (i as f64 - 0.2, g.initial, c.gamma_multiply(0.45)) } else { (i as f64 + 0.2, g.final_, c) };
        Bar::new(x, v as f64).name(&g.culture).width(0.4).fill(fill)
    };
    let initial = stats.groups.iter().enumerate().map(|(i, g)| bar(i, g, true)).collect();
    let final_ = stats.groups.iter().enumerate().map(|(i, g)| bar(i, g, false)).collect();
    (initial, final_)
}

fn bar_chart(ui: &mut egui::Ui, stats: &DatasetStats) {
    let (initial, final_) = table1_bars(stats);
    let names: Vec<String> = stats.groups.iter().map(|g| g.culture.clone()).collect();
    Plot::new("table1_bars")
        .legend(Legend::default())
        .allow_scroll(false)
        // One mark per culture: the default spacer puts ticks every 5 or 10 and most names vanish.
        .x_grid_spacer(|input| {
            let (lo, hi) = (input.bounds.0.ceil().max(0.0) as i64, input.bounds.1.floor() as i64);
            (lo..=hi).map(|i| egui_plot::GridMark { value: i as f64, step_size: 1.0 }).collect()
        })
        // Names are shown down to 30 px apart (the default hides x labels closer than 60 px,
        // which drops most of eleven names); narrower than a name, they are shortened.
        .custom_x_axes(vec![egui_plot::AxisHints::new_x().label_spacing(30.0..=40.0).formatter(move |m, range| {
            let i = m.value.round();
            let name = if (m.value - i).abs() < 1e-6 && i >= 0.0 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            };
            // More than ~8 cultures visible: three letters each (the table and hover name them).
            if range.end() - range.start() > 8.5 { name.chars().take(3).collect() } else { name }
        })])
        .show(ui, |p| {
            // Bars are in their culture's colour; the legend tells initial (light) from final.
            p.bar_chart(BarChart::new("Initial (light)", initial).color(egui::Color32::from_gray(110)));
            p.bar_chart(BarChart::new("Final", final_).color(egui::Color32::from_gray(200)));
        });
}

#[cfg(test)]
mod tests {
    use crate::gui::app::tests::{fixed_picker, harness, run_until};
    use egui_kittest::kittest::Queryable;

    #[test]
    fn table1_draws_each_of_the_study_groups_in_its_own_palette_colour() {
        let groups = crate::culture::STUDY_GROUPS
            .iter()
            .map(|c| crate::catalog::GroupCount { culture: c.to_string(), initial: 200, final_: 150 })
            .collect();
        let stats = crate::catalog::DatasetStats { groups, ..Default::default() };
        let (initial, final_) = super::table1_bars(&stats);
        let fills: std::collections::HashSet<_> = final_.iter().map(|b| b.fill).collect();
        assert_eq!(fills.len(), 11, "eleven cultures, eleven colours");
        for (b, g) in final_.iter().zip(&stats.groups) {
            assert_eq!(b.fill, crate::gui::widgets::culture_color32(&g.culture), "{}", g.culture);
        }
        // The initial bar is the same hue, lighter.
        assert!(initial.iter().zip(&final_).all(|(i, f)| i.fill == f.fill.gamma_multiply(0.45)));
    }

    #[test]
    fn the_empty_workspace_offers_the_sample_and_loads_it_offline() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = harness(dir.path(), fixed_picker(vec![]));
        h.run_steps(2);
        h.get_by_label("This workspace is empty");
        h.get_by_label_contains("Load the sample: 32 public-domain paintings").click();
        run_until(&mut h, |app| app.shared.jobs.is_empty() && !app.shared.messages.is_empty());
        h.run_steps(3);
        let msg = h.state().shared.messages.last().unwrap().clone();
        assert_eq!(msg, "Load the sample: 32 sample paintings loaded (32 new); next: the Training view's Demo preset");
        // Said in the status bar and kept under "Recent imports".
        assert_eq!(h.get_all_by_label(&msg).count(), 2);
        h.get_by_label("Table 1: works per culture");
        h.get_by_label("Flemish");
        h.get_by_label_contains("32 of 32 works are the built-in sample");
        // The Training view offers the demo for a workspace that holds only the sample.
        h.state_mut().view = crate::gui::View::Training;
        h.run_steps(3);
        let cfg = &h.state().training.cfg;
        assert_eq!((cfg.preset.as_deref(), cfg.epochs, cfg.image_size), (Some("demo"), 10, 128));
    }

    #[test]
    fn a_folder_chosen_in_the_dialog_is_imported_and_table1_shown() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        for (culture, color) in [("Dutch", [10u8, 200, 10]), ("Spanish", [200, 10, 10])] {
            std::fs::create_dir_all(src.join(culture)).unwrap();
            for i in 0..3 {
                image::RgbImage::from_pixel(20 + i, 16, image::Rgb(color))
                    .save(src.join(culture).join(format!("{i}.png")))
                    .unwrap();
            }
        }
        std::fs::write(src.join("Dutch/broken.jpg"), b"<html>").unwrap();
        let mut h = harness(&dir.path().join("ws"), fixed_picker(vec![src]));
        h.run_steps(2);
        h.get_by_label("Open a folder of images…").click();
        run_until(&mut h, |app| app.shared.jobs.is_empty() && !app.shared.messages.is_empty());
        h.run_steps(3);
        let msg = h.state().shared.messages.last().unwrap().clone();
        assert!(msg.starts_with("Import folder: 6 new") && msg.contains("broken.jpg"), "{msg}");
        h.get_by_label("Table 1: works per culture");
        h.get_by_label("Recent imports");
        let stats = h.state().shared.ws.as_ref().unwrap().catalog.stats().unwrap();
        assert_eq!(stats.total_initial, 6);
    }
}
