#!/usr/bin/env python3
"""Bounded load and soak test of moed over its real Unix socket.

Starts moed on a private socket with a synthetic model (`moe mkmodel`), a small queue and a
short idle timeout, then runs ROUNDS rounds of CLIENTS client threads, each sending
PER_ROUND requests drawn at random (seeded) from a mix: blocking and streamed completions
and chats, streams the client abandons after the first event (the socket is closed),
malformed requests (bad JSON, wrong types, huge numbers, unknown routes, wrong methods,
bodies over the limit, requests that stop half-way), plus one burst per round larger than
parallel + queue so some requests get 429. Every socket has a timeout, so nothing can hang
the test; a request that times out is a failure.

After each round it waits (bounded) for the daemon to be idle and samples VmRSS and the
number of open fds from /proc. Checked, one case each:
  - every request got a defined status (200/400/404/405/413/429/503) with a JSON error body
    for each non-200, every 429 a Retry-After, every streamed 200 ends with data: [DONE];
    no request timed out;
  - a request that stops sending is closed by the daemon within idle-timeout + a margin;
  - the open-sequence gauges (moed_active_sequences, moed_queue_length) return to 0 and
    moed_connections to 1 (the probe itself) after every round;
  - RSS after the warm-up round stays within RSS_BOUND of the first sample after warm-up;
  - no fd leak: the fd count after the load equals the count before it;
  - the daemon still serves afterwards and exits 0 on SIGTERM.
Figures (requests/s, RSS per round, fds) are printed. Environment knobs: MOE_LOAD_SCALE
(multiplies the requests per client; the sanitizer build defaults to a smaller load),
MOE_LOAD_ROUNDS, MOE_LOAD_SEED. Prints a Check-style summary line; exits 77 when the model
cannot be made."""
import collections, json, os, random, socket, subprocess, sys, tempfile, threading
import time, traceback

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "daemon"))
import test_daemon as T  # noqa: E402  (start/stop/request/metrics helpers)

# IDLE_TIMEOUT must exceed the 2 s SSE ping interval (PING_MS in api_generate.c): a stream
# waiting longer than idle-timeout for its next token is otherwise cut by libmicrohttpd.
QUEUE, PARALLEL, IDLE_TIMEOUT, MAX_BODY = 16, 4, 5, 65536
SOCK_TIMEOUT = 60  # seconds any one socket operation may take before it counts as hanging
DEFINED = {200, 400, 404, 405, 413, 429, 503}


def sanitized(moed):
    """Whether moed was built with ASan (slower, and its allocator keeps a quarantine)."""
    try:
        with open(moed, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.status = collections.Counter()  # (kind, status) -> n
        self.problems = []                   # what went wrong, as text
        self.n = 0

    def add(self, kind, status):
        with self.lock:
            self.status[(kind, status)] += 1
            self.n += 1

    def problem(self, kind, what):
        with self.lock:
            self.problems.append(f"{kind}: {what}")
            self.n += 1
            print(f"problem: {kind}: {what}", flush=True)


def raw(sock_path, data, timeout=SOCK_TIMEOUT):
    """Sends raw bytes, reads the whole answer (the daemon closes: Connection: close)."""
    so = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    so.settimeout(timeout)
    try:
        so.connect(sock_path)
        so.sendall(data)
        resp = b""
        while True:
            part = so.recv(65536)
            if not part:
                break
            resp += part
        return resp
    finally:
        so.close()


def parse_http(resp):
    head, _, body = resp.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    if hdrs.get("transfer-encoding", "").lower() == "chunked":
        out, rest = b"", body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            out += rest[:size]
            rest = rest[size + 2:]
        body = out
    return status, hdrs, body


def post_raw(path, obj_or_bytes, extra=b""):
    body = obj_or_bytes if isinstance(obj_or_bytes, bytes) else json.dumps(obj_or_bytes).encode()
    return (b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n%s\r\n" % (path.encode(), len(body),
                                                                   extra) + body)


