/* Request validation: each malformed or hostile body is refused with status 400, names
 * the offending parameter, and leaks nothing (ASan build); good bodies give exactly the
 * parameters sent. */
#include <check.h>
#include <errno.h>
#include <string.h>

#include "api/api_request.h"

static const struct bad {
    enum api_kind kind;
    const char *body;
    const char *param; /* "" when the error is about the whole body */
} bad[] = {
    {API_COMPLETION, "", ""},
    {API_COMPLETION, "{", ""},
    {API_COMPLETION, "[]", ""},
    {API_COMPLETION, "\"prompt\"", ""},
    {API_COMPLETION, "{\"prompt\":\"a\",}", ""},
    {API_COMPLETION, "{\"prompt\":\"a\",\"prompt\":\"b\"}", ""},
    {API_COMPLETION, "{}", "prompt"},
    {API_COMPLETION, "{\"prompt\":5}", "prompt"},
    {API_COMPLETION, "{\"prompt\":[]}", "prompt"},
    {API_COMPLETION, "{\"prompt\":[\"a\",\"b\"]}", "prompt"},
    {API_COMPLETION, "{\"prompt\":[1,-2]}", "prompt"},
    {API_COMPLETION, "{\"prompt\":[1,4294967296]}", "prompt"},
    {API_COMPLETION, "{\"prompt\":[1,2.5]}", "prompt"},
    {API_COMPLETION, "{\"prompt\":\"a\\u0000b\"}", ""}, /* jansson refuses NUL */
    {API_COMPLETION, "{\"prompt\":\"a\",\"model\":7}", "model"},
    {API_COMPLETION, "{\"prompt\":\"a\",\"max_tokens\":0}", "max_tokens"},
    {API_COMPLETION, "{\"prompt\":\"a\",\"max_tokens\":-1}", "max_tokens"},
    {API_COMPLETION, "{\"prompt\":\"a\",\"max_tokens\":100000000}", "max_tokens"},
    {API_COMPLETION, "{\"prompt\":\"a\",\"max_tokens\":1e400}", ""},
    {API_COMPLETION, "{\"prompt\":\"a\",\"max_tokens\":\"10\"}", "max_tokens"},
    {API_COMPLETION, "{\"prompt\":\"a\",\"max_tokens\":1.5}", "max_tokens"},
    {API_COMPLETION, "{\"prompt\":\"a\",\"max_tokens\":99999999999999999999999}", ""},
    {API_COMPLETION, "{\"prompt\":\"a\",\"temperature\":-0.1}", "temperature"},
    {API_COMPLETION, "{\"prompt\":\"a\",\"temperature\":2.01}", "temperature"},
    {API_COMPLETION, "{\"prompt\":\"a\",\"temperature\":\"hot\"}", "temperature"},
    {API_COMPLETION, "{\"prompt\":\"a\",\"top_p\":0}", "top_p"},
    {API_COMPLETION, "{\"prompt\":\"a\",\"top_p\":1.5}", "top_p"},
    {API_COMPLETION, "{\"prompt\":\"a\",\"top_p\":1e-50}", "top_p"}, /* 0 as a float */
    {API_COMPLETION, "{\"prompt\":\"a\",\"repetition_penalty\":1e-300}", "repetition_penalty"},
    {API_COMPLETION, "{\"prompt\":\"a\",\"top_k\":-3}", "top_k"},
    {API_COMPLETION, "{\"prompt\":\"a\",\"min_p\":2}", "min_p"},
    {API_COMPLETION, "{\"prompt\":\"a\",\"presence_penalty\":3}", "presence_penalty"},
    {API_COMPLETION, "{\"prompt\":\"a\",\"frequency_penalty\":-2.5}", "frequency_penalty"},
    {API_COMPLETION, "{\"prompt\":\"a\",\"repetition_penalty\":0}", "repetition_penalty"},
    {API_COMPLETION, "{\"prompt\":\"a\",\"seed\":\"x\"}", "seed"},
    {API_COMPLETION, "{\"prompt\":\"a\",\"seed\":1.5}", "seed"},
    {API_COMPLETION, "{\"prompt\":\"a\",\"n\":2}", "n"},
    {API_COMPLETION, "{\"prompt\":\"a\",\"n\":0}", "n"},
    {API_COMPLETION, "{\"prompt\":\"a\",\"stream\":\"yes\"}", "stream"},
    {API_COMPLETION, "{\"prompt\":\"a\",\"stream\":1}", "stream"},
    {API_COMPLETION, "{\"prompt\":\"a\",\"ignore_eos\":\"yes\"}", "ignore_eos"},
    {API_COMPLETION, "{\"prompt\":\"a\",\"stream_options\":[]}", "stream_options"},
    {API_COMPLETION, "{\"prompt\":\"a\",\"stream_options\":{\"include_usage\":1}}",
     "include_usage"},
    {API_COMPLETION, "{\"prompt\":\"a\",\"stop\":5}", "stop"},
    {API_COMPLETION, "{\"prompt\":\"a\",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", "stop"},
    {API_COMPLETION, "{\"prompt\":\"a\",\"stop\":[\"a\",3]}", "stop"},
    {API_COMPLETION, "{\"prompt\":\"a\",\"stop\":\"\"}", "stop"},
    {API_COMPLETION, "{\"prompt\":\"a\",\"logprobs\":6}", "logprobs"},
    {API_COMPLETION, "{\"prompt\":\"a\",\"logprobs\":true}", "logprobs"},
    {API_CHAT, "{}", "messages"},
    {API_CHAT, "{\"messages\":[]}", "messages"},
    {API_CHAT, "{\"messages\":{}}", "messages"},
    {API_CHAT, "{\"messages\":[5]}", "messages"},
    {API_CHAT, "{\"messages\":[{\"content\":\"hi\"}]}", "messages[0].role"},
    {API_CHAT, "{\"messages\":[{\"role\":\"wizard\",\"content\":\"hi\"}]}", "messages[0].role"},
    {API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":5}]}", "messages[0].content"},
    {API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}",
     "messages[0].content"},
    {API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":1}]}",
     "messages[1].role"},
    {API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"logprobs\":2}",
     "logprobs"},
    {API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"top_logprobs\":21}",
     "top_logprobs"},
};

