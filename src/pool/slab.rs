//! [`Slab`]: fixed-capacity storage addressed by generational [`Key`]s (see [`Slab`]).

use core::fmt;
use core::iter::{Enumerate, FusedIterator};
use core::slice;

use super::zero::ZeroInit;

/// Sentinel index: the end of the free list.
const NONE: u32 = u32::MAX;

/// The largest number of slots a [`Slab`] uses (indices are `u32`, and `u32::MAX` is reserved as
/// the free-list terminator). Slots of a longer slice beyond this are ignored.
pub const MAX_CAPACITY: usize = u32::MAX as usize;

/// A handle to a value in a [`Slab`]: the slot index plus the slot's generation when the value
/// was inserted.
///
/// A key is 8 bytes and [`Copy`]. [`Key::to_u64`] packs it into one `u64` (for io_uring's
/// `user_data`, for example) and [`Key::from_u64`] unpacks it. Any `u64` unpacks to some key;
/// the slab rejects keys that do not name a current value, so a corrupt or forged key is a
/// [`StaleKey`] error, never an alias.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Key {
    index: u32,
    generation: u32,
}

impl Key {
    /// The key for slot `index` at `generation`.
    pub const fn new(index: u32, generation: u32) -> Key {
        Key { index, generation }
    }

    /// The slot index.
    pub const fn index(self) -> u32 {
        self.index
    }

    /// The slot's generation when this key was issued.
    pub const fn generation(self) -> u32 {
        self.generation
    }

    /// Packs the key into a `u64`: the generation in the high 32 bits, the index in the low 32.
    pub const fn to_u64(self) -> u64 {
        ((self.generation as u64) << 32) | self.index as u64
    }

    /// Unpacks a key packed by [`Key::to_u64`].
    pub const fn from_u64(raw: u64) -> Key {
        Key {
            index: raw as u32,
            generation: (raw >> 32) as u32,
        }
    }
}

/// The key does not name a value in the slab: its value was removed (and the slot possibly
/// reused), or its index is out of range.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct StaleKey {
    key: Key,
}

impl StaleKey {
    /// The key that was rejected.
    pub const fn key(self) -> Key {
        self.key
    }
}

impl fmt::Display for StaleKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stale slab key (index {}, generation {}): its value was removed or the slot reused",
            self.key.index, self.key.generation
        )
    }
}

impl core::error::Error for StaleKey {}

/// Every slot of the slab is occupied.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct SlabFull {
    capacity: usize,
}

impl SlabFull {
    /// The capacity of the full slab (the `N` of its [`SlabStorage`], or its slice length).
    pub const fn capacity(self) -> usize {
        self.capacity
    }
}

impl fmt::Display for SlabFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "slab full: all {} slots are in use; raise the slab's capacity (the N of SlabStorage)",
            self.capacity
        )
    }
}

impl core::error::Error for SlabFull {}

/// One slot of slab storage: either a value or a link in the free list, plus a generation.
///
/// The contents are private; a slot is only useful as an element of the slice a [`Slab`] works
/// over. Values left in slots when a `Slab` is dropped stay in the storage (and are dropped with
/// it, or by the next [`Slab::new`] over it).
///
/// All-zero bytes is a vacant slot at generation 0, the same value as [`Slot::new`]
/// ([`ZeroInit`]).
pub struct Slot<T> {
    generation: u32,
    entry: Entry<T>,
}

/// A slot's contents. `repr(u8)` gives it a defined layout (a `u8` tag, then the variant's
/// fields), with the vacant variant at tag 0, so all-zero bytes is `Vacant(0)`.
#[repr(u8)]
enum Entry<T> {
    /// A vacant slot: the index of the next vacant slot, or [`NONE`]. (Only meaningful while a
    /// [`Slab`] links it; [`Slab::new`] relinks every slot.)
    Vacant(u32) = 0,
    Occupied(T) = 1,
}

impl<T> Slot<T> {
    /// A vacant slot at generation 0 (all-zero bytes).
    pub const fn new() -> Slot<T> {
        Slot {
            generation: 0,
            entry: Entry::Vacant(0),
        }
    }
}

