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

/* Can matmul share x with subgroupShuffle here: a CPU device (a workgroup of subgroup-size
 * lanes is one SIMD loop, the only place the shuffle pays) with shuffle operations in compute
 * shaders and shaderInt64 (the _sg modules read 8-byte words; buffer_device_address is only set
 * where shaderInt64 is enabled). */
static bool matmul_sg_ok(vkc_ctx_t *ctx)
{
    const vkc_device_info_t *in = &ctx->info;
    VkPhysicalDeviceSubgroupProperties sp = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES};
    VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2,
                                      .pNext = &sp};
    vkGetPhysicalDeviceProperties2(ctx->phys, &p2);
    return in->type == VKC_DEVICE_CPU && in->buffer_device_address &&
           (sp.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
           (sp.supportedOperations & VK_SUBGROUP_FEATURE_SHUFFLE_BIT);
}

static void matvec_defaults(vkc_ctx_t *ctx)
{
    if (ctx->mv.wg)
        return;
    const vkc_device_info_t *in = &ctx->info;
    /* CPU devices: one SIMD-wide subgroup, many rows per x load (see matvec.comp); GPUs: two
     * warps, a few rows. matmul: on CPUs a subgroup of lanes, 4 rows each by 8 vectors, from
     * one vector on (fewer vectors: narrower tiles of more rows, see cmd_matmul); lavapipe,
     * one thread: batch 8 Q4_K 19 GFLOP/s against 9 for matvec, batch 4 9.3 against 7.9,
     * decode Q4_K 1.9-2.0 GB/s against 1.25, Q8_0 2.2-3.0 against 1.1-1.3, Q4_0 1.8-2.2
     * against 1.1. GPUs: two warps of 2 rows by 4 vectors from 16 vectors on (not measured:
     * no GPU at hand). */
    if (in->type == VKC_DEVICE_CPU)
        ctx->mv = (vkc_matvec_tuning_t){.wg = in->subgroup_size, .rows = 16};
    else
        ctx->mv = (vkc_matvec_tuning_t){.wg = 64, .rows = 2};
    bool sg = matmul_sg_ok(ctx);
    ctx->mv.mm_min_vec = sg ? 1 : 16;
    ctx->mv.mm_wg = sg ? in->subgroup_size : 64;
    ctx->mv.mm_rows = sg ? 4 : 2;
    ctx->mv.mm_vecs = sg ? 8 : 4;
    ctx->mv.mm_sg = sg ? 1 : 2;
}

void vkc_matvec_get_tuning(vkc_ctx_t *ctx, vkc_matvec_tuning_t *ret)
{
    matvec_defaults(ctx);
    *ret = ctx->mv;
}

static bool pow2_upto(uint32_t v, uint32_t max)
{
    return v && v <= max && !(v & (v - 1));
}

int vkc_matvec_set_tuning(vkc_ctx_t *ctx, const vkc_matvec_tuning_t *t)
{
    matvec_defaults(ctx);
    vkc_matvec_tuning_t d = ctx->mv, n = *t;
    /* zero: keep the current value */
    n.mm_min_vec = n.mm_min_vec ? n.mm_min_vec : d.mm_min_vec;
    n.mm_wg = n.mm_wg ? n.mm_wg : d.mm_wg;
    n.mm_rows = n.mm_rows ? n.mm_rows : d.mm_rows;
    n.mm_vecs = n.mm_vecs ? n.mm_vecs : d.mm_vecs;
    n.mm_sg = n.mm_sg ? n.mm_sg : d.mm_sg;
    uint32_t max_wg = ctx->info.max_workgroup_invocations;
    if (!pow2_upto(n.wg, max_wg) || n.rows == 0 || n.rows > 32 || !pow2_upto(n.mm_wg, max_wg) ||
        n.mm_rows > 8 || n.mm_vecs > 16 || n.mm_sg > 2 ||
        (n.mm_sg == 1 && (!matmul_sg_ok(ctx) || n.mm_wg != ctx->info.subgroup_size)))
        return -EINVAL;
    ctx->mv = n;
    return 0;
}

/* The matmul.comp variant: plain or sharing x by subgroup shuffles, one matrix or grouped. */
static const char *matmul_module(uint32_t type, bool sg, bool grouped)
{
#define MM(T, t)                                                                                \
    {GGML_TYPE_##T, {"matmul_" t, "matmul_" t "_sg", "matmul_" t "_grouped",                   \
                     "matmul_" t "_sg_grouped"}}
    static const struct {
        uint32_t type;
        const char *name[4];
    } m[] = {
        MM(F32, "f32"),   MM(F16, "f16"),   MM(BF16, "bf16"), MM(Q4_0, "q4_0"),
        MM(Q4_1, "q4_1"), MM(Q5_0, "q5_0"), MM(Q5_1, "q5_1"), MM(Q8_0, "q8_0"),
        MM(Q4_K, "q4_k"), MM(Q5_K, "q5_k"), MM(Q6_K, "q6_k"),
    };
