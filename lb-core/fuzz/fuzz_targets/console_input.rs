//! Console keystrokes come from anyone at the serial line or the keyboard:
//! any bytes, decoded as a serial terminal's and as PS/2 scancodes, drive
//! the line editor, and every finished line answers the network wizard
//! (and `PasswordHash::parse`). Nothing may panic; the editor's line stays
//! printable ASCII within its bound; the wizard's result always validates.
#![no_main]
use lb_core::config::{Config, from_toml, validate};
use lb_core::console::editor::LINE_MAX;
use lb_core::console::{LineEditor, NoCompletion, Outcome, Ps2Decoder, SerialDecoder};
use lb_core::password::PasswordHash;
use lb_core::wizard::{Answer, Wizard};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let base: Config = from_toml(include_str!("../../configs/default.toml")).unwrap();
    let mut wizard = Wizard::new(
        vec!["eth0".into(), "eth1".into()],
        vec![None, None],
        &base,
    );
    let (mut serial, mut ps2) = (SerialDecoder::new(), Ps2Decoder::new());
    let mut ed = LineEditor::new();
    let mut out = String::new();
    ed.start("> ", false, &mut out);
    let keys: Vec<_> = data
        .iter()
        .filter_map(|&b| serial.feed(b))
        .chain(data.iter().filter_map(|&b| ps2.feed(b)))
        .collect();
    for key in keys {
        let outcome = ed.feed(key, &NoCompletion, &mut out);
        assert!(ed.line().len() <= LINE_MAX);
        assert!(ed.line().bytes().all(|b| (0x20..0x7f).contains(&b)));
        if let Outcome::Line(line) = outcome {
            let _ = PasswordHash::parse(&line);
            if let Answer::Finished(s) = wizard.answer(&line) {
                let mut c = base.clone();
                s.apply_to(&mut c, None);
                validate(&c).expect("the wizard only takes valid settings");
            }
        }
        if !ed.is_active() {
            ed.start("> ", false, &mut out);
        }
        out.clear();
    }
});
