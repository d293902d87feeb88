//! Requests from the REST API (or anything else in-process) to the agent's HA loop, which carries
//! them out between cycles, so that no two actions on PostgreSQL ever overlap.

use tokio::sync::{mpsc, oneshot};

#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    /// Restart PostgreSQL now, if the conditions hold (Patroni's POST /restart without schedule).
    Restart(RestartConditions),
    /// Remember a restart for later (`schedule` is an ISO-8601 timestamp with a time zone).
    ScheduleRestart {
        schedule: String,
        conditions: RestartConditions,
    },
    /// DELETE /restart.
    CancelScheduledRestart,
    /// Re-read the local configuration file and reload PostgreSQL (POST /reload, SIGHUP).
    Reload,
    /// Wipe the data directory and clone again (POST /reinitialize).
    Reinitialize { force: bool, from_leader: bool },
    /// Query PostgreSQL now and publish a fresh status (so `/patroni` and the health endpoints
    /// never answer from a snapshot older than about a second).
    Refresh,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct RestartConditions {
    /// Only if my role is this (`primary`, `replica`, `standby_leader`).
    pub role: Option<String>,
    /// Only if my PostgreSQL version is lower than this (`X.Y` or `X.Y.Z`).
    pub postgres_version: Option<String>,
    /// Overrides primary_start_timeout for this restart (seconds).
    pub timeout: Option<u64>,
    /// Only if a restart is pending (a changed postmaster-context parameter).
    pub restart_pending: bool,
}

/// The agent's answer: an HTTP status code and a message (Patroni's texts where it has one).
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    pub code: u16,
    pub message: String,
}

impl Reply {
    pub fn new(code: u16, message: impl Into<String>) -> Reply {
        Reply {
            code,
            message: message.into(),
        }
    }
}

/// The sending side, held by the REST server.
#[derive(Clone, Debug)]
pub struct Control {
    tx: mpsc::Sender<(Request, oneshot::Sender<Reply>)>,
    /// The last `POST /failsafe` this node accepted: the sender's name and when.
    pings: FailsafePings,
    reinit: Reinitializing,
}

/// Set by the agent from the moment a reinitialize wipes the data directory until the new clone
/// has finished (or failed): a second `POST /reinitialize` meanwhile is answered at once, without
/// waiting in the queue behind the clone, and never wipes a fresh copy again.
#[derive(Clone, Debug, Default)]
pub struct Reinitializing(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Reinitializing {
    pub fn set(&self, on: bool) {
        self.0.store(on, std::sync::atomic::Ordering::SeqCst);
    }
    pub fn get(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Patroni's answer to a reinitialize while one runs.
pub const REINIT_IN_PROGRESS: &str = "reinitialize already in progress";

/// Shared between the REST server (which records `POST /failsafe`) and the HA loop (which reads
/// it): no request/answer round trip, so a busy loop never delays the primary's probe.
#[derive(Clone, Debug, Default)]
pub struct FailsafePings(std::sync::Arc<std::sync::Mutex<Option<(String, std::time::Instant)>>>);

impl FailsafePings {
    pub fn record(&self, name: &str) {
        if let Ok(mut p) = self.0.lock() {
            *p = Some((name.to_string(), std::time::Instant::now()));
        }
    }
    /// The sender of the last ping, if it came within `within`.
    pub fn recent(&self, within: std::time::Duration) -> Option<String> {
        let p = self.0.lock().ok()?;
        p.as_ref()
            .filter(|(_, at)| at.elapsed() < within)
            .map(|(n, _)| n.clone())
    }
}

/// The receiving side, held by the agent.
pub type Inbox = mpsc::Receiver<(Request, oneshot::Sender<Reply>)>;

pub fn channel() -> (Control, Inbox) {
    let (tx, rx) = mpsc::channel(16);
    (
        Control {
            tx,
            pings: FailsafePings::default(),
            reinit: Reinitializing::default(),
        },
        rx,
    )
}

impl Control {
    pub fn failsafe_pings(&self) -> FailsafePings {
        self.pings.clone()
    }

    pub fn reinitializing(&self) -> Reinitializing {
        self.reinit.clone()
    }

    /// Sends a request and waits for the agent's answer (503 when the agent is gone or busy for
    /// longer than `wait`).
    pub async fn request(&self, req: Request, wait: std::time::Duration) -> Reply {
        if matches!(req, Request::Reinitialize { .. }) && self.reinit.get() {
            return Reply::new(503, REINIT_IN_PROGRESS);
        }
        let (tx, rx) = oneshot::channel();
        if self.tx.send((req, tx)).await.is_err() {
            return Reply::new(503, "the agent is not running");
        }
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Reply::new(503, "the agent dropped the request"),
            Err(_) => Reply::new(
                503,
                "the agent did not answer in time; the request may still be carried out",
            ),
        }
    }
}
