//! TLS under the HTTP check (HTTPS negotiate checks), sans-IO.
//!
//! rustls's unbuffered client does the protocol: this layer hands it the
//! ciphertext the caller read, collects the ciphertext it must write and the
//! plaintext the server sent, and turns its errors into check failures a
//! hospital engineer can act on (the alert the server sent, what is wrong
//! with its certificate, which suites the appliance speaks).
//!
//! The crypto is RustCrypto's (pure Rust, builds for the soft-float kernel
//! target): TLS 1.2 and 1.3 with ECDHE (X25519, P-256, P-384) and AES-GCM or
//! ChaCha20-Poly1305, RSA, ECDSA and Ed25519 certificates. rustls has no RSA
//! key exchange, CBC or DHE suites; a server that offers only those answers
//! our hello with a `handshake_failure` alert, reported as "no cipher suite in
//! common".
//!
//! Certificates: `none` (the incumbents' default) takes any certificate but
//! still checks the handshake signature against it, so the check proves the
//! server holds the key it presents; `pin` additionally requires the leaf's
//! SHA-256; `ca` verifies the chain to the configured CA, the validity period
//! (against the caller's wall clock) and the name or address.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, UnbufferedClientConnection};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::time_provider::TimeProvider;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError};
use rustls::{AlertDescription, CertificateError, DigitallySignedStruct, Error, SignatureScheme};
use sha2::{Digest, Sha256};

use super::dialog::ParamsError;

/// A TLS record's largest ciphertext (16 KiB plaintext + expansion) plus a
/// header: the most ciphertext that may wait for the rest of its record.
const MAX_PENDING: usize = 16 * 1024 + 2048 + 5 + 1024;
/// Largest CA bundle accepted, in certificates.
pub const MAX_CA_CERTS: usize = 16;

/// How the server's certificate is judged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsVerify {
    /// Any certificate (its handshake signature is still checked).
    None,
    /// A chain to one of these CA certificates (DER), valid now, for the name.
    Ca(Vec<Vec<u8>>),
    /// The leaf certificate's SHA-256 must be this.
    Pin([u8; 32]),
}

/// TLS settings of an HTTPS check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsParams {
    pub verify: TlsVerify,
    /// DNS name (sent as SNI and checked with `ca`) or IP address (checked
    /// against the certificate's IP addresses with `ca`; no SNI).
    pub server_name: String,
}

impl TlsParams {
    pub(super) fn validate(&self) -> Result<(), ParamsError> {
        if ServerName::try_from(self.server_name.as_str()).is_err() {
            return Err(ParamsError::BadField("tls.server_name"));
        }
        if let TlsVerify::Ca(certs) = &self.verify
            && (certs.is_empty() || certs.len() > MAX_CA_CERTS || roots(certs).is_err())
        {
            return Err(ParamsError::BadField("tls.ca"));
        }
        Ok(())
    }
}

/// Parses PEM text into the DER certificates it holds (for `check_tls_ca`).
pub fn ca_from_pem(pem: &str) -> Result<Vec<Vec<u8>>, String> {
    use rustls::pki_types::pem::PemObject;
    let mut out = Vec::new();
    for item in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let der = item.map_err(|e| format!("not PEM certificates: {e:?}"))?;
        out.push(der.as_ref().to_vec());
        if out.len() > MAX_CA_CERTS {
            return Err(format!("more than {MAX_CA_CERTS} certificates"));
        }
    }
    if out.is_empty() {
        return Err("no -----BEGIN CERTIFICATE----- block".into());
    }
    roots(&out).map_err(|e| format!("not a usable CA certificate: {e}"))?;
    Ok(out)
}

