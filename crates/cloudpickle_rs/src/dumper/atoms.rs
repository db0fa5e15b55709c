//! Atoms: ints, floats, str, bytes, bytearray, pickle buffers.

use std::os::raw::c_int;

use pickle_wire::Payload;
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple};

use super::{Dumper, Layer, SaveResult};
use crate::statics::pickling_error;

impl<'py, L: Layer<'py>> Dumper<'py, L> {
    #[inline(always)]
    pub(super) fn save_long(&mut self, obj: &Bound<'py, PyAny>) -> SaveResult {
        // SAFETY: `obj` is an exact int; `ints_readable` comes from `layout::ints_readable`.
        if let Some(v) = unsafe { crate::layout::small_int(obj.as_ptr(), self.ints_readable) } {
            self.w.int(v);
            return Ok(());
        }
        self.save_long_api(obj)
    }

    /// Ints of two digits or more (or where the layout is not read): through the C API.
    #[inline(never)]
    pub(super) fn save_long_api(&mut self, obj: &Bound<'py, PyAny>) -> SaveResult {
        let mut overflow: c_int = 0;
        // SAFETY: `obj` is an exact int.
        let v = unsafe { ffi::PyLong_AsLongLongAndOverflow(obj.as_ptr(), &mut overflow) };
        if overflow == 0 {
            if v == -1 && PyErr::occurred(self.py) {
                return Err(PyErr::fetch(self.py));
            }
            self.w.int(v);
            return Ok(());
        }
        self.save_big_long(obj)
    }

    #[inline(never)]
    pub(super) fn save_big_long(&mut self, obj: &Bound<'py, PyAny>) -> SaveResult {
        if self.proto() >= 2 {
            // `int.bit_length()`: what the private `_PyLong_NumBits` (gone from pyo3's FFI) returned.
            let nbits: usize = obj.call_method0(intern!(self.py, "bit_length"))?.extract()?;
            let nbytes = (nbits >> 3) + 1;
            let mut buf = vec![0u8; nbytes];
            crate::layout::long_to_le_bytes(obj, &mut buf)?;
            let digits = pickle_wire::minimal_twos_complement(&buf);
            self.w.long_le_bytes(digits).map_err(|e| crate::statics::wire_error(self.py, e))?;
        } else {
            let text = obj.repr()?;
            self.w.long_text(text.to_str()?.as_bytes());
        }
        Ok(())
    }

    #[inline(never)]
    pub(super) fn save_float(&mut self, obj: &Bound<'py, PyAny>) -> SaveResult {
        // SAFETY: exact float.
        let v = unsafe { ffi::PyFloat_AS_DOUBLE(obj.as_ptr()) };
        if self.w.is_binary() {
            self.w.binfloat(v);
        } else {
            let text = obj.repr()?;
            self.w.float_text(text.to_str()?.as_bytes());
        }
        Ok(())
    }

    pub(super) fn save_str(&mut self, obj: &Bound<'py, PyAny>) -> SaveResult {
        if !self.w.is_binary() {
            self.save_str_text(obj)?;
            return self.memo_put(obj);
        }
        if let Some(ascii) = crate::layout::ascii_str(obj) {
            self.str_payload(ascii)?;
            return self.memo_put(obj);
        }
        let mut size: ffi::Py_ssize_t = 0;
        // SAFETY: exact str; the UTF-8 buffer is cached in the object and lives as long as it.
        let data = unsafe { ffi::PyUnicode_AsUTF8AndSize(obj.as_ptr(), &mut size) };
        if data.is_null() {
            // Lone surrogates: UTF-8 with surrogatepass, as _pickle.c does.
            // SAFETY: clearing the UnicodeEncodeError we are handling.
            unsafe { ffi::PyErr_Clear() };
            let encoded = obj.call_method1(intern!(self.py, "encode"), ("utf-8", "surrogatepass"))?;
            let bytes = encoded.cast::<PyBytes>()?;
            let mode =
                self.w.unicode_header(bytes.as_bytes().len()).map_err(|e| crate::statics::wire_error(self.py, e))?;
            self.payload(mode, bytes.as_bytes(), Some(bytes.as_any()))?;
        } else {
            // SAFETY: `data` points to `size` bytes owned by `obj`, which outlives this slice.
            let slice = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), size as usize) };
            self.str_payload(slice)?;
        }
        self.memo_put(obj)
    }

    /// A str's UTF-8 bytes with their header (binary protocols).
    #[inline]
    pub(super) fn str_payload(&mut self, utf8: &[u8]) -> SaveResult {
        let mode = self.w.unicode_header(utf8.len()).map_err(|e| crate::statics::wire_error(self.py, e))?;
        if mode == Payload::Inline {
            self.w.payload(utf8);
            Ok(())
        } else {
            self.payload(mode, utf8, None)
        }
    }

    #[inline(never)]
    pub(super) fn save_str_text(&mut self, obj: &Bound<'py, PyAny>) -> SaveResult {
        // SAFETY: exact str; PyUnicode_AsUCS4Copy returns a PyMem buffer we free below.
        let len = unsafe { ffi::PyUnicode_GetLength(obj.as_ptr()) };
        // SAFETY: `obj` is an exact str (the caller's type test).
        let buf = unsafe { ffi::PyUnicode_AsUCS4Copy(obj.as_ptr()) };
        if buf.is_null() {
            return Err(PyErr::fetch(self.py));
        }
        // SAFETY: the copy holds `len` code points (plus a NUL we do not read).
        let chars: Vec<u32> = unsafe { std::slice::from_raw_parts(buf, len as usize) }.to_vec();
        // SAFETY: `buf` came from `PyUnicode_AsUCS4Copy` and is freed once, after the copy above.
        unsafe { ffi::PyMem_Free(buf.cast()) };
        self.w.unicode_text(chars.into_iter());
        Ok(())
    }

    pub(super) fn save_bytes(&mut self, obj: &Bound<'py, PyAny>) -> SaveResult {
        let bytes = obj.cast::<PyBytes>()?;
        if self.proto() < 3 {
            // No bytes opcode before protocol 3: `_codecs.encode(latin1_str, 'latin1')`.
            let py = self.py;
            let data = bytes.as_bytes();
            let rv = if data.is_empty() {
                PyTuple::new(py, [py.get_type::<PyBytes>().into_any(), PyTuple::empty(py).into_any()])?
            } else {
                let text: String = data.iter().map(|&b| char::from(b)).collect();
                let args =
                    PyTuple::new(py, [PyString::new(py, &text).into_any(), intern!(py, "latin1").clone().into_any()])?;
                PyTuple::new(py, [self.st.codecs_encode.bind(py).clone(), args.into_any()])?
            };
            return self.save_reduce(&rv, Some(obj));
        }
        let data = bytes.as_bytes();
        let mode = self.w.bytes_header(data.len()).map_err(|e| crate::statics::wire_error(self.py, e))?;
        self.payload(mode, data, Some(obj))?;
        self.memo_put(obj)
    }

    pub(super) fn save_bytearray(&mut self, obj: &Bound<'py, PyAny>) -> SaveResult {
        let py = self.py;
        if self.proto() < 5 {
            let ba_type = py.get_type::<pyo3::types::PyByteArray>().into_any();
            // SAFETY: exact bytearray; its buffer is valid while we hold it and call no Python.
            let data: Vec<u8> = unsafe { obj.cast_unchecked::<pyo3::types::PyByteArray>().as_bytes().to_vec() };
            let args = if data.is_empty() {
                PyTuple::empty(py)
            } else {
                // A fresh bytes object, as _pickle.c's PyBytes_FromObject makes: never CPython's
                // shared one-byte bytes, which could alias another bytes object in the memo.
                let fresh = PyBytes::new_with(py, data.len(), |buf| {
                    buf.copy_from_slice(&data);
                    Ok(())
                })?;
                PyTuple::new(py, [fresh])?
            };
            let rv = PyTuple::new(py, [ba_type, args.into_any()])?;
            return self.save_reduce(&rv, Some(obj));
        }
        // SAFETY: as above; no Python code runs while the slice is alive (payload may call
        // file.write, so copy first when bypassing).
        let data = unsafe { obj.cast_unchecked::<pyo3::types::PyByteArray>().as_bytes() };
        let mode = self.w.bytearray_header(data.len());
        if mode == Payload::Inline {
            self.w.payload(data);
        } else {
            let owned = data.to_vec();
            self.payload(mode, &owned, Some(obj))?;
        }
        self.memo_put(obj)
    }

    #[inline(never)]
    pub(super) fn save_picklebuffer(&mut self, obj: &Bound<'py, PyAny>) -> SaveResult {
        let py = self.py;
        if self.proto() < 5 {
            // CPython 3.13 fixed the grammar of `_pickle.c`'s message.
            let message = if cfg!(Py_3_13) {
                "PickleBuffer can only be pickled with protocol >= 5"
            } else {
                "PickleBuffer can only pickled with protocol >= 5"
            };
            return Err(pickling_error(py, message));
        }
        let view = BufferView::get(obj)?;
        if !view.is_contiguous() {
            return Err(pickling_error(py, "PickleBuffer can not be pickled when pointing to a non-contiguous buffer"));
        }
        let readonly = view.readonly();
        let mut in_band = true;
        if let Some(cb) = &self.hooks.buffer_callback {
            let ret = cb.call1((obj,))?;
            in_band = ret.is_truthy()?;
        }
        if in_band {
            let data = view.as_slice();
            if readonly {
                let mode = self.w.bytes_header(data.len()).map_err(|e| crate::statics::wire_error(py, e))?;
                let owned;
                let slice = if mode == Payload::Bypass && self.write.is_some() {
                    owned = data.to_vec();
                    &owned[..]
                } else {
                    data
                };
                self.payload(mode, slice, Some(obj))?;
            } else {
                let mode = self.w.bytearray_header(data.len());
                let owned;
                let slice = if mode == Payload::Bypass && self.write.is_some() {
                    owned = data.to_vec();
                    &owned[..]
                } else {
                    data
                };
                self.payload(mode, slice, Some(obj))?;
            }
            drop(view);
            self.memo_put(obj)
        } else {
            self.w.next_buffer(readonly);
            Ok(())
        }
    }
}

