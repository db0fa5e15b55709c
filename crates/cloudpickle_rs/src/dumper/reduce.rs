//! Reductions: what `__reduce_ex__`, a dispatch table or a layer returned, written as
//! `_pickle.c`'s `save_reduce` writes it (NEWOBJ, NEWOBJ_EX, REDUCE, BUILD, the 6-tuple state setter).

use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple, PyType};

use super::{Dumper, Layer, SaveResult};
use crate::errors::type_name;
use crate::lookup::lookup_attr;
use crate::statics::pickling_error;

impl<'py, L: Layer<'py>> Dumper<'py, L> {
    /// An instance of a plain class ([`crate::plain`]): what `save_reduce` writes for
    /// `(copyreg.__newobj__, (cls,), state)`. False (nothing written) when the instance's own
    /// `__dict__` overrides the protocol.
    pub(super) fn save_plain_instance(&mut self, obj: &Bound<'py, PyAny>, cls: &Bound<'py, PyAny>) -> PyResult<bool> {
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
        if self.proto() >= 2 {
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
            if self.proto() >= 4 {
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
}
