/* moectl's pieces shared between its files: the parsed command line, the exit codes, the
 * terminal helpers (colours, the waiting spinner). */
#ifndef MOECTL_H
#define MOECTL_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>

#include "moe/client.h"

/* Exit codes (documented in moectl --help). */
enum {
    EXIT_OK = 0,
    EXIT_ERROR = 1,
    EXIT_USAGE = 2,
    EXIT_NOT_RUNNING = 3,
    EXIT_DENIED = 4,
    EXIT_BAD_REQUEST = 5,
    EXIT_BUSY = 6,
    EXIT_INTERRUPTED = 130,
};

#define MOECTL_MAX_STOP   4
#define MOECTL_MAX_ROUNDS 20

typedef struct moectl {
    const char *socket; /* NULL: $MOED_SOCKET, else the default */
    bool json;
    bool color_out, color_err; /* stdout/stderr are terminals and NO_COLOR is unset */
    bool tty_err;
    bool show_thinking;
    bool watch;
    double interval_s;
    int clients, requests;
    int rounds; /* bench: single/concurrent phase pairs, 1..MOECTL_MAX_ROUNDS */
    const char *system_prompt;
    const char *stop[MOECTL_MAX_STOP];
    moe_client_params params;
    char **args; /* the command's operands */
    int n_args;
} moectl_t;

/* The exit code for a library error. */
int moectl_exit_code(int err);

/* Say err's message on stderr ("moectl: ..."), return its exit code. */
int moectl_fail(const moectl_t *m, moe_client *c, int err);

/* Set by the SIGINT handler, which also cancels the request of every registered client. */
extern volatile sig_atomic_t moectl_interrupted;

#define MOECTL_MAX_CLIENTS 256
/* Register (c) or unregister (NULL) the client in slot i for cancellation on Ctrl-C. */
void moectl_cancel_target(int i, moe_client *c);

/* A spinner on stderr while waiting for the first token (only when stderr is a terminal). */
typedef struct spinner {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool running, stop, color;
    const char *label;
} spinner_t;

void spinner_start(spinner_t *s, bool enabled, bool color, const char *label);
void spinner_stop(spinner_t *s);

/* Colours (only used where moectl_t says the stream is a terminal without NO_COLOR). */
#define DIM   "\033[2m"
#define BOLD  "\033[1m"
#define RED   "\033[31m"
#define GREEN "\033[32m"
#define CYAN  "\033[36m"
#define RESET "\033[0m"

#define MAX_INPUT (1u << 20) /* one prompt or chat message */

/* Prints streamed pieces to stdout: thinking dimmed (or hidden without --show-thinking),
 * the spinner stopped at the first piece. */
typedef struct printer {
    const moectl_t *m;
    spinner_t spin;
    bool in_thinking; /* the last piece printed was thinking */
    bool printed;
    bool newline; /* end with a newline (chat; generate only on a terminal) */
    char last;    /* the last byte printed */
} printer_t;

/* A moe_client_token_fn printing to stdout; ud is a printer_t. */
int moectl_print_piece(void *ud, const char *text, size_t len, unsigned flags);
/* After a request: stop the spinner, reset colours, end the line. */
void moectl_printer_end(printer_t *p);
/* On a terminal, wait with a spinner while moed loads its model. 0 when it answers. */
int moectl_wait_ready(const moectl_t *m, moe_client *c);

int moectl_chat(moectl_t *m, moe_client *c);
int moectl_bench(moectl_t *m);

#endif
