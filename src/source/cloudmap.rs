//! Cloud Map: DiscoverInstances (by health, optionally by custom attributes) → one peer per
//! instance, from its `AWS_INSTANCE_IPV4` (or `AWS_INSTANCE_IPV6`) attribute.
//!
//! The API, not DNS: a MULTIVALUE DNS answer holds at most 8 records, a different subset per
//! resolver, so DNS-based clustering churns once a service has more than 8 tasks.

use std::collections::HashMap;
use std::net::IpAddr;

use aws_sdk_servicediscovery::types::{HealthStatusFilter, HttpInstanceSummary};

use crate::aws::CountCalls;
use crate::config::{CloudMapSourceConfig, HealthFilter};
use crate::error::{classify, SourceError};
use crate::peer::{parse_ip, task_address, Found};
use crate::source::{PollFuture, Source};

/// DiscoverInstances returns at most this many instances (it has no paging).
pub(crate) const MAX_INSTANCES: i32 = 1000;

/// Decodes one instance; `None` (with the reason) when it has no usable address.
pub(crate) fn decode_instance(i: &HttpInstanceSummary) -> Result<Found, String> {
    let empty = HashMap::new();
    let attrs = i.attributes().unwrap_or(&empty);
    // The same choice as for a task: IPv4 when the instance has one, else IPv6.
    let ip: Option<IpAddr> = task_address(
        ["AWS_INSTANCE_IPV4", "AWS_INSTANCE_IPV6"]
            .iter()
            .filter_map(|k| attrs.get(*k).and_then(|v| parse_ip(v))),
    );
    let Some(ip) = ip else {
        return Err(
            match (
                attrs.get("AWS_INSTANCE_IPV4"),
                attrs.get("AWS_INSTANCE_IPV6"),
            ) {
                (None, None) => "it has no AWS_INSTANCE_IPV4 or AWS_INSTANCE_IPV6 attribute".into(),
                (v4, v6) => format!("its address attributes are not IP addresses ({v4:?}, {v6:?})"),
            },
        );
    };
    Ok(Found {
        instance_id: i.instance_id().map(str::to_string),
        availability_zone: attrs.get("AVAILABILITY_ZONE").cloned(),
        health: i.health_status().map(|h| h.as_str().to_string()),
        ..Found::at(ip)
    })
}

/// The Cloud Map backend of one source.
pub(crate) struct CloudMapSource {
    client: aws_sdk_servicediscovery::Client,
    cfg: CloudMapSourceConfig,
    calls: CountCalls,
}

impl CloudMapSource {
    pub(crate) fn new(
        client: aws_sdk_servicediscovery::Client,
        cfg: CloudMapSourceConfig,
        calls: CountCalls,
    ) -> Self {
        CloudMapSource { client, cfg, calls }
    }

    async fn poll_inner(&mut self) -> Result<Vec<Found>, SourceError> {
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
        let not_found = format!(
            "check that namespace {:?} with service {:?} exists in {} (names are case-sensitive)",
            self.cfg.namespace, self.cfg.service, self.cfg.region
        );
        let out = self
            .client
            .discover_instances()
            .namespace_name(&self.cfg.namespace)
            .service_name(&self.cfg.service)
            .health_status(health)
            .set_query_parameters(query)
            .max_results(MAX_INSTANCES)
            .customize()
            .interceptor(self.calls.clone())
            .send()
            .await
            .map_err(|e| {
                classify(
                    e,
                    "servicediscovery:DiscoverInstances",
                    &format!(
                        "Resource \"*\" and Condition StringEquals servicediscovery:NamespaceName \"{}\"",
                        self.cfg.namespace
                    ),
                    &not_found,
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
        Ok(instances
            .iter()
            .filter_map(|i| match decode_instance(i) {
                Ok(f) => Some(f),
                Err(why) => {
                    tracing::debug!(
                        instance = i.instance_id().unwrap_or("?"),
                        "instance is not a peer: {why}"
                    );
                    None
                }
            })
            .collect())
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

    #[test]
    fn ipv4_preferred_then_ipv6() {
        let f = decode_instance(&inst(&[
            ("AWS_INSTANCE_IPV4", "10.2.0.7"),
            ("AWS_INSTANCE_IPV6", "2001:db8::7"),
            ("AVAILABILITY_ZONE", "us-west-2b"),
        ]))
        .unwrap();
        assert_eq!(f.ip.to_string(), "10.2.0.7");
        assert_eq!(f.availability_zone.as_deref(), Some("us-west-2b"));
        assert_eq!(f.health.as_deref(), Some("HEALTHY"));
        assert_eq!(f.instance_id.as_deref(), Some("i-1"));
        let f = decode_instance(&inst(&[("AWS_INSTANCE_IPV6", "2001:db8::7")])).unwrap();
        assert_eq!(f.ip.to_string(), "2001:db8::7");
    }

    #[test]
    fn instances_without_an_address_are_explained() {
        assert!(decode_instance(&inst(&[("AWS_INSTANCE_CNAME", "x")]))
            .unwrap_err()
            .contains("no AWS_INSTANCE_IPV4"));
        assert!(decode_instance(&inst(&[("AWS_INSTANCE_IPV4", "ten")]))
            .unwrap_err()
            .contains("not IP addresses"));
    }
}
