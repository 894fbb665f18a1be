/* Chat template families: detection from the Jinja source's marker strings and rendering
 * in C. The detection order and each family's output follow llama.cpp's built-in formatter
 * (src/llama-chat.cpp, llm_chat_detect_template / llm_chat_apply_template), whose tests
 * (tests/test-chat-template.cpp) give the expected prompts our tests compare with; moed
 * adds gpt-oss (harmony) and Tulu (OLMoE) and the thinking switches of reasoning models
 * (generation prompts that open <think>, Qwen3's enable_thinking). Invariant: rendering is
 * a pure function of (template, messages, options); no state. Callers: the API's chat
 * endpoint and tests/text. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/chat.h"

static const char *const family_names[CHAT_FAMILY_COUNT_] = {
    [CHAT_UNKNOWN] = "unknown",
    [CHAT_CHATML] = "chatml",
    [CHAT_LLAMA2] = "llama2",
    [CHAT_LLAMA2_SYS] = "llama2-sys",
    [CHAT_LLAMA2_SYS_BOS] = "llama2-sys-bos",
    [CHAT_LLAMA2_SYS_STRIP] = "llama2-sys-strip",
    [CHAT_MISTRAL_V1] = "mistral-v1",
    [CHAT_MISTRAL_V3] = "mistral-v3",
    [CHAT_MISTRAL_V3_TEKKEN] = "mistral-v3-tekken",
    [CHAT_MISTRAL_V7] = "mistral-v7",
    [CHAT_MISTRAL_V7_TEKKEN] = "mistral-v7-tekken",
    [CHAT_PHI3] = "phi3",
    [CHAT_PHI4] = "phi4",
    [CHAT_FALCON3] = "falcon3",
    [CHAT_ZEPHYR] = "zephyr",
    [CHAT_MONARCH] = "monarch",
    [CHAT_GEMMA] = "gemma",
    [CHAT_ORION] = "orion",
    [CHAT_OPENCHAT] = "openchat",
    [CHAT_VICUNA] = "vicuna",
    [CHAT_VICUNA_ORCA] = "vicuna-orca",
    [CHAT_DEEPSEEK] = "deepseek",
    [CHAT_DEEPSEEK2] = "deepseek2",
    [CHAT_DEEPSEEK3] = "deepseek3",
    [CHAT_COMMAND_R] = "command-r",
    [CHAT_LLAMA3] = "llama3",
    [CHAT_CHATGLM3] = "chatglm3",
    [CHAT_CHATGLM4] = "chatglm4",
    [CHAT_GLMEDGE] = "glmedge",
    [CHAT_MINICPM] = "minicpm",
    [CHAT_EXAONE3] = "exaone3",
    [CHAT_EXAONE4] = "exaone4",
    [CHAT_GRANITE] = "granite",
    [CHAT_MEGREZ] = "megrez",
    [CHAT_BAILING] = "bailing",
    [CHAT_LLAMA4] = "llama4",
    [CHAT_DOTS1] = "dots1",
    [CHAT_HUNYUAN_MOE] = "hunyuan-moe",
    [CHAT_KIMI_K2] = "kimi-k2",
    [CHAT_GPT_OSS] = "gpt-oss",
    [CHAT_TULU] = "tulu",
};

const char *chat_family_name(enum chat_family f)
{
    return f > CHAT_UNKNOWN && f < CHAT_FAMILY_COUNT_ ? family_names[f] : "unknown";
}

int chat_family_from_name(const char *name, enum chat_family *ret)
{
    for (int f = CHAT_UNKNOWN + 1; f < CHAT_FAMILY_COUNT_; f++)
        if (!strcmp(name, family_names[f])) {
            *ret = (enum chat_family)f;
            return 0;
        }
    if (!strcmp(name, "olmoe")) { /* an alias people will type */
        *ret = CHAT_TULU;
        return 0;
    }
    return -ENOENT;
}

const char *chat_family_names(void)
{
    return "chatml, llama2, llama2-sys, llama2-sys-bos, llama2-sys-strip, mistral-v1, "
           "mistral-v3, mistral-v3-tekken, mistral-v7, mistral-v7-tekken, phi3, phi4, falcon3, "
           "zephyr, monarch, gemma, orion, openchat, vicuna, vicuna-orca, deepseek, deepseek2, "
           "deepseek3, command-r, llama3, chatglm3, chatglm4, glmedge, minicpm, exaone3, "
           "exaone4, granite, megrez, bailing, llama4, dots1, hunyuan-moe, kimi-k2, gpt-oss, "
           "tulu (olmoe)";
}

