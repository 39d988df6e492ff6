//! Certificate authority for the deployment: a self-signed CA that signs the NATS and
//! API server certificates and, for mutual TLS, client certificates. Secrets are
//! written 0600 and daemons refuse key files others can read.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

/// CA validity: long, because re-keying a fleet is an operation, not a routine.
const CA_VALIDITY_DAYS: i64 = 3650;
/// Leaf validity: about two years, the usual upper bound for TLS server certificates.
const LEAF_VALIDITY_DAYS: i64 = 825;
/// Backdating absorbs clock skew between the manager and agents.
const BACKDATE_MINUTES: i64 = 10;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation failed: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("invalid PEM certificate: {0}")]
    Pem(String),
    #[error("no subject names given for the server certificate")]
    NoNames,
    #[error("invalid certificate signing request (csr): {0}")]
    Csr(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "{path} is readable by group or others (mode {mode:o}); it holds a secret: run `chmod 600 {path}`"
    )]
    InsecureMode { path: PathBuf, mode: u32 },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io { path: path.to_path_buf(), source }
}

/// The deployment CA: its certificate and private key (PEM). Debug never shows the key.
pub struct Ca {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca").field("cert_pem", &self.cert_pem).field("key_pem", &"<redacted>").finish()
    }
}

/// A certificate signed by the CA with its private key (PEM). Debug never shows the key.
#[derive(Clone)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// A certificate signing request with the private key it was made with (PEM), kept by
/// the host that made it. Debug never shows the key.
#[derive(Clone)]
pub struct ClientCsr {
    pub csr_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for ClientCsr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCsr").field("csr_pem", &self.csr_pem).field("key_pem", &"<redacted>").finish()
    }
}

/// Longest CSR [`Ca::sign_client_csr`] parses: a P-256 or RSA-4096 request is 1-2 KiB.
pub const MAX_CSR_LEN: usize = 16 * 1024;

/// Makes a new key pair (ECDSA P-256) on this host and a CSR for it with common name
/// `cn`: for mutual TLS, the key stays here and only the CSR goes to the CA.
pub fn client_csr(cn: &str) -> Result<ClientCsr, PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = dn(cn);
    let csr = params.serialize_request(&key)?;
    Ok(ClientCsr { csr_pem: csr.pem()?, key_pem: key.serialize_pem() })
}

/// A server certificate (serverAuth + clientAuth, so NATS routes can use it both ways).
pub type ServerCert = IssuedCert;
/// A client certificate for mutual TLS.
pub type ClientCert = IssuedCert;

fn validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::minutes(BACKDATE_MINUTES);
    params.not_after = now + Duration::days(days);
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "secmon");
    dn
}

/// Generates a self-signed CA (CA:true, key usage keyCertSign + cRLSign), ECDSA P-256.
pub fn generate_ca(common_name: &str) -> Result<Ca, PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = dn(common_name);
    // Path length 0: this CA signs leaves only, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    validity(&mut params, CA_VALIDITY_DAYS);
    let cert = params.self_signed(&key)?;
    let cert_pem = cert.pem();
    let key_pem = key.serialize_pem();
    tracing::info!(common_name, fingerprint = %ca_fingerprint_sha256(&cert_pem)?, "generated CA");
    Ok(Ca { cert_pem, key_pem, issuer: Issuer::new(params, key) })
}

impl Ca {
    /// Loads a CA written earlier ([`Ca::cert_pem`], [`Ca::key_pem`]).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(Ca { cert_pem: cert_pem.to_string(), key_pem: key_pem.to_string(), issuer })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key; write it with [`write_secret`].
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// SHA-256 fingerprint of the CA certificate (lowercase hex of the DER).
    pub fn fingerprint_sha256(&self) -> String {
        // The PEM was produced by rcgen or already parsed in from_pem.
        ca_fingerprint_sha256(&self.cert_pem).unwrap_or_default()
    }

