/* HTTP routing, access control and error shaping over libmicrohttpd.
 *
 * Per connection (MHD_OPTION_NOTIFY_CONNECTION, STARTED): read SO_PEERCRED once and decide
 * whether the peer is allowed; a refused peer gets 403 on every request it sends. Per request
 * (the access handler): the first call picks the route and refuses early what can be refused
 * from the headers alone (404, 405, 413 by Content-Length); body chunks are then appended
 * up to settings.max_body (past it the rest is discarded and the answer is 413); the last
 * call dispatches. Every answer is JSON (or Prometheus text for /metrics) with a status
 * counted in the metrics. */
#include "api/api_server.h"

#include <errno.h>
#include <grp.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <pthread.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_ALLOW 64

struct api_server {
    api_server_config_t cfg;
    struct MHD_Daemon *mhd;
    atomic_bool ready;
    atomic_uint connections;
    atomic_uint live; /* generation answers in progress */
    api_metrics_t metrics;
    pthread_rwlock_t allow_lock; /* SIGHUP may replace the lists while peers connect */
    uid_t allow_uid[MAX_ALLOW];
    size_t n_allow_uid;
    gid_t allow_gid[MAX_ALLOW];
    size_t n_allow_gid;
    bool allow_all;
};

typedef struct conn_ctx {
    bool allowed;
    struct ucred cred;
} conn_ctx_t;

enum route { ROUTE_HEALTH, ROUTE_MODELS, ROUTE_METRICS, ROUTE_COMPLETIONS, ROUTE_CHAT };

typedef struct req_ctx {
    enum route route;
    int early_status; /* set when the answer is already known (413 on overflow) */
    char *body;
    size_t len;
} req_ctx_t;

static const struct {
    const char *path;
    const char *method;
    enum route route;
} routes[] = {
    {"/health", "GET", ROUTE_HEALTH},
    {"/v1/models", "GET", ROUTE_MODELS},
    {"/metrics", "GET", ROUTE_METRICS},
    {"/v1/completions", "POST", ROUTE_COMPLETIONS},
    {"/v1/chat/completions", "POST", ROUTE_CHAT},
};

/* ---- allow-list ---- */

static int parse_ids(const char *list, bool users, unsigned *ids, size_t *n)
{
    char *copy = strdup(list), *save = NULL;
    if (!copy)
        return -ENOMEM;
    int r = 0;
    for (char *tok = strtok_r(copy, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save)) {
        if (*n >= MAX_ALLOW) {
            r = -E2BIG;
            break;
        }
        char *end;
        errno = 0;
        unsigned long v = strtoul(tok, &end, 10);
        if (*tok >= '0' && *tok <= '9' && !*end && !errno && v < UINT32_MAX) {
            ids[(*n)++] = (unsigned)v;
            continue;
        }
        if (users) {
            struct passwd *pw = getpwnam(tok); /* start-up only, single-threaded */
            if (!pw) {
                r = -ENOENT;
                break;
            }
            ids[(*n)++] = pw->pw_uid;
        } else {
            struct group *gr = getgrnam(tok);
            if (!gr) {
                r = -ENOENT;
                break;
            }
            ids[(*n)++] = gr->gr_gid;
        }
    }
    free(copy);
    return r;
}

static bool peer_allowed_locked(const api_server_t *s, const struct ucred *c)
{
    if (s->allow_all || c->uid == 0 || c->uid == getuid())
        return true;
    for (size_t i = 0; i < s->n_allow_uid; i++)
        if (s->allow_uid[i] == c->uid)
            return true;
    if (!s->n_allow_gid)
        return false;
    /* The peer's primary group from SO_PEERCRED plus the supplementary groups of its user
     * in the group database (the kernel does not tell us the peer's supplementary list). */
    gid_t groups[256];
    int ng = 256;
    groups[0] = c->gid;
    struct passwd pw, *res = NULL;
    char buf[4096];
    if (getpwuid_r(c->uid, &pw, buf, sizeof(buf), &res) == 0 && res) {
        if (getgrouplist(pw.pw_name, c->gid, groups, &ng) < 0)
            ng = 256;
    } else {
        ng = 1;
    }
    for (int g = 0; g < ng; g++)
        for (size_t i = 0; i < s->n_allow_gid; i++)
            if (s->allow_gid[i] == groups[g])
                return true;
    return false;
}

