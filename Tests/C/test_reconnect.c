/* C tests of the reconnecting client (config.reconnect = 1): a server that restarts its first
 * two connections (close 1012) sees the client come back on the same handle, presenting the
 * last event id the application named (Last-Event-ID and last_event_id=), with on_state
 * reporting each step and on_close coming once, at the end; a close the server means (1008)
 * ends it with no attempt; petrel_client_close called from on_state between connections ends it
 * (no deadlock: the end is reported from the reconnect thread); a destroy between connections
 * reports the end before it returns. Built with -Wall -Wextra -Werror, run under valgrind. Prints
 * "N passed, N failed". */
#define _POSIX_C_SOURCE 200809L
#include <petrel.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

static atomic_int opens;

/* Greets each connection with the id it resumes after ("after none", "after 7"); restarts the
 * first two (1012); on /policy, closes with 1008. */
static void on_open(void *userdata, petrel_server *server, uint64_t conn, void **conn_data) {
    (void)userdata, (void)conn_data;
    char text[64], query[64], path[32];
    size_t len = 0, qlen = 0;
    uint64_t after = 0;
    int n = atomic_fetch_add(&opens, 1) + 1;
    if (petrel_conn_last_event_id(server, conn, &after) == PETREL_OK) snprintf(text, sizeof text, "after %llu", (unsigned long long)after);
    else snprintf(text, sizeof text, "after none");
    /* Both carriers of the id: the query as well as the header. */
    if (petrel_conn_query_param(server, conn, "last_event_id", query, sizeof query, &qlen) == PETREL_OK) {
        strncat(text, " q=", sizeof text - strlen(text) - 1);
        strncat(text, query, sizeof text - strlen(text) - 1);
    }
    petrel_conn_send(server, conn, PETREL_TEXT, text, strlen(text));
    petrel_conn_path(server, conn, path, sizeof path, &len);
    if (strcmp(path, "/policy") == 0) petrel_conn_close(server, conn, 1008, "not you");
    else if (strcmp(path, "/restart") == 0 || n <= 2) petrel_conn_close(server, conn, 1012, "restarting");
}

struct record {
    pthread_mutex_t lock;
    char messages[8][64];
    int message_count;
    int states[16];
    uint32_t attempts[16];
    char last_reason[128];
    int state_count;
    int closes;
    uint16_t close_code;
};

static void on_message(void *userdata, petrel_client *client, int32_t kind, const uint8_t *data, size_t len) {
    struct record *r = userdata;
    (void)kind;
    pthread_mutex_lock(&r->lock);
    if (r->message_count < 8) {
        snprintf(r->messages[r->message_count], 64, "%.*s", (int)len, (const char *)data);
        r->message_count++;
    }
    pthread_mutex_unlock(&r->lock);
    /* The application has handled event 7: a reconnect resumes after it. */
    petrel_client_set_last_event_id(client, 7);
}

static void on_state(void *userdata, petrel_client *client, int32_t state, uint32_t attempt, uint32_t delay_ms,
                     const char *reason, size_t reason_len) {
    struct record *r = userdata;
    (void)client, (void)delay_ms;
    pthread_mutex_lock(&r->lock);
    if (r->state_count < 16) {
        r->states[r->state_count] = state;
        r->attempts[r->state_count] = attempt;
        r->state_count++;
    }
    snprintf(r->last_reason, sizeof r->last_reason, "%.*s", (int)reason_len, reason ? reason : "");
    pthread_mutex_unlock(&r->lock);
}

static void on_close(void *userdata, petrel_client *client, uint16_t code, const char *reason, size_t reason_len) {
    struct record *r = userdata;
    (void)client, (void)reason, (void)reason_len;
    pthread_mutex_lock(&r->lock);
    r->closes++;
    r->close_code = code;
    pthread_mutex_unlock(&r->lock);
}

/* Closes the client from its own on_state, the first time it is between connections. */
static void close_on_reconnecting(void *userdata, petrel_client *client, int32_t state, uint32_t attempt, uint32_t delay_ms,
                                  const char *reason, size_t reason_len) {
    on_state(userdata, client, state, attempt, delay_ms, reason, reason_len);
    if (state == PETREL_CLIENT_RECONNECTING) CHECK_STATUS(petrel_client_close(client, 4000, "enough"), PETREL_OK);
}

/* Waits up to 5 s for on_close. */
static void wait_closed(struct record *r) {
    for (int i = 0; i < 1000; i++) {
        pthread_mutex_lock(&r->lock);
        int closes = r->closes;
        pthread_mutex_unlock(&r->lock);
        if (closes) return;
        sleep_ms(5);
    }
}

