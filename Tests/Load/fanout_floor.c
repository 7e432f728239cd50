/* The floor of the stock load check: what the kernel alone charges for its traffic on this
 * machine today. N loopback TCP connections; a sender thread pinned to CPU 0 sends one
 * message of SIZE bytes to every connection RATE times a second (one send() each, the least
 * any server can do); a reader thread pinned to CPU 1 drains them with epoll. Prints one JSON
 * line with the sender's CPU over the window, in cores (user + system, as /proc counts the
 * server's), and whether every byte arrived.
 *
 *   fanout_floor [--connections 1100] [--rate 100] [--size 150] [--seconds 10]
 *
 * Tests/Load/stock_load.py runs it before the server, so that the server's CPU is judged
 * against this floor measured in the same run (docs/examples.md says why).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int connections = 1100, rate = 100, size = 150;
static double seconds = 10;
static int *senders, *readers;
static atomic_int stop_reading;
static atomic_llong received;

static double now(clockid_t clock) {
    struct timespec t;
    clock_gettime(clock, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void pin(int cpu) {
    if (sysconf(_SC_NPROCESSORS_ONLN) < 2) return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

static void *reader(void *unused) {
    (void)unused;
    pin(1);
    int ep = epoll_create1(0);
    if (ep < 0) die("epoll_create1");
    for (int i = 0; i < connections; i++) {
        struct epoll_event e = {.events = EPOLLIN, .data.fd = readers[i]};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, readers[i], &e) < 0) die("epoll_ctl");
    }
    struct epoll_event events[256];
    char buffer[65536];
    while (!atomic_load(&stop_reading)) {
        int n = epoll_wait(ep, events, 256, 100);
        for (int k = 0; k < n; k++) {
            ssize_t r;
            while ((r = recv(events[k].data.fd, buffer, sizeof buffer, MSG_DONTWAIT)) > 0) atomic_fetch_add(&received, r);
        }
    }
    close(ep);
    return NULL;
}

int main(int argc, char **argv) {
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--connections")) connections = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--rate")) rate = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--size")) size = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--seconds")) seconds = atof(argv[i + 1]);
        else {
            fprintf(stderr, "fanout_floor: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (connections < 1 || rate < 1 || size < 1 || seconds <= 0) {
        fprintf(stderr, "fanout_floor: every option must be positive\n");
        return 2;
    }
    senders = calloc((size_t)connections, sizeof *senders);
    readers = calloc((size_t)connections, sizeof *readers);
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t length = sizeof address;
    if (bind(listener, (struct sockaddr *)&address, sizeof address) < 0 || listen(listener, 128) < 0 ||
        getsockname(listener, (struct sockaddr *)&address, &length) < 0)
        die("listen");
    for (int i = 0; i < connections; i++) {
        senders[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (senders[i] < 0) die("socket");
        if (connect(senders[i], (struct sockaddr *)&address, sizeof address) < 0) die("connect");
        readers[i] = accept(listener, NULL, NULL);
        if (readers[i] < 0) die("accept");
        int one = 1;  // as a WebSocket server does: every message leaves at once
        setsockopt(senders[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    close(listener);

    pthread_t thread;
    pthread_create(&thread, NULL, reader, NULL);
    pin(0);
    char *message = malloc((size_t)size);
    memset(message, 'x', (size_t)size);
    long long sent = 0, refused = 0;
    const double interval = 1.0 / rate;
    const double start = now(CLOCK_MONOTONIC), cpu_start = now(CLOCK_THREAD_CPUTIME_ID);
    double next = start;
    while (next - start < seconds) {
        for (int i = 0; i < connections; i++) {
            ssize_t w = send(senders[i], message, (size_t)size, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (w == size) sent += w;
            else refused++;  // a full buffer: the reader fell behind (reported, never hidden)
        }
        next += interval;
        double wait = next - now(CLOCK_MONOTONIC);
        if (wait > 0) {
            struct timespec t = {.tv_sec = (time_t)wait, .tv_nsec = (long)((wait - (double)(time_t)wait) * 1e9)};
            nanosleep(&t, NULL);
        }
    }
    const double wall = now(CLOCK_MONOTONIC) - start, cpu = now(CLOCK_THREAD_CPUTIME_ID) - cpu_start;
    for (int waited = 0; atomic_load(&received) < sent && waited < 5000; waited += 10) usleep(10000);
    atomic_store(&stop_reading, 1);
    pthread_join(thread, NULL);
    printf("{\"connections\":%d,\"rate\":%d,\"size\":%d,\"messages\":%lld,\"refused\":%lld,\"received\":%lld,"
           "\"floorCores\":%.3f,\"behindSchedule\":%s}\n",
           connections, rate, size, sent / size, refused, (long long)atomic_load(&received), cpu / wall,
           wall > seconds * 1.05 ? "true" : "false");
    return refused == 0 && atomic_load(&received) == sent ? 0 : 1;
}
