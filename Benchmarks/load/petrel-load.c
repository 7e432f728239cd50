/*
 * petrel-load: the WebSocket load generator of Petrel's benchmarks.
 *
 * It drives any server that follows Benchmarks/PROTOCOL.md (paths /, /sub and /pub, payloads
 * that start with a 16 hex digit CLOCK_MONOTONIC nanosecond stamp; /stomp for --stomp) and
 * prints exactly one JSON line on stdout. Errors and diagnostics go to stderr; the exit status
 * is nonzero on failure.
 *
 * Build:  make -C Benchmarks/load            (gcc -O2 -march=native -Wall -Werror, -lz -lm)
 * Run, e.g.:
 *   petrel-load --port 9301 --mode echo --conns 100 --window 16 --size 20 --seconds 5
 *   petrel-load --port 9301 --mode echo --conns 10 --window 4 --size 16384 --binary
 *   petrel-load --port 9301 --mode echo --conns 50 --window 8 --deflate [--client-context] [--ticks FILE]
 *   petrel-load --port 9301 --mode fanout --conns 1000 --messages 1000 --size 100 --interval-us 1000
 *   petrel-load --port 9301 --mode fanout --conns 10000 --messages 200 --size 100 --stomp
 *   petrel-load --port 9301 --mode handshake --conns 50 --seconds 5
 *   petrel-load --port 9301 --mode idle --conns 10000 --server-pid PID [--deflate]
 * (`petrel-load --help` lists every flag.)
 *
 * Modes:
 *   echo       each connection keeps --window messages outstanding; an echo received sends the
 *              next one. Reports echoes/s, MB/s (payload, one way), latency percentiles, cpu.
 *              With --deflate: permessage-deflate, stock-tick JSON payloads compressed once at
 *              start-up, replies inflated and checked by length (no latency figures). Each line
 *              is compressed on its own, unless --client-context: then the lines are one
 *              compressed stream, as a browser keeps its context, sent in order from the first
 *              by every connection (the first line refers to nothing before it, so the stream
 *              may start over; a server that answers client_no_context_takeover or a client
 *              window under 15 bits is refused).
 *   fanout     --conns subscribers on /sub, one publisher on /pub sending --messages stamped
 *              messages every --interval-us; reports deliveries, losses, latency percentiles.
 *              With --stomp the subscribers speak STOMP 1.2 on /stomp instead: after the upgrade
 *              each sends CONNECT, waits for CONNECTED, sends SUBSCRIBE (id sub-0, destination
 *              /topic/bench, receipt r) and is ready - counted open, and the publisher waits for
 *              it as for a /sub subscriber's upgrade - only once the RECEIPT came. Then each
 *              MESSAGE frame's body (after the blank line, content-length bytes) gets exactly the
 *              checks and accounting of a plain delivery's payload; an ERROR frame, any other
 *              frame or a malformed one is a protocol failure (before the RECEIPT: the
 *              subscriber failed to connect); a lone EOL (heart-beat) is ignored. STOMP frames
 *              are parsed where they lie when their WebSocket frame is whole in the read buffer,
 *              else collected first; a MESSAGE laid out as petrel-echo sends it (headers
 *              subscription, message-id, destination, content-length) is matched at once, any
 *              other through a general header parser. The plain fan-out's path is the same as
 *              without --stomp.
 *   handshake  --conns concurrent cycles of connect, upgrade, close handshake, RST.
 *   idle       opens --conns connections and reports the server's VmRSS growth per connection.
 *
 * Design (the generator must never be the bottleneck): one thread, edge-triggered epoll,
 * non-blocking sockets with TCP_NODELAY, nothing allocated per message. Per readiness event of
 * a connection:
 *   - read() into one shared 256 KiB buffer until a read comes back short (a short read took
 *     all the socket held; later data raises a new edge) - or, when EOF or an error came with
 *     the event, until read() reports it. In echo that is one read() per event.
 *   - one CLOCK_MONOTONIC reading right after each read(): the receive time of every frame in
 *     it (the time the bytes reached us, not when the parser got to them).
 *   - every frame in the buffer is parsed in place. Fast path, while between messages: a whole
 *     frame whose header is byte for byte the expected one (FIN, the text/binary opcode,
 *     --size) is handled where it lies - its 16 stamp bytes checked and converted with SSE
 *     (16 lowercase hex digits, else an error is counted), the latency added to a log-linear
 *     histogram (fixed array, < 1% relative error), the next message owed. Everything else
 *     (control frames, fragments, a frame split across reads, a wrong length or opcode,
 *     compressed ticks) goes through the general streaming parser, which counts length and
 *     stamp errors the same way. Nothing is reassembled.
 *   - the messages owed (one per echo received, so never more than --window in flight) go out
 *     in ONE write(): each connection's frame (masked with a key fixed per connection) was
 *     built once; the output buffer keeps --window copies of it laid out from the last batch,
 *     so a batch is one clock reading, its 16 hex digits masked once (SSE), and 16 bytes
 *     stored per frame. The stamp is that clock reading, taken right before the write(): the
 *     latency of every message of a batch runs from its own write() to the read() of its echo.
 * So per echoed 20-byte message the generator does about 80 user-space instructions, plus one
 * read() and one write() per batch and a share of an epoll_wait(); at --window 16 a batch is
 * 16 messages. The system calls are most of its CPU time (on loopback a write() also runs the
 * receiver's TCP input).
 * Its own cost is measured against Benchmarks/load/null-echo.c, a server that does nothing
 * but echo (Benchmarks/PROTOCOL.md, "The load generator's own cost").
 *
 * At exit every socket is closed with SO_LINGER {1,0} (RST), so no TIME_WAIT is left behind.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>
#ifdef __SSSE3__
#include <immintrin.h>
#endif

#define RBUF_SIZE (256 * 1024)         /* shared read buffer */
#define ZBUF_SIZE (256 * 1024)         /* shared inflate output (discarded, only counted) */
#define HS_CAP 4096                    /* longest handshake response accepted */
#define MAX_EVENTS 1024
#define MAX_ATTEMPTS 6                 /* connect attempts per connection during set-up */
#define ATTEMPT_TIMEOUT_NS (10 * NS)   /* connect + upgrade */
#define CLOSE_TIMEOUT_NS (5 * NS)      /* waiting for the server's close (handshake mode) */
#define MAX_LOGGED 10                  /* diagnostics of each kind printed to stderr */
#define NS 1000000000ull
#define TIMER_TAG 0xffffffffu

/* ------------------------------------------------------------------------------------------ */
/* Options                                                                                    */

enum mode { M_ECHO, M_FANOUT, M_HANDSHAKE, M_IDLE };
static const char *const mode_names[] = { "echo", "fanout", "handshake", "idle" };

static struct {
    const char *host;
    int port;
    enum mode mode;
    int conns;
    double seconds;       /* < 0: the mode's default */
    double warmup;
    const char *path;
    int window;
    int size;             /* < 0: the mode's default */
    int binary;
    int deflate;
    const char *ticks;
    long messages;
    long interval_us;
    int server_pid;
    int inflight;
    int plain_ticks;      /* echo the tick lines uncompressed (the deflate scenario's baseline) */
    int client_context;   /* --deflate: the lines compressed as one stream (client context kept) */
    int stomp;            /* fanout: the subscribers speak STOMP 1.2 on /stomp */
} opt = { "127.0.0.1", 9001, M_ECHO, 100, -1, 1.0, "/", 16, -1, 0, 0, NULL, 1000, 1000, 0, 200, 0, 0, 0 };

/* Echo of stock-tick lines: compressed (--deflate) or as they are (--plain-ticks). */
#define TICKS (opt.deflate || opt.plain_ticks)

static void usage(FILE *f)
{
    fprintf(f,
        "usage: petrel-load [flags]\n"
        "  --host H            server address (default 127.0.0.1)\n"
        "  --port N            server port (default 9001)\n"
        "  --mode M            echo | fanout | handshake | idle (default echo)\n"
        "  --conns N           connections (handshake: concurrent cycles) (default 100)\n"
        "  --seconds T         measured time; fanout: timeout after the last publish;\n"
        "                      idle: hold time (default 5, idle 2)\n"
        "  --warmup S          echo: seconds before counting starts (default 1)\n"
        "  --path P            request path for echo, handshake, idle (default /)\n"
        "  --inflight N        connections being set up at once (default 200)\n"
        "echo:     --window W (default 16) --size S (>= 16, default 20) --binary\n"
        "          --deflate [--ticks FILE]  permessage-deflate with stock-tick JSON lines\n"
        "          --client-context          with --deflate: keep the compression context between\n"
        "                                    messages, as browsers do (lines sent in order)\n"
        "          --plain-ticks [--ticks FILE]  the same lines uncompressed (the baseline)\n"
        "fanout:   --messages M (default 1000) --size S (default 100) --interval-us U (default 1000)\n"
        "          --stomp   subscribers speak STOMP 1.2 on /stomp (CONNECT, SUBSCRIBE to /topic/bench\n"
        "                    with a receipt; ready once the RECEIPT came) instead of /sub\n"
        "idle:     --server-pid PID  --deflate (offer permessage-deflate)\n");
}

/* ------------------------------------------------------------------------------------------ */
/* Small helpers: time, randomness, SHA-1, base64, diagnostics                                */

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS + (uint64_t)ts.tv_nsec;
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6
         + (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static uint64_t rng_state;
static uint64_t rng(void) /* xorshift64* */
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Dull;
}

static double rng_unit(void) { return (double)(rng() >> 11) / 9007199254740992.0; }

