//! The Predict view.
use super::app::Shared;

#[derive(Default)]
pub struct PredictView {}

impl PredictView {
    pub fn ui(&mut self, ui: &mut egui::Ui, _shared: &mut Shared) {
        ui.heading("Predict");
        ui.label("This view is not built yet in this version.");
    }
}
