//! The NBD protocol's numbers and wire structures, as its specification
//! (`doc/proto.md` of the NetworkBlockDevice project) defines them: plain
//! values and pure encode/decode functions, no I/O.

/// First 8 bytes the server sends: "NBDMAGIC".
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// "IHAVEOPT": the newstyle magic, and the magic before every option.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Magic before every option reply.
pub const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Magic of a transmission request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Magic of a simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Magic of a structured reply chunk.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// Handshake flags (server).
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
/// Handshake flag: the 124 zero bytes after `NBD_OPT_EXPORT_NAME` may be left out.
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
/// Client flags.
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
/// Client flag: leave out the 124 zero bytes.
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;

/// Transmission flags.
pub mod tflag {
    /// Always set.
    pub const HAS_FLAGS: u16 = 1 << 0;
    /// The export is read-only.
    pub const READ_ONLY: u16 = 1 << 1;
    /// `NBD_CMD_FLUSH` is supported.
    pub const SEND_FLUSH: u16 = 1 << 2;
    /// `NBD_CMD_FLAG_FUA` is supported.
    pub const SEND_FUA: u16 = 1 << 3;
    /// `NBD_CMD_TRIM` is supported.
    pub const SEND_TRIM: u16 = 1 << 5;
    /// `NBD_CMD_WRITE_ZEROES` is supported.
    pub const SEND_WRITE_ZEROES: u16 = 1 << 6;
    /// `NBD_CMD_FLAG_DF` is supported (structured replies only).
    pub const SEND_DF: u16 = 1 << 7;
    /// Flushes and FUA on one connection cover writes from all of them.
    pub const CAN_MULTI_CONN: u16 = 1 << 8;
    /// `NBD_CMD_CACHE` is supported.
    pub const SEND_CACHE: u16 = 1 << 10;
    /// `NBD_CMD_FLAG_FAST_ZERO` is supported.
    pub const SEND_FAST_ZERO: u16 = 1 << 11;
}

/// Options of the handshake.
pub mod opt {
    /// Choose an export and end the handshake (no error replies).
    pub const EXPORT_NAME: u32 = 1;
    /// End the session.
    pub const ABORT: u32 = 2;
    /// List the exports.
    pub const LIST: u32 = 3;
    /// Upgrade to TLS.
    pub const STARTTLS: u32 = 5;
    /// Describe an export.
    pub const INFO: u32 = 6;
    /// Describe an export and choose it.
    pub const GO: u32 = 7;
    /// Use structured replies.
    pub const STRUCTURED_REPLY: u32 = 8;
    /// List metadata contexts.
    pub const LIST_META_CONTEXT: u32 = 9;
    /// Choose metadata contexts.
    pub const SET_META_CONTEXT: u32 = 10;
    /// Use 64-bit headers.
    pub const EXTENDED_HEADERS: u32 = 11;
}

/// Option reply types.
pub mod rep {
    /// Done; no data.
    pub const ACK: u32 = 1;
    /// One export of a list.
    pub const SERVER: u32 = 2;
    /// One piece of information about an export.
    pub const INFO: u32 = 3;
    /// One metadata context.
    pub const META_CONTEXT: u32 = 4;
    const ERR: u32 = 1 << 31;
    /// Unknown option.
    pub const ERR_UNSUP: u32 = ERR | 1;
    /// Forbidden by policy.
    pub const ERR_POLICY: u32 = ERR | 2;
    /// Malformed option.
    pub const ERR_INVALID: u32 = ERR | 3;
    /// No such export.
    pub const ERR_UNKNOWN: u32 = ERR | 6;
    /// The server is shutting down.
    pub const ERR_SHUTDOWN: u32 = ERR | 7;
    /// The option's data is too large.
    pub const ERR_TOO_BIG: u32 = ERR | 9;
}

/// Information types of `NBD_OPT_INFO` and `NBD_OPT_GO`.
pub mod info {
    /// Size and transmission flags.
    pub const EXPORT: u16 = 0;
    /// The export's name.
    pub const NAME: u16 = 1;
    /// A description for humans.
    pub const DESCRIPTION: u16 = 2;
    /// Minimum, preferred and maximum block sizes.
    pub const BLOCK_SIZE: u16 = 3;
}

