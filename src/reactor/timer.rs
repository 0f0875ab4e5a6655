//! Timers: a fixed-capacity hashed timing wheel, in caller storage, with time passed in.
//!
//! A [`TimerWheel`] holds up to `capacity` timers (one-shot or periodic), each identified by a
//! generational [`TimerId`] and carrying a `u64` token for the caller (a connection key, an
//! operation code). The loop asks [`TimerWheel::next_deadline`] how long it may sleep, and after
//! waking drains [`TimerWheel::pop_expired`] one timer at a time, so a callback can insert or
//! cancel timers (the one that just fired included) between two pops. Nothing reads a clock:
//! every call that needs the time takes `now`, so tests are deterministic.
//!
//! # Storage
//!
//! The caller provides two slices ([`TimerStorage`] is a ready-made pair with a `const fn new`):
//!
//! - `entries: &mut [Slot<TimerEntry>]`: one slot per timer, so its length is the capacity.
//! - `wheel: &mut [u32]`: one list head per wheel slot. Its length is the number of slots, a
//!   power of two from 1 to [`MAX_WHEEL_SLOTS`]. Slot `s` holds the timers whose *tick* (below)
//!   is congruent to `s` modulo the number of slots.
//!
//! Each wheel slot is an intrusive, circular, doubly-linked list threaded through the entries by
//! `u32` index (with a `NONE` sentinel for an empty list), so insert and cancel are O(1) and
//! nothing is allocated. A bitmap of non-empty slots (inline, two levels: one summary word over
//! 64 words) finds the next occupied slot in O(1).
//!
//! The entries live in a [`crate::pool::Slab`], which reaches a value only through a full
//! [`Key`] (index and generation). The lists link entries by bare index, so the wheel fills
//! every slab slot once at construction and never removes one: all slots then share one slab
//! generation, known to the wheel, and the wheel keeps its own free list and its own generation
//! per entry. A [`TimerId`] is a [`Key`] of (entry index, timer generation); the generation
//! moves on when a timer fires for the last time or is cancelled, so a kept id is
//! [`TimerError::Stale`], never an alias of a newer timer in the same slot.
//!
//! # Ticks, deadlines and order
//!
//! A timer stores its exact deadline in nanoseconds. For bucketing only, the deadline is rounded
//! up to the wheel's resolution: `tick = ceil(deadline / resolution)`. A timer fires only when
//! `now >= deadline` (exact, never early); ties in deadline fire in insertion order. A periodic
//! timer counts as inserted again each time it is re-armed.
//!
//! The wheel keeps a *cursor*: the first tick it has not yet processed. Timers with a tick below
//! the cursor wait, sorted by (deadline, insertion order), on a *due list*; timers with a tick at
//! or after the cursor sit in the wheel slots. Because the tick grows with the deadline, every
//! due timer precedes every timer in the wheel. [`TimerWheel::pop_expired`] pops the head of the
//! due list if its deadline has passed. When the due list is empty it first advances the cursor
//! to the tick of `now`, moving every timer with a tick up to there from the slots it passes
//! onto the due list (and sorting that batch, O(k log k) for k timers, with no allocation).
//!
//! # Several revolutions, and late loops
//!
//! A timer can be any number of revolutions away: its slot holds it together with nearer timers,
//! and it moves to the due list only when the cursor reaches its exact tick. The timers of a
//! slot are kept partitioned: first the ones *within one revolution of the cursor* (tick below
//! `cursor + slots`), then the farther ones. A second bitmap marks the slots whose list starts
//! with a timer within the revolution. Both stay exact: a timer changes side only when the cursor
//! passes its slot, which the wheel visits then anyway.
//!
//! Advancing the cursor visits each passed slot once, skipping empty slots through the bitmap.
//! If the loop was late and `now` jumped more than one revolution, the wheel does not replay
//! every missed tick: it walks the non-empty slots once (at most one revolution), collects every
//! timer whose tick has passed, and moves the cursor past `now` in one step. Visiting a slot
//! costs one step per timer in it, so a far timer is looked at about once per revolution, as in
//! any hashed wheel.
//!
//! # `next_deadline` and spurious wake-ups
//!
//! [`TimerWheel::next_deadline`] is never later than the earliest pending deadline:
//!
//! - With due timers, it is the due list's head: the exact earliest deadline.
//! - Otherwise, if some slot holds a timer within one revolution of the cursor, the bitmap finds
//!   the first such slot, and the earliest deadline is the smallest among that slot's timers
//!   within the revolution (they all share one tick). That is exact too; computing it costs one
//!   step per timer on that tick.
//! - Otherwise every timer is more than a revolution away, and it returns a *check-again*
//!   instant: the start of the first tick a timer could be on, one revolution after the first
//!   non-empty slot. Waking then and calling `pop_expired` moves the cursor a full revolution
//!   on, and the next check-again instant is at least one more revolution later. So far timers
//!   cause at most one spurious wake-up per revolution, however many there are.
//!
//! The answer refers to the wheel's cursor, which moves only in `pop_expired`; it may lie in the
//! past (a loop that did not drain), and then the loop should not sleep at all.
//!
//! # Periodic timers
//!
//! A periodic timer is re-armed, with the same id, before `pop_expired` returns it. Its next
//! deadline is the previous deadline plus the period; if the loop fell so far behind that this
//! is not after `now`, the missed ticks are skipped and the deadline moves to the first
//! `previous + k * period` after `now`. There is no burst of catch-up firings: draining with one
//! `now` returns each periodic timer at most once. (At the very end of the clock, where no
//! deadline after `now` exists, the timer fires a last time and is removed.)
//!
//! # Costs
//!
//! | operation | cost |
//! |---|---|
//! | `insert`, re-arm | O(1) into the wheel; into the due list (a deadline at or before the processed tick), one step per due timer with a later deadline |
//! | `cancel` | O(1) |
//! | `pop_expired` | O(1) with a due timer; otherwise one advance: the non-empty slots passed (at most one revolution) and the timers in them, plus sorting the timers that became due |
//! | `next_deadline` | O(1) bitmap search plus the timers on the earliest tick |
//!
//! # Example
//!
//! ```
//! use core::time::Duration;
//! use ringlet::reactor::timer::TimerStorage;
//! use ringlet::time::Instant;
//!
//! let mut storage = TimerStorage::<64, 256>::new();
//! let start = Instant::from_nanos(1_000_000_000);
//! let mut timers = storage.wheel(Duration::from_millis(1), start).unwrap();
//!
//! let ping = timers
//!     .insert(start, Duration::from_secs(30), Some(Duration::from_secs(30)), 1)
//!     .unwrap();
//! let idle = timers.insert(start, Duration::from_secs(45), None, 2).unwrap();
//! assert!(timers.next_deadline().unwrap() <= start + Duration::from_secs(30));
//!
//! // The loop sleeps until next_deadline(), then drains, one timer at a time.
//! let now = start + Duration::from_secs(30);
//! assert_eq!(timers.pop_expired(now), Some((ping, 1))); // re-armed for start + 60 s
//! assert_eq!(timers.pop_expired(now), None); // idle fires at start + 45 s
//! assert_eq!(timers.cancel(idle), Ok(2));
//! assert!(timers.cancel(idle).is_err()); // stale now
//! ```

use core::fmt;
use core::mem;
use core::time::Duration;

use crate::pool::{Key, Slab, Slot};
use crate::time::Instant;

/// The largest number of wheel slots (the length of the `wheel` slice).
pub const MAX_WHEEL_SLOTS: usize = 4096;

/// Words of one bitmap level: one bit per wheel slot.
const WORDS: usize = MAX_WHEEL_SLOTS / 64;

/// The end of a list, or an empty list.
const NONE: u32 = u32::MAX;

/// [`TimerEntry::list`] of an entry on the free list.
const FREE: u32 = u32::MAX;

/// [`TimerEntry::list`] of an entry on the due list.
const DUE: u32 = u32::MAX - 1;

/// Spreads the timer generations of successive wheels over the same storage apart (see
/// [`TimerWheel::new`]). Odd, so the multiples of it differ for 2^32 successive wheels.
const GENERATION_SPREAD: u32 = 0x9E37_79B9;

static_assertions::const_assert!(MAX_WHEEL_SLOTS.is_multiple_of(64));
static_assertions::const_assert!(MAX_WHEEL_SLOTS <= DUE as usize);