/* ---- detection ---- */

#define FW_BAR "\xef\xbd\x9c" /* U+FF5C, DeepSeek's fullwidth bar */
#define SPM_SP "\xe2\x96\x81" /* U+2581 */

static enum chat_family detect(const char *t)
{
#define HAS(s) (strstr(t, (s)) != NULL)
    if (HAS("<|im_start|>")) {
        if (HAS("<|im_sep|>"))
            return CHAT_PHI4;
        if (HAS("<end_of_utterance>"))
            return CHAT_UNKNOWN; /* SmolVLM: <|im_start|> is its BOS, not ChatML */
        return CHAT_CHATML;
    }
    if (!strncmp(t, "mistral", 7) || HAS("[INST]")) {
        if (HAS("[SYSTEM_PROMPT]"))
            return CHAT_MISTRAL_V7;
        if (HAS("' [INST] ' + system_message") || HAS("[AVAILABLE_TOOLS]")) {
            if (HAS(" [INST]"))
                return CHAT_MISTRAL_V1;
            if (HAS("\"[INST]\""))
                return CHAT_MISTRAL_V3_TEKKEN;
            return CHAT_MISTRAL_V3;
        }
        if (HAS("content.strip()"))
            return CHAT_LLAMA2_SYS_STRIP;
        if (HAS("bos_token + '[INST]"))
            return CHAT_LLAMA2_SYS_BOS;
        if (HAS("<<SYS>>"))
            return CHAT_LLAMA2_SYS;
        return CHAT_LLAMA2;
    }
    /* gpt-oss (harmony) before the <|...|> role families: it has <|start|> and channels */
    if (HAS("<|channel|>") && HAS("<|start|>") && HAS("<|message|>"))
        return CHAT_GPT_OSS;
    if (HAS("<|assistant|>") && HAS("<|end|>"))
        return CHAT_PHI3;
    if (HAS("[gMASK]<sop>"))
        return CHAT_CHATGLM4;
    if (HAS("<|assistant|>") && HAS("<|user|>")) {
        if (HAS("</s>"))
            return CHAT_FALCON3;
        /* Tulu (OLMoE, OLMo 2): ends assistant turns with eos_token; llama.cpp would take it
         * for GLM-Edge, which writes neither the newlines nor the EOS */
        if (HAS("eos_token"))
            return CHAT_TULU;
        return CHAT_GLMEDGE;
    }
    if (HAS("<|{{ item['role'] }}|>") && HAS("<|begin_of_image|>"))
        return CHAT_GLMEDGE;
    if (HAS("<|user|>") && HAS("<|endoftext|>"))
        return CHAT_ZEPHYR;
    if (HAS("bos_token + message['role']"))
        return CHAT_MONARCH;
    if (HAS("<start_of_turn>"))
        return CHAT_GEMMA;
    if (HAS("'\\n\\nAssistant: ' + eos_token"))
        return CHAT_ORION;
    if (HAS("GPT4 Correct "))
        return CHAT_OPENCHAT;
    if (HAS("USER: ") && HAS("ASSISTANT: "))
        return HAS("SYSTEM: ") ? CHAT_VICUNA_ORCA : CHAT_VICUNA;
    if (HAS("### Instruction:") && HAS("<|EOT|>"))
        return CHAT_DEEPSEEK;
    if (HAS("<|START_OF_TURN_TOKEN|>") && HAS("<|USER_TOKEN|>"))
        return CHAT_COMMAND_R;
    if (HAS("<|start_header_id|>") && HAS("<|end_header_id|>"))
        return CHAT_LLAMA3;
    if (HAS("[gMASK]sop"))
        return CHAT_CHATGLM3;
    if (HAS("<\xe7\x94\xa8\xe6\x88\xb7>")) /* <用户> */
        return CHAT_MINICPM;
    if (HAS("'Assistant: ' + message['content'] + eos_token"))
        return CHAT_DEEPSEEK2;
    if (HAS("<" FW_BAR "Assistant" FW_BAR ">") && HAS("<" FW_BAR "User" FW_BAR ">") &&
        HAS("<" FW_BAR "end" SPM_SP "of" SPM_SP "sentence" FW_BAR ">"))
        return CHAT_DEEPSEEK3;
    if (HAS("[|system|]") && HAS("[|assistant|]") && HAS("[|endofturn|]"))
        return HAS("[|tool|]") ? CHAT_EXAONE4 : CHAT_EXAONE3;
    if (HAS("<|start_of_role|>"))
        return CHAT_GRANITE;
    if (HAS("<|role_start|>"))
        return CHAT_MEGREZ;
    if (HAS("<role>ASSISTANT</role>") && HAS("'HUMAN'"))
        return CHAT_BAILING;
    if (HAS("<|header_start|>") && HAS("<|header_end|>"))
        return CHAT_LLAMA4;
    if (HAS("<|endofuserprompt|>"))
        return CHAT_DOTS1;
    if (HAS("<|startoftext|>") && HAS("<|extra_4|>"))
        return CHAT_HUNYUAN_MOE;
    if (HAS("<|im_assistant|>assistant<|im_middle|>"))
        return CHAT_KIMI_K2;
    return CHAT_UNKNOWN;
#undef HAS
}

