//! The client side of a WebSocket (RFC 6455), sans-IO, for the agent socket: the opening
//! handshake (§4.1), the server's frames read from a buffer the driver fills (§5.2, §5.4–5.6) and
//! masked frames written into a buffer the driver sends (§5.3).
//!
//! Why ignis frames this socket itself rather than through tungstenite: docs/elevenlabs.md §1.8.
//! In short, a call keeps only [`RESIDENT_READ_BYTES`] of read buffer between messages (a larger
//! frame gets a buffer of its own, freed once handled; tungstenite keeps the largest frame's
//! reservation for the whole call), and a text message is handed out as a `&str` into the buffer
//! it was read into.

use base64::Engine as _;
use sha1::{Digest as _, Sha1};

use super::client::BadHeader;
use super::url::Endpoint;
use super::websocket_upgrade::accept_key;

/// Longest handshake response head read; ElevenLabs answers with a dozen headers.
pub const MAX_HANDSHAKE_RESPONSE_BYTES: usize = 8 * 1024;
/// Most headers read in the handshake response.
const MAX_HANDSHAKE_HEADERS: usize = 64;
/// Bytes of read buffer a socket keeps for its whole life. A 250 ms `ulaw_8000` chunk (~2.8 KiB
/// of JSON) fits and arrives in one read with no allocation; a larger frame (a `pcm_16000` chunk
/// is ~10.7 KiB) gets one buffer of exactly its length, freed once handled.
pub const RESIDENT_READ_BYTES: usize = 4 * 1024;
/// Longest control frame payload (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;
/// Longest frame header a server sends: 2 bytes, 8 of extended length, no mask (§5.2).
const MAX_SERVER_HEADER: usize = 10;
// A header and a control frame always fit the resident buffer: only data frames ever get a
// buffer of their own.
const _: () = assert!(RESIDENT_READ_BYTES >= MAX_SERVER_HEADER + MAX_CONTROL_PAYLOAD);
/// Bytes a written frame's header takes at most: 2, 8 of extended length, 4 of mask.
const MAX_CLIENT_HEADER: usize = 14;

/// The opening handshake request for `ep` (RFC 6455 §4.1); `key` is the base64 of 16 random
/// bytes (see [`handshake_key`]). No extensions and no subprotocol are offered.
pub fn handshake_request(ep: &Endpoint, key: &str) -> Result<Vec<u8>, BadHeader> {
    let clean = |s: &str| !s.bytes().any(|b| b.is_ascii_control() || b == b' ');
    if !clean(&ep.target) || !clean(key) || !clean(&ep.host) {
        return Err(BadHeader);
    }
    Ok(format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ignis/{}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        ep.target,
        ep.host_header(),
        env!("CARGO_PKG_VERSION")
    )
    .into_bytes())
}

/// The `Sec-WebSocket-Key` for 16 random bytes.
pub fn handshake_key(random: &[u8; 16]) -> String {
    base64::engine::general_purpose::STANDARD.encode(random)
}

/// Why the server's handshake response was refused (RFC 6455 §4.1, "the client MUST _Fail the
/// WebSocket Connection_").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// A status other than 101 (an expired signed URL gets 401 or 403, a wrong agent 404).
    Status(u16),
    /// Not an HTTP/1.1 response head, or longer than [`MAX_HANDSHAKE_RESPONSE_BYTES`].
    MalformedHead,
    /// The server closed before the head was complete.
    Truncated,
    /// `Upgrade: websocket` or `Connection: Upgrade` missing.
    NotUpgrade,
    /// `Sec-WebSocket-Accept` missing or not the one for our key.
    BadAccept,
    /// The server chose an extension or a subprotocol that was not offered.
    NotOffered,
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::Status(s) => write!(f, "handshake answered with status {s}"),
            HandshakeError::MalformedHead => f.write_str("malformed handshake response"),
            HandshakeError::Truncated => f.write_str("closed during the handshake"),
            HandshakeError::NotUpgrade => f.write_str("handshake response is not an upgrade"),
            HandshakeError::BadAccept => f.write_str("wrong Sec-WebSocket-Accept"),
            HandshakeError::NotOffered => {
                f.write_str("server chose an extension or subprotocol not offered")
            }
        }
    }
}

impl std::error::Error for HandshakeError {}

