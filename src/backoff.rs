//! Reconnect delays: exponential backoff with jitter, and the small random
//! source behind every jitter in the crate (lifetimes, retries).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

/// Exponential backoff with jitter: the n-th delay is drawn uniformly from
/// `[d/2, d]` where `d = min(max, min * 2^n)`.
///
/// Kept in microseconds, 24 bytes: every slot carries one, and it moves with
/// the slot on every checkout and return. Delays are capped at
/// `u32::MAX` µs (71 minutes).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    min: u32,
    next: u32,
    max: u32,
    rng: u64,
}

/// `d` in microseconds, capped at `u32::MAX`.
fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        let min = micros(min);
        Backoff {
            min,
            next: min,
            max: micros(max).max(min),
            rng: seed(),
        }
    }

    /// Start again from the shortest delay.
    pub fn reset(&mut self) {
        self.next = self.min;
    }

    /// Go straight to the longest delay.
    pub fn saturate(&mut self) {
        self.next = self.max;
    }

    pub fn next_delay(&mut self) -> Duration {
        let d = Duration::from_micros(u64::from(self.next));
        self.next = self.next.saturating_mul(2).min(self.max);
        let jitter = split_mix(&mut self.rng) as f64 / u64::MAX as f64;
        d.mul_f64(0.5 + 0.5 * jitter).max(Duration::from_millis(1))
    }
}

/// A uniform random number in `[0, 1)`, for jitter only.
pub(crate) fn unit_random() -> f64 {
    let mut s = seed();
    (split_mix(&mut s) >> 11) as f64 / (1u64 << 53) as f64
}

fn seed() -> u64 {
    // RandomState is seeded per process and bumped per instance.
    let mut h = RandomState::new().build_hasher();
    h.write_u64(Instant::now().elapsed().as_nanos() as u64);
    h.finish()
}

fn split_mix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter_in_range() {
        let min = Duration::from_millis(100);
        let max = Duration::from_millis(800);
        let mut b = Backoff::new(min, max);
        let bounds = [100, 200, 400, 800, 800, 800];
        for hi in bounds {
            let d = b.next_delay();
            let hi = Duration::from_millis(hi);
            assert!(
                d >= hi / 2 && d <= hi,
                "{d:?} not in [{:?}, {hi:?}]",
                hi / 2
            );
        }
    }

    #[test]
    fn unit_random_is_in_range() {
        for _ in 0..1000 {
            let x = unit_random();
            assert!((0.0..1.0).contains(&x));
        }
    }
}
