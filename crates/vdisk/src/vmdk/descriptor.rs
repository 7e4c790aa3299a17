//! The VMDK text descriptor: `key=value` lines (`createType`, `CID`,
//! `parentCID`, `parentFileNameHint`, `ddb.*`) and extent lines
//! (`RW <sectors> SPARSE|FLAT|ZERO ["file" [offset]]`).

/// How an extent stores its data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExtentType {
    /// A hosted sparse extent file ("KDMV").
    Sparse,
    /// A plain file (FLAT, VMFS) from an offset in sectors.
    Flat,
    /// Reads as zeros; no file.
    Zero,
    /// Anything else, by name.
    Other(String),
}

/// One extent line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtentLine {
    /// Access: RW, RDONLY or NOACCESS.
    pub access: String,
    /// Sectors the extent holds.
    pub sectors: u64,
    /// How it stores them.
    pub kind: ExtentType,
    /// The file, as written in the descriptor.
    pub file: Option<String>,
    /// Offset in sectors in the file (FLAT).
    pub offset: u64,
}

/// A parsed descriptor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Descriptor {
    /// `key=value` pairs in order, values unquoted.
    pub entries: Vec<(String, String)>,
    /// The extents in order.
    pub extents: Vec<ExtentLine>,
}

impl Descriptor {
    /// The value of `key` (case-insensitive), if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// Parses descriptor text; errors say which line is wrong.
    pub fn parse(text: &str) -> Result<Descriptor, String> {
        let mut d = Descriptor::default();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim_matches(|c: char| c.is_whitespace() || c == '\0');
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let first = line.split_whitespace().next().unwrap_or("");
            if matches!(first, "RW" | "RDONLY" | "NOACCESS") {
                d.extents
                    .push(parse_extent(line).map_err(|e| format!("line {}: {e}", n + 1))?);
                if d.extents.len() > super::MAX_EXTENTS {
                    return Err(format!(
                        "more than {} extents are not supported",
                        super::MAX_EXTENTS
                    ));
                }
            } else if let Some((k, v)) = line.split_once('=') {
                let v = v.trim();
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v);
                d.entries.push((k.trim().to_string(), v.to_string()));
            } else {
                return Err(format!(
                    "line {}: {:?} is neither an extent nor key=value",
                    n + 1,
                    line.chars().take(60).collect::<String>()
                ));
            }
        }
        Ok(d)
    }
}

fn parse_extent(line: &str) -> Result<ExtentLine, String> {
    let mut rest = line;
    let mut word = || -> Option<String> {
        let t = rest.trim_start();
        let end = t.find(char::is_whitespace).unwrap_or(t.len());
        let (w, r) = t.split_at(end);
        rest = r;
        (!w.is_empty()).then(|| w.to_string())
    };
    let access = word().ok_or("empty extent line")?;
    let sectors: u64 = word()
        .and_then(|w| w.parse().ok())
        .ok_or("extent size is not a number of sectors")?;
    let kind = match word().ok_or("extent has no type")?.as_str() {
        "SPARSE" => ExtentType::Sparse,
        "FLAT" | "VMFS" => ExtentType::Flat,
        "ZERO" => ExtentType::Zero,
        other => ExtentType::Other(other.to_string()),
    };
    let t = rest.trim_start();
    let (file, after) = if let Some(q) = t.strip_prefix('"') {
        let end = q.find('"').ok_or("extent file name has no closing quote")?;
        (Some(q[..end].to_string()), &q[end + 1..])
    } else {
        (None, t)
    };
    let offset = match after.split_whitespace().next() {
        Some(w) => w
            .parse()
            .map_err(|_| format!("extent offset {w:?} is not a number"))?,
        None => 0,
    };
    if file.is_none() && kind != ExtentType::Zero {
        return Err("extent names no file".into());
    }
    Ok(ExtentLine {
        access,
        sectors,
        kind,
        file,
        offset,
    })
}

/// The descriptor of a new single-extent sparse VMDK.
pub fn new_text(create_type: &str, file: &str, sectors: u64, cid: u32) -> String {
    // A geometry of 16 heads and 63 sectors per track, as VMware writes for
    // IDE disks, with at most 65535 cylinders.
    let cylinders = (sectors / (16 * 63)).clamp(1, 65535);
    format!(
        "# Disk DescriptorFile\n\
         version=1\n\
         CID={cid:08x}\n\
         parentCID=ffffffff\n\
         createType=\"{create_type}\"\n\
         \n\
         # Extent description\n\
         RW {sectors} SPARSE \"{file}\"\n\
         \n\
         # The Disk Data Base\n\
         #DDB\n\
         \n\
         ddb.virtualHWVersion = \"4\"\n\
         ddb.geometry.cylinders = \"{cylinders}\"\n\
         ddb.geometry.heads = \"16\"\n\
         ddb.geometry.sectors = \"63\"\n\
         ddb.adapterType = \"ide\"\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_extents_and_keys() {
        let d = Descriptor::parse(
            "# Disk DescriptorFile\nversion=1\nCID=1234abcd\ncreateType=\"twoGbMaxExtentFlat\"\n\
             RW 4192256 FLAT \"a b-f001.vmdk\" 0\nRDONLY 100 FLAT \"x.vmdk\" 7\nRW 8 ZERO\n\
             ddb.adapterType = \"lsilogic\"\n",
        )
        .unwrap();
        assert_eq!(d.get("createtype"), Some("twoGbMaxExtentFlat"));
        assert_eq!(d.get("ddb.adapterType"), Some("lsilogic"));
        assert_eq!(d.extents.len(), 3);
        assert_eq!(d.extents[0].file.as_deref(), Some("a b-f001.vmdk"));
        assert_eq!(d.extents[1].offset, 7);
        assert_eq!(d.extents[2].kind, ExtentType::Zero);
        assert!(Descriptor::parse("RW x SPARSE \"a\"").is_err());
        assert!(Descriptor::parse("RW 8 SPARSE \"a").is_err());
        assert!(Descriptor::parse("RW 8 SPARSE").is_err());
        let t = new_text("streamOptimized", "x.vmdk", 40960, 7);
        let d = Descriptor::parse(&t).unwrap();
        assert_eq!(d.extents[0].sectors, 40960);
        assert_eq!(d.get("CID"), Some("00000007"));
    }
}
