//! MODE SENSE / MODE SELECT (10-byte, with the 6-byte forms for drives and VTLs that lack them): the
//! header (write protect, buffered mode), the block descriptor (density code, block length), page 0x0F
//! (data compression, DCE) and page 0x11 (medium partition), plus FORMAT MEDIUM, which applies page 0x11.
//!
//! Changes are read-modify-write: sense the current values, change one field in the returned bytes
//! ([`ModeData`] keeps the page bytes raw), and select them back. Partitioning a cartridge for LTFS is
//! MODE SELECT page 0x11 (FDP=0, SDP=0, IDP=1, PSUM=MB, one additional partition, sizes
//! `[index MB, 0xFFFF]` where 0xFFFF means "the rest") followed by FORMAT MEDIUM format 1 at BOP.

use scsi::be;
use serde::Serialize;

pub const MODE_SELECT_6: u8 = 0x15;
pub const MODE_SENSE_6: u8 = 0x1a;
pub const MODE_SELECT_10: u8 = 0x55;
pub const MODE_SENSE_10: u8 = 0x5a;
pub const FORMAT_MEDIUM: u8 = 0x04;

pub const PAGE_COMPRESSION: u8 = 0x0f;
pub const PAGE_MEDIUM_PARTITION: u8 = 0x11;
/// Page code 0x3F asks for every page.
pub const PAGE_ALL: u8 = 0x3f;

/// Which values MODE SENSE returns (its PC field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageControl {
    Current = 0,
    Changeable = 1,
    Default = 2,
    Saved = 3,
}

/// MODE SENSE(6), block descriptors included (DBD = 0).
pub fn mode_sense6_cdb(page: u8, pc: PageControl, alloc: u8) -> [u8; 6] {
    [
        MODE_SENSE_6,
        0,
        (pc as u8) << 6 | (page & 0x3f),
        0,
        alloc,
        0,
    ]
}

/// MODE SENSE(10), block descriptors included, short (8-byte) descriptors.
pub fn mode_sense10_cdb(page: u8, pc: PageControl, alloc: u16) -> [u8; 10] {
    let mut c = [
        MODE_SENSE_10,
        0,
        (pc as u8) << 6 | (page & 0x3f),
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ];
    be::put(&mut c, 7, 2, alloc as u64);
    c
}

/// MODE SELECT(6) with PF = 1 (pages in the standard format).
pub fn mode_select6_cdb(len: u8) -> [u8; 6] {
    [MODE_SELECT_6, 0x10, 0, 0, len, 0]
}

/// MODE SELECT(10) with PF = 1.
pub fn mode_select10_cdb(len: u16) -> [u8; 10] {
    let mut c = [MODE_SELECT_10, 0x10, 0, 0, 0, 0, 0, 0, 0, 0];
    be::put(&mut c, 7, 2, len as u64);
    c
}

/// FORMAT MEDIUM. `format` 0 = default (one partition), 1 = partition per mode page 0x11, 2 = default then
/// partition.
pub fn format_medium_cdb(format: u8, immed: bool) -> [u8; 6] {
    [FORMAT_MEDIUM, (immed as u8) << 1, format & 0x0f, 0, 0, 0]
}

/// The 8-byte short block descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BlockDescriptor {
    /// The medium's density code (0x58 LTO-5 ... 0x60 LTO-9); 0 = default.
    pub density: u8,
    pub blocks: u32,
    /// 0 = variable-length records.
    pub block_length: u32,
}

impl BlockDescriptor {
    fn decode(b: &[u8]) -> Option<BlockDescriptor> {
        Some(BlockDescriptor {
            density: *b.first()?,
            blocks: be::u24_at(b, 1)?,
            block_length: be::u24_at(b, 5)?,
        })
    }
    fn encode(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.density;
        be::put(&mut b, 1, 3, self.blocks.min(0xff_ffff) as u64);
        be::put(&mut b, 5, 3, self.block_length.min(0xff_ffff) as u64);
        b
    }
}

/// A decoded MODE SENSE response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeData {
    pub medium_type: u8,
    /// WP bit of the device-specific parameter.
    pub write_protected: bool,
    /// Buffered mode (0 = unbuffered, 1 = buffered).
    pub buffered_mode: u8,
    pub speed: u8,
    pub block_descriptor: Option<BlockDescriptor>,
    /// The mode pages, raw, as returned (each: page code byte, length byte, body).
    pub pages: Vec<u8>,
}

