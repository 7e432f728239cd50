/* C tests of flow control and request headers in petrel.h: petrel_conn_pause_reading and
 * petrel_client_pause_reading (reading stops, TCP pushes back on the sender, letting go delivers
 * everything in order), the client's max_backpressure and on_drain, and the client's extra
 * headers (and the ones refused). Built with -Wall -Wextra -Werror, run under valgrind.
 * Prints "N passed, N failed". */
#define _POSIX_C_SOURCE 200809L
#include <petrel.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"

enum { CHUNK = 16 * 1024, LIMIT = 256 * 1024, MAX_SENDS = 4096 };

/* Server side: pauses each connection as it opens; counts what arrives and checks its order. */
static atomic_uint_fast64_t paused_conn;
static atomic_int server_received, server_out_of_order, token_seen;

static void flow_on_open(void *userdata, petrel_server *server, uint64_t conn, void **conn_data) {
    (void)userdata, (void)conn_data;
    char token[32];
    size_t len = 0;
    if (petrel_conn_header(server, conn, "X-Token", token, sizeof token, &len) == PETREL_OK && strcmp(token, "abc def") == 0) {
        atomic_fetch_add(&token_seen, 1);
    }
    char path[16];
    if (petrel_conn_path(server, conn, path, sizeof path, &len) == PETREL_OK && strcmp(path, "/held") == 0) {
        /* On the loop thread: in force before anything more is read. */
        CHECK_STATUS(petrel_conn_pause_reading(server, conn, 1), PETREL_OK);
        atomic_store(&paused_conn, conn);
    }
}

static void flow_on_message(void *userdata, petrel_server *server, uint64_t conn, void *conn_data, int32_t kind,
                            const uint8_t *data, size_t len) {
    (void)userdata, (void)conn_data, (void)kind;
    if (len == 4 && memcmp(data, "feed", 4) == 0) {
        /* Sends until the client's pause pushes back on this connection's buffer. */
        uint8_t *chunk = calloc(1, CHUNK);
        for (uint32_t i = 0; i < MAX_SENDS; i++) {
            memcpy(chunk, &i, sizeof i);
            if (petrel_conn_send(server, conn, PETREL_BINARY, chunk, CHUNK) != PETREL_OK) break;
        }
        free(chunk);
        return;
    }
    uint32_t n = 0;
    if (len >= sizeof n) memcpy(&n, data, sizeof n);
    if (n != (uint32_t)atomic_load(&server_received)) atomic_fetch_add(&server_out_of_order, 1);
    atomic_fetch_add(&server_received, 1);
}

/* Client side: counts messages; drains. */
static atomic_int client_received, client_out_of_order, drains;

static void client_on_message(void *userdata, petrel_client *client, int32_t kind, const uint8_t *data, size_t len) {
    (void)userdata, (void)client, (void)kind;
    uint32_t n = 0;
    if (len >= sizeof n) memcpy(&n, data, sizeof n);
    if (n != (uint32_t)atomic_load(&client_received)) atomic_fetch_add(&client_out_of_order, 1);
    atomic_fetch_add(&client_received, 1);
}

static void client_on_drain(void *userdata, petrel_client *client) {
    (void)userdata, (void)client;
    atomic_fetch_add(&drains, 1);
}

static int wait_for(atomic_int *value, int want, int ms) {
    for (int waited = 0; waited < ms; waited += 5) {
        if (atomic_load(value) == want) return 1;
        sleep_ms(5);
    }
    return atomic_load(value) == want;
}

static petrel_client *connect_to(uint16_t port, const char *path, const petrel_client_config *config) {
    char url[96];
    snprintf(url, sizeof url, "ws://127.0.0.1:%u%s", port, path);
    petrel_client_callbacks callbacks;
    petrel_client_callbacks_init(&callbacks);
    callbacks.on_message = client_on_message;
    callbacks.on_drain = client_on_drain;
    petrel_client *client = NULL;
    CHECK_STATUS(petrel_client_connect(url, config, &callbacks, &client), PETREL_OK);
    return client;
}

/* The server holds a connection: the client's sends are pushed back (BACKPRESSURE over its
 * max_backpressure), nothing arrives; let go, everything arrives in order and on_drain comes. */
