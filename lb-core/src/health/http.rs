//! HTTP/1.1 GET check: status class and expected text in the body.
//!
//! Transport-agnostic (HTTPS feeds the same machine plaintext). The header is
//! buffered up to [`MAX_HEAD`]; the body is never buffered: it is decoded
//! (content-length, chunked, or until close) and scanned for the expected
//! text as it streams past, so the check passes as soon as the text is seen.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use super::dialog::{ParamsError, Step};
use super::verdict::{FailReason, Phase, Verdict};

/// Largest response header accepted.
pub const MAX_HEAD: usize = 8 * 1024;
/// Most body bytes scanned for the expected text before giving up.
pub const MAX_BODY: u64 = 1024 * 1024;
/// Longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 256;
/// Longest host, path or expected text accepted in the parameters.
const MAX_PARAM: usize = 1024;

/// Which status codes count as healthy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusAccept {
    /// 200..=299.
    Success,
    /// 200..=399.
    SuccessOrRedirect,
    /// This code only.
    Exactly(u16),
}

impl StatusAccept {
    pub fn accepts(self, status: u16) -> bool {
        match self {
            StatusAccept::Success => (200..300).contains(&status),
            StatusAccept::SuccessOrRedirect => (200..400).contains(&status),
            StatusAccept::Exactly(s) => s == status,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpParams {
    /// Value of the Host header.
    pub host: String,
    /// Request target, starting with `/`.
    pub path: String,
    pub accept: StatusAccept,
    /// Text the body must contain; empty means any body.
    pub expect: String,
}

impl HttpParams {
    pub(super) fn validate(&self) -> Result<(), ParamsError> {
        let clean = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
        if self.host.is_empty() || self.host.len() > MAX_PARAM || !clean(&self.host) {
            return Err(ParamsError::BadField("http.host"));
        }
        if !self.path.starts_with('/') || self.path.len() > MAX_PARAM || !clean(&self.path) {
            return Err(ParamsError::BadField("http.path"));
        }
        if self.expect.len() > MAX_PARAM {
            return Err(ParamsError::BadField("http.expect"));
        }
        if let StatusAccept::Exactly(s) = self.accept
            && !(100..=999).contains(&s)
        {
            return Err(ParamsError::BadField("http.accept"));
        }
        Ok(())
    }
}

/// Why an HTTP check failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpFailure {
    HeadTooLarge,
    BadStatusLine,
    BadHeader,
    BadContentLength,
    BadChunk,
    /// The status code is not one the check accepts.
    Status(u16),
    /// The whole body was read and the expected text is not in it.
    ExpectedTextMissing,
    /// [`MAX_BODY`] bytes were scanned without finding the expected text.
    BodyTooLarge,
}

impl fmt::Display for HttpFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpFailure::HeadTooLarge => write!(f, "response header larger than {MAX_HEAD} bytes"),
            HttpFailure::BadStatusLine => f.write_str("malformed status line"),
            HttpFailure::BadHeader => f.write_str("malformed header line"),
            HttpFailure::BadContentLength => f.write_str("invalid Content-Length"),
            HttpFailure::BadChunk => f.write_str("malformed chunked encoding"),
            HttpFailure::Status(s) => write!(f, "status {s} not accepted"),
            HttpFailure::ExpectedTextMissing => {
                f.write_str("body does not contain the expected text")
            }
            HttpFailure::BodyTooLarge => {
                write!(f, "expected text not in the first {MAX_BODY} body bytes")
            }
        }
    }
}

/// Finds a needle in a stream of slices, across slice boundaries.
#[derive(Debug)]
struct Finder {
    needle: Vec<u8>,
    /// The last `needle.len() - 1` bytes seen, for matches that straddle.
    tail: Vec<u8>,
}

