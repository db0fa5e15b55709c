//! The Writer, driven as `_pickle.c` drives it, writes exactly what CPython's C pickler writes.
//!
//! `fixtures/cpython_streams.txt` holds object graphs and the bytes of `pickle.dumps(obj, proto)`
//! for every protocol the graph allows (regenerate with `fixtures/gen_cpython_streams.py`). Each
//! case is also snapshotted as an opcode listing (`snapshots/`), so a change in the writer shows
//! up as a readable diff; `INSTA_UPDATE=always cargo test -p pickle_wire` rewrites them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fmt::Write as _;

use common::{check_frames, disassemble, fnv1a64, Graph, MiniPickler, Node};

const FIXTURE: &str = include_str!("fixtures/cpython_streams.txt");

struct Expect {
    proto: u8,
    len: usize,
    fnv: u64,
    /// The full stream when the generator stored it.
    bytes: Option<Vec<u8>>,
}

struct Case {
    name: String,
    graph: Graph,
    expects: Vec<Expect>,
}

fn hex(s: &str) -> Vec<u8> {
    if s == "-" {
        return Vec::new();
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

/// `hex` or `hex*count`.
fn packed(s: &str) -> Vec<u8> {
    match s.split_once('*') {
        Some((unit, count)) => hex(unit).repeat(count.parse().expect("count")),
        None => hex(s),
    }
}

fn ids(args: &[&str]) -> Vec<usize> {
    args.iter().map(|a| a.parse().expect("node id")).collect()
}

fn parse_node(graph: &mut Graph, kind: &str, args: &[&str]) -> Node {
    let range = |a: &[&str]| -> std::ops::Range<i64> { a[0].parse().expect("start")..a[1].parse().expect("stop") };
    match kind {
        "N" => Node::None,
        "T" => Node::Bool(true),
        "F" => Node::Bool(false),
        "I" => Node::Int(args[0].parse().expect("int")),
        "L" => Node::BigInt { le: hex(args[0]), decimal: args[1].to_owned() },
        "D" => {
            let bits: [u8; 8] = hex(args[0]).try_into().expect("8 bytes");
            Node::Float { value: f64::from_be_bytes(bits), repr: args[1].to_owned() }
        }
        "S" => Node::Str(packed(args[0])),
        "B" => Node::Bytes(packed(args[0])),
        "A" => Node::ByteArray(packed(args[0])),
        "l" => Node::List(ids(args)),
        "t" => Node::Tuple(ids(args)),
        "s" => Node::Set(ids(args)),
        "f" => Node::FrozenSet(ids(args)),
        "d" => Node::Dict(ids(args).chunks(2).map(|kv| (kv[0], kv[1])).collect()),
        // Compact forms for large containers of small ints (atoms get a node per occurrence).
        "R" => Node::List(range(args).map(|i| graph.add(Node::Int(i))).collect()),
        "RS" => Node::Set(args.iter().map(|a| graph.add(Node::Int(a.parse().expect("int")))).collect()),
        "RD" => Node::Dict(range(args).map(|i| (graph.add(Node::Int(i)), graph.add(Node::Int(i)))).collect()),
        other => panic!("unknown node kind {other}"),
    }
}

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    let mut current: Option<Case> = None;
    // Node ids in the fixture are positions; compact forms append extra nodes at the end, so the
    // fixture's nodes are parsed into their slots first and compact children go after them.
    let mut pending: Vec<(usize, String, Vec<String>)> = Vec::new();
    for line in FIXTURE.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let words: Vec<&str> = line.split(' ').collect();
        match words[0] {
            "case" => {
                current = Some(Case { name: words[1].to_owned(), graph: Graph::default(), expects: Vec::new() });
                pending.clear();
            }
            "node" => {
                let id: usize = words[1].parse().expect("id");
                pending.push((id, words[2].to_owned(), words[3..].iter().map(|s| (*s).to_owned()).collect()));
            }
            "root" => {
                let case = current.as_mut().expect("case");
                let g = &mut case.graph;
                g.nodes = vec![Node::None; pending.len()];
                for (id, kind, args) in pending.drain(..) {
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    let node = parse_node(g, &kind, &args);
                    g.nodes[id] = node;
                }
                g.root = words[1].parse().expect("root");
            }
            "expect" => {
                let case = current.as_mut().expect("case");
                let full = hex(words[4]);
                let len: usize = words[2].parse().expect("len");
                case.expects.push(Expect {
                    proto: words[1].parse().expect("proto"),
                    len,
                    fnv: u64::from_str_radix(words[3], 16).expect("fnv"),
                    bytes: (full.len() == len).then_some(full),
                });
            }
            "end" => out.push(current.take().expect("case")),
            other => panic!("bad fixture line {other}"),
        }
    }
    assert!(out.len() >= 20, "fixture parsed to {} cases", out.len());
    out
}

fn first_difference(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()))
}

#[test]
fn writer_matches_the_c_pickler_byte_for_byte() {
    let mut failures = Vec::new();
    for case in cases() {
        for e in &case.expects {
            let ours = MiniPickler::dumps(&case.graph, e.proto).expect("writable");
            let same = match &e.bytes {
                Some(theirs) => ours == *theirs,
                None => ours.len() == e.len && fnv1a64(&ours) == e.fnv,
            };
            if !same {
                let at = e.bytes.as_deref().map(|t| first_difference(&ours, t));
                failures.push(format!(
                    "{} protocol {}: {} bytes vs CPython's {} (first difference at {:?})\n{}",
                    case.name,
                    e.proto,
                    ours.len(),
                    e.len,
                    at,
                    e.bytes
                        .as_deref()
                        .map(|t| format!("ours:\n{}theirs:\n{}", disassemble(&ours, 40), disassemble(t, 40)))
                        .unwrap_or_default()
                ));
            }
            if e.proto >= 4 {
                if let Err(err) = check_frames(&ours) {
                    failures.push(format!("{} protocol {}: {err}", case.name, e.proto));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn opcode_listings() {
    for case in cases() {
        let mut listing = String::new();
        for e in &case.expects {
            let ours = MiniPickler::dumps(&case.graph, e.proto).expect("writable");
            let _ = writeln!(listing, "--- protocol {} ({} bytes)", e.proto, ours.len());
            listing.push_str(&disassemble(&ours, 60));
        }
        insta::assert_snapshot!(case.name.clone(), listing);
    }
}