/// Checks the handshake response in `buf` (the bytes read so far; `eof`: the server closed).
/// `Ok(Some(n))`: accepted, and the head is `n` bytes long (what follows are frames already).
/// `Ok(None)`: the head is not complete yet.
pub fn parse_handshake_response(
    buf: &[u8],
    eof: bool,
    key: &str,
) -> Result<Option<usize>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HANDSHAKE_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if eof => return Err(HandshakeError::Truncated),
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HANDSHAKE_RESPONSE_BYTES => {
            return Err(HandshakeError::MalformedHead);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(HandshakeError::MalformedHead),
    };
    // §4.1: the answer to an HTTP/1.1 upgrade is an HTTP/1.1 response.
    if resp.version != Some(1) {
        return Err(HandshakeError::MalformedHead);
    }
    match resp.code {
        Some(101) => {}
        Some(code) => return Err(HandshakeError::Status(code)),
        None => return Err(HandshakeError::MalformedHead),
    }
    let headers: &[httparse::Header<'_>] = resp.headers;
    let header = |name: &'static str| {
        headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let has_token = |name: &'static str, token: &str| {
        header(name).any(|v| {
            v.split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        })
    };
    if !has_token("upgrade", "websocket") || !has_token("connection", "upgrade") {
        return Err(HandshakeError::NotUpgrade);
    }
    let expected = accept_key(key.as_bytes());
    let mut accepts = header("sec-websocket-accept");
    match (accepts.next(), accepts.next()) {
        (Some(v), None) if v.trim_ascii() == expected.as_bytes() => {}
        _ => return Err(HandshakeError::BadAccept),
    }
    if header("sec-websocket-extensions").next().is_some()
        || header("sec-websocket-protocol").next().is_some()
    {
        return Err(HandshakeError::NotOffered);
    }
    Ok(Some(head_len))
}

/// A frame the server sent, or a whole message once its last fragment arrived.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// A text message, valid UTF-8 (§5.6).
    Text(&'a str),
    /// A binary message, by its length (the agent protocol is text only: docs/elevenlabs.md §1.8).
    Binary(usize),
    /// A ping; answer it with [`FrameWriter::pong`] and the same payload (§5.5.2).
    Ping(&'a [u8]),
    /// A pong (unsolicited or not; ignis sends no pings of its own).
    Pong,
    /// A close frame with its status code, if it had one (§5.5.1).
    Close(Option<u16>),
}

/// Why a server's frame fails the connection (§7.1.7); the close code to send is
/// [`FrameError::close_code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// A server frame with the mask bit set (§5.1: the client MUST fail the connection).
    Masked,
    /// RSV bits set with no extension negotiated (§5.2).
    ReservedBits,
    /// An opcode RFC 6455 does not define (§5.2).
    UnknownOpcode,
    /// A control frame longer than 125 bytes or fragmented (§5.5).
    BadControlFrame,
    /// A continuation with no message begun, or a new message inside a fragmented one (§5.4).
    BadFragmentation,
    /// A frame or message longer than the reader's limit.
    TooLarge,
    /// A 64-bit length with its top bit set (§5.2).
    BadLength,
    /// A text message that is not UTF-8 (§5.6, §8.1).
    NotUtf8,
    /// A close payload of one byte (§5.5.1).
    BadClose,
}

impl FrameError {
    /// The close code ignis answers this error with (§7.4.1).
    pub fn close_code(self) -> u16 {
        match self {
            FrameError::TooLarge => 1009,
            FrameError::NotUtf8 => 1007,
            _ => 1002,
        }
    }
}

error_text!(FrameError {
    Masked => "masked frame from the server",
    ReservedBits => "reserved bits set",
    UnknownOpcode => "unknown opcode",
    BadControlFrame => "control frame too long or fragmented",
    BadFragmentation => "bad fragmentation",
    TooLarge => "message too large",
    BadLength => "bad frame length",
    NotUtf8 => "text message is not UTF-8",
    BadClose => "bad close frame",
});

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// A parsed frame header: whether it is the last fragment, its opcode, where its payload starts
/// (relative to the header) and how long it is.
#[derive(Debug, Clone, Copy)]
struct Header {
    fin: bool,
    opcode: u8,
    header_len: usize,
    payload_len: usize,
}

/// Parses the header at the start of `buf`; `Ok(None)` until all of it is there.
fn parse_header(buf: &[u8], max_payload: usize) -> Result<Option<Header>, FrameError> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(FrameError::ReservedBits);
    }
    if b1 & 0x80 != 0 {
        return Err(FrameError::Masked);
    }
    let (header_len, len) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (4, u64::from(u16::from_be_bytes([b[0], b[1]]))),
            None => return Ok(None),
        },
        127 => match buf.get(2..10).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
            Some(b) => (10, u64::from_be_bytes(b)),
            None => return Ok(None),
        },
        n => (2, u64::from(n)),
    };
    if len >> 63 != 0 {
        return Err(FrameError::BadLength);
    }
    let payload_len = match usize::try_from(len) {
        Ok(n) if n <= max_payload => n,
        _ => return Err(FrameError::TooLarge),
    };
    let opcode = b0 & 0x0F;
    let fin = b0 & 0x80 != 0;
    match opcode {
        OP_CONTINUATION | OP_TEXT | OP_BINARY => {}
        OP_CLOSE | OP_PING | OP_PONG if fin && payload_len <= MAX_CONTROL_PAYLOAD => {}
        OP_CLOSE | OP_PING | OP_PONG => return Err(FrameError::BadControlFrame),
        _ => return Err(FrameError::UnknownOpcode),
    }
    Ok(Some(Header {
        fin,
        opcode,
        header_len,
        payload_len,
    }))
}