/// The errors of the timer wheel.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum TimerError {
    /// Every timer entry is in use: raise the timer capacity.
    Full {
        /// The number of timers the wheel holds.
        capacity: usize,
    },
    /// The id names no pending timer: it was cancelled, or it was a one-shot timer that fired
    /// (its slot may hold a newer timer since, which the id never reaches).
    Stale,
    /// A periodic timer's period was zero.
    InvalidPeriod,
    /// The wheel resolution was zero, or longer than `u64::MAX` nanoseconds.
    InvalidResolution,
    /// The wheel slice's length is not a power of two from 1 to [`MAX_WHEEL_SLOTS`].
    InvalidWheel {
        /// The length of the wheel slice.
        len: usize,
    },
    /// The entry slots were left by different earlier uses (their slab generations differ),
    /// so the wheel cannot address them by index. Build it over fresh storage
    /// ([`TimerStorage::new`], [`Slot::new`]) or over the same slice an earlier wheel used.
    InvalidStorage,
}

impl fmt::Display for TimerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            TimerError::Full { capacity } => write!(
                f,
                "timer wheel full: all {capacity} timers are pending; raise the timer capacity \
                 (the TIMERS of TimerStorage, or the length of the entries slice)"
            ),
            TimerError::Stale => f.write_str(
                "stale timer id: the timer was cancelled or has fired (and its slot may be reused)",
            ),
            TimerError::InvalidPeriod => f.write_str("a periodic timer's period must not be zero"),
            TimerError::InvalidResolution => {
                f.write_str("the timer wheel resolution must be between 1 ns and u64::MAX ns")
            }
            TimerError::InvalidWheel { len } => write!(
                f,
                "timer wheel of {len} slots: the slot count (the SLOTS of TimerStorage, or the \
                 length of the wheel slice) must be a power of two from 1 to {MAX_WHEEL_SLOTS}"
            ),
            TimerError::InvalidStorage => f.write_str(
                "timer entry storage mixes slots from different earlier uses; use fresh storage \
                 or the slice an earlier wheel used",
            ),
        }
    }
}

impl core::error::Error for TimerError {}

/// Names a timer in a [`TimerWheel`]: the entry index and the timer's generation.
///
/// A periodic timer keeps its id across firings. Once the timer is cancelled, or a one-shot
/// timer has fired, the id is stale for good: methods taking it return [`TimerError::Stale`]
/// even when the slot holds a newer timer.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct TimerId(Key);

impl TimerId {
    /// The id as a slab-style key (index, generation).
    pub const fn key(self) -> Key {
        self.0
    }

    /// Packs the id into a `u64` (see [`Key::to_u64`]), for `user_data` and the like.
    pub const fn to_u64(self) -> u64 {
        self.0.to_u64()
    }

    /// Unpacks an id packed by [`TimerId::to_u64`]. Any `u64` gives some id; one that names no
    /// pending timer is [`TimerError::Stale`] to the wheel, never an alias.
    pub const fn from_u64(raw: u64) -> TimerId {
        TimerId(Key::from_u64(raw))
    }
}

/// One timer's state: the value type of the wheel's entry slots.
///
/// Opaque: it exists so that `[Slot<TimerEntry>]` can name the storage a [`TimerWheel`] works
/// over. Only the wheel creates entries.
pub struct TimerEntry {
    /// The timer generation: part of the [`TimerId`]; moves on when the timer ends.
    generation: u32,
    /// Where the entry is linked: a wheel slot index, [`DUE`] or [`FREE`].
    list: u32,
    prev: u32,
    /// The next entry in its list (on the free list, the next free entry).
    next: u32,
    /// Exact deadline, in nanoseconds.
    deadline: u64,
    /// `ceil(deadline / resolution)`: the bucket.
    tick: u64,
    /// Insertion order, for ties.
    seq: u64,
    /// Period in nanoseconds; zero for a one-shot timer.
    period: u64,
    token: u64,
}

impl TimerEntry {
    fn free(generation: u32) -> TimerEntry {
        TimerEntry {
            generation,
            list: FREE,
            prev: NONE,
            next: NONE,
            deadline: 0,
            tick: 0,
            seq: 0,
            period: 0,
            token: 0,
        }
    }

    /// The firing order: deadline, then insertion order.
    fn order(&self) -> (u64, u64) {
        (self.deadline, self.seq)
    }
}

impl fmt::Debug for TimerEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("TimerEntry");
        d.field("pending", &(self.list != FREE));
        if self.list != FREE {
            d.field("deadline", &Instant::from_nanos(self.deadline))
                .field("period", &Duration::from_nanos(self.period));
        }
        d.finish()
    }
}

/// Storage for a [`TimerWheel`] of `TIMERS` timers over `SLOTS` wheel slots, with a
/// `const fn new` so it can live in a `static`.
///
/// `SLOTS` must be a power of two from 1 to [`MAX_WHEEL_SLOTS`] (checked when
/// [`TimerStorage::new`] is instantiated).
pub struct TimerStorage<const TIMERS: usize, const SLOTS: usize> {
    entries: [Slot<TimerEntry>; TIMERS],
    wheel: [u32; SLOTS],
}

impl<const TIMERS: usize, const SLOTS: usize> TimerStorage<TIMERS, SLOTS> {
    /// Empty storage.
    pub const fn new() -> Self {
        const {
            assert!(
                SLOTS.is_power_of_two() && SLOTS <= MAX_WHEEL_SLOTS,
                "TimerStorage: SLOTS must be a power of two from 1 to MAX_WHEEL_SLOTS"
            )
        };
        const {
            assert!(
                TIMERS <= crate::pool::MAX_CAPACITY,
                "TimerStorage: TIMERS must be below 2^32 - 1"
            )
        };
        TimerStorage {
            entries: [const { Slot::new() }; TIMERS],
            wheel: [NONE; SLOTS],
        }
    }

    /// A wheel over this storage (shorthand for [`TimerWheel::new`] over its two slices).
    pub fn wheel(
        &mut self,
        resolution: Duration,
        now: Instant,
    ) -> Result<TimerWheel<'_>, TimerError> {
        TimerWheel::new(&mut self.entries, &mut self.wheel, resolution, now)
    }
}

impl<const TIMERS: usize, const SLOTS: usize> Default for TimerStorage<TIMERS, SLOTS> {
    fn default() -> Self {
        TimerStorage::new()
    }
}

/// A fixed-capacity hashed timing wheel: see the [module documentation](self) for the design.
pub struct TimerWheel<'a> {
    entries: Entries<'a>,
    /// One list head per wheel slot.
    heads: &'a mut [u32],
    /// Slots whose list is not empty.
    nonempty: Bitmap,
    /// Slots whose list starts with a timer within one revolution of the cursor.
    current: Bitmap,
    /// `slots - 1`.
    mask: u64,
    /// Nanoseconds per tick, at least 1.
    resolution: u64,
    /// The first tick not yet processed.
    cursor: u64,
    /// Head of the due list (sorted by deadline, then insertion order).
    due: u32,
    /// Head of the free list.
    free: u32,
    len: usize,
    /// The next insertion sequence number.
    seq: u64,
}

impl<'a> TimerWheel<'a> {
    /// A wheel over caller storage: `entries` (one per timer, so the capacity is its length) and
    /// `wheel` (one list head per slot; its length must be a power of two from 1 to
    /// [`MAX_WHEEL_SLOTS`]), ticking every `resolution` (not zero), starting at `now`.
    ///
    /// One revolution spans `wheel.len() * resolution`; timers may be any number of revolutions
    /// away, but a far timer is looked at about once per revolution, so pick a revolution a bit
    /// longer than the common timeouts.
    ///
    /// This fills every entry slot (O(capacity)); values an earlier wheel left there are dropped.
    /// Ids issued by an earlier wheel over the same storage are bound to that wheel: the new
    /// wheel starts its generations at an offset derived from how many wheels the storage has
    /// held, so such an id is rejected as stale unless its slot went through about a billion
    /// timers since.
    pub fn new(
        entries: &'a mut [Slot<TimerEntry>],
        wheel: &'a mut [u32],
        resolution: Duration,
        now: Instant,
    ) -> Result<TimerWheel<'a>, TimerError> {
        let slots = wheel.len();
        if !slots.is_power_of_two() || slots > MAX_WHEEL_SLOTS {
            return Err(TimerError::InvalidWheel { len: slots });
        }
        let resolution = match u64::try_from(resolution.as_nanos()) {
            Ok(0) | Err(_) => return Err(TimerError::InvalidResolution),
            Ok(ns) => ns,
        };