    /// Issues a server certificate for `names` (DNS names and IP addresses; the first one
    /// is also the common name), valid for serverAuth and clientAuth.
    pub fn issue_server(&self, names: &[String]) -> Result<ServerCert, PkiError> {
        let first = names.first().ok_or(PkiError::NoNames)?;
        let mut params = CertificateParams::new(names.to_vec())?;
        params.distinguished_name = dn(first);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, LEAF_VALIDITY_DAYS);
        self.sign(params, first)
    }

    /// Issues a client certificate (clientAuth) with common name `cn`, for mutual TLS.
    pub fn issue_client(&self, cn: &str) -> Result<ClientCert, PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = dn(cn);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, LEAF_VALIDITY_DAYS);
        self.sign(params, cn)
    }

    /// Signs a client certificate (clientAuth only) for the key in `csr_pem` (PEM
    /// `CERTIFICATE REQUEST`, its signature checked, so the requester holds the key).
    /// Everything but the public key is set here: common name `cn` and SAN URI
    /// `urn:secmon:client:<cn>`, whatever names, usages or CA flag the request asked for.
    /// Returns the certificate PEM.
    pub fn sign_client_csr(&self, csr_pem: &str, cn: &str) -> Result<String, PkiError> {
        if csr_pem.len() > MAX_CSR_LEN {
            return Err(PkiError::Csr(format!("longer than {MAX_CSR_LEN} bytes")));
        }
        if !csr_pem.contains("-----BEGIN CERTIFICATE REQUEST-----") {
            return Err(PkiError::Csr("not a PEM CERTIFICATE REQUEST".into()));
        }
        let mut csr =
            CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| PkiError::Csr(e.to_string()))?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = dn(cn);
        let uri = format!("urn:secmon:client:{cn}");
        params.subject_alt_names = vec![SanType::URI(uri.try_into()?)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, LEAF_VALIDITY_DAYS);
        csr.params = params;
        let cert = csr.signed_by(&self.issuer)?;
        tracing::info!(name = cn, "signed a client certificate request");
        Ok(cert.pem())
    }

    fn sign(&self, params: CertificateParams, name: &str) -> Result<IssuedCert, PkiError> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        tracing::info!(name, "issued certificate");
        Ok(IssuedCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

/// DER of the first certificate in `cert_pem`.
pub fn cert_der(cert_pem: &str) -> Result<Vec<u8>, PkiError> {
    let der =
        CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| PkiError::Pem(e.to_string()))?;
    Ok(der.to_vec())
}

/// The subject common name of the first certificate in `cert_pem`.
pub fn cert_common_name(cert_pem: &str) -> Result<String, PkiError> {
    let der = cert_der(cert_pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| PkiError::Pem(e.to_string()))?;
    let cn = cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok());
    cn.map(str::to_string).ok_or_else(|| PkiError::Pem("the certificate has no common name".into()))
}

/// Lowercase hex SHA-256 of the certificate's DER: what enrollment pins.
pub fn ca_fingerprint_sha256(cert_pem: &str) -> Result<String, PkiError> {
    Ok(hex::encode(Sha256::digest(cert_der(cert_pem)?)))
}

/// Writes a secret file with mode 0600 (set at creation, so it is never briefly
/// world-readable), creating missing parent directories with mode 0700. An existing
/// file is truncated and its mode forced back to 0600.
pub fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), PkiError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.exists()
    {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(parent).map_err(io_err(parent))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))?;
    // The mode above only applies on creation; an older file may have been looser.
    f.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(io_err(path))?;
    f.write_all(bytes).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))?;
    tracing::debug!(path = %path.display(), len = bytes.len(), "wrote secret file");
    Ok(())
}

