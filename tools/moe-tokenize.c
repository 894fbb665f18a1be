/* `moe tokenize`, `moe detokenize` and `moe bench tokenize`: a model's tokenizer from the
 * command line, built from the same daemon/text code the daemon runs. tokenize prints ids
 * (--ids: one line, single spaces, nothing else, so scripts can diff against llama.cpp's
 * output), pieces, or both; text comes from the argument, --file (byte for byte) or stdin.
 * The bench times tokenization of generated text against a UTF-8 decoding pass over the
 * same bytes (see bench_baseline for why that is the comparison). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model/gguf.h"
#include "moe.h"
#include "text/tokenizer.h"

static int open_tokenizer(const char *path, gguf_t **ret_g, tokenizer_t **ret_t)
{
    char err[256] = "";
    gguf_t *g = NULL;
    int r = gguf_open(path, &g, err, sizeof(err));
    if (r < 0) { /* the reader's reason names the file and what is wrong with it */
        if (err[0])
            fprintf(stderr, "moe: %s\n", err);
        else
            fprintf(stderr, "moe: %s: %s\n", path, strerror(-r));
        return r;
    }
    r = tokenizer_new(g, ret_t, err, sizeof(err));
    if (r < 0) {
        fprintf(stderr, "moe: %s: tokenizer: %s (%s)\n", path, err, strerror(-r));
        gguf_free(g);
        return r;
    }
    *ret_g = g;
    return 0;
}

static char *read_all(FILE *f, size_t *ret_len)
{
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    while (b) {
        size_t k = fread(b + n, 1, cap - n, f);
        n += k;
        if (k == 0)
            break;
        if (n == cap) {
            char *nb = realloc(b, cap * 2);
            if (!nb) {
                free(b);
                return NULL;
            }
            b = nb;
            cap *= 2;
        }
    }
    if (b && ferror(f)) {
        free(b);
        return NULL;
    }
    *ret_len = n;
    return b;
}

/* Prints a piece as a C-escaped, quoted string so whitespace and bytes are visible. */
static void print_quoted(const char *p, size_t n)
{
    putchar('\'');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '\n')
            fputs("\\n", stdout);
        else if (c == '\t')
            fputs("\\t", stdout);
        else if (c == '\r')
            fputs("\\r", stdout);
        else if (c == '\\' || c == '\'')
            printf("\\%c", c);
        else if (c < 0x20 || c == 0x7f)
            printf("\\x%02x", c);
        else
            putchar(c);
    }
    putchar('\'');
}

static void tokenize_usage(FILE *f)
{
    fprintf(f, "usage: moe tokenize --model FILE [--ids|--pieces] [--file PATH] [--add-special]\n"
               "                    [--parse-special] [TEXT]\n"
               "Tokenizes TEXT (or the bytes of --file PATH, or stdin) with the model's tokenizer.\n"
               "  --ids            only the ids, on one line, separated by single spaces\n"
               "  --pieces         only the pieces, one quoted string per line\n"
               "  (default)        one line per token: id and quoted piece\n"
               "  --add-special    add BOS/EOS as the model's metadata asks (default: none)\n"
               "  --parse-special  treat control-token text (<|im_start|>, ...) as those tokens\n"
               "                   (user-defined added tokens always count, as in llama.cpp)\n");
}

