//! `ecs-peers doctor`: for every discovered peer, can this host reach its EPMD and its
//! distribution port, is the expected node name registered, does the cookie match — and, from
//! that and the snapshot, what is wrong and how to fix it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use serde::Serialize;

use crate::epmd::{self, EpmdAnswer, Handshake, Reach};
use crate::error::ErrorKind;
use crate::namespace::{Snapshot, SourceStatus};
use crate::peer::{Peer, SourceId};

/// The schema tag of [`Report`]'s JSON form.
pub const DOCTOR_SCHEMA: &str = "ecs-peers/doctor/v1";

/// How the doctor checks peers.
#[derive(Debug, Clone)]
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
}

impl Default for DoctorOptions {
    fn default() -> Self {
        DoctorOptions {
            timeout: Duration::from_secs(2),
            concurrency: 16,
            cookie: None,
            distribution_port: crate::config::DEFAULT_DISTRIBUTION_PORT,
            epmd_less: false,
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
    /// The handshake's outcome (only with a cookie).
    pub handshake: Option<Handshake>,
}

/// One problem, its likely cause, and the fix.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diagnosis {
    /// A stable code, e.g. `epmd_blocked`, `name_mismatch`, `cookie_mismatch`.
    pub code: &'static str,
    /// What it is about: a node, a region, a source or an address.
    pub subject: String,
    /// What is wrong.
    pub problem: String,
    /// What to do.
    pub fix: String,
}

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
        .map(|p| check(p, opts))
        .buffer_unordered(opts.concurrency.max(1))
        .collect()
        .await;
    peers.sort_by(|a, b| a.node.cmp(&b.node));
    let diagnoses = diagnoses(snapshot, &peers);
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

async fn check(peer: Peer, opts: &DoctorOptions) -> PeerCheck {
    let expected_name = peer.node.split('@').next().unwrap_or_default().to_string();
    // Reached at a known port: no EPMD to ask (EcsPeers.Epmd answers port_please locally).
    let direct = peer
        .port
        .or(opts.epmd_less.then_some(opts.distribution_port));
    if let Some(port) = direct {
        let dist = epmd::connect((peer.ip, port).into(), opts.timeout).await.0;
        let handshake = match &opts.cookie {
            Some(cookie) if dist.is_open() => {
                Some(epmd::handshake(peer.ip, port, cookie, opts.timeout).await)
            }
            _ => None,
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
    let handshake = match (&opts.cookie, dist_port, &dist) {
        (Some(cookie), Some(port), Some(d)) if d.is_open() => {
            Some(epmd::handshake(peer.ip, port, cookie, opts.timeout).await)
        }
        _ => None,
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
    }
}

/// Turns checks into diagnoses. Pure: tested without a network.
/// What a failed distribution handshake with a peer means, whichever way its port was found
/// (through EPMD, or from ECS directly).
fn handshake_problem(p: &PeerCheck, who: &str) -> Option<Diagnosis> {
    let (code, problem, fix) = match &p.handshake {
        Some(Handshake::CookieMismatch) => (
            "cookie_mismatch",
            format!("{} rejected the handshake: its cookie differs from the one given", p.node),
            "use the same cookie on every node (RELEASE_COOKIE, or the release's COOKIE file) and in --cookie",
        ),
        Some(Handshake::Failed { error }) => (
            "handshake_failed",
            format!("the distribution handshake with {} failed: {error}", p.node),
            "check both nodes run compatible OTP versions and use long names (name@ip); the node name must be the one the node runs as",
        ),
        _ => return None,
    };
    Some(Diagnosis {
        code,
        subject: who.to_string(),
        problem,
        fix: fix.into(),
    })
}

pub(crate) fn diagnoses(snapshot: &Snapshot, peers: &[PeerCheck]) -> Vec<Diagnosis> {
    let mut out = Vec::new();

    for s in snapshot.failing() {
        // The structured error: its message and its fix, as the source reported them.
        let (problem, fix) = match &s.failure {
            Some(e) => (
                format!(
                    "{} failed ({}): {}",
                    e.action,
                    e.kind,
                    e.message.trim_end_matches('.')
                ),
                e.fix.clone().unwrap_or_else(|| "see the error".into()),
            ),
            None => ("failing".into(), "see the error".into()),
        };
        out.push(Diagnosis {
            code: match s.error_kind {
                Some(ErrorKind::AccessDenied) => "access_denied",
                Some(ErrorKind::Credentials) => "credentials",
                Some(ErrorKind::NotFound) => "source_not_found",
                _ => "source_failing",
            },
            subject: s.id.to_string(),
            problem,
            fix,
        });
    }

    for s in &snapshot.sources {
        for k in &s.skipped {
            let id = k.example_task.rsplit('/').next().unwrap_or(&k.example_task);
            out.push(Diagnosis {
                code: "tasks_skipped",
                subject: s.id.to_string(),
                problem: format!(
                    "{} running task(s) are not peers (e.g. task {id}): {}",
                    k.tasks, k.message
                ),
                fix: k.fix.clone(),
            });
        }
    }

    for c in &snapshot.conflicts {
        let claims: Vec<String> = c
            .claims
            .iter()
            .map(|k| format!("{} ({})", k.source, k.region))
            .collect();
        out.push(Diagnosis {
            code: "overlapping_cidrs",
            subject: c.ip.to_string(),
            problem: format!(
                "{} is reported by {}: the VPCs' CIDRs overlap, and VPC peering cannot route overlapping CIDRs, so it is not used as a peer",
                c.ip,
                claims.join(" and ")
            ),
            fix: "give each region's VPC (or at least its task subnets) a CIDR of its own, then peer them".into(),
        });
    }

    // Regions whose sources all answer but list nobody, while other regions have peers.
    let mut by_region: BTreeMap<&str, (bool, usize)> = BTreeMap::new();
    for s in &snapshot.sources {
        let e = by_region.entry(s.region.as_str()).or_insert((true, 0));
        e.0 &= s.ok;
        e.1 += s.peers;
    }
    let total: usize = by_region.values().map(|v| v.1).sum();
    for (region, (ok, n)) in &by_region {
        if *ok && *n == 0 && total > 0 {
            let ids: Vec<String> = snapshot
                .sources
                .iter()
                .filter(|s| s.region == *region)
                .map(|s| s.id.to_string())
                .collect();
            out.push(Diagnosis {
                code: "region_without_peers",
                subject: region.to_string(),
                problem: format!("{region} answers but has no peers ({}) while other regions have {total}", ids.join(", ")),
                fix: "check that tasks are running there, and that the cluster, service, family or namespace names match that region's (names are per region)".into(),
            });
        }
    }

    // Unreachable EPMD: a whole region (routing) or single tasks (their security group).
    let mut per_region: BTreeMap<&str, Vec<&PeerCheck>> = BTreeMap::new();
    for p in peers {
        per_region.entry(p.region.as_str()).or_default().push(p);
    }
    // The first connection each check made: to EPMD, or to the distribution port directly.
    fn first(p: &PeerCheck) -> &Reach {
        match (&p.epmd, &p.dist) {
            (Some(e), _) => &e.reach,
            (None, Some(d)) => d,
            (None, None) => &Reach::NoRoute,
        }
    }
    let any_open = peers.iter().any(|p| first(p).is_open());
    let mut region_down: Vec<&str> = Vec::new();
    for (region, ps) in &per_region {
        let dead = ps
            .iter()
            .all(|p| matches!(first(p), Reach::TimedOut | Reach::NoRoute));
        if dead && (any_open || ps.len() > 1) {
            region_down.push(region);
            let how = if ps.iter().any(|p| *first(p) == Reach::NoRoute) {
                "no route"
            } else {
                "timed out"
            };
            out.push(Diagnosis {
                code: "region_unreachable",
                subject: region.to_string(),
                problem: format!(
                    "none of the {} peers in {region} answers on {} ({how}){}",
                    ps.len(),
                    if ps.iter().all(|p| p.epmd.is_some()) { "port 4369".to_string() } else { "its distribution port".to_string() },
                    if any_open { " while peers in other regions do" } else { "" }
                ),
                fix: format!("no route to {region}'s VPC: check that the VPC peering connection is active and that the route tables on both sides send the other VPC's CIDR to it; then the security groups (TCP 4369 and the distribution port range)"),
            });
        }
    }

    for p in peers {
        if region_down.contains(&p.region.as_str()) {
            continue;
        }
        let who = format!("{} ({})", p.node, p.region);
        let d = |code, problem: String, fix: String| Diagnosis {
            code,
            subject: who.clone(),
            problem,
            fix,
        };
        let Some(epmd) = &p.epmd else {
            // Checked at its distribution port directly (bridge/host mode, or EPMD-less).
            let port = p.dist_port.unwrap_or_default();
            match &p.dist {
                Some(Reach::NoRoute) => out.push(d(
                    "no_route",
                    format!("this host has no route to {}", p.ip),
                    "add a route to the peer's VPC CIDR through the VPC peering connection".into(),
                )),
                Some(Reach::TimedOut) => out.push(d(
                    "dist_port_blocked",
                    format!("{}:{port}, {}'s distribution port{}, does not answer: packets are dropped", p.ip, p.expected_name, if p.port.is_some() { " as ECS maps it" } else { "" }),
                    format!("allow inbound TCP {port} from the peers in the security group of {} (see the rule below)", p.node),
                )),
                Some(Reach::Refused) => out.push(d(
                    "dist_port_refused",
                    format!("{}:{port} refuses connections: no node listens there", p.ip),
                    "check the node is running with EcsPeers.Epmd on the distribution port (ECS_PEERS_DIST_PORT) and, in bridge mode, that its container maps that port; check its container logs".into(),
                )),
                Some(Reach::Failed { error }) => out.push(d("dist_port_unreachable", format!("connecting to {}:{port} failed: {error}", p.ip), "see the error".into())),
                _ => {}
            }
            out.extend(handshake_problem(p, &who));
            continue;
        };
        match &epmd.reach {
            Reach::NoRoute => out.push(d(
                "no_route",
                format!("this host has no route to {}", p.ip),
                "add a route to the peer's VPC CIDR through the VPC peering connection".into(),
            )),
            Reach::TimedOut => out.push(d(
                "epmd_blocked",
                format!("{}:4369 (EPMD) does not answer: packets are dropped", p.ip),
                format!("allow inbound TCP 4369 from the peers' CIDRs in the security group of {}'s task (and check the subnet's network ACL)", p.node),
            )),
            Reach::Refused => out.push(d(
                "epmd_refused",
                format!("{}:4369 refuses connections: no EPMD listens there, or a firewall rejects", p.ip),
                "check the task is running a distributed BEAM (EPMD starts with it: RELEASE_DISTRIBUTION=name); check its container logs".into(),
            )),
            Reach::Failed { error } => out.push(d("epmd_error", format!("connecting to {}:4369 failed: {error}", p.ip), "see the error".into())),
            Reach::Open { .. } => {
                if let Some(e) = &epmd.error {
                    out.push(d("epmd_error", format!("EPMD on {} did not answer NAMES: {e}", p.ip), "is port 4369 EPMD there? check the task".into()));
                } else if epmd.names.is_empty() {
                    out.push(d(
                        "no_node",
                        format!("EPMD on {} answers but no node is registered", p.ip),
                        "the BEAM is not running or not distributed there: start the release with RELEASE_DISTRIBUTION=name and RELEASE_NODE=<name>@<task ip>".into(),
                    ));
                } else if !p.registered {
                    let names: Vec<String> = epmd.names.iter().map(|(n, port)| format!("{n} (port {port})")).collect();
                    let first = &epmd.names[0].0;
                    out.push(d(
                        "name_mismatch",
                        format!("EPMD on {} has {} but not {:?}", p.ip, names.join(", "), p.expected_name),
                        format!("the nodes are named differently from what discovery expects: set node_basename to {first:?} (the part before @ of RELEASE_NODE), or rename the release"),
                    ));
                } else {
                    let port = p.dist_port.unwrap_or_default();
                    match &p.dist {
                        Some(Reach::Open { .. }) => {}
                        Some(Reach::TimedOut) => out.push(d(
                            "dist_port_blocked",
                            format!("{}:{port}, {}'s distribution port, does not answer while its EPMD does", p.ip, p.expected_name),
                            format!("allow the distribution port range in the security group (the node listens on {port}); pin the range with `-kernel inet_dist_listen_min {port} inet_dist_listen_max {}` in vm.args so the rule can name it", port.saturating_add(9)),
                        )),
                        Some(other) => out.push(d(
                            "dist_port_unreachable",
                            format!("{}:{port}, {}'s distribution port, cannot be reached ({other:?}) while its EPMD answers", p.ip, p.expected_name),
                            "check the node is still up and that the distribution port range (inet_dist_listen_min/max) is open".into(),
                        )),
                        None => {}
                    }
                    out.extend(handshake_problem(p, &who));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::namespace::{Claim, Conflict};

    fn status(
        id: &str,
        region: &str,
        ok: bool,
        peers: usize,
        failure: Option<crate::SourceError>,
    ) -> SourceStatus {
        SourceStatus {
            id: SourceId::new(id.into()),
            kind: "ecs",
            region: region.into(),
            ok,
            stale: !ok,
            pending: false,
            error: failure.as_ref().map(ToString::to_string),
            error_kind: failure.as_ref().map(|e| e.kind),
            failure,
            last_success: None,
            consecutive_failures: u32::from(!ok),
            api_calls: 1,
            api_calls_by_action: Default::default(),
            api_calls_total: 1,
            peers,
            backoff_until: None,
            skipped_tasks: 0,
            skipped: Vec::new(),
            poller: None,
            received_from: None,
            received_at: None,
            shared_dropped: 0,
            poller_silent: false,
        }
    }

    fn check(
        ip: &str,
        region: &str,
        reach: Reach,
        names: &[(&str, u16)],
        dist: Option<Reach>,
        hs: Option<Handshake>,
    ) -> PeerCheck {
        let names: Vec<(String, u16)> = names.iter().map(|(n, p)| (n.to_string(), *p)).collect();
        let dist_port = names.iter().find(|(n, _)| n == "app").map(|(_, p)| *p);
        PeerCheck {
            node: format!("app@{ip}"),
            ip: ip.parse().unwrap(),
            port: None,
            region: region.into(),
            source: SourceId::new(format!("ecs:{region}/web")),
            epmd: Some(EpmdAnswer {
                reach,
                names,
                error: None,
            }),
            expected_name: "app".into(),
            registered: dist_port.is_some(),
            dist_port,
            dist,
            handshake: hs,
        }
    }

    fn open() -> Reach {
        Reach::Open { rtt_ms: 0.3 }
    }

    fn codes(d: &[Diagnosis]) -> Vec<(&str, &str)> {
        d.iter().map(|d| (d.code, d.subject.as_str())).collect()
    }

    #[test]
    fn a_healthy_cluster_has_no_diagnosis() {
        let mut s = Snapshot::empty();
        s.sources = vec![status("ecs:eu-west-2/web", "eu-west-2", true, 2, None)];
        let peers = vec![
            check(
                "10.1.0.4",
                "eu-west-2",
                open(),
                &[("app", 9100)],
                Some(open()),
                Some(Handshake::Ok),
            ),
            check(
                "10.1.0.5",
                "eu-west-2",
                open(),
                &[("app", 9100)],
                Some(open()),
                None,
            ),
        ];
        assert!(diagnoses(&s, &peers).is_empty());
    }

    #[test]
    fn each_broken_case_has_its_own_diagnosis() {
        let mut s = Snapshot::empty();
        s.sources = vec![
            status("ecs:eu-west-2/web", "eu-west-2", true, 6, None),
            status("ecs:us-west-2/web", "us-west-2", true, 2, None),
            status("ecs:ap-south-1/web", "ap-south-1", true, 0, None),
            status(
                "ecs:sa-east-1/web",
                "sa-east-1",
                false,
                0,
                Some(
                    crate::SourceError::new(
                        ErrorKind::AccessDenied,
                        "ecs:ListTasks",
                        "AccessDeniedException: no",
                    )
                    .with_fix("grant ecs:ListTasks to the task role"),
                ),
            ),
        ];
        s.conflicts = vec![Conflict {
            ip: "10.9.0.4".parse().unwrap(),
            claims: vec![
                Claim {
                    source: SourceId::new("a".into()),
                    port: None,
                    region: "eu-west-2".into(),
                    task: None,
                },
                Claim {
                    source: SourceId::new("b".into()),
                    port: None,
                    region: "us-west-2".into(),
                    task: None,
                },
            ],
        }];
        let peers = vec![
            check(
                "10.1.0.4",
                "eu-west-2",
                open(),
                &[("app", 9100)],
                Some(open()),
                Some(Handshake::Ok),
            ),
            check("10.1.0.5", "eu-west-2", Reach::TimedOut, &[], None, None),
            check(
                "10.1.0.6",
                "eu-west-2",
                open(),
                &[("web", 9100)],
                None,
                None,
            ),
            check(
                "10.1.0.7",
                "eu-west-2",
                open(),
                &[("app", 9100)],
                Some(Reach::TimedOut),
                None,
            ),
            check(
                "10.1.0.8",
                "eu-west-2",
                open(),
                &[("app", 9100)],
                Some(open()),
                Some(Handshake::CookieMismatch),
            ),
            check("10.1.0.9", "eu-west-2", Reach::Refused, &[], None, None),
            check("10.2.0.4", "us-west-2", Reach::TimedOut, &[], None, None),
            check("10.2.0.5", "us-west-2", Reach::TimedOut, &[], None, None),
        ];
        let d = diagnoses(&s, &peers);
        assert_eq!(
            codes(&d),
            [
                ("access_denied", "ecs:sa-east-1/web"),
                ("overlapping_cidrs", "10.9.0.4"),
                ("region_without_peers", "ap-south-1"),
                ("region_unreachable", "us-west-2"),
                ("epmd_blocked", "app@10.1.0.5 (eu-west-2)"),
                ("name_mismatch", "app@10.1.0.6 (eu-west-2)"),
                ("dist_port_blocked", "app@10.1.0.7 (eu-west-2)"),
                ("cookie_mismatch", "app@10.1.0.8 (eu-west-2)"),
                ("epmd_refused", "app@10.1.0.9 (eu-west-2)"),
            ]
        );
        assert_eq!(d[0].fix, "grant ecs:ListTasks to the task role");
        assert!(
            d[5].problem.contains("has web (port 9100) but not \"app\""),
            "{}",
            d[5].problem
        );
        assert!(d[5].fix.contains("set node_basename to \"web\""));
        assert!(d[6].fix.contains("inet_dist_listen_min 9100"));
    }

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
            sources: vec![status("ecs:eu-west-2/web", "eu-west-2", true, 1, None)],
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

    #[test]
    fn skipped_tasks_are_a_problem_with_the_task_definition_fix() {
        use crate::peer::{SkipReason, Skipped};
        let mut src = status("ecs:eu-west-2/web", "eu-west-2", true, 0, None);
        src.skipped_tasks = 2;
        src.skipped = vec![Skipped {
            reason: SkipReason::NoDistributionBinding,
            tasks: 2,
            example_task: "arn:aws:ecs:eu-west-2:1:task/web/4e3cfb1a6d2a4b0f9d6c2f9f5b8a7c11"
                .into(),
            message: SkipReason::NoDistributionBinding.message(4370),
            fix: SkipReason::NoDistributionBinding.fix(4370),
        }];
        let snap = Snapshot {
            sources: vec![src],
            ..Snapshot::empty()
        };
        let d = diagnoses(&snap, &[]);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(
            (d[0].code, d[0].subject.as_str()),
            ("tasks_skipped", "ecs:eu-west-2/web")
        );
        assert!(
            d[0].problem
                .contains("task 4e3cfb1a6d2a4b0f9d6c2f9f5b8a7c11")
                && d[0].problem.contains("4370"),
            "{}",
            d[0].problem
        );
        assert!(
            d[0].fix.contains(r#""containerPort": 4370, "hostPort": 0"#),
            "{}",
            d[0].fix
        );
    }
}
