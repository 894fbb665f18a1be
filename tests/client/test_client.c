/* libmoe-client against a fake moed (fake_server.c) that replays canned HTTP answers:
 * streamed completions and chats cut at arbitrary read boundaries and chunk sizes, blocking
 * answers, error statuses and error events, garbage and oversized answers, cancellation
 * from another thread and from the callback, an absent daemon, a refused permission. */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fake_server.h"
#include "moe/client.h"

#define CHUNK(text, fin)                                                                           \
    "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,\"model\":\"m\","       \
    "\"choices\":[{\"index\":0,\"text\":\"" text "\",\"logprobs\":null,\"finish_reason\":" fin     \
    "}]}\n\n"

static const char completion_sse[] = ": ping\n\n" CHUNK("Hel", "null")
    CHUNK("lo", "null") ": ping\n\n" CHUNK(" w\\u00f6rld", "null") CHUNK(
        "", "\"length\"") "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"choices\":[],"
                          "\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":3,\"total_tokens\":"
                          "8}}\n\n"
                          "data: [DONE]\n\n";

#define DELTA(body, fin)                                                                           \
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,"             \
    "\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":" body ",\"finish_reason\":" fin          \
    "}]}\r\n\r\n"

static const char chat_sse[] =
    DELTA("{\"role\":\"assistant\"}", "null") DELTA("{\"reasoning_content\":\"Let me \"}", "null")
        DELTA("{\"reasoning_content\":\"think.\"}", "null")
            DELTA("{\"content\":\"The answer\"}", "null") DELTA("{\"content\":\" is 42.\"}", "null")
                DELTA("{}", "\"stop\"") "data: [DONE]\r\n\r\n";

/* Collects streamed pieces. */
typedef struct collect {
    char text[4096], reasoning[4096];
    int pieces;
    int stop_after;            /* return non-zero after this many pieces (0: never) */
    moe_client *cancel_client; /* call moe_client_cancel() on it after stop_after pieces */
    atomic_int seen;
} collect_t;

static int on_token(void *ud, const char *text, size_t len, unsigned flags)
{
    collect_t *k = ud;
    ck_assert_uint_eq(strlen(text), len);
    strncat(flags & MOE_CLIENT_TOKEN_REASONING ? k->reasoning : k->text, text, len);
    k->pieces++;
    atomic_store(&k->seen, k->pieces);
    if (k->stop_after && k->pieces >= k->stop_after) {
        if (k->cancel_client) {
            moe_client_cancel(k->cancel_client);
            return 0;
        }
        return 1;
    }
    return 0;
}

static fake_server_t *fake;
static moe_client *client;

static void setup(void)
{
    fake = fake_start();
    ck_assert_int_eq(moe_client_new(fake->path, &client), 0);
    moe_client_set_timeout(client, 10000);
}

static void teardown(void)
{
    client = moe_client_free(client);
    fake_stop(fake);
}

static void answer(const char *bytes, size_t split)
{
    fake_answer(fake, bytes, strlen(bytes));
    fake->split = split;
}

