/* The settings table and everything it drives: defaults, config file lines, command-line
 * flags, --help, the moed.conf(5) man page and range checks. Adding a setting is one row
 * here plus one field in settings_t; nothing else parses settings. Defaults are stored as
 * text and go through the same parser as user input, so a default can never be out of its
 * own range. */
#include "settings.h"

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

enum setting_type { ST_STR, ST_U32, ST_SIZE, ST_BOOL, ST_ENUM, ST_MODE };

typedef struct setting_def {
    const char *name; /* with '-' */
    enum setting_type type;
    size_t off;
    const char *def;
    uint64_t min, max;       /* ST_U32, ST_SIZE */
    const char *const *choices; /* ST_ENUM: NULL-terminated, value = index */
    const char *help;
} setting_def_t;

static const char *const log_levels[] = {"", "", "", "err", "warning", "notice", "info", "debug",
                                         NULL};
static const char *const io_backends[] = {"auto", "io_uring", "pread", NULL};
static const char *const cache_policies[] = {"lru", "lfru", NULL};
static const char *const engines[] = {"vulkan", "reference", NULL};

#define F(x) offsetof(settings_t, x)
#define GIB (1024ull * 1024 * 1024)
static const setting_def_t defs[] = {
    {"model", ST_STR, F(model), "/var/lib/moed/models/model.gguf", 0, 0, NULL,
     "GGUF model file to serve"},
    {"socket", ST_STR, F(socket), "/run/moed/moed.sock", 0, 0, NULL,
     "Unix socket path to bind when not socket-activated by systemd"},
    {"socket-mode", ST_MODE, F(socket_mode), "0660", 0, 0777, NULL,
     "permission bits (octal) of a socket moed binds itself"},
    {"socket-group", ST_STR, F(socket_group), "", 0, 0, NULL,
     "group owning a socket moed binds itself (empty: moed's group)"},
    {"engine", ST_ENUM, F(engine), "vulkan", 0, 0, engines,
     "forward pass: vulkan (the GPU engine) or reference (the CPU oracle: slow, small models "
     "only, for checking)"},
    {"device", ST_STR, F(device), "", 0, 0, NULL,
     "Vulkan device: index, name substring or UUID (empty: discrete, then integrated, then CPU)"},
    {"gpu-cache", ST_SIZE, F(gpu_cache), "0", 0, 1ull << 50, NULL,
     "GPU memory for the expert cache, bytes with K/M/G suffix (0: every expert if they "
     "fit the device memory left after the resident weights, else what fits)"},
    {"host-cache", ST_SIZE, F(host_cache), "0", 0, 1ull << 50, NULL,
     "host RAM for the second expert cache tier (0: no host tier)"},
    {"ctx", ST_U32, F(ctx), "4096", 16, 1u << 20, NULL,
     "maximum context (prompt + completion tokens) of one sequence"},
    {"parallel", ST_U32, F(parallel), "4", 1, 256, NULL,
     "maximum sequences decoded together in one engine step"},
    {"queue", ST_U32, F(queue), "64", 1, 65536, NULL,
     "maximum requests waiting for a sequence slot (more get 429)"},
    {"request-timeout", ST_U32, F(request_timeout), "600", 1, 86400, NULL,
     "seconds one request may run in all before it is ended"},
    /* at least 5: above the 2 s keep-alive ping (PING_MS, api_generate.c) of a stream that
     * waits in the queue, which libmicrohttpd would otherwise close as idle */
    {"idle-timeout", ST_U32, F(idle_timeout), "30", 5, 3600, NULL,
     "seconds an idle client connection is kept open"},
    {"max-body", ST_SIZE, F(max_body), "1M", 1024, 256ull << 20, NULL,
     "largest accepted request body (larger get 413)"},
    {"max-tokens", ST_U32, F(max_tokens), "4096", 1, 1u << 20, NULL,
     "cap on the tokens one request may generate"},
    {"allow-users", ST_STR, F(allow_users), "", 0, 0, NULL,
     "comma-separated users (names or uids) allowed to use the API (empty: anyone who can "
     "open the socket)"},
    {"allow-groups", ST_STR, F(allow_groups), "", 0, 0, NULL,
     "comma-separated groups (names or gids) whose members are allowed"},
    {"log-level", ST_ENUM, F(log_level), "info", 0, 0, log_levels,
     "err, warning, notice, info or debug"},
    {"log-prompts", ST_BOOL, F(log_prompts), "no", 0, 0, NULL,
     "log prompt and completion text (never logged unless this is on)"},
    {"io-backend", ST_ENUM, F(io_backend), "auto", 0, 0, io_backends,
     "auto, io_uring or pread (only an explicit io_uring may fail to start)"},
    {"io-depth", ST_U32, F(io_depth), "64", 1, 4096, NULL, "io_uring queue depth"},
    {"io-direct", ST_BOOL, F(io_direct), "yes", 0, 0, NULL,
     "read experts with O_DIRECT (falls back to buffered reads where refused)"},
    {"prefetch", ST_BOOL, F(prefetch), "yes", 0, 0, NULL,
     "speculatively load the next layer's likely experts"},
    {"cache-policy", ST_ENUM, F(cache_policy), "lfru", 0, 0, cache_policies,
     "expert cache eviction policy: lru or lfru (frequency-aware)"},
    {"cache-dir", ST_STR, F(cache_dir), "/var/cache/moed", 0, 0, NULL,
     "directory for the Vulkan pipeline cache"},
    {"chat-template", ST_STR, F(chat_template), "", 0, 0, NULL,
     "force a chat template family (chatml, llama3, mistral, ...; empty: detect)"},
    {"vk-validation", ST_BOOL, F(vk_validation), "no", 0, 0, NULL,
     "enable the Vulkan validation layers (debugging; MOE_VK_VALIDATION=1 in the environment "
     "also does)"},
};
#undef F
#define N_DEFS (sizeof(defs) / sizeof(defs[0]))

