/* tests/text: chat template detection and rendering, and the streaming reasoning split.
 * The templates and expected prompts of the first table are llama.cpp's test data
 * (tests/test-chat-template.cpp, MIT License, the ggml authors): each real model template
 * must be detected as its family and, for the same six-message conversation, render
 * byte for byte what llama.cpp's built-in formatter renders. The rest (gpt-oss, OLMoE's
 * Tulu, DeepSeek-V3, Kimi K2, Llama 4, the thinking switches) are written from those
 * models' templates. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_text.h"
#include "text/chat.h"
#include "text/reasoning.h"
#include "text/sampler.h"

static const chat_msg_t conv[] = {
    {"system", "You are a helpful assistant"},
    {"user", "Hello"},
    {"assistant", "Hi there"},
    {"user", "Who are you"},
    {"assistant", "   I am an assistant   "},
    {"user", "Another question"},
};
#define NCONV (sizeof(conv) / sizeof(conv[0]))

struct tcase {
    const char *name;
    enum chat_family family;
    const char *tmpl;
    const char *expected;
};

static const struct tcase cases[] = {
    {"OpenHermes-2.5 (chatml)", CHAT_CHATML,
     "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
     "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ "
     "'<|im_start|>assistant\\n' }}{% endif %}",
     "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\nHello<|im_"
     "end|>\n<|im_start|>assistant\nHi there<|im_end|>\n<|im_start|>user\nWho are "
     "you<|im_end|>\n<|im_start|>assistant\n   I am an assistant   "
     "<|im_end|>\n<|im_start|>user\nAnother question<|im_end|>\n<|im_start|>assistant\n"},
    {"Mistral-7B-Instruct-v0.2 (llama2)", CHAT_LLAMA2,
     "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != "
     "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
     "user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ "
     "'[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' "
     "%}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and "
     "assistant roles are supported!') }}{% endif %}{% endfor %}",
     "[INST] You are a helpful assistant\nHello [/INST]Hi there</s>[INST] Who are you "
     "[/INST]   I am an assistant   </s>[INST] Another question [/INST]"},
    {"FusionNet_34Bx2_MoE (llama2-sys-bos)", CHAT_LLAMA2_SYS_BOS,
     "{%- for idx in range(0, messages|length) -%}\n{%- if messages[idx]['role'] == 'user' "
     "-%}\n{%- if idx > 1 -%}\n{{- bos_token + '[INST] ' + messages[idx]['content'] + ' "
     "[/INST]' -}}\n{%- else -%}\n{{- messages[idx]['content'] + ' [/INST]' -}}\n{%- endif "
     "-%}\n{% elif messages[idx]['role'] == 'system' %}\n{{- '[INST] <<SYS>>\\n' + "
     "messages[idx]['content'] + '\\n<</SYS>>\\n\\n' -}}\n{%- elif messages[idx]['role'] == "
     "'assistant' -%}\n{{- ' '  + messages[idx]['content'] + ' ' + eos_token -}}\n{% endif "
     "%}\n{% endfor %}",
     "[INST] <<SYS>>\nYou are a helpful assistant\n<</SYS>>\n\nHello [/INST]Hi "
     "there</s><s>[INST] Who are you [/INST]   I am an assistant   </s><s>[INST] Another "
     "question [/INST]"},
    {"AlphaMonarch-7B (monarch)", CHAT_MONARCH,
     "{% for message in messages %}{{bos_token + message['role'] + '\\n' + message['content'] "
     "+ eos_token + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ bos_token + "
     "'assistant\\n' }}{% endif %}",
     "system\nYou are a helpful assistant</s>\n<s>user\nHello</s>\n<s>assistant\nHi "
     "there</s>\n<s>user\nWho are you</s>\n<s>assistant\n   I am an assistant   "
     "</s>\n<s>user\nAnother question</s>\n<s>assistant\n"},
    {"gemma-7b-it", CHAT_GEMMA,
     "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') "
     "}}{% endif %}{% for message in messages %}{% if (message['role'] == 'assistant') %}{% set "
     "role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ "
     "'<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% "
     "endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}",
     "<start_of_turn>user\nYou are a helpful assistant\n\nHello<end_of_turn>\n<start_of_turn>"
     "model\nHi there<end_of_turn>\n<start_of_turn>user\nWho are "
     "you<end_of_turn>\n<start_of_turn>model\nI am an "
     "assistant<end_of_turn>\n<start_of_turn>user\nAnother "
     "question<end_of_turn>\n<start_of_turn>model\n"},
    {"Orion-14B-Chat", CHAT_ORION,
     "{% for message in messages %}{% if loop.first %}{{ bos_token }}{% endif %}{% if "
     "message['role'] == 'user' %}{{ 'Human: ' + message['content'] + '\\n\\nAssistant: ' + "
     "eos_token }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token "
     "}}{% endif %}{% endfor %}",
     "Human: You are a helpful assistant\n\nHello\n\nAssistant: </s>Hi there</s>Human: Who "
     "are you\n\nAssistant: </s>   I am an assistant   </s>Human: Another "
     "question\n\nAssistant: </s>"},
    {"openchat-3.5-0106", CHAT_OPENCHAT,
     "{{ bos_token }}{% for message in messages %}{{ 'GPT4 Correct ' + "
     "message['role'].title() + ': ' + message['content'] + '<|end_of_turn|>'}}{% endfor %}{% "
     "if add_generation_prompt %}{{ 'GPT4 Correct Assistant:' }}{% endif %}",
     "You are a helpful assistant<|end_of_turn|>GPT4 Correct User: "
     "Hello<|end_of_turn|>GPT4 Correct Assistant: Hi there<|end_of_turn|>GPT4 Correct User: "
     "Who are you<|end_of_turn|>GPT4 Correct Assistant:    I am an assistant   "
     "<|end_of_turn|>GPT4 Correct User: Another question<|end_of_turn|>GPT4 Correct "
     "Assistant:"},
    {"deepseek-coder-33b-instruct", CHAT_DEEPSEEK,
     "{%- for message in messages %}\n    {%- if message['role'] == 'system' %}\n{{ "
     "message['content'] }}\n    {%- else %}\n        {%- if message['role'] == 'user' "
     "%}\n{{'### Instruction:\\n' + message['content'] + '\\n'}}\n        {%- else "
     "%}\n{{'### Response:\\n' + message['content'] + '\\n<|EOT|>\\n'}}\n        {%- endif "
     "%}\n    {%- endif %}\n{%- endfor %}\n{% if add_generation_prompt %}\n{{'### "
     "Response:'}}\n{% endif %}",
     "You are a helpful assistant### Instruction:\nHello\n### Response:\nHi "
     "there\n<|EOT|>\n### Instruction:\nWho are you\n### Response:\n   I am an assistant   "
     "\n<|EOT|>\n### Instruction:\nAnother question\n### Response:\n"},
    {"vicuna-13b-1.1", CHAT_VICUNA,
     "{%- for message in messages %}{%- if message['role'] == 'system' -%}{{- '' + "
     "message['content'] + '\n\n' -}}{%- else -%}{%- if message['role'] == 'user' -%}{{-'USER: "
     "' + message['content'] + '\n'-}}{%- else -%}{{-'ASSISTANT: ' + message['content'] + "
     "'</s>\n' -}}{%- endif -%}{%- endif -%}{%- endfor -%}{%- if add_generation_prompt "
     "-%}{{-'ASSISTANT:'-}}{%- endif -%}",
     "You are a helpful assistant\n\nUSER: Hello\nASSISTANT: Hi there</s>\nUSER: Who are "
     "you\nASSISTANT:    I am an assistant   </s>\nUSER: Another question\nASSISTANT:"},
    {"Orca-Vicuna", CHAT_VICUNA_ORCA,
     "{%- for message in messages %}{%- if message['role'] == 'system' -%}{{-'SYSTEM: ' + "
     "message['content'] + '\n' -}}{%- else -%}{%- if message['role'] == 'user' -%}{{-'USER: ' "
     "+ message['content'] + '\n'-}}{%- else -%}{{-'ASSISTANT: ' + message['content'] + "
     "'</s>\n' -}}{%- endif -%}{%- endif -%}{%- endfor -%}{%- if add_generation_prompt "
     "-%}{{-'ASSISTANT:'-}}{%- endif -%}",
     "SYSTEM: You are a helpful assistant\nUSER: Hello\nASSISTANT: Hi there</s>\nUSER: Who are "
     "you\nASSISTANT:    I am an assistant   </s>\nUSER: Another question\nASSISTANT:"},
    {"c4ai-command-r-plus", CHAT_COMMAND_R,
     "{{ bos_token }}{% if system_message != false %}{{ "
     "'<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>' + system_message + '<|END_OF_TURN_TOKEN|>' "
     "}}{% endif %}{% for message in loop_messages %}{% set content = message['content'] %}{% "
     "if message['role'] == 'user' %}{{ '<|START_OF_TURN_TOKEN|><|USER_TOKEN|>' + "
     "content.strip() + '<|END_OF_TURN_TOKEN|>' }}{% elif message['role'] == 'assistant' %}{{ "
     "'<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>'  + content.strip() + '<|END_OF_TURN_TOKEN|>' "
     "}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ "
     "'<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>' }}{% endif %}",
     "<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>You are a helpful "
     "assistant<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|USER_TOKEN|>Hello<|END_OF_TURN_"
     "TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>Hi "
     "there<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|USER_TOKEN|>Who are "
     "you<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>I am an "
     "assistant<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|USER_TOKEN|>Another "
     "question<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>"},
    {"Llama-3", CHAT_LLAMA3,
     "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
     "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | "
     "trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% "
     "endif %}{{ content }}{% endfor %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' "
     "}}",
     "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful "
     "assistant<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|><|start_"
     "header_id|>assistant<|end_header_id|>\n\nHi "
     "there<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWho are "
     "you<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nI am an "
     "assistant<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nAnother "
     "question<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
    {"Phi-3-mini", CHAT_PHI3,
     "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') "
     "%}{{'<|user|>' + '\n' + message['content'] + '<|end|>' + '\n' + '<|assistant|>' + "
     "'\n'}}{% elif (message['role'] == 'assistant') %}{{message['content'] + '<|end|>' + "
     "'\n'}}{% endif %}{% endfor %}",
     "<|system|>\nYou are a helpful assistant<|end|>\n<|user|>\nHello<|end|>\n<|assistant|>\nHi "
     "there<|end|>\n<|user|>\nWho are you<|end|>\n<|assistant|>\n   I am an assistant   "
     "<|end|>\n<|user|>\nAnother question<|end|>\n<|assistant|>\n"},
    {"ChatGLM3", CHAT_CHATGLM3,
     "{% for message in messages %}{% if loop.first %}[gMASK]sop<|{{ message['role'] }}|>\n {{ "
     "message['content'] }}{% else %}<|{{ message['role'] }}|>\n {{ message['content'] }}{% "
     "endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}",
     "[gMASK]sop<|system|>\n You are a helpful assistant<|user|>\n Hello<|assistant|>\n Hi "
     "there<|user|>\n Who are you<|assistant|>\n    I am an assistant   <|user|>\n Another "
     "question<|assistant|>"},
    {"ChatGLM4", CHAT_CHATGLM4,
     "[gMASK]<sop>{% for item in messages %}{% if item['content'] %}<|{{ item['role'] }}|>{{ "
     "item['metadata'] }}\n{{ item['content'] }}{% endif %}{% endfor %}{% if "
     "add_generation_prompt %}<|assistant|>\n{% endif %}",
     "[gMASK]<sop><|system|>\nYou are a helpful assistant<|user|>\nHello<|assistant|>\nHi "
     "there<|user|>\nWho are you<|assistant|>\n   I am an assistant   <|user|>\nAnother "
     "question<|assistant|>\n"},
    {"GLMEdge", CHAT_GLMEDGE,
     "{% for item in messages %}{% if item['role'] == 'system' %}<|system|>\n{{ "
     "item['content'] }}{% elif item['role'] == 'user' %}<|user|>\n{{ item['content'] }}{% "
     "elif item['role'] == 'assistant' %}<|assistant|>\n{{ item['content'] }}{% endif %}{% "
     "endfor %}<|assistant|>",
     "<|system|>\nYou are a helpful assistant<|user|>\nHello<|assistant|>\nHi "
     "there<|user|>\nWho are you<|assistant|>\n   I am an assistant   <|user|>\nAnother "
     "question<|assistant|>"},
    {"MiniCPM-3B-OpenHermes", CHAT_MINICPM,
     "{% for message in messages %}{% if message['role'] == 'user' "
     "%}{{'<\xe7\x94\xa8\xe6\x88\xb7>' + message['content'].strip() + '<AI>'}}{% else "
     "%}{{message['content'].strip()}}{% endif %}{% endfor %}",
     "You are a helpful assistant<\xe7\x94\xa8\xe6\x88\xb7>Hello<AI>Hi there<\xe7\x94\xa8\xe6"
     "\x88\xb7>Who are you<AI>I am an assistant<\xe7\x94\xa8\xe6\x88\xb7>Another question<AI>"},
    {"DeepSeek-V2", CHAT_DEEPSEEK2,
     "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ 'User: "
     "' + message['content'] + '\n\n' }}{% elif message['role'] == 'assistant' %}{{ "
     "'Assistant: ' + message['content'] + eos_token }}{% elif message['role'] == 'system' "
     "%}{{ message['content'] + '\n\n' }}{% endif %}{% endfor %}{% if add_generation_prompt "
     "%}{{ 'Assistant:' }}{% endif %}",
     "You are a helpful assistant\n\nUser: Hello\n\nAssistant: Hi "
     "there<\xef\xbd\x9c" "end\xe2\x96\x81" "of\xe2\x96\x81" "sentence\xef\xbd\x9c>User: Who "
     "are you\n\nAssistant:    I am an assistant   <\xef\xbd\x9c" "end\xe2\x96\x81" "of\xe2\x96"
     "\x81" "sentence\xef\xbd\x9c>User: Another question\n\nAssistant:"},
    {"granite-3.0-8b-instruct", CHAT_GRANITE,
     "{%- for message in messages %}\n    {%- if message['role'] == 'system' %}\n    {{- "
     "'<|start_of_role|>system<|end_of_role|>' + message['content'] + '<|end_of_text|>\n' }}\n "
     "   {%- endif %}\n    {%- if loop.last and add_generation_prompt %}\n    {{- "
     "'<|start_of_role|>assistant<|end_of_role|>' }}\n    {%- endif %}\n{%- endfor %}",
     "<|start_of_role|>system<|end_of_role|>You are a helpful "
     "assistant<|end_of_text|>\n<|start_of_role|>user<|end_of_role|>Hello<|end_of_text|>\n<|"
     "start_of_role|>assistant<|end_of_role|>Hi "
     "there<|end_of_text|>\n<|start_of_role|>user<|end_of_role|>Who are "
     "you<|end_of_text|>\n<|start_of_role|>assistant<|end_of_role|>   I am an assistant   "
     "<|end_of_text|>\n<|start_of_role|>user<|end_of_role|>Another "
     "question<|end_of_text|>\n<|start_of_role|>assistant<|end_of_role|>"},
    {"Mistral-7B-Instruct-v0.2 (mistral-v1)", CHAT_MISTRAL_V1,
     "{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = "
     "messages[0]['content'] %}\n{%- endif %}\n{{- bos_token }}\n{%- for message in "
     "loop_messages %}\n    {%- if message['role'] == 'user' %}\n        {%- if loop.first and "
     "system_message is defined %}\n            {{- ' [INST] ' + system_message + '\\n\\n' + "
     "message['content'] + ' [/INST]' }}\n        {%- else %}\n            {{- ' [INST] ' + "
     "message['content'] + ' [/INST]' }}\n        {%- endif %}\n    {%- elif message['role'] "
     "== 'assistant' %}\n        {{- ' ' + message['content'] + eos_token}}\n    {%- endif "
     "%}\n{%- endfor %}\n",
     " [INST] You are a helpful assistant\n\nHello [/INST] Hi there</s> [INST] Who are you "
     "[/INST]    I am an assistant   </s> [INST] Another question [/INST]"},
    {"Mistral-Large-Instruct-2407 (mistral-v3, abridged)", CHAT_MISTRAL_V3,
     "{{- bos_token }}\n{%- for message in loop_messages %}\n    {%- if message[\"role\"] == "
     "\"user\" %}\n        {%- if tools is not none and (message == user_messages[-1]) %}\n   "
     "         {{- \"[AVAILABLE_TOOLS] [\" }}{{- \"[/AVAILABLE_TOOLS]\" }}\n            {%- "
     "endif %}\n            {{- \"[INST] \" + message[\"content\"] + \"[/INST]\" }}\n    {%- "
     "elif message[\"role\"] == \"assistant\" %}\n        {{- \" \" + "
     "message[\"content\"]|trim + eos_token}}\n    {%- endif %}\n{%- endfor %}\n",
     "[INST] You are a helpful assistant\n\nHello[/INST] Hi there</s>[INST] Who are you[/INST] "
     "I am an assistant</s>[INST] Another question[/INST]"},
    {"Mistral-Nemo-Instruct-2407 (mistral-v3-tekken, abridged)", CHAT_MISTRAL_V3_TEKKEN,
     "{{- bos_token }}\n{%- for message in loop_messages %}\n    {%- if message[\"role\"] == "
     "\"user\" %}\n        {%- if tools is not none and (message == user_messages[-1]) %}\n   "
     "         {{- \"[AVAILABLE_TOOLS][\" }}{{- \"[/AVAILABLE_TOOLS]\" }}\n            {%- "
     "endif %}\n            {{- \"[INST]\" + message[\"content\"] + \"[/INST]\" }}\n    {%- "
     "elif message[\"role\"] == \"assistant\" %}\n        {{- message[\"content\"] + "
     "eos_token}}\n    {%- endif %}\n{%- endfor %}\n",
     "[INST]You are a helpful assistant\n\nHello[/INST]Hi there</s>[INST]Who are "
     "you[/INST]   I am an assistant   </s>[INST]Another question[/INST]"},
    {"Mistral-Large-Instruct-2411 (mistral-v7)", CHAT_MISTRAL_V7,
     "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] "
     "' + message['content'] + '[/INST]' }}{% elif message['role'] == 'system' %}{{ "
     "'[SYSTEM_PROMPT] ' + message['content'] + '[/SYSTEM_PROMPT]' }}{% elif message['role'] "
     "== 'assistant' %}{{ ' ' + message['content'] + eos_token }}{% else %}{{ "
     "raise_exception('Only user, system and assistant roles are supported!') }}{% endif %}{% "
     "endfor %}",
     "[SYSTEM_PROMPT] You are a helpful assistant[/SYSTEM_PROMPT][INST] Hello[/INST] Hi "
     "there</s>[INST] Who are you[/INST]    I am an assistant   </s>[INST] Another "
     "question[/INST]"},
    {"phi-4", CHAT_PHI4,
     "{% for message in messages %}{% if (message['role'] == 'system') "
     "%}{{'<|im_start|>system<|im_sep|>' + message['content'] + '<|im_end|>'}}{% elif "
     "(message['role'] == 'user') %}{{'<|im_start|>user<|im_sep|>' + message['content'] + "
     "'<|im_end|><|im_start|>assistant<|im_sep|>'}}{% elif (message['role'] == 'assistant') "
     "%}{{message['content'] + '<|im_end|>'}}{% endif %}{% endfor %}",
     "<|im_start|>system<|im_sep|>You are a helpful "
     "assistant<|im_end|><|im_start|>user<|im_sep|>Hello<|im_end|><|im_start|>assistant<|im_"
     "sep|>Hi there<|im_end|><|im_start|>user<|im_sep|>Who are "
     "you<|im_end|><|im_start|>assistant<|im_sep|>   I am an assistant   "
     "<|im_end|><|im_start|>user<|im_sep|>Another "
     "question<|im_end|><|im_start|>assistant<|im_sep|>"},
    {"Ling-lite (bailing)", CHAT_BAILING,
     "{% for message in messages %}{% set role = message['role'] | lower %}{% if role == "
     "'user' %}{% set role = 'HUMAN' %}{% endif %}{% set role = role | upper %}{{ '<role>' + "
     "role + '</role>' + message['content'] }}{% endfor %}{% if add_generation_prompt %}{{ "
     "'<role>ASSISTANT</role>' }}{% endif %}",
     "<role>SYSTEM</role>You are a helpful assistant<role>HUMAN</role>Hello<role>ASSISTANT</"
     "role>Hi there<role>HUMAN</role>Who are you<role>ASSISTANT</role>   I am an assistant   "
     "<role>HUMAN</role>Another question<role>ASSISTANT</role>"},
    /* moed's own additions, from each model family's template */
    {"DeepSeek-V3 (deepseek3)", CHAT_DEEPSEEK3,
     "{{'<\xef\xbd\x9c" "User\xef\xbd\x9c>' + message['content']}}{{'<\xef\xbd\x9c" "Assistant\xef"
     "\xbd\x9c>' + content + '<\xef\xbd\x9c" "end\xe2\x96\x81" "of\xe2\x96\x81" "sentence\xef"
     "\xbd\x9c>'}}{% if add_generation_prompt %}{{'<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>'}}{% "
     "endif %}",
     "You are a helpful assistant\n\n<\xef\xbd\x9c" "User\xef\xbd\x9c>Hello<\xef\xbd\x9c" "Assistant"
     "\xef\xbd\x9c>Hi there<\xef\xbd\x9c" "end\xe2\x96\x81" "of\xe2\x96\x81" "sentence\xef\xbd"
     "\x9c><\xef\xbd\x9c" "User\xef\xbd\x9c>Who are you<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>   I am "
     "an assistant   <\xef\xbd\x9c" "end\xe2\x96\x81" "of\xe2\x96\x81" "sentence\xef\xbd\x9c><"
     "\xef\xbd\x9c" "User\xef\xbd\x9c>Another question<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>"},
    {"Kimi-K2", CHAT_KIMI_K2,
     "{%- if message['role'] == 'user' -%}<|im_user|>user<|im_middle|>{%- endif -%}{%- if "
     "add_generation_prompt -%}<|im_assistant|>assistant<|im_middle|>{%- endif -%}",
     "<|im_system|>system<|im_middle|>You are a helpful "
     "assistant<|im_end|><|im_user|>user<|im_middle|>Hello<|im_end|><|im_assistant|>assistant<"
     "|im_middle|>Hi there<|im_end|><|im_user|>user<|im_middle|>Who are "
     "you<|im_end|><|im_assistant|>assistant<|im_middle|>   I am an assistant   "
     "<|im_end|><|im_user|>user<|im_middle|>Another "
     "question<|im_end|><|im_assistant|>assistant<|im_middle|>"},
    {"Llama-4", CHAT_LLAMA4,
     "{{- '<|header_start|>' + message['role'] + '<|header_end|>\\n\\n' }}{{- '<|eot|>' }}",
     "<|header_start|>system<|header_end|>\n\nYou are a helpful "
     "assistant<|eot|><|header_start|>user<|header_end|>\n\nHello<|eot|><|header_start|>"
     "assistant<|header_end|>\n\nHi there<|eot|><|header_start|>user<|header_end|>\n\nWho are "
     "you<|eot|><|header_start|>assistant<|header_end|>\n\nI am an "
     "assistant<|eot|><|header_start|>user<|header_end|>\n\nAnother "
     "question<|eot|><|header_start|>assistant<|header_end|>\n\n"},
    {"OLMoE-Instruct (tulu)", CHAT_TULU,
     "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ "
     "'<|user|>\\n' + message['content'] + '\\n' }}{% elif message['role'] == 'assistant' %}{{ "
     "'<|assistant|>\\n'  + message['content'] + eos_token }}{% endif %}{% if loop.last and "
     "add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}{% endfor %}",
     "<|system|>\nYou are a helpful assistant\n<|user|>\nHello\n<|assistant|>\nHi "
     "there<|endoftext|>\n<|user|>\nWho are you\n<|assistant|>\n   I am an assistant   "
     "<|endoftext|>\n<|user|>\nAnother question\n<|assistant|>\n"},
};

