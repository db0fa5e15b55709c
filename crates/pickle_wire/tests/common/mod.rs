//! Shared by the integration tests and the fuzz target: an object graph of Python built-ins, a
//! miniature of `_pickle.c`'s save path for it (the decisions the pyo3 crate makes, so the tests
//! exercise the [`Writer`] the way the real pickler drives it), and an opcode walker that
//! disassembles a stream and checks its framing.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::fmt::Write as _;

use pickle_wire::opcodes as op;
use pickle_wire::{minimal_twos_complement, WireError, Writer, BATCHSIZE};

/// One object of a graph. Containers name their items by node index, so a node reached twice is
/// one shared object (the pickler's memo sees it again) and a container may reach itself.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    None,
    Bool(bool),
    /// An int that fits in 64 bits.
    Int(i64),
    /// A larger int: little-endian two's complement, and its decimal text.
    BigInt {
        le: Vec<u8>,
        decimal: String,
    },
    /// A float and its Python `repr` (protocol 0 writes the repr).
    Float {
        value: f64,
        repr: String,
    },
    /// A str as UTF-8 with surrogates passed through (Python's "surrogatepass").
    Str(Vec<u8>),
    Bytes(Vec<u8>),
    ByteArray(Vec<u8>),
    List(Vec<usize>),
    Tuple(Vec<usize>),
    /// Key and value node pairs, in insertion order.
    Dict(Vec<(usize, usize)>),
    /// Elements in the set's iteration order.
    Set(Vec<usize>),
    FrozenSet(Vec<usize>),
}

/// A graph of nodes with a root.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub root: usize,
}

impl Graph {
    pub fn add(&mut self, node: Node) -> usize {
        self.nodes.push(node);
        self.nodes.len() - 1
    }
}

/// Whether the node is one the pickler memoizes (atoms and the empty tuple are not).
fn memoized(node: &Node) -> bool {
    !matches!(node, Node::None | Node::Bool(_) | Node::Int(_) | Node::BigInt { .. } | Node::Float { .. })
        && *node != Node::Tuple(Vec::new())
}

/// The code points of "surrogatepass" UTF-8 (which `str::from_utf8` refuses when it holds
/// surrogates). The input is well formed: it comes from Python's encoder.
pub fn code_points(utf8: &[u8]) -> Vec<u32> {
    let mut out = Vec::with_capacity(utf8.len());
    let mut i = 0;
    while i < utf8.len() {
        let b = u32::from(utf8[i]);
        let (len, init) = match b {
            0x00..=0x7f => (1, b),
            0xc0..=0xdf => (2, b & 0x1f),
            0xe0..=0xef => (3, b & 0x0f),
            _ => (4, b & 0x07),
        };
        let mut cp = init;
        for k in 1..len {
            cp = (cp << 6) | (u32::from(utf8[i + k]) & 0x3f);
        }
        out.push(cp);
        i += len;
    }
    out
}

/// Drives a [`Writer`] over a [`Graph`] as `_pickle.c` saves built-ins: atoms unmemoized, memo
/// lookups before everything else, batching by [`BATCHSIZE`], the recursive-tuple fix-up, and an
/// opcode boundary (frame commit point) at the start of every save.
pub struct MiniPickler<'g> {
    pub w: Writer,
    graph: &'g Graph,
    memo: HashMap<usize, usize>,
}

impl<'g> MiniPickler<'g> {
    pub fn new(graph: &'g Graph, proto: u8) -> Self {
        MiniPickler { w: Writer::new(proto), graph, memo: HashMap::new() }
    }

    /// The whole stream for the graph's root.
    pub fn dumps(graph: &'g Graph, proto: u8) -> Result<Vec<u8>, WireError> {
        let mut p = MiniPickler::new(graph, proto);
        p.w.start();
        p.save(graph.root)?;
        p.w.finish();
        Ok(p.w.into_bytes())
    }

