//! Dynamic functions by value: `_make_function` with the memoized closure cells, the 6-tuple
//! state setter, the function's globals (shared per module namespace), its submodules.

use pickle_wire::opcodes::{POP, REDUCE, TUPLE2, TUPLE3};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use super::{fresh_keys, fresh_str, CloudDumper};
use crate::dumper::SaveResult;
use crate::lookup::lookup_attr;

impl<'py> CloudDumper<'py> {
    // ----- functions ---------------------------------------------------------------------------

    /// A dynamic function, written as upstream writes it (`_make_function` + the 6-tuple state
    /// setter `_function_setstate`) with one difference: the closure cells given to
    /// `_make_function` are the memoized cells themselves, created empty and filled with
    /// `setattr(cell, 'cell_contents', v)` once the function exists. Closures that share a cell
    /// still share it after loading (upstream gives each function fresh cells), and recursion
    /// through a cell is closed by the memo.
    pub(super) fn save_function_by_value(&mut self, func: &Bound<'py, PyAny>) -> SaveResult {
        let py = self.py;
        let rec = self.layer.rec;
        let it = self.layer.it;
        let (code, f_globals, closure) = function_parts(func)?;

        let base_globals = self.base_globals(&f_globals)?;

        // newargs: (code, base_globals, None, None, closure cells)
        self.save(rec.make_function.bind(py), false)?;
        self.w.op(pickle_wire::opcodes::MARK);
        let from_source = self.by_source() != crate::cloud::options::BySource::Off
            && self.save_code_by_source(&code, func).map_err(|e| self.err_path.attribute(py, e, func, "__code__"))?;
        if !from_source {
            // Bytecode (by_source off, or auto after its one warning for this function): not
            // through `save`, whose code dispatch would try the source again.
            self.save_code_memoized(&code).map_err(|e| self.err_path.attribute(py, e, func, "__code__"))?;
        }
        self.save(&base_globals, false)?;
        self.w.none();
        self.w.none();
        let cells: Vec<Bound<'py, PyAny>> = if closure.is_none() {
            self.w.none();
            Vec::new()
        } else {
            let cells: Vec<Bound<'py, PyAny>> = closure.cast::<PyTuple>()?.iter().collect();
            if from_source {
                self.save_closure_by_name(&code, &cells)?;
            } else {
                self.save_closure_cells(&closure, &cells)?;
            }
            cells
        };
        self.w.op(pickle_wire::opcodes::TUPLE);
        self.w.op(REDUCE);
        if let Some(idx) = self.memo.get(func) {
            self.w.op(POP);
            return self.memo_get(idx);
        }
        self.memo_put(func)?;

        // state: (func.__dict__, slotstate), applied by _function_setstate(func, state). Written
        // straight to the stream: the state dicts exist only on the receiver.
        self.save(rec.function_setstate.bind(py), false)?;
        self.save(func, false)?;
        self.write_function_state(func, &code, &f_globals, &cells)
            .map_err(|e| self.err_path.reduce_state(py, e, func))?;
        self.w.op(TUPLE2); // (state, slotstate)
        self.w.op(TUPLE2); // (func, that)
        self.w.op(REDUCE);
        self.w.op(POP);

