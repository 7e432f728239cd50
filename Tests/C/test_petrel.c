/* C tests of petrel.h: an in-process server and clients over loopback, built against the
 * installed header and library with -Wall -Wextra -Werror, run under valgrind by the test command.
 * Prints "N passed, N failed". */
#define _POSIX_C_SOURCE 200809L
#include <petrel.h>

#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

/* Server state, written by the loop threads. */
static atomic_int opens, closes, last_close_code, wrong_thread_seen, path_ok;

static void on_open(void *userdata, petrel_server *server, uint64_t conn, void **conn_data) {
    (void)userdata, (void)conn_data;
    char path[64];
    size_t len = 0;
    if (petrel_conn_path(server, conn, path, sizeof path, &len) == PETREL_OK && strcmp(path, "/sub") == 0) {
        petrel_conn_subscribe(server, conn, "ticks");
    }
    char agent[8];
    size_t need = 0;
    /* A header into a buffer that is too small reports the size it needs. */
    if (petrel_conn_header(server, conn, "host", agent, 2, &need) == PETREL_E_BUFFER_TOO_SMALL && need > 2) {
        atomic_fetch_add(&path_ok, 1);
    }
    atomic_fetch_add(&opens, 1);
}

static void on_message(void *userdata, petrel_server *server, uint64_t conn, void *conn_data, int32_t kind, const uint8_t *data,
                       size_t len) {
    (void)userdata, (void)conn_data;
    if (kind == PETREL_TEXT && len == 5 && memcmp(data, "close", 5) == 0) {
        petrel_conn_close(server, conn, 4001, "bye");
        return;
    }
    if (kind == PETREL_TEXT && len == 7 && memcmp(data, "destroy", 7) == 0) {
        /* Destroying the server from its own callback must be refused, not deadlock. */
        if (petrel_server_destroy(server) == PETREL_E_WRONG_THREAD) atomic_fetch_add(&wrong_thread_seen, 1);
    }
    petrel_conn_send(server, conn, kind, data, len);
}

static void on_close(void *userdata, petrel_server *server, uint64_t conn, void *conn_data, uint16_t code, const char *reason,
                     size_t reason_len) {
    (void)userdata, (void)server, (void)conn, (void)conn_data, (void)reason, (void)reason_len;
    atomic_store(&last_close_code, code);
    atomic_fetch_add(&closes, 1);
}

static petrel_server *start_server(uint16_t *port) {
    petrel_server_config config;
    petrel_server_config_init(&config);
    config.host = "127.0.0.1";
    config.port = 0;
    config.threads = 2;
    config.topic_slow_consumer = PETREL_SLOW_DROP_OLDEST;
    petrel_server_callbacks callbacks;
    petrel_server_callbacks_init(&callbacks);
    callbacks.on_open = on_open;
    callbacks.on_message = on_message;
    callbacks.on_close = on_close;
    petrel_server *server = NULL;
    CHECK_STATUS(petrel_server_create(&config, &callbacks, &server), PETREL_OK);
    CHECK_STATUS(petrel_server_start(server), PETREL_OK);
    CHECK_STATUS(petrel_server_start(server), PETREL_E_STATE);
    CHECK_STATUS(petrel_server_port(server, port), PETREL_OK);
    return server;
}

static petrel_client *connect_client(uint16_t port, const char *path) {
    char url[128];
    snprintf(url, sizeof url, "ws://127.0.0.1:%u%s", port, path);
    petrel_client *client = NULL;
    CHECK_STATUS(petrel_client_connect(url, NULL, NULL, &client), PETREL_OK);
    return client;
}

static void test_echo(uint16_t port) {
    petrel_client *client = connect_client(port, "/echo");
    if (!client) return;
    /* On the heap: a 2 MiB stack frame is more than valgrind's stack tracking accepts. */
    enum { BUF = 2 * 1024 * 1024 };
    uint8_t *buf = malloc(BUF);
    int32_t kind = 0;
    size_t len = 0;

    CHECK_STATUS(petrel_client_send(client, PETREL_TEXT, "hello", 5), PETREL_OK);
    CHECK_STATUS(petrel_client_receive(client, 5000, &kind, buf, BUF, &len), PETREL_OK);
    CHECK(kind == PETREL_TEXT && len == 5 && memcmp(buf, "hello", 5) == 0);

    static const uint8_t bin[] = {0, 1, 2, 255};
    CHECK_STATUS(petrel_client_send(client, PETREL_BINARY, bin, sizeof bin), PETREL_OK);
    CHECK_STATUS(petrel_client_receive(client, 5000, &kind, buf, BUF, &len), PETREL_OK);
    CHECK(kind == PETREL_BINARY && len == 4 && memcmp(buf, bin, 4) == 0);

    CHECK_STATUS(petrel_client_send(client, PETREL_BINARY, NULL, 0), PETREL_OK);
    CHECK_STATUS(petrel_client_receive(client, 5000, &kind, buf, BUF, &len), PETREL_OK);
    CHECK(kind == PETREL_BINARY && len == 0);

    /* A large message, and a receive buffer that is too small for it. */
    size_t big = 1024 * 1024 + 7;
    uint8_t *large = malloc(big);
    for (size_t i = 0; i < big; i++) large[i] = (uint8_t)(i * 31);
    CHECK_STATUS(petrel_client_send(client, PETREL_BINARY, large, big), PETREL_OK);
    CHECK_STATUS(petrel_client_receive(client, 5000, &kind, buf, 100, &len), PETREL_E_BUFFER_TOO_SMALL);
    CHECK(len == big);
    CHECK_STATUS(petrel_client_receive(client, 5000, &kind, buf, BUF, &len), PETREL_OK);
    CHECK(len == big && memcmp(buf, large, big) == 0);
    free(large);

    /* Nothing more is coming. */
    CHECK_STATUS(petrel_client_receive(client, 50, &kind, buf, BUF, &len), PETREL_E_TIMEOUT);

    /* Invalid arguments. */
    CHECK_STATUS(petrel_client_send(client, PETREL_TEXT, "\xff\xfe", 2), PETREL_E_INVALID_ARGUMENT);
    CHECK_STATUS(petrel_client_send(client, 7, "x", 1), PETREL_E_INVALID_ARGUMENT);
    CHECK_STATUS(petrel_client_send(client, PETREL_BINARY, NULL, 3), PETREL_E_NULL);
    CHECK_STATUS(petrel_client_close(client, 1005, NULL), PETREL_E_INVALID_ARGUMENT);

    /* The server closes when asked: 4001 "bye". */
    CHECK_STATUS(petrel_client_send(client, PETREL_TEXT, "close", 5), PETREL_OK);
    CHECK_STATUS(petrel_client_receive(client, 5000, &kind, buf, BUF, &len), PETREL_E_CLOSED);
    uint16_t code = 0;
    char reason[32];
    CHECK_STATUS(petrel_client_close_status(client, &code, reason, sizeof reason, &len), PETREL_OK);
    CHECK(code == 4001 && len == 3 && strcmp(reason, "bye") == 0);
    CHECK_STATUS(petrel_client_send(client, PETREL_TEXT, "late", 4), PETREL_E_CLOSED);
    petrel_client_destroy(client);
    free(buf);
}

