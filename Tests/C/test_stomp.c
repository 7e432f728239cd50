/* C tests of STOMP in petrel.h: stomp_paths, on_stomp (CONNECT with a login refused or accepted,
 * SUBSCRIBE allowed onto a topic or refused, SEND published), petrel_stomp_header,
 * petrel_stomp_allow / petrel_stomp_refuse and their states, on_stomp_ack, petrel_conn_is_stomp.
 * The STOMP client is petrel's own WebSocket client sending frames by hand. Built with -Wall
 * -Wextra -Werror, run under valgrind. Prints "N passed, N failed". */
#define _POSIX_C_SOURCE 200809L
#include <petrel.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

static atomic_int stomp_connections, acks, last_ack_count, header_seen;
static atomic_uint_fast64_t last_position;
static int stomp_marker; /* its address is every STOMP connection's conn_data: on_stomp and on_stomp_ack get it */

static void on_open(void *userdata, petrel_server *server, uint64_t conn, void **conn_data) {
    (void)userdata;
    int32_t is = -1;
    CHECK_STATUS(petrel_conn_is_stomp(server, conn, &is), PETREL_OK);
    CHECK(*conn_data == NULL); /* nothing attached by an on_upgrade */
    if (is == 1) {
        *conn_data = &stomp_marker;
        atomic_fetch_add(&stomp_connections, 1);
    }
}

static void on_stomp(void *userdata, petrel_server *server, uint64_t conn, void *conn_data, const petrel_stomp_frame *frame) {
    (void)userdata, (void)server, (void)conn;
    CHECK(conn_data == &stomp_marker);
    if (strcmp(frame->command, "CONNECT") == 0) {
        if (strcmp(frame->login, "mallory") == 0) {
            CHECK_STATUS(petrel_stomp_refuse(frame, "bad\nline"), PETREL_E_INVALID_ARGUMENT);
            CHECK_STATUS(petrel_stomp_refuse(frame, "unknown login"), PETREL_OK);
            CHECK_STATUS(petrel_stomp_allow(frame, NULL), PETREL_E_STATE);
        }
        return; /* no answer: accepted */
    }
    if (strcmp(frame->command, "SUBSCRIBE") == 0) {
        char value[16];
        size_t len = 0;
        if (petrel_stomp_header(frame, "x-mine", value, sizeof value, &len) == PETREL_OK && strcmp(value, "a:b") == 0)
            atomic_fetch_add(&header_seen, 1);
        CHECK_STATUS(petrel_stomp_header(frame, "absent", value, sizeof value, &len), PETREL_E_AGAIN);
        if (strcmp(frame->destination, "/prices") == 0) {
            CHECK(strcmp(frame->subscription, "sub-0") == 0 && strcmp(frame->ack, "client") == 0);
            CHECK_STATUS(petrel_stomp_allow(frame, NULL), PETREL_E_NULL); /* a SUBSCRIBE needs its topic */
            CHECK_STATUS(petrel_stomp_allow(frame, "prices"), PETREL_OK);
        } else {
            CHECK_STATUS(petrel_stomp_refuse(frame, "no such destination"), PETREL_OK);
        }
        return;
    }
    if (strcmp(frame->command, "SEND") == 0) {
        CHECK(frame->body_len == 5 && memcmp(frame->body, "hi\0yo", 5) == 0);
        CHECK_STATUS(petrel_stomp_allow(frame, "prices"), PETREL_OK);
    }
}

static void on_stomp_ack(void *userdata, petrel_server *server, uint64_t conn, void *conn_data, const char *subscription,
                         const uint64_t *ids, size_t count, int32_t negative, uint64_t position) {
    (void)userdata, (void)server, (void)conn, (void)ids;
    CHECK(conn_data == &stomp_marker);
    CHECK(strcmp(subscription, "sub-0") == 0 && negative == 0);
    atomic_store(&last_ack_count, (int)count);
    atomic_store(&last_position, position);
    atomic_fetch_add(&acks, 1);
}

static petrel_client *open_stomp(uint16_t port) { return connect_plain(port, "/stomp"); }

static void send_frame(petrel_client *client, const char *frame, size_t len) {
    CHECK_STATUS(petrel_client_send(client, PETREL_TEXT, frame, len), PETREL_OK);
}

/* The next message, NUL-terminated in buf (frames carry a NUL of their own: len counts it). */
static size_t next_frame(petrel_client *client, char *buf, size_t cap) {
    int32_t kind = 0;
    size_t len = 0;
    for (;;) {
        if (petrel_client_receive(client, 3000, &kind, buf, cap - 1, &len) != PETREL_OK) return 0;
        if (!(len == 1 && buf[0] == '\n')) break; /* a heart-beat */
    }
    buf[len] = 0;
    return len;
}

