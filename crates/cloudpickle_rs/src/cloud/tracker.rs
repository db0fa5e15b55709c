//! The class tracker ids of dynamic classes: deterministic per definition (upstream draws a uuid4,
//! #510), distinct per class object in a process.

use std::collections::HashMap;
use std::sync::Mutex;

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyString, PyTuple};

use crate::lookup::lookup_attr;

/// Per-process: how many distinct dynamic classes of each (module, qualname) got an id.
static TRACKER_COUNTS: PyOnceLock<Mutex<HashMap<String, u64>>> = PyOnceLock::new();

/// The class tracker id of a dynamic class (or TypeVar), registered in the reconstructor
/// module's tracker so that loading in this process gives back the same class, as upstream.
/// Upstream draws a uuid4 per class, so the same program writes different bytes each run
/// (#510). Ours is derived from the module, qualname and definition (attribute names and
/// function bytecode) plus a per-process counter that keeps two distinct class objects of the
/// same definition apart.
pub(super) fn tracker_id<'py>(
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
