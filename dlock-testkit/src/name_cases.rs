//! Cases for names: every byte of a name counts, up to the last of 255.

use crate::cases::{must_be_held, must_take};
use crate::ctx::{Context, Ctx};
use crate::{ensure, CaseResult};

/// Long names that differ only in their last byte (ASCII and multi-byte
/// UTF-8, up to 255 bytes) are different locks: a backend that truncates,
/// hashes a prefix or cuts at a column width makes them collide.
pub(crate) async fn long_names_are_distinct(ctx: Ctx) -> CaseResult {
    let (a, b) = (ctx.locker("owner-a").await?, ctx.locker("owner-b").await?);
    let lease = ctx.lease() * 5;
    let base = ctx.name("");
    let pad = |fill: &str, last: char| {
        let mut s = base.clone();
        while s.len() + fill.len() + last.len_utf8() <= 255 {
            s.push_str(fill);
        }
        s.push(last);
        s
    };
    let names = [
        pad("x", '1'),
        pad("x", '2'),
        pad("é", '1'),
        pad("é", '2'),
        // Shorter names whose prefix is shared with the long ones.
        pad("x", '1')[..100].to_string(),
        pad("x", '1')[..65].to_string(),
    ];
    let mut guards = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let l = if i % 2 == 0 { &a } else { &b };
        let g = must_take(l, n, lease).await.map_err(|e| {
            format!(
                "{} bytes, differing from an earlier held name only at the end: {e}",
                n.len()
            )
        })?;
        guards.push(g);
    }
    for (n, g) in names.iter().zip(&guards) {
        must_be_held(&a, n, lease, "it is held").await?;
        let info = b
            .inspect(n)
            .await
            .ctx("inspect")?
            .ok_or_else(|| format!("inspect of a held {}-byte name says free", n.len()))?;
        ensure!(
            info.token == g.token(),
            "inspect of a {}-byte name reports token {} of another lock (held token {})",
            n.len(),
            info.token,
            g.token()
        );
    }
    for g in guards {
        g.release().await.ctx("release")?;
    }
    Ok(())
}
