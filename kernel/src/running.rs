//! The configuration in force: what `save` stores and `show config`
//! prints. The data path builds its engine from it; console commands that
//! change it (wizard, drain/halt/online, config apply) change it here,
//! apply it live and save it.

use core::cell::RefCell;
use critical_section::Mutex;
use lb_core::config::Config;

static RUNNING: Mutex<RefCell<Option<Config>>> = Mutex::new(RefCell::new(None));

/// Sets the configuration in force (at boot, and after a change).
pub fn set(config: Config) {
    critical_section::with(|cs| *RUNNING.borrow_ref_mut(cs) = Some(config));
}

/// A copy of the configuration in force (an empty one before boot set it).
pub fn get() -> Config {
    critical_section::with(|cs| RUNNING.borrow_ref(cs).clone().unwrap_or_else(Config::empty))
}