#undef MM
    for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++)
        if (m[i].type == type)
            return m[i].name[(sg ? 1 : 0) + (grouped ? 2 : 0)];
    return NULL;
}

/* Checked shape of a matvec / matmul call, and its bindings. */
typedef struct mv_shape {
    uint32_t be;        /* elements per block */
    uint64_t row_bytes; /* bytes per weight row */
    uint32_t xs, ys;    /* strides in floats */
    uint64_t w_skew;    /* bytes from the binding's aligned start to W */
    bool vec4;          /* 16-aligned weight rows, x_stride a multiple of 4 */
    vkc_bind_t b[3];
} mv_shape_t;

static int matvec_shape(vkc_ctx_t *ctx, const vkc_matvec_args_t *a, mv_shape_t *ret)
{
    uint32_t be, bb;
    if (!matvec_module(a->type) || type_geometry(a->type, &be, &bb) < 0 || a->rows == 0 ||
        a->cols == 0 || a->n_vec == 0 || a->cols % be)
        return -EINVAL;
    uint64_t row_bytes = (uint64_t)a->cols / be * bb;
    uint32_t xs = a->x_stride ? a->x_stride : a->cols, ys = a->y_stride ? a->y_stride : a->rows;
    if (xs < a->cols || ys < a->rows || a->x.off % 4 || a->y.off % 4 || a->w.off % 4 ||
        row_bytes > UINT32_MAX)
        return -EINVAL;
    if (vkc_bind_skew(ctx, a->x.off) || vkc_bind_skew(ctx, a->y.off))
        return -EINVAL; /* float operands start at an aligned offset */
    mv_shape_t s = {.be = be, .row_bytes = row_bytes, .xs = xs, .ys = ys};
    s.w_skew = vkc_bind_skew(ctx, a->w.off);
    /* 16-byte loads need 16-aligned rows and vectors (block types: cols % 32 == 0) */
    s.vec4 = be > 1 && row_bytes % 16 == 0 && s.w_skew % 16 == 0 && xs % 4 == 0;
    uint64_t x_need = ((uint64_t)(a->n_vec - 1) * xs + a->cols) * 4;
    uint64_t y_need = ((uint64_t)(a->n_vec - 1) * ys + a->rows) * 4;
    s.b[0] = (vkc_bind_t){a->w.buf, a->w.off, row_bytes * a->rows};
    s.b[1] = (vkc_bind_t){a->x.buf, a->x.off, x_need};
    s.b[2] = (vkc_bind_t){a->y.buf, a->y.off, y_need};
    *ret = s;
    return 0;
}

static struct vkc_pc_matvec matvec_pc(const vkc_matvec_args_t *a, const mv_shape_t *s)
{
    return (struct vkc_pc_matvec){
        .rows = a->rows,
        .cols = a->cols,
        .n_vec = a->n_vec,
        .row_bytes = (uint32_t)s->row_bytes,
        .x_stride = s->xs,
        .y_stride = s->ys,
        .w_off = (uint32_t)s->w_skew,
        .accum = a->accumulate,
    };
}

/* Fewer vectors than a tile: narrow the tile to a power of two <= n_vec and give each lane
 * more rows instead (up to 8), keeping about rows * vectors accumulators. */
static void matmul_tile(const vkc_matvec_tuning_t *t, uint32_t n_vec, uint32_t *ret_vecs,
                        uint32_t *ret_rows)
{
    uint32_t vecs = t->mm_vecs, rows = t->mm_rows;
    while (vecs > 1 && vecs > n_vec) {
        vecs /= 2;
        rows = rows * 2 > 8 ? 8 : rows * 2;
    }
    *ret_vecs = vecs;
    *ret_rows = rows;
}

