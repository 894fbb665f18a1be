/* tests/gpu: context (device choice, description, pipeline cache), memory (sub-allocation,
 * staging, imported host memory, budgets and -ENOMEM), command buffers, and the copy kernel. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test_gpu.h"

START_TEST(describes_the_chosen_device)
{
    const vkc_device_info_t *in = vkc_ctx_info(ctx);
    ck_assert(in->name[0]);
    ck_assert(in->driver[0]);
    ck_assert_uint_eq(strlen(in->uuid), 32);
    ck_assert_uint_gt(in->subgroup_size, 0);
    ck_assert_uint_gt(in->max_storage_range, 0);
    ck_assert_uint_gt(in->n_heaps, 0);
    ck_assert(in->validation);
    char line[1024];
    ck_assert_int_gt(vkc_device_info_format(in, line, sizeof(line)), 0);
    ck_assert_ptr_nonnull(strstr(line, in->name));
}
END_TEST

/* A second context on the same device, chosen by index, UUID or name; a bad name fails. */
static int ctx_with_device(const char *want)
{
    vkc_options_t opt = {.device = want, .validation = -1};
    vkc_ctx_t *c = NULL;
    char err[256];
    int r = vkc_ctx_new(&opt, &c, err, sizeof(err));
    if (r == 0) {
        ck_assert_str_eq(vkc_ctx_info(c)->uuid, vkc_ctx_info(ctx)->uuid);
        ck_assert_uint_eq(vkc_ctx_validation_messages(c, NULL, 0), 0);
        vkc_ctx_free(c);
    } else {
        ck_assert(err[0]);
    }
    return r;
}

START_TEST(chooses_device_by_index_uuid_or_name)
{
    const vkc_device_info_t *in = vkc_ctx_info(ctx);
    char idx[16];
    snprintf(idx, sizeof(idx), "%u", in->index);
    ck_assert_int_eq(ctx_with_device(idx), 0);
    ck_assert_int_eq(ctx_with_device(in->uuid), 0);
    char part[8];
    snprintf(part, sizeof(part), "%.4s", in->name); /* a prefix, in another case */
    for (char *p = part; *p; p++)
        *p = (char)(*p ^ 0x20 * ((*p | 0x20) >= 'a' && (*p | 0x20) <= 'z'));
    ck_assert_int_eq(ctx_with_device(part), 0);
    ck_assert_int_eq(ctx_with_device("no such device anywhere"), -ENODEV);
    ck_assert_int_eq(ctx_with_device("99"), -ENODEV);
}
END_TEST

START_TEST(persists_the_pipeline_cache)
{
    char dir[] = "/tmp/moe-gpu-test-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    for (int round = 0; round < 2; round++) {
        vkc_options_t opt = {.cache_dir = dir, .validation = -1};
        vkc_ctx_t *c;
        vkc_cmd_t *k;
        ck_assert_int_eq(vkc_ctx_new(&opt, &c, NULL, 0), 0);
        ck_assert(vkc_ctx_info(c)->pipeline_cache_loaded == (round == 1));
        vkc_buffer_t *a, *b;
        ck_assert_int_eq(vkc_buffer_new(c, VKC_MEM_HOST, 4096, &a), 0);
        ck_assert_int_eq(vkc_buffer_new(c, VKC_MEM_HOST, 4096, &b), 0);
        ck_assert_int_eq(vkc_cmd_new(c, &k), 0);
        ck_assert_int_eq(vkc_cmd_begin(k), 0);
        ck_assert_int_eq(vkc_cmd_copy(k, (vkc_view_t){a, 0}, (vkc_view_t){b, 0}, 4096), 0);
        ck_assert_int_eq(vkc_cmd_submit_wait(k), 0);
        ck_assert_uint_eq(vkc_ctx_validation_messages(c, NULL, 0), 0);
        vkc_cmd_free(k);
        vkc_buffer_free(a);
        vkc_buffer_free(b);
        vkc_ctx_free(c);
    }
    char path[256];
    snprintf(path, sizeof(path), "%s/moed-pipelines-%s.bin", dir, vkc_ctx_info(ctx)->uuid);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_int_gt(st.st_size, 0);
    unlink(path);
    rmdir(dir);
}
END_TEST