static void test_client_close(uint16_t port) {
    petrel_client *client = connect_client(port, "/echo");
    if (!client) return;
    int before = atomic_load(&closes);
    CHECK_STATUS(petrel_client_close(client, 4002, "client leaving"), PETREL_OK);
    int32_t kind;
    size_t len;
    uint8_t buf[16];
    CHECK_STATUS(petrel_client_receive(client, 5000, &kind, buf, sizeof buf, &len), PETREL_E_CLOSED);
    for (int i = 0; i < 200 && atomic_load(&closes) == before; i++) sleep_ms(10);
    CHECK(atomic_load(&last_close_code) == 4002);
    petrel_client_destroy(client);
}

/* Fragments sent over a raw socket are reassembled and echoed whole. */
static void test_fragments(uint16_t port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0);
    const char *req = "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    CHECK(write(fd, req, strlen(req)) == (ssize_t)strlen(req));
    char resp[512];
    ssize_t n = 0, r;
    while ((r = read(fd, resp + n, sizeof resp - 1 - (size_t)n)) > 0) {
        n += r;
        resp[n] = 0;
        if (strstr(resp, "\r\n\r\n")) break;
    }
    CHECK(n > 12 && memcmp(resp, "HTTP/1.1 101", 12) == 0);
    /* "Hel" + "lo", masked with a zero key. */
    static const uint8_t frames[] = {0x01, 0x83, 0, 0, 0, 0, 'H', 'e', 'l', 0x80, 0x82, 0, 0, 0, 0, 'l', 'o'};
    CHECK(write(fd, frames, sizeof frames) == (ssize_t)sizeof frames);
    uint8_t echo[16];
    n = 0;
    while (n < 7 && (r = read(fd, echo + n, sizeof echo - (size_t)n)) > 0) n += r;
    CHECK(n == 7 && echo[0] == 0x81 && echo[1] == 5 && memcmp(echo + 2, "Hello", 5) == 0);
    close(fd);
}

static void test_pubsub(petrel_server *server, uint16_t port) {
    enum { CLIENTS = 20, MESSAGES = 100 };
    petrel_client *clients[CLIENTS];
    for (int i = 0; i < CLIENTS; i++) clients[i] = connect_client(port, "/sub");
    /* The subscription happens in on_open, before the client's connect returns. */
    for (int m = 0; m < MESSAGES; m++) {
        char text[32];
        int len = snprintf(text, sizeof text, "tick %d", m);
        uint64_t event_id = 0;
        CHECK_STATUS(petrel_server_publish(server, "ticks", PETREL_TEXT, text, (size_t)len, NULL, &event_id), PETREL_OK);
        if (event_id != (uint64_t)m + 1) CHECK(event_id == (uint64_t)m + 1);
    }
    for (int i = 0; i < CLIENTS; i++) {
        int in_order = 1;
        for (int m = 0; m < MESSAGES && clients[i]; m++) {
            char buf[64], want[32];
            int32_t kind;
            size_t len;
            snprintf(want, sizeof want, "tick %d", m);
            if (petrel_client_receive(clients[i], 5000, &kind, buf, sizeof buf - 1, &len) != PETREL_OK) {
                in_order = 0;
                break;
            }
            buf[len] = 0;
            if (strcmp(buf, want) != 0) in_order = 0;
        }
        CHECK(in_order);
        petrel_client_destroy(clients[i]);
    }
    CHECK_STATUS(petrel_server_publish(server, "ticks", PETREL_TEXT, "\xc0\xaf", 2, NULL, NULL), PETREL_E_INVALID_ARGUMENT);
    CHECK_STATUS(petrel_server_publish(server, NULL, PETREL_TEXT, "x", 1, NULL, NULL), PETREL_E_NULL);
}

static void test_errors(petrel_server *server) {
    uint64_t bytes;
    char buf[8];
    size_t len;
    CHECK_STATUS(petrel_conn_send(server, 12345, PETREL_TEXT, "x", 1), PETREL_E_UNKNOWN_CONNECTION);
    CHECK_STATUS(petrel_conn_close(server, 12345, 1000, NULL), PETREL_E_UNKNOWN_CONNECTION);
    CHECK_STATUS(petrel_conn_subscribe(server, 12345, "t"), PETREL_E_UNKNOWN_CONNECTION);
    CHECK_STATUS(petrel_conn_buffered_amount(server, 12345, &bytes), PETREL_E_UNKNOWN_CONNECTION);
    CHECK_STATUS(petrel_conn_path(server, 12345, buf, sizeof buf, &len), PETREL_E_UNKNOWN_CONNECTION);
    CHECK_STATUS(petrel_conn_send(NULL, 1, PETREL_TEXT, "x", 1), PETREL_E_NULL);
    CHECK_STATUS(petrel_conn_buffered_amount(server, 1, NULL), PETREL_E_NULL);
    CHECK_STATUS(petrel_server_port(NULL, NULL), PETREL_E_NULL);

    petrel_server_config zeroed;
    memset(&zeroed, 0, sizeof zeroed);
    petrel_server *never = NULL;
    CHECK_STATUS(petrel_server_create(&zeroed, NULL, &never), PETREL_E_CONFIG_SIZE);
    CHECK(never == NULL);
    petrel_server_config bad;
    petrel_server_config_init(&bad);
    bad.topic_slow_consumer = 99;
    CHECK_STATUS(petrel_server_create(&bad, NULL, &never), PETREL_E_INVALID_ARGUMENT);
    CHECK_STATUS(petrel_server_create(NULL, NULL, &never), PETREL_E_NULL);

    petrel_client *client = NULL;
    CHECK_STATUS(petrel_client_connect("http://127.0.0.1/", NULL, NULL, &client), PETREL_E_URL);
    CHECK_STATUS(petrel_client_connect("ws://127.0.0.1:1/", NULL, NULL, &client), PETREL_E_CONNECT);
    CHECK_STATUS(petrel_client_connect(NULL, NULL, NULL, &client), PETREL_E_NULL);
    CHECK(client == NULL);

    /* Every status has a text; unknown ones too. */
    static const petrel_status all[] = {
        PETREL_OK, PETREL_E_AGAIN, PETREL_E_BACKPRESSURE, PETREL_E_TIMEOUT, PETREL_E_RESERVED_OPCODE, PETREL_E_INVALID_UTF8,
        PETREL_E_MESSAGE_TOO_BIG, PETREL_E_ABNORMAL_CLOSURE, PETREL_E_HS_MALFORMED, PETREL_E_HS_TIMEOUT, PETREL_E_HS_BAD_RESPONSE,
        PETREL_E_HS_EXTENSION_PARAMS, PETREL_E_NULL, PETREL_E_CONFIG_SIZE, PETREL_E_SENDING_CLOSED, PETREL_E_CLOSE_REASON_LONG,
        PETREL_E_NOMEM, PETREL_E_TOO_BIG, PETREL_E_RESOLVE, PETREL_E_HANDSHAKE};
    int texts_ok = 1;
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        const char *t = petrel_strerror(all[i]);
        if (!t || strcmp(t, "unknown error") == 0) {
            fprintf(stderr, "no text for %d\n", (int)all[i]);
            texts_ok = 0;
        }
    }
    CHECK(texts_ok);
    CHECK(strcmp(petrel_strerror(-9999), "unknown error") == 0);
    CHECK(petrel_server_destroy(NULL) == PETREL_OK);
    petrel_client_destroy(NULL);
}

