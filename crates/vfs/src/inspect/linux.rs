//! Linux: the distribution from os-release (freedesktop.org, "os-release")
//! or the older release files, the host name, and the architecture of the
//! shell.

use super::reader::Reader;
use super::{elf, Family, Os};

/// The most bytes read from a text file such as os-release.
const TEXT_MAX: usize = 64 << 10;

/// Programs every Linux system has, one of which tells the architecture.
const PROGRAMS: [&str; 5] = [
    "/bin/sh",
    "/usr/bin/env",
    "/sbin/init",
    "/bin/busybox",
    "/usr/bin/sh",
];

/// The Linux system whose root is this volume, if it is one: it has `/etc`
/// and either a release file or an ELF shell.
pub(crate) fn inspect(r: &mut Reader<'_>) -> Option<Os> {
    if !r.is_dir("/etc") {
        return None;
    }
    let mut os = Os::new(Family::Linux);
    let release = os_release(r, &mut os) || old_release(r, &mut os);
    os.architecture = PROGRAMS.iter().find_map(|p| {
        r.read_head(p, elf::HEADER)
            .and_then(|h| elf::architecture(&h))
    });
    if !release && os.architecture.is_none() {
        return None;
    }
    os.hostname = hostname(r);
    Some(os)
}

/// True when the volume holds kernels or boot loader files (a separate
/// `/boot`).
pub(crate) fn is_boot(r: &mut Reader<'_>) -> bool {
    if [
        "/grub",
        "/grub2",
        "/loader/entries",
        "/syslinux",
        "/extlinux",
    ]
    .iter()
    .any(|d| r.is_dir(d))
    {
        return true;
    }
    r.names("/")
        .iter()
        .any(|n| n.starts_with("vmlinuz") || n.starts_with("initrd") || n.starts_with("initramfs"))
}

/// Fills `os` from `/etc/os-release` or `/usr/lib/os-release`.
fn os_release(r: &mut Reader<'_>, os: &mut Os) -> bool {
    let Some(text) = ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|p| r.read_text(p, TEXT_MAX))
    else {
        return false;
    };
    let vars = parse_vars(&text);
    let get = |k: &str| var(&vars, k);
    os.distribution = get("ID").map(|s| s.to_ascii_lowercase());
    os.distribution_like = get("ID_LIKE")
        .map(|s| s.split_whitespace().map(str::to_ascii_lowercase).collect())
        .unwrap_or_default();
    os.name = get("PRETTY_NAME").or_else(|| get("NAME"));
    os.version = get("VERSION_ID");
    // Debian testing and sid leave VERSION_ID out; debian_version has it.
    if os.version.is_none() && os.distribution.as_deref() == Some("debian") {
        os.version = first_line(r, "/etc/debian_version");
    }
    if os.distribution.is_none() {
        os.distribution = Some("linux".into());
    }
    true
}

/// Fills `os` from the release files older systems have instead of
/// os-release.
fn old_release(r: &mut Reader<'_>, os: &mut Os) -> bool {
    if let Some(text) = r.read_text("/etc/lsb-release", TEXT_MAX) {
        let vars = parse_vars(&text);
        let get = |k: &str| var(&vars, k);
        if let Some(id) = get("DISTRIB_ID") {
            os.distribution = Some(id.to_ascii_lowercase());
            os.version = get("DISTRIB_RELEASE");
            os.name = get("DISTRIB_DESCRIPTION").or(Some(id));
            return true;
        }
    }
    for path in [
        "/etc/fedora-release",
        "/etc/centos-release",
        "/etc/redhat-release",
    ] {
        if let Some(line) = first_line(r, path) {
            let (id, version) = parse_redhat_release(&line);
            os.distribution = Some(id);
            os.version = version;
            os.name = Some(line);
            return true;
        }
    }
    if let Some(v) = first_line(r, "/etc/alpine-release") {
        os.distribution = Some("alpine".into());
        os.name = Some(format!("Alpine Linux {v}"));
        os.version = Some(v);
        return true;
    }
    if let Some(v) = first_line(r, "/etc/debian_version") {
        os.distribution = Some("debian".into());
        os.name = Some(format!("Debian GNU/Linux {v}"));
        os.version = Some(v);
        return true;
    }
    false
}

