//! A deadline on every request of a connection, kept where actix-http
//! keeps none. Its head timer (`client_request_timeout`) runs for the
//! first request of a connection only: once a keep-alive connection has
//! answered once, the next request's head may arrive a byte at a time for
//! ever, and a chunked body the handler stopped reading is drained for as
//! long as the client sends it.
//!
//! [`Guarded`] wraps the connection's stream: from the first byte the
//! client sends while the server owes it nothing, the server must start
//! answering within the deadline, or the connection is closed (the next
//! read fails with `TimedOut`). Writing anything disarms it. The
//! extractors answer a slow body 408 well before it, so the deadline cuts
//! only what nothing else does: slow heads after the first request,
//! bodies dripped after the answer, and requests whose processing overran.
//!
//! It also gives a problem+json body to the answers actix-http writes by
//! itself, with no hook to shape them, when it cannot parse a request head
//! or the first head comes too slowly (`h1/dispatcher.rs`): an empty 400,
//! 431 or 408, each followed by closing the connection (see
//! [`protocol_error`]).

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use dzl_types::error::Problem;
use dzl_types::ErrorCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// A stream whose client must be answered within `deadline` of sending.
pub struct Guarded<T> {
    io: T,
    deadline: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    /// An answer written in place of the caller's bytes: what is left of
    /// it, and how many of the caller's bytes it stands for.
    replacing: Option<(Vec<u8>, usize)>,
}

