//! `ecs-peers doctor`: for every discovered peer, can this host reach its EPMD and its
//! distribution port, is the expected node name registered, does the cookie match — and, from
//! that and the snapshot, what is wrong and how to fix it.
//!
//! [`check`] asks the network, one peer at a time; [`diagnoses`] turns the checks and the
//! snapshot into problems and fixes, one function per diagnosis, without a network.

use futures_util::stream::{self, StreamExt};
use serde::Serialize;

use crate::namespace::{Snapshot, SourceStatus};
use crate::peer::Peer;

mod check;
mod diagnoses;
mod tls;

pub use check::{DoctorOptions, PeerCheck};
pub use diagnoses::Diagnosis;
pub use tls::{
    default_tls_validity, expiring_margin, PeerCertificate, TlsCheck, TlsClient, TlsOutcome,
};

/// The schema tag of [`Report`]'s JSON form.
pub const DOCTOR_SCHEMA: &str = "ecs-peers/doctor/v2";

/// The doctor's findings.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Always [`DOCTOR_SCHEMA`].
    pub schema: &'static str,
    /// Every peer checked, sorted by node name.
    pub peers: Vec<PeerCheck>,
    /// The sources' statuses, as in the snapshot.
    pub sources: Vec<SourceStatus>,
    /// Problems, most fundamental first (sources, addressing, routing, then per node).
    pub diagnoses: Vec<Diagnosis>,
    /// The one inbound security-group rule this deployment's nodes need between them.
    pub security_group_rule: String,
}

/// Checks every peer of `snapshot` from this host and diagnoses what is wrong.
pub async fn diagnose(snapshot: &Snapshot, opts: &DoctorOptions) -> Report {
    let mut peers: Vec<PeerCheck> = stream::iter(snapshot.peers.iter().map(|p| Peer::clone(p)))
        .map(|p| check::check(p, opts))
        .buffer_unordered(opts.concurrency.max(1))
        .collect()
        .await;
    peers.sort_by(|a, b| a.node.cmp(&b.node));
    let diagnoses = diagnoses::diagnoses(snapshot, &peers);
    Report {
        schema: DOCTOR_SCHEMA,
        peers,
        sources: snapshot.sources.clone(),
        diagnoses,
        security_group_rule: security_group_rule(snapshot, opts),
    }
}

/// Why this host cannot connect to one peer: what [`check`] found, and the one diagnosis that
/// explains it ([`Explanation`]).
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    /// What the checks found.
    pub check: PeerCheck,
    /// The most fundamental problem with the peer, the diagnosis the doctor's [`Report`] gives
    /// it; `checks_pass` when every check passes from here.
    pub diagnosis: Diagnosis,
}

/// Checks one peer from this host, as [`diagnose`] checks each (the same checks, the same
/// diagnoses, `opts.timeout` per connection attempt, twice that for the handshake), and
/// explains why a connection to it fails. What a node runs in-process for a peer it cannot
/// connect to (the NIF's `diagnose/6`, with the node's own cookie): its diagnosis of a peer is
/// the doctor's. Only `peer`'s own address and port are dialled.
pub async fn explain(peer: Peer, opts: &DoctorOptions) -> Explanation {
    let check = check::check(peer, opts).await;
    let diagnosis = diagnoses::unconnected(&check);
    Explanation { check, diagnosis }
}

/// The ECS agent's default dynamic host port range on Linux (bridge mode, hostPort 0):
/// <https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_PortMapping.html>.
const DYNAMIC_PORTS: &str = "32768-60999";

