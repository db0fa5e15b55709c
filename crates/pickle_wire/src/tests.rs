use super::*;

fn stream(proto: u8, body: impl FnOnce(&mut Writer)) -> Vec<u8> {
    let mut w = Writer::new(proto);
    w.start();
    body(&mut w);
    w.finish();
    w.into_bytes()
}

#[test]
fn ints_match_cpython_encodings() {
    assert_eq!(stream(2, |w| w.int(-1)), b"\x80\x02J\xff\xff\xff\xff.");
    assert_eq!(stream(2, |w| w.int(255)), b"\x80\x02K\xff.");
    assert_eq!(stream(2, |w| w.int(1 << 31)), b"\x80\x02\x8a\x05\x00\x00\x00\x80\x00.");
    assert_eq!(stream(2, |w| w.int(-(1 << 31) - 1)), b"\x80\x02\x8a\x05\xff\xff\xff\x7f\xff.");
    assert_eq!(stream(1, |w| w.int(1 << 31)), b"L2147483648L\n.");
    assert_eq!(stream(0, |w| w.int(-5)), b"I-5\n.");
}

#[test]
fn minimal_twos_complement_strips_sign_bytes() {
    assert_eq!(minimal_twos_complement(&0i64.to_le_bytes()), b"");
    assert_eq!(minimal_twos_complement(&(-1i64).to_le_bytes()), b"\xff");
    assert_eq!(minimal_twos_complement(&128i64.to_le_bytes()), b"\x80\x00");
    assert_eq!(minimal_twos_complement(&(-128i64).to_le_bytes()), b"\x80");
    assert_eq!(minimal_twos_complement(&(-129i64).to_le_bytes()), b"\x7f\xff");
}

#[test]
fn protocol0_unicode_escapes_like_pickle_c() {
    let s = "\r\0\x1a\\ \n\u{80}\u{100}\u{10000}";
    let out = stream(0, |w| w.unicode_text(s.chars().map(u32::from)));
    assert_eq!(out, b"V\\u000d\\u0000\\u001a\\u005c \\u000a\x80\\u0100\\U00010000\n.".to_vec());
}

#[test]
fn small_frames_lose_their_header() {
    assert_eq!(stream(4, |w| w.none()), b"\x80\x04N.");
    let out = stream(4, |w| w.int(300));
    assert_eq!(out, b"\x80\x04\x95\x04\x00\x00\x00\x00\x00\x00\x00M,\x01.");
}

#[test]
fn large_payloads_bypass_frames() {
    let big = vec![7u8; FRAME_SIZE_TARGET];
    let out = stream(4, |w| {
        w.int(300);
        w.bytes(&big).unwrap_or_else(|e| panic!("{e}"));
    });
    // PROTO, BININT2 (its 3-byte frame is too small to keep a header), BINBYTES + data
    // unframed, then STOP (too small for a frame too), as `_pickle.c` writes it.
    assert_eq!(&out[..5], b"\x80\x04M,\x01");
    assert_eq!(out[5], opcodes::BINBYTES);
    assert_eq!(out.last(), Some(&opcodes::STOP));
    assert_eq!(out.len(), 5 + 5 + big.len() + 1);
}

