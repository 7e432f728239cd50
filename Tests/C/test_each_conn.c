/* C tests of petrel_server_each_conn: it visits each open WebSocket and event stream once, with
 * the pointer its on_open stored, and nothing else (a plain HTTP exchange, a connection whose
 * on_open is still running, one that has closed); a visitor may close what it visits; and the
 * pointer it is handed is never freed under it: a thread visits without pause, its visitor
 * lingering on each pointer, while clients come and go and on_close frees each one. A freed
 * pointer would fail the visitor's magic check here, and be an invalid read under valgrind
 * (the test command runs it there).
 * Built with -Wall -Wextra -Werror. Prints "N passed, N failed". */
#define _POSIX_C_SOURCE 200809L
#include <petrel.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"

#define LIVE 0x6c697665u /* a state's magic until on_close frees it */
enum { CLIENTS = 6, CHURN = 60, MAX_VISITED = 256 };

typedef struct state {
    uint32_t magic;
    uint64_t conn;
    int event_stream, churn;
} state;

static atomic_int opens, closes, frees, bad_visits, visits_in_open, open_visited_itself;
static petrel_server *the_server;

static void visit_in_open(void *ud, petrel_server *srv, uint64_t conn, void *conn_data) {
    (void)srv, (void)conn_data;
    atomic_fetch_add(&visits_in_open, 1);
    if (conn == *(const uint64_t *)ud) atomic_fetch_add(&open_visited_itself, 1);
}

static void on_open(void *ud, petrel_server *srv, uint64_t conn, void **conn_data) {
    (void)ud;
    state *st = calloc(1, sizeof *st);
    if (!st) abort();
    st->magic = LIVE, st->conn = conn;
    char path[32];
    size_t len = 0;
    if (petrel_conn_path(srv, conn, path, sizeof path, &len) == PETREL_OK) {
        st->event_stream = strcmp(path, "/events") == 0;
        st->churn = strcmp(path, "/churn") == 0;
    }
    /* From a callback, and before this on_open has returned: this connection is not visited. */
    petrel_server_each_conn(srv, visit_in_open, &conn);
    *conn_data = st;
    atomic_fetch_add(&opens, 1);
}

static void on_close(void *ud, petrel_server *srv, uint64_t conn, void *conn_data, uint16_t code, const char *reason,
                     size_t reason_len) {
    (void)ud, (void)srv, (void)code, (void)reason, (void)reason_len;
    state *st = conn_data;
    if (!st || st->magic != LIVE || st->conn != conn) atomic_fetch_add(&bad_visits, 1);
    if (st) {
        st->magic = 0;
        free(st);
        atomic_fetch_add(&frees, 1);
    }
    atomic_fetch_add(&closes, 1);
}

/* Plain HTTP: answered 200 and kept alive, never visited. */
static void on_http(void *ud, petrel_server *srv, const petrel_http_request *req) {
    (void)ud, (void)srv;
    if (strcmp(req->path, "/plain") == 0) petrel_http_respond(req, 200, "text/plain", "ok", 2);
}

/* What a census of the open connections saw. */
typedef struct seen {
    int count, event_streams;
    uint64_t conns[MAX_VISITED];
} seen;

static void census(void *ud, petrel_server *srv, uint64_t conn, void *conn_data) {
    seen *s = ud;
    const state *st = conn_data;
    if (srv != the_server || !st || st->magic != LIVE || st->conn != conn) atomic_fetch_add(&bad_visits, 1);
    if (s->count < MAX_VISITED) s->conns[s->count] = conn;
    s->count++;
    if (st && st->event_stream) s->event_streams++;
}

static seen take_census(void) {
    seen s;
    memset(&s, 0, sizeof s);
    CHECK_STATUS(petrel_server_each_conn(the_server, census, &s), PETREL_OK);
    return s;
}

static int wait_for(atomic_int *counter, int value) {
    for (int i = 0; i < 1000 && atomic_load(counter) < value; i++) sleep_ms(5);
    return atomic_load(counter) >= value;
}

/* A raw TCP connection to 127.0.0.1:port that sends `request` and reads the response head. */
static int raw_request(uint16_t port, const char *request) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in to;
    memset(&to, 0, sizeof to);
    to.sin_family = AF_INET;
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    to.sin_port = htons(port);
    if (fd < 0 || connect(fd, (struct sockaddr *)&to, sizeof to) != 0) return -1;
    if (write(fd, request, strlen(request)) != (ssize_t)strlen(request)) return -1;
    char buf[512];
    if (read(fd, buf, sizeof buf) <= 0) return -1;
    return fd;
}

/* The churn: a visitor thread visits without pause and lingers on each pointer. */
static atomic_int churning;
static atomic_long churn_visits;

static void linger_on(void *ud, petrel_server *srv, uint64_t conn, void *conn_data) {
    (void)ud, (void)srv;
    state *st = conn_data;
    if (!st || st->magic != LIVE || st->conn != conn) atomic_fetch_add(&bad_visits, 1);
    sleep_ms(1); /* on_close of this connection waits meanwhile */
    if (!st || st->magic != LIVE || st->conn != conn) atomic_fetch_add(&bad_visits, 1);
    atomic_fetch_add(&churn_visits, 1);
}

