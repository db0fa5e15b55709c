//! Prints the factory source of the functions of a file whose qualified name matches.
//!
//!     python3 tests/python/dump_codes.py FILE > codes.json
//!     cargo run -p function_source --example factory -- FILE codes.json [QUALNAME]
//!
//! A debugging aid: shows what the crate locates and builds for each code object.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use function_source::{CodePosition, CodeQuery, SourceFile};
use serde_json::Value;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, file, dump, rest @ ..] = args.as_slice() else {
        eprintln!("usage: factory FILE CODES_JSON [QUALNAME]");
        std::process::exit(2);
    };
    let text = std::fs::read_to_string(file).unwrap();
    let source = SourceFile::parse(file.as_str(), &text).unwrap();
    let dump: Value = serde_json::from_str(&std::fs::read_to_string(dump).unwrap()).unwrap();
    let strings = |v: &Value| -> Vec<String> {
        v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect()
    };
    let number = |v: &Value| v.as_u64().map(|n| n as u32);
    for code in dump["codes"].as_array().unwrap() {
        let qualname = code["qualname"].as_str().map(str::to_owned);
        if let Some(wanted) = rest.first() {
            if qualname.as_deref() != Some(wanted.as_str()) {
                continue;
            }
        }
        let query = CodeQuery {
            name: code["name"].as_str().unwrap().to_owned(),
            qualname: qualname.clone(),
            first_line: number(&code["first_line"]).unwrap(),
            arg_names: strings(&code["arg_names"]),
            positions: code["positions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| CodePosition {
                    line: number(&p[0]),
                    end_line: number(&p[1]),
                    column: number(&p[2]),
                    end_column: number(&p[3]),
                })
                .collect(),
            nested_code_names: Some(strings(&code["nested_code_names"])),
            free_vars: strings(&code["free_vars"]),
        };
        println!("=== {qualname:?} line {}", query.first_line);
        match source.locate_candidates(&query) {
            Err(err) => println!("error: {err}"),
            Ok(candidates) => {
                for candidate in candidates {
                    match candidate.factory(&query) {
                        Ok(factory) => println!("{:?}\n{}", factory.layout, factory.source.trim_start()),
                        Err(err) => println!("factory error: {err}"),
                    }
                }
            }
        }
    }
}