static const setting_def_t *find_def(const char *key)
{
    char norm[64];
    size_t n = strlen(key);
    if (n == 0 || n >= sizeof(norm))
        return NULL;
    for (size_t i = 0; i <= n; i++)
        norm[i] = key[i] == '_' ? '-' : key[i];
    for (size_t i = 0; i < N_DEFS; i++)
        if (!strcmp(defs[i].name, norm))
            return &defs[i];
    return NULL;
}

int settings_parse_u64(const char *text, bool size_suffix, uint64_t *ret)
{
    if (!text || !isdigit((unsigned char)text[0]))
        return -EINVAL;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno == ERANGE)
        return -ERANGE;
    uint64_t mul = 1;
    if (size_suffix && *end) {
        switch (toupper((unsigned char)*end)) {
        case 'K': mul = 1ull << 10; break;
        case 'M': mul = 1ull << 20; break;
        case 'G': mul = 1ull << 30; break;
        case 'T': mul = 1ull << 40; break;
        default: return -EINVAL;
        }
        end++;
        if (toupper((unsigned char)*end) == 'I')
            end++;
        if (toupper((unsigned char)*end) == 'B')
            end++;
    }
    if (*end)
        return -EINVAL;
    uint64_t out;
    if (__builtin_mul_overflow((uint64_t)v, mul, &out))
        return -ERANGE;
    *ret = out;
    return 0;
}

static int parse_bool(const char *v, bool *ret)
{
    static const char *const yes[] = {"1", "yes", "true", "on"};
    static const char *const no[] = {"0", "no", "false", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (!strcasecmp(v, yes[i])) {
            *ret = true;
            return 0;
        }
        if (!strcasecmp(v, no[i])) {
            *ret = false;
            return 0;
        }
    }
    return -EINVAL;
}

