#!/usr/bin/env python3
"""Sums the results of `meson test` in the given build dirs from meson-logs/testlog.json.

A Check program reports "Checks: N, Failures: F, Errors: E" per suite run; those cases are
counted one by one. Any other test counts as one. Prints per-build lines and then the final
"N passed, N failed, N skipped" line that CI reads; exits 1 when anything failed."""
import json, re, sys

CHECK = re.compile(r"Checks: (\d+), Failures: (\d+), Errors: (\d+)")
tot = {"passed": 0, "failed": 0, "skipped": 0}
failed_names = []
for b in sys.argv[1:]:
    try:
        lines = open(f"{b}/meson-logs/testlog.json").read().splitlines()
    except OSError:
        print(f"{b}: no test log")
        tot["failed"] += 1
        continue
    for line in lines:
        t = json.loads(line)
        res = t.get("result", "")
        out = t.get("stdout", "") or ""
        m = CHECK.findall(out)
        if res == "SKIP":
            tot["skipped"] += 1
            continue
        if m and res in ("OK", "FAIL"):
            n = sum(int(x[0]) for x in m)
            f = sum(int(x[1]) + int(x[2]) for x in m)
            tot["passed"] += n - f
            tot["failed"] += f
            if f or res != "OK":
                failed_names.append(f"{b}:{t['name']}")
                if not f:
                    tot["failed"] += 1
        elif res == "OK":
            tot["passed"] += 1
        else:
            tot["failed"] += 1
            failed_names.append(f"{b}:{t['name']} ({res})")
# The fuzz smoke of tools/test: "ok NAME" / "FAIL NAME" lines.
try:
    for line in open("build/fuzz-smoke.txt"):
        word, _, name = line.strip().partition(" ")
        if word == "ok":
            tot["passed"] += 1
        elif word == "FAIL":
            tot["failed"] += 1
            failed_names.append(f"fuzz:{name}")
except OSError:
    pass
if failed_names:
    print("failed: " + ", ".join(failed_names))
print(f"{tot['passed']} passed, {tot['failed']} failed, {tot['skipped']} skipped")
sys.exit(1 if tot["failed"] else 0)