/* The tiled kernel for many vectors: see shaders/matmul.comp. */
static int cmd_matmul(vkc_cmd_t *cmd, const vkc_matvec_args_t *a, const mv_shape_t *s)
{
    vkc_ctx_t *ctx = cmd->ctx;
    const vkc_matvec_tuning_t *t = &ctx->mv;
    uint32_t vecs, rows;
    matmul_tile(t, a->n_vec, &vecs, &rows);
    /* a small matrix (a router: 32-128 rows) in a few workgroups leaves the device's other
     * threads idle: fewer rows per lane until there are 4 (lavapipe, 32 x 512 F32: one
     * workgroup of 64 rows on one of two threads) */
    while (rows > 1 && div_up(a->rows, t->mm_wg * rows) * div_up(a->n_vec, vecs) < 4)
        rows /= 2;
    uint32_t spec[5] = {t->mm_wg, rows, vecs, s->vec4, s->xs % 4 == 0};
    const char *module = matmul_module(a->type, t->mm_sg == 1, false);
    /* one vector (decode), 16-aligned Q4_0 / Q8_0 rows: eight blocks per chunk, read with
     * aligned 8-byte words instead of the 2-aligned words of single blocks (a wider tile
     * would keep 256 x values per vector live) */
    bool x8 = t->mm_sg == 1 && vecs == 1 && s->vec4 && a->cols % 256 == 0;
    if (x8 && a->type == GGML_TYPE_Q4_0)
        module = "matmul_q4_0_x8_sg";
    if (x8 && a->type == GGML_TYPE_Q8_0)
        module = "matmul_q8_0_x8_sg";
    /* Q6_K, up to 4 vectors: half super-blocks per chunk, the bytes of two 64-element chunks
     * (lavapipe, 4096 x 4096: decode ratio ~0.75 -> ~0.9 of copy, batch 2 8.4 -> 14 GFLOP/s,
     * batch 4 14 -> 18; batch 8 no gain: 8 x 128 x values live) */
    if (t->mm_sg == 1 && vecs <= 4 && a->type == GGML_TYPE_Q6_K)
        module = "matmul_q6_k_half_sg";
    vkc_pipeline_t *p;
    int r = vkc_pipeline_get(ctx, module, spec, 5, 3, sizeof(struct vkc_pc_matvec), &p);
    if (r < 0)
        return vkc_cmd_fail(cmd, r);
    struct vkc_pc_matvec pc = matvec_pc(a, s);
    return vkc_cmd_dispatch(cmd, p, s->b, 3, &pc, div_up(a->rows, t->mm_wg * rows),
                            div_up(a->n_vec, vecs));
}

int vkc_cmd_matvec(vkc_cmd_t *cmd, const vkc_matvec_args_t *a)
{
    vkc_ctx_t *ctx = cmd->ctx;
    mv_shape_t s;
    int r = matvec_shape(ctx, a, &s);
    if (r < 0)
        return vkc_cmd_fail(cmd, r);
    matvec_defaults(ctx);
    if (a->n_vec >= ctx->mv.mm_min_vec)
        return cmd_matmul(cmd, a, &s);
    const char *module = matvec_module(a->type);
    uint32_t nvec = a->n_vec >= 8 ? 8 : a->n_vec >= 4 ? 4 : a->n_vec >= 2 ? 2 : 1;
    /* x8: decode only (a batch would keep 8 x 256 x values live and spill) */
    bool x8 = s.vec4 && a->cols % 256 == 0 && nvec == 1;
    /* lavapipe loads lane by lane, a step per 32-bit component: 64-bit components halve the
     * steps (one thread, cache-resident: Q8_0 1.1 -> 2.0 GB/s, Q4_K 1.45 -> 1.7). */
    bool u64 = s.vec4 && ctx->info.type == VKC_DEVICE_CPU && ctx->info.buffer_device_address;
    if (x8 && a->type == GGML_TYPE_Q4_0) /* 8 blocks = 144 bytes = 9 aligned 16-byte loads */
        module = u64 ? "matvec_q4_0_x8_u64" : "matvec_q4_0_x8";
    if (x8 && a->type == GGML_TYPE_Q8_0) /* 8 blocks = 272 bytes = 17 aligned 16-byte loads */
        module = u64 ? "matvec_q8_0_x8_u64" : "matvec_q8_0_x8";
    if (u64 && a->type == GGML_TYPE_Q4_K)
        module = "matvec_q4_k_u64";
    if (u64 && a->type == GGML_TYPE_Q5_K)
        module = "matvec_q5_k_u64";
    uint32_t spec[5] = {ctx->mv.wg, ctx->mv.rows, ctx->info.subgroup_arithmetic, nvec, s.vec4};
    vkc_pipeline_t *p;
    r = vkc_pipeline_get(ctx, module, spec, 5, 3, sizeof(struct vkc_pc_matvec), &p);
    if (r < 0)
        return vkc_cmd_fail(cmd, r);
    struct vkc_pc_matvec pc = matvec_pc(a, &s);
    return vkc_cmd_dispatch(cmd, p, s.b, 3, &pc, div_up(a->rows, ctx->mv.rows),
                            div_up(a->n_vec, nvec));
}

/* ---- grouped matmul ---------------------------------------------------------------------- */

