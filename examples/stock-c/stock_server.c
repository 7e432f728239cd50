/* The stock-ticker push server in C, on the installed libpetrel (pkg-config petrel); same flags
 * and behaviour as examples/stock-swift and examples/stock-python (see examples/README.md).
 *
 *   make -C examples/stock-c && examples/stock-c/stock-server --port 8080
 */
#define _GNU_SOURCE
#include <petrel.h>

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TOPIC "ticks"
#define RING 4096
#define MAX_STOCKS 512

typedef struct {
    char ticker[16];
    char company[96];
    long open_cents, cents;
} stock;

enum { WEBSOCKET, SSE, STOMP, TRANSPORTS };
static const char *const transport_names[TRANSPORTS] = {"websocket", "sse", "stomp"};

/* A connection's state: malloc'd in on_open, which stores it as the connection's conn_data;
 * every later callback of the connection gets it back (no lookup, no lock), and on_close frees
 * it. There is no list of clients: what asks about all of them (/health, POST /ack) visits the
 * open connections with petrel_server_each_conn. Acknowledgements need no lock: acked only
 * moves forward, by compare-and-swap. */
typedef struct client {
    _Atomic uint64_t acked; /* the last event id the client showed (its {"ack":N}, STOMP ACKs, POST /ack) */
    int transport;          /* WEBSOCKET, SSE or STOMP; set in on_open, then only read */
    char client[40];        /* the page's client id (SSE acks name it) */
} client;

static petrel_server *server;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER; /* orders ticks' arrival, snapshots, subscriptions */
static stock stocks[MAX_STOCKS];     /* the market as observed on the topic (under lock) */
static stock feed_stocks[MAX_STOCKS];       /* the feed's own prices (the main thread's) */
static int stock_count;
static _Atomic uint64_t last_id; /* written under lock; acknowledgements read it without */
static uint64_t published;
static int64_t times_ms[RING];
static volatile sig_atomic_t stopping;
static struct timespec started;

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Writes "-1.23" for -123 cents. */
static int money(char *out, size_t cap, long cents) {
    long a = labs(cents);
    return snprintf(out, cap, "%s%ld.%02ld", cents < 0 ? "-" : "", a / 100, a % 100);
}

/* The fields of one stock as JSON members (names have no characters that need escaping: the
 * loader rejects quotes, backslashes and control characters). */
static int stock_json(char *out, size_t cap, const stock *s) {
    char price[32], change[32];
    money(price, sizeof price, s->cents);
    money(change, sizeof change, s->cents - s->open_cents);
    double pct = (double)(s->cents - s->open_cents) / (double)s->open_cents * 100.0;
    return snprintf(out, cap, "\"ticker\":\"%s\",\"company\":\"%s\",\"price\":%s,\"change\":%s,\"changePercent\":%.2f",
                    s->ticker, s->company, price, change, pct);
}

static void load_stocks(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) {
        perror(path);
        exit(2);
    }
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        n++;
        line[strcspn(line, "\r\n")] = 0;
        if (n == 1 || line[0] == 0) continue; /* header, blank lines */
        char *ticker = strtok(line, ","), *company = strtok(NULL, ","), *price = strtok(NULL, ",");
        char *end = NULL;
        double p = price ? strtod(price, &end) : 0;
        if (!ticker || !company || !price || *end || p <= 0 || strlen(ticker) >= sizeof stocks[0].ticker ||
            strlen(company) >= sizeof stocks[0].company || strpbrk(company, "\"\\") || strpbrk(ticker, "\"\\") ||
            stock_count == MAX_STOCKS) {
            fprintf(stderr, "stock-server: %s:%d: expected ticker,company,price\n", path, n);
            exit(2);
        }
        stock *s = &stocks[stock_count++];
        snprintf(s->ticker, sizeof s->ticker, "%s", ticker);
        snprintf(s->company, sizeof s->company, "%s", company);
        s->open_cents = s->cents = (long)(p * 100 + 0.5);
    }
    fclose(f);
    if (stock_count == 0) {
        fprintf(stderr, "stock-server: %s: no stocks\n", path);
        exit(2);
    }
}

static double uniform(double lo, double hi) { return lo + (hi - lo) * ((double)random() / (double)RAND_MAX); }

