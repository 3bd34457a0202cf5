#!/bin/sh
# The agent DaemonSet's init step: install tessera-cni (and the reference plugins it chains
# with) into the host's /opt/cni/bin and its conflist into /etc/cni/net.d. Another CNI's
# configuration is never replaced unless TESSERA_CNI_OVERWRITE is "true".
set -eu
host="${HOST_ROOT:-/host}"
source="${TESSERA_CNI_SOURCE:-/usr/local/lib/cni}"
conflist="${TESSERA_CONFLIST:-/usr/local/share/tessera/10-tessera.conflist}"
bin="$host/opt/cni/bin"
conf="$host/etc/cni/net.d"
ours=10-tessera.conflist
others=$(find "$conf" -maxdepth 1 -type f \( -name '*.conf' -o -name '*.conflist' -o -name '*.json' \) ! -name "$ours" | sort)
if [ -n "$others" ] && [ "${TESSERA_CNI_OVERWRITE:-false}" != "true" ]; then
    echo "install-cni: another CNI is configured here:" >&2
    echo "$others" >&2
    echo "install-cni: refusing to replace it; set TESSERA_CNI_OVERWRITE=true to move it aside" >&2
    exit 1
fi
for f in $others; do
    mv "$f" "$f.replaced-by-tessera"
done
for plugin in tessera-cni portmap; do
    cp "$source/$plugin" "$bin/.$plugin.tmp"
    mv "$bin/.$plugin.tmp" "$bin/$plugin"
done
cp "$conflist" "$conf/.$ours.tmp"
mv "$conf/.$ours.tmp" "$conf/$ours"
echo "install-cni: tessera-cni and $ours installed"
