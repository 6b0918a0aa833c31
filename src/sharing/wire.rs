//! The wire format of a shared result: its own versioned types, converted from and to the
//! internal ones ([`Found`], [`Skipped`], [`SourceError`]) by exhaustive destructuring, so
//! reordering, renaming or adding a field of an internal struct never changes what travels
//! between nodes, and a field added to one fails to compile here until it is decided.
//!
//! The bytes are postcard (serde's compact binary form, no self-description): every struct
//! below is written field by field in declaration order, every enum as its variant's index
//! (a varint) and then its fields. So the order of the fields and variants below *is* the
//! format: a change to it is a change of [`WIRE_VERSION`], which is part of the sharing key
//! (nodes of two versions never exchange results: each polls on its own). The test
//! `the_wire_bytes_are_pinned` fails on any change until the version is bumped.
//!
//! A result is `WireResult { key, source, seq, started_ms, answer }`, where `answer` is one of
//! a complete answer (peers before naming, and the skipped tasks), a failure, "the same answer
//! as my full result number `base`", or "waiting" (the poller keeps the source but did not
//! poll it this round). Decoding never panics and refuses anything over [`MAX_RESULT_BYTES`].

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::de::{SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{ErrorKind, SourceError};
use crate::peer::{Found, SkipReason, Skipped, StartedAt};

/// The version of the wire format (and of the sharing key's canonical form, `key.rs`); part of
/// the key, so nodes that encode differently never exchange results. v3: the format is
/// defined by the types of this file rather than by the internal structs' derives. v4: the
/// skip reasons of ECS Anywhere tasks and of Cloud Map instances (appended to
/// [`WireSkipReason`]), and a Cloud Map source's `port` and `owner_account` in the key. v5: the
/// skip reasons of naming, `NoPrivateDnsName` and `SeveralEpmdNames`, and of a filter that
/// matches no running task, `TagMismatch`, `RevisionMismatch`, `NoSuchContainer` (appended).
pub(crate) const WIRE_VERSION: &str = "ecs-peers/shared/v5";

/// The largest encoded result accepted (bytes): 64 MiB, about 30 times the encoding of 10,000
/// peers with every field set. Anything larger is dropped before decoding.
pub(crate) const MAX_RESULT_BYTES: usize = 64 << 20;

/// One shared result on the wire.
#[derive(Debug, Serialize, Deserialize)]
struct WireResult<'a> {
    /// The sender's sharing key (`key.rs`).
    key: u64,
    /// The source's resolved id, e.g. `ecs:eu-west-2/web/api`.
    source: Cow<'a, str>,
    /// The sender's sequence number for this source (from 1).
    seq: u64,
    /// When the poll started, unix milliseconds (the sender's clock).
    started_ms: u64,
    answer: WireAnswer<'a>,
}

/// What a shared result says about its source. Variant order is part of the format.
#[derive(Debug, Serialize, Deserialize)]
enum WireAnswer<'a> {
    /// A complete answer: every peer before naming, and the RUNNING tasks it skipped.
    Peers {
        peers: WirePeers<'a>,
        skipped: Vec<WireSkipped<'a>>,
    },
    /// The poll failed.
    Failed(WireError<'a>),
    /// The same answer as the sender's full result with sequence number `base`.
    Same { base: u64 },
    /// The sender is alive and still this source's poller, but did not poll it this round.
    Waiting(WireWaiting),
}

/// The peers of a complete answer: on the wire a sequence of [`WirePeer`], each converted from
/// or to a [`Found`] as it is written or read, so no list of wire peers is built in between:
/// that would be one more allocation and copy of every peer, on the poller and on every
/// follower, each interval.
#[derive(Debug)]
enum WirePeers<'a> {
    /// To encode: the poller's answer, borrowed.
    Out(&'a [Found]),
    /// Decoded.
    In(Vec<Found>),
}

impl Serialize for WirePeers<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let found: &[Found] = match self {
            WirePeers::Out(found) => found,
            WirePeers::In(found) => found,
        };
        s.collect_seq(found.iter().map(WirePeer::from_found))
    }
}