impl ModeData {
    /// Decodes MODE SENSE(6) data: 4-byte header. The mode data length is trusted only as far as the
    /// bytes present (some drives return the allocation length instead of the real length).
    pub fn decode6(b: &[u8]) -> Option<ModeData> {
        let len = *b.first()? as usize + 1;
        let b = &b[..b.len().min(len)];
        let dev = *b.get(2)?;
        let bd_len = *b.get(3)? as usize;
        Self::decode_rest(b, b[1], dev, 4, bd_len)
    }

    /// Decodes MODE SENSE(10) data: 8-byte header.
    pub fn decode10(b: &[u8]) -> Option<ModeData> {
        let len = be::u16_at(b, 0)? as usize + 2;
        let b = &b[..b.len().min(len)];
        let dev = *b.get(3)?;
        let bd_len = be::u16_at(b, 6)? as usize;
        Self::decode_rest(b, b[2], dev, 8, bd_len)
    }

    pub fn decode(ten: bool, b: &[u8]) -> Option<ModeData> {
        if ten {
            Self::decode10(b)
        } else {
            Self::decode6(b)
        }
    }

    fn decode_rest(
        b: &[u8],
        medium_type: u8,
        dev: u8,
        header: usize,
        bd_len: usize,
    ) -> Option<ModeData> {
        let pages_at = header.checked_add(bd_len)?;
        let block_descriptor = if bd_len >= 8 {
            b.get(header..header + 8).and_then(BlockDescriptor::decode)
        } else {
            None
        };
        Some(ModeData {
            medium_type,
            write_protected: dev & 0x80 != 0,
            buffered_mode: (dev >> 4) & 0x07,
            speed: dev & 0x0f,
            block_descriptor,
            pages: b.get(pages_at..).unwrap_or(&[]).to_vec(),
        })
    }

    /// The bytes of page `code` (page code byte through the end of its body, cut to what is present).
    pub fn page(&self, code: u8) -> Option<&[u8]> {
        find_page(&self.pages, code)
    }

    pub fn page_mut(&mut self, code: u8) -> Option<&mut [u8]> {
        let (at, len) = page_span(&self.pages, code)?;
        Some(&mut self.pages[at..at + len])
    }

    /// The parameter list for MODE SELECT: the header with the mode data length zero (reserved) and WP
    /// clear, the block descriptor as sensed, and the pages with their PS bit clear.
    pub fn encode_select(&self, ten: bool) -> Vec<u8> {
        let dev = (self.buffered_mode & 0x07) << 4 | (self.speed & 0x0f);
        let bd: Vec<u8> = self
            .block_descriptor
            .map(|d| d.encode().to_vec())
            .unwrap_or_default();
        let mut out = if ten {
            let mut h = vec![0u8, 0, self.medium_type, dev, 0, 0, 0, 0];
            be::put(&mut h, 6, 2, bd.len() as u64);
            h
        } else {
            vec![0u8, self.medium_type, dev, bd.len() as u8]
        };
        out.extend_from_slice(&bd);
        let pages_at = out.len();
        out.extend_from_slice(&self.pages);
        // Clear PS on every page.
        let mut at = pages_at;
        while at + 1 < out.len() {
            out[at] &= 0x7f;
            let body = if out[at] & 0x40 != 0 {
                // Sub-page format: 2-byte length at +2.
                be::u16_at(&out, at + 2).map(|l| l as usize + 4)
            } else {
                Some(out[at + 1] as usize + 2)
            };
            match body {
                Some(n) if n > 0 => at += n,
                _ => break,
            }
        }
        out
    }

    /// Encodes a MODE SENSE response (for test transports and the virtual library).
    pub fn encode_sense(&self, ten: bool) -> Vec<u8> {
        let mut out = self.encode_select(ten);
        let dev = if self.write_protected { 0x80 } else { 0 };
        if ten {
            out[3] |= dev;
            let n = (out.len() - 2) as u64;
            be::put(&mut out, 0, 2, n);
        } else {
            out[2] |= dev;
            out[0] = (out.len() - 1).min(255) as u8;
        }
        out
    }
}