/// Refuses a secret file that group or others can read (or write): the daemon must not
/// start with a key anyone else on the host may have copied.
pub fn check_secret_mode(path: &Path) -> Result<(), PkiError> {
    let mode = std::fs::metadata(path).map_err(io_err(path))?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(PkiError::InsecureMode { path: path.to_path_buf(), mode });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::{ServerName, UnixTime};

    /// Checks that `cert_pem` chains to `ca` for `usage`, and, with `name`, that it is
    /// valid for that server name.
    fn verify_for(
        ca: &Ca,
        cert_pem: &str,
        usage: webpki::KeyUsage,
        name: Option<&str>,
    ) -> Result<(), webpki::Error> {
        let ca_der = CertificateDer::from(cert_der(ca.cert_pem()).unwrap());
        let anchor = webpki::anchor_from_trusted_cert(&ca_der).unwrap();
        let ee_der = CertificateDer::from(cert_der(cert_pem).unwrap());
        let ee = webpki::EndEntityCert::try_from(&ee_der).unwrap();
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &[anchor],
            &[],
            UnixTime::now(),
            usage,
            None,
            None,
        )?;
        match name {
            Some(n) => ee.verify_is_valid_for_subject_name(&ServerName::try_from(n.to_string()).unwrap()),
            None => Ok(()),
        }
    }

    fn verify_server(ca: &Ca, cert_pem: &str, name: &str) -> Result<(), webpki::Error> {
        verify_for(ca, cert_pem, webpki::KeyUsage::server_auth(), Some(name))
    }

    #[test]
    fn server_cert_chains_to_ca_for_its_names_only() {
        let ca = generate_ca("secmon test CA").unwrap();
        let srv = ca.issue_server(&["localhost".into(), "127.0.0.1".into()]).unwrap();
        verify_server(&ca, &srv.cert_pem, "localhost").unwrap();
        verify_server(&ca, &srv.cert_pem, "127.0.0.1").unwrap();
        assert!(verify_server(&ca, &srv.cert_pem, "evil.example").is_err());
        // A different CA does not vouch for it.
        let other = generate_ca("other CA").unwrap();
        assert!(verify_server(&other, &srv.cert_pem, "localhost").is_err());
    }

    #[test]
    fn reloaded_ca_issues_verifiable_certs() {
        let ca = generate_ca("secmon test CA").unwrap();
        let again = Ca::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        let srv = again.issue_server(&["manager.local".into()]).unwrap();
        verify_server(&ca, &srv.cert_pem, "manager.local").unwrap();
        assert_eq!(ca.fingerprint_sha256(), again.fingerprint_sha256());
    }

    #[test]
    fn client_cert_is_for_client_auth_not_server_auth() {
        let ca = generate_ca("secmon test CA").unwrap();
        let cli = ca.issue_client("agent-1").unwrap();
        verify_client(&ca, &cli.cert_pem).unwrap();
        assert!(verify_for(&ca, &cli.cert_pem, webpki::KeyUsage::server_auth(), None).is_err());
    }

    fn verify_client(ca: &Ca, cert_pem: &str) -> Result<(), webpki::Error> {
        verify_for(ca, cert_pem, webpki::KeyUsage::client_auth(), None)
    }

    #[test]
    fn csr_is_signed_for_client_auth_with_the_name_the_ca_chooses() {
        let ca = generate_ca("secmon test CA").unwrap();
        // The requester asks for another name, a server name and CA powers: all ignored.
        let key = KeyPair::generate().unwrap();
        let mut asked = CertificateParams::new(vec!["manager.example".to_string()]).unwrap();
        asked.distinguished_name = dn("admin");
        asked.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let csr = asked.serialize_request(&key).unwrap().pem().unwrap();
        let pem = ca.sign_client_csr(&csr, "agent-7").unwrap();
        verify_client(&ca, &pem).unwrap();
        assert_eq!(cert_common_name(&pem).unwrap(), "agent-7");
        let der = cert_der(&pem).unwrap();
        let (_, x) = x509_parser::parse_x509_certificate(&der).unwrap();
        let san = x.subject_alternative_name().unwrap().unwrap().value.general_names.clone();
        assert_eq!(san, vec![x509_parser::extensions::GeneralName::URI("urn:secmon:client:agent-7")]);
        assert!(!x.is_ca());
        assert!(!format!("{:?}", x.subject()).contains("admin"));
        // The certificate holds the requester's key.
        let spki = key.public_key_raw().to_vec();
        assert!(der.windows(spki.len()).any(|w| w == spki.as_slice()), "not the CSR's key");

        let made = client_csr("whatever").unwrap();
        assert!(made.key_pem.contains("PRIVATE KEY") && !format!("{made:?}").contains("PRIVATE KEY"));
        verify_client(&ca, &ca.sign_client_csr(&made.csr_pem, "agent-8").unwrap()).unwrap();
    }

    #[test]
    fn bad_csrs_are_refused() {
        let ca = generate_ca("secmon test CA").unwrap();
        let good = client_csr("x").unwrap().csr_pem;
        // A flipped byte in the signed part: the signature no longer verifies.
        let der = rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(good.as_bytes()).unwrap();
        let mut bytes = der.as_ref().to_vec();
        let i = bytes.len() / 2;
        bytes[i] ^= 1;
        let tampered = format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            data_encoding::BASE64.encode(&bytes)
        );
        let long = format!("{good}{}", " ".repeat(MAX_CSR_LEN));
        for bad in ["", "garbage", ca.cert_pem(), tampered.as_str(), long.as_str()] {
            assert!(matches!(ca.sign_client_csr(bad, "a"), Err(PkiError::Csr(_))), "{bad:.60}");
        }
    }

    #[test]
    fn fingerprint_is_sha256_hex_of_der() {
        let ca = generate_ca("fp").unwrap();
        let fp = ca_fingerprint_sha256(ca.cert_pem()).unwrap();
        assert_eq!(fp.len(), 64);
        assert!(fp.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(fp, hex::encode(Sha256::digest(cert_der(ca.cert_pem()).unwrap())));
        assert_ne!(fp, generate_ca("fp").unwrap().fingerprint_sha256());
        assert!(matches!(ca_fingerprint_sha256("not a pem"), Err(PkiError::Pem(_))));
    }

    #[test]
    fn debug_hides_private_keys() {
        let ca = generate_ca("dbg").unwrap();
        let srv = ca.issue_server(&["localhost".into()]).unwrap();
        for s in [format!("{ca:?}"), format!("{srv:?}")] {
            assert!(!s.contains("PRIVATE KEY"), "{s}");
            assert!(s.contains("<redacted>"));
        }
    }

    #[test]
    fn secrets_are_written_0600_in_0700_dirs_and_loose_modes_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("new/dir/ca.key");
        write_secret(&path, b"secret").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"secret");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&tmp.path().join("new/dir")), 0o700);
        assert_eq!(mode(&tmp.path().join("new")), 0o700);
        check_secret_mode(&path).unwrap();

        // A loose existing file is tightened on rewrite.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = check_secret_mode(&path).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, PkiError::InsecureMode { mode: 0o644, .. }));
        assert!(msg.contains("chmod 600"), "{msg}");
        write_secret(&path, b"again").unwrap();
        assert_eq!(mode(&path), 0o600);
        check_secret_mode(&path).unwrap();

        for loose in [0o640, 0o604, 0o620, 0o602] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(loose)).unwrap();
            assert!(check_secret_mode(&path).is_err(), "mode {loose:o} accepted");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        check_secret_mode(&path).unwrap();
        assert!(matches!(check_secret_mode(&tmp.path().join("missing")), Err(PkiError::Io { .. })));
    }
}
