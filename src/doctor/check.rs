//! The network half of the doctor: what one peer answers from this host (EPMD, the distribution
//! port, the handshake), as data for [`super::diagnoses`].

use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;

use std::sync::Arc;

use super::tls::{self, TlsCheck, TlsClient};
use crate::config::DEFAULT_DISTRIBUTION_PORT;
use crate::epmd::{self, EpmdAnswer, Handshake, Reach};
use crate::peer::{Peer, SourceId};

/// How the doctor checks peers. Its `Debug` form leaves the cookie out.
#[derive(Clone)]
pub struct DoctorOptions {
    /// Per connection attempt (EPMD, distribution port, handshake).
    pub timeout: Duration,
    /// Peers checked at once.
    pub concurrency: usize,
    /// With a cookie, a real distribution handshake proves it matches. Never printed.
    pub cookie: Option<String>,
    /// The port every node's distribution listens on (`distribution_port`).
    pub distribution_port: u16,
    /// The fleet runs without EPMD (EcsPeers.Epmd): a peer without a port of its own is checked
    /// at ip:`distribution_port` instead of asking its EPMD. Peers ECS reports with a port
    /// (bridge and host mode) are always checked at that port directly.
    pub epmd_less: bool,
    /// TLS distribution (`tls_ca`): the handshake check speaks TLS with this certificate and
    /// CA; `None`: it speaks clear text, and probes a peer that does not answer it for TLS.
    pub tls: Option<Arc<TlsClient>>,
}

impl std::fmt::Debug for DoctorOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let DoctorOptions {
            timeout,
            concurrency,
            cookie,
            distribution_port,
            epmd_less,
            tls,
        } = self;
        f.debug_struct("DoctorOptions")
            .field("timeout", timeout)
            .field("concurrency", concurrency)
            .field("cookie", &cookie.as_ref().map(|_| "(hidden)"))
            .field("distribution_port", distribution_port)
            .field("epmd_less", epmd_less)
            .field("tls", tls)
            .finish()
    }
}

impl Default for DoctorOptions {
    fn default() -> Self {
        DoctorOptions {
            timeout: Duration::from_secs(2),
            concurrency: 16,
            cookie: None,
            distribution_port: DEFAULT_DISTRIBUTION_PORT,
            epmd_less: false,
            tls: None,
        }
    }
}

/// What the doctor found for one peer.
#[derive(Debug, Clone, Serialize)]
pub struct PeerCheck {
    /// The node name discovery gave it.
    pub node: String,
    /// Its address.
    pub ip: IpAddr,
    /// Its region.
    pub region: String,
    /// The source that reported it.
    pub source: SourceId,
    /// The port ECS reports for it (bridge: the mapped host port; host: the container port).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The answer of its EPMD (port 4369); `None`: not asked, the peer was checked at its
    /// distribution port directly (a peer with a port, or `epmd_less`).
    pub epmd: Option<EpmdAnswer>,
    /// The name part of `node` (what EPMD should have registered).
    pub expected_name: String,
    /// EPMD has the expected name (`false` when EPMD was not asked).
    pub registered: bool,
    /// The distribution port checked: from EPMD, or the peer's own port.
    pub dist_port: Option<u16>,
    /// How connecting to the distribution port went.
    pub dist: Option<Reach>,
    /// The handshake's outcome (only with a cookie; over TLS only with a peer certificate that
    /// passes every check).
    pub handshake: Option<Handshake>,
    /// TLS on the distribution port: what the peer presented and whether it took ours (with
    /// `tls`), or, checking in clear text, that it requires TLS; `None`: not checked (the port
    /// is closed, or the clear-text handshake went through).
    pub tls: Option<TlsCheck>,
}

/// Checks one peer from this host: its EPMD and the name registered there, or its own port
/// (bridge and host mode, EPMD-less fleets), then its distribution port and, with a cookie, a
/// handshake.
pub(super) async fn check(peer: Peer, opts: &DoctorOptions) -> PeerCheck {
    let expected_name = peer.node.split('@').next().unwrap_or_default().to_string();
    // Reached at a known port: no EPMD to ask (EcsPeers.Epmd answers port_please locally).
    let direct = peer
        .port
        .or(opts.epmd_less.then_some(opts.distribution_port));
    if let Some(port) = direct {
        let dist = epmd::connect((peer.ip, port).into(), opts.timeout).await.0;
        let (tls, handshake) = if dist.is_open() {
            dist_handshake(peer.ip, port, opts).await
        } else {
            (None, None)
        };
        return PeerCheck {
            node: peer.node,
            ip: peer.ip,
            port: peer.port,
            region: peer.region.to_string(),
            source: peer.source,
            epmd: None,
            expected_name,
            registered: false,
            dist_port: Some(port),
            dist: Some(dist),
            handshake,
            tls,
        };
    }
    let epmd = epmd::names(peer.ip, opts.timeout).await;
    let dist_port = epmd
        .names
        .iter()
        .find(|(n, _)| *n == expected_name)
        .map(|(_, p)| *p);
    let dist = match dist_port {
        Some(port) => Some(epmd::connect((peer.ip, port).into(), opts.timeout).await.0),
        None => None,
    };
    let (tls, handshake) = match (dist_port, &dist) {
        (Some(port), Some(d)) if d.is_open() => dist_handshake(peer.ip, port, opts).await,
        _ => (None, None),
    };
    PeerCheck {
        registered: dist_port.is_some(),
        node: peer.node,
        ip: peer.ip,
        port: peer.port,
        region: peer.region.to_string(),
        source: peer.source,
        epmd: Some(epmd),
        expected_name,
        dist_port,
        dist,
        handshake,
        tls,
    }
}

/// The open distribution port's protocol: with `opts.tls`, the TLS check and the handshake
/// inside it; without, the clear-text handshake (with a cookie) or its first message, and a TLS
/// probe when that gets no clear-text answer (the peer may require TLS).
async fn dist_handshake(
    ip: IpAddr,
    port: u16,
    opts: &DoctorOptions,
) -> (Option<TlsCheck>, Option<Handshake>) {
    if let Some(client) = &opts.tls {
        let (tls, handshake) =
            tls::check(ip, port, client, opts.cookie.as_deref(), opts.timeout).await;
        return (Some(tls), handshake);
    }
    let handshake = match &opts.cookie {
        Some(cookie) => Some(epmd::handshake(ip, port, cookie, opts.timeout).await),
        None => None,
    };
    let clear = match &handshake {
        Some(Handshake::Ok | Handshake::CookieMismatch) => true,
        Some(Handshake::Failed { .. }) => false,
        None => epmd::answers_clear_text(ip, port, opts.timeout).await,
    };
    let tls = if clear {
        None
    } else {
        tls::probe(ip, port, opts.timeout).await
    };
    (tls, handshake)
}
