/* OpenAI-shaped answers for generation requests.
 *
 * Non-streamed: the connection thread waits for the request's events until DONE/ERROR (or
 * the request timeout) and answers one JSON object. Streamed: a libmicrohttpd content reader
 * pulls events and writes SSE: `data: {chunk}\n\n` per text event, `: ping\n\n` every
 * PING_MS without one (a long prompt is being processed), a final chunk with finish_reason,
 * a usage chunk when stream_options.include_usage, an error event if the request failed
 * mid-way, then `data: [DONE]`. When the client goes away libmicrohttpd frees the reader,
 * which releases (and so cancels) the request at once. */
#include "api/api_generate.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "text/reasoning.h"

#define PING_MS 2000

typedef struct gen {
    api_gen_ctx_t g;
    sched_req_t *r;
    bool chat, stream, include_usage, logprobs;
    uint32_t top_logprobs;
    char id[48];
    int64_t created;
    uint64_t deadline_ns;
    uint64_t start_ns;
    uint64_t first_ns; /* first text event: time to first token */
    uid_t uid;
    uint32_t prompt_tokens, completion_tokens;
    const char *outcome; /* for the request log: stop, length, error, cancelled */
    int err;
    int phase;        /* streaming: 0 role chunk (chat), 1 tokens, 2 closing, 3 done */
    char *out;        /* bytes ready for libmicrohttpd */
    size_t out_len, out_off;
    /* non-streamed accumulation */
    char *text;        /* content */
    size_t text_len;
    char *think;       /* reasoning_content */
    size_t think_len;
    reasoning_t *split; /* chat: separates the thinking from the answer */
    json_t *lp_content; /* chat logprobs content array / completion logprobs object */
} gen_t;

const double api_hist_bounds[API_HIST_N] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                             1,    2.5,   5,    10,  30,   60};

void api_hist_observe(api_hist_t *h, double seconds)
{
    size_t i = 0;
    while (i < API_HIST_N && seconds > api_hist_bounds[i])
        i++;
    atomic_fetch_add(&h->bucket[i], 1);
    atomic_fetch_add(&h->sum_us, (uint_fast64_t)(seconds * 1e6));
    atomic_fetch_add(&h->count, 1);
}

