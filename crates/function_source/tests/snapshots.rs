//! Snapshots of what the crate produces for every function of every fixture, from the
//! queries CPython 3.11 produced (`tests/fixtures/*.codes.json`): the located span, the
//! neutralised text with its defaults, and the factory source. Review changes with
//! `INSTA_UPDATE=always cargo test -p function_source --test snapshots` and `git diff`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fmt::Write;

use function_source::SourceFile;

fn report(fixture: &std::path::Path) -> String {
    let text = std::fs::read_to_string(fixture).unwrap();
    let name = fixture.file_name().unwrap().to_string_lossy().into_owned();
    let file = SourceFile::parse(name, &text).unwrap();
    let mut out = String::new();
    for record in common::committed_dump(fixture) {
        let q = &record.query;
        writeln!(
            out,
            "=== {} (line {}, free vars {:?})",
            q.qualname.as_deref().unwrap_or(&q.name),
            q.first_line,
            q.free_vars
        )
        .unwrap();
        let function = match file.locate(q) {
            Ok(function) => function,
            Err(err) => {
                writeln!(out, "locate error: {err}\n").unwrap();
                continue;
            }
        };
        let (start, end) = (function.start(), function.end());
        writeln!(out, "span {}:{}-{}:{} {:?}", start.line, start.column, end.line, end.column, function.kind())
            .unwrap();
        match function.neutralise() {
            Ok(n) => {
                for d in &n.defaults {
                    writeln!(
                        out,
                        "default {}{} at {}:{}-{}:{}",
                        if d.keyword_only { "kw-only " } else { "" },
                        d.parameter,
                        d.start.line,
                        d.start.column,
                        d.end.line,
                        d.end.column
                    )
                    .unwrap();
                }
                for s in &n.newer_syntax {
                    writeln!(out, "newer syntax at {}:{}: {}", s.start.line, s.start.column, s.message).unwrap();
                }
                writeln!(out, "--- neutralised (lines {}-{})", n.first_line, n.last_line).unwrap();
                out.push_str(&n.text);
            }
            Err(err) => writeln!(out, "neutralise error: {err}").unwrap(),
        }
        match function.factory(q) {
            Ok(f) => {
                writeln!(out, "--- factory {:?}", f.layout).unwrap();
                out.push_str(&collapse_blank_lines(&f.source));
            }
            Err(err) => writeln!(out, "factory error: {err}").unwrap(),
        }
        out.push('\n');
    }
    out
}

/// Blank lines only pad a factory to the function's line: show runs of them as one line.
fn collapse_blank_lines(source: &str) -> String {
    let mut out = String::new();
    let mut blank = 0;
    for line in source.lines() {
        if line.trim().is_empty() {
            blank += 1;
            continue;
        }
        if blank > 0 {
            writeln!(out, "<{blank} blank lines>").unwrap();
            blank = 0;
        }
        writeln!(out, "{line}").unwrap();
    }
    out
}

#[test]
fn fixtures() {
    for fixture in common::fixtures() {
        let name = fixture.file_stem().unwrap().to_string_lossy().into_owned();
        insta::assert_snapshot!(name, report(&fixture));
    }
}
