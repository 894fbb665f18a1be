#!/usr/bin/env python3
"""moed's whole lifecycle under valgrind: start, a few requests (blocking, streamed, a stream
the client abandons, a malformed body, a partial request), SIGTERM. Requires exit status 0
from moed and zero errors and zero definite leaks from memcheck (--errors-for-leak-kinds=
definite with --error-exitcode: either makes valgrind exit ERROR_RC).

Skips (77) in a sanitizer build (valgrind and ASan do not mix) and when valgrind is not
installed. Kept short because valgrind runs ~30x slower: max_tokens 4, a handful of requests.
Prints a Check-style summary line."""
import json, os, re, shutil, signal, socket, subprocess, sys, tempfile, threading, time
import traceback

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "daemon"))
import test_daemon as T  # noqa: E402

ERROR_RC = 99


def sanitized(moed):
    try:
        with open(moed, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


def wait_healthy(p, sock, seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end and p.poll() is None:
        try:
            if T.request(sock, "GET", "/health")[0] == 200:
                return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def requests(sock):
    """The traffic; each step asserts its own answer."""
    s, h, b = T.post_json(sock, "/v1/completions",
                          {"prompt": "Once upon a time", "max_tokens": 4, "temperature": 0})
    assert s == 200 and json.loads(b)["usage"]["completion_tokens"] >= 1, (s, b)
    chunks = T.stream_events(sock, "/v1/chat/completions",
                             {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
                              "stream": True, "stream_options": {"include_usage": True}})
    assert chunks and chunks[-1]["usage"]["completion_tokens"] >= 1, chunks
    s, h, b = T.post_json(sock, "/v1/chat/completions",
                          {"messages": [{"role": "system", "content": "s"},
                                        {"role": "user", "content": "u"}], "max_tokens": 4})
    assert s == 200, (s, b)
    # a stream the client leaves after its first event: cancelled, its sequence freed
    so = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    so.settimeout(120)
    so.connect(sock)
    body = json.dumps({"prompt": "x", "max_tokens": 200, "ignore_eos": True,
                       "stream": True}).encode()
    so.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body) + body)
    got = b""
    while b"data: " not in got:
        part = so.recv(4096)
        assert part, got
        got += part
    so.close()
    # malformed, too big, unknown route, and a request that stops half-way
    s, h, b = T.request(sock, "POST", "/v1/completions", b'{"prompt": 1e999',
                        {"Content-Type": "application/json"})
    assert s == 400, (s, b)
    s, h, b = T.request(sock, "POST", "/v1/completions", b"x" * 2048,
                        {"Content-Type": "application/json"})
    assert s == 413, (s, b)
    assert T.request(sock, "GET", "/nowhere")[0] == 404
    so = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    so.connect(sock)
    so.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{\"p")
    so.close()
    for _ in range(300):  # the cancelled sequence is freed at a later engine step
        m = T.metrics(sock)
        if m["moed_active_sequences"] == 0 and \
                m['moed_generations_total{outcome="cancelled"}'] >= 1:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"cancelled sequence not freed: {m}")


def main():
    if sanitized(T.MOED):
        print("skip: sanitizer build (valgrind does not run ASan binaries)")
        return 77
    vg = shutil.which("valgrind")
    if not vg:
        print("skip: valgrind is not installed")
        return 77
    d = tempfile.mkdtemp(prefix="moed-leak-")
    os.chmod(d, 0o755)
    model, sock, log = (os.path.join(d, x) for x in ("m.gguf", "moed.sock", "vg.log"))
    r = subprocess.run([T.MOE, "mkmodel", "--seed", "3", "-o", model], capture_output=True,
                       text=True)
    if r.returncode:
        print("skip: moe mkmodel failed: " + r.stderr.strip())
        return 77
    # --fair-sched: valgrind runs one thread at a time; without it the engine thread can
    # generate a whole abandoned stream before the connection thread sees the client gone.
    cmd = [vg, "--quiet", "--fair-sched=yes", "--leak-check=full",
           "--errors-for-leak-kinds=definite", f"--error-exitcode={ERROR_RC}",
           "--track-origins=no", "--num-callers=30",
           f"--log-file={log}", T.MOED, "--config=/dev/null", "--model", model,
           "--socket", sock, "--socket-mode=0666", "--max-body=1024", "--idle-timeout=5",
           "--parallel=2", "--queue=4", "--max-tokens=256", "--log-level=warning",
           "--engine=reference"]  # valgrind and a JIT-compiling Vulkan driver: too slow
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    errs = []
    threading.Thread(target=lambda: errs.extend(p.stderr), daemon=True).start()
    results = []
    try:
        ok = wait_healthy(p, sock, 180)
        results.append(("moed_starts_under_valgrind", ok, f"rc {p.poll()}: {''.join(errs)}"))
        if ok:
            try:
                t0 = time.monotonic()
                requests(sock)
                print(f"requests under valgrind: {time.monotonic() - t0:.1f} s")
                results.append(("requests_are_answered_under_valgrind", True, ""))
            except Exception:  # noqa: BLE001
                results.append(("requests_are_answered_under_valgrind", False,
                                traceback.format_exc()))
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        try:
            rc = p.wait(timeout=120)
        except subprocess.TimeoutExpired:
            p.kill()
            rc = p.wait()
            results.append(("sigterm_stops_moed", False, "ignored SIGTERM for 120 s"))
        text = open(log).read() if os.path.exists(log) else ""
        definite = re.findall(r"definitely lost: ([\d,]+) bytes", text)
        results.append(("exits_zero_with_no_errors_and_no_definite_leaks", rc == 0,
                        f"rc {rc} (valgrind reports errors or definite leaks as {ERROR_RC})"
                        f"; definitely lost: {definite}\n{text[-6000:]}"))
        print(f"valgrind: moed exit {rc}; log {len(text)} bytes"
              + (f"; definitely lost {definite}" if definite else ""))
        shutil.rmtree(d, ignore_errors=True)

    return T.report(results)


if __name__ == "__main__":
    sys.exit(main())