void api_hist_format(const api_hist_t *h, const char *name, const char *help, char *buf,
                     size_t len, size_t *off)
{
    size_t o = *off;
#define PUT(...)                                                                           \
    do {                                                                                   \
        if (o < len)                                                                       \
            o += (size_t)snprintf(buf + o, len - o, __VA_ARGS__);                          \
    } while (0)
    PUT("# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (size_t i = 0; i <= API_HIST_N; i++) {
        cum += atomic_load(&h->bucket[i]);
        if (i < API_HIST_N)
            PUT("%s_bucket{le=\"%g\"} %llu\n", name, api_hist_bounds[i], (unsigned long long)cum);
        else
            PUT("%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
    }
    PUT("%s_sum %.6f\n%s_count %llu\n", name, (double)atomic_load(&h->sum_us) / 1e6, name,
        (unsigned long long)atomic_load(&h->count));
#undef PUT
    *off = o < len ? o : len;
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void make_id(char *buf, size_t len, const char *prefix)
{
    uint8_t rnd[12] = {0};
    if (getrandom(rnd, sizeof(rnd), GRND_NONBLOCK) != sizeof(rnd)) {
        uint64_t t = mono_ns();
        memcpy(rnd, &t, sizeof(t));
    }
    int o = snprintf(buf, len, "%s", prefix);
    for (size_t i = 0; i < sizeof(rnd) && o + 2 < (int)len; i++)
        o += snprintf(buf + o, len - (size_t)o, "%02x", rnd[i]);
}

static void gen_free(gen_t *x)
{
    if (!x)
        return;
    if (x->g.log) {
        char f_id[80], f_uid[32], f_model[300], f_tok[64], f_errno[32];
        snprintf(f_id, sizeof(f_id), "REQUEST_ID=%s", x->id);
        snprintf(f_uid, sizeof(f_uid), "CLIENT_UID=%u", (unsigned)x->uid);
        snprintf(f_model, sizeof(f_model), "MODEL=%s", x->g.model_id);
        snprintf(f_tok, sizeof(f_tok), "TOKENS=%u", x->completion_tokens);
        snprintf(f_errno, sizeof(f_errno), "ERRNO=%d", -x->err);
        const char *fields[] = {f_id, f_uid, f_model, f_tok, x->err ? f_errno : NULL, NULL};
        log_fields(x->g.log, x->err ? SETTINGS_LOG_WARNING : SETTINGS_LOG_INFO, fields,
                   "%s uid %u: %u prompt + %u generated tokens in %.3f s, %s%s",
                   x->chat ? "chat" : "completion", (unsigned)x->uid, x->prompt_tokens,
                   x->completion_tokens, (double)(mono_ns() - x->start_ns) / 1e9,
                   x->outcome ? x->outcome : "client gone", x->stream ? " (streamed)" : "");
    }
    if (x->outcome && x->g.latency)
        api_hist_observe(x->g.latency, (double)(mono_ns() - x->start_ns) / 1e9);
    if (x->first_ns && x->g.ttft)
        api_hist_observe(x->g.ttft, (double)(x->first_ns - x->start_ns) / 1e9);
    if (x->g.tokens_in)
        atomic_fetch_add(x->g.tokens_in, x->prompt_tokens);
    if (x->g.tokens_out)
        atomic_fetch_add(x->g.tokens_out, x->completion_tokens);
    if (x->g.live)
        atomic_fetch_sub(x->g.live, 1);
    sched_req_release(x->r);
    free(x->out);
    free(x->text);
    free(x->think);
    reasoning_free(x->split);
    json_decref(x->lp_content);
    free(x);
}

/* The token's text as the client sees it (for logprobs). */
static json_t *token_json_string(const tokenizer_t *tok, int32_t id)
{
    char buf[256];
    int n = tokenizer_token_to_piece(tok, id, buf, sizeof(buf));
    if (n < 0)
        n = 0;
    if ((size_t)n > sizeof(buf))
        n = sizeof(buf);
    /* A piece may be part of a UTF-8 sequence: jansson then refuses it; send it escaped
     * byte-for-byte as Latin-1 code points rather than dropping the entry. */
    json_t *s = json_stringn(buf, (size_t)n);
    if (!s) {
        char esc[1024];
        size_t o = 0;
        for (int i = 0; i < n && o + 8 < sizeof(esc); i++)
            o += (size_t)snprintf(esc + o, sizeof(esc) - o, "\\x%02x", (unsigned char)buf[i]);
        s = json_stringn(esc, o);
    }
    return s;
}

static json_t *chat_logprob_entry(const gen_t *x, const sched_event_t *ev)
{
    json_t *e = json_object(), *tops = json_array();
    json_object_set_new(e, "token", token_json_string(x->g.tok, ev->token));
    json_object_set_new(e, "logprob", json_real(ev->logprob));
    for (uint32_t i = 0; i < ev->n_top; i++) {
        json_t *t = json_object();
        json_object_set_new(t, "token", token_json_string(x->g.tok, ev->top[i].id));
        json_object_set_new(t, "logprob", json_real(ev->top[i].logprob));
        json_array_append_new(tops, t);
    }
    json_object_set_new(e, "top_logprobs", tops);
    return e;
}

/* Completions' logprobs object: parallel arrays tokens / token_logprobs / top_logprobs. */
static void completion_logprob_add(json_t *lp, const gen_t *x, const sched_event_t *ev)
{
    json_array_append_new(json_object_get(lp, "tokens"), token_json_string(x->g.tok, ev->token));
    json_array_append_new(json_object_get(lp, "token_logprobs"), json_real(ev->logprob));
    json_t *top = json_object();
    for (uint32_t i = 0; i < ev->n_top; i++) {
        json_t *k = token_json_string(x->g.tok, ev->top[i].id);
        json_object_set_new(top, json_string_value(k), json_real(ev->top[i].logprob));
        json_decref(k);
    }
    json_array_append_new(json_object_get(lp, "top_logprobs"), top);
}

static json_t *completion_logprobs_new(void)
{
    json_t *lp = json_object();
    json_object_set_new(lp, "tokens", json_array());
    json_object_set_new(lp, "token_logprobs", json_array());
    json_object_set_new(lp, "top_logprobs", json_array());
    return lp;
}

static const char *finish_name(enum sched_finish f)
{
    return f == SCHED_FINISH_LENGTH ? "length" : "stop";
}

/* Remembers how the request ended, for the request log and the metrics. */
static void note_end(gen_t *x, const sched_event_t *ev)
{
    x->prompt_tokens = ev->prompt_tokens;
    x->completion_tokens = ev->completion_tokens;
    x->outcome = ev->kind == SCHED_EV_ERROR             ? "error"
                 : ev->finish == SCHED_FINISH_CANCELLED ? "cancelled"
                                                        : finish_name(ev->finish);
    x->err = ev->kind == SCHED_EV_ERROR ? ev->error : 0;
}

static json_t *usage_json(const sched_event_t *ev)
{
    json_t *u = json_object();
    json_object_set_new(u, "prompt_tokens", json_integer(ev->prompt_tokens));
    json_object_set_new(u, "completion_tokens", json_integer(ev->completion_tokens));
    json_object_set_new(u, "total_tokens",
                        json_integer((json_int_t)ev->prompt_tokens + ev->completion_tokens));
    return u;
}

static int out_sse(gen_t *x, json_t *o);

static json_t *envelope(const gen_t *x, bool chunk)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(x->id));
    json_object_set_new(o, "object",
                        json_string(x->chat ? (chunk ? "chat.completion.chunk" : "chat.completion")
                                            : "text_completion"));
    json_object_set_new(o, "created", json_integer(x->created));
    json_object_set_new(o, "model", json_string(x->g.model_id));
    return o;
}

