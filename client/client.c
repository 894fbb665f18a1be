/* client.c: the public API of libmoe-client (moe/client.h) — requests to moed as JSON,
 * answers back as text, tokens and errors.
 *
 * Each call takes the client's lock (one request at a time per object), clears the cancel
 * flag, opens a connection (client-http.c), sends one request and reads one answer. A
 * streamed generation feeds the body to the SSE splitter (client-sse.c), whose events land
 * in gen_event(): each is a chunk of the OpenAI wire format, an error event, or [DONE].
 * An HTTP error status becomes a negative errno (client_status_errno) and the daemon's JSON
 * error message becomes moe_client_errmsg(). No state lives outside the moe_client object. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <jansson.h>

#include "client-internal.h"

/* How much of an error body is read to find the daemon's message. */
#define ERROR_BODY_MAX (64u << 10)

MOE_CLIENT_PUBLIC int moe_client_new(const char *socket_path, moe_client **ret)
{
    if (!ret)
        return -EINVAL;
    const char *path = socket_path;
    if (!path) {
        const char *env = secure_getenv("MOED_SOCKET");
        path = env && *env ? env : MOE_CLIENT_DEFAULT_SOCKET;
    }
    if (!*path)
        return -EINVAL;
    moe_client *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    if (strlen(path) >= sizeof(c->path)) {
        free(c);
        return -ENAMETOOLONG;
    }
    strcpy(c->path, path);
    c->timeout_ms = 300000;
    atomic_init(&c->cancel, 0);
    atomic_init(&c->fd, -1);
    atomic_init(&c->cancelling, 0);
    if (pthread_mutex_init(&c->lock, NULL) != 0) {
        free(c);
        return -ENOMEM;
    }
    *ret = c;
    return 0;
}

MOE_CLIENT_PUBLIC moe_client *moe_client_free(moe_client *c)
{
    if (!c)
        return NULL;
    pthread_mutex_destroy(&c->lock);
    free(c);
    return NULL;
}

MOE_CLIENT_PUBLIC const char *moe_client_socket_path(const moe_client *c)
{
    return c->path;
}

MOE_CLIENT_PUBLIC const char *moe_client_errmsg(const moe_client *c)
{
    return c->errmsg;
}

MOE_CLIENT_PUBLIC void moe_client_set_timeout(moe_client *c, int timeout_ms)
{
    c->timeout_ms = timeout_ms > 0 ? timeout_ms : 0;
}

MOE_CLIENT_PUBLIC void moe_client_cancel(moe_client *c)
{
    /* Only lock-free atomics and shutdown(2): safe in a signal handler. */
    atomic_store(&c->cancel, 1);
    atomic_fetch_add(&c->cancelling, 1);
    int fd = atomic_load(&c->fd);
    if (fd >= 0)
        shutdown(fd, SHUT_RDWR);
    atomic_fetch_sub(&c->cancelling, 1);
}

MOE_CLIENT_PUBLIC void moe_client_params_init(moe_client_params *p)
{
    memset(p, 0, sizeof(*p));
    p->temperature = p->top_p = p->min_p = NAN;
    p->presence_penalty = p->frequency_penalty = p->repetition_penalty = NAN;
    p->top_k = -1;
}

MOE_CLIENT_PUBLIC void moe_client_result_clear(moe_client_result *r)
{
    if (!r)
        return;
    free(r->text);
    free(r->reasoning);
    memset(r, 0, sizeof(*r));
}

MOE_CLIENT_PUBLIC char **moe_client_strv_free(char **strv)
{
    if (!strv)
        return NULL;
    for (char **s = strv; *s; s++)
        free(*s);
    free(strv);
    return NULL;
}

/* Begin a request: take the lock, clear the flag, connect, send, read the head. On failure
 * the lock is released. */
static int request_begin(moe_client *c, http_conn_t *h, const char *method, const char *path,
                         const char *body)
{
    pthread_mutex_lock(&c->lock);
    atomic_store(&c->cancel, 0);
    c->errmsg[0] = '\0';
    int rc = http_connect(c, h);
    if (rc < 0)
        goto fail;
    if ((rc = http_request(h, method, path, body)) < 0) {
        http_close(h);
        goto fail;
    }
    return 0;
fail:
    pthread_mutex_unlock(&c->lock);
    return rc;
}

