//! TLS settings for `etcds://` (rustls with the ring provider).

use crate::config::EtcdConfig;
use crate::KIND;
use dlock_core::{Error, Result};
use etcd_client::{Certificate, Identity, TlsOptions};
use std::path::Path;

fn read(what: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        Error::InvalidConfig(format!(
            "cannot read the {what} file {} for {KIND}: {e}",
            path.display()
        ))
    })
}

/// Builds the client TLS options: the CA from `ca_file` (else the system
/// roots), a client identity from `cert_file` + `key_file`, and an optional
/// server name override.
pub(crate) fn options(config: &EtcdConfig) -> Result<TlsOptions> {
    let mut tls = TlsOptions::new();
    match &config.ca_file {
        Some(ca) => tls = tls.ca_certificate(Certificate::from_pem(read("CA (ca_file)", ca)?)),
        None => tls = tls.with_native_roots(),
    }
    if let (Some(cert), Some(key)) = (&config.cert_file, &config.key_file) {
        tls = tls.identity(Identity::from_pem(
            read("client certificate (cert_file)", cert)?,
            read("client key (key_file)", key)?,
        ));
    }
    if let Some(d) = &config.tls_domain {
        tls = tls.domain_name(d.clone());
    }
    Ok(tls)
}