/* One choice of a stream chunk: text (or delta content/role), finish reason or null. */
static json_t *chunk_choice_kind(const gen_t *x, const char *role, const char *text, size_t len,
                                 const char *finish, json_t *logprobs, bool reasoning)
{
    json_t *c = json_object();
    json_object_set_new(c, "index", json_integer(0));
    if (x->chat) {
        json_t *d = json_object();
        if (role)
            json_object_set_new(d, "role", json_string(role));
        if (text)
            json_object_set_new(d, reasoning ? "reasoning_content" : "content",
                                json_stringn(text, len));
        json_object_set_new(c, "delta", d);
    } else {
        json_object_set_new(c, "text", json_stringn(text ? text : "", text ? len : 0));
    }
    json_object_set_new(c, "logprobs", logprobs ? logprobs : json_null());
    json_object_set_new(c, "finish_reason", finish ? json_string(finish) : json_null());
    return c;
}

static json_t *chunk_choice(const gen_t *x, const char *role, const char *text, size_t len,
                            const char *finish, json_t *logprobs)
{
    return chunk_choice_kind(x, role, text, len, finish, logprobs, false);
}

/* Text split into content and reasoning parts (chat with a reasoning format), or one
 * content part. flush: end of the answer. */
static int split_text(gen_t *x, const char *text, size_t len, bool flush,
                      const reasoning_part_t **ret_parts, size_t *ret_n,
                      reasoning_part_t *one)
{
    if (!x->split) {
        *one = (reasoning_part_t){REASONING_PART_CONTENT, text, len};
        *ret_parts = one;
        *ret_n = len ? 1 : 0;
        return 0;
    }
    if (flush)
        return reasoning_flush(x->split, ret_parts, ret_n);
    return reasoning_feed(x->split, text, len, ret_parts, ret_n);
}

/* Streams the parts of one text event; its logprobs (stolen) ride on the first chunk, or on
 * an empty chunk when the split holds all of the text back for now. */
static int out_parts(gen_t *x, const reasoning_part_t *parts, size_t n, json_t *lp)
{
    if (n == 0) {
        if (!lp)
            return 0;
        json_t *o = envelope(x, true), *ch = json_array();
        json_array_append_new(ch, chunk_choice(x, NULL, x->chat ? NULL : "", 0, NULL, lp));
        json_object_set_new(o, "choices", ch);
        return out_sse(x, o);
    }
    int r = 0;
    for (size_t i = 0; i < n && r == 0; i++) {
        json_t *o = envelope(x, true), *ch = json_array();
        json_array_append_new(ch, chunk_choice_kind(x, NULL, parts[i].text, parts[i].len, NULL,
                                                    i == 0 ? lp : NULL,
                                                    parts[i].kind == REASONING_PART_REASONING));
        json_object_set_new(o, "choices", ch);
        r = out_sse(x, o);
    }
    return r;
}

