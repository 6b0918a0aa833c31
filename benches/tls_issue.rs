//! Boot time added by TLS distribution's certificate, without the network: parsing and checking
//! the stored CA (PEM → certificate and key) and issuing (a P-256 key generated, a certificate
//! signed). The AWS read of the CA (one GetSecretValue) is a network call and is not measured
//! here. Run: `cargo bench --bench tls_issue`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use ecs_peers::tls::{issue::issue, ClusterCa, Subject};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};

/// A P-256 test CA as stored: certificate and key, PEM, concatenated.
fn stored_ca() -> String {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let cert = params.self_signed(&key).unwrap();
    format!("{}{}", cert.pem(), key.serialize_pem())
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn bench(c: &mut Criterion) {
    let pem = stored_ca();
    let subject = Subject {
        ip: "10.1.0.5".parse().unwrap(),
        private_dns_name: Some("ip-10-1-0-5.eu-west-2.compute.internal".into()),
    };
    let mut g = c.benchmark_group("tls");
    g.bench_function("parse_ca", |b| {
        b.iter(|| ClusterCa::from_pem(black_box(&pem), now()).unwrap())
    });
    let ca = ClusterCa::from_pem(&pem, now()).unwrap();
    g.bench_function("issue", |b| {
        b.iter(|| issue(&ca, black_box(&subject), Duration::from_secs(86_400), now()).unwrap())
    });
    g.bench_function("parse_ca_and_issue", |b| {
        b.iter(|| {
            let ca = ClusterCa::from_pem(black_box(&pem), now()).unwrap();
            issue(&ca, &subject, Duration::from_secs(86_400), now()).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
