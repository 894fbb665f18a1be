/* moed: the daemon. main() is a thin wrapper around run(): settings (defaults, then
 * /etc/moed/moed.conf or --config, then flags), the model header (refused with its reason
 * before anything is served), the listening socket (from systemd socket activation, or bound
 * here: a live socket is never stolen, a stale one is replaced), the HTTP server, the engine
 * (Vulkan, or the CPU reference; its load progress goes to systemd as STATUS= lines), the
 * scheduler, readiness to systemd, and a signal loop (SIGTERM/SIGINT stop, SIGHUP reloads
 * what can change). MOED_TEST_FAULTS (fault.h, tests only) injects faults. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "api/api_server.h"
#include "engine/engine.h"
#include "fault.h"
#include "log.h"
#include "model/gguf.h"
#include "model/model.h"
#include "sched/scheduler.h"
#include "settings.h"
#include "text/chat.h"
#include "text/tokenizer.h"

#define DEFAULT_CONFIG "/etc/moed/moed.conf"
/* Entries of one engine step at most: every decoding sequence (parallel <= 256) and prompt
 * chunks up to this; the Vulkan engine sizes its activations for it. */
#define MOED_BATCH 256

static void usage(FILE *f)
{
    fprintf(f, "usage: moed [--config=FILE] [OPTIONS...]\n\n"
               "Serves a Mixture-of-Experts GGUF model over an OpenAI-compatible HTTP API on a "
               "Unix socket.\n\n"
               "  --config=FILE                config file (default " DEFAULT_CONFIG
               "; missing is fine)\n"
               "  --help                       this text\n"
               "  --version                    version\n"
               "  --print-config               print the effective settings and exit\n"
               "  --print-man                  print moed.conf(5) and exit\n\n"
               "Settings (also accepted in the config file as 'key = value'):\n");
    settings_print_help(f);
}

/* Binds path unless a live moed answers there. A socket file nobody listens on (connect
 * gives ECONNREFUSED) is stale and replaced. */
static int bind_socket(const settings_t *st, const log_ctx_t *log)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(st->socket) >= sizeof(sa.sun_path)) {
        log_err(log, "socket path too long: %s", st->socket);
        return -ENAMETOOLONG;
    }
    strcpy(sa.sun_path, st->socket);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
        log_err(log, "%s is served by another process; refusing to take it over", st->socket);
        close(fd);
        return -EADDRINUSE;
    }
    if (errno == ECONNREFUSED) {
        struct stat stt;
        if (lstat(st->socket, &stt) == 0 && S_ISSOCK(stt.st_mode)) {
            log_notice(log, "removing stale socket %s", st->socket);
            unlink(st->socket);
        }
    }
    close(fd);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    /* Bind with a umask that leaves the socket no wider than asked before the chmod. */
    mode_t old = umask(0177);
    int r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    umask(old);
    if (r < 0) {
        r = -errno;
        log_err(log, "bind %s: %s", st->socket, strerror(errno));
        close(fd);
        return r;
    }
    if (chmod(st->socket, st->socket_mode) < 0)
        log_warning(log, "chmod %s: %s (mode left at 0600)", st->socket, strerror(errno));
    if (st->socket_group[0]) {
        struct group *gr = getgrnam(st->socket_group);
        if (!gr || chown(st->socket, (uid_t)-1, gr->gr_gid) < 0)
            log_warning(log, "socket group '%s' not applied: %s", st->socket_group,
                        gr ? strerror(errno) : "no such group");
    }
    if (listen(fd, SOMAXCONN) < 0) {
        r = -errno;
        close(fd);
        unlink(st->socket);
        return r;
    }
    return fd;
}

/* The socket systemd passed (socket activation), or -ENOENT when none. */
static int activated_socket(const log_ctx_t *log)
{
    int n = sd_listen_fds(1);
    if (n <= 0)
        return -ENOENT;
    if (n > 1)
        log_warning(log, "systemd passed %d sockets; serving the first", n);
    int fd = SD_LISTEN_FDS_START;
    if (sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0) <= 0) {
        log_err(log, "the socket systemd passed is not a listening Unix stream socket");
        return -EINVAL;
    }
    return fd;
}