static int append(char **buf, size_t *len, const char *t, size_t n)
{
    if (!n)
        return 0;
    char *nb = realloc(*buf, *len + n + 1);
    if (!nb)
        return -ENOMEM;
    memcpy(nb + *len, t, n);
    *len += n;
    nb[*len] = 0;
    *buf = nb;
    return 0;
}

/* Non-streamed: adds the parts to content or reasoning. */
static int keep_parts(gen_t *x, const reasoning_part_t *parts, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int r = parts[i].kind == REASONING_PART_REASONING
                    ? append(&x->think, &x->think_len, parts[i].text, parts[i].len)
                    : append(&x->text, &x->text_len, parts[i].text, parts[i].len);
        if (r < 0)
            return r;
    }
    return 0;
}

/* Appends `data: <json>\n\n` (steals o). */
static int out_sse(gen_t *x, json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!s)
        return -ENOMEM;
    size_t n = strlen(s);
    char *nb = realloc(x->out, x->out_len + n + 8);
    if (!nb) {
        free(s);
        return -ENOMEM;
    }
    x->out = nb;
    memcpy(x->out + x->out_len, "data: ", 6);
    memcpy(x->out + x->out_len + 6, s, n);
    memcpy(x->out + x->out_len + 6 + n, "\n\n", 2);
    x->out_len += n + 8;
    free(s);
    return 0;
}

static int out_raw(gen_t *x, const char *s)
{
    size_t n = strlen(s);
    char *nb = realloc(x->out, x->out_len + n);
    if (!nb)
        return -ENOMEM;
    x->out = nb;
    memcpy(x->out + x->out_len, s, n);
    x->out_len += n;
    return 0;
}

static json_t *error_json(int err, const char *message)
{
    json_t *e = json_object(), *o = json_object();
    int status = err == -ESHUTDOWN || err == -ENOMEM ? 503 : err == -ETIMEDOUT ? 504 : 500;
    json_object_set_new(e, "message", json_string(message));
    json_object_set_new(e, "type", json_string("server_error"));
    json_object_set_new(e, "param", json_null());
    json_object_set_new(e, "code", json_integer(status));
    json_object_set_new(o, "error", e);
    return o;
}

/* Produces the next piece of the stream into x->out. Returns 0, or 1 when the stream has
 * ended. */
