/*
 * null-echo: the cheapest WebSocket echo server we can write, for measuring petrel-load itself.
 *
 * It is not one of the benchmarked servers and follows only the parts of Benchmarks/PROTOCOL.md
 * that the load generator's cost measurement needs:
 *   --port N      listen on 127.0.0.1:N (0: any free port); --host H to bind elsewhere.
 *   Once listening it prints "null-echo: listening on HOST:PORT" to stdout and flushes.
 *   Every path is an echo path (no /pub, no /sub, no permessage-deflate, no fragmentation
 *   rules, no UTF-8 validation, no message size limit).
 *
 * Per connection: the RFC 6455 opening handshake (Sec-WebSocket-Key -> Sec-WebSocket-Accept,
 * nothing negotiated), then, for each read(): every client frame in the bytes read is unmasked
 * and written back unmasked with the same first byte (FIN, RSV, opcode) - data, ping and close
 * frames alike (a close frame echoed is a valid close reply; the socket is closed once it is
 * written). The frames produced by one read() go out in one write(). A frame may span reads:
 * its header is collected across reads and its payload is unmasked and forwarded as it arrives
 * (the mask phase is carried), so nothing is ever reassembled or copied twice. If the socket
 * does not take everything, the rest is kept and the connection stops reading until EPOLLOUT
 * drained it (back-pressure, bounded memory).
 *
 * One thread, edge-triggered epoll, non-blocking sockets with TCP_NODELAY, one shared 256 KiB
 * read buffer and one shared output buffer. Pin it to its own core (taskset -c 0).
 *
 * Build: make -C Benchmarks/load (gcc -O2 -march=native -Wall -Werror).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define RBUF_SIZE (256 * 1024)
#define HS_CAP 8192
#define MAX_EVENTS 512

typedef struct conn {
    int fd;
    uint8_t upgraded, closing, want_out, in_payload;
    uint8_t is_close;          /* the current frame is a close frame */
    uint8_t hdr[14], hlen;     /* a frame header that spans reads */
    uint8_t key[4];            /* mask of the current frame */
    uint32_t phase;            /* mask offset of the next payload byte */
    uint64_t remaining;        /* payload bytes of the current frame still to come */
    char *hs;                  /* request head so far (until upgraded) */
    size_t hs_len;
    uint8_t *pend;             /* output the socket did not take [pend_off, pend_len) */
    size_t pend_off, pend_len;
} conn;

static uint8_t rbuf[RBUF_SIZE];
static uint8_t obuf[RBUF_SIZE + 64];  /* the output of one read is never longer than its input + 14 */
static int epfd;

#include "ws-accept.h"

/* ---- connections -------------------------------------------------------------------------- */

/* Closes the socket (FIN; the kernel sends RST instead if unread input is left). */
static void conn_free(conn *c)
{
    close(c->fd);  /* also removes it from the epoll set */
    free(c->hs);
    free(c->pend);
    free(c);
}

static void set_events(conn *c, uint32_t ev)
{
    struct epoll_event e = { .events = ev | EPOLLRDHUP | EPOLLET, .data.ptr = c };
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &e);
}

/* Writes out[0, n) (after anything pending); keeps what the socket does not take. -1: dead. */
static int send_out(conn *c, const uint8_t *out, size_t n)
{
    if (c->pend_len > c->pend_off) {  /* not reading while output is pending: cannot happen */
        return -1;
    }
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(c->fd, out + off, n - off);
        if (w > 0) {
            off += (size_t)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && errno == EAGAIN) {
            free(c->pend);
            c->pend = malloc(n - off);
            if (!c->pend)
                return -1;
            memcpy(c->pend, out + off, n - off);
            c->pend_off = 0;
            c->pend_len = n - off;
            c->want_out = 1;
            set_events(c, EPOLLOUT);  /* stop reading until the output is gone */
            return 0;
        } else {
            return -1;
        }
    }
    return 0;
}

static int drain(conn *c)
{
    while (c->pend_off < c->pend_len) {
        ssize_t w = write(c->fd, c->pend + c->pend_off, c->pend_len - c->pend_off);
        if (w > 0)
            c->pend_off += (size_t)w;
        else if (w < 0 && errno == EINTR)
            continue;
        else if (w < 0 && errno == EAGAIN)
            return 0;
        else
            return -1;
    }
    free(c->pend);
    c->pend = NULL;
    c->pend_off = c->pend_len = 0;
    c->want_out = 0;
    if (c->closing)
        return -1;
    set_events(c, EPOLLIN);
    return 0;
}