    fn proto(&self) -> u8 {
        self.w.protocol()
    }

    fn memoize(&mut self, id: usize) -> Result<(), WireError> {
        let index = self.memo.len();
        self.memo.insert(id, index);
        self.w.memo_put(index)
    }

    pub fn save(&mut self, id: usize) -> Result<(), WireError> {
        self.w.opcode_boundary();
        let graph = self.graph;
        let node = &graph.nodes[id];
        match node {
            Node::None => {
                self.w.none();
                return Ok(());
            }
            Node::Bool(b) => {
                self.w.bool(*b);
                return Ok(());
            }
            Node::Int(i) => {
                self.w.int(*i);
                return Ok(());
            }
            Node::BigInt { le, decimal } => {
                if self.proto() >= 2 {
                    self.w.long_le_bytes(minimal_twos_complement(le)).unwrap_or_else(|e| panic!("{e}"));
                } else {
                    self.w.long_text(decimal.as_bytes());
                }
                return Ok(());
            }
            Node::Float { value, repr } => {
                if self.proto() >= 1 {
                    self.w.binfloat(*value);
                } else {
                    self.w.float_text(repr.as_bytes());
                }
                return Ok(());
            }
            _ => {}
        }
        if let Some(&index) = self.memo.get(&id) {
            return self.w.memo_get(index);
        }
        match node {
            Node::Str(utf8) => {
                if self.proto() >= 1 {
                    self.w.unicode(utf8)?;
                } else {
                    self.w.unicode_text(code_points(utf8).into_iter());
                }
                self.memoize(id)
            }
            Node::Bytes(data) => {
                assert!(self.proto() >= 3, "bytes reduce through _codecs below protocol 3");
                self.w.bytes(data)?;
                self.memoize(id)
            }
            Node::ByteArray(data) => {
                assert!(self.proto() >= 5, "bytearray reduces below protocol 5");
                self.w.bytearray(data);
                self.memoize(id)
            }
            Node::Tuple(items) => {
                if items.is_empty() {
                    self.w.empty_tuple();
                    return Ok(());
                }
                let used_mark = self.w.tuple_uses_mark(items.len());
                if used_mark {
                    self.w.op(op::MARK);
                }
                for &item in items {
                    self.save(item)?;
                }
                if let Some(&index) = self.memo.get(&id) {
                    // The tuple was reached through its own items and is memoized already.
                    self.w.discard_tuple_items(items.len(), used_mark);
                    return self.w.memo_get(index);
                }
                self.w.tuple_end(items.len());
                self.memoize(id)
            }
            Node::List(items) => {
                self.w.empty_list();
                self.memoize(id)?;
                self.batched(items, op::APPEND, op::APPENDS, |p, &item| p.save(item))
            }
            Node::Dict(items) => {
                self.w.empty_dict();
                self.memoize(id)?;
                self.batched(items, op::SETITEM, op::SETITEMS, |p, &(k, v)| {
                    p.save(k)?;
                    p.save(v)
                })
            }
            Node::Set(items) => {
                assert!(self.proto() >= 4, "sets reduce below protocol 4");
                self.w.op(op::EMPTY_SET);
                self.memoize(id)?;
                for batch in items.chunks(BATCHSIZE) {
                    self.w.op(op::MARK);
                    for &item in batch {
                        self.save(item)?;
                    }
                    self.w.op(op::ADDITEMS);
                }
                Ok(())
            }
            Node::FrozenSet(items) => {
                assert!(self.proto() >= 4, "frozensets reduce below protocol 4");
                self.w.op(op::MARK);
                for &item in items {
                    self.save(item)?;
                }
                if let Some(&index) = self.memo.get(&id) {
                    self.w.op(op::POP_MARK);
                    return self.w.memo_get(index);
                }
                self.w.op(op::FROZENSET);
                self.memoize(id)
            }
            _ => unreachable!("atoms returned above"),
        }
    }

