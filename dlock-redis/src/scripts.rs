//! The server-side scripts: every lock operation is one script, so it is
//! one atomic step at the server and one round trip (EVALSHA; the script
//! is sent once per connection when the server does not know it yet).
//!
//! A lock name `N` under prefix `P` is one hash, `P:lock:N`, that never
//! expires (a row, as on the SQL backends): `token` (the fencing token
//! counter, bumped by every acquisition), `id` and `owner` of the latest
//! acquisition (`id` empty once released), `at` (its time), `until` (the
//! lease's end) and `hold` (`at` + `lock_at_least_for`), all in µs by the
//! server's clock (`TIME`), never the client's.
//!
//! **Every script writes with at most one command.** Redis propagates a
//! script's writes to its append-only file, and wraps two or more in
//! MULTI/EXEC. Redis before 8 and Valkey before the fix of valkey#3983
//! drop such a transaction while loading the file when the `default` user
//! is disabled (redis#14541), a common hardening step: locks and token
//! counters would silently vanish in a restart. One `HSET` is replayed
//! as it is. (`PUBLISH` is not written to the file, and a script's one
//! write with a `PUBLISH` reaches it unwrapped; the fault test restarts the
//! server after a release to hold that true.)
//!
//! Lua numbers are doubles: times in µs (~2^51) and tokens stay exact, and
//! are formatted with `%.0f` so Redis is never handed an exponent.

use redis::Script;
use std::sync::LazyLock;

/// The lines every script starts with: `now`, the server's time in µs;
/// `fmt`, an integer as decimal text; `num`, a stored field as a number,
/// 0 when missing or not a number (a hash some other program wrote under
/// the prefix must not make a script fail halfway; it reads as free).
const PRELUDE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function fmt(n) return string.format('%.0f', n) end
local function num(v) return tonumber(v) or 0 end
";

fn script(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}{body}"))
}

/// `KEYS`: lock. `ARGV`: id, owner, at_most ms, at_least ms. Returns
/// `{1, token}` when taken, `{0, ms until free}` when held (writing nothing).
pub(crate) static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local h = redis.call('HMGET', KEYS[1], 'until', 'token')
local until_us = num(h[1])
if until_us > now then return {0, math.ceil((until_us - now) / 1000)} end
local token = num(h[2]) + 1
redis.call('HSET', KEYS[1], 'token', fmt(token), 'id', ARGV[1], 'owner', ARGV[2], 'at', fmt(now),
  'until', fmt(now + tonumber(ARGV[3]) * 1000), 'hold', fmt(now + tonumber(ARGV[4]) * 1000))
return {1, token}
",
    )
});

/// `KEYS`: lock. `ARGV`: id, lock_for ms. Returns 1 when this lease holds
/// the lock (it now ends no sooner than `lock_for` from now), 0 when not.
/// Never moves the end earlier: a delayed extend cannot undo a later one.
pub(crate) static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local h = redis.call('HMGET', KEYS[1], 'id', 'until')
if ARGV[1] == '' or h[1] ~= ARGV[1] or num(h[2]) <= now then return 0 end
local new = now + tonumber(ARGV[2]) * 1000
if new > num(h[2]) then redis.call('HSET', KEYS[1], 'until', fmt(new)) end
return 1
",
    )
});

/// `KEYS`: lock. `ARGV`: id, channel, name. Returns 1 when this lease held
/// the lock and released it (taken until `hold`, by nobody's lease, or free
/// now), 0 when it did not hold it. Either way a release publishes the
/// name: a waiter that read the lease's end sleeps no longer than `hold`.
pub(crate) static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local h = redis.call('HMGET', KEYS[1], 'id', 'until', 'hold')
if ARGV[1] == '' or h[1] ~= ARGV[1] or num(h[2]) <= now then return 0 end
redis.call('HSET', KEYS[1], 'id', '', 'until', fmt(math.max(num(h[3]), now)))
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
",
    )
});

/// `KEYS`: lock. `ARGV`: channel, name. Frees the lock whoever holds it
/// (ignoring `at_least`; the token counter stays) and publishes the name.
/// Returns 1 when it was taken.
pub(crate) static FORCE_RELEASE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local until_us = num(redis.call('HGET', KEYS[1], 'until'))
if until_us <= now then return 0 end
redis.call('HSET', KEYS[1], 'id', '', 'until', fmt(now))
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
",
    )
});

/// `KEYS`: locks. Returns the server's time in µs, then for each lock
/// `owner, id, token, at µs, until µs` while it is taken, or five empty
/// strings when it is free (`id` is empty when released within `at_least`).
/// A key of another type under the prefix reads as free.
pub(crate) static INSPECT: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local out = {fmt(now)}
for i = 1, #KEYS do
  local h = redis.pcall('HMGET', KEYS[i], 'owner', 'id', 'token', 'at', 'until')
  if not h.err and num(h[5]) > now then
    out[#out + 1] = h[1] or ''
    out[#out + 1] = h[2] or ''
    out[#out + 1] = fmt(num(h[3]))
    out[#out + 1] = fmt(num(h[4]))
    out[#out + 1] = fmt(num(h[5]))
  else
    for _ = 1, 5 do out[#out + 1] = '' end
  end
end
return out
",
    )
});