static inline size_t header_need(const uint8_t *h)
{
    unsigned l = h[1] & 127;
    return 2 + (l == 126 ? 2 : l == 127 ? 8 : 0) + ((h[1] & 0x80) ? 4 : 0);
}

/* Unmasks n payload bytes from p into o, continuing the current frame's mask phase. */
static inline void unmask(conn *c, uint8_t *o, const uint8_t *p, size_t n)
{
    uint32_t ph = c->phase;
    size_t i = 0;
    if (n >= 8) {
        uint8_t k8[8];
        for (int j = 0; j < 8; j++)
            k8[j] = c->key[(ph + (uint32_t)j) & 3];
        uint64_t k;
        memcpy(&k, k8, 8);
        for (; i + 8 <= n; i += 8) {
            uint64_t v;
            memcpy(&v, p + i, 8);
            v ^= k;
            memcpy(o + i, &v, 8);
        }
    }
    for (; i < n; i++)
        o[i] = p[i] ^ c->key[(ph + (uint32_t)i) & 3];
    c->phase = (uint32_t)((ph + n) & 3);
}

/* Turns the client frames in p[0, n) into unmasked frames in obuf; returns the bytes produced
 * or -1 on a protocol error. Sets c->closing after a close frame (anything after it is dropped). */
static long frames(conn *c, const uint8_t *p, size_t n)
{
    const uint8_t *end = p + n;
    uint8_t *o = obuf;
    while (p < end && !c->closing) {
        if (!c->in_payload) {
            const uint8_t *h;
            if (c->hlen == 0 && end - p >= 2 && (size_t)(end - p) >= header_need(p)) {
                h = p;
                p += header_need(p);
            } else {
                while (p < end && (c->hlen < 2 || c->hlen < header_need(c->hdr)))
                    c->hdr[c->hlen++] = *p++;
                if (c->hlen < 2 || c->hlen < header_need(c->hdr))
                    break;
                h = c->hdr;
                c->hlen = 0;
            }
            if (!(h[1] & 0x80))
                return -1;  /* client frames must be masked */
            unsigned l7 = h[1] & 127;
            size_t hl = 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0);
            uint64_t len = l7;
            if (l7 == 126)
                len = (uint64_t)h[2] << 8 | h[3];
            else if (l7 == 127)
                for (int i = 0; i < 8; i++)
                    len = (i ? len << 8 : 0) | h[2 + i];
            memcpy(o, h, hl);
            o[1] &= 0x7f;  /* no mask */
            o += hl;
            memcpy(c->key, h + hl, 4);
            c->phase = 0;
            c->is_close = (h[0] & 15) == 8;  /* echo the close frame, then close */
            c->remaining = len;
            c->in_payload = len > 0;
            if (!len && c->is_close)
                c->closing = 1;
            continue;
        }
        size_t k = c->remaining < (uint64_t)(end - p) ? (size_t)c->remaining : (size_t)(end - p);
        unmask(c, o, p, k);
        o += k;
        p += k;
        c->remaining -= k;
        if (c->remaining == 0) {
            c->in_payload = 0;
            if (c->is_close)
                c->closing = 1;
        }
    }
    return (long)(o - obuf);
}

