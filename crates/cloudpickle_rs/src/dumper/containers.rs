//! Containers: lists, dicts, sets, frozensets and tuples, batched as `_pickle.c` batches them,
//! and fast mode's cycle tracking.

use std::ptr;

use pickle_wire::BATCHSIZE;
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

use super::guard::{can_nest, RecursionGuard};
use super::{Dumper, Layer, SaveResult};
use crate::errors::type_name;

/// `_pickle.c`'s FAST_NESTING_LIMIT: fast mode starts tracking cycles past this depth.
const FAST_NESTING_LIMIT: usize = 50;

impl<'py, L: Layer<'py>> Dumper<'py, L> {
    pub(super) fn fast_enter(&mut self, obj: &Bound<'py, PyAny>) -> SaveResult {
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

    pub(super) fn fast_leave(&mut self, obj: &Bound<'py, PyAny>) {
        if self.fast_nesting >= FAST_NESTING_LIMIT {
            self.fast_memo.remove(&(obj.as_ptr() as usize));
        }
        self.fast_nesting = self.fast_nesting.saturating_sub(1);
    }

    pub(super) fn save_list(&mut self, obj: &Bound<'py, PyAny>) -> SaveResult {
        if self.fast {
            self.fast_enter(obj)?;
        }
        self.w.empty_list();
        self.memo_put(obj)?;
        let list = obj.cast::<PyList>()?;
        if list.len() > 0 {
            if self.proto() > 0 {
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
    pub(super) fn save_list_item(
        &mut self,
        list: &Bound<'py, PyList>,
        item: &Bound<'py, PyAny>,
        i: usize,
    ) -> SaveResult {
        let py = self.py;
        self.save_item(item, 2).map_err(|e| self.err_path.list_item(py, e, list.as_any(), i))
    }

    pub(super) fn batch_list_exact(&mut self, list: &Bound<'py, PyList>) -> SaveResult {
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

    pub(super) fn save_dict(&mut self, obj: &Bound<'py, PyAny>) -> SaveResult {
        if self.fast {
            self.fast_enter(obj)?;
        }
        self.w.empty_dict();
        self.memo_put(obj)?;
        if self.proto() > 0 {
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
    pub(super) fn save_dict_entry(&mut self, k: &Bound<'py, PyAny>, v: &Bound<'py, PyAny>) -> SaveResult {
        let py = self.py;
        self.save_item(k, 0).map_err(|e| self.err_path.dict_key(py, e, k))?;
        self.save_item(v, 2).map_err(|e| self.err_path.dict_value(py, e, k))
    }

    pub(super) fn batch_dict_exact(&mut self, dict: &Bound<'py, PyDict>) -> SaveResult {
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
    pub(super) fn set_elements(&self, obj: &Bound<'py, PyAny>) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let mut items: Vec<Bound<'py, PyAny>> = Vec::new();
        for item in obj.try_iter()? {
            items.push(item?);
        }
        // The plain layer keeps _pickle.c's bytes exactly; the cloudpickle layer promises
        // deterministic bytes.
        let all_str = L::SORT_STR_SETS && items.iter().all(|i| i.is_exact_instance_of::<PyString>());
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

    pub(super) fn save_set(&mut self, obj: &Bound<'py, PyAny>) -> SaveResult {
        use pickle_wire::opcodes::{ADDITEMS, EMPTY_SET, MARK};
        let py = self.py;
        if self.proto() < 4 {
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

    pub(super) fn save_frozenset(&mut self, obj: &Bound<'py, PyAny>) -> SaveResult {
        use pickle_wire::opcodes::{FROZENSET, MARK, POP_MARK};
        let py = self.py;
        if self.proto() < 4 {
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
    pub(super) fn save_tuple(&mut self, obj: &Bound<'py, PyAny>, unshared: bool) -> SaveResult {
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
}
