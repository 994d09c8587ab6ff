//! The config store on the appliance's disk: opened at boot, written by
//! `save` (and the commands that persist a change), formatted by `store
//! format`, emptied by `factory-reset`. The logic is lb-core's `store`;
//! this is the glue that owns the disk and runs a save one bounded piece at
//! a time, letting other tasks (the data path) run between pieces.

use crate::disk::Disk;
use crate::{println, rng};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::{AtomicBool, Ordering};
use core::task::{Context, Poll};
use critical_section::Mutex;
use embassy_time::Timer;
use lb_core::config::Config;
use lb_core::envelope;
use lb_core::store::{
    DiskState, KIND_CONFIG_ENVELOPE, Loaded, Progress, SaveJob, SlotHeader, SlotState, Store,
    StoreError,
};

struct Opened {
    disk: Disk,
    store: Store,
}

static STORE: Mutex<RefCell<Option<Opened>>> = Mutex::new(RefCell::new(None));
/// A job (save, format, erase) is running; the next one waits.
static BUSY: AtomicBool = AtomicBool::new(false);

fn with<R>(f: impl FnOnce(&mut Opened) -> R) -> Option<R> {
    critical_section::with(|cs| STORE.borrow_ref_mut(cs).as_mut().map(f))
}

/// What boot found on the disk.
pub struct Boot {
    /// The newest stored config that decodes, with where it came from.
    pub config: Option<(Config, Loaded)>,
}

/// Opens the store on `disk` (if there is one), prints what it holds and
/// returns the newest stored config that decodes. A disk that is not ours
/// is left untouched and said so.
pub fn open(disk: Option<Disk>) -> Boot {
    let Some(mut disk) = disk else {
        println!(
            "store: no disk; settings are not kept across reboots (attach one: tools disk create)"
        );
        return Boot { config: None };
    };
    println!("disk: {}", disk.description);
    let mut store = match Store::open(&mut *disk.device) {
        Ok(s) => s,
        Err(e) => {
            println!("error: store: cannot read the disk: {e}; settings are not kept");
            return Boot { config: None };
        }
    };
    let loaded = store.load(
        &mut *disk.device,
        |l| envelope::decode(&l.payload),
        |slot, e| match e {
            Ok(err) => println!("warning: store: slot {}: {err}", slot.name()),
            Err(err) => println!("warning: store: slot {}: {err}", slot.name()),
        },
    );
    match store.state {
        DiskState::Blank => println!("store: blank disk; the first save formats it"),
        DiskState::Foreign(why) => println!(
            "error: store: the disk is not a config store ({why}); it is left untouched (`store format` erases it and makes it one)"
        ),
        DiskState::Formatted(_) => match &loaded {
            Some((l, _)) => println!(
                "store: slot {} sequence {} ({} bytes)",
                l.slot.name(),
                l.sequence,
                l.payload.len()
            ),
            None => println!("store: no saved config"),
        },
    }
    critical_section::with(|cs| *STORE.borrow_ref_mut(cs) = Some(Opened { disk, store }));
    Boot {
        config: loaded.map(|(l, c)| (c, l)),
    }
}

/// Returns once, after letting every other ready task run.
pub async fn yield_now() {
    YieldNow(false).await
}

struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Holds [`BUSY`] while alive.
struct Busy;

impl Busy {
    async fn take() -> Busy {
        while BUSY.swap(true, Ordering::Acquire) {
            Timer::after_millis(5).await;
        }
        Busy
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        BUSY.store(false, Ordering::Release);
    }
}

/// Runs `job` to its end, one step per pass of the executor.
async fn run(mut job: SaveJob) -> Result<SaveJob, StoreError> {
    loop {
        let step = with(|o| job.step(&mut *o.disk.device))
            .ok_or(StoreError::Io(lb_core::store::IoError::Device(0)))??;
        if step == Progress::Done {
            with(|o| o.store.commit(&job));
            return Ok(job);
        }
        YieldNow(false).await;
    }
}

/// Why a store command could not run.
pub enum Refused {
    NoDisk,
    /// The config does not encode (it fails validation).
    Invalid(String),
    Store(StoreError),
}

