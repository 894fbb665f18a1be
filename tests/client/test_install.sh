#!/bin/sh
# Install the build into a temporary DESTDIR and build client/example.c against the
# installed libmoe-client with `pkg-config --cflags --libs moe-client`, as a user would;
# run it against an absent daemon; check the soname, the header's place, moectl, and that
# the library exports only moe_client_* symbols. Prints a Check-style summary line.
set -eu
build=${MOE_BUILDDIR:?}
src=${MOE_TOP_SRCDIR:?}
tmp=$(mktemp -d /tmp/moe-client-install.XXXXXX)
trap 'rm -rf "$tmp"' EXIT INT TERM
checks=0
fail() { echo "FAIL: $*"; echo "100%: Checks: $checks, Failures: 1, Errors: 0"; exit 1; }
ok() { checks=$((checks + 1)); echo "ok: $*"; }

meson install -C "$build" --no-rebuild --quiet --tags runtime,devel --destdir "$tmp/root" \
    >"$tmp/install.log" 2>&1 || { cat "$tmp/install.log"; fail "meson install"; }
pc=$(find "$tmp/root" -name moe-client.pc | head -n 1)
[ -n "$pc" ] || fail "no moe-client.pc installed"
hdr=$(find "$tmp/root" -path '*/include/moe/client.h' | head -n 1)
[ -n "$hdr" ] || fail "no moe/client.h installed"
lib=$(find "$tmp/root" -name 'libmoe-client.so.0' | head -n 1)
[ -n "$lib" ] || fail "no libmoe-client.so.0 installed"
[ -n "$(find "$tmp/root" -path '*/bin/moectl')" ] || fail "moectl not installed"
ok "installed: $(echo "$pc" | sed "s|$tmp/root||"), header, library, moectl"

readelf -d "$lib" | grep -q 'SONAME.*\[libmoe-client\.so\.0\]' || fail "soname is not libmoe-client.so.0"
bad=$(nm -D --defined-only "$lib" | awk '$2 ~ /[TDBRW]/ && $3 !~ /^moe_client_/ {print $3}' |
      grep -v -E '^(_init|_fini|_edata|_end|__bss_start)$' || true)
[ -z "$bad" ] || fail "exports more than moe_client_*: $bad"
ok "soname libmoe-client.so.0, only moe_client_* exported"

export PKG_CONFIG_PATH="$(dirname "$pc")"
export PKG_CONFIG_SYSROOT_DIR="$tmp/root"
flags=$(pkg-config --cflags --libs moe-client) || fail "pkg-config --cflags --libs moe-client"
san=""
if [ -n "${MOE_CLIENT_SANITIZE:-}" ] && [ "$MOE_CLIENT_SANITIZE" != none ]; then
    san="-fsanitize=$MOE_CLIENT_SANITIZE"
fi
# shellcheck disable=SC2086
${CC:-cc} -std=c99 -Wall -Wextra -Werror $san -o "$tmp/example" "$src/client/example.c" \
    $flags -Wl,-rpath,"$(dirname "$lib")" || fail "the example does not build with: $flags"
ok "example.c builds with: $flags"

rc=0
unset LD_LIBRARY_PATH
MOED_SOCKET="$tmp/absent.sock" "$tmp/example" >"$tmp/out" 2>"$tmp/err" || rc=$?
[ "$rc" = 1 ] || fail "the example exited $rc against an absent daemon"
grep -q "not running" "$tmp/err" || fail "no clear message: $(cat "$tmp/err")"
ldd "$tmp/example" | grep -q "$tmp/root" || fail "the example did not load the installed library"
ok "the example runs on the installed library: $(cat "$tmp/err")"
echo "100%: Checks: $checks, Failures: 0, Errors: 0"
