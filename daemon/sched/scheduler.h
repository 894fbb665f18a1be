/* The scheduler: a bounded queue of generation requests, continuous batching of every
 * active sequence into each engine step, per-uid fairness, cancellation, and a per-request
 * event queue the HTTP thread reads. One engine thread owns the engine (and so the GPU);
 * HTTP threads only submit, read events and cancel.
 *
 * Request lifetime: sched_submit -> QUEUED -> (admitted) ACTIVE -> DONE | FAILED |
 * CANCELLED; the sched_req_t is shared by the HTTP thread and the engine thread and freed
 * when both have let go (sched_req_release from the HTTP side). */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "engine/engine.h"
#include "text/tokenizer.h"

#define SCHED_MAX_STOP 4
#define SCHED_MAX_TOP_LOGPROBS 20

typedef struct sched_params {
    uint32_t max_tokens;
    float temperature; /* 0 = greedy */
    float top_p;
    uint32_t top_k;
    float min_p;
    float presence_penalty;
    float frequency_penalty;
    float repetition_penalty;
    uint64_t seed;
    bool has_seed;
    const char *stop[SCHED_MAX_STOP]; /* copied at submit */
    size_t n_stop;
    bool logprobs;
    uint32_t top_logprobs;
    bool ignore_eos;
} sched_params_t;

enum sched_event_kind {
    SCHED_EV_TEXT,  /* text (complete UTF-8) of one or more tokens */
    SCHED_EV_DONE,  /* finished: finish reason and usage */
    SCHED_EV_ERROR, /* failed: errno and message; no more events */
};

enum sched_finish { SCHED_FINISH_STOP, SCHED_FINISH_LENGTH, SCHED_FINISH_CANCELLED };

typedef struct sched_logprob {
    int32_t id;
    float logprob;
} sched_logprob_t;

typedef struct sched_event {
    enum sched_event_kind kind;
    char *text; /* SCHED_EV_TEXT: owned by the event, freed by sched_event_clear */
    size_t len;
    int32_t token;   /* the token that produced the text (the last one when merged) */
    float logprob;   /* of token, when logprobs were asked */
    sched_logprob_t top[SCHED_MAX_TOP_LOGPROBS];
    uint32_t n_top;
    enum sched_finish finish;
    uint32_t prompt_tokens, completion_tokens;
    int error;       /* SCHED_EV_ERROR: -errno */
    char message[160];
} sched_event_t;

typedef struct sched_stats {
    uint64_t requests_done, requests_failed, requests_cancelled;
    uint64_t prompt_tokens, completion_tokens;
    uint32_t queued, active;
    /* The engine's figures as of its last step, taken by the engine thread (the engine is
     * not thread-safe, so other threads read them here). */
    engine_stats_t engine;
} sched_stats_t;

typedef struct sched sched_t;
typedef struct sched_req sched_req_t;

typedef struct sched_config {
    engine_t *engine;          /* owned by the caller; used only by the engine thread */
    const tokenizer_t *tok;    /* shared, immutable */
    uint32_t queue_max;        /* waiting requests; more get -EAGAIN */
    uint32_t parallel;         /* active sequences (<= engine->n_seq_max) */
    uint32_t prefill_chunk;    /* max prompt tokens of one sequence per step; 0: 64 */
    uint32_t max_batch;        /* entries per step at most (the engine's batch limit), at
                                * least parallel; 0: parallel * prefill_chunk */
    /* Called by the engine thread after each step that made progress (watchdog). */
    void (*progress)(void *userdata);
    void *userdata;
} sched_config_t;

int sched_new(const sched_config_t *cfg, sched_t **ret);
/* Graceful stop: refuses new requests (-ESHUTDOWN), lets running and queued ones finish for
 * up to deadline_ms, then ends the rest (cancelled / an error event) and stops the engine
 * thread. Every request gets its final event; HTTP threads may still read them. */
void sched_stop(sched_t *s, int deadline_ms);
/* Stops (deadline 0) and frees. Every request must have been released before. */
sched_t *sched_free(sched_t *s);

/* Queues a request for prompt ids (copied). -EAGAIN queue full, -E2BIG prompt + max_tokens
 * do not fit the context, -EINVAL bad token id, -ESHUTDOWN stopping. */
int sched_submit(sched_t *s, const int32_t *prompt, size_t n_prompt, const sched_params_t *p,
                 uid_t uid, sched_req_t **ret);
/* Waits up to timeout_ms for the next event: 1 with *ev filled, 0 on timeout. After DONE
 * or ERROR there are no more events. */
int sched_req_next(sched_req_t *r, sched_event_t *ev, int timeout_ms);
void sched_event_clear(sched_event_t *ev);
/* Asks the engine thread to end the request (client gone, timeout); idempotent. */
void sched_req_cancel(sched_req_t *r);
/* The HTTP side lets go; cancels the request if it is still running. */
void sched_req_release(sched_req_t *r);

void sched_get_stats(sched_t *s, sched_stats_t *ret);
