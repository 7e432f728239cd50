/* What the C tests share: CHECK and CHECK_STATUS (counting into passed and failed, saying
 * what failed and where), sleep_ms, start_test_server and connect_plain. Included once by
 * each test program. */
#ifndef PETREL_TEST_CHECK_H
#define PETREL_TEST_CHECK_H

#include <petrel.h>
#include <stdio.h>
#include <time.h>

static int passed, failed;
#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (cond) {                                                                  \
            passed++;                                                                \
        } else {                                                                     \
            failed++;                                                                \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                            \
    } while (0)
#define CHECK_STATUS(expr, want)                                                                              \
    do {                                                                                                      \
        petrel_status s_ = (expr);                                                                            \
        if (s_ == (want)) {                                                                                   \
            passed++;                                                                                         \
        } else {                                                                                              \
            failed++;                                                                                         \
            fprintf(stderr, "%s:%d: %s returned %d (%s), wanted %d\n", __FILE__, __LINE__, #expr, (int)s_, \
                    petrel_strerror(s_), (int)(want));                                                        \
        }                                                                                                     \
    } while (0)

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Creates and starts a server, checking each step; *port_out gets the port it bound. */
static inline petrel_server *start_test_server(const petrel_server_config *config, const petrel_server_callbacks *callbacks,
                                               uint16_t *port_out) {
    petrel_server *server = NULL;
    CHECK_STATUS(petrel_server_create(config, callbacks, &server), PETREL_OK);
    CHECK_STATUS(petrel_server_start(server), PETREL_OK);
    CHECK_STATUS(petrel_server_port(server, port_out), PETREL_OK);
    return server;
}

/* A blocking client (no callbacks, no compression) on ws://127.0.0.1:port + path; checked. */
static inline petrel_client *connect_plain(uint16_t port, const char *path) {
    char url[128];
    snprintf(url, sizeof url, "ws://127.0.0.1:%u%s", (unsigned)port, path);
    petrel_client_config config;
    petrel_client_config_init(&config);
    config.compression = 0;
    petrel_client *client = NULL;
    CHECK_STATUS(petrel_client_connect(url, &config, NULL, &client), PETREL_OK);
    return client;
}

#endif
