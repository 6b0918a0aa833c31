//! One failure suite, run against every source (as object_store runs one suite against every
//! store): throttling, a server fault, a malformed body, a stalled call, AccessDenied, expired or
//! invalid credentials, a missing target, an unknown client error, an unreachable endpoint,
//! connections reset mid-call, and a stalled second page where the source pages.
//!
//! Every case asserts the same contract: the source keeps its last-known peers (nobody removed),
//! it is reported failing with the right kind and AWS action, the message names the fix, and it
//! backs off only for throttling and server faults (a backed-off source is not called again in
//! the next round, and that round reports no calls of its own; any other failing source is
//! called again).
//!
//! A new source joins the suite with one line in [`conformance!`] at the bottom, naming a
//! function that builds its [`Subject`].

use std::time::Duration;

use ecs_peers::{Config, ErrorKind, Poller, SourceStatus, Update};
use serde_json::{json, Value};

use crate::emu::{ips, Emu};
use crate::{config, peer_ips};

/// A source under test: the world it reads, its configuration, and the call its poll makes.
pub struct Subject {
    /// The emulator world to seed (`tests/support/world.py seed`).
    world: Value,
    /// The source's configuration (one entry of `sources`).
    source: Value,
    /// The region the source polls (faults are scoped to it).
    region: &'static str,
    /// The API operation every poll makes first (the `X-Amz-Target` operation name).
    operation: &'static str,
    /// The IAM action errors name for it.
    action: &'static str,
    /// The error code AWS answers when the source's target does not exist.
    not_found_code: &'static str,
    /// The peers' IPs the seeded world yields, from the seed output.
    expected: fn(&Value) -> Vec<String>,
    /// Changes the world after the first poll so that the next polls make `operation` (a
    /// cached look-up is made only for something new); `None`: every poll makes it.
    grow: Option<fn(&Emu)>,
    /// The action an unreachable endpoint fails first (the first call of a poll).
    first_action: &'static str,
}

fn ecs_with(tasks: u32) -> Subject {
    Subject {
        world: json!({"ecs": [{"region": "eu-west-2", "cluster": "web", "subnet": "10.201.0.0/24",
            "tasks": [{"family": "api", "count": tasks, "group": "service:api"}]}]}),
        source: json!({"type": "ecs", "region": "eu-west-2", "cluster": "web", "service": "api"}),
        region: "eu-west-2",
        operation: "ListTasks",
        action: "ecs:ListTasks",
        not_found_code: "ClusterNotFoundException",
        expected: |w| ips(w, "eu-west-2/web", None),
        grow: None,
        first_action: "ecs:ListTasks",
    }
}

/// ECS on EC2, bridge mode: two instances with two tasks each.
fn ec2_bridge(
    operation: &'static str,
    action: &'static str,
    not_found_code: &'static str,
) -> Subject {
    let bridge = |count: u32| {
        json!({"family": "api", "count": count, "group": "service:api", "launch_type": "EC2",
               "network_mode": "bridge", "port_mappings": [{"containerPort": 4370, "hostPort": 0}]})
    };
    Subject {
        world: json!({"ecs": [{"region": "eu-west-2", "cluster": "web", "subnet": "10.201.0.0/24",
            "instances": [{"ipv4": "10.201.0.50"}, {"ipv4": "10.201.0.51"}],
            "tasks": [bridge(4)]}]}),
        source: json!({"type": "ecs", "region": "eu-west-2", "cluster": "web", "service": "api"}),
        region: "eu-west-2",
        operation,
        action,
        not_found_code,
        expected: |w| ips(w, "eu-west-2/web", None),
        // A task on a new instance: the next poll must look that instance up.
        grow: Some(|emu| {
            let new = emu.world(
                "instances",
                &json!({"region": "eu-west-2", "cluster": "web", "subnet": "10.201.0.0/24",
                        "instances": [{"ipv4": "10.201.0.60"}]}),
            );
            emu.run_tasks(
                json!({"region": "eu-west-2", "cluster": "web", "subnet": "10.201.0.0/24",
                "family": "api", "count": 1, "group": "service:api", "launch_type": "EC2",
                "network_mode": "bridge", "port_mappings": [{"containerPort": 4370, "hostPort": 0}],
                "container_instance": new[0]["container_instance"]}),
            );
        }),
        first_action: "ecs:ListTasks",
    }
}