/// Whether a data frame with header `h` may come now (§5.4): a continuation only inside a
/// fragmented message, a new message only outside one, and the message within `max_message`.
/// Control frames may come at any time.
fn check_sequence(
    h: &Header,
    fragmented: Option<u8>,
    assembled: usize,
    max_message: usize,
) -> Result<(), FrameError> {
    match (h.opcode, fragmented) {
        (OP_TEXT | OP_BINARY, Some(_)) | (OP_CONTINUATION, None) => {
            Err(FrameError::BadFragmentation)
        }
        (OP_CONTINUATION, Some(_)) if assembled + h.payload_len > max_message => {
            Err(FrameError::TooLarge)
        }
        _ => Ok(()),
    }
}

/// What the reader last handed out, dropped at the next call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handed {
    Nothing,
    /// A frame of `n` bytes at the front of the unparsed bytes.
    Frame(usize),
    /// The frame in `large`.
    Large,
    /// The assembled fragmented message.
    Assembled,
}

/// Where a frame's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// At `start` in the resident buffer.
    Resident,
    /// Alone in `large`.
    Large,
}

/// Reads the server's frames from bytes the driver puts into [`FrameReader::space`].
///
/// The resident buffer is [`RESIDENT_READ_BYTES`] long and never reallocated. A frame that does
/// not fit gets a buffer of exactly its length once its header is in: the rest of the frame is
/// read straight into it (in as few reads as the socket allows, never past the frame's end), and
/// it is freed once the frame has been handed out. So between messages a call holds 4 KiB, and
/// the large buffers of all calls come and go through the same few allocator bins.
#[derive(Debug)]
pub struct FrameReader {
    /// `buf[start..end]` holds bytes read and not yet handed out.
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// A frame larger than `buf`, and how much of it has been read.
    large: Vec<u8>,
    large_end: usize,
    handed: Handed,
    /// The kind (text or binary) of a fragmented message being assembled, and its payload.
    fragmented: Option<u8>,
    assembled: Vec<u8>,
    /// Longest frame or message accepted.
    max_message: usize,
    /// Where the text last handed out lies (for [`FrameReader::text`]), in the buffer `handed`
    /// names.
    last_text: Option<(usize, usize)>,
}

impl FrameReader {
    /// A reader accepting messages up to `max_message` bytes, starting with `leftover` (the bytes
    /// that followed the handshake response). A leftover longer than [`RESIDENT_READ_BYTES`]
    /// would make the resident buffer that long; the driver's handshake reads 4 KiB at a time,
    /// so its leftover is no longer (the fuzz entry passes whole inputs on purpose).
    pub fn new(max_message: usize, leftover: &[u8]) -> FrameReader {
        let mut buf = vec![0; RESIDENT_READ_BYTES.max(leftover.len())].into_boxed_slice();
        buf[..leftover.len()].copy_from_slice(leftover);
        FrameReader {
            buf,
            start: 0,
            end: leftover.len(),
            large: Vec::new(),
            large_end: 0,
            handed: Handed::Nothing,
            fragmented: None,
            assembled: Vec::new(),
            max_message,
            last_text: None,
        }
    }

    /// Bytes of buffer this reader holds (resident, large frame and assembly), for tests and the
    /// RSS reasoning.
    pub fn capacity(&self) -> usize {
        self.buf.len() + self.large.capacity() + self.assembled.capacity()
    }

    /// Whether nothing is waiting: no unparsed bytes, no large frame and no fragmented message
    /// under way (what was handed out last counts as taken).
    pub fn is_idle(&self) -> bool {
        let taken = match self.handed {
            Handed::Frame(n) => n,
            _ => 0,
        };
        let large_waiting = self.large_end > 0 && self.handed != Handed::Large;
        self.start + taken == self.end && !large_waiting && self.fragmented.is_none()
    }

    /// Drops what was handed out last.
    fn release(&mut self) {
        match std::mem::replace(&mut self.handed, Handed::Nothing) {
            Handed::Nothing => {}
            Handed::Frame(n) => self.start += n,
            Handed::Large => {
                self.large = Vec::new();
                self.large_end = 0;
            }
            // A fragmented message is rare: give its memory back at once.
            Handed::Assembled => self.assembled = Vec::new(),
        }
        self.last_text = None;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Room for the next read: the rest of a large frame, exactly; else the free end of the
    /// resident buffer (its unparsed bytes moved to the front first).
    /// Never empty, unless the bytes already in failed to parse (`next_frame` said so).
    pub fn space(&mut self) -> &mut [u8] {
        self.release();
        if !self.large.is_empty() {
            return &mut self.large[self.large_end..];
        }
        let pending = self.end - self.start;
        if let Ok(Some(h)) = parse_header(&self.buf[self.start..self.end], self.max_message) {
            let frame_len = h.header_len + h.payload_len;
            // Larger than the buffer, hence than what is pending: the frame is incomplete.
            if frame_len > self.buf.len() {
                self.large = vec![0; frame_len];
                self.large[..pending].copy_from_slice(&self.buf[self.start..self.end]);
                self.large_end = pending;
                self.start = 0;
                self.end = 0;
                return &mut self.large[pending..];
            }
        }
        // A partial frame left after a handed-out one (rare, and at most a frame): to the front.
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.start = 0;
            self.end = pending;
        }
        &mut self.buf[self.end..]
    }