/* A listener that accepts one connection and drops it: the client must fail, not hang. */
static void *accept_and_drop(void *arg) {
    int fd = *(int *)arg;
    int c = accept(fd, NULL, NULL);
    if (c >= 0) close(c);
    return NULL;
}

static void test_connect_dropped_and_bad_lengths(petrel_server *server) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    CHECK(bind(fd, (struct sockaddr *)&addr, sizeof addr) == 0 && listen(fd, 4) == 0);
    getsockname(fd, (struct sockaddr *)&addr, &len);
    pthread_t t;
    pthread_create(&t, NULL, accept_and_drop, &fd);
    char url[64];
    snprintf(url, sizeof url, "ws://127.0.0.1:%u/", ntohs(addr.sin_port));
    petrel_client *client = NULL;
    petrel_status s = petrel_client_connect(url, NULL, NULL, &client);
    CHECK(s == PETREL_E_HANDSHAKE || s == PETREL_E_CONNECT);
    CHECK(client == NULL);
    close(fd);
    pthread_join(t, NULL);

    /* Lengths from C that do not fit a signed size are refused, not trusted. */
    CHECK_STATUS(petrel_conn_send(server, 1, PETREL_BINARY, "x", (size_t)-1), PETREL_E_INVALID_ARGUMENT);
    CHECK_STATUS(petrel_server_publish(server, "t", PETREL_BINARY, "x", (size_t)-1, NULL, NULL), PETREL_E_INVALID_ARGUMENT);
    petrel_server_config huge;
    petrel_server_config_init(&huge);
    huge.max_message_size = UINT64_MAX / 2;
    petrel_server *never = NULL;
    CHECK_STATUS(petrel_server_create(&huge, NULL, &never), PETREL_E_INVALID_ARGUMENT);
}

static void test_destroy_from_callback(uint16_t port) {
    petrel_client *client = connect_client(port, "/echo");
    if (!client) return;
    int32_t kind;
    size_t len;
    char buf[16];
    CHECK_STATUS(petrel_client_send(client, PETREL_TEXT, "destroy", 7), PETREL_OK);
    CHECK_STATUS(petrel_client_receive(client, 5000, &kind, buf, sizeof buf, &len), PETREL_OK);
    CHECK(atomic_load(&wrong_thread_seen) == 1);
    petrel_client_destroy(client);
}


/* ---- sans-I/O sessions driven by a hand-written poll loop over a socketpair ---- */

struct side {
    petrel_session *session;
    int fd;
    int opened, texts, binaries, pongs, closes, errors;
    uint16_t close_code;
    char last[64];
    char text[64];
};

/* One round of the host's loop: poll both fds, move bytes between sockets and sessions, drain events. */
static void pump(struct side *sides) {
    struct pollfd pfd[2];
    for (int i = 0; i < 2; i++) {
        pfd[i].fd = sides[i].fd;
        pfd[i].events = (short)((petrel_session_want_read(sides[i].session) ? POLLIN : 0) |
                                (petrel_session_want_write(sides[i].session) ? POLLOUT : 0));
        pfd[i].revents = 0;
    }
    poll(pfd, 2, 50);
    for (int i = 0; i < 2; i++) {
        struct side *s = &sides[i];
        uint8_t buf[4096];
        size_t n;
        if (pfd[i].revents & POLLOUT) {
            while (petrel_session_take_output(s->session, buf, sizeof buf, &n) == PETREL_OK) {
                if (write(s->fd, buf, n) != (ssize_t)n) break;
            }
        }
        if (pfd[i].revents & POLLIN) {
            ssize_t r = read(s->fd, buf, sizeof buf);
            if (r > 0) petrel_session_feed(s->session, buf, (size_t)r);
            else if (r == 0) petrel_session_end_of_stream(s->session);
        }
        petrel_event e;
        while (petrel_session_poll_event(s->session, &e) == PETREL_OK) {
            size_t k = e.len < sizeof s->last - 1 ? e.len : sizeof s->last - 1;
            if (e.data && k) memcpy(s->last, e.data, k);
            s->last[k] = 0;
            switch (e.type) {
            case PETREL_EVENT_OPEN: s->opened++; break;
            case PETREL_EVENT_TEXT: s->texts++; memcpy(s->text, s->last, sizeof s->text); break;
            case PETREL_EVENT_BINARY: s->binaries++; break;
            case PETREL_EVENT_PONG: s->pongs++; break;
            case PETREL_EVENT_CLOSE: s->closes++; s->close_code = e.close_code; break;
            case PETREL_EVENT_ERROR: s->errors++; s->close_code = e.close_code; break;
            default: break;
            }
        }
    }
}

