//! Property tests over bad input everywhere it enters: configuration trees, node-name templates,
//! task metadata documents, and AWS answers of any shape (through the real SDK deserializers).
//! The property is always the same: an error or a value, never a panic.

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use aws_sdk_ecs::types::{Attachment, Container, KeyValuePair, NetworkInterface, Task};
    use aws_sdk_servicediscovery::types::HttpInstanceSummary;
    use proptest::collection::{hash_map, vec};
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    use crate::config::{Config, EcsSourceConfig, KEYS};
    use crate::source::cloudmap::decode_instances;
    use crate::source::ecs::decode::decode_task;

    /// Any JSON value, nested up to 4 levels.
    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            ".{0,12}".prop_map(Value::String),
            prop_oneof![
                Just("ecs"),
                Just("cloudmap"),
                Just("eu-west-2"),
                Just("auto"),
                Just("5s"),
                Just("app@{ip}")
            ]
            .prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..6).prop_map(Value::Array),
                hash_map(key(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Mostly real key names (so validation goes deep), sometimes anything.
    fn key() -> impl Strategy<Value = String> {
        let real: Vec<&'static str> = KEYS.iter().map(|k| k.key).collect();
        prop_oneof![3 => proptest::sample::select(real).prop_map(String::from), 1 => ".{0,8}"]
    }

    /// A configuration-shaped tree: real keys at the top and in sources, values of any shape.
    fn config_tree() -> impl Strategy<Value = Value> {
        (
            hash_map(key(), json(), 0..8),
            vec(hash_map(key(), json(), 0..7), 0..4),
        )
            .prop_map(|(top, sources)| {
                let mut m: Map<String, Value> = top.into_iter().collect();
                m.insert(
                    "sources".into(),
                    Value::Array(
                        sources
                            .into_iter()
                            .map(|s| Value::Object(s.into_iter().collect()))
                            .collect(),
                    ),
                );
                Value::Object(m)
            })
    }

    fn ipish() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(|o| format!("{}.{}.{}.{}", o[0], o[1], o[2], o[3])),
            any::<[u16; 8]>().prop_map(|s| s
                .iter()
                .map(|x| format!("{x:x}"))
                .collect::<Vec<_>>()
                .join(":")),
            ".{0,20}",
        ]
    }

    fn task() -> impl Strategy<Value = Task> {
        let status = prop_oneof![
            Just("RUNNING".to_string()),
            Just("PROVISIONING".to_string()),
            Just("DEACTIVATING".to_string()),
            Just("STOPPED".to_string()),
            ".{0,10}"
        ];
        let detail = (
            prop_oneof![
                Just("privateIPv4Address".to_string()),
                Just("ipv6Address".to_string()),
                ".{0,10}"
            ],
            ipish(),
        );
        let attachment = (
            prop_oneof![Just("ElasticNetworkInterface".to_string()), ".{0,12}"],
            vec(detail, 0..4),
        );
        let container = (".{0,6}", proptest::option::of(ipish()));
        (
            proptest::option::of(status),
            proptest::option::of(".{0,20}"),
            vec(attachment, 0..3),
            vec(container, 0..3),
        )
            .prop_map(|(status, group, attachments, containers)| {
                let mut t = Task::builder()
                    .task_arn("arn:aws:ecs:eu-west-2:1:task/web/x")
                    .set_last_status(status)
                    .set_group(group);
                for (kind, details) in attachments {
                    let mut a = Attachment::builder().r#type(kind);
                    for (name, value) in details {
                        a = a.details(KeyValuePair::builder().name(name).value(value).build());
                    }
                    t = t.attachments(a.build());
                }
                for (name, ip) in containers {
                    let mut c = Container::builder().name(name);
                    if let Some(ip) = ip {
                        c = c.network_interfaces(
                            NetworkInterface::builder().private_ipv4_address(ip).build(),
                        );
                    }
                    t = t.containers(c.build());
                }
                t.build()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn config_validation_never_panics_and_errors_name_a_key(v in config_tree()) {
            if let Err(e) = Config::from_value(v) {
                let text = e.to_string();
                prop_assert!(text.contains(": "), "an error without a key: {text}");
            }
        }

        #[test]
        fn any_json_is_rejected_or_accepted_never_a_panic(v in json()) {
            let _ = Config::from_value(v);
        }

        #[test]
        fn metadata_documents_of_any_shape_never_panic(v in json(), s in ".{0,200}") {
            let _ = crate::metadata::parse(&v.to_string());
            let _ = crate::metadata::parse(&s);
        }

        #[test]
        fn metadata_answers_of_any_bytes_never_panic(head in prop_oneof![Just("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_string()), Just("HTTP/1.1 400 Bad Request\r\n\r\n".to_string()), ".{0,40}"],
                                                     body in vec(any::<u8>(), 0..64)) {
            let mut buf = head.into_bytes();
            buf.extend(body);
            let _ = crate::metadata::read_response(&buf);
        }

        #[test]
        fn ecs_tasks_of_any_shape_decode_or_are_skipped(t in task(), service in proptest::option::of(".{0,8}"), container in proptest::option::of(".{0,6}"),
                                                        tags in proptest::collection::btree_map(".{0,4}", ".{0,4}", 0..3)) {
            let cfg = EcsSourceConfig { region: "eu-west-2".into(), cluster: "web".into(), service, family: None, container, tags, regions: None };
            let _ = decode_task(&t, &crate::source::ecs::decode::TaskFilter::new(&cfg, 4370));
        }

        #[test]
        fn cloudmap_instances_of_any_shape_decode_or_are_skipped(attrs in hash_map(prop_oneof![Just("AWS_INSTANCE_IPV4".to_string()), Just("AWS_INSTANCE_IPV6".to_string()), Just("AVAILABILITY_ZONE".to_string()), Just("AWS_INSTANCE_PORT".to_string()), ".{0,10}"], prop_oneof![ipish(), "[0-9]{1,6}"], 0..5)) {
            let i = HttpInstanceSummary::builder().instance_id("i").set_attributes(Some(attrs.into_iter().collect::<HashMap<_, _>>())).build();
            for dial in [crate::config::DialPort::Registered, crate::config::DialPort::DistributionPort] {
                // Every instance is either a peer or counted skipped: none is dropped unsaid.
                let polled = decode_instances(std::slice::from_ref(&i), dial, 4370);
                prop_assert_eq!(polled.found.len() + polled.skipped.iter().map(|s| s.tasks).sum::<usize>(), 1);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Whatever ECS answers (any JSON, or bytes that are not JSON), the poll is a value or an
        /// error — through the SDK's own deserializers, via its replay HTTP client.
        #[test]
        fn any_ecs_answer_is_a_poll_result_or_an_error(list in prop_oneof![json().prop_map(|v| v.to_string()), ".{0,64}"],
                                                        describe in prop_oneof![json().prop_map(|v| v.to_string()), ".{0,64}"],
                                                        status in prop_oneof![Just(200u16), Just(400u16), Just(403u16), Just(409u16), Just(429u16), Just(500u16), Just(503u16)]) {
            use aws_smithy_http_client::test_util::{ReplayEvent, StaticReplayClient};
            use aws_smithy_types::body::SdkBody;
            let ev = |status: u16, body: String| ReplayEvent::new(
                http::Request::builder().uri("https://ecs.eu-west-2.amazonaws.com/").body(SdkBody::empty()).unwrap(),
                http::Response::builder().status(status).header("content-type", "application/x-amz-json-1.1").body(SdkBody::from(body)).unwrap(),
            );
            // A valid first page, so the second answer reaches DescribeTasks too.
            let events = vec![ev(status, list), ev(200, r#"{"taskArns":["arn:aws:ecs:eu-west-2:1:task/web/a"]}"#.into()), ev(status, describe)];
            let conf = aws_sdk_ecs::Config::builder()
                .behavior_version(aws_sdk_ecs::config::BehaviorVersion::latest())
                .region(aws_sdk_ecs::config::Region::new("eu-west-2"))
                .credentials_provider(aws_sdk_ecs::config::Credentials::new("a", "b", None, None, "test"))
                .retry_config(aws_sdk_ecs::config::retry::RetryConfig::disabled())
                .http_client(StaticReplayClient::new(events))
                .build();
            let ec2 = aws_sdk_ec2::Config::builder()
                .behavior_version(aws_sdk_ec2::config::BehaviorVersion::latest())
                .region(aws_sdk_ec2::config::Region::new("eu-west-2"))
                .credentials_provider(aws_sdk_ec2::config::Credentials::new("a", "b", None, None, "test"))
                .http_client(StaticReplayClient::new(vec![]))
                .build();
            let cfg = EcsSourceConfig { region: "eu-west-2".into(), cluster: "web".into(), service: None, family: None, container: None, tags: Default::default(), regions: None };
            let calls = crate::aws::CountCalls(Arc::new(crate::aws::CallCounter::default()));
            let mut src = crate::source::ecs::EcsSource::new(aws_sdk_ecs::Client::from_conf(conf), aws_sdk_ec2::Client::from_conf(ec2), cfg, true, 4370, calls);
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            use crate::source::Source;
            // What happened decides the kind: an error status is classified by its status
            // (no generated body holds a documented AWS error code), never as malformed.
            if let Err(e) = rt.block_on(src.poll()) {
                match status {
                    500..=599 => prop_assert_eq!(e.kind, crate::error::ErrorKind::Service, "{}", e),
                    429 => prop_assert_eq!(e.kind, crate::error::ErrorKind::Throttled, "{}", e),
                    400..=499 => prop_assert!(!e.kind.backs_off() && e.kind != crate::error::ErrorKind::Malformed, "{}", e),
                    _ => {}
                }
            }
            let _ = rt.block_on(src.poll());
        }
    }
}
