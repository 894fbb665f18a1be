#!/usr/bin/env python3
"""moed under systemd's protocols, without systemd: socket activation through
systemd-socket-activate (LISTEN_FDS), readiness/status/watchdog/reload/stop messages on a
test NOTIFY_SOCKET, in the right order. Prints a Check-style summary line."""
import json, os, signal, socket, subprocess, sys, tempfile, time, traceback

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "daemon"))
import test_daemon as T  # noqa: E402  (the HTTP helpers)


def main():
    if not subprocess.run(["sh", "-c", "command -v systemd-socket-activate"],
                          capture_output=True).returncode == 0:
        print("skip: systemd-socket-activate not installed")
        return 77
    d = tempfile.mkdtemp(prefix="moed-notify-")
    model, sock, nsock = (os.path.join(d, x) for x in ("m.gguf", "moed.sock", "notify"))
    r = subprocess.run([T.MOE, "mkmodel", "--seed", "5", "-o", model], capture_output=True)
    if r.returncode:
        print("skip: mkmodel failed")
        return 77
    conf = os.path.join(d, "moed.conf")
    with open(conf, "w") as f:
        # the protocol is under test, not the engine: the CPU reference needs no driver
        # (systemd-socket-activate passes moed only the -E variables)
        f.write(f"model = {model}\nlog-level = info\nengine = reference\n")
    ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ns.bind(nsock)
    ns.settimeout(0.05)
    env = dict(os.environ, NOTIFY_SOCKET=nsock, WATCHDOG_USEC="1000000")
    p = subprocess.Popen(["systemd-socket-activate", "-l", sock,
                          "-E", "NOTIFY_SOCKET", "-E", "WATCHDOG_USEC",
                          T.MOED, f"--config={conf}", "--socket", os.path.join(d, "unused.sock")],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    msgs = []

    def drain(seconds):
        end = time.time() + seconds
        while time.time() < end:
            try:
                msgs.append(ns.recv(4096).decode())
            except socket.timeout:
                pass

    results = []

    def check(name, ok, info=""):
        results.append(ok)
        print(("ok   " if ok else "FAIL ") + name + ("" if ok else f": {info}"))

    try:
        # systemd-socket-activate starts moed at the first connection, as socket
        # activation does; /health answers 503 until the weights are loaded.
        first = None
        for _ in range(300):
            try:
                s, h, b = T.request(sock, "GET", "/health")
                first = first or s
                if s == 200:
                    break
            except OSError:
                pass
            drain(0.05)
        drain(0.2)
        check("ready_is_sent_once_serving", any("READY=1" in m for m in msgs), msgs)
        ext = next((i for i, m in enumerate(msgs) if "EXTEND_TIMEOUT_USEC=" in m), -1)
        rdy = next((i for i, m in enumerate(msgs) if "READY=1" in m), -1)
        check("start_timeout_is_extended_while_loading", 0 <= ext < rdy, msgs)
        check("serves_the_socket_systemd_passed", s == 200 and not os.path.exists(
            os.path.join(d, "unused.sock")), (s, b))
        s, h, b = T.post_json(sock, "/v1/completions", {"prompt": "hi", "max_tokens": 3})
        check("generates_on_the_passed_socket", s == 200, b)
        drain(1.5)
        check("status_carries_live_figures",
              any(m.startswith("STATUS=") and "tokens/s" in m for m in msgs), msgs)
        check("watchdog_pings_while_healthy", any("WATCHDOG=1" in m for m in msgs), msgs)
        with open(conf, "a") as f:
            f.write("log-level = debug\n")
        p.send_signal(signal.SIGHUP)
        drain(1.0)
        joined = "\n".join(msgs)
        rel = joined.find("RELOADING=1")
        check("sighup_reloads_with_reloading_then_ready",
              rel >= 0 and "MONOTONIC_USEC=" in joined[rel:] and "READY=1" in joined[rel:],
              msgs)
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=30)
        drain(0.3)
        check("sigterm_exits_zero", rc == 0, (rc, p.stderr.read()))
        order = [next((i for i, m in enumerate(msgs) if k in m), -1)
                 for k in ("READY=1", "WATCHDOG=1", "RELOADING=1", "STOPPING=1")]
        check("messages_come_in_order", -1 not in order and order == sorted(order),
              (order, msgs))
    except Exception:
        traceback.print_exc(file=sys.stdout)
        results.append(False)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        subprocess.run(["rm", "-rf", d])
    n, f = len(results), results.count(False)
    print(f"{100 * (n - f) // max(n, 1)}%: Checks: {n}, Failures: {f}, Errors: 0")
    return 1 if f else 0


if __name__ == "__main__":
    sys.exit(main())