static void test_refused_login(uint16_t port) {
    petrel_client *client = open_stomp(port);
    if (!client) return;
    const char connect[] = "CONNECT\naccept-version:1.2\nlogin:mallory\n\n";
    send_frame(client, connect, sizeof connect); /* sizeof: with the NUL */
    char buf[512];
    CHECK(next_frame(client, buf, sizeof buf) > 0 && strncmp(buf, "ERROR\n", 6) == 0 && strstr(buf, "message:unknown login\n"));
    uint16_t code = 0;
    char reason[128];
    size_t len = 0;
    for (int i = 0; i < 300 && petrel_client_close_status(client, &code, reason, sizeof reason, &len) != PETREL_OK; i++) sleep_ms(10);
    CHECK(code == 1008);
    petrel_client_destroy(client);
}

static void test_session(petrel_server *server, uint16_t port) {
    petrel_client *client = open_stomp(port);
    if (!client) return;
    char buf[1024];
    const char connect[] = "CONNECT\naccept-version:1.1,1.2\nlogin:alice\n\n";
    send_frame(client, connect, sizeof connect);
    CHECK(next_frame(client, buf, sizeof buf) > 0 && strncmp(buf, "CONNECTED\nversion:1.2\n", 22) == 0);
    CHECK(atomic_load(&stomp_connections) >= 1);
    const char subscribe[] = "SUBSCRIBE\nid:sub-0\ndestination:/prices\nack:client\nx-mine:a\\cb\nreceipt:s\n\n";
    send_frame(client, subscribe, sizeof subscribe);
    CHECK(next_frame(client, buf, sizeof buf) > 0 && strcmp(buf, "RECEIPT\nreceipt-id:s\n\n") == 0);
    CHECK(atomic_load(&header_seen) == 1);
    uint64_t id = 0;
    CHECK_STATUS(petrel_server_publish(server, "prices", PETREL_TEXT, "{\"p\":1}", 7, NULL, &id), PETREL_OK);
    size_t n = next_frame(client, buf, sizeof buf);
    static const char head[] = "MESSAGE\nsubscription:sub-0\nmessage-id:1\ndestination:/prices\nack:1@sub-0\n";
    CHECK(n > 0 && strncmp(buf, head, sizeof head - 1) == 0);
    CHECK(n > 8 && memcmp(buf + n - 8, "{\"p\":1}", 7) == 0 && buf[n - 1] == 0);
    /* SEND with a NUL in its body, published by the hook to the same topic. */
    const char send[] = "SEND\ndestination:/prices\ncontent-length:5\nreceipt:r\n\nhi\0yo";
    send_frame(client, send, sizeof send);
    int receipt = 0, message = 0;
    for (int i = 0; i < 2; i++) {
        if (next_frame(client, buf, sizeof buf) == 0) break;
        if (strcmp(buf, "RECEIPT\nreceipt-id:r\n\n") == 0) receipt++;
        if (strstr(buf, "message-id:2\n")) message++;
    }
    CHECK(receipt == 1 && message == 1);
    const char ack[] = "ACK\nid:2@sub-0\n\n";
    send_frame(client, ack, sizeof ack);
    for (int i = 0; i < 300 && atomic_load(&acks) == 0; i++) sleep_ms(10);
    CHECK(atomic_load(&acks) == 1 && atomic_load(&last_ack_count) == 2 && atomic_load(&last_position) == 2);
    const char refused[] = "SUBSCRIBE\nid:sub-1\ndestination:/secret\nreceipt:no\n\n";
    send_frame(client, refused, sizeof refused);
    CHECK(next_frame(client, buf, sizeof buf) > 0 && strncmp(buf, "ERROR\n", 6) == 0 && strstr(buf, "receipt-id:no\n"));
    petrel_client_destroy(client);
}

int main(void) {
    petrel_server_config config;
    petrel_server_config_init(&config);
    CHECK(config.stomp_paths == NULL && config.stomp_heart_beat_ms == 10000 && config.stomp_max_body == 1024 * 1024);
    config.host = "127.0.0.1";
    config.port = 0;
    config.threads = 1;
    config.stomp_paths = "/stomp";
    petrel_server_callbacks callbacks;
    petrel_server_callbacks_init(&callbacks);
    callbacks.on_open = on_open;
    callbacks.on_stomp = on_stomp;
    callbacks.on_stomp_ack = on_stomp_ack;
    petrel_server *server = NULL;
    uint16_t port = 0;
    config.stomp_paths = "nopath";
    CHECK_STATUS(petrel_server_create(&config, &callbacks, &server), PETREL_E_INVALID_ARGUMENT);
    config.stomp_paths = "/stomp";
    server = start_test_server(&config, &callbacks, &port);
    test_refused_login(port);
    test_session(server, port);
    CHECK_STATUS(petrel_stomp_allow(NULL, "x"), PETREL_E_NULL);
    CHECK_STATUS(petrel_stomp_refuse(NULL, "x"), PETREL_E_NULL);
    CHECK_STATUS(petrel_conn_is_stomp(server, 999999, NULL), PETREL_E_NULL);
    int32_t is = 0;
    CHECK_STATUS(petrel_conn_is_stomp(server, 999999, &is), PETREL_E_UNKNOWN_CONNECTION);
    CHECK_STATUS(petrel_server_destroy(server), PETREL_OK);
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
