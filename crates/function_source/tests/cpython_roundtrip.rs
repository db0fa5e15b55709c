//! End to end against the real interpreter: every function and lambda of every fixture is
//! located from what CPython says about its code object, rebuilt as a factory source, and
//! the factory is run by CPython, whose rebuilt code object must equal the original.
//! Needs `python3` (or `$FUNCTION_SOURCE_PYTHON`), CPython 3.11 or later.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use function_source::{FactoryLayout, SourceFile, RESULT_NAME};
use serde_json::{json, Value};

struct Outcome {
    functions: usize,
    reparsed: usize,
}

/// Locates and rebuilds every function of `path` (compiled as `filename`) and has CPython
/// check the factories. Returns counts; panics listing every failure.
fn roundtrip(path: &Path, scratch: &Path) -> Outcome {
    let text = std::fs::read_to_string(path).unwrap();
    let records = common::parse_dump(&common::run_script("dump_codes.py", &[path]));
    assert!(!records.is_empty(), "{}: no functions", path.display());
    let file = SourceFile::parse(path.to_string_lossy(), &text).unwrap();
    let mut failures = Vec::new();
    let mut factories = Vec::new();
    let mut reparsed = 0;
    for (index, record) in records.iter().enumerate() {
        let built = file
            .locate(&record.query)
            .and_then(|function| function.factory(&record.free_vars));
        match built {
            Ok(factory) => {
                if matches!(factory.layout, FactoryLayout::Reparsed { .. }) {
                    reparsed += 1;
                }
                factories.push(json!({
                    "index": index,
                    "source": factory.source,
                    "result_name": RESULT_NAME,
                }));
            }
            Err(err) => failures.push(format!("{:?}: {err}", record.query.qualname)),
        }
    }
    let factories_path = scratch.join("factories.json");
    std::fs::write(&factories_path, Value::Array(factories).to_string()).unwrap();
    let results: Value = serde_json::from_str(&common::run_script(
        "check_factories.py",
        &[path, &factories_path],
    ))
    .unwrap();
    for result in results.as_array().unwrap() {
        let problems = result["problems"].as_array().unwrap();
        if !problems.is_empty() {
            failures.push(format!("{}: {problems:?}", result["qualname"]));
        }
    }
    assert!(
        failures.is_empty(),
        "{}: {} of {} functions failed:\n{}",
        path.display(),
        failures.len(),
        records.len(),
        failures.join("\n")
    );
    Outcome {
        functions: records.len(),
        reparsed,
    }
}

fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("function_source_{}_{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn every_fixture_function_rebuilds_to_an_equal_code_object() {
    let scratch = scratch_dir("fixtures");
    let mut functions = 0;
    let mut reparsed = 0;
    for fixture in common::fixtures() {
        let outcome = roundtrip(&fixture, &scratch);
        functions += outcome.functions;
        reparsed += outcome.reparsed;
    }
    assert!(functions > 100, "only {functions} functions checked");
    assert!(reparsed > 0, "the reparse fallback was never exercised");
}

#[test]
fn crlf_line_endings_and_byte_order_mark() {
    let scratch = scratch_dir("crlf");
    for fixture in common::fixtures() {
        let text = std::fs::read_to_string(&fixture).unwrap();
        let converted = format!("\u{feff}{}", text.replace('\n', "\r\n"));
        let path = scratch.join(fixture.file_name().unwrap());
        std::fs::write(&path, converted).unwrap();
        roundtrip(&path, &scratch);
    }
}

#[test]
fn committed_dumps_match_this_interpreter_when_it_is_3_11() {
    // The snapshot tests read tests/fixtures/*.codes.json, made by CPython 3.11. On 3.11 they
    // must be what dump_codes.py prints now; other versions position some code differently.
    let version = common::run_script("dump_codes.py", &[&common::fixtures()[0]]);
    let version: Value = serde_json::from_str(&version).unwrap();
    let is_311 = version["python"][0] == 3 && version["python"][1] == 11;
    for fixture in common::fixtures() {
        let committed = std::fs::read_to_string(fixture.with_extension("codes.json")).unwrap();
        let committed: Value = serde_json::from_str(&committed).unwrap();
        assert_eq!(committed["python"][1], 11, "{}", fixture.display());
        if is_311 {
            let live: Value =
                serde_json::from_str(&common::run_script("dump_codes.py", &[&fixture])).unwrap();
            assert_eq!(
                committed["codes"], live["codes"],
                "{}: stale, regenerate with tests/python/dump_codes.py",
                fixture.display()
            );
        }
    }
}