// SAFETY: a slot is a `u32` generation and an `Entry<T>`. `Entry` is `repr(u8)`: its layout is a
// `u8` tag followed by the fields of the variant the tag names, and tag 0 is `Vacant(u32)`. So
// all-zero bytes is `Slot { generation: 0, entry: Entry::Vacant(0) }` whatever `T` is (the bytes
// where an `Occupied` value would be are padding of the vacant variant), which is `Slot::new()`.
// `Slab::new` needs nothing more: it reads only the tag (to drop occupied values) and relinks
// every slot.
unsafe impl<T> ZeroInit for Slot<T> {}

/// All-zero bytes decode as `Slot::new()` (checked at compile time, for one `T`).
const _: () = {
    // SAFETY: `Slot<u64>: ZeroInit` (above); this checks that claim during const evaluation,
    // which also rejects an invalid value.
    let zero: Slot<u64> = unsafe { core::mem::MaybeUninit::zeroed().assume_init() };
    assert!(zero.generation == 0 && matches!(zero.entry, Entry::Vacant(0)));
};

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot::new()
    }
}

impl<T> fmt::Debug for Slot<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot")
            .field("generation", &self.generation)
            .field("occupied", &matches!(self.entry, Entry::Occupied(_)))
            .finish()
    }
}

/// Storage for a [`Slab`] of `N` values, with a `const fn new` so it can live in a `static`.
///
/// `N` must be at most [`MAX_CAPACITY`] (checked when [`SlabStorage::new`] is instantiated; a
/// slab over longer zeroed storage uses the first `MAX_CAPACITY` slots).
///
/// All-zero bytes is valid, empty storage ([`ZeroInit`]), the same value as
/// [`SlabStorage::new`], so big storage can be placed in `.bss` with a
/// [`StaticSlot`](super::StaticSlot), or made in place with [`init_zeroed`](super::init_zeroed)
/// or `leak_zeroed` (feature `std`), never on the stack.
pub struct SlabStorage<T, const N: usize> {
    slots: [Slot<T>; N],
}

// SAFETY: an array of `Slot<T>`, each valid (and vacant) as zero bytes (see `Slot`'s impl).
unsafe impl<T, const N: usize> ZeroInit for SlabStorage<T, N> {}

impl<T, const N: usize> SlabStorage<T, N> {
    /// Empty storage: `N` vacant slots.
    pub const fn new() -> Self {
        const { assert!(N <= MAX_CAPACITY, "SlabStorage: N must be below 2^32 - 1") };
        SlabStorage {
            slots: [const { Slot::new() }; N],
        }
    }

    /// The slots, for [`Slab::new`].
    pub fn as_mut_slice(&mut self) -> &mut [Slot<T>] {
        &mut self.slots
    }

    /// A slab over this storage (shorthand for `Slab::new(storage.as_mut_slice())`).
    pub fn slab(&mut self) -> Slab<'_, T> {
        Slab::new(&mut self.slots)
    }
}

impl<T, const N: usize> Default for SlabStorage<T, N> {
    fn default() -> Self {
        SlabStorage::new()
    }
}

/// Fixed-capacity storage of `T` values addressed by generational [`Key`]s.
///
/// The slab works over a slice of [`Slot`]s the caller provides ([`SlabStorage`] is a ready-made
/// array of them with a `const fn new`, so it can live in a `static`). Insert and remove are O(1):
/// vacated slots form an intrusive free list (each stores the index of the next one), and slots
/// never occupied yet are taken in index order after it, so a slot is first written when a
/// value is inserted into it.
///
/// # Memory
///
/// Neither [`Slab::new`] nor an insert writes a slot other than the one inserted into:
/// [`Slab::new`] only reads each slot's tag (and writes those left occupied by an earlier
/// slab). So over storage from fresh zero pages
/// ([`sys::mem::map_zeroed`](crate::sys::mem::map_zeroed)) or `.bss`, slots that never held a
/// value stay untouched and take no resident memory: reading an untouched page maps the
/// kernel's shared zero page. What a slot touches when used is the value's own business (an
/// insert moves the whole `T` into the slot).
///
/// # Generations
///
/// Every slot carries a generation counter, and a [`Key`] names both the slot and the generation
/// it was issued for. Removing a value bumps the slot's generation, so a key kept after its value
/// was removed (a connection that closed, a timer that fired) no longer matches, even once the
/// slot holds a new value: every method taking a key returns [`StaleKey`] instead of touching
/// the new occupant.
///
/// The counter is 32 bits and wraps. A key is therefore only guaranteed unique among the last
/// 2^32 occupants of its slot: a key held while its slot is reused 2^32 times (about 4.3 billion
/// insert/remove cycles of that one slot) would match again. The event loop keeps keys only
/// while the kernel may still answer for them (bounded by the life of one connection's
/// operations), far below that.
pub struct Slab<'a, T> {
    slots: &'a mut [Slot<T>],
    /// Head of the free list of slots vacated since this slab was made, or [`NONE`].
    free_head: u32,
    /// Slots from this index on have not been occupied since this slab was made: they are
    /// vacant, on no list, and not written (so untouched storage stays untouched).
    fresh: u32,
    len: usize,
}

