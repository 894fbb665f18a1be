/* tests/text: sampler statistics and stop conditions. Distributions are checked over many
 * seeded draws: truncation (top-k, top-p, min-p) must never let a token outside its set
 * through, the inside of the set must still be sampled in proportion, temperature 0 must be
 * argmax, and equal seeds must give equal streams. Stop strings are fed cut across tokens. */
#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "test_text.h"
#include "text/sampler.h"

/* Deterministic logits for tests (not the sampler's PRNG). */
static void fill_logits(float *l, uint32_t n, uint64_t seed)
{
    for (uint32_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        l[i] = (float)((double)(seed >> 11) * 0x1.0p-53 * 20.0 - 10.0);
    }
}

static sampler_params_t plain(float temp)
{
    sampler_params_t p;
    sampler_params_default(&p);
    p.temperature = temp;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.seed = 1234;
    return p;
}

START_TEST(temperature_zero_is_argmax)
{
    enum { N = 5000 };
    float *l = malloc(N * sizeof(float));
    sampler_params_t p = plain(0.0f);
    p.top_k = 3; /* truncation does not matter for greedy */
    sampler_t *s;
    ck_assert_int_eq(sampler_new(&p, N, &s), 0);
    for (int t = 0; t < 200; t++) {
        fill_logits(l, N, (uint64_t)t + 1);
        uint32_t best = 0;
        for (uint32_t i = 1; i < N; i++)
            if (l[i] > l[best])
                best = i;
        sampler_result_t r;
        ck_assert_int_eq(sampler_sample(s, l, &r), 0);
        ck_assert_int_eq(r.id, (int32_t)best);
    }
    sampler_free(s);
    free(l);
}
END_TEST

START_TEST(top_k_never_leaves_the_k_best)
{
    enum { N = 1000, K = 5, DRAWS = 10000 };
    float l[N];
    fill_logits(l, N, 99);
    /* flatten the distribution so that, without top-k, other tokens would show up */
    for (int i = 0; i < N; i++)
        l[i] *= 0.05f;
    int order[N];
    for (int i = 0; i < N; i++)
        order[i] = i;
    for (int i = 0; i < K; i++) /* partial selection sort: the K best first */
        for (int j = i + 1; j < N; j++)
            if (l[order[j]] > l[order[i]]) {
                int t = order[i];
                order[i] = order[j];
                order[j] = t;
            }
    sampler_params_t p = plain(1.5f);
    p.top_k = K;
    sampler_t *s;
    ck_assert_int_eq(sampler_new(&p, N, &s), 0);
    int hits[K] = {0};
    for (int d = 0; d < DRAWS; d++) {
        sampler_result_t r;
        ck_assert_int_eq(sampler_sample(s, l, &r), 0);
        int k = 0;
        while (k < K && order[k] != r.id)
            k++;
        ck_assert_msg(k < K, "draw %d: id %d is not among the %d best", d, r.id, K);
        hits[k]++;
    }
    for (int k = 0; k < K; k++)
        ck_assert_int_gt(hits[k], DRAWS / K / 3); /* all of them do get sampled */
    sampler_free(s);
}
END_TEST

/* logits whose softmax is exactly probs[] */
static void logits_of(const double *probs, int n, float *l)
{
    for (int i = 0; i < n; i++)
        l[i] = (float)log(probs[i]);
}

