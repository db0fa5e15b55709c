//! Factory sources must compile and run on the oldest receiver the project supports, PyPy
//! 3.9 with nothing but the standard library, and the newer-syntax flag must predict
//! exactly which ones do not compile there.
//!
//! Uses `$FUNCTION_SOURCE_RECEIVER`, default `pypy3`. Set it to `none` to opt out
//! explicitly on a machine without PyPy; otherwise a missing interpreter fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use function_source::{SourceFile, RESULT_NAME};
use serde_json::{json, Value};

#[test]
fn factories_compile_and_run_on_the_receiver() {
    let receiver = std::env::var("FUNCTION_SOURCE_RECEIVER").unwrap_or_else(|_| "pypy3".into());
    if receiver == "none" {
        eprintln!("FUNCTION_SOURCE_RECEIVER=none: receiver check opted out");
        return;
    }
    let scratch = std::env::temp_dir().join(format!("function_source_{}_receiver", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let mut failures = Vec::new();
    let mut checked = 0;
    let mut flagged = 0;
    for fixture in common::fixtures() {
        let text = std::fs::read_to_string(&fixture).unwrap();
        let file = SourceFile::parse(fixture.to_string_lossy(), &text).unwrap();
        let mut entries = Vec::new();
        for record in common::committed_dump(&fixture) {
            let q = &record.query;
            let factory = file.locate(q).and_then(|f| f.factory(q)).unwrap();
            flagged += usize::from(!factory.newer_syntax.is_empty());
            entries.push(json!({
                "source": factory.source,
                "result_name": RESULT_NAME,
                "newer_syntax": !factory.newer_syntax.is_empty(),
                "expect": {
                    "name": q.name,
                    "qualname": q.qualname,
                    "first_line": q.first_line,
                    "arg_names": q.arg_names,
                    "free_vars": q.free_vars,
                },
            }));
        }
        let entries_path = scratch.join("receiver.json");
        std::fs::write(&entries_path, Value::Array(entries).to_string()).unwrap();
        let output = Command::new(&receiver)
            .arg(common::crate_dir().join("tests/python/check_receiver.py"))
            .arg(&fixture)
            .arg(&entries_path)
            .output()
            .unwrap_or_else(|e| panic!("cannot run receiver {receiver:?} (set FUNCTION_SOURCE_RECEIVER): {e}"));
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let results: Value = serde_json::from_slice(&output.stdout).unwrap();
        for (i, problems) in results.as_array().unwrap().iter().enumerate() {
            checked += 1;
            if !problems.as_array().unwrap().is_empty() {
                failures.push(format!("{} #{i}: {problems}", fixture.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked > 100 && flagged > 0, "checked {checked}, flagged {flagged}");
}
