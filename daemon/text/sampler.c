/* Token sampler and stop conditions (see sampler.h for the chain and its order).
 *
 * Per step the sampler copies the logits into a preallocated candidate array, applies the
 * penalties to the tokens in its window (kept as a ring plus per-id counts, so a step costs
 * O(window), not O(vocabulary), for them), and narrows the candidates without sorting
 * them: top-k is a quickselect of the k best, top-p a quickselect on probability mass (the
 * smallest best set reaching top_p), min-p a threshold; so a 150k vocabulary costs a few
 * linear passes per token, not a sort. The draw needs no order, only a fixed one. The draw uses xoshiro256** seeded by SplitMix64
 * from the seed: the stream is the sampler's own, so seeded runs repeat. Logprobs are of
 * the raw logits, independent of the chain. Callers: the engine's decode loop, tests. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/sampler.h"

/* Logit buckets of the prefilter: the best 1/2048th of the logit range is bucket 0. */
#define SAMPLER_BUCKETS 2048
/* Below this many candidates the exact selections run directly. */
#define SAMPLER_PREFILTER_MIN 4096

typedef struct cand {
    float logit;
    int32_t id;
    float w; /* exp(logit - max), while top-p needs it */
} cand_t;

struct sampler {
    sampler_params_t p;
    uint32_t n_vocab;
    cand_t *cand;    /* [n_vocab] */
    uint32_t *count; /* [n_vocab] occurrences in the window */
    int32_t *ring;   /* [penalty_last_n] */
    uint32_t hist_n[SAMPLER_BUCKETS];    /* candidates per logit bucket (prefilter) */
    double hist_mass[SAMPLER_BUCKETS];   /* their probability mass */
    uint32_t ring_n, ring_pos;
    uint64_t rng[4];
};

void sampler_params_default(sampler_params_t *p)
{
    *p = (sampler_params_t){
        .temperature = 0.8f,
        .top_k = 40,
        .top_p = 0.95f,
        .min_p = 0.05f,
        .repeat_penalty = 1.0f,
        .presence_penalty = 0.0f,
        .frequency_penalty = 0.0f,
        .penalty_last_n = 64,
        .seed = 0,
        .n_logprobs = -1,
    };
}

int sampler_params_check(const sampler_params_t *p, char *err, size_t errlen)
{
    const char *bad = NULL;
    if (!(p->temperature <= 100.0f) || isnan(p->temperature))
        bad = "temperature must be a number <= 100";
    else if (!(p->top_p >= 0.0f && p->top_p <= 1.0f))
        bad = "top_p must be in [0, 1]";
    else if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        bad = "min_p must be in [0, 1]";
    else if (!(p->repeat_penalty > 0.0f && p->repeat_penalty <= 100.0f))
        bad = "repeat_penalty must be in (0, 100]";
    else if (!(fabsf(p->presence_penalty) <= 2.0f) || !(fabsf(p->frequency_penalty) <= 2.0f))
        bad = "presence_penalty and frequency_penalty must be in [-2, 2]";
    else if (p->penalty_last_n < 0 || p->penalty_last_n > (1 << 20))
        bad = "penalty_last_n must be in [0, 1048576]";
    else if (p->n_logprobs < -1 || p->n_logprobs > SAMPLER_MAX_LOGPROBS)
        bad = "logprobs must be in [-1, 20]";
    if (bad) {
        if (err && errlen)
            snprintf(err, errlen, "%s", bad);
        return -EINVAL;
    }
    return 0;
}