/// ECS on EC2: container instance → EC2 instance (ecs:DescribeContainerInstances).
fn ec2_container_instances() -> Subject {
    ec2_bridge(
        "DescribeContainerInstances",
        "ecs:DescribeContainerInstances",
        "ClusterNotFoundException",
    )
}

/// ECS on EC2: EC2 instance → address (ec2:DescribeInstances).
fn ec2_instances() -> Subject {
    ec2_bridge(
        "DescribeInstances",
        "ec2:DescribeInstances",
        "InvalidInstanceID.NotFound",
    )
}

/// ECS: ListTasks → DescribeTasks.
fn ecs() -> Subject {
    ecs_with(3)
}

/// ECS with more tasks than one ListTasks page holds (100).
fn ecs_paged() -> Subject {
    ecs_with(150)
}

/// ECS filtered by task tags: its DescribeTasks calls ask for the tags (`include: TAGS`) and fail
/// like any other. Team a's tasks are family api, team b's family worker, in one service.
fn ecs_tagged() -> Subject {
    Subject {
        world: json!({"ecs": [{"region": "eu-west-2", "cluster": "web", "subnet": "10.201.0.0/24",
            "tasks": [{"family": "api", "count": 3, "group": "service:api", "tags": {"team": "a"}},
                      {"family": "worker", "count": 2, "group": "service:api", "tags": {"team": "b"}}]}]}),
        source: json!({"type": "ecs", "region": "eu-west-2", "cluster": "web", "service": "api",
                       "tags": {"team": "a"}}),
        region: "eu-west-2",
        operation: "DescribeTasks",
        action: "ecs:DescribeTasks",
        not_found_code: "ClusterNotFoundException",
        expected: |w| ips(w, "eu-west-2/web", Some("api")),
        // A new team-a task: the next poll must describe it, with its tags.
        grow: Some(|emu| {
            emu.run_tasks(
                json!({"region": "eu-west-2", "cluster": "web", "subnet": "10.201.0.0/24",
                "family": "api", "count": 1, "group": "service:api", "tags": {"team": "a"}}),
            );
        }),
        first_action: "ecs:ListTasks",
    }
}

/// Cloud Map: DiscoverInstances (no paging).
fn cloudmap() -> Subject {
    Subject {
        world: json!({"cloudmap": [{"region": "us-west-2", "namespace": "internal", "service": "api",
            "instances": [{"id": "a", "ipv4": "10.203.0.10"}, {"id": "b", "ipv4": "10.203.0.11"},
                          {"id": "c", "ipv6": "2001:db8::c"}]}]}),
        source: json!({"type": "cloudmap", "region": "us-west-2", "namespace": "internal", "service": "api"}),
        region: "us-west-2",
        operation: "DiscoverInstances",
        action: "servicediscovery:DiscoverInstances",
        not_found_code: "NamespaceNotFound",
        expected: |w| {
            let mut v: Vec<String> = w["cloudmap"]["us-west-2/internal/api"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["ip"].as_str().unwrap().to_string())
                .collect();
            v.sort();
            v
        },
        grow: None,
        first_action: "servicediscovery:DiscoverInstances",
    }
}

/// A subject's world, running, with one complete poll behind it.
struct Running {
    emu: Emu,
    poller: Poller,
    subject: Subject,
    peers: Vec<String>,
}

/// Polls per case: short enough that a stalled call (held 6 s by the emulator) times out.
const POLL_TIMEOUT: Duration = Duration::from_secs(2);

async fn start(subject: Subject) -> Running {
    start_with(subject, |_, _| {}).await
}

