//! End to end against the real interpreter: every function and lambda of every fixture is
//! located from what CPython says about its code object, rebuilt as a factory source, and
//! the factory is run by CPython, whose rebuilt code object must equal the original.
//! Needs `python3` (or `$FUNCTION_SOURCE_PYTHON`), CPython 3.11 or later.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use function_source::{FactoryLayout, SourceFile, RESULT_NAME};
use serde_json::{json, Value};

#[derive(Default)]
struct Outcome {
    functions: usize,
    reparsed: usize,
    /// Functions whose code object did not single out one node (then the first candidate
    /// whose factory compiles to an equal code object is the answer, as the glue does).
    ambiguous: usize,
    failures: Vec<String>,
}

/// Locates and rebuilds every function of `path` and has CPython check the factories.
fn roundtrip(path: &Path, scratch: &Path, outcome: &mut Outcome) {
    let text = std::fs::read_to_string(path).unwrap();
    let records = common::parse_dump(&common::run_script("dump_codes.py", &[path]));
    assert!(!records.is_empty(), "{}: no functions", path.display());
    let file = SourceFile::parse(path.to_string_lossy(), &text).unwrap();
    let mut factories = Vec::new();
    let where_ = |what: &str| format!("{}: {what}", path.display());
    for (index, record) in records.iter().enumerate() {
        outcome.functions += 1;
        let candidates = match file.locate_candidates(&record.query) {
            Ok(candidates) => candidates,
            Err(err) => {
                outcome.failures.push(where_(&format!("{:?}: {err}", record.query.qualname)));
                continue;
            }
        };
        if candidates.len() > 1 {
            outcome.ambiguous += 1;
        }
        let mut sources = Vec::new();
        for candidate in candidates {
            match candidate.factory(&record.free_vars) {
                Ok(factory) => {
                    if matches!(factory.layout, FactoryLayout::Reparsed { .. }) {
                        outcome.reparsed += 1;
                    }
                    sources.push(factory.source);
                }
                Err(err) => outcome
                    .failures
                    .push(where_(&format!("{:?}: {err}", record.query.qualname))),
            }
        }
        factories.push(json!({"index": index, "sources": sources, "result_name": RESULT_NAME}));
    }
    let factories_path = scratch.join("factories.json");
    std::fs::write(&factories_path, Value::Array(factories).to_string()).unwrap();
    let results: Value = serde_json::from_str(&common::run_script(
        "check_factories.py",
        &[path, &factories_path],
    ))
    .unwrap();
    for result in results.as_array().unwrap() {
        let candidates = result["candidates"].as_array().unwrap();
        let any_equal = candidates
            .iter()
            .any(|problems| problems.as_array().unwrap().is_empty());
        if !any_equal {
            outcome
                .failures
                .push(where_(&format!("{}: {candidates:?}", result["qualname"])));
        }
    }
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("function_source_{}_{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn assert_all_rebuilt(outcome: &Outcome) {
    assert!(
        outcome.failures.is_empty(),
        "{} of {} functions failed:\n{}",
        outcome.failures.len(),
        outcome.functions,
        outcome.failures.join("\n")
    );
}

#[test]
fn every_fixture_function_rebuilds_to_an_equal_code_object() {
    let scratch = scratch_dir("fixtures");
    let mut outcome = Outcome::default();
    for fixture in common::fixtures() {
        roundtrip(&fixture, &scratch, &mut outcome);
    }
    assert_all_rebuilt(&outcome);
    assert!(outcome.functions > 100, "only {} functions checked", outcome.functions);
    assert!(outcome.reparsed > 0, "the reparse fallback was never exercised");
}

#[test]
fn crlf_line_endings_and_byte_order_mark() {
    let scratch = scratch_dir("crlf");
    let mut outcome = Outcome::default();
    for fixture in common::fixtures() {
        let text = std::fs::read_to_string(&fixture).unwrap();
        let converted = format!("\u{feff}{}", text.replace('\n', "\r\n"));
        let path = scratch.join(fixture.file_name().unwrap());
        std::fs::write(&path, converted).unwrap();
        roundtrip(&path, &scratch, &mut outcome);
    }
    assert_all_rebuilt(&outcome);
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
