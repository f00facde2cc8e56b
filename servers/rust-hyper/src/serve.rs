//! Listening, serving and stopping: hyper's server with the limits async-style's granian has.

use std::convert::Infallible;
use std::future::{ready, Future};
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::future::{select, Either};
use hyper::header::{HeaderValue, CONNECTION};
use hyper::service::{make_service_fn, service_fn};
use hyper::Server;
use tokio::net::{TcpListener, TcpSocket};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinError;

use crate::connection::{Connection, Incoming};
use crate::handlers::{answer, unix_nanos};
use crate::settings::{Settings, SERVER_NAME};

// As granian_conf.py HEADER_READ_TIMEOUT_MS for async-style: a request head must arrive within
// 30 s of the connection waiting for it (connection.rs), which also closes idle keep-alive
// connections after 30 s. server.yaml head_timeout_s says the same to the harness.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
// As granian_conf.py WORKERS_KILL_TIMEOUT: Kubernetes waits terminationGracePeriodSeconds (30 s)
// before SIGKILL; in-flight requests get 20 s, leaving room for the preStop pause.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);
// As granian_conf.py BACKLOG: the kernel caps the accept queue at net.core.somaxconn; asking for
// more lets a node tuned higher use it. hyper's own bind would ask for Rust's std default, 128,
// too few for the seed's 15,000 connections opening at once.
const BACKLOG: u32 = 16384;

/// Serve until SIGTERM or SIGINT, then answer what was accepted for up to DRAIN_TIMEOUT.
pub async fn serve(settings: &Settings, address: SocketAddr) -> Result<(), String> {
    // Before listening: a stop signal that came between the two would otherwise kill the process.
    let stop = stop_signal()
        .map_err(|error| format!("cannot watch for SIGTERM and SIGINT ({}).", error))?;
    let listener = listen(address).map_err(|error| {
        format!(
            "cannot listen on {} ({}): is another server using the port? Set PORT to a free one.",
            address, error
        )
    })?;
    eprintln!(
        "{}: listening on http://{} ({} tokio worker thread{}, {} hash rounds)",
        SERVER_NAME,
        address,
        settings.workers,
        if settings.workers == 1 { "" } else { "s" },
        settings.hash_iterations
    );
    let signal = serve_until(listener, settings.hash_iterations, stop, DRAIN_TIMEOUT).await?;
    eprintln!(
        "{}: stopped on {}; every request in flight was answered",
        SERVER_NAME, signal
    );
    Ok(())
}

/// Serve until `stop` gives the signal's name, then stop in connection.rs's two steps: the
/// listener takes the kernel's queue and closes; then each connection answers the request it
/// has begun or that has arrived, with `Connection: close`, and closes. Err past `drain`.
async fn serve_until(
    listener: TcpListener,
    rounds: u32,
    stop: impl Future<Output = &'static str> + Unpin,
    drain: Duration,
) -> Result<&'static str, String> {
    let (stop_accepting, accepting_stopped) = oneshot::channel();
    let (closing, closing_seen) = watch::channel(false);
    let closes = closing_seen.clone();
    let make_service = make_service_fn(move |connection: &Connection| {
        let head_read = connection.head_read();
        let closes = closes.clone();
        ready(Ok::<_, Infallible>(service_fn(move |request| {
            head_read.arrived();
            // The hash runs here, inline on the tokio worker that polls the connection, as in the
            // seed's server: no spawn_blocking hand-off.
            let mut response = answer(&request, rounds, unix_nanos);
            if *closes.borrow() {
                response
                    .headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            ready(Ok::<_, Infallible>(response))
        })))
    });
    let incoming = Incoming::new(listener, HEAD_TIMEOUT, accepting_stopped, closing_seen)
        .map_err(|error| format!("cannot accept connections ({}).", error))?;
    let server = Server::builder(incoming)
        .http1_keepalive(true)
        .serve(make_service);
    let mut server = tokio::spawn(server);
    let signal = match select(stop, &mut server).await {
        Either::Left((signal, _)) => signal,
        // Before a signal the server ends only on an error.
        Either::Right((ended, _)) => return outcome(ended).map(|()| "no signal"),
    };
    let _ = stop_accepting.send(());
    let drained = async {
        // The server ends once the listener has closed: only then are clients told to close,
        // so none reconnects into a queue about to be reset.
        let ended = server.await;
        closing.send_replace(true);
        // Each connection holds a receiver of `closing` until it closes, and the server's
        // service factory until it ended.
        closing.closed().await;
        ended
    };
    match tokio::time::timeout(drain, drained).await {
        Ok(ended) => outcome(ended).map(|()| signal),
        Err(_) => Err(format!(
            "stopped on {}; requests still in flight after {} s were dropped",
            signal,
            drain.as_secs()
        )),
    }
}

