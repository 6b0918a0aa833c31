//! TLS distribution's certificate (`ecs_peers::tls::credentials`) against the emulator: the CA
//! read from Secrets Manager or an SSM SecureString, the certificate issued for the address the
//! task's peers dial (awsvpc IPv4, IPv6-only, bridge mode's instance), and the errors an
//! operator meets, each naming `tls_ca` and the fix. Test CAs are made here with rcgen.

use std::net::IpAddr;

use ecs_peers::tls::{credentials, Credentials, TlsError};
use ecs_peers::Config;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};
use serde_json::{json, Value};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::emu::Emu;

/// A fresh CA: `(certificate PEM, key PEM)`; `ca: false` makes a certificate that is no CA.
fn make_ca(ca: bool) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "integration cluster CA");
    if ca {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    }
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

async fn sdk(emu: &Emu, region: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_string()))
        .endpoint_url(&emu.endpoint)
        .load()
        .await
}

/// Stores `value` as a secret named `name` in `region`; returns its ARN.
async fn put_secret(emu: &Emu, region: &str, name: &str, value: &str) -> String {
    let c = aws_sdk_secretsmanager::Client::new(&sdk(emu, region).await);
    let out = c
        .create_secret()
        .name(name)
        .secret_string(value)
        .send()
        .await
        .unwrap();
    out.arn().unwrap().to_string()
}

/// Stores `value` as an SSM parameter of `kind` in `region`; returns its ARN.
async fn put_parameter(emu: &Emu, region: &str, name: &str, value: &str, kind: &str) -> String {
    let c = aws_sdk_ssm::Client::new(&sdk(emu, region).await);
    c.put_parameter()
        .name(name)
        .value(value)
        .r#type(kind.into())
        .send()
        .await
        .unwrap();
    let p = c.get_parameter().name(name).send().await.unwrap();
    p.parameter().unwrap().arn().unwrap().to_string()
}

/// A config for the task whose metadata endpoint is `task["metadata_uri"]`.
fn config(emu: &Emu, task: &Value, tls_ca: &str) -> Config {
    Config::from_value(json!({
        "node_basename": "app",
        "endpoint_url": emu.endpoint,
        "metadata_url": task["metadata_uri"],
        "max_attempts": 1,
        "sources": [{"type": "ecs", "cluster": "auto"}],
        "tls_ca": tls_ca,
        "tls_validity": "10m",
    }))
    .unwrap()
}

/// One awsvpc task in eu-west-2/web: IPv4 (`subnet`), or IPv6-only (`subnet: null`).
fn awsvpc_task(emu: &Emu, ipv4: bool) -> Value {
    emu.seed(json!({"ecs": [{"region": "eu-west-2", "cluster": "web",
        "subnet": "10.201.0.0/24", "tasks": []}]}));
    let run = if ipv4 {
        json!({"region": "eu-west-2", "cluster": "web", "subnet": "10.201.0.0/24",
               "family": "api", "count": 1})
    } else {
        json!({"region": "eu-west-2", "cluster": "web", "subnet": null,
               "subnet_ipv6": "fd00:201::/64", "family": "api", "count": 1})
    };
    emu.run_tasks(run)[0].clone()
}