/// A buffer view of an object exporting the buffer protocol, released on drop.
pub(super) struct BufferView {
    view: Box<ffi::Py_buffer>,
}

impl BufferView {
    pub(super) fn get(obj: &Bound<'_, PyAny>) -> PyResult<Self> {
        // SAFETY: a zeroed Py_buffer is the documented initial state; filled by GetBuffer.
        let mut view: Box<ffi::Py_buffer> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: `view` is a zeroed Py_buffer owned by us; released in `Drop` only when this
        // succeeded.
        if unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), &mut *view, ffi::PyBUF_FULL_RO) } != 0 {
            return Err(PyErr::fetch(obj.py()));
        }
        Ok(BufferView { view })
    }
    pub(super) fn is_contiguous(&self) -> bool {
        self.view.suboffsets.is_null()
            // SAFETY: `view` was filled by a successful `PyObject_GetBuffer` and is released only
            // in `Drop`.
            && unsafe { ffi::PyBuffer_IsContiguous(&*self.view, b'A' as std::os::raw::c_char) } != 0
    }
    pub(super) fn readonly(&self) -> bool {
        self.view.readonly != 0
    }
    pub(super) fn as_slice(&self) -> &[u8] {
        if self.view.len == 0 || self.view.buf.is_null() {
            return &[];
        }
        // SAFETY: a contiguous view of `len` bytes, valid until release in Drop.
        unsafe { std::slice::from_raw_parts(self.view.buf.cast::<u8>(), self.view.len as usize) }
    }
}

impl Drop for BufferView {
    fn drop(&mut self) {
        // SAFETY: the view was filled by a successful PyObject_GetBuffer.
        unsafe { ffi::PyBuffer_Release(&mut *self.view) };
    }
}
