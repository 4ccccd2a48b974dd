#ifndef PIXTRACK_CLIBPQ_SHIM_H
#define PIXTRACK_CLIBPQ_SHIM_H
#include <libpq-fe.h>
#include <errno.h>
#include <poll.h>

/* Waits until the connection's socket is readable or timeout_ms passes (-1: no limit).
 * Returns 1 readable, 0 timed out, -1 error (errno kept). Retries EINTR. */
static inline int pixtrack_pq_wait_readable(const PGconn *conn, int timeout_ms) {
    struct pollfd p = { PQsocket(conn), POLLIN, 0 };
    if (p.fd < 0) return -1;
    for (;;) {
        int n = poll(&p, 1, timeout_ms);
        if (n < 0 && errno == EINTR) continue;
        return n < 0 ? -1 : (n > 0 ? 1 : 0);
    }
}

/* Waits until the socket is readable or writable (while libpq still has output to flush) or
 * timeout_ms passes. Returns a mask: 1 readable, 2 writable; 0 timed out, -1 error. */
static inline int pixtrack_pq_wait_io(const PGconn *conn, int timeout_ms) {
    struct pollfd p = { PQsocket(conn), POLLIN | POLLOUT, 0 };
    if (p.fd < 0) return -1;
    for (;;) {
        int n = poll(&p, 1, timeout_ms);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -1;
        if (n == 0) return 0;
        int mask = 0;
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) mask |= 1;
        if (p.revents & POLLOUT) mask |= 2;
        return mask;
    }
}

/* Notice processor that drops notices ("relation already exists, skipping", …) instead of
 * printing them on stderr, libpq's default. */
static inline void pixtrack_pq_ignore_notice(void *arg, const char *message) {
    (void)arg;
    (void)message;
}

static inline void pixtrack_pq_silence_notices(PGconn *conn) {
    PQsetNoticeProcessor(conn, pixtrack_pq_ignore_notice, NULL);
}
#endif
