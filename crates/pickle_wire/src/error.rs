use std::fmt;

/// What the byte level refuses to write. The pyo3 crate turns each into the exception and
/// message CPython's `_pickle.c` raises for the same case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// A str of 4 GiB or more needs protocol 4 (BINUNICODE8).
    StrTooLarge,
    /// A bytes object of 4 GiB or more needs protocol 4 (BINBYTES8).
    BytesTooLarge,
    /// An int whose encoding needs 4 GiB or more does not fit LONG4's length field.
    IntTooLarge,
    /// More than 2**32 memo entries cannot be addressed by LONG_BINPUT/LONG_BINGET.
    MemoTooLarge,
}

impl fmt::Display for WireError {
    #[cold]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WireError::StrTooLarge => "serializing a string larger than 4 GiB requires pickle protocol 4 or higher",
            WireError::BytesTooLarge => {
                "serializing a bytes object larger than 4 GiB requires pickle protocol 4 or higher"
            }
            WireError::IntTooLarge => "int too large to pickle",
            WireError::MemoTooLarge => "memo id too large for LONG_BINPUT",
        })
    }
}

impl std::error::Error for WireError {}
