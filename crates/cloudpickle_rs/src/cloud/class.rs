//! Classes by value: dynamic classes and enums (`_make_skeleton_class` + class state), C-class
//! aliases, dataclasses and namedtuples regenerated on the receiver (by_source), TypeVars,
//! `typing.ForwardRef`, `dataclasses.Field`.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple, PyType};

use super::tracker::tracker_id;
use super::CloudDumper;
use crate::lookup::lookup_attr;

impl<'py> CloudDumper<'py> {
    pub(super) fn typevar_reduce(&mut self, tv: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
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
    pub(super) fn c_class_alias(&mut self, cls: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyString>>> {
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
    pub(super) fn class_reduce(&mut self, cls: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
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
        if self.by_source() != crate::cloud::options::BySource::Off {
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

    /// by_source: `functools.partial(dataclasses.dataclass, **params)` to apply to a dataclass
    /// after it is rebuilt (its generated methods were left out of the stream).
    pub(super) fn regenerated_dataclass(&self, cls: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let py = self.py;
        if self.by_source() == crate::cloud::options::BySource::Off {
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
        if crate::cloud::options::running_version(py) >= (3, 10) && !own.contains("__match_args__")? {
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
pub(super) fn forwardref_reduce<'py>(
    obj: &Bound<'py, PyAny>,
    forwardref: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
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
    mode: crate::cloud::options::BySource,
) -> PyResult<()> {
    let own = cls.getattr(intern!(py, "__dict__"))?;
    let Ok(fields) = own.get_item("__dataclass_fields__") else { return Ok(()) };
    if own.get_item("__dataclass_params__").is_err() {
        return Ok(());
    }
    if own.contains("__slots__")? {
        // dataclass(slots=True) makes a new class, so it cannot be re-applied in place: under
        // auto its generated methods stay and go as bytecode (with a warning each).
        if mode == crate::cloud::options::BySource::On {
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
pub(super) fn portable_field_reduce<'py>(py: Python<'py>, field: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
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
