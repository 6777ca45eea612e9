#!/bin/sh
# Installs the Debian packages kepp needs to build, test and demo, and only
# those that are missing. Safe to run again: it does nothing when all are there.
set -eu
PKGS="gcc make pkg-config clang llvm libnghttp2-dev libssl-dev openssl libevent-dev
libcurl4-openssl-dev libcjson-dev libyaml-dev protobuf-c-compiler libprotobuf-c-dev
protobuf-compiler libprotobuf-dev libxxhash-dev libbpf-dev bpftool libxdp-dev
python3 python3-grpcio python3-protobuf python3-yaml nghttp2-client curl iproute2 prometheus"
missing=""
for p in $PKGS; do
	s=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
	case "$s" in *"install ok installed"*) ;; *) missing="$missing $p" ;; esac
done
[ -z "$missing" ] && exit 0
echo "deps: installing:$missing" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
# Refresh the package lists once when they are absent or older than a day.
if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mtime -1 2>/dev/null | head -n1)" ]; then
	$SUDO apt-get update -qq
fi
# Packages install without starting services (prometheus is here for promtool;
# its daemon must not take port 9090 from kepp's tests).
guard=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
	printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
	$SUDO chmod 755 /usr/sbin/policy-rc.d
	guard=1
fi
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null || rc=$?
[ -z "$guard" ] || $SUDO rm -f /usr/sbin/policy-rc.d
exit "${rc:-0}"

