//! The Erlang distribution bridge: can this host reach a peer's EPMD (port 4369) and its
//! distribution port, which names are registered there, and does a handshake with a cookie
//! succeed? EPMD and the handshake are spoken by the `erl_dist` crate.

use std::io::ErrorKind as IoKind;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use erl_dist::epmd::EpmdClient;
use erl_dist::handshake::{ClientSideHandshake, HandshakeError, HandshakeStatus};
use erl_dist::node::{Creation, LocalNode, NodeName};
use serde::Serialize;
use tokio::net::TcpStream;
use tokio_util::compat::TokioAsyncReadCompatExt;

/// EPMD's well-known port.
pub const EPMD_PORT: u16 = 4369;

/// How a TCP connection attempt ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Reach {
    /// Connected, after this many milliseconds.
    Open {
        /// Time to connect.
        rtt_ms: f64,
    },
    /// The host answered with a reset: nothing listens there, or a firewall rejects.
    Refused,
    /// No answer in time: packets are dropped (a security group, a missing route).
    TimedOut,
    /// The local network stack has no route to the address.
    NoRoute,
    /// Anything else.
    Failed {
        /// The OS error.
        error: String,
    },
}

impl Reach {
    /// The connection was made.
    pub fn is_open(&self) -> bool {
        matches!(self, Reach::Open { .. })
    }
}

/// Connects to `addr` within `timeout`.
pub(crate) async fn connect(addr: SocketAddr, timeout: Duration) -> (Reach, Option<TcpStream>) {
    let started = Instant::now();
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => (Reach::TimedOut, None),
        Ok(Ok(stream)) => {
            let rtt_ms = started.elapsed().as_secs_f64() * 1000.0;
            (
                Reach::Open {
                    rtt_ms: (rtt_ms * 100.0).round() / 100.0,
                },
                Some(stream),
            )
        }
        Ok(Err(e)) => (classify_io(&e), None),
    }
}

fn classify_io(e: &std::io::Error) -> Reach {
    match e.kind() {
        IoKind::ConnectionRefused => Reach::Refused,
        IoKind::TimedOut => Reach::TimedOut,
        IoKind::HostUnreachable | IoKind::NetworkUnreachable => Reach::NoRoute,
        _ => match e.raw_os_error() {
            // EHOSTUNREACH, ENETUNREACH on Linux and macOS.
            Some(113) | Some(101) | Some(65) | Some(51) => Reach::NoRoute,
            _ => Reach::Failed {
                error: e.to_string(),
            },
        },
    }
}

/// What a peer's EPMD answered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EpmdAnswer {
    /// How the connection to port 4369 went.
    pub reach: Reach,
    /// The registered node names and their distribution ports (when reachable).
    pub names: Vec<(String, u16)>,
    /// The NAMES request failed after connecting.
    pub error: Option<String>,
}

impl EpmdAnswer {
    /// The registered names (possibly none: that is EPMD's answer), or why there is no answer
    /// to choose from: EPMD could not be reached, or its NAMES answer failed (EPMD's or the
    /// connection's own error is kept: a failed answer is not "no node registered").
    pub fn registered(&self) -> Result<&[(String, u16)], String> {
        if !self.reach.is_open() {
            return Err(format!("its EPMD cannot be reached ({:?})", self.reach));
        }
        match &self.error {
            Some(e) => Err(format!(
                "its EPMD accepted the connection but the NAMES request failed: {e}"
            )),
            None => Ok(&self.names),
        }
    }
}

/// Asks the EPMD on `ip` for its registered names.
pub async fn names(ip: IpAddr, timeout: Duration) -> EpmdAnswer {
    names_at(SocketAddr::new(ip, EPMD_PORT), timeout).await
}

/// Asks the EPMD at `addr` (an address and port: [`EPMD_PORT`] but where a test serves its
/// own) for its registered names.
pub(crate) async fn names_at(addr: SocketAddr, timeout: Duration) -> EpmdAnswer {
    let (reach, stream) = connect(addr, timeout).await;
    let Some(stream) = stream else {
        return EpmdAnswer {
            reach,
            names: Vec::new(),
            error: None,
        };
    };
    match tokio::time::timeout(timeout, EpmdClient::new(stream.compat()).get_names()).await {
        Ok(Ok(mut names)) => {
            names.sort();
            EpmdAnswer {
                reach,
                names,
                error: None,
            }
        }
        Ok(Err(e)) => EpmdAnswer {
            reach,
            names: Vec::new(),
            error: Some(e.to_string()),
        },
        Err(_) => EpmdAnswer {
            reach,
            names: Vec::new(),
            error: Some("EPMD accepted the connection but did not answer NAMES in time".into()),
        },
    }
}