static void *visitor_main(void *arg) {
    (void)arg;
    while (atomic_load(&churning)) petrel_server_each_conn(the_server, linger_on, NULL);
    return NULL;
}

/* Closes the churn's connections: from the main thread, inside the visit. */
static void close_churn(void *ud, petrel_server *srv, uint64_t conn, void *conn_data) {
    const state *st = conn_data;
    if (st && st->churn) petrel_conn_close(srv, conn, 1000, NULL), ++*(int *)ud;
}

/* Closes every connection it visits (from the main thread: their on_close waits for the visit). */
static void close_all(void *ud, petrel_server *srv, uint64_t conn, void *conn_data) {
    (void)conn_data;
    CHECK_STATUS(petrel_conn_close(srv, conn, 1001, "swept"), PETREL_OK);
    ++*(int *)ud;
}

int main(void) {
    petrel_server_config config;
    petrel_server_config_init(&config);
    config.host = "127.0.0.1";
    config.port = 0;
    config.threads = 2;
    config.ping_interval_ms = 0;
    config.event_stream_paths = "/events";
    petrel_server_callbacks callbacks;
    petrel_server_callbacks_init(&callbacks);
    callbacks.on_open = on_open;
    callbacks.on_close = on_close;
    callbacks.on_http = on_http;
    uint16_t port = 0;
    the_server = start_test_server(&config, &callbacks, &port);

    CHECK_STATUS(petrel_server_each_conn(NULL, census, NULL), PETREL_E_NULL);
    CHECK_STATUS(petrel_server_each_conn(the_server, NULL, NULL), PETREL_E_NULL);
    CHECK(take_census().count == 0);

    /* Six WebSockets, one event stream, one plain HTTP exchange kept alive. */
    petrel_client *clients[CLIENTS];
    for (int i = 0; i < CLIENTS; i++) clients[i] = connect_plain(port, "/ws");
    int sse = raw_request(port, "GET /events HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n");
    int http = raw_request(port, "GET /plain HTTP/1.1\r\nHost: t\r\n\r\n");
    CHECK(sse >= 0 && http >= 0);
    CHECK(wait_for(&opens, CLIENTS + 1));
    seen all = take_census();
    CHECK(all.count == CLIENTS + 1);
    CHECK(all.event_streams == 1);
    int distinct = 1;
    for (int i = 0; i < all.count && i < MAX_VISITED; i++)
        for (int j = 0; j < i; j++) distinct &= all.conns[i] != all.conns[j];
    CHECK(distinct);
    /* Each on_open visited only the connections opened before it, never itself. */
    CHECK(atomic_load(&open_visited_itself) == 0);
    CHECK(atomic_load(&visits_in_open) <= CLIENTS * (CLIENTS + 1) / 2);

    /* Two clients close: they are visited no more. */
    for (int i = 0; i < 2; i++) {
        CHECK_STATUS(petrel_client_close(clients[i], 1000, NULL), PETREL_OK);
        petrel_client_destroy(clients[i]);
    }
    CHECK(wait_for(&closes, 2));
    CHECK(take_census().count == CLIENTS - 1);

    /* Clients come and go while a thread visits without pause. */
    atomic_store(&churning, 1);
    pthread_t visitor;
    CHECK(pthread_create(&visitor, NULL, visitor_main, NULL) == 0);
    for (int i = 0; i < CHURN; i++) {
        petrel_client *c = connect_plain(port, "/churn");
        if (i % 2 == 0) {
            CHECK_STATUS(petrel_client_close(c, 1000, NULL), PETREL_OK);
        } else {
            /* The server ends it: on_close runs on a loop thread while the visitor may hold it. */
            int closing = 0;
            CHECK_STATUS(petrel_server_each_conn(the_server, close_churn, &closing), PETREL_OK);
            CHECK(closing >= 1);
        }
        petrel_client_destroy(c);
    }
    atomic_store(&churning, 0);
    pthread_join(visitor, NULL);
    CHECK(atomic_load(&churn_visits) > CHURN);

    /* A visitor closes what it visits. */
    int swept = 0;
    CHECK_STATUS(petrel_server_each_conn(the_server, close_all, &swept), PETREL_OK);
    CHECK(swept >= 1);
    CHECK(wait_for(&closes, atomic_load(&opens)));
    CHECK(take_census().count == 0);

    for (int i = 2; i < CLIENTS; i++) petrel_client_destroy(clients[i]);
    close(sse);
    close(http);
    CHECK_STATUS(petrel_server_stop(the_server, 1000), PETREL_OK);
    petrel_server_destroy(the_server);
    CHECK(atomic_load(&frees) == atomic_load(&opens));
    CHECK(atomic_load(&bad_visits) == 0);

    printf("%d passed, %d failed (%d opened, %ld lingering visits)\n", passed, failed, atomic_load(&opens),
           atomic_load(&churn_visits));
    return failed == 0 ? 0 : 1;
}
