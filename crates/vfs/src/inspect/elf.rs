//! The CPU architecture of an ELF program, from its header (System V ABI,
//! "ELF Header": `e_ident[EI_CLASS]`, `e_ident[EI_DATA]`, `e_machine`).

/// Bytes of the header needed: `e_ident` (16) and `e_type`, `e_machine`.
pub(crate) const HEADER: usize = 20;

/// The architecture named the way Linux distributions name it ("x86_64",
/// "i386", "aarch64"), or `None` when `head` is not an ELF header.
pub(crate) fn architecture(head: &[u8]) -> Option<String> {
    if head.get(0..4)? != b"\x7fELF" {
        return None;
    }
    let class64 = match head.get(4)? {
        1 => false,
        2 => true,
        _ => return None,
    };
    let little = match head.get(5)? {
        1 => true,
        2 => false,
        _ => return None,
    };
    let m = [*head.get(18)?, *head.get(19)?];
    let machine = if little {
        u16::from_le_bytes(m)
    } else {
        u16::from_be_bytes(m)
    };
    let name = match (machine, class64) {
        (3, _) => "i386",
        (62, _) => "x86_64",
        (183, _) => "aarch64",
        (40, _) => "arm",
        (8, false) if little => "mipsel",
        (8, false) => "mips",
        (8, true) if little => "mips64el",
        (8, true) => "mips64",
        (20, _) => "ppc",
        (21, _) if little => "ppc64le",
        (21, _) => "ppc64",
        (22, true) => "s390x",
        (22, false) => "s390",
        (243, true) => "riscv64",
        (243, false) => "riscv32",
        (258, _) => "loongarch64",
        (2, _) => "sparc",
        (43, _) => "sparc64",
        (50, _) => "ia64",
        (other, _) => return Some(format!("elf-machine-{other}")),
    };
    Some(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(class: u8, data: u8, machine: u16) -> Vec<u8> {
        let mut h = vec![0u8; HEADER];
        h[0..4].copy_from_slice(b"\x7fELF");
        h[4] = class;
        h[5] = data;
        let m = if data == 1 {
            machine.to_le_bytes()
        } else {
            machine.to_be_bytes()
        };
        h[18..20].copy_from_slice(&m);
        h
    }

    #[test]
    fn machines() {
        assert_eq!(architecture(&header(2, 1, 62)).as_deref(), Some("x86_64"));
        assert_eq!(architecture(&header(1, 1, 3)).as_deref(), Some("i386"));
        assert_eq!(architecture(&header(2, 1, 183)).as_deref(), Some("aarch64"));
        assert_eq!(architecture(&header(2, 2, 22)).as_deref(), Some("s390x"));
        assert_eq!(architecture(&header(2, 1, 21)).as_deref(), Some("ppc64le"));
        assert_eq!(architecture(&header(2, 2, 21)).as_deref(), Some("ppc64"));
    }

    #[test]
    fn not_elf() {
        assert_eq!(architecture(b"#!/bin/sh\n"), None);
        assert_eq!(architecture(b"\x7fELF"), None);
        assert_eq!(architecture(&header(3, 1, 62)), None);
    }
}