static void request_end(http_conn_t *h)
{
    moe_client *c = h->c;
    http_close(h);
    pthread_mutex_unlock(&c->lock);
}

/* The message and status code of a {"error":{...}} object, when root is one. */
static bool error_of(json_t *root, const char **ret_msg, int *ret_code)
{
    json_t *e = json_object_get(root, "error");
    if (!json_is_object(e))
        return false;
    const char *msg = json_string_value(json_object_get(e, "message"));
    json_t *code = json_object_get(e, "code");
    *ret_msg = msg && *msg ? msg : "an error without a message";
    *ret_code = json_is_integer(code) ? (int)json_integer_value(code) : 0;
    return true;
}

/* An answer with an error status: its errno, and the daemon's message as errmsg. */
static int fail_status(http_conn_t *h)
{
    int err = client_status_errno(h->status);
    char *body = NULL;
    if (http_read_all(h, ERROR_BODY_MAX, &body, NULL) < 0)
        return client_fail(h->c, err, "moed answered HTTP %d", h->status);
    json_t *root = json_loads(body, 0, NULL);
    const char *msg;
    int code;
    if (root && error_of(root, &msg, &code))
        client_fail(h->c, err, "%s", msg);
    else
        client_fail(h->c, err, "moed answered HTTP %d", h->status);
    json_decref(root);
    free(body);
    return err;
}

/* GET path and read the whole body (at most max bytes). */
static int get_text(moe_client *c, const char *path, size_t max, char **ret)
{
    http_conn_t h;
    int rc = request_begin(c, &h, "GET", path, NULL);
    if (rc < 0)
        return rc;
    if (h.status != 200)
        rc = fail_status(&h);
    else
        rc = http_read_all(&h, max, ret, NULL);
    request_end(&h);
    return rc;
}

MOE_CLIENT_PUBLIC int moe_client_connect(moe_client *c)
{
    http_conn_t h;
    pthread_mutex_lock(&c->lock);
    atomic_store(&c->cancel, 0);
    int rc = http_connect(c, &h);
    if (rc == 0)
        http_close(&h);
    pthread_mutex_unlock(&c->lock);
    return rc;
}

MOE_CLIENT_PUBLIC int moe_client_health(moe_client *c, char **ret)
{
    char *body;
    int rc = get_text(c, "/health", ERROR_BODY_MAX, &body);
    if (rc < 0)
        return rc;
    if (ret)
        *ret = body;
    else
        free(body);
    return 0;
}

MOE_CLIENT_PUBLIC int moe_client_metrics(moe_client *c, char **ret)
{
    return get_text(c, "/metrics", MOE_CLIENT_MAX_BODY, ret);
}

MOE_CLIENT_PUBLIC int moe_client_models(moe_client *c, char ***ret)
{
    char *body;
    int rc = get_text(c, "/v1/models", MOE_CLIENT_MAX_BODY, &body);
    if (rc < 0)
        return rc;
    json_t *root = json_loads(body, 0, NULL);
    free(body);
    json_t *data = json_object_get(root, "data");
    if (!json_is_array(data)) {
        json_decref(root);
        return client_fail(c, -EPROTO, "moed's model list is not {\"data\":[...]}");
    }
    size_t n = json_array_size(data);
    char **ids = calloc(n + 1, sizeof(char *));
    if (!ids) {
        json_decref(root);
        return client_fail(c, -ENOMEM, "out of memory");
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const char *id = json_string_value(json_object_get(json_array_get(data, i), "id"));
        if (!id)
            continue;
        if (!(ids[k] = strdup(id))) {
            moe_client_strv_free(ids);
            json_decref(root);
            return client_fail(c, -ENOMEM, "out of memory");
        }
        k++;
    }
    json_decref(root);
    *ret = ids;
    return (int)k;
}

