/* Continuous batching over the engine seam.
 *
 * Threads: HTTP threads call sched_submit / sched_req_next / sched_req_cancel /
 * sched_req_release; one engine thread runs engine_loop. s->lock guards the queues and every
 * request's state and event list; the engine and the per-sequence text state are touched
 * only by the engine thread, outside the lock, so a slow step never blocks an HTTP thread.
 *
 * Each turn the engine thread (1) admits waiting requests into free sequence slots, the
 * waiting request whose uid has the fewest active sequences first (ties: oldest), so one
 * client with many requests cannot starve the others; (2) builds one batch: every decoding
 * sequence contributes its last token, every prefilling sequence up to prefill_chunk prompt
 * tokens (logits only for the last prompt token), within max_batch entries; (3) runs
 * engine_step, and when it fails runs each of its sequences again alone, so an I/O error or
 * a full device ends only the requests that meet it (with the error) and the others go on;
 * (4) samples, detokenizes and checks stop conditions per sequence, posting events.
 *
 * Request states (s->lock): QUEUED -(admit)-> ACTIVE -(finish/fail/cancel)-> ENDED.
 * References: the HTTP side holds one until sched_req_release; the scheduler holds one while
 * the request is queued or active. The last one frees. */
#include "sched/scheduler.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "text/sampler.h"
#include "text/tokenizer.h"

enum req_state { REQ_QUEUED, REQ_ACTIVE, REQ_ENDED };

typedef struct ev_node {
    struct ev_node *next;
    sched_event_t ev;
} ev_node_t;

struct sched_req {
    sched_t *owner;         /* its lock guards this request */
    sched_req_t *next_wait; /* waiting queue link */
    enum req_state state;
    int refs;
    bool cancel;
    uid_t uid;
    uint64_t arrival;
    pthread_cond_t cond;    /* signalled when an event is posted */
    ev_node_t *ev_head, *ev_tail;
    /* engine-thread-only from here */
    int32_t *prompt;
    size_t n_prompt;
    sched_params_t p;
    char *stop_copy[SCHED_MAX_STOP];
    uint32_t seq;
    size_t fed;             /* prompt tokens fed */
    uint32_t generated;
    int32_t last;           /* last sampled token, fed next step */
    sampler_t *sampler;
    detok_t *detok;
    sampler_stop_t *stop;
};

/* One sequence's entries in the step and its logits row (-1: none this step). */
typedef struct batch_span {
    uint32_t first, n;
    int32_t row;
    int err;                /* after the step: 0, or why this sequence failed */
} batch_span_t;