def check_answer(st, kind, resp, stream=False):
    """Records one answer; checks the error shape, Retry-After, the SSE ending."""
    if not resp:
        st.problem(kind, "connection closed with no answer")
        return None
    try:
        status, hdrs, body = parse_http(resp)
    except (ValueError, IndexError) as e:
        st.problem(kind, f"unparsable answer {resp[:80]!r}: {e}")
        return None
    if status not in DEFINED:
        st.problem(kind, f"undefined status {status}: {body[:200]!r}")
        return status
    if status != 200:
        try:
            e = json.loads(body)["error"]
            assert e["code"] == status and e["message"], e
        except Exception as e:  # noqa: BLE001 - recorded
            st.problem(kind, f"{status} without a JSON error: {body[:200]!r} ({e!r})")
            return status
        if status == 429 and not hdrs.get("retry-after", "").isdigit():
            st.problem(kind, "429 without Retry-After")
            return status
    elif stream:
        events = [b for b in body.decode("utf-8").split("\n\n") if b and not b.startswith(":")]
        if not events or events[-1] != "data: [DONE]":
            st.problem(kind, f"stream without [DONE]: {body[-200:]!r}")
            return status
        for ev in events[:-1]:
            d = json.loads(ev[6:])
            if "error" in d:
                st.problem(kind, f"stream ended in an error event: {d}")
                return status
    else:
        try:
            json.loads(body)["choices"]
        except Exception as e:  # noqa: BLE001
            st.problem(kind, f"200 without choices: {body[:200]!r} ({e!r})")
            return status
    st.add(kind, status)
    return status


# ---- the request mix ----

def r_completion(sock, rng, st):
    req = {"prompt": f"load {rng.randrange(1000)}", "max_tokens": rng.randint(1, 8),
           "temperature": rng.choice([0, 0.8])}
    check_answer(st, "completion", raw(sock, post_raw("/v1/completions", req)))


def r_completion_stream(sock, rng, st):
    req = {"prompt": "stream me", "max_tokens": rng.randint(1, 8), "stream": True,
           "stream_options": {"include_usage": True}}
    check_answer(st, "completion-stream", raw(sock, post_raw("/v1/completions", req)), True)


def r_chat(sock, rng, st):
    stream = rng.random() < 0.5
    req = {"messages": [{"role": "system", "content": "be brief"},
                        {"role": "user", "content": f"hi {rng.randrange(99)}"}],
           "max_tokens": rng.randint(1, 8), "stream": stream}
    check_answer(st, "chat-stream" if stream else "chat",
                 raw(sock, post_raw("/v1/chat/completions", req)), stream)


def r_cancel(sock, rng, st):
    """A stream the client leaves after the first event (or at once)."""
    req = {"prompt": "leave", "max_tokens": 400, "ignore_eos": True, "stream": True}
    so = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    so.settimeout(SOCK_TIMEOUT)
    try:
        so.connect(sock)
        so.sendall(post_raw("/v1/completions", req))
        if rng.random() < 0.2:
            st.add("cancel", "closed-at-once")
            return
        got = b""
        while b"data: " not in got and b"\r\n\r\n{" not in got:
            part = so.recv(4096)
            if not part:
                break
            got += part
        if got.startswith(b"HTTP/1.1 200") and b"data: " in got:
            st.add("cancel", "closed-mid-stream")
        elif got.startswith(b"HTTP/1.1 429"):
            st.add("cancel", 429)
        else:
            st.problem("cancel", f"unexpected start {got[:120]!r}")
    except socket.timeout:
        st.problem("cancel", "timed out waiting for the first event")
    finally:
        so.close()


MALFORMED = [
    ("bad-json", "/v1/completions", b'{"prompt": "a",', 400),
    ("not-object", "/v1/chat/completions", b'[1,2,3]', 400),
    ("wrong-type", "/v1/completions", b'{"prompt": "a", "max_tokens": "many"}', 400),
    ("wrong-type", "/v1/chat/completions", b'{"messages": "hello"}', 400),
    ("huge-number", "/v1/completions", b'{"prompt": "a", "max_tokens": 1e400}', 400),
    ("huge-number", "/v1/completions",
     b'{"prompt": "a", "max_tokens": 99999999999999999999999999}', 400),
    ("huge-number", "/v1/completions", b'{"prompt": [1, 2, 4294967296]}', 400),
    ("huge-number", "/v1/completions", b'{"prompt": "a", "temperature": -1e308}', 400),
    ("bad-utf8", "/v1/completions", b'{"prompt": "\xff\xfe"}', 400),
    ("nul", "/v1/completions", b'{"prompt": "a\\u0000b"}', 400),
    ("duplicate", "/v1/completions", b'{"prompt": "a", "prompt": "b"}', 400),
    ("empty", "/v1/completions", b'', 400),
]