START_TEST(suballocates_and_reuses_blocks)
{
    vkc_buffer_t *b[64];
    uint64_t before = vkc_ctx_device_bytes(ctx);
    for (int i = 0; i < 64; i++)
        ck_assert_int_eq(vkc_buffer_new(ctx, VKC_MEM_DEVICE, 1000 + 37 * (uint64_t)i, &b[i]), 0);
    uint64_t during = vkc_ctx_device_bytes(ctx);
    ck_assert_uint_le(during - before, 256ull << 20); /* one block, not 64 */
    /* distinct, non-overlapping contents */
    for (int i = 0; i < 64; i++) {
        unsigned char v[1000];
        memset(v, i, sizeof(v));
        ck_assert_int_eq(vkc_buffer_write(ctx, b[i], 0, v, sizeof(v)), 0);
    }
    for (int i = 0; i < 64; i++) {
        unsigned char v[1000];
        read_back(b[i], v, sizeof(v));
        ck_assert_uint_eq(v[0], (unsigned)i);
        ck_assert_uint_eq(v[999], (unsigned)i);
    }
    for (int i = 0; i < 64; i += 2)
        vkc_buffer_free(b[i]);
    for (int i = 0; i < 64; i += 2)
        ck_assert_int_eq(vkc_buffer_new(ctx, VKC_MEM_DEVICE, 500, &b[i]), 0);
    ck_assert_uint_eq(vkc_ctx_device_bytes(ctx), during);
    for (int i = 0; i < 64; i++)
        vkc_buffer_free(b[i]);
    ck_assert_uint_eq(vkc_ctx_device_bytes(ctx), before);
}
END_TEST

START_TEST(allocation_past_the_heap_is_enomem)
{
    const vkc_device_info_t *in = vkc_ctx_info(ctx);
    uint64_t biggest = 0;
    for (uint32_t i = 0; i < in->n_heaps; i++)
        if (in->heaps[i].size > biggest)
            biggest = in->heaps[i].size;
    vkc_buffer_t *b = NULL;
    ck_assert_int_eq(vkc_buffer_new(ctx, VKC_MEM_DEVICE, biggest * 2, &b), -ENOMEM);
    ck_assert_int_eq(vkc_buffer_new(ctx, VKC_MEM_HOST, biggest * 2, &b), -ENOMEM);
    ck_assert_int_eq(vkc_buffer_new(ctx, VKC_MEM_DEVICE, UINT64_MAX - 10, &b), -ENOMEM);
    ck_assert_ptr_null(b);
    /* a context limited to 8 MiB of device memory: the caller sees -ENOMEM, frees, retries */
    vkc_options_t opt = {.validation = -1, .device_limit = 8 << 20};
    vkc_ctx_t *c;
    ck_assert_int_eq(vkc_ctx_new(&opt, &c, NULL, 0), 0);
    vkc_buffer_t *x, *y;
    ck_assert_int_eq(vkc_buffer_new(c, VKC_MEM_DEVICE, 6 << 20, &x), 0);
    ck_assert_int_eq(vkc_buffer_new(c, VKC_MEM_DEVICE, 6 << 20, &y), -ENOMEM);
    vkc_buffer_free(x);
    ck_assert_int_eq(vkc_buffer_new(c, VKC_MEM_DEVICE, 6 << 20, &y), 0);
    vkc_buffer_free(y);
    ck_assert_uint_eq(vkc_ctx_validation_messages(c, NULL, 0), 0);
    vkc_ctx_free(c);
}
END_TEST

START_TEST(host_buffers_are_mapped_and_have_addresses)
{
    vkc_buffer_t *h;
    ck_assert_int_eq(vkc_buffer_new(ctx, VKC_MEM_HOST, 12345, &h), 0);
    ck_assert_ptr_nonnull(vkc_buffer_map(h));
    ck_assert_uint_eq(vkc_buffer_size(h), 12345);
    if (vkc_ctx_info(ctx)->buffer_device_address)
        ck_assert_uint_ne(vkc_buffer_address(h), 0);
    vkc_buffer_free(h);
}
END_TEST

START_TEST(copies_through_imported_host_memory)
{
    const vkc_device_info_t *in = vkc_ctx_info(ctx);
    if (!in->host_import)
        return; /* nothing to test on this device */
    size_t n = 3 * (size_t)in->import_alignment;
    unsigned char *mem = aligned_alloc(in->import_alignment, n);
    ck_assert_ptr_nonnull(mem);
    for (size_t i = 0; i < n; i++)
        mem[i] = (unsigned char)(i * 7 + 3);
    vkc_buffer_t *imp, *dev, *bad;
    ck_assert_int_eq(vkc_buffer_import(ctx, mem + 1, n - in->import_alignment, &bad), -EINVAL);
    ck_assert_int_eq(vkc_buffer_import(ctx, mem, n, &imp), 0);
    ck_assert_int_eq(vkc_buffer_kind(imp), VKC_MEM_IMPORTED);
    ck_assert_ptr_eq(vkc_buffer_map(imp), mem);
    dev = buf_with(NULL, n);
    begin();
    ck_assert_int_eq(vkc_cmd_copy(cmd, (vkc_view_t){imp, 0}, (vkc_view_t){dev, 0}, n), 0);
    vkc_cmd_barrier(cmd, "the device copy is read back into the imported pages");
    ck_assert_int_eq(vkc_cmd_copy(cmd, (vkc_view_t){dev, 0}, (vkc_view_t){imp, 0}, n / 2), 0);
    submit();
    unsigned char *back = malloc(n);
    read_back(dev, back, n);
    ck_assert_mem_eq(back, mem, n);
    free(back);
    vkc_buffer_free(dev);
    vkc_buffer_free(imp);
    free(mem);
}
END_TEST

