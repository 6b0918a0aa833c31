//! # ecs-peers
//!
//! Discover Erlang/Elixir peers across AWS regions: poll ECS (ListTasks → DescribeTasks → private
//! IPv4) and Cloud Map (DiscoverInstances) for many *sources* concurrently, and merge them into one
//! namespace of peers, each with a node name such as `app@10.0.1.5`.
//!
//! Data flows one way: [`Config`] (validated once) → sources → [`Poller`] → merge → [`Snapshot`]
//! and [`Changes`] → adapters (the `ecs-peers` CLI, the Elixir NIF).
//!
//! Rules that make it trustworthy:
//! - Only a complete, successful poll of a source replaces its peers. A failed page, a throttled
//!   call or a timeout keeps the source's last-known peers, and its [`SourceStatus`] says why.
//! - A steady-state poll of an ECS source is one ListTasks call per 100 tasks: descriptions are
//!   cached by task ARN.
//! - The same IP in two regions (overlapping VPC CIDRs) is reported as a [`Conflict`], never
//!   emitted as a peer.
//!
//! ```
//! use ecs_peers::{Config, NodeNaming};
//! let config = Config::from_value(serde_json::json!({
//!     "node_basename": "app",
//!     "polling_interval": "5s",
//!     "sources": [
//!         {"type": "ecs", "region": "eu-west-2", "cluster": "web", "service": "api"},
//!         {"type": "cloudmap", "region": "us-west-2", "namespace": "internal", "service": "api"}
//!     ]
//! })).unwrap();
//! assert_eq!(config.sources.len(), 2);
//! assert_eq!(config.node, NodeNaming::Basename("app".into()));
//! ```
#![warn(missing_docs)]

mod aws;
#[doc(hidden)]
pub mod bench;
pub mod config;
#[cfg(test)]
mod docs_links;
pub mod doctor;
pub mod epmd;
mod error;
mod fingerprint;
#[cfg(test)]
mod fuzz;
pub mod metadata;
mod namespace;
mod partition;
mod peer;
mod poller;
mod sharing;
mod source;
mod this_task;
pub mod tls;

pub use config::{Config, NodeNaming, SourceConfig, KEYS};
pub use error::{Error, ErrorKind, SourceError};
pub use namespace::{
    Changes, Claim, Conflict, Event, Snapshot, SourceState, SourceStatus, SNAPSHOT_SCHEMA,
};
pub use peer::{Address, Peer, Region, SkipReason, Skipped, SourceId, StartedAt};
pub use poller::{discover, Poller, PollerHandle, Stopped, Subscription, Update};
pub use sharing::sharing_key;
pub use this_task::{this_task, ThisTask};
