//! An independent reader agrees: serde-pickle loads what the Writer writes, in every protocol it
//! applies to, for fixed values and for proptest-generated trees (ints of any width up to 128 bits,
//! floats including NaN and infinities, strings, bytes, lists, tuples, dicts, sets, shared items).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{expected, from_serde, needs_protocol, Graph, MiniPickler, Node, Norm};
use pickle_wire::HIGHEST_PROTOCOL;
use proptest::prelude::*;
use serde_pickle::{DeOptions, Value};

fn check_all_protocols(graph: &Graph) -> Result<(), TestCaseError> {
    for proto in needs_protocol(graph)..=HIGHEST_PROTOCOL {
        let data = MiniPickler::dumps(graph, proto).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let value = serde_pickle::value_from_slice(&data, DeOptions::new())
            .map_err(|e| TestCaseError::fail(format!("protocol {proto}: serde-pickle refused the stream: {e}")))?;
        prop_assert_eq!(from_serde(&value), expected(graph, graph.root, proto), "protocol {}", proto);
    }
    Ok(())
}

// ----- building graphs -------------------------------------------------------------------------

fn int(g: &mut Graph, i: i128) -> usize {
    match i64::try_from(i) {
        Ok(small) => g.add(Node::Int(small)),
        Err(_) => g.add(Node::BigInt { le: i.to_le_bytes().to_vec(), decimal: i.to_string() }),
    }
}

fn float(g: &mut Graph, f: f64) -> usize {
    // `{:?}` is the shortest text that reads back exactly ("1e16", "inf", "NaN"), which is what
    // protocol 0 needs from a repr; Python's float() reads these spellings too.
    g.add(Node::Float { value: f, repr: format!("{f:?}") })
}

fn string(g: &mut Graph, s: &str) -> usize {
    g.add(Node::Str(s.as_bytes().to_vec()))
}

#[test]
fn serde_pickle_reads_fixed_values() {
    let mut g = Graph::default();
    let mut items = Vec::new();
    for i in [
        0i128,
        1,
        -1,
        255,
        256,
        65535,
        65536,
        i128::from(i32::MAX),
        i128::from(i32::MIN),
        1 << 31,
        -(1 << 31) - 1,
        i128::from(i64::MAX),
        i128::from(i64::MIN),
        1 << 64,
        -(1 << 100),
        i128::MAX,
        i128::MIN,
    ] {
        items.push(int(&mut g, i));
    }
    for f in [0.0, -0.0, 1.5, 0.1, 1e16, 1e-300, f64::INFINITY, f64::NEG_INFINITY, f64::MAX, f64::MIN_POSITIVE] {
        items.push(float(&mut g, f));
    }
    for s in ["", "a", "héllo", "€uro", "line\nbreak\r\0\u{1a}\\", "\u{10ffff}", &"x".repeat(300)] {
        items.push(string(&mut g, s));
    }
    items.push(g.add(Node::None));
    items.push(g.add(Node::Bool(true)));
    items.push(g.add(Node::Bool(false)));
    // serde-pickle 1.2 reports "recursive structure" for any container reached twice that holds a
    // memoized item (even in CPython's own streams, e.g. `pickle.dumps((t, t))` with t = ('s', 's')),
    // so sharing here is of strings and of containers of atoms; cpython_streams.rs covers the rest.
    let shared = string(&mut g, "shared");
    let t2 = g.add(Node::Tuple(vec![shared, shared]));
    let empty = g.add(Node::Tuple(vec![]));
    let one = int(&mut g, 1);
    let atoms = g.add(Node::List(vec![one, one]));
    let inner = g.add(Node::List(vec![t2, empty, shared, atoms]));
    let k1 = string(&mut g, "k1");
    let k2 = int(&mut g, 7);
    let dict = g.add(Node::Dict(vec![(k1, inner), (k2, atoms)]));
    let t4 = g.add(Node::Tuple(vec![dict, shared, atoms, empty]));
    items.extend([empty, atoms, t4, shared]);
    let many: Vec<usize> = (0..2500).map(|i| int(&mut g, i)).collect();
    items.push(g.add(Node::List(many)));
    g.root = g.add(Node::List(items));
    check_all_protocols(&g).unwrap_or_else(|e| panic!("{e}"));

    // Protocol 3+: bytes; 4+: sets and frozensets; 5: bytearray (read back as bytes).
    let mut g = Graph::default();
    let b1 = g.add(Node::Bytes(b"abc".to_vec()));
    let b2 = g.add(Node::Bytes(vec![0xff; 70_000]));
    let members: Vec<usize> = (0..1500).map(|i| int(&mut g, i * 3)).collect();
    let set = g.add(Node::Set(members));
    let one = int(&mut g, 1);
    let frozen = g.add(Node::FrozenSet(vec![one, b1]));
    g.root = g.add(Node::List(vec![b1, b2, b1, set, frozen, set]));
    check_all_protocols(&g).unwrap_or_else(|e| panic!("{e}"));

    let mut g = Graph::default();
    let ba = g.add(Node::ByteArray(b"mutable".to_vec()));
    g.root = g.add(Node::Tuple(vec![ba, ba]));
    check_all_protocols(&g).unwrap_or_else(|e| panic!("{e}"));
}

// ----- property tests --------------------------------------------------------------------------

