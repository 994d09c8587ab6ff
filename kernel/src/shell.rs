//! The console's commands, on COM1 and on the screen with the keyboard at
//! once (one session, see [`crate::console`]).
//!
//! Keys are polled every [`POLL_MS`] from the UART and the i8042 and go
//! through lb-core's decoders into the line editor. A finished line runs the
//! command it names in [`COMMANDS`] — the one table `help`, Tab completion
//! and dispatch all read, so a command is added by adding a row and an arm
//! in [`Session::run`] — or answers the question that is open (wizard,
//! confirmation, password, pasted config).

use crate::mgmt::events;
use crate::serial::{DATA, LINE_STATUS};
use crate::{Nics, console, keyboard, power, println, rng, running, storage};
use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::cell::RefCell;
use embassy_time::Timer;
use lb_core::config::{AdminState, Config, from_toml, to_toml, validate};
use lb_core::console::{Completer, Key, NoCompletion, Outcome, Ps2Decoder, SerialDecoder};
use lb_core::datapath::Datapath;
use lb_core::mgmt::events::{Category, Severity};
use lb_core::mgmt::status::admin_name;
use lb_core::password::{PasswordHash, SALT_LEN};
use lb_core::wizard::{Answer, PasswordChange, Settings, Wizard};

/// Input poll period when idle, and right after input arrived.
const POLL_MS: u64 = 20;
const POLL_BUSY_MS: u64 = 1;
/// PBKDF2 iterations per pass of the executor (a few milliseconds).
const HASH_STEP: u32 = 2_000;
/// Wait after a wrong password.
const LOGIN_DELAY_MS: u64 = 2_000;

/// What a command does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cmd {
    Status,
    ShowConfig,
    ShowInterfaces,
    ShowArp,
    Ping,
    Admin(AdminState),
    Log,
    Wizard,
    ConfigPaste,
    Save,
    StoreStatus,
    StoreFormat,
    FactoryReset,
    Reboot,
    Poweroff,
    Login,
    Logout,
    Help,
}

/// One console command.
struct Command {
    /// The words that name it.
    name: &'static str,
    /// What follows the name, for `help`.
    args: &'static str,
    help: &'static str,
    cmd: Cmd,
}

const fn c(name: &'static str, args: &'static str, help: &'static str, cmd: Cmd) -> Command {
    Command {
        name,
        args,
        help,
        cmd,
    }
}

/// Every command, in the order `help` lists them.
#[rustfmt::skip]
const COMMANDS: &[Command] = &[
    c("status", "", "virtual services, real servers, counters and drops", Cmd::Status),
    c("show config", "", "the configuration in force, as TOML", Cmd::ShowConfig),
    c("show interfaces", "", "each network card: MAC, address and where it came from, counters", Cmd::ShowInterfaces),
    c("show arp", "", "the neighbour table: address, MAC, network card", Cmd::ShowArp),
    c("ping", "ADDRESS [COUNT]", "ICMP echo from the appliance (4 by default, at most 100): replies and round-trip times", Cmd::Ping),
    c("drain", "SERVICE/SERVER", "no new connections to a real server; existing ones finish (saved)", Cmd::Admin(AdminState::Drain)),
    c("halt", "SERVICE/SERVER", "no connections to a real server; existing ones are dropped (saved)", Cmd::Admin(AdminState::Halt)),
    c("online", "SERVICE/SERVER", "a drained or halted real server takes connections again (saved)", Cmd::Admin(AdminState::Online)),
    c("log", "", "the last events: config applied and saved, drain/halt/online, store changes", Cmd::Log),
    c("wizard", "", "network set-up: interface, DHCP, address, gateway, DNS, hostname, password", Cmd::Wizard),
    c("config paste", "", "paste a TOML config, then a line with only '.': checked, shown, applied live, saved", Cmd::ConfigPaste),
    c("save", "", "store the configuration in force on the config disk", Cmd::Save),
    c("store status", "", "the config disk and its two slots", Cmd::StoreStatus),
    c("store format", "", "erase the config disk and make it an empty config store (asks first)", Cmd::StoreFormat),
    c("factory-reset", "", "erase the stored configuration and restart (asks first)", Cmd::FactoryReset),
    c("reboot", "", "restart the appliance", Cmd::Reboot),
    c("poweroff", "", "switch the appliance off", Cmd::Poweroff),
    c("login", "", "unlock the console (when a console password is set)", Cmd::Login),
    c("logout", "", "lock the console (when a console password is set)", Cmd::Logout),
    c("help", "[COMMAND]", "this list, or one command", Cmd::Help),
];

