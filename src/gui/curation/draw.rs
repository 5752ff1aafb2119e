//! Drawing the Curation view: the side panel (live Table 1, flag buttons, the work's record and
//! suspicion), the toolbar (filters, sort, zoom), the thumbnail grid (visible rows only) and the
//! overlays (keys, the work large).
use super::{CurationView, FlagFilter, Sort};
use crate::catalog::FlagReason;
use crate::gui::shared::Shared;
use egui::{Color32, Modifiers, Sense, Stroke, Vec2};

impl CurationView {
    pub(super) fn side_panel(&mut self, ui: &mut egui::Ui, shared: &mut Shared) {
        if let Some(stats) = &self.stats {
            ui.strong("Table 1 (live)");
            crate::gui::widgets::table1_grid(ui, "table1_live", stats);
        }
        ui.separator();
        let sel = self.state.selection.len();
        ui.label(if sel > 0 {
            format!("{sel} selected: actions apply to all of them")
        } else {
            "Actions apply to the work under the cursor".into()
        });
        ui.horizontal_wrapped(|ui| {
            for r in FlagReason::ALL {
                if ui.button(format!("{} {}", r.key(), r.as_str())).clicked() {
                    self.flag(shared, Some(r));
                }
            }
            if ui.button("0 unflag").clicked() {
                self.flag(shared, None);
            }
        });
        ui.add(egui::TextEdit::singleline(&mut self.note).hint_text("optional note for the next flag"));
        if let Some(e) = &self.state.last_error {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
        ui.separator();
        if let Some(a) = self.state.current().cloned() {
            ui.strong(if a.title.is_empty() { "(untitled)".to_string() } else { a.title.clone() });
            for (k, v) in [
                ("id", a.display_id()),
                ("artist", a.artist.clone()),
                ("date", a.date.clone()),
                ("medium", a.medium.clone()),
                ("culture", a.culture.clone().unwrap_or_default()),
            ] {
                if !v.is_empty() {
                    ui.label(format!("{k}: {v}"));
                }
            }
            let tags: Vec<&str> = a.tags.candidates().collect();
            if !tags.is_empty() {
                ui.label(format!("raw tags: {}", tags.join(" · ")));
            }
            if a.source == "sample" {
                ui.label("from the built-in sample (Art Institute of Chicago, CC0)");
            }
            if let Some(l) = &a.link {
                let holder = if a.source == "sample" { "the Art Institute of Chicago" } else { "The Met" };
                ui.hyperlink_to(format!("record at {holder}"), l);
            }
            match self.state.shown_flag(&a) {
                (Some(r), true) => ui.colored_label(Color32::from_rgb(220, 80, 60), format!("flagged: {r} (saving…)")),
                (None, true) => ui.label("unflagging (saving…)"),
                (Some(r), false) => ui.colored_label(
                    Color32::from_rgb(220, 80, 60),
                    format!("flagged: {r}{}", a.flag_note.as_ref().map(|n| format!(" ({n})")).unwrap_or_default()),
                ),
                (None, false) => ui.label("not flagged"),
            };
            if let Some(s) = self.state.suspicion.get(&a.id) {
                let by = self.state.ranked_by.map(|b| format!(" (by {})", b.describe())).unwrap_or_default();
                ui.label(format!("suspicion {:.2}{by}", s.score));
                for r in &s.reasons {
                    ui.label(format!("• {r}"));
                }
                if let Some(r) = s.suggested {
                    ui.colored_label(Color32::from_rgb(230, 160, 40), format!("suggested: {r} (press A to accept)"));
                }
            }
        }
    }

    pub(super) fn grid(&mut self, ui: &mut egui::Ui, shared: &Shared) {
        let Some(thumbs) = self.thumbs.as_mut() else { return };
        let cols = ((ui.available_width() / (self.zoom + 8.0)).floor() as usize).max(1);
        let rows = self.state.items.len().div_ceil(cols);
        let row_h = self.zoom + 26.0;
        let mut clicked: Option<(usize, Modifiers)> = None;
        let mut area = egui::ScrollArea::vertical().auto_shrink([false, false]);
        if self.scroll_to_cursor {
            let target = (self.state.cursor / cols) as f32 * (row_h + ui.spacing().item_spacing.y);
            let view_h = ui.available_height();
            let cur = self.scroll_y;
            if target < cur || target + row_h > cur + view_h {
                area = area.vertical_scroll_offset((target - view_h / 2.0).max(0.0));
            }
            self.scroll_to_cursor = false;
        }
        let ws = shared.ws.as_ref();
        let out = area.show_rows(ui, row_h, rows, |ui, range| {
            for row in range {
                ui.horizontal(|ui| {
                    for col in 0..cols {
                        let i = row * cols + col;
                        let Some(a) = self.state.items.get(i) else { break };
                        let path = ws.and_then(|ws| {
                            a.content_hash.as_ref().map(|h| crate::imaging::cache_path(&ws.thumbs_dir(), h))
                        });
                        let tex = thumbs.get(a.id, path.as_ref());
                        let (rect, resp) = ui.allocate_exact_size(Vec2::new(self.zoom, row_h - 4.0), Sense::click());
                        let painter = ui.painter_at(rect);
                        let img_rect = egui::Rect::from_min_size(rect.min, Vec2::splat(self.zoom));
                        painter.rect_filled(img_rect, 2.0, ui.visuals().extreme_bg_color);
                        match tex {
                            Some(t) => {
                                let s = t.size_vec2();
                                let scale = (self.zoom / s.x).min(self.zoom / s.y);
                                let r = egui::Rect::from_center_size(img_rect.center(), s * scale);
                                painter.image(
                                    t.id(),
                                    r,
                                    egui::Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0)),
                                    Color32::WHITE,
                                );
                            }
                            None => {
                                let msg = if thumbs.is_broken(a.id) {
                                    "unreadable"
                                } else if path.is_none() {
                                    "no image"
                                } else {
                                    "…"
                                };
                                painter.text(
                                    img_rect.center(),
                                    egui::Align2::CENTER_CENTER,
                                    msg,
                                    egui::FontId::proportional(12.0),
                                    ui.visuals().weak_text_color(),
                                );
                            }
                        }
                        let (flag, saving) = self.state.shown_flag(a);
                        if let Some(r) = flag {
                            // A flag on its way to the catalog is drawn thinner and lighter.
                            let (width, colour) = if saving {
                                (1.5, Color32::from_rgb(240, 150, 140))
                            } else {
                                (3.0, Color32::from_rgb(220, 60, 50))
                            };
                            painter.rect_stroke(
                                img_rect.shrink(1.0),
                                2.0,
                                Stroke::new(width, colour),
                                egui::StrokeKind::Inside,
                            );
                            painter.text(
                                img_rect.left_top() + Vec2::new(4.0, 4.0),
                                egui::Align2::LEFT_TOP,
                                if saving { format!("{r} (saving)") } else { r.to_string() },
                                egui::FontId::proportional(12.0),
                                Color32::WHITE,
                            );
                        } else if saving {
                            painter.text(
                                img_rect.left_top() + Vec2::new(4.0, 4.0),
                                egui::Align2::LEFT_TOP,
                                "unflagging…",
                                egui::FontId::proportional(12.0),
                                Color32::WHITE,
                            );
                        }
                        if self.state.selection.contains(&a.id) {
                            painter.rect_filled(img_rect, 2.0, Color32::from_rgba_unmultiplied(60, 120, 255, 60));
                        }
                        if i == self.state.cursor {
                            painter.rect_stroke(
                                img_rect,
                                2.0,
                                Stroke::new(2.5, Color32::from_rgb(250, 200, 40)),
                                egui::StrokeKind::Outside,
                            );
                        }
                        let label = format!("{} · {}", a.display_id(), a.culture.as_deref().unwrap_or(""));
                        painter.text(
                            egui::pos2(rect.left() + 2.0, img_rect.bottom() + 3.0),
                            egui::Align2::LEFT_TOP,
                            label,
                            egui::FontId::proportional(11.0),
                            ui.visuals().text_color(),
                        );
                        if resp.clicked() {
                            clicked = Some((i, ui.input(|inp| inp.modifiers)));
                        }
                        if resp.double_clicked() {
                            self.show_large = true;
                        }
                    }
                });
            }
        });
        self.scroll_y = out.state.unclamped_offset().y;
        if let Some((i, m)) = clicked {
            self.state.click(i, m.command, m.shift);
        }
    }

    pub(super) fn overlays(&mut self, ui: &mut egui::Ui, shared: &Shared) {
        let ctx = ui.ctx().clone();
        if self.show_help {
            egui::Window::new("Curation keys").collapsible(false).resizable(false).open(&mut self.show_help).show(
                &ctx,
                |ui| {
                    egui::Grid::new("keys").striped(true).show(ui, |ui| {
                        for (k, what) in super::KEYS {
                            ui.monospace(*k);
                            ui.label(*what);
                            ui.end_row();
                        }
                    });
                },
            );
        }
        if self.show_large
            && let Some(a) = self.state.current().cloned()
        {
            let path = shared
                .ws
                .as_ref()
                .and_then(|ws| a.content_hash.as_ref().map(|h| crate::imaging::cache_path(&ws.thumbs_dir(), h)));
            let tex = self.thumbs.as_mut().and_then(|t| t.get(a.id, path.as_ref()));
            egui::Window::new(if a.title.is_empty() { a.display_id() } else { a.title.clone() })
                .id(egui::Id::unique("curation_large"))
                .open(&mut self.show_large)
                .default_size([560.0, 560.0])
                .show(&ctx, |ui| {
                    if let Some(t) = tex {
                        ui.add(egui::Image::new(&t).max_size(Vec2::splat(520.0)).maintain_aspect_ratio(true));
                    }
                    ui.label(format!("{} · {} · {}", a.artist, a.date, a.medium));
                });
        }
    }

    pub(super) fn toolbar(&mut self, ui: &mut egui::Ui, shared: &mut Shared) -> bool {
        let mut changed = false;
        let cultures: Vec<String> =
            self.stats.as_ref().map(|s| s.groups.iter().map(|g| g.culture.clone()).collect()).unwrap_or_default();
        ui.horizontal_wrapped(|ui| {
            let f = &mut self.state.filters;
            egui::ComboBox::from_id_salt("culture_filter")
                .selected_text(f.culture.clone().unwrap_or_else(|| "All cultures".into()))
                .show_ui(ui, |ui| {
                    changed |= ui.selectable_value(&mut f.culture, None, "All cultures").changed();
                    for c in &cultures {
                        changed |= ui.selectable_value(&mut f.culture, Some(c.clone()), c).changed();
                    }
                });
            egui::ComboBox::from_id_salt("flag_filter").selected_text(format!("{:?}", f.flag)).show_ui(ui, |ui| {
                for v in [FlagFilter::All, FlagFilter::Flagged, FlagFilter::Unflagged] {
                    changed |= ui.selectable_value(&mut f.flag, v, format!("{v:?}")).changed();
                }
            });
            egui::ComboBox::from_id_salt("reason_filter")
                .selected_text(f.reason.map(|r| r.as_str()).unwrap_or("any reason"))
                .show_ui(ui, |ui| {
                    changed |= ui.selectable_value(&mut f.reason, None, "any reason").changed();
                    for r in FlagReason::ALL {
                        changed |= ui.selectable_value(&mut f.reason, Some(r), r.as_str()).changed();
                    }
                });
            let search =
                ui.add(egui::TextEdit::singleline(&mut f.text).hint_text("title, artist or id").desired_width(160.0));
            changed |= search.changed();
            egui::ComboBox::from_id_salt("sort")
                .selected_text(match f.sort {
                    Sort::Id => "by id",
                    Sort::Culture => "by culture",
                    Sort::Suspicious => "most suspicious first",
                    Sort::Similar => "most similar first",
                })
                .show_ui(ui, |ui| {
                    changed |= ui.selectable_value(&mut f.sort, Sort::Id, "by id").changed();
                    changed |= ui.selectable_value(&mut f.sort, Sort::Culture, "by culture").changed();
                    changed |= ui.selectable_value(&mut f.sort, Sort::Suspicious, "most suspicious first").changed();
                    if !self.similarity.is_empty() {
                        changed |= ui.selectable_value(&mut f.sort, Sort::Similar, "most similar first").changed();
                    }
                });
            ui.add(egui::Slider::new(&mut self.zoom, 64.0..=320.0).text("zoom").show_value(false));
            if ui
                .button("Rank suspicious")
                .on_hover_text(
                    "Rank by suspicion: the run's model if one exists, CLIP zero-shot when fetched, else image statistics",
                )
                .clicked()
            {
                self.start_ranking(shared);
            }
            let words = ui.add(
                egui::TextEdit::singleline(&mut self.clip_text)
                    .hint_text("search by words (CLIP)")
                    .desired_width(170.0),
            );
            if words.lost_focus()
                && ui.input(|i| i.key_pressed(egui::Key::Enter))
                && !self.clip_text.trim().is_empty()
                && self.clip_job.is_none()
            {
                let q = super::jobs::ClipQuery::Text(self.clip_text.trim().to_string());
                self.clip_job = Some(super::jobs::spawn_clip_query(shared, &self.clip_session, q));
            }
            let targets = self.state.targets();
            if ui
                .add_enabled(!targets.is_empty() && self.clip_job.is_none(), egui::Button::new("More like this"))
                .on_hover_text("Sort the grid by CLIP similarity to the selected works (or the one under the cursor)")
                .clicked()
            {
                let q = super::jobs::ClipQuery::Works(targets);
                self.clip_job = Some(super::jobs::spawn_clip_query(shared, &self.clip_session, q));
            }
            if ui.button("Export CSV…").clicked() {
                super::jobs::export_csv(shared);
            }
            if ui.button("Keys (?)").clicked() {
                self.show_help = !self.show_help;
            }
        });
        changed
    }
}
