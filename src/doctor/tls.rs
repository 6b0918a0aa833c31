//! The doctor's TLS check: does a peer's distribution port speak TLS, whose certificate does it
//! present (issuer, the names it carries, its notAfter), and does it accept ours.
//!
//! OTP's `inet_tls_dist` runs TLS on the distribution port and then the ordinary distribution
//! handshake inside it (ssl-10.8.7 `inet_tls_dist:do_setup_connect/5`), so the check is a TLS
//! client (rustls on the aws-lc-rs backend the AWS SDK already builds) presenting this task's
//! certificate, followed by the same handshake code as the clear-text path
//! ([`crate::epmd::handshake_over`]), its messages framed as `inet_tls_dist` frames them
//! ([`Packet4`]). Its verifier records rather than decides: a certificate
//! of another CA, for another address or expired still completes the TLS handshake, so the
//! diagnosis can say which of these it is; the cookie's handshake is run only inside a TLS
//! session whose certificate passes every check (a challenge answered with our cookie goes only
//! to a node our CA vouches for).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivateSec1KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::Serialize;
use tokio::net::TcpStream;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::epmd::{self, io_error_text, Handshake};

/// What the doctor presents and trusts when it checks peers over TLS: the cluster CA's
/// certificates and, when it has one, a certificate of that CA for the doctor's own address
/// (this task's, from [`crate::tls::credentials`], or the node's own in-process). `Debug` never
/// prints the key.
#[derive(Clone)]
pub struct TlsClient {
    /// The cluster CA's certificates, DER: a peer's chain must end at one of them.
    pub cacerts: Vec<Vec<u8>>,
    /// Our certificate (DER) and its key (SEC1 `ECPrivateKey` DER); `None`: no certificate to
    /// present (the doctor could not get one), so every peer that requires one refuses us.
    pub identity: Option<(Vec<u8>, zeroize::Zeroizing<Vec<u8>>)>,
    /// The cluster's `tls_validity`: a peer certificate with less than a quarter of it left is
    /// expiring (see [`expiring_margin`]).
    pub validity: Duration,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let TlsClient {
            cacerts,
            identity,
            validity,
        } = self;
        f.debug_struct("TlsClient")
            .field("cacerts", &cacerts.len())
            .field(
                "identity",
                &identity
                    .as_ref()
                    .map(|(c, _)| format!("{} bytes, key elided", c.len())),
            )
            .field("validity", validity)
            .finish()
    }
}

/// A certificate with less than this left is expiring. Nodes renew when a third of the validity
/// is left (docs/tls.md, "Renewal"), so a quarter means renewals have been failing for a
/// twelfth of it (2 h at the default 24 h). It stays below the third left at renewal for every
/// validity: a fixed floor above that (5 minutes, under a 15-minute validity) would call every
/// healthy certificate expiring.
pub fn expiring_margin(validity: Duration) -> Duration {
    validity / 4
}

/// How the TLS check of one peer ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum TlsOutcome {
    /// The TLS handshake completed both ways (the peer accepted our certificate).
    Ok,
    /// The peer does not speak TLS on its distribution port: it answers the clear-text
    /// distribution handshake.
    ClearText,
    /// The peer speaks TLS and presented its certificate, then refused ours (a TLS alert, or
    /// it closed the connection during or right after the handshake).
    RefusedUs {
        /// The alert it sent, or how it closed.
        alert: String,
    },
    /// We checked in clear text (no `tls_ca`) and the peer requires TLS: it presented a
    /// certificate to a TLS probe.
    RequiresTls,
    /// Neither TLS nor the clear-text distribution handshake got an answer.
    Failed {
        /// What went wrong.
        error: String,
    },
}

/// The facts of the certificate a peer presented.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerCertificate {
    /// Its issuer's distinguished name, as text.
    pub issuer: String,
    /// Its chain ends at our cluster CA (checked at a time inside its validity: expiry is
    /// judged by `not_after`, apart); `None`: no CA to check it against (the doctor could not
    /// read the CA, or checked in clear text).
    pub issuer_ok: Option<bool>,
    /// Its subjectAltName entries: iPAddress as text, dNSName as written.
    pub names: Vec<String>,
    /// One of `names` is the peer's address (an iPAddress equal to it, or a dNSName equal to
    /// its text, as OTP's distribution compares them).
    pub names_address: bool,
    /// Its notAfter, Unix seconds.
    pub not_after: i64,
    /// Seconds from the check to `not_after` (negative: expired).
    pub expires_in_s: i64,
}

