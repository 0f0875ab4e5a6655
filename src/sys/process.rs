//! Facts about this process, read from `/proc` without allocation (for monitoring).

use rustix::fs::{Mode, OFlags, open};
use rustix::io::read;

/// The resident set size of this process in bytes (`VmRSS` in `/proc/self/status`), or
/// `None` when `/proc` is not mounted or the line is missing.
///
/// # Notes
///
/// Reads the file into a 4 KiB stack buffer (it is about 1.5 KiB on current kernels; a
/// longer one is read in pieces, so the line is found wherever it is). One `open`, a few
/// `read`s and a `close`: call it when asked (a monitoring request), not per message.
pub fn rss_bytes() -> Option<u64> {
    let fd = open(
        "/proc/self/status",
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let mut buf = [0u8; 4096];
    let mut keep = 0usize;
    loop {
        let n = read(&fd, &mut buf[keep..]).ok()?;
        let end = keep + n;
        let data = &buf[..end];
        // Whole lines only; a partial last line moves to the front for the next read.
        let last_nl = data.iter().rposition(|&b| b == b'\n');
        let whole = match last_nl {
            Some(i) => &data[..=i],
            None if n == 0 => data,
            None => &[][..],
        };
        if let Some(kb) = whole.split(|&b| b == b'\n').find_map(vm_rss_kb) {
            return Some(kb.saturating_mul(1024));
        }
        if n == 0 {
            return None;
        }
        let from = last_nl.map_or(0, |i| i + 1);
        let tail = end - from;
        if tail == buf.len() {
            // A line longer than the buffer: not the one we want.
            keep = 0;
        } else {
            buf.copy_within(from..end, 0);
            keep = tail;
        }
    }
}

/// The kB value of a `VmRSS:   1234 kB` line.
fn vm_rss_kb(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(b"VmRSS:")?;
    let digits = rest
        .iter()
        .skip_while(|b| b.is_ascii_whitespace())
        .take_while(|b| b.is_ascii_digit());
    let mut v: u64 = 0;
    let mut any = false;
    for &d in digits {
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        any = true;
    }
    any.then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_of_this_test_is_plausible() {
        let rss = rss_bytes().expect("/proc/self/status has VmRSS");
        // More than a page, less than a terabyte.
        assert!(rss > 4096 && rss < (1 << 40), "{rss}");
    }

    #[test]
    fn vm_rss_line() {
        assert_eq!(vm_rss_kb(b"VmRSS:\t   1234 kB"), Some(1234));
        assert_eq!(vm_rss_kb(b"VmRSS: kB"), None);
        assert_eq!(vm_rss_kb(b"VmHWM: 5 kB"), None);
        assert_eq!(vm_rss_kb(b"VmRSS: 99999999999999999999999 kB"), None);
    }
}
