//! Hybrid logical clocks: wall time where the clocks agree, a counter where they do not.
//!
//! A stamp is `(ms, counter)`. Ticking never goes backwards, even when the wall clock
//! does. An incoming stamp further ahead of local wall time than the allowed drift is
//! *flagged and not adopted*: one device with a clock set days ahead cannot drag the
//! system's clocks into the future.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A hybrid logical clock stamp.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hlc {
    /// Milliseconds since the Unix epoch (the largest wall time seen).
    pub ms: u64,
    /// Orders events within the same millisecond.
    pub c: u32,
}

impl fmt::Debug for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hlc({}.{})", self.ms, self.c)
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.ms, self.c)
    }
}

/// Allowed drift between a remote stamp and local wall time: five minutes.
pub const DEFAULT_MAX_DRIFT_MS: u64 = 5 * 60 * 1000;

/// A remote stamp too far ahead of local wall time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "a clock stamp is {ahead_ms} ms ahead of local time (more than the allowed {max_drift_ms} ms); it was not adopted"
)]
pub struct ClockSkew {
    /// How far ahead the stamp was.
    pub ahead_ms: u64,
    /// The allowed drift.
    pub max_drift_ms: u64,
}

/// A clock: the last stamp issued or adopted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HlcClock {
    last: Hlc,
    max_drift_ms: u64,
}

impl HlcClock {
    /// A clock that continues from `last` (e.g. read back from storage).
    pub fn new(last: Hlc) -> HlcClock {
        HlcClock { last, max_drift_ms: DEFAULT_MAX_DRIFT_MS }
    }

    /// The same clock with another allowed drift.
    pub fn with_max_drift(mut self, max_drift_ms: u64) -> HlcClock {
        self.max_drift_ms = max_drift_ms;
        self
    }

    /// The last stamp.
    pub fn last(&self) -> Hlc {
        self.last
    }

    /// A new stamp for a local event at wall time `now_ms`; always above every
    /// earlier one.
    pub fn tick(&mut self, now_ms: u64) -> Hlc {
        self.last = if now_ms > self.last.ms { Hlc { ms: now_ms, c: 0 } } else { advance(self.last) };
        self.last
    }

    /// Takes in a remote stamp at wall time `now_ms`. A stamp too far ahead is
    /// reported and not adopted; the clock stays where it was.
    pub fn observe(&mut self, remote: Hlc, now_ms: u64) -> Result<(), ClockSkew> {
        let limit = now_ms.saturating_add(self.max_drift_ms);
        if remote.ms > limit {
            return Err(ClockSkew { ahead_ms: remote.ms - now_ms, max_drift_ms: self.max_drift_ms });
        }
        if remote > self.last {
            self.last = remote;
        }
        Ok(())
    }
}

/// The next stamp after `h` in the same millisecond (or the next millisecond when
/// the counter is exhausted).
fn advance(h: Hlc) -> Hlc {
    match h.c.checked_add(1) {
        Some(c) => Hlc { ms: h.ms, c },
        None => Hlc { ms: h.ms + 1, c: 0 },
    }
}

/// True when an op stamped `stamp` by a device whose wall clock read `device_wall_ms`
/// was received at `received_ms` with a clock off by more than `max_drift_ms` either
/// way: the op is kept, and the device is flagged for a supervisor.
pub fn clock_suspect(device_wall_ms: i64, received_ms: i64, max_drift_ms: u64) -> bool {
    // A device that writes offline for days is normal; a device whose clock says
    // it wrote *after* the server received the op is not.
    device_wall_ms > received_ms.saturating_add(max_drift_ms as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tick_follows_wall_time_and_never_goes_back() {
        let mut clock = HlcClock::new(Hlc::default());
        assert_eq!(clock.tick(1000), Hlc { ms: 1000, c: 0 });
        assert_eq!(clock.tick(1000), Hlc { ms: 1000, c: 1 });
        assert_eq!(clock.tick(900), Hlc { ms: 1000, c: 2 }, "wall clock went back");
        assert_eq!(clock.tick(1001), Hlc { ms: 1001, c: 0 });
    }

    #[test]
    fn far_future_stamps_are_flagged_not_adopted() {
        let mut clock = HlcClock::new(Hlc { ms: 1000, c: 0 });
        let days_ahead = Hlc { ms: 1000 + 3 * 86_400_000, c: 0 };
        let err = clock.observe(days_ahead, 1000).unwrap_err();
        assert_eq!(err.ahead_ms, 3 * 86_400_000);
        assert_eq!(clock.last(), Hlc { ms: 1000, c: 0 }, "clock was dragged forward");
        clock.observe(Hlc { ms: 2000, c: 4 }, 1900).unwrap();
        assert_eq!(clock.tick(1950), Hlc { ms: 2000, c: 5 });
    }

    #[test]
    fn counter_overflow_moves_to_the_next_millisecond() {
        let mut clock = HlcClock::new(Hlc { ms: 5, c: u32::MAX });
        assert_eq!(clock.tick(1), Hlc { ms: 6, c: 0 });
    }

    proptest! {
        #[test]
        fn never_goes_backwards(events in proptest::collection::vec((any::<bool>(), 0u64..10_000, 0u64..12_000, 0u32..3), 1..200)) {
            let mut clock = HlcClock::new(Hlc::default()).with_max_drift(1_000);
            let mut previous = clock.last();
            for (local, now, remote_ms, remote_c) in events {
                if local {
                    let stamp = clock.tick(now);
                    prop_assert!(stamp > previous);
                } else {
                    let _ = clock.observe(Hlc { ms: remote_ms, c: remote_c }, now);
                    prop_assert!(clock.last() >= previous);
                    prop_assert!(clock.last().ms <= previous.ms.max(now + 1_000));
                }
                previous = clock.last();
            }
        }
    }
}
