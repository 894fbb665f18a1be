/* moed's settings: one table (settings.c) gives each setting's name, type, default, range
 * and help text, and drives the config file parser, the command-line flags, --help, the
 * moed.conf(5) man page and every range check, so they cannot disagree.
 * Config format: `key = value` lines, `#` comments, blank lines; keys are the long flag
 * names with '-' or '_'; sizes take K/M/G/T suffixes (powers of 1024); later lines and then
 * command-line flags override earlier ones. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum settings_log_level {
    SETTINGS_LOG_ERR = 3,
    SETTINGS_LOG_WARNING = 4,
    SETTINGS_LOG_NOTICE = 5,
    SETTINGS_LOG_INFO = 6,
    SETTINGS_LOG_DEBUG = 7,
};

enum settings_engine {
    SETTINGS_ENGINE_VULKAN = 0,
    SETTINGS_ENGINE_REFERENCE = 1,
};

#define SETTINGS_MAX_LIST 32

typedef struct settings {
    char *model;          /* path of the GGUF model */
    char *socket;         /* socket path moed binds when not socket-activated */
    uint32_t socket_mode; /* permission bits of a socket moed binds */
    char *socket_group;   /* group of a socket moed binds ("" keeps moed's own) */
    uint32_t engine;      /* enum settings_engine */
    char *device;         /* Vulkan device: index, name substring or UUID; "" = auto */
    uint64_t gpu_cache;   /* bytes of GPU memory for the expert cache; 0 = auto */
    uint64_t host_cache;  /* bytes of host RAM for the second cache tier; 0 = none */
    uint32_t ctx;         /* max context tokens per sequence */
    uint32_t parallel;    /* max sequences decoded together */
    uint32_t queue;       /* max requests waiting */
    uint32_t request_timeout; /* seconds a request may take in all */
    uint32_t idle_timeout;    /* seconds an idle connection is kept */
    uint64_t max_body;    /* bytes of a request body */
    uint32_t max_tokens;  /* cap on max_tokens of one request */
    char *allow_users;    /* comma-separated user names or uids; "" = anyone who can connect */
    char *allow_groups;   /* comma-separated group names or gids */
    uint32_t log_level;   /* enum settings_log_level */
    bool log_prompts;     /* log prompt and completion text (off: never logged) */
    uint32_t io_backend;  /* 0 auto, 1 io_uring, 2 pread */
    uint32_t io_depth;    /* io_uring queue depth */
    bool io_direct;       /* O_DIRECT reads (falls back to buffered where refused) */
    bool prefetch;        /* speculative expert loads for the next layer */
    uint32_t cache_policy; /* 0 lru, 1 lfru */
    char *cache_dir;      /* pipeline cache and other regenerable state */
    char *chat_template;  /* force a chat template family; "" = detect from the model */
    bool vk_validation;   /* Vulkan validation layers (debugging) */
} settings_t;

/* Fills s with the defaults. Strings are owned by s (settings_clear frees them). */
int settings_init(settings_t *s);
void settings_clear(settings_t *s);

/* Sets one setting from text. key may use '-' or '_'. -ENOENT unknown key, -EINVAL or
 * -ERANGE bad value, with a one-line reason in err. */
int settings_set(settings_t *s, const char *key, const char *value, char *err, size_t errlen);
/* Reads a config file. -ENOENT when missing (the caller decides whether that is fine);
 * errors name the file and line. */
int settings_load_file(settings_t *s, const char *path, char *err, size_t errlen);
/* Parses --key=value / --key value / --flag / --no-flag from argv[first..]. Returns the
 * index of the first non-option argument, or -errno with a reason. --help and --config
 * are not handled here. */
int settings_parse_args(settings_t *s, int argc, char **argv, char *err, size_t errlen);

void settings_print_help(FILE *f);
/* moed.conf(5) in troff, generated from the table. */
void settings_print_man(FILE *f);
/* `key = value` for every setting: the effective configuration. */
void settings_dump(const settings_t *s, FILE *f);

/* Helpers shared with other parsers: checked unsigned parse with optional size suffix. */
int settings_parse_u64(const char *text, bool size_suffix, uint64_t *ret);
