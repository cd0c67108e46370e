//! Coordinator URLs with their secrets hidden, for `Debug` and messages.

/// Query options whose values are secrets (a `..._file` option names a
/// file, which is not).
fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    !key.ends_with("_file")
        && ["pass", "token", "secret", "auth"]
            .iter()
            .any(|s| key.contains(s))
}

/// `url` with the password and secret query values (`password=`, `token=`,
/// ...) replaced by `***`; the rest (scheme, user, hosts, path, other options)
/// stays readable. URLs the `url` crate cannot parse (several hosts, as etcd
/// and ZooKeeper allow) are redacted by their text.
pub fn url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => parsed(u),
        Err(_) => textual(url),
    }
}

fn parsed(mut u: url::Url) -> String {
    if u.password().is_some() {
        // Cannot fail: a URL that has a password can have another one.
        let _ = u.set_password(Some("***"));
    }
    if let Some(q) = u.query() {
        let q = query(q);
        u.set_query(Some(&q));
    }
    u.to_string()
}

fn textual(url: &str) -> String {
    let (before_query, q) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = match before_query.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((userinfo, hosts)) => {
                let user = userinfo.split(':').next().unwrap_or("");
                if userinfo.contains(':') {
                    format!("{scheme}://{user}:***@{hosts}")
                } else {
                    before_query.to_string()
                }
            }
            None => before_query.to_string(),
        },
        None => before_query.to_string(),
    };
    if let Some(q) = q {
        out.push('?');
        out.push_str(&query(q));
    }
    out
}

/// `a=1&password=x` → `a=1&password=***`, keeping the text of the others.
fn query(q: &str) -> String {
    q.split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if is_secret_key(k) => format!("{k}=***"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::url;

    #[test]
    fn passwords_and_secret_options_are_hidden() {
        assert_eq!(
            url("postgres://dlock:s3cret@db:5432/locks?table=t&password=p4ss"),
            "postgres://dlock:***@db:5432/locks?table=t&password=***"
        );
        assert_eq!(
            url("consul://127.0.0.1:8500/dlock?token=t0k&token_file=/etc/t&dc=a"),
            "consul://127.0.0.1:8500/dlock?token=***&token_file=/etc/t&dc=a"
        );
        // Several hosts: not a URL the url crate parses; still redacted.
        let shown = url("etcd://root:s3cret@h1:2379,h2:2379/p?request_timeout=5s");
        assert_eq!(
            shown,
            "etcd://root:***@h1:2379,h2:2379/p?request_timeout=5s"
        );
        let shown = url("zk://u:p@ss:w0rd@h1:2181,h2:2181/ch");
        assert!(
            !shown.contains("w0rd") && shown.contains("h2:2181/ch"),
            "{shown}"
        );
        // Nothing secret: unchanged.
        assert_eq!(
            url("sqlite:///var/lib/dlock.db"),
            "sqlite:///var/lib/dlock.db"
        );
        assert_eq!(url("etcd://h1:2379,h2:2379"), "etcd://h1:2379,h2:2379");
    }
}