impl<'a, T> Slab<'a, T> {
    /// A slab over `slots`, with every slot vacant. Capacity is `slots.len()` (at most
    /// [`MAX_CAPACITY`]).
    ///
    /// Values a previous slab left in `slots` are dropped here, and their slots' generations move
    /// on, so keys issued by the previous slab stay stale. This reads every slot's tag once
    /// (O(N)) and writes only the slots it empties (see *Memory* on [`Slab`]).
    ///
    /// Any slots will do: fresh ([`Slot::new`]), zeroed ([`ZeroInit`]), or left by an earlier
    /// slab. Only whether a slot is occupied is read; links left by an earlier slab are ignored.
    pub fn new(slots: &'a mut [Slot<T>]) -> Slab<'a, T> {
        let capacity = slots.len().min(MAX_CAPACITY);
        let slots = &mut slots[..capacity];
        for slot in slots.iter_mut() {
            if matches!(slot.entry, Entry::Occupied(_)) {
                slot.generation = slot.generation.wrapping_add(1);
                // Assigning drops the value an earlier slab left behind.
                slot.entry = Entry::Vacant(NONE);
            }
        }
        Slab {
            slots,
            free_head: NONE,
            fresh: 0,
            len: 0,
        }
    }

    /// The number of slots.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The number of values.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the slab holds no value.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether every slot holds a value (the next insert fails).
    pub fn is_full(&self) -> bool {
        self.free_head == NONE && self.fresh as usize >= self.slots.len()
    }

    /// The key the next insert will return, or `None` when the slab is full.
    pub fn vacant_key(&self) -> Option<Key> {
        let index = if self.free_head != NONE {
            self.free_head
        } else {
            self.fresh
        };
        let slot = self.slots.get(index as usize)?;
        Some(Key::new(index, slot.generation))
    }

    /// Inserts `value` and returns its key, or hands `value` back when the slab is full.
    pub fn try_insert(&mut self, value: T) -> Result<Key, T> {
        match self.vacant_key() {
            Some(key) => {
                self.occupy(key, value);
                Ok(key)
            }
            None => Err(value),
        }
    }

    /// Inserts the value `make(key)` builds, given the key it will be stored under, and returns
    /// that key. When the slab is full, `make` is not called.
    ///
    /// If `make` panics, the slab is unchanged.
    pub fn try_insert_with<F: FnOnce(Key) -> T>(&mut self, make: F) -> Result<Key, SlabFull> {
        let Some(key) = self.vacant_key() else {
            return Err(SlabFull {
                capacity: self.capacity(),
            });
        };
        let value = make(key);
        self.occupy(key, value);
        Ok(key)
    }

    /// Removes and returns the value `key` names. The slot's generation moves on, so `key` (and
    /// every copy of it) is stale from now on.
    pub fn remove(&mut self, key: Key) -> Result<T, StaleKey> {
        let free_head = self.free_head;
        let slot = self.occupied_slot_mut(key)?;
        let Entry::Occupied(value) = core::mem::replace(&mut slot.entry, Entry::Vacant(free_head))
        else {
            unreachable!("occupied_slot_mut returns occupied slots")
        };
        slot.generation = slot.generation.wrapping_add(1);
        self.free_head = key.index;
        self.len -= 1;
        Ok(value)
    }

    /// The value `key` names.
    pub fn get(&self, key: Key) -> Result<&T, StaleKey> {
        match self.slots.get(key.index as usize) {
            Some(Slot {
                generation,
                entry: Entry::Occupied(value),
            }) if *generation == key.generation => Ok(value),
            _ => Err(StaleKey { key }),
        }
    }

    /// The value `key` names, mutably.
    pub fn get_mut(&mut self, key: Key) -> Result<&mut T, StaleKey> {
        match self.occupied_slot_mut(key)?.entry {
            Entry::Occupied(ref mut value) => Ok(value),
            Entry::Vacant(_) => unreachable!("occupied_slot_mut returns occupied slots"),
        }
    }

    /// Whether `key` names a value in the slab.
    pub fn contains(&self, key: Key) -> bool {
        self.get(key).is_ok()
    }

    /// Removes every value (dropping them); all keys become stale. O(capacity).
    pub fn clear(&mut self) {
        let slots = core::mem::take(&mut self.slots);
        *self = Slab::new(slots);
    }

    /// The values with their keys, in slot order. Walks the slots (O(capacity)).
    pub fn iter(&self) -> Iter<'_, T> {
        Iter {
            slots: self.slots.iter().enumerate(),
            remaining: self.len,
        }
    }

