/* C tests of what petrel.h tells about a handshake and a live connection: the subprotocol chosen
 * (petrel_conn_subprotocol, petrel_client_subprotocol: chosen in on_upgrade, by the config's
 * preference, or none), the round-trip time of a ping (petrel_conn_ping / petrel_conn_rtt from
 * the server, petrel_client_ping / petrel_client_rtt from the client), and a refused upgrade's
 * status and body (petrel_last_refusal after petrel_client_connect returned PETREL_E_HANDSHAKE).
 * Built with -Wall -Wextra -Werror, run under valgrind. Prints "N passed, N failed". */
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

#define EXPIRED "token expired"

/* The id of the last connection opened on each path. */
static atomic_uint_fast64_t proto_conn, pref_conn, plain_conn, events_conn;

static void on_upgrade(void *userdata, petrel_server *server, const petrel_http_request *req) {
    (void)userdata, (void)server;
    if (strcmp(req->path, "/refuse") == 0) {
        petrel_http_respond(req, 401, "text/plain", EXPIRED, strlen(EXPIRED));
    } else if (strcmp(req->path, "/forbid") == 0) {
        petrel_http_respond(req, 403, "text/plain", NULL, 0);
    } else if (strcmp(req->path, "/proto") == 0) {
        if (petrel_upgrade_accept(req, "c", NULL) == PETREL_E_INVALID_ARGUMENT) /* not offered */
            petrel_upgrade_accept(req, "b", NULL);
    }
    /* Others: accepted, with the configured preference. */
}

static void on_open(void *userdata, petrel_server *server, uint64_t conn, void **conn_data) {
    (void)userdata, (void)conn_data;
    char path[32];
    size_t len = 0;
    if (petrel_conn_path(server, conn, path, sizeof path, &len) != PETREL_OK) return;
    if (strcmp(path, "/proto") == 0) atomic_store(&proto_conn, conn);
    else if (strcmp(path, "/pref") == 0) atomic_store(&pref_conn, conn);
    else if (strcmp(path, "/plain") == 0) atomic_store(&plain_conn, conn);
    else if (strcmp(path, "/events") == 0) atomic_store(&events_conn, conn);
}

static uint64_t wait_conn(atomic_uint_fast64_t *conn) {
    for (int i = 0; i < 2000 && atomic_load(conn) == 0; i++) sleep_ms(5);
    return atomic_load(conn);
}

static petrel_client *connect_to(uint16_t port, const char *path, const char *subprotocols) {
    char url[96];
    snprintf(url, sizeof url, "ws://127.0.0.1:%u%s", port, path);
    petrel_client_config config;
    petrel_client_config_init(&config);
    config.subprotocols = subprotocols;
    petrel_client *client = NULL;
    CHECK_STATUS(petrel_client_connect(url, &config, NULL, &client), PETREL_OK);
    return client;
}

/* The client offers "a, b" and on_upgrade chooses "b"; "x, y" and the config's preference
 * ("y, z") gives "y"; no offer, no subprotocol. Both ends say the same. */