/// The TLS check of one peer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TlsCheck {
    /// The check spoke TLS (the doctor or node has `tls_ca`); `false`: it spoke clear text and
    /// probed whether the peer requires TLS.
    pub we_speak_tls: bool,
    /// The peer speaks TLS on its distribution port (`None`: unknown, nothing answered).
    pub speaks_tls: Option<bool>,
    /// How it ended.
    pub outcome: TlsOutcome,
    /// The certificate the peer presented, when it presented one.
    pub certificate: Option<PeerCertificate>,
    /// The margin `certificate` was judged expiring by, seconds (see [`expiring_margin`]).
    pub expiring_margin_s: u64,
}

impl TlsCheck {
    /// The check in a few words, for the doctor's table: whether the peer speaks TLS, whether
    /// its chain ends at our CA, whether it names its address, when it expires, and whether it
    /// took ours. What fails a check is in capitals: `our CA, names it, expires in 59 min`;
    /// `OTHER CA, names it, expires in 23 h 59 min, REFUSED OURS (alert unknown_ca)`;
    /// `CLEAR TEXT`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        match &self.outcome {
            TlsOutcome::ClearText => return "CLEAR TEXT".into(),
            TlsOutcome::RequiresTls => parts.push("REQUIRES TLS".to_string()),
            TlsOutcome::Failed { .. } if self.certificate.is_none() => return "no answer".into(),
            TlsOutcome::Ok | TlsOutcome::RefusedUs { .. } | TlsOutcome::Failed { .. } => {}
        }
        if let Some(c) = &self.certificate {
            parts.push(
                match c.issuer_ok {
                    Some(true) => "our CA",
                    Some(false) => "OTHER CA",
                    None => "CA not checked",
                }
                .to_string(),
            );
            parts.push(if c.names_address {
                "names it".to_string()
            } else {
                format!(
                    "NAMES {}",
                    if c.names.is_empty() {
                        "NOTHING".to_string()
                    } else {
                        c.names.join(" ")
                    }
                )
            });
            let margin = i64::try_from(self.expiring_margin_s).unwrap_or(i64::MAX);
            parts.push(match c.expires_in_s {
                s if s <= 0 => format!("EXPIRED {} ago", seconds(-s)),
                s if s < margin => format!("EXPIRES IN {}", seconds(s)),
                s => format!("expires in {}", seconds(s)),
            });
        }
        if let TlsOutcome::RefusedUs { alert } = &self.outcome {
            parts.push(format!("REFUSED OURS ({alert})"));
        }
        parts.join(", ")
    }

    /// The peer's certificate passes every check: our CA, its address, not expired.
    pub fn trusted(&self) -> bool {
        self.certificate
            .as_ref()
            .is_some_and(|c| c.issuer_ok == Some(true) && c.names_address && c.expires_in_s > 0)
    }
}

/// Checks the peer at `ip:port` over TLS with `client`, then, when its certificate passes and a
/// cookie is given, runs the distribution handshake inside the TLS session. Returns the TLS
/// facts and the handshake's outcome (`None`: not run). A peer that does not complete a TLS
/// handshake is asked the clear-text distribution handshake's first message, to tell a
/// clear-text node from a dead port.
pub(super) async fn check(
    ip: IpAddr,
    port: u16,
    client: &TlsClient,
    cookie: Option<&str>,
    timeout: Duration,
) -> (TlsCheck, Option<Handshake>) {
    let margin = expiring_margin(client.validity);
    let (outcome, certificate, stream) = tls_connect(ip, port, client, timeout).await;
    let mut check = TlsCheck {
        we_speak_tls: true,
        speaks_tls: certificate.as_ref().map(|_| true),
        outcome,
        certificate,
        expiring_margin_s: margin.as_secs(),
    };
    let Some(stream) = stream else {
        if check.certificate.is_none() && epmd::answers_clear_text(ip, port, timeout).await {
            check.speaks_tls = Some(false);
            check.outcome = TlsOutcome::ClearText;
        }
        return (check, None);
    };
    let (Some(cookie), true) = (cookie, check.trusted()) else {
        return (check, None);
    };
    let handshake = epmd::handshake_over(Packet4::new(stream), cookie, timeout).await;
    // An acceptor that refuses our certificate after the TLS handshake (OTP's allowed-nodes
    // check: our name's host is not one our certificate names, or not a listed address) closes
    // the connection during the distribution handshake; TLS 1.3 reports a refused client
    // certificate at the first read too.
    if let Handshake::Failed { error } = &handshake {
        if let Some(alert) = refusal(error) {
            check.outcome = TlsOutcome::RefusedUs { alert };
            return (check, None);
        }
    }
    (check, Some(handshake))
}

