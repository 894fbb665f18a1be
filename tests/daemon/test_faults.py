#!/usr/bin/env python3
"""Fault injection into a running moed, end to end over its socket (issue 9, item 3).

Each case starts its own moed on a synthetic model (`moe mkmodel`) and a small GPU expert
cache, so experts keep streaming from the file while it decodes, then breaks something:

  - drive errors: MOED_TEST_FAULTS=eio:N (daemon/fault.c, tests only) fails every Nth expert
    read with EIO; the request that meets it gets a 500 JSON error (streamed: an error event,
    then [DONE]), other sequences of the same steps go on, its sequence is freed and the
    daemon keeps serving;
  - short reads (short:N) are continued by libmoeio: answers are unchanged;
  - the model file truncated while running: requests that need the lost experts fail with a
    500, the daemon stays up, and serves the same answers again once the file is restored;
  - device memory too small (vkmem:SIZE limits what the Vulkan engine may allocate): an
    expert cache that does not fit is shrunk to what fits and the log says so; a limit
    below the resident weights is refused at start with a one-line reason, never a crash;
  - host memory: a host tier larger than the memory available is refused at start with the
    reason; out of memory in a step (enomem:N) answers 503 and the daemon keeps serving.

Needs the Vulkan engine (expert streaming); without a Vulkan device the cases that need it
skip. Prints a Check-style summary line; exits 77 when no model can be made."""
import json, os, shutil, signal, subprocess, sys, tempfile, threading, time, traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_daemon as T  # noqa: E402  (start/stop/request/metrics helpers)

# Four GPU slots of the default synthetic model (221184 bytes each): one layer's top-k, so
# nearly every token reads experts.
SMALL_CACHE = "--gpu-cache=1M"
# A prompt of a few tokens and a short answer: some hundred expert reads per request.
REQ = {"max_tokens": 4, "temperature": 0, "ignore_eos": True}


class Skip(Exception):
    pass


def start(env, *extra, faults=None, sock="f.sock"):
    path = os.path.join(env.dir, sock)
    e = {"MOED_TEST_FAULTS": faults} if faults else None
    p = T.start(env.model, path, "--allow-users=root", *extra, env=e)
    # stderr is read on a thread so the log can be checked and a full pipe never blocks moed
    p.log = []
    threading.Thread(target=lambda: p.log.extend(p.stderr), daemon=True).start()
    return p, path


def stop(p):
    rc = T.stop(p)
    assert rc == 0, f"moed exited {rc}: {''.join(p.log)[-2000:]}"


def complete(sock, i, **kw):
    return T.post_json(sock, "/v1/completions", dict(REQ, prompt=f"fault {i}", **kw))


def assert_idle_and_serving(sock, want_failed=1):
    for _ in range(100):
        m = T.metrics(sock)
        if m["moed_active_sequences"] == 0:
            break
        time.sleep(0.05)
    assert m["moed_active_sequences"] == 0, m
    assert m['moed_generations_total{outcome="failed"}'] >= want_failed, m
    assert T.request(sock, "GET", "/health")[0] == 200


def check_500(s, b):
    T.check_error(s, b, 500)
    assert json.loads(b)["error"]["type"] == "server_error", b


CASES = []


def case(f):
    CASES.append(f)
    return f


@case
def eio_while_streaming_experts_fails_that_request_and_moed_keeps_serving(env):
    p, sock = start(env, SMALL_CACHE, faults="eio:1500")
    try:
        seen = []
        for i in range(40):
            s, h, b = complete(sock, i)
            if s != 200:
                check_500(s, b)
            seen.append(s)
            if 500 in seen and seen[-1] == 200:
                break
        assert set(seen) <= {200, 500}, seen
        assert 500 in seen and seen[-1] == 200, seen  # failed, then served again
        m = T.metrics(sock)
        assert m["moed_injected_faults_total"] >= 1, m
        assert m["moed_expert_io_errors_total"] >= 1, m
        assert_idle_and_serving(sock)
    finally:
        stop(p)