impl<'de> Deserialize<'de> for WirePeers<'_> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Peers;
        impl<'de> Visitor<'de> for Peers {
            type Value = Vec<Found>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a sequence of peers")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Found>, A::Error> {
                // The length comes from another node: the capacity is bounded, and the list
                // grows only as peers actually decode.
                let mut found = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(peer) = seq.next_element::<WirePeer<'static>>()? {
                    found.push(peer.into_found().map_err(serde::de::Error::custom)?);
                }
                Ok(found)
            }
        }
        d.deserialize_seq(Peers).map(WirePeers::In)
    }
}

/// A peer as a source reported it, before naming. No node name: names are the receiver's to
/// make (its naming, or its own EPMD look-ups), never the sender's.
#[derive(Debug, Serialize, Deserialize)]
struct WirePeer<'a> {
    ip: WireIp,
    port: Option<u16>,
    task_arn: Option<Cow<'a, str>>,
    instance_id: Option<Cow<'a, str>>,
    availability_zone: Option<Cow<'a, str>>,
    started_at: Option<WireTime>,
    health: Option<Cow<'a, str>>,
    private_dns_name: Option<Cow<'a, str>>,
    ec2_instance_id: Option<Cow<'a, str>>,
    container_instance: Option<Cow<'a, str>>,
    draining: bool,
}

/// An IP address: 4 or 16 bytes, network order.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
enum WireIp {
    V4([u8; 4]),
    V6([u8; 16]),
}

/// A task's `startedAt`: seconds since the Unix epoch and nanoseconds (what [`StartedAt`]
/// keeps; out of its range, the result does not decode).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct WireTime {
    secs: i64,
    nanos: u32,
}

/// RUNNING tasks (or Cloud Map instances) of the source skipped for one reason.
#[derive(Debug, Serialize, Deserialize)]
struct WireSkipped<'a> {
    reason: WireSkipReason,
    tasks: u64,
    example_task: Cow<'a, str>,
    message: Cow<'a, str>,
    fix: Cow<'a, str>,
}

/// [`SkipReason`] on the wire. Variant order is part of the format.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
enum WireSkipReason {
    NoAddress,
    NoDistributionBinding,
    InstanceNotFound,
    InstanceWithoutAddress,
    ExternalInstance,
    NoAddressAttribute,
    DnsNameOnly,
    AddressNotAnIp,
    PortNotUsable,
    SameAddress,
    NoPrivateDnsName,
    SeveralEpmdNames,
    TagMismatch,
    RevisionMismatch,
    NoSuchContainer,
}

/// A failure as it travels: [`SourceError`] without its cause (an SDK or I/O error, local to
/// the sender), the action as text.
#[derive(Debug, Serialize, Deserialize)]
struct WireError<'a> {
    kind: WireErrorKind,
    action: Cow<'a, str>,
    message: Cow<'a, str>,
    fix: Option<Cow<'a, str>>,
}

/// [`ErrorKind`] on the wire. Variant order is part of the format.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
enum WireErrorKind {
    Throttled,
    AccessDenied,
    Credentials,
    NotFound,
    InvalidRequest,
    Client,
    Timeout,
    Unreachable,
    Service,
    Malformed,
}

/// [`Waiting`] on the wire. Variant order is part of the format.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
enum WireWaiting {
    BackingOff,
    InFlight,
}

/// Why the elected poller did not poll a source this round (see [`SharedAnswer::Waiting`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waiting {
    /// It is backing off after a failure that backs off (throttling, 5xx), as every node
    /// polling alone would.
    BackingOff,
    /// Its previous poll of the source is still running (bounded by `poll_timeout`).
    InFlight,
}

/// A shared result, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SharedResult {
    /// The sender's sharing key.
    pub key: u64,
    /// The source's resolved id.
    pub source: String,
    /// The sender's sequence number for this source (from 1).
    pub seq: u64,
    /// When the poll started, unix milliseconds (the sender's clock).
    pub started_ms: u64,
    /// What it found.
    pub answer: SharedAnswer,
}

