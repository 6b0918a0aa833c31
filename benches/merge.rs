//! Decode + merge + diff at 100, 1k and 10k tasks: the CPU cost of one poll once the AWS answers
//! are in; and whole rounds through the poller's own functions, with no answer changed and with
//! one source's answer changed. `cargo bench --bench merge` (figures in BENCHMARKS.md).

use std::hint::black_box;

use aws_sdk_ecs::types::{Attachment, KeyValuePair, Task};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use ecs_peers::bench::{bench_answer, bench_decode, bench_merge, BenchRound};
use ecs_peers::config::EcsSourceConfig;
use ecs_peers::{NodeNaming, Snapshot};

/// The shipped binaries' allocator (the NIF's and the CLI's), so the figures are theirs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn task(i: usize, region_octet: u8) -> Task {
    let ip = format!("10.{region_octet}.{}.{}", i / 250, i % 250 + 4);
    Task::builder()
        .task_arn(format!(
            "arn:aws:ecs:eu-west-2:123456789012:task/web/{i:032x}"
        ))
        .last_status("RUNNING")
        .desired_status("RUNNING")
        .group("service:api")
        .availability_zone("eu-west-2a")
        .task_definition_arn("arn:aws:ecs:eu-west-2:123456789012:task-definition/api:7")
        .started_at(aws_smithy_types::DateTime::from_secs(
            1_700_000_000 + i as i64,
        ))
        .attachments(
            Attachment::builder()
                .r#type("ElasticNetworkInterface")
                .status("ATTACHED")
                .details(
                    KeyValuePair::builder()
                        .name("subnetId")
                        .value("subnet-1")
                        .build(),
                )
                .details(
                    KeyValuePair::builder()
                        .name("privateIPv4Address")
                        .value(ip)
                        .build(),
                )
                .build(),
        )
        .build()
}

fn source(region: &str) -> EcsSourceConfig {
    EcsSourceConfig {
        region: region.into(),
        cluster: "web".into(),
        service: Some("api".into()),
        family: None,
        container: None,
        tags: Default::default(),
        regions: None,
    }
}

fn benches(c: &mut Criterion) {
    let naming = NodeNaming::Basename("app".into());
    let mut group = c.benchmark_group("poll_cpu");
    for n in [100usize, 1_000, 10_000] {
        // Two regions, half the tasks each.
        let eu: Vec<Task> = (0..n / 2).map(|i| task(i, 1)).collect();
        let us: Vec<Task> = (0..n / 2).map(|i| task(i, 2)).collect();
        let (eu_cfg, us_cfg) = (source("eu-west-2"), source("us-west-2"));
        let per_source = vec![
            bench_decode(&eu, &eu_cfg, &naming),
            bench_decode(&us, &us_cfg, &naming),
        ];
        // The previous snapshot differs by 1%: some tasks replaced.
        let mut shifted = per_source.clone();
        shifted[0].truncate(n / 2 - n / 100);
        let (previous, _) = bench_merge(&shifted, &Snapshot::empty());

        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("decode", n), &n, |b, _| {
            b.iter(|| {
                black_box(bench_decode(black_box(&eu), &eu_cfg, &naming));
                black_box(bench_decode(black_box(&us), &us_cfg, &naming));
            })
        });
        group.bench_with_input(BenchmarkId::new("merge_diff", n), &n, |b, _| {
            b.iter(|| black_box(bench_merge(black_box(&per_source), &previous)))
        });
        group.bench_with_input(BenchmarkId::new("decode_merge_diff", n), &n, |b, _| {
            b.iter(|| {
                let per = vec![
                    bench_decode(&eu, &eu_cfg, &naming),
                    bench_decode(&us, &us_cfg, &naming),
                ];
                black_box(bench_merge(&per, &previous))
            })
        });
        // Whole rounds, as the poller runs them (answers cloned outside the timing).
        let sources = [
            ("eu-west-2", "ecs:eu-west-2/web/api"),
            ("us-west-2", "ecs:us-west-2/web/api"),
        ];
        let answers = vec![bench_answer(&eu, &eu_cfg), bench_answer(&us, &us_cfg)];
        let shifted_answers = vec![
            bench_answer(&eu[..n / 2 - n / 100], &eu_cfg),
            bench_answer(&us, &us_cfg),
        ];
        // No source's answer changed since the last round.
        let mut steady = BenchRound::new(naming.clone(), &sources);
        steady.round(answers.clone());
        group.bench_with_input(BenchmarkId::new("unchanged_round", n), &n, |b, _| {
            b.iter_batched(
                || answers.clone(),
                |a| black_box(steady.round(a)),
                BatchSize::LargeInput,
            )
        });
        // Fleet-shared polling: the complete result a poller sends for one source (its size on
        // the wire is printed once), and what a follower does with it: decode, then the round.
        let wire = answers[0].shared(sources[0].1);
        eprintln!(
            "shared result, {} tasks of one source: {} bytes ({:.0} bytes a task)",
            n / 2,
            wire.len(),
            wire.len() as f64 / (n / 2) as f64
        );
        group.bench_with_input(BenchmarkId::new("shared_encode", n / 2), &n, |b, _| {
            b.iter(|| black_box(answers[0].shared(black_box(sources[0].1))))
        });
        let mut follower = BenchRound::new(naming.clone(), &sources);
        follower.round(answers.clone());
        let mut flip_shared = false;
        let shifted_wire = shifted_answers[0].shared(sources[0].1);
        group.bench_with_input(
            BenchmarkId::new("shared_decode_round", n / 2),
            &n,
            |b, _| {
                b.iter_batched(
                    || {
                        // The other source's answer is this node's own (cloned outside the timing).
                        flip_shared = !flip_shared;
                        (flip_shared, answers[1].clone())
                    },
                    |(shifted, own)| {
                        let bytes = if shifted { &shifted_wire } else { &wire };
                        let received = ecs_peers::bench::BenchAnswer::from_shared(bytes)
                            .expect("a complete result");
                        black_box(follower.round(vec![received, own]))
                    },
                    BatchSize::LargeInput,
                )
            },
        );
        // One source's answer changed by 1 % (alternately losing and regaining n/100 tasks).
        let mut churn = BenchRound::new(naming.clone(), &sources);
        churn.round(answers.clone());
        let mut flip = false;
        group.bench_with_input(BenchmarkId::new("changed_round", n), &n, |b, _| {
            b.iter_batched(
                || {
                    flip = !flip;
                    if flip {
                        shifted_answers.clone()
                    } else {
                        answers.clone()
                    }
                },
                |a| black_box(churn.round(a)),
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(name = poll; config = Criterion::default().sample_size(20); targets = benches);
criterion_main!(poll);
