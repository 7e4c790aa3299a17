//! Decompressing compressed clusters (qcow2 specification, "Compressed
//! Clusters Descriptor"): raw deflate for compression type zlib, a zstd frame
//! for zstd. The stored bytes run to a sector boundary, so whatever follows
//! the compressed stream is ignored.

use super::header::Compression;

/// Decompresses `input` into the whole of `out` (one cluster). Fails unless the
/// stream yields exactly enough bytes to fill it.
pub fn decompress(kind: Compression, input: &[u8], out: &mut [u8]) -> Result<(), String> {
    match kind {
        Compression::Zlib => inflate(input, out),
        Compression::Zstd => unzstd(input, out),
    }
}

fn inflate(input: &[u8], out: &mut [u8]) -> Result<(), String> {
    use flate2::{Decompress, FlushDecompress, Status};
    let mut d = Decompress::new(false);
    loop {
        let (i, o) = (d.total_in() as usize, d.total_out() as usize);
        if o == out.len() {
            return Ok(());
        }
        let (Some(src), Some(dst)) = (input.get(i..), out.get_mut(o..)) else {
            return Err("deflate stream position out of range".into());
        };
        let status = d
            .decompress(src, dst, FlushDecompress::None)
            .map_err(|e| format!("deflate data is invalid ({e})"))?;
        let progressed = d.total_in() as usize != i || d.total_out() as usize != o;
        if status == Status::StreamEnd || !progressed {
            if d.total_out() as usize == out.len() {
                return Ok(());
            }
            return Err(format!(
                "deflate data ends after {} of the cluster's {} bytes",
                d.total_out(),
                out.len()
            ));
        }
    }
}

fn unzstd(input: &[u8], out: &mut [u8]) -> Result<(), String> {
    use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};
    let mut d = Decoder::new().map_err(|e| format!("zstd: {e}"))?;
    let mut src = InBuffer::around(input);
    let mut dst = OutBuffer::around(out);
    loop {
        let (i, o) = (src.pos(), dst.pos());
        if o == dst.capacity() {
            return Ok(());
        }
        let hint = d
            .run(&mut src, &mut dst)
            .map_err(|e| format!("zstd data is invalid ({e})"))?;
        if dst.pos() == dst.capacity() {
            return Ok(());
        }
        if hint == 0 || (src.pos() == i && dst.pos() == o) {
            return Err(format!(
                "zstd data ends after {} of the cluster's {} bytes",
                dst.pos(),
                dst.capacity()
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflates_raw_deflate_with_trailing_bytes() {
        use std::io::Write;
        let data: Vec<u8> = (0..4096u32).map(|i| (i % 7) as u8).collect();
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&data).unwrap();
        let mut c = e.finish().unwrap();
        c.extend_from_slice(&[0xaa; 100]);
        let mut out = vec![0u8; 4096];
        decompress(Compression::Zlib, &c, &mut out).unwrap();
        assert_eq!(out, data);
        let mut short = vec![0u8; 8192];
        assert!(decompress(Compression::Zlib, &c, &mut short).is_err());
    }

    #[test]
    fn unpacks_zstd_with_trailing_bytes() {
        let data: Vec<u8> = (0..4096u32).map(|i| (i % 13) as u8).collect();
        let mut c = zstd::bulk::compress(&data, 1).unwrap();
        c.extend_from_slice(&[0; 300]);
        let mut out = vec![0u8; 4096];
        decompress(Compression::Zstd, &c, &mut out).unwrap();
        assert_eq!(out, data);
        assert!(decompress(Compression::Zstd, &[1, 2, 3, 4, 5, 6, 7, 8], &mut out).is_err());
    }
}