        // Fill every slot, so that all slots are occupied at one slab generation for the life
        // of the wheel and entries can be reached by index.
        let mut slab = Slab::new(entries);
        let capacity = slab.capacity();
        let mut slab_gen: Option<u32> = None;
        let mut mixed = false;
        for _ in 0..capacity {
            let filled = slab.try_insert_with(|key| {
                let first = *slab_gen.get_or_insert(key.generation());
                mixed |= first != key.generation();
                TimerEntry::free(first.wrapping_mul(GENERATION_SPREAD))
            });
            if filled.is_err() {
                // Unreachable: a new slab has `capacity` vacant slots.
                return Err(TimerError::InvalidStorage);
            }
        }
        if mixed {
            return Err(TimerError::InvalidStorage);
        }
        let mut entries = Entries {
            slab,
            slab_gen: slab_gen.unwrap_or(0),
        };
        let mut free = NONE;
        for i in (0..capacity as u32).rev() {
            entries.get_mut(i).next = free;
            free = i;
        }
        wheel.fill(NONE);

        let mut timers = TimerWheel {
            entries,
            heads: wheel,
            nonempty: Bitmap::EMPTY,
            current: Bitmap::EMPTY,
            mask: slots as u64 - 1,
            resolution,
            cursor: 0,
            due: NONE,
            free,
            len: 0,
            seq: 0,
        };
        timers.cursor = timers.tick_of(now.as_nanos());
        Ok(timers)
    }

    /// Arms a timer for `now + delay` (saturating), firing once, or, with `period`, every
    /// `period` after that. `token` comes back when it fires. Returns the timer's id.
    ///
    /// A zero `delay` makes the timer fire on the next [`TimerWheel::pop_expired`] at or after
    /// `now`. Errors: [`TimerError::InvalidPeriod`] for a zero period, [`TimerError::Full`]
    /// when every entry is in use.
    pub fn insert(
        &mut self,
        now: Instant,
        delay: Duration,
        period: Option<Duration>,
        token: u64,
    ) -> Result<TimerId, TimerError> {
        let period = match period {
            None => 0,
            Some(p) if p.is_zero() => return Err(TimerError::InvalidPeriod),
            Some(p) => u64::try_from(p.as_nanos()).unwrap_or(u64::MAX),
        };
        let index = self.free;
        if index == NONE {
            return Err(TimerError::Full {
                capacity: self.capacity(),
            });
        }
        let deadline = now.saturating_add(delay).as_nanos();
        let tick = self.tick_of(deadline);
        let seq = self.next_seq();
        let entry = self.entries.get_mut(index);
        self.free = entry.next;
        entry.deadline = deadline;
        entry.tick = tick;
        entry.seq = seq;
        entry.period = period;
        entry.token = token;
        let id = TimerId(Key::new(index, entry.generation));
        self.len += 1;
        self.place(index);
        Ok(id)
    }

    /// Cancels the timer `id` names and returns its token. O(1).
    ///
    /// A periodic timer can be cancelled at any time, also between two pops of the same drain.
    /// An id that names no pending timer is [`TimerError::Stale`].
    pub fn cancel(&mut self, id: TimerId) -> Result<u64, TimerError> {
        let index = self.lookup(id)?;
        let entry = self.entries.get(index);
        let (list, token) = (entry.list, entry.token);
        if list == DUE {
            self.entries.unlink(&mut self.due, index);
        } else {
            let slot = list as usize;
            self.entries.unlink(&mut self.heads[slot], index);
            self.refresh(slot);
        }
        self.release(index);
        Ok(token)
    }

    /// Whether `id` names a pending timer.
    pub fn contains(&self, id: TimerId) -> bool {
        self.lookup(id).is_ok()
    }

    /// The exact deadline of the pending timer `id` names (for a periodic timer, its next one).
    pub fn deadline(&self, id: TimerId) -> Result<Instant, TimerError> {
        let index = self.lookup(id)?;
        Ok(Instant::from_nanos(self.entries.get(index).deadline))
    }

    /// The number of pending timers.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no timer is pending.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The number of timers the wheel can hold.
    pub fn capacity(&self) -> usize {
        self.entries.slab.capacity()
    }

    /// The number of wheel slots.
    pub fn slots(&self) -> usize {
        self.heads.len()
    }

    /// The length of one tick.
    pub fn resolution(&self) -> Duration {
        Duration::from_nanos(self.resolution)
    }

    /// An instant no later than the earliest pending deadline, or `None` when no timer is
    /// pending: the loop may sleep until then.
    ///
    /// It is the exact earliest deadline when that is within one revolution of the wheel's
    /// cursor. When every timer is farther away, it is an earlier *check-again* instant; waking
    /// then and calling [`TimerWheel::pop_expired`] moves the wheel a revolution on, so this
    /// causes at most one spurious wake-up per revolution. The instant may be in the past (the
    /// loop did not drain expired timers), and then the loop should not sleep. Cost: a bitmap
    /// search plus one step per timer on the earliest tick.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.due != NONE {
            return Some(Instant::from_nanos(self.entries.get(self.due).deadline));
        }
        if self.nonempty.is_empty() {
            return None;
        }
        let slots = self.slots();
        let from = (self.cursor & self.mask) as usize;
        if let Some(slot) = self.current.next_set_wrapping(from, slots) {
            // Every timer within the revolution in this slot is on the same tick, and no earlier
            // tick holds a timer: the smallest deadline among them is the earliest of all.
            let horizon = self.horizon();
            let head = self.heads[slot];
            let mut earliest = u64::MAX;
            let mut index = head;
            loop {
                let entry = self.entries.get(index);
                if entry.tick >= horizon {
                    break;
                }
                earliest = earliest.min(entry.deadline);
                index = entry.next;
                if index == head {
                    break;
                }
            }
            return Some(Instant::from_nanos(earliest));
        }
        // Every timer is more than a revolution away: the first non-empty slot's timers are at
        // least one revolution past its tick in this revolution, and the other slots' later.
        let slot = self.nonempty.next_set_wrapping(from, slots)?;
        let ahead = (slot as u64).wrapping_sub(from as u64) & self.mask;
        let tick = self
            .cursor
            .saturating_add(ahead)
            .saturating_add(slots as u64);
        // The earliest deadline on `tick` is just after the end of the tick before.
        Some(Instant::from_nanos(
            (tick - 1).saturating_mul(self.resolution).saturating_add(1),
        ))
    }

    /// Returns one expired timer (deadline at or before `now`) with its token, the earliest
    /// first (ties in insertion order), or `None` when none has expired.
    ///
    /// Call it until it returns `None`; between calls the caller may insert and cancel timers,
    /// including the one just returned. A one-shot timer is removed before it is returned (its
    /// id is stale from then on). A periodic timer is re-armed with the same id before it is
    /// returned, for its previous deadline plus the period, or, when the loop fell so far
    /// behind that this is not after `now`, for the first `previous + k * period` after `now`
    /// (the missed ticks are skipped, not fired in a burst), so one drain with one `now`
    /// returns it at most once.
    ///
    /// `now` going backwards is harmless: nothing fires before its deadline.
    pub fn pop_expired(&mut self, now: Instant) -> Option<(TimerId, u64)> {
        let now = now.as_nanos();
        if self.due == NONE {
            self.advance(now);
        }
        let index = self.due;
        if index == NONE || self.entries.get(index).deadline > now {
            return None;
        }
        self.entries.unlink(&mut self.due, index);
        let entry = self.entries.get(index);
        let id = TimerId(Key::new(index, entry.generation));
        let token = entry.token;
        let (deadline, period) = (entry.deadline, entry.period);
        match next_periodic_deadline(deadline, period, now) {
            Some(next) => {
                let tick = self.tick_of(next);
                let seq = self.next_seq();
                let entry = self.entries.get_mut(index);
                entry.deadline = next;
                entry.tick = tick;
                entry.seq = seq;
                self.place(index);
            }
            None => self.release(index),
        }
        Some((id, token))
    }

    /// `ceil(ns / resolution)`.
    fn tick_of(&self, ns: u64) -> u64 {
        ns / self.resolution + u64::from(!ns.is_multiple_of(self.resolution))
    }

    /// The first tick more than one revolution from the cursor.
    fn horizon(&self) -> u64 {
        self.cursor.saturating_add(self.slots() as u64)
    }

    fn next_seq(&mut self) -> u64 {
        let seq = self.seq;
        self.seq = seq.wrapping_add(1);
        seq
    }

    /// The index of the pending timer `id` names.
    fn lookup(&self, id: TimerId) -> Result<u32, TimerError> {
        let index = id.0.index();
        match self.entries.try_get(index) {
            Some(entry) if entry.generation == id.0.generation() && entry.list != FREE => Ok(index),
            _ => Err(TimerError::Stale),
        }
    }

    /// Links an unlinked, pending entry where its tick belongs.
    fn place(&mut self, index: u32) {
        let tick = self.entries.get(index).tick;
        if tick < self.cursor {
            self.entries.get_mut(index).list = DUE;
            self.entries.insert_sorted(&mut self.due, index);
            return;
        }
        let slot = (tick & self.mask) as usize;
        self.entries.get_mut(index).list = slot as u32;
        if tick < self.horizon() {
            self.entries.push_front(&mut self.heads[slot], index);
            self.current.set(slot);
        } else {
            self.entries.push_back(&mut self.heads[slot], index);
        }
        self.nonempty.set(slot);
    }

    /// Ends an unlinked entry's timer: its id goes stale and the entry goes on the free list.
    fn release(&mut self, index: u32) {
        let free = self.free;
        let entry = self.entries.get_mut(index);
        entry.generation = entry.generation.wrapping_add(1);
        entry.list = FREE;
        entry.next = free;
        self.free = index;
        self.len -= 1;
    }

    /// Recomputes both bitmap bits of `slot` from its list head.
    fn refresh(&mut self, slot: usize) {
        let head = self.heads[slot];
        if head == NONE {
            self.nonempty.clear(slot);
            self.current.clear(slot);
        } else {
            self.nonempty.set(slot);
            let current = self.entries.get(head).tick < self.horizon();
            self.current.assign(slot, current);
        }
    }

    /// Processes every tick up to the tick of `now`: moves the timers on them to the due list
    /// (which must be empty), and the cursor past them. Walks at most one revolution of slots.
    fn advance(&mut self, now: u64) {
        debug_assert_eq!(self.due, NONE);
        let target = self.tick_of(now);
        if target < self.cursor {
            return;
        }
        let first = self.cursor;
        self.cursor = target.saturating_add(1);
        if self.nonempty.is_empty() {
            return;
        }
        let slots = self.slots();
        let span = (target - first).saturating_add(1);
        let mut batch = NONE;
        if span >= slots as u64 {
            // A late loop: one pass over every non-empty slot instead of every missed tick.
            self.visit_range(0, slots, target, &mut batch);
        } else {
            let start = (first & self.mask) as usize;
            let end = start + span as usize;
            if end <= slots {
                self.visit_range(start, end, target, &mut batch);
            } else {
                self.visit_range(start, slots, target, &mut batch);
                self.visit_range(0, end - slots, target, &mut batch);
            }
        }
        self.entries.sort(&mut batch);
        self.due = batch;
    }

    /// Visits the non-empty slots in `start..end`.
    fn visit_range(&mut self, start: usize, end: usize, target: u64, batch: &mut u32) {
        let mut from = start;
        while let Some(slot) = self.nonempty.next_set(from, end) {
            self.visit(slot, target, batch);
            from = slot + 1;
        }
    }

    /// Moves the timers of `slot` with a tick up to `target` onto `batch`, and re-partitions the
    /// rest around the (already advanced) cursor's revolution.
    fn visit(&mut self, slot: usize, target: u64, batch: &mut u32) {
        let horizon = self.horizon();
        let mut list = mem::replace(&mut self.heads[slot], NONE);
        while let Some(index) = self.entries.pop_front(&mut list) {
            let entry = self.entries.get_mut(index);
            if entry.tick <= target {
                entry.list = DUE;
                self.entries.push_back(batch, index);
            } else if entry.tick < horizon {
                self.entries.push_front(&mut self.heads[slot], index);
            } else {
                self.entries.push_back(&mut self.heads[slot], index);
            }
        }
        self.refresh(slot);
    }
}