START_TEST(streamed_completion_gives_tokens_finish_reason_and_usage_at_any_read_boundary)
{
    static const size_t splits[] = {1, 2, 3, 7, 64, 0};
    static const size_t chunks[] = {1, 5, 13, 4096};
    for (size_t s = 0; s < sizeof(splits) / sizeof(*splits); s++) {
        for (size_t ch = 0; ch < sizeof(chunks) / sizeof(*chunks); ch++) {
            if (splits[s] == 1 && chunks[ch] < 13)
                continue; /* byte by byte with tiny chunks is slow and adds nothing */
            char *resp = fake_sse_chunked(completion_sse, chunks[ch]);
            answer(resp, splits[s]);
            free(resp);
            collect_t k = {0};
            moe_client_result r;
            moe_client_params p;
            moe_client_params_init(&p);
            p.max_tokens = 3;
            p.temperature = 0;
            int rc = moe_client_complete(client, "Say hello", &p, on_token, &k, &r);
            ck_assert_msg(rc == 0, "split %zu chunk %zu: %d %s", splits[s], chunks[ch], rc,
                          moe_client_errmsg(client));
            ck_assert_str_eq(k.text, "Hello w\xc3\xb6rld");
            ck_assert_int_eq(k.pieces, 3);
            ck_assert_str_eq(r.text, "Hello w\xc3\xb6rld");
            ck_assert_uint_eq(r.text_len, strlen("Hello w\xc3\xb6rld"));
            ck_assert_str_eq(r.reasoning, "");
            ck_assert_str_eq(r.finish_reason, "length");
            ck_assert_str_eq(r.id, "cmpl-1");
            ck_assert_int_eq(r.prompt_tokens, 5);
            ck_assert_int_eq(r.completion_tokens, 3);
            moe_client_result_clear(&r);
        }
    }
    /* What went out: a streamed completion asking for usage, with the parameters. */
    ck_assert_ptr_nonnull(strstr(fake->request, "POST /v1/completions HTTP/1.1\r\n"));
    const char *body = strstr(fake->request, "\r\n\r\n");
    ck_assert_ptr_nonnull(body);
    ck_assert_ptr_nonnull(strstr(body, "\"prompt\":\"Say hello\""));
    ck_assert_ptr_nonnull(strstr(body, "\"stream\":true"));
    ck_assert_ptr_nonnull(strstr(body, "\"include_usage\":true"));
    ck_assert_ptr_nonnull(strstr(body, "\"max_tokens\":3"));
    ck_assert_ptr_nonnull(strstr(body, "\"temperature\":0"));
    ck_assert_ptr_null(strstr(body, "top_p"));
}
END_TEST

START_TEST(streamed_chat_delivers_reasoning_apart_from_content)
{
    static const size_t splits[] = {1, 4, 0};
    for (size_t s = 0; s < 3; s++) {
        char *resp = fake_sse_chunked(chat_sse, 9);
        answer(resp, splits[s]);
        free(resp);
        collect_t k = {0};
        moe_client_result r;
        moe_client_message msgs[] = {{"system", "Be brief."}, {"user", "What is it?"}};
        ck_assert_int_eq(moe_client_chat(client, msgs, 2, NULL, on_token, &k, &r), 0);
        ck_assert_str_eq(k.reasoning, "Let me think.");
        ck_assert_str_eq(k.text, "The answer is 42.");
        ck_assert_str_eq(r.reasoning, "Let me think.");
        ck_assert_str_eq(r.text, "The answer is 42.");
        ck_assert_str_eq(r.finish_reason, "stop");
        ck_assert_int_eq(r.completion_tokens, -1); /* no usage chunk in this stream */
        moe_client_result_clear(&r);
    }
    ck_assert_ptr_nonnull(strstr(fake->request, "POST /v1/chat/completions HTTP/1.1\r\n"));
    ck_assert_ptr_nonnull(strstr(fake->request, "\"messages\":[{\"role\":\"system\","
                                                "\"content\":\"Be brief.\"},{\"role\":\"user\","
                                                "\"content\":\"What is it?\"}]"));
}
END_TEST

START_TEST(blocking_completion_and_chat_read_content_length_bodies)
{
    char *resp = fake_http(200, "application/json",
                           "{\"id\":\"cmpl-2\",\"object\":\"text_completion\",\"created\":1,"
                           "\"model\":\"m\",\"choices\":[{\"index\":0,\"text\":\"abc def\","
                           "\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":"
                           "{\"prompt_tokens\":2,\"completion_tokens\":2,\"total_tokens\":4}}");
    answer(resp, 3);
    free(resp);
    moe_client_result r;
    ck_assert_int_eq(moe_client_complete(client, "x", NULL, NULL, NULL, &r), 0);
    ck_assert_str_eq(r.text, "abc def");
    ck_assert_str_eq(r.finish_reason, "stop");
    ck_assert_int_eq(r.completion_tokens, 2);
    moe_client_result_clear(&r);
    ck_assert_ptr_nonnull(strstr(fake->request, "\"stream\":false"));

    resp =
        fake_http(200, "application/json",
                  "{\"id\":\"chatcmpl-2\",\"object\":\"chat.completion\",\"choices\":[{"
                  "\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"Yes.\","
                  "\"reasoning_content\":\"Hmm.\"},\"finish_reason\":\"length\"}],"
                  "\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4,\"total_tokens\":13}}");
    answer(resp, 0);
    free(resp);
    moe_client_message m = {"user", "Well?"};
    ck_assert_int_eq(moe_client_chat(client, &m, 1, NULL, NULL, NULL, &r), 0);
    ck_assert_str_eq(r.text, "Yes.");
    ck_assert_str_eq(r.reasoning, "Hmm.");
    ck_assert_str_eq(r.finish_reason, "length");
    ck_assert_int_eq(r.prompt_tokens, 9);
    moe_client_result_clear(&r);
}
END_TEST

