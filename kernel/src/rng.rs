//! The appliance's random numbers: a ChaCha20 CSPRNG seeded once at boot.
//!
//! Seed material, strongest first: RDSEED (an entropy source), RDRAND (a
//! DRBG the CPU reseeds), then timing jitter of the TSC around memory and
//! port accesses, which is always mixed in as well. QEMU's `-cpu max` has
//! RDRAND but not RDSEED; `-cpu qemu64` has neither, and then only jitter
//! remains (the boot banner says which sources were used). Everything is
//! hashed with SHA-256 into the 32-byte ChaCha20 key, so a weak or biased
//! source can only add to the others, never subtract.
//!
//! Users: the keyed flow-table hashes, SYN cookies and initial sequence
//! numbers, TLS. Single CPU, thread context only.

use crate::cpu;
use core::cell::RefCell;
use critical_section::Mutex;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

static RNG: Mutex<RefCell<Option<ChaCha20Rng>>> = Mutex::new(RefCell::new(None));

/// Which sources fed the seed.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sources {
    pub rdseed: bool,
    pub rdrand: bool,
    /// TSC jitter samples mixed in (always).
    pub jitter_samples: u32,
}

impl core::fmt::Display for Sources {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.rdseed {
            f.write_str("RDSEED + ")?;
        }
        if self.rdrand {
            f.write_str("RDRAND + ")?;
        }
        write!(f, "TSC jitter ({} samples)", self.jitter_samples)
    }
}

/// A 64-bit word from RDSEED, retried while the CPU says none is ready.
fn rdseed64() -> Option<u64> {
    for _ in 0..128 {
        let (v, ok): (u64, u8);
        // SAFETY: RDSEED only writes its output register and CF; it is
        // allowed in ring 3 and only called when CPUID reports it.
        unsafe {
            core::arch::asm!("rdseed {v}", "setc {ok}", v = out(reg) v, ok = out(reg_byte) ok,
                options(nomem, nostack))
        };
        if ok == 1 {
            return Some(v);
        }
        core::hint::spin_loop();
    }
    None
}

/// A 64-bit word from RDRAND, retried; all-zero and all-one words (the
/// signature of a broken DRBG) are refused.
fn rdrand64() -> Option<u64> {
    for _ in 0..16 {
        let (v, ok): (u64, u8);
        // SAFETY: as for RDSEED.
        unsafe {
            core::arch::asm!("rdrand {v}", "setc {ok}", v = out(reg) v, ok = out(reg_byte) ok,
                options(nomem, nostack))
        };
        if ok == 1 && v != 0 && v != u64::MAX {
            return Some(v);
        }
    }
    None
}

/// Low bits of TSC differences across work whose duration varies (cache,
/// TLB and, under a hypervisor, exit timing): a weak source, so many samples.
fn jitter(hasher: &mut Sha256, samples: u32) {
    let mut scratch = [0u64; 64];
    let mut prev = cpu::rdtsc();
    for i in 0..samples {
        let slot = (prev as usize ^ i as usize) % scratch.len();
        scratch[slot] = scratch[slot].wrapping_add(prev).rotate_left(7);
        let now = cpu::rdtsc();
        hasher.update(now.wrapping_sub(prev).to_le_bytes());
        prev = now;
    }
    // Keeps the scratch writes (and so their timing) from being optimised out.
    hasher.update(scratch.iter().fold(0u64, |a, w| a ^ w).to_le_bytes());
}

/// Collects seed material and starts the generator. Returns what was used.
pub fn init() -> Sources {
    let features1 = cpu::cpuid(1, 0);
    let features7 = cpu::cpuid(7, 0);
    let mut sources = Sources {
        jitter_samples: 4096,
        ..Sources::default()
    };
    let mut hasher = Sha256::new();
    hasher.update(b"lbmed rng seed v1");
    if features7[1] & (1 << 18) != 0 {
        for _ in 0..8 {
            if let Some(w) = rdseed64() {
                hasher.update(w.to_le_bytes());
                sources.rdseed = true;
            }
        }
    }
    if features1[2] & (1 << 30) != 0 {
        for _ in 0..8 {
            if let Some(w) = rdrand64() {
                hasher.update(w.to_le_bytes());
                sources.rdrand = true;
            }
        }
    }
    jitter(&mut hasher, sources.jitter_samples);
    let seed: [u8; 32] = hasher.finalize().into();
    critical_section::with(|cs| {
        *RNG.borrow_ref_mut(cs) = Some(ChaCha20Rng::from_seed(seed));
    });
    sources
}

/// Fills `buf` with random bytes. Before [`init`] it seeds from jitter alone
/// (never returns predictable zeros).
pub fn fill(buf: &mut [u8]) {
    critical_section::with(|cs| {
        let mut rng = RNG.borrow_ref_mut(cs);
        let rng = rng.get_or_insert_with(|| {
            let mut h = Sha256::new();
            jitter(&mut h, 1024);
            ChaCha20Rng::from_seed(h.finalize().into())
        });
        rng.fill_bytes(buf);
    });
}

/// A random 64-bit word.
pub fn u64() -> u64 {
    let mut b = [0u8; 8];
    fill(&mut b);
    u64::from_le_bytes(b)
}

/// getrandom's hook: TLS key shares and nonces come from here.
fn getrandom_fill(buf: &mut [u8]) -> Result<(), getrandom::Error> {
    fill(buf);
    Ok(())
}

getrandom::register_custom_getrandom!(getrandom_fill);
