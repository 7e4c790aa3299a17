//! The fixed newstyle handshake: greeting, client flags, and option haggling
//! until the client chooses an export (`NBD_OPT_GO` or `NBD_OPT_EXPORT_NAME`)
//! or leaves.

use crate::conn::Conn;
use crate::proto::{self, info, opt, rep, tflag};
use crate::Shared;
use std::io;
use std::sync::Arc;

/// The longest option data read; longer options get `NBD_REP_ERR_TOO_BIG`.
const MAX_OPTION: u32 = 64 << 10;
/// Options accepted before the client must choose an export.
const MAX_OPTIONS: usize = 10_000;

/// What the handshake settled.
pub(crate) struct Session {
    /// The export chosen.
    pub export: Arc<Shared>,
    /// Whether structured replies were negotiated.
    pub structured: bool,
    /// Whether `base:allocation` was chosen.
    pub allocation: bool,
}

/// The handshake's state between options.
struct Haggle<'a> {
    conn: &'a Conn,
    exports: &'a [Arc<Shared>],
    structured: bool,
    allocation: bool,
    no_zeroes: bool,
}

/// Runs the handshake; `None` when the client leaves or breaks the protocol
/// (the connection is then closed, as the protocol asks).
pub(crate) fn negotiate(conn: &Conn, exports: &[Arc<Shared>]) -> io::Result<Option<Session>> {
    let mut hello = Vec::with_capacity(18);
    hello.extend_from_slice(&proto::NBDMAGIC.to_be_bytes());
    hello.extend_from_slice(&proto::IHAVEOPT.to_be_bytes());
    hello.extend_from_slice(&(proto::FLAG_FIXED_NEWSTYLE | proto::FLAG_NO_ZEROES).to_be_bytes());
    conn.write_all(&hello)?;
    let flags = conn.read_u32()?;
    if flags & !(proto::FLAG_C_FIXED_NEWSTYLE | proto::FLAG_C_NO_ZEROES) != 0 {
        // Unknown client flags: the protocol says to drop the connection.
        return Ok(None);
    }
    let mut h = Haggle {
        conn,
        exports,
        structured: false,
        allocation: false,
        no_zeroes: flags & proto::FLAG_C_NO_ZEROES != 0,
    };
    for _ in 0..MAX_OPTIONS {
        let mut head = [0u8; 16];
        conn.read_exact(&mut head)?;
        let mut f = proto::Fields::new(&head);
        let magic = f.bytes(8).map(|b| {
            let mut m = [0u8; 8];
            m.copy_from_slice(b);
            u64::from_be_bytes(m)
        });
        let (Some(magic), Some(option), Some(len)) = (magic, f.u32(), f.u32()) else {
            return Ok(None);
        };
        if magic != proto::IHAVEOPT {
            return Ok(None);
        }
        if len > MAX_OPTION {
            conn.skip(u64::from(len))?;
            if option == opt::EXPORT_NAME {
                return Ok(None);
            }
            h.error(option, rep::ERR_TOO_BIG, "option data too large")?;
            continue;
        }
        let mut data = vec![0u8; len as usize];
        conn.read_exact(&mut data)?;
        match h.option(option, &data)? {
            Step::Continue => {}
            Step::Close => return Ok(None),
            Step::Go(export) => {
                return Ok(Some(Session {
                    export,
                    structured: h.structured,
                    allocation: h.allocation,
                }))
            }
        }
    }
    Ok(None)
}

/// What follows an option.
enum Step {
    Continue,
    Close,
    Go(Arc<Shared>),
}