/// [`start`], with the configuration changed by `adjust` first (to reach the emulator through
/// a proxy, say).
async fn start_with(subject: Subject, adjust: impl FnOnce(&Emu, &mut Config)) -> Running {
    let emu = Emu::start();
    let world = emu.seed(subject.world.clone());
    let peers = (subject.expected)(&world);
    assert!(!peers.is_empty(), "the subject's world has peers");
    let mut cfg = config(&emu, json!([subject.source.clone()]));
    cfg.poll_timeout = POLL_TIMEOUT;
    adjust(&emu, &mut cfg);
    let mut poller = Poller::new(cfg).await;
    // The first complete poll (a loaded machine may need more than one within POLL_TIMEOUT).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let u = poller.poll().await;
        if u.snapshot.sources[0].state.answered() {
            assert_eq!(peer_ips(&u.snapshot), peers);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no complete first poll: {:?}",
            u.snapshot.sources[0]
        );
    }
    if let Some(grow) = subject.grow {
        grow(&emu);
    }
    Running {
        emu,
        poller,
        subject,
        peers,
    }
}

/// What a failing poll must report.
struct Expect<'a> {
    kind: ErrorKind,
    /// Text the message must contain (the remote's own words).
    says: &'a str,
    /// Text the fix must contain.
    fix: &'a str,
}

/// The source's failure as (kind, action, message-and-fix text), read from its status.
fn failure(src: &SourceStatus) -> (ErrorKind, String, String) {
    let kind = src
        .error_kind
        .unwrap_or_else(|| panic!("no error kind: {src:?}"));
    let text = src.error.clone().unwrap_or_default();
    let action = text
        .split_once(" failed (")
        .map(|(a, _)| a.to_string())
        .unwrap_or_default();
    (kind, action, text)
}

impl Running {
    /// Injects `faults` (each scoped to the subject's operation and region unless it names its
    /// own) and polls once.
    async fn poll_with(&mut self, faults: Value) -> Update {
        let scoped: Vec<Value> = faults
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                let mut f = f.clone();
                let o = f.as_object_mut().unwrap();
                o.entry("operation")
                    .or_insert(json!(self.subject.operation));
                o.entry("region").or_insert(json!(self.subject.region));
                f
            })
            .collect();
        self.emu.fault(Value::Array(scoped));
        self.poller.poll().await
    }

    /// The contract of one failed poll: last-known peers kept, nobody removed, failing with the
    /// kind, action, remote reason and fix expected, and back-off exactly when the kind calls
    /// for it.
    fn assert_failed(&self, u: &Update, want: &Expect) {
        let src = &u.snapshot.sources[0];
        assert!(!src.ok() && src.stale, "{src:?}");
        let (kind, action, text) = failure(src);
        assert_eq!(kind, want.kind, "{text}");
        assert_eq!(action, self.subject.action, "{text}");
        assert!(
            text.contains(want.says),
            "the remote's reason is kept: {text}"
        );
        let fix = text
            .split_once(". Fix: ")
            .map(|(_, f)| f)
            .unwrap_or_else(|| panic!("no fix named: {text}"));
        assert!(fix.contains(want.fix), "fix: {fix}");
        assert_eq!(
            peer_ips(&u.snapshot),
            self.peers,
            "the last-known peers are kept"
        );
        assert!(u.changes.removed.is_empty(), "{:?}", u.changes.removed);
        assert_eq!(src.peers, self.peers.len());
        assert!(
            src.last_success.is_some(),
            "the last success is still told: {src:?}"
        );
        assert_eq!(
            src.backoff_until.is_some(),
            matches!(want.kind, ErrorKind::Throttled | ErrorKind::Service),
            "back-off only for throttling and server faults: {src:?}"
        );
    }

    /// Hits of the injected faults so far.
    fn hits(&self) -> u64 {
        self.emu
            .faults()
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["hits"].as_u64().unwrap_or(0))
            .sum()
    }

    /// One fault, persisting: the first poll fails as expected; the next round calls again
    /// unless the kind backs off.
    async fn fails_with(mut self, fault: Value, want: Expect<'_>) {
        let u = self.poll_with(json!([fault])).await;
        self.assert_failed(&u, &want);
        let before = self.hits();
        assert!(before >= 1, "the fault was hit");
        let total = u.snapshot.sources[0].api_calls_total;
        let u = self.poller.poll().await;
        let after = self.hits();
        if want.kind.backs_off() {
            assert_eq!(after, before, "a backed-off source was called again");
            // Every per-round figure is of its own round: none of the failed round's calls.
            let src = &u.snapshot.sources[0];
            assert_eq!(src.api_calls, 0, "no call was made this round: {src:?}");
            assert!(src.api_calls_by_action.is_empty(), "{src:?}");
            assert_eq!(src.api_calls_total, total, "{src:?}");
        } else {
            assert!(
                after > before,
                "a {} source was not called again",
                want.kind
            );
            self.assert_failed(&u, &want);
        }
    }
}

