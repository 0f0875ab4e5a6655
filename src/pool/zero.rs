//! Zero-initialised storage: [`ZeroInit`], [`init_zeroed`], [`StaticSlot`] and (with the `std`
//! feature) `leak_zeroed`.
//!
//! Pool storage is big (megabytes of buffers is normal), and a `const fn new()` value is built on
//! the stack before it is moved anywhere, which overflows small stacks and costs a memcpy. Every
//! storage type in [`pool`](super) is valid as all-zero bytes instead, so it can be created where
//! it will live:
//!
//! - in a `static`, through [`StaticSlot`]: the static is all-zero, so it lands in `.bss` and
//!   costs no bytes in the binary and no page until it is touched; [`StaticSlot::take`] hands
//!   out the `&'static mut` once, without `unsafe` in user code;
//! - in memory the caller already has (a `static` `MaybeUninit`, a `Box::new_uninit`, a mapped
//!   region), through [`init_zeroed`];
//! - in fresh anonymous pages, mapped once at start-up and resident only as they are used,
//!   through [`sys::mem::map_zeroed`](crate::sys::mem::map_zeroed) (the way for big storage);
//! - on the heap, leaked once, through `leak_zeroed` (feature `std`; the library itself never
//!   allocates), mostly for tests: it runs under Miri, and the allocator may write every page.
//!
//! The storage types still have `const fn new()`, which produces the same (all-zero) value; the
//! tests check that.
//!
//! A struct that bundles such storage (a program's or a module's whole storage in one value) is
//! `ZeroInit` through [`impl_zero_init!`](crate::impl_zero_init), which checks every field at
//! compile time, so modules where `unsafe` is denied can compose storage without writing it.

use core::cell::UnsafeCell;
use core::fmt;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, Ordering};

/// Types for which all-zero bytes is a valid, *empty* value.
///
/// "Empty" means: the value a fresh `new()` would produce (where the type has one), or at least
/// a value the type's users accept as a starting point without any other initialisation: a
/// [`Slab`](super::Slab), a [`BufPool`](super::BufPool) or a [`SlabArena`](super::SlabArena)
/// can be built over zeroed storage directly.
///
/// Implemented for the pool's storage types, for the primitive integers and `bool`, and for
/// arrays of `ZeroInit` types.
///
/// # Safety
///
/// Implementing this trait promises that a `Self` whose every byte (padding included) is zero
/// is a valid value of `Self`: reading or using it as a `Self` is not undefined behaviour. This
/// rules out, among others, references, `NonNull` and other non-nullable pointers, function
/// pointers, `NonZero*` integers, and enums without a variant whose discriminant and fields are
/// all zero (a Rust-layout enum has no defined discriminant at all: give it a `#[repr]`). Library
/// invariants count too: a type whose safe methods rely on more than "all bytes zero" (say, a
/// length field that must match a buffer) must not implement it unless zero satisfies them.
pub unsafe trait ZeroInit {}

// SAFETY: zero is a valid value of every primitive integer, and `false` is the zero byte.
unsafe impl ZeroInit for u8 {}
// SAFETY: as above.
unsafe impl ZeroInit for u16 {}
// SAFETY: as above.
unsafe impl ZeroInit for u32 {}
// SAFETY: as above.
unsafe impl ZeroInit for u64 {}
// SAFETY: as above.
unsafe impl ZeroInit for u128 {}
// SAFETY: as above.
unsafe impl ZeroInit for usize {}
// SAFETY: as above.
unsafe impl ZeroInit for i8 {}
// SAFETY: as above.
unsafe impl ZeroInit for i16 {}
// SAFETY: as above.
unsafe impl ZeroInit for i32 {}
// SAFETY: as above.
unsafe impl ZeroInit for i64 {}
// SAFETY: as above.
unsafe impl ZeroInit for i128 {}
// SAFETY: as above.
unsafe impl ZeroInit for isize {}
// SAFETY: `false` is represented by the byte 0.
unsafe impl ZeroInit for bool {}
// SAFETY: `WakeSignal`'s only field is an `AtomicU32` (core's, without loom), which has the
// size and bit validity of a `u32`; zero is its AWAKE state, the one `WakeSignal::new` builds.
#[cfg(not(loom))]
unsafe impl ZeroInit for crate::sync::WakeSignal {}
// SAFETY: an array has no padding of its own; its bytes are its elements' bytes, each valid
// when zero because `T: ZeroInit`.
unsafe impl<T: ZeroInit, const N: usize> ZeroInit for [T; N] {}
// SAFETY: `PhantomData` has no bytes, so it is trivially all-zero, and it has one value.
unsafe impl<T: ?Sized> ZeroInit for core::marker::PhantomData<T> {}

