//! The repository's Markdown docs link to each other and to files: every relative link (and
//! its `#anchor`, as GitHub makes heading anchors) must resolve, so moving a section or a file
//! cannot leave a dead link behind.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The docs whose links are checked, relative to the repository root; every `docs/*.md` too.
const DOCS: &[&str] = &[
    "README.md",
    "ARCHITECTURE.md",
    "BENCHMARKS.md",
    "RELIABILITY.md",
];

/// The targets of the inline links `[text](target)` of `text`, outside fenced code blocks.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(end) = after.find(')') else { break };
            out.push(after[..end].to_string());
            rest = &after[end..];
        }
    }
    out
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces made hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown file's headings (outside fenced code blocks).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            out.insert(slug(line.trim_start_matches('#')));
        }
    }
    out
}

/// The broken links of `file` (its text `text`): a missing path, or a missing heading anchor.
fn broken(root: &Path, file: &Path, text: &str) -> Vec<String> {
    let dir = file.parent().unwrap_or(Path::new(""));
    let mut out = Vec::new();
    for target in links(text) {
        if target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        let (path, anchor) = match target.split_once('#') {
            Some((p, a)) => (p, Some(a)),
            None => (target.as_str(), None),
        };
        let resolved: PathBuf = if path.is_empty() {
            root.join(file)
        } else {
            root.join(dir).join(path)
        };
        let shown = format!("{}: ({target})", file.display());
        if !resolved.exists() {
            out.push(format!("{shown}: no such file"));
            continue;
        }
        if let Some(anchor) = anchor.filter(|_| path.is_empty() || path.ends_with(".md")) {
            let target_text = if path.is_empty() {
                text.to_string()
            } else {
                std::fs::read_to_string(&resolved).unwrap_or_default()
            };
            if !anchors(&target_text).contains(anchor) {
                out.push(format!("{shown}: no heading with that anchor"));
            }
        }
    }
    out
}

#[test]
fn docs_links_resolve() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<PathBuf> = DOCS.iter().map(PathBuf::from).collect();
    let guides = std::fs::read_dir(root.join("docs")).expect("docs/ is readable");
    for entry in guides.flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().ends_with(".md") {
            files.push(Path::new("docs").join(name));
        }
    }
    let mut bad = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(root.join(file))
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        bad.extend(broken(root, file, &text));
    }
    assert!(bad.is_empty(), "broken links:\n{}", bad.join("\n"));
}

#[test]
fn a_missing_file_or_anchor_is_reported_and_code_blocks_are_skipped() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = "# Top\n\n[ok](#top) [ok](docs/configuration.md#keys) [web](https://x.y/z)\n\
                [gone](docs/nothing.md) [bad](#nowhere) [bad](docs/configuration.md#nowhere)\n\
                ```\n[in code](nothing.md)\n```\n";
    let bad = broken(root, Path::new("README.md"), text);
    assert_eq!(bad.len(), 3, "{bad:?}");
    assert!(bad[0].contains("(docs/nothing.md): no such file"));
    assert!(bad[1].contains("(#nowhere): no heading"));
    assert!(bad[2].contains("(docs/configuration.md#nowhere): no heading"));
    assert_eq!(
        slug(" `rel/env.sh.eex`: this node's name"),
        "relenvsheex-this-nodes-name"
    );
    assert_eq!(
        slug(" Leaving without cuts (OTP 25+)"),
        "leaving-without-cuts-otp-25"
    );
}
