//! A 2-D projection of the works' embeddings by principal components (power iteration with
//! deflation: two components of a few thousand vectors need no linear-algebra crate).

/// Projects rows onto their first two principal components.
pub fn project_2d(rows: &[Vec<f32>]) -> Vec<[f32; 2]> {
    let n = rows.len();
    if n == 0 {
        return Vec::new();
    }
    let dim = rows[0].len();
    let mut mean = vec![0f64; dim];
    for r in rows {
        for (m, x) in mean.iter_mut().zip(r) {
            *m += *x as f64 / n as f64;
        }
    }
    let centred: Vec<Vec<f64>> =
        rows.iter().map(|r| r.iter().zip(&mean).map(|(x, m)| *x as f64 - m).collect()).collect();
    let mut comps: Vec<Vec<f64>> = Vec::new();
    for c in 0..2 {
        // Deterministic start, not orthogonal to typical data.
        let mut v: Vec<f64> = (0..dim).map(|i| 1.0 + ((i * 7 + c * 13) % 17) as f64 / 17.0).collect();
        for _ in 0..200 {
            // w = X^T (X v), minus the earlier components.
            let xv: Vec<f64> = centred.iter().map(|r| r.iter().zip(&v).map(|(a, b)| a * b).sum()).collect();
            let mut w = vec![0f64; dim];
            for (r, s) in centred.iter().zip(&xv) {
                for (wi, ri) in w.iter_mut().zip(r) {
                    *wi += ri * s;
                }
            }
            for p in &comps {
                let d: f64 = w.iter().zip(p).map(|(a, b)| a * b).sum();
                w.iter_mut().zip(p).for_each(|(a, b)| *a -= d * b);
            }
            let norm = w.iter().map(|x| x * x).sum::<f64>().sqrt();
            if norm < 1e-300 {
                break;
            }
            v = w.into_iter().map(|x| x / norm).collect();
        }
        comps.push(v);
    }
    centred
        .iter()
        .map(|r| {
            let p = |c: &Vec<f64>| r.iter().zip(c).map(|(a, b)| a * b).sum::<f64>() as f32;
            [p(&comps[0]), p(&comps[1])]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_direction_of_largest_spread() {
        // Points along (1, 1, 0) with a little spread along (0, 0, 1).
        let rows: Vec<Vec<f32>> = (0..50)
            .map(|i| {
                let t = i as f32 - 25.0;
                vec![t, t, 0.1 * ((i % 5) as f32 - 2.0)]
            })
            .collect();
        let p = project_2d(&rows);
        let first_spread = p.iter().map(|q| q[0].abs()).fold(0f32, f32::max);
        let second_spread = p.iter().map(|q| q[1].abs()).fold(0f32, f32::max);
        assert!(first_spread > 30.0 && second_spread < 0.5, "{first_spread} {second_spread}");
    }
}