START_TEST(http_error_statuses_map_to_errno_with_the_daemons_message)
{
    static const struct {
        int status, err;
    } table[] = {
        {400, -EINVAL}, {403, -EACCES}, {413, -E2BIG},      {429, -EBUSY},
        {503, -EAGAIN}, {500, -EIO},    {404, -EOPNOTSUPP},
    };
    for (size_t i = 0; i < sizeof(table) / sizeof(*table); i++) {
        char body[256];
        snprintf(body, sizeof(body),
                 "{\"error\":{\"message\":\"refused with %d\",\"type\":\"x\",\"param\":null,"
                 "\"code\":%d}}",
                 table[i].status, table[i].status);
        char *resp = fake_http(table[i].status, "application/json", body);
        answer(resp, 5);
        free(resp);
        collect_t k = {0};
        char want[64];
        snprintf(want, sizeof(want), "refused with %d", table[i].status);
        /* streamed and blocking alike */
        ck_assert_int_eq(moe_client_complete(client, "x", NULL, on_token, &k, NULL), table[i].err);
        ck_assert_str_eq(moe_client_errmsg(client), want);
        ck_assert_int_eq(moe_client_complete(client, "x", NULL, NULL, NULL, NULL), table[i].err);
        ck_assert_str_eq(moe_client_errmsg(client), want);
        ck_assert_int_eq(k.pieces, 0);
    }
    /* A status without a JSON body still maps, with a message naming the status. */
    answer("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 7\r\n\r\nloading", 0);
    char *h = NULL;
    ck_assert_int_eq(moe_client_health(client, &h), -EAGAIN);
    ck_assert_ptr_null(h);
    ck_assert_ptr_nonnull(strstr(moe_client_errmsg(client), "503"));
}
END_TEST

START_TEST(an_error_event_mid_stream_fails_the_request_after_the_tokens_before_it)
{
    char *resp = fake_sse_chunked(
        CHUNK("one", "null")
            CHUNK(" two", "null") "data: {\"error\":{\"message\":\"the engine failed\","
                                  "\"type\":\"server_error\",\"param\":null,\"code\":500}}\n\n"
                                  "data: [DONE]\n\n",
        11);
    answer(resp, 6);
    free(resp);
    collect_t k = {0};
    moe_client_result r = {0};
    ck_assert_int_eq(moe_client_complete(client, "x", NULL, on_token, &k, &r), -EIO);
    ck_assert_str_eq(moe_client_errmsg(client), "the engine failed");
    ck_assert_str_eq(k.text, "one two");
    ck_assert_ptr_null(r.text); /* not written on failure */

    /* A shutdown error event (503) maps like the status. */
    resp = fake_sse_chunked(
        CHUNK("one", "null") "data: {\"error\":{\"message\":\"moed is shutting down\","
                             "\"code\":503}}\n\ndata: [DONE]\n\n",
        64);
    answer(resp, 0);
    free(resp);
    ck_assert_int_eq(moe_client_complete(client, "x", NULL, on_token, &k, NULL), -EAGAIN);
}
END_TEST

