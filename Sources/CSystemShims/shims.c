#define _GNU_SOURCE
#include "CSystemShims.h"
#include <errno.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/resource.h>

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