static bool peer_allowed(api_server_t *s, const struct ucred *c)
{
    pthread_rwlock_rdlock(&s->allow_lock);
    bool ok = peer_allowed_locked(s, c);
    pthread_rwlock_unlock(&s->allow_lock);
    return ok;
}

int api_server_set_allow(api_server_t *s, const char *users, const char *groups, char *err,
                         size_t errlen)
{
    uid_t uids[MAX_ALLOW];
    gid_t gids[MAX_ALLOW];
    size_t nu = 0, ng = 0;
    int r = parse_ids(users, true, (unsigned *)uids, &nu);
    if (r < 0) {
        snprintf(err, errlen, "allow-users: '%s': %s", users,
                 r == -ENOENT ? "unknown user" : strerror(-r));
        return r;
    }
    r = parse_ids(groups, false, (unsigned *)gids, &ng);
    if (r < 0) {
        snprintf(err, errlen, "allow-groups: '%s': %s", groups,
                 r == -ENOENT ? "unknown group" : strerror(-r));
        return r;
    }
    pthread_rwlock_wrlock(&s->allow_lock);
    memcpy(s->allow_uid, uids, nu * sizeof(*uids));
    s->n_allow_uid = nu;
    memcpy(s->allow_gid, gids, ng * sizeof(*gids));
    s->n_allow_gid = ng;
    s->allow_all = !nu && !ng;
    pthread_rwlock_unlock(&s->allow_lock);
    return 0;
}

/* ---- responses ---- */

static enum MHD_Result send_buf(api_server_t *s, struct MHD_Connection *c, unsigned status,
                                const char *type, const char *body, size_t len,
                                const char *extra_hdr, const char *extra_val)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    if (extra_hdr)
        MHD_add_response_header(r, extra_hdr, extra_val);
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    if (status / 100 < 6)
        atomic_fetch_add(&s->metrics.requests[status / 100], 1);
    return ret;
}

static void json_escape(char *out, size_t len, const char *in)
{
    size_t o = 0;
    for (; *in && o + 7 < len; in++) {
        unsigned char ch = (unsigned char)*in;
        if (ch == '"' || ch == '\\') {
            out[o++] = '\\';
            out[o++] = (char)ch;
        } else if (ch < 0x20) {
            o += (size_t)snprintf(out + o, len - o, "\\u%04x", ch);
        } else {
            out[o++] = (char)ch;
        }
    }
    out[o] = 0;
}

static enum MHD_Result send_error(api_server_t *s, struct MHD_Connection *c, unsigned status,
                                  const char *type, const char *param, const char *message,
                                  const char *extra_hdr, const char *extra_val)
{
    char msg[600], par[160], body[1024];
    json_escape(msg, sizeof(msg), message);
    if (param && *param) {
        char p[128];
        json_escape(p, sizeof(p), param);
        snprintf(par, sizeof(par), "\"%s\"", p);
    } else {
        snprintf(par, sizeof(par), "null");
    }
    int n = snprintf(body, sizeof(body),
                     "{\"error\":{\"message\":\"%s\",\"type\":\"%s\",\"param\":%s,"
                     "\"code\":%u}}\n",
                     msg, type, par, status);
    return send_buf(s, c, status, "application/json", body, (size_t)n, extra_hdr, extra_val);
}