/* Whether the generation prompt of template t opens a <think> block it does not close
 * (DeepSeek-R1-0528, Qwen3-*-Thinking-2507, ...): then the model's output starts inside
 * the reasoning. Looked for in the text after the last add_generation_prompt test. */
static bool opens_think(const char *t)
{
    const char *g = NULL;
    for (const char *p = t; (p = strstr(p, "add_generation_prompt")); p++)
        g = p;
    if (!g)
        return false;
    size_t n = strlen(g) < 400 ? strlen(g) : 400;
    char win[401];
    memcpy(win, g, n);
    win[n] = 0;
    const char *open = strstr(win, "<think>");
    return open && !strstr(open, "</think>");
}

int chat_template_init(chat_template_t *ct, const char *tmpl, const char *force, char *err,
                       size_t errlen)
{
    chat_template_t c = {0};
    if (force && *force) {
        if (chat_family_from_name(force, &c.family) < 0) {
            snprintf(err, errlen, "unknown chat template name '%.40s' (known: %s)", force,
                     chat_family_names());
            return -ENOTSUP;
        }
    } else if (!tmpl || !*tmpl) {
        snprintf(err, errlen,
                 "the model has no tokenizer.chat_template; set chat_template to one of: %s",
                 chat_family_names());
        return -ENOTSUP;
    } else if ((c.family = detect(tmpl)) == CHAT_UNKNOWN) {
        snprintf(err, errlen,
                 "the model's chat template is not one moed recognises; set chat_template "
                 "to one of: %s",
                 chat_family_names());
        return -ENOTSUP;
    }
    if (tmpl) {
        c.think_in_prompt = opens_think(tmpl);
        c.has_enable_thinking = strstr(tmpl, "enable_thinking") != NULL;
        /* GLM-4.5 keeps GLM-4's roles but ends the generation prompt at <|assistant|>
         * and switches thinking off with an empty <think></think> */
        c.glm45 = c.family == CHAT_CHATGLM4 && strstr(tmpl, "<think>") != NULL;
    }
    *ct = c;
    return 0;
}

bool chat_starts_in_reasoning(const chat_template_t *ct, const chat_opts_t *opts)
{
    return ct->think_in_prompt && opts->add_generation_prompt;
}

/* ---- rendering ---- */

typedef struct sbuf {
    char *s;
    size_t n, cap;
    int err;
} sbuf_t;

static void sb_addn(sbuf_t *b, const char *s, size_t n)
{
    if (b->err)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *ns = realloc(b->s, cap);
        if (!ns) {
            b->err = -ENOMEM;
            return;
        }
        b->s = ns;
        b->cap = cap;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}

static void sb_add(sbuf_t *b, const char *s) { sb_addn(b, s, strlen(s)); }

/* Appends s with leading and trailing whitespace removed (Jinja's trim / Python strip on
 * ASCII whitespace, as llama.cpp's trim does). */
static void sb_add_trim(sbuf_t *b, const char *s)
{
    size_t n = strlen(s);
    while (n && isspace((unsigned char)*s)) {
        s++;
        n--;
    }
    while (n && isspace((unsigned char)s[n - 1]))
        n--;
    sb_addn(b, s, n);
}

static bool is(const char *role, const char *name) { return !strcmp(role, name); }

