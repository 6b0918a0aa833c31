//! Cloud Map: DiscoverInstances (by health, optionally by custom attributes) → one peer per
//! instance, from its `AWS_INSTANCE_IPV4` (or `AWS_INSTANCE_IPV6`) attribute and, with
//! `port = "registered"`, its `AWS_INSTANCE_PORT`.
//!
//! The API, not DNS: a MULTIVALUE DNS answer holds at most 8 records, a different subset per
//! resolver, so DNS-based clustering churns once a service has more than 8 tasks.
//!
//! Every instance returned is either a peer or reported skipped, with the reason and the fix
//! ([`SkipReason`]): instances registered with custom attributes only, CNAME and alias
//! instances, addresses and ports that are not ones, and instances at the same address as
//! another.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use aws_sdk_servicediscovery::operation::discover_instances::DiscoverInstancesError;
use aws_sdk_servicediscovery::types::{HealthStatusFilter, HttpInstanceSummary};

use crate::aws::CountCalls;
use crate::config::{CloudMapSourceConfig, DialPort, HealthFilter};
use crate::error::{classify, SourceError};
use crate::peer::{count_skips, parse_ip, task_address, Found, SkipReason};
use crate::source::{PollFuture, Polled, Source};

/// DiscoverInstances returns at most this many instances (it has no paging).
pub(crate) const MAX_INSTANCES: i32 = 1000;

/// The attributes Cloud Map gives an instance's address, port and DNS name
/// (https://docs.aws.amazon.com/cloud-map/latest/api/API_RegisterInstance.html).
const IPV4: &str = "AWS_INSTANCE_IPV4";
const IPV6: &str = "AWS_INSTANCE_IPV6";
const PORT: &str = "AWS_INSTANCE_PORT";
const CNAME: &str = "AWS_INSTANCE_CNAME";
const ALIAS: &str = "AWS_ALIAS_DNS_NAME";

/// Decodes one instance into what the source found, or why it cannot be a peer. The address
/// is chosen by the one address rule (IPv4, else IPv6); the port is `AWS_INSTANCE_PORT` with
/// [`DialPort::Registered`] (`None` when the instance registers none: dialled on the
/// distribution port), never with [`DialPort::DistributionPort`].
pub(crate) fn decode_instance(
    i: &HttpInstanceSummary,
    dial: DialPort,
) -> Result<Found, SkipReason> {
    let empty = HashMap::new();
    let attrs = i.attributes().unwrap_or(&empty);
    let (v4, v6) = (attrs.get(IPV4), attrs.get(IPV6));
    if v4.is_none() && v6.is_none() {
        return Err(if attrs.contains_key(CNAME) || attrs.contains_key(ALIAS) {
            SkipReason::DnsNameOnly
        } else {
            SkipReason::NoAddressAttribute
        });
    }
    let ip: Option<IpAddr> =
        task_address([v4, v6].into_iter().flatten().filter_map(|v| parse_ip(v)));
    let ip = ip.ok_or(SkipReason::AddressNotAnIp)?;
    let port = match (dial, attrs.get(PORT)) {
        (DialPort::DistributionPort, _) | (DialPort::Registered, None) => None,
        (DialPort::Registered, Some(text)) => Some(
            text.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or(SkipReason::PortNotUsable)?,
        ),
    };
    Ok(Found {
        port,
        instance_id: i.instance_id().map(str::to_string),
        availability_zone: attrs.get("AVAILABILITY_ZONE").cloned(),
        health: i.health_status().map(|h| h.as_str().to_string()),
        ..Found::at(ip)
    })
}

/// Decodes every instance DiscoverInstances returned: the peers, ordered by instance id, and
/// the instances skipped by reason (one peer per address: of instances at the same address the
/// first by instance id is the peer, so every node keeps the same one).
pub(crate) fn decode_instances(
    instances: &[HttpInstanceSummary],
    dial: DialPort,
    dist_port: u16,
) -> Polled {
    let mut decoded: Vec<(&str, Result<Found, SkipReason>)> = instances
        .iter()
        .map(|i| (i.instance_id().unwrap_or("?"), decode_instance(i, dial)))
        .collect();
    decoded.sort_by(|a, b| a.0.cmp(b.0));
    let mut seen = HashSet::new();
    let mut found = Vec::with_capacity(decoded.len());
    let mut skips = Vec::new();
    for (id, d) in decoded {
        match d {
            Ok(f) if seen.insert(f.address()) => found.push(f),
            Ok(_) => skips.push((SkipReason::SameAddress, id)),
            Err(why) => skips.push((why, id)),
        }
    }
    Polled {
        found,
        skipped: count_skips(skips, dist_port),
        absent: None,
    }
}

