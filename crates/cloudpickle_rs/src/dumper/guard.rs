//! The depth guard of the walk: Python's recursion limit and a native stack check.

use std::ptr;

use pyo3::exceptions::PyRecursionError;
use pyo3::ffi;
use pyo3::prelude::*;

/// Below this much native stack we refuse to go deeper and raise RecursionError.
const STACK_RED_ZONE: usize = 256 * 1024;

/// Depth guard: the interpreter's own recursion limit (so RecursionError comes where pickle's
/// does), and a native stack check so a raised limit can never overflow our stack.
///
/// From CPython 3.13 on, `Py_EnterRecursiveCall` counts against a fixed C recursion budget
/// (10 000 on Linux) instead of `sys.getrecursionlimit()`: alone, it would let a chain of
/// 2 000 functions (which upstream's Python-level reducers refuse under the default limit of
/// 1 000) through, and ignore a limit the user lowered. So on 3.13+ the walk also counts its own
/// depth (per thread, across nested dumps) against `sys.getrecursionlimit()`.
pub(super) struct RecursionGuard;

#[cfg(Py_3_13)]
thread_local! {
    static DEPTH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// `sys.getrecursionlimit()` (read on 3.13+ only; see [`RecursionGuard`]).
pub(super) fn python_recursion_limit(py: Python<'_>) -> u32 {
    if !cfg!(Py_3_13) {
        return u32::MAX;
    }
    py.import("sys").and_then(|s| s.call_method0("getrecursionlimit")).and_then(|l| l.extract::<u32>()).unwrap_or(1000)
}

impl RecursionGuard {
    /// `stack_floor`: see [`stack_floor`]; `depth_limit`: [`python_recursion_limit`].
    #[inline]
    pub(super) fn enter(py: Python<'_>, stack_floor: usize, depth_limit: u32) -> PyResult<Self> {
        // SAFETY: we hold the GIL; the matching Py_LeaveRecursiveCall is in Drop.
        if unsafe { ffi::Py_EnterRecursiveCall(c" while pickling an object".as_ptr()) } != 0 {
            return Err(PyErr::fetch(py));
        }
        #[cfg(Py_3_13)]
        let depth = DEPTH.with(|d| {
            d.set(d.get() + 1);
            d.get()
        });
        let guard = RecursionGuard;
        #[cfg(Py_3_13)]
        if depth > depth_limit {
            return Err(PyRecursionError::new_err("maximum recursion depth exceeded while pickling an object"));
        }
        #[cfg(not(Py_3_13))]
        let _ = depth_limit;
        if stack_address() < stack_floor {
            return Err(PyRecursionError::new_err(
                "maximum recursion depth exceeded while pickling an object (native stack)",
            ));
        }
        Ok(guard)
    }
}

/// Whether saving `obj` may go deeper (anything but atoms, str and bytes).
#[inline]
pub(super) fn can_nest(obj: &Bound<'_, PyAny>) -> bool {
    let p = obj.as_ptr();
    // SAFETY: reading the type of a live object.
    let tp = unsafe { ffi::Py_TYPE(p) };
    !(tp == ptr::addr_of_mut!(ffi::PyUnicode_Type)
        || tp == ptr::addr_of_mut!(ffi::PyLong_Type)
        || tp == ptr::addr_of_mut!(ffi::PyFloat_Type)
        || tp == ptr::addr_of_mut!(ffi::PyBytes_Type)
        || tp == ptr::addr_of_mut!(ffi::PyBool_Type)
        // SAFETY: `Py_None` only returns the None singleton's address.
        || p == unsafe { ffi::Py_None() })
}

/// An address in the current stack frame.
#[inline(always)]
pub(super) fn stack_address() -> usize {
    let probe = 0u8;
    std::hint::black_box(&probe) as *const u8 as usize
}

/// The stack address below which the red zone starts (stacks grow down on every platform we
/// build for); 0 when the stack size is unknown. The red zone is [`STACK_RED_ZONE`], or a quarter
/// of what is left when the dump starts on a small thread stack (256 KiB threads, musl's
/// 128 KiB), so shallow objects still pickle there; never under [`MIN_RED_ZONE`]. A dump runs on
/// the thread that created its Dumper, so this is computed once per dump.
pub(super) fn stack_floor() -> usize {
    match stacker::remaining_stack() {
        Some(left) => {
            let red = STACK_RED_ZONE.min(left / 4).max(MIN_RED_ZONE.min(left));
            stack_address().saturating_sub(left).saturating_add(red)
        }
        None => 0,
    }
}

/// What a Python callback made from inside the walk (a `__reduce__`, a hook) needs at least.
const MIN_RED_ZONE: usize = 32 * 1024;

impl Drop for RecursionGuard {
    #[inline]
    fn drop(&mut self) {
        #[cfg(Py_3_13)]
        DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
        // SAFETY: paired with the successful Py_EnterRecursiveCall in `enter`.
        unsafe { ffi::Py_LeaveRecursiveCall() };
    }
}