int moe_cmd_tokenize(int argc, char **argv)
{
    const char *model = NULL, *file = NULL, *text = NULL;
    unsigned flags = 0;
    int mode = 0; /* 0 both, 1 ids, 2 pieces */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            tokenize_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--model") && i + 1 < argc) {
            model = argv[++i];
        } else if (!strcmp(a, "--file") && i + 1 < argc) {
            file = argv[++i];
        } else if (!strcmp(a, "--ids")) {
            mode = 1;
        } else if (!strcmp(a, "--pieces")) {
            mode = 2;
        } else if (!strcmp(a, "--add-special")) {
            flags |= TOKENIZER_ADD_SPECIAL;
        } else if (!strcmp(a, "--parse-special")) {
            flags |= TOKENIZER_PARSE_SPECIAL;
        } else if (!strcmp(a, "--")) {
            if (i + 1 < argc)
                text = argv[++i];
        } else if (a[0] == '-' && a[1] == '-') {
            fprintf(stderr, "moe tokenize: unknown or incomplete option '%s'\n", a);
            tokenize_usage(stderr);
            return 2;
        } else if (!text) {
            text = a;
        } else {
            fprintf(stderr, "moe tokenize: one TEXT only (quote it)\n");
            return 2;
        }
    }
    if (!model || (text && file)) {
        tokenize_usage(stderr);
        return 2;
    }
    char *buf = NULL;
    size_t len = 0;
    if (text) {
        len = strlen(text);
    } else {
        FILE *f = file && strcmp(file, "-") ? fopen(file, "rbe") : stdin;
        if (!f) {
            fprintf(stderr, "moe tokenize: %s: %s\n", file, strerror(errno));
            return 1;
        }
        buf = read_all(f, &len);
        if (f != stdin)
            fclose(f);
        if (!buf) {
            fprintf(stderr, "moe tokenize: cannot read %s\n", file ? file : "stdin");
            return 1;
        }
        text = buf;
    }
    gguf_t *g = NULL;
    tokenizer_t *t = NULL;
    int rc = 1;
    int32_t *ids = NULL;
    size_t n = 0;
    if (open_tokenizer(model, &g, &t) < 0)
        goto done;
    int r = tokenizer_encode_alloc(t, text, len, flags, &ids, &n);
    if (r < 0) {
        fprintf(stderr, "moe tokenize: %s\n", strerror(-r));
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        const char *p;
        size_t pl;
        if (mode == 1) {
            printf(i ? " %" PRId32 : "%" PRId32, ids[i]);
            continue;
        }
        tokenizer_piece(t, ids[i], &p, &pl);
        if (mode == 0)
            printf("%6" PRId32 " ", ids[i]);
        print_quoted(p, pl);
        putchar('\n');
    }
    if (mode == 1)
        putchar('\n');
    rc = fflush(stdout) == 0 ? 0 : 1;
done:
    free(ids);
    tokenizer_free(t);
    gguf_free(g);
    free(buf);
    return rc;
}

/* Checked id parsing: decimal, within the vocabulary; commas also separate. */
static int parse_ids(const char *s, const tokenizer_t *t, int32_t **ids, size_t *n, size_t *cap)
{
    while (*s) {
        if (*s == ',' || *s == ' ' || *s == '\n' || *s == '\t') {
            s++;
            continue;
        }
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (end == s || errno || v < 0 || v >= (long)tokenizer_n_vocab(t)) {
            fprintf(stderr, "moe detokenize: '%s' is not an id of this vocabulary (0..%u)\n", s,
                    tokenizer_n_vocab(t) - 1);
            return -EINVAL;
        }
        if (*n == *cap) {
            size_t nc = *cap ? *cap * 2 : 64;
            int32_t *ni = realloc(*ids, nc * sizeof(*ni));
            if (!ni)
                return -ENOMEM;
            *ids = ni;
            *cap = nc;
        }
        (*ids)[(*n)++] = (int32_t)v;
        s = end;
    }
    return 0;
}