START_TEST(copy_kernel_copies)
{
    size_t n = 16 * 100003;
    unsigned char *a = malloc(n), *b = malloc(n);
    for (size_t i = 0; i < n; i++)
        a[i] = (unsigned char)(i * 131 + (i >> 9));
    vkc_buffer_t *src = buf_with(a, n), *dst = buf_with(NULL, n + 64);
    begin();
    ck_assert_int_eq(vkc_cmd_copy(cmd, (vkc_view_t){src, 0}, (vkc_view_t){dst, 0}, n), 0);
    ck_assert_int_eq(vkc_cmd_copy(cmd, (vkc_view_t){src, 0}, (vkc_view_t){dst, 0}, 15), -EINVAL);
    ck_assert_int_eq(vkc_cmd_submit_wait(cmd), -EINVAL); /* the recording error sticks */
    begin();
    ck_assert_int_eq(vkc_cmd_copy(cmd, (vkc_view_t){src, 0}, (vkc_view_t){dst, 0}, n), 0);
    submit();
    read_back(dst, b, n);
    ck_assert_mem_eq(a, b, n);
    vkc_buffer_free(src);
    vkc_buffer_free(dst);
    free(a);
    free(b);
}
END_TEST

/* A recording abandoned after an error (never submitted) does not poison the next begin. */
START_TEST(an_abandoned_recording_can_be_begun_again)
{
    size_t n = 4096;
    unsigned char *a = malloc(n), *b = malloc(n);
    memset(a, 0x5a, n);
    vkc_buffer_t *src = buf_with(a, n), *dst = buf_with(NULL, n);
    begin();
    ck_assert_int_eq(vkc_cmd_copy(cmd, (vkc_view_t){src, 0}, (vkc_view_t){dst, 0}, 15), -EINVAL);
    begin(); // no submit in between
    ck_assert_int_eq(vkc_cmd_copy(cmd, (vkc_view_t){src, 0}, (vkc_view_t){dst, 0}, n), 0);
    submit();
    read_back(dst, b, n);
    ck_assert_mem_eq(a, b, n);
    vkc_buffer_free(src);
    vkc_buffer_free(dst);
    free(a);
    free(b);
    no_validation_messages();
}
END_TEST

START_TEST(binding_past_the_storage_range_is_e2big)
{
    uint64_t range = vkc_ctx_info(ctx)->max_storage_range;
    if (range > (512ull << 20))
        return; /* too big to allocate in a unit test */
    vkc_buffer_t *big, *small;
    ck_assert_int_eq(vkc_buffer_new(ctx, VKC_MEM_DEVICE, range + 4096, &big), 0);
    small = buf_with(NULL, 4096);
    begin();
    ck_assert_int_eq(vkc_cmd_copy(cmd, (vkc_view_t){big, 0}, (vkc_view_t){small, 0}, range + 16),
                     -E2BIG);
    ck_assert_int_eq(vkc_cmd_submit(cmd, NULL), -E2BIG);
    vkc_buffer_free(big);
    vkc_buffer_free(small);
    no_validation_messages();
}
END_TEST

void add_context_tests(Suite *s)
{
    TCase *tc = tcase_create("context");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, describes_the_chosen_device);
    tcase_add_test(tc, chooses_device_by_index_uuid_or_name);
    tcase_add_test(tc, persists_the_pipeline_cache);
    tcase_add_test(tc, suballocates_and_reuses_blocks);
    tcase_add_test(tc, allocation_past_the_heap_is_enomem);
    tcase_add_test(tc, host_buffers_are_mapped_and_have_addresses);
    tcase_add_test(tc, copies_through_imported_host_memory);
    tcase_add_test(tc, copy_kernel_copies);
    tcase_add_test(tc, an_abandoned_recording_can_be_begun_again);
    tcase_add_test(tc, binding_past_the_storage_range_is_e2big);
    suite_add_tcase(s, tc);
}