    /// Records that the driver read `n` bytes into [`FrameReader::space`].
    pub fn filled(&mut self, n: usize) {
        if self.large.is_empty() {
            self.end = (self.end + n).min(self.buf.len());
        } else {
            self.large_end = (self.large_end + n).min(self.large.len());
        }
    }

    /// The next frame or whole message, once all its bytes are in; `Ok(None)` means read more.
    /// What it hands out is valid until the next call of any `&mut self` method.
    pub fn next_frame(&mut self) -> Result<Option<Incoming<'_>>, FrameError> {
        self.release();
        loop {
            let source = if self.large.is_empty() {
                Source::Resident
            } else if self.large_end == self.large.len() {
                Source::Large
            } else {
                return Ok(None);
            };
            let bytes = match source {
                Source::Resident => &self.buf[self.start..self.end],
                Source::Large => &self.large[..],
            };
            let Some(h) = parse_header(bytes, self.max_message)? else {
                return Ok(None);
            };
            // Checked on the header, before `space` gives a large frame its own buffer.
            check_sequence(&h, self.fragmented, self.assembled.len(), self.max_message)?;
            let frame_len = h.header_len + h.payload_len;
            if bytes.len() < frame_len {
                return Ok(None);
            }
            let at = h.header_len
                + match source {
                    Source::Resident => self.start,
                    Source::Large => 0,
                };
            let handed = match source {
                Source::Resident => Handed::Frame(frame_len),
                Source::Large => Handed::Large,
            };
            match (h.opcode, self.fragmented) {
                (OP_TEXT | OP_BINARY, None) if h.fin => {
                    self.handed = handed;
                    return self.whole(h.opcode, at, h.payload_len);
                }
                (OP_TEXT | OP_BINARY | OP_CONTINUATION, _) => {
                    // A fragment: assembled in its own buffer (§5.4), within the same limit
                    // (`check_sequence`). Grown geometrically (many tiny fragments must not
                    // cost a reallocation each) but never past the limit.
                    let kind = self.fragmented.unwrap_or(h.opcode);
                    let room = self.max_message - self.assembled.len();
                    let grow = h.payload_len.max(self.assembled.len()).min(room);
                    if self.assembled.capacity() - self.assembled.len() < h.payload_len {
                        self.assembled.reserve_exact(grow);
                    }
                    let payload = at..at + h.payload_len;
                    match source {
                        Source::Resident => {
                            self.assembled.extend_from_slice(&self.buf[payload]);
                            self.start += frame_len;
                        }
                        Source::Large => {
                            self.assembled.extend_from_slice(&self.large[payload]);
                            self.large = Vec::new();
                            self.large_end = 0;
                        }
                    }
                    if !h.fin {
                        self.fragmented = Some(kind);
                        continue;
                    }
                    self.fragmented = None;
                    self.handed = Handed::Assembled;
                    let len = self.assembled.len();
                    return self.whole(kind, 0, len);
                }
                _ => {
                    self.handed = handed;
                    let payload = match source {
                        Source::Resident => &self.buf[at..at + h.payload_len],
                        Source::Large => &self.large[at..at + h.payload_len],
                    };
                    return control(h.opcode, payload).map(Some);
                }
            }
        }
    }

    /// The bytes `len` long at `at` of the buffer `handed` names.
    fn handed_bytes(&self, at: usize, len: usize) -> Option<&[u8]> {
        match self.handed {
            Handed::Frame(_) => self.buf.get(at..at + len),
            Handed::Large => self.large.get(at..at + len),
            Handed::Assembled => self.assembled.get(at..at + len),
            Handed::Nothing => None,
        }
    }

    /// Hands out a whole data message: `len` bytes at `at` of the buffer `handed` names.
    fn whole(
        &mut self,
        kind: u8,
        at: usize,
        len: usize,
    ) -> Result<Option<Incoming<'_>>, FrameError> {
        if kind == OP_BINARY {
            return Ok(Some(Incoming::Binary(len)));
        }
        self.last_text = Some((at, len));
        let bytes = self.handed_bytes(at, len).unwrap_or_default();
        match std::str::from_utf8(bytes) {
            Ok(text) => Ok(Some(Incoming::Text(text))),
            Err(_) => Err(FrameError::NotUtf8),
        }
    }

    /// The text message [`FrameReader::next_frame`] handed out last, while it is still valid.
    pub fn text(&self) -> Option<&str> {
        let (at, len) = self.last_text?;
        std::str::from_utf8(self.handed_bytes(at, len)?).ok()
    }
}