/// The host name from `/etc/hostname` (or SUSE's `/etc/HOSTNAME`, or the
/// `HOSTNAME=` of old Red Hat's `/etc/sysconfig/network`).
fn hostname(r: &mut Reader<'_>) -> Option<String> {
    let from_file = ["/etc/hostname", "/etc/HOSTNAME"]
        .iter()
        .find_map(|p| first_line(r, p));
    from_file.or_else(|| {
        let text = r.read_text("/etc/sysconfig/network", TEXT_MAX)?;
        parse_vars(&text)
            .into_iter()
            .find(|(k, _)| k == "HOSTNAME")
            .map(|(_, v)| v)
            .filter(|v| !v.is_empty())
    })
}

/// The first line of `path` that is not empty or a comment, trimmed.
fn first_line(r: &mut Reader<'_>, path: &str) -> Option<String> {
    let text = r.read_text(path, TEXT_MAX)?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
}

/// The non-empty value of `key` among `vars` (from [`parse_vars`]).
fn var(vars: &[(String, String)], key: &str) -> Option<String> {
    vars.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .filter(|v| !v.is_empty())
}

/// `KEY=value` lines as os-release and lsb-release write them: values may be
/// in double or single quotes, with backslash escapes inside double quotes.
pub(crate) fn parse_vars(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, raw)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        out.push((key.to_string(), unquote(raw.trim())));
    }
    out
}

fn unquote(raw: &str) -> String {
    let mut chars = raw.chars();
    match chars.next() {
        Some('\'') => chars
            .as_str()
            .split('\'')
            .next()
            .unwrap_or_default()
            .to_string(),
        Some('"') => {
            let mut out = String::new();
            let mut escaped = false;
            for c in chars {
                match (escaped, c) {
                    (true, c) => {
                        out.push(c);
                        escaped = false;
                    }
                    (false, '\\') => escaped = true,
                    (false, '"') => break,
                    (false, c) => out.push(c),
                }
            }
            out
        }
        _ => raw
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string(),
    }
}

/// The distribution id and version of a Red Hat style release line
/// ("CentOS Linux release 7.9.2009 (Core)").
pub(crate) fn parse_redhat_release(line: &str) -> (String, Option<String>) {
    let lower = line.to_ascii_lowercase();
    let known = [
        ("red hat enterprise linux", "rhel"),
        ("centos stream", "centos"),
        ("centos", "centos"),
        ("fedora", "fedora"),
        ("rocky", "rocky"),
        ("almalinux", "almalinux"),
        ("scientific", "scientific"),
        ("oracle", "ol"),
        ("cloudlinux", "cloudlinux"),
    ];
    let id = known
        .iter()
        .find(|(prefix, _)| lower.starts_with(prefix))
        .map(|(_, id)| id.to_string())
        .unwrap_or_else(|| {
            lower
                .split_whitespace()
                .next()
                .unwrap_or("linux")
                .to_string()
        });
    let words: Vec<&str> = line.split_whitespace().collect();
    let version = words
        .iter()
        .position(|w| w.eq_ignore_ascii_case("release"))
        .and_then(|i| words.get(i + 1))
        .map(|v| v.to_string());
    (id, version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_values() {
        let v = parse_vars(
            "# comment\nNAME=\"Debian GNU/Linux\"\nID=debian\nPRETTY_NAME='Debian 12'\nX=\"a \\\"b\\\"\" \nBAD LINE\n",
        );
        assert_eq!(
            v,
            [
                ("NAME".to_string(), "Debian GNU/Linux".to_string()),
                ("ID".to_string(), "debian".to_string()),
                ("PRETTY_NAME".to_string(), "Debian 12".to_string()),
                ("X".to_string(), "a \"b\"".to_string()),
            ]
        );
    }

    #[test]
    fn redhat_lines() {
        assert_eq!(
            parse_redhat_release("CentOS Linux release 7.9.2009 (Core)"),
            ("centos".to_string(), Some("7.9.2009".to_string()))
        );
        assert_eq!(
            parse_redhat_release("Red Hat Enterprise Linux Server release 6.10 (Santiago)"),
            ("rhel".to_string(), Some("6.10".to_string()))
        );
        assert_eq!(
            parse_redhat_release("Fedora release 20 (Heisenbug)"),
            ("fedora".to_string(), Some("20".to_string()))
        );
        assert_eq!(
            parse_redhat_release("Mystery"),
            ("mystery".to_string(), None)
        );
    }
}