async fn throttling(s: Subject) {
    start(s)
        .await
        .fails_with(
            json!({"count": 100, "status": 400, "code": "ThrottlingException", "message": "Rate exceeded"}),
            Expect {
                kind: ErrorKind::Throttled,
                says: "ThrottlingException: Rate exceeded",
                fix: "backs off by itself",
            },
        )
        .await;
}

async fn server_error(s: Subject) {
    start(s)
        .await
        .fails_with(
            json!({"count": 100, "status": 500, "code": "InternalFailure", "message": "injected fault"}),
            Expect {
                kind: ErrorKind::Service,
                says: "InternalFailure: injected fault",
                fix: "server fault",
            },
        )
        .await;
}

async fn malformed_body(s: Subject) {
    start(s)
        .await
        .fails_with(
            json!({"count": 100, "status": 200, "raw_body": r#"{"truncated": ["arn:aws:ecs:eu-we"#}),
            Expect {
                kind: ErrorKind::Malformed,
                says: "",
                fix: "was not a valid",
            },
        )
        .await;
}

/// The call is held far longer than the poll timeout: the poll ends at the timeout, not when
/// the call would have answered.
async fn stalled_call(s: Subject) {
    let mut r = start(s).await;
    let started = std::time::Instant::now();
    let u = r.poll_with(json!([{"count": 2, "delay_ms": 6000}])).await;
    assert!(
        started.elapsed() < Duration::from_millis(5500),
        "the stall held the poll: {:?}",
        started.elapsed()
    );
    let want = Expect {
        kind: ErrorKind::Timeout,
        says: "",
        fix: "did not answer in time",
    };
    r.assert_failed(&u, &want);
    let before = r.hits();
    let u = r.poller.poll().await;
    assert!(r.hits() > before, "a timed-out source was not called again");
    r.assert_failed(&u, &want);
}

async fn access_denied(s: Subject) {
    let action = s.action;
    start(s)
        .await
        .fails_with(
            json!({"count": 100, "status": 400, "code": "AccessDeniedException",
                   "message": format!("User: arn:aws:sts::111122223333:assumed-role/app/t is not authorized to perform: {action}")}),
            Expect {
                kind: ErrorKind::AccessDenied,
                says: "is not authorized to perform",
                fix: &format!("grant {action} to the task role"),
            },
        )
        .await;
}

/// Expired, unknown or badly signed credentials: each names the same fix, and none backs the
/// source off (new credentials are used on the very next round).
async fn invalid_credentials(s: Subject) {
    let mut r = start(s).await;
    for code in [
        "ExpiredTokenException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
    ] {
        r.emu.clear_faults();
        let u = r
            .poll_with(json!([{"count": 100, "status": 400, "code": code,
                "message": "The security token included in the request is expired"}]))
            .await;
        r.assert_failed(
            &u,
            &Expect {
                kind: ErrorKind::Credentials,
                says: code,
                // Not recognised: invalid, or refused by this region (the fix says both).
                fix: if code == "UnrecognizedClientException" {
                    "If they fail in every region, they are invalid"
                } else {
                    "the AWS credentials are invalid or expired"
                },
            },
        );
    }
}

async fn not_found(s: Subject) {
    let code = s.not_found_code;
    start(s)
        .await
        .fails_with(
            json!({"count": 100, "status": 400, "code": code, "message": "not found"}),
            Expect {
                kind: ErrorKind::NotFound,
                says: code,
                fix: "check that",
            },
        )
        .await;
}

/// ECS's documented `ClientException`, then a code no version of this crate knows: both are
/// client errors, neither backs the source off (each is answered on the very next round).
async fn unknown_client_error(s: Subject) {
    let mut r = start(s).await;
    let u = r
        .poll_with(json!([
            {"count": 1, "status": 400, "code": "ClientException", "message": "The referenced cluster was inactive."},
            {"count": 100, "status": 409, "code": "SomeFutureConflictException", "message": "new in 2030"}
        ]))
        .await;
    let client = |says| Expect {
        kind: ErrorKind::Client,
        says,
        fix: "as a client error",
    };
    r.assert_failed(
        &u,
        &client("ClientException: The referenced cluster was inactive"),
    );
    let u = r.poller.poll().await;
    r.assert_failed(&u, &client("SomeFutureConflictException: new in 2030"));
}

async fn unreachable(s: Subject) {
    let mut r = start(s).await;
    r.subject.action = r.subject.first_action;
    r.emu.kill();
    let want = Expect {
        kind: ErrorKind::Unreachable,
        says: "cannot connect to the AWS endpoint",
        fix: "cannot be reached",
    };
    for _ in 0..2 {
        let u = r.poller.poll().await;
        r.assert_failed(&u, &want);
        assert!(
            u.snapshot.sources[0].api_calls > 0,
            "an unreachable source is tried again every round"
        );
    }
}

/// Every connection to the endpoint is reset, the pooled ones too (a broken NAT or load
/// balancer): the first call of each poll fails, as unreachable or as a cut-off answer.
async fn connection_resets(s: Subject) {
    let mut proxy = None;
    let mut r = start_with(s, |emu, cfg| {
        let p = ResetProxy::start(emu.port);
        cfg.endpoint_url = Some(p.endpoint.clone());
        proxy = Some(p);
    })
    .await;
    r.subject.action = r.subject.first_action;
    proxy.expect("started").reset_everything();
    for _ in 0..3 {
        let u = r.poller.poll().await;
        let src = &u.snapshot.sources[0];
        let kind = src.error_kind.unwrap_or_else(|| panic!("{src:?}"));
        assert!(
            matches!(kind, ErrorKind::Unreachable | ErrorKind::Malformed),
            "{src:?}"
        );
        r.assert_failed(
            &u,
            &Expect {
                kind,
                says: "",
                fix: "",
            },
        );
        assert!(u.changes.is_empty(), "{:?}", u.changes);
    }
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

/// The first page answers, the second stalls: the half-read listing replaces nobody.
async fn stalled_page(s: Subject) {
    let mut r = start(s).await;
    let u = r
        .poll_with(json!([{"count": 1}, {"count": 1, "delay_ms": 6000}]))
        .await;
    r.assert_failed(
        &u,
        &Expect {
            kind: ErrorKind::Timeout,
            says: "",
            fix: "did not answer in time",
        },
    );
    let hits: Vec<u64> = r
        .emu
        .faults()
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["hits"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(hits, [1, 1], "page 1 answered, page 2 stalled");
}

/// One module per source, one test per case. `paged` names a builder of the same source with
/// more than one page of results, for the stalled-page case.
macro_rules! conformance {
    ($($name:ident => $subject:expr $(, paged $paged:expr)?;)*) => {$(
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn throttling_keeps_peers_and_backs_off() {
                throttling($subject).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_server_error_keeps_peers_and_backs_off() {
                server_error($subject).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_malformed_body_keeps_peers_without_back_off() {
                malformed_body($subject).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_stalled_call_times_out_and_keeps_peers() {
                stalled_call($subject).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn access_denied_keeps_peers_and_names_the_grant() {
                access_denied($subject).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn expired_or_invalid_credentials_keep_peers_and_name_the_fix() {
                invalid_credentials($subject).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_missing_target_keeps_peers_and_names_it() {
                not_found($subject).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn an_unknown_client_error_keeps_peers_without_back_off() {
                unknown_client_error($subject).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn an_unreachable_endpoint_keeps_peers_without_back_off() {
                unreachable($subject).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn connection_resets_keep_peers_and_say_unreachable() {
                connection_resets($subject).await
            }

            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn a_stalled_second_page_keeps_every_peer() {
                    stalled_page($paged).await
                }
            )?
        }
    )*};
}

conformance! {
    ecs => ecs(), paged ecs_paged();
    ecs_tagged => ecs_tagged();
    cloudmap => cloudmap();
    ec2_container_instances => ec2_container_instances();
    ec2_instances => ec2_instances();
}
