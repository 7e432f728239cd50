/* C tests of the connection pointer in petrel.h (conn_data): the pointer petrel_upgrade_accept
 * attaches reaches on_open; the one on_open stores reaches on_message, on_drain and on_close,
 * the same pointer for every callback of that connection and of no other; petrel_conn_data reads
 * it and petrel_conn_set_data replaces it from another thread; on_close frees it, whether the
 * client closed, the server closed, the TCP connection was cut (a relay resets both sides) or the
 * server was stopped with the connection open. Every struct is malloc'd, counted and freed
 * (made == freed at the end); under valgrind (the test command) a pointer handed to a callback
 * after it was freed is an invalid read, and one never freed a definite leak.
 * Built with -Wall -Wextra -Werror. Prints "N passed, N failed". */
#define _POSIX_C_SOURCE 200809L
#include <petrel.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"

enum { CHUNK = 16 * 1024, MAX_SENDS = 4096, STRESS_MESSAGES = 400, STRESS_REPLACEMENTS = 100 };
#define LIVE 0x6c697665u /* a conn_state's magic until it is freed */

/* What a connection carries. Where it was made: */
enum { FROM_UPGRADE = 1, FROM_OPEN, FROM_REPLACE };

typedef struct conn_state {
    uint32_t magic;    /* LIVE */
    int origin;        /* FROM_* */
    uint64_t conn;     /* the connection it belongs to */
    int messages;      /* messages seen with this pointer, plus where it started (the loop thread's) */
    int drains;
    /* The pointers this one replaced (petrel_conn_set_data from another thread), each with its
     * own `retired`: freed by the first callback that receives this one (see replace()). */
    struct conn_state *retired;
} conn_state;

