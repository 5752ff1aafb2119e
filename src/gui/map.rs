//! The Map view.
use super::app::Shared;

#[derive(Default)]
pub struct MapView {}

impl MapView {
    pub fn ui(&mut self, ui: &mut egui::Ui, _shared: &mut Shared) {
        ui.heading("Map");
        ui.label("This view is not built yet in this version.");
    }
}
