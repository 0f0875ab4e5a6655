//! The monotonic clock.
//!
//! The loop reads the clock once per turn and hands `now` to everything above it (timers,
//! protocol cores), so those stay deterministic under test.

use crate::time::Instant;
use rustix::time::{ClockId, clock_gettime};

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// The current time on `CLOCK_MONOTONIC`.
///
/// # Notes
///
/// `CLOCK_MONOTONIC` never jumps backwards and is not affected by `settimeofday` or NTP steps
/// (NTP may slew its rate). It does not advance while the system is suspended, which is what a
/// timer wheel wants: a timeout means "this much running time". The call goes through the vDSO
/// where the kernel provides one and cannot fail for this clock; the conversion to nanoseconds
/// saturates instead of overflowing (after ~584 years of uptime).
pub fn now() -> Instant {
    let ts = clock_gettime(ClockId::Monotonic);
    // CLOCK_MONOTONIC is never negative; clamp rather than trust that blindly.
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    Instant::from_nanos(secs.saturating_mul(NANOS_PER_SEC).saturating_add(nanos))
}

/// Nanoseconds since the Unix epoch on `CLOCK_REALTIME` (0 for a clock set before 1970).
///
/// # Notes
///
/// The wall clock jumps when the time is set or stepped by NTP: use it to *show* times (the
/// broker's monitoring endpoints do), never to measure them ([`now`] is for that).
pub fn realtime_nanos() -> u64 {
    let ts = clock_gettime(ClockId::Realtime);
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(NANOS_PER_SEC).saturating_add(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn realtime_is_after_2020() {
        // 2020-01-01T00:00:00Z.
        assert!(realtime_nanos() > 1_577_836_800 * NANOS_PER_SEC);
    }

    #[test]
    fn monotonic_and_advancing() {
        let a = now();
        assert!(a > Instant::ZERO);
        // Spin until the clock moves; it must, and never backwards.
        let mut b = now();
        while b == a {
            b = now();
        }
        assert!(b > a);
    }
}
