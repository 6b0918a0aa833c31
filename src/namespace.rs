//! The merge: many sources' peers become one deterministic snapshot; and the diff between two.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::SystemTime;

use serde::Serialize;

use crate::error::ErrorKind;
use crate::peer::{Peer, SourceId};

/// The schema tag of [`Snapshot`]'s JSON form.
pub const SNAPSHOT_SCHEMA: &str = "ecs-peers/snapshot/v1";

/// The health of one source after a poll.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceStatus {
    /// The source.
    pub id: SourceId,
    /// `ecs` or `cloudmap`.
    pub kind: &'static str,
    /// Its region.
    pub region: String,
    /// The last poll succeeded.
    pub ok: bool,
    /// The last poll failed and the peers shown are the last-known ones (or none were ever known).
    pub stale: bool,
    /// No poll of this source has finished yet (it is neither ok nor failing).
    pub pending: bool,
    /// Why the last poll failed, naming the fix where it can.
    pub error: Option<String>,
    /// The failure's class.
    pub error_kind: Option<ErrorKind>,
    /// When a poll of this source last succeeded (RFC 3339).
    pub last_success: Option<String>,
    /// Polls failed in a row.
    pub consecutive_failures: u32,
    /// AWS API calls (attempts, retries included) made by the last poll.
    pub api_calls: u64,
    /// The last poll's calls by IAM action, e.g. `{"ecs:ListTasks": 2, "ecs:DescribeTasks": 2}`.
    pub api_calls_by_action: BTreeMap<String, u64>,
    /// AWS API calls made since start.
    pub api_calls_total: u64,
    /// Peers this source contributes (last-known ones when failing).
    pub peers: usize,
    /// The source is backing off after throttling and is not polled until then (RFC 3339).
    pub backoff_until: Option<String>,
}

/// The same IP reported in two regions: overlapping VPC CIDRs, which peering cannot route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conflict {
    /// The contested address.
    pub ip: IpAddr,
    /// Every claim on it.
    pub claims: Vec<Claim>,
}

/// One source's claim on a conflicting IP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Claim {
    /// The source that reported the address.
    pub source: SourceId,
    /// The region it is in.
    pub region: String,
    /// The task ARN or instance id, where known.
    pub task: Option<String>,
}

/// One view of the namespace: what every adapter consumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// Always [`SNAPSHOT_SCHEMA`].
    pub schema: &'static str,
    /// Poll counter, from 1.
    pub poll: u64,
    /// When the poll finished (RFC 3339).
    pub taken_at: String,
    /// How long the poll round took, in milliseconds.
    pub duration_ms: u64,
    /// The peers, sorted by node name, without the local node and without conflicting IPs.
    pub peers: Vec<Peer>,
    /// One status per configured source, in configuration order.
    pub sources: Vec<SourceStatus>,
    /// Addresses claimed by several regions; no peer is emitted for them.
    pub conflicts: Vec<Conflict>,
    /// The local node, when a source reported it (it is not in `peers`).
    pub local: Option<Peer>,
}

impl Snapshot {
    /// Sources whose last poll failed (not those still waiting for their first answer).
    pub fn failing(&self) -> impl Iterator<Item = &SourceStatus> {
        self.sources.iter().filter(|s| !s.ok && !s.pending)
    }

    /// Compares with an earlier snapshot by node name.
    ///
    /// ```
    /// # use ecs_peers::Snapshot;
    /// let empty = Snapshot::empty();
    /// let changes = empty.diff(&empty);
    /// assert!(changes.is_empty());
    /// ```
    pub fn diff(&self, previous: &Snapshot) -> Changes {
        let before: BTreeMap<&str, &Peer> = previous
            .peers
            .iter()
            .map(|p| (p.node.as_str(), p))
            .collect();
        let after: BTreeMap<&str, &Peer> =
            self.peers.iter().map(|p| (p.node.as_str(), p)).collect();
        Changes {
            added: self
                .peers
                .iter()
                .filter(|p| !before.contains_key(p.node.as_str()))
                .cloned()
                .collect(),
            removed: previous
                .peers
                .iter()
                .filter(|p| !after.contains_key(p.node.as_str()))
                .cloned()
                .collect(),
            draining: self
                .peers
                .iter()
                .filter(|p| p.draining && before.get(p.node.as_str()).is_some_and(|b| !b.draining))
                .cloned()
                .collect(),
        }
    }