static atomic_int made, freed;
/* Callback-side failures (CHECK's counters are the main thread's). */
static atomic_int callback_failures;
#define EXPECT(cond)                                                                   \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            atomic_fetch_add(&callback_failures, 1);                                   \
            fprintf(stderr, "%s:%d: callback check failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                              \
    } while (0)

static atomic_int upgrades_vetoed, opens, null_closes, flooded, drains;

/* Close codes on_close saw, by connection. */
enum { MAX_CLOSED = 64 };
static atomic_uint_fast64_t closed_conn[MAX_CLOSED];
static atomic_int closed_code[MAX_CLOSED], closed_count;

static conn_state *new_state(uint64_t conn, int origin, int messages) {
    conn_state *st = calloc(1, sizeof *st);
    if (!st) abort();
    st->magic = LIVE, st->origin = origin, st->conn = conn, st->messages = messages;
    atomic_fetch_add(&made, 1);
    return st;
}

static void free_state(conn_state *st) {
    st->magic = 0;
    free(st);
    atomic_fetch_add(&freed, 1);
}

/* Every callback that gets a pointer checks it is this connection's, alive. */
static int is_mine(const conn_state *st, uint64_t conn) { return st != NULL && st->magic == LIVE && st->conn == conn; }

/* On the connection's loop thread: the pointers st replaced can go. A callback runs only after
 * the previous one of its connection returned, and one that got st began after st was set: so no
 * callback is still using a replaced pointer, and none will be given one again. */
static void release_retired(conn_state *st) {
    conn_state *r = st->retired;
    st->retired = NULL;
    while (r) {
        conn_state *next = r->retired;
        EXPECT(r->magic == LIVE && r->conn == st->conn);
        free_state(r);
        r = next;
    }
}

static int path_is(petrel_server *server, uint64_t conn, const char *want) {
    char path[32];
    size_t len = 0;
    return petrel_conn_path(server, conn, path, sizeof path, &len) == PETREL_OK && strcmp(path, want) == 0;
}

/* /attached: the state is made here and attached with petrel_upgrade_accept. /veto: made, then
 * the upgrade is refused, so nothing is attached and it is freed here. Others: accepted as is. */
static void on_upgrade(void *userdata, petrel_server *server, const petrel_http_request *req) {
    (void)userdata, (void)server;
    if (strcmp(req->path, "/attached") == 0) {
        conn_state *st = new_state(req->conn, FROM_UPGRADE, 0);
        EXPECT(petrel_upgrade_accept(req, "zzz", st) == PETREL_E_INVALID_ARGUMENT); /* not offered: nothing attached */
        EXPECT(petrel_upgrade_accept(req, NULL, st) == PETREL_OK);
        EXPECT(petrel_upgrade_accept(req, NULL, st) == PETREL_E_STATE);
    } else if (strcmp(req->path, "/veto") == 0) {
        conn_state *st = new_state(req->conn, FROM_UPGRADE, 0);
        EXPECT(petrel_http_respond(req, 403, "text/plain", "no", 2) == PETREL_OK);
        EXPECT(petrel_upgrade_accept(req, NULL, st) == PETREL_E_STATE); /* answered: not attached */
        free_state(st);
        atomic_fetch_add(&upgrades_vetoed, 1);
    }
}

static void on_open(void *userdata, petrel_server *server, uint64_t conn, void **conn_data) {
    (void)userdata;
    atomic_fetch_add(&opens, 1);
    if (path_is(server, conn, "/attached")) {
        conn_state *st = *conn_data;
        EXPECT(is_mine(st, conn) && st->origin == FROM_UPGRADE);
        void *read = NULL;
        EXPECT(petrel_conn_data(server, conn, &read) == PETREL_OK && read == st);
        return; /* kept */
    }
    EXPECT(*conn_data == NULL); /* nothing attached */
    if (path_is(server, conn, "/none")) return; /* this one carries nothing */
    *conn_data = new_state(conn, FROM_OPEN, 0);
}

/* "id": answers the connection's id. "count": counts itself and answers the count. "close": the
 * server closes (4000). "flood": sends until backpressure. Anything else is counted. */
static void on_message(void *userdata, petrel_server *server, uint64_t conn, void *conn_data, int32_t kind,
                       const uint8_t *data, size_t len) {
    (void)userdata, (void)kind;
    char reply[32];
    conn_state *st = conn_data;
    if (path_is(server, conn, "/none")) {
        EXPECT(st == NULL);
        if (len == 5 && memcmp(data, "count", 5) == 0) petrel_conn_send(server, conn, PETREL_TEXT, "none", 4);
        if (len == 2 && memcmp(data, "id", 2) == 0) {
            int n = snprintf(reply, sizeof reply, "%llu", (unsigned long long)conn);
            petrel_conn_send(server, conn, PETREL_TEXT, reply, (size_t)n);
        }
        return;
    }
    EXPECT(is_mine(st, conn));
    if (!is_mine(st, conn)) return;
    release_retired(st);
    if (len == 2 && memcmp(data, "id", 2) == 0) {
        int n = snprintf(reply, sizeof reply, "%llu", (unsigned long long)conn);
        petrel_conn_send(server, conn, PETREL_TEXT, reply, (size_t)n);
        return;
    }
    st->messages++;
    if (len == 5 && memcmp(data, "count", 5) == 0) {
        int n = snprintf(reply, sizeof reply, "%d", st->messages);
        petrel_conn_send(server, conn, PETREL_TEXT, reply, (size_t)n);
    } else if (len == 5 && memcmp(data, "close", 5) == 0) {
        EXPECT(petrel_conn_close(server, conn, 4000, "server closes") == PETREL_OK);
    } else if (len == 5 && memcmp(data, "flood", 5) == 0) {
        uint8_t *chunk = calloc(1, CHUNK);
        petrel_status s = PETREL_OK;
        for (int i = 0; i < MAX_SENDS && s == PETREL_OK; i++) s = petrel_conn_send(server, conn, PETREL_BINARY, chunk, CHUNK);
        free(chunk);
        EXPECT(s == PETREL_E_BACKPRESSURE);
        atomic_store(&flooded, 1);
    }
}

static void on_drain(void *userdata, petrel_server *server, uint64_t conn, void *conn_data) {
    (void)userdata, (void)server;
    conn_state *st = conn_data;
    EXPECT(is_mine(st, conn));
    if (!is_mine(st, conn)) return;
    release_retired(st);
    st->drains++;
    atomic_fetch_add(&drains, 1);
}

static void on_close(void *userdata, petrel_server *server, uint64_t conn, void *conn_data, uint16_t code,
                     const char *reason, size_t reason_len) {
    (void)userdata, (void)reason, (void)reason_len;
    int i = atomic_fetch_add(&closed_count, 1);
    if (i < MAX_CLOSED) {
        atomic_store(&closed_code[i], code);
        atomic_store(&closed_conn[i], conn);
    }
    /* Inside on_close the id is already unknown: nothing can be attached any more. */
    EXPECT(petrel_conn_set_data(server, conn, NULL) == PETREL_E_UNKNOWN_CONNECTION);
    conn_state *st = conn_data;
    if (st == NULL) {
        atomic_fetch_add(&null_closes, 1);
        return;
    }
    EXPECT(is_mine(st, conn));
    release_retired(st);
    free_state(st);
}

/* ---- helpers of the main thread ---- */

static int wait_for(atomic_int *value, int want, int ms) {
    for (int waited = 0; waited < ms; waited += 5) {
        if (atomic_load(value) >= want) return 1;
        sleep_ms(5);
    }
    return atomic_load(value) >= want;
}

/* The close code on_close saw for conn, waiting for it up to ms; -1 if it never came. */
static int close_code_of(uint64_t conn, int ms) {
    for (int waited = 0;; waited += 5) {
        int n = atomic_load(&closed_count);
        for (int i = 0; i < n && i < MAX_CLOSED; i++)
            if (atomic_load(&closed_conn[i]) == conn) return atomic_load(&closed_code[i]);
        if (waited >= ms) return -1;
        sleep_ms(5);
    }
}

/* Sends text and waits for the text answer (NUL-terminated into reply); 1 if one came. */
static int ask(petrel_client *client, const char *text, char *reply, size_t cap) {
    int32_t kind = 0;
    size_t len = 0;
    reply[0] = 0;
    if (petrel_client_send(client, PETREL_TEXT, text, strlen(text)) != PETREL_OK) return 0;
    if (petrel_client_receive(client, 10000, &kind, reply, cap - 1, &len) != PETREL_OK) return 0;
    reply[len] = 0;
    return 1;
}

static uint64_t id_of(petrel_client *client) {
    char reply[32];
    return ask(client, "id", reply, sizeof reply) ? strtoull(reply, NULL, 10) : 0;
}

/* Replaces conn's pointer from this thread (not the loop's). The old pointer may be in use by a
 * callback running now (a callback that has begun keeps the value it was given), so it is not
 * freed here: the new one carries it in `retired`, and the first callback that receives the new
 * one (on the connection's loop thread, after any that had the old one) frees it, or on_close.
 * Only this thread replaces pointers, so nothing replaces between the read and the set. If the
 * connection closed meanwhile, on_close had (or freed) the old one: only the new one is ours.
 * Returns the status of petrel_conn_set_data. */
static petrel_status replace(petrel_server *server, uint64_t conn, int messages) {
    void *old = NULL;
    petrel_status s = petrel_conn_data(server, conn, &old);
    if (s != PETREL_OK) return s;
    conn_state *next = new_state(conn, FROM_REPLACE, messages);
    next->retired = old;
    s = petrel_conn_set_data(server, conn, next);
    if (s != PETREL_OK) {
        next->retired = NULL;
        free_state(next);
    }
    return s;
}

/* A TCP relay that can cut both of its connections with a reset: the client then vanishes
 * without a close frame (and without a FIN). */
typedef struct relay {
    int listener;
    uint16_t port, target;
    atomic_int cut;
    pthread_t thread;
} relay;

static int write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w <= 0) return -1;
        p += w, n -= (size_t)w;
    }
    return 0;
}

