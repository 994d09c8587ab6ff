//! `tools bench boot`: runs the boot benchmark and prints a Markdown report.

use crate::bench::{Bench, Guest, spread};
use crate::qemu::Accel;
use anyhow::Result;
use std::fmt::Write;
use std::time::Duration;

const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
const APPLIANCE_MEMORY: &[u32] = &[64, 32, 16, 8, 6, 4, 3, 2];
const DEBIAN_MEMORY: &[u32] = &[512, 256, 192, 128, 96, 80, 64, 48, 40, 32];

struct Side {
    ready: Option<(f64, f64, f64)>,
    ping: Option<(f64, f64, f64)>,
    smallest_mib: Option<u32>,
    failure: Option<String>,
}

fn measure(bench: &Bench, guest: &Guest, accel: Accel, boots: usize, memory: &[u32]) -> Side {
    let mut ready = Vec::new();
    let mut ping = Vec::new();
    let mut failure = None;
    for i in 0..boots {
        match bench.boot_once(guest, accel, memory[0], BOOT_TIMEOUT) {
            Ok(f) => {
                eprintln!(
                    "  boot {i}: ready {:.2} ms, first ping {:.1} ms",
                    f.ready_ms, f.first_ping_ms
                );
                ready.push(f.ready_ms);
                ping.push(f.first_ping_ms);
            }
            Err(e) => {
                let text = format!("{e:#}");
                let first = text.split("; console:").next().unwrap_or("").to_string();
                eprintln!("  boot {i} failed: {first}");
                failure = Some(first);
                break;
            }
        }
    }
    let mut smallest_mib = None;
    if failure.is_none() {
        for &mib in memory {
            let ok = bench
                .boot_once(guest, accel, mib, Duration::from_secs(30))
                .is_ok();
            eprintln!(
                "  -m {mib}: {}",
                if ok { "serves" } else { "does not serve" }
            );
            if !ok {
                break;
            }
            smallest_mib = Some(mib);
        }
    }
    let done = failure.is_none();
    Side {
        ready: done.then(|| spread(ready)),
        ping: done.then(|| spread(ping)),
        smallest_mib,
        failure,
    }
}

fn cell(v: Option<(f64, f64, f64)>) -> String {
    v.map(|(a, b, c)| format!("{a:.1} / {b:.1} / {c:.1}"))
        .unwrap_or_else(|| "—".into())
}

fn ratio(ours: Option<f64>, theirs: Option<f64>) -> String {
    match (ours, theirs) {
        (Some(o), Some(t)) if o > 0.0 => format!("{:.1}×", t / o),
        _ => "—".into(),
    }
}

/// Runs everything and returns the Markdown report.
pub fn run(elf: std::path::PathBuf, boots: usize, accels: &[Accel]) -> Result<String> {
    let appliance = Guest::Appliance { elf };
    let debian = crate::bench::debian_guest()?;
    let bench = Bench::new()?;
    let mut md = String::new();
    writeln!(
        md,
        "| accel | figure | appliance | Debian kernel | Debian ÷ appliance |"
    )?;
    writeln!(md, "|---|---|---|---|---|")?;
    for &accel in accels {
        eprintln!("{} appliance:", accel.name());
        let ours = measure(&bench, &appliance, accel, boots, APPLIANCE_MEMORY);
        eprintln!("{} debian:", accel.name());
        let theirs = measure(&bench, &debian, accel, boots, DEBIAN_MEMORY);
        let a = accel.name();
        let note = |s: &Side| {
            s.failure
                .clone()
                .map(|f| format!(" (failed: {f})"))
                .unwrap_or_default()
        };
        writeln!(
            md,
            "| {a} | kernel entry → ready, ms (min / median / max of {boots}) | {}{} | {}{} | {} |",
            cell(ours.ready),
            note(&ours),
            cell(theirs.ready),
            note(&theirs),
            ratio(ours.ready.map(|r| r.1), theirs.ready.map(|r| r.1))
        )?;
        writeln!(
            md,
            "| {a} | QEMU start → first ping reply, ms (min / median / max) | {} | {} | {} |",
            cell(ours.ping),
            cell(theirs.ping),
            ratio(ours.ping.map(|r| r.1), theirs.ping.map(|r| r.1))
        )?;
        let mib = |s: &Side| {
            s.smallest_mib
                .map(|m| format!("{m} MiB"))
                .unwrap_or_else(|| "—".into())
        };
        writeln!(
            md,
            "| {a} | smallest `-m` that boots and answers ping | {} | {} | {} |",
            mib(&ours),
            mib(&theirs),
            ratio(
                ours.smallest_mib.map(f64::from),
                theirs.smallest_mib.map(f64::from)
            )
        )?;
    }
    let (ob, tb) = (
        appliance.image_bytes()? as f64,
        debian.image_bytes()? as f64,
    );
    writeln!(
        md,
        "| — | image size (appliance: release kernel ELF; Debian: vmlinuz + initramfs) | {:.0} KiB | {:.0} KiB | {:.1}× |",
        ob / 1024.0,
        tb / 1024.0,
        tb / ob
    )?;
    Ok(md)
}
