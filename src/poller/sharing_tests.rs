//! Fleet-shared polling through the poller: the election's effects, freshness, the one apply
//! rule for received results, drops, and two pollers wired to each other, against in-memory
//! sources.

use super::*;
use crate::config::SourceConfig;
use crate::namespace::Event;
use crate::sharing::{elect, encode, sharing_key, unix_ms, Outgoing, SharedAnswer};
use crate::source::fixed::{FixedSource, Step};
use serde_json::json;

// The poller test module's helpers: sources answering from a script, and how to read an
// update.
use super::tests::{found, nodes, poller, throttled};

const ME: &str = "app@10.9.0.1";

fn config(n: usize, me: &str) -> Config {
    let sources: Vec<_> = (0..n)
        .map(|i| json!({"type":"ecs","region":"eu-west-2","cluster": format!("c{i}")}))
        .collect();
    Config::from_value(
        json!({"node_basename":"app","polling_interval":"100ms","poll_timeout":"300ms",
        "share_polling": true, "local_node": me, "sources":sources}),
    )
    .unwrap()
}

/// A member name that, in a group with ME, the election makes the poller of `source`.
fn other_poller_of(source: &SourceId) -> String {
    partner(source, false)
}

/// A member name that, in a group with ME, leaves ME the poller of `source`.
fn follower_of_me(source: &SourceId) -> String {
    partner(source, true)
}

/// A member name for a group of two with ME in which ME polls `source` or not (`me_polls`).
fn partner(source: &SourceId, me_polls: bool) -> String {
    (2..200)
        .map(|k| format!("app@10.9.0.{k}"))
        .find(|o| {
            let members = vec![ME.to_string(), o.clone()];
            let poller = elect(source.as_str(), "eu-west-2", &members, |_| None);
            poller == Some(if me_polls { ME } else { o.as_str() })
        })
        .unwrap()
}

/// Makes every source's last fresh result (or election) `ms` older: time passing, without
/// waiting for it.
fn age(p: &mut Poller, ms: u64) {
    for slot in &mut p.slots {
        slot.share.age(Duration::from_millis(ms));
    }
}

fn polls(f: &FixedSource) -> u32 {
    *f.polls.lock().unwrap()
}

fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

fn peers_result(cfg: &Config, seq: u64, started_ms: u64, ips: &[&str]) -> Vec<u8> {
    let found: Vec<Found> = ips.iter().map(|ip| found(ip)).collect();
    let id = cfg.sources[0].id();
    encode(
        sharing_key(cfg),
        id.as_str(),
        seq,
        started_ms,
        Outgoing::Peers(&found, &[]),
    )
    .unwrap()
}

fn same_result(cfg: &Config, seq: u64, started_ms: u64, base: u64) -> Vec<u8> {
    let id = cfg.sources[0].id();
    encode(
        sharing_key(cfg),
        id.as_str(),
        seq,
        started_ms,
        Outgoing::Same { base },
    )
    .unwrap()
}

#[tokio::test]
async fn a_follower_whose_own_poll_is_newer_still_hears_its_poller_and_follows_again() {
    let cfg = config(1, ME);
    let other = other_poller_of(&cfg.sources[0].id());
    let (mut p, fixed) = poller(&cfg, vec![vec![Step::Answer(Ok(vec![found("10.1.0.4")]))]]);
    assert!(p.share(vec![other.clone(), ME.into()]));
    // Nothing heard for more than two intervals (a restart, a late join): polled here.
    age(&mut p, 250);
    let u = p.poll().await;
    assert_eq!(polls(&fixed[0]), 1);
    assert!(u.snapshot.sources[0].poller_silent);
    // The poller's result started before this node's own poll: not applied (older), but
    // the poller is alive, so this node stops polling the source.
    let older = now_ms() - 60_000;
    p.receive_shared(&other, &peers_result(&cfg, 7, older, &["10.1.0.9"]));
    let u = p.poll().await;
    assert_eq!(polls(&fixed[0]), 1, "the poller is heard: not polled here");
    assert!(!u.snapshot.sources[0].poller_silent);
    assert_eq!(
        nodes(&u),
        ["app@10.1.0.4"],
        "the older result is not applied"
    );
    assert_eq!(u.snapshot.sources[0].shared_dropped, 1);
    // A "same as" result this node never applied is not applied either, and keeps it
    // following too.
    age(&mut p, 150);
    p.receive_shared(&other, &same_result(&cfg, 8, now_ms() + 1, 7));
    age(&mut p, 150);
    let u = p.poll().await;
    assert_eq!(polls(&fixed[0]), 1, "still heard: not polled here");
    assert_eq!(u.snapshot.sources[0].shared_dropped, 2);
    // The poller's next full result is newer than this node's own poll: applied.
    assert!(p.receive_shared(
        &other,
        &peers_result(&cfg, 9, now_ms() + 2, &["10.1.0.4", "10.1.0.5"])
    ));
    let u = p.poll().await;
    assert_eq!(polls(&fixed[0]), 1);
    assert_eq!(nodes(&u), ["app@10.1.0.4", "app@10.1.0.5"]);
    assert_eq!(
        u.snapshot.sources[0].received_from.as_deref(),
        Some(other.as_str())
    );
}

