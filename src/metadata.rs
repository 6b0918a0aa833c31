//! Zero-config inside ECS: the task metadata endpoint v4 (`$ECS_CONTAINER_METADATA_URI_V4/task`)
//! tells a task its cluster, its own ARN (hence its region), its AZ, its family (and, on EC2 with a
//! recent agent, its service) and its private IP.

use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::{ErrorKind, SourceError};

/// The environment variable the ECS agent sets in every container.
pub const METADATA_ENV: &str = "ECS_CONTAINER_METADATA_URI_V4";

/// What the task metadata endpoint says about this task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskMetadata {
    /// The cluster's ARN or short name.
    pub cluster: String,
    /// This task's ARN.
    pub task_arn: String,
    /// The region, from the task ARN.
    pub region: String,
    /// The task definition family.
    pub family: Option<String>,
    /// The service, when the agent reports it (EC2 launch type, agent 1.63.1 or later).
    pub service: Option<String>,
    /// The availability zone.
    pub availability_zone: Option<String>,
    /// The task's private IPv4 address (awsvpc).
    pub private_ip: Option<IpAddr>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Raw {
    cluster: String,
    #[serde(rename = "TaskARN")]
    task_arn: String,
    family: Option<String>,
    service_name: Option<String>,
    availability_zone: Option<String>,
    #[serde(default)]
    containers: Vec<RawContainer>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawContainer {
    #[serde(default)]
    networks: Vec<RawNetwork>,
}

#[derive(Deserialize)]
struct RawNetwork {
    #[serde(rename = "IPv4Addresses", default)]
    ipv4: Vec<String>,
}

/// Parses the `/task` JSON document.
///
/// ```
/// let md = ecs_peers::metadata::parse(r#"{
///   "Cluster": "arn:aws:ecs:eu-west-2:111122223333:cluster/web",
///   "TaskARN": "arn:aws:ecs:eu-west-2:111122223333:task/web/0a1b2c",
///   "Family": "api", "AvailabilityZone": "eu-west-2a",
///   "Containers": [{"Networks": [{"NetworkMode": "awsvpc", "IPv4Addresses": ["10.1.0.5"]}]}]
/// }"#).unwrap();
/// assert_eq!((md.region.as_str(), md.private_ip.unwrap().to_string().as_str()), ("eu-west-2", "10.1.0.5"));
/// ```
pub fn parse(json: &str) -> Result<TaskMetadata, String> {
    let raw: Raw =
        serde_json::from_str(json).map_err(|e| format!("not a task metadata document: {e}"))?;
    let region = raw
        .task_arn
        .strip_prefix("arn:")
        .and_then(|r| r.split(':').nth(2))
        .filter(|r| !r.is_empty())
        .ok_or_else(|| format!("TaskARN {:?} is not an ARN with a region", raw.task_arn))?
        .to_string();
    let private_ip = raw
        .containers
        .iter()
        .flat_map(|c| &c.networks)
        .flat_map(|n| &n.ipv4)
        .find_map(|a| a.parse().ok());
    Ok(TaskMetadata {
        cluster: raw.cluster,
        task_arn: raw.task_arn,
        region,
        family: raw.family,
        service: raw.service_name.filter(|s| !s.is_empty()),
        availability_zone: raw.availability_zone,
        private_ip,
    })
}

/// Reads `/task` from the endpoint in `$ECS_CONTAINER_METADATA_URI_V4` (or `uri`, for tests).
pub async fn fetch(uri: Option<&str>) -> Result<TaskMetadata, SourceError> {
    let err = |kind, message: String| {
        SourceError::new(kind, "ecs:task-metadata", message).with_fix(
            "run inside an ECS task (the ECS agent sets ECS_CONTAINER_METADATA_URI_V4; Fargate platform 1.4.0 or later), or name the cluster instead of \"auto\"",
        )
    };
    let base = match uri {
        Some(u) => u.to_string(),
        None => std::env::var(METADATA_ENV)
            .map_err(|_| err(ErrorKind::NotFound, format!("{METADATA_ENV} is not set")))?,
    };
    let url = format!("{}/task", base.trim_end_matches('/'));
    let body = tokio::time::timeout(Duration::from_secs(3), get(&url))
        .await
        .map_err(|_| err(ErrorKind::Timeout, format!("{url} did not answer in 3 s")))?
        .map_err(|e| err(ErrorKind::Unreachable, format!("GET {url}: {e}")))?;
    parse(&body).map_err(|e| err(ErrorKind::Malformed, e))
}

/// A plain HTTP GET (the endpoint is link-local http, no TLS, no redirects).
async fn get(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// is supported")?;
    let (authority, path) = rest
        .split_once('/')
        .map(|(a, p)| (a, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let addr = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let mut s = tokio::net::TcpStream::connect(&addr)
        .await
        .map_err(|e| e.to_string())?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nAccept: application/json\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.take(4 << 20)
        .read_to_end(&mut buf)
        .await
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP response")?;
    let status = head.split(' ').nth(1).unwrap_or("");
    if status != "200" {
        return Err(format!("HTTP {status}"));
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).map_err(|_| "bad chunk")?;
            if n == 0 || tail.len() < n {
                break;
            }
            out.push_str(&tail[..n]);
            rest = tail[n..].trim_start_matches("\r\n");
        }
        return Ok(out);
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The v4 `/task` shape (abridged from AWS's documented Fargate example).
    pub(crate) const FARGATE_TASK: &str = r#"{
      "Cluster": "arn:aws:ecs:us-west-2:111122223333:cluster/default",
      "TaskARN": "arn:aws:ecs:us-west-2:111122223333:task/default/e9028f8d5d8e4f258373e7b93ce9a3c3",
      "Family": "curltest", "Revision": "3", "DesiredStatus": "RUNNING", "KnownStatus": "RUNNING",
      "Limits": {"CPU": 0.25, "Memory": 512},
      "AvailabilityZone": "us-west-2d", "LaunchType": "FARGATE",
      "Containers": [{
        "DockerId": "e9028f8d5d8e4f258373e7b93ce9a3c3-2495160603", "Name": "curl",
        "Networks": [{"NetworkMode": "awsvpc", "IPv4Addresses": ["10.0.0.108"],
                      "AttachmentIndex": 0, "MACAddress": "0e:fa:ba:3c:8c:e7",
                      "IPv4SubnetCIDRBlock": "10.0.0.0/24", "PrivateDNSName": "ip-10-0-0-108.us-west-2.compute.internal",
                      "SubnetGatewayIpv4Address": "10.0.0.1/24"}]
      }],
      "ClockDrift": {"ClockErrorBound": 0.5, "ReferenceTimestamp": "2021-09-07T16:57:42Z", "ClockSynchronizationStatus": "SYNCHRONIZED"},
      "EphemeralStorageMetrics": {"Utilized": 261, "Reserved": 20496}
    }"#;

    #[test]
    fn parses_the_documented_fargate_shape() {
        let md = parse(FARGATE_TASK).unwrap();
        assert_eq!(md.region, "us-west-2");
        assert_eq!(
            md.cluster,
            "arn:aws:ecs:us-west-2:111122223333:cluster/default"
        );
        assert_eq!(md.family.as_deref(), Some("curltest"));
        assert_eq!(md.service, None);
        assert_eq!(md.availability_zone.as_deref(), Some("us-west-2d"));
        assert_eq!(md.private_ip.unwrap().to_string(), "10.0.0.108");
    }

    #[test]
    fn short_cluster_names_and_service_names_are_kept() {
        let md = parse(r#"{"Cluster": "default", "ServiceName": "MyService", "TaskARN": "arn:aws:ecs:eu-west-1:1:task/default/x"}"#).unwrap();
        assert_eq!(
            (
                md.cluster.as_str(),
                md.region.as_str(),
                md.service.as_deref()
            ),
            ("default", "eu-west-1", Some("MyService"))
        );
        assert!(md.private_ip.is_none());
        assert!(parse("{}")
            .unwrap_err()
            .starts_with("not a task metadata document"));
        assert!(parse(r#"{"Cluster": "c", "TaskARN": "nope"}"#)
            .unwrap_err()
            .contains("is not an ARN"));
    }

    #[tokio::test]
    async fn fetches_from_a_served_document_and_explains_failures() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut req = [0u8; 1024];
                let n = s.read(&mut req).await.unwrap_or(0);
                let ok = String::from_utf8_lossy(&req[..n]).starts_with("GET /v4/abc/task ");
                let resp = if ok {
                    format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{FARGATE_TASK}", FARGATE_TASK.len())
                } else {
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_string()
                };
                let _ = s.write_all(resp.as_bytes()).await;
            }
        });
        let md = fetch(Some(&format!("http://{addr}/v4/abc"))).await.unwrap();
        assert_eq!(md.private_ip.unwrap().to_string(), "10.0.0.108");
        let e = fetch(Some(&format!("http://{addr}/v4/other")))
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unreachable);
        assert!(e.to_string().contains("HTTP 404"), "{e}");
        assert!(e.to_string().contains("Fix: run inside an ECS task"), "{e}");
    }
}
