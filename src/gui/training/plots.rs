//! The Training view's live plots: batch loss (raw, with the smoothed line over it), per-epoch
//! losses and accuracies, and the learning rate on a log axis.
use super::TrainingView;
use crate::catalog::EpochMetrics;
use egui::Color32;
use egui_plot::{Legend, Line, Plot, PlotPoints};

// Okabe-Ito colours: each series keeps one colour the eye can tell apart (also with a
// colour-vision deficiency); the culture palette is for cultures, not for series.
const SKY: Color32 = Color32::from_rgb(0x56, 0xb4, 0xe9);
const BLUE: Color32 = Color32::from_rgb(0x00, 0x72, 0xb2);
const ORANGE: Color32 = Color32::from_rgb(0xe6, 0x9f, 0x00);
const GREEN: Color32 = Color32::from_rgb(0x00, 0x9e, 0x73);
const VERMILLION: Color32 = Color32::from_rgb(0xd5, 0x5e, 0x00);
const PURPLE: Color32 = Color32::from_rgb(0xcc, 0x79, 0xa7);
const YELLOW: Color32 = Color32::from_rgb(0xf0, 0xe4, 0x42);

/// A tick of the log learning-rate axis: powers of ten as `1e-3`, nothing in between.
pub fn lr_tick(log10: f64) -> String {
    if (log10 - log10.round()).abs() < 1e-6 { format!("1e{}", log10.round() as i64) } else { String::new() }
}

/// Exponential moving average, as TensorBoard's smoothing slider.
pub fn smooth(points: &[[f64; 2]], weight: f64) -> Vec<[f64; 2]> {
    let mut last = None;
    points
        .iter()
        .map(|p| {
            let v = match last {
                None => p[1],
                Some(l) => l * weight + (1.0 - weight) * p[1],
            };
            last = Some(v);
            [p[0], v]
        })
        .collect()
}

impl TrainingView {
    pub(super) fn plots(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            ui.label("smoothing");
            ui.add(egui::Slider::new(&mut self.smoothing, 0.0..=0.99));
        });
        let h = (ui.available_height() / 3.0 - 10.0).max(120.0);
        let batch_loss: Vec<[f64; 2]> = self.live.batches.iter().map(|b| [b.x(), b.loss]).collect();
        let epochs = &self.live.epochs;
        let ep = |f: fn(&EpochMetrics) -> f64| epochs.iter().map(|m| [m.epoch as f64, f(m)]).collect::<Vec<_>>();
        Plot::new("loss_plot").height(h).legend(Legend::default()).x_axis_label("epoch").show(ui, |p| {
            p.line(Line::new("batch loss (raw)", PlotPoints::from(batch_loss.clone())).color(SKY.gamma_multiply(0.35)));
            p.line(
                Line::new("batch loss (smoothed)", PlotPoints::from(smooth(&batch_loss, self.smoothing))).color(BLUE),
            );
            p.line(Line::new("train loss", PlotPoints::from(ep(|m| m.train_loss))).color(ORANGE).width(2.0));
            p.line(Line::new("validation loss", PlotPoints::from(ep(|m| m.val_loss))).color(GREEN).width(2.0));
            for (id, ms) in &self.compared {
                p.line(Line::new(
                    format!("{id} val loss"),
                    PlotPoints::from(ms.iter().map(|m| [m.epoch as f64, m.val_loss]).collect::<Vec<_>>()),
                ));
            }
        });
        Plot::new("acc_plot")
            .height(h)
            .legend(Legend::default())
            .x_axis_label("epoch")
            .include_y(0.0)
            .include_y(1.0)
            .show(ui, |p| {
                p.line(Line::new("val top-1", PlotPoints::from(ep(|m| m.val_acc))).color(VERMILLION).width(2.0));
                p.line(Line::new("val top-3", PlotPoints::from(ep(|m| m.val_top3))).color(PURPLE).width(2.0));
                for (id, ms) in &self.compared {
                    p.line(Line::new(
                        format!("{id} val top-1"),
                        PlotPoints::from(ms.iter().map(|m| [m.epoch as f64, m.val_acc]).collect::<Vec<_>>()),
                    ));
                }
            });
        // Schedules divide the rate by 10 at a time: on a linear axis every later epoch reads 0.
        let log_lr: Vec<[f64; 2]> =
            ep(|m| m.lr).into_iter().filter(|p| p[1] > 0.0).map(|[x, y]| [x, y.log10()]).collect();
        Plot::new("lr_plot")
            .height(h)
            .legend(Legend::default())
            .x_axis_label("epoch")
            .y_axis_label("learning rate (log)")
            .y_axis_formatter(|m, _| lr_tick(m.value))
            .label_formatter(|pos| match pos {
                egui_plot::HoverPosition::NearDataPoint { position: p, .. } => {
                    Some(format!("epoch {:.0}: lr {:.2e}", p.x, 10f64.powf(p.y)))
                }
                _ => None,
            })
            .show(ui, |p| {
                p.line(Line::new("learning rate", PlotPoints::from(log_lr)).color(YELLOW).width(2.0));
            });
    }
}