static void *relay_main(void *arg) {
    relay *r = arg;
    int a = accept(r->listener, NULL, NULL);
    int b = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in to;
    memset(&to, 0, sizeof to);
    to.sin_family = AF_INET;
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    to.sin_port = htons(r->target);
    if (a >= 0 && b >= 0 && connect(b, (struct sockaddr *)&to, sizeof to) == 0) {
        struct pollfd fds[2] = {{.fd = a, .events = POLLIN}, {.fd = b, .events = POLLIN}};
        char buf[16384];
        int open = 1;
        while (open && !atomic_load(&r->cut)) {
            if (poll(fds, 2, 10) <= 0) continue;
            for (int i = 0; i < 2 && open; i++) {
                if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
                ssize_t n = read(fds[i].fd, buf, sizeof buf);
                if (n <= 0 || write_all(fds[1 - i].fd, buf, (size_t)n) != 0) open = 0;
            }
        }
    }
    struct linger hard = {.l_onoff = 1, .l_linger = 0}; /* close() sends RST */
    if (a >= 0) setsockopt(a, SOL_SOCKET, SO_LINGER, &hard, sizeof hard), close(a);
    if (b >= 0) setsockopt(b, SOL_SOCKET, SO_LINGER, &hard, sizeof hard), close(b);
    return NULL;
}

