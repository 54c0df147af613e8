#!/usr/bin/env bash
# Builds the real test infrastructure from Go modules (test tooling only, never part of the package):
#   - crackle-otelcol: an OpenTelemetry Collector with exactly the components collector_config/ uses
#     (tools/otelcol/: a small main over otelcol and the component factories);
#   - jaeger: Jaeger v2 all-in-one (tools/jaeger/: github.com/jaegertracing/jaeger/cmd/jaeger as a Go tool),
#     with the Jaeger UI of the same release embedded (the module ships only a placeholder page; the UI,
#     built from jaeger-ui's sources, is tools/jaeger/jaeger-ui-*.tar.gz: see tools/jaeger/README.md).
#
# Usage: tools/build_test_infra.sh            build what is missing, then print "name=path" per binary
#        tools/build_test_infra.sh --locate   print the paths only if both are built (exit 1 otherwise)
#
# Each binary lands in a cache directory keyed by its module version and a hash of its tools/ folder
# (every file there: go.mod, go.sum, sources, UI assets), so a version bump or a component change builds anew and a rerun is a
# no-op: ${CRACKLE_TEST_INFRA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/crackle-otel/test-infra}/NAME-VERSION-HASH/
set -euo pipefail

TOOLS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${CRACKLE_TEST_INFRA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/crackle-otel/test-infra}"
# The machine's own Go; go.mod's go line must not make it fetch another toolchain.
export GOTOOLCHAIN=local GOFLAGS="-mod=readonly -trimpath -buildvcs=false"

# name | tools/ folder | module whose version names the build | package to build
BINARIES=(
  "crackle-otelcol|otelcol|go.opentelemetry.io/collector/otelcol|."
  "jaeger|jaeger|github.com/jaegertracing/jaeger|github.com/jaegertracing/jaeger/cmd/jaeger"
)

key_of() {  # VERSION-HASH of one tools/ folder
  local dir="$TOOLS/$1" module="$2" version hash
  version="$(awk -v m="$module" '$1 == m { print $2; exit }' "$dir/go.mod")"
  [[ -n "$version" ]] || { echo "build_test_infra: $module not required in $dir/go.mod" >&2; exit 2; }
  hash="$(cd "$dir" && find . -type f | LC_ALL=C sort | xargs cat | sha256sum | cut -c1-12)"
  echo "$version-$hash"
}

path_of() {  # where one binary lives in the cache
  local name folder module package
  IFS='|' read -r name folder module package <<<"$1"
  echo "$CACHE/$name-$(key_of "$folder" "$module")/$name"
}

with_ui() {  # a go.mod (for -modfile) whose jaeger module is a copy with the real UI where it embeds it from
  local staging="$1" module source archive
  archive="$(ls "$TOOLS"/jaeger/jaeger-ui-*.tar.gz)"
  module="$(cd "$TOOLS/jaeger" && go mod download github.com/jaegertracing/jaeger &&
            go list -m -f '{{.Dir}}' github.com/jaegertracing/jaeger)"
  source="$staging/jaeger-source"
  cp -r "$module" "$source" && chmod -R u+w "$source"
  tar -xzf "$archive" -C "$source/cmd/query/app/ui/actual"
  # Jaeger serves cmd/query/app/ui/actual/ through a gzip file system: each asset gzipped, named *.gz.
  find "$source/cmd/query/app/ui/actual" -type f ! -name .gitignore -exec gzip -n -9 {} +
  cp "$TOOLS/jaeger/go.mod" "$TOOLS/jaeger/go.sum" "$staging/"
  (cd "$staging" && go mod edit -replace "github.com/jaegertracing/jaeger=$source")
  echo "$staging/go.mod"
}

build() {  # build one binary into the cache, atomically
  local name folder module package target staging started
  IFS='|' read -r name folder module package <<<"$1"
  target="$(path_of "$1")"
  [[ -x "$target" ]] && return 0
  staging="$(mktemp -d "$CACHE/.$name.XXXXXX")"
  started=$SECONDS
  echo "build_test_infra: building $name ($(basename "$(dirname "$target")")) ..." >&2
  local flags=(-ldflags="-s -w")
  if [[ "$name" == jaeger ]]; then
    flags+=(-modfile "$(with_ui "$staging")") || { rm -rf "$staging"; return 1; }
  fi
  if ! (cd "$TOOLS/$folder" && go build "${flags[@]}" -o "$staging/$name" "$package") >"$staging/build.log" 2>&1; then
    cat "$staging/build.log" >&2
    rm -rf "$staging"
    echo "build_test_infra: building $name failed" >&2
    return 1
  fi
  mkdir -p "$(dirname "$target")"
  mv -f "$staging/$name" "$target"
  rm -rf "$staging"
  echo "build_test_infra: built $name in $((SECONDS - started)) s" >&2
}

if [[ "${1:-}" == "--locate" ]]; then
  for spec in "${BINARIES[@]}"; do
    target="$(path_of "$spec")"
    [[ -x "$target" ]] || exit 1
    echo "${spec%%|*}=$target"
  done
  exit 0
fi
[[ $# -eq 0 ]] || { echo "usage: $0 [--locate]" >&2; exit 2; }

command -v go >/dev/null || { echo "build_test_infra: needs Go (go command not found)" >&2; exit 1; }
mkdir -p "$CACHE"
# Both at once: each Go build leaves cores idle while it links or waits on module downloads.
pids=()
for spec in "${BINARIES[@]}"; do
  build "$spec" & pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
[[ $failed -eq 0 ]] || exit 1
for spec in "${BINARIES[@]}"; do echo "${spec%%|*}=$(path_of "$spec")"; done