static void test_sessions(void) {
    int fds[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
    petrel_session_config sc, cc;
    petrel_session_config_init(&sc);
    sc.subprotocols = "chat";
    petrel_session_config_init(&cc);
    cc.role = PETREL_ROLE_CLIENT;
    cc.host = "example.com";
    cc.path = "/room?id=1";
    cc.subprotocols = "chat";
    struct side sides[2];
    memset(sides, 0, sizeof sides);
    CHECK_STATUS(petrel_session_create(&sc, &sides[0].session), PETREL_OK);
    CHECK_STATUS(petrel_session_create(&cc, &sides[1].session), PETREL_OK);
    sides[0].fd = fds[0];
    sides[1].fd = fds[1];
    for (int i = 0; i < 20 && (sides[0].opened == 0 || sides[1].opened == 0); i++) pump(sides);
    CHECK(sides[0].opened == 1 && sides[1].opened == 1 && strcmp(sides[1].last, "chat") == 0);

    CHECK_STATUS(petrel_session_send(sides[1].session, PETREL_TEXT, "hello over a session, hello over a session", 42), PETREL_OK);
    CHECK_STATUS(petrel_session_send(sides[0].session, PETREL_BINARY, "\x01\x02", 2), PETREL_OK);
    CHECK_STATUS(petrel_session_ping(sides[1].session, "p", 1), PETREL_OK);
    for (int i = 0; i < 20 && (sides[0].texts == 0 || sides[1].binaries == 0 || sides[1].pongs == 0); i++) pump(sides);
    CHECK(sides[0].texts == 1 && strncmp(sides[0].text, "hello over a session", 20) == 0);
    CHECK(sides[1].binaries == 1 && sides[1].pongs == 1);
    CHECK_STATUS(petrel_session_send(sides[1].session, PETREL_TEXT, "\xff", 1), PETREL_E_INVALID_ARGUMENT);
    CHECK_STATUS(petrel_session_ping(sides[1].session, NULL, 200), PETREL_E_NULL);

    CHECK_STATUS(petrel_session_close(sides[1].session, 1005, NULL), PETREL_E_BAD_CLOSE_CODE);
    CHECK_STATUS(petrel_session_close(sides[1].session, 1000, "done"), PETREL_OK);
    CHECK_STATUS(petrel_session_send(sides[1].session, PETREL_TEXT, "x", 1), PETREL_E_SENDING_CLOSED);
    for (int i = 0; i < 20 && (sides[0].closes == 0 || sides[1].closes == 0); i++) pump(sides);
    CHECK(sides[0].closes == 1 && sides[0].close_code == 1000 && strcmp(sides[0].last, "done") == 0);
    CHECK(sides[1].closes == 1 && sides[1].close_code == 1000);
    CHECK(petrel_session_should_close(sides[0].session) == 1); /* the server closes TCP first */
    CHECK(petrel_session_should_close(sides[1].session) == 0);
    petrel_session_destroy(sides[0].session);
    petrel_session_destroy(sides[1].session);
    close(fds[0]);
    close(fds[1]);

    /* Garbage instead of a handshake: an ERROR event and a 400 response to send. */
    petrel_session *server = NULL;
    CHECK_STATUS(petrel_session_create(&sc, &server), PETREL_OK);
    CHECK_STATUS(petrel_session_feed(server, "garbage\r\n\r\n", 11), PETREL_OK);
    petrel_event e;
    CHECK_STATUS(petrel_session_poll_event(server, &e), PETREL_OK);
    CHECK(e.type == PETREL_EVENT_ERROR && e.status == PETREL_E_HS_MALFORMED);
    char out[256];
    size_t n = 0;
    CHECK_STATUS(petrel_session_take_output(server, out, sizeof out, &n), PETREL_OK);
    CHECK(n > 12 && memcmp(out, "HTTP/1.1 400", 12) == 0);
    CHECK(petrel_session_should_close(server) == 1);
    CHECK_STATUS(petrel_session_feed(server, "x", 1), PETREL_E_CLOSED);
    CHECK_STATUS(petrel_session_poll_event(server, &e), PETREL_E_AGAIN);
    petrel_session_destroy(server);

    /* An unmasked frame after a good handshake fails with 1002 and its own status. */
    CHECK_STATUS(petrel_session_create(&sc, &server), PETREL_OK);
    const char *req = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n\x81\x02hi";
    CHECK_STATUS(petrel_session_feed(server, req, strlen(req)), PETREL_OK);
    CHECK_STATUS(petrel_session_poll_event(server, &e), PETREL_OK);
    CHECK(e.type == PETREL_EVENT_OPEN);
    CHECK_STATUS(petrel_session_poll_event(server, &e), PETREL_OK);
    CHECK(e.type == PETREL_EVENT_ERROR && e.status == PETREL_E_UNMASKED_FRAME && e.close_code == 1002);
    petrel_session_destroy(server);

    petrel_session_config zeroed;
    memset(&zeroed, 0, sizeof zeroed);
    CHECK_STATUS(petrel_session_create(&zeroed, &server), PETREL_E_CONFIG_SIZE);
    cc.host = NULL;
    CHECK_STATUS(petrel_session_create(&cc, &server), PETREL_E_INVALID_ARGUMENT);
    petrel_session_destroy(NULL);
    CHECK(petrel_session_pending_output(NULL) == 0);
}

/* ---- external-poll mode: the host's thread drives the server ---- */

static atomic_int external_done;
static uint16_t external_port;

static void *external_client(void *arg) {
    (void)arg;
    petrel_client *client = connect_client(external_port, "/external");
    if (client) {
        char buf[32];
        int32_t kind;
        size_t len = 0;
        CHECK_STATUS(petrel_client_send(client, PETREL_TEXT, "external", 8), PETREL_OK);
        CHECK_STATUS(petrel_client_receive(client, 5000, &kind, buf, sizeof buf, &len), PETREL_OK);
        CHECK(len == 8 && memcmp(buf, "external", 8) == 0);
        petrel_client_destroy(client);
    }
    atomic_store(&external_done, 1);
    return NULL;
}

static void test_external_poll(void) {
    petrel_server_config config;
    petrel_server_config_init(&config);
    config.host = "127.0.0.1";
    config.port = 0;
    petrel_server_callbacks callbacks;
    petrel_server_callbacks_init(&callbacks);
    callbacks.on_message = on_message;
    petrel_server *server = NULL;
    CHECK_STATUS(petrel_server_create(&config, &callbacks, &server), PETREL_OK);
    CHECK_STATUS(petrel_server_service(server, 0), PETREL_E_STATE);
    int fd = -1;
    CHECK_STATUS(petrel_server_start_external(server, &fd), PETREL_OK);
    CHECK(fd >= 0);
    CHECK_STATUS(petrel_server_port(server, &external_port), PETREL_OK);
    pthread_t t;
    pthread_create(&t, NULL, external_client, NULL);
    for (int i = 0; i < 500 && !atomic_load(&external_done); i++) {
        struct pollfd pfd = {fd, POLLIN, 0};
        if (poll(&pfd, 1, 20) > 0) CHECK_STATUS(petrel_server_service(server, 0), PETREL_OK);
    }
    pthread_join(t, NULL);
    CHECK(atomic_load(&external_done) == 1);
    CHECK_STATUS(petrel_server_stop(server, 500), PETREL_OK);
    petrel_status s = PETREL_OK;
    for (int i = 0; i < 500 && s == PETREL_OK; i++) s = petrel_server_service(server, 10);
    CHECK(s == PETREL_E_STOPPED);
    CHECK_STATUS(petrel_server_destroy(server), PETREL_OK);
}

/* ---- Plain HTTP: on_http, static files, event streams with resume ---- */

static atomic_int http_calls, stream_opens, http_state_checks;

static void http_on_http(void *userdata, petrel_server *server, const petrel_http_request *req) {
    (void)userdata, (void)server;
    atomic_fetch_add(&http_calls, 1);
    if (strcmp(req->path, "/ack") != 0) return; /* fall through to streams and static files */
    char client[32], agent[64];
    size_t len = 0;
    int ok = petrel_http_query_param(req, "client", client, sizeof client, &len) == PETREL_OK && strcmp(client, "a b") == 0;
    ok = ok && petrel_http_query_param(req, "nope", client, sizeof client, &len) == PETREL_E_AGAIN;
    ok = ok && petrel_http_header(req, "x-test", agent, sizeof agent, &len) == PETREL_OK && strcmp(agent, "yes") == 0;
    ok = ok && strcmp(req->method, "POST") == 0 && strcmp(req->query, "client=a+b") == 0 && strchr(req->peer, ':') != NULL;
    char reply[128];
    int n = snprintf(reply, sizeof reply, "{\"ok\":%s,\"body\":\"%.*s\"}", ok ? "true" : "false", (int)req->body_len,
                     req->body ? (const char *)req->body : "");
    CHECK_STATUS(petrel_http_respond(req, 200, "application/json", reply, (size_t)n), PETREL_OK);
    if (petrel_http_respond(req, 500, "text/plain", "x", 1) == PETREL_E_STATE) atomic_fetch_add(&http_state_checks, 1);
}

static atomic_int upgrade_conn_data_ok;
static int private_marker; /* its address is the pointer /private's connections carry */

/* The accept hook: /private needs "Authorization: Bearer ok"; then subprotocol "b" and &private_marker. */
static void http_on_upgrade(void *userdata, petrel_server *server, const petrel_http_request *req) {
    (void)userdata, (void)server;
    if (strcmp(req->path, "/private") != 0) return; /* accept */
    char auth[64];
    size_t len = 0;
    if (petrel_http_header(req, "authorization", auth, sizeof auth, &len) != PETREL_OK || strcmp(auth, "Bearer ok") != 0) {
        CHECK_STATUS(petrel_http_respond(req, 401, "text/plain", "no\n", 3), PETREL_OK);
        CHECK_STATUS(petrel_upgrade_accept(req, NULL, NULL), PETREL_E_STATE);
        return;
    }
    CHECK_STATUS(petrel_upgrade_accept(req, "zzz", &private_marker), PETREL_E_INVALID_ARGUMENT); /* not offered */
    CHECK_STATUS(petrel_upgrade_accept(req, "b", &private_marker), PETREL_OK);
    CHECK(req->conn != 0);
}

static void http_on_open(void *userdata, petrel_server *server, uint64_t conn, void **conn_data) {
    (void)userdata;
    char path[32];
    size_t len = 0;
    void *data = NULL;
    if (petrel_conn_path(server, conn, path, sizeof path, &len) == PETREL_OK && strcmp(path, "/private") == 0 &&
        *conn_data == &private_marker && petrel_conn_data(server, conn, &data) == PETREL_OK && data == &private_marker) {
        atomic_fetch_add(&upgrade_conn_data_ok, 1);
    }
    if (petrel_conn_path(server, conn, path, sizeof path, &len) != PETREL_OK || strcmp(path, "/events") != 0) return;
    atomic_fetch_add(&stream_opens, 1);
    CHECK_STATUS(petrel_conn_send(server, conn, PETREL_BINARY, "b", 1), PETREL_E_INVALID_ARGUMENT);
    uint64_t last = 0;
    if (petrel_conn_last_event_id(server, conn, &last) == PETREL_OK &&
        petrel_conn_subscribe_after(server, conn, "prices", last) == PETREL_OK) {
        return;
    }
    /* No resume possible: a snapshot event carrying the current id (nothing publishes now). */
    CHECK_STATUS(petrel_conn_send_event(server, conn, 3, "snapshot", 8), PETREL_OK);
    CHECK_STATUS(petrel_conn_subscribe_after(server, conn, "prices", 3), PETREL_OK);
}

static int raw_connect(uint16_t port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0);
    return fd;
}

