//! Colours of cultures, shared by the app and the rendered figures: one colour per culture,
//! the same in every view, and the region each culture belongs to (for grouping and legends).

/// CARTO's "Safe" qualitative palette (CARTOColors, Tol-derived, published as colour-blind
/// safe), in its published order. The 11 study groups take the first 11 in alphabetical order;
/// the 12th (grey) is for works without a group.
pub const SAFE: [[u8; 3]; 12] = [
    [0x88, 0xCC, 0xEE],
    [0xCC, 0x66, 0x77],
    [0xDD, 0xCC, 0x77],
    [0x11, 0x77, 0x33],
    [0x33, 0x22, 0x88],
    [0xAA, 0x44, 0x99],
    [0x44, 0xAA, 0x99],
    [0x99, 0x99, 0x33],
    [0x88, 0x22, 0x55],
    [0x66, 0x11, 0x00],
    [0x66, 0x99, 0xCC],
    [0x88, 0x88, 0x88],
];

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

/// A culture's colour: its own palette entry for the study's 11 groups; any other group name
/// gets one of the 11 by a hash of its name (stable across runs), so a user's own groups are
/// coloured too, and an empty name gets grey.
pub fn culture_color(culture: &str) -> [u8; 3] {
    if let Some(i) = crate::culture::STUDY_GROUPS.iter().position(|g| *g == culture) {
        return SAFE[i];
    }
    if culture.is_empty() {
        return SAFE[11];
    }
    let h = culture.bytes().fold(0x811C9DC5u32, |h, b| (h ^ b as u32).wrapping_mul(0x0100_0193));
    SAFE[h as usize % 11]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Simulated colour-vision deficiencies (Machado, Oliveira & Fernandes 2009, severity 1.0),
    /// applied in linear RGB.
    const CVD: [(&str, [[f64; 3]; 3]); 4] = [
        ("normal", [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]),
        (
            "protanopia",
            [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216], [-0.003882, -0.048116, 1.051998]],
        ),
        (
            "deuteranopia",
            [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413], [-0.011820, 0.042940, 0.968881]],
        ),
        (
            "tritanopia",
            [[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602], [0.004733, 0.691367, 0.303900]],
        ),
    ];

    /// sRGB -> CIELAB (D65) after a CVD simulation.
    fn lab(c: [u8; 3], m: &[[f64; 3]; 3]) -> [f64; 3] {
        let lin = c.map(|v| {
            let x = v as f64 / 255.0;
            if x <= 0.04045 { x / 12.92 } else { ((x + 0.055) / 1.055).powf(2.4) }
        });
        let s: Vec<f64> = (0..3).map(|i| (0..3).map(|j| m[i][j] * lin[j]).sum::<f64>().clamp(0.0, 1.0)).collect();
        let xyz = [
            0.4124 * s[0] + 0.3576 * s[1] + 0.1805 * s[2],
            0.2126 * s[0] + 0.7152 * s[1] + 0.0722 * s[2],
            0.0193 * s[0] + 0.1192 * s[1] + 0.9505 * s[2],
        ];
        let f = |t: f64| if t > 0.008856 { t.cbrt() } else { 7.787 * t + 16.0 / 116.0 };
        let (fx, fy, fz) = (f(xyz[0] / 0.95047), f(xyz[1]), f(xyz[2] / 1.08883));
        [116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)]
    }

    #[test]
    fn the_eleven_cultures_stay_apart_for_common_colour_vision_deficiencies() {
        for (name, m) in &CVD {
            let labs: Vec<[f64; 3]> = crate::culture::STUDY_GROUPS.iter().map(|g| lab(culture_color(g), m)).collect();
            for i in 0..labs.len() {
                for j in i + 1..labs.len() {
                    let d = (0..3).map(|k| (labs[i][k] - labs[j][k]).powi(2)).sum::<f64>().sqrt();
                    // CIE76 difference of 10 or more: clearly distinct colours.
                    assert!(
                        d >= 10.0,
                        "{name}: {} and {} differ by only {d:.1}",
                        crate::culture::STUDY_GROUPS[i],
                        crate::culture::STUDY_GROUPS[j]
                    );
                }
            }
        }
    }

    #[test]
    fn every_culture_has_one_stable_colour() {
        assert_eq!(culture_color("French"), SAFE[5]);
        assert_eq!(culture_color("Danish"), culture_color("Danish"));
        assert!(SAFE[..11].contains(&culture_color("Danish")));
        assert_eq!(culture_color(""), SAFE[11]);
        assert_eq!(region("Flemish"), "European");
    }
}
