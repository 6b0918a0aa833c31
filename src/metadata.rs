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
    /// The task's private address (awsvpc), chosen among the addresses its networks report by
    /// the same rule as a peer's (IPv4 when the task has
    /// one, else IPv6), so the task recognises itself among the peers.
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
    #[serde(rename = "IPv6Addresses", default)]
    ipv6: Vec<String>,
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
    let region = crate::partition::Arn::parse(&raw.task_arn)
        .map(|a| a.region)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| format!("TaskARN {:?} is not an ARN with a region", raw.task_arn))?
        .to_string();
    let private_ip = crate::peer::task_address(
        raw.containers
            .iter()
            .flat_map(|c| &c.networks)
            .flat_map(|n| n.ipv4.iter().chain(&n.ipv6))
            .filter_map(|a| crate::peer::parse_ip(a)),
    );
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

/// The fix when this process is not in an ECS task at all.
const NOT_IN_A_TASK: &str = "run inside an ECS task (the ECS agent sets ECS_CONTAINER_METADATA_URI_V4; Fargate platform 1.4.0 or later), or name the cluster instead of \"auto\"";

/// Reads `/task` from the endpoint in `$ECS_CONTAINER_METADATA_URI_V4` (or `uri`, for tests).
///
/// # Errors
///
/// A [`SourceError`] for action `ecs:task-metadata`, classified by what happened: the variable
/// is not set (`not_found`: not in an ECS task); no answer (`unreachable`, `timeout`); an HTTP
/// answer other than 200, by its status ([`ErrorKind::from_http_status`]: a 400 is `client`,
/// a 5xx `service`), with the agent's own reason from the body; a body that is not a task
/// metadata document (`malformed`). The I/O error, when there is one, is the error's
/// [`source`](std::error::Error::source).
pub async fn fetch(uri: Option<&str>) -> Result<TaskMetadata, SourceError> {
    const ACTION: &str = "ecs:task-metadata";
    let base = base_url(uri, std::env::var(METADATA_ENV).ok())?;
    let url = format!("{}/task", base.trim_end_matches('/'));
    let body = match tokio::time::timeout(Duration::from_secs(3), get(&url)).await {
        Err(_) => {
            return Err(SourceError::new(ErrorKind::Timeout, ACTION, format!("{url} did not answer in 3 s"))
                .with_fix(format!("the ECS agent's metadata endpoint did not answer; check that {url} is this container's own ECS_CONTAINER_METADATA_URI_V4 (on EC2, that the ECS agent is running), or name the cluster instead of \"auto\"")))
        }
        Ok(Ok(body)) => body,
        Ok(Err(e)) => return Err(e.into_source_error(ACTION, &url)),
    };
    parse(&body).map_err(|e| {
        SourceError::new(ErrorKind::Malformed, ACTION, format!("GET {url}: {e}")).with_fix(format!(
            "{url} did not answer with a task metadata document: check that it is the ECS agent's v4 endpoint (ECS_CONTAINER_METADATA_URI_V4, not the v3 one), or name the cluster instead of \"auto\""
        ))
    })
}

/// The endpoint: `uri` when given, else the agent's variable (`env`); neither means this
/// process is not in an ECS task.
fn base_url(uri: Option<&str>, env: Option<String>) -> Result<String, SourceError> {
    match (uri, env) {
        (Some(u), _) => Ok(u.to_string()),
        (None, Some(e)) => Ok(e),
        (None, None) => Err(SourceError::new(
            ErrorKind::NotFound,
            "ecs:task-metadata",
            format!("{METADATA_ENV} is not set"),
        )
        .with_fix(NOT_IN_A_TASK)),
    }
}