START_TEST(garbage_truncated_and_oversized_answers_fail_cleanly)
{
    collect_t k = {0};
    answer("SSH-2.0-OpenSSH_9.2\r\n\r\n", 0);
    ck_assert_int_eq(moe_client_complete(client, "x", NULL, on_token, &k, NULL), -EPROTO);
    answer("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nnot json at", 0);
    ck_assert_int_eq(moe_client_complete(client, "x", NULL, NULL, NULL, NULL), -EPROTO);
    answer("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n[1,2]", 0);
    ck_assert_int_eq(moe_client_complete(client, "x", NULL, NULL, NULL, NULL), -EPROTO);
    answer("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 0);
    ck_assert_int_eq(moe_client_complete(client, "x", NULL, on_token, &k, NULL), -EPROTO);
    answer("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n", 0);
    ck_assert_int_eq(moe_client_complete(client, "x", NULL, NULL, NULL, NULL), -EPROTO);
    /* a stream that stops without [DONE] (the daemon died) */
    char *resp = fake_sse_chunked(CHUNK("one", "null"), 64);
    resp[strlen(resp) - 5] = '\0'; /* drop the last chunk too */
    answer(resp, 0);
    free(resp);
    ck_assert_int_eq(moe_client_complete(client, "x", NULL, on_token, &k, NULL), -EPROTO);
    ck_assert_ptr_nonnull(strstr(moe_client_errmsg(client), "closed"));
    resp = fake_sse_chunked(CHUNK("one", "null"), 64);
    answer(resp, 0);
    free(resp);
    ck_assert_int_eq(moe_client_complete(client, "x", NULL, on_token, &k, NULL), -EPROTO);
    ck_assert_ptr_nonnull(strstr(moe_client_errmsg(client), "[DONE]"));
    /* an event that is not JSON */
    resp = fake_sse_chunked("data: {oops\n\n", 64);
    answer(resp, 0);
    free(resp);
    ck_assert_int_eq(moe_client_complete(client, "x", NULL, on_token, &k, NULL), -EPROTO);

    /* endless: a header that never ends, an SSE line that never ends, a body past the cap */
    answer("HTTP/1.1 200 OK\r\nX-Junk: ", 0);
    fake->filler = true;
    ck_assert_int_eq(moe_client_models(client, &(char **){NULL}), -EMSGSIZE);
    answer("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: ", 0);
    ck_assert_int_eq(moe_client_complete(client, "x", NULL, on_token, &k, NULL), -EMSGSIZE);
    answer("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n", 0);
    char *text = NULL;
    ck_assert_int_eq(moe_client_metrics(client, &text), -EMSGSIZE);
    ck_assert_ptr_null(text);
    fake->filler = false;
    ck_assert(fake_wait_served(fake, 11));
}
END_TEST

static collect_t cancel_collect;

static void *cancel_when_streaming(void *arg)
{
    moe_client *c = arg;
    for (int i = 0; i < 500 && atomic_load(&cancel_collect.seen) < 2; i++)
        nanosleep(&(struct timespec){.tv_nsec = 10000000}, NULL);
    moe_client_cancel(c);
    return NULL;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Two tokens, then the fake waits (up to 20 s) for the client to hang up. */
static void answer_two_tokens_then_hold(void)
{
    const char *head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n";
    char sse[1024], resp[2048];
    snprintf(sse, sizeof(sse), "%s%s", CHUNK("one", "null"), CHUNK(" two", "null"));
    snprintf(resp, sizeof(resp), "%s%zx\r\n%s\r\n", head, strlen(sse), sse);
    answer(resp, 0);
    fake->hold_ms = 20000;
}

START_TEST(cancel_from_another_thread_ends_the_stream_and_hangs_up)
{
    answer_two_tokens_then_hold();
    memset(&cancel_collect, 0, sizeof(cancel_collect));
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, cancel_when_streaming, client), 0);
    double t0 = now_s();
    moe_client_result r = {0};
    int rc = moe_client_complete(client, "x", NULL, on_token, &cancel_collect, &r);
    pthread_join(t, NULL);
    ck_assert_int_eq(rc, -ECANCELED);
    ck_assert_str_eq(cancel_collect.text, "one two");
    ck_assert_ptr_null(r.text);
    ck_assert(now_s() - t0 < 5);
    ck_assert(fake_wait_served(fake, 1));
    ck_assert(fake->client_hung_up);

    /* The client is usable again, and a cancel between requests does not stick. */
    moe_client_cancel(client);
    char *resp = fake_sse_chunked(completion_sse, 4096);
    answer(resp, 0);
    free(resp);
    fake->hold_ms = 0;
    collect_t k = {0};
    ck_assert_int_eq(moe_client_complete(client, "x", NULL, on_token, &k, NULL), 0);
    ck_assert_str_eq(k.text, "Hello w\xc3\xb6rld");
}
END_TEST