/// Commands of the transmission phase.
pub mod cmd {
    /// Read.
    pub const READ: u16 = 0;
    /// Write.
    pub const WRITE: u16 = 1;
    /// Disconnect.
    pub const DISC: u16 = 2;
    /// Flush.
    pub const FLUSH: u16 = 3;
    /// Discard.
    pub const TRIM: u16 = 4;
    /// Read ahead.
    pub const CACHE: u16 = 5;
    /// Write zeros.
    pub const WRITE_ZEROES: u16 = 6;
    /// Allocation status.
    pub const BLOCK_STATUS: u16 = 7;
}

/// Command flags.
pub mod cflag {
    /// Force unit access: durable before the reply.
    pub const FUA: u16 = 1 << 0;
    /// Write zeroes without punching a hole.
    pub const NO_HOLE: u16 = 1 << 1;
    /// Do not fragment the read reply.
    pub const DF: u16 = 1 << 2;
    /// Block status: one extent only.
    pub const REQ_ONE: u16 = 1 << 3;
    /// Write zeroes only if it is fast.
    pub const FAST_ZERO: u16 = 1 << 4;
}

/// Structured reply chunk types and flags.
pub mod chunk {
    /// The last chunk of a reply.
    pub const FLAG_DONE: u16 = 1 << 0;
    /// No payload.
    pub const NONE: u16 = 0;
    /// Data at an offset.
    pub const OFFSET_DATA: u16 = 1;
    /// Zeros at an offset.
    pub const OFFSET_HOLE: u16 = 2;
    /// Extents of one metadata context.
    pub const BLOCK_STATUS: u16 = 5;
    /// An error, with a message.
    pub const ERROR: u16 = (1 << 15) | 1;
}

/// Flags of `base:allocation` extents.
pub mod state {
    /// Not allocated.
    pub const HOLE: u32 = 1 << 0;
    /// Reads as zeros.
    pub const ZERO: u32 = 1 << 1;
}

/// Error values of replies (errno numbers, as the protocol fixes them).
pub mod errno {
    /// Not permitted (a write to a read-only export).
    pub const EPERM: u32 = 1;
    /// I/O error.
    pub const EIO: u32 = 5;
    /// Out of memory.
    pub const ENOMEM: u32 = 12;
    /// Invalid request.
    pub const EINVAL: u32 = 22;
    /// No space (a write past the end).
    pub const ENOSPC: u32 = 28;
    /// Value too large.
    pub const EOVERFLOW: u32 = 75;
    /// Not supported.
    pub const ENOTSUP: u32 = 95;
    /// The server is shutting down.
    pub const ESHUTDOWN: u32 = 108;
}

/// The metadata context this server offers.
pub const BASE_ALLOCATION: &str = "base:allocation";
/// The id it gets when chosen.
pub const BASE_ALLOCATION_ID: u32 = 1;

/// A transmission request header (28 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// Command flags.
    pub flags: u16,
    /// The command.
    pub kind: u16,
    /// The client's cookie, echoed in the reply.
    pub cookie: u64,
    /// Offset in the export.
    pub offset: u64,
    /// Length in bytes.
    pub length: u32,
}

/// Size of a request header.
pub const REQUEST_SIZE: usize = 28;

impl Request {
    /// Decodes a request header; `None` when the magic is wrong.
    pub fn decode(b: &[u8; REQUEST_SIZE]) -> Option<Request> {
        if be32(b, 0) != REQUEST_MAGIC {
            return None;
        }
        Some(Request {
            flags: be16(b, 4),
            kind: be16(b, 6),
            cookie: be64(b, 8),
            offset: be64(b, 16),
            length: be32(b, 24),
        })
    }