/// Implements [`ZeroInit`] for a struct with named fields, after checking at compile time that
/// every field's type is `ZeroInit`; the call site writes no `unsafe`.
///
/// ```
/// use ringlet::pool::{SlabStorage, ZeroInit, init_zeroed};
///
/// /// A module's storage in one value: a slab and an index as long as it.
/// pub struct Storage<'a, const N: usize> {
///     names: SlabStorage<&'a str, N>,
///     index: [u32; N],
///     generation: u64,
/// }
///
/// ringlet::impl_zero_init! {
///     impl['a, const N: usize] Storage<'a, N> { names, index, generation }
/// }
///
/// let mut slot = core::mem::MaybeUninit::<Storage<'static, 8>>::uninit();
/// let storage = init_zeroed(&mut slot);
/// let mut names = storage.names.slab();
/// let key = names.try_insert("a").unwrap();
/// assert_eq!(names.get(key), Ok(&"a"));
/// assert_eq!(storage.index, [0; 8]);
/// ```
///
/// The form is `impl[GENERICS] TYPE { FIELD, ... }`: the generic parameters as they would
/// follow `impl` (the brackets may be left out when there are none), the type, and the names of
/// **all** its fields.
///
/// Each of these is a compile error:
///
/// ```compile_fail
/// # use ringlet::pool::SlabStorage;
/// pub struct Storage { slab: SlabStorage<u64, 4>, index: [u32; 4] }
/// // `index` is not listed.
/// ringlet::impl_zero_init! { impl Storage { slab } }
/// ```
///
/// ```compile_fail
/// # use ringlet::pool::SlabStorage;
/// // A reference is never valid as zero bytes.
/// pub struct Storage { slab: SlabStorage<u64, 4>, name: &'static str }
/// ringlet::impl_zero_init! { impl Storage { slab, name } }
/// ```
///
/// ```compile_fail
/// // Not a struct.
/// pub enum Storage { A { x: u32 }, B { x: u32 } }
/// ringlet::impl_zero_init! { impl Storage { x } }
/// ```
///
/// # What is checked
///
/// The macro adds a private method that destructures `Self` into exactly the listed fields (no
/// `..`) and passes each to a function bounded by `T: ZeroInit`. So the code does not compile
/// unless `TYPE` is a struct with named fields (`Self { .. }` names no enum, and on a union
/// it needs `unsafe`), the list names every field, and every field's type
/// is `ZeroInit` for all values of the generic parameters. A field added later without being
/// listed, or of a type that is not `ZeroInit`, is a compile error at the macro call.
///
/// Given that, all-zero bytes is a valid `TYPE`: a struct's bytes are its fields' bytes and
/// padding, the padding may hold anything, and each field is valid as zero bytes by its own
/// `ZeroInit` impl. That is the whole of the trait's language-level promise. Its library-level
/// part (all-zero is an acceptable *empty* value of `TYPE`) is the calling module's statement,
/// exactly as if it wrote a constructor that sets every field to its empty value: call the
/// macro only where that holds. A type whose own `unsafe` code relies on more than "every field
/// empty" must not use it, but write its own `unsafe impl` with a `// SAFETY:` comment.
///
/// # Why it works where `unsafe` is denied
///
/// Lint levels apply where code ends up after macro expansion, not where the macro is written:
/// an `unsafe impl` that a macro from this module (where `unsafe_code` is allowed) expands in a
/// module under `#![deny(unsafe_code)]` is still reported there. Stable Rust has no way for a
/// macro definition to lift that (`#[allow_internal_unsafe]` is unstable), so the expansion
/// carries its own `#[allow(unsafe_code)]` on that one impl. This is deliberate, and the reason
/// it is acceptable: the impl is sound by the checks above, which the caller cannot bypass, and
/// the one `unsafe` item with its safety argument lives here in `pool`. A crate that
/// `forbid`s `unsafe_code` cannot use the macro (`forbid` cannot be relaxed), by design of
/// `forbid`.
#[macro_export]
macro_rules! impl_zero_init {
    (impl [$($generics:tt)*] $ty:ty { $($field:ident),+ $(,)? }) => {
        const _: () = {
            impl<$($generics)*> $ty {
                /// Compile-time check for `impl_zero_init!`: every field is `ZeroInit`.
                #[allow(dead_code)]
                fn __ringlet_every_field_is_zero_init(&self) {
                    fn zero_init<T: $crate::pool::ZeroInit>(_: &T) {}
                    let Self { $($field),+ } = self;
                    $(zero_init($field);)+
                }
            }
        };
        // SAFETY: the method above compiles only if `$ty` is a struct whose fields are exactly
        // the listed ones and each field's type is `ZeroInit` (valid as all-zero bytes). A
        // struct's bytes are its fields' bytes plus padding, which may hold anything, so
        // all-zero bytes is a valid `$ty`. The caller states that this value is an acceptable
        // empty one (see the macro's documentation).
        #[allow(unsafe_code)]
        unsafe impl<$($generics)*> $crate::pool::ZeroInit for $ty {}
    };
    (impl $ty:ty { $($field:ident),+ $(,)? }) => {
        $crate::impl_zero_init! { impl[] $ty { $($field),+ } }
    };
}

