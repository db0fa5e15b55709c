//! The byte level of the pickle format: opcodes, the encodings of every protocol (0-5), framing
//! and memo references.
//!
//! This crate knows nothing of the Python runtime. The object walk (in the pyo3 crate) decides
//! *what* to write; [`Writer`] decides *how*, byte for byte as CPython's `_pickle.c` does, so that
//! a stream written here is indistinguishable from the C pickler's for the same decisions.
//!
//! Framing (protocol 4+) follows `_pickle.c`: a 9-byte FRAME header is reserved in place when a
//! frame opens and filled in when the frame is committed; a frame shorter than 4 bytes loses its
//! header; payloads of 64 KiB or more are written outside any frame so a file-backed pickler can
//! stream them without a copy.

#![forbid(unsafe_code)]

mod error;
pub mod opcodes;

pub use error::WireError;
use opcodes as op;

/// The highest protocol this writer (and CPython 3.8+) understands.
pub const HIGHEST_PROTOCOL: u8 = 5;
/// cloudpickle's default protocol, which is ours.
pub const DEFAULT_PROTOCOL: u8 = 5;
/// Items per APPENDS / SETITEMS / ADDITEMS batch, as in `_pickle.c`.
pub const BATCHSIZE: usize = 1000;
/// A frame is committed once it holds this many bytes; larger payloads bypass framing.
pub const FRAME_SIZE_TARGET: usize = 64 * 1024;
// A str or bytes with a one-byte length is always far below the frame target: the short headers
// never ask whether to bypass framing.
const _: () = assert!(0xff < FRAME_SIZE_TARGET);
/// A committed frame shorter than this loses its header (the header would cost more than it says).
const FRAME_SIZE_MIN: usize = 4;
const FRAME_HEADER_SIZE: usize = 9;

/// Whether a payload was written inside the current frame or must bypass framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// The header is written and the payload belongs in the buffer right after it:
    /// call [`Writer::payload`].
    Inline,
    /// The payload is at least [`FRAME_SIZE_TARGET`] bytes: the previous frame is committed and
    /// the header written unframed. A pickler writing to a file flushes the buffer and writes the
    /// payload straight to the file; one building bytes calls [`Writer::payload`].
    Bypass,
}

/// The growable byte store a [`Writer`] writes into. `Vec<u8>` is one; a binding can supply its
/// own (the Python extension builds the final `bytes` object in place, so the stream is never
/// copied once more at the end).
///
/// A buffer that fails to grow may drop the bytes it cannot hold instead of aborting, and report
/// the failure to its owner by its own means: the writer never assumes that [`Buffer::len`] grew
/// by what it wrote, and only reads or rewrites bytes below it.
pub trait Buffer {
    /// Bytes held.
    fn len(&self) -> usize;
    /// Whether no bytes are held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Append `data`.
    fn extend_from_slice(&mut self, data: &[u8]);
    /// Make room for `additional` more bytes (a hint: a buffer may ignore it).
    fn reserve(&mut self, additional: usize);
    /// The bytes held.
    fn as_slice(&self) -> &[u8];
    /// The bytes held, for rewriting in place.
    fn as_mut_slice(&mut self) -> &mut [u8];
    /// Remove `start..end` (within [`Buffer::len`]), moving the tail down.
    fn remove_range(&mut self, start: usize, end: usize);
    /// Drop every byte, keeping the allocation where possible.
    fn clear(&mut self);
}

impl Buffer for Vec<u8> {
    #[inline]
    fn len(&self) -> usize {
        Vec::len(self)
    }
    #[inline(always)]
    fn extend_from_slice(&mut self, data: &[u8]) {
        Vec::extend_from_slice(self, data);
    }
    #[inline]
    fn reserve(&mut self, additional: usize) {
        Vec::reserve(self, additional);
    }
    #[inline]
    fn as_slice(&self) -> &[u8] {
        self
    }
    #[inline]
    fn as_mut_slice(&mut self) -> &mut [u8] {
        self
    }
    fn remove_range(&mut self, start: usize, end: usize) {
        self.drain(start..end);
    }
    fn clear(&mut self) {
        Vec::clear(self);
    }
}

