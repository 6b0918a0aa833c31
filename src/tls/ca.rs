//! The cluster CA as stored (`tls_ca`'s value): its certificate and private key, both PEM,
//! concatenated in either order (`cat ca.crt ca.key`). Parsed and checked here; the key lives
//! only in a [`ClusterCa`], which zeroizes it when dropped and never prints it.

use std::fmt;

use rcgen::{KeyPair, PublicKeyData};
use x509_parser::prelude::{FromDer, X509Certificate};
use zeroize::{Zeroize, Zeroizing};

/// The PEM labels a private key may carry: PKCS#8, SEC1 (`openssl ecparam -genkey`) and
/// PKCS#1 (`openssl genrsa`); aws-lc-rs reads all three.
const KEY_LABELS: [&str; 3] = ["PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY"];

/// The cluster CA: its certificate (DER) and its signing key. `Debug` prints the certificate's
/// subject and validity, never the key; the key's bytes are zeroized when this is dropped
/// (rcgen's `KeyPair: Zeroize`; the aws-lc key object behind it is cleared by AWS-LC's
/// `OPENSSL_free`, which cleanses every allocation it frees).
pub struct ClusterCa {
    pub(crate) cert_der: Vec<u8>,
    pub(crate) key: Zeroizing<KeyPair>,
    /// The certificate's notAfter, unix seconds.
    pub(crate) not_after: i64,
    subject: String,
}

impl fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterCa")
            .field("subject", &self.subject)
            .field("not_after", &self.not_after)
            .field("key", &"[secret key elided]")
            .finish()
    }
}

/// Why a stored value is not a usable CA: the problem, and the fix. Never holds key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaProblem {
    /// What is wrong with the value.
    pub problem: String,
    /// What to do about it.
    pub fix: String,
}