/// A control frame's meaning (§5.5).
fn control(opcode: u8, payload: &[u8]) -> Result<Incoming<'_>, FrameError> {
    match opcode {
        OP_PING => Ok(Incoming::Ping(payload)),
        OP_PONG => Ok(Incoming::Pong),
        // Tolerant: a reason that is not UTF-8 is ignored, not a failure (ignis never shows it).
        _ => match *payload {
            [] => Ok(Incoming::Close(None)),
            [a, b, ..] if close_code_allowed(u16::from_be_bytes([a, b])) => {
                Ok(Incoming::Close(Some(u16::from_be_bytes([a, b]))))
            }
            _ => Err(FrameError::BadClose),
        },
    }
}

/// Whether `code` may appear in a close frame (§7.4.1, §7.4.2 and IANA's registry: 1004 is
/// reserved, 1005, 1006 and 1015 must never be sent, 1016–2999 are unassigned, 5000 and up do not
/// exist). A close carrying another code fails the connection (1002), so ignis never echoes one.
pub fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Unpredictable masking keys (§5.3: "derived from a strong source of entropy") without a
/// system call per frame: SHA-1 over a 32-byte seed from the operating system and a counter,
/// five keys per hash. The keys only protect intermediaries from a browser's chosen bytes
/// (§10.3); no secret depends on them.
#[derive(Debug)]
struct MaskKeys {
    seed: [u8; 32],
    counter: u64,
    block: [u8; 20],
    used: usize,
}

impl MaskKeys {
    fn next(&mut self) -> [u8; 4] {
        if self.used == self.block.len() {
            let mut h = Sha1::new();
            h.update(self.seed);
            h.update(self.counter.to_le_bytes());
            self.block.copy_from_slice(&h.finalize());
            self.counter = self.counter.wrapping_add(1);
            self.used = 0;
        }
        let mut key = [0; 4];
        key.copy_from_slice(&self.block[self.used..self.used + 4]);
        self.used += 4;
        key
    }
}

/// Writes the client's frames: every one masked (§5.3), never fragmented.
#[derive(Debug)]
pub struct FrameWriter {
    keys: MaskKeys,
}

impl FrameWriter {
    /// A writer whose masking keys come from `seed` (32 bytes from the operating system).
    pub fn new(seed: [u8; 32]) -> FrameWriter {
        FrameWriter {
            keys: MaskKeys {
                seed,
                counter: 0,
                block: [0; 20],
                used: 20,
            },
        }
    }

    /// Appends a text frame carrying `text` to `out`.
    pub fn text(&mut self, out: &mut Vec<u8>, text: &str) {
        self.frame(out, OP_TEXT, text.as_bytes());
    }

    /// Appends the pong for a ping with `payload` (at most 125 bytes: [`Incoming::Ping`]).
    pub fn pong(&mut self, out: &mut Vec<u8>, payload: &[u8]) {
        let n = payload.len().min(MAX_CONTROL_PAYLOAD);
        self.frame(out, OP_PONG, &payload[..n]);
    }

    /// Appends a close frame with `code` (none: an empty close, §5.5.1).
    pub fn close(&mut self, out: &mut Vec<u8>, code: Option<u16>) {
        match code {
            Some(c) => self.frame(out, OP_CLOSE, &c.to_be_bytes()),
            None => self.frame(out, OP_CLOSE, &[]),
        }
    }

