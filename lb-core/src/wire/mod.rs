//! Wire formats of the medical protocols the appliance reads and writes
//! itself — DICOM upper layer PDUs ([`dicom`]) and HL7 v2 over MLLP
//! ([`hl7`]) — as zero-copy views in smoltcp's `Packet<T>`/`Repr` shape.
//! The health checks and the protocol-aware layer 7 services share them.

pub mod dicom;
pub mod hl7;

/// A big-endian u32 from the first four bytes of `b` (which has them).
fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}
