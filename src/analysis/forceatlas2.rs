//! ForceAtlas2 (Jacomy, Venturini, Heymann, Bastian 2014), written here because the Rust crate
//! needs nightly and is AGPL. Linear attraction along weighted edges (or LinLog), repulsion
//! proportional to (degree + 1) products, gravity towards the centre, and the adaptive global
//! speed with per-node swinging of Gephi's implementation. Graphs here are tiny (11 cultures),
//! so forces are computed exactly (no Barnes-Hut).
use rand::{Rng, SeedableRng};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fa2Settings {
    pub scaling: f64,
    pub gravity: f64,
    pub strong_gravity: bool,
    pub lin_log: bool,
    /// Exponent applied to edge weights.
    pub edge_weight_influence: f64,
    pub jitter_tolerance: f64,
    pub max_iterations: usize,
}

impl Default for Fa2Settings {
    fn default() -> Self {
        Self {
            scaling: 10.0,
            gravity: 1.0,
            strong_gravity: false,
            lin_log: false,
            edge_weight_influence: 1.0,
            jitter_tolerance: 1.0,
            max_iterations: 3000,
        }
    }
}

/// A running layout: call [`Layout::step`] repeatedly (the GUI runs a few steps per frame, so
/// dragging a node continues the layout from there).
#[derive(Debug, Clone)]
pub struct Layout {
    pub pos: Vec<[f64; 2]>,
    /// Symmetric weights, row-major n x n (0: no edge).
    weights: Vec<f64>,
    mass: Vec<f64>,
    old_force: Vec<[f64; 2]>,
    speed: f64,
    speed_efficiency: f64,
    pub settings: Fa2Settings,
    pub iterations: usize,
    /// Nodes held in place (being dragged).
    pub pinned: Vec<bool>,
}

impl Layout {
    /// Starts from seeded random positions.
    pub fn new(weights: Vec<f64>, n: usize, settings: Fa2Settings, seed: u64) -> Self {
        assert_eq!(weights.len(), n * n, "weights must be n x n");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let pos = (0..n).map(|_| [rng.random_range(-1.0..1.0) * 10.0, rng.random_range(-1.0..1.0) * 10.0]).collect();
        let mass =
            (0..n).map(|i| 1.0 + (0..n).filter(|&j| j != i && weights[i * n + j] > 0.0).count() as f64).collect();
        Self {
            pos,
            weights,
            mass,
            old_force: vec![[0.0; 2]; n],
            speed: 1.0,
            speed_efficiency: 1.0,
            settings,
            iterations: 0,
            pinned: vec![false; n],
        }
    }

    #[allow(clippy::needless_range_loop)] // pairs (i, j) index positions, masses and weights
    fn forces(&self) -> Vec<[f64; 2]> {
        let n = self.pos.len();
        let s = &self.settings;
        let mut f = vec![[0.0f64; 2]; n];
        for i in 0..n {
            for j in (i + 1)..n {
                let (dx, dy) = (self.pos[i][0] - self.pos[j][0], self.pos[i][1] - self.pos[j][1]);
                let d2 = (dx * dx + dy * dy).max(1e-12);
                // Repulsion: k_r (deg+1)(deg+1) / d, along the unit vector.
                let r = s.scaling * self.mass[i] * self.mass[j] / d2;
                f[i][0] += dx * r;
                f[i][1] += dy * r;
                f[j][0] -= dx * r;
                f[j][1] -= dy * r;
                let w = self.weights[i * n + j];
                if w > 0.0 {
                    let w = w.powf(s.edge_weight_influence);
                    let d = d2.sqrt();
                    // Attraction: w * d (linear) or w * log(1 + d) (LinLog), along the unit vector.
                    let a = if s.lin_log { w * (1.0 + d).ln() / d } else { w };
                    f[i][0] -= dx * a;
                    f[i][1] -= dy * a;
                    f[j][0] += dx * a;
                    f[j][1] += dy * a;
                }
            }
        }
        for (i, fi) in f.iter_mut().enumerate() {
            let [x, y] = self.pos[i];
            let d = (x * x + y * y).sqrt().max(1e-12);
            let g = if s.strong_gravity { s.gravity * self.mass[i] } else { s.gravity * self.mass[i] / d };
            fi[0] -= x * g;
            fi[1] -= y * g;
        }
        f
    }