struct sched {
    sched_config_t cfg;
    pthread_mutex_t lock;
    pthread_cond_t wake;    /* engine thread: work arrived or stopping */
    pthread_t thread;
    bool thread_started;
    bool stopping;          /* engine thread: end everything and exit */
    bool draining;          /* no new requests; running ones may finish */
    sched_req_t *wait_head, *wait_tail;
    uint32_t n_wait;
    sched_req_t **active;   /* [parallel] */
    uint32_t n_active;
    uint64_t arrivals;
    uint64_t admissions;
    struct { uid_t uid; uint64_t tick; } recent[64]; /* when each uid was last admitted */
    sched_stats_t stats;
    /* engine thread only */
    batch_span_t *span;     /* [parallel]: each active slot's part of the step */
    engine_entry_t *entries;
    float *logits;
    size_t max_entries;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- requests (s->lock held where noted) ---- */

static void req_free(sched_req_t *r)
{
    for (ev_node_t *n = r->ev_head, *nx; n; n = nx) {
        nx = n->next;
        sched_event_clear(&n->ev);
        free(n);
    }
    for (size_t i = 0; i < SCHED_MAX_STOP; i++)
        free(r->stop_copy[i]);
    sampler_free(r->sampler);
    detok_free(r->detok);
    sampler_stop_free(r->stop);
    pthread_cond_destroy(&r->cond);
    free(r->prompt);
    free(r);
}

/* lock held */
static void req_unref_locked(sched_req_t *r)
{
    if (--r->refs == 0)
        req_free(r);
}

/* lock held: appends a copy of ev (ownership of ev->text moves). */
static int post_locked(sched_req_t *r, sched_event_t *ev)
{
    ev_node_t *n = calloc(1, sizeof(*n));
    if (!n) {
        sched_event_clear(ev);
        return -ENOMEM;
    }
    n->ev = *ev;
    ev->text = NULL;
    if (r->ev_tail)
        r->ev_tail->next = n;
    else
        r->ev_head = n;
    r->ev_tail = n;
    pthread_cond_broadcast(&r->cond);
    return 0;
}

void sched_event_clear(sched_event_t *ev)
{
    free(ev->text);
    ev->text = NULL;
}

/* ---- engine thread ---- */

static void end_locked(sched_t *s, uint32_t slot, sched_event_t *final)
{
    sched_req_t *r = s->active[slot];
    engine_seq_free(s->cfg.engine, r->seq);
    r->state = REQ_ENDED;
    if (final->kind == SCHED_EV_ERROR)
        s->stats.requests_failed++;
    else if (final->finish == SCHED_FINISH_CANCELLED)
        s->stats.requests_cancelled++;
    else
        s->stats.requests_done++;
    post_locked(r, final);
    s->active[slot] = s->active[--s->n_active];
    s->active[s->n_active] = NULL;
    req_unref_locked(r);
}

static void fail_locked(sched_t *s, uint32_t slot, int err, const char *msg)
{
    sched_req_t *r = s->active[slot];
    sched_event_t ev = {.kind = SCHED_EV_ERROR, .error = err,
                        .prompt_tokens = (uint32_t)r->n_prompt,
                        .completion_tokens = r->generated}; /* for the request log */
    snprintf(ev.message, sizeof(ev.message), "%s", msg);
    end_locked(s, slot, &ev);
}

static void done_locked(sched_t *s, uint32_t slot, enum sched_finish why)
{
    sched_req_t *r = s->active[slot];
    sched_event_t ev = {
        .kind = SCHED_EV_DONE,
        .finish = why,
        .prompt_tokens = (uint32_t)r->n_prompt,
        .completion_tokens = r->generated,
    };
    end_locked(s, slot, &ev);
}

/* Sets up the per-sequence text state of a freshly admitted request (engine thread). */
static int req_start(sched_t *s, sched_req_t *r)
{
    sampler_params_t sp;
    sampler_params_default(&sp);
    sp.temperature = r->p.temperature;
    sp.top_k = (int32_t)r->p.top_k;
    sp.top_p = r->p.top_p;
    sp.min_p = r->p.min_p;
    sp.repeat_penalty = r->p.repetition_penalty;
    sp.presence_penalty = r->p.presence_penalty;
    sp.frequency_penalty = r->p.frequency_penalty;
    sp.seed = r->p.has_seed ? r->p.seed : now_ns();
    sp.n_logprobs = r->p.logprobs ? (int32_t)r->p.top_logprobs : -1;
    int rc = sampler_new(&sp, s->cfg.engine->n_vocab, &r->sampler);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < r->n_prompt; i++)
        sampler_accept(r->sampler, r->prompt[i]);
    rc = detok_new(s->cfg.tok, 0, &r->detok);
    if (rc < 0)
        return rc;
    return sampler_stop_new((const char *const *)r->stop_copy, r->p.n_stop, NULL, 0,
                            r->p.max_tokens, &r->stop);
}

static uint64_t last_admitted_locked(const sched_t *s, uid_t uid)
{
    for (size_t i = 0; i < sizeof(s->recent) / sizeof(s->recent[0]); i++)
        if (s->recent[i].tick && s->recent[i].uid == uid)
            return s->recent[i].tick;
    return 0;
}

static void note_admitted_locked(sched_t *s, uid_t uid)
{
    size_t n = sizeof(s->recent) / sizeof(s->recent[0]), oldest = 0;
    for (size_t i = 0; i < n; i++) {
        if (s->recent[i].tick && s->recent[i].uid == uid) {
            oldest = i;
            break;
        }
        if (s->recent[i].tick < s->recent[oldest].tick)
            oldest = i;
    }
    s->recent[oldest].uid = uid;
    s->recent[oldest].tick = ++s->admissions;
}

/* Admits waiting requests into free slots, fairly between uids: the uid with the fewest
 * active sequences first, then the uid admitted least recently (round robin), then the
 * oldest request. So a client with many queued requests cannot keep another waiting. */