/// The Cloud Map backend of one source.
pub(crate) struct CloudMapSource {
    client: aws_sdk_servicediscovery::Client,
    cfg: CloudMapSourceConfig,
    /// The distribution port (`distribution_port`), named in the skip reasons' fixes.
    dist_port: u16,
    calls: CountCalls,
}

impl CloudMapSource {
    pub(crate) fn new(
        client: aws_sdk_servicediscovery::Client,
        cfg: CloudMapSourceConfig,
        dist_port: u16,
        calls: CountCalls,
    ) -> Self {
        CloudMapSource {
            client,
            cfg,
            dist_port,
            calls,
        }
    }

    /// The fix for a NotFound answer: for ServiceNotFound (the namespace was found), the
    /// service's name; otherwise (NamespaceNotFound) also the sharing. A namespace shared from
    /// another account (AWS RAM) is found only with its owner's account id (DiscoverInstances
    /// `OwnerAccount`: "For instances associated with namespaces that are shared with your
    /// account, you must specify an OwnerAccount",
    /// https://docs.aws.amazon.com/cloud-map/latest/api/API_DiscoverInstances.html).
    fn not_found(&self, service_not_found: bool) -> String {
        let c = &self.cfg;
        let base = format!(
            "check that namespace {:?} with service {:?} exists in {} (names are case-sensitive)",
            c.namespace, c.service, c.region
        );
        if service_not_found {
            return format!(
                "the namespace was found, but not its service: check that service {:?} exists in namespace {:?} (names are case-sensitive)",
                c.service, c.namespace
            );
        }
        match &c.owner_account {
            None => format!("{base}; a namespace shared with this account from another one (AWS RAM) is found only with owner_account set to the account that owns it (its ResourceOwner)"),
            Some(owner) => format!("{base} in account {owner} (owner_account), and that {owner} shares it with this account through AWS RAM (aws ram get-resource-shares --resource-owner OTHER-ACCOUNTS)"),
        }
    }

    async fn poll_inner(&mut self) -> Result<Polled, SourceError> {
        let health = match self.cfg.health {
            HealthFilter::Healthy => HealthStatusFilter::Healthy,
            HealthFilter::All => HealthStatusFilter::All,
            HealthFilter::HealthyOrElseAll => HealthStatusFilter::HealthyOrElseAll,
        };
        let query: Option<HashMap<String, String>> = (!self.cfg.query.is_empty()).then(|| {
            self.cfg
                .query
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        });
        let out = self
            .client
            .discover_instances()
            .namespace_name(&self.cfg.namespace)
            .service_name(&self.cfg.service)
            .health_status(health)
            .set_query_parameters(query)
            .set_owner_account(self.cfg.owner_account.clone())
            .max_results(MAX_INSTANCES)
            .customize()
            .interceptor(self.calls.clone())
            .send()
            .await
            .map_err(|e| {
                let service_not_found = matches!(
                    e.as_service_error(),
                    Some(DiscoverInstancesError::ServiceNotFound(_))
                );
                classify(
                    e,
                    "servicediscovery:DiscoverInstances",
                    &format!(
                        "Resource \"*\" and Condition StringEquals servicediscovery:NamespaceName \"{}\"",
                        self.cfg.namespace
                    ),
                    &self.not_found(service_not_found),
                )
            })?;
        let instances = out.instances();
        if instances.len() >= MAX_INSTANCES as usize {
            tracing::warn!(
                namespace = %self.cfg.namespace,
                service = %self.cfg.service,
                "DiscoverInstances returned its maximum of {MAX_INSTANCES} instances; more may exist"
            );
        }
        Ok(decode_instances(instances, self.cfg.port, self.dist_port))
    }
}