typedef struct daemon_ctx {
    sched_t *sched;
    engine_t *engine;
    engine_t *vk;                      /* the Vulkan engine (under any fault wrapper); NULL */
    _Atomic uint64_t vk_messages;      /* its validation messages, as of the last step */
    moed_fault_t *faults;              /* MOED_TEST_FAULTS; NULL normally */
    _Atomic uint64_t last_progress_us; /* CLOCK_MONOTONIC of the engine's last step */
    _Atomic int load_pct;              /* resident weights loaded, percent; -1 unknown */
    atomic_bool serving;               /* sched and engine are set (HTTP threads read them) */
} daemon_ctx_t;

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* While the weights load, systemd's start timeout is pushed back every few seconds, so a
 * large model is not killed mid-load (TimeoutStartSec stays a bound on a hung start only
 * while nothing is being loaded). */
typedef struct load_keepalive {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;
    const char *what;
    const _Atomic int *pct; /* load progress, -1 while unknown */
} load_keepalive_t;

static void *keepalive_loop(void *arg)
{
    load_keepalive_t *k = arg;
    pthread_mutex_lock(&k->lock);
    while (!k->done) {
        int pct = atomic_load(k->pct);
        if (pct >= 0)
            sd_notifyf(0, "EXTEND_TIMEOUT_USEC=%llu\nSTATUS=Loading: %d%%", 30ull * 1000000, pct);
        else
            sd_notifyf(0, "EXTEND_TIMEOUT_USEC=%llu\nSTATUS=Loading %s", 30ull * 1000000,
                       k->what);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 10;
        pthread_cond_timedwait(&k->cond, &k->lock, &ts);
    }
    pthread_mutex_unlock(&k->lock);
    return NULL;
}

static int keepalive_start(load_keepalive_t *k, const char *what, const _Atomic int *pct)
{
    *k = (load_keepalive_t){.what = what, .pct = pct};
    pthread_mutex_init(&k->lock, NULL);
    pthread_cond_init(&k->cond, NULL);
    return -pthread_create(&k->thread, NULL, keepalive_loop, k);
}

static void keepalive_stop(load_keepalive_t *k)
{
    pthread_mutex_lock(&k->lock);
    k->done = true;
    pthread_cond_signal(&k->cond);
    pthread_mutex_unlock(&k->lock);
    pthread_join(k->thread, NULL);
    pthread_cond_destroy(&k->cond);
    pthread_mutex_destroy(&k->lock);
}

/* Engine thread, after each step: the watchdog's evidence of progress. */
static void on_progress(void *userdata)
{
    daemon_ctx_t *d = userdata;
    atomic_store(&d->last_progress_us, now_us());
    /* the engine's own thread: the only one that may ask it */
    if (d->vk)
        atomic_store(&d->vk_messages, engine_vk_validation_messages(d->vk, NULL, 0));
}

/* Engine load progress (bytes of the resident weights): one STATUS= line per percent; the
 * keepalive repeats the latest with each timeout extension and /health reports it. */
static void on_load_progress(void *userdata, uint64_t done, uint64_t total)
{
    daemon_ctx_t *d = userdata;
    int pct = !total || done >= total ? 100 : (int)(done * 100 / total);
    if (atomic_exchange(&d->load_pct, pct) != pct)
        sd_notifyf(0, "STATUS=Loading: %d%%", pct);
}

/* MemAvailable in bytes, or 0 when /proc/meminfo cannot say. */
static uint64_t mem_available(void)
{
    FILE *f = fopen("/proc/meminfo", "re");
    if (!f)
        return 0;
    char line[256];
    unsigned long long kib = 0;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "MemAvailable: %llu kB", &kib) == 1)
            break;
    fclose(f);
    return (uint64_t)kib * 1024;
}

/* The host budget, checked before anything is allocated: a host tier larger than the memory
 * the machine has available would be allocated lazily and end, on first use, in the OOM
 * killer; refusing here gives the reason instead. */
static int check_host_budget(const settings_t *st, const log_ctx_t *log)
{
    uint64_t avail = mem_available();
    if (avail && st->host_cache > avail) {
        log_err(log, "host-cache = %" PRIu64 " MiB is more than the memory available "
                     "(%" PRIu64 " MiB); lower host-cache",
                st->host_cache >> 20, avail >> 20);
        return -ENOMEM;
    }
    return 0;
}

