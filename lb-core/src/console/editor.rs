//! The console's line editor: keys in, screen updates out.
//!
//! Output is plain text plus `\r`, `\n` and `\b` (cursor one left), which
//! every serial terminal and the appliance's own screen understand; no
//! escape sequences. Editing: insert anywhere, Backspace/Delete, ←/→,
//! Home/End (Ctrl-A/E), Ctrl-U erases the line, Ctrl-W the word before the
//! cursor, ↑/↓ walk the history, Tab completes the word before the cursor
//! (one match: completed; several: their common prefix, then the list),
//! Ctrl-C abandons the line. Secret lines (passwords) echo nothing and are
//! not kept in the history.

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;

use super::keys::Key;

/// Longest line, in bytes (longer input is refused key by key).
pub const LINE_MAX: usize = 240;
/// Lines kept in the history.
pub const HISTORY: usize = 32;

/// What the completer is asked for: the words before the one being
/// completed, and that word's beginning.
pub trait Completer {
    /// Every word that may follow `before` and starts with `partial`.
    fn complete(&self, before: &[&str], partial: &str) -> Vec<String>;
}

/// No completion (questions that take free text).
pub struct NoCompletion;

impl Completer for NoCompletion {
    fn complete(&self, _: &[&str], _: &str) -> Vec<String> {
        Vec::new()
    }
}

/// What a key did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Still editing.
    Editing,
    /// Enter: the finished line.
    Line(String),
    /// Ctrl-C.
    Interrupt,
    /// Ctrl-D on an empty line.
    EndOfInput,
}

/// One console's line editor.
#[derive(Clone, Debug, Default)]
pub struct LineEditor {
    prompt: String,
    line: Vec<u8>,
    cursor: usize,
    secret: bool,
    /// Showing a prompt and taking keys.
    active: bool,
    history: VecDeque<String>,
    /// Position while walking the history (0 = newest), and the line that
    /// was being typed before the walk started.
    browsing: Option<(usize, Vec<u8>)>,
}

fn backs(out: &mut String, n: usize) {
    out.extend(core::iter::repeat_n('\u{8}', n));
}

fn spaces(out: &mut String, n: usize) {
    out.extend(core::iter::repeat_n(' ', n));
}

fn text(bytes: &[u8]) -> &str {
    // Only printable ASCII is ever inserted.
    core::str::from_utf8(bytes).unwrap_or("")
}

impl LineEditor {
    pub fn new() -> Self {
        LineEditor::default()
    }

    /// Shows `prompt` and starts a new line (`secret`: echo nothing).
    pub fn start(&mut self, prompt: &str, secret: bool, out: &mut String) {
        self.prompt = String::from(prompt);
        self.line.clear();
        self.cursor = 0;
        self.secret = secret;
        self.active = true;
        self.browsing = None;
        out.push_str(prompt);
    }

    /// Whether a prompt is showing (other output must then erase and
    /// redraw it, see [`erase`](Self::erase) and [`redraw`](Self::redraw)).
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// The line typed so far.
    pub fn line(&self) -> &str {
        text(&self.line)
    }

    fn shown(&self) -> &[u8] {
        if self.secret { &[] } else { &self.line }
    }

    fn shown_cursor(&self) -> usize {
        if self.secret { 0 } else { self.cursor }
    }

    /// Removes the prompt and line from the screen, leaving the cursor at
    /// the start of the (now blank) line.
    pub fn erase(&self, out: &mut String) {
        if !self.active {
            return;
        }
        out.push('\r');
        spaces(out, self.prompt.len() + self.shown().len());
        out.push('\r');
    }

    /// Draws the prompt and line again, cursor in place.
    pub fn redraw(&self, out: &mut String) {
        if !self.active {
            return;
        }
        out.push_str(&self.prompt);
        out.push_str(text(self.shown()));
        backs(out, self.shown().len() - self.shown_cursor());
    }

    /// Replaces the whole line (history, completion) and puts the cursor at
    /// its end.
    fn replace(&mut self, new: Vec<u8>, out: &mut String) {
        let old_len = self.shown().len();
        backs(out, self.shown_cursor());
        self.line = new;
        self.cursor = self.line.len();
        let shown = self.shown().len();
        out.push_str(text(self.shown()));
        if old_len > shown {
            spaces(out, old_len - shown);
            backs(out, old_len - shown);
        }
    }