static int stream_produce(gen_t *x)
{
    if (x->phase == 0) {
        x->phase = 1;
        if (x->chat) {
            json_t *o = envelope(x, true), *ch = json_array();
            json_array_append_new(ch, chunk_choice(x, "assistant", "", 0, NULL, NULL));
            json_object_set_new(o, "choices", ch);
            return out_sse(x, o);
        }
    }
    if (x->phase == 3)
        return 1;
    if (mono_ns() > x->deadline_ns) {
        sched_req_cancel(x->r);
        out_sse(x, error_json(-ETIMEDOUT, "request timed out"));
        out_raw(x, "data: [DONE]\n\n");
        x->phase = 3;
        return 0;
    }
    sched_event_t ev;
    if (!sched_req_next(x->r, &ev, PING_MS))
        return out_raw(x, ": ping\n\n");
    if (ev.kind == SCHED_EV_TEXT) {
        if (!x->first_ns)
            x->first_ns = mono_ns();
        json_t *lp = NULL;
        if (x->logprobs) {
            if (x->chat) {
                lp = json_object();
                json_t *arr = json_array();
                json_array_append_new(arr, chat_logprob_entry(x, &ev));
                json_object_set_new(lp, "content", arr);
            } else {
                lp = completion_logprobs_new();
                completion_logprob_add(lp, x, &ev);
            }
        }
        const reasoning_part_t *parts;
        reasoning_part_t one;
        size_t n = 0;
        int r = split_text(x, ev.text ? ev.text : "", ev.len, false, &parts, &n, &one);
        if (r == 0)
            r = out_parts(x, parts, n, lp);
        sched_event_clear(&ev);
        return r;
    }
    if (x->split) { /* whatever the split still holds goes out before the end */
        const reasoning_part_t *parts;
        reasoning_part_t one;
        size_t n = 0;
        if (split_text(x, NULL, 0, true, &parts, &n, &one) == 0)
            out_parts(x, parts, n, NULL);
    }
    note_end(x, &ev);
    if (ev.kind == SCHED_EV_DONE && ev.finish == SCHED_FINISH_CANCELLED) {
        /* Only the server cancels a request whose client is still reading: shutdown. */
        out_sse(x, error_json(-ESHUTDOWN, "the request was ended: moed is shutting down"));
    } else if (ev.kind == SCHED_EV_ERROR) {
        out_sse(x, error_json(ev.error, ev.message));
    } else {
        json_t *o = envelope(x, true), *ch = json_array();
        json_array_append_new(ch, chunk_choice(x, NULL, x->chat ? NULL : "", 0,
                                               finish_name(ev.finish), NULL));
        json_object_set_new(o, "choices", ch);
        out_sse(x, o);
        if (x->include_usage) {
            o = envelope(x, true);
            json_object_set_new(o, "choices", json_array());
            json_object_set_new(o, "usage", usage_json(&ev));
            out_sse(x, o);
        }
    }
    sched_event_clear(&ev);
    x->phase = 3;
    return out_raw(x, "data: [DONE]\n\n");
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    gen_t *x = cls;
    while (x->out_off == x->out_len) {
        x->out_off = x->out_len = 0;
        int r = stream_produce(x);
        if (r == 1 && x->out_len == 0)
            return MHD_CONTENT_READER_END_OF_STREAM;
        if (r < 0)
            return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t n = x->out_len - x->out_off;
    if (n > max)
        n = max;
    memcpy(buf, x->out + x->out_off, n);
    x->out_off += n;
    return (ssize_t)n;
}

static void stream_free(void *cls)
{
    gen_free(cls);
}

/* Waits for the whole answer and builds the JSON object. */
static int answer_blocking(gen_t *x, struct MHD_Response **ret, api_gen_error_t *err)
{
    sched_event_t ev = {0};
    if (x->logprobs)
        x->lp_content = x->chat ? json_array() : completion_logprobs_new();
    for (;;) {
        if (mono_ns() > x->deadline_ns) {
            sched_req_cancel(x->r);
            err->status = 504;
            err->type = "server_error";
            snprintf(err->message, sizeof(err->message), "request timed out");
            return -ETIMEDOUT;
        }
        if (!sched_req_next(x->r, &ev, PING_MS))
            continue;
        if (ev.kind != SCHED_EV_TEXT)
            break;
        if (!x->first_ns)
            x->first_ns = mono_ns();
        const reasoning_part_t *parts;
        reasoning_part_t one;
        size_t n = 0;
        int r = split_text(x, ev.text ? ev.text : "", ev.len, false, &parts, &n, &one);
        if (r == 0)
            r = keep_parts(x, parts, n);
        if (r < 0) {
            sched_event_clear(&ev);
            err->status = 503;
            err->type = "server_error";
            snprintf(err->message, sizeof(err->message), "out of memory");
            return -ENOMEM;
        }
        if (x->lp_content) {
            if (x->chat)
                json_array_append_new(x->lp_content, chat_logprob_entry(x, &ev));
            else
                completion_logprob_add(x->lp_content, x, &ev);
        }
        sched_event_clear(&ev);
    }
    if (x->split) {
        const reasoning_part_t *parts;
        reasoning_part_t one;
        size_t n = 0;
        if (split_text(x, NULL, 0, true, &parts, &n, &one) == 0)
            keep_parts(x, parts, n);
    }
    note_end(x, &ev);
    if (ev.kind == SCHED_EV_DONE && ev.finish == SCHED_FINISH_CANCELLED) {
        err->status = 503;
        err->type = "server_error";
        err->retry_after = "5";
        snprintf(err->message, sizeof(err->message),
                 "the request was ended: moed is shutting down");
        return -ESHUTDOWN;
    }
    if (ev.kind == SCHED_EV_ERROR) {
        err->status = ev.error == -ESHUTDOWN || ev.error == -ENOMEM ? 503 : 500;
        err->type = "server_error";
        snprintf(err->message, sizeof(err->message), "%s", ev.message);
        return ev.error;
    }
    json_t *o = envelope(x, false), *ch = json_array(), *c = json_object();
    json_object_set_new(c, "index", json_integer(0));
    const char *text = x->text ? x->text : "";
    if (x->chat) {
        json_t *m = json_object();
        json_object_set_new(m, "role", json_string("assistant"));
        json_object_set_new(m, "content", json_stringn(text, x->text_len));
        if (x->think_len)
            json_object_set_new(m, "reasoning_content", json_stringn(x->think, x->think_len));
        json_object_set_new(c, "message", m);
        if (x->lp_content) {
            json_t *lp = json_object();
            json_object_set_new(lp, "content", x->lp_content);
            x->lp_content = NULL;
            json_object_set_new(c, "logprobs", lp);
        } else {
            json_object_set_new(c, "logprobs", json_null());
        }
    } else {
        json_object_set_new(c, "text", json_stringn(text, x->text_len));
        json_object_set_new(c, "logprobs", x->lp_content ? x->lp_content : json_null());
        x->lp_content = NULL;
    }
    json_object_set_new(c, "finish_reason", json_string(finish_name(ev.finish)));
    json_array_append_new(ch, c);
    json_object_set_new(o, "choices", ch);
    json_object_set_new(o, "usage", usage_json(&ev));
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!s)
        return -ENOMEM;
    size_t n = strlen(s);
    s[n] = '\n'; /* replaces the NUL; the buffer is handed over with its length */
    *ret = MHD_create_response_from_buffer(n + 1, s, MHD_RESPMEM_MUST_FREE);
    if (!*ret) {
        free(s);
        return -ENOMEM;
    }
    MHD_add_response_header(*ret, "Content-Type", "application/json");
    return 0;
}