/* Builds the engine the settings ask for. The Vulkan engine gets every setting it has a
 * field for; when it runs out of device memory with an explicit gpu-cache (a smaller GPU
 * than the config was written for, another process holding memory) it is built once more
 * with the expert cache sized to what the device has left (as gpu-cache = 0 does), and the
 * log says so; if that fails too, the error is the one line moed exits with. */
static int engine_start(const settings_t *st, const model_t *m, daemon_ctx_t *d,
                        const log_ctx_t *log, engine_t **ret, char *err, size_t errlen)
{
    if (st->engine == SETTINGS_ENGINE_REFERENCE)
        return engine_ref_new(m, st->model, st->ctx, st->parallel, ret, err, errlen);
    engine_vk_config_t c = {
        .model = m,
        .path = st->model,
        .device = st->device,
        .cache_dir = st->cache_dir,
        /* "no" leaves it to MOE_VK_VALIDATION (the test suites turn it on there) */
        .validation = st->vk_validation ? 1 : -1,
        .device_limit = moed_fault_device_limit(d->faults),
        .n_ctx = st->ctx,
        .n_seq_max = st->parallel,
        .n_batch = MOED_BATCH,
        .gpu_cache_bytes = st->gpu_cache,
        .host_cache_bytes = st->host_cache,
        .policy = (int)st->cache_policy,
        .io_depth = st->io_depth,
        .io_backend = (int)st->io_backend,
        .io_buffered = !st->io_direct,
        .no_prefetch = !st->prefetch,
        .progress = on_load_progress,
        .progress_userdata = d,
        .io_wrapper = moed_fault_io_wrapper(d->faults),
    };
    int r = engine_vk_new(&c, ret, err, errlen);
    if (r != -ENOMEM || !st->gpu_cache)
        return r;
    log_warning(log, "the Vulkan engine does not fit on the device with gpu-cache = %" PRIu64
                     " MiB (%s); retrying with the expert cache sized to what fits",
                st->gpu_cache >> 20, err);
    c.gpu_cache_bytes = 0;
    atomic_store(&d->load_pct, -1);
    return engine_vk_new(&c, ret, err, errlen);
}

/* SIGHUP: re-reads the config file and applies what can change while running (log level,
 * allow-lists); everything else needs a restart and is said so. */
static void reload(const char *config, settings_t *cur, log_ctx_t *log, api_server_t *srv)
{
    settings_t nw;
    char err[512];
    uint64_t t = now_us();
    sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu", (unsigned long long)t);
    if (settings_init(&nw) < 0)
        goto done;
    int r = settings_load_file(&nw, config ? config : DEFAULT_CONFIG, err, sizeof(err));
    if (r < 0 && !(r == -ENOENT && !config)) {
        log_err(log, "reload refused, settings unchanged: %s", err);
        settings_clear(&nw);
        goto done;
    }
    r = api_server_set_allow(srv, nw.allow_users, nw.allow_groups, err, sizeof(err));
    if (r < 0) {
        log_err(log, "reload: %s; allow-lists unchanged", err);
    } else {
        free(cur->allow_users);
        free(cur->allow_groups);
        cur->allow_users = nw.allow_users;
        cur->allow_groups = nw.allow_groups;
        nw.allow_users = nw.allow_groups = NULL;
    }
    log->max_level = (int)nw.log_level;
    cur->log_level = nw.log_level;
    cur->log_prompts = nw.log_prompts;
    log_notice(log, "reloaded %s (log level, log-prompts, allow-lists; other settings need a "
                    "restart)", config ? config : DEFAULT_CONFIG);
    settings_clear(&nw);
done:
    sd_notify(0, "READY=1");
}

/* Waits for signals; once a second tells systemd how things stand (STATUS=) and, while the
 * engine is idle or has stepped within the watchdog interval, that it is alive. A wedged
 * engine (work waiting, no step) stops the pings, and systemd restarts us. */
