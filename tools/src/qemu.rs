//! QEMU command lines for the appliance, shared by `tools run`, the tests and
//! the benchmarks so that all three boot it the same way.

use std::path::{Path, PathBuf};
use std::process::Command;

/// CPU virtualisation backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    /// KVM when `/dev/kvm` can be opened, else TCG. `APPLIANCE_ACCEL=kvm|tcg`
    /// overrides the choice (benchmarks run both sides under the same one).
    pub fn detect() -> Accel {
        match std::env::var("APPLIANCE_ACCEL").as_deref() {
            Ok("kvm") => return Accel::Kvm,
            Ok("tcg") => return Accel::Tcg,
            _ => {}
        }
        let usable = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok();
        if usable { Accel::Kvm } else { Accel::Tcg }
    }

    fn args(self) -> [&'static str; 4] {
        match self {
            // KVM-PVM (a paravirtual nested KVM) refuses the host's
            // IA32_ARCH_CAPABILITIES MSR; the guest does not need it.
            Accel::Kvm => ["-accel", "kvm", "-cpu", "host,-arch-capabilities"],
            Accel::Tcg => ["-accel", "tcg", "-cpu", "max"],
        }
    }

    /// KVM-PVM, the paravirtual nested KVM of some cloud hosts: `/dev/kvm`
    /// works but the CPU has no VMX/SVM, and ring-0 guest code is emulated.
    /// The appliance boots under it (it runs its own code in ring 3); OVMF
    /// does not (its SEC phase stops with a KVM emulation failure).
    pub fn host_is_pvm() -> bool {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let flags = cpuinfo
            .lines()
            .find(|l| l.starts_with("flags"))
            .unwrap_or("");
        let hw = flags.split_whitespace().any(|f| f == "vmx" || f == "svm");
        !hw && std::path::Path::new("/dev/kvm").exists()
    }

    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// What the machine boots.
#[derive(Clone, Debug)]
pub enum Boot {
    /// `-kernel` with a command line and an optional boot module (`-initrd`).
    Kernel {
        elf: PathBuf,
        cmdline: String,
        module: Option<PathBuf>,
    },
    /// The hybrid ISO under SeaBIOS.
    IsoBios(PathBuf),
    /// The hybrid ISO under OVMF (UEFI).
    IsoUefi(PathBuf),
    /// A disk image the firmware boots (`tools build`'s qcow2, VMDK,
    /// VHDX...), attached writable on `bus`; OVMF when `uefi`, else SeaBIOS.
    Disk {
        image: PathBuf,
        /// `qemu-img` format name: `qcow2`, `vmdk`, `vhdx`, `raw`.
        format: String,
        bus: DiskBus,
        uefi: bool,
    },
}

/// How the boot disk is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskBus {
    Virtio,
    /// A SATA port of q35's AHCI controller.
    Sata,
    /// The primary IDE channel of the `pc` machine's PIIX3.
    Ide,
}

/// A TCP port of 127.0.0.1 forwarded into QEMU's user-mode network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forward {
    pub host: u16,
    /// The guest address (a VIP, say); `None`: the guest's DHCP address.
    pub guest_ip: Option<std::net::Ipv4Addr>,
    pub guest: u16,
}

impl Forward {
    /// `host` to `guest` on the guest's own address.
    pub fn port(host: u16, guest: u16) -> Forward {
        Forward {
            host,
            guest_ip: None,
            guest,
        }
    }

    /// `host` to `ip:guest` (any address the appliance answers ARP for).
    pub fn to(host: u16, ip: std::net::Ipv4Addr, guest: u16) -> Forward {
        Forward {
            host,
            guest_ip: Some(ip),
            guest,
        }
    }
}

/// A network backend for one guest NIC.
#[derive(Clone, Debug)]
pub enum Backend {
    /// QEMU user-mode networking with TCP forwards from 127.0.0.1.
    User { forwards: Vec<Forward> },
    /// A tap device (created by the caller).
    Tap { ifname: String },
}

/// One guest NIC.
#[derive(Clone, Debug)]
pub struct Nic {
    pub backend: Backend,
    /// QEMU device model, e.g. `virtio-net-pci`.
    pub model: String,
    pub mac: Option<String>,
}

/// virtio-net with every checksum and segmentation offload off: the guest
/// sends and receives whole, checksummed frames of at most the MTU.
pub const VIRTIO_NO_OFFLOADS: &str = "virtio-net-pci,csum=off,guest_csum=off,gso=off,host_tso4=off,host_tso6=off,host_ecn=off,host_ufo=off,guest_tso4=off,guest_tso6=off,guest_ecn=off,guest_ufo=off";

impl Nic {
    /// A NIC of QEMU device `model` (`e1000`, `e1000e`, `vmxnet3`, `tulip`, ...).
    pub fn model(model: &str, backend: Backend) -> Nic {
        Nic {
            backend,
            model: model.into(),
            mac: None,
        }
    }

    pub fn virtio(backend: Backend) -> Nic {
        Nic {
            backend,
            model: "virtio-net-pci".into(),
            mac: None,
        }
    }

    /// virtio-net without offloads ([`VIRTIO_NO_OFFLOADS`]).
    pub fn virtio_without_offloads(backend: Backend) -> Nic {
        Nic {
            backend,
            model: VIRTIO_NO_OFFLOADS.into(),
            mac: None,
        }
    }
}

/// Where the serial console goes.
#[derive(Clone, Debug)]
pub enum Serial {
    /// The terminal, multiplexed with the QEMU monitor (Ctrl-A X quits).
    Terminal,
    /// The process's stdout (for tests that read it through a pipe).
    Stdout,
}

