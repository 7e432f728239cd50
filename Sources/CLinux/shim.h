#ifndef PETREL_CLINUX_SHIM_H
#define PETREL_CLINUX_SHIM_H
/* Linux APIs that Swift's Glibc module does not bring in, and thin wrappers for the ones whose
   flags Swift imports awkwardly (enum-typed socket flags, packed epoll_event). */
#include <sys/random.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/resource.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <unistd.h>
#include <fcntl.h>
#include <errno.h>
#include <string.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

/* Relaxed atomic loads and stores of one word in plain memory: for fields one thread writes
   and others may read only to learn that they are not theirs (PetrelC's callback slots). */
static inline uint64_t petrel_load_relaxed(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void petrel_store_relaxed(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }

static inline int petrel_socket(int family) {
    return socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
}

static inline int petrel_accept(int fd, struct sockaddr_storage *addr, socklen_t *len) {
    return accept4(fd, (struct sockaddr *)addr, len, SOCK_NONBLOCK | SOCK_CLOEXEC);
}

static inline int petrel_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = events;
    ev.data.u64 = data;
    return epoll_ctl(epfd, op, fd, &ev);
}

/* epoll_event is packed on x86_64; these read it without Swift having to know. */
static inline size_t petrel_epoll_event_size(void) { return sizeof(struct epoll_event); }
static inline uint32_t petrel_epoll_event_events(const struct epoll_event *events, int i) { return events[i].events; }
static inline uint64_t petrel_epoll_event_data(const struct epoll_event *events, int i) { return events[i].data.u64; }

static inline int petrel_eventfd(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

static inline int petrel_timerfd(long interval_ms) {
    int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (fd < 0) return fd;
    struct itimerspec spec;
    spec.it_interval.tv_sec = interval_ms / 1000;
    spec.it_interval.tv_nsec = (interval_ms % 1000) * 1000000L;
    spec.it_value = spec.it_interval;
    if (timerfd_settime(fd, 0, &spec, NULL) < 0) { close(fd); return -1; }
    return fd;
}

static inline int petrel_set_int_option(int fd, int level, int name, int value) {
    return setsockopt(fd, level, name, &value, sizeof value);
}

/* The loops' per-message system calls (read, send, sendmsg) enter the kernel directly on
   x86-64: glibc's wrappers are cancellation points, and switch asynchronous cancellation on and
   off around every call (about 20 instructions each); the loops never use cancellation. The
   result is the same as the wrapper's: -1 with errno set on failure. Elsewhere (other
   architectures, x32, and builds that define PETREL_LIBC_SYSCALLS, as the sanitizer builds
   do), glibc. */
#if defined(__x86_64__) && !defined(__ILP32__) && !defined(PETREL_LIBC_SYSCALLS)
static inline long petrel_syscall3(long number, long a, long b, long c) {
    long result;
    __asm__ volatile ("syscall" : "=a"(result) : "a"(number), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return result;
}
static inline long petrel_syscall6(long number, long a, long b, long c, long d, long e, long f) {
    long result;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    __asm__ volatile ("syscall" : "=a"(result) : "a"(number), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                      : "rcx", "r11", "memory");
    return result;
}
static inline ssize_t petrel_syscall_result(long r) {
    if (r < 0 && r > -4096) { errno = (int)-r; return -1; }
    return (ssize_t)r;
}
static inline ssize_t petrel_read(int fd, void *buf, size_t len) {
    return petrel_syscall_result(petrel_syscall3(SYS_read, fd, (long)buf, (long)len));
}
/* MSG_NOSIGNAL: a write to a reset connection returns EPIPE instead of raising SIGPIPE. */
static inline ssize_t petrel_send(int fd, const void *buf, size_t len) {
    return petrel_syscall_result(petrel_syscall6(SYS_sendto, fd, (long)buf, (long)len, MSG_NOSIGNAL, 0, 0));
}
/* writev without SIGPIPE. */
static inline ssize_t petrel_sendv(int fd, const struct iovec *iov, int count) {
    struct msghdr m;
    memset(&m, 0, sizeof m);
    m.msg_iov = (struct iovec *)iov;
    m.msg_iovlen = (size_t)count;
    return petrel_syscall_result(petrel_syscall3(SYS_sendmsg, fd, (long)&m, MSG_NOSIGNAL));
}
#else
static inline ssize_t petrel_read(int fd, void *buf, size_t len) { return read(fd, buf, len); }
static inline ssize_t petrel_send(int fd, const void *buf, size_t len) { return send(fd, buf, len, MSG_NOSIGNAL); }
static inline ssize_t petrel_sendv(int fd, const struct iovec *iov, int count) {
    struct msghdr m;
    memset(&m, 0, sizeof m);
    m.msg_iov = (struct iovec *)iov;
    m.msg_iovlen = (size_t)count;
    return sendmsg(fd, &m, MSG_NOSIGNAL);
}
#endif

static inline uint64_t petrel_monotonic_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static inline uint64_t petrel_monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Names the calling thread (at most 15 bytes are kept), as top -H and the comm file of /proc/PID/task show. */
static inline void petrel_set_thread_name(const char *name) { prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0); }

/* The kernel's id of the calling thread. */
static inline int32_t petrel_gettid(void) { return (int32_t)syscall(SYS_gettid); }

#endif
