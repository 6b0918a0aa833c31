//! Node naming: how a peer's Erlang node name is built, and who *this* node is.
//!
//! One rule, used by every adapter: the CLI describes this node from the variables a release
//! sets (`RELEASE_NODE`, `RELEASE_DISTRIBUTION`, `RELEASE_NAME`), the Elixir strategy and
//! `EcsPeers.discover/1` pass `node()`; [`ThisNode`] turns either into this node's full name (left
//! out of the peers) and the default `node_basename`, and [`parse`] applies them to the keys
//! `node_basename`, `node_name`, `node_names` and `local_node`.

use std::net::IpAddr;

use super::fields::Fields;
use crate::error::Error;

/// How node names are built from a peer's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeNaming {
    /// `basename@ip`.
    Basename(String),
    /// A template with `{ip}`, `{ip_dashed}`, `{region}`, `{private_dns_name}` and `{task_id}`
    /// placeholders.
    Template(String),
    /// `name@ip`, with the name the peer's EPMD has registered: its only name, or else the one
    /// equal to `prefer`; a peer with several names and none preferred is left out.
    Epmd {
        /// The name to choose when a host has several (`node_basename`).
        prefer: Option<String>,
    },
}

impl NodeNaming {
    /// The node name of a peer with this address, in this region; `None` with EPMD naming (the
    /// poller asks the peer's EPMD instead).
    ///
    /// ```
    /// use ecs_peers::NodeNaming;
    /// let ip = "10.0.1.5".parse().unwrap();
    /// assert_eq!(NodeNaming::Basename("app".into()).render(ip, "eu-west-2").unwrap(), "app@10.0.1.5");
    /// let t = NodeNaming::Template("app@ip-{ip_dashed}.{region}.compute.internal".into());
    /// assert_eq!(t.render(ip, "eu-west-2").unwrap(), "app@ip-10-0-1-5.eu-west-2.compute.internal");
    /// ```
    pub fn render(&self, ip: IpAddr, region: &str) -> Option<String> {
        self.render_parts(ip, region, None, false, None)
    }

    /// [`NodeNaming::render`] for a peer AWS reports a private DNS name for (the `privateDnsName`
    /// of an ECS task's ENI: `ip-10-1-0-5.ec2.internal` in us-east-1,
    /// `ip-10-2-0-5.eu-west-2.compute.internal` elsewhere), which `{private_dns_name}` is
    /// replaced by as reported, never computed. A template with `{private_dns_name}` names no
    /// peer without one (`None`; Cloud Map reports none).
    ///
    /// ```
    /// use ecs_peers::NodeNaming;
    /// let t = NodeNaming::Template("app@{private_dns_name}".into());
    /// let ip = "10.1.0.5".parse().unwrap();
    /// assert_eq!(t.render_with(ip, "us-east-1", Some("ip-10-1-0-5.ec2.internal")).unwrap(), "app@ip-10-1-0-5.ec2.internal");
    /// assert_eq!(t.render_with(ip, "us-east-1", None), None);
    /// ```
    pub fn render_with(
        &self,
        ip: IpAddr,
        region: &str,
        private_dns_name: Option<&str>,
    ) -> Option<String> {
        self.render_parts(ip, region, None, false, private_dns_name)
    }

    /// The node name of an ECS task: as [`NodeNaming::render`], plus its task id (the last part
    /// of its task ARN) for the `{task_id}` placeholder, and whether the address is its EC2
    /// instance's (bridge or host network mode), which it may share with other tasks.
    ///
    /// The one naming rule for tasks that share an address: with `Basename`, such a task is
    /// `<basename>-<task id>@<instance ip>` (a node computes the same name for itself from its
    /// task metadata, see docs/distribution.md); a task with an address of its own (awsvpc) stays
    /// `<basename>@<ip>`. A template is used as written; one with `{task_id}` names nothing
    /// without a task id (`None`). `None` with EPMD naming. A Cloud Map instance's id stands
    /// for its task id (see [`NodeNaming::render_found_into`]).
    ///
    /// ```
    /// use ecs_peers::NodeNaming;
    /// let ip = "10.0.1.5".parse().unwrap();
    /// let b = NodeNaming::Basename("app".into());
    /// assert_eq!(b.render_task(ip, "eu-west-2", Some("4e3c"), true).unwrap(), "app-4e3c@10.0.1.5");
    /// assert_eq!(b.render_task(ip, "eu-west-2", Some("4e3c"), false).unwrap(), "app@10.0.1.5");
    /// let t = NodeNaming::Template("app-{task_id}@{ip}".into());
    /// assert_eq!(t.render_task(ip, "eu-west-2", Some("4e3c"), false).unwrap(), "app-4e3c@10.0.1.5");
    /// assert_eq!(t.render(ip, "eu-west-2"), None);
    /// ```
    pub fn render_task(
        &self,
        ip: IpAddr,
        region: &str,
        task_id: Option<&str>,
        shares_instance_address: bool,
    ) -> Option<String> {
        self.render_parts(ip, region, task_id, shares_instance_address, None)
    }

