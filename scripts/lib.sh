# Prerequisite checks shared by scripts/up and scripts/test. Each one installs what
# is missing when it can (root, or sudo) or stops with a one-line instruction.
# Sourced, not run.

die() {
    echo "$*" >&2
    exit 1
}

# Runs a command as root: directly when we are root, through sudo when it exists.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        return 127
    fi
}

apt_install() {
    command -v apt-get >/dev/null 2>&1 || return 1
    echo "==> installing $* (apt-get)" >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

need_cargo() {
    if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
        PATH="$HOME/.cargo/bin:$PATH"
        export PATH
    fi
    command -v cargo >/dev/null 2>&1 ||
        die "cargo not found: install Rust with \`curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh\`, then open a new shell"
}

# A C compiler: bundled SQLite and ring are compiled from C.
need_cc() {
    command -v cc >/dev/null 2>&1 && return 0
    apt_install build-essential ||
        die "no C compiler (cc) found: install one with \`sudo apt-get install build-essential\`"
}

# rustfmt and clippy, for the checks in scripts/test.
need_components() {
    local missing=()
    cargo fmt --version >/dev/null 2>&1 || missing+=(rustfmt)
    cargo clippy --version >/dev/null 2>&1 || missing+=(clippy)
    [ ${#missing[@]} -eq 0 ] && return 0
    if command -v rustup >/dev/null 2>&1; then
        rustup component add "${missing[@]}" >&2 ||
            die "cannot install ${missing[*]}: run \`rustup component add ${missing[*]}\`"
    else
        die "${missing[*]} not installed: run \`rustup component add ${missing[*]}\`"
    fi
}

have_nats_server() {
    [ -n "${NATS_SERVER_BIN:-}" ] && [ -x "$NATS_SERVER_BIN" ] && return 0
    command -v nats-server >/dev/null 2>&1 && return 0
    local d
    for d in /usr/sbin /usr/local/sbin /usr/local/bin /usr/bin; do
        [ -x "$d/nats-server" ] && return 0
    done
    return 1
}

need_nats_server() {
    have_nats_server && return 0
    apt_install nats-server && have_nats_server && return 0
    die "nats-server not found: install it with \`sudo apt-get install nats-server\` (Debian/Ubuntu) or from https://github.com/nats-io/nats-server/releases"
}

# socat and jq: tests pipe the agent's event socket through
# `socat UNIX-CONNECT:<path> - | jq`, as the README shows.
need_socat_jq() {
    local missing=()
    command -v socat >/dev/null 2>&1 || missing+=(socat)
    command -v jq >/dev/null 2>&1 || missing+=(jq)
    [ ${#missing[@]} -eq 0 ] && return 0
    apt_install "${missing[@]}" && command -v socat >/dev/null 2>&1 && command -v jq >/dev/null 2>&1 &&
        return 0
    die "${missing[*]} not found: install with \`sudo apt-get install ${missing[*]}\`"
}

# systemd-analyze: the tests verify the units in packaging/systemd with it.
need_systemd_analyze() {
    command -v systemd-analyze >/dev/null 2>&1 && return 0
    apt_install systemd && command -v systemd-analyze >/dev/null 2>&1 && return 0
    die "systemd-analyze not found: install it with \`sudo apt-get install systemd\`"
}

# util-linux's unshare: the FIM watch-limit test lowers the inotify limit in a user
# namespace of its own.
need_unshare() {
    command -v unshare >/dev/null 2>&1 && return 0
    apt_install util-linux && command -v unshare >/dev/null 2>&1 && return 0
    die "unshare not found: install it with \`sudo apt-get install util-linux\`"
}

# openssl: the NATS mutual-TLS tests make their CA and certificates with it.
need_openssl() {
    command -v openssl >/dev/null 2>&1 && return 0
    apt_install openssl && command -v openssl >/dev/null 2>&1 && return 0
    die "openssl not found: install it with \`sudo apt-get install openssl\`"
}

# Where cargo puts binaries.
target_dir() {
    echo "${CARGO_TARGET_DIR:-target}"
}
