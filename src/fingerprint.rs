//! Fingerprints of a source's complete answer, so that a round in which no source's answer
//! changed costs a comparison per source instead of naming, merging and diffing every peer again.

use std::hash::BuildHasher;

use crate::peer::Found;

/// Puts a source's complete answer in its canonical order (by address, then every other field:
/// AWS does not promise an order, so a reordered listing is the same answer) and returns its
/// fingerprint: a 64-bit foldhash (quality variant, fixed seed) of every field of every peer.
/// Equal answers have equal fingerprints; a changed answer keeps its fingerprint with
/// probability about 2⁻⁶⁴ (the inputs are AWS's, not an adversary's). foldhash, not std's
/// SipHash: at 10,000 peers SipHash was a third of an unchanged round. Not promised stable
/// across foldhash versions: never persist it.
pub(crate) fn answer(found: &mut [Found]) -> u64 {
    found.sort_unstable();
    foldhash::quality::FixedState::default().hash_one(&*found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(ip: &str, arn: &str) -> Found {
        Found {
            task_arn: Some(arn.into()),
            ..Found::at(ip.parse().unwrap())
        }
    }

    #[test]
    fn order_does_not_matter_and_every_field_does() {
        let mut a = vec![found("10.0.0.2", "b"), found("10.0.0.1", "a")];
        let mut b = vec![found("10.0.0.1", "a"), found("10.0.0.2", "b")];
        assert_eq!(answer(&mut a), answer(&mut b));
        assert_eq!(a, b, "sorted into one canonical order");
        let mut draining = b.clone();
        draining[1].draining = true;
        assert_ne!(answer(&mut draining), answer(&mut b));
        let mut other_task = vec![found("10.0.0.1", "a"), found("10.0.0.2", "c")];
        assert_ne!(answer(&mut other_task), answer(&mut b));
        assert_ne!(answer(&mut b[..1]), answer(&mut b));
    }

    #[test]
    fn every_field_and_where_text_ends_counts() {
        let base = Found {
            task_arn: Some("arn/a".into()),
            ..Found::at("10.0.0.1".parse().unwrap())
        };
        let fp = |f: &Found| answer(&mut [f.clone()]);
        let text = Some("x".to_string());
        let variants = [
            Found {
                ip: "10.0.0.2".parse().unwrap(),
                ..base.clone()
            },
            Found {
                ip: "::ffff:10.0.0.1".parse().unwrap(),
                ..base.clone()
            },
            Found {
                port: Some(0),
                ..base.clone()
            },
            Found {
                port: Some(9000),
                ..base.clone()
            },
            Found {
                node: text.clone(),
                ..base.clone()
            },
            Found {
                task_arn: None,
                ..base.clone()
            },
            Found {
                task_arn: Some("arn/b".into()),
                ..base.clone()
            },
            Found {
                instance_id: text.clone(),
                ..base.clone()
            },
            Found {
                availability_zone: text.clone(),
                ..base.clone()
            },
            Found {
                started_at: crate::peer::StartedAt::from_sdk(
                    &aws_smithy_types::DateTime::from_secs(1),
                ),
                ..base.clone()
            },
            Found {
                health: text.clone(),
                ..base.clone()
            },
            Found {
                private_dns_name: text.clone(),
                ..base.clone()
            },
            Found {
                ec2_instance_id: text.clone(),
                ..base.clone()
            },
            Found {
                container_instance: text.clone(),
                ..base.clone()
            },
            Found {
                draining: true,
                ..base.clone()
            },
            // The same bytes split differently between two fields.
            Found {
                node: Some("arn".into()),
                task_arn: Some("/a".into()),
                ..base.clone()
            },
            Found {
                node: Some("arn/".into()),
                task_arn: Some("a".into()),
                ..base.clone()
            },
        ];
        let mut seen = vec![fp(&base)];
        for v in &variants {
            let f = fp(v);
            assert!(!seen.contains(&f), "{v:?} has a fingerprint already seen");
            seen.push(f);
        }
    }
}