    /// List and dict items: one opcode per item in protocol 0; in binary protocols a single item
    /// gets the one-item opcode, more go in MARK ... batches of at most BATCHSIZE.
    fn batched<T>(
        &mut self,
        items: &[T],
        single: u8,
        batch_op: u8,
        mut save: impl FnMut(&mut Self, &T) -> Result<(), WireError>,
    ) -> Result<(), WireError> {
        if !self.w.is_binary() || items.len() == 1 {
            for item in items {
                save(self, item)?;
                self.w.op(single);
            }
            return Ok(());
        }
        for batch in items.chunks(BATCHSIZE) {
            self.w.op(op::MARK);
            for item in batch {
                save(self, item)?;
            }
            self.w.op(batch_op);
        }
        Ok(())
    }
}

/// Whether the graph holds something that the miniature cannot write in `proto` (the real pickler
/// reduces it through a global call instead).
pub fn needs_protocol(graph: &Graph) -> u8 {
    graph
        .nodes
        .iter()
        .map(|n| match n {
            Node::Bytes(_) => 3,
            Node::Set(_) | Node::FrozenSet(_) => 4,
            Node::ByteArray(_) => 5,
            _ => 0,
        })
        .max()
        .unwrap_or(0)
}

// ----- comparing with what serde-pickle reads -----------------------------------------------

use serde_pickle::{HashableValue, Value};

/// A value both sides can be brought to for comparison (serde-pickle sorts dicts and sets, splits
/// ints into i64 and bigint, and clones shared items).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Norm {
    None,
    Bool(bool),
    Int(String),
    Float(u64),
    Bytes(Vec<u8>),
    Str(String),
    List(Vec<Norm>),
    Tuple(Vec<Norm>),
    Set(Vec<Norm>),
    FrozenSet(Vec<Norm>),
    Dict(Vec<(Norm, Norm)>),
}

pub fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

pub fn from_serde(v: &Value) -> Norm {
    match v {
        Value::None => Norm::None,
        Value::Bool(b) => Norm::Bool(*b),
        Value::I64(i) => Norm::Int(i.to_string()),
        Value::Int(b) => Norm::Int(b.to_string()),
        Value::F64(f) => Norm::Float(f.to_bits()),
        Value::Bytes(b) => Norm::Bytes(b.clone()),
        Value::String(s) => Norm::Str(s.clone()),
        Value::List(items) => Norm::List(items.iter().map(from_serde).collect()),
        Value::Tuple(items) => Norm::Tuple(items.iter().map(from_serde).collect()),
        Value::Set(items) => Norm::Set(sorted(items.iter().map(from_hashable).collect())),
        Value::FrozenSet(items) => Norm::FrozenSet(sorted(items.iter().map(from_hashable).collect())),
        Value::Dict(items) => {
            Norm::Dict(sorted(items.iter().map(|(k, v)| (from_hashable(k), from_serde(v))).collect()))
        }
    }
}

pub fn from_hashable(v: &HashableValue) -> Norm {
    from_serde(&v.clone().into_value())
}

/// What a graph should read back as in `proto` (protocol 0 floats travel as text).
pub fn expected(graph: &Graph, id: usize, proto: u8) -> Norm {
    let e = |i: &usize| expected(graph, *i, proto);
    match &graph.nodes[id] {
        Node::None => Norm::None,
        Node::Bool(b) => Norm::Bool(*b),
        Node::Int(i) => Norm::Int(i.to_string()),
        Node::BigInt { decimal, .. } => Norm::Int(decimal.clone()),
        Node::Float { value, repr } => {
            Norm::Float(if proto == 0 { repr.parse::<f64>().expect("repr").to_bits() } else { value.to_bits() })
        }
        Node::Str(s) => Norm::Str(String::from_utf8(s.clone()).expect("no surrogates here")),
        Node::Bytes(b) | Node::ByteArray(b) => Norm::Bytes(b.clone()),
        Node::List(items) => Norm::List(items.iter().map(e).collect()),
        Node::Tuple(items) => Norm::Tuple(items.iter().map(e).collect()),
        Node::Set(items) => Norm::Set(sorted(items.iter().map(e).collect())),
        Node::FrozenSet(items) => Norm::FrozenSet(sorted(items.iter().map(e).collect())),
        Node::Dict(items) => Norm::Dict(sorted(items.iter().map(|(k, v)| (e(k), e(v))).collect())),
    }
}

