/* libmoe-client against the real moed: main() makes a synthetic model with `moe mkmodel`,
 * starts moed on a private socket and waits until it is healthy; the cases then talk to it
 * through the library only. Exits 77 (skip) when the moed or moe binaries are not built or
 * the model cannot be made. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "moe/client.h"

extern char **environ;

static char dir[64], sock[128], model[128], logpath[128];

static moe_client *client;

static void setup(void)
{
    ck_assert_int_eq(moe_client_new(sock, &client), 0);
    moe_client_set_timeout(client, 60000);
}

static void teardown(void)
{
    client = moe_client_free(client);
}

START_TEST(health_models_and_metrics_answer_over_the_real_socket)
{
    char *h;
    ck_assert_int_eq(moe_client_health(client, &h), 0);
    ck_assert_ptr_nonnull(strstr(h, "\"status\":\"ok\""));
    free(h);
    char **ids;
    ck_assert_int_ge(moe_client_models(client, &ids), 1);
    ck_assert_ptr_nonnull(ids[0]);
    ck_assert_uint_gt(strlen(ids[0]), 0);
    moe_client_strv_free(ids);
    char *text;
    ck_assert_int_eq(moe_client_metrics(client, &text), 0);
    double v;
    ck_assert_int_eq(moe_client_metrics_get(text, "moed_ready", &v), 0);
    ck_assert(v == 1);
    ck_assert_int_eq(moe_client_metrics_get(text, "moed_requests_total{code=\"2xx\"}", &v), 0);
    ck_assert(v >= 1);
    free(text);
}
END_TEST

START_TEST(a_refused_request_is_einval_with_the_daemons_message)
{
    moe_client_params p;
    moe_client_params_init(&p);
    p.temperature = 5;
    ck_assert_int_eq(moe_client_complete(client, "x", &p, NULL, NULL, NULL), -EINVAL);
    ck_assert_ptr_nonnull(strstr(moe_client_errmsg(client), "temperature"));
    moe_client_params_init(&p);
    p.max_tokens = 1 << 30;
    moe_client_message m = {"user", "hi"};
    ck_assert_int_eq(moe_client_chat(client, &m, 1, &p, NULL, NULL, NULL), -EINVAL);
    ck_assert_ptr_nonnull(strstr(moe_client_errmsg(client), "max_tokens"));
}
END_TEST

typedef struct collect {
    char text[65536];
    int pieces, stop_after;
} collect_t;

static int on_token(void *ud, const char *text, size_t len, unsigned flags)
{
    collect_t *k = ud;
    if (!(flags & MOE_CLIENT_TOKEN_REASONING) && strlen(k->text) + len < sizeof(k->text))
        strncat(k->text, text, len);
    k->pieces++;
    return k->stop_after && k->pieces >= k->stop_after;
}

START_TEST(streamed_and_blocking_greedy_completions_agree)
{
    moe_client_params p;
    moe_client_params_init(&p);
    p.max_tokens = 12;
    p.temperature = 0;
    p.ignore_eos = 1;
    static collect_t k;
    memset(&k, 0, sizeof(k));
    moe_client_result s, b;
    ck_assert_int_eq(moe_client_complete(client, "Once upon a time", &p, on_token, &k, &s), 0);
    ck_assert_int_gt(k.pieces, 0);
    ck_assert_str_eq(k.text, s.text);
    ck_assert_str_eq(s.finish_reason, "length");
    ck_assert_int_eq(s.completion_tokens, 12);
    ck_assert_int_gt(s.prompt_tokens, 0);
    ck_assert_int_eq(moe_client_complete(client, "Once upon a time", &p, NULL, NULL, &b), 0);
    ck_assert_str_eq(b.text, s.text);
    ck_assert_str_eq(b.finish_reason, "length");
    ck_assert_int_eq(b.completion_tokens, 12);
    moe_client_result_clear(&s);
    moe_client_result_clear(&b);
}
END_TEST

START_TEST(a_streamed_chat_answers_through_the_chat_template)
{
    moe_client_params p;
    moe_client_params_init(&p);
    p.max_tokens = 8;
    p.seed = 7;
    p.has_seed = 1;
    static collect_t k;
    memset(&k, 0, sizeof(k));
    moe_client_message m[] = {{"system", "Be brief."}, {"user", "Hello?"}};
    moe_client_result r;
    ck_assert_int_eq(moe_client_chat(client, m, 2, &p, on_token, &k, &r), 0);
    ck_assert_str_eq(k.text, r.text);
    ck_assert(strcmp(r.finish_reason, "length") == 0 || strcmp(r.finish_reason, "stop") == 0);
    ck_assert_int_le(r.completion_tokens, 8);
    ck_assert_int_gt(r.prompt_tokens, 0);
    moe_client_result_clear(&r);
}
END_TEST

static int count_bytes(void *ud, const char *text, size_t len, unsigned flags)
{
    *(size_t *)ud += len;
    return 0;
}

START_TEST(long_sampled_streams_parse_every_event_whatever_bytes_the_model_emits)
{
    /* A synthetic model emits any token, control bytes and NUL included. */
    for (int seed = 1; seed <= 3; seed++) {
        moe_client_params p;
        moe_client_params_init(&p);
        p.max_tokens = 256;
        p.ignore_eos = 1;
        p.has_seed = 1;
        p.seed = seed;
        size_t bytes = 0;
        moe_client_result r;
        int rc = moe_client_complete(client, "x", &p, count_bytes, &bytes, &r);
        ck_assert_msg(rc == 0, "seed %d: %s", seed, moe_client_errmsg(client));
        ck_assert_uint_eq(r.text_len, bytes);
        ck_assert_int_eq(r.completion_tokens, 256);
        moe_client_result_clear(&r);
    }
}
END_TEST

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