impl Haggle<'_> {
    fn reply(&self, option: u32, kind: u32, data: &[u8]) -> io::Result<()> {
        self.conn
            .write_all(&proto::option_reply(option, kind, data))
    }

    fn error(&self, option: u32, kind: u32, message: &str) -> io::Result<()> {
        self.reply(option, kind, message.as_bytes())
    }

    fn find(&self, name: &[u8]) -> Option<Arc<Shared>> {
        // The empty name is the default export: the first one.
        if name.is_empty() {
            return self.exports.first().cloned();
        }
        self.exports
            .iter()
            .find(|e| e.name.as_bytes() == name)
            .cloned()
    }

    fn transmission_flags(&self, e: &Shared) -> u16 {
        let mut f = tflag::HAS_FLAGS
            | tflag::SEND_FLUSH
            | tflag::SEND_FUA
            | tflag::SEND_TRIM
            | tflag::SEND_WRITE_ZEROES
            | tflag::CAN_MULTI_CONN
            | tflag::SEND_CACHE;
        if e.read_only {
            f |= tflag::READ_ONLY;
        }
        if self.structured {
            f |= tflag::SEND_DF;
        }
        f
    }

    fn option(&mut self, option: u32, data: &[u8]) -> io::Result<Step> {
        match option {
            opt::EXPORT_NAME => {
                // No error reply exists for this option: an unknown name
                // closes the connection.
                let Some(e) = self.find(data) else {
                    return Ok(Step::Close);
                };
                let mut b = Vec::with_capacity(134);
                b.extend_from_slice(&e.size.to_be_bytes());
                b.extend_from_slice(&self.transmission_flags(&e).to_be_bytes());
                if !self.no_zeroes {
                    b.extend_from_slice(&[0u8; 124]);
                }
                self.conn.write_all(&b)?;
                Ok(Step::Go(e))
            }
            opt::ABORT => {
                // The client may already be gone.
                let _ = self.reply(option, rep::ACK, &[]);
                Ok(Step::Close)
            }
            opt::LIST => {
                if !data.is_empty() {
                    self.error(option, rep::ERR_INVALID, "LIST takes no data")?;
                    return Ok(Step::Continue);
                }
                for e in self.exports {
                    let mut d = Vec::new();
                    d.extend_from_slice(&(e.name.len() as u32).to_be_bytes());
                    d.extend_from_slice(e.name.as_bytes());
                    d.extend_from_slice(e.description.as_bytes());
                    self.reply(option, rep::SERVER, &d)?;
                }
                self.reply(option, rep::ACK, &[])?;
                Ok(Step::Continue)
            }
            opt::INFO | opt::GO => self.info(option, data),
            opt::STRUCTURED_REPLY => {
                if !data.is_empty() {
                    self.error(option, rep::ERR_INVALID, "STRUCTURED_REPLY takes no data")?;
                } else {
                    self.structured = true;
                    self.reply(option, rep::ACK, &[])?;
                }
                Ok(Step::Continue)
            }
            opt::LIST_META_CONTEXT | opt::SET_META_CONTEXT => self.meta(option, data),
            opt::STARTTLS => {
                self.error(option, rep::ERR_UNSUP, "TLS is not offered")?;
                Ok(Step::Continue)
            }
            _ => {
                self.error(option, rep::ERR_UNSUP, "unknown option")?;
                Ok(Step::Continue)
            }
        }
    }

    fn info(&mut self, option: u32, data: &[u8]) -> io::Result<Step> {
        let Some(req) = proto::parse_info(data) else {
            self.error(option, rep::ERR_INVALID, "malformed INFO/GO request")?;
            return Ok(Step::Continue);
        };
        let Some(e) = self.find(req.name) else {
            let msg = format!("no export named {:?}", String::from_utf8_lossy(req.name));
            self.error(option, rep::ERR_UNKNOWN, &msg)?;
            return Ok(Step::Continue);
        };
        let mut export = Vec::with_capacity(12);
        export.extend_from_slice(&info::EXPORT.to_be_bytes());
        export.extend_from_slice(&e.size.to_be_bytes());
        export.extend_from_slice(&self.transmission_flags(&e).to_be_bytes());
        self.reply(option, rep::INFO, &export)?;
        let mut sent = Vec::new();
        for &want in &req.wanted {
            if sent.contains(&want) {
                continue;
            }
            sent.push(want);
            let mut d = want.to_be_bytes().to_vec();
            match want {
                info::NAME => d.extend_from_slice(e.name.as_bytes()),
                info::DESCRIPTION if !e.description.is_empty() => {
                    d.extend_from_slice(e.description.as_bytes())
                }
                info::BLOCK_SIZE => {
                    // Any alignment works; 4 KiB is what the images store best.
                    for v in [1u32, 4096, crate::MAX_PAYLOAD] {
                        d.extend_from_slice(&v.to_be_bytes());
                    }
                }
                _ => continue,
            }
            self.reply(option, rep::INFO, &d)?;
        }
        self.reply(option, rep::ACK, &[])?;
        Ok(if option == opt::GO {
            Step::Go(e)
        } else {
            Step::Continue
        })
    }

    fn meta(&mut self, option: u32, data: &[u8]) -> io::Result<Step> {
        if !self.structured {
            self.error(
                option,
                rep::ERR_INVALID,
                "metadata contexts need structured replies first",
            )?;
            return Ok(Step::Continue);
        }
        let Some(req) = proto::parse_meta(data) else {
            self.error(
                option,
                rep::ERR_INVALID,
                "malformed metadata context request",
            )?;
            return Ok(Step::Continue);
        };
        if self.find(req.name).is_none() {
            let msg = format!("no export named {:?}", String::from_utf8_lossy(req.name));
            self.error(option, rep::ERR_UNKNOWN, &msg)?;
            return Ok(Step::Continue);
        }
        let listing = option == opt::LIST_META_CONTEXT;
        let chosen = (listing && req.queries.is_empty())
            || req
                .queries
                .iter()
                .any(|q| proto::selects_base_allocation(q, listing));
        if chosen {
            // Ids in a listing are reserved and zero.
            let id = if listing {
                0
            } else {
                proto::BASE_ALLOCATION_ID
            };
            let mut d = id.to_be_bytes().to_vec();
            d.extend_from_slice(proto::BASE_ALLOCATION.as_bytes());
            self.reply(option, rep::META_CONTEXT, &d)?;
        }
        if !listing {
            // Each SET replaces the previous choice.
            self.allocation = chosen;
        }
        self.reply(option, rep::ACK, &[])?;
        Ok(Step::Continue)
    }
}
