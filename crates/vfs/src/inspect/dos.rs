//! DOS: MS-DOS (`IO.SYS` and `MSDOS.SYS`), PC DOS (`IBMBIO.COM` and
//! `IBMDOS.COM`) and FreeDOS (`KERNEL.SYS`), from the system files in the
//! root of the boot volume.

use super::reader::Reader;
use super::{Family, Os};

/// The most bytes of a system file searched for a version.
const FILE_MAX: usize = 256 << 10;
/// The most bytes of a configuration file read.
const TEXT_MAX: usize = 64 << 10;

/// DOS runs 16-bit x86 code.
const ARCH: &str = "x86";

/// The DOS this volume boots, if any.
pub(crate) fn inspect(r: &mut Reader<'_>) -> Option<Os> {
    if r.is_file("/KERNEL.SYS") {
        return Some(freedos(r));
    }
    if r.is_file("/IO.SYS") && r.is_file("/MSDOS.SYS") {
        return Some(msdos(r));
    }
    if r.is_file("/IBMBIO.COM") && r.is_file("/IBMDOS.COM") {
        let mut os = dos("pcdos");
        os.version = r
            .read_head("/COMMAND.COM", FILE_MAX)
            .and_then(|b| version_after(&b, b"Version "));
        os.name = Some(named("PC DOS", os.version.as_deref()));
        return Some(os);
    }
    None
}

fn dos(distribution: &str) -> Os {
    let mut os = Os::new(Family::Dos);
    os.distribution = Some(distribution.to_string());
    os.architecture = Some(ARCH.to_string());
    os
}

fn named(product: &str, version: Option<&str>) -> String {
    match version {
        Some(v) => format!("{product} {v}"),
        None => product.to_string(),
    }
}

fn freedos(r: &mut Reader<'_>) -> Os {
    let mut os = dos("freedos");
    let dirs: Vec<&str> = ["/FREEDOS", "/FDOS"]
        .into_iter()
        .filter(|d| r.is_dir(d))
        .collect();
    // FreeDOS 1.2 and later record the release in VERSION.FDI and set
    // OS_VERSION in their start-up files.
    let mut sources: Vec<(String, &[u8])> = dirs
        .iter()
        .map(|d| (format!("{d}/VERSION.FDI"), b"VERSION=".as_slice()))
        .collect();
    for f in ["/FDCONFIG.SYS", "/FDAUTO.BAT", "/AUTOEXEC.BAT"] {
        sources.push((f.to_string(), b"OS_VERSION="));
    }
    for d in &dirs {
        sources.push((format!("{d}/FDAUTO.BAT"), b"OS_VERSION="));
    }
    os.version = sources.iter().find_map(|(path, key)| {
        let text = r.read_head(path, TEXT_MAX)?;
        version_after(&text, key)
    });
    os.name = Some(named("FreeDOS", os.version.as_deref()));
    os
}

fn msdos(r: &mut Reader<'_>) -> Os {
    let mut os = dos("msdos");
    // The MSDOS.SYS of Windows 95, 98 and ME is a text file naming the
    // Windows release; earlier ones are binary.
    let winver = r
        .read_head("/MSDOS.SYS", TEXT_MAX)
        .and_then(|b| version_after(&b, b"WinVer="));
    if let Some(w) = winver {
        let (dos_version, windows) = if w.starts_with("4.90") {
            ("8.0", "Windows ME")
        } else if w.starts_with("4.10") {
            ("7.1", "Windows 98")
        } else if w.starts_with("4.00.950") || w == "4.00" || w == "4.0" {
            ("7.0", "Windows 95")
        } else {
            ("7.1", "Windows 95 OSR2")
        };
        os.version = Some(dos_version.to_string());
        os.name = Some(format!("MS-DOS {dos_version} ({windows})"));
        return os;
    }
    // COMMAND.COM carries the message VER prints: "MS-DOS Version 6.22".
    os.version = ["/COMMAND.COM", "/IO.SYS"].iter().find_map(|p| {
        let b = r.read_head(p, FILE_MAX)?;
        version_after(&b, b"MS-DOS Version ").or_else(|| version_after(&b, b"Version "))
    });
    os.name = Some(named("MS-DOS", os.version.as_deref()));
    os
}

/// The version number ("6.22", "1.3", "4.10.2222") just after the first
/// occurrence of `key` in `b` (ASCII case ignored).
pub(crate) fn version_after(b: &[u8], key: &[u8]) -> Option<String> {
    if key.is_empty() || b.len() < key.len() {
        return None;
    }
    b.windows(key.len())
        .enumerate()
        .filter(|(_, w)| w.eq_ignore_ascii_case(key))
        .find_map(|(i, _)| {
            let rest = b.get(i + key.len()..)?;
            let v: Vec<u8> = rest
                .iter()
                .take(32)
                .take_while(|c| c.is_ascii_digit() || **c == b'.')
                .copied()
                .collect();
            let v = String::from_utf8(v).ok()?;
            let v = v.trim_end_matches('.');
            (v.starts_with(|c: char| c.is_ascii_digit())).then(|| v.to_string())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(
            version_after(b"\0\0MS-DOS Version 6.22\r\n", b"MS-DOS Version ").as_deref(),
            Some("6.22")
        );
        assert_eq!(
            version_after(b"[Options]\r\nwinver=4.10.2222\r\n", b"WinVer=").as_deref(),
            Some("4.10.2222")
        );
        assert_eq!(
            version_after(b"SET OS_VERSION=x\nSET OS_VERSION=1.3.\n", b"OS_VERSION=").as_deref(),
            Some("1.3")
        );
        assert_eq!(version_after(b"Version", b"Version "), None);
    }
}