MOE_CLIENT_PUBLIC int moe_client_metrics_get(const char *text, const char *name, double *ret)
{
    if (!text || !name || !*name)
        return -EINVAL;
    size_t n = strlen(name);
    for (const char *line = text; *line;) {
        const char *end = strchr(line, '\n');
        if (!end)
            end = line + strlen(line);
        if (line[0] != '#' && (size_t)(end - line) > n && memcmp(line, name, n) == 0 &&
            line[n] == ' ') {
            char buf[64];
            size_t vlen = (size_t)(end - line) - n - 1;
            if (vlen == 0 || vlen >= sizeof(buf))
                return -EPROTO;
            memcpy(buf, line + n + 1, vlen);
            buf[vlen] = '\0';
            char *stop;
            errno = 0;
            double v = strtod(buf, &stop);
            if (stop == buf || (*stop && *stop != ' '))
                return -EPROTO; /* a timestamp may follow the value after a space */
            *ret = v;
            return 0;
        }
        line = *end ? end + 1 : end;
    }
    return -ENOENT;
}

/* ---- generation ---- */

typedef struct strbuf {
    char *s;
    size_t len, cap;
} strbuf_t;

static int strbuf_add(strbuf_t *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        if (b->len + n + 1 > MOE_CLIENT_MAX_BODY)
            return -EMSGSIZE;
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *t = realloc(b->s, cap);
        if (!t)
            return -ENOMEM;
        b->s = t;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
    return 0;
}

/* An owned NUL-terminated copy of the buffer ("" when empty), the buffer emptied. */
static char *strbuf_take(strbuf_t *b)
{
    char *s = b->s ? b->s : strdup("");
    memset(b, 0, sizeof(*b));
    return s;
}

typedef struct gen {
    moe_client *c;
    bool chat;
    moe_client_token_fn cb;
    void *ud;
    strbuf_t text, reasoning;
    char finish[16], id[64];
    int64_t prompt_tokens, completion_tokens;
    bool done;
    int err; /* why the event stream stopped early (a negative errno) */
} gen_t;

/* One piece of text from a JSON string value (it may hold NUL bytes: \u0000). */
static int gen_piece(gen_t *g, json_t *str, unsigned flags)
{
    const char *s = json_string_value(str);
    size_t n = s ? json_string_length(str) : 0;
    if (n == 0)
        return 0;
    int rc = strbuf_add(flags & MOE_CLIENT_TOKEN_REASONING ? &g->reasoning : &g->text, s, n);
    if (rc < 0)
        return client_fail(
            g->c, rc, rc == -EMSGSIZE ? "the answer is over the %u bytes kept" : "out of memory",
            MOE_CLIENT_MAX_BODY);
    if (g->cb && g->cb(g->ud, s, n, flags) != 0)
        return client_fail(g->c, -ECANCELED, "cancelled by the token callback");
    return 0;
}

/* Take what an answer object (streamed chunk or whole response) says. */
static int gen_take(gen_t *g, json_t *root)
{
    const char *id = json_string_value(json_object_get(root, "id"));
    if (id && !g->id[0])
        snprintf(g->id, sizeof(g->id), "%s", id);
    json_t *usage = json_object_get(root, "usage");
    if (json_is_object(usage)) {
        json_t *p = json_object_get(usage, "prompt_tokens");
        json_t *k = json_object_get(usage, "completion_tokens");
        if (json_is_integer(p))
            g->prompt_tokens = json_integer_value(p);
        if (json_is_integer(k))
            g->completion_tokens = json_integer_value(k);
    }
    json_t *choices = json_object_get(root, "choices");
    if (!json_is_array(choices))
        return client_fail(g->c, -EPROTO, "an answer from moed without choices");
    json_t *ch = json_array_get(choices, 0);
    if (!ch)
        return 0; /* the usage chunk */
    const char *fin = json_string_value(json_object_get(ch, "finish_reason"));
    if (fin)
        snprintf(g->finish, sizeof(g->finish), "%s", fin);
    int rc;
    if (!g->chat)
        return gen_piece(g, json_object_get(ch, "text"), 0);
    json_t *m = json_object_get(ch, "delta");
    if (!m)
        m = json_object_get(ch, "message");
    if ((rc = gen_piece(g, json_object_get(m, "reasoning_content"), MOE_CLIENT_TOKEN_REASONING)) <
        0)
        return rc;
    return gen_piece(g, json_object_get(m, "content"), 0);
}

