//! `tests/python/dump_codes.py` output (one JSON record per code object) as `CodeQuery`s.
//! Shared by the tests (through `common`) and by the examples (`#[path]` includes this file).

use function_source::{CodePosition, CodeQuery};
use serde_json::Value;

fn strings(value: &Value) -> Vec<String> {
    value.as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
}

fn number(value: &Value) -> Option<u32> {
    value.as_u64().and_then(|n| u32::try_from(n).ok())
}

/// The query for one record of the dump's `codes` list.
pub fn query(code: &Value) -> CodeQuery {
    CodeQuery {
        name: code["name"].as_str().unwrap().to_owned(),
        qualname: code["qualname"].as_str().map(str::to_owned),
        first_line: number(&code["first_line"]).unwrap(),
        arg_names: strings(&code["arg_names"]),
        positions: code["positions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| CodePosition {
                line: number(&p[0]),
                end_line: number(&p[1]),
                column: number(&p[2]),
                end_column: number(&p[3]),
            })
            .collect(),
        nested_code_names: Some(strings(&code["nested_code_names"])),
        free_vars: strings(&code["free_vars"]),
    }
}
