//! Rough timings with `std::time` (no benchmark harness):
//!
//!     python3 tests/python/dump_codes.py FILE > codes.json
//!     cargo run -p function_source --release --example bench -- FILE codes.json
//!
//! Prints the time to parse the file, to hit the cache for it, and per function to locate
//! it and to build its factory (medians over repeated runs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use function_source::{CodeQuery, ParseCache, SourceFile};
use serde_json::Value;

#[path = "../tests/common/code_json.rs"]
mod code_json;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
    median(
        (0..runs)
            .map(|_| {
                let start = Instant::now();
                std::hint::black_box(f());
                start.elapsed()
            })
            .collect(),
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, path, dump] = args.as_slice() else {
        eprintln!("usage: bench FILE CODES_JSON");
        std::process::exit(2);
    };
    let text = std::fs::read_to_string(path).unwrap();
    let dump: Value = serde_json::from_str(&std::fs::read_to_string(dump).unwrap()).unwrap();
    let queries: Vec<CodeQuery> = dump["codes"].as_array().unwrap().iter().map(code_json::query).collect();

    let lines = text.lines().count();
    let parse = time(30, || SourceFile::parse(path.as_str(), &text).unwrap());
    println!("{path}: {lines} lines, {} bytes, {} functions", text.len(), queries.len());
    println!("parse (ruff + scope table):      {parse:>10.2?}");

    let mut cache = ParseCache::new(64);
    cache.get_or_parse(path, &text).unwrap();
    let hit = time(2000, || cache.get_or_parse(path, &text).unwrap());
    println!("cache hit (compare text):        {hit:>10.2?}");

    let file = cache.get_or_parse(path, &text).unwrap();
    let per_function = |total: Duration| total / queries.len() as u32;
    let locate = time(200, || {
        for q in &queries {
            std::hint::black_box(file.locate(q).unwrap());
        }
    });
    println!("locate, per function:            {:>10.2?}", per_function(locate));
    let located: Vec<_> = queries.iter().map(|q| (file.locate(q).unwrap(), q)).collect();
    let factory = time(200, || {
        for (function, q) in &located {
            std::hint::black_box(function.factory(q).unwrap());
        }
    });
    println!("factory, per function:           {:>10.2?}", per_function(factory));
    let lookup = time(200, || {
        for q in &queries {
            let file = cache.get_or_parse(path, &text).unwrap();
            std::hint::black_box(file.locate(q).unwrap().factory(q).unwrap());
        }
    });
    println!("cached lookup + locate + factory: {:>9.2?} per function", per_function(lookup));
}
