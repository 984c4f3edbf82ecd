//! A shutdown signal that many tasks can wait for, in the manner of tokio's mini-redis
//! `shutdown.rs`: one [`ShutdownTrigger`] fires it once, every [`Shutdown`] clone sees it, and a
//! task that looks after it fired sees it at once.
//!
//! [`Signals::install`] fires one on the first SIGTERM (ECS or a container runtime stopping a
//! task) or SIGINT (Ctrl-C) and another on the next. On the first, `facedetect serve` stops
//! accepting and finishes its accepted work ([`crate::service::serve`]) and the backfill worker
//! stops receiving and drains or releases its messages ([`crate::backfill::worker`]); on the
//! second, both stop at once. The Lambda function has no use for it: Lambda
//! freezes or ends the process between invocations and sends SIGTERM only to functions with
//! extensions, and every invocation already answers before its deadline.

use tokio::sync::watch;

/// Waits for shutdown; clone it for every task that should stop.
#[derive(Debug, Clone)]
pub struct Shutdown {
    receiver: watch::Receiver<bool>,
}

/// Fires the shutdown of every [`Shutdown`] made with it.
#[derive(Debug)]
pub struct ShutdownTrigger {
    sender: watch::Sender<bool>,
}

impl Shutdown {
    /// A signal not yet fired, and the trigger that fires it.
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (sender, receiver) = watch::channel(false);
        (ShutdownTrigger { sender }, Shutdown { receiver })
    }

    /// Whether the signal has fired.
    pub fn is_shutdown(&self) -> bool {
        *self.receiver.borrow()
    }

    /// Waits until the signal fires (returns at once if it has). A dropped trigger that never
    /// fired counts as a shutdown too: nothing could fire it any more.
    pub async fn recv(&mut self) {
        let _ = self.receiver.wait_for(|fired| *fired).await;
    }
}

impl ShutdownTrigger {
    /// Fires the signal; firing again does nothing.
    pub fn fire(&self) {
        self.sender.send_replace(true);
    }
}

/// The first and the second shutdown request, for a process that drains on the first and
/// stops at once on the second.
#[derive(Debug, Clone)]
pub struct Signals {
    /// Fired by the first SIGTERM or SIGINT.
    pub first: Shutdown,
    /// Fired by the next one.
    pub second: Shutdown,
}

impl Signals {
    /// Signals fired by this process's first and second SIGTERM or SIGINT (in any mix). Must
    /// be called inside a tokio runtime; fails when the signal handlers cannot be installed.
    pub fn install() -> std::io::Result<Signals> {
        let (first_trigger, first) = Shutdown::new();
        let (second_trigger, second) = Shutdown::new();
        #[cfg(unix)]
        let (mut terminate, mut interrupt) = {
            use tokio::signal::unix::{SignalKind, signal};
            (
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
            )
        };
        tokio::spawn(async move {
            for (trigger, order) in [(first_trigger, "first"), (second_trigger, "second")] {
                #[cfg(unix)]
                let name = tokio::select! {
                    _ = terminate.recv() => "SIGTERM",
                    _ = interrupt.recv() => "SIGINT",
                };
                #[cfg(not(unix))]
                let name = match tokio::signal::ctrl_c().await {
                    Ok(()) => "Ctrl-C",
                    // Keeps the triggers unfired while the process runs.
                    Err(_) => return std::future::pending().await,
                };
                tracing::info!(signal = name, order, "shutdown requested");
                trigger.fire();
            }
        });
        Ok(Signals { first, second })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_clone_sees_the_signal_even_when_looking_late() {
        let (trigger, shutdown) = Shutdown::new();
        let mut early = shutdown.clone();
        let waiter = tokio::spawn(async move { early.recv().await });
        assert!(!shutdown.is_shutdown());
        trigger.fire();
        waiter.await.unwrap();
        let mut late = shutdown.clone();
        late.recv().await;
        assert!(late.is_shutdown());
    }
}
