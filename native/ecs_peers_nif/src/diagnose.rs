//! A peer this node cannot connect to, checked in-process by the doctor's own checks and
//! diagnoses ([`ecs_peers::doctor::explain`]: EPMD or the one distribution port, the name
//! registered, the distribution port, a handshake with this node's cookie), on the NIF's
//! runtime; the answer is sent as a message, so no scheduler waits for the network.
//!
//! Only a peer the poller's last update listed is checked, at the address and port its source
//! reported: the caller names a node, never an address.

use std::time::Instant;

use ecs_peers::doctor::{self, DoctorOptions};
use std::sync::Arc;

use ecs_peers::doctor::TlsClient;
use rustler::{Atom, Binary, Encoder, LocalPid, NifMap, OwnedEnv, ResourceArc};

use crate::runtime::{runtime, PollerResource};

mod atoms {
    rustler::atoms! { ok, error, ecs_peers, diagnosis }
}

/// The diagnosis as Elixir receives it: `%{code:, subject:, problem:, fix:, checked_ms:}`.
#[derive(NifMap)]
struct DiagnosisTerm {
    /// The doctor's stable code, e.g. `dist_port_blocked`, `cookie_mismatch`, `checks_pass`.
    code: String,
    /// `node (region)`.
    subject: String,
    /// What is wrong.
    problem: String,
    /// What to do.
    fix: String,
    /// How long the checks took, milliseconds.
    checked_ms: u64,
}

/// This node's TLS credentials (`%EcsPeers.TLS.Current{}`): certificate, `ECPrivateKey` DER,
/// CA certificates (all DER binaries) and `tls_validity` as the node was given it
/// (`ECS_PEERS_TLS_VALIDITY`'s text, read here by the key table's duration rule, as the
/// node's own issuance reads it; `nil`: the default).
#[derive(NifMap)]
struct TlsTerm<'a> {
    cert: Binary<'a>,
    key: Binary<'a>,
    cacerts: Vec<Binary<'a>>,
    validity: Option<String>,
}

impl TlsTerm<'_> {
    fn client(&self) -> Result<TlsClient, String> {
        let validity = ecs_peers::config::validity_from_text(self.validity.as_deref())
            .map_err(|e| e.to_string())?;
        Ok(TlsClient {
            cacerts: self.cacerts.iter().map(|c| c.as_slice().to_vec()).collect(),
            identity: Some((
                self.cert.as_slice().to_vec(),
                zeroize::Zeroizing::new(self.key.as_slice().to_vec()),
            )),
            validity,
        })
    }
}

/// `diagnose(poller, node, cookie, tls, epmd_less, pid, tag)`: checks the peer `node` (a binary)
/// of the poller's last update from this host, with `cookie` (a binary, or `nil`: no
/// handshake; never logged or kept), `tls` (this node's credentials, `%EcsPeers.TLS.Current{}`:
/// the checks speak TLS with them, as `ecs-peers doctor` with `tls_ca`; `nil`: clear text; the
/// key is never logged or kept past the check) and `epmd_less` (the VM runs `EcsPeers.Epmd`: a peer
/// without a port of its own is checked at the configured distribution port, not through
/// EPMD). Returns `:ok` at once, then sends `{:ecs_peers, tag, {:diagnosis, node, result}}`
/// to `pid`: `result` is `{:ok, %{code:, subject:, problem:, fix:, checked_ms:}}` (the
/// doctor's diagnosis of that peer; `checked_ms` at most about 10 s: 2 s per connection
/// attempt, 4 s for the handshake), or `{:error, message}` if the check itself failed.
/// `{:error, message}` at once when the last update listed no such peer, or when `tls`'s
/// `tls_validity` does not read (the message names the key).
#[rustler::nif]
fn diagnose(
    poller: ResourceArc<PollerResource>,
    node: String,
    cookie: Option<String>,
    tls: Option<TlsTerm<'_>>,
    epmd_less: bool,
    pid: LocalPid,
    tag: u64,
) -> Result<Atom, String> {
    let tls = tls.as_ref().map(TlsTerm::client).transpose()?.map(Arc::new);
    let Some(peer) = poller.listed.peer(&node) else {
        return Err(format!(
            "{node} is not a peer of the last update: only peers a configured source listed are checked"
        ));
    };
    let opts = DoctorOptions {
        cookie,
        epmd_less,
        distribution_port: poller.listed.distribution_port,
        concurrency: 1,
        tls,
        ..Default::default()
    };
    let rt = runtime()?;
    let checking = rt.spawn(async move {
        let started = Instant::now();
        let explained = doctor::explain(peer, &opts).await;
        (explained.diagnosis, started.elapsed())
    });
    // The answer is sent whatever happens to the check (a panic becomes an error), so the
    // caller, which runs one check per peer at a time, always hears back.
    rt.spawn(async move {
        let result = checking.await;
        let mut env = OwnedEnv::new();
        let _ = env.send_and_clear(&pid, |env| {
            let result = match result {
                Ok((d, took)) => (
                    atoms::ok(),
                    DiagnosisTerm {
                        code: d.code.to_string(),
                        subject: d.subject,
                        problem: d.problem,
                        fix: d.fix,
                        checked_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
                    },
                )
                    .encode(env),
                Err(e) => (atoms::error(), format!("the check failed: {e}")).encode(env),
            };
            (
                atoms::ecs_peers(),
                tag,
                (atoms::diagnosis(), node.as_str(), result),
            )
                .encode(env)
        });
    });
    Ok(atoms::ok())
}
