//! A tenant's request rate: a token bucket refilled at `rate` requests per second and
//! holding at most one second's worth, so a tenant may burst to its rate and no
//! further. Concurrency limits alone let a tenant whose requests fail fast (a
//! panicking guest, say) send thousands per second and take the CPU from the others.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub struct RateLimit {
    rate: f64,
    burst: f64,
    bucket: Mutex<(f64, Instant)>,
}

impl RateLimit {
    /// None for a rate of 0 (unlimited).
    pub fn new(per_second: f64) -> Option<Self> {
        (per_second > 0.0).then(|| {
            let burst = per_second.max(1.0);
            Self {
                rate: per_second,
                burst,
                bucket: Mutex::new((burst, Instant::now())),
            }
        })
    }

    /// Takes one request's token, or says how long until one is there.
    pub fn try_take(&self) -> Result<(), Duration> {
        self.take_at(Instant::now())
    }

    fn take_at(&self, now: Instant) -> Result<(), Duration> {
        let mut bucket = self.bucket.lock();
        let (tokens, last) = *bucket;
        let tokens = (tokens + now.saturating_duration_since(last).as_secs_f64() * self.rate)
            .min(self.burst);
        if tokens >= 1.0 {
            *bucket = (tokens - 1.0, now);
            Ok(())
        } else {
            *bucket = (tokens, now);
            Err(Duration::from_secs_f64((1.0 - tokens) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_to_the_rate_then_refills() {
        let limit = RateLimit::new(4.0).unwrap();
        let start = Instant::now();
        for _ in 0..4 {
            assert!(limit.take_at(start).is_ok());
        }
        let wait = limit.take_at(start).unwrap_err();
        assert!((wait.as_secs_f64() - 0.25).abs() < 1e-6, "{wait:?}");
        assert!(limit.take_at(start + Duration::from_millis(260)).is_ok());
        assert!(limit.take_at(start + Duration::from_millis(270)).is_err());
    }

    #[test]
    fn zero_means_unlimited() {
        assert!(RateLimit::new(0.0).is_none());
    }
}