def r_malformed(sock, rng, st):
    kind, path, body, want = rng.choice(MALFORMED)
    s = check_answer(st, kind, raw(sock, post_raw(path, body)))
    if s is not None and s != want:
        st.problem(kind, f"status {s}, want {want}")


def r_route(sock, rng, st):
    method, path, want = rng.choice([("GET", "/v1/nope", 404), ("POST", "/", 404),
                                     ("GET", "/v1/chat/completions", 405),
                                     ("PUT", "/v1/models", 405), ("POST", "/health", 405)])
    s = check_answer(st, "route", raw(sock, b"%s %s HTTP/1.1\r\nHost: x\r\nConnection: close"
                                      b"\r\nContent-Length: 0\r\n\r\n" % (method.encode(),
                                                                          path.encode())))
    if s is not None and s != want:
        st.problem("route", f"{method} {path}: status {s}, want {want}")


def r_too_big(sock, rng, st):
    """Over max-body: by Content-Length (answered before the body), or chunked."""
    if rng.random() < 0.5:
        s = check_answer(st, "too-big", raw(sock, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                                            b"Content-Length: %d\r\nExpect: 100-continue\r\n"
                                            b"Connection: close\r\n\r\n" % (MAX_BODY + 1)))
    else:
        chunk = b"x" * 16384
        data = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                b"Connection: close\r\n\r\n" +
                (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * (MAX_BODY // len(chunk) + 2) +
                b"0\r\n\r\n")
        try:
            s = check_answer(st, "too-big-chunked", raw(sock, data))
        except (BrokenPipeError, ConnectionResetError):
            st.add("too-big-chunked", "closed")  # refusing by closing is allowed for a flood
            return
    if s is not None and s != 413:
        st.problem("too-big", f"status {s}, want 413")


def r_partial(sock, rng, st):
    """A request that stops half-way: the client vanishes (most), or waits to be closed."""
    so = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    so.settimeout(IDLE_TIMEOUT + 10)
    try:
        so.connect(sock)
        so.sendall(rng.choice([b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Le",
                               b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                               b"Content-Length: 100\r\n\r\n{\"prompt\":",
                               b"GET /health HTTP/1.1\r\n"]))
        if rng.random() < 0.8:
            st.add("partial", "vanished")
            return
        t0 = time.monotonic()
        try:
            got = so.recv(4096)
        except ConnectionResetError:
            got = b""
        waited = time.monotonic() - t0
        if got:
            st.problem("partial-wait", f"answered a partial request: {got[:80]!r}")
        elif waited > IDLE_TIMEOUT + 5:
            st.problem("partial-wait", f"closed after {waited:.1f}s")
        else:
            st.add("partial-wait", "closed")
    except socket.timeout:
        st.problem("partial-wait", "the daemon never closed an idle partial request")
    finally:
        so.close()


MIX = [(r_completion, 22), (r_completion_stream, 18), (r_chat, 16), (r_cancel, 10),
       (r_malformed, 16), (r_route, 6), (r_too_big, 6), (r_partial, 6)]


def client(sock, seed, n, st, deadline):
    rng = random.Random(seed)
    fns = [f for f, _ in MIX]
    weights = [w for _, w in MIX]
    for _ in range(n):
        if time.monotonic() > deadline:
            st.problem("client", "round deadline passed")
            return
        f = rng.choices(fns, weights)[0]
        try:
            f(sock, rng, st)
        except socket.timeout:
            st.problem(f.__name__, "timed out (hanging request)")
        except Exception as e:  # noqa: BLE001 - every failure is recorded
            st.problem(f.__name__, repr(e))


def burst(sock, st, n):
    """More simultaneous generations than parallel + queue: some must be refused with 429."""
    ts = [threading.Thread(target=r_completion_long, args=(sock, st)) for _ in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(SOCK_TIMEOUT + 10)


def r_completion_long(sock, st):
    req = {"prompt": "burst", "max_tokens": 12, "ignore_eos": True}
    try:
        check_answer(st, "burst", raw(sock, post_raw("/v1/completions", req)))
    except Exception as e:  # noqa: BLE001
        st.problem("burst", repr(e))


# ---- daemon state ----

def proc_status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for ln in f:
            if ln.startswith(key + ":"):
                return int(ln.split()[1])
    return -1


def n_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def settle(env, timeout=30):
    """Waits until no sequence is active or queued and only the probe is connected."""
    end = time.monotonic() + timeout
    m = {}
    while time.monotonic() < end:
        m = T.metrics(env.sock)
        if (m.get("moed_active_sequences") == 0 and m.get("moed_queue_length") == 0 and
                m.get("moed_connections") == 1):
            return m, True
        time.sleep(0.1)
    return m, False


def fds_quiet(pid, seconds=1.0):
    """The fewest fds seen over a short while: a probe's socket may still be closing."""
    end, n = time.monotonic() + seconds, n_fds(pid)
    while time.monotonic() < end:
        time.sleep(0.05)
        n = min(n, n_fds(pid))
    return n


def fds_settle(env, want, timeout=15):
    end = time.monotonic() + timeout
    n = n_fds(env.proc.pid)
    while time.monotonic() < end and n > want:
        time.sleep(0.1)
        n = n_fds(env.proc.pid)
    return n


class Env:
    pass


def main():
    san = sanitized(T.MOED)
    scale = float(os.environ.get("MOE_LOAD_SCALE", "0.4" if san else "2.4"))
    seed = int(os.environ.get("MOE_LOAD_SEED", "1"))
    clients = 16
    rounds = int(os.environ.get("MOE_LOAD_ROUNDS", "6"))
    per_round = max(1, round(5 * scale))   # 16 x 6 x 12 = 1152 requests by default (+ bursts)
    # Warm-up is round 1; RSS must stay within this of the first sample after it. ASan's
    # allocator quarantine (capped below) and shadow memory make its RSS noisier.
    rss_bound_kb = 24 * 1024 if san else 4 * 1024
    round_deadline = 120 if san else 60

    env = Env()
    env.dir = tempfile.mkdtemp(prefix="moed-load-")
    os.chmod(env.dir, 0o755)
    env.model = os.path.join(env.dir, "m.gguf")
    env.sock = os.path.join(env.dir, "moed.sock")
    r = subprocess.run([T.MOE, "mkmodel", "--seed", "3", "-o", env.model], capture_output=True,
                       text=True)
    if r.returncode != 0:
        print("skip: moe mkmodel failed: " + r.stderr.strip())
        return 77
    if san:
        # a small quarantine so RSS reflects live memory; leaks are reported at exit (rc != 0)
        os.environ["ASAN_OPTIONS"] = (os.environ.get("ASAN_OPTIONS", "") +
                                      ":quarantine_size_mb=16:detect_leaks=1").lstrip(":")
    # The load is on the daemon (HTTP, queue, cancellation), not the engine: the CPU
    # reference steps a tiny model faster than lavapipe, which keeps the test bounded.
    T.ENGINE = os.environ.get("MOE_DAEMON_ENGINE", "reference")
    env.proc = T.start(env.model, env.sock, f"--queue={QUEUE}", f"--parallel={PARALLEL}",
                       f"--idle-timeout={IDLE_TIMEOUT}", f"--max-body={MAX_BODY}",
                       "--max-tokens=512", "--request-timeout=60", "--log-level=warning")
    # drain moed's stderr so a chatty daemon can never block on a full pipe
    errs = []
    threading.Thread(target=lambda: errs.extend(env.proc.stderr), daemon=True).start()
    threading.Thread(target=lambda: env.proc.stdout.read(), daemon=True).start()

    st = Stats()
    results = []  # (name, ok, detail)
    pid = env.proc.pid
    try:
        settle(env)
        fd0 = fds_quiet(pid)
        rss, fds, rates, gauges_ok = [], [], [], True
        t_all = time.monotonic()
        for rd in range(rounds):
            t0 = time.monotonic()
            n0 = st.n
            deadline = t0 + round_deadline
            ts = [threading.Thread(target=client,
                                   args=(env.sock, seed * 1000 + rd * 100 + i, per_round, st,
                                         deadline)) for i in range(clients)]
            for t in ts:
                t.start()
            for t in ts:
                t.join(max(1, deadline - time.monotonic() + SOCK_TIMEOUT))
            hung = sum(t.is_alive() for t in ts)
            if hung:
                st.problem("round", f"{hung} client threads still running")
            # after the clients, so connections stay under moed's limit (queue + parallel + 16)
            burst(env.sock, st, QUEUE + PARALLEL + 4)
            dt = time.monotonic() - t0
            rates.append((st.n - n0) / dt)
            m, ok = settle(env)
            if not ok:
                gauges_ok = False
                st.problem("round", f"round {rd + 1}: daemon not idle after 30 s: "
                           f"active={m.get('moed_active_sequences')} "
                           f"queue={m.get('moed_queue_length')} "
                           f"connections={m.get('moed_connections')}")
            rss.append(proc_status(pid, "VmRSS"))
            fds.append(n_fds(pid))
            print(f"round {rd + 1}: {st.n - n0} requests in {dt:.1f} s ({rates[-1]:.1f}/s), "
                  f"VmRSS {rss[-1]} kB, fds {fds[-1]}, "
                  f"active {m.get('moed_active_sequences')} queue {m.get('moed_queue_length')}")
        total_s = time.monotonic() - t_all
        fd1 = fds_settle(env, fd0)

        by_status = collections.Counter()
        for (kind, s), n in st.status.items():
            by_status[s] += n
        print(f"requests: {st.n} in {total_s:.1f} s ({st.n / total_s:.1f}/s); by status: "
              + ", ".join(f"{k}: {v}" for k, v in sorted(by_status.items(), key=str)))
        for (kind, s), n in sorted(st.status.items(), key=str):
            print(f"  {kind:18} {s}: {n}")
        print(f"fds before {fd0}, after {fd1}; VmRSS per round (kB): {rss}; "
              f"VmHWM {proc_status(pid, 'VmHWM')} kB")

        results.append(("every_request_answered_with_a_defined_status", not st.problems,
                        "\n".join(st.problems[:20])))
        results.append(("a_burst_past_the_queue_gets_429_with_retry_after",
                        st.status[("burst", 429)] > 0 and st.status[("burst", 200)] > 0,
                        f"burst statuses: 200={st.status[('burst', 200)]} "
                        f"429={st.status[('burst', 429)]}"))
        results.append(("abandoned_and_partial_requests_are_closed",
                        st.status[("cancel", "closed-mid-stream")] > 0 and
                        not [p for p in st.problems if p.startswith(("cancel", "partial"))],
                        f"cancels {st.status[('cancel', 'closed-mid-stream')]}"))
        results.append(("open_sequences_return_to_zero_after_each_round", gauges_ok,
                        "see the round lines"))
        growth = max(rss[1:]) - rss[1] if len(rss) > 1 else 0
        results.append(("rss_stays_flat_after_warm_up", growth <= rss_bound_kb,
                        f"grew {growth} kB after warm-up (bound {rss_bound_kb} kB): {rss}"))
        results.append(("no_fd_leak", fd1 <= fd0, f"fds before {fd0}, after {fd1}"))
        s, h, b = T.post_json(env.sock, "/v1/completions",
                              {"prompt": "still there?", "max_tokens": 4, "temperature": 0})
        cancelled = T.metrics(env.sock).get('moed_generations_total{outcome="cancelled"}', 0)
        results.append(("the_daemon_still_serves_afterwards", s == 200 and cancelled > 0,
                        f"status {s}, generations cancelled: {cancelled}"))
    except Exception:  # noqa: BLE001 - reported as a failed case
        results.append(("load_run", False, traceback.format_exc()))
    finally:
        try:
            rc = T.stop(env.proc)
        except AssertionError as e:
            rc = str(e)
        results.append(("sigterm_exits_zero", rc == 0,
                        f"rc {rc}; stderr tail: {''.join(errs[-20:])}"))
        subprocess.run(["rm", "-rf", env.dir])

    return T.report(results)


if __name__ == "__main__":
    sys.exit(main())