/* The feed: moves one random stock of its own prices by a small random walk and publishes the
 * tick; the engine writes its id over {{id}}. Returns the publish's status. */
static petrel_status tick(void) {
    int i = (int)(random() % stock_count);
    stock s = feed_stocks[i];
    long step = (long)((double)s.cents * uniform(0, 0.005) + 0.5);
    if (step < 1) step = 1;
    s.cents += (random() & 1) ? step : -step;
    if (s.cents < 1) s.cents = 1;
    char fields[256], json[512];
    stock_json(fields, sizeof fields, &s);
    int n = snprintf(json, sizeof json, "{\"type\":\"tick\",\"id\":{{id}},%s,\"time\":%lld}", fields, (long long)now_ms());
    petrel_status st = petrel_server_publish(server, TOPIC, PETREL_TEXT | PETREL_STAMP_ID, json, (size_t)n, s.ticker, NULL);
    if (st == PETREL_OK) feed_stocks[i].cents = s.cents;
    return st;
}

/* The topic's observer: every tick, whoever published it (with an engine, the history read at
 * start first). Its ticker is its key; its price and time are read from it. */
static void on_tick(void *ud, petrel_server *srv, const char *topic, uint64_t event_id, int32_t kind, const uint8_t *data,
                    size_t len, const char *key) {
    (void)ud, (void)srv, (void)topic, (void)kind;
    char text[512];
    if (len >= sizeof text || key == NULL) return;
    memcpy(text, data, len);
    text[len] = 0;
    const char *price = strstr(text, "\"price\":"), *at = strstr(text, "\"time\":");
    if (!price || !at) return;
    double p = strtod(price + 8, NULL);
    long long t = strtoll(at + 7, NULL, 10);
    pthread_mutex_lock(&lock);
    for (int i = 0; i < stock_count; i++)
        if (strcmp(stocks[i].ticker, key) == 0) stocks[i].cents = (long)(p * 100 + (p < 0 ? -0.5 : 0.5));
    last_id = event_id;
    published++;
    times_ms[event_id % RING] = t;
    pthread_mutex_unlock(&lock);
}

/* The snapshot: every price and the id of the last tick in them (malloc'd; NULL if out of
 * memory). The caller holds the lock. */
static char *snapshot(size_t *len) {
    size_t cap = 128 + (size_t)stock_count * 300, n;
    char *snap = malloc(cap);
    if (!snap) return NULL;
    n = (size_t)snprintf(snap, cap, "{\"type\":\"snapshot\",\"id\":%llu,\"time\":%lld,\"stocks\":[", (unsigned long long)last_id,
                         (long long)now_ms());
    for (int i = 0; i < stock_count; i++) {
        n += (size_t)snprintf(snap + n, cap - n, "%s{", i ? "," : "");
        n += (size_t)stock_json(snap + n, cap - n, &stocks[i]);
        n += (size_t)snprintf(snap + n, cap - n, "}");
    }
    n += (size_t)snprintf(snap + n, cap - n, "]}");
    *len = n;
    return snap;
}

/* A new client's state (NULL when out of memory: the connection then goes on uncounted). */
static client *new_client(uint64_t acked, int transport) {
    client *c = calloc(1, sizeof *c);
    if (c) atomic_init(&c->acked, acked), c->transport = transport;
    return c;
}

