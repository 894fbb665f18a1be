/* moe inspect: what a GGUF model is, as moed sees it: architecture, hyperparameters,
 * semantics, tensor summary, and the byte budget that matters for streaming experts
 * (resident vs expert bytes, bytes per expert, bytes read per token). It reads only the
 * header (gguf_open never touches tensor data), so it answers in milliseconds for a file
 * of any size. A file model_load refuses prints the one-line reason and exits 1. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "model/gguf.h"
#include "model/model.h"
#include "model/quant.h"
#include "moe.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: moe inspect [--json] [--tensors] FILE\n"
               "Shows a GGUF model's architecture, hyperparameters, tensor summary and sizes\n"
               "(resident vs expert bytes, bytes per expert, bytes read per token). Reads only\n"
               "the header. Exits 1 with a one-line reason for a file moed cannot run.\n\n"
               "  --json      one JSON object instead of text\n"
               "  --tensors   also list every tensor (name, type, shape, offset, bytes)\n"
               "  -h, --help  this text\n");
}

static const char *type_name(uint32_t t)
{
    const quant_traits_t *qt = quant_traits(t);
    return qt ? qt->name : "unknown";
}

static const char *rope_name(enum model_rope r)
{
    return r == MODEL_ROPE_NEOX ? "neox" : "norm";
}

static const char *qk_norm_name(enum model_qk_norm q)
{
    return q == MODEL_QK_NORM_HEAD ? "per-head" : q == MODEL_QK_NORM_FULL ? "full" : "none";
}

/* Tensor count and bytes per GGML type, in type-id order. */
typedef struct type_count {
    uint32_t count[GGML_TYPE_COUNT_];
    uint64_t bytes[GGML_TYPE_COUNT_];
} type_count_t;

static void count_types(const gguf_t *g, type_count_t *tc)
{
    memset(tc, 0, sizeof(*tc));
    for (size_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor_t *t = gguf_tensor(g, i);
        if (t->type < GGML_TYPE_COUNT_) {
            tc->count[t->type]++;
            tc->bytes[t->type] += t->size;
        }
    }
}

static void print_text(const char *path, const gguf_t *g, const model_t *m, bool tensors)
{
    const model_hparams_t *hp = &m->hp;
    type_count_t tc;
    count_types(g, &tc);
    uint64_t total = m->resident_bytes + m->expert_bytes_total;
    uint64_t active = model_active_bytes(m);

    printf("file:          %s (%" PRIu64 " bytes, GGUF v%u, alignment %u)\n", path,
           gguf_file_size(g), gguf_version(g), gguf_alignment(g));
    printf("name:          %s\n", m->name);
    printf("architecture:  %s\n", model_arch_name(m->arch));
    printf("hyperparameters:\n");
    printf("  n_vocab %u, n_embd %u, n_layer %u, n_ctx_train %u\n", hp->n_vocab, hp->n_embd,
           hp->n_layer, hp->n_ctx_train);
    printf("  n_head %u, n_head_kv %u, head_dim %u, n_rot %u\n", hp->n_head, hp->n_head_kv,
           hp->head_dim_k, hp->n_rot);
    printf("  n_expert %u, n_expert_used %u, n_ff_exp %u", hp->n_expert, hp->n_expert_used,
           hp->n_ff_exp);
    if (hp->n_ff_shexp)
        printf(", n_ff_shexp %u", hp->n_ff_shexp);
    printf("\n  rms_eps %g, rope_freq_base %g, rope_freq_scale %g\n", (double)hp->rms_eps,
           (double)hp->rope_freq_base, (double)hp->rope_freq_scale);
    printf("semantics:     rope %s, qk_norm %s, gating %s, top-k renormalized %s, attn bias %s,\n"
           "               shared expert %s, output %s\n",
           rope_name(hp->rope), qk_norm_name(hp->qk_norm),
           hp->gating == MODEL_GATING_SOFTMAX ? "softmax" : "sigmoid", hp->norm_topk ? "yes" : "no",
           hp->attn_bias ? "yes" : "no", hp->shexp_gate ? "yes (sigmoid gate)" : "no",
           hp->tied_output ? "tied to token_embd" : "own");
    printf("tensors:       %zu (", gguf_n_tensors(g));
    bool first = true;
    for (unsigned t = 0; t < GGML_TYPE_COUNT_; t++) {
        if (!tc.count[t])
            continue;
        printf("%s%s: %u", first ? "" : ", ", type_name(t), tc.count[t]);
        first = false;
    }
    printf(")\n");
    printf("bytes:         total %" PRIu64 " (%.1f MiB)\n", total, (double)total / 1048576.0);
    printf("  resident     %" PRIu64 " (%.1f MiB)\n", m->resident_bytes,
           (double)m->resident_bytes / 1048576.0);
    printf("  experts      %" PRIu64 " (%.1f MiB, %.1f%%), %u x %u experts\n",
           m->expert_bytes_total, (double)m->expert_bytes_total / 1048576.0,
           total ? 100.0 * (double)m->expert_bytes_total / (double)total : 0.0, hp->n_layer,
           hp->n_expert);
    printf("  per expert   %" PRIu64 " (%.2f MiB, largest layer)\n", m->expert_bytes,
           (double)m->expert_bytes / 1048576.0);
    printf("  per token    %" PRIu64 " (%.1f MiB active: resident + %u experts x %u layers)\n",
           active, (double)active / 1048576.0, hp->n_expert_used, hp->n_layer);
    if (!tensors)
        return;
    printf("tensor list:\n");
    for (size_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor_t *t = gguf_tensor(g, i);
        char shape[96];
        int o = snprintf(shape, sizeof(shape), "[");
        for (uint32_t d = 0; d < t->n_dims && o > 0 && (size_t)o < sizeof(shape); d++)
            o += snprintf(shape + o, sizeof(shape) - (size_t)o, d ? ", %" PRIu64 : "%" PRIu64,
                          t->ne[d]);
        if (o > 0 && (size_t)o < sizeof(shape))
            snprintf(shape + o, sizeof(shape) - (size_t)o, "]");
        printf("  %-36s %-6s %-24s offset %12" PRIu64 " bytes %12" PRIu64 "\n", t->name,
               type_name(t->type), shape, t->offset, t->size);
    }
}

