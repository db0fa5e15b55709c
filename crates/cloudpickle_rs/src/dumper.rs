//! One dump: the object walk, mirroring `_pickle.c`'s `save()`.
//!
//! The per-dump state lives in [`Dumper`], a plain struct passed down the walk (never behind a
//! pyclass borrow): user code called from the walk (`__reduce_ex__`, `persistent_id`,
//! `reducer_override`) may call back into a pickler.

use std::os::raw::c_int;
use std::ptr;

use pickle_wire::{Payload, Writer, BATCHSIZE};
use pyo3::exceptions::{PyRecursionError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple, PyType};

use crate::byvalue::Handled;
use crate::errors::{type_name, ErrorPath};
use crate::memo::Memo;
use crate::outbuf::OutBuf;
use crate::statics::{pickling_error, statics, Statics};

/// Below this much native stack we refuse to go deeper and raise RecursionError.
const STACK_RED_ZONE: usize = 256 * 1024;
/// Initial size of the `bytes` object `dumps` writes into (grown by doubling, trimmed at the
/// end): small enough for Python's small-object allocator (objects up to 512 bytes), which makes
/// and trims it faster than malloc for the small dumps where that matters.
const DUMPS_BUFFER: usize = 512 - 48;
/// Buffer of a file-backed dump: one committed frame (64 KiB) and a little more.
const FILE_BUFFER: usize = 64 * 1024 + 64;
/// `_pickle.c`'s FAST_NESTING_LIMIT: fast mode starts tracking cycles past this depth.
const FAST_NESTING_LIMIT: usize = 50;

/// The hooks a pickler instance brings to one dump (all optional).
#[derive(Default)]
pub(crate) struct Hooks<'py> {
    pub persistent_id: Option<Bound<'py, PyAny>>,
    pub reducer_override: Option<Bound<'py, PyAny>>,
    pub dispatch_table: Option<Bound<'py, PyAny>>,
    pub buffer_callback: Option<Bound<'py, PyAny>>,
}

pub(crate) struct Dumper<'py> {
    pub py: Python<'py>,
    pub w: Writer<OutBuf<'py>>,
    pub memo: Memo,
    pub proto: u8,
    pub fix_imports: bool,
    pub fast: bool,
    fast_nesting: usize,
    fast_memo: crate::addr::AddrSet,
    /// `file.write` when dumping to a file; None for `dumps`.
    write: Option<Bound<'py, PyAny>>,
    pub hooks: Hooks<'py>,
    pub st: &'py Statics,
    pub err_path: ErrorPath,
    /// cloudpickle's by-value layer; None for plain `_pickle` semantics.
    pub cloud: Option<Box<crate::cloud::Cloud<'py>>>,
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
    /// [`Dumper::save_item`]): the cloudpickle pickler at protocol 3 and above, without
    /// `persistent_id` or fast mode.
    elide_unshared: bool,
    /// The item [`Dumper::save_item`] found unshared, until its memo step passes it by.
    unshared: *mut ffi::PyObject,
}

type SaveResult = PyResult<()>;

impl<'py> Dumper<'py> {
    #[inline(always)]
    pub(crate) fn new(
        py: Python<'py>,
        proto: u8,
        fix_imports: bool,
        write: Option<Bound<'py, PyAny>>,
        hooks: Hooks<'py>,
        memo: Memo,
        cloud: Option<Box<crate::cloud::Cloud<'py>>>,
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
            proto,
            fix_imports,
            fast: false,
            fast_nesting: 0,
            fast_memo: Default::default(),
            write,
            hooks,
            st,
            err_path: ErrorPath::default(),
            cloud,
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
            self.cloud.is_some() && self.hooks.persistent_id.is_none() && !self.fast && self.proto >= 3;
        self.w.start();
        let mut result = self.save(obj, false);
        if result.is_ok() && self.by_source() != crate::bysource::BySource::Off {
            result = self.write_source_lines();
        }
        if let Err(err) = result {
            let err = self.err_path.finish(self.py, err, obj);
            if let Some(r) = self.cloud.as_ref().and_then(|c| c.receiver.as_ref()) {
                r.finish_error(&err);
            }
            return Err(if self.cloud.is_some() { crate::statics::deep_recursion_error(self.py, err) } else { err });
        }
        self.w.finish();
        if let Some(err) = self.w.buffer_mut().take_error() {
            return Err(err);
        }
        self.flush()
    }

    /// Whether this dump has a `receiver=` (its stream then goes to memory first).
    pub(crate) fn has_receiver(&self) -> bool {
        self.cloud.as_ref().is_some_and(|c| c.receiver.is_some())
    }

    /// The `receiver=` size check to run on this dump's stream, if any.
    pub(crate) fn receiver_size_check(&self) -> Option<crate::receiver::SizeCheck<'py>> {
        self.cloud.as_ref().and_then(|c| c.receiver.as_ref()).and_then(|r| r.size_check())
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