/// Parses a SHA-256 pin: 64 hex digits, optionally separated by `:`.
pub fn pin_from_hex(text: &str) -> Option<[u8; 32]> {
    let digits: Vec<u8> = text.bytes().filter(|&b| b != b':').collect();
    if digits.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in digits.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

fn roots(certs: &[Vec<u8>]) -> Result<rustls::RootCertStore, Error> {
    let mut store = rustls::RootCertStore::empty();
    for c in certs {
        store.add(CertificateDer::from(c.clone()))?;
    }
    Ok(store)
}

/// Why the TLS layer failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsFailure {
    /// The server sent a fatal alert (its RFC 8446 name) during the handshake.
    Alert(String),
    /// The server sent a fatal alert after the handshake.
    AlertAfterHandshake(String),
    /// The certificate was refused (`ca`): why.
    Certificate(String),
    /// The leaf's SHA-256 is not the pinned one; the hex of what it is.
    PinMismatch(String),
    /// The server chose something we did not offer or cannot do.
    Incompatible(String),
    /// Anything else rustls reported.
    Protocol(String),
    /// A record longer than TLS allows.
    RecordTooLarge,
}

/// What the appliance offers, for reasons that say why a server shares none of it.
const OFFER: &str = "the appliance offers TLS 1.2/1.3 with ECDHE and AES-GCM or ChaCha20-Poly1305 only; RSA key exchange, CBC and DHE suites are not supported";

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsFailure::Alert(a) => {
                write!(f, "server sent alert {a} during the handshake")?;
                match a.as_str() {
                    "handshake_failure" | "insufficient_security" => {
                        write!(f, ": no cipher suite in common ({OFFER})")
                    }
                    "protocol_version" => f.write_str(
                        ": no TLS version in common (the appliance speaks TLS 1.2 and 1.3)",
                    ),
                    _ => Ok(()),
                }
            }
            TlsFailure::AlertAfterHandshake(a) => write!(f, "server sent alert {a}"),
            TlsFailure::Certificate(why) => write!(f, "certificate refused: {why}"),
            TlsFailure::PinMismatch(got) => {
                write!(
                    f,
                    "certificate does not match the pin (its SHA-256 is {got})"
                )
            }
            TlsFailure::Incompatible(why) => write!(f, "{why} ({OFFER})"),
            TlsFailure::Protocol(why) => f.write_str(why),
            TlsFailure::RecordTooLarge => f.write_str("record larger than TLS allows"),
        }
    }
}

/// RFC 8446 names of the alerts servers send to clients.
fn alert_name(a: AlertDescription) -> String {
    let known = match a {
        AlertDescription::CloseNotify => "close_notify",
        AlertDescription::UnexpectedMessage => "unexpected_message",
        AlertDescription::BadRecordMac => "bad_record_mac",
        AlertDescription::RecordOverflow => "record_overflow",
        AlertDescription::HandshakeFailure => "handshake_failure",
        AlertDescription::BadCertificate => "bad_certificate",
        AlertDescription::UnsupportedCertificate => "unsupported_certificate",
        AlertDescription::CertificateRevoked => "certificate_revoked",
        AlertDescription::CertificateExpired => "certificate_expired",
        AlertDescription::CertificateUnknown => "certificate_unknown",
        AlertDescription::IllegalParameter => "illegal_parameter",
        AlertDescription::UnknownCA => "unknown_ca",
        AlertDescription::AccessDenied => "access_denied",
        AlertDescription::DecodeError => "decode_error",
        AlertDescription::DecryptError => "decrypt_error",
        AlertDescription::ProtocolVersion => "protocol_version",
        AlertDescription::InsufficientSecurity => "insufficient_security",
        AlertDescription::InternalError => "internal_error",
        AlertDescription::InappropriateFallback => "inappropriate_fallback",
        AlertDescription::UserCanceled => "user_canceled",
        AlertDescription::MissingExtension => "missing_extension",
        AlertDescription::UnsupportedExtension => "unsupported_extension",
        AlertDescription::UnrecognisedName => "unrecognized_name",
        AlertDescription::UnknownPSKIdentity => "unknown_psk_identity",
        AlertDescription::CertificateRequired => "certificate_required",
        AlertDescription::NoApplicationProtocol => "no_application_protocol",
        other => return format!("{}", u8::from(other)),
    };
    known.to_string()
}