/// The clear-text check's probe: does the peer, which did not complete a clear-text
/// handshake, present a TLS certificate? Then it requires TLS and we do not speak it.
pub(super) async fn probe(ip: IpAddr, port: u16, timeout: Duration) -> Option<TlsCheck> {
    let client = TlsClient {
        cacerts: Vec::new(),
        identity: None,
        validity: default_tls_validity(),
    };
    let (_, certificate, _) = tls_connect(ip, port, &client, timeout).await;
    certificate.map(|c| TlsCheck {
        we_speak_tls: false,
        speaks_tls: Some(true),
        outcome: TlsOutcome::RequiresTls,
        certificate: Some(c),
        expiring_margin_s: expiring_margin(client.validity).as_secs(),
    })
}

/// `tls_validity`'s default, from the key table (a clear-text check knows no validity).
pub fn default_tls_validity() -> Duration {
    crate::config::KEYS
        .iter()
        .find_map(|k| match (k.key, &k.ty) {
            ("tls_validity", crate::config::Type::Duration { default_ms, .. }) => {
                Some(Duration::from_millis(*default_ms))
            }
            _ => None,
        })
        .unwrap_or(Duration::from_secs(86_400))
}

type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

/// One TLS handshake with the peer: how it ended, the certificate recorded, and the stream
/// when it completed.
async fn tls_connect(
    ip: IpAddr,
    port: u16,
    client: &TlsClient,
    timeout: Duration,
) -> (TlsOutcome, Option<PeerCertificate>, Option<TlsStream>) {
    let recorder = Arc::new(Recorder::new(ip, &client.cacerts));
    let config = match client_config(client, recorder.clone()) {
        Ok(c) => c,
        Err(error) => return (TlsOutcome::Failed { error }, None, None),
    };
    let (reach, tcp) = epmd::connect(SocketAddr::new(ip, port), timeout).await;
    let Some(tcp) = tcp else {
        let error = format!("cannot connect to the distribution port: {reach:?}");
        return (TlsOutcome::Failed { error }, None, None);
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::IpAddress(ip.into());
    let result = tokio::time::timeout(timeout, connector.connect(name, tcp)).await;
    let certificate = recorder.take();
    match result {
        Ok(Ok(stream)) => (TlsOutcome::Ok, certificate, Some(stream)),
        Ok(Err(e)) => {
            let text = io_error_text(&e);
            let outcome = match (&certificate, refusal(&text)) {
                (Some(_), Some(alert)) => TlsOutcome::RefusedUs { alert },
                _ => TlsOutcome::Failed { error: text },
            };
            (outcome, certificate, None)
        }
        Err(_) => {
            let error = "no TLS answer in time".to_string();
            (TlsOutcome::Failed { error }, certificate, None)
        }
    }
}

/// The peer refused us, from how a connection on which it presented its certificate ended:
/// any alert it sent (it found fault with our certificate or our name), a close, or the
/// distribution handshake's `not_allowed` status.
fn refusal(text: &str) -> Option<String> {
    (text.starts_with("alert ") || ["closed", "reset", "not_allowed"].contains(&text))
        .then(|| text.to_string())
}

fn client_config(
    client: &TlsClient,
    verifier: Arc<Recorder>,
) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .map_err(|e| format!("TLS client: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match &client.identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from(cert.clone())],
                PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(key.to_vec())),
            )
            .map_err(|e| format!("our certificate or key is unusable: {e}")),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// A distribution connection inside TLS as OTP frames it: `inet_tls_dist` runs the handshake
/// with `{packet, 4}` (a 4-byte length before each message; ssl-10.8.7
/// `inet_tls_dist:accept_one/3` and `do_setup_connect/5`), where `inet_tcp_dist` uses
/// `{packet, 2}`. The handshake code writes and reads 2-byte lengths; this re-frames each
/// message on the way out and in, so the same handshake runs over both. An OTP node that reads
/// a 2-byte length as the first half of a 4-byte one waits for a message of megabytes and
/// never answers.
pub(crate) struct Packet4<S> {
    inner: S,
    /// Bytes written by the handshake, not yet a whole 2-byte-framed message.
    pending: Vec<u8>,
    /// Re-framed bytes not yet written to `inner`.
    out: Vec<u8>,
    /// The incoming message's 4-byte length, as far as read.
    header: [u8; 4],
    header_read: usize,
    /// The 2-byte length handed to the reader, as far as handed.
    short_header: [u8; 2],
    short_given: usize,
    /// Body bytes of the incoming message still to pass through.
    body_left: usize,
}

impl<S> Packet4<S> {
    pub(crate) fn new(inner: S) -> Self {
        Packet4 {
            inner,
            pending: Vec::new(),
            out: Vec::new(),
            header: [0; 4],
            header_read: 0,
            short_header: [0; 2],
            short_given: 2,
            body_left: 0,
        }
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> Packet4<S> {
    /// Writes `out` to `inner` until it is empty or `inner` would block.
    fn poll_drain(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        while !self.out.is_empty() {
            match std::pin::Pin::new(&mut self.inner).poll_write(cx, &self.out) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()))
                }
                Poll::Ready(Ok(n)) => {
                    self.out.drain(..n);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Packet4<S> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        this.pending.extend_from_slice(buf);
        while this.pending.len() >= 2 {
            let len = usize::from(u16::from_be_bytes([this.pending[0], this.pending[1]]));
            if this.pending.len() < 2 + len {
                break;
            }
            this.out
                .extend_from_slice(&u32::try_from(len).unwrap_or(0).to_be_bytes());
            this.out.extend_from_slice(&this.pending[2..2 + len]);
            this.pending.drain(..2 + len);
        }
        // Accepted whole; what `inner` does not take now is written by the flush.
        if let std::task::Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return std::task::Poll::Ready(Err(e));
        }
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_drain(cx))?;
        std::pin::Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_drain(cx))?;
        std::pin::Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Packet4<S> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let this = self.get_mut();
        if this.short_given < 2 {
            let n = buf.remaining().min(2 - this.short_given);
            buf.put_slice(&this.short_header[this.short_given..this.short_given + n]);
            this.short_given += n;
            return Poll::Ready(Ok(()));
        }
        if this.body_left > 0 {
            let mut body = vec![0; buf.remaining().min(this.body_left)];
            let mut part = tokio::io::ReadBuf::new(&mut body);
            std::task::ready!(std::pin::Pin::new(&mut this.inner).poll_read(cx, &mut part))?;
            let n = part.filled().len();
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::UnexpectedEof.into()));
            }
            buf.put_slice(&body[..n]);
            this.body_left -= n;
            return Poll::Ready(Ok(()));
        }
        while this.header_read < 4 {
            let mut header = tokio::io::ReadBuf::new(&mut this.header[this.header_read..]);
            std::task::ready!(std::pin::Pin::new(&mut this.inner).poll_read(cx, &mut header))?;
            let n = header.filled().len();
            if n == 0 {
                // A close between messages is the peer's close, as on a clear-text connection.
                return if this.header_read == 0 {
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Ready(Err(std::io::ErrorKind::UnexpectedEof.into()))
                };
            }
            this.header_read += n;
        }
        this.header_read = 0;
        let len = u32::from_be_bytes(this.header);
        let Ok(short) = u16::try_from(len) else {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a distribution handshake message of {len} bytes"),
            )));
        };
        this.short_header = short.to_be_bytes();
        this.short_given = 0;
        this.body_left = usize::from(short);
        let n = buf.remaining().min(2);
        buf.put_slice(&this.short_header[..n]);
        this.short_given = n;
        Poll::Ready(Ok(()))
    }
}