/// Zero-fills `slot` and returns it as an initialised `T`, in place (nothing is built on the
/// stack).
///
/// Whatever `slot` held before is overwritten without being dropped (a `MaybeUninit` never drops
/// its contents).
///
/// ```
/// use core::mem::MaybeUninit;
/// use ringlet::pool::{init_zeroed, SlabStorage};
///
/// let mut slot = MaybeUninit::<SlabStorage<u64, 16>>::uninit();
/// let storage = init_zeroed(&mut slot);
/// let mut slab = storage.slab();
/// let key = slab.try_insert(7).unwrap();
/// assert_eq!(slab.get(key), Ok(&7));
/// ```
pub fn init_zeroed<T: ZeroInit>(slot: &mut MaybeUninit<T>) -> &mut T {
    // SAFETY: `slot` is valid for writes of one `T` (it is a `&mut MaybeUninit<T>`), so writing
    // `size_of::<T>()` zero bytes stays in bounds. Afterwards every byte of the `T` is zero,
    // which `T: ZeroInit` promises is a valid `T`, so `assume_init_mut` is sound.
    unsafe {
        slot.as_mut_ptr().write_bytes(0, 1);
        slot.assume_init_mut()
    }
}

/// A `static` that hands out `&'static mut T` to all-zero storage once, without `unsafe` in
/// user code.
///
/// The slot is all-zero ([`StaticSlot::new`] is `const` and builds zero bytes only: an unset
/// flag and a zeroed `T`), so a `static StaticSlot<..>` is placed in `.bss`: it takes no space
/// in the binary, is never built on the stack, and its pages are not touched until the program
/// uses them. Because `T: ZeroInit`, the zeroed bytes already are a valid, empty `T`, so
/// [`StaticSlot::take`] does not write them again (writing would commit every page of a big
/// storage at start-up).
///
/// ```
/// use ringlet::pool::{BufPool, BufPoolConfig, BufPoolStorage, RecvTier, StaticSlot};
///
/// static POOL: StaticSlot<BufPoolStorage<64, 2048>> = StaticSlot::new();
///
/// let storage = POOL.take().expect("taken once at start-up");
/// let config = BufPoolConfig { recv_tier: RecvTier::FreeList, user_reserve: 8 };
/// let pool = BufPool::new(storage, config).unwrap();
/// assert_eq!(pool.total(), 64);
/// assert!(POOL.take().is_none(), "a second take gets nothing");
/// ```
pub struct StaticSlot<T> {
    taken: AtomicBool,
    value: UnsafeCell<MaybeUninit<T>>,
}

// SAFETY: through a shared `&StaticSlot<T>` the value is reachable only by `take`, which hands
// out its `&mut T` at most once (the atomic swap of `taken` lets exactly one caller through).
// So at most one thread ever accesses the `T`, whichever thread called `take` first: that is a
// transfer of the `T` to that thread, sound when `T: Send`.
unsafe impl<T: Send> Sync for StaticSlot<T> {}

