# shellcheck shell=bash
# scripts/lib/testbed.sh -- build and start the real components our tests use.
#
# Source it from bash (scripts/check does); every function is idempotent and
# fails loudly.  See docs in /work/shared/TESTBED.md for why these components.
#
#   ms_install_packages        Debian packages for the build and the tests
#   ms_build_ferretdb          FerretDB (pinned)          -> $MS_TOOLS_BIN/ferretdb
#   ms_build_mongo_tools       mongodump + mongorestore   -> $MS_TOOLS_BIN/mongo{dump,restore}
#   ms_build_minio             MinIO server (pinned)      -> $MS_TOOLS_BIN/minio
#   ms_build_toxiproxy         toxiproxy server (pinned)  -> $MS_TOOLS_BIN/toxiproxy-server
#   ms_make_venv               Python venv from tests/integration/requirements.txt
#   ms_start_ferretdb DIR [ARGS...]   start FerretDB on a free loopback port, print the port
#   ms_stop_ferretdb DIR       stop the FerretDB started in DIR
#
# Environment knobs:
#   MONGOSNAP_TOOLS_CACHE   where binaries are built and kept (default ~/.cache/mongosnap-tools)
#   MONGOSNAP_VENV          the virtual environment (default ~/.cache/mongosnap-venv)
#   MONGOSNAP_PYTHON        interpreter for the venv (default: first python3 that has venv+ensurepip)
#   MONGOSNAP_GO            go binary (default: go on PATH, else /usr/local/go/bin/go)
#   MONGOSNAP_FERRETDB_START_TIMEOUT  seconds to wait for FerretDB to accept connections (default 30)

# ---- pinned versions -------------------------------------------------------
MS_FERRETDB_VERSION=v1.24.2
MS_FERRETDB_COMMIT=cda72d440810406a208c4670aa7047f5bc8d528f
# mongo-tools tag 100.11.0; its tags are not Go versions, hence the pseudo-version.
MS_MONGO_TOOLS_VERSION=v0.0.0-20250131183507-b8a566a7f38f
# MinIO community edition, commit 7aac2a2c5b7c (2026-02-12); RELEASE.* tags are not Go versions.
MS_MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
# Shopify's toxiproxy (fault injection for the S3 tests: tests/integration/toxiproxy_fixtures.py).
MS_TOXIPROXY_VERSION=v2.5.0

