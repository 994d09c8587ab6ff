//! End-to-end test harness: builds the real appliance image once, makes
//! network namespaces with names unique to the run, boots the image under
//! QEMU inside them and reads its serial console.
//!
//! Everything a test creates is removed when its handle drops: QEMU (killed by
//! its PID), then the namespaces (which takes their bridges, taps and veths).

pub mod dicom;
pub mod l4;
pub mod peers;

pub use tools::{console, lab};

use std::sync::OnceLock;
use tools::image::{Images, Profile, build_all};

/// The release images, built once per test process.
pub fn images() -> &'static Images {
    static IMAGES: OnceLock<Images> = OnceLock::new();
    IMAGES.get_or_init(|| {
        tools::setup::require_root().expect("root");
        build_all(Profile::Release).expect("building the appliance images")
    })
}