impl core::fmt::Display for Refused {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Refused::NoDisk => f.write_str("no disk attached: nothing can be saved"),
            Refused::Invalid(why) => f.write_str(why),
            Refused::Store(e) => write!(f, "{e}"),
        }
    }
}

impl From<StoreError> for Refused {
    fn from(e: StoreError) -> Self {
        Refused::Store(e)
    }
}

/// Saves `config` as the newest slot; returns the header written.
pub async fn save(config: &Config) -> Result<SlotHeader, Refused> {
    let blob = envelope::encode(config).map_err(|e| Refused::Invalid(format!("{e}")))?;
    save_blob(&blob).await
}

/// Saves the configuration in force (borrowed in place: a large one is
/// costly to copy) as the newest slot.
pub async fn save_running() -> Result<SlotHeader, Refused> {
    let blob =
        crate::running::with(envelope::encode).map_err(|e| Refused::Invalid(format!("{e}")))?;
    save_blob(&blob).await
}

/// Saves an envelope blob as the newest slot.
pub async fn save_blob(blob: &[u8]) -> Result<SlotHeader, Refused> {
    let _busy = Busy::take().await;
    let job = with(|o| {
        o.store
            .begin_save(&mut *o.disk.device, blob, KIND_CONFIG_ENVELOPE, rng::u64())
    })
    .ok_or(Refused::NoDisk)??;
    let h = job.header();
    println!(
        "store: writing {} bytes to slot {} (sequence {})",
        h.len,
        h.slot.name(),
        h.sequence
    );
    let job = run(job).await?;
    Ok(*job.header())
}

/// Makes the disk an empty config store, whatever it held.
pub async fn format() -> Result<(), Refused> {
    let _busy = Busy::take().await;
    let job = with(|o| o.store.format(rng::u64())).ok_or(Refused::NoDisk)??;
    run(job).await?;
    Ok(())
}

/// Empties both slots (factory reset).
pub async fn erase() -> Result<(), Refused> {
    let _busy = Busy::take().await;
    let job = with(|o| o.store.erase()).ok_or(Refused::NoDisk)??;
    run(job).await?;
    Ok(())
}

/// Waits until no job runs (before a reboot or power-off).
pub async fn idle() {
    drop(Busy::take().await);
}

/// `store status`: the disk, its state and both slots.
pub fn status() -> Vec<String> {
    let Some(lines) = with(|o| {
        let mut v = Vec::new();
        v.push(format!("disk: {}", o.disk.description));
        v.push(match o.store.state {
            DiskState::Blank => String::from("store: blank; the first save formats it"),
            DiskState::Foreign(why) => {
                format!(
                    "store: not a config store ({why}); `store format` erases it and makes it one"
                )
            }
            DiskState::Formatted(l) => format!(
                "store: formatted, disk id {:016x}, two slots of {} KiB",
                l.disk_id,
                l.capacity() / 1024
            ),
        });
        let newest = o.store.candidates().first().copied();
        for (i, s) in o.store.slots.iter().enumerate() {
            let name = if i == 0 { "A" } else { "B" };
            v.push(match s {
                SlotState::Empty => format!("slot {name}: empty"),
                SlotState::Damaged => format!("slot {name}: damaged or unreadable"),
                SlotState::Written(h) => format!(
                    "slot {name}: sequence {}, {} bytes, crc {:08x}{}",
                    h.sequence,
                    h.len,
                    h.crc,
                    if Some(h.slot) == newest {
                        " (newest)"
                    } else {
                        ""
                    }
                ),
            });
        }
        v
    }) else {
        return alloc::vec![String::from(
            "store: no disk; settings are not kept across reboots"
        )];
    };
    lines
}

/// The configuration stored before the newest one (what `tools rollback`
/// applies again): `Ok(None)` when there is no such slot.
pub fn previous() -> Result<Option<Config>, Refused> {
    with(|o| {
        let slots = o.store.candidates();
        let Some(&slot) = slots.get(1) else {
            return Ok(None);
        };
        let loaded = o.store.read_slot(&mut *o.disk.device, slot)?;
        envelope::decode(&loaded.payload)
            .map(Some)
            .map_err(|e| Refused::Invalid(format!("slot {}: {e}", slot.name())))
    })
    .ok_or(Refused::NoDisk)?
}