    /// The values, mutably, with their keys, in slot order. Walks the slots (O(capacity)).
    pub fn iter_mut(&mut self) -> IterMut<'_, T> {
        IterMut {
            slots: self.slots.iter_mut().enumerate(),
            remaining: self.len,
        }
    }

    /// Stores `value` in the vacant slot `key` names (from [`Slab::vacant_key`]): the free-list
    /// head, or else the first fresh slot.
    fn occupy(&mut self, key: Key, value: T) {
        let slot = &mut self.slots[key.index as usize];
        if key.index == self.free_head {
            let Entry::Vacant(next) = slot.entry else {
                unreachable!("the free list links only vacant slots")
            };
            self.free_head = next;
        } else {
            debug_assert_eq!(
                key.index, self.fresh,
                "vacant_key names the first fresh slot"
            );
            debug_assert!(matches!(slot.entry, Entry::Vacant(_)));
            self.fresh += 1;
        }
        slot.entry = Entry::Occupied(value);
        self.len += 1;
    }

    fn occupied_slot_mut(&mut self, key: Key) -> Result<&mut Slot<T>, StaleKey> {
        match self.slots.get_mut(key.index as usize) {
            Some(slot)
                if slot.generation == key.generation
                    && matches!(slot.entry, Entry::Occupied(_)) =>
            {
                Ok(slot)
            }
            _ => Err(StaleKey { key }),
        }
    }
}

impl<T> fmt::Debug for Slab<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slab")
            .field("len", &self.len)
            .field("capacity", &self.capacity())
            .finish()
    }
}

/// Iterator over a slab's `(Key, &T)`, from [`Slab::iter`].
pub struct Iter<'s, T> {
    slots: Enumerate<slice::Iter<'s, Slot<T>>>,
    remaining: usize,
}

impl<'s, T> Iterator for Iter<'s, T> {
    type Item = (Key, &'s T);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        for (i, slot) in self.slots.by_ref() {
            if let Entry::Occupied(value) = &slot.entry {
                self.remaining -= 1;
                return Some((Key::new(i as u32, slot.generation), value));
            }
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl<T> ExactSizeIterator for Iter<'_, T> {}
impl<T> FusedIterator for Iter<'_, T> {}

/// Iterator over a slab's `(Key, &mut T)`, from [`Slab::iter_mut`].
pub struct IterMut<'s, T> {
    slots: Enumerate<slice::IterMut<'s, Slot<T>>>,
    remaining: usize,
}

impl<'s, T> Iterator for IterMut<'s, T> {
    type Item = (Key, &'s mut T);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        for (i, slot) in self.slots.by_ref() {
            if let Entry::Occupied(value) = &mut slot.entry {
                self.remaining -= 1;
                return Some((Key::new(i as u32, slot.generation), value));
            }
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl<T> ExactSizeIterator for IterMut<'_, T> {}
impl<T> FusedIterator for IterMut<'_, T> {}

impl<'s, T> IntoIterator for &'s Slab<'_, T> {
    type Item = (Key, &'s T);
    type IntoIter = Iter<'s, T>;

    fn into_iter(self) -> Iter<'s, T> {
        self.iter()
    }
}

impl<'s, T> IntoIterator for &'s mut Slab<'_, T> {
    type Item = (Key, &'s mut T);
    type IntoIter = IterMut<'s, T>;

    fn into_iter(self) -> IterMut<'s, T> {
        self.iter_mut()
    }
}

static_assertions::assert_eq_size!(Key, u64);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::test_rng::XorShift;
    use crate::pool::{StaticSlot, init_zeroed, leak_zeroed};
    use core::mem::MaybeUninit;
    use std::boxed::Box;
    use std::cell::Cell;
    use std::rc::Rc;
    use std::string::{String, ToString};
    use std::sync::Mutex;
    use std::vec::Vec;

