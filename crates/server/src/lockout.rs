//! A brake on guessing tokens: after [`FAILURE_LIMIT`] unknown secrets from one source
//! address within [`FAILURE_WINDOW_MS`] of the first, every request from that address
//! that needs a token is refused with `429 too_many_failures` until the window ends,
//! whatever token it carries. Kept in memory, bounded in size, with time as an
//! argument so that tests drive it with their own clock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Unknown secrets one source may present within a window before it is locked out.
pub const FAILURE_LIMIT: u32 = 10;

/// The window, from a source's first failure in it (ms).
pub const FAILURE_WINDOW_MS: i64 = 60_000;

/// How many source addresses are tracked at most.
pub const MAX_SOURCES: usize = 10_000;

/// Where a request came from: its peer's IP address, or `None` when the server does
/// not know it (requests sent to the router without a socket) — all such requests
/// count as one source.
pub type Source = Option<IpAddr>;

#[derive(Clone, Copy, Debug)]
struct Window {
    start: i64,
    failures: u32,
}

/// Failed authentications per source address.
#[derive(Debug)]
pub struct Lockout {
    limit: u32,
    window_ms: i64,
    capacity: usize,
    sources: Mutex<HashMap<Source, Window>>,
}

impl Default for Lockout {
    fn default() -> Lockout {
        Lockout::new(FAILURE_LIMIT, FAILURE_WINDOW_MS, MAX_SOURCES)
    }
}

impl Lockout {
    /// A brake locking a source out after `limit` failures within `window_ms`,
    /// tracking at most `capacity` sources.
    pub fn new(limit: u32, window_ms: i64, capacity: usize) -> Lockout {
        Lockout { limit, window_ms, capacity: capacity.max(1), sources: Mutex::new(HashMap::new()) }
    }

    /// `Err(seconds)` while `source` is locked out: when it may try again.
    pub fn check(&self, source: Source, now_ms: i64) -> Result<(), u64> {
        let sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        match sources.get(&source) {
            Some(w) if w.failures >= self.limit && now_ms < w.start + self.window_ms => {
                let left = w.start + self.window_ms - now_ms;
                Err(((left + 999) / 1000).max(1) as u64)
            }
            _ => Ok(()),
        }
    }

    /// Counts a failed authentication from `source`.
    pub fn fail(&self, source: Source, now_ms: i64) {
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        if !sources.contains_key(&source) && sources.len() >= self.capacity {
            let window = self.window_ms;
            sources.retain(|_, w| now_ms < w.start + window);
            if sources.len() >= self.capacity {
                // Still full of live windows: forget the oldest.
                if let Some(oldest) = sources.iter().min_by_key(|(_, w)| w.start).map(|(s, _)| *s) {
                    sources.remove(&oldest);
                }
            }
        }
        let w = sources.entry(source).or_insert(Window { start: now_ms, failures: 0 });
        if now_ms >= w.start + self.window_ms {
            *w = Window { start: now_ms, failures: 0 };
        }
        w.failures = w.failures.saturating_add(1);
    }

    /// How many sources are tracked now.
    pub fn tracked(&self) -> usize {
        self.sources.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> Source {
        Some(IpAddr::from([10, 0, 0, n]))
    }

    #[test]
    fn a_source_is_locked_after_the_limit_until_its_window_ends() {
        let l = Lockout::new(3, 60_000, 100);
        for t in [0, 10, 20] {
            assert_eq!(l.check(ip(1), t), Ok(()));
            l.fail(ip(1), t);
        }
        assert_eq!(l.check(ip(1), 1_000), Err(59));
        assert_eq!(l.check(ip(1), 59_999), Err(1));
        assert_eq!(l.check(ip(2), 1_000), Ok(()), "another source is not locked");
        assert_eq!(l.check(None, 1_000), Ok(()), "nor the unknown source");
        assert_eq!(l.check(ip(1), 60_000), Ok(()), "the window passed");
        l.fail(ip(1), 60_000);
        assert_eq!(l.check(ip(1), 60_001), Ok(()), "a new window counts from zero");
    }

    #[test]
    fn failures_spread_over_windows_never_lock() {
        let l = Lockout::new(3, 1_000, 100);
        for t in (0..20).map(|i| i * 600) {
            l.fail(ip(1), t);
            assert_eq!(l.check(ip(1), t), Ok(()), "at {t}");
        }
    }

    #[test]
    fn the_table_stays_bounded() {
        let l = Lockout::new(3, 60_000, 8);
        for n in 0..50 {
            l.fail(ip(n), i64::from(n));
        }
        assert!(l.tracked() <= 8, "{}", l.tracked());
        // Expired windows are dropped first, a locked source survives newcomers.
        let l = Lockout::new(2, 1_000, 4);
        l.fail(ip(1), 5_000);
        l.fail(ip(1), 5_000);
        for n in 2..6 {
            l.fail(ip(n), 0);
        }
        l.fail(ip(9), 5_001);
        assert!(l.check(ip(1), 5_002).is_err());
        assert!(l.tracked() <= 4);
    }
}