/* Sends `req`, reads until `until` appears (or EOF / 3 s) into buf. */
static size_t raw_exchange(int fd, const char *req, char *buf, size_t cap, const char *until) {
    if (req) CHECK(write(fd, req, strlen(req)) == (ssize_t)strlen(req));
    size_t n = 0;
    buf[0] = 0;
    for (int waited = 0; waited < 3000 && n + 1 < cap;) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 50) <= 0) {
            waited += 50;
            continue;
        }
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r <= 0) break;
        n += (size_t)r;
        buf[n] = 0;
        if (until && strstr(buf, until)) break;
    }
    return n;
}

/* ---- The access log: to a file, or to on_access_log ---- */

static atomic_int log_entries;
static char log_line[512];

static void on_log(void *userdata, petrel_server *server, const petrel_access_log_entry *e) {
    (void)userdata;
    CHECK(server != NULL);
    if (atomic_fetch_add(&log_entries, 1) == 0) {
        CHECK(strcmp(e->event, "request") == 0 && strcmp(e->method, "GET") == 0 && strcmp(e->path, "/nothing") == 0);
        CHECK(e->status == 426 && strcmp(e->transport, "http") == 0 && e->bytes_in > 0 && e->bytes_out > 0 && e->conn != 0);
        CHECK(strncmp(e->peer, "127.0.0.1:", 10) == 0 && e->time_ms > 1700000000000ull);
        snprintf(log_line, sizeof log_line, "%s", e->line);
    }
}

static void test_access_log(void) {
    char path[] = "/tmp/petrel-c-access-XXXXXX";
    int tmp = mkstemp(path);
    CHECK(tmp >= 0);
    close(tmp);
    petrel_server_config config;
    petrel_server_config_init(&config);
    CHECK(config.access_log_file == NULL);
    config.host = "127.0.0.1";
    config.port = 0;
    config.threads = 1;
    config.access_log_file = path;
    petrel_server_callbacks callbacks;
    petrel_server_callbacks_init(&callbacks);
    callbacks.on_access_log = on_log;
    petrel_server *server = NULL;
    CHECK_STATUS(petrel_server_create(&config, &callbacks, &server), PETREL_E_INVALID_ARGUMENT); /* one or the other */
    /* To the callback. */
    config.access_log_file = NULL;
    uint16_t port = 0;
    server = start_test_server(&config, &callbacks, &port);
    char buf[2048];
    int fd = raw_connect(port);
    raw_exchange(fd, "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n", buf, sizeof buf, NULL);
    close(fd);
    for (int i = 0; i < 100 && atomic_load(&log_entries) == 0; i++) sleep_ms(10);
    CHECK(atomic_load(&log_entries) == 1 && strstr(log_line, " request GET /nothing 426 http in=") != NULL);
    CHECK_STATUS(petrel_server_destroy(server), PETREL_OK);
    /* To a file: the same line, and a file that cannot be opened fails start. */
    config.access_log_file = path;
    CHECK_STATUS(petrel_server_create(&config, NULL, &server), PETREL_OK);
    CHECK_STATUS(petrel_server_start(server), PETREL_OK);
    petrel_server_port(server, &port);
    fd = raw_connect(port);
    raw_exchange(fd, "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n", buf, sizeof buf, NULL);
    close(fd);
    CHECK_STATUS(petrel_server_destroy(server), PETREL_OK);
    FILE *f = fopen(path, "r");
    CHECK(f != NULL);
    char line[512] = {0};
    if (f) {
        CHECK(fgets(line, sizeof line, f) != NULL);
        fclose(f);
    }
    CHECK(strstr(line, " request GET /nothing 426 http in=") != NULL && line[strlen(line) - 1] == '\n');
    unlink(path);
    config.access_log_file = "/nonexistent-dir/access.log";
    CHECK_STATUS(petrel_server_create(&config, NULL, &server), PETREL_OK);
    CHECK_STATUS(petrel_server_start(server), PETREL_E_INVALID_ARGUMENT);
    CHECK_STATUS(petrel_server_destroy(server), PETREL_OK);
}

