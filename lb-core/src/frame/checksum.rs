//! Internet checksum arithmetic (RFC 1071) and incremental updates (RFC 1624).
//!
//! A rewrite touches a few 16-bit words of a header; recomputing a TCP
//! checksum over the whole payload would cost far more than the rewrite, so
//! each changed word is folded into the stored checksum with
//! `HC' = ~(~HC + ~m + m')` (RFC 1624, eqn. 3). Unchanged words are skipped:
//! adding `~m + m` is a one's-complement no-op in value but may flip a zero
//! between its two representations, and skipping keeps a rewrite followed by
//! its reverse byte-for-byte identical.

use core::net::Ipv4Addr;

/// Folds a 32-bit accumulator into 16 bits with end-around carry.
#[inline]
pub const fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// One's-complement sum of `data` as big-endian 16-bit words (a trailing odd
/// byte is padded with zero), folded but not complemented.
pub fn sum(data: &[u8]) -> u16 {
    // A u64 holds 2^48 words without overflow: no carry handling in the loop.
    let mut acc: u64 = 0;
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        acc += u64::from(*last) << 8;
    }
    fold((acc >> 32) as u32 + u32::from(fold(acc as u32)))
}

/// The checksum to store for `data` (whose checksum field reads as zero).
pub fn compute(data: &[u8]) -> u16 {
    !sum(data)
}

/// Accumulated changes to the words covered by one checksum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delta(u32);

impl Delta {
    pub const NONE: Delta = Delta(0);

    /// Records that a covered 16-bit word changes from `old` to `new`.
    #[inline]
    pub fn word(&mut self, old: u16, new: u16) {
        if old != new {
            self.0 += u32::from(!old) + u32::from(new);
            if self.0 >= 0x8000_0000 {
                self.0 = u32::from(fold(self.0));
            }
        }
    }

    /// Records that a covered IPv4 address changes (two words).
    #[inline]
    pub fn addr(&mut self, old: Ipv4Addr, new: Ipv4Addr) {
        let (o, n) = (old.octets(), new.octets());
        self.word(
            u16::from_be_bytes([o[0], o[1]]),
            u16::from_be_bytes([n[0], n[1]]),
        );
        self.word(
            u16::from_be_bytes([o[2], o[3]]),
            u16::from_be_bytes([n[2], n[3]]),
        );
    }

    /// Merges the changes recorded in `other`.
    #[inline]
    pub fn merge(&mut self, other: Delta) {
        self.0 = u32::from(fold(self.0)) + u32::from(fold(other.0));
    }

    pub const fn is_none(self) -> bool {
        self.0 == 0
    }

    /// The checksum after the recorded changes, given the one before.
    #[inline]
    pub fn apply(self, checksum: u16) -> u16 {
        if self.0 == 0 {
            return checksum;
        }
        !fold(u32::from(!checksum) + self.0)
    }

    /// Like [`Delta::apply`] for a UDP checksum: zero means "no checksum" and
    /// stays zero; a computed zero is sent as 0xFFFF (RFC 768).
    #[inline]
    pub fn apply_udp(self, checksum: u16) -> u16 {
        if checksum == 0 {
            return 0;
        }
        match self.apply(checksum) {
            0 => 0xffff,
            c => c,
        }
    }
}

/// Reads a big-endian u16 at `at`; `None` when it lies outside `buf`.
#[inline]
pub(crate) fn read16(buf: &[u8], at: usize) -> Option<u16> {
    let b = buf.get(at..at + 2)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

/// Writes a big-endian u16 at `at`; `None` when it lies outside `buf`.
#[inline]
pub(crate) fn write16(buf: &mut [u8], at: usize, value: u16) -> Option<()> {
    buf.get_mut(at..at + 2)?
        .copy_from_slice(&value.to_be_bytes());
    Some(())
}

/// Replaces the checksum at `at` by `delta` applied to it.
#[inline]
pub(crate) fn patch(buf: &mut [u8], at: usize, delta: Delta) -> Option<()> {
    let old = read16(buf, at)?;
    write16(buf, at, delta.apply(old))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3 example: 0001 f203 f4f5 f6f7 sums to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(sum(&data), 0xddf2);
        assert_eq!(compute(&data), !0xddf2);
    }

    #[test]
    fn odd_length_is_zero_padded() {
        assert_eq!(sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    }

    #[test]
    fn udp_zero_stays_zero_and_computed_zero_becomes_ffff() {
        let mut d = Delta::NONE;
        d.word(0x1111, 0x2222);
        assert_eq!(d.apply_udp(0), 0);
        // Pick the old checksum so that the result is exactly zero:
        // ~HC + ~m + m' = 0xffff  =>  ~HC = 0xffff - (~m + m') folded.
        let mut d = Delta::NONE;
        d.word(0x0001, 0x0002); // ~m + m' = 0xfffe + 0x0002 = 0x1_0000 -> 0x0001
        let hc = !(0xffffu16 - 1); // ~HC = 0xfffe
        assert_eq!(d.apply(hc), 0);
        assert_eq!(d.apply_udp(hc), 0xffff);
    }

    fn same_value(a: u16, b: u16) -> bool {
        a == b || (a == 0 && b == 0xffff) || (a == 0xffff && b == 0)
    }

    proptest! {
        /// Incremental update agrees with a full recomputation (as a value:
        /// 0x0000 and 0xffff are the same one's-complement number).
        #[test]
        fn incremental_matches_full(
            mut data in proptest::collection::vec(any::<u8>(), 2..64),
            changes in proptest::collection::vec((any::<prop::sample::Index>(), any::<u16>()), 1..6),
        ) {
            if data.len() % 2 == 1 { data.pop(); }
            let before = compute(&data);
            let mut delta = Delta::NONE;
            for (idx, new) in changes {
                let at = idx.index(data.len() / 2) * 2;
                let old = read16(&data, at).unwrap();
                delta.word(old, new);
                write16(&mut data, at, new).unwrap();
            }
            let incremental = delta.apply(before);
            let full = compute(&data);
            prop_assert!(same_value(incremental, full),
                "incremental {incremental:#06x} full {full:#06x}");
        }
    }
}
