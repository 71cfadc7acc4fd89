//! A coarse per-pool clock, so that the checkout path reads no system clock.
//!
//! `Instant::now()` costs ~25 ns here, a quarter of a whole get-and-return.
//! Idle times only need the resolution of the maintenance tick, so the pool
//! keeps a millisecond counter that the maintenance green thread (and anything
//! else that reads the real clock anyway) refreshes; reading it is one relaxed
//! atomic load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Milliseconds since the pool's epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Millis(u64);

impl Millis {
    /// `self + d`, saturating.
    pub fn plus(self, d: Duration) -> Millis {
        Millis(
            self.0
                .saturating_add(d.as_millis().min(u64::MAX as u128) as u64),
        )
    }

    /// How long after `earlier` this is (zero if it is not later).
    pub fn since(self, earlier: Millis) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

pub(crate) struct CoarseClock {
    epoch: Instant,
    now_ms: AtomicU64,
}

impl CoarseClock {
    pub fn new() -> Self {
        CoarseClock {
            epoch: Instant::now(),
            now_ms: AtomicU64::new(0),
        }
    }

    /// The time as of the last refresh: behind the real time by at most the
    /// maintenance tick.
    pub fn now(&self) -> Millis {
        Millis(self.now_ms.load(Ordering::Relaxed))
    }

    /// Read the real clock, publish it, and return it. Never goes backwards.
    pub fn refresh(&self) -> Millis {
        let ms = self.epoch.elapsed().as_millis().min(u64::MAX as u128) as u64;
        let prev = self.now_ms.fetch_max(ms, Ordering::Relaxed);
        Millis(prev.max(ms))
    }
}

/// Lets something happen at most once per period (the first time at
/// once): log lines about a condition that can repeat thousands of times a
/// second.
pub(crate) struct RateLimit {
    epoch: Instant,
    every: Duration,
    /// When it last happened, in milliseconds since `epoch`, plus one (0:
    /// never).
    last: AtomicU64,
}

impl RateLimit {
    pub fn new(every: Duration) -> Self {
        RateLimit {
            epoch: Instant::now(),
            every,
            last: AtomicU64::new(0),
        }
    }

    /// True if the period has passed since the last `true` (or this is the
    /// first call); reads the real clock.
    pub fn allow(&self) -> bool {
        let now = self.epoch.elapsed().as_millis().min(u64::MAX as u128 - 1) as u64 + 1;
        let last = self.last.load(Ordering::Relaxed);
        let due = last == 0 || Duration::from_millis(now - last.min(now)) >= self.every;
        due && self
            .last
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

/// `Instant::now() + d`, or `None` if that is past what an `Instant` holds.
pub(crate) fn deadline_after(d: Duration) -> Option<Instant> {
    Instant::now().checked_add(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_moves_forward_and_now_follows() {
        let c = CoarseClock::new();
        let a = c.refresh();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(c.now(), a, "now() is the last refresh");
        let b = c.refresh();
        assert!(b.since(a) >= Duration::from_millis(5));
        assert_eq!(a.since(b), Duration::ZERO);
        assert_eq!(
            a.plus(Duration::from_millis(7)).since(a),
            Duration::from_millis(7)
        );
    }

    #[test]
    fn rate_limit_allows_the_first_then_once_per_period() {
        let r = RateLimit::new(Duration::from_millis(30));
        assert!(r.allow());
        assert!(!r.allow());
        std::thread::sleep(Duration::from_millis(35));
        assert!(r.allow());
        assert!(!r.allow());
    }
}