int vkc_cmd_matmul_grouped(vkc_cmd_t *cmd, const vkc_matmul_grouped_args_t *a)
{
    vkc_ctx_t *ctx = cmd->ctx;
    uint32_t be, bb;
    if (!matvec_module(a->type) || type_geometry(a->type, &be, &bb) < 0 || a->rows == 0 ||
        a->cols == 0 || a->cols % be || a->n_groups == 0 ||
        a->n_groups > ctx->info.max_workgroup_count[2])
        return vkc_cmd_fail(cmd, -EINVAL);
    const uint64_t row_bytes = (uint64_t)a->cols / be * bb, mat = row_bytes * a->rows;
    const uint32_t xs = a->x_stride ? a->x_stride : a->cols;
    const uint32_t ys = a->y_stride ? a->y_stride : a->rows;
    const uint64_t skew = vkc_bind_skew(ctx, a->w.off);
    uint32_t *tab = a->table.buf ? vkc_buffer_map(a->table.buf) : NULL;
    if (xs < a->cols || ys < a->rows || a->w.off % 4 || row_bytes > UINT32_MAX || !tab ||
        vkc_bind_skew(ctx, a->x.off) || vkc_bind_skew(ctx, a->y.off) ||
        vkc_bind_skew(ctx, a->table.off) || a->table.off > a->table.buf->size ||
        (uint64_t)a->n_groups * 16 > a->table.buf->size - a->table.off)
        return vkc_cmd_fail(cmd, -EINVAL);
    tab += a->table.off / 4;
    /* every group within the bindings, its vectors within 32 bits; the kernel trusts them */
    uint64_t w_need = 0, x_end = 0, y_end = 0, total = 0, busy = 0;
    bool vec4 = be > 1 && row_bytes % 16 == 0 && xs % 4 == 0;
    for (uint32_t g = 0; g < a->n_groups; g++) {
        const vkc_matmul_group_t *gr = &a->groups[g];
        uint64_t at = skew + gr->w_off;
        if (gr->w_off % 4 || at + mat > UINT32_MAX ||
            (uint64_t)gr->x_vec + gr->n_vec > UINT32_MAX / xs ||
            (uint64_t)gr->y_vec + gr->n_vec > UINT32_MAX / ys)
            return vkc_cmd_fail(cmd, -EINVAL);
        if (gr->n_vec) {
            w_need = gr->w_off + mat > w_need ? gr->w_off + mat : w_need;
            x_end = gr->x_vec + gr->n_vec > x_end ? gr->x_vec + gr->n_vec : x_end;
            y_end = gr->y_vec + gr->n_vec > y_end ? gr->y_vec + gr->n_vec : y_end;
            vec4 = vec4 && at % 16 == 0;
            total += gr->n_vec;
            busy++;
        }
        tab[4 * g] = (uint32_t)at;
        tab[4 * g + 1] = gr->x_vec;
        tab[4 * g + 2] = gr->n_vec;
        tab[4 * g + 3] = gr->y_vec;
    }
    if (!busy)
        return 0;
    matvec_defaults(ctx);
    const vkc_matvec_tuning_t *t = &ctx->mv;
    /* the tile fits the typical group (a batch's expert sees a token or two) */
    uint32_t vecs, rows;
    matmul_tile(t, (uint32_t)(total / busy), &vecs, &rows);
    uint32_t spec[5] = {t->mm_wg, rows, vecs, vec4, xs % 4 == 0};
    const char *module = matmul_module(a->type, t->mm_sg == 1, true);
    if (t->mm_sg == 1 && vecs <= 4 && a->type == GGML_TYPE_Q6_K)
        module = "matmul_q6_k_half_sg_grouped"; /* as in cmd_matmul */
    vkc_pipeline_t *p;
    int r = vkc_pipeline_get(ctx, module, spec, 5, 4,
                             sizeof(struct vkc_pc_matvec), &p);
    if (r < 0)
        return vkc_cmd_fail(cmd, r);
    struct vkc_pc_matvec pc = {.rows = a->rows, .cols = a->cols, .row_bytes = (uint32_t)row_bytes,
                               .x_stride = xs, .y_stride = ys};
    vkc_bind_t b[4] = {
        {a->w.buf, a->w.off, w_need},
        {a->x.buf, a->x.off, ((x_end - 1) * xs + a->cols) * 4},
        {a->y.buf, a->y.off, ((y_end - 1) * ys + a->rows) * 4},
        {a->table.buf, a->table.off, (uint64_t)a->n_groups * 16},
    };
    return vkc_cmd_dispatch(cmd, p, b, 4, &pc, div_up(a->rows, t->mm_wg * rows), a->n_groups);
}