    /// Removes `n` bytes before the cursor.
    fn delete_back(&mut self, n: usize, out: &mut String) {
        let n = n.min(self.cursor);
        if n == 0 {
            return;
        }
        self.line.drain(self.cursor - n..self.cursor);
        self.cursor -= n;
        if self.secret {
            return;
        }
        backs(out, n);
        let tail = &self.line[self.cursor..];
        out.push_str(text(tail));
        spaces(out, n);
        backs(out, tail.len() + n);
    }

    fn insert(&mut self, bytes: &[u8], out: &mut String) {
        let room = LINE_MAX.saturating_sub(self.line.len());
        let bytes = &bytes[..bytes.len().min(room)];
        if bytes.is_empty() {
            return;
        }
        self.line
            .splice(self.cursor..self.cursor, bytes.iter().copied());
        self.cursor += bytes.len();
        if self.secret {
            return;
        }
        out.push_str(text(bytes));
        let tail = &self.line[self.cursor..];
        out.push_str(text(tail));
        backs(out, tail.len());
    }

    /// Handles one key.
    pub fn feed(&mut self, key: Key, completer: &dyn Completer, out: &mut String) -> Outcome {
        if !self.active {
            return Outcome::Editing;
        }
        if !matches!(key, Key::Up | Key::Down) {
            self.browsing = None;
        }
        match key {
            Key::Char(c) if (0x20..0x7f).contains(&c) => self.insert(&[c], out),
            Key::Char(_) => {}
            Key::Enter => {
                out.push('\n');
                self.active = false;
                let line = String::from(text(&self.line));
                if !self.secret && !line.trim().is_empty() && self.history.front() != Some(&line) {
                    if self.history.len() >= HISTORY {
                        self.history.pop_back();
                    }
                    self.history.push_front(line.clone());
                }
                return Outcome::Line(line);
            }
            Key::Interrupt => {
                out.push_str("^C\n");
                self.active = false;
                return Outcome::Interrupt;
            }
            Key::EndOfInput if self.line.is_empty() => {
                out.push('\n');
                self.active = false;
                return Outcome::EndOfInput;
            }
            Key::EndOfInput => {}
            Key::Backspace => self.delete_back(1, out),
            Key::Delete => {
                if self.cursor < self.line.len() {
                    self.cursor += 1;
                    if !self.secret {
                        out.push_str(text(&self.line[self.cursor - 1..self.cursor]));
                    }
                    self.delete_back(1, out);
                }
            }
            Key::Left => {
                if self.cursor > 0 {
                    self.cursor -= 1;
                    if !self.secret {
                        backs(out, 1);
                    }
                }
            }
            Key::Right => {
                if self.cursor < self.line.len() {
                    if !self.secret {
                        out.push_str(text(&self.line[self.cursor..self.cursor + 1]));
                    }
                    self.cursor += 1;
                }
            }
            Key::Home => {
                backs(out, self.shown_cursor());
                self.cursor = 0;
            }
            Key::End => {
                if !self.secret {
                    out.push_str(text(&self.line[self.cursor..]));
                }
                self.cursor = self.line.len();
            }
            Key::KillLine => self.replace(Vec::new(), out),
            Key::KillWord => {
                let before = &self.line[..self.cursor];
                let word_start = before.iter().rposition(|&b| b != b' ').map_or(0, |end| {
                    before[..end]
                        .iter()
                        .rposition(|&b| b == b' ')
                        .map_or(0, |s| s + 1)
                });
                self.delete_back(self.cursor - word_start, out);
            }
            Key::Redraw => {
                out.push('\n');
                self.redraw(out);
            }
            Key::Up | Key::Down => self.walk_history(key == Key::Up, out),
            Key::Tab => self.complete(completer, out),
        }
        Outcome::Editing
    }

    fn walk_history(&mut self, older: bool, out: &mut String) {
        if self.secret {
            return;
        }
        let next = match (&self.browsing, older) {
            (None, true) if !self.history.is_empty() => Some(0),
            (None, _) => return,
            (Some((i, _)), true) if i + 1 < self.history.len() => Some(i + 1),
            (Some(_), true) => return,
            (Some((0, _)), false) => None,
            (Some((i, _)), false) => Some(i - 1),
        };
        let saved = match self.browsing.take() {
            Some((_, saved)) => saved,
            None => self.line.clone(),
        };
        match next {
            Some(i) => {
                let entry = self.history[i].clone().into_bytes();
                self.replace(entry, out);
                self.browsing = Some((i, saved));
            }
            None => self.replace(saved, out),
        }
    }

