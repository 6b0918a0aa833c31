//! TLS distribution's certificates: this task's certificate, issued in memory at boot (and again
//! before each expiry) by the cluster CA, for the address its peers dial.
//!
//! - [`ca`]: the stored CA (certificate and key, PEM) parsed and checked; its key is zeroized
//!   when dropped and never printed.
//! - [`fetch`]: the stored value read from Secrets Manager or SSM (a SecureString) with the task
//!   role, through the crate's AWS clients (same endpoint, retries and call counting).
//! - [`issue`]: a P-256 key generated here and a certificate signed by the CA, for this task's
//!   address by the one address rule (`peer::task_address`, the container instance's in bridge
//!   and host mode, as [`crate::this_task`] finds it) and its private DNS name.
//!
//! Nothing is cached: each call reads the CA again, issues, and drops the CA's key before it
//! returns, so the key is in memory for milliseconds per renewal, and a CA rotated in its secret
//! is used from the next renewal on. A renewal costs one GetSecretValue (or GetParameter), one
//! DescribeTasks, and a task metadata request.

pub mod ca;
pub(crate) mod fetch;
pub mod issue;

use std::fmt;
use std::sync::Arc;

use crate::aws::{AwsClients, CallCounter, CountCalls};
use crate::config::{Config, TlsConfig};
use crate::error::SourceError;

pub use ca::{CaProblem, ClusterCa};
pub use issue::{Credentials, Subject};

/// Why this task's certificate could not be issued. Displayed with the key (`tls_ca`), what
/// happened and the fix.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum TlsError {
    /// `tls_ca` is not set: TLS distribution is off.
    Off,
    /// This task's address could not be found (the task metadata or ecs:DescribeTasks failed).
    ThisTask(Box<SourceError>),
    /// The CA could not be read (Secrets Manager or SSM refused or failed).
    Fetch {
        /// `tls_ca` as given.
        location: String,
        /// The AWS error, with its fix.
        error: Box<SourceError>,
    },
    /// The stored value is not a usable CA.
    Ca {
        /// `tls_ca` as given.
        location: String,
        /// What is wrong and the fix.
        problem: CaProblem,
    },
    /// Generating the key or signing failed.
    Issue(String),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Off => write!(f, "tls_ca: is not set, so TLS distribution is off; set it to the Secrets Manager secret or SSM SecureString parameter ARN that holds the cluster CA (docs/tls.md)"),
            TlsError::ThisTask(e) => write!(f, "tls_ca: cannot issue this task's certificate: its address is unknown: {e}"),
            TlsError::Fetch { location, error } => write!(f, "tls_ca: cannot read the cluster CA {location}: {error}"),
            TlsError::Ca { location, problem } => write!(
                f,
                "tls_ca: {location} is not a usable cluster CA: {}. Fix: {}",
                problem.problem, problem.fix
            ),
            TlsError::Issue(m) => write!(f, "tls_ca: issuing this task's certificate failed: {m}"),
        }
    }
}

impl std::error::Error for TlsError {}

/// Validates a configuration for issuing only (the NIF's `tls_credentials/1`): the keys of
/// [`Config::from_value`], where `sources` defaults to this task's own cluster
/// (`[{type = "ecs", cluster = "auto"}]`: finding this task needs nothing else), and the naming
/// keys may be left out (a certificate names an address, not a node; when neither
/// `node_basename` nor `node_name` is given, a basename that nothing reads fills the gap).
///
/// # Errors
///
/// [`crate::Error::Config`] naming the key, as [`Config::from_value`].
pub fn config(value: serde_json::Value) -> Result<Config, crate::Error> {
    let mut value = value;
    if let serde_json::Value::Object(map) = &mut value {
        map.entry("sources")
            .or_insert_with(|| serde_json::json!([{"type": "ecs", "cluster": "auto"}]));
        if !map.contains_key("node_basename") && !map.contains_key("node_name") {
            map.insert("node_basename".into(), "tls".into());
        }
    }
    Config::from_value(value)
}

/// This task's credentials for TLS distribution, issued now: finds this task as its peers find
/// it (the task metadata endpoint v4 and ecs:DescribeTasks, plus ecs:DescribeContainerInstances
/// and ec2:DescribeInstances in bridge or host mode), reads the CA from `config.tls`, and issues
/// (see [`issue::issue`]). Blocks for the AWS calls only; parsing the CA and issuing take
/// about 60 µs (BENCHMARKS.md).
///
/// # Errors
///
/// A [`TlsError`] naming `tls_ca`, what happened and the fix.
pub async fn credentials(config: &Config) -> Result<Credentials, TlsError> {
    let tls = config.tls.as_ref().ok_or(TlsError::Off)?;
    let clients = AwsClients::load(config).await;
    let (found, md) = crate::this_task::found(config, &clients)
        .await
        .map_err(|e| TlsError::ThisTask(Box::new(e)))?;
    let subject = Subject {
        ip: found.ip,
        private_dns_name: found.private_dns_name,
    };
    credentials_for(tls, &subject, &md.region, &clients).await
}

/// [`credentials`] once this task is found: reads the CA and issues for `subject`.
pub(crate) async fn credentials_for(
    tls: &TlsConfig,
    subject: &Subject,
    task_region: &str,
    clients: &AwsClients,
) -> Result<Credentials, TlsError> {
    let calls = CountCalls(Arc::new(CallCounter::default()));
    let location = tls.ca.as_str().to_string();
    let text = fetch::fetch(&tls.ca, task_region, clients, &calls)
        .await
        .map_err(|error| TlsError::Fetch {
            location: location.clone(),
            error: Box::new(error),
        })?;
    let now = unix_now();
    let ca = ClusterCa::from_pem(&text, now).map_err(|problem| TlsError::Ca {
        location: location.clone(),
        problem,
    })?;
    drop(text);
    let issued = issue::issue(&ca, subject, tls.validity, now).map_err(TlsError::Issue);
    drop(ca);
    let issued = issued?;
    tracing::info!(
        names = ?issued.names,
        not_after = issued.not_after,
        calls = ?calls.0.totals(),
        "issued this task's TLS distribution certificate"
    );
    Ok(issued)
}

/// Seconds since the Unix epoch.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