impl fmt::Debug for TimerWheel<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimerWheel")
            .field("len", &self.len)
            .field("capacity", &self.capacity())
            .field("slots", &self.slots())
            .field("resolution", &self.resolution())
            .field("next_deadline", &self.next_deadline())
            .finish()
    }
}

/// The deadline a periodic timer that fired at `deadline` is re-armed for, or `None` for a
/// one-shot timer (and for a periodic one with no deadline after `now` left on the clock).
fn next_periodic_deadline(deadline: u64, period: u64, now: u64) -> Option<u64> {
    if period == 0 {
        return None;
    }
    let next = deadline.saturating_add(period);
    let next = if next > now {
        next
    } else {
        // Skip the missed ticks: the first deadline + k * period after now.
        let missed = now.saturating_sub(deadline) / period;
        deadline.saturating_add(missed.saturating_add(1).saturating_mul(period))
    };
    (next > now).then_some(next)
}

/// The entry slab, addressed by index: every slot is occupied at generation `slab_gen`.
struct Entries<'a> {
    slab: Slab<'a, TimerEntry>,
    slab_gen: u32,
}

impl Entries<'_> {
    /// The entry at `index`, if the index is in range.
    fn try_get(&self, index: u32) -> Option<&TimerEntry> {
        self.slab.get(Key::new(index, self.slab_gen)).ok()
    }

    /// The entry at an index taken from the wheel's own links.
    fn get(&self, index: u32) -> &TimerEntry {
        match self.slab.get(Key::new(index, self.slab_gen)) {
            Ok(entry) => entry,
            Err(_) => unreachable!("timer lists link only in-range entries, all occupied"),
        }
    }

    fn get_mut(&mut self, index: u32) -> &mut TimerEntry {
        match self.slab.get_mut(Key::new(index, self.slab_gen)) {
            Ok(entry) => entry,
            Err(_) => unreachable!("timer lists link only in-range entries, all occupied"),
        }
    }

    /// Links `index` right after `at`, in `at`'s list.
    fn link_after(&mut self, at: u32, index: u32) {
        let next = self.get(at).next;
        let entry = self.get_mut(index);
        entry.prev = at;
        entry.next = next;
        self.get_mut(at).next = index;
        self.get_mut(next).prev = index;
    }

    /// Appends `index` to the circular list `head`.
    fn push_back(&mut self, head: &mut u32, index: u32) {
        if *head == NONE {
            let entry = self.get_mut(index);
            entry.prev = index;
            entry.next = index;
            *head = index;
        } else {
            let tail = self.get(*head).prev;
            self.link_after(tail, index);
        }
    }

    /// Prepends `index` to the circular list `head`.
    fn push_front(&mut self, head: &mut u32, index: u32) {
        self.push_back(head, index);
        *head = index;
    }

    /// Unlinks `index` from the circular list `head`.
    fn unlink(&mut self, head: &mut u32, index: u32) {
        let entry = self.get(index);
        let (prev, next) = (entry.prev, entry.next);
        if next == index {
            *head = NONE;
        } else {
            self.get_mut(prev).next = next;
            self.get_mut(next).prev = prev;
            if *head == index {
                *head = next;
            }
        }
        let entry = self.get_mut(index);
        entry.prev = NONE;
        entry.next = NONE;
    }

    fn pop_front(&mut self, head: &mut u32) -> Option<u32> {
        let index = *head;
        if index == NONE {
            return None;
        }
        self.unlink(head, index);
        Some(index)
    }

    /// Inserts `index` into the sorted circular list `head` after every entry that fires no
    /// later, searching from the tail (a new entry has the largest sequence number).
    fn insert_sorted(&mut self, head: &mut u32, index: u32) {
        if *head == NONE {
            self.push_back(head, index);
            return;
        }
        let order = self.get(index).order();
        let mut at = self.get(*head).prev;
        loop {
            if self.get(at).order() <= order {
                self.link_after(at, index);
                return;
            }
            if at == *head {
                self.push_front(head, index);
                return;
            }
            at = self.get(at).prev;
        }
    }

    /// Sorts the circular list `head` by firing order: a bottom-up merge sort of the list as a
    /// chain of `next` links (O(k log k), no allocation, no recursion), then relinks `prev`.
    fn sort(&mut self, head: &mut u32) {
        let first = *head;
        if first == NONE {
            return;
        }
        let tail = self.get(first).prev;
        self.get_mut(tail).next = NONE;
        let mut list = first;
        let mut width = 1usize;
        loop {
            let mut p = list;
            list = NONE;
            let mut tail = NONE;
            let mut merges = 0usize;
            while p != NONE {
                merges += 1;
                // Run `p` holds up to `width` entries; run `q` follows it.
                let mut q = p;
                let mut p_len = 0usize;
                while p_len < width && q != NONE {
                    p_len += 1;
                    q = self.get(q).next;
                }
                let mut q_len = width;
                while p_len > 0 || (q_len > 0 && q != NONE) {
                    let take_p = if p_len == 0 {
                        false
                    } else if q_len == 0 || q == NONE {
                        true
                    } else {
                        self.get(p).order() <= self.get(q).order()
                    };
                    let taken = if take_p {
                        let taken = p;
                        p = self.get(p).next;
                        p_len -= 1;
                        taken
                    } else {
                        let taken = q;
                        q = self.get(q).next;
                        q_len -= 1;
                        taken
                    };
                    if tail == NONE {
                        list = taken;
                    } else {
                        self.get_mut(tail).next = taken;
                    }
                    tail = taken;
                }
                p = q;
            }
            self.get_mut(tail).next = NONE;
            if merges <= 1 {
                break;
            }
            width = width.saturating_mul(2);
        }
        // Relink `prev` and close the circle.
        let mut prev = NONE;
        let mut index = list;
        while index != NONE {
            let entry = self.get_mut(index);
            entry.prev = prev;
            prev = index;
            index = entry.next;
        }
        self.get_mut(list).prev = prev;
        self.get_mut(prev).next = list;
        *head = list;
    }
}

