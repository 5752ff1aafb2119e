//! Seeds for every random stream (weights, shuffles, crops, dropout masks), derived from a
//! run's seed, so a run can be repeated and resumed exactly.

/// Mixes numbers into one seed (splitmix64), so each epoch, batch and image has its own stream.
pub fn mix_seed(parts: &[u64]) -> u64 {
    let mut h: u64 = 0x243F6A8885A308D3;
    for &p in parts {
        let mut z = h ^ p.wrapping_add(0x9E3779B97F4A7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        h = z ^ (z >> 31);
    }
    h
}
