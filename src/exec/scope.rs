//! The poll scope: how a task's [`Connection`](super::Connection) reaches the reactor's
//! [`Context`] while the executor polls it, without holding a borrow of the reactor.
//!
//! A future is polled with a [`core::task::Context`] only; it cannot be handed the reactor's
//! `Context` of the turn. So the executor, for exactly the duration of one poll (or one drop
//! of a task), lends its `&mut Context` to the scope, and a connection operation borrows it
//! back for the duration of one library call ([`Scope::with`]), never across an `.await` and
//! never into user code. Outside a poll the scope is empty and the operation reports
//! [`Error::Detached`](super::Error::Detached).

use core::cell::Cell;
use core::ptr::NonNull;

use crate::reactor::Context;

/// The `&mut Context` of the poll under way, if any (see the module docs).
pub(crate) struct Scope {
    cx: Cell<Option<NonNull<()>>>,
}

/// Puts a value back into the cell when dropped (also on unwind).
struct Restore<'a> {
    cell: &'a Cell<Option<NonNull<()>>>,
    value: Option<NonNull<()>>,
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        self.cell.set(self.value);
    }
}

impl Scope {
    pub(crate) const fn new() -> Scope {
        Scope {
            cx: Cell::new(None),
        }
    }

    /// Runs `f` (a task's poll, or its drop) with `cx` lent to the scope.
    ///
    /// `cx` is borrowed mutably for the whole call, so `f` cannot use it: the only way to it
    /// during `f` is [`Scope::with`].
    pub(crate) fn enter<R>(&self, cx: &mut Context<'_, 'static>, f: impl FnOnce() -> R) -> R {
        let lent = NonNull::from(cx).cast::<()>();
        let _restore = Restore {
            cell: &self.cx,
            value: self.cx.replace(Some(lent)),
        };
        f()
    }

    /// Runs `f` with the lent `Context`, or returns `None` outside [`Scope::enter`].
    ///
    /// The pointer is taken out of the scope while `f` runs, so a nested `with` gets `None`
    /// instead of a second `&mut` to the same `Context`. `f` is library code that calls
    /// `Context` methods only (which never call back into handlers or tasks).
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Context<'_, 'static>) -> R) -> Option<R> {
        let lent = self.cx.take()?;
        let _restore = Restore {
            cell: &self.cx,
            value: Some(lent),
        };
        // SAFETY: `lent` was made in `enter` from a `&mut Context<'_, 'static>` that stays
        // borrowed (and unused by anyone else: `enter`'s caller cannot touch it while `f`
        // runs) until `enter` returns, and `enter` clears the scope before it returns (the
        // `Restore` guard, also on unwind); so the pointer is valid and aligned here. It was
        // taken out of the cell above, so this is the only reference made from it until
        // `_restore` puts it back after the last use of `cx` below. The `Context`'s own
        // lifetime is shortened to this call (it is covariant in it).
        let cx = unsafe { lent.cast::<Context<'_, 'static>>().as_mut() };
        Some(f(cx))
    }
}
