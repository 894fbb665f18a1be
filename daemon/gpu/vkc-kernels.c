/* vkc-kernels.c: the C entry points of the kernels in shaders/ (copy, matvec, ...): each
 * checks shapes, picks the pipeline variant (specialization constants from the device and the
 * shape), fills the push-constant block (a C struct mirroring the shader's, size-checked) and
 * records the dispatch with vkc_cmd_dispatch(). Called while recording a cmd. */
#include <errno.h>
#include <stddef.h>

#include "gpu/vkc-internal.h"
#include "model/quant.h"

static uint32_t div_up(uint64_t a, uint64_t b)
{
    return (uint32_t)((a + b - 1) / b);
}

/* ---- copy ------------------------------------------------------------------------------- */

struct vkc_pc_copy {
    uint32_t n16;
};
_Static_assert(sizeof(struct vkc_pc_copy) == 4, "mirrors PC in shaders/copy.comp");

int vkc_cmd_copy(vkc_cmd_t *cmd, vkc_view_t src, vkc_view_t dst, uint64_t n)
{
    vkc_ctx_t *ctx = cmd->ctx;
    if (n % 16 || n / 16 > UINT32_MAX || vkc_bind_skew(ctx, src.off) % 16 ||
        vkc_bind_skew(ctx, dst.off) || vkc_bind_skew(ctx, src.off))
        return vkc_cmd_fail(cmd, -EINVAL);
    const uint32_t wg = 64;
    vkc_pipeline_t *p;
    int r = vkc_pipeline_get(ctx, "copy", &wg, 1, 2, sizeof(struct vkc_pc_copy), &p);
    if (r < 0)
        return vkc_cmd_fail(cmd, r);
    struct vkc_pc_copy pc = {.n16 = (uint32_t)(n / 16)};
    vkc_bind_t b[2] = {{src.buf, src.off, n}, {dst.buf, dst.off, n}};
    uint32_t groups = div_up(pc.n16, wg * 4); /* 4 steps of the grid-stride loop per lane */
    return vkc_cmd_dispatch(cmd, p, b, 2, &pc, groups ? groups : 1, 1);
}

/* ---- matvec ----------------------------------------------------------------------------- */

struct vkc_pc_matvec {
    uint32_t rows, cols, n_vec, row_bytes;
    uint32_t x_stride, y_stride, w_off, accum;
};
_Static_assert(sizeof(struct vkc_pc_matvec) == 32, "mirrors PC in shaders/matvec.comp");

static const char *matvec_module(uint32_t type)
{
    switch (type) {
    case GGML_TYPE_F32:
        return "matvec_f32";
    case GGML_TYPE_F16:
        return "matvec_f16";
    case GGML_TYPE_BF16:
        return "matvec_bf16";
    case GGML_TYPE_Q4_0:
        return "matvec_q4_0";
    case GGML_TYPE_Q4_1:
        return "matvec_q4_1";
    case GGML_TYPE_Q5_0:
        return "matvec_q5_0";
    case GGML_TYPE_Q5_1:
        return "matvec_q5_1";
    case GGML_TYPE_Q8_0:
        return "matvec_q8_0";
    case GGML_TYPE_Q4_K:
        return "matvec_q4_k";
    case GGML_TYPE_Q5_K:
        return "matvec_q5_k";
    case GGML_TYPE_Q6_K:
        return "matvec_q6_k";
    default:
        return NULL;
    }
}

bool vkc_matvec_supports(uint32_t type)
{
    return matvec_module(type) != NULL;
}

/* Block geometry without depending on quant.c's tables: {elements, bytes} per block. */
static int type_geometry(uint32_t type, uint32_t *ret_elems, uint32_t *ret_bytes)
{
    static const struct {
        uint32_t type, elems, bytes;
    } g[] = {
        {GGML_TYPE_F32, 1, 4},      {GGML_TYPE_F16, 1, 2},      {GGML_TYPE_BF16, 1, 2},
        {GGML_TYPE_Q4_0, 32, 18},   {GGML_TYPE_Q4_1, 32, 20},   {GGML_TYPE_Q5_0, 32, 22},
        {GGML_TYPE_Q5_1, 32, 24},   {GGML_TYPE_Q8_0, 32, 34},   {GGML_TYPE_Q4_K, 256, 144},
        {GGML_TYPE_Q5_K, 256, 176}, {GGML_TYPE_Q6_K, 256, 210},
    };
    for (size_t i = 0; i < sizeof(g) / sizeof(g[0]); i++)
        if (g[i].type == type) {
            *ret_elems = g[i].elems;
            *ret_bytes = g[i].bytes;
            return 0;
        }
    return -EINVAL;
}