impl CaProblem {
    fn new(problem: impl Into<String>, fix: impl Into<String>) -> Self {
        CaProblem {
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

const FORMAT_FIX: &str = "store the CA certificate and its unencrypted private key, both PEM, concatenated (e.g. `cat ca.crt ca.key > ca.pem` and `aws secretsmanager create-secret --secret-string file://ca.pem`; docs/tls.md)";

impl ClusterCa {
    /// Parses and checks a stored CA at `now` (unix seconds): exactly one `CERTIFICATE` block
    /// and one private key block (`PRIVATE KEY`, `EC PRIVATE KEY` or `RSA PRIVATE KEY`);
    /// the certificate must be a CA (basicConstraints cA, keyCertSign when keyUsage is present),
    /// be valid at `now`, and match the key.
    ///
    /// # Errors
    ///
    /// A [`CaProblem`] naming what is wrong (not PEM, blocks missing or extra, an encrypted key,
    /// not a CA, expired, key and certificate that do not match) and the fix.
    pub fn from_pem(text: &str, now: i64) -> Result<ClusterCa, CaProblem> {
        let blocks = pem::parse_many(text)
            .map_err(|e| CaProblem::new(format!("the value is not PEM ({e})"), FORMAT_FIX))?;
        if blocks.is_empty() {
            return Err(CaProblem::new(
                "the value holds no PEM block (-----BEGIN ...-----)",
                FORMAT_FIX,
            ));
        }
        let mut certs = Vec::new();
        let mut keys = Vec::new();
        let mut other = Vec::new();
        for block in blocks {
            let tag = block.tag().to_string();
            match tag.as_str() {
                "CERTIFICATE" => certs.push(block.into_contents()),
                t if KEY_LABELS.contains(&t) => keys.push(Zeroizing::new(block.into_contents())),
                "ENCRYPTED PRIVATE KEY" => {
                    let mut der = block.into_contents();
                    der.zeroize();
                    return Err(CaProblem::new(
                        "the private key is encrypted (ENCRYPTED PRIVATE KEY)",
                        "store it unencrypted: the secret's KMS encryption and IAM protect it (`openssl pkcs8 -in enc.key -out ca.key -nocrypt` on the admin's machine)",
                    ));
                }
                _ => {
                    let mut der = block.into_contents();
                    der.zeroize();
                    other.push(tag);
                }
            }
        }
        if !other.is_empty() {
            return Err(CaProblem::new(
                format!("the value holds PEM blocks other than one CERTIFICATE and one private key: {other:?}"),
                FORMAT_FIX,
            ));
        }
        let (cert_der, key_der) = match (certs.as_mut_slice(), keys.as_slice()) {
            ([cert], [key]) => (std::mem::take(cert), key),
            (c, k) => {
                return Err(CaProblem::new(
                    format!(
                        "expected one CERTIFICATE and one private key block, found {} certificate(s) and {} key(s)",
                        c.len(),
                        k.len()
                    ),
                    FORMAT_FIX,
                ))
            }
        };
        let (_, cert) = X509Certificate::from_der(&cert_der).map_err(|e| {
            CaProblem::new(
                format!("the CERTIFICATE block is not an X.509 certificate ({e})"),
                FORMAT_FIX,
            )
        })?;
        let subject = cert.subject().to_string();
        let is_ca = matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
        if !is_ca {
            return Err(CaProblem::new(
                format!("the certificate {subject:?} is not a CA (no basicConstraints cA=TRUE)"),
                "store the cluster CA's own certificate, made with basicConstraints critical,CA:TRUE (docs/tls.md), not a leaf certificate",
            ));
        }
        if let Ok(Some(ku)) = cert.key_usage() {
            if !ku.value.key_cert_sign() {
                return Err(CaProblem::new(
                    format!("the CA certificate {subject:?} has a keyUsage without keyCertSign"),
                    "make the CA certificate with keyUsage keyCertSign (docs/tls.md)",
                ));
            }
        }
        let validity = cert.validity();
        let not_after = validity.not_after.timestamp();
        if not_after <= now {
            return Err(CaProblem::new(
                format!("the CA certificate {subject:?} expired at {}", validity.not_after),
                "make a new cluster CA and store it in place of this one (docs/tls.md, rotating the CA)",
            ));
        }
        if validity.not_before.timestamp() > now {
            return Err(CaProblem::new(
                format!(
                    "the CA certificate {subject:?} is not valid before {}",
                    validity.not_before
                ),
                "check this host's clock, or wait until the CA's notBefore",
            ));
        }
        let key = KeyPair::try_from(key_der.as_slice()).map_err(|e| {
            CaProblem::new(
                format!("the private key block is not a key aws-lc-rs can sign with ({e})"),
                "use an ECDSA P-256/P-384, Ed25519 or RSA key (docs/tls.md)",
            )
        })?;
        let key = Zeroizing::new(key);
        if key.der_bytes() != cert.public_key().subject_public_key.data.as_ref() {
            return Err(CaProblem::new(
                format!("the private key does not match the CA certificate {subject:?}"),
                "store the CA certificate together with its own private key",
            ));
        }
        drop(cert);
        Ok(ClusterCa {
            cert_der,
            key,
            not_after,
            subject,
        })
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyUsagePurpose};

    pub(crate) const NOW: i64 = 1_800_000_000;

    /// A test CA (made here, never committed): `(pem of cert + key, cert pem, key pem)`.
    pub(crate) fn test_ca(ca: bool, not_after: i64) -> (String, String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test cluster CA");
        if ca {
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        }
        params.not_before = time_at(NOW - 3600);
        params.not_after = time_at(not_after);
        let cert = params.self_signed(&key).unwrap();
        let (c, k) = (cert.pem(), key.serialize_pem());
        (format!("{c}{k}"), c, k)
    }

    pub(crate) fn time_at(t: i64) -> time::OffsetDateTime {
        time::OffsetDateTime::from_unix_timestamp(t).unwrap()
    }

    #[test]
    fn reads_cert_and_key_in_either_order() {
        let (_, c, k) = test_ca(true, NOW + 86400);
        for text in [format!("{c}{k}"), format!("{k}\n{c}")] {
            let ca = ClusterCa::from_pem(&text, NOW).unwrap();
            assert_eq!(ca.not_after, NOW + 86400);
        }
    }

    /// `openssl ecparam -genkey` writes SEC1 (`EC PRIVATE KEY`), the form docs/tls.md shows.
    #[test]
    fn reads_a_sec1_key() {
        use aws_lc_rs::encoding::AsDer;
        use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
        let lc = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
        let sec1 = lc.private_key().as_der().unwrap();
        let key = KeyPair::try_from(lc.to_pkcs8v1().unwrap().as_ref()).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.not_before = time_at(NOW - 60);
        params.not_after = time_at(NOW + 60);
        let cert = params.self_signed(&key).unwrap();
        let sec1_pem = pem::encode(&pem::Pem::new("EC PRIVATE KEY", sec1.as_ref().to_vec()));
        let ca = ClusterCa::from_pem(&format!("{}{sec1_pem}", cert.pem()), NOW).unwrap();
        assert_eq!(ca.cert_der(), cert.der().as_ref());
    }

    #[test]
    fn debug_never_prints_the_key() {
        let (pem, _, k) = test_ca(true, NOW + 86400);
        let ca = ClusterCa::from_pem(&pem, NOW).unwrap();
        let shown = format!("{ca:?}");
        let body: String = k.lines().nth(1).unwrap().chars().take(20).collect();
        assert!(shown.contains("elided"), "{shown}");
        assert!(!shown.contains(&body), "{shown}");
    }

    fn problem(text: &str) -> CaProblem {
        ClusterCa::from_pem(text, NOW).unwrap_err()
    }

    #[test]
    fn rejects_what_is_not_a_usable_ca() {
        let (pem, c, k) = test_ca(true, NOW + 86400);
        let (_, _, other_key) = test_ca(true, NOW + 86400);
        let (leaf, _, _) = test_ca(false, NOW + 86400);
        let (expired, _, _) = test_ca(true, NOW - 1);
        let cases: [(String, &str); 7] = [
            ("hello".into(), "no PEM block"),
            (c.clone(), "found 1 certificate(s) and 0 key(s)"),
            (format!("{c}{other_key}"), "does not match"),
            (leaf, "is not a CA"),
            (expired, "expired at"),
            (
                format!("{pem}-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"),
                "other than one CERTIFICATE",
            ),
            (
                k.replace("PRIVATE KEY", "ENCRYPTED PRIVATE KEY") + &c,
                "is encrypted",
            ),
        ];
        for (text, expected) in cases {
            let p = problem(&text);
            assert!(p.problem.contains(expected), "{expected}: {p:?}");
            assert!(!p.fix.is_empty());
        }
        let _ = pem;
    }
}