fn page_span(pages: &[u8], code: u8) -> Option<(usize, usize)> {
    let mut at = 0;
    while at < pages.len() {
        let first = pages[at];
        let len = if first & 0x40 != 0 {
            be::u16_at(pages, at + 2)
                .map(|l| l as usize + 4)
                .unwrap_or(pages.len() - at)
        } else {
            pages
                .get(at + 1)
                .map(|&l| l as usize + 2)
                .unwrap_or(pages.len() - at)
        };
        let len = len.min(pages.len() - at);
        if first & 0x3f == code & 0x3f && first & 0x40 == 0 {
            return Some((at, len));
        }
        at += len.max(1);
    }
    None
}

fn find_page(pages: &[u8], code: u8) -> Option<&[u8]> {
    let (at, len) = page_span(pages, code)?;
    Some(&pages[at..at + len])
}

/// Page 0x0F, data compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CompressionPage {
    /// Data compression enabled (on write).
    pub dce: bool,
    /// Data compression capable.
    pub dcc: bool,
    /// Data decompression enabled (on read).
    pub dde: bool,
}

impl CompressionPage {
    /// From the page bytes (page code first); needs 4 bytes.
    pub fn decode(page: &[u8]) -> Option<CompressionPage> {
        if *page.first()? & 0x3f != PAGE_COMPRESSION {
            return None;
        }
        let (b2, b3) = (*page.get(2)?, *page.get(3)?);
        Some(CompressionPage {
            dce: b2 & 0x80 != 0,
            dcc: b2 & 0x40 != 0,
            dde: b3 & 0x80 != 0,
        })
    }

    /// Sets or clears DCE in page bytes; false when the page is too short or is not page 0x0F.
    pub fn set_dce(page: &mut [u8], on: bool) -> bool {
        if page.len() < 3 || page[0] & 0x3f != PAGE_COMPRESSION {
            return false;
        }
        if on {
            page[2] |= 0x80;
        } else {
            page[2] &= 0x7f;
        }
        true
    }
}

/// Page 0x11, medium partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionPage {
    pub max_additional: u8,
    /// Partitions beyond the first: 0 for one partition, 1 for two.
    pub additional_defined: u8,
    pub fdp: bool,
    pub sdp: bool,
    pub idp: bool,
    /// Partition size unit of measure: 0 bytes, 1 KB, 2 MB, 3 = 10^partition_units bytes.
    pub psum: u8,
    pub pofm: bool,
    pub medium_format_recognition: u8,
    pub partition_units: u8,
    pub sizes: Vec<u16>,
}

impl PartitionPage {
    /// From the page bytes; needs the 8-byte fixed part. Sizes are read as far as the page length and the
    /// bytes present allow.
    pub fn decode(page: &[u8]) -> Option<PartitionPage> {
        if *page.first()? & 0x3f != PAGE_MEDIUM_PARTITION {
            return None;
        }
        let end = page.len().min(*page.get(1)? as usize + 2);
        let p = page.get(..end)?;
        let flags = *p.get(4)?;
        let units = *p.get(6)?;
        p.get(7)?;
        let sizes = p[8..]
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect();
        Some(PartitionPage {
            max_additional: p[2],
            additional_defined: p[3],
            fdp: flags & 0x80 != 0,
            sdp: flags & 0x40 != 0,
            idp: flags & 0x20 != 0,
            psum: (flags >> 3) & 0x03,
            pofm: flags & 0x04 != 0,
            medium_format_recognition: p[5],
            partition_units: units & 0x0f,
            sizes,
        })
    }

    /// Encodes the page (PS clear) with room for `sizes`.
    pub fn encode(&self) -> Vec<u8> {
        let mut p = vec![
            PAGE_MEDIUM_PARTITION,
            (6 + 2 * self.sizes.len()) as u8,
            self.max_additional,
            self.additional_defined,
        ];
        p.push(
            (self.fdp as u8) << 7
                | (self.sdp as u8) << 6
                | (self.idp as u8) << 5
                | (self.psum & 3) << 3
                | (self.pofm as u8) << 2,
        );
        p.push(self.medium_format_recognition);
        p.push(self.partition_units & 0x0f);
        p.push(0);
        for s in &self.sizes {
            p.extend_from_slice(&s.to_be_bytes());
        }
        p
    }
}