    /// Encodes the header (for tests and clients).
    pub fn encode(&self) -> [u8; REQUEST_SIZE] {
        let mut b = [0u8; REQUEST_SIZE];
        b[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b[4..6].copy_from_slice(&self.flags.to_be_bytes());
        b[6..8].copy_from_slice(&self.kind.to_be_bytes());
        b[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        b[16..24].copy_from_slice(&self.offset.to_be_bytes());
        b[24..28].copy_from_slice(&self.length.to_be_bytes());
        b
    }
}

/// Size of a simple reply header.
pub const SIMPLE_REPLY_SIZE: usize = 16;
/// Size of a structured reply chunk header.
pub const CHUNK_HEADER_SIZE: usize = 20;

/// A simple reply header.
pub fn simple_reply(error: u32, cookie: u64) -> [u8; SIMPLE_REPLY_SIZE] {
    let mut b = [0u8; SIMPLE_REPLY_SIZE];
    b[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    b[4..8].copy_from_slice(&error.to_be_bytes());
    b[8..16].copy_from_slice(&cookie.to_be_bytes());
    b
}

/// A structured reply chunk header announcing `length` bytes of payload.
pub fn chunk_header(flags: u16, kind: u16, cookie: u64, length: u32) -> [u8; CHUNK_HEADER_SIZE] {
    let mut b = [0u8; CHUNK_HEADER_SIZE];
    b[0..4].copy_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    b[4..6].copy_from_slice(&flags.to_be_bytes());
    b[6..8].copy_from_slice(&kind.to_be_bytes());
    b[8..16].copy_from_slice(&cookie.to_be_bytes());
    b[16..20].copy_from_slice(&length.to_be_bytes());
    b
}

/// A complete `NBD_REPLY_TYPE_ERROR` chunk (the last of its reply).
pub fn error_chunk(cookie: u64, error: u32, message: &str) -> Vec<u8> {
    // The message is at most a 16-bit length; longer ones are cut on a
    // character boundary.
    let mut end = message.len().min(4096);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let msg = &message.as_bytes()[..end];
    let mut b = Vec::with_capacity(CHUNK_HEADER_SIZE + 6 + msg.len());
    b.extend_from_slice(&chunk_header(
        chunk::FLAG_DONE,
        chunk::ERROR,
        cookie,
        (6 + msg.len()) as u32,
    ));
    b.extend_from_slice(&error.to_be_bytes());
    b.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    b.extend_from_slice(msg);
    b
}

/// An option reply: header and data.
pub fn option_reply(option: u32, kind: u32, data: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(20 + data.len());
    b.extend_from_slice(&REPLY_MAGIC.to_be_bytes());
    b.extend_from_slice(&option.to_be_bytes());
    b.extend_from_slice(&kind.to_be_bytes());
    b.extend_from_slice(&(data.len() as u32).to_be_bytes());
    b.extend_from_slice(data);
    b
}

/// A cursor over option data that never reads past its end.
pub struct Fields<'a> {
    data: &'a [u8],
}

impl<'a> Fields<'a> {
    /// Reads fields from `data`.
    pub fn new(data: &'a [u8]) -> Fields<'a> {
        Fields { data }
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.data.len() {
            return None;
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Some(head)
    }

    /// A big-endian u16.
    pub fn u16(&mut self) -> Option<u16> {
        self.bytes(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    /// A big-endian u32.
    pub fn u32(&mut self) -> Option<u32> {
        self.bytes(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A string preceded by its u32 length.
    pub fn string(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()?;
        self.bytes(usize::try_from(n).ok()?)
    }

    /// Whether every byte was read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// What `NBD_OPT_INFO` and `NBD_OPT_GO` ask for.
#[derive(Debug, PartialEq, Eq)]
pub struct InfoRequest<'a> {
    /// The export's name.
    pub name: &'a [u8],
    /// The information types asked for.
    pub wanted: Vec<u16>,
}

/// Parses the data of `NBD_OPT_INFO` or `NBD_OPT_GO`.
pub fn parse_info(data: &[u8]) -> Option<InfoRequest<'_>> {
    let mut f = Fields::new(data);
    let name = f.string()?;
    let n = f.u16()?;
    let mut wanted = Vec::new();
    for _ in 0..n {
        wanted.push(f.u16()?);
    }
    f.is_empty().then_some(InfoRequest { name, wanted })
}

/// What `NBD_OPT_LIST_META_CONTEXT` and `NBD_OPT_SET_META_CONTEXT` ask for.
#[derive(Debug, PartialEq, Eq)]
pub struct MetaRequest<'a> {
    /// The export's name.
    pub name: &'a [u8],
    /// The queries.
    pub queries: Vec<&'a [u8]>,
}

/// Parses the data of the metadata context options.
pub fn parse_meta(data: &[u8]) -> Option<MetaRequest<'_>> {
    let mut f = Fields::new(data);
    let name = f.string()?;
    let n = f.u32()?;
    let mut queries = Vec::new();
    for _ in 0..n {
        // Each query takes at least 4 bytes, so a hostile count runs out of
        // data long before it could exhaust memory.
        queries.push(f.string()?);
    }
    f.is_empty().then_some(MetaRequest { name, queries })
}

/// Whether a metadata query selects `base:allocation`. When listing, the bare
/// namespace `base:` selects every context in it; queries of namespaces this
/// server does not know select nothing.
pub fn selects_base_allocation(query: &[u8], listing: bool) -> bool {
    match query {
        b"base:allocation" => true,
        // Listing accepts a whole namespace.
        b"base:" => listing,
        _ => false,
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let r = Request {
            flags: cflag::FUA,
            kind: cmd::WRITE,
            cookie: 0x0102_0304_0506_0708,
            offset: 1 << 40,
            length: 4096,
        };
        assert_eq!(Request::decode(&r.encode()), Some(r));
        let mut bad = r.encode();
        bad[0] ^= 1;
        assert_eq!(Request::decode(&bad), None);
    }

    #[test]
    fn magics_spell_their_names() {
        assert_eq!(&NBDMAGIC.to_be_bytes(), b"NBDMAGIC");
        assert_eq!(&IHAVEOPT.to_be_bytes(), b"IHAVEOPT");
    }

    #[test]
    fn info_and_meta_requests_parse_exactly() {
        let mut d = Vec::new();
        d.extend_from_slice(&4u32.to_be_bytes());
        d.extend_from_slice(b"disk");
        d.extend_from_slice(&2u16.to_be_bytes());
        d.extend_from_slice(&info::NAME.to_be_bytes());
        d.extend_from_slice(&info::BLOCK_SIZE.to_be_bytes());
        let r = parse_info(&d).unwrap();
        assert_eq!(r.name, b"disk");
        assert_eq!(r.wanted, vec![info::NAME, info::BLOCK_SIZE]);
        // Short, long and lying lengths are refused.
        assert!(parse_info(&d[..d.len() - 1]).is_none());
        let mut long = d.clone();
        long.push(0);
        assert!(parse_info(&long).is_none());
        let mut lying = d.clone();
        lying[3] = 200;
        assert!(parse_info(&lying).is_none());

        let mut m = Vec::new();
        m.extend_from_slice(&0u32.to_be_bytes());
        m.extend_from_slice(&1u32.to_be_bytes());
        m.extend_from_slice(&15u32.to_be_bytes());
        m.extend_from_slice(b"base:allocation");
        let q = parse_meta(&m).unwrap();
        assert_eq!(q.queries, vec![&b"base:allocation"[..]]);
        let mut hostile = m[..8].to_vec();
        hostile[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(parse_meta(&hostile).is_none());
    }

    #[test]
    fn error_chunks_hold_their_message() {
        let c = error_chunk(7, errno::EINVAL, "bad");
        assert_eq!(c.len(), CHUNK_HEADER_SIZE + 6 + 3);
        assert_eq!(be32(&c, 16), 9);
        assert_eq!(be16(&c, 6), chunk::ERROR);
        assert_eq!(&c[CHUNK_HEADER_SIZE + 6..], b"bad");
        // A long message is cut on a character boundary.
        let long = "é".repeat(3000);
        let c = error_chunk(7, errno::EIO, &long);
        assert!(std::str::from_utf8(&c[CHUNK_HEADER_SIZE + 6..]).is_ok());
    }
}