/// How a distribution handshake ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Handshake {
    /// The peer accepted our cookie and we accepted its.
    Ok,
    /// The cookies differ.
    CookieMismatch,
    /// The handshake failed otherwise.
    Failed {
        /// What went wrong.
        error: String,
    },
}

/// Performs a distribution handshake with the node listening at `ip:port` as a hidden node (it
/// does not join the cluster), then closes the connection. The doctor names itself
/// `ecs_peers_doctor_<pid>@<its own address on that connection>` (a long name, like the peers').
pub async fn handshake(ip: IpAddr, port: u16, cookie: &str, timeout: Duration) -> Handshake {
    let (reach, stream) = connect(SocketAddr::new(ip, port), timeout).await;
    let Some(stream) = stream else {
        return Handshake::Failed {
            error: format!("cannot connect to the distribution port: {reach:?}"),
        };
    };
    handshake_over(stream, cookie, timeout).await
}

/// A connection to a distribution port, in clear text or inside TLS (OTP's `inet_tls_dist`
/// runs the same handshake over the TLS session, framed by `doctor::tls::Packet4`): its own
/// address names the doctor's node.
pub(crate) trait DistStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin {
    /// The local address of the TCP connection underneath.
    fn local_ip(&self) -> std::io::Result<IpAddr>;
}

impl DistStream for TcpStream {
    fn local_ip(&self) -> std::io::Result<IpAddr> {
        self.local_addr().map(|a| a.ip())
    }
}

/// [`handshake`] over a connection already made (clear text or TLS), within twice `timeout`.
pub(crate) async fn handshake_over<S: DistStream>(
    stream: S,
    cookie: &str,
    timeout: Duration,
) -> Handshake {
    let attempt = async {
        let local_host = match stream.local_ip() {
            Ok(a) => a.to_string(),
            Err(e) => {
                return Handshake::Failed {
                    error: e.to_string(),
                }
            }
        };
        let name = format!("ecs_peers_doctor_{}@{local_host}", std::process::id());
        let local = match name.parse::<NodeName>() {
            Ok(n) => LocalNode::new(n, Creation::random()),
            Err(e) => {
                return Handshake::Failed {
                    error: format!("bad local node name {name}: {e}"),
                }
            }
        };
        let mut hs = ClientSideHandshake::new(stream.compat(), local, cookie);
        match hs
            .execute_send_name(erl_dist::LOWEST_DISTRIBUTION_PROTOCOL_VERSION)
            .await
        {
            Ok(
                HandshakeStatus::Ok
                | HandshakeStatus::OkSimultaneous
                | HandshakeStatus::Named { .. },
            ) => {}
            Ok(other) => {
                return Handshake::Failed {
                    error: format!("the peer refused the handshake: {other:?}"),
                }
            }
            Err(e) => return Handshake::Failed { error: io_text(e) },
        }
        match hs.execute_rest(true).await {
            Ok(_) => Handshake::Ok,
            Err(HandshakeError::CookieMismatch) => Handshake::CookieMismatch,
            // A node closes the connection when our challenge reply (made with our cookie) is wrong.
            Err(HandshakeError::Io(e)) if e.kind() == IoKind::UnexpectedEof => {
                Handshake::CookieMismatch
            }
            Err(e) => Handshake::Failed { error: io_text(e) },
        }
    };
    tokio::time::timeout(timeout * 2, attempt)
        .await
        .unwrap_or(Handshake::Failed {
            error: "no answer in time".into(),
        })
}

/// A handshake error as text; a TLS alert inside it is named (`alert bad_certificate`), so a
/// refusal by a TLS peer can be told from other failures.
fn io_text(e: HandshakeError) -> String {
    // dist_util's answer to a node it does not allow (OTP's allowed-nodes check, which the TLS
    // identity rule runs after the TLS handshake).
    if let HandshakeError::NotAllowed = e {
        return "not_allowed".into();
    }
    if let HandshakeError::Io(io) = &e {
        return io_error_text(io);
    }
    e.to_string()
}

