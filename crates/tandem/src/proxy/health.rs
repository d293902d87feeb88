//! Health checks: one task per member polls its REST API (`GET /primary`, `GET /replica?lag=N`)
//! every `health_interval`, and at once when kicked (a change in etcd). Results go to the router
//! task as reports; this module decides nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use super::routing::Outcome;
use crate::peer::PeerClient;

#[derive(Debug)]
pub struct HealthReport {
    pub name: String,
    /// The api_url this checker was started for (a report of a replaced checker is ignored).
    pub api_url: String,
    pub started: Instant,
    pub finished: Instant,
    pub primary: Option<Outcome>,
    /// One outcome per lag limit (`None`: `/replica` without `lag=`).
    pub replica: Vec<(Option<u64>, Outcome)>,
}

/// What to ask each node.
#[derive(Clone, Debug)]
pub struct Plan {
    pub primary: bool,
    pub replica_lags: Vec<Option<u64>>,
    pub interval: Duration,
    pub timeout: Duration,
}

pub struct Checker {
    pub api_url: String,
    kick: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Checker {
    /// Asks for a check now (or right after the one in flight).
    pub fn kick(&self) {
        self.kick.notify_one();
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `scheme://host:port` of an `api_url` such as `http://10.0.0.1:8008/patroni`.
pub fn api_base(api_url: &str) -> Option<&str> {
    let scheme_end = api_url.find("://")? + 3;
    let rest = &api_url[scheme_end..];
    let end = rest
        .find('/')
        .map(|i| scheme_end + i)
        .unwrap_or(api_url.len());
    (end > scheme_end).then(|| &api_url[..end])
}

pub fn spawn(
    name: String,
    api_url: String,
    client: PeerClient,
    plan: Arc<Plan>,
    tx: mpsc::Sender<HealthReport>,
) -> Checker {
    let kick = Arc::new(Notify::new());
    let k = kick.clone();
    let url = api_url.clone();
    let task = tokio::spawn(async move {
        let Some(base) = api_base(&url).map(str::to_string) else {
            tracing::warn!("member {name}: api_url {url:?} is not a URL: no health checks");
            return;
        };
        let primary_url = format!("{base}/primary");
        let replica_urls: Vec<(Option<u64>, String)> = plan
            .replica_lags
            .iter()
            .map(|lag| {
                let u = match lag {
                    Some(l) => format!("{base}/replica?lag={l}"),
                    None => format!("{base}/replica"),
                };
                (*lag, u)
            })
            .collect();
        // The last failure logged: a new one (a certificate refused, a connection refused) is
        // logged once, not at every probe.
        let mut last_error: Option<String> = None;
        loop {
            let started = Instant::now();
            let primary = async {
                if plan.primary {
                    Some(check(&client, &primary_url, plan.timeout).await)
                } else {
                    None
                }
            };
            let replicas = futures_util::future::join_all(
                replica_urls
                    .iter()
                    .map(|(lag, u)| async { (*lag, check(&client, u, plan.timeout).await) }),
            );
            let (primary, replica) = tokio::join!(primary, replicas);
            let error = primary
                .iter()
                .chain(replica.iter().map(|(_, o)| o))
                .find_map(|(_, e)| e.clone());
            match (&error, &last_error) {
                (Some(e), last) if last.as_ref() != Some(e) => {
                    tracing::warn!("member {name}: health check of {base} failed: {e}")
                }
                (None, Some(_)) => {
                    tracing::info!("member {name}: health checks of {base} answer again")
                }
                _ => {}
            }
            last_error = error;
            let primary = primary.map(|(o, _)| o);
            let replica = replica.into_iter().map(|(l, (o, _))| (l, o)).collect();
            let report = HealthReport {
                name: name.clone(),
                api_url: url.clone(),
                started,
                finished: Instant::now(),
                primary,
                replica,
            };
            if tx.send(report).await.is_err() {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep_until((started + plan.interval).into()) => {}
                _ = k.notified() => {}
            }
        }
    });
    Checker {
        api_url,
        kick,
        task,
    }
}

/// The outcome of one GET, and the error (with its causes) when there was no answer.
async fn check(client: &PeerClient, url: &str, timeout: Duration) -> (Outcome, Option<String>) {
    match client
        .request(reqwest::Method::GET, url)
        .timeout(timeout)
        .send()
        .await
    {
        Ok(resp) => {
            let code = resp.status().as_u16();
            // The body (a status document) is not needed; dropping it closes the connection.
            drop(resp);
            if code == 200 {
                (Outcome::Up, None)
            } else {
                (Outcome::Down(code), None)
            }
        }
        Err(e) => {
            let mut text = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                text.push_str(&format!(": {c}"));
                cause = c.source();
            }
            tracing::debug!("health check GET {url}: {text}");
            (Outcome::Unreachable, Some(text))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_base_strips_the_path() {
        assert_eq!(
            api_base("http://10.0.0.1:8008/patroni"),
            Some("http://10.0.0.1:8008")
        );
        assert_eq!(
            api_base("https://[::1]:8008/patroni"),
            Some("https://[::1]:8008")
        );
        assert_eq!(api_base("http://h:1"), Some("http://h:1"));
        assert_eq!(api_base("h:1/patroni"), None);
        assert_eq!(api_base("http:///x"), None);
    }
}