/// A value tree without identity (sharing is added by reusing string leaves).
#[derive(Debug, Clone)]
enum Tree {
    None,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Tree>),
    Tuple(Vec<Tree>),
    Dict(Vec<(String, Tree)>),
    Set(Vec<i64>),
}

fn any_int() -> impl Strategy<Value = i128> {
    prop_oneof![
        any::<i8>().prop_map(i128::from),
        any::<i32>().prop_map(i128::from),
        any::<i64>().prop_map(i128::from),
        any::<i128>(),
        prop::sample::select(vec![255i128, 256, 65535, 65536, 1 << 31, -(1 << 31) - 1, 1 << 63, -(1 << 63) - 1]),
    ]
}

fn tree() -> impl Strategy<Value = Tree> {
    let leaf = prop_oneof![
        Just(Tree::None),
        any::<bool>().prop_map(Tree::Bool),
        any_int().prop_map(Tree::Int),
        any::<f64>().prop_map(Tree::Float),
        prop::sample::select(vec![f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0, 1e16, 5e-324])
            .prop_map(Tree::Float),
        any::<String>().prop_map(Tree::Str),
        "[a-z\\\\\n\r\u{0}\u{1a}é€😀]{0,300}".prop_map(Tree::Str),
        prop::collection::vec(any::<u8>(), 0..300).prop_map(Tree::Bytes),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Tree::List),
            prop::collection::vec(inner.clone(), 0..5).prop_map(Tree::Tuple),
            prop::collection::btree_map("[a-z]{0,6}", inner, 0..6).prop_map(|m| Tree::Dict(m.into_iter().collect())),
            prop::collection::btree_set(any::<i64>(), 0..20).prop_map(|s| Tree::Set(s.into_iter().collect())),
        ]
    })
}

/// Add a tree to the graph. Equal strings become one shared node, so memo references appear.
fn build(g: &mut Graph, t: &Tree, strings: &mut Vec<(String, usize)>) -> usize {
    match t {
        Tree::None => g.add(Node::None),
        Tree::Bool(b) => g.add(Node::Bool(*b)),
        Tree::Int(i) => int(g, *i),
        Tree::Float(f) => float(g, *f),
        Tree::Str(s) => {
            if let Some((_, id)) = strings.iter().find(|(x, _)| x == s) {
                return *id;
            }
            let id = string(g, s);
            strings.push((s.clone(), id));
            id
        }
        Tree::Bytes(b) => g.add(Node::Bytes(b.clone())),
        Tree::List(items) => {
            let ids = items.iter().map(|x| build(g, x, strings)).collect();
            g.add(Node::List(ids))
        }
        Tree::Tuple(items) => {
            let ids = items.iter().map(|x| build(g, x, strings)).collect();
            g.add(Node::Tuple(ids))
        }
        Tree::Dict(items) => {
            let ids = items.iter().map(|(k, v)| (string(g, k), build(g, v, strings))).collect();
            g.add(Node::Dict(ids))
        }
        Tree::Set(items) => {
            let ids = items.iter().map(|&i| g.add(Node::Int(i))).collect();
            g.add(Node::Set(ids))
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn serde_pickle_reads_random_trees(t in tree()) {
        let mut g = Graph::default();
        g.root = build(&mut g, &t, &mut Vec::new());
        check_all_protocols(&g)?;
    }

    #[test]
    fn ints_round_trip(i in any_int(), proto in 0u8..=HIGHEST_PROTOCOL) {
        let mut g = Graph::default();
        g.root = int(&mut g, i);
        let data = MiniPickler::dumps(&g, proto).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let value = serde_pickle::value_from_slice(&data, DeOptions::new()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(from_serde(&value), Norm::Int(i.to_string()));
    }

    #[test]
    fn strings_round_trip(s in any::<String>(), proto in 0u8..=HIGHEST_PROTOCOL) {
        let mut g = Graph::default();
        g.root = string(&mut g, &s);
        let data = MiniPickler::dumps(&g, proto).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back: String = serde_pickle::from_slice(&data, DeOptions::new()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back, s);
    }

    #[test]
    fn bytes_round_trip(b in prop::collection::vec(any::<u8>(), 0..70_000), proto in 3u8..=HIGHEST_PROTOCOL) {
        let mut g = Graph::default();
        g.root = g.add(Node::Bytes(b.clone()));
        let data = MiniPickler::dumps(&g, proto).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let value = serde_pickle::value_from_slice(&data, DeOptions::new()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(value, Value::Bytes(b));
    }

    /// minimal_twos_complement keeps the value and never leaves a redundant sign byte.
    #[test]
    fn minimal_twos_complement_is_minimal(i in any_int()) {
        let le = i.to_le_bytes();
        let m = pickle_wire::minimal_twos_complement(&le);
        let negative = i < 0;
        let mut wide = [if negative { 0xff } else { 0 }; 16];
        wide[..m.len()].copy_from_slice(m);
        prop_assert_eq!(i128::from_le_bytes(wide), i);
        if let [.., before, last] = m {
            prop_assert!(!(*last == 0 && before & 0x80 == 0), "redundant 0x00 in {:?}", m);
            prop_assert!(!(*last == 0xff && before & 0x80 != 0), "redundant 0xff in {:?}", m);
        }
        prop_assert_eq!(m.is_empty(), i == 0);
    }
}