impl epmd::DistStream for Packet4<TlsStream> {
    fn local_ip(&self) -> std::io::Result<IpAddr> {
        self.inner.get_ref().0.local_addr().map(|a| a.ip())
    }
}

/// The recording verifier: whatever the peer presents is accepted and its facts are kept for
/// the diagnoses (the handshake's own signatures are still verified, so the certificate is
/// the peer's).
#[derive(Debug)]
struct Recorder {
    ip: IpAddr,
    roots: RootCertStore,
    provider: CryptoProvider,
    seen: Mutex<Option<PeerCertificate>>,
}

impl Recorder {
    fn new(ip: IpAddr, cacerts: &[Vec<u8>]) -> Recorder {
        let mut roots = RootCertStore::empty();
        for ca in cacerts {
            // A CA certificate webpki cannot use is simply not a root: chains then end elsewhere.
            let _ = roots.add(CertificateDer::from(ca.clone()));
        }
        Recorder {
            ip,
            roots,
            provider: rustls::crypto::aws_lc_rs::default_provider(),
            seen: Mutex::new(None),
        }
    }

    fn take(&self) -> Option<PeerCertificate> {
        self.seen.lock().ok().and_then(|mut s| s.take())
    }
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let facts = facts(
            self.ip,
            end_entity,
            intermediates,
            &self.roots,
            &self.provider,
            now.as_secs() as i64,
        )
        .map_err(rustls::Error::General)?;
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(facts);
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The facts of `end_entity` as the peer at `ip` presented it, at `now` (Unix seconds).
fn facts(
    ip: IpAddr,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    roots: &RootCertStore,
    provider: &CryptoProvider,
    now: i64,
) -> Result<PeerCertificate, String> {
    let (_, cert) = X509Certificate::from_der(end_entity.as_ref())
        .map_err(|e| format!("the peer's certificate is not X.509 DER: {e}"))?;
    let not_after = cert.validity().not_after.timestamp();
    let not_before = cert.validity().not_before.timestamp();
    let mut names = Vec::new();
    let mut names_address = false;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::IPAddress(bytes) => {
                    let addr = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
                        16 => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
                        _ => None,
                    };
                    if let Some(a) = addr {
                        names_address |= a == ip;
                        names.push(a.to_string());
                    }
                }
                GeneralName::DNSName(d) => {
                    names_address |= *d == ip.to_string();
                    names.push(d.to_string());
                }
                _ => {}
            }
        }
    }
    // The chain, judged at a moment inside the leaf's validity: an expired certificate of our
    // CA is "ours, expired", not "another CA".
    let at = UnixTime::since_unix_epoch(Duration::from_secs(
        u64::try_from(not_after.min(not_before.max(now)).max(0)).unwrap_or(0),
    ));
    let issuer_ok = (!roots.is_empty()).then(|| {
        rustls::server::ParsedCertificate::try_from(end_entity).is_ok_and(|parsed| {
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &parsed,
                roots,
                intermediates,
                at,
                provider.signature_verification_algorithms.all,
            )
            .is_ok()
        })
    });
    Ok(PeerCertificate {
        issuer: cert.issuer().to_string(),
        issuer_ok,
        names,
        names_address,
        not_after,
        expires_in_s: not_after - now,
    })
}