START_TEST(cancel_mid_stream_frees_the_sequence_and_the_daemon_serves_on)
{
    moe_client_params p;
    moe_client_params_init(&p);
    p.max_tokens = 4000;
    p.ignore_eos = 1;
    static collect_t k;
    memset(&k, 0, sizeof(k));
    k.stop_after = 3;
    double t0 = now_s();
    ck_assert_int_eq(moe_client_complete(client, "Once upon a time", &p, on_token, &k, NULL),
                     -ECANCELED);
    ck_assert_int_eq(k.pieces, 3);
    ck_assert(now_s() - t0 < 30);
    /* the daemon sees the hang-up and counts a cancelled generation */
    double cancelled = 0;
    for (int i = 0; i < 200 && cancelled < 1; i++) {
        char *text;
        ck_assert_int_eq(moe_client_metrics(client, &text), 0);
        moe_client_metrics_get(text, "moed_generations_total{outcome=\"cancelled\"}", &cancelled);
        free(text);
        if (cancelled < 1)
            nanosleep(&(struct timespec){.tv_nsec = 50000000}, NULL);
    }
    ck_assert(cancelled >= 1);
    ck_assert_int_eq(moe_client_health(client, NULL), 0);
}
END_TEST

START_TEST(permission_denied_by_the_socket_is_eacces)
{
    if (geteuid() != 0)
        return; /* the socket's folder is ours; only root can try as someone else */
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        if (setgid(65534) < 0 || setuid(65534) < 0)
            _exit(10);
        _exit(moe_client_connect(client) == -EACCES ? 0 : 11);
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status));
    ck_assert_int_eq(WEXITSTATUS(status), 0);
}
END_TEST

static int spawn(char *const argv[], const char *out, pid_t *ret)
{
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, out, O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    int rc = posix_spawn(ret, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    return -rc;
}

static void show_log(void)
{
    FILE *f = fopen(logpath, "r");
    char line[512];
    while (f && fgets(line, sizeof(line), f))
        fputs(line, stderr);
    if (f)
        fclose(f);
}

int main(void)
{
    const char *build = getenv("MOE_BUILDDIR");
    char moed[512], moe[512];
    snprintf(moed, sizeof(moed), "%s/daemon/moed", build ? build : "build");
    snprintf(moe, sizeof(moe), "%s/tools/moe", build ? build : "build");
    if (access(moed, X_OK) != 0 || access(moe, X_OK) != 0) {
        printf("skip: %s or %s is not built\n", moed, moe);
        return 77;
    }
    snprintf(dir, sizeof(dir), "/tmp/moe-client-moed.XXXXXX");
    if (!mkdtemp(dir))
        return 1;
    snprintf(sock, sizeof(sock), "%s/moed.sock", dir);
    snprintf(model, sizeof(model), "%s/m.gguf", dir);
    snprintf(logpath, sizeof(logpath), "%s/log", dir);
    pid_t pid;
    int status;
    char *mk[] = {moe, "mkmodel", "--seed", "1", "-o", model, NULL};
    if (spawn(mk, logpath, &pid) < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0) {
        printf("skip: moe mkmodel cannot make a model:\n");
        fflush(stdout);
        show_log();
        unlink(model);
        unlink(logpath);
        rmdir(dir);
        return 77;
    }
    /* the library is under test, not the engine: the CPU reference is enough (and has no
     * driver for the sanitizer build's leak check to see) */
    char *run[] = {moed, "--config=/dev/null", "--model", model, "--socket", sock,
                   "--engine=reference", NULL};
    if (spawn(run, logpath, &pid) < 0)
        return 1;
    moe_client *c;
    if (moe_client_new(sock, &c) < 0)
        return 1;
    int rc = -1;
    for (int i = 0; i < 600 && rc != 0; i++) {
        rc = moe_client_health(c, NULL);
        if (rc != 0) {
            if (waitpid(pid, &status, WNOHANG) == pid)
                break;
            nanosleep(&(struct timespec){.tv_nsec = 50000000}, NULL);
        }
    }
    moe_client_free(c);
    int failed = 1;
    if (rc != 0) {
        fprintf(stderr, "moed did not become healthy:\n");
        show_log();
    } else {
        Suite *s = suite_create("client-moed");
        TCase *tc = tcase_create("moed");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, health_models_and_metrics_answer_over_the_real_socket);
        tcase_add_test(tc, a_refused_request_is_einval_with_the_daemons_message);
        tcase_add_test(tc, streamed_and_blocking_greedy_completions_agree);
        tcase_add_test(tc, a_streamed_chat_answers_through_the_chat_template);
        tcase_add_test(tc, long_sampled_streams_parse_every_event_whatever_bytes_the_model_emits);
        tcase_add_test(tc, cancel_mid_stream_frees_the_sequence_and_the_daemon_serves_on);
        tcase_add_test(tc, permission_denied_by_the_socket_is_eacces);
        suite_add_tcase(s, tc);
        SRunner *sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
    }
    kill(pid, SIGTERM);
    waitpid(pid, &status, 0);
    if (failed)
        show_log();
    unlink(model);
    unlink(logpath);
    unlink(sock);
    rmdir(dir);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
