#!/usr/bin/env python3
"""`moe run` and `moe bench decode` on the Vulkan engine, end to end through the real binary.

Tiny synthetic models (`moe mkmodel`, two layers) of several architectures and weight
types: `moe run --json` on the Vulkan engine chooses the same greedy tokens as on the CPU
reference (--engine reference) with top-5 logits within a normalized tolerance, with every
expert resident and with caches so small that every layer streams (host tier on, prefetch
on and off, both cache policies); bad engine flags are refused with exit status 2; `moe bench
decode --json` prints one object with the documented fields, each in its range (no timing
thresholds: speed is for `moe bench`, not for tests). Prints a Check-style summary line;
exits 77 when there is no Vulkan device or the models cannot be made."""
import ctypes.util, json, os, shutil, subprocess, sys, tempfile, traceback

BUILD = os.environ.get("MOE_BUILDDIR", os.path.join(os.path.dirname(__file__), "..", "..", "build"))
MOE = os.path.join(BUILD, "tools", "moe")
PROMPT = "1,17,42,5,99,3,7,8"
N_GEN = 8
# |vulkan - reference| / max(1, |largest reference logit|) over the top-5 of every step: the
# engine computes in f32 with f16 KV and its own summation order, the reference in f32.
LOGIT_TOL = 2e-2
MODELS = [("qwen3moe", "q8_0"), ("qwen2moe", "q4_K"), ("olmoe", "f16"), ("llama", "q4_0")]
# Small enough that a layer's top-4 barely fits: every step streams (experts of these
# models are ~50-210 KiB).
SMALL = ["--gpu-cache", "1M", "--host-cache", "512K"]
BENCH_FIELDS = {
    "decode_tokens_per_s", "prefill_tokens_per_s", "hit_rate", "bytes_streamed_per_token",
    "prefetch_accuracy", "compute_tokens_per_s", "io_bytes_per_s", "io_source",
    "io_tokens_per_s", "bound_tokens_per_s", "bound", "ratio", "ratio_median", "rounds",
    "active_bytes_per_token", "peak_rss_bytes",
    "active_bytes_per_s", "copy_bytes_per_s", "active_bw_ratio", "read_wait_ns",
    "gpu_wait_ns", "expert_hits", "expert_misses", "resident_misses", "tokens_equal", "waves",
    "prefetch_issued", "prefetch_used", "batch", "prompt", "tokens", "device"}


ENV = None  # the environment of every moe run (sanitizer_env)


class Skip(Exception):
    pass


