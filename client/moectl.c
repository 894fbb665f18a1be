/* moectl: the command-line client of moed, on libmoe-client.
 *
 * Commands: generate (one completion, streamed to stdout), chat (an interactive session
 * keeping the conversation), status (health and figures from /metrics, once or --watch),
 * models, bench (moectl-bench.c). Output is for people on a terminal (colours, a spinner
 * on stderr while the first token is awaited) and for scripts with --json; colours only
 * where the stream is a terminal and NO_COLOR is unset. Ctrl-C cancels the request in
 * flight through moe_client_cancel() (async-signal-safe); in chat it ends the answer, not
 * the session. main() parses the command line and hands over to one cmd_* function; the
 * exit code says what kind of failure it was (see usage()). */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "moectl.h"

volatile sig_atomic_t moectl_interrupted;
static moe_client *_Atomic cancel_targets[MOECTL_MAX_CLIENTS];

void moectl_cancel_target(int i, moe_client *c)
{
    if (i >= 0 && i < MOECTL_MAX_CLIENTS)
        atomic_store(&cancel_targets[i], c);
}

static void on_sigint(int sig)
{
    (void)sig;
    moectl_interrupted = 1;
    for (int i = 0; i < MOECTL_MAX_CLIENTS; i++) {
        moe_client *c = atomic_load(&cancel_targets[i]);
        if (c)
            moe_client_cancel(c);
    }
}

int moectl_exit_code(int err)
{
    switch (err) {
    case 0:
        return EXIT_OK;
    case -ENOENT:
    case -ECONNREFUSED:
        return EXIT_NOT_RUNNING;
    case -EACCES:
    case -EPERM:
        return EXIT_DENIED;
    case -EINVAL:
    case -E2BIG:
        return EXIT_BAD_REQUEST;
    case -EBUSY:
    case -EAGAIN:
        return EXIT_BUSY;
    case -ECANCELED:
        return EXIT_INTERRUPTED;
    default:
        return EXIT_ERROR;
    }
}

int moectl_fail(const moectl_t *m, moe_client *c, int err)
{
    const char *msg = c && moe_client_errmsg(c)[0] ? moe_client_errmsg(c) : strerror(-err);
    if (err == -ECANCELED)
        msg = "interrupted";
    fprintf(stderr, "%smoectl: %s%s\n", m->color_err ? RED : "", msg, m->color_err ? RESET : "");
    return moectl_exit_code(err);
}

/* ---- spinner ---- */

static void *spinner_main(void *arg)
{
    static const char *const frames[] = {"|", "/", "-", "\\"};
    spinner_t *s = arg;
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    bool drawn = false;
    pthread_mutex_lock(&s->lock);
    for (unsigned i = 0; !s->stop; i++) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        double t =
            (double)(now.tv_sec - start.tv_sec) + (double)(now.tv_nsec - start.tv_nsec) / 1e9;
        if (t >= 0.2) { /* nothing for a quick answer */
            fprintf(stderr, "\r%s%s %s %.1fs%s\033[K", s->color ? DIM : "", frames[i % 4], s->label,
                    t, s->color ? RESET : "");
            drawn = true;
        }
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 100 * 1000 * 1000;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&s->cond, &s->lock, &until);
    }
    if (drawn)
        fputs("\r\033[K", stderr);
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