START_TEST(each_family_detected_and_rendered_like_llama_cpp)
{
    const struct tcase *c = &cases[_i];
    chat_template_t ct;
    char err[512];
    ck_assert_msg(chat_template_init(&ct, c->tmpl, NULL, err, sizeof(err)) == 0, "%s: %s",
                  c->name, err);
    ck_assert_msg(ct.family == c->family, "%s: detected %s, want %s", c->name,
                  chat_family_name(ct.family), chat_family_name(c->family));
    chat_opts_t o = {.add_generation_prompt = true, .enable_thinking = true,
                     .eos_text = "<|endoftext|>"};
    char *s;
    size_t n;
    ck_assert_int_eq(chat_render(&ct, conv, NCONV, &o, &s, &n), 0);
    ck_assert_msg(!strcmp(s, c->expected), "%s:\n got  [%s]\n want [%s]", c->name, s,
                  c->expected);
    ck_assert_uint_eq(n, strlen(s));
    free(s);
}
END_TEST

START_TEST(gpt_oss_harmony_prompt)
{
    chat_template_t ct;
    char err[256];
    ck_assert_int_eq(chat_template_init(&ct, "{{- '<|start|>assistant<|channel|>final<|message|>' "
                                             "}}{%- if add_generation_prompt %}<|start|>assistant",
                                        NULL, err, sizeof(err)),
                     0);
    ck_assert_int_eq(ct.family, CHAT_GPT_OSS);
    chat_msg_t m[] = {{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello!"},
                      {"user", "2+2?"}};
    char *s;
    size_t n;
    ck_assert_int_eq(chat_render(&ct, m, 4, NULL, &s, &n), 0);
    ck_assert_str_eq(s, "<|start|>system<|message|>You are ChatGPT, a large language model "
                        "trained by OpenAI.\nKnowledge cutoff: 2024-06\n\nReasoning: medium\n\n"
                        "# Valid channels: analysis, commentary, final. Channel must be "
                        "included for every message.<|end|><|start|>developer<|message|># "
                        "Instructions\n\nBe brief.<|end|><|start|>user<|message|>Hi<|end|>"
                        "<|start|>assistant<|channel|>final<|message|>Hello!<|end|><|start|>"
                        "user<|message|>2+2?<|end|><|start|>assistant");
    free(s);
}
END_TEST

START_TEST(thinking_switches_follow_the_template)
{
    chat_template_t ct;
    char err[256], *s;
    size_t n;
    chat_msg_t m[] = {{"user", "Hi"}};
    chat_opts_t o = {.add_generation_prompt = true, .enable_thinking = true};
    /* DeepSeek-R1-0528: the generation prompt opens <think>; output starts inside it */
    ck_assert_int_eq(chat_template_init(&ct,
                                        "{{'<\xef\xbd\x9c" "User\xef\xbd\x9c>' + content}}{% if "
                                        "add_generation_prompt %}{{'<\xef\xbd\x9c"
                                        "Assistant\xef\xbd\x9c><think>\\n'}}{% endif %}"
                                        "<\xef\xbd\x9c" "end\xe2\x96\x81" "of\xe2\x96\x81"
                                        "sentence\xef\xbd\x9c><\xef\xbd\x9c" "Assistant\xef\xbd"
                                        "\x9c>",
                                        NULL, err, sizeof(err)),
                     0);
    ck_assert_int_eq(ct.family, CHAT_DEEPSEEK3);
    ck_assert(ct.think_in_prompt);
    ck_assert(chat_starts_in_reasoning(&ct, &o));
    ck_assert_int_eq(chat_render(&ct, m, 1, &o, &s, &n), 0);
    ck_assert_str_eq(s, "<\xef\xbd\x9c" "User\xef\xbd\x9c>Hi<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>"
                        "<think>\n");
    free(s);
    /* Qwen3: thinking on by default, switched off with the empty block */
    static const char qwen3[] =
        "{%- for message in messages %}<|im_start|>{%- endfor %}{%- if add_generation_prompt "
        "%}{{- '<|im_start|>assistant\\n' }}{%- if enable_thinking is defined and "
        "enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}";
    ck_assert_int_eq(chat_template_init(&ct, qwen3, NULL, err, sizeof(err)), 0);
    ck_assert_int_eq(ct.family, CHAT_CHATML);
    ck_assert(!ct.think_in_prompt);
    ck_assert(ct.has_enable_thinking);
    ck_assert(!chat_starts_in_reasoning(&ct, &o));
    ck_assert_int_eq(chat_render(&ct, m, 1, &o, &s, &n), 0);
    ck_assert_str_eq(s, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    free(s);
    o.enable_thinking = false;
    ck_assert_int_eq(chat_render(&ct, m, 1, &o, &s, &n), 0);
    ck_assert_str_eq(s, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
                        "<think>\n\n</think>\n\n");
    free(s);
    /* GLM-4.5: GLM-4 roles, the prompt ends at <|assistant|>, off = empty think block */
    static const char glm45[] =
        "[gMASK]<sop>{%- for m in messages %}{%- if m.role == 'user' -%}<|user|>\n{{ m.content "
        "}}{%- endif -%}{%- endfor -%}{%- if add_generation_prompt -%}<|assistant|>{{- "
        "'\\n<think></think>' if (enable_thinking is defined and not enable_thinking) else '' "
        "-}}{%- endif -%}";
    ck_assert_int_eq(chat_template_init(&ct, glm45, NULL, err, sizeof(err)), 0);
    ck_assert_int_eq(ct.family, CHAT_CHATGLM4);
    ck_assert(ct.glm45 && ct.has_enable_thinking && !ct.think_in_prompt);
    ck_assert_int_eq(chat_render(&ct, m, 1, &o, &s, &n), 0);
    ck_assert_str_eq(s, "[gMASK]<sop><|user|>\nHi<|assistant|>\n<think></think>");
    free(s);
    o.enable_thinking = true;
    ck_assert_int_eq(chat_render(&ct, m, 1, &o, &s, &n), 0);
    ck_assert_str_eq(s, "[gMASK]<sop><|user|>\nHi<|assistant|>");
    free(s);
}
END_TEST

START_TEST(unknown_template_refused_and_family_can_be_forced)
{
    chat_template_t ct = {.family = CHAT_CHATML};
    char err[1024] = "";
    ck_assert_int_eq(chat_template_init(&ct, "{{ messages | my_own_format }}", NULL, err,
                                        sizeof(err)),
                     -ENOTSUP);
    ck_assert_int_eq(ct.family, CHAT_CHATML); /* untouched on failure */
    ck_assert_ptr_nonnull(strstr(err, "chat_template"));
    ck_assert_ptr_nonnull(strstr(err, "chatml"));
    ck_assert_int_eq(chat_template_init(&ct, NULL, NULL, err, sizeof(err)), -ENOTSUP);
    ck_assert_int_eq(chat_template_init(&ct, "{{ weird }}", "llama3", err, sizeof(err)), 0);
    ck_assert_int_eq(ct.family, CHAT_LLAMA3);
    ck_assert_int_eq(chat_template_init(&ct, NULL, "olmoe", err, sizeof(err)), 0);
    ck_assert_int_eq(ct.family, CHAT_TULU);
    ck_assert_int_eq(chat_template_init(&ct, NULL, "no-such", err, sizeof(err)), -ENOTSUP);
    ck_assert_ptr_nonnull(strstr(err, "no-such"));
    chat_msg_t bad[] = {{"user", NULL}};
    char *s;
    size_t n;
    ck_assert_int_eq(chat_template_init(&ct, NULL, "chatml", err, sizeof(err)), 0);
    ck_assert_int_eq(chat_render(&ct, bad, 1, NULL, &s, &n), -EINVAL);
    ck_assert_int_eq(chat_render(&ct, NULL, 0, NULL, &s, &n), 0); /* empty: just the prompt */
    ck_assert_str_eq(s, "<|im_start|>assistant\n");
    free(s);
    for (int f = CHAT_UNKNOWN + 1; f < CHAT_FAMILY_COUNT_; f++) {
        enum chat_family g;
        ck_assert_int_eq(chat_family_from_name(chat_family_name((enum chat_family)f), &g), 0);
        ck_assert_int_eq(g, f);
        ck_assert_ptr_nonnull(strstr(chat_family_names(), chat_family_name(g)));
    }
}
END_TEST

START_TEST(phi3_vocab_template_renders_and_tokenizes)
{
    if (!text_have_vocab())
        return;
    gguf_t *g;
    tokenizer_t *t = text_load_vocab("phi-3", &g);
    const char *tmpl;
    ck_assert_int_eq(gguf_get_str(g, "tokenizer.chat_template", &tmpl), 0);
    chat_template_t ct;
    char err[256];
    ck_assert_int_eq(chat_template_init(&ct, tmpl, NULL, err, sizeof(err)), 0);
    ck_assert_int_eq(ct.family, CHAT_PHI3);
    chat_msg_t m[] = {{"user", "Hello"}};
    char *s;
    size_t n;
    ck_assert_int_eq(chat_render(&ct, m, 1, NULL, &s, &n), 0);
    ck_assert_str_eq(s, "<|user|>\nHello<|end|>\n<|assistant|>\n");
    int32_t ids[32];
    int r = tokenizer_encode(t, s, n, TOKENIZER_ADD_SPECIAL | TOKENIZER_PARSE_SPECIAL, ids, 32);
    /* <s> <|user|> ▁Hello <|end|> <|assistant|>: whitespace after the special tokens is
     * eaten (Phi-3's rstrip) */
    ck_assert_int_eq(r, 5);
    int32_t want[] = {1, 32010, 15043, 32007, 32001};
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(ids[i], want[i]);
    free(s);
    tokenizer_free(t);
    gguf_free(g);
}
END_TEST

/* ---- reasoning ---- */

typedef struct collected {
    char reasoning[512], content[512];
    size_t nr, nc;
    int switches; /* kind changes seen between consecutive parts */
    int last;
} collected_t;

static void collect(collected_t *c, const reasoning_part_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        ck_assert_uint_gt(p[i].len, 0);
        char *dst = p[i].kind == REASONING_PART_REASONING ? c->reasoning : c->content;
        size_t *dn = p[i].kind == REASONING_PART_REASONING ? &c->nr : &c->nc;
        ck_assert_uint_lt(*dn + p[i].len, 512);
        memcpy(dst + *dn, p[i].text, p[i].len);
        *dn += p[i].len;
        dst[*dn] = 0;
        if (c->last >= 0 && c->last != (int)p[i].kind)
            c->switches++;
        c->last = (int)p[i].kind;
    }
}

/* Runs text through a splitter in the given pieces (lengths; 0-terminated list). */
static collected_t split(enum reasoning_format f, bool inside, const char *text,
                         const size_t *cuts)
{
    reasoning_t *r;
    ck_assert_int_eq(reasoning_new(f, inside, &r), 0);
    collected_t c = {.last = -1};
    const reasoning_part_t *p;
    size_t n, off = 0, len = strlen(text);
    for (size_t i = 0; cuts && cuts[i]; i++) {
        ck_assert_int_eq(reasoning_feed(r, text + off, cuts[i], &p, &n), 0);
        collect(&c, p, n);
        off += cuts[i];
    }
    ck_assert_int_eq(reasoning_feed(r, text + off, len - off, &p, &n), 0);
    collect(&c, p, n);
    ck_assert_int_eq(reasoning_flush(r, &p, &n), 0);
    collect(&c, p, n);
    reasoning_free(r);
    return c;
}

START_TEST(reasoning_split_whole_and_cut_at_every_point)
{
    static const char s[] = "<think>\nLet me see: 2+2.\n</think>\n\nIt is 4.";
    collected_t w = split(REASONING_THINK, false, s, NULL);
    ck_assert_str_eq(w.reasoning, "Let me see: 2+2.\n");
    ck_assert_str_eq(w.content, "It is 4.");
    /* every way to cut the stream in three: the same result (markers cut across tokens) */
    size_t len = strlen(s);
    for (size_t i = 1; i < len; i++)
        for (size_t j = 1; i + j < len; j++) {
            size_t cuts[] = {i, j, 0};
            collected_t c = split(REASONING_THINK, false, s, cuts);
            ck_assert_str_eq(c.reasoning, w.reasoning);
            ck_assert_str_eq(c.content, w.content);
        }
    /* one byte per feed, like a byte-level token stream */
    size_t ones[64];
    for (size_t i = 0; i < len; i++)
        ones[i] = 1;
    ones[len - 1] = 0;
    collected_t c = split(REASONING_THINK, false, s, ones);
    ck_assert_str_eq(c.reasoning, w.reasoning);
    ck_assert_str_eq(c.content, w.content);
}
END_TEST

START_TEST(reasoning_starts_inside_when_prompt_opened_it)
{
    size_t cuts[] = {3, 5, 2, 0};
    collected_t c = split(REASONING_THINK, true, "Hmm, ok.</think>Answer", cuts);
    ck_assert_str_eq(c.reasoning, "Hmm, ok.");
    ck_assert_str_eq(c.content, "Answer");
    ck_assert_int_eq(c.switches, 1);
}
END_TEST

START_TEST(reasoning_holds_only_possible_markers)
{
    reasoning_t *r;
    const reasoning_part_t *p;
    size_t n;
    ck_assert_int_eq(reasoning_new(REASONING_THINK, false, &r), 0);
    ck_assert_int_eq(reasoning_feed(r, "a <thi", 6, &p, &n), 0);
    ck_assert_uint_eq(n, 1);
    ck_assert_uint_eq(p[0].len, 2); /* "a " out, "<thi" held */
    ck_assert_int_eq(reasoning_feed(r, "s is not", 8, &p, &n), 0);
    ck_assert_uint_eq(n, 1);
    ck_assert(!memcmp(p[0].text, "<this is not", 12));
    ck_assert_int_eq(reasoning_feed(r, " <", 2, &p, &n), 0);
    ck_assert_int_eq(reasoning_flush(r, &p, &n), 0); /* never completed: plain text */
    ck_assert_uint_eq(n, 1);
    ck_assert_int_eq(p[0].kind, REASONING_PART_CONTENT);
    ck_assert(!memcmp(p[0].text, "<", 1));
    ck_assert(!reasoning_inside(r));
    reasoning_free(r);

    collected_t c = split(REASONING_NONE, true, "<think>x</think>y", NULL);
    ck_assert_str_eq(c.content, "<think>x</think>y");
    ck_assert_uint_eq(c.nr, 0);
}
END_TEST

START_TEST(reasoning_harmony_channels)
{
    static const char s[] = "<|channel|>analysis<|message|>User asks 2+2. Easy.<|end|>"
                            "<|start|>assistant<|channel|>final<|message|>4";
    size_t cuts[] = {5, 20, 7, 30, 3, 0};
    collected_t c = split(REASONING_HARMONY, false, s, cuts);
    ck_assert_str_eq(c.reasoning, "User asks 2+2. Easy.");
    ck_assert_str_eq(c.content, "4");
    ck_assert_int_eq(reasoning_format_for_family(CHAT_GPT_OSS), REASONING_HARMONY);
    ck_assert_int_eq(reasoning_format_for_family(CHAT_DEEPSEEK3), REASONING_THINK);
    enum reasoning_format f;
    ck_assert_int_eq(reasoning_format_from_name("seed", &f), 0);
    ck_assert_int_eq(f, REASONING_SEED);
    ck_assert_int_eq(reasoning_format_from_name("nope", &f), -ENOENT);
}
END_TEST

START_TEST(token_stream_through_detok_stop_and_reasoning)
{
    if (!text_have_vocab())
        return;
    /* a model's output, token by token (gpt-2 cuts <think>, the emoji and STOP apart) */
    tokenizer_t *t = text_load_vocab("gpt-2", NULL);
    static const char out[] = "<think>\nIs \xf0\x9f\xa6\x99 a squid?\n</think>\n\nYes: \xf0\x9f"
                              "\xa6\x99 is a squid.STOP and then more";
    int32_t *ids;
    size_t n;
    ck_assert_int_eq(tokenizer_encode_alloc(t, out, strlen(out), 0, &ids, &n), 0);
    detok_t *d;
    sampler_stop_t *st;
    reasoning_t *r;
    const char *stops[] = {"STOP"};
    ck_assert_int_eq(detok_new(t, 0, &d), 0);
    ck_assert_int_eq(sampler_stop_new(stops, 1, NULL, 0, 0, &st), 0);
    ck_assert_int_eq(reasoning_new(REASONING_THINK, false, &r), 0);
    collected_t c = {.last = -1};
    int fin = SAMPLER_CONTINUE;
    size_t used = 0;
    for (size_t i = 0; i < n && fin == SAMPLER_CONTINUE; i++, used++) {
        const char *p, *q;
        size_t pl, ql, np;
        const reasoning_part_t *parts;
        ck_assert_int_eq(detok_push(d, ids[i], &p, &pl), 0);
        fin = sampler_stop_push(st, ids[i], tokenizer_is_eog(t, ids[i]), p, pl, &q, &ql);
        ck_assert_int_ge(fin, 0);
        ck_assert_int_eq(reasoning_feed(r, q, ql, &parts, &np), 0);
        collect(&c, parts, np);
    }
    const reasoning_part_t *parts;
    size_t np;
    ck_assert_int_eq(reasoning_flush(r, &parts, &np), 0);
    collect(&c, parts, np);
    ck_assert_int_eq(fin, SAMPLER_STOP_STRING);
    ck_assert_uint_lt(used, n); /* it stopped before the end */
    ck_assert_str_eq(c.reasoning, "Is \xf0\x9f\xa6\x99 a squid?\n");
    ck_assert_str_eq(c.content, "Yes: \xf0\x9f\xa6\x99 is a squid.");
    reasoning_free(r);
    sampler_stop_free(st);
    detok_free(d);
    free(ids);
    tokenizer_free(t);
}
END_TEST

Suite *text_chat_suite(void)
{
    Suite *s = suite_create("chat");
    TCase *tc = tcase_create("templates");
    tcase_add_loop_test(tc, each_family_detected_and_rendered_like_llama_cpp, 0,
                        (int)(sizeof(cases) / sizeof(cases[0])));
    tcase_add_test(tc, gpt_oss_harmony_prompt);
    tcase_add_test(tc, thinking_switches_follow_the_template);
    tcase_add_test(tc, unknown_template_refused_and_family_can_be_forced);
    tcase_add_test(tc, phi3_vocab_template_renders_and_tokenizes);
    suite_add_tcase(s, tc);
    tc = tcase_create("reasoning");
    tcase_add_test(tc, reasoning_split_whole_and_cut_at_every_point);
    tcase_add_test(tc, reasoning_starts_inside_when_prompt_opened_it);
    tcase_add_test(tc, reasoning_holds_only_possible_markers);
    tcase_add_test(tc, reasoning_harmony_channels);
    tcase_add_test(tc, token_stream_through_detok_stop_and_reasoning);
    suite_add_tcase(s, tc);
    return s;
}