// ----- reading streams back --------------------------------------------------------------------

/// How an opcode's argument is laid out.
#[derive(Clone, Copy)]
enum Arg {
    None,
    U1,
    U2,
    I4,
    U4,
    U8,
    F8,
    Line,
    TwoLines,
    Len1,
    Len4,
    Len8,
}

fn describe(opcode: u8) -> Option<(&'static str, Arg)> {
    use Arg::*;
    Some(match opcode {
        op::MARK => ("MARK", None),
        op::STOP => ("STOP", None),
        op::POP => ("POP", None),
        op::POP_MARK => ("POP_MARK", None),
        op::DUP => ("DUP", None),
        op::FLOAT => ("FLOAT", Line),
        op::INT => ("INT", Line),
        op::BININT => ("BININT", I4),
        op::BININT1 => ("BININT1", U1),
        op::LONG => ("LONG", Line),
        op::BININT2 => ("BININT2", U2),
        op::NONE => ("NONE", None),
        op::PERSID => ("PERSID", Line),
        op::BINPERSID => ("BINPERSID", None),
        op::REDUCE => ("REDUCE", None),
        op::STRING => ("STRING", Line),
        op::BINSTRING => ("BINSTRING", Len4),
        op::SHORT_BINSTRING => ("SHORT_BINSTRING", Len1),
        op::UNICODE => ("UNICODE", Line),
        op::BINUNICODE => ("BINUNICODE", Len4),
        op::APPEND => ("APPEND", None),
        op::BUILD => ("BUILD", None),
        op::GLOBAL => ("GLOBAL", TwoLines),
        op::DICT => ("DICT", None),
        op::EMPTY_DICT => ("EMPTY_DICT", None),
        op::APPENDS => ("APPENDS", None),
        op::GET => ("GET", Line),
        op::BINGET => ("BINGET", U1),
        op::INST => ("INST", TwoLines),
        op::LONG_BINGET => ("LONG_BINGET", U4),
        op::LIST => ("LIST", None),
        op::EMPTY_LIST => ("EMPTY_LIST", None),
        op::OBJ => ("OBJ", None),
        op::PUT => ("PUT", Line),
        op::BINPUT => ("BINPUT", U1),
        op::LONG_BINPUT => ("LONG_BINPUT", U4),
        op::SETITEM => ("SETITEM", None),
        op::TUPLE => ("TUPLE", None),
        op::EMPTY_TUPLE => ("EMPTY_TUPLE", None),
        op::SETITEMS => ("SETITEMS", None),
        op::BINFLOAT => ("BINFLOAT", F8),
        op::PROTO => ("PROTO", U1),
        op::NEWOBJ => ("NEWOBJ", None),
        op::EXT1 => ("EXT1", U1),
        op::EXT2 => ("EXT2", U2),
        op::EXT4 => ("EXT4", U4),
        op::TUPLE1 => ("TUPLE1", None),
        op::TUPLE2 => ("TUPLE2", None),
        op::TUPLE3 => ("TUPLE3", None),
        op::NEWTRUE => ("NEWTRUE", None),
        op::NEWFALSE => ("NEWFALSE", None),
        op::LONG1 => ("LONG1", Len1),
        op::LONG4 => ("LONG4", Len4),
        op::BINBYTES => ("BINBYTES", Len4),
        op::SHORT_BINBYTES => ("SHORT_BINBYTES", Len1),
        op::SHORT_BINUNICODE => ("SHORT_BINUNICODE", Len1),
        op::BINUNICODE8 => ("BINUNICODE8", Len8),
        op::BINBYTES8 => ("BINBYTES8", Len8),
        op::EMPTY_SET => ("EMPTY_SET", None),
        op::ADDITEMS => ("ADDITEMS", None),
        op::FROZENSET => ("FROZENSET", None),
        op::NEWOBJ_EX => ("NEWOBJ_EX", None),
        op::STACK_GLOBAL => ("STACK_GLOBAL", None),
        op::MEMOIZE => ("MEMOIZE", None),
        op::FRAME => ("FRAME", U8),
        op::BYTEARRAY8 => ("BYTEARRAY8", Len8),
        op::NEXT_BUFFER => ("NEXT_BUFFER", None),
        op::READONLY_BUFFER => ("READONLY_BUFFER", None),
        _ => return Option::None,
    })
}

