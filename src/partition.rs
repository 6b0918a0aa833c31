//! AWS partitions: which partition a region belongs to, so that a region name is recognised
//! wherever AWS runs ECS, and every ARN the crate prints (an IAM fix, an example) is written in
//! the region's own partition (`arn:aws-cn:` in China, `arn:aws-us-gov:` in GovCloud, ...): a
//! policy condition on `arn:aws:ecs:cn-north-1:…` never matches anything.
//!
//! The table is the AWS SDK's own endpoint partition data (`aws-sdk-ecs`'s `endpoint_lib.rs`),
//! which the SDK does not expose as public API; a test reads the SDK crate's copy through
//! `cargo metadata` and fails when it differs from this one.

use std::sync::OnceLock;

use regex_lite::Regex;

/// One partition as the SDK's partition data lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Partition {
    /// The partition's id, which is also the partition field of its ARNs (`aws-cn`).
    pub(crate) id: &'static str,
    /// The SDK's pattern for region names of this partition, including regions not launched
    /// when the SDK was built.
    pub(crate) region_regex: &'static str,
    /// The regions the SDK knows, including the SDK's `*-global` endpoint aliases.
    pub(crate) regions: &'static [&'static str],
}

/// The SDK's partitions, in the SDK's order (`aws` first: the fallback).
pub(crate) static PARTITIONS: &[Partition] = &[
    Partition {
        id: "aws",
        region_regex: r"^(us|eu|ap|sa|ca|me|af|il|mx)\-\w+\-\d+$",
        regions: &[
            "af-south-1",
            "ap-east-1",
            "ap-east-2",
            "ap-northeast-1",
            "ap-northeast-2",
            "ap-northeast-3",
            "ap-south-1",
            "ap-south-2",
            "ap-southeast-1",
            "ap-southeast-2",
            "ap-southeast-3",
            "ap-southeast-4",
            "ap-southeast-5",
            "ap-southeast-6",
            "ap-southeast-7",
            "aws-global",
            "ca-central-1",
            "ca-west-1",
            "eu-central-1",
            "eu-central-2",
            "eu-north-1",
            "eu-south-1",
            "eu-south-2",
            "eu-west-1",
            "eu-west-2",
            "eu-west-3",
            "il-central-1",
            "me-central-1",
            "me-south-1",
            "mx-central-1",
            "sa-east-1",
            "us-east-1",
            "us-east-2",
            "us-west-1",
            "us-west-2",
        ],
    },
    Partition {
        id: "aws-cn",
        region_regex: r"^cn\-\w+\-\d+$",
        regions: &["aws-cn-global", "cn-north-1", "cn-northwest-1"],
    },
    Partition {
        id: "aws-eusc",
        region_regex: r"^eusc\-(de)\-\w+\-\d+$",
        regions: &["eusc-de-east-1"],
    },
    Partition {
        id: "aws-iso",
        region_regex: r"^us\-iso\-\w+\-\d+$",
        regions: &["aws-iso-global", "us-iso-east-1", "us-iso-west-1"],
    },
    Partition {
        id: "aws-iso-b",
        region_regex: r"^us\-isob\-\w+\-\d+$",
        regions: &["aws-iso-b-global", "us-isob-east-1", "us-isob-west-1"],
    },
    Partition {
        id: "aws-iso-e",
        region_regex: r"^eu\-isoe\-\w+\-\d+$",
        regions: &["aws-iso-e-global", "eu-isoe-west-1"],
    },
    Partition {
        id: "aws-iso-f",
        region_regex: r"^us\-isof\-\w+\-\d+$",
        regions: &["aws-iso-f-global", "us-isof-east-1", "us-isof-south-1"],
    },
    Partition {
        id: "aws-us-gov",
        region_regex: r"^us\-gov\-\w+\-\d+$",
        regions: &["aws-us-gov-global", "us-gov-east-1", "us-gov-west-1"],
    },
];