    #[test]
    fn insert_get_remove() {
        let mut storage = SlabStorage::<u32, 4>::new();
        let mut slab = storage.slab();
        assert!(slab.is_empty());
        assert_eq!(slab.capacity(), 4);
        let a = slab.try_insert(10).unwrap();
        let b = slab.try_insert(20).unwrap();
        assert_ne!(a, b);
        assert_eq!(slab.len(), 2);
        assert_eq!(slab.get(a), Ok(&10));
        *slab.get_mut(b).unwrap() += 1;
        assert_eq!(slab.remove(b), Ok(21));
        assert_eq!(slab.len(), 1);
        assert!(slab.contains(a));
        assert!(!slab.contains(b));
    }

    #[test]
    fn full_hands_the_value_back() {
        let mut storage = SlabStorage::<&str, 2>::new();
        let mut slab = storage.slab();
        slab.try_insert("a").unwrap();
        slab.try_insert("b").unwrap();
        assert!(slab.is_full());
        assert_eq!(slab.vacant_key(), None);
        assert_eq!(slab.try_insert("c"), Err("c"));
        let mut called = false;
        let err = slab
            .try_insert_with(|_| {
                called = true;
                "d"
            })
            .unwrap_err();
        assert!(!called, "make must not run when the slab is full");
        assert_eq!(err.capacity(), 2);
        let msg = err.to_string();
        assert!(msg.contains("2 slots") && msg.contains("raise"), "{msg}");
        assert_eq!(slab.len(), 2);
    }

    #[test]
    fn zero_capacity() {
        let mut slots: [Slot<u8>; 0] = [];
        let mut slab = Slab::new(&mut slots);
        assert!(slab.is_full() && slab.is_empty());
        assert_eq!(slab.try_insert(1), Err(1));
        assert_eq!(slab.try_insert_with(|_| 1).unwrap_err().capacity(), 0);
        assert!(slab.get(Key::new(0, 0)).is_err());
    }

    #[test]
    fn insert_with_sees_its_own_key() {
        let mut storage = SlabStorage::<Key, 3>::new();
        let mut slab = storage.slab();
        for _ in 0..3 {
            let predicted = slab.vacant_key().unwrap();
            let key = slab.try_insert_with(|k| k).unwrap();
            assert_eq!(key, predicted);
            assert_eq!(slab.get(key), Ok(&key));
        }
    }

    #[test]
    fn stale_key_after_remove_and_after_reuse() {
        let mut storage = SlabStorage::<u32, 1>::new();
        let mut slab = storage.slab();
        let old = slab.try_insert(1).unwrap();
        assert_eq!(slab.remove(old), Ok(1));
        let stale = StaleKey { key: old };
        // After remove: every key-taking method rejects it.
        assert_eq!(slab.get(old), Err(stale));
        assert_eq!(slab.get_mut(old).unwrap_err(), stale);
        assert_eq!(slab.remove(old), Err(stale));
        assert!(!slab.contains(old));
        // After reuse: same index, new generation; the old key still does not alias.
        let new = slab.try_insert(2).unwrap();
        assert_eq!(new.index(), old.index());
        assert_ne!(new.generation(), old.generation());
        assert_eq!(slab.get(old), Err(stale));
        assert_eq!(slab.remove(old), Err(stale));
        assert_eq!(slab.get(new), Ok(&2));
        assert!(stale.to_string().contains("stale"));
        // Out-of-range index.
        assert!(slab.get(Key::new(7, 0)).is_err());
        assert!(slab.remove(Key::new(u32::MAX, 0)).is_err());
    }

    #[test]
    fn generation_wraps_around() {
        let mut storage = SlabStorage::<u8, 1>::new();
        storage.slots[0].generation = u32::MAX;
        let mut slab = Slab::new(storage.as_mut_slice());
        let k = slab.try_insert(1).unwrap();
        assert_eq!(k.generation(), u32::MAX);
        slab.remove(k).unwrap();
        let k2 = slab.try_insert(2).unwrap();
        assert_eq!(
            k2.generation(),
            0,
            "the generation wraps to 0 after 2^32 reuses"
        );
        assert!(slab.get(k).is_err());
    }