/* ---- The real client: a PROXY protocol header, a trusted proxy's X-Forwarded-For ---- */

static void who_on_http(void *userdata, petrel_server *server, const petrel_http_request *req) {
    (void)userdata, (void)server;
    CHECK_STATUS(petrel_http_respond(req, 200, "text/plain", req->client, strlen(req->client)), PETREL_OK);
}

static void test_real_client(void) {
    petrel_server_config config;
    petrel_server_config_init(&config);
    CHECK(config.proxy_protocol == 0 && config.trusted_proxies == NULL);
    config.host = "127.0.0.1";
    config.port = 0;
    config.threads = 1;
    config.proxy_protocol = 1;
    config.trusted_proxies = "127.0.0.1, 10.0.0.0/8";
    petrel_server_callbacks callbacks;
    petrel_server_callbacks_init(&callbacks);
    callbacks.on_http = who_on_http;
    petrel_server *server = NULL;
    uint16_t port = 0;
    server = start_test_server(&config, &callbacks, &port);
    char buf[1024];
    /* The balancer names 10.1.2.3 (trusted), whose X-Forwarded-For names the client. */
    int fd = raw_connect(port);
    raw_exchange(fd, "PROXY TCP4 10.1.2.3 192.0.2.1 40000 443\r\nGET /who HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                 "X-Forwarded-For: 198.51.100.9, 10.7.7.7\r\n\r\n", buf, sizeof buf, NULL);
    CHECK(strncmp(buf, "HTTP/1.1 200", 12) == 0 && strstr(buf, "\r\n\r\n198.51.100.9") != NULL);
    close(fd);
    fd = raw_connect(port); /* no PROXY header: closed without an answer */
    raw_exchange(fd, "GET /who HTTP/1.1\r\nHost: x\r\n\r\n", buf, sizeof buf, NULL);
    CHECK(buf[0] == 0);
    close(fd);
    CHECK_STATUS(petrel_server_destroy(server), PETREL_OK);
    config.proxy_protocol = 2;
    CHECK_STATUS(petrel_server_create(&config, &callbacks, &server), PETREL_E_INVALID_ARGUMENT);
    config.proxy_protocol = 0;
    config.trusted_proxies = "10.0.0.0/40";
    CHECK_STATUS(petrel_server_create(&config, &callbacks, &server), PETREL_OK);
    CHECK_STATUS(petrel_server_start(server), PETREL_E_INVALID_ARGUMENT);
    CHECK_STATUS(petrel_server_destroy(server), PETREL_OK);
}

static void test_http_and_streams(void) {
    char root[] = "/tmp/petrel-c-static-XXXXXX";
    CHECK(mkdtemp(root) != NULL);
    char file[128];
    snprintf(file, sizeof file, "%s/index.html", root);
    FILE *f = fopen(file, "w");
    CHECK(f != NULL);
    if (f) fputs("<p>static</p>", f), fclose(f);

    petrel_server_config config;
    petrel_server_config_init(&config);
    CHECK(config.max_request_body == 65536 && config.static_root == NULL);
    CHECK(config.keep_alive_timeout_ms == 5000 && config.cors_origins == NULL && config.cors_credentials == 0);
    CHECK(config.sse_retry_ms == 1000 && config.sse_padding == 0);
    config.host = "127.0.0.1";
    config.port = 0;
    config.threads = 1;
    config.topic_replay = 4;
    config.static_root = "/nonexistent/petrel";
    petrel_server_callbacks callbacks;
    petrel_server_callbacks_init(&callbacks);
    callbacks.on_http = http_on_http;
    callbacks.on_open = http_on_open;
    callbacks.on_upgrade = http_on_upgrade;
    petrel_server *server = NULL;
    CHECK_STATUS(petrel_server_create(&config, &callbacks, &server), PETREL_OK);
    CHECK_STATUS(petrel_server_start(server), PETREL_E_INVALID_ARGUMENT); /* the root must exist */
    CHECK_STATUS(petrel_server_destroy(server), PETREL_OK);
    config.event_stream_paths = "events";
    CHECK_STATUS(petrel_server_create(&config, &callbacks, &server), PETREL_E_INVALID_ARGUMENT);
    config.static_root = root;
    config.event_stream_paths = "/events, /other";
    config.cors_credentials = 1; /* without cors_origins */
    CHECK_STATUS(petrel_server_create(&config, &callbacks, &server), PETREL_E_INVALID_ARGUMENT);
    config.cors_origins = "http://app.example";
    config.sse_padding = 65537;
    CHECK_STATUS(petrel_server_create(&config, &callbacks, &server), PETREL_E_INVALID_ARGUMENT);
    config.sse_padding = 16;
    uint16_t port = 0;
    server = start_test_server(&config, &callbacks, &port);
    char buf[4096];

    int fd = raw_connect(port);
    raw_exchange(fd, "POST /ack?client=a+b HTTP/1.1\r\nHost: x\r\nX-Test: yes\r\nContent-Length: 2\r\n\r\n42", buf, sizeof buf,
                 "\"42\"}");
    CHECK(strncmp(buf, "HTTP/1.1 200", 12) == 0 && strstr(buf, "{\"ok\":true,\"body\":\"42\"}") != NULL);
    CHECK(strstr(buf, "Content-Type: application/json\r\n") != NULL && strstr(buf, "Connection: close") == NULL);
    CHECK(atomic_load(&http_state_checks) == 1);
    /* Kept alive: the next request on the same connection, which asks to close after it. */
    raw_exchange(fd, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", buf, sizeof buf, NULL);
    CHECK(strncmp(buf, "HTTP/1.1 200", 12) == 0 && strstr(buf, "\r\n\r\n<p>static</p>") != NULL);
    CHECK(strstr(buf, "Connection: close\r\n") != NULL);
    close(fd);
    /* CORS: a preflight from the allowed origin is answered by the library; another origin gets 403. */
    fd = raw_connect(port);
    raw_exchange(fd, "OPTIONS /ack HTTP/1.1\r\nHost: x\r\nOrigin: http://app.example\r\nAccess-Control-Request-Method: POST\r\n"
                 "Connection: close\r\n\r\n", buf, sizeof buf, NULL);
    CHECK(strncmp(buf, "HTTP/1.1 204", 12) == 0 && strstr(buf, "Access-Control-Allow-Origin: http://app.example\r\n") != NULL);
    close(fd);
    fd = raw_connect(port);
    raw_exchange(fd, "GET / HTTP/1.1\r\nHost: x\r\nOrigin: http://other.example\r\n\r\n", buf, sizeof buf, NULL);
    CHECK(strncmp(buf, "HTTP/1.1 403", 12) == 0);
    close(fd);
    fd = raw_connect(port);
    raw_exchange(fd, "GET /missing HTTP/1.1\r\nHost: x\r\n\r\n", buf, sizeof buf, NULL);
    CHECK(strncmp(buf, "HTTP/1.1 404", 12) == 0);
    close(fd);

    /* A stream: snapshot (id 3 after three publishes), then live events with their ids. */
    for (int i = 1; i <= 3; i++) petrel_server_publish(server, "prices", PETREL_TEXT, "old", 3, NULL, NULL);
    fd = raw_connect(port);
    raw_exchange(fd, "GET /events HTTP/1.1\r\nHost: x\r\n\r\n", buf, sizeof buf, "data: snapshot\n\n");
    CHECK(strstr(buf, "Content-Type: text/event-stream") != NULL && strstr(buf, "id: 3\ndata: snapshot\n\n") != NULL);
    CHECK(strstr(buf, "\r\n\r\nretry: 1000\n\n:                \n\n") != NULL); /* retry, then 16 bytes of padding */
    petrel_server_publish(server, "prices", PETREL_TEXT, "p4\nline", 7, NULL, NULL);
    raw_exchange(fd, NULL, buf, sizeof buf, "\n\n");
    CHECK(strcmp(buf, "id: 4\ndata: p4\ndata: line\n\n") == 0);
    close(fd);
    /* Resume after 2: 3 and 4 are replayed, no snapshot. */
    fd = raw_connect(port);
    raw_exchange(fd, "GET /events HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 2\r\n\r\n", buf, sizeof buf, "id: 4");
    raw_exchange(fd, NULL, buf + strlen(buf), sizeof buf - strlen(buf), "\n\n");
    CHECK(strstr(buf, "id: 3\ndata: old\n\nid: 4\n") != NULL && strstr(buf, "snapshot") == NULL);
    close(fd);
    CHECK(atomic_load(&stream_opens) == 2);

    /* The accept hook: refused without the header, accepted with a chosen subprotocol and data. */
    const char *upgrade = "GET /private HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                          "Sec-WebSocket-Protocol: a, b\r\n";
    char request[512];
    fd = raw_connect(port);
    snprintf(request, sizeof request, "%s\r\n", upgrade);
    raw_exchange(fd, request, buf, sizeof buf, NULL);
    CHECK(strncmp(buf, "HTTP/1.1 401", 12) == 0 && strstr(buf, "\r\n\r\nno\n") != NULL);
    close(fd);
    fd = raw_connect(port);
    snprintf(request, sizeof request, "%sAuthorization: Bearer ok\r\n\r\n", upgrade);
    raw_exchange(fd, request, buf, sizeof buf, "\r\n\r\n");
    CHECK(strncmp(buf, "HTTP/1.1 101", 12) == 0 && strstr(buf, "Sec-WebSocket-Protocol: b\r\n") != NULL);
    for (int i = 0; i < 100 && atomic_load(&upgrade_conn_data_ok) == 0; i++) sleep_ms(10);
    CHECK(atomic_load(&upgrade_conn_data_ok) == 1);
    close(fd);
    CHECK(atomic_load(&http_calls) == 5);
    CHECK_STATUS(petrel_server_destroy(server), PETREL_OK);
    unlink(file);
    rmdir(root);
}

/* ---- TLS: wss:// echo, certificate errors with their reason, reload (certs from make-certs.sh) ---- */

static void test_tls(void) {
    const char *dir = getenv("PETREL_TEST_CERTS");
    if (!dir) {
        fprintf(stderr, "PETREL_TEST_CERTS not set: TLS tests skipped\n");
        failed++;
        return;
    }
    char cert[512], key[512], ca[512], ca2[512];
    snprintf(cert, sizeof cert, "%s/server.pem", dir);
    snprintf(key, sizeof key, "%s/server.key", dir);
    snprintf(ca, sizeof ca, "%s/ca.pem", dir);
    snprintf(ca2, sizeof ca2, "%s/ca2.pem", dir);
    petrel_server_config config;
    petrel_server_config_init(&config);
    config.host = "127.0.0.1";
    config.port = 0;
    config.threads = 1;
    config.tls_cert_file = cert;
    petrel_server_callbacks callbacks;
    petrel_server_callbacks_init(&callbacks);
    callbacks.on_message = on_message;
    petrel_server *server = NULL;
    CHECK_STATUS(petrel_server_create(&config, &callbacks, &server), PETREL_E_INVALID_ARGUMENT); /* a key is needed */
    config.tls_key_file = key;
    char sni[1200];
    snprintf(sni, sizeof sni, "other.test,%s/sni.pem,%s/sni.key", dir, dir);
    config.tls_sni_certificates = "other.test,only-two-fields";
    CHECK_STATUS(petrel_server_create(&config, &callbacks, &server), PETREL_E_INVALID_ARGUMENT);
    config.tls_sni_certificates = sni;
    uint16_t port = 0;
    server = start_test_server(&config, &callbacks, &port);
    char url[128];
    snprintf(url, sizeof url, "wss://localhost:%u/", port);

    petrel_client_config cc;
    petrel_client_config_init(&cc);
    CHECK(cc.tls_ca_file == NULL && cc.tls_insecure_skip_verify == 0);
    cc.tls_ca_file = ca;
    petrel_client *client = NULL;
    CHECK_STATUS(petrel_client_connect(url, &cc, NULL, &client), PETREL_OK);
    if (client) {
        CHECK_STATUS(petrel_client_send(client, PETREL_TEXT, "secure", 6), PETREL_OK);
        char buf[16];
        size_t len = 0;
        int32_t kind = 0;
        CHECK_STATUS(petrel_client_receive(client, 5000, &kind, buf, sizeof buf, &len), PETREL_OK);
        CHECK(kind == PETREL_TEXT && len == 6 && memcmp(buf, "secure", 6) == 0);
        petrel_client_destroy(client);
    }
    client = NULL;
    cc.tls_server_name = "wrong.test";
    CHECK_STATUS(petrel_client_connect(url, &cc, NULL, &client), PETREL_E_TLS);
    CHECK(strstr(petrel_last_error(), "hostname mismatch") != NULL);
    cc.tls_server_name = "other.test"; /* SNI: the second CA's certificate for other.test */
    cc.tls_ca_file = ca2;
    CHECK_STATUS(petrel_client_connect(url, &cc, NULL, &client), PETREL_OK);
    petrel_client_destroy(client);
    cc.tls_server_name = NULL;
    CHECK_STATUS(petrel_client_connect(url, &cc, NULL, &client), PETREL_E_TLS);
    CHECK(strstr(petrel_last_error(), "certificate verify failed") != NULL);
    cc.tls_insecure_skip_verify = 1;
    CHECK_STATUS(petrel_client_connect(url, &cc, NULL, &client), PETREL_OK);
    petrel_client_destroy(client);
    cc.tls_ca_file = "/nonexistent/ca.pem";
    CHECK_STATUS(petrel_client_connect(url, &cc, NULL, &client), PETREL_E_TLS);
    CHECK_STATUS(petrel_server_reload_tls(server), PETREL_OK);
    CHECK_STATUS(petrel_server_destroy(server), PETREL_OK);
}

/* Queued events: open, messages and close come as records from petrel_server_next_events, in
 * order; a record that does not fit says how much room it needs; stop ends the queue. */
static void test_event_queue(void) {
    petrel_server_config config;
    petrel_server_config_init(&config);
    CHECK(config.queue_events == 0 && config.event_queue_bytes == 16u << 20);
    config.host = "127.0.0.1";
    config.port = 0;
    config.threads = 2;
    config.queue_events = 1;
    config.event_queue_bytes = 1; /* raised to the 64 KiB minimum */
    petrel_server *server = NULL;
    CHECK_STATUS(petrel_server_create(&config, NULL, &server), PETREL_OK);
    if (!server) return;
    size_t len = 0;
    enum { CAP = 256 * 1024 };
    uint8_t *buf = malloc(CAP);
    CHECK_STATUS(petrel_server_next_events(server, 0, buf, CAP, NULL), PETREL_E_NULL);
    CHECK_STATUS(petrel_server_next_events(server, 10, buf, CAP, &len), PETREL_E_TIMEOUT);
    CHECK_STATUS(petrel_server_start(server), PETREL_OK);
    uint16_t port = 0;
    CHECK_STATUS(petrel_server_port(server, &port), PETREL_OK);
    petrel_client *client = connect_client(port, "/queue");
    /* 200 messages of growing size (0..199 bytes), then one of 100 KiB, then a close. */
    static uint8_t big[100 * 1024];
    memset(big, 'b', sizeof big);
    uint8_t msg[200];
    for (int i = 0; i < 200; i++) {
        memset(msg, 'a' + i % 26, (size_t)i);
        CHECK_STATUS(petrel_client_send(client, PETREL_TEXT, msg, (size_t)i), PETREL_OK);
    }
    CHECK_STATUS(petrel_client_send(client, PETREL_BINARY, big, sizeof big), PETREL_OK);
    CHECK_STATUS(petrel_client_close(client, 4001, "bye"), PETREL_OK);
    int opened = 0, messages = 0, in_order = 1, big_ok = 0, closed = 0, too_small = 0, target_ok = 0;
    uint64_t id = 0;
    for (int rounds = 0; rounds < 500 && !closed; rounds++) {
        /* A small buffer first, so that the 100 KiB message cannot fit. */
        size_t cap = too_small ? CAP : 4096;
        petrel_status st = petrel_server_next_events(server, 2000, buf, cap, &len);
        if (st == PETREL_E_BUFFER_TOO_SMALL) {
            too_small = (len == sizeof(petrel_event_record) + sizeof big);
            continue;
        }
        if (st != PETREL_OK) break;
        for (size_t off = 0; off < len;) {
            petrel_event_record r;
            memcpy(&r, buf + off, sizeof r);
            const uint8_t *payload = buf + off + sizeof r;
            if (r.type == PETREL_QUEUED_OPEN) {
                opened++;
                id = r.conn;
                target_ok = r.len == 6 && memcmp(payload, "/queue", 6) == 0;
            } else if (r.type == PETREL_QUEUED_MESSAGE && r.conn == id) {
                if (messages < 200) {
                    if (r.kind != PETREL_TEXT || r.len != (uint32_t)messages ||
                        (r.len > 0 && payload[0] != 'a' + messages % 26)) in_order = 0;
                } else {
                    big_ok = r.kind == PETREL_BINARY && r.len == sizeof big && payload[r.len - 1] == 'b';
                }
                messages++;
            } else if (r.type == PETREL_QUEUED_CLOSE && r.conn == id) {
                closed = r.code == 4001 && r.len == 3 && memcmp(payload, "bye", 3) == 0;
            }
            off += sizeof r + ((r.len + 7u) & ~7u);
        }
    }
    CHECK(opened == 1 && id != 0 && target_ok);
    CHECK(messages == 201 && in_order);
    CHECK(too_small && big_ok);
    CHECK(closed);
    petrel_client_destroy(client);
    CHECK_STATUS(petrel_server_stop(server, 1000), PETREL_OK);
    CHECK_STATUS(petrel_server_next_events(server, 1000, buf, CAP, &len), PETREL_E_STOPPED);
    CHECK_STATUS(petrel_server_destroy(server), PETREL_OK);

    /* compression: 0, 1 or 2 (keep the context); nothing else. */
    petrel_server_config_init(&config);
    config.compression = 3;
    CHECK_STATUS(petrel_server_create(&config, NULL, &server), PETREL_E_INVALID_ARGUMENT);

    /* Without queue_events there is nothing to take. */
    petrel_server_config_init(&config);
    config.host = "127.0.0.1";
    config.port = 0;
    CHECK_STATUS(petrel_server_create(&config, NULL, &server), PETREL_OK);
    CHECK_STATUS(petrel_server_next_events(server, 0, buf, CAP, &len), PETREL_E_STATE);
    CHECK_STATUS(petrel_server_destroy(server), PETREL_OK);
    free(buf);
}

int main(void) {
    uint16_t port = 0;
    petrel_server *server = start_server(&port);
    if (server) {
        test_echo(port);
        test_client_close(port);
        test_fragments(port);
        test_pubsub(server, port);
        test_destroy_from_callback(port);
        test_errors(server);
        test_connect_dropped_and_bad_lengths(server);
        CHECK(atomic_load(&opens) >= 24 && atomic_load(&path_ok) >= 24);
        CHECK_STATUS(petrel_server_stop(server, 1000), PETREL_OK);
        CHECK_STATUS(petrel_server_stop(server, 1000), PETREL_E_STOPPED);
        uint64_t count = 1;
        CHECK_STATUS(petrel_server_connection_count(server, &count), PETREL_OK);
        CHECK(count == 0);
        CHECK_STATUS(petrel_server_publish(server, "ticks", PETREL_TEXT, "x", 1, NULL, NULL), PETREL_E_STOPPED);
        CHECK_STATUS(petrel_server_destroy(server), PETREL_OK);
    }
    test_event_queue();
    test_sessions();
    test_external_poll();
    test_http_and_streams();
    test_access_log();
    test_real_client();
    test_tls();
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