static void admit_locked(sched_t *s)
{
    while (s->n_active < s->cfg.parallel && s->wait_head) {
        sched_req_t *best = NULL, *best_prev = NULL, *prev = NULL;
        uint32_t best_n = UINT32_MAX;
        uint64_t best_tick = UINT64_MAX;
        for (sched_req_t *r = s->wait_head; r; prev = r, r = r->next_wait) {
            uint32_t n = 0;
            for (uint32_t i = 0; i < s->n_active; i++)
                n += s->active[i]->uid == r->uid;
            uint64_t tick = last_admitted_locked(s, r->uid);
            /* strict comparisons: among equals the earlier (older) request stays */
            if (n < best_n || (n == best_n && tick < best_tick)) {
                best_n = n;
                best_tick = tick;
                best = r;
                best_prev = prev;
            }
        }
        note_admitted_locked(s, best->uid);
        if (best_prev)
            best_prev->next_wait = best->next_wait;
        else
            s->wait_head = best->next_wait;
        if (s->wait_tail == best)
            s->wait_tail = best_prev;
        best->next_wait = NULL;
        s->n_wait--;
        uint32_t slot = s->n_active++;
        s->active[slot] = best;
        best->state = REQ_ACTIVE;
        int rc = engine_seq_new(s->cfg.engine, &best->seq);
        if (rc == 0)
            rc = req_start(s, best);
        if (rc < 0)
            fail_locked(s, slot, rc == -ENOMEM ? -ENOMEM : -EIO,
                        "could not start the sequence");
    }
}

/* Posts text (copied) with the token's logprobs. lock held. */
static void post_text_locked(sched_req_t *r, const sampler_result_t *res, const char *txt,
                             size_t len)
{
    if (!len && !(res && r->p.logprobs))
        return;
    sched_event_t ev = {.kind = SCHED_EV_TEXT, .token = res ? res->id : -1};
    if (res && r->p.logprobs) {
        ev.logprob = res->logprob;
        ev.n_top = res->n_top < SCHED_MAX_TOP_LOGPROBS ? res->n_top : SCHED_MAX_TOP_LOGPROBS;
        for (uint32_t i = 0; i < ev.n_top; i++)
            ev.top[i] = (sched_logprob_t){res->top[i].id, res->top[i].logprob};
    }
    ev.text = malloc(len + 1);
    if (!ev.text)
        return;
    memcpy(ev.text, txt, len);
    ev.text[len] = 0;
    ev.len = len;
    post_locked(r, &ev);
}

/* One sampled token through the detokenizer and the stop set; posts the text that may be
 * sent. Returns the finish reason (SAMPLER_CONTINUE to go on). lock held. */
static int emit_token_locked(sched_t *s, sched_req_t *r, const sampler_result_t *res)
{
    const char *txt = NULL, *out = NULL;
    size_t len = 0, out_len = 0;
    if (detok_push(r->detok, res->id, &txt, &len) < 0)
        len = 0;
    bool eog = !r->p.ignore_eos && tokenizer_is_eog(s->cfg.tok, res->id);
    int fin = sampler_stop_push(r->stop, res->id, eog, txt, len, &out, &out_len);
    if (fin < 0)
        return SAMPLER_STOP_LENGTH;
    post_text_locked(r, res, out, out_len);
    if (fin == SAMPLER_STOP_LENGTH || fin == SAMPLER_CONTINUE) {
        /* Ending for length (or the context): what the stop set and the detokenizer still
         * hold is real output. */
        bool ctx_full = r->n_prompt + r->generated >= s->cfg.engine->n_ctx;
        if (fin == SAMPLER_CONTINUE && !ctx_full)
            return SAMPLER_CONTINUE;
        /* Held-back text comes first, then the detokenizer's incomplete tail. */
        if (sampler_stop_flush(r->stop, &out, &out_len) == 0)
            post_text_locked(r, NULL, out, out_len);
        if (detok_flush(r->detok, &txt, &len) == 0)
            post_text_locked(r, NULL, txt, len);
        return SAMPLER_STOP_LENGTH;
    }
    return fin;
}

/* Builds the step's batch (lock held): one decode entry per decoding sequence, then prompt
 * chunks of the prefilling ones within what is left of max_batch. Each slot's entries are
 * contiguous (span) so a failed step can be rerun one sequence at a time. Returns the
 * number of entries. */