    #[test]
    fn key_packs_into_u64() {
        let k = Key::new(0xdead_beef, 0x0123_4567);
        assert_eq!(k.to_u64(), 0x0123_4567_dead_beef);
        assert_eq!(Key::from_u64(k.to_u64()), k);
        assert_eq!(core::mem::size_of::<Key>(), 8);
        for raw in [0, u64::MAX, 1 << 32, u32::MAX as u64] {
            assert_eq!(Key::from_u64(raw).to_u64(), raw);
        }
    }

    #[derive(Debug)]
    struct DropCount(Rc<Cell<usize>>);
    impl Drop for DropCount {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }

    #[test]
    fn new_over_used_storage_drops_leftovers_and_keeps_old_keys_stale() {
        let drops = Rc::new(Cell::new(0));
        let mut storage = SlabStorage::<DropCount, 3>::new();
        let (k1, k2) = {
            let mut slab = storage.slab();
            let k1 = slab.try_insert(DropCount(drops.clone())).unwrap();
            let k2 = slab.try_insert(DropCount(drops.clone())).unwrap();
            drop(slab.remove(k2).unwrap());
            assert_eq!(drops.get(), 1);
            (k1, k2)
        };
        // k1's value is still in the storage; a new slab drops it.
        assert_eq!(drops.get(), 1);
        let mut slab = storage.slab();
        assert_eq!(drops.get(), 2);
        assert!(slab.is_empty());
        for _ in 0..3 {
            let k = slab.try_insert(DropCount(drops.clone())).unwrap();
            assert_ne!(k, k1);
            assert_ne!(k, k2);
        }
        assert!(slab.get(k1).is_err() && slab.get(k2).is_err());
        slab.clear();
        assert_eq!(drops.get(), 5);
        assert!(slab.is_empty() && slab.capacity() == 3);
    }

    #[test]
    fn iteration_yields_occupied_in_slot_order() {
        let mut storage = SlabStorage::<u32, 5>::new();
        let mut slab = storage.slab();
        let keys: Vec<Key> = (0..5).map(|i| slab.try_insert(i).unwrap()).collect();
        slab.remove(keys[1]).unwrap();
        slab.remove(keys[3]).unwrap();
        let it = slab.iter();
        assert_eq!(it.len(), 3);
        let seen: Vec<(Key, u32)> = it.map(|(k, v)| (k, *v)).collect();
        assert_eq!(seen, [(keys[0], 0), (keys[2], 2), (keys[4], 4)]);
        for (_, v) in &mut slab {
            *v *= 10;
        }
        let values: Vec<u32> = (&slab).into_iter().map(|(_, v)| *v).collect();
        assert_eq!(values, [0, 20, 40]);
        assert_eq!(slab.iter_mut().len(), 3);
    }

    #[test]
    fn storage_lives_in_a_static() {
        static STORAGE: Mutex<SlabStorage<u64, 8>> = Mutex::new(SlabStorage::new());
        let mut guard = STORAGE.lock().unwrap();
        let mut slab = guard.slab();
        let k = slab.try_insert(5).unwrap();
        assert_eq!(slab.get(k), Ok(&5));
    }

    /// Every slot vacant at generation 0: what `SlabStorage::new` builds and what zero bytes
    /// decode as.
    fn assert_all_zero<T, const N: usize>(storage: &SlabStorage<T, N>) {
        for slot in &storage.slots {
            assert_eq!(slot.generation, 0);
            assert!(matches!(slot.entry, Entry::Vacant(0)));
        }
    }

    #[test]
    fn new_is_the_zero_value() {
        assert_all_zero(&SlabStorage::<u64, 4>::new());
        assert_all_zero(&SlabStorage::<String, 4>::new());
        assert_all_zero(&SlabStorage::<[u8; 3], 4>::new());
        let mut slot = MaybeUninit::<SlabStorage<String, 4>>::uninit();
        assert_all_zero(init_zeroed(&mut slot));
        let mut slot = MaybeUninit::<SlabStorage<u8, 4>>::uninit();
        assert_all_zero(init_zeroed(&mut slot));
    }