        // Fill the cells that nobody filled yet (a cell's value may reach this function or a
        // sibling again: the memo and `cells_filled` close those loops).
        if !cells.is_empty() {
            let freevars = code.getattr(intern!(py, "co_freevars"))?.cast_into::<PyTuple>()?;
            for (i, cell) in cells.iter().enumerate() {
                let addr = cell.as_ptr() as usize;
                let Ok(value) = cell.getattr(intern!(py, "cell_contents")) else { continue };
                let newly = self.layer.cells_filled.insert(addr);
                if !newly {
                    continue;
                }
                let name = freevars.get_item(i).map(|n| n.to_string()).unwrap_or_else(|_| i.to_string());
                self.save(it.builtins_setattr.bind(py), false)?;
                self.save(cell, false)?;
                self.save(intern!(py, "cell_contents").as_any(), false)?;
                self.save(&value, false)
                    .map_err(|e| self.err_path.attribute(py, e, func, &format!("__closure__ cell '{name}'")))?;
                self.w.op(TUPLE3);
                self.w.op(REDUCE);
                self.w.op(POP);
            }
        }
        Ok(())
    }

    /// The closure tuple of `_make_function`: each cell once per dump, created empty.
    pub(super) fn save_closure_cells(
        &mut self,
        closure: &Bound<'py, PyAny>,
        cells: &[Bound<'py, PyAny>],
    ) -> SaveResult {
        let uses_mark = self.w.tuple_uses_mark(cells.len());
        if cells.is_empty() {
            self.w.empty_tuple();
            return Ok(());
        }
        if uses_mark {
            self.w.op(pickle_wire::opcodes::MARK);
        }
        for cell in cells {
            self.save_empty_cell_once(cell)?;
        }
        self.w.tuple_end(cells.len());
        // The tuple itself is not memoized: __closure__ tuples are not shared between functions.
        let _ = closure;
        Ok(())
    }

    /// The `(state, slotstate)` pair of `_function_setstate`, in upstream's key order.
    pub(super) fn write_function_state(
        &mut self,
        func: &Bound<'py, PyAny>,
        code: &Bound<'py, PyAny>,
        f_globals: &Bound<'py, PyDict>,
        cells: &[Bound<'py, PyAny>],
    ) -> SaveResult {
        let py = self.py;
        let it = self.layer.it;
        // state: func.__dict__ with fresh keys
        let mut pairs: Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)> = Vec::new();
        if let Some(fdict) = function_dict(func) {
            for (k, v) in fdict.iter() {
                pairs.push((fresh_str(&k)?, v));
            }
        }
        self.w.empty_dict();
        self.write_dict_items(&pairs, func, "__dict__")?;

        // slotstate
        let (names, imports) = crate::cloud::code::code_refs(it, code)?;
        let mut globals: Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)> = Vec::with_capacity(names.len());
        for name in names.iter() {
            if let Some(v) = f_globals.get_item(&name)? {
                globals.push((name, v));
            }
        }
        let mut deps: Vec<Bound<'py, PyAny>> = globals.iter().map(|(_, v)| v.clone()).collect();
        for cell in cells {
            if let Ok(v) = cell.getattr(intern!(py, "cell_contents")) {
                deps.push(v);
            }
        }
        if let Some(r) = self.layer.receiver.as_ref().filter(|r| r.fast) {
            if r.function_suspect(it, func, &imports, &names, f_globals, &deps)? {
                r.scan(func)?;
            }
        }
        let submodules = self.imported_submodules(code, &deps)?;
        // The slots with a value of their own; `_cloudpickle_submodules` and `__globals__` follow.
        let slot: [(Bound<'py, PyAny>, Bound<'py, PyAny>); 8] = [
            (intern!(py, "__name__").clone().into_any(), fresh_str(&func.getattr(intern!(py, "__name__"))?)?),
            (intern!(py, "__qualname__").clone().into_any(), fresh_str(&func.getattr(intern!(py, "__qualname__"))?)?),
            (intern!(py, "__annotations__").clone().into_any(), func.getattr(intern!(py, "__annotations__"))?),
            (
                intern!(py, "__kwdefaults__").clone().into_any(),
                function_slot(func, pyo3::ffi::PyFunction_GetKwDefaults),
            ),
            (intern!(py, "__defaults__").clone().into_any(), function_slot(func, pyo3::ffi::PyFunction_GetDefaults)),
            (intern!(py, "__module__").clone().into_any(), function_slot(func, pyo3::ffi::PyFunction_GetModule)),
            (intern!(py, "__doc__").clone().into_any(), func.getattr(intern!(py, "__doc__"))?),
            // Cells are shared through _make_function's closure and filled by setattr afterwards.
            (intern!(py, "__closure__").clone().into_any(), py.None().into_bound(py)),
        ];
        self.w.empty_dict();
        self.w.op(pickle_wire::opcodes::MARK);
        for (k, v) in &slot {
            self.save(k, false)?;
            self.save(v, false).map_err(|e| self.err_path.attribute(py, e, func, &k.to_string()))?;
        }
        // A list that exists only in the stream.
        self.save(intern!(py, "_cloudpickle_submodules").as_any(), false)?;
        self.w.empty_list();
        if !submodules.is_empty() {
            self.w.op(pickle_wire::opcodes::MARK);
            for m in &submodules {
                self.save(m, false)?;
            }
            self.w.op(pickle_wire::opcodes::APPENDS);
        }
        self.save(intern!(py, "__globals__").as_any(), false)?;
        self.w.empty_dict();
        self.write_dict_items(&globals, func, "__globals__")?;
        // PEP 695 (3.12+): `def f[T]()` keeps its type parameters in `__type_params__`, which
        // upstream drops; `_function_setstate` sets every slot key it is given, so a stock
        // receiver restores it. Left out when empty (the stream stays upstream's).
        if let Some(params) = type_params(func)? {
            self.save(intern!(py, "__type_params__").as_any(), false)?;
            self.save(&params, false).map_err(|e| self.err_path.attribute(py, e, func, "__type_params__"))?;
        }
        self.w.op(pickle_wire::opcodes::SETITEMS);
        Ok(())
    }

    /// Items of a dict that exists only in the stream (EMPTY_DICT already written), batched as
    /// `_pickle.c` batches a dict's items.
    pub(super) fn write_dict_items(
        &mut self,
        pairs: &[(Bound<'py, PyAny>, Bound<'py, PyAny>)],
        owner: &Bound<'py, PyAny>,
        what: &str,
    ) -> SaveResult {
        use pickle_wire::opcodes::{MARK, SETITEM, SETITEMS};
        let py = self.py;
        if pairs.is_empty() {
            return Ok(());
        }
        if pairs.len() == 1 {
            let (k, v) = &pairs[0];
            self.save(k, false)?;
            self.save(v, false).map_err(|e| self.err_path.attribute(py, e, owner, &format!("{what}[{k}]")))?;
            self.w.op(SETITEM);
            return Ok(());
        }
        for batch in pairs.chunks(pickle_wire::BATCHSIZE) {
            self.w.op(MARK);
            for (k, v) in batch {
                self.save(k, false)?;
                self.save(v, false).map_err(|e| self.err_path.attribute(py, e, owner, &format!("{what}[{k}]")))?;
            }
            self.w.op(SETITEMS);
        }
        Ok(())
    }

    /// A closure cell, created empty the first time this dump meets it (its contents are
    /// filled once every function sharing it exists), a memo reference afterwards.
    pub(crate) fn save_empty_cell_once(&mut self, cell: &Bound<'py, PyAny>) -> SaveResult {
        let py = self.py;
        if let Some(idx) = self.memo.get(cell) {
            return self.memo_get(idx);
        }
        let rec = self.layer.rec;
        self.save(rec.make_empty_cell.bind(py), false)?;
        self.w.empty_tuple();
        self.w.op(REDUCE);
        self.memo_put(cell)
    }

    pub(super) fn function_state(
        &mut self,
        func: &Bound<'py, PyAny>,
        code: &Bound<'py, PyAny>,
        f_globals: &Bound<'py, PyDict>,
        cells: &[Bound<'py, PyAny>],
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = self.py;
        let it = self.layer.it;
        let slot = PyDict::new(py);
        slot.set_item(intern!(py, "__name__"), fresh_str(&func.getattr(intern!(py, "__name__"))?)?)?;
        slot.set_item(intern!(py, "__qualname__"), fresh_str(&func.getattr(intern!(py, "__qualname__"))?)?)?;
        slot.set_item(intern!(py, "__annotations__"), func.getattr(intern!(py, "__annotations__"))?)?;
        slot.set_item(intern!(py, "__kwdefaults__"), func.getattr(intern!(py, "__kwdefaults__"))?)?;
        slot.set_item(intern!(py, "__defaults__"), func.getattr(intern!(py, "__defaults__"))?)?;
        slot.set_item(intern!(py, "__module__"), func.getattr(intern!(py, "__module__"))?)?;
        slot.set_item(intern!(py, "__doc__"), func.getattr(intern!(py, "__doc__"))?)?;
        // Cells are shared through _make_function's closure and filled by setattr afterwards.
        slot.set_item(intern!(py, "__closure__"), py.None())?;

        let (names, imports) = crate::cloud::code::code_refs(it, code)?;
        let globals = PyDict::new(py);
        for name in names.iter() {
            if let Some(v) = f_globals.get_item(&name)? {
                globals.set_item(name, v)?;
            }
        }
        let mut deps: Vec<Bound<'py, PyAny>> = globals.values().iter().collect();
        for cell in cells {
            if let Ok(v) = cell.getattr(intern!(py, "cell_contents")) {
                deps.push(v);
            }
        }
        if let Some(r) = self.layer.receiver.as_ref().filter(|r| r.fast) {
            if r.function_suspect(it, func, &imports, &names, f_globals, &deps)? {
                r.scan(func)?;
            }
        }
        let submodules = self.imported_submodules(code, &deps)?;
        slot.set_item(intern!(py, "_cloudpickle_submodules"), submodules)?;
        slot.set_item(intern!(py, "__globals__"), globals)?;
        if let Some(params) = type_params(func)? {
            slot.set_item(intern!(py, "__type_params__"), params)?;
        }

        let fdict = func.getattr(intern!(py, "__dict__"))?.cast_into::<PyDict>()?;
        let state = fresh_keys(&fdict)?;
        Ok(PyTuple::new(py, [state.into_any(), slot.into_any()])?.into_any())
    }

    /// Loaded submodules of the packages a function uses, that its code can reach by attribute
    /// (`concurrent.futures` through the global `concurrent`), so the receiver imports them.
    pub(super) fn imported_submodules(
        &mut self,
        code: &Bound<'py, PyAny>,
        deps: &[Bound<'py, PyAny>],
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let py = self.py;
        let it = self.layer.it;
        let mut out = Vec::new();
        let module_type = it.module_type.bind(py);
        let mut co_names: Option<Vec<String>> = None;
        for dep in deps {
            if !dep.is_instance(module_type)? {
                continue;
            }
            let Some(package) = lookup_attr(dep, intern!(py, "__package__"))? else { continue };
            if package.is_none() || !package.is_truthy()? {
                continue;
            }
            let name: String = dep.getattr(intern!(py, "__name__"))?.extract()?;
            let names = match &co_names {
                Some(n) => n,
                None => {
                    let v: Vec<String> = code.getattr(intern!(py, "co_names"))?.extract()?;
                    co_names.get_or_insert(v)
                }
            };
            let names = names.clone();
            let subs = self.layer.loaded_submodules(py, &name)?;
            let modules = crate::lookup::sys_modules(py)?;
            for sub in subs {
                let rest = &sub[name.len() + 1..];
                if rest.split('.').all(|t| names.iter().any(|n| n == t)) {
                    if let Ok(m) = modules.get_item(&sub) {
                        out.push(m);
                    }
                }
            }
        }
        Ok(out)
    }

    pub(super) fn base_globals(&self, f_globals: &Bound<'py, PyDict>) -> PyResult<Bound<'py, PyAny>> {
        let py = self.py;
        let key = f_globals.as_ptr() as usize;
        let globals_ref = self.layer.globals_ref.clone();
        if let Some(b) = globals_ref.get_item(key)? {
            return Ok(b);
        }
        let b = PyDict::new(py);
        for k in [intern!(py, "__package__"), intern!(py, "__name__"), intern!(py, "__path__"), intern!(py, "__file__")]
        {
            if let Some(v) = f_globals.get_item(k)? {
                b.set_item(k, v)?;
            }
        }
        globals_ref.set_item(key, &b)?;
        Ok(b.into_any())
    }
}

/// A function's non-empty `__type_params__` (CPython 3.12+; None before and when empty).
fn type_params<'py>(func: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
    if !cfg!(Py_3_12) {
        return Ok(None);
    }
    let params = func.getattr(intern!(func.py(), "__type_params__"))?;
    Ok((params.len()? > 0).then_some(params))
}

/// `(__code__, __globals__, __closure__)` of an exact function, read from the object directly.
fn function_parts<'py>(
    func: &Bound<'py, PyAny>,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyDict>, Bound<'py, PyAny>)> {
    let code = function_slot(func, pyo3::ffi::PyFunction_GetCode);
    let globals = function_slot(func, pyo3::ffi::PyFunction_GetGlobals).cast_into::<PyDict>()?;
    let closure = function_slot(func, pyo3::ffi::PyFunction_GetClosure);
    Ok((code, globals, closure))
}