static int main_loop(daemon_ctx_t *d, int sfd, settings_t *st, const char *config,
                     log_ctx_t *log, api_server_t *srv)
{
    uint64_t wd_usec = 0;
    bool wd = sd_watchdog_enabled(0, &wd_usec) > 0;
    uint64_t last_tokens = 0, last_t = now_us();
    for (;;) {
        struct pollfd pfd = {.fd = sfd, .events = POLLIN};
        int n = poll(&pfd, 1, wd ? (int)(wd_usec / 2000 < 1000 ? wd_usec / 2000 : 1000) : 1000);
        if (n < 0 && errno != EINTR)
            return -errno;
        if (n > 0) {
            struct signalfd_siginfo si;
            if (read(sfd, &si, sizeof(si)) != sizeof(si))
                continue;
            if (si.ssi_signo == SIGHUP) {
                reload(config, st, log, srv);
                continue;
            }
            log_notice(log, "signal %u: stopping", si.ssi_signo);
            return 0;
        }
        sched_stats_t ss;
        sched_get_stats(d->sched, &ss);
        uint64_t t = now_us();
        double tps = t > last_t ? (double)(ss.completion_tokens - last_tokens) * 1e6 /
                                      (double)(t - last_t)
                                : 0;
        last_tokens = ss.completion_tokens;
        last_t = t;
        const engine_stats_t es = ss.engine;
        uint64_t looks = es.expert_hits + es.expert_misses;
        sd_notifyf(0, "STATUS=%.1f tokens/s, %u active, %u queued, expert hit rate %.1f%%", tps,
                   ss.active, ss.queued, looks ? 100.0 * (double)es.expert_hits / (double)looks : 0);
        if (wd) {
            bool idle = !ss.active && !ss.queued;
            if (idle || t - atomic_load(&d->last_progress_us) < wd_usec)
                sd_notify(0, "WATCHDOG=1");
        }
    }
}

/* Scheduler and engine figures for /metrics (Prometheus text). */
static void metrics_extra(void *userdata, char *buf, size_t len)
{
    daemon_ctx_t *d = userdata;
    if (!atomic_load(&d->serving))
        return;
    sched_stats_t ss;
    sched_get_stats(d->sched, &ss);
    const engine_stats_t es = ss.engine;
    char acc[32] = "NaN"; /* Prometheus' "no value yet" */
    if (es.prefetch_accuracy >= 0)
        snprintf(acc, sizeof(acc), "%.4f", es.prefetch_accuracy);
    size_t o = 0;
#define PUT(...)                                                                           \
    do {                                                                                   \
        if (o < len)                                                                       \
            o += (size_t)snprintf(buf + o, len - o, __VA_ARGS__);                          \
    } while (0)
#define U(x) ((unsigned long long)(x))
    PUT("# HELP moed_queue_length Requests waiting for a sequence slot.\n"
        "# TYPE moed_queue_length gauge\nmoed_queue_length %u\n"
        "# HELP moed_active_sequences Sequences being decoded.\n"
        "# TYPE moed_active_sequences gauge\nmoed_active_sequences %u\n"
        "# HELP moed_generations_total Generation requests ended, by outcome.\n"
        "# TYPE moed_generations_total counter\n"
        "moed_generations_total{outcome=\"done\"} %llu\n"
        "moed_generations_total{outcome=\"cancelled\"} %llu\n"
        "moed_generations_total{outcome=\"failed\"} %llu\n"
        "# HELP moed_tokens_total Tokens processed, by kind.\n"
        "# TYPE moed_tokens_total counter\n"
        "moed_tokens_total{kind=\"prompt\"} %llu\n"
        "moed_tokens_total{kind=\"completion\"} %llu\n",
        ss.queued, ss.active, U(ss.requests_done), U(ss.requests_cancelled),
        U(ss.requests_failed), U(ss.prompt_tokens), U(ss.completion_tokens));
    PUT("# HELP moed_engine_steps_total Engine forward steps.\n"
        "# TYPE moed_engine_steps_total counter\nmoed_engine_steps_total %llu\n"
        "# HELP moed_expert_cache_total Expert look-ups of the GPU tier, by result.\n"
        "# TYPE moed_expert_cache_total counter\n"
        "moed_expert_cache_total{result=\"hit\"} %llu\n"
        "moed_expert_cache_total{result=\"miss\"} %llu\n"
        "# HELP moed_expert_host_hits_total GPU tier misses served from the host tier.\n"
        "# TYPE moed_expert_host_hits_total counter\nmoed_expert_host_hits_total %llu\n"
        "# HELP moed_streamed_bytes_total Expert bytes read from storage.\n"
        "# TYPE moed_streamed_bytes_total counter\nmoed_streamed_bytes_total %llu\n",
        U(es.steps), U(es.expert_hits), U(es.expert_misses), U(es.expert_host_hits),
        U(es.bytes_streamed));
    PUT("# HELP moed_prefetch_total Experts read ahead on a guess, and those then used.\n"
        "# TYPE moed_prefetch_total counter\n"
        "moed_prefetch_total{outcome=\"issued\"} %llu\n"
        "moed_prefetch_total{outcome=\"used\"} %llu\n"
        "# HELP moed_prefetch_accuracy Fraction of the next layer's guessed experts its router "
        "then chose (NaN: no guess yet).\n"
        "# TYPE moed_prefetch_accuracy gauge\nmoed_prefetch_accuracy %s\n"
        "# HELP moed_expert_waves_total Extra passes when a batch needed more experts than fit.\n"
        "# TYPE moed_expert_waves_total counter\nmoed_expert_waves_total %llu\n"
        "# HELP moed_expert_io_errors_total Expert reads that failed.\n"
        "# TYPE moed_expert_io_errors_total counter\nmoed_expert_io_errors_total %llu\n"
        "# HELP moed_expert_read_wait_seconds_total Time steps waited for expert reads.\n"
        "# TYPE moed_expert_read_wait_seconds_total counter\n"
        "moed_expert_read_wait_seconds_total %.6f\n"
        "# HELP moed_gpu_wait_seconds_total Time steps waited for the device.\n"
        "# TYPE moed_gpu_wait_seconds_total counter\nmoed_gpu_wait_seconds_total %.6f\n",
        U(es.prefetch_issued), U(es.prefetch_used), acc, U(es.waves), U(es.io_errors),
        (double)es.read_wait_ns / 1e9, (double)es.gpu_wait_ns / 1e9);
    if (d->vk)
        PUT("# HELP moed_vk_validation_messages_total Vulkan validation messages (only with "
            "validation on).\n# TYPE moed_vk_validation_messages_total counter\n"
            "moed_vk_validation_messages_total %llu\n",
            U(atomic_load(&d->vk_messages)));
    if (d->faults)
        PUT("# HELP moed_injected_faults_total Faults injected by MOED_TEST_FAULTS (tests).\n"
            "# TYPE moed_injected_faults_total counter\nmoed_injected_faults_total %llu\n",
            U(moed_fault_fired(d->faults)));
#undef U
#undef PUT
}