/// How a GET of the endpoint failed.
#[derive(Debug)]
pub(crate) enum GetError {
    /// The URL is not one this client can ask (not `http://`).
    Url(&'static str),
    /// No HTTP answer: the connection failed or broke.
    Io(std::io::Error),
    /// An answer that is not HTTP.
    NotHttp,
    /// An HTTP answer other than 200, with its body (the agent's reason).
    Status(u16, String),
}

impl GetError {
    /// Classifies by what happened: only a failure to get any answer is `unreachable`; an HTTP
    /// answer is classified by its status and keeps the remote's own reason.
    fn into_source_error(self, action: &'static str, url: &str) -> SourceError {
        match self {
            GetError::Url(why) => SourceError::new(ErrorKind::InvalidRequest, action, format!("{url}: {why}"))
                .with_fix("metadata_url (or ECS_CONTAINER_METADATA_URI_V4) must be the agent's http:// URL"),
            GetError::Io(e) => SourceError::new(ErrorKind::Unreachable, action, format!("GET {url}: {e}"))
                .with_fix(format!("the ECS agent's metadata endpoint cannot be reached at {url}; check that it is this container's own ECS_CONTAINER_METADATA_URI_V4 (a value copied from elsewhere points nowhere), or name the cluster instead of \"auto\""))
                .with_cause(e),
            GetError::NotHttp => SourceError::new(ErrorKind::Malformed, action, format!("GET {url}: the answer is not HTTP"))
                .with_fix(format!("check that {url} is the ECS agent's metadata endpoint, or name the cluster instead of \"auto\"")),
            GetError::Status(status, body) => {
                let kind = ErrorKind::from_http_status(status);
                let message = format!("GET {url}: HTTP {status}: {}", crate::error::excerpt(body.as_bytes()));
                let fix = match kind {
                    ErrorKind::NotFound => format!("the endpoint serves no task metadata at {url}: use the v4 endpoint from ECS_CONTAINER_METADATA_URI_V4 (ECS agent 1.39.0 or later; Fargate platform 1.4.0 or later), or name the cluster instead of \"auto\""),
                    ErrorKind::Service | ErrorKind::Throttled => "the ECS agent failed to answer; it is asked again on the next poll; if this persists, check the ECS agent (on EC2: its log, /var/log/ecs/ecs-agent.log), or name the cluster instead of \"auto\"".to_string(),
                    _ => format!("the ECS agent answered but would not match this request to a task: call {url} from a container of the task itself, with that container's own ECS_CONTAINER_METADATA_URI_V4 (not a value copied from another container or set by hand); if the ECS agent was restarted since the task started, restart the task; or name the cluster instead of \"auto\""),
                };
                SourceError::new(kind, action, message).with_fix(fix)
            }
        }
    }
}

/// A plain HTTP GET (the endpoint is link-local http, no TLS, no redirects).
async fn get(url: &str) -> Result<String, GetError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or(GetError::Url("only http:// is supported"))?;
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
        .map_err(GetError::Io)?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nAccept: application/json\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.map_err(GetError::Io)?;
    let mut buf = Vec::new();
    s.take(4 << 20)
        .read_to_end(&mut buf)
        .await
        .map_err(GetError::Io)?;
    let (status, body) = read_response(&buf)?;
    if status != 200 {
        return Err(GetError::Status(status, body));
    }
    Ok(body)
}