/// The one inbound rule the nodes need between them, by how they are reached: bridge mode the
/// instances' dynamic host port range, host mode and EPMD-less awsvpc the distribution port,
/// EPMD-based awsvpc EPMD's port and the distribution port range. The source is the security
/// group itself (the nodes' group allows its own members).
pub(crate) fn security_group_rule(snapshot: &Snapshot, opts: &DoctorOptions) -> String {
    let port = opts.distribution_port;
    let bridge = snapshot
        .peers
        .iter()
        .any(|p| p.ec2_instance_id.is_some() && p.port.is_some_and(|q| q != port));
    let on_instances = snapshot.peers.iter().any(|p| p.ec2_instance_id.is_some());
    let from = "source: that same security group";
    if bridge {
        format!("inbound TCP {DYNAMIC_PORTS} (the ECS dynamic host ports the containers' port {port} is mapped to) on the container instances' security group, {from}")
    } else if on_instances || opts.epmd_less {
        format!(
            "inbound TCP {port} (the distribution port) on the {} security group, {from}",
            if on_instances {
                "container instances'"
            } else {
                "tasks'"
            }
        )
    } else {
        format!("inbound TCP 4369 (EPMD) and the distribution port range (pin it with `-kernel inet_dist_listen_min {port} inet_dist_listen_max {port}`) on the tasks' security group, {from}; with EcsPeers.Epmd (no EPMD) only TCP {port}")
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::namespace::tests::status;

    /// Bridge- and host-mode peers (and any peer of an EPMD-less fleet) are checked where the
    /// bridge dials them, ip:port, never through EPMD (which such fleets do not run).
    #[tokio::test]
    async fn peers_with_a_port_are_checked_at_that_port_without_epmd() {
        let listening = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open_port = listening.local_addr().unwrap().port();
        let closed_port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let at = |port: u16, task: &str| Peer {
            node: format!("app-{task}@127.0.0.1"),
            port: Some(port),
            ec2_instance_id: Some("i-0abc".into()),
            ..crate::namespace::tests::peer("127.0.0.1", "eu-west-2", "ecs:eu-west-2/web")
        };
        let opts = DoctorOptions {
            timeout: Duration::from_secs(2),
            ..Default::default()
        };
        let healthy = Snapshot {
            peers: vec![std::sync::Arc::new(at(open_port, "a"))],
            sources: vec![status("ecs:eu-west-2/web", "eu-west-2", 1, None)],
            ..Snapshot::empty()
        };
        let r = diagnose(&healthy, &opts).await;
        assert_eq!(r.diagnoses, [], "{:?}", r.peers);
        assert!(r.peers[0].epmd.is_none(), "EPMD is not asked");
        assert_eq!(r.peers[0].dist_port, Some(open_port));
        assert!(
            r.security_group_rule.starts_with("inbound TCP 32768-60999"),
            "{}",
            r.security_group_rule
        );

        let closed = Snapshot {
            peers: vec![std::sync::Arc::new(at(closed_port, "b"))],
            ..healthy.clone()
        };
        let r = diagnose(&closed, &opts).await;
        assert_eq!(
            r.diagnoses.iter().map(|d| d.code).collect::<Vec<_>>(),
            ["dist_port_refused"]
        );
        assert!(r.diagnoses[0]
            .problem
            .contains(&format!("127.0.0.1:{closed_port}")));

        // Host mode (the port is the distribution port itself): that one port.
        let host = Snapshot {
            peers: vec![std::sync::Arc::new(at(4370, "c"))],
            ..healthy.clone()
        };
        assert!(security_group_rule(&host, &opts)
            .starts_with("inbound TCP 4370 (the distribution port) on the container instances'"));
        drop(listening);
    }

    /// The cookie the checks use never shows in the options' `Debug` form.
    #[test]
    fn the_options_debug_form_hides_the_cookie() {
        let opts = DoctorOptions {
            cookie: Some("s3cret-cookie".into()),
            ..Default::default()
        };
        let shown = format!("{opts:?}");
        assert!(!shown.contains("s3cret-cookie"), "{shown}");
        assert!(shown.contains("cookie: Some(\"(hidden)\")"), "{shown}");
    }

    /// A node's own diagnosis of a peer it cannot connect to ([`explain`]) is the one the
    /// doctor's report gives that peer, checked against a refused port and a real distribution
    /// handshake (erl_dist's server side) with another cookie; a peer that passes every check
    /// has no diagnosis in the report, and `checks_pass` from `explain`.
    #[tokio::test]
    async fn explain_gives_each_peer_the_reports_diagnosis() {
        use erl_dist::handshake::{HandshakeStatus, ServerSideHandshake};
        use erl_dist::node::{Creation, LocalNode};
        use tokio_util::compat::TokioAsyncReadCompatExt;

        let node = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let node_port = node.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((stream, _)) = node.accept().await {
                tokio::spawn(async move {
                    let local =
                        LocalNode::new("app-b@127.0.0.1".parse().unwrap(), Creation::random());
                    let mut hs = ServerSideHandshake::new(stream.compat(), local, "the-cookie");
                    if hs.execute_recv_name().await.is_ok() {
                        let _ = hs.execute_rest(HandshakeStatus::Ok).await;
                    }
                });
            }
        });
        let closed_port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let at = |port: u16, task: &str| Peer {
            node: format!("app-{task}@127.0.0.1"),
            port: Some(port),
            ec2_instance_id: Some("i-0abc".into()),
            ..crate::namespace::tests::peer("127.0.0.1", "eu-west-2", "ecs:eu-west-2/web")
        };
        let peers = [at(closed_port, "a"), at(node_port, "b")];
        let snapshot = Snapshot {
            peers: peers.iter().cloned().map(std::sync::Arc::new).collect(),
            sources: vec![status("ecs:eu-west-2/web", "eu-west-2", 2, None)],
            ..Snapshot::empty()
        };
        let opts = |cookie: &str| DoctorOptions {
            timeout: Duration::from_secs(2),
            cookie: Some(cookie.into()),
            ..Default::default()
        };

        let report = diagnose(&snapshot, &opts("another-cookie")).await;
        assert_eq!(
            report.diagnoses.iter().map(|d| d.code).collect::<Vec<_>>(),
            ["dist_port_refused", "cookie_mismatch"]
        );
        for (peer, reported) in peers.iter().zip(&report.diagnoses) {
            let own = explain(peer.clone(), &opts("another-cookie")).await;
            assert_eq!(&own.diagnosis, reported, "{}", peer.node);
        }

        let report = diagnose(&snapshot, &opts("the-cookie")).await;
        assert_eq!(
            report.diagnoses.iter().map(|d| d.code).collect::<Vec<_>>(),
            ["dist_port_refused"]
        );
        let own = explain(peers[1].clone(), &opts("the-cookie")).await;
        assert_eq!(own.check.handshake, Some(crate::epmd::Handshake::Ok));
        assert_eq!(own.diagnosis.code, "checks_pass");
        assert!(
            own.diagnosis.problem.starts_with(&format!(
                "app-b@127.0.0.1 answers every check from here (port {node_port} and a handshake with this cookie)"
            )),
            "{}",
            own.diagnosis.problem
        );
    }
}
