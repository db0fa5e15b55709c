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
