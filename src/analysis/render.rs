//! The culture map's two figures drawn into one PNG without a window: the ForceAtlas2 map
//! (left) and the chord diagram (right). tiny-skia draws anti-aliased shapes; ab_glyph renders
//! labels with the font egui ships, so no system font is needed.
use super::culture_map::CultureMap;
use super::palette::culture_color;
use ab_glyph::{Font, FontRef, PxScale, ScaleFont};
use tiny_skia::{Color, FillRule, Paint, PathBuilder, Pixmap, Stroke, Transform};

const W: u32 = 1600;
const H: u32 = 820;

fn paint(rgb: [u8; 3], alpha: u8) -> Paint<'static> {
    let mut p = Paint::default();
    p.set_color(Color::from_rgba8(rgb[0], rgb[1], rgb[2], alpha));
    p.anti_alias = true;
    p
}

fn text(pix: &mut Pixmap, s: &str, x: f32, y: f32, size: f32, rgb: [u8; 3], centred: bool) {
    let Ok(font) = FontRef::try_from_slice(epaint_default_fonts::UBUNTU_LIGHT) else { return };
    let scaled = font.as_scaled(PxScale::from(size));
    let width: f32 = s.chars().map(|c| scaled.h_advance(font.glyph_id(c))).sum();
    let mut pen = if centred { x - width / 2.0 } else { x };
    let (pw, ph) = (pix.width() as i32, pix.height() as i32);
    let data = pix.data_mut();
    for c in s.chars() {
        let id = font.glyph_id(c);
        let glyph = id.with_scale_and_position(PxScale::from(size), ab_glyph::point(pen, y));
        pen += scaled.h_advance(id);
        if let Some(outlined) = font.outline_glyph(glyph) {
            let b = outlined.px_bounds();
            outlined.draw(|gx, gy, cov| {
                let (px, py) = (b.min.x as i32 + gx as i32, b.min.y as i32 + gy as i32);
                if px < 0 || py < 0 || px >= pw || py >= ph {
                    return;
                }
                let i = ((py * pw + px) * 4) as usize;
                for k in 0..3 {
                    let bg = data[i + k] as f32;
                    data[i + k] = (bg + (rgb[k] as f32 - bg) * cov.min(1.0)).round() as u8;
                }
            });
        }
    }
}

fn circle(pix: &mut Pixmap, x: f32, y: f32, r: f32, rgb: [u8; 3]) {
    if let Some(path) = PathBuilder::from_circle(x, y, r) {
        pix.fill_path(&path, &paint(rgb, 255), FillRule::Winding, Transform::identity(), None);
        let stroke = Stroke { width: 1.5, ..Default::default() };
        pix.stroke_path(&path, &paint([40, 40, 40], 255), &stroke, Transform::identity(), None);
    }
}

