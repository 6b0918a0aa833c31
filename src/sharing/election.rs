//! Who polls a source: rendezvous (highest-random-weight) hashing over the sharing group,
//! among the members in the source's own region when there are any. Deterministic from the
//! member set and their regions, so every member that sees the same group agrees without
//! talking, and a member joining moves only the sources it wins (about 1/N of them).

use xxhash_rust::xxh3::xxh3_64;

/// The rendezvous score of `node` for `source`: XXH3-64 of the source id, a 0xff byte (never in
/// UTF-8, so no two pairs give the same bytes) and the node name.
fn score(source: &str, node: &str) -> u64 {
    let mut bytes = Vec::with_capacity(source.len() + 1 + node.len());
    bytes.extend_from_slice(source.as_bytes());
    bytes.push(0xff);
    bytes.extend_from_slice(node.as_bytes());
    xxh3_64(&bytes)
}

/// The member that polls `source` (in `region`): among the members whose region (`region_of`,
/// `None` when unknown) is the source's, or among all members when none is, the one with the
/// highest [`score`] (ties, which need a hash collision, go to the greater name). `None` only
/// when `members` is empty. Any order of `members` gives the same answer.
pub(crate) fn elect<'m>(
    source: &str,
    region: &str,
    members: &'m [String],
    region_of: impl Fn(&str) -> Option<String>,
) -> Option<&'m str> {
    let local: Vec<&'m str> = members
        .iter()
        .map(String::as_str)
        .filter(|m| region_of(m).as_deref() == Some(region))
        .collect();
    let pool: Vec<&'m str> = if local.is_empty() {
        members.iter().map(String::as_str).collect()
    } else {
        local
    };
    pool.into_iter()
        .max_by(|a, b| score(source, a).cmp(&score(source, b)).then(a.cmp(b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn no_region(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn the_election_is_deterministic_and_agrees_across_member_orders() {
        let a = members(&[
            "app@10.0.0.1",
            "app@10.0.0.2",
            "app@10.0.0.3",
            "app@10.0.0.4",
        ]);
        let mut b = a.clone();
        b.reverse();
        let mut c = a.clone();
        c.rotate_left(1);
        let mut winners = std::collections::BTreeSet::new();
        for i in 0..100 {
            let id = format!("ecs:eu-west-2/c{i}");
            let w = elect(&id, "eu-west-2", &a, no_region).unwrap();
            assert_eq!(Some(w), elect(&id, "eu-west-2", &b, no_region));
            assert_eq!(Some(w), elect(&id, "eu-west-2", &c, no_region));
            winners.insert(w.to_string());
        }
        assert_eq!(winners.len(), 4, "100 sources spread over all 4 members");
        // Pinned: XXH3-64 is specified, so this is the answer on every build and machine.
        assert_eq!(
            elect("ecs:eu-west-2/web/api", "eu-west-2", &a, no_region),
            Some(PINNED_WINNER)
        );
        assert_eq!(elect("x", "r", &[], no_region), None);
    }

    /// The winner of `ecs:eu-west-2/web/api` among app@10.0.0.1..4, computed once.
    const PINNED_WINNER: &str = "app@10.0.0.3";

    #[test]
    fn the_election_prefers_a_member_in_the_sources_region() {
        let all = members(&["a@1", "b@2", "c@3", "d@4", "e@5", "f@6"]);
        let region = |m: &str| Some(if m == "e@5" { "us-west-2" } else { "eu-west-2" }.into());
        for i in 0..50 {
            let id = format!("ecs:us-west-2/c{i}");
            assert_eq!(elect(&id, "us-west-2", &all, region), Some("e@5"));
        }
        // No member in the region: any member may win.
        let mut winners = std::collections::BTreeSet::new();
        for i in 0..50 {
            let id = format!("ecs:ap-south-1/c{i}");
            winners.insert(elect(&id, "ap-south-1", &all, region).unwrap().to_string());
        }
        assert!(winners.len() > 3, "{winners:?}");
    }

    #[test]
    fn a_member_joining_moves_about_one_nth_of_the_sources() {
        let before = members(&[
            "app@10.0.0.1",
            "app@10.0.0.2",
            "app@10.0.0.3",
            "app@10.0.0.4",
        ]);
        let mut after = before.clone();
        after.push("app@10.0.0.5".into());
        let n = 2000;
        let mut moved = 0;
        for i in 0..n {
            let id = format!("ecs:eu-west-2/c{i}");
            let b = elect(&id, "eu-west-2", &before, no_region).unwrap();
            let a = elect(&id, "eu-west-2", &after, no_region).unwrap();
            if a != b {
                assert_eq!(a, "app@10.0.0.5", "a source moves only to the new member");
                moved += 1;
            }
        }
        // Expected n/5 = 400; a modulo-style assignment would move about 4/5 of them.
        assert!((300..=500).contains(&moved), "moved {moved} of {n}");
    }
}