@case
def eio_mid_stream_ends_the_stream_with_an_error_event(env):
    p, sock = start(env, SMALL_CACHE, faults="eio:1500")
    try:
        for i in range(40):
            chunks = T.stream_events(sock, "/v1/completions",
                                     dict(REQ, prompt=f"stream {i}", stream=True))
            if "error" in chunks[-1]:
                e = chunks[-1]["error"]
                assert e["code"] == 500 and e["message"], e
                assert all("error" not in c for c in chunks[:-1]), chunks
                break
        else:
            raise AssertionError("no stream met an injected EIO in 40 requests")
        assert complete(sock, "after")[0] in (200, 500)
        assert_idle_and_serving(sock)
    finally:
        stop(p)


@case
def eio_fails_only_the_sequences_that_meet_it(env):
    """Eight streams decode together while reads fail: a failed step is run again one
    sequence at a time, so the errors end only the streams whose own reads fail (each with
    its error event) and the rest finish with all their tokens. Which ones meet an error
    depends on how the requests were batched; the counts must agree."""
    p, sock = start(env, SMALL_CACHE, "--parallel=8", faults="eio:150")
    try:
        out = [None] * 8

        def one(i):
            try:
                out[i] = T.stream_events(sock, "/v1/completions",
                                         dict(REQ, prompt=f"c {i}", max_tokens=12,
                                              stream=True))
            except Exception as e:  # noqa: BLE001 - reported below
                out[i] = repr(e)
        ts = [threading.Thread(target=one, args=(i,)) for i in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(180)
        ends = []
        for c in out:
            assert isinstance(c, list), out
            if "error" in c[-1]:
                assert c[-1]["error"]["code"] == 500, c[-1]
                ends.append("error")
            else:
                assert c[-1]["choices"][0]["finish_reason"] == "length", c[-1]
                ends.append("length")
        m = T.metrics(sock)
        print("     eight streams with EIO on every 150th read:", ends)
        assert m["moed_injected_faults_total"] >= 1 and "length" in ends, (ends, m)
        assert m['moed_generations_total{outcome="failed"}'] == ends.count("error"), (ends, m)
        assert_idle_and_serving(sock, want_failed=0)
    finally:
        stop(p)


@case
def a_failed_step_leaves_the_vulkan_engine_valid(env):
    """After steps that failed half-way (a read error while recording), the next steps
    raise no Vulkan validation message: the engine's state is whole again."""
    if os.environ.get("MOE_VK_VALIDATION") != "1":
        raise Skip("the validation layer is off (MOE_VK_VALIDATION)")
    p, sock = start(env, SMALL_CACHE, faults="eio:100")
    try:
        for i in range(4):
            assert complete(sock, i)[0] in (200, 500)
        m = T.metrics(sock)
        assert m["moed_injected_faults_total"] >= 1, m
        assert m["moed_vk_validation_messages_total"] == 0, "".join(p.log)[-1500:]
    finally:
        T.stop(p)
        time.sleep(0.1)
        last = [ln for ln in p.log if "validation messages" in ln]
        assert not last, last


@case
def short_reads_are_continued_and_change_nothing(env):
    want = T.moe_run_ids(env.model, "short 1", 4)
    p, sock = start(env, SMALL_CACHE, faults="short:3")
    try:
        s, h, b = T.post_json(sock, "/v1/completions",
                              dict(REQ, prompt="short 1", logprobs=0))
        assert s == 200, b
        assert len(json.loads(b)["choices"][0]["logprobs"]["tokens"]) == len(want)
        m = T.metrics(sock)
        assert m["moed_injected_faults_total"] >= 1, m
        assert m["moed_expert_io_errors_total"] == 0, m
        d = subprocess.run([T.MOE, "detokenize", "--model", env.model, *map(str, want)],
                           capture_output=True, timeout=60)
        assert json.loads(b)["choices"][0]["text"] == d.stdout.decode("utf-8")
    finally:
        stop(p)


@case
def a_model_file_truncated_while_running_fails_requests_not_moed(env):
    model = os.path.join(env.dir, "cut.gguf")
    shutil.copyfile(env.model, model)
    full = open(model, "rb").read()
    path = os.path.join(env.dir, "cut.sock")
    p = T.start(model, path, "--allow-users=root", SMALL_CACHE)
    p.log = []
    threading.Thread(target=lambda: p.log.extend(p.stderr), daemon=True).start()
    try:
        s, h, b = complete(path, 1)
        assert s == 200, b
        before = json.loads(b)["choices"][0]["text"]
        os.truncate(model, len(full) // 2)  # the later layers' experts are gone
        for i in range(3):
            s, h, b = complete(path, 1)
            check_500(s, b)
        assert_idle_and_serving(path, want_failed=3)
        with open(model, "r+b") as f:  # the file is put back: served as before
            f.write(full)
        s, h, b = complete(path, 1)
        assert s == 200 and json.loads(b)["choices"][0]["text"] == before, (s, b)
    finally:
        stop(p)


@case
def too_little_device_memory_shrinks_the_cache_or_refuses_in_one_line(env):
    """Device memory limits from plenty to too little for the weights, each with a GPU
    expert cache of every expert: moed either starts (having shrunk the cache when it did
    not fit, which the log says) and serves, or exits 1 with exactly one error line. Never
    a signal. (On unified memory the expert slots are host memory the limit does not cover,
    so there the limit bites the weights, the KV cache or the scratch.)"""
    outcomes = []
    for limit in ("64M", "40M", "36M", "32M", "256K"):
        sock = os.path.join(env.dir, f"vk{limit}.sock")
        p = subprocess.Popen([T.MOED, "--config=/dev/null", "--model", env.model, "--socket",
                              sock, "--engine=vulkan", "--cache-dir=", "--gpu-cache=14M",
                              "--allow-users=root"],
                             env=T.moed_env(MOED_TEST_FAULTS=f"vkmem:{limit}"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        log = []
        threading.Thread(target=lambda: log.extend(p.stderr), daemon=True).start()
        for _ in range(600):
            if p.poll() is not None:
                break
            try:
                if T.request(sock, "GET", "/health")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.05)
        if p.poll() is None:
            s, h, b = complete(sock, limit)
            assert s == 200, (limit, b)
            stop(p)
            text = "".join(log)
            shrunk = "retrying with the expert cache sized to what fits" in text
            outcomes.append((limit, "shrunk" if shrunk else "fits"))
        else:
            p.wait()
            time.sleep(0.1)
            text = "".join(log)
            errs = [ln for ln in text.splitlines() if ": err:" in ln]
            assert p.returncode == 1, (limit, p.returncode, text)
            assert len(errs) == 1 and "engine failed to start" in errs[0], (limit, text)
            outcomes.append((limit, "refused"))
    print("     device memory outcomes:", outcomes)
    assert outcomes[0][1] != "refused" and outcomes[-1][1] == "refused", outcomes


@case
def a_host_tier_larger_than_memory_is_refused_with_the_reason(env):
    r = subprocess.run([T.MOED, "--config=/dev/null", "--model", env.model, "--socket",
                        os.path.join(env.dir, "host.sock"), "--host-cache=1024T"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "host-cache" in r.stderr and "available" in r.stderr, \
        (r.returncode, r.stderr)


@case
def out_of_memory_in_a_step_answers_503_and_moed_keeps_serving(env):
    p, sock = start(env, faults="enomem:7")
    try:
        seen = []
        for i in range(12):
            s, h, b = complete(sock, i, max_tokens=3)
            if s != 200:
                T.check_error(s, b, 503)
            seen.append(s)
        assert set(seen) == {200, 503}, seen
        assert_idle_and_serving(sock)
    finally:
        stop(p)


def main():
    env = T.Env()
    env.dir = tempfile.mkdtemp(prefix="moed-faults-")
    os.chmod(env.dir, 0o755)
    env.model = os.path.join(env.dir, "m.gguf")
    r = subprocess.run([T.MOE, "mkmodel", "--seed", "3", "-o", env.model],
                       capture_output=True, text=True)
    if r.returncode != 0:
        print("skip: moe mkmodel failed: " + r.stderr.strip())
        return 77
    vulkan = True
    results = []
    try:
        for f in CASES:
            try:
                if not vulkan:
                    raise Skip("no Vulkan device")
                f(env)
                results.append((f.__name__, True, ""))
            except Skip as e:
                print(f"skip {f.__name__}: {e}")
            except Exception:
                if f is CASES[0] and "no Vulkan device" in traceback.format_exc():
                    vulkan = False
                    print(f"skip {f.__name__}: no Vulkan device")
                    continue
                results.append((f.__name__, False, traceback.format_exc()))
    finally:
        shutil.rmtree(env.dir, ignore_errors=True)
    if not vulkan:
        print("skip: no Vulkan device (the faults are injected into the Vulkan engine)")
        return 77
    return T.report(results)


if __name__ == "__main__":
    sys.exit(main())
