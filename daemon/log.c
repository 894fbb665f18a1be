/* Journal-or-stderr logging with structured fields. The choice is made once at start:
 * systemd sets JOURNAL_STREAM=dev:ino of the stream it connected to our stderr; when that
 * matches fstat(2) of fd 2 we send records with sd_journal_send (fields stay fields), else
 * we print "<level> message key=value..." lines to stderr. */
#include "log.h"

#define SD_JOURNAL_SUPPRESS_LOCATION
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <systemd/sd-journal.h>

static int stderr_is_journal(void)
{
    const char *e = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2 || fstat(2, &st) < 0)
        return 0;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void log_init(log_ctx_t *l, int max_level)
{
    l->max_level = max_level;
    l->journal = stderr_is_journal();
}

void log_fields(const log_ctx_t *l, int level, const char *const *fields, const char *fmt, ...)
{
    static const char *const names[] = {"emerg", "alert", "crit", "err",
                                        "warning", "notice", "info", "debug"};
    if (level > l->max_level)
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    if (l->journal) {
        struct iovec iov[16];
        char mbuf[sizeof(msg) + 16], pbuf[32];
        int n = 0;
        snprintf(mbuf, sizeof(mbuf), "MESSAGE=%s", msg);
        snprintf(pbuf, sizeof(pbuf), "PRIORITY=%d", level);
        iov[n++] = (struct iovec){mbuf, strlen(mbuf)};
        iov[n++] = (struct iovec){pbuf, strlen(pbuf)};
        for (size_t i = 0; fields && fields[i] && n < 16; i++)
            iov[n++] = (struct iovec){(void *)fields[i], strlen(fields[i])};
        sd_journal_sendv(iov, n);
        return;
    }
    char line[4096];
    int off = snprintf(line, sizeof(line), "moed: %s: %s", names[level & 7], msg);
    for (size_t i = 0; fields && fields[i] && off > 0 && (size_t)off < sizeof(line); i++)
        off += snprintf(line + off, sizeof(line) - (size_t)off, " %s", fields[i]);
    fprintf(stderr, "%s\n", line);
}
