//! A small TCP fault proxy on loopback, between the binary and the dev
//! server, for the faults that live below HTTP: refused connections, a
//! server that accepts and never answers, resets, short and endless bodies.
//!
//! Every request gets its own upstream connection (`Connection: close` is
//! added), so a mode switch applies from the next request on and no pooled
//! keep-alive connection slips past it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward to the dev server.
    Pass,
    /// Nothing listens: connection refused.
    Refuse,
    /// Accept and read the request, never answer.
    Blackhole,
    /// A 200 whose body stops half way with a TCP reset.
    ResetMidBody,
    /// A chunked 200 whose connection closes inside a chunk.
    CutShort,
    /// `Content-Length` larger than the body sent before the close.
    Overannounce,
    /// A chunked 200 that never ends (2 GiB and more).
    Endless,
    /// `Content-Length: 2147483648`, then bytes until the client leaves.
    HugeLength,
    /// A 200 whose body comes one byte per second.
    Trickle,
}

struct Shared {
    mode: Mutex<Mode>,
    upstream: Mutex<Option<SocketAddr>>,
    /// Response body bytes written by the faulty modes.
    fault_bytes: AtomicU64,
}

pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(64)
}

impl Proxy {
    /// Listens on a free loopback port; `set_upstream` before use.
    pub async fn bind() -> Proxy {
        let listener = listen(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            mode: Mutex::new(Mode::Pass),
            upstream: Mutex::new(None),
            fault_bytes: AtomicU64::new(0),
        });
        let proxy = Proxy {
            addr,
            shared,
            accept: Mutex::new(None),
        };
        proxy.start_accepting(listener);
        proxy
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_upstream(&self, upstream: SocketAddr) {
        *self.shared.upstream.lock().unwrap() = Some(upstream);
    }

    pub fn fault_bytes(&self) -> u64 {
        self.shared.fault_bytes.load(Ordering::Relaxed)
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
        let mut accept = self.accept.lock().unwrap();
        match (mode, accept.is_some()) {
            (Mode::Refuse, true) => {
                // Dropping the listener closes the port.
                accept.take().unwrap().abort();
            }
            (m, false) if m != Mode::Refuse => {
                drop(accept);
                // The aborted task may take a moment to drop its socket.
                let listener = (0..100)
                    .find_map(|_| {
                        listen(self.addr)
                            .map_err(|_| std::thread::sleep(Duration::from_millis(10)))
                            .ok()
                    })
                    .expect("the proxy port can be bound again");
                self.start_accepting(listener);
            }
            _ => {}
        }
    }

    fn start_accepting(&self, listener: TcpListener) {
        let shared = self.shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mode = *shared.mode.lock().unwrap();
                let shared = shared.clone();
                tokio::spawn(async move {
                    let _ = handle(client, mode, &shared).await;
                });
            }
        });
        *self.accept.lock().unwrap() = Some(task);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(t) = self.accept.lock().unwrap().take() {
            t.abort();
        }
    }
}

/// Reads up to the end of the request head; returns the head and what
/// followed it.
async fn read_head(client: &mut TcpStream) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((buf, rest));
        }
    }
}

/// The start of a listing envelope, for the bodies that break off.
const PARTIAL: &[u8] = br#"{"header":{"id":"6e1b7f2c-0000-4000-8000-000000000000","status":"success","servertime":1796131344,"message":"The operation was successful.","url":"/resources.json","code":200},"body":[{"id":"3c2b5e1a-0000"#;

async fn handle(mut client: TcpStream, mode: Mode, shared: &Shared) -> std::io::Result<()> {
    let (head, rest) = read_head(&mut client).await?;
    let count = |n: usize| {
        shared.fault_bytes.fetch_add(n as u64, Ordering::Relaxed);
    };
    match mode {
        Mode::Pass | Mode::Refuse => {
            let upstream = shared.upstream.lock().unwrap().expect("set_upstream");
            let mut server = TcpStream::connect(upstream).await?;
            let end = head.len() - 2;
            server.write_all(&head[..end]).await?;
            server.write_all(b"connection: close\r\n\r\n").await?;
            server.write_all(&rest).await?;
            tokio::io::copy_bidirectional(&mut client, &mut server).await?;
        }
        Mode::Blackhole => {
            // Hold the connection open, silent, until the client gives up.
            let mut sink = [0u8; 1024];
            while client.read(&mut sink).await? > 0 {}
        }
        Mode::ResetMidBody => {
            client
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 5000\r\n\r\n")
                .await?;
            client.write_all(PARTIAL).await?;
            count(PARTIAL.len());
            client.flush().await?;
            tokio::time::sleep(Duration::from_millis(50)).await;
            // Linger 0: close sends RST instead of FIN. The deprecation is
            // about a non-zero linger blocking on drop; zero never waits.
            #[allow(deprecated)]
            client.set_linger(Some(Duration::ZERO))?;
            drop(client);
        }
        Mode::CutShort => {
            client
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
                .await?;
            client
                .write_all(format!("{:x}\r\n", 4096).as_bytes())
                .await?;
            client.write_all(PARTIAL).await?;
            count(PARTIAL.len());
            client.shutdown().await?;
        }
        Mode::Overannounce => {
            client
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n")
                .await?;
            client.write_all(PARTIAL).await?;
            count(PARTIAL.len());
            client.shutdown().await?;
        }
        Mode::Endless => {
            client
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
                .await?;
            let chunk = vec![b' '; 256 * 1024];
            let framed = [
                format!("{:x}\r\n", chunk.len()).into_bytes(),
                chunk,
                b"\r\n".to_vec(),
            ]
            .concat();
            // 2 GiB and on, until the client hangs up.
            loop {
                client.write_all(&framed).await?;
                count(framed.len());
            }
        }
        Mode::HugeLength => {
            client
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2147483648\r\n\r\n")
                .await?;
            let chunk = vec![b' '; 256 * 1024];
            loop {
                client.write_all(&chunk).await?;
                count(chunk.len());
            }
        }
        Mode::Trickle => {
            client
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n")
                .await?;
            for b in PARTIAL.iter().cycle() {
                client.write_all(&[*b]).await?;
                count(1);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    Ok(())
}