static void test_server_pause(petrel_server *server, uint16_t port) {
    petrel_client_config config;
    petrel_client_config_init(&config);
    CHECK(config.max_backpressure == 1024 * 1024);
    config.max_backpressure = LIMIT;
    config.compression = 0;
    petrel_client *client = connect_to(port, "/held", &config);
    if (!client) return;
    for (int i = 0; i < 500 && atomic_load(&paused_conn) == 0; i++) sleep_ms(5);
    uint8_t *chunk = calloc(1, CHUNK);
    uint32_t sent = 0;
    petrel_status status = PETREL_OK;
    for (; sent < MAX_SENDS; sent++) {
        memcpy(chunk, &sent, sizeof sent);
        status = petrel_client_send(client, PETREL_BINARY, chunk, CHUNK);
        if (status != PETREL_OK) break;
        if (sent % 64 == 63) sleep_ms(1);
    }
    free(chunk);
    CHECK_STATUS(status, PETREL_E_BACKPRESSURE);
    sleep_ms(200);
    CHECK(atomic_load(&server_received) == 0);
    CHECK_STATUS(petrel_conn_pause_reading(server, atomic_load(&paused_conn), 2), PETREL_E_INVALID_ARGUMENT);
    CHECK_STATUS(petrel_conn_pause_reading(server, 999999, 0), PETREL_E_UNKNOWN_CONNECTION);
    CHECK_STATUS(petrel_conn_pause_reading(server, atomic_load(&paused_conn), 0), PETREL_OK); /* another thread */
    CHECK(wait_for(&server_received, (int)sent, 10000));
    CHECK(atomic_load(&server_out_of_order) == 0);
    CHECK(wait_for(&drains, 1, 5000));
    petrel_client_destroy(client);
}

/* The client holds reading: the server's buffer fills and its sends stop; let go, all arrive. */
static void test_client_pause(uint16_t port) {
    petrel_client_config config;
    petrel_client_config_init(&config);
    config.compression = 0;
    config.headers = "X-Token: abc def\r\nX-Other:1";
    petrel_client *client = connect_to(port, "/feed", &config);
    if (!client) return;
    CHECK(atomic_load(&token_seen) == 1);
    CHECK_STATUS(petrel_client_pause_reading(client, 1), PETREL_OK);
    CHECK_STATUS(petrel_client_pause_reading(client, 5), PETREL_E_INVALID_ARGUMENT);
    CHECK_STATUS(petrel_client_send(client, PETREL_TEXT, "feed", 4), PETREL_OK);
    sleep_ms(300);
    int got = atomic_load(&client_received);
    CHECK(got == 0);
    CHECK_STATUS(petrel_client_pause_reading(client, 0), PETREL_OK);
    /* The server sent until its buffer (1 MiB) was full: some hundreds of messages, not all. */
    sleep_ms(300);
    got = atomic_load(&client_received);
    CHECK(got > 0 && got < MAX_SENDS);
    CHECK(atomic_load(&client_out_of_order) == 0);
    petrel_client_destroy(client);
    CHECK_STATUS(petrel_client_pause_reading(NULL, 1), PETREL_E_NULL);
}

static void test_refused_headers(uint16_t port) {
    static const char *bad[] = {"Host: evil", "sec-websocket-key: x", "X-A: 1\rX-B: 2", "Bad Name: 1", "no colon", ": empty"};
    char url[64];
    snprintf(url, sizeof url, "ws://127.0.0.1:%u/", port);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        petrel_client_config config;
        petrel_client_config_init(&config);
        config.headers = bad[i];
        petrel_client *client = NULL;
        CHECK_STATUS(petrel_client_connect(url, &config, NULL, &client), PETREL_E_INVALID_ARGUMENT);
        CHECK(client == NULL && strlen(petrel_last_error()) > 0);
    }
}

int main(void) {
    petrel_server_config config;
    petrel_server_config_init(&config);
    config.host = "127.0.0.1";
    config.port = 0;
    config.threads = 1;
    config.compression = 0;
    petrel_server_callbacks callbacks;
    petrel_server_callbacks_init(&callbacks);
    callbacks.on_open = flow_on_open;
    callbacks.on_message = flow_on_message;
    uint16_t port = 0;
    petrel_server *server = start_test_server(&config, &callbacks, &port);
    test_server_pause(server, port);
    atomic_store(&client_received, 0);
    test_client_pause(port);
    test_refused_headers(port);
    CHECK_STATUS(petrel_server_destroy(server), PETREL_OK);
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