static void matvec_defaults(vkc_ctx_t *ctx)
{
    if (ctx->mv.wg)
        return;
    const vkc_device_info_t *in = &ctx->info;
    /* CPU devices: one SIMD-wide subgroup, many rows per x load (see matvec.comp); GPUs: two
     * warps, a few rows */
    if (in->type == VKC_DEVICE_CPU)
        ctx->mv = (vkc_matvec_tuning_t){.wg = in->subgroup_size, .rows = 16};
    else
        ctx->mv = (vkc_matvec_tuning_t){.wg = 64, .rows = 2};
}

void vkc_matvec_get_tuning(vkc_ctx_t *ctx, vkc_matvec_tuning_t *ret)
{
    matvec_defaults(ctx);
    *ret = ctx->mv;
}

int vkc_matvec_set_tuning(vkc_ctx_t *ctx, const vkc_matvec_tuning_t *t)
{
    if (t->wg == 0 || t->wg > ctx->info.max_workgroup_invocations || (t->wg & (t->wg - 1)) ||
        t->rows == 0 || t->rows > 32)
        return -EINVAL;
    ctx->mv = *t;
    return 0;
}

int vkc_cmd_matvec(vkc_cmd_t *cmd, const vkc_matvec_args_t *a)
{
    vkc_ctx_t *ctx = cmd->ctx;
    const char *module = matvec_module(a->type);
    uint32_t be, bb;
    if (!module || type_geometry(a->type, &be, &bb) < 0 || a->rows == 0 || a->cols == 0 ||
        a->n_vec == 0 || a->cols % be)
        return vkc_cmd_fail(cmd, -EINVAL);
    uint64_t row_bytes = (uint64_t)a->cols / be * bb;
    uint32_t xs = a->x_stride ? a->x_stride : a->cols, ys = a->y_stride ? a->y_stride : a->rows;
    if (xs < a->cols || ys < a->rows || a->x.off % 4 || a->y.off % 4 || a->w.off % 4 ||
        row_bytes > UINT32_MAX)
        return vkc_cmd_fail(cmd, -EINVAL);
    matvec_defaults(ctx);
    uint32_t nvec = a->n_vec >= 8 ? 8 : a->n_vec >= 4 ? 4 : a->n_vec >= 2 ? 2 : 1;
    uint64_t w_skew = vkc_bind_skew(ctx, a->w.off);
    /* 16-byte loads need 16-aligned rows and vectors (block types: cols % 32 == 0) */
    uint32_t vec4 = be > 1 && row_bytes % 16 == 0 && w_skew % 16 == 0 && xs % 4 == 0;
    /* x8: decode only (a batch would keep 8 x 256 x values live and spill) */
    bool x8 = vec4 && a->cols % 256 == 0 && nvec == 1;
    if (x8 && a->type == GGML_TYPE_Q4_0)
        module = "matvec_q4_0_x8"; /* 8 blocks = 144 bytes = 9 aligned 16-byte loads */
    if (x8 && a->type == GGML_TYPE_Q8_0)
        module = "matvec_q8_0_x8"; /* 8 blocks = 272 bytes = 17 aligned 16-byte loads */
    uint32_t spec[5] = {ctx->mv.wg, ctx->mv.rows, ctx->info.subgroup_arithmetic, nvec, vec4};
    vkc_pipeline_t *p;
    int r = vkc_pipeline_get(ctx, module, spec, 5, 3, sizeof(struct vkc_pc_matvec), &p);
    if (r < 0)
        return vkc_cmd_fail(cmd, r);
    struct vkc_pc_matvec pc = {
        .rows = a->rows,
        .cols = a->cols,
        .n_vec = a->n_vec,
        .row_bytes = (uint32_t)row_bytes,
        .x_stride = xs,
        .y_stride = ys,
        .w_off = (uint32_t)w_skew,
        .accum = a->accumulate,
    };
    uint64_t x_need = ((uint64_t)(a->n_vec - 1) * xs + a->cols) * 4;
    uint64_t y_need = ((uint64_t)(a->n_vec - 1) * ys + a->rows) * 4;
    vkc_bind_t b[3] = {{a->w.buf, a->w.off, row_bytes * a->rows},
                       {a->x.buf, a->x.off, x_need},
                       {a->y.buf, a->y.off, y_need}};
    if (vkc_bind_skew(ctx, a->x.off) || vkc_bind_skew(ctx, a->y.off))
        return vkc_cmd_fail(cmd, -EINVAL); /* float operands start at an aligned offset */
    return vkc_cmd_dispatch(cmd, p, b, 3, &pc, div_up(a->rows, ctx->mv.rows),
                            div_up(a->n_vec, nvec));
}
