//! CHS geometry, as the VHD specification's appendix "CHS Calculation" computes it.

use serde::Serialize;

/// Cylinders, heads and sectors per track, as stored in a VHD footer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Geometry {
    /// Cylinders.
    pub cylinders: u16,
    /// Heads.
    pub heads: u8,
    /// Sectors per track.
    pub sectors: u8,
}

/// The largest number of sectors the CHS algorithm can describe (about 127 GiB).
pub const MAX_CHS_SECTORS: u64 = 65535 * 16 * 255;

impl Geometry {
    /// 65535/16/255: the largest geometry, which readers take to mean "use current_size".
    pub const MAX: Geometry = Geometry {
        cylinders: 65535,
        heads: 16,
        sectors: 255,
    };

    /// The geometry the VHD specification assigns to a disk of `total_sectors`
    /// (rounding down: the product may be smaller than the disk).
    pub fn from_sectors(total_sectors: u64) -> Geometry {
        let total = total_sectors.min(MAX_CHS_SECTORS);
        let (spt, heads, cyl_times_heads);
        if total >= 65535 * 16 * 63 {
            spt = 255;
            heads = 16;
            cyl_times_heads = total / spt;
        } else {
            let mut s = 17;
            let mut cth = total / s;
            let mut h = cth.div_ceil(1024).max(4);
            if cth >= h * 1024 || h > 16 {
                s = 31;
                h = 16;
                cth = total / s;
            }
            if cth >= h * 1024 {
                s = 63;
                h = 16;
                cth = total / s;
            }
            spt = s;
            heads = h;
            cyl_times_heads = cth;
        }
        let cylinders = (cyl_times_heads / heads).min(65535);
        // Every value is bounded above by the clamps, so the narrowing is exact.
        Geometry {
            cylinders: cylinders as u16,
            heads: heads as u8,
            sectors: spt as u8,
        }
    }

    /// The number of sectors the geometry addresses.
    pub fn total_sectors(&self) -> u64 {
        u64::from(self.cylinders) * u64::from(self.heads) * u64::from(self.sectors)
    }

    /// The number of bytes the geometry addresses.
    pub fn size(&self) -> u64 {
        self.total_sectors() * crate::SECTOR
    }

    /// Whether this is the maximum geometry.
    pub fn is_max(&self) -> bool {
        *self == Geometry::MAX
    }

    /// The smallest disk of at least `size` bytes whose geometry addresses it
    /// exactly, as Virtual PC computes sizes. `None` when no geometry reaches `size`.
    pub fn round_up(size: u64) -> Option<(u64, Geometry)> {
        let want = size.div_ceil(crate::SECTOR);
        if want > MAX_CHS_SECTORS {
            return None;
        }
        // The product falls short of the request by less than one cylinder
        // (at most 16 × 255 sectors), so this many steps always suffice.
        (want..=want + 16 * 255 * 2)
            .map(Geometry::from_sectors)
            .find(|g| g.total_sectors() >= want)
            .map(|g| (g.size(), g))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_qemu_for_50_mib() {
        // qemu-img create -f vpc x 50M gives 52432896 bytes with 1004/12/17.
        let (size, g) = Geometry::round_up(50 << 20).unwrap();
        assert_eq!(size, 52432896);
        assert_eq!(
            g,
            Geometry {
                cylinders: 1004,
                heads: 6,
                sectors: 17
            }
        );
    }

    #[test]
    fn big_disks_get_the_maximum() {
        assert_eq!(Geometry::from_sectors(u64::MAX), Geometry::MAX);
        assert_eq!(Geometry::from_sectors(MAX_CHS_SECTORS), Geometry::MAX);
        assert!(Geometry::round_up(200 << 30).is_none());
    }

    #[test]
    fn floor_never_exceeds_the_disk() {
        for s in [
            1u64,
            17,
            1000,
            65535,
            1 << 20,
            4 << 21,
            123456789,
            MAX_CHS_SECTORS - 1,
        ] {
            assert!(Geometry::from_sectors(s).total_sectors() <= s, "{s}");
        }
    }

    #[test]
    fn round_up_is_exact_and_minimal() {
        for s in [512u64, 1 << 20, 1000000000, 4 << 30, 52428800, 100 << 30] {
            let (size, g) = Geometry::round_up(s).unwrap();
            assert!(size >= s);
            assert_eq!(size, g.size());
            assert_eq!(Geometry::from_sectors(size / 512), g);
        }
    }
}