static void on_open(void *ud, petrel_server *srv, uint64_t conn, void **conn_data) {
    (void)ud;
    char path[64];
    size_t len = 0;
    int32_t is_stomp = 0;
    if (petrel_conn_is_stomp(srv, conn, &is_stomp) == PETREL_OK && is_stomp) {
        /* A STOMP client: its SUBSCRIBE subscribes it (on_stomp); its ACKs say how far it is. */
        *conn_data = new_client(atomic_load(&last_id), STOMP);
        return;
    }
    if (petrel_conn_path(srv, conn, path, sizeof path, &len) != PETREL_OK) return;
    int sse = strcmp(path, "/events") == 0;
    if (!sse && strcmp(path, "/stream") != 0) {
        petrel_conn_close(srv, conn, 1008, "the stream is at /stream");
        return;
    }
    pthread_mutex_lock(&lock);
    uint64_t from = last_id, resume = 0;
    if (petrel_conn_last_event_id(srv, conn, &resume) == PETREL_OK && petrel_conn_subscribe_after(srv, conn, TOPIC, resume) == PETREL_OK) {
        from = resume;
    } else {
        size_t n = 0;
        char *snap = snapshot(&n);
        if (snap) {
            petrel_conn_send_event(srv, conn, last_id, snap, n);
            free(snap);
        }
        if (petrel_conn_subscribe_after(srv, conn, TOPIC, last_id) != PETREL_OK) {
            /* The history moved on (Redis lost it) before this server saw a tick of the new one:
             * the client comes back in a moment for a newer snapshot. */
            pthread_mutex_unlock(&lock);
            petrel_conn_close(srv, conn, 1013, "no snapshot yet: try again");
            return;
        }
    }
    pthread_mutex_unlock(&lock);
    client *c = new_client(from, sse ? SSE : WEBSOCKET);
    if (c && sse) petrel_conn_query_param(srv, conn, "client", c->client, sizeof c->client, &len);
    *conn_data = c;
}

/* Records an acknowledgement (from the client's loop thread, or POST /ack's): acked moves up to
 * id if id is past it and not past the last tick this server has seen. */
static void acknowledge(client *c, uint64_t id) {
    if (!c || id > atomic_load_explicit(&last_id, memory_order_relaxed)) return;
    uint64_t seen = atomic_load_explicit(&c->acked, memory_order_relaxed);
    while (id > seen && !atomic_compare_exchange_weak_explicit(&c->acked, &seen, id, memory_order_relaxed, memory_order_relaxed)) {
    }
}

/* STOMP: SUBSCRIBE to /topic/stock reads the ticks' topic; other destinations are refused. CONNECT
 * is accepted and SEND refused (no answer). */
static void on_stomp(void *ud, petrel_server *srv, uint64_t conn, void *conn_data, const petrel_stomp_frame *frame) {
    (void)ud, (void)srv, (void)conn, (void)conn_data;
    if (strcmp(frame->command, "SUBSCRIBE") != 0) return;
    if (strcmp(frame->destination, "/topic/stock") == 0)
        petrel_stomp_allow(frame, TOPIC);
    else
        petrel_stomp_refuse(frame, "unknown destination: this server has /topic/stock");
}

static void on_stomp_ack(void *ud, petrel_server *srv, uint64_t conn, void *conn_data, const char *subscription,
                         const uint64_t *ids, size_t count, int32_t negative, uint64_t position) {
    (void)ud, (void)srv, (void)conn, (void)subscription, (void)ids, (void)count, (void)negative;
    acknowledge(conn_data, position);
}

/* The connection's last callback: its state is freed (a /health or POST /ack visiting it holds
 * this call back until it is done). */
static void on_close(void *ud, petrel_server *srv, uint64_t conn, void *conn_data, uint16_t code, const char *reason,
                     size_t reason_len) {
    (void)ud, (void)srv, (void)conn, (void)code, (void)reason, (void)reason_len;
    free(conn_data); /* NULL if refused in on_open, or out of memory */
}

/* {"ack":N} with optional whitespace. */
static int parse_ack(const char *data, size_t len, uint64_t *id) {
    char buf[64];
    size_t n = 0;
    for (size_t i = 0; i < len && n + 1 < sizeof buf; i++)
        if (data[i] != ' ' && data[i] != '\t' && data[i] != '\n' && data[i] != '\r') buf[n++] = data[i];
    buf[n] = 0;
    unsigned long long v;
    char tail[4];
    if (sscanf(buf, "{\"ack\":%llu%3s", &v, tail) != 2 || strcmp(tail, "}") != 0) return 0;
    *id = v;
    return 1;
}

static void on_message(void *ud, petrel_server *srv, uint64_t conn, void *conn_data, int32_t kind, const uint8_t *data,
                       size_t len) {
    (void)ud, (void)srv, (void)conn;
    uint64_t id;
    if (kind != PETREL_TEXT || !parse_ack((const char *)data, len, &id)) return;
    acknowledge(conn_data, id);
}

