//! TLS settings for `etcds://` (rustls with the ring provider).

use crate::config::EtcdConfig;
use crate::KIND;
use dlock_core::{Error, Result, TlsRoots};
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

/// Builds the client TLS options: the roots `tls_roots` names plus the CA
/// from `ca_file`, a client identity from `cert_file` + `key_file`, and an
/// optional server name override.
pub(crate) fn options(config: &EtcdConfig) -> Result<TlsOptions> {
    config.tls_roots.check_ca_file(config.ca_file.is_some())?;
    let mut tls = match config.tls_roots {
        TlsRoots::System => TlsOptions::new().with_native_roots(),
        TlsRoots::CaFileOnly => TlsOptions::new(),
        _ => TlsOptions::new().with_webpki_roots(),
    };
    if let Some(ca) = &config.ca_file {
        tls = tls.ca_certificate(Certificate::from_pem(read("CA (ca_file)", ca)?));
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
