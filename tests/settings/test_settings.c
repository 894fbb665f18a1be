/* The settings table: defaults, config file lines, flags, range checks, and the promise
 * that the table drives --help and the man page. */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include "settings.h"

static char err[256];

START_TEST(defaults_are_in_range_and_documented)
{
    settings_t s;
    ck_assert_int_eq(settings_init(&s), 0);
    ck_assert_str_eq(s.socket, "/run/moed/moed.sock");
    ck_assert_uint_eq(s.socket_mode, 0660);
    ck_assert_uint_eq(s.ctx, 4096);
    ck_assert_uint_eq(s.max_body, 1024 * 1024);
    ck_assert(s.io_direct);
    ck_assert(!s.log_prompts);
    settings_clear(&s);
}
END_TEST

START_TEST(sizes_take_suffixes_and_ranges_are_enforced)
{
    settings_t s;
    ck_assert_int_eq(settings_init(&s), 0);
    ck_assert_int_eq(settings_set(&s, "gpu_cache", "12G", err, sizeof(err)), 0);
    ck_assert_uint_eq(s.gpu_cache, 12ull << 30);
    ck_assert_int_eq(settings_set(&s, "host-cache", "512MiB", err, sizeof(err)), 0);
    ck_assert_uint_eq(s.host_cache, 512ull << 20);
    ck_assert_int_eq(settings_set(&s, "ctx", "8", err, sizeof(err)), -ERANGE);
    ck_assert_ptr_nonnull(strstr(err, "ctx"));
    ck_assert_uint_eq(s.ctx, 4096); /* a refused value changes nothing */
    ck_assert_int_eq(settings_set(&s, "ctx", "-5", err, sizeof(err)), -ERANGE);
    ck_assert_int_eq(settings_set(&s, "ctx", "99999999999999999999999", err, sizeof(err)),
                     -ERANGE);
    ck_assert_int_eq(settings_set(&s, "parallel", "4x", err, sizeof(err)), -ERANGE);
    ck_assert_int_eq(settings_set(&s, "gpu-cache", "1Q", err, sizeof(err)), -ERANGE);
    ck_assert_int_eq(settings_set(&s, "nope", "1", err, sizeof(err)), -ENOENT);
    ck_assert_int_eq(settings_set(&s, "io-backend", "pread", err, sizeof(err)), 0);
    ck_assert_uint_eq(s.io_backend, 2);
    ck_assert_int_eq(settings_set(&s, "io-backend", "aio", err, sizeof(err)), -EINVAL);
    ck_assert_int_eq(settings_set(&s, "socket-mode", "0600", err, sizeof(err)), 0);
    ck_assert_uint_eq(s.socket_mode, 0600);
    ck_assert_int_eq(settings_set(&s, "socket-mode", "0999", err, sizeof(err)), -EINVAL);
    settings_clear(&s);
}
END_TEST

START_TEST(config_file_lines_and_errors_name_the_line)
{
    char path[] = "/tmp/moe-settings-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    const char *text = "# comment\n\nmodel = /m/x.gguf\n  parallel=8  \nallow_users = \"a, b\"\n"
                       "prefetch = off\n";
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    settings_t s;
    ck_assert_int_eq(settings_init(&s), 0);
    ck_assert_int_eq(settings_load_file(&s, path, err, sizeof(err)), 0);
    ck_assert_str_eq(s.model, "/m/x.gguf");
    ck_assert_uint_eq(s.parallel, 8);
    ck_assert_str_eq(s.allow_users, "a, b");
    ck_assert(!s.prefetch);

    fd = open(path, O_WRONLY | O_TRUNC);
    const char *bad = "model = ok\nqueue = lots\n";
    ck_assert_int_eq(write(fd, bad, strlen(bad)), (ssize_t)strlen(bad));
    close(fd);
    ck_assert_int_lt(settings_load_file(&s, path, err, sizeof(err)), 0);
    ck_assert_ptr_nonnull(strstr(err, ":2: queue"));
    unlink(path);
    ck_assert_int_eq(settings_load_file(&s, path, err, sizeof(err)), -ENOENT);
    settings_clear(&s);
}
END_TEST

START_TEST(flags_override_and_stop_at_first_argument)
{
    settings_t s;
    ck_assert_int_eq(settings_init(&s), 0);
    char *argv[] = {"moed", "--ctx=2048", "--socket", "/tmp/s", "--no-prefetch",
                    "--log-prompts", "rest", NULL};
    ck_assert_int_eq(settings_parse_args(&s, 7, argv, err, sizeof(err)), 6);
    ck_assert_uint_eq(s.ctx, 2048);
    ck_assert_str_eq(s.socket, "/tmp/s");
    ck_assert(!s.prefetch);
    ck_assert(s.log_prompts);
    char *bad[] = {"moed", "--bogus", NULL};
    ck_assert_int_eq(settings_parse_args(&s, 2, bad, err, sizeof(err)), -ENOENT);
    char *missing[] = {"moed", "--ctx", NULL};
    ck_assert_int_eq(settings_parse_args(&s, 2, missing, err, sizeof(err)), -EINVAL);
    settings_clear(&s);
}
END_TEST

START_TEST(help_and_man_page_list_every_setting)
{
    char *buf = NULL, *man = NULL, *dump = NULL;
    size_t n = 0, mn = 0, dn = 0;
    FILE *f = open_memstream(&buf, &n);
    settings_print_help(f);
    fclose(f);
    f = open_memstream(&man, &mn);
    settings_print_man(f);
    fclose(f);
    settings_t s;
    ck_assert_int_eq(settings_init(&s), 0);
    f = open_memstream(&dump, &dn);
    settings_dump(&s, f);
    fclose(f);
    /* Every key of the dump appears in --help and in the man page. */
    int keys = 0;
    for (char *line = strtok(dump, "\n"); line; line = strtok(NULL, "\n")) {
        char key[64], flag[80], manl[80];
        ck_assert_int_eq(sscanf(line, "%63s", key), 1);
        snprintf(flag, sizeof(flag), "--%s=", key);
        snprintf(manl, sizeof(manl), "\\fB%s\\fR", key);
        ck_assert_msg(strstr(buf, flag), "%s missing from --help", key);
        ck_assert_msg(strstr(man, manl), "%s missing from the man page", key);
        keys++;
    }
    ck_assert_int_ge(keys, 20);
    free(buf);
    free(man);
    free(dump);
    settings_clear(&s);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("settings");
    TCase *tc = tcase_create("settings");
    tcase_add_test(tc, defaults_are_in_range_and_documented);
    tcase_add_test(tc, sizes_take_suffixes_and_ranges_are_enforced);
    tcase_add_test(tc, config_file_lines_and_errors_name_the_line);
    tcase_add_test(tc, flags_override_and_stop_at_first_argument);
    tcase_add_test(tc, help_and_man_page_list_every_setting);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