fn certificate_reason(e: &CertificateError) -> String {
    match e {
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired".into(),
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "not valid yet (or the appliance's clock is wrong)".into()
        }
        CertificateError::UnknownIssuer => "not issued by the configured CA".into(),
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            "not valid for the server's name or address".into()
        }
        CertificateError::BadSignature => "bad signature".into(),
        CertificateError::BadEncoding => "malformed".into(),
        CertificateError::Revoked => "revoked".into(),
        other => format!("{other:?}"),
    }
}

fn failure(e: Error, handshaking: bool, seen: &SeenLeaf) -> TlsFailure {
    match e {
        Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure) => {
            TlsFailure::PinMismatch(hex(&seen.load()))
        }
        Error::AlertReceived(a) if handshaking => TlsFailure::Alert(alert_name(a)),
        Error::AlertReceived(a) => TlsFailure::AlertAfterHandshake(alert_name(a)),
        Error::InvalidCertificate(c) => TlsFailure::Certificate(certificate_reason(&c)),
        Error::NoCertificatesPresented => TlsFailure::Certificate("none presented".into()),
        Error::PeerIncompatible(p) => {
            TlsFailure::Incompatible(format!("server incompatible: {p:?}"))
        }
        Error::PeerSentOversizedRecord => TlsFailure::RecordTooLarge,
        other => TlsFailure::Protocol(format!("{other}")),
    }
}

/// The SHA-256 of a leaf that failed the pin, left by the verifier for the
/// failure reason (rustls's error cannot carry it without `std`).
#[derive(Debug, Default)]
struct SeenLeaf([AtomicU64; 4]);

impl SeenLeaf {
    fn store(&self, digest: &[u8; 32]) {
        for (slot, word) in self.0.iter().zip(digest.chunks(8)) {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            slot.store(u64::from_be_bytes(w), Ordering::Relaxed);
        }
    }

    fn load(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (slot, word) in self.0.iter().zip(out.chunks_mut(8)) {
            word.copy_from_slice(&slot.load(Ordering::Relaxed).to_be_bytes());
        }
        out
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// `none` and `pin`: any certificate (or the pinned one), but the handshake
/// must be signed with its key.
#[derive(Debug)]
struct KeyHolderVerifier {
    pin: Option<[u8; 32]>,
    seen: Arc<SeenLeaf>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for KeyHolderVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        if let Some(pin) = self.pin {
            let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
            if got != pin {
                self.seen.store(&got);
                return Err(Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                ));
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The caller's wall clock at the start of the check (certificate validity).
#[derive(Debug)]
struct WallClock(Option<u64>);

impl TimeProvider for WallClock {
    fn current_time(&self) -> Option<UnixTime> {
        // Without a clock, `none` and `pin` still work: they ignore validity.
        Some(UnixTime::since_unix_epoch(core::time::Duration::from_secs(
            self.0.unwrap_or(0),
        )))
    }
}

/// RustCrypto's provider without its private-key loader: a client that
/// never authenticates itself needs no signing code (about 100 KiB of RSA
/// and ECDSA signing left out of the kernel).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(CryptoProvider {
        key_provider: &NoKeys,
        ..rustls_rustcrypto::provider()
    })
}

#[derive(Debug)]
struct NoKeys;

impl rustls::crypto::KeyProvider for NoKeys {
    fn load_private_key(
        &self,
        _key: rustls::pki_types::PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn rustls::sign::SigningKey>, Error> {
        Err(Error::General(
            "the health checker has no private keys".into(),
        ))
    }
}

fn client_config(
    p: &TlsParams,
    wall_clock: Option<u64>,
    seen: &Arc<SeenLeaf>,
) -> Result<rustls::ClientConfig, Error> {
    let provider = provider();
    let algorithms = provider.signature_verification_algorithms;
    let builder =
        rustls::ClientConfig::builder_with_details(provider, Arc::new(WallClock(wall_clock)))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let mut config = match &p.verify {
        TlsVerify::Ca(certs) => builder
            .with_root_certificates(roots(certs)?)
            .with_no_client_auth(),
        TlsVerify::None | TlsVerify::Pin(_) => {
            let pin = match p.verify {
                TlsVerify::Pin(pin) => Some(pin),
                _ => None,
            };
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(KeyHolderVerifier {
                    pin,
                    seen: seen.clone(),
                    algorithms,
                }))
                .with_no_client_auth()
        }
    };
    // Every check is a full handshake: that is what it must prove works.
    config.resumption = Resumption::disabled();
    Ok(config)
}

/// What [`TlsLayer::receive`] found.
#[derive(Debug, Default)]
pub(super) struct Received {
    /// Ciphertext to write to the server (handshake messages).
    pub send: Vec<u8>,
    /// Application data from the server.
    pub plaintext: Vec<u8>,
    /// The handshake completed during this call.
    pub established: bool,
    /// The server sent close_notify.
    pub peer_closed: bool,
}

/// A TLS client connection driven by the bytes the caller moves.
pub(super) struct TlsLayer {
    conn: UnbufferedClientConnection,
    incoming: Vec<u8>,
    established: bool,
    seen: Arc<SeenLeaf>,
}

impl fmt::Debug for TlsLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsLayer")
            .field("pending", &self.incoming.len())
            .field("established", &self.established)
            .finish()
    }
}

