/* C tests of the Redis Streams engine (engine_url): two servers share a topic through a real
 * redis-server (Debian's package), which this program starts on a free port and kills at the
 * end. Built like test_petrel.c with -Wall -Wextra -Werror and run under valgrind by the test
 * command. Prints "N passed, N failed". */
#define _POSIX_C_SOURCE 200809L
#include <petrel.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#include "check.h"

static uint16_t free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    bind(fd, (struct sockaddr *)&a, sizeof a);
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

/* redis-server on `port`, no persistence; waits until it accepts connections. */
static pid_t start_redis(uint16_t port) {
    char port_text[8];
    snprintf(port_text, sizeof port_text, "%u", port);
    char *argv[] = {"redis-server", "--port", port_text, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                    "--dir", "/tmp", "--logfile", "", "--daemonize", "no", NULL};
    pid_t pid = 0;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", 1, 0);  /* O_WRONLY */
    if (posix_spawnp(&pid, "redis-server", &actions, NULL, argv, environ) != 0) {
        fprintf(stderr, "redis-server is not installed (make test installs Debian's redis-server)\n");
        exit(2);
    }
    posix_spawn_file_actions_destroy(&actions);
    for (int i = 0; i < 500; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
        close(fd);
        if (ok) return pid;
        sleep_ms(10);
    }
    fprintf(stderr, "redis-server did not start on port %u\n", port);
    exit(2);
}