START_TEST(top_p_and_min_p_respected_and_proportional)
{
    static const double probs[] = {0.5, 0.3, 0.1, 0.05, 0.03, 0.02};
    float l[6];
    logits_of(probs, 6, l);
    enum { DRAWS = 40000 };
    /* top-p 0.75: {0, 1} (0.5 < 0.75 <= 0.8); renormalised 5/8, 3/8 */
    sampler_params_t p = plain(1.0f);
    p.top_p = 0.75f;
    sampler_t *s;
    ck_assert_int_eq(sampler_new(&p, 6, &s), 0);
    int hits[6] = {0};
    for (int d = 0; d < DRAWS; d++) {
        sampler_result_t r;
        ck_assert_int_eq(sampler_sample(s, l, &r), 0);
        hits[r.id]++;
    }
    ck_assert_int_eq(hits[2] + hits[3] + hits[4] + hits[5], 0);
    ck_assert_double_eq_tol((double)hits[0] / DRAWS, 5.0 / 8, 0.015);
    sampler_free(s);

    /* min-p 0.15: p >= 0.075 -> {0, 1, 2}; 5/9, 3/9, 1/9 */
    p = plain(1.0f);
    p.min_p = 0.15f;
    ck_assert_int_eq(sampler_new(&p, 6, &s), 0);
    memset(hits, 0, sizeof(hits));
    for (int d = 0; d < DRAWS; d++) {
        sampler_result_t r;
        ck_assert_int_eq(sampler_sample(s, l, &r), 0);
        hits[r.id]++;
    }
    ck_assert_int_eq(hits[3] + hits[4] + hits[5], 0);
    ck_assert_double_eq_tol((double)hits[0] / DRAWS, 5.0 / 9, 0.015);
    ck_assert_double_eq_tol((double)hits[2] / DRAWS, 1.0 / 9, 0.01);
    sampler_free(s);

    /* no truncation, temperature 1: the model's own distribution */
    p = plain(1.0f);
    ck_assert_int_eq(sampler_new(&p, 6, &s), 0);
    memset(hits, 0, sizeof(hits));
    for (int d = 0; d < DRAWS; d++) {
        sampler_result_t r;
        ck_assert_int_eq(sampler_sample(s, l, &r), 0);
        hits[r.id]++;
    }
    for (int i = 0; i < 6; i++)
        ck_assert_double_eq_tol((double)hits[i] / DRAWS, probs[i], 0.01);
    sampler_free(s);
}
END_TEST

static const float *cmp_base_;
static int cmp_desc(const void *a, const void *b)
{
    float x = cmp_base_[*(const int *)a], y = cmp_base_[*(const int *)b];
    if (x != y)
        return x > y ? -1 : 1;
    return *(const int *)a - *(const int *)b;
}

/* The top-p set by the textbook method: sort, add probabilities until top_p is reached. */
static int ref_top_p(const float *l, int n, float top_p, char *in)
{
    int *order = malloc((size_t)n * sizeof(int));
    double z = 0, mx = l[0];
    for (int i = 0; i < n; i++) {
        order[i] = i;
        mx = l[i] > mx ? l[i] : mx;
    }
    for (int i = 0; i < n; i++)
        z += exp(l[i] - mx);
    cmp_base_ = l;
    qsort(order, (size_t)n, sizeof(int), cmp_desc);
    double cum = 0;
    int k = 0;
    memset(in, 0, (size_t)n);
    while (k < n) {
        cum += exp(l[order[k]] - mx) / z;
        in[order[k++]] = 1;
        if (cum >= top_p)
            break;
    }
    free(order);
    return k;
}

START_TEST(top_p_keeps_exactly_the_sorted_prefix)
{
    /* small vocabularies take the direct path, large ones the bucket prefilter first */
    static const int sizes[] = {900, 6000};
    static const float ps[] = {0.3f, 0.9f};
    for (int si = 0; si < 2; si++)
        for (int pi = 0; pi < 2; pi++) {
            int n = sizes[si];
            float *l = malloc((size_t)n * sizeof(float));
            char *in = malloc((size_t)n);
            fill_logits(l, (uint32_t)n, (uint64_t)(si * 2 + pi + 11));
            for (int i = 0; i < n; i++)
                l[i] *= 0.6f;
            int k = ref_top_p(l, n, ps[pi], in);
            sampler_params_t p = plain(100.0f); /* ~uniform over what is kept */
            p.top_p = ps[pi];
            sampler_t *s;
            ck_assert_int_eq(sampler_new(&p, (uint32_t)n, &s), 0);
            char *seen = calloc((size_t)n, 1);
            int distinct = 0, draws = k * 12 < 3000 ? k * 12 : 3000;
            for (int d = 0; d < draws; d++) {
                sampler_result_t r;
                ck_assert_int_eq(sampler_sample(s, l, &r), 0);
                ck_assert_msg(in[r.id], "n %d top_p %.1f: id %d is outside the top-p set", n,
                              ps[pi], r.id);
                distinct += !seen[r.id];
                seen[r.id] = 1;
            }
            /* and the whole set is in play (12 draws per member: ~all of it shows up) */
            if (draws == k * 12)
                ck_assert_int_ge(distinct, k * 95 / 100);
            sampler_free(s);
            free(seen);
            free(in);
            free(l);
        }
}
END_TEST