void spinner_start(spinner_t *s, bool enabled, bool color, const char *label)
{
    memset(s, 0, sizeof(*s));
    if (!enabled)
        return;
    s->label = label;
    s->color = color;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    /* Ctrl-C belongs to the main thread (it interrupts the chat prompt's read). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    s->running = pthread_create(&s->thread, NULL, spinner_main, s) == 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!s->running) {
        pthread_cond_destroy(&s->cond);
        pthread_mutex_destroy(&s->lock);
    }
}

void spinner_stop(spinner_t *s)
{
    if (!s->running)
        return;
    pthread_mutex_lock(&s->lock);
    s->stop = true;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->thread, NULL);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->lock);
    s->running = false;
}

/* ---- streaming output ---- */

int moectl_print_piece(void *ud, const char *text, size_t len, unsigned flags)
{
    printer_t *p = ud;
    spinner_stop(&p->spin);
    bool thinking = flags & MOE_CLIENT_TOKEN_REASONING;
    if (thinking && !p->m->show_thinking)
        return 0;
    if (thinking != p->in_thinking) {
        if (p->m->color_out)
            fputs(thinking ? DIM : RESET, stdout);
        if (!thinking && p->printed && p->last != '\n')
            fputc('\n', stdout); /* the answer starts on its own line */
        p->in_thinking = thinking;
    }
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    p->printed = true;
    p->last = text[len - 1];
    return 0;
}

void moectl_printer_end(printer_t *p)
{
    spinner_stop(&p->spin);
    if (p->in_thinking && p->m->color_out)
        fputs(RESET, stdout);
    if (p->printed && p->last != '\n' && p->newline)
        fputc('\n', stdout);
    fflush(stdout);
    p->in_thinking = false;
}

static json_t *result_json(const moe_client_result *r)
{
    json_t *o = json_pack("{s:s#,s:s,s:s}", "text", r->text, r->text_len, "finish_reason",
                          r->finish_reason, "id", r->id);
    if (o && r->reasoning[0])
        json_object_set_new(o, "reasoning_content", json_stringn(r->reasoning, r->reasoning_len));
    if (o && r->completion_tokens >= 0)
        json_object_set_new(o, "usage",
                            json_pack("{s:I,s:I,s:I}", "prompt_tokens",
                                      (json_int_t)r->prompt_tokens, "completion_tokens",
                                      (json_int_t)r->completion_tokens, "total_tokens",
                                      (json_int_t)(r->prompt_tokens + r->completion_tokens)));
    return o;
}

static void print_json(json_t *o)
{
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    if (s)
        puts(s);
    free(s);
    json_decref(o);
    fflush(stdout);
}

/* Read all of stdin (at most MAX_INPUT bytes). */
static int read_stdin(char **ret)
{
    size_t len = 0, cap = 4096;
    char *s = malloc(cap);
    if (!s)
        return -ENOMEM;
    for (;;) {
        if (cap - len < 2) {
            char *t = cap < MAX_INPUT ? realloc(s, cap * 2) : NULL;
            if (!t) {
                free(s);
                return cap < MAX_INPUT ? -ENOMEM : -E2BIG;
            }
            s = t;
            cap *= 2;
        }
        size_t k = fread(s + len, 1, cap - len - 1, stdin);
        len += k;
        if (k == 0)
            break;
    }
    if (ferror(stdin)) {
        free(s);
        return -EIO;
    }
    s[len] = '\0';
    *ret = s;
    return 0;
}

/* ---- commands ---- */

static void sleep_s(double s)
{
    struct timespec ts = {.tv_sec = (time_t)s, .tv_nsec = (long)((s - floor(s)) * 1e9)};
    nanosleep(&ts, NULL); /* Ctrl-C cuts it short */
}

/* On a terminal, wait with a spinner while moed loads its model (/health answers 503);
 * elsewhere a loading daemon is an error for the caller to report. Returns 0 when the
 * daemon answers, the connect error when it cannot be reached. */
int moectl_wait_ready(const moectl_t *m, moe_client *c)
{
    int rc = moe_client_health(c, NULL);
    if (rc == -EAGAIN && m->tty_err) {
        spinner_t s;
        spinner_start(&s, true, m->color_err, "moed is loading the model");
        while (rc == -EAGAIN && !moectl_interrupted) {
            sleep_s(0.25);
            rc = moe_client_health(c, NULL);
        }
        spinner_stop(&s);
        if (moectl_interrupted)
            return -ECANCELED;
    }
    return rc == -ENOENT || rc == -ECONNREFUSED || rc == -EACCES || rc == -ECANCELED ? rc : 0;
}

static int cmd_generate(moectl_t *m, moe_client *c)
{
    char *input = NULL;
    const char *prompt = m->n_args > 0 ? m->args[0] : "-";
    if (m->n_args > 1) {
        fprintf(stderr, "moectl: generate takes one prompt (quote it, or use - for stdin)\n");
        return EXIT_USAGE;
    }
    if (strcmp(prompt, "-") == 0) {
        int rc = read_stdin(&input);
        if (rc < 0) {
            fprintf(stderr, "moectl: reading the prompt from stdin: %s\n", strerror(-rc));
            return EXIT_ERROR;
        }
        prompt = input;
    }
    moe_client_result r;
    int rc = moectl_wait_ready(m, c);
    if (rc < 0) {
        free(input);
        return moectl_fail(m, c, rc);
    }
    if (m->json) {
        rc = moe_client_complete(c, prompt, &m->params, NULL, NULL, &r);
    } else {
        printer_t p = {.m = m, .newline = isatty(STDOUT_FILENO)};
        spinner_start(&p.spin, m->tty_err, m->color_err, "waiting for the first token");
        rc = moe_client_complete(c, prompt, &m->params, moectl_print_piece, &p, &r);
        moectl_printer_end(&p);
    }
    free(input);
    if (rc < 0)
        return moectl_fail(m, c, rc);
    if (m->json)
        print_json(result_json(&r));
    moe_client_result_clear(&r);
    return EXIT_OK;
}

static int cmd_models(moectl_t *m, moe_client *c)
{
    char **ids;
    int rc = moe_client_models(c, &ids);
    if (rc < 0)
        return moectl_fail(m, c, rc);
    if (m->json) {
        json_t *a = json_array();
        for (char **s = ids; *s; s++)
            json_array_append_new(a, json_string(*s));
        print_json(json_pack("{s:o}", "models", a));
    } else {
        for (char **s = ids; *s; s++)
            puts(*s);
    }
    moe_client_strv_free(ids);
    return EXIT_OK;
}

/* The figures of `moectl status`. */
typedef struct status_sample {
    double t, completion, prompt, queue, active, connections, hits, misses, bytes, requests;
} status_sample_t;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double metric(const char *text, const char *name)
{
    double v;
    return moe_client_metrics_get(text, name, &v) == 0 ? v : NAN;
}

static int status_sample(moe_client *c, status_sample_t *ret)
{
    char *text;
    int rc = moe_client_metrics(c, &text);
    if (rc < 0)
        return rc;
    status_sample_t s = {.t = now_s()};
    s.completion = metric(text, "moed_tokens_total{kind=\"completion\"}");
    s.prompt = metric(text, "moed_tokens_total{kind=\"prompt\"}");
    s.queue = metric(text, "moed_queue_length");
    s.active = metric(text, "moed_active_sequences");
    s.connections = metric(text, "moed_connections");
    s.hits = metric(text, "moed_expert_cache_total{result=\"hit\"}");
    s.misses = metric(text, "moed_expert_cache_total{result=\"miss\"}");
    s.bytes = metric(text, "moed_streamed_bytes_total");
    s.requests = 0;
    static const char *const codes[] = {"2xx", "3xx", "4xx", "5xx"};
    for (int i = 0; i < 4; i++) {
        char name[64];
        snprintf(name, sizeof(name), "moed_requests_total{code=\"%s\"}", codes[i]);
        double v = metric(text, name);
        if (!isnan(v))
            s.requests += v;
    }
    free(text);
    *ret = s;
    return 0;
}

static json_t *num_or_null(double v)
{
    return isnan(v) ? json_null() : json_real(v);
}

static int status_show(moectl_t *m, moe_client *c, const status_sample_t *prev)
{
    char *health = NULL;
    int hrc = moe_client_health(c, &health);
    if (hrc < 0 && hrc != -EAGAIN)
        return hrc;
    json_t *h = health ? json_loads(health, 0, NULL) : NULL;
    free(health);
    status_sample_t s;
    int rc = status_sample(c, &s);
    if (rc < 0) {
        json_decref(h);
        return rc;
    }
    double toks = prev && s.t > prev->t ? (s.completion - prev->completion) / (s.t - prev->t) : NAN;
    double lookups = s.hits + s.misses;
    double hit_rate = lookups > 0 ? s.hits / lookups : NAN;
    const char *state =
        hrc == -EAGAIN ? "loading" : json_string_value(json_object_get(h, "status"));
    const char *model = json_string_value(json_object_get(h, "model"));
    const char *device = json_string_value(json_object_get(h, "device"));
    if (m->json) {
        json_t *o = json_pack("{s:s,s:s?,s:s?}", "status", state ? state : "unknown", "model",
                              model, "device", device);
        json_object_set_new(o, "tokens_per_s", num_or_null(toks));
        json_object_set_new(o, "cache_hit_rate", num_or_null(hit_rate));
        json_object_set_new(o, "streamed_bytes", num_or_null(s.bytes));
        json_object_set_new(o, "queue", num_or_null(s.queue));
        json_object_set_new(o, "active", num_or_null(s.active));
        json_object_set_new(o, "clients", num_or_null(s.connections));
        json_object_set_new(o, "requests", num_or_null(s.requests));
        json_object_set_new(o, "completion_tokens", num_or_null(s.completion));
        json_object_set_new(o, "prompt_tokens", num_or_null(s.prompt));
        print_json(o);
    } else {
        const char *b = m->color_out ? BOLD : "", *r = m->color_out ? RESET : "";
        const char *col = m->color_out ? (hrc == 0 ? GREEN : CYAN) : "";
        printf("%sstatus%s      %s%s%s\n", b, r, col, state ? state : "unknown", r);
        printf("%smodel%s       %s\n", b, r, model ? model : "-");
        printf("%sdevice%s      %s\n", b, r, device ? device : "-");
        if (isnan(toks))
            printf("%stokens/s%s    -\n", b, r);
        else
            printf("%stokens/s%s    %.1f\n", b, r, toks);
        if (isnan(hit_rate))
            printf("%scache hits%s  -\n", b, r);
        else
            printf("%scache hits%s  %.1f%% of %.0f look-ups\n", b, r, 100 * hit_rate, lookups);
        printf("%sstreamed%s    %.2f GB\n", b, r, isnan(s.bytes) ? 0 : s.bytes / 1e9);
        printf("%squeue%s       %.0f waiting, %.0f active\n", b, r, s.queue, s.active);
        printf("%sclients%s     %.0f connected, %.0f requests served\n", b, r, s.connections,
               s.requests);
        printf("%stokens%s      %.0f generated, %.0f prompt\n", b, r, s.completion, s.prompt);
    }
    fflush(stdout);
    json_decref(h);
    return hrc;
}

static int cmd_status(moectl_t *m, moe_client *c)
{
    status_sample_t prev;
    int rc = status_sample(c, &prev);
    if (rc < 0)
        return moectl_fail(m, c, rc);
    if (!m->watch) {
        sleep_s(0.5); /* two samples: a rate */
        if (moectl_interrupted)
            return EXIT_INTERRUPTED;
        rc = status_show(m, c, &prev);
        return rc < 0 ? moectl_fail(m, c, rc) : EXIT_OK;
    }
    while (!moectl_interrupted) {
        sleep_s(m->interval_s);
        if (moectl_interrupted)
            break;
        status_sample_t cur;
        if (status_sample(c, &cur) < 0)
            memset(&cur, 0, sizeof(cur));
        if (!m->json && isatty(STDOUT_FILENO))
            fputs("\033[H\033[2J", stdout);
        rc = status_show(m, c, &prev);
        if (rc < 0 && rc != -EAGAIN) {
            moectl_fail(m, c, rc);
            if (moectl_exit_code(rc) == EXIT_NOT_RUNNING)
                fputs("(still watching; Ctrl-C to stop)\n", stderr);
        }
        if (cur.t > 0)
            prev = cur;
    }
    return EXIT_OK;
}

/* ---- command line ---- */

static void usage(FILE *f)
{
    fputs("Usage: moectl [OPTIONS] COMMAND [ARGS]\n"
          "\n"
          "The command-line client of moed, the MoE LLM daemon.\n"
          "\n"
          "Commands:\n"
          "  generate [PROMPT|-]   complete PROMPT (or stdin), tokens printed as they arrive\n"
          "  chat                  an interactive chat: the conversation is kept; a line\n"
          "                        ending in \\ continues; Ctrl-C stops the answer, not the\n"
          "                        session; /reset, /system TEXT, /help, /exit\n"
          "  status                model, device, health, tokens/s, cache, queue, clients\n"
          "  models                the models served\n"
          "  bench                 N concurrent streaming clients: tokens/s, time to first\n"
          "                        token and inter-token latency percentiles\n"
          "\n"
          "Options:\n"
          "  -s, --socket PATH       moed's socket (default $MOED_SOCKET, "
          "else " MOE_CLIENT_DEFAULT_SOCKET ")\n"
          "  -j, --json              machine-readable output\n"
          "  -n, --max-tokens N      tokens to generate at most\n"
          "  -t, --temperature T     0 (greedy) to 2\n"
          "      --top-p P, --top-k K, --min-p P, --seed N\n"
          "      --stop TEXT         stop before TEXT (up to 4 times)\n"
          "      --system TEXT       chat: the system prompt\n"
          "      --show-thinking     show the model's thinking (dimmed on a terminal)\n"
          "  -w, --watch             status: refresh until Ctrl-C\n"
          "      --interval SECONDS  status --watch: refresh period (default 1)\n"
          "  -c, --clients N         bench: concurrent clients (default 4)\n"
          "  -r, --requests N        bench: requests per client (default 2)\n"
          "      --rounds N          bench: alternate the single and concurrent phases N\n"
          "                          times (1 to 20, default 1); ratio is the median\n"
          "      --no-color          no colours (also when NO_COLOR is set)\n"
          "  -h, --help, --version\n"
          "\n"
          "Exit status:\n"
          "  0    success\n"
          "  1    another error\n"
          "  2    usage error\n"
          "  3    moed is not running (no socket, or nobody listening on it)\n"
          "  4    permission denied (the socket, or moed's allow-list)\n"
          "  5    bad request (refused by moed as malformed, out of range or too big)\n"
          "  6    moed is busy (queue full) or not ready (loading, stopping)\n"
          "  130  interrupted (Ctrl-C)\n",
          f);
}

static int parse_int(const char *s, const char *what, long lo, long hi, long *ret)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "moectl: %s must be an integer in [%ld, %ld], not '%s'\n", what, lo, hi, s);
        return -EINVAL;
    }
    *ret = v;
    return 0;
}

