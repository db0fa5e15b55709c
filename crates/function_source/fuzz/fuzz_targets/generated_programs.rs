//! Structured inputs: the bytes drive the test suite's program generator, so the fuzzer
//! explores valid, deeply nested Python. Every function must be found again from what the
//! source says about it, and neutralised and rebuilt without error.
#![no_main]

use function_source::SourceFile;
use libfuzzer_sys::fuzz_target;

#[path = "../../tests/common/pygen.rs"]
mod pygen;

fuzz_target!(|data: &[u8]| {
    let program = pygen::program(data);
    let Ok(file) = SourceFile::parse("generated.py", &program) else { return };
    for function in file.functions() {
        let query = function.query();
        let candidates = file.locate_candidates(&query).expect("a function is found again");
        assert!(candidates.iter().any(|c| c.start() == function.start()));
        function.neutralise().expect("neutralised");
        function.factory(&query).expect("rebuilt");
    }
});