impl Finder {
    fn feed(&mut self, chunk: &[u8]) -> bool {
        let n = self.needle.len();
        if n == 0 {
            return true;
        }
        let mut window = core::mem::take(&mut self.tail);
        window.extend_from_slice(chunk);
        if window.windows(n).any(|w| w == self.needle.as_slice()) {
            return true;
        }
        let keep = window.len().min(n - 1);
        self.tail = window.split_off(window.len() - keep);
        false
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading the chunk-size line; counts its length.
    Size {
        len: usize,
        value: u64,
        digits: bool,
        ext: bool,
    },
    Data(u64),
    /// After a chunk's data: expecting CRLF.
    DataEnd {
        cr: bool,
    },
    /// After the last chunk: trailer lines until an empty one.
    Trailer {
        len: usize,
    },
}

#[derive(Debug)]
enum Body {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
}

#[derive(Debug)]
enum Stage {
    Head(Vec<u8>),
    Body(Body),
}

#[derive(Debug)]
pub(super) struct HttpCheck {
    request: Vec<u8>,
    accept: StatusAccept,
    finder: Finder,
    stage: Stage,
    /// Body bytes scanned so far.
    scanned: u64,
    found: bool,
}

enum Progress {
    More,
    Complete,
    Failed(HttpFailure),
}

impl HttpCheck {
    pub(super) fn new(p: &HttpParams) -> Self {
        let mut request = Vec::with_capacity(96 + p.host.len() + p.path.len());
        for part in [
            "GET ",
            &p.path,
            " HTTP/1.1\r\nHost: ",
            &p.host,
            "\r\nUser-Agent: lb-health\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        ] {
            request.extend_from_slice(part.as_bytes());
        }
        HttpCheck {
            request,
            accept: p.accept,
            finder: Finder {
                needle: p.expect.as_bytes().to_vec(),
                tail: Vec::new(),
            },
            stage: Stage::Head(Vec::new()),
            scanned: 0,
            found: false,
        }
    }

    pub(super) fn request(&self) -> Vec<u8> {
        self.request.clone()
    }

    pub(super) fn phase(&self) -> Phase {
        match self.stage {
            Stage::Head(_) => Phase::HttpResponse,
            Stage::Body(_) => Phase::HttpBody,
        }
    }

    pub(super) fn on_data(&mut self, data: &[u8]) -> Step {
        let mut data = data;
        // Loop because a 1xx interim response is followed by the real one.
        loop {
            match &mut self.stage {
                Stage::Head(buf) => {
                    let old = buf.len();
                    let take = data.len().min(MAX_HEAD + 4 - old);
                    buf.extend_from_slice(&data[..take]);
                    let Some(end) = head_end(buf, old) else {
                        if buf.len() >= MAX_HEAD {
                            return Step::Done(HttpFailure::HeadTooLarge.into());
                        }
                        return Step::Wait;
                    };
                    if end > MAX_HEAD {
                        return Step::Done(HttpFailure::HeadTooLarge.into());
                    }
                    let head = match parse_head(&buf[..end]) {
                        Ok(h) => h,
                        Err(e) => return Step::Done(e.into()),
                    };
                    // Bytes after the head that this read carried.
                    let consumed = end.saturating_sub(old);
                    data = &data[consumed..];
                    if (100..200).contains(&head.status) {
                        self.stage = Stage::Head(Vec::new());
                        continue;
                    }
                    if !self.accept.accepts(head.status) {
                        return Step::Done(HttpFailure::Status(head.status).into());
                    }
                    if self.finder.needle.is_empty() {
                        return Step::Done(Verdict::Pass);
                    }
                    let body = if head.status == 204 || head.status == 304 {
                        Body::Length(0)
                    } else if head.chunked {
                        Body::Chunked(Chunk::Size {
                            len: 0,
                            value: 0,
                            digits: false,
                            ext: false,
                        })
                    } else if let Some(n) = head.content_length {
                        Body::Length(n)
                    } else {
                        Body::UntilClose
                    };
                    let empty = matches!(body, Body::Length(0));
                    self.stage = Stage::Body(body);
                    if empty {
                        return Step::Done(HttpFailure::ExpectedTextMissing.into());
                    }
                }
                Stage::Body(_) => {
                    return match self.body(data) {
                        Progress::More => Step::Wait,
                        Progress::Complete if self.found => Step::Done(Verdict::Pass),
                        Progress::Complete => Step::Done(HttpFailure::ExpectedTextMissing.into()),
                        Progress::Failed(e) => Step::Done(e.into()),
                    };
                }
            }
        }
    }

