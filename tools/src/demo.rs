//! The demo `tools run` boots by default: two PACS (dcmtk `storescp`) on
//! this machine, the appliance on QEMU's user-mode network with
//! `lb-core/configs/demo.toml` balancing a DICOM VIP across them, host
//! ports forwarded to the VIP and to management, an administrator key for
//! the signed commands, and a sample study to send.
//!
//! Everything it starts is stopped (by PID) when the [`Demo`] drops, that
//! is when QEMU exits (Ctrl-A X).

use anyhow::{Context, Result, bail};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::qemu::Forward;
use crate::workspace;

/// Host ports of the two PACS (the appliance reaches them at 10.0.2.2).
pub const PACS_PORTS: [u16; 2] = [11113, 11114];
/// Host port forwarded to the VIP's DICOM port.
pub const VIP_HOST_PORT: u16 = 11112;
const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 100);
const GUEST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);

/// A tiny Secondary Capture image in dcmtk's dump format (for dump2dcm).
const SAMPLE_DUMP: &str = "\
(0008,0016) UI =SecondaryCaptureImageStorage
(0008,0018) UI [1.2.826.0.1.3680043.10.1451.3.1]
(0008,0060) CS [OT]
(0010,0010) PN [DEMO^PATIENT]
(0010,0020) LO [DEMO001]
(0020,000d) UI [1.2.826.0.1.3680043.10.1451.3.2]
(0020,000e) UI [1.2.826.0.1.3680043.10.1451.3.3]
(0028,0002) US 1
(0028,0004) CS [MONOCHROME2]
(0028,0010) US 2
(0028,0011) US 2
(0028,0100) US 8
(0028,0101) US 8
(0028,0102) US 7
(0028,0103) US 0
(7fe0,0010) OB 00\\40\\80\\ff
";

/// The running demo: its PACS processes and files.
pub struct Demo {
    pacs: Vec<Child>,
    pub dir: PathBuf,
    /// The compiled demo config (the appliance's boot module).
    pub module: PathBuf,
    pub key: PathBuf,
    pub sample: PathBuf,
}

/// What `run` forwards for the demo.
pub fn forwards() -> Vec<Forward> {
    vec![
        Forward::to(lb_core::mgmt::HTTP_PORT, GUEST, lb_core::mgmt::HTTP_PORT),
        Forward::to(
            lb_core::mgmt::COMMAND_PORT,
            GUEST,
            lb_core::mgmt::COMMAND_PORT,
        ),
        Forward::to(VIP_HOST_PORT, VIP, 104),
    ]
}

fn free(port: u16) -> bool {
    std::net::TcpListener::bind(("0.0.0.0", port)).is_ok()
}

impl Demo {
    /// Starts the PACS and prepares the key, config and sample study.
    pub fn start() -> Result<Demo> {
        let dir = workspace::root().join("target").join("demo");
        std::fs::create_dir_all(&dir)?;
        for port in PACS_PORTS.iter().chain([&VIP_HOST_PORT, &9080, &9081]) {
            if !free(*port) {
                bail!(
                    "port {port} is in use on this machine; the demo needs it (stop what uses it, or run with --config FILE)"
                );
            }
        }
        let key = dir.join("admin.key");
        let public = dir.join("admin.pub");
        if !key.exists() {
            let _ = std::fs::remove_file(&public);
            crate::mgmt_cmd::keygen(&dir.join("admin"))?;
        }
        let admin_pub = std::fs::read_to_string(&public)
            .with_context(|| format!("reading {}", public.display()))?;
        let mut config =
            crate::config_cmd::load(&workspace::root().join("lb-core/configs/demo.toml"))?;
        config.management.admin_keys = vec![admin_pub.trim().to_string()];
        let blob =
            lb_core::envelope::encode(&config).map_err(|e| anyhow::anyhow!("demo config: {e}"))?;
        let module = dir.join("demo.bin");
        std::fs::write(&module, blob)?;

        let sample = dir.join("sample.dcm");
        let dump = dir.join("sample.dump");
        std::fs::write(&dump, SAMPLE_DUMP)?;
        let ok = Command::new("dump2dcm")
            .args(["+te"])
            .arg(&dump)
            .arg(&sample)
            .status()
            .context("running dump2dcm (dcmtk)")?;
        if !ok.success() {
            bail!("dump2dcm could not write the sample study");
        }

        let mut demo = Demo {
            pacs: Vec::new(),
            dir: dir.clone(),
            module,
            key,
            sample,
        };
        for (i, port) in PACS_PORTS.iter().enumerate() {
            let store = dir.join(format!("pacs{}", i + 1));
            std::fs::create_dir_all(&store)?;
            let log = std::fs::File::create(dir.join(format!("pacs{}.log", i + 1)))?;
            let child = Command::new("storescp")
                .args(["-aet", "PACS", "-od"])
                .arg(&store)
                .arg(port.to_string())
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("starting storescp (dcmtk)")?;
            demo.pacs.push(child);
        }
        Ok(demo)
    }

    /// What to try, printed before the console takes the terminal.
    pub fn instructions(&self) -> String {
        let d = self.dir.display();
        format!(
            "\n\
             demo: two PACS (storescp) on this machine, ports {p1} (PACS1) and {p2} (PACS2), storing into {d}/pacs1 and {d}/pacs2;\n\
             demo: the appliance balances the DICOM VIP {VIP}:104 across them; host port {VIP_HOST_PORT} reaches the VIP.\n\
             \n\
             Try, in another terminal:\n\
             \x20 echoscu -aec PACS 127.0.0.1 {VIP_HOST_PORT}   # a C-ECHO through the VIP\n\
             \x20 storescu -aec PACS 127.0.0.1 {VIP_HOST_PORT} {sample}   # a study: it lands in pacs1 or pacs2\n\
             \x20 open http://127.0.0.1:9080/   # the System Overview (also /metrics and /api/status)\n\
             \x20 cargo run -p tools -- status --to 127.0.0.1\n\
             \x20 cargo run -p tools -- rs drain --to 127.0.0.1 --key {key} DICOM/PACS1\n\
             and type `status` or `log` here, at the appliance's console. Ctrl-A X stops the appliance and the PACS.\n",
            p1 = PACS_PORTS[0],
            p2 = PACS_PORTS[1],
            sample = self.sample.display(),
            key = self.key.display(),
        )
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        for c in &mut self.pacs {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
