//! Reading the Multiboot1 information structure the loader left in memory.
//!
//! [`BootInfo::read`] copies what the kernel needs (command line, memory map)
//! into a fixed-size value right away, so the loader's memory may be reused by
//! the heap afterwards. Oversized input is truncated, never trusted: the
//! command line keeps its first [`CMDLINE_MAX`] bytes and the memory map its
//! first [`MAX_REGIONS`] entries.

/// Longest command line kept, in bytes.
pub const CMDLINE_MAX: usize = 512;
/// Most memory-map entries kept.
pub const MAX_REGIONS: usize = 32;

const FLAG_MEM: u32 = 1 << 0;
const FLAG_CMDLINE: u32 = 1 << 2;
const FLAG_MODS: u32 = 1 << 3;
const FLAG_MMAP: u32 = 1 << 6;
const FLAG_FRAMEBUFFER: u32 = 1 << 12;

/// One entry of the firmware memory map.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryRegion {
    pub base: u64,
    pub len: u64,
    /// Multiboot type: 1 = available RAM; anything else is reserved.
    pub kind: u32,
}

impl MemoryRegion {
    pub fn is_ram(&self) -> bool {
        self.kind == 1
    }
    pub fn end(&self) -> u64 {
        self.base.saturating_add(self.len)
    }
}

/// The display the boot loader left set up (Multiboot framebuffer info).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// VGA text mode: `cols` × `rows` cells of (character, attribute) at `addr`.
    Text { addr: u64, cols: u32, rows: u32 },
    /// A linear framebuffer of `width` × `height` pixels, `pitch` bytes per
    /// line, `bpp` bits per pixel, each colour at its bit position and size.
    Pixels {
        addr: u64,
        pitch: u32,
        width: u32,
        height: u32,
        bpp: u8,
        red: (u8, u8),
        green: (u8, u8),
        blue: (u8, u8),
    },
}

/// What the kernel takes from the boot loader.
#[derive(Clone)]
pub struct BootInfo {
    cmdline: [u8; CMDLINE_MAX],
    cmdline_len: usize,
    regions: [MemoryRegion; MAX_REGIONS],
    region_count: usize,
    /// The highest physical address the loader used for modules or the
    /// information itself; the heap starts above the kernel and avoids these.
    pub reserved: [(u64, u64); 4],
    /// Physical range (start, end) of the first boot module, if any.
    first_module: Option<(u64, u64)>,
    /// The display, when the loader says which (GRUB does; QEMU's
    /// `-kernel` loader does not).
    pub display: Option<Display>,
}

impl BootInfo {
    /// An empty value: no command line, no memory.
    pub const fn empty() -> Self {
        BootInfo {
            cmdline: [0; CMDLINE_MAX],
            cmdline_len: 0,
            regions: [MemoryRegion {
                base: 0,
                len: 0,
                kind: 0,
            }; MAX_REGIONS],
            region_count: 0,
            reserved: [(0, 0); 4],
            first_module: None,
            display: None,
        }
    }