/// What a shared result found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SharedAnswer {
    /// A complete answer (peers before naming: `node` is always `None`) and the skipped tasks.
    Peers(Vec<Found>, Vec<Skipped>),
    /// The poll failed.
    Failed(SourceError),
    /// The same answer as the sender's full result number `base`.
    Same {
        /// The sequence number of that full result.
        base: u64,
    },
    /// No answer this round: the poller is alive and keeps the source, but is backing off or
    /// still polling. Its followers hear from it every round, so "silent" (two intervals
    /// without a word) means the poller is gone, never that it is waiting as a lone poller
    /// would: followers that polled on their own then would multiply the calls exactly when
    /// AWS throttles.
    Waiting(Waiting),
}

/// What to encode: borrowed from the poller's slot, so encoding copies no string.
pub(crate) enum Outgoing<'a> {
    Peers(&'a [Found], &'a [Skipped]),
    Failed(&'a SourceError),
    Same { base: u64 },
    Waiting(Waiting),
}

impl<'a> WirePeer<'a> {
    fn from_found(found: &'a Found) -> WirePeer<'a> {
        let Found {
            ip,
            port,
            // Names are the receiver's to make: a sender's name is never sent.
            node: _,
            task_arn,
            instance_id,
            availability_zone,
            started_at,
            health,
            private_dns_name,
            ec2_instance_id,
            container_instance,
            draining,
        } = found;
        let text = |s: &'a Option<String>| s.as_deref().map(Cow::Borrowed);
        WirePeer {
            ip: match *ip {
                IpAddr::V4(v4) => WireIp::V4(v4.octets()),
                IpAddr::V6(v6) => WireIp::V6(v6.octets()),
            },
            port: *port,
            task_arn: text(task_arn),
            instance_id: text(instance_id),
            availability_zone: text(availability_zone),
            started_at: started_at.map(|t| WireTime {
                secs: t.secs(),
                nanos: t.subsec_nanos(),
            }),
            health: text(health),
            private_dns_name: text(private_dns_name),
            ec2_instance_id: text(ec2_instance_id),
            container_instance: text(container_instance),
            draining: *draining,
        }
    }

    fn into_found(self) -> Result<Found, DecodeError> {
        let WirePeer {
            ip,
            port,
            task_arn,
            instance_id,
            availability_zone,
            started_at,
            health,
            private_dns_name,
            ec2_instance_id,
            container_instance,
            draining,
        } = self;
        let text = |s: Option<Cow<'_, str>>| s.map(Cow::into_owned);
        let started_at = match started_at {
            None => None,
            Some(WireTime { secs, nanos }) => {
                Some(StartedAt::try_from((secs, nanos)).map_err(|why| {
                    DecodeError::Malformed(format!("startedAt {secs}.{nanos:09}: {why}"))
                })?)
            }
        };
        Ok(Found {
            ip: match ip {
                WireIp::V4(b) => IpAddr::V4(Ipv4Addr::from(b)),
                WireIp::V6(b) => IpAddr::V6(Ipv6Addr::from(b)),
            },
            port,
            node: None,
            task_arn: text(task_arn),
            instance_id: text(instance_id),
            availability_zone: text(availability_zone),
            started_at,
            health: text(health),
            private_dns_name: text(private_dns_name),
            ec2_instance_id: text(ec2_instance_id),
            container_instance: text(container_instance),
            draining,
        })
    }
}

impl<'a> WireSkipped<'a> {
    fn from_skipped(skipped: &'a Skipped) -> WireSkipped<'a> {
        let Skipped {
            reason,
            tasks,
            example_task,
            message,
            fix,
        } = skipped;
        WireSkipped {
            reason: match reason {
                SkipReason::NoAddress => WireSkipReason::NoAddress,
                SkipReason::NoDistributionBinding => WireSkipReason::NoDistributionBinding,
                SkipReason::InstanceNotFound => WireSkipReason::InstanceNotFound,
                SkipReason::InstanceWithoutAddress => WireSkipReason::InstanceWithoutAddress,
                SkipReason::ExternalInstance => WireSkipReason::ExternalInstance,
                SkipReason::NoAddressAttribute => WireSkipReason::NoAddressAttribute,
                SkipReason::DnsNameOnly => WireSkipReason::DnsNameOnly,
                SkipReason::AddressNotAnIp => WireSkipReason::AddressNotAnIp,
                SkipReason::PortNotUsable => WireSkipReason::PortNotUsable,
                SkipReason::SameAddress => WireSkipReason::SameAddress,
                SkipReason::NoPrivateDnsName => WireSkipReason::NoPrivateDnsName,
                SkipReason::SeveralEpmdNames => WireSkipReason::SeveralEpmdNames,
                SkipReason::TagMismatch => WireSkipReason::TagMismatch,
                SkipReason::RevisionMismatch => WireSkipReason::RevisionMismatch,
                SkipReason::NoSuchContainer => WireSkipReason::NoSuchContainer,
            },
            tasks: *tasks as u64,
            example_task: Cow::Borrowed(example_task),
            message: Cow::Borrowed(message),
            fix: Cow::Borrowed(fix),
        }
    }

    fn into_skipped(self) -> Result<Skipped, DecodeError> {
        let WireSkipped {
            reason,
            tasks,
            example_task,
            message,
            fix,
        } = self;
        Ok(Skipped {
            reason: match reason {
                WireSkipReason::NoAddress => SkipReason::NoAddress,
                WireSkipReason::NoDistributionBinding => SkipReason::NoDistributionBinding,
                WireSkipReason::InstanceNotFound => SkipReason::InstanceNotFound,
                WireSkipReason::InstanceWithoutAddress => SkipReason::InstanceWithoutAddress,
                WireSkipReason::ExternalInstance => SkipReason::ExternalInstance,
                WireSkipReason::NoAddressAttribute => SkipReason::NoAddressAttribute,
                WireSkipReason::DnsNameOnly => SkipReason::DnsNameOnly,
                WireSkipReason::AddressNotAnIp => SkipReason::AddressNotAnIp,
                WireSkipReason::PortNotUsable => SkipReason::PortNotUsable,
                WireSkipReason::SameAddress => SkipReason::SameAddress,
                WireSkipReason::NoPrivateDnsName => SkipReason::NoPrivateDnsName,
                WireSkipReason::SeveralEpmdNames => SkipReason::SeveralEpmdNames,
                WireSkipReason::TagMismatch => SkipReason::TagMismatch,
                WireSkipReason::RevisionMismatch => SkipReason::RevisionMismatch,
                WireSkipReason::NoSuchContainer => SkipReason::NoSuchContainer,
            },
            tasks: usize::try_from(tasks).map_err(|_| {
                DecodeError::Malformed(format!("{tasks} skipped tasks do not fit this machine"))
            })?,
            example_task: example_task.into_owned(),
            message: message.into_owned(),
            fix: fix.into_owned(),
        })
    }
}

/// The actions a [`SourceError`] names; a received action outside this list becomes `poll`
/// (no string from another node is leaked into a `&'static str`).
const ACTIONS: &[&str] = &[
    "ecs:ListTasks",
    "ecs:DescribeTasks",
    "ecs:DescribeContainerInstances",
    "ec2:DescribeInstances",
    "ecs:task-metadata",
    "servicediscovery:DiscoverInstances",
    "poll",
];

impl<'a> WireError<'a> {
    /// Its cause is not sent (private to [`SourceError`], and local to the sender): the
    /// public fields are read one by one.
    fn from_error(e: &'a SourceError) -> WireError<'a> {
        WireError {
            kind: match e.kind {
                ErrorKind::Throttled => WireErrorKind::Throttled,
                ErrorKind::AccessDenied => WireErrorKind::AccessDenied,
                ErrorKind::Credentials => WireErrorKind::Credentials,
                ErrorKind::NotFound => WireErrorKind::NotFound,
                ErrorKind::InvalidRequest => WireErrorKind::InvalidRequest,
                ErrorKind::Client => WireErrorKind::Client,
                ErrorKind::Timeout => WireErrorKind::Timeout,
                ErrorKind::Unreachable => WireErrorKind::Unreachable,
                ErrorKind::Service => WireErrorKind::Service,
                ErrorKind::Malformed => WireErrorKind::Malformed,
            },
            action: Cow::Borrowed(e.action),
            message: Cow::Borrowed(&e.message),
            fix: e.fix.as_deref().map(Cow::Borrowed),
        }
    }

    fn into_error(self) -> SourceError {
        let WireError {
            kind,
            action,
            message,
            fix,
        } = self;
        let kind = match kind {
            WireErrorKind::Throttled => ErrorKind::Throttled,
            WireErrorKind::AccessDenied => ErrorKind::AccessDenied,
            WireErrorKind::Credentials => ErrorKind::Credentials,
            WireErrorKind::NotFound => ErrorKind::NotFound,
            WireErrorKind::InvalidRequest => ErrorKind::InvalidRequest,
            WireErrorKind::Client => ErrorKind::Client,
            WireErrorKind::Timeout => ErrorKind::Timeout,
            WireErrorKind::Unreachable => ErrorKind::Unreachable,
            WireErrorKind::Service => ErrorKind::Service,
            WireErrorKind::Malformed => ErrorKind::Malformed,
        };
        let action = ACTIONS
            .iter()
            .find(|a| **a == action)
            .copied()
            .unwrap_or("poll");
        let e = SourceError::new(kind, action, message.into_owned());
        match fix {
            Some(fix) => e.with_fix(fix.into_owned()),
            None => e,
        }
    }
}

impl WireWaiting {
    fn from_waiting(w: Waiting) -> WireWaiting {
        match w {
            Waiting::BackingOff => WireWaiting::BackingOff,
            Waiting::InFlight => WireWaiting::InFlight,
        }
    }

