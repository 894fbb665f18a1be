/* Shared declarations of the tests/text program (one Check suite per source file). */
#pragma once
#include <check.h>
#include <stdbool.h>

#include "model/gguf.h"
#include "text/tokenizer.h"

bool text_have_vocab(void);
/* Opens $MOE_SHARED_DATA/vocab/ggml-vocab-NAME.gguf (asserts on failure). */
tokenizer_t *text_load_vocab(const char *name, gguf_t **ret_g);

Suite *text_tokenizer_suite(void);
Suite *text_chat_suite(void);    /* chat templates and reasoning split */
Suite *text_sampler_suite(void); /* sampler and stop conditions */