impl<T> Guarded<T> {
    /// Wraps `io`.
    pub fn new(io: T, deadline: Duration) -> Self {
        Guarded {
            io,
            deadline,
            timer: None,
            replacing: None,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &T {
        &self.io
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(timer) = this.timer.as_mut() {
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the request was not answered within its deadline",
                )));
            }
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(())))
            && buf.filled().len() > before
            && this.timer.is_none()
        {
            let mut timer = Box::pin(tokio::time::sleep(this.deadline));
            // Registers this task to be woken when the deadline passes.
            let _ = timer.as_mut().poll(cx);
            this.timer = Some(timer);
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.replacing.is_none() {
            if let Some(answer) = protocol_error(buf) {
                this.replacing = Some((answer, buf.len()));
            }
        }
        if let Some((answer, stands_for)) = this.replacing.as_mut() {
            this.timer = None;
            while !answer.is_empty() {
                match Pin::new(&mut this.io).poll_write(cx, answer) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Ok(0)),
                    Poll::Ready(Ok(n)) => {
                        answer.drain(..n);
                    }
                    other => return other,
                }
            }
            let n = *stands_for;
            this.replacing = None;
            return Poll::Ready(Ok(n));
        }
        let result = Pin::new(&mut this.io).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.timer = None;
        }
        result
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// The answer to write instead of `buf` when `buf` is exactly one of the
/// answers actix-http gives a request head it cannot parse or that came
/// too slowly: a whole `400 Bad Request`, `408 Request Timeout` or `431
/// Request Header Fields Too Large` head with `content-length: 0` and
/// nothing after it. The vault's own 400s and 408s always carry a
/// problem+json body, so nothing else matches; anything else
/// (another answer before it in the buffer, say) is written as it is.
pub fn protocol_error(buf: &[u8]) -> Option<Vec<u8>> {
    const HEAD_END: &[u8] = b"\r\n\r\n";
    if buf.len() > 1024 || !buf.ends_with(HEAD_END) {
        return None;
    }
    let text = std::str::from_utf8(buf).ok()?;
    let (status_line, headers) = text[..text.len() - HEAD_END.len()].split_once("\r\n")?;
    let code = match status_line.split_once(' ')?.1 {
        "400 Bad Request" => ErrorCode::MalformedRequest,
        "408 Request Timeout" => ErrorCode::RequestTimeout,
        "431 Request Header Fields Too Large" => ErrorCode::RequestHeadTooLarge,
        _ => return None,
    };
    let lines: Vec<&str> = headers.split("\r\n").collect();
    let is = |line: &str, name: &str| {
        line.split_once(':')
            .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name))
    };
    let empty = lines.iter().any(|l| {
        is(l, "content-length") && l.split_once(':').is_some_and(|(_, v)| v.trim() == "0")
    });
    if !empty || lines.iter().any(|l| l.is_empty()) {
        return None;
    }
    let detail = match code {
        ErrorCode::RequestTimeout => {
            "The request head did not arrive in time; the connection is closed"
        }
        ErrorCode::RequestHeadTooLarge => {
            "The request line and headers exceed 96 headers or 128 KiB; the connection is closed"
        }
        _ => "The request line or headers could not be parsed; the connection is closed",
    };
    let body = serde_json::to_vec(&Problem::new(code, detail)).ok()?;
    let mut out = Vec::with_capacity(buf.len() + body.len() + 64);
    out.extend_from_slice(status_line.as_bytes());
    out.extend_from_slice(b"\r\n");
    for line in lines
        .iter()
        .filter(|l| !is(l, "content-length") && !is(l, "content-type"))
    {
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"content-type: application/problem+json\r\n");
    out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(&body);
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[actix_web::test]
    async fn a_client_that_sends_must_be_answered_within_the_deadline() {
        let ms = Duration::from_millis;
        let (client, server) = tokio::io::duplex(64);
        let mut server = Guarded::new(server, ms(400));
        let mut client = client;
        let mut buf = [0u8; 8];
        // Idle: no deadline runs.
        tokio::time::sleep(ms(600)).await;
        client.write_all(b"GE").await.unwrap();
        assert_eq!(server.read(&mut buf).await.unwrap(), 2);
        // An answer disarms it; the next bytes arm it again.
        tokio::time::sleep(ms(300)).await;
        server.write_all(b"HTTP").await.unwrap();
        tokio::time::sleep(ms(300)).await;
        client.write_all(b"T").await.unwrap();
        assert_eq!(server.read(&mut buf).await.unwrap(), 1);
        tokio::time::sleep(ms(300)).await;
        client.write_all(b" ").await.unwrap();
        assert_eq!(server.read(&mut buf).await.unwrap(), 1);
        // Past the deadline from the first unanswered byte: closed, even
        // with nothing more to read.
        tokio::time::sleep(ms(150)).await;
        let e = server.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn only_actix_http_s_empty_400_and_431_heads_get_a_problem_body() {
        let head = |status: &str, length: &str| {
            format!(
                "HTTP/1.1 {status}\r\ncontent-length: {length}\r\nconnection: close\r\ndate: Mon, 07 Dec 2026 20:00:00 GMT\r\n\r\n"
            )
        };
        for (status, code) in [
            ("400 Bad Request", "malformed_request"),
            (
                "431 Request Header Fields Too Large",
                "request_head_too_large",
            ),
            ("408 Request Timeout", "request_timeout"),
        ] {
            let out = protocol_error(head(status, "0").as_bytes()).unwrap();
            let text = String::from_utf8(out).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(
                head.starts_with(&format!("HTTP/1.1 {status}\r\n")),
                "{head}"
            );
            assert!(head.contains("connection: close"), "{head}");
            assert!(
                head.contains("content-type: application/problem+json"),
                "{head}"
            );
            assert!(
                head.contains(&format!("content-length: {}", body.len())),
                "{head}"
            );
            assert!(!head.contains("content-length: 0"), "{head}");
            let p: Problem = serde_json::from_str(body).unwrap();
            assert_eq!(p.code, code);
        }
        // The vault's own answers, and anything not exactly such a head, pass.
        let with_body = format!("{}{{}}", head("400 Bad Request", "2"));
        for other in [
            head("400 Bad Request", "57"),
            head("200 OK", "0"),
            head("404 Not Found", "0"),
            with_body,
            format!("{}{}", head("200 OK", "0"), head("400 Bad Request", "0")),
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n".to_owned(),
        ] {
            assert!(protocol_error(other.as_bytes()).is_none(), "{other:?}");
        }
    }

    #[actix_web::test]
    async fn a_replaced_answer_is_written_whole_through_a_narrow_pipe() {
        let (mut client, server) = tokio::io::duplex(7);
        let mut server = Guarded::new(server, Duration::from_secs(5));
        let head = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
        let writer = tokio::spawn(async move {
            server.write_all(head).await.unwrap();
            server.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        let text = String::from_utf8(got).unwrap();
        assert_eq!(
            Some(text.clone()),
            protocol_error(head).map(|a| String::from_utf8(a).unwrap())
        );
        assert!(text.contains("\"code\":\"malformed_request\""), "{text}");
    }
}
