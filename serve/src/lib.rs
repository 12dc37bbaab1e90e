//! How vecsync's HTTP listeners serve: the ingest API, the consumer's API,
//! the lag exporter and the development registry. Plain HTTP, or TLS from a
//! PEM certificate chain and key, always with graceful shutdown.
//!
//! ```no_run
//! # async fn demo(router: axum::Router) -> std::io::Result<()> {
//! use std::path::Path;
//! let tls = vecsync_serve::Tls::from_files(Path::new("server.pem"), Path::new("server.key"))?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! vecsync_serve::serve(listener, Some(tls), router, std::future::pending()).await
//! # }
//! ```

use axum::Router;
use axum::serve::Listener;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use vecsync_schemas::config::ListenerTls;

/// A client gets this long to finish its TLS handshake; a slow or silent one
/// holds up nobody else.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshaken connections waiting for the server to take them.
const ACCEPTED_QUEUE: usize = 64;

/// A listener's TLS: its certificate chain and private key.
#[derive(Clone)]
pub struct Tls(Arc<ServerConfig>);

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls(..)")
    }
}

impl Tls {
    /// TLS from a PEM certificate chain (the server's certificate first) and
    /// its unencrypted PEM private key (PKCS#8, PKCS#1 or SEC1). Errors name
    /// the file and what is wrong with it.
    pub fn from_files(cert_file: &Path, key_file: &Path) -> io::Result<Self> {
        let invalid = |file: &Path, what: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {what}", file.display()),
            )
        };
        let certs = CertificateDer::pem_file_iter(cert_file)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| invalid(cert_file, &format!("cannot read the certificates: {e}")))?;
        if certs.is_empty() {
            return Err(invalid(cert_file, "holds no PEM certificate"));
        }
        let key = PrivateKeyDer::from_pem_file(key_file)
            .map_err(|e| invalid(key_file, &format!("cannot read the private key: {e}")))?;
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(io::Error::other)?
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .map_err(|e| {
                    invalid(
                        key_file,
                        &format!("does not go with {}: {e}", cert_file.display()),
                    )
                })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self(Arc::new(config)))
    }
}

impl Tls {
    /// The TLS a listener's config asks for (`[ingest.tls]`, …; `field`
    /// names it in errors), read now; `None` for plain HTTP.
    pub fn of(tls: Option<&ListenerTls>, field: &str) -> io::Result<Option<Self>> {
        tls.map(|t| {
            Self::from_files(&t.cert_file, &t.key_file)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{field}: {e}")))
        })
        .transpose()
    }
}

/// Serves `router` on `listener`, over TLS when `tls` is given, until
/// `shutdown` resolves; requests in flight then finish.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Tls>,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    match tls {
        None => {
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Some(tls) => {
            axum::serve(TlsListener::new(listener, tls)?, router)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
}

/// Accepts TCP connections and hands over those whose TLS handshake
/// succeeded. Handshakes run in tasks of their own.
struct TlsListener {
    local: SocketAddr,
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
}

impl TlsListener {
    fn new(listener: TcpListener, tls: Tls) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, accepted) = mpsc::channel(ACCEPTED_QUEUE);
        let acceptor = TlsAcceptor::from(tls.0);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    _ = tx.closed() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(e) => {
                            // As axum does: mostly out of file descriptors.
                            tracing::warn!(error = %e, "cannot accept a connection");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send((stream, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { local, accepted })
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            // The accepting task is gone only when the server is.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// `GET` of a listener's OpenAPI document (`/openapi.json`), kept beside
/// the code that serves it and compiled in.
pub fn openapi<S: Clone + Send + Sync + 'static>(
    document: &'static str,
) -> axum::routing::MethodRouter<S> {
    axum::routing::get(move || async move {
        (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            document,
        )
    })
}