static size_t batch_build_locked(sched_t *s)
{
    size_t n = 0;
    uint32_t rows = 0, decoding = 0;
    for (uint32_t i = 0; i < s->n_active; i++)
        decoding += s->active[i]->fed == s->active[i]->n_prompt;
    size_t prefill_left = s->max_entries - decoding;
    for (uint32_t i = 0; i < s->n_active; i++) {
        sched_req_t *r = s->active[i];
        batch_span_t *sp = &s->span[i];
        *sp = (batch_span_t){.first = (uint32_t)n, .row = -1};
        if (r->fed < r->n_prompt) {
            size_t take = r->n_prompt - r->fed;
            if (take > s->cfg.prefill_chunk)
                take = s->cfg.prefill_chunk;
            if (take > prefill_left)
                take = prefill_left;
            prefill_left -= take;
            for (size_t k = 0; k < take; k++, n++) {
                s->entries[n] = (engine_entry_t){.seq = r->seq,
                                                 .token = r->prompt[r->fed + k],
                                                 .pos = (uint32_t)(r->fed + k),
                                                 .logits = r->fed + k + 1 == r->n_prompt};
            }
            r->fed += take;
            if (take && r->fed == r->n_prompt)
                sp->row = (int32_t)rows++;
        } else {
            s->entries[n++] = (engine_entry_t){.seq = r->seq,
                                               .token = r->last,
                                               .pos = (uint32_t)(r->n_prompt + r->generated - 1),
                                               .logits = true};
            sp->row = (int32_t)rows++;
        }
        sp->n = (uint32_t)(n - sp->first);
    }
    return n;
}

/* The step failed: which of its sequences did? Each is run again alone (its positions
 * again: an engine cuts a sequence fed a position it already has), so a read error or a
 * full device fails the requests that meet it and the others go on. A step of one sequence
 * has nothing to separate. Engine thread, lock not held. */
static void batch_isolate(sched_t *s, uint32_t n_active, int rc)
{
    engine_t *e = s->cfg.engine;
    uint32_t in_step = 0;
    for (uint32_t i = 0; i < n_active; i++)
        in_step += s->span[i].n > 0;
    for (uint32_t i = 0; i < n_active; i++) {
        batch_span_t *sp = &s->span[i];
        if (!sp->n)
            continue;
        if (in_step == 1) {
            sp->err = rc;
            continue;
        }
        float *lg = s->logits + (size_t)(sp->row >= 0 ? sp->row : 0) * e->n_vocab;
        sp->err = engine_step(e, s->entries + sp->first, sp->n, lg);
    }
}

static const char *step_error_message(int err)
{
    switch (err) {
    case -ENOMEM: return "out of memory during the forward pass";
    case -EIO: return "the forward pass failed: an expert read or the device failed";
    case -ENODATA: return "the forward pass failed: the model file is shorter than it was";
    default: return "the forward pass failed";
    }
}

static void engine_turn(sched_t *s)
{
    engine_t *e = s->cfg.engine;

    pthread_mutex_lock(&s->lock);
    admit_locked(s);
    for (uint32_t i = 0; i < s->n_active;) {
        sched_req_t *r = s->active[i];
        if (r->cancel) {
            done_locked(s, i, SCHED_FINISH_CANCELLED);
            continue;
        }
        i++;
    }
    size_t n = batch_build_locked(s);
    /* Only this thread changes `active`; HTTP threads set flags and queue. */
    uint32_t n_active = s->n_active;
    pthread_mutex_unlock(&s->lock);
    if (!n)
        return;

    for (uint32_t i = 0; i < n_active; i++)
        s->span[i].err = 0;
    int rc = engine_step(e, s->entries, n, s->logits);
    if (rc < 0)
        batch_isolate(s, n_active, rc);
    engine_stats_t es;
    engine_stats(e, &es);

    pthread_mutex_lock(&s->lock);
    s->stats.engine = es;
    /* Back to front: ending a slot moves the last one into it, which is already done. */
    for (uint32_t slot = n_active; slot-- > 0;) {
        batch_span_t *sp = &s->span[slot];
        sched_req_t *r = s->active[slot];
        if (sp->err < 0) {
            fail_locked(s, slot, sp->err, step_error_message(sp->err));
            continue;
        }
        if (sp->row < 0)
            continue;
        const float *lg = s->logits + (size_t)sp->row * e->n_vocab;
        sampler_result_t res;
        if (sampler_sample(r->sampler, lg, &res) < 0) {
            fail_locked(s, slot, -EIO, "the model produced no usable logits (NaN)");
            continue;
        }
        r->generated++;
        r->last = res.id;
        s->stats.completion_tokens++;
        int fin = emit_token_locked(s, r, &res);
        if (fin != SAMPLER_CONTINUE)
            done_locked(s, slot, fin == SAMPLER_STOP_LENGTH ? SCHED_FINISH_LENGTH
                                                            : SCHED_FINISH_STOP);
    }
    pthread_mutex_unlock(&s->lock);
    if (s->cfg.progress)
        s->cfg.progress(s->cfg.userdata);
}