/// Each partition's compiled `region_regex`, in [`PARTITIONS`]' order. A pattern that does not
/// compile matches nothing (a test checks that every one compiles).
fn region_regexes() -> &'static [(&'static Partition, Regex)] {
    static COMPILED: OnceLock<Vec<(&'static Partition, Regex)>> = OnceLock::new();
    COMPILED.get_or_init(|| {
        PARTITIONS
            .iter()
            .filter_map(|p| Regex::new(p.region_regex).ok().map(|r| (p, r)))
            .collect()
    })
}

/// The SDK's `*-global` names are endpoint aliases for global services, not regions a cluster
/// or a task lives in: they never appear in an ECS ARN.
fn is_global_alias(region: &str) -> bool {
    region.ends_with("-global")
}

/// The partition a region is known or patterned to belong to, by the SDK's rule: a listed
/// region first, then the first partition whose `region_regex` matches.
pub(crate) fn known(region: &str) -> Option<&'static Partition> {
    PARTITIONS
        .iter()
        .find(|p| p.regions.contains(&region))
        .or_else(|| {
            region_regexes()
                .iter()
                .find(|(_, r)| r.is_match(region))
                .map(|(p, _)| *p)
        })
}

/// The partition of `region`; like the SDK, `aws` for a region no partition claims.
pub(crate) fn of_region(region: &str) -> &'static Partition {
    known(region).unwrap_or(&PARTITIONS[0])
}

/// Whether `region` is a region of some partition (listed or matching its pattern), not counting
/// the SDK's `*-global` endpoint aliases.
pub(crate) fn is_region(region: &str) -> bool {
    !is_global_alias(region) && known(region).is_some()
}

/// An ARN in `region`'s partition: `arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE`.
///
/// (`account` may be `*`, as in an IAM resource pattern.)
pub(crate) fn arn(service: &str, region: &str, account: &str, resource: &str) -> String {
    format!(
        "arn:{}:{service}:{region}:{account}:{resource}",
        of_region(region).id
    )
}

/// The account of an ARN, or `*` (any account, as an IAM resource pattern writes it) when `s` is
/// a plain name or an ARN without one: what an AccessDenied fix names.
pub(crate) fn account_or_any(s: &str) -> &str {
    Arn::parse(s)
        .map(|a| a.account)
        .filter(|a| !a.is_empty())
        .unwrap_or("*")
}

/// The fields of an ARN `arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE`, any partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Arn<'a> {
    pub(crate) partition: &'a str,
    pub(crate) service: &'a str,
    pub(crate) region: &'a str,
    pub(crate) account: &'a str,
    /// `cluster/web`, `task/web/ID`, `task-definition/api:7`, ... (may hold `:` and `/`).
    pub(crate) resource: &'a str,
}

