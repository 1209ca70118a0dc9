//! A TCP proxy that can be cut: bytes pass both ways until [`TcpProxy::cut`], after which every
//! connection stays open and silent and new ones are accepted but never answered, as in a
//! network partition (no reset, no error: requests just hang). TLS passes through untouched.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

pub struct TcpProxy {
    /// `127.0.0.1:port` the proxy listens on.
    pub address: String,
    cut: Arc<AtomicBool>,
}

impl TcpProxy {
    /// Starts forwarding a free loopback port to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
        let address = listener.local_addr().expect("local address").to_string();
        let cut = Arc::new(AtomicBool::new(false));
        let (upstream, flag) = (upstream.to_owned(), cut.clone());
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { continue };
                let (upstream, flag) = (upstream.clone(), flag.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else { return };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::join!(pipe(client_read, server_write, flag.clone()), pipe(server_read, client_write, flag));
                });
            }
        });
        Self { address, cut }
    }

    /// From now on nothing passes, either way.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }
}

/// Copies `from` into `to` until either closes; once cut, reads are held and nothing is written.
async fn pipe(mut from: impl AsyncReadExt + Unpin, mut to: impl AsyncWriteExt + Unpin, cut: Arc<AtomicBool>) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        if cut.load(Ordering::SeqCst) {
            // Hold both ends open, silent, for as long as the test runs.
            std::future::pending::<()>().await;
        }
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        if cut.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
