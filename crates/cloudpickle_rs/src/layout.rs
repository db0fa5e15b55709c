//! Reads of CPython object layouts on the hottest paths of the walk (the value of a small int,
//! the bytes of an ASCII str), where the C API call costs as much as writing the object. Each
//! returns None where it does not apply, and on interpreters whose layout is not read here
//! (PyPy, GraalPy, the limited API, str on 3.14+), so the caller falls back to the C API.
//!
//! The layouts are selected at compile time by pyo3's interpreter cfgs (see `build.rs`).

use pyo3::ffi;
use pyo3::prelude::*;
#[cfg(not(any(PyPy, GraalPy, Py_LIMITED_API)))]
use pyo3::sync::PyOnceLock;

/// Whether [`small_int`] may read int objects on this interpreter: its layout is known at
/// compile time, but the digit size is a build option of CPython (30-bit digits in 32-bit
/// words everywhere in practice, 15-bit ones on request), so it is checked once, at run time.
pub(crate) fn ints_readable(py: Python<'_>) -> bool {
    #[cfg(not(any(PyPy, GraalPy, Py_LIMITED_API)))]
    {
        static READABLE: PyOnceLock<bool> = PyOnceLock::new();
        *READABLE.get_or_init(py, || {
            let check = || -> PyResult<bool> {
                let info = py.import("sys")?.getattr("int_info")?;
                let bits: u32 = info.getattr("bits_per_digit")?.extract()?;
                let size: u32 = info.getattr("sizeof_digit")?.extract()?;
                Ok(bits == 30 && size == 4)
            };
            check().unwrap_or(false)
        })
    }
    #[cfg(any(PyPy, GraalPy, Py_LIMITED_API))]
    {
        let _ = py;
        false
    }
}

/// CPython 3.9-3.11: `ob_size` is the number of 30-bit digits, negative for negative ints.
#[cfg(not(any(PyPy, GraalPy, Py_LIMITED_API, Py_3_12)))]
#[repr(C)]
struct LongObject {
    ob_base: ffi::PyVarObject,
    ob_digit: [u32; 1],
}

/// CPython 3.12+: `lv_tag` holds the number of digits (above bit 3) and the sign (bits 0-1:
/// 0 positive, 1 zero, 2 negative).
#[cfg(all(Py_3_12, not(any(PyPy, GraalPy, Py_LIMITED_API))))]
#[repr(C)]
struct LongObject {
    ob_base: ffi::PyObject,
    lv_tag: usize,
    ob_digit: [u32; 1],
}

/// The value of an int of at most one digit (|value| < 2**30), read from the object.
///
/// # Safety
/// `op` must be a live exact int (or bool, which shares the layout), and `readable` the value
/// of [`ints_readable`].
#[inline(always)]
pub(crate) unsafe fn small_int(op: *mut ffi::PyObject, readable: bool) -> Option<i64> {
    if !readable {
        return None;
    }
    #[cfg(not(any(PyPy, GraalPy, Py_LIMITED_API, Py_3_12)))]
    {
        // SAFETY: the caller guarantees an int object, whose header is a PyVarObject.
        let size = unsafe { (*op.cast::<ffi::PyVarObject>()).ob_size };
        return match size {
            0 => Some(0),
            // SAFETY: one digit is present (|ob_size| == 1); digits are u32 (`readable`).
            1 => Some(i64::from(unsafe { (*op.cast::<LongObject>()).ob_digit[0] })),
            // SAFETY: as above: one digit is present (|ob_size| == 1); digits are u32 (`readable`).
            -1 => Some(-i64::from(unsafe { (*op.cast::<LongObject>()).ob_digit[0] })),
            _ => None,
        };
    }
    #[cfg(all(Py_3_12, not(any(PyPy, GraalPy, Py_LIMITED_API))))]
    {
        // SAFETY: the caller guarantees an int object with the 3.12+ layout.
        let tag = unsafe { (*op.cast::<LongObject>()).lv_tag };
        if tag >= (2 << 3) {
            return None; // two digits or more
        }
        return match tag & 3 {
            1 => Some(0),
            // SAFETY: a compact nonzero int has one digit; digits are u32 (`readable`).
            0 => Some(i64::from(unsafe { (*op.cast::<LongObject>()).ob_digit[0] })),
            // SAFETY: as above, a negative compact int has one digit.
            _ => Some(-i64::from(unsafe { (*op.cast::<LongObject>()).ob_digit[0] })),
        };
    }
    #[allow(unreachable_code)]
    {
        let _ = op;
        None
    }
}