static void test_subprotocol(petrel_server *server, uint16_t port) {
    char buf[16];
    size_t len = 0;
    petrel_client *client = connect_to(port, "/proto", "a, b");
    uint64_t conn = wait_conn(&proto_conn);
    if (client && conn) {
        CHECK_STATUS(petrel_client_subprotocol(client, buf, sizeof buf, &len), PETREL_OK);
        CHECK(len == 1 && strcmp(buf, "b") == 0);
        len = 0;
        CHECK_STATUS(petrel_client_subprotocol(client, NULL, 0, &len), PETREL_E_BUFFER_TOO_SMALL);
        CHECK(len == 1);
        CHECK_STATUS(petrel_client_subprotocol(client, buf, sizeof buf, NULL), PETREL_E_NULL);
        CHECK_STATUS(petrel_client_subprotocol(NULL, buf, sizeof buf, &len), PETREL_E_NULL);

        memset(buf, 0, sizeof buf);
        CHECK_STATUS(petrel_conn_subprotocol(server, conn, buf, sizeof buf, &len), PETREL_OK);
        CHECK(len == 1 && strcmp(buf, "b") == 0);
        len = 0;
        CHECK_STATUS(petrel_conn_subprotocol(server, conn, NULL, 0, &len), PETREL_E_BUFFER_TOO_SMALL);
        CHECK(len == 1);
        CHECK_STATUS(petrel_conn_subprotocol(server, conn, buf, sizeof buf, NULL), PETREL_E_NULL);
        CHECK_STATUS(petrel_conn_subprotocol(NULL, conn, buf, sizeof buf, &len), PETREL_E_NULL);
        CHECK_STATUS(petrel_conn_subprotocol(server, UINT64_MAX, buf, sizeof buf, &len), PETREL_E_UNKNOWN_CONNECTION);
    }
    petrel_client_destroy(client);

    client = connect_to(port, "/pref", "x, y");
    conn = wait_conn(&pref_conn);
    if (client && conn) {
        CHECK_STATUS(petrel_client_subprotocol(client, buf, sizeof buf, &len), PETREL_OK);
        CHECK(len == 1 && strcmp(buf, "y") == 0);
        CHECK_STATUS(petrel_conn_subprotocol(server, conn, buf, sizeof buf, &len), PETREL_OK);
        CHECK(len == 1 && strcmp(buf, "y") == 0);
    }
    petrel_client_destroy(client);

    client = connect_to(port, "/plain", NULL);
    conn = wait_conn(&plain_conn);
    if (client && conn) {
        CHECK_STATUS(petrel_client_subprotocol(client, buf, sizeof buf, &len), PETREL_E_AGAIN);
        CHECK_STATUS(petrel_conn_subprotocol(server, conn, buf, sizeof buf, &len), PETREL_E_AGAIN);
    }
    petrel_client_destroy(client);
    atomic_store(&plain_conn, 0);
}

/* The server pings a client (which answers by itself): no round-trip time before the pong,
 * one after. The client pings the server likewise. */
static void test_ping(petrel_server *server, uint16_t port) {
    petrel_client *client = connect_to(port, "/plain", NULL);
    uint64_t conn = wait_conn(&plain_conn);
    if (!client || !conn) {
        petrel_client_destroy(client);
        return;
    }
    uint32_t rtt = UINT32_MAX;
    static const char too_long[126] = {0};

    CHECK_STATUS(petrel_conn_rtt(server, conn, &rtt), PETREL_E_AGAIN);
    CHECK(rtt == UINT32_MAX); /* outputs are written only on PETREL_OK */
    CHECK_STATUS(petrel_conn_rtt(server, conn, NULL), PETREL_E_NULL);
    CHECK_STATUS(petrel_conn_rtt(NULL, conn, &rtt), PETREL_E_NULL);
    CHECK_STATUS(petrel_conn_rtt(server, UINT64_MAX, &rtt), PETREL_E_UNKNOWN_CONNECTION);
    CHECK_STATUS(petrel_conn_ping(server, conn, too_long, sizeof too_long), PETREL_E_INVALID_ARGUMENT);
    CHECK_STATUS(petrel_conn_ping(server, conn, NULL, 3), PETREL_E_NULL);
    CHECK_STATUS(petrel_conn_ping(NULL, conn, "x", 1), PETREL_E_NULL);
    CHECK_STATUS(petrel_conn_ping(server, UINT64_MAX, "x", 1), PETREL_E_UNKNOWN_CONNECTION);
    CHECK_STATUS(petrel_conn_ping(server, conn, "are you there", 13), PETREL_OK);
    petrel_status s = PETREL_E_AGAIN;
    for (int i = 0; i < 2000 && s == PETREL_E_AGAIN; i++) {
        s = petrel_conn_rtt(server, conn, &rtt);
        if (s == PETREL_E_AGAIN) sleep_ms(5);
    }
    CHECK_STATUS(s, PETREL_OK);
    CHECK(rtt < 10000);
    CHECK_STATUS(petrel_conn_ping(server, conn, NULL, 0), PETREL_OK); /* an empty ping */
    CHECK_STATUS(petrel_conn_ping(server, conn, too_long, 125), PETREL_OK); /* the largest */

    rtt = UINT32_MAX;
    CHECK_STATUS(petrel_client_rtt(client, &rtt), PETREL_E_AGAIN);
    CHECK(rtt == UINT32_MAX);
    CHECK_STATUS(petrel_client_rtt(client, NULL), PETREL_E_NULL);
    CHECK_STATUS(petrel_client_rtt(NULL, &rtt), PETREL_E_NULL);
    CHECK_STATUS(petrel_client_ping(client, too_long, sizeof too_long), PETREL_E_INVALID_ARGUMENT);
    CHECK_STATUS(petrel_client_ping(client, NULL, 3), PETREL_E_NULL);
    CHECK_STATUS(petrel_client_ping(NULL, "x", 1), PETREL_E_NULL);
    CHECK_STATUS(petrel_client_ping(client, "hello", 5), PETREL_OK);
    s = PETREL_E_AGAIN;
    for (int i = 0; i < 2000 && s == PETREL_E_AGAIN; i++) {
        s = petrel_client_rtt(client, &rtt);
        if (s == PETREL_E_AGAIN) sleep_ms(5);
    }
    CHECK_STATUS(s, PETREL_OK);
    CHECK(rtt < 10000);
    CHECK_STATUS(petrel_client_ping(client, NULL, 0), PETREL_OK);

    /* Closed: no more pings. */
    CHECK_STATUS(petrel_client_close(client, 1000, NULL), PETREL_OK);
    int32_t kind;
    char buf[8];
    size_t len;
    CHECK_STATUS(petrel_client_receive(client, 10000, &kind, buf, sizeof buf, &len), PETREL_E_CLOSED);
    CHECK_STATUS(petrel_client_ping(client, "x", 1), PETREL_E_CLOSED);
    petrel_client_destroy(client);
    for (int i = 0; i < 2000 && petrel_conn_ping(server, conn, "x", 1) == PETREL_OK; i++) sleep_ms(5);
    CHECK_STATUS(petrel_conn_ping(server, conn, "x", 1), PETREL_E_UNKNOWN_CONNECTION);
}

