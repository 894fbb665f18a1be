/* The CPU reference forward pass: one token at a time, float32 weights dequantized once at
 * load, a float KV cache, the exact semantics of llama.cpp for every architecture moed
 * supports. It is the oracle for the engine, and `moe run` runs on it until the engine
 * exists. Slow and simple on purpose: memory is the whole model in float32, so it is meant
 * for small (synthetic) models.
 *
 * Usage: ref_model_new (weights) -> ref_state_new (KV cache of n_ctx positions) ->
 * ref_forward per token, or ref_generate for a greedy decode. A model may be shared by
 * several states; a state is used by one thread at a time. Nothing here logs. */
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "model/model.h"

typedef struct ref_model ref_model_t;
typedef struct ref_state ref_state_t;

/* Reads every tensor that m describes from the GGUF file at path and dequantizes it to
 * float32. m (and its gguf_t) are borrowed and must outlive the result. -errno on failure
 * (-EIO short file, -ENOMEM, -EINVAL a tensor whose size or type does not add up), with a
 * one-line reason in err. */
int ref_model_new(const model_t *m, const char *path, ref_model_t **ret, char *err, size_t errlen);
ref_model_t *ref_model_free(ref_model_t *rm);
const model_t *ref_model_desc(const ref_model_t *rm);

/* Called once per layer and token with the routing decision: the k expert ids (best
 * first) and their final weights (after renormalization and scale). */
typedef void (*ref_route_fn)(void *userdata, uint32_t layer, int32_t pos, const int32_t *ids,
                             const float *weights, uint32_t k);

/* A sequence: the KV cache for n_ctx positions (float, [n_layer][n_ctx][n_head_kv][head_dim])
 * and the scratch buffers of one forward step. rm is borrowed. -EINVAL (n_ctx 0 or too
 * large to address), -ENOMEM. */
int ref_state_new(const ref_model_t *rm, uint32_t n_ctx, ref_state_t **ret);
ref_state_t *ref_state_free(ref_state_t *s);
/* Installs (or with fn NULL removes) the routing hook. */
void ref_state_set_route_hook(ref_state_t *s, ref_route_fn fn, void *userdata);

/* Runs token at position pos and writes logits[n_vocab]. Positions 0..pos-1 must have been
 * computed already; pos may go back (the sequence is then cut at pos, as if the later
 * tokens had never been seen). -EINVAL for a token out of the vocabulary, pos past what has
 * been computed, or pos >= n_ctx. */
int ref_forward(ref_state_t *s, int32_t token, int32_t pos, float *logits);

#define REF_TOPK 5

/* One generated position: the chosen id and the REF_TOPK highest logits (ties: lower id
 * first). */
typedef struct ref_step {
    int32_t id;
    int32_t top_id[REF_TOPK];
    float top_logit[REF_TOPK];
} ref_step_t;

/* The k largest of n values, descending, ties to the lower index (k <= n). */
void ref_top_k(const float *x, size_t n, size_t k, int32_t *ret_ids, float *ret_vals);

/* Greedy decode: feeds the n_prompt (>= 1) prompt ids at positions 0.., then n_gen times
 * takes the arg-max of the last logits as the next id (recorded in ret_steps[i]) and feeds
 * it. Needs n_ctx >= n_prompt + n_gen - 1. The state starts from position 0. */
int ref_generate(ref_state_t *s, const int32_t *prompt, size_t n_prompt, size_t n_gen,
                 ref_step_t *ret_steps);

/* Writes {"prompt_ids":[...],"steps":[{"id":ID,"top5":[[ID,LOGIT],...]},...]} and a
 * newline: the format of `moe run --json`. Logits use %.9g (round-trips float32); a
 * non-finite logit is written as null. Returns 0 or -EIO. */
int ref_json_write(FILE *f, const int32_t *prompt, size_t n_prompt, const ref_step_t *steps,
                   size_t n_steps);