/// A function's `__dict__` if it has one yet (None for anything but a function): the
/// `__dict__` attribute would make an empty dict for every function that has none.
pub(crate) fn function_dict<'py>(func: &Bound<'py, PyAny>) -> Option<Bound<'py, PyDict>> {
    let py = func.py();
    // SAFETY: a pointer check on a live object.
    if unsafe { pyo3::ffi::PyFunction_Check(func.as_ptr()) } == 0 {
        return None; // a code object met on its own, say
    }
    // SAFETY: `func` is an exact function, whose struct pyo3 describes for this interpreter;
    // `func_dict` is NULL or a borrowed reference.
    let p = unsafe { (*func.as_ptr().cast::<pyo3::ffi::PyFunctionObject>()).func_dict };
    if p.is_null() {
        return None;
    }
    // SAFETY: `p` is the function's own `func_dict` slot, checked non-null above; borrowed from
    // `func`, which we hold, and made strong at once.
    unsafe { Bound::from_borrowed_ptr(py, p) }.cast_into::<PyDict>().ok()
}

/// One of a function's slots through the C API (a borrowed reference, NULL meaning None).
pub(crate) fn function_slot<'py>(
    func: &Bound<'py, PyAny>,
    getter: unsafe extern "C" fn(*mut pyo3::ffi::PyObject) -> *mut pyo3::ffi::PyObject,
) -> Bound<'py, PyAny> {
    let py = func.py();
    // SAFETY: `func` is an exact function (checked by the caller's type test); the getters
    // return borrowed references owned by it, which we turn into strong ones at once.
    let p = unsafe { getter(func.as_ptr()) };
    if p.is_null() {
        py.None().into_bound(py)
    } else {
        // SAFETY: `p` is non-null: a borrowed reference owned by `func` (see above), made strong at
        // once.
        unsafe { Bound::from_borrowed_ptr(py, p) }
    }
}