#include "ws-accept.h"

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("petrel-load: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

/* Prints the first MAX_LOGGED diagnostics of a kind (*counter counts them all). */
static void note(unsigned long *counter, const char *fmt, ...)
{
    if (++*counter > MAX_LOGGED)
        return;
    va_list ap;
    va_start(ap, fmt);
    fputs("petrel-load: ", stderr);
    vfprintf(stderr, fmt, ap);
    if (*counter == MAX_LOGGED)
        fputs(" (further messages of this kind suppressed)", stderr);
    fputc('\n', stderr);
    va_end(ap);
}

/* ------------------------------------------------------------------------------------------ */
/* Latency histogram: log-linear, values in ns. 0..127 exact, then 64 buckets per power of two  */
/* (HdrHistogram-style, relative error < 0.8%).                                                 */

#define H_BUCKETS (128 + 57 * 64)
static uint64_t hist[H_BUCKETS], hist_n;

static inline unsigned hist_index(uint64_t v)
{
    if (v < 128)
        return (unsigned)v;
    unsigned shift = (unsigned)(63 - __builtin_clzll(v)) - 6;
    return 128 + (shift - 1) * 64 + (unsigned)((v >> shift) - 64);
}

static inline void hist_add(uint64_t v)
{
    hist[hist_index(v)]++;
    hist_n++;
}

static double hist_pct_us(double p)
{
    if (hist_n == 0)
        return 0;
    uint64_t target = (uint64_t)ceil(p * (double)hist_n), acc = 0;
    if (target == 0)
        target = 1;
    for (unsigned i = 0; i < H_BUCKETS; i++) {
        acc += hist[i];
        if (acc >= target) {
            if (i < 128)
                return i / 1000.0;
            unsigned shift = (i - 128) / 64 + 1;
            uint64_t lo = (uint64_t)((i - 128) % 64 + 64) << shift;
            return (double)(lo + ((1ull << shift) >> 1)) / 1000.0; /* bucket midpoint */
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Connections                                                                                */

/* ST_STOMP: upgraded, STOMP CONNECT/SUBSCRIBE under way; still being set up (in flight, not open). */
enum state { ST_IDLE, ST_WAIT, ST_CONNECTING, ST_HANDSHAKE, ST_STOMP, ST_OPEN, ST_CLOSING, ST_DEAD };
enum stomp_stage { SS_NONE, SS_CONNECT, SS_SUBSCRIBE, SS_SUBSCRIBED };
enum role { R_ECHO, R_SUB, R_PUB, R_HS, R_IDLE };

typedef struct conn {
    int fd;
    uint32_t gen;              /* bumped per socket; tags epoll events */
    uint8_t state, role, want_out, attempts;
    uint8_t key[4];            /* masking key of every frame this connection sends */
    uint8_t deflate;           /* permessage-deflate negotiated */
    uint8_t no_ctx;            /* ... with server_no_context_takeover */
    uint64_t deadline;         /* connect/upgrade or close-wait timeout */
    uint64_t not_before;       /* earliest (re)start while ST_WAIT */
    const char *path;

    uint8_t *out;              /* pending outgoing bytes [out_off, out_len) */
    size_t out_off, out_len, out_cap;

    char *hs;                  /* handshake response so far (only while ST_HANDSHAKE) */
    size_t hs_len;
    char accept[32];           /* expected Sec-WebSocket-Accept */

    uint8_t *tmpl;             /* pre-built masked frame (echo, publisher) */
    uint32_t tmpl_len, tmpl_hdr;
    uint32_t to_send;          /* frames to send after the current read */
    uint32_t prefilled;        /* echo: copies of tmpl laid out from out[0] (only stamps change) */

    z_stream *z;               /* inflate stream (deflate), created on first compressed reply */
    uint8_t z_ended;
    uint32_t *fifo;            /* deflate echo: indices of lines in flight */
    uint32_t fifo_head, fifo_n, cursor;

    uint64_t received;         /* messages received (fan-out subscribers) */

    /* streaming frame parser */
    uint8_t hdr[14], hlen;     /* header bytes collected when a header spans reads */
    uint8_t in_payload, opcode, fin;
    uint64_t remaining;        /* payload bytes left in the current frame */
    uint8_t msg_active, msg_comp, stamp_len, ctl_len;
    uint64_t msg_len, msg_infl;
    uint8_t stamp[16];
    uint8_t ctl[125];

    /* --stomp subscribers (last: the fields above keep their places) */
    uint8_t stomp;             /* enum stomp_stage (SS_NONE: not a STOMP subscriber) */
    uint8_t *sbuf;             /* a STOMP message collected when its frame is not whole in a read */
    size_t sbuf_len, sbuf_cap;
} conn;

static conn *conns;
static int nconns;
static int epfd;
static struct addrinfo *server_addr;
static uint8_t rbuf[RBUF_SIZE], zbuf[ZBUF_SIZE];

/* Counters. */
static int inflight, max_inflight;          /* connections being set up */
static int n_open, n_established, n_failed;
static int fresh_next, fresh_end;           /* slots not yet started */
static int *retryq, nretry;                 /* slots in ST_WAIT */
static int stopping;                        /* no more (re)starts */
static unsigned long errors;                /* server closes, drops, protocol and length errors */
static unsigned long log_fail, log_err, log_len;
static int measuring;                       /* echo: past warm-up */
static int sending;                         /* echo: send the next message on each echo */

static uint64_t m_msgs, m_bytes, m_wire, m_infl;   /* echo */
static uint64_t hs_done, hs_fail;                  /* handshake */
static uint64_t deliveries, last_delivery;         /* fan-out */

/* Deflate payloads: every line compressed once, framed and masked with one key. */
static int nlines;
static uint32_t *line_len, *df_off, *df_len;
static uint8_t *df_frames;
static uint64_t df_raw_total, df_comp_total;
static size_t max_line_len;
static uint8_t df_key[4];

static void conn_close_fd(conn *c)
{
    if (c->fd >= 0) {
        struct linger lg = { 1, 0 };  /* RST: no TIME_WAIT */
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(c->fd);
        c->fd = -1;
    }
    free(c->hs);
    c->hs = NULL;
    c->out_off = c->out_len = 0;
    c->want_out = 0;
}

static void set_events(conn *c, uint32_t ev)
{
    struct epoll_event e = { .events = ev | EPOLLRDHUP | EPOLLET, .data.u64 = (uint64_t)c->gen << 32 | (uint32_t)(c - conns) };
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &e);  /* MOD re-checks readiness: no edge is lost */
}

static uint8_t *out_reserve(conn *c, size_t n)
{
    c->prefilled = 0;  /* whatever is written may overlap the laid-out templates */
    if (c->out_len + n > c->out_cap) {
        if (c->out_off) {
            memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
            c->out_len -= c->out_off;
            c->out_off = 0;
        }
        if (c->out_len + n > c->out_cap) {
            size_t cap = c->out_cap ? c->out_cap * 2 : 512;
            while (cap < c->out_len + n)
                cap *= 2;
            c->out = realloc(c->out, cap);
            if (!c->out)
                die("out of memory");
            c->out_cap = cap;
        }
    }
    uint8_t *p = c->out + c->out_len;
    c->out_len += n;
    return p;
}

/* Writes what is pending in one write(); waits for EPOLLOUT if the socket is full. */
static int conn_flush(conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t w = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (w > 0) {
            c->out_off += (size_t)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && errno == EAGAIN) {
            if (!c->want_out) {
                c->want_out = 1;
                set_events(c, EPOLLIN | EPOLLOUT);
            }
            return 0;
        } else {
            return -1;
        }
    }
    c->out_off = c->out_len = 0;
    if (c->want_out) {
        c->want_out = 0;
        set_events(c, EPOLLIN);
    }
    return 0;
}

/* Appends a masked frame (control frames, the close frame). */
static void queue_frame(conn *c, uint8_t b0, const uint8_t *payload, size_t n)
{
    uint8_t *p = out_reserve(c, 6 + n);  /* only used for payloads <= 125 bytes */
    p[0] = b0;
    p[1] = (uint8_t)(0x80 | n);
    memcpy(p + 2, c->key, 4);
    for (size_t i = 0; i < n; i++)
        p[6 + i] = payload[i] ^ c->key[i & 3];
}

/* Builds a masked frame header for a payload of n bytes; returns its length. */
static size_t frame_header(uint8_t *h, uint8_t b0, uint64_t n, const uint8_t key[4])
{
    size_t l;
    h[0] = b0;
    if (n < 126) {
        h[1] = (uint8_t)(0x80 | n);
        l = 2;
    } else if (n < 65536) {
        h[1] = 0x80 | 126;
        h[2] = (uint8_t)(n >> 8); h[3] = (uint8_t)n;
        l = 4;
    } else {
        h[1] = 0x80 | 127;
        for (int i = 0; i < 8; i++)
            h[2 + i] = (uint8_t)(n >> (56 - 8 * i));
        l = 10;
    }
    memcpy(h + l, key, 4);
    return l + 4;
}

/* The stamped frame of echo and fan-out: 16 hex digits (patched at send time) then 'x'. */
static void build_template(conn *c, int size, int binary)
{
    uint8_t h[14];
    size_t hl = frame_header(h, binary ? 0x82 : 0x81, (uint64_t)size, c->key);
    c->tmpl = malloc(hl + (size_t)size);
    if (!c->tmpl)
        die("out of memory");
    memcpy(c->tmpl, h, hl);
    for (int i = 0; i < size; i++)
        c->tmpl[hl + i] = (uint8_t)(i < 16 ? '0' : 'x') ^ c->key[i & 3];
    c->tmpl_hdr = (uint32_t)hl;
    c->tmpl_len = (uint32_t)(hl + (size_t)size);
}

/* The 16 masked stamp bytes of clock reading t (16 lowercase hex digits) for a connection. */
static inline void masked_stamp(const conn *c, uint64_t t, uint8_t ms[16])
{
#ifdef __SSSE3__
    __m128i b = _mm_cvtsi64_si128((long long)__builtin_bswap64(t));        /* most significant first */
    __m128i hi = _mm_and_si128(_mm_srli_epi16(b, 4), _mm_set1_epi8(15));
    __m128i lo = _mm_and_si128(b, _mm_set1_epi8(15));
    __m128i nib = _mm_unpacklo_epi8(hi, lo);                                /* 16 nibbles in order */
    __m128i hex = _mm_shuffle_epi8(_mm_setr_epi8('0', '1', '2', '3', '4', '5', '6', '7', '8', '9',
                                                 'a', 'b', 'c', 'd', 'e', 'f'), nib);
    uint32_t k;
    memcpy(&k, c->key, 4);
    _mm_storeu_si128((__m128i *)ms, _mm_xor_si128(hex, _mm_set1_epi32((int)k)));
#else
    static const char hexd[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++)
        ms[i] = (uint8_t)hexd[(t >> (60 - 4 * i)) & 15] ^ c->key[i & 3];
#endif
}

/* Appends k stamped frames, all stamped with one clock reading (taken here, right before the
 * write that carries them). When the output buffer is empty, the frames are already laid out
 * in it from the previous batch (c->prefilled copies of the masked template): only the 16
 * masked stamp bytes of each are rewritten. Otherwise the template is copied. */
static void emit_stamped(conn *c, uint32_t k)
{
    uint8_t ms[16];
    masked_stamp(c, now_ns(), ms);
    uint32_t fl = c->tmpl_len;
    if (c->out_len == 0 && c->role == R_ECHO && k <= (uint32_t)opt.window
        && (size_t)opt.window * fl <= c->out_cap) {
        if (c->prefilled < k) {
            for (uint32_t j = 0; j < (uint32_t)opt.window; j++)
                memcpy(c->out + (size_t)j * fl, c->tmpl, fl);
            c->prefilled = (uint32_t)opt.window;
        }
        uint8_t *dst = c->out + c->tmpl_hdr;
        for (uint32_t j = 0; j < k; j++, dst += fl)
            memcpy(dst, ms, 16);
        c->out_off = 0;
        c->out_len = (size_t)k * fl;
        return;
    }
    uint8_t *dst = out_reserve(c, (size_t)k * fl);
    for (uint32_t j = 0; j < k; j++, dst += fl) {
        memcpy(dst, c->tmpl, fl);
        memcpy(dst + c->tmpl_hdr, ms, 16);
    }
}

/* Appends k pre-compressed tick frames, remembering which line each one was. */
static void emit_deflate(conn *c, uint32_t k)
{
    for (uint32_t j = 0; j < k && c->fifo_n < (uint32_t)opt.window; j++) {
        uint32_t i = c->cursor;
        c->cursor = (c->cursor + 1) % (uint32_t)nlines;
        memcpy(out_reserve(c, df_len[i]), df_frames + df_off[i], df_len[i]);
        c->fifo[(c->fifo_head + c->fifo_n++) % (uint32_t)opt.window] = i;
    }
}

static void emit_pending(conn *c)
{
    if (!c->to_send)
        return;
    if (sending && c->role == R_ECHO)
        TICKS ? emit_deflate(c, c->to_send) : emit_stamped(c, c->to_send);
    c->to_send = 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Connection life cycle                                                                      */

static void schedule(conn *c, uint64_t when)
{
    c->state = ST_WAIT;
    c->not_before = when;
    retryq[nretry++] = (int)(c - conns);
}

static int retryable(int err)
{
    return err == ECONNREFUSED || err == ECONNRESET || err == ETIMEDOUT || err == EAGAIN
        || err == EADDRNOTAVAIL || err == EPIPE || err == EHOSTUNREACH || err == ENETUNREACH;
}

static void conn_start(conn *c);

/* A connection attempt (or a handshake-mode cycle) failed. */
static void conn_failed(conn *c, const char *what, int err, int can_retry)
{
    int idx = (int)(c - conns);
    if (opt.mode != M_HANDSHAKE
        && (c->state == ST_CONNECTING || c->state == ST_HANDSHAKE || c->state == ST_STOMP))
        inflight--;
    conn_close_fd(c);
    if (opt.mode == M_HANDSHAKE) {
        if (!stopping) {
            hs_fail++;
            note(&log_fail, "conn %d: %s: %s", idx, what, err ? strerror(err) : "failed");
        }
        if (stopping)
            c->state = ST_DEAD;
        else
            schedule(c, now_ns() + 10000000ull);  /* 10 ms, so a dead server is not spun on */
        return;
    }
    if (can_retry && retryable(err) && !stopping && c->attempts < MAX_ATTEMPTS) {
        c->attempts++;
        schedule(c, now_ns() + (25000000ull << c->attempts));  /* 50 ms, 100 ms, ... 1.6 s */
        return;
    }
    c->state = ST_DEAD;
    n_failed++;
    note(&log_fail, "conn %d: %s: %s (giving up)", idx, what, err ? strerror(err) : "failed");
}

/* An established connection is gone (server close frame, EOF, error, protocol violation). */
static void conn_lost(conn *c, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (c->state == ST_STOMP) {  /* STOMP set-up not done: the subscriber failed to connect */
        conn_failed(c, msg, 0, 0);
        return;
    }
    errors++;
    note(&log_err, "conn %d: %s", (int)(c - conns), msg);
    if (c->state == ST_OPEN || c->state == ST_CLOSING)
        n_open--;
    if (opt.mode == M_HANDSHAKE) {  /* a failed cycle: counted, and the slot starts again */
        c->state = ST_DEAD;
        conn_failed(c, msg, 0, 0);
        return;
    }
    conn_close_fd(c);
    c->state = ST_DEAD;
}

static void conn_start(conn *c)
{
    c->fd = socket(server_addr->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        int err = errno;
        c->state = ST_IDLE;  /* not in flight */
        conn_failed(c, "socket", err, err != EMFILE && err != ENFILE);
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->gen++;
    c->hlen = c->in_payload = c->msg_active = 0;
    c->deflate = c->no_ctx = 0;
    c->stomp = SS_NONE;
    c->state = ST_CONNECTING;
    c->deadline = now_ns() + ATTEMPT_TIMEOUT_NS;
    if (opt.mode != M_HANDSHAKE)
        inflight++;
    struct epoll_event e = { .events = EPOLLOUT | EPOLLET, .data.u64 = (uint64_t)c->gen << 32 | (uint32_t)(c - conns) };
    if (connect(c->fd, server_addr->ai_addr, server_addr->ai_addrlen) < 0 && errno != EINPROGRESS) {
        conn_failed(c, "connect", errno, 1);
        return;
    }
    epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &e);  /* EPOLLOUT reports the connect's outcome */
}

static void on_connected(conn *c)
{
    int err = 0;
    socklen_t l = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
    if (err) {
        conn_failed(c, "connect", err, 1);
        return;
    }
    uint8_t nonce[16];
    char key[32];
    for (int i = 0; i < 16; i += 8) {
        uint64_t r = rng();
        memcpy(nonce + i, &r, 8);
    }
    base64(nonce, 16, key);
    ws_accept(key, c->accept);
    char req[1024];
    int n = snprintf(req, sizeof req,
        "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
        c->path, opt.host, opt.port, key,
        opt.deflate ? "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" : "");
    if (n <= 0 || n >= (int)sizeof req)
        die("request too long");
    memcpy(out_reserve(c, (size_t)n), req, (size_t)n);
    c->hs = malloc(HS_CAP + 1);
    if (!c->hs)
        die("out of memory");
    c->hs_len = 0;
    c->state = ST_HANDSHAKE;
    c->want_out = 0;
    set_events(c, EPOLLIN);
    if (conn_flush(c) < 0)
        conn_failed(c, "write", errno, 1);
}

/* Checks a complete response head (NUL-terminated). 0: upgraded. */
static int check_response(conn *c, char *head)
{
    int idx = (int)(c - conns);
    char *line_end = strstr(head, "\r\n");
    if (strncmp(head, "HTTP/1.1 101", 12) != 0) {
        if (line_end)
            *line_end = 0;
        note(&log_fail, "conn %d: upgrade refused: %.200s", idx, head);
        return -1;
    }
    int have_accept = 0, have_upgrade = 0, have_pmd = 0;
    for (char *line = line_end + 2; *line; ) {
        char *eol = strstr(line, "\r\n");
        if (!eol || eol == line)
            break;
        *eol = 0;
        char *colon = strchr(line, ':');
        if (colon) {
            *colon = 0;
            char *v = colon + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            for (char *e = v + strlen(v); e > v && (e[-1] == ' ' || e[-1] == '\t'); )
                *--e = 0;
            if (!strcasecmp(line, "sec-websocket-accept")) {
                if (strcmp(v, c->accept) != 0) {
                    note(&log_fail, "conn %d: wrong Sec-WebSocket-Accept '%s' (expected '%s')", idx, v, c->accept);
                    return -1;
                }
                have_accept = 1;
            } else if (!strcasecmp(line, "upgrade")) {
                have_upgrade = !strcasecmp(v, "websocket");
            } else if (!strcasecmp(line, "sec-websocket-extensions")) {
                if (!opt.deflate) {
                    note(&log_fail, "conn %d: server negotiated an extension that was not offered: %s", idx, v);
                    return -1;
                }
                /* permessage-deflate; param; param=value ... */
                char *save = NULL;
                for (char *tok = strtok_r(v, ";,", &save); tok; tok = strtok_r(NULL, ";,", &save)) {
                    while (*tok == ' ' || *tok == '\t')
                        tok++;
                    char *e = tok + strlen(tok);
                    while (e > tok && (e[-1] == ' ' || e[-1] == '\t'))
                        *--e = 0;
                    if (!strcasecmp(tok, "permessage-deflate")) {
                        have_pmd = 1;
                    } else if (!strcasecmp(tok, "server_no_context_takeover")) {
                        c->no_ctx = 1;
                    } else if (!strncasecmp(tok, "client_max_window_bits", 22)) {
                        const char *eq = strchr(tok, '=');
                        int bits = eq ? atoi(eq + 1 + (eq[1] == '"')) : 15;
                        if (bits < 8 || bits > 15 || ((size_t)1 << bits) < max_line_len)
                            die("server asked for client_max_window_bits=%d: the pre-compressed lines "
                                "(up to %zu bytes) need a larger window", bits, max_line_len);
                        if (opt.client_context && bits < 15)
                            die("server asked for client_max_window_bits=%d: --client-context "
                                "compressed the lines with a 15-bit window", bits);
                    } else if (!strcasecmp(tok, "client_no_context_takeover") && opt.client_context) {
                        die("server asked for client_no_context_takeover: --client-context cannot "
                            "keep its context");
                    }
                }
            }
        }
        line = eol + 2;
    }
    if (!have_accept || !have_upgrade) {
        note(&log_fail, "conn %d: 101 response without %s", idx,
             have_accept ? "Upgrade: websocket" : "Sec-WebSocket-Accept");
        return -1;
    }
    if (opt.deflate && !have_pmd)
        die("the server did not accept permessage-deflate (offered: permessage-deflate; "
            "client_max_window_bits); start it with compression on (e.g. --deflate)");
    c->deflate = (uint8_t)have_pmd;
    return 0;
}

static const char stomp_connect[] = "CONNECT\naccept-version:1.2\nhost:bench\n\n";
static const char stomp_subscribe[] = "SUBSCRIBE\nid:sub-0\ndestination:/topic/bench\nreceipt:r\n\n";

static void on_upgraded(conn *c)
{
    free(c->hs);
    c->hs = NULL;
    if (c->role == R_SUB && opt.stomp) {
        /* Still being set up (in flight) until the RECEIPT of its SUBSCRIBE: stomp_ready(). */
        c->state = ST_STOMP;
        c->stomp = SS_CONNECT;
        c->deadline = now_ns() + ATTEMPT_TIMEOUT_NS;
        queue_frame(c, 0x81, (const uint8_t *)stomp_connect, sizeof stomp_connect);  /* with its NUL */
        return;  /* on_readable() writes it */
    }
    if (opt.mode != M_HANDSHAKE)
        inflight--;
    n_open++;
    n_established++;
    c->state = ST_OPEN;
    c->attempts = 0;
    if (c->role == R_HS) {  /* close at once: masked close frame, code 1000 */
        static const uint8_t code[2] = { 0x03, 0xe8 };
        queue_frame(c, 0x88, code, 2);
        c->state = ST_CLOSING;
        c->deadline = now_ns() + CLOSE_TIMEOUT_NS;
    }
}

/* Handshake mode: a cycle ended (server close frame or EOF after ours). */
static void hs_cycle_done(conn *c)
{
    n_open--;
    conn_close_fd(c);
    if (stopping) {
        c->state = ST_DEAD;
        return;
    }
    hs_done++;
    conn_start(c);
}

/* ------------------------------------------------------------------------------------------ */
/* Frames and messages                                                                        */

static uint64_t recv_time;  /* clock reading right after the read() being parsed */

/* 16 lowercase hex digits -> value; -1 if any byte is not one. */
static inline int parse_stamp(const uint8_t *s, uint64_t *out)
{
#ifdef __SSSE3__
    __m128i x = _mm_loadu_si128((const __m128i *)s);
    __m128i dig = _mm_and_si128(_mm_cmpgt_epi8(x, _mm_set1_epi8('0' - 1)), _mm_cmplt_epi8(x, _mm_set1_epi8('9' + 1)));
    __m128i hex = _mm_and_si128(_mm_cmpgt_epi8(x, _mm_set1_epi8('a' - 1)), _mm_cmplt_epi8(x, _mm_set1_epi8('f' + 1)));
    if (_mm_movemask_epi8(_mm_or_si128(dig, hex)) != 0xffff)
        return -1;
    /* nibbles ('a'..'f' & 15 is 1..6, + 9), then pairs (16 * high + low), then 8 bytes */
    __m128i nib = _mm_add_epi8(_mm_and_si128(x, _mm_set1_epi8(15)), _mm_and_si128(hex, _mm_set1_epi8(9)));
    __m128i pairs = _mm_maddubs_epi16(nib, _mm_set1_epi16(0x0110));
    *out = __builtin_bswap64((uint64_t)_mm_cvtsi128_si64(_mm_packus_epi16(pairs, pairs)));
    return 0;
#else
    uint64_t v = 0;
    for (int i = 0; i < 16; i++) {
        unsigned ch = s[i], d;
        if (ch - '0' < 10)
            d = ch - '0';
        else if (ch - 'a' < 6)
            d = ch - 'a' + 10;
        else
            return -1;
        v = v << 4 | d;
    }
    *out = v;
    return 0;
#endif
}

static int inflate_feed(conn *c, const uint8_t *p, size_t n)
{
    z_stream *z = c->z;
    if (c->z_ended)  /* a final block ended the stream: the rest of this message is ignored */
        return 0;
    z->next_in = (Bytef *)p;
    z->avail_in = (uInt)n;
    do {
        z->next_out = zbuf;
        z->avail_out = ZBUF_SIZE;
        int r = inflate(z, Z_SYNC_FLUSH);
        c->msg_infl += ZBUF_SIZE - z->avail_out;
        if (r == Z_STREAM_END) {
            c->z_ended = 1;
            break;
        }
        if (r == Z_BUF_ERROR)
            break;
        if (r != Z_OK)
            return -1;
    } while (z->avail_out == 0);
    return 0;
}

/* A complete stamped message (echo or fan-out) of len bytes; stamp: its first 16 bytes (NULL if
 * it is shorter). Checks the length and the stamp (each failure counts as an error), records
 * the latency, and owes the server the next message (echo). */
static inline void stamped_message(conn *c, const uint8_t *stamp_bytes, uint64_t len)
{
    if (len != (uint64_t)opt.size) {
        note(&log_len, "conn %d: message of %" PRIu64 " bytes, expected %d", (int)(c - conns), len, opt.size);
        errors++;
    }
    uint64_t stamp;
    int have_stamp = stamp_bytes && parse_stamp(stamp_bytes, &stamp) == 0;
    if (!have_stamp) {
        note(&log_len, "conn %d: message without a valid timestamp", (int)(c - conns));
        errors++;
    }
    if (c->role == R_ECHO) {
        if (measuring) {
            m_msgs++;
            m_bytes += len;
            if (have_stamp)
                hist_add(recv_time > stamp ? recv_time - stamp : 0);
        }
        c->to_send++;
    } else {
        c->received++;
        deliveries++;
        last_delivery = recv_time;
        if (have_stamp)
            hist_add(recv_time > stamp ? recv_time - stamp : 0);
        if (c->received > (uint64_t)opt.messages) {
            note(&log_len, "conn %d: more messages than were published", (int)(c - conns));
            errors++;
        }
    }
}

/* A complete data message. */
static void on_message(conn *c)
{
    int idx = (int)(c - conns);
    if (c->role == R_ECHO && TICKS) {
        uint64_t got = c->msg_comp ? c->msg_infl : c->msg_len;
        if (c->fifo_n == 0) {
            note(&log_len, "conn %d: unexpected message of %" PRIu64 " bytes", idx, got);
            errors++;
            return;
        }
        uint32_t line = c->fifo[c->fifo_head];
        c->fifo_head = (c->fifo_head + 1) % (uint32_t)opt.window;
        c->fifo_n--;
        if (got != line_len[line]) {
            note(&log_len, "conn %d: echo of line %u is %" PRIu64 " bytes, sent %u", idx, line, got, line_len[line]);
            errors++;
        }
        if (measuring) {
            m_msgs++;
            m_wire += c->msg_len;
            m_infl += got;
        }
        c->to_send++;
        return;
    }
    if (c->role != R_ECHO && c->role != R_SUB)
        return;  /* publisher, handshake and idle connections ignore data */
    stamped_message(c, c->stamp_len == 16 ? c->stamp : NULL, c->msg_len);
}

/* ------------------------------------------------------------------------------------------ */
/* STOMP (--stomp fan-out subscribers)                                                        */

/* Subscribed (the RECEIPT came): the subscriber counts as open, and is no longer being set up
 * (open_all() waits for this, so the publisher starts after every subscriber is ready). */
static void stomp_ready(conn *c)
{
    c->stomp = SS_SUBSCRIBED;
    c->state = ST_OPEN;
    c->attempts = 0;
    inflight--;
    n_open++;
    n_established++;
}

/* A protocol failure in STOMP: the connection is closed (conn_lost(); during the set-up, that
 * is the subscriber failing to connect). Returns -1. */
static int stomp_fail(conn *c, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    conn_lost(c, "STOMP: %s", msg);
    return -1;
}

/* Printable for diagnostics: at most 80 bytes, control bytes as '.', in a static buffer. */
static const char *stomp_show(const uint8_t *p, const uint8_t *e)
{
    static char out[81];
    size_t n = (size_t)(e - p) < 80 ? (size_t)(e - p) : 80;
    for (size_t i = 0; i < n; i++)
        out[i] = p[i] < 0x20 || p[i] >= 0x7f ? '.' : (char)p[i];
    out[n] = 0;
    return out;
}

#define STOMP_IS(p, e, lit) ((size_t)((e) - (p)) == sizeof lit - 1 && !memcmp((p), lit, sizeof lit - 1))

/* One STOMP frame at *pp, in a WebSocket message ending at end: parsed (LF or CR LF lines; the
 * first of a repeated header counts; the body by content-length, else up to the NUL), checked
 * and handled; *pp moves past its NUL. -1: the connection was closed. */
static int stomp_frame(conn *c, const uint8_t **pp, const uint8_t *end)
{
    const uint8_t *p = *pp, *nl = memchr(p, '\n', (size_t)(end - p));
    if (!nl)
        return stomp_fail(c, "frame without an end of line after its command: %s", stomp_show(p, end));
    const uint8_t *cmd = p, *cmd_end = nl > p && nl[-1] == '\r' ? nl - 1 : nl;
    const uint8_t *cl = NULL, *cl_end = NULL, *sub = NULL, *sub_end = NULL;
    const uint8_t *rid = NULL, *rid_end = NULL, *emsg = NULL, *emsg_end = NULL;
    for (p = nl + 1;; p = nl + 1) {
        if (!(nl = memchr(p, '\n', (size_t)(end - p))))
            return stomp_fail(c, "%s frame without the blank line after its headers",
                              stomp_show(cmd, cmd_end));
        const uint8_t *le = nl > p && nl[-1] == '\r' ? nl - 1 : nl;
        if (le == p)
            break;
        const uint8_t *colon = memchr(p, ':', (size_t)(le - p));
        if (!colon)
            return stomp_fail(c, "header line without a colon: %s", stomp_show(p, le));
        if (STOMP_IS(p, colon, "content-length")) {
            if (!cl)
                cl = colon + 1, cl_end = le;
        } else if (STOMP_IS(p, colon, "subscription")) {
            if (!sub)
                sub = colon + 1, sub_end = le;
        } else if (STOMP_IS(p, colon, "receipt-id")) {
            if (!rid)
                rid = colon + 1, rid_end = le;
        } else if (STOMP_IS(p, colon, "message")) {
            if (!emsg)
                emsg = colon + 1, emsg_end = le;
        }
    }
    const uint8_t *body = nl + 1, *body_end;
    if (cl) {
        uint64_t n = 0;
        if (cl == cl_end || cl_end - cl > 18)
            return stomp_fail(c, "bad content-length '%s'", stomp_show(cl, cl_end));
        for (const uint8_t *d = cl; d < cl_end; d++) {
            if ((unsigned)(*d - '0') > 9)
                return stomp_fail(c, "bad content-length '%s'", stomp_show(cl, cl_end));
            n = n * 10 + (unsigned)(*d - '0');
        }
        if (n >= (uint64_t)(end - body) || body[n] != 0)
            return stomp_fail(c, "%s frame: no NUL after content-length %" PRIu64 " (%zu bytes left)",
                              stomp_show(cmd, cmd_end), n, (size_t)(end - body));
        body_end = body + n;
    } else if (!(body_end = memchr(body, 0, (size_t)(end - body)))) {
        return stomp_fail(c, "%s frame not ended by NUL", stomp_show(cmd, cmd_end));
    }
    *pp = body_end + 1;

    if (c->stomp == SS_SUBSCRIBED && STOMP_IS(cmd, cmd_end, "MESSAGE")) {
        if (!sub || !STOMP_IS(sub, sub_end, "sub-0"))
            return stomp_fail(c, "MESSAGE for subscription '%s', expected sub-0",
                              sub ? stomp_show(sub, sub_end) : "(none)");
        size_t len = (size_t)(body_end - body);
        stamped_message(c, len >= 16 ? body : NULL, len);  /* the body: a plain delivery's payload */
        return 0;
    }
    if (STOMP_IS(cmd, cmd_end, "ERROR"))
        return stomp_fail(c, "ERROR frame: %s", emsg ? stomp_show(emsg, emsg_end) : stomp_show(body, body_end));
    if (c->stomp == SS_CONNECT && STOMP_IS(cmd, cmd_end, "CONNECTED")) {
        c->stomp = SS_SUBSCRIBE;
        queue_frame(c, 0x81, (const uint8_t *)stomp_subscribe, sizeof stomp_subscribe);  /* with its NUL */
        return 0;
    }
    if (c->stomp == SS_SUBSCRIBE && STOMP_IS(cmd, cmd_end, "RECEIPT")) {
        if (!rid || !STOMP_IS(rid, rid_end, "r"))
            return stomp_fail(c, "RECEIPT for '%s', expected r", rid ? stomp_show(rid, rid_end) : "(none)");
        stomp_ready(c);
        return 0;
    }
    static const char *const waiting[] = { "", "CONNECTED", "the RECEIPT", "MESSAGE frames" };
    return stomp_fail(c, "unexpected %s frame (waiting for %s)", stomp_show(cmd, cmd_end), waiting[c->stomp]);
}

/* The MESSAGE frames of petrel-echo's /topic/bench as they come, byte for byte but for the digits
 * of message-id and content-length, each alone in its WebSocket message. */
static const char stomp_msg_a[] = "MESSAGE\nsubscription:sub-0\nmessage-id:";
static const char stomp_msg_b[] = "\ndestination:/topic/bench\ncontent-length:";
#define STOMP_MSG_A (sizeof stomp_msg_a - 1)
#define STOMP_MSG_B (sizeof stomp_msg_b - 1)

/* Such a MESSAGE taken without the general header parser (the same checks and accounting as
 * stomp_frame()'s). 0: not one of them (nothing done; stomp_frame() takes it). */
static inline int stomp_message_fast(conn *c, const uint8_t *p, const uint8_t *end)
{
    if ((size_t)(end - p) < STOMP_MSG_A + 1 + STOMP_MSG_B + 4 || memcmp(p, stomp_msg_a, STOMP_MSG_A))
        return 0;
    const uint8_t *q = p + STOMP_MSG_A, *d = q;
    while (q < end && (unsigned)(*q - '0') < 10)
        q++;
    if (q == d || (size_t)(end - q) < STOMP_MSG_B + 4 || memcmp(q, stomp_msg_b, STOMP_MSG_B))
        return 0;
    q += STOMP_MSG_B;
    uint64_t len = 0;
    for (d = q; q < end && (unsigned)(*q - '0') < 10 && q - d < 18; q++)
        len = len * 10 + (unsigned)(*q - '0');
    if (q == d || end - q < 3 || q[0] != '\n' || q[1] != '\n' || len != (uint64_t)(end - q) - 3 || q[2 + len] != 0)
        return 0;
    stamped_message(c, len >= 16 ? q + 2 : NULL, (size_t)len);  /* the body: a plain delivery's payload */
    return 1;
}

/* A whole WebSocket data message of a STOMP subscriber: its STOMP frame(s); EOLs before a frame
 * (a lone one is a heart-beat) are skipped. -1: the connection was closed. */
static int stomp_message(conn *c, const uint8_t *p, size_t n)
{
    if (n == 0)
        return 0;
    const uint8_t *end = p + n;
    if (c->stomp == SS_SUBSCRIBED && stomp_message_fast(c, p, end))
        return 0;
    for (;;) {
        while (p < end && (*p == '\n' || (*p == '\r' && end - p >= 2 && p[1] == '\n')))
            p++;
        if (p == end)
            return 0;
        if (stomp_frame(c, &p, end) < 0)
            return -1;
    }
}

/* The general parser's part: a STOMP message's bytes, collected when its frame was not whole in
 * one read (or came in fragments). -1: the connection was closed. */
static int stomp_collect(conn *c, const uint8_t *p, size_t n)
{
    size_t need = c->sbuf_len + n, max = (size_t)opt.size + 65536;
    if (need > c->sbuf_cap) {
        if (need > max) {
            conn_lost(c, "STOMP: message over %zu bytes", max);
            return -1;
        }
        size_t cap = c->sbuf_cap ? c->sbuf_cap : 1024;
        while (cap < need)
            cap *= 2;
        if (!(c->sbuf = realloc(c->sbuf, cap)))
            die("out of memory");
        c->sbuf_cap = cap;
    }
    memcpy(c->sbuf + c->sbuf_len, p, n);
    c->sbuf_len = need;
    return 0;
}

/* Frame header parsed; -1 closes the connection. */
static int frame_begin(conn *c, const uint8_t *h)
{
    uint8_t fin = h[0] >> 7, rsv = (h[0] >> 4) & 7, op = h[0] & 15;
    uint64_t len = h[1] & 127;
    if (h[1] & 0x80) {
        conn_lost(c, "protocol error: masked frame from the server");
        return -1;
    }
    if (len == 126)
        len = (uint64_t)h[2] << 8 | h[3];
    else if (len == 127)
        for (int i = 0; i < 8; i++)
            len = (i ? len << 8 : 0) | h[2 + i];
    if (op >= 8) {
        if (!fin || len > 125 || rsv || (op != 8 && op != 9 && op != 10)) {
            conn_lost(c, "protocol error: bad control frame (opcode %u)", op);
            return -1;
        }
        c->ctl_len = 0;
    } else if (op == 0) {
        if (!c->msg_active || rsv) {
            conn_lost(c, "protocol error: unexpected continuation frame");
            return -1;
        }
    } else if (op == 1 || op == 2) {
        if (c->msg_active || (rsv & 3) || ((rsv & 4) && !c->deflate)) {
            conn_lost(c, "protocol error: %s", c->msg_active ? "new message inside a fragmented one" : "RSV bits set");
            return -1;
        }
        c->msg_active = 1;
        c->msg_comp = (rsv & 4) != 0;
        c->msg_len = c->msg_infl = 0;
        c->stamp_len = 0;
        c->sbuf_len = 0;
        if (c->msg_comp && !c->z) {
            c->z = calloc(1, sizeof *c->z);
            if (!c->z || inflateInit2(c->z, -15) != Z_OK)
                die("inflateInit2 failed");
        }
    } else {
        conn_lost(c, "protocol error: opcode %u", op);
        return -1;
    }
    c->opcode = op;
    c->fin = fin;
    c->remaining = len;
    return 0;
}

static int frame_data(conn *c, const uint8_t *p, size_t n)
{
    if (c->opcode >= 8) {
        memcpy(c->ctl + c->ctl_len, p, n);
        c->ctl_len = (uint8_t)(c->ctl_len + n);
        return 0;
    }
    c->msg_len += n;
    if (c->stomp)
        return stomp_collect(c, p, n);
    if (c->msg_comp) {
        if (inflate_feed(c, p, n) < 0) {
            conn_lost(c, "inflate error: %s", c->z->msg ? c->z->msg : "corrupt data");
            return -1;
        }
    } else if (c->stamp_len < 16) {
        size_t k = 16u - c->stamp_len < n ? 16u - c->stamp_len : n;
        memcpy(c->stamp + c->stamp_len, p, k);
        c->stamp_len = (uint8_t)(c->stamp_len + k);
    }
    return 0;
}

static int frame_end(conn *c)
{
    if (c->opcode == 9) {          /* ping: pong with the same payload */
        queue_frame(c, 0x8A, c->ctl, c->ctl_len);
        return 0;
    }
    if (c->opcode == 10)           /* pong */
        return 0;
    if (c->opcode == 8) {          /* close */
        if (c->state == ST_CLOSING) {
            hs_cycle_done(c);
            return -1;
        }
        unsigned code = c->ctl_len >= 2 ? (unsigned)c->ctl[0] << 8 | c->ctl[1] : 1005;
        int rl = c->ctl_len > 2 ? c->ctl_len - 2 : 0;
        conn_lost(c, "server sent close frame: code %u%s%.*s", code, rl ? ", reason: " : "", rl, (const char *)c->ctl + 2);
        return -1;
    }
    if (!c->fin)
        return 0;
    c->msg_active = 0;
    if (c->msg_comp) {
        static const uint8_t tail[4] = { 0, 0, 0xff, 0xff };
        if (inflate_feed(c, tail, 4) < 0) {
            conn_lost(c, "inflate error: %s", c->z->msg ? c->z->msg : "corrupt data");
            return -1;
        }
        if (c->no_ctx || c->z_ended) {
            inflateReset(c->z);
            c->z_ended = 0;
        }
    }
    if (c->stomp)
        return stomp_message(c, c->sbuf, c->sbuf_len);
    on_message(c);
    return 0;
}

static inline size_t header_need(const uint8_t *h)
{
    unsigned l = h[1] & 127;
    return 2 + (l == 126 ? 2 : l == 127 ? 8 : 0) + ((h[1] & 0x80) ? 4 : 0);
}

/* The frame every stamped echo (and fan-out delivery) should be: unmasked header for opt.size
 * with FIN and the text/binary opcode. Set by main() for echo without ticks and for fan-out. */
static uint8_t fast_hdr[10];
static size_t fast_hl, fast_flen;  /* fast_flen 0: no fast path */

static void init_fast_path(void)
{
    if (!((opt.mode == M_ECHO && !TICKS) || opt.mode == M_FANOUT) || opt.size < 16 || opt.stomp)
        return;  /* --stomp subscribers have their own (parse_stomp()) */
    uint8_t h[14], k[4] = { 0 };
    fast_hl = frame_header(h, opt.binary ? 0x82 : 0x81, (uint64_t)opt.size, k) - 4;
    h[1] &= 0x7f;  /* the server's frames are not masked */
    memcpy(fast_hdr, h, fast_hl);
    fast_flen = fast_hl + (size_t)opt.size;
}

/* The accounting of k stamped messages of the expected length taken by the fast path, bad of
 * them without a valid stamp; the latency of the others is already in the histogram if
 * record. The same as k calls of stamped_message(). */
static void fast_messages(conn *c, uint64_t k, uint64_t bad, int record)
{
    if (record)
        hist_n += k - bad;
    for (uint64_t i = 0; i < bad; i++) {
        note(&log_len, "conn %d: message without a valid timestamp", (int)(c - conns));
        errors++;
    }
    if (c->role == R_ECHO) {
        if (measuring) {
            m_msgs += k;
            m_bytes += k * (uint64_t)opt.size;
        }
        c->to_send += (uint32_t)k;
    } else {
        uint64_t before = c->received;
        c->received += k;
        deliveries += k;
        last_delivery = recv_time;
        uint64_t limit = (uint64_t)opt.messages;
        for (uint64_t r = before + 1; r <= c->received; r++)
            if (r > limit) {
                note(&log_len, "conn %d: more messages than were published", (int)(c - conns));
                errors++;
            }
    }
}

/* One step of the general streaming parser at *pp: a frame header (or as much of it as this read
 * holds) or a piece of a payload, up to end. -1: the connection was closed. */
static inline __attribute__((always_inline)) int parse_step(conn *c, const uint8_t **pp, const uint8_t *end)
{
    const uint8_t *p = *pp;
    if (!c->in_payload) {
        const uint8_t *h;
        if (c->hlen == 0 && end - p >= 2 && (size_t)(end - p) >= header_need(p)) {
            h = p;                 /* whole header here: no copy */
            p += header_need(p);
        } else {
            while (p < end && (c->hlen < 2 || c->hlen < header_need(c->hdr)))
                c->hdr[c->hlen++] = *p++;
            *pp = p;
            if (c->hlen < 2 || c->hlen < header_need(c->hdr))
                return 0;          /* rest of the header in a later read (p is at end) */
            h = c->hdr;
            c->hlen = 0;
        }
        *pp = p;
        if (frame_begin(c, h) < 0)
            return -1;
        if (c->remaining == 0)
            return frame_end(c) < 0 ? -1 : 0;
        c->in_payload = 1;
        return 0;
    }
    size_t k = c->remaining < (uint64_t)(end - p) ? (size_t)c->remaining : (size_t)(end - p);
    if (frame_data(c, p, k) < 0)
        return -1;
    *pp = p + k;
    c->remaining -= k;
    if (c->remaining == 0) {
        c->in_payload = 0;
        if (frame_end(c) < 0)
            return -1;
    }
    return 0;
}

/* Parses received bytes in place. -1: the connection was closed.
 * Fast path: while the parser is between messages, every whole frame in the buffer that is
 * byte for byte the expected header is handled right here (stamp checked and parsed, latency
 * recorded, next echo owed) with no per-frame state or copies; anything else (control frames,
 * fragments, frames that span reads, unexpected lengths or opcodes) takes the general parser. */
static int parse(conn *c, const uint8_t *p, size_t n)
{
    const uint8_t *end = p + n;
    int fast = fast_flen && (c->role == R_SUB || (c->role == R_ECHO && !TICKS));
    while (p < end) {
        if (fast && !c->in_payload && !c->hlen && !c->msg_active) {
            const uint8_t *q = p;
            uint64_t t = recv_time, k = 0, bad = 0, st;
            int record = c->role == R_SUB || measuring;
            while ((size_t)(end - q) >= fast_flen && q[0] == fast_hdr[0] && q[1] == fast_hdr[1]
                   && (fast_hl == 2 || !memcmp(q + 2, fast_hdr + 2, fast_hl - 2))) {
                if (__builtin_expect(parse_stamp(q + fast_hl, &st) == 0, 1)) {
                    if (record)
                        hist[hist_index(t > st ? t - st : 0)]++;
                } else {
                    bad++;
                }
                q += fast_flen;
                k++;
            }
            if (k) {
                fast_messages(c, k, bad, record);
                p = q;
            }
            if (p == end)
                break;
        }
        if (parse_step(c, &p, end) < 0)
            return -1;
    }
    return 0;
}

/* parse() for --stomp subscribers (their fast path): while between messages, every whole
 * unfragmented data frame in the buffer is handed to stomp_message() where it lies; anything
 * else takes the general parser, which collects the message (stomp_collect()). */
static int parse_stomp(conn *c, const uint8_t *p, size_t n)
{
    const uint8_t *end = p + n;
    while (p < end) {
        if (!c->in_payload && !c->hlen && !c->msg_active) {
            while (end - p >= 2 && (p[0] == 0x81 || p[0] == 0x82) && !(p[1] & 0x80)) {
                size_t hl = header_need(p);
                if ((size_t)(end - p) < hl)
                    break;
                uint64_t len = p[1] & 127;
                if (len == 126)
                    len = (uint64_t)p[2] << 8 | p[3];
                else if (len == 127)
                    for (int i = 0; i < 8; i++)
                        len = (i ? len << 8 : 0) | p[2 + i];
                if (len > (uint64_t)(end - p) - hl)
                    break;
                p += hl;
                if (stomp_message(c, p, (size_t)len) < 0)
                    return -1;
                p += len;
            }
            if (p == end)
                break;
        }
        if (parse_step(c, &p, end) < 0)
            return -1;
    }
    return 0;
}

/* One read() into the shared buffer, and everything it holds handled.
 * 1: read again (the read filled the buffer, or to_end and it returned data; the socket is
 * edge-triggered); 0: done; -1: the connection was closed (or, in handshake mode, restarted). */
static int read_once(conn *c, int to_end)
{
    ssize_t n = read(c->fd, rbuf, RBUF_SIZE);
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR)
            return errno == EINTR;
        if (c->state == ST_HANDSHAKE || c->state == ST_STOMP)
            conn_failed(c, "read", errno, 1);
        else if (c->state == ST_CLOSING)
            hs_cycle_done(c);
        else
            conn_lost(c, "read: %s", strerror(errno));
        return -1;
    }
    if (n == 0) {
        if (c->state == ST_HANDSHAKE || c->state == ST_STOMP)
            conn_failed(c, c->state == ST_STOMP ? "connection closed during the STOMP set-up"
                           : "connection closed during the upgrade", ECONNRESET, 1);
        else if (c->state == ST_CLOSING)
            hs_cycle_done(c);
        else
            conn_lost(c, "connection closed by the server (EOF)");
        return -1;
    }
    recv_time = now_ns();  /* one clock reading for every frame of this read */
    const uint8_t *data = rbuf;
    size_t len = (size_t)n;
    if (c->state == ST_HANDSHAKE) {
        size_t old = c->hs_len, take = len < HS_CAP - old ? len : HS_CAP - old;
        memcpy(c->hs + old, rbuf, take);
        c->hs_len += take;
        c->hs[c->hs_len] = 0;
        char *e = strstr(c->hs + (old > 3 ? old - 3 : 0), "\r\n\r\n");
        if (!e) {
            if (c->hs_len == HS_CAP) {
                conn_failed(c, "handshake response too long", 0, 0);
                return -1;
            }
            return (size_t)n == RBUF_SIZE || to_end;
        }
        size_t head = (size_t)(e - c->hs) + 4;
        c->hs[head] = 0;
        if (check_response(c, c->hs) < 0) {
            conn_failed(c, "upgrade", 0, 0);
            return -1;
        }
        on_upgraded(c);
        data = rbuf + (head - old);  /* frames that came with the response */
        len -= head - old;
    }
    if (len && (c->stomp ? parse_stomp(c, data, len) : parse(c, data, len)) < 0)
        return -1;
    return (size_t)n == RBUF_SIZE || to_end;
}

/* Readable (edge-triggered): read until a read comes back short (a short read took everything
 * the socket held; later data raises a new edge) - or, when EOF or an error was reported with
 * the event, until read() says so (it comes after the data, and no new edge would) - then send
 * what the frames read are owed in one write. */
static void on_readable(conn *c, uint32_t ev)
{
    int r, to_end = (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
    while ((r = read_once(c, to_end)) > 0)
        ;
    if (r < 0)
        return;
    emit_pending(c);
    if (c->out_len > c->out_off && conn_flush(c) < 0) {
        if (c->state == ST_CLOSING)
            hs_cycle_done(c);  /* the server closed first */
        else
            conn_lost(c, "write: %s", strerror(errno));
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Event loop                                                                                 */

static int timer_fd = -1;
static void (*on_timer)(void);
static void (*each_turn)(void);

/* Starts queued connections within the in-flight bound, and retries that are due. */
static void pump(uint64_t now, uint64_t *next_due)
{
    for (int i = 0; i < nretry; ) {
        conn *c = &conns[retryq[i]];
        if (stopping) {
            c->state = ST_DEAD;
            if (opt.mode != M_HANDSHAKE)
                n_failed++;
            retryq[i] = retryq[--nretry];
        } else if (c->not_before <= now && inflight < max_inflight) {
            retryq[i] = retryq[--nretry];
            conn_start(c);  /* may append to retryq again; that entry is seen later */
        } else {
            if (c->not_before < *next_due)
                *next_due = c->not_before;
            i++;
        }
    }
    while (!stopping && fresh_next < fresh_end && inflight < max_inflight)
        conn_start(&conns[fresh_next++]);
}

static void check_timeouts(uint64_t now)
{
    for (int i = 0; i < nconns; i++) {
        conn *c = &conns[i];
        if ((c->state == ST_CONNECTING || c->state == ST_HANDSHAKE || c->state == ST_STOMP) && now > c->deadline)
            conn_failed(c, "timeout", ETIMEDOUT, 1);
        else if (c->state == ST_CLOSING && now > c->deadline) {
            n_open--;
            conn_failed(c, "no close frame from the server", ETIMEDOUT, 0);
        }
    }
}

/* Runs until `deadline` or until done() returns nonzero. */
static void run_until(uint64_t deadline, int (*done)(void))
{
    static struct epoll_event evs[MAX_EVENTS];
    uint64_t next_scan = now_ns() + NS / 10;
    for (;;) {
        uint64_t now = now_ns(), wake = deadline;
        pump(now, &wake);
        if (each_turn)
            each_turn();
        if ((done && done()) || now >= deadline)
            return;
        if (now >= next_scan) {
            check_timeouts(now);
            next_scan = now + NS / 10;
        }
        if (next_scan < wake)
            wake = next_scan;
        int ms = wake > now ? (int)((wake - now + 999999) / 1000000) : 0;
        int n = epoll_wait(epfd, evs, MAX_EVENTS, ms);
        if (n < 0 && errno != EINTR)
            die("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < n; i++) {
            uint32_t idx = (uint32_t)evs[i].data.u64, ev = evs[i].events;
            if (idx == TIMER_TAG) {
                on_timer();
                continue;
            }
            conn *c = &conns[idx];
            if ((uint32_t)(evs[i].data.u64 >> 32) != c->gen || c->fd < 0)
                continue;  /* stale */
            if (c->state == ST_CONNECTING) {
                on_connected(c);
                continue;
            }
            if ((ev & EPOLLOUT) && conn_flush(c) < 0) {
                if (c->state == ST_HANDSHAKE || c->state == ST_STOMP)
                    conn_failed(c, "write", errno, 1);
                else if (c->state == ST_CLOSING)
                    hs_cycle_done(c);
                else
                    conn_lost(c, "write: %s", strerror(errno));
                continue;
            }
            if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
                on_readable(c, ev);
        }
    }
}

static int all_settled(void) { return fresh_next == fresh_end && nretry == 0 && inflight == 0; }

/* Opens slots [lo, hi) with the in-flight bound and waits until each is open or has failed. */
static void open_all(int lo, int hi)
{
    fresh_next = lo;
    fresh_end = hi;
    run_until(now_ns() + 300 * NS, all_settled);
    if (!all_settled()) {
        fprintf(stderr, "petrel-load: connection set-up did not finish in 300 s\n");
        stopping = 1;
        for (int i = lo; i < hi; i++)
            if (conns[i].state == ST_CONNECTING || conns[i].state == ST_HANDSHAKE || conns[i].state == ST_STOMP)
                conn_failed(&conns[i], "timeout", ETIMEDOUT, 0);
        run_until(now_ns(), NULL);
        stopping = 0;
    }
}

static void close_all(void)
{
    for (int i = 0; i < nconns; i++)
        conn_close_fd(&conns[i]);
}

/* ------------------------------------------------------------------------------------------ */
/* Stock ticks (deflate)                                                                      */

static const struct { const char *sym, *name; double price; } tickers[] = {
    { "AAPL", "Apple Inc.", 189.25 }, { "MSFT", "Microsoft Corporation", 415.10 },
    { "GOOGL", "Alphabet Inc.", 141.80 }, { "AMZN", "Amazon.com, Inc.", 178.15 },
    { "NVDA", "NVIDIA Corporation", 875.30 }, { "META", "Meta Platforms, Inc.", 502.30 },
    { "TSLA", "Tesla, Inc.", 175.20 }, { "BRK.B", "Berkshire Hathaway Inc.", 408.50 },
    { "JPM", "JPMorgan Chase & Co.", 195.40 }, { "V", "Visa Inc.", 279.60 },
    { "JNJ", "Johnson & Johnson", 158.20 }, { "WMT", "Walmart Inc.", 60.10 },
    { "PG", "The Procter & Gamble Company", 161.30 }, { "MA", "Mastercard Incorporated", 472.90 },
    { "UNH", "UnitedHealth Group Incorporated", 492.40 }, { "HD", "The Home Depot, Inc.", 381.70 },
    { "XOM", "Exxon Mobil Corporation", 113.50 }, { "CVX", "Chevron Corporation", 155.80 },
    { "KO", "The Coca-Cola Company", 60.25 }, { "PEP", "PepsiCo, Inc.", 168.90 },
    { "ABBV", "AbbVie Inc.", 178.30 }, { "MRK", "Merck & Co., Inc.", 127.60 },
    { "COST", "Costco Wholesale Corporation", 725.40 }, { "AVGO", "Broadcom Inc.", 1295.00 },
    { "ADBE", "Adobe Inc.", 505.20 }, { "CRM", "Salesforce, Inc.", 301.50 },
    { "NFLX", "Netflix, Inc.", 615.80 }, { "AMD", "Advanced Micro Devices, Inc.", 178.60 },
    { "INTC", "Intel Corporation", 42.80 }, { "CSCO", "Cisco Systems, Inc.", 49.90 },
    { "ORCL", "Oracle Corporation", 125.30 }, { "DIS", "The Walt Disney Company", 112.40 },
    { "NKE", "NIKE, Inc.", 94.10 }, { "MCD", "McDonald's Corporation", 281.20 },
    { "BA", "The Boeing Company", 190.70 }, { "IBM", "International Business Machines Corporation", 191.30 },
    { "QCOM", "QUALCOMM Incorporated", 168.40 }, { "PYPL", "PayPal Holdings, Inc.", 64.20 },
    { "UBER", "Uber Technologies, Inc.", 77.90 }, { "SBUX", "Starbucks Corporation", 91.50 },
};
#define NTICKERS (int)(sizeof tickers / sizeof tickers[0])

static char **load_lines(int *count)
{
    int cap = 2048, n = 0;
    char **lines = malloc(sizeof *lines * (size_t)cap);
    if (!lines)
        die("out of memory");
    if (opt.ticks) {
        FILE *f = fopen(opt.ticks, "r");
        if (!f)
            die("%s: %s", opt.ticks, strerror(errno));
        char *line = NULL;
        size_t lcap = 0;
        ssize_t l;
        while ((l = getline(&line, &lcap, f)) >= 0) {
            while (l > 0 && (line[l - 1] == '\n' || line[l - 1] == '\r'))
                line[--l] = 0;
            if (l == 0)
                continue;
            if (n == cap && !(lines = realloc(lines, sizeof *lines * (size_t)(cap *= 2))))
                die("out of memory");
            lines[n++] = strdup(line);
        }
        free(line);
        fclose(f);
        if (n == 0)
            die("%s: no lines", opt.ticks);
    } else {
        /* ~2000 ticks: random walks from the table's prices, a fixed seed (same lines every run). */
        uint64_t saved = rng_state;
        rng_state = 0x9E3779B97F4A7C15ull;
        double price[NTICKERS];
        long volume[NTICKERS];
        for (int i = 0; i < NTICKERS; i++) {
            price[i] = tickers[i].price;
            volume[i] = 100000 + (long)(rng() % 900000);
        }
        long ms = 0;
        for (; n < 2000; n++) {
            int t = (int)(rng() % NTICKERS);
            price[t] *= 1 + (rng_unit() - 0.5) * 0.004;
            volume[t] += 100 * (long)(1 + rng() % 50);
            ms += (long)(rng() % 250);
            double change = price[t] - tickers[t].price;
            char buf[512];
            snprintf(buf, sizeof buf,
                "{\"ticker\":\"%s\",\"company\":\"%s\",\"price\":%.2f,\"change\":%.2f,\"changePercent\":%.2f,"
                "\"volume\":%ld,\"time\":\"2024-03-15T%02ld:%02ld:%02ld.%03ldZ\"}",
                tickers[t].sym, tickers[t].name, price[t], change, change / tickers[t].price * 100,
                volume[t], 9 + (30 * 60 + ms / 1000) / 3600, (30 + ms / 60000) % 60, ms / 1000 % 60, ms % 1000);
            lines[n] = strdup(buf);
        }
        rng_state = saved;
    }
    *count = n;
    return lines;
}

/* Compresses each line on its own (raw deflate, sync flush, 00 00 ff ff stripped) and frames it
 * (FIN, RSV1, text, masked with df_key). Independent messages are valid under any takeover. */
static void prepare_deflate(void)
{
    char **lines = load_lines(&nlines);
    line_len = malloc(sizeof *line_len * (size_t)nlines);
    df_off = malloc(sizeof *df_off * (size_t)nlines);
    df_len = malloc(sizeof *df_len * (size_t)nlines);
    if (!line_len || !df_off || !df_len)
        die("out of memory");
    z_stream d = { 0 };
    if (deflateInit2(&d, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        die("deflateInit2 failed");
    size_t total = 0, cap = 0;
    for (int i = 0; i < nlines; i++)
        cap += deflateBound(&d, strlen(lines[i])) + 32;
    df_frames = malloc(cap);
    uint8_t *tmp = malloc(cap);
    if (!df_frames || !tmp)
        die("out of memory");
    for (int i = 0; i < nlines; i++) {
        size_t l = strlen(lines[i]);
        /* --plain-ticks, the baseline of the deflate scenario: the same lines, uncompressed. */
        const uint8_t *payload = (const uint8_t *)lines[i];
        size_t cl = l;
        uint8_t b0 = 0x81;
        if (!opt.plain_ticks) {
            if (!opt.client_context)
                deflateReset(&d);
            d.next_in = (Bytef *)lines[i];
            d.avail_in = (uInt)l;
            d.next_out = tmp;
            d.avail_out = (uInt)cap;
            if (deflate(&d, Z_SYNC_FLUSH) != Z_OK || d.avail_in)
                die("deflate failed");
            cl = cap - d.avail_out;
            if (cl < 4 || memcmp(tmp + cl - 4, "\0\0\xff\xff", 4) != 0)
                die("deflate: no sync flush marker");
            cl -= 4;
            payload = tmp;
            b0 = 0xC1;
        }
        uint8_t *f = df_frames + total;
        size_t hl = frame_header(f, b0, cl, df_key);
        for (size_t j = 0; j < cl; j++)
            f[hl + j] = payload[j] ^ df_key[j & 3];
        line_len[i] = (uint32_t)l;
        df_off[i] = (uint32_t)total;
        df_len[i] = (uint32_t)(hl + cl);
        total += hl + cl;
        df_raw_total += l;
        df_comp_total += cl;
        if (l > max_line_len)
            max_line_len = l;
        free(lines[i]);
    }
    deflateEnd(&d);
    free(tmp);
    free(lines);
}

/* ------------------------------------------------------------------------------------------ */
/* JSON output                                                                                */

static void json_str(const char *k, const char *v)
{
    printf("\"%s\":\"", k);
    for (; *v; v++) {
        if (*v == '"' || *v == '\\')
            printf("\\%c", *v);
        else if ((unsigned char)*v < 0x20)
            printf("\\u%04x", *v);
        else
            putchar(*v);
    }
    printf("\",");
}

static void json_head(void)
{
    printf("{");
    json_str("mode", mode_names[opt.mode]);
    json_str("host", opt.host);
    printf("\"port\":%d,", opt.port);
}

static void json_latency(void)
{
    printf("\"p50_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f,",
           hist_pct_us(0.50), hist_pct_us(0.99), hist_pct_us(0.999));
}

/* ------------------------------------------------------------------------------------------ */
/* Modes                                                                                      */

static void init_slots(int n, int role, const char *path)
{
    for (int i = nconns; i < nconns + n; i++) {
        conn *c = &conns[i];
        c->fd = -1;
        c->role = (uint8_t)role;
        c->path = path;
        uint64_t r = rng();
        memcpy(c->key, &r, 4);
    }
    nconns += n;
}

static int mode_echo(void)
{
    init_slots(opt.conns, R_ECHO, opt.path);
    for (int i = 0; i < nconns; i++) {
        conn *c = &conns[i];
        if (TICKS) {
            c->fifo = malloc(sizeof *c->fifo * (size_t)opt.window);
            if (!c->fifo)
                die("out of memory");
            /* Spread over the lines; with one compressed stream every connection starts it. */
            c->cursor = opt.client_context ? 0 : (uint32_t)((uint64_t)i * 997 % (uint64_t)nlines);
        } else {
            build_template(c, opt.size, opt.binary);
        }
        /* room for a full window plus control frames; grows if ever needed */
        size_t frame = TICKS ? 1024 : c->tmpl_len;
        c->out_cap = (size_t)opt.window * frame + 1024;
        if (!(c->out = malloc(c->out_cap)))
            die("out of memory");
    }
    open_all(0, nconns);
    if (n_open == 0)
        die("no connection could be opened (%d failed)", n_failed);

    sending = 1;
    for (int i = 0; i < nconns; i++) {
        conn *c = &conns[i];
        if (c->state != ST_OPEN)
            continue;
        c->to_send = (uint32_t)opt.window;
        emit_pending(c);
        if (conn_flush(c) < 0)
            conn_lost(c, "write: %s", strerror(errno));
    }
    run_until(now_ns() + (uint64_t)(opt.warmup * NS), NULL);
    measuring = 1;
    memset(hist, 0, sizeof hist);
    hist_n = 0;
    uint64_t t0 = now_ns();
    double cpu0 = cpu_seconds();
    run_until(t0 + (uint64_t)(opt.seconds * NS), NULL);
    double cpu = cpu_seconds() - cpu0, el = (double)(now_ns() - t0) / NS;
    measuring = 0;

    json_head();
    json_str("path", opt.path);
    printf("\"conns\":%d,\"connected\":%d,\"window\":%d,", opt.conns, n_established, opt.window);
    if (TICKS && opt.ticks)
        json_str("ticks", opt.ticks);
    if (opt.plain_ticks)
        printf("\"plain_ticks\":true,");
    if (opt.client_context)
        printf("\"client_context\":true,");
    if (TICKS)
        printf("\"deflate\":%s,", opt.deflate ? "true" : "false");
    if (TICKS)
        printf("\"lines\":%d,\"avg_line\":%.1f,\"send_ratio\":%.3f,",
               nlines, (double)df_raw_total / nlines, (double)df_comp_total / (double)df_raw_total);
    else
        printf("\"size\":%d,\"binary\":%s,\"deflate\":false,", opt.size, opt.binary ? "true" : "false");
    printf("\"seconds\":%.2f,\"warmup\":%.2f,\"msgs\":%" PRIu64 ",\"msgs_per_s\":%.1f,",
           opt.seconds, opt.warmup, m_msgs, m_msgs / el);
    if (TICKS)
        printf("\"mb_per_s\":%.2f,\"wire_mb_per_s\":%.2f,\"ratio\":%.3f,", m_infl / el / 1e6, m_wire / el / 1e6,
               m_infl ? (double)m_wire / (double)m_infl : 0.0);
    else {
        printf("\"mb_per_s\":%.2f,", m_bytes / el / 1e6);
        json_latency();
    }
    printf("\"cpu\":%.2f,\"errors\":%lu,\"still_open\":%d}\n", cpu / el, errors, n_open);
    return m_msgs == 0 ? 1 : 0;
}

static conn *pub;
static uint64_t published, first_publish, last_publish;

static void publish(uint32_t k)
{
    if (pub->state != ST_OPEN || published >= (uint64_t)opt.messages)
        return;
    if (k > (uint64_t)opt.messages - published)
        k = (uint32_t)((uint64_t)opt.messages - published);
    emit_stamped(pub, k);
    if (published == 0)
        first_publish = now_ns();
    published += k;
    if (published == (uint64_t)opt.messages) {
        last_publish = now_ns();
        struct itimerspec off = { { 0, 0 }, { 0, 0 } };
        timerfd_settime(timer_fd, 0, &off, NULL);
    }
    if (conn_flush(pub) < 0)
        conn_lost(pub, "publisher write: %s", strerror(errno));
}

static void pub_timer(void)
{
    uint64_t expirations = 0;
    if (read(timer_fd, &expirations, sizeof expirations) != sizeof expirations)
        return;
    publish(expirations > UINT32_MAX ? UINT32_MAX : (uint32_t)expirations);
}

/* --interval-us 0: publish as fast as the publisher's socket takes it. */
static void pub_flood(void)
{
    while (pub->state == ST_OPEN && published < (uint64_t)opt.messages && pub->out_len == pub->out_off)
        publish(64);  /* until the socket is full; EPOLLOUT drains it, then more */
}

static int fanout_done(void)
{
    if (deliveries >= (uint64_t)opt.conns * (uint64_t)opt.messages)
        return 1;
    if (pub->state != ST_OPEN && published < (uint64_t)opt.messages)
        return 1;  /* publisher lost: nothing more will come */
    return published == (uint64_t)opt.messages && now_ns() >= last_publish + (uint64_t)(opt.seconds * NS);
}

static int mode_fanout(void)
{
    init_slots(opt.conns, R_SUB, opt.stomp ? "/stomp" : "/sub");
    init_slots(1, R_PUB, "/pub");
    pub = &conns[opt.conns];
    build_template(pub, opt.size, opt.binary);
    open_all(0, opt.conns);
    int subs = n_open;
    if (subs == 0)
        die("no subscriber could connect (%d failed)", n_failed);
    open_all(opt.conns, opt.conns + 1);
    if (pub->state != ST_OPEN)
        die("the publisher could not connect");
    run_until(now_ns() + NS / 5, NULL);  /* settle */

    double cpu0 = cpu_seconds();
    uint64_t t0 = now_ns();
    if (opt.interval_us > 0) {
        timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        if (timer_fd < 0)
            die("timerfd_create: %s", strerror(errno));
        struct epoll_event e = { .events = EPOLLIN, .data.u64 = TIMER_TAG };
        epoll_ctl(epfd, EPOLL_CTL_ADD, timer_fd, &e);
        on_timer = pub_timer;
        struct itimerspec its = {
            .it_interval = { opt.interval_us / 1000000, opt.interval_us % 1000000 * 1000 },
            .it_value = { 0, 1 },  /* first message at once */
        };
        timerfd_settime(timer_fd, 0, &its, NULL);
    } else {
        each_turn = pub_flood;
    }
    run_until(UINT64_MAX, fanout_done);
    each_turn = NULL;
    uint64_t t1 = now_ns();
    double cpu = cpu_seconds() - cpu0;

    uint64_t expected = (uint64_t)opt.conns * (uint64_t)opt.messages;
    uint64_t lost = expected > deliveries ? expected - deliveries : 0;
    double span = last_delivery > first_publish ? (double)(last_delivery - first_publish) / NS : 0;
    if (published < (uint64_t)opt.messages)
        fprintf(stderr, "petrel-load: only %" PRIu64 " of %ld messages were published\n", published, opt.messages);
    if (lost)
        fprintf(stderr, "petrel-load: %" PRIu64 " of %" PRIu64 " deliveries lost\n", lost, expected);
    json_head();
    printf("\"conns\":%d,\"connected\":%d,\"messages\":%ld,\"size\":%d,\"binary\":%s,\"stomp\":%s,"
           "\"interval_us\":%ld,\"seconds\":%.2f,", opt.conns, subs, opt.messages, opt.size,
           opt.binary ? "true" : "false", opt.stomp ? "true" : "false", opt.interval_us, opt.seconds);
    printf("\"published\":%" PRIu64 ",\"deliveries\":%" PRIu64 ",\"expected\":%" PRIu64 ",\"lost\":%" PRIu64 ","
           "\"deliveries_per_s\":%.1f,\"publish_s\":%.3f,\"delivery_s\":%.3f,",
           published, deliveries, expected, lost, span > 0 ? deliveries / span : 0.0,
           last_publish ? (double)(last_publish - first_publish) / NS : 0.0, span);
    json_latency();
    printf("\"cpu\":%.2f,\"errors\":%lu}\n", cpu / ((double)(t1 - t0) / NS), errors);
    return lost ? 1 : 0;
}

static int mode_handshake(void)
{
    init_slots(opt.conns, R_HS, opt.path);
    max_inflight = opt.conns;
    double cpu0 = cpu_seconds();
    uint64_t t0 = now_ns();
    fresh_next = 0;
    fresh_end = nconns;
    run_until(t0 + (uint64_t)(opt.seconds * NS), NULL);
    uint64_t t1 = now_ns();
    double cpu = cpu_seconds() - cpu0, el = (double)(t1 - t0) / NS;
    stopping = 1;
    json_head();
    json_str("path", opt.path);
    printf("\"conns\":%d,\"seconds\":%.2f,\"handshakes\":%" PRIu64 ",\"handshakes_per_s\":%.1f,"
           "\"failures\":%" PRIu64 ",\"cpu\":%.2f,\"errors\":%lu}\n",
           opt.conns, opt.seconds, hs_done, hs_done / opt.seconds, hs_fail, cpu / el, errors);
    return hs_done == 0 ? 1 : 0;
}

static long read_rss_kb(int pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        die("%s: %s", path, strerror(errno));
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    if (kb < 0)
        die("%s: no VmRSS", path);
    return kb;
}

static int mode_idle(void)
{
    init_slots(opt.conns, R_IDLE, opt.path);
    long before = 0, after = 0;
    /* Warm-up: the first connections touch the server's handshake code and its one-off buffers
     * for the first time (code pages count in RSS). They stay open; the figure is the cost of
     * each connection after them. */
    int warm = nconns >= 1000 ? 100 : 0;
    if (warm) {
        open_all(0, warm);
        if (n_open < warm)
            die("warm-up: only %d of %d connections opened", n_open, warm);
    }
    run_until(now_ns() + NS / 2, NULL);
    if (opt.server_pid)
        before = read_rss_kb(opt.server_pid);
    uint64_t t0 = now_ns();
    open_all(warm, nconns);
    double setup = (double)(now_ns() - t0) / NS;
    if (n_open == 0)
        die("no connection could be opened (%d failed)", n_failed);
    run_until(now_ns() + NS, NULL);
    if (opt.server_pid)
        after = read_rss_kb(opt.server_pid);
    int connected = n_open;
    run_until(now_ns() + (uint64_t)(opt.seconds * NS), NULL);
    json_head();
    json_str("path", opt.path);
    printf("\"conns\":%d,\"deflate\":%s,\"seconds\":%.2f,\"server_pid\":%d,\"connected\":%d,\"setup_s\":%.3f,",
           opt.conns, opt.deflate ? "true" : "false", opt.seconds, opt.server_pid, connected, setup);
    if (opt.server_pid)
        printf("\"rss_before_kb\":%ld,\"rss_after_kb\":%ld,\"bytes_per_conn\":%.0f,",
               before, after, (double)(after - before) * 1024.0 / (connected - warm));
    printf("\"warmup_conns\":%d,", warm);
    printf("\"still_open\":%d,\"errors\":%lu}\n", n_open, errors);
    return connected < opt.conns ? 1 : 0;
}

/* ------------------------------------------------------------------------------------------ */

static long num(const char *flag, const char *v, long lo, long hi)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || end == v || x < lo || x > hi)
        die("%s: bad value '%s' (%ld..%ld)", flag, v, lo, hi);
    return x;
}

static double fnum(const char *flag, const char *v)
{
    char *end;
    double x = strtod(v, &end);
    if (*end || end == v || !(x >= 0) || x > 1e6)
        die("%s: bad value '%s'", flag, v);
    return x;
}

static void parse_args(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "-h") || !strcmp(f, "--help")) {
            usage(stdout);
            exit(0);
        }
        if (!strcmp(f, "--binary")) { opt.binary = 1; continue; }
        if (!strcmp(f, "--deflate")) { opt.deflate = 1; continue; }
        if (!strcmp(f, "--plain-ticks")) { opt.plain_ticks = 1; continue; }
        if (!strcmp(f, "--client-context")) { opt.client_context = 1; continue; }
        if (!strcmp(f, "--stomp")) { opt.stomp = 1; continue; }
        if (i + 1 >= argc) {
            usage(stderr);
            die("%s: missing value or unknown flag", f);
        }
        const char *v = argv[++i];
        if (!strcmp(f, "--host")) opt.host = v;
        else if (!strcmp(f, "--port")) opt.port = (int)num(f, v, 1, 65535);
        else if (!strcmp(f, "--mode")) {
            int m = -1;
            for (int k = 0; k < 4; k++)
                if (!strcmp(v, mode_names[k]))
                    m = k;
            if (m < 0)
                die("--mode: echo, fanout, handshake or idle");
            opt.mode = (enum mode)m;
        }
        else if (!strcmp(f, "--conns")) opt.conns = (int)num(f, v, 1, 1000000);
        else if (!strcmp(f, "--seconds")) opt.seconds = fnum(f, v);
        else if (!strcmp(f, "--warmup")) opt.warmup = fnum(f, v);
        else if (!strcmp(f, "--path")) opt.path = v;
        else if (!strcmp(f, "--window")) opt.window = (int)num(f, v, 1, 1000000);
        else if (!strcmp(f, "--size")) opt.size = (int)num(f, v, 0, 1 << 30);
        else if (!strcmp(f, "--ticks")) opt.ticks = v;
        else if (!strcmp(f, "--messages")) opt.messages = num(f, v, 1, 1L << 40);
        else if (!strcmp(f, "--interval-us")) opt.interval_us = num(f, v, 0, 100000000);
        else if (!strcmp(f, "--server-pid")) opt.server_pid = (int)num(f, v, 1, 1 << 30);
        else if (!strcmp(f, "--inflight")) opt.inflight = (int)num(f, v, 1, 1000000);
        else {
            usage(stderr);
            die("unknown flag %s", f);
        }
    }
    if (opt.seconds < 0)
        opt.seconds = opt.mode == M_IDLE ? 2 : 5;
    if (opt.size < 0)
        opt.size = opt.mode == M_FANOUT ? 100 : 20;
    if ((opt.mode == M_ECHO && !opt.deflate) || opt.mode == M_FANOUT) {
        if (opt.size < 16)
            die("--size must be at least 16 (the timestamp)");
    }
    if (opt.deflate && opt.mode != M_ECHO && opt.mode != M_IDLE)
        die("--deflate applies to echo and idle modes");
    if (opt.client_context && (!opt.deflate || opt.mode != M_ECHO))
        die("--client-context needs --deflate in echo mode");
    if (opt.stomp && opt.mode != M_FANOUT)
        die("--stomp applies to fanout mode");
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur != RLIM_INFINITY && (rlim_t)opt.conns + 16 > rl.rlim_cur)
        fprintf(stderr, "petrel-load: warning: RLIMIT_NOFILE is %lu, fewer than --conns needs\n",
                (unsigned long)rl.rlim_cur);

    if (getrandom(&rng_state, sizeof rng_state, 0) != sizeof rng_state)
        rng_state = now_ns();
    rng_state |= 1;
    uint64_t r = rng();
    memcpy(df_key, &r, 4);

    char check[32];  /* RFC 6455's example */
    ws_accept("dGhlIHNhbXBsZSBub25jZQ==", check);
    if (strcmp(check, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="))
        die("SHA-1/base64 self-test failed");

    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
    char port[16];
    snprintf(port, sizeof port, "%d", opt.port);
    int gai = getaddrinfo(opt.host, port, &hints, &server_addr);
    if (gai)
        die("%s: %s", opt.host, gai_strerror(gai));

    if (TICKS && opt.mode == M_ECHO)
        prepare_deflate();
    init_fast_path();

    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0)
        die("epoll_create1: %s", strerror(errno));
    int slots = opt.conns + (opt.mode == M_FANOUT);
    conns = calloc((size_t)slots, sizeof *conns);
    retryq = malloc(sizeof *retryq * (size_t)slots);
    if (!conns || !retryq)
        die("out of memory");
    max_inflight = opt.inflight;

    int rc;
    switch (opt.mode) {
    case M_ECHO: rc = mode_echo(); break;
    case M_FANOUT: rc = mode_fanout(); break;
    case M_HANDSHAKE: rc = mode_handshake(); break;
    default: rc = mode_idle(); break;
    }
    fflush(stdout);
    close_all();
    return rc;
}