impl<'a> Arn<'a> {
    /// Splits an ARN; `None` when `s` does not start with `arn:` or has fewer than six fields.
    /// Fields are not checked here: callers check what they use.
    pub(crate) fn parse(s: &'a str) -> Option<Self> {
        let mut parts = s.strip_prefix("arn:")?.splitn(5, ':');
        Some(Arn {
            partition: parts.next()?,
            service: parts.next()?,
            region: parts.next()?,
            account: parts.next()?,
            resource: parts.next()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_region_pattern_compiles() {
        assert_eq!(region_regexes().len(), PARTITIONS.len());
    }

    #[test]
    fn every_region_of_every_partition_is_a_region_of_that_partition() {
        for p in PARTITIONS {
            for r in p.regions.iter().filter(|r| !is_global_alias(r)) {
                assert!(is_region(r), "{r} of {}", p.id);
                assert_eq!(of_region(r).id, p.id, "{r}");
            }
        }
    }

    #[test]
    fn new_regions_follow_their_partition_pattern() {
        for (region, id) in [
            ("eu-west-9", "aws"),
            ("cn-south-1", "aws-cn"),
            ("us-gov-north-1", "aws-us-gov"),
            ("eusc-de-west-1", "aws-eusc"),
            ("us-isob-south-1", "aws-iso-b"),
        ] {
            assert!(is_region(region), "{region}");
            assert_eq!(of_region(region).id, id, "{region}");
        }
        for not in [
            "aws-global",
            "aws-cn-global",
            "EU",
            "eu-west",
            "mars-east-1",
            "",
        ] {
            assert!(!is_region(not), "{not}");
        }
        assert_eq!(of_region("mars-east-1").id, "aws", "the SDK's fallback");
    }

    #[test]
    fn the_account_of_an_arn_or_any() {
        assert_eq!(
            account_or_any("arn:aws-cn:ecs:cn-north-1:123456789012:cluster/web"),
            "123456789012"
        );
        assert_eq!(account_or_any("web"), "*");
        assert_eq!(account_or_any("arn:aws:ecs:eu-west-2::cluster/web"), "*");
    }

    #[test]
    fn arns_are_written_in_the_regions_partition() {
        assert_eq!(
            arn("ecs", "cn-north-1", "*", "cluster/web"),
            "arn:aws-cn:ecs:cn-north-1:*:cluster/web"
        );
        assert_eq!(
            arn("ecs", "us-gov-west-1", "1", "task/web/*"),
            "arn:aws-us-gov:ecs:us-gov-west-1:1:task/web/*"
        );
        assert_eq!(
            arn("ecs", "eu-west-2", "1", "task/web/*"),
            "arn:aws:ecs:eu-west-2:1:task/web/*"
        );
    }

    #[test]
    fn arns_of_every_partition_parse() {
        let a = Arn::parse("arn:aws-eusc:ecs:eusc-de-east-1:1:task-definition/api:7").unwrap();
        assert_eq!(
            (a.partition, a.service, a.region, a.account, a.resource),
            (
                "aws-eusc",
                "ecs",
                "eusc-de-east-1",
                "1",
                "task-definition/api:7"
            )
        );
        assert_eq!(Arn::parse("arn:aws:ecs:eu-west-2"), None);
        assert_eq!(Arn::parse("web"), None);
    }

    /// The SDK crate's partition data, as the `aws-sdk-ecs` that Cargo.lock pins ships it:
    /// found through `cargo metadata`, so it works from any CARGO_HOME or vendored registry, and
    /// offline: scripts/test runs `cargo fetch --locked` first, which fetches every locked crate
    /// (`cargo metadata` reads them all, not only the host's).
    fn sdk_partitions() -> serde_json::Value {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = std::process::Command::new(cargo)
            .args(["metadata", "--format-version", "1", "--locked", "--offline"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("cargo metadata runs");
        assert!(
            out.status.success(),
            "cargo metadata (run `cargo fetch --locked` first): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let manifest = meta["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "aws-sdk-ecs")
            .and_then(|p| p["manifest_path"].as_str())
            .expect("aws-sdk-ecs is a dependency");
        let file = std::path::Path::new(manifest).with_file_name("src/endpoint_lib.rs");
        let src = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file:?}: {e}"));
        let start = src
            .find("new_from_json(b\"")
            .expect("the SDK embeds partitions JSON")
            + "new_from_json(b\"".len();
        // Unescape the Rust byte string literal up to its closing quote.
        let mut json = String::new();
        let mut chars = src[start..].chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => match chars.next() {
                    Some('n') => json.push('\n'),
                    Some('t') => json.push('\t'),
                    Some(e @ ('\\' | '"' | '\'')) => json.push(e),
                    other => panic!("unexpected escape {other:?} in {file:?}"),
                },
                c => json.push(c),
            }
        }
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{file:?}: {e}"))
    }

    #[test]
    fn partitions_are_the_sdks() {
        let sdk = sdk_partitions();
        let theirs: Vec<(String, String, String, Vec<String>)> = sdk["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let mut regions: Vec<String> =
                    p["regions"].as_object().unwrap().keys().cloned().collect();
                regions.sort();
                (
                    p["id"].as_str().unwrap().to_string(),
                    // The ARN partition is the partition's name; this module writes its id.
                    p["outputs"]["name"].as_str().unwrap().to_string(),
                    p["regionRegex"].as_str().unwrap().to_string(),
                    regions,
                )
            })
            .collect();
        let ours: Vec<(String, String, String, Vec<String>)> = PARTITIONS
            .iter()
            .map(|p| {
                let mut regions: Vec<String> = p.regions.iter().map(|r| r.to_string()).collect();
                regions.sort();
                (p.id.into(), p.id.into(), p.region_regex.into(), regions)
            })
            .collect();
        assert_eq!(
            ours, theirs,
            "the AWS SDK's partition data changed: update PARTITIONS in src/partition.rs (left: ours, right: the SDK's)"
        );
    }
}
