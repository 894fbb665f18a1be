/* The daemon's log: to the journal with structured fields when stderr is connected to it
 * (JOURNAL_STREAM names our stderr, as systemd sets it), else one line per record on stderr.
 * Only the edges (main, api, scheduler) log; library code returns errors instead. Prompts
 * and completions are never passed here unless settings.log_prompts is on. */
#pragma once
#include <stdarg.h>

#include "settings.h"

typedef struct log_ctx {
    int max_level; /* records above this (less severe) are dropped */
    int journal;   /* 1: sd_journal_send, 0: stderr */
} log_ctx_t;

void log_init(log_ctx_t *l, int max_level);

/* Logs one record; fields are extra "KEY=value" strings (NULL-terminated list, may be NULL)
 * added as journal fields and appended as key=value on stderr. */
__attribute__((format(printf, 4, 5))) void log_fields(const log_ctx_t *l, int level,
                                                      const char *const *fields,
                                                      const char *fmt, ...);
#define log_err(l, ...) log_fields((l), SETTINGS_LOG_ERR, NULL, __VA_ARGS__)
#define log_warning(l, ...) log_fields((l), SETTINGS_LOG_WARNING, NULL, __VA_ARGS__)
#define log_notice(l, ...) log_fields((l), SETTINGS_LOG_NOTICE, NULL, __VA_ARGS__)
#define log_info(l, ...) log_fields((l), SETTINGS_LOG_INFO, NULL, __VA_ARGS__)
#define log_debug(l, ...) log_fields((l), SETTINGS_LOG_DEBUG, NULL, __VA_ARGS__)