    /// A snapshot with nothing in it (poll 0), the "previous" of the first poll.
    pub fn empty() -> Snapshot {
        Snapshot {
            schema: SNAPSHOT_SCHEMA,
            poll: 0,
            taken_at: rfc3339(SystemTime::now()),
            duration_ms: 0,
            peers: Vec::new(),
            sources: Vec::new(),
            conflicts: Vec::new(),
            local: None,
        }
    }
}

/// What changed between two snapshots.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Changes {
    /// Peers that are new.
    pub added: Vec<Peer>,
    /// Peers that are gone.
    pub removed: Vec<Peer>,
    /// Peers still present that have started draining.
    pub draining: Vec<Peer>,
}

impl Changes {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.draining.is_empty()
    }
}

/// Who this node is, so it can be left out of its own peers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LocalNode {
    pub node: Option<String>,
    pub ip: Option<IpAddr>,
}

impl LocalNode {
    fn is(&self, p: &Peer) -> bool {
        self.node.as_deref() == Some(p.node.as_str()) || self.ip == Some(p.ip)
    }
}

/// Merges per-source peer lists (in configuration order) into sorted peers, conflicts and the
/// local node. Same IP in one region from several sources: one peer (the first source's, a
/// non-draining report preferred). Same IP in different regions: a conflict, no peer.
pub(crate) fn merge<'a>(
    per_source: impl IntoIterator<Item = &'a [Peer]>,
    local: &LocalNode,
) -> (Vec<Peer>, Vec<Conflict>, Option<Peer>) {
    let mut by_ip: BTreeMap<IpAddr, Vec<&Peer>> = BTreeMap::new();
    for peers in per_source {
        for p in peers {
            by_ip.entry(p.ip).or_default().push(p);
        }
    }
    let mut peers = Vec::with_capacity(by_ip.len());
    let mut conflicts = Vec::new();
    let mut me = None;
    for (ip, claims) in by_ip {
        let regions: BTreeSet<&str> = claims.iter().map(|p| p.region.as_str()).collect();
        if regions.len() > 1 {
            conflicts.push(Conflict {
                ip,
                claims: claims
                    .iter()
                    .map(|p| Claim {
                        source: p.source.clone(),
                        region: p.region.clone(),
                        task: p.task_arn.clone().or_else(|| p.instance_id.clone()),
                    })
                    .collect(),
            });
            continue;
        }
        let best = claims.iter().find(|p| !p.draining).unwrap_or(&claims[0]);
        let peer = (*best).clone();
        if local.is(&peer) {
            me = Some(peer);
        } else {
            peers.push(peer);
        }
    }
    peers.sort_by(|a, b| a.node.cmp(&b.node).then(a.ip.cmp(&b.ip)));
    (peers, conflicts, me)
}

/// Formats a time as RFC 3339 (UTC, seconds).
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let dt = aws_smithy_types::DateTime::from(t);
    let secs = aws_smithy_types::DateTime::from_secs(dt.secs());
    secs.fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_else(|_| dt.secs().to_string())
}