#[tokio::test]
async fn sharing_is_on_unless_share_polling_is_false_and_off_it_ignores_the_group() {
    let with = |share: serde_json::Value| {
        let mut v = json!({"node_basename":"app","polling_interval":"100ms","local_node": ME,
            "sources":[{"type":"ecs","region":"eu-west-2","cluster":"c0"}]});
        if !share.is_null() {
            v["share_polling"] = share;
        }
        Config::from_value(v).unwrap()
    };
    // Left out: on, as with `true`.
    let cfg = with(serde_json::Value::Null);
    let other = other_poller_of(&cfg.sources[0].id());
    let (mut p, fixed) = poller(&cfg, vec![vec![Step::Answer(Ok(vec![found("10.1.0.4")]))]]);
    p.poll().await;
    assert!(p.share(vec![other.clone(), ME.into()]), "on by default");
    let u = p.poll().await;
    assert_eq!(polls(&fixed[0]), 1, "followed: not polled here");
    assert_eq!(u.snapshot.sharing_with, 2);

    // `false`: the group is ignored, every source is polled here, nothing received applies.
    let cfg = with(json!(false));
    let (mut p, fixed) = poller(&cfg, vec![vec![Step::Answer(Ok(vec![found("10.1.0.4")]))]]);
    p.poll().await;
    assert!(!p.share(vec![other.clone(), ME.into()]));
    p.receive_shared(&other, &peers_result(&cfg, 1, now_ms() + 1, &["10.1.0.9"]));
    let u = p.poll().await;
    assert_eq!(polls(&fixed[0]), 2, "off: polled here");
    assert_eq!(u.snapshot.sharing_with, 0);
    assert!(u.snapshot.sources[0].poller.is_none());
    assert_eq!(nodes(&u), ["app@10.1.0.4"]);
}

