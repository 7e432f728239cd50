/* petrel-c-echo: the benchmark echo server (Benchmarks/PROTOCOL.md) written against libpetrel.so,
 * to measure what the C ABI costs next to the Swift server (petrel-echo).
 *
 *   make -C Benchmarks/servers petrel-c-echo    (needs `make lib` first)
 *   petrel-c-echo --port 9001 [--deflate]
 */
#define _POSIX_C_SOURCE 200809L
#include <petrel.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char publisher; /* its address is the conn_data of a /pub connection: what it sends is published */

static void on_open(void *ud, petrel_server *server, uint64_t conn, void **conn_data) {
    (void)ud;
    char path[64];
    size_t len = 0;
    if (petrel_conn_path(server, conn, path, sizeof path, &len) != PETREL_OK) return;
    if (strcmp(path, "/sub") == 0) petrel_conn_subscribe(server, conn, "bench");
    else if (strcmp(path, "/pub") == 0) *conn_data = &publisher;
}

static void on_message(void *ud, petrel_server *server, uint64_t conn, void *conn_data, int32_t kind, const uint8_t *data,
                       size_t len) {
    (void)ud;
    if (conn_data == &publisher) {
        petrel_server_publish(server, "bench", kind, data, len, NULL, NULL);
    } else {
        petrel_status s = petrel_conn_send(server, conn, kind, data, len);
        if (s != PETREL_OK) fprintf(stderr, "petrel-c-echo: send: %s\n", petrel_strerror(s));
    }
}

int main(int argc, char **argv) {
    petrel_server_config config;
    petrel_server_config_init(&config);
    config.host = "127.0.0.1";
    config.port = 9001;
    config.threads = 1;
    config.compression = 0;
    config.max_message_size = config.max_frame_size = 16u << 20;
    config.max_backpressure = 256u << 20;
    config.topic_max_queued = UINT32_MAX;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) config.port = (uint16_t)atoi(argv[++i]);
        else if (strcmp(argv[i], "--deflate") == 0) config.compression = 2; /* keep the context: best ratio */
        else {
            fprintf(stderr, "usage: petrel-c-echo [--port N] [--deflate]\n");
            return 2;
        }
    }
    petrel_server_callbacks callbacks;
    petrel_server_callbacks_init(&callbacks);
    callbacks.on_open = on_open;
    callbacks.on_message = on_message;
    /* SIGINT and SIGTERM blocked before the library's threads exist (they inherit the mask) and
     * taken with sigwait: a handler could run on a loop thread and leave pause() waiting. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    petrel_server *server = NULL;
    petrel_status s = petrel_server_create(&config, &callbacks, &server);
    if (s == PETREL_OK) s = petrel_server_start(server);
    if (s != PETREL_OK) {
        fprintf(stderr, "petrel-c-echo: %s (%s)\n", petrel_strerror(s), petrel_last_error());
        return 1;
    }
    printf("petrel-c-echo listening on 127.0.0.1:%u\n", config.port);
    fflush(stdout);
    int sig = 0;
    sigwait(&stop_signals, &sig);
    petrel_server_stop(server, 1000);
    petrel_server_destroy(server);
    return 0;
}
