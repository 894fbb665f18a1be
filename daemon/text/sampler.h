/* Sampling: the next token from the logits the engine returns, and the end-of-generation
 * rules (stop strings across token boundaries, stop token ids, max tokens).
 *
 * The chain is llama.cpp's default order (common/sampling.cpp): repetition / presence /
 * frequency penalties over the last N tokens -> top-k -> top-p -> min-p -> temperature ->
 * a draw from the remaining distribution with the sampler's own PRNG. Temperature <= 0 is
 * greedy (argmax after penalties). Same parameters, same seed, same logits: same tokens.
 * A sampler_t belongs to one sequence; nothing is allocated per token.
 *
 * Per generated token the text path is: sampler_sample -> detok_push (whole code points)
 * -> sampler_stop_push (ends on EOG ids, stop ids, stop strings, max tokens; holds back a
 * possible stop-string start) -> reasoning_feed (reasoning vs content) -> the client; at
 * the end detok_flush, sampler_stop_flush and reasoning_flush release what they hold. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SAMPLER_MAX_LOGPROBS 20

typedef struct sampler_params {
    float temperature;       /* <= 0: greedy */
    int32_t top_k;           /* <= 0: off */
    float top_p;             /* >= 1: off */
    float min_p;             /* <= 0: off */
    float repeat_penalty;    /* 1: off; > 1 discourages repeats (llama.cpp's rule) */
    float presence_penalty;  /* 0: off; OpenAI's: minus this once per seen token */
    float frequency_penalty; /* 0: off; OpenAI's: minus this per occurrence */
    int32_t penalty_last_n;  /* window of past tokens the penalties look at; 0: off */
    uint64_t seed;
    int32_t n_logprobs; /* -1: no logprobs at all (saves a pass over the vocabulary);
                         * 0: the chosen token's only; 1..SAMPLER_MAX_LOGPROBS: and that
                         * many alternatives */
} sampler_params_t;

/* Defaults: temperature 0.8, top_k 40, top_p 0.95, min_p 0.05, no penalties, window 64,
 * seed 0, n_logprobs -1 (llama.cpp's defaults). */
void sampler_params_default(sampler_params_t *p);
/* -EINVAL with a reason for values out of range (negative temperature is fine). */
int sampler_params_check(const sampler_params_t *p, char *err, size_t errlen);

typedef struct sampler_logprob {
    int32_t id;
    float logprob; /* natural log of the model's probability (softmax of the raw logits) */
} sampler_logprob_t;

typedef struct sampler_result {
    int32_t id;
    float logprob; /* of id under the raw logits: what the model thought, as OpenAI reports;
                    * NAN when n_logprobs is -1 */
    uint32_t n_top;
    sampler_logprob_t top[SAMPLER_MAX_LOGPROBS]; /* most likely first, raw logits */
} sampler_result_t;

typedef struct sampler sampler_t;

int sampler_new(const sampler_params_t *p, uint32_t n_vocab, sampler_t **ret);
sampler_t *sampler_free(sampler_t *s);

/* Samples from logits[n_vocab] (read only) and accepts the chosen id into the penalty
 * window. -EINVAL for a NaN logit everywhere (nothing to choose). */
int sampler_sample(sampler_t *s, const float *logits, sampler_result_t *ret);
/* Adds a token to the penalty window without sampling (the prompt's tokens). */
void sampler_accept(sampler_t *s, int32_t id);
/* Back to the state right after sampler_new (PRNG reseeded, window emptied). */
void sampler_reset(sampler_t *s);

/* ---- Stop conditions ----
 * Fed each generated token and the text it added (from a detok_t), it says whether the
 * generation ends and which text may be sent now: text that could be the start of a stop
 * string is held back until the next tokens show it is not one, and a stop string's text
 * (and anything after it) is never sent. */
typedef struct sampler_stop sampler_stop_t;

enum sampler_finish {
    SAMPLER_CONTINUE = 0,
    SAMPLER_STOP_STRING, /* finish_reason "stop" */
    SAMPLER_STOP_TOKEN,  /* a stop id or end-of-generation token: "stop" */
    SAMPLER_STOP_LENGTH, /* max_tokens reached: "length" */
};

/* strs: n_strs NUL-terminated stop strings (copied; empty ones ignored); ids: extra stop
 * ids (the tokenizer's EOG ids are the caller's to pass or check); max_tokens 0 = none. */
int sampler_stop_new(const char *const *strs, size_t n_strs, const int32_t *ids, size_t n_ids,
                     uint32_t max_tokens, sampler_stop_t **ret);
sampler_stop_t *sampler_stop_free(sampler_stop_t *s);
/* One generated token: is_eog says the tokenizer counts it as end of generation. Returns a
 * enum sampler_finish (>= 0) or -ENOMEM. *ret_text (len *ret_len) may be sent now; valid
 * until the next call. A stop token's own text is not sent. */
int sampler_stop_push(sampler_stop_t *s, int32_t id, bool is_eog, const char *text,
                      size_t len, const char **ret_text, size_t *ret_len);
/* The held text, when the generation ends for a reason the stop set did not see. */
int sampler_stop_flush(sampler_stop_t *s, const char **ret_text, size_t *ret_len);
uint32_t sampler_stop_n_tokens(const sampler_stop_t *s);