/* /health's census: clients per transport and the slowest one's acknowledgement. */
typedef struct census {
    size_t counts[TRANSPORTS];
    uint64_t slowest[TRANSPORTS];
} census;

static void count_client(void *ud, petrel_server *srv, uint64_t conn, void *conn_data) {
    (void)srv, (void)conn;
    census *tally = ud;
    const client *c = conn_data;
    if (!c) return;
    uint64_t acked = atomic_load_explicit(&c->acked, memory_order_relaxed);
    tally->counts[c->transport]++;
    if (acked < tally->slowest[c->transport]) tally->slowest[c->transport] = acked;
}

/* POST /ack?client=ID: the event id goes to that page's event streams. */
typedef struct ack_for {
    const char *who;
    uint64_t id;
    int known;
} ack_for;

static void ack_client(void *ud, petrel_server *srv, uint64_t conn, void *conn_data) {
    (void)srv, (void)conn;
    ack_for *ack = ud;
    client *c = conn_data;
    if (c && c->transport == SSE && strcmp(c->client, ack->who) == 0) acknowledge(c, ack->id), ack->known = 1;
}

static void on_http(void *ud, petrel_server *srv, const petrel_http_request *req) {
    (void)ud;
    if (strcmp(req->method, "GET") == 0 && strcmp(req->path, "/snapshot") == 0) {
        size_t n = 0;
        pthread_mutex_lock(&lock);
        char *snap = snapshot(&n);
        pthread_mutex_unlock(&lock);
        if (snap) petrel_http_respond(req, 200, "application/json", snap, n);
        free(snap);
        return;
    }
    if (strcmp(req->method, "GET") == 0 && strcmp(req->path, "/health") == 0) {
        uint64_t sockets = 0;
        petrel_server_connection_count(srv, &sockets);
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        double uptime = (double)(now.tv_sec - started.tv_sec) + (double)(now.tv_nsec - started.tv_nsec) / 1e9;
        char body[768];
        census tally = {{0, 0, 0}, {UINT64_MAX, UINT64_MAX, UINT64_MAX}};
        petrel_server_each_conn(srv, count_client, &tally);
        const size_t *counts = tally.counts;
        uint64_t *slowest = tally.slowest;
        pthread_mutex_lock(&lock);
        long long ms[TRANSPORTS];
        int64_t t = now_ms();
        for (int k = 0; k < TRANSPORTS; k++) {
            /* A client may have come from a server that had read further than this one. */
            if (slowest[k] > last_id) slowest[k] = last_id;
            uint64_t behind = last_id - slowest[k];
            ms[k] = behind == 0 ? 0 : behind < RING ? (long long)(t - times_ms[(slowest[k] + 1) % RING]) : -1;
            if (ms[k] < -1) ms[k] = 0;
        }
        int n = snprintf(body, sizeof body, "{\"status\":\"ok\",\"uptimeSeconds\":%.1f,\"connections\":{", uptime);
        for (int k = 0; k < TRANSPORTS; k++) n += snprintf(body + n, sizeof body - (size_t)n, "\"%s\":%zu,", transport_names[k], counts[k]);
        n += snprintf(body + n, sizeof body - (size_t)n, "\"sockets\":%llu},\"published\":%llu,\"lastEventId\":%llu,\"stocks\":%d,\"lag\":{",
                      (unsigned long long)sockets, (unsigned long long)published, (unsigned long long)last_id, stock_count);
        for (int k = 0; k < TRANSPORTS; k++)
            n += snprintf(body + n, sizeof body - (size_t)n, "%s\"%s\":{\"events\":%llu,\"ms\":%lld}", k ? "," : "", transport_names[k],
                          (unsigned long long)(last_id - slowest[k]), ms[k]);
        n += snprintf(body + n, sizeof body - (size_t)n, "}}");
        pthread_mutex_unlock(&lock);
        petrel_http_respond(req, 200, "application/json", body, (size_t)n);
    } else if (strcmp(req->method, "POST") == 0 && strcmp(req->path, "/ack") == 0) {
        char id_text[32], who[40];
        size_t len = 0;
        if (req->body_len == 0 || req->body_len >= sizeof id_text) {
            petrel_http_respond(req, 400, "text/plain", "the body is an event id\n", 24);
            return;
        }
        memcpy(id_text, req->body, req->body_len);
        id_text[req->body_len] = 0;
        char *end;
        errno = 0;
        unsigned long long id = strtoull(id_text, &end, 10);
        if (end == id_text || *end != 0 || errno != 0 || id_text[0] == '-') {
            petrel_http_respond(req, 400, "text/plain", "the body is an event id\n", 24);
            return;
        }
        ack_for ack = {who, id, 0};
        if (petrel_http_query_param(req, "client", who, sizeof who, &len) == PETREL_OK) petrel_server_each_conn(srv, ack_client, &ack);
        petrel_http_respond(req, ack.known ? 204 : 404, "text/plain", "", 0);
    }
    /* Anything else: /events, then the page's files. */
}

