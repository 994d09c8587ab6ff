//! The OVA: an OVF 1.0 descriptor, its manifest and the streamOptimized
//! VMDK in one tar, for VMware (and VirtualBox) import.
//!
//! The virtual machine it describes is the appliance's reference shape:
//! 1 vCPU, 256 MiB, one SATA (AHCI) disk holding the boot loader and the
//! config store, two vmxnet3 NICs (`external`, `internal`), a serial port
//! for the console. [`validate`] checks what can be checked without the
//! DMTF schema files: well-formed XML, the required sections in the order
//! DSP0243 gives, file references and sizes, disk and network references,
//! RASD element order, unique instance ids, and the manifest's digests.

use anyhow::{Context, Result, ensure};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::process::Command;

const OVF_NS: &str = "http://schemas.dmtf.org/ovf/envelope/1";
const RASD_NS: &str =
    "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData";
const VSSD_NS: &str =
    "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData";

/// File names inside the OVA.
pub const OVF_NAME: &str = "appliance.ovf";
pub const MF_NAME: &str = "appliance.mf";
pub const DISK_NAME: &str = "appliance-disk1.vmdk";

/// The virtual machine's shape.
pub const VCPUS: u32 = 1;
pub const MEMORY_MIB: u32 = 256;
pub const NETWORKS: [&str; 2] = ["external", "internal"];

/// CIM resource types (DSP1041 / CIM_ResourceAllocationSettingData).
const RT_CPU: u32 = 3;
const RT_MEMORY: u32 = 4;
const RT_ETHERNET: u32 = 10;
const RT_DISK: u32 = 17;
const RT_OTHER_STORAGE: u32 = 20;
const RT_SERIAL: u32 = 21;

/// One `<Item>`: RASD elements as (name, value), written in the
/// alphabetical order the CIM schema's sequence requires.
fn item(fields: &[(&str, &str)]) -> String {
    let mut sorted = fields.to_vec();
    sorted.sort_by_key(|(k, _)| *k);
    let mut s = String::from("      <Item>\n");
    for (k, v) in sorted {
        s.push_str(&format!("        <rasd:{k}>{v}</rasd:{k}>\n"));
    }
    s.push_str("      </Item>\n");
    s
}

