//! The configuration in force: what `save` stores and `show config`
//! prints. The data path builds its engine from it; console commands that
//! change it (wizard, drain/halt/online) change it here, apply it live and
//! save it. Borrowed in place: a large configuration (thousands of real
//! servers) is costly to copy on the kernel's heap.

use core::cell::RefCell;
use critical_section::Mutex;
use lb_core::config::Config;

static RUNNING: Mutex<RefCell<Option<Config>>> = Mutex::new(RefCell::new(None));

/// Sets the configuration in force (at boot, and after a change).
pub fn set(config: Config) {
    critical_section::with(|cs| *RUNNING.borrow_ref_mut(cs) = Some(config));
}

/// Runs `f` on the configuration in force (an empty one before boot set it).
pub fn with<R>(f: impl FnOnce(&Config) -> R) -> R {
    critical_section::with(|cs| match RUNNING.borrow_ref(cs).as_ref() {
        Some(c) => f(c),
        None => f(&Config::empty()),
    })
}

/// Changes the configuration in force in place.
pub fn update<R>(f: impl FnOnce(&mut Config) -> R) -> R {
    critical_section::with(|cs| {
        let mut c = RUNNING.borrow_ref_mut(cs);
        f(c.get_or_insert_with(Config::empty))
    })
}

/// A copy of the configuration in force.
pub fn get() -> Config {
    with(Config::clone)
}

/// A copy of the network settings in force (small, unlike the whole).
pub fn get_network() -> lb_core::config::Network {
    with(|c| c.network.clone())
}