/// Renders both figures.
pub fn culture_map_png(m: &CultureMap) -> image::RgbaImage {
    let mut pix = Pixmap::new(W, H).expect("non-zero size");
    pix.fill(Color::WHITE);
    let k = m.cultures.len();
    text(&mut pix, "Culture map (ForceAtlas2 of mean embeddings)", 400.0, 34.0, 24.0, [20, 20, 20], true);
    text(&mut pix, "Normalised similarity, top quartile (chord diagram)", 1200.0, 34.0, 24.0, [20, 20, 20], true);
    if k == 0 {
        return image::RgbaImage::from_raw(W, H, pix.data().to_vec()).expect("buffer size");
    }
    // Left: positions fitted into a 700 x 700 box.
    let (mut lo, mut hi) = ([f64::INFINITY; 2], [f64::NEG_INFINITY; 2]);
    for p in &m.positions {
        for d in 0..2 {
            lo[d] = lo[d].min(p[d]);
            hi[d] = hi[d].max(p[d]);
        }
    }
    let span = (hi[0] - lo[0]).max(hi[1] - lo[1]).max(1e-9);
    let to_px =
        |p: [f64; 2]| (60.0 + ((p[0] - lo[0]) / span * 680.0) as f32, 90.0 + ((p[1] - lo[1]) / span * 680.0) as f32);
    let idx = |name: &str| m.cultures.iter().position(|c| c == name).unwrap_or(0);
    let max_s = m.chords.iter().map(|c| c.similarity).fold(1e-9, f64::max);
    for c in &m.chords {
        let (a, b) = (to_px(m.positions[idx(&c.from)]), to_px(m.positions[idx(&c.to)]));
        let mut pb = PathBuilder::new();
        pb.move_to(a.0, a.1);
        pb.line_to(b.0, b.1);
        if let Some(path) = pb.finish() {
            let stroke = Stroke { width: (1.0 + 5.0 * c.similarity / max_s) as f32, ..Default::default() };
            pix.stroke_path(&path, &paint([120, 120, 120], 120), &stroke, Transform::identity(), None);
        }
    }
    let max_count = m.counts.iter().copied().max().unwrap_or(1).max(1) as f32;
    for (i, name) in m.cultures.iter().enumerate() {
        let (x, y) = to_px(m.positions[i]);
        let r = 10.0 + 26.0 * (m.counts[i] as f32 / max_count).sqrt();
        circle(&mut pix, x, y, r, culture_color(name));
        text(&mut pix, &format!("{name} ({})", m.counts[i]), x, y - r - 6.0, 18.0, [20, 20, 20], true);
    }
    // Right: chord diagram.
    let (cx, cy, radius) = (1200.0f32, 440.0f32, 300.0f32);
    let angle = |i: usize| -std::f32::consts::FRAC_PI_2 + i as f32 * std::f32::consts::TAU / k as f32;
    let point = |i: usize, r: f32| (cx + r * angle(i).cos(), cy + r * angle(i).sin());
    for c in &m.chords {
        let (i, j) = (idx(&c.from), idx(&c.to));
        let ((ax, ay), (bx, by)) = (point(i, radius - 12.0), point(j, radius - 12.0));
        let mut pb = PathBuilder::new();
        pb.move_to(ax, ay);
        pb.quad_to(cx, cy, bx, by);
        if let Some(path) = pb.finish() {
            let stroke = Stroke { width: (2.0 + 14.0 * c.similarity / max_s) as f32, ..Default::default() };
            pix.stroke_path(&path, &paint(culture_color(&c.from), 150), &stroke, Transform::identity(), None);
        }
    }
    for (i, name) in m.cultures.iter().enumerate() {
        let (x, y) = point(i, radius);
        circle(&mut pix, x, y, 11.0, culture_color(name));
        let (lx, ly) = point(i, radius + 34.0);
        text(&mut pix, name, lx, ly + 6.0, 18.0, [20, 20, 20], true);
    }
    text(
        &mut pix,
        &format!("threshold {:.3}; similarity is not symmetric (rows sum to 1)", m.threshold),
        1200.0,
        800.0,
        16.0,
        [90, 90, 90],
        true,
    );
    image::RgbaImage::from_raw(W, H, pix.data().to_vec()).expect("buffer size")
}

/// A tick label precise enough to tell ticks `span` apart (learning rates need exponents).
fn tick_label(v: f64, span: f64) -> String {
    if v != 0.0 && (v.abs() < 1e-2 || span < 1e-3) { format!("{v:.2e}") } else { format!("{v:.3}") }
}

/// One line of a chart: name, colour and (x, y) points.
pub struct Series<'a> {
    pub name: &'a str,
    pub color: [u8; 3],
    pub points: Vec<[f64; 2]>,
}

