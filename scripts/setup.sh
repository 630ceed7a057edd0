#!/usr/bin/env bash
# Prepare a fresh Debian 12 machine (as root) for kdfix's demo and test suite. Idempotent: when everything is present
# a re-run takes seconds: it only checks, and refreshes the apt lists only when they are missing or name a guest
# kernel the mirror no longer has.
#   - apt packages: QEMU (x86 and arm), OVMF, the oracles (crash, makedumpfile), qemu-user-static (runs the arm64
#     oracles), busybox-static for the guest initramfs, kexec-tools (its kexec and the libraries ldd lists go into
#     the kdump guest's initramfs), ...
#   - dpkg foreign architectures arm64 and i386: their apt lists let the tests `apt-get download` the aarch64 and
#     i386 guest kernels, busybox-static and oracle builds (unpacked into the cache, never installed)
#   - pip install -e '.[test]'
# It adds no apt source. Everything else is downloaded on first use, under a file lock, into cache_dir()
# ($KDFIX_CACHE or ~/.cache/kdfix, outside the repo): the guest kernels and the -dbg vmlinux (tests/oracle/guest.py),
# the arm64/i386 oracle sysroots (tests/oracle/sysroot.py), and QEMU 10.0 from bookworm-backports through a private
# apt configuration in the cache (tests/oracle/qemu_versions.py). `bash scripts/setup.sh --warm` fetches them now.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

warm=0
for arg in "$@"; do
    case $arg in
        --warm) warm=1 ;;
        -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "usage: bash scripts/setup.sh [--warm]" >&2; exit 2 ;;
    esac
done

PY=${PYTHON:-python3}
APT_PACKAGES=(qemu-system-x86 qemu-system-arm qemu-user-static ovmf crash makedumpfile busybox-static liblzo2-dev
              cpio xz-utils zstd gzip dpkg-dev ca-certificates kexec-tools librsvg2-bin)
"$PY" -m pip --version >/dev/null 2>&1 || APT_PACKAGES+=(python3-pip python3-dev gcc)  # Debian's own python3
FOREIGN_ARCHES=(arm64 i386)

# Earlier versions of this script added this exact file (a bookworm-backports source for QEMU 10.0); the tests now
# reach backports through a private apt configuration, so the system's sources go back to what they were. A file
# with any other content is someone else's and stays.
OLD_BACKPORTS=/etc/apt/sources.list.d/bookworm-backports.sources
if [[ -f $OLD_BACKPORTS ]] && cmp -s "$OLD_BACKPORTS" - <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
then
    log "removing $OLD_BACKPORTS (written by an earlier kdfix setup.sh; no longer needed)"
    rm -f "$OLD_BACKPORTS"
fi

