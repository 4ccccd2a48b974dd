#define _GNU_SOURCE
#include "CSystemShims.h"
#include <errno.h>
#include <stddef.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>

/*
 * The plugin runner's system-call filter (seccomp, BPF). A gateway plugin needs memory, threads,
 * clocks, files it opens itself and the socket to its host; it talks to the network only through
 * the host's http_request (so the host knows whether a request left). Refused with EPERM, never
 * a kill (a plugin gets an error it can report):
 *   - sockets other than AF_UNIX (no network of its own), execve/execveat (no programs);
 *   - tracing and other processes' memory (ptrace, process_vm_*), kernel extensions (modules,
 *     bpf, kexec), namespaces and mounts, perf, keyrings, userfaultfd, the system clock, reboot,
 *     swap, raw I/O ports, accounting, handle-based opens;
 *   - every call of another ABI than the process's own (x32 on x86-64), where numbers differ.
 * Everything else is allowed: a denylist, so a libc or runtime update does not break plugins.
 */

#if defined(__x86_64__)
#define PT_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define PT_AUDIT_ARCH AUDIT_ARCH_AARCH64
#endif

#define DENY(nr) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM)

int pt_install_plugin_seccomp(void) {
#ifndef PT_AUDIT_ARCH
    return 1; /* no filter for this architecture */
#else
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, PT_AUDIT_ARCH, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
#if defined(__x86_64__)
        BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000u /* __X32_SYSCALL_BIT */, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
#endif
        /* socket(domain, ...): only AF_UNIX. */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_socket, 0, 3),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AF_UNIX, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        DENY(SYS_execve), DENY(SYS_execveat),
        DENY(SYS_ptrace), DENY(SYS_process_vm_readv), DENY(SYS_process_vm_writev),
        DENY(SYS_init_module), DENY(SYS_finit_module), DENY(SYS_delete_module),
        DENY(SYS_bpf), DENY(SYS_kexec_load),
#ifdef SYS_kexec_file_load
        DENY(SYS_kexec_file_load),
#endif
        DENY(SYS_unshare), DENY(SYS_setns), DENY(SYS_mount), DENY(SYS_umount2), DENY(SYS_pivot_root),
        DENY(SYS_chroot), DENY(SYS_perf_event_open), DENY(SYS_keyctl), DENY(SYS_add_key),
        DENY(SYS_request_key), DENY(SYS_userfaultfd), DENY(SYS_settimeofday), DENY(SYS_clock_settime),
        DENY(SYS_clock_adjtime), DENY(SYS_adjtimex), DENY(SYS_reboot), DENY(SYS_swapon), DENY(SYS_swapoff),
        DENY(SYS_acct), DENY(SYS_open_by_handle_at), DENY(SYS_name_to_handle_at), DENY(SYS_quotactl),
#if defined(__x86_64__)
        DENY(SYS_iopl), DENY(SYS_ioperm),
#endif
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = (unsigned short)(sizeof filter / sizeof filter[0]), .filter = filter};
    /* PR_SET_NO_NEW_PRIVS is set first by pt_harden_plugin_runner; a filter requires it. */
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) == 0 ? 0 : -1;
#endif
}
