#!/usr/bin/env bash
# What a user of the published crates gets, checked as CI does:
#
#   bash scripts/check-release.sh
#
# 1. every crate's docs build without a warning (docs.rs builds them with
#    all features);
# 2. every crate packages, and each package checks from its own tarball
#    (a file outside the package, such as a README included from the
#    workspace root, fails here);
# 3. the README's first command works on a fresh machine: a fresh clone, a
#    fresh target dir, and no protoc anywhere (only etcd's build needs it,
#    and a SQLite user must never need it).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== docs (-D warnings)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --all-features --no-deps

echo "== cargo package --workspace, then each package checked from its tarball"
# cargo's own verification builds every package from its tarball with a
# dependency tree of its own features: 9 of CI's 30 minutes. The same check
# for a fraction: unpack every tarball into one scratch workspace whose
# dlock-* dependencies are patched to the unpacked copies (never the
# sources here), and `cargo check` each package alone (-p, so features are
# resolved for that package only, as a user's build would). A file outside
# a package (a README included from the workspace root) or a feature a
# manifest forgets fails here.
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
cargo package --workspace --no-verify
target_dir=$(readlink -f "${CARGO_TARGET_DIR:-target}")
unpacked=$(mktemp -d)
trap 'rm -rf "$unpacked"' EXIT
names=()
for crate in "$target_dir"/package/*-"$version".crate; do
    tar -xzf "$crate" -C "$unpacked"
    names+=("$(basename "$crate" "-$version.crate")")
done
{
    echo '[workspace]'
    echo 'resolver = "2"'
    printf 'members = [%s]\n' "$(printf '"%s", ' "${names[@]/%/-$version}")"
    echo '[patch.crates-io]'
    for n in "${names[@]}"; do echo "$n = { path = \"$n-$version\" }"; done
} > "$unpacked/Cargo.toml"
# The versions this workspace is tested with; the shared target dir holds
# the dependencies clippy already checked.
cp Cargo.lock "$unpacked/"
for n in "${names[@]}"; do
    echo "-- $n"
    (cd "$unpacked" && CARGO_TARGET_DIR="$target_dir" cargo check -q -p "$n")
done

echo "== the README's first command, fresh clone, no protoc"
fresh=$(mktemp -d)
trap 'rm -rf "$fresh" "$unpacked"' EXIT
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
    # What a user's machine has: no build settings of CI's.
    unset CARGO_PROFILE_DEV_DEBUG CARGO_INCREMENTAL
    if command -v protoc >/dev/null; then
        echo "check-release: protoc is still on PATH" >&2
        exit 1
    fi
    echo "+ $first"
    $first
)
