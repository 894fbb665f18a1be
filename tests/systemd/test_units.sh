#!/bin/sh
# The units: systemd-analyze verify passes on both, and the service's exposure score is at
# most 1.0 ("SAFE") with the GPU still reachable (render nodes allowed). Prints a Check-style
# summary so tools/test counts the cases.
set -u
b=${MOE_BUILDDIR:?}
src=${MOE_TOP_SRCDIR:?}
command -v systemd-analyze >/dev/null || { echo "skip: no systemd-analyze"; exit 77; }
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
# verify wants ExecStart to exist: point it at the built daemon.
sed "s|^ExecStart=[^ ]*|ExecStart=$b/daemon/moed|" "$b/systemd/moed.service" > "$d/moed.service"
cp "$src/systemd/moed.socket" "$d/"
n=0; f=0
ok() { n=$((n + 1)); echo "ok   $1"; }
bad() { n=$((n + 1)); f=$((f + 1)); echo "FAIL $1"; }

out=$(cd "$d" && systemd-analyze verify --man=no moed.service moed.socket 2>&1)
# Lines about missing users/groups on a machine without sysusers applied are not unit
# errors; anything else is.
rest=$(printf '%s\n' "$out" | grep -v -e "^$" -e "Failed to resolve" -e "user.*does not exist" -e "group.*does not exist" || true)
if [ -z "$rest" ]; then ok verify_passes_on_both_units; else bad verify_passes_on_both_units; printf '%s\n' "$out"; fi

sec=$(systemd-analyze security --offline=yes --threshold=10 "$d/moed.service" 2>&1)
score=$(printf '%s\n' "$sec" | sed -n 's/.*Overall exposure level for moed.service: \([0-9.]*\).*/\1/p')
if [ -n "$score" ] && awk "BEGIN{exit !($score <= 1.0)}"; then ok "exposure_is_at_most_1.0 ($score)"; else bad "exposure_is_at_most_1.0 ($score)"; printf '%s\n' "$sec" | grep -E '✗' ; fi

if grep -q '^DeviceAllow=char-drm rw' "$d/moed.service" && grep -q '^DevicePolicy=closed' "$d/moed.service"; then ok gpu_render_nodes_stay_reachable; else bad gpu_render_nodes_stay_reachable; fi
if grep -q '^Type=notify' "$d/moed.service" && grep -q '^WatchdogSec=' "$d/moed.service"; then ok service_is_notify_with_watchdog; else bad service_is_notify_with_watchdog; fi
if grep -q '^ListenStream=/run/moed/moed.sock' "$d/moed.socket" && grep -q '^SocketMode=0660' "$d/moed.socket"; then ok socket_is_private_to_its_group; else bad socket_is_private_to_its_group; fi

echo "$(( (n - f) * 100 / n ))%: Checks: $n, Failures: $f, Errors: 0"
[ "$f" -eq 0 ]
