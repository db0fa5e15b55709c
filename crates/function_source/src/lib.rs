//! placeholder: the function_source helper fills this crate.