static enum MHD_Result serve_health(api_server_t *s, struct MHD_Connection *c)
{
    char extra[1024] = "", body[1536];
    bool ready = atomic_load(&s->ready);
    if (s->cfg.ops.health) /* while loading too: how far it is */
        s->cfg.ops.health(s->cfg.ops.userdata, extra, sizeof(extra));
    char model[512];
    json_escape(model, sizeof(model), s->cfg.model_id);
    int n = snprintf(body, sizeof(body), "{\"status\":\"%s\",\"model\":\"%s\"%s%s}\n",
                     ready ? "ok" : "loading", model, extra[0] ? "," : "", extra);
    return send_buf(s, c, ready ? 200 : 503, "application/json", body, (size_t)n, NULL, NULL);
}

static enum MHD_Result serve_models(api_server_t *s, struct MHD_Connection *c)
{
    char model[512], body[1024];
    json_escape(model, sizeof(model), s->cfg.model_id);
    int n = snprintf(body, sizeof(body),
                     "{\"object\":\"list\",\"data\":[{\"id\":\"%s\",\"object\":\"model\","
                     "\"created\":%" PRId64 ",\"owned_by\":\"moed\"}]}\n",
                     model, s->cfg.model_created);
    return send_buf(s, c, 200, "application/json", body, (size_t)n, NULL, NULL);
}

static enum MHD_Result serve_metrics(api_server_t *s, struct MHD_Connection *c)
{
    char *buf = malloc(65536);
    if (!buf)
        return send_error(s, c, 500, "server_error", NULL, "out of memory", NULL, NULL);
    api_metrics_t *m = &s->metrics;
    size_t o = 0;
    o += (size_t)snprintf(buf + o, 65536 - o,
                          "# HELP moed_requests_total HTTP requests answered, by status class.\n"
                          "# TYPE moed_requests_total counter\n");
    for (int k = 2; k <= 5; k++)
        o += (size_t)snprintf(buf + o, 65536 - o, "moed_requests_total{code=\"%dxx\"} %" PRIuFAST64 "\n",
                              k, atomic_load(&m->requests[k]));
    o += (size_t)snprintf(
        buf + o, 65536 - o,
        "# HELP moed_denied_connections_total Requests refused by the allow-list.\n"
        "# TYPE moed_denied_connections_total counter\n"
        "moed_denied_connections_total %" PRIuFAST64 "\n"
        "# HELP moed_prompt_tokens_total Prompt tokens processed.\n"
        "# TYPE moed_prompt_tokens_total counter\n"
        "moed_prompt_tokens_total %" PRIuFAST64 "\n"
        "# HELP moed_completion_tokens_total Tokens generated.\n"
        "# TYPE moed_completion_tokens_total counter\n"
        "moed_completion_tokens_total %" PRIuFAST64 "\n"
        "# HELP moed_connections Open client connections.\n"
        "# TYPE moed_connections gauge\n"
        "moed_connections %u\n"
        "# HELP moed_ready 1 when the model is loaded and requests are served.\n"
        "# TYPE moed_ready gauge\n"
        "moed_ready %d\n",
        atomic_load(&m->denied), atomic_load(&m->prompt_tokens),
        atomic_load(&m->completion_tokens), atomic_load(&s->connections),
        atomic_load(&s->ready) ? 1 : 0);
    api_hist_format(&m->latency, "moed_request_duration_seconds",
                    "Generation requests, from arrival to the last token.", buf, 65536, &o);
    api_hist_format(&m->ttft, "moed_time_to_first_token_seconds",
                    "From a generation request's arrival to its first token.", buf, 65536, &o);
    if (s->cfg.ops.metrics && o < 65536)
        s->cfg.ops.metrics(s->cfg.ops.userdata, buf + o, 65536 - o);
    enum MHD_Result r = send_buf(s, c, 200, "text/plain; version=0.0.4; charset=utf-8", buf,
                                 strlen(buf), NULL, NULL);
    free(buf);
    return r;
}

