#!/usr/bin/env bash
# The whole test suite on a machine with the .NET 10 SDK:
#
#   bash test.sh [dotnet test options]
#
# It first looks for the system tools the tests use. As root with apt-get, it installs the
# Debian packages that are missing; otherwise it names them and exits with 1 before any test
# runs. Then it runs `dotnet test template-tests` with the options given. On a machine that
# has the tools, `dotnet test template-tests` alone does the same.
set -uo pipefail
cd "$(dirname "$0")"

command -v dotnet >/dev/null || { echo "test.sh: the .NET 10 SDK is not installed (dotnet is not on PATH)" >&2; exit 1; }

need=()
have() { command -v "$1" >/dev/null; }
have clang || need+=(clang)                                 # NativeAOT links with it...
[ -f /usr/include/zlib.h ] || need+=(zlib1g-dev)            # ...and zlib
have systemd-socket-activate || need+=(systemd)             # the socket-activation test
have haproxy || need+=(haproxy)                             # the deploy tests check and run
have nginx || need+=(nginx)                                 # the generated balancer files
[ -f /usr/lib/nginx/modules/ngx_stream_module.so ] || need+=(libnginx-mod-stream)
{ have nc && nc -h 2>&1 | grep -q OpenBSD; } || need+=(netcat-openbsd)  # the READMEs' nc lines
have wrk || need+=(wrk)                                     # the READMEs' wrk lines
have curl || need+=(curl)                                   # the READMEs' curl lines
{ have promtool && have prometheus; } || need+=(prometheus) # the metrics tests check and scrape /metrics
have openssl || need+=(openssl)                             # the TLS tests read the certificate served
have h2load || need+=(nghttp2-client)                       # the TLS tests' HTTP/2 load
{ have script && have setsid && have nsenter && have unshare; } || need+=(util-linux bsdutils)

# The arm64 tests publish for linux-arm64 and run the programs under emulation: qemu-user,
# registered with binfmt_misc, and arm64's C libraries; NativeAOT links with the cross binutils,
# C library and libgcc. An arm64 machine runs them natively and needs none of this.
arm64=()
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"; }
if [ "$(uname -m)" != aarch64 ]; then
  have qemu-aarch64-static || arm64+=(qemu-user-static)
  have update-binfmts || arm64+=(binfmt-support)
  have aarch64-linux-gnu-ld || arm64+=(gcc-aarch64-linux-gnu)   # the NativeAOT link, as the
  [ -f /usr/aarch64-linux-gnu/lib/crt1.o ] || arm64+=(libc6-dev-arm64-cross)  # Dockerfile's
  for lib in libc6:arm64 libstdc++6:arm64 zlib1g:arm64; do installed "$lib" || arm64+=("$lib"); done
fi
if [ ${#arm64[@]} -gt 0 ]; then
  need+=("${arm64[@]}")
  if [ "$(id -u)" -eq 0 ] && have dpkg && ! dpkg --print-foreign-architectures | grep -qx arm64; then
    dpkg --add-architecture arm64
  fi
fi

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && have apt-get; then
    echo "test.sh: installing ${need[*]}"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"; } >/dev/null ||
      { echo "test.sh: apt-get could not install ${need[*]}" >&2; exit 1; }
  else
    echo "test.sh: the tests need these Debian packages, which are missing: ${need[*]}" >&2
    multiarch=""; [ ${#arm64[@]} -gt 0 ] && multiarch="dpkg --add-architecture arm64 && apt-get update && "
    echo "test.sh: install them (as root: ${multiarch}apt-get install ${need[*]}), then run this again" >&2
    exit 1
  fi
fi

# binfmt_misc hands arm64 programs to qemu. Where it cannot be mounted or qemu not registered
# (a container without the privilege), the arm64 tests fail and say so.
if [ "$(uname -m)" != aarch64 ] && [ "$(id -u)" -eq 0 ]; then
  binfmt=/proc/sys/fs/binfmt_misc
  [ -e "$binfmt/status" ] || mount -t binfmt_misc binfmt_misc "$binfmt" ||
    echo "test.sh: cannot mount binfmt_misc on $binfmt: the arm64 tests will fail" >&2
  grep -qsx enabled "$binfmt/qemu-aarch64" || update-binfmts --enable qemu-aarch64 ||
    echo "test.sh: cannot register qemu-aarch64 with binfmt_misc: the arm64 tests will fail" >&2
fi

exec dotnet test template-tests "$@"