impl TlsLayer {
    pub(super) fn new(p: &TlsParams, wall_clock: Option<u64>) -> Result<TlsLayer, TlsFailure> {
        let protocol = |e: Error| TlsFailure::Protocol(format!("{e}"));
        let name = ServerName::try_from(p.server_name.clone())
            .map_err(|_| TlsFailure::Protocol("invalid server name".into()))?;
        let seen = Arc::new(SeenLeaf::default());
        let config = client_config(p, wall_clock, &seen).map_err(protocol)?;
        let conn = UnbufferedClientConnection::new(Arc::new(config), name).map_err(protocol)?;
        Ok(TlsLayer {
            conn,
            incoming: Vec::new(),
            established: false,
            seen,
        })
    }

    pub(super) fn is_established(&self) -> bool {
        self.established
    }

    /// The client hello (call once, before any data arrives).
    pub(super) fn start(&mut self) -> Result<Vec<u8>, TlsFailure> {
        Ok(self.receive(&[])?.send)
    }

    /// Feeds ciphertext from the server; runs the connection as far as it goes.
    pub(super) fn receive(&mut self, data: &[u8]) -> Result<Received, TlsFailure> {
        if self.incoming.len() + data.len() > MAX_PENDING {
            return Err(TlsFailure::RecordTooLarge);
        }
        self.incoming.extend_from_slice(data);
        let mut out = Received::default();
        loop {
            let handshaking = !self.established;
            let status = self.conn.process_tls_records(&mut self.incoming);
            let discard = status.discard;
            let state = status
                .state
                .map_err(|e| failure(e, handshaking, &self.seen))?;
            let mut stop = false;
            match state {
                ConnectionState::ReadTraffic(mut r) => {
                    while let Some(record) = r.next_record() {
                        let record = record.map_err(|e| failure(e, handshaking, &self.seen))?;
                        out.plaintext.extend_from_slice(record.payload);
                    }
                }
                ConnectionState::EncodeTlsData(mut e) => encode_into(&mut out.send, |buf| {
                    e.encode(buf).map_err(|err| match err {
                        EncodeError::InsufficientSize(s) => Some(s.required_size),
                        EncodeError::AlreadyEncoded => None,
                    })
                })?,
                // Queued in `out.send`, which the caller writes in order.
                ConnectionState::TransmitTlsData(t) => t.done(),
                ConnectionState::BlockedHandshake => stop = true,
                ConnectionState::WriteTraffic(_) => {
                    if !self.established {
                        self.established = true;
                        out.established = true;
                    }
                    stop = true;
                }
                ConnectionState::PeerClosed | ConnectionState::Closed => {
                    out.peer_closed = true;
                    stop = true;
                }
                // Early data is a server-side state.
                _ => stop = true,
            }
            self.incoming.drain(..discard);
            if stop {
                return Ok(out);
            }
        }
    }

