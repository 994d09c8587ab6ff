//! The appliance's host tool as a library, so the end-to-end tests build and
//! boot the image exactly the way `tools run` does.

pub mod image;
pub mod qemu;
pub mod setup;
pub mod workspace;
