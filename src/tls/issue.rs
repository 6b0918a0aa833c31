//! Issues this task's certificate from the cluster CA: a P-256 key generated in process, and
//! a certificate for this task's address, by the one address rule, and its private DNS name.
//!
//! OTP 25's distribution checks names as strings: the dialling side compares the node name's
//! host against the certificate's dNSName entries (`{dns_id, Host}`, ssl_certificate
//! `verify_hostname`), and the accepting side's allow-list rebuild (`inet_tls_dist`
//! `allowed_nodes`) reads dNSName only. So the address is written twice: as an iPAddress SAN
//! (what RFC 6125 clients check) and as a dNSName SAN of the same text (what OTP 25 checks).
//! IPv6 is written in its RFC 5952 form (`fd00::5`), which is `inet:ntoa/1`'s.

use std::net::IpAddr;
use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_ASN1_SIGNING};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyUsagePurpose, SanType, SubjectPublicKeyInfo,
};
use rustls_pki_types::CertificateDer;
use zeroize::Zeroizing;

use super::ca::ClusterCa;

/// How far in the past a certificate's notBefore is set, so a peer whose clock is behind ours
/// by up to this much accepts it.
pub const CLOCK_SKEW: Duration = Duration::from_secs(300);

/// What this task's certificate is issued for: its address (by `peer::task_address`, or its
/// container instance's in bridge and host mode) and its private DNS name when AWS reports one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// The address its node name carries.
    pub ip: IpAddr,
    /// Its ENI's `privateDnsName` (awsvpc), when there is one.
    pub private_dns_name: Option<String>,
}

impl Subject {
    /// The names the certificate carries, in order: the address as text (RFC 5952 for IPv6,
    /// as `inet:ntoa/1` writes it), then the private DNS name.
    pub fn names(&self) -> Vec<String> {
        let mut names = vec![self.ip.to_string()];
        names.extend(self.private_dns_name.clone());
        names
    }
}

/// This task's credentials for TLS distribution, in the forms OTP's ssl takes:
/// `{cert, cert_der}`, `{key, {'ECPrivateKey', key_der}}`, `{cacerts, cacerts}`. `Debug` never
/// prints the key, which is zeroized when this is dropped.
pub struct Credentials {
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// Its private key: SEC1 / RFC 5915 `ECPrivateKey` DER (with the curve's parameters).
    pub key_der: Zeroizing<Vec<u8>>,
    /// The CA certificates a peer's certificate is checked against, DER: the cluster CA's.
    pub cacerts: Vec<Vec<u8>>,
    /// The certificate's notAfter, unix seconds.
    pub not_after: i64,
    /// When to issue the next one, unix seconds: two thirds of the way from issuing to
    /// `not_after`, so a renewal that fails has a third of the validity to be retried.
    pub renew_at: i64,
    /// The names it carries (see [`Subject::names`]).
    pub names: Vec<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("cert_der", &format_args!("{} bytes", self.cert_der.len()))
            .field("key_der", &"[secret key elided]")
            .field("cacerts", &self.cacerts.len())
            .field("not_after", &self.not_after)
            .field("renew_at", &self.renew_at)
            .field("names", &self.names)
            .finish()
    }
}

/// Issues a certificate for `subject`, signed by `ca`, at `now` (unix seconds): notBefore
/// `now` − [`CLOCK_SKEW`], notAfter `now` + `validity` (no later than the CA's own notAfter:
/// a leaf outliving its CA would fail verification anyway), extended key usage serverAuth and
/// clientAuth, key usage digitalSignature, not a CA, the CA's key id as authority key id.
///
/// # Errors
///
/// A message when the key cannot be generated or the certificate cannot be signed (an rcgen or
/// aws-lc-rs failure; not expected with a CA that [`ClusterCa::from_pem`] accepted).
pub fn issue(
    ca: &ClusterCa,
    subject: &Subject,
    validity: Duration,
    now: i64,
) -> Result<Credentials, String> {
    let lifetime = i64::try_from(validity.as_secs()).unwrap_or(i64::MAX);
    let not_after = now.saturating_add(lifetime).min(ca.not_after);
    let not_before = now - CLOCK_SKEW.as_secs() as i64;
    let names = subject.names();

    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, names[0].as_str());
    params.distinguished_name = dn;
    let ip_text = rcgen::string::Ia5String::try_from(names[0].as_str())
        .map_err(|e| format!("the address {} as a dNSName: {e}", names[0]))?;
    params.subject_alt_names = vec![SanType::IpAddress(subject.ip), SanType::DnsName(ip_text)];
    if let Some(dns) = &subject.private_dns_name {
        let dns = rcgen::string::Ia5String::try_from(dns.as_str())
            .map_err(|e| format!("the private DNS name {dns:?}: {e}"))?;
        params.subject_alt_names.push(SanType::DnsName(dns));
    }
    params.not_before = at(not_before)?;
    params.not_after = at(not_after)?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;

    let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING)
        .map_err(|_| "generating a P-256 key failed (aws-lc-rs)".to_string())?;
    let key_der = Zeroizing::new(
        key.private_key()
            .as_der()
            .map_err(|_| "encoding the P-256 key as ECPrivateKey failed (aws-lc-rs)".to_string())?
            .as_ref()
            .to_vec(),
    );
    let public = key
        .public_key()
        .as_der()
        .map_err(|_| "encoding the public key failed (aws-lc-rs)".to_string())?;
    let public = SubjectPublicKeyInfo::from_der(public.as_ref()).map_err(|e| e.to_string())?;

    let ca_cert = CertificateDer::from(ca.cert_der.as_slice());
    let issuer = Issuer::from_ca_cert_der(&ca_cert, &*ca.key)
        .map_err(|e| format!("reading the CA certificate to sign with: {e}"))?;
    let cert = params
        .signed_by(&public, &issuer)
        .map_err(|e| format!("signing this task's certificate failed: {e}"))?;
    let renew_at = now + (not_after - now).max(0) * 2 / 3;
    Ok(Credentials {
        cert_der: cert.der().to_vec(),
        key_der,
        cacerts: vec![ca.cert_der.clone()],
        not_after,
        renew_at,
        names,
    })
}

