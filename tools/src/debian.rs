//! The incumbent for the benchmarks: Debian's stock kernel (package
//! `linux-image-amd64`) with a minimal initramfs that loads the virtio NIC
//! modules (plus any extra modules a benchmark needs, in dependency order),
//! carries extra programs with their shared libraries, and configures
//! addresses, routes, forwarding and IPVS from its kernel command line.

use anyhow::{Context, Result, bail};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Modules every guest loads: the virtio PCI bus driver and the NIC driver
/// (their dependencies are resolved from the modules themselves).
const BASE_MODULES: &[&str] = &["virtio_pci", "virtio_net"];

/// What one guest carries on top of the base initramfs.
pub struct GuestSpec {
    /// Names the initramfs file (`initramfs.cpio` for "boot", else
    /// `initramfs-NAME.cpio`), so guests of different benchmarks coexist.
    pub name: &'static str,
    /// Extra kernel modules to load at boot (dependencies added).
    pub modules: &'static [&'static str],
    /// Extra Debian packages to download and unpack (with their direct
    /// dependencies, where the programs' shared libraries come from).
    pub packages: &'static [&'static str],
    /// Programs to carry, as paths inside the unpacked packages; their
    /// shared libraries and ELF interpreter come along.
    pub programs: &'static [&'static str],
}

/// The boot benchmark's guest: only the NIC.
pub const BOOT: GuestSpec = GuestSpec {
    name: "boot",
    modules: &[],
    packages: &[],
    programs: &[],
};

/// The L4 benchmark's guest: the other NIC models' drivers (for `--nic`),
/// IPVS with the round-robin scheduler and nftables masquerading (all
/// loaded up front: there is no modprobe for the kernel to call),
/// `ipvsadm` and `nft`.
pub const L4: GuestSpec = GuestSpec {
    name: "l4",
    modules: &[
        "e1000",
        "e1000e",
        "vmxnet3",
        "tulip",
        "ip_vs",
        "ip_vs_rr",
        "nf_tables",
        "nft_chain_nat",
        "nft_masq",
    ],
    packages: &["ipvsadm", "nftables", "libnftables1"],
    programs: &["sbin/ipvsadm", "usr/sbin/nft"],
};

/// The L7 benchmark's guest: HAProxy (Debian's package) in TCP mode.
pub const L7: GuestSpec = GuestSpec {
    name: "l7",
    modules: &[],
    // libopentracing1 comes in through libopentracing-c-wrapper0 (only
    // direct dependencies are followed) and is not on a stock host.
    packages: &["haproxy", "libopentracing1"],
    programs: &["usr/sbin/haproxy"],
};

/// The clustered-pair benchmark's guest: keepalived (Debian's package) for
/// VRRP, IPVS with round robin, persistence and its connection sync daemon.
pub const HA: GuestSpec = GuestSpec {
    name: "ha",
    modules: &["ip_vs", "ip_vs_rr"],
    packages: &["ipvsadm", "keepalived"],
    programs: &["sbin/ipvsadm", "usr/sbin/keepalived"],
};

/// `/init`. Settings come from the kernel command line (no spaces inside):
/// - `bench_ip=ADDR/LEN` (on eth0) or `bench_ip=IF=ADDR/LEN,IF=ADDR/LEN,...`
/// - `bench_route=DEST@GATEWAY,...`
/// - `bench_forward=1`: IPv4 forwarding on, ICMP redirects off
/// - `bench_ipvs=PROTO:VIP:PORT:SERVER:METHOD,...` with PROTO `t` or `u` and
///   METHOD `g` (direct routing) or `m` (NAT), round robin.
/// - `bench_ipvs_persist=SECS`: the `bench_ipvs` services are persistent.
/// - `bench_syncd=IF`: IPVS's connection sync daemon, master and backup
///   both (sync ID 51, multicast on IF), so the state flows either way.
/// - `bench_vrrp=VRID:PRIORITY:ADVERT:IF:ADDR@DEV+ADDR@DEV...`: keepalived
///   (VRRPv3, `advert_int` ADVERT seconds, `nopreempt`, starting as
///   backup) on IF owning the ADDRs; it logs to the console.
/// - `bench_masq=IF`: masquerade what leaves on IF (IPVS NAT made SNAT;
///   `vs/conntrack=1` lets netfilter NAT see IPVS connections).
/// - `bench_haproxy=VIP:PORT+PORT...:SERVER`: HAProxy in TCP mode as the
///   guide's appliance runs it for layer 7 SNAT (`balance source`, 1 h
///   client/server timeouts, 3 s connect timeout, `retries 2`,
///   `option redispatch`), one frontend bound to VIP on each port, one real
///   server (the client's port); the resident memory of every haproxy
///   process and the kernel's slab memory are logged every 2 s as
///   `rss <kB> slab <kB>`.
///
/// It logs `ready` through the kernel log, so the line carries the kernel's
/// own time since boot, or `bench-failed: ...` when a step fails.
const INIT: &str = r#"#!/bin/busybox sh
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
fail() { echo "<1>bench-failed: $*" > /dev/kmsg; exec $B sleep 1000000; }
for m in $($B cat /lib/modules/order); do
  $B insmod /lib/modules/$m.ko || fail "insmod $m"