/// The output buffer of one pickle stream, with the protocol's encodings.
#[derive(Debug)]
pub struct Writer<B = Vec<u8>> {
    buf: B,
    proto: u8,
    framing: bool,
    /// Offset of the reserved FRAME header of the open frame, if one is open.
    frame_start: Option<usize>,
    /// `framing && frame_start.is_none()`: the next write opens a frame (one test per write).
    open_on_write: bool,
    /// The length at which the open frame is due to be committed; `usize::MAX` when none is
    /// open (one comparison per object in [`Writer::opcode_boundary`]).
    commit_at: usize,
}

impl Writer<Vec<u8>> {
    /// A writer for `proto` (clamped to 0..=[`HIGHEST_PROTOCOL`] by the caller's validation).
    pub fn new(proto: u8) -> Self {
        Self::with_capacity(proto, 256)
    }

    /// A writer whose buffer starts with room for `capacity` bytes.
    pub fn with_capacity(proto: u8, capacity: usize) -> Self {
        Self::with_buffer(proto, Vec::with_capacity(capacity))
    }

    /// Take the finished stream.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

impl<B: Buffer> Writer<B> {
    /// A writer for `proto` writing into `buf` (which should be empty).
    pub fn with_buffer(proto: u8, buf: B) -> Self {
        Writer {
            buf,
            proto: proto.min(HIGHEST_PROTOCOL),
            framing: false,
            frame_start: None,
            open_on_write: false,
            commit_at: usize::MAX,
        }
    }

    /// The buffer, e.g. to take a finished stream out of it.
    #[inline]
    pub fn buffer(&self) -> &B {
        &self.buf
    }

    /// The buffer, mutably: to take the bytes out once no frame is open (see
    /// [`Writer::as_bytes`]), or to ask it whether it failed to grow.
    #[inline]
    pub fn buffer_mut(&mut self) -> &mut B {
        &mut self.buf
    }

    /// Take the buffer (after [`Writer::finish`]).
    pub fn into_buffer(self) -> B {
        self.buf
    }

    /// The protocol this stream is written in.
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.proto
    }

    /// Protocol 1 and above are "binary" (`Pickler.bin` in CPython).
    #[inline]
    pub fn is_binary(&self) -> bool {
        self.proto >= 1
    }

    /// Bytes written so far (including a reserved, not yet filled frame header).
    #[inline]
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing has been written.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The bytes written so far. Only meaningful when no frame is open (after [`Writer::finish`]
    /// or when [`Writer::opcode_boundary`] reported a commit).
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.as_slice()
    }

