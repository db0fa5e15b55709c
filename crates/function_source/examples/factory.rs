//! Prints the factory source of the functions of a file whose qualified name matches.
//!
//!     python3 tests/python/dump_codes.py FILE > codes.json
//!     cargo run -p function_source --example factory -- FILE codes.json [QUALNAME]
//!
//! A debugging aid: shows what the crate locates and builds for each code object.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use function_source::SourceFile;
use serde_json::Value;

#[path = "../tests/common/code_json.rs"]
mod code_json;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, file, dump, rest @ ..] = args.as_slice() else {
        eprintln!("usage: factory FILE CODES_JSON [QUALNAME]");
        std::process::exit(2);
    };
    let text = std::fs::read_to_string(file).unwrap();
    let source = SourceFile::parse(file.as_str(), &text).unwrap();
    let dump: Value = serde_json::from_str(&std::fs::read_to_string(dump).unwrap()).unwrap();
    for code in dump["codes"].as_array().unwrap() {
        let qualname = code["qualname"].as_str().map(str::to_owned);
        if let Some(wanted) = rest.first() {
            if qualname.as_deref() != Some(wanted.as_str()) {
                continue;
            }
        }
        let query = code_json::query(code);
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