static void *engine_loop(void *arg)
{
    sched_t *s = arg;
    pthread_mutex_lock(&s->lock);
    while (!s->stopping) {
        if (!s->n_active && !s->wait_head) {
            pthread_cond_wait(&s->wake, &s->lock);
            continue;
        }
        pthread_mutex_unlock(&s->lock);
        engine_turn(s);
        pthread_mutex_lock(&s->lock);
    }
    /* Stopping: end everything still running or queued. */
    while (s->n_active)
        done_locked(s, 0, SCHED_FINISH_CANCELLED);
    while (s->wait_head) {
        sched_req_t *r = s->wait_head;
        s->wait_head = r->next_wait;
        r->state = REQ_ENDED;
        sched_event_t ev = {.kind = SCHED_EV_ERROR, .error = -ESHUTDOWN};
        snprintf(ev.message, sizeof(ev.message), "moed is shutting down");
        post_locked(r, &ev);
        req_unref_locked(r);
    }
    s->wait_tail = NULL;
    s->n_wait = 0;
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* ---- public ---- */

int sched_new(const sched_config_t *cfg, sched_t **ret)
{
    if (!cfg->engine || !cfg->tok || !cfg->parallel || cfg->parallel > cfg->engine->n_seq_max ||
        !cfg->queue_max || cfg->parallel > 256 ||
        (cfg->max_batch && cfg->max_batch < cfg->parallel))
        return -EINVAL;
    sched_t *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->cfg = *cfg;
    if (!s->cfg.prefill_chunk)
        s->cfg.prefill_chunk = 64;
    s->max_entries = s->cfg.max_batch ? s->cfg.max_batch
                                      : (size_t)cfg->parallel * s->cfg.prefill_chunk;
    s->active = calloc(cfg->parallel, sizeof(*s->active));
    s->span = calloc(cfg->parallel, sizeof(*s->span));
    s->entries = calloc(s->max_entries, sizeof(*s->entries));
    s->logits = malloc((size_t)cfg->parallel * cfg->engine->n_vocab * sizeof(float));
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->wake, NULL);
    engine_stats(cfg->engine, &s->stats.engine); /* before the engine thread exists */
    if (!s->active || !s->span || !s->entries || !s->logits ||
        pthread_create(&s->thread, NULL, engine_loop, s) != 0) {
        sched_free(s);
        return -ENOMEM;
    }
    s->thread_started = true;
    *ret = s;
    return 0;
}

void sched_stop(sched_t *s, int deadline_ms)
{
    uint64_t end = now_ns() + (uint64_t)(deadline_ms > 0 ? deadline_ms : 0) * 1000000ull;
    pthread_mutex_lock(&s->lock);
    s->draining = true;
    while ((s->n_active || s->wait_head) && now_ns() < end && s->thread_started) {
        pthread_mutex_unlock(&s->lock);
        struct timespec ts = {0, 20 * 1000000};
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&s->lock);
    }
    s->stopping = true;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->lock);
    if (s->thread_started) {
        pthread_join(s->thread, NULL);
        s->thread_started = false;
    }
}

sched_t *sched_free(sched_t *s)
{
    if (!s)
        return NULL;
    sched_stop(s, 0);
    pthread_cond_destroy(&s->wake);
    pthread_mutex_destroy(&s->lock);
    free(s->logits);
    free(s->entries);
    free(s->span);
    free(s->active);
    free(s);
    return NULL;
}

