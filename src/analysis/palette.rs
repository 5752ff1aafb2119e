//! Colours of cultures and regions, shared by the app and the rendered figures.

/// The region a culture belongs to (the study's clusters: Asian, European, North American).
pub fn region(culture: &str) -> &'static str {
    match culture {
        "American" | "Canadian" | "Mexican" => "North American",
        "Chinese" | "Japanese" | "Indian" | "Korean" | "Tibetan" | "Nepalese" | "Persian" | "Thai" | "Indonesian" => {
            "Asian"
        }
        "British" | "Dutch" | "Flemish" | "French" | "German" | "Italian" | "Spanish" | "Russian" | "Swiss"
        | "Danish" | "Swedish" | "Norwegian" | "Irish" => "European",
        _ => "Other",
    }
}

/// A colour per region, with cultures of a region in nearby shades.
pub fn culture_color(culture: &str) -> [u8; 3] {
    let shade = (culture.bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32)) % 5) as i32 - 2;
    let base: [i32; 3] = match region(culture) {
        "North American" => [214, 96, 77],
        "Asian" => [67, 147, 195],
        "European" => [90, 174, 97],
        _ => [150, 150, 150],
    };
    base.map(|c| (c + shade * 18).clamp(0, 255) as u8)
}