/// Line charts stacked vertically, each with its own axes, ticks and legend: a run's loss,
/// accuracy and learning rate as a PNG.
pub fn charts_png(title: &str, charts: &[(&str, Vec<Series<'_>>)]) -> image::RgbaImage {
    let (w, chart_h) = (1200u32, 300u32);
    let h = 60 + chart_h * charts.len().max(1) as u32;
    let mut pix = Pixmap::new(w, h).expect("non-zero size");
    pix.fill(Color::WHITE);
    text(&mut pix, title, w as f32 / 2.0, 34.0, 22.0, [20, 20, 20], true);
    for (ci, (label, series)) in charts.iter().enumerate() {
        let top = 60.0 + ci as f32 * chart_h as f32;
        let (x0, x1, y0, y1) = (90.0f32, w as f32 - 200.0, top + 20.0, top + chart_h as f32 - 50.0);
        let pts = series.iter().flat_map(|s| s.points.iter());
        let (mut xmin, mut xmax, mut ymin, mut ymax) =
            (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
        for p in pts.filter(|p| p[1].is_finite()) {
            xmin = xmin.min(p[0]);
            xmax = xmax.max(p[0]);
            ymin = ymin.min(p[1]);
            ymax = ymax.max(p[1]);
        }
        if !xmin.is_finite() {
            continue;
        }
        if xmax - xmin < 1e-12 {
            xmax = xmin + 1.0;
        }
        if ymax - ymin < 1e-12 {
            ymax = ymin + 1.0;
        }
        let sx = |x: f64| x0 + ((x - xmin) / (xmax - xmin)) as f32 * (x1 - x0);
        let sy = |y: f64| y1 - ((y - ymin) / (ymax - ymin)) as f32 * (y1 - y0);
        let axis = Stroke { width: 1.0, ..Default::default() };
        let mut pb = PathBuilder::new();
        pb.move_to(x0, y0);
        pb.line_to(x0, y1);
        pb.line_to(x1, y1);
        if let Some(p) = pb.finish() {
            pix.stroke_path(&p, &paint([60, 60, 60], 255), &axis, Transform::identity(), None);
        }
        for k in 0..=4 {
            let y = ymin + (ymax - ymin) * k as f64 / 4.0;
            text(&mut pix, &tick_label(y, ymax - ymin), x0 - 8.0 - 60.0, sy(y) + 5.0, 13.0, [80, 80, 80], false);
            // Epochs are whole numbers: ticks at integers only.
            let x = (xmin + (xmax - xmin) * k as f64 / 4.0).round();
            text(&mut pix, &format!("{x:.0}"), sx(x), y1 + 18.0, 13.0, [80, 80, 80], true);
        }
        text(&mut pix, label, (x0 + x1) / 2.0, y1 + 40.0, 15.0, [40, 40, 40], true);
        for (si, s) in series.iter().enumerate() {
            let mut pb = PathBuilder::new();
            for (i, p) in s.points.iter().filter(|p| p[1].is_finite()).enumerate() {
                if i == 0 { pb.move_to(sx(p[0]), sy(p[1])) } else { pb.line_to(sx(p[0]), sy(p[1])) }
            }
            if let Some(p) = pb.finish() {
                let stroke = Stroke { width: 2.0, ..Default::default() };
                pix.stroke_path(&p, &paint(s.color, 255), &stroke, Transform::identity(), None);
            }
            let ly = y0 + 10.0 + si as f32 * 22.0;
            circle(&mut pix, x1 + 20.0, ly - 5.0, 5.0, s.color);
            text(&mut pix, s.name, x1 + 32.0, ly, 14.0, [30, 30, 30], false);
        }
    }
    image::RgbaImage::from_raw(w, h, pix.data().to_vec()).expect("buffer size")
}

/// A run's per-epoch metrics as three charts.
pub fn metrics_png(run: &str, m: &[crate::catalog::EpochMetrics]) -> image::RgbaImage {
    let ep = |f: fn(&crate::catalog::EpochMetrics) -> f64| m.iter().map(|e| [e.epoch as f64, f(e)]).collect::<Vec<_>>();
    charts_png(
        &format!("run {run}"),
        &[
            (
                "loss per epoch",
                vec![
                    Series { name: "train", color: [214, 96, 77], points: ep(|e| e.train_loss) },
                    Series { name: "validation", color: [67, 147, 195], points: ep(|e| e.val_loss) },
                ],
            ),
            (
                "validation accuracy per epoch",
                vec![
                    Series { name: "top-1", color: [90, 174, 97], points: ep(|e| e.val_acc) },
                    Series { name: "top-3", color: [150, 100, 200], points: ep(|e| e.val_top3) },
                ],
            ),
            ("learning rate per epoch", vec![Series { name: "lr", color: [120, 120, 120], points: ep(|e| e.lr) }]),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_chart_draws_lines_in_their_colours() {
        let m: Vec<crate::catalog::EpochMetrics> = (1..=5)
            .map(|e| crate::catalog::EpochMetrics {
                epoch: e,
                train_loss: 2.0 / e as f64,
                val_loss: 2.2 / e as f64,
                val_acc: 0.1 * e as f64,
                val_top3: 0.15 * e as f64,
                lr: 0.01,
                images_per_s: 1.0,
                seconds: 1.0,
            })
            .collect();
        let img = metrics_png("r1", &m);
        assert_eq!(img.dimensions(), (1200, 960));
        let has = |c: [u8; 3]| img.pixels().any(|p| p[0] == c[0] && p[1] == c[1] && p[2] == c[2]);
        assert!(has([214, 96, 77]) && has([67, 147, 195]) && has([90, 174, 97]));
    }
}