/// One decoded opcode.
#[derive(Debug, Clone)]
pub struct Op {
    pub pos: usize,
    pub code: u8,
    pub name: &'static str,
    /// The argument, rendered for a listing.
    pub arg: String,
    /// For FRAME: the announced frame length.
    pub frame_len: Option<u64>,
}

fn take<'a>(data: &'a [u8], pos: &mut usize, n: usize) -> Result<&'a [u8], String> {
    let end = pos.checked_add(n).filter(|&e| e <= data.len()).ok_or_else(|| format!("truncated at {}", *pos))?;
    let out = &data[*pos..end];
    *pos = end;
    Ok(out)
}

fn line<'a>(data: &'a [u8], pos: &mut usize) -> Result<&'a [u8], String> {
    let rest = &data[*pos..];
    let n = rest.iter().position(|&b| b == b'\n').ok_or_else(|| format!("unterminated line at {}", *pos))?;
    *pos += n + 1;
    Ok(&rest[..n])
}

fn render(bytes: &[u8], text: bool) -> String {
    const SHOW: usize = 24;
    let shown = &bytes[..bytes.len().min(SHOW)];
    let more = if bytes.len() > SHOW { format!("... ({} bytes)", bytes.len()) } else { String::new() };
    if text {
        format!("{:?}{more}", String::from_utf8_lossy(shown))
    } else {
        let hex: String = shown.iter().map(|b| format!("{b:02x}")).collect();
        format!("0x{hex}{more}")
    }
}

fn u64_le(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a[..b.len()].copy_from_slice(b);
    u64::from_le_bytes(a)
}

/// Decode the opcodes of a stream up to and including STOP.
pub fn decode(data: &[u8]) -> Result<Vec<Op>, String> {
    let mut ops = Vec::new();
    let mut pos = 0;
    loop {
        let start = pos;
        let code = *take(data, &mut pos, 1)?.first().ok_or("empty")?;
        let (name, kind) = describe(code).ok_or_else(|| format!("unknown opcode 0x{code:02x} at {start}"))?;
        let mut frame_len = None;
        let arg = match kind {
            Arg::None => String::new(),
            Arg::U1 => take(data, &mut pos, 1)?[0].to_string(),
            Arg::U2 => u64_le(take(data, &mut pos, 2)?).to_string(),
            Arg::I4 => (u64_le(take(data, &mut pos, 4)?) as u32 as i32).to_string(),
            Arg::U4 => u64_le(take(data, &mut pos, 4)?).to_string(),
            Arg::U8 => {
                let n = u64_le(take(data, &mut pos, 8)?);
                frame_len = Some(n);
                n.to_string()
            }
            Arg::F8 => {
                let b: [u8; 8] = take(data, &mut pos, 8)?.try_into().map_err(|_| "float")?;
                format!("{:?}", f64::from_be_bytes(b))
            }
            Arg::Line => render(line(data, &mut pos)?, true),
            Arg::TwoLines => {
                let a = render(line(data, &mut pos)?, true);
                format!("{a} {}", render(line(data, &mut pos)?, true))
            }
            Arg::Len1 | Arg::Len4 | Arg::Len8 => {
                let width = match kind {
                    Arg::Len1 => 1,
                    Arg::Len4 => 4,
                    _ => 8,
                };
                let n = usize::try_from(u64_le(take(data, &mut pos, width)?)).map_err(|_| "length")?;
                let payload = take(data, &mut pos, n)?;
                let text = matches!(code, op::BINUNICODE | op::SHORT_BINUNICODE | op::BINUNICODE8);
                if matches!(code, op::LONG1 | op::LONG4) {
                    format!("{n} bytes {}", render(payload, false))
                } else {
                    render(payload, text)
                }
            }
        };
        ops.push(Op { pos: start, code, name, arg, frame_len });
        if code == op::STOP {
            if pos != data.len() {
                return Err(format!("{} bytes after STOP", data.len() - pos));
            }
            return Ok(ops);
        }
    }
}