    fn into_waiting(self) -> Waiting {
        match self {
            WireWaiting::BackingOff => Waiting::BackingOff,
            WireWaiting::InFlight => Waiting::InFlight,
        }
    }
}

/// Encodes a result (postcard). `None` only if serialization fails, which it cannot for these
/// types (logged if it ever does).
pub(crate) fn encode(
    key: u64,
    source: &str,
    seq: u64,
    started_ms: u64,
    answer: Outgoing<'_>,
) -> Option<Vec<u8>> {
    let answer = match answer {
        Outgoing::Peers(found, skipped) => WireAnswer::Peers {
            peers: WirePeers::Out(found),
            skipped: skipped.iter().map(WireSkipped::from_skipped).collect(),
        },
        Outgoing::Failed(e) => WireAnswer::Failed(WireError::from_error(e)),
        Outgoing::Same { base } => WireAnswer::Same { base },
        Outgoing::Waiting(w) => WireAnswer::Waiting(WireWaiting::from_waiting(w)),
    };
    let wire = WireResult {
        key,
        source: Cow::Borrowed(source),
        seq,
        started_ms,
        answer,
    };
    postcard::to_allocvec(&wire)
        .inspect_err(|e| tracing::warn!(source, "cannot encode a shared result: {e}"))
        .ok()
}

/// Why a received result could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// Larger than [`MAX_RESULT_BYTES`].
    TooLarge(usize),
    /// Not a result of this wire version (postcard's own words, or the value out of range).
    Malformed(String),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::TooLarge(n) => write!(
                f,
                "{n} bytes is more than the {MAX_RESULT_BYTES} a shared result may have"
            ),
            DecodeError::Malformed(why) => {
                write!(f, "not a shared result of {WIRE_VERSION} ({why})")
            }
        }
    }
}