START_TEST(cancel_from_the_callback_by_return_value_or_moe_client_cancel)
{
    answer_two_tokens_then_hold();
    collect_t k = {.stop_after = 1};
    ck_assert_int_eq(moe_client_complete(client, "x", NULL, on_token, &k, NULL), -ECANCELED);
    ck_assert_int_eq(k.pieces, 1);
    ck_assert(fake_wait_served(fake, 1));
    ck_assert(fake->client_hung_up);

    collect_t k2 = {.stop_after = 2, .cancel_client = client};
    double t0 = now_s();
    ck_assert_int_eq(moe_client_complete(client, "x", NULL, on_token, &k2, NULL), -ECANCELED);
    ck_assert_int_eq(k2.pieces, 2);
    ck_assert(now_s() - t0 < 5);
}
END_TEST

START_TEST(a_silent_daemon_times_out)
{
    answer("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n", 0);
    fake->hold_ms = 5000;
    moe_client_set_timeout(client, 200);
    collect_t k = {0};
    double t0 = now_s();
    ck_assert_int_eq(moe_client_complete(client, "x", NULL, on_token, &k, NULL), -ETIMEDOUT);
    ck_assert(now_s() - t0 < 3);
}
END_TEST

START_TEST(models_health_and_metrics_parse)
{
    char *resp = fake_http(200, "application/json",
                           "{\"object\":\"list\",\"data\":[{\"id\":\"qwen3-moe\",\"object\":"
                           "\"model\"},{\"id\":\"other\",\"object\":\"model\"}]}");
    answer(resp, 7);
    free(resp);
    char **ids;
    ck_assert_int_eq(moe_client_models(client, &ids), 2);
    ck_assert_str_eq(ids[0], "qwen3-moe");
    ck_assert_str_eq(ids[1], "other");
    ck_assert_ptr_null(ids[2]);
    moe_client_strv_free(ids);
    ck_assert_ptr_nonnull(strstr(fake->request, "GET /v1/models HTTP/1.1\r\n"));

    resp = fake_http(200, "application/json", "{\"status\":\"ok\",\"model\":\"m\"}");
    answer(resp, 0);
    free(resp);
    char *h;
    ck_assert_int_eq(moe_client_health(client, &h), 0);
    ck_assert_str_eq(h, "{\"status\":\"ok\",\"model\":\"m\"}");
    free(h);
    ck_assert_int_eq(moe_client_health(client, NULL), 0);

    /* metrics, read until the server closes (no Content-Length) */
    answer("HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\r\n"
           "# HELP moed_ready 1 when ready.\n# TYPE moed_ready gauge\nmoed_ready 1\n"
           "moed_ready_not 7\n"
           "moed_tokens_total{kind=\"prompt\"} 12\nmoed_tokens_total{kind=\"completion\"} 345\n"
           "moed_request_duration_seconds_bucket{le=\"+Inf\"} 3\nmoed_bad x\n"
           "moed_last 2.5e3",
           3);
    char *text;
    ck_assert_int_eq(moe_client_metrics(client, &text), 0);
    double v;
    ck_assert_int_eq(moe_client_metrics_get(text, "moed_ready", &v), 0);
    ck_assert(v == 1);
    ck_assert_int_eq(moe_client_metrics_get(text, "moed_tokens_total{kind=\"completion\"}", &v), 0);
    ck_assert(v == 345);
    ck_assert_int_eq(
        moe_client_metrics_get(text, "moed_request_duration_seconds_bucket{le=\"+Inf\"}", &v), 0);
    ck_assert(v == 3);
    ck_assert_int_eq(moe_client_metrics_get(text, "moed_last", &v), 0);
    ck_assert(v == 2500);
    ck_assert_int_eq(moe_client_metrics_get(text, "moed_tokens_total", &v), -ENOENT);
    ck_assert_int_eq(moe_client_metrics_get(text, "moed_bad", &v), -EPROTO);
    ck_assert_int_eq(moe_client_metrics_get(text, "moed_nothing", &v), -ENOENT);
    free(text);
}
END_TEST

