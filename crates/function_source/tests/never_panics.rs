//! Property tests: no input, however malformed, makes the crate panic, and what the crate
//! finds in a file is consistent with itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use function_source::{CodePosition, CodeQuery, LineColumn, LineIndex, SourceFile};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

fn column() -> impl Strategy<Value = u32> {
    prop_oneof![0u32..120, Just(u32::MAX), Just(u32::MAX - 1)]
}

fn position() -> impl Strategy<Value = CodePosition> {
    (
        option::of(prop_oneof![0u32..60, Just(u32::MAX)]),
        option::of(prop_oneof![0u32..60, Just(u32::MAX)]),
        option::of(column()),
        option::of(column()),
    )
        .prop_map(|(line, end_line, column, end_column)| CodePosition { line, end_line, column, end_column })
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("<lambda>".to_owned()),
        Just("f".to_owned()),
        Just("g".to_owned()),
        Just("__m".to_owned()),
        "[a-zé_<>.]{0,6}",
        ".{0,8}",
    ]
}

fn query() -> impl Strategy<Value = CodeQuery> {
    (
        name(),
        option::of(prop_oneof![name(), Just("f.<locals>.<lambda>".to_owned())]),
        prop_oneof![0u32..60, Just(u32::MAX)],
        vec(name(), 0..4),
        vec(position(), 0..24),
        option::of(vec(name(), 0..3)),
        vec(name(), 0..3),
    )
        .prop_map(|(name, qualname, first_line, arg_names, positions, nested_code_names, free_vars)| CodeQuery {
            name,
            qualname,
            first_line,
            arg_names,
            positions,
            nested_code_names,
            free_vars,
        })
}

/// Every entry point, on whatever `locate` finds.
fn exercise(file: &SourceFile, query: &CodeQuery) {
    let _ = file.locate(query);
    if let Ok(candidates) = file.locate_candidates(query) {
        assert!(!candidates.is_empty());
        for candidate in candidates {
            let _ = candidate.neutralise();
            let _ = candidate.factory(query);
            let _ = candidate.newer_syntax();
            let _ = candidate.qualname();
            let _ = candidate.arg_names();
        }
    }
}

/// Fragments that make up Python-looking text, valid or not.
fn fragment() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "lambda",
        "def ",
        "async ",
        "class ",
        "f",
        "x",
        "é",
        " ",
        "\n",
        "\r\n",
        "\r",
        "\t",
        "    ",
        "(",
        ")",
        "[",
        "]",
        "{",
        "}",
        ":",
        "=",
        ",",
        "@",
        "->",
        "'",
        "\"",
        "\"\"\"",
        "\\",
        "\\\n",
        "#",
        "*",
        "**",
        "/",
        "for ",
        " in ",
        "if ",
        "else ",
        "global ",
        "return ",
        "from __future__ import annotations\n",
        "\u{feff}",
        "\x0c",
        "\0",
        "match ",
        "case ",
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn arbitrary_text_and_queries(text in any::<String>(), query in query()) {
        if let Ok(file) = SourceFile::parse("arbitrary.py", &text) {
            exercise(&file, &query);
        }
    }

    #[test]
    fn python_looking_text_and_queries(parts in vec(fragment(), 0..120), query in query()) {
        let text: String = parts.concat();
        if let Ok(file) = SourceFile::parse("fragments.py", &text) {
            exercise(&file, &query);
            for function in file.functions() {
                exercise(&file, &function.query());
            }
        }
    }

    #[test]
    fn arbitrary_queries_on_every_fixture(query in query()) {
        for fixture in common::fixtures() {
            let text = std::fs::read_to_string(&fixture).unwrap();
            let file = SourceFile::parse("fixture.py", &text).unwrap();
            exercise(&file, &query);
        }
    }

    #[test]
    fn edited_fixtures_with_their_original_queries(
        which in 0usize..64,
        edits in vec((any::<prop::sample::Index>(), ".{0,3}", 0usize..4), 1..6),
    ) {
        // A file edited after its functions were compiled: stale positions must be
        // rejected or matched, never crash.
        let fixtures = common::fixtures();
        let fixture = &fixtures[which % fixtures.len()];
        let mut text = std::fs::read_to_string(fixture).unwrap();
        for (at, insert, delete) in edits {
            let mut cut = at.index(text.len() + 1);
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            let mut end = (cut + delete).min(text.len());
            while !text.is_char_boundary(end) {
                end += 1;
            }
            text.replace_range(cut..end, &insert);
        }
        if let Ok(file) = SourceFile::parse("edited.py", &text) {
            for record in common::committed_dump(fixture) {
                exercise(&file, &record.query);
            }
        }
    }

    #[test]
    fn every_function_of_a_generated_program_is_found_and_rebuilt(bytes in vec(any::<u8>(), 0..600)) {
        let program = common::pygen::program(&bytes);
        let Ok(file) = SourceFile::parse("generated.py", &program) else {
            return Ok(());
        };
        for function in file.functions() {
            let query = function.query();
            let candidates = file.locate_candidates(&query).unwrap();
            prop_assert!(candidates.iter().any(|c| c.start() == function.start()));
            let neutral = function.neutralise().unwrap();
            prop_assert_eq!(
                neutral.text.lines().count() as u32,
                neutral.last_line - neutral.first_line + 1
            );
            let factory = function.factory(&query);
            prop_assert!(factory.is_ok(), "{:?}", factory);
        }
    }

    #[test]
    fn line_index_round_trips(text in "[ab\r\né]{0,30}", offset in any::<prop::sample::Index>()) {
        let index = LineIndex::new(&text);
        let offset = offset.index(text.len() + 1) as u32;
        let position = index.line_column(offset);
        let content_end = index.line_content_end(position.line).unwrap();
        if offset <= content_end {
            prop_assert_eq!(index.offset(position), Some(offset));
        } else {
            // Inside a line break: no column addresses it.
            prop_assert_eq!(index.offset(position), None);
        }
        let _ = index.offset(LineColumn { line: position.line + 1, column: u32::MAX });
    }
}
