/* vkc-pipeline.c: compute pipelines built from the SPIR-V embedded at build time
 * (shaders/embed-spirv.py -> moe-spirv.c), one per (module, specialization constants),
 * created on first use through the context's pipeline cache and kept until the context is
 * freed; and the recording of a dispatch: a descriptor set of storage buffers from the cmd's
 * pools, push constants, and workgroup counts folded to the device's limits.
 * Each kernel has its own descriptor set layout: n storage buffers at bindings 0..n-1, the
 * order documented at the top of its .comp file. Specialization constant i has constant_id i.
 * Called by vkc-kernels.c while recording. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "gpu/vkc-internal.h"
#include "moe-spirv.h"

static const moe_spirv_module_t *find_module(const char *name)
{
    for (size_t i = 0; i < moe_spirv_count; i++)
        if (!strcmp(moe_spirv[i].name, name))
            return &moe_spirv[i];
    return NULL;
}

static void pipeline_destroy(vkc_ctx_t *ctx, vkc_pipeline_t *p)
{
    if (p->pipeline)
        vkDestroyPipeline(ctx->device, p->pipeline, NULL);
    if (p->layout)
        vkDestroyPipelineLayout(ctx->device, p->layout, NULL);
    if (p->dsl)
        vkDestroyDescriptorSetLayout(ctx->device, p->dsl, NULL);
    memset(p, 0, sizeof(*p));
}

static int pipeline_create(vkc_ctx_t *ctx, const moe_spirv_module_t *m, vkc_pipeline_t *p)
{
    VkDescriptorSetLayoutBinding b[VKC_MAX_BINDINGS];
    for (uint32_t i = 0; i < p->n_bindings; i++)
        b[i] = (VkDescriptorSetLayoutBinding){.binding = i,
                                              .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                              .descriptorCount = 1,
                                              .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT};
    VkDescriptorSetLayoutCreateInfo dci = {.sType =
                                               VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
                                           .bindingCount = p->n_bindings,
                                           .pBindings = b};
    int r = vkc_errno(vkCreateDescriptorSetLayout(ctx->device, &dci, NULL, &p->dsl));
    if (r < 0)
        return r;
    VkPushConstantRange pcr = {.stageFlags = VK_SHADER_STAGE_COMPUTE_BIT, .size = p->pc_size};
    VkPipelineLayoutCreateInfo lci = {.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
                                      .setLayoutCount = 1,
                                      .pSetLayouts = &p->dsl,
                                      .pushConstantRangeCount = p->pc_size ? 1 : 0,
                                      .pPushConstantRanges = &pcr};
    r = vkc_errno(vkCreatePipelineLayout(ctx->device, &lci, NULL, &p->layout));
    if (r < 0)
        return r;
    VkShaderModuleCreateInfo sci = {.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
                                    .codeSize = m->size,
                                    .pCode = m->words};
    VkShaderModule sm;
    r = vkc_errno(vkCreateShaderModule(ctx->device, &sci, NULL, &sm));
    if (r < 0)
        return r;
    VkSpecializationMapEntry e[VKC_MAX_SPEC];
    for (uint32_t i = 0; i < p->n_spec; i++)
        e[i] = (VkSpecializationMapEntry){.constantID = i, .offset = 4 * i, .size = 4};
    VkSpecializationInfo si = {
        .mapEntryCount = p->n_spec, .pMapEntries = e, .dataSize = 4 * p->n_spec, .pData = p->spec};
    VkComputePipelineCreateInfo ci = {
        .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
        .stage = {.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
                  .stage = VK_SHADER_STAGE_COMPUTE_BIT,
                  .module = sm,
                  .pName = "main",
                  .pSpecializationInfo = p->n_spec ? &si : NULL},
        .layout = p->layout};
    r = vkc_errno(
        vkCreateComputePipelines(ctx->device, ctx->pipeline_cache, 1, &ci, NULL, &p->pipeline));
    vkDestroyShaderModule(ctx->device, sm, NULL);
    return r;
}

int vkc_pipeline_get(vkc_ctx_t *ctx, const char *module, const uint32_t *spec, uint32_t n_spec,
                     uint32_t n_bindings, uint32_t pc_size, vkc_pipeline_t **ret)
{
    if (n_spec > VKC_MAX_SPEC || n_bindings > VKC_MAX_BINDINGS)
        return -EINVAL;
    for (size_t i = 0; i < ctx->n_pipelines; i++) {
        vkc_pipeline_t *p = &ctx->pipelines[i];
        if (!strcmp(p->module, module) && p->n_spec == n_spec &&
            !memcmp(p->spec, spec, 4 * n_spec)) {
            *ret = p;
            return 0;
        }
    }
    const moe_spirv_module_t *m = find_module(module);
    if (!m)
        return -ENOENT;
    if (ctx->n_pipelines == VKC_MAX_PIPELINES)
        return -ENOMEM;
    vkc_pipeline_t *p = &ctx->pipelines[ctx->n_pipelines];
    p->module = m->name;
    p->n_spec = n_spec;
    if (n_spec)
        memcpy(p->spec, spec, 4 * n_spec);
    p->n_bindings = n_bindings;
    p->pc_size = pc_size;
    int r = pipeline_create(ctx, m, p);
    if (r < 0) {
        pipeline_destroy(ctx, p);
        return r;
    }
    ctx->n_pipelines++;
    *ret = p;
    return 0;
}

void vkc_pipelines_fini(vkc_ctx_t *ctx)
{
    for (size_t i = 0; i < ctx->n_pipelines; i++)
        pipeline_destroy(ctx, &ctx->pipelines[i]);
    ctx->n_pipelines = 0;
}

/* A descriptor set for p from the cmd's pools, adding a pool when the current one is full. */
static int alloc_set(vkc_cmd_t *cmd, vkc_pipeline_t *p, VkDescriptorSet *ret)
{
    vkc_ctx_t *ctx = cmd->ctx;
    VkDescriptorSetAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
                                      .descriptorSetCount = 1,
                                      .pSetLayouts = &p->dsl};
    if (cmd->dpools) {
        ai.descriptorPool = cmd->dpools->pool;
        VkResult vr = vkAllocateDescriptorSets(ctx->device, &ai, ret);
        if (vr == VK_SUCCESS)
            return 0;
        if (vr != VK_ERROR_OUT_OF_POOL_MEMORY && vr != VK_ERROR_FRAGMENTED_POOL)
            return vkc_errno(vr);
    }
    vkc_dpool_t *dp = calloc(1, sizeof(*dp));
    if (!dp)
        return -ENOMEM;
    VkDescriptorPoolSize size = {.type = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                 .descriptorCount = 256 * VKC_MAX_BINDINGS};
    VkDescriptorPoolCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
                                     .maxSets = 256,
                                     .poolSizeCount = 1,
                                     .pPoolSizes = &size};
    int r = vkc_errno(vkCreateDescriptorPool(ctx->device, &ci, NULL, &dp->pool));
    if (r < 0) {
        free(dp);
        return r;
    }
    dp->next = cmd->dpools;
    cmd->dpools = dp;
    ai.descriptorPool = dp->pool;
    return vkc_errno(vkAllocateDescriptorSets(ctx->device, &ai, ret));
}

