//! Reboot and power-off.
//!
//! Reboot: the chipset's reset control register (port 0xCF9, on every
//! PIIX/ICH the hypervisors emulate), then the keyboard controller's reset
//! line. Power-off: ACPI sleep state S5, with the PM1a control port from
//! the FADT and the S5 sleep type from the DSDT's `\_S5` package; when the
//! ACPI tables cannot be found (UEFI boots hand their address only to
//! loaders that ask), the PM base the firmware programmed into the ICH9 or
//! PIIX4 power-management function, with the sleep type QEMU uses (0).

use crate::cpu::{Port, pci_config_read};
use crate::println;
use embassy_time::Timer;

// SAFETY: the reset control register of the PIIX/ICH chipsets; writing it
// resets the machine, which is what it is used for here.
const RESET_CONTROL: Port = unsafe { Port::new(0xCF9) };
// SAFETY: the i8042 command/status port, used here only to pulse the
// reset line after the keyboard driver is done with it.
const I8042_COMMAND: Port = unsafe { Port::new(0x64) };

/// Restarts the machine; returns only if nothing worked.
pub async fn reboot() {
    crate::serial::flush();
    RESET_CONTROL.write8(0x02);
    RESET_CONTROL.write8(0x06);
    Timer::after_millis(100).await;
    // Pulse the CPU reset line through the i8042.
    for _ in 0..10_000 {
        if I8042_COMMAND.read8() & 0x02 == 0 {
            break;
        }
    }
    I8042_COMMAND.write8(0xFE);
    Timer::after_millis(100).await;
    println!("error: reboot: the machine did not reset; power it off and on");
}

/// Switches the machine off; returns only if nothing worked.
pub async fn poweroff() {
    let (port, slp_typ) = match acpi_s5() {
        Some(found) => found,
        None => match chipset_pm1a() {
            Some(port) => (port, 0),
            None => {
                println!(
                    "error: poweroff: no ACPI power management found; it is now safe to switch the appliance off"
                );
                return;
            }
        },
    };
    crate::serial::flush();
    // SAFETY: the PM1a control register the firmware's ACPI tables (or the
    // chipset's PM base) name; writing SLP_EN there is how ACPI powers off.
    let (lo, hi) = unsafe { (Port::new(port), Port::new(port + 1)) };
    let pm1 = u16::from(lo.read8()) | (u16::from(hi.read8()) << 8);
    // SLP_TYP in bits 10-12, SLP_EN bit 13; one 16-bit write (QEMU 7.2
    // takes no byte write of SLP_EN).
    lo.write16((pm1 & !(0x7 << 10)) | (u16::from(slp_typ) << 10) | (1 << 13));
    Timer::after_millis(200).await;
    println!(
        "error: poweroff: the machine did not switch off (ACPI S5, type {slp_typ} at port {port:#x}); it is now safe to switch it off"
    );
}

/// Reads `len` bytes of physical memory below 4 GiB (identity-mapped).
fn phys(addr: u64, len: usize) -> Option<&'static [u8]> {
    if addr == 0 || addr.checked_add(len as u64)? > 1 << 32 {
        return None;
    }
    // SAFETY: the first 4 GiB are identity-mapped and readable; ACPI tables
    // and the BIOS area are firmware memory nothing writes while we read.
    Some(unsafe { core::slice::from_raw_parts(addr as usize as *const u8, len) })
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// A whole ACPI table at `addr` whose checksum is right.
fn table(addr: u64) -> Option<&'static [u8]> {
    let header = phys(addr, 36)?;
    let len = le32(header, 4)? as usize;
    if !(36..=1 << 20).contains(&len) {
        return None;
    }
    let t = phys(addr, len)?;
    (t.iter().fold(0u8, |a, &b| a.wrapping_add(b)) == 0).then_some(t)
}

/// The RSDP in the BIOS areas (EBDA, 0xE0000-0xFFFFF).
fn rsdp() -> Option<&'static [u8]> {
    let ebda = phys(0x40E, 2).map(|b| (u64::from(b[0]) | (u64::from(b[1]) << 8)) << 4);
    let areas = [(ebda.unwrap_or(0), 1024u64), (0xE0000, 0x20000)];
    for (start, len) in areas {
        if start == 0 {
            continue;
        }
        let mut at = start;
        while at + 20 <= start + len {
            if let Some(b) = phys(at, 20)
                && &b[..8] == b"RSD PTR "
                && b.iter().fold(0u8, |a, &x| a.wrapping_add(x)) == 0
            {
                let rev = b[15];
                return phys(at, if rev >= 2 { 36 } else { 20 });
            }
            at += 16;
        }
    }
    None
}

/// (PM1a control port, S5 sleep type) from the ACPI tables.
fn acpi_s5() -> Option<(u16, u8)> {
    let rsdp = rsdp()?;
    let (root, entry) = match le64(rsdp, 24).filter(|&x| rsdp.len() >= 36 && x != 0) {
        Some(xsdt) => (table(xsdt)?, 8),
        None => (table(u64::from(le32(rsdp, 16)?))?, 4),
    };
    let fadt = (36..root.len())
        .step_by(entry)
        .filter_map(|at| match entry {
            8 => le64(root, at),
            _ => le32(root, at).map(u64::from),
        })
        .filter_map(table)
        .find(|t| &t[..4] == b"FACP")?;
    let pm1a = le32(fadt, 64)? as u16;
    let dsdt = table(u64::from(le32(fadt, 40)?))?;
    Some((pm1a, s5_sleep_type(dsdt).unwrap_or(0)))
}

/// SLP_TYPa from the `\_S5` package of the DSDT's AML: `_S5_`, PackageOp
/// (0x12), package length, element count, then the first element as a
/// byte constant (0x0A nn), Zero (0x00) or One (0x01).
fn s5_sleep_type(dsdt: &[u8]) -> Option<u8> {
    let at = dsdt.windows(4).position(|w| w == b"_S5_")?;
    let mut p = at + 4;
    if *dsdt.get(p)? != 0x12 {
        return None;
    }
    p += 1;
    // PkgLength: the top two bits of the first byte count the bytes that follow.
    p += 1 + usize::from(dsdt.get(p)? >> 6);
    p += 1; // NumElements
    match *dsdt.get(p)? {
        0x0A => dsdt.get(p + 1).copied(),
        0x00 => Some(0),
        0x01 => Some(1),
        _ => None,
    }
}

/// PM1a control port of the ICH9 (q35) or PIIX4 (pc) power management
/// function, from the PM base the firmware programmed.
fn chipset_pm1a() -> Option<u16> {
    // (bus 0 device function, PCI id, PM base register).
    const FUNCTIONS: [(u32, u32, u32); 2] = [
        ((31 << 3), 0x2918_8086, 0x40),    // ICH9 LPC (q35)
        ((1 << 3) | 3, 0x7113_8086, 0x40), // PIIX4 PM (pc)
    ];
    for (devfn, id, reg) in FUNCTIONS {
        let addr = |off: u32| 0x8000_0000 | (devfn << 8) | off;
        if pci_config_read(addr(0)) != id {
            continue;
        }
        let base = (pci_config_read(addr(reg)) & 0xFFC0) as u16;
        if base != 0 {
            return Some(base + 4);
        }
    }
    None
}