START_TEST(absent_daemon_is_enoent_or_econnrefused_with_a_clear_message)
{
    char path[192];
    snprintf(path, sizeof(path), "%s/nothing.sock", fake->dir);
    moe_client *c;
    ck_assert_int_eq(moe_client_new(path, &c), 0);
    ck_assert_int_eq(moe_client_connect(c), -ENOENT);
    ck_assert_ptr_nonnull(strstr(moe_client_errmsg(c), "not running"));
    ck_assert_ptr_nonnull(strstr(moe_client_errmsg(c), path));
    ck_assert_int_eq(moe_client_complete(c, "x", NULL, NULL, NULL, NULL), -ENOENT);
    c = moe_client_free(c);

    /* a stale socket: bound, never listened on */
    snprintf(path, sizeof(path), "%s/stale.sock", fake->dir);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    ck_assert_uint_lt(strlen(path), sizeof(sa.sun_path));
    memcpy(sa.sun_path, path, strlen(path) + 1);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    close(fd);
    ck_assert_int_eq(moe_client_new(path, &c), 0);
    ck_assert_int_eq(moe_client_connect(c), -ECONNREFUSED);
    ck_assert_ptr_nonnull(strstr(moe_client_errmsg(c), "not running"));
    char **ids = NULL;
    ck_assert_int_eq(moe_client_models(c, &ids), -ECONNREFUSED);
    ck_assert_ptr_null(ids);
    moe_client_free(c);
    unlink(path);
}
END_TEST

START_TEST(permission_denied_on_the_socket_is_eacces)
{
    ck_assert_int_eq(chmod(fake->path, 0600), 0);
    ck_assert_int_eq(chmod(fake->dir, 0755), 0);
    if (geteuid() != 0) {
        ck_assert_int_eq(chmod(fake->path, 0), 0);
        ck_assert_int_eq(moe_client_connect(client), -EACCES);
        ck_assert_ptr_nonnull(strstr(moe_client_errmsg(client), "permission denied"));
        return;
    }
    /* root passes any mode: ask as nobody, in a child */
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        if (setgid(65534) < 0 || setuid(65534) < 0)
            _exit(10);
        int rc = moe_client_connect(client);
        _exit(rc == -EACCES && strstr(moe_client_errmsg(client), "permission denied") ? 0 : 11);
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status));
    ck_assert_int_eq(WEXITSTATUS(status), 0);
}
END_TEST

START_TEST(the_socket_path_comes_from_the_argument_then_moed_socket_then_the_default)
{
    moe_client *c;
    setenv("MOED_SOCKET", "/tmp/elsewhere.sock", 1);
    ck_assert_int_eq(moe_client_new(NULL, &c), 0);
    ck_assert_str_eq(moe_client_socket_path(c), "/tmp/elsewhere.sock");
    moe_client_free(c);
    ck_assert_int_eq(moe_client_new("/x.sock", &c), 0);
    ck_assert_str_eq(moe_client_socket_path(c), "/x.sock");
    moe_client_free(c);
    unsetenv("MOED_SOCKET");
    ck_assert_int_eq(moe_client_new(NULL, &c), 0);
    ck_assert_str_eq(moe_client_socket_path(c), MOE_CLIENT_DEFAULT_SOCKET);
    moe_client_free(c);
    char longpath[300];
    memset(longpath, 'a', sizeof(longpath) - 1);
    longpath[sizeof(longpath) - 1] = '\0';
    c = NULL;
    ck_assert_int_eq(moe_client_new(longpath, &c), -ENAMETOOLONG);
    ck_assert_ptr_null(c);
    ck_assert_ptr_null(moe_client_free(NULL));
}
END_TEST

START_TEST(sampling_parameters_go_into_the_request)
{
    char *resp = fake_sse_chunked(completion_sse, 4096);
    answer(resp, 0);
    free(resp);
    moe_client_params p;
    moe_client_params_init(&p);
    const char *stop[] = {"\n\n", "END"};
    p.top_p = 0.5;
    p.top_k = 40;
    p.min_p = 0.05;
    p.has_seed = 1;
    p.seed = 1234;
    p.stop = stop;
    p.n_stop = 2;
    p.ignore_eos = 1;
    p.model = "mymodel";
    collect_t k = {0};
    ck_assert_int_eq(moe_client_complete(client, "x", &p, on_token, &k, NULL), 0);
    const char *body = strstr(fake->request, "\r\n\r\n");
    ck_assert_ptr_nonnull(strstr(body, "\"top_p\":0.5"));
    ck_assert_ptr_nonnull(strstr(body, "\"top_k\":40"));
    ck_assert_ptr_nonnull(strstr(body, "\"min_p\":0.05"));
    ck_assert_ptr_nonnull(strstr(body, "\"seed\":1234"));
    ck_assert_ptr_nonnull(strstr(body, "\"stop\":[\"\\n\\n\",\"END\"]"));
    ck_assert_ptr_nonnull(strstr(body, "\"ignore_eos\":true"));
    ck_assert_ptr_nonnull(strstr(body, "\"model\":\"mymodel\""));
    ck_assert_ptr_null(strstr(body, "temperature"));
    ck_assert_ptr_null(strstr(body, "max_tokens"));
    /* invalid UTF-8 is refused before anything is sent */
    ck_assert_int_eq(moe_client_complete(client, "\xff\xfe", NULL, NULL, NULL, NULL), -EINVAL);
    ck_assert_int_eq(moe_client_chat(client, NULL, 0, NULL, NULL, NULL, NULL), -EINVAL);
}
END_TEST

