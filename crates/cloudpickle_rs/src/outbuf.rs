//! The output buffer of `dumps`: the stream is written straight into the `bytes` object that is
//! returned, resized as it grows and trimmed at the end, as `_pickle.c` does. A `Vec<u8>` would
//! cost one more copy of the whole stream (and twice its size in peak memory) at the end.

use std::marker::PhantomData;
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};

use pyo3::exceptions::PyMemoryError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

// pyo3-ffi stopped exporting this private CPython function in 0.29 (PyO3/pyo3#6042); every
// CPython we build for still has it (Include/cpython/bytesobject.h). Declared as pyo3-ffi 0.25 did.
extern "C" {
    #[cfg_attr(PyPy, link_name = "_PyPyBytes_Resize")]
    fn _PyBytes_Resize(bytes: *mut *mut ffi::PyObject, newsize: ffi::Py_ssize_t) -> std::os::raw::c_int;
}

/// The length of the last stream `dumps` returned. A `dumps` stream starts small (most are) and,
/// once it outgrows that, jumps to this size: a program dumping objects of one shape (a task list
/// per call) then resizes once instead of a dozen times, each a copy of everything written so
/// far (10-15% of dumping a 280 kB task list). Capped, so one huge dump does not make every later
/// medium one allocate as much.
static LAST_STREAM: AtomicUsize = AtomicUsize::new(0);
const MAX_HINT: usize = 8 << 20;

/// A `bytes` object under construction, as a [`pickle_wire::Buffer`].
///
/// Invariant: `obj` is null (after a failed resize) or an exact `bytes` object of size `cap`
/// that nothing else references (refcount 1, never handed to Python code before
/// [`OutBuf::into_bytes`] / [`OutBuf::take_bytes`]); `data` is its byte array; `len <= cap`.
/// The `'py` marker ties the buffer to the GIL: it is created, resized and freed only under it.
pub(crate) struct OutBuf<'py> {
    obj: *mut ffi::PyObject,
    data: *mut u8,
    len: usize,
    cap: usize,
    /// Set when a resize failed (out of memory); every later write is dropped.
    failed: Option<PyErr>,
    /// A `dumps` buffer: grows to [`LAST_STREAM`] at once, and sets it when done.
    hinted: bool,
    _gil: PhantomData<Python<'py>>,
}

impl<'py> OutBuf<'py> {
    /// An empty buffer with room for `capacity` bytes (at least 1: a size-0 `bytes` is the
    /// shared empty singleton, which must never be resized).
    pub(crate) fn with_capacity(py: Python<'py>, capacity: usize, hinted: bool) -> PyResult<Self> {
        let mut buf = OutBuf {
            obj: ptr::null_mut(),
            data: ptr::null_mut(),
            len: 0,
            cap: 0,
            failed: None,
            hinted,
            _gil: PhantomData,
        };
        buf.alloc(py, capacity.max(1))?;
        Ok(buf)
    }

    fn alloc(&mut self, py: Python<'py>, capacity: usize) -> PyResult<()> {
        let size = ffi::Py_ssize_t::try_from(capacity).map_err(|_| PyMemoryError::new_err(()))?;
        // SAFETY: we hold the GIL (`py`); a NULL source asks for an uninitialised bytes object
        // of `size` > 0 bytes, which is a fresh object we own.
        let obj = unsafe { ffi::PyBytes_FromStringAndSize(ptr::null(), size) };
        if obj.is_null() {
            return Err(PyErr::fetch(py));
        }
        self.obj = obj;
        // SAFETY: `obj` is a live bytes object of `capacity` bytes.
        self.data = unsafe { ffi::PyBytes_AS_STRING(obj) }.cast::<u8>().cast_mut();
        self.cap = capacity;
        self.len = 0;
        Ok(())
    }

    /// The error of a failed resize, if one happened: the stream is incomplete.
    pub(crate) fn take_error(&mut self) -> Option<PyErr> {
        self.failed.take()
    }

    /// The finished stream as `bytes`, trimmed to its length.
    pub(crate) fn into_bytes(mut self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        if self.hinted {
            LAST_STREAM.store(self.len.min(MAX_HINT), Ordering::Relaxed);
        }
        self.finish(py)
    }