    /// Encrypts application data (only once established).
    pub(super) fn encrypt(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, TlsFailure> {
        let mut out = Vec::new();
        let status = self.conn.process_tls_records(&mut []);
        match status.state.map_err(|e| failure(e, false, &self.seen))? {
            ConnectionState::WriteTraffic(mut w) => {
                encode_into(&mut out, |buf| {
                    w.encrypt(plaintext, buf).map_err(|err| match err {
                        EncryptError::InsufficientSize(s) => Some(s.required_size),
                        _ => None,
                    })
                })?;
                Ok(out)
            }
            other => Err(TlsFailure::Protocol(format!(
                "cannot send the request in state {other:?}"
            ))),
        }
    }
}

/// Runs `encode` into the tail of `out`, growing it as rustls asks.
fn encode_into(
    out: &mut Vec<u8>,
    mut encode: impl FnMut(&mut [u8]) -> Result<usize, Option<usize>>,
) -> Result<(), TlsFailure> {
    let start = out.len();
    let mut room = 512;
    loop {
        out.resize(start + room, 0);
        match encode(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(Some(need)) if need > room && need <= MAX_PENDING * 2 => room = need,
            Err(_) => {
                out.truncate(start);
                return Err(TlsFailure::Protocol("cannot encode a TLS record".into()));
            }
        }
    }
}

/// Boxed so a plain HTTP check does not carry the connection's size.
pub(super) type BoxedTls = Box<TlsLayer>;

#[cfg(test)]
mod tests {
    use super::super::dialog::{Action, CheckKind, CheckParams, Dialog};
    use super::super::http::{HttpParams, StatusAccept};
    use super::super::verdict::{FailReason, Phase, Verdict};
    use super::*;
    use crate::time::{Duration, Instant};
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    use rustls::{ServerConfig, ServerConnection};
    use std::io::{Read, Write};

    const CA: &str = include_str!("../../testdata/health/tls/ca.pem");
    const OTHER_CA: &str = include_str!("../../testdata/health/tls/other-ca.pem");
    const RSA: (&str, &str, &str) = (
        include_str!("../../testdata/health/tls/rsa.pem"),
        include_str!("../../testdata/health/tls/rsa.key"),
        include_str!("../../testdata/health/tls/rsa.sha256"),
    );
    const ECDSA: (&str, &str, &str) = (
        include_str!("../../testdata/health/tls/ecdsa.pem"),
        include_str!("../../testdata/health/tls/ecdsa.key"),
        include_str!("../../testdata/health/tls/ecdsa.sha256"),
    );
    const PAGE: &[u8] =
        b"HTTP/1.1 200 OK\r\nContent-Length: 19\r\nConnection: close\r\n\r\nviewer: OK-HEALTHY\n";

