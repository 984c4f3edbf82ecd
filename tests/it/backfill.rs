//! The backfill commands end to end: `facedetect worker` and `facedetect enqueue` as child
//! processes against a real SQS-compatible server on loopback (moto's server mode), with the
//! real models, a photo host and a callback receiver that validates bodies as concrexit does.
//!
//! moto's server is `moto_server` on PATH or the program in `FACEDETECT_MOTO_SERVER`
//! (`pip install 'moto[server]'`; .ci/run installs it): see `common::moto`.

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::service_support::*;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::{Value, json};

/// A moto server of our own, and an SQS client for it.
struct Moto {
    server: common::moto::MotoServer,
    client: Client,
}

/// The AWS settings of the tests and of the processes they start: dummy credentials and a
/// region, and the endpoint of our moto server.
fn aws_env(command: &mut Command, endpoint: &str) {
    for name in [
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL_SQS",
        "AWS_SESSION_TOKEN",
        "AWS_CONFIG_FILE",
        "AWS_SHARED_CREDENTIALS_FILE",
    ] {
        command.env_remove(name);
    }
    command
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "eu-west-1")
        .env("AWS_EC2_METADATA_DISABLED", "true");
}

impl Moto {
    async fn start() -> Option<Self> {
        let server = tokio::task::spawn_blocking(common::moto::MotoServer::start)
            .await
            .unwrap()?;
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&server.endpoint)
            .region(aws_config::Region::new("eu-west-1"))
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "testing", "testing", None, None, "tests",
            ))
            .load()
            .await;
        Some(Self {
            server,
            client: Client::new(&config),
        })
    }

    /// A queue with this visibility timeout whose redrive policy moves a message to its own
    /// dead-letter queue after `max_receives` receives. Returns (queue URL, DLQ URL).
    async fn queue(&self, name: &str, visibility: u32, max_receives: u32) -> (String, String) {
        let dlq = self
            .client
            .create_queue()
            .queue_name(format!("{name}-dlq"))
            .send()
            .await
            .unwrap()
            .queue_url
            .unwrap();
        let arn = self
            .client
            .get_queue_attributes()
            .queue_url(&dlq)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap()[&QueueAttributeName::QueueArn]
            .clone();
        let redrive = json!({"deadLetterTargetArn": arn, "maxReceiveCount": max_receives});
        let queue = self
            .client
            .create_queue()
            .queue_name(name)
            .attributes(
                QueueAttributeName::VisibilityTimeout,
                visibility.to_string(),
            )
            .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
            .send()
            .await
            .unwrap()
            .queue_url
            .unwrap();
        (queue, dlq)
    }

    async fn send(&self, queue: &str, body: &str) {
        self.client
            .send_message()
            .queue_url(queue)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }

    /// (visible, in flight) messages of a queue.
    async fn counts(&self, queue: &str) -> (usize, usize) {
        let attributes = self
            .client
            .get_queue_attributes()
            .queue_url(queue)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap();
        let count = |name| attributes[&name].parse::<usize>().unwrap();
        (
            count(QueueAttributeName::ApproximateNumberOfMessages),
            count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        )
    }

    /// Takes every visible message off a queue (hiding them for a minute) and returns the bodies.
    async fn drain(&self, queue: &str) -> Vec<String> {
        let mut bodies = Vec::new();
        loop {
            let messages = self
                .client
                .receive_message()
                .queue_url(queue)
                .max_number_of_messages(10)
                .visibility_timeout(60)
                .send()
                .await
                .unwrap()
                .messages
                .unwrap_or_default();
            if messages.is_empty() {
                return bodies;
            }
            bodies.extend(messages.into_iter().filter_map(|m| m.body));
        }
    }
}

fn facedetect(moto: &Moto) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_facedetect"));
    command.env("FACEDETECT_WEIGHTS", common::weights_dir());
    aws_env(&mut command, &moto.server.endpoint);
    command
}

/// A running `facedetect worker` and the JSON log lines it wrote so far.
struct Worker {
    child: common::KillOnDrop,
    logs: Arc<Mutex<Vec<Value>>>,
}

