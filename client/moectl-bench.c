/* moectl-bench.c: `moectl bench`, N concurrent streaming clients against moed.
 *
 * Two phases in one run, on the same prompt and length (ignore_eos, so every request makes
 * exactly max_tokens tokens): one client alone, then N clients at once, each with its own
 * moe_client and thread, each doing --requests requests one after another. A phase's
 * tokens/s is its completion tokens (from usage) over its wall time; "ratio" is the
 * concurrent figure over the single one. Time to first token is from the call to the first
 * streamed piece; inter-token latency is the gap between pieces (moed sends a piece per
 * token). Percentiles are nearest-rank over every request of the phase.
 *
 * --rounds N alternates the two phases N times (single, concurrent, single, ...); each round
 * has its own ratio and the headline ratio is their median, so a burst of load from another
 * process skews one round, not the result. Tokens, wall time, tokens/s and percentiles are
 * pooled over all rounds; with one round every figure is the one of that round. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "moectl.h"

typedef struct samples {
    double *v; /* milliseconds */
    size_t n, cap;
} samples_t;

typedef struct worker {
    const moectl_t *m;
    int slot; /* its cancel-target slot */
    const char *prompt;
    samples_t ttft, itl;
    int64_t tokens;
    double start, last; /* this request's start and last piece, seconds */
    bool first;
    int err;
    char errmsg[256];
    pthread_t thread;
} worker_t;

typedef struct phase {
    int clients;
    double wall_s, tokens_per_s;
    int64_t tokens;
    samples_t ttft, itl;
} phase_t;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int samples_add(samples_t *s, double v)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 256;
        double *t = realloc(s->v, cap * sizeof(double));
        if (!t)
            return -ENOMEM;
        s->v = t;
        s->cap = cap;
    }
    s->v[s->n++] = v;
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double percentile(const samples_t *s, double p)
{
    if (s->n == 0)
        return NAN;
    size_t rank = (size_t)ceil(p / 100.0 * (double)s->n);
    return s->v[rank > 0 ? rank - 1 : 0];
}

static int on_piece(void *ud, const char *text, size_t len, unsigned flags)
{
    worker_t *w = ud;
    double t = now_s();
    int rc = w->first ? samples_add(&w->ttft, (t - w->start) * 1e3)
                      : samples_add(&w->itl, (t - w->last) * 1e3);
    w->first = false;
    w->last = t;
    return rc < 0 ? 1 : 0;
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    moe_client *c;
    int rc = moe_client_new(w->m->socket, &c);
    if (rc < 0) {
        w->err = rc;
        snprintf(w->errmsg, sizeof(w->errmsg), "%s", strerror(-rc));
        return NULL;
    }
    moectl_cancel_target(w->slot, c);
    moe_client_params p = w->m->params;
    if (p.max_tokens <= 0)
        p.max_tokens = 64;
    p.ignore_eos = 1;
    for (int i = 0; i < w->m->requests && !moectl_interrupted; i++) {
        moe_client_result r;
        w->first = true;
        w->start = w->last = now_s();
        rc = moe_client_complete(c, w->prompt, &p, on_piece, w, &r);
        if (rc < 0) {
            w->err = rc;
            snprintf(w->errmsg, sizeof(w->errmsg), "%s", moe_client_errmsg(c));
            break;
        }
        w->tokens +=
            r.completion_tokens >= 0 ? r.completion_tokens : (int64_t)(w->itl.n + w->ttft.n);
        moe_client_result_clear(&r);
    }
    moectl_cancel_target(w->slot, NULL);
    moe_client_free(c);
    return NULL;
}

static int samples_merge(samples_t *into, const samples_t *from)
{
    for (size_t i = 0; i < from->n; i++)
        if (samples_add(into, from->v[i]) < 0)
            return -ENOMEM;
    return 0;
}