/// A two-level bitmap over up to [`MAX_WHEEL_SLOTS`] bits: bit `i` of `summary` says whether
/// `words[i]` is non-zero, so finding the next set bit takes a few word operations.
#[derive(Clone, Copy)]
struct Bitmap {
    summary: u64,
    words: [u64; WORDS],
}

impl Bitmap {
    const EMPTY: Bitmap = Bitmap {
        summary: 0,
        words: [0; WORDS],
    };

    fn set(&mut self, bit: usize) {
        self.words[bit / 64] |= 1 << (bit % 64);
        self.summary |= 1 << (bit / 64);
    }

    fn clear(&mut self, bit: usize) {
        let word = bit / 64;
        self.words[word] &= !(1 << (bit % 64));
        if self.words[word] == 0 {
            self.summary &= !(1 << word);
        }
    }

    fn assign(&mut self, bit: usize, on: bool) {
        if on { self.set(bit) } else { self.clear(bit) }
    }

    fn is_empty(&self) -> bool {
        self.summary == 0
    }

    /// The first set bit in `from..end` (`end <= MAX_WHEEL_SLOTS`).
    fn next_set(&self, from: usize, end: usize) -> Option<usize> {
        if from >= end {
            return None;
        }
        let word = from / 64;
        let bits = self.words[word] & (u64::MAX << (from % 64));
        let found = if bits != 0 {
            word * 64 + bits.trailing_zeros() as usize
        } else {
            let later = if word + 1 < WORDS {
                self.summary & (u64::MAX << (word + 1))
            } else {
                0
            };
            if later == 0 {
                return None;
            }
            let word = later.trailing_zeros() as usize;
            word * 64 + self.words[word].trailing_zeros() as usize
        };
        (found < end).then_some(found)
    }

