/* Request body -> api_request_t. Each field has one checker that names the field in its
 * error, so a client always learns which parameter was wrong and why (the OpenAI error
 * shape: {"error":{"message","type","param","code"}}). Numbers are range-checked before
 * they are converted: a JSON integer of 1e30 or a float NaN never reaches a cast. */
#include "api/api_request.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__attribute__((format(printf, 3, 4))) static int fail(api_error_t *e, const char *param,
                                                      const char *fmt, ...)
{
    va_list ap;
    e->status = 400;
    e->type = "invalid_request_error";
    snprintf(e->param, sizeof(e->param), "%s", param ? param : "");
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof(e->message), fmt, ap);
    va_end(ap);
    return -EINVAL;
}

static int get_float(json_t *o, const char *key, double lo, double hi, bool lo_open,
                     float *ret, api_error_t *e)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_number(v))
        return fail(e, key, "'%s' must be a number", key);
    double d = json_number_value(v);
    /* Checked as the float it becomes: 1e-50 is above 0 as a double but 0 as a float. */
    float f = (float)d;
    if (!isfinite(d) || d > hi || d < lo || (lo_open && f == (float)lo))
        return fail(e, key, "'%s' must be in %s%g, %g]", key, lo_open ? "(" : "[", lo, hi);
    *ret = f;
    return 0;
}

static int get_uint(json_t *o, const char *key, json_int_t lo, json_int_t hi, uint32_t *ret,
                    bool *ret_given, api_error_t *e)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_integer(v))
        return fail(e, key, "'%s' must be an integer", key);
    json_int_t i = json_integer_value(v);
    if (i < lo || i > hi)
        return fail(e, key, "'%s' must be in [%lld, %lld]", key, (long long)lo, (long long)hi);
    *ret = (uint32_t)i;
    if (ret_given)
        *ret_given = true;
    return 0;
}

static int get_bool(json_t *o, const char *key, bool *ret, api_error_t *e)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_boolean(v))
        return fail(e, key, "'%s' must be true or false", key);
    *ret = json_is_true(v);
    return 0;
}

/* A JSON string without NUL bytes, copied. */
static int dup_string(json_t *v, const char *param, char **ret, api_error_t *e)
{
    size_t n = json_string_length(v);
    const char *s = json_string_value(v);
    if (memchr(s, 0, n))
        return fail(e, param, "'%s' must not contain NUL characters", param);
    char *d = strndup(s, n);
    if (!d)
        return -ENOMEM;
    *ret = d;
    return 0;
}

static int parse_stop(json_t *o, api_request_t *r, api_error_t *e)
{
    json_t *v = json_object_get(o, "stop");
    if (!v || json_is_null(v))
        return 0;
    json_t *one[1] = {v};
    json_t **items = one;
    size_t n = 1;
    if (json_is_array(v)) {
        n = json_array_size(v);
        if (n > API_MAX_STOP)
            return fail(e, "stop", "'stop' may hold at most %d strings", API_MAX_STOP);
    } else if (!json_is_string(v)) {
        return fail(e, "stop", "'stop' must be a string or an array of strings");
    }
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_is_array(v) ? json_array_get(v, i) : items[0];
        if (!json_is_string(s))
            return fail(e, "stop", "'stop' must be a string or an array of strings");
        size_t len = json_string_length(s);
        if (len == 0 || len > API_MAX_STOP_LEN)
            return fail(e, "stop", "each 'stop' string must be 1 to %d bytes",
                        API_MAX_STOP_LEN);
        int rc = dup_string(s, "stop", &r->stop[r->n_stop], e);
        if (rc < 0)
            return rc;
        r->n_stop++;
    }
    return 0;
}