    /// Uses a slab over `storage` to capacity and back: inserts until full, reads, removes
    /// everything, checks stale keys, reuses a slot. Leaves one value in the storage.
    fn use_fully<const N: usize>(storage: &mut SlabStorage<String, N>) {
        let mut slab = storage.slab();
        assert_eq!((slab.capacity(), slab.len()), (N, 0));
        let keys: Vec<Key> = (0..N)
            .map(|i| slab.try_insert(i.to_string()).unwrap())
            .collect();
        assert!(slab.is_full());
        assert_eq!(slab.try_insert("x".to_string()), Err("x".to_string()));
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(slab.get(*key).unwrap(), &i.to_string());
        }
        for key in &keys {
            slab.remove(*key).unwrap();
        }
        assert!(slab.is_empty());
        assert!(keys.iter().all(|k| slab.get(*k).is_err()));
        let key = slab.try_insert("again".to_string()).unwrap();
        assert!(
            key.generation() > 0 && !keys.contains(&key),
            "a reused slot moved on"
        );
        slab.get_mut(key).unwrap().push('!');
        assert_eq!(
            slab.iter().map(|(_, v)| v.as_str()).collect::<Vec<_>>(),
            ["again!"]
        );
    }

    #[test]
    fn zeroed_storage_in_place() {
        let mut slot = MaybeUninit::<SlabStorage<String, 8>>::uninit();
        let storage = init_zeroed(&mut slot);
        use_fully(storage);
        // Twice over the same storage: the second slab drops what the first left behind.
        use_fully(storage);
        // SAFETY: initialised by `init_zeroed` and used only through it; this drops the value
        // the slab left in the storage (a `MaybeUninit` would not).
        unsafe { slot.assume_init_drop() };
    }

    #[test]
    fn leaked_zeroed_storage() {
        let storage = leak_zeroed::<SlabStorage<String, 8>>();
        use_fully(storage);
        let mut slab = storage.slab();
        assert!(slab.is_empty(), "a new slab drops the leftover");
        slab.try_insert("left".to_string()).unwrap();
        // SAFETY: `storage` came from `leak_zeroed` (the global allocator, with the layout of
        // the type, as `Box` uses) and is not used again; reclaiming it (and the value left in
        // it) keeps Miri's leak check on.
        drop(unsafe { Box::from_raw(storage) });
    }

    #[test]
    fn storage_from_a_static_slot() {
        static STORAGE: StaticSlot<SlabStorage<String, 4>> = StaticSlot::new();
        let storage = STORAGE.take().unwrap();
        use_fully(storage);
        storage.slab().clear();
        assert!(STORAGE.take().is_none());
    }

    /// Megabytes of slots, never built on the stack.
    #[test]
    #[cfg_attr(miri, ignore = "large")]
    fn big_zeroed_storage() {
        const N: usize = 1 << 17;
        let storage = leak_zeroed::<SlabStorage<u64, N>>();
        assert!(core::mem::size_of_val(storage) >= 2 << 20);
        let mut slab = storage.slab();
        for i in 0..N as u64 {
            slab.try_insert(i).unwrap();
        }
        assert!(slab.is_full());
        assert_eq!(slab.get(Key::new(N as u32 - 1, 0)), Ok(&(N as u64 - 1)));
        // SAFETY: from `leak_zeroed`, not used again (see `leaked_zeroed_storage`).
        drop(unsafe { Box::from_raw(storage) });
    }

    /// Random insert / remove / stale lookups against a `Vec<Option<..>>` model.
    #[test]
    fn matches_a_model() {
        const CAP: usize = 16;
        let rounds = if cfg!(miri) { 4 } else { 64 };
        let steps = if cfg!(miri) { 300 } else { 3000 };
        for seed in 1..=rounds {
            let mut rng = XorShift::new(seed);
            let mut storage = SlabStorage::<u64, CAP>::new();
            let mut slab = storage.slab();
            // model[i] = Some((key, value)) for the live value in slot i.
            let mut model: Vec<Option<(Key, u64)>> = std::vec![None; CAP];
            let mut dead: Vec<Key> = Vec::new();
            for step in 0..steps {
                let live: Vec<Key> = model.iter().flatten().map(|(k, _)| *k).collect();
                match rng.below(5) {
                    0 | 1 => {
                        let value = rng.next();
                        match slab.try_insert(value) {
                            Ok(key) => {
                                assert!(live.len() < CAP);
                                let slot = &mut model[key.index() as usize];
                                assert!(slot.is_none(), "insert reused a live slot");
                                assert!(!dead.contains(&key), "insert reissued a dead key");
                                *slot = Some((key, value));
                            }
                            Err(back) => {
                                assert_eq!(back, value);
                                assert_eq!(live.len(), CAP);
                            }
                        }
                    }
                    2 if !live.is_empty() => {
                        let key = live[rng.below(live.len())];
                        let want = model[key.index() as usize].take().unwrap().1;
                        assert_eq!(slab.remove(key), Ok(want));
                        dead.push(key);
                    }
                    3 if !dead.is_empty() => {
                        let key = dead[rng.below(dead.len())];
                        assert_eq!(slab.get(key), Err(StaleKey { key }));
                        assert!(slab.remove(key).is_err());
                    }
                    _ if !live.is_empty() => {
                        let key = live[rng.below(live.len())];
                        let v = slab.get_mut(key).unwrap();
                        *v = v.wrapping_add(step);
                        model[key.index() as usize].as_mut().unwrap().1 = *v;
                    }
                    _ => {}
                }
                let expected: Vec<(Key, u64)> = model.iter().flatten().copied().collect();
                assert_eq!(slab.len(), expected.len());
                assert_eq!(slab.is_full(), expected.len() == CAP);
                let actual: Vec<(Key, u64)> = slab.iter().map(|(k, v)| (k, *v)).collect();
                assert_eq!(actual, expected);
            }
        }
    }

    #[test]
    fn fresh_slots_are_taken_in_order_after_vacated_ones() {
        let mut storage = SlabStorage::<u32, 4>::new();
        let mut slab = storage.slab();
        let k: Vec<Key> = (0..3).map(|v| slab.try_insert(v).unwrap()).collect();
        assert_eq!(k.iter().map(|k| k.index()).collect::<Vec<_>>(), [0, 1, 2]);
        slab.remove(k[1]).unwrap();
        slab.remove(k[0]).unwrap();
        // Vacated slots first (last vacated first), then the untouched one, then full.
        assert_eq!(slab.try_insert(10).unwrap(), Key::new(0, 1));
        assert_eq!(slab.try_insert(11).unwrap(), Key::new(1, 1));
        assert!(!slab.is_full());
        assert_eq!(slab.try_insert(12).unwrap(), Key::new(3, 0));
        assert!(slab.is_full());
        assert_eq!(slab.try_insert(13), Err(13));
        assert_eq!(slab.get(k[0]), Err(StaleKey { key: k[0] }));
        // A new slab over used storage: values dropped, generations moved on, links ignored.
        let mut slab = storage.slab();
        assert!(slab.is_empty());
        assert_eq!(slab.try_insert(20).unwrap(), Key::new(0, 2));
        assert_eq!(slab.try_insert(21).unwrap(), Key::new(1, 2));
        assert_eq!(slab.try_insert(22).unwrap(), Key::new(2, 1));
        assert_eq!(slab.try_insert(23).unwrap(), Key::new(3, 1));
        assert!(slab.is_full());
    }

    #[test]
    fn empty_slice_is_full() {
        let mut slab = Slab::<u8>::new(&mut []);
        assert!(slab.is_full());
        assert_eq!(slab.vacant_key(), None);
        assert_eq!(slab.try_insert(1), Err(1));
    }

    /// A slab over fresh zero pages makes no slot resident but those it inserts into (Slab::new
    /// only reads the tags of vacant slots). Not under Miri: it has no `mmap`.
    #[cfg(not(miri))]
    #[test]
    fn untouched_slots_stay_untouched() {
        use crate::sys::mem::map_zeroed;
        use crate::sys::process::rss_bytes;
        const SLOTS: usize = 8192;
        // 8192 slots of a page and a bit: 32 MiB.
        let storage = map_zeroed::<SlabStorage<[u8; 4096], SLOTS>>().unwrap();
        let before = rss_bytes().unwrap();
        let mut slab = storage.slab();
        for _ in 0..4 {
            slab.try_insert([7; 4096]).unwrap();
        }
        assert_eq!(slab.len(), 4);
        assert!(!slab.is_full());
        let grown = rss_bytes().unwrap().saturating_sub(before);
        // Other test threads allocate meanwhile; 12 MiB is far below the 32 MiB that linking
        // every slot would touch.
        assert!(grown < 12 << 20, "RSS grew by {grown} bytes");
    }
}
