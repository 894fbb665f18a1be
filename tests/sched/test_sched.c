/* The scheduler against a scripted engine: fair admission per uid, continuous batching,
 * cancellation freeing sequences, an engine error failing only the requests that meet it
 * (the others of the step go on), the batch bound, the queue bound. The engine's logits
 * always pick the token "a" (so text is predictable) and it records what it was asked to
 * run. Uses the gpt-2 vocabulary of the shared data. */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "model/gguf.h"
#include "sched/scheduler.h"
#include "text/tokenizer.h"

typedef struct fake {
    engine_t base;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool hold;          /* step waits while set */
    int fail_next;      /* the next step returns this error */
    int32_t poison;     /* a step with an entry of this token fails with poison_err */
    int poison_err;
    size_t max_entries; /* most entries in one step */
    bool used[64];
    int32_t admitted[64]; /* first prompt token of each new sequence, in order */
    int n_admitted;
    bool fresh[64];
    size_t max_batch_seqs;
    int32_t tok_a;
} fake_t;

static int f_seq_new(engine_t *e, uint32_t *ret)
{
    fake_t *f = (fake_t *)e;
    for (uint32_t i = 0; i < e->n_seq_max; i++)
        if (!f->used[i]) {
            f->used[i] = f->fresh[i] = true;
            *ret = i;
            return 0;
        }
    return -EBUSY;
}

static void f_seq_free(engine_t *e, uint32_t seq)
{
    ((fake_t *)e)->used[seq] = false;
}

static int f_step(engine_t *e, const engine_entry_t *en, size_t n, float *logits)
{
    fake_t *f = (fake_t *)e;
    pthread_mutex_lock(&f->lock);
    while (f->hold)
        pthread_cond_wait(&f->cond, &f->lock);
    int fail = f->fail_next;
    f->fail_next = 0;
    bool seen[64] = {0};
    size_t seqs = 0, out = 0;
    if (n > f->max_entries)
        f->max_entries = n;
    for (size_t i = 0; i < n; i++) {
        if (f->poison && en[i].token == f->poison)
            fail = f->poison_err;
        if (f->fresh[en[i].seq]) {
            f->fresh[en[i].seq] = false;
            f->admitted[f->n_admitted++] = en[i].token;
        }
        if (!seen[en[i].seq]) {
            seen[en[i].seq] = true;
            seqs++;
        }
        if (en[i].logits) {
            float *l = logits + out++ * e->n_vocab;
            for (uint32_t v = 0; v < e->n_vocab; v++)
                l[v] = 0;
            l[f->tok_a] = 10;
        }
    }
    if (seqs > f->max_batch_seqs)
        f->max_batch_seqs = seqs;
    pthread_mutex_unlock(&f->lock);
    return fail;
}

static void f_stats(engine_t *e, engine_stats_t *ret)
{
    memset(ret, 0, sizeof(*ret));
}

static void f_free(engine_t *e)
{
}

static const engine_vtable_t fake_vt = {"fake", f_seq_new, f_seq_free, f_step, f_stats, f_free};

static gguf_t *g;
static tokenizer_t *tok;
static fake_t fk;
static sched_t *sched;
static uint32_t max_batch; /* sched_config_t.max_batch of the next setup() */