#[tokio::test]
async fn a_follower_does_not_poll_while_fresh_results_arrive_and_polls_after_two_silent_intervals()
{
    let cfg = config(1, ME);
    let other = other_poller_of(&cfg.sources[0].id());
    let (mut p, fixed) = poller(&cfg, vec![vec![Step::Answer(Ok(vec![found("10.1.0.4")]))]]);
    p.poll().await;
    assert_eq!(polls(&fixed[0]), 1, "alone: polled here");
    assert!(p.share(vec![other.clone(), ME.into()]));
    let u = p.poll().await;
    assert_eq!(polls(&fixed[0]), 1, "followed: not polled here");
    let s = &u.snapshot.sources[0];
    assert_eq!(s.poller.as_deref(), Some(other.as_str()));
    assert_eq!(u.snapshot.sharing_with, 2);
    assert!(
        matches!(&u.changes.events[..], [Event::PollerChanged { poller: Some(o), members: 2, .. }] if *o == other),
        "{:?}",
        u.changes.events
    );
    assert_eq!(
        u.changes.events[0].to_string(),
        format!("ecs:eu-west-2/c0: polled by {other} (sharing with 1 nodes)")
    );
    // Started after this node's own poll (same millisecond at most).
    let t0 = now_ms() + 1;
    assert!(p.receive_shared(
        &other,
        &peers_result(&cfg, 1, t0, &["10.1.0.4", "10.1.0.5"])
    ));
    age(&mut p, 150);
    let u = p.poll().await;
    assert_eq!(nodes(&u), ["app@10.1.0.4", "app@10.1.0.5"]);
    assert_eq!(
        u.snapshot.sources[0].received_from.as_deref(),
        Some(other.as_str())
    );
    assert!(u.snapshot.sources[0].received_at.is_some());
    assert!(u.changes.events.is_empty(), "{:?}", u.changes.events);
    p.receive_shared(
        &other,
        &peers_result(&cfg, 2, t0 + 1, &["10.1.0.4", "10.1.0.5"]),
    );
    age(&mut p, 150);
    let u = p.poll().await;
    assert_eq!(polls(&fixed[0]), 1, "fresh results: still not polled here");
    assert!(!u.snapshot.sources[0].poller_silent);
    // Silent for more than two intervals (200 ms): polled here again, said once.
    age(&mut p, 250);
    let u = p.poll().await;
    assert_eq!(polls(&fixed[0]), 2, "silent poller: polled here");
    assert!(u.snapshot.sources[0].poller_silent);
    assert!(
        matches!(&u.changes.events[..], [Event::PollerSilent { poller, .. }] if *poller == other),
        "{:?}",
        u.changes.events
    );
    assert!(u.changes.events[0].is_warning());
    let u = p.poll().await;
    assert_eq!(polls(&fixed[0]), 3, "still silent: polled here every round");
    assert!(
        u.changes.events.is_empty(),
        "said once: {:?}",
        u.changes.events
    );
    // Results flow again: followed again.
    assert!(p.receive_shared(
        &other,
        &peers_result(&cfg, 3, now_ms() + 1000, &["10.1.0.6"])
    ));
    let u = p.poll().await;
    assert_eq!(polls(&fixed[0]), 3);
    assert!(!u.snapshot.sources[0].poller_silent);
    assert_eq!(nodes(&u), ["app@10.1.0.6"]);
    // Alone again: polled here, said once.
    assert!(p.share(vec![ME.into()]));
    let u = p.poll().await;
    assert_eq!(polls(&fixed[0]), 4);
    assert!(u.snapshot.sources[0].poller.is_none());
    assert!(u.snapshot.sources[0].received_from.is_none());
    assert!(
        matches!(
            &u.changes.events[..],
            [Event::PollerChanged { poller: None, .. }]
        ),
        "{:?}",
        u.changes.events
    );
    assert_eq!(
        u.changes.events[0].to_string(),
        "ecs:eu-west-2/c0: polled here"
    );
}

#[tokio::test]
async fn an_older_or_repeated_result_never_removes_a_peer() {
    let cfg = config(1, ME);
    let other = other_poller_of(&cfg.sources[0].id());
    let (mut p, _) = poller(&cfg, vec![vec![Step::Answer(Ok(vec![]))]]);
    p.share(vec![ME.into(), other.clone()]);
    let t = now_ms();
    assert!(p.receive_shared(
        &other,
        &peers_result(&cfg, 5, t + 10, &["10.1.0.4", "10.1.0.5"])
    ));
    // Older (earlier start, whatever its sequence), then the same one again.
    assert!(!p.receive_shared(&other, &peers_result(&cfg, 9, t, &["10.1.0.4"])));
    assert!(!p.receive_shared(&other, &peers_result(&cfg, 5, t + 10, &["10.1.0.4"])));
    // Same start, lower sequence.
    assert!(!p.receive_shared(&other, &peers_result(&cfg, 4, t + 10, &[])));
    let u = p.poll().await;
    assert_eq!(nodes(&u), ["app@10.1.0.4", "app@10.1.0.5"]);
    assert_eq!(u.snapshot.sources[0].shared_dropped, 3);
    // Same start, higher sequence: newer.
    assert!(p.receive_shared(&other, &peers_result(&cfg, 6, t + 10, &["10.1.0.4"])));
    let u = p.poll().await;
    assert_eq!(nodes(&u), ["app@10.1.0.4"]);
}

#[tokio::test]
async fn a_received_answer_is_named_by_this_nodes_naming_never_by_the_sender() {
    let cfg = config(1, ME);
    let id = cfg.sources[0].id();
    let other = other_poller_of(&id);
    let (mut p, _) = poller(&cfg, vec![vec![Step::Answer(Ok(vec![]))]]);
    p.share(vec![ME.into(), other.clone()]);
    let named = [Found {
        node: Some("evil@203.0.113.9".into()),
        ..found("10.1.0.4")
    }];
    let bytes = encode(
        sharing_key(&cfg),
        id.as_str(),
        1,
        now_ms() + 1,
        Outgoing::Peers(&named, &[]),
    )
    .unwrap();
    assert!(p.receive_shared(&other, &bytes));
    let u = p.poll().await;
    assert_eq!(nodes(&u), ["app@10.1.0.4"]);
}

