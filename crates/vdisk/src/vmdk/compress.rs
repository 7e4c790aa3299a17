//! Grain compression: deflate in a zlib wrapper, as stream-optimized extents
//! store it.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// Inflates `input` into a buffer of exactly `grain` bytes (zeros after the
/// data). Data that would inflate past `grain` bytes, or that ends early or
/// is not zlib data, is an error.
pub fn inflate(input: &[u8], grain: usize) -> Result<Vec<u8>, String> {
    let mut out = vec![0u8; grain];
    let mut d = Decompress::new(true);
    let status = d
        .decompress(input, &mut out, FlushDecompress::Finish)
        .map_err(|e| format!("compressed data is damaged ({e})"))?;
    match status {
        Status::StreamEnd => Ok(out),
        _ if d.total_out() as usize >= grain => Err(format!(
            "compressed data inflates past the grain size ({grain} bytes)"
        )),
        _ => Err("compressed data ends before its end-of-stream mark".into()),
    }
}

/// Deflates `data` (zlib wrapper).
pub fn deflate(data: &[u8]) -> Result<Vec<u8>, String> {
    let mut c = Compress::new(Compression::fast(), true);
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    loop {
        let before_in = c.total_in() as usize;
        if out.capacity() == out.len() {
            out.reserve(data.len() / 4 + 64);
        }
        match c.compress_vec(&data[before_in..], &mut out, FlushCompress::Finish) {
            Ok(Status::StreamEnd) => return Ok(out),
            Ok(_) => {}
            Err(e) => return Err(format!("deflate failed ({e})")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bounds() {
        let data: Vec<u8> = (0..65536u32).map(|i| (i * 7 / 300) as u8).collect();
        let z = deflate(&data).unwrap();
        assert!(!z.is_empty() && z.len() < data.len());
        assert_eq!(inflate(&z, 65536).unwrap(), data);
        let short = inflate(&z, 4096).unwrap_err();
        assert!(short.contains("past the grain"), "{short}");
        assert!(inflate(&z[..z.len() / 2], 65536).is_err());
        assert!(inflate(b"not zlib at all", 65536).is_err());
        // Shorter data fills the start of the grain.
        let z = deflate(&[9u8; 100]).unwrap();
        let g = inflate(&z, 512).unwrap();
        assert!(g[..100].iter().all(|&b| b == 9) && g[100..].iter().all(|&b| b == 0));
    }
}
