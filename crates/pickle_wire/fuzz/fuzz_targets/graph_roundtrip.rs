//! Arbitrary value trees written as `_pickle.c` writes them (through the tests' miniature of its
//! save path) must read back, with serde-pickle, as the same values, in every protocol that can
//! carry them, and the stream's framing must be well formed.
#![no_main]

#[path = "../../tests/common/mod.rs"]
mod common;

use arbitrary::Arbitrary;
use common::{check_frames, expected, from_serde, needs_protocol, Graph, MiniPickler, Node};
use libfuzzer_sys::fuzz_target;
use pickle_wire::HIGHEST_PROTOCOL;

#[derive(Arbitrary, Debug)]
enum Tree {
    None,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    /// A long run of one byte: past 255 bytes (long headers) and 64 KiB (frame bypass).
    Run(u8, u32),
    List(Vec<Tree>),
    Tuple(Vec<Tree>),
    Dict(Vec<(String, Tree)>),
    Set(Vec<i64>),
}

fn build(g: &mut Graph, t: &Tree, depth: usize) -> usize {
    let depth = depth + 1;
    let kids = |g: &mut Graph, items: &[Tree]| -> Vec<usize> {
        if depth > 64 {
            return Vec::new();
        }
        items.iter().map(|x| build(g, x, depth)).collect()
    };
    match t {
        Tree::None => g.add(Node::None),
        Tree::Bool(b) => g.add(Node::Bool(*b)),
        Tree::Int(i) => match i64::try_from(*i) {
            Ok(small) => g.add(Node::Int(small)),
            Err(_) => g.add(Node::BigInt {
                le: i.to_le_bytes().to_vec(),
                decimal: i.to_string(),
            }),
        },
        Tree::Float(f) => g.add(Node::Float {
            value: *f,
            repr: format!("{f:?}"),
        }),
        // Protocol 0 writes code points; serde-pickle reads them back as chars: no surrogates in
        // a Rust String, so nothing is lost.
        Tree::Str(s) => g.add(Node::Str(s.as_bytes().to_vec())),
        Tree::Bytes(b) => g.add(Node::Bytes(b.clone())),
        Tree::Run(b, n) => g.add(Node::Bytes(vec![*b; (*n % 150_000) as usize])),
        Tree::List(items) => {
            let ids = kids(g, items);
            g.add(Node::List(ids))
        }
        Tree::Tuple(items) => {
            let ids = kids(g, items);
            g.add(Node::Tuple(ids))
        }
        Tree::Dict(items) => {
            // Unique keys: a repeated key would make the reader keep only the last value.
            let mut seen = std::collections::BTreeSet::new();
            let mut pairs = Vec::new();
            for (k, v) in items {
                if depth <= 64 && seen.insert(k.clone()) {
                    let key = g.add(Node::Str(k.as_bytes().to_vec()));
                    pairs.push((key, build(g, v, depth)));
                }
            }
            g.add(Node::Dict(pairs))
        }
        Tree::Set(items) => {
            let unique: std::collections::BTreeSet<i64> = items.iter().copied().collect();
            let ids = unique.into_iter().map(|i| g.add(Node::Int(i))).collect();
            g.add(Node::Set(ids))
        }
    }
}

fuzz_target!(|input: (u8, Tree)| {
    let (proto, tree) = input;
    let mut g = Graph::default();
    g.root = build(&mut g, &tree, 0);
    let proto = (proto % (HIGHEST_PROTOCOL + 1)).max(needs_protocol(&g));
    let data = MiniPickler::dumps(&g, proto).unwrap_or_else(|e| panic!("{e}"));
    if proto >= 4 {
        check_frames(&data).unwrap_or_else(|e| panic!("bad framing: {e}"));
    }
    let value = serde_pickle::value_from_slice(&data, serde_pickle::DeOptions::new())
        .unwrap_or_else(|e| panic!("protocol {proto}: serde-pickle refused the stream: {e}"));
    assert_eq!(
        from_serde(&value),
        expected(&g, g.root, proto),
        "protocol {proto}"
    );
});
