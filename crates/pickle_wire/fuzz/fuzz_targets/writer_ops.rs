//! Drive the Writer with arbitrary sequences of its operations, in any order (the stream need not
//! be a loadable pickle) and check what must hold whatever the caller does:
//! - no panic, and every result is either written or a documented `WireError`;
//! - the output is a sequence of well-formed opcodes ending in STOP;
//! - framing (protocol 4+) is transparent: removing every FRAME header gives exactly the stream
//!   written with framing off, each frame ends on an opcode boundary, none is under 4 bytes, and
//!   `opcode_boundary` reports a commit exactly when the open frame reached the target size.
#![no_main]

#[path = "../../tests/common/mod.rs"]
mod common;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use pickle_wire::{opcodes as op, Payload, Writer, FRAME_SIZE_TARGET, HIGHEST_PROTOCOL};

#[derive(Arbitrary, Debug, Clone)]
enum Op {
    Boundary,
    None,
    Bool(bool),
    Int(i64),
    Long(Vec<u8>),
    LongText(u64),
    BinFloat(f64),
    FloatText(u16),
    Unicode(String),
    UnicodeText(Vec<u32>),
    Bytes(Vec<u8>),
    /// A payload of `len % 200_000` bytes, to cross the 64 KiB frame target cheaply.
    BigBytes(u8, u32),
    ByteArray(Vec<u8>),
    NextBuffer(bool),
    EmptyTuple,
    EmptyList,
    EmptyDict,
    Mark,
    TupleEnd(u8),
    Discard(u8, bool),
    MemoPut(u32),
    MemoGet(u32),
    Global(String, String),
    Ext(u32),
    PersId(String),
    Raw(u8),
}

#[derive(Arbitrary, Debug)]
struct Input {
    proto: u8,
    ops: Vec<Op>,
}

/// Apply one op. Ops the protocol cannot carry are skipped (the pickler never asks for them).
fn apply(w: &mut Writer, o: &Op, framed: bool) {
    let proto = w.protocol();
    match o {
        Op::Boundary => {}
        Op::None => w.none(),
        Op::Bool(b) => w.bool(*b),
        Op::Int(i) => w.int(*i),
        Op::Long(le) if proto >= 2 => w.long_le_bytes(pickle_wire::minimal_twos_complement(le)),
        Op::LongText(n) => w.long_text(n.to_string().as_bytes()),
        Op::BinFloat(f) if proto >= 1 => w.binfloat(*f),
        Op::FloatText(n) => w.float_text(format!("{n}.5").as_bytes()),
        Op::Unicode(s) if proto >= 1 => w.unicode(s.as_bytes()).expect("small str always fits"),
        Op::UnicodeText(cps) => w.unicode_text(cps.iter().map(|c| c % 0x11_0000)),
        Op::Bytes(b) if proto >= 3 => w.bytes(b).expect("small bytes always fit"),
        Op::BigBytes(fill, len) if proto >= 3 => {
            let data = vec![*fill; (*len % 200_000) as usize];
            // Bypass exactly when framing is on and the payload reaches the frame target.
            let bypass = w.bytes_header(data.len()).expect("fits") == Payload::Bypass;
            assert_eq!(
                bypass,
                framed && proto >= 4 && data.len() >= FRAME_SIZE_TARGET
            );
            w.payload(&data);
        }
        Op::ByteArray(b) if proto >= 5 => w.bytearray(b),
        Op::NextBuffer(ro) if proto >= 5 => w.next_buffer(*ro),
        Op::EmptyTuple => w.empty_tuple(),
        Op::EmptyList => w.empty_list(),
        Op::EmptyDict => w.empty_dict(),
        Op::Mark => w.op(op::MARK),
        Op::TupleEnd(n) => w.tuple_end(usize::from(*n % 6).max(1)),
        Op::Discard(n, mark) => w.discard_tuple_items(usize::from(*n % 6), *mark),
        Op::MemoPut(i) => w.memo_put(*i as usize).expect("u32 index fits"),
        Op::MemoGet(i) => w.memo_get(*i as usize).expect("u32 index fits"),
        Op::Global(m, n) if !m.contains('\n') && !n.contains('\n') => {
            w.global_text(m.as_bytes(), n.as_bytes())
        }
        Op::Ext(code) if proto >= 2 => w.ext(code % 0x7fff_ffff + 1),
        Op::PersId(s) if s.is_ascii() && !s.contains('\n') => w.persid_text(s.as_bytes()),
        // Opcodes without arguments, as a pickler writes for REDUCE, BUILD, APPENDS, ...
        Op::Raw(b) => {
            const NO_ARG: [u8; 14] = [
                op::REDUCE,
                op::BUILD,
                op::APPEND,
                op::APPENDS,
                op::SETITEM,
                op::SETITEMS,
                op::POP,
                op::POP_MARK,
                op::DUP,
                op::TUPLE,
                op::EMPTY_SET,
                op::ADDITEMS,
                op::FROZENSET,
                op::STACK_GLOBAL,
            ];
            let code = NO_ARG[usize::from(*b) % NO_ARG.len()];
            if code != op::STACK_GLOBAL
                && !matches!(code, op::EMPTY_SET | op::ADDITEMS | op::FROZENSET)
                || proto >= 4
            {
                w.op(code);
            }
        }
        _ => {}
    }
}

fuzz_target!(|input: Input| {
    let proto = input.proto % (HIGHEST_PROTOCOL + 1);

    // The stream as the pickler writes it: framed from protocol 4.
    let mut framed = Writer::new(proto);
    framed.start();
    let mut flushed = Vec::new(); // what a file-backed pickler would have written out so far
    for o in &input.ops {
        let open_frame = framed.len();
        if framed.opcode_boundary() {
            assert!(proto >= 4, "frame committed below protocol 4");
            assert!(
                open_frame >= 9 + FRAME_SIZE_TARGET,
                "committed a frame under the target"
            );
            flushed.extend_from_slice(framed.as_bytes());
            framed.clear();
        }
        apply(&mut framed, o, true);
    }
    framed.finish();
    flushed.extend_from_slice(framed.as_bytes());

    // The same operations with framing never turned on.
    let mut plain = Writer::new(proto);
    if proto >= 2 {
        plain.write(&[op::PROTO, proto]);
    }
    for o in &input.ops {
        assert!(!plain.opcode_boundary());
        apply(&mut plain, o, false);
    }
    plain.op(op::STOP);
    let plain = plain.into_bytes();

    if let Err(e) = common::decode(&flushed) {
        panic!("undecodable stream: {e}");
    }
    if proto >= 4 {
        common::check_frames(&flushed).unwrap_or_else(|e| panic!("bad framing: {e}"));
        let stripped = common::strip_frames(&flushed).unwrap_or_else(|e| panic!("{e}"));
        assert!(stripped == plain, "framing changed more than FRAME headers");
    } else {
        assert!(!common::decode(&flushed)
            .unwrap_or_default()
            .iter()
            .any(|o| o.code == op::FRAME));
        assert!(
            flushed == plain,
            "protocol {proto} stream depends on framing state"
        );
    }
});
