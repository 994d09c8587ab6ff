//! The screen half of the console: lb-core's text grid drawn on VGA text
//! memory (BIOS boots) or, with a bitmap font, on the linear framebuffer the
//! boot loader set up (UEFI boots, where there is no text mode).
//!
//! Console output goes into the grid at once (RAM only); [`flush`], called
//! from the idle loop, draws a few changed rows per pass. Every store to VGA
//! text memory is a VM exit, and a scrolled framebuffer is megabytes of
//! stores, so the budget keeps one pass short and the data path never waits
//! for the screen.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use boot::multiboot::Display;
use core::cell::RefCell;
use core::sync::atomic::{AtomicUsize, Ordering};
use critical_section::Mutex;
use lb_core::console::grid::TextGrid;
use noto_sans_mono_bitmap::{FontWeight, RasterHeight, get_raster, get_raster_width};

// SAFETY: the VGA CRT controller's index and data ports; only this module
// uses them (to hide the hardware cursor), and they do no DMA.
const CRTC_INDEX: crate::cpu::Port = unsafe { crate::cpu::Port::new(0x3D4) };
// SAFETY: as for CRTC_INDEX.
const CRTC_DATA: crate::cpu::Port = unsafe { crate::cpu::Port::new(0x3D5) };

/// Rows drawn per idle pass.
const ROWS_PER_PASS_TEXT: usize = 2;
const ROWS_PER_PASS_PIXELS: usize = 3;
/// Light grey on black, as the VGA text console.
const FG: (u32, u32, u32) = (0xC0, 0xC0, 0xC0);
const BG: (u32, u32, u32) = (0, 0, 0);
const FONT: RasterHeight = RasterHeight::Size16;
const WEIGHT: FontWeight = FontWeight::Regular;

enum Surface {
    /// VGA text cells (character, attribute).
    Text { base: *mut u16 },
    /// Framebuffer pixels.
    Pixels {
        base: *mut u8,
        pitch: usize,
        bytes_pp: usize,
        /// Pixel values for 16 levels of ink, on the normal and the
        /// inverted (cursor) background.
        ink: [[u32; 16]; 2],
        glyph_w: usize,
        glyph_h: usize,
    },
}

struct Screen {
    grid: TextGrid,
    surface: Surface,
    /// What is on the glass: (character, cursor) per cell, to skip cells
    /// that did not change.
    drawn: Vec<(u8, bool)>,
}

// SAFETY: the raw pointers address device memory only this module writes,
// from thread context on the one CPU.
unsafe impl Send for Screen {}

static SCREEN: Mutex<RefCell<Option<Screen>>> = Mutex::new(RefCell::new(None));

/// A colour channel of `(pos, size)` for an 8-bit value.
fn channel(v: u32, (pos, size): (u8, u8)) -> u32 {
    let v = if size >= 8 {
        v << (size - 8)
    } else {
        v >> (8 - size)
    };
    v << pos
}

fn mix(a: u32, b: u32, level: u32) -> u32 {
    (a * level + b * (15 - level)) / 15
}

/// The ink table for one background.
fn ink(display: &Display, fg: (u32, u32, u32), bg: (u32, u32, u32)) -> [u32; 16] {
    let Display::Pixels {
        red, green, blue, ..
    } = *display
    else {
        return [0; 16];
    };
    core::array::from_fn(|l| {
        let l = l as u32;
        channel(mix(fg.0, bg.0, l), red)
            | channel(mix(fg.1, bg.1, l), green)
            | channel(mix(fg.2, bg.2, l), blue)
    })
}

/// Sets up the screen for `display` (the loader's), or for VGA text at
/// 0xB8000 when `bios_text` says a BIOS left text mode on. Returns what it
/// found, for the banner.
pub fn init(display: Option<Display>, bios_text: bool) -> Option<String> {
    let display = display.or(bios_text.then_some(Display::Text {
        addr: 0xB8000,
        cols: 80,
        rows: 25,
    }))?;
    let (screen, what) = match display {
        Display::Text { addr, cols, rows } => {
            let (cols, rows) = (cols.min(200) as usize, rows.min(100) as usize);
            if cols >= 80 && rows >= 25 {
                TEXT_BASE.store(addr as usize, Ordering::Relaxed);
            }
            // Hide the hardware cursor: the grid draws its own.
            CRTC_INDEX.write8(0x0A);
            CRTC_DATA.write8(0x20);
            (
                Screen {
                    grid: TextGrid::new(cols, rows),
                    surface: Surface::Text {
                        base: addr as usize as *mut u16,
                    },
                    drawn: vec![(0, false); cols * rows],
                },
                format!("VGA text {cols}x{rows}"),
            )
        }
        Display::Pixels {
            addr,
            pitch,
            width,
            height,
            bpp,
            ..
        } => {
            crate::memory::map_mmio(addr, u64::from(pitch) * u64::from(height));
            let glyph_w = get_raster_width(WEIGHT, FONT);
            let glyph_h = FONT.val();
            let (cols, rows) = (width as usize / glyph_w, height as usize / glyph_h);
            if cols == 0 || rows == 0 {
                return None;
            }
            let screen = Screen {
                grid: TextGrid::new(cols, rows),
                surface: Surface::Pixels {
                    base: addr as usize as *mut u8,
                    pitch: pitch as usize,
                    bytes_pp: usize::from(bpp).div_ceil(8),
                    ink: [ink(&display, FG, BG), ink(&display, BG, FG)],
                    glyph_w,
                    glyph_h,
                },
                drawn: vec![(0, false); cols * rows],
            };
            (
                screen,
                format!("framebuffer {width}x{height}x{bpp}, text {cols}x{rows}"),
            )
        }
    };
    critical_section::with(|cs| *SCREEN.borrow_ref_mut(cs) = Some(screen));
    Some(what)
}