/* ---- PRNG: SplitMix64 to seed, xoshiro256** to draw (Blackman & Vigna) ---- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t next_u64(sampler_t *s)
{
    uint64_t *q = s->rng;
    uint64_t r = rotl(q[1] * 5, 7) * 9, t = q[1] << 17;
    q[2] ^= q[0];
    q[3] ^= q[1];
    q[1] ^= q[2];
    q[0] ^= q[3];
    q[2] ^= t;
    q[3] = rotl(q[3], 45);
    return r;
}

static double next_unit(sampler_t *s) { return (double)(next_u64(s) >> 11) * 0x1.0p-53; }

void sampler_reset(sampler_t *s)
{
    uint64_t x = s->p.seed;
    for (int i = 0; i < 4; i++)
        s->rng[i] = splitmix64(&x);
    for (uint32_t i = 0; i < s->ring_n; i++)
        s->count[s->ring[i]] = 0;
    s->ring_n = s->ring_pos = 0;
}

int sampler_new(const sampler_params_t *p, uint32_t n_vocab, sampler_t **ret)
{
    if (n_vocab == 0 || sampler_params_check(p, NULL, 0) < 0)
        return -EINVAL;
    sampler_t *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->p = *p;
    s->n_vocab = n_vocab;
    s->cand = malloc(n_vocab * sizeof(*s->cand));
    s->count = calloc(n_vocab, sizeof(*s->count));
    s->ring = malloc(((size_t)p->penalty_last_n + 1) * sizeof(*s->ring));
    if (!s->cand || !s->count || !s->ring) {
        sampler_free(s);
        return -ENOMEM;
    }
    sampler_reset(s);
    *ret = s;
    return 0;
}

sampler_t *sampler_free(sampler_t *s)
{
    if (!s)
        return NULL;
    free(s->cand);
    free(s->count);
    free(s->ring);
    free(s);
    return NULL;
}

void sampler_accept(sampler_t *s, int32_t id)
{
    uint32_t w = (uint32_t)s->p.penalty_last_n;
    if (!w || id < 0 || (uint32_t)id >= s->n_vocab)
        return;
    if (s->ring_n == w) { /* full: the oldest leaves the window */
        s->count[s->ring[s->ring_pos]]--;
        s->ring[s->ring_pos] = id;
        s->ring_pos = (s->ring_pos + 1) % w;
    } else {
        s->ring[s->ring_n++] = id;
    }
    s->count[id]++;
}

/* llama.cpp's penalties: repeat divides a positive logit / multiplies a negative one;
 * frequency and presence subtract (OpenAI's definition). Applied once per distinct id. */
static void apply_penalties(sampler_t *s)
{
    const sampler_params_t *p = &s->p;
    if (!s->ring_n || (p->repeat_penalty == 1.0f && p->presence_penalty == 0.0f &&
                       p->frequency_penalty == 0.0f))
        return;
    for (uint32_t i = 0; i < s->ring_n; i++) {
        int32_t id = s->ring[i];
        cand_t *c = &s->cand[id]; /* candidates are still in id order here */
        if (c->id != id)
            continue; /* already done: marked below */
        uint32_t n = s->count[id];
        if (c->logit <= 0)
            c->logit *= p->repeat_penalty;
        else
            c->logit /= p->repeat_penalty;
        c->logit -= (float)n * p->frequency_penalty + (n > 0) * p->presence_penalty;
        c->id = -1 - id; /* mark as penalised */
    }
    for (uint32_t i = 0; i < s->ring_n; i++) {
        cand_t *c = &s->cand[s->ring[i]];
        if (c->id < 0)
            c->id = -1 - c->id;
    }
}

