//! The appliance's console, as sans-IO pieces the kernel drives: keys from
//! a serial terminal ([`keys::SerialDecoder`]) or a PS/2 keyboard
//! ([`scancode::Ps2Decoder`]) go into one [`editor::LineEditor`], whose
//! output goes to the serial line and to the screen ([`grid::TextGrid`]).

pub mod editor;
pub mod grid;
pub mod keys;
pub mod scancode;

pub use editor::{Completer, LineEditor, NoCompletion, Outcome};
pub use keys::{Key, SerialDecoder};
pub use scancode::Ps2Decoder;
