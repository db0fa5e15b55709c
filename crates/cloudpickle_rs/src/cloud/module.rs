//! Modules: by reference (`subimport`) or, dynamic or registered by value, with their dict.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::CloudDumper;

impl<'py> CloudDumper<'py> {
    pub(super) fn module_reduce(&mut self, module: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
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
}
