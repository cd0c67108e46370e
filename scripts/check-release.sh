#!/usr/bin/env bash
# What a user of the published crates gets, checked as CI does:
#
#   bash scripts/check-release.sh
#
# 1. every crate's docs build without a warning (docs.rs builds them with
#    all features);
# 2. every crate packages, and each package builds from its own tarball
#    (`cargo package` verifies: a file outside the package, such as a README
#    included from the workspace root, fails here);
# 3. the README's first command works on a fresh machine: a fresh clone, a
#    fresh target dir, and no protoc anywhere (only etcd's build needs it,
#    and a SQLite user must never need it).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== docs (-D warnings)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --all-features --no-deps

echo "== cargo package --workspace"
# cargo verifies each package against the others through a local registry
# whose sources it unpacks under $CARGO_HOME/registry/src once per
# name-version and never refreshes: a tarball packaged earlier at the same
# version would be built instead of today's. None of these names is on
# crates.io (all are dlock-<something>), so removing their unpacked copies
# touches nothing else.
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
rm -rf "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/dlock-*-"$version"
# For the same reason, cargo trusts a registry crate it has built once at a
# name-version and never rebuilds it: with a target dir shared across runs
# the verification would link today's crates against an earlier dlock-core.
# Forget every dlock build so each is rebuilt from what was packaged now.
rm -rf "${CARGO_TARGET_DIR:-target}"/debug/.fingerprint/dlock-*
cargo package --workspace

echo "== the README's first command, fresh clone, no protoc"
fresh=$(mktemp -d)
trap 'rm -rf "$fresh"' EXIT
git clone -q . "$fresh/dlock"
# PATH without protoc: a directory that holds it (/usr/bin, with the C
# compiler the build needs) is replaced by a mirror of everything else in it.
no_protoc_path=""
IFS=: read -ra dirs <<<"$PATH"
for d in "${dirs[@]}"; do
    if [[ -e "$d/protoc" ]]; then
        mirror="$fresh/path/${#no_protoc_path}"
        mkdir -p "$mirror"
        for f in "$d"/*; do
            [[ "$(basename "$f")" == protoc ]] || ln -s "$f" "$mirror/"
        done
        d="$mirror"
    fi
    no_protoc_path="${no_protoc_path:+$no_protoc_path:}$d"
done
first=$(grep -m1 -o 'cargo run --example [a-z_]*' README.md)
(
    cd "$fresh/dlock"
    export PATH="$no_protoc_path" PROTOC="$fresh/no-such-protoc" CARGO_TARGET_DIR="$fresh/target"
    if command -v protoc >/dev/null; then
        echo "check-release: protoc is still on PATH" >&2
        exit 1
    fi
    echo "+ $first"
    $first
)
