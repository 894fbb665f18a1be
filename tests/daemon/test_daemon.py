#!/usr/bin/env python3
"""End-to-end tests of moed over its real Unix socket.

Starts moed on a private socket with a synthetic model made by `moe mkmodel`, on the Vulkan
engine (lavapipe in CI, the validation layer on through MOE_VK_VALIDATION=1, and any
validation message fails), then talks HTTP to it as a client would. Greedy answers are
compared with `moe run --engine reference`, the CPU oracle, so the engine is checked end to
end. Without a Vulkan device the reference engine serves and a note says so. Prints a
Check-style summary line ("Checks: N, Failures: F, Errors: 0") so tools/test counts each
case. Exits 77 (skip) only when the moe tool cannot make a model."""
import http.client, json, os, signal, socket, subprocess, sys, tempfile, time, traceback

BUILD = os.environ.get("MOE_BUILDDIR", "build")
MOE = os.path.join(BUILD, "tools", "moe")
MOED = os.path.join(BUILD, "daemon", "moed")
# The engine moed runs on in these tests; main() falls back to the reference without Vulkan.
ENGINE = os.environ.get("MOE_DAEMON_ENGINE", "vulkan")


class UnixConn(http.client.HTTPConnection):
    def __init__(self, path, timeout=60):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def request(sock, method, path, body=None, headers=None):
    c = UnixConn(sock)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        c.close()


def _asan_preload():
    """LD_PRELOAD for an ASan-built moed on the Vulkan engine, else None. The Vulkan loader
    unloads the driver and the validation layer at vkDestroyInstance, so allocations they
    leave behind show as "<unknown module>" frames that no LeakSanitizer suppression can
    name; preloaded (after the ASan runtime, which must come first) they stay mapped and
    lsan.supp suppresses them by library. moed's own frames are still checked."""
    try:
        with open(MOED, "rb") as f:
            if b"__asan_init" not in f.read():
                return None
        ldd = subprocess.run(["ldd", MOED], capture_output=True, text=True).stdout
    except OSError:
        return None
    asan = [ln.split("=>")[1].split()[0] for ln in ldd.splitlines()
            if "libasan.so" in ln and "=>" in ln]
    libs = [os.path.join(d, n) for n in ("libvulkan_lvp.so", "libVkLayer_khronos_validation.so")
            for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib")
            if os.path.exists(os.path.join(d, n))]
    return ":".join(asan[:1] + libs) if asan else None


def moed_env(**extra):
    """The environment to start moed with: ours, the preload an ASan build needs on the
    Vulkan engine, and extra."""
    env = dict(os.environ, **extra)
    pre = _asan_preload() if ENGINE == "vulkan" else None
    if pre:
        env["LD_PRELOAD"] = pre
    return env