int vkc_cmd_dispatch(vkc_cmd_t *cmd, vkc_pipeline_t *p, const vkc_bind_t *binds, uint32_t n_binds,
                     const void *pc, uint32_t gx, uint32_t gz)
{
    vkc_ctx_t *ctx = cmd->ctx;
    const vkc_device_info_t *in = &ctx->info;
    if (!cmd->recording || n_binds != p->n_bindings)
        return vkc_cmd_fail(cmd, -EINVAL);
    if (gx == 0 || gz == 0)
        return 0;
    VkDescriptorBufferInfo bi[VKC_MAX_BINDINGS];
    for (uint32_t i = 0; i < n_binds; i++) {
        const vkc_bind_t *b = &binds[i];
        if (!b->buf || b->off > b->buf->size || b->need > b->buf->size - b->off)
            return vkc_cmd_fail(cmd, -EINVAL);
        uint64_t base;
        bi[i].buffer = vkc_buffer_vk(b->buf, &base);
        /* bind from an aligned offset; the kernel's own offset covers the remainder */
        uint64_t start = base + b->off;
        uint64_t a = in->storage_offset_alignment ? in->storage_offset_alignment : 1;
        bi[i].offset = start / a * a;
        /* + 16: the buffer's slack (vkc-memory.c), read by block decoders at a row's end */
        uint64_t range = start - bi[i].offset + (b->need ? b->need : 4);
        range = (range + 3) & ~3ull;
        if (b->buf->kind != VKC_MEM_IMPORTED && start + b->need + 16 <= b->buf->block->size &&
            range + 16 <= in->max_storage_range)
            range += 16;
        if (range > in->max_storage_range)
            return vkc_cmd_fail(cmd, -E2BIG);
        if (bi[i].offset + range > b->buf->block->size)
            range = b->buf->block->size - bi[i].offset;
        bi[i].range = range;
    }
    VkDescriptorSet set;
    int r = alloc_set(cmd, p, &set);
    if (r < 0)
        return vkc_cmd_fail(cmd, r);
    VkWriteDescriptorSet w[VKC_MAX_BINDINGS];
    for (uint32_t i = 0; i < n_binds; i++)
        w[i] = (VkWriteDescriptorSet){.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
                                      .dstSet = set,
                                      .dstBinding = i,
                                      .descriptorCount = 1,
                                      .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                      .pBufferInfo = &bi[i]};
    vkUpdateDescriptorSets(ctx->device, n_binds, w, 0, NULL);
    vkCmdBindPipeline(cmd->cb, VK_PIPELINE_BIND_POINT_COMPUTE, p->pipeline);
    vkCmdBindDescriptorSets(cmd->cb, VK_PIPELINE_BIND_POINT_COMPUTE, p->layout, 0, 1, &set, 0,
                            NULL);
    if (p->pc_size)
        vkCmdPushConstants(cmd->cb, p->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, p->pc_size, pc);
    /* fold x into x*y: shaders index workgroups with wg_linear() and skip the excess */
    uint32_t mx = in->max_workgroup_count[0], my = in->max_workgroup_count[1];
    uint32_t x = gx, y = 1;
    if (gx > mx) {
        y = (gx + mx - 1) / mx;
        x = (gx + y - 1) / y;
        if (y > my)
            return vkc_cmd_fail(cmd, -E2BIG);
    }
    if (gz > in->max_workgroup_count[2])
        return vkc_cmd_fail(cmd, -E2BIG);
    vkCmdDispatch(cmd->cb, x, y, gz);
    vkc_profile_dispatch(cmd, p);
    return 0;
}