def sanitizer_env():
    """Under ASan the Vulkan driver and the validation layer are unloaded at exit with
    allocations of their own still live, so LeakSanitizer cannot name their frames and
    tests/gpu/lsan.supp cannot suppress them: preloading them keeps them mapped (as
    test_expert_store.c does with dlopen(RTLD_NODELETE))."""
    env = dict(os.environ)
    try:
        with open(MOE, "rb") as f:
            if b"__asan_init" not in f.read():
                return env
    except OSError:
        return env
    libs = [n for n in ("vulkan_lvp", "VkLayer_khronos_validation")
            if ctypes.util.find_library(n)]
    env["LD_PRELOAD"] = " ".join(f"lib{n}.so" for n in libs)
    env["ASAN_OPTIONS"] = (env.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0").lstrip(":")
    return env


def moe(*args, timeout=300):
    return subprocess.run([MOE, *args], capture_output=True, text=True, timeout=timeout,
                          env=ENV)


def run_json(path, *extra, prompt=PROMPT):
    r = moe("run", "--model", path, "--prompt-ids", prompt, "-n", str(N_GEN), "--ignore-eos",
            "--json", *extra)
    if r.returncode != 0 and "No such device" in r.stderr:
        raise Skip("no Vulkan device: " + r.stderr.strip())
    assert r.returncode == 0, f"moe run {' '.join(extra)} exited {r.returncode}: {r.stderr}"
    out = json.loads(r.stdout)
    assert list(out) == ["prompt_ids", "steps"], list(out)
    assert out["prompt_ids"] == [int(x) for x in prompt.split(",")]
    assert len(out["steps"]) == N_GEN
    for st in out["steps"]:
        assert list(st) == ["id", "top5"] and len(st["top5"]) == 5, st
    return out


def same_as_reference(path, *extra, prompt=PROMPT):
    ref = run_json(path, "--engine", "reference", prompt=prompt)
    vk = run_json(path, "--engine", "vulkan", *extra, prompt=prompt)
    want = [s["id"] for s in ref["steps"]]
    got = [s["id"] for s in vk["steps"]]
    assert got == want, f"tokens differ: vulkan {got}, reference {want}"
    for i, (a, b) in enumerate(zip(ref["steps"], vk["steps"])):
        scale = max(1.0, abs(a["top5"][0][1]))
        for (ia, la), (ib, lb) in zip(a["top5"], b["top5"]):
            err = abs(la - lb) / scale
            # ids of the top 5 may swap on near ties; the logit of each rank must agree
            assert err <= LOGIT_TOL, f"step {i}: top-5 logit {lb} vs {la} (err {err:.2e})"


def make_models(tmp):
    paths = {}
    for arch, typ in MODELS + [("qwen3moe", "q4_K")]:
        p = os.path.join(tmp, f"{arch}-{typ}.gguf")
        r = moe("mkmodel", "--arch", arch, "--type", typ, "--layers", "2", "--seed", "5",
                "-o", p)
        if r.returncode != 0:
            raise Skip(f"moe mkmodel --arch {arch} --type {typ}: {r.stderr.strip()}")
        paths[(arch, typ)] = p
    return paths


def cases(paths):
    """(name, function) pairs; names state the behaviour."""
    out = []
    for arch, typ in MODELS:
        out.append((f"vulkan_tokens_equal_reference_{arch}_{typ}",
                    lambda p=paths[(arch, typ)]: same_as_reference(p)))
    q3 = paths[("qwen3moe", "q8_0")]
    q4k = paths[("qwen3moe", "q4_K")]
    out += [
        ("vulkan_streaming_every_layer_equals_reference", lambda: same_as_reference(q3, *SMALL)),
        ("vulkan_streaming_without_prefetch_lru_equals_reference",
         lambda: same_as_reference(q4k, *SMALL, "--no-prefetch", "--cache-policy", "lru")),
        # the prompt is one step of as many entries (the engine's n_batch): any count works
        ("vulkan_prompt_of_1_3_6_and_13_ids_equals_reference",
         lambda: [same_as_reference(q3, prompt=p) for p in ("7", "1,2,3", "1,17,42,5,99,3",
                                                             ",".join(map(str, range(5, 18))))]),
        ("vulkan_with_explicit_ctx_and_io_depth_equals_reference",
         lambda: same_as_reference(q3, "--ctx", "64", "--io-depth", "8")),
        ("run_refuses_bad_engine_flags", lambda: refuses_bad_flags(q3)),
        ("run_help_names_the_engine_flags", run_help),
        ("bench_decode_json_has_the_documented_fields_in_range", lambda: bench_decode(q3)),
        ("bench_decode_refuses_bad_arguments", lambda: bench_refuses(q3)),
    ]
    return out


def refuses_bad_flags(path):
    base = ["run", "--model", path, "--prompt-ids", "1,2", "-n", "2"]
    for bad in (["--engine", "cuda"], ["--gpu-cache", "-1"], ["--gpu-cache", "12Q"],
                ["--cache-policy", "fifo"], ["--io-depth", "0"], ["--ctx", "3"],
                ["--ctx", "16", "-n", "20"]):
        r = moe(*base, *bad)
        assert r.returncode == 2, f"{bad}: exit {r.returncode}, stderr {r.stderr}"
        assert "usage:" in r.stderr or "moe run:" in r.stderr, r.stderr


def run_help():
    r = moe("run", "--help")
    assert r.returncode == 0
    for flag in ("--engine", "--device", "--gpu-cache", "--host-cache", "--ctx",
                 "--no-prefetch", "--cache-policy", "--io-depth"):
        assert flag in r.stdout, flag
    r = moe("bench", "--help")
    assert r.returncode == 0 and "decode" in r.stdout, r.stdout


def bench_decode(path):
    r = moe("bench", "decode", path, "--tokens", "4", "--prompt", "8", "--batch", "3",
            "--rounds", "2", *SMALL, "--io-seconds", "0.5", "--json")
    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr}"
    j = json.loads(r.stdout)
    missing = BENCH_FIELDS - set(j)
    assert not missing, f"missing fields {sorted(missing)}"
    assert j["bench"] == "decode" and j["batch"] == 3 and j["prompt"] == 8 and j["tokens"] == 4
    assert j["rounds"] == 2 and j["ratio_median"] > 0 and j["peak_rss_bytes"] > 0
    for k in ("decode_tokens_per_s", "prefill_tokens_per_s", "compute_tokens_per_s",
              "bound_tokens_per_s", "ratio", "active_bytes_per_token", "active_bytes_per_s",
              "copy_bytes_per_s", "active_bw_ratio"):
        assert isinstance(j[k], (int, float)) and j[k] > 0, (k, j[k])
    assert 0 <= j["hit_rate"] <= 1, j["hit_rate"]
    # a gpu cache of a layer's top-k streams: something must have been read
    assert j["expert_misses"] > 0 and j["bytes_streamed_per_token"] > 0, j
    assert j["prefetch_accuracy"] is None or 0 <= j["prefetch_accuracy"] <= 1
    assert j["resident_misses"] == 0, "the resident pass still read experts"
    assert j["tokens_equal"] is True, "streaming and resident passes chose different tokens"
    assert j["bound"] in ("compute", "io")
    assert j["io_source"] in ("fio", "libmoeio")
    assert j["io_bytes_per_s"] > 0 and j["io_tokens_per_s"] > 0
    want = min(j["compute_tokens_per_s"], j["io_tokens_per_s"])
    assert abs(j["bound_tokens_per_s"] - want) <= 1e-4 * want, (j["bound_tokens_per_s"], want)
    assert abs(j["ratio"] - j["decode_tokens_per_s"] / want) <= 1e-3 * j["ratio"]
    # 16 experts x 2 layers, top-4: the 3 tokens of a step need at least 4 experts of a
    # layer between them, so each token moves at least 4/3 experts per layer (1/12 of all)
    assert j["active_bytes_per_token"] >= j["expert_bytes_total"] / 12, j