impl Worker {
    fn start(moto: &Moto, queue: &str, args: &[&str]) -> Self {
        let mut child = facedetect(moto)
            .args(["worker", "--queue-url", queue, "--retry-backoff", "1"])
            .args(["--destinations", "local"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let value = serde_json::from_str::<Value>(&line)
                    .unwrap_or_else(|_| json!({"unparsed": line}));
                sink.lock().unwrap().push(value);
            }
        });
        Self {
            child: common::KillOnDrop(child),
            logs,
        }
    }

    fn child(&mut self) -> &mut Child {
        &mut self.child.0
    }

    /// The log lines with this message.
    fn lines(&self, message: &str) -> Vec<Value> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line["message"] == message)
            .cloned()
            .collect()
    }

    fn all_logs(&self) -> String {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn terminate(&mut self) {
        self.child.terminate();
    }

    /// Waits for the process to exit, at most `limit`.
    async fn exit_within(&mut self, limit: Duration) -> ExitStatus {
        match self.child.exit_within(limit).await {
            Some(status) => status,
            None => panic!(
                "the worker did not exit within {limit:?}; logs:\n{}",
                self.all_logs()
            ),
        }
    }
}

/// Polls `done` until it holds, failing after `limit` with `what` and the worker's logs.
async fn wait_for(
    limit: Duration,
    what: &str,
    worker: &Worker,
    mut done: impl AsyncFnMut() -> bool,
) {
    let started = Instant::now();
    while !done().await {
        assert!(
            started.elapsed() < limit,
            "timed out waiting for {what}; logs:\n{}",
            worker.all_logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn payload(api: &str, sources: Vec<Value>) -> String {
    json!({"api_url": api, "sources": sources}).to_string()
}

/// Sources `pks` on `photo_base`, each with its own photo `p{pk}.png` (a small PNG of a
/// shade of its own: no face, so it posts an empty list) and token `token-{pk}`, known to
/// the receiver.
fn small_sources(
    photos: &PhotoServer,
    receiver: &Receiver,
    photo_base: &str,
    pks: std::ops::Range<u64>,
) -> Vec<Value> {
    pks.map(|pk| {
        photos.add(&format!("p{pk}.png"), png(48, 40, pk as u8));
        receiver.expect("photo", pk, &format!("token-{pk}"));
        source(
            pk,
            "photo",
            &format!("{photo_base}/photo/p{pk}.png"),
            &format!("token-{pk}"),
        )
    })
    .collect()
}

fn assert_no_token_logged(worker: &Worker) {
    let logs = worker.all_logs();
    assert!(!logs.contains("token-"), "a token was logged:\n{logs}");
}

const MINUTE: Duration = Duration::from_secs(60);

/// Payloads sent with `facedetect enqueue` are all processed: each source is posted once,
/// with real encodings, every message is deleted, nothing reaches the dead-letter queue, and
/// an idle worker stops at once on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_posts_every_source_exactly_once() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    let (queue, dlq) = moto.queue("all", 5, 2).await;
    let (photos, photo_base) = PhotoServer::start().await;
    let (receiver, api) = Receiver::start().await;
    photos.add(
        "obama.webp",
        common::pkg_fixture("images/medium/obama.webp"),
    );
    receiver.expect("reference", 100, "token-100");
    let mut first = small_sources(&photos, &receiver, &photo_base, 1..12);
    first.push(source(
        100,
        "reference",
        &format!("{photo_base}/photo/obama.webp"),
        "token-100",
    ));
    let lines = [
        payload(&api, first),
        payload(&api, small_sources(&photos, &receiver, &photo_base, 12..14)),
        payload(&api, small_sources(&photos, &receiver, &photo_base, 14..20)),
    ];
    let input =
        std::env::temp_dir().join(format!("facedetect-worker-{}.jsonl", std::process::id()));
    std::fs::write(&input, lines.join("\n")).unwrap();
    let sent = facedetect(&moto)
        .args(["enqueue", &input.to_string_lossy(), "--queue-url", &queue])
        .args(["--sources-per-message", "5"])
        .output()
        .unwrap();
    std::fs::remove_file(&input).unwrap();
    assert!(sent.status.success(), "{sent:?}");
    // 12 + 2 + 6 sources in messages of at most 5: 3 + 1 + 2.
    assert_eq!(
        String::from_utf8_lossy(&sent.stdout).trim(),
        "3 payloads sent as 6 messages (20 sources)"
    );

    let mut worker = Worker::start(&moto, &queue, &[]);
    wait_for(2 * MINUTE, "every source delivered", &worker, async || {
        receiver.delivered_count() == 20
    })
    .await;
    wait_for(MINUTE, "every message deleted", &worker, async || {
        worker.lines("message done").len() == 6 && moto.counts(&queue).await == (0, 0)
    })
    .await;
    for pk in (1..20).chain([100]) {
        let kind = if pk == 100 { "reference" } else { "photo" };
        assert_eq!(receiver.attempts(kind, pk), 1, "{kind} {pk}");
    }
    let reference: common::Reference = serde_json::from_str(
        &std::fs::read_to_string(
            common::crate_dir().join("tests/fixtures/pkg/medium/obama/reference.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let delivered = receiver.delivered("reference", 100).unwrap();
    assert_eq!(delivered.len(), reference.seed_encodings.len());
    assert!(!delivered.is_empty());
    for (got, want) in delivered.iter().zip(&reference.seed_encodings) {
        let worst = got
            .iter()
            .zip(want)
            .map(|(a, b)| (*a as f32 - b).abs())
            .fold(0f32, f32::max);
        assert!(worst <= 0.01, "encoding differs by {worst}");
    }
    for line in worker.lines("message done") {
        assert_eq!(line["action"], "deleted", "{line}");
        assert_eq!(line["failed"], 0, "{line}");
    }
    let sources = worker.lines("source done");
    assert_eq!(sources.len(), 20);
    assert!(
        sources
            .iter()
            .all(|line| line["span"]["message_id"].is_string())
    );
    assert_eq!(moto.counts(&dlq).await, (0, 0));
    assert_no_token_logged(&worker);

    // Idle in its long poll: SIGTERM stops it at once.
    worker.terminate();
    let status = worker.exit_within(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}");
    assert_eq!(worker.lines("worker stopped")[0]["deleted"], 6);
}

/// A worker killed with SIGKILL in the middle of its batch loses nothing: its messages come
/// back after their visibility timeout and a second worker completes them; sources the first
/// one posted are answered "not processing" and count as done, none as failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_batch_loses_nothing() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    let (queue, dlq) = moto.queue("killed", 3, 5).await;
    let (photos, photo_base) = PhotoServer::start().await;
    let (receiver, api) = Receiver::start().await;
    for first in [1, 6, 11, 16] {
        let sources = small_sources(&photos, &receiver, &photo_base, first..first + 5);
        moto.send(&queue, &payload(&api, sources)).await;
    }
    // Slow photos, two at a time: the first worker is in the middle of everything.
    *photos.delay.lock().unwrap() = Duration::from_millis(400);
    let mut first = Worker::start(&moto, &queue, &["--concurrency", "2"]);
    wait_for(MINUTE, "some sources delivered", &first, async || {
        receiver.delivered_count() >= 3
    })
    .await;
    first.child().kill().unwrap();
    first.exit_within(Duration::from_secs(5)).await;
    let before = receiver.delivered_count();
    assert!(
        before < 20,
        "the first worker finished before it was killed"
    );
    assert!(
        worker_held_messages(&first),
        "the first worker held no message"
    );

    *photos.delay.lock().unwrap() = Duration::ZERO;
    let second = Worker::start(&moto, &queue, &[]);
    wait_for(MINUTE, "every source delivered", &second, async || {
        receiver.delivered_count() == 20
    })
    .await;
    wait_for(MINUTE, "the queue emptied", &second, async || {
        moto.counts(&queue).await == (0, 0)
    })
    .await;
    assert!(
        second.lines("source failed").is_empty(),
        "{}",
        second.all_logs()
    );
    let done = second.lines("message done");
    assert!(!done.is_empty());
    assert!(done.iter().all(|line| line["failed"] == 0));
    let already: u64 = done
        .iter()
        .map(|line| line["already_processed"].as_u64().unwrap())
        .sum();
    println!("delivered before the kill: {before}; re-posted as already processed: {already}");
    for pk in 1..21 {
        assert!(receiver.delivered("photo", pk).is_some(), "photo {pk}");
        assert!(receiver.attempts("photo", pk) <= 2, "photo {pk}");
    }
    assert_eq!(moto.counts(&dlq).await, (0, 0));
}

/// Whether the worker's log shows it started work on a message (a source line inside a
/// message span) that it never finished.
fn worker_held_messages(worker: &Worker) -> bool {
    let finished: Vec<Value> = worker
        .lines("message done")
        .iter()
        .map(|line| line["message_id"].clone())
        .collect();
    worker
        .lines("source done")
        .iter()
        .any(|line| !finished.contains(&line["span"]["message_id"]))
}

/// A message whose body is not a valid payload is released at once, never processed, and
/// ends in the dead-letter queue after the maximum receive count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_bodies_go_to_the_dead_letter_queue_unprocessed() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    let (queue, dlq) = moto.queue("invalid", 30, 2).await;
    let (photos, photo_base) = PhotoServer::start().await;
    let (receiver, api) = Receiver::start().await;
    photos.add("never.png", png(40, 40, 3));
    receiver.expect("photo", 1, "token-1");
    let bad_pk = payload(
        &api,
        vec![
            json!({"pk": "1", "type": "photo", "photo_url": format!("{photo_base}/photo/never.png"), "token": "token-1"}),
        ],
    );
    let bodies = ["this is not json", bad_pk.as_str()];
    for body in bodies {
        moto.send(&queue, body).await;
    }
    let worker = Worker::start(&moto, &queue, &[]);
    wait_for(
        MINUTE,
        "both messages in the dead-letter queue",
        &worker,
        async || moto.counts(&dlq).await.0 == 2,
    )
    .await;
    let mut in_dlq = moto.drain(&dlq).await;
    in_dlq.sort();
    let mut sent: Vec<String> = bodies.iter().map(|b| b.to_string()).collect();
    sent.sort();
    assert_eq!(in_dlq, sent);
    assert_eq!(
        photos.gauge.total(),
        0,
        "a photo of an invalid payload was downloaded"
    );
    assert_eq!(receiver.attempts("photo", 1), 0);
    let released = worker.lines("message is not a valid payload: released unprocessed");
    // Each message was received twice (the maximum) before the queue moved it.
    assert_eq!(released.len(), 4, "{}", worker.all_logs());
    assert!(
        released
            .iter()
            .any(|line| line["error"].as_str().unwrap().contains("sources[0].pk"))
    );
    assert_no_token_logged(&worker);
    assert_eq!(moto.counts(&queue).await, (0, 0));
}

/// A message with a source whose photo answers 404 is retried after a backoff and ends in the
/// dead-letter queue after the maximum receive count; its good sources were posted once (the
/// retry's posts are answered "not processing").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_source_sends_its_message_to_the_dead_letter_queue() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    let (queue, dlq) = moto.queue("failing", 5, 2).await;
    let (photos, photo_base) = PhotoServer::start().await;
    let (receiver, api) = Receiver::start().await;
    let mut sources = small_sources(&photos, &receiver, &photo_base, 1..3);
    receiver.expect("photo", 3, "token-3");
    sources.insert(
        1,
        source(
            3,
            "photo",
            &format!("{photo_base}/photo/missing.png"),
            "token-3",
        ),
    );
    let body = payload(&api, sources);
    moto.send(&queue, &body).await;
    let good = small_sources(&photos, &receiver, &photo_base, 10..12);
    moto.send(&queue, &payload(&api, good)).await;

    let worker = Worker::start(&moto, &queue, &[]);
    wait_for(
        MINUTE,
        "the message in the dead-letter queue",
        &worker,
        async || moto.counts(&dlq).await.0 == 1,
    )
    .await;
    assert_eq!(moto.drain(&dlq).await, vec![body]);
    let retries = worker.lines("message has failed sources: left to be retried");
    assert_eq!(retries.len(), 2, "{}", worker.all_logs());
    assert_eq!(retries[0]["receive_count"], 1);
    assert_eq!(retries[1]["receive_count"], 2);
    // --retry-backoff 1: 1 s after the first receive, 2 s after the second.
    assert_eq!(retries[0]["retry_in_s"], 1);
    assert_eq!(retries[1]["retry_in_s"], 2);
    for pk in [1, 2] {
        assert!(receiver.delivered("photo", pk).is_some(), "photo {pk}");
        assert_eq!(receiver.attempts("photo", pk), 2, "photo {pk}");
    }
    assert_eq!(receiver.attempts("photo", 3), 0);
    for pk in [10, 11] {
        assert_eq!(receiver.attempts("photo", pk), 1, "photo {pk}");
    }
    let failed = worker.lines("source failed");
    assert_eq!(failed.len(), 2);
    assert!(
        failed
            .iter()
            .all(|line| line["stage"] == "download" && line["pk"] == 3)
    );
    assert_no_token_logged(&worker);
}

/// SIGTERM while working: the worker stops receiving, finishes what it can within the bound
/// (`--shutdown-timeout`), releases the rest at once, and exits 0; nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_or_releases_the_work_in_flight() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    let (queue, dlq) = moto.queue("terminated", 30, 2).await;
    let (quick, quick_base) = PhotoServer::start().await;
    let (slow, slow_base) = PhotoServer::start().await;
    let (receiver, api) = Receiver::start().await;
    *quick.delay.lock().unwrap() = Duration::from_millis(1500);
    *slow.delay.lock().unwrap() = Duration::from_secs(60);
    let finishing = small_sources(&quick, &receiver, &quick_base, 1..3);
    moto.send(&queue, &payload(&api, finishing)).await;
    slow.add("p9.png", png(48, 40, 9));
    receiver.expect("photo", 9, "token-9");
    let stuck = payload(
        &api,
        vec![source(
            9,
            "photo",
            &format!("{slow_base}/photo/p9.png"),
            "token-9",
        )],
    );
    moto.send(&queue, &stuck).await;

    let bound = Duration::from_secs(4);
    let mut worker = Worker::start(&moto, &queue, &["--shutdown-timeout", "4"]);
    wait_for(MINUTE, "both messages in progress", &worker, async || {
        quick.gauge.total() >= 2 && slow.gauge.total() >= 1
    })
    .await;
    worker.terminate();
    let signalled = Instant::now();
    let status = worker.exit_within(bound + Duration::from_secs(6)).await;
    let took = signalled.elapsed();
    assert!(status.success(), "{status:?}\n{}", worker.all_logs());
    println!("exited {took:?} after SIGTERM (bound {bound:?})");
    assert!(
        took >= bound,
        "the worker did not wait for the slow message"
    );

    // The quick message finished within the bound and was deleted...
    assert!(receiver.delivered("photo", 1).is_some());
    assert!(receiver.delivered("photo", 2).is_some());
    // ...the slow one was released at once, not left invisible for its 30 s.
    assert_eq!(moto.counts(&queue).await, (1, 0));
    assert_eq!(moto.drain(&queue).await, vec![stuck]);
    let stopped = &worker.lines("worker stopped")[0];
    assert_eq!(stopped["deleted"], 1, "{stopped}");
    assert_eq!(stopped["released"], 1, "{stopped}");
    assert_eq!(worker.lines("message released at shutdown").len(), 1);
    assert_eq!(moto.counts(&dlq).await, (0, 0));
}

/// `facedetect enqueue` splits payloads into messages of at most N sources, reports the
/// counts, and refuses an input with an invalid payload before sending anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_splits_counts_and_refuses_invalid_input() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    let (queue, _) = moto.queue("enqueue", 30, 2).await;
    let api = "https://thalia.example";
    let sources = |pks: std::ops::Range<u64>| -> Vec<Value> {
        pks.map(|pk| {
            source(
                pk,
                "photo",
                &format!("https://media.example/{pk}.jpg?sig=s"),
                &format!("token-{pk}"),
            )
        })
        .collect()
    };
    let lines = [
        payload(api, sources(0..45)),
        payload(api, sources(45..46)),
        payload(api, sources(46..66)),
    ];
    let input = lines.join("\n");

    // An invalid payload on line 2: refused with the shared error, nothing sent.
    let mut invalid_lines = lines.clone();
    invalid_lines[1] = json!({"api_url": api, "sources": [{"pk": "45", "type": "photo", "photo_url": "https://m/45.jpg", "token": "token-45"}]}).to_string();
    let refused = common::run_with_stdin(
        facedetect(&moto).args(["enqueue", "-", "--queue-url", &queue]),
        &invalid_lines.join("\n"),
    );
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("line 2: sources[0].pk: expected an integer, found a string"),
        "{stderr}"
    );
    assert!(!stderr.contains("token-"), "{stderr}");
    assert_eq!(moto.counts(&queue).await, (0, 0));

    // 45 + 1 + 20 sources in messages of at most 4: 12 + 1 + 5, in two SendMessageBatch calls.
    let sent = common::run_with_stdin(
        facedetect(&moto).args([
            "enqueue",
            "-",
            "--queue-url",
            &queue,
            "--sources-per-message",
            "4",
        ]),
        &input,
    );
    assert!(sent.status.success(), "{sent:?}");
    assert_eq!(
        String::from_utf8_lossy(&sent.stdout).trim(),
        "3 payloads sent as 18 messages (66 sources)"
    );
    let bodies = moto.drain(&queue).await;
    assert_eq!(bodies.len(), 18);
    let mut seen = Vec::new();
    for body in &bodies {
        let message: Value = serde_json::from_str(body).unwrap();
        assert_eq!(message["api_url"], "https://thalia.example/");
        let sources = message["sources"].as_array().unwrap();
        assert!((1..=4).contains(&sources.len()), "{body}");
        for source in sources {
            let pk = source["pk"].as_u64().unwrap();
            assert_eq!(source["token"], format!("token-{pk}"));
            assert_eq!(
                source["photo_url"],
                format!("https://media.example/{pk}.jpg?sig=s")
            );
            assert_eq!(source["type"], "photo");
            seen.push(pk);
        }
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..66).collect::<Vec<_>>());

    // The default split is concrexit's 20 per message.
    let sent = common::run_with_stdin(
        facedetect(&moto).args(["enqueue", "-", "--queue-url", &queue]),
        &lines[0],
    );
    assert!(sent.status.success(), "{sent:?}");
    assert_eq!(
        String::from_utf8_lossy(&sent.stdout).trim(),
        "1 payloads sent as 3 messages (45 sources)"
    );
}

