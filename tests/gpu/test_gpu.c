/* tests/gpu: the Vulkan compute module (daemon/gpu) on whatever device the machine has
 * (lavapipe in CI), with the validation layer on (MOE_VK_VALIDATION=1 from tests/meson.build):
 * any validation message fails the test that caused it. Kernels are compared with the CPU
 * reference (tests/ref/ref_ops.h) on random inputs whose sizes are not multiples of the
 * workgroup sizes; block decoders bit-exactly with quant_dequantize(). Tolerances are stated
 * per test as a normalized error: max |gpu - ref| / max(1, max |ref|).
 * Without any Vulkan device the program exits 77 (skip) and says why. */
#include <check.h>
#include <dlfcn.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gpu/vkc.h"
#include "model/quant.h"
#include "ref_ops.h"
#include "test_gpu.h"

/* One context and cmd for the whole run (CK_NOFORK): creating a device per test costs
 * seconds under the validation layer. */
vkc_ctx_t *ctx;
vkc_cmd_t *cmd;
static uint64_t seen_messages;
static uint64_t rng = 0x9e3779b97f4a7c15ull;

float frand(void) /* uniform in [-1, 1) */
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 40) * (1.0 / (1ull << 24))) * 2.0f - 1.0f;
}

void fill(float *v, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++)
        v[i] = frand() * scale;
}

void no_validation_messages(void)
{
    char last[512];
    uint64_t n = vkc_ctx_validation_messages(ctx, last, sizeof(last));
    uint64_t fresh = n - seen_messages;
    seen_messages = n;
    ck_assert_msg(fresh == 0, "%llu validation message(s), last: %s", (unsigned long long)fresh,
                  last);
}

vkc_buffer_t *buf_with(const void *data, size_t n)
{
    vkc_buffer_t *b;
    ck_assert_int_eq(vkc_buffer_new(ctx, VKC_MEM_DEVICE, n, &b), 0);
    if (data)
        ck_assert_int_eq(vkc_buffer_write(ctx, b, 0, data, n), 0);
    return b;
}

void read_back(const vkc_buffer_t *b, void *dst, size_t n)
{
    ck_assert_int_eq(vkc_buffer_read(ctx, b, 0, dst, n), 0);
}

double norm_err(const float *got, const float *want, size_t n)
{
    double max_err = 0, max_ref = 1;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - want[i]);
        if (!(e <= max_err)) /* NaN counts as infinite */
            max_err = isnan(e) ? INFINITY : e;
        if (fabs(want[i]) > max_ref)
            max_ref = fabs(want[i]);
    }
    return max_err / max_ref;
}

void begin(void)
{
    ck_assert_int_eq(vkc_cmd_begin(cmd), 0);
}

void submit(void)
{
    ck_assert_int_eq(vkc_cmd_submit_wait(cmd), 0);
    no_validation_messages();
}

void add_ops2_tests(Suite *s); /* test_gpu_ops2.c */

/* Keep the Vulkan driver and layer libraries mapped after vkDestroyInstance unloads them, so
 * that LeakSanitizer can name their frames (tests/gpu/lsan.supp suppresses their own leaks,
 * which otherwise show up as "<unknown module>"). Missing libraries are fine. */
static void pin_vulkan_libraries(void)
{
    static const char *libs[] = {"libvulkan_lvp.so", "libVkLayer_khronos_validation.so"};
    for (size_t i = 0; i < sizeof(libs) / sizeof(libs[0]); i++)
        dlopen(libs[i], RTLD_NOW | RTLD_NODELETE);
}

int main(void)
{
    pin_vulkan_libraries();
    char err[256];
    vkc_options_t opt = {.validation = -1};
    int r = vkc_ctx_new(&opt, &ctx, err, sizeof(err));
    if (r == -ENODEV) {
        printf("SKIP: no Vulkan device: %s\n", err);
        return 77;
    }
    if (r < 0) {
        fprintf(stderr, "vkc_ctx_new: %s (%s)\n", strerror(-r), err);
        return 1;
    }
    char line[1024];
    vkc_device_info_format(vkc_ctx_info(ctx), line, sizeof(line));
    printf("%s\n", line);
    if (vkc_cmd_new(ctx, &cmd) < 0)
        return 1;

    Suite *s = suite_create("gpu");
    add_context_tests(s);
    add_matvec_tests(s);
    add_ops_tests(s);
    add_ops2_tests(s);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    vkc_cmd_free(cmd);
    vkc_ctx_free(ctx);
    return failed ? 1 : 0;
}
