//! One dump: the object walk, mirroring `_pickle.c`'s `save()`.
//!
//! The per-dump state lives in [`Dumper`], a plain struct passed down the walk (never behind a
//! pyclass borrow): user code called from the walk (`__reduce_ex__`, `persistent_id`,
//! `reducer_override`) may call back into a pickler.

use std::ptr;

use pickle_wire::{Payload, Writer};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyType};

mod atoms;
mod containers;
mod global;
mod guard;
mod layer;
mod reduce;

pub(crate) use layer::{Handled, Layer, Plain};

use guard::{python_recursion_limit, stack_floor, RecursionGuard};

use crate::errors::{safe_repr, type_name, ErrorPath};
use crate::lookup::lookup_attr;
use crate::memo::Memo;
use crate::outbuf::OutBuf;
use crate::statics::{pickling_error, statics, Statics};

/// Initial size of the `bytes` object `dumps` writes into (grown by doubling, trimmed at the
/// end): small enough for Python's small-object allocator (objects up to 512 bytes), which makes
/// and trims it faster than malloc for the small dumps where that matters.
const DUMPS_BUFFER: usize = 512 - 48;
/// Buffer of a file-backed dump: one committed frame (64 KiB) and a little more.
const FILE_BUFFER: usize = 64 * 1024 + 64;

/// The hooks a pickler instance brings to one dump (all optional).
#[derive(Default)]
pub(crate) struct Hooks<'py> {
    pub persistent_id: Option<Bound<'py, PyAny>>,
    pub reducer_override: Option<Bound<'py, PyAny>>,
    pub dispatch_table: Option<Bound<'py, PyAny>>,
    pub buffer_callback: Option<Bound<'py, PyAny>>,
}

pub(crate) struct Dumper<'py, L> {
    pub py: Python<'py>,
    pub w: Writer<OutBuf<'py>>,
    pub memo: Memo,
    pub fix_imports: bool,
    pub fast: bool,
    fast_nesting: usize,
    fast_memo: crate::addr::AddrSet,
    /// `file.write` when dumping to a file; None for `dumps`.
    write: Option<Bound<'py, PyAny>>,
    pub hooks: Hooks<'py>,
    pub st: &'py Statics,
    pub err_path: ErrorPath,
    /// What is layered on the core walk ([`layer`]).
    pub layer: L,
    /// Lowest stack address the walk may reach (0: unknown, unchecked), found once per dump so
    /// the depth check per container is one comparison.
    stack_floor: usize,
    /// `sys.getrecursionlimit()` at the start of the dump (used on 3.13+, see RecursionGuard).
    depth_limit: u32,
    /// [`crate::layout::ints_readable`], looked up once per dump.
    ints_readable: bool,
    /// Classes whose instances skip the `__reduce_ex__` call ([`crate::plain`]).
    plain: crate::plain::PlainTypes,
    /// Whether container items that nothing else references go unmemoized (see
    /// [`Dumper::save_item`]): [`Layer::ELIDE_UNSHARED`] at protocol 3 and above, without
    /// `persistent_id` or fast mode.
    elide_unshared: bool,
    /// The item [`Dumper::save_item`] found unshared, until its memo step passes it by.
    unshared: *mut ffi::PyObject,
}

pub(crate) type SaveResult = PyResult<()>;

