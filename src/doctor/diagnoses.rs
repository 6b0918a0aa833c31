//! What is wrong, from the snapshot and the checks of its peers: one function per diagnosis,
//! most fundamental first (sources, addressing, routing, then per node). Pure: no network, so
//! every diagnosis is tested on hand-made checks.

use std::collections::BTreeMap;

use serde::Serialize;

use super::check::PeerCheck;
use super::tls::{seconds, PeerCertificate, TlsCheck};
use crate::epmd::{EpmdAnswer, Handshake, Reach};
use crate::error::ErrorKind;
use crate::namespace::{credentials_work_elsewhere, Conflict, Snapshot, SourceState, SourceStatus};

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

fn diagnosis(
    code: &'static str,
    subject: impl Into<String>,
    problem: String,
    fix: impl Into<String>,
) -> Diagnosis {
    Diagnosis {
        code,
        subject: subject.into(),
        problem,
        fix: fix.into(),
    }
}

/// Every diagnosis of `snapshot` and of the checks of its peers, in the order of
/// [`super::Report::diagnoses`]. A peer in a region that nothing answers from is diagnosed once,
/// with its region, not once per peer.
pub(crate) fn diagnoses(snapshot: &Snapshot, peers: &[PeerCheck]) -> Vec<Diagnosis> {
    let mut out: Vec<Diagnosis> = snapshot
        .failing()
        .map(|s| failing_source(s, &snapshot.sources))
        .collect();
    out.extend(skipped_tasks(&snapshot.sources));
    out.extend(snapshot.conflicts.iter().map(overlapping_cidrs));
    out.extend(regions_without_peers(&snapshot.sources));
    let unreachable = unreachable_regions(peers);
    let in_unreachable_region = |p: &PeerCheck| unreachable.iter().any(|d| d.subject == p.region);
    let per_peer: Vec<Diagnosis> = peers
        .iter()
        .filter(|p| !in_unreachable_region(p))
        .flat_map(peer_diagnoses)
        .collect();
    out.extend(unreachable);
    out.extend(per_peer);
    out
}

/// A failing source: the structured error, its message and its fix, as the source reported it;
/// `region_refused` when its region refuses credentials that work in other regions of `all`
/// (by [`credentials_work_elsewhere`], the rule that also wrote the fix).
fn failing_source(s: &SourceStatus, all: &[SourceStatus]) -> Diagnosis {
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
    let code = match s.error_kind {
        Some(ErrorKind::Credentials) if credentials_work_elsewhere(s, all).is_some() => {
            "region_refused"
        }
        Some(ErrorKind::AccessDenied) => "access_denied",
        Some(ErrorKind::Credentials) => "credentials",
        Some(ErrorKind::NotFound) => "source_not_found",
        _ => "source_failing",
    };
    diagnosis(code, s.id.to_string(), problem, fix)
}

/// RUNNING tasks or Cloud Map instances a source found but could not turn into peers, by
/// reason.
fn skipped_tasks(sources: &[SourceStatus]) -> Vec<Diagnosis> {
    sources
        .iter()
        .flat_map(|s| s.skipped.iter().map(move |k| (s, k)))
        .map(|(s, k)| {
            diagnosis(
                "tasks_skipped",
                s.id.to_string(),
                format!(
                    "{} {} are not peers (e.g. {}): {}",
                    k.tasks,
                    k.reason.unit(),
                    k.example(),
                    k.message
                ),
                k.fix.clone(),
            )
        })
        .collect()
}

/// The same IP in two regions: the VPCs' CIDRs overlap.
fn overlapping_cidrs(c: &Conflict) -> Diagnosis {
    let claims: Vec<String> = c
        .claims
        .iter()
        .map(|k| format!("{} ({})", k.source, k.region))
        .collect();
    diagnosis(
        "overlapping_cidrs",
        c.ip.to_string(),
        format!(
            "{} is reported by {}: the VPCs' CIDRs overlap, and VPC peering cannot route overlapping CIDRs, so it is not used as a peer",
            c.ip,
            claims.join(" and ")
        ),
        "give each region's VPC (or at least its task subnets) a CIDR of its own, then peer them",
    )
}

