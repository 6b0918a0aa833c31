//! Output: tables for people, JSON for programs. Results go to stdout only.

use std::io::{self, Write};

use ecs_peers::config::Scope;
use ecs_peers::{Event, Snapshot, SourceStatus, Update, KEYS};
use serde_json::json;

/// `ecs-peers keys`: the key table that also drives validation errors and the docs.
pub fn keys(out: &mut impl Write) -> io::Result<()> {
    for scope in Scope::ALL {
        writeln!(out, "{}:", scope.title())?;
        for k in KEYS.iter().filter(|k| k.scope == scope) {
            writeln!(
                out,
                "  {:<17} {:<38} default: {}",
                k.key,
                k.kind(),
                k.default_text()
            )?;
            writeln!(out, "  {:<17} {}", "", k.doc)?;
        }
        writeln!(out)?;
    }
    Ok(())
}

/// `list --json`.
pub fn json(out: &mut impl Write, snapshot: &Snapshot) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, snapshot)?;
    writeln!(out)
}

/// Left-aligned columns, two spaces apart.
fn columns(out: &mut impl Write, rows: &[Vec<String>]) -> io::Result<()> {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

fn or_dash(v: &Option<impl std::fmt::Display>) -> String {
    v.as_ref().map_or_else(|| "-".into(), |v| v.to_string())
}

/// `list`: peers, then sources, then conflicts.
pub fn table(out: &mut impl Write, s: &Snapshot) -> io::Result<()> {
    if s.peers.is_empty() {
        writeln!(out, "No peers.")?;
    } else {
        let mut rows = vec![[
            "NODE", "ADDRESS", "REGION", "AZ", "STARTED", "STATE", "SOURCE",
        ]
        .map(String::from)
        .to_vec()];
        for p in &s.peers {
            rows.push(vec![
                p.node.clone(),
                p.address().to_string(),
                p.region.to_string(),
                or_dash(&p.availability_zone),
                or_dash(&p.started_at),
                if p.draining {
                    "draining".into()
                } else {
                    "running".into()
                },
                p.source.to_string(),
            ]);
        }
        columns(out, &rows)?;
    }
    if let Some(me) = &s.local {
        writeln!(out, "(this node, {}, is not listed)", me.node)?;
    }
    writeln!(out)?;
    let mut rows = vec![["SOURCE", "STATUS", "PEERS", "API CALLS", "DETAIL"]
        .map(String::from)
        .to_vec()];
    for src in &s.sources {
        rows.push(vec![
            src.id.to_string(),
            src.state.word().to_string(),
            src.peers.to_string(),
            src.api_calls.to_string(),
            source_detail(src),
        ]);
    }
    columns(out, &rows)?;
    for c in &s.conflicts {
        let claims: Vec<String> = c
            .claims
            .iter()
            .map(|k| format!("{} ({})", k.source, k.region))
            .collect();
        writeln!(
            out,
            "\nCONFLICT {}: reported by {}. The same address in two regions means overlapping VPC CIDRs, which peering cannot route; it is not used as a peer. Fix: give each region's VPC its own CIDR.",
            c.ip,
            claims.join(" and ")
        )?;
    }
    Ok(())
}

fn source_detail(src: &SourceStatus) -> String {
    let failure = match (&src.error, src.is_failing()) {
        (Some(e), true) if src.peers > 0 => {
            format!("keeping {} last-known peers; {e}", src.peers)
        }
        (Some(e), true) => e.clone(),
        _ => match (&src.absent, &src.probe_at) {
            (Some(why), Some(at)) => format!("{why}; probed again at {at}"),
            (Some(why), None) => why.clone(),
            (None, _) => String::new(),
        },
    };
    let skipped = src.skipped.iter().map(|s| {
        format!(
            "{} (e.g. {}): {}. Fix: {}",
            s.counted(),
            s.example(),
            s.message,
            s.fix
        )
    });
    std::iter::once(failure)
        .chain(std::iter::once(sharing_detail(src)))
        .filter(|f| !f.is_empty())
        .chain(skipped)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Fleet-shared polling, as the core reports it: who polls the source and where its result
/// came from (nothing when this node polls it and nothing was dropped).
fn sharing_detail(src: &SourceStatus) -> String {
    let mut parts = Vec::new();
    match (&src.poller, src.poller_silent) {
        (Some(p), true) => parts.push(format!(
            "{p} (its poller) sent nothing for two intervals: polled here"
        )),
        (Some(p), false) => parts.push(format!("polled by {p}")),
        (None, _) => {}
    }
    if let Some(from) = &src.received_from {
        let at = src
            .received_at
            .as_deref()
            .map(|t| format!(" at {t}"))
            .unwrap_or_default();
        parts.push(format!("result from {from}{at}"));
    }
    if src.shared_dropped > 0 {
        parts.push(format!("{} shared result(s) dropped", src.shared_dropped));
    }
    parts.join(", ")
}

/// `watch`: prints one update's changes and membership events, as the core reports them.
pub fn watch(out: &mut impl Write, u: &Update, as_json: bool, every_poll: bool) -> io::Result<()> {
    {
        let at = &u.snapshot.taken_at;
        let mut events: Vec<(serde_json::Value, String)> = Vec::new();
        let status = |id: &ecs_peers::SourceId| u.snapshot.sources.iter().find(|s| &s.id == id);
        let mut later: Vec<(serde_json::Value, String)> = Vec::new();
        for event in &u.changes.events {
            match event {
                Event::SourceFailing { source, .. } => {
                    let src = status(source);
                    events.push((
                        json!({"event": "source_failing", "at": at, "source": src}),
                        format!(
                            "{at} ! {source} failing: {}",
                            src.map(source_detail).unwrap_or_default()
                        ),
                    ));
                }
                Event::SourceRecovered { source, peers, .. } => events.push((
                    json!({"event": "source_recovered", "at": at, "source": status(source)}),
                    format!("{at} ok {source} recovered ({peers} peers)"),
                )),
                Event::ConflictFound { conflict } => later.push((
                    json!({"event": "conflict_found", "at": at, "conflict": conflict}),
                    format!("{at} ! {event}"),
                )),
                Event::LocalLeft { source } => later.push((
                    json!({"event": "local_left", "at": at, "source": source}),
                    format!("{at} - this node {event}"),
                )),
                other => {
                    // An event kind this binary does not render specially: its data as is.
                    let mut value = json!(other);
                    value["at"] = json!(at);
                    later.push((value, format!("{at} {other}")));
                }
            }
        }
        for (event, sign, peers) in [
            ("added", "+", &u.changes.added),
            ("removed", "-", &u.changes.removed),
            ("draining", "~", &u.changes.draining),
        ] {
            for p in peers {
                events.push((
                    json!({"event": event, "at": at, "peer": p}),
                    format!(
                        "{at} {sign} {}  {}  {}{}",
                        p.node,
                        p.region,
                        p.source,
                        if event == "draining" {
                            "  draining"
                        } else {
                            ""
                        }
                    ),
                ));
            }
        }
        events.extend(later);
        if every_poll {
            let s = &u.snapshot;
            let calls: u64 = s.sources.iter().map(|x| x.api_calls).sum();
            events.push((
                json!({"event": "snapshot", "at": at, "snapshot": &**s}),
                format!(
                    "{at} poll {}: {} peers, {}/{} sources ok, {} API calls",
                    s.poll,
                    s.peers.len(),
                    s.sources.iter().filter(|x| x.ok()).count(),
                    s.sources.len(),
                    calls
                ),
            ));
        }
        for (value, text) in events {
            if as_json {
                serde_json::to_writer(&mut *out, &value)?;
                writeln!(out)?;
            } else {
                writeln!(out, "{text}")?;
            }
        }
        Ok(())
    }
}

/// `doctor`: one row per peer, then the diagnoses.
pub fn doctor(out: &mut impl Write, r: &ecs_peers::doctor::Report) -> io::Result<()> {
    use ecs_peers::epmd::{Handshake, Reach};
    let reach = |x: &Reach| match x {
        Reach::Open { rtt_ms } => format!("ok {rtt_ms:.1} ms"),
        Reach::Refused => "refused".into(),
        Reach::TimedOut => "timed out".into(),
        Reach::NoRoute => "no route".into(),
        Reach::Failed { error } => format!("failed: {error}"),
    };
    if r.peers.is_empty() {
        writeln!(out, "No peers to check.")?;
    } else {
        let mut rows = vec![[
            "NODE",
            "REGION",
            "EPMD 4369",
            "REGISTERED NAMES",
            "DIST PORT",
            "COOKIE",
        ]
        .map(String::from)
        .to_vec()];
        // TLS distribution: what each peer's certificate says (ecs_peers::doctor::TlsCheck::summary).
        let tls = r.peers.iter().any(|p| p.tls.is_some());
        if tls {
            rows[0].push("TLS".into());
        }
        for p in &r.peers {
            let names: Vec<String> = p
                .epmd
                .iter()
                .flat_map(|e| &e.names)
                .map(|(n, port)| format!("{n}:{port}"))
                .collect();
            rows.push(vec![
                p.node.clone(),
                p.region.clone(),
                p.epmd
                    .as_ref()
                    .map_or("not asked".into(), |e| reach(&e.reach)),
                if names.is_empty() {
                    "-".into()
                } else {
                    names.join(" ")
                },
                match (&p.dist_port, &p.dist) {
                    (Some(port), Some(d)) => format!("{port} {}", reach(d)),
                    _ => "-".into(),
                },
                match &p.handshake {
                    Some(Handshake::Ok) => "ok".into(),
                    Some(Handshake::CookieMismatch) => "MISMATCH".into(),
                    Some(Handshake::Failed { .. }) => "failed".into(),
                    None => "-".into(),
                },
            ]);
            if tls {
                if let Some(row) = rows.last_mut() {
                    row.push(p.tls.as_ref().map_or("-".into(), |t| t.summary()));
                }
            }
        }
        columns(out, &rows)?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "Security group: the nodes need {}.\n",
        r.security_group_rule
    )?;
    if r.diagnoses.is_empty() {
        let ok = r.sources.iter().filter(|s| s.ok()).count();
        writeln!(
            out,
            "No problems found: {} peers checked, {ok}/{} sources answering.",
            r.peers.len(),
            r.sources.len()
        )?;
        return Ok(());
    }
    writeln!(
        out,
        "{} problem{} found:",
        r.diagnoses.len(),
        if r.diagnoses.len() == 1 { "" } else { "s" }
    )?;
    for (i, d) in r.diagnoses.iter().enumerate() {
        writeln!(out, "{}. [{}] {}: {}", i + 1, d.code, d.subject, d.problem)?;
        writeln!(out, "   Fix: {}", d.fix)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_lists_every_key_under_its_scope_with_type_and_default() {
        let mut out = Vec::new();
        keys(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let mut scope = None;
        let mut seen = Vec::new();
        for line in text.lines() {
            if let Some(s) = Scope::ALL
                .into_iter()
                .find(|s| line == format!("{}:", s.title()))
            {
                scope = Some(s);
            } else if let Some(k) = KEYS
                .iter()
                .find(|k| Some(k.scope) == scope && line.split_whitespace().next() == Some(k.key))
            {
                assert!(line.contains(&k.kind()), "{line}");
                assert!(
                    line.ends_with(&format!("default: {}", k.default_text())),
                    "{line}"
                );
                seen.push((k.scope, k.key));
            }
        }
        assert_eq!(seen.len(), KEYS.len(), "{text}");
        assert!(text.contains("  max_attempts      integer 1..10"), "{text}");
    }

    fn status() -> SourceStatus {
        let config = ecs_peers::Config::from_value(serde_json::json!({"node_basename": "app",
            "sources": [{"type": "ecs", "region": "eu-west-2", "cluster": "web"}]}))
        .unwrap();
        SourceStatus {
            state: ecs_peers::SourceState::Ok,
            peers: 2,
            ..SourceStatus::pending(&config.sources[0])
        }
    }

    #[test]
    fn the_detail_says_who_polls_a_source_and_where_its_result_came_from() {
        assert_eq!(source_detail(&status()), "");
        let followed = SourceStatus {
            poller: Some("app@10.0.1.5".into()),
            received_from: Some("app@10.0.1.5".into()),
            received_at: Some("2026-11-30T00:00:00Z".into()),
            shared_dropped: 2,
            ..status()
        };
        assert_eq!(
            source_detail(&followed),
            "polled by app@10.0.1.5, result from app@10.0.1.5 at 2026-11-30T00:00:00Z, 2 shared result(s) dropped"
        );
        let silent = SourceStatus {
            poller: Some("app@10.0.1.5".into()),
            poller_silent: true,
            ..status()
        };
        assert_eq!(
            source_detail(&silent),
            "app@10.0.1.5 (its poller) sent nothing for two intervals: polled here"
        );
    }
}
