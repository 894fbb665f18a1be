/* moeio-pread.c: the pread backend of the I/O seam (moeio-ops.h), for hosts where
 * io_uring is refused (kernel.io_uring_disabled, a container's seccomp profile, ENOSYS).
 *
 * A fixed pool of worker threads (a few, never one per read: depth comes from having
 * several preads in the kernel at once, not from threads). queue() appends to a private
 * list without locking; submit() moves that list to the shared work list under `lock`
 * and wakes workers; each worker does one pread(2) per op (no loop: short reads, EINTR
 * and EAGAIN go back to moeio.c like io_uring's, so both backends share one policy) and
 * appends the op to the done list. reap() pops from the done list.
 *
 * Invariants: an op is on exactly one of {local, work, a worker's hands, done} lists;
 * `lock` protects work, done, n_done and stop; workers block on `work_cv`, a waiting
 * submit() on `done_cv`. free() is only called with nothing in flight (moeio_free drains),
 * sets stop and joins. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "iouring/moeio-ops.h"

typedef struct op_list {
    moeio_op_t *head, *tail;
} op_list_t;

struct moeio_pread {
    int fd;
    unsigned n_threads, n_started;
    pthread_t *threads;
    pthread_mutex_t lock;
    pthread_cond_t work_cv, done_cv;
    op_list_t local; /* queued, not yet submitted: submitter only */
    op_list_t work;  /* submitted, not yet taken: under lock */
    op_list_t done;  /* finished, not yet reaped: under lock */
    unsigned n_done;
    bool stop;
};

static void list_push(op_list_t *l, moeio_op_t *op)
{
    op->next = NULL;
    if (l->tail)
        l->tail->next = op;
    else
        l->head = op;
    l->tail = op;
}

static moeio_op_t *list_pop(op_list_t *l)
{
    moeio_op_t *op = l->head;
    if (op) {
        l->head = op->next;
        if (!l->head)
            l->tail = NULL;
    }
    return op;
}

static void list_append(op_list_t *l, op_list_t *other)
{
    if (!other->head)
        return;
    if (l->tail)
        l->tail->next = other->head;
    else
        l->head = other->head;
    l->tail = other->tail;
    *other = (op_list_t){0};
}

static void *pread_worker(void *arg)
{
    moeio_pread_t *p = arg;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->stop && !p->work.head)
            pthread_cond_wait(&p->work_cv, &p->lock);
        if (p->stop)
            break;
        moeio_op_t *op = list_pop(&p->work);
        pthread_mutex_unlock(&p->lock);
        ssize_t n = pread(p->fd, op->buf, op->len, (off_t)op->off);
        op->res = n < 0 ? -errno : (int)n;
        pthread_mutex_lock(&p->lock);
        list_push(&p->done, op);
        p->n_done++;
        pthread_cond_signal(&p->done_cv);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

int moeio_pread_new(int fd, unsigned threads, moeio_pread_t **ret)
{
    moeio_pread_t *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->fd = fd;
    p->n_threads = threads;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->work_cv, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    int r = -ENOMEM;
    p->threads = calloc(threads, sizeof(*p->threads));
    if (!p->threads)
        goto fail;
    for (; p->n_started < threads; p->n_started++) {
        r = -pthread_create(&p->threads[p->n_started], NULL, pread_worker, p);
        if (r < 0)
            goto fail;
    }
    *ret = p;
    return 0;
fail:
    moeio_pread_free(p);
    return r;
}

moeio_pread_t *moeio_pread_free(moeio_pread_t *p)
{
    if (!p)
        return NULL;
    pthread_mutex_lock(&p->lock);
    p->stop = true;
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->lock);
    for (unsigned i = 0; i < p->n_started; i++)
        pthread_join(p->threads[i], NULL);
    free(p->threads);
    pthread_cond_destroy(&p->done_cv);
    pthread_cond_destroy(&p->work_cv);
    pthread_mutex_destroy(&p->lock);
    free(p);
    return NULL;
}

static int pread_queue(void *state, moeio_op_t *op)
{
    moeio_pread_t *p = state;
    list_push(&p->local, op);
    return 0;
}

static int pread_submit(void *state, unsigned wait_nr)
{
    moeio_pread_t *p = state;
    pthread_mutex_lock(&p->lock);
    if (p->local.head) {
        list_append(&p->work, &p->local);
        pthread_cond_broadcast(&p->work_cv);
    }
    while (p->n_done < wait_nr)
        pthread_cond_wait(&p->done_cv, &p->lock);
    pthread_mutex_unlock(&p->lock);
    return 0;
}

static int pread_reap(void *state, moeio_op_t **ret)
{
    moeio_pread_t *p = state;
    pthread_mutex_lock(&p->lock);
    moeio_op_t *op = list_pop(&p->done);
    if (op)
        p->n_done--;
    pthread_mutex_unlock(&p->lock);
    if (!op)
        return 0;
    *ret = op;
    return 1;
}

const moeio_ops_t moeio_pread_ops = {
    .name = "pread",
    .queue = pread_queue,
    .submit = pread_submit,
    .reap = pread_reap,
};