fn outcome(ended: Result<hyper::Result<()>, JoinError>) -> Result<(), String> {
    match ended {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(format!("the server failed ({}).", error)),
        Err(error) => Err(format!("the server task failed ({}).", error)),
    }
}

fn listen(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }?;
    // As std's bind does on Unix, and gunicorn and granian: a restart need not wait out TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(BACKLOG)
}

/// Resolves with the name of the first of SIGTERM (docker stop, Kubernetes) and SIGINT (Ctrl-C).
fn stop_signal() -> std::io::Result<impl std::future::Future<Output = &'static str>> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(futures_util::future::poll_fn(move |cx| {
        if terminate.poll_recv(cx).is_ready() {
            std::task::Poll::Ready("SIGTERM")
        } else if interrupt.poll_recv(cx).is_ready() {
            std::task::Poll::Ready("SIGINT")
        } else {
            std::task::Poll::Pending
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{ErrorKind, Read, Write};
    use std::net::TcpStream;

    // About 0.2 s of hashing here: long enough for requests to queue behind it.
    const ROUNDS: u32 = 4_000_000;
    const HASH: &[u8] = b"GET /hash HTTP/1.1\r\nHost: test\r\n\r\n";

    /// serve_until on a free loopback port with one tokio worker, as WORKERS=1 runs it; `clients`
    /// talks to it from this thread, then stops it, and gets what serve_until returned.
    fn with_server<T>(
        drain: Duration,
        clients: impl FnOnce(SocketAddr, oneshot::Sender<()>) -> T,
    ) -> (T, Result<&'static str, String>) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = {
            let _in_runtime = runtime.enter();
            listen("127.0.0.1:0".parse().unwrap()).unwrap()
        };
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let stop_signal = Box::pin(async move {
            let _ = stopped.await;
            "the test's stop"
        });
        let served = runtime.spawn(serve_until(listener, ROUNDS, stop_signal, drain));
        let seen = clients(address, stop);
        (seen, runtime.block_on(served).unwrap())
    }

    /// Everything the server sent until it closed the connection.
    fn read_to_close(mut client: TcpStream) -> String {
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).unwrap();
        String::from_utf8(answer).unwrap()
    }

    #[test]
    fn the_stop_answers_every_request_that_has_arrived_and_closes_every_connection() {
        let (answers, stopped) = with_server(Duration::from_secs(20), |address, stop| {
            // Kept alive: answered once, now between requests.
            let mut kept = TcpStream::connect(address).unwrap();
            kept.write_all(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
                .unwrap();
            let mut health = [0u8; 512];
            assert!(kept.read(&mut health).unwrap() > 0);
            // The one worker hashes this, while the next two wait: one unread in its socket, one
            // in the listener's queue.
            let mut busy = TcpStream::connect(address).unwrap();
            busy.write_all(HASH).unwrap();
            kept.write_all(HASH).unwrap();
            let mut queued = TcpStream::connect(address).unwrap();
            queued.write_all(HASH).unwrap();
            stop.send(()).unwrap();
            let answers: Vec<String> = [busy, kept, queued]
                .into_iter()
                .map(read_to_close)
                .collect();
            let later = TcpStream::connect(address).unwrap_err();
            assert_eq!(later.kind(), ErrorKind::ConnectionRefused);
            answers
        });
        assert_eq!(stopped, Ok("the test's stop"));
        for answer in &answers {
            assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{:?}", answer);
            assert!(answer.contains("\"hash\":\""), "{:?}", answer);
        }
    }

    #[test]
    fn a_drain_past_its_timeout_is_an_error() {
        let (_client, stopped) = with_server(Duration::from_secs(1), |address, stop| {
            // A head begun and never finished: the drain waits for the rest.
            let mut client = TcpStream::connect(address).unwrap();
            client.write_all(b"GET /hash HTTP/1.1\r\n").unwrap();
            stop.send(()).unwrap();
            client
        });
        assert_eq!(
            stopped,
            Err(
                "stopped on the test's stop; requests still in flight after 1 s were dropped"
                    .into()
            )
        );
    }
}