def start(model, sock, *extra, wait=True, env=None):
    p = subprocess.Popen([MOED, "--config=/dev/null", "--model", model, "--socket", sock,
                          "--socket-mode=0666", f"--engine={ENGINE}", "--cache-dir=", *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=moed_env(**(env or {})))
    if wait:
        for _ in range(300):
            if p.poll() is not None:
                break
            try:
                if request(sock, "GET", "/health")[0] == 200:
                    return p
            except OSError:
                pass
            time.sleep(0.05)
        out, err = p.communicate(timeout=5) if p.poll() is not None else ("", "")
        raise AssertionError(f"moed did not become healthy: rc={p.poll()} {err}")
    return p


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
    try:
        return p.wait(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        raise AssertionError("moed ignored SIGTERM for 20 s")


def metrics(sock):
    s, h, b = request(sock, "GET", "/metrics")
    assert s == 200, s
    vals = {}
    for line in b.decode().splitlines():
        if line and not line.startswith("#"):
            name, v = line.rsplit(" ", 1)
            vals[name] = float(v)
    return vals


def check_error(status, body, want_status, want_param=None):
    assert status == want_status, f"status {status}, want {want_status}: {body!r}"
    e = json.loads(body)["error"]
    assert isinstance(e["message"], str) and e["message"], e
    assert e["code"] == want_status, e
    if want_param is not None:
        assert e["param"] == want_param, e


CASES = []


def case(f):
    CASES.append(f)
    return f


@case
def health_models_and_metrics_answer(env):
    s, h, b = request(env.sock, "GET", "/health")
    assert s == 200 and json.loads(b)["status"] == "ok", b
    s, h, b = request(env.sock, "GET", "/v1/models")
    d = json.loads(b)
    assert s == 200 and d["object"] == "list" and d["data"][0]["object"] == "model", b
    assert d["data"][0]["id"], d
    s, h, b = request(env.sock, "GET", "/metrics")
    assert s == 200 and h["Content-Type"].startswith("text/plain"), h
    vals = {}
    for line in b.decode().splitlines():
        if line and not line.startswith("#"):
            name, v = line.rsplit(" ", 1)
            vals[name] = float(v)
    assert vals["moed_ready"] == 1, vals
    assert vals['moed_requests_total{code="2xx"}'] >= 2, vals


@case
def unknown_route_is_404_and_wrong_method_405(env):
    s, h, b = request(env.sock, "GET", "/v1/nothing")
    check_error(s, b, 404)
    s, h, b = request(env.sock, "GET", "/v1/completions")
    check_error(s, b, 405)
    assert h.get("Allow") == "POST", h
    s, h, b = request(env.sock, "DELETE", "/v1/models")
    check_error(s, b, 405)


@case
def malformed_and_out_of_range_bodies_are_400(env):
    hdr = {"Content-Type": "application/json"}
    for body, param in [(b"{", None), (b"[1]", None),
                        (b'{"prompt":"a","max_tokens":-4}', "max_tokens"),
                        (b'{"prompt":"a","temperature":1e300}', "temperature"),
                        (b'{"prompt":"a","top_p":"x"}', "top_p")]:
        s, h, b = request(env.sock, "POST", "/v1/completions", body, hdr)
        check_error(s, b, 400, param)
    s, h, b = request(env.sock, "POST", "/v1/chat/completions", b'{"messages":[]}', hdr)
    check_error(s, b, 400, "messages")


@case
def body_over_the_limit_is_413(env):
    # As curl does for a large body: headers with Expect: 100-continue, and the answer comes
    # before any of the body is sent.
    so = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    so.connect(env.sock)
    so.send(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % (2 << 20))
    resp = b""
    while b"\r\n\r\n" not in resp or not resp.rstrip().endswith(b"}"):
        part = so.recv(65536)
        if not part:
            break
        resp += part
    so.close()
    head, _, body = resp.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), head
    check_error(413, body, 413)
    # Chunked, with no Content-Length: refused once it passes the limit.
    c = UnixConn(env.sock)
    c.putrequest("POST", "/v1/completions")
    c.putheader("Transfer-Encoding", "chunked")
    c.endheaders()
    chunk = b"a" * 65536
    try:
        for _ in range(40):
            c.send(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        c.send(b"0\r\n\r\n")
        r = c.getresponse()
        check_error(r.status, r.read(), 413)
    except (BrokenPipeError, ConnectionResetError):
        pass  # refusing by closing is acceptable for a chunked flood
    finally:
        c.close()


@case
def daemon_survives_a_client_that_vanishes(env):
    for _ in range(5):
        so = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        so.connect(env.sock)
        so.send(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"pro")
        so.close()
    s, h, b = request(env.sock, "GET", "/health")
    assert s == 200, s


@case
def a_live_socket_is_never_taken_over(env):
    p = start(env.model, env.sock, wait=False)
    rc = p.wait(timeout=20)
    err = p.stderr.read()
    assert rc != 0 and "another process" in err, (rc, err)
    assert request(env.sock, "GET", "/health")[0] == 200


@case
def a_disallowed_user_gets_403(env):
    if os.getuid() != 0:
        raise Skip("needs root to connect as another uid")
    pid = os.fork()
    if pid == 0:
        try:
            os.setgid(65534)
            os.setuid(65534)  # nobody
            s, h, b = request(env.sock, "GET", "/v1/models")
            os._exit(0 if s == 403 and json.loads(b)["error"]["code"] == 403 else 1)
        except Exception:
            os._exit(2)
    _, st = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(st) == 0, f"child status {os.WEXITSTATUS(st)}"
    s, h, b = request(env.sock, "GET", "/metrics")
    assert b"moed_denied_connections_total 1" in b, b


@case
def sigterm_exits_zero_and_removes_the_socket(env):
    rc = stop(env.proc)
    assert rc == 0, rc
    assert not os.path.exists(env.sock)
    env.proc = start(env.model, env.sock, "--allow-users=root")


@case
def a_stale_socket_is_replaced(env):
    env.proc.kill()
    env.proc.wait()
    assert os.path.exists(env.sock)  # SIGKILL leaves it behind
    env.proc = start(env.model, env.sock, "--allow-users=root")
    assert request(env.sock, "GET", "/health")[0] == 200


@case
def a_bad_model_file_is_refused_with_the_reason(env):
    bad = os.path.join(env.dir, "bad.gguf")
    with open(env.model, "rb") as f, open(bad, "wb") as g:
        g.write(f.read(100))
    p = subprocess.run([MOED, "--config=/dev/null", "--model", bad, "--socket",
                        os.path.join(env.dir, "other.sock")], capture_output=True, text=True,
                       timeout=20)
    assert p.returncode == 1 and "refused" in p.stderr, (p.returncode, p.stderr)


@case
def bad_settings_are_refused_with_the_reason(env):
    p = subprocess.run([MOED, "--config=/dev/null", "--ctx=abc"], capture_output=True,
                       text=True, timeout=20)
    assert p.returncode == 2 and "ctx" in p.stderr, (p.returncode, p.stderr)


def post_json(sock, path, obj):
    s, h, b = request(sock, "POST", path, json.dumps(obj).encode(),
                      {"Content-Type": "application/json"})
    return s, h, b


def stream_events(sock, path, obj):
    """Returns (chunks, raw lines) of an SSE answer; asserts the framing."""
    s, h, b = post_json(sock, path, obj)
    assert s == 200, (s, b)
    assert h["Content-Type"].startswith("text/event-stream"), h
    chunks, done = [], False
    for block in b.decode().split("\n\n"):
        if not block:
            continue
        assert not done, "data after [DONE]"
        if block.startswith(":"):
            continue
        assert block.startswith("data: "), block
        if block == "data: [DONE]":
            done = True
            continue
        chunks.append(json.loads(block[6:]))
    assert done, "no [DONE]"
    return chunks


def moe_run_ids(model, prompt, n):
    """The greedy token ids of the CPU reference (`moe run --engine reference`)."""
    r = subprocess.run([MOE, "run", "--model", model, "--prompt", prompt, "-n", str(n),
                        "--json", "--engine", "reference"], capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out, _ = json.JSONDecoder().raw_decode(r.stdout.decode())
    return [st["id"] for st in out["steps"]]


def moe_run_text(env, prompt, n):
    """The greedy text of the CPU reference, through `moe detokenize` (the same incremental
    UTF-8-safe detokenizer the API uses)."""
    ids = [str(i) for i in moe_run_ids(env.model, prompt, n)]
    d = subprocess.run([MOE, "detokenize", "--model", env.model, *ids], capture_output=True,
                       timeout=60)
    assert d.returncode == 0, d.stderr
    return d.stdout.decode("utf-8")


@case
def greedy_completion_equals_moe_run_blocking_and_streamed(env):
    want = moe_run_text(env, "Once upon a time", 16)
    s, h, b = post_json(env.sock, "/v1/completions",
                        {"prompt": "Once upon a time", "max_tokens": 16, "temperature": 0})
    assert s == 200, b
    d = json.loads(b)
    assert d["object"] == "text_completion" and d["id"].startswith("cmpl-"), d
    c = d["choices"][0]
    assert c["text"] == want, (c["text"], want)
    assert c["finish_reason"] == "length", c
    u = d["usage"]
    assert u["completion_tokens"] == 16 and u["total_tokens"] == u["prompt_tokens"] + 16, u
    chunks = stream_events(env.sock, "/v1/completions",
                           {"prompt": "Once upon a time", "max_tokens": 16, "temperature": 0,
                            "stream": True, "stream_options": {"include_usage": True}})
    text = "".join(ch["choices"][0]["text"] for ch in chunks if ch["choices"])
    assert text == want, (text, want)
    assert chunks[-2]["choices"][0]["finish_reason"] == "length", chunks[-2]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == u, chunks[-1]
    assert len({ch["id"] for ch in chunks}) == 1


@case
def health_and_metrics_report_the_engine_and_its_expert_cache(env):
    s, h, b = request(env.sock, "GET", "/health")
    d = json.loads(b)
    assert s == 200 and d["engine"] == ENGINE and d["device"], d
    c = d["expert_cache"]
    m = metrics(env.sock)
    for k in ("moed_expert_host_hits_total", 'moed_prefetch_total{outcome="issued"}',
              'moed_prefetch_total{outcome="used"}', "moed_prefetch_accuracy",
              "moed_expert_waves_total", "moed_expert_io_errors_total",
              "moed_expert_read_wait_seconds_total", "moed_gpu_wait_seconds_total"):
        assert k in m, (k, m)
    assert m["moed_expert_io_errors_total"] == 0 and c["io_errors"] == 0, (m, c)
    if ENGINE != "vulkan":
        return
    # the greedy case before streamed experts through the cache
    assert c["hits"] + c["misses"] > 0 and 0 <= c["hit_rate"] <= 1, c
    assert m["moed_streamed_bytes_total"] > 0, m
    assert m['moed_expert_cache_total{result="miss"}'] > 0, m
    assert m["moed_vk_validation_messages_total"] == 0, m


@case
def greedy_tokens_equal_the_reference_one_by_one(env):
    """A second prompt, with the end-of-text token ignored: as many tokens as the CPU
    reference's (logprobs list one entry per token) and the same text."""
    want = moe_run_ids(env.model, "The capital of France is", 10)
    s, h, b = post_json(env.sock, "/v1/completions",
                        {"prompt": "The capital of France is", "max_tokens": 10,
                         "temperature": 0, "ignore_eos": True, "logprobs": 0})
    assert s == 200, b
    c = json.loads(b)["choices"][0]
    d = subprocess.run([MOE, "detokenize", "--model", env.model, *map(str, want)],
                       capture_output=True, timeout=60)
    assert d.returncode == 0, d.stderr
    assert len(c["logprobs"]["tokens"]) == len(want), (c, want)
    assert c["text"] == d.stdout.decode("utf-8"), (c["text"], want)


@case
def load_progress_goes_to_systemd_as_status_lines(env):
    """While the weights load, STATUS=Loading: N% lines (rising to 100%) with the start
    timeout extended, then READY=1 (the notify protocol itself: tests/systemd)."""
    nsock = os.path.join(env.dir, "notify")
    ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ns.bind(nsock)
    ns.settimeout(0.1)
    sock = os.path.join(env.dir, "n.sock")
    p = subprocess.Popen([MOED, "--config=/dev/null", "--model", env.model, "--socket", sock,
                          f"--engine={ENGINE}", "--cache-dir="],
                         env=moed_env(NOTIFY_SOCKET=nsock), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    msgs = []
    try:
        end = time.time() + 60
        while time.time() < end and not any("READY=1" in m for m in msgs):
            try:
                msgs.append(ns.recv(4096).decode())
            except socket.timeout:
                pass
    finally:
        stop(p)
        ns.close()
    ready = next(i for i, m in enumerate(msgs) if "READY=1" in m)
    assert any("EXTEND_TIMEOUT_USEC=" in m for m in msgs[:ready]), msgs
    if ENGINE != "vulkan":
        return  # the reference engine reports no progress
    pct = [int(m.split("Loading: ")[1].rstrip("%")) for m in msgs[:ready] if "Loading: " in m]
    assert pct and pct == sorted(pct) and pct[-1] == 100, msgs


@case
def chat_streamed_equals_blocking(env):
    req = {"messages": [{"role": "system", "content": "be brief"},
                        {"role": "user", "content": "hello"}],
           "max_tokens": 12, "temperature": 0}
    s, h, b = post_json(env.sock, "/v1/chat/completions", req)
    assert s == 200, b
    d = json.loads(b)
    assert d["object"] == "chat.completion", d
    msg = d["choices"][0]["message"]
    assert msg["role"] == "assistant", msg
    chunks = stream_events(env.sock, "/v1/chat/completions", dict(req, stream=True))
    assert chunks[0]["object"] == "chat.completion.chunk", chunks[0]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant", chunks[0]
    content = "".join(ch["choices"][0]["delta"].get("content", "") for ch in chunks)
    reasoning = "".join(ch["choices"][0]["delta"].get("reasoning_content", "") for ch in chunks)
    assert content == msg["content"], (content, msg)
    assert reasoning == msg.get("reasoning_content", ""), (reasoning, msg)


@case
def seeded_sampling_repeats_and_stop_strings_cut(env):
    req = {"prompt": "abc", "max_tokens": 12, "temperature": 0.9, "seed": 7}
    a = json.loads(post_json(env.sock, "/v1/completions", req)[2])["choices"][0]["text"]
    b = json.loads(post_json(env.sock, "/v1/completions", req)[2])["choices"][0]["text"]
    assert a == b, (a, b)
    full = json.loads(post_json(env.sock, "/v1/completions",
                                {"prompt": "abc", "max_tokens": 12, "temperature": 0})[2])
    text = full["choices"][0]["text"]
    assert len(text) >= 4, text
    stop = text[2:4]
    cut = json.loads(post_json(env.sock, "/v1/completions",
                               {"prompt": "abc", "max_tokens": 12, "temperature": 0,
                                "stop": [stop]})[2])
    c = cut["choices"][0]
    assert c["text"] == text[:text.index(stop)], (c, text, stop)
    assert c["finish_reason"] == "stop", c


@case
def thirty_two_concurrent_streams_all_complete(env):
    import threading
    results = []

    def one(i):
        try:
            chunks = stream_events(env.sock, "/v1/completions",
                                   {"prompt": f"client {i}", "max_tokens": 6,
                                    "ignore_eos": True, "stream": True})
            text = "".join(c["choices"][0]["text"] for c in chunks)
            results.append(chunks[-1]["choices"][0]["finish_reason"] if text else "empty")
        except Exception as e:  # noqa: BLE001 - counted below
            results.append(repr(e))
    ts = [threading.Thread(target=one, args=(i,)) for i in range(32)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert results == ["length"] * 32, results


@case
def a_client_leaving_mid_stream_frees_its_sequence(env):
    so = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    so.connect(env.sock)
    # ignore_eos: the stream must still be running when the client leaves
    body = json.dumps({"prompt": "x", "max_tokens": 2000, "ignore_eos": True,
                       "stream": True}).encode()
    so.send(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body)
    got = b""
    while b"data: " not in got:
        part = so.recv(4096)
        assert part, got
        got += part
    so.close()
    m = metrics(env.sock)
    assert m["moed_request_duration_seconds_count"] >= 30, m
    assert m['moed_request_duration_seconds_bucket{le="+Inf"}'] == \
        m["moed_request_duration_seconds_count"], m
    assert m["moed_time_to_first_token_seconds_count"] >= 30, m
    assert m["moed_completion_tokens_total"] >= 32 * 6, m
    # The daemon keeps serving, the abandoned request is cancelled and its sequence freed.
    s, h, b = post_json(env.sock, "/v1/completions", {"prompt": "y", "max_tokens": 2})
    assert s == 200, b
    for _ in range(100):
        m = metrics(env.sock)
        if m["moed_active_sequences"] == 0 and m['moed_generations_total{outcome="cancelled"}'] >= 1:
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"sequence not freed: {m}")


@case
def the_openai_npm_package_streams_a_chat(env):
    sdk = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sdk")
    if not os.path.isdir(os.path.join(sdk, "node_modules", "openai")):
        raise Skip("tests/daemon/sdk/node_modules missing (tools/setup installs it)")
    r = subprocess.run(["node", os.path.join(sdk, "chat_stream.mjs"), env.sock],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    s, h, b = post_json(env.sock, "/v1/chat/completions",
                        {"messages": [{"role": "user", "content": "Say hello."}],
                         "max_tokens": 8, "temperature": 0})
    want = json.loads(b)["choices"][0]["message"]["content"]
    assert got["content"] == want, (got, want)
    assert got["finish"] in ("length", "stop") and got["usage"]["completion_tokens"] >= 1, got
    assert got["error_status"] == 400, got


@case
def a_full_queue_answers_429_with_retry_after(env):
    import threading
    sock = os.path.join(env.dir, "q.sock")
    p = start(env.model, sock, "--queue=1", "--parallel=1", "--allow-users=root")
    try:
        statuses = []

        def one():
            s, h, b = post_json(sock, "/v1/completions",
                                {"prompt": "q", "max_tokens": 40, "temperature": 0})
            statuses.append((s, h.get("Retry-After"), b))
        ts = [threading.Thread(target=one) for _ in range(6)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(120)
        codes = sorted(x[0] for x in statuses)
        assert 200 in codes and 429 in codes and set(codes) <= {200, 429}, codes
        for s, ra, b in statuses:
            if s == 429:
                check_error(s, b, 429)
                assert ra and ra.isdigit(), ra
    finally:
        stop(p)


@case
def sigterm_ends_in_flight_streams_cleanly_and_exits_zero(env):
    import threading
    sock = os.path.join(env.dir, "t.sock")
    p = start(env.model, sock, "--allow-users=root")
    out = {}

    def stream():
        try:
            out["chunks"] = stream_events(sock, "/v1/completions",
                                          {"prompt": "hi there", "max_tokens": 4000,
                                           "ignore_eos": True, "stream": True})
        except Exception as e:  # noqa: BLE001
            out["error"] = repr(e)
    t = threading.Thread(target=stream)
    t.start()
    time.sleep(1.0)
    p.send_signal(signal.SIGTERM)
    rc = p.wait(timeout=30)
    t.join(30)
    assert rc == 0, rc
    assert "chunks" in out, out  # the stream ended with [DONE], not a cut connection
    last = out["chunks"][-1]
    assert last.get("error", {}).get("code") == 503, last  # ended, and told why


def report(results):
    """Prints (name, ok, detail) results and the Check-style summary line tools/test counts;
    returns the exit status."""
    failures = 0
    for name, ok, detail in results:
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
        if not ok:
            failures += 1
            print("     " + detail.replace("\n", "\n     "))
    pct = 100 * (len(results) - failures) // max(len(results), 1)
    print(f"{pct}%: Checks: {len(results)}, Failures: {failures}, Errors: 0")
    return 1 if failures else 0


class Skip(Exception):
    pass


class Env:
    pass


def main():
    env = Env()
    env.dir = tempfile.mkdtemp(prefix="moed-test-")
    os.chmod(env.dir, 0o755)
    env.model = os.path.join(env.dir, "m.gguf")
    env.sock = os.path.join(env.dir, "moed.sock")
    r = subprocess.run([MOE, "mkmodel", "--seed", "3", "-o", env.model], capture_output=True,
                       text=True)
    if r.returncode != 0:
        print("skip: moe mkmodel failed: " + r.stderr.strip())
        return 77
    global ENGINE
    try:
        env.proc = start(env.model, env.sock, "--allow-users=root")
    except AssertionError as e:
        if ENGINE != "vulkan" or "no Vulkan device" not in str(e):
            raise
        print("note: no Vulkan device: the reference engine serves these tests")
        ENGINE = "reference"
        env.proc = start(env.model, env.sock, "--allow-users=root")
    failures = 0
    ran = 0
    try:
        for f in CASES:
            try:
                f(env)
                ran += 1
                print(f"ok   {f.__name__}")
            except Skip as e:
                print(f"skip {f.__name__}: {e}")
            except Exception:
                ran += 1
                failures += 1
                print(f"FAIL {f.__name__}")
                traceback.print_exc(file=sys.stdout)
    finally:
        stop(env.proc)
        subprocess.run(["rm", "-rf", env.dir])
    pct = 100 * (ran - failures) // max(ran, 1)
    print(f"{pct}%: Checks: {ran}, Failures: {failures}, Errors: 0")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