    /// The one rendering rule behind [`NodeNaming::render`], [`NodeNaming::render_with`] and
    /// [`NodeNaming::render_task`].
    fn render_parts(
        &self,
        ip: IpAddr,
        region: &str,
        task_id: Option<&str>,
        shares_instance_address: bool,
        private_dns_name: Option<&str>,
    ) -> Option<String> {
        let mut name = String::new();
        self.render_into(
            ip,
            region,
            task_id,
            shares_instance_address,
            private_dns_name,
            &mut name,
        )
        .then_some(name)
    }

    /// [`NodeNaming::render_parts`] into `name`, replacing what it held: `false` (and `name`
    /// meaningless) for `None`. Built in place, without `format!` or a `String` per step: this
    /// runs for every peer of every changed answer (10,000 at a time), and `format!` and chains
    /// of `replace` were most of the cost of naming.
    fn render_into(
        &self,
        ip: IpAddr,
        region: &str,
        task_id: Option<&str>,
        shares_instance_address: bool,
        private_dns_name: Option<&str>,
        name: &mut String,
    ) -> bool {
        name.clear();
        match self {
            NodeNaming::Basename(b) => {
                let id = task_id.filter(|_| shares_instance_address);
                name.reserve(b.len() + id.map_or(0, |i| i.len() + 1) + 1 + IP_MAX);
                name.push_str(b);
                if let Some(id) = id {
                    name.push('-');
                    name.push_str(id);
                }
                name.push('@');
                match ip {
                    IpAddr::V4(v4) => push_ipv4(name, v4),
                    IpAddr::V6(_) => name.push_str(IpText::new(ip).as_str()),
                }
                true
            }
            NodeNaming::Template(t) => {
                // The same replacements, in the same order, as `str::replace` would make them
                // one after the other (a value that happens to contain a later placeholder is
                // replaced too), but between two buffers, and only for placeholders present.
                name.reserve(t.len() + IP_MAX);
                name.push_str(t);
                let mut scratch = String::new();
                if name.contains(PRIVATE_DNS_NAME) {
                    let Some(dns) = private_dns_name else {
                        return false;
                    };
                    replace_in(name, &mut scratch, PRIVATE_DNS_NAME, dns);
                }
                if name.contains("{task_id}") && task_id.is_none() {
                    return false;
                }
                let ip_s = IpText::new(ip);
                let dashed = ip_s.dashed();
                replace_in(name, &mut scratch, "{ip_dashed}", dashed.as_str());
                replace_in(name, &mut scratch, "{ip}", ip_s.as_str());
                replace_in(name, &mut scratch, "{region}", region);
                replace_in(name, &mut scratch, "{task_id}", task_id.unwrap_or_default());
                true
            }
            NodeNaming::Epmd { .. } => false,
        }
    }

    /// Whether names come from `{private_dns_name}`, which only ECS sources report.
    pub fn needs_private_dns_name(&self) -> bool {
        matches!(self, NodeNaming::Template(t) if t.contains(PRIVATE_DNS_NAME))
    }

    /// The key that makes peers' names long names (a host with a dot, or an IP address), which a
    /// short-named node (`-sname`) cannot connect to; `None` when the names' host is a plain
    /// name (`app@ip-{ip_dashed}`).
    fn long_names_key(&self) -> Option<&'static str> {
        match self {
            NodeNaming::Basename(_) => Some("node_basename"),
            NodeNaming::Epmd { .. } => Some("node_names"),
            NodeNaming::Template(t) => {
                let host = t.split_once('@').map_or("", |(_, h)| h);
                let host = host.replace("{ip_dashed}", "").replace("{region}", "");
                (host.contains('.') || host.contains("{ip}") || host.contains(PRIVATE_DNS_NAME))
                    .then_some("node_name")
            }
        }
    }

    /// The node name of what a source found, into `name` (replacing what it held, keeping its
    /// capacity): [`NodeNaming::render_task`] with its task id (a Cloud Map instance: its
    /// instance id), whether it shares its host's address (bridge or host
    /// mode, or a Cloud Map instance with a registered port), and its private DNS name; `false` (and `name` meaningless) where that
    /// is `None`.
    pub(crate) fn render_found_into(
        &self,
        f: &crate::peer::Found,
        region: &str,
        name: &mut String,
    ) -> bool {
        // `<basename>@<ip>` needs no task id: not looked for in the ARN then. Otherwise the id
        // is the task id, or a Cloud Map instance's id (ECS service discovery registers each
        // task under its task id), so no Cloud Map peer goes unnamed, and so dropped, for
        // want of a task ARN.
        let shares = f.shares_address();
        let task_id = match self {
            NodeNaming::Basename(_) if !shares => None,
            _ => f.own_id(),
        };
        self.render_into(
            f.ip,
            region,
            task_id,
            shares,
            f.private_dns_name.as_deref(),
            name,
        )
    }

    /// With EPMD naming: which of the names a host's EPMD has registered is its node, by the rule
    /// above (`Err` says why none).
    pub fn choose<'a>(&self, names: &'a [(String, u16)]) -> Result<&'a str, String> {
        let prefer = match self {
            NodeNaming::Epmd { prefer } => prefer.as_deref(),
            _ => None,
        };
        match names {
            [] => Err("its EPMD has no node registered".into()),
            [(only, _)] => Ok(only),
            several => match prefer.and_then(|p| several.iter().find(|(n, _)| n == p)) {
                Some((n, _)) => Ok(n),
                None => Err(format!(
                    "its EPMD has several nodes ({}); set node_basename to choose one",
                    several
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            },
        }
    }
}