/// Seconds as the largest whole unit: `3 h 20 min`, `12 min`, `45 s` (a certificate's time
/// left, in the doctor's table and its diagnoses).
pub(super) fn seconds(s: i64) -> String {
    let s = s.max(0);
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} days", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    //! Real TLS listeners (rustls servers, with the distribution handshake of `erl_dist` inside)
    //! for each broken case, with certificates made here from CAs made here.

    use super::*;
    use crate::doctor::{explain, Explanation};
    use crate::peer::Peer;
    use crate::tls::{issue, ClusterCa, Credentials, Subject};
    use erl_dist::handshake::{HandshakeStatus, ServerSideHandshake};
    use erl_dist::node::{Creation, LocalNode};
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};
    use tokio_util::compat::TokioAsyncReadCompatExt;

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    /// A cluster CA made here, valid from a day ago for 30 days.
    fn ca(name: &str) -> ClusterCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let at = |t: i64| time::OffsetDateTime::from_unix_timestamp(t).unwrap();
        params.not_before = at(now() - 86_400);
        params.not_after = at(now() + 30 * 86_400);
        let cert = params.self_signed(&key).unwrap();
        ClusterCa::from_pem(&format!("{}{}", cert.pem(), key.serialize_pem()), now()).unwrap()
    }

    /// Credentials from `ca` for `ip`, issued at `issued` for `validity` seconds.
    fn creds(ca: &ClusterCa, ip: &str, issued: i64, validity: u64) -> Credentials {
        let subject = Subject {
            ip: ip.parse().unwrap(),
            private_dns_name: None,
        };
        issue::issue(ca, &subject, Duration::from_secs(validity), issued).unwrap()
    }

    fn client(c: &Credentials) -> TlsClient {
        TlsClient {
            cacerts: c.cacerts.clone(),
            identity: Some((c.cert_der.clone(), c.key_der.clone())),
            validity: Duration::from_secs(86_400),
        }
    }

    /// A TLS distribution listener on 127.0.0.1, as OTP's `inet_tls_dist` runs one: it presents
    /// `server`, requires a client certificate of `trusts`, then runs the distribution
    /// handshake with `cookie` inside TLS, each message after a 4-byte length (`{packet, 4}`).
    async fn tls_node(server: &Credentials, trusts: &ClusterCa, cookie: &'static str) -> u16 {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(trusts.cert_der().to_vec()))
            .unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![CertificateDer::from(server.cert_der.clone())],
                PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(server.key_der.to_vec())),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let local =
                        LocalNode::new("app@127.0.0.1".parse().unwrap(), Creation::random());
                    let mut hs =
                        ServerSideHandshake::new(Packet4::new(tls).compat(), local, cookie);
                    if hs.execute_recv_name().await.is_ok() {
                        let _ = hs.execute_rest(HandshakeStatus::Ok).await;
                    }
                });
            }
        });
        port
    }

    /// A clear-text distribution listener (`inet_tcp_dist`) with `cookie`.
    async fn clear_node(cookie: &'static str) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let local =
                        LocalNode::new("app@127.0.0.1".parse().unwrap(), Creation::random());
                    let mut hs = ServerSideHandshake::new(tcp.compat(), local, cookie);
                    if hs.execute_recv_name().await.is_ok() {
                        let _ = hs.execute_rest(HandshakeStatus::Ok).await;
                    }
                });
            }
        });
        port
    }

    async fn explained(port: u16, tls: Option<TlsClient>) -> Explanation {
        let peer = Peer {
            node: "app@127.0.0.1".into(),
            port: Some(port),
            ec2_instance_id: Some("i-0abc".into()),
            ..crate::namespace::tests::peer("127.0.0.1", "eu-west-2", "ecs:eu-west-2/web")
        };
        let opts = crate::doctor::DoctorOptions {
            timeout: Duration::from_secs(2),
            cookie: Some("the-cookie".into()),
            tls: tls.map(Arc::new),
            ..Default::default()
        };
        explain(peer, &opts).await
    }

    /// Each broken TLS case, against a real listener, gets its own diagnosis and fix; a healthy
    /// TLS node passes every check, with the cookie's handshake run inside TLS.
    #[tokio::test]
    async fn each_broken_tls_case_against_a_real_listener() {
        let ours = ca("our cluster CA");
        let theirs = ca("another CA");
        let me = client(&creds(&ours, "127.0.0.1", now(), 86_400));
        let good = || creds(&ours, "127.0.0.1", now(), 86_400);

        let port = tls_node(&good(), &ours, "the-cookie").await;
        let e = explained(port, Some(me.clone())).await;
        let tls = e.check.tls.clone().unwrap();
        assert_eq!(tls.outcome, TlsOutcome::Ok, "{e:?}");
        assert_eq!(tls.speaks_tls, Some(true));
        let cert = tls.certificate.unwrap();
        assert_eq!((cert.issuer_ok, cert.names_address), (Some(true), true));
        assert!(cert.expires_in_s > 86_000, "{cert:?}");
        assert_eq!(e.check.handshake, Some(Handshake::Ok));
        assert_eq!(e.diagnosis.code, "checks_pass", "{e:?}");

        let port = tls_node(&good(), &ours, "other").await;
        assert_eq!(
            explained(port, Some(me.clone())).await.diagnosis.code,
            "cookie_mismatch"
        );

        let cases: Vec<(&str, u16, Option<TlsClient>)> = vec![
            (
                "tls_clear_text_peer",
                clear_node("the-cookie").await,
                Some(me.clone()),
            ),
            (
                "tls_expected_by_peer",
                tls_node(&good(), &ours, "the-cookie").await,
                None,
            ),
            (
                "tls_other_ca",
                tls_node(
                    &creds(&theirs, "127.0.0.1", now(), 86_400),
                    &theirs,
                    "the-cookie",
                )
                .await,
                Some(me.clone()),
            ),
            (
                "tls_wrong_address",
                tls_node(
                    &creds(&ours, "127.0.0.9", now(), 86_400),
                    &ours,
                    "the-cookie",
                )
                .await,
                Some(me.clone()),
            ),
            (
                "tls_expired",
                tls_node(
                    &creds(&ours, "127.0.0.1", now() - 7200, 3600),
                    &ours,
                    "the-cookie",
                )
                .await,
                Some(me.clone()),
            ),
            (
                "tls_expiring",
                tls_node(
                    &creds(&ours, "127.0.0.1", now() - 86_400 + 600, 86_400),
                    &ours,
                    "the-cookie",
                )
                .await,
                Some(me.clone()),
            ),
            // A good node that trusts another CA only refuses our certificate.
            (
                "tls_refused_us",
                tls_node(&good(), &theirs, "the-cookie").await,
                Some(me.clone()),
            ),
            // A doctor with no certificate of its own (outside the cluster's tasks).
            (
                "tls_refused_us",
                tls_node(&good(), &ours, "the-cookie").await,
                Some(TlsClient {
                    identity: None,
                    ..me.clone()
                }),
            ),
        ];
        // The table's TLS column says what failed, in capitals (and nothing for a healthy peer).
        let summary = |e: &Explanation| e.check.tls.as_ref().map(TlsCheck::summary).unwrap();
        let port = tls_node(&good(), &ours, "the-cookie").await;
        let healthy = summary(&explained(port, Some(me.clone())).await);
        assert!(
            healthy.starts_with("our CA, names it, expires in ")
                && !healthy["our CA".len()..].contains(|c: char| c.is_ascii_uppercase()),
            "{healthy}"
        );
        let shown = |code: &str| match code {
            "tls_clear_text_peer" => "CLEAR TEXT",
            "tls_expected_by_peer" => "REQUIRES TLS",
            "tls_other_ca" => "OTHER CA",
            "tls_wrong_address" => "NAMES 127.0.0.9",
            "tls_expired" => "EXPIRED 60 min ago",
            "tls_expiring" => "EXPIRES IN",
            _ => "REFUSED OURS (",
        };
        for (code, port, tls) in cases {
            let e = explained(port, tls).await;
            assert_eq!(e.diagnosis.code, code, "{e:#?}");
            assert!(summary(&e).contains(shown(code)), "{code}: {}", summary(&e));
            // No cookie challenge is answered for a peer whose certificate fails a check (an
            // expiring one is still valid: the handshake ran and passed).
            match code {
                "tls_expected_by_peer" | "tls_expiring" => {}
                _ => assert_eq!(e.check.handshake, None, "{e:#?}"),
            }
        }
    }

    /// The per-peer TLS facts are in the JSON form.
    #[tokio::test]
    async fn the_tls_facts_are_in_the_json_form() {
        let ours = ca("our cluster CA");
        let server = creds(&ours, "127.0.0.9", now(), 86_400);
        let not_after = server.not_after;
        let port = tls_node(&server, &ours, "the-cookie").await;
        let e = explained(
            port,
            Some(client(&creds(&ours, "127.0.0.1", now(), 86_400))),
        )
        .await;
        let json = serde_json::to_value(&e.check).unwrap();
        let tls = &json["tls"];
        assert_eq!(tls["speaks_tls"], true, "{json}");
        assert_eq!(tls["certificate"]["issuer_ok"], true);
        assert_eq!(tls["certificate"]["names_address"], false);
        assert_eq!(tls["certificate"]["not_after"], not_after);
    }

    /// A certificate with a third of its validity left (when its node renews it) is never
    /// expiring, from the key's least validity up: a healthy cluster has no `tls_expiring`.
    #[test]
    fn a_certificate_due_for_renewal_is_not_expiring_at_any_validity() {
        for validity_s in [60, 300, 600, 899, 3600, 86_400, 30 * 86_400] {
            let validity = Duration::from_secs(validity_s);
            assert!(
                expiring_margin(validity) < validity / 3,
                "validity {validity_s} s: margin {:?}",
                expiring_margin(validity)
            );
        }
        assert_eq!(
            expiring_margin(Duration::from_secs(86_400)),
            Duration::from_secs(21_600)
        );
    }

    #[test]
    fn alerts_are_named_as_the_rfc_names_them() {
        assert_eq!(
            epmd::alert_name(rustls::AlertDescription::BadCertificate),
            "bad_certificate"
        );
        assert_eq!(
            epmd::alert_name(rustls::AlertDescription::UnknownCA),
            "unknown_ca"
        );
    }

    #[test]
    fn the_clients_debug_form_hides_the_key() {
        let shown = format!("{:?}", client(&creds(&ca("x"), "127.0.0.1", now(), 3600)));
        assert!(
            shown.contains("key elided") && !shown.contains("key_der"),
            "{shown}"
        );
    }
}