    fn server(
        (cert, key, _): (&str, &str, &str),
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<ServerConfig> {
        let chain = alloc::vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let cfg = ServerConfig::builder_with_provider(Arc::new(rustls_rustcrypto::provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        Arc::new(cfg)
    }

    fn check(verify: TlsVerify, name: &str, expect: &str) -> CheckParams {
        CheckParams {
            kind: CheckKind::Https(
                HttpParams {
                    host: "viewer.test".into(),
                    path: "/".into(),
                    accept: StatusAccept::Success,
                    expect: expect.into(),
                },
                TlsParams {
                    verify,
                    server_name: name.into(),
                },
            ),
            timeout: Duration::from_secs(5),
        }
    }

    fn now_secs() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    /// Runs the check against an in-process server; `chunk` splits what the
    /// server sends, as TCP may.
    fn run(server: Arc<ServerConfig>, params: &CheckParams, chunk: usize) -> Verdict {
        let mut s = ServerConnection::new(server).unwrap();
        let mut d = Dialog::new(params, 1).unwrap().with_wall_clock(now_secs());
        assert_eq!(d.start(Instant(0)), Action::Connect);
        let mut action = d.on_connected(Instant(1));
        let mut request = Vec::new();
        let mut answered = false;
        for _ in 0..100 {
            let bytes = match action {
                Action::Done(v) => return v,
                Action::Send(b) => b,
                Action::Wait => Vec::new(),
                Action::Connect => panic!("connect twice"),
            };
            s.read_tls(&mut &bytes[..]).unwrap();
            let _ = s.process_new_packets();
            let mut plain = [0u8; 1024];
            if let Ok(n) = s.reader().read(&mut plain) {
                request.extend_from_slice(&plain[..n]);
            }
            if !answered && request.windows(4).any(|w| w == b"\r\n\r\n") {
                assert!(request.starts_with(b"GET / HTTP/1.1\r\nHost: viewer.test\r\n"));
                s.writer().write_all(PAGE).unwrap();
                answered = true;
            }
            let mut out = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut out).unwrap();
            }
            if out.is_empty() {
                action = d.on_closed(Instant(3));
                continue;
            }
            action = Action::Wait;
            for piece in out.chunks(chunk) {
                match d.on_data(piece, Instant(2)) {
                    Action::Wait => {}
                    Action::Send(b) => {
                        action = Action::Send(b);
                    }
                    done => {
                        action = done;
                        break;
                    }
                }
            }
        }
        panic!("dialog did not finish")
    }

    fn tls_fail(e: TlsFailure) -> Verdict {
        Verdict::Fail(FailReason::Tls(e))
    }

    #[test]
    fn tls12_and_tls13_with_rsa_and_ecdsa_pass() {
        for cert in [RSA, ECDSA] {
            for versions in [
                &[&rustls::version::TLS12][..],
                &[&rustls::version::TLS13][..],
            ] {
                for chunk in [1, 7, 1500, 100_000] {
                    let v = run(
                        server(cert, versions),
                        &check(TlsVerify::None, "127.0.0.1", "OK-HEALTHY"),
                        chunk,
                    );
                    assert_eq!(v, Verdict::Pass, "{versions:?} chunk {chunk}");
                }
            }
        }
    }

    #[test]
    fn missing_text_fails_after_the_handshake() {
        let v = run(
            server(ECDSA, &[&rustls::version::TLS13]),
            &check(TlsVerify::None, "127.0.0.1", "DEGRADED"),
            512,
        );
        assert_eq!(
            v,
            Verdict::Fail(FailReason::Http(
                super::super::HttpFailure::ExpectedTextMissing
            ))
        );
    }

    #[test]
    fn ca_verification() {
        let ca = ca_from_pem(CA).unwrap();
        let tls12 = &[&rustls::version::TLS12][..];
        for (name, cert) in [("viewer.test", RSA), ("127.0.0.1", ECDSA)] {
            let v = run(
                server(cert, tls12),
                &check(TlsVerify::Ca(ca.clone()), name, "OK"),
                900,
            );
            assert_eq!(v, Verdict::Pass, "{name}");
        }
        let other = ca_from_pem(OTHER_CA).unwrap();
        let v = run(
            server(RSA, tls12),
            &check(TlsVerify::Ca(other), "viewer.test", "OK"),
            900,
        );
        assert_eq!(
            v,
            tls_fail(TlsFailure::Certificate(
                "not issued by the configured CA".into()
            ))
        );
        let v = run(
            server(RSA, tls12),
            &check(TlsVerify::Ca(ca), "pacs.test", "OK"),
            900,
        );
        assert_eq!(
            v,
            tls_fail(TlsFailure::Certificate(
                "not valid for the server's name or address".into()
            ))
        );
        assert_eq!(
            v.to_string(),
            "fail: TLS certificate refused: not valid for the server's name or address"
        );
    }

    #[test]
    fn ca_needs_the_wall_clock() {
        let ca = ca_from_pem(CA).unwrap();
        let params = check(TlsVerify::Ca(ca), "viewer.test", "OK");
        let mut s = ServerConnection::new(server(RSA, &[&rustls::version::TLS13])).unwrap();
        // No wall clock: 1970, before the certificate's validity.
        let mut d = Dialog::new(&params, 1).unwrap();
        d.start(Instant(0));
        let Action::Send(hello) = d.on_connected(Instant(1)) else {
            panic!()
        };
        s.read_tls(&mut &hello[..]).unwrap();
        s.process_new_packets().unwrap();
        let mut out = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut out).unwrap();
        }
        let Action::Done(Verdict::Fail(FailReason::Tls(TlsFailure::Certificate(why)))) =
            d.on_data(&out, Instant(2))
        else {
            panic!()
        };
        assert!(why.starts_with("not valid yet"), "{why}");
    }