/// VGA text memory when the screen is in text mode (0: it is not), for
/// [`emergency`].
static TEXT_BASE: AtomicUsize = AtomicUsize::new(0);
/// Where exception reports go on the text screen.
static EMERGENCY_POS: AtomicUsize = AtomicUsize::new(0);
const TEXT_CELLS: usize = 80 * 25;

/// Writes `s` straight into VGA text memory from the top of the screen,
/// white on red: for exception handlers, which may have interrupted code
/// inside a critical section (one that does not mask interrupts, see
/// `CriticalSection` in main.rs) and so must not enter one or touch the
/// grid. They halt afterwards; nothing else writes. A framebuffer screen
/// gets nothing here (the serial line has the report).
pub fn emergency(s: &str) {
    let base = TEXT_BASE.load(Ordering::Relaxed) as *mut u16;
    if base.is_null() {
        return;
    }
    let mut pos = EMERGENCY_POS.load(Ordering::Relaxed);
    for b in s.bytes() {
        match b {
            b'\n' => pos = (pos / 80 + 1) * 80,
            b'\r' => pos -= pos % 80,
            _ => {
                if pos < TEXT_CELLS {
                    // SAFETY: `base` is the VGA text buffer the screen was
                    // set up on (80x25 at least) and `pos` < 2000.
                    unsafe { base.add(pos).write_volatile(0x4F00 | u16::from(b)) };
                }
                pos += 1;
            }
        }
        pos = pos.min(TEXT_CELLS);
    }
    EMERGENCY_POS.store(pos, Ordering::Relaxed);
}

/// Adds console output to the screen (drawn later by [`flush`]).
pub fn write(bytes: &[u8]) {
    critical_section::with(|cs| {
        // Busy only if an exception hit while writing: skip the screen then.
        if let Ok(mut s) = SCREEN.borrow(cs).try_borrow_mut()
            && let Some(s) = s.as_mut()
        {
            s.grid.write(bytes);
        }
    });
}

impl Screen {
    fn draw_row(&mut self, r: usize) {
        let cols = self.grid.cols();
        let cursor = self.grid.cursor();
        for c in 0..cols {
            let ch = self.grid.row(r)[c];
            let is_cursor = cursor == (r, c);
            let cell = r * cols + c;
            if self.drawn[cell] == (ch, is_cursor) {
                continue;
            }
            self.drawn[cell] = (ch, is_cursor);
            match &self.surface {
                Surface::Text { base } => {
                    let attr: u16 = if is_cursor { 0x70 } else { 0x07 };
                    // SAFETY: `cell` < cols × rows of the text buffer the loader described.
                    unsafe { base.add(cell).write_volatile((attr << 8) | u16::from(ch)) };
                }
                Surface::Pixels {
                    base,
                    pitch,
                    bytes_pp,
                    ink,
                    glyph_w,
                    glyph_h,
                } => {
                    let ink = &ink[usize::from(is_cursor)];
                    let glyph = get_raster(char::from(ch), WEIGHT, FONT)
                        .or_else(|| get_raster('?', WEIGHT, FONT));
                    for y in 0..*glyph_h {
                        let line = (r * glyph_h + y) * pitch + c * glyph_w * bytes_pp;
                        for x in 0..*glyph_w {
                            let level = glyph
                                .as_ref()
                                .and_then(|g| g.pixel(x, y))
                                .map_or(0, |v| usize::from(v >> 4));
                            let px = ink[level];
                            // SAFETY: (x, y) lies inside the framebuffer the
                            // loader described: cols × glyph_w ≤ width and
                            // rows × glyph_h ≤ height.
                            unsafe {
                                let p = base.add(line + x * bytes_pp);
                                match bytes_pp {
                                    4 => (p as *mut u32).write_volatile(px),
                                    3 => {
                                        p.write_volatile(px as u8);
                                        p.add(1).write_volatile((px >> 8) as u8);
                                        p.add(2).write_volatile((px >> 16) as u8);
                                    }
                                    _ => (p as *mut u16).write_volatile(px as u16),
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Draws a few changed rows (from the idle loop); returns whether more wait.
pub fn flush() -> bool {
    critical_section::with(|cs| {
        let Ok(mut s) = SCREEN.borrow(cs).try_borrow_mut() else {
            return false;
        };
        let Some(s) = s.as_mut() else {
            return false;
        };
        let budget = match s.surface {
            Surface::Text { .. } => ROWS_PER_PASS_TEXT,
            Surface::Pixels { .. } => ROWS_PER_PASS_PIXELS,
        };
        for r in s.grid.take_dirty(budget) {
            s.draw_row(r);
        }
        s.grid.is_dirty()
    })
}