/// Regions whose sources all answer but list nobody, while other regions have peers. A region
/// whose sources found running tasks and skipped them is not one: its tasks run, and
/// `tasks_skipped` says why they are not peers. Nor is a region a `regions` source found absent
/// (not enabled, no such cluster or service): nothing is meant to run there.
fn regions_without_peers(sources: &[SourceStatus]) -> Vec<Diagnosis> {
    let mut by_region: BTreeMap<&str, (bool, usize)> = BTreeMap::new();
    for s in sources {
        let e = by_region.entry(s.region.as_str()).or_insert((true, 0));
        e.0 &= s.state == SourceState::Ok;
        e.1 += s.peers;
    }
    let total: usize = by_region.values().map(|v| v.1).sum();
    by_region
        .iter()
        .filter(|(_, (ok, n))| *ok && *n == 0 && total > 0)
        .map(|(region, _)| {
            let ids: Vec<String> = sources
                .iter()
                .filter(|s| s.region == *region)
                .map(|s| s.id.to_string())
                .collect();
            diagnosis(
                "region_without_peers",
                region.to_string(),
                format!("{region} answers but has no peers ({}) while other regions have {total}", ids.join(", ")),
                "check that tasks are running there, and that the cluster, service, family or namespace names match that region's (names are per region)",
            )
        })
        .collect()
}

/// The first connection a check made: to EPMD, or to the distribution port directly.
fn first_reach(p: &PeerCheck) -> &Reach {
    match (&p.epmd, &p.dist) {
        (Some(e), _) => &e.reach,
        (None, Some(d)) => d,
        (None, None) => &Reach::NoRoute,
    }
}

/// Regions none of whose peers answers at all (routing), told apart from single tasks that do
/// not (their security group): each such region once, its subject the region.
fn unreachable_regions(peers: &[PeerCheck]) -> Vec<Diagnosis> {
    let mut per_region: BTreeMap<&str, Vec<&PeerCheck>> = BTreeMap::new();
    for p in peers {
        per_region.entry(p.region.as_str()).or_default().push(p);
    }
    let any_open = peers.iter().any(|p| first_reach(p).is_open());
    let mut out = Vec::new();
    for (region, ps) in &per_region {
        let dead = ps
            .iter()
            .all(|p| matches!(first_reach(p), Reach::TimedOut | Reach::NoRoute));
        if !(dead && (any_open || ps.len() > 1)) {
            continue;
        }
        let how = if ps.iter().any(|p| *first_reach(p) == Reach::NoRoute) {
            "no route"
        } else {
            "timed out"
        };
        out.push(diagnosis(
            "region_unreachable",
            region.to_string(),
            format!(
                "none of the {} peers in {region} answers on {} ({how}){}",
                ps.len(),
                if ps.iter().all(|p| p.epmd.is_some()) { "port 4369".to_string() } else { "its distribution port".to_string() },
                if any_open { " while peers in other regions do" } else { "" }
            ),
            format!("no route to {region}'s VPC: check that the VPC peering connection is active and that the route tables on both sides send the other VPC's CIDR to it; then the security groups (TCP 4369 and the distribution port range)"),
        ));
    }
    out
}

/// Why this host cannot connect to one peer: the first of [`peer_diagnoses`] (the most
/// fundamental, as the report lists them), or, when every check passes from here,
/// [`checks_pass`]. What a node's own diagnosis of a peer it cannot connect to says; the
/// doctor's report says the same of that peer (unless its whole region is unreachable, which
/// the report tells once, per region).
pub(crate) fn unconnected(p: &PeerCheck) -> Diagnosis {
    peer_diagnoses(p)
        .into_iter()
        .next()
        .unwrap_or_else(|| checks_pass(p))
}

/// Every check passes from here, yet the peer is not connected: the cause is past what the
/// checks see (TCP and the plain-TCP handshake).
fn checks_pass(p: &PeerCheck) -> Diagnosis {
    let who = format!("{} ({})", p.node, p.region);
    let port = p
        .dist_port
        .map_or_else(|| "its distribution port".to_string(), |q| q.to_string());
    let checked = match (&p.epmd, &p.handshake) {
        (Some(_), Some(_)) => format!("its EPMD, the name {:?} registered there, port {port} and a handshake with this cookie", p.expected_name),
        (Some(_), None) => format!("its EPMD, the name {:?} registered there and port {port} (no handshake: no cookie)", p.expected_name),
        (None, Some(_)) => format!("port {port} and a handshake with this cookie"),
        (None, None) => format!("port {port} (no handshake: no cookie)"),
    };
    diagnosis(
        "checks_pass",
        who,
        format!("{} answers every check from here ({checked}), yet the connection to it fails", p.node),
        "read both nodes' logs for the distribution's own error: both must run with long names (name@ip) and the same distribution protocol (inet_tcp, inet6_tcp, or TLS on both sides), and the name must be the one the node runs as",
    )
}

