//! Keystrokes, and the decoder that turns a serial terminal's bytes into
//! them (the screen's PS/2 keyboard has its own decoder in
//! [`super::scancode`]; both feed the same line editor).

/// One keystroke the line editor understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    /// A printable ASCII character (space to `~`).
    Char(u8),
    Enter,
    Backspace,
    Delete,
    Left,
    Right,
    Up,
    Down,
    Home,
    End,
    Tab,
    /// Ctrl-C: abandon the line (and whatever question is open).
    Interrupt,
    /// Ctrl-D: end of input (ends a pasted config).
    EndOfInput,
    /// Ctrl-U: erase the line.
    KillLine,
    /// Ctrl-W: erase the word before the cursor.
    KillWord,
    /// Ctrl-L: draw the line again.
    Redraw,
}

/// Where the decoder is in an escape sequence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Esc {
    #[default]
    None,
    /// After ESC.
    Escape,
    /// After ESC [ or ESC O, with the number read so far.
    Csi(u16),
}

/// Serial terminal bytes to keys: VT100/xterm arrow and editing keys
/// (`ESC [ A`, `ESC O A`, `ESC [ 3 ~`, ...), control characters, and CR,
/// LF or CR LF as one Enter. Unknown sequences and bytes are dropped, never
/// taken as text.
#[derive(Clone, Debug, Default)]
pub struct SerialDecoder {
    esc: Esc,
    /// The last byte was CR: a following LF belongs to it.
    after_cr: bool,
}

impl SerialDecoder {
    pub fn new() -> Self {
        SerialDecoder::default()
    }

    /// Feeds one byte; returns the key it completes, if any.
    pub fn feed(&mut self, b: u8) -> Option<Key> {
        let after_cr = core::mem::replace(&mut self.after_cr, false);
        match self.esc {
            Esc::Escape => {
                self.esc = match b {
                    b'[' | b'O' => Esc::Csi(0),
                    // ESC then something else: drop the ESC, take the byte.
                    _ => Esc::None,
                };
                if self.esc != Esc::None {
                    return None;
                }
            }
            Esc::Csi(n) => {
                return match b {
                    b'0'..=b'9' => {
                        self.esc =
                            Esc::Csi(n.saturating_mul(10).saturating_add(u16::from(b - b'0')));
                        None
                    }
                    // Parameters like `1;5` (modifiers): keep the first number.
                    b';' => None,
                    _ => {
                        self.esc = Esc::None;
                        csi_key(n, b)
                    }
                };
            }
            Esc::None => {}
        }
        match b {
            0x1b => {
                self.esc = Esc::Escape;
                None
            }
            b'\r' => {
                self.after_cr = true;
                Some(Key::Enter)
            }
            b'\n' if after_cr => None,
            b'\n' => Some(Key::Enter),
            0x7f | 0x08 => Some(Key::Backspace),
            b'\t' => Some(Key::Tab),
            0x01 => Some(Key::Home),
            0x02 => Some(Key::Left),
            0x03 => Some(Key::Interrupt),
            0x04 => Some(Key::EndOfInput),
            0x05 => Some(Key::End),
            0x06 => Some(Key::Right),
            0x0c => Some(Key::Redraw),
            0x0e => Some(Key::Down),
            0x10 => Some(Key::Up),
            0x15 => Some(Key::KillLine),
            0x17 => Some(Key::KillWord),
            0x20..=0x7e => Some(Key::Char(b)),
            _ => None,
        }
    }
}

/// The key of `ESC [ n final`.
fn csi_key(n: u16, last: u8) -> Option<Key> {
    match (last, n) {
        (b'A', _) => Some(Key::Up),
        (b'B', _) => Some(Key::Down),
        (b'C', _) => Some(Key::Right),
        (b'D', _) => Some(Key::Left),
        (b'H', _) => Some(Key::Home),
        (b'F', _) => Some(Key::End),
        (b'~', 1 | 7) => Some(Key::Home),
        (b'~', 4 | 8) => Some(Key::End),
        (b'~', 3) => Some(Key::Delete),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn keys(bytes: &[u8]) -> Vec<Key> {
        let mut d = SerialDecoder::new();
        bytes.iter().filter_map(|&b| d.feed(b)).collect()
    }

    #[test]
    fn text_and_line_ends() {
        assert_eq!(
            keys(b"ab\r\nc\nd\r\re"),
            [
                Key::Char(b'a'),
                Key::Char(b'b'),
                Key::Enter,
                Key::Char(b'c'),
                Key::Enter,
                Key::Char(b'd'),
                Key::Enter,
                Key::Enter,
                Key::Char(b'e')
            ]
        );
    }

    #[test]
    fn escape_sequences() {
        assert_eq!(
            keys(b"\x1b[A\x1b[B\x1bOC\x1b[D\x1b[3~\x1b[1~\x1b[4~\x1b[1;5C\x1b[H\x1b[F"),
            [
                Key::Up,
                Key::Down,
                Key::Right,
                Key::Left,
                Key::Delete,
                Key::Home,
                Key::End,
                Key::Right,
                Key::Home,
                Key::End
            ]
        );
        // Unknown sequences vanish; a lone ESC does not eat the next key.
        assert_eq!(keys(b"\x1b[99~x\x1bz"), [Key::Char(b'x'), Key::Char(b'z')]);
    }

    #[test]
    fn control_keys() {
        assert_eq!(
            keys(b"\x7f\x08\t\x03\x04\x15\x17\x0c\x01\x05"),
            [
                Key::Backspace,
                Key::Backspace,
                Key::Tab,
                Key::Interrupt,
                Key::EndOfInput,
                Key::KillLine,
                Key::KillWord,
                Key::Redraw,
                Key::Home,
                Key::End
            ]
        );
        // Bytes that are neither text nor keys are dropped.
        assert!(keys(&[0x00, 0x80, 0xff, 0x07]).is_empty());
    }
}