int moe_cmd_detokenize(int argc, char **argv)
{
    const char *model = NULL;
    unsigned flags = 0;
    int first = argc;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: moe detokenize --model FILE [--special] [--strip-space] ID...\n"
                   "Prints the text of the ids (from the arguments, or stdin when none).\n"
                   "  --special      render control tokens' text (default: hidden)\n"
                   "  --strip-space  drop the space SPM tokenizers put before the text\n");
            return 0;
        } else if (!strcmp(argv[i], "--model") && i + 1 < argc) {
            model = argv[++i];
        } else if (!strcmp(argv[i], "--special")) {
            flags |= DETOK_SPECIAL;
        } else if (!strcmp(argv[i], "--strip-space")) {
            flags |= DETOK_STRIP_SPACE;
        } else if (argv[i][0] == '-' && argv[i][1] == '-') {
            fprintf(stderr, "moe detokenize: unknown option '%s'\n", argv[i]);
            return 2;
        } else {
            first = i;
            break;
        }
    }
    if (!model) {
        fprintf(stderr, "usage: moe detokenize --model FILE [--special] ID...\n");
        return 2;
    }
    gguf_t *g = NULL;
    tokenizer_t *t = NULL;
    int32_t *ids = NULL;
    size_t n = 0, cap = 0, sl;
    char *s = NULL, *in = NULL;
    int rc = 1;
    if (open_tokenizer(model, &g, &t) < 0)
        goto done;
    if (first == argc) {
        size_t il;
        if (!(in = read_all(stdin, &il)))
            goto done;
        char *z = realloc(in, il + 1);
        if (!z)
            goto done;
        in = z;
        in[il] = 0;
        if (parse_ids(in, t, &ids, &n, &cap) < 0)
            goto done;
    }
    for (int i = first; i < argc; i++)
        if (parse_ids(argv[i], t, &ids, &n, &cap) < 0)
            goto done;
    if (tokenizer_decode_alloc(t, ids, n, flags, &s, &sl) < 0)
        goto done;
    fwrite(s, 1, sl, stdout);
    rc = fflush(stdout) == 0 ? 0 : 1;
done:
    free(s);
    free(in);
    free(ids);
    tokenizer_free(t);
    gguf_free(g);
    return rc;
}

/* ---- bench ---- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Deterministic mixed text: English words and punctuation, numbers, code-like lines, and
 * some non-Latin script and emoji, the mix a chat prompt carries. */
static char *bench_text(size_t n)
{
    static const char *const words[] = {
        "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be",
        "by", "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but",
        "have", "an", "had", "they", "you", "were", "their", "one", "all", "we", "can", "her",
        "has", "there", "been", "if", "more", "when", "will", "would", "who", "so", "no",
        "model", "expert", "tokenizer", "streaming", "memory", "Vulkan", "kernel", "cache",
        "weights", "inference", "latency", "throughput", "benchmark", "configuration",
        "don't", "it's", "we'll", "they're", "I've", "2024", "3.14159", "1,000,000", "0x7fff",
        "int", "main(void)", "return", "{", "}", "x[i]", "->", "==", "&&", "/*", "*/",
        "Привет", "мир", "日本語", "テキスト", "中文", "العربية", "ελληνικά", "😀", "🚀", "✅",
    };
    char *s = malloc(n + 64);
    if (!s)
        return NULL;
    uint64_t x = 0x9e3779b97f4a7c15ull;
    size_t o = 0;
    while (o < n) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        const char *w = words[x % (sizeof(words) / sizeof(*words))];
        size_t l = strlen(w);
        memcpy(s + o, w, l);
        o += l;
        unsigned p = (unsigned)(x >> 40) % 100;
        s[o++] = p < 4 ? '.' : p < 7 ? ',' : p < 9 ? '\n' : ' ';
        if (p < 4)
            s[o++] = ' ';
    }
    /* cut at n on a code point boundary */
    while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
        n--;
    s[n] = 0;
    return s;
}

/* The baseline: decode every UTF-8 code point of the text and count the ones that are
 * letters by a table lookup. Any tokenizer has to look at each code point at least this
 * much, so the ratio says how many times slower than that floor tokenization is; a
 * memchr-style pass would run at memory speed and say little about a tokenizer. */
static uint64_t bench_baseline(const char *s, size_t n)
{
    uint64_t count = 0;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t l = c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
        uint32_t cp = l == 1 ? c : (uint32_t)(c & (0x7f >> l));
        for (size_t k = 1; k < l && i + k < n; k++)
            cp = (cp << 6) | ((unsigned char)s[i + k] & 0x3f);
        count += (cp | 0x20) - 'a' < 26u || cp > 0x7f;
        i += l;
    }
    return count;
}

