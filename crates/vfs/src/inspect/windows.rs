//! Windows NT and later: the version and architecture from the kernel's PE
//! headers and version resource, the product name from the version.

use super::pe::{self, VersionInfo};
use super::reader::Reader;
use super::{Family, Os};

/// Bytes read from the start of a PE file for its headers.
const HEAD: usize = 64 << 10;
/// The most bytes of a resource table read.
const RESOURCES_MAX: u32 = 4 << 20;
/// Resource tables further into the file than this are not read (the
/// kernel is about 10 MiB and keeps its resources near the end).
const RESOURCES_FURTHEST: u64 = 64 << 20;

/// The system folder names Windows has used.
const SYSTEM_ROOTS: [&str; 2] = ["/Windows", "/WINNT"];
/// Files whose version is the system's, best first.
const KERNEL_FILES: [&str; 3] = ["ntoskrnl.exe", "kernel32.dll", "ntdll.dll"];

/// The Windows whose system folder is on this volume, if any.
pub(crate) fn inspect(r: &mut Reader<'_>) -> Option<Os> {
    let root = SYSTEM_ROOTS
        .iter()
        .find(|d| r.is_dir(&format!("{d}/System32")))?;
    let system32 = format!("{root}/System32");
    let mut os = Os::new(Family::Windows);
    let mut found = None;
    for file in KERNEL_FILES {
        let path = format!("{system32}/{file}");
        if let Some(f) = pe_file(r, &path) {
            found = Some(f);
            break;
        }
    }
    let server = r.is_file(&format!("{system32}/ServerManager.exe"));
    if let Some((machine, info)) = found {
        os.architecture = pe::architecture(machine).map(str::to_string);
        let version = info.as_ref().and_then(version_of);
        os.version = version.as_ref().map(|v| {
            v.iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(".")
        });
        os.name = version
            .and_then(|v| product_name(v, server, os.architecture.as_deref()))
            .map(str::to_string)
            .or_else(|| {
                info.as_ref()
                    .and_then(|i| i.string("ProductName"))
                    .map(str::to_string)
            });
    }
    Some(os)
}

/// True when the volume holds the Windows boot manager without a system
/// (the "System Reserved" partition).
pub(crate) fn is_boot(r: &mut Reader<'_>) -> bool {
    r.is_file("/bootmgr") || r.is_file("/Boot/BCD") || r.is_file("/ntldr")
}

/// The machine field and version resource of the PE file `path`.
fn pe_file(r: &mut Reader<'_>, path: &str) -> Option<(u16, Option<VersionInfo>)> {
    let head = r.read_head(path, HEAD)?;
    let h = pe::headers(&head)?;
    let info = h
        .resource_range()
        .filter(|(off, _)| *off <= RESOURCES_FURTHEST)
        .and_then(|(off, len)| {
            let rsrc = r.read_range(path, off, len.min(RESOURCES_MAX) as usize)?;
            let (rva, _) = h.resources?;
            pe::version_info(pe::version_resource(&rsrc, rva)?)
        });
    Some((h.machine, info))
}

/// Major, minor, build, revision: the fixed product version, or else the
/// one the strings give ("10.0.19041.1 (WinBuild.160101.0800)").
fn version_of(info: &VersionInfo) -> Option<[u16; 4]> {
    if let Some(v) = info.product_version.or(info.file_version) {
        if v != [0; 4] {
            return Some(v);
        }
    }
    let s = info
        .string("ProductVersion")
        .or_else(|| info.string("FileVersion"))?;
    let mut out = [0u16; 4];
    let digits = s.split_whitespace().next()?;
    let mut n = 0;
    for (slot, part) in out.iter_mut().zip(digits.split('.')) {
        *slot = part.parse().ok()?;
        n += 1;
    }
    (n >= 2).then_some(out)
}

/// The product a kernel version belongs to. Client and server editions share
/// versions; servers are told apart by Server Manager being installed.
pub(crate) fn product_name(v: [u16; 4], server: bool, arch: Option<&str>) -> Option<&'static str> {
    let [major, minor, build, _] = v;
    Some(match (major, minor) {
        (10, 0) if server => match build {
            14393 => "Windows Server 2016",
            17763 => "Windows Server 2019",
            20348 => "Windows Server 2022",
            26100 => "Windows Server 2025",
            _ => "Windows Server",
        },
        (10, 0) if build >= 22000 => "Windows 11",
        (10, 0) => "Windows 10",
        (6, 4) => "Windows 10 Technical Preview",
        (6, 3) if server => "Windows Server 2012 R2",
        (6, 3) => "Windows 8.1",
        (6, 2) if server => "Windows Server 2012",
        (6, 2) => "Windows 8",
        (6, 1) if server => "Windows Server 2008 R2",
        (6, 1) => "Windows 7",
        (6, 0) if server => "Windows Server 2008",
        (6, 0) => "Windows Vista",
        // 5.2 is Server 2003 and the x64 edition of XP, built from it.
        (5, 2) if arch == Some("x86_64") => "Windows XP x64 Edition or Windows Server 2003",
        (5, 2) => "Windows Server 2003",
        (5, 1) => "Windows XP",
        (5, 0) => "Windows 2000",
        (4, 0) => "Windows NT 4.0",
        (3, 51) => "Windows NT 3.51",
        (3, 50) => "Windows NT 3.5",
        (3, 10) => "Windows NT 3.1",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            product_name([10, 0, 22631, 2428], false, None),
            Some("Windows 11")
        );
        assert_eq!(
            product_name([10, 0, 19045, 1], false, None),
            Some("Windows 10")
        );
        assert_eq!(
            product_name([10, 0, 17763, 1], true, None),
            Some("Windows Server 2019")
        );
        assert_eq!(
            product_name([6, 3, 9600, 0], false, None),
            Some("Windows 8.1")
        );
        assert_eq!(
            product_name([6, 1, 7601, 0], false, None),
            Some("Windows 7")
        );
        assert_eq!(
            product_name([5, 1, 2600, 0], false, None),
            Some("Windows XP")
        );
        assert_eq!(product_name([9, 9, 0, 0], false, None), None);
    }

    #[test]
    fn version_from_strings() {
        let info = VersionInfo {
            strings: vec![(
                "FileVersion".into(),
                "6.1.7601.17514 (win7sp1_rtm.101119-1850)".into(),
            )],
            ..Default::default()
        };
        assert_eq!(version_of(&info), Some([6, 1, 7601, 17514]));
    }
}
