//! Random programs (see `common/pygen.rs`) through the same CPython round trip as the
//! fixtures: every function CPython compiles in them must be located and rebuilt to an equal
//! code object. The seeds are fixed, so a failure reproduces; raise
//! `FUNCTION_SOURCE_PROGRAMS` (default 150) to search further.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

/// xorshift64*: a fixed, dependency-free byte stream per seed.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

#[test]
fn generated_programs_rebuild_to_equal_code_objects() {
    let count: u64 = std::env::var("FUNCTION_SOURCE_PROGRAMS").ok().and_then(|n| n.parse().ok()).unwrap_or(150);
    let scratch = common::scratch_dir("generated");
    let paths: Vec<_> = (0..count)
        .map(|seed| {
            let path = scratch.join(format!("program_{seed}.py"));
            std::fs::write(&path, common::pygen::program(&bytes(seed, 512))).unwrap();
            path
        })
        .collect();
    let outcome = common::roundtrip(&paths, &scratch);
    outcome.assert_all_rebuilt();
    // Most generated programs must be valid, or the test checks little.
    assert!(outcome.skipped * 4 < paths.len(), "CPython rejected {} of {} programs", outcome.skipped, paths.len());
    assert!(outcome.functions > paths.len(), "only {} functions", outcome.functions);
}