static void render_mistral(sbuf_t *b, enum chat_family f, const chat_msg_t *m, size_t n)
{
    if (f == CHAT_MISTRAL_V7 || f == CHAT_MISTRAL_V7_TEKKEN) {
        const char *sp = f == CHAT_MISTRAL_V7 ? " " : "";
        for (size_t i = 0; i < n; i++) {
            if (is(m[i].role, "system")) {
                sb_add(b, "[SYSTEM_PROMPT]");
                sb_add(b, sp);
                sb_add(b, m[i].content);
                sb_add(b, "[/SYSTEM_PROMPT]");
            } else if (is(m[i].role, "user")) {
                sb_add(b, "[INST]");
                sb_add(b, sp);
                sb_add(b, m[i].content);
                sb_add(b, "[/INST]");
            } else {
                sb_add(b, sp);
                sb_add(b, m[i].content);
                sb_add(b, "</s>");
            }
        }
        return;
    }
    const char *lead = f == CHAT_MISTRAL_V1 ? " " : "";
    const char *trail = f == CHAT_MISTRAL_V3_TEKKEN ? "" : " ";
    bool inside = false;
    for (size_t i = 0; i < n; i++) {
        if (!inside) {
            sb_add(b, lead);
            sb_add(b, "[INST]");
            sb_add(b, trail);
            inside = true;
        }
        if (is(m[i].role, "system")) {
            sb_add(b, m[i].content);
            sb_add(b, "\n\n");
        } else if (is(m[i].role, "user")) {
            sb_add(b, m[i].content);
            sb_add(b, lead);
            sb_add(b, "[/INST]");
        } else {
            sb_add(b, trail);
            if (f == CHAT_MISTRAL_V3)
                sb_add_trim(b, m[i].content);
            else
                sb_add(b, m[i].content);
            sb_add(b, "</s>");
            inside = false;
        }
    }
}

static void render_llama2(sbuf_t *b, enum chat_family f, const chat_msg_t *m, size_t n)
{
    bool sys = f != CHAT_LLAMA2, bos_inside = f == CHAT_LLAMA2_SYS_BOS;
    bool strip = f == CHAT_LLAMA2_SYS_STRIP, inside = true;
    sb_add(b, "[INST] ");
    for (size_t i = 0; i < n; i++) {
        if (!inside) {
            inside = true;
            sb_add(b, bos_inside ? "<s>[INST] " : "[INST] ");
        }
        if (is(m[i].role, "system")) {
            if (sys)
                sb_add(b, "<<SYS>>\n");
            strip ? sb_add_trim(b, m[i].content) : sb_add(b, m[i].content);
            sb_add(b, sys ? "\n<</SYS>>\n\n" : "\n");
        } else if (is(m[i].role, "user")) {
            strip ? sb_add_trim(b, m[i].content) : sb_add(b, m[i].content);
            sb_add(b, " [/INST]");
        } else {
            strip ? sb_add_trim(b, m[i].content) : sb_add(b, m[i].content);
            sb_add(b, "</s>");
            inside = false;
        }
    }
}

/* "<|" role "|>" sep content end, for the families built that way */
static void render_tagged(sbuf_t *b, const chat_msg_t *m, size_t n, const char *sep,
                          const char *end)
{
    for (size_t i = 0; i < n; i++) {
        sb_add(b, "<|");
        sb_add(b, m[i].role);
        sb_add(b, "|>");
        sb_add(b, sep);
        sb_add(b, m[i].content);
        sb_add(b, end);
    }
}

static void render_gemma(sbuf_t *b, const chat_msg_t *m, size_t n, bool gen)
{
    /* Gemma has no system role: the system text goes in front of the next user turn */
    sbuf_t sys = {0};
    for (size_t i = 0; i < n; i++) {
        if (is(m[i].role, "system")) {
            sb_add_trim(&sys, m[i].content);
            continue;
        }
        const char *role = is(m[i].role, "assistant") ? "model" : m[i].role;
        sb_add(b, "<start_of_turn>");
        sb_add(b, role);
        sb_add(b, "\n");
        if (sys.n && !is(role, "model")) {
            sb_addn(b, sys.s, sys.n);
            sb_add(b, "\n\n");
            sys.n = 0;
        }
        sb_add_trim(b, m[i].content);
        sb_add(b, "<end_of_turn>\n");
    }
    if (sys.err)
        b->err = sys.err;
    free(sys.s);
    if (gen)
        sb_add(b, "<start_of_turn>model\n");
}

