//! HML's resampled support set: which support ratings an initialisation adapts on and which it
//! is scored on when choosing the initialisation. The device has no query labels, so the split is
//! a deterministic shuffle of the support positions that the trainer uses too (it calls this).

use alloc::vec;
use alloc::vec::Vec;

/// Share of the support set adapted on; the rest scores the candidates.
const ADAPT_SHARE_PERCENT: usize = 80;

/// SplitMix64: a tiny, well-mixed generator that needs no std.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// For `n` support ratings (in insertion order), `(adapt, score)` masks: a seeded shuffle puts
/// round(0.8·n) ratings (at least 1, at most n − 1) in the adapt part and the rest in the score
/// part; a single rating is in both.
pub fn split(n: usize) -> (Vec<bool>, Vec<bool>) {
    split_salted(n, 0)
}

/// [`split`] with the shuffle's seed mixed with `salt` (0 gives [`split`]'s parts). A device's
/// federated contribution salts it with the model id, so the parts change from round to round.
pub fn split_salted(n: usize, salt: u64) -> (Vec<bool>, Vec<bool>) {
    let (mut adapt, mut score) = (vec![false; n], vec![false; n]);
    if n == 1 {
        return (vec![true], vec![true]);
    }
    let mut order: Vec<usize> = (0..n).collect();
    let mut state = 0x006d_6574_6172_6563_u64 ^ n as u64 ^ salt;
    for i in (1..n).rev() {
        let j = (splitmix64(&mut state) % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    let n_adapt = ((n * ADAPT_SHARE_PERCENT + 50) / 100).clamp(1, n.saturating_sub(1).max(1));
    for (rank, &position) in order.iter().enumerate() {
        if rank < n_adapt {
            adapt[position] = true;
        } else {
            score[position] = true;
        }
    }
    (adapt, score)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_disjoint_and_cover_the_support() {
        assert_eq!(split(0), (vec![], vec![]));
        assert_eq!(split(1), (vec![true], vec![true]));
        for n in 2..40 {
            let (adapt, score) = split(n);
            assert!(adapt.iter().zip(&score).all(|(a, s)| a ^ s), "n = {n}");
            let adapted = adapt.iter().filter(|&&a| a).count();
            assert!(adapted >= 1 && adapted < n, "n = {n}");
            assert_eq!(adapted, ((n * 80 + 50) / 100).clamp(1, n - 1));
        }
        assert_eq!(split(10), split(10), "deterministic");
        assert_eq!(split_salted(10, 0), split(10));
        assert_ne!(split_salted(20, 0x1234_5678_9abc_def0), split(20), "a salt moves the parts");
        let (adapt, score) = split_salted(20, 0x1234_5678_9abc_def0);
        assert!(adapt.iter().zip(&score).all(|(a, s)| a ^ s));
        assert_eq!(adapt.iter().filter(|&&a| a).count(), 16);
    }
}