static int relay_start(relay *r, uint16_t target) {
    memset(r, 0, sizeof *r);
    r->target = target;
    r->listener = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (r->listener < 0 || bind(r->listener, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(r->listener, 1) != 0 ||
        getsockname(r->listener, (struct sockaddr *)&addr, &len) != 0)
        return 0;
    r->port = ntohs(addr.sin_port);
    return pthread_create(&r->thread, NULL, relay_main, r) == 0;
}

/* ---- the tests ---- */

/* Attached by the accept hook; messages counted into it; the client closes (1000). */
static void test_attached_client_closes(uint16_t port) {
    petrel_client *client = connect_plain(port, "/attached");
    if (!client) return;
    char reply[32];
    CHECK(ask(client, "count", reply, sizeof reply) && strcmp(reply, "1") == 0);
    CHECK(ask(client, "count", reply, sizeof reply) && strcmp(reply, "2") == 0);
    CHECK(ask(client, "count", reply, sizeof reply) && strcmp(reply, "3") == 0);
    uint64_t id = id_of(client);
    CHECK(id != 0);
    CHECK_STATUS(petrel_client_close(client, 1000, "done"), PETREL_OK);
    CHECK(close_code_of(id, 10000) == 1000);
    petrel_client_destroy(client);
}

/* The accept hook made a state and then refused: it freed it itself, and no open came. */
static void test_vetoed(uint16_t port) {
    int before = atomic_load(&opens);
    char url[64];
    snprintf(url, sizeof url, "ws://127.0.0.1:%u/veto", port);
    petrel_client *client = NULL;
    CHECK_STATUS(petrel_client_connect(url, NULL, NULL, &client), PETREL_E_HANDSHAKE);
    CHECK(client == NULL);
    CHECK(atomic_load(&upgrades_vetoed) == 1);
    CHECK(atomic_load(&opens) == before);
}

/* Made in on_open, two connections at once: each callback gets its own connection's pointer. */
static void test_two_own_and_server_closes(petrel_server *server, uint16_t port) {
    petrel_client *a = connect_plain(port, "/own"), *b = connect_plain(port, "/own");
    if (!a || !b) {
        petrel_client_destroy(a), petrel_client_destroy(b);
        return;
    }
    char reply[32];
    CHECK(ask(a, "count", reply, sizeof reply) && strcmp(reply, "1") == 0);
    CHECK(ask(b, "count", reply, sizeof reply) && strcmp(reply, "1") == 0);
    CHECK(ask(a, "count", reply, sizeof reply) && strcmp(reply, "2") == 0);
    uint64_t ida = id_of(a), idb = id_of(b);
    CHECK(ida != 0 && idb != 0 && ida != idb);
    /* The server closes a: on_close frees its state; b's is untouched. */
    CHECK_STATUS(petrel_client_send(a, PETREL_TEXT, "close", 5), PETREL_OK);
    int32_t kind;
    size_t len;
    CHECK_STATUS(petrel_client_receive(a, 10000, &kind, reply, sizeof reply, &len), PETREL_E_CLOSED);
    uint16_t code = 0;
    CHECK_STATUS(petrel_client_close_status(a, &code, reply, sizeof reply, &len), PETREL_OK);
    CHECK(code == 4000);
    CHECK(close_code_of(ida, 10000) == 4000);
    void *gone = NULL;
    CHECK_STATUS(petrel_conn_data(server, ida, &gone), PETREL_E_UNKNOWN_CONNECTION);
    CHECK(ask(b, "count", reply, sizeof reply) && strcmp(reply, "2") == 0);
    petrel_client_destroy(a);
    petrel_client_destroy(b); /* closes 1001 */
    CHECK(close_code_of(idb, 10000) == 1001);
}

/* The connection carries nothing: conn_data is NULL everywhere, petrel_conn_data says NULL. */
static void test_none(petrel_server *server, uint16_t port) {
    petrel_client *client = connect_plain(port, "/none");
    if (!client) return;
    char reply[32];
    CHECK(ask(client, "count", reply, sizeof reply) && strcmp(reply, "none") == 0);
    uint64_t id = id_of(client);
    void *data = &data;
    CHECK_STATUS(petrel_conn_data(server, id, &data), PETREL_OK);
    CHECK(data == NULL);
    int before = atomic_load(&null_closes);
    petrel_client_destroy(client);
    CHECK(close_code_of(id, 10000) == 1001);
    CHECK(wait_for(&null_closes, before + 1, 10000));
    /* Gone: unknown from now on. */
    CHECK_STATUS(petrel_conn_data(server, id, &data), PETREL_E_UNKNOWN_CONNECTION);
    CHECK_STATUS(petrel_conn_set_data(server, id, NULL), PETREL_E_UNKNOWN_CONNECTION);
}

/* The client vanishes (a reset, no close frame): on_close (1006) still frees the state. */
static void test_cut(uint16_t port) {
    relay r;
    if (!relay_start(&r, port)) {
        CHECK(!"relay");
        return;
    }
    petrel_client *client = connect_plain(r.port, "/own");
    if (client) {
        char reply[32];
        CHECK(ask(client, "count", reply, sizeof reply) && strcmp(reply, "1") == 0);
        uint64_t id = id_of(client);
        atomic_store(&r.cut, 1);
        CHECK(close_code_of(id, 10000) == 1006);
        int32_t kind;
        size_t len;
        CHECK_STATUS(petrel_client_receive(client, 10000, &kind, reply, sizeof reply, &len), PETREL_E_CLOSED);
        uint16_t code = 0;
        char why[256];
        CHECK_STATUS(petrel_client_close_status(client, &code, why, sizeof why, &len), PETREL_OK);
        CHECK(code == 1006);
        petrel_client_destroy(client);
    }
    atomic_store(&r.cut, 1);
    pthread_join(r.thread, NULL);
    close(r.listener);
}

/* on_drain gets the connection's pointer: the client holds reading while the server floods. */
static void discard(void *userdata, petrel_client *client, int32_t kind, const uint8_t *data, size_t len) {
    (void)userdata, (void)client, (void)kind, (void)data, (void)len;
}

static void test_drain(uint16_t port) {
    char url[96];
    snprintf(url, sizeof url, "ws://127.0.0.1:%u/own", port);
    petrel_client_config config;
    petrel_client_config_init(&config);
    config.compression = 0;
    petrel_client_callbacks callbacks;
    petrel_client_callbacks_init(&callbacks);
    callbacks.on_message = discard;
    petrel_client *client = NULL;
    CHECK_STATUS(petrel_client_connect(url, &config, &callbacks, &client), PETREL_OK);
    if (!client) return;
    /* Held while the server floods, so that what it queued waits for the client. (The kernel's
     * buffers may take it all anyway: on_drain can come before the client reads again.) */
    CHECK_STATUS(petrel_client_pause_reading(client, 1), PETREL_OK);
    CHECK_STATUS(petrel_client_send(client, PETREL_TEXT, "flood", 5), PETREL_OK);
    CHECK(wait_for(&flooded, 1, 10000));
    CHECK_STATUS(petrel_client_pause_reading(client, 0), PETREL_OK);
    CHECK(wait_for(&drains, 1, 20000));
    petrel_client_destroy(client);
}

/* petrel_conn_set_data from this thread while the client's messages arrive: every callback gets
 * a live pointer of its own connection (valgrind sees any use after free), and each replaced one
 * is freed exactly once. */
typedef struct replacer {
    petrel_server *server;
    uint64_t conn;
    int done;
} replacer;

static void *replace_many(void *arg) {
    replacer *r = arg;
    for (int i = 0; i < STRESS_REPLACEMENTS; i++) {
        if (replace(r->server, r->conn, 0) == PETREL_OK) r->done++;
        if (i % 4 == 0) sleep_ms(1);
    }
    return NULL;
}

static void test_replace(petrel_server *server, uint16_t port) {
    petrel_client *client = connect_plain(port, "/own");
    if (!client) return;
    uint64_t id = id_of(client);
    char reply[32];
    CHECK(ask(client, "count", reply, sizeof reply) && strcmp(reply, "1") == 0);

    /* One replacement, then a message: it is counted into the new pointer. */
    void *first = NULL;
    CHECK_STATUS(petrel_conn_data(server, id, &first), PETREL_OK);
    CHECK(is_mine(first, id) && ((conn_state *)first)->origin == FROM_OPEN);
    CHECK_STATUS(replace(server, id, 100), PETREL_OK);
    void *now = NULL;
    CHECK_STATUS(petrel_conn_data(server, id, &now), PETREL_OK);
    CHECK(now != first && is_mine(now, id) && ((conn_state *)now)->origin == FROM_REPLACE);
    CHECK(ask(client, "count", reply, sizeof reply) && strcmp(reply, "101") == 0);

    /* Many, from another thread, while messages arrive. */
    replacer r = {server, id, 0};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, replace_many, &r) == 0);
    for (int i = 0; i < STRESS_MESSAGES; i++) CHECK_STATUS(petrel_client_send(client, PETREL_TEXT, "x", 1), PETREL_OK);
    pthread_join(t, NULL);
    CHECK(r.done == STRESS_REPLACEMENTS);
    CHECK(ask(client, "id", reply, sizeof reply)); /* every "x" has been handled */

    /* A last replacement that no message sees: on_close frees it and the one it replaced. */
    CHECK_STATUS(replace(server, id, 0), PETREL_OK);
    CHECK_STATUS(petrel_client_close(client, 1000, NULL), PETREL_OK);
    CHECK(close_code_of(id, 10000) == 1000);
    CHECK_STATUS(replace(server, id, 0), PETREL_E_UNKNOWN_CONNECTION); /* nothing made */
    petrel_client_destroy(client);
}

