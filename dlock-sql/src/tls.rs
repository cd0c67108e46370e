//! `tls_roots=system` for PostgreSQL and MySQL: sqlx trusts its built-in
//! webpki roots plus one PEM bundle, so "system" hands it the OS trust store
//! (and the CA file the URL names) as that bundle.

use dlock_core::{Error, Result};

/// PEM of the OS trust store followed by the contents of `ca_file`.
pub(crate) fn system_roots_pem(kind: &'static str, ca_file: Option<&str>) -> Result<Vec<u8>> {
    let found = rustls_native_certs::load_native_certs();
    if found.certs.is_empty() {
        let why: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
        return Err(Error::InvalidConfig(format!(
            "tls_roots=system for {kind}, but no certificate could be read from the OS trust \
             store{}; install ca-certificates, or use tls_roots=webpki",
            if why.is_empty() {
                String::new()
            } else {
                format!(" ({})", why.join("; "))
            }
        )));
    }
    let pems: Vec<pem::Pem> = found
        .certs
        .iter()
        .map(|c| pem::Pem::new("CERTIFICATE", c.as_ref().to_vec()))
        .collect();
    let mut bundle = pem::encode_many(&pems).into_bytes();
    if let Some(path) = ca_file {
        let extra = std::fs::read(path).map_err(|e| {
            Error::InvalidConfig(format!("cannot read the CA file {path} for {kind}: {e}"))
        })?;
        bundle.push(b'\n');
        bundle.extend(extra);
    }
    Ok(bundle)
}
