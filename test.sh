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
{ have script && have setsid && have nsenter && have unshare; } || need+=(util-linux bsdutils)

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && have apt-get; then
    echo "test.sh: installing ${need[*]}"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"; } >/dev/null ||
      { echo "test.sh: apt-get could not install ${need[*]}" >&2; exit 1; }
  else
    echo "test.sh: the tests need these Debian packages, which are missing: ${need[*]}" >&2
    echo "test.sh: install them (as root: apt-get install ${need[*]}), then run this again" >&2
    exit 1
  fi
fi

exec dotnet test template-tests "$@"