static petrel_client *connect_reconnecting(uint16_t port, const char *path, struct record *r) {
    char url[96];
    snprintf(url, sizeof url, "ws://127.0.0.1:%u%s", port, path);
    petrel_client_config config;
    petrel_client_config_init(&config);
    CHECK(config.reconnect == 0 && config.reconnect_initial_delay_ms == 250 && config.reconnect_max_delay_ms == 30000);
    CHECK(config.reconnect_jitter_percent == 50 && config.reconnect_max_attempts == 0 && config.pong_timeout_ms == 10000);
    config.reconnect = 1;
    config.reconnect_initial_delay_ms = 20;
    config.reconnect_max_delay_ms = 100;
    petrel_client_callbacks callbacks;
    petrel_client_callbacks_init(&callbacks);
    callbacks.userdata = r;
    callbacks.on_message = on_message;
    callbacks.on_state = on_state;
    callbacks.on_close = on_close;
    petrel_client *client = NULL;
    CHECK_STATUS(petrel_client_connect(url, &config, &callbacks, &client), PETREL_OK);
    return client;
}

static int message_count(struct record *r) {
    pthread_mutex_lock(&r->lock);
    int n = r->message_count;
    pthread_mutex_unlock(&r->lock);
    return n;
}

static void test_restarts(uint16_t port) {
    struct record r;
    memset(&r, 0, sizeof r);
    pthread_mutex_init(&r.lock, NULL);
    petrel_client *client = connect_reconnecting(port, "/feed", &r);
    for (int i = 0; i < 1000 && message_count(&r) < 3; i++) sleep_ms(5);
    int32_t state = 0;
    uint32_t attempt = 9;
    for (int i = 0; i < 1000; i++) {
        petrel_client_state(client, &state, &attempt);
        if (state == PETREL_CLIENT_OPEN && message_count(&r) >= 3) break;
        sleep_ms(5);
    }
    CHECK(state == PETREL_CLIENT_OPEN && attempt == 1);
    uint64_t id = 0;
    CHECK_STATUS(petrel_client_last_event_id(client, &id), PETREL_OK);
    CHECK(id == 7);
    CHECK_STATUS(petrel_client_send(client, PETREL_TEXT, "hi", 2), PETREL_OK);
    CHECK_STATUS(petrel_client_close(client, 1000, "done"), PETREL_OK);
    wait_closed(&r);
    pthread_mutex_lock(&r.lock);
    CHECK(r.message_count == 3);
    CHECK(strcmp(r.messages[0], "after none") == 0);
    CHECK(strcmp(r.messages[1], "after 7 q=7") == 0);
    CHECK(strcmp(r.messages[2], "after 7 q=7") == 0);
    /* OPEN(0), then twice RECONNECTING(1), CONNECTING(1), OPEN(1); then CLOSED. */
    int want[] = {PETREL_CLIENT_OPEN, PETREL_CLIENT_RECONNECTING, PETREL_CLIENT_CONNECTING, PETREL_CLIENT_OPEN,
                  PETREL_CLIENT_RECONNECTING, PETREL_CLIENT_CONNECTING, PETREL_CLIENT_OPEN, PETREL_CLIENT_CLOSED};
    uint32_t want_attempt[] = {0, 1, 1, 1, 1, 1, 1, 0};
    CHECK(r.state_count == 8);
    for (int i = 0; i < 8 && i < r.state_count; i++) {
        if (r.states[i] != want[i] || r.attempts[i] != want_attempt[i])
            fprintf(stderr, "state %d: %d (attempt %u), wanted %d (attempt %u)\n", i, r.states[i], r.attempts[i], want[i], want_attempt[i]);
        CHECK(r.states[i] == want[i] && r.attempts[i] == want_attempt[i]);
    }
    CHECK(r.closes == 1 && r.close_code == 1000);
    pthread_mutex_unlock(&r.lock);
    CHECK_STATUS(petrel_client_close(client, 1000, NULL), PETREL_E_CLOSED);
    CHECK_STATUS(petrel_client_state(client, &state, &attempt), PETREL_OK);
    CHECK(state == PETREL_CLIENT_CLOSED);
    petrel_client_destroy(client);
    pthread_mutex_destroy(&r.lock);
}