START_TEST(refuses_each_malformed_body_naming_the_parameter)
{
    const struct bad *b = &bad[_i];
    api_request_t r;
    api_error_t e = {0};
    int rc = api_request_parse(b->body, strlen(b->body), b->kind, 4096, &r, &e);
    ck_assert_msg(rc == -EINVAL, "accepted: %s", b->body);
    ck_assert_int_eq(e.status, 400);
    ck_assert_str_eq(e.type, "invalid_request_error");
    ck_assert_msg(!strcmp(e.param, b->param), "%s: param '%s', want '%s' (%s)", b->body,
                  e.param, b->param, e.message);
    ck_assert(strlen(e.message) > 5);
}
END_TEST

START_TEST(parses_every_field_of_a_completion)
{
    const char *body = "{\"model\":\"m\",\"prompt\":\"Hello\",\"max_tokens\":12,"
                       "\"temperature\":0.5,\"top_p\":0.9,\"top_k\":40,\"min_p\":0.05,"
                       "\"presence_penalty\":0.5,\"frequency_penalty\":-0.5,"
                       "\"repetition_penalty\":1.1,\"seed\":42,\"stop\":[\"\\n\",\"END\"],"
                       "\"stream\":true,\"stream_options\":{\"include_usage\":true},"
                       "\"logprobs\":3,\"user\":\"ignored\",\"n\":1}";
    api_request_t r;
    api_error_t e = {0};
    ck_assert_int_eq(api_request_parse(body, strlen(body), API_COMPLETION, 4096, &r, &e), 0);
    ck_assert_str_eq(r.model, "m");
    ck_assert_str_eq(r.prompt, "Hello");
    ck_assert_uint_eq(r.max_tokens, 12);
    ck_assert_float_eq(r.temperature, 0.5f);
    ck_assert_float_eq_tol(r.top_p, 0.9f, 1e-7);
    ck_assert_uint_eq(r.top_k, 40);
    ck_assert_float_eq_tol(r.min_p, 0.05f, 1e-7);
    ck_assert_float_eq(r.presence_penalty, 0.5f);
    ck_assert_float_eq(r.frequency_penalty, -0.5f);
    ck_assert_float_eq_tol(r.repetition_penalty, 1.1f, 1e-7);
    ck_assert(r.has_seed);
    ck_assert_uint_eq(r.seed, 42);
    ck_assert_uint_eq(r.n_stop, 2);
    ck_assert_str_eq(r.stop[0], "\n");
    ck_assert_str_eq(r.stop[1], "END");
    ck_assert(r.stream && r.include_usage && r.logprobs);
    ck_assert_uint_eq(r.top_logprobs, 3);
    api_request_clear(&r);
}
END_TEST

START_TEST(parses_chat_messages_and_token_prompts)
{
    const char *chat = "{\"messages\":[{\"role\":\"developer\",\"content\":\"be brief\"},"
                       "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
                       "{\"type\":\"text\",\"text\":\"b\"}]},{\"role\":\"assistant\","
                       "\"content\":null}],\"max_completion_tokens\":7,\"logprobs\":true,"
                       "\"top_logprobs\":2}";
    api_request_t r;
    api_error_t e = {0};
    ck_assert_int_eq(api_request_parse(chat, strlen(chat), API_CHAT, 4096, &r, &e), 0);
    ck_assert_uint_eq(r.n_messages, 3);
    ck_assert_str_eq(r.messages[0].role, "system");
    ck_assert_str_eq(r.messages[1].content, "ab");
    ck_assert_str_eq(r.messages[2].content, "");
    ck_assert_uint_eq(r.max_tokens, 7);
    ck_assert(r.logprobs);
    ck_assert_uint_eq(r.top_logprobs, 2);
    ck_assert_float_eq(r.temperature, 1.0f); /* OpenAI's default */
    api_request_clear(&r);

    const char *ids = "{\"prompt\":[1,2,300]}";
    ck_assert_int_eq(api_request_parse(ids, strlen(ids), API_COMPLETION, 4096, &r, &e), 0);
    ck_assert_ptr_null(r.prompt);
    ck_assert_uint_eq(r.n_prompt_ids, 3);
    ck_assert_int_eq(r.prompt_ids[2], 300);
    api_request_clear(&r);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("api");
    TCase *tc = tcase_create("request");
    tcase_add_loop_test(tc, refuses_each_malformed_body_naming_the_parameter, 0,
                        (int)(sizeof(bad) / sizeof(bad[0])));
    tcase_add_test(tc, parses_every_field_of_a_completion);
    tcase_add_test(tc, parses_chat_messages_and_token_prompts);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
