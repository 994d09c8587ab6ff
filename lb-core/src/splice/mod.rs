//! Layer 7 (TCP mode) as TCP splicing: the pieces of the relay that are
//! about TCP itself. The engine ([`crate::engine`]) owns the connections
//! and decides; this module says what a segment means and how it changes.
//!
//! # How a connection goes (delayed binding)
//! 1. A client SYN to VIP:port is answered by the appliance: SYN-ACK from
//!    the VIP with an ISN `a` made by [`cookie::Cookies`], MSS 1460, SACK
//!    and window scaling (shift [`OUR_WSCALE`]) only if the client offered
//!    them, **no timestamps** (this version does not translate TSval/TSecr,
//!    so it does not negotiate them on either side). Below the half-open
//!    threshold a table entry remembers the handshake; above it nothing is
//!    stored and the ISN is a SYN cookie.
//! 2. The client's ACK completes it. The engine picks a real server exactly
//!    as for L4 (persistence, scheduler, failover mode, limits), allocates
//!    a source port (or keeps the client's address when transparent) and
//!    sends the server a SYN with the client's MSS, SACK-permitted and
//!    window shift and ISN `c − p` (`c` the client's ISN, `p` the PROXY
//!    header length): client→server sequence numbers then need no change,
//!    and the PROXY header fills exactly the `p` bytes before the client's
//!    first byte. Client data that arrives meanwhile is held (bounded,
//!    never acknowledged, so dropping it is always safe).
//! 3. A server that resets or stays silent past `connect_timeout` (the SYN
//!    is resent every second meanwhile) is replaced by the next eligible
//!    one, `retries` times; the client sees nothing. When all fail the
//!    client gets a RST.
//! 4. The server's SYN-ACK (ISN `s`) is acknowledged, carrying the PROXY
//!    header if configured (resent on the relay's timer until the server
//!    acknowledges it; it is rebuilt from the entry, not buffered); held
//!    data is released; from then on every segment is rewritten in place
//!    ([`segment::edit`]): addresses and ports; server→client sequence
//!    numbers `+ (a − s)`, client→server acknowledgements and SACK blocks
//!    `− (a − s)`; windows rescaled between the shifts each side uses;
//!    incremental checksums. Flow control and retransmission stay end to
//!    end: nothing is buffered after the handshake.
//! 5. FIN passes through both ways (half-close works); RST passes through
//!    and ends the connection; idle past `client_timeout` (no segment from
//!    the client) or `server_timeout` (none from the server) resets both
//!    sides with sequence numbers each accepts. After both FINs are
//!    acknowledged, or after a RST, the entry lingers a little (the L4
//!    `tcp_reset_timeout`) so late segments are still recognised.

pub mod conn;
pub mod cookie;
pub mod options;
pub mod proxy;
pub mod segment;

pub use conn::{Conn, Phase};
pub use cookie::Cookies;
pub use options::SynOptions;
pub use proxy::ProxyRepr;
pub use segment::{Edit, Originate, Seg};

/// The window shift the appliance offers clients that offer one.
pub const OUR_WSCALE: u8 = 7;
/// The MSS the appliance offers clients (Ethernet MTU − 40).
pub const OUR_MSS: u16 = 1460;
/// The window of the SYN-ACK to a client: the most early data the relay
/// holds for one connection before the server answers.
pub const HOLD_PER_CONN: u16 = 4096;
/// Most early segments held for one connection.
pub const HOLD_SEGMENTS: u8 = 4;
