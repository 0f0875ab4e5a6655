//! Large zeroed storage from fresh anonymous pages: [`map_zeroed`].
//!
//! A program's storage (receive buffers, write slabs, connection slots) is sized for its peak
//! and is hundreds of megabytes with generous capacities. Memory the kernel maps fresh is
//! already zero, and a page of it costs nothing (no RSS) until it is first written: so storage
//! whose all-zero bytes are a valid value ([`ZeroInit`]) can be placed there and costs only
//! what the program touches.
//!
//! Heap allocation does not give that guarantee: `alloc_zeroed` from Rust's system allocator
//! is `calloc` only for alignments up to 16, and `posix_memalign` followed by a full `memset`
//! above that (the pool's page-aligned storage), which commits every page at start-up; and
//! `Box::new_zeroed` followed by [`init_zeroed`](crate::pool::init_zeroed) writes every byte a
//! second time. [`map_zeroed`] is a plain `mmap`: nothing is written.
//!
//! # Limits
//!
//! The mapping is never unmapped (it is `'static`): call [`map_zeroed`] once per storage at
//! start-up. It is private and `MAP_NORESERVE`, so the address space is not charged against
//! overcommit accounting up front; with overcommit disabled
//! (`vm.overcommit_memory = 2`) the kernel still charges it, and touching a page when memory is
//! exhausted is the OOM killer's business, as for any memory. Alignments above a page are met by
//! mapping one alignment more and using the aligned part (the rest stays mapped, untouched).

use core::mem::{align_of, size_of};
use core::ptr::{NonNull, null_mut};

use rustix::mm::{MapFlags, ProtFlags, mmap_anonymous};

use super::error::{Error, Result};
use crate::pool::ZeroInit;

/// The smallest page size Linux uses; mappings are aligned to at least this.
const PAGE: usize = 4096;

/// A `&'static mut T` over fresh anonymous pages: all-zero (a valid, empty `T`, by
/// [`ZeroInit`]), and not resident until used: a page counts in RSS only once it is written.
///
/// Never freed. A zero-sized `T` maps nothing.
///
/// # Errors
///
/// [`Error::OutOfMemory`] when the size (plus alignment slack) overflows, and whatever `mmap`
/// reports (`ENOMEM` when the address space or the map count is exhausted) otherwise.
///
/// ```
/// use ringlet::pool::{BufPool, BufPoolConfig, BufPoolStorage, RecvTier};
/// use ringlet::sys::mem::map_zeroed;
///
/// // 64 MiB of receive buffers; only the buffers used become resident.
/// let storage = map_zeroed::<BufPoolStorage<2048, 32768>>().unwrap();
/// let config = BufPoolConfig { recv_tier: RecvTier::FreeList, user_reserve: 64 };
/// let pool = BufPool::new(storage, config).unwrap();
/// assert_eq!(pool.recv_available(), 2048 - 64);
/// ```
pub fn map_zeroed<T: ZeroInit>() -> Result<&'static mut T> {
    let size = size_of::<T>();
    let align = align_of::<T>();
    if size == 0 {
        // SAFETY: for a zero-sized `T`, a dangling, well-aligned, non-null pointer is valid for
        // reads and writes of one `T` forever; a zero-sized `T` has no bytes, so it is
        // trivially all-zero, which `T: ZeroInit` makes a valid value.
        return Ok(unsafe { NonNull::<T>::dangling().as_mut() });
    }
    // Slack so an aligned start exists inside the mapping when a page is not aligned enough.
    let slack = if align > PAGE { align } else { 0 };
    let len = size.checked_add(slack).ok_or(Error::OutOfMemory)?;
    // SAFETY: a fresh private anonymous mapping at an address the kernel picks (null hint):
    // it aliases no memory Rust knows about.
    let base = unsafe {
        mmap_anonymous(
            null_mut(),
            len,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::PRIVATE | MapFlags::NORESERVE,
        )
    }?;
    let base = base.cast::<u8>();
    let offset = base.align_offset(align);
    if offset > slack {
        // Cannot happen (mappings are page-aligned, and `slack` is the alignment above a
        // page), but an unaligned `T` must never be handed out.
        return Err(Error::OutOfMemory);
    }
    // SAFETY: `offset <= slack`, so `base + offset .. + size` lies inside the `len`-byte
    // mapping.
    let ptr = unsafe { base.add(offset) }.cast::<T>();
    // SAFETY: `ptr` is aligned for `T` (`align_offset`), points at `size_of::<T>()` readable
    // and writable bytes of the mapping, which is never unmapped (so valid for `'static`) and
    // reachable from nowhere else. The kernel zero-fills anonymous mappings, so every byte is
    // zero, which `T: ZeroInit` makes a valid `T`.
    Ok(unsafe { &mut *ptr })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::process::rss_bytes;

    #[test]
    fn zero_sized_maps_nothing() {
        let unit: &'static mut [u64; 0] = map_zeroed().unwrap();
        assert!(unit.is_empty());
    }

    #[test]
    fn small_value_is_zero_and_writable() {
        let v: &'static mut [u32; 5] = map_zeroed().unwrap();
        assert_eq!(*v, [0; 5]);
        v[4] = 9;
        assert_eq!(v[4], 9);
    }

    /// Aligned above a page, so the slack path is taken.
    #[repr(C, align(65536))]
    struct Aligned {
        bytes: [u8; 100],
    }
    crate::impl_zero_init! { impl Aligned { bytes } }

    #[test]
    fn alignment_above_a_page_is_met() {
        for _ in 0..4 {
            let a: &'static mut Aligned = map_zeroed().unwrap();
            assert_eq!(core::ptr::from_mut(a).addr() % 65536, 0);
            assert_eq!(a.bytes, [0; 100]);
            a.bytes[99] = 1;
        }
    }

    #[test]
    fn mapping_does_not_commit_its_pages() {
        const SIZE: usize = 256 << 20;
        let before = rss_bytes().expect("/proc/self/status has VmRSS");
        let big: &'static mut [u8; SIZE] = map_zeroed().unwrap();
        // Touch one byte per MiB: 256 pages (1 MiB) of 256 MiB become resident.
        for i in (0..SIZE).step_by(1 << 20) {
            assert_eq!(big[i], 0);
            big[i] = 1;
        }
        let after = rss_bytes().expect("/proc/self/status has VmRSS");
        let grown = after.saturating_sub(before);
        // Other test threads allocate meanwhile; 32 MiB is far below the 256 MiB a zero-fill
        // would commit, and far above the 1 MiB touched.
        assert!(grown < 32 << 20, "RSS grew by {grown} bytes");
        assert_eq!(big[SIZE - (1 << 20)], 1);
    }
}
