//! What a disk says about itself is input too: any bytes as a disk's first
//! sectors must give a partition inside the disk or none, never a panic,
//! and I/O through that partition must stay inside it; any 512 bytes as
//! IDENTIFY DEVICE data must parse or be refused.
#![no_main]
use lb_core::store::ata::parse_identify;
use lb_core::store::partition::{Partition, find_config_partition};
use lb_core::store::{BlockDevice, MemDisk};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut identify = [0u8; 512];
    let n = data.len().min(512);
    identify[..n].copy_from_slice(&data[..n]);
    if let Ok(id) = parse_identify(&identify) {
        assert!(id.sectors > 0 && (id.sector_size == 512 || id.sector_size == 4096));
    }
    let mut image = data.to_vec();
    image.resize(image.len().max(64 * 512).div_ceil(512) * 512, 0);
    let mut disk = MemDisk::from_bytes(512, image);
    let total = disk.sector_count();
    if let Ok(Some(extent)) = find_config_partition(&mut disk) {
        assert!(extent.sectors > 0 && extent.first + extent.sectors <= total);
        let mut part = Partition::new(Box::new(disk), extent);
        let last = extent.sectors - 1;
        part.write(last, &[0xA5; 512]).unwrap();
        assert!(part.write(extent.sectors, &[0; 512]).is_err());
    }
});