/// A whole HTTP/1.x response (the server closed the connection after it): its status and its
/// body, de-chunked, as text. Any bytes give a value or an error, never a panic: chunks are
/// joined as bytes, so a character split across two chunks is read whole.
pub(crate) fn read_response(buf: &[u8]) -> Result<(u16, String), GetError> {
    fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
        hay.windows(needle.len()).position(|w| w == needle)
    }
    let split = find(buf, b"\r\n\r\n").ok_or(GetError::NotHttp)?;
    let head = String::from_utf8_lossy(&buf[..split]);
    let mut body = &buf[split + 4..];
    let status: u16 = head
        .strip_prefix("HTTP/")
        .and_then(|h| h.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or(GetError::NotHttp)?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let bytes = if chunked {
        let mut out = Vec::new();
        while let Some(eol) = find(body, b"\r\n") {
            // The size line may carry extensions after ';' (RFC 9112 7.1.1).
            let size = std::str::from_utf8(&body[..eol])
                .ok()
                .and_then(|l| l.split(';').next())
                .and_then(|n| usize::from_str_radix(n.trim(), 16).ok())
                .ok_or(GetError::NotHttp)?;
            let data = &body[eol + 2..];
            if size == 0 || data.len() < size {
                break;
            }
            out.extend_from_slice(&data[..size]);
            body = data[size..].strip_prefix(b"\r\n").unwrap_or(&data[size..]);
        }
        out
    } else {
        body.to_vec()
    };
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
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
    fn the_region_is_read_from_a_task_arn_of_any_partition() {
        for (partition, region) in [
            ("aws-eusc", "eusc-de-east-1"),
            ("aws-cn", "cn-north-1"),
            ("aws-us-gov", "us-gov-west-1"),
        ] {
            let doc = format!(
                r#"{{"Cluster": "web", "TaskARN": "arn:{partition}:ecs:{region}:1:task/web/x"}}"#
            );
            assert_eq!(parse(&doc).unwrap().region, region);
        }
        assert!(parse(r#"{"Cluster": "web", "TaskARN": "web/x"}"#)
            .unwrap_err()
            .contains("is not an ARN with a region"));
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

    /// Serves `/v4/abc/task` with the Fargate document, `/v4/assoc/task` with the ECS agent's
    /// 400 answer to a caller it cannot match to a task, `/v4/down/task` with a 503, and 404
    /// for anything else. Returns the base URL.
    async fn agent() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut req = [0u8; 1024];
                let n = s.read(&mut req).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&req[..n]).to_string();
                let (status, body) = if req.starts_with("GET /v4/abc/task ") {
                    ("200 OK", FARGATE_TASK.to_string())
                } else if req.starts_with("GET /v4/assoc/task ") {
                    (
                        "400 Bad Request",
                        "\"V4 task metadata handler: unable to associate '172.17.0.5' with task\"\n"
                            .to_string(),
                    )
                } else if req.starts_with("GET /v4/down/task ") {
                    ("503 Service Unavailable", "agent is restarting".to_string())
                } else {
                    ("404 Not Found", "404 page not found\n".to_string())
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn fetches_from_a_served_document_and_explains_failures() {
        let base = agent().await;
        let md = fetch(Some(&format!("{base}/v4/abc"))).await.unwrap();
        assert_eq!(md.private_ip.unwrap().to_string(), "10.0.0.108");
        // An HTTP answer is not "unreachable": a 404 is the endpoint saying it has no such path.
        let e = fetch(Some(&format!("{base}/v4/other"))).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
        assert!(
            e.to_string().contains("HTTP 404: 404 page not found"),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains("Fix: the endpoint serves no task metadata"),
            "{e}"
        );
    }

    /// Field report: inside a task, the agent answers 400 with its reason; the reason was
    /// dropped, the kind was `unreachable`, and the fix told a process inside a task to run
    /// inside a task.
    #[tokio::test]
    async fn an_agent_refusal_keeps_its_reason_and_is_a_client_error() {
        let base = agent().await;
        let e = fetch(Some(&format!("{base}/v4/assoc"))).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Client, "{e}");
        assert_eq!(e.action, "ecs:task-metadata");
        assert!(
            e.message
                .contains("HTTP 400: \"V4 task metadata handler: unable to associate '172.17.0.5' with task\""),
            "the agent's reason is kept: {e}"
        );
        let fix = e.fix.as_deref().unwrap();
        assert!(!fix.contains("run inside an ECS task"), "{fix}");
        assert!(
            fix.contains("would not match this request to a task"),
            "{fix}"
        );
        assert!(!e.kind.backs_off());

        let e = fetch(Some(&format!("{base}/v4/down"))).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Service, "{e}");
        assert!(e.message.contains("HTTP 503: agent is restarting"), "{e}");
        assert!(
            !e.fix.as_deref().unwrap().contains("run inside an ECS task"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn no_answer_at_all_is_unreachable_and_keeps_the_io_error_as_cause() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let e = fetch(Some(&format!("http://{addr}/v4/abc")))
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unreachable, "{e}");
        let cause = std::error::Error::source(&e).expect("the I/O error is the cause");
        let io = cause
            .downcast_ref::<std::io::Error>()
            .expect("an io::Error");
        assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
        assert!(
            e.to_string()
                .contains("Fix: the ECS agent's metadata endpoint cannot be reached"),
            "{e}"
        );
    }

    #[test]
    fn responses_are_read_as_bytes_never_a_panic() {
        // "é" (0xC3 0xA9) split across two chunks: slicing text by chunk sizes panicked.
        let split = b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nx\xC3\r\n2;ext=1\r\n\xA9y\r\n0\r\n\r\n";
        let (status, body) = read_response(split).unwrap();
        assert_eq!((status, body.as_str()), (400, "xéy"));
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(read_response(plain).unwrap(), (200, "{}".to_string()));
        for bad in [
            &b""[..],
            b"garbage",
            b"HTTP/1.1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ] {
            assert!(
                matches!(read_response(bad), Err(GetError::NotHttp)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn outside_a_task_the_fix_says_run_inside_one() {
        let e = base_url(None, None).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert!(e.to_string().contains("Fix: run inside an ECS task"), "{e}");
        assert_eq!(base_url(None, Some("http://x".into())).unwrap(), "http://x");
    }

    /// Field report: a task whose metadata has only `IPv6Addresses` listed itself as its own
    /// peer, since only IPv4 was read.
    #[test]
    fn an_ipv6_only_task_knows_its_address() {
        let md = parse(
            r#"{"Cluster": "web", "TaskARN": "arn:aws:ecs:eu-west-2:1:task/web/x",
                "Containers": [{"Networks": [{"NetworkMode": "awsvpc", "IPv6Addresses": ["2001:db8:1::5"]}]}]}"#,
        )
        .unwrap();
        assert_eq!(md.private_ip.unwrap().to_string(), "2001:db8:1::5");
        // Dual stack: IPv4, as for peers.
        let md = parse(
            r#"{"Cluster": "web", "TaskARN": "arn:aws:ecs:eu-west-2:1:task/web/x",
                "Containers": [{"Networks": [{"NetworkMode": "awsvpc", "IPv4Addresses": ["10.0.0.5"], "IPv6Addresses": ["2001:db8:1::5"]}]}]}"#,
        )
        .unwrap();
        assert_eq!(md.private_ip.unwrap().to_string(), "10.0.0.5");
    }
}
