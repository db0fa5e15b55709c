//! End to end against the real interpreter: every function and lambda of every fixture is
//! located from what CPython says about its code object, rebuilt as a factory source, and
//! the factory is run by CPython, whose rebuilt code object must equal the original.
//! Needs `python3` (or `$FUNCTION_SOURCE_PYTHON`), CPython 3.11 or later.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use serde_json::Value;

#[test]
fn every_fixture_function_rebuilds_to_an_equal_code_object() {
    let outcome = common::roundtrip(&common::fixtures(), &common::scratch_dir("fixtures"));
    outcome.assert_all_rebuilt();
    assert!(outcome.functions > 100, "only {} functions checked", outcome.functions);
    assert!(outcome.reparsed > 0, "the reparse fallback was never exercised");
}

#[test]
fn crlf_line_endings_and_byte_order_mark() {
    let scratch = common::scratch_dir("crlf");
    let mut paths = Vec::new();
    for fixture in common::fixtures() {
        let text = std::fs::read_to_string(&fixture).unwrap();
        let path = scratch.join(fixture.file_name().unwrap());
        std::fs::write(&path, format!("\u{feff}{}", text.replace('\n', "\r\n"))).unwrap();
        paths.push(path);
    }
    common::roundtrip(&paths, &scratch).assert_all_rebuilt();
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
            let live: Value = serde_json::from_str(&common::run_script("dump_codes.py", &[&fixture])).unwrap();
            assert_eq!(
                committed["codes"],
                live["codes"],
                "{}: stale, regenerate with tests/python/dump_codes.py",
                fixture.display()
            );
        }
    }
}