/// Decodes a result from another node. Never panics: any input is a result or an error
/// (postcard checks every length against the bytes left, and the whole is bounded by
/// [`MAX_RESULT_BYTES`]); trailing bytes are an error.
pub(crate) fn decode(bytes: &[u8]) -> Result<SharedResult, DecodeError> {
    if bytes.len() > MAX_RESULT_BYTES {
        return Err(DecodeError::TooLarge(bytes.len()));
    }
    let (wire, rest): (WireResult<'_>, &[u8]) =
        postcard::take_from_bytes(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::Malformed(format!(
            "{} bytes after the result",
            rest.len()
        )));
    }
    let WireResult {
        key,
        source,
        seq,
        started_ms,
        answer,
    } = wire;
    Ok(SharedResult {
        key,
        source: source.into_owned(),
        seq,
        started_ms,
        answer: match answer {
            WireAnswer::Peers { peers, skipped } => SharedAnswer::Peers(
                match peers {
                    WirePeers::In(found) => found,
                    WirePeers::Out(found) => found.to_vec(),
                },
                skipped
                    .into_iter()
                    .map(WireSkipped::into_skipped)
                    .collect::<Result<_, _>>()?,
            ),
            WireAnswer::Failed(e) => SharedAnswer::Failed(e.into_error()),
            WireAnswer::Same { base } => SharedAnswer::Same { base },
            WireAnswer::Waiting(w) => SharedAnswer::Waiting(w.into_waiting()),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn found(ip: &str) -> Found {
        Found {
            task_arn: Some(format!("arn:aws:ecs:eu-west-2:1:task/web/{ip}")),
            private_dns_name: Some("ip-x.eu-west-2.compute.internal".into()),
            port: Some(4370),
            draining: true,
            ..Found::at(ip.parse().unwrap())
        }
    }

    /// A peer with every field set (but `node`, which never travels).
    fn full_peer() -> Found {
        Found {
            ip: "10.1.0.5".parse().unwrap(),
            port: Some(49153),
            node: None,
            task_arn: Some("arn:aws:ecs:eu-west-2:1:task/web/t1".into()),
            instance_id: Some("i1".into()),
            availability_zone: Some("eu-west-2a".into()),
            started_at: StartedAt::try_from((1_700_000_000, 5)).ok(),
            health: Some("HEALTHY".into()),
            private_dns_name: Some("ip-10-1-0-5".into()),
            ec2_instance_id: Some("i-0a".into()),
            container_instance: Some("arn:ci/1".into()),
            draining: true,
        }
    }

    fn skipped() -> Skipped {
        Skipped {
            reason: SkipReason::NoDistributionBinding,
            tasks: 2,
            example_task: "arn:t".into(),
            message: "m".into(),
            fix: "f".into(),
        }
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    const CHANGED: &str = "the sharing wire format changed: bump WIRE_VERSION and update this pin";

    /// The bytes of one result with every field set, and of every variant of every enum, pinned.
    /// Any change to the format (a field or variant added, removed or reordered, another
    /// encoding) fails here until [`WIRE_VERSION`] is bumped and the pins updated.
    #[test]
    fn the_wire_bytes_are_pinned() {
        assert_eq!(WIRE_VERSION, "ecs-peers/shared/v5", "{CHANGED}");
        let v6 = Found::at("fd00::1".parse().unwrap());
        let bytes = encode(
            0x0102_0304_0506_0708,
            "ecs:eu-west-2/web",
            3,
            1_700_000_000_000,
            Outgoing::Peers(&[full_peer(), v6], &[skipped()]),
        )
        .unwrap();
        assert_eq!(hex(&bytes), PINNED_PEERS, "{CHANGED}");
        let mut failures = Vec::new();
        for kind in [
            ErrorKind::Throttled,
            ErrorKind::AccessDenied,
            ErrorKind::Credentials,
            ErrorKind::NotFound,
            ErrorKind::InvalidRequest,
            ErrorKind::Client,
            ErrorKind::Timeout,
            ErrorKind::Unreachable,
            ErrorKind::Service,
            ErrorKind::Malformed,
        ] {
            let e = SourceError::new(kind, "ecs:ListTasks", "m").with_fix("f");
            failures.push(hex(&encode(1, "s", 2, 3, Outgoing::Failed(&e)).unwrap()));
        }
        for reason in [
            SkipReason::NoAddress,
            SkipReason::NoDistributionBinding,
            SkipReason::InstanceNotFound,
            SkipReason::InstanceWithoutAddress,
            SkipReason::ExternalInstance,
            SkipReason::NoAddressAttribute,
            SkipReason::DnsNameOnly,
            SkipReason::AddressNotAnIp,
            SkipReason::PortNotUsable,
            SkipReason::SameAddress,
            SkipReason::NoPrivateDnsName,
            SkipReason::SeveralEpmdNames,
            SkipReason::TagMismatch,
            SkipReason::RevisionMismatch,
            SkipReason::NoSuchContainer,
        ] {
            let s = Skipped {
                reason,
                ..skipped()
            };
            failures.push(hex(
                &encode(1, "s", 2, 3, Outgoing::Peers(&[], &[s])).unwrap()
            ));
        }
        failures.push(hex(
            &encode(1, "s", 2, 3, Outgoing::Same { base: 1 }).unwrap()
        ));
        for w in [Waiting::BackingOff, Waiting::InFlight] {
            failures.push(hex(&encode(1, "s", 2, 3, Outgoing::Waiting(w)).unwrap()));
        }
        assert_eq!(failures, PINNED_VARIANTS, "{CHANGED}");
    }

    /// `the_wire_bytes_are_pinned`'s result with every field set, encoded once.
    const PINNED_PEERS: &str = "888e98a8c0e0808101116563733a65752d776573742d322f7765620380d095ffbc310002000a01000501818003012361726e3a6177733a6563733a65752d776573742d323a313a7461736b2f7765622f743101026931010a65752d776573742d32610180c49fd50c0501074845414c544859010b69702d31302d312d302d350104692d3061010861726e3a63692f310101fd000000000000000000000000000001000000000000000000000101020561726e3a74016d0166";

    /// `the_wire_bytes_are_pinned`'s one result per variant, encoded once.
    const PINNED_VARIANTS: &[&str] = &[
        // Failed: throttled
        "010173020301000d6563733a4c6973745461736b73016d010166",
        // access_denied
        "010173020301010d6563733a4c6973745461736b73016d010166",
        // credentials
        "010173020301020d6563733a4c6973745461736b73016d010166",
        // not_found
        "010173020301030d6563733a4c6973745461736b73016d010166",
        // invalid_request
        "010173020301040d6563733a4c6973745461736b73016d010166",
        // client
        "010173020301050d6563733a4c6973745461736b73016d010166",
        // timeout
        "010173020301060d6563733a4c6973745461736b73016d010166",
        // unreachable
        "010173020301070d6563733a4c6973745461736b73016d010166",
        // service
        "010173020301080d6563733a4c6973745461736b73016d010166",
        // malformed
        "010173020301090d6563733a4c6973745461736b73016d010166",
        // Peers, skipped: no_address
        "010173020300000100020561726e3a74016d0166",
        // no_distribution_binding
        "010173020300000101020561726e3a74016d0166",
        // instance_not_found
        "010173020300000102020561726e3a74016d0166",
        // instance_without_address
        "010173020300000103020561726e3a74016d0166",
        // external_instance
        "010173020300000104020561726e3a74016d0166",
        // no_address_attribute
        "010173020300000105020561726e3a74016d0166",
        // dns_name_only
        "010173020300000106020561726e3a74016d0166",
        // address_not_an_ip
        "010173020300000107020561726e3a74016d0166",
        // port_not_usable
        "010173020300000108020561726e3a74016d0166",
        // same_address
        "010173020300000109020561726e3a74016d0166",
        // no_private_dns_name
        "01017302030000010a020561726e3a74016d0166",
        // several_epmd_names
        "01017302030000010b020561726e3a74016d0166",
        // tag_mismatch
        "01017302030000010c020561726e3a74016d0166",
        // revision_mismatch
        "01017302030000010d020561726e3a74016d0166",
        // no_such_container
        "01017302030000010e020561726e3a74016d0166",
        // Same
        "01017302030201",
        // Waiting: backing off
        "01017302030300",
        // in flight
        "01017302030301",
    ];

    #[test]
    fn results_round_trip() {
        let peers = vec![full_peer(), found("10.0.0.1"), found("fd00::1")];
        let skipped = vec![skipped()];
        let bytes = encode(
            7,
            "ecs:eu-west-2/web",
            3,
            99,
            Outgoing::Peers(&peers, &skipped),
        )
        .unwrap();
        assert_eq!(
            decode(&bytes).unwrap(),
            SharedResult {
                key: 7,
                source: "ecs:eu-west-2/web".into(),
                seq: 3,
                started_ms: 99,
                answer: SharedAnswer::Peers(peers, skipped),
            }
        );
        let e = SourceError::new(ErrorKind::Throttled, "ecs:ListTasks", "Rate exceeded")
            .with_fix("slow down");
        let bytes = encode(7, "s", 4, 100, Outgoing::Failed(&e)).unwrap();
        assert_eq!(decode(&bytes).unwrap().answer, SharedAnswer::Failed(e));
        let bytes = encode(7, "s", 6, 102, Outgoing::Waiting(Waiting::InFlight)).unwrap();
        assert_eq!(
            decode(&bytes).unwrap().answer,
            SharedAnswer::Waiting(Waiting::InFlight)
        );
        let bytes = encode(7, "s", 5, 101, Outgoing::Same { base: 3 }).unwrap();
        assert_eq!(
            decode(&bytes).unwrap().answer,
            SharedAnswer::Same { base: 3 }
        );
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_err(), "trailing bytes");
        assert!(decode(&bytes[..bytes.len() - 1]).is_err(), "truncated");
        assert_eq!(
            decode(&vec![0; MAX_RESULT_BYTES + 1]),
            Err(DecodeError::TooLarge(MAX_RESULT_BYTES + 1))
        );
    }

    #[test]
    fn a_senders_node_name_never_travels() {
        let named = Found {
            node: Some("evil@203.0.113.9".into()),
            ..found("10.1.0.4")
        };
        let bytes = encode(1, "s", 1, 1, Outgoing::Peers(&[named], &[])).unwrap();
        let SharedAnswer::Peers(found, _) = decode(&bytes).unwrap().answer else {
            panic!("a complete answer");
        };
        assert_eq!(found[0].node, None);
        assert!(!String::from_utf8_lossy(&bytes).contains("evil"));
    }

    #[test]
    fn an_unknown_action_is_not_made_static() {
        let wire = WireError {
            kind: WireErrorKind::Service,
            action: "made:Up".into(),
            message: "m".into(),
            fix: None,
        };
        assert_eq!(wire.into_error().action, "poll");
    }

    #[test]
    fn a_started_at_out_of_range_does_not_decode() {
        // WireResult's layout, with the peers written as a plain list (the same bytes).
        #[derive(Serialize)]
        enum Answer<'a> {
            Peers {
                peers: Vec<WirePeer<'a>>,
                skipped: Vec<WireSkipped<'a>>,
            },
        }
        let peer = found("10.0.0.1");
        let good = WirePeer::from_found(&peer);
        let bad = WirePeer {
            started_at: Some(WireTime {
                secs: i64::MAX,
                nanos: 0,
            }),
            ..WirePeer::from_found(&peer)
        };
        let bytes = |p: WirePeer<'_>| {
            let answer = Answer::Peers {
                peers: vec![p],
                skipped: Vec::new(),
            };
            postcard::to_allocvec(&(1u64, "s", 1u64, 1u64, answer)).unwrap()
        };
        assert!(decode(&bytes(good)).is_ok(), "the same layout decodes");
        assert!(
            matches!(decode(&bytes(bad)), Err(DecodeError::Malformed(_))),
            "a startedAt no RFC 3339 date can write is refused"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn mutated_results_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
            let peers = vec![full_peer(), found("10.0.0.2")];
            let mut bytes = encode(1, "ecs:eu-west-2/web", 1, 1, Outgoing::Peers(&peers, &[skipped()])).unwrap();
            for (at, b) in flips {
                let i = at % bytes.len();
                bytes[i] = b;
            }
            let _ = decode(&bytes);
        }
    }
}