START_TEST(top_k_exact_on_large_vocabularies)
{
    /* both paths: the direct quickselect (3000) and the bucket prefilter (50000) */
    static const int sizes[] = {3000, 50000};
    for (int si = 0; si < 2; si++) {
        int n = sizes[si], k = 50;
        float *l = malloc((size_t)n * sizeof(float));
        int *order = malloc((size_t)n * sizeof(int));
        char *in = calloc((size_t)n, 1), *seen = calloc((size_t)n, 1);
        fill_logits(l, (uint32_t)n, (uint64_t)si + 77);
        for (int i = 0; i < n; i++)
            order[i] = i;
        cmp_base_ = l;
        qsort(order, (size_t)n, sizeof(int), cmp_desc);
        for (int i = 0; i < k; i++)
            in[order[i]] = 1;
        sampler_params_t p = plain(100.0f);
        p.top_k = k;
        sampler_t *s;
        ck_assert_int_eq(sampler_new(&p, (uint32_t)n, &s), 0);
        int distinct = 0;
        for (int d = 0; d < 1500; d++) {
            sampler_result_t r;
            ck_assert_int_eq(sampler_sample(s, l, &r), 0);
            ck_assert_msg(in[r.id], "n %d: id %d is not in the top %d", n, r.id, k);
            distinct += !seen[r.id];
            seen[r.id] = 1;
        }
        ck_assert_int_eq(distinct, k);
        sampler_free(s);
        free(l);
        free(order);
        free(in);
        free(seen);
    }
}
END_TEST

START_TEST(nan_and_infinite_logits)
{
    float l[5] = {NAN, 1.0f, -INFINITY, 3.0f, NAN};
    sampler_params_t p = plain(1.0f);
    p.top_k = 2;
    sampler_t *s;
    ck_assert_int_eq(sampler_new(&p, 5, &s), 0);
    for (int d = 0; d < 200; d++) {
        sampler_result_t r;
        ck_assert_int_eq(sampler_sample(s, l, &r), 0);
        ck_assert(r.id == 1 || r.id == 3);
    }
    float all_nan[5] = {NAN, NAN, NAN, NAN, NAN};
    sampler_result_t r;
    ck_assert_int_eq(sampler_sample(s, all_nan, &r), -EINVAL);
    float pinf[5] = {0.0f, INFINITY, 1.0f, 2.0f, 3.0f};
    ck_assert_int_eq(sampler_sample(s, pinf, &r), 0);
    ck_assert_int_eq(r.id, 1);
    sampler_free(s);
}
END_TEST

