//! The by-value save paths of the cloudpickle layer: dynamic functions (with closure cells
//! shared as they were), code objects, cells, modules, dynamic classes and enums, TypeVars.

use std::collections::HashMap;
use std::sync::Mutex;

use pickle_wire::opcodes::{POP, REDUCE, TUPLE2, TUPLE3};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyString, PyTuple, PyType};

use crate::cloud::CloudDumper;
use crate::cloud::{fresh_keys, fresh_str};
use crate::dumper::Handled;
use crate::lookup::lookup_attr;

type SaveResult = PyResult<()>;

impl<'py> CloudDumper<'py> {
    /// cloudpickle's `reducer_override`: classes and functions.
    pub(crate) fn cloud_override(
        &mut self,
        obj: &Bound<'py, PyAny>,
        tp: &Bound<'py, PyType>,
    ) -> PyResult<Handled<'py>> {
        let py = self.py;
        let cloud = &self.layer;
        let it = cloud.it;
        // SAFETY: `tp` is a live type object. (The flag test is `PyType_Check` on its instances,
        // a subclass test against `type` without walking the MRO.)
        if unsafe { pyo3::ffi::PyType_FastSubclass(tp.as_type_ptr(), pyo3::ffi::Py_TPFLAGS_TYPE_SUBCLASS) } != 0 {
            // A metaclass with a reducer of its own in a dispatch table decides how its classes
            // pickle (upstream's reducer_override shadows it: CPython's test_dynamic_class).
            if !tp.is(py.get_type::<PyType>()) && self.metaclass_has_reducer(tp)? {
                return Ok(Handled::Pass);
            }
            let Some(rv) = self.class_reduce(obj)? else {
                if let Some(alias) = self.c_class_alias(obj)? {
                    self.save_global(obj, Some(&alias))?;
                    return Ok(Handled::Done);
                }
                return Ok(Handled::Pass);
            };
            let post = self.regenerated_dataclass(obj)?;
            self.save_reduce_value(obj, &rv)?;
            if let Some(apply) = post {
                // dataclasses.dataclass(**params)(cls): regenerate the generated methods.
                self.save(&apply, false)?;
                self.save(obj, false)?;
                self.w.op(pickle_wire::opcodes::TUPLE1);
                self.w.op(REDUCE);
                self.w.op(POP);
            }
            return Ok(Handled::Done);
        }
        if tp.is(it.function_type.bind(py)) {
            let c = &self.layer;
            let by_ref = c.rec.own_functions.contains(&(obj.as_ptr() as usize)) || c.function_by_reference(obj)?;
            if by_ref {
                return Ok(Handled::Pass);
            }
            self.save_function_by_value(obj)?;
            return Ok(Handled::Done);
        }
        Ok(Handled::Pass)
    }

    fn metaclass_has_reducer(&self, meta: &Bound<'py, PyType>) -> PyResult<bool> {
        let py = self.py;
        if let Some(table) = &self.hooks.dispatch_table {
            return match table.get_item(meta) {
                Ok(_) => Ok(true),
                Err(e) if e.is_instance_of::<pyo3::exceptions::PyKeyError>(py) => Ok(false),
                Err(e) => Err(e),
            };
        }
        self.st.copyreg_dispatch_table.bind(py).contains(meta)
    }

    /// cloudpickle's dispatch table: native reducers for code, cells, modules and TypeVars, and
    /// the reconstructor module's own reducers for the rest.
    pub(crate) fn cloud_dispatch(
        &mut self,
        obj: &Bound<'py, PyAny>,
        tp: &Bound<'py, PyType>,
    ) -> PyResult<Handled<'py>> {
        let py = self.py;
        let cloud = &self.layer;
        let it = cloud.it;
        if tp.is(it.code_type.bind(py)) {
            // A code object met on its own (not as a function's): by source when asked.
            if self.by_source() == crate::bysource::BySource::Off || !self.save_code_by_source(obj, obj)? {
                self.save_code(obj)?;
            }
            return Ok(Handled::Done);
        }
        if tp.is(it.cell_type.bind(py)) {
            let rec = cloud.rec;
            let rv = match obj.getattr(intern!(py, "cell_contents")) {
                Ok(v) => {
                    self.layer.cells_filled.insert(obj.as_ptr() as usize);
                    (rec.make_cell.bind(py).clone(), (v,)).into_pyobject(py)?.into_any()
                }
                Err(_) => (rec.make_empty_cell.bind(py).clone(), PyTuple::empty(py)).into_pyobject(py)?.into_any(),
            };
            return Ok(Handled::Reduce(rv));
        }
        if tp.is(it.module_type.bind(py)) {
            return Ok(Handled::Reduce(self.module_reduce(obj)?));
        }
        if tp.is(it.typevar_type.bind(py)) {
            return Ok(match self.typevar_reduce(obj)? {
                Some(rv) => Handled::Reduce(rv),
                None => Handled::Pass,
            });
        }
        if tp.is(it.forwardref_type.bind(py)) {
            return Ok(Handled::Reduce(forwardref_reduce(obj, it.forwardref_type.bind(py))?));
        }
        if tp.is(it.dataclass_field_type.bind(py)) && cloud.by_source != crate::bysource::BySource::Off {
            return Ok(Handled::Reduce(portable_field_reduce(py, obj)?));
        }
        if obj.is(it.dataclasses_missing.bind(py)) {
            // The sentinel is compared by identity: keep it the receiver's own.
            self.save_named_global(obj, "dataclasses", "MISSING")?;
            return Ok(Handled::Done);
        }
        let extra = cloud.rec.extra_reducers.bind(py);
        if let Some(reducer) = extra.get_item(tp)? {
            return Ok(Handled::Reduce(reducer.call1((obj,))?));
        }
        Ok(Handled::Pass)
    }

    // ----- functions ---------------------------------------------------------------------------

    /// A dynamic function, written as upstream writes it (`_make_function` + the 6-tuple state
    /// setter `_function_setstate`) with one difference: the closure cells given to
    /// `_make_function` are the memoized cells themselves, created empty and filled with
    /// `setattr(cell, 'cell_contents', v)` once the function exists. Closures that share a cell
    /// still share it after loading (upstream gives each function fresh cells), and recursion
    /// through a cell is closed by the memo.
    fn save_function_by_value(&mut self, func: &Bound<'py, PyAny>) -> SaveResult {
        let py = self.py;
        let rec = self.layer.rec;
        let it = self.layer.it;
        let (code, f_globals, closure) = function_parts(func)?;

        let base_globals = self.base_globals(&f_globals)?;

        // newargs: (code, base_globals, None, None, closure cells)
        self.save(rec.make_function.bind(py), false)?;
        self.w.op(pickle_wire::opcodes::MARK);
        let from_source = self.by_source() != crate::bysource::BySource::Off
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
    fn save_closure_cells(&mut self, closure: &Bound<'py, PyAny>, cells: &[Bound<'py, PyAny>]) -> SaveResult {
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
    fn write_function_state(
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
        let (names, imports) = crate::cloud::code_refs(it, code)?;
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
        let slot: [(Bound<'py, PyAny>, Bound<'py, PyAny>); 10] = [
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
            // Written below as a list that exists only in the stream.
            (intern!(py, "_cloudpickle_submodules").clone().into_any(), py.None().into_bound(py)),
            (intern!(py, "__globals__").clone().into_any(), py.None().into_bound(py)),
        ];
        self.w.empty_dict();
        self.w.op(pickle_wire::opcodes::MARK);
        for (k, v) in &slot[..8] {
            self.save(k, false)?;
            self.save(v, false).map_err(|e| self.err_path.attribute(py, e, func, &k.to_string()))?;
        }
        self.save(&slot[8].0, false)?;
        self.w.empty_list();
        if !submodules.is_empty() {
            self.w.op(pickle_wire::opcodes::MARK);
            for m in &submodules {
                self.save(m, false)?;
            }
            self.w.op(pickle_wire::opcodes::APPENDS);
        }
        self.save(&slot[9].0, false)?;
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
    fn write_dict_items(
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

    fn function_state(
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

        let (names, imports) = crate::cloud::code_refs(it, code)?;
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
    fn imported_submodules(
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

    // ----- code, modules, TypeVars -------------------------------------------------------------

    fn save_code_memoized(&mut self, code: &Bound<'py, PyAny>) -> SaveResult {
        if let Some(idx) = self.memo.get(code) {
            return self.memo_get(idx);
        }
        self.save_code(code)
    }

    /// A code object as upstream writes it, `_builtin_type('CodeType')(*fields)`, with the
    /// constructor fields of this interpreter's version written straight to the stream.
    fn save_code(&mut self, code: &Bound<'py, PyAny>) -> SaveResult {
        let py = self.py;
        if let Some(t) = self.layer.target_python.filter(|&t| t != crate::bysource::running_version(py)) {
            let name = code.getattr(intern!(py, "co_name")).map(|n| n.to_string()).unwrap_or_default();
            let file = code.getattr(intern!(py, "co_filename")).map(|n| n.to_string()).unwrap_or_default();
            let line = code.getattr(intern!(py, "co_firstlineno")).map(|n| n.to_string()).unwrap_or_default();
            let here = crate::bysource::running_version(py);
            return Err(crate::statics::pickling_error(
                py,
                format!(
                    "cannot pickle the code of '{name}' ({file}, line {line}) as bytecode for Python {}.{}: bytecode \
                     written by Python {}.{} loads only there. Use by_source=True.",
                    t.0, t.1, here.0, here.1
                ),
            ));
        }
        let it = self.layer.it;
        self.save(it.code_type.bind(py), false)?;
        self.w.op(pickle_wire::opcodes::MARK);
        for v in crate::cloud::code_fields(it, code)?.iter() {
            self.save(&v, false)?;
        }
        self.w.op(pickle_wire::opcodes::TUPLE);
        self.w.op(REDUCE);
        if let Some(idx) = self.memo.get(code) {
            self.w.op(POP);
            return self.memo_get(idx);
        }
        self.memo_put(code)
    }

    fn module_reduce(&mut self, module: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let py = self.py;
        let rec = self.layer.rec;
        let name = module.getattr(intern!(py, "__name__"))?;
        if self.layer.should_pickle_module_by_reference(module)? {
            return Ok((rec.subimport.bind(py).clone(), (name,)).into_pyobject(py)?.into_any());
        }
        let state = module.getattr(intern!(py, "__dict__"))?.cast_into::<PyDict>()?.copy()?;
        let _ = state.del_item("__builtins__");
        Ok((rec.dynamic_subimport.bind(py).clone(), (name, state)).into_pyobject(py)?.into_any())
    }

    fn typevar_reduce(&mut self, tv: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let py = self.py;
        let rec = self.layer.rec;
        let name = tv.getattr(intern!(py, "__name__"))?.cast_into::<PyString>()?;
        let by_value = match self.layer.lookup_module_and_qualname(tv, Some(&name))? {
            None => true,
            Some(m) => self.layer.is_registered_by_value(py, &m)?,
        };
        if !by_value {
            let module = tv.getattr(intern!(py, "__module__"))?;
            let getattr = self.st.builtins_getattr.bind(py).clone();
            let m = crate::lookup::sys_modules(py)?.get_item(&module)?;
            return Ok(Some((getattr, (m, name)).into_pyobject(py)?.into_any()));
        }
        let tracker = tracker_id(py, rec, tv)?;
        let make = py.import(rec.module_name.as_str())?.getattr("_make_typevar")?;
        let args = PyTuple::new(
            py,
            [
                name.into_any(),
                tv.getattr("__bound__")?,
                tv.getattr("__constraints__")?,
                tv.getattr("__covariant__")?,
                tv.getattr("__contravariant__")?,
                tracker.into_any(),
            ],
        )?;
        Ok(Some((make, args).into_pyobject(py)?.into_any()))
    }

    // ----- classes -----------------------------------------------------------------------------

    /// For a C class its qualname does not find, the name its module holds it under
    /// (`_json.make_encoder` is the class `_json.Encoder`, `_thread.LockType` is `_thread.lock`):
    /// the receiver's module finds it there. None when the qualname works, or nothing in the
    /// module is the class (save_global then raises the C pickler's PicklingError).
    fn c_class_alias(&mut self, cls: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyString>>> {
        let py = self.py;
        let it = self.layer.it;
        let Ok(t) = cls.cast::<PyType>() else { return Ok(None) };
        if !crate::cloud::is_c_defined(it, t) || self.layer.lookup_module_and_qualname(cls, None)?.is_some() {
            return Ok(None);
        }
        let Some(module_name) = crate::lookup::lookup_attr(cls, intern!(py, "__module__"))? else { return Ok(None) };
        let modules = crate::lookup::sys_modules(py)?;
        let Ok(Some(module)) = modules.cast::<PyDict>().map(|d| d.get_item(&module_name).ok().flatten()) else {
            return Ok(None);
        };
        let Some(dict) = crate::lookup::lookup_attr(&module, intern!(py, "__dict__"))? else { return Ok(None) };
        let Ok(dict) = dict.cast_into::<PyDict>() else { return Ok(None) };
        for (k, v) in dict.iter() {
            if v.is(cls) {
                if let Ok(k) = k.cast_into::<PyString>() {
                    return Ok(Some(k));
                }
            }
        }
        Ok(None)
    }

    /// cloudpickle's `_class_reduce`: None means "by reference" (save_global).
    fn class_reduce(&mut self, cls: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let py = self.py;
        let rec = self.layer.rec;
        let it = self.layer.it;
        let type_type = py.get_type::<PyType>().into_any();
        for singleton in [py.None().into_bound(py), py.Ellipsis().into_bound(py), py.NotImplemented().into_bound(py)] {
            if cls.is(singleton.get_type()) {
                return Ok(Some((type_type, (singleton,)).into_pyobject(py)?.into_any()));
            }
        }
        if let Some(name) = it.builtin_type_names.get(&(cls.as_ptr() as usize)) {
            return Ok(Some(
                (rec.builtin_type.bind(py).clone(), (name.bind(py).clone(),)).into_pyobject(py)?.into_any(),
            ));
        }
        let cls_t = cls.cast::<PyType>()?;
        // A C class goes by reference even where it cannot be found: save_global then raises
        // the C pickler's PicklingError before a byte of a stream that cannot load is written.
        if crate::cloud::is_c_defined(it, cls_t) || self.layer.should_pickle_by_reference(cls, None)? {
            return Ok(None);
        }
        let is_enum = cls_t.is_subclass(it.enum_type.bind(py))?;
        let (mut clsdict, slotstate) = class_getstate(py, it, cls_t)?;
        if self.by_source() != crate::bysource::BySource::Off {
            if let Some(rv) = regenerated_namedtuple(py, cls_t, &clsdict, rec)? {
                return Ok(Some(rv));
            }
            strip_dataclass_generated(py, cls_t, &clsdict, self.by_source())?;
        }
        let tracker = tracker_id(py, rec, cls)?;
        let newargs;
        let maker;
        if is_enum {
            let members = PyDict::new(py);
            // `__members__` includes aliases and, for Flag enums on 3.11+, the members that
            // iteration skips (upstream iterates and loses them: #558).
            let all = cls.getattr(intern!(py, "__members__"))?;
            for item in all.call_method0(intern!(py, "items"))?.try_iter()? {
                let (k, member): (Bound<'py, PyAny>, Bound<'py, PyAny>) = item?.extract()?;
                members.set_item(&k, member.getattr(intern!(py, "_value_"))?)?;
            }
            for attr in
                ["_generate_next_value_", "_member_names_", "_member_map_", "_member_type_", "_value2member_map_"]
            {
                let _ = clsdict.del_item(attr);
            }
            for k in members.keys() {
                let _ = clsdict.del_item(k);
            }
            newargs = PyTuple::new(
                py,
                [
                    cls.getattr(intern!(py, "__bases__"))?,
                    cls.getattr(intern!(py, "__name__"))?,
                    cls.getattr(intern!(py, "__qualname__"))?,
                    members.into_any(),
                    cls.getattr(intern!(py, "__module__"))?,
                    tracker.into_any(),
                    py.None().into_bound(py),
                ],
            )?;
            maker = rec.make_skeleton_enum.bind(py).clone();
        } else {
            let cdict = cls.getattr(intern!(py, "__dict__"))?;
            let type_kwargs = PyDict::new(py);
            if cdict.contains("__module__")? {
                type_kwargs.set_item(intern!(py, "__module__"), cls.getattr(intern!(py, "__module__"))?)?;
            }
            // Declared at creation, so the rebuilt class has real slots and no instance
            // `__dict__` (upstream sets `__slots__` after creation, which creates no slots).
            // Not for classes built from `__orig_bases__` (typing.NamedTuple, Generic): their
            // metaclass machinery refuses a `__slots__` in the namespace.
            if !cdict.contains("__orig_bases__")? {
                if let Ok(slots) = cdict.get_item("__slots__") {
                    type_kwargs.set_item(intern!(py, "__slots__"), slots)?;
                }
            }
            if let Ok(d) = cdict.get_item("__dict__") {
                if d.is_instance(it.property_type.bind(py))? {
                    type_kwargs.set_item(intern!(py, "__dict__"), d)?;
                }
            }
            let bases = if cdict.contains("__orig_bases__")? {
                cls.getattr(intern!(py, "__orig_bases__"))?
            } else {
                cls.getattr(intern!(py, "__bases__"))?
            };
            newargs = PyTuple::new(
                py,
                [
                    cls.get_type().into_any(),
                    cls.getattr(intern!(py, "__name__"))?,
                    bases,
                    type_kwargs.into_any(),
                    tracker.into_any(),
                    py.None().into_bound(py),
                ],
            )?;
            maker = rec.make_skeleton_class.bind(py).clone();
        }
        clsdict = clsdict.copy()?;
        let state = PyTuple::new(py, [clsdict.into_any(), slotstate.into_any()])?;
        let rv = PyTuple::new(
            py,
            [
                maker,
                newargs.into_any(),
                state.into_any(),
                py.None().into_bound(py),
                py.None().into_bound(py),
                rec.class_setstate.bind(py).clone(),
            ],
        )?;
        Ok(Some(rv.into_any()))
    }

    /// The reduce value cloudpickle's `reducer_override` returns for `obj`, for Python
    /// subclasses calling `super().reducer_override(obj)`. Functions get upstream's shape:
    /// fresh empty cells, contents in the state.
    pub(crate) fn reducer_override_value(&mut self, obj: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let py = self.py;
        let tp = obj.get_type();
        if tp.is_subclass_of::<PyType>()? {
            return self.class_reduce(obj);
        }
        let (rec, it) = (self.layer.rec, self.layer.it);
        if !tp.is(it.function_type.bind(py)) || self.layer.should_pickle_by_reference(obj, None)? {
            return Ok(None);
        }
        let code = obj.getattr(intern!(py, "__code__"))?;
        let f_globals = obj.getattr(intern!(py, "__globals__"))?.cast_into::<PyDict>()?;
        let closure = obj.getattr(intern!(py, "__closure__"))?;
        let cells: Vec<Bound<'py, PyAny>> =
            if closure.is_none() { Vec::new() } else { closure.cast::<PyTuple>()?.iter().collect() };
        let base_globals = self.base_globals(&f_globals)?;
        let new_cells = if closure.is_none() {
            py.None().into_bound(py)
        } else {
            let mut v = Vec::with_capacity(cells.len());
            for _ in &cells {
                v.push(rec.make_empty_cell.bind(py).call0()?);
            }
            PyTuple::new(py, v)?.into_any()
        };
        let newargs = PyTuple::new(
            py,
            [code.clone(), base_globals, py.None().into_bound(py), py.None().into_bound(py), new_cells],
        )?;
        let state = self.function_state(obj, &code, &f_globals, &cells)?;
        state.get_item(1)?.set_item(intern!(py, "__closure__"), &closure)?;
        let rv = PyTuple::new(
            py,
            [
                rec.make_function.bind(py).clone(),
                newargs.into_any(),
                state,
                py.None().into_bound(py),
                py.None().into_bound(py),
                rec.function_setstate.bind(py).clone(),
            ],
        )?;
        Ok(Some(rv.into_any()))
    }

    fn base_globals(&self, f_globals: &Bound<'py, PyDict>) -> PyResult<Bound<'py, PyAny>> {
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

    /// by_source: `functools.partial(dataclasses.dataclass, **params)` to apply to a dataclass
    /// after it is rebuilt (its generated methods were left out of the stream).
    fn regenerated_dataclass(&self, cls: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let py = self.py;
        if self.by_source() == crate::bysource::BySource::Off {
            return Ok(None);
        }
        let own = cls.getattr(intern!(py, "__dict__"))?;
        let Ok(params) = own.get_item("__dataclass_params__") else { return Ok(None) };
        if own.get_item("__dataclass_fields__").is_err() || own.contains("__slots__")? {
            return Ok(None);
        }
        let kwargs = PyDict::new(py);
        for p in ["init", "repr", "eq", "order", "unsafe_hash", "frozen"] {
            kwargs.set_item(p, params.getattr(p)?)?;
        }
        // Only when it is not the default: older receivers (3.9) do not know the parameter.
        // (`__match_args__` exists from 3.10 on: a 3.9 sender never sets the parameter.)
        if crate::bysource::running_version(py) >= (3, 10) && !own.contains("__match_args__")? {
            kwargs.set_item("match_args", false)?;
        }
        let dataclass = py.import("dataclasses")?.getattr("dataclass")?;
        let partial = py.import("functools")?.getattr("partial")?;
        Ok(Some(partial.call((dataclass,), Some(&kwargs))?))
    }
}

/// `typing.ForwardRef("TreeNode")` rebuilt from its text on the receiver. Its default reduce
/// (copyreg's, from `__slots__`) carries `__forward_code__`, a code object compiled from
/// `<string>`: bytecode of this version, which a by_source stream must not carry and no other
/// version can load. The evaluated value is a cache and is left out. Arguments past the text
/// are given only when they differ from the defaults (`module` exists from 3.9.7 on).
fn forwardref_reduce<'py>(obj: &Bound<'py, PyAny>, forwardref: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = obj.py();
    let arg = obj.getattr(intern!(py, "__forward_arg__"))?;
    let is_argument = lookup_attr(obj, intern!(py, "__forward_is_argument__"))?.map_or(Ok(true), |v| v.is_truthy())?;
    let module = lookup_attr(obj, intern!(py, "__forward_module__"))?.filter(|m| !m.is_none());
    let mut args: Vec<Bound<'py, PyAny>> = vec![arg];
    if !is_argument || module.is_some() {
        args.push(pyo3::types::PyBool::new(py, is_argument).to_owned().into_any());
    }
    if let Some(m) = module {
        args.push(m);
    }
    let ctor = forwardref.clone();
    let is_class = lookup_attr(obj, intern!(py, "__forward_is_class__"))?.map_or(Ok(false), |v| v.is_truthy())?;
    let ctor = if is_class {
        // Keyword-only (3.10+): through functools.partial, which pickles by reference.
        let kwargs = PyDict::new(py);
        kwargs.set_item("is_class", true)?;
        py.import("functools")?.getattr("partial")?.call((ctor,), Some(&kwargs))?
    } else {
        ctor
    };
    Ok(PyTuple::new(py, [ctor, PyTuple::new(py, args)?.into_any()])?.into_any())
}

/// A function's non-empty `__type_params__` (CPython 3.12+; None before and when empty).
fn type_params<'py>(func: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
    if !cfg!(Py_3_12) {
        return Ok(None);
    }
    let params = func.getattr(intern!(func.py(), "__type_params__"))?;
    Ok((params.len()? > 0).then_some(params))
}

/// Functions made by `exec` of generated text (dataclass and namedtuple methods) have no source.
/// A wrapper (`functools.wraps`, like dataclass's recursion-safe `__repr__`) counts as
/// generated when what it wraps is.
fn is_generated_function(py: Python<'_>, value: &Bound<'_, PyAny>) -> bool {
    let mut func = lookup_attr(value, intern!(py, "__func__")).ok().flatten().unwrap_or_else(|| value.clone());
    for _ in 0..8 {
        let Ok(code) = func.getattr(intern!(py, "__code__")) else { return false };
        if code.getattr(intern!(py, "co_filename")).and_then(|f| f.extract::<String>()).is_ok_and(|f| f == "<string>") {
            return true;
        }
        match lookup_attr(&func, intern!(py, "__wrapped__")).ok().flatten() {
            Some(inner) => func = inner,
            None => return false,
        }
    }
    false
}

/// by_source: a class made by `collections.namedtuple` (or `typing.NamedTuple`) is rebuilt by
/// calling `collections.namedtuple` again on the receiver, whose generated `__new__` has no
/// source; what the class adds (methods with source, `__orig_bases__`, docs) is set on it after.
/// Such a class is not tracked: two loads give two classes.
fn regenerated_namedtuple<'py>(
    py: Python<'py>,
    cls: &Bound<'py, PyType>,
    clsdict: &Bound<'py, PyDict>,
    rec: &crate::cloud::Reconstructors,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let own = cls.getattr(intern!(py, "__dict__"))?;
    let (Ok(fields), Ok(new)) = (own.get_item("_fields"), own.get_item("__new__")) else { return Ok(None) };
    if !is_generated_function(py, &new) {
        return Ok(None);
    }
    let defaults_map = own.get_item("_field_defaults").ok();
    let mut defaults = Vec::new();
    for f in fields.try_iter()? {
        let f = f?;
        if let Some(d) = &defaults_map {
            if let Ok(v) = d.get_item(&f) {
                defaults.push(v);
            }
        }
    }
    let collections = py.import("collections")?;
    let getter_type = collections.getattr("_tuplegetter").ok();
    let state = PyDict::new(py);
    for (k, v) in clsdict.iter() {
        let name: String = k.extract()?;
        let generated = matches!(
            name.as_str(),
            "__new__"
                | "_make"
                | "_replace"
                | "__repr__"
                | "_asdict"
                | "__getnewargs__"
                | "__slots__"
                | "_fields"
                | "_field_defaults"
                | "__match_args__"
                | "__module__"
        ) && (is_generated_function(py, &v)
            || !v.hasattr(intern!(py, "__code__"))? && !v.hasattr(intern!(py, "__func__"))?
            || v.getattr(intern!(py, "__module__"))
                .and_then(|m| m.extract::<String>())
                .is_ok_and(|m| m == "collections"));
        let is_getter = getter_type.as_ref().is_some_and(|t| v.is_instance(t).unwrap_or(false));
        if !(generated || is_getter) {
            state.set_item(k, v)?;
        }
    }
    let kwargs = PyDict::new(py);
    kwargs.set_item("defaults", PyTuple::new(py, defaults)?)?;
    kwargs.set_item("module", cls.getattr(intern!(py, "__module__"))?)?;
    let partial = py.import("functools")?.getattr("partial")?;
    let maker = partial
        .call((collections.getattr("namedtuple")?, cls.getattr(intern!(py, "__name__"))?, fields), Some(&kwargs))?;
    let rv = PyTuple::new(
        py,
        [
            maker,
            PyTuple::empty(py).into_any(),
            PyTuple::new(py, [state.into_any(), PyDict::new(py).into_any()])?.into_any(),
            py.None().into_bound(py),
            py.None().into_bound(py),
            rec.class_setstate.bind(py).clone(),
        ],
    )?;
    Ok(Some(rv.into_any()))
}

/// by_source: take the methods `dataclasses` generated (no source) out of a dataclass's dict and
/// put each field's `Field` back as the class attribute, so re-applying `dataclasses.dataclass`
/// on the receiver regenerates them exactly (defaults and factories included).
fn strip_dataclass_generated<'py>(
    py: Python<'py>,
    cls: &Bound<'py, PyType>,
    clsdict: &Bound<'py, PyDict>,
    mode: crate::bysource::BySource,
) -> PyResult<()> {
    let own = cls.getattr(intern!(py, "__dict__"))?;
    let Ok(fields) = own.get_item("__dataclass_fields__") else { return Ok(()) };
    if own.get_item("__dataclass_params__").is_err() {
        return Ok(());
    }
    if own.contains("__slots__")? {
        // dataclass(slots=True) makes a new class, so it cannot be re-applied in place: under
        // auto its generated methods stay and go as bytecode (with a warning each).
        if mode == crate::bysource::BySource::On {
            return Err(crate::statics::pickling_error(
                py,
                format!(
                    "cannot pickle dataclass {} by source: it was made with slots=True, whose generated methods \
                     have no source and cannot be regenerated in place; use by_source='auto' to send them as bytecode",
                    cls.qualname()?
                ),
            ));
        }
        return Ok(());
    }
    for name in [
        "__init__",
        "__repr__",
        "__eq__",
        "__lt__",
        "__le__",
        "__gt__",
        "__ge__",
        "__hash__",
        "__setattr__",
        "__delattr__",
        "__getstate__",
        "__setstate__",
    ] {
        if let Some(v) = clsdict.get_item(name)? {
            if is_generated_function(py, &v) {
                clsdict.del_item(name)?;
            }
        }
    }
    // 3.13+: `__replace__` is `dataclasses._replace` itself (for `copy.replace`); by reference
    // it would not load before 3.13, and the receiver's own dataclass() adds it where it exists.
    if let Some(v) = clsdict.get_item("__replace__")? {
        let stock = py.import("dataclasses")?.getattr("_replace").ok();
        if stock.is_some_and(|f| f.is(&v)) {
            clsdict.del_item("__replace__")?;
        }
    }
    // Regenerated on the receiver by its own `dataclasses` (their layout differs by version).
    for name in ["__dataclass_fields__", "__dataclass_params__"] {
        if clsdict.contains(name)? {
            clsdict.del_item(name)?;
        }
    }
    let field_kind = py.import("dataclasses")?.getattr("_FIELD")?;
    // Only the fields this class declares: inherited ones come from the base dataclass, and a
    // Field without an annotation in this class body would be refused.
    let own_annotations = own.get_item("__annotations__").ok();
    for item in fields.call_method0(intern!(py, "items"))?.try_iter()? {
        let (name, field): (Bound<'py, PyAny>, Bound<'py, PyAny>) = item?.extract()?;
        let declared_here = own_annotations.as_ref().is_some_and(|a| a.contains(&name).unwrap_or(false));
        if declared_here && field.getattr(intern!(py, "_field_type"))?.is(&field_kind) {
            clsdict.set_item(name, field)?;
        }
    }
    Ok(())
}

/// by_source: a `dataclasses.Field` as a call of the receiver's own `dataclasses.field(...)` with
/// the arguments every version takes (`kw_only` only when set), then its name, type and kind.
fn portable_field_reduce<'py>(py: Python<'py>, field: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let dc = py.import("dataclasses")?;
    let missing = dc.getattr("MISSING")?;
    let kwargs = PyDict::new(py);
    for name in ["default", "default_factory"] {
        let v = field.getattr(name)?;
        if !v.is(&missing) {
            kwargs.set_item(name, v)?;
        }
    }
    for name in ["init", "repr", "hash", "compare"] {
        kwargs.set_item(name, field.getattr(name)?)?;
    }
    let metadata = field.getattr("metadata")?;
    if metadata.len()? > 0 {
        kwargs.set_item("metadata", PyDict::new(py).call_method1("__class__", (metadata,))?)?;
    }
    if let Ok(kw_only) = field.getattr("kw_only") {
        if kw_only.is_truthy()? && !kw_only.is(&missing) {
            kwargs.set_item("kw_only", true)?;
        }
    }
    let maker = py.import("functools")?.getattr("partial")?.call((dc.getattr("field")?,), Some(&kwargs))?;
    let slots = PyDict::new(py);
    for name in ["name", "type", "_field_type"] {
        slots.set_item(name, field.getattr(name)?)?;
    }
    let state = PyTuple::new(py, [py.None().into_bound(py), slots.into_any()])?;
    Ok(PyTuple::new(py, [maker, PyTuple::empty(py).into_any(), state.into_any()])?.into_any())
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

/// The class dict upstream ships: sorted, fresh keys, without what is inherited unchanged,
/// `__weakref__`, `__dict__`, slot descriptors and ABC caches (the registry travels as a list).
fn class_getstate<'py>(
    py: Python<'py>,
    it: &crate::cloud::Interp,
    cls: &Bound<'py, PyType>,
) -> PyResult<(Bound<'py, PyDict>, Bound<'py, PyDict>)> {
    let cdict = cls.getattr(intern!(py, "__dict__"))?;
    let mut keys: Vec<String> = Vec::new();
    for k in cdict.try_iter()? {
        keys.push(k?.extract()?);
    }
    keys.sort();
    let bases = cls.getattr(intern!(py, "__bases__"))?.cast_into::<PyTuple>()?;
    let inherited = PyDict::new(py);
    if bases.len() == 1 {
        inherited.update(bases.get_item(0)?.getattr(intern!(py, "__dict__"))?.cast::<pyo3::types::PyMapping>()?)?;
    } else {
        for base in bases.iter().rev() {
            inherited.update(base.getattr(intern!(py, "__dict__"))?.cast::<pyo3::types::PyMapping>()?)?;
        }
    }
    let clsdict = PyDict::new(py);
    for k in &keys {
        let v = cdict.get_item(k.as_str())?;
        if let Some(base_v) = inherited.get_item(k.as_str())? {
            if base_v.is(&v) {
                continue;
            }
        }
        clsdict.set_item(PyString::new(py, k), v)?;
    }
    let _ = clsdict.del_item("__weakref__");
    if cls.get_type().is_subclass(it.abcmeta.bind(py))? {
        for k in ["_abc_cache", "_abc_negative_cache", "_abc_negative_cache_version"] {
            let _ = clsdict.del_item(k);
        }
        let registry = clsdict.get_item("_abc_registry")?;
        let _ = clsdict.del_item("_abc_registry");
        let subclasses = match registry {
            Some(reg) => reg.try_iter()?.collect::<PyResult<Vec<_>>>()?,
            None => {
                let _ = clsdict.del_item("_abc_impl");
                let dump = it.abc_get_dump.bind(py).call1((cls,))?;
                let reg = dump.get_item(0)?;
                let mut subs = Vec::new();
                for r in reg.try_iter()? {
                    let s = r?.call0()?;
                    if !s.is_none() {
                        subs.push(s);
                    }
                }
                // The registry is a set of weakrefs: order it so the bytes are deterministic.
                subs.sort_by_key(|s| {
                    let m = s.getattr("__module__").map(|m| m.to_string()).unwrap_or_default();
                    let q = s.getattr("__qualname__").map(|q| q.to_string()).unwrap_or_default();
                    (m, q)
                });
                subs
            }
        };
        clsdict.set_item(intern!(py, "_abc_impl"), PyList::new(py, subclasses)?)?;
    }
    if clsdict.contains("__slots__")? {
        let slots = cls.getattr(intern!(py, "__slots__"))?;
        if let Ok(s) = slots.cast::<PyString>() {
            let _ = clsdict.del_item(s);
        } else {
            for k in slots.try_iter()? {
                let _ = clsdict.del_item(k?);
            }
        }
    }
    let _ = clsdict.del_item("__dict__");
    Ok((clsdict, PyDict::new(py)))
}

/// Per-process: how many distinct dynamic classes of each (module, qualname) got an id.
static TRACKER_COUNTS: PyOnceLock<Mutex<HashMap<String, u64>>> = PyOnceLock::new();

/// The class tracker id of a dynamic class (or TypeVar), registered in the reconstructor
/// module's tracker so that loading in this process gives back the same class, as upstream.
/// Upstream draws a uuid4 per class, so the same program writes different bytes each run
/// (#510). Ours is derived from the module, qualname and definition (attribute names and
/// function bytecode) plus a per-process counter that keeps two distinct class objects of the
/// same definition apart.
fn tracker_id<'py>(
    py: Python<'py>,
    rec: &crate::cloud::Reconstructors,
    obj: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyString>> {
    // cloudpickle's tracker lock is not re-entrant and reading a class (its metaclass's
    // `__getattribute__`, `__hash__`) runs user code that may pickle again: never hold it. Two
    // threads registering one class at once compute the same id, or one id wins by setdefault.
    let by_class = rec.tracker_by_class.bind(py);
    if let Some(id) = by_class.call_method1("get", (obj,)).ok().filter(|v| !v.is_none()) {
        return Ok(id.cast_into::<PyString>()?);
    }
    let module = lookup_attr(obj, intern!(py, "__module__"))?.map(|m| m.to_string()).unwrap_or_default();
    let qualname = lookup_attr(obj, intern!(py, "__qualname__"))?
        .or(lookup_attr(obj, intern!(py, "__name__"))?)
        .map(|q| q.to_string())
        .unwrap_or_default();
    let mut h = Fnv128::new();
    h.write(module.as_bytes());
    h.write(b"\0");
    h.write(qualname.as_bytes());
    h.write(b"\0");
    definition_fingerprint(py, obj, &mut h);
    let fp = h.finish();
    let key = format!("{module}\0{qualname}\0{fp:032x}");
    let counts = TRACKER_COUNTS.get_or_init(py, || Mutex::new(HashMap::new()));
    let n = match counts.lock() {
        Ok(mut m) => {
            let c = m.entry(key).or_insert(0);
            *c += 1;
            *c - 1
        }
        Err(_) => 0,
    };
    let mut h2 = Fnv128::new();
    h2.write(&fp.to_le_bytes());
    h2.write(&n.to_le_bytes());
    let id = PyString::new(py, &format!("{:032x}", h2.finish()));
    let by_id = rec.tracker_by_id.bind(py);
    by_id.call_method1("setdefault", (&id, obj))?;
    by_class.set_item(obj, &id)?;
    Ok(id)
}

/// The class definition as data: attribute names, simple values (and enum members' values),
/// and the bytecode and constants of its functions. Two different classes of the same name sent
/// to one receiver by two programs must not share an id (the receiver would reuse the first).
fn definition_fingerprint(py: Python<'_>, obj: &Bound<'_, PyAny>, h: &mut Fnv128) {
    let Ok(d) = obj.getattr(intern!(py, "__dict__")) else { return };
    let Ok(keys) = d.try_iter() else { return };
    let mut names: Vec<String> = keys.filter_map(|k| k.ok().and_then(|k| k.extract::<String>().ok())).collect();
    names.sort();
    for n in names {
        h.write(n.as_bytes());
        h.write(b"\0");
        if let Ok(v) = d.get_item(n.as_str()) {
            fingerprint_value(py, &v, h, 0);
        }
    }
    if let Ok(members) = obj.getattr(intern!(py, "__members__")) {
        if let Ok(items) = members.call_method0(intern!(py, "items")).and_then(|i| i.try_iter()) {
            for item in items.flatten() {
                if let Ok((k, m)) = item.extract::<(String, Bound<'_, PyAny>)>() {
                    h.write(k.as_bytes());
                    if let Ok(value) = m.getattr(intern!(py, "_value_")) {
                        fingerprint_value(py, &value, h, 0);
                    }
                }
            }
        }
    }
}

fn fingerprint_value(py: Python<'_>, v: &Bound<'_, PyAny>, h: &mut Fnv128, depth: usize) {
    use pyo3::types::{PyBool, PyBytes, PyFloat, PyInt};
    if depth > 4 {
        return;
    }
    let simple = v.is_none()
        || v.is_exact_instance_of::<PyBool>()
        || v.is_exact_instance_of::<PyInt>()
        || v.is_exact_instance_of::<PyFloat>()
        || v.is_exact_instance_of::<PyString>()
        || v.is_exact_instance_of::<PyBytes>();
    if simple {
        if let Ok(r) = v.repr() {
            h.write(r.to_string_lossy().as_bytes());
        }
        return;
    }
    if let Ok(t) = v.cast::<PyTuple>() {
        for item in t.iter() {
            fingerprint_value(py, &item, h, depth + 1);
        }
        return;
    }
    let func = lookup_attr(v, intern!(py, "__func__")).ok().flatten().unwrap_or_else(|| v.clone());
    let code = match func.getattr(intern!(py, "__code__")) {
        Ok(c) => c,
        Err(_) if func.hasattr(intern!(py, "co_code")).unwrap_or(false) => func,
        Err(_) => {
            h.write(crate::errors::type_name(v).as_bytes());
            return;
        }
    };
    if let Ok(b) = code.getattr(intern!(py, "co_code")).and_then(|c| c.extract::<Vec<u8>>()) {
        h.write(&b);
    }
    if let Ok(consts) = code.getattr(intern!(py, "co_consts")) {
        fingerprint_value(py, &consts, h, depth + 1);
    }
}

/// 128-bit FNV-1a: stable across processes and platforms (unlike Python's salted `hash`).
struct Fnv128(u128);
impl Fnv128 {
    fn new() -> Self {
        Fnv128(0x6c62272e07bb014262b821756295c58d)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u128::from(b);
            self.0 = self.0.wrapping_mul(0x0000000001000000000000000000013B);
        }
    }
    fn finish(&self) -> u128 {
        self.0
    }
}
