//! Secure deployment material for secmon: the CA and TLS certificates (rcgen), NATS
//! operator/account/user JWTs and creds files (nkeys), and the operator-mode
//! nats-server configuration that uses them.
//!
//! Invariant: no private key or seed ever appears in a log line or Debug output; secret
//! files are written 0600 and refused when group or others can read them.

pub mod ca;
pub mod nats_jwt;
pub mod server_config;

pub use ca::{
    Ca, ClientCert, ClientCsr, IssuedCert, MAX_CSR_LEN, PkiError, ServerCert, ca_fingerprint_sha256,
    cert_common_name, cert_der, check_secret_mode, client_csr, generate_ca, write_secret,
};
pub use nats_jwt::{
    AccountLimits, AccountSpec, JwtError, NatsIdentities, Permissions, account_jwt, agent_permissions,
    creds_file, decode_verified, issue_user_jwt, operator_jwt,
};
pub use server_config::{TlsFiles, nats_server_config};