START_TEST(same_seed_same_stream_other_seed_other_stream)
{
    enum { N = 20000, STEPS = 100 };
    float *l = malloc(N * sizeof(float));
    sampler_params_t p;
    sampler_params_default(&p);
    p.temperature = 1.0f;
    p.seed = 42;
    sampler_t *a, *b, *c;
    p.top_k = 0; /* the widening top-p path too */
    ck_assert_int_eq(sampler_new(&p, N, &a), 0);
    ck_assert_int_eq(sampler_new(&p, N, &b), 0);
    p.seed = 43;
    ck_assert_int_eq(sampler_new(&p, N, &c), 0);
    int32_t sa[STEPS], sb[STEPS], sc[STEPS];
    for (int t = 0; t < STEPS; t++) {
        fill_logits(l, N, (uint64_t)t * 7 + 3);
        for (int i = 0; i < N; i++)
            l[i] *= 0.3f; /* flat enough that the draw matters */
        sampler_result_t r;
        ck_assert_int_eq(sampler_sample(a, l, &r), 0);
        sa[t] = r.id;
        ck_assert_int_eq(sampler_sample(b, l, &r), 0);
        sb[t] = r.id;
        ck_assert_int_eq(sampler_sample(c, l, &r), 0);
        sc[t] = r.id;
    }
    ck_assert(!memcmp(sa, sb, sizeof(sa)));
    ck_assert(memcmp(sa, sc, sizeof(sa)) != 0);
    /* reset: the same stream again */
    sampler_reset(a);
    for (int t = 0; t < 10; t++) {
        fill_logits(l, N, (uint64_t)t * 7 + 3);
        for (int i = 0; i < N; i++)
            l[i] *= 0.3f;
        sampler_result_t r;
        ck_assert_int_eq(sampler_sample(a, l, &r), 0);
        ck_assert_int_eq(r.id, sa[t]);
    }
    sampler_free(a);
    sampler_free(b);
    sampler_free(c);
    free(l);
}
END_TEST

START_TEST(penalties_push_repeats_down)
{
    float l[4] = {2.0f, 1.9f, 0.5f, -1.0f};
    sampler_params_t p = plain(0.0f);
    p.repeat_penalty = 1.2f; /* 2.0 / 1.2 = 1.67 < 1.9 */
    p.penalty_last_n = 4;
    sampler_t *s;
    ck_assert_int_eq(sampler_new(&p, 4, &s), 0);
    sampler_result_t r;
    ck_assert_int_eq(sampler_sample(s, l, &r), 0);
    ck_assert_int_eq(r.id, 0);
    ck_assert_int_eq(sampler_sample(s, l, &r), 0); /* 0 is in the window now */
    ck_assert_int_eq(r.id, 1);
    ck_assert_int_eq(sampler_sample(s, l, &r), 0); /* both penalised: 1.67 vs 1.58 */
    ck_assert_int_eq(r.id, 0);
    sampler_free(s);

    /* frequency: each occurrence costs; presence: once */
    p = plain(0.0f);
    p.frequency_penalty = 0.3f;
    p.presence_penalty = 0.1f;
    p.penalty_last_n = 3;
    ck_assert_int_eq(sampler_new(&p, 4, &s), 0);
    sampler_accept(s, 0);
    ck_assert_int_eq(sampler_sample(s, l, &r), 0); /* 2.0 - 0.4 = 1.6 < 1.9 */
    ck_assert_int_eq(r.id, 1);
    sampler_accept(s, 2); /* window: 0 1 2 */
    sampler_accept(s, 2); /* the oldest, 0, leaves: 1 2 2 */
    ck_assert_int_eq(sampler_sample(s, l, &r), 0); /* 0 unpenalised, 1 at 1.5 */
    ck_assert_int_eq(r.id, 0);
    sampler_free(s);
}
END_TEST

START_TEST(logprobs_are_the_raw_distribution)
{
    static const double probs[] = {0.1, 0.6, 0.3};
    float l[3];
    logits_of(probs, 3, l);
    sampler_params_t p = plain(0.0f);
    p.n_logprobs = 3;
    sampler_t *s;
    ck_assert_int_eq(sampler_new(&p, 3, &s), 0);
    sampler_result_t r;
    ck_assert_int_eq(sampler_sample(s, l, &r), 0);
    ck_assert_int_eq(r.id, 1);
    ck_assert_double_eq_tol(r.logprob, log(0.6), 1e-5);
    ck_assert_uint_eq(r.n_top, 3);
    ck_assert_int_eq(r.top[0].id, 1);
    ck_assert_int_eq(r.top[1].id, 2);
    ck_assert_int_eq(r.top[2].id, 0);
    ck_assert_double_eq_tol(r.top[2].logprob, log(0.1), 1e-5);
    sampler_free(s);

    char err[128];
    p.n_logprobs = 21;
    ck_assert_int_eq(sampler_params_check(&p, err, sizeof(err)), -EINVAL);
    ck_assert_int_eq(sampler_new(&p, 3, &s), -EINVAL);
    p = plain(1.0f);
    p.top_p = 1.5f;
    ck_assert_int_eq(sampler_params_check(&p, err, sizeof(err)), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "top_p"));
}
END_TEST

