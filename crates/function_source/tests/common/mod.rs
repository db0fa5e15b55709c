//! Helpers shared by the integration tests: fixtures, the Python interpreter, and the
//! conversion of `tests/python/dump_codes.py` output into queries.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use function_source::{CodeQuery, FactoryLayout, SourceFile, RESULT_NAME};
use serde_json::{json, Value};

pub mod code_json;
pub mod pygen;

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
        .unwrap_or_else(|e| panic!("cannot run python3 (set FUNCTION_SOURCE_PYTHON to a CPython 3.11+): {e}"));
    assert!(output.status.success(), "{script} failed:\n{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// One function as `dump_codes.py` describes it.
pub struct CodeRecord {
    pub query: CodeQuery,
}

/// Parses `dump_codes.py` output for one file.
pub fn parse_dump(json: &str) -> Vec<CodeRecord> {
    let dump: Value = serde_json::from_str(json).unwrap();
    records(&dump["codes"])
}

fn records(codes: &Value) -> Vec<CodeRecord> {
    codes.as_array().unwrap().iter().map(|code| CodeRecord { query: code_json::query(code) }).collect()
}

/// What a fixture's committed `.codes.json` (CPython 3.11 output) holds.
pub fn committed_dump(fixture: &Path) -> Vec<CodeRecord> {
    let path = fixture.with_extension("codes.json");
    parse_dump(
        &std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; regenerate with tests/python/dump_codes.py", path.display())),
    )
}

/// What a round trip through CPython found.
#[derive(Default)]
pub struct Outcome {
    pub functions: usize,
    /// Files CPython itself refused to compile (generated programs only).
    pub skipped: usize,
    pub reparsed: usize,
    /// Functions whose code object did not single out one node; the first candidate whose
    /// factory compiles to an equal code object is the answer, as the glue does it.
    pub ambiguous: usize,
    pub failures: Vec<String>,
}

impl Outcome {
    pub fn assert_all_rebuilt(&self) {
        assert!(
            self.failures.is_empty(),
            "{} of {} functions failed:\n{}",
            self.failures.len(),
            self.functions,
            self.failures.join("\n")
        );
    }
}

/// Every function of every file: CPython describes its code object, the crate locates and
/// rebuilds it, and CPython runs each factory and compares the rebuilt code object with
/// the original. Two interpreter runs in all, whatever the number of files.
pub fn roundtrip(paths: &[PathBuf], scratch: &Path) -> Outcome {
    let mut args: Vec<&Path> = vec![Path::new("--batch")];
    args.extend(paths.iter().map(PathBuf::as_path));
    let dump: Value = serde_json::from_str(&run_script("dump_codes.py", &args)).unwrap();
    let mut outcome = Outcome::default();
    let mut factories = Vec::new();
    for path in paths {
        let key = path.to_string_lossy();
        let entry = &dump["files"][key.as_ref()];
        if entry.get("error").is_some() {
            outcome.skipped += 1;
            continue;
        }
        let text = std::fs::read_to_string(path).unwrap();
        let file = match SourceFile::parse(key.as_ref(), &text) {
            Ok(file) => file,
            Err(err) => {
                outcome.failures.push(format!("{key}: CPython compiles it, we do not: {err}"));
                continue;
            }
        };
        for (index, record) in records(&entry["codes"]).iter().enumerate() {
            outcome.functions += 1;
            let failure = |what: String| format!("{key}: {:?}: {what}", record.query.qualname);
            let candidates = match file.locate_candidates(&record.query) {
                Ok(candidates) => candidates,
                Err(err) => {
                    outcome.failures.push(failure(err.to_string()));
                    continue;
                }
            };
            outcome.ambiguous += usize::from(candidates.len() > 1);
            let mut sources = Vec::new();
            for candidate in candidates {
                match candidate.factory(&record.query) {
                    Ok(factory) => {
                        if matches!(factory.layout, FactoryLayout::Reparsed { .. }) {
                            outcome.reparsed += 1;
                        }
                        sources.push(factory.source);
                    }
                    Err(err) => outcome.failures.push(failure(err.to_string())),
                }
            }
            factories.push(json!({
                "path": key, "index": index, "sources": sources, "result_name": RESULT_NAME,
            }));
        }
    }
    let factories_path = scratch.join("factories.json");
    std::fs::write(&factories_path, Value::Array(factories).to_string()).unwrap();
    let results: Value = serde_json::from_str(&run_script("check_factories.py", &[&factories_path])).unwrap();
    for result in results.as_array().unwrap() {
        let candidates = result["candidates"].as_array().unwrap();
        if !candidates.iter().any(|problems| problems.as_array().unwrap().is_empty()) {
            outcome.failures.push(format!(
                "{}: {}: {candidates:?}",
                result["path"].as_str().unwrap_or(""),
                result["qualname"]
            ));
        }
    }
    outcome
}

/// A fresh directory for one test's files.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("function_source_{}_{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
