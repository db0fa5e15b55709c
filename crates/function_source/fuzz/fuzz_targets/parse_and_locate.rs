//! Arbitrary text and an arbitrary code-object description: parsing, locating,
//! neutralising and building a factory must never panic.
#![no_main]

use function_source::{CodePosition, CodeQuery, SourceFile};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

fn query(u: &mut Unstructured<'_>) -> Result<CodeQuery> {
    let name: String = if u.arbitrary()? { "<lambda>".into() } else { u.arbitrary()? };
    let mut positions = Vec::new();
    for _ in 0..u.int_in_range(0..=32)? {
        positions.push(CodePosition {
            line: u.arbitrary()?,
            end_line: u.arbitrary()?,
            column: u.arbitrary()?,
            end_column: u.arbitrary()?,
        });
    }
    Ok(CodeQuery {
        name,
        qualname: u.arbitrary()?,
        first_line: u.int_in_range(0..=64)?,
        arg_names: u.arbitrary()?,
        positions,
        nested_code_names: u.arbitrary()?,
        free_vars: u.arbitrary()?,
    })
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(text) = u.arbitrary::<String>() else { return };
    let Ok(file) = SourceFile::parse("fuzz.py", &text) else { return };
    let Ok(query) = query(&mut u) else { return };
    let _ = file.locate(&query);
    if let Ok(candidates) = file.locate_candidates(&query) {
        for candidate in candidates {
            let _ = candidate.neutralise();
            let _ = candidate.factory(&query);
        }
    }
    for function in file.functions() {
        let _ = function.neutralise();
        let _ = function.factory(&function.query());
    }
});