START_TEST(sampling_a_large_vocabulary_is_fast)
{
    enum { N = 152064, STEPS = 30 };
    float *l = malloc(N * sizeof(float));
    sampler_params_t p;
    sampler_params_default(&p); /* top_k 40, top_p 0.95, min_p 0.05 */
    p.n_logprobs = 5;
    sampler_t *s;
    ck_assert_int_eq(sampler_new(&p, N, &s), 0);
    fill_logits(l, N, 5);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int t = 0; t < STEPS; t++) {
        sampler_result_t r;
        ck_assert_int_eq(sampler_sample(s, l, &r), 0);
    }
    p.top_k = 0; /* top-p over the whole vocabulary */
    sampler_t *s2;
    ck_assert_int_eq(sampler_new(&p, N, &s2), 0);
    for (int i = 0; i < N; i++)
        l[i] *= 0.2f; /* flat: top-p needs a wide head */
    for (int t = 0; t < STEPS; t++) {
        sampler_result_t r;
        ck_assert_int_eq(sampler_sample(s2, l, &r), 0);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = ((double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6);
    fprintf(stderr, "sampler: %d steps over %d logits in %.1f ms\n", 2 * STEPS, N, ms);
    ck_assert_double_lt(ms / (2 * STEPS), 20.0); /* generous: sanitizer builds too */
    sampler_free(s);
    sampler_free(s2);
    free(l);
}
END_TEST

/* ---- stop conditions ---- */

typedef struct sent {
    char text[256];
    size_t n;
} sent_t;

static int push(sampler_stop_t *st, sent_t *o, int32_t id, bool eog, const char *piece)
{
    const char *t;
    size_t n;
    int r = sampler_stop_push(st, id, eog, piece, strlen(piece), &t, &n);
    ck_assert_int_ge(r, 0);
    memcpy(o->text + o->n, t, n);
    o->n += n;
    o->text[o->n] = 0;
    return r;
}

START_TEST(stop_string_found_across_token_boundaries)
{
    const char *stops[] = {"STOP", "\n\nUser:"};
    sampler_stop_t *st;
    ck_assert_int_eq(sampler_stop_new(stops, 2, NULL, 0, 0, &st), 0);
    sent_t o = {0};
    ck_assert_int_eq(push(st, &o, 1, false, "ab"), SAMPLER_CONTINUE);
    ck_assert_int_eq(push(st, &o, 2, false, "cS"), SAMPLER_CONTINUE);
    ck_assert_str_eq(o.text, "abc"); /* "S" held: it may start STOP */
    ck_assert_int_eq(push(st, &o, 3, false, "TO"), SAMPLER_CONTINUE);
    ck_assert_str_eq(o.text, "abc");
    ck_assert_int_eq(push(st, &o, 4, false, "Pxyz"), SAMPLER_STOP_STRING);
    ck_assert_str_eq(o.text, "abc"); /* neither the stop string nor what follows */
    ck_assert_uint_eq(sampler_stop_n_tokens(st), 4);
    sampler_stop_free(st);

    /* a near miss is released as soon as it cannot match any more */
    ck_assert_int_eq(sampler_stop_new(stops, 2, NULL, 0, 0, &st), 0);
    memset(&o, 0, sizeof(o));
    ck_assert_int_eq(push(st, &o, 1, false, "ST"), SAMPLER_CONTINUE);
    ck_assert_str_eq(o.text, "");
    ck_assert_int_eq(push(st, &o, 2, false, "ar\n"), SAMPLER_CONTINUE);
    ck_assert_str_eq(o.text, "STar"); /* "\n" held: it may start "\n\nUser:" */
    ck_assert_int_eq(push(st, &o, 3, false, "\nUs"), SAMPLER_CONTINUE);
    ck_assert_str_eq(o.text, "STar");
    ck_assert_int_eq(push(st, &o, 4, false, "ed"), SAMPLER_CONTINUE);
    ck_assert_str_eq(o.text, "STar\n\nUsed");
    const char *t;
    size_t n;
    ck_assert_int_eq(sampler_stop_flush(st, &t, &n), 0);
    ck_assert_uint_eq(n, 0);
    sampler_stop_free(st);
}
END_TEST

START_TEST(stop_ids_and_max_tokens)
{
    const char *stops[] = {"END"};
    int32_t ids[] = {7};
    sampler_stop_t *st;
    ck_assert_int_eq(sampler_stop_new(stops, 1, ids, 1, 0, &st), 0);
    sent_t o = {0};
    ck_assert_int_eq(push(st, &o, 1, false, "hi E"), SAMPLER_CONTINUE);
    ck_assert_str_eq(o.text, "hi ");
    /* a stop id: its own text is not sent, the held "E" is */
    ck_assert_int_eq(push(st, &o, 7, false, "<|x|>"), SAMPLER_STOP_TOKEN);
    ck_assert_str_eq(o.text, "hi E");
    sampler_stop_free(st);

    ck_assert_int_eq(sampler_stop_new(stops, 1, NULL, 0, 0, &st), 0);
    memset(&o, 0, sizeof(o));
    ck_assert_int_eq(push(st, &o, 1, true, "</s>"), SAMPLER_STOP_TOKEN); /* EOG */
    ck_assert_str_eq(o.text, "");
    sampler_stop_free(st);

    ck_assert_int_eq(sampler_stop_new(stops, 1, NULL, 0, 3, &st), 0);
    memset(&o, 0, sizeof(o));
    ck_assert_int_eq(push(st, &o, 1, false, "a"), SAMPLER_CONTINUE);
    ck_assert_int_eq(push(st, &o, 2, false, "b"), SAMPLER_CONTINUE);
    ck_assert_int_eq(push(st, &o, 3, false, "cE"), SAMPLER_STOP_LENGTH);
    ck_assert_str_eq(o.text, "abcE"); /* at the end nothing is held back */
    ck_assert_int_eq(push(st, &o, 4, false, "x"), SAMPLER_STOP_TOKEN); /* done stays done */
    ck_assert_str_eq(o.text, "abcE");
    sampler_stop_free(st);
}
END_TEST

Suite *text_sampler_suite(void)
{
    Suite *s = suite_create("sampler");
    TCase *tc = tcase_create("sampling");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, temperature_zero_is_argmax);
    tcase_add_test(tc, top_k_never_leaves_the_k_best);
    tcase_add_test(tc, top_p_and_min_p_respected_and_proportional);
    tcase_add_test(tc, top_p_keeps_exactly_the_sorted_prefix);
    tcase_add_test(tc, top_k_exact_on_large_vocabularies);
    tcase_add_test(tc, nan_and_infinite_logits);
    tcase_add_test(tc, same_seed_same_stream_other_seed_other_stream);
    tcase_add_test(tc, penalties_push_repeats_down);
    tcase_add_test(tc, logprobs_are_the_raw_distribution);
    tcase_add_test(tc, sampling_a_large_vocabulary_is_fast);
    suite_add_tcase(s, tc);
    tc = tcase_create("stop");
    tcase_add_test(tc, stop_string_found_across_token_boundaries);
    tcase_add_test(tc, stop_ids_and_max_tokens);
    suite_add_tcase(s, tc);
    return s;
}