    fn frame(&mut self, out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
        out.reserve(MAX_CLIENT_HEADER + payload.len());
        out.push(0x80 | opcode);
        let len = payload.len();
        if len < 126 {
            out.push(0x80 | len as u8);
        } else if let Ok(n) = u16::try_from(len) {
            out.push(0x80 | 126);
            out.extend_from_slice(&n.to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        let key = self.keys.next();
        out.extend_from_slice(&key);
        let from = out.len();
        out.extend_from_slice(payload);
        apply_mask(&mut out[from..], key);
    }
}

/// XORs `bytes` with the repeated `key` (§5.3), eight bytes at a time.
fn apply_mask(bytes: &mut [u8], key: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = bytes.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut w = [0; 8];
        w.copy_from_slice(c);
        c.copy_from_slice(&(u64::from_ne_bytes(w) ^ wide).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unmasked server frame.
    fn server_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => f.push(n as u8),
            n if n <= 0xFFFF => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        f
    }

    /// Feeds `bytes` in reads of at most `step` bytes, collecting what the reader hands out.
    fn read_all(r: &mut FrameReader, bytes: &[u8], step: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = bytes;
        loop {
            loop {
                match r.next_frame().expect("valid frames") {
                    Some(Incoming::Text(t)) => out.push(format!("text:{t}")),
                    Some(other) => out.push(format!("{other:?}")),
                    None => break,
                }
            }
            if rest.is_empty() {
                return out;
            }
            let space = r.space();
            let n = step.min(space.len()).min(rest.len());
            space[..n].copy_from_slice(&rest[..n]);
            r.filled(n);
            rest = &rest[n..];
        }
    }

    #[test]
    fn frames_arrive_whole_whatever_the_read_sizes() {
        let big = "x".repeat(11_000);
        let mut wire = server_frame(true, OP_TEXT, b"{\"type\":\"ping\"}");
        wire.extend(server_frame(true, OP_PING, b"p1"));
        wire.extend(server_frame(true, OP_TEXT, big.as_bytes()));
        wire.extend(server_frame(true, OP_BINARY, &[1, 2, 3]));
        wire.extend(server_frame(true, OP_PONG, b""));
        wire.extend(server_frame(true, OP_CLOSE, &1000u16.to_be_bytes()));
        let want = vec![
            "text:{\"type\":\"ping\"}".to_string(),
            format!("{:?}", Incoming::Ping(b"p1")),
            format!("text:{big}"),
            "Binary(3)".to_string(),
            "Pong".to_string(),
            "Close(Some(1000))".to_string(),
        ];
        for step in [1, 7, 100, 4096, 100_000] {
            let mut r = FrameReader::new(1 << 20, &[]);
            assert_eq!(read_all(&mut r, &wire, step), want, "reads of {step}");
        }
    }

    #[test]
    fn a_large_frame_gets_its_own_buffer_read_to_its_end_and_freed() {
        let big = "y".repeat(10_700);
        let mut wire = server_frame(true, OP_TEXT, big.as_bytes());
        let next = server_frame(true, OP_TEXT, b"next");
        wire.extend_from_slice(&next);
        let mut r = FrameReader::new(1 << 20, &[]);
        assert_eq!(r.capacity(), RESIDENT_READ_BYTES);
        let mut rest = &wire[..];
        let mut reads = Vec::new();
        let got = loop {
            if let Some(Incoming::Text(t)) = r.next_frame().expect("a valid frame") {
                break t.len();
            }
            let space = r.space();
            let n = space.len().min(rest.len());
            space[..n].copy_from_slice(&rest[..n]);
            r.filled(n);
            rest = &rest[n..];
            reads.push(n);
        };
        assert_eq!(got, big.len());
        // One read fills the resident buffer; the header sizes a buffer for exactly the rest,
        // so the second read stops at the frame's end and the next frame stays unread.
        assert_eq!(
            reads,
            vec![
                RESIDENT_READ_BYTES,
                wire.len() - next.len() - RESIDENT_READ_BYTES
            ]
        );
        assert_eq!(rest, &next[..]);
        assert_eq!(r.text().map(str::len), Some(big.len()));
        assert_eq!(r.next_frame().expect("nothing left to fail"), None);
        assert_eq!(r.capacity(), RESIDENT_READ_BYTES, "large buffer freed");
        assert!(r.is_idle());
    }

    #[test]
    fn fragments_are_assembled_and_controls_may_come_between() {
        let mut wire = server_frame(false, OP_TEXT, b"{\"a\":");
        wire.extend(server_frame(true, OP_PING, b"x"));
        wire.extend(server_frame(false, OP_CONTINUATION, b"\"\xC3"));
        wire.extend(server_frame(true, OP_CONTINUATION, b"\xA4\"}"));
        let mut r = FrameReader::new(1 << 20, &[]);
        let got = read_all(&mut r, &wire, 3);
        assert_eq!(
            got,
            vec!["Ping([120])".to_string(), "text:{\"a\":\"ä\"}".into()]
        );
        assert_eq!(r.capacity(), RESIDENT_READ_BYTES, "assembly freed");
    }

    #[test]
    fn leftover_bytes_from_the_handshake_are_read_first() {
        let wire = server_frame(true, OP_TEXT, b"hi");
        let mut r = FrameReader::new(1 << 20, &wire);
        assert_eq!(
            r.next_frame().expect("a valid frame"),
            Some(Incoming::Text("hi"))
        );
    }

    fn first_error(wire: &[u8], max: usize) -> FrameError {
        let mut r = FrameReader::new(max, wire);
        loop {
            match r.next_frame() {
                Ok(Some(_)) => {}
                Ok(None) => panic!("no error"),
                Err(e) => return e,
            }
        }
    }

    #[test]
    fn bad_frames_fail_with_the_rfc_close_codes() {
        let masked = [0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2];
        assert_eq!(first_error(&masked, 100), FrameError::Masked);
        assert_eq!(first_error(&[0xC1, 0], 100), FrameError::ReservedBits);
        assert_eq!(first_error(&[0x83, 0], 100), FrameError::UnknownOpcode);
        let long_ping = server_frame(true, OP_PING, &[0; 126]);
        assert_eq!(first_error(&long_ping, 1000), FrameError::BadControlFrame);
        let fragmented_ping = server_frame(false, OP_PING, b"");
        assert_eq!(
            first_error(&fragmented_ping, 100),
            FrameError::BadControlFrame
        );
        let stray = server_frame(true, OP_CONTINUATION, b"x");
        assert_eq!(first_error(&stray, 100), FrameError::BadFragmentation);
        let mut nested = server_frame(false, OP_TEXT, b"a");
        nested.extend(server_frame(true, OP_TEXT, b"b"));
        assert_eq!(first_error(&nested, 100), FrameError::BadFragmentation);
        let big = server_frame(true, OP_TEXT, &[b'a'; 101]);
        assert_eq!(first_error(&big, 100), FrameError::TooLarge);
        assert_eq!(first_error(&big, 100).close_code(), 1009);
        // The limit holds for a message assembled from fragments too.
        let mut pieces = server_frame(false, OP_TEXT, &[b'a'; 60]);
        pieces.extend(server_frame(true, OP_CONTINUATION, &[b'a'; 60]));
        assert_eq!(first_error(&pieces, 100), FrameError::TooLarge);
        let huge = [0x81, 127, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(first_error(&huge, 100), FrameError::BadLength);
        let not_utf8 = server_frame(true, OP_TEXT, b"\xFF");
        assert_eq!(first_error(&not_utf8, 100), FrameError::NotUtf8);
        assert_eq!(first_error(&not_utf8, 100).close_code(), 1007);
        let one_byte_close = server_frame(true, OP_CLOSE, b"x");
        assert_eq!(first_error(&one_byte_close, 100), FrameError::BadClose);
        // Codes that must never be sent are not echoed: the close fails with 1002 instead.
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 2999, 5000] {
            let close = server_frame(true, OP_CLOSE, &code.to_be_bytes());
            assert_eq!(
                first_error(&close, 100),
                FrameError::BadClose,
                "code {code}"
            );
        }
        for code in [1000u16, 1008, 1011, 1014, 3000, 4999] {
            let close = server_frame(true, OP_CLOSE, &code.to_be_bytes());
            let mut r = FrameReader::new(100, &close);
            assert_eq!(r.next_frame(), Ok(Some(Incoming::Close(Some(code)))));
        }
    }

    #[test]
    fn a_fragment_out_of_sequence_is_refused_at_its_header() {
        // A new 10 KiB message inside a fragmented one: only the header is in, and it fails
        // before any buffer is sized for the frame.
        let mut wire = server_frame(false, OP_TEXT, b"a");
        wire.extend_from_slice(&[0x81, 126, 0x28, 0x00]);
        let mut r = FrameReader::new(1 << 20, &wire);
        assert_eq!(r.next_frame(), Err(FrameError::BadFragmentation));
        assert_eq!(r.capacity(), RESIDENT_READ_BYTES + 1);
    }

    #[test]
    fn many_tiny_fragments_are_assembled_into_one_message() {
        let mut wire = server_frame(false, OP_TEXT, b"a");
        for _ in 0..999 {
            wire.extend(server_frame(false, OP_CONTINUATION, b"a"));
        }
        wire.extend(server_frame(true, OP_CONTINUATION, b"a"));
        let mut r = FrameReader::new(1 << 20, &[]);
        let got = read_all(&mut r, &wire, 4096);
        assert_eq!(got, vec![format!("text:{}", "a".repeat(1001))]);
    }

    #[test]
    fn a_huge_announced_frame_reserves_nothing() {
        // 2^40 bytes announced: refused at the header, before any buffer grows.
        let mut r = FrameReader::new(1 << 20, &[0x81, 127, 0, 0, 1, 0, 0, 0, 0, 0]);
        assert_eq!(r.next_frame(), Err(FrameError::TooLarge));
        assert!(!r.space().is_empty());
        assert_eq!(r.capacity(), RESIDENT_READ_BYTES);
    }

    /// Unmasks a client frame the way a server does; returns (opcode, payload).
    fn unmask(frame: &[u8]) -> (u8, Vec<u8>) {
        assert_eq!(frame[0] & 0x80, 0x80, "FIN");
        assert_eq!(frame[1] & 0x80, 0x80, "client frames are masked");
        let (len, at) = match frame[1] & 0x7F {
            126 => (u16::from_be_bytes([frame[2], frame[3]]) as usize, 4),
            127 => (
                u64::from_be_bytes(frame[2..10].try_into().expect("a slice of 8")) as usize,
                10,
            ),
            n => (n as usize, 2),
        };
        let key = &frame[at..at + 4];
        let payload = frame[at + 4..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key[i % 4])
            .collect::<Vec<_>>();
        assert_eq!(payload.len(), len);
        (frame[0] & 0x0F, payload)
    }

    #[test]
    fn written_frames_are_masked_and_unmask_to_the_payload() {
        let mut w = FrameWriter::new([7; 32]);
        for len in [0, 1, 7, 8, 9, 125, 126, 300, 65_535, 65_536] {
            let text = "é".repeat(len / 2) + &"a".repeat(len % 2);
            let mut out = Vec::new();
            w.text(&mut out, &text);
            assert_eq!(unmask(&out), (OP_TEXT, text.into_bytes()), "length {len}");
        }
        let mut out = Vec::new();
        w.pong(&mut out, b"abc");
        assert_eq!(unmask(&out), (OP_PONG, b"abc".to_vec()));
        out.clear();
        w.close(&mut out, Some(1000));
        assert_eq!(unmask(&out), (OP_CLOSE, vec![0x03, 0xE8]));
    }

    #[test]
    fn masking_keys_do_not_repeat() {
        let mut w = FrameWriter::new([1; 32]);
        let keys: std::collections::HashSet<[u8; 4]> = (0..1000).map(|_| w.keys.next()).collect();
        assert!(keys.len() > 990, "{} distinct keys of 1000", keys.len());
        let mut other = FrameWriter::new([2; 32]);
        assert_ne!(
            w.keys.next(),
            other.keys.next(),
            "seeds give different keys"
        );
    }

    fn endpoint() -> Endpoint {
        Endpoint::parse("wss://api.elevenlabs.io/v1/convai/conversation?agent_id=a1")
            .expect("a valid wss URL")
    }

    #[test]
    fn the_handshake_request_asks_for_version_13_and_nothing_else() {
        let req = handshake_request(&endpoint(), "dGhlIHNhbXBsZSBub25jZQ==")
            .expect("a clean URL and key");
        let text = String::from_utf8(req).expect("the request is ASCII");
        assert!(text.starts_with("GET /v1/convai/conversation?agent_id=a1 HTTP/1.1\r\n"));
        for line in [
            "Host: api.elevenlabs.io\r\n",
            "Upgrade: websocket\r\n",
            "Connection: Upgrade\r\n",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
            "Sec-WebSocket-Version: 13\r\n",
        ] {
            assert!(text.contains(line), "{line}");
        }
        assert!(!text.contains("Extensions") && !text.contains("Protocol"));
        assert!(text.ends_with("\r\n\r\n"));
        let mut bad = endpoint();
        bad.target.push_str("\r\nX: y");
        assert_eq!(handshake_request(&bad, "k"), Err(BadHeader));
    }

    /// RFC 6455 §1.3's example key and accept value.
    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    fn response(extra: &str) -> String {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             {extra}\r\n"
        )
    }

    #[test]
    fn the_handshake_response_is_checked() {
        let ok = response(&format!("Sec-WebSocket-Accept: {ACCEPT}\r\n"));
        let mut with_frame = ok.clone().into_bytes();
        with_frame.extend_from_slice(&[0x81, 0]);
        assert_eq!(
            parse_handshake_response(&with_frame, false, KEY),
            Ok(Some(ok.len()))
        );
        assert_eq!(
            parse_handshake_response(&ok.as_bytes()[..20], false, KEY),
            Ok(None)
        );
        assert_eq!(
            parse_handshake_response(&ok.as_bytes()[..20], true, KEY),
            Err(HandshakeError::Truncated)
        );
        let refused = "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            parse_handshake_response(refused.as_bytes(), false, KEY),
            Err(HandshakeError::Status(403))
        );
        let wrong = response("Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n");
        assert_eq!(
            parse_handshake_response(wrong.as_bytes(), false, KEY),
            Err(HandshakeError::BadAccept)
        );
        let missing = response("");
        assert_eq!(
            parse_handshake_response(missing.as_bytes(), false, KEY),
            Err(HandshakeError::BadAccept)
        );
        let ext = response(&format!(
            "Sec-WebSocket-Accept: {ACCEPT}\r\nSec-WebSocket-Extensions: permessage-deflate\r\n"
        ));
        assert_eq!(
            parse_handshake_response(ext.as_bytes(), false, KEY),
            Err(HandshakeError::NotOffered)
        );
        let not_upgrade = format!(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: keep-alive\r\n\
             Sec-WebSocket-Accept: {ACCEPT}\r\n\r\n"
        );
        assert_eq!(
            parse_handshake_response(not_upgrade.as_bytes(), false, KEY),
            Err(HandshakeError::NotUpgrade)
        );
        let tokens = format!(
            "HTTP/1.1 101 OK\r\nupgrade: WebSocket\r\nconnection: keep-alive, upgrade\r\n\
             sec-websocket-accept: {ACCEPT}\r\n\r\n"
        );
        assert!(matches!(
            parse_handshake_response(tokens.as_bytes(), false, KEY),
            Ok(Some(_))
        ));
        let http10 = ok.replace("HTTP/1.1", "HTTP/1.0");
        assert_eq!(
            parse_handshake_response(http10.as_bytes(), false, KEY),
            Err(HandshakeError::MalformedHead)
        );
        let endless = vec![b'a'; MAX_HANDSHAKE_RESPONSE_BYTES];
        let mut head = b"HTTP/1.1 101 OK\r\nX: ".to_vec();
        head.extend_from_slice(&endless);
        assert_eq!(
            parse_handshake_response(&head, false, KEY),
            Err(HandshakeError::MalformedHead)
        );
    }
}
