/* Chat templates: turn a list of {role, content} messages into the prompt text a model was
 * trained on. moed does not run Jinja; like llama.cpp's built-in formatter
 * (src/llama-chat.cpp) it recognises the family of the model's tokenizer.chat_template by
 * its marker strings and renders that family's format in C. An unrecognised template is
 * refused (-ENOTSUP) rather than guessed; a family can be forced by name (setting
 * chat_template = NAME; `chat_family_names` lists them). The output holds special-token
 * text (<|im_start|>, ...): tokenize it with TOKENIZER_PARSE_SPECIAL, and with
 * TOKENIZER_ADD_SPECIAL for the BOS, which the rendered text does not include. */
#pragma once
#include <stdbool.h>
#include <stddef.h>

enum chat_family {
    CHAT_UNKNOWN = 0,
    CHAT_CHATML,      /* Qwen 2/3 (MoE too), OpenHermes, ...: <|im_start|>role\n...<|im_end|> */
    CHAT_LLAMA2,      /* [INST] ... [/INST] (Mixtral 8x7B Instruct) */
    CHAT_LLAMA2_SYS,  /* + <<SYS>> system block */
    CHAT_LLAMA2_SYS_BOS,
    CHAT_LLAMA2_SYS_STRIP,
    CHAT_MISTRAL_V1,
    CHAT_MISTRAL_V3,
    CHAT_MISTRAL_V3_TEKKEN,
    CHAT_MISTRAL_V7,
    CHAT_MISTRAL_V7_TEKKEN,
    CHAT_PHI3,        /* Phi-3 / Phi-3.5-MoE: <|user|>\n...<|end|>\n */
    CHAT_PHI4,
    CHAT_FALCON3,
    CHAT_ZEPHYR,
    CHAT_MONARCH,
    CHAT_GEMMA,       /* <start_of_turn>user ... <end_of_turn> */
    CHAT_ORION,
    CHAT_OPENCHAT,
    CHAT_VICUNA,
    CHAT_VICUNA_ORCA,
    CHAT_DEEPSEEK,    /* deepseek-coder: ### Instruction: / ### Response: */
    CHAT_DEEPSEEK2,   /* DeepSeek-V2 (MoE): User: / Assistant: */
    CHAT_DEEPSEEK3,   /* DeepSeek-V3 / R1 (MoE): <｜User｜> / <｜Assistant｜> */
    CHAT_COMMAND_R,
    CHAT_LLAMA3,      /* <|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|> */
    CHAT_CHATGLM3,
    CHAT_CHATGLM4,    /* [gMASK]<sop><|role|>\n... (GLM-4, GLM-4.5 MoE) */
    CHAT_GLMEDGE,
    CHAT_MINICPM,
    CHAT_EXAONE3,
    CHAT_EXAONE4,
    CHAT_GRANITE,     /* <|start_of_role|>role<|end_of_role|> (Granite MoE) */
    CHAT_MEGREZ,
    CHAT_BAILING,     /* Ling (MoE): <role>HUMAN</role> */
    CHAT_LLAMA4,      /* Llama 4 (MoE): <|header_start|>role<|header_end|> */
    CHAT_DOTS1,       /* dots.llm1 (MoE) */
    CHAT_HUNYUAN_MOE, /* Hunyuan-A13B (MoE) */
    CHAT_KIMI_K2,     /* Kimi K2 (MoE): <|im_user|>user<|im_middle|>...<|im_end|> */
    CHAT_GPT_OSS,     /* gpt-oss (MoE), OpenAI harmony: <|start|>role<|message|>...<|end|> */
    CHAT_TULU,        /* OLMoE / OLMo 2 Instruct (Tulu): <|user|>\n...\n<|assistant|>\n */
    CHAT_FAMILY_COUNT_,
};

typedef struct chat_msg {
    const char *role;    /* "system", "user", "assistant", "tool", ... */
    const char *content; /* NUL-terminated UTF-8 */
} chat_msg_t;

/* What the renderer knows of one model's template. Caller-owned; no resources. */
typedef struct chat_template {
    enum chat_family family;
    bool think_in_prompt;     /* the generation prompt opens <think>: output starts inside */
    bool has_enable_thinking; /* the template honours enable_thinking = false */
    bool glm45;               /* CHAT_CHATGLM4 written as GLM-4.5's (thinking) template */
} chat_template_t;

typedef struct chat_opts {
    bool add_generation_prompt; /* end with the assistant turn's opening */
    bool enable_thinking;       /* false: ask a hybrid model (Qwen3) not to think */
    const char *eos_text;       /* text of the EOS token, for formats that write it
                                 * (CHAT_TULU); NULL = "" */
} chat_opts_t;

/* Detects the family of template text tmpl (tokenizer.chat_template; NULL or "" allowed
 * when force is set). force, when not NULL/empty, names the family (a chat_family_names
 * entry) and wins. -ENOTSUP with a reason in err when neither gives a family. */
int chat_template_init(chat_template_t *ct, const char *tmpl, const char *force, char *err,
                       size_t errlen);

/* Renders n messages into a malloc'ed NUL-terminated string (*ret, free() it; *ret_len
 * bytes). -EINVAL for a message with a NULL role or content, -ENOTSUP for CHAT_UNKNOWN,
 * -ENOMEM. */
int chat_render(const chat_template_t *ct, const chat_msg_t *msgs, size_t n,
                const chat_opts_t *opts, char **ret, size_t *ret_len);

/* Whether the output of a prompt rendered with opts starts inside the reasoning block. */
bool chat_starts_in_reasoning(const chat_template_t *ct, const chat_opts_t *opts);

const char *chat_family_name(enum chat_family f); /* "chatml", ...; "unknown" */
int chat_family_from_name(const char *name, enum chat_family *ret); /* -ENOENT */
/* Names accepted for forcing, comma-separated, for help and error texts. */
const char *chat_family_names(void);