impl Source for CloudMapSource {
    fn poll(&mut self) -> PollFuture<'_> {
        Box::pin(self.poll_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_servicediscovery::types::HealthStatus;

    fn inst(attrs: &[(&str, &str)]) -> HttpInstanceSummary {
        HttpInstanceSummary::builder()
            .instance_id("i-1")
            .health_status(HealthStatus::Healthy)
            .set_attributes(Some(
                attrs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ))
            .build()
    }

    fn with_id(id: &str, attrs: &[(&str, &str)]) -> HttpInstanceSummary {
        HttpInstanceSummary::builder()
            .instance_id(id)
            .set_attributes(Some(
                attrs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ))
            .build()
    }

    #[test]
    fn ipv4_preferred_then_ipv6() {
        let f = decode_instance(
            &inst(&[
                ("AWS_INSTANCE_IPV4", "10.2.0.7"),
                ("AWS_INSTANCE_IPV6", "2001:db8::7"),
                ("AVAILABILITY_ZONE", "us-west-2b"),
            ]),
            DialPort::Registered,
        )
        .unwrap();
        assert_eq!(f.ip.to_string(), "10.2.0.7");
        assert_eq!(f.port, None, "no AWS_INSTANCE_PORT: the distribution port");
        assert_eq!(f.availability_zone.as_deref(), Some("us-west-2b"));
        assert_eq!(f.health.as_deref(), Some("HEALTHY"));
        assert_eq!(f.instance_id.as_deref(), Some("i-1"));
        let f = decode_instance(
            &inst(&[("AWS_INSTANCE_IPV6", "2001:db8::7")]),
            DialPort::Registered,
        )
        .unwrap();
        assert_eq!(f.ip.to_string(), "2001:db8::7");
    }

    #[test]
    fn instances_without_an_address_are_explained() {
        let reason = |attrs: &[(&str, &str)]| {
            decode_instance(&inst(attrs), DialPort::Registered).unwrap_err()
        };
        assert_eq!(reason(&[("stage", "blue")]), SkipReason::NoAddressAttribute);
        assert_eq!(reason(&[]), SkipReason::NoAddressAttribute);
        assert_eq!(
            reason(&[("AWS_INSTANCE_CNAME", "x.example.com")]),
            SkipReason::DnsNameOnly
        );
        assert_eq!(
            reason(&[("AWS_ALIAS_DNS_NAME", "lb.elb.amazonaws.com")]),
            SkipReason::DnsNameOnly
        );
        assert_eq!(
            reason(&[("AWS_INSTANCE_IPV4", "ten")]),
            SkipReason::AddressNotAnIp
        );
        for port in ["0", "65536", "http", ""] {
            assert_eq!(
                reason(&[
                    ("AWS_INSTANCE_IPV4", "10.0.0.1"),
                    ("AWS_INSTANCE_PORT", port)
                ]),
                SkipReason::PortNotUsable,
                "{port:?}"
            );
        }
        // The registered port is not read at all when the port is not the registered one.
        let f = decode_instance(
            &inst(&[
                ("AWS_INSTANCE_IPV4", "10.0.0.1"),
                ("AWS_INSTANCE_PORT", "http"),
            ]),
            DialPort::DistributionPort,
        )
        .unwrap();
        assert_eq!(f.port, None);
    }

    #[test]
    fn two_srv_instances_on_one_host_are_two_peers_with_their_ports() {
        let host = [("AWS_INSTANCE_IPV4", "10.2.0.10")];
        let srv = |id: &str, port: &str| with_id(id, &[host[0], ("AWS_INSTANCE_PORT", port)]);
        let polled = decode_instances(
            &[srv("b2", "32769"), srv("a1", "32768")],
            DialPort::Registered,
            4370,
        );
        let got: Vec<_> = polled
            .found
            .iter()
            .map(|f| (f.instance_id.as_deref().unwrap(), f.address().to_string()))
            .collect();
        assert_eq!(
            got,
            [
                ("a1", "10.2.0.10:32768".to_string()),
                ("b2", "10.2.0.10:32769".to_string())
            ]
        );
        assert_eq!(polled.skipped, []);
    }

    #[test]
    fn every_instance_is_a_peer_or_skipped_with_its_reason() {
        let host = ("AWS_INSTANCE_IPV4", "10.2.0.10");
        let polled = decode_instances(
            &[
                with_id("c", &[host, ("AWS_INSTANCE_PORT", "32768")]),
                with_id("d", &[("ECS_TASK_DEFINITION_FAMILY", "api")]),
                with_id("e", &[("stage", "blue")]),
                with_id("f", &[("AWS_INSTANCE_CNAME", "api.example.com")]),
            ],
            DialPort::DistributionPort,
            4370,
        );
        assert_eq!(polled.found.len(), 1);
        let got: Vec<_> = polled
            .skipped
            .iter()
            .map(|s| (s.reason, s.tasks, s.example_task.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (SkipReason::NoAddressAttribute, 2, "d"),
                (SkipReason::DnsNameOnly, 1, "f"),
            ]
        );
        assert!(polled.skipped[0]
            .counted()
            .starts_with("2 Cloud Map instance(s) skipped"));
        // With the distribution port, two instances on one host are one address: the first by
        // instance id is the peer, the other is skipped (said, not dropped).
        let polled = decode_instances(
            &[
                with_id("y", &[host, ("AWS_INSTANCE_PORT", "32769")]),
                with_id("x", &[host, ("AWS_INSTANCE_PORT", "32768")]),
            ],
            DialPort::DistributionPort,
            4370,
        );
        assert_eq!(polled.found[0].instance_id.as_deref(), Some("x"));
        assert_eq!(polled.found.len(), 1);
        assert_eq!(polled.skipped[0].reason, SkipReason::SameAddress);
        assert_eq!(polled.skipped[0].example_task, "y");
    }
}