static bool better(const cand_t *a, const cand_t *b)
{
    /* descending logit; ties by lower id so the order is total and repeatable */
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

/* Moves the k best of c[0..n) to the front, unordered (quickselect, Hoare partition). */
static void select_top(cand_t *c, size_t n, size_t k)
{
    size_t lo = 0, hi = n;
    while (hi - lo > 1 && k > lo && k < hi) {
        cand_t pivot = c[lo + (hi - lo) / 2];
        size_t i = lo, j = hi - 1;
        while (i <= j) {
            while (better(&c[i], &pivot))
                i++;
            while (better(&pivot, &c[j]))
                j--;
            if (i <= j) {
                cand_t t = c[i];
                c[i] = c[j];
                c[j] = t;
                i++;
                if (j == 0)
                    break;
                j--;
            }
        }
        if (k <= j + 1)
            hi = j + 1;
        else if (k >= i)
            lo = i;
        else
            break;
    }
}

static void swap(cand_t *a, cand_t *b)
{
    cand_t t = *a;
    *a = *b;
    *b = t;
}

/* top-p without sorting: moves to the front the smallest set of best candidates whose
 * probability mass reaches top_p (those are the prefix a sort would keep) and returns its
 * size. A quickselect on mass: partition around a pivot; if the better side's mass already
 * reaches the target the answer is there, else it is all kept and the search goes on in the
 * worse side. Expected O(n). */
static size_t top_p_select(cand_t *c, size_t n, double target, float lmax)
{
    for (size_t i = 0; i < n; i++)
        c[i].w = expf(c[i].logit - lmax);
    double acc = 0;
    size_t lo = 0, hi = n;
    while (hi - lo > 0) {
        swap(&c[lo + (hi - lo) / 2], &c[hi - 1]);
        cand_t pv = c[hi - 1];
        size_t store = lo;
        double mass = 0;
        for (size_t i = lo; i + 1 < hi; i++)
            if (better(&c[i], &pv)) {
                mass += c[i].w;
                swap(&c[i], &c[store++]);
            }
        swap(&c[store], &c[hi - 1]);
        if (acc + mass >= target) {
            hi = store; /* the answer lies among the better ones */
        } else if (acc + mass + pv.w >= target) {
            return store + 1;
        } else {
            acc += mass + pv.w;
            lo = store + 1;
        }
    }
    return lo; /* rounding left the target unreached: all of them */
}

/* The prefilter: one pass puts every candidate in a bucket by its logit (bucket 0 the
 * best) and counts candidates (top-k) or probability mass (top-p) per bucket; bucket t,
 * where the running count or mass first reaches k or the target, holds the boundary. The
 * candidates of the buckets before t are all in; they go to the front (*ret_m0 of them,
 * mass *ret_mass0), those of bucket t right after (up to *ret_m): only those need the exact
 * selection. For a 150k vocabulary that is a few candidates instead of all, in passes that
 * are branch-light, where a quickselect over all would mispredict on every comparison. */
static void prefilter(sampler_t *s, cand_t *c, size_t n, float mx, size_t k, double mass,
                      size_t *ret_m0, size_t *ret_m, double *ret_mass0, double *ret_z)
{
    float mn = mx;
    for (size_t i = 0; i < n; i++)
        if (c[i].logit < mn && isfinite(c[i].logit))
            mn = c[i].logit;
    double z = 0;
    if (!(mx > mn)) { /* all equal (or -inf): no order to exploit */
        for (size_t i = 0; i < n; i++)
            z += c[i].logit == mx ? 1.0 : 0.0;
        *ret_m0 = 0;
        *ret_m = n;
        *ret_mass0 = 0;
        *ret_z = z;
        return;
    }
    float inv = (float)(SAMPLER_BUCKETS - 1) / (mx - mn);
#define BUCKET(l) ((l) > mn ? (uint32_t)((mx - (l)) * inv) : SAMPLER_BUCKETS - 1)
    memset(s->hist_n, 0, sizeof(s->hist_n));
    memset(s->hist_mass, 0, sizeof(s->hist_mass));
    for (size_t i = 0; i < n; i++) {
        uint32_t b = BUCKET(c[i].logit);
        s->hist_n[b]++;
        if (mass > 0) {
            double w = expf(c[i].logit - mx);
            s->hist_mass[b] += w;
            z += w;
        }
    }
    uint32_t t = 0;
    double before = 0;
    if (mass > 0) {
        double target = mass * z;
        while (t < SAMPLER_BUCKETS - 1 && before + s->hist_mass[t] < target)
            before += s->hist_mass[t++];
    } else {
        size_t cum = 0;
        while (t < SAMPLER_BUCKETS - 1 && cum + s->hist_n[t] < k)
            cum += s->hist_n[t++];
    }
    size_t m0 = 0, m;
    for (size_t i = 0; i < n; i++)
        if (BUCKET(c[i].logit) < t)
            swap(&c[i], &c[m0++]);
    m = m0;
    for (size_t i = m0; i < n; i++)
        if (BUCKET(c[i].logit) == t)
            swap(&c[i], &c[m++]);
#undef BUCKET
    *ret_m0 = m0;
    *ret_m = m;
    *ret_mass0 = before;
    *ret_z = z;
}

static void raw_logprobs(const sampler_t *s, const float *logits, sampler_result_t *r)
{
    r->n_top = 0;
    r->logprob = NAN;
    if (s->p.n_logprobs < 0)
        return; /* not asked for: spare the pass over the vocabulary */
    /* log-softmax of the raw logits: log p_i = l_i - max - log(sum exp(l_j - max)) */
    float mx = -INFINITY;
    for (uint32_t i = 0; i < s->n_vocab; i++)
        if (logits[i] > mx)
            mx = logits[i];
    double sum = 0;
    for (uint32_t i = 0; i < s->n_vocab; i++)
        sum += isnan(logits[i]) ? 0.0f : expf(logits[i] - mx);
    float lse = mx + (float)log(sum);
    r->logprob = logits[r->id] - lse;
    if (s->p.n_logprobs == 0)
        return;
    /* the best n by a simple insertion pass: n is at most 20 */
    uint32_t n = (uint32_t)s->p.n_logprobs;
    for (uint32_t i = 0; i < s->n_vocab; i++) {
        cand_t c = {logits[i], (int32_t)i, 0.0f};
        /* ids ascend, so an equal logit later is worse: one compare rejects most */
        if (isnan(c.logit) || (r->n_top == n && !(c.logit > r->top[n - 1].logprob)))
            continue;
        uint32_t j = r->n_top < n ? r->n_top++ : n;
        if (j == n) {
            cand_t last = {r->top[n - 1].logprob, r->top[n - 1].id, 0.0f};
            if (!better(&c, &last))
                continue;
            j = n - 1;
        }
        while (j > 0) {
            cand_t prev = {r->top[j - 1].logprob, r->top[j - 1].id, 0.0f};
            if (!better(&c, &prev))
                break;
            r->top[j] = r->top[j - 1];
            j--;
        }
        r->top[j] = (sampler_logprob_t){c.id, c.logit};
    }
    for (uint32_t i = 0; i < r->n_top; i++)
        r->top[i].logprob -= lse;
}

int sampler_sample(sampler_t *s, const float *logits, sampler_result_t *ret)
{
    const sampler_params_t *p = &s->p;
    size_t n = s->n_vocab;
    cand_t *c = s->cand;
    bool nan = false;
    for (uint32_t i = 0; i < n; i++) {
        c[i] = (cand_t){logits[i], (int32_t)i, 0.0f};
        nan |= isnan(logits[i]);
    }
    apply_penalties(s); /* needs c[id] at index id: before any filtering */
    if (nan) {          /* NaN never wins and never counts */
        size_t m = 0;
        for (size_t i = 0; i < n; i++)
            if (!isnan(c[i].logit))
                c[m++] = c[i];
        n = m;
        if (!n)
            return -EINVAL;
    }
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (c[i].logit > c[best].logit) /* strict: the lowest id wins ties */
            best = i;
    float mx = c[best].logit;
    int32_t chosen = c[best].id;
    if (p->temperature > 0.0f && isfinite(mx)) {
        /* top-k: the k best to the front (in no order: the draw does not need one) */
        if (p->top_k > 0 && (size_t)p->top_k < n) {
            size_t k = (size_t)p->top_k, m0 = 0, m = n;
            double z, mass0;
            if (n > SAMPLER_PREFILTER_MIN)
                prefilter(s, c, n, mx, k, 0, &m0, &m, &mass0, &z);
            if (m0 < k) /* the boundary bucket gives the rest */
                select_top(c + m0, m - m0, k - m0);
            n = k;
        }
        /* top-p: the smallest best set whose mass reaches top_p */
        if (p->top_p < 1.0f) {
            double z = 0, mass0 = 0;
            size_t m0 = 0, m = n;
            if (n > SAMPLER_PREFILTER_MIN) {
                prefilter(s, c, n, mx, 0, p->top_p, &m0, &m, &mass0, &z);
            } else {
                for (size_t i = 0; i < n; i++)
                    z += expf(c[i].logit - mx);
            }
            double need = (double)p->top_p * z - mass0;
            n = m0 + (need > 0 ? top_p_select(c + m0, m - m0, need, mx) : 0);
            if (!n)
                n = 1;
        }
        /* min-p: keep p_i >= min_p * p_max, i.e. l_i >= l_max + log(min_p) */
        if (p->min_p > 0.0f) {
            float cut = mx + logf(p->min_p);
            size_t keep = 0;
            for (size_t i = 0; i < n; i++)
                if (c[i].logit >= cut)
                    c[keep++] = c[i];
            n = keep;
        }
        /* temperature, softmax, draw */
        double z = 0;
        float inv_t = 1.0f / p->temperature;
        for (size_t i = 0; i < n; i++) {
            c[i].w = expf((c[i].logit - mx) * inv_t);
            z += c[i].w;
        }
        double u = next_unit(s) * z, acc = 0;
        chosen = c[n - 1].id;
        for (size_t i = 0; i < n; i++) {
            acc += c[i].w;
            if (u < acc) {
                chosen = c[i].id;
                break;
            }
        }
    }
    ret->id = chosen;
    raw_logprobs(s, logits, ret);
    sampler_accept(s, chosen);
    return 0;
}

/* ---- stop conditions ---- */

struct sampler_stop {
    char **strs;
    size_t *lens;
    size_t n_strs;
    int32_t *ids;
    size_t n_ids;
    uint32_t max_tokens, n_tokens;
    char *held; /* text not yet released: possibly the start of a stop string */
    size_t nheld, heldcap;
    char *work; /* held + the new text; what is released is a prefix of it */
    size_t workcap;
    bool done;
};

sampler_stop_t *sampler_stop_free(sampler_stop_t *s)
{
    if (!s)
        return NULL;
    for (size_t i = 0; i < s->n_strs; i++)
        free(s->strs[i]);
    free(s->strs);
    free(s->lens);
    free(s->ids);
    free(s->held);
    free(s->work);
    free(s);
    return NULL;
}

int sampler_stop_new(const char *const *strs, size_t n_strs, const int32_t *ids, size_t n_ids,
                     uint32_t max_tokens, sampler_stop_t **ret)
{
    sampler_stop_t *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->strs = calloc(n_strs + 1, sizeof(*s->strs));
    s->lens = calloc(n_strs + 1, sizeof(*s->lens));
    s->ids = malloc((n_ids + 1) * sizeof(*s->ids));
    if (!s->strs || !s->lens || !s->ids)
        goto fail;
    for (size_t i = 0; i < n_strs; i++) {
        size_t l = strlen(strs[i]);
        if (!l)
            continue;
        if (!(s->strs[s->n_strs] = strdup(strs[i])))
            goto fail;
        s->lens[s->n_strs++] = l;
    }
    if (n_ids)
        memcpy(s->ids, ids, n_ids * sizeof(*ids));
    s->n_ids = n_ids;
    s->max_tokens = max_tokens;
    *ret = s;
    return 0;
fail:
    sampler_stop_free(s);
    return -ENOMEM;
}

uint32_t sampler_stop_n_tokens(const sampler_stop_t *s) { return s->n_tokens; }

/* Longest suffix of t[0..n) that is a proper prefix of some stop string. */
static size_t stop_tail(const sampler_stop_t *s, const char *t, size_t n)
{
    size_t best = 0;
    for (size_t k = 0; k < s->n_strs; k++) {
        size_t l = s->lens[k] - 1 < n ? s->lens[k] - 1 : n;
        for (; l > best; l--)
            if (!memcmp(t + n - l, s->strs[k], l)) {
                best = l;
                break;
            }
    }
    return best;
}

static int reserve(char **b, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap : 64;
    while (c < need)
        c *= 2;
    char *nb = realloc(*b, c);
    if (!nb)
        return -ENOMEM;
    *b = nb;
    *cap = c;
    return 0;
}

int sampler_stop_push(sampler_stop_t *s, int32_t id, bool is_eog, const char *text,
                      size_t len, const char **ret_text, size_t *ret_len)
{
    int e;
    if ((e = reserve(&s->work, &s->workcap, s->nheld + len + 1)) < 0)
        return e;
    *ret_text = s->work;
    *ret_len = 0;
    if (s->done)
        return SAMPLER_STOP_TOKEN;
    s->n_tokens++;
    if (s->nheld)
        memcpy(s->work, s->held, s->nheld);
    size_t n = s->nheld;
    s->nheld = 0;
    bool stop_id = is_eog;
    for (size_t i = 0; i < s->n_ids && !stop_id; i++)
        stop_id = s->ids[i] == id;
    if (stop_id) { /* its own text is not sent; what was held is */
        s->done = true;
        *ret_len = n;
        return SAMPLER_STOP_TOKEN;
    }
    if (len)
        memcpy(s->work + n, text, len);
    n += len;
    /* the earliest complete stop string: send what precedes it, and stop */
    size_t first = n;
    for (size_t k = 0; k < s->n_strs; k++) {
        const char *m = memmem(s->work, n, s->strs[k], s->lens[k]);
        if (m && (size_t)(m - s->work) < first)
            first = (size_t)(m - s->work);
    }
    if (first < n) {
        s->done = true;
        *ret_len = first;
        return SAMPLER_STOP_STRING;
    }
    bool length = s->max_tokens && s->n_tokens >= s->max_tokens;
    size_t keep = length ? 0 : stop_tail(s, s->work, n); /* at the end nothing can complete */
    if ((e = reserve(&s->held, &s->heldcap, keep + 1)) < 0)
        return e;
    if (keep)
        memcpy(s->held, s->work + n - keep, keep);
    s->nheld = keep;
    *ret_len = n - keep;
    if (length)
        s->done = true;
    return length ? SAMPLER_STOP_LENGTH : SAMPLER_CONTINUE;
}

int sampler_stop_flush(sampler_stop_t *s, const char **ret_text, size_t *ret_len)
{
    int e = reserve(&s->work, &s->workcap, s->nheld + 1);
    if (e < 0)
        return e;
    if (s->nheld)
        memcpy(s->work, s->held, s->nheld);
    *ret_text = s->work;
    *ret_len = s->nheld;
    s->nheld = 0;
    s->done = true;
    return 0;
}