static int gen_event(void *ud, const char *data, size_t len)
{
    gen_t *g = ud;
    if (g->done)
        return 0;
    if (atomic_load(&g->c->cancel)) { /* no piece after a cancel, even one already read */
        g->err = client_fail(g->c, -ECANCELED, "cancelled");
        return 1;
    }
    if (len == 6 && memcmp(data, "[DONE]", 6) == 0) {
        g->done = true;
        return 0;
    }
    json_error_t jerr;
    json_t *root = json_loadb(data, len, JSON_ALLOW_NUL, &jerr);
    if (!json_is_object(root)) {
        g->err = client_fail(g->c, -EPROTO, "an event from moed is not a JSON object (%s)",
                             root ? "another JSON value" : jerr.text);
        json_decref(root);
        return 1;
    }
    const char *msg;
    int code, rc = 0;
    if (error_of(root, &msg, &code)) {
        int err = code >= 400 && code <= 599 ? client_status_errno(code) : -EIO;
        if (err == -EPROTO)
            err = -EIO;
        rc = client_fail(g->c, err, "%s", msg);
    } else {
        rc = gen_take(g, root);
    }
    json_decref(root);
    if (rc < 0) {
        g->err = rc;
        return 1;
    }
    return 0;
}

static int gen_stream(gen_t *g, http_conn_t *h)
{
    sse_parser_t p;
    sse_init(&p, gen_event, NULL, g);
    char buf[4096];
    int rc = 0;
    for (;;) {
        ssize_t k = http_read_body(h, buf, sizeof(buf));
        if (k < 0) {
            rc = (int)k;
            break;
        }
        rc = k == 0 ? sse_finish(&p) : sse_feed(&p, buf, (size_t)k);
        if (rc == 1)
            rc = g->err;
        else if (rc < 0)
            rc = client_fail(
                g->c, rc, rc == -EMSGSIZE ? "an event from moed is over %u bytes" : "out of memory",
                MOE_CLIENT_MAX_LINE);
        if (rc < 0 || k == 0 || g->done)
            break;
    }
    sse_done(&p);
    if (rc == 0 && !g->done)
        rc = client_fail(g->c, -EPROTO, "moed's stream ended without [DONE]");
    return rc;
}

static int gen_whole(gen_t *g, http_conn_t *h)
{
    char *body;
    size_t len;
    int rc = http_read_all(h, MOE_CLIENT_MAX_BODY, &body, &len);
    if (rc < 0)
        return rc;
    json_t *root = json_loadb(body, len, JSON_ALLOW_NUL, NULL);
    free(body);
    if (!json_is_object(root)) {
        json_decref(root);
        return client_fail(g->c, -EPROTO, "moed's answer is not a JSON object");
    }
    rc = gen_take(g, root);
    json_decref(root);
    return rc;
}

static int set_real(json_t *o, const char *key, double v)
{
    return isnan(v) ? 0 : json_object_set_new(o, key, json_real(v));
}

static int add_params(json_t *o, const moe_client_params *p)
{
    int rc = 0;
    if (p->model)
        rc |= json_object_set_new(o, "model", json_string(p->model));
    if (p->max_tokens > 0)
        rc |= json_object_set_new(o, "max_tokens", json_integer(p->max_tokens));
    rc |= set_real(o, "temperature", p->temperature);
    rc |= set_real(o, "top_p", p->top_p);
    rc |= set_real(o, "min_p", p->min_p);
    rc |= set_real(o, "presence_penalty", p->presence_penalty);
    rc |= set_real(o, "frequency_penalty", p->frequency_penalty);
    rc |= set_real(o, "repetition_penalty", p->repetition_penalty);
    if (p->top_k >= 0)
        rc |= json_object_set_new(o, "top_k", json_integer(p->top_k));
    if (p->has_seed)
        rc |= json_object_set_new(o, "seed", json_integer(p->seed));
    if (p->ignore_eos)
        rc |= json_object_set_new(o, "ignore_eos", json_true());
    if (p->stop && p->n_stop > 0) {
        json_t *a = json_array();
        for (size_t i = 0; a && i < p->n_stop; i++)
            if (!p->stop[i] || json_array_append_new(a, json_string(p->stop[i])) < 0)
                rc = -1;
        rc |= json_object_set_new(o, "stop", a);
    }
    return rc ? -EINVAL : 0;
}

