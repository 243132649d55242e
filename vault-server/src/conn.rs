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

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// A stream whose client must be answered within `deadline` of sending.
pub struct Guarded<T> {
    io: T,
    deadline: Duration,
    timer: Option<Pin<Box<Sleep>>>,
}

impl<T> Guarded<T> {
    /// Wraps `io`.
    pub fn new(io: T, deadline: Duration) -> Self {
        Guarded {
            io,
            deadline,
            timer: None,
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
        let result = Pin::new(&mut this.io).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.timer = None;
        }
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.timer = None;
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
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
}
