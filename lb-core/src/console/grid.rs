//! The screen console's text: a grid of character cells that console
//! output is written into (`\n`, `\r`, `\b` and printable ASCII; other
//! bytes show as `?`), scrolling at the bottom, with the rows changed since
//! the last render marked so the kernel redraws only those. The kernel
//! renders it to VGA text memory or, with a bitmap font, to the linear
//! framebuffer the boot loader set up.

use alloc::vec;
use alloc::vec::Vec;

/// A screen of `cols` × `rows` character cells.
#[derive(Clone, Debug)]
pub struct TextGrid {
    cols: usize,
    rows: usize,
    cells: Vec<u8>,
    row: usize,
    /// `col == cols` means a wrap is pending: the next character goes to
    /// the next row (as terminals do, so a full-width line followed by
    /// `\n` leaves no blank line).
    col: usize,
    dirty: Vec<bool>,
    /// Where the cursor was drawn last (its row must be redrawn when it moves).
    drawn_cursor: (usize, usize),
}

impl TextGrid {
    pub fn new(cols: usize, rows: usize) -> TextGrid {
        let (cols, rows) = (cols.max(1), rows.max(1));
        TextGrid {
            cols,
            rows,
            cells: vec![b' '; cols * rows],
            row: 0,
            col: 0,
            dirty: vec![true; rows],
            drawn_cursor: (0, 0),
        }
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The cursor's cell (column clamped to the last one).
    pub fn cursor(&self) -> (usize, usize) {
        (self.row, self.col.min(self.cols - 1))
    }

    /// The characters of row `r`.
    pub fn row(&self, r: usize) -> &[u8] {
        &self.cells[r * self.cols..(r + 1) * self.cols]
    }

    fn newline(&mut self) {
        self.col = 0;
        if self.row + 1 < self.rows {
            self.row += 1;
            return;
        }
        self.cells.copy_within(self.cols.., 0);
        let last = (self.rows - 1) * self.cols;
        self.cells[last..].fill(b' ');
        self.dirty.fill(true);
    }

    /// Writes one byte of console output.
    pub fn put(&mut self, b: u8) {
        match b {
            b'\n' => self.newline(),
            b'\r' => self.col = 0,
            8 => {
                if self.col >= self.cols {
                    self.col = self.cols - 1;
                } else if self.col > 0 {
                    self.col -= 1;
                } else if self.row > 0 {
                    // Back over a wrapped line.
                    self.row -= 1;
                    self.col = self.cols - 1;
                }
            }
            _ => {
                if self.col >= self.cols {
                    self.newline();
                }
                let c = if (0x20..0x7f).contains(&b) { b } else { b'?' };
                self.cells[self.row * self.cols + self.col] = c;
                self.dirty[self.row] = true;
                self.col += 1;
            }
        }
    }

    pub fn write(&mut self, bytes: &[u8]) {
        bytes.iter().for_each(|&b| self.put(b));
    }

    /// Takes up to `budget` rows that need drawing (the cursor's old and
    /// new rows included), top to bottom, and marks them clean.
    pub fn take_dirty(&mut self, budget: usize) -> Vec<usize> {
        let cursor = self.cursor();
        if cursor != self.drawn_cursor {
            self.dirty[self.drawn_cursor.0.min(self.rows - 1)] = true;
            self.dirty[cursor.0] = true;
            self.drawn_cursor = cursor;
        }
        let mut out = Vec::new();
        for (r, d) in self.dirty.iter_mut().enumerate() {
            if out.len() >= budget {
                break;
            }
            if core::mem::take(d) {
                out.push(r);
            }
        }
        out
    }

    /// Whether rows wait to be drawn.
    pub fn is_dirty(&self) -> bool {
        self.dirty.iter().any(|&d| d) || self.cursor() != self.drawn_cursor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(g: &TextGrid) -> alloc::string::String {
        (0..g.rows())
            .map(|r| core::str::from_utf8(g.row(r)).unwrap().trim_end())
            .collect::<Vec<_>>()
            .join("|")
    }

    #[test]
    fn writes_wraps_and_scrolls() {
        let mut g = TextGrid::new(4, 3);
        g.write(b"ab\ncdef\nxy");
        assert_eq!(text(&g), "ab|cdef|xy", "a full row then \\n: no blank row");
        g.write(b"\nzz");
        assert_eq!(text(&g), "cdef|xy|zz");
        g.write(b"\r1\x082\x08");
        assert_eq!((text(&g), g.cursor()), ("cdef|xy|2z".into(), (2, 0)));
        g.write(b"\x08");
        assert_eq!(g.cursor(), (1, 3), "backspace goes back over a wrap");
        g.write(b"\n\n");
        g.write(&[0x1b, 0xff]);
        assert_eq!(text(&g), "xy|2z|??");
    }

    #[test]
    fn only_changed_rows_are_redrawn() {
        let mut g = TextGrid::new(10, 5);
        assert_eq!(g.take_dirty(2), [0, 1]);
        assert_eq!(g.take_dirty(10), [2, 3, 4]);
        assert!(!g.is_dirty());
        g.write(b"x");
        assert_eq!(g.take_dirty(10), [0]);
        g.write(b"\n\n");
        assert_eq!(g.take_dirty(10), [0, 2], "the cursor's old and new rows");
        assert!(g.take_dirty(10).is_empty());
    }
}