    /// One iteration; returns the largest displacement.
    #[allow(clippy::needless_range_loop)] // i indexes positions, masses, forces and old forces together
    pub fn step(&mut self) -> f64 {
        let n = self.pos.len();
        if n == 0 {
            return 0.0;
        }
        let f = self.forces();
        let norm = |v: [f64; 2]| (v[0] * v[0] + v[1] * v[1]).sqrt();
        let (mut swinging, mut traction) = (0.0, 0.0);
        for i in 0..n {
            let o = self.old_force[i];
            swinging += self.mass[i] * norm([f[i][0] - o[0], f[i][1] - o[1]]);
            traction += self.mass[i] * 0.5 * norm([f[i][0] + o[0], f[i][1] + o[1]]);
        }
        // Gephi's adaptive speed.
        let estimated_jt = 0.05 * (n as f64).sqrt();
        let (min_jt, max_jt): (f64, f64) = (estimated_jt.sqrt(), 10.0);
        let mut jt = self.settings.jitter_tolerance * min_jt.max(max_jt.min(estimated_jt * traction / (n * n) as f64));
        let min_efficiency = 0.05;
        if traction > 0.0 && swinging / traction > 2.0 {
            if self.speed_efficiency > min_efficiency {
                self.speed_efficiency *= 0.5;
            }
            jt = jt.max(self.settings.jitter_tolerance);
        }
        let target = if swinging > 0.0 { jt * self.speed_efficiency * traction / swinging } else { self.speed * 2.0 };
        if swinging > jt * traction {
            if self.speed_efficiency > min_efficiency {
                self.speed_efficiency *= 0.7;
            }
        } else if self.speed < 1000.0 {
            self.speed_efficiency *= 1.3;
        }
        self.speed += (target - self.speed).min(0.5 * self.speed);
        let mut max_move: f64 = 0.0;
        for i in 0..n {
            let o = self.old_force[i];
            let swing = self.mass[i] * norm([f[i][0] - o[0], f[i][1] - o[1]]);
            let mut factor = self.speed / (1.0 + (self.speed * swing).sqrt());
            // Gephi caps a node's displacement at 10 units per step.
            let fl = norm(f[i]);
            if fl * factor > 10.0 {
                factor = 10.0 / fl;
            }
            if !self.pinned[i] {
                self.pos[i][0] += f[i][0] * factor;
                self.pos[i][1] += f[i][1] * factor;
                max_move = max_move.max(fl * factor);
            }
        }
        self.old_force = f;
        self.iterations += 1;
        max_move
    }

    /// Iterates until nodes move less than `tol` per step (relative to the layout's size) or the
    /// iteration limit. Returns whether it converged.
    pub fn run(&mut self, tol: f64) -> bool {
        for _ in 0..self.settings.max_iterations {
            let moved = self.step();
            let extent = self.pos.iter().map(|p| p[0].abs().max(p[1].abs())).fold(1e-9, f64::max);
            if moved < tol * extent {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_clusters() -> (Vec<f64>, usize) {
        // Nodes 0-3 and 4-7: strong edges inside a cluster, weak across.
        let n = 8;
        let mut w = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                if i != j {
                    w[i * n + j] = if (i < 4) == (j < 4) { 1.0 } else { 0.02 };
                }
            }
        }
        (w, n)
    }

    fn dist(a: [f64; 2], b: [f64; 2]) -> f64 {
        ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt()
    }

    #[test]
    fn separated_clusters_stay_separated_from_any_start() {
        let (w, n) = two_clusters();
        for seed in 0..5 {
            let mut l = Layout::new(w.clone(), n, Fa2Settings::default(), seed);
            assert!(l.run(1e-4), "seed {seed}: did not converge in {} iterations", l.iterations);
            let mut inside: f64 = 0.0;
            let mut across = f64::INFINITY;
            for i in 0..n {
                for j in (i + 1)..n {
                    let d = dist(l.pos[i], l.pos[j]);
                    if (i < 4) == (j < 4) { inside = inside.max(d) } else { across = across.min(d) }
                }
            }
            assert!(
                across > inside,
                "seed {seed}: closest pair across clusters {across:.3} <= widest inside {inside:.3}"
            );
        }
    }

    #[test]
    fn pinned_nodes_do_not_move() {
        let (w, n) = two_clusters();
        let mut l = Layout::new(w, n, Fa2Settings { lin_log: true, ..Default::default() }, 3);
        l.pinned[2] = true;
        let before = l.pos[2];
        for _ in 0..50 {
            l.step();
        }
        assert_eq!(l.pos[2], before);
    }
}
