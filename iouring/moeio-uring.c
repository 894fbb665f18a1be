/* moeio-uring.c: the io_uring backend of the I/O seam (moeio-ops.h).
 *
 * One ring of `depth` entries; the core never has more than depth ops outstanding, so an
 * SQE is always free and, with the CQ ring twice the SQ ring (io_uring_setup(2) default),
 * the CQ cannot overflow. Each op carries its moeio_op_t as user_data.
 *
 * Registered resources are optimizations, never requirements:
 *  - the file (io_uring_register_files(3)): ops then use IOSQE_FIXED_FILE with index 0,
 *    which spares the kernel a file reference per op;
 *  - the pool (io_uring_register_buffers(3)): ops whose buffer lies inside one registered
 *    iovec use IORING_OP_READ_FIXED with its index (io_uring_prep_read_fixed(3): the
 *    buffer need not start at the iovec's start). The kernel refuses iovecs over 1 GiB
 *    (io_buffer_validate: "iov_len > SZ_1G -> -EFAULT"), so moeio.c splits the pool; it
 *    pins the pages and charges them to RLIMIT_MEMLOCK unless CAP_IPC_LOCK, hence ENOMEM
 *    for ordinary users with the 8 MiB default: then ops use IORING_OP_READ.
 * Failures to register are recorded (moeio_uring_*_err) for the caller's note.
 *
 * Errors: io_uring_queue_init returns -errno: -ENOSYS (no io_uring), -EPERM (sysctl
 * kernel.io_uring_disabled=2, or =1 without CAP_SYS_ADMIN / io_uring_group; or a seccomp
 * filter), -ENOMEM. moeio.c decides whether to fall back. */
#include <errno.h>
#include <liburing.h>
#include <stdlib.h>
#include <sys/uio.h>

#include "iouring/moeio-ops.h"

#define SETUP_FLAGS (IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG)

struct moeio_uring {
    struct io_uring ring;
    bool ring_ok;
    int fd;          /* plain fd */
    int file_err;    /* 0 registered, 1 not tried, -errno */
    int buffers_err; /* 0 registered, 1 not tried, -errno */
};

/* READ (5.6) and READ_FIXED (5.1): without READ this is not a usable io_uring. */
static int uring_probe(struct io_uring *ring)
{
    struct io_uring_probe *p = io_uring_get_probe_ring(ring);
    if (!p)
        return 0; /* probing itself is 5.6+; if it fails, let the first read tell */
    int ok = io_uring_opcode_supported(p, IORING_OP_READ);
    io_uring_free_probe(p);
    return ok ? 0 : -ENOTSUP;
}

int moeio_uring_new(int fd, unsigned depth, const struct iovec *iov, unsigned n_iov,
                    bool register_file, moeio_uring_t **ret)
{
    moeio_uring_t *u = calloc(1, sizeof(*u));
    if (!u)
        return -ENOMEM;
    u->fd = fd;
    u->file_err = u->buffers_err = 1;
    /* COOP_TASKRUN (5.19): completions are run when we enter the kernel anyway instead of
     * by an inter-processor interrupt (an IPI is a VM exit on a guest); TASKRUN_FLAG makes
     * liburing's peek enter the kernel when completion work is pending. Older kernels
     * refuse unknown flags with EINVAL: retry plain. */
    int r = io_uring_queue_init(depth, &u->ring, SETUP_FLAGS);
    if (r == -EINVAL)
        r = io_uring_queue_init(depth, &u->ring, 0);
    if (r < 0)
        goto fail;
    u->ring_ok = true;
    r = uring_probe(&u->ring);
    if (r < 0)
        goto fail;
    if (register_file)
        u->file_err = io_uring_register_files(&u->ring, &fd, 1);
    if (n_iov)
        u->buffers_err = io_uring_register_buffers(&u->ring, iov, n_iov);
    *ret = u;
    return 0;
fail:
    moeio_uring_free(u);
    return r;
}

moeio_uring_t *moeio_uring_free(moeio_uring_t *u)
{
    if (!u)
        return NULL;
    if (u->ring_ok)
        io_uring_queue_exit(&u->ring); /* drops registrations with the ring */
    free(u);
    return NULL;
}

int moeio_uring_buffers_err(const moeio_uring_t *u) { return u->buffers_err; }
int moeio_uring_file_err(const moeio_uring_t *u) { return u->file_err; }

static int uring_queue(void *state, moeio_op_t *op)
{
    moeio_uring_t *u = state;
    struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
    if (!sqe)
        return -EBUSY; /* the core broke the depth contract */
    bool fixed_file = u->file_err == 0;
    int fd = fixed_file ? 0 : u->fd;
    if (op->buf_index >= 0 && u->buffers_err == 0)
        io_uring_prep_read_fixed(sqe, fd, op->buf, op->len, op->off, op->buf_index);
    else
        io_uring_prep_read(sqe, fd, op->buf, op->len, op->off);
    if (fixed_file)
        sqe->flags |= IOSQE_FIXED_FILE;
    io_uring_sqe_set_data(sqe, op);
    return 0;
}

static int uring_submit(void *state, unsigned wait_nr)
{
    moeio_uring_t *u = state;
    for (;;) {
        int r = io_uring_submit_and_wait(&u->ring, wait_nr);
        /* A signal interrupts the wait (-EINTR) after the SQEs were consumed; the kernel
         * does not drop them, so simply wait again. */
        if (r == -EINTR)
            continue;
        return r < 0 ? r : 0;
    }
}

static int uring_reap(void *state, moeio_op_t **ret)
{
    moeio_uring_t *u = state;
    struct io_uring_cqe *cqe;
    if (io_uring_peek_cqe(&u->ring, &cqe) != 0)
        return 0;
    moeio_op_t *op = io_uring_cqe_get_data(cqe);
    op->res = cqe->res;
    io_uring_cqe_seen(&u->ring, cqe);
    *ret = op;
    return 1;
}

const moeio_ops_t moeio_uring_ops = {
    .name = "io_uring",
    .queue = uring_queue,
    .submit = uring_submit,
    .reap = uring_reap,
};
