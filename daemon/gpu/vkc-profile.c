/* Device time per kernel, for finding where a step goes: with MOE_VK_PROFILE=1 in the
 * environment every command buffer writes a timestamp after each dispatch, the differences
 * are summed per pipeline when the submission completes, and the table (calls, total, mean
 * per pipeline, largest first) goes to stderr when the context is freed. A barrier's wait is
 * charged to the dispatch after it, which is what it delays. Off (the default) it costs one
 * branch per dispatch. The same idea as llama.cpp's GGML_VK_PERF_LOGGER; the timestamp
 * semantics are the Vulkan spec's (vkCmdWriteTimestamp, timestampPeriod in ns per tick). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu/vkc-internal.h"

#define PROF_MAX 4096 /* timestamps per recording; dispatches past it go uncounted */

void vkc_profile_init(vkc_ctx_t *ctx)
{
    const char *e = getenv("MOE_VK_PROFILE");
    if (!e || strcmp(e, "1"))
        return;
    VkPhysicalDeviceProperties pr;
    vkGetPhysicalDeviceProperties(ctx->phys, &pr);
    uint32_t n = 0;
    vkGetPhysicalDeviceQueueFamilyProperties(ctx->phys, &n, NULL);
    VkQueueFamilyProperties *qf = calloc(n ? n : 1, sizeof(*qf));
    if (!qf)
        return;
    vkGetPhysicalDeviceQueueFamilyProperties(ctx->phys, &n, qf);
    bool ok = ctx->queue_family < n && qf[ctx->queue_family].timestampValidBits > 0;
    free(qf);
    if (!ok) {
        fprintf(stderr, "MOE_VK_PROFILE: %s has no timestamps on its compute queue\n",
                ctx->info.name);
        return;
    }
    ctx->prof_period_ns = pr.limits.timestampPeriod;
    ctx->profile = true;
}

int vkc_profile_cmd_new(vkc_cmd_t *cmd)
{
    vkc_ctx_t *ctx = cmd->ctx;
    if (!ctx->profile)
        return 0;
    VkQueryPoolCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO,
                                .queryType = VK_QUERY_TYPE_TIMESTAMP,
                                .queryCount = PROF_MAX};
    cmd->q_label = calloc(PROF_MAX, sizeof(*cmd->q_label));
    if (!cmd->q_label)
        return -ENOMEM;
    return vkc_errno(vkCreateQueryPool(ctx->device, &ci, NULL, &cmd->q_pool));
}

void vkc_profile_cmd_free(vkc_cmd_t *cmd)
{
    if (cmd->q_pool)
        vkDestroyQueryPool(cmd->ctx->device, cmd->q_pool, NULL);
    free(cmd->q_label);
}

/* After vkBeginCommandBuffer: the recording's first timestamp. */
void vkc_profile_begin(vkc_cmd_t *cmd)
{
    if (!cmd->q_pool)
        return;
    vkCmdResetQueryPool(cmd->cb, cmd->q_pool, 0, PROF_MAX);
    vkCmdWriteTimestamp(cmd->cb, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, cmd->q_pool, 0);
    cmd->n_q = 1;
}

void vkc_profile_dispatch(vkc_cmd_t *cmd, const vkc_pipeline_t *p)
{
    if (!cmd->q_pool || cmd->n_q >= PROF_MAX)
        return;
    vkCmdWriteTimestamp(cmd->cb, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, cmd->q_pool, cmd->n_q);
    cmd->q_label[cmd->n_q++] = (uint16_t)(p - cmd->ctx->pipelines);
}

/* The submission completed: its timestamps into the per-pipeline sums. */
void vkc_profile_collect(vkc_cmd_t *cmd)
{
    vkc_ctx_t *ctx = cmd->ctx;
    if (!cmd->q_pool || cmd->n_q < 2) {
        cmd->n_q = 0;
        return;
    }
    uint64_t *ts = malloc(cmd->n_q * sizeof(*ts));
    if (ts && vkGetQueryPoolResults(ctx->device, cmd->q_pool, 0, cmd->n_q,
                                    cmd->n_q * sizeof(*ts), ts, sizeof(*ts),
                                    VK_QUERY_RESULT_64_BIT) == VK_SUCCESS) {
        for (uint32_t i = 1; i < cmd->n_q; i++) {
            uint16_t l = cmd->q_label[i];
            ctx->prof[l].ns += (uint64_t)((double)(ts[i] - ts[i - 1]) * ctx->prof_period_ns);
            ctx->prof[l].calls++;
        }
        ctx->prof_submits++;
    }
    free(ts);
    cmd->n_q = 0;
}

static int by_total(const void *a, const void *b, void *arg)
{
    const vkc_ctx_t *ctx = arg;
    uint64_t x = ctx->prof[*(const uint16_t *)a].ns, y = ctx->prof[*(const uint16_t *)b].ns;
    return x < y ? 1 : x > y ? -1 : 0;
}

void vkc_profile_report(vkc_ctx_t *ctx)
{
    if (!ctx->profile || !ctx->prof_submits)
        return;
    uint16_t idx[VKC_MAX_PIPELINES];
    uint64_t total = 0;
    for (size_t i = 0; i < ctx->n_pipelines; i++) {
        idx[i] = (uint16_t)i;
        total += ctx->prof[i].ns;
    }
    qsort_r(idx, ctx->n_pipelines, sizeof(idx[0]), by_total, ctx);
    fprintf(stderr, "MOE_VK_PROFILE: %s, %llu submissions, %.1f ms of device time\n",
            ctx->info.name, (unsigned long long)ctx->prof_submits, total / 1e6);
    fprintf(stderr, "  %6s %10s %9s %9s  %s\n", "share", "calls", "total ms", "mean us",
            "pipeline (module: specialization constants)");
    for (size_t k = 0; k < ctx->n_pipelines; k++) {
        const vkc_pipeline_t *p = &ctx->pipelines[idx[k]];
        const typeof(ctx->prof[0]) *s = &ctx->prof[idx[k]];
        if (!s->calls)
            continue;
        char spec[96] = "";
        size_t o = 0;
        for (uint32_t j = 0; j < p->n_spec && o < sizeof(spec); j++)
            o += (size_t)snprintf(spec + o, sizeof(spec) - o, "%s%u", j ? "," : ": ", p->spec[j]);
        fprintf(stderr, "  %5.1f%% %10llu %9.2f %9.1f  %s%s\n", 100.0 * s->ns / (total ? total : 1),
                (unsigned long long)s->calls, s->ns / 1e6, s->ns / 1e3 / s->calls, p->module,
                spec);
    }
}
