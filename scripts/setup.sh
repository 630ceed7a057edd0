#!/usr/bin/env bash
# Prepare a fresh Debian 12 machine (as root) for kdfix's test suite. Idempotent: re-running is cheap.
#   - apt packages: QEMU (x86 and arm), OVMF, the oracles (crash, makedumpfile), qemu-user-static (runs the arm64
#     oracles), busybox-static for the guest initramfs, kexec-tools (its kexec and the libraries ldd lists go into
#     the kdump guest's initramfs), ...
#   - dpkg foreign architectures arm64 and i386: their apt lists let the tests `apt-get download` the aarch64 and
#     i386 guest kernels, busybox-static and oracle builds (unpacked into the cache, never installed)
#   - pip install -e '.[test]'
#   - a bookworm-backports apt source (priority 100: nothing upgrades from it by itself) for QEMU 10.0, which the
#     oracle tests unpack into the cache and never install (tests/oracle/qemu_versions.py)
#   - warm the guest-kernel and QEMU 10.0 caches (cache_dir(): $KDFIX_CACHE or ~/.cache/kdfix, outside the repo)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

APT_PACKAGES=(qemu-system-x86 qemu-system-arm qemu-user-static ovmf crash makedumpfile busybox-static liblzo2-dev
              cpio xz-utils zstd gzip dpkg-dev ca-certificates kexec-tools librsvg2-bin)
FOREIGN_ARCHES=(arm64 i386)

missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# bookworm-backports carries QEMU 10.0 (a second real QEMU for tests/oracle/test_qemu10.py); add it unless some
# source already names it. Debian's own mirror, like the bookworm sources; backports default to priority 100.
BACKPORTS_LIST=/etc/apt/sources.list.d/bookworm-backports.sources
need_update=0
for a in "${FOREIGN_ARCHES[@]}"; do
    if ! dpkg --print-foreign-architectures | grep -qx "$a"; then
        log "dpkg --add-architecture $a"
        dpkg --add-architecture "$a"
        need_update=1
    fi
done
if ! grep -rqsE --include='*.list' --include='*.sources' '^[^#]*bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    log "adding $BACKPORTS_LIST"
    cat >"$BACKPORTS_LIST" <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    need_update=1
fi
# apt metadata is needed both to install and to resolve the guest kernel (apt-cache depends linux-image-cloud-amd64)
# ... and stale lists would name a kernel .deb the mirror no longer has: refresh lists older than a day
fresh=$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -1440 2>/dev/null | head -n1)
if [[ ${#missing[@]} -gt 0 ]] || [[ -z "$fresh" ]] || [[ $need_update -eq 1 ]] \
   || ! apt-cache show linux-image-cloud-amd64 >/dev/null 2>&1 \
   || ! apt-cache show linux-image-cloud-arm64:arm64 linux-image-686-pae:i386 >/dev/null 2>&1 \
   || ! apt-cache policy qemu-system-x86 2>/dev/null | grep 'bookworm-backports' >/dev/null; then
    log "apt-get update"
    apt-get update -qq
fi
if [[ ${#missing[@]} -gt 0 ]]; then
    log "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    log "apt packages already installed"
fi

PY=${PYTHON:-python3}
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
if "$PY" -c 'import kdfix, pytest, hypothesis, drgn, kdumpling, numpy, drawsvg' >/dev/null 2>&1 && command -v ruff >/dev/null && command -v mypy >/dev/null; then
    log "python packages already installed; refreshing the editable install"
    "$PY" -m pip install -q --no-deps -e . >/dev/null
else
    log "pip install -e '.[test]'"
    "$PY" -m pip install -q -e '.[test]'
fi

if command -v pyenv >/dev/null; then pyenv rehash || true; fi  # make the new `kdfix` script visible on PATH
log "warming the guest kernel cache (x86_64, aarch64, i386)"
"$PY" -c 'from tests.oracle.guest import GUEST_ARCHES, busybox_binary, cache_dir, kernel_artifacts
for a in GUEST_ARCHES:
    print(cache_dir(), kernel_artifacts(a).release, busybox_binary(a))' >&2
log "warming the arm64/i386 crash + makedumpfile sysroots (apt-get download, unpacked into the cache, not installed)"
"$PY" -c 'from tests.oracle.sysroot import ORACLE_ARCHES, oracle_sysroot
for a in ORACLE_ARCHES:
    print(oracle_sysroot(a).root)' >&2
log "warming the QEMU 10.0 cache (bookworm-backports, unpacked into the cache, not installed)"
"$PY" -c 'from tests.oracle.qemu_versions import qemu_install; q = qemu_install("10.0"); print(q.version, q.binary)' >&2
log "done"