/// An I/O error of a (TLS) connection as text: a TLS alert by its RFC 8446 name
/// (`alert bad_certificate`), the peer's close (`closed`) or reset (`reset`), else the error.
pub(crate) fn io_error_text(e: &std::io::Error) -> String {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::AlertReceived(alert)) => format!("alert {}", alert_name(*alert)),
        Some(other) => other.to_string(),
        None if e.kind() == IoKind::UnexpectedEof => "closed".to_string(),
        None if e.kind() == IoKind::ConnectionReset => "reset".to_string(),
        None => e.to_string(),
    }
}

/// A TLS alert's RFC 8446 name: rustls's CamelCase variant in snake_case (`BadCertificate`:
/// `bad_certificate`, `UnknownCA`: `unknown_ca`).
pub(crate) fn alert_name(alert: rustls::AlertDescription) -> String {
    let name = format!("{alert:?}");
    let mut out = String::new();
    let mut previous_lower = false;
    for c in name.chars() {
        if c.is_ascii_uppercase() && previous_lower {
            out.push('_');
        }
        previous_lower = c.is_ascii_lowercase();
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// Does the node at `ip:port` answer the clear-text distribution handshake? Sends the first
/// message (send_name) and reads the status: any status is a clear-text distribution answer;
/// a TLS listener answers with an alert or closes. Within `timeout` per step.
pub(crate) async fn answers_clear_text(ip: IpAddr, port: u16, timeout: Duration) -> bool {
    let (_, Some(stream)) = connect(SocketAddr::new(ip, port), timeout).await else {
        return false;
    };
    let Ok(local) = format!("ecs_peers_doctor_{}@{}", std::process::id(), ip).parse::<NodeName>()
    else {
        return false;
    };
    let local = LocalNode::new(local, Creation::random());
    // The cookie is never used: only the first exchange (name, then status) happens.
    let mut hs = ClientSideHandshake::new(stream.compat(), local, "");
    matches!(
        tokio::time::timeout(
            timeout,
            hs.execute_send_name(erl_dist::LOWEST_DISTRIBUTION_PROTOCOL_VERSION)
        )
        .await,
        Ok(Ok(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_map_to_reach() {
        let e = std::io::Error::from(IoKind::ConnectionRefused);
        assert_eq!(classify_io(&e), Reach::Refused);
        let e = std::io::Error::from_raw_os_error(113);
        assert_eq!(classify_io(&e), Reach::NoRoute);
        let e = std::io::Error::from_raw_os_error(101);
        assert_eq!(classify_io(&e), Reach::NoRoute);
    }

    #[tokio::test]
    async fn a_closed_loopback_port_is_refused_and_an_open_one_is_open() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap();
        let (reach, _) = connect(open, Duration::from_secs(1)).await;
        assert!(reach.is_open(), "{reach:?}");
        drop(listener);
        let (reach, _) = connect(open, Duration::from_secs(1)).await;
        assert_eq!(reach, Reach::Refused);
    }

    /// An EPMD that accepts and then fails the NAMES request says so; it is not reported as
    /// "no node registered".
    #[tokio::test]
    async fn a_failed_names_answer_keeps_its_reason() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            // Accept, then close without answering.
            while let Ok((s, _)) = listener.accept().await {
                drop(s);
            }
        });
        let (reach, stream) = connect(addr, Duration::from_secs(1)).await;
        assert!(reach.is_open());
        let answer = match EpmdClient::new(stream.unwrap().compat()).get_names().await {
            Ok(names) => EpmdAnswer {
                reach,
                names,
                error: None,
            },
            Err(e) => EpmdAnswer {
                reach,
                names: Vec::new(),
                error: Some(e.to_string()),
            },
        };
        let why = answer.registered().unwrap_err();
        assert!(
            why.starts_with("its EPMD accepted the connection but the NAMES request failed: "),
            "{why}"
        );
        let empty = EpmdAnswer {
            reach: Reach::Open { rtt_ms: 0.1 },
            names: Vec::new(),
            error: None,
        };
        assert_eq!(empty.registered().unwrap(), &[] as &[(String, u16)]);
        let refused = EpmdAnswer {
            reach: Reach::Refused,
            names: Vec::new(),
            error: None,
        };
        assert_eq!(
            refused.registered().unwrap_err(),
            "its EPMD cannot be reached (Refused)"
        );
    }
}