/// The certificate's SANs as `ip:…` / `dns:…`, and its issuer checked against `ca_pem`.
fn checked_sans(c: &Credentials, ca_pem: &str) -> Vec<String> {
    let (_, cert) = X509Certificate::from_der(&c.cert_der).unwrap();
    let ca_der = pem::parse(ca_pem).unwrap().into_contents();
    assert_eq!(c.cacerts, vec![ca_der.clone()]);
    let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
    cert.verify_signature(Some(ca.public_key()))
        .expect("issued by the cluster CA");
    let san = cert.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::IPAddress(b) if b.len() == 4 => {
                format!("ip:{}", IpAddr::from(<[u8; 4]>::try_from(*b).unwrap()))
            }
            GeneralName::IPAddress(b) => {
                format!("ip:{}", IpAddr::from(<[u8; 16]>::try_from(*b).unwrap()))
            }
            GeneralName::DNSName(d) => format!("dns:{d}"),
            other => format!("{other:?}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_by_name_issues_for_the_tasks_ipv4_and_private_dns_name() {
    let emu = Emu::start();
    let task = awsvpc_task(&emu, true);
    let (cert, key) = make_ca(true);
    put_secret(&emu, "eu-west-2", "ecs-peers/ca", &format!("{cert}{key}")).await;
    let c = credentials(&config(&emu, &task, "ecs-peers/ca"))
        .await
        .unwrap();
    let ip = task["ip"].as_str().unwrap();
    let dns = task["dns"].as_str().unwrap();
    assert_eq!(
        checked_sans(&c, &cert),
        [
            format!("ip:{ip}"),
            format!("dns:{ip}"),
            format!("dns:{dns}")
        ]
    );
    assert_eq!(c.names, [ip, dns]);
    assert!(c.not_after > c.renew_at);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ssm_securestring_in_another_region_issues_for_an_ipv6_only_task() {
    let emu = Emu::start();
    let task = awsvpc_task(&emu, false);
    let (cert, key) = make_ca(true);
    let arn = put_parameter(
        &emu,
        "us-east-1",
        "/ecs-peers/ca",
        &format!("{key}{cert}"),
        "SecureString",
    )
    .await;
    let c = credentials(&config(&emu, &task, &arn)).await.unwrap();
    let ipv6 = task["ipv6"].as_str().unwrap();
    let sans = checked_sans(&c, &cert);
    assert_eq!(&sans[..2], [format!("ip:{ipv6}"), format!("dns:{ipv6}")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_mode_task_is_issued_for_its_instances_address() {
    let emu = Emu::start();
    let w = emu.seed(json!({"ecs": [{"region": "eu-west-2", "cluster": "web",
        "subnet": "10.201.0.0/24", "instances": [{"ipv4": "10.201.0.50"}],
        "tasks": [{"family": "bridged", "count": 1, "launch_type": "EC2", "network_mode": "bridge",
                   "port_mappings": [{"containerPort": 4370, "hostPort": 0}]}]}]}));
    let task = w["ecs"]["eu-west-2/web"]["running"][0].clone();
    let (cert, key) = make_ca(true);
    let arn = put_secret(&emu, "eu-west-2", "ca", &format!("{cert}{key}")).await;
    let c = credentials(&config(&emu, &task, &arn)).await.unwrap();
    let sans = checked_sans(&c, &cert);
    assert_eq!(&sans[..2], ["ip:10.201.0.50", "dns:10.201.0.50"]);
}

async fn error(emu: &Emu, task: &Value, tls_ca: &str) -> String {
    let e: TlsError = credentials(&config(emu, task, tls_ca)).await.unwrap_err();
    e.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_denied_and_not_found_name_the_action_the_arn_and_the_fix() {
    let emu = Emu::start();
    let task = awsvpc_task(&emu, true);
    emu.fault(json!({"operation": "GetSecretValue", "status": 400,
        "code": "AccessDeniedException", "message": "not authorized to perform: secretsmanager:GetSecretValue"}));
    let e = error(&emu, &task, "ecs-peers/ca").await;
    assert!(
        e.starts_with("tls_ca: cannot read the cluster CA ecs-peers/ca: "),
        "{e}"
    );
    assert!(e.contains("grant secretsmanager:GetSecretValue"), "{e}");
    assert!(
        e.contains("arn:aws:secretsmanager:eu-west-2:*:secret:ecs-peers/ca-*"),
        "{e}"
    );
    assert!(e.contains("kms:Decrypt"), "{e}");

    let param = "arn:aws:ssm:eu-west-2:123456789012:parameter/ecs-peers/ca";
    emu.fault(json!({"operation": "GetParameter", "status": 400,
        "code": "AccessDeniedException", "message": "not authorized"}));
    let e = error(&emu, &task, param).await;
    assert!(
        e.contains(&format!(
            "grant ssm:GetParameter to the task role, with Resource \"{param}\""
        )),
        "{e}"
    );

    let e = error(&emu, &task, "ecs-peers/none").await;
    assert!(e.contains("(not_found)"), "{e}");
    assert!(
        e.contains("create the secret \"ecs-peers/none\" in eu-west-2"),
        "{e}"
    );
    let e = error(&emu, &task, param).await;
    assert!(e.contains("ParameterNotFound"), "{e}");
    assert!(
        e.contains(
            "aws ssm put-parameter --region eu-west-2 --type SecureString --name /ecs-peers/ca"
        ),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_that_is_no_usable_ca_is_refused_with_the_fix() {
    let emu = Emu::start();
    let task = awsvpc_task(&emu, true);
    let (leaf, leaf_key) = make_ca(false);
    let (cert, _) = make_ca(true);
    let (_, other_key) = make_ca(true);
    put_secret(&emu, "eu-west-2", "leaf", &format!("{leaf}{leaf_key}")).await;
    put_secret(&emu, "eu-west-2", "mismatch", &format!("{cert}{other_key}")).await;
    put_secret(&emu, "eu-west-2", "text", "hello").await;
    let plain = put_parameter(
        &emu,
        "eu-west-2",
        "plain",
        &format!("{cert}{other_key}"),
        "String",
    )
    .await;
    for (ca, expected) in [
        ("leaf", "is not a CA"),
        (
            "mismatch",
            "the private key does not match the CA certificate",
        ),
        ("text", "holds no PEM block"),
        (plain.as_str(), "not a SecureString"),
    ] {
        let e = error(&emu, &task, ca).await;
        assert!(e.starts_with("tls_ca: "), "{e}");
        assert!(e.contains(expected), "{ca}: {e}");
        assert!(e.contains("Fix: "), "{e}");
        assert!(!e.contains("PRIVATE KEY-----"), "{e}");
    }
}