/// The placeholder for the private DNS name AWS reports for a task.
const PRIVATE_DNS_NAME: &str = "{private_dns_name}";

/// The longest text of an IP address (`ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255`).
const IP_MAX: usize = 45;

/// An IP address as text (its `Display` form), on the stack, for templates (`{ip}` and
/// `{ip_dashed}`); a basename's IPv4 address is written straight into the name
/// ([`push_ipv4`]).
struct IpText {
    buf: [u8; IP_MAX],
    len: usize,
}

impl IpText {
    fn new(ip: IpAddr) -> IpText {
        let mut t = IpText {
            buf: [0; IP_MAX],
            len: 0,
        };
        use std::fmt::Write;
        // At most IP_MAX bytes: the writer cannot fail.
        let _ = write!(t, "{ip}");
        t
    }

    /// With `.` and `:` replaced by `-` (`{ip_dashed}`).
    fn dashed(&self) -> IpText {
        let mut d = IpText {
            buf: self.buf,
            len: self.len,
        };
        for b in &mut d.buf[..d.len] {
            if matches!(*b, b'.' | b':') {
                *b = b'-';
            }
        }
        d
    }

    fn as_str(&self) -> &str {
        // Only ASCII is ever written into it.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

impl std::fmt::Write for IpText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let room = self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        room.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Appends an IPv4 address as its `Display` form writes it (`10.0.1.5`), digit by digit.
fn push_ipv4(name: &mut String, ip: std::net::Ipv4Addr) {
    let mut text = [0u8; 15];
    let mut len = 0;
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            text[len] = b'.';
            len += 1;
        }
        if octet >= 100 {
            text[len] = b'0' + octet / 100;
            len += 1;
        }
        if octet >= 10 {
            text[len] = b'0' + octet / 10 % 10;
            len += 1;
        }
        text[len] = b'0' + octet % 10;
        len += 1;
    }
    // Only ASCII digits and dots were written.
    name.push_str(std::str::from_utf8(&text[..len]).unwrap_or_default());
}

/// `*text = text.replace(pat, with)`, building into `scratch` (kept for the next replacement)
/// and only when `pat` occurs.
fn replace_in(text: &mut String, scratch: &mut String, pat: &str, with: &str) {
    if !text.contains(pat) {
        return;
    }
    scratch.clear();
    let mut last = 0;
    for (at, _) in text.match_indices(pat) {
        scratch.push_str(&text[last..at]);
        scratch.push_str(with);
        last = at + pat.len();
    }
    scratch.push_str(&text[last..]);
    std::mem::swap(text, scratch);
}

/// Who this node is, as the adapter running ecs-peers knows it. Built by one rule from either
/// the running Erlang node ([`ThisNode::from_erlang`]) or a release's environment
/// ([`ThisNode::from_release_env`]), so the CLI and the strategy derive the same names.
///
/// ```
/// use ecs_peers::config::ThisNode;
/// let me = ThisNode::from_erlang("app@10.0.1.5", None);
/// assert_eq!(me.name.as_deref(), Some("app@10.0.1.5"));
/// assert_eq!(me.basename.as_deref(), Some("app"));
/// // `iex -S mix`, not distributed: no node name; the basename is the release's name.
/// let console = ThisNode::from_erlang("nonode@nohost", Some("my_app"));
/// assert_eq!((console.name, console.basename.as_deref()), (None, Some("my_app")));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ThisNode {
    /// This node's full name (`app@10.0.1.5`) when it is distributed and its host is known; it
    /// is left out of the peers (the `local_node` key overrides it).
    pub name: Option<String>,
    /// The name part (`app`): peers are `<basename>@<ip>` unless `node_basename` or `node_name`
    /// is configured.
    pub basename: Option<String>,
    /// This node runs with short names (`-sname`, `RELEASE_DISTRIBUTION=sname`): it can connect
    /// only to nodes whose host is a plain name, so peers named by IP address (long names) are
    /// refused at start (see [`ThisNode::short_named`]).
    pub short_names: bool,
}

