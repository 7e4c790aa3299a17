//! A client connection over a Unix socket or TCP, read and written whole
//! messages at a time.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;

/// One side of a client connection.
pub(crate) enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Conn {
    pub(crate) fn read_exact(&self, buf: &mut [u8]) -> io::Result<()> {
        match self {
            Conn::Unix(s) => (&*s).read_exact(buf),
            Conn::Tcp(s) => (&*s).read_exact(buf),
        }
    }

    pub(crate) fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        match self {
            Conn::Unix(s) => (&*s).write_all(buf),
            Conn::Tcp(s) => (&*s).write_all(buf),
        }
    }

    pub(crate) fn try_clone(&self) -> io::Result<Conn> {
        Ok(match self {
            Conn::Unix(s) => Conn::Unix(s.try_clone()?),
            Conn::Tcp(s) => Conn::Tcp(s.try_clone()?),
        })
    }

    /// Ends the connection both ways: blocked reads and writes on every clone
    /// return.
    pub(crate) fn shutdown(&self) {
        let _ = match self {
            Conn::Unix(s) => s.shutdown(Shutdown::Both),
            Conn::Tcp(s) => s.shutdown(Shutdown::Both),
        };
    }

    /// Ends the reading side only: a blocked read returns end-of-file, while
    /// replies can still be written.
    pub(crate) fn shutdown_read(&self) {
        let _ = match self {
            Conn::Unix(s) => s.shutdown(Shutdown::Read),
            Conn::Tcp(s) => s.shutdown(Shutdown::Read),
        };
    }

    /// Reads and drops `n` bytes, a bounded buffer at a time.
    pub(crate) fn skip(&self, mut n: u64) -> io::Result<()> {
        let mut buf = [0u8; 16 << 10];
        while n > 0 {
            let k = n.min(buf.len() as u64) as usize;
            self.read_exact(&mut buf[..k])?;
            n -= k as u64;
        }
        Ok(())
    }

    /// A big-endian u32.
    pub(crate) fn read_u32(&self) -> io::Result<u32> {
        let mut b = [0u8; 4];
        self.read_exact(&mut b)?;
        Ok(u32::from_be_bytes(b))
    }
}