/// Merges per-source peers into a snapshot and diffs it against `previous`, exactly as a poll
/// does (for the benchmarks).
pub fn bench_merge(per_source: &[Vec<Peer>], previous: &Snapshot) -> (Snapshot, Changes) {
    let (peers, conflicts, local) =
        merge(per_source.iter().map(Vec::as_slice), &LocalNode::default());
    let snapshot = Snapshot {
        peers,
        conflicts,
        local,
        poll: previous.poll + 1,
        ..Snapshot::empty()
    };
    let changes = snapshot.diff(previous);
    (snapshot, changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn peer(ip: &str, region: &str, source: &str) -> Peer {
        Peer {
            node: format!("app@{ip}"),
            ip: ip.parse().unwrap(),
            region: region.into(),
            source: SourceId::new(source.into()),
            task_arn: Some(format!("arn:task/{ip}")),
            instance_id: None,
            availability_zone: None,
            started_at: None,
            health: None,
            draining: false,
        }
    }

    #[test]
    fn merge_sorts_and_dedupes_within_a_region() {
        let a = vec![
            peer("10.0.0.9", "eu-west-2", "ecs:a"),
            peer("10.0.0.10", "eu-west-2", "ecs:a"),
        ];
        let b = vec![peer("10.0.0.9", "eu-west-2", "cloudmap:b")];
        let (peers, conflicts, me) = merge([a.as_slice(), b.as_slice()], &LocalNode::default());
        let names: Vec<_> = peers.iter().map(|p| p.node.as_str()).collect();
        assert_eq!(names, ["app@10.0.0.10", "app@10.0.0.9"]);
        assert_eq!(
            peers[1].source.as_str(),
            "ecs:a",
            "first source in config order wins"
        );
        assert!(conflicts.is_empty());
        assert!(me.is_none());
    }

    #[test]
    fn merge_prefers_a_running_report_over_a_draining_one() {
        let mut d = peer("10.0.0.9", "eu-west-2", "ecs:a");
        d.draining = true;
        let b = vec![peer("10.0.0.9", "eu-west-2", "cloudmap:b")];
        let (peers, _, _) = merge([vec![d].as_slice(), b.as_slice()], &LocalNode::default());
        assert!(!peers[0].draining);
        assert_eq!(peers[0].source.as_str(), "cloudmap:b");
    }

    #[test]
    fn same_ip_in_two_regions_is_a_conflict_not_a_peer() {
        let a = vec![
            peer("10.0.0.5", "eu-west-2", "ecs:eu"),
            peer("10.0.0.6", "eu-west-2", "ecs:eu"),
        ];
        let b = vec![peer("10.0.0.5", "us-west-2", "ecs:us")];
        let (peers, conflicts, _) = merge([a.as_slice(), b.as_slice()], &LocalNode::default());
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].node, "app@10.0.0.6");
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].ip.to_string(), "10.0.0.5");
        let regions: Vec<_> = conflicts[0]
            .claims
            .iter()
            .map(|c| c.region.as_str())
            .collect();
        assert_eq!(regions, ["eu-west-2", "us-west-2"]);
    }

    #[test]
    fn local_node_is_excluded_by_name_or_ip() {
        let a = vec![
            peer("10.0.0.5", "eu-west-2", "s"),
            peer("10.0.0.6", "eu-west-2", "s"),
        ];
        let by_name = LocalNode {
            node: Some("app@10.0.0.5".into()),
            ip: None,
        };
        let (peers, _, me) = merge([a.as_slice()], &by_name);
        assert_eq!(peers.len(), 1);
        assert_eq!(me.unwrap().node, "app@10.0.0.5");
        let by_ip = LocalNode {
            node: None,
            ip: Some("10.0.0.6".parse().unwrap()),
        };
        let (peers, _, me) = merge([a.as_slice()], &by_ip);
        assert_eq!(peers[0].node, "app@10.0.0.5");
        assert_eq!(me.unwrap().node, "app@10.0.0.6");
    }

    #[test]
    fn diff_reports_added_removed_and_draining() {
        let mut before = Snapshot::empty();
        before.peers = vec![peer("10.0.0.1", "r", "s"), peer("10.0.0.2", "r", "s")];
        let mut after = Snapshot::empty();
        let mut drained = peer("10.0.0.2", "r", "s");
        drained.draining = true;
        after.peers = vec![drained, peer("10.0.0.3", "r", "s")];
        let c = after.diff(&before);
        assert_eq!(
            c.added.iter().map(|p| p.node.as_str()).collect::<Vec<_>>(),
            ["app@10.0.0.3"]
        );
        assert_eq!(
            c.removed
                .iter()
                .map(|p| p.node.as_str())
                .collect::<Vec<_>>(),
            ["app@10.0.0.1"]
        );
        assert_eq!(
            c.draining
                .iter()
                .map(|p| p.node.as_str())
                .collect::<Vec<_>>(),
            ["app@10.0.0.2"]
        );
        assert!(before.diff(&before).is_empty());
    }

    #[test]
    fn rfc3339_formats_utc_seconds() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_500);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20Z");
    }
}