/// `--device cuda` on a build without the cuda feature fails with a clear error instead of
/// running on the CPU.
#[test]
fn cuda_device_without_the_feature_is_refused() {
    if cfg!(feature = "cuda") {
        eprintln!("skipped: built with the cuda feature");
        return;
    }
    let output = Command::new(env!("CARGO_BIN_EXE_facedetect"))
        .env_remove("FACEDETECT_DEVICE")
        .args([
            "worker",
            "--queue-url",
            "http://127.0.0.1:9/q",
            "--device",
            "cuda",
        ])
        .env("FACEDETECT_WEIGHTS", common::weights_dir())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--device cuda: this facedetect was built without the `cuda` feature"),
        "{stderr}"
    );
}

/// scripts/concrexit_backfill_payloads.py, run as under concrexit's `manage.py shell` against a
/// stand-in for concrexit's models (tests/it/fixtures/concrexit_stub.py), prints what
/// concrexit's own backfill would submit (stale reference faces and photos, then photos without
/// a FaceDetectionPhoto, in batches of FACEDETECTION_LAMBDA_BATCH_SIZE, URLs signed for 7 h),
/// marks each submitted, and `facedetect enqueue -` takes its output as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concrexits_backfill_payloads_go_through_enqueue() {
    let python = std::env::var("FACEDETECT_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let Ok(script) = Command::new(&python)
        .arg(common::crate_dir().join("tests/it/fixtures/concrexit_stub.py"))
        .arg(common::crate_dir().join("scripts/concrexit_backfill_payloads.py"))
        .output()
    else {
        assert!(
            std::env::var_os("FACEDETECT_REQUIRE_LINTERS").is_none(),
            "{python} not found"
        );
        eprintln!("SKIPPED: {python} not found");
        return;
    };
    let stderr = String::from_utf8_lossy(&script.stderr);
    assert!(script.status.success(), "{stderr}");
    let stdout = String::from_utf8(script.stdout).unwrap();
    let payloads: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let summary = |p: &Value| -> Vec<(String, u64)> {
        p["sources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["type"].as_str().unwrap().to_string(),
                    s["pk"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let photos = |pks: std::ops::Range<u64>| pks.map(|pk| ("photo".to_string(), pk)).collect();
    // Stale reference faces (over 7 h, or never submitted), stale photos in batches of 20, then
    // the photos that had no FaceDetectionPhoto.
    assert_eq!(
        payloads.iter().map(summary).collect::<Vec<_>>(),
        vec![
            vec![("reference".to_string(), 1), ("reference".to_string(), 2)],
            photos(1..21),
            photos(21..26),
            photos(1028..1031),
        ]
    );
    for payload in &payloads {
        assert_eq!(payload["api_url"], "https://thalia.example");
        for source in payload["sources"].as_array().unwrap() {
            let url = source["photo_url"].as_str().unwrap();
            assert!(url.contains("X-Amz-Expires=25200"), "{url}");
            assert!(source["token"].as_str().unwrap().starts_with("token-"));
        }
    }
    let saved = stderr
        .lines()
        .find_map(|line| line.strip_prefix("STUB "))
        .unwrap();
    let saved: Value = serde_json::from_str(saved).unwrap();
    assert_eq!(saved["saved"].as_array().unwrap().len(), 30, "{saved}");

    let Some(moto) = Moto::start().await else {
        return;
    };
    let (queue, _) = moto.queue("concrexit", 30, 2).await;
    let sent = common::run_with_stdin(
        facedetect(&moto).args(["enqueue", "-", "--queue-url", &queue]),
        &stdout,
    );
    assert!(sent.status.success(), "{sent:?}");
    assert_eq!(
        String::from_utf8_lossy(&sent.stdout).trim(),
        "4 payloads sent as 4 messages (30 sources)"
    );
    assert_eq!(moto.drain(&queue).await.len(), 4);
}