#[test]
fn serde_pickle_reads_a_list_of_ints() {
    for proto in 2..=HIGHEST_PROTOCOL {
        let out = stream(proto, |w| {
            w.empty_list();
            w.memo_put(0).unwrap_or_else(|e| panic!("{e}"));
            w.op(opcodes::MARK);
            for i in [1i64, -2, 70000, 1 << 40] {
                w.int(i);
            }
            w.op(opcodes::APPENDS);
        });
        let value: Vec<i64> = serde_pickle::from_slice(&out, Default::default()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(value, vec![1, -2, 70000, 1 << 40], "protocol {proto}");
    }
}

// Expected bytes below are what CPython 3.11 writes for the same decision (pickle.dumps with a
// copyreg extension, a persistent_id, a PickleBuffer with a buffer_callback, ...), or the
// encodings pickletools documents where no public call isolates them.

fn body(proto: u8, f: impl FnOnce(&mut Writer)) -> Vec<u8> {
    let mut w = Writer::new(proto);
    f(&mut w);
    w.into_bytes()
}

fn ok<T>(r: Result<T, WireError>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn proto_header_only_from_protocol_2() {
    assert_eq!(stream(0, |w| w.none()), b"N.");
    assert_eq!(stream(1, |w| w.none()), b"N.");
    assert_eq!(stream(2, |w| w.none()), b"\x80\x02N.");
    assert_eq!(stream(3, |w| w.none()), b"\x80\x03N.");
    assert_eq!(stream(5, |w| w.none()), b"\x80\x05N.");
    assert_eq!(Writer::new(9).protocol(), HIGHEST_PROTOCOL);
}

#[test]
fn bools_per_protocol() {
    assert_eq!(stream(0, |w| w.bool(true)), b"I01\n.");
    assert_eq!(stream(1, |w| w.bool(false)), b"I00\n.");
    assert_eq!(stream(2, |w| w.bool(true)), b"\x80\x02\x88.");
    assert_eq!(stream(2, |w| w.bool(false)), b"\x80\x02\x89.");
}

#[test]
fn int_boundaries() {
    assert_eq!(body(1, |w| w.int(0)), b"K\x00");
    assert_eq!(body(1, |w| w.int(256)), b"M\x00\x01");
    assert_eq!(body(1, |w| w.int(65535)), b"M\xff\xff");
    assert_eq!(body(1, |w| w.int(65536)), b"J\x00\x00\x01\x00");
    assert_eq!(body(1, |w| w.int(i64::from(i32::MIN))), b"J\x00\x00\x00\x80");
    assert_eq!(body(0, |w| w.int(i64::from(i32::MAX))), b"I2147483647\n");
    assert_eq!(body(0, |w| w.int(i64::MIN)), b"L-9223372036854775808L\n");
    assert_eq!(body(2, |w| w.int(i64::MIN)), b"\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80");
    assert_eq!(body(2, |w| w.int(i64::MAX)), b"\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x7f");
    // LONG4 from 256 bytes of payload on.
    let le = vec![0x11u8; 256];
    let out = body(2, |w| w.long_le_bytes(&le).unwrap_or_else(|e| panic!("{e}")));
    assert_eq!(&out[..5], b"\x8b\x00\x01\x00\x00");
    assert_eq!(out.len(), 5 + 256);
    assert_eq!(&body(2, |w| w.long_le_bytes(&le[..255]).unwrap_or_else(|e| panic!("{e}")))[..2], b"\x8a\xff");
}

#[test]
fn floats() {
    assert_eq!(body(1, |w| w.binfloat(1.5)), b"G?\xf8\x00\x00\x00\x00\x00\x00");
    assert_eq!(body(1, |w| w.binfloat(-0.0)), b"G\x80\x00\x00\x00\x00\x00\x00\x00");
    assert_eq!(body(0, |w| w.float_text(b"1e+16")), b"F1e+16\n");
}

#[test]
fn str_headers_choose_by_length_and_protocol() {
    assert_eq!(body(4, |w| ok(w.unicode(b"ab"))), b"\x8c\x02ab");
    assert_eq!(body(3, |w| ok(w.unicode(b"ab"))), b"X\x02\x00\x00\x00ab");
    assert_eq!(&body(4, |w| ok(w.unicode(&[b'a'; 256])))[..5], b"X\x00\x01\x00\x00");
    // Headers only: no 4 GiB allocation needed to check the large cases.
    let huge = 1usize << 32;
    assert_eq!(Writer::new(3).unicode_header(huge), Err(WireError::StrTooLarge));
    assert_eq!(Writer::new(3).unicode_header(huge - 1).map(|_| ()), Ok(()));
    let mut w = Writer::new(4);
    assert_eq!(w.unicode_header(huge), Ok(Payload::Inline), "framing is off until start()");
    assert_eq!(w.as_bytes(), b"\x8d\x00\x00\x00\x00\x01\x00\x00\x00");
}

#[test]
fn bytes_headers_choose_by_length_and_protocol() {
    assert_eq!(body(3, |w| ok(w.bytes(b""))), b"C\x00");
    assert_eq!(body(3, |w| ok(w.bytes(&[1; 255])))[..2], *b"C\xff");
    assert_eq!(body(3, |w| ok(w.bytes(&[1; 256])))[..5], *b"B\x00\x01\x00\x00");
    let huge = 1usize << 32;
    assert_eq!(Writer::new(3).bytes_header(huge), Err(WireError::BytesTooLarge));
    let mut w = Writer::new(4);
    assert_eq!(w.bytes_header(huge), Ok(Payload::Inline));
    assert_eq!(w.as_bytes(), b"\x8e\x00\x00\x00\x00\x01\x00\x00\x00");
    assert_eq!(body(5, |w| w.bytearray(b"ab")), b"\x96\x02\x00\x00\x00\x00\x00\x00\x00ab");
}

#[test]
fn memo_indices_per_protocol() {
    assert_eq!(body(0, |w| ok(w.memo_put(256))), b"p256\n");
    assert_eq!(body(0, |w| ok(w.memo_get(0))), b"g0\n");
    assert_eq!(body(1, |w| ok(w.memo_put(255))), b"q\xff");
    assert_eq!(body(1, |w| ok(w.memo_put(256))), b"r\x00\x01\x00\x00");
    assert_eq!(body(3, |w| ok(w.memo_get(255))), b"h\xff");
    assert_eq!(body(3, |w| ok(w.memo_get(256))), b"j\x00\x01\x00\x00");
    assert_eq!(body(3, |w| ok(w.memo_get(0xffff_ffff))), b"j\xff\xff\xff\xff");
    assert_eq!(body(4, |w| ok(w.memo_put(100_000))), b"\x94");
    assert_eq!(body(4, |w| ok(w.memo_get(100_000))), b"j\xa0\x86\x01\x00");
    assert_eq!(Writer::new(3).memo_put(1 << 32), Err(WireError::MemoTooLarge));
    assert_eq!(Writer::new(5).memo_get(1 << 32), Err(WireError::MemoTooLarge));
    assert_eq!(Writer::new(5).memo_put(1 << 32), Ok(()), "MEMOIZE has no index to overflow");
}

#[test]
fn globals_extensions_persistent_ids_buffers() {
    assert_eq!(
        stream(0, |w| {
            w.global_text(b"collections", b"OrderedDict");
            ok(w.memo_put(0));
        }),
        b"ccollections\nOrderedDict\np0\n."
    );
    for (code, expected) in [
        (1u32, &b"\x80\x02\x82\x01."[..]),
        (255, b"\x80\x02\x82\xff."),
        (256, b"\x80\x02\x83\x00\x01."),
        (65535, b"\x80\x02\x83\xff\xff."),
        (65536, b"\x80\x02\x84\x00\x00\x01\x00."),
        (0x7fff_ffff, b"\x80\x02\x84\xff\xff\xff\x7f."),
    ] {
        assert_eq!(stream(2, |w| w.ext(code)), expected, "code {code}");
    }
    assert_eq!(stream(0, |w| w.persid_text(b"pid")), b"Ppid\n.");
    assert_eq!(stream(5, |w| w.next_buffer(true)), b"\x80\x05\x97\x98.");
    assert_eq!(stream(5, |w| w.next_buffer(false)), b"\x80\x05\x97.");
}

#[test]
fn empty_containers_and_tuples() {
    assert_eq!(body(0, |w| w.empty_tuple()), b"(t");
    assert_eq!(body(0, |w| w.empty_list()), b"(l");
    assert_eq!(body(0, |w| w.empty_dict()), b"(d");
    assert_eq!(body(1, |w| w.empty_tuple()), b")");
    assert_eq!(body(1, |w| w.empty_list()), b"]");
    assert_eq!(body(1, |w| w.empty_dict()), b"}");
    for proto in 0..=HIGHEST_PROTOCOL {
        let w = Writer::new(proto);
        for len in 1..=5 {
            assert_eq!(w.tuple_uses_mark(len), proto < 2 || len > 3, "proto {proto} len {len}");
        }
    }
    assert_eq!(body(2, |w| (1..=4).for_each(|n| w.tuple_end(n))), b"\x85\x86\x87t");
    assert_eq!(body(1, |w| w.tuple_end(2)), b"t");
    // A tuple found in the memo after its items: the items are dropped.
    assert_eq!(body(2, |w| w.discard_tuple_items(2, false)), b"00");
    assert_eq!(body(2, |w| w.discard_tuple_items(4, true)), b"1");
    assert_eq!(body(0, |w| w.discard_tuple_items(2, true)), b"000");
}

#[test]
fn frames_commit_at_the_target_and_report_it() {
    let mut w = Writer::new(4);
    w.start();
    let chunk = [b'K', 1];
    let mut written = 0;
    let mut commits = 0;
    while written < FRAME_SIZE_TARGET + 10 {
        if w.opcode_boundary() {
            commits += 1;
            // A committed frame sits at the end of the buffer, header filled in.
            assert_eq!(written, FRAME_SIZE_TARGET, "commit exactly when the frame reaches the target");
            assert_eq!(w.as_bytes()[2], opcodes::FRAME);
            assert_eq!(&w.as_bytes()[3..11], &(FRAME_SIZE_TARGET as u64).to_le_bytes());
            assert_eq!(w.len(), 2 + 9 + FRAME_SIZE_TARGET);
            w.clear(); // a file-backed pickler flushed it
            assert!(w.is_empty());
        }
        w.write(&chunk);
        written += chunk.len();
    }
    w.finish();
    assert_eq!(commits, 1);
    // The rest: a new frame holding 10 bytes of BININT1 and STOP.
    let rest = w.into_bytes();
    assert_eq!(rest[0], opcodes::FRAME);
    assert_eq!(&rest[1..9], &11u64.to_le_bytes());
    assert_eq!(rest.len(), 9 + 11);
}

#[test]
fn no_frames_below_protocol_4() {
    let out = stream(3, |w| {
        for _ in 0..FRAME_SIZE_TARGET {
            assert!(!w.opcode_boundary());
            w.none();
        }
    });
    assert!(!out.contains(&opcodes::FRAME));
}

#[test]
fn payload_bypass_reports_and_reopens_frames() {
    let mut w = Writer::new(4);
    w.start();
    w.none();
    let big = FRAME_SIZE_TARGET;
    assert_eq!(ok(w.bytes_header(big)), Payload::Bypass);
    // The frame holding NONE was too small to keep its header; the big header is unframed.
    assert_eq!(w.as_bytes(), b"\x80\x04NB\x00\x00\x01\x00");
    w.payload(&vec![0u8; big]);
    assert_eq!(ok(w.bytes_header(big - 1)), Payload::Inline, "just under the target stays framed");
}

/// A buffer with a fixed room: a write that does not fit drops everything held, as the Python
/// binding's buffer does when it fails to grow (its bytes object is gone).
struct Capped {
    bytes: Vec<u8>,
    room: usize,
    failed: bool,
}

impl Buffer for Capped {
    fn len(&self) -> usize {
        self.bytes.len()
    }
    fn extend_from_slice(&mut self, data: &[u8]) {
        if self.failed || self.bytes.len() + data.len() > self.room {
            self.failed = true;
            self.bytes.clear();
        } else {
            self.bytes.extend_from_slice(data);
        }
    }
    fn reserve(&mut self, _additional: usize) {}
    fn as_slice(&self) -> &[u8] {
        &self.bytes
    }
    fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.bytes
    }
    fn remove_range(&mut self, start: usize, end: usize) {
        self.bytes.drain(start..end);
    }
    fn clear(&mut self) {
        self.bytes.clear();
    }
}

fn capped_stream(proto: u8, room: usize) -> Capped {
    let mut w = Writer::with_buffer(proto, Capped { bytes: Vec::new(), room, failed: false });
    w.start();
    for i in 0..30_000 {
        w.opcode_boundary();
        w.int(i * 7);
        if i % 5_000 == 0 {
            let big = vec![7u8; FRAME_SIZE_TARGET + i as usize];
            let _ = w.bytes_header(big.len());
            w.payload(&big);
        }
    }
    w.finish();
    w.into_buffer()
}

#[test]
fn a_custom_buffer_gets_the_same_bytes() {
    for proto in 3..=HIGHEST_PROTOCOL {
        let mut w = Writer::new(proto);
        w.start();
        for i in 0..30_000 {
            w.opcode_boundary();
            w.int(i * 7);
            if i % 5_000 == 0 {
                let big = vec![7u8; FRAME_SIZE_TARGET + i as usize];
                let _ = w.bytes_header(big.len());
                w.payload(&big);
            }
        }
        w.finish();
        let capped = capped_stream(proto, usize::MAX);
        assert!(!capped.failed);
        assert_eq!(capped.bytes, w.into_bytes());
    }
}

#[test]
fn a_buffer_that_fails_to_grow_never_trips_the_writer() {
    // Failing at every point of the stream: before, inside and right after frame headers, and
    // inside bypassing payloads. The writer must neither panic nor index past the buffer.
    for proto in 0..=HIGHEST_PROTOCOL {
        for room in (0..40).chain([65_000, 65_545, 65_546, 70_000, 200_000]) {
            let out = capped_stream(proto, room);
            assert!(out.failed);
            assert!(out.bytes.len() <= room);
        }
    }
}