/* Message content: a string, or an array of parts of which the text parts are joined. */
static int parse_content(json_t *c, size_t idx, char **ret, api_error_t *e)
{
    char param[48];
    snprintf(param, sizeof(param), "messages[%zu].content", idx);
    if (!c || json_is_null(c))
        return (*ret = strdup("")) ? 0 : -ENOMEM;
    if (json_is_string(c))
        return dup_string(c, param, ret, e);
    if (!json_is_array(c))
        return fail(e, param, "'%s' must be a string or an array of parts", param);
    size_t total = 0, i;
    json_t *part;
    json_array_foreach(c, i, part) {
        json_t *type = json_object_get(part, "type"), *text = json_object_get(part, "text");
        if (!json_is_string(type) || strcmp(json_string_value(type), "text") != 0)
            return fail(e, param, "'%s' parts must be of type \"text\"", param);
        if (!json_is_string(text))
            return fail(e, param, "'%s' text parts need a string \"text\"", param);
        total += json_string_length(text);
    }
    char *out = malloc(total + 1), *p = out;
    if (!out)
        return -ENOMEM;
    json_array_foreach(c, i, part) {
        json_t *text = json_object_get(part, "text");
        size_t n = json_string_length(text);
        memcpy(p, json_string_value(text), n);
        p += n;
    }
    *p = 0;
    if (strlen(out) != total) {
        free(out);
        return fail(e, param, "'%s' must not contain NUL characters", param);
    }
    *ret = out;
    return 0;
}

static int parse_messages(json_t *o, api_request_t *r, api_error_t *e)
{
    static const char *const roles[] = {"system", "user", "assistant", "tool", "developer"};
    json_t *v = json_object_get(o, "messages");
    if (!v)
        return fail(e, "messages", "'messages' is required");
    if (!json_is_array(v) || json_array_size(v) == 0)
        return fail(e, "messages", "'messages' must be a non-empty array");
    size_t n = json_array_size(v);
    if (n > API_MAX_MESSAGES)
        return fail(e, "messages", "at most %d messages", API_MAX_MESSAGES);
    r->messages = calloc(n, sizeof(*r->messages));
    if (!r->messages)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(v, i), *role = json_object_get(m, "role");
        char param[48];
        snprintf(param, sizeof(param), "messages[%zu].role", i);
        if (!json_is_object(m))
            return fail(e, "messages", "messages[%zu] must be an object", i);
        if (!json_is_string(role))
            return fail(e, param, "'%s' must be a string", param);
        const char *rs = json_string_value(role);
        size_t k;
        for (k = 0; k < sizeof(roles) / sizeof(roles[0]); k++)
            if (!strcmp(rs, roles[k]))
                break;
        if (k == sizeof(roles) / sizeof(roles[0]))
            return fail(e, param, "'%s' must be system, user, assistant, tool or developer",
                        param);
        /* "developer" is OpenAI's newer name for the system role. */
        r->messages[i].role = strdup(k == 4 ? "system" : rs);
        if (!r->messages[i].role)
            return -ENOMEM;
        r->n_messages = i + 1;
        int rc = parse_content(json_object_get(m, "content"), i, &r->messages[i].content, e);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int parse_prompt(json_t *o, api_request_t *r, api_error_t *e)
{
    json_t *v = json_object_get(o, "prompt");
    if (!v)
        return fail(e, "prompt", "'prompt' is required");
    if (json_is_string(v))
        return dup_string(v, "prompt", &r->prompt, e);
    if (!json_is_array(v) || json_array_size(v) == 0)
        return fail(e, "prompt", "'prompt' must be a string, or an array of token ids");
    json_t *first = json_array_get(v, 0);
    if (json_is_string(first)) {
        if (json_array_size(v) != 1)
            return fail(e, "prompt", "only one prompt per request is supported");
        return dup_string(first, "prompt", &r->prompt, e);
    }
    size_t n = json_array_size(v);
    r->prompt_ids = malloc(n * sizeof(*r->prompt_ids));
    if (!r->prompt_ids)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_array_get(v, i);
        if (!json_is_integer(t) || json_integer_value(t) < 0 ||
            json_integer_value(t) > INT32_MAX)
            return fail(e, "prompt", "'prompt' token ids must be non-negative integers");
        r->prompt_ids[i] = (int32_t)json_integer_value(t);
    }
    r->n_prompt_ids = n;
    return 0;
}