/// The OVF descriptor for a disk file of `disk_size` bytes whose virtual
/// disk holds `capacity` bytes.
pub fn descriptor(disk_size: u64, capacity: u64) -> String {
    let mut items = String::new();
    items += &item(&[
        ("AllocationUnits", "hertz * 10^6"),
        ("Description", "Number of virtual CPUs"),
        ("ElementName", "1 virtual CPU"),
        ("InstanceID", "1"),
        ("ResourceType", &RT_CPU.to_string()),
        ("VirtualQuantity", &VCPUS.to_string()),
    ]);
    items += &item(&[
        ("AllocationUnits", "byte * 2^20"),
        ("Description", "Memory size"),
        ("ElementName", &format!("{MEMORY_MIB} MB of memory")),
        ("InstanceID", "2"),
        ("ResourceType", &RT_MEMORY.to_string()),
        ("VirtualQuantity", &MEMORY_MIB.to_string()),
    ]);
    items += &item(&[
        ("Description", "SATA controller"),
        ("ElementName", "sataController0"),
        ("InstanceID", "3"),
        ("ResourceSubType", "vmware.sata.ahci"),
        ("ResourceType", &RT_OTHER_STORAGE.to_string()),
    ]);
    items += &item(&[
        ("AddressOnParent", "0"),
        ("ElementName", "disk0"),
        ("HostResource", "ovf:/disk/vmdisk1"),
        ("InstanceID", "4"),
        ("Parent", "3"),
        ("ResourceType", &RT_DISK.to_string()),
    ]);
    for (i, net) in NETWORKS.iter().enumerate() {
        items += &item(&[
            ("AddressOnParent", &(7 + i).to_string()),
            ("AutomaticAllocation", "true"),
            ("Connection", net),
            ("Description", &format!("VMXNET3 ethernet adapter on {net}")),
            ("ElementName", &format!("eth{i}")),
            ("InstanceID", &(5 + i).to_string()),
            ("ResourceSubType", "VMXNET3"),
            ("ResourceType", &RT_ETHERNET.to_string()),
        ]);
    }
    items += &item(&[
        ("AutomaticAllocation", "true"),
        (
            "Description",
            "Serial port: the appliance console (115200 8N1)",
        ),
        ("ElementName", "serial0"),
        ("InstanceID", "7"),
        ("ResourceType", &RT_SERIAL.to_string()),
    ]);
    let networks: String = NETWORKS
        .iter()
        .map(|n| {
            format!(
                "    <Network ovf:name=\"{n}\">\n      <Description>The {n} network</Description>\n    </Network>\n"
            )
        })
        .collect();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="{OVF_NS}" xmlns:ovf="{OVF_NS}" xmlns:rasd="{RASD_NS}" xmlns:vssd="{VSSD_NS}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References>
    <File ovf:id="file1" ovf:href="{DISK_NAME}" ovf:size="{disk_size}"/>
  </References>
  <DiskSection>
    <Info>Virtual disk: boot loader, kernel and config store</Info>
    <Disk ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:capacity="{capacity}" ovf:capacityAllocationUnits="byte" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <NetworkSection>
    <Info>The networks the appliance's NICs connect to</Info>
{networks}  </NetworkSection>
  <VirtualSystem ovf:id="medical-lb">
    <Info>Medical load balancer appliance</Info>
    <Name>medical-lb</Name>
    <OperatingSystemSection ovf:id="102">
      <Info>Guest operating system</Info>
      <Description>Other 64-bit</Description>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>{VCPUS} vCPU, {MEMORY_MIB} MiB, one SATA disk, two vmxnet3 NICs, serial console</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>medical-lb</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-10</vssd:VirtualSystemType>
      </System>
{items}    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#
    )
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes `out`: descriptor, manifest and `vmdk` (as [`DISK_NAME`]) in a
/// ustar archive, descriptor first as OVF requires; then validates it.
pub fn build_ova(vmdk: &Path, capacity: u64, out: &Path) -> Result<()> {
    let stage = out.with_extension("ova-stage");
    if stage.exists() {
        fs::remove_dir_all(&stage)?;
    }
    fs::create_dir_all(&stage)?;
    let disk = stage.join(DISK_NAME);
    fs::copy(vmdk, &disk)?;
    let disk_bytes = fs::read(&disk)?;
    let ovf = descriptor(disk_bytes.len() as u64, capacity);
    fs::write(stage.join(OVF_NAME), &ovf)?;
    let mf = format!(
        "SHA256({OVF_NAME})= {}\nSHA256({DISK_NAME})= {}\n",
        sha256_hex(ovf.as_bytes()),
        sha256_hex(&disk_bytes)
    );
    fs::write(stage.join(MF_NAME), mf)?;
    let _ = fs::remove_file(out);
    let status = Command::new("tar")
        .args([
            "--format=ustar",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "-cf",
        ])
        .arg(out)
        .arg("-C")
        .arg(&stage)
        .args([OVF_NAME, MF_NAME, DISK_NAME])
        .status()
        .context("running tar")?;
    fs::remove_dir_all(&stage)?;
    ensure!(status.success(), "tar failed ({status})");
    validate_ova(out)
}

