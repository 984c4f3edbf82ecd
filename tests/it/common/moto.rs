//! moto's server mode as the tests' SQS: `moto_server` (from `FACEDETECT_MOTO_SERVER`, else
//! PATH; `pip install 'moto[server]'`) on a free loopback port. Without it a test is skipped,
//! unless `FACEDETECT_REQUIRE_MOTO` is set (CI), when its absence fails the test. A server that
//! exits while starting fails the test at once with what it printed.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::KillOnDrop;

/// How long a server that keeps running may take to listen (Python imports on a busy machine).
const STARTUP_LIMIT: Duration = Duration::from_secs(60);

/// A running moto server, stopped when dropped.
pub struct MotoServer {
    _process: KillOnDrop,
    pub endpoint: String,
}

impl MotoServer {
    /// Starts a server and waits until it listens; `None` when moto is not installed and not
    /// required. Blocks while it starts.
    pub fn start() -> Option<Self> {
        let program = program()?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free loopback port")
            .port();
        // Its log goes to a file, not a pipe: a pipe nobody reads would stall it once full.
        let log_path =
            std::env::temp_dir().join(format!("facedetect-moto-{}-{port}.log", std::process::id()));
        let log = std::fs::File::create(&log_path).expect("moto's log file");
        let mut process = KillOnDrop(
            Command::new(&program)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|error| panic!("{} does not start: {error}", program.display())),
        );
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            let exited = process.0.try_wait().expect("moto_server's status");
            if exited.is_some() || started.elapsed() >= STARTUP_LIMIT {
                let printed = std::fs::read_to_string(&log_path).unwrap_or_default();
                let _ = std::fs::remove_file(&log_path);
                match exited {
                    Some(status) => panic!("{} exited ({status}):\n{printed}", program.display()),
                    None => panic!(
                        "{} did not listen within {STARTUP_LIMIT:?}:\n{printed}",
                        program.display()
                    ),
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = std::fs::remove_file(&log_path);
        Some(Self {
            _process: process,
            endpoint: format!("http://127.0.0.1:{port}"),
        })
    }
}

fn program() -> Option<PathBuf> {
    let program = std::env::var_os("FACEDETECT_MOTO_SERVER")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .map(|dir| dir.join("moto_server"))
                .find(|candidate| candidate.is_file())
        });
    if program.is_none() {
        assert!(
            std::env::var_os("FACEDETECT_REQUIRE_MOTO").is_none(),
            "moto_server not found: pip install 'moto[server]' or set FACEDETECT_MOTO_SERVER"
        );
        eprintln!(
            "skipped: moto_server not found (pip install 'moto[server]', or set FACEDETECT_MOTO_SERVER)"
        );
    }
    program
}
