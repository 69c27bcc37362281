//! The CLI's side of the API: `backupd run` hands its runs to a running daemon, so manual and
//! scheduled runs go through one queue.

use std::time::Duration;

use anyhow::{Context, Result};
use web::model::{RunView, Triggered};

use super::lock::{DaemonInfo, running};
use crate::config::Config;

pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
    pub daemon: DaemonInfo,
}

impl Client {
    /// A client for the daemon serving `cfg`'s state directory, if one runs.
    pub fn for_running_daemon(cfg: &Config) -> Option<Client> {
        let daemon = running(&cfg.state_dir)?;
        // The daemon may listen on 0.0.0.0; the CLI talks to it on loopback.
        let addr: std::net::SocketAddr = daemon.listen.parse().ok()?;
        let host = if addr.ip().is_unspecified() {
            std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
        } else {
            addr
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .new_agent();
        Some(Client {
            base: format!("http://{host}/api/v1"),
            token: cfg.serve.token.clone(),
            agent,
            daemon,
        })
    }

    pub fn trigger(&self, job: &str) -> Result<Triggered> {
        let Some(token) = &self.token else {
            anyhow::bail!(
                "backupd serve (pid {}) runs the jobs of this state directory; set serve.token (or serve.token_file) in the configuration so `backupd run` can hand the run to it",
                self.daemon.pid
            );
        };
        let resp = self
            .agent
            .post(format!("{}/jobs/{job}/run", self.base))
            .header("Authorization", format!("Bearer {token}"))
            .send_empty();
        self.json(resp, "queue the run")
    }

    pub fn run(&self, id: i64) -> Result<RunView> {
        let resp = self.agent.get(format!("{}/runs/{id}", self.base)).call();
        self.json(resp, "read the run")
    }

    /// Polls until the run has ended.
    pub fn wait(&self, id: i64, on_progress: &mut dyn FnMut(&RunView)) -> Result<RunView> {
        loop {
            let r = self.run(id)?;
            if !matches!(r.status.as_str(), "queued" | "running") {
                return Ok(r);
            }
            on_progress(&r);
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn json<T: serde::de::DeserializeOwned>(
        &self,
        resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        what: &str,
    ) -> Result<T> {
        let mut resp = resp.with_context(|| {
            format!(
                "cannot reach backupd serve (pid {}) at {}",
                self.daemon.pid, self.base
            )
        })?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .with_context(|| format!("cannot read the daemon's answer to {what}"))?;
        if !(200..300).contains(&status) {
            let msg = serde_json::from_str::<web::model::ErrorBody>(&text)
                .map(|e| e.error)
                .unwrap_or(text);
            anyhow::bail!("backupd serve refused to {what} ({status}): {msg}");
        }
        serde_json::from_str(&text)
            .with_context(|| format!("unexpected answer from the daemon to {what}"))
    }
}