/// What is wrong with one peer, in the order a connection to it goes: EPMD, the name it
/// registered, the distribution port, the handshake.
fn peer_diagnoses(p: &PeerCheck) -> Vec<Diagnosis> {
    let who = format!("{} ({})", p.node, p.region);
    let Some(epmd) = &p.epmd else {
        // Checked at its distribution port directly (bridge/host mode, or EPMD-less).
        return [dist_port_direct(p, &who), handshake_problem(p, &who)]
            .into_iter()
            .flatten()
            .collect();
    };
    if let Some(d) = epmd_unreachable(p, &epmd.reach, &who) {
        return vec![d];
    }
    if let Some(d) = epmd_registration(p, epmd, &who) {
        return vec![d];
    }
    [dist_port_behind_epmd(p, &who), handshake_problem(p, &who)]
        .into_iter()
        .flatten()
        .collect()
}

/// A peer checked at its distribution port directly that cannot be reached there.
fn dist_port_direct(p: &PeerCheck, who: &str) -> Option<Diagnosis> {
    let port = p.dist_port.unwrap_or_default();
    Some(match p.dist.as_ref()? {
        Reach::NoRoute => diagnosis(
            "no_route",
            who,
            format!("this host has no route to {}", p.ip),
            "add a route to the peer's VPC CIDR through the VPC peering connection",
        ),
        Reach::TimedOut => diagnosis(
            "dist_port_blocked",
            who,
            format!("{}:{port}, {}'s distribution port{}, does not answer: packets are dropped", p.ip, p.expected_name, if p.port.is_some() { " as ECS maps it" } else { "" }),
            format!("allow inbound TCP {port} from the peers in the security group of {} (see the rule below)", p.node),
        ),
        Reach::Refused => diagnosis(
            "dist_port_refused",
            who,
            format!("{}:{port} refuses connections: no node listens there", p.ip),
            "check the node is running with EcsPeers.Epmd on the distribution port (ECS_PEERS_DIST_PORT) and, in bridge mode, that its container maps that port; check its container logs",
        ),
        Reach::Failed { error } => diagnosis(
            "dist_port_unreachable",
            who,
            format!("connecting to {}:{port} failed: {error}", p.ip),
            "see the error",
        ),
        Reach::Open { .. } => return None,
    })
}

/// A peer whose EPMD (port 4369) cannot be reached.
fn epmd_unreachable(p: &PeerCheck, reach: &Reach, who: &str) -> Option<Diagnosis> {
    Some(match reach {
        Reach::NoRoute => diagnosis(
            "no_route",
            who,
            format!("this host has no route to {}", p.ip),
            "add a route to the peer's VPC CIDR through the VPC peering connection",
        ),
        Reach::TimedOut => diagnosis(
            "epmd_blocked",
            who,
            format!("{}:4369 (EPMD) does not answer: packets are dropped", p.ip),
            format!("allow inbound TCP 4369 from the peers' CIDRs in the security group of {}'s task (and check the subnet's network ACL)", p.node),
        ),
        Reach::Refused => diagnosis(
            "epmd_refused",
            who,
            format!("{}:4369 refuses connections: no EPMD listens there, or a firewall rejects", p.ip),
            "check the task is running a distributed BEAM (EPMD starts with it: RELEASE_DISTRIBUTION=name); check its container logs",
        ),
        Reach::Failed { error } => diagnosis(
            "epmd_error",
            who,
            format!("connecting to {}:4369 failed: {error}", p.ip),
            "see the error",
        ),
        Reach::Open { .. } => return None,
    })
}