static int parse_real(const char *s, const char *what, double lo, double hi, double *ret)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "moectl: %s must be a number in [%g, %g], not '%s'\n", what, lo, hi, s);
        return -EINVAL;
    }
    *ret = v;
    return 0;
}

enum {
    OPT_TOP_P = 256,
    OPT_TOP_K,
    OPT_MIN_P,
    OPT_SEED,
    OPT_STOP,
    OPT_SYSTEM,
    OPT_THINKING,
    OPT_INTERVAL,
    OPT_ROUNDS,
    OPT_NO_COLOR,
    OPT_VERSION,
};

static int parse_args(int argc, char **argv, moectl_t *m)
{
    static const struct option opts[] = {
        {"socket", required_argument, NULL, 's'},
        {"json", no_argument, NULL, 'j'},
        {"max-tokens", required_argument, NULL, 'n'},
        {"temperature", required_argument, NULL, 't'},
        {"top-p", required_argument, NULL, OPT_TOP_P},
        {"top-k", required_argument, NULL, OPT_TOP_K},
        {"min-p", required_argument, NULL, OPT_MIN_P},
        {"seed", required_argument, NULL, OPT_SEED},
        {"stop", required_argument, NULL, OPT_STOP},
        {"system", required_argument, NULL, OPT_SYSTEM},
        {"show-thinking", no_argument, NULL, OPT_THINKING},
        {"watch", no_argument, NULL, 'w'},
        {"interval", required_argument, NULL, OPT_INTERVAL},
        {"clients", required_argument, NULL, 'c'},
        {"requests", required_argument, NULL, 'r'},
        {"rounds", required_argument, NULL, OPT_ROUNDS},
        {"no-color", no_argument, NULL, OPT_NO_COLOR},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, OPT_VERSION},
        {0},
    };
    long v;
    int opt;
    bool no_color = getenv("NO_COLOR") && *getenv("NO_COLOR");
    while ((opt = getopt_long(argc, argv, "s:jn:t:wc:r:h", opts, NULL)) != -1) {
        int rc = 0;
        switch (opt) {
        case 's':
            m->socket = optarg;
            break;
        case 'j':
            m->json = true;
            break;
        case 'n':
            if ((rc = parse_int(optarg, "--max-tokens", 1, 1 << 20, &v)) == 0)
                m->params.max_tokens = (int)v;
            break;
        case 't':
            rc = parse_real(optarg, "--temperature", 0, 2, &m->params.temperature);
            break;
        case OPT_TOP_P:
            rc = parse_real(optarg, "--top-p", 0, 1, &m->params.top_p);
            break;
        case OPT_MIN_P:
            rc = parse_real(optarg, "--min-p", 0, 1, &m->params.min_p);
            break;
        case OPT_TOP_K:
            if ((rc = parse_int(optarg, "--top-k", 0, 1 << 20, &v)) == 0)
                m->params.top_k = (int)v;
            break;
        case OPT_SEED: {
            char *end;
            errno = 0;
            long long s = strtoll(optarg, &end, 10);
            if (errno || end == optarg || *end) {
                fprintf(stderr, "moectl: --seed must be an integer, not '%s'\n", optarg);
                rc = -EINVAL;
            } else {
                m->params.has_seed = 1;
                m->params.seed = s;
            }
            break;
        }
        case OPT_STOP:
            if (m->params.n_stop == MOECTL_MAX_STOP) {
                fprintf(stderr, "moectl: at most %d --stop\n", MOECTL_MAX_STOP);
                rc = -EINVAL;
            } else {
                m->stop[m->params.n_stop++] = optarg;
            }
            break;
        case OPT_SYSTEM:
            m->system_prompt = optarg;
            break;
        case OPT_THINKING:
            m->show_thinking = true;
            break;
        case 'w':
            m->watch = true;
            break;
        case OPT_INTERVAL:
            rc = parse_real(optarg, "--interval", 0.05, 3600, &m->interval_s);
            break;
        case 'c':
            if ((rc = parse_int(optarg, "--clients", 1, MOECTL_MAX_CLIENTS - 1, &v)) == 0)
                m->clients = (int)v;
            break;
        case 'r':
            if ((rc = parse_int(optarg, "--requests", 1, 100000, &v)) == 0)
                m->requests = (int)v;
            break;
        case OPT_ROUNDS:
            if ((rc = parse_int(optarg, "--rounds", 1, MOECTL_MAX_ROUNDS, &v)) == 0)
                m->rounds = (int)v;
            break;
        case OPT_NO_COLOR:
            no_color = true;
            break;
        case 'h':
            usage(stdout);
            return 1;
        case OPT_VERSION:
            puts("moectl " MOECTL_VERSION);
            return 1;
        default:
            return -EINVAL;
        }
        if (rc < 0)
            return rc;
    }
    m->params.stop = m->stop;
    m->color_out = !no_color && isatty(STDOUT_FILENO);
    m->color_err = !no_color && isatty(STDERR_FILENO);
    m->tty_err = isatty(STDERR_FILENO) && !m->json;
    m->args = argv + optind;
    m->n_args = argc - optind;
    return 0;
}