static void render_gpt_oss(sbuf_t *b, const chat_msg_t *m, size_t n, bool gen)
{
    /* OpenAI harmony, the minimal form of gpt-oss's template: the fixed system header,
     * the caller's system message as developer instructions, final-channel history */
    sb_add(b, "<|start|>system<|message|>You are ChatGPT, a large language model trained by "
              "OpenAI.\nKnowledge cutoff: 2024-06\n\nReasoning: medium\n\n# Valid channels: "
              "analysis, commentary, final. Channel must be included for every message."
              "<|end|>");
    for (size_t i = 0; i < n; i++) {
        if (is(m[i].role, "system") || is(m[i].role, "developer")) {
            sb_add(b, "<|start|>developer<|message|># Instructions\n\n");
            sb_add(b, m[i].content);
        } else if (is(m[i].role, "assistant")) {
            sb_add(b, "<|start|>assistant<|channel|>final<|message|>");
            sb_add(b, m[i].content);
        } else {
            sb_add(b, "<|start|>");
            sb_add(b, m[i].role);
            sb_add(b, "<|message|>");
            sb_add(b, m[i].content);
        }
        sb_add(b, "<|end|>");
    }
    if (gen)
        sb_add(b, "<|start|>assistant");
}

static void render_simple(sbuf_t *b, const chat_template_t *ct, const chat_msg_t *m, size_t n,
                          const chat_opts_t *o);

int chat_render(const chat_template_t *ct, const chat_msg_t *msgs, size_t n,
                const chat_opts_t *opts, char **ret, size_t *ret_len)
{
    static const chat_opts_t defaults = {.add_generation_prompt = true, .enable_thinking = true};
    const chat_opts_t *o = opts ? opts : &defaults;
    for (size_t i = 0; i < n; i++)
        if (!msgs[i].role || !msgs[i].content)
            return -EINVAL;
    if (ct->family <= CHAT_UNKNOWN || ct->family >= CHAT_FAMILY_COUNT_)
        return -ENOTSUP;
    sbuf_t b = {0};
    sb_add(&b, ""); /* an empty conversation still yields a string */
    render_simple(&b, ct, msgs, n, o);
    bool gen = o->add_generation_prompt, off = ct->has_enable_thinking && !o->enable_thinking;
    if (gen && ct->think_in_prompt)
        sb_add(&b, "<think>\n");
    else if (gen && off && ct->family == CHAT_CHATML)
        sb_add(&b, "<think>\n\n</think>\n\n"); /* Qwen3's switch */
    else if (gen && off && ct->glm45)
        sb_add(&b, "\n<think></think>"); /* GLM-4.5's */
    if (b.err) {
        free(b.s);
        return b.err;
    }
    *ret = b.s;
    *ret_len = b.n;
    return 0;
}

