//! Confidence bounds for a share counted in a small sample: a minute that has only just begun
//! holds a handful of requests, and 6 retries out of 20 is weak evidence of a 25 % retry share.

/// The Wilson score interval's lower bound for `hits` out of `n` at normal quantile `z`
/// (1.645: one-sided 95 %). 0 when `n` is 0.
pub fn wilson_lower(hits: u64, n: u64, z: f64) -> f64 {
    if n == 0 {
        return 0.0;
    }
    let n = n as f64;
    let p = (hits as f64 / n).min(1.0);
    let z2 = z * z;
    let centre = p + z2 / (2.0 * n);
    let margin = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - margin) / (1.0 + z2 / n)).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // 50 of 100 at 95 %: the textbook interval [0.4038, 0.5962].
        assert!((wilson_lower(50, 100, 1.96) - 0.4038).abs() < 5e-4);
        // 6 of 20 at one-sided 95 %: 0.1639 (the formula evaluated independently).
        assert!((wilson_lower(6, 20, 1.645) - 0.1639).abs() < 5e-4);
        assert_eq!(wilson_lower(0, 10, 1.645), 0.0);
        assert_eq!(wilson_lower(3, 0, 1.645), 0.0);
    }

    #[test]
    fn the_bound_stays_below_the_share_and_tightens_with_more_data() {
        for n in [1u64, 5, 20, 100, 1000] {
            for hits in [0, n / 4, n / 2, n] {
                let lb = wilson_lower(hits, n, 1.645);
                assert!(lb <= hits as f64 / n as f64 + 1e-12, "{hits}/{n}: {lb}");
                assert!((0.0..=1.0).contains(&lb));
            }
        }
        let small = wilson_lower(10, 40, 1.645);
        let large = wilson_lower(250, 1000, 1.645);
        assert!(small < large && large < 0.25);
    }
}