static enum MHD_Result serve_generation(api_server_t *s, struct MHD_Connection *c,
                                        req_ctx_t *rq)
{
    api_request_t req;
    api_error_t e = {0};
    int r = api_request_parse(rq->body ? rq->body : "", rq->len,
                              rq->route == ROUTE_CHAT ? API_CHAT : API_COMPLETION,
                              s->cfg.settings->max_tokens, &req, &e);
    if (r == -ENOMEM)
        return send_error(s, c, 503, "server_error", NULL, "out of memory", NULL, NULL);
    if (r < 0)
        return send_error(s, c, (unsigned)e.status, e.type, e.param, e.message, NULL, NULL);
    if (!s->cfg.gen.sched) {
        api_request_clear(&req);
        return send_error(s, c, 503, "server_error", NULL, "no engine is running",
                          "Retry-After", "60");
    }
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    conn_ctx_t *cc = ci ? ci->socket_context : NULL;
    struct MHD_Response *resp = NULL;
    api_gen_error_t ge = {0};
    r = api_generate(&s->cfg.gen, &req, cc ? cc->cred.uid : (uid_t)-1, &resp, &ge);
    api_request_clear(&req);
    if (r < 0)
        return send_error(s, c, ge.status ? ge.status : 500, ge.type ? ge.type : "server_error",
                          NULL, ge.message, ge.retry_after ? "Retry-After" : NULL,
                          ge.retry_after);
    enum MHD_Result ret = MHD_queue_response(c, 200, resp);
    MHD_destroy_response(resp);
    atomic_fetch_add(&s->metrics.requests[2], 1);
    return ret;
}

/* ---- libmicrohttpd callbacks ---- */

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    api_server_t *s = cls;
    if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
        free(*socket_context);
        *socket_context = NULL;
        atomic_fetch_sub(&s->connections, 1);
        return;
    }
    atomic_fetch_add(&s->connections, 1);
    conn_ctx_t *cc = calloc(1, sizeof(*cc));
    if (!cc)
        return; /* treated as not allowed below */
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    socklen_t sl = sizeof(cc->cred);
    if (ci && getsockopt(ci->connect_fd, SOL_SOCKET, SO_PEERCRED, &cc->cred, &sl) == 0)
        cc->allowed = peer_allowed(s, &cc->cred);
    *socket_context = cc;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    req_ctx_t *rq = *con_cls;
    if (rq) {
        free(rq->body);
        free(rq);
    }
    *con_cls = NULL;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    api_server_t *s = cls;
    req_ctx_t *rq = *con_cls;

    if (!rq) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        conn_ctx_t *cc = ci ? ci->socket_context : NULL;
        if (!cc || !cc->allowed) {
            atomic_fetch_add(&s->metrics.denied, 1);
            return send_error(s, c, 403, "permission_error", NULL,
                              "this user is not allowed to use moed (see allow-users and "
                              "allow-groups in moed.conf)",
                              NULL, NULL);
        }
        bool path_known = false;
        size_t i;
        for (i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
            if (strcmp(url, routes[i].path))
                continue;
            path_known = true;
            if (!strcmp(method, routes[i].method))
                break;
        }
        if (i == sizeof(routes) / sizeof(routes[0])) {
            if (!path_known)
                return send_error(s, c, 404, "invalid_request_error", NULL,
                                  "unknown route", NULL, NULL);
            const char *allow = NULL;
            for (i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
                if (!strcmp(url, routes[i].path))
                    allow = routes[i].method;
            return send_error(s, c, 405, "invalid_request_error", NULL,
                              "method not allowed on this route", "Allow", allow);
        }
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl) {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(cl, &end, 10);
            if (errno || *end || v > s->cfg.settings->max_body)
                return send_error(s, c, 413, "invalid_request_error", NULL,
                                  "request body too large", NULL, NULL);
        }
        rq = calloc(1, sizeof(*rq));
        if (!rq)
            return MHD_NO;
        rq->route = routes[i].route;
        *con_cls = rq;
        return MHD_YES;
    }

    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (rq->early_status)
            return MHD_YES;
        if (rq->len + n > s->cfg.settings->max_body) {
            rq->early_status = 413;
            free(rq->body);
            rq->body = NULL;
            return MHD_YES;
        }
        char *nb = realloc(rq->body, rq->len + n + 1);
        if (!nb) {
            rq->early_status = 503;
            return MHD_YES;
        }
        memcpy(nb + rq->len, upload_data, n);
        rq->body = nb;
        rq->len += n;
        rq->body[rq->len] = 0;
        return MHD_YES;
    }

    if (rq->early_status == 413)
        return send_error(s, c, 413, "invalid_request_error", NULL, "request body too large",
                          NULL, NULL);
    if (rq->early_status)
        return send_error(s, c, 503, "server_error", NULL, "out of memory", NULL, NULL);
    if (rq->route == ROUTE_HEALTH)
        return serve_health(s, c);
    if (!atomic_load(&s->ready))
        return send_error(s, c, 503, "server_error", NULL, "the model is still loading",
                          "Retry-After", "5");
    switch (rq->route) {
    case ROUTE_MODELS: return serve_models(s, c);
    case ROUTE_METRICS: return serve_metrics(s, c);
    default: return serve_generation(s, c, rq);
    }
}