/// A full QEMU machine description.
#[derive(Clone, Debug)]
pub struct Machine {
    pub accel: Accel,
    pub memory_mib: u32,
    pub boot: Boot,
    pub nics: Vec<Nic>,
    pub serial: Serial,
    /// Raw disk images, attached as virtio-blk in this order (the first
    /// one holds the config store).
    pub disks: Vec<PathBuf>,
    /// `pc` (i440fx: PCI configuration by I/O ports) instead of `q35`.
    pub pc: bool,
    /// A standard VGA card (the screen console; `-display none` still).
    pub screen: bool,
    /// A QMP socket at this path (see [`crate::qmp`]: link, keyboard input,
    /// screenshots).
    pub qmp: Option<PathBuf>,
}

/// OVMF firmware image (a single combined file is the simplest for `-bios`).
pub const OVMF: &str = "/usr/share/ovmf/OVMF.fd";

impl Machine {
    pub fn new(boot: Boot) -> Machine {
        let mut accel = Accel::detect();
        // Under KVM-PVM, firmware runs emulated instruction by instruction:
        // SeaBIOS plus GRUB take about a minute and OVMF stops outright.
        // Booting the ISO there is a firmware test, so it runs under TCG.
        let iso = matches!(
            boot,
            Boot::IsoBios(_) | Boot::IsoUefi(_) | Boot::Disk { .. }
        );
        if iso && accel == Accel::Kvm && Accel::host_is_pvm() {
            accel = Accel::Tcg;
        }
        Machine {
            accel,
            memory_mib: 64,
            boot,
            nics: Vec::new(),
            serial: Serial::Stdout,
            disks: Vec::new(),
            pc: false,
            screen: false,
            qmp: None,
        }
    }

    /// The argument list after the program name.
    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
        push(&[
            "-machine",
            if self.pc { "pc" } else { "q35" },
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
        ]);
        push(&self.accel.args());
        push(&["-m", &format!("{}M", self.memory_mib)]);
        // Back guest RAM with host pages up front: under KVM a guest page's
        // first touch otherwise costs a host page fault on the boot path.
        push(&["-mem-prealloc"]);
        // A guest that faults must stay visible on the console, never reboot silently.
        push(&["-no-reboot"]);
        // The kernel's test and power-off path: writing to port 0xf4 exits QEMU.
        push(&["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
        match &self.serial {
            Serial::Terminal => push(&["-serial", "mon:stdio"]),
            Serial::Stdout => push(&["-serial", "stdio", "-monitor", "none"]),
        }
        if let Some(q) = &self.qmp {
            push(&["-qmp", &format!("unix:{},server=on,wait=off", path(q))]);
        }
        match &self.boot {
            Boot::Kernel {
                elf,
                cmdline,
                module,
            } => {
                push(&["-kernel", &path(elf)]);
                push(&["-append", cmdline]);
                if let Some(m) = module {
                    push(&["-initrd", &path(m)]);
                }
            }
            Boot::IsoBios(iso) => push(&["-cdrom", &path(iso), "-boot", "d"]),
            Boot::IsoUefi(iso) => push(&["-bios", OVMF, "-cdrom", &path(iso), "-boot", "d"]),
            Boot::Disk {
                image,
                format,
                bus,
                uefi,
            } => {
                if *uefi {
                    push(&["-bios", OVMF]);
                }
                push(&[
                    "-drive",
                    &format!(
                        "file={},format={format},if=none,id=boot,cache=writethrough",
                        path(image)
                    ),
                ]);
                // SATA port 0 on q35's AHCI and the IDE primary master on
                // `pc` are both QEMU's bus `ide.0`; the machine decides.
                let device = match bus {
                    DiskBus::Virtio => "virtio-blk-pci,drive=boot,bootindex=0",
                    DiskBus::Sata | DiskBus::Ide => "ide-hd,drive=boot,bus=ide.0,bootindex=0",
                };
                push(&["-device", device]);
            }
        }
        if self.screen {
            push(&["-device", "VGA"]);
        }
        for (i, disk) in self.disks.iter().enumerate() {
            // cache=writethrough: a write the guest flushed is on the host
            // file when QEMU is killed, as on a disk after power loss.
            push(&[
                "-drive",
                &format!(
                    "file={},format=raw,if=none,id=d{i},cache=writethrough",
                    path(disk)
                ),
                "-device",
                &format!("virtio-blk-pci,drive=d{i}"),
            ]);
        }
        for (i, nic) in self.nics.iter().enumerate() {
            let id = format!("n{i}");
            let netdev = match &nic.backend {
                Backend::User { forwards } => {
                    let mut s = format!("user,id={id}");
                    for f in forwards {
                        let ip = f.guest_ip.map(|a| a.to_string()).unwrap_or_default();
                        s.push_str(&format!(
                            ",hostfwd=tcp:127.0.0.1:{}-{ip}:{}",
                            f.host, f.guest
                        ));
                    }
                    s
                }
                Backend::Tap { ifname } => {
                    format!("tap,id={id},ifname={ifname},script=no,downscript=no")
                }
            };
            let mut device = format!("{},netdev={id}", nic.model);
            if let Some(mac) = &nic.mac {
                device.push_str(&format!(",mac={mac}"));
            }
            push(&["-netdev", &netdev, "-device", &device]);
        }
        a
    }

    /// `qemu-system-x86_64` with these arguments.
    pub fn command(&self) -> Command {
        let mut c = Command::new("qemu-system-x86_64");
        c.args(self.args());
        c
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}