static int on_token_bytes(void *ud, const char *text, size_t len, unsigned flags)
{
    size_t *total = ud;
    ck_assert_int_eq(text[len], '\0');
    *total += len;
    return 0;
}

START_TEST(a_nul_byte_in_a_token_is_counted_not_truncated)
{
    char *resp =
        fake_sse_chunked(CHUNK("a\\u0000b", "null") CHUNK("", "\"stop\"") "data: [DONE]\n\n", 4096);
    answer(resp, 0);
    free(resp);
    size_t total = 0;
    moe_client_result r;
    ck_assert_int_eq(moe_client_complete(client, "x", NULL, on_token_bytes, &total, &r), 0);
    ck_assert_uint_eq(total, 3);
    ck_assert_uint_eq(r.text_len, 3);
    ck_assert_mem_eq(r.text, "a\0b", 4);
    moe_client_result_clear(&r);
}
END_TEST

static void *complete_thrice(void *arg)
{
    for (int i = 0; i < 3; i++) {
        moe_client_result r;
        if (moe_client_complete(arg, "x", NULL, NULL, NULL, &r) < 0 || strcmp(r.text, "abc") != 0)
            return (void *)1;
        moe_client_result_clear(&r);
    }
    return NULL;
}

START_TEST(calls_from_several_threads_on_one_client_take_turns)
{
    char *resp = fake_http(200, "application/json",
                           "{\"choices\":[{\"index\":0,\"text\":\"abc\",\"finish_reason\":"
                           "\"stop\"}]}");
    answer(resp, 2);
    free(resp);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, complete_thrice, client), 0);
    for (int i = 0; i < 4; i++) {
        void *ret;
        pthread_join(t[i], &ret);
        ck_assert_ptr_null(ret);
    }
    ck_assert(fake_wait_served(fake, 12));
}
END_TEST

static Suite *client_suite(void)
{
    Suite *s = suite_create("client");
    TCase *tc = tcase_create("fake");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc,
                   streamed_completion_gives_tokens_finish_reason_and_usage_at_any_read_boundary);
    tcase_add_test(tc, streamed_chat_delivers_reasoning_apart_from_content);
    tcase_add_test(tc, blocking_completion_and_chat_read_content_length_bodies);
    tcase_add_test(tc, http_error_statuses_map_to_errno_with_the_daemons_message);
    tcase_add_test(tc, an_error_event_mid_stream_fails_the_request_after_the_tokens_before_it);
    tcase_add_test(tc, garbage_truncated_and_oversized_answers_fail_cleanly);
    tcase_add_test(tc, cancel_from_another_thread_ends_the_stream_and_hangs_up);
    tcase_add_test(tc, cancel_from_the_callback_by_return_value_or_moe_client_cancel);
    tcase_add_test(tc, a_silent_daemon_times_out);
    tcase_add_test(tc, models_health_and_metrics_parse);
    tcase_add_test(tc, absent_daemon_is_enoent_or_econnrefused_with_a_clear_message);
    tcase_add_test(tc, permission_denied_on_the_socket_is_eacces);
    tcase_add_test(tc, the_socket_path_comes_from_the_argument_then_moed_socket_then_the_default);
    tcase_add_test(tc, sampling_parameters_go_into_the_request);
    tcase_add_test(tc, a_nul_byte_in_a_token_is_counted_not_truncated);
    tcase_add_test(tc, calls_from_several_threads_on_one_client_take_turns);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    SRunner *sr = srunner_create(client_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
