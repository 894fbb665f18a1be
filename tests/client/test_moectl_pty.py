#!/usr/bin/env python3
"""moectl under a pseudo-terminal (Python's pty module), against a fake moed in this
process (a Unix socket server thread that streams canned SSE answers, slowly when asked).

Cases: an interactive chat (a question, its answer streamed with the thinking dimmed, Ctrl-C
during an answer stops it but not the session, a second question answered, a multi-line
message, the history sent back, /exit), `moectl generate` with NO_COLOR (no colour
codes, tokens as they arrive), exit codes, and `moectl bench --rounds` (per-round ratios,
their median as the headline, out-of-range rounds refused). Prints a Check-style summary
line for tools/test."""
import json, os, pty, re, select, signal, socket, sys, tempfile, threading, time, traceback

BUILD = os.environ.get("MOE_BUILDDIR", "build")
MOECTL = os.path.join(BUILD, "client", "moectl")


def chunk(obj):
    return "data: " + json.dumps(obj) + "\n\n"


def chat_delta(delta, finish=None):
    return chunk({"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1,
                  "model": "fake", "choices": [{"index": 0, "delta": delta,
                                                "finish_reason": finish}]})


FAKES = []  # every fake started, stopped after each case even when it fails


class FakeMoed(threading.Thread):
    """Answers each request with the next script entry: a list of (delay_s, sse_text)."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path = path
        self.scripts = []
        self.requests = []
        self.hung_up = []
        self.log = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        FAKES.append(self)

    def run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                self.serve(conn)

    def stop(self):
        # shutdown() wakes the blocked accept(); a bare close() would leave this thread
        # accepting on whatever socket reuses the descriptor number next.
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if self.is_alive():
            self.join(5)
        self.sock.close()

    def serve(self, conn):
        data = b""
        while b"\r\n\r\n" not in data:
            b = conn.recv(65536)
            if not b:
                return
            data += b
        head, body = data.split(b"\r\n\r\n", 1)
        self.log.append(head.split(b"\r\n")[0])
        m = re.search(rb"Content-Length: (\d+)", head, re.I)
        want = int(m.group(1)) if m else 0
        while len(body) < want:
            body += conn.recv(65536)
        if head.startswith(b"GET /health "):
            b = b'{"status":"ok","model":"fake"}'
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(b), b))
            return
        self.requests.append((head.decode(), json.loads(body) if body else None))
        script = self.scripts.pop(0) if self.scripts else []
        if isinstance(script, bytes):  # a whole raw answer
            conn.sendall(script)
            return
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        try:
            for delay, text in script:
                time.sleep(delay)
                b = text.encode()
                conn.sendall(b"%x\r\n%s\r\n" % (len(b), b))
            conn.sendall(b"0\r\n\r\n")
            self.hung_up.append(False)
        except OSError:
            self.hung_up.append(True)


class Pty:
    def __init__(self, argv, env):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execve(argv[0], argv, env)
        self.out = b""
        self.pos = 0  # where the next expect starts looking

    def expect(self, pattern, timeout=10):
        """Read until pattern (bytes regex) matches after the previous match."""
        start = self.pos
        end = time.time() + timeout
        while True:
            m = re.search(pattern, self.out[start:])
            if m:
                self.pos = start + m.end()
                return m
            left = end - time.time()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {pattern!r}; got "
                                     f"{self.out[start:]!r}")
            r, _, _ = select.select([self.fd], [], [], left)
            if r:
                try:
                    b = os.read(self.fd, 4096)
                except OSError:
                    b = b""
                if not b:
                    raise AssertionError(f"moectl ended waiting for {pattern!r}; got "
                                         f"{self.out[start:]!r}")
                self.out += b

    def send(self, s):
        os.write(self.fd, s)

    def wait(self, timeout=10):
        end = time.time() + timeout
        while time.time() < end:
            try:
                r, _, _ = select.select([self.fd], [], [], 0.1)
                if r:
                    self.out += os.read(self.fd, 4096)
            except OSError:
                pass
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        raise AssertionError("moectl did not exit")


def env_for(sock, **extra):
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    env.update({"TERM": "xterm", "MOED_SOCKET": sock}, **extra)
    return env


def chat_ctrl_c_stops_the_answer_not_the_session(tmp):
    sock = os.path.join(tmp, "chat.sock")
    fake = FakeMoed(sock)
    fake.start()
    slow = [(0, chat_delta({"role": "assistant"})), (0, chat_delta({"reasoning_content": "pondering"}))]
    slow += [(0.1, chat_delta({"content": f"tok{i} "})) for i in range(200)]
    fake.scripts = [
        slow,
        [(0, chat_delta({"role": "assistant"})), (0, chat_delta({"content": "Second answer"})),
         (0.05, chat_delta({"content": " done."})), (0, chat_delta({}, "stop")),
         (0, "data: [DONE]\n\n")],
        [(0, chat_delta({"content": "Third."})), (0, chat_delta({}, "stop")), (0, "data: [DONE]\n\n")],
    ]
    p = Pty([MOECTL, "chat", "--show-thinking", "--max-tokens", "500"], env_for(sock))
    p.expect(rb"> ")
    p.send(b"first question\r")
    p.expect(rb"\x1b\[2mpondering")              # thinking, dimmed
    p.expect(rb"tok3 ")                          # the answer streams
    p.send(b"\x03")                              # Ctrl-C during the answer
    p.expect(rb"\[stopped\]")
    p.expect(rb"> ")                             # the session goes on
    time.sleep(0.3)
    assert fake.hung_up[:1] == [True], f"the cancelled answer's connection stayed open: {fake.hung_up}"
    p.send(b"second question\r")
    p.expect(rb"Second answer done\.")
    p.expect(rb"> ")
    p.send(b"line one\\\r")                      # a backslash continues the message
    p.expect(rb"\. ")
    p.send(b"line two\r")
    p.expect(rb"Third\.")
    p.expect(rb"> ")
    p.send(b"/exit\r")
    rc = p.wait()
    assert rc == 0, f"moectl chat exited {rc}: {p.out!r}"
    fake.stop()
    assert len(fake.requests) == 3, fake.requests
    head, body = fake.requests[0]
    assert head.startswith("POST /v1/chat/completions"), head
    assert body["stream"] is True and body["max_tokens"] == 500, body
    assert body["messages"] == [{"role": "user", "content": "first question"}], body
    # The stopped exchange is dropped; the answered one is history for the next question.
    assert fake.requests[1][1]["messages"] == [{"role": "user", "content": "second question"}]
    assert fake.requests[2][1]["messages"] == [
        {"role": "user", "content": "second question"},
        {"role": "assistant", "content": "Second answer done."},
        {"role": "user", "content": "line one\nline two"}], fake.requests[2][1]
    text = p.out.decode(errors="replace")
    assert "tok150" not in text, "the answer went on after Ctrl-C"


def generate_streams_without_colour_under_no_color(tmp):
    sock = os.path.join(tmp, "gen.sock")
    fake = FakeMoed(sock)
    fake.start()
    comp = lambda t, fin=None: chunk({"id": "cmpl-x", "object": "text_completion", "created": 1,
                                      "model": "fake", "choices": [{"index": 0, "text": t,
                                      "logprobs": None, "finish_reason": fin}]})
    fake.scripts = [[(0.4, ": ping\n\n"), (0.1, comp("Once")), (0.1, comp(" more")),
                     (0, comp("", "length")), (0, "data: [DONE]\n\n")]]
    p = Pty([MOECTL, "generate", "--max-tokens", "2", "hello"], env_for(sock, NO_COLOR="1"))
    p.expect(rb"Once more")
    rc = p.wait()
    assert rc == 0, f"moectl generate exited {rc}: {p.out!r}"
    assert not re.search(rb"\x1b\[[0-9;]*m", p.out), f"colour codes with NO_COLOR: {p.out!r}"
    assert fake.requests[0][1]["prompt"] == "hello", fake.requests
    fake.stop()


def error_answer(status, message):
    b = json.dumps({"error": {"message": message, "type": "x", "param": None,
                              "code": status}}).encode()
    return b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        status, len(b), b)


def exit_codes_say_what_failed(tmp):
    import subprocess
    sock = os.path.join(tmp, "codes.sock")

    def run(*args, stdin=None, sock_path=sock):
        r = subprocess.run([MOECTL, *args], input=stdin, capture_output=True, text=True,
                           env=env_for(sock_path), timeout=30)
        return r.returncode, r.stdout, r.stderr

    rc, out, err = run("--help")
    assert rc == 0 and "Exit status" in out and "130" in out and "not running" in out, out
    assert run()[0] == 2 and run("--bogus", "models")[0] == 2 and run("frobnicate")[0] == 2
    assert run("--max-tokens", "x", "generate", "hi")[0] == 2
    rc, out, err = run("models", sock_path=os.path.join(tmp, "absent.sock"))
    assert rc == 3 and "not running" in err, (rc, err)
    fake = FakeMoed(sock)
    fake.start()
    for status, code in ((400, 5), (413, 5), (403, 4), (429, 6), (503, 6), (500, 1)):
        fake.scripts = [error_answer(status, f"refused {status}")]
        rc, out, err = run("generate", "hi")
        assert rc == code and f"refused {status}" in err, (status, rc, err, fake.log)
    models = json.dumps({"object": "list", "data": [{"id": "m1", "object": "model"}]}).encode()
    fake.scripts = [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(models), models)]
    rc, out, err = run("--json", "models")
    assert rc == 0 and json.loads(out) == {"models": ["m1"]}, (rc, out, err)
    done = [(0, chunk({"choices": [{"index": 0, "text": "ok", "finish_reason": "stop"}]})),
            (0, chunk({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1,
                                                 "total_tokens": 4}})),
            (0, "data: [DONE]\n\n")]
    fake.scripts = [list(done)]
    rc, out, err = run("generate", "-", stdin="from stdin")
    assert rc == 0 and out == "ok", (rc, out, err)
    assert fake.requests[-1][1]["prompt"] == "from stdin", fake.requests[-1]
    fake.stop()


def bench_rounds_report_the_median_ratio(tmp):
    import statistics, subprocess
    sock = os.path.join(tmp, "bench.sock")

    def run(*args):
        r = subprocess.run([MOECTL, *args], capture_output=True, text=True,
                           env=env_for(sock), timeout=60)
        return r.returncode, r.stdout, r.stderr

    for bad in ("0", "21", "x"):
        rc, out, err = run("bench", "--rounds", bad)
        assert rc == 2 and "--rounds" in err, (bad, rc, err)
    fake = FakeMoed(sock)
    fake.start()
    comp = lambda t, fin=None: chunk({"choices": [{"index": 0, "text": t, "finish_reason": fin}]})
    answer = [(0.002, comp(f"t{i} ")) for i in range(3)] + [
        (0, comp("", "length")),
        (0, chunk({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 3,
                                             "total_tokens": 6}})),
        (0, "data: [DONE]\n\n")]
    clients, requests, rounds = 2, 2, 3
    fake.scripts = [list(answer) for _ in range(rounds * (1 + clients) * requests)]
    rc, out, err = run("bench", "--rounds", str(rounds), "--clients", str(clients),
                       "--requests", str(requests), "-n", "3", "--json")
    assert rc == 0, (rc, out, err)
    r = json.loads(out)
    assert r["rounds"] == rounds, r
    assert len(r["round_ratios"]) == rounds and all(x > 0 for x in r["round_ratios"]), r
    assert r["ratio"] == statistics.median(r["round_ratios"]), r
    # The pooled figures count every round's tokens.
    assert r["single"]["tokens"] == rounds * requests * 3, r
    assert r["concurrent"]["tokens"] == rounds * clients * requests * 3, r
    assert len(fake.requests) == rounds * (1 + clients) * requests, len(fake.requests)
    fake.stop()


def main():
    if not os.access(MOECTL, os.X_OK):
        print(f"skip: {MOECTL} is not built")
        return 77
    cases = [chat_ctrl_c_stops_the_answer_not_the_session,
             generate_streams_without_colour_under_no_color,
             exit_codes_say_what_failed,
             bench_rounds_report_the_median_ratio]
    failures = 0
    for case in cases:
        with tempfile.TemporaryDirectory(prefix="moectl-pty.") as tmp:
            try:
                case(tmp)
                print(f"ok: {case.__name__}")
            except Exception:
                failures += 1
                print(f"FAIL: {case.__name__}")
                traceback.print_exc()
            finally:
                while FAKES:
                    FAKES.pop().stop()
    n = len(cases)
    print(f"{100 * (n - failures) // n}%: Checks: {n}, Failures: {failures}, Errors: 0")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