static int prompt_ids(const api_gen_ctx_t *g, const api_request_t *req, int32_t **ret_ids,
                      size_t *ret_n, api_gen_error_t *err)
{
    if (req->prompt_ids) {
        int32_t *ids = malloc(req->n_prompt_ids * sizeof(*ids));
        if (!ids)
            return -ENOMEM;
        memcpy(ids, req->prompt_ids, req->n_prompt_ids * sizeof(*ids));
        *ret_ids = ids;
        *ret_n = req->n_prompt_ids;
        return 0;
    }
    /* As llama.cpp's server does, special-token text in a prompt is parsed as those tokens
     * (a raw completion prompt written in the model's own chat format works). */
    unsigned flags = TOKENIZER_PARSE_SPECIAL | TOKENIZER_ADD_SPECIAL;
    const char *text = req->prompt;
    char *rendered = NULL;
    if (req->kind == API_CHAT) {
        if (!g->chat) {
            err->status = 400;
            err->type = "invalid_request_error";
            snprintf(err->message, sizeof(err->message), "%s",
                     g->chat_error ? g->chat_error : "this model has no chat template");
            return -ENOTSUP;
        }
        chat_msg_t *msgs = calloc(req->n_messages, sizeof(*msgs));
        if (!msgs)
            return -ENOMEM;
        for (size_t i = 0; i < req->n_messages; i++)
            msgs[i] = (chat_msg_t){req->messages[i].role, req->messages[i].content};
        chat_opts_t opts = {.add_generation_prompt = true, .enable_thinking = true};
        size_t rl = 0;
        int r = chat_render(g->chat, msgs, req->n_messages, &opts, &rendered, &rl);
        free(msgs);
        if (r < 0) {
            err->status = r == -ENOMEM ? 503 : 400;
            err->type = r == -ENOMEM ? "server_error" : "invalid_request_error";
            snprintf(err->message, sizeof(err->message), "the messages could not be rendered "
                     "with the model's chat template");
            return r;
        }
        text = rendered;
    }
    int r = tokenizer_encode_alloc(g->tok, text, strlen(text), flags, ret_ids, ret_n);
    free(rendered);
    if (r < 0)
        return r;
    if (*ret_n == 0) {
        free(*ret_ids);
        err->status = 400;
        err->type = "invalid_request_error";
        snprintf(err->message, sizeof(err->message), "the prompt is empty");
        return -EINVAL;
    }
    return 0;
}