int moe_bench_tokenize(int argc, char **argv)
{
    const char *model = NULL, *file = NULL, *write_text = NULL;
    size_t bytes = 1 << 20;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: moe bench tokenize --model FILE [--bytes N] [--file PATH] [--json]\n"
                   "                          [--write-text PATH]\n"
                   "Tokenizes N bytes (default 1 MiB) of generated mixed text (or the bytes\n"
                   "of PATH), best of 3 runs, and compares with a UTF-8 decoding pass over\n"
                   "the same text (ratio = tokenizer bytes/s / decoding-pass bytes/s).\n"
                   "--write-text saves the generated text (to time `moe tokenize --file`).\n");
            return 0;
        } else if (!strcmp(argv[i], "--model") && i + 1 < argc) {
            model = argv[++i];
        } else if (!strcmp(argv[i], "--file") && i + 1 < argc) {
            file = argv[++i];
        } else if (!strcmp(argv[i], "--write-text") && i + 1 < argc) {
            write_text = argv[++i];
        } else if (!strcmp(argv[i], "--bytes") && i + 1 < argc) {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(argv[++i], &end, 10);
            if (errno || *end || v == 0 || v > (1ull << 30)) {
                fprintf(stderr, "moe bench tokenize: --bytes takes 1..%llu\n", 1ull << 30);
                return 2;
            }
            bytes = (size_t)v;
        } else if (!strcmp(argv[i], "--json")) {
            json = true;
        } else {
            fprintf(stderr, "moe bench tokenize: unknown option '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!model) {
        fprintf(stderr, "usage: moe bench tokenize --model FILE [--bytes N] [--json]\n");
        return 2;
    }
    char *text = NULL;
    size_t len = 0;
    if (file) {
        FILE *f = fopen(file, "rbe");
        if (!f || !(text = read_all(f, &len))) {
            fprintf(stderr, "moe bench tokenize: cannot read %s\n", file);
            if (f)
                fclose(f);
            return 1;
        }
        fclose(f);
    } else {
        if (!(text = bench_text(bytes)))
            return 1;
        len = strlen(text);
        FILE *f = write_text ? fopen(write_text, "wbe") : NULL;
        if (write_text && (!f || fwrite(text, 1, len, f) != len || fclose(f) != 0)) {
            fprintf(stderr, "moe bench tokenize: cannot write %s\n", write_text);
            free(text);
            return 1;
        }
    }
    gguf_t *g = NULL;
    tokenizer_t *t = NULL;
    int rc = 1;
    if (open_tokenizer(model, &g, &t) < 0)
        goto done;
    double best = 1e30, base = 1e30;
    size_t ntok = 0;
    volatile uint64_t sink = 0;
    for (int rep = 0; rep < 3; rep++) {
        int32_t *ids;
        double t0 = now_s();
        int r = tokenizer_encode_alloc(t, text, len, 0, &ids, &ntok);
        double dt = now_s() - t0;
        if (r < 0) {
            fprintf(stderr, "moe bench tokenize: %s\n", strerror(-r));
            goto done;
        }
        free(ids);
        best = dt < best ? dt : best;
        t0 = now_s();
        sink += bench_baseline(text, len);
        dt = now_s() - t0;
        base = dt < base ? dt : base;
    }
    (void)sink;
    double mbs = (double)len / best / 1e6, base_mbs = (double)len / base / 1e6;
    if (json) {
        printf("{\"bench\":\"tokenize\",\"tokenizer\":\"%s\",\"pre\":\"%s\",\"bytes\":%zu,"
               "\"tokens\":%zu,\"seconds\":%.6f,\"mb_per_s\":%.3f,\"baseline\":"
               "\"utf8-decode pass\",\"baseline_mb_per_s\":%.3f,\"ratio\":%.5f}\n",
               tokenizer_kind(t) == TOKENIZER_SPM ? "spm" : "bpe", tokenizer_pre_name(t), len,
               ntok, best, mbs, base_mbs, mbs / base_mbs);
    } else {
        printf("tokenize: %zu bytes -> %zu tokens in %.3f s: %.2f MB/s (%.2f bytes/token)\n"
               "baseline (UTF-8 decode pass): %.1f MB/s; ratio %.4f\n",
               len, ntok, best, mbs, ntok ? (double)len / (double)ntok : 0.0, base_mbs,
               mbs / base_mbs);
    }
    rc = 0;
done:
    tokenizer_free(t);
    gguf_free(g);
    free(text);
    return rc;
}
