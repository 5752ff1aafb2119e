//! The Curation view.
use super::app::Shared;

#[derive(Default)]
pub struct CurationView {}

impl CurationView {
    pub fn ui(&mut self, ui: &mut egui::Ui, _shared: &mut Shared) {
        ui.heading("Curation");
        ui.label("This view is not built yet in this version.");
    }
}
