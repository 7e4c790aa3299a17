//! The machine description: what a machine needs besides its disks. It is the
//! config blob of the machine's OCI manifest.

use crate::digest::Digest;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Media type of the machine description (the manifest's config).
pub const MACHINE_CONFIG_MEDIA_TYPE: &str = "application/vnd.vmhub.machine.config.v1+json";

/// The largest machine description read.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// The most disks one machine may have.
pub const MAX_DISKS: usize = 16;

/// Firmware a machine boots with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    /// A PC BIOS (SeaBIOS under QEMU).
    #[default]
    Bios,
    /// UEFI (OVMF under QEMU).
    Uefi,
}

/// The operating system inside, as `vmhub inspect` found it or the user said.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Os {
    /// "linux", "windows", "dos", or "unknown".
    pub family: String,
    /// Distribution id ("debian"), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution: Option<String>,
    /// Product name ("Debian GNU/Linux 12 (bookworm)").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Version ("12").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// One disk of a machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineDisk {
    /// Its name within the machine ("disk0").
    pub name: String,
    /// Virtual size in bytes.
    pub size: u64,
    /// The format it was imported from ("vhd", "raw").
    pub format: String,
    /// Digest of its index blob.
    pub index: Digest,
}

/// A machine version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// The name it was imported under.
    pub name: String,
    /// A free-form version ("12.8", "2026-11-24").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// What the machine is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The operating system inside.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<Os>,
    /// CPU architecture ("x86_64", "aarch64").
    pub architecture: String,
    /// Firmware it boots with.
    #[serde(default)]
    pub firmware: Firmware,
    /// Virtual CPUs.
    pub cpus: u32,
    /// Memory in bytes.
    pub memory: u64,
    /// Licence (an SPDX expression, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub licence: Option<String>,
    /// When this version was made, RFC 3339 UTC.
    pub created: String,
    /// Its disks, the boot disk first.
    pub disks: Vec<MachineDisk>,
}

impl Machine {
    /// Parses and checks a machine description (`what` names it in errors).
    pub fn from_json(data: &[u8], what: &str) -> Result<Machine> {
        let m: Machine = serde_json::from_slice(data)
            .map_err(|e| Error::corrupt(what, format!("not a machine description: {e}")))?;
        m.validate(what)?;
        Ok(m)
    }

    /// The description as JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Checks the bounds of every field.
    pub fn validate(&self, what: &str) -> Result<()> {
        let bad = |p: String| Err(Error::corrupt(what, p));
        if self.disks.is_empty() || self.disks.len() > MAX_DISKS {
            return bad(format!(
                "{} disks (a machine has 1 to {MAX_DISKS})",
                self.disks.len()
            ));
        }
        if self.cpus == 0 || self.cpus > 1024 {
            return bad(format!("{} CPUs (1 to 1024)", self.cpus));
        }
        if self.memory < (1 << 20) || self.memory > (16 << 40) {
            return bad(format!("{} bytes of memory (1 MiB to 16 TiB)", self.memory));
        }
        for d in &self.disks {
            if d.size > crate::index::MAX_DISK {
                return bad(format!("disk {:?} of {} bytes", d.name, d.size));
            }
        }
        Ok(())
    }
}