impl ThisNode {
    /// This node with short names or not, as the running Erlang node says
    /// (`:net_kernel.longnames()` is `false` for `-sname`; `:ignored` when not distributed).
    pub fn short_named(mut self, short_names: bool) -> ThisNode {
        self.short_names = short_names;
        self
    }

    /// Nothing is known about this node: naming must be configured.
    pub fn unknown() -> ThisNode {
        ThisNode::default()
    }

    /// From a node name as Erlang's `node()` gives it. `nonode@nohost` (a node that is not
    /// distributed, e.g. a plain `iex -S mix`) has no name; its basename is then `release_name`
    /// (the release's or Mix project's name, which is what a release names its node by default:
    /// `RELEASE_NODE` defaults to `RELEASE_NAME`).
    pub fn from_erlang(node: &str, release_name: Option<&str>) -> ThisNode {
        let node = Some(node).filter(|n| *n != "nonode@nohost");
        ThisNode::from_parts(node, release_name)
    }

    /// From the variables an Elixir release sets in its environment (`bin/app start` exports
    /// them; see `mix help release`): `RELEASE_NODE` (`app@10.0.1.5`, or `app` when the host is
    /// added at boot), `RELEASE_DISTRIBUTION` (`name`, `sname` or `none`) and `RELEASE_NAME`.
    /// With `RELEASE_DISTRIBUTION=none` the node has no name, but `RELEASE_NODE` still names the
    /// fleet's nodes.
    pub fn from_release(
        release_node: Option<&str>,
        distribution: Option<&str>,
        release_name: Option<&str>,
    ) -> ThisNode {
        let release_node = release_node.map(str::trim).filter(|n| !n.is_empty());
        if distribution == Some("none") {
            let base = release_node.map(|n| n.split('@').next().unwrap_or(n));
            return ThisNode::from_parts(None, base.or(release_name));
        }
        ThisNode::from_parts(release_node, release_name).short_named(distribution == Some("sname"))
    }

    /// [`ThisNode::from_release`] with this process's environment.
    pub fn from_release_env() -> ThisNode {
        let get = |k: &str| std::env::var(k).ok();
        ThisNode::from_release(
            get("RELEASE_NODE").as_deref(),
            get("RELEASE_DISTRIBUTION").as_deref(),
            get("RELEASE_NAME").as_deref(),
        )
    }

    /// The one rule: `name@host` is this node's name and `name` its basename; a name without a
    /// host (`app`, completed at boot) is only a basename; without either, the fallback.
    fn from_parts(node: Option<&str>, fallback_basename: Option<&str>) -> ThisNode {
        let fallback = fallback_basename
            .map(str::trim)
            .filter(|b| !b.is_empty())
            .map(str::to_string);
        match node.map(str::trim).filter(|n| !n.is_empty()) {
            Some(n) => match n.split_once('@') {
                Some((base, host)) if !base.is_empty() && !host.is_empty() => ThisNode {
                    name: Some(n.to_string()),
                    basename: Some(without_task_id(base).to_string()),
                    short_names: false,
                },
                _ => ThisNode {
                    name: None,
                    basename: Some(without_task_id(n.trim_end_matches('@')).to_string())
                        .filter(|b| !b.is_empty())
                        .or(fallback),
                    short_names: false,
                },
            },
            None => ThisNode {
                name: None,
                basename: fallback,
                short_names: false,
            },
        }
    }
}

/// A node name's name part without the `-<task id>` that bridge- and host-mode tasks carry
/// (see [`NodeNaming::render_task`]): `my_app-4e3cfb1a6d2a4b0f9d6c2f9f5b8a7c11` → `my_app`, so
/// such a node and its peers share one basename. A task id is 32 hex digits (today's ARNs) or
/// the older UUID form 8-4-4-4-12; anything else is left as it is (`my-app` stays `my-app`).
fn without_task_id(name: &str) -> &str {
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let is_uuid = |s: &str| {
        let parts: Vec<&str> = s.split('-').collect();
        parts.len() == 5 && parts.iter().zip([8, 4, 4, 4, 12]).all(|(p, n)| hex(p, n))
    };
    if name.len() > 33 {
        let (base, tail) = name.split_at(name.len() - 33);
        if let Some(id) = tail.strip_prefix('-') {
            if hex(id, 32) && !base.is_empty() {
                return base;
            }
        }
    }
    if name.len() > 37 {
        let (base, tail) = name.split_at(name.len() - 37);
        if let Some(id) = tail.strip_prefix('-') {
            if is_uuid(id) && !base.is_empty() {
                return base;
            }
        }
    }
    name
}