/* The opening handshake. 0: waiting for more, 1: upgraded (*used bytes of the head), -1: fail. */
static int handshake(conn *c, const uint8_t *p, size_t n, size_t *used)
{
    if (!c->hs && !(c->hs = malloc(HS_CAP + 1)))
        return -1;
    size_t old = c->hs_len, take = n < HS_CAP - old ? n : HS_CAP - old;
    memcpy(c->hs + old, p, take);
    c->hs_len += take;
    c->hs[c->hs_len] = 0;
    char *e = strstr(c->hs + (old > 3 ? old - 3 : 0), "\r\n\r\n");
    if (!e)
        return c->hs_len == HS_CAP ? -1 : 0;
    size_t head = (size_t)(e - c->hs) + 4;
    *used = head - old;
    e[2] = 0;
    const char *key = NULL;
    size_t key_len = 0;
    for (char *line = strstr(c->hs, "\r\n"); line && line[2]; line = strstr(line + 2, "\r\n")) {
        char *s = line + 2;
        if (!strncasecmp(s, "sec-websocket-key:", 18)) {
            s += 18;
            while (*s == ' ' || *s == '\t')
                s++;
            char *t = s;
            while (*t && *t != '\r' && *t != ' ' && *t != '\t')
                t++;
            key = s;
            key_len = (size_t)(t - s);
            break;
        }
    }
    if (!key || key_len == 0 || key_len > 64)
        return -1;
    char buf[128], accept[32], resp[256];
    memcpy(buf, key, key_len);
    memcpy(buf + key_len, "258EAFA5-E914-47DA-95CA-C5AB0DC85B11", 36);
    uint8_t digest[20];
    sha1(buf, key_len + 36, digest);
    base64(digest, 20, accept);
    int rl = snprintf(resp, sizeof resp,
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Accept: %s\r\n\r\n", accept);
    free(c->hs);
    c->hs = NULL;
    c->hs_len = 0;
    c->upgraded = 1;
    if (write(c->fd, resp, (size_t)rl) != rl)  /* a fresh socket always takes 129 bytes */
        return -1;
    return 1;
}

/* Edge-triggered: reads until a read comes back short (it took all there was; later data
 * raises a new edge) or the output backs up (EPOLLOUT, then EPOLLIN again re-arms the edge). */
static void on_readable(conn *c, uint32_t ev)
{
    /* With EOF or an error reported, a short read may leave them unread and no new edge would
     * come: read until EOF, the error or EAGAIN. */
    int to_end = (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
    for (;;) {
        ssize_t n = read(c->fd, rbuf, RBUF_SIZE);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) {
            conn_free(c);
            return;
        }
        const uint8_t *p = rbuf;
        size_t len = (size_t)n;
        if (!c->upgraded) {
            size_t used = 0;
            int r = handshake(c, p, len, &used);
            if (r < 0) {
                conn_free(c);
                return;
            }
            if (r == 0) {  /* the request head is not complete yet */
                if ((size_t)n < RBUF_SIZE && !to_end)
                    return;
                continue;
            }
            p += used;
            len -= used;
        }
        if (len) {
            long out = frames(c, p, len);
            if (out < 0 || (out > 0 && send_out(c, obuf, (size_t)out) < 0)) {
                conn_free(c);
                return;
            }
        }
        if (c->closing && !c->want_out) {
            conn_free(c);
            return;
        }
        if (((size_t)n < RBUF_SIZE && !to_end) || c->want_out)
            return;
    }
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    int port = 9001;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--port") && i + 1 < argc)
            port = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--host") && i + 1 < argc)
            host = argv[++i];
        else {
            fprintf(stderr, "usage: null-echo [--host H] [--port N]   (N = 0: any free port)\n");
            return strcmp(argv[i], "--help") && strcmp(argv[i], "-h") ? 2 : 0;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    if (ls < 0 || inet_pton(AF_INET, host, &a.sin_addr) != 1 || bind(ls, (struct sockaddr *)&a, sizeof a) < 0
        || listen(ls, 4096) < 0) {
        perror("null-echo: listen");
        return 1;
    }
    socklen_t al = sizeof a;
    getsockname(ls, (struct sockaddr *)&a, &al);
    printf("null-echo: listening on %s:%d\n", host, ntohs(a.sin_port));
    fflush(stdout);

    epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event le = { .events = EPOLLIN, .data.ptr = NULL };
    epoll_ctl(epfd, EPOLL_CTL_ADD, ls, &le);
    static struct epoll_event evs[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(epfd, evs, MAX_EVENTS, -1);
        if (n < 0 && errno != EINTR) {
            perror("null-echo: epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            if (!c) {
                for (;;) {
                    int fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0)
                        break;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    c = calloc(1, sizeof *c);
                    if (!c) {
                        close(fd);
                        continue;
                    }
                    c->fd = fd;
                    struct epoll_event e = { .events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.ptr = c };
                    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &e);
                }
                continue;
            }
            if (c->want_out) {
                if ((evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) && drain(c) < 0)
                    conn_free(c);
            } else if (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)) {
                on_readable(c, evs[i].events);
            }
        }
    }
}
