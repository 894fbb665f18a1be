/* Routing traces: which experts each layer of each decode step used, recorded by the
 * engine (through the cache, expert_cache_set_trace) and replayed by `moe bench cache` to
 * compare the cache's policies with Belady's clairvoyant optimum on the same trace.
 *
 * File format, version 1 (all integers little-endian):
 *
 *   offset  size  field
 *        0     8  magic "MOETRACE"
 *        8     4  version (1)
 *       12     4  header size in bytes (32)
 *       16     4  n_layer   (1..65535)
 *       20     4  n_expert  (1..65535)
 *       24     8  number of records, or UINT64_MAX when the writer never closed the file
 *       32        records, back to back, one per acquire (one layer of one step):
 *                   u32 step        non-decreasing through the file
 *                   u16 layer       < n_layer
 *                   u16 n           1..n_expert
 *                   u16 expert[n]   each < n_expert, distinct within the record
 *
 * A record is a batch: all of its experts are pinned together, as the engine pins the
 * top-k experts of one layer for one step. A top-8 record takes 24 bytes. The reader
 * refuses (-EBADMSG, with a reason) a bad magic or header, a field out of range, a record
 * cut short, and a record count that does not match; -ENOTSUP for another version. */
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "cache/expert_cache.h"

#define EXPERT_TRACE_VERSION        1u
#define EXPERT_TRACE_HEADER_BYTES   32u
#define EXPERT_TRACE_MAX_FILE_BYTES (1ull << 30) /* readers refuse bigger files */

/* A trace in memory; fields are read-only to callers. Batch b is layer[b] of step[b] and
 * uses ids[start[b] .. start[b + 1]). */
typedef struct {
    uint32_t n_layer, n_expert;
    size_t n_batch;
    size_t n_access;    /* = start[n_batch] */
    uint32_t max_batch; /* largest n of any batch */
    uint32_t *step;     /* [n_batch] */
    uint16_t *layer;    /* [n_batch] */
    size_t *start;      /* [n_batch + 1] */
    uint16_t *ids;      /* [n_access] */
    size_t cap_batch, cap_ids;
} expert_trace_t;

/* An empty trace. -EINVAL (sizes out of range), -ENOMEM. */
int expert_trace_new(uint32_t n_layer, uint32_t n_expert, expert_trace_t **ret);
expert_trace_t *expert_trace_free(expert_trace_t *t);

/* Appends one batch. -EINVAL (layer/id out of range, repeated id, n == 0, step going
 * back), -ENOMEM. */
int expert_trace_append(expert_trace_t *t, uint32_t step, uint32_t layer, const uint16_t *ids,
                        size_t n);

/* Parses a whole trace file held in buf[0..len). Errors as described at the top, with a
 * one-line reason in err. */
int expert_trace_parse(const void *buf, size_t len, expert_trace_t **ret, char *err, size_t errlen);
/* Reads and parses the file at path. -errno of the I/O, -EFBIG past
 * EXPERT_TRACE_MAX_FILE_BYTES, or expert_trace_parse's errors. */
int expert_trace_load(const char *path, expert_trace_t **ret, char *err, size_t errlen);
/* Writes t to path (created or truncated). -errno. */
int expert_trace_save(const expert_trace_t *t, const char *path);

/* Streaming writer for the engine: appends go through stdio's buffer (no allocation per
 * record); the record count is written at close. An append error is sticky and returned
 * again by close. */
int expert_trace_writer_open(const char *path, uint32_t n_layer, uint32_t n_expert,
                             expert_trace_writer_t **ret);
int expert_trace_writer_append(expert_trace_writer_t *w, uint32_t step, uint32_t layer,
                               const uint16_t *ids, size_t n);
/* Finishes the file and frees w (NULL is fine). 0 or the first error seen. */
int expert_trace_writer_close(expert_trace_writer_t *w);

/* Synthetic routing, until real traces exist. Per layer, a random permutation ranks the
 * experts by popularity and rank r is drawn with probability proportional to
 * 1 / (r + 1)^skew (Zipf). Each of the top_k picks of (step, layer) first, with
 * probability `reuse`, takes an expert the same layer used in the previous step (temporal
 * locality: consecutive tokens of one text route alike), else draws from the Zipf law;
 * repeats are redrawn. With probability `drift` per (step, layer), two random popularity
 * ranks swap (the topic moves). Deterministic for a given seed. */
typedef struct {
    uint32_t n_layer, n_expert, top_k, n_step;
    double skew;  /* >= 0; 0 = uniform */
    double reuse; /* 0..1 */
    double drift; /* 0..1 */
    uint64_t seed;
} expert_trace_synth_params_t;

int expert_trace_synth(const expert_trace_synth_params_t *p, expert_trace_t **ret);

/* Replays t through a fresh cache built from p (n_layer/n_expert taken from t): per batch
 * acquire, complete every load at once, release. ret gets the cache's summed stats.
 * -E2BIG when a batch is larger than p->gpu_slots, or expert_cache_new's errors. */
int expert_trace_replay(const expert_trace_t *t, const expert_cache_params_t *p,
                        expert_cache_stats_t *ret);

/* Hits of Belady's clairvoyant policy on t with gpu_slots slots, under the same pinning as
 * a replay: the experts of the current batch are never victims. O(n log n) in accesses.
 * -E2BIG when a batch is larger than gpu_slots, -EINVAL, -ENOMEM. */
int expert_trace_belady(const expert_trace_t *t, uint32_t gpu_slots, uint64_t *ret_hits);