done
arg() { $B sed -n "s/.*$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
$B ip link set lo up
for a in $(arg bench_ip | $B tr , ' '); do
  case $a in *=*) dev=${a%%=*}; a=${a#*=};; *) dev=eth0;; esac
  $B ip addr add "$a" dev "$dev" || fail "address $a on $dev"
  $B ip link set "$dev" up || fail "link $dev"
done
for r in $(arg bench_route | $B tr , ' '); do
  $B ip route add "${r%@*}" via "${r#*@}" || fail "route $r"
done
if [ "$(arg bench_forward)" = 1 ]; then
  echo 1 > /proc/sys/net/ipv4/ip_forward
  for f in /proc/sys/net/ipv4/conf/*/send_redirects; do echo 0 > "$f"; done
fi
for s in $(arg bench_ipvs | $B tr , ' '); do
  set -- $(echo "$s" | $B tr : ' ')
  [ $# = 5 ] || fail "ipvs rule $s"
  persist=$(arg bench_ipvs_persist)
  /sbin/ipvsadm -L -n -$1 "$2:$3" > /dev/null 2>&1 || /sbin/ipvsadm -A -$1 "$2:$3" -s rr ${persist:+-p $persist} || fail "ipvs service $s"
  /sbin/ipvsadm -a -$1 "$2:$3" -r "$4" -$5 || fail "ipvs server $s"
done
masq=$(arg bench_masq)
if [ -n "$masq" ]; then
  echo 1 > /proc/sys/net/ipv4/vs/conntrack || fail "vs/conntrack"
  /usr/sbin/nft add table ip bench || fail "nft table"
  /usr/sbin/nft add chain ip bench post '{ type nat hook postrouting priority 100 ; }' || fail "nft chain"
  /usr/sbin/nft add rule ip bench post oifname "$masq" masquerade || fail "nft masquerade"
fi
[ -z "$(arg bench_ipvs)" ] || /sbin/ipvsadm -L -n
syncd=$(arg bench_syncd)
if [ -n "$syncd" ]; then
  for role in master backup; do
    /sbin/ipvsadm --start-daemon $role --mcast-interface "$syncd" --syncid 51 || fail "sync daemon $role"
  done
fi
vrrp=$(arg bench_vrrp)
if [ -n "$vrrp" ]; then
  set -- $(echo "$vrrp" | $B tr : ' ')
  [ $# = 5 ] || fail "vrrp setting $vrrp"
  $B mkdir -p /etc /run /tmp /var
  $B ln -sf /run /var/run
  {
    echo "global_defs {"
    echo " vrrp_version 3"
    echo "}"
    echo "vrrp_instance VI_1 {"
    echo " state BACKUP"
    echo " interface $4"
    echo " virtual_router_id $1"
    echo " priority $2"
    echo " advert_int $3"
    echo " nopreempt"
    echo " virtual_ipaddress {"
    for a in $(echo "$5" | $B tr + ' '); do echo "  ${a%@*} dev ${a#*@}"; done
    echo " }"
    echo "}"
  } > /etc/keepalived.conf
  /usr/sbin/keepalived -n -l -D -f /etc/keepalived.conf -p /run/keepalived.pid > /dev/console 2>&1 &
fi
hap=$(arg bench_haproxy)
if [ -n "$hap" ]; then
  set -- $(echo "$hap" | $B tr : ' ')
  [ $# = 3 ] || fail "haproxy setting $hap"
  echo "1024 65000" > /proc/sys/net/ipv4/ip_local_port_range
  $B mkdir -p /etc /run /tmp
  {
    echo "global"
    echo "  maxconn 200000"
    echo "  nbthread 1"
    echo "defaults"
    echo "  mode tcp"
    echo "  maxconn 200000"
    echo "  timeout connect 3s"
    echo "  timeout client 1h"
    echo "  timeout server 1h"
    echo "  retries 2"
    echo "  option redispatch"
    echo "frontend fe"
    for p in $(echo "$2" | $B tr + ' '); do echo "  bind $1:$p"; done
    echo "  default_backend be"
    echo "backend be"
    echo "  balance source"
    echo "  server rs1 $3"
  } > /etc/haproxy.cfg
  /usr/sbin/haproxy -f /etc/haproxy.cfg -D -p /run/haproxy.pid || fail "haproxy"
  # /proc/PID/status separates "VmRSS:" from its number with a tab.
  (while :; do
     r=0
     for p in $($B pidof haproxy); do
       v=$($B awk '/^VmRSS:/ { print $2 }' /proc/$p/status)
       r=$((r + ${v:-0}))
     done
     echo "<1>rss $r slab $($B awk '/^Slab:/ { print $2 }' /proc/meminfo)" > /dev/kmsg
     $B sleep 2
   done) &
fi
echo "<1>ready" > /dev/kmsg
exec $B sleep 1000000
"#;

/// A Debian kernel and its initramfs, ready for `-kernel` and `-initrd`.
pub struct DebianGuest {
    pub vmlinuz: PathBuf,
    pub initramfs: PathBuf,
    pub version: String,
}

/// Downloads (once) and prepares the boot benchmark's Debian guest under `dir`.
pub fn prepare(dir: &Path) -> Result<DebianGuest> {
    prepare_spec(dir, &BOOT)
}

/// Downloads (once) the kernel, busybox and `spec`'s packages under `dir`
/// and builds `spec`'s initramfs (again only when the spec or /init change).
pub fn prepare_spec(dir: &Path, spec: &GuestSpec) -> Result<DebianGuest> {
    fs::create_dir_all(dir)?;
    let vmlinuz = dir.join("vmlinuz");
    let initramfs = dir.join(if spec.name == "boot" {
        "initramfs.cpio".to_string()
    } else {
        format!("initramfs-{}.cpio", spec.name)
    });
    let version_file = dir.join("version");
    let debs = dir.join("debs");
    let root = dir.join("extract");
    fs::create_dir_all(&debs)?;
    if !(vmlinuz.exists() && version_file.exists()) {
        let package = kernel_package()?;
        download(&debs, &root, &[package.as_str(), "busybox-static"])?;
        let version = package.trim_start_matches("linux-image-").to_string();
        fs::copy(root.join(format!("boot/vmlinuz-{version}")), &vmlinuz)?;
        fs::write(&version_file, &version)?;
    }
    let version = fs::read_to_string(&version_file)?.trim().to_string();
    let guest = DebianGuest {
        vmlinuz,
        initramfs,
        version,
    };
    // The initramfs is rebuilt whenever what goes into it changes.
    let key = format!(
        "{:?} {:?} {:?}\n{INIT}",
        spec.modules, spec.packages, spec.programs
    );
    let key_file = guest.initramfs.with_extension("key");
    if guest.initramfs.exists() && fs::read_to_string(&key_file).ok().as_deref() == Some(&key) {
        return Ok(guest);
    }
    let mut wanted: Vec<String> = Vec::new();
    for p in spec.packages {
        wanted.push(p.to_string());
        wanted.extend(package_depends(p)?);
    }
    let missing: Vec<&str> = wanted
        .iter()
        .map(String::as_str)
        .filter(|p| !downloaded(&debs, p))
        .collect();
    if !missing.is_empty() {
        download(&debs, &root, &missing)?;
    }
    let cpio = build_initramfs(&root, &guest.version, spec)?;
    fs::write(&guest.initramfs, cpio)?;
    fs::write(&key_file, key)?;
    Ok(guest)
}

fn build_initramfs(root: &Path, version: &str, spec: &GuestSpec) -> Result<Vec<u8>> {
    let modules_dir = root.join(format!("lib/modules/{version}/kernel"));
    let index = module_index(&modules_dir)?;
    let roots: Vec<&str> = BASE_MODULES
        .iter()
        .chain(spec.modules.iter())
        .copied()
        .collect();
    let mut aliases: Option<BTreeMap<String, String>> = None;
    let order = load_order(&roots, |name| {
        let path = index
            .get(name)
            .with_context(|| format!("module {name} is not in the {version} kernel package"))?;
        let info =
            modinfo(&fs::read(path)?).with_context(|| format!("reading {}", path.display()))?;
        let mut deps = info.depends;
        // `softdep=pre:` names what must load first though no symbol says
        // so (libcrc32c needs a crc32c algorithm), often by alias.
        for want in info.softdep_pre {
            let want = want.replace('-', "_");
            if index.contains_key(&want) {
                deps.push(want);
                continue;
            }
            let map = match &mut aliases {
                Some(map) => map,
                None => aliases.insert(alias_index(&index)?),
            };
            // Absent: built into the kernel, nothing to load.
            if let Some(module) = map.get(&want) {
                deps.push(module.clone());
            }
        }
        Ok(deps)
    })?;

    let mut cpio = Cpio::default();
    for d in [
        "bin",
        "sbin",
        "dev",
        "proc",
        "sys",
        "lib",
        "lib/modules",
        "lib64",
        "lib/x86_64-linux-gnu",
        "usr",
        "usr/sbin",
    ] {
        cpio.dir(d);
    }
    cpio.char_dev("dev/console", 5, 1);
    cpio.char_dev("dev/ttyS0", 4, 64);
    cpio.char_dev("dev/kmsg", 1, 11);
    cpio.char_dev("dev/null", 1, 3);
    cpio.file("bin/busybox", 0o755, &fs::read(root.join("bin/busybox"))?);
    for m in &order {
        cpio.file(&format!("lib/modules/{m}.ko"), 0o644, &fs::read(&index[m])?);
    }
    cpio.file("lib/modules/order", 0o644, order.join("\n").as_bytes());

    // Programs, then every shared library they need (transitively) and the
    // ELF interpreter, placed where the dynamic loader looks for them.
    let mut libs: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut interp: Option<String> = None;
    let mut todo: Vec<PathBuf> = Vec::new();
    for p in spec.programs {
        let path = resolve_in(root, Path::new(p))?;
        cpio.file(p, 0o755, &fs::read(&path)?);
        todo.push(path);
    }
    while let Some(elf) = todo.pop() {
        let (needed, want_interp) = dynamic_info(&elf)?;
        if interp.is_none() {
            interp = want_interp;
        }
        for lib in needed {
            if libs.contains_key(&lib) {
                continue;
            }
            let path = find_library(root, &lib)?;
            todo.push(path.clone());
            libs.insert(lib, path);
        }
    }
    for (name, path) in &libs {
        cpio.file(
            &format!("lib/x86_64-linux-gnu/{name}"),
            0o755,
            &fs::read(path)?,
        );
    }
    if let Some(interp) = interp {
        let path = resolve_in(root, Path::new(interp.trim_start_matches('/')))
            .or_else(|_| find_library(root, interp.rsplit('/').next().unwrap_or(&interp)))?;
        cpio.file(interp.trim_start_matches('/'), 0o755, &fs::read(path)?);
    }
    cpio.file("init", 0o755, INIT.as_bytes());
    Ok(cpio.finish())
}

/// Every `.ko` under `dir`, by module name (dashes read as underscores, as
/// the kernel does).
fn module_index(dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let mut index = BTreeMap::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if let Some(stem) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".ko"))
            {
                index.insert(stem.replace('-', "_"), path);
            }
        }
    }
    Ok(index)
}

/// The order to `insmod` `roots` in: every module after its dependencies,
/// each once. `depends` gives a module's direct dependencies.
fn load_order(
    roots: &[&str],
    mut depends: impl FnMut(&str) -> Result<Vec<String>>,
) -> Result<Vec<String>> {
    let mut order = Vec::new();
    let mut done = BTreeSet::new();
    let mut visiting = BTreeSet::new();
    // Explicit stack of (module, dependencies still to visit) so a deep chain
    // cannot overflow the call stack.
    for root in roots {
        let root = root.replace('-', "_");
        if done.contains(&root) {
            continue;
        }
        let mut stack: Vec<(String, Vec<String>)> = Vec::new();
        let deps = depends(&root)?;
        visiting.insert(root.clone());
        stack.push((root, deps));
        while let Some((name, deps)) = stack.last_mut() {
            match deps.pop() {
                Some(dep) => {
                    let dep = dep.replace('-', "_");
                    if done.contains(&dep) {
                        continue;
                    }
                    if visiting.contains(&dep) {
                        bail!("module dependency cycle through {dep} (from {name})");
                    }
                    let next = depends(&dep)?;
                    visiting.insert(dep.clone());
                    stack.push((dep, next));
                }
                None => {
                    let name = name.clone();
                    stack.pop();
                    visiting.remove(&name);
                    done.insert(name.clone());
                    order.push(name);
                }
            }
        }
    }
    Ok(order)
}

/// What a kernel module's `.modinfo` section (NUL-separated `key=value`
/// strings) says about loading it.
#[derive(Debug, Default, PartialEq, Eq)]
struct ModInfo {
    /// `depends=`: modules whose symbols it uses.
    depends: Vec<String>,
    /// `softdep=pre: ...`: modules to load before it.
    softdep_pre: Vec<String>,
    /// `alias=`: other names it answers to.
    aliases: Vec<String>,
}

fn modinfo(ko: &[u8]) -> Result<ModInfo> {
    let section = elf_section(ko, ".modinfo")?.context("no .modinfo section")?;
    let mut info = ModInfo::default();
    for kv in section.split(|&b| b == 0) {
        let kv = String::from_utf8_lossy(kv);
        if let Some(list) = kv.strip_prefix("depends=") {
            info.depends.extend(
                list.split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_string),
            );
        } else if let Some(spec) = kv.strip_prefix("softdep=") {
            // "pre: a b post: c"
            let mut pre = false;
            for word in spec.split_whitespace() {
                match word {
                    "pre:" => pre = true,
                    "post:" => pre = false,
                    m if pre => info.softdep_pre.push(m.to_string()),
                    _ => {}
                }
            }
        } else if let Some(alias) = kv.strip_prefix("alias=") {
            info.aliases.push(alias.to_string());
        }
    }
    Ok(info)
}

/// Alias -> module name over every module, preferring the CPU-independent
/// `*_generic` implementation when several answer to one alias.
fn alias_index(index: &BTreeMap<String, PathBuf>) -> Result<BTreeMap<String, String>> {
    let mut map: BTreeMap<String, String> = BTreeMap::new();
    for (name, path) in index {
        let Ok(info) = modinfo(&fs::read(path)?) else {
            continue;
        };
        for alias in info.aliases {
            let alias = alias.replace('-', "_");
            let keep = map
                .get(&alias)
                .is_some_and(|held| held.ends_with("_generic"));
            if !keep {
                map.insert(alias, name.clone());
            }
        }
    }
    Ok(map)
}

/// The bytes of the section called `name` of a little-endian ELF64 file.
fn elf_section<'a>(elf: &'a [u8], name: &str) -> Result<Option<&'a [u8]>> {
    let u16_at = |o: usize| -> Result<usize> {
        let b = elf.get(o..o + 2).context("ELF truncated")?;
        Ok(u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u32_at = |o: usize| -> Result<usize> {
        let b = elf.get(o..o + 4).context("ELF truncated")?;
        Ok(u32::from_le_bytes(b.try_into()?) as usize)
    };
    let u64_at = |o: usize| -> Result<usize> {
        let b = elf.get(o..o + 8).context("ELF truncated")?;
        usize::try_from(u64::from_le_bytes(b.try_into()?)).context("ELF offset too large")
    };
    if elf.get(0..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        bail!("not a little-endian ELF64 file");
    }
    let (shoff, shentsize, shnum, shstrndx) =
        (u64_at(0x28)?, u16_at(0x3a)?, u16_at(0x3c)?, u16_at(0x3e)?);
    let header = |i: usize| shoff.checked_add(i.checked_mul(shentsize)?);
    let body = |h: usize| -> Result<&'a [u8]> {
        let (off, size) = (u64_at(h + 24)?, u64_at(h + 32)?);
        elf.get(off..off.checked_add(size).context("ELF section overflows")?)
            .context("ELF section outside the file")
    };
    let names = body(header(shstrndx).context("ELF header overflows")?)?;
    for i in 0..shnum {
        let h = header(i).context("ELF header overflows")?;
        let at = u32_at(h)?;
        let sname = names
            .get(at..)
            .context("ELF section name outside the table")?;
        let end = sname.iter().position(|&b| b == 0).unwrap_or(sname.len());
        if &sname[..end] == name.as_bytes() {
            return Ok(Some(body(h)?));
        }
    }
    Ok(None)
}

/// `NEEDED` libraries and the ELF interpreter of a program or library, from
/// `readelf` (binutils, present wherever cargo links).
fn dynamic_info(elf: &Path) -> Result<(Vec<String>, Option<String>)> {
    let out = check(Command::new("readelf").arg("-d").arg("-l").arg(elf))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let bracketed = |line: &str| {
        let start = line.rfind('[')? + 1;
        let end = line.rfind(']')?;
        line.get(start..end).map(str::to_string)
    };
    let needed = text
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(bracketed)
        .collect();
    let interp = text
        .lines()
        .find(|l| l.contains("Requesting program interpreter"))
        .and_then(|l| bracketed(l)?.split(": ").nth(1).map(str::to_string));
    Ok((needed, interp))
}

/// A shared library from the unpacked packages, else from this host (Debian
/// like the guest kernel's userland).
fn find_library(root: &Path, name: &str) -> Result<PathBuf> {
    for dir in [
        "lib/x86_64-linux-gnu",
        "usr/lib/x86_64-linux-gnu",
        "lib64",
        "lib",
    ] {
        if let Ok(p) = resolve_in(root, &Path::new(dir).join(name)) {
            return Ok(p);
        }
    }
    for dir in ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return Ok(p);
        }
    }
    bail!("shared library {name} is neither in the downloaded packages nor on this host")
}

/// `rel` inside the unpacked tree `root`, following symlinks as if `root`
/// were `/` (Debian's `/lib64/ld-linux-x86-64.so.2` points at an absolute path).
fn resolve_in(root: &Path, rel: &Path) -> Result<PathBuf> {
    let mut path = root.join(rel);
    for _ in 0..16 {
        let meta =
            fs::symlink_metadata(&path).with_context(|| format!("{} not found", path.display()))?;
        if !meta.file_type().is_symlink() {
            return Ok(path);
        }
        let target = fs::read_link(&path)?;
        path = if target.is_absolute() {
            root.join(target.strip_prefix("/")?)
        } else {
            path.parent().unwrap_or(root).join(target)
        };
    }
    bail!("too many symlinks at {}", root.join(rel).display())
}

/// The versioned kernel package `linux-image-amd64` depends on.
fn kernel_package() -> Result<String> {
    let out = check(Command::new("apt-cache").args(["depends", "linux-image-amd64"]))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-"))
        .map(str::to_string)
        .context("apt-cache knows no linux-image-amd64 (run apt-get update)")
}

/// A package's direct `Depends:` (the first alternative of each).
fn package_depends(package: &str) -> Result<Vec<String>> {
    let out = check(Command::new("apt-cache").args(["depends", package]))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(parse_depends(&text))
}

fn parse_depends(text: &str) -> Vec<String> {
    let mut deps: Vec<String> = text
        .lines()
        // `|Depends:` is one of alternatives: taking each is harmless.
        .filter_map(|l| {
            l.trim_start()
                .trim_start_matches('|')
                .strip_prefix("Depends: ")
        })
        .map(str::trim)
        // `<name>` is a virtual package: nothing to download.
        .filter(|p| !p.is_empty() && !p.starts_with('<'))
        .map(str::to_string)
        .collect();
    deps.dedup();
    deps
}

fn downloaded(debs: &Path, package: &str) -> bool {
    let prefix = format!("{package}_");
    fs::read_dir(debs)
        .map(|entries| {
            entries.flatten().any(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
            })
        })
        .unwrap_or(false)
}

/// `apt-get download`s `packages` into `debs` and unpacks them into `root`.
fn download(debs: &Path, root: &Path, packages: &[&str]) -> Result<()> {
    check(
        Command::new("apt-get")
            .current_dir(debs)
            .arg("download")
            .args(packages),
    )?;
    for p in packages {
        let prefix = format!("{p}_");
        for entry in fs::read_dir(debs)? {
            let path = entry?.path();
            let is_it = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"));
            if is_it {
                check(Command::new("dpkg-deb").arg("-x").arg(&path).arg(root))?;
            }
        }
    }
    Ok(())
}

fn check(cmd: &mut Command) -> Result<std::process::Output> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("starting {shown}"))?;
    if !out.status.success() {
        bail!("{shown} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(out)
}

/// A `newc` cpio archive writer, enough for an initramfs.
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() + 1,
            0
        );
        self.out.extend_from_slice(header.as_bytes());
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, (0, 0), &[]);
    }

    fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100000 | perm, (0, 0), data);
    }

    fn char_dev(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020600, (major, minor), &[]);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_load_first_and_once() {
        let deps = |m: &str| -> Result<Vec<String>> {
            Ok(match m {
                "ip_vs" => vec!["nf_conntrack".into(), "libcrc32c".into()],
                "nf_conntrack" => vec!["nf_defrag_ipv4".into(), "libcrc32c".into()],
                "ip_vs_rr" => vec!["ip_vs".into()],
                _ => vec![],
            })
        };
        let order = load_order(&["ip_vs_rr", "ip_vs"], deps).unwrap();
        let at = |m: &str| order.iter().position(|o| o == m).unwrap();
        assert_eq!(order.len(), 5);
        assert!(at("libcrc32c") < at("nf_conntrack"));
        assert!(at("nf_defrag_ipv4") < at("nf_conntrack"));
        assert!(at("nf_conntrack") < at("ip_vs"));
        assert!(at("ip_vs") < at("ip_vs_rr"));
    }

    #[test]
    fn dependency_cycle_is_an_error() {
        let deps = |m: &str| -> Result<Vec<String>> {
            Ok(vec![if m == "a" { "b" } else { "a" }.to_string()])
        };
        assert!(load_order(&["a"], deps).is_err());
    }

    /// A minimal ELF64 with a section-name table and a `.modinfo` section.
    fn tiny_module(modinfo: &[u8]) -> Vec<u8> {
        let names = b"\0.shstrtab\0.modinfo\0";
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let names_off = elf.len();
        elf.extend_from_slice(names);
        let info_off = elf.len();
        elf.extend_from_slice(modinfo);
        let shoff = elf.len();
        elf[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
        for (name, off, size) in [
            (0u32, 0usize, 0usize),
            (1, names_off, names.len()),
            (11, info_off, modinfo.len()),
        ] {
            let mut h = [0u8; 64];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[24..32].copy_from_slice(&(off as u64).to_le_bytes());
            h[32..40].copy_from_slice(&(size as u64).to_le_bytes());
            elf.extend_from_slice(&h);
        }
        elf
    }

    #[test]
    fn depends_softdeps_and_aliases_read_from_modinfo() {
        let ko = tiny_module(
            b"license=GPL\0softdep=pre: crc32c post: x\0depends=nf_conntrack,libcrc32c\0alias=crypto-y\0name=ip_vs\0",
        );
        assert_eq!(
            modinfo(&ko).unwrap(),
            ModInfo {
                depends: vec!["nf_conntrack".into(), "libcrc32c".into()],
                softdep_pre: vec!["crc32c".into()],
                aliases: vec!["crypto-y".into()],
            }
        );
        let none = tiny_module(b"depends=\0name=virtio\0");
        assert_eq!(modinfo(&none).unwrap(), ModInfo::default());
    }

    #[test]
    fn truncated_or_foreign_files_are_errors() {
        let ko = tiny_module(b"depends=a\0");
        assert!(modinfo(&ko[..ko.len() - 30]).is_err());
        assert!(modinfo(&ko[..80]).is_err());
        assert!(modinfo(b"not an elf").is_err());
        assert!(modinfo(&[]).is_err());
    }

    #[test]
    fn apt_cache_depends_output() {
        let text = "ipvsadm\n  Depends: libc6\n  Depends: libnl-3-200\n |Depends: libpopt0\n  Recommends: x\n  Depends: <virtual-thing>\n";
        assert_eq!(
            parse_depends(text),
            vec!["libc6", "libnl-3-200", "libpopt0"]
        );
    }
}