#[tokio::test]
async fn a_failed_shared_result_keeps_the_peers_and_marks_the_source_failing() {
    let cfg = config(1, ME);
    let other = other_poller_of(&cfg.sources[0].id());
    let (mut p, fixed) = poller(&cfg, vec![vec![Step::Answer(Ok(vec![]))]]);
    p.share(vec![ME.into(), other.clone()]);
    let t = now_ms();
    p.receive_shared(&other, &peers_result(&cfg, 1, t, &["10.1.0.4", "10.1.0.5"]));
    let u = p.poll().await;
    assert_eq!(nodes(&u), ["app@10.1.0.4", "app@10.1.0.5"]);
    let id = cfg.sources[0].id();
    let failed = encode(
        sharing_key(&cfg),
        id.as_str(),
        2,
        t + 1,
        Outgoing::Failed(&throttled()),
    )
    .unwrap();
    assert!(p.receive_shared(&other, &failed));
    let u = p.poll().await;
    assert_eq!(nodes(&u), ["app@10.1.0.4", "app@10.1.0.5"], "kept");
    assert!(u.changes.removed.is_empty());
    let s = &u.snapshot.sources[0];
    assert!(!s.ok() && s.stale);
    assert_eq!(s.peers, 2);
    assert_eq!(s.error_kind, Some(ErrorKind::Throttled));
    assert!(s.error.as_deref().unwrap().contains("Rate exceeded"));
    assert_eq!(s.consecutive_failures, 1);
    assert_eq!(s.received_from.as_deref(), Some(other.as_str()));
    assert!(
        matches!(
            &u.changes.events[..],
            [Event::SourceFailing { kept_peers: 2, .. }]
        ),
        "{:?}",
        u.changes.events
    );
    assert_eq!(polls(&fixed[0]), 0, "no AWS call here");
}

#[tokio::test]
async fn results_with_another_key_from_another_node_or_for_no_source_are_dropped_and_counted() {
    let cfg = config(1, ME);
    let id = cfg.sources[0].id();
    let other = other_poller_of(&id);
    let (mut p, _) = poller(&cfg, vec![vec![Step::Answer(Ok(vec![]))]]);
    p.share(vec![ME.into(), other.clone(), "app@10.9.0.250".into()]);
    let elected = p.slots[0].share.poller.clone().unwrap();
    let not_elected = [ME, other.as_str(), "app@10.9.0.250"]
        .into_iter()
        .find(|m| *m != elected && *m != ME)
        .unwrap();
    let t = now_ms();
    let found = [found("10.1.0.4")];
    let with_key =
        |key: u64, source: &str| encode(key, source, 1, t, Outgoing::Peers(&found, &[])).unwrap();
    let key = sharing_key(&cfg);
    assert!(!p.receive_shared(&elected, &with_key(key ^ 1, id.as_str())));
    assert!(!p.receive_shared(not_elected, &with_key(key, id.as_str())));
    assert!(
        !p.receive_shared(ME, &with_key(key, id.as_str())),
        "from itself"
    );
    assert!(!p.receive_shared(&elected, &with_key(key, "ecs:eu-west-2/elsewhere")));
    assert!(!p.receive_shared(&elected, b"\xff\xff\xff garbage"));
    let u = p.poll().await;
    assert!(u.snapshot.peers.is_empty());
    assert_eq!(u.snapshot.sources[0].shared_dropped, 3);
    assert_eq!(u.snapshot.shared_dropped, 2, "no such source, undecodable");
    assert!(u.snapshot.sources[0].received_from.is_none());
    // The right one is applied.
    assert!(p.receive_shared(&elected, &with_key(key, id.as_str())));
}

