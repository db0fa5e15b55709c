//! Helpers shared by the integration tests: fixtures, the Python interpreter, and the
//! conversion of `tests/python/dump_codes.py` output into queries.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use function_source::{CodePosition, CodeQuery};
use serde_json::Value;

pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `tests/fixtures/*.py`, sorted.
pub fn fixtures() -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(crate_dir().join("tests/fixtures"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "py"))
        .collect();
    paths.sort();
    paths
}

/// The interpreter to check against: `$FUNCTION_SOURCE_PYTHON`, else `python3`.
pub fn python() -> Command {
    Command::new(std::env::var("FUNCTION_SOURCE_PYTHON").unwrap_or_else(|_| "python3".into()))
}

/// Runs a script from `tests/python` and returns its stdout; panics with stderr on failure.
pub fn run_script(script: &str, args: &[&Path]) -> String {
    let output = python()
        .arg(crate_dir().join("tests/python").join(script))
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run python3 (set FUNCTION_SOURCE_PYTHON to a CPython 3.11+): {e}")
        });
    assert!(
        output.status.success(),
        "{script} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// One function as `dump_codes.py` describes it.
pub struct CodeRecord {
    pub query: CodeQuery,
    pub free_vars: Vec<String>,
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

fn number(value: &Value) -> Option<u32> {
    value.as_u64().and_then(|n| u32::try_from(n).ok())
}

/// Parses `dump_codes.py` output.
pub fn parse_dump(json: &str) -> Vec<CodeRecord> {
    let dump: Value = serde_json::from_str(json).unwrap();
    dump["codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|code| CodeRecord {
            query: CodeQuery {
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
            },
            free_vars: strings(&code["free_vars"]),
        })
        .collect()
}

/// What a fixture's committed `.codes.json` (CPython 3.11 output) holds.
pub fn committed_dump(fixture: &Path) -> Vec<CodeRecord> {
    let path = fixture.with_extension("codes.json");
    parse_dump(&std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("{}: {e}; regenerate with tests/python/dump_codes.py", path.display())
    }))
}