/// A peer whose EPMD answers, but not with the node name discovery expects.
fn epmd_registration(p: &PeerCheck, epmd: &EpmdAnswer, who: &str) -> Option<Diagnosis> {
    if let Some(e) = &epmd.error {
        return Some(diagnosis(
            "epmd_error",
            who,
            format!("EPMD on {} did not answer NAMES: {e}", p.ip),
            "is port 4369 EPMD there? check the task",
        ));
    }
    let Some((first, _)) = epmd.names.first() else {
        return Some(diagnosis(
            "no_node",
            who,
            format!("EPMD on {} answers but no node is registered", p.ip),
            "the BEAM is not running or not distributed there: start the release with RELEASE_DISTRIBUTION=name and RELEASE_NODE=<name>@<task ip>",
        ));
    };
    if p.registered {
        return None;
    }
    let names: Vec<String> = epmd
        .names
        .iter()
        .map(|(n, port)| format!("{n} (port {port})"))
        .collect();
    Some(diagnosis(
        "name_mismatch",
        who,
        format!("EPMD on {} has {} but not {:?}", p.ip, names.join(", "), p.expected_name),
        format!("the nodes are named differently from what discovery expects: set node_basename to {first:?} (the part before @ of RELEASE_NODE), or rename the release"),
    ))
}

/// A peer registered with its EPMD whose distribution port cannot be reached.
fn dist_port_behind_epmd(p: &PeerCheck, who: &str) -> Option<Diagnosis> {
    let port = p.dist_port.unwrap_or_default();
    match p.dist.as_ref()? {
        Reach::Open { .. } => None,
        Reach::TimedOut => Some(diagnosis(
            "dist_port_blocked",
            who,
            format!("{}:{port}, {}'s distribution port, does not answer while its EPMD does", p.ip, p.expected_name),
            format!("allow the distribution port range in the security group (the node listens on {port}); pin the range with `-kernel inet_dist_listen_min {port} inet_dist_listen_max {}` in vm.args so the rule can name it", port.saturating_add(9)),
        )),
        other => Some(diagnosis(
            "dist_port_unreachable",
            who,
            format!("{}:{port}, {}'s distribution port, cannot be reached ({other:?}) while its EPMD answers", p.ip, p.expected_name),
            "check the node is still up and that the distribution port range (inet_dist_listen_min/max) is open",
        )),
    }
}

/// What a failed distribution handshake with a peer means, whichever way its port was found
/// (through EPMD, or from ECS directly): first TLS (the protocol, the certificates), then the
/// cookie.
fn handshake_problem(p: &PeerCheck, who: &str) -> Option<Diagnosis> {
    if let Some(d) = p.tls.as_ref().and_then(|t| tls_problem(p, t, who)) {
        return Some(d);
    }
    match &p.handshake {
        Some(Handshake::CookieMismatch) => Some(diagnosis(
            "cookie_mismatch",
            who,
            format!("{} rejected the handshake: its cookie differs from the one the check used", p.node),
            "use the same cookie on every node (RELEASE_COOKIE, or the release's COOKIE file); `ecs-peers doctor` checks with --cookie (or RELEASE_COOKIE), a node with its own",
        )),
        Some(Handshake::Failed { error }) => Some(diagnosis(
            "handshake_failed",
            who,
            format!("the distribution handshake with {} failed: {error}", p.node),
            "check both nodes run compatible OTP versions and use long names (name@ip); the node name must be the one the node runs as",
        )),
        Some(Handshake::Ok) | None => None,
    }
}

/// The safe way from clear text to TLS, which the rollout diagnoses name.
const SAFE_ROLLOUT: &str = "nodes with TLS and nodes without cannot connect to each other: deploy TLS as a new ECS service (or a blue/green deployment) beside the clear-text one, move traffic to it, then remove the old service; never a rolling update of one service from clear text to TLS (docs/tls.md, \"Moving a cluster to TLS\")";