    /// The bytes written so far as a `bytes` object; the buffer starts over empty with room for
    /// `capacity` bytes (file-backed dumps hand each committed frame to `file.write` this way).
    pub(crate) fn take_bytes(&mut self, py: Python<'py>, capacity: usize) -> PyResult<Bound<'py, PyBytes>> {
        let out = self.finish(py)?;
        self.alloc(py, capacity.max(1))?;
        Ok(out)
    }

    fn finish(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        if self.len != self.cap {
            self.resize(self.len);
            if let Some(e) = self.failed.take() {
                return Err(e);
            }
        }
        let obj = std::mem::replace(&mut self.obj, ptr::null_mut());
        (self.data, self.len, self.cap) = (ptr::null_mut(), 0, 0);
        // SAFETY: `obj` is our exact bytes object of size `len`, fully written (bytes 0..len);
        // ownership of our one reference moves to the Bound.
        Ok(unsafe { Bound::from_owned_ptr(py, obj).cast_into_unchecked::<PyBytes>() })
    }

    /// Resize the bytes object to `new_cap` (> 0 unless trimming an empty stream). On failure the
    /// object is gone (`_PyBytes_Resize` frees it) and the buffer becomes failed and empty.
    #[cold]
    fn resize(&mut self, new_cap: usize) {
        if self.obj.is_null() {
            return;
        }
        let Ok(size) = ffi::Py_ssize_t::try_from(new_cap) else {
            self.fail_too_large();
            return;
        };
        // SAFETY: `obj` is an exact bytes object with refcount 1 (the invariant), as
        // `_PyBytes_Resize` requires, and the 'py marker means the GIL is held. It replaces
        // `obj`: the resized object, or NULL (the old one freed, MemoryError set).
        if unsafe { _PyBytes_Resize(&mut self.obj, size) } == 0 && !self.obj.is_null() {
            // SAFETY: a live bytes object of `new_cap` bytes.
            self.data = unsafe { ffi::PyBytes_AS_STRING(self.obj) }.cast::<u8>().cast_mut();
            self.cap = new_cap;
            self.len = self.len.min(new_cap);
        } else {
            self.obj = ptr::null_mut();
            (self.data, self.len, self.cap) = (ptr::null_mut(), 0, 0);
            // SAFETY: the GIL is held (the 'py marker).
            let py = unsafe { Python::assume_attached() };
            let err = PyErr::take(py).unwrap_or_else(|| PyMemoryError::new_err(()));
            self.failed.get_or_insert(err);
        }
    }

    /// Room for `additional` more bytes: at least double, as `Vec` grows, and at once the size
    /// of the last `dumps` stream (and an eighth) if this is a `dumps` buffer smaller than that.
    #[cold]
    #[inline(never)]
    fn grow(&mut self, additional: usize) {
        let Some(needed) = self.len.checked_add(additional) else {
            self.fail_too_large();
            return;
        };
        let mut new_cap = needed.max(self.cap.saturating_mul(2));
        if self.hinted {
            let hint = LAST_STREAM.load(Ordering::Relaxed);
            if hint > self.cap {
                new_cap = new_cap.max(hint + hint / 8);
            }
        }
        self.resize(new_cap);
    }

    #[cold]
    fn fail_too_large(&mut self) {
        if !self.obj.is_null() {
            // SAFETY: our only reference to our own object, under the GIL.
            unsafe { ffi::Py_DECREF(self.obj) };
        }
        self.obj = ptr::null_mut();
        (self.data, self.len, self.cap) = (ptr::null_mut(), 0, 0);
        self.failed.get_or_insert_with(|| PyMemoryError::new_err(()));
    }
}

impl pickle_wire::Buffer for OutBuf<'_> {
    #[inline]
    fn len(&self) -> usize {
        self.len
    }

    #[inline(always)]
    fn extend_from_slice(&mut self, data: &[u8]) {
        if self.cap - self.len < data.len() {
            self.grow(data.len());
            if self.cap - self.len < data.len() {
                return; // failed: dropped, reported by take_error
            }
        }
        // SAFETY: `data + len .. data + len + data.len()` lies within the object's `cap` bytes
        // (checked above), and `data` cannot overlap the object we own exclusively.
        unsafe { ptr::copy_nonoverlapping(data.as_ptr(), self.data.add(self.len), data.len()) };
        self.len += data.len();
    }

    fn reserve(&mut self, additional: usize) {
        if self.cap - self.len < additional {
            self.grow(additional);
        }
    }

    #[inline]
    fn as_slice(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: the first `len` bytes of our object are initialised (written by us).
        unsafe { std::slice::from_raw_parts(self.data, self.len) }
    }

    #[inline]
    fn as_mut_slice(&mut self) -> &mut [u8] {
        if self.len == 0 {
            return &mut [];
        }
        // SAFETY: as in as_slice; `&mut self` makes the borrow exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.data, self.len) }
    }

    fn remove_range(&mut self, start: usize, end: usize) {
        if start > end || end > self.len {
            return;
        }
        self.as_mut_slice().copy_within(end.., start);
        self.len -= end - start;
    }

    fn clear(&mut self) {
        self.len = 0;
    }
}

impl Drop for OutBuf<'_> {
    fn drop(&mut self) {
        if !self.obj.is_null() {
            // SAFETY: our only reference to our own object; the 'py marker means the GIL is held.
            unsafe { ffi::Py_DECREF(self.obj) };
        }
    }
}