static void stop_redis(pid_t pid) {
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

static void on_open(void *userdata, petrel_server *server, uint64_t conn, void **conn_data) {
    (void)userdata, (void)conn_data;
    petrel_conn_subscribe(server, conn, "t");
}

/* What observe_s saw: event ids and payloads, in call order. */
static pthread_mutex_t seen_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t seen_ids[64];
static char seen_text[64][48];
static int seen_count, seen_wrong_topic;

static void observe_s(void *userdata, petrel_server *server, const char *topic, uint64_t event_id, int32_t kind,
                      const uint8_t *data, size_t len, const char *key) {
    (void)server, (void)key;
    pthread_mutex_lock(&seen_lock);
    if (userdata != (void *)&seen_count || strcmp(topic, "s") != 0 || kind != PETREL_TEXT) seen_wrong_topic++;
    if (seen_count < 64 && len < sizeof seen_text[0]) {
        seen_ids[seen_count] = event_id;
        memcpy(seen_text[seen_count], data, len);
        seen_text[seen_count][len] = 0;
        seen_count++;
    }
    pthread_mutex_unlock(&seen_lock);
}

static int seen(void) {
    pthread_mutex_lock(&seen_lock);
    int n = seen_count;
    pthread_mutex_unlock(&seen_lock);
    return n;
}

/* Whether observe_s saw ids[0..n) in order, each with the payload {"id":<its id>}. */
static int saw_stamped(const uint64_t *ids, int n) {
    int ok = seen() == n;
    for (int i = 0; ok && i < n; i++) {
        char want[48];
        snprintf(want, sizeof want, "{\"id\":%llu}", (unsigned long long)ids[i]);
        ok = seen_ids[i] == ids[i] && strcmp(seen_text[i], want) == 0;
    }
    return ok;
}

/* A server on `url`, started (want_start is what start must return); with `observer`, it
 * observes topic "s" from before the start. */
static petrel_server *node(const char *url, petrel_status want_start, petrel_topic_observer observer) {
    petrel_server_config config;
    petrel_server_config_init(&config);
    CHECK(config.engine_url == NULL && config.engine_timeout_ms == 2000 && config.topic_stream_capacity == 10000);
    config.host = "127.0.0.1";
    config.port = 0;
    config.threads = 1;
    config.engine_url = url;
    config.engine_timeout_ms = 1000;
    config.topic_replay = 16;
    petrel_server_callbacks callbacks;
    petrel_server_callbacks_init(&callbacks);
    callbacks.on_open = on_open;
    petrel_server *server = NULL;
    CHECK_STATUS(petrel_server_create(&config, &callbacks, &server), PETREL_OK);
    if (observer) CHECK_STATUS(petrel_server_observe(server, "s", observer, &seen_count), PETREL_OK);
    CHECK_STATUS(petrel_server_start(server), want_start);
    return server;
}

int main(void) {
    uint16_t redis_port = free_port();
    pid_t redis = start_redis(redis_port);
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%u", redis_port);

    petrel_server *a = node(url, PETREL_OK, NULL), *b = node(url, PETREL_OK, NULL);
    uint16_t port_b = 0;
    CHECK_STATUS(petrel_server_port(b, &port_b), PETREL_OK);
    char client_url[64];
    snprintf(client_url, sizeof client_url, "ws://127.0.0.1:%u/", port_b);
    petrel_client *client = NULL;
    CHECK_STATUS(petrel_client_connect(client_url, NULL, NULL, &client), PETREL_OK);
    sleep_ms(200); /* the subscription is made on B's loop */

    /* Published on A, delivered by B, with ids of one epoch (top bits) and contiguous sequences. */
    uint64_t first = 0, id = 0;
    int contiguous = 1;
    for (int m = 0; m < 50; m++) {
        char text[32];
        int len = snprintf(text, sizeof text, "tick %d", m);
        CHECK_STATUS(petrel_server_publish(a, "t", PETREL_TEXT, text, (size_t)len, NULL, &id), PETREL_OK);
        if (m == 0) first = id;
        if (id != first + (uint64_t)m) contiguous = 0;
    }
    CHECK(contiguous);
    CHECK((first >> 40) >= 1 && (first >> 40) <= 4095 && (first & ((1ULL << 40) - 1)) == 1);
    int in_order = 1;
    for (int m = 0; m < 50 && client; m++) {
        char buf[64], want[32];
        int32_t kind;
        size_t len;
        snprintf(want, sizeof want, "tick %d", m);
        if (petrel_client_receive(client, 5000, &kind, buf, sizeof buf - 1, &len) != PETREL_OK) {
            in_order = 0;
            break;
        }
        buf[len] = 0;
        if (strcmp(buf, want) != 0) in_order = 0;
    }
    CHECK(in_order);
    petrel_client_destroy(client);

    /* Stamped publishes: Redis writes each id over {{id}}. Without {{id}}: refused. */
    uint64_t stamped[8];
    for (int m = 0; m < 5; m++)
        CHECK_STATUS(petrel_server_publish(a, "s", PETREL_TEXT | PETREL_STAMP_ID, "{\"id\":{{id}}}", 13, NULL, &stamped[m]), PETREL_OK);
    CHECK_STATUS(petrel_server_publish(a, "s", PETREL_TEXT | PETREL_STAMP_ID, "{\"id\":0}", 8, NULL, &id), PETREL_E_INVALID_ARGUMENT);
    CHECK_STATUS(petrel_server_publish(a, "s", 0x200 | PETREL_TEXT, "x", 1, NULL, &id), PETREL_E_INVALID_ARGUMENT);
    /* An observer on a node started later: the history during start, then each new message. */
    {
        petrel_server *c = node(url, PETREL_OK, observe_s);
        CHECK(saw_stamped(stamped, 5));
        CHECK_STATUS(petrel_server_observe(c, "s", NULL, NULL), PETREL_E_NULL);
        CHECK_STATUS(petrel_server_observe(c, NULL, observe_s, NULL), PETREL_E_NULL);
        CHECK_STATUS(petrel_server_observe(c, "u", observe_s, &seen_count), PETREL_E_STATE);
        for (int m = 5; m < 8; m++)
            CHECK_STATUS(petrel_server_publish(a, "s", PETREL_TEXT | PETREL_STAMP_ID, "{\"id\":{{id}}}", 13, NULL, &stamped[m]), PETREL_OK);
        for (int w = 0; w < 250 && seen() < 8; w++) sleep_ms(20);
        CHECK(saw_stamped(stamped, 8));
        CHECK(seen_wrong_topic == 0);
        CHECK_STATUS(petrel_server_destroy(c), PETREL_OK);
    }

    /* Redis gone: a publish fails and says why; nothing is published. */
    stop_redis(redis);
    CHECK_STATUS(petrel_server_publish(a, "t", PETREL_TEXT, "lost", 4, NULL, &id), PETREL_E_ENGINE);
    CHECK(strstr(petrel_last_error(), "Redis at redis://127.0.0.1:") != NULL);
    CHECK_STATUS(petrel_server_stop(a, 100), PETREL_OK);
    CHECK_STATUS(petrel_server_stop(b, 100), PETREL_OK);
    CHECK_STATUS(petrel_server_destroy(a), PETREL_OK);
    CHECK_STATUS(petrel_server_destroy(b), PETREL_OK);

    /* A Redis that cannot be reached: start fails; a URL that is not one: create fails. */
    petrel_server *dead = node(url, PETREL_E_ENGINE, NULL);
    CHECK_STATUS(petrel_server_destroy(dead), PETREL_OK);
    petrel_server_config config;
    petrel_server_config_init(&config);
    config.engine_url = "http://127.0.0.1:6379";
    petrel_server *none = NULL;
    CHECK_STATUS(petrel_server_create(&config, NULL, &none), PETREL_E_URL);
    CHECK(none == NULL && strstr(petrel_last_error(), "engine URL") != NULL);
    config.engine_url = "redis://127.0.0.1:6379";
    config.topic_stream_capacity = 0;
    CHECK_STATUS(petrel_server_create(&config, NULL, &none), PETREL_E_INVALID_ARGUMENT);

    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