    /// Copies the command line and memory map out of the information structure.
    ///
    /// # Safety
    /// `info` must be the physical address a Multiboot1 loader passed in EBX,
    /// and physical memory must be identity-mapped and readable.
    pub unsafe fn read(info: u32) -> Self {
        let mut out = BootInfo::empty();
        let base = info as usize as *const u8;
        // SAFETY: the caller guarantees `info` points at a Multiboot information structure.
        let rd32 = |off: usize| unsafe { core::ptr::read_unaligned(base.add(off) as *const u32) };
        let flags = rd32(0);
        out.reserved[0] = (u64::from(info), u64::from(info) + 120);

        if flags & FLAG_CMDLINE != 0 {
            let p = rd32(16) as usize as *const u8;
            let mut n = 0;
            // SAFETY: the loader passes a NUL-terminated string; we stop at CMDLINE_MAX.
            while n < CMDLINE_MAX && unsafe { *p.add(n) } != 0 {
                // SAFETY: byte `n` was just read above: inside the string.
                out.cmdline[n] = unsafe { *p.add(n) };
                n += 1;
            }
            out.cmdline_len = n;
            out.reserved[1] = (p as u64, p as u64 + n as u64 + 1);
        }

        if flags & FLAG_MODS != 0 && rd32(20) > 0 {
            let mods = rd32(24) as usize as *const u32;
            let count = rd32(20).min(16) as usize;
            let (mut lo, mut hi) = (u64::MAX, 0u64);
            for i in 0..count {
                // SAFETY: `count` module entries of 16 bytes each start at `mods`.
                let (start, end) = unsafe { (*mods.add(i * 4), *mods.add(i * 4 + 1)) };
                lo = lo.min(u64::from(start));
                hi = hi.max(u64::from(end));
                if i == 0 && end >= start {
                    out.first_module = Some((u64::from(start), u64::from(end)));
                }
            }
            out.reserved[2] = (lo, hi);
            out.reserved[3] = (mods as u64, mods as u64 + count as u64 * 16);
        }

        if flags & FLAG_FRAMEBUFFER != 0 {
            // SAFETY: with flag 12 the structure is at least 118 bytes long.
            let rd8 = |off: usize| unsafe { *base.add(off) };
            // SAFETY: as above.
            let addr = unsafe { core::ptr::read_unaligned(base.add(88) as *const u64) };
            let (pitch, width, height, bpp) = (rd32(96), rd32(100), rd32(104), rd8(108));
            out.display = match rd8(109) {
                1 if matches!(bpp, 16 | 24 | 32) && width > 0 && height > 0 => {
                    Some(Display::Pixels {
                        addr,
                        pitch,
                        width,
                        height,
                        bpp,
                        // The colour fields follow a union with a u32 in
                        // it, so they start 4-byte aligned, at 112.
                        red: (rd8(112), rd8(113)),
                        green: (rd8(114), rd8(115)),
                        blue: (rd8(116), rd8(117)),
                    })
                }
                2 if width > 0 && height > 0 => Some(Display::Text {
                    addr,
                    cols: width,
                    rows: height,
                }),
                _ => None,
            };
        }

        if flags & FLAG_MMAP != 0 {
            let len = rd32(44) as usize;
            let start = rd32(48) as usize;
            let mut off = 0;
            while off + 24 <= len && out.region_count < MAX_REGIONS {
                let e = (start + off) as *const u8;
                // SAFETY: each entry is `size` bytes after its 4-byte size field, within `len`.
                let (size, region) = unsafe {
                    let size = core::ptr::read_unaligned(e as *const u32) as usize;
                    let base = core::ptr::read_unaligned(e.add(4) as *const u64);
                    let len = core::ptr::read_unaligned(e.add(12) as *const u64);
                    let kind = core::ptr::read_unaligned(e.add(20) as *const u32);
                    (size, MemoryRegion { base, len, kind })
                };
                out.regions[out.region_count] = region;
                out.region_count += 1;
                if size < 20 {
                    break;
                }
                off += size + 4;
            }
        } else if flags & FLAG_MEM != 0 {
            // No map: the lower/upper sizes (KiB) still describe RAM above 1 MiB.
            out.regions[0] = MemoryRegion {
                base: 0x10_0000,
                len: u64::from(rd32(8)) * 1024,
                kind: 1,
            };
            out.region_count = 1;
        }
        out
    }

    /// The kernel command line (lossy: invalid UTF-8 yields an empty line).
    pub fn cmdline(&self) -> &str {
        core::str::from_utf8(&self.cmdline[..self.cmdline_len]).unwrap_or("")
    }

    /// Physical (start, end) of the first boot module (the config blob). The
    /// heap avoids it (see `reserved`), so it stays readable.
    pub fn first_module(&self) -> Option<(u64, u64)> {
        self.first_module
    }

    /// The memory map as given by the firmware.
    pub fn regions(&self) -> &[MemoryRegion] {
        &self.regions[..self.region_count]
    }

    /// Bytes of available RAM.
    pub fn ram_bytes(&self) -> u64 {
        self.regions()
            .iter()
            .filter(|r| r.is_ram())
            .map(|r| r.len)
            .sum()
    }
}