def bench_refuses(path):
    for bad in (["--batch", "0"], ["--batch", "65"], ["--tokens", "x"], ["--prompt", "0"],
                ["--rounds", "11"], ["--ctx", "16", "--prompt", "32"],
                ["--engine", "reference"], ["--gpu-cache", "lots"], ["--io-seconds", "0"]):
        r = moe("bench", "decode", path, *bad, "--json")
        assert r.returncode == 2, f"{bad}: exit {r.returncode}"
        assert r.stdout == "", f"{bad}: printed {r.stdout!r}"
    assert moe("bench", "decode").returncode == 2
    r = moe("bench", "decode", "--help")
    assert r.returncode == 0 and "active_bw_ratio" in r.stdout and "--gpu-cache" in r.stdout


def main():
    global ENV
    if not os.access(MOE, os.X_OK):
        print(f"SKIP: no moe binary at {MOE}")
        return 77
    ENV = sanitizer_env()
    tmp = tempfile.mkdtemp(prefix="moe-run-test-")
    ran = failures = 0
    try:
        try:
            paths = make_models(tmp)
            # one probe first: no Vulkan device skips everything (other failures are the
            # cases' to report)
            try:
                run_json(paths[("qwen3moe", "q8_0")])
            except AssertionError:
                pass
        except Skip as e:
            print(f"SKIP: {e}")
            return 77
        for name, fn in cases(paths):
            ran += 1
            try:
                fn()
                print(f"ok   {name}")
            except Exception:
                failures += 1
                print(f"FAIL {name}")
                traceback.print_exc(file=sys.stdout)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    pct = 100 * (ran - failures) // max(ran, 1)
    print(f"{pct}%: Checks: {ran}, Failures: {failures}, Errors: 0")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