    pub(super) fn on_closed(&mut self) -> Verdict {
        match &self.stage {
            Stage::Body(Body::UntilClose) => HttpFailure::ExpectedTextMissing.into(),
            _ => Verdict::Fail(FailReason::Closed(self.phase())),
        }
    }

    /// Scans decoded body bytes; `Complete` once the text is found.
    fn scan(&mut self, bytes: &[u8]) -> Progress {
        if bytes.is_empty() {
            return Progress::More;
        }
        if self.finder.feed(bytes) {
            self.found = true;
            return Progress::Complete;
        }
        self.scanned = self.scanned.saturating_add(bytes.len() as u64);
        if self.scanned >= MAX_BODY {
            return Progress::Failed(HttpFailure::BodyTooLarge);
        }
        Progress::More
    }

    fn body(&mut self, data: &[u8]) -> Progress {
        let Stage::Body(body) = &mut self.stage else {
            return Progress::More;
        };
        match body {
            Body::UntilClose => self.scan(data),
            Body::Length(remaining) => {
                let take = (*remaining).min(data.len() as u64) as usize;
                *remaining -= take as u64;
                let done = *remaining == 0;
                match self.scan(&data[..take]) {
                    Progress::More if done => Progress::Complete,
                    p => p,
                }
            }
            Body::Chunked(_) => self.chunked(data),
        }
    }