/// Commands a locked console takes.
fn allowed_locked(cmd: Cmd) -> bool {
    matches!(cmd, Cmd::Login | Cmd::Help)
}

/// The command named by the first words of `words`, and its arguments.
fn lookup<'a, 'b>(words: &'b [&'a str]) -> Option<(&'static Command, &'b [&'a str])> {
    COMMANDS
        .iter()
        .filter_map(|c| {
            let n = c.name.split(' ').count();
            (words.len() >= n && c.name.split(' ').eq(words[..n].iter().copied()))
                .then(|| (c, &words[n..]))
        })
        .max_by_key(|(c, _)| c.name.len())
}

/// A question that guards something irreversible.
enum Confirm {
    FactoryReset,
    Format,
    Apply(Box<Config>),
}

/// What the console is doing.
enum Mode {
    Command,
    Wizard(Box<Wizard>),
    Confirm(Confirm),
    Login,
    /// `config paste`: the lines so far.
    Paste(String),
}

/// Tab completion of command names and of `SERVICE/SERVER` arguments
/// (looked up only when Tab is pressed).
struct Commands {
    locked: bool,
}

impl Completer for Commands {
    fn complete(&self, before: &[&str], partial: &str) -> Vec<String> {
        let mut out: Vec<String> = COMMANDS
            .iter()
            .filter(|c| !self.locked || allowed_locked(c.cmd))
            .filter_map(|c| {
                let mut names = c.name.split(' ');
                before
                    .iter()
                    .all(|w| names.next() == Some(*w))
                    .then(|| names.next())
                    .flatten()
            })
            .filter(|w| w.starts_with(partial))
            .map(String::from)
            .collect();
        if let Some((cmd, args)) = lookup(before)
            && matches!(cmd.cmd, Cmd::Admin(_))
            && args.is_empty()
        {
            running::with(|config| {
                for v in &config.virtual_services {
                    for r in &v.real_servers {
                        let name = format!("{}/{}", v.label, r.label);
                        if name.starts_with(partial) {
                            out.push(name);
                        }
                    }
                }
            });
        }
        out
    }
}

/// `status`: the management snapshot (services, real servers, drops,
/// tables, NICs: the same the System Overview page shows) and the
/// console's own losses.
fn status(dp: &Datapath, nics: &Nics) -> Vec<String> {
    let mut st = crate::mgmt::snapshot(dp, nics);
    st.details.push(format!(
        "console: {} bytes of output dropped (serial line too slow)",
        crate::serial::dropped()
    ));
    st.details.push(format!(
        "mem: heap {} bytes used, {} free; l7 table {} bytes per connection, preallocated",
        crate::memory::heap_used(),
        crate::memory::heap_free(),
        dp.engine.l7_connections().bytes_per_flow()
    ));
    st.to_text().lines().map(String::from).collect()
}

fn mac_text(m: [u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// `show interfaces`: each NIC with its MAC, the address it runs with and
/// where that came from, its role and counters; then gateway and DNS.
fn interfaces(dp: &Datapath, nics: &Nics) -> Vec<String> {
    let mut out = Vec::new();
    let config = running::get_network();
    for i in 0..nics.len() {
        let (mac, stats) = nics.with(i, |n| (n.mac, n.stats));
        let setting = crate::netif::setting(i);
        let source = match (i, crate::netif::cmdline_override()) {
            (0, Some(_)) => "kernel command line",
            _ if setting.is_none() => "not configured",
            _ => "configuration",
        };
        let address = match (setting, dp.address(i)) {
            (Some(lb_core::cmdline::Ipv4Setting::Dhcp), Some((a, p))) => {
                format!("{a}/{p} (DHCP lease)")
            }
            (Some(lb_core::cmdline::Ipv4Setting::Dhcp), None) => String::from("DHCP, no lease yet"),
            (_, Some((a, p))) => format!("{a}/{p}"),
            (_, None) => String::from("no address"),
        };
        let role = config
            .interfaces
            .get(i)
            .map_or("external", |itf| match itf.role {
                lb_core::config::InterfaceRole::External => "external",
                lb_core::config::InterfaceRole::Internal => "internal",
            });
        out.push(format!(
            "eth{i} {} {address} from the {source}, {role}; rx={} tx={} dropped={} errors={}",
            mac_text(mac),
            stats.rx_frames,
            stats.tx_frames,
            stats.dropped(),
            stats.errors
        ));
    }
    out.push(match config.gateway {
        Some(g) => format!("default gateway {g}"),
        None => String::from("no default gateway"),
    });
    out.push(if config.dns.is_empty() {
        String::from("no DNS servers")
    } else {
        format!(
            "DNS servers {}",
            config
                .dns
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    });
    out
}

/// Prints `lines`, paced by the UART so none is dropped.
async fn print_lines(lines: impl IntoIterator<Item = String>) {
    for l in lines {
        println!("{l}");
        console::pace().await;
    }
}

/// Runs a PBKDF2 computation to its end, a slice per executor pass.
async fn derive(mut job: lb_core::password::Pbkdf2) -> [u8; 32] {
    loop {
        if let Some(k) = job.step(HASH_STEP) {
            return k;
        }
        crate::storage::yield_now().await;
    }
}

/// The (service, server) indices of `SERVICE/SERVER` in `config`.
fn find_server(config: &Config, target: &str) -> Result<(usize, usize), String> {
    let Some((svc, srv)) = target.split_once('/') else {
        return Err(format!(
            "{target}: give SERVICE/SERVER, e.g. DICOM-Modalities/DICOM1"
        ));
    };
    let si = config
        .virtual_services
        .iter()
        .position(|v| v.label == svc)
        .ok_or_else(|| format!("{svc}: no such virtual service"))?;
    let ri = config.virtual_services[si]
        .real_servers
        .iter()
        .position(|r| r.label == srv)
        .ok_or_else(|| format!("{srv}: no such real server in {svc}"))?;
    Ok((si, ri))
}

/// The console session.
struct Session {
    dp: &'static RefCell<Datapath>,
    nics: &'static Nics,
    mode: Mode,
    locked: bool,
}

impl Session {
    fn hostname(&self) -> String {
        running::with(|c| c.network.hostname.clone())
    }

    fn completer(&self) -> Box<dyn Completer> {
        match self.mode {
            Mode::Command => Box::new(Commands {
                locked: self.locked,
            }),
            _ => Box::new(NoCompletion),
        }
    }

    /// Shows the prompt of the current mode.
    fn prompt(&mut self) {
        match &self.mode {
            Mode::Command => {
                let lock = if self.locked { " (locked)" } else { "" };
                console::prompt(&format!("{}{lock}> ", self.hostname()), false);
            }
            Mode::Wizard(w) => match w.prompt() {
                Some(p) => {
                    if w.confirming() {
                        println!("settings:");
                        for l in w.summary() {
                            println!("{l}");
                        }
                    }
                    console::prompt(&p.text, p.secret);
                }
                None => {
                    self.mode = Mode::Command;
                    self.prompt();
                }
            },
            Mode::Confirm(c) => console::prompt(
                match c {
                    Confirm::FactoryReset => {
                        "erase the stored configuration and restart? type yes to confirm: "
                    }
                    Confirm::Format => "erase the whole config disk? type yes to confirm: ",
                    Confirm::Apply(_) => "apply and save? (y/n): ",
                },
                false,
            ),
            Mode::Login => console::prompt("password: ", true),
            Mode::Paste(_) => console::prompt("", false),
        }
    }

    fn start_wizard(&mut self) {
        let n = self.nics.len();
        let nics = (0..n).map(|i| format!("eth{i}")).collect();
        let settings = (0..n).map(crate::netif::setting).collect();
        println!(
            "Network set-up. Enter keeps the value in [brackets]; Ctrl-C leaves without changes."
        );
        self.mode = Mode::Wizard(Box::new(running::with(|c| Wizard::new(nics, settings, c))));
    }

    async fn on_line(&mut self, line: String) {
        match core::mem::replace(&mut self.mode, Mode::Command) {
            Mode::Command => self.command(&line).await,
            Mode::Wizard(mut w) => match w.answer(&line) {
                Answer::Next => self.mode = Mode::Wizard(w),
                Answer::Rejected(why) => {
                    println!("  {why}");
                    self.mode = Mode::Wizard(w);
                }
                Answer::Cancelled => println!("nothing changed"),
                Answer::Finished(settings) => self.apply_wizard(settings).await,
            },
            Mode::Confirm(c) => self.confirmed(c, &line).await,
            Mode::Login => self.login(&line).await,
            Mode::Paste(mut text) => {
                if line.trim() == "." {
                    self.pasted(&text).await;
                } else if text.len() + line.len() >= PASTE_MAX {
                    println!("error: config paste: over {PASTE_MAX} bytes; nothing changed");
                } else {
                    text.push_str(&line);
                    text.push('\n');
                    self.mode = Mode::Paste(text);
                }
            }
        }
    }

    fn on_interrupt(&mut self) {
        match core::mem::replace(&mut self.mode, Mode::Command) {
            Mode::Command => {}
            Mode::Wizard(_) | Mode::Confirm(_) | Mode::Paste(_) => println!("nothing changed"),
            Mode::Login => {}
        }
    }

    async fn on_end_of_input(&mut self) {
        if let Mode::Paste(text) = core::mem::replace(&mut self.mode, Mode::Command) {
            self.pasted(&text).await;
        }
    }

    async fn command(&mut self, line: &str) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.is_empty() {
            return;
        }
        let Some((cmd, args)) = lookup(&words) else {
            println!("unknown command: {} (try help)", words[0]);
            return;
        };
        if self.locked && !allowed_locked(cmd.cmd) {
            println!("the console is locked: type login");
            return;
        }
        self.run(cmd.cmd, args).await;
    }

    async fn run(&mut self, cmd: Cmd, args: &[&str]) {
        match cmd {
            Cmd::Status => {
                let lines = status(&self.dp.borrow(), self.nics);
                print_lines(lines).await;
            }
            Cmd::ShowConfig => {
                let mut lines: Vec<String> = Vec::new();
                if let Some(s) = crate::netif::cmdline_override() {
                    lines.push(format!(
                        "# eth0 runs on {s} from the kernel command line (ip=) this boot"
                    ));
                }
                lines.extend(running::with(to_toml).lines().map(String::from));
                print_lines(lines).await;
            }
            Cmd::ShowInterfaces => {
                let lines = interfaces(&self.dp.borrow(), self.nics);
                print_lines(lines).await;
            }
            Cmd::ShowArp => {
                let now = crate::datapath::now();
                let lines: Vec<String> = self
                    .dp
                    .borrow()
                    .arp
                    .entries(now)
                    .map(|(ip, mac, nic)| match mac {
                        Some(m) => format!("{ip:<15} {} eth{nic}", mac_text(m)),
                        None => format!("{ip:<15} (incomplete)      eth{nic}"),
                    })
                    .collect();
                if lines.is_empty() {
                    println!("the neighbour table is empty");
                }
                print_lines(lines).await;
            }
            Cmd::Ping => {
                let count = match args {
                    [_] => Some(4),
                    [_, n] => n.parse::<u16>().ok().filter(|n| (1..=100).contains(n)),
                    _ => None,
                };
                let target = args
                    .first()
                    .and_then(|a| a.parse::<core::net::Ipv4Addr>().ok());
                match (target, count) {
                    (Some(t), Some(n)) => crate::ping::ping(self.dp, self.nics, t, n).await,
                    _ => println!("usage: ping ADDRESS [COUNT 1-100], e.g. ping 10.12.1.1"),
                }
            }
            Cmd::Admin(state) => {
                let [target] = args else {
                    println!("usage: {} SERVICE/SERVER", admin_name(state));
                    return;
                };
                self.set_admin(target, state).await;
            }
            Cmd::Log => {
                let lines: Vec<String> = events::recent(LOG_LINES)
                    .iter()
                    .map(lb_core::mgmt::events::console_line)
                    .collect();
                if lines.is_empty() {
                    println!("no events yet");
                }
                print_lines(lines).await;
            }
            Cmd::Wizard => self.start_wizard(),
            Cmd::ConfigPaste => {
                println!("Paste the TOML config, then a line with only '.' (Ctrl-C cancels).");
                self.mode = Mode::Paste(String::new());
            }
            Cmd::Save => self.save().await,
            Cmd::StoreStatus => print_lines(storage::status()).await,
            Cmd::StoreFormat => self.mode = Mode::Confirm(Confirm::Format),
            Cmd::FactoryReset => self.mode = Mode::Confirm(Confirm::FactoryReset),
            Cmd::Reboot => {
                println!("rebooting");
                storage::idle().await;
                power::reboot().await;
            }
            Cmd::Poweroff => {
                self.drain_before_poweroff().await;
                println!("powering off");
                storage::idle().await;
                power::poweroff().await;
            }
            Cmd::Login => {
                if running::with(|c| c.network.management_password_hash.is_none()) {
                    println!("no console password is set (the wizard sets one)");
                } else if !self.locked {
                    println!("already logged in");
                } else {
                    self.mode = Mode::Login;
                }
            }
            Cmd::Logout => {
                if running::with(|c| c.network.management_password_hash.is_none()) {
                    println!("no console password is set (the wizard sets one)");
                } else {
                    self.locked = true;
                    println!("console locked");
                }
            }
            Cmd::Help => help(args),
        }
    }

    /// Poweroff drains first: new connections are refused, open
    /// associations get [`SHUTDOWN_DRAIN`] to end, the rest are aborted
    /// (A-ABORT to both peers) — the policy is lb-core's; this keeps
    /// asking it while the frame path runs.
    async fn drain_before_poweroff(&mut self) {
        use lb_core::engine::{SHUTDOWN_DRAIN, ShutdownStep};
        self.dp
            .borrow_mut()
            .engine
            .begin_shutdown(crate::datapath::now());
        let mut shown = None;
        loop {
            let step = self
                .dp
                .borrow_mut()
                .engine
                .shutdown_step(crate::datapath::now(), SHUTDOWN_DRAIN);
            if shown != Some(step) {
                match step {
                    ShutdownStep::PowerOff => {}
                    ShutdownStep::Draining { open } => println!(
                        "poweroff: {open} association(s) open, waiting up to {} s for them to end",
                        SHUTDOWN_DRAIN.millis() / 1000
                    ),
                    ShutdownStep::Aborting { open } => {
                        println!("poweroff: aborting {open} association(s) (A-ABORT)")
                    }
                }
                shown = Some(step);
            }
            if step == ShutdownStep::PowerOff {
                return;
            }
            Timer::after_millis(100).await;
        }
    }

    async fn save(&mut self) {
        crate::apply::save().await;
    }

    async fn set_admin(&mut self, target: &str, state: AdminState) {
        let (si, ri) = match running::with(|c| find_server(c, target)) {
            Ok(x) => x,
            Err(why) => {
                println!("error: {why}");
                return;
            }
        };
        self.dp.borrow_mut().set_server_admin(si, ri, state);
        running::update(|c| c.virtual_services[si].real_servers[ri].state = state);
        events::log(
            Severity::Notice,
            Category::Admin,
            format!("{target} {}", admin_name(state)),
        );
        self.save().await;
    }

    async fn apply_wizard(&mut self, settings: Settings) {
        let hash = match &settings.password {
            PasswordChange::Set(p) => {
                let mut salt = [0u8; SALT_LEN];
                rng::fill(&mut salt);
                let derived = derive(PasswordHash::begin(p, &salt)).await;
                Some(
                    PasswordHash {
                        iterations: lb_core::password::ITERATIONS,
                        salt: salt.to_vec(),
                        hash: derived,
                    }
                    .to_phc(),
                )
            }
            _ => None,
        };
        let mut config = running::get();
        settings.apply_to(&mut config, hash);
        if let Err(errs) = validate(&config) {
            for e in errs {
                println!("error: {e}");
            }
            println!("nothing changed");
            return;
        }
        crate::apply::addressing(self.dp, self.nics, settings.interface, settings.addressing);
        running::set(config);
        events::log(
            Severity::Notice,
            Category::Config,
            format!(
                "network settings applied: eth{} {}, dns {}, hostname {}",
                settings.interface,
                settings.addressing,
                settings
                    .dns
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                settings.hostname
            ),
        );
        self.save().await;
    }

    async fn confirmed(&mut self, c: Confirm, answer: &str) {
        let answer = answer.trim();
        match c {
            Confirm::FactoryReset if answer == "yes" => match storage::erase().await {
                Ok(()) => {
                    println!("store: erased (factory reset); restarting");
                    events::keep(
                        Severity::Notice,
                        Category::System,
                        String::from("store erased (factory reset); restarting"),
                    );
                    power::reboot().await;
                }
                Err(e) => println!("error: factory-reset: {e}"),
            },
            Confirm::Apply(config) if matches!(answer, "y" | "yes") => {
                match crate::apply::apply(self.dp, self.nics, *config, "the console").await {
                    // The data path's log already said what waits for a boot.
                    Ok(_) => self.save().await,
                    Err(e) => println!("error: config: {e}; nothing changed"),
                }
            }
            Confirm::Format if answer == "yes" => match storage::format().await {
                Ok(()) => {
                    println!("store: formatted; both slots empty");
                    events::keep(
                        Severity::Notice,
                        Category::System,
                        String::from("config disk formatted; both slots empty"),
                    );
                }
                Err(e) => println!("error: store format: {e}"),
            },
            _ => println!("nothing changed"),
        }
    }

    async fn login(&mut self, password: &str) {
        let stored = running::with(|c| c.network.management_password_hash.clone());
        let Some(hash) = stored.as_deref().and_then(|s| PasswordHash::parse(s).ok()) else {
            println!("error: the stored console password hash is unreadable; unlocked");
            self.locked = false;
            return;
        };
        let derived = derive(hash.begin_verify(password)).await;
        if hash.matches(&derived) {
            self.locked = false;
            println!("logged in");
        } else {
            Timer::after_millis(LOGIN_DELAY_MS).await;
            println!("wrong password");
        }
    }
}

/// Events `log` shows (the ring keeps more; `/api/events` has them all).
const LOG_LINES: usize = 100;

/// Largest config `config paste` takes.
const PASTE_MAX: usize = 512 * 1024;

impl Session {
    /// A pasted config: checked (every problem listed), its changes shown,
    /// then the question.
    async fn pasted(&mut self, text: &str) {
        let config = match from_toml(text) {
            Ok(c) => c,
            Err(e) => {
                print_lines(format!("error: {e}").lines().map(String::from)).await;
                println!("nothing changed");
                return;
            }
        };
        let changes = running::with(|old| lb_core::mgmt::diff::changes(old, &config));
        if changes.is_empty() {
            println!("no changes");
            return;
        }
        print_lines(changes.into_iter().map(|c| format!("  {c}"))).await;
        self.mode = Mode::Confirm(Confirm::Apply(Box::new(config)));
    }
}

fn help(args: &[&str]) {
    let wanted = args.join(" ");
    println!("commands:");
    for c in COMMANDS
        .iter()
        .filter(|c| wanted.is_empty() || c.name.starts_with(wanted.as_str()))
    {
        let name = if c.args.is_empty() {
            String::from(c.name)
        } else {
            format!("{} {}", c.name, c.args)
        };
        println!("  {name:<30} {}", c.help);
    }
}

/// Reads keys from COM1 and the keyboard and runs the console.
#[embassy_executor::task]
pub async fn console_task(
    dp: &'static RefCell<Datapath>,
    nics: &'static Nics,
    first_boot: bool,
    keyboard: bool,
) {
    // A missing UART reads 0xFF everywhere: never treat that as input.
    let serial = LINE_STATUS.read8() != 0xFF;
    let locked = running::with(|c| c.network.management_password_hash.is_some());
    let mut s = Session {
        dp,
        nics,
        mode: Mode::Command,
        locked,
    };
    if first_boot {
        println!("First boot: no stored configuration and no ip= on the command line.");
        s.start_wizard();
    }
    s.prompt();
    let mut ser = SerialDecoder::new();
    let mut kbd = Ps2Decoder::new();
    loop {
        let mut keys: Vec<Key> = Vec::new();
        if serial {
            for _ in 0..256 {
                if LINE_STATUS.read8() & 1 == 0 {
                    break;
                }
                if let Some(k) = ser.feed(DATA.read8()) {
                    keys.push(k);
                }
            }
        }
        if keyboard {
            keyboard::poll(|b| {
                if let Some(k) = kbd.feed(b) {
                    keys.push(k);
                }
            });
        }
        let busy = !keys.is_empty();
        for k in keys {
            let completer = s.completer();
            match console::key(k, &*completer) {
                Outcome::Editing => continue,
                Outcome::Line(line) => s.on_line(line).await,
                Outcome::Interrupt => s.on_interrupt(),
                Outcome::EndOfInput => s.on_end_of_input().await,
            }
            s.prompt();
        }
        Timer::after_millis(if busy { POLL_BUSY_MS } else { POLL_MS }).await;
    }
}
