//! The failure rule: only a complete, successful poll of a source may replace its peers.

use std::time::Duration;

use ecs_peers::ErrorKind;
use serde_json::json;

use crate::emu::{arns, ips, Emu};
use crate::{config, peer_ips};

fn eu_cluster(n: u32) -> serde_json::Value {
    json!({"ecs": [{"region": "eu-west-2", "cluster": "web", "subnet": "10.201.0.0/24",
        "tasks": [{"family": "api", "count": n, "group": "service:api"}]}]})
}

fn eu_source() -> serde_json::Value {
    json!([{"type": "ecs", "region": "eu-west-2", "cluster": "web", "service": "api"}])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_peers_when_the_emulator_stops_mid_watch() {
    let mut emu = Emu::start();
    let w = emu.seed(eu_cluster(3));
    let mut running = ecs_peers::Poller::new(config(&emu, eu_source()))
        .await
        .spawn();
    let first = tokio::time::timeout(Duration::from_secs(20), running.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(peer_ips(&first.snapshot), ips(&w, "eu-west-2/web", None));

    emu.kill();
    let mut failing_polls = 0;
    while failing_polls < 3 {
        let u = tokio::time::timeout(Duration::from_secs(30), running.next())
            .await
            .unwrap()
            .unwrap();
        assert!(
            u.changes.removed.is_empty(),
            "a peer was removed while the API was down"
        );
        assert_eq!(peer_ips(&u.snapshot), ips(&w, "eu-west-2/web", None));
        let src = &u.snapshot.sources[0];
        if !src.ok {
            failing_polls += 1;
            assert!(src.stale);
            assert_eq!(src.peers, 3);
            assert_eq!(src.error_kind, Some(ErrorKind::Unreachable), "{src:?}");
            let e = src.error.as_deref().unwrap();
            assert!(e.starts_with("ecs:ListTasks failed (unreachable)"), "{e}");
            assert!(e.contains("Fix: the AWS endpoint cannot be reached"), "{e}");
            assert!(src.last_success.is_some());
        }
    }
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_source_keeps_peers_and_backs_off() {
    let emu = Emu::start();
    emu.seed(eu_cluster(3));
    let mut poller = ecs_peers::Poller::new(config(&emu, eu_source())).await;
    assert_eq!(poller.poll().await.snapshot.peers.len(), 3);

    emu.fault(
        json!({"operation": "ListTasks", "region": "eu-west-2", "count": 1000, "status": 400,
        "code": "ThrottlingException", "message": "Rate exceeded"}),
    );
    let u = poller.poll().await;
    let src = &u.snapshot.sources[0];
    assert!(!src.ok);
    assert_eq!(src.error_kind, Some(ErrorKind::Throttled));
    assert!(src
        .error
        .as_deref()
        .unwrap()
        .contains("ThrottlingException: Rate exceeded"));
    assert!(src.backoff_until.is_some());
    assert_eq!(u.snapshot.peers.len(), 3);
    assert!(u.changes.is_empty());

    assert_eq!(src.api_calls, 1, "the throttled call is this round's");
    let total = src.api_calls_total;

    // Backing off: the next polls do not call ListTasks at all, and say so: every per-round
    // figure is of its own round (issue 10: a backed-off round reported the last poll's calls).
    for _ in 0..2 {
        let u = poller.poll().await;
        let src = &u.snapshot.sources[0];
        assert_eq!(src.api_calls, 0, "no call was made this round: {src:?}");
        assert!(src.api_calls_by_action.is_empty(), "{src:?}");
        assert_eq!(src.api_calls_total, total);
    }
    assert_eq!(
        emu.faults()[0]["hits"],
        1,
        "a throttled source was polled again during its back-off"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_second_page_keeps_every_peer() {
    let emu = Emu::start();
    let w = emu.seed(eu_cluster(150));
    let all = ips(&w, "eu-west-2/web", None);
    let mut poller = ecs_peers::Poller::new(config(&emu, eu_source())).await;
    assert_eq!(peer_ips(&poller.poll().await.snapshot), all);

    // 10 tasks stop; then page 1 of the listing succeeds (a pass-through fault entry counts it)
    // and page 2 fails.
    let victims: Vec<String> = arns(&w, "eu-west-2/web", "api")[..10].to_vec();
    emu.stop_tasks("eu-west-2", "web", &victims);
    emu.fault(json!([
        {"operation": "ListTasks", "count": 1},
        {"operation": "ListTasks", "count": 1, "status": 500, "code": "ServerException", "message": "injected"}
    ]));
    let u = poller.poll().await;
    let src = &u.snapshot.sources[0];
    assert!(!src.ok);
    assert_eq!(src.error_kind, Some(ErrorKind::Service));
    assert_eq!(
        peer_ips(&u.snapshot),
        all,
        "a half-read listing must not remove anyone"
    );
    let hits: Vec<_> = emu
        .faults()
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["hits"].clone())
        .collect();
    assert_eq!(hits, [json!(1), json!(1)], "page 1 passed, page 2 failed");

    // The next complete poll removes exactly the stopped ones (after the 5xx back-off).
    emu.clear_faults();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let u = loop {
        let u = poller.poll().await;
        if u.snapshot.sources[0].ok {
            break u;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "source did not recover"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(u.snapshot.peers.len(), 140);
    assert_eq!(u.changes.removed.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_describe_answer_keeps_peers_and_adds_nobody() {
    let emu = Emu::start();
    let w = emu.seed(eu_cluster(3));
    let mut poller = ecs_peers::Poller::new(config(&emu, eu_source())).await;
    poller.poll().await;
    emu.run_tasks(
        json!({"region": "eu-west-2", "cluster": "web", "subnet": "10.201.0.0/24",
        "family": "api", "count": 2, "group": "service:api"}),
    );
    emu.fault(json!({"operation": "DescribeTasks", "count": 1, "status": 200, "raw_body": "{\"tasks\": [{\"taskArn\""}));
    let u = poller.poll().await;
    let src = &u.snapshot.sources[0];
    assert!(!src.ok);
    assert_eq!(src.error_kind, Some(ErrorKind::Malformed), "{src:?}");
    assert_eq!(peer_ips(&u.snapshot), ips(&w, "eu-west-2/web", None));
    let u = poller.poll().await;
    assert!(u.snapshot.sources[0].ok);
    assert_eq!(u.changes.added.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_call_times_out_and_keeps_peers() {
    let emu = Emu::start();
    emu.seed(eu_cluster(2));
    let mut cfg = config(&emu, eu_source());
    cfg.poll_timeout = Duration::from_secs(1);
    let mut poller = ecs_peers::Poller::new(cfg).await;
    poller.poll().await;
    emu.fault(json!({"operation": "ListTasks", "count": 1, "delay_ms": 3000}));
    let started = std::time::Instant::now();
    let u = poller.poll().await;
    assert!(
        started.elapsed() < Duration::from_millis(2900),
        "the stall held the poll"
    );
    let src = &u.snapshot.sources[0];
    assert_eq!(src.error_kind, Some(ErrorKind::Timeout), "{src:?}");
    assert_eq!(u.snapshot.peers.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failing_region_does_not_hold_the_others() {
    let emu = Emu::start();
    emu.seed(json!({"ecs": [
        {"region": "eu-west-2", "cluster": "web", "subnet": "10.201.0.0/24", "tasks": [{"family": "api", "count": 2}]},
        {"region": "us-west-2", "cluster": "web", "subnet": "10.202.0.0/24", "tasks": [{"family": "api", "count": 2}]}
    ]}));
    let cfg = config(
        &emu,
        json!([
            {"type": "ecs", "region": "eu-west-2", "cluster": "web"},
            {"type": "ecs", "region": "us-west-2", "cluster": "web"}
        ]),
    );
    let mut poller = ecs_peers::Poller::new(cfg).await;
    poller.poll().await;
    // us-west-2 stalls far past the round; eu-west-2 keeps answering in every round.
    emu.fault(json!({"operation": "*", "region": "us-west-2", "count": 1, "delay_ms": 4000}));
    let mut running = poller.spawn();
    let started = std::time::Instant::now();
    let u = tokio::time::timeout(Duration::from_secs(20), running.next())
        .await
        .unwrap()
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a round waited for the stalled region"
    );
    assert!(u.snapshot.sources[0].ok);
    assert_eq!(
        u.snapshot.peers.len(),
        4,
        "the stalled region keeps its peers"
    );
    running.stop().await;
}

/// A loopback TCP proxy in front of the emulator that can be switched to reset every connection
/// (new ones, and the pooled ones it is carrying), like a broken NAT or load balancer.
struct ResetProxy {
    endpoint: String,
    resetting: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl ResetProxy {
    fn start(upstream: u16) -> ResetProxy {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let resetting = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let open = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (r, o) = (resetting.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if r.load(Ordering::SeqCst) {
                    drop(reset_on_close(client));
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                o.lock().unwrap().push(client.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        ResetProxy {
            endpoint,
            resetting,
            open,
        }
    }

    fn reset_everything(&self) {
        self.resetting
            .store(true, std::sync::atomic::Ordering::SeqCst);
        for c in self.open.lock().unwrap().drain(..) {
            drop(reset_on_close(c));
        }
    }
}

/// SO_LINGER 0: closing sends a reset (RST) instead of a FIN.
fn reset_on_close(s: std::net::TcpStream) -> std::net::TcpStream {
    use std::os::fd::AsRawFd;
    #[repr(C)]
    struct Linger {
        l_onoff: i32,
        l_linger: i32,
    }
    extern "C" {
        fn setsockopt(fd: i32, level: i32, name: i32, value: *const Linger, len: u32) -> i32;
    }
    let l = Linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SOL_SOCKET = 1, SO_LINGER = 13 on Linux.
    unsafe {
        setsockopt(
            s.as_raw_fd(),
            1,
            13,
            &l,
            std::mem::size_of::<Linger>() as u32,
        )
    };
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_resets_keep_peers_and_say_unreachable() {
    let emu = Emu::start();
    emu.seed(eu_cluster(2));
    let proxy = ResetProxy::start(emu.port);
    let mut cfg = config(&emu, eu_source());
    cfg.endpoint_url = Some(proxy.endpoint.clone());
    let mut poller = ecs_peers::Poller::new(cfg).await;
    assert_eq!(
        poller.poll().await.snapshot.peers.len(),
        2,
        "through the proxy"
    );

    proxy.reset_everything();
    for _ in 0..3 {
        let u = poller.poll().await;
        let src = &u.snapshot.sources[0];
        assert!(!src.ok, "{src:?}");
        assert!(
            matches!(
                src.error_kind,
                Some(ErrorKind::Unreachable) | Some(ErrorKind::Malformed)
            ),
            "{src:?}"
        );
        assert_eq!(u.snapshot.peers.len(), 2, "a reset removed peers");
        assert!(u.changes.is_empty());
    }
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_or_invalid_credentials_keep_peers_and_name_the_fix() {
    let emu = Emu::start();
    emu.seed(eu_cluster(2));
    let mut poller = ecs_peers::Poller::new(config(&emu, eu_source())).await;
    assert_eq!(poller.poll().await.snapshot.peers.len(), 2);
    for code in [
        "ExpiredTokenException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
    ] {
        emu.clear_faults();
        emu.fault(
            json!({"operation": "ListTasks", "count": 100, "status": 400, "code": code,
            "message": "The security token included in the request is expired"}),
        );
        let u = poller.poll().await;
        let src = &u.snapshot.sources[0];
        assert_eq!(
            src.error_kind,
            Some(ErrorKind::Credentials),
            "{code}: {src:?}"
        );
        assert!(
            src.error
                .as_deref()
                .unwrap()
                .contains("Fix: the AWS credentials are invalid or expired"),
            "{src:?}"
        );
        assert_eq!(u.snapshot.peers.len(), 2, "{code} removed peers");
    }
}