int main(int argc, char **argv)
{
    moectl_t m = {.interval_s = 1, .clients = 4, .requests = 2, .rounds = 1};
    moe_client_params_init(&m.params);
    int rc = parse_args(argc, argv, &m);
    if (rc != 0)
        return rc > 0 ? EXIT_OK : EXIT_USAGE;
    if (m.n_args < 1) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = m.args[0];
    m.args++;
    m.n_args--;

    struct sigaction sa = {.sa_handler = on_sigint}; /* no SA_RESTART: a read at the chat
                                                        prompt returns EINTR */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);

    if (strcmp(cmd, "bench") == 0)
        return moectl_bench(&m);
    int (*run)(moectl_t *, moe_client *) = NULL;
    if (strcmp(cmd, "generate") == 0 || strcmp(cmd, "gen") == 0)
        run = cmd_generate;
    else if (strcmp(cmd, "chat") == 0)
        run = moectl_chat;
    else if (strcmp(cmd, "status") == 0)
        run = cmd_status;
    else if (strcmp(cmd, "models") == 0)
        run = cmd_models;
    if (!run || (run != cmd_generate && m.n_args > 0)) {
        fprintf(stderr,
                run ? "moectl: %s takes no operands\n"
                    : "moectl: unknown command '%s' "
                      "(moectl --help lists them)\n",
                cmd);
        return EXIT_USAGE;
    }
    moe_client *c;
    if ((rc = moe_client_new(m.socket, &c)) < 0) {
        fprintf(stderr, "moectl: %s\n", strerror(-rc));
        return rc == -ENOMEM ? EXIT_ERROR : EXIT_USAGE;
    }
    moectl_cancel_target(0, c);
    int code = run(&m, c);
    moectl_cancel_target(0, NULL);
    moe_client_free(c);
    if (code == EXIT_OK && moectl_interrupted && run == cmd_generate)
        code = EXIT_INTERRUPTED;
    return code;
}