/// The TLS problem with one peer, most fundamental first: the protocol (clear text on one side),
/// the peer's certificate (its CA, its address, its expiry), then whether it accepted ours.
fn tls_problem(p: &PeerCheck, t: &TlsCheck, who: &str) -> Option<Diagnosis> {
    use super::tls::TlsOutcome;
    if let TlsOutcome::ClearText = t.outcome {
        return Some(tls_clear_text_peer(p, who));
    }
    if let TlsOutcome::RequiresTls = t.outcome {
        return Some(tls_expected_by_peer(p, who));
    }
    if let Some(c) = &t.certificate {
        if c.issuer_ok == Some(false) {
            return Some(tls_other_ca(p, c, who));
        }
        if !c.names_address {
            return Some(tls_wrong_address(p, c, who));
        }
        if c.expires_in_s <= 0 {
            return Some(tls_expired(p, c, who));
        }
    }
    if let TlsOutcome::RefusedUs { alert } = &t.outcome {
        return Some(tls_refused_us(p, alert, who));
    }
    if let Some(c) = &t.certificate {
        if c.expires_in_s < i64::try_from(t.expiring_margin_s).unwrap_or(i64::MAX) {
            return Some(tls_expiring(p, c, t.expiring_margin_s, who));
        }
    }
    None
}

/// We speak TLS; the peer answers the clear-text distribution handshake.
fn tls_clear_text_peer(p: &PeerCheck, who: &str) -> Diagnosis {
    diagnosis(
        "tls_clear_text_peer",
        who,
        format!("{} runs distribution in clear text while this side runs TLS (tls_ca): a mixed cluster, e.g. during a rollout from clear text to TLS, where the two kinds of node cannot connect", p.node),
        format!("{SAFE_ROLLOUT}; or, if {} should run TLS, set ECS_PEERS_TLS_CA in its task definition and start it with -proto_dist ecs_peers_tls", p.node),
    )
}

/// We speak clear text (no `tls_ca`); the peer requires TLS.
fn tls_expected_by_peer(p: &PeerCheck, who: &str) -> Diagnosis {
    diagnosis(
        "tls_expected_by_peer",
        who,
        format!("{} requires TLS on its distribution port (it presented a certificate) while this side speaks clear text: this side has no tls_ca (a doctor run without --tls-ca, or a node of the old, clear-text deployment)", p.node),
        format!("run the doctor with --tls-ca set to the TLS tasks' tls_ca (inside such a task: --tls-ca \"$ECS_PEERS_TLS_CA\"); for a node: {SAFE_ROLLOUT}"),
    )
}

/// The peer's certificate does not chain to our cluster CA.
fn tls_other_ca(p: &PeerCheck, c: &PeerCertificate, who: &str) -> Diagnosis {
    diagnosis(
        "tls_other_ca",
        who,
        format!("{}'s certificate was issued by {:?}, not by this side's cluster CA: the two sides read different CAs (tls_ca), so they refuse each other", p.node, c.issuer),
        "give every task of the cluster the same tls_ca (ECS_PEERS_TLS_CA: the same secret or parameter ARN, in every region); after a CA rotation, redeploy the service so every task reads the new CA",
    )
}

/// The peer's certificate is from our CA but names another address.
fn tls_wrong_address(p: &PeerCheck, c: &PeerCertificate, who: &str) -> Diagnosis {
    diagnosis(
        "tls_wrong_address",
        who,
        format!("{}'s certificate names {} but not {}, the address it is dialled at: its peers refuse it (hostname_check_failed)", p.node, if c.names.is_empty() { "nothing".to_string() } else { c.names.join(", ") }, p.ip),
        format!("the certificate must be issued for the task's own address: let ecs-peers issue it (tls_ca, no tls_issuer), or make a custom tls_issuer put {} in an iPAddress and a dNSName SAN; the node name's host must be that address", p.ip),
    )
}

/// The peer's certificate has expired.
fn tls_expired(p: &PeerCheck, c: &PeerCertificate, who: &str) -> Diagnosis {
    diagnosis(
        "tls_expired",
        who,
        format!("{}'s certificate expired {} ago (notAfter {}): no peer accepts it", p.node, seconds(-c.expires_in_s), rfc3339(c.not_after)),
        format!("{} has not renewed its certificate: its log says why (\"was not renewed\"; usually the task role cannot read tls_ca, or the CA itself expired); fix that, or call EcsPeers.TLS.renew() in its console, or replace the task", p.node),
    )
}