/// A `pickletools.dis`-like listing, at most `max_lines` opcodes (the rest are counted).
pub fn disassemble(data: &[u8], max_lines: usize) -> String {
    let ops = match decode(data) {
        Ok(ops) => ops,
        Err(e) => return format!("undecodable: {e}\n"),
    };
    let mut out = String::new();
    for o in ops.iter().take(max_lines) {
        let line = format!("{:>6}: {:<16} {}", o.pos, o.name, o.arg);
        let _ = writeln!(out, "{}", line.trim_end());
    }
    if ops.len() > max_lines {
        let _ = writeln!(out, "   ... {} more opcodes", ops.len() - max_lines);
    }
    out
}

/// Framing as `_pickle.c` writes it: every FRAME announces exactly the bytes up to the next FRAME,
/// the next large unframed payload, or the end, and always ends on an opcode boundary; no frame is
/// shorter than 4 bytes; the PROTO opcode is never inside a frame. Large payloads outside frames
/// are allowed (they bypass framing).
pub fn check_frames(data: &[u8]) -> Result<(), String> {
    let ops = decode(data)?;
    let boundaries: Vec<usize> = ops.iter().map(|o| o.pos).chain(std::iter::once(data.len())).collect();
    for o in &ops {
        if let Some(n) = o.frame_len {
            let start = o.pos + 9;
            let end = start.checked_add(usize::try_from(n).map_err(|_| "frame length")?).ok_or("frame overflow")?;
            if end > data.len() {
                return Err(format!("frame at {} runs past the end", o.pos));
            }
            if !boundaries.contains(&end) {
                return Err(format!("frame at {} ends inside an opcode (at {end})", o.pos));
            }
            if n < 4 {
                return Err(format!("frame at {} holds {n} bytes: should have lost its header", o.pos));
            }
            if let Some(nested) = ops.iter().find(|x| x.pos > o.pos && x.pos < end && x.frame_len.is_some()) {
                return Err(format!("frame at {} contains another frame at {}", o.pos, nested.pos));
            }
        }
    }
    if ops.iter().skip(1).any(|o| o.code == op::PROTO) {
        return Err("PROTO after the first opcode".into());
    }
    Ok(())
}

/// The same stream with every FRAME header removed.
pub fn strip_frames(data: &[u8]) -> Result<Vec<u8>, String> {
    let ops = decode(data)?;
    let mut out = Vec::with_capacity(data.len());
    let mut last = 0;
    for o in ops.iter().filter(|o| o.frame_len.is_some()) {
        out.extend_from_slice(&data[last..o.pos]);
        last = o.pos + 9;
    }
    out.extend_from_slice(&data[last..]);
    Ok(out)
}

/// FNV-1a 64, as the fixture generator computes it for streams too large to store.
pub fn fnv1a64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}
