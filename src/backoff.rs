//! The one retry policy: delays that double from a first step up to a cap,
//! and jitter, so that agents on many hosts that failed together do not
//! retry together. Metadata requests, failed metadata reads, links waiting
//! for their metadata and repair reconciles all use it.

use std::hash::BuildHasher;
use std::time::{Duration, Instant};

/// The delay before attempt `attempt + 1`, `attempt` counting from 1:
/// `first`, then doubled per attempt, never above `cap`.
pub fn doubling(first: Duration, attempt: u32, cap: Duration) -> Duration {
    first
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(cap)
}

/// `d` scaled into `low..high` of itself by `unit` (in [0, 1)): the
/// caller's share of randomness, so that a test can pass a fixed one.
pub fn spread(d: Duration, low: f64, high: f64, unit: f64) -> Duration {
    d.mul_f64(low + (high - low) * unit)
}

/// A number in [0, 1). Each `RandomState` is keyed from OS randomness, which
/// is plenty for spreading retries and needs no random-number crate.
pub fn random_unit() -> f64 {
    let x = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// A retry schedule: the first retry `first` after it starts, each one
/// after twice the last pause up to a cap, and none once it has run longer
/// than its give-up time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    since: Instant,
    /// When to try next; far in the future once given up.
    pub next: Instant,
    step: Duration,
}

/// Stands for "never" where an `Instant` is needed.
pub const NEVER: Duration = Duration::from_secs(3600);

impl Retry {
    pub fn new(now: Instant, first: Duration) -> Retry {
        Retry {
            since: now,
            next: now + first,
            step: first,
        }
    }

    /// When the first attempt was scheduled.
    pub fn since(&self) -> Instant {
        self.since
    }

    /// Called when `next` has passed: schedules the following attempt.
    pub fn advance(&mut self, now: Instant, cap: Duration, give_up: Duration) {
        self.step = (self.step * 2).min(cap);
        self.next = if now.duration_since(self.since) > give_up {
            now + NEVER
        } else {
            now + self.step
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubling_starts_at_the_first_step_and_stops_at_the_cap() {
        let ms = |d: Duration| d.as_millis();
        let first = Duration::from_millis(250);
        let cap = Duration::from_secs(5);
        let steps: Vec<u128> = (1..=7).map(|a| ms(doubling(first, a, cap))).collect();
        assert_eq!(steps, [250, 500, 1000, 2000, 4000, 5000, 5000]);
        assert_eq!(doubling(first, 0, cap), first);
        assert_eq!(doubling(first, u32::MAX, cap), cap);
    }

    #[test]
    fn spread_stays_within_its_bounds() {
        let d = Duration::from_secs(1);
        assert_eq!(spread(d, 0.8, 1.2, 0.0), Duration::from_millis(800));
        assert_eq!(spread(d, 0.5, 1.0, 0.5), Duration::from_millis(750));
        for _ in 0..100 {
            let j = spread(d, 0.8, 1.2, random_unit());
            assert!(j >= Duration::from_millis(800) && j < Duration::from_millis(1200));
        }
    }

    #[test]
    fn jitter_varies() {
        let samples: Vec<f64> = (0..20).map(|_| random_unit()).collect();
        assert!(samples.iter().all(|j| (0.0..1.0).contains(j)));
        assert!(samples.windows(2).any(|w| w[0] != w[1]));
    }

    #[test]
    fn retry_backs_off_to_its_cap_and_gives_up() {
        let t0 = Instant::now();
        let (first, cap, give_up) = (
            Duration::from_millis(10),
            Duration::from_secs(1),
            Duration::from_secs(120),
        );
        let mut r = Retry::new(t0, first);
        assert_eq!(r.next, t0 + Duration::from_millis(10));
        let mut steps = Vec::new();
        let mut now = r.next;
        for _ in 0..7 {
            r.advance(now, cap, give_up);
            steps.push(r.next - now);
            now = r.next;
        }
        let ms: Vec<u128> = steps.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, [20, 40, 80, 160, 320, 640, 1000]);
        r.advance(t0 + give_up + Duration::from_secs(1), cap, give_up);
        assert!(r.next > t0 + give_up + Duration::from_secs(60));
    }
}