static void test_policy_close_ends_it(uint16_t port) {
    struct record r;
    memset(&r, 0, sizeof r);
    pthread_mutex_init(&r.lock, NULL);
    petrel_client *client = connect_reconnecting(port, "/policy", &r);
    wait_closed(&r);
    sleep_ms(100); /* an attempt, were one made, would show in the states */
    pthread_mutex_lock(&r.lock);
    CHECK(r.closes == 1 && r.close_code == 1008);
    CHECK(r.state_count == 2 && r.states[0] == PETREL_CLIENT_OPEN && r.states[1] == PETREL_CLIENT_CLOSED);
    CHECK(strstr(r.last_reason, "1008") != NULL && strstr(r.last_reason, "not you") != NULL);
    pthread_mutex_unlock(&r.lock);
    CHECK_STATUS(petrel_client_send(client, PETREL_TEXT, "x", 1), PETREL_E_CLOSED);
    petrel_client_destroy(client);
    pthread_mutex_destroy(&r.lock);
}

static void test_close_from_on_state(uint16_t port) {
    struct record r;
    memset(&r, 0, sizeof r);
    pthread_mutex_init(&r.lock, NULL);
    char url[96];
    snprintf(url, sizeof url, "ws://127.0.0.1:%u/restart", port);
    petrel_client_config config;
    petrel_client_config_init(&config);
    config.reconnect = 1;
    config.reconnect_initial_delay_ms = 20;
    petrel_client_callbacks callbacks;
    petrel_client_callbacks_init(&callbacks);
    callbacks.userdata = &r;
    callbacks.on_message = on_message;
    callbacks.on_state = close_on_reconnecting;
    callbacks.on_close = on_close;
    petrel_client *client = NULL;
    CHECK_STATUS(petrel_client_connect(url, &config, &callbacks, &client), PETREL_OK);
    wait_closed(&r);
    sleep_ms(100); /* an attempt, were one made, would show */
    pthread_mutex_lock(&r.lock);
    CHECK(r.closes == 1 && r.close_code == 4000);
    CHECK(r.state_count == 3 && r.states[0] == PETREL_CLIENT_OPEN && r.states[1] == PETREL_CLIENT_RECONNECTING &&
          r.states[2] == PETREL_CLIENT_CLOSED);
    pthread_mutex_unlock(&r.lock);
    petrel_client_destroy(client);

    /* Destroyed while waiting for an attempt (a long delay): CLOSED and on_close before it returns. */
    memset(&r, 0, sizeof r);
    config.reconnect_initial_delay_ms = 60000;
    config.reconnect_max_delay_ms = 60000;
    callbacks.on_state = on_state;
    CHECK_STATUS(petrel_client_connect(url, &config, &callbacks, &client), PETREL_OK);
    int32_t state = 0;
    uint32_t attempt = 0;
    for (int i = 0; i < 1000; i++) {
        petrel_client_state(client, &state, &attempt);
        if (state == PETREL_CLIENT_RECONNECTING) break;
        sleep_ms(5);
    }
    CHECK(state == PETREL_CLIENT_RECONNECTING && attempt == 1);
    CHECK_STATUS(petrel_client_send(client, PETREL_TEXT, "x", 1), PETREL_E_RECONNECTING);
    petrel_client_destroy(client);
    CHECK(r.closes == 1 && r.close_code == 1001);
    CHECK(r.state_count == 3 && r.states[2] == PETREL_CLIENT_CLOSED);
    pthread_mutex_destroy(&r.lock);
}

static void test_bad_policy(uint16_t port) {
    char url[64];
    snprintf(url, sizeof url, "ws://127.0.0.1:%u/", port);
    petrel_client_config config;
    petrel_client_config_init(&config);
    config.reconnect = 1;
    config.reconnect_max_delay_ms = 10; /* below the initial delay */
    petrel_client *client = NULL;
    CHECK_STATUS(petrel_client_connect(url, &config, NULL, &client), PETREL_E_INVALID_ARGUMENT);
    CHECK(strstr(petrel_last_error(), "maximum delay") != NULL);
    petrel_client_config_init(&config);
    config.reconnect = 2;
    CHECK_STATUS(petrel_client_connect(url, &config, NULL, &client), PETREL_E_INVALID_ARGUMENT);
    CHECK(client == NULL);
}

int main(void) {
    petrel_server_config config;
    petrel_server_config_init(&config);
    config.port = 0;
    config.threads = 1;
    petrel_server_callbacks callbacks;
    petrel_server_callbacks_init(&callbacks);
    callbacks.on_open = on_open;
    uint16_t port = 0;
    petrel_server *server = start_test_server(&config, &callbacks, &port);
    test_restarts(port);
    test_policy_close_ends_it(port);
    test_close_from_on_state(port);
    test_bad_policy(port);
    petrel_server_destroy(server);
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