    fn chunked(&mut self, mut data: &[u8]) -> Progress {
        while !data.is_empty() {
            let Stage::Body(Body::Chunked(state)) = &mut self.stage else {
                return Progress::More;
            };
            match state {
                Chunk::Size {
                    len,
                    value,
                    digits,
                    ext,
                } => {
                    let b = data[0];
                    data = &data[1..];
                    *len += 1;
                    if *len > MAX_LINE {
                        return Progress::Failed(HttpFailure::BadChunk);
                    }
                    match b {
                        b'\n' => {
                            if !*digits {
                                return Progress::Failed(HttpFailure::BadChunk);
                            }
                            *state = if *value == 0 {
                                Chunk::Trailer { len: 0 }
                            } else {
                                Chunk::Data(*value)
                            };
                        }
                        b'\r' => {}
                        _ if *ext => {}
                        b';' | b' ' | b'\t' => *ext = true,
                        _ => {
                            let Some(d) = (b as char).to_digit(16) else {
                                return Progress::Failed(HttpFailure::BadChunk);
                            };
                            *digits = true;
                            *value = match value.checked_mul(16) {
                                Some(v) => v + u64::from(d),
                                None => return Progress::Failed(HttpFailure::BadChunk),
                            };
                        }
                    }
                }
                Chunk::Data(remaining) => {
                    let take = (*remaining).min(data.len() as u64) as usize;
                    *remaining -= take as u64;
                    if *remaining == 0 {
                        *state = Chunk::DataEnd { cr: false };
                    }
                    let (now, rest) = data.split_at(take);
                    data = rest;
                    match self.scan(now) {
                        Progress::More => {}
                        p => return p,
                    }
                }
                Chunk::DataEnd { cr } => {
                    let b = data[0];
                    data = &data[1..];
                    match (b, *cr) {
                        (b'\r', false) => *cr = true,
                        (b'\n', _) => {
                            *state = Chunk::Size {
                                len: 0,
                                value: 0,
                                digits: false,
                                ext: false,
                            }
                        }
                        _ => return Progress::Failed(HttpFailure::BadChunk),
                    }
                }
                Chunk::Trailer { len } => {
                    let b = data[0];
                    data = &data[1..];
                    match b {
                        b'\n' if *len == 0 => return Progress::Complete,
                        b'\n' => *len = 0,
                        b'\r' => {}
                        _ => {
                            *len += 1;
                            if *len > MAX_LINE {
                                return Progress::Failed(HttpFailure::BadChunk);
                            }
                        }
                    }
                }
            }
        }
        Progress::More
    }
}

/// End of the header block (index just past the blank line), searching
/// from a little before `from` so a terminator split across reads is found.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(3);
    let mut i = start;
    while i < buf.len() {
        if buf[i] == b'\n' {
            if buf.get(i + 1) == Some(&b'\n') {
                return Some(i + 2);
            }
            if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

struct Head {
    status: u16,
    content_length: Option<u64>,
    chunked: bool,
}

fn trim(s: &[u8]) -> &[u8] {
    let s = s.strip_suffix(b"\r").unwrap_or(s);
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end]
}

fn parse_head(head: &[u8]) -> Result<Head, HttpFailure> {
    let mut lines = head.split(|&b| b == b'\n');
    let status_line = lines.next().ok_or(HttpFailure::BadStatusLine)?;
    let status_line = status_line.strip_suffix(b"\r").unwrap_or(status_line);
    // "HTTP/1.x SSS reason"
    let rest = status_line
        .strip_prefix(b"HTTP/1.")
        .ok_or(HttpFailure::BadStatusLine)?;
    if rest.len() < 5 || !rest[0].is_ascii_digit() || rest[1] != b' ' {
        return Err(HttpFailure::BadStatusLine);
    }
    let code = &rest[2..5];
    if !code.iter().all(u8::is_ascii_digit) || rest.get(5).is_some_and(|&b| b != b' ') {
        return Err(HttpFailure::BadStatusLine);
    }
    let status = code.iter().fold(0u16, |a, &d| a * 10 + u16::from(d - b'0'));
    if status < 100 {
        return Err(HttpFailure::BadStatusLine);
    }
    let mut out = Head {
        status,
        content_length: None,
        chunked: false,
    };
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(HttpFailure::BadHeader)?;
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.is_empty() || name.iter().any(|b| b.is_ascii_whitespace()) {
            return Err(HttpFailure::BadHeader);
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
                return Err(HttpFailure::BadContentLength);
            }
            let n = value
                .iter()
                .fold(0u64, |a, &d| a * 10 + u64::from(d - b'0'));
            if out.content_length.is_some_and(|old| old != n) {
                return Err(HttpFailure::BadContentLength);
            }
            out.content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Chunked framing applies when it is the last coding listed.
            let last = value.rsplit(|&b| b == b',').next().map(trim).unwrap_or(b"");
            out.chunked = last.eq_ignore_ascii_case(b"chunked");
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::dialog::{Action, CheckKind, CheckParams, Dialog};
    use super::*;
    use crate::time::{Duration, Instant};
    use alloc::string::ToString;

    const PY_200: &[u8] = include_bytes!("../../testdata/health/http/python_http_200.s2c.bin");
    const PY_404: &[u8] = include_bytes!("../../testdata/health/http/python_http_404.s2c.bin");
    const PY_REQ: &[u8] = include_bytes!("../../testdata/health/http/python_http_200.c2s.bin");
    const CHUNKED: &[u8] = include_bytes!("../../testdata/health/http/chunked_200.s2c.bin");

    fn params(expect: &str) -> HttpParams {
        HttpParams {
            host: "127.0.0.1".to_string(),
            path: "/health.html".to_string(),
            accept: StatusAccept::Success,
            expect: expect.to_string(),
        }
    }

    fn dialog(p: HttpParams) -> Dialog {
        let cp = CheckParams {
            kind: CheckKind::Http(p),
            timeout: Duration::from_secs(3),
        };
        let mut d = Dialog::new(&cp, 1).unwrap();
        assert_eq!(d.start(Instant(0)), Action::Connect);
        let Action::Send(req) = d.on_connected(Instant(1)) else {
            panic!("no request")
        };
        assert!(req.starts_with(b"GET /health.html HTTP/1.1\r\nHost: 127.0.0.1\r\n"));
        assert!(req.ends_with(b"Connection: close\r\n\r\n"));
        d
    }

    /// Feeds `bytes` in pieces of `step` and returns the first non-Wait action.
    fn feed(d: &mut Dialog, bytes: &[u8], step: usize) -> Action {
        for piece in bytes.chunks(step.max(1)) {
            match d.on_data(piece, Instant(2)) {
                Action::Wait => {}
                a => return a,
            }
        }
        d.on_closed(Instant(3))
    }

    fn fail(e: HttpFailure) -> Action {
        Action::Done(e.into())
    }

    #[test]
    fn request_matches_a_plain_get() {
        // Same request line and Host/Connection as the captured client.
        let d = HttpCheck::new(&params(""));
        assert!(d.request().starts_with(&PY_REQ[..27]));
    }

    #[test]
    fn captured_python_200_passes_at_any_split() {
        for step in [1, 2, 3, 7, 64, 4096] {
            let mut d = dialog(params("OK-HEALTHY"));
            assert_eq!(
                feed(&mut d, PY_200, step),
                Action::Done(Verdict::Pass),
                "step {step}"
            );
        }
    }

    #[test]
    fn captured_python_200_without_text_fails() {
        let mut d = dialog(params("NOT-THERE"));
        assert_eq!(
            feed(&mut d, PY_200, 5),
            fail(HttpFailure::ExpectedTextMissing)
        );
    }

    #[test]
    fn captured_python_404_fails_with_status() {
        let mut d = dialog(params("OK"));
        let a = feed(&mut d, PY_404, 10);
        assert_eq!(a, fail(HttpFailure::Status(404)));
        assert_eq!(
            d.verdict().unwrap().to_string(),
            "fail: HTTP status 404 not accepted"
        );
    }

    #[test]
    fn chunked_passes_at_any_split() {
        for step in [1, 2, 5, 13, 1000] {
            let mut d = dialog(params("OK-HEALTHY"));
            assert_eq!(
                feed(&mut d, CHUNKED, step),
                Action::Done(Verdict::Pass),
                "step {step}"
            );
        }
    }

    #[test]
    fn chunked_text_across_chunks_is_found() {
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nOK-\r\n7;x=y\r\nHEALTHY\r\n0\r\n\r\n";
        let mut d = dialog(params("OK-HEALTHY"));
        assert_eq!(feed(&mut d, r, 1), Action::Done(Verdict::Pass));
    }

    #[test]
    fn chunked_without_text_fails_at_last_chunk() {
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbusy\r\n0\r\nX-T: 1\r\n\r\n";
        let mut d = dialog(params("OK"));
        // Completes without waiting for the close.
        for piece in r.chunks(3) {
            let a = d.on_data(piece, Instant(2));
            if a != Action::Wait {
                assert_eq!(a, fail(HttpFailure::ExpectedTextMissing));
                return;
            }
        }
        panic!("chunked body end not detected");
    }

    #[test]
    fn bad_chunk_fails() {
        for r in [
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\n",
        ] {
            let mut d = dialog(params("OK"));
            assert_eq!(feed(&mut d, r, 4), fail(HttpFailure::BadChunk));
        }
    }

    #[test]
    fn content_length_limits_the_body() {
        // The text comes after the declared body: not part of it.
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbusyOK";
        let mut d = dialog(params("OK"));
        assert_eq!(feed(&mut d, r, 100), fail(HttpFailure::ExpectedTextMissing));
    }

    #[test]
    fn until_close_body() {
        let r = b"HTTP/1.0 200 OK\n\nall OK here";
        let mut d = dialog(params("OK"));
        assert_eq!(feed(&mut d, r, 2), Action::Done(Verdict::Pass));
        let mut d = dialog(params("NOPE"));
        assert_eq!(feed(&mut d, r, 2), fail(HttpFailure::ExpectedTextMissing));
    }

    #[test]
    fn closed_mid_body_or_head_fails() {
        let mut d = dialog(params("OK"));
        d.on_data(
            b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\nbu",
            Instant(2),
        );
        let v = Verdict::Fail(FailReason::Closed(Phase::HttpBody));
        assert_eq!(d.on_closed(Instant(3)), Action::Done(v));
        let mut d = dialog(params("OK"));
        d.on_data(b"HTTP/1.1 200", Instant(2));
        let v = Verdict::Fail(FailReason::Closed(Phase::HttpResponse));
        assert_eq!(d.on_closed(Instant(3)), Action::Done(v));
    }

    #[test]
    fn timeout_names_the_phase() {
        let mut d = dialog(params("OK"));
        d.on_data(
            b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\nbu",
            Instant(2),
        );
        let a = d.on_timeout(Instant(3000));
        assert_eq!(
            a,
            Action::Done(Verdict::Fail(FailReason::Timeout(Phase::HttpBody)))
        );
        assert_eq!(
            d.verdict().unwrap().to_string(),
            "fail: timeout waiting for HTTP body"
        );
    }

    #[test]
    fn status_classes() {
        let r = b"HTTP/1.1 302 Found\r\nContent-Length: 0\r\n\r\n";
        let mut d = dialog(params(""));
        assert_eq!(feed(&mut d, r, 9), fail(HttpFailure::Status(302)));
        let mut p = params("");
        p.accept = StatusAccept::SuccessOrRedirect;
        let mut d = dialog(p.clone());
        assert_eq!(feed(&mut d, r, 9), Action::Done(Verdict::Pass));
        p.accept = StatusAccept::Exactly(204);
        let mut d = dialog(p);
        assert_eq!(feed(&mut d, r, 9), fail(HttpFailure::Status(302)));
    }

    #[test]
    fn empty_body_with_expected_text_fails() {
        let r = b"HTTP/1.1 204 No Content\r\n\r\n";
        let mut d = dialog(params("OK"));
        assert_eq!(feed(&mut d, r, 9), fail(HttpFailure::ExpectedTextMissing));
    }

    #[test]
    fn interim_1xx_is_skipped() {
        let r = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK";
        let mut d = dialog(params("OK"));
        assert_eq!(feed(&mut d, r, 100), Action::Done(Verdict::Pass));
    }

    #[test]
    fn malformed_heads_fail() {
        let cases: &[(&[u8], HttpFailure)] = &[
            (b"SSH-2.0-OpenSSH\r\n\r\n", HttpFailure::BadStatusLine),
            (b"HTTP/1.1 2x0 OK\r\n\r\n", HttpFailure::BadStatusLine),
            (b"HTTP/1.1 099 X\r\n\r\n", HttpFailure::BadStatusLine),
            (
                b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
                HttpFailure::BadHeader,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n",
                HttpFailure::BadContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                HttpFailure::BadContentLength,
            ),
        ];
        for (r, e) in cases {
            let mut d = dialog(params("OK"));
            assert_eq!(feed(&mut d, r, 3), fail(e.clone()), "{r:?}");
        }
    }

    #[test]
    fn oversized_head_fails() {
        let mut d = dialog(params("OK"));
        let mut r = b"HTTP/1.1 200 OK\r\n".to_vec();
        while r.len() < MAX_HEAD + 100 {
            r.extend_from_slice(b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        assert_eq!(feed(&mut d, &r, 1000), fail(HttpFailure::HeadTooLarge));
    }

    #[test]
    fn endless_body_is_bounded() {
        let mut d = dialog(params("OK-HEALTHY"));
        d.on_data(b"HTTP/1.1 200 OK\r\n\r\n", Instant(2));
        let junk = [b'x'; 4096];
        let mut last = Action::Wait;
        for _ in 0..(MAX_BODY as usize / junk.len() + 1) {
            last = d.on_data(&junk, Instant(2));
            if last != Action::Wait {
                break;
            }
        }
        assert_eq!(last, fail(HttpFailure::BodyTooLarge));
    }

    #[test]
    fn bad_params_are_rejected() {
        let mut p = params("OK");
        p.path = "health".to_string();
        assert_eq!(p.validate(), Err(ParamsError::BadField("http.path")));
        let mut p = params("OK");
        p.host = "a\r\nX: y".to_string();
        assert_eq!(p.validate(), Err(ParamsError::BadField("http.host")));
    }
}