static void render_simple(sbuf_t *b, const chat_template_t *ct, const chat_msg_t *m, size_t n,
                          const chat_opts_t *o)
{
    enum chat_family f = ct->family;
    bool gen = o->add_generation_prompt;
    switch (f) {
    case CHAT_CHATML:
        for (size_t i = 0; i < n; i++) {
            sb_add(b, "<|im_start|>");
            sb_add(b, m[i].role);
            sb_add(b, "\n");
            sb_add(b, m[i].content);
            sb_add(b, "<|im_end|>\n");
        }
        if (gen)
            sb_add(b, "<|im_start|>assistant\n");
        break;
    case CHAT_MISTRAL_V1:
    case CHAT_MISTRAL_V3:
    case CHAT_MISTRAL_V3_TEKKEN:
    case CHAT_MISTRAL_V7:
    case CHAT_MISTRAL_V7_TEKKEN:
        render_mistral(b, f, m, n);
        break;
    case CHAT_LLAMA2:
    case CHAT_LLAMA2_SYS:
    case CHAT_LLAMA2_SYS_BOS:
    case CHAT_LLAMA2_SYS_STRIP:
        render_llama2(b, f, m, n);
        break;
    case CHAT_PHI3:
        render_tagged(b, m, n, "\n", "<|end|>\n");
        if (gen)
            sb_add(b, "<|assistant|>\n");
        break;
    case CHAT_PHI4:
        for (size_t i = 0; i < n; i++) {
            sb_add(b, "<|im_start|>");
            sb_add(b, m[i].role);
            sb_add(b, "<|im_sep|>");
            sb_add(b, m[i].content);
            sb_add(b, "<|im_end|>");
        }
        if (gen)
            sb_add(b, "<|im_start|>assistant<|im_sep|>");
        break;
    case CHAT_FALCON3:
        render_tagged(b, m, n, "\n", "\n");
        if (gen)
            sb_add(b, "<|assistant|>\n");
        break;
    case CHAT_ZEPHYR:
        render_tagged(b, m, n, "\n", "<|endoftext|>\n");
        if (gen)
            sb_add(b, "<|assistant|>\n");
        break;
    case CHAT_MONARCH:
        for (size_t i = 0; i < n; i++) {
            sb_add(b, i ? "<s>" : "");
            sb_add(b, m[i].role);
            sb_add(b, "\n");
            sb_add(b, m[i].content);
            sb_add(b, "</s>\n");
        }
        if (gen)
            sb_add(b, "<s>assistant\n");
        break;
    case CHAT_GEMMA:
        render_gemma(b, m, n, gen);
        break;
    case CHAT_ORION: {
        /* No system turn: system texts gather (all of them, as llama.cpp appends them)
         * until the next user turn takes them. */
        sbuf_t sys = {0};
        for (size_t i = 0; i < n; i++) {
            if (is(m[i].role, "system")) {
                sb_add(&sys, m[i].content);
            } else if (is(m[i].role, "user")) {
                sb_add(b, "Human: ");
                if (sys.n) {
                    sb_addn(b, sys.s, sys.n);
                    sb_add(b, "\n\n");
                    sys.n = 0;
                }
                sb_add(b, m[i].content);
                sb_add(b, "\n\nAssistant: </s>");
            } else {
                sb_add(b, m[i].content);
                sb_add(b, "</s>");
            }
        }
        if (sys.err)
            b->err = sys.err;
        free(sys.s);
        break;
    }
    case CHAT_OPENCHAT:
        for (size_t i = 0; i < n; i++) {
            if (!is(m[i].role, "system")) {
                char role[64];
                snprintf(role, sizeof(role), "%s", m[i].role);
                role[0] = (char)toupper((unsigned char)role[0]);
                sb_add(b, "GPT4 Correct ");
                sb_add(b, role);
                sb_add(b, ": ");
            }
            sb_add(b, m[i].content);
            sb_add(b, "<|end_of_turn|>");
        }
        if (gen)
            sb_add(b, "GPT4 Correct Assistant:");
        break;
    case CHAT_VICUNA:
    case CHAT_VICUNA_ORCA:
        for (size_t i = 0; i < n; i++) {
            if (is(m[i].role, "system")) {
                if (f == CHAT_VICUNA_ORCA) {
                    sb_add(b, "SYSTEM: ");
                    sb_add(b, m[i].content);
                    sb_add(b, "\n");
                } else {
                    sb_add(b, m[i].content);
                    sb_add(b, "\n\n");
                }
            } else if (is(m[i].role, "user")) {
                sb_add(b, "USER: ");
                sb_add(b, m[i].content);
                sb_add(b, "\n");
            } else if (is(m[i].role, "assistant")) {
                sb_add(b, "ASSISTANT: ");
                sb_add(b, m[i].content);
                sb_add(b, "</s>\n");
            }
        }
        if (gen)
            sb_add(b, "ASSISTANT:");
        break;
    case CHAT_DEEPSEEK:
        for (size_t i = 0; i < n; i++) {
            if (is(m[i].role, "system")) {
                sb_add(b, m[i].content);
            } else if (is(m[i].role, "user")) {
                sb_add(b, "### Instruction:\n");
                sb_add(b, m[i].content);
                sb_add(b, "\n");
            } else if (is(m[i].role, "assistant")) {
                sb_add(b, "### Response:\n");
                sb_add(b, m[i].content);
                sb_add(b, "\n<|EOT|>\n");
            }
        }
        if (gen)
            sb_add(b, "### Response:\n");
        break;
    case CHAT_DEEPSEEK2:
        for (size_t i = 0; i < n; i++) {
            if (is(m[i].role, "system")) {
                sb_add(b, m[i].content);
                sb_add(b, "\n\n");
            } else if (is(m[i].role, "user")) {
                sb_add(b, "User: ");
                sb_add(b, m[i].content);
                sb_add(b, "\n\n");
            } else if (is(m[i].role, "assistant")) {
                sb_add(b, "Assistant: ");
                sb_add(b, m[i].content);
                sb_add(b, "<" FW_BAR "end" SPM_SP "of" SPM_SP "sentence" FW_BAR ">");
            }
        }
        if (gen)
            sb_add(b, "Assistant:");
        break;
    case CHAT_DEEPSEEK3:
        for (size_t i = 0; i < n; i++) {
            if (is(m[i].role, "system")) {
                sb_add(b, m[i].content);
                sb_add(b, "\n\n");
            } else if (is(m[i].role, "user")) {
                sb_add(b, "<" FW_BAR "User" FW_BAR ">");
                sb_add(b, m[i].content);
            } else if (is(m[i].role, "assistant")) {
                sb_add(b, "<" FW_BAR "Assistant" FW_BAR ">");
                sb_add(b, m[i].content);
                sb_add(b, "<" FW_BAR "end" SPM_SP "of" SPM_SP "sentence" FW_BAR ">");
            }
        }
        if (gen)
            sb_add(b, "<" FW_BAR "Assistant" FW_BAR ">");
        break;
    case CHAT_COMMAND_R:
        for (size_t i = 0; i < n; i++) {
            const char *tag = is(m[i].role, "system") ? "<|SYSTEM_TOKEN|>"
                              : is(m[i].role, "user") ? "<|USER_TOKEN|>"
                              : is(m[i].role, "assistant") ? "<|CHATBOT_TOKEN|>"
                                                           : NULL;
            if (!tag)
                continue;
            sb_add(b, "<|START_OF_TURN_TOKEN|>");
            sb_add(b, tag);
            sb_add_trim(b, m[i].content);
            sb_add(b, "<|END_OF_TURN_TOKEN|>");
        }
        if (gen)
            sb_add(b, "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>");
        break;
    case CHAT_LLAMA3:
    case CHAT_LLAMA4: {
        bool l4 = f == CHAT_LLAMA4;
        for (size_t i = 0; i < n; i++) {
            sb_add(b, l4 ? "<|header_start|>" : "<|start_header_id|>");
            sb_add(b, m[i].role);
            sb_add(b, l4 ? "<|header_end|>\n\n" : "<|end_header_id|>\n\n");
            sb_add_trim(b, m[i].content);
            sb_add(b, l4 ? "<|eot|>" : "<|eot_id|>");
        }
        if (gen)
            sb_add(b, l4 ? "<|header_start|>assistant<|header_end|>\n\n"
                         : "<|start_header_id|>assistant<|end_header_id|>\n\n");
        break;
    }
    case CHAT_CHATGLM3:
        sb_add(b, "[gMASK]sop");
        render_tagged(b, m, n, "\n ", "");
        if (gen)
            sb_add(b, "<|assistant|>");
        break;
    case CHAT_CHATGLM4:
        sb_add(b, "[gMASK]<sop>");
        render_tagged(b, m, n, "\n", "");
        if (gen)
            sb_add(b, ct->glm45 ? "<|assistant|>" : "<|assistant|>\n");
        break;
    case CHAT_GLMEDGE:
        render_tagged(b, m, n, "\n", "");
        if (gen)
            sb_add(b, "<|assistant|>");
        break;
    case CHAT_MINICPM:
        for (size_t i = 0; i < n; i++) {
            if (is(m[i].role, "user")) {
                sb_add(b, "<\xe7\x94\xa8\xe6\x88\xb7>");
                sb_add_trim(b, m[i].content);
                sb_add(b, "<AI>");
            } else {
                sb_add_trim(b, m[i].content);
            }
        }
        break;
    case CHAT_EXAONE3:
    case CHAT_EXAONE4:
        for (size_t i = 0; i < n; i++) {
            if (is(m[i].role, "system")) {
                sb_add(b, "[|system|]");
                sb_add_trim(b, m[i].content);
                sb_add(b, "[|endofturn|]\n");
            } else if (is(m[i].role, "user")) {
                sb_add(b, "[|user|]");
                sb_add_trim(b, m[i].content);
                sb_add(b, "\n");
            } else if (is(m[i].role, "assistant")) {
                sb_add(b, "[|assistant|]");
                sb_add_trim(b, m[i].content);
                sb_add(b, "[|endofturn|]\n");
            } else if (f == CHAT_EXAONE4 && is(m[i].role, "tool")) {
                sb_add(b, "[|tool|]");
                sb_add_trim(b, m[i].content);
                sb_add(b, "[|endofturn|]\n");
            }
        }
        if (gen)
            sb_add(b, "[|assistant|]");
        break;
    case CHAT_GRANITE:
        for (size_t i = 0; i < n; i++) {
            sb_add(b, "<|start_of_role|>");
            sb_add(b, m[i].role);
            sb_add(b, "<|end_of_role|>");
            if (is(m[i].role, "assistant_tool_call"))
                sb_add(b, "<|tool_call|>");
            sb_add(b, m[i].content);
            sb_add(b, "<|end_of_text|>\n");
        }
        if (gen)
            sb_add(b, "<|start_of_role|>assistant<|end_of_role|>");
        break;
    case CHAT_MEGREZ:
        for (size_t i = 0; i < n; i++) {
            sb_add(b, "<|role_start|>");
            sb_add(b, m[i].role);
            sb_add(b, "<|role_end|>");
            sb_add(b, m[i].content);
            sb_add(b, "<|turn_end|>");
        }
        if (gen)
            sb_add(b, "<|role_start|>assistant<|role_end|>");
        break;
    case CHAT_BAILING:
        for (size_t i = 0; i < n; i++) {
            char role[64];
            snprintf(role, sizeof(role), "%s", is(m[i].role, "user") ? "HUMAN" : m[i].role);
            for (char *p = role; *p; p++)
                *p = (char)toupper((unsigned char)*p);
            sb_add(b, "<role>");
            sb_add(b, role);
            sb_add(b, "</role>");
            sb_add(b, m[i].content);
        }
        if (gen)
            sb_add(b, "<role>ASSISTANT</role>");
        break;
    case CHAT_DOTS1:
        for (size_t i = 0; i < n; i++) {
            if (is(m[i].role, "system")) {
                sb_add(b, "<|system|>");
                sb_add(b, m[i].content);
                sb_add(b, "<|endofsystem|>");
            } else if (is(m[i].role, "user")) {
                sb_add(b, "<|userprompt|>");
                sb_add(b, m[i].content);
                sb_add(b, "<|endofuserprompt|>");
            } else {
                sb_add(b, "<|response|>");
                sb_add(b, m[i].content);
                sb_add(b, "<|endofresponse|>");
            }
        }
        if (gen)
            sb_add(b, "<|response|>");
        break;
    case CHAT_HUNYUAN_MOE:
        for (size_t i = 0; i < n; i++) {
            if (is(m[i].role, "system")) {
                sb_add(b, "<|startoftext|>");
                sb_add(b, m[i].content);
                sb_add(b, "<|extra_4|>");
            } else if (is(m[i].role, "assistant")) {
                sb_add(b, m[i].content);
                sb_add(b, "<|eos|>");
            } else {
                sb_add(b, "<|startoftext|>");
                sb_add(b, m[i].content);
                sb_add(b, "<|extra_0|>");
            }
        }
        break;
    case CHAT_KIMI_K2:
        for (size_t i = 0; i < n; i++) {
            if (is(m[i].role, "system"))
                sb_add(b, "<|im_system|>system<|im_middle|>");
            else if (is(m[i].role, "user"))
                sb_add(b, "<|im_user|>user<|im_middle|>");
            else if (is(m[i].role, "assistant"))
                sb_add(b, "<|im_assistant|>assistant<|im_middle|>");
            else if (is(m[i].role, "tool"))
                sb_add(b, "<|im_system|>tool<|im_middle|>");
            sb_add(b, m[i].content);
            sb_add(b, "<|im_end|>");
        }
        /* once, at the end (llama.cpp's version of this writes it after every message) */
        if (gen)
            sb_add(b, "<|im_assistant|>assistant<|im_middle|>");
        break;
    case CHAT_GPT_OSS:
        render_gpt_oss(b, m, n, gen);
        break;
    case CHAT_TULU:
        for (size_t i = 0; i < n; i++) {
            bool asst = is(m[i].role, "assistant");
            sb_add(b, "<|");
            sb_add(b, m[i].role);
            sb_add(b, "|>\n");
            sb_add(b, m[i].content);
            if (asst)
                sb_add(b, o->eos_text ? o->eos_text : "");
            if (!asst || i + 1 < n)
                sb_add(b, "\n");
        }
        if (gen)
            sb_add(b, "<|assistant|>\n");
        break;
    case CHAT_UNKNOWN:
    case CHAT_FAMILY_COUNT_:
        break;
    }
}