static void print_json(const char *path, const gguf_t *g, const model_t *m, bool tensors)
{
    const model_hparams_t *hp = &m->hp;
    type_count_t tc;
    count_types(g, &tc);
    printf("{\"file\":");
    moe_json_str(path);
    printf(",\"file_bytes\":%" PRIu64 ",\"gguf_version\":%u,\"alignment\":%u,\"name\":",
           gguf_file_size(g), gguf_version(g), gguf_alignment(g));
    moe_json_str(m->name);
    printf(",\"architecture\":\"%s\"", model_arch_name(m->arch));
    printf(",\"hparams\":{\"n_vocab\":%u,\"n_embd\":%u,\"n_layer\":%u,\"n_ctx_train\":%u,"
           "\"n_head\":%u,\"n_head_kv\":%u,\"head_dim\":%u,\"n_rot\":%u,\"n_expert\":%u,"
           "\"n_expert_used\":%u,\"n_ff_exp\":%u,\"n_ff_shexp\":%u,\"rms_eps\":%g,"
           "\"rope_freq_base\":%g,\"rope_freq_scale\":%g}",
           hp->n_vocab, hp->n_embd, hp->n_layer, hp->n_ctx_train, hp->n_head, hp->n_head_kv,
           hp->head_dim_k, hp->n_rot, hp->n_expert, hp->n_expert_used, hp->n_ff_exp, hp->n_ff_shexp,
           (double)hp->rms_eps, (double)hp->rope_freq_base, (double)hp->rope_freq_scale);
    printf(",\"semantics\":{\"rope\":\"%s\",\"qk_norm\":\"%s\",\"gating\":\"%s\","
           "\"norm_topk\":%s,\"attn_bias\":%s,\"shared_expert\":%s,\"tied_output\":%s}",
           rope_name(hp->rope), qk_norm_name(hp->qk_norm),
           hp->gating == MODEL_GATING_SOFTMAX ? "softmax" : "sigmoid",
           hp->norm_topk ? "true" : "false", hp->attn_bias ? "true" : "false",
           hp->shexp_gate ? "true" : "false", hp->tied_output ? "true" : "false");
    printf(",\"n_tensors\":%zu,\"types\":{", gguf_n_tensors(g));
    bool first = true;
    for (unsigned t = 0; t < GGML_TYPE_COUNT_; t++) {
        if (!tc.count[t])
            continue;
        printf("%s\"%s\":{\"count\":%u,\"bytes\":%" PRIu64 "}", first ? "" : ",", type_name(t),
               tc.count[t], tc.bytes[t]);
        first = false;
    }
    printf("},\"bytes\":{\"total\":%" PRIu64 ",\"resident\":%" PRIu64 ",\"experts\":%" PRIu64
           ",\"per_expert\":%" PRIu64 ",\"active_per_token\":%" PRIu64 "}",
           m->resident_bytes + m->expert_bytes_total, m->resident_bytes, m->expert_bytes_total,
           m->expert_bytes, model_active_bytes(m));
    if (tensors) {
        printf(",\"tensors\":[");
        for (size_t i = 0; i < gguf_n_tensors(g); i++) {
            const gguf_tensor_t *t = gguf_tensor(g, i);
            printf("%s{\"name\":", i ? "," : "");
            moe_json_str(t->name);
            printf(",\"type\":\"%s\",\"shape\":[", type_name(t->type));
            for (uint32_t d = 0; d < t->n_dims; d++)
                printf("%s%" PRIu64, d ? "," : "", t->ne[d]);
            printf("],\"offset\":%" PRIu64 ",\"bytes\":%" PRIu64 "}", t->offset, t->size);
        }
        printf("]");
    }
    printf("}\n");
}

int moe_cmd_inspect(int argc, char **argv)
{
    static const struct option lo[] = {
        {"json", no_argument, NULL, 'j'},
        {"tensors", no_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    bool json = false, tensors = false;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (c) {
        case 'j':
            json = true;
            break;
        case 't':
            tensors = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            fprintf(stderr, "moe inspect: unknown option '%s'\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc - 1) {
        usage(stderr);
        return 2;
    }
    const char *path = argv[optind];
    char err[512] = "";
    gguf_t *g = NULL;
    model_t *m = NULL;
    int r = gguf_open(path, &g, err, sizeof(err));
    if (r == 0)
        r = model_load(g, &m, err, sizeof(err));
    if (r != 0) {
        fprintf(stderr, "moe inspect: %s: %s\n", path, err[0] ? err : strerror(-r));
        gguf_free(g);
        return 1;
    }
    if (json)
        print_json(path, g, m, tensors);
    else
        print_text(path, g, m, tensors);
    model_free(m);
    gguf_free(g);
    return 0;
}