    /// The first set bit at or after `from`, wrapping around at `len`.
    fn next_set_wrapping(&self, from: usize, len: usize) -> Option<usize> {
        self.next_set(from, len).or_else(|| self.next_set(0, from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::test_rng::XorShift;
    use std::string::ToString;
    use std::sync::Mutex;
    use std::vec::Vec;

    const US: u64 = 1_000;
    const MS: u64 = 1_000_000;

    fn at(ns: u64) -> Instant {
        Instant::from_nanos(ns)
    }

    fn ns(n: u64) -> Duration {
        Duration::from_nanos(n)
    }

    /// Pops everything expired at `now`.
    fn drain(w: &mut TimerWheel<'_>, now: u64) -> Vec<(TimerId, u64)> {
        let mut out = Vec::new();
        while let Some(fired) = w.pop_expired(at(now)) {
            out.push(fired);
            assert!(out.len() <= w.capacity() + 1, "a drain must end");
        }
        out
    }

    #[test]
    fn constructor_checks_its_inputs() {
        let mut entries: [Slot<TimerEntry>; 4] = Default::default();
        for len in [0usize, 3, 6, MAX_WHEEL_SLOTS * 2] {
            let mut wheel = std::vec![0u32; len];
            let err = TimerWheel::new(&mut entries, &mut wheel, ns(MS), at(0)).unwrap_err();
            assert_eq!(err, TimerError::InvalidWheel { len });
            assert!(err.to_string().contains("power of two"), "{err}");
        }
        let mut wheel = [0u32; 8];
        assert_eq!(
            TimerWheel::new(&mut entries, &mut wheel, Duration::ZERO, at(0)).unwrap_err(),
            TimerError::InvalidResolution
        );
        assert_eq!(
            TimerWheel::new(&mut entries, &mut wheel, Duration::MAX, at(0)).unwrap_err(),
            TimerError::InvalidResolution
        );
        let mut big = std::vec![0u32; MAX_WHEEL_SLOTS];
        let w = TimerWheel::new(&mut entries, &mut big, ns(1), at(5)).unwrap();
        assert_eq!((w.slots(), w.capacity(), w.len()), (MAX_WHEEL_SLOTS, 4, 0));
        assert_eq!(w.resolution(), ns(1));
        let mut one = [0u32; 1];
        let mut w = TimerWheel::new(&mut entries, &mut one, ns(10), at(0)).unwrap();
        w.insert(at(0), ns(25), None, 7).unwrap();
        assert_eq!(drain(&mut w, 24), []);
        assert_eq!(drain(&mut w, 25).len(), 1);
    }

    #[test]
    fn zero_period_is_rejected() {
        let mut storage = TimerStorage::<2, 8>::new();
        let mut w = storage.wheel(ns(MS), at(0)).unwrap();
        assert_eq!(
            w.insert(at(0), ns(5), Some(Duration::ZERO), 1),
            Err(TimerError::InvalidPeriod)
        );
        assert!(w.is_empty());
    }

    #[test]
    fn zero_delay_fires_on_the_next_pop() {
        let mut storage = TimerStorage::<4, 8>::new();
        let start = 7 * MS + 3;
        let mut w = storage.wheel(ns(MS), at(start)).unwrap();
        let id = w.insert(at(start), Duration::ZERO, None, 42).unwrap();
        assert_eq!(w.next_deadline(), Some(at(start)));
        assert_eq!(w.pop_expired(at(start)), Some((id, 42)));
        assert_eq!(w.pop_expired(at(start)), None);
        assert!(w.is_empty() && !w.contains(id));
        assert_eq!(w.next_deadline(), None);
        // Also in the middle of a drain, after the cursor passed now's tick.
        let a = w.insert(at(start), ns(10), None, 1).unwrap();
        assert_eq!(w.pop_expired(at(start + 10)), Some((a, 1)));
        let b = w.insert(at(start + 10), Duration::ZERO, None, 2).unwrap();
        assert_eq!(w.pop_expired(at(start + 10)), Some((b, 2)));
    }

    #[test]
    fn ties_fire_in_insertion_order() {
        let mut storage = TimerStorage::<64, 16>::new();
        let mut w = storage.wheel(ns(MS), at(0)).unwrap();
        // 40 timers on 3 deadlines, inserted interleaved, some sharing a tick but not a deadline.
        let deadlines = [5 * MS, 5 * MS - 1, 5 * MS];
        let mut want: Vec<(u64, usize, TimerId)> = Vec::new();
        for i in 0..40 {
            let d = deadlines[i % 3];
            want.push((d, i, w.insert(at(0), ns(d), None, i as u64).unwrap()));
        }
        want.sort_by_key(|&(d, i, _)| (d, i));
        let got = drain(&mut w, 5 * MS);
        let want: Vec<(TimerId, u64)> = want.iter().map(|&(_, i, id)| (id, i as u64)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn callbacks_may_insert_and_cancel_between_pops() {
        let mut storage = TimerStorage::<8, 8>::new();
        let mut w = storage.wheel(ns(MS), at(0)).unwrap();
        let a = w.insert(at(0), ns(5), None, 1).unwrap();
        let b = w.insert(at(0), ns(10), None, 2).unwrap();
        let c = w.insert(at(0), ns(10), None, 3).unwrap();
        assert_eq!(w.pop_expired(at(10)), Some((a, 1)));
        // The callback for `a` cancels `c` and arms a zero-delay timer: it comes after `b`,
        // which has the same deadline and was inserted earlier.
        assert_eq!(w.cancel(c), Ok(3));
        let d = w.insert(at(10), Duration::ZERO, None, 4).unwrap();
        // An earlier deadline (now went back a little) goes before `b`.
        let e = w.insert(at(8), Duration::ZERO, None, 5).unwrap();
        assert_eq!(drain(&mut w, 10), [(e, 5), (b, 2), (d, 4)]);
    }

    #[test]
    fn cancel_before_and_after_firing() {
        let mut storage = TimerStorage::<4, 8>::new();
        let mut w = storage.wheel(ns(MS), at(0)).unwrap();
        let a = w.insert(at(0), ns(3 * MS), None, 1).unwrap();
        let b = w.insert(at(0), ns(4 * MS), None, 2).unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(w.cancel(a), Ok(1));
        assert_eq!(w.cancel(a), Err(TimerError::Stale));
        assert_eq!(w.deadline(a), Err(TimerError::Stale));
        assert_eq!(
            drain(&mut w, 10 * MS),
            [(b, 2)],
            "a cancelled timer never fires"
        );
        assert_eq!(w.cancel(b), Err(TimerError::Stale), "fired one-shot");
        assert!(w.is_empty());
        assert!(TimerError::Stale.to_string().contains("stale"));
        // Cancel from the due list: expired but not yet popped.
        let c = w.insert(at(10 * MS), ns(1), None, 3).unwrap();
        let d = w.insert(at(10 * MS), ns(1), None, 4).unwrap();
        assert_eq!(w.pop_expired(at(11 * MS)), Some((c, 3)));
        assert_eq!(w.cancel(d), Ok(4));
        assert_eq!(w.pop_expired(at(11 * MS)), None);
        // Forged and out-of-range ids.
        assert_eq!(
            w.cancel(TimerId::from_u64(u64::MAX)),
            Err(TimerError::Stale)
        );
        assert_eq!(
            w.cancel(TimerId(Key::new(0, 12345))),
            Err(TimerError::Stale)
        );
        assert_eq!(TimerId::from_u64(c.to_u64()), c);
        assert_eq!(c.key().to_u64(), c.to_u64());
    }

    #[test]
    fn periodic_fires_at_d_d_plus_p_d_plus_2p() {
        let mut storage = TimerStorage::<4, 8>::new();
        let mut w = storage.wheel(ns(MS), at(0)).unwrap();
        let (d, p) = (10 * MS + 300 * US, 7 * MS);
        let id = w.insert(at(0), ns(d), Some(ns(p)), 9).unwrap();
        for k in 0..5 {
            let due = d + k * p;
            assert_eq!(w.deadline(id), Ok(at(due)));
            // Beyond one revolution (8 ticks) it may be an earlier check-again instant.
            assert!(w.next_deadline().unwrap() <= at(due));
            assert_eq!(w.pop_expired(at(due - 1)), None, "never early");
            assert_eq!(w.pop_expired(at(due)), Some((id, 9)), "same id every time");
            assert_eq!(w.pop_expired(at(due)), None, "once per drain");
        }
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn periodic_skips_missed_ticks_when_late() {
        let mut storage = TimerStorage::<4, 8>::new();
        let mut w = storage.wheel(ns(MS), at(0)).unwrap();
        let (d, p) = (10 * MS, 10 * MS);
        let id = w.insert(at(0), ns(d), Some(ns(p)), 1).unwrap();
        // Late by 6.5 periods: one firing, then the next multiple after now.
        let now = 75 * MS;
        assert_eq!(drain(&mut w, now), [(id, 1)]);
        assert_eq!(w.deadline(id), Ok(at(80 * MS)));
        // Late by exactly one period: still one firing, the tick at now is skipped.
        assert_eq!(drain(&mut w, 90 * MS), [(id, 1)]);
        assert_eq!(w.deadline(id), Ok(at(100 * MS)));
        // Late by many revolutions.
        assert_eq!(drain(&mut w, 1_000 * MS + 1), [(id, 1)]);
        assert_eq!(w.deadline(id), Ok(at(1_010 * MS)));
        // A period far below the resolution does not loop.
        let fast = w.insert(at(0), ns(1), Some(ns(1)), 2).unwrap();
        assert_eq!(drain(&mut w, 1_005 * MS), [(fast, 2)]);
        assert_eq!(w.deadline(fast), Ok(at(1_005 * MS + 1)));
    }

    #[test]
    fn periodic_at_the_end_of_the_clock_fires_once_more_and_ends() {
        let mut storage = TimerStorage::<2, 8>::new();
        let mut w = storage.wheel(ns(1), at(u64::MAX - 10)).unwrap();
        let id = w
            .insert(at(u64::MAX - 10), ns(5), Some(ns(100)), 1)
            .unwrap();
        assert_eq!(drain(&mut w, u64::MAX), [(id, 1)]);
        assert!(!w.contains(id) && w.is_empty());
        assert_eq!(next_periodic_deadline(5, 10, 7), Some(15));
        assert_eq!(next_periodic_deadline(5, 10, 15), Some(25));
        assert_eq!(next_periodic_deadline(5, 10, 44), Some(45));
        assert_eq!(next_periodic_deadline(5, 0, 5), None);
    }

    #[test]
    fn cancel_a_periodic_timer_between_pops() {
        let mut storage = TimerStorage::<4, 8>::new();
        let mut w = storage.wheel(ns(MS), at(0)).unwrap();
        let a = w.insert(at(0), ns(5 * MS), Some(ns(5 * MS)), 1).unwrap();
        let b = w.insert(at(0), ns(5 * MS), Some(ns(5 * MS)), 2).unwrap();
        assert_eq!(w.pop_expired(at(5 * MS)), Some((a, 1)));
        // a's callback cancels b (still due) and a itself (already re-armed).
        assert_eq!(w.cancel(b), Ok(2));
        assert_eq!(w.cancel(a), Ok(1));
        assert_eq!(w.pop_expired(at(5 * MS)), None);
        assert!(w.is_empty());
        assert_eq!(drain(&mut w, 100 * MS), []);
        // Cancelled between drains, from the wheel.
        let c = w.insert(at(100 * MS), ns(MS), Some(ns(MS)), 3).unwrap();
        assert_eq!(drain(&mut w, 101 * MS), [(c, 3)]);
        assert_eq!(w.cancel(c), Ok(3));
        assert_eq!(w.cancel(c), Err(TimerError::Stale));
        assert_eq!(drain(&mut w, 200 * MS), []);
    }

    #[test]
    fn far_timer_fires_on_time_and_not_before() {
        const SLOTS: u64 = 16;
        let mut storage = TimerStorage::<4, 16>::new();
        let mut w = storage.wheel(ns(MS), at(0)).unwrap();
        // 100.5 revolutions out, on the same slot as a near timer.
        let far_d = 100 * SLOTS * MS + 3 * MS + 500 * US;
        let far = w.insert(at(0), ns(far_d), None, 1).unwrap();
        let near = w.insert(at(0), ns(4 * MS), None, 2).unwrap();
        assert_eq!(w.next_deadline(), Some(at(4 * MS)));
        assert_eq!(drain(&mut w, 4 * MS), [(near, 2)]);
        // Walk the clock in steps of one tick: it fires exactly once, at its deadline.
        let mut now = 4 * MS;
        while now + MS < far_d {
            now += MS;
            assert_eq!(
                drain(&mut w, now),
                [],
                "not before its deadline (now {now})"
            );
            assert!(w.next_deadline().unwrap() <= at(far_d));
        }
        assert_eq!(drain(&mut w, far_d - 1), []);
        assert_eq!(
            w.next_deadline(),
            Some(at(far_d)),
            "exact within a revolution"
        );
        assert_eq!(drain(&mut w, far_d), [(far, 1)]);
        assert!(w.is_empty());
    }

    #[test]
    fn sleeping_until_next_deadline_wakes_at_most_once_per_revolution() {
        const SLOTS: u64 = 64;
        let mut storage = TimerStorage::<64, 64>::new();
        let mut w = storage.wheel(ns(MS), at(0)).unwrap();
        let mut rng = XorShift::new(7);
        let mut pending: Vec<(u64, TimerId)> = Vec::new();
        // Timers spread over 50 revolutions, all on different slots.
        for i in 0..40u64 {
            let d = (rng.next() % (50 * SLOTS * MS)).max(1);
            pending.push((d, w.insert(at(0), ns(d), None, i).unwrap()));
        }
        let last = pending.iter().map(|&(d, _)| d).max().unwrap();
        let mut now = 0;
        let (mut spurious, mut fired) = (0u64, 0usize);
        while let Some(next) = w.next_deadline() {
            assert!(next.as_nanos() >= now, "no deadline was left behind");
            now = next.as_nanos();
            let got = drain(&mut w, now);
            if got.is_empty() {
                spurious += 1;
                continue;
            }
            for (id, _) in got {
                let &(d, _) = pending.iter().find(|&&(_, p)| p == id).unwrap();
                assert_eq!(d, now, "woken exactly at the deadline");
                fired += 1;
            }
        }
        assert_eq!(fired, pending.len());
        let revolutions = last / (SLOTS * MS) + 1;
        assert!(
            spurious > 0,
            "the test should reach timers beyond one revolution"
        );
        assert!(
            spurious <= revolutions,
            "{spurious} spurious wake-ups over {revolutions} revolutions"
        );
    }

    #[test]
    fn a_late_loop_walks_one_revolution_not_every_tick() {
        let mut storage = TimerStorage::<8, 256>::new();
        // 1 ns ticks and a jump of 2^60 ticks: replaying every tick would never finish.
        let mut w = storage.wheel(ns(1), at(0)).unwrap();
        let a = w.insert(at(0), ns(1 << 50), None, 1).unwrap();
        let b = w.insert(at(0), ns(3), None, 2).unwrap();
        let c = w.insert(at(0), ns((1 << 61) + 5), None, 3).unwrap();
        let p = w.insert(at(0), ns(1000), Some(ns(1 << 40)), 4).unwrap();
        let now = 1u64 << 60;
        assert_eq!(drain(&mut w, now), [(b, 2), (p, 4), (a, 1)]);
        assert_eq!(w.deadline(p), Ok(at(1000 + (1 << 60))), "skipped, no burst");
        assert!(w.next_deadline().unwrap() <= at(1000 + (1 << 60)));
        // Late again by 2^20 periods: p fires once, c is not due yet.
        assert_eq!(drain(&mut w, (1 << 61) + 4), [(p, 4)]);
        assert_eq!(w.deadline(p), Ok(at(1000 + (1 << 61))));
        assert_eq!(drain(&mut w, (1 << 61) + 5), [(c, 3)]);
        assert_eq!(drain(&mut w, (1 << 61) + 1000), [(p, 4)]);
    }

    #[test]
    fn now_going_backwards_is_harmless() {
        let mut storage = TimerStorage::<8, 8>::new();
        let mut w = storage.wheel(ns(MS), at(100 * MS)).unwrap();
        let a = w.insert(at(100 * MS), ns(10 * MS), None, 1).unwrap();
        assert_eq!(drain(&mut w, 105 * MS), []);
        assert_eq!(drain(&mut w, 50 * MS), [], "back in time");
        assert_eq!(drain(&mut w, 0), []);
        // Inserting relative to an earlier now: the deadline is in the past of the cursor.
        let b = w.insert(at(90 * MS), ns(5 * MS), None, 2).unwrap();
        assert_eq!(w.next_deadline(), Some(at(95 * MS)));
        assert_eq!(drain(&mut w, 94 * MS), []);
        assert_eq!(drain(&mut w, 95 * MS), [(b, 2)]);
        assert_eq!(drain(&mut w, 109 * MS), []);
        assert_eq!(drain(&mut w, 110 * MS), [(a, 1)]);
        // A clock before the wheel's start.
        let c = w.insert(at(0), ns(1), None, 3).unwrap();
        assert_eq!(drain(&mut w, 0), []);
        assert_eq!(drain(&mut w, 1), [(c, 3)]);
    }

    #[test]
    fn full_returns_an_error_then_works_after_a_cancel() {
        let mut storage = TimerStorage::<3, 8>::new();
        let mut w = storage.wheel(ns(MS), at(0)).unwrap();
        let ids: Vec<TimerId> = (0..3)
            .map(|i| w.insert(at(0), ns(MS), None, i).unwrap())
            .collect();
        let err = w.insert(at(0), ns(MS), None, 9).unwrap_err();
        assert_eq!(err, TimerError::Full { capacity: 3 });
        let msg = err.to_string();
        assert!(msg.contains("3 timers") && msg.contains("raise") && msg.contains("TIMERS"));
        assert_eq!(w.len(), 3);
        w.cancel(ids[1]).unwrap();
        let again = w.insert(at(0), ns(MS), None, 9).unwrap();
        assert_eq!(again.key().index(), ids[1].key().index());
        // Also after firing.
        assert_eq!(drain(&mut w, MS).len(), 3);
        for i in 0..3 {
            w.insert(at(MS), ns(MS), None, i).unwrap();
        }
        // Zero capacity is always full.
        let mut none: [Slot<TimerEntry>; 0] = [];
        let mut wheel = [0u32; 2];
        let mut w = TimerWheel::new(&mut none, &mut wheel, ns(1), at(0)).unwrap();
        assert_eq!(
            w.insert(at(0), ns(1), None, 0),
            Err(TimerError::Full { capacity: 0 })
        );
        assert_eq!(w.next_deadline(), None);
        assert_eq!(w.pop_expired(at(u64::MAX)), None);
    }

    #[test]
    fn slot_reuse_gives_a_new_generation() {
        let mut storage = TimerStorage::<1, 4>::new();
        let mut w = storage.wheel(ns(MS), at(0)).unwrap();
        let old = w.insert(at(0), ns(MS), None, 1).unwrap();
        assert_eq!(drain(&mut w, MS), [(old, 1)]);
        let new = w.insert(at(MS), ns(MS), None, 2).unwrap();
        assert_eq!(new.key().index(), old.key().index());
        assert_ne!(new, old);
        assert_eq!(w.cancel(old), Err(TimerError::Stale), "never an alias");
        assert!(w.contains(new) && !w.contains(old));
        assert_eq!(w.cancel(new), Ok(2));
        let third = w.insert(at(MS), ns(MS), None, 3).unwrap();
        assert!(third != old && third != new);
    }

    #[test]
    fn ids_of_an_earlier_wheel_over_the_same_storage_are_stale() {
        let mut storage = TimerStorage::<2, 4>::new();
        let old = {
            let mut w = storage.wheel(ns(MS), at(0)).unwrap();
            w.insert(at(0), ns(MS), None, 1).unwrap()
        };
        let mut w = storage.wheel(ns(MS), at(0)).unwrap();
        assert!(w.is_empty(), "a new wheel starts empty");
        let new = w.insert(at(0), ns(MS), None, 2).unwrap();
        assert_eq!(new.key().index(), old.key().index());
        assert_ne!(new, old);
        assert_eq!(w.cancel(old), Err(TimerError::Stale));
        assert_eq!(drain(&mut w, MS), [(new, 2)]);
    }

    #[test]
    fn storage_mixed_from_different_uses_is_an_error() {
        let mut storage = TimerStorage::<4, 4>::new();
        storage.wheel(ns(MS), at(0)).unwrap();
        storage.entries[2] = Slot::new();
        assert_eq!(
            storage.wheel(ns(MS), at(0)).unwrap_err(),
            TimerError::InvalidStorage
        );
        // The same slice as before is fine, any number of times.
        let mut storage = TimerStorage::<4, 4>::new();
        for _ in 0..3 {
            let mut w = storage.wheel(ns(MS), at(0)).unwrap();
            w.insert(at(0), ns(1), None, 0).unwrap();
        }
    }

    #[test]
    fn storage_lives_in_a_static() {
        static STORAGE: Mutex<TimerStorage<16, 64>> = Mutex::new(TimerStorage::new());
        let mut guard = STORAGE.lock().unwrap();
        let mut w = guard.wheel(ns(MS), at(0)).unwrap();
        let id = w.insert(at(0), ns(2 * MS), None, 5).unwrap();
        assert_eq!(drain(&mut w, 2 * MS), [(id, 5)]);
    }

    #[test]
    fn bitmap_finds_the_next_set_bit() {
        let mut b = Bitmap::EMPTY;
        assert!(b.is_empty());
        assert_eq!(b.next_set(0, MAX_WHEEL_SLOTS), None);
        for bit in [0, 63, 64, 200, MAX_WHEEL_SLOTS - 1] {
            b.set(bit);
        }
        assert_eq!(b.next_set(0, MAX_WHEEL_SLOTS), Some(0));
        assert_eq!(b.next_set(1, MAX_WHEEL_SLOTS), Some(63));
        assert_eq!(b.next_set(64, MAX_WHEEL_SLOTS), Some(64));
        assert_eq!(b.next_set(65, MAX_WHEEL_SLOTS), Some(200));
        assert_eq!(b.next_set(65, 200), None);
        assert_eq!(b.next_set(201, MAX_WHEEL_SLOTS), Some(MAX_WHEEL_SLOTS - 1));
        b.clear(MAX_WHEEL_SLOTS - 1);
        assert_eq!(b.next_set_wrapping(201, MAX_WHEEL_SLOTS), Some(0));
        b.clear(0);
        b.clear(63);
        assert_eq!(b.next_set_wrapping(201, MAX_WHEEL_SLOTS), Some(64));
        b.assign(64, false);
        b.assign(200, false);
        assert!(b.is_empty());
    }

    /// Many timers with random delays (sub-tick offsets, many revolutions), fired while the
    /// clock moves in random steps (small, and jumps of several revolutions): the firing order
    /// is the model's sorted order, nothing fires early, nothing stays behind.
    #[test]
    fn firing_order_matches_a_sorted_model() {
        const SLOTS: u64 = 32;
        const N: usize = 300;
        for seed in 1..=24 {
            let mut rng = XorShift::new(seed);
            let res = 1 + rng.next() % (10 * US);
            let start = rng.next() % (1 << 40);
            let mut storage = TimerStorage::<N, 32>::new();
            let mut w = storage.wheel(ns(res), at(start)).unwrap();
            let mut model: Vec<(u64, usize, TimerId)> = Vec::new();
            for i in 0..N {
                let delay = match rng.below(4) {
                    0 => rng.next() % (3 * res),
                    1 => rng.next() % (SLOTS * res),
                    2 => rng.next() % (20 * SLOTS * res),
                    _ => (rng.next() % 8) * res, // exact tick boundaries, many ties
                };
                let id = w.insert(at(start), ns(delay), None, i as u64).unwrap();
                model.push((start + delay, i, id));
            }
            model.sort_by_key(|&(d, i, _)| (d, i));
            let mut fired: Vec<(u64, usize, TimerId)> = Vec::new();
            let mut now = start;
            while fired.len() < N {
                now += match rng.below(10) {
                    0 => rng.next() % (3 * SLOTS * res),
                    1 => 0,
                    _ => rng.next() % (2 * res),
                };
                while let Some((id, token)) = w.pop_expired(at(now)) {
                    let entry = model[fired.len()];
                    assert_eq!((id, token as usize), (entry.2, entry.1), "seed {seed}");
                    assert!(entry.0 <= now, "fired early");
                    fired.push(entry);
                }
                let behind = model.iter().filter(|&&(d, _, _)| d <= now).count();
                assert_eq!(fired.len(), behind, "seed {seed}: an expired timer stayed");
                if let Some(&(d, _, _)) = model.get(fired.len()) {
                    assert!(w.next_deadline().unwrap() <= at(d));
                }
            }
            assert!(w.is_empty());
            assert_eq!(w.next_deadline(), None);
        }
    }

    /// Random inserts (one-shot and periodic), cancels (live and stale), pops and clock moves
    /// (forward, far forward, backward) against a model that keeps every pending timer and
    /// picks the earliest by (deadline, insertion order).
    #[test]
    fn matches_a_model_and_next_deadline_is_never_late() {
        #[derive(Clone, Copy, Debug)]
        struct M {
            id: TimerId,
            deadline: u64,
            seq: u64,
            period: u64,
            token: u64,
        }
        const CAP: usize = 24;
        for seed in 1..=64 {
            let mut rng = XorShift::new(seed);
            let res = [1, 7, US, MS][rng.below(4)];
            let mut storage = TimerStorage::<CAP, 16>::new();
            let mut now = rng.next() % (1 << 30);
            let mut w = storage.wheel(ns(res), at(now)).unwrap();
            let mut model: Vec<M> = Vec::new();
            let mut dead: Vec<TimerId> = Vec::new();
            let mut seq = 0u64;
            for step in 0..2_000u64 {
                match rng.below(10) {
                    0..=2 => {
                        let delay = match rng.below(3) {
                            0 => rng.next() % (4 * res),
                            1 => rng.next() % (16 * res),
                            _ => rng.next() % (200 * res),
                        };
                        let period = match rng.below(3) {
                            0 => Some(1 + rng.next() % (40 * res)),
                            _ => None,
                        };
                        match w.insert(at(now), ns(delay), period.map(ns), step) {
                            Ok(id) => {
                                assert!(model.len() < CAP);
                                assert!(!dead.contains(&id), "an id was reissued");
                                model.push(M {
                                    id,
                                    deadline: now + delay,
                                    seq,
                                    period: period.unwrap_or(0),
                                    token: step,
                                });
                                seq += 1;
                            }
                            Err(e) => {
                                assert_eq!(e, TimerError::Full { capacity: CAP });
                                assert_eq!(model.len(), CAP);
                            }
                        }
                    }
                    3 if !model.is_empty() => {
                        let m = model.swap_remove(rng.below(model.len()));
                        assert_eq!(w.cancel(m.id), Ok(m.token));
                        dead.push(m.id);
                    }
                    4 if !dead.is_empty() => {
                        let id = dead[rng.below(dead.len())];
                        assert_eq!(w.cancel(id), Err(TimerError::Stale));
                        assert_eq!(w.deadline(id), Err(TimerError::Stale));
                    }
                    5 => {
                        now = match rng.below(8) {
                            0 => now.saturating_sub(rng.next() % (20 * res)),
                            1 => now + rng.next() % (100 * res),
                            _ => now + rng.next() % (3 * res),
                        };
                    }
                    _ => {
                        let expect = model
                            .iter()
                            .enumerate()
                            .min_by_key(|(_, m)| (m.deadline, m.seq))
                            .filter(|(_, m)| m.deadline <= now)
                            .map(|(i, _)| i);
                        let got = w.pop_expired(at(now));
                        match expect {
                            None => assert_eq!(got, None, "seed {seed} step {step}"),
                            Some(i) => {
                                let m = model[i];
                                assert_eq!(got, Some((m.id, m.token)), "seed {seed} step {step}");
                                match next_periodic_deadline(m.deadline, m.period, now) {
                                    Some(next) => {
                                        model[i].deadline = next;
                                        model[i].seq = seq;
                                        seq += 1;
                                    }
                                    None => {
                                        model.swap_remove(i);
                                        dead.push(m.id);
                                    }
                                }
                            }
                        }
                    }
                }
                assert_eq!(w.len(), model.len());
                match model.iter().map(|m| m.deadline).min() {
                    None => assert_eq!(w.next_deadline(), None),
                    Some(earliest) => {
                        let next = w.next_deadline().expect("timers are pending");
                        assert!(
                            next <= at(earliest),
                            "seed {seed} step {step}: next_deadline {next:?} after {earliest}"
                        );
                    }
                }
                for m in &model {
                    assert_eq!(w.deadline(m.id), Ok(at(m.deadline)));
                }
            }
        }
    }
}

#[cfg(test)]
mod far_periodic {
    use super::*;
    use crate::pool::Slot;

    #[test]
    fn periodic_beyond_one_revolution_fires_once_per_period() {
        let mut entries: [Slot<TimerEntry>; 4] = core::array::from_fn(|_| Slot::new());
        let mut wheel = [0u32; 512];
        let res = Duration::from_millis(1);
        let t0 = Instant::from_nanos(1_000_000_000);
        let mut w = TimerWheel::new(&mut entries, &mut wheel, res, t0).unwrap();
        w.insert(t0, Duration::from_secs(1), Some(Duration::from_secs(1)), 0)
            .unwrap();
        let mut fired = 0;
        let mut now = t0;
        // Step 10 s in 7 ms increments, like a loop woken by other traffic.
        while now < t0 + Duration::from_secs(10) {
            now = now + Duration::from_millis(7);
            while w.pop_expired(now).is_some() {
                fired += 1;
            }
        }
        assert_eq!(fired, 10, "a 1 s periodic timer fires 10 times in 10 s");
    }
}