/// The naming keys, after they were read: how peers are named, and this node's own name.
pub(super) struct Naming {
    pub node: NodeNaming,
    pub local_node: Option<String>,
}

/// Reads `node_basename`, `node_name`, `node_names` and `local_node`, filling what they leave
/// open from `this`: the basename defaults to this node's, and this node is left out of the
/// peers unless `local_node` names another.
pub(super) fn parse(top: &mut Fields, this: &ThisNode) -> Result<Naming, Error> {
    let basename = top.take_string("node_basename")?;
    let template = top.take_string("node_name")?;
    let from_epmd = match top.take_string("node_names")?.as_deref() {
        None | Some("config") => false,
        Some("epmd") => true,
        Some(other) => {
            return Err(Error::config(
                "node_names",
                format!("{other:?} is not a naming mode; expected \"config\" (node_basename or node_name) or \"epmd\" (what each peer's EPMD reports)"),
            ))
        }
    };
    let this_basename = || {
        this.basename.as_deref().map(|b| {
            validate_basename(b).map_err(|_| {
                Error::config(
                    "node_basename",
                    format!("is not set, and this node's name part {b:?} cannot be used as one (expected letters, digits, _ or -); set node_basename"),
                )
            })
        })
    };
    let node = match (basename, template) {
        (_, Some(_)) if from_epmd => {
            return Err(Error::config(
                "node_name",
                "a template cannot be used with node_names = \"epmd\" (names come from each peer's EPMD); use node_basename to choose among several names",
            ))
        }
        (Some(b), None) if from_epmd => NodeNaming::Epmd {
            prefer: Some(validate_basename(&b)?),
        },
        (None, None) if from_epmd => NodeNaming::Epmd {
            prefer: this_basename().transpose()?,
        },
        (Some(_), Some(_)) => {
            return Err(Error::config(
                "node_name",
                "give either node_basename or node_name, not both",
            ))
        }
        (Some(b), None) => NodeNaming::Basename(validate_basename(&b)?),
        (None, Some(t)) => NodeNaming::Template(validate_template(&t)?),
        (None, None) => match this_basename() {
            Some(b) => NodeNaming::Basename(b?),
            None => {
                return Err(Error::config(
                    "node_basename",
                    "is required (the part before @ in your release's node name, e.g. \"app\"), or give a node_name template such as \"app@{ip}\"",
                ))
            }
        },
    };
    let local_node = top.take_string("local_node")?;
    if let Some(n) = &local_node {
        if n.matches('@').count() != 1 {
            return Err(Error::config(
                "local_node",
                format!("{n:?} is not a node name; expected name@host, e.g. \"app@10.0.1.5\""),
            ));
        }
    }
    if this.short_names {
        if let Some(key) = node.long_names_key() {
            let example = node
                .render("10.0.1.6".parse().expect("an IPv4 literal"), "eu-west-2")
                .unwrap_or_else(|| "app@10.0.1.6".into());
            let base = this.basename.as_deref().unwrap_or("app");
            return Err(Error::config(
                key,
                format!("this node runs with short names (RELEASE_DISTRIBUTION=sname, or -sname), but peers are named with long names (e.g. {example:?}), which a short-named node cannot connect to; use long names: RELEASE_DISTRIBUTION=name and RELEASE_NODE={base}@<this task's IP> (in rel/env.sh.eex), or name peers by a plain host that resolves, e.g. node_name = \"{base}@ip-{{ip_dashed}}\""),
            ));
        }
    }
    Ok(Naming {
        node,
        local_node: local_node.or_else(|| this.name.clone()),
    })
}

fn validate_basename(b: &str) -> Result<String, Error> {
    let ok = !b.is_empty()
        && b.len() <= 200
        && b.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(b.to_string())
    } else {
        Err(Error::config(
            "node_basename",
            format!("{b:?} is not a node basename; expected letters, digits, _ or - (the part before @, e.g. \"app\")"),
        ))
    }
}

