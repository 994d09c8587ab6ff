//! End-to-end tests that boot the real appliance image.
