//! The roots `rediss://` trusts. redis-rs trusts its built-in webpki roots
//! unless it is handed one PEM bundle, which then replaces them: so
//! `tls_roots=system` hands it the OS trust store, and `ca_file=` hands it
//! that file (after the OS store with `tls_roots=system`).

use crate::config::RedisConfig;
use dlock_core::{Error, Result, TlsRoots};
use redis::TlsCertificates;

/// The bundle to replace the built-in roots with; `None` keeps them.
pub(crate) fn root_certificates(config: &RedisConfig) -> Result<Option<TlsCertificates>> {
    if !config.tls || (config.tls_roots == TlsRoots::Webpki && config.ca_file.is_none()) {
        return Ok(None);
    }
    let mut bundle = Vec::new();
    if config.tls_roots == TlsRoots::System {
        bundle = system_roots_pem()?;
    }
    if let Some(path) = &config.ca_file {
        let extra = std::fs::read(path).map_err(|e| {
            Error::InvalidConfig(format!(
                "cannot read the Redis CA file {}: {e}",
                path.display()
            ))
        })?;
        if pem::parse_many(&extra)
            .map(|p| p.is_empty())
            .unwrap_or(true)
        {
            return Err(Error::InvalidConfig(format!(
                "the Redis CA file {} holds no PEM certificate",
                path.display()
            )));
        }
        bundle.push(b'\n');
        bundle.extend(extra);
    }
    Ok(Some(TlsCertificates {
        client_tls: None,
        root_cert: Some(bundle),
    }))
}

/// PEM of the OS trust store.
fn system_roots_pem() -> Result<Vec<u8>> {
    let found = rustls_native_certs::load_native_certs();
    if found.certs.is_empty() {
        let why: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
        return Err(Error::InvalidConfig(format!(
            "tls_roots=system for Redis, but no certificate could be read from the OS trust \
             store ({}); install ca-certificates, or use tls_roots=webpki",
            why.join("; ")
        )));
    }
    let pems: Vec<pem::Pem> = found
        .certs
        .iter()
        .map(|c| pem::Pem::new("CERTIFICATE", c.as_ref().to_vec()))
        .collect();
    Ok(pem::encode_many(&pems).into_bytes())
}