fn validate_template(t: &str) -> Result<String, Error> {
    let Some((name, host)) = t.split_once('@') else {
        return Err(Error::config(
            "node_name",
            format!("{t:?} has no @; expected a template such as \"app@{{ip}}\""),
        ));
    };
    if name.is_empty() || host.contains('@') {
        return Err(Error::config(
            "node_name",
            format!("{t:?} must be name@host with exactly one @, e.g. \"app@{{ip}}\""),
        ));
    }
    if !host.contains("{ip}") && !host.contains("{ip_dashed}") && !host.contains(PRIVATE_DNS_NAME) {
        return Err(Error::config(
            "node_name",
            format!("{t:?} must contain {{ip}}, {{ip_dashed}} or {{private_dns_name}} after the @, or every peer gets the same name"),
        ));
    }
    let mut rest = t;
    while let Some(start) = rest.find('{') {
        let end = rest[start..]
            .find('}')
            .map(|e| start + e)
            .ok_or_else(|| Error::config("node_name", format!("{t:?} has an unclosed {{")))?;
        let ph = &rest[start + 1..end];
        if !matches!(
            ph,
            "ip" | "ip_dashed" | "region" | "private_dns_name" | "task_id"
        ) {
            return Err(Error::config(
                "node_name",
                format!("{{{ph}}} in {t:?} is not a placeholder; expected {{ip}}, {{ip_dashed}}, {{region}}, {{private_dns_name}} or {{task_id}}"),
            ));
        }
        rest = &rest[end + 1..];
    }
    Ok(t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use serde_json::json;

    #[test]
    fn the_cli_and_the_strategy_describe_the_same_node_alike() {
        let from_beam = ThisNode::from_erlang("app@10.0.1.5", Some("ignored"));
        let from_release = ThisNode::from_release(Some("app@10.0.1.5"), Some("name"), None);
        assert_eq!(from_beam, from_release);
        assert_eq!(from_beam.name.as_deref(), Some("app@10.0.1.5"));
        assert_eq!(from_beam.basename.as_deref(), Some("app"));
        // RELEASE_NODE without a host (it is added at boot): only the basename is known.
        let short = ThisNode::from_release(Some("app"), Some("sname"), Some("rel"));
        assert_eq!((short.name, short.basename.as_deref()), (None, Some("app")));
        // Not distributed: no name; the fleet's basename is still RELEASE_NODE's.
        let none = ThisNode::from_release(Some("app@10.0.1.5"), Some("none"), None);
        assert_eq!((none.name, none.basename.as_deref()), (None, Some("app")));
        assert_eq!(
            ThisNode::from_erlang("nonode@nohost", None),
            ThisNode::unknown()
        );
        assert_eq!(
            ThisNode::from_release(None, None, None),
            ThisNode::unknown()
        );
        let console = ThisNode::from_erlang("nonode@nohost", Some("my_app"));
        assert_eq!(
            (console.name, console.basename.as_deref()),
            (None, Some("my_app"))
        );
    }

    /// A bridge-mode node is `<basename>-<task id>@<instance ip>`; its basename, the one its
    /// peers are named by, is without the task id (else every node names peers after itself).
    #[test]
    fn a_task_id_suffix_is_not_part_of_the_basename() {
        let base = |n: &str| ThisNode::from_erlang(n, None).basename;
        let me = ThisNode::from_erlang("my_app-4e3cfb1a6d2a4b0f9d6c2f9f5b8a7c11@10.0.1.5", None);
        assert_eq!(
            me.name.as_deref(),
            Some("my_app-4e3cfb1a6d2a4b0f9d6c2f9f5b8a7c11@10.0.1.5")
        );
        assert_eq!(me.basename.as_deref(), Some("my_app"));
        assert_eq!(
            base("my_app-54425c54-25ae-4721-9b09-8d635efb5b92@10.0.1.5").as_deref(),
            Some("my_app")
        );
        assert_eq!(base("my-app@10.0.0.5").as_deref(), Some("my-app"));
        assert_eq!(
            base("a-4e3cfb1a6d2a4b0f9d6c2f9f5b8a7c1@10.0.0.5").as_deref(),
            Some("a-4e3cfb1a6d2a4b0f9d6c2f9f5b8a7c1"),
            "31 hex digits are not a task id"
        );
        let release = ThisNode::from_release(
            Some("my_app-4e3cfb1a6d2a4b0f9d6c2f9f5b8a7c11@10.0.1.5"),
            Some("name"),
            None,
        );
        assert_eq!(release, me, "the CLI and the strategy agree");
    }

    #[test]
    fn a_short_named_node_is_refused_long_peer_names() {
        let src = json!([{"type":"ecs","region":"eu-west-2","cluster":"web"}]);
        let from_env = ThisNode::from_release(Some("app@ip-10-0-1-5"), Some("sname"), None);
        let from_beam = ThisNode::from_erlang("app@ip-10-0-1-5", None).short_named(true);
        assert_eq!(from_env, from_beam, "one rule for the CLI and the strategy");
        for (cfg, key) in [
            (json!({ "sources": src }), "node_basename"),
            (
                json!({"node_name": "app@{ip}", "sources": src}),
                "node_name",
            ),
            (
                json!({"node_name": "app@ip-{ip_dashed}.ec2.internal", "sources": src}),
                "node_name",
            ),
            (
                json!({"node_name": "app@{private_dns_name}", "sources": src}),
                "node_name",
            ),
            (json!({"node_names": "epmd", "sources": src}), "node_names"),
        ] {
            let e = Config::from_value_for(cfg.clone(), &from_env)
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with(&format!("{key}: this node runs with short names (RELEASE_DISTRIBUTION=sname, or -sname)"))
                    && e.contains("RELEASE_DISTRIBUTION=name and RELEASE_NODE=app@<this task's IP>"),
                "{cfg}: {e}"
            );
        }
        let c = Config::from_value_for(
            json!({"node_name": "app@ip-{ip_dashed}", "sources": src}),
            &from_env,
        )
        .unwrap();
        assert_eq!(c.local_node.as_deref(), Some("app@ip-10-0-1-5"));
        // Long names, or not distributed: as before.
        let long = ThisNode::from_release(Some("app@10.0.1.5"), Some("name"), None);
        assert!(Config::from_value_for(json!({ "sources": src }), &long).is_ok());
        assert!(!ThisNode::from_release(Some("app"), Some("none"), None).short_names);
    }

    #[test]
    fn private_dns_name_is_a_placeholder_of_ecs_sources_only() {
        let ecs = json!({"type":"ecs","region":"us-east-1","cluster":"web"});
        let c =
            Config::from_value(json!({"node_name": "app@{private_dns_name}", "sources": [ecs]}))
                .unwrap();
        let ip = "10.1.0.5".parse().unwrap();
        assert_eq!(
            c.node
                .render_with(ip, "us-east-1", Some("ip-10-1-0-5.ec2.internal")),
            Some("app@ip-10-1-0-5.ec2.internal".into())
        );
        assert_eq!(c.node.render(ip, "us-east-1"), None, "never computed");
        let cm = json!({"type":"cloudmap","region":"us-east-1","namespace":"n","service":"s"});
        let e = Config::from_value(
            json!({"node_name": "app@{private_dns_name}", "sources": [ecs, cm]}),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("node_name: {private_dns_name} is the private DNS name ECS reports")
                && e.contains("sources[1] (cloudmap:us-east-1/n/s) is Cloud Map"),
            "{e}"
        );
    }

    /// Cloud Map instances are named like ECS tasks: one with a port of its own (an SRV
    /// registration of a bridge- or host-mode task, whose address is its host's) carries its
    /// instance id, which ECS service discovery sets to the task id; one without stays
    /// `<basename>@<ip>`; a `{task_id}` template takes the instance id rather than naming
    /// nothing (and so dropping the peer).
    #[test]
    fn cloud_map_instances_are_named_like_the_tasks_they_register() {
        let id = "4e3cfb1a6d2a4b0f9d6c2f9f5b8a7c11";
        let at = |port: Option<u16>| crate::peer::Found {
            port,
            instance_id: Some(id.into()),
            ..crate::peer::Found::at("10.2.0.10".parse().unwrap())
        };
        let name = |naming: &NodeNaming, f: &crate::peer::Found| {
            let mut n = String::new();
            naming
                .render_found_into(f, "us-west-2", &mut n)
                .then_some(n)
        };
        let b = NodeNaming::Basename("app".into());
        assert_eq!(
            name(&b, &at(Some(32768))),
            Some(format!("app-{id}@10.2.0.10"))
        );
        assert_eq!(name(&b, &at(None)), Some("app@10.2.0.10".into()));
        let t = NodeNaming::Template("app-{task_id}@{ip}".into());
        assert_eq!(name(&t, &at(None)), Some(format!("app-{id}@10.2.0.10")));
        // The node itself, named from its task metadata at boot, has the same name; its
        // basename without the task id is its peers' basename.
        let me = ThisNode::from_erlang(&format!("app-{id}@10.2.0.10"), None);
        assert_eq!(me.basename.as_deref(), Some("app"));
        assert_eq!(me.name, name(&b, &at(Some(32768))));
    }

    #[test]
    fn this_node_fills_what_the_naming_keys_leave_open() {
        let me = ThisNode::from_erlang("web@10.0.0.5", None);
        let src = json!([{"type":"ecs","region":"eu-west-2","cluster":"web"}]);
        let c = Config::from_value_for(json!({ "sources": src }), &me).unwrap();
        assert_eq!(c.node, NodeNaming::Basename("web".into()));
        assert_eq!(c.local_node.as_deref(), Some("web@10.0.0.5"));
        let c =
            Config::from_value_for(json!({"node_basename": "app", "sources": src}), &me).unwrap();
        assert_eq!(
            c.node,
            NodeNaming::Basename("app".into()),
            "configured wins"
        );
        let c =
            Config::from_value_for(json!({"node_name": "x@{ip}", "sources": src}), &me).unwrap();
        assert_eq!(c.node, NodeNaming::Template("x@{ip}".into()));
        assert_eq!(c.local_node.as_deref(), Some("web@10.0.0.5"));
        let c =
            Config::from_value_for(json!({"local_node": "other@10.0.0.9", "sources": src}), &me)
                .unwrap();
        assert_eq!(c.local_node.as_deref(), Some("other@10.0.0.9"));
        let c = Config::from_value_for(json!({"node_names": "epmd", "sources": src}), &me).unwrap();
        assert_eq!(
            c.node,
            NodeNaming::Epmd {
                prefer: Some("web".into())
            }
        );
        let e = Config::from_value_for(
            json!({ "sources": src }),
            &ThisNode::from_erlang("my.app@10.0.0.5", None),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("node_basename: is not set, and this node's name part \"my.app\""),
            "{e}"
        );
        let e = Config::from_value_for(json!({ "sources": src }), &ThisNode::unknown())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("node_basename: is required"), "{e}");
    }

    /// How names were rendered before they were built in place (`format!` and a chain of
    /// `str::replace`): the reference the new rendering must equal, byte for byte.
    fn rendered_as_before(
        naming: &NodeNaming,
        ip: IpAddr,
        region: &str,
        task_id: Option<&str>,
        shares: bool,
        dns: Option<&str>,
    ) -> Option<String> {
        match naming {
            NodeNaming::Basename(b) => match task_id {
                Some(id) if shares => Some(format!("{b}-{id}@{ip}")),
                _ => Some(format!("{b}@{ip}")),
            },
            NodeNaming::Template(t) => {
                let mut name = t.clone();
                if name.contains(PRIVATE_DNS_NAME) {
                    name = name.replace(PRIVATE_DNS_NAME, dns?);
                }
                if name.contains("{task_id}") && task_id.is_none() {
                    return None;
                }
                let ip_s = ip.to_string();
                let dashed = ip_s.replace(['.', ':'], "-");
                Some(
                    name.replace("{ip_dashed}", &dashed)
                        .replace("{ip}", &ip_s)
                        .replace("{region}", region)
                        .replace("{task_id}", task_id.unwrap_or_default()),
                )
            }
            NodeNaming::Epmd { .. } => None,
        }
    }

    proptest::proptest! {
        #[test]
        fn names_are_rendered_exactly_as_format_and_replace_rendered_them(
            v4 in proptest::prelude::any::<[u8; 4]>(),
            v6 in proptest::prelude::any::<[u16; 8]>(),
            use_v6 in proptest::prelude::any::<bool>(),
            basename in "[a-z_-]{1,8}",
            // Placeholders, repeated, adjacent, broken, and text that becomes one only once a
            // value is put next to it ("{ta" + "sk_id}").
            parts in proptest::collection::vec(proptest::prop_oneof![
                proptest::strategy::Just("{ip}".to_string()),
                proptest::strategy::Just("{ip_dashed}".to_string()),
                proptest::strategy::Just("{region}".to_string()),
                proptest::strategy::Just("{task_id}".to_string()),
                proptest::strategy::Just("{private_dns_name}".to_string()),
                proptest::strategy::Just("{ta".to_string()),
                proptest::strategy::Just("{".to_string()),
                proptest::strategy::Just("}".to_string()),
                "[a-z@.-]{0,4}",
            ], 0..8),
            region in proptest::prop_oneof![
                proptest::strategy::Just("eu-west-2".to_string()),
                proptest::strategy::Just("sk_id}".to_string()),
                "[a-z{}_-]{0,6}",
            ],
            task_id in proptest::option::of("[0-9a-f{}]{0,32}"),
            shares in proptest::prelude::any::<bool>(),
            dns in proptest::option::of(proptest::prop_oneof![
                proptest::strategy::Just("ip-10-1-0-5.ec2.internal".to_string()),
                proptest::strategy::Just("{ip}.{region}".to_string()),
                "[a-z{}._-]{0,8}",
            ]),
        ) {
            let ip = if use_v6 {
                IpAddr::from(std::net::Ipv6Addr::from(v6))
            } else {
                IpAddr::from(v4)
            };
            for naming in [
                NodeNaming::Basename(basename.clone()),
                NodeNaming::Template(parts.concat()),
                NodeNaming::Epmd { prefer: None },
            ] {
                proptest::prop_assert_eq!(
                    naming.render_parts(ip, &region, task_id.as_deref(), shares, dns.as_deref()),
                    rendered_as_before(&naming, ip, &region, task_id.as_deref(), shares, dns.as_deref()),
                    "{:?}", naming
                );
            }
        }
    }

    #[test]
    fn ip_text_is_the_display_form_for_every_ipv4_shape_and_ipv6() {
        for ip in [
            "0.0.0.0",
            "10.0.1.5",
            "255.255.255.255",
            "100.99.10.9",
            "::",
            "::ffff:10.0.0.1",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "2001:db8::1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(IpText::new(ip).as_str(), ip.to_string());
            if let IpAddr::V4(v4) = ip {
                let mut name = String::from("app@");
                push_ipv4(&mut name, v4);
                assert_eq!(name, format!("app@{ip}"));
            }
            assert_eq!(
                IpText::new(ip).dashed().as_str(),
                ip.to_string().replace(['.', ':'], "-")
            );
        }
    }
}