/// Rewrites the sensed page 0x11 bytes in place for two partitions: FDP=0, SDP=0, IDP=1, PSUM=MB
/// (POFM, CLEAR and ADDP cleared), one additional partition, partition 0 = `index_mb` MB, partition 1
/// = 0xFFFF (the rest). The page keeps the length the drive reported (at least room for two sizes):
/// further size fields are zeroed. Returns the new page bytes.
pub fn two_partition_page(sensed: &[u8], index_mb: u16) -> Option<Vec<u8>> {
    PartitionPage::decode(sensed)?;
    let body_len = (sensed.get(1).copied().unwrap_or(0) as usize).max(10);
    let mut p = vec![0u8; body_len + 2];
    let n = sensed.len().min(p.len());
    p[..n].copy_from_slice(&sensed[..n]);
    p[0] = PAGE_MEDIUM_PARTITION;
    p[1] = body_len as u8;
    p[3] = 1;
    p[4] = 0x20 | (2 << 3);
    p[8..].fill(0);
    be::put(&mut p, 8, 2, index_mb as u64);
    be::put(&mut p, 10, 2, 0xffff);
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(page: Vec<u8>) -> ModeData {
        ModeData {
            medium_type: 0x78,
            write_protected: true,
            buffered_mode: 1,
            speed: 0,
            block_descriptor: Some(BlockDescriptor {
                density: 0x5a,
                blocks: 0,
                block_length: 0,
            }),
            pages: page,
        }
    }

    fn compression_page() -> Vec<u8> {
        let mut p = vec![0u8; 16];
        p[0] = 0x8f; // PS set, as drives report it
        p[1] = 0x0e;
        p[2] = 0x40; // DCC, DCE off
        p[3] = 0x80;
        p
    }

    #[test]
    fn cdbs() {
        assert_eq!(
            mode_sense6_cdb(0x0f, PageControl::Current, 0xff),
            [0x1a, 0, 0x0f, 0, 0xff, 0]
        );
        assert_eq!(
            mode_sense10_cdb(0x11, PageControl::Changeable, 512),
            [0x5a, 0, 0x51, 0, 0, 0, 0, 2, 0, 0]
        );
        assert_eq!(mode_select6_cdb(28), [0x15, 0x10, 0, 0, 28, 0]);
        assert_eq!(mode_select10_cdb(32), [0x55, 0x10, 0, 0, 0, 0, 0, 0, 32, 0]);
        assert_eq!(format_medium_cdb(1, false), [0x04, 0, 1, 0, 0, 0]);
    }

    #[test]
    fn sense_round_trip_both_sizes() {
        let m = sample(compression_page());
        for ten in [false, true] {
            let enc = m.encode_sense(ten);
            let d = ModeData::decode(ten, &enc).unwrap();
            let mut expect = m.clone();
            expect.pages[0] &= 0x7f;
            assert_eq!(d, expect, "ten={ten}");
            let c = CompressionPage::decode(d.page(PAGE_COMPRESSION).unwrap()).unwrap();
            assert_eq!(
                c,
                CompressionPage {
                    dce: false,
                    dcc: true,
                    dde: true
                }
            );
        }
    }

    #[test]
    fn select_clears_length_wp_and_ps() {
        let mut m = sample(compression_page());
        assert!(CompressionPage::set_dce(
            m.page_mut(PAGE_COMPRESSION).unwrap(),
            true
        ));
        m.block_descriptor.as_mut().unwrap().block_length = 0;
        let sel = m.encode_select(true);
        assert_eq!(&sel[..8], &[0, 0, 0x78, 0x10, 0, 0, 0, 8]);
        assert_eq!(sel[8], 0x5a);
        assert_eq!(sel[16], 0x0f);
        assert_eq!(sel[18], 0xc0);
        let sel6 = m.encode_select(false);
        assert_eq!(&sel6[..4], &[0, 0x78, 0x10, 8]);
        assert_eq!(sel6.len(), 4 + 8 + 16);
    }

    #[test]
    fn header_only_and_clamped_length() {
        // tgt-style: no pages, 8-byte descriptor, block length 0.
        let b = [11u8, 0, 0x10, 8, 0, 0, 0, 0, 0, 0, 0, 0];
        let d = ModeData::decode6(&b).unwrap();
        assert_eq!(d.buffered_mode, 1);
        assert!(!d.write_protected);
        assert_eq!(d.block_descriptor.unwrap().block_length, 0);
        assert!(d.pages.is_empty() && d.page(0x0f).is_none());
        // Quantum-style: the length field says more than the buffer holds, or the buffer has junk past it.
        let mut junk = b.to_vec();
        junk.extend_from_slice(&[0x0f, 0x0e, 0x80]);
        assert!(ModeData::decode6(&junk).unwrap().pages.is_empty());
        let mut big = b;
        big[0] = 200;
        assert!(ModeData::decode6(&big).is_some());
    }

    #[test]
    fn truncation_never_panics_and_header_is_required() {
        let m = sample(compression_page());
        for ten in [false, true] {
            let enc = m.encode_sense(ten);
            let header = if ten { 8 } else { 4 };
            for cut in 0..enc.len() {
                let d = ModeData::decode(ten, &enc[..cut]);
                assert_eq!(d.is_some(), cut >= header, "ten={ten} cut={cut}");
                if let Some(p) = d.as_ref().and_then(|d| d.page(PAGE_COMPRESSION)) {
                    let _ = CompressionPage::decode(p);
                }
            }
        }
    }

    #[test]
    fn partition_page_decode_and_two_partition_rewrite() {
        // IBM-style page 0x11 with room for four sizes, one partition defined.
        let mut sensed = vec![0x91, 0x0e, 3, 0, 0x18, 3, 9, 0];
        sensed.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0, 0, 0]);
        let p = PartitionPage::decode(&sensed).unwrap();
        assert_eq!(
            (
                p.max_additional,
                p.additional_defined,
                p.psum,
                p.partition_units
            ),
            (3, 0, 3, 9)
        );
        assert_eq!(p.sizes, vec![0xffff, 0, 0, 0]);
        let new = two_partition_page(&sensed, 37_000).unwrap();
        assert_eq!(new.len(), 16);
        let q = PartitionPage::decode(&new).unwrap();
        assert_eq!(q.additional_defined, 1);
        assert!(q.idp && !q.fdp && !q.sdp && !q.pofm);
        assert_eq!(q.psum, 2);
        assert_eq!(q.medium_format_recognition, 3);
        assert_eq!(q.sizes, vec![37_000, 0xffff, 0, 0]);
        assert_eq!(new[0] & 0x80, 0);
        // A minimal page (length 6) grows to hold two sizes.
        let small = PartitionPage {
            max_additional: 1,
            additional_defined: 0,
            fdp: false,
            sdp: false,
            idp: false,
            psum: 0,
            pofm: false,
            medium_format_recognition: 0,
            partition_units: 0,
            sizes: vec![],
        }
        .encode();
        let grown = two_partition_page(&small, 100).unwrap();
        assert_eq!(
            PartitionPage::decode(&grown).unwrap().sizes,
            vec![100, 0xffff]
        );
        assert_eq!(two_partition_page(&compression_page(), 1), None);
        for cut in 0..sensed.len() {
            let d = PartitionPage::decode(&sensed[..cut]);
            assert_eq!(d.is_some(), cut >= 8, "cut {cut}");
            let _ = two_partition_page(&sensed[..cut], 1);
        }
    }

    #[test]
    fn page_lookup_walks_several_pages() {
        let mut pages = compression_page();
        pages.extend_from_slice(&[0x11, 0x0a, 1, 1, 0x30, 3, 0, 0, 0, 10, 0xff, 0xff]);
        let m = sample(pages);
        assert_eq!(
            PartitionPage::decode(m.page(0x11).unwrap()).unwrap().sizes,
            vec![10, 0xffff]
        );
        assert!(m.page(0x1d).is_none());
        // Zero-length page bodies do not loop forever.
        let z = sample(vec![0x00, 0x00, 0x00, 0x00]);
        assert!(z.page(0x0f).is_none());
    }

    proptest! {
        #[test]
        fn decoders_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200), ten: bool, mb: u16) {
            if let Some(d) = ModeData::decode(ten, &b) {
                for code in [0x0f, 0x11, 0x3f] {
                    if let Some(p) = d.page(code) {
                        let _ = CompressionPage::decode(p);
                        let _ = PartitionPage::decode(p);
                        let _ = two_partition_page(p, mb);
                    }
                }
                let _ = d.encode_select(ten);
            }
            let _ = PartitionPage::decode(&b);
            let _ = two_partition_page(&b, mb);
            let _ = CompressionPage::decode(&b);
        }
    }
}