static int parse_fields(json_t *o, enum api_kind kind, uint32_t cap, api_request_t *r,
                        api_error_t *e)
{
    int rc;
    json_t *v;

    if ((v = json_object_get(o, "model")) && !json_is_null(v)) {
        if (!json_is_string(v))
            return fail(e, "model", "'model' must be a string");
        if ((rc = dup_string(v, "model", &r->model, e)) < 0)
            return rc;
    }
    rc = kind == API_CHAT ? parse_messages(o, r, e) : parse_prompt(o, r, e);
    if (rc < 0)
        return rc;
    uint32_t n = 1;
    if ((rc = get_uint(o, "n", 1, 1, &n, NULL, e)) < 0)
        return rc;
    if ((rc = get_uint(o, "max_tokens", 1, cap, &r->max_tokens, NULL, e)) < 0 ||
        (rc = get_uint(o, "max_completion_tokens", 1, cap, &r->max_tokens, NULL, e)) < 0)
        return rc;
    if ((rc = get_float(o, "temperature", 0, 2, false, &r->temperature, e)) < 0 ||
        (rc = get_float(o, "top_p", 0, 1, true, &r->top_p, e)) < 0 ||
        (rc = get_float(o, "min_p", 0, 1, false, &r->min_p, e)) < 0 ||
        (rc = get_float(o, "presence_penalty", -2, 2, false, &r->presence_penalty, e)) < 0 ||
        (rc = get_float(o, "frequency_penalty", -2, 2, false, &r->frequency_penalty, e)) < 0 ||
        (rc = get_float(o, "repetition_penalty", 0, 10, true, &r->repetition_penalty, e)) < 0)
        return rc;
    if ((rc = get_uint(o, "top_k", 0, 1 << 20, &r->top_k, NULL, e)) < 0)
        return rc;
    if ((v = json_object_get(o, "seed")) && !json_is_null(v)) {
        if (!json_is_integer(v))
            return fail(e, "seed", "'seed' must be an integer");
        r->seed = (uint64_t)json_integer_value(v);
        r->has_seed = true;
    }
    if ((rc = parse_stop(o, r, e)) < 0)
        return rc;
    if ((rc = get_bool(o, "stream", &r->stream, e)) < 0 ||
        (rc = get_bool(o, "ignore_eos", &r->ignore_eos, e)) < 0)
        return rc;
    if ((v = json_object_get(o, "stream_options")) && !json_is_null(v)) {
        if (!json_is_object(v))
            return fail(e, "stream_options", "'stream_options' must be an object");
        if ((rc = get_bool(v, "include_usage", &r->include_usage, e)) < 0)
            return rc;
    }
    /* logprobs: a boolean in chat, an integer 0..5 (how many alternatives) in completions. */
    if ((v = json_object_get(o, "logprobs")) && !json_is_null(v)) {
        if (kind == API_CHAT) {
            if ((rc = get_bool(o, "logprobs", &r->logprobs, e)) < 0)
                return rc;
        } else {
            uint32_t k = 0;
            if ((rc = get_uint(o, "logprobs", 0, 5, &k, NULL, e)) < 0)
                return rc;
            r->logprobs = true;
            r->top_logprobs = k;
        }
    }
    if (kind == API_CHAT &&
        (rc = get_uint(o, "top_logprobs", 0, API_MAX_TOP_LOGPROBS, &r->top_logprobs, NULL, e)) < 0)
        return rc;
    return 0;
}

int api_request_parse(const char *body, size_t len, enum api_kind kind, uint32_t max_tokens_cap,
                      api_request_t *ret, api_error_t *err)
{
    api_request_t r = {
        .kind = kind, .temperature = 1.0f, .top_p = 1.0f, .repetition_penalty = 1.0f,
    };
    json_error_t jerr;
    /* JSON_REJECT_DUPLICATES: a body with two "max_tokens" is ambiguous; refuse it. */
    json_t *o = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!o)
        return fail(err, NULL, "malformed JSON at line %d column %d: %s", jerr.line,
                    jerr.column, jerr.text);
    int rc;
    if (!json_is_object(o))
        rc = fail(err, NULL, "the request body must be a JSON object");
    else
        rc = parse_fields(o, kind, max_tokens_cap ? max_tokens_cap : UINT32_MAX >> 1, &r, err);
    json_decref(o);
    if (rc < 0) {
        api_request_clear(&r);
        return rc;
    }
    *ret = r;
    return 0;
}

void api_request_clear(api_request_t *r)
{
    free(r->model);
    free(r->prompt);
    free(r->prompt_ids);
    for (size_t i = 0; i < r->n_messages; i++) {
        free(r->messages[i].role);
        free(r->messages[i].content);
    }
    free(r->messages);
    for (size_t i = 0; i < r->n_stop; i++)
        free(r->stop[i]);
    memset(r, 0, sizeof(*r));
}