MS_REPO_ROOT=${MS_REPO_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
MS_TOOLS_CACHE=${MONGOSNAP_TOOLS_CACHE:-$HOME/.cache/mongosnap-tools}
MS_TOOLS_BIN=$MS_TOOLS_CACHE/bin
MS_VENV=${MONGOSNAP_VENV:-$HOME/.cache/mongosnap-venv}
MS_REQUIREMENTS=$MS_REPO_ROOT/tests/integration/requirements.txt

MS_PACKAGES=(
  meson ninja-build pkg-config gcc
  libmongoc-dev libbson-dev libsystemd-dev libcurl4-openssl-dev libinih-dev
  libsqlite3-dev libzstd-dev libssl-dev zlib1g-dev liblzma-dev
  libxxhash-dev                 # bench/wire-source (built with the tests)
  zstd dbus systemd clang-format python3-venv
  clang libclang-rt-14-dev      # libFuzzer + sanitizer runtimes (scripts/fuzz, tests/fuzz)
  libglib2.0-bin
  util-linux coreutils iproute2
  dpkg-dev debhelper fakeroot   # scripts/build-deb (test_systemd_package.py)
)

# ---- helpers ---------------------------------------------------------------
ms_log() { printf '==> %s\n' "$*" >&2; }
ms_die() {
  printf '\nERROR: %s\n\n' "$*" >&2
  return 1
}

# Run a command as root (directly, or through non-interactive sudo).
ms__as_root() {
  if [[ $(id -u) -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo -n "$@"
  else
    ms_die "need root to run: $* (not root, and no password-less sudo)"
  fi
}

ms__go() {
  local go=${MONGOSNAP_GO:-}
  if [[ -z $go ]]; then
    if command -v go >/dev/null 2>&1; then
      go=$(command -v go)
    elif [[ -x /usr/local/go/bin/go ]]; then
      go=/usr/local/go/bin/go
    else
      ms_die "no Go toolchain: install Go >= 1.24 (expected /usr/local/go/bin/go or go on PATH, or set MONGOSNAP_GO)"
      return 1
    fi
  fi
  printf '%s\n' "$go"
}

# Take an exclusive lock on the tools cache for the rest of the calling
# function's subshell: concurrent scripts/check runs share the cache.
ms__lock() { # name
  mkdir -p "$MS_TOOLS_CACHE" || return 1
  local fd
  exec {fd}>"$MS_TOOLS_CACHE/.lock-$1"
  flock -w 3600 "$fd" || { ms_die "timed out waiting for lock $MS_TOOLS_CACHE/.lock-$1"; return 1; }
}

# Fresh throwaway Go module under the cache: prints its path.
ms__go_module() { # name
  local dir=$MS_TOOLS_CACHE/src/$1
  rm -rf "$dir" && mkdir -p "$dir" || return 1
  printf 'module mongosnap/testbed\n\ngo 1.24\n' >"$dir/go.mod"
  printf '%s\n' "$dir"
}

# Is the binary built from module $2 at version $3? (reads Go build info)
ms__go_bin_has() { # binary module version
  local go
  [[ -x $1 ]] || return 1
  go=$(ms__go) || return 1
  "$go" version -m "$1" 2>/dev/null | awk -v m="$2" -v v="$3" '($1=="mod"||$1=="dep") && $2==m && $3==v {ok=1} END {exit !ok}'
}

# ---- packages --------------------------------------------------------------
ms_install_packages() {
  local missing=() p st
  for p in "${MS_PACKAGES[@]}"; do
    st=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
    [[ $st == ii* ]] || missing+=("$p")
  done
  if ((${#missing[@]} == 0)); then
    return 0
  fi
  ms_log "installing Debian packages: ${missing[*]}"
  ms__as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q ||
    { ms_die "apt-get update failed"; return 1; }
  ms__as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" ||
    { ms_die "apt-get install failed for: ${missing[*]}"; return 1; }
}

# ---- FerretDB --------------------------------------------------------------
ms__ferretdb_ok() {
  local out
  [[ -x $MS_TOOLS_BIN/ferretdb ]] || return 1
  out=$("$MS_TOOLS_BIN/ferretdb" --version 2>/dev/null) || return 1
  grep -qx "version: $MS_FERRETDB_VERSION" <<<"$out"
}

# FerretDB's build/version package panics at start unless build/version/version.txt
# holds the version and the main module is FerretDB itself -- which `go install
# ...@version` and `go build` from another module do not give.  So build from a
# writable copy of the module source with version.txt/commit.txt written in.
ms_build_ferretdb() (
  set -euo pipefail
  ms__ferretdb_ok && exit 0
  ms__lock ferretdb
  ms__ferretdb_ok && exit 0
  local go mod src
  go=$(ms__go)
  ms_log "building FerretDB $MS_FERRETDB_VERSION (takes a few minutes the first time)"
  mod=$(ms__go_module ferretdb-fetch)
  src=$MS_TOOLS_CACHE/src/ferretdb-$MS_FERRETDB_VERSION
  local dir
  dir=$(cd "$mod" && "$go" mod download -json "github.com/FerretDB/FerretDB@$MS_FERRETDB_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p') ||
    { ms_die "could not download FerretDB $MS_FERRETDB_VERSION from the Go module proxy"; exit 1; }
  [[ -n $dir && -d $dir ]] || { ms_die "go mod download gave no source directory for FerretDB"; exit 1; }
  rm -rf "$src"
  cp -r "$dir" "$src"
  chmod -R u+w "$src"
  printf '%s\n' "$MS_FERRETDB_VERSION" >"$src/build/version/version.txt"
  printf '%s\n' "$MS_FERRETDB_COMMIT" >"$src/build/version/commit.txt"
  mkdir -p "$MS_TOOLS_BIN"
  (cd "$src" && GOFLAGS=-buildvcs=false "$go" build -trimpath -o "$MS_TOOLS_BIN/ferretdb.new" ./cmd/ferretdb) ||
    { ms_die "go build of FerretDB failed (source in $src)"; exit 1; }
  mv -f "$MS_TOOLS_BIN/ferretdb.new" "$MS_TOOLS_BIN/ferretdb"
  ms__ferretdb_ok || { ms_die "built FerretDB does not report version $MS_FERRETDB_VERSION"; exit 1; }
  rm -rf "$src" "$mod"
  ms_log "FerretDB ready: $MS_TOOLS_BIN/ferretdb"
)

# ---- mongodump / mongorestore ---------------------------------------------
ms__mongo_tools_ok() {
  ms__go_bin_has "$MS_TOOLS_BIN/mongodump" github.com/mongodb/mongo-tools "$MS_MONGO_TOOLS_VERSION" &&
    ms__go_bin_has "$MS_TOOLS_BIN/mongorestore" github.com/mongodb/mongo-tools "$MS_MONGO_TOOLS_VERSION"
}

ms_build_mongo_tools() (
  set -euo pipefail
  ms__mongo_tools_ok && exit 0
  ms__lock mongo-tools
  ms__mongo_tools_ok && exit 0
  local go mod t
  go=$(ms__go)
  ms_log "building mongodump/mongorestore (mongo-tools 100.11.0 = $MS_MONGO_TOOLS_VERSION)"
  mod=$(ms__go_module mongo-tools)
  mkdir -p "$MS_TOOLS_BIN"
  export GONOSUMDB=github.com/mongodb/mongo-tools # the checksum DB has no entry for this pseudo-version
  (cd "$mod" && "$go" get "github.com/mongodb/mongo-tools/mongodump/main@$MS_MONGO_TOOLS_VERSION" \
    "github.com/mongodb/mongo-tools/mongorestore/main@$MS_MONGO_TOOLS_VERSION") ||
    { ms_die "could not fetch mongo-tools $MS_MONGO_TOOLS_VERSION from the Go module proxy"; exit 1; }
  for t in mongodump mongorestore; do
    (cd "$mod" && "$go" build -trimpath -o "$MS_TOOLS_BIN/$t.new" "github.com/mongodb/mongo-tools/$t/main") ||
      { ms_die "go build of $t failed"; exit 1; }
    mv -f "$MS_TOOLS_BIN/$t.new" "$MS_TOOLS_BIN/$t"
  done
  ms__mongo_tools_ok || { ms_die "built mongo-tools do not carry version $MS_MONGO_TOOLS_VERSION"; exit 1; }
  rm -rf "$mod"
  ms_log "mongo-tools ready: $MS_TOOLS_BIN/mongodump $MS_TOOLS_BIN/mongorestore"
)

# ---- MinIO (S3) -------------------------------------------------------------
ms__minio_ok() {
  ms__go_bin_has "$MS_TOOLS_BIN/minio" github.com/minio/minio "$MS_MINIO_VERSION"
}

ms_build_minio() (
  set -euo pipefail
  ms__minio_ok && exit 0
  ms__lock minio
  ms__minio_ok && exit 0
  local go mod
  go=$(ms__go)
  ms_log "building MinIO $MS_MINIO_VERSION (takes several minutes the first time)"
  mod=$(ms__go_module minio)
  mkdir -p "$MS_TOOLS_BIN"
  (cd "$mod" && "$go" get "github.com/minio/minio@$MS_MINIO_VERSION") ||
    { ms_die "could not fetch MinIO $MS_MINIO_VERSION from the Go module proxy"; exit 1; }
  (cd "$mod" && "$go" build -trimpath -o "$MS_TOOLS_BIN/minio.new" github.com/minio/minio) ||
    { ms_die "go build of MinIO failed"; exit 1; }
  mv -f "$MS_TOOLS_BIN/minio.new" "$MS_TOOLS_BIN/minio"
  ms__minio_ok || { ms_die "built MinIO does not carry version $MS_MINIO_VERSION"; exit 1; }
  rm -rf "$mod"
  ms_log "MinIO ready: $MS_TOOLS_BIN/minio"
)

# ---- toxiproxy (fault injection) -------------------------------------------------
ms__toxiproxy_ok() {
  ms__go_bin_has "$MS_TOOLS_BIN/toxiproxy-server" github.com/Shopify/toxiproxy/v2 "$MS_TOXIPROXY_VERSION"
}

ms_build_toxiproxy() (
  set -euo pipefail
  ms__toxiproxy_ok && exit 0
  ms__lock toxiproxy
  ms__toxiproxy_ok && exit 0
  local go mod
  go=$(ms__go)
  ms_log "building toxiproxy $MS_TOXIPROXY_VERSION"
  mod=$(ms__go_module toxiproxy)
  mkdir -p "$MS_TOOLS_BIN"
  (cd "$mod" && "$go" get "github.com/Shopify/toxiproxy/v2/cmd/server@$MS_TOXIPROXY_VERSION") ||
    { ms_die "could not fetch toxiproxy $MS_TOXIPROXY_VERSION from the Go module proxy"; exit 1; }
  (cd "$mod" && "$go" build -trimpath -o "$MS_TOOLS_BIN/toxiproxy-server.new" github.com/Shopify/toxiproxy/v2/cmd/server) ||
    { ms_die "go build of toxiproxy failed"; exit 1; }
  mv -f "$MS_TOOLS_BIN/toxiproxy-server.new" "$MS_TOOLS_BIN/toxiproxy-server"
  ms__toxiproxy_ok || { ms_die "built toxiproxy does not carry version $MS_TOXIPROXY_VERSION"; exit 1; }
  rm -rf "$mod"
  ms_log "toxiproxy ready: $MS_TOOLS_BIN/toxiproxy-server"
)

# ---- Python venv -----------------------------------------------------------
ms__pick_python() {
  local c
  if [[ -n ${MONGOSNAP_PYTHON:-} ]]; then
    "$MONGOSNAP_PYTHON" -c 'import venv, ensurepip' 2>/dev/null ||
      { ms_die "MONGOSNAP_PYTHON=$MONGOSNAP_PYTHON cannot create virtual environments (no venv/ensurepip)"; return 1; }
    printf '%s\n' "$MONGOSNAP_PYTHON"
    return 0
  fi
  for c in python3 /usr/bin/python3; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 9))' 2>/dev/null; then
      command -v "$c"
      return 0
    fi
  done
  ms_die "no python3 (>= 3.9) with venv/ensurepip; on Debian: apt-get install python3-venv"
}

ms_make_venv() (
  set -euo pipefail
  [[ -f $MS_REQUIREMENTS ]] || { ms_die "missing $MS_REQUIREMENTS"; exit 1; }
  local py want have=""
  py=$(ms__pick_python)
  # The stamp covers the requirements and the interpreter the venv is built on.
  want=$( { cat "$MS_REQUIREMENTS"; "$py" -c 'import sys; print(sys.executable, sys.version)'; } | sha256sum | cut -d' ' -f1)
  [[ -f $MS_VENV/.mongosnap-stamp ]] && have=$(<"$MS_VENV/.mongosnap-stamp")
  if [[ $have == "$want" && -x $MS_VENV/bin/python ]] && "$MS_VENV/bin/python" -c 'import pytest, pymongo, boto3' 2>/dev/null; then
    exit 0
  fi
  mkdir -p "$(dirname "$MS_VENV")"
  local fd
  exec {fd}>"$MS_VENV.lock"
  flock -w 1800 "$fd" || { ms_die "timed out waiting for lock $MS_VENV.lock"; exit 1; }
  have=""
  [[ -f $MS_VENV/.mongosnap-stamp ]] && have=$(<"$MS_VENV/.mongosnap-stamp")
  if [[ $have == "$want" && -x $MS_VENV/bin/python ]]; then
    exit 0
  fi
  ms_log "creating Python venv $MS_VENV with $py"
  rm -rf "$MS_VENV"
  "$py" -m venv "$MS_VENV" || { ms_die "python venv creation failed ($py -m venv $MS_VENV)"; exit 1; }
  "$MS_VENV/bin/python" -m pip install --no-input --disable-pip-version-check -q -r "$MS_REQUIREMENTS" ||
    { rm -rf "$MS_VENV"; ms_die "pip install -r $MS_REQUIREMENTS failed"; exit 1; }
  printf '%s\n' "$want" >"$MS_VENV/.mongosnap-stamp"
  ms_log "venv ready: $MS_VENV"
)

# The release build the benchmarks share (build-bench): set up if missing, otherwise only the
# options they need switched on. tests=true builds the bench tools (bench/wire-source,
# bench/pipeline-bound, the S3 command-line client); werror=false because GCC 12 at -O3 reports
# maybe-uninitialized and format-truncation warnings the -O2 development builds do not.
# Prints the directory's name.
ms_bench_build() {
  local dir=build-bench opts
  if [[ ! -f $MS_REPO_ROOT/$dir/build.ninja ]]; then
    meson setup "$MS_REPO_ROOT/$dir" --buildtype=release -Db_sanitize=none -Dtests=true -Dwerror=false >/dev/null
  else
    opts=$(meson introspect --buildoptions "$MS_REPO_ROOT/$dir" | "$MS_VENV/bin/python" -c '
import json, sys
o = {x["name"]: x["value"] for x in json.load(sys.stdin)}
want = {"buildtype": "release", "b_sanitize": "none", "tests": True, "werror": False}
print(" ".join(f"-D{k}={str(v).lower()}" for k, v in want.items() if o.get(k) != v))')
    if [[ -n $opts ]]; then
      ms_log "reconfiguring $dir: $opts"
      # shellcheck disable=SC2086
      meson configure "$MS_REPO_ROOT/$dir" $opts >/dev/null
    fi
  fi
  printf '%s\n' "$dir"
}

# ---- running FerretDB --------------------------------------------------------
ms_free_port() {
  local py
  py=$(command -v python3 || echo /usr/bin/python3)
  "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# ms_start_ferretdb DIR [EXTRA FERRETDB ARGS...]
# Starts FerretDB with its data, state, log and pid file under DIR, waits until
# it accepts connections and prints the port on stdout.  Files in DIR:
# data/ state/ ferretdb.log ferretdb.pid ferretdb.port.  Stop with ms_stop_ferretdb DIR.
ms_start_ferretdb() {
  local dir=${1:?usage: ms_start_ferretdb DIR [ARGS...]}
  shift
  local timeout=${MONGOSNAP_FERRETDB_START_TIMEOUT:-30}
  local bin=$MS_TOOLS_BIN/ferretdb attempt port pid deadline
  [[ -x $bin ]] || { ms_die "FerretDB not built ($bin); run ms_build_ferretdb"; return 1; }
  if [[ -f $dir/ferretdb.pid ]] && kill -0 "$(<"$dir/ferretdb.pid")" 2>/dev/null; then
    ms_die "a FerretDB (pid $(<"$dir/ferretdb.pid")) is already running in $dir"
    return 1
  fi
  mkdir -p "$dir/data" "$dir/state" || return 1
  dir=$(cd "$dir" && pwd)
  for attempt in 1 2 3; do
    port=$(ms_free_port) || return 1
    "$bin" --handler=sqlite --sqlite-url="file:$dir/data/" \
      --listen-addr="127.0.0.1:$port" --state-dir="$dir/state" \
      --debug-addr=- --telemetry=disable --repl-set-name=rs0 --log-level=warn "$@" \
      </dev/null >>"$dir/ferretdb.log" 2>&1 &
    pid=$!
    printf '%s\n' "$pid" >"$dir/ferretdb.pid"
    deadline=$((SECONDS + timeout))
    while ((SECONDS < deadline)); do
      if ! kill -0 "$pid" 2>/dev/null; then
        break
      fi
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        printf '%s\n' "$port" >"$dir/ferretdb.port"
        printf '%s\n' "$port"
        return 0
      fi
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      kill -9 "$pid" 2>/dev/null
      wait "$pid" 2>/dev/null
      rm -f "$dir/ferretdb.pid"
      ms_die "FerretDB did not accept connections on 127.0.0.1:$port within ${timeout}s; log: $dir/ferretdb.log
$(tail -n 30 "$dir/ferretdb.log")"
      return 1
    fi
    wait "$pid" 2>/dev/null
    rm -f "$dir/ferretdb.pid"
    # Lost a race for the port? try another one; anything else is fatal.
    grep -q 'address already in use' "$dir/ferretdb.log" || break
  done
  ms_die "FerretDB exited during start-up; log: $dir/ferretdb.log
$(tail -n 30 "$dir/ferretdb.log")"
  return 1
}

# ms_stop_ferretdb DIR: SIGTERM, up to 10 s grace, then SIGKILL.  Idempotent.
ms_stop_ferretdb() {
  local dir=${1:?usage: ms_stop_ferretdb DIR} pid i
  [[ -f $dir/ferretdb.pid ]] || return 0
  pid=$(<"$dir/ferretdb.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 100; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  fi
  wait "$pid" 2>/dev/null || true
  rm -f "$dir/ferretdb.pid" "$dir/ferretdb.port"
}