    /// Empty the buffer after its content was flushed to a file; keeps the allocation.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.frame_start = None;
        self.open_on_write = self.framing;
        self.commit_at = usize::MAX;
    }

    /// PROTO header (protocol 2+) and, from protocol 4, framing on.
    pub fn start(&mut self) {
        if self.proto >= 2 {
            self.write(&[op::PROTO, self.proto]);
        }
        if self.proto >= 4 {
            self.framing = true;
            self.open_on_write = self.frame_start.is_none();
        }
    }

    /// STOP, then commit the last frame and turn framing off.
    pub fn finish(&mut self) {
        self.write(&[op::STOP]);
        self.commit_frame();
        self.framing = false;
        self.open_on_write = false;
    }

    /// Write raw bytes, opening a frame first when framing is on and none is open.
    #[inline(always)]
    pub fn write(&mut self, data: &[u8]) {
        if self.open_on_write {
            self.open_frame();
        }
        self.buf.extend_from_slice(data);
    }

    /// Reserve the header of a new frame at the current position.
    #[inline(never)]
    fn open_frame(&mut self) {
        self.frame_start = Some(self.buf.len());
        self.open_on_write = false;
        self.commit_at = self.buf.len().saturating_add(FRAME_HEADER_SIZE + FRAME_SIZE_TARGET);
        self.buf.extend_from_slice(&[op::FRAME; FRAME_HEADER_SIZE]);
    }

    /// Write one opcode.
    #[inline]
    pub fn op(&mut self, opcode: u8) {
        self.write(&[opcode]);
    }

    /// Called between two objects, as `_pickle.c` does at the start of `save()`: commits the open
    /// frame once it reaches [`FRAME_SIZE_TARGET`]. Returns true when a frame was committed, so a
    /// file-backed pickler can flush [`Writer::as_bytes`] and [`Writer::clear`].
    #[inline]
    pub fn opcode_boundary(&mut self) -> bool {
        if self.buf.len() >= self.commit_at {
            self.commit_frame();
            true
        } else {
            false
        }
    }

    /// Fill in the header of the open frame, or drop it when the frame is tiny.
    pub fn commit_frame(&mut self) {
        let Some(start) = self.frame_start.take() else { return };
        self.open_on_write = self.framing;
        self.commit_at = usize::MAX;
        let Some(frame_len) = self.buf.len().checked_sub(start + FRAME_HEADER_SIZE) else {
            return; // the buffer failed to grow and dropped the header: nothing to fill in
        };
        if frame_len >= FRAME_SIZE_MIN {
            let header = &mut self.buf.as_mut_slice()[start..start + FRAME_HEADER_SIZE];
            header[0] = op::FRAME;
            header[1..].copy_from_slice(&(frame_len as u64).to_le_bytes());
        } else {
            self.buf.remove_range(start, start + FRAME_HEADER_SIZE);
        }
    }

    /// Write the header of a length-prefixed payload (str, bytes, bytearray data). See [`Payload`].
    #[inline]
    pub fn payload_header(&mut self, header: &[u8], payload_len: usize) -> Payload {
        if self.framing && payload_len >= FRAME_SIZE_TARGET {
            self.bypass_header(header, payload_len);
            Payload::Bypass
        } else {
            self.write(header);
            Payload::Inline
        }
    }

    /// An unframed header for a large payload, with room reserved for the payload that follows
    /// (and a little more for the opcodes after it) so the buffer grows once, not by doubling.
    #[inline(never)]
    fn bypass_header(&mut self, header: &[u8], payload_len: usize) {
        self.commit_frame();
        self.buf.reserve(header.len().saturating_add(payload_len).saturating_add(256));
        self.buf.extend_from_slice(header);
    }

    /// Append payload bytes right after [`Writer::payload_header`], never opening a frame: an
    /// inline payload is inside the header's frame, a bypassing one must stay outside any frame.
    #[inline]
    pub fn payload(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    // ----- atoms -------------------------------------------------------------------------------

    /// `None`.
    #[inline]
    pub fn none(&mut self) {
        self.op(op::NONE);
    }

    /// `True` / `False`: NEWTRUE/NEWFALSE from protocol 2, `I01\n`/`I00\n` before.
    #[inline]
    pub fn bool(&mut self, value: bool) {
        if self.proto >= 2 {
            self.op(if value { op::NEWTRUE } else { op::NEWFALSE });
        } else {
            self.write(if value { b"I01\n" } else { b"I00\n" });
        }
    }

    /// An int that fits in 64 bits.
    #[inline(always)]
    pub fn int(&mut self, value: i64) {
        if self.is_binary() {
            if (0..=0xff).contains(&value) {
                self.write(&[op::BININT1, value as u8]);
                return;
            }
            if (0..=0xffff).contains(&value) {
                let b = (value as u16).to_le_bytes();
                self.write(&[op::BININT2, b[0], b[1]]);
                return;
            }
            if let Ok(small) = i32::try_from(value) {
                let b = small.to_le_bytes();
                self.write(&[op::BININT, b[0], b[1], b[2], b[3]]);
                return;
            }
        }
        self.int_slow(value);
    }

    /// [`Writer::int`] outside the BININT forms: protocol 0 text, LONG1 or `L...L` text.
    #[inline(never)]
    fn int_slow(&mut self, value: i64) {
        if let Ok(small) = i32::try_from(value) {
            if !self.is_binary() {
                let mut text = [0u8; N_DEC];
                let n = format_decimal(i64::from(small), &mut text);
                self.write(b"I");
                self.write(&text[..n]);
                self.write(b"\n");
            } else if (0..=0xff).contains(&small) {
                self.write(&[op::BININT1, small as u8]);
            } else if (0..=0xffff).contains(&small) {
                let b = (small as u16).to_le_bytes();
                self.write(&[op::BININT2, b[0], b[1]]);
            } else {
                let b = small.to_le_bytes();
                self.write(&[op::BININT, b[0], b[1], b[2], b[3]]);
            }
        } else if self.proto >= 2 {
            let bytes = value.to_le_bytes();
            // At most 8 bytes: LONG1, which cannot fail.
            let _ = self.long_le_bytes(minimal_twos_complement(&bytes));
        } else {
            let mut text = [0u8; N_DEC];
            let n = format_decimal(value, &mut text);
            self.long_text(&text[..n]);
        }
    }

    /// An int outside the BININT range as LONG1/LONG4 (protocol 2+): `le_bytes` is its minimal
    /// little-endian two's-complement encoding (see [`minimal_twos_complement`]).
    pub fn long_le_bytes(&mut self, le_bytes: &[u8]) -> Result<(), WireError> {
        let n = le_bytes.len();
        if n < 256 {
            self.write(&[op::LONG1, n as u8]);
        } else {
            let len = u32::try_from(n).map_err(|_| WireError::IntTooLarge)?.to_le_bytes();
            self.write(&[op::LONG4, len[0], len[1], len[2], len[3]]);
        }
        self.write(le_bytes);
        Ok(())
    }

    /// An int outside the 32-bit range in protocols 0-1: `L<decimal>L\n`.
    pub fn long_text(&mut self, decimal: &[u8]) {
        self.write(b"L");
        self.write(decimal);
        self.write(b"L\n");
    }

    /// A float as BINFLOAT (protocol 1+).
    #[inline]
    pub fn binfloat(&mut self, value: f64) {
        let b = value.to_be_bytes();
        self.write(&[op::BINFLOAT, b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
    }

    /// A float in protocol 0: `F<repr>\n`, with `repr` as Python's `repr(float)` spells it.
    pub fn float_text(&mut self, repr: &[u8]) {
        self.write(b"F");
        self.write(repr);
        self.write(b"\n");
    }

    // ----- strings and bytes -------------------------------------------------------------------

    /// Header of a str whose UTF-8 (surrogatepass) encoding is `len` bytes long, binary protocols.
    #[inline]
    pub fn unicode_header(&mut self, len: usize) -> Result<Payload, WireError> {
        if len <= 0xff && self.proto >= 4 {
            // Far below FRAME_SIZE_TARGET: always inline.
            self.write(&[op::SHORT_BINUNICODE, len as u8]);
            Ok(Payload::Inline)
        } else {
            self.unicode_header_long(len)
        }
    }

    #[inline(never)]
    fn unicode_header_long(&mut self, len: usize) -> Result<Payload, WireError> {
        if len <= 0xff && self.proto >= 4 {
            Ok(self.payload_header(&[op::SHORT_BINUNICODE, len as u8], len))
        } else if len > 0xffff_ffff {
            if self.proto < 4 {
                return Err(WireError::StrTooLarge);
            }
            let mut h = [0u8; 9];
            h[0] = op::BINUNICODE8;
            h[1..].copy_from_slice(&(len as u64).to_le_bytes());
            Ok(self.payload_header(&h, len))
        } else {
            let b = (len as u32).to_le_bytes();
            Ok(self.payload_header(&[op::BINUNICODE, b[0], b[1], b[2], b[3]], len))
        }
    }

    /// A str in binary protocols, given its UTF-8 (surrogatepass) bytes.
    #[inline]
    pub fn unicode(&mut self, utf8: &[u8]) -> Result<(), WireError> {
        self.unicode_header(utf8.len())?;
        self.payload(utf8);
        Ok(())
    }

    /// A str in protocol 0: `V<raw-unicode-escape>\n`, escaping as `_pickle.c` does (backslash,
    /// NUL, `\n`, `\r` and `\x1a` become `\uXXXX`). `chars` yields the code points (surrogates
    /// included, which UTF-8 cannot carry).
    pub fn unicode_text(&mut self, chars: impl Iterator<Item = u32>) {
        let mut out = Vec::with_capacity(16);
        out.push(b'V');
        for ch in chars {
            push_raw_unicode_escape(&mut out, ch);
        }
        out.push(b'\n');
        self.write(&out);
    }

    /// Header of a bytes object's data, protocol 3+.
    #[inline]
    pub fn bytes_header(&mut self, len: usize) -> Result<Payload, WireError> {
        if len <= 0xff {
            Ok(self.payload_header(&[op::SHORT_BINBYTES, len as u8], len))
        } else if len <= 0xffff_ffff {
            let b = (len as u32).to_le_bytes();
            Ok(self.payload_header(&[op::BINBYTES, b[0], b[1], b[2], b[3]], len))
        } else if self.proto >= 4 {
            let mut h = [0u8; 9];
            h[0] = op::BINBYTES8;
            h[1..].copy_from_slice(&(len as u64).to_le_bytes());
            Ok(self.payload_header(&h, len))
        } else {
            Err(WireError::BytesTooLarge)
        }
    }

    /// A bytes object's data, protocol 3+.
    pub fn bytes(&mut self, data: &[u8]) -> Result<(), WireError> {
        self.bytes_header(data.len())?;
        self.payload(data);
        Ok(())
    }

    /// Header of a bytearray's data (BYTEARRAY8, protocol 5).
    pub fn bytearray_header(&mut self, len: usize) -> Payload {
        let mut h = [0u8; 9];
        h[0] = op::BYTEARRAY8;
        h[1..].copy_from_slice(&(len as u64).to_le_bytes());
        self.payload_header(&h, len)
    }

    /// A bytearray's data (BYTEARRAY8, protocol 5).
    pub fn bytearray(&mut self, data: &[u8]) {
        self.bytearray_header(data.len());
        self.payload(data);
    }

    /// An out-of-band buffer reference (protocol 5).
    pub fn next_buffer(&mut self, readonly: bool) {
        if readonly {
            self.write(&[op::NEXT_BUFFER, op::READONLY_BUFFER]);
        } else {
            self.op(op::NEXT_BUFFER);
        }
    }

    // ----- containers --------------------------------------------------------------------------

    /// An empty tuple: EMPTY_TUPLE, or MARK TUPLE in protocol 0.
    #[inline]
    pub fn empty_tuple(&mut self) {
        if self.is_binary() {
            self.op(op::EMPTY_TUPLE);
        } else {
            self.write(&[op::MARK, op::TUPLE]);
        }
    }

    /// An empty list: EMPTY_LIST, or MARK LIST in protocol 0.
    #[inline]
    pub fn empty_list(&mut self) {
        if self.is_binary() {
            self.op(op::EMPTY_LIST);
        } else {
            self.write(&[op::MARK, op::LIST]);
        }
    }

    /// An empty dict: EMPTY_DICT, or MARK DICT in protocol 0.
    #[inline]
    pub fn empty_dict(&mut self) {
        if self.is_binary() {
            self.op(op::EMPTY_DICT);
        } else {
            self.write(&[op::MARK, op::DICT]);
        }
    }

    /// Close a tuple of `len` items pushed after a MARK (or, for 1-3 items in protocol 2+, without
    /// one: see [`Writer::tuple_uses_mark`]).
    #[inline]
    pub fn tuple_end(&mut self, len: usize) {
        match len {
            1..=3 if self.proto >= 2 => self.op([op::TUPLE1, op::TUPLE2, op::TUPLE3][len - 1]),
            _ => self.op(op::TUPLE),
        }
    }

    /// Whether a tuple of `len` items is written as MARK items TUPLE (else items TUPLEn).
    #[inline]
    pub fn tuple_uses_mark(&self, len: usize) -> bool {
        !(self.proto >= 2 && (1..=3).contains(&len))
    }

    /// Undo the items of a tuple that turned out to be recursive (it reached the memo while its
    /// items were written): POP_MARK in binary protocols, else `len + 1` POPs.
    pub fn discard_tuple_items(&mut self, len: usize, used_mark: bool) {
        if !used_mark {
            for _ in 0..len {
                self.op(op::POP);
            }
        } else if self.is_binary() {
            self.op(op::POP_MARK);
        } else {
            for _ in 0..=len {
                self.op(op::POP);
            }
        }
    }

    // ----- memo --------------------------------------------------------------------------------

    /// Store the top of the stack as memo entry `index` (which must equal the memo's size).
    #[inline]
    pub fn memo_put(&mut self, index: usize) -> Result<(), WireError> {
        if self.proto >= 4 {
            self.op(op::MEMOIZE);
            Ok(())
        } else {
            self.memo_put_indexed(index)
        }
    }

    #[inline(never)]
    fn memo_put_indexed(&mut self, index: usize) -> Result<(), WireError> {
        if !self.is_binary() {
            let mut text = [0u8; N_DEC];
            let n = format_decimal(index as i64, &mut text);
            self.write(b"p");
            self.write(&text[..n]);
            self.write(b"\n");
        } else if index < 256 {
            self.write(&[op::BINPUT, index as u8]);
        } else {
            let idx = u32::try_from(index).map_err(|_| WireError::MemoTooLarge)?;
            let b = idx.to_le_bytes();
            self.write(&[op::LONG_BINPUT, b[0], b[1], b[2], b[3]]);
        }
        Ok(())
    }

    /// Push memo entry `index`.
    #[inline]
    pub fn memo_get(&mut self, index: usize) -> Result<(), WireError> {
        if index < 256 && self.is_binary() {
            self.write(&[op::BINGET, index as u8]);
            Ok(())
        } else {
            self.memo_get_slow(index)
        }
    }

    #[inline(never)]
    fn memo_get_slow(&mut self, index: usize) -> Result<(), WireError> {
        if !self.is_binary() {
            let mut text = [0u8; N_DEC];
            let n = format_decimal(index as i64, &mut text);
            self.write(b"g");
            self.write(&text[..n]);
            self.write(b"\n");
        } else if index < 256 {
            self.write(&[op::BINGET, index as u8]);
        } else {
            let idx = u32::try_from(index).map_err(|_| WireError::MemoTooLarge)?;
            let b = idx.to_le_bytes();
            self.write(&[op::LONG_BINGET, b[0], b[1], b[2], b[3]]);
        }
        Ok(())
    }

    // ----- globals and persistent ids ----------------------------------------------------------

    /// GLOBAL (protocols 0-3): `c<module>\n<name>\n`, both already encoded (ASCII below
    /// protocol 3, UTF-8 at 3).
    pub fn global_text(&mut self, module: &[u8], name: &[u8]) {
        self.write(&[op::GLOBAL]);
        self.write(module);
        self.write(b"\n");
        self.write(name);
        self.write(b"\n");
    }

    /// An extension-registry code (protocol 2+): EXT1/EXT2/EXT4. Codes are 1..=0x7fffffff.
    pub fn ext(&mut self, code: u32) {
        if code <= 0xff {
            self.write(&[op::EXT1, code as u8]);
        } else if code <= 0xffff {
            let b = (code as u16).to_le_bytes();
            self.write(&[op::EXT2, b[0], b[1]]);
        } else {
            let b = code.to_le_bytes();
            self.write(&[op::EXT4, b[0], b[1], b[2], b[3]]);
        }
    }

    /// A persistent id in protocol 0: `P<ascii>\n`.
    pub fn persid_text(&mut self, ascii: &[u8]) {
        self.write(&[op::PERSID]);
        self.write(ascii);
        self.write(b"\n");
    }
}

/// Strip redundant sign bytes from a little-endian two's-complement integer, as `_pickle.c` does:
/// the result is the shortest encoding that still carries the sign (zero is the empty slice).
pub fn minimal_twos_complement(le: &[u8]) -> &[u8] {
    let Some(&last) = le.last() else { return le };
    let negative = last & 0x80 != 0;
    let mut n = le.len();
    if negative {
        while n > 1 && le[n - 1] == 0xff && le[n - 2] & 0x80 != 0 {
            n -= 1;
        }
    } else {
        while n > 0 && le[n - 1] == 0 && (n == 1 || le[n - 2] & 0x80 == 0) {
            n -= 1;
        }
    }
    &le[..n]
}

fn push_raw_unicode_escape(out: &mut Vec<u8>, ch: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    if ch >= 0x10000 {
        out.extend_from_slice(b"\\U");
        for shift in (0..8).rev() {
            out.push(HEX[((ch >> (shift * 4)) & 0xf) as usize]);
        }
    } else if ch >= 256 || matches!(ch, 0x5c | 0 | 0x0a | 0x0d | 0x1a) {
        out.extend_from_slice(b"\\u");
        for shift in (0..4).rev() {
            out.push(HEX[((ch >> (shift * 4)) & 0xf) as usize]);
        }
    } else {
        out.push(ch as u8);
    }
}

/// Decimal text of `value` into `out`, returning the length (no allocation on the hot path).
fn format_decimal(value: i64, out: &mut [u8; N_DEC]) -> usize {
    let mut tmp = [0u8; N_DEC];
    let mut i = N_DEC;
    let negative = value < 0;
    let mut magnitude = value.unsigned_abs();
    loop {
        i -= 1;
        tmp[i] = b'0' + (magnitude % 10) as u8;
        magnitude /= 10;
        if magnitude == 0 {
            break;
        }
    }
    if negative {
        i -= 1;
        tmp[i] = b'-';
    }
    let n = N_DEC - i;
    out[..n].copy_from_slice(&tmp[i..]);
    n
}
const N_DEC: usize = 24;

#[cfg(test)]
mod tests;