#[tokio::test]
async fn a_same_result_refreshes_freshness_without_merging_again() {
    let cfg = config(1, ME);
    let id = cfg.sources[0].id();
    let other = other_poller_of(&id);
    let (mut p, fixed) = poller(&cfg, vec![vec![Step::Answer(Ok(vec![]))]]);
    p.share(vec![ME.into(), other.clone()]);
    let t = now_ms();
    p.receive_shared(&other, &peers_result(&cfg, 1, t, &["10.1.0.4", "10.1.0.5"]));
    let first = p.poll().await;
    let same = |seq: u64, base: u64| same_result(&cfg, seq, t + seq, base);
    for seq in 2..6 {
        age(&mut p, 150);
        assert!(!p.receive_shared(&other, &same(seq, 1)), "nothing changed");
        assert!(!p.changed, "not merged again");
        let u = p.poll().await;
        let shared_peers = first
            .snapshot
            .peers
            .iter()
            .zip(&u.snapshot.peers)
            .all(|(a, b)| Arc::ptr_eq(a, b));
        assert!(shared_peers && u.snapshot.peers.len() == 2);
        assert!(!u.snapshot.sources[0].poller_silent, "kept fresh");
    }
    assert_eq!(
        polls(&fixed[0]),
        0,
        "600 ms of 'same' results: never polled here"
    );
    // A "same" naming a full result this node never applied is dropped.
    assert!(!p.receive_shared(&other, &same(7, 6)));
    let u = p.poll().await;
    assert_eq!(u.snapshot.sources[0].shared_dropped, 1);
}

/// A poller that backs off after throttling (or whose poll is still running) tells its
/// followers it is alive each round, so none of them takes it for silent and polls on its
/// own: that would multiply the calls exactly when AWS throttles. Without the word from the
/// poller, the follower below polls in the third round of the poller's back-off.
#[tokio::test]
async fn a_poller_backing_off_keeps_its_followers_from_polling() {
    let leader_cfg = config(1, ME);
    let id = leader_cfg.sources[0].id();
    let follower = follower_of_me(&id);
    let follower_cfg = config(1, &follower);
    let members = vec![ME.to_string(), follower.clone()];
    let (mut l, lf) = poller(
        &leader_cfg,
        vec![vec![
            Step::Answer(Ok(vec![found("10.1.0.4")])),
            Step::Answer(Err(throttled())),
        ]],
    );
    let (mut f, ff) = poller(&follower_cfg, vec![vec![Step::Answer(Ok(vec![]))]]);
    l.share(members.clone());
    f.share(members);
    async fn relay(l: &mut Poller, f: &mut Poller) -> usize {
        let u = l.poll().await;
        for b in &u.shared {
            f.receive_shared(ME, b);
        }
        u.shared.len()
    }
    // The poller's first poll answers; its second is throttled: it backs off (held far in
    // the future here, as a long back-off would).
    assert_eq!(relay(&mut l, &mut f).await, 1);
    assert_eq!(nodes(&f.poll().await), ["app@10.1.0.4"]);
    assert_eq!(relay(&mut l, &mut f).await, 1);
    assert_eq!(polls(&lf[0]), 2);
    l.slots[0].health.backoff_until = Some(Instant::now() + Duration::from_secs(60));
    let u = f.poll().await;
    assert!(
        !u.snapshot.sources[0].ok(),
        "the poller's failure is the follower's"
    );
    assert_eq!(nodes(&u), ["app@10.1.0.4"], "a failure keeps the peers");
    for round in 0..4 {
        // Time passes on the follower: its last result, and its own back-off after the
        // received failure, grow older than two intervals.
        age(&mut f, 250);
        f.slots[0].health.backoff_until = None;
        assert_eq!(
            relay(&mut l, &mut f).await,
            1,
            "round {round}: a word from the poller"
        );
        let u = f.poll().await;
        assert_eq!(
            polls(&ff[0]),
            0,
            "round {round}: the follower polled on its own"
        );
        assert!(!u.snapshot.sources[0].poller_silent);
        assert_eq!(nodes(&u), ["app@10.1.0.4"]);
    }
    assert_eq!(polls(&lf[0]), 2, "the poller itself waits out its back-off");
    // Gone quiet for real (no word at all): the follower polls the source itself.
    age(&mut f, 250);
    f.poll().await;
    assert_eq!(polls(&ff[0]), 1);
}