fn at(t: i64) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::from_unix_timestamp(t).map_err(|e| format!("time {t}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::ca::tests::{test_ca, NOW};
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::{FromDer, X509Certificate};

    fn ca() -> ClusterCa {
        ClusterCa::from_pem(&test_ca(true, NOW + 30 * 86400).0, NOW).unwrap()
    }

    fn sans(der: &[u8]) -> Vec<String> {
        let (_, cert) = X509Certificate::from_der(der).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        san.value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::IPAddress(b) => match b.len() {
                    4 => format!("ip:{}", IpAddr::from(<[u8; 4]>::try_from(*b).unwrap())),
                    _ => format!("ip:{}", IpAddr::from(<[u8; 16]>::try_from(*b).unwrap())),
                },
                GeneralName::DNSName(d) => format!("dns:{d}"),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn an_ipv4_task_is_named_by_ip_and_dns_and_its_private_dns_name() {
        let subject = Subject {
            ip: "10.1.0.5".parse().unwrap(),
            private_dns_name: Some("ip-10-1-0-5.eu-west-2.compute.internal".into()),
        };
        let c = issue(&ca(), &subject, Duration::from_secs(3600), NOW).unwrap();
        assert_eq!(
            sans(&c.cert_der),
            [
                "ip:10.1.0.5",
                "dns:10.1.0.5",
                "dns:ip-10-1-0-5.eu-west-2.compute.internal"
            ]
        );
        assert_eq!(
            c.names,
            ["10.1.0.5", "ip-10-1-0-5.eu-west-2.compute.internal"]
        );
    }

    #[test]
    fn an_ipv6_only_task_is_named_in_the_short_form() {
        let subject = Subject {
            ip: "fd00:0:0:0::5".parse().unwrap(),
            private_dns_name: None,
        };
        let c = issue(&ca(), &subject, Duration::from_secs(3600), NOW).unwrap();
        assert_eq!(sans(&c.cert_der), ["ip:fd00::5", "dns:fd00::5"]);
    }

    #[test]
    fn validity_eku_and_issuer() {
        let ca = ca();
        let subject = Subject {
            ip: "10.0.0.9".parse().unwrap(),
            private_dns_name: None,
        };
        let c = issue(&ca, &subject, Duration::from_secs(600), NOW).unwrap();
        let (_, cert) = X509Certificate::from_der(&c.cert_der).unwrap();
        assert_eq!(cert.validity().not_before.timestamp(), NOW - 300);
        assert_eq!(cert.validity().not_after.timestamp(), NOW + 600);
        assert_eq!(c.not_after, NOW + 600);
        assert_eq!(c.renew_at, NOW + 400);
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        assert!(!cert.is_ca());
        let (_, ca_cert) = X509Certificate::from_der(ca.cert_der()).unwrap();
        assert_eq!(cert.issuer().to_string(), ca_cert.subject().to_string());
        cert.verify_signature(Some(ca_cert.public_key()))
            .expect("signed by the CA");
        assert_eq!(c.cacerts, vec![ca.cert_der().to_vec()]);
        // The key is SEC1 ECPrivateKey with the P-256 parameters, and it is the certificate's.
        let again = EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_ASN1_SIGNING, &c.key_der)
            .unwrap();
        assert_eq!(
            again.public_key().as_ref(),
            cert.public_key().subject_public_key.data.as_ref()
        );
        assert!(!format!("{c:?}").contains("key_der: ["), "{c:?}");
    }

    #[test]
    fn a_certificate_never_outlives_its_ca() {
        let ca = ClusterCa::from_pem(&test_ca(true, NOW + 100).0, NOW).unwrap();
        let subject = Subject {
            ip: "10.0.0.9".parse().unwrap(),
            private_dns_name: None,
        };
        let c = issue(&ca, &subject, Duration::from_secs(3600), NOW).unwrap();
        assert_eq!(c.not_after, NOW + 100);
        assert_eq!(c.renew_at, NOW + 66);
    }
}