/* An event stream has no pings and no subprotocol. */
static void test_event_stream(petrel_server *server, uint16_t port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(port);
    static const char get[] = "GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n";
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || write(fd, get, sizeof get - 1) != (ssize_t)(sizeof get - 1)) {
        CHECK(!"event stream request");
        if (fd >= 0) close(fd);
        return;
    }
    uint64_t conn = wait_conn(&events_conn);
    CHECK(conn != 0);
    if (conn) {
        char buf[16];
        size_t len = 0;
        uint32_t rtt = 0;
        CHECK_STATUS(petrel_conn_ping(server, conn, "x", 1), PETREL_E_INVALID_ARGUMENT);
        CHECK_STATUS(petrel_conn_subprotocol(server, conn, buf, sizeof buf, &len), PETREL_E_AGAIN);
        CHECK_STATUS(petrel_conn_rtt(server, conn, &rtt), PETREL_E_AGAIN);
    }
    close(fd);
}

static void *refusal_elsewhere(void *arg) {
    uint16_t status = 0;
    size_t len = 0;
    *(petrel_status *)arg = petrel_last_refusal(&status, NULL, 0, &len);
    return NULL;
}

/* A refused upgrade: petrel_client_connect says PETREL_E_HANDSHAKE, petrel_last_refusal the
 * status and the body. */