    fn complete(&mut self, completer: &dyn Completer, out: &mut String) {
        if self.secret {
            return;
        }
        let before = text(&self.line[..self.cursor]);
        let partial_start = before.rfind(' ').map_or(0, |i| i + 1);
        let partial = &before[partial_start..];
        let words: Vec<&str> = before[..partial_start].split_whitespace().collect();
        let mut found = completer.complete(&words, partial);
        found.retain(|w| w.starts_with(partial));
        found.sort();
        found.dedup();
        let Some(first) = found.first() else {
            return;
        };
        let common = found.iter().fold(first.len(), |n, w| {
            n.min(
                first
                    .bytes()
                    .zip(w.bytes())
                    .take_while(|(a, b)| a == b)
                    .count(),
            )
        });
        let mut add: Vec<u8> = first.as_bytes()[partial.len()..common].to_vec();
        if found.len() == 1 {
            add.push(b' ');
        }
        if !add.is_empty() {
            self.insert(&add, out);
            return;
        }
        // Several candidates and nothing more in common: list them.
        out.push('\n');
        for (i, w) in found.iter().enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            out.push_str(w);
        }
        out.push('\n');
        self.redraw(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    /// A terminal that understands exactly what the editor emits.
    fn screen(out: &str) -> String {
        let mut lines: Vec<Vec<u8>> = vec![Vec::new()];
        let mut col: usize = 0;
        for b in out.bytes() {
            let line = lines.last_mut().unwrap();
            match b {
                b'\n' => {
                    lines.push(Vec::new());
                    col = 0;
                }
                b'\r' => col = 0,
                8 => col = col.saturating_sub(1),
                c => {
                    if col < line.len() {
                        line[col] = c;
                    } else {
                        line.push(c);
                    }
                    col += 1;
                }
            }
        }
        let v: Vec<String> = lines
            .into_iter()
            .map(|l| String::from_utf8(l).unwrap().trim_end().into())
            .collect();
        v.join("\n")
    }

    struct Commands;
    impl Completer for Commands {
        fn complete(&self, before: &[&str], partial: &str) -> Vec<String> {
            let words: &[&str] = match before {
                [] => &["status", "save", "show", "store", "help"],
                ["show"] => &["config", "interfaces", "arp"],
                _ => &[],
            };
            words
                .iter()
                .filter(|w| w.starts_with(partial))
                .map(|w| String::from(*w))
                .collect()
        }
    }

    fn typed(ed: &mut LineEditor, keys: &[Key], out: &mut String) -> Outcome {
        let mut last = Outcome::Editing;
        for &k in keys {
            last = ed.feed(k, &Commands, out);
        }
        last
    }

    fn chars(s: &str) -> Vec<Key> {
        s.bytes().map(Key::Char).collect()
    }

    #[test]
    fn editing_in_the_middle_of_a_line() {
        let mut ed = LineEditor::new();
        let mut out = String::new();
        ed.start("lb> ", false, &mut out);
        let mut keys = chars("sttus");
        keys.extend([Key::Left, Key::Left, Key::Left, Key::Char(b'a')]);
        keys.extend([Key::End, Key::Char(b'!'), Key::Backspace]);
        keys.extend([Key::Home, Key::Delete, Key::Char(b'S'), Key::Enter]);
        assert_eq!(
            typed(&mut ed, &keys, &mut out),
            Outcome::Line("Status".into())
        );
        assert_eq!(screen(&out), "lb> Status\n");
    }

    #[test]
    fn kill_line_word_and_interrupt() {
        let mut ed = LineEditor::new();
        let mut out = String::new();
        ed.start("> ", false, &mut out);
        let mut keys = chars("drain DICOM/DICOM1");
        keys.push(Key::KillWord);
        keys.extend(chars("X/Y"));
        assert_eq!(typed(&mut ed, &keys, &mut out), Outcome::Editing);
        assert_eq!(ed.line(), "drain X/Y");
        assert_eq!(screen(&out), "> drain X/Y");
        typed(&mut ed, &[Key::KillLine], &mut out);
        assert_eq!((ed.line(), screen(&out).as_str()), ("", ">"));
        assert_eq!(
            typed(&mut ed, &[Key::Interrupt], &mut out),
            Outcome::Interrupt
        );
        assert!(!ed.is_active());
    }

    #[test]
    fn history_walks_and_restores_the_typed_line() {
        let mut ed = LineEditor::new();
        let mut out = String::new();
        for cmd in ["status", "save", "save", ""] {
            ed.start("> ", false, &mut out);
            let mut keys = chars(cmd);
            keys.push(Key::Enter);
            typed(&mut ed, &keys, &mut out);
        }
        out.clear();
        ed.start("> ", false, &mut out);
        typed(&mut ed, &chars("sh"), &mut out);
        typed(&mut ed, &[Key::Up], &mut out);
        assert_eq!(ed.line(), "save");
        typed(&mut ed, &[Key::Up, Key::Up], &mut out);
        assert_eq!(
            ed.line(),
            "status",
            "duplicates and empty lines are not kept"
        );
        typed(&mut ed, &[Key::Down], &mut out);
        assert_eq!(ed.line(), "save");
        typed(&mut ed, &[Key::Down], &mut out);
        assert_eq!(ed.line(), "sh");
        assert_eq!(screen(&out), "> sh");
    }

    #[test]
    fn tab_completes_commands_and_lists_choices() {
        let mut ed = LineEditor::new();
        let mut out = String::new();
        ed.start("> ", false, &mut out);
        typed(&mut ed, &[Key::Char(b'h'), Key::Tab], &mut out);
        assert_eq!(ed.line(), "help ");
        typed(&mut ed, &[Key::KillLine], &mut out);
        // "s": status, save, show, store: nothing in common: the list.
        out.clear();
        ed.start("> ", false, &mut out);
        typed(&mut ed, &[Key::Char(b's'), Key::Tab], &mut out);
        assert_eq!(screen(&out), "> s\nsave  show  status  store\n> s");
        typed(
            &mut ed,
            &[Key::Char(b'h'), Key::Tab, Key::Char(b'c'), Key::Tab],
            &mut out,
        );
        assert_eq!(ed.line(), "show config ");
        // "st": status and store share "st" only.
        typed(
            &mut ed,
            &[
                Key::KillLine,
                Key::Char(b's'),
                Key::Char(b't'),
                Key::Char(b'a'),
                Key::Tab,
            ],
            &mut out,
        );
        assert_eq!(ed.line(), "status ");
    }

    #[test]
    fn secret_lines_echo_nothing_and_stay_out_of_history() {
        let mut ed = LineEditor::new();
        let mut out = String::new();
        ed.start("password: ", true, &mut out);
        let mut keys = chars("hunter22");
        keys.extend([Key::Backspace, Key::Enter]);
        assert_eq!(
            typed(&mut ed, &keys, &mut out),
            Outcome::Line("hunter2".into())
        );
        assert_eq!(screen(&out), "password:\n");
        ed.start("> ", false, &mut out);
        typed(&mut ed, &[Key::Up], &mut out);
        assert_eq!(ed.line(), "");
    }

    #[test]
    fn erase_and_redraw_around_other_output() {
        let mut ed = LineEditor::new();
        let mut out = String::new();
        ed.start("lbmed> ", false, &mut out);
        typed(&mut ed, &chars("stat"), &mut out);
        typed(&mut ed, &[Key::Left], &mut out);
        ed.erase(&mut out);
        out.push_str("health: PACS1 up\n");
        ed.redraw(&mut out);
        typed(&mut ed, &[Key::Char(b'X')], &mut out);
        assert_eq!(screen(&out), "health: PACS1 up\nlbmed> staXt");
    }

    #[test]
    fn long_input_is_cut_and_control_bytes_ignored() {
        let mut ed = LineEditor::new();
        let mut out = String::new();
        ed.start("> ", false, &mut out);
        for _ in 0..LINE_MAX + 50 {
            ed.feed(Key::Char(b'x'), &NoCompletion, &mut out);
        }
        ed.feed(Key::Char(0x07), &NoCompletion, &mut out);
        assert_eq!(ed.line().len(), LINE_MAX);
        assert_eq!(
            ed.feed(Key::EndOfInput, &NoCompletion, &mut out),
            Outcome::Editing
        );
    }

    proptest::proptest! {
        /// Whatever keys arrive, the screen shows exactly the prompt and
        /// the line, and the editor never panics.
        #[test]
        fn the_screen_always_shows_the_line(keys in proptest::collection::vec(0u8..20, 0..200)) {
            let mut ed = LineEditor::new();
            let mut out = String::new();
            ed.start("> ", false, &mut out);
            for k in keys {
                let key = match k {
                    0 => Key::Backspace,
                    1 => Key::Delete,
                    2 => Key::Left,
                    3 => Key::Right,
                    4 => Key::Home,
                    5 => Key::End,
                    6 => Key::KillWord,
                    7 => Key::Tab,
                    8 => Key::Up,
                    9 => Key::Char(b' '),
                    n => Key::Char(b'a' + n),
                };
                ed.feed(key, &Commands, &mut out);
                if !ed.is_active() { break; }
            }
            let shown = screen(&out);
            let last = shown.rsplit('\n').next().unwrap();
            let want = alloc::format!("> {}", ed.line());
            proptest::prop_assert_eq!(last, want.trim_end());
        }
    }
}