    #[inline]
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
        self.w.memo_put(idx).map_err(|e| pickling_error(self.py, e.to_string()))
    }

    #[inline]
    pub(crate) fn memo_get(&mut self, idx: usize) -> SaveResult {
        self.w.memo_get(idx).map_err(|e| pickling_error(self.py, e.to_string()))
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
                if self.proto >= 4 && ascii.len() <= 0xff && self.w.unicode(ascii).is_ok() {
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
        if let Some(r) = self.cloud.as_mut().and_then(|c| c.receiver.as_mut()) {
            if r.prohibited(type_obj.cast::<PyType>()?)? {
                let instead = r.refuse(obj)?;
                return self.save(&instead, false);
            }
        }
        if let Some(ro) = self.hooks.reducer_override.clone() {
            let rv = ro.call1((obj,))?;
            if !rv.is(py.NotImplemented()) {
                return self.save_reduce_value(obj, &rv);
            }
        } else if self.cloud.is_some() {
            match self.cloud_override(obj, type_obj.cast::<PyType>()?)? {
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
        if reduce_func.is_none() && self.cloud.is_some() {
            match self.cloud_dispatch(obj, type_obj.cast::<PyType>()?)? {
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
        } else if self.proto >= 2 && self.plain.is_plain(py, tp) && self.save_plain_instance(obj, &type_obj)? {
            return Ok(());
        } else if let Some(rex) = lookup_attr(obj, intern!(py, "__reduce_ex__"))? {
            rex.call1((self.proto,))?
        } else if let Some(r) = lookup_attr(obj, intern!(py, "__reduce__"))? {
            r.call0()?
        } else {
            return Err(pickling_error(py, format!("can't pickle '{}' object: {}", type_name(obj), safe_repr(obj))));
        };
        self.save_reduce_value(obj, &rv)
    }

    /// An instance of a plain class ([`crate::plain`]): what `save_reduce` writes for
    /// `(copyreg.__newobj__, (cls,), state)`. False (nothing written) when the instance's own
    /// `__dict__` overrides the protocol.
    fn save_plain_instance(&mut self, obj: &Bound<'py, PyAny>, cls: &Bound<'py, PyAny>) -> PyResult<bool> {
        let Ok(state) = crate::plain::instance_state(obj)? else { return Ok(false) };
        self.save(cls, false)?;
        self.save(PyTuple::empty(self.py).as_any(), false)?;
        self.w.op(pickle_wire::opcodes::NEWOBJ);
        if let Some(idx) = self.memo.get(obj) {
            // Saving the class reached the instance (a class attribute): as save_reduce does.
            self.w.op(pickle_wire::opcodes::POP);
            self.memo_get(idx)?;
            return Ok(true);
        }
        self.memo_put(obj)?;
        if let Some(state) = state {
            self.save(&state, false).map_err(|e| self.err_path.reduce_state(self.py, e, obj))?;
            self.w.op(pickle_wire::opcodes::BUILD);
        }
        Ok(true)
    }

    /// What a reducer returned: a string names a global, a tuple is a reduction.
    pub(crate) fn save_reduce_value(&mut self, obj: &Bound<'py, PyAny>, rv: &Bound<'py, PyAny>) -> SaveResult {
        if rv.is_instance_of::<PyString>() {
            return self.save_global(obj, Some(rv.cast::<PyString>()?));
        }
        let Ok(tuple) = rv.cast::<PyTuple>() else {
            return Err(pickling_error(self.py, "__reduce__ must return a string or tuple"));
        };
        self.save_reduce(tuple, Some(obj))
    }

    // ----- atoms -------------------------------------------------------------------------------

    #[inline(always)]
    fn save_long(&mut self, obj: &Bound<'py, PyAny>) -> SaveResult {
        // SAFETY: `obj` is an exact int; `ints_readable` comes from `layout::ints_readable`.
        if let Some(v) = unsafe { crate::layout::small_int(obj.as_ptr(), self.ints_readable) } {
            self.w.int(v);
            return Ok(());
        }
        self.save_long_api(obj)
    }

    /// Ints of two digits or more (or where the layout is not read): through the C API.
    #[inline(never)]
    fn save_long_api(&mut self, obj: &Bound<'py, PyAny>) -> SaveResult {
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
    fn save_big_long(&mut self, obj: &Bound<'py, PyAny>) -> SaveResult {
        if self.proto >= 2 {
            // `int.bit_length()`: what the private `_PyLong_NumBits` (gone from pyo3's FFI) returned.
            let nbits: usize = obj.call_method0(intern!(self.py, "bit_length"))?.extract()?;
            let nbytes = (nbits >> 3) + 1;
            let mut buf = vec![0u8; nbytes];
            crate::layout::long_to_le_bytes(obj, &mut buf)?;
            let digits = pickle_wire::minimal_twos_complement(&buf);
            self.w.long_le_bytes(digits).map_err(|e| pyo3::exceptions::PyOverflowError::new_err(e.to_string()))?;
        } else {
            let text = obj.repr()?;
            self.w.long_text(text.to_str()?.as_bytes());
        }
        Ok(())
    }

    #[inline(never)]
    fn save_float(&mut self, obj: &Bound<'py, PyAny>) -> SaveResult {
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

    fn save_str(&mut self, obj: &Bound<'py, PyAny>) -> SaveResult {
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
                self.w.unicode_header(bytes.as_bytes().len()).map_err(|e| pickling_error(self.py, e.to_string()))?;
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
    fn str_payload(&mut self, utf8: &[u8]) -> SaveResult {
        let mode = self.w.unicode_header(utf8.len()).map_err(|e| pickling_error(self.py, e.to_string()))?;
        if mode == Payload::Inline {
            self.w.payload(utf8);
            Ok(())
        } else {
            self.payload(mode, utf8, None)
        }
    }

    #[inline(never)]
    fn save_str_text(&mut self, obj: &Bound<'py, PyAny>) -> SaveResult {
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

    fn save_bytes(&mut self, obj: &Bound<'py, PyAny>) -> SaveResult {
        let bytes = obj.cast::<PyBytes>()?;
        if self.proto < 3 {
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
        let mode = self.w.bytes_header(data.len()).map_err(|e| pickling_error(self.py, e.to_string()))?;
        self.payload(mode, data, Some(obj))?;
        self.memo_put(obj)
    }

    fn save_bytearray(&mut self, obj: &Bound<'py, PyAny>) -> SaveResult {
        let py = self.py;
        if self.proto < 5 {
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
    fn save_picklebuffer(&mut self, obj: &Bound<'py, PyAny>) -> SaveResult {
        let py = self.py;
        if self.proto < 5 {
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
                let mode = self.w.bytes_header(data.len()).map_err(|e| pickling_error(py, e.to_string()))?;
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

    // ----- containers --------------------------------------------------------------------------

    fn fast_enter(&mut self, obj: &Bound<'py, PyAny>) -> SaveResult {
        self.fast_nesting += 1;
        if self.fast_nesting >= FAST_NESTING_LIMIT {
            let key = obj.as_ptr() as usize;
            if !self.fast_memo.insert(key) {
                return Err(PyValueError::new_err(format!(
                    "fast mode: can't pickle cyclic objects including object type {} at {:p}",
                    type_name(obj),
                    obj.as_ptr()
                )));
            }
        }
        Ok(())
    }

    fn fast_leave(&mut self, obj: &Bound<'py, PyAny>) {
        if self.fast_nesting >= FAST_NESTING_LIMIT {
            self.fast_memo.remove(&(obj.as_ptr() as usize));
        }
        self.fast_nesting = self.fast_nesting.saturating_sub(1);
    }

    fn save_list(&mut self, obj: &Bound<'py, PyAny>) -> SaveResult {
        if self.fast {
            self.fast_enter(obj)?;
        }
        self.w.empty_list();
        self.memo_put(obj)?;
        let list = obj.cast::<PyList>()?;
        if list.len() > 0 {
            if self.proto > 0 {
                self.batch_list_exact(list)?;
            } else {
                let iter = obj.try_iter()?;
                self.batch_list(iter.into_any())?;
            }
        }
        if self.fast {
            self.fast_leave(obj);
        }
        Ok(())
    }

    /// Item `i` of an exact list (which holds it, as our caller does).
    #[inline(always)]
    fn save_list_item(&mut self, list: &Bound<'py, PyList>, item: &Bound<'py, PyAny>, i: usize) -> SaveResult {
        let py = self.py;
        self.save_item(item, 2).map_err(|e| self.err_path.list_item(py, e, list.as_any(), i))
    }

    fn batch_list_exact(&mut self, list: &Bound<'py, PyList>) -> SaveResult {
        use pickle_wire::opcodes::{APPEND, APPENDS, MARK};
        let py = self.py;
        let list_ptr = list.as_ptr();
        // SAFETY (both reads): `list` is an exact list we hold; we re-read its size every step
        // and take a strong reference to each item before any Python code can run.
        // SAFETY: see the comment above: `list_ptr` is an exact list we hold.
        let size = || unsafe { ffi::PyList_GET_SIZE(list_ptr) } as usize;
        let item_at =
            // SAFETY: `i < size()` at every call (the loops re-read the size); the item is made
            // strong at once.
            |i: usize| unsafe { Bound::from_borrowed_ptr(py, ffi::PyList_GET_ITEM(list_ptr, i as ffi::Py_ssize_t)) };
        if size() == 1 {
            self.save_list_item(list, &item_at(0), 0)?;
            self.w.op(APPEND);
            return Ok(());
        }
        let no_pid = self.hooks.persistent_id.is_none();
        let mut total = 0usize;
        loop {
            let mut batch = 0;
            self.w.op(MARK);
            while total < size() {
                // A run of small ints, the commonest list there is, without the walk's dispatch
                // (nor a reference taken: no Python code runs while one is written). Framing
                // stays as the item-by-item path leaves it.
                // SAFETY: `total < size()`; the item is live while the list holds it.
                let p = unsafe { ffi::PyList_GET_ITEM(list_ptr, total as ffi::Py_ssize_t) };
                // SAFETY: `p` is a live item of the list (read just above); `Py_TYPE` reads its
                // header only.
                if no_pid && unsafe { ffi::Py_TYPE(p) } == ptr::addr_of_mut!(ffi::PyLong_Type) {
                    // SAFETY: an exact int.
                    if let Some(v) = unsafe { crate::layout::small_int(p, self.ints_readable) } {
                        self.opcode_boundary()?; // where `save_item` checks it
                        self.w.int(v);
                        total += 1;
                        batch += 1;
                        if batch == BATCHSIZE {
                            break;
                        }
                        continue;
                    }
                }
                self.save_list_item(list, &item_at(total), total)?;
                total += 1;
                batch += 1;
                if batch == BATCHSIZE {
                    break;
                }
            }
            self.w.op(APPENDS);
            if total >= size() {
                break;
            }
        }
        Ok(())
    }

    /// Items from an iterator (list subclasses' `listitems`, protocol 0 lists).
    pub(crate) fn batch_list(&mut self, iter: Bound<'py, PyAny>) -> SaveResult {
        use pickle_wire::opcodes::{APPEND, APPENDS, MARK};
        let py = self.py;
        let mut index = 0usize;
        let next = || -> PyResult<Option<Bound<'py, PyAny>>> {
            // SAFETY: PyIter_Next on an object we hold; NULL with or without an error set.
            let p = unsafe { ffi::PyIter_Next(iter.as_ptr()) };
            if p.is_null() {
                match PyErr::take(py) {
                    Some(e) => Err(e),
                    None => Ok(None),
                }
            } else {
                // SAFETY: `p` is a new (owned) reference returned by `PyIter_Next`, checked non-
                // null above.
                Ok(Some(unsafe { Bound::from_owned_ptr(py, p) }))
            }
        };
        if !self.w.is_binary() {
            while let Some(item) = next()? {
                self.save(&item, false).map_err(|e| self.err_path.iter_item(py, e, index))?;
                index += 1;
                self.w.op(APPEND);
            }
            return Ok(());
        }
        loop {
            let Some(first) = next()? else { return Ok(()) };
            let Some(second) = next()? else {
                self.save(&first, false).map_err(|e| self.err_path.iter_item(py, e, index))?;
                self.w.op(APPEND);
                return Ok(());
            };
            self.w.op(MARK);
            self.save(&first, false).map_err(|e| self.err_path.iter_item(py, e, index))?;
            index += 1;
            let mut n = 1;
            let mut item = Some(second);
            while let Some(it) = item {
                self.save(&it, false).map_err(|e| self.err_path.iter_item(py, e, index))?;
                index += 1;
                n += 1;
                if n == BATCHSIZE {
                    break;
                }
                item = next()?;
            }
            self.w.op(APPENDS);
            if n < BATCHSIZE {
                return Ok(());
            }
        }
    }

    fn save_dict(&mut self, obj: &Bound<'py, PyAny>) -> SaveResult {
        if self.fast {
            self.fast_enter(obj)?;
        }
        self.w.empty_dict();
        self.memo_put(obj)?;
        if self.proto > 0 {
            self.batch_dict_exact(obj.cast::<PyDict>()?)?;
        } else {
            let items = obj.call_method0(intern!(self.py, "items"))?;
            self.batch_dict(items.try_iter()?.into_any())?;
        }
        if self.fast {
            self.fast_leave(obj);
        }
        Ok(())
    }

    /// One key and value of an exact dict (`refs`: the dict holds the value, our caller holds
    /// both; keys of split dicts are shared uncounted, see [`Dumper::save_item`]).
    #[inline(always)]
    fn save_dict_entry(&mut self, k: &Bound<'py, PyAny>, v: &Bound<'py, PyAny>) -> SaveResult {
        let py = self.py;
        self.save_item(k, 0).map_err(|e| self.err_path.dict_key(py, e, k))?;
        self.save_item(v, 2).map_err(|e| self.err_path.dict_value(py, e, k))
    }

    fn batch_dict_exact(&mut self, dict: &Bound<'py, PyDict>) -> SaveResult {
        use pickle_wire::opcodes::{MARK, SETITEM, SETITEMS};
        let py = self.py;
        let dp = dict.as_ptr();
        // SAFETY: exact dict we hold.
        let dict_size = unsafe { ffi::PyDict_Size(dp) };
        if dict_size == 0 {
            return Ok(());
        }
        let mut pos: ffi::Py_ssize_t = 0;
        let mut next = || -> Option<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
            let mut k = ptr::null_mut();
            let mut v = ptr::null_mut();
            // SAFETY: PyDict_Next with borrowed outputs; we take strong references right away.
            if unsafe { ffi::PyDict_Next(dp, &mut pos, &mut k, &mut v) } == 0 {
                return None;
            }
            // SAFETY: `k` and `v` are borrowed from the dict by `PyDict_Next` and made strong at
            // once, before any Python code runs.
            Some(unsafe { (Bound::from_borrowed_ptr(py, k), Bound::from_borrowed_ptr(py, v)) })
        };
        if dict_size == 1 {
            if let Some((k, v)) = next() {
                self.save_dict_entry(&k, &v)?;
                self.w.op(SETITEM);
            }
            return Ok(());
        }
        loop {
            let mut i = 0;
            self.w.op(MARK);
            while let Some((k, v)) = next() {
                self.save_dict_entry(&k, &v)?;
                i += 1;
                if i == BATCHSIZE {
                    break;
                }
            }
            self.w.op(SETITEMS);
            // SAFETY: exact dict we hold.
            if unsafe { ffi::PyDict_Size(dp) } != dict_size {
                return Err(PyRuntimeError::new_err("dictionary changed size during iteration"));
            }
            if i != BATCHSIZE {
                return Ok(());
            }
        }
    }

    /// Key/value pairs from an iterator (dict subclasses' `dictitems`, protocol 0 dicts).
    pub(crate) fn batch_dict(&mut self, iter: Bound<'py, PyAny>) -> SaveResult {
        use pickle_wire::opcodes::{MARK, SETITEM, SETITEMS};
        let py = self.py;
        let next = || -> PyResult<Option<(Bound<'py, PyAny>, Bound<'py, PyAny>)>> {
            // SAFETY: as in batch_list.
            let p = unsafe { ffi::PyIter_Next(iter.as_ptr()) };
            if p.is_null() {
                return match PyErr::take(py) {
                    Some(e) => Err(e),
                    None => Ok(None),
                };
            }
            // SAFETY: `p` is a new (owned) reference returned by `PyIter_Next`, checked non-null
            // above.
            let item = unsafe { Bound::from_owned_ptr(py, p) };
            match item.cast::<PyTuple>() {
                Ok(t) if t.len() == 2 => Ok(Some((t.get_item(0)?, t.get_item(1)?))),
                _ => Err(PyTypeError::new_err("dict items iterator must return 2-tuples")),
            }
        };
        let save_pair = |this: &mut Self, k: &Bound<'py, PyAny>, v: &Bound<'py, PyAny>| -> SaveResult {
            this.save(k, false).map_err(|e| this.err_path.dict_key(py, e, k))?;
            this.save(v, false).map_err(|e| this.err_path.dict_value(py, e, k))
        };
        if !self.w.is_binary() {
            while let Some((k, v)) = next()? {
                save_pair(self, &k, &v)?;
                self.w.op(SETITEM);
            }
            return Ok(());
        }
        loop {
            let Some((k1, v1)) = next()? else { return Ok(()) };
            let Some(second) = next()? else {
                save_pair(self, &k1, &v1)?;
                self.w.op(SETITEM);
                return Ok(());
            };
            self.w.op(MARK);
            save_pair(self, &k1, &v1)?;
            let mut n = 1;
            let mut item = Some(second);
            while let Some((k, v)) = item {
                save_pair(self, &k, &v)?;
                n += 1;
                if n == BATCHSIZE {
                    break;
                }
                item = next()?;
            }
            self.w.op(SETITEMS);
            if n < BATCHSIZE {
                return Ok(());
            }
        }
    }

    /// The elements of a set, strong references taken, in a canonical order when they are all
    /// strings (whose iteration order depends on PYTHONHASHSEED) so the bytes are deterministic.
    fn set_elements(&self, obj: &Bound<'py, PyAny>) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let mut items: Vec<Bound<'py, PyAny>> = Vec::new();
        for item in obj.try_iter()? {
            items.push(item?);
        }
        // Plain-pickle mode keeps _pickle.c's bytes exactly; the cloudpickle layer promises
        // deterministic bytes.
        let all_str = self.cloud.is_some() && items.iter().all(|i| i.is_exact_instance_of::<PyString>());
        if all_str && items.len() > 1 {
            let mut keyed: Vec<(Vec<u8>, Bound<'py, PyAny>)> = Vec::with_capacity(items.len());
            for item in items {
                let key = match item.cast::<PyString>()?.to_str() {
                    Ok(s) => s.as_bytes().to_vec(),
                    Err(_) => item
                        .call_method1(intern!(self.py, "encode"), ("utf-8", "surrogatepass"))?
                        .extract::<Vec<u8>>()?,
                };
                keyed.push((key, item));
            }
            keyed.sort_by(|a, b| a.0.cmp(&b.0));
            items = keyed.into_iter().map(|(_, i)| i).collect();
        }
        Ok(items)
    }

    fn save_set(&mut self, obj: &Bound<'py, PyAny>) -> SaveResult {
        use pickle_wire::opcodes::{ADDITEMS, EMPTY_SET, MARK};
        let py = self.py;
        if self.proto < 4 {
            let items = PyList::new(py, self.set_elements(obj)?)?;
            let rv = PyTuple::new(
                py,
                [py.get_type::<pyo3::types::PySet>().into_any(), PyTuple::new(py, [items])?.into_any()],
            )?;
            return self.save_reduce(&rv, Some(obj));
        }
        self.w.op(EMPTY_SET);
        self.memo_put(obj)?;
        let set_size = obj.len()?;
        if set_size == 0 {
            return Ok(());
        }
        let items = self.set_elements(obj)?;
        for batch in items.chunks(BATCHSIZE) {
            self.w.op(MARK);
            for item in batch {
                self.save(item, false).map_err(|e| self.err_path.set_element(py, e, obj))?;
            }
            self.w.op(ADDITEMS);
            if obj.len()? != set_size {
                return Err(PyRuntimeError::new_err("set changed size during iteration"));
            }
        }
        Ok(())
    }

    fn save_frozenset(&mut self, obj: &Bound<'py, PyAny>) -> SaveResult {
        use pickle_wire::opcodes::{FROZENSET, MARK, POP_MARK};
        let py = self.py;
        if self.proto < 4 {
            let items = PyList::new(py, self.set_elements(obj)?)?;
            let rv = PyTuple::new(
                py,
                [py.get_type::<pyo3::types::PyFrozenSet>().into_any(), PyTuple::new(py, [items])?.into_any()],
            )?;
            return self.save_reduce(&rv, Some(obj));
        }
        self.w.op(MARK);
        for item in self.set_elements(obj)? {
            self.save(&item, false).map_err(|e| self.err_path.set_element(py, e, obj))?;
        }
        if let Some(idx) = self.memo.get(obj) {
            // Recursive: it reached the memo through its own elements.
            self.w.op(POP_MARK);
            return self.memo_get(idx);
        }
        self.w.op(FROZENSET);
        self.memo_put(obj)
    }

    /// A tuple; `unshared`: found so by [`Dumper::save_item`], not memoized. The depth check is
    /// made at the first item that can nest: a tuple of atoms and strings (a record, a task's
    /// arguments) cannot go deeper.
    fn save_tuple(&mut self, obj: &Bound<'py, PyAny>, unshared: bool) -> SaveResult {
        use pickle_wire::opcodes::MARK;
        let py = self.py;
        let tuple = obj.cast::<PyTuple>()?;
        let len = tuple.len();
        if len == 0 {
            self.w.empty_tuple();
            return Ok(());
        }
        let uses_mark = self.w.tuple_uses_mark(len);
        if uses_mark {
            self.w.op(MARK);
        }
        let mut guard: Option<RecursionGuard> = None;
        // Borrowed items: a tuple cannot lose them while we hold it.
        // Items go unmemoized only if this tuple is unshared itself: a tuple is memoized after
        // its items, so one that a cycle comes back to is walked again, items and all (a list
        // or dict is memoized first, and met again as a memo reference).
        let item_refs = if unshared { 1 } else { 0 };
        for (i, item) in tuple.iter_borrowed().enumerate() {
            if self.hooks.persistent_id.is_none() {
                // Frames end where `_pickle.c` ends them: before any object.
                self.opcode_boundary()?;
                if self.save_leaf(&item, unshared) {
                    continue;
                }
            }
            if guard.is_none() && can_nest(&item) {
                guard = Some(RecursionGuard::enter(py, self.stack_floor, self.depth_limit)?);
            }
            self.save_item(&item, item_refs).map_err(|e| self.err_path.tuple_item(py, e, obj, i))?;
        }
        drop(guard);
        if unshared {
            self.w.tuple_end(len);
            return Ok(());
        }
        if let Some(idx) = self.memo.get(obj) {
            // The tuple is recursive: throw away its items and fetch it from the memo.
            self.w.discard_tuple_items(len, uses_mark);
            return self.memo_get(idx);
        }
        self.w.tuple_end(len);
        self.memo_put(obj)
    }

    // ----- reductions --------------------------------------------------------------------------

    /// `save_reduce` of `_pickle.c`: a 2- to 6-tuple (callable, args, state, listitems,
    /// dictitems, state_setter). `obj` is None when the result must not be memoized.
    pub(crate) fn save_reduce(&mut self, rv: &Bound<'py, PyTuple>, obj: Option<&Bound<'py, PyAny>>) -> SaveResult {
        use pickle_wire::opcodes::{BUILD, NEWOBJ, NEWOBJ_EX, POP, REDUCE, TUPLE2};
        let py = self.py;
        let size = rv.len();
        if !(2..=6).contains(&size) {
            return Err(pickling_error(py, "tuple returned by __reduce__ must contain 2 through 6 elements"));
        }
        let item = |i: usize| -> PyResult<Option<Bound<'py, PyAny>>> {
            if i < size {
                let v = rv.get_item(i)?;
                Ok(if v.is_none() { None } else { Some(v) })
            } else {
                Ok(None)
            }
        };
        let callable = rv.get_item(0)?;
        let argtup = rv.get_item(1)?;
        let state = item(2)?;
        let listitems = item(3)?;
        let dictitems = item(4)?;
        let state_setter = item(5)?;
        if !callable.is_callable() {
            return Err(pickling_error(py, "first item of the tuple returned by __reduce__ must be callable"));
        }
        let Ok(argtup) = argtup.cast_into::<PyTuple>() else {
            return Err(pickling_error(py, "second item of the tuple returned by __reduce__ must be a tuple"));
        };
        if let Some(li) = &listitems {
            // SAFETY: `li` is a live object; `PyIter_Check` reads its type only.
            if unsafe { ffi::PyIter_Check(li.as_ptr()) } == 0 {
                return Err(pickling_error(
                    py,
                    format!(
                        "fourth element of the tuple returned by __reduce__ must be an iterator, not {}",
                        type_name(li)
                    ),
                ));
            }
        }
        if let Some(di) = &dictitems {
            // SAFETY: `di` is a live object; `PyIter_Check` reads its type only.
            if unsafe { ffi::PyIter_Check(di.as_ptr()) } == 0 {
                return Err(pickling_error(
                    py,
                    format!(
                        "fifth element of the tuple returned by __reduce__ must be an iterator, not {}",
                        type_name(di)
                    ),
                ));
            }
        }
        if let Some(ss) = &state_setter {
            if !ss.is_callable() {
                return Err(pickling_error(
                    py,
                    format!(
                        "sixth element of the tuple returned by __reduce__ must be a function, not {}",
                        type_name(ss)
                    ),
                ));
            }
        }

        let (mut use_newobj, mut use_newobj_ex) = (false, false);
        if self.proto >= 2 {
            if let Some(name) = lookup_attr(&callable, intern!(py, "__name__"))? {
                if let Ok(name) = name.cast::<PyString>() {
                    let n = name.to_cow()?;
                    use_newobj_ex = n == "__newobj_ex__";
                    use_newobj = !use_newobj_ex && n == "__newobj__";
                }
            }
        }

        let on_args = |this: &mut Self, e: PyErr| match obj {
            Some(o) => this.err_path.reduce_args(py, e, o),
            None => e,
        };
        if use_newobj_ex {
            if argtup.len() != 3 {
                return Err(pickling_error(
                    py,
                    format!("length of the NEWOBJ_EX argument tuple must be exactly 3, not {}", argtup.len()),
                ));
            }
            let cls = argtup.get_item(0)?;
            if !cls.is_instance_of::<PyType>() {
                return Err(pickling_error(
                    py,
                    format!("first item from NEWOBJ_EX argument tuple must be a class, not {}", type_name(&cls)),
                ));
            }
            let args = argtup.get_item(1)?;
            let Ok(args) = args.cast_into::<PyTuple>() else {
                return Err(pickling_error(
                    py,
                    format!(
                        "second item from NEWOBJ_EX argument tuple must be a tuple, not {}",
                        type_name(&argtup.get_item(1)?)
                    ),
                ));
            };
            let kwargs = argtup.get_item(2)?;
            let Ok(kwargs) = kwargs.cast_into::<PyDict>() else {
                return Err(pickling_error(
                    py,
                    format!(
                        "third item from NEWOBJ_EX argument tuple must be a dict, not {}",
                        type_name(&argtup.get_item(2)?)
                    ),
                ));
            };
            if self.proto >= 4 {
                self.save(&cls, false)?;
                self.save(args.as_any(), false).map_err(|e| on_args(self, e))?;
                self.save(kwargs.as_any(), false).map_err(|e| on_args(self, e))?;
                self.w.op(NEWOBJ_EX);
            } else {
                let mut newargs: Vec<Bound<'py, PyAny>> = Vec::with_capacity(args.len() + 2);
                newargs.push(cls.getattr(intern!(py, "__new__"))?);
                newargs.push(cls.clone());
                newargs.extend(args.iter());
                let partial = self.st.functools_partial.bind(py).call(PyTuple::new(py, newargs)?, Some(&kwargs))?;
                self.save(&partial, false)?;
                self.save(PyTuple::empty(py).as_any(), false)?;
                self.w.op(REDUCE);
            }
        } else if use_newobj {
            if argtup.is_empty() {
                return Err(pickling_error(py, "__newobj__ arglist is empty"));
            }
            let cls = argtup.get_item(0)?;
            if !cls.is_instance_of::<PyType>() {
                return Err(pickling_error(py, "args[0] from __newobj__ args is not a type"));
            }
            if let Some(o) = obj {
                let obj_class = o.getattr(intern!(py, "__class__"))?;
                if !obj_class.is(&cls) {
                    return Err(pickling_error(py, "args[0] from __newobj__ args has the wrong class"));
                }
            }
            self.save(&cls, false)?;
            let newargtup = argtup.get_slice(1, argtup.len());
            self.save(newargtup.as_any(), false).map_err(|e| on_args(self, e))?;
            self.w.op(NEWOBJ);
        } else {
            self.save(&callable, false)?;
            self.save(argtup.as_any(), false).map_err(|e| on_args(self, e))?;
            self.w.op(REDUCE);
        }

        if let Some(o) = obj {
            if let Some(idx) = self.memo.get(o) {
                // Recursive reduction: drop what we built and fetch the memoized object.
                self.w.op(POP);
                return self.memo_get(idx);
            }
            self.memo_put(o)?;
        }
        if let Some(li) = listitems {
            self.batch_list(li)?;
        }
        if let Some(di) = dictitems {
            self.batch_dict(di)?;
        }
        if let Some(state) = state {
            let on_state = |this: &mut Self, e: PyErr| match obj {
                Some(o) => this.err_path.reduce_state(py, e, o),
                None => e,
            };
            match state_setter {
                None => {
                    self.save(&state, false).map_err(|e| on_state(self, e))?;
                    self.w.op(BUILD);
                }
                Some(setter) => {
                    // state_setter(obj, state), with its result popped: stack-transparent.
                    self.save(&setter, false)?;
                    if let Some(o) = obj {
                        self.save(o, false)?;
                    } else {
                        self.save(&py.None().into_bound(py), false)?;
                    }
                    self.save(&state, false).map_err(|e| on_state(self, e))?;
                    self.w.op(TUPLE2);
                    self.w.op(REDUCE);
                    self.w.op(POP);
                }
            }
        }
        Ok(())
    }

    // ----- globals -----------------------------------------------------------------------------

    fn save_type(&mut self, obj: &Bound<'py, PyAny>) -> SaveResult {
        let py = self.py;
        let singleton = if obj.is(py.None().into_bound(py).get_type()) {
            Some(py.None().into_bound(py))
        } else if obj.is(py.Ellipsis().into_bound(py).get_type()) {
            Some(py.Ellipsis().into_bound(py))
        } else if obj.is(py.NotImplemented().into_bound(py).get_type()) {
            Some(py.NotImplemented().into_bound(py))
        } else {
            None
        };
        if let Some(s) = singleton {
            let rv = PyTuple::new(py, [py.get_type::<PyType>().into_any(), PyTuple::new(py, [s])?.into_any()])?;
            return self.save_reduce(&rv, Some(obj));
        }
        self.save_global(obj, None)
    }

    /// A reference to a global: `module.qualname`, found by import, checked to be `obj`.
    pub(crate) fn save_global(&mut self, obj: &Bound<'py, PyAny>, name: Option<&Bound<'py, PyString>>) -> SaveResult {
        crate::globals::save_global(self, obj, name)
    }

    pub(crate) fn write_global_ref(
        &mut self,
        obj: &Bound<'py, PyAny>,
        module_name: &Bound<'py, PyString>,
        global_name: &Bound<'py, PyString>,
        parent_is_module: bool,
        parent: &Bound<'py, PyAny>,
        lastname: &Bound<'py, PyString>,
    ) -> SaveResult {
        use pickle_wire::opcodes::STACK_GLOBAL;
        let py = self.py;
        if let Some(c) = self.cloud.as_ref() {
            if let Some(r) = c.receiver.as_ref() {
                r.check_global(obj, module_name, global_name, &c.rec.module_name)?;
            }
        }
        let registry = self.st.extension_registry.bind(py).cast::<PyDict>()?;
        if self.proto >= 2 && !registry.is_empty() {
            let key = PyTuple::new(py, [module_name.as_any(), global_name.as_any()])?;
            if let Some(code) = registry.get_item(&key)? {
                // `_pickle.c` reads the code with PyLong_AsLong: a huge int is its OverflowError on
                // every version; 3.13 also lets a non-int's TypeError through and reports a code
                // out of range as RuntimeError, where 3.9-3.12 raise PicklingError for both.
                let code_val = match code.extract::<i64>() {
                    Ok(v) => v,
                    Err(e) if code.is_instance_of::<pyo3::types::PyInt>() || cfg!(Py_3_13) => return Err(e),
                    Err(_) => {
                        return Err(pickling_error(
                            py,
                            format!(
                                "Can't pickle {}: extension code {} isn't an integer",
                                safe_repr(obj),
                                safe_repr(&code)
                            ),
                        ))
                    }
                };
                if code_val <= 0 || code_val > 0x7fff_ffff {
                    if cfg!(Py_3_13) {
                        return Err(pyo3::exceptions::PyRuntimeError::new_err(format!(
                            "extension code {code_val} is out of range"
                        )));
                    }
                    return Err(pickling_error(
                        py,
                        format!("Can't pickle {}: extension code {} is out of range", safe_repr(obj), code_val),
                    ));
                }
                self.w.ext(code_val as u32);
                return Ok(());
            }
        }
        let global_name = if parent_is_module { lastname } else { global_name };
        if self.proto >= 4 {
            self.save(module_name.as_any(), false)?;
            self.save(global_name.as_any(), false)?;
            self.w.op(STACK_GLOBAL);
        } else if !parent_is_module && cfg!(Py_3_13) {
            // 3.13+: `getattr(getattr(module.top, a), b)` with the top-level name written by
            // name, so a qualname through the object itself (`C.ref` with `C.ref = C`) does not
            // recurse into saving its parent.
            let dotted = global_name.to_str()?.to_owned();
            let mut parts = dotted.split('.');
            let top = parts.next().unwrap_or("");
            let attrs: Vec<&str> = parts.collect();
            let getattr = self.st.builtins_getattr.bind(py).clone();
            for _ in &attrs {
                self.save(&getattr, false)?;
                if self.proto < 2 {
                    self.w.op(pickle_wire::opcodes::MARK);
                }
            }
            self.write_toplevel_by_name(module_name, &PyString::new(py, top))?;
            for attr in &attrs {
                self.save(PyString::new(py, attr).as_any(), false)?;
                self.w.op(if self.proto < 2 { pickle_wire::opcodes::TUPLE } else { pickle_wire::opcodes::TUPLE2 });
                self.w.op(pickle_wire::opcodes::REDUCE);
            }
        } else if !parent_is_module {
            let rv = PyTuple::new(
                py,
                [
                    self.st.builtins_getattr.bind(py).clone(),
                    PyTuple::new(py, [parent.clone(), lastname.clone().into_any()])?.into_any(),
                ],
            )?;
            self.save_reduce(&rv, None)?;
        } else {
            self.write_toplevel_by_name(module_name, global_name)?;
        }
        self.memo_put(obj)
    }

    /// `GLOBAL module\nname\n`, through fix_imports below protocol 3.
    fn write_toplevel_by_name(
        &mut self,
        module_name: &Bound<'py, PyString>,
        global_name: &Bound<'py, PyString>,
    ) -> SaveResult {
        let py = self.py;
        {
            let (mut m, mut g) = (module_name.clone(), global_name.clone());
            if self.proto < 3 && self.fix_imports {
                (m, g) = crate::globals::fix_imports(self, m, g)?;
            }
            let encode = |s: &Bound<'py, PyString>, what: &str| -> PyResult<Vec<u8>> {
                let text = s.to_cow().map_err(|_| {
                    pickling_error(
                        py,
                        format!("can't pickle {what} identifier '{}' using pickle protocol {}", s, self.proto),
                    )
                })?;
                if self.proto != 3 && !text.is_ascii() {
                    return Err(pickling_error(
                        py,
                        format!("can't pickle {what} identifier '{text}' using pickle protocol {}", self.proto),
                    ));
                }
                Ok(text.as_bytes().to_vec())
            };
            let mb = encode(&m, "module")?;
            let gb = encode(&g, "global")?;
            self.w.global_text(&mb, &gb);
        }
        Ok(())
    }
}

/// `_PyObject_LookupAttr`: Ok(None) when the attribute is missing (AttributeError swallowed).
pub(crate) fn lookup_attr<'py>(
    obj: &Bound<'py, PyAny>,
    name: &Bound<'py, PyString>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    match obj.getattr(name) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_instance_of::<pyo3::exceptions::PyAttributeError>(obj.py()) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `repr(obj)` for an error message; never fails.
pub(crate) fn safe_repr(obj: &Bound<'_, PyAny>) -> String {
    match obj.repr() {
        Ok(r) => r.to_string_lossy().into_owned(),
        Err(_) => format!("<{} object at {:p}>", type_name(obj), obj.as_ptr()),
    }
}

/// Depth guard: the interpreter's own recursion limit (so RecursionError comes where pickle's
/// does), and a native stack check so a raised limit can never overflow our stack.
///
/// From CPython 3.13 on, `Py_EnterRecursiveCall` counts against a fixed C recursion budget
/// (10 000 on Linux) instead of `sys.getrecursionlimit()`: alone, it would let a chain of
/// 2 000 functions (which upstream's Python-level reducers refuse under the default limit of
/// 1 000) through, and ignore a limit the user lowered. So on 3.13+ the walk also counts its own
/// depth (per thread, across nested dumps) against `sys.getrecursionlimit()`.
struct RecursionGuard;

#[cfg(Py_3_13)]
thread_local! {
    static DEPTH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// `sys.getrecursionlimit()` (read on 3.13+ only; see [`RecursionGuard`]).
fn python_recursion_limit(py: Python<'_>) -> u32 {
    if !cfg!(Py_3_13) {
        return u32::MAX;
    }
    py.import("sys").and_then(|s| s.call_method0("getrecursionlimit")).and_then(|l| l.extract::<u32>()).unwrap_or(1000)
}

impl RecursionGuard {
    /// `stack_floor`: see [`stack_floor`]; `depth_limit`: [`python_recursion_limit`].
    #[inline]
    fn enter(py: Python<'_>, stack_floor: usize, depth_limit: u32) -> PyResult<Self> {
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
fn can_nest(obj: &Bound<'_, PyAny>) -> bool {
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
fn stack_address() -> usize {
    let probe = 0u8;
    std::hint::black_box(&probe) as *const u8 as usize
}

/// The stack address below which the red zone starts (stacks grow down on every platform we
/// build for); 0 when the stack size is unknown. The red zone is [`STACK_RED_ZONE`], or a quarter
/// of what is left when the dump starts on a small thread stack (256 KiB threads, musl's
/// 128 KiB), so shallow objects still pickle there; never under [`MIN_RED_ZONE`]. A dump runs on
/// the thread that created its Dumper, so this is computed once per dump.
fn stack_floor() -> usize {
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

/// A buffer view of an object exporting the buffer protocol, released on drop.
struct BufferView {
    view: Box<ffi::Py_buffer>,
}

impl BufferView {
    fn get(obj: &Bound<'_, PyAny>) -> PyResult<Self> {
        // SAFETY: a zeroed Py_buffer is the documented initial state; filled by GetBuffer.
        let mut view: Box<ffi::Py_buffer> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: `view` is a zeroed Py_buffer owned by us; released in `Drop` only when this
        // succeeded.
        if unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), &mut *view, ffi::PyBUF_FULL_RO) } != 0 {
            return Err(PyErr::fetch(obj.py()));
        }
        Ok(BufferView { view })
    }
    fn is_contiguous(&self) -> bool {
        self.view.suboffsets.is_null()
            // SAFETY: `view` was filled by a successful `PyObject_GetBuffer` and is released only
            // in `Drop`.
            && unsafe { ffi::PyBuffer_IsContiguous(&*self.view, b'A' as std::os::raw::c_char) } != 0
    }
    fn readonly(&self) -> bool {
        self.view.readonly != 0
    }
    fn as_slice(&self) -> &[u8] {
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