/// AWS refusing the poller for its own credentials or IAM role (a task definition revision
/// with a broken role, mid-deploy) is not the followers' answer: the poller sends them
/// nothing, and after two intervals they poll the source themselves and keep finding tasks.
#[tokio::test]
async fn a_poller_refused_for_its_own_credentials_does_not_blind_its_followers() {
    async fn relay(l: &mut Poller, f: &mut Poller) -> usize {
        let u = l.poll().await;
        for b in &u.shared {
            f.receive_shared(ME, b);
        }
        u.shared.len()
    }
    for kind in [ErrorKind::AccessDenied, ErrorKind::Credentials] {
        let leader_cfg = config(1, ME);
        let id = leader_cfg.sources[0].id();
        let follower = follower_of_me(&id);
        let follower_cfg = config(1, &follower);
        let members = vec![ME.to_string(), follower.clone()];
        let refused = SourceError::new(
            kind,
            "ecs:ListTasks",
            "AccessDeniedException: not authorized to perform: ecs:ListTasks",
        );
        let (mut l, _) = poller(
            &leader_cfg,
            vec![vec![
                Step::Answer(Ok(vec![found("10.1.0.4")])),
                Step::Answer(Err(refused)),
            ]],
        );
        let (mut f, ff) = poller(
            &follower_cfg,
            vec![vec![Step::Answer(Ok(vec![
                found("10.1.0.4"),
                found("10.1.0.5"),
            ]))]],
        );
        l.share(members.clone());
        f.share(members);
        assert_eq!(relay(&mut l, &mut f).await, 1);
        assert_eq!(nodes(&f.poll().await), ["app@10.1.0.4"]);
        // Refused: nothing is sent, and the follower's source stays healthy.
        assert_eq!(relay(&mut l, &mut f).await, 0, "{kind}: not shared");
        let u = f.poll().await;
        assert!(
            u.snapshot.sources[0].ok(),
            "{kind}: not the follower's failure"
        );
        assert_eq!(polls(&ff[0]), 0, "{kind}: not yet silent");
        // Two intervals without a word: the follower polls itself, and finds the new task.
        age(&mut f, 250);
        assert_eq!(relay(&mut l, &mut f).await, 0);
        // Results are ordered by the millisecond their poll started: the follower's own must
        // start in a later one than the poller's result it applied.
        tokio::time::sleep(Duration::from_millis(2)).await;
        let u = f.poll().await;
        assert_eq!(polls(&ff[0]), 1, "{kind}");
        let s = &u.snapshot.sources[0];
        assert!(s.ok() && s.poller_silent, "{kind}: {s:?}");
        assert_eq!(nodes(&u), ["app@10.1.0.4", "app@10.1.0.5"], "{kind}");
    }
}

#[tokio::test]
async fn two_pollers_wired_to_each_other_agree_and_the_follower_never_calls_aws() {
    let cfg_me = config(2, ME);
    let ids: Vec<SourceId> = cfg_me.sources.iter().map(SourceConfig::id).collect();
    // A partner that polls source 0 (source 1 goes to whichever the election says).
    let other = other_poller_of(&ids[0]);
    let cfg_other = config(2, &other);
    let scripts = || {
        vec![
            vec![
                Step::Answer(Ok(vec![found("10.1.0.4")])),
                Step::Answer(Ok(vec![found("10.1.0.4"), found("10.1.0.5")])),
                Step::Answer(Ok(vec![found("10.1.0.5")])),
                Step::Answer(Err(throttled())),
            ],
            vec![
                Step::Answer(Ok(vec![found("10.2.0.4")])),
                Step::Answer(Ok(vec![found("10.2.0.4"), found("10.2.0.6")])),
            ],
        ]
    };
    let (mut me, my_sources) = poller(&cfg_me, scripts());
    let (mut them, their_sources) = poller(&cfg_other, scripts());
    let members = vec![ME.to_string(), other.clone()];
    me.share(members.clone());
    them.share(members);
    let mut full = 0;
    let mut same = 0;
    for round in 0..6 {
        let a = them.poll().await;
        for r in &a.shared {
            match crate::sharing::decode(r).unwrap().answer {
                crate::sharing::SharedAnswer::Same { .. } => same += 1,
                _ => full += 1,
            }
            me.receive_shared(&other, r);
        }
        let b = me.poll().await;
        for r in &b.shared {
            match crate::sharing::decode(r).unwrap().answer {
                crate::sharing::SharedAnswer::Same { .. } => same += 1,
                _ => full += 1,
            }
            them.receive_shared(ME, r);
        }
        // Their state with my results applied (published without polling).
        let a = them.publish(Instant::now());
        assert_eq!(
            nodes(&a),
            nodes(&b),
            "round {round}: both nodes see the same peers"
        );
        assert_eq!(
            a.snapshot
                .sources
                .iter()
                .map(|s| s.ok())
                .collect::<Vec<_>>(),
            b.snapshot
                .sources
                .iter()
                .map(|s| s.ok())
                .collect::<Vec<_>>()
        );
    }
    assert_eq!(
        polls(&my_sources[0]),
        0,
        "the follower made no call for source 0"
    );
    assert!(
        polls(&their_sources[0]) >= 4,
        "the poller polled it (backing off once throttled)"
    );
    for (i, id) in ids.iter().enumerate() {
        let led_by_me = me.slots[i].share.poller.is_none();
        assert_eq!(
            led_by_me,
            them.slots[i].share.poller.is_some(),
            "{id}: one poller, agreed"
        );
        let follower = if led_by_me {
            &their_sources[i]
        } else {
            &my_sources[i]
        };
        assert_eq!(polls(follower), 0, "{id}: its follower made no call");
    }
    assert!(
        full >= 3 && same >= 1,
        "changes sent in full, repeats as 'same': {full} full, {same} same"
    );
    let me_last = me.poll().await;
    assert!(
        !me_last.snapshot.sources[0].ok(),
        "the poller's failure reached the follower"
    );
    assert_eq!(
        nodes(&me_last),
        ["app@10.1.0.5", "app@10.2.0.4", "app@10.2.0.6"]
    );
}