impl<T: ZeroInit> StaticSlot<T> {
    /// An untaken slot holding an all-zero `T`.
    pub const fn new() -> Self {
        StaticSlot {
            taken: AtomicBool::new(false),
            value: UnsafeCell::new(MaybeUninit::zeroed()),
        }
    }

    /// The storage, zero-initialised (an empty `T`), on the first call; `None` on every later
    /// call, from any thread.
    // A `&mut` from a shared borrow, which is sound because the flag lets it out only once.
    #[allow(clippy::mut_from_ref)]
    pub fn take(&'static self) -> Option<&'static mut T> {
        // Only the first swap sees `false`. No other memory is published through the flag (the
        // value's bytes were fixed when the static was built), so `Relaxed` suffices: a
        // read-modify-write on one atomic is totally ordered.
        if self.taken.swap(true, Ordering::Relaxed) {
            return None;
        }
        // SAFETY: this is the first and only call that gets here (see the swap), so no other
        // reference to the value exists or will ever be made; `&'static self` makes the memory
        // live forever. The value is all zero bytes (built by `MaybeUninit::zeroed` in `new`,
        // the only constructor, and untouched since), which `T: ZeroInit` makes a valid `T`.
        Some(unsafe { (*self.value.get()).assume_init_mut() })
    }

    /// Whether [`StaticSlot::take`] has handed the storage out.
    pub fn is_taken(&self) -> bool {
        self.taken.load(Ordering::Relaxed)
    }
}

impl<T: ZeroInit> Default for StaticSlot<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for StaticSlot<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticSlot")
            .field("taken", &self.taken.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Allocates a zeroed `T` on the heap and leaks it: `&'static mut` storage built in place, for
/// programs that size their storage at start-up or whose storage is too big for a `static`.
///
/// This is the only allocation ringlet offers, and only with the `std` feature; call it once per
/// storage at start-up. The memory comes from `std::alloc::alloc_zeroed` and is never freed
/// (a test may reclaim it with `Box::from_raw`, which keeps Miri's leak check on). A
/// zero-sized `T` allocates nothing.
///
/// Whether the pages are written depends on the allocator: Rust's system allocator uses
/// `calloc` (fresh zero pages for big sizes, nothing written) only for alignments up to 16;
/// above that (the pool's page-aligned storage) it is `posix_memalign` plus a `memset` of the
/// whole size, which makes every page resident at once. For big storage use
/// [`sys::mem::map_zeroed`](crate::sys::mem::map_zeroed) instead: fresh anonymous pages,
/// nothing written, no `std` needed.
///
/// Allocation failure calls [`std::alloc::handle_alloc_error`] (which aborts by default), as
/// `Box::new` does.
///
/// ```
/// # #[cfg(feature = "std")] {
/// use ringlet::pool::{leak_zeroed, BufPool, BufPoolConfig, BufPoolStorage, RecvTier};
///
/// // 16 MiB of receive buffers, never on the stack.
/// let storage = leak_zeroed::<BufPoolStorage<4096, 4096>>();
/// let config = BufPoolConfig { recv_tier: RecvTier::FreeList, user_reserve: 64 };
/// let pool = BufPool::new(storage, config).unwrap();
/// assert_eq!(pool.recv_available(), 4096 - 64);
/// # }
/// ```
#[cfg(any(test, feature = "std"))]
#[cfg_attr(docsrs, doc(cfg(feature = "std")))]
pub fn leak_zeroed<T: ZeroInit>() -> &'static mut T {
    use core::ptr::NonNull;
    use std::alloc::{Layout, alloc_zeroed, handle_alloc_error};

    let layout = Layout::new::<T>();
    if layout.size() == 0 {
        // SAFETY: for a zero-sized `T`, a dangling, well-aligned, non-null pointer is valid for
        // reads and writes of one `T` and never deallocated; a zero-sized `T` has no bytes, so
        // it is trivially all-zero, which `T: ZeroInit` makes a valid value.
        return unsafe { NonNull::<T>::dangling().as_mut() };
    }
    // SAFETY: `layout` has a non-zero size (checked above), as `alloc_zeroed` requires.
    let ptr = unsafe { alloc_zeroed(layout) };
    if ptr.is_null() {
        handle_alloc_error(layout);
    }
    // SAFETY: `ptr` is non-null, allocated for `layout` (size and alignment of `T`) and never
    // freed, so it is valid for `'static`, and no one else has it. All its bytes are zero,
    // which `T: ZeroInit` makes a valid `T`.
    unsafe { &mut *ptr.cast::<T>() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::boxed::Box;

    /// A composite of storage types, made `ZeroInit` by the macro.
    struct Composite<'a, const N: usize> {
        slab: crate::pool::SlabStorage<&'a u32, N>,
        words: [[u64; 2]; N],
        flag: bool,
        marker: core::marker::PhantomData<*const u8>,
    }

    crate::impl_zero_init! {
        impl['a, const N: usize] Composite<'a, N> { slab, words, flag, marker, }
    }

    struct Plain {
        a: u16,
        b: u64,
    }

    crate::impl_zero_init! { impl Plain { a, b } }

    #[test]
    fn composed_storage_is_empty_when_zeroed() {
        static SEVEN: u32 = 7;
        let mut slot = MaybeUninit::<Composite<'static, 4>>::uninit();
        // Dirty the bytes first: init_zeroed must give the empty value whatever was there.
        // SAFETY: writing bytes into a `MaybeUninit` is always allowed.
        unsafe {
            slot.as_mut_ptr()
                .cast::<u8>()
                .write_bytes(0xA5, size_of::<Composite<'_, 4>>())
        };
        let c = init_zeroed(&mut slot);
        assert!(!c.flag);
        assert_eq!(c.words, [[0; 2]; 4]);
        let _ = c.marker;
        let mut slab = c.slab.slab();
        assert_eq!(slab.len(), 0);
        let k = slab.try_insert(&SEVEN).unwrap();
        assert_eq!(slab.get(k), Ok(&&7));
        let p: &'static mut Plain = leak_zeroed();
        assert_eq!((p.a, p.b), (0, 0));
        p.b = 3;
        // SAFETY: `p` came from `leak_zeroed` (the global allocator with `Layout::new::<Plain>()`)
        // and is not used again.
        drop(unsafe { Box::from_raw(p) });
    }

    #[test]
    fn init_zeroed_overwrites_whatever_was_there() {
        let mut slot = MaybeUninit::new([0xAAu32; 8]);
        let arr = init_zeroed(&mut slot);
        assert_eq!(*arr, [0; 8]);
        arr[3] = 7;
        assert_eq!(init_zeroed(&mut slot)[3], 0);
    }

    #[test]
    fn static_slot_is_taken_once() {
        static SLOT: StaticSlot<[u64; 4]> = StaticSlot::new();
        assert!(!SLOT.is_taken());
        let v = SLOT.take().unwrap();
        assert_eq!(*v, [0; 4]);
        v[0] = 9;
        assert!(SLOT.is_taken());
        assert!(SLOT.take().is_none());
        assert!(SLOT.take().is_none());
        assert_eq!(v[0], 9);
        assert!(std::format!("{SLOT:?}").contains("taken: true"));
    }

    #[test]
    fn static_slot_race_has_one_winner() {
        static SLOT: StaticSlot<[u8; 64]> = StaticSlot::new();
        let threads = if cfg!(miri) { 3 } else { 8 };
        let handles: std::vec::Vec<_> = (0..threads)
            .map(|i| {
                std::thread::spawn(move || {
                    SLOT.take().map(|v| {
                        // The winner owns the bytes; Miri would flag a second writer.
                        v.fill(i as u8);
                        v[0]
                    })
                })
            })
            .collect();
        let winners: std::vec::Vec<u8> = handles
            .into_iter()
            .filter_map(|h| h.join().unwrap())
            .collect();
        assert_eq!(winners.len(), 1);
    }

    #[test]
    fn leak_zeroed_zero_sized_and_sized() {
        let unit: &'static mut [u64; 0] = leak_zeroed();
        assert!(unit.is_empty());
        let v: &'static mut [u32; 5] = leak_zeroed();
        assert_eq!(*v, [0; 5]);
        v[4] = 1;
        // SAFETY: `v` came from `leak_zeroed` (the global allocator, `Layout::new::<[u32; 5]>`,
        // what `Box` uses) and is not used again: reclaiming it keeps Miri's leak check on.
        drop(unsafe { Box::from_raw(v) });
    }
}