/* Run one phase with n clients; on failure the first worker's error. */
static int run_phase(const moectl_t *m, const char *prompt, int n, phase_t *ret, char *errmsg,
                     size_t errlen)
{
    worker_t *w = calloc((size_t)n, sizeof(*w));
    if (!w)
        return -ENOMEM;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old); /* Ctrl-C goes to the main thread */
    double t0 = now_s();
    int started = 0, rc = 0;
    for (; started < n; started++) {
        w[started] = (worker_t){.m = m, .slot = started + 1, .prompt = prompt};
        if (pthread_create(&w[started].thread, NULL, worker_main, &w[started]) != 0) {
            rc = -EAGAIN;
            snprintf(errmsg, errlen, "cannot start thread %d", started);
            break;
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    phase_t ph = {.clients = n};
    for (int i = 0; i < started; i++)
        pthread_join(w[i].thread, NULL);
    ph.wall_s = now_s() - t0;
    for (int i = 0; i < started; i++) {
        if (w[i].err && rc == 0) {
            rc = w[i].err;
            snprintf(errmsg, errlen, "%s", w[i].errmsg);
        }
        ph.tokens += w[i].tokens;
        if (samples_merge(&ph.ttft, &w[i].ttft) < 0 || samples_merge(&ph.itl, &w[i].itl) < 0)
            rc = rc ? rc : -ENOMEM;
        free(w[i].ttft.v);
        free(w[i].itl.v);
    }
    free(w);
    if (moectl_interrupted)
        rc = -ECANCELED;
    if (rc < 0) {
        free(ph.ttft.v);
        free(ph.itl.v);
        return rc;
    }
    qsort(ph.ttft.v, ph.ttft.n, sizeof(double), cmp_double);
    qsort(ph.itl.v, ph.itl.n, sizeof(double), cmp_double);
    ph.tokens_per_s = ph.wall_s > 0 ? (double)ph.tokens / ph.wall_s : 0;
    *ret = ph;
    return 0;
}

static json_t *pct_json(const samples_t *s)
{
    json_t *o = json_object();
    static const double ps[] = {50, 90, 99};
    static const char *const names[] = {"p50", "p90", "p99"};
    for (int i = 0; i < 3; i++) {
        double v = percentile(s, ps[i]);
        json_object_set_new(o, names[i], isnan(v) ? json_null() : json_real(v));
    }
    return o;
}

static json_t *phase_json(const phase_t *p)
{
    return json_pack("{s:i,s:I,s:f,s:f,s:o,s:o}", "clients", p->clients, "tokens",
                     (json_int_t)p->tokens, "wall_s", p->wall_s, "tokens_per_s", p->tokens_per_s,
                     "ttft_ms", pct_json(&p->ttft), "itl_ms", pct_json(&p->itl));
}

static void print_pct(const char *what, const samples_t *s)
{
    printf("%-26s p50 %8.1f   p90 %8.1f   p99 %8.1f\n", what, percentile(s, 50), percentile(s, 90),
           percentile(s, 99));
}

static void phase_free(phase_t *p)
{
    free(p->ttft.v);
    free(p->itl.v);
    p->ttft = p->itl = (samples_t){0};
}

/* Add one round's phase to the pooled one: tokens and wall time summed, samples merged.
 * The pooled phase's samples are sorted and its tokens/s computed by phase_pool_finish(). */
static int phase_pool(phase_t *into, const phase_t *from)
{
    into->clients = from->clients;
    into->tokens += from->tokens;
    into->wall_s += from->wall_s;
    if (samples_merge(&into->ttft, &from->ttft) < 0 || samples_merge(&into->itl, &from->itl) < 0)
        return -ENOMEM;
    return 0;
}

static void phase_pool_finish(phase_t *p)
{
    qsort(p->ttft.v, p->ttft.n, sizeof(double), cmp_double);
    qsort(p->itl.v, p->itl.n, sizeof(double), cmp_double);
    p->tokens_per_s = p->wall_s > 0 ? (double)p->tokens / p->wall_s : 0;
}

/* The median of v[0..n) (n >= 1), the mean of the middle two when n is even. */
static double median(const double *v, int n)
{
    double s[MOECTL_MAX_ROUNDS];
    memcpy(s, v, (size_t)n * sizeof(double));
    qsort(s, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/* One round: the single phase, then the concurrent one, each pooled; its ratio in ret_ratio. */
static int run_round(const moectl_t *m, const char *prompt, phase_t *single, phase_t *multi,
                     double *ret_ratio, char *errmsg, size_t errlen)
{
    phase_t one, many;
    int rc = run_phase(m, prompt, 1, &one, errmsg, errlen);
    if (rc < 0)
        return rc;
    rc = run_phase(m, prompt, m->clients, &many, errmsg, errlen);
    if (rc < 0) {
        phase_free(&one);
        return rc;
    }
    *ret_ratio = one.tokens_per_s > 0 ? many.tokens_per_s / one.tokens_per_s : 0;
    if (phase_pool(single, &one) < 0 || phase_pool(multi, &many) < 0)
        rc = -ENOMEM;
    phase_free(&one);
    phase_free(&many);
    return rc;
}

static void print_json(const moectl_t *m, const phase_t *single, const phase_t *multi,
                       const double *ratios, double ratio)
{
    json_t *rr = json_array();
    for (int i = 0; rr && i < m->rounds; i++)
        json_array_append_new(rr, json_real(ratios[i]));
    json_t *o = json_pack("{s:i,s:i,s:i,s:f,s:f,s:i,s:o,s:o,s:o}", "clients", m->clients,
                          "requests_per_client", m->requests, "max_tokens",
                          m->params.max_tokens > 0 ? m->params.max_tokens : 64, "tokens_per_s",
                          multi->tokens_per_s, "ratio", ratio, "rounds", m->rounds, "round_ratios",
                          rr, "single", phase_json(single), "concurrent", phase_json(multi));
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    if (s)
        puts(s);
    free(s);
    json_decref(o);
}

static void print_human(const moectl_t *m, const phase_t *single, const phase_t *multi,
                        const double *ratios, double ratio)
{
    printf("1 client                   %8.1f tokens/s (%lld tokens in %.2f s)\n",
           single->tokens_per_s, (long long)single->tokens, single->wall_s);
    char label[32];
    snprintf(label, sizeof(label), "%d clients", m->clients);
    printf("%-26s %8.1f tokens/s aggregate, %.2fx one client\n", label, multi->tokens_per_s, ratio);
    if (m->rounds > 1) {
        printf("%-26s", "ratio per round");
        for (int i = 0; i < m->rounds; i++)
            printf(" %.2f", ratios[i]);
        printf("   (median %.2f)\n", ratio);
    }
    print_pct("time to first token (ms)", &multi->ttft);
    print_pct("inter-token latency (ms)", &multi->itl);
}

/* --rounds N runs N single/concurrent pairs back to back, so that a burst of outside load
 * lands in one round's ratio rather than skewing the whole figure; the headline ratio is the
 * median of the per-round ratios, every other figure is pooled over the rounds. */
int moectl_bench(moectl_t *m)
{
    if (m->n_args > 1) {
        fprintf(stderr, "moectl: bench takes one optional prompt\n");
        return EXIT_USAGE;
    }
    const char *prompt = m->n_args ? m->args[0] : "Once upon a time";
    char errmsg[256] = "";
    phase_t single = {0}, multi = {0};
    double ratios[MOECTL_MAX_ROUNDS];
    if (!m->json && m->tty_err) {
        char rounds[32] = "";
        if (m->rounds > 1)
            snprintf(rounds, sizeof(rounds), ", %d rounds", m->rounds);
        fprintf(stderr, "bench: 1 client, then %d, %d request(s) each%s...\n", m->clients,
                m->requests, rounds);
    }
    int rc = 0;
    for (int i = 0; i < m->rounds && rc == 0; i++)
        rc = run_round(m, prompt, &single, &multi, &ratios[i], errmsg, sizeof(errmsg));
    if (rc < 0) {
        phase_free(&single);
        phase_free(&multi);
        fprintf(stderr, "moectl: bench: %s\n",
                rc == -ECANCELED ? "interrupted"
                : errmsg[0]      ? errmsg
                                 : strerror(-rc));
        return moectl_exit_code(rc);
    }
    phase_pool_finish(&single);
    phase_pool_finish(&multi);
    double ratio = median(ratios, m->rounds);
    if (m->json)
        print_json(m, &single, &multi, ratios, ratio);
    else
        print_human(m, &single, &multi, ratios, ratio);
    phase_free(&single);
    phase_free(&multi);
    return EXIT_OK;
}
