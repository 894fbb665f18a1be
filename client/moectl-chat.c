/* moectl-chat.c: `moectl chat`, an interactive session with moed.
 *
 * The conversation (system prompt, then user and assistant turns) lives in a history_t and
 * goes with every request, so the model sees it all. Input is read a line at a time; a line
 * ending in a backslash continues the message. Ctrl-C during an answer cancels that request
 * (the SIGINT handler calls moe_client_cancel()) and drops the unanswered question; Ctrl-C at
 * the prompt gives a fresh prompt; Ctrl-D or /exit ends the session. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "moectl.h"

/* The chat's conversation: messages with owned strings. */
typedef struct history {
    moe_client_message *msg;
    size_t n, cap;
} history_t;

static int history_add(history_t *h, const char *role, const char *content)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 16;
        moe_client_message *t = realloc(h->msg, cap * sizeof(*t));
        if (!t)
            return -ENOMEM;
        h->msg = t;
        h->cap = cap;
    }
    char *s = strdup(content);
    if (!s)
        return -ENOMEM;
    h->msg[h->n++] = (moe_client_message){.role = role, .content = s};
    return 0;
}

static void history_reset(history_t *h, const char *system_prompt)
{
    for (size_t i = 0; i < h->n; i++)
        free((char *)h->msg[i].content);
    h->n = 0;
    if (system_prompt)
        history_add(h, "system", system_prompt);
}

/* Read one message: lines ending in a backslash continue. 1 = got one, 0 = end of input,
 * -EINTR = Ctrl-C at the prompt. */
static int read_message(const moectl_t *m, char **ret)
{
    size_t len = 0;
    char *msg = NULL;
    bool first = true;
    for (;;) {
        if (isatty(STDIN_FILENO)) {
            fputs(first ? (m->color_out ? BOLD GREEN "> " RESET : "> ")
                        : (m->color_out ? DIM ". " RESET : ". "),
                  stdout);
            fflush(stdout);
        }
        char *line = NULL;
        size_t cap = 0;
        ssize_t n = getline(&line, &cap, stdin);
        if (n < 0) {
            bool intr = ferror(stdin) && moectl_interrupted;
            clearerr(stdin);
            free(line);
            free(msg);
            return intr ? -EINTR : 0;
        }
        if (n > 0 && line[n - 1] == '\n')
            line[--n] = '\0';
        bool more = n > 0 && line[n - 1] == '\\';
        if (more)
            line[--n] = '\0';
        if (len + (size_t)n + 2 > MAX_INPUT) {
            free(line);
            free(msg);
            return -E2BIG;
        }
        char *t = realloc(msg, len + (size_t)n + 2);
        if (!t) {
            free(line);
            free(msg);
            return -ENOMEM;
        }
        msg = t;
        if (!first)
            msg[len++] = '\n';
        memcpy(msg + len, line, (size_t)n);
        len += (size_t)n;
        msg[len] = '\0';
        free(line);
        first = false;
        if (!more) {
            *ret = msg;
            return 1;
        }
    }
}

static void chat_help(void)
{
    puts("Commands: /reset (forget the conversation), /system TEXT (set the system prompt and\n"
         "reset), /exit. End a line with \\ to continue it. Ctrl-C stops an answer; Ctrl-D\n"
         "or /exit leaves.");
}

int moectl_chat(moectl_t *m, moe_client *c)
{
    history_t h = {0};
    char *system_prompt = m->system_prompt ? strdup(m->system_prompt) : NULL;
    history_reset(&h, system_prompt);
    int rc = moectl_wait_ready(m, c);
    if (rc < 0) {
        free(system_prompt);
        history_reset(&h, NULL);
        free(h.msg);
        return moectl_fail(m, c, rc);
    }
    if (isatty(STDIN_FILENO))
        printf("%sChatting with moed on %s. /exit to leave, /help for commands.%s\n",
               m->color_out ? DIM : "", moe_client_socket_path(c), m->color_out ? RESET : "");
    int code = EXIT_OK;
    for (;;) {
        moectl_interrupted = 0;
        char *line;
        rc = read_message(m, &line);
        if (rc == -EINTR) {
            fputs("\n", stdout);
            continue;
        }
        if (rc == -E2BIG || rc == -ENOMEM) {
            fprintf(stderr, "moectl: %s\n", strerror(-rc));
            continue;
        }
        if (rc == 0) {
            if (isatty(STDIN_FILENO))
                fputs("\n", stdout);
            break;
        }
        if (line[0] == '\0') {
            free(line);
            continue;
        }
        if (strcmp(line, "/exit") == 0 || strcmp(line, "/quit") == 0) {
            free(line);
            break;
        }
        if (strcmp(line, "/help") == 0) {
            chat_help();
            free(line);
            continue;
        }
        if (strcmp(line, "/reset") == 0 || strncmp(line, "/system", 7) == 0) {
            if (line[1] == 's') {
                const char *text = line + 7;
                while (*text == ' ')
                    text++;
                free(system_prompt);
                system_prompt = *text ? strdup(text) : NULL;
            }
            history_reset(&h, system_prompt);
            printf("%s(conversation reset%s)%s\n", m->color_out ? DIM : "",
                   system_prompt ? ", system prompt set" : "", m->color_out ? RESET : "");
            free(line);
            continue;
        }
        if (line[0] == '/' && !strchr(line, ' ')) {
            printf("unknown command %s (/help lists them)\n", line);
            free(line);
            continue;
        }
        rc = history_add(&h, "user", line);
        free(line);
        if (rc < 0)
            return moectl_fail(m, NULL, rc);

        printer_t p = {.m = m, .newline = true};
        moe_client_result r;
        spinner_start(&p.spin, m->tty_err, m->color_err, "thinking");
        rc = moe_client_chat(c, h.msg, h.n, &m->params, moectl_print_piece, &p, &r);
        moectl_printer_end(&p);
        if (rc == 0) {
            history_add(&h, "assistant", r.text);
            moe_client_result_clear(&r);
        } else if (rc == -ECANCELED) {
            printf("%s[stopped]%s\n", m->color_out ? DIM : "", m->color_out ? RESET : "");
            /* The question stays unanswered: drop it so the next one stands alone. */
            free((char *)h.msg[--h.n].content);
        } else {
            code = moectl_fail(m, c, rc);
            free((char *)h.msg[--h.n].content);
            if (code == EXIT_NOT_RUNNING || code == EXIT_DENIED)
                break;
            code = EXIT_OK;
        }
        fflush(stdout);
    }
    history_reset(&h, NULL);
    free(h.msg);
    free(system_prompt);
    return code;
}