#[tokio::test]
async fn a_received_result_is_published_at_once_without_a_call() {
    let mut cfg = config(1, ME);
    cfg.polling_interval = Duration::from_secs(3600);
    let other = other_poller_of(&cfg.sources[0].id());
    let (p, fixed) = poller(&cfg, vec![vec![Step::Answer(Ok(vec![found("10.1.0.4")]))]]);
    let mut h = p.spawn();
    let first = tokio::time::timeout(Duration::from_secs(5), h.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(nodes(&first), ["app@10.1.0.4"]);
    h.share(vec![ME.into(), other.clone()]).unwrap();
    h.receive_shared(
        other.clone(),
        peers_result(&cfg, 1, now_ms() + 1000, &["10.1.0.4", "10.1.0.7"]),
    )
    .unwrap();
    // The next round is an hour away: an update within seconds is the received result's.
    let u = loop {
        let u = tokio::time::timeout(Duration::from_secs(5), h.next())
            .await
            .unwrap()
            .unwrap();
        if !u.changes.added.is_empty() {
            break u;
        }
    };
    assert_eq!(nodes(&u), ["app@10.1.0.4", "app@10.1.0.7"]);
    assert_eq!(
        u.snapshot.sources[0].received_from.as_deref(),
        Some(other.as_str())
    );
    assert_eq!(polls(&fixed[0]), 1, "no call for it");
    h.stop().await;
}

#[tokio::test]
async fn the_poller_sends_changed_answers_in_full_and_repeats_as_same() {
    let cfg = config(1, ME);
    let id = cfg.sources[0].id();
    // A partner that does NOT poll the source: this node does.
    let other = follower_of_me(&id);
    let (mut p, _) = poller(
        &cfg,
        vec![vec![
            Step::Answer(Ok(vec![found("10.1.0.4")])),
            Step::Answer(Ok(vec![found("10.1.0.4")])),
            Step::Answer(Ok(vec![found("10.1.0.4")])),
            Step::Answer(Ok(vec![found("10.1.0.5")])),
        ]],
    );
    let alone = p.poll().await;
    assert!(alone.shared.is_empty(), "alone: nothing to share");
    p.share(vec![ME.into(), other.clone()]);
    let decoded = |u: &Update| {
        assert_eq!(u.shared.len(), 1);
        crate::sharing::decode(&u.shared[0]).unwrap()
    };
    let r1 = decoded(&p.poll().await);
    assert!(matches!(&r1.answer, SharedAnswer::Peers(f, _) if f.len() == 1));
    assert_eq!(
        (r1.key, r1.source.as_str()),
        (sharing_key(&cfg), id.as_str())
    );
    let r2 = decoded(&p.poll().await);
    assert_eq!(r2.answer, SharedAnswer::Same { base: r1.seq });
    assert!(r2.seq > r1.seq);
    let r3 = decoded(&p.poll().await);
    assert!(matches!(&r3.answer, SharedAnswer::Peers(f, _) if f[0].ip.to_string() == "10.1.0.5"));
    // A new member gets a full result, though the answer did not change.
    p.share(vec![ME.into(), other, "app@10.9.0.250".into()]);
    if p.slots[0].share.poller.is_none() {
        let r4 = decoded(&p.poll().await);
        assert!(matches!(r4.answer, SharedAnswer::Peers(..)));
    }
}
