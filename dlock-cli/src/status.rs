//! `dlock status`: who holds which lock.

use crate::cli::StatusArgs;
use crate::exit;
use dlock::LockInfo;
use serde_json::{json, Value};
use std::time::SystemTime;

/// Prints the holders of `args.names` (every held lock when none are
/// given); returns the exit code.
pub async fn status(url: &str, args: StatusArgs) -> u8 {
    let locker = match crate::connect(url, None).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("dlock: {e:#}");
            return exit::LOCK_ERROR;
        }
    };
    let mut rows = Vec::with_capacity(args.names.len());
    if args.names.is_empty() {
        match locker.list().await {
            Ok(all) => rows.extend(all.into_iter().map(|i| (i.name.to_string(), Some(i)))),
            Err(e) => {
                eprintln!("dlock: cannot list locks: {e:#}");
                return exit::LOCK_ERROR;
            }
        }
    }
    for name in &args.names {
        match locker.inspect(name.clone()).await {
            Ok(info) => rows.push((name.clone(), info)),
            Err(e) => {
                eprintln!("dlock: cannot inspect lock {name:?}: {e:#}");
                return exit::LOCK_ERROR;
            }
        }
    }
    if args.json {
        let v: Vec<Value> = rows.iter().map(|(n, i)| to_json(n, i.as_ref())).collect();
        match serde_json::to_string_pretty(&v) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("dlock: cannot format JSON: {e}");
                return exit::LOCK_ERROR;
            }
        }
    } else {
        print!("{}", table(&rows, SystemTime::now()));
    }
    0
}

fn time(t: Option<SystemTime>) -> Value {
    match t {
        Some(t) => Value::String(humantime::format_rfc3339_millis(t).to_string()),
        None => Value::Null,
    }
}

/// One JSON object per lock.
pub fn to_json(name: &str, info: Option<&LockInfo>) -> Value {
    match info {
        Some(i) => json!({
            "name": name,
            "held": true,
            "owner": i.owner,
            "acquisition_id": i.id,
            "token": i.token.get(),
            "locked_at": time(i.locked_at),
            "lock_until": time(i.lock_until),
        }),
        None => json!({
            "name": name,
            "held": false,
            "owner": null,
            "acquisition_id": null,
            "token": null,
            "locked_at": null,
            "lock_until": null,
        }),
    }
}

/// The table for humans.
pub fn table(rows: &[(String, Option<LockInfo>)], now: SystemTime) -> String {
    let mut cells = vec![[
        "NAME".to_string(),
        "HOLDER".to_string(),
        "TOKEN".to_string(),
        "SINCE".to_string(),
        "UNTIL".to_string(),
    ]];
    for (name, info) in rows {
        let fmt = |t: Option<SystemTime>| {
            t.map(|t| humantime::format_rfc3339_seconds(t).to_string())
                .unwrap_or_else(|| "-".into())
        };
        cells.push(match info {
            Some(i) => {
                let until = match i.lock_until {
                    Some(u) => {
                        let left = u
                            .duration_since(now)
                            .map(|d| std::time::Duration::from_secs(d.as_secs()))
                            .map(|d| format!(" (in {})", humantime::format_duration(d)))
                            .unwrap_or_default();
                        format!("{}{left}", fmt(Some(u)))
                    }
                    None => "-".into(),
                };
                [
                    name.clone(),
                    i.owner.clone(),
                    i.token.to_string(),
                    fmt(i.locked_at),
                    until,
                ]
            }
            None => [
                name.clone(),
                "(free)".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ],
        });
    }
    let mut widths = [0usize; 5];
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for row in &cells {
        let mut line = String::new();
        for (i, (c, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(c);
            } else {
                line.push_str(c);
                line.push_str(&" ".repeat(w - c.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
