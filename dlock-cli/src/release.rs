//! `dlock release --force`: the operator override.

use crate::cli::ReleaseArgs;
use crate::exit;

/// Frees `args.name` whoever holds it; returns the exit code.
pub async fn release(url: &str, args: ReleaseArgs, quiet: bool) -> u8 {
    if !args.force {
        eprintln!(
            "dlock: releasing a lock someone else may hold is an operator override: \
             add --force to free {:?}. (`dlock run` releases its own lock when its command ends.)",
            args.name
        );
        return exit::USAGE;
    }
    let locker = match crate::connect(url, None).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("dlock: {e:#}");
            return exit::LOCK_ERROR;
        }
    };
    // For the message only; the release itself is one operation.
    let holder = locker.inspect(args.name.clone()).await.ok().flatten();
    match locker.force_release(args.name.clone()).await {
        Ok(true) => {
            if !quiet {
                match holder {
                    Some(h) => println!(
                        "released lock {:?} (was held by {}, token {})",
                        args.name, h.owner, h.token
                    ),
                    None => println!("released lock {:?}", args.name),
                }
            }
            0
        }
        Ok(false) => {
            if !quiet {
                println!("lock {:?} was not held", args.name);
            }
            0
        }
        Err(e) => {
            eprintln!("dlock: cannot release lock {:?}: {e:#}", args.name);
            exit::LOCK_ERROR
        }
    }
}