int sched_submit(sched_t *s, const int32_t *prompt, size_t n_prompt, const sched_params_t *p,
                 uid_t uid, sched_req_t **ret)
{
    engine_t *e = s->cfg.engine;
    if (n_prompt == 0)
        return -EINVAL;
    for (size_t i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || (uint32_t)prompt[i] >= e->n_vocab)
            return -EINVAL;
    if (n_prompt >= e->n_ctx)
        return -E2BIG;
    sched_req_t *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    r->p = *p;
    r->p.n_stop = p->n_stop > SCHED_MAX_STOP ? SCHED_MAX_STOP : p->n_stop;
    if (r->p.top_logprobs > SCHED_MAX_TOP_LOGPROBS)
        r->p.top_logprobs = SCHED_MAX_TOP_LOGPROBS;
    for (size_t i = 0; i < r->p.n_stop; i++) {
        r->stop_copy[i] = strdup(p->stop[i]);
        if (!r->stop_copy[i]) {
            req_free(r);
            return -ENOMEM;
        }
        r->p.stop[i] = r->stop_copy[i];
    }
    r->prompt = malloc(n_prompt * sizeof(*prompt));
    if (!r->prompt) {
        req_free(r);
        return -ENOMEM;
    }
    memcpy(r->prompt, prompt, n_prompt * sizeof(*prompt));
    r->n_prompt = n_prompt;
    r->uid = uid;
    r->seq = UINT32_MAX;
    r->owner = s;
    r->refs = 2; /* the caller's and the scheduler's */
    pthread_cond_init(&r->cond, NULL);

    pthread_mutex_lock(&s->lock);
    if (s->stopping || s->draining) {
        pthread_mutex_unlock(&s->lock);
        req_free(r);
        return -ESHUTDOWN;
    }
    if (s->n_wait >= s->cfg.queue_max) {
        pthread_mutex_unlock(&s->lock);
        req_free(r);
        return -EAGAIN;
    }
    r->arrival = s->arrivals++;
    if (s->wait_tail)
        s->wait_tail->next_wait = r;
    else
        s->wait_head = r;
    s->wait_tail = r;
    s->n_wait++;
    s->stats.prompt_tokens += n_prompt;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->lock);
    *ret = r;
    return 0;
}

int sched_req_next(sched_req_t *r, sched_event_t *ev, int timeout_ms)
{
    sched_t *s = r->owner;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ns = (uint64_t)ts.tv_nsec + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000000ull;
    ts.tv_sec += (time_t)(ns / 1000000000ull);
    ts.tv_nsec = (long)(ns % 1000000000ull);
    pthread_mutex_lock(&s->lock);
    while (!r->ev_head) {
        if (timeout_ms <= 0 || pthread_cond_timedwait(&r->cond, &s->lock, &ts) == ETIMEDOUT) {
            if (r->ev_head)
                break;
            pthread_mutex_unlock(&s->lock);
            return 0;
        }
    }
    ev_node_t *n = r->ev_head;
    r->ev_head = n->next;
    if (!r->ev_head)
        r->ev_tail = NULL;
    pthread_mutex_unlock(&s->lock);
    *ev = n->ev;
    free(n);
    return 1;
}

void sched_req_cancel(sched_req_t *r)
{
    sched_t *s = r->owner;
    pthread_mutex_lock(&s->lock);
    if (r->state == REQ_QUEUED && !r->cancel) {
        /* Never admitted: take it out of the queue and end it here. */
        sched_req_t **pp = &s->wait_head, *prev = NULL;
        while (*pp && *pp != r) {
            prev = *pp;
            pp = &(*pp)->next_wait;
        }
        if (*pp) {
            *pp = r->next_wait;
            if (s->wait_tail == r)
                s->wait_tail = prev;
            s->n_wait--;
            r->state = REQ_ENDED;
            s->stats.requests_cancelled++;
            sched_event_t ev = {.kind = SCHED_EV_DONE, .finish = SCHED_FINISH_CANCELLED,
                                .prompt_tokens = (uint32_t)r->n_prompt};
            post_locked(r, &ev);
            r->cancel = true;
            req_unref_locked(r);
            pthread_mutex_unlock(&s->lock);
            return;
        }
    }
    r->cancel = true;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->lock);
}

void sched_req_release(sched_req_t *r)
{
    if (!r)
        return;
    sched_t *s = r->owner;
    sched_req_cancel(r);
    pthread_mutex_lock(&s->lock);
    req_unref_locked(r);
    pthread_mutex_unlock(&s->lock);
}

void sched_get_stats(sched_t *s, sched_stats_t *ret)
{
    pthread_mutex_lock(&s->lock);
    *ret = s->stats;
    ret->queued = s->n_wait;
    ret->active = s->n_active;
    pthread_mutex_unlock(&s->lock);
}
