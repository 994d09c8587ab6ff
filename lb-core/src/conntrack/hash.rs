//! A small keyed hash for the engine's tables.
//!
//! Flow keys come from the network, so an attacker chooses them; with a
//! secret seed (from the caller, e.g. the boot-time RNG) they cannot aim
//! many keys at one probe run. The mixing is the folded 64×64→128-bit
//! multiply used by modern fast hashes (two rounds here): a few
//! nanoseconds for a 5-tuple, and well spread in the low bits that pick a
//! bucket.

const K0: u64 = 0x243F_6A88_85A3_08D3; // digits of pi: nothing up the sleeve
const K1: u64 = 0x1319_8A2E_0370_7344;
const K2: u64 = 0xA409_3822_299F_31D0;

/// The folded multiply: high half XOR low half of the 128-bit product.
#[inline]
fn fold_mul(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// A hash function with a per-table secret.
#[derive(Clone, Copy, Debug)]
pub struct KeyedHash {
    k: [u64; 3],
}

impl KeyedHash {
    /// Expands `seed` (SplitMix64) into the three round keys.
    pub fn new(seed: u64) -> Self {
        let mut s = seed;
        let mut next = || {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        KeyedHash {
            k: [next() ^ K0, next() ^ K1, next() ^ K2],
        }
    }

    /// Hashes two words (up to 16 bytes of key).
    #[inline]
    pub fn hash2(&self, a: u64, b: u64) -> u64 {
        let h = fold_mul(a ^ self.k[0], b ^ self.k[1]);
        fold_mul(h ^ self.k[2], 0x9E37_79B9_7F4A_7C15 ^ a.rotate_left(17))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_changes_the_function() {
        let a = KeyedHash::new(1);
        let b = KeyedHash::new(2);
        assert_ne!(a.hash2(1, 2), b.hash2(1, 2));
        assert_eq!(a.hash2(1, 2), KeyedHash::new(1).hash2(1, 2));
    }

    #[test]
    fn low_bits_spread_for_sequential_ports() {
        // 4096 keys differing only in a port: buckets of a 4096-slot table
        // must be well used (a bad hash would pile them up).
        let h = KeyedHash::new(7);
        let mut used = alloc::vec![0u32; 4096];
        for port in 0..4096u64 {
            used[(h.hash2(0x0a00_0001_0a00_0002, port << 16 | 80) & 4095) as usize] += 1;
        }
        let empty = used.iter().filter(|&&c| c == 0).count();
        // A random function leaves ~1/e ≈ 37 % empty.
        assert!((1300..1800).contains(&empty), "{empty} empty buckets");
        assert!(*used.iter().max().unwrap() <= 10);
    }
}