static void setup(uint32_t parallel, uint32_t queue)
{
    char err[256], path[1024];
    const char *data = getenv("MOE_SHARED_DATA");
    snprintf(path, sizeof(path), "%s/vocab/ggml-vocab-gpt-2.gguf", data ? data : "../shared/data");
    ck_assert_msg(gguf_open(path, &g, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(tokenizer_new(g, &tok, err, sizeof(err)), 0);
    memset(&fk, 0, sizeof(fk));
    pthread_mutex_init(&fk.lock, NULL);
    pthread_cond_init(&fk.cond, NULL);
    fk.base = (engine_t){.vt = &fake_vt, .n_vocab = tokenizer_n_vocab(tok), .n_ctx = 256,
                         .n_seq_max = parallel};
    ck_assert_int_eq(tokenizer_encode(tok, "a", 1, 0, &fk.tok_a, 1), 1);
    sched_config_t c = {.engine = &fk.base, .tok = tok, .queue_max = queue,
                        .parallel = parallel, .max_batch = max_batch};
    ck_assert_int_eq(sched_new(&c, &sched), 0);
}

static void teardown(void)
{
    sched = sched_free(sched);
    max_batch = 0;
    tok = tokenizer_free(tok);
    g = gguf_free(g);
}

static void hold(bool on)
{
    pthread_mutex_lock(&fk.lock);
    fk.hold = on;
    pthread_cond_broadcast(&fk.cond);
    pthread_mutex_unlock(&fk.lock);
}

/* Reads events until the end; returns the final event and the text. */
static sched_event_t finish(sched_req_t *r, char *text, size_t len)
{
    sched_event_t ev;
    size_t o = 0;
    for (;;) {
        ck_assert_int_eq(sched_req_next(r, &ev, 10000), 1);
        if (ev.kind != SCHED_EV_TEXT)
            break;
        if (text && o + ev.len < len) {
            memcpy(text + o, ev.text, ev.len);
            o += ev.len;
        }
        sched_event_clear(&ev);
    }
    if (text)
        text[o] = 0;
    return ev;
}

static sched_params_t params(uint32_t max_tokens)
{
    return (sched_params_t){.max_tokens = max_tokens, .temperature = 0, .top_p = 1,
                            .repetition_penalty = 1};
}

START_TEST(generates_max_tokens_of_the_engines_choice)
{
    setup(2, 4);
    int32_t p[3] = {100, 101, 102};
    sched_params_t sp = params(5);
    sched_req_t *r;
    ck_assert_int_eq(sched_submit(sched, p, 3, &sp, 1000, &r), 0);
    char text[64];
    sched_event_t ev = finish(r, text, sizeof(text));
    ck_assert_int_eq(ev.kind, SCHED_EV_DONE);
    ck_assert_int_eq(ev.finish, SCHED_FINISH_LENGTH);
    ck_assert_uint_eq(ev.prompt_tokens, 3);
    ck_assert_uint_eq(ev.completion_tokens, 5);
    ck_assert_str_eq(text, "aaaaa");
    sched_req_release(r);
    teardown();
}
END_TEST

START_TEST(admits_the_uid_with_fewest_active_first)
{
    setup(1, 16);
    hold(true);
    sched_params_t sp = params(2);
    sched_req_t *r[6];
    int32_t tokA[5] = {10, 11, 12, 13, 14}, tokB = 20;
    ck_assert_int_eq(sched_submit(sched, &tokA[0], 1, &sp, 1000, &r[0]), 0);
    for (int i = 1; i < 5; i++)
        ck_assert_int_eq(sched_submit(sched, &tokA[i], 1, &sp, 1000, &r[i]), 0);
    ck_assert_int_eq(sched_submit(sched, &tokB, 1, &sp, 2000, &r[5]), 0);
    hold(false);
    for (int i = 0; i < 6; i++) {
        sched_event_t ev = finish(r[i], NULL, 0);
        ck_assert_int_eq(ev.kind, SCHED_EV_DONE);
        sched_req_release(r[i]);
    }
    /* A's first, then B's (A was served last), then the rest of A's in order. */
    int32_t want[6] = {10, 20, 11, 12, 13, 14};
    ck_assert_int_eq(fk.n_admitted, 6);
    for (int i = 0; i < 6; i++)
        ck_assert_int_eq(fk.admitted[i], want[i]);
    teardown();
}
END_TEST

START_TEST(batches_every_active_sequence_in_one_step)
{
    setup(4, 8);
    hold(true);
    sched_params_t sp = params(8);
    sched_req_t *r[4];
    int32_t t[4] = {30, 31, 32, 33};
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(sched_submit(sched, &t[i], 1, &sp, 1000 + (uid_t)i, &r[i]), 0);
    hold(false);
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(finish(r[i], NULL, 0).kind, SCHED_EV_DONE);
        sched_req_release(r[i]);
    }
    ck_assert_uint_eq(fk.max_batch_seqs, 4);
    teardown();
}
END_TEST

START_TEST(cancel_ends_queued_and_active_requests_and_frees_their_sequences)
{
    setup(1, 8);
    sched_params_t sp = params(100000);
    sp.max_tokens = 200; /* long enough to be cancelled while active */
    int32_t t[2] = {40, 41};
    sched_req_t *a, *b;
    hold(true);
    ck_assert_int_eq(sched_submit(sched, &t[0], 1, &sp, 1, &a), 0);
    ck_assert_int_eq(sched_submit(sched, &t[1], 1, &sp, 1, &b), 0);
    sched_req_cancel(b); /* still queued */
    sched_event_t ev = finish(b, NULL, 0);
    ck_assert_int_eq(ev.kind, SCHED_EV_DONE);
    ck_assert_int_eq(ev.finish, SCHED_FINISH_CANCELLED);
    sched_req_cancel(a); /* active (or about to be) */
    hold(false);
    ev = finish(a, NULL, 0);
    ck_assert_int_eq(ev.finish, SCHED_FINISH_CANCELLED);
    ck_assert_uint_lt(ev.completion_tokens, 200);
    sched_req_release(a);
    sched_req_release(b);
    sched_stats_t st;
    for (int i = 0; i < 100; i++) {
        sched_get_stats(sched, &st);
        if (!st.active)
            break;
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
    }
    ck_assert_uint_eq(st.active, 0);
    ck_assert(!fk.used[0]);
    ck_assert_uint_eq(st.requests_cancelled, 2);
    teardown();
}
END_TEST

START_TEST(an_engine_error_fails_that_step_only)
{
    setup(2, 8);
    sched_params_t sp = params(4);
    int32_t t = 50;
    sched_req_t *r;
    fk.fail_next = -EIO;
    ck_assert_int_eq(sched_submit(sched, &t, 1, &sp, 1, &r), 0);
    sched_event_t ev = finish(r, NULL, 0);
    ck_assert_int_eq(ev.kind, SCHED_EV_ERROR);
    ck_assert_int_eq(ev.error, -EIO);
    ck_assert(strlen(ev.message) > 0);
    sched_req_release(r);
    ck_assert_int_eq(sched_submit(sched, &t, 1, &sp, 1, &r), 0);
    ev = finish(r, NULL, 0);
    ck_assert_int_eq(ev.kind, SCHED_EV_DONE);
    ck_assert_uint_eq(ev.completion_tokens, 4);
    sched_req_release(r);
    teardown();
}
END_TEST

/* The step of three sequences fails because of one of them: that one ends with the error,
 * the other two are rerun alone and finish, and every sequence is freed. */
START_TEST(a_failed_step_ends_only_the_sequence_that_fails)
{
    setup(3, 8);
    hold(true);
    sched_params_t sp = params(4);
    int32_t pa[2] = {70, 71}, pb[2] = {72, 73}, pc[2] = {74, 75};
    sched_req_t *a, *b, *c;
    fk.poison = 73;
    fk.poison_err = -EIO;
    ck_assert_int_eq(sched_submit(sched, pa, 2, &sp, 1, &a), 0);
    ck_assert_int_eq(sched_submit(sched, pb, 2, &sp, 2, &b), 0);
    ck_assert_int_eq(sched_submit(sched, pc, 2, &sp, 3, &c), 0);
    hold(false);
    char text[64];
    sched_event_t ev = finish(b, NULL, 0);
    ck_assert_int_eq(ev.kind, SCHED_EV_ERROR);
    ck_assert_int_eq(ev.error, -EIO);
    ck_assert(strlen(ev.message) > 0);
    ev = finish(a, text, sizeof(text));
    ck_assert_int_eq(ev.kind, SCHED_EV_DONE);
    ck_assert_uint_eq(ev.completion_tokens, 4);
    ck_assert_str_eq(text, "aaaa");
    ev = finish(c, text, sizeof(text));
    ck_assert_int_eq(ev.kind, SCHED_EV_DONE);
    ck_assert_str_eq(text, "aaaa");
    ck_assert_uint_eq(fk.max_batch_seqs, 3); /* they did share the failed step */
    sched_req_release(a);
    sched_req_release(b);
    sched_req_release(c);
    sched_stats_t st;
    sched_get_stats(sched, &st);
    ck_assert_uint_eq(st.requests_failed, 1);
    ck_assert_uint_eq(st.requests_done, 2);
    ck_assert_uint_eq(st.active, 0);
    for (int i = 0; i < 3; i++)
        ck_assert(!fk.used[i]);
    teardown();
}
END_TEST

/* Out of memory in a step of one sequence: the request gets -ENOMEM (moed's 503). */
START_TEST(out_of_memory_in_a_step_fails_the_request_with_enomem)
{
    setup(2, 8);
    sched_params_t sp = params(4);
    int32_t t = 80;
    sched_req_t *r;
    fk.poison = 80;
    fk.poison_err = -ENOMEM;
    ck_assert_int_eq(sched_submit(sched, &t, 1, &sp, 1, &r), 0);
    sched_event_t ev = finish(r, NULL, 0);
    ck_assert_int_eq(ev.kind, SCHED_EV_ERROR);
    ck_assert_int_eq(ev.error, -ENOMEM);
    sched_req_release(r);
    fk.poison = 0;
    ck_assert_int_eq(sched_submit(sched, &t, 1, &sp, 1, &r), 0);
    ck_assert_int_eq(finish(r, NULL, 0).kind, SCHED_EV_DONE);
    sched_req_release(r);
    teardown();
}
END_TEST

/* Long prompts are fed in chunks that keep every step within max_batch entries. */
START_TEST(steps_never_exceed_max_batch)
{
    max_batch = 8;
    setup(2, 8);
    hold(true);
    sched_params_t sp = params(3);
    int32_t p[20];
    for (int i = 0; i < 20; i++)
        p[i] = 100 + i;
    sched_req_t *a, *b;
    ck_assert_int_eq(sched_submit(sched, p, 20, &sp, 1, &a), 0);
    ck_assert_int_eq(sched_submit(sched, p, 13, &sp, 2, &b), 0);
    hold(false);
    sched_event_t ev = finish(a, NULL, 0);
    ck_assert_int_eq(ev.kind, SCHED_EV_DONE);
    ck_assert_uint_eq(ev.completion_tokens, 3);
    ev = finish(b, NULL, 0);
    ck_assert_int_eq(ev.kind, SCHED_EV_DONE);
    ck_assert_uint_eq(ev.prompt_tokens, 13);
    ck_assert_uint_eq(ev.completion_tokens, 3);
    ck_assert_uint_le(fk.max_entries, 8);
    sched_req_release(a);
    sched_req_release(b);
    teardown();
}
END_TEST

START_TEST(a_full_queue_refuses_and_bad_prompts_are_refused)
{
    setup(1, 2);
    hold(true);
    sched_params_t sp = params(2);
    int32_t t = 60;
    sched_req_t *r[4];
    ck_assert_int_eq(sched_submit(sched, &t, 1, &sp, 1, &r[0]), 0);
    struct timespec ts = {0, 50000000};
    nanosleep(&ts, NULL); /* r[0] admitted: the queue is empty again */
    ck_assert_int_eq(sched_submit(sched, &t, 1, &sp, 1, &r[1]), 0);
    ck_assert_int_eq(sched_submit(sched, &t, 1, &sp, 1, &r[2]), 0);
    ck_assert_int_eq(sched_submit(sched, &t, 1, &sp, 1, &r[3]), -EAGAIN);
    int32_t bad = (int32_t)fk.base.n_vocab;
    sched_req_t *x;
    ck_assert_int_eq(sched_submit(sched, &bad, 1, &sp, 1, &x), -EINVAL);
    int32_t *longp = calloc(300, sizeof(*longp));
    ck_assert_int_eq(sched_submit(sched, longp, 300, &sp, 1, &x), -E2BIG);
    free(longp);
    hold(false);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(finish(r[i], NULL, 0).kind, SCHED_EV_DONE);
        sched_req_release(r[i]);
    }
    teardown();
}
END_TEST

int main(void)
{
    const char *data = getenv("MOE_SHARED_DATA");
    char path[1024];
    snprintf(path, sizeof(path), "%s/vocab/ggml-vocab-gpt-2.gguf", data ? data : "../shared/data");
    FILE *f = fopen(path, "rb");
    if (!f) {
        printf("skip: %s not found\n", path);
        return 77;
    }
    fclose(f);
    Suite *s = suite_create("sched");
    TCase *tc = tcase_create("sched");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, generates_max_tokens_of_the_engines_choice);
    tcase_add_test(tc, admits_the_uid_with_fewest_active_first);
    tcase_add_test(tc, batches_every_active_sequence_in_one_step);
    tcase_add_test(tc, cancel_ends_queued_and_active_requests_and_frees_their_sequences);
    tcase_add_test(tc, an_engine_error_fails_that_step_only);
    tcase_add_test(tc, a_failed_step_ends_only_the_sequence_that_fails);
    tcase_add_test(tc, out_of_memory_in_a_step_fails_the_request_with_enomem);
    tcase_add_test(tc, steps_never_exceed_max_batch);
    tcase_add_test(tc, a_full_queue_refuses_and_bad_prompts_are_refused);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
