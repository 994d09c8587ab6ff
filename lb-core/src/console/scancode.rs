//! PS/2 keyboard scancodes (set 1, what the i8042 controller delivers with
//! translation on) to keys, US layout. The same [`Key`]s come out as from
//! the serial decoder, so one line editor serves both consoles.

use super::keys::Key;

/// Unshifted and shifted characters of make codes 0x00..0x3A.
const PLAIN: &[u8; 0x3A] =
    b"\0\x1b1234567890-=\x08\tqwertyuiop[]\n\0asdfghjkl;'`\0\\zxcvbnm,./\0*\0 ";
const SHIFTED: &[u8; 0x3A] =
    b"\0\x1b!@#$%^&*()_+\x08\tQWERTYUIOP{}\n\0ASDFGHJKL:\"~\0|ZXCVBNM<>?\0*\0 ";

/// Keypad make codes 0x47..=0x53 as characters.
const KEYPAD: &[u8; 13] = b"789-456+1230.";

const LSHIFT: u8 = 0x2A;
const RSHIFT: u8 = 0x36;
const CTRL: u8 = 0x1D;
const CAPS: u8 = 0x3A;

/// Scancode decoder state: modifiers and multi-byte prefixes.
#[derive(Clone, Debug, Default)]
pub struct Ps2Decoder {
    shift: [bool; 2],
    ctrl: [bool; 2],
    caps: bool,
    /// After 0xE0.
    extended: bool,
    /// Bytes of a Pause sequence (0xE1 ...) still to skip.
    skip: u8,
}

impl Ps2Decoder {
    pub fn new() -> Self {
        Ps2Decoder::default()
    }

    /// Feeds one byte from the controller; returns the key it completes.
    pub fn feed(&mut self, b: u8) -> Option<Key> {
        if self.skip > 0 {
            self.skip -= 1;
            return None;
        }
        match b {
            0xE0 => {
                self.extended = true;
                return None;
            }
            0xE1 => {
                self.skip = 5;
                return None;
            }
            // Keyboard replies and errors (ACK, resend, echo, overrun). The
            // self-test reply 0xAA is also left shift's release: kept.
            0x00 | 0xEE | 0xFA | 0xFC | 0xFD | 0xFE | 0xFF => return None,
            _ => {}
        }
        let extended = core::mem::replace(&mut self.extended, false);
        let released = b & 0x80 != 0;
        let code = b & 0x7F;
        if extended {
            return self.extended_key(code, released);
        }
        match code {
            LSHIFT | RSHIFT => {
                self.shift[usize::from(code == RSHIFT)] = !released;
                return None;
            }
            CTRL => {
                self.ctrl[0] = !released;
                return None;
            }
            _ if released => return None,
            CAPS => {
                self.caps = !self.caps;
                return None;
            }
            _ => {}
        }
        if (0x47..=0x53).contains(&code) {
            return Some(Key::Char(KEYPAD[usize::from(code - 0x47)]));
        }
        let c = *PLAIN.get(usize::from(code))?;
        if self.ctrl.iter().any(|&c| c) {
            return ctrl_key(c);
        }
        let shift = self.shift.iter().any(|&s| s);
        let c = if shift { SHIFTED[usize::from(code)] } else { c };
        let c = if self.caps && c.is_ascii_alphabetic() {
            c ^ 0x20
        } else {
            c
        };
        match c {
            0 | 0x1b => None,
            0x08 => Some(Key::Backspace),
            b'\t' => Some(Key::Tab),
            b'\n' => Some(Key::Enter),
            c => Some(Key::Char(c)),
        }
    }

    fn extended_key(&mut self, code: u8, released: bool) -> Option<Key> {
        if code == CTRL {
            self.ctrl[1] = !released;
            return None;
        }
        if released {
            return None;
        }
        match code {
            0x1C => Some(Key::Enter),
            0x35 => Some(Key::Char(b'/')),
            0x47 => Some(Key::Home),
            0x48 => Some(Key::Up),
            0x4B => Some(Key::Left),
            0x4D => Some(Key::Right),
            0x4F => Some(Key::End),
            0x50 => Some(Key::Down),
            0x53 => Some(Key::Delete),
            _ => None,
        }
    }
}

/// Ctrl with the key whose plain character is `c`.
fn ctrl_key(c: u8) -> Option<Key> {
    match c {
        b'a' => Some(Key::Home),
        b'c' => Some(Key::Interrupt),
        b'd' => Some(Key::EndOfInput),
        b'e' => Some(Key::End),
        b'l' => Some(Key::Redraw),
        b'u' => Some(Key::KillLine),
        b'w' => Some(Key::KillWord),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn keys(bytes: &[u8]) -> Vec<Key> {
        let mut d = Ps2Decoder::new();
        bytes.iter().filter_map(|&b| d.feed(b)).collect()
    }

    /// Make then break code of each key.
    fn taps(codes: &[u8]) -> Vec<u8> {
        codes.iter().flat_map(|&c| [c, c | 0x80]).collect()
    }

    #[test]
    fn typing_an_address() {
        // "10.77.0.9/24" then Enter.
        let codes = [
            0x02, 0x0B, 0x34, 0x08, 0x08, 0x34, 0x0B, 0x34, 0x0A, 0x35, 0x03, 0x05, 0x1C,
        ];
        let got: Vec<u8> = keys(&taps(&codes))
            .into_iter()
            .map(|k| match k {
                Key::Char(c) => c,
                Key::Enter => b'\n',
                _ => b'?',
            })
            .collect();
        assert_eq!(got, b"10.77.0.9/24\n");
    }

    #[test]
    fn shift_caps_and_ctrl() {
        // Shift held over 'h', released before 'i'.
        assert_eq!(
            keys(&[0x2A, 0x23, 0xA3, 0xAA, 0x17, 0x97]),
            [Key::Char(b'H'), Key::Char(b'i')]
        );
        // Caps lock toggles letters only.
        assert_eq!(
            keys(&[0x3A, 0xBA, 0x1E, 0x9E, 0x02, 0x82]),
            [Key::Char(b'A'), Key::Char(b'1')]
        );
        // Ctrl-C, with the right Ctrl (E0 1D).
        assert_eq!(
            keys(&[0xE0, 0x1D, 0x2E, 0xAE, 0xE0, 0x9D]),
            [Key::Interrupt]
        );
        assert_eq!(
            keys(&[0x1D, 0x16, 0x96, 0x9D, 0x16]),
            [Key::KillLine, Key::Char(b'u')]
        );
    }

    #[test]
    fn extended_keys_and_noise() {
        assert_eq!(
            keys(&[
                0xE0, 0x48, 0xE0, 0xC8, 0xE0, 0x50, 0xE0, 0x4B, 0xE0, 0x4D, 0xE0, 0x53, 0x0E, 0x0F
            ]),
            [
                Key::Up,
                Key::Down,
                Key::Left,
                Key::Right,
                Key::Delete,
                Key::Backspace,
                Key::Tab
            ]
        );
        // Pause, controller ACKs, unknown codes: nothing.
        assert!(keys(&[0xE1, 0x1D, 0x45, 0xE1, 0x9D, 0xC5, 0xFA, 0xFE, 0x58, 0x7F]).is_empty());
    }
}
