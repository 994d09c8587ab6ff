//! The appliance's host tool as a library, so the end-to-end tests build and
//! boot the image exactly the way `tools run` does.

pub mod bench;
pub mod bench_aware;
pub mod bench_boot;
pub mod bench_health;
pub mod bench_l4;
pub mod bench_l7;
pub mod config_cmd;
pub mod connrate;
pub mod console;
pub mod debian;
pub mod demo;
pub mod disk_cmd;
pub mod image;
pub mod iperf3;
pub mod lab;
pub mod loadgen;
pub mod mgmt_cmd;
pub mod ovf;
pub mod qemu;
pub mod qmp;
pub mod setup;
pub mod workspace;