mapfile -t missing < <(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' "${APT_PACKAGES[@]}" 2>/dev/null \
                       | awk '$1 == "ii" { print $2 }' | sort | comm -13 - <(printf '%s\n' "${APT_PACKAGES[@]}" | sort))
need_update=0
for a in "${FOREIGN_ARCHES[@]}"; do
    if ! dpkg --print-foreign-architectures | grep -qx "$a"; then
        log "dpkg --add-architecture $a"
        dpkg --add-architecture "$a"
        need_update=1
    fi
done
# Read-only apt queries use a binary package cache of their own in the kdfix cache: Debian's container images
# disable apt's (docker-clean), which makes every apt-cache call re-parse all lists (seconds each).
CACHE=${KDFIX_CACHE:-$HOME/.cache/kdfix}
mkdir -p "$CACHE/apt"
APTQ=(-o "Dir::Cache::pkgcache=$CACHE/apt/system-pkgcache.bin" -o "Dir::Cache::srcpkgcache=$CACHE/apt/system-srcpkgcache.bin")
KERNEL_META=(linux-image-cloud-amd64 linux-image-cloud-arm64:arm64 linux-image-686-pae:i386)
# apt metadata is needed to install and to resolve the guest kernels (the Depends of KERNEL_META)
if [[ ${#missing[@]} -gt 0 || $need_update -eq 1 ]] || ! apt-cache "${APTQ[@]}" show "${KERNEL_META[@]}" >/dev/null 2>&1; then
    log "apt-get update"
    apt-get update -qq
else
    # Stale lists name a guest kernel the mirror has since replaced (kernels move with security updates). For each
    # kernel the lists name that the cache does not hold yet (tests/oracle/guest.py: kernel/<package>_<version>),
    # ask the mirror (HTTP HEAD); refresh the lists on a 404.
    mapfile -t kernels < <(apt-cache "${APTQ[@]}" depends "${KERNEL_META[@]}" 2>/dev/null \
                           | sed -nE 's/^ +Depends: (linux-image-[^ <>]+-(cloud-amd64|cloud-arm64|686-pae)(:[a-z0-9]+)?)$/\1/p')
    uncached=()
    while read -r pkg ver; do
        [[ -f $CACHE/kernel/${pkg%%:*}_$ver/kernel.json ]] || uncached+=("$pkg=$ver")
    done < <(apt-cache "${APTQ[@]}" policy "${kernels[@]}" 2>/dev/null \
             | awk '/^[^ ].*:$/ { pkg = substr($0, 1, length($0) - 1) } /^ +Candidate:/ { print pkg, $2 }')
    if [[ ${#uncached[@]} -gt 0 ]]; then
        gone=$(apt-get "${APTQ[@]}" download --print-uris "${uncached[@]}" 2>/dev/null | cut -d"'" -f2 | "$PY" -c '
import sys, urllib.error, urllib.request
for uri in sys.stdin.read().split():
    try:
        urllib.request.urlopen(urllib.request.Request(uri, method="HEAD"), timeout=15).close()
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            print(uri.rsplit("/", 1)[-1])
    except (OSError, ValueError):
        pass  # offline: a refresh would not help' || true)
        if [[ -n $gone ]]; then
            log "the apt lists name kernels the mirror no longer has ($(echo $gone)): apt-get update"
            apt-get update -qq
        fi
    fi
fi
if [[ ${#missing[@]} -gt 0 ]]; then
    log "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    log "apt packages already installed"
fi

export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_BREAK_SYSTEM_PACKAGES=1  # Debian's python3 is "externally managed" (PEP 668); kdfix is for this machine
# Every requirement of kdfix and its test extra (read from pyproject.toml, so a new dependency is noticed) present
# and satisfied, and `kdfix` importable from this checkout, not another one (checked outside the repo directory).
repo=$PWD
set +e
(cd / && "$PY" - "$repo" <<'PY')
import importlib.metadata as md, pathlib, sys, tomllib
try:
    from packaging.requirements import Requirement
except ModuleNotFoundError:
    sys.exit("python packages: packaging missing")
repo = pathlib.Path(sys.argv[1])
project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
for line in [*project["dependencies"], *project["optional-dependencies"]["test"]]:
    req = Requirement(line)
    try:
        version = md.version(req.name)
    except md.PackageNotFoundError:
        sys.exit(f"python packages: {req.name} missing")
    if not req.specifier.contains(version, prereleases=True):
        sys.exit(f"python packages: {req.name} {version} does not satisfy {req}")
try:
    import kdfix
except ModuleNotFoundError:
    sys.exit("python packages: kdfix not installed")
if pathlib.Path(kdfix.__file__).resolve().parent != repo / "kdfix":
    print(f"kdfix is imported from {kdfix.__file__}, not from {repo}", file=sys.stderr)
    sys.exit(3)
PY
python_state=$?
set -e
command -v ruff >/dev/null && command -v mypy >/dev/null && command -v kdfix >/dev/null || python_state=1
if [[ $python_state -eq 0 ]]; then
    log "python packages already installed (editable install of this checkout)"
elif [[ $python_state -eq 3 ]]; then
    log "pip install --no-deps -e . (the requirements are met; the editable install pointed elsewhere)"
    "$PY" -m pip install -q --no-deps -e .
else
    log "pip install -e '.[test]'"
    "$PY" -m pip install -q -e '.[test]'
fi
if [[ $python_state -ne 0 ]] && command -v pyenv >/dev/null; then pyenv rehash || true; fi  # the new `kdfix` on PATH

if [[ $warm -eq 1 ]]; then
    log "warming the guest kernel cache (x86_64, aarch64, i386) and the x86_64 -dbg vmlinux"
    "$PY" -c 'from tests.oracle.guest import GUEST_ARCHES, busybox_binary, cache_dir, debug_vmlinux, kernel_artifacts
for a in GUEST_ARCHES:
    print(cache_dir(), kernel_artifacts(a).release, busybox_binary(a))
print(debug_vmlinux())' >&2
    log "warming the arm64/i386 crash + makedumpfile sysroots (apt-get download, unpacked into the cache)"
    "$PY" -c 'from tests.oracle.sysroot import ORACLE_ARCHES, oracle_sysroot
for a in ORACLE_ARCHES:
    print(oracle_sysroot(a).root)' >&2
    log "warming the QEMU 10.0 cache (bookworm-backports through the cache's private apt configuration)"
    "$PY" -c 'from tests.oracle.qemu_versions import qemu_install; q = qemu_install("10.0"); print(q.version, q.binary)' >&2
fi
log "done"