/* Copies s into a JSON string body (no quotes), escaping what JSON needs. */
static void json_text(char *dst, size_t size, const char *s)
{
    size_t o = 0;
    for (; *s && o + 7 < size; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            o += (size_t)snprintf(dst + o, size - o, "\\%c", ch);
        else if (ch < 0x20)
            o += (size_t)snprintf(dst + o, size - o, "\\u%04x", ch);
        else
            dst[o++] = (char)ch;
    }
    dst[o] = 0;
}

/* /health's members: while loading, how far; then the engine, the device and the state of
 * the expert cache, with the load. */
static void health_extra(void *userdata, char *buf, size_t len)
{
    daemon_ctx_t *d = userdata;
    if (!atomic_load(&d->serving)) {
        int pct = atomic_load(&d->load_pct);
        if (pct >= 0)
            snprintf(buf, len, "\"progress\":%d", pct);
        return;
    }
    sched_stats_t ss;
    sched_get_stats(d->sched, &ss);
    const engine_stats_t es = ss.engine;
    char dev[300];
    json_text(dev, sizeof(dev), d->engine->device);
    uint64_t looks = es.expert_hits + es.expert_misses;
    snprintf(buf, len,
             "\"engine\":\"%s\",\"device\":\"%s\",\"queued\":%u,\"active\":%u,"
             "\"expert_cache\":{\"hits\":%llu,\"misses\":%llu,\"host_hits\":%llu,"
             "\"hit_rate\":%.4f,\"bytes_streamed\":%llu,\"io_errors\":%llu}",
             d->vk ? "vulkan" : "reference", dev, ss.queued, ss.active,
             (unsigned long long)es.expert_hits, (unsigned long long)es.expert_misses,
             (unsigned long long)es.expert_host_hits,
             looks ? (double)es.expert_hits / (double)looks : 0.0,
             (unsigned long long)es.bytes_streamed, (unsigned long long)es.io_errors);
}

