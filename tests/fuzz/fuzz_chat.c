/* libFuzzer harness for the chat templates: random conversations rendered with every chat
 * family (chat_render), and the input as template text through family detection
 * (chat_template_init). Input layout: byte 0 holds the options (generation prompt,
 * thinking, an EOS text, think_in_prompt / glm45 variants); then messages separated by NUL
 * bytes, each a role byte followed by its content. Roles are the four the API passes on
 * (system, user, assistant, tool); role bytes >= 0xf0 make an arbitrary role out of the
 * content's first line instead (never sent by the API: only "no crash" is asked then).
 * Invariants (a broken one traps):
 *   - rendering never fails for valid messages; the length is the string's length;
 *   - every message's content (trimmed of ASCII whitespace, as the trimming families do)
 *     appears in the output, except where the family's format has no place for it, as in
 *     llama.cpp: Gemma and Orion carry a system message into the next user turn (none
 *     after it: dropped); Vicuna, DeepSeek 1/2/3, Command-R and EXAONE 3 have no tool turn;
 *   - with valid UTF-8 in and API roles, the output is valid UTF-8;
 *   - detection accepts or refuses any text, and what it accepts is a real family. */
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "text/chat.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x))                                                                                  \
            __builtin_trap();                                                                      \
    } while (0)

#define MAX_MSGS 64

static const char *const api_roles[] = {"system", "user", "assistant", "tool"};

static bool utf8_valid(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        uint8_t c = s[i];
        size_t len;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf)
            len = 2, cp = c & 0x1f, min = 0x80;
        else if (c >= 0xe0 && c <= 0xef)
            len = 3, cp = c & 0x0f, min = 0x800;
        else if (c >= 0xf0 && c <= 0xf4)
            len = 4, cp = c & 0x07, min = 0x10000;
        else
            return false;
        if (n - i < len)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += len;
    }
    return true;
}

/* Whether the family's format has a place for message i (see the header comment). */
static bool rendered(enum chat_family f, const chat_msg_t *m, size_t n, size_t i)
{
    const char *role = m[i].role;
    if (!strcmp(role, "tool"))
        return !(f == CHAT_VICUNA || f == CHAT_VICUNA_ORCA || f == CHAT_DEEPSEEK ||
                 f == CHAT_DEEPSEEK2 || f == CHAT_DEEPSEEK3 || f == CHAT_COMMAND_R ||
                 f == CHAT_EXAONE3);
    if (strcmp(role, "system") || (f != CHAT_GEMMA && f != CHAT_ORION))
        return true;
    /* carried into the next turn that takes it: Gemma's next non-model, non-system turn;
     * Orion's next user turn */
    for (size_t k = i + 1; k < n; k++) {
        const char *r = m[k].role;
        if (f == CHAT_GEMMA && strcmp(r, "system") && strcmp(r, "assistant"))
            return true;
        if (f == CHAT_ORION && !strcmp(r, "user"))
            return true;
    }
    return false;
}

static void contains_trimmed(const char *out, const char *s)
{
    size_t n = strlen(s);
    while (n && isspace((unsigned char)*s))
        s++, n--;
    while (n && isspace((unsigned char)s[n - 1]))
        n--;
    if (!n)
        return;
    CHECK(memmem(out, strlen(out), s, n) != NULL);
}

static void render_all(const chat_msg_t *m, size_t n, uint8_t opt, bool api_roles_only,
                       bool utf8_in)
{
    chat_opts_t o = {
        .add_generation_prompt = opt & 1,
        .enable_thinking = opt & 2,
        .eos_text = opt & 4 ? "</s>" : NULL,
    };
    for (int f = CHAT_UNKNOWN + 1; f < CHAT_FAMILY_COUNT_; f++) {
        chat_template_t ct = {
            .family = (enum chat_family)f,
            .think_in_prompt = opt & 8,
            .has_enable_thinking = opt & 16,
            .glm45 = f == CHAT_CHATGLM4 && (opt & 32),
        };
        char *out = NULL;
        size_t len = 0;
        CHECK(chat_render(&ct, m, n, &o, &out, &len) == 0);
        CHECK(out && out[len] == 0 && strlen(out) == len);
        if (api_roles_only) {
            for (size_t i = 0; i < n; i++)
                if (rendered(ct.family, m, n, i))
                    contains_trimmed(out, m[i].content);
            if (utf8_in)
                CHECK(utf8_valid((const uint8_t *)out, len));
        }
        free(out);
    }
    /* unknown family: refused, nothing allocated */
    chat_template_t none = {.family = CHAT_UNKNOWN};
    char *out = NULL;
    size_t len = 0;
    CHECK(chat_render(&none, m, n, &o, &out, &len) == -ENOTSUP && out == NULL);
}

static void detect(const uint8_t *data, size_t size)
{
    char *tmpl = malloc(size + 1), err[256];
    CHECK(tmpl);
    memcpy(tmpl, data, size);
    tmpl[size] = 0;
    chat_template_t ct;
    memset(err, 0, sizeof(err));
    int r = chat_template_init(&ct, tmpl, NULL, err, sizeof(err));
    if (r == 0)
        CHECK(ct.family > CHAT_UNKNOWN && ct.family < CHAT_FAMILY_COUNT_);
    else
        CHECK(r == -ENOTSUP && err[0] && memchr(err, 0, sizeof(err)));
    free(tmpl);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    detect(data, size);

    /* Own copy with a NUL at the end: the NUL-separated segments become C strings. */
    char *buf = malloc(size + 1), *roles[MAX_MSGS] = {0};
    CHECK(buf);
    memcpy(buf, data, size);
    buf[size] = 0;
    uint8_t opt = (uint8_t)buf[0];
    chat_msg_t m[MAX_MSGS];
    size_t n = 0;
    bool api_only = true, utf8_in = true;
    for (char *p = buf + 1; p < buf + size && n < MAX_MSGS; p += strlen(p) + 1) {
        uint8_t rb = (uint8_t)*p;
        const char *content = *p ? p + 1 : p;
        if (rb >= 0xf0) {
            /* an arbitrary role: the first line of the content */
            size_t rl = strcspn(content, "\n");
            roles[n] = strndup(content, rl);
            CHECK(roles[n]);
            m[n].role = roles[n];
            content += rl;
            api_only = false;
        } else {
            m[n].role = api_roles[rb & 3];
        }
        m[n].content = content;
        utf8_in = utf8_in && utf8_valid((const uint8_t *)content, strlen(content));
        n++;
    }
    render_all(m, n, opt, api_only, utf8_in);
    /* a NULL content is refused, not dereferenced */
    if (n) {
        chat_template_t ct = {.family = CHAT_CHATML};
        char *out = NULL;
        size_t len;
        m[n - 1].content = NULL;
        CHECK(chat_render(&ct, m, n, NULL, &out, &len) == -EINVAL && out == NULL);
    }
    for (size_t i = 0; i < n; i++)
        free(roles[i]);
    free(buf);
    return 0;
}