int api_generate(const api_gen_ctx_t *g, api_request_t *req, uid_t uid,
                 struct MHD_Response **ret, api_gen_error_t *err)
{
    int32_t *ids = NULL;
    size_t n_ids = 0;
    err->retry_after = NULL;
    err->status = 0;
    int r = prompt_ids(g, req, &ids, &n_ids, err);
    if (r < 0) {
        if (!err->status) {
            err->status = r == -ENOMEM ? 503 : 400;
            err->type = r == -ENOMEM ? "server_error" : "invalid_request_error";
            snprintf(err->message, sizeof(err->message), "the prompt could not be tokenized");
        }
        return r;
    }
    sched_params_t p = {
        .max_tokens = req->max_tokens ? req->max_tokens : g->max_tokens,
        .temperature = req->temperature,
        .top_p = req->top_p,
        .top_k = req->top_k,
        .min_p = req->min_p,
        .presence_penalty = req->presence_penalty,
        .frequency_penalty = req->frequency_penalty,
        .repetition_penalty = req->repetition_penalty,
        .seed = req->seed,
        .has_seed = req->has_seed,
        .n_stop = req->n_stop,
        .logprobs = req->logprobs,
        .top_logprobs = req->top_logprobs,
        .ignore_eos = req->ignore_eos,
    };
    for (size_t i = 0; i < req->n_stop; i++)
        p.stop[i] = req->stop[i];
    gen_t *x = calloc(1, sizeof(*x));
    if (!x) {
        free(ids);
        return -ENOMEM;
    }
    x->g = *g;
    if (g->live)
        atomic_fetch_add(g->live, 1);
    x->chat = req->kind == API_CHAT;
    x->stream = req->stream;
    x->include_usage = req->include_usage;
    x->logprobs = req->logprobs;
    x->created = (int64_t)time(NULL);
    x->start_ns = mono_ns();
    x->uid = uid;
    x->deadline_ns = mono_ns() + (uint64_t)g->request_timeout_s * 1000000000ull;
    make_id(x->id, sizeof(x->id), x->chat ? "chatcmpl-" : "cmpl-");
    if (x->chat) {
        chat_opts_t opts = {.add_generation_prompt = true, .enable_thinking = true};
        enum reasoning_format fmt = reasoning_format_for_family((int)g->chat->family);
        r = fmt == REASONING_NONE
                ? 0
                : reasoning_new(fmt, chat_starts_in_reasoning(g->chat, &opts), &x->split);
        if (r < 0) {
            free(ids);
            gen_free(x);
            err->status = 503;
            err->type = "server_error";
            snprintf(err->message, sizeof(err->message), "out of memory");
            return r;
        }
    }
    r = sched_submit(g->sched, ids, n_ids, &p, uid, &x->r);
    free(ids);
    if (r < 0) {
        gen_free(x);
        err->type = "server_error";
        switch (r) {
        case -EAGAIN:
            err->status = 429;
            err->retry_after = "2";
            snprintf(err->message, sizeof(err->message), "too many requests are waiting");
            break;
        case -E2BIG:
            err->status = 400;
            err->type = "invalid_request_error";
            snprintf(err->message, sizeof(err->message),
                     "the prompt (%zu tokens) does not fit the context", n_ids);
            break;
        case -EINVAL:
            err->status = 400;
            err->type = "invalid_request_error";
            snprintf(err->message, sizeof(err->message), "a prompt token id is out of range");
            break;
        case -ESHUTDOWN:
            err->status = 503;
            snprintf(err->message, sizeof(err->message), "moed is shutting down");
            break;
        default:
            err->status = 503;
            snprintf(err->message, sizeof(err->message), "out of memory");
        }
        return r;
    }
    if (!x->stream) {
        r = answer_blocking(x, ret, err);
        gen_free(x);
        return r;
    }
    *ret = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_reader, x,
                                             stream_free);
    if (!*ret) {
        gen_free(x);
        err->status = 503;
        err->type = "server_error";
        snprintf(err->message, sizeof(err->message), "out of memory");
        return -ENOMEM;
    }
    MHD_add_response_header(*ret, "Content-Type", "text/event-stream");
    MHD_add_response_header(*ret, "Cache-Control", "no-cache");
    return 0;
}
