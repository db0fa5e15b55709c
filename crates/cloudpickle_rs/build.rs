//! Exposes pyo3's interpreter cfgs (`Py_3_12`, `PyPy`, `Py_LIMITED_API`, ...) to this crate, so
//! the few reads of CPython object layouts in `src/layout.rs` are compiled for the right layout.
fn main() {
    pyo3_build_config::use_pyo3_cfgs();
}