int api_server_new(const api_server_config_t *cfg, int listen_fd, api_server_t **ret,
                   char *err, size_t errlen)
{
    api_server_t *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->cfg = *cfg;
    s->cfg.gen.live = &s->live;
    s->cfg.gen.log = cfg->log;
    s->cfg.gen.tokens_in = &s->metrics.prompt_tokens;
    s->cfg.gen.tokens_out = &s->metrics.completion_tokens;
    s->cfg.gen.latency = &s->metrics.latency;
    s->cfg.gen.ttft = &s->metrics.ttft;
    const settings_t *st = cfg->settings;
    pthread_rwlock_init(&s->allow_lock, NULL);
    int r = api_server_set_allow(s, st->allow_users, st->allow_groups, err, errlen);
    if (r < 0)
        goto fail;

    /* Thread per connection: a streamed answer blocks on its token queue in its own thread.
     * The connection limit bounds those threads (queue + parallel + a margin for health and
     * metrics probes). */
    unsigned limit = st->queue + st->parallel + 16;
    s->mhd = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL |
            MHD_USE_ITC, 0, NULL,
        NULL, on_request, s, MHD_OPTION_LISTEN_SOCKET, listen_fd,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)st->idle_timeout,
        MHD_OPTION_CONNECTION_LIMIT, limit, MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_END);
    if (!s->mhd) {
        snprintf(err, errlen, "libmicrohttpd refused to start on the socket");
        r = -EIO;
        goto fail;
    }
    *ret = s;
    return 0;
fail:
    free(s);
    return r;
}

int api_server_drain(api_server_t *s, int timeout_ms)
{
    if (s->mhd)
        MHD_quiesce_daemon(s->mhd);
    for (int waited = 0; atomic_load(&s->live) && waited < timeout_ms; waited += 10) {
        struct timespec ts = {0, 10 * 1000000};
        nanosleep(&ts, NULL);
    }
    return atomic_load(&s->live) ? -ETIMEDOUT : 0;
}

api_server_t *api_server_free(api_server_t *s)
{
    if (!s)
        return NULL;
    if (s->mhd) {
        /* Quiesce returns the listening fd to us (it belongs to main), then stop. */
        MHD_quiesce_daemon(s->mhd);
        MHD_stop_daemon(s->mhd);
    }
    pthread_rwlock_destroy(&s->allow_lock);
    free(s);
    return NULL;
}

void api_server_set_ready(api_server_t *s, bool ready)
{
    atomic_store(&s->ready, ready);
}

void api_server_set_generator(api_server_t *s, sched_t *sched)
{
    s->cfg.gen.sched = sched;
}

api_metrics_t *api_server_metrics(api_server_t *s)
{
    return &s->metrics;
}

unsigned api_server_connections(api_server_t *s)
{
    return atomic_load(&s->connections);
}