static void test_arguments(petrel_server *server) {
    void *data = NULL;
    CHECK_STATUS(petrel_conn_data(NULL, 1, &data), PETREL_E_NULL);
    CHECK_STATUS(petrel_conn_data(server, 1, NULL), PETREL_E_NULL);
    CHECK_STATUS(petrel_conn_data(server, UINT64_MAX, &data), PETREL_E_UNKNOWN_CONNECTION);
    CHECK_STATUS(petrel_conn_set_data(NULL, 1, &data), PETREL_E_NULL);
    CHECK_STATUS(petrel_conn_set_data(server, UINT64_MAX, &data), PETREL_E_UNKNOWN_CONNECTION);
    CHECK_STATUS(petrel_upgrade_accept(NULL, NULL, &data), PETREL_E_NULL);
}

int main(void) {
    petrel_server_config config;
    petrel_server_config_init(&config);
    config.host = "127.0.0.1";
    config.port = 0;
    config.threads = 2;
    config.compression = 0;
    config.max_backpressure = 256 * 1024;
    petrel_server_callbacks callbacks;
    petrel_server_callbacks_init(&callbacks);
    callbacks.on_upgrade = on_upgrade;
    callbacks.on_open = on_open;
    callbacks.on_message = on_message;
    callbacks.on_drain = on_drain;
    callbacks.on_close = on_close;
    uint16_t port = 0;
    petrel_server *server = start_test_server(&config, &callbacks, &port);

    test_arguments(server);
    test_attached_client_closes(port);
    test_vetoed(port);
    test_two_own_and_server_closes(server, port);
    test_none(server, port);
    test_cut(port);
    test_drain(port);
    test_replace(server, port);

    /* Two connections still open when the server stops: its on_close frees theirs too. */
    petrel_client *attached = connect_plain(port, "/attached"), *own = connect_plain(port, "/own");
    char reply[32];
    if (attached) CHECK(ask(attached, "count", reply, sizeof reply) && strcmp(reply, "1") == 0);
    if (own) CHECK(ask(own, "count", reply, sizeof reply) && strcmp(reply, "1") == 0);
    CHECK(atomic_load(&made) > atomic_load(&freed));
    CHECK_STATUS(petrel_server_destroy(server), PETREL_OK);
    petrel_client_destroy(attached);
    petrel_client_destroy(own);

    /* Made: 2 attached + 1 vetoed + 6 in on_open (two, cut, drain, replace, own at the end)
     * + the replacements (1, the stress's, the last). */
    int want = 2 + 1 + 6 + 1 + STRESS_REPLACEMENTS + 1;
    CHECK(atomic_load(&made) == want);
    CHECK(atomic_load(&freed) == atomic_load(&made));
    if (atomic_load(&made) != want || atomic_load(&freed) != atomic_load(&made))
        fprintf(stderr, "made %d, freed %d, wanted %d\n", atomic_load(&made), atomic_load(&freed), want);
    CHECK(atomic_load(&callback_failures) == 0);
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