/* Run one generation request whose prompt/messages are already in body. */
static int generate(moe_client *c, bool chat, json_t *body, const moe_client_params *params,
                    moe_client_token_fn cb, void *ud, moe_client_result *ret)
{
    moe_client_params defaults;
    if (!params) {
        moe_client_params_init(&defaults);
        params = &defaults;
    }
    if (add_params(body, params) < 0 ||
        json_object_set_new(body, "stream", json_boolean(cb != NULL)) < 0 ||
        (cb &&
         json_object_set_new(body, "stream_options", json_pack("{s:b}", "include_usage", 1)) < 0)) {
        json_decref(body);
        return client_fail(c, -EINVAL, "invalid parameters (a NULL or non-UTF-8 string?)");
    }
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!text)
        return client_fail(c, -ENOMEM, "out of memory");
    http_conn_t h;
    int rc = request_begin(c, &h, "POST", chat ? "/v1/chat/completions" : "/v1/completions", text);
    free(text);
    if (rc < 0)
        return rc;
    gen_t g = {
        .c = c, .chat = chat, .cb = cb, .ud = ud, .prompt_tokens = -1, .completion_tokens = -1};
    if (h.status != 200)
        rc = fail_status(&h);
    else
        rc = cb ? gen_stream(&g, &h) : gen_whole(&g, &h);
    request_end(&h);
    if (rc == 0 && ret) {
        memset(ret, 0, sizeof(*ret));
        ret->text_len = g.text.len;
        ret->reasoning_len = g.reasoning.len;
        ret->text = strbuf_take(&g.text);
        ret->reasoning = strbuf_take(&g.reasoning);
        if (!ret->text || !ret->reasoning) {
            moe_client_result_clear(ret);
            return client_fail(c, -ENOMEM, "out of memory");
        }
        memcpy(ret->finish_reason, g.finish, sizeof(g.finish));
        memcpy(ret->id, g.id, sizeof(g.id));
        ret->prompt_tokens = g.prompt_tokens;
        ret->completion_tokens = g.completion_tokens;
    }
    free(g.text.s);
    free(g.reasoning.s);
    return rc;
}

MOE_CLIENT_PUBLIC int moe_client_complete(moe_client *c, const char *prompt,
                                          const moe_client_params *params,
                                          moe_client_token_fn on_token, void *userdata,
                                          moe_client_result *ret)
{
    if (!prompt)
        return client_fail(c, -EINVAL, "no prompt");
    json_t *body = json_pack("{s:s}", "prompt", prompt);
    if (!body)
        return client_fail(c, -EINVAL, "the prompt is not UTF-8");
    return generate(c, false, body, params, on_token, userdata, ret);
}

MOE_CLIENT_PUBLIC int moe_client_chat(moe_client *c, const moe_client_message *messages, size_t n,
                                      const moe_client_params *params, moe_client_token_fn on_token,
                                      void *userdata, moe_client_result *ret)
{
    if (!messages || n == 0)
        return client_fail(c, -EINVAL, "no messages");
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++) {
        json_t *m =
            messages[i].role && messages[i].content
                ? json_pack("{s:s,s:s}", "role", messages[i].role, "content", messages[i].content)
                : NULL;
        if (!m || json_array_append_new(a, m) < 0) {
            json_decref(a);
            return client_fail(c, -EINVAL,
                               "message %zu has no role or content, or is not "
                               "UTF-8",
                               i);
        }
    }
    json_t *body = a ? json_pack("{s:o}", "messages", a) : NULL;
    if (!body)
        return client_fail(c, -ENOMEM, "out of memory");
    return generate(c, true, body, params, on_token, userdata, ret);
}
