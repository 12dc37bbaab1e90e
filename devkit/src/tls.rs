//! Certificates for tests of TLS listeners: a CA and a server certificate
//! it signs for 127.0.0.1 and localhost, made with OpenSSL's command line.

use std::io;
use std::path::{Path, PathBuf};

/// PEM files in one directory: the CA to trust, and the server's
/// certificate and unencrypted key.
#[derive(Debug, Clone)]
pub struct TestCerts {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl TestCerts {
    /// Makes a CA named `name` and a server certificate it signs, in `dir`.
    pub fn make(dir: &Path, name: &str) -> io::Result<Self> {
        Self::signed(
            dir,
            name,
            "/CN=127.0.0.1",
            "subjectAltName = IP:127.0.0.1, DNS:localhost\n\
             basicConstraints = CA:FALSE\n\
             extendedKeyUsage = serverAuth\n",
        )
    }

    /// A CA and a certificate it signs for `subject` with the X.509v3
    /// extensions `extensions`: `dir/<name>-ca.pem`, `dir/<name>.pem` and
    /// its key `dir/<name>.key`.
    pub(crate) fn signed(
        dir: &Path,
        name: &str,
        subject: &str,
        extensions: &str,
    ) -> io::Result<Self> {
        let path = |file: &str| dir.join(format!("{name}{file}"));
        let (ca_key, ca_file, key_file, csr, cert_file, ext) = (
            path("-ca.key"),
            path("-ca.pem"),
            path(".key"),
            path(".csr"),
            path(".pem"),
            path(".ext"),
        );
        std::fs::write(&ext, extensions)?;
        let s = |p: &PathBuf| p.display().to_string();
        let ca_subject = format!("/CN=vecsync-devkit-{name}-ca");
        for args in [
            vec![
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &s(&ca_key),
                "-out",
                &s(&ca_file),
                "-days",
                "2",
                "-subj",
                &ca_subject,
            ],
            vec![
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &s(&key_file),
                "-out",
                &s(&csr),
                "-subj",
                subject,
            ],
            vec![
                "x509",
                "-req",
                "-in",
                &s(&csr),
                "-CA",
                &s(&ca_file),
                "-CAkey",
                &s(&ca_key),
                "-CAcreateserial",
                "-out",
                &s(&cert_file),
                "-days",
                "2",
                "-extfile",
                &s(&ext),
            ],
        ] {
            crate::kafka::run_tool("openssl", &args)?;
        }
        Ok(Self {
            ca_file,
            cert_file,
            key_file,
        })
    }

    /// The listener TLS that serves this certificate.
    pub fn tls(&self) -> io::Result<vecsync_serve::Tls> {
        vecsync_serve::Tls::from_files(&self.cert_file, &self.key_file)
    }

    /// A client that trusts this CA (and the system's).
    pub fn client(&self) -> io::Result<reqwest::Client> {
        let pem = std::fs::read(&self.ca_file)?;
        let ca = reqwest::Certificate::from_pem(&pem).map_err(io::Error::other)?;
        reqwest::Client::builder()
            .tls_certs_merge([ca])
            .build()
            .map_err(io::Error::other)
    }
}