/// The bytes of a compact ASCII str (which are its UTF-8), read from the object.
#[inline(always)]
pub(crate) fn ascii_str<'a>(s: &'a Bound<'_, PyAny>) -> Option<&'a [u8]> {
    #[cfg(not(any(PyPy, GraalPy, Py_LIMITED_API, Py_3_14)))]
    {
        let op = s.as_ptr();
        // SAFETY: `s` is a live str (callers pass exact strs only); a compact ASCII str stores
        // its `length` bytes right after its PyASCIIObject header, for as long as it lives.
        unsafe {
            if ffi::PyUnicode_Check(op) != 0 && ffi::PyUnicode_IS_COMPACT_ASCII(op) != 0 {
                let len = ffi::PyUnicode_GET_LENGTH(op) as usize;
                let data = op.cast::<ffi::PyASCIIObject>().add(1).cast::<u8>();
                return Some(std::slice::from_raw_parts(data, len));
            }
        }
    }
    #[allow(unreachable_code)]
    {
        let _ = s;
        None
    }
}

/// Fill `buf` with the signed little-endian two's complement of the int `obj`; `buf` must be
/// long enough (`bit_length() / 8 + 1` bytes).
///
/// CPython 3.9-3.12: the private `_PyLong_AsByteArray` (5 arguments; 3.13 added a sixth and
/// pyo3 no longer declares it). CPython 3.13+: the public `PyLong_AsNativeBytes`. Elsewhere
/// (PyPy, the limited API): `int.to_bytes`, a method call.
pub(crate) fn long_to_le_bytes(obj: &Bound<'_, PyAny>, buf: &mut [u8]) -> PyResult<()> {
    #[cfg(all(not(any(PyPy, GraalPy, Py_LIMITED_API)), not(Py_3_13)))]
    {
        // SAFETY: `obj` is an int (callers pass exact ints); `buf` holds `buf.len()` bytes.
        let rc = unsafe {
            ffi::_PyLong_AsByteArray(obj.as_ptr().cast::<ffi::PyLongObject>(), buf.as_mut_ptr(), buf.len(), 1, 1)
        };
        if rc < 0 {
            return Err(PyErr::fetch(obj.py()));
        }
        Ok(())
    }
    #[cfg(all(not(any(PyPy, GraalPy, Py_LIMITED_API)), Py_3_13))]
    {
        let len = buf.len() as ffi::Py_ssize_t;
        // SAFETY: `obj` is an int; `buf` holds `len` bytes. The call returns the number of bytes
        // the value needs, which is at most `len` when `buf` is as long as documented above.
        let needed = unsafe {
            ffi::PyLong_AsNativeBytes(obj.as_ptr(), buf.as_mut_ptr().cast(), len, ffi::Py_ASNATIVEBYTES_LITTLE_ENDIAN)
        };
        if needed < 0 {
            return Err(PyErr::fetch(obj.py()));
        }
        if needed > len {
            return Err(pyo3::exceptions::PyOverflowError::new_err("int does not fit its byte buffer"));
        }
        Ok(())
    }
    #[cfg(any(PyPy, GraalPy, Py_LIMITED_API))]
    {
        let bytes = obj.call_method1("to_bytes", (buf.len(), "little", true))?;
        let bytes: &[u8] = bytes.extract()?;
        buf.copy_from_slice(bytes);
        Ok(())
    }
}
