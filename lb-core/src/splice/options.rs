//! TCP options the relay reads or rewrites: MSS, window scale and
//! SACK-permitted in a SYN, SACK blocks in every segment.
//!
//! Option lists come from the network: a malformed list (a length byte of
//! 0 or 1, or one running past the header) ends parsing there, and what was
//! read before stands. Nothing here panics on any input.

use super::super::frame::checksum::Delta;

const EOL: u8 = 0;
const NOP: u8 = 1;
const MSS: u8 = 2;
const WSCALE: u8 = 3;
const SACK_PERMITTED: u8 = 4;
const SACK: u8 = 5;
const TIMESTAMP: u8 = 8;

/// Largest window shift (RFC 7323 §2.3).
pub const MAX_WSCALE: u8 = 14;

/// What a SYN offers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SynOptions {
    pub mss: Option<u16>,
    /// The shift, clamped to [`MAX_WSCALE`] as RFC 7323 asks.
    pub wscale: Option<u8>,
    pub sack_permitted: bool,
    pub timestamps: bool,
}

/// Each well-formed option as (kind, offset of its value in `opts`, value).
fn each(opts: &[u8], mut f: impl FnMut(u8, usize, &[u8])) {
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            EOL => return,
            NOP => i += 1,
            kind => {
                let Some(&len) = opts.get(i + 1) else { return };
                let len = usize::from(len);
                if len < 2 || i + len > opts.len() {
                    return;
                }
                f(kind, i + 2, &opts[i + 2..i + len]);
                i += len;
            }
        }
    }
}

/// Reads the options of a SYN or SYN-ACK.
pub fn parse_syn(opts: &[u8]) -> SynOptions {
    let mut o = SynOptions::default();
    each(opts, |kind, _, v| match (kind, v.len()) {
        (MSS, 2) => o.mss = Some(u16::from_be_bytes([v[0], v[1]])),
        (WSCALE, 1) => o.wscale = Some(v[0].min(MAX_WSCALE)),
        (SACK_PERMITTED, 0) => o.sack_permitted = true,
        (TIMESTAMP, 8) => o.timestamps = true,
        _ => {}
    });
    o
}

/// Adds `add` (mod 2^32) to every edge of every SACK block in `opts`, in
/// place, recording the changed words in `delta` (for the TCP checksum).
pub fn shift_sack(opts: &mut [u8], add: u32, delta: &mut Delta) {
    if add == 0 {
        return;
    }
    let mut edges: [usize; 8] = [0; 8];
    let mut n = 0;
    each(opts, |kind, at, v| {
        if kind == SACK && v.len().is_multiple_of(8) {
            for k in 0..v.len() / 4 {
                if n < edges.len() {
                    edges[n] = at + 4 * k;
                    n += 1;
                }
            }
        }
    });
    for &at in &edges[..n] {
        let old = u32::from_be_bytes([opts[at], opts[at + 1], opts[at + 2], opts[at + 3]]);
        let new = old.wrapping_add(add);
        delta.word((old >> 16) as u16, (new >> 16) as u16);
        delta.word(old as u16, new as u16);
        opts[at..at + 4].copy_from_slice(&new.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_linux_syn() {
        // mss 1460, sackOK, TS, nop, wscale 7 (what Linux sends).
        let o = [
            2, 4, 5, 180, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
        ];
        assert_eq!(
            parse_syn(&o),
            SynOptions {
                mss: Some(1460),
                wscale: Some(7),
                sack_permitted: true,
                timestamps: true
            }
        );
    }

    #[test]
    fn malformed_lists_stop_without_panic() {
        assert_eq!(parse_syn(&[2, 0, 5, 180]), SynOptions::default());
        assert_eq!(parse_syn(&[2, 9, 5, 180]), SynOptions::default());
        assert_eq!(parse_syn(&[3]), SynOptions::default());
        assert_eq!(parse_syn(&[1, 1, 3, 3, 40]).wscale, Some(14));
        assert_eq!(parse_syn(&[3, 3, 2, 0, 4, 2]).wscale, Some(2));
    }

    #[test]
    fn shifts_every_sack_edge() {
        let mut o = [
            1, 1, 5, 18, 0, 0, 0, 10, 0, 0, 0, 20, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 5,
        ];
        let mut d = Delta::NONE;
        shift_sack(&mut o, 3, &mut d);
        assert_eq!(&o[4..8], &13u32.to_be_bytes());
        assert_eq!(&o[8..12], &23u32.to_be_bytes());
        assert_eq!(&o[12..16], &2u32.to_be_bytes());
        assert_eq!(&o[16..20], &8u32.to_be_bytes());
        assert!(!d.is_none());
        // A block of the wrong length is left alone.
        let mut bad = [5, 6, 0, 0, 0, 1];
        shift_sack(&mut bad, 3, &mut d);
        assert_eq!(bad, [5, 6, 0, 0, 0, 1]);
    }
}
