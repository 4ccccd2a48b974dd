#define _GNU_SOURCE
#include "CSystemShims.h"
#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

int pt_forbid_core_dumps(void) {
    struct rlimit none = {0, 0};
    if (setrlimit(RLIMIT_CORE, &none) != 0) return -1;
    return prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}

int pt_accept_nonblocking(int fd, struct sockaddr *addr, socklen_t *len) {
    return accept4(fd, addr, len, SOCK_NONBLOCK | SOCK_CLOEXEC);
}

static int pt_epoll_ctl(int epfd, int op, int fd, uint32_t events) {
    struct epoll_event ev = {0};
    ev.events = events;
    ev.data.fd = fd;
    return epoll_ctl(epfd, op, fd, &ev);
}

int pt_epoll_add(int epfd, int fd, uint32_t events) { return pt_epoll_ctl(epfd, EPOLL_CTL_ADD, fd, events); }
int pt_epoll_mod(int epfd, int fd, uint32_t events) { return pt_epoll_ctl(epfd, EPOLL_CTL_MOD, fd, events); }
int pt_epoll_del(int epfd, int fd) { return pt_epoll_ctl(epfd, EPOLL_CTL_DEL, fd, 0); }

int pt_epoll_wait(int epfd, int *fds, uint32_t *events, int max, int timeout_ms) {
    struct epoll_event evs[256];
    if (max > 256) max = 256;
    int n = epoll_wait(epfd, evs, max, timeout_ms);
    for (int i = 0; i < n; i++) {
        fds[i] = evs[i].data.fd;
        events[i] = evs[i].events;
    }
    return n;
}

int pt_harden_plugin_runner(int keep_fd, long memory_mb) {
    int rc = 0;
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) rc = -1;
    /* Address space is what RLIMIT_AS counts: glibc reserves 64 MiB per malloc arena (up to 8 per
       core), which a limited runner would spend on reservations instead of the plugin's data and
       threads. Two arenas are plenty for a process that only runs one plugin's calls. */
    mallopt(M_ARENA_MAX, 2);
    if (pt_forbid_core_dumps() != 0) rc = -1;
    if (memory_mb > 0) {
        struct rlimit as = {(rlim_t)memory_mb << 20, (rlim_t)memory_mb << 20};
        if (setrlimit(RLIMIT_AS, &as) != 0) rc = -1;
    }
    if (syscall(SYS_close_range, (unsigned)keep_fd + 1, ~0U, 0) != 0) {
        for (int fd = keep_fd + 1; fd < 65536; fd++) close(fd);
    }
    return rc;
}

size_t pt_current_thread_stack_size(void) {
    pthread_attr_t attr;
    size_t size = 0;
    if (pthread_getattr_np(pthread_self(), &attr) != 0) return 0;
    pthread_attr_getstacksize(&attr, &size);
    pthread_attr_destroy(&attr);
    return size;
}

int pt_timerfd_create(void) { return timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC); }

int pt_timerfd_arm(int fd, long ms) {
    struct itimerspec spec = {0};
    if (ms >= 0) {
        /* An all-zero it_value disarms: "at once" is one nanosecond. */
        spec.it_value.tv_sec = ms / 1000;
        spec.it_value.tv_nsec = ms % 1000 * 1000000L;
        if (ms == 0) spec.it_value.tv_nsec = 1;
    }
    return timerfd_settime(fd, 0, &spec, NULL);
}