static void test_refusal(uint16_t port) {
    char url[96], body[64];
    uint16_t status = 0;
    size_t len = 0;
    petrel_client *client = NULL;

    snprintf(url, sizeof url, "ws://127.0.0.1:%u/refuse", port);
    CHECK_STATUS(petrel_client_connect(url, NULL, NULL, &client), PETREL_E_HANDSHAKE);
    CHECK(client == NULL && strlen(petrel_last_error()) > 0);
    memset(body, 'z', sizeof body);
    CHECK_STATUS(petrel_last_refusal(&status, body, sizeof body, &len), PETREL_OK);
    CHECK(status == 401 && len == strlen(EXPIRED) && strcmp(body, EXPIRED) == 0);
    /* Too small: the status and the length needed, nothing copied. */
    status = 0, len = 0;
    memset(body, 'z', sizeof body);
    CHECK_STATUS(petrel_last_refusal(&status, body, 4, &len), PETREL_E_BUFFER_TOO_SMALL);
    CHECK(status == 401 && len == strlen(EXPIRED) && body[0] == 'z');
    status = 0, len = 0;
    CHECK_STATUS(petrel_last_refusal(&status, NULL, 0, &len), PETREL_E_BUFFER_TOO_SMALL);
    CHECK(status == 401 && len == strlen(EXPIRED));
    /* Exactly the body's length: copied, without room for a NUL. */
    memset(body, 'z', sizeof body);
    CHECK_STATUS(petrel_last_refusal(&status, body, strlen(EXPIRED), &len), PETREL_OK);
    CHECK(len == strlen(EXPIRED) && memcmp(body, EXPIRED, len) == 0 && body[len] == 'z');
    CHECK_STATUS(petrel_last_refusal(NULL, body, sizeof body, &len), PETREL_E_NULL);
    CHECK_STATUS(petrel_last_refusal(&status, body, sizeof body, NULL), PETREL_E_NULL);
    /* It is this thread's: another thread has none. */
    petrel_status other = PETREL_OK;
    pthread_t t;
    CHECK(pthread_create(&t, NULL, refusal_elsewhere, &other) == 0);
    pthread_join(t, NULL);
    CHECK_STATUS(other, PETREL_E_AGAIN);
    /* And it stays until the next connect. */
    CHECK_STATUS(petrel_last_refusal(&status, body, sizeof body, &len), PETREL_OK);

    /* A refusal without a body. */
    snprintf(url, sizeof url, "ws://127.0.0.1:%u/forbid", port);
    CHECK_STATUS(petrel_client_connect(url, NULL, NULL, &client), PETREL_E_HANDSHAKE);
    status = 0, len = 99;
    CHECK_STATUS(petrel_last_refusal(&status, NULL, 0, &len), PETREL_OK);
    CHECK(status == 403 && len == 0);

    /* A connect that succeeds clears it. */
    client = connect_to(port, "/plain", NULL);
    CHECK_STATUS(petrel_last_refusal(&status, body, sizeof body, &len), PETREL_E_AGAIN);
    petrel_client_destroy(client);

    /* So does one that fails without a status (nothing listens on a bound port). */
    snprintf(url, sizeof url, "ws://127.0.0.1:%u/refuse", port);
    CHECK_STATUS(petrel_client_connect(url, NULL, NULL, &client), PETREL_E_HANDSHAKE);
    CHECK_STATUS(petrel_last_refusal(&status, body, sizeof body, &len), PETREL_OK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof addr;
    CHECK(bind(fd, (struct sockaddr *)&addr, sizeof addr) == 0 && getsockname(fd, (struct sockaddr *)&addr, &alen) == 0);
    snprintf(url, sizeof url, "ws://127.0.0.1:%u/", ntohs(addr.sin_port));
    CHECK_STATUS(petrel_client_connect(url, NULL, NULL, &client), PETREL_E_CONNECT);
    CHECK_STATUS(petrel_last_refusal(&status, body, sizeof body, &len), PETREL_E_AGAIN);
    close(fd);
}

int main(void) {
    petrel_server_config config;
    petrel_server_config_init(&config);
    config.host = "127.0.0.1";
    config.port = 0;
    config.threads = 1;
    config.subprotocols = "y, z";
    config.event_stream_paths = "/events";
    petrel_server_callbacks callbacks;
    petrel_server_callbacks_init(&callbacks);
    callbacks.on_upgrade = on_upgrade;
    callbacks.on_open = on_open;
    uint16_t port = 0;
    petrel_server *server = start_test_server(&config, &callbacks, &port);

    test_subprotocol(server, port);
    test_ping(server, port);
    test_event_stream(server, port);
    test_refusal(port);

    CHECK_STATUS(petrel_server_destroy(server), PETREL_OK);
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
