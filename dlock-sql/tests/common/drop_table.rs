//! `Suite::break_coordinator` for the SQL backends: drop the run's lock
//! table under the connected backend, so every statement it sends fails.

use sqlx::Connection;

/// Drops the table named by `url`'s `table=` (the suite's namespace),
/// connecting to the server (or file) `url` names, without its query.
pub async fn drop_table(url: String) -> Result<(), String> {
    let mut u = url::Url::parse(&url).map_err(|e| format!("{url}: {e}"))?;
    let table = u
        .query_pairs()
        .find(|(k, _)| k == "table")
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| format!("{url} names no table="))?;
    u.set_query(None);
    let drop = format!("DROP TABLE {table}");
    let err = |e: sqlx::Error| format!("{drop} at {}: {e}", u.as_str());
    match u.scheme() {
        #[cfg(feature = "postgres")]
        "postgres" | "postgresql" => {
            let mut c = sqlx::PgConnection::connect(u.as_str()).await.map_err(err)?;
            sqlx::query(&drop).execute(&mut c).await.map_err(err)?;
        }
        #[cfg(feature = "mysql")]
        "mysql" | "mariadb" => {
            let mut c = sqlx::MySqlConnection::connect(u.as_str())
                .await
                .map_err(err)?;
            sqlx::query(&drop).execute(&mut c).await.map_err(err)?;
        }
        #[cfg(feature = "sqlite")]
        "sqlite" => {
            let mut c = sqlx::SqliteConnection::connect(u.as_str())
                .await
                .map_err(err)?;
            sqlx::query(&drop).execute(&mut c).await.map_err(err)?;
        }
        other => return Err(format!("no way to drop a table over {other}://")),
    }
    Ok(())
}