static int set_def(settings_t *s, const setting_def_t *d, const char *value, char *err,
                   size_t errlen)
{
    void *p = (char *)s + d->off;
    uint64_t v = 0;
    int r = 0;

    switch (d->type) {
    case ST_STR: {
        char *dup = strdup(value);
        if (!dup)
            return -ENOMEM;
        free(*(char **)p);
        *(char **)p = dup;
        return 0;
    }
    case ST_BOOL:
        r = parse_bool(value, (bool *)p);
        if (r < 0)
            snprintf(err, errlen, "%s: '%s' is not a boolean (yes/no)", d->name, value);
        return r;
    case ST_ENUM:
        for (uint32_t i = 0; d->choices[i]; i++)
            if (d->choices[i][0] && !strcasecmp(d->choices[i], value)) {
                *(uint32_t *)p = i;
                return 0;
            }
        snprintf(err, errlen, "%s: '%s' is not one of the allowed values", d->name, value);
        return -EINVAL;
    case ST_MODE: {
        char *end;
        errno = 0;
        unsigned long m = strtoul(value, &end, 8);
        if (errno || *end || !*value || m > d->max) {
            snprintf(err, errlen, "%s: '%s' is not an octal mode <= %03llo", d->name, value,
                     (unsigned long long)d->max);
            return -EINVAL;
        }
        *(uint32_t *)p = (uint32_t)m;
        return 0;
    }
    case ST_U32:
    case ST_SIZE:
        r = settings_parse_u64(value, d->type == ST_SIZE, &v);
        if (r < 0 || v < d->min || v > d->max) {
            snprintf(err, errlen, "%s: '%s' is not a number in [%llu, %llu]", d->name, value,
                     (unsigned long long)d->min, (unsigned long long)d->max);
            return r < 0 && r != -EINVAL ? r : -ERANGE;
        }
        if (d->type == ST_U32)
            *(uint32_t *)p = (uint32_t)v;
        else
            *(uint64_t *)p = v;
        return 0;
    }
    return -EINVAL;
}

int settings_set(settings_t *s, const char *key, const char *value, char *err, size_t errlen)
{
    const setting_def_t *d = find_def(key);
    if (!d) {
        snprintf(err, errlen, "unknown setting '%s'", key);
        return -ENOENT;
    }
    return set_def(s, d, value, err, errlen);
}

int settings_init(settings_t *s)
{
    char err[256];
    memset(s, 0, sizeof(*s));
    for (size_t i = 0; i < N_DEFS; i++) {
        int r = set_def(s, &defs[i], defs[i].def, err, sizeof(err));
        if (r < 0) {
            settings_clear(s);
            return r;
        }
    }
    return 0;
}

void settings_clear(settings_t *s)
{
    for (size_t i = 0; i < N_DEFS; i++)
        if (defs[i].type == ST_STR) {
            char **p = (char **)((char *)s + defs[i].off);
            free(*p);
            *p = NULL;
        }
}

static char *trim(char *t)
{
    while (isspace((unsigned char)*t))
        t++;
    char *e = t + strlen(t);
    while (e > t && isspace((unsigned char)e[-1]))
        *--e = 0;
    return t;
}

int settings_load_file(settings_t *s, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        int r = -errno;
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return r;
    }
    char line[4096], sub[256];
    unsigned lineno = 0;
    int r = 0;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        if (!strchr(line, '\n') && !feof(f)) {
            snprintf(err, errlen, "%s:%u: line too long", path, lineno);
            r = -EINVAL;
            break;
        }
        char *t = trim(line);
        if (!*t || *t == '#')
            continue;
        char *eq = strchr(t, '=');
        if (!eq) {
            snprintf(err, errlen, "%s:%u: expected 'key = value'", path, lineno);
            r = -EINVAL;
            break;
        }
        *eq = 0;
        char *key = trim(t), *val = trim(eq + 1);
        /* Values may be quoted to keep leading/trailing spaces or '#'. */
        size_t vl = strlen(val);
        if (vl >= 2 && val[0] == '"' && val[vl - 1] == '"') {
            val[vl - 1] = 0;
            val++;
        }
        r = settings_set(s, key, val, sub, sizeof(sub));
        if (r < 0) {
            snprintf(err, errlen, "%s:%u: %s", path, lineno, sub);
            break;
        }
    }
    fclose(f);
    return r;
}

