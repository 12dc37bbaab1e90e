//! A real Prometheus server (Debian's `prometheus` package, which `.ci/run`
//! installs) started on a free loopback port, for the dashboard tests.

use crate::broker::{free_port, skip_without, wait_listening, which};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A running Prometheus, stopped when dropped.
#[derive(Debug)]
pub struct Prometheus {
    port: u16,
    log: PathBuf,
    child: Child,
}

impl Prometheus {
    /// Starts Prometheus with `config` (rule files are found relative to
    /// it), keeping its data in `data`. `None` after a loud message when
    /// Prometheus is not installed and the user opted out of such tests
    /// ([`skip_without`]).
    pub fn start(config: &Path, data: &Path) -> Option<Self> {
        let Some(binary) = which("prometheus") else {
            skip_without("prometheus is not installed (apt-get install prometheus)");
            return None;
        };
        let port = free_port().unwrap_or_else(|e| panic!("no free loopback port: {e}"));
        let log = data.join("prometheus.log");
        let start = || -> io::Result<Child> {
            std::fs::create_dir_all(data)?;
            let out = std::fs::File::create(&log)?;
            Command::new(&binary)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    data.join("tsdb").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out)
                .spawn()
        };
        let mut child = start().unwrap_or_else(|e| panic!("failed to start prometheus: {e}"));
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        wait_listening("prometheus", &mut child, addr, &log)
            .unwrap_or_else(|e| panic!("failed to start prometheus: {e}"));
        Some(Self { port, log, child })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Prometheus's own log, to read when a test fails.
    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
