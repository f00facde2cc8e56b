//! An accepted connection's two limits: a deadline on every request head, and its part in the
//! stop.
//!
//! hyper 0.14.19's own `http1_header_read_timeout` never fires: the flag that makes hyper poll
//! its timer is never set (hyperium/hyper#2888, fixed in 0.14.20, which Debian bookworm does not
//! package), and its timer would start only at the head's first byte. Measured here: with it
//! set to 2 s, connections trickling a head, sending half of one, or silent all stayed open. So
//! the accepted socket is wrapped instead, and the clock runs as async-style's granian (hyper 1)
//! runs it: from the accept, and again from each answer's write, so an idle kept-alive
//! connection is closed as one trickling a head is. Past the deadline the next read fails and
//! hyper closes the connection without an answer, as granian does.
//!
//! The stop comes in two steps, as gunicorn's worker stops (docs/reliability.md, "Stopping under
//! load"). First the listener takes what the kernel has queued and closes, so that later clients
//! are refused before they send anything. Then the connections finish: one answering a request,
//! or with one begun, goes on; one between requests reads a request already in its socket
//! (serve.rs answers it with `Connection: close`) or, with none there, ends at once, as if the
//! client had closed (a new one first gets FIRST_REQUEST_GRACE). hyper's own graceful shutdown
//! does neither: it closes a kept-alive
//! connection between requests without looking for a request waiting unread in its socket, and
//! the listener with connections still in the kernel's queue, which the kernel then resets.

use std::future::Future;
use std::io;
use std::os::unix::io::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::server::accept::Accept;
use hyper::server::conn::{AddrIncoming, AddrStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::time::{sleep, Instant, Sleep};

// As Go's http.Server.Shutdown, which counts a new connection as idle only 5 s after its accept:
// a client that has connected but not yet sent its first request would not resend it on a fresh
// connection closed under it (k6 and browsers resend only on a reused one), so it gets that long.
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(5);

/// The listener's connections, each with its head deadline, until the stop.
pub struct Incoming {
    // None once closed at the stop.
    listener: Option<AddrIncoming>,
    listener_fd: RawFd,
    timeout: Duration,
    // None once the stop has come.
    stop: Option<oneshot::Receiver<()>>,
    closing: watch::Receiver<bool>,
}

impl Incoming {
    /// Accepts until `stop`; each connection finishes once `closing` turns true (module doc).
    pub fn new(
        listener: TcpListener,
        timeout: Duration,
        stop: oneshot::Receiver<()>,
        closing: watch::Receiver<bool>,
    ) -> hyper::Result<Incoming> {
        let listener_fd = listener.as_raw_fd();
        let mut listener = AddrIncoming::from_listener(listener)?;
        // With Nagle's algorithm a pipelined answer waits for the client's ACK of the one before
        // it (its delayed-ACK timer): measured, two pipelined requests took 43 ms a pair, 0.04 ms
        // without.
        listener.set_nodelay(true);
        Ok(Incoming {
            listener: Some(listener),
            listener_fd,
            timeout,
            stop: Some(stop),
            closing,
        })
    }
}

impl Accept for Incoming {
    type Conn = Connection;
    type Error = io::Error;

    fn poll_accept(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Connection>>> {
        let me = &mut *self;
        let listener = match me.listener.as_mut() {
            Some(listener) => listener,
            None => return Poll::Ready(None),
        };
        // A dropped sender (the server is going) is a stop too.
        if let Some(stop) = me.stop.as_mut() {
            if Pin::new(stop).poll(cx).is_ready() {
                me.stop = None;
            }
        }
        match Pin::new(listener).poll_accept(cx) {
            Poll::Ready(Some(Ok(stream))) => Poll::Ready(Some(Ok(Connection::new(
                stream,
                me.timeout,
                Closing::new(me.closing.clone()),
            )))),
            // Stopping, and the kernel's queue is empty: close the listener, and hyper's server
            // ends. Closing it with connections still queued would reset them.
            Poll::Pending if me.stop.is_none() && !readable(me.listener_fd) => {
                me.listener = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error))),
            Poll::Ready(None) => Poll::Ready(None),
        }
    }
}

/// Whether the kernel holds something to read on `fd`: a queued connection on a listener, a
/// request's bytes (or the client's close) on a connection. Asked of the kernel because tokio
/// says Pending until its driver has taken the socket's event from epoll, which can lag an
/// arrival; that event then wakes the task, so Pending is the answer to give meanwhile.
fn readable(fd: RawFd) -> bool {
    let mut poll = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd, valid for the call; a zero timeout returns at once.
    unsafe { libc::poll(&mut poll, 1, 0) > 0 }
}