int settings_parse_args(settings_t *s, int argc, char **argv, char *err, size_t errlen)
{
    int i;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || a[1] != '-')
            break;
        if (!a[2]) { /* "--" ends the options */
            i++;
            break;
        }
        char key[64];
        const char *val = NULL, *eq = strchr(a + 2, '=');
        size_t kl = eq ? (size_t)(eq - (a + 2)) : strlen(a + 2);
        if (kl >= sizeof(key)) {
            snprintf(err, errlen, "unknown option '%s'", a);
            return -ENOENT;
        }
        memcpy(key, a + 2, kl);
        key[kl] = 0;
        const setting_def_t *d = find_def(key);
        if (!d && !eq && !strncmp(key, "no-", 3) && (d = find_def(key + 3)) &&
            d->type == ST_BOOL) {
            val = "no";
        } else if (!d) {
            snprintf(err, errlen, "unknown option '--%s'", key);
            return -ENOENT;
        } else if (eq) {
            val = eq + 1;
        } else if (d->type == ST_BOOL) {
            val = "yes";
        } else if (i + 1 < argc) {
            val = argv[++i];
        } else {
            snprintf(err, errlen, "option '--%s' needs a value", key);
            return -EINVAL;
        }
        int r = set_def(s, d, val, err, errlen);
        if (r < 0)
            return r;
    }
    return i;
}

static const char *type_word(const setting_def_t *d)
{
    switch (d->type) {
    case ST_STR: return "TEXT";
    case ST_U32: return "N";
    case ST_SIZE: return "BYTES";
    case ST_BOOL: return "BOOL";
    case ST_ENUM: return "WORD";
    case ST_MODE: return "MODE";
    }
    return "";
}

void settings_print_help(FILE *f)
{
    for (size_t i = 0; i < N_DEFS; i++) {
        const setting_def_t *d = &defs[i];
        char flag[64];
        snprintf(flag, sizeof(flag), "--%s=%s", d->name, type_word(d));
        fprintf(f, "  %-28s %s [%s]\n", flag, d->help, d->def[0] ? d->def : "\"\"");
    }
}

void settings_print_man(FILE *f)
{
    fprintf(f, ".TH MOED.CONF 5 \"\" \"moed\" \"File formats\"\n"
               ".SH NAME\nmoed.conf \\- configuration of the moed inference service\n"
               ".SH SYNOPSIS\n/etc/moed/moed.conf\n"
               ".SH DESCRIPTION\nOne \\fIkey\\fR = \\fIvalue\\fR per line; \\fB#\\fR starts a "
               "comment. Keys are the long option names of \\fBmoed\\fR(8), with '-' or '_'. "
               "Sizes take K, M, G or T suffixes (powers of 1024). Command-line options "
               "override the file.\n.SH SETTINGS\n");
    for (size_t i = 0; i < N_DEFS; i++) {
        const setting_def_t *d = &defs[i];
        fprintf(f, ".TP\n\\fB%s\\fR = \\fI%s\\fR (default: %s)\n%s.\n", d->name, type_word(d),
                d->def[0] ? d->def : "empty", d->help);
    }
    fprintf(f, ".SH SEE ALSO\n\\fBmoed\\fR(8), \\fBmoectl\\fR(1)\n");
}

void settings_dump(const settings_t *s, FILE *f)
{
    for (size_t i = 0; i < N_DEFS; i++) {
        const setting_def_t *d = &defs[i];
        const void *p = (const char *)s + d->off;
        fprintf(f, "%s = ", d->name);
        switch (d->type) {
        case ST_STR: fprintf(f, "%s\n", *(char *const *)p ? *(char *const *)p : ""); break;
        case ST_U32: fprintf(f, "%u\n", *(const uint32_t *)p); break;
        case ST_SIZE: fprintf(f, "%llu\n", (unsigned long long)*(const uint64_t *)p); break;
        case ST_BOOL: fprintf(f, "%s\n", *(const bool *)p ? "yes" : "no"); break;
        case ST_ENUM: fprintf(f, "%s\n", d->choices[*(const uint32_t *)p]); break;
        case ST_MODE: fprintf(f, "%04o\n", *(const uint32_t *)p); break;
        }
    }
}