static void on_signal(int sig) {
    (void)sig;
    stopping = 1;
}

static void usage(FILE *to) {
    fprintf(to, "usage: stock-server [--host H] [--port P] [--data FILE] [--web DIR] [--tick-min S] [--tick-max S] [--threads N]\n"
                "                    [--engine URL] [--no-feed] [--tls-cert PEM --tls-key PEM] [--access-log FILE]\n"
                "                    [--cors-origins LIST] [--trusted-proxies LIST]\n"
                "  --access-log FILE  append a line per request, upgrade and close to FILE\n"
                "  --cors-origins LIST  comma-separated origins (\"*\" for any) whose pages may read /events, /snapshot\n"
                "                and /health and POST /ack (others get 403)\n"
                "  --trusted-proxies LIST  comma-separated addresses and CIDR blocks whose X-Forwarded-For names the client\n"
                "  --engine URL  topics through Redis Streams (redis://host:port or a Unix socket path), shared with\n"
                "                every server on that Redis (default: in this process)\n"
                "  --no-feed     publish nothing: serve the ticks another server publishes\n");
}

int main(int argc, char **argv) {
    /* Default files next to this program: examples/stock-c/stock-server -> examples/data, examples/web. */
    char self[PATH_MAX], data[PATH_MAX + 32], web[PATH_MAX + 32];
    ssize_t sn = readlink("/proc/self/exe", self, sizeof self - 1);
    self[sn > 0 ? sn : 0] = 0;
    char *slash = strrchr(self, '/');
    if (slash) *slash = 0;
    snprintf(data, sizeof data, "%s/../data/stocks.csv", self);
    snprintf(web, sizeof web, "%s/../web", self);
    const char *host = "127.0.0.1", *data_path = data, *web_path = web, *tls_cert = NULL, *tls_key = NULL, *engine = NULL,
               *access_log = NULL, *cors_origins = NULL, *trusted_proxies = NULL;
    int feed = 1;
    long port = 8080, threads = 0;
    double tick_min = 0.05, tick_max = 2.0;
    static const struct option options[] = {
        {"host", required_argument, 0, 'h'},     {"port", required_argument, 0, 'p'},     {"data", required_argument, 0, 'd'},
        {"web", required_argument, 0, 'w'},      {"tick-min", required_argument, 0, 'a'}, {"tick-max", required_argument, 0, 'b'},
        {"threads", required_argument, 0, 't'},  {"tls-cert", required_argument, 0, 'c'}, {"tls-key", required_argument, 0, 'k'},
        {"engine", required_argument, 0, 'e'},   {"no-feed", no_argument, 0, 'n'},        {"help", no_argument, 0, '?'},
        {"access-log", required_argument, 0, 'l'}, {"cors-origins", required_argument, 0, 'o'},
        {"trusted-proxies", required_argument, 0, 'x'},
        {0, 0, 0, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'h': host = optarg; break;
        case 'p': port = strtol(optarg, NULL, 10); break;
        case 'd': data_path = optarg; break;
        case 'w': web_path = optarg; break;
        case 'a': tick_min = strtod(optarg, NULL); break;
        case 'b': tick_max = strtod(optarg, NULL); break;
        case 't': threads = strtol(optarg, NULL, 10); break;
        case 'c': tls_cert = optarg; break;
        case 'k': tls_key = optarg; break;
        case 'e': engine = optarg; break;
        case 'n': feed = 0; break;
        case 'l': access_log = optarg; break;
        case 'o': cors_origins = optarg; break;
        case 'x': trusted_proxies = optarg; break;
        default: usage(stderr); return 2;
        }
    }
    if (port < 0 || port > 65535 || threads < 0 || threads > 255 || !(tick_min > 0 && tick_max >= tick_min) ||
        (tls_cert == NULL) != (tls_key == NULL)) {
        usage(stderr);
        return 2;
    }
    load_stocks(data_path);
    srandom((unsigned)time(NULL) ^ (unsigned)getpid());
    clock_gettime(CLOCK_MONOTONIC, &started);

    petrel_server_config config;
    petrel_server_config_init(&config);
    config.host = host;
    config.port = (uint16_t)port;
    config.threads = (uint32_t)threads;
    config.static_root = web_path;
    config.event_stream_paths = "/events";
    config.tls_cert_file = tls_cert; /* NULL: plain http/ws */
    config.tls_key_file = tls_key;
    config.ping_interval_ms = 15000;
    config.topic_slow_consumer = PETREL_SLOW_COALESCE; /* a slow client keeps the newest tick per stock */
    config.topic_max_queued = RING;
    config.topic_replay = RING; /* recent ticks kept for clients that reconnect */
    config.engine_url = engine; /* NULL: in this process */
    config.stomp_paths = "/stomp"; /* STOMP here, and on /stream for clients that offer v12.stomp */
    config.access_log_file = access_log; /* NULL: none */
    config.cors_origins = cors_origins; /* NULL: no cross-origin pages */
    config.trusted_proxies = trusted_proxies; /* NULL: the peer is the client */
    petrel_server_callbacks callbacks;
    petrel_server_callbacks_init(&callbacks);
    callbacks.on_open = on_open;
    callbacks.on_message = on_message;
    callbacks.on_close = on_close;
    callbacks.on_http = on_http;
    callbacks.on_stomp = on_stomp;
    callbacks.on_stomp_ack = on_stomp_ack;
    petrel_status s = petrel_server_create(&config, &callbacks, &server);
    /* Prices come from the topic itself, whoever publishes. */
    if (s == PETREL_OK) s = petrel_server_observe(server, TOPIC, on_tick, NULL);
    if (s == PETREL_OK) s = petrel_server_start(server);
    if (s != PETREL_OK) {
        fprintf(stderr, "stock-server: %s: %s\n", petrel_strerror(s), petrel_last_error());
        return 1;
    }
    /* The feed goes on from the prices the topic has (a feed restarted in a cluster). */
    pthread_mutex_lock(&lock);
    memcpy(feed_stocks, stocks, sizeof stocks);
    pthread_mutex_unlock(&lock);
    uint16_t bound = 0;
    petrel_server_port(server, &bound);
    if (feed)
        printf("Petrel stock ticker (C): %d stocks, a tick every %g-%g s", stock_count, tick_min, tick_max);
    else
        printf("Petrel stock ticker (C): %d stocks, no feed (ticks from the engine)", stock_count);
    printf(engine ? ", topics through %s\n" : "%s\n", engine ? engine : "");
    printf("open %s://%s:%u/   (WebSocket /stream, STOMP /stomp, SSE /events, /health)\n", tls_cert ? "https" : "http",
           strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0 ? "localhost" : host, bound);
    fflush(stdout);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    int failing = 0;
    while (!stopping) {
        if (feed) {
            petrel_status st = tick();
            if (st != PETREL_OK && !failing) fprintf(stderr, "stock-server: a tick was not published: %s\n", petrel_last_error());
            if (st == PETREL_OK && failing) fprintf(stderr, "stock-server: publishing again\n");
            failing = st != PETREL_OK;
        }
        double wait = uniform(tick_min, tick_max);
        next.tv_sec += (time_t)wait;
        next.tv_nsec += (long)((wait - (double)(time_t)wait) * 1e9);
        if (next.tv_nsec >= 1000000000L) next.tv_sec++, next.tv_nsec -= 1000000000L;
        while (!stopping && clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) != 0) {
        }
    }
    petrel_server_destroy(server); /* stops with a 1 s grace; every on_close has run and freed its client */
    printf("stopped\n");
    return 0;
}