/// A connection's view of the stop's second step. Each connection holds one for its life:
/// serve.rs waits for the last to go (watch::Sender::closed).
struct Closing {
    _held: watch::Receiver<bool>,
    // None once closing has begun.
    begun: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl Closing {
    fn new(receiver: watch::Receiver<bool>) -> Closing {
        let mut watching = receiver.clone();
        Closing {
            _held: receiver,
            // The value, not only a change: a connection accepted at the stop starts after it.
            // A dropped sender (the server is going) ends the wait too.
            begun: Some(Box::pin(async move {
                while !*watching.borrow_and_update() {
                    if watching.changed().await.is_err() {
                        break;
                    }
                }
            })),
        }
    }

    /// Whether closing has begun; if not, `cx` is woken when it does.
    fn poll_begun(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(begun) = self.begun.as_mut() {
            if begun.as_mut().poll(cx).is_pending() {
                return false;
            }
            self.begun = None;
        }
        true
    }
}

/// The service's side of a connection's deadline: it says when a head has arrived.
#[derive(Clone)]
pub struct HeadRead(Arc<AtomicBool>);

impl HeadRead {
    pub fn arrived(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// An accepted socket whose reads fail once a request head is overdue, and end at the stop when
/// no request is on its way.
pub struct Connection {
    stream: AddrStream,
    timeout: Duration,
    accepted: Instant,
    deadline: Pin<Box<Sleep>>,
    // hyper polls the socket and calls the service on the connection's one task, so this flag
    // changes in the order hyper took the steps; it is atomic only to be shared with the service.
    answering: Arc<AtomicBool>,
    // Bytes of the next request have been read: at the stop, the rest of it is awaited.
    reading: bool,
    // An answer has been written: at the stop, the connection is a kept-alive one.
    answered: bool,
    closing: Closing,
}

impl Connection {
    fn new(stream: AddrStream, timeout: Duration, closing: Closing) -> Connection {
        Connection {
            stream,
            timeout,
            accepted: Instant::now(),
            deadline: Box::pin(sleep(timeout)),
            answering: Arc::new(AtomicBool::new(false)),
            reading: false,
            answered: false,
            closing,
        }
    }

    pub fn head_read(&self) -> HeadRead {
        HeadRead(self.answering.clone())
    }

    /// After a write: if it began an answer, the next head is awaited from now.
    ///
    /// Here rather than at the next read: hyper writes an answer and then sleeps until the
    /// socket or a timer wakes it, without reading again. Each answer here is a few hundred
    /// bytes, one write, so the clock starts as the answer leaves.
    fn wrote(&mut self, cx: &mut Context<'_>) {
        if self.answering.swap(false, Ordering::Relaxed) {
            self.reading = false;
            self.answered = true;
            let deadline = Instant::now() + self.timeout;
            self.deadline.as_mut().reset(deadline);
            // Register this task's waker with the new deadline: a timer that fired while the
            // request was being answered has no waker left to call. (The stop's watch, polled
            // at the head's read, keeps the waker until the stop comes.)
            let _ = self.deadline.as_mut().poll(cx);
        }
    }

    /// At the stop, with no request begun: whether to end the connection when its socket holds
    /// nothing. A new connection has until FIRST_REQUEST_GRACE after its accept; its deadline is
    /// brought forward to then, to be woken. Before the stop, false, and `cx` is woken at it.
    fn closes_when_empty(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.closing.poll_begun(cx) {
            return false;
        }
        let grace = self.accepted + FIRST_REQUEST_GRACE;
        if self.answered || Instant::now() >= grace {
            return true;
        }
        if grace < self.deadline.deadline() {
            self.deadline.as_mut().reset(grace);
        }
        false
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // While answering, reads are a request's body or hyper watching for the client's close.
        let awaiting_head = !self.answering.load(Ordering::Relaxed);
        let closes = awaiting_head && !self.reading && self.closes_when_empty(cx);
        // Closing reads the socket first: a request that has arrived is answered, however late.
        if awaiting_head && !closes && self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no request head in time",
            )));
        }
        let filled = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            // Nothing in the socket: the end of the stream, as if the client had closed, and
            // hyper closes the connection.
            Poll::Pending if closes && !readable(self.stream.as_raw_fd()) => Poll::Ready(Ok(())),
            Poll::Ready(Ok(())) if awaiting_head && buf.filled().len() > filled => {
                self.reading = true;
                Poll::Ready(Ok(()))
            }
            read => read,
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(_)) = written {
            self.wrote(cx);
        }
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(_)) = written {
            self.wrote(cx);
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::future::poll_fn;
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};

    const HEAD: &[u8] = b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n";
    const ANSWER: &[u8] = b"HTTP/1.1 204 No Content\r\n\r\n";

    fn block_on<F: Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(future)
    }

    /// A listener on a free loopback port, and the two steps of its stop.
    struct Served {
        incoming: Incoming,
        address: SocketAddr,
        stop: Option<oneshot::Sender<()>>,
        closing: watch::Sender<bool>,
    }

    impl Served {
        async fn new() -> Served {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap();
            let (stop, stopped) = oneshot::channel();
            let (closing, closes) = watch::channel(false);
            let incoming = Incoming::new(listener, Duration::from_secs(30), stopped, closes);
            Served {
                incoming: incoming.unwrap(),
                address,
                stop: Some(stop),
                closing,
            }
        }

        async fn accept(&mut self) -> Option<Connection> {
            poll_fn(|cx| Pin::new(&mut self.incoming).poll_accept(cx))
                .await
                .map(Result::unwrap)
        }

        /// A client, and its connection as the server accepted it.
        async fn connect(&mut self) -> (TcpStream, Connection) {
            let client = TcpStream::connect(self.address).unwrap();
            (client, self.accept().await.unwrap())
        }
    }

    /// What the next read gives: empty at the end of the stream.
    async fn read(connection: &mut Connection) -> Vec<u8> {
        let mut bytes = [0u8; 1024];
        let mut buf = ReadBuf::new(&mut bytes);
        poll_fn(|cx| Pin::new(&mut *connection).poll_read(cx, &mut buf))
            .await
            .unwrap();
        buf.filled().to_vec()
    }

    /// Whether a read, polled once, waits.
    async fn waits(connection: &mut Connection) -> bool {
        let mut bytes = [0u8; 1024];
        let mut buf = ReadBuf::new(&mut bytes);
        poll_fn(|cx| {
            Poll::Ready(
                Pin::new(&mut *connection)
                    .poll_read(cx, &mut buf)
                    .is_pending(),
            )
        })
        .await
    }

    /// The client sends `bytes`, and returns once they are in the server's socket.
    fn send(client: &mut TcpStream, connection: &Connection, bytes: &[u8]) {
        client.write_all(bytes).unwrap();
        let mut poll = libc::pollfd {
            fd: connection.stream.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd, valid for the call.
        assert_eq!(unsafe { libc::poll(&mut poll, 1, 5000) }, 1);
    }

    /// One request read and answered: the connection is now kept alive between requests.
    async fn answer_one(client: &mut TcpStream, connection: &mut Connection) {
        send(client, connection, HEAD);
        assert_eq!(read(connection).await, HEAD);
        connection.head_read().arrived();
        poll_fn(|cx| Pin::new(&mut *connection).poll_write(cx, ANSWER))
            .await
            .unwrap();
        let mut answer = [0u8; ANSWER.len()];
        client.read_exact(&mut answer).unwrap();
    }

    #[test]
    fn the_stop_accepts_what_the_kernel_has_queued_then_closes_the_listener() {
        block_on(async {
            let mut served = Served::new().await;
            let queued: Vec<TcpStream> = (0..3)
                .map(|_| TcpStream::connect(served.address).unwrap())
                .collect();
            served.stop.take().unwrap().send(()).unwrap();
            for _ in &queued {
                assert!(served.accept().await.is_some());
            }
            assert!(served.accept().await.is_none());
            let later = TcpStream::connect(served.address).unwrap_err();
            assert_eq!(later.kind(), io::ErrorKind::ConnectionRefused);
        });
    }

    #[test]
    fn at_the_stop_a_connection_between_requests_reads_a_request_waiting_in_its_socket() {
        block_on(async {
            let mut served = Served::new().await;
            let (mut client, mut connection) = served.connect().await;
            answer_one(&mut client, &mut connection).await;
            send(&mut client, &connection, HEAD);
            served.closing.send_replace(true);
            assert_eq!(read(&mut connection).await, HEAD);
        });
    }

    #[test]
    fn at_the_stop_a_connection_between_requests_with_nothing_unread_ends() {
        block_on(async {
            let mut served = Served::new().await;
            let (mut client, mut connection) = served.connect().await;
            answer_one(&mut client, &mut connection).await;
            assert!(waits(&mut connection).await);
            served.closing.send_replace(true);
            assert_eq!(read(&mut connection).await, b"");
        });
    }

    #[test]
    fn at_the_stop_a_connection_with_a_head_begun_waits_for_the_rest() {
        block_on(async {
            let mut served = Served::new().await;
            let (mut client, mut connection) = served.connect().await;
            let (begun, rest) = HEAD.split_at(9);
            send(&mut client, &connection, begun);
            assert_eq!(read(&mut connection).await, begun);
            served.closing.send_replace(true);
            assert!(waits(&mut connection).await);
            send(&mut client, &connection, rest);
            assert_eq!(read(&mut connection).await, rest);
        });
    }

    #[test]
    fn at_the_stop_a_new_connection_waits_for_its_first_request_until_its_grace_is_over() {
        block_on(async {
            let mut served = Served::new().await;
            let (mut client, mut connection) = served.connect().await;
            let (_old_client, mut old) = served.connect().await;
            old.accepted -= FIRST_REQUEST_GRACE;
            served.closing.send_replace(true);
            assert!(waits(&mut connection).await);
            send(&mut client, &connection, HEAD);
            assert_eq!(read(&mut connection).await, HEAD);
            assert_eq!(read(&mut old).await, b"");
        });
    }
}
