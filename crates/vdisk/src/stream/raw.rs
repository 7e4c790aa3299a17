//! The raw layout: the disk's bytes, holes as zeros.

use super::{AllocMap, Layout, Segment};

/// The raw image of a disk of `size` bytes whose data is `map`.
pub fn layout(size: u64, map: &AllocMap) -> Layout {
    let mut l = Layout::new();
    for &(offset, len) in map.ranges() {
        l.zeros_to(offset);
        l.push(Segment::Disk { offset, len });
    }
    l.zeros_to(size);
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_between_holes() {
        let m = AllocMap::new(100, [(10, 20), (50, 10)]).unwrap();
        let l = layout(100, &m);
        assert_eq!(l.len(), 100);
        assert_eq!(
            l.segments()
                .iter()
                .map(|(at, s)| (*at, s.clone()))
                .collect::<Vec<_>>(),
            vec![
                (0, Segment::Zeros(10)),
                (
                    10,
                    Segment::Disk {
                        offset: 10,
                        len: 20
                    }
                ),
                (30, Segment::Zeros(20)),
                (
                    50,
                    Segment::Disk {
                        offset: 50,
                        len: 10
                    }
                ),
                (60, Segment::Zeros(40)),
            ]
        );
    }
}
