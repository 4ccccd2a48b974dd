#ifndef PIXTRACK_CHIREDIS_SHIM_H
#define PIXTRACK_CHIREDIS_SHIM_H
#include <hiredis/hiredis.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>

/* hiredis 0.14.1 writes with plain write(2): a peer that closed the socket raises SIGPIPE, which
 * kills the process unless it is ignored. These helpers block SIGPIPE on the calling thread for
 * the duration of one hiredis call and swallow a SIGPIPE that call raised (the approach libpq
 * takes), so the library is safe whatever the process's SIGPIPE disposition is. */
typedef struct {
    sigset_t old_mask;
    int was_pending;
} pixtrack_sigpipe_guard;

static inline void pixtrack_sigpipe_enter(pixtrack_sigpipe_guard *g) {
    sigset_t block, pending;
    sigemptyset(&block);
    sigaddset(&block, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &block, &g->old_mask);
    sigemptyset(&pending);
    sigpending(&pending);
    g->was_pending = sigismember(&pending, SIGPIPE) == 1;
}

static inline void pixtrack_sigpipe_leave(pixtrack_sigpipe_guard *g) {
    if (!g->was_pending) {
        sigset_t pending;
        sigemptyset(&pending);
        sigpending(&pending);
        if (sigismember(&pending, SIGPIPE) == 1) {
            sigset_t only;
            struct timespec zero = {0, 0};
            sigemptyset(&only);
            sigaddset(&only, SIGPIPE);
            (void)sigtimedwait(&only, NULL, &zero);
        }
    }
    pthread_sigmask(SIG_SETMASK, &g->old_mask, NULL);
}

/* redisCommandArgv with SIGPIPE guarded; *saved_errno receives errno as the call left it
 * (EAGAIN/EWOULDBLOCK after an I/O error means the socket timeout expired). */
static inline redisReply *pixtrack_redis_command_argv(redisContext *c, int argc, const char **argv,
                                                      const size_t *argvlen, int *saved_errno) {
    pixtrack_sigpipe_guard g;
    pixtrack_sigpipe_enter(&g);
    errno = 0;
    void *reply = redisCommandArgv(c, argc, argv, argvlen);
    *saved_errno = errno;
    pixtrack_sigpipe_leave(&g);
    return (redisReply *)reply;
}

/* redisGetReply with SIGPIPE guarded (it flushes the output buffer first); errno as above. */
static inline int pixtrack_redis_get_reply(redisContext *c, redisReply **reply, int *saved_errno) {
    pixtrack_sigpipe_guard g;
    pixtrack_sigpipe_enter(&g);
    errno = 0;
    void *r = NULL;
    int status = redisGetReply(c, &r);
    *saved_errno = errno;
    pixtrack_sigpipe_leave(&g);
    *reply = (redisReply *)r;
    return status;
}

/* redisConnectWithTimeout taking milliseconds; errno as above (ETIMEDOUT: connect timed out). */
static inline redisContext *pixtrack_redis_connect(const char *host, int port, long timeout_ms,
                                                   int *saved_errno) {
    struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };
    errno = 0;
    redisContext *c = redisConnectWithTimeout(host, port, tv);
    *saved_errno = errno;
    return c;
}

/* redisSetTimeout taking milliseconds (SO_RCVTIMEO/SO_SNDTIMEO on the socket). */
static inline int pixtrack_redis_set_timeout(redisContext *c, long timeout_ms) {
    struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };
    return redisSetTimeout(c, tv);
}

/* The context's error flag and text (errstr is a fixed array Swift imports as a tuple). */
static inline int pixtrack_redis_err(const redisContext *c) { return c->err; }
static inline const char *pixtrack_redis_errstr(const redisContext *c) { return c->errstr; }

/* Takes the descriptor out of a connected context, so that redisFree leaves it open: the
 * non-blocking client connects (and runs AUTH/SELECT) with the blocking context, then drives
 * the descriptor from its own epoll loop. */
static inline int pixtrack_redis_take_fd(redisContext *c) {
    int fd = c->fd;
    c->fd = -1;
    return fd;
}

/* The reader's error text (errstr is a fixed array Swift imports as a tuple). */
static inline const char *pixtrack_reader_errstr(const redisReader *r) { return r->errstr; }
#endif