/// The peer's certificate expires within the margin.
fn tls_expiring(p: &PeerCheck, c: &PeerCertificate, margin_s: u64, who: &str) -> Diagnosis {
    diagnosis(
        "tls_expiring",
        who,
        format!("{}'s certificate expires in {} (notAfter {}), less than {} away: renewal (due when a third of tls_validity is left) has been failing", p.node, seconds(c.expires_in_s), rfc3339(c.not_after), seconds(i64::try_from(margin_s).unwrap_or(i64::MAX))),
        format!("read {}'s log for \"was not renewed\" and its reason (usually the task role cannot read tls_ca, or the CA expires first); fix it before the certificate expires, or replace the task", p.node),
    )
}

/// The peer refused the certificate we presented.
fn tls_refused_us(p: &PeerCheck, alert: &str, who: &str) -> Diagnosis {
    diagnosis(
        "tls_refused_us",
        who,
        format!("{} refused this side's certificate ({alert}): its CA is not this side's, or this side's address is not one the peer's discovery lists", p.node),
        "run the doctor inside a task of the cluster (ECS Exec: aws ecs execute-command), where its certificate names a listed address; check that both sides read the same tls_ca",
    )
}

/// Unix seconds as RFC 3339 UTC.
fn rfc3339(unix: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(unix).unwrap_or(0));
    crate::namespace::rfc3339(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::epmd::EpmdAnswer;
    use crate::error::SourceError;
    use crate::namespace::tests::status;
    use crate::namespace::Claim;
    use crate::peer::SourceId;

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
            tls: None,
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
        s.sources = vec![status("ecs:eu-west-2/web", "eu-west-2", 2, None)];
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
    fn a_region_refusing_credentials_that_work_elsewhere_is_not_called_bad_credentials() {
        let refused = || {
            crate::error::classify_code(
                Some("UnrecognizedClientException"),
                Some(400),
                "ecs:ListTasks",
                "UnrecognizedClientException: The security token included in the request is invalid.".into(),
                "",
                "",
            )
        };
        let mut s = Snapshot::empty();
        s.sources = vec![
            status("ecs:ap-east-1/web", "ap-east-1", 0, Some(refused())),
            status("ecs:eu-west-2/web", "eu-west-2", 2, None),
        ];
        crate::namespace::explain_refused_regions(&mut s.sources);
        let d = diagnoses(&s, &[]);
        assert_eq!(codes(&d), [("region_refused", "ecs:ap-east-1/web")]);
        assert!(
            d[0].fix.contains("enable-region --region-name ap-east-1")
                && d[0].fix.contains("v2Token"),
            "{}",
            d[0].fix
        );
        // Refused everywhere: bad credentials, as before.
        s.sources[1] = status("ecs:eu-west-2/web", "eu-west-2", 0, Some(refused()));
        let d = diagnoses(&s, &[]);
        assert_eq!(d[0].code, "credentials");
    }

    #[test]
    fn an_absent_region_is_no_finding() {
        let mut s = Snapshot::empty();
        let mut absent = status("ecs:us-east-1/web/api", "us-east-1", 0, None);
        absent.absent = Some("the cluster does not exist in us-east-1".into());
        absent.state = SourceState::Absent;
        s.sources = vec![
            status("ecs:eu-west-2/web/api", "eu-west-2", 2, None),
            absent,
        ];
        assert_eq!(codes(&diagnoses(&s, &[])), []);
        // Present and empty while others have peers: still the finding it was.
        s.sources[1].absent = None;
        s.sources[1].state = SourceState::Ok;
        assert_eq!(
            codes(&diagnoses(&s, &[])),
            [("region_without_peers", "us-east-1")]
        );
    }

    #[test]
    fn each_broken_case_has_its_own_diagnosis() {
        let mut s = Snapshot::empty();
        s.sources = vec![
            status("ecs:eu-west-2/web", "eu-west-2", 6, None),
            status("ecs:us-west-2/web", "us-west-2", 2, None),
            status("ecs:ap-south-1/web", "ap-south-1", 0, None),
            status(
                "ecs:sa-east-1/web",
                "sa-east-1",
                0,
                Some(
                    SourceError::new(
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

    #[test]
    fn a_region_whose_tasks_are_all_skipped_is_not_told_to_check_that_tasks_run() {
        use crate::peer::{SkipReason, Skipped};
        let mut s = Snapshot::empty();
        let mut anywhere = status("ecs:eu-west-2/hybrid", "eu-west-2", 0, None);
        anywhere.skipped_tasks = 2;
        anywhere.state = SourceState::Skipping;
        anywhere.skipped = vec![Skipped {
            reason: SkipReason::ExternalInstance,
            tasks: 2,
            example_task: "arn:aws:ecs:eu-west-2:1:task/hybrid/t1".into(),
            message: SkipReason::ExternalInstance.message(4370),
            fix: SkipReason::ExternalInstance.fix(4370),
        }];
        s.sources = vec![anywhere, status("ecs:us-east-1/web", "us-east-1", 3, None)];
        let d = diagnoses(&s, &[]);
        assert_eq!(codes(&d), [("tasks_skipped", "ecs:eu-west-2/hybrid")]);
        assert!(d[0].problem.contains("ECS Anywhere"), "{}", d[0].problem);
    }

    #[test]
    fn skipped_tasks_are_a_problem_with_the_task_definition_fix() {
        use crate::peer::{SkipReason, Skipped};
        let mut src = status("ecs:eu-west-2/web", "eu-west-2", 0, None);
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

    fn tls_peer(
        outcome: crate::doctor::TlsOutcome,
        cert: Option<(Option<bool>, bool, i64)>,
    ) -> PeerCheck {
        let mut p = check(
            "10.1.0.4",
            "eu-west-2",
            open(),
            &[("app", 9100)],
            Some(open()),
            None,
        );
        p.tls = Some(TlsCheck {
            we_speak_tls: !matches!(outcome, crate::doctor::TlsOutcome::RequiresTls),
            speaks_tls: Some(!matches!(outcome, crate::doctor::TlsOutcome::ClearText)),
            outcome,
            certificate: cert.map(|(issuer_ok, names_address, expires_in_s)| PeerCertificate {
                issuer: "CN=another CA".into(),
                issuer_ok,
                names: vec!["10.1.0.9".into()],
                names_address,
                not_after: 1_800_000_000,
                expires_in_s,
            }),
            expiring_margin_s: 21_600,
        });
        p
    }

    /// Each TLS fact has its own diagnosis, the most fundamental first: the protocol, the CA,
    /// the address, expiry, then whether the peer took our certificate, then expiring soon.
    #[test]
    fn each_tls_problem_has_its_own_diagnosis_in_order() {
        use crate::doctor::TlsOutcome::*;
        let refused = || RefusedUs {
            alert: "alert bad_certificate".into(),
        };
        let cases = [
            (tls_peer(ClearText, None), Some("tls_clear_text_peer")),
            (
                tls_peer(RequiresTls, Some((None, true, 86_400))),
                Some("tls_expected_by_peer"),
            ),
            // Another CA and another address and expired: the CA is said.
            (
                tls_peer(refused(), Some((Some(false), false, -10))),
                Some("tls_other_ca"),
            ),
            (
                tls_peer(Ok, Some((Some(true), false, -10))),
                Some("tls_wrong_address"),
            ),
            (
                tls_peer(Ok, Some((Some(true), true, -10))),
                Some("tls_expired"),
            ),
            (
                tls_peer(refused(), Some((Some(true), true, 600))),
                Some("tls_refused_us"),
            ),
            (
                tls_peer(Ok, Some((Some(true), true, 600))),
                Some("tls_expiring"),
            ),
            // Unknown CA (no CA to check against): not called another CA.
            (
                tls_peer(refused(), Some((None, true, 86_400))),
                Some("tls_refused_us"),
            ),
            (tls_peer(Ok, Some((Some(true), true, 86_400))), None),
        ];
        for (p, want) in cases {
            let got = peer_diagnoses(&p).first().map(|d| d.code);
            assert_eq!(got, want, "{:?}", p.tls);
        }
        let d = unconnected(&tls_peer(ClearText, None));
        assert!(
            d.fix.contains("new ECS service") && d.fix.contains("never a rolling update"),
            "{}",
            d.fix
        );
        let d = unconnected(&tls_peer(Ok, Some((Some(true), false, 86_400))));
        assert!(
            d.problem.contains("names 10.1.0.9 but not 10.1.0.4"),
            "{}",
            d.problem
        );
        let d = unconnected(&tls_peer(refused(), Some((None, true, 86_400))));
        assert!(
            d.fix.contains("inside a task of the cluster (ECS Exec"),
            "{}",
            d.fix
        );
    }
}