    #[test]
    fn pin() {
        for cert in [RSA, ECDSA] {
            let pin = pin_from_hex(cert.2.trim()).unwrap();
            let v = run(
                server(cert, &[&rustls::version::TLS12]),
                &check(TlsVerify::Pin(pin), "127.0.0.1", "OK"),
                333,
            );
            assert_eq!(v, Verdict::Pass);
        }
        let wrong = pin_from_hex(ECDSA.2.trim()).unwrap();
        let v = run(
            server(RSA, &[&rustls::version::TLS13]),
            &check(TlsVerify::Pin(wrong), "127.0.0.1", "OK"),
            333,
        );
        assert_eq!(v, tls_fail(TlsFailure::PinMismatch(RSA.2.trim().into())));
    }

    #[test]
    fn alerts_are_named_with_their_meaning() {
        let e = TlsFailure::Alert("handshake_failure".into());
        assert!(e.to_string().contains("no cipher suite in common"), "{e}");
        assert!(e.to_string().contains("CBC"), "{e}");
        let e = TlsFailure::Alert("protocol_version".into());
        assert!(e.to_string().contains("no TLS version in common"), "{e}");
        assert_eq!(
            alert_name(AlertDescription::UnrecognisedName),
            "unrecognized_name"
        );
    }

    #[test]
    fn server_closing_or_silent_during_the_handshake() {
        let params = check(TlsVerify::None, "127.0.0.1", "OK");
        let mut d = Dialog::new(&params, 1).unwrap();
        d.start(Instant(0));
        assert!(matches!(d.on_connected(Instant(1)), Action::Send(_)));
        assert_eq!(
            d.on_closed(Instant(2)),
            Action::Done(Verdict::Fail(FailReason::Closed(Phase::TlsHandshake)))
        );
        let mut d = Dialog::new(&params, 1).unwrap();
        d.start(Instant(0));
        d.on_connected(Instant(1));
        assert_eq!(
            d.on_timeout(Instant(5000)),
            Action::Done(Verdict::Fail(FailReason::Timeout(Phase::TlsHandshake)))
        );
    }

    #[test]
    fn garbage_and_oversized_records_fail_cleanly() {
        let params = check(TlsVerify::None, "127.0.0.1", "OK");
        let mut d = Dialog::new(&params, 1).unwrap();
        d.start(Instant(0));
        d.on_connected(Instant(1));
        let a = d.on_data(b"HTTP/1.1 400 Bad Request\r\n\r\n", Instant(2));
        assert!(
            matches!(a, Action::Done(Verdict::Fail(FailReason::Tls(_)))),
            "{a:?}"
        );
        let mut d = Dialog::new(&params, 1).unwrap();
        d.start(Instant(0));
        d.on_connected(Instant(1));
        // A handshake record header announcing 16 KiB, then never the end.
        let mut a = d.on_data(&[22, 3, 3, 0x40, 0x00], Instant(2));
        let filler = [0u8; 4096];
        for _ in 0..8 {
            if a != Action::Wait {
                break;
            }
            a = d.on_data(&filler, Instant(2));
        }
        assert!(
            matches!(a, Action::Done(Verdict::Fail(FailReason::Tls(_)))),
            "{a:?}"
        );
    }

    #[test]
    fn pem_and_pin_parsing() {
        assert_eq!(ca_from_pem(CA).unwrap().len(), 1);
        let two = alloc::format!("{CA}{OTHER_CA}");
        assert_eq!(ca_from_pem(&two).unwrap().len(), 2);
        assert!(ca_from_pem("hello").is_err());
        assert!(
            ca_from_pem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").is_err()
        );
        let hex = RSA.2.trim();
        let colons: String = hex
            .as_bytes()
            .chunks(2)
            .map(|c| core::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(pin_from_hex(hex), pin_from_hex(&colons));
        assert!(pin_from_hex(&hex[1..]).is_none());
        assert!(pin_from_hex(&hex.replace('a', "g")).is_none() || !hex.contains('a'));
    }
}
