//! The Training view.
use super::app::Shared;

#[derive(Default)]
pub struct TrainingView {}

impl TrainingView {
    pub fn ui(&mut self, ui: &mut egui::Ui, _shared: &mut Shared) {
        ui.heading("Training");
        ui.label("This view is not built yet in this version.");
    }
}
