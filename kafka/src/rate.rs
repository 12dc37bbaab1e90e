//! A token bucket that shapes replication traffic: senders wait for tokens
//! instead of being refused.

use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Allows `rate` tokens (events, bytes) per second on average and `burst`
/// at once.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket. `rate` and `burst` are clamped to at least 1.
    pub fn new(rate_per_sec: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate: f64::from(rate_per_sec.max(1)),
            burst,
            state: Mutex::new(State {
                tokens: burst,
                at: Instant::now(),
            }),
        }
    }

    /// Waits until `n` tokens are available and takes them. Requests larger
    /// than the burst take the whole bucket and go into debt, so a big batch
    /// still goes through at the configured average rate. Callers are served
    /// in order (the lock is fair).
    /// Returns whether it had to wait.
    pub async fn acquire(&self, n: u32) -> bool {
        let mut state = self.state.lock().await;
        let now = Instant::now();
        let elapsed = now.duration_since(state.at).as_secs_f64();
        state.tokens = (state.tokens + elapsed * self.rate).min(self.burst);
        state.at = now;
        state.tokens -= f64::from(n);
        if state.tokens < 0.0 {
            let wait = Duration::from_secs_f64(-state.tokens / self.rate);
            // Holding the lock while waiting keeps later callers behind this one.
            tokio::time::sleep(wait).await;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waits_for_tokens_at_the_configured_rate() {
        let bucket = TokenBucket::new(100, 10);
        let start = Instant::now();
        assert!(!bucket.acquire(10).await, "the burst is free");
        assert_eq!(start.elapsed(), Duration::ZERO, "the burst is free");
        for _ in 0..50 {
            assert!(bucket.acquire(1).await, "an empty bucket waits");
        }
        // 50 more at 100/s: half a second of (virtual) time.
        let waited = start.elapsed().as_secs_f64();
        assert!((waited - 0.5).abs() < 0.01, "{waited}");
        bucket.acquire(200).await;
        let waited = start.elapsed().as_secs_f64();
        assert!(
            (waited - 2.5).abs() < 0.01,
            "a large batch pays its debt: {waited}"
        );
    }
}