static int run(int argc, char **argv)
{
    settings_t st;
    log_ctx_t log;
    char err[512];
    const char *config = NULL;
    bool print_config = false;
    int r, listen_fd = -1, ret = 1;
    bool own_socket = false;
    gguf_t *g = NULL;
    model_t *m = NULL;
    api_server_t *srv = NULL;
    tokenizer_t *tok = NULL;
    engine_t *eng = NULL;
    sched_t *sched = NULL;
    daemon_ctx_t dctx = {.load_pct = -1};

    /* Signals are blocked before any thread starts, so every thread inherits the mask and
     * they arrive only through the signalfd of the main loop. */
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN); /* a client that vanishes mid-write is an EPIPE, not a death */

    r = settings_init(&st);
    if (r < 0)
        return 1;
    log_init(&log, SETTINGS_LOG_INFO);

    /* Options that are not settings are taken out first; the config file is read before
     * the remaining flags so flags win. */
    int na = 1;
    char **args = calloc((size_t)argc + 1, sizeof(char *));
    if (!args)
        goto out;
    args[0] = argv[0];
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            ret = 0;
            goto out;
        } else if (!strcmp(argv[i], "--version")) {
            printf("moed %s\n", MOED_VERSION);
            ret = 0;
            goto out;
        } else if (!strcmp(argv[i], "--print-man")) {
            settings_print_man(stdout);
            ret = 0;
            goto out;
        } else if (!strcmp(argv[i], "--print-config")) {
            print_config = true;
        } else if (!strncmp(argv[i], "--config=", 9)) {
            config = argv[i] + 9;
        } else if (!strcmp(argv[i], "--config") && i + 1 < argc) {
            config = argv[++i];
        } else {
            args[na++] = argv[i];
        }
    }
    r = settings_load_file(&st, config ? config : DEFAULT_CONFIG, err, sizeof(err));
    if (r < 0 && !(r == -ENOENT && !config)) {
        log_err(&log, "%s", err);
        goto out;
    }
    r = settings_parse_args(&st, na, args, err, sizeof(err));
    if (r < 0) {
        log_err(&log, "%s (see moed --help)", err);
        ret = 2;
        goto out;
    }
    if (r < na) {
        log_err(&log, "unexpected argument '%s' (see moed --help)", args[r]);
        ret = 2;
        goto out;
    }
    log.max_level = (int)st.log_level;
    if (print_config) {
        settings_dump(&st, stdout);
        ret = 0;
        goto out;
    }

    /* Tests only (fault.h); the environment is the service's, set by root. */
    const char *fspec = getenv(MOED_FAULT_ENV);
    if (fspec && *fspec) {
        r = moed_fault_new(fspec, &dctx.faults, err, sizeof(err));
        if (r < 0) {
            log_err(&log, "%s", err);
            goto out;
        }
        char what[256];
        moed_fault_describe(dctx.faults, what, sizeof(what));
        log_warning(&log, "%s is set: injecting faults for testing (%s)", MOED_FAULT_ENV, what);
    }
    if (check_host_budget(&st, &log) < 0)
        goto out;

    /* The model header is read before serving so a bad file is refused with its reason. */
    r = gguf_open(st.model, &g, err, sizeof(err));
    if (r < 0) {
        log_err(&log, "model %s refused: %s", st.model, err);
        goto out;
    }
    r = model_load(g, &m, err, sizeof(err));
    if (r < 0) {
        log_err(&log, "model %s refused: %s", st.model, err);
        goto out;
    }

    r = tokenizer_new(g, &tok, err, sizeof(err));
    if (r < 0) {
        log_err(&log, "model %s: tokenizer refused: %s", st.model, err);
        goto out;
    }

    /* Chat: the model's template family, or the forced one. Without one, chat requests
     * are refused with the reason; completions still work. */
    chat_template_t chat;
    char chat_err[256] = "";
    const char *tmpl = NULL;
    gguf_get_str(g, "tokenizer.chat_template", &tmpl);
    bool have_chat = chat_template_init(&chat, tmpl, st.chat_template, chat_err,
                                        sizeof(chat_err)) == 0;
    if (have_chat)
        log_info(&log, "chat template: %s", chat_family_name(chat.family));
    else
        log_warning(&log, "chat requests will be refused: %s", chat_err);

    listen_fd = activated_socket(&log);
    if (listen_fd == -ENOENT) {
        listen_fd = bind_socket(&st, &log);
        own_socket = listen_fd >= 0;
    }
    if (listen_fd < 0)
        goto out;

    struct stat mst;
    api_server_config_t cfg = {
        .settings = &st,
        .log = &log,
        .model_id = m->name,
        .model_created = stat(st.model, &mst) == 0 ? (int64_t)mst.st_mtime : 0,
        .gen = {.tok = tok, .chat = have_chat ? &chat : NULL, .chat_error = chat_err,
                .model_id = m->name, .max_tokens = st.max_tokens,
                .request_timeout_s = st.request_timeout},
        .ops = {.userdata = &dctx, .metrics = metrics_extra, .health = health_extra},
    };
    r = api_server_new(&cfg, listen_fd, &srv, err, sizeof(err));
    if (r < 0) {
        log_err(&log, "%s", err);
        goto out;
    }
    /* The server answers /health (503, loading) while the weights load. */
    load_keepalive_t ka;
    bool ka_on = keepalive_start(&ka, st.model, &dctx.load_pct) == 0;
    r = engine_start(&st, m, &dctx, &log, &eng, err, sizeof(err));
    if (ka_on)
        keepalive_stop(&ka);
    if (r < 0) {
        log_err(&log, "model %s: the %s engine failed to start: %s%s", st.model,
                st.engine == SETTINGS_ENGINE_VULKAN ? "Vulkan" : "reference", err,
                r == -ENODEV ? " (no Vulkan device; engine = reference runs on the CPU)" : "");
        goto out;
    }
    if (st.engine == SETTINGS_ENGINE_VULKAN) {
        dctx.vk = eng;
        char line[1536];
        if (engine_vk_describe(eng, line, sizeof(line)) > 0)
            log_notice(&log, "engine: Vulkan on %s", line);
    } else {
        log_notice(&log, "engine: the CPU reference (%s)", eng->device);
    }
    r = moed_fault_wrap_engine(dctx.faults, &eng);
    if (r < 0) {
        log_err(&log, "%s: %s", MOED_FAULT_ENV, strerror(-r));
        goto out;
    }
    moed_fault_arm(dctx.faults);
    sched_config_t sc = {
        .engine = eng, .tok = tok, .queue_max = st.queue, .parallel = st.parallel,
        .max_batch = MOED_BATCH, .progress = on_progress, .userdata = &dctx,
    };
    r = sched_new(&sc, &sched);
    if (r < 0) {
        log_err(&log, "scheduler: %s", strerror(-r));
        goto out;
    }
    dctx.engine = eng;
    dctx.sched = sched;
    atomic_store(&dctx.serving, true);
    api_server_set_generator(srv, sched);
    api_server_set_ready(srv, true);
    log_notice(&log, "serving %s (%s) on %s", m->name, model_arch_name(m->arch),
               own_socket ? st.socket : "the socket passed by systemd");
    sd_notifyf(0, "READY=1\nSTATUS=serving %s", m->name);

    int sfd = signalfd(-1, &mask, SFD_CLOEXEC);
    if (sfd < 0)
        goto out;
    r = main_loop(&dctx, sfd, &st, config, &log, srv);
    close(sfd);
    if (r < 0)
        goto out;
    sd_notify(0, "STOPPING=1");
    /* Graceful: no new requests, running ones get a few seconds to finish, then every
     * connection thread has its final event and the server can stop. */
    sched_stop(sched, 5000);
    if (api_server_drain(srv, 5000) < 0)
        log_warning(&log, "some clients did not read their last events in time");
    ret = 0;
out:
    if (sched)
        sched_stop(sched, 0);
    srv = api_server_free(srv);
    sched = sched_free(sched);
    if (dctx.vk) {
        /* validation is on in tests and when debugging: what it said is worth a line */
        char last[256];
        uint64_t nv = engine_vk_validation_messages(dctx.vk, last, sizeof(last));
        if (nv)
            log_warning(&log, "%llu Vulkan validation messages; the last: %s",
                        (unsigned long long)nv, last);
    }
    eng = engine_free(eng);
    tok = tokenizer_free(tok);
    if (listen_fd >= 0) {
        close(listen_fd);
        if (own_socket)
            unlink(st.socket);
    }
    model_free(m);
    gguf_free(g);
    moed_fault_free(dctx.faults);
    free(args);
    settings_clear(&st);
    return ret;
}

int main(int argc, char **argv)
{
    return run(argc, argv);
}
