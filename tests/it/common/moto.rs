//! moto's server mode as the tests' SQS: `moto_server` (from `FACEDETECT_MOTO_SERVER`, else
//! PATH; `pip install 'moto[server]'`) on a free loopback port. Without it a test is skipped,
//! unless `FACEDETECT_REQUIRE_MOTO` is set (CI), when its absence fails the test. A server that
//! exits while starting fails the test at once with what it printed.
//!
//! [`SqsProxy`] stands between a client and the server on loopback, passing every call through
//! except those it is told to stall (the request never answered, or the answer held back),
//! chosen by the call's action (`X-Amz-Target`), and counts the messages each ReceiveMessage
//! answer carries.

use std::collections::HashMap;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

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

/// How [`SqsProxy`] stalls a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stall {
    /// The request is read and never forwarded nor answered; the connection stays open until
    /// the client gives up.
    Request,
    /// The request is forwarded and an answer carrying a message held back this long.
    Answer(Duration),
}

/// A TCP proxy on loopback in front of an SQS endpoint that stalls chosen calls.
pub struct SqsProxy {
    pub endpoint: String,
    state: Arc<Mutex<ProxyState>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct ProxyState {
    /// By action: how to stall it and how many more times.
    stalls: HashMap<String, (Stall, usize)>,
    /// By action: calls stalled so far.
    stalled: HashMap<String, usize>,
    /// The message ids of every ReceiveMessage answer, in order.
    received: Vec<String>,
}

impl SqsProxy {
    /// A proxy forwarding to `upstream` (`http://host:port`).
    pub async fn start(upstream: &str) -> Self {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let state = Arc::clone(&shared);
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let _ = proxy_connection(client, &upstream, &state).await;
                });
            }
        });
        Self {
            endpoint,
            state,
            task,
        }
    }

    /// Stalls the next `times` calls of `action` (e.g. `ChangeMessageVisibility`; for
    /// [`Stall::Answer`], the next answers that carry a message).
    pub fn stall(&self, action: &str, how: Stall, times: usize) {
        self.state
            .lock()
            .unwrap()
            .stalls
            .insert(action.to_string(), (how, times));
    }

    /// How many calls of `action` were stalled so far.
    pub fn stalled(&self, action: &str) -> usize {
        let state = self.state.lock().unwrap();
        state.stalled.get(action).copied().unwrap_or(0)
    }

    /// The message ids the ReceiveMessage answers carried (a message received twice is
    /// there twice).
    pub fn received(&self) -> Vec<String> {
        self.state.lock().unwrap().received.clone()
    }
}

impl Drop for SqsProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ProxyState {
    /// Takes one stall of `action` if one is due.
    fn take_stall(&mut self, action: &str, answer_has_message: Option<bool>) -> Option<Stall> {
        let (how, left) = self.stalls.get_mut(action)?;
        let applies = match (*how, answer_has_message) {
            (Stall::Request, None) => true,
            (Stall::Answer(_), Some(has_message)) => has_message,
            _ => false,
        };
        if !applies || *left == 0 {
            return None;
        }
        *left -= 1;
        let how = *how;
        *self.stalled.entry(action.to_string()).or_default() += 1;
        Some(how)
    }
}

/// Serves one client connection: each request on a fresh upstream connection.
async fn proxy_connection(
    mut client: tokio::net::TcpStream,
    upstream: &str,
    state: &Mutex<ProxyState>,
) -> std::io::Result<()> {
    let mut pending = Vec::new();
    while let Some((head, body)) = read_message(&mut client, &mut pending, false).await? {
        let action = header(&head, "x-amz-target")
            .and_then(|target| target.rsplit('.').next().map(str::to_string))
            .unwrap_or_default();
        if state.lock().unwrap().take_stall(&action, None) == Some(Stall::Request) {
            // Never answered: wait for the client to hang up.
            let mut sink = [0u8; 1024];
            while client.read(&mut sink).await? > 0 {}
            return Ok(());
        }
        let mut server = tokio::net::TcpStream::connect(upstream).await?;
        server.write_all(&head).await?;
        server.write_all(&body).await?;
        let mut rest = Vec::new();
        let Some((answer_head, answer_body)) = read_message(&mut server, &mut rest, true).await?
        else {
            return Ok(());
        };
        let ids = message_ids(&answer_body);
        let stall = {
            let mut state = state.lock().unwrap();
            state.received.extend(ids.iter().cloned());
            state.take_stall(&action, Some(!ids.is_empty()))
        };
        if let Some(Stall::Answer(hold)) = stall {
            tokio::time::sleep(hold).await;
        }
        client.write_all(&answer_head).await?;
        client.write_all(&answer_body).await?;
        if header(&answer_head, "connection").is_some_and(|c| c.eq_ignore_ascii_case("close")) {
            return Ok(());
        }
    }
    Ok(())
}

/// Reads one HTTP message (head and body) from `stream`, `pending` holding what was read
/// past the previous one; `None` at the end of the stream. A body without a length runs to
/// the end of the stream when `to_end`, else is empty.
async fn read_message(
    stream: &mut (impl AsyncRead + Unpin),
    pending: &mut Vec<u8>,
    to_end: bool,
) -> std::io::Result<Option<(Vec<u8>, Vec<u8>)>> {
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(None);
        }
        pending.extend_from_slice(&chunk[..read]);
    };
    let head: Vec<u8> = pending.drain(..head_end).collect();
    let length = header(&head, "content-length").and_then(|n| n.parse::<usize>().ok());
    loop {
        let complete = match length {
            Some(length) => pending.len() >= length,
            None => !to_end,
        };
        if complete {
            break;
        }
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            break;
        }
        pending.extend_from_slice(&chunk[..read]);
    }
    let length = length.unwrap_or(if to_end { pending.len() } else { 0 });
    let body = pending.drain(..length.min(pending.len())).collect();
    Ok(Some((head, body)))
}

/// A header's value in an HTTP message head.
fn header(head: &[u8], name: &str) -> Option<String> {
    String::from_utf8_lossy(head)
        .lines()
        .skip(1)
        .find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_string())
        })
}

/// The message ids in a ReceiveMessage answer (AWS JSON protocol); none in any other body.
fn message_ids(body: &[u8]) -> Vec<String> {
    let Ok(answer) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Vec::new();
    };
    answer["Messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|message| message["MessageId"].as_str().map(str::to_string))
        .collect()
}
