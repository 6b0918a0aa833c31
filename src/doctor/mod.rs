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

pub use check::{DoctorOptions, PeerCheck};
pub use diagnoses::Diagnosis;

/// The schema tag of [`Report`]'s JSON form.
pub const DOCTOR_SCHEMA: &str = "ecs-peers/doctor/v1";

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
}
