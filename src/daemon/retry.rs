//! Retry schedules: exponential backoff with a cap and a give-up time, and
//! jitter so that agents which failed together do not retry together.

use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use super::FAR;

/// A retry schedule with exponential backoff.
#[derive(Debug, Clone, Copy)]
pub(super) struct Retry {
    since: Instant,
    pub(super) next: Instant,
    step: Duration,
}

impl Retry {
    pub(super) fn new(now: Instant, first: Duration) -> Retry {
        Retry {
            since: now,
            next: now + first,
            step: first,
        }
    }

    /// Called when `next` has passed: schedules the following attempt.
    pub(super) fn advance(&mut self, now: Instant, max: Duration, give_up: Duration) {
        self.step = (self.step * 2).min(max);
        self.next = if now.duration_since(self.since) > give_up {
            now + FAR
        } else {
            now + self.step
        };
    }
}

/// `d` ± 20 %, so agents on many hosts that failed together do not retry
/// together.
pub(super) fn jitter(d: Duration) -> Duration {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    let r = (h.finish() % 401) as f64 / 1000.0; // 0.0 ..= 0.4
    d.mul_f64(0.8 + r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::{LAG_FIRST_RETRY, LAG_GIVE_UP, LAG_MAX_RETRY};

    #[test]
    fn retry_backs_off_to_its_cap_and_gives_up() {
        let t0 = Instant::now();
        let mut r = Retry::new(t0, LAG_FIRST_RETRY);
        assert_eq!(r.next, t0 + Duration::from_millis(10));
        let mut steps = Vec::new();
        let mut now = r.next;
        for _ in 0..7 {
            r.advance(now, LAG_MAX_RETRY, LAG_GIVE_UP);
            steps.push(r.next - now);
            now = r.next;
        }
        let ms: Vec<u128> = steps.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, [20, 40, 80, 160, 320, 640, 1000]);
        r.advance(
            t0 + LAG_GIVE_UP + Duration::from_secs(1),
            LAG_MAX_RETRY,
            LAG_GIVE_UP,
        );
        assert!(r.next > t0 + LAG_GIVE_UP + Duration::from_secs(60));
    }

    #[test]
    fn jitter_stays_within_a_fifth() {
        for _ in 0..100 {
            let j = jitter(Duration::from_secs(1));
            assert!(j >= Duration::from_millis(800) && j <= Duration::from_millis(1200));
        }
    }
}