/// Unpacks `ova` into a scratch directory and [`validate`]s it.
pub fn validate_ova(ova: &Path) -> Result<()> {
    let list = Command::new("tar").arg("-tf").arg(ova).output()?;
    ensure!(
        list.status.success(),
        "{} is not a tar archive",
        ova.display()
    );
    let names: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(String::from)
        .collect();
    ensure!(
        names.first().is_some_and(|n| n.ends_with(".ovf")),
        "the OVF descriptor must be the first file of an OVA (found {names:?})"
    );
    let dir = ova.with_extension("ova-check");
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    fs::create_dir_all(&dir)?;
    let status = Command::new("tar")
        .arg("-xf")
        .arg(ova)
        .arg("-C")
        .arg(&dir)
        .status()?;
    let result = if status.success() {
        validate(&dir.join(&names[0]), &names)
    } else {
        Err(anyhow::anyhow!("cannot unpack {}", ova.display()))
    };
    fs::remove_dir_all(&dir)?;
    result.with_context(|| format!("{} is not a valid OVA", ova.display()))
}

fn ovf_attr<'a>(n: roxmltree::Node<'a, '_>, name: &str) -> Option<&'a str> {
    n.attribute((OVF_NS, name))
}

fn child<'a, 'i>(n: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    n.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

fn require_info(section: roxmltree::Node<'_, '_>) -> Result<()> {
    ensure!(
        child(section, "Info").is_some(),
        "<{}> has no <Info>",
        section.tag_name().name()
    );
    Ok(())
}

/// Checks the descriptor at `ovf` against the files in its directory
/// (`package`: the OVA's member names, descriptor first).
pub fn validate(ovf: &Path, package: &[String]) -> Result<()> {
    let dir = ovf.parent().context("descriptor path")?;
    let text = fs::read_to_string(ovf)?;
    let doc = roxmltree::Document::parse(&text).context("the descriptor is not well-formed XML")?;
    let env = doc.root_element();
    ensure!(
        env.tag_name().name() == "Envelope" && env.tag_name().namespace() == Some(OVF_NS),
        "the root element is not an OVF 1.x <Envelope>"
    );
    let elements: Vec<_> = env.children().filter(|c| c.is_element()).collect();
    let names: Vec<&str> = elements.iter().map(|e| e.tag_name().name()).collect();
    // DSP0243: References, then sections, then the content (one VirtualSystem).
    ensure!(
        names.first() == Some(&"References"),
        "<References> must come first"
    );
    ensure!(
        names.last() == Some(&"VirtualSystem")
            && names.iter().filter(|n| **n == "VirtualSystem").count() == 1,
        "exactly one <VirtualSystem>, last"
    );
    // References: ids unique, every file present with its stated size.
    let mut files = HashSet::new();
    for f in elements[0].children().filter(|c| c.is_element()) {
        let id = ovf_attr(f, "id").context("<File> without ovf:id")?;
        let href = ovf_attr(f, "href").context("<File> without ovf:href")?;
        ensure!(files.insert(id.to_string()), "file id {id} twice");
        ensure!(
            !href.contains('/') && package.iter().any(|p| p == href),
            "file {href} is not in the package"
        );
        let size: u64 = ovf_attr(f, "size")
            .context("<File> without ovf:size")?
            .parse()
            .context("ovf:size is not a number")?;
        let actual = fs::metadata(dir.join(href))?.len();
        ensure!(
            size == actual,
            "{href}: ovf:size {size}, file has {actual} bytes"
        );
    }
    // DiskSection: each disk refers to a file, with a capacity.
    let disks_section = elements
        .iter()
        .find(|e| e.tag_name().name() == "DiskSection")
        .context("no <DiskSection>")?;
    require_info(*disks_section)?;
    let mut disks = HashSet::new();
    for d in disks_section
        .children()
        .filter(|c| c.tag_name().name() == "Disk")
    {
        let id = ovf_attr(d, "diskId").context("<Disk> without ovf:diskId")?;
        let file = ovf_attr(d, "fileRef").context("<Disk> without ovf:fileRef")?;
        ensure!(
            files.contains(file),
            "disk {id} refers to unknown file {file}"
        );
        let capacity: u64 = ovf_attr(d, "capacity")
            .context("<Disk> without ovf:capacity")?
            .parse()
            .context("ovf:capacity is not a number")?;
        ensure!(capacity > 0, "disk {id} has no capacity");
        ensure!(
            ovf_attr(d, "format").is_some(),
            "disk {id} has no ovf:format"
        );
        disks.insert(id.to_string());
    }
    ensure!(!disks.is_empty(), "<DiskSection> lists no disk");
    // NetworkSection: named networks.
    let net_section = elements
        .iter()
        .find(|e| e.tag_name().name() == "NetworkSection")
        .context("no <NetworkSection>")?;
    require_info(*net_section)?;
    let networks: HashSet<&str> = net_section
        .children()
        .filter(|c| c.tag_name().name() == "Network")
        .filter_map(|n| ovf_attr(n, "name"))
        .collect();
    // The virtual system and its hardware.
    let vs = *elements.last().context("no content")?;
    ensure!(
        ovf_attr(vs, "id").is_some(),
        "<VirtualSystem> without ovf:id"
    );
    require_info(vs)?;
    let os = child(vs, "OperatingSystemSection").context("no <OperatingSystemSection>")?;
    require_info(os)?;
    ensure!(
        ovf_attr(os, "id").is_some_and(|v| v.parse::<u16>().is_ok()),
        "OS section ovf:id"
    );
    let hw = child(vs, "VirtualHardwareSection").context("no <VirtualHardwareSection>")?;
    require_info(hw)?;
    let mut ids = HashSet::new();
    let mut items = Vec::new();
    for it in hw.children().filter(|c| c.tag_name().name() == "Item") {
        let fields: Vec<(&str, &str)> = it
            .children()
            .filter(|c| c.is_element())
            .map(|c| (c.tag_name().name(), c.text().unwrap_or("")))
            .collect();
        ensure!(
            it.children()
                .filter(|c| c.is_element())
                .all(|c| c.tag_name().namespace() == Some(RASD_NS)),
            "an <Item> holds a non-RASD element"
        );
        ensure!(
            fields.windows(2).all(|w| w[0].0 < w[1].0),
            "RASD elements out of schema order in {fields:?}"
        );
        let get = |k: &str| fields.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
        let id = get("InstanceID").context("an <Item> without InstanceID")?;
        ensure!(
            get("ElementName").is_some(),
            "item {id} without ElementName"
        );
        ensure!(ids.insert(id.to_string()), "InstanceID {id} twice");
        let rt: u32 = get("ResourceType")
            .context("an <Item> without ResourceType")?
            .parse()
            .context("ResourceType is not a number")?;
        if let Some(host) = get("HostResource") {
            let disk = host
                .strip_prefix("ovf:/disk/")
                .context("HostResource is not ovf:/disk/...")?;
            ensure!(disks.contains(disk), "item {id} uses unknown disk {disk}");
        }
        if let Some(net) = get("Connection") {
            ensure!(networks.contains(net), "item {id} on unknown network {net}");
        }
        items.push((
            rt,
            get("ResourceSubType").map(str::to_string),
            get("VirtualQuantity").map(str::to_string),
            get("Parent").map(str::to_string),
        ));
    }
    for (_, _, _, parent) in &items {
        if let Some(p) = parent {
            ensure!(ids.contains(p), "Parent {p} is no item");
        }
    }
    // The appliance's shape.
    let count = |rt: u32| items.iter().filter(|i| i.0 == rt).count();
    let quantity = |rt: u32| items.iter().find(|i| i.0 == rt).and_then(|i| i.2.clone());
    ensure!(
        quantity(RT_CPU).as_deref() == Some(&*VCPUS.to_string()),
        "not {VCPUS} vCPU"
    );
    ensure!(
        quantity(RT_MEMORY).as_deref() == Some(&*MEMORY_MIB.to_string()),
        "not {MEMORY_MIB} MiB"
    );
    ensure!(
        items
            .iter()
            .filter(|i| i.0 == RT_ETHERNET && i.1.as_deref() == Some("VMXNET3"))
            .count()
            == 2,
        "not two vmxnet3 NICs"
    );
    ensure!(count(RT_DISK) == 1, "not one disk");
    ensure!(
        items
            .iter()
            .any(|i| i.0 == RT_OTHER_STORAGE && i.1.as_deref() == Some("vmware.sata.ahci")),
        "no SATA controller"
    );
    ensure!(count(RT_SERIAL) == 1, "no serial port");
    // The manifest, if any: a SHA-256 line for every other file, each right.
    if let Some(mf) = package.iter().find(|p| p.ends_with(".mf")) {
        let text = fs::read_to_string(dir.join(mf))?;
        for name in package.iter().filter(|p| *p != mf) {
            let want = sha256_hex(&fs::read(dir.join(name))?);
            let line = format!("SHA256({name})= {want}");
            ensure!(
                text.lines().any(|l| l.trim() == line),
                "the manifest has no matching digest for {name}"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(ovf: &str) -> (std::path::PathBuf, Vec<String>) {
        let dir = std::env::temp_dir().join(format!(
            "lbovf-{}-{}",
            std::process::id(),
            sha256_hex(ovf.as_bytes())
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(DISK_NAME), vec![7u8; 1000]).unwrap();
        fs::write(dir.join(OVF_NAME), ovf).unwrap();
        (dir, vec![OVF_NAME.into(), DISK_NAME.into()])
    }

    fn check(ovf: &str) -> Result<()> {
        let (dir, names) = package(ovf);
        let r = validate(&dir.join(OVF_NAME), &names);
        fs::remove_dir_all(&dir).unwrap();
        r
    }

    #[test]
    fn our_descriptor_is_valid() {
        check(&descriptor(1000, 1 << 25)).unwrap();
    }

    #[test]
    fn broken_descriptors_are_refused() {
        let good = descriptor(1000, 1 << 25);
        for (from, to, why) in [
            ("</Envelope>", "", "well-formed"),
            ("ovf:size=\"1000\"", "ovf:size=\"999\"", "ovf:size"),
            (DISK_NAME, "missing.vmdk", "not in the package"),
            (
                "ovf:fileRef=\"file1\"",
                "ovf:fileRef=\"file2\"",
                "unknown file",
            ),
            ("ovf:/disk/vmdisk1", "ovf:/disk/vmdisk9", "unknown disk"),
            (
                "<rasd:Connection>internal",
                "<rasd:Connection>dmz",
                "unknown network",
            ),
            ("<rasd:Parent>3", "<rasd:Parent>42", "Parent 42"),
            ("<rasd:InstanceID>7", "<rasd:InstanceID>6", "twice"),
            (
                "<rasd:VirtualQuantity>256",
                "<rasd:VirtualQuantity>2048",
                "MiB",
            ),
            ("<Info>Guest operating system</Info>", "", "<Info>"),
            (
                "<rasd:AddressOnParent>0</rasd:AddressOnParent>\n        <rasd:ElementName>disk0</rasd:ElementName>",
                "<rasd:ElementName>disk0</rasd:ElementName>\n        <rasd:AddressOnParent>0</rasd:AddressOnParent>",
                "schema order",
            ),
        ] {
            assert!(good.contains(from), "{from}");
            let bad = good.replacen(from, to, 1);
            let err = format!("{:#}", check(&bad).unwrap_err());
            assert!(err.contains(why), "{why}: {err}");
        }
    }

    #[test]
    fn a_wrong_manifest_is_refused() {
        let ovf = descriptor(1000, 1 << 25);
        let (dir, mut names) = package(&ovf);
        fs::write(dir.join(MF_NAME), format!("SHA256({DISK_NAME})= 00\n")).unwrap();
        names.push(MF_NAME.into());
        let err = validate(&dir.join(OVF_NAME), &names).unwrap_err();
        assert!(err.to_string().contains("manifest"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
