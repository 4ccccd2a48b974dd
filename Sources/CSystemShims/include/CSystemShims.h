#ifndef PIXTRACK_CSYSTEMSHIMS_H
#define PIXTRACK_CSYSTEMSHIMS_H
/* Linux calls that Swift's Glibc module does not export (epoll, eventfd, timerfd, accept4). */
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

/// accept4(2) with SOCK_NONBLOCK | SOCK_CLOEXEC; glibc declares accept4 only under _GNU_SOURCE.
int pt_accept_nonblocking(int fd, struct sockaddr *addr, socklen_t *len);

/// epoll_event is packed on x86_64; these keep Swift away from its layout.
int pt_epoll_add(int epfd, int fd, uint32_t events);
int pt_epoll_mod(int epfd, int fd, uint32_t events);
int pt_epoll_del(int epfd, int fd);
/// Waits for up to `max` events; writes their fds and event masks to the two arrays.
int pt_epoll_wait(int epfd, int *fds, uint32_t *events, int max, int timeout_ms);

/// A non-blocking, close-on-exec timerfd on CLOCK_MONOTONIC; -1 with errno set on failure.
int pt_timerfd_create(void);
/// Arms `fd` to expire once, `ms` milliseconds from now (0: at once); a negative `ms` disarms it.
/// Its 8-byte expiry count is read like an eventfd's (`Syscalls.drainEventFD`).
int pt_timerfd_arm(int fd, long ms);

/// Process hardening: no core files (RLIMIT_CORE 0) and not dumpable (PR_SET_DUMPABLE 0: no core,
/// no ptrace attach or /proc/<pid>/mem by other users), because the memory of pixtrackd holds
/// credentials and tokens. 0 on success, else -1 with errno set.
int pt_forbid_core_dumps(void);
/// A plugin runner gives up what a plugin does not need: it gains no privileges
/// (PR_SET_NO_NEW_PRIVS), is not dumpable and writes no core, has at most `memory_mb` MiB of
/// address space (RLIMIT_AS; 0: no limit), and keeps no descriptor above `keep_fd`. 0 on success,
/// -1 with errno set when a step failed (the later steps still ran).
int pt_harden_plugin_runner(int keep_fd, long memory_mb);
/// The plugin runner's seccomp filter (seccomp.c says what it refuses): 0 installed, 1 no filter
/// for this architecture, -1 refused by the kernel. Call after `pt_harden_plugin_runner`.
int pt_install_plugin_seccomp(void);

/// The calling thread's stack size in bytes (pthread_getattr_np), 0 when unknown.
size_t pt_current_thread_stack_size(void);

#endif