impl<'py, L: Layer<'py>> Dumper<'py, L> {
    #[inline(always)]
    pub(crate) fn new(
        py: Python<'py>,
        proto: u8,
        fix_imports: bool,
        write: Option<Bound<'py, PyAny>>,
        hooks: Hooks<'py>,
        memo: Memo,
        layer: L,
    ) -> PyResult<Self> {
        let st = statics(py)?;
        let buffer = match write {
            Some(_) => OutBuf::with_capacity(py, FILE_BUFFER, false)?,
            None => OutBuf::with_capacity(py, DUMPS_BUFFER, true)?,
        };
        Ok(Dumper {
            py,
            w: Writer::with_buffer(proto, buffer),
            memo,
            fix_imports,
            fast: false,
            fast_nesting: 0,
            fast_memo: Default::default(),
            write,
            hooks,
            st,
            err_path: ErrorPath::default(),
            layer,
            stack_floor: stack_floor(),
            depth_limit: python_recursion_limit(py),
            ints_readable: crate::layout::ints_readable(py),
            plain: crate::plain::PlainTypes::default(),
            elide_unshared: false,
            unshared: ptr::null_mut(),
        })
    }

    /// Write a whole stream: PROTO, the object, STOP, then flush to the file if there is one.
    pub(crate) fn dump(&mut self, obj: &Bound<'py, PyAny>) -> SaveResult {
        // Protocols 0-2 are the ones Python 2 reads: their streams stay as the C pickler writes
        // them (CPython's tests pin some byte for byte).
        self.elide_unshared =
            L::ELIDE_UNSHARED && self.hooks.persistent_id.is_none() && !self.fast && self.proto() >= 3;
        self.w.start();
        let mut result = self.save(obj, false);
        if result.is_ok() {
            result = L::after_walk(self);
        }
        if let Err(err) = result {
            let err = self.err_path.finish(self.py, err, obj);
            return Err(L::failed(self, err));
        }
        self.w.finish();
        if let Some(err) = self.w.buffer_mut().take_error() {
            return Err(err);
        }
        self.flush()
    }

    /// The protocol of the stream (kept once, by the writer).
    #[inline(always)]
    pub(crate) fn proto(&self) -> u8 {
        self.w.protocol()
    }

    /// The memo's next index, before the dump: see `Memo::rollback`.
    pub(crate) fn memo_mark(&self) -> usize {
        self.memo.mark()
    }

    /// The memo, and the stream when it went to memory (`dumps`, or a receiver-checked dump).
    pub(crate) fn into_memo_and_bytes(self) -> (Memo, PyResult<Bound<'py, PyBytes>>) {
        let py = self.py;
        (self.memo, self.w.into_buffer().into_bytes(py))
    }

    /// The stream written by [`Dumper::dump`], as the `bytes` object it was built in.
    pub(crate) fn into_bytes(self) -> PyResult<Bound<'py, PyBytes>> {
        self.w.into_buffer().into_bytes(self.py)
    }

    /// Write the buffered bytes to the file (file-backed dumps only): the buffer's `bytes`
    /// object itself is handed to `write`, and a new one started.
    fn flush(&mut self) -> SaveResult {
        if let Some(write) = &self.write {
            if !self.w.is_empty() {
                let chunk = self.w.buffer_mut().take_bytes(self.py, FILE_BUFFER)?;
                self.w.clear();
                write.call1((chunk,))?;
            }
        }
        Ok(())
    }

    /// Always inlined: the int runs of a list call it per item, and as a generic method it
    /// was no longer inlined there by itself (+14 instructions per int, callgrind).
    #[inline(always)]
    fn opcode_boundary(&mut self) -> SaveResult {
        if self.w.opcode_boundary() && self.write.is_some() {
            self.flush()?;
        }
        Ok(())
    }

    /// A length-prefixed payload after its header: straight to the file when it bypasses framing
    /// and a file is there (no copy into our buffer), else into the buffer.
    fn payload(&mut self, mode: Payload, data: &[u8], as_object: Option<&Bound<'py, PyAny>>) -> SaveResult {
        match (mode, &self.write) {
            (Payload::Bypass, Some(_)) => {
                self.flush()?;
                let write = self.write.clone();
                if let Some(write) = write {
                    match as_object {
                        Some(o) => write.call1((o,))?,
                        None => write.call1((PyBytes::new(self.py, data),))?,
                    };
                }
                Ok(())
            }
            _ => {
                self.w.payload(data);
                Ok(())
            }
        }
    }

    #[inline]
    pub(crate) fn memo_put(&mut self, obj: &Bound<'py, PyAny>) -> SaveResult {
        if self.fast {
            return Ok(());
        }
        if obj.as_ptr() == self.unshared {
            self.unshared = ptr::null_mut();
            return Ok(());
        }
        let idx = self.memo.put(obj);
        self.w.memo_put(idx).map_err(|e| crate::statics::wire_error(self.py, e))
    }

    #[inline]
    pub(crate) fn memo_get(&mut self, idx: usize) -> SaveResult {
        self.w.memo_get(idx).map_err(|e| crate::statics::wire_error(self.py, e))
    }

    /// An item of a container: [`Dumper::save`], with ints and floats written inline (no call)
    /// when there is no `persistent_id` to ask first.
    ///
    /// The cloudpickle pickler does not memoize an item (str, bytes, tuple, list, dict) whose
    /// only reference is its container's (a counted reference, as list and tuple items and dict
    /// values have; not dict keys, which split dicts share uncounted), when the container
    /// cannot be walked twice (a list or dict, memoized before its items, or a tuple that is
    /// unshared itself): the walk cannot meet the item again, nor a cycle through it, and the
    /// memo holds a reference to every key, so it is not in the memo either. What only Python code
    /// run during the dump could reach again (a `__reduce__` digging it out of its container)
    /// would be written twice, equal but not identical. This is the memo traffic of task lists
    /// and records (a memo entry per tuple and str) and shrinks their streams.
    ///
    /// `refs`: the references the caller knows of (the container's, and ours if it took one);
    /// 0 where items may be shared uncounted.
    #[inline(always)]
    fn save_item(&mut self, obj: &Bound<'py, PyAny>, refs: ffi::Py_ssize_t) -> SaveResult {
        if self.hooks.persistent_id.is_none() {
            // SAFETY: `obj` is a live object; reading its type pointer is always valid.
            let tp = unsafe { ffi::Py_TYPE(obj.as_ptr()) };
            if tp == ptr::addr_of_mut!(ffi::PyLong_Type) {
                self.opcode_boundary()?;
                return self.save_long(obj);
            }
            if tp == ptr::addr_of_mut!(ffi::PyFloat_Type) && self.w.is_binary() {
                self.opcode_boundary()?;
                // SAFETY: exact float.
                self.w.binfloat(unsafe { ffi::PyFloat_AS_DOUBLE(obj.as_ptr()) });
                return Ok(());
            }
            self.opcode_boundary()?;
            // SAFETY: reading the reference count of a live object.
            if refs > 0 && self.elide_unshared && unsafe { ffi::Py_REFCNT(obj.as_ptr()) } == refs {
                return self.save_unshared(obj, tp);
            }
            return self.save_nonatom(obj, tp);
        }
        self.save(obj, false)
    }

    /// A tuple item written without the walk's dispatch, when it is an atom or (in an unshared
    /// tuple, `in_unshared`) an unshared ASCII str: the items of records and task arguments.
    /// False if it is anything else.
    #[inline(always)]
    fn save_leaf(&mut self, obj: &Bound<'py, PyAny>, in_unshared: bool) -> bool {
        let p = obj.as_ptr();
        // SAFETY: `obj` is a live object; type, reference count and (for exact floats) value
        // are plain reads.
        let tp = unsafe { ffi::Py_TYPE(p) };
        if tp == ptr::addr_of_mut!(ffi::PyLong_Type) {
            // SAFETY: exact int.
            if let Some(v) = unsafe { crate::layout::small_int(p, self.ints_readable) } {
                self.w.int(v);
                return true;
            }
            return false;
        }
        if tp == ptr::addr_of_mut!(ffi::PyFloat_Type) && self.w.is_binary() {
            // SAFETY: `obj` is an exact int (type checked above); `ints_readable` is
            // `layout::ints_readable`.
            self.w.binfloat(unsafe { ffi::PyFloat_AS_DOUBLE(p) });
            return true;
        }
        // SAFETY: `p` is an exact float (type checked above).
        if p == unsafe { ffi::Py_None() } {
            self.w.none();
            return true;
        }
        // A str only this tuple references (see `save_item`), short enough to go inline.
        if in_unshared
            && tp == ptr::addr_of_mut!(ffi::PyUnicode_Type)
            && self.elide_unshared
            // SAFETY: `Py_None` only returns the None singleton's address.
            && unsafe { ffi::Py_REFCNT(p) } == 1
        {
            if let Some(ascii) = crate::layout::ascii_str(obj) {
                // SHORT_BINUNICODE, always inline in the frame: cannot fail.
                if self.proto() >= 4 && ascii.len() <= 0xff && self.w.unicode(ascii).is_ok() {
                    return true;
                }
            }
        }
        false
    }

    #[inline]
    fn save_unshared(&mut self, obj: &Bound<'py, PyAny>, tp: *mut ffi::PyTypeObject) -> SaveResult {
        if tp == ptr::addr_of_mut!(ffi::PyTuple_Type) {
            return self.save_tuple(obj, true);
        }
        let elided = tp == ptr::addr_of_mut!(ffi::PyUnicode_Type)
            || tp == ptr::addr_of_mut!(ffi::PyBytes_Type)
            || tp == ptr::addr_of_mut!(ffi::PyList_Type)
            || tp == ptr::addr_of_mut!(ffi::PyDict_Type);
        if !elided {
            return self.save_nonatom(obj, tp);
        }
        self.unshared = obj.as_ptr();
        let result = if tp == ptr::addr_of_mut!(ffi::PyUnicode_Type) {
            self.save_str(obj)
        } else if tp == ptr::addr_of_mut!(ffi::PyBytes_Type) {
            self.save_bytes(obj)
        } else {
            let _guard = RecursionGuard::enter(self.py, self.stack_floor, self.depth_limit)?;
            if tp == ptr::addr_of_mut!(ffi::PyList_Type) {
                self.save_list(obj)
            } else {
                self.save_dict(obj)
            }
        };
        // Consumed by the memo step already, except where an error came first.
        self.unshared = ptr::null_mut();
        result
    }

    /// The heart of the walk, in `_pickle.c`'s order. (The exact types are disjoint, so the
    /// commonest are tested first: int, float, str.)
    pub(crate) fn save(&mut self, obj: &Bound<'py, PyAny>, pers_save: bool) -> SaveResult {
        self.opcode_boundary()?;
        if self.hooks.persistent_id.is_some() && !pers_save && self.save_pers(obj)? {
            return Ok(());
        }
        // SAFETY: `obj` is a live object; reading its type pointer is always valid.
        let tp = unsafe { ffi::Py_TYPE(obj.as_ptr()) };

        // Atoms: never memoized, so no memo lookup.
        if tp == ptr::addr_of_mut!(ffi::PyLong_Type) {
            return self.save_long(obj);
        }
        if tp == ptr::addr_of_mut!(ffi::PyFloat_Type) && self.w.is_binary() {
            // SAFETY: exact float.
            self.w.binfloat(unsafe { ffi::PyFloat_AS_DOUBLE(obj.as_ptr()) });
            return Ok(());
        }
        self.save_nonatom(obj, tp)
    }

    /// [`Dumper::save`] past the int and binary float fast paths.
    #[inline(never)]
    fn save_nonatom(&mut self, obj: &Bound<'py, PyAny>, tp: *mut ffi::PyTypeObject) -> SaveResult {
        let p = obj.as_ptr();
        if tp == ptr::addr_of_mut!(ffi::PyFloat_Type) {
            return self.save_float(obj);
        }
        if tp == ptr::addr_of_mut!(ffi::PyUnicode_Type) {
            if let Some(idx) = self.memo.get(obj) {
                return self.memo_get(idx);
            }
            return self.save_str(obj);
        }
        // SAFETY: `Py_None` only returns the None singleton's address.
        if p == unsafe { ffi::Py_None() } {
            self.w.none();
            return Ok(());
        }
        // SAFETY: `Py_True` only returns the True singleton's address.
        if p == unsafe { ffi::Py_True() } {
            self.w.bool(true);
            return Ok(());
        }
        // SAFETY: `Py_False` only returns the False singleton's address.
        if p == unsafe { ffi::Py_False() } {
            self.w.bool(false);
            return Ok(());
        }

        if let Some(idx) = self.memo.get(obj) {
            return self.memo_get(idx);
        }

        if tp == ptr::addr_of_mut!(ffi::PyBytes_Type) {
            return self.save_bytes(obj);
        }
        if tp == ptr::addr_of_mut!(ffi::PyTuple_Type) {
            return self.save_tuple(obj, false); // checks depth itself, when it nests
        }

        // Only containers and reductions can nest: check depth from here, atoms stay fast.
        let _guard = RecursionGuard::enter(self.py, self.stack_floor, self.depth_limit)?;

        if tp == ptr::addr_of_mut!(ffi::PyDict_Type) {
            self.save_dict(obj)
        } else if tp == ptr::addr_of_mut!(ffi::PySet_Type) {
            self.save_set(obj)
        } else if tp == ptr::addr_of_mut!(ffi::PyFrozenSet_Type) {
            self.save_frozenset(obj)
        } else if tp == ptr::addr_of_mut!(ffi::PyList_Type) {
            self.save_list(obj)
        } else if tp == ptr::addr_of_mut!(ffi::PyByteArray_Type) {
            self.save_bytearray(obj)
        } else if tp.cast::<ffi::PyObject>() == self.st.pickle_buffer_type.as_ptr() {
            self.save_picklebuffer(obj)
        } else {
            self.save_other(obj, tp)
        }
    }

    /// Everything that is not an exact built-in: reducer_override, types and functions by
    /// reference, dispatch tables, `__reduce_ex__`.
    #[inline(never)]
    fn save_other(&mut self, obj: &Bound<'py, PyAny>, tp: *mut ffi::PyTypeObject) -> SaveResult {
        let py = self.py;
        // SAFETY: `tp` is the live type object of `obj`.
        let type_obj = unsafe { Bound::from_borrowed_ptr(py, tp.cast::<ffi::PyObject>()) };
        // SAFETY: as above; a type object is a `type` instance.
        let type_t = unsafe { type_obj.cast_unchecked::<PyType>() };
        if let Some(instead) = L::substitute(self, obj, type_t)? {
            return self.save(&instead, false);
        }
        if let Some(ro) = self.hooks.reducer_override.clone() {
            let rv = ro.call1((obj,))?;
            if !rv.is(py.NotImplemented()) {
                return self.save_reduce_value(obj, &rv);
            }
        } else {
            match L::reducer_override(self, obj, type_t)? {
                Handled::Done => return Ok(()),
                Handled::Reduce(rv) => return self.save_reduce_value(obj, &rv),
                Handled::Pass => {}
            }
        }
        if tp == ptr::addr_of_mut!(ffi::PyType_Type) {
            return self.save_type(obj);
        }
        if tp == ptr::addr_of_mut!(ffi::PyFunction_Type) {
            return self.save_global(obj, None);
        }
        let mut reduce_func: Option<Bound<'py, PyAny>> = None;
        if let Some(table) = &self.hooks.dispatch_table {
            match table.get_item(&type_obj) {
                Ok(f) => reduce_func = Some(f),
                Err(e) if e.is_instance_of::<pyo3::exceptions::PyKeyError>(py) => {}
                Err(e) => return Err(e),
            }
        }
        if reduce_func.is_none() {
            match L::dispatch(self, obj, type_t)? {
                Handled::Done => return Ok(()),
                Handled::Reduce(rv) => return self.save_reduce_value(obj, &rv),
                Handled::Pass => {}
            }
        }
        if reduce_func.is_none() && self.hooks.dispatch_table.is_none() {
            let table = self.st.copyreg_dispatch_table.bind(py).cast::<PyDict>()?;
            reduce_func = table.get_item(&type_obj)?;
        }
        // SAFETY: `tp` is a live type object; the flag is `PyType_Check`'s subclass test.
        let is_class = unsafe { ffi::PyType_FastSubclass(tp, ffi::Py_TPFLAGS_TYPE_SUBCLASS) } != 0;
        let rv = if let Some(f) = reduce_func {
            f.call1((obj,))?
        } else if is_class {
            return self.save_global(obj, None);
        } else if self.proto() >= 2 && self.plain.is_plain(py, tp) && self.save_plain_instance(obj, &type_obj)? {
            return Ok(());
        } else if let Some(rex) = lookup_attr(obj, intern!(py, "__reduce_ex__"))? {
            rex.call1((self.proto(),))?
        } else if let Some(r) = lookup_attr(obj, intern!(py, "__reduce__"))? {
            r.call0()?
        } else {
            return Err(pickling_error(py, format!("can't pickle '{}' object: {}", type_name(obj), safe_repr(obj))));
        };
        self.save_reduce_value(obj, &rv)
    }
    fn save_pers(&mut self, obj: &Bound<'py, PyAny>) -> PyResult<bool> {
        let Some(f) = self.hooks.persistent_id.clone() else { return Ok(false) };
        let pid = f.call1((obj,))?;
        if pid.is_none() {
            return Ok(false);
        }
        if self.w.is_binary() {
            self.save(&pid, true)?;
            self.w.op(pickle_wire::opcodes::BINPERSID);
        } else {
            let text = pid.str()?;
            let s = text.to_str()?;
            if !s.is_ascii() {
                return Err(pickling_error(self.py, "persistent IDs in protocol 0 must be ASCII strings"));
            }
            self.w.persid_text(s.as_bytes());
        }
        Ok(true)
    }
}
